"""The storage interface: what kampx keeps in a database, independent of the database.

Three Kamailio-like tables (subscriber, address, location), each behind a small repository
object on a Storage. The SQLite backend (kampx/db/sqlite.py) is the only one today; a
networked backend implements the same three interfaces.

A Storage belongs to the process that opened it: open it after fork, in the process that uses
it (a database connection shared across fork corrupts the file or the protocol stream).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from kampx.db._rows import plain_row


class StorageError(Exception):
    """A storage failure, worded as the one line an operator reads ("no such user")."""


class Subscriber(NamedTuple):
    """A subscriber's digest credentials; the clear password is never stored.

    ha1 = H(username:realm:password), ha1b = H(username@domain:realm:password), with H = MD5 or
    SHA-256 (RFC 8760); realm = domain (kamctl's convention)."""

    username: str
    domain: str
    ha1: str
    ha1b: str
    ha1_sha256: str
    ha1b_sha256: str


class AddressRow(NamedTuple):
    """One row of Kamailio's permissions address table; port 0 = any port, tag "" = none."""

    grp: int
    ip_addr: str
    mask: int
    port: int
    tag: str
    id: int | None = None


class DispatcherRow(NamedTuple):
    """One row of Kamailio's dispatcher table: a gateway `destination` (a SIP URI) of set
    `setid`; flags are Kamailio's ds flags (1 inactive, 2 trying, 4 disabled, 8 probing),
    attrs its "weight=50;duid=gw1" string."""

    setid: int
    destination: str
    flags: int = 0
    priority: int = 0
    attrs: str = ""
    description: str = ""
    id: int | None = None


# DispatcherRow's fields but the id, as the dispatcher table's columns are named
DISPATCHER_COLUMNS = "setid, destination, flags, priority, attrs, description"


# The fields of kampx.usrloc.Binding, in this order, as the location table stores them.
# q is q*1000 (-1: the contact gave none); expires and last_modified are epoch seconds,
# expires 0 is a permanent binding (Kamailio's convention for `ul add` without expires).
LOCATION_FIELDS = (
    "ruid",
    "aor",
    "contact",
    "received",
    "path",
    "socket",
    "user_agent",
    "callid",
    "instance",
    "reg_id",
    "cseq",
    "q",
    "expires",
    "last_modified",
    "flags",
)


def binding_values(binding: Any) -> tuple:
    """A Binding (or anything with those attributes, or a mapping) as a LOCATION_FIELDS tuple."""
    if isinstance(binding, Mapping):
        return tuple(binding[f] for f in LOCATION_FIELDS)
    return tuple(getattr(binding, f) for f in LOCATION_FIELDS)


def split_aor(aor: str) -> tuple[str, str | None]:
    """Kamailio's (username, domain) columns of an AOR; domain NULL for an AOR without one."""
    user, at, domain = aor.rpartition("@")
    return (user, domain) if at else (aor, None)


def join_aor(username: str, domain: str | None) -> str:
    return username if domain is None else f"{username}@{domain}"


def user_text(username: str, domain: str) -> str:
    """user@domain as messages name a subscriber."""
    return f"{username}@{domain}" if domain else username


def distinct_accounts(subs: Iterable[Subscriber]) -> list[tuple]:
    """The rows as tuples; StorageError naming the first (username, domain) listed twice."""
    rows = [tuple(s) for s in subs]
    seen: set[tuple[str, str]] = set()
    for s in rows:
        if (s[0], s[1]) in seen:
            raise StorageError(f"user {user_text(s[0], s[1])} is listed twice")
        seen.add((s[0], s[1]))
    return rows


class Subscribers(ABC):
    @abstractmethod
    def add(self, sub: Subscriber) -> None:
        """Add one; StorageError "user U@D already exists" when (username, domain) is taken."""

    @abstractmethod
    def add_many(self, subs: Iterable[Subscriber]) -> int:
        """Add all of them in one transaction, or none (the first duplicate is named)."""

    @abstractmethod
    def set_password(self, sub: Subscriber) -> None:
        """Replace the credentials of (sub.username, sub.domain); "no such user" if absent."""

    @abstractmethod
    def remove(self, username: str, domain: str) -> None:
        """Remove one; "no such user" if absent."""

    @abstractmethod
    def get(self, username: str, domain: str | None = None) -> Subscriber | None:
        """The subscriber, or None. Without a domain: the oldest entry with that username."""

    @abstractmethod
    def count(self, domain: str | None = None) -> int: ...

    @abstractmethod
    def list(self, domain: str | None = None) -> Iterator[Subscriber]:
        """Ordered by domain, then username."""


class Addresses(ABC):
    @abstractmethod
    def add(self, grp: int, ip_addr: str, mask: int = 32, port: int = 0, tag: str = "") -> int:
        """Insert a row (the caller has validated it) and return its id."""

    @abstractmethod
    def remove(self, grp: int, ip_addr: str) -> int:
        """Remove every row of the group with that ip_addr (kamctl's `address rm`);
        StorageError when there is none. Returns how many were removed."""

    @abstractmethod
    def list(self) -> list[AddressRow]:
        """Every row, ordered by id (the order a reload sees them in)."""


class Dispatcher(ABC):
    @abstractmethod
    def add(self, row: DispatcherRow) -> int:
        """Insert a row (the caller has validated it; its id is ignored) and return its id."""

    @abstractmethod
    def remove(self, row_id: int) -> None:
        """Remove the row with that id (kamctl's `dispatcher rm`); StorageError when there
        is none."""

    @abstractmethod
    def list(self) -> list[DispatcherRow]:
        """Every row, ordered by id (the order a reload sees them in)."""


class Locations(ABC):
    @abstractmethod
    def upsert_many(self, bindings: Iterable[Any]) -> int:
        """Insert or replace (by ruid) each binding, in one transaction."""

    @abstractmethod
    def delete_many(self, ruids: Iterable[str]) -> int:
        """Delete by ruid, in one transaction; unknown ruids are ignored. Returns rows deleted."""

    @abstractmethod
    def load_all(self, now: float) -> Iterator[dict]:
        """Every binding not expired at `now` (permanent ones included), as dicts keyed by
        LOCATION_FIELDS, so that Binding(**row) rebuilds it."""

    @abstractmethod
    def delete_expired(self, now: float) -> int:
        """Drop rows that expired (for example while the proxy was down)."""

    @abstractmethod
    def count(self) -> int: ...

    def delete_seen(self, seen: Iterable[tuple[str, float]]) -> int:
        """Delete each (ruid, last_modified) only if the stored row still has that
        last_modified: the version the caller saw deleted. With several nodes this keeps an
        expiry on one node from deleting a refresh another node wrote meanwhile. A backend
        with a single writer (SQLite) deletes by ruid."""
        return self.delete_many(ruid for ruid, _ in seen)


class LocationFeed(ABC):
    """What a backend shared by several nodes adds to Locations: the changes since a point,
    so that each node can follow the others (kampx/cluster.py)."""

    @abstractmethod
    def changes_since(self, seq: int, limit: int) -> list[tuple[int, str, str, dict | None]]:
        """(seq, ruid, aor, row or None for a deletion), ordered by seq, at most `limit`;
        row is keyed by LOCATION_FIELDS. Every change committed after this call has a
        higher seq than every change it returned."""

    @abstractmethod
    def snapshot(self):
        """Context manager -> (seq, iterator of rows): every binding as of one moment, and
        the seq to follow changes from."""

    @abstractmethod
    def purge_tombstones(self, before: float) -> int:
        """Forget deletions older than `before` (epoch seconds)."""


class Dialogs(ABC):
    """The confirmed dialogs kampx established (kampx/dialog.py): Kamailio's `dialog` table
    columns callid, from_tag (the caller's), state, timeout (epoch seconds)."""

    @abstractmethod
    def apply(
        self, puts: Iterable[tuple[str, str, int, float]], deletes: Iterable[tuple[str, str]]
    ) -> None:
        """Upsert (callid, from_tag, state, timeout) rows and delete (callid, from_tag)
        ones, all in one transaction."""

    @abstractmethod
    def load_live(self, now: float) -> Iterator[tuple[str, str, float]]:
        """(callid, from_tag, timeout) of every dialog whose timeout is after `now`."""

    @abstractmethod
    def delete_expired(self, now: float) -> int: ...


# -- accounting (Kamailio's acc module tables) -----------------------------------------------

# The tables a record names in its "t" key.
ACC_TABLES = ("acc", "missed_calls", "acc_cdrs")

# (column, kind, width): kind "text" (NOT NULL DEFAULT '', a missing value is ''; longer
# values are cut to `width` so that one odd From header never fails a batch on a server that
# enforces VARCHAR lengths), "code" (a SIP code as Kamailio's char(3); "" when there is none,
# read back as None), "time" (epoch seconds in a record, a UTC DATETIME in the table, NULL
# when missing), "real" (0 when missing, rounded to milliseconds).
_PARTIES = (
    ("src_user", "text", 64),
    ("src_domain", "text", 128),
    ("src_ip", "text", 64),
    ("dst_ouser", "text", 64),
    ("dst_user", "text", 64),
    ("dst_domain", "text", 128),
    ("direction", "text", 8),
)
ACC_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("method", "text", 16),
    ("from_tag", "text", 128),
    ("to_tag", "text", 128),
    ("callid", "text", 255),
    ("sip_code", "code", 3),
    ("sip_reason", "text", 128),
    ("time", "time", 0),
) + _PARTIES
ACC_CDRS_COLUMNS: tuple[tuple[str, str, int], ...] = (
    (
        ("start_time", "time", 0),
        ("end_time", "time", 0),
        ("duration", "real", 0),
        ("setup_time", "time", 0),
        ("callid", "text", 255),
        ("from_tag", "text", 128),
        ("to_tag", "text", 128),
    )
    + _PARTIES[:6]
    + (
        ("direction", "text", 8),
        ("sip_code", "code", 3),
        ("sip_reason", "text", 128),
        ("end_reason", "text", 16),
    )
)
ACC_TABLE_COLUMNS = {
    "acc": ACC_COLUMNS,
    "missed_calls": ACC_COLUMNS,
    "acc_cdrs": ACC_CDRS_COLUMNS,
}
ACC_DIRECTIONS = ("inbound", "outbound", "local")


