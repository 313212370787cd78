"""kampx/cluster.py and the store's sync_put/sync_drop: how a node applies the others'
changes, with two in-process "nodes" (a location table, a db writer, a follower each) on a
real PostgreSQL."""
from __future__ import annotations

import threading
import time

import pytest

from kampx import config as kconfig
from kampx.cluster import ClusterSync
from kampx.db import open_storage
from kampx.dbwriter import LocationWriter
from kampx.usrloc import OK, SKIP_ABSENT, SKIP_DIRTY, SKIP_SAME, Binding, LocationStore


def op(contact, expires_at, callid="c1", cseq=1, received="", socket="udp:127.0.0.1:5060"):
    return (contact, expires_at, -1, callid, cseq, received, "", socket, "ua", "", 0, 0)


# -- the store alone ---------------------------------------------------------------------------

def test_sync_put_adds_replaces_and_stays_clean():
    s = LocationStore(64, 7)
    now = time.time()
    b = Binding("r1", "alice", "sip:a@127.0.0.1", expires=now + 60, last_modified=now)
    assert s.sync_put(b, now) == OK
    assert s.sync_put(b, now) == SKIP_SAME
    newer = Binding("r1", "alice", "sip:a@127.0.0.1", expires=now + 120, last_modified=now + 1)
    assert s.sync_put(newer, now) == OK
    assert s.lookup("alice", now) == [newer]
    assert s.pending_changes() == []            # already in the database: nothing to write
    assert s.sync_drop("alice", "r1") == OK
    assert s.sync_drop("alice", "r1") == SKIP_ABSENT
    assert s.pending_changes() == [] and s.check() == []


def test_sync_leaves_a_binding_with_an_unwritten_change_alone():
    s = LocationStore(64, 7)
    now = time.time()
    status, (mine,) = s.apply("alice", now, [op("sip:a@127.0.0.1", now + 60)])
    remote = Binding(mine.ruid, "alice", "sip:a@127.0.0.1", expires=now + 999, last_modified=now + 5)
    assert s.sync_put(remote, now) == SKIP_DIRTY
    assert s.sync_drop("alice", mine.ruid) == SKIP_DIRTY
    assert s.lookup("alice", now) == [mine]
    s.ack_changes(s.pending_changes())
    assert s.sync_put(remote, now) == OK        # written now: the remote one may replace it


def test_a_deletion_change_carries_the_deleted_version():
    s = LocationStore(64, 7)
    now = time.time()
    _, (b,) = s.apply("alice", now, [op("sip:a@127.0.0.1", now + 60)])
    s.ack_changes(s.pending_changes())
    s.delete("alice")
    (change,) = s.pending_changes()
    assert change.binding is None and change.removed == b


# -- two nodes on one database -------------------------------------------------------------------

class FakeNode:
    def __init__(self, pg, tmp_path, name):
        local = "sqlite:///" + str(tmp_path / f"{name}.db").lstrip("/")
        self.cfg = kconfig.from_dict({"db": {"url": pg.url, "local": local}})
        self.store = LocationStore(256, hash(name))
        self.storage = open_storage(self.cfg)
        self.storage.open_local()
        self.writer = LocationWriter(self.store, self.cfg, storage=self.storage)
        from kampx import stats as S
        from kampx._shm import CounterRows
        self.rows = CounterRows(1, S.ncols())
        self.sync = ClusterSync(self.store, None, self.writer.open, S.Stats(self.rows, 0))

    def round(self):
        """Write our changes, then take the others' (a step, plus a look at the feed that
        step() would take on a notification or its poll)."""
        self.writer.drain()
        self.sync.step()
        self.follow()

    def follow(self):
        self.sync.follow(self.storage)

    def close(self):
        self.storage.close()


@pytest.fixture
def nodes(pg, tmp_path):
    made = [FakeNode(pg, tmp_path, n) for n in "ab"]
    yield made
    for n in made:
        n.close()


def test_an_expiry_here_does_not_delete_a_refresh_written_there(nodes):
    a, b = nodes
    now = time.time()
    _, (r,) = a.store.apply("alice", now, [op("sip:a@127.0.0.1", now + 10)])
    a.round()
    b.round()
    assert b.store.lookup("alice", now)[0].ruid == r.ruid
    # A refreshes; before B hears of it, B's timer expires the old version
    a.store.apply("alice", now + 1, [op("sip:a@127.0.0.1", now + 3600, cseq=2)])
    a.writer.drain()
    assert b.store.expire(now + 11) == 1
    b.writer.drain()                # the deletion names the version B saw: it deletes nothing
    rows = list(b.storage.locations.load_all(now))
    assert [(x["ruid"], x["cseq"]) for x in rows] == [(r.ruid, 2)]
    b.follow()                      # and B takes the refresh
    assert [x.cseq for x in b.store.lookup("alice", now + 11)] == [2]


def test_a_deletion_on_one_node_reaches_the_other(nodes):
    a, b = nodes
    now = time.time()
    a.store.apply("bob", now, [op("sip:b@127.0.0.1", now + 600)])
    a.round()
    b.round()
    assert b.store.lookup("bob", now)
    b.store.delete("bob")
    b.round()
    a.follow()
    assert not a.store.lookup("bob", now)
    assert a.storage.locations.count() == 0
    assert a.store.pending_changes() == []      # applied as persisted: nothing written back


def test_resync_drops_what_the_database_lost_and_keeps_unwritten_changes(nodes):
    a, _ = nodes
    now = time.time()
    a.store.load([Binding("gone", "carol", "sip:c@127.0.0.1", expires=now + 60,
                          last_modified=now)], now)          # clean, not in the database
    a.store.apply("dave", now, [op("sip:d@127.0.0.1", now + 60)])   # not written yet
    a.sync.step()                                             # first step: a full resync
    assert a.sync.counts["resyncs"] == 1
    from kampx.cluster import CLUSTER
    assert a.rows.get(0, CLUSTER["resyncs"].base) == 1      # as /metrics and kampxctl see it
    assert a.rows.get(0, CLUSTER["dropped"].base) == 1      # carol
    assert not a.store.lookup("carol", now)
    assert a.store.lookup("dave", now)


def test_a_commit_on_one_node_wakes_the_other_at_once(nodes):
    a, b = nodes
    a.round()
    b.round()
    now = time.time()

    def later():
        time.sleep(0.2)
        a.store.apply("erin", now, [op("sip:e@127.0.0.1", now + 60)])
        a.writer.drain()
    threading.Thread(target=later, daemon=True).start()
    t0 = time.monotonic()
    b.sync.wait(5.0)                # LISTEN: woken by the NOTIFY of a's commit
    assert time.monotonic() - t0 < 1.5
    b.sync.step()
    assert b.store.lookup("erin", now)


def test_subscriber_replica_follows_the_database(nodes, pg):
    from kampx.auth.credentials import subscriber_row
    a, b = nodes
    a.round()
    b.round()
    a.storage.subscribers.add(subscriber_row("frank", "kampx.test", "pw"))
    assert b.storage.subscribers.get("frank", "kampx.test") is None   # b's replica: not yet
    b.sync.wait(2.0)
    b.round()
    assert b.storage.subscribers.get("frank", "kampx.test") is not None
    a.storage.subscribers.remove("frank", "kampx.test")
    b.sync.wait(2.0)
    b.round()
    assert b.storage.subscribers.get("frank", "kampx.test") is None
