"""The PostgreSQL backend (psycopg 3): one database shared by several kampx nodes.

Selected by `[db] url = "postgresql://user:pass@host:port/db"` (docs/scale-out.md). Contract:

- Same interface and same one-line errors as the SQLite backend (kampx/db/base.py), so
  kampxctl, the supervisor and the db writer do not care which one they hold.
- A connection per process that uses one, opened on first use, not at open_storage(): the
  workers hold a storage only for subscriber lookups, which a node serves from its own SQLite
  replica (NodeSubscribers), so a worker never opens a connection and never waits on the
  network in its packet loop.
- A connection that fails is dropped; the next use reconnects, with exponential back-off
  (RECONNECT_MIN_S doubling to RECONNECT_MAX_S, jittered) so a database that is down costs
  one refused call per round, not a connection storm. Every failure is a StorageError.
- Schema: kampx/db/migrations.py PG_MIGRATIONS, applied on first connect under an advisory
  lock in one transaction (several nodes starting at once upgrade it exactly once).
- Location changes carry a sequence number and deletions leave a tombstone (see the
  migration), which LocationFeed serves to kampx/cluster.py.
- Timeouts everywhere: connect_timeout, statement_timeout and TCP keepalive/user timeout, so
  a server that vanishes without a reset is noticed in seconds, not at the kernel's leisure.
"""

from __future__ import annotations

import logging
import os
import random
import select
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import errors as pgerr

from kampx.db.base import (
    DISPATCHER_COLUMNS,
    LOCATION_FIELDS,
    Addresses,
    AddressRow,
    Dialogs,
    Dispatcher,
    DispatcherRow,
    LocationFeed,
    Locations,
    SqlAccounting,
    Storage,
    StorageError,
    Subscriber,
    Subscribers,
    binding_values,
    distinct_accounts,
    join_aor,
    split_aor,
    user_text,
)
from kampx.db.migrations import PG_MIGRATIONS, Migration, check_sequence, version_rows

log = logging.getLogger("kampx.db")

RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 10.0
STATEMENT_TIMEOUT_MS = 30000
TCP_USER_TIMEOUT_MS = 8000
SCHEMA_LOCK = 0x6B78_7363_6865  # advisory lock key while migrating ("kxsche")
CHANNELS = ("kampx_location", "kampx_subscriber", "kampx_address", "kampx_dispatcher")


class _Pg:
    """One process's connection: opened on first use, dropped on failure, reopened after a
    back-off. `generation` counts successful connects (a listener re-LISTENs on change)."""

    def __init__(
        self, url: str, where: str, connect_timeout: int, migrations: tuple[Migration, ...]
    ):
        self.url = url
        self.where = where
        self.connect_timeout = connect_timeout
        self.migrations = migrations
        self.pid = os.getpid()
        self.conn: psycopg.Connection | None = None
        self.version = 0
        self.generation = 0
        self._failures = 0
        self._next_try = 0.0
        self._last_error = ""

    def connect(self) -> psycopg.Connection:
        if os.getpid() != self.pid:
            raise StorageError(
                f"database {self.where} was opened by process {self.pid}; open it again after fork"
            )
        if self.conn is not None and not self.conn.closed:
            return self.conn
        if time.monotonic() < self._next_try:
            # worded the same every time: callers log a failure once per distinct message
            raise StorageError(
                f"database {self.where} is unreachable: {self._last_error} "
                "(reconnecting with back-off)"
            )
        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=self.connect_timeout,
                application_name="kampx",
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=TCP_USER_TIMEOUT_MS,
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            )
        except psycopg.Error as e:
            raise self._unreachable(e) from None
        try:
            self.version = _upgrade(conn, self.where, self.migrations)
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self.generation += 1
        self._failures = 0
        self._next_try = 0.0
        return conn

    def _unreachable(self, e: Exception) -> StorageError:
        self._failures += 1
        delay = min(RECONNECT_MAX_S, RECONNECT_MIN_S * 2 ** (self._failures - 1))
        self._next_try = time.monotonic() + delay * random.uniform(0.8, 1.2)
        self._last_error = _first_line(e)
        return StorageError(f"database {self.where} is unreachable: {self._last_error}")

    def error(self, e: psycopg.Error) -> StorageError:
        """A failed statement: the connection is dropped when it is broken (the next call
        reconnects, after the back-off)."""
        if self.conn is not None and (
            self.conn.closed or self.conn.broken or isinstance(e, psycopg.OperationalError)
        ):
            self.drop()
            return self._unreachable(e)
        return StorageError(f"database {self.where}: {_first_line(e)}")

    def drop(self) -> None:
        if self.conn is not None:
            if os.getpid() == self.pid:
                try:
                    self.conn.close()
                except psycopg.Error:
                    pass
            self.conn = None

    @contextmanager
    def read(self) -> Iterator[psycopg.Connection]:
        conn = self.connect()
        try:
            yield conn
        except psycopg.Error as e:
            raise self.error(e) from None

    @contextmanager
    def write(self, repeatable: bool = False) -> Iterator[psycopg.Connection]:
        """One transaction: committed when the block ends, rolled back on any exception."""
        conn = self.connect()
        try:
            with conn.transaction():
                if repeatable:
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                yield conn
        except psycopg.Error as e:
            raise self.error(e) from None


