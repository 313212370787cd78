"""The SQLite backend (stdlib sqlite3): one file, WAL mode, shared by every kampx process.

WAL lets the db writer commit location batches while kampxctl and the ctl process read.
Writes take the write lock up front (BEGIN IMMEDIATE), so two writers queue on busy_timeout
instead of failing halfway through a transaction with "database is locked".

The file is created 0600 and the directories created for it 0750 (FILE_MODE, DIR_MODE), so
that HA1 digests are not readable by every local user as they were with SQLite's 0644;
existing files and directories are left as they are.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from kampx.db._rows import utc_text  # epoch -> the accounting tables' UTC text (in C)
from kampx.db.base import (
    DISPATCHER_COLUMNS,
    LOCATION_FIELDS,
    Addresses,
    AddressRow,
    Dialogs,
    Dispatcher,
    DispatcherRow,
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
from kampx.db.migrations import MIGRATIONS, Migration, upgrade

log = logging.getLogger("kampx.db")

BUSY_TIMEOUT_MS = 5000
# The file holds every subscriber's HA1 digests: the service's user alone reads it. Its
# directory lets the service's group in (kampxctl run by an admin of that group), nobody else.
FILE_MODE = 0o600
DIR_MODE = 0o750


def _create(path: str) -> None:
    """Create the database's missing directories (DIR_MODE) and the file itself, empty
    (FILE_MODE), before SQLite opens it: SQLite would create it 0644, and gives its -wal and
    -shm files the database file's mode. What exists already keeps its mode: an operator's
    choice. The umask can only take more away."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        _make_dirs(parent)
    except OSError as e:
        raise StorageError(f"cannot create directory {e.filename}: {e.strerror}") from None
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE))
    except FileExistsError:
        pass
    except OSError as e:
        raise StorageError(f"cannot create database {path}: {e.strerror}") from None


def _make_dirs(path: str) -> None:
    """os.makedirs, but every directory it creates gets DIR_MODE (makedirs gives that mode
    to the last one only)."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        _make_dirs(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass  # another process made it meanwhile


class _Db:
    """The connection plus the two things every repository needs: error wording and a
    write transaction."""

    def __init__(self, conn: sqlite3.Connection, path: str):
        self.conn = conn
        self.path = path
        self.pid = os.getpid()

    def check_owner(self) -> sqlite3.Connection:
        if os.getpid() != self.pid:
            raise StorageError(
                f"database {self.path} was opened by process {self.pid}; open it again after fork"
            )
        return self.conn

    def error(self, e: sqlite3.Error) -> StorageError:
        text = str(e)
        if "locked" in text or "busy" in text:
            return StorageError(
                f"database {self.path} is busy: another process holds it "
                f"locked (waited {BUSY_TIMEOUT_MS // 1000} s)"
            )
        if "readonly" in text:
            return StorageError(f"database {self.path} is read-only for this user")
        return StorageError(f"database {self.path}: {text}")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        conn = self.check_owner()
        try:
            yield conn
        except sqlite3.Error as e:
            raise self.error(e) from None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed when the block ends, rolled back on any exception."""
        conn = self.check_owner()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise self.error(e) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self.error(exc) from None
            raise


class _Duplicate(Exception):
    """A unique key was taken; raised inside a write() block to roll it back."""


_user = user_text


