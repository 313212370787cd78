"""The db writer: location changes written behind, acknowledged only after the commit,
drained on SIGTERM, and a table loaded back from the database at start."""
from __future__ import annotations

import math
import os
import signal
import time

import pytest

from kampx import config as config_mod
from kampx import state
from kampx.db import StorageError, open_storage
from kampx.dbwriter import DbWriterProcess, LocationWriter
from kampx.shared import SharedState
from kampx.usrloc import OK, LocationStore


def _cfg(tmp_path):
    return config_mod.from_dict({"db": {"url": f"sqlite:///{tmp_path}/kampx.db"}})


def _op(contact, expires_at, callid="c1", cseq=1, received="", path=""):
    return (contact, expires_at, -1, callid, cseq, received, path, "udp:127.0.0.1:5060",
            "UA/1", "", 0, 0)


def _rows(cfg) -> dict:
    with open_storage(cfg) as st:
        return {r["ruid"]: r for r in st.locations.load_all(0)}


@pytest.fixture
def store():
    return LocationStore(1000, 1234)


def test_drain_writes_updates_and_deletions(tmp_path, store):
    cfg = _cfg(tmp_path)
    w = LocationWriter(store, cfg)
    now = time.time()
    st, [b] = store.apply("alice", now, [_op("sip:a@127.0.0.1:5070", now + 60, received="sip:127.0.0.9:5999")])
    assert st == OK
    store.apply("bob", now, [_op("sip:b@127.0.0.1:5071", math.inf, path="<sip:127.0.0.8;lr>")])
    assert w.drain() == 2
    rows = _rows(cfg)
    assert rows[b.ruid]["aor"] == "alice" and rows[b.ruid]["received"] == "sip:127.0.0.9:5999"
    assert {r["aor"] for r in rows.values()} == {"alice", "bob"}
    assert store.pending_changes() == [], "acknowledged after the commit"
    assert w.drain() == 0
    # a refresh keeps the ruid: an update of the same row
    store.apply("alice", now + 1, [_op("sip:a@127.0.0.1:5070", now + 120, cseq=2)])
    w.drain()
    assert _rows(cfg)[b.ruid]["expires"] == pytest.approx(now + 120)
    # a removal and an expiry become deletions
    store.apply("alice", now + 2, [_op("sip:a@127.0.0.1:5070", 0, cseq=3)])
    w.drain()
    assert b.ruid not in _rows(cfg)
    store.apply("carol", now, [_op("sip:c@127.0.0.1:5072", now + 1)])
    w.drain()
    assert store.expire(now + 2) == 1
    w.drain()
    assert {r["aor"] for r in _rows(cfg).values()} == {"bob"}


def test_database_failure_keeps_changes_pending(tmp_path, store):
    from kampx import stats as S
    from kampx.usrloc import DB_ERRORS, DB_WRITES
    from kampx._shm import CounterRows
    cfg = _cfg(tmp_path)
    rows = CounterRows(1, S.ncols())
    w = LocationWriter(store, cfg, stats=S.Stats(rows, 0))
    now = time.time()
    store.apply("alice", now, [_op("sip:a@127.0.0.1:5070", now + 60)])

    class Broken:
        def upsert_many(self, bindings):
            list(bindings)
            raise StorageError("database is busy")

        def delete_many(self, ruids):
            raise AssertionError("not reached")
    real = w.storage = open_storage(cfg)
    real_locations = real.locations
    real.locations = Broken()
    assert w.drain() == 0
    assert not w.healthy
    assert len(store.pending_changes()) == 1, "nothing acknowledged after a failed commit"
    assert rows.get(0, DB_ERRORS.base) == 1 and rows.get(0, DB_WRITES.base) == 0
    real.locations = real_locations
    assert w.drain() == 1 and w.healthy
    assert {r["aor"] for r in _rows(cfg).values()} == {"alice"}
    assert rows.get(0, DB_ERRORS.base) == 1 and rows.get(0, DB_WRITES.base) == 1