def _scalar(cur: psycopg.Cursor) -> Any:
    """The first column of a statement that always returns a row (COUNT, RETURNING...)."""
    row = cur.fetchone()
    assert row is not None
    return row[0]


def _first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def _upgrade(conn: psycopg.Connection, where: str, migrations) -> int:
    check_sequence(migrations)
    latest = migrations[-1].version if migrations else 0
    current = _schema_version(conn)
    if current == latest:
        return current
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        current = _schema_version(conn)  # another node may have upgraded meanwhile
        if current > latest:
            raise StorageError(
                f"database {where} has schema version {current}; this kampx "
                f"knows up to {latest} (upgrade kampx)"
            )
        for m in migrations[current:]:
            try:
                for stmt in m.statements:
                    conn.execute(stmt)
            except psycopg.Error as e:
                raise StorageError(
                    f"database {where}: migration {m.version} ({m.description}) "
                    f"failed: {_first_line(e)}"
                ) from None
            for table, version in version_rows(m):
                conn.execute(
                    "INSERT INTO version (table_name, table_version) VALUES (%s, %s) "
                    "ON CONFLICT (table_name) DO UPDATE SET "
                    "table_version = excluded.table_version",
                    (table, version),
                )
    return latest


def _schema_version(conn: psycopg.Connection) -> int:
    if _scalar(conn.execute("SELECT to_regclass('version')")) is None:
        return 0
    row = conn.execute("SELECT table_version FROM version WHERE table_name = 'kampx'").fetchone()
    return int(row[0]) if row else 0


# -- subscribers ---------------------------------------------------------------------------------


class _Duplicate(Exception):
    """A unique key was taken; raised inside a write() block to roll it back."""