def _acc_text(v: Any, width: int) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        v = str(v)
    if not v.isascii():
        try:
            v.encode()
        except UnicodeEncodeError:  # a lone surrogate (a header's invalid UTF-8, escaped)
            v = v.encode("utf-8", "replace").decode()
    if "\x00" in v:  # PostgreSQL text cannot hold NUL
        v = v.replace("\x00", "")
    return v[:width]


def _acc_code(v: Any) -> str:
    if v is None or v == "" or v == 0:
        return ""
    code = int(v)
    if not 0 < code < 1000:
        raise ValueError(f"{v!r} is not a SIP code")
    return f"{code:03d}"


def _acc_plan(columns: tuple[tuple[str, str, int], ...]) -> tuple[tuple, ...]:
    """A table's columns as (names, ((index, width) of each text), ((index, kind) of the
    others), then the indexes of its times, codes and reals): acc_values checks the texts,
    which are most columns, in one tight loop; plain_row reads the last four."""
    names = tuple(name for name, _, _ in columns)
    texts = tuple((i, width) for i, (_, kind, width) in enumerate(columns) if kind == "text")
    others = tuple((i, kind) for i, (_, kind, _) in enumerate(columns) if kind != "text")
    by_kind = tuple(
        tuple(i for i, (_, k, _) in enumerate(columns) if k == kind)
        for kind in ("time", "code", "real")
    )
    return (names, texts, others, *by_kind)


