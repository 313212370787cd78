"""Several nodes, one service: each node follows the shared PostgreSQL database.

With `[db] url = "postgresql://..."` every node keeps serving from its own shared memory (an
INVITE's lookup never waits on the network) and writes through to PostgreSQL as before: the
db writer commits the location table's unacknowledged changes every FLUSH_INTERVAL. This
module is the way back. In the same db writer process, between its write rounds:

- It LISTENs on kampx_location, kampx_subscriber, kampx_address and kampx_dispatcher (the
  schema's triggers
  NOTIFY them at every commit) and wakes as soon as another node commits; without a
  notification it still looks every POLL_S, so a lost one costs at most that.
- Location: it reads the changes after the last seq it applied (kampx/db/postgres.py: the seq
  trigger makes commits and seqs the same order, so "seq > last" never misses one) and
  applies them with LocationStore.sync_put/sync_drop, as already persisted. A binding with an
  unwritten local change is left alone: that change is committed after the remote one and
  comes back to every node. Deletions are written conditionally (Locations.delete_seen: only
  the version this node saw), so an expiry here cannot delete a refresh written meanwhile on
  another node; the refresh then reaches us like any other change.
- Full resync: at start and after every reconnect, every binding of the database is applied
  and ours that it no longer has are dropped; then it follows from the snapshot's seq.
- Subscribers: the node's SQLite file holds a replica (NodeSubscribers reads it; so do the
  workers' auth caches) brought level with PostgreSQL on each kampx_subscriber notification
  and at every (re)connect. Addresses and dispatcher sets: the shared-memory tables are
  reloaded from PostgreSQL on each kampx_address (kampx_dispatcher) notification and at every
  (re)connect; a table with a bad row is logged and left as it was until the next change.

Why in the db writer and not a process of its own: applying a remote change only if the
local binding is clean, and writing a local change, must not interleave (a write committed
and acknowledged between our read of a remote row and our applying it would be overwritten
by that older row). One process, one connection, one thread makes that impossible.

Replication delay: a change is committed by its node within CLUSTER_MIN_S + CLUSTER_TICK
(kampx/dbwriter.py: the db writer watches the table's change counter) and applied by the
others a few milliseconds after the commit's NOTIFY; bounded by FLUSH_INTERVAL + POLL_S plus
the statements' time even when a notification is lost. Measured: docs/scale-out.md.
"""

from __future__ import annotations

import logging
import time

from kampx import stats as S

_FOLLOW = (
    ("applied", "Binding changes of other nodes applied to this node's location table"),
    ("dropped", "Bindings removed here because the shared database no longer has them"),
    ("kept_local", "Changes not applied: this node's own newer change is not written yet"),
    ("resyncs", "Full reloads of the location table from the shared database"),
    ("subscriber_syncs", "Copies of the subscriber table taken into this node's replica"),
    ("address_reloads", "Address table reloads after another node changed it"),
    ("dispatcher_reloads", "Dispatcher set reloads after another node changed them"),
)
CLUSTER = {name: S.family("cluster", name, S.KIND_COUNTER, text) for name, text in _FOLLOW}
STATISTICS = tuple(CLUSTER.values())

log = logging.getLogger("kampx.cluster")

POLL_S = 1.0  # a look at the change feed even without a notification
SYNC_BATCH = 5000  # changes read per statement
TOMBSTONE_TTL_S = 86400.0  # deletions are kept this long for nodes that follow the feed
PURGE_EVERY_S = 600.0
DUMP_PAGE = 1000


