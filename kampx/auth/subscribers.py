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
"""
from __future__ import annotations

import logging
import sqlite3
import time

log = logging.getLogger("kampx.auth")

MAX_ENTRIES = 200_000      # beyond this the cache starts over (bounds memory under a name spray)


class SqliteChangeProbe:
    """The subscriber table's change counter, read on a private read-only connection only
    when `PRAGMA data_version` says another connection committed something."""

    def __init__(self, path: str):
        self._path = path
        self._cur = None
        self._data_version = None
        self._counter = None

    def __call__(self) -> int:
        if self._cur is None:
            conn = sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, isolation_level=None)
            self._cur = conn.cursor()
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

    `open_storage` is called on first use (after fork, in the process that uses it)."""

    def __init__(self, open_storage, probe, recheck_s: float = 0.1, clock=time.monotonic,
                 max_entries: int = MAX_ENTRIES):
        self._open_storage = open_storage
        self._storage = None
        self._probe = probe
        self._recheck_s = recheck_s
        self._clock = clock
        self._max = max_entries
        self._entries: dict[tuple[str, str], object] = {}
        self._version = None
        self._checked_at = float("-inf")
        self.hits = self.misses = self.flushes = 0

    def _storage_handle(self):
        if self._storage is None:
            self._storage = self._open_storage()
        return self._storage

    def _validate(self) -> bool:
        """Probe the database; empty the cache when it changed. True when it had."""
        self._storage_handle()          # creates the file if need be, before the probe opens it
        version = self._probe()
        self._checked_at = self._clock()
        if version == self._version:
            return False
        if self._version is not None:
            self.flushes += 1
        self._version = version
        self._entries.clear()
        return True

    def get(self, username: str, domain: str):
        """The subscriber (cached, validated within recheck_s), or None when there is none."""
        if self._clock() - self._checked_at > self._recheck_s:
            self._validate()
        key = (username, domain)
        entries = self._entries
        try:
            sub = entries[key]
            self.hits += 1
            return sub
        except KeyError:
            pass
        self.misses += 1
        sub = self._storage_handle().subscribers.get(username, domain)
        if len(entries) >= self._max:
            entries.clear()
        entries[key] = sub
        return sub

    def recheck(self, username: str, domain: str) -> tuple[bool, object]:
        """Before a failure is final: (changed, subscriber as the database has it now).
        When nothing was committed since the entry was read, the same entry comes back."""
        changed = self._validate()
        return changed, self.get(username, domain)

    def close(self) -> None:
        if self._storage is not None:
            self._storage.close()
            self._storage = None
