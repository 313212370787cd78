"""Subscriber lookups for digest verification, cached per process.

Without a cache every authenticated request would run an SQLite query in the worker. With
one, the question is how a worker learns that `kampxctl add/passwd/rm` (another process, with
its own connection) changed the table. SQLite answers it: `PRAGMA data_version` on a
connection changes whenever another connection committed to the file. Measured on this
machine: the pragma costs about 4 us from Python, a subscriber SELECT about 7 us, so probing
on every request would save little. Instead the probe is lazy:

  * a lookup that leads to a successful authentication trusts the cache if it was validated
    within the last `recheck_s` (default 0.1 s): `rm` and `passwd` take effect for the old
    password within that time;
  * a lookup that leads to a failure (unknown user, wrong password) probes before the
    failure is final, and on a change looks the subscriber up again. A user added or a
    password changed a moment ago therefore works at once, and the probe is paid only on
    failures. Unknown users and wrong passwords take this same path, so they cost the same.

Only a change to the subscriber table empties the cache: when data_version says something was
committed, the probe reads the counter that triggers on the subscriber table keep (migration 2),
so the db writer's location batches, committed every fraction of a second, leave it alone.

Memory. The names come from the network, so nothing an attacker sends may grow a worker
without bound:

  * a name (user or domain) longer than MAX_NAME_BYTES is never looked up nor remembered: it
    cannot be in the table (Kamailio's columns are VARCHAR(64));
  * subscribers found are kept; only rows of the table can be, so they are bounded by it;
  * "no such subscriber" is remembered in a table bounded in bytes (two generations of
    NEGATIVE_BYTES each, the older dropped when the newer is full). It exists so that a
    repeated guess at an unknown user is a cache hit like a guess at a known one: without it
    every unknown user would cost a SELECT that a cached subscriber does not, a timing hint.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time

from kampx.db.sqlite import on_read_only_file_system

log = logging.getLogger("kampx.auth")

MAX_NAME_BYTES = 128  # longer user or domain names are refused before any lookup
MAX_ENTRIES = 200_000  # subscribers kept; beyond this the cache starts over (huge tables)
NEGATIVE_BYTES = 512 * 1024  # per generation of the "no such subscriber" table
# what a remembered absent key costs beyond its two strings: the tuple and its set slot
_KEY_OVERHEAD = 56 + 64


def name_fits(name: str) -> bool:
    """True when `name` is at most MAX_NAME_BYTES bytes as it came off the wire (UTF-8, the
    undecodable bytes the parser kept as surrogate escapes counting one each)."""
    n = len(name)
    if n <= MAX_NAME_BYTES // 4:  # no character takes more than 4 bytes
        return True
    if n > MAX_NAME_BYTES:
        return False
    return name.isascii() or len(name.encode("utf-8", "surrogateescape")) <= MAX_NAME_BYTES


class SqliteChangeProbe:
    """The subscriber table's change counter, read on a private read-only connection only
    when `PRAGMA data_version` says another connection committed something."""

    def __init__(self, path: str):
        self._path = path
        self._cur: sqlite3.Cursor | None = None
        self._data_version: int | None = None  # None: the first call always reads the counter
        self._counter = 0
        self._immutable = False

    def _connect(self) -> None:
        try:
            conn = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, isolation_level=None)
            conn.execute("PRAGMA data_version")
            self._immutable = False
        except sqlite3.OperationalError:
            # a WAL database on a read-only file system opens only as immutable
            # (db/sqlite.py); it is opened normally again once the file system is writable
            conn = sqlite3.connect(
                f"file:{self._path}?mode=ro&immutable=1", uri=True, isolation_level=None
            )
            self._immutable = True
        self._cur = conn.cursor()
        self._data_version = None

    def __call__(self) -> int:
        if self._cur is None or (self._immutable and not on_read_only_file_system(self._path)):
            if self._cur is not None:
                self._cur.connection.close()
            self._connect()
        assert self._cur is not None
        self._cur.execute("PRAGMA data_version")
        dv = self._cur.fetchone()[0]
        if dv != self._data_version:
            self._data_version = dv
            self._cur.execute("SELECT counter FROM kampx_changes WHERE name = 'subscriber'")
            row = self._cur.fetchone()
            self._counter = row[0] if row else 0
        return self._counter


class SubscriberCache:
    """(username, domain) -> Subscriber or None, for one process.

    `open_storage` is called on first use (after fork, in the process that uses it).
    Subscribers found are kept (at most `max_entries`), absent keys in a table of at most
    2 x `negative_bytes` (see the module docstring); domain None means any domain."""

    def __init__(
        self,
        open_storage,
        probe,
        recheck_s: float = 0.1,
        clock=time.monotonic,
        max_entries: int = MAX_ENTRIES,
        negative_bytes: int = NEGATIVE_BYTES,
    ):
        self._open_storage = open_storage
        self._storage = None
        self._probe = probe
        self._recheck_s = recheck_s
        self._clock = clock
        self._max = max_entries
        self._entries: dict[tuple[str, str | None], object] = {}
        self._negative_max = negative_bytes
        self._absent: set[tuple[str, str | None]] = set()
        self._absent_old: set[tuple[str, str | None]] = set()
        self._absent_bytes = 0
        self._version = None
        self._checked_at = float("-inf")
        self.hits = self.misses = self.flushes = 0

    def _storage_handle(self):
        s = self._storage
        if (
            s is not None
            and getattr(s, "read_only", False)
            and not on_read_only_file_system(s.where)
        ):
            s.close()  # opened read-only (immutable): blind to changes once writable
            s = self._storage = None
        if s is None:
            s = self._storage = self._open_storage()
        return s

    def _validate(self) -> bool:
        """Probe the database; empty the cache when it changed. True when it had."""
        self._storage_handle()  # creates the file if need be, before the probe opens it
        version = self._probe()
        self._checked_at = self._clock()
        if version == self._version:
            return False
        if self._version is not None:
            self.flushes += 1
        self._version = version
        self._entries.clear()
        self._absent.clear()
        self._absent_old.clear()
        self._absent_bytes = 0
        return True

    def get(self, username: str, domain: str | None):
        """The subscriber (cached, validated within recheck_s), or None when there is none.
        A name longer than MAX_NAME_BYTES is None at once: no query, nothing remembered."""
        if self._clock() - self._checked_at > self._recheck_s:
            self._validate()
        key = (username, domain)
        sub = self._entries.get(key)
        if sub is not None or key in self._absent or key in self._absent_old:
            self.hits += 1
            return sub
        if not name_fits(username) or (domain is not None and not name_fits(domain)):
            return None
        self.misses += 1
        try:
            sub = self._storage_handle().subscribers.get(username, domain)
        except UnicodeEncodeError:
            # bytes off the wire that are not UTF-8 (kept as surrogates): no row has them
            sub = None
        if sub is not None:
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[key] = sub
        else:
            self._remember_absent(key)
        return sub

    def _remember_absent(self, key) -> None:
        username, domain = key
        size = sys.getsizeof(username) + sys.getsizeof(domain) + _KEY_OVERHEAD
        if self._absent_bytes + size > self._negative_max:
            # the newer generation is full: it becomes the older, the older is dropped
            self._absent_old = self._absent
            self._absent = set()
            self._absent_bytes = 0
        self._absent.add(key)
        self._absent_bytes += size

    def recheck(self, username: str, domain: str) -> tuple[bool, object]:
        """Before a failure is final: (changed, subscriber as the database has it now).
        When nothing was committed since the entry was read, the same entry comes back."""
        changed = self._validate()
        return changed, self.get(username, domain)

    def close(self) -> None:
        if self._storage is not None:
            self._storage.close()
            self._storage = None