class ClusterSync:
    """One node's follower of the shared database; `storage` is a callable returning the db
    writer's open PostgresStorage (or None when it cannot be opened)."""

    def __init__(self, store, permissions, storage, stats=None, dispatcher=None) -> None:
        self.store = store
        self.stats = stats
        self.permissions = permissions
        self._storage = storage
        # the shared-memory tables reloaded whole when another node changes them:
        # (table, its channel, its count, the log line)
        self._tables = [
            t
            for t in (
                (permissions, "kampx_address", "address_reloads", "address table: %d entries"),
                (
                    dispatcher,
                    "kampx_dispatcher",
                    "dispatcher_reloads",
                    "dispatcher: %d destinations",
                ),
            )
            if t[0] is not None
        ]
        self.seq: int | None = None  # last change applied; None = full resync due
        self._generation = 0  # connection we LISTEN on
        self._heard: set[str] = set()
        self._next_poll = 0.0
        self._next_purge = 0.0
        self._subscribers_due = True
        self._channels = {channel for _, channel, _, _ in self._tables}
        self._tables_due = set(self._channels)
        # this follower's own totals (the log, the tests); the shared ones are STATISTICS
        self.counts = {
            "applied": 0,
            "dropped": 0,
            "kept_local": 0,
            "resyncs": 0,
            "subscriber_syncs": 0,
            "address_reloads": 0,
            "dispatcher_reloads": 0,
        }

    def _count(self, name: str) -> None:
        self.counts[name] += 1
        if self.stats is not None:
            self.stats.inc(CLUSTER[name].base)

    def _reload(self, table, channel: str, count: str, line: str, storage) -> None:
        try:
            n = table.reload_from(storage)
        except ValueError as e:  # a bad row (PermissionsError, DispatcherError): wait for a fix
            log.error("%s not reloaded from the shared database: %s", channel, e)
        else:
            self._count(count)
            log.info(line + " (reloaded from the shared database)", n)
        self._tables_due.discard(channel)

    def wait(self, timeout: float) -> None:
        """Sleep up to `timeout`, returning early when another node commits."""
        storage = self._storage()
        if storage is None or not storage.connected:
            time.sleep(max(0.0, timeout))
            return
        from kampx.db import StorageError

        try:
            self._heard |= storage.notifications(timeout)
        except StorageError:
            pass  # the next step() reconnects and resyncs

    def step(self) -> None:
        """Bring this node level with the database. StorageError when it cannot be reached
        (the caller logs it; the next step retries, after the connection's back-off)."""
        storage = self._storage()
        if storage is None:
            return
        storage.connect()
        if storage.generation != self._generation:
            self._generation = storage.listen()
            self.seq = None
            self._subscribers_due = True
            self._tables_due = set(self._channels)
        heard, self._heard = self._heard, set()
        now = time.monotonic()
        if self.seq is None:
            self.resync(storage)
        elif "kampx_location" in heard or now >= self._next_poll:
            self.follow(storage)
        if now >= self._next_poll:
            self._next_poll = now + POLL_S
        if self._subscribers_due or "kampx_subscriber" in heard:
            self._subscribers_due = True  # stays due until it succeeds
            n = sync_subscribers(storage)
            self._subscribers_due = False
            self._count("subscriber_syncs")
            if n:
                log.info("subscriber replica: %d changes from the database", n)
        self._tables_due |= heard & self._channels
        for table, channel, count, line in self._tables:
            if channel in self._tables_due:  # stays due until it is read (StorageError)
                self._reload(table, channel, count, line, storage)
        if now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY_S
            storage.locations.purge_tombstones(time.time() - TOMBSTONE_TTL_S)

    def _apply(self, aor: str, ruid: str, row: dict | None, now: float) -> None:
        from kampx.usrloc import ERR_FULL, ERR_TOO_LARGE, OK, SKIP_DIRTY, Binding

        if row is None:
            rc = self.store.sync_drop(aor, ruid)
            if rc == OK:
                self._count("dropped")
        else:
            rc = self.store.sync_put(Binding(**row), now)
            if rc == OK:
                self._count("applied")
            elif rc in (ERR_FULL, ERR_TOO_LARGE):
                log.warning(
                    "binding %s of <%s> from the database not taken: %s",
                    ruid,
                    aor,
                    "the location table is full ([usrloc] capacity)"
                    if rc == ERR_FULL
                    else "it does not fit a slot",
                )
        if rc == SKIP_DIRTY:
            self._count("kept_local")

    def follow(self, storage) -> int:
        """Apply the changes committed since the last one applied."""
        done = 0
        while True:
            changes = storage.locations.changes_since(self.seq, SYNC_BATCH)
            now = time.time()
            for seq, ruid, aor, row in changes:
                self._apply(aor, ruid, row, now)
                self.seq = seq
            done += len(changes)
            if len(changes) < SYNC_BATCH:
                return done

    def resync(self, storage) -> None:
        """Every binding the database has, and none it has not (ours not yet written are
        kept: the store leaves a binding with an unwritten change alone)."""
        t0 = time.monotonic()
        now = time.time()
        seen = set()
        with storage.locations.snapshot() as (seq, rows):
            for row in rows:
                seen.add(row["ruid"])
                self._apply(row["aor"], row["ruid"], row, now)
        cursor, dropped = 0, 0
        while cursor != -1:
            cursor, page = self.store.dump(cursor, DUMP_PAGE, now)
            for aor, bindings in page:
                for b in bindings:
                    if b.ruid not in seen:
                        self._apply(aor, b.ruid, None, now)
                        dropped += 1
        self.seq = seq
        self._count("resyncs")
        log.info(
            "location table resynchronised with the shared database: %d bindings there, "
            "%d gone from it, in %.2f s (following from change %d)",
            len(seen),
            dropped,
            time.monotonic() - t0,
            seq,
        )