def test_unopenable_database_is_retried(tmp_path, store):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    cfg = config_mod.from_dict({"db": {"url": f"sqlite:///{blocker}/kampx.db"}})
    w = LocationWriter(store, cfg)
    store.apply("alice", time.time(), [_op("sip:a@127.0.0.1:5070", time.time() + 60)])
    assert w.drain() == 0 and not w.healthy
    assert len(store.pending_changes()) == 1


def _wait(pid, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"db writer {pid} did not stop within {timeout} s")


def _fork_writer(shared, cfg) -> int:
    proc = DbWriterProcess(shared, cfg)
    pid = os.fork()
    if pid == 0:
        try:
            proc.run()
        finally:
            os._exit(1)
    return pid


def test_process_writes_within_a_second_and_drains_on_sigterm(tmp_path):
    cfg = _cfg(tmp_path)
    shared = SharedState(cfg)
    state.attach(shared, cfg)
    store = shared.location
    pid = _fork_writer(shared, cfg)
    try:
        now = time.time()
        store.apply("alice", now, [_op("sip:a@127.0.0.1:5070", now + 60)])
        t0 = time.monotonic()
        while not _rows(cfg) and time.monotonic() - t0 < 2:
            time.sleep(0.02)
        assert time.monotonic() - t0 < 1.0, "not written behind within 1 s"
        # a change made just before SIGTERM still reaches the database
        store.apply("bob", time.time(), [_op("sip:b@127.0.0.1:5071", now + 60)])
        os.kill(pid, signal.SIGTERM)
        assert _wait(pid) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert {r["aor"] for r in _rows(cfg).values()} == {"alice", "bob"}


def test_killed_writer_loses_nothing(tmp_path):
    """SIGKILL the writer at random points of a stream of changes; a new one finishes the
    job: the database ends equal to the table."""
    cfg = _cfg(tmp_path)
    shared = SharedState(cfg)
    state.attach(shared, cfg)
    store = shared.location
    now = time.time()
    for round_ in range(4):
        pid = _fork_writer(shared, cfg)
        for i in range(150):
            user = f"u{i}"
            store.apply(user, now, [_op(f"sip:{user}@127.0.0.1:{6000 + i}", now + 60 + round_,
                                        callid=f"c{i}", cseq=round_ + 1)])
            if i % 50 == 7:
                store.apply(f"u{i - 1}", now, [_op(f"sip:u{i - 1}@127.0.0.1:{5999 + i}", 0,
                                                   callid=f"c{i - 1}", cseq=100 + round_)])
        time.sleep(0.1 * round_)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    w = LocationWriter(store, cfg)
    w.drain()
    in_db = {(r["aor"], r["contact"], r["expires"]) for r in _rows(cfg).values()}
    in_mem = set()
    for i in range(150):
        for b in store.lookup(f"u{i}", now):
            in_mem.add((b.aor, b.contact, b.expires))
    assert in_db == in_mem


def test_attach_loads_unexpired_bindings_and_deletes_the_rest(tmp_path):
    cfg = _cfg(tmp_path)
    now = time.time()
    first = LocationStore(100, 1)
    first.apply("alice", now, [_op("sip:a@127.0.0.1:5070", now + 60, path="<sip:127.0.0.8;lr>")])
    first.apply("bob", now, [_op("sip:b@127.0.0.1:5071", now + 0.3)])
    first.apply("static", now, [_op("sip:s@127.0.0.1:5072", math.inf)])
    LocationWriter(first, cfg).drain()
    time.sleep(0.4)                             # bob expires "while kampx is down"
    shared = SharedState(cfg)
    state.attach(shared, cfg)
    [a] = shared.location.lookup("alice", time.time())
    [orig] = first.lookup("alice", now)
    assert a == orig, "every field survives the round trip, the ruid included"
    assert shared.location.lookup("bob", time.time()) == []
    assert len(shared.location.lookup("static", time.time() + 1e6)) == 1
    assert {r["aor"] for r in _rows(cfg).values()} == {"alice", "static"}
    # loaded bindings count as written: nothing pending
    assert shared.location.pending_changes() == []