_ACC_PLANS = {table: _acc_plan(columns) for table, columns in ACC_TABLE_COLUMNS.items()}


def acc_values(table: str, values: list, stamp, i: int = 0) -> tuple:
    """One row's values, in ACC_TABLE_COLUMNS[table] order, as the INSERT parameters:
    texts cut to their width (and made storable), times through `stamp` (the backend's time
    value), codes as char(3), reals rounded to milliseconds. `values` is left as it was (a
    batch that failed is retried from it). StorageError naming the record (`i`) and the
    column for a value that is not what the column holds."""
    _, texts, _, times, codes, reals = _ACC_PLANS[table]
    row = plain_row(values, texts, times, codes, reals, stamp)  # what kampx writes, in C
    if row is None:
        row = acc_values_checked(table, values, stamp, i)
    return row


def acc_values_checked(table: str, values: list, stamp, i: int = 0) -> tuple:
    """acc_values for any row: each value made storable, or StorageError naming it."""
    names, texts, others, _, _, _ = _ACC_PLANS[table]
    values = list(values)
    j = 0
    v = None
    try:
        for j, width in texts:
            v = values[j]
            if not (v.__class__ is str and len(v) <= width and v.isascii() and "\x00" not in v):
                values[j] = _acc_text(v, width)
        for j, kind in others:
            v = values[j]
            if kind == "time":
                values[j] = None if v is None else stamp(float(v))
            elif kind == "code":
                values[j] = _acc_code(v)
            else:
                values[j] = 0.0 if v is None else round(float(v), 3)
    except (TypeError, ValueError, OverflowError) as e:
        raise StorageError(
            f"accounting record {i} ({table}): bad {names[j]!r} {v!r} ({e})"
        ) from None
    return tuple(values)


