"""The db writer process: location changes reach the database behind the packet loop.

Workers only touch shared memory: every binding change stamps its slot with a new version
(kampx/usrloc). This process asks the table for the changes the database has not seen
(pending_changes), writes them in one batch (upserts and deletions, each a single SQLite
transaction), and only then acknowledges them (ack_changes). A change is acknowledged after
its commit, never before, so:

- a db writer killed at any point loses nothing: the respawned one sees the same unacknowledged
  changes again (upserts and deletions by ruid are idempotent);
- a deleted binding's slot is reused only once its deletion is in the database;
- a database that is busy or failing only delays the writes (retried every interval, logged
  once per distinct error); the proxy keeps answering from memory.

Durability: the table is drained every FLUSH_INTERVAL, so a change is in the database within
about a second; SIGKILL of the whole proxy loses at most that last second. SIGTERM drains
before exiting (the supervisor stops the workers at the same time; the last drain runs once
they have had a moment to finish).

With a shared PostgreSQL database (several nodes) this process also follows the other nodes'
changes between its rounds, waking early on their notifications (kampx/cluster.py), writes
a change as soon as the table's change counter moves (the other nodes wait for it: at most
every CLUSTER_MIN_S, still every FLUSH_INTERVAL at the least) and writes deletions
conditionally on the version it saw (Locations.delete_seen).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from kampx import stats as S
from kampx.acc import AccSink
from kampx.dialog import JournalWriter
from kampx.process import HelperProcess
from kampx.shared import HELPER_ROWS
from kampx.usrloc import DB_ERRORS, DB_WRITES

if TYPE_CHECKING:
    from kampx.cluster import ClusterSync

log = logging.getLogger("kampx.dbwriter")

FLUSH_INTERVAL = 0.25  # seconds between drains: the write-behind delay, well under 1 s
# Several nodes: the other nodes wait for our writes, so a change is written as soon as the
# table's change counter moves (looked at every CLUSTER_TICK), at most every CLUSTER_MIN_S.
CLUSTER_TICK = 0.02
CLUSTER_MIN_S = 0.04
BATCH = 5000  # changes per database transaction
STOP_DRAIN_S = 1.0  # on SIGTERM, keep draining this long while changes still appear
DIALOG_PURGE_S = 60.0  # how often expired dialog rows are deleted


class DbWriterProcess(HelperProcess):
    role = "db writer"

    def serve(self) -> None:
        stats = S.Stats(self.shared.counters, HELPER_ROWS["db writer"])
        self.writer = LocationWriter(
            self.shared.location,
            self.cfg,
            stats=stats,
            dialogs=JournalWriter(
                self.shared.dialog_journal_r, stats, acc_sink=AccSink(self.cfg.acc, stats)
            ),
        )
        self.sync = None
        if self.cfg.db.shared:
            from kampx.cluster import ClusterSync

            self.sync = ClusterSync(
                self.shared.location,
                self.shared.permissions,
                self.writer.open,
                stats,
                self.shared.dispatcher,
            )
        self._loop()

    def _loop(self) -> None:
        sync = self.sync
        if sync is None:
            self.every(FLUSH_INTERVAL, self.writer.drain)
        else:
            store, last, seen = self.shared.location, float("-inf"), None
            while self.should_run():
                now = time.monotonic()
                count = store.change_count
                if now - last >= FLUSH_INTERVAL or (count != seen and now - last >= CLUSTER_MIN_S):
                    seen, last = count, now  # read before the drain: nothing is missed
                    self.writer.drain()
                self._follow(sync)
                sync.wait(CLUSTER_TICK)
        # last changes: the supervisor stops us once the workers are gone, so what the
        # journal holds now is all there is (accounting records included)
        deadline = time.monotonic() + STOP_DRAIN_S
        while True:
            n = self.writer.drain()
            if time.monotonic() >= deadline or (n == 0 and self.writer.healthy):
                break
            time.sleep(0.05)
        self.writer.close()

    def _follow(self, sync: ClusterSync) -> None:
        """One step of following the other nodes; a failure is logged once per distinct
        error (the step is retried every round, after the connection's back-off)."""
        from kampx.db import StorageError

        try:
            sync.step()
        except StorageError as e:
            if str(e) != self._sync_error:
                log.error("not following the other nodes' changes (retrying): %s", e)
                self._sync_error = str(e)
            return
        if self._sync_error:
            log.warning("following the other nodes' changes again")
            self._sync_error = None

    _sync_error: str | None = None


class LocationWriter:
    """Drains one location table, and the dialog journal when given one (kampx/dialog.py),
    into one database (opened here: after fork, in the process that writes)."""

    def __init__(self, store, cfg, storage=None, stats=None, dialogs=None):
        self.store = store
        self.cfg = cfg
        self.stats = stats
        self.dialogs = dialogs
        self.storage = storage  # opened on first use, and again after a failed open
        self.healthy = True
        self.written = 0  # changes committed by this process
        self._last_error = None
        self._next_purge = 0.0

    def drain(self) -> int:
        """Write and acknowledge every pending change; returns how many were committed. A
        database error stops this round (nothing of the failed batch is acknowledged)."""
        from kampx.db import StorageError

        if self.store is None or self.open() is None:
            return 0
        done = 0
        if self.dialogs is not None:
            self.dialogs.collect()
            try:
                done += self.dialogs.write(self.storage)
                self._purge_dialogs()
            except StorageError as e:
                self._failed(str(e))
                return done
        while True:
            changes = self.store.pending_changes(BATCH)
            if not changes:
                break
            try:
                self._commit(changes)
            except StorageError as e:
                self._failed(str(e))
                return done
            self.store.ack_changes(changes)
            done += len(changes)
            if len(changes) < BATCH:
                break
        if not self.healthy:
            log.warning("location changes reach the database again")
            self.healthy, self._last_error = True, None
        self.written += done
        if done and self.stats is not None:
            self.stats.add(DB_WRITES.base, done)
        return done

    def open(self):
        """The database, opened on first use (and again after a failed open); None when it
        cannot be opened (logged)."""
        from kampx.db import StorageError, open_storage

        if self.storage is None:
            try:
                self.storage = open_storage(self.cfg)
            except StorageError as e:
                self._failed(str(e))
        return self.storage

    def _purge_dialogs(self) -> None:
        """Dialog rows whose lifetime ran out (nobody ends a call that was never hung up)."""
        now = time.monotonic()
        if now >= self._next_purge:
            self._next_purge = now + DIALOG_PURGE_S
            self.storage.dialogs.delete_expired(time.time())

    def _commit(self, changes) -> None:
        # the same ruid may appear twice in a batch (changed while the table was scanned):
        # the later change is the newer one
        latest = {}
        for change in changes:
            latest[change.ruid] = change
        self.storage.locations.upsert_many(
            c.binding for c in latest.values() if c.binding is not None
        )
        # a deletion names the version it deleted: with several nodes, a newer version
        # written by another node meanwhile stays (Locations.delete_seen)
        self.storage.locations.delete_seen(
            (r, c.removed.last_modified) for r, c in latest.items() if c.binding is None
        )

    def _failed(self, error: str) -> None:
        self.healthy = False
        if getattr(self.storage, "read_only", False):
            # opened on a read-only file system: only a new connection can write once it is
            # writable again (db/sqlite.py)
            self.storage.close()
            self.storage = None
        if self.stats is not None:
            self.stats.inc(DB_ERRORS.base)
        if error != self._last_error:
            log.error(
                "location changes not written (retrying every %.2f s): %s", FLUSH_INTERVAL, error
            )
            self._last_error = error

    def close(self) -> None:
        if self.dialogs is not None and self.dialogs.acc_sink is not None:
            self.dialogs.acc_sink.close()
        if self.storage is not None:
            self.storage.close()