class PgSubscribers(Subscribers):
    _COLUMNS = "username, domain, ha1, ha1b, ha1_sha256, ha1b_sha256"

    def __init__(self, db: _Pg):
        self._db = db

    def add(self, sub: Subscriber) -> None:
        self.add_many([sub])

    def add_many(self, subs: Iterable[Subscriber]) -> int:
        rows = distinct_accounts(subs)
        try:
            with self._db.write() as conn:
                try:
                    with conn.cursor() as cur:
                        cur.executemany(
                            f"INSERT INTO subscriber ({self._COLUMNS}) "
                            "VALUES (%s, %s, %s, %s, %s, %s)",
                            rows,
                        )
                except pgerr.UniqueViolation:
                    raise _Duplicate from None  # rolls the whole batch back
        except _Duplicate:
            raise StorageError(f"user {self._first_existing(rows)} already exists") from None
        return len(rows)

    def _first_existing(self, rows) -> str:
        with self._db.read() as conn:
            for s in rows:
                if conn.execute(
                    "SELECT 1 FROM subscriber WHERE username = %s AND domain = %s", (s[0], s[1])
                ).fetchone():
                    return user_text(s[0], s[1])
        return "(unknown)"  # pragma: no cover - removed again between the two statements

    def set_password(self, sub: Subscriber) -> None:
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE subscriber SET ha1 = %s, ha1b = %s, ha1_sha256 = %s, ha1b_sha256 = %s "
                "WHERE username = %s AND domain = %s",
                (sub.ha1, sub.ha1b, sub.ha1_sha256, sub.ha1b_sha256, sub.username, sub.domain),
            )
            if cur.rowcount == 0:
                raise StorageError(f"no such user {user_text(sub.username, sub.domain)}")

    def remove(self, username: str, domain: str) -> None:
        with self._db.write() as conn:
            cur = conn.execute(
                "DELETE FROM subscriber WHERE username = %s AND domain = %s", (username, domain)
            )
            if cur.rowcount == 0:
                raise StorageError(f"no such user {user_text(username, domain)}")

    def get(self, username: str, domain: str | None = None) -> Subscriber | None:
        with self._db.read() as conn:
            if domain is None:
                row = conn.execute(
                    f"SELECT {self._COLUMNS} FROM subscriber WHERE username = %s "
                    "ORDER BY id LIMIT 1",
                    (username,),
                ).fetchone()
            else:
                row = conn.execute(
                    f"SELECT {self._COLUMNS} FROM subscriber WHERE username = %s AND domain = %s",
                    (username, domain),
                ).fetchone()
        return Subscriber(*row) if row else None

    def count(self, domain: str | None = None) -> int:
        with self._db.read() as conn:
            if domain is None:
                return _scalar(conn.execute("SELECT COUNT(*) FROM subscriber"))
            return _scalar(
                conn.execute("SELECT COUNT(*) FROM subscriber WHERE domain = %s", (domain,))
            )

    def list(self, domain: str | None = None) -> Iterator[Subscriber]:
        with self._db.read() as conn:
            if domain is None:
                rows = conn.execute(
                    f"SELECT {self._COLUMNS} FROM subscriber ORDER BY domain, username"
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {self._COLUMNS} FROM subscriber WHERE domain = %s ORDER BY username",
                    (domain,),
                ).fetchall()
        return (Subscriber(*r) for r in rows)


class NodeSubscribers(Subscribers):
    """The subscriber table as a node sees it: PostgreSQL is the truth, and the node keeps a
    replica in its own SQLite file (kampx/cluster.py keeps it current on every change).

    get() reads the replica: it is what digest authentication calls from the workers' packet
    loops, where a network round trip (or a database restart) must never be waited on, and
    the SQLite auth cache's change probe watches that file. Writes go to PostgreSQL and, when
    this machine is a node (its file exists), into the replica at once, so that a user added
    on a node can register there immediately; the other nodes have it within the sync delay.
    Listing and counting read PostgreSQL."""

    def __init__(self, pg: PgSubscribers, local):
        self._pg = pg
        self._local = local  # () -> SqliteStorage or None

    def _mirror(self, puts=(), deletes=()) -> None:
        local = self._local()
        if local is not None:
            local.subscribers.mirror(puts, deletes)

    def add(self, sub: Subscriber) -> None:
        self.add_many([sub])

    def add_many(self, subs: Iterable[Subscriber]) -> int:
        subs = [Subscriber(*s) for s in subs]
        n = self._pg.add_many(subs)
        self._mirror(puts=subs)
        return n

    def set_password(self, sub: Subscriber) -> None:
        self._pg.set_password(sub)
        self._mirror(puts=[sub])

    def remove(self, username: str, domain: str) -> None:
        self._pg.remove(username, domain)
        self._mirror(deletes=[(username, domain)])

    def get(self, username: str, domain: str | None = None) -> Subscriber | None:
        local = self._local()
        if local is None:
            return self._pg.get(username, domain)
        return local.subscribers.get(username, domain)

    def count(self, domain: str | None = None) -> int:
        return self._pg.count(domain)

    def list(self, domain: str | None = None) -> Iterator[Subscriber]:
        return self._pg.list(domain)


# -- addresses -----------------------------------------------------------------------------------