def acc_columns(row: Mapping[str, Any]) -> tuple[str, list] | None:
    """A record (a dict with "t") as (table, its values in ACC_TABLE_COLUMNS order; a missing
    key None), None when "t" names no accounting table."""
    table = row.get("t")
    if not isinstance(table, str) or table not in _ACC_PLANS:
        return None
    return table, list(map(row.get, _ACC_PLANS[table][0]))


def acc_params(rows: Iterable[tuple[str, list]], stamp) -> dict[str, list[tuple]]:
    """(table, values in column order) rows as each table's INSERT parameters: {table:
    [tuple, ...]} for the tables that have rows (acc_values: StorageError for a bad value)."""
    out: dict[str, list[tuple]] = {}
    for i, (table, values) in enumerate(rows):
        params = out.get(table)
        if params is None:
            params = out[table] = []
        params.append(acc_values(table, values, stamp, i))
    return out


def acc_row(columns: tuple[tuple[str, str, int], ...], row: Sequence, epoch) -> dict:
    """A stored row (id, then `columns`) as the dict the read side returns: times as epoch
    seconds (`epoch(stored value)`), sip_code as an int (None when there is none)."""
    out: dict[str, Any] = {"id": row[0]}
    for (name, kind, _), v in zip(columns, row[1:]):
        if kind == "time":
            out[name] = None if v is None else epoch(v)
        elif kind == "code":
            out[name] = int(v) if v and str(v).isdigit() else None
        elif kind == "real":
            out[name] = float(v or 0)
        else:
            out[name] = "" if v is None else v
    return out


def acc_check_table(table: str) -> None:
    if table not in ("acc", "missed_calls"):
        raise ValueError(f"no accounting table {table!r} (acc or missed_calls)")


