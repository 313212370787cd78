"""The per-process subscriber cache (kampx/auth/subscribers.py): hits, invalidation by
another connection's commit (kampxctl add/passwd/rm), the recheck before a failure."""
from __future__ import annotations

import pytest

from kampx.auth.credentials import subscriber_row
from kampx.auth.subscribers import SqliteChangeProbe, SubscriberCache
from kampx.db.sqlite import SqliteStorage


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "kampx.db")
    admin = SqliteStorage(path)          # plays kampxctl: its own connection
    admin.subscribers.add(subscriber_row("alice", "kampx.test", "pw1"))
    yield path, admin
    admin.close()


@pytest.fixture
def cache(db):
    path, _ = db
    opened = []

    def open_storage():
        s = SqliteStorage(path)
        opened.append(s)
        return s
    clock = Clock()
    c = SubscriberCache(open_storage, SqliteChangeProbe(path), recheck_s=0.1, clock=clock)
    c.clock = clock
    yield c
    c.close()


def test_hits_after_the_first_lookup(cache):
    assert cache.get("alice", "kampx.test").ha1
    assert cache.get("alice", "kampx.test") is not None
    assert cache.get("nobody", "kampx.test") is None
    assert cache.get("nobody", "kampx.test") is None
    assert (cache.misses, cache.hits) == (2, 2)


def test_change_seen_after_recheck_time(cache, db):
    _, admin = db
    old = cache.get("alice", "kampx.test")
    admin.subscribers.set_password(subscriber_row("alice", "kampx.test", "pw2"))
    cache.clock.t += 0.05
    assert cache.get("alice", "kampx.test") == old         # within recheck_s: cached
    cache.clock.t += 0.1
    new = cache.get("alice", "kampx.test")
    assert new.ha1 != old.ha1 and cache.flushes == 1


def test_recheck_sees_a_change_at_once(cache, db):
    _, admin = db
    assert cache.get("bob", "kampx.test") is None
    assert cache.recheck("bob", "kampx.test") == (False, None)   # nothing committed since
    admin.subscribers.add(subscriber_row("bob", "kampx.test", "pw"))
    changed, sub = cache.recheck("bob", "kampx.test")
    assert changed and sub is not None and sub.username == "bob"


def test_removed_user_disappears(cache, db):
    _, admin = db
    assert cache.get("alice", "kampx.test") is not None
    admin.subscribers.remove("alice", "kampx.test")
    changed, sub = cache.recheck("alice", "kampx.test")
    assert changed and sub is None


def test_cache_is_bounded(db):
    path, _ = db
    c = SubscriberCache(lambda: SqliteStorage(path), SqliteChangeProbe(path), max_entries=10)
    for i in range(25):
        c.get(f"u{i}", "kampx.test")
    assert len(c._entries) <= 10
    c.close()


def test_location_writes_do_not_empty_the_cache(tmp_path):
    """The db writer commits location batches several times a second: only a change to the
    subscriber table may empty the workers' caches (migration 2's counter)."""
    from kampx.auth.credentials import subscriber_row
    from kampx.auth.subscribers import SqliteChangeProbe, SubscriberCache
    from kampx.db.sqlite import SqliteStorage
    path = str(tmp_path / "k.db")
    writer = SqliteStorage(path)
    writer.subscribers.add(subscriber_row("alice", "kampx.test", "pw"))
    clock = [0.0]
    cache = SubscriberCache(lambda: SqliteStorage(path), SqliteChangeProbe(path), recheck_s=0.1,
                            clock=lambda: clock[0])
    assert cache.get("alice", "kampx.test") is not None
    for i in range(5):
        writer.addresses.add(200, f"127.0.0.{i + 1}", 32, 0, "carrier")   # another table
        clock[0] += 1.0
        assert cache.get("alice", "kampx.test") is not None
    assert cache.flushes == 0 and cache.misses == 1
    writer.subscribers.add(subscriber_row("bob", "kampx.test", "pw"))
    clock[0] += 1.0
    cache.get("alice", "kampx.test")
    assert cache.flushes == 1
    writer.close()
    cache.close()