class PgAddresses(Addresses):
    def __init__(self, db: _Pg):
        self._db = db

    def add(self, grp: int, ip_addr: str, mask: int = 32, port: int = 0, tag: str = "") -> int:
        with self._db.write() as conn:
            return _scalar(
                conn.execute(
                    "INSERT INTO address (grp, ip_addr, mask, port, tag) "
                    "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (grp, ip_addr, mask, port, tag or None),
                )
            )

    def remove(self, grp: int, ip_addr: str) -> int:
        with self._db.write() as conn:
            cur = conn.execute(
                "DELETE FROM address WHERE grp = %s AND ip_addr = %s", (grp, ip_addr)
            )
            if cur.rowcount == 0:
                raise StorageError(f"no address {ip_addr} in group {grp}")
            return cur.rowcount

    def list(self) -> list[AddressRow]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT grp, ip_addr, mask, port, tag, id FROM address ORDER BY id"
            ).fetchall()
        return [AddressRow(g, ip, m, p, t or "", i) for g, ip, m, p, t, i in rows]


# -- dispatcher ----------------------------------------------------------------------------------


class PgDispatcher(Dispatcher):
    def __init__(self, db: _Pg):
        self._db = db

    def add(self, row: DispatcherRow) -> int:
        with self._db.write() as conn:
            return _scalar(
                conn.execute(
                    f"INSERT INTO dispatcher ({DISPATCHER_COLUMNS}) "
                    "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                    tuple(row)[:6],
                )
            )

    def remove(self, row_id: int) -> None:
        with self._db.write() as conn:
            if conn.execute("DELETE FROM dispatcher WHERE id = %s", (row_id,)).rowcount == 0:
                raise StorageError(f"no dispatcher entry with id {row_id}")

    def list(self) -> list[DispatcherRow]:
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {DISPATCHER_COLUMNS}, id FROM dispatcher ORDER BY id"
            ).fetchall()
        return [DispatcherRow(*r) for r in rows]


# -- location ------------------------------------------------------------------------------------

_LOC_COLUMNS = ("ruid", "username", "domain") + LOCATION_FIELDS[2:]
_LOC_SELECT = ", ".join(_LOC_COLUMNS)
# a deleted row becomes a tombstone in the same statement (the seq trigger numbers both)
_TO_TOMBSTONE = (
    "WITH gone AS (DELETE FROM location WHERE {where} "
    "RETURNING ruid, username, domain) "
    "INSERT INTO location_tombstone (ruid, username, domain, removed_at) "
    "SELECT ruid, username, domain, extract(epoch FROM now()) FROM gone "
    "ON CONFLICT (ruid) DO UPDATE SET username = excluded.username, "
    "domain = excluded.domain, removed_at = excluded.removed_at"
)


def _row_dict(row) -> dict:
    """A location row (in _LOC_COLUMNS order) as a dict keyed by LOCATION_FIELDS."""
    return dict(zip(LOCATION_FIELDS, (row[0], join_aor(row[1], row[2]), *row[3:])))