class SqliteSubscribers(Subscribers):
    _COLUMNS = "username, domain, ha1, ha1b, ha1_sha256, ha1b_sha256"

    def __init__(self, db: _Db):
        self._db = db

    def add(self, sub: Subscriber) -> None:
        self.add_many([sub])

    def add_many(self, subs: Iterable[Subscriber]) -> int:
        rows = distinct_accounts(subs)
        try:
            with self._db.write() as conn:
                try:
                    conn.executemany(
                        f"INSERT INTO subscriber ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", rows
                    )
                except sqlite3.IntegrityError:
                    raise _Duplicate from None  # rolls the whole batch back
        except _Duplicate:
            # after the rollback, so that rows of this batch do not count as existing
            raise StorageError(f"user {self._first_existing(rows)} already exists") from None
        return len(rows)

    def _first_existing(self, subs: Sequence[tuple]) -> str:
        """The error path of add_many: name the first user that was already there."""
        with self._db.read() as conn:
            for s in subs:
                if conn.execute(
                    "SELECT 1 FROM subscriber WHERE username = ? AND domain = ?", (s[0], s[1])
                ).fetchone():
                    return _user(s[0], s[1])
        return "(unknown)"  # pragma: no cover - removed again between the two statements

    def set_password(self, sub: Subscriber) -> None:
        with self._db.write() as conn:
            cur = conn.execute(
                "UPDATE subscriber SET ha1 = ?, ha1b = ?, ha1_sha256 = ?, ha1b_sha256 = ? "
                "WHERE username = ? AND domain = ?",
                (sub.ha1, sub.ha1b, sub.ha1_sha256, sub.ha1b_sha256, sub.username, sub.domain),
            )
            if cur.rowcount == 0:
                raise StorageError(f"no such user {_user(sub.username, sub.domain)}")

    def remove(self, username: str, domain: str) -> None:
        with self._db.write() as conn:
            cur = conn.execute(
                "DELETE FROM subscriber WHERE username = ? AND domain = ?", (username, domain)
            )
            if cur.rowcount == 0:
                raise StorageError(f"no such user {_user(username, domain)}")

    def get(self, username: str, domain: str | None = None) -> Subscriber | None:
        with self._db.read() as conn:
            if domain is None:
                row = conn.execute(
                    f"SELECT {self._COLUMNS} FROM subscriber WHERE username = ? "
                    "ORDER BY id LIMIT 1",
                    (username,),
                ).fetchone()
            else:
                row = conn.execute(
                    f"SELECT {self._COLUMNS} FROM subscriber WHERE username = ? AND domain = ?",
                    (username, domain),
                ).fetchone()
        return Subscriber(*row) if row else None

    def count(self, domain: str | None = None) -> int:
        with self._db.read() as conn:
            if domain is None:
                return conn.execute("SELECT COUNT(*) FROM subscriber").fetchone()[0]
            return conn.execute(
                "SELECT COUNT(*) FROM subscriber WHERE domain = ?", (domain,)
            ).fetchone()[0]

    def list(self, domain: str | None = None) -> Iterator[Subscriber]:
        with self._db.read() as conn:
            if domain is None:
                rows = conn.execute(
                    f"SELECT {self._COLUMNS} FROM subscriber ORDER BY domain, username"
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {self._COLUMNS} FROM subscriber WHERE domain = ? ORDER BY username",
                    (domain,),
                ).fetchall()
        return (Subscriber(*r) for r in rows)

    def mirror(self, puts: Iterable[Subscriber], deletes: Iterable[tuple[str, str]]) -> None:
        """A replica's upkeep (a node of a PostgreSQL cluster keeps one, kampx/cluster.py):
        insert or replace `puts`, delete the (username, domain) `deletes`, in one transaction."""
        rows, gone = [tuple(s) for s in puts], list(deletes)
        if not rows and not gone:
            return
        with self._db.write() as conn:
            conn.executemany(
                f"INSERT INTO subscriber ({self._COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (username, domain) DO UPDATE SET ha1 = excluded.ha1, "
                "ha1b = excluded.ha1b, ha1_sha256 = excluded.ha1_sha256, "
                "ha1b_sha256 = excluded.ha1b_sha256",
                rows,
            )
            conn.executemany("DELETE FROM subscriber WHERE username = ? AND domain = ?", gone)


class SqliteAddresses(Addresses):
    def __init__(self, db: _Db):
        self._db = db

    def add(self, grp: int, ip_addr: str, mask: int = 32, port: int = 0, tag: str = "") -> int:
        with self._db.write() as conn:
            cur = conn.execute(
                "INSERT INTO address (grp, ip_addr, mask, port, tag) VALUES (?, ?, ?, ?, ?)",
                (grp, ip_addr, mask, port, tag or None),
            )
            assert cur.lastrowid is not None  # set by every INSERT that succeeded
            return cur.lastrowid

    def remove(self, grp: int, ip_addr: str) -> int:
        with self._db.write() as conn:
            cur = conn.execute("DELETE FROM address WHERE grp = ? AND ip_addr = ?", (grp, ip_addr))
            if cur.rowcount == 0:
                raise StorageError(f"no address {ip_addr} in group {grp}")
            return cur.rowcount

    def list(self) -> list[AddressRow]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT grp, ip_addr, mask, port, tag, id FROM address ORDER BY id"
            ).fetchall()
        return [AddressRow(g, ip, m, p, t or "", i) for g, ip, m, p, t, i in rows]