def test_attach_warns_when_the_database_holds_more_than_the_table(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    now = time.time()
    big = LocationStore(100, 1)
    for i in range(5):
        big.apply(f"u{i}", now, [_op(f"sip:u{i}@127.0.0.1:{7000 + i}", now + 60)])
    LocationWriter(big, cfg).drain()
    small = config_mod.from_dict({"db": {"url": cfg.db.url}, "usrloc": {"capacity": 3}})
    shared = SharedState(small)
    with caplog.at_level("WARNING", logger="kampx.state"):
        state.attach(shared, small)
    assert "loaded 3 of the 5 bindings" in caplog.text


def test_a_full_database_keeps_changes_pending_until_it_has_room(tmp_path, store):
    """SQLite's own 'database or disk is full' (SQLITE_FULL, what a full disk gives): no change
    of the failed batch is acknowledged, the writer retries, and everything is written once
    the database may grow again. (tools/faults.py fills a real file system; SQLite often
    writes into space its files already hold, so the full path is forced here with
    max_page_count on the writer's own connection.)"""
    cfg = _cfg(tmp_path)
    w = LocationWriter(store, cfg)
    w.storage = open_storage(cfg)
    conn = w.storage.locations._db.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    now = time.time()
    for i in range(300):             # far more than the free space of the file
        store.apply(f"user{i}", now, [_op(f"sip:u{i}@127.0.0.1:5070", now + 600, callid=f"c{i}",
                                          received="sip:127.0.0.9:5999" + "x" * 200)])
    w.drain()
    assert not w.healthy and "full" in w._last_error, w._last_error
    assert store.pending_changes(), "nothing acknowledged that is not in the database"
    written = len(_rows(cfg))
    assert written < 300
    conn.execute("PRAGMA max_page_count = 1073741823")   # room again
    w.drain()
    assert w.healthy and store.pending_changes() == []
    assert {r["aor"] for r in _rows(cfg).values()} == {f"user{i}" for i in range(300)}


@pytest.fixture
def own_file_system(tmp_path):
    """A tmpfs of its own (root only: skipped elsewhere), remountable read-only."""
    import subprocess
    d = tmp_path / "fs"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(d)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")

    def remount(mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(d)], check=True)
    yield d, remount
    # lazily: a connection the test left open must not keep the mount behind it
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_a_read_only_database_is_served_and_written_once_writable(own_file_system, store):
    """A database on a file system that is read-only at start (a disk remounted read-only
    after errors): opened anyway (the proxy serves what it holds), writes refused and kept
    pending, and written once the file system is writable again."""
    d, remount = own_file_system
    cfg = config_mod.from_dict({"db": {"url": f"sqlite:///{d}/kampx.db"}})
    now = time.time()
    with open_storage(cfg) as st:
        from kampx.auth.credentials import subscriber_row
        st.subscribers.add(subscriber_row("alice", "kampx.test", "pw"))
    remount("ro")
    with open_storage(cfg) as st:
        assert st.read_only
        assert st.subscribers.get("alice", "kampx.test") is not None
        assert list(st.locations.load_all(now)) == []
    w = LocationWriter(store, cfg)
    store.apply("alice", now, [_op("sip:a@127.0.0.1:5070", now + 600)])
    w.drain()
    assert not w.healthy and store.pending_changes(), "refused, not acknowledged"
    assert w.storage is None, "the read-only connection is let go: it could never write"
    remount("rw")
    w.drain()
    assert w.healthy and store.pending_changes() == []
    assert {r["aor"] for r in _rows(cfg).values()} == {"alice"}