class PgLocations(Locations, LocationFeed):
    _UPSERT = (
        f"INSERT INTO location ({_LOC_SELECT}) "
        f"VALUES ({', '.join(['%s'] * len(_LOC_COLUMNS))}) ON CONFLICT (ruid) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in _LOC_COLUMNS[1:])
    )

    def __init__(self, db: _Pg):
        self._db = db

    def upsert_many(self, bindings: Iterable[Any]) -> int:
        rows = []
        for b in bindings:
            v = binding_values(b)
            rows.append((v[0], *split_aor(v[1]), *v[2:]))
        if not rows:
            return 0
        with self._db.write() as conn:
            with conn.cursor() as cur:
                cur.executemany(self._UPSERT, rows)
        return len(rows)

    def delete_many(self, ruids: Iterable[str]) -> int:
        keys = list(ruids)
        if not keys:
            return 0
        with self._db.write() as conn:
            return conn.execute(_TO_TOMBSTONE.format(where="ruid = ANY(%s)"), (keys,)).rowcount

    def delete_seen(self, seen: Iterable[tuple[str, float]]) -> int:
        pairs = list(seen)
        if not pairs:
            return 0
        where = (
            "(ruid, last_modified) IN (SELECT * FROM unnest(%s::text[], %s::double precision[]))"
        )
        with self._db.write() as conn:
            return conn.execute(
                _TO_TOMBSTONE.format(where=where), ([r for r, _ in pairs], [lm for _, lm in pairs])
            ).rowcount

    def load_all(self, now: float) -> Iterator[dict]:
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_LOC_SELECT} FROM location WHERE expires = 0 OR expires > %s ORDER BY id",
                (now,),
            ).fetchall()
        return (_row_dict(r) for r in rows)

    def delete_expired(self, now: float) -> int:
        with self._db.write() as conn:
            return conn.execute(
                _TO_TOMBSTONE.format(where="expires != 0 AND expires <= %s"), (now,)
            ).rowcount

    def count(self) -> int:
        with self._db.read() as conn:
            return _scalar(conn.execute("SELECT COUNT(*) FROM location"))

    # -- LocationFeed --

    def changes_since(self, seq: int, limit: int):
        nulls = ", ".join(["NULL"] * (len(_LOC_COLUMNS) - 3))
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT seq, {_LOC_SELECT} FROM location WHERE seq > %s "
                f"UNION ALL SELECT seq, ruid, username, domain, {nulls} "
                "FROM location_tombstone WHERE seq > %s ORDER BY 1 LIMIT %s",
                (seq, seq, limit),
            ).fetchall()
        out = []
        for r in rows:
            gone = r[4] is None  # contact is NOT NULL in location
            out.append((r[0], r[1], join_aor(r[2], r[3]), None if gone else _row_dict(r[1:])))
        return out

    @contextmanager
    def snapshot(self):
        with self._db.write(repeatable=True) as conn:
            top = _scalar(
                conn.execute(
                    "SELECT GREATEST((SELECT max(seq) FROM location), "
                    "(SELECT max(seq) FROM location_tombstone), 0)"
                )
            )
            with conn.cursor(name="kampx_snapshot") as cur:
                cur.itersize = 2000  # streamed: a million bindings never sit in one list
                cur.execute(f"SELECT {_LOC_SELECT} FROM location")
                yield int(top), (_row_dict(r) for r in cur)

    def purge_tombstones(self, before: float) -> int:
        with self._db.write() as conn:
            return conn.execute(
                "DELETE FROM location_tombstone WHERE removed_at < %s", (before,)
            ).rowcount


# -- dialogs (used when the node has no SQLite file of its own, e.g. kampxctl elsewhere) ---------


class PgDialogs(Dialogs):
    def __init__(self, db: _Pg):
        self._db = db

    def apply(self, puts, deletes) -> None:
        puts, deletes = list(puts), list(deletes)
        if not puts and not deletes:
            return
        with self._db.write() as conn:
            with conn.cursor() as cur:
                if puts:
                    cur.executemany(
                        "INSERT INTO dialog (callid, from_tag, state, start_time, timeout) "
                        "VALUES (%s, %s, %s, extract(epoch FROM now())::bigint, %s) "
                        "ON CONFLICT (callid, from_tag) DO UPDATE SET state = excluded.state, "
                        "timeout = excluded.timeout",
                        puts,
                    )
                if deletes:
                    cur.executemany(
                        "DELETE FROM dialog WHERE callid = %s AND from_tag = %s", deletes
                    )

    def load_live(self, now: float):
        with self._db.read() as conn:
            return iter(
                conn.execute(
                    "SELECT callid, from_tag, timeout FROM dialog WHERE timeout > %s", (now,)
                ).fetchall()
            )

    def delete_expired(self, now: float) -> int:
        with self._db.write() as conn:
            return conn.execute("DELETE FROM dialog WHERE timeout <= %s", (now,)).rowcount


# -- accounting (on the server: every node's records in one place) -------------------------------

_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


def _utc(epoch: float) -> datetime:
    """Epoch seconds as the naive UTC timestamp the accounting tables hold, to the ms."""
    return _EPOCH + round(epoch * 1000) * _MS


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return round((value.replace(tzinfo=None) - _EPOCH).total_seconds(), 3)
    return None


class PgAccounting(SqlAccounting):
    PH = "%s"
    NULLS = " NULLS LAST"
    to_db = staticmethod(_utc)
    from_db = staticmethod(_epoch)