class Accounting(ABC):
    """Kamailio's acc tables: `acc` (accounted transactions), `missed_calls` (INVITEs with a
    negative final) and `acc_cdrs` (one row per call, from kampx's dialog tracking), with the
    extra columns of Kamailio's default kamailio.cfg (src_user... dst_domain) and
    `direction`. Times are UTC; the read side returns them as epoch seconds."""

    @abstractmethod
    def insert(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Write the records (dicts with "t": "acc" | "missed_calls" | "acc_cdrs" and that
        table's columns; a missing key is the column's default, a missing time NULL), all
        in one transaction, one executemany per table; records of another "t" are skipped.
        Returns the rows written. StorageError when anything fails: then nothing is written."""

    @abstractmethod
    def insert_columns(self, rows: Iterable[tuple[str, list]]) -> int:
        """insert() for rows already in column order, (table, [the values of
        ACC_TABLE_COLUMNS[table], in that order]): the db writer's form, no dict per row."""

    @abstractmethod
    def cdrs(
        self,
        since: float | None = None,
        until: float | None = None,
        direction: str | None = None,
        limit: int = 100,
    ) -> list[dict]:
        """acc_cdrs rows with since <= start_time < until (epoch seconds; None: no bound), of
        one direction if given, newest (start_time) first, at most `limit`."""

    @abstractmethod
    def records(
        self, table: str, since: float | None = None, limit: int = 100, callid: str | None = None
    ) -> list[dict]:
        """Rows of `acc` or `missed_calls` (ValueError for any other name) with time >= since,
        of one Call-ID if given, newest first, at most `limit`."""

    @abstractmethod
    def summary(self, since: float, until: float | None = None) -> dict[str, dict]:
        """The CDRs with since <= start_time < until, per direction ("" for rows without
        one): {direction: {"calls": n, "answered": n with a 2xx, "duration": seconds}}."""


class SqlAccounting(Accounting):
    """The Accounting queries, written once for both backends: a subclass names its
    parameter placeholder (PH), how an epoch becomes the database's time and back
    (to_db, from_db) and how it orders NULL times (NULLS); `db` has read() and write()
    context managers giving a DB-API connection with execute()."""

    PH = "?"
    NULLS = ""

    def __init__(self, db):
        self._db = db
        cols = {t: ", ".join(c[0] for c in columns) for t, columns in ACC_TABLE_COLUMNS.items()}
        self._insert = {
            t: f"INSERT INTO {t} ({cols[t]}) VALUES ({', '.join([self.PH] * len(columns))})"
            for t, columns in ACC_TABLE_COLUMNS.items()
        }
        self._select = {t: f"SELECT id, {cols[t]} FROM {t}" for t in ACC_TABLE_COLUMNS}

    @staticmethod
    def to_db(epoch: float) -> Any:
        raise NotImplementedError

    @staticmethod
    def from_db(value: Any) -> float | None:
        raise NotImplementedError

    def insert(self, rows: Iterable[Mapping[str, Any]]) -> int:
        return self.insert_columns([c for c in map(acc_columns, rows) if c is not None])

    def insert_columns(self, rows: Iterable[tuple[str, list]]) -> int:
        params = acc_params(rows, self.to_db)
        if not params:
            return 0
        with self._db.write() as conn:
            cur = conn.cursor()
            for table, values in params.items():
                cur.executemany(self._insert[table], values)
        return sum(len(v) for v in params.values())

    def _range(self, column: str, since, until) -> tuple[list[str], list]:
        where: list[str] = []
        args: list = []
        if since is not None:
            where.append(f"{column} >= {self.PH}")
            args.append(self.to_db(since))
        if until is not None:
            where.append(f"{column} < {self.PH}")
            args.append(self.to_db(until))
        return where, args

    def _rows(self, table: str, where: list[str], args: list, order: str, limit: int) -> list:
        sql = self._select[table] + (" WHERE " + " AND ".join(where) if where else "")
        sql += f" ORDER BY {order} DESC{self.NULLS}, id DESC LIMIT {self.PH}"
        with self._db.read() as conn:
            return conn.execute(sql, (*args, limit)).fetchall()

    def cdrs(self, since=None, until=None, direction=None, limit: int = 100) -> list[dict]:
        where, args = self._range("start_time", since, until)
        if direction is not None:
            where.append(f"direction = {self.PH}")
            args.append(direction)
        rows = self._rows("acc_cdrs", where, args, "start_time", limit)
        return [acc_row(ACC_CDRS_COLUMNS, r, self.from_db) for r in rows]

    def records(self, table: str, since=None, limit: int = 100, callid=None) -> list[dict]:
        acc_check_table(table)
        where, args = self._range("time", since, None)
        if callid is not None:
            where.append(f"callid = {self.PH}")
            args.append(callid)
        rows = self._rows(table, where, args, "time", limit)
        return [acc_row(ACC_COLUMNS, r, self.from_db) for r in rows]

    def summary(self, since: float, until: float | None = None) -> dict[str, dict]:
        where, args = self._range("start_time", since, until)
        sql = (
            f"SELECT direction, COUNT(*), "
            f"COALESCE(SUM(CASE WHEN sip_code LIKE {self.PH} THEN 1 ELSE 0 END), 0), "
            "COALESCE(SUM(duration), 0) FROM acc_cdrs"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " GROUP BY direction ORDER BY direction"
        )
        with self._db.read() as conn:
            rows = conn.execute(sql, ("2%", *args)).fetchall()
        return {
            d: {"calls": int(n), "answered": int(a), "duration": round(float(s), 3)}
            for d, n, a, s in rows
        }


class Storage(ABC):
    """One open database: `subscribers`, `addresses`, `dispatcher`, `locations`, `dialogs`
    and the schema version."""

    subscribers: Subscribers
    addresses: Addresses
    dispatcher: Dispatcher
    locations: Locations
    acc: Accounting

    # read-only: PostgreSQL storage picks the node's SQLite file when it has one
    @property
    @abstractmethod
    def dialogs(self) -> Dialogs: ...

    @property
    @abstractmethod
    def schema_version(self) -> int: ...

    @property
    @abstractmethod
    def where(self) -> str:
        """Where the data lives, for messages (a file path, a server address)."""

    @abstractmethod
    def close(self) -> None: ...

    def connect(self) -> None:
        """Reach the database now (a StorageError when it cannot be reached); an embedded
        database is reached when opened, a server on first use otherwise."""
        return None  # embedded: opening it reached it

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
