"""The per-process subscriber cache (kampx/auth/subscribers.py): hits, invalidation by
another connection's commit (kampxctl add/passwd/rm), the recheck before a failure, and the
bounds on what names from the network may cost (over-long names, unknown users)."""
from __future__ import annotations

import tracemalloc

import pytest

from kampx.auth.credentials import subscriber_row
from kampx.auth.subscribers import (_KEY_OVERHEAD, MAX_NAME_BYTES, NEGATIVE_BYTES,
                                    SqliteChangeProbe, SubscriberCache, name_fits)
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
    """Subscribers found: at most max_entries. Absent keys: two generations of
    negative_bytes (each key costs its strings plus _KEY_OVERHEAD)."""
    path, admin = db
    admin.subscribers.add_many([subscriber_row(f"u{i}", "kampx.test", "pw") for i in range(25)])
    c = SubscriberCache(lambda: SqliteStorage(path), SqliteChangeProbe(path), max_entries=10,
                        negative_bytes=4096)
    for i in range(25):
        assert c.get(f"u{i}", "kampx.test") is not None
        assert c.get(f"nobody{i}", "kampx.test") is None
    assert len(c._entries) <= 10
    assert len(c._absent) + len(c._absent_old) <= 2 * 4096 // (2 * 49 + _KEY_OVERHEAD)
    c.close()


class CountingStorage(SqliteStorage):
    """Counts the subscriber SELECTs the cache makes."""

    def __init__(self, path):
        super().__init__(path)
        self.queries = []
        real = self.subscribers.get
        self.subscribers.get = lambda u, d=None: self.queries.append((u, d)) or real(u, d)


def test_overlong_names_are_neither_looked_up_nor_remembered(db):
    path, _ = db
    storage = CountingStorage(path)
    c = SubscriberCache(lambda: storage, SqliteChangeProbe(path))
    fits, over = "u" * MAX_NAME_BYTES, "u" * (MAX_NAME_BYTES + 1)
    assert c.get(over, "kampx.test") is None
    assert c.get("alice", over) is None
    assert c.get("é" * 65, "kampx.test") is None          # 65 characters, 130 bytes
    assert storage.queries == []
    assert c.get(fits, "kampx.test") is None              # the limit itself is looked up
    assert storage.queries == [(fits, "kampx.test")]
    assert (c._absent | c._absent_old) == {(fits, "kampx.test")}
    c.close()


def test_a_name_that_is_not_utf8_is_nobody(cache):
    """The parser keeps undecodable bytes as surrogate escapes; SQLite cannot even be asked
    about such a name, and no subscriber has one."""
    assert cache.get("\udca6lice", "kampx.test") is None
    assert cache.get("alice", "kampx\udcff.test") is None
    assert cache.get("\udca6lice", "kampx.test") is None and cache.hits == 1


@pytest.mark.parametrize("name, fits", [
    ("a" * 128, True), ("a" * 129, False), ("é" * 64, True), ("é" * 65, False),
    ("\U0001F600" * 32, True), ("\U0001F600" * 33, False),
    ("\udcff" * 128, True),       # undecodable bytes off the wire: one byte each
])
def test_name_fits_counts_wire_bytes(name, fits):
    assert name_fits(name) is fits


def test_unknown_users_cost_bounded_memory(db):
    """A spray of distinct unknown names (the attack of issue 10, item 5) leaves the cache
    within its byte budget: the absent keys of two generations, no more."""
    path, _ = db
    c = SubscriberCache(lambda: SqliteStorage(path), SqliteChangeProbe(path))
    c.get("warm-up", "kampx.test")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(20_000):
            c.get(f"{i:06d}-" + "x" * 93, "kampx.test")
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 2 * NEGATIVE_BYTES * 1.25, grown
    c.close()


def test_a_repeated_unknown_user_stays_a_hit_across_a_generation(db):
    path, _ = db
    storage = CountingStorage(path)
    c = SubscriberCache(lambda: storage, SqliteChangeProbe(path), negative_bytes=4096)
    c.get("ghost", "kampx.test")
    for i in range(25):               # past one generation (about 17 such keys)
        c.get(f"other{i}", "kampx.test")
    assert ("ghost", "kampx.test") in c._absent_old
    queries = len(storage.queries)
    assert c.get("ghost", "kampx.test") is None and len(storage.queries) == queries
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