class SqliteDispatcher(Dispatcher):
    def __init__(self, db: _Db):
        self._db = db

    def add(self, row: DispatcherRow) -> int:
        with self._db.write() as conn:
            cur = conn.execute(
                f"INSERT INTO dispatcher ({DISPATCHER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                tuple(row)[:6],
            )
            assert cur.lastrowid is not None  # set by every INSERT that succeeded
            return cur.lastrowid

    def remove(self, row_id: int) -> None:
        with self._db.write() as conn:
            if conn.execute("DELETE FROM dispatcher WHERE id = ?", (row_id,)).rowcount == 0:
                raise StorageError(f"no dispatcher entry with id {row_id}")

    def list(self) -> list[DispatcherRow]:
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {DISPATCHER_COLUMNS}, id FROM dispatcher ORDER BY id"
            ).fetchall()
        return [DispatcherRow(*r) for r in rows]


class SqliteLocations(Locations):
    # LOCATION_FIELDS with aor stored as username + domain
    _COLUMNS = ("ruid", "username", "domain") + LOCATION_FIELDS[2:]
    _UPSERT = (
        f"INSERT INTO location ({', '.join(_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(_COLUMNS))}) ON CONFLICT (ruid) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
    )

    def __init__(self, db: _Db):
        self._db = db

    def upsert_many(self, bindings: Iterable[Any]) -> int:
        rows = []
        for b in bindings:
            v = binding_values(b)
            rows.append((v[0], *split_aor(v[1]), *v[2:]))
        if not rows:
            return 0
        with self._db.write() as conn:
            conn.executemany(self._UPSERT, rows)
        return len(rows)

    def delete_many(self, ruids: Iterable[str]) -> int:
        keys = [(r,) for r in ruids]
        if not keys:
            return 0
        with self._db.write() as conn:
            cur = conn.executemany("DELETE FROM location WHERE ruid = ?", keys)
            return cur.rowcount

    def load_all(self, now: float) -> Iterator[dict]:
        conn = self._db.check_owner()
        try:
            cur = conn.execute(
                f"SELECT {', '.join(self._COLUMNS)} FROM location "
                "WHERE expires = 0 OR expires > ? ORDER BY id",
                (now,),
            )
            while True:  # streamed: a million bindings never sit in one list
                batch = cur.fetchmany(2000)
                if not batch:
                    return
                for row in batch:
                    yield dict(zip(LOCATION_FIELDS, (row[0], join_aor(row[1], row[2]), *row[3:])))
        except sqlite3.Error as e:
            raise self._db.error(e) from None

    def delete_expired(self, now: float) -> int:
        with self._db.write() as conn:
            return conn.execute(
                "DELETE FROM location WHERE expires != 0 AND expires <= ?", (now,)
            ).rowcount

    def count(self) -> int:
        with self._db.read() as conn:
            return conn.execute("SELECT COUNT(*) FROM location").fetchone()[0]


class SqliteDialogs(Dialogs):
    _UPSERT = (
        "INSERT INTO dialog (callid, from_tag, state, start_time, timeout) "
        "VALUES (?, ?, ?, CAST(strftime('%s', 'now') AS INTEGER), ?) "
        "ON CONFLICT (callid, from_tag) DO UPDATE SET state = excluded.state, "
        "timeout = excluded.timeout"
    )

    def __init__(self, db: _Db):
        self._db = db

    def apply(self, puts, deletes) -> None:
        puts, deletes = list(puts), list(deletes)
        if not puts and not deletes:
            return
        with self._db.write() as conn:
            conn.executemany(self._UPSERT, puts)
            conn.executemany("DELETE FROM dialog WHERE callid = ? AND from_tag = ?", deletes)

    def load_live(self, now: float):
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT callid, from_tag, timeout FROM dialog WHERE timeout > ?", (now,)
            ).fetchall()
        return iter(rows)

    def delete_expired(self, now: float) -> int:
        with self._db.write() as conn:
            return conn.execute("DELETE FROM dialog WHERE timeout <= ?", (now,)).rowcount