# -- the storage ---------------------------------------------------------------------------------


class PostgresStorage(Storage):
    """The shared database, plus (on a node) the node's own SQLite file at `local_path`:
    the subscriber replica and the node's dialogs (a dialog's in-dialog requests come back
    through the nodes that Record-Routed it, so its record belongs to them)."""

    def __init__(
        self,
        url: str,
        where: str,
        *,
        local_path: str | None = None,
        connect_timeout: int = 3,
        migrations=PG_MIGRATIONS,
    ):
        self.db = _Pg(url, where, connect_timeout, tuple(migrations))
        self._local_path = local_path
        self._local = None
        self._heard: set[str] = set()
        self.subscribers = NodeSubscribers(PgSubscribers(self.db), self.local)
        self.addresses = PgAddresses(self.db)
        self.dispatcher = PgDispatcher(self.db)
        self.locations = PgLocations(self.db)
        self._pg_dialogs = PgDialogs(self.db)
        self.acc = PgAccounting(self.db)

    def local(self):
        """The node's SQLite storage, opened on first use; None when this machine is not a
        node (no such file: kampxctl on an administration host)."""
        if self._local is None and self._local_path and os.path.exists(self._local_path):
            from kampx.db.sqlite import SqliteStorage

            self._local = SqliteStorage(self._local_path)
        return self._local

    def open_local(self):
        """The node's SQLite file, created if need be (the supervisor, at start)."""
        if self._local is None and self._local_path:
            from kampx.db.sqlite import SqliteStorage

            self._local = SqliteStorage(self._local_path)
        return self._local

    @property
    def dialogs(self) -> Dialogs:
        local = self.local()
        return local.dialogs if local is not None else self._pg_dialogs

    def connect(self) -> None:
        """Connect now (and upgrade the schema): a StorageError when the server is not
        reachable. Everything else connects on first use."""
        self.db.connect()

    @property
    def connected(self) -> bool:
        conn = self.db.conn
        return conn is not None and not conn.closed and not conn.broken

    def listen(self) -> int:
        """LISTEN on the kampx channels (again after a reconnect: a new session listens to
        nothing). Returns the connection's generation, so the caller knows when to redo it.
        Notifications that arrive during other statements are collected by a handler; those
        that arrive while idle, by notifications()."""
        with self.db.read() as conn:
            own = conn.info.backend_pid

            def heard(n, own=own):
                if n.pid != own:
                    self._heard.add(n.channel)

            conn.add_notify_handler(heard)
            for channel in CHANNELS:
                conn.execute(f"LISTEN {channel}")
        return self.db.generation

    @property
    def generation(self) -> int:
        return self.db.generation

    def notifications(self, timeout: float) -> set[str]:
        """Wait up to `timeout` s for a notification from another session; returns the
        channels heard (those received meanwhile, during other statements, included). Our
        own session's notifications are left out: what we wrote, we have.

        Idle, this is one select() on the connection's socket: the db writer calls it every
        few milliseconds (kampx/dbwriter.py), so it must cost next to nothing. psycopg's
        notifies() generator costs about a millisecond a call; libpq's consume_input() and
        notifies() are what it runs underneath."""
        conn = self.db.conn
        heard, self._heard = self._heard, set()
        if heard or conn is None or conn.closed:
            if not heard:
                time.sleep(max(0.0, timeout))
            return heard
        try:
            if select.select([conn.fileno()], [], [], max(0.0, timeout))[0]:
                pgconn = conn.pgconn
                pgconn.consume_input()  # raises OperationalError on a lost server
                own = conn.info.backend_pid
                while (n := pgconn.notifies()) is not None:
                    if n.be_pid != own:
                        heard.add(n.relname.decode())
        except (OSError, ValueError) as e:
            raise self.db.error(psycopg.OperationalError(str(e))) from None
        except psycopg.Error as e:
            raise self.db.error(e) from None
        return heard

    @property
    def schema_version(self) -> int:
        self.db.connect()
        return self.db.version

    @property
    def where(self) -> str:
        return self.db.where

    def close(self) -> None:
        self.db.drop()
        if self._local is not None:
            self._local.close()
            self._local = None
