"""The storage interface: what kampx keeps in a database, independent of the database.

Three Kamailio-like tables (subscriber, address, location), each behind a small repository
object on a Storage. The SQLite backend (kampx/db/sqlite.py) is the only one today; a
networked backend implements the same three interfaces.

A Storage belongs to the process that opened it: open it after fork, in the process that uses
it (a database connection shared across fork corrupts the file or the protocol stream).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple


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


class Storage(ABC):
    """One open database: `subscribers`, `addresses`, `dispatcher`, `locations`, `dialogs`
    and the schema version."""

    subscribers: Subscribers
    addresses: Addresses
    dispatcher: Dispatcher
    locations: Locations

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