def utc_epoch(value: Any) -> float | None:
    """utc_text's other way round, a stored time as epoch seconds; also reads Kamailio's
    form without milliseconds (and a number as epoch seconds). None for a value that is
    neither."""
    if isinstance(value, (int, float)):
        return float(value)
    try:
        dt = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return round(dt.timestamp(), 3)


class SqliteAccounting(SqlAccounting):
    to_db = staticmethod(utc_text)
    from_db = staticmethod(utc_epoch)


def on_read_only_file_system(path: str) -> bool:
    try:
        return os.path.exists(path) and bool(
            os.statvfs(os.path.dirname(os.path.abspath(path))).f_flag & os.ST_RDONLY
        )
    except OSError:
        return False


class SqliteStorage(Storage):
    """`read_only`: the file system was read-only when it was opened (a disk remounted
    read-only after errors, a maintenance mount). The proxy still starts and serves what the
    database holds instead of refusing to run; every write raises StorageError, and the db
    writer keeps the changes in shared memory and opens the database again until it can write
    (dbwriter.py). SQLite cannot open a WAL database on a read-only medium except as
    immutable: such a connection never sees later changes, hence the reopening."""

    read_only = False

    def __init__(self, path: str, *, migrations: Sequence[Migration] = MIGRATIONS):
        self.read_only = on_read_only_file_system(path)
        try:
            if self.read_only:
                uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro&immutable=1"
                conn = sqlite3.connect(
                    uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None
                )
            else:
                _create(path)
                conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as e:
            raise StorageError(f"cannot open database {path}: {e}") from None
        self._db = _Db(conn, path)
        try:
            if self.read_only:
                self._version = upgrade(conn, path, migrations)  # no write when up to date
                log.warning(
                    "database %s is on a read-only file system: opened read-only; changes are "
                    "kept in memory and written once it is writable",
                    path,
                )
            else:
                self._version = self._prepare(conn, path, migrations)
        except sqlite3.DatabaseError as e:
            conn.close()
            if "not a database" in str(e):
                raise StorageError(f"{path} is not an SQLite database") from None
            raise self._db.error(e) from None
        except BaseException:
            conn.close()
            raise
        self.subscribers = SqliteSubscribers(self._db)
        self.addresses = SqliteAddresses(self._db)
        self.dispatcher = SqliteDispatcher(self._db)
        self.locations = SqliteLocations(self._db)
        self._dialogs = SqliteDialogs(self._db)
        self.acc = SqliteAccounting(self._db)

    @property
    def dialogs(self) -> SqliteDialogs:
        return self._dialogs

    @staticmethod
    def _prepare(conn, path, migrations) -> int:
        """WAL mode and the schema. Several processes opening a new file at once can get
        SQLITE_BUSY here without SQLite waiting out busy_timeout (the switch to WAL and the
        first write race each other), so the whole sequence is retried until the timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA journal_mode = WAL")
                # WAL + NORMAL: a committed transaction survives a killed process; only a
                # power loss can take the last commits, which write-behind accepts anyway.
                conn.execute("PRAGMA synchronous = NORMAL")
                return upgrade(conn, path, migrations)
            except sqlite3.OperationalError as e:
                busy = "locked" in str(e) or "busy" in str(e)
                if not busy or time.monotonic() >= deadline:
                    raise
                time.sleep(random.uniform(0.01, 0.05))

    @property
    def schema_version(self) -> int:
        return self._version

    @property
    def where(self) -> str:
        return self._db.path

    def close(self) -> None:
        # after fork the child must not touch the parent's connection, not even to close it
        if os.getpid() == self._db.pid:
            self._db.conn.close()