def sync_subscribers(storage) -> int:
    """Make the node's SQLite replica of the subscriber table equal PostgreSQL's; returns
    how many rows changed there (the replica's change counter tells the workers' caches)."""
    local = storage.open_local()
    if local is None:
        return 0
    theirs = {(s.username, s.domain): s for s in storage.subscribers.list()}
    ours = {(s.username, s.domain): s for s in local.subscribers.list()}
    puts = [s for key, s in theirs.items() if ours.get(key) != s]
    deletes = [key for key in ours if key not in theirs]
    local.subscribers.mirror(puts, deletes)
    return len(puts) + len(deletes)


# -- calls to a phone registered on another node -------------------------------------------------
# A phone behind NAT is reachable only from the address it registered with (its NAT keeps a
# pinhole open towards that node alone), so a call reaching another node is relayed to the
# registering node, which sends it to the phone as if it had received the call itself. The
# binding already names that node: its socket is the registering node's listen socket.
# Only such bindings take the detour: one without a NAT source (`received`) is reachable from
# any node, and one with a Path is reached through its edge proxy, which holds the pinhole; so
# those are delivered directly, and keep working when their registering node is down.
#
# Chosen over Kamailio's Path (add_path_received + path_check_local): a Path hop arrives as a
# preloaded Route that route scripts strip from initial requests (the built-in one does), and
# its received parameter needs loose_route support. Here the hop needs nothing of the script
# but what a trunk call needs (the nodes' addresses in the trusted group, so the registering
# node relays without challenging) and lookup() on both sides: the relaying node marks the
# Request-URI with the binding's ruid (RUID_PARAM), and the registering node's lookup() of a
# marked URI takes that binding only and delivers it itself: never more than one node hop,
# no loop even while the nodes' tables differ. A single node never marks nor reads the mark.
RUID_PARAM = "kx-ruid"


def _local_sockets(worker) -> frozenset:
    names = worker.modules.get("cluster.sockets")
    if names is None:
        names = worker.modules["cluster.sockets"] = frozenset(ls.name for ls in worker.sockets)
    return names


def pinned_ruid(uri) -> str | None:
    """The ruid another node asked us to deliver (a marked Request-URI), else None."""
    return uri.params.get(RUID_PARAM) or None


def node_branch(worker, request_uri: str, b):
    """The branch to the node that holds `b`'s NAT pinhole, or None when that is this node,
    or the binding needs no particular node (no NAT source, or a Path)."""
    from kampx import dset

    sock = b.socket
    if not b.received or b.path or not sock or sock in _local_sockets(worker):
        return None
    hostport = sock.partition(":")[2]
    head, q, tail = request_uri.partition("?")
    return dset.Branch(f"{head};{RUID_PARAM}={b.ruid}{q}{tail}", f"sip:{hostport}", "")
