"""kampx._shm: the shared-memory structures, in one process and across forked processes."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import threading
import time
import traceback

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kampx import _shm
from kampx._shm import CounterRows, KeyIndex, NonceCounts, RateTable, SharedMutex

IP1 = socket.inet_pton(socket.AF_INET, "192.0.2.1")
IP2 = socket.inet_pton(socket.AF_INET, "192.0.2.2")
IP6 = socket.inet_pton(socket.AF_INET6, "2001:db8::1")


# --------------------------------------------------------------------------------------------
# fork helpers: every child runs one callable; all start together; the parent never hangs.

def _wait_all(pids, timeout):
    """Wait for pids; {pid: exit code}. Kills (by pid) and fails on a child that overstays."""
    codes = {}
    deadline = time.monotonic() + timeout
    while len(codes) < len(pids):
        for pid in pids:
            if pid in codes:
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[pid] = os.waitstatus_to_exitcode(status)
        if len(codes) < len(pids):
            if time.monotonic() > deadline:
                for pid in pids:
                    if pid not in codes:
                        os.kill(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
                pytest.fail(f"{len(pids) - len(codes)} child process(es) still running after "
                            f"{timeout}s")
            time.sleep(0.002)
    return codes


def _spawn(funcs):
    """Fork one child per callable; they block until start() fires. Returns (pids, start)."""
    r, w = os.pipe()
    pids = []
    for f in funcs:
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                os.close(w)
                os.read(r, 1)  # EOF once the parent closes its write end: the start gun
                f()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(r)

    def start():
        os.close(w)
    return pids, start


def spin_barrier(parties):
    """A barrier in shared memory for forked children: they leave it within microseconds of
    each other, which a pipe wake-up cannot promise (races need real overlap)."""
    arrived = CounterRows(1, 1)

    def wait():
        arrived.inc(0, 0)
        while arrived.get(0, 0) < parties:
            pass
    return wait


def run_in_children(funcs, timeout=30.0):
    pids, start = _spawn(funcs)
    start()
    codes = _wait_all(pids, timeout)
    assert all(c == 0 for c in codes.values()), f"child exit codes {codes}"


def _hold_in_child(table, stripe, seconds=30.0):
    """Fork a child that locks `stripe` and sleeps; returns its pid once it holds the lock."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            table._test_hold_lock(stripe, seconds, w)
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"L", "holder did not take the lock"
    os.close(r)
    return pid


# --------------------------------------------------------------------------------------------
# CounterRows

def test_counter_rows_basic():
    c = CounterRows(3, 4)
    c.inc(0, 1)
    c.inc(0, 1)
    c.add(1, 1, 10)
    c.add(2, 3, -5)
    c.add(2, 3, 2)
    assert c.get(0, 1) == 2
    assert c.row(0) == [0, 2, 0, 0]
    assert c.row(2) == [0, 0, 0, -3]
    assert c.column_sums() == [0, 12, 0, -3]
    c.zero_row(1)
    assert c.column_sums() == [0, 2, 0, -3]
    assert c.shape == (3, 4)


def test_counter_values_are_int64():
    c = CounterRows(1, 1)
    c.add(0, 0, 2**62)
    c.add(0, 0, 2**62 - 1)
    assert c.get(0, 0) == 2**63 - 1
    c.add(0, 0, -(2**63 - 1))
    c.add(0, 0, -(2**63 - 1))
    assert c.get(0, 0) == -(2**63 - 1)
    with pytest.raises(OverflowError):
        c.add(0, 0, 2**63)


@pytest.mark.parametrize("ncols,row_bytes", [(1, 64), (8, 64), (9, 128), (17, 192)])
def test_counter_rows_are_cache_line_sized(ncols, row_bytes):
    assert CounterRows(5, ncols).nbytes == 5 * row_bytes


def test_counter_rows_reject_out_of_range():
    c = CounterRows(2, 3)
    for row, col in [(-1, 0), (2, 0), (0, -1), (0, 3), (10**6, 10**6)]:
        with pytest.raises(IndexError):
            c.inc(row, col)
        with pytest.raises(IndexError):
            c.add(row, col, 1)
        with pytest.raises(IndexError):
            c.get(row, col)
    for bad in (-1, 2):
        for method in (c.row, c.zero_row):
            with pytest.raises(IndexError):
                method(bad)
        with pytest.raises(IndexError):
            c.fold_row(bad, 0)
    assert c.column_sums() == [0, 0, 0]
    with pytest.raises(ValueError):
        CounterRows(0, 1)
    with pytest.raises(ValueError):
        CounterRows(1, 0)


def test_counter_fold_row_keeps_sums():
    c = CounterRows(3, 2)
    c.add(1, 0, 7)
    c.add(1, 1, -2)
    c.add(0, 0, 1)
    c.fold_row(1, 0)
    assert c.row(1) == [0, 0]
    assert c.row(0) == [8, -2]
    assert c.column_sums() == [8, -2]
    c.fold_row(0, 0)
    assert c.row(0) == [8, -2]


def test_counters_from_many_processes_sum_exactly():
    nproc, n = 4, 100_000
    c = CounterRows(nproc, 3)

    def work(row):
        def run():
            for _ in range(n):
                c.inc(row, 0)
            c.add(row, 1, row + 1)
            c.add(row, 2, -row)
        return run

    run_in_children([work(i) for i in range(nproc)])
    assert c.column_sums() == [nproc * n, sum(range(1, nproc + 1)), -sum(range(nproc))]
    for i in range(nproc):
        assert c.row(i) == [n, i + 1, -i]


def test_counter_row_shared_by_two_processes_stays_exact():
    # Adds are atomic: even two processes on one row lose nothing.
    n = 300_000
    c = CounterRows(1, 1)
    barrier = spin_barrier(2)

    def run():
        barrier()
        for _ in range(n):
            c.inc(0, 0)

    run_in_children([run, run])
    assert c.get(0, 0) == 2 * n


# --------------------------------------------------------------------------------------------
# KeyIndex

def test_txn_claim_lookup_expiry():
    t = KeyIndex(1000, 42)
    assert t.claim(b"k1", 3, 100.0, 32.0) == 3
    assert t.claim(b"k1", 4, 101.0, 32.0) == 3          # live: the first owner wins
    assert t.lookup(b"k1", 131.9) == 3
    assert t.lookup(b"k1", 132.0) == -1                 # expires_at is not live any more
    assert t.lookup(b"k2", 100.0) == -1
    assert t.claim(b"k1", 4, 132.0, 10.0) == 4          # expired: a new claim takes it
    assert t.lookup(b"k1", 133.0) == 4
    assert t.count(133.0) == 1
    assert t.count(142.0) == 0


def test_txn_refresh_release_purge():
    t = KeyIndex(1000, 42)
    t.claim(b"a", 1, 0.0, 10.0)
    t.claim(b"b", 1, 0.0, 10.0)
    t.claim(b"c", 2, 0.0, 10.0)
    assert t.refresh(b"a", 1, 50.0) is True
    assert t.refresh(b"a", 2, 99.0) is False            # not the owner
    assert t.refresh(b"zz", 1, 99.0) is False
    assert t.lookup(b"a", 40.0) == 1
    assert t.lookup(b"b", 40.0) == -1
    assert t.release(b"c", 1) is False                  # not the owner
    assert t.lookup(b"c", 1.0) == 2
    assert t.release(b"c", 2) is True
    assert t.release(b"c", 2) is False
    assert t.lookup(b"c", 1.0) == -1
    assert t.claim(b"c", 5, 1.0, 10.0) == 5
    assert t.purge_owner(1) == 2
    assert t.lookup(b"a", 1.0) == -1
    assert t.lookup(b"c", 1.0) == 5
    assert t.count(1.0) == 1


def test_counter_add_get_returns_the_new_value():
    c = CounterRows(1, 2)
    assert c.add_get(0, 1, 5) == 5
    assert c.add_get(0, 1, -2) == 3
    assert c.get(0, 1) == 3 and c.get(0, 0) == 0
    with pytest.raises(IndexError):
        c.add_get(1, 0, 1)


def test_keyindex_put_overwrites_and_discard_removes_whatever_the_value():
    t = KeyIndex(1000, 42)
    assert t.put(b"d", 1, 0.0, 10.0) is True            # inserted
    assert t.lookup(b"d", 5.0) == 1
    assert t.put(b"d", 3, 5.0, 100.0) is True           # overwritten in place: value and expiry
    assert t.lookup(b"d", 50.0) == 3
    assert t.count(50.0) == 1                            # one slot, not two
    assert t.claim(b"d", 9, 60.0, 1.0) == 3             # a live put entry is seen by claim
    assert t.put(b"d", 4, 200.0, 300.0) is True         # expired, not reused: revived
    assert t.lookup(b"d", 250.0) == 4
    assert t.discard(b"d") is True
    assert t.discard(b"d") is False
    assert t.lookup(b"d", 250.0) == -1
    with pytest.raises(ValueError):
        t.put(b"d", 256, 0.0, 1.0)


def test_keyindex_put_reports_full_buckets():
    t = KeyIndex(1, 9)                                   # smallest table: 2 buckets of 8
    placed = sum(t.put(b"k%d" % i, 1, 0.0, 100.0) for i in range(40))
    assert placed == 16
    assert t.put(b"k0", 2, 0.0, 100.0) is True          # an existing key always fits
    assert t.put(b"late", 1, 100.0, 200.0) is True      # the others expired: free again


def test_txn_refresh_revives_own_expired_entry_only_until_reclaimed():
    t = KeyIndex(100, 1)
    t.claim(b"k", 7, 0.0, 1.0)
    assert t.refresh(b"k", 7, 10.0)                     # expired at 1.0 but not reused yet
    assert t.lookup(b"k", 5.0) == 7
    assert t.claim(b"k", 8, 10.0, 5.0) == 8             # expired at 10.0: reclaimed
    assert t.refresh(b"k", 7, 100.0) is False
    assert t.lookup(b"k", 11.0) == 8


def test_txn_argument_checks():
    t = KeyIndex(10, 1)
    for bad in (-1, 256):
        with pytest.raises(ValueError):
            t.claim(b"k", bad, 0.0, 1.0)
        with pytest.raises(ValueError):
            t.purge_owner(bad)
    for bad_ttl in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            t.claim(b"k", 1, 0.0, bad_ttl)
    with pytest.raises(TypeError):
        t.claim("k", 1, 0.0, 1.0)
    with pytest.raises(TypeError):
        t.lookup(None, 0.0)
    for bad in (0, -5):
        with pytest.raises(ValueError):
            KeyIndex(bad, 1)
    assert t.claim(b"", 0, 0.0, 1.0) == 0                # the empty key is a key like any other
    assert t.claim(b"k", 255, 0.0, 1.0) == 255


def test_txn_full_returns_minus_two_and_expired_slots_are_reused():
    t = KeyIndex(1, 9)                                   # smallest table: 2 buckets of 8
    keys = [b"key-%d" % i for i in range(t.slots_total + 1)]
    results = [t.claim(k, 1, 0.0, 10.0) for k in keys]
    assert results[:t.slots_total] == [1] * t.slots_total
    assert results[-1] == -2
    assert t.claim(keys[0], 2, 5.0, 10.0) == 1          # live keys still answer when full
    assert t.lookup(keys[-1], 5.0) == -1
    assert t.claim(keys[-1], 2, 10.0, 10.0) == 2         # everything expired at 10.0
    assert t.count(10.0) == 1
    assert t.release(keys[-1], 2)
    assert t.claim(b"another", 3, 10.0, 1.0) == 3        # released slot reused


@pytest.mark.parametrize("capacity", [1, 8, 1000, 5000, 100_000])
def test_txn_capacity_entries_fit(capacity):
    t = KeyIndex(capacity, random.getrandbits(64))
    claimed = [t.claim(b"z9hG4bK%x|10.0.0.1:5060|INVITE" % i, i % 256, 0.0, 30.0)
               for i in range(capacity)]
    assert claimed == [i % 256 for i in range(capacity)]
    assert t.count(1.0) == capacity


def test_txn_seed_changes_placement():
    a, b = KeyIndex(100_000, 1), KeyIndex(100_000, 2)
    assert a.stripes == b.stripes > 1
    keys = [b"k%d" % i for i in range(200)]
    assert [a._stripe_of(k) for k in keys] != [b._stripe_of(k) for k in keys]
    assert len({a._stripe_of(k) for k in keys}) > a.stripes // 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["claim", "lookup", "refresh", "release", "purge"]),
                          st.integers(0, 11), st.integers(0, 3), st.integers(0, 5)),
                max_size=80))
def test_txn_matches_a_dict_model(ops):
    # An expired entry is a free slot: a claim of another key may take it or not. So for an
    # expired entry the model accepts either answer from refresh/release/purge, and then
    # follows the one the index gave.
    t = KeyIndex(1000, 77)
    model = {}                      # key -> (owner, expires_at)
    now = 0.0
    for op, k, owner, dt in ops:
        key = b"key%d" % k
        now += dt * 0.5
        entry = model.get(key)
        live = entry is not None and entry[1] > now
        if op == "claim":
            expect = entry[0] if live else owner
            if not live:
                model[key] = (owner, now + 2.0)
            assert t.claim(key, owner, now, 2.0) == expect
        elif op == "lookup":
            assert t.lookup(key, now) == (entry[0] if live else -1)
        elif op == "refresh":
            got = t.refresh(key, owner, now + 3.0)
            mine = entry is not None and entry[0] == owner
            assert got is mine or (mine and not live and got is False)
            if got:
                model[key] = (owner, now + 3.0)
            elif mine:
                del model[key]          # expired and its slot was reused
        elif op == "release":
            got = t.release(key, owner)
            mine = entry is not None and entry[0] == owner
            assert got is mine or (mine and not live and got is False)
            if mine:
                del model[key]
        else:
            mine = [key for key, (o, _) in model.items() if o == owner]
            live_mine = [key for key in mine if model[key][1] > now]
            assert len(live_mine) <= t.purge_owner(owner) <= len(mine)
            for key in mine:
                del model[key]
        assert t.count(now) == sum(1 for o, e in model.values() if e > now)


def test_txn_claim_race_has_exactly_one_winner_per_key(tmp_path):
    nproc, nkeys = 4, 20_000
    t = KeyIndex(nkeys, 5)
    keys = [b"z9hG4bK-race-%d|127.0.0.1:5060|INVITE" % i for i in range(nkeys)]
    barrier = spin_barrier(nproc)

    def claimer(owner):
        def run():
            # Everyone walks the keys in the same order so that claims of one key overlap.
            now = time.monotonic()
            barrier()
            got = [t.claim(k, owner, now, 60.0) for k in keys]
            (tmp_path / f"{owner}.json").write_text(json.dumps(dict(enumerate(got))))
        return run

    run_in_children([claimer(o) for o in range(1, nproc + 1)])
    results = [json.loads((tmp_path / f"{o}.json").read_text()) for o in range(1, nproc + 1)]
    now = time.monotonic()
    wins = dict.fromkeys(range(1, nproc + 1), 0)
    for i in range(nkeys):
        seen = {r[str(i)] for r in results}
        assert len(seen) == 1, f"key {i}: processes disagree on the owner: {seen}"
        winner = seen.pop()
        assert winner in wins
        assert t.lookup(keys[i], now) == winner
        wins[winner] += 1
    assert sum(wins.values()) == nkeys
    assert t.count(now) == nkeys


# --------------------------------------------------------------------------------------------
# A process SIGKILLed while holding a stripe lock blocks nobody.

def _keys_in_stripe(table, stripe, n, make):
    out, i = [], 0
    while len(out) < n:
        k = make(i)
        if table._stripe_of(k) == stripe:
            out.append(k)
        i += 1
    return out


def _txn_user(table, keys):
    def run():
        now = time.monotonic()
        for k in keys:
            assert table.claim(k, 9, now, 30.0) in (9, 10)
            assert table.lookup(k, now) in (9, 10)
    return run


def _rate_user(table, keys):
    def run():
        now = time.monotonic()
        for k in keys:
            table.hit(k, now, 10.0, 100, 60.0)
            assert not table.blocked(k, now)
    return run


STRUCTS = {
    "txn": (lambda: KeyIndex(20_000, 3), lambda i: b"branch-%d" % i, _txn_user),
    "rate": (lambda: RateTable(20_000, 3), lambda i: socket.inet_pton(
        socket.AF_INET, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"), _rate_user),
}


@pytest.mark.parametrize("kind", sorted(STRUCTS))
def test_killed_lock_holder_does_not_block_later_lockers(kind):
    build, make_key, user = STRUCTS[kind]
    table = build()
    stripe = table.stripes - 1
    assert table.stripes > 1
    keys = _keys_in_stripe(table, stripe, 50, make_key)
    holder = _hold_in_child(table, stripe)
    os.kill(holder, signal.SIGKILL)
    os.waitpid(holder, 0)
    t0 = time.monotonic()
    run_in_children([user(table, keys[:25]), user(table, keys[25:])], timeout=5.0)
    user(table, keys)()                                  # and the parent too
    assert time.monotonic() - t0 < 1.0
    assert table.recoveries == 1


@pytest.mark.parametrize("kind", sorted(STRUCTS))
def test_killed_lock_holder_releases_blocked_waiters(kind):
    build, make_key, user = STRUCTS[kind]
    table = build()
    stripe = 0
    keys = _keys_in_stripe(table, stripe, 40, make_key)
    holder = _hold_in_child(table, stripe)
    pids, start = _spawn([user(table, keys[:20]), user(table, keys[20:])])
    start()
    time.sleep(0.3)
    still_running = [os.waitpid(p, os.WNOHANG)[0] == 0 for p in pids]
    assert all(still_running), "waiters finished while the lock was held: the test is broken"
    os.kill(holder, signal.SIGKILL)
    os.waitpid(holder, 0)
    t0 = time.monotonic()
    codes = _wait_all(pids, timeout=5.0)
    assert time.monotonic() - t0 < 1.0
    assert all(c == 0 for c in codes.values()), codes
    assert table.recoveries == 1
    # The lock works normally afterwards, and again survives a second death.
    user(table, keys)()
    holder = _hold_in_child(table, stripe)
    os.kill(holder, signal.SIGKILL)
    os.waitpid(holder, 0)
    user(table, keys)()
    assert table.recoveries == 2


def test_hold_lock_rejects_bad_stripe():
    t = KeyIndex(10, 1)
    with pytest.raises(IndexError):
        t._test_hold_lock(t.stripes, 0.0)


# --------------------------------------------------------------------------------------------
# CounterRow (a process's Stats)

def test_counter_row_adds_to_its_row_only():
    rows = CounterRows(3, 20)
    r = _shm.CounterRow(rows, 1)
    r.inc(0)
    r.add(0, 41)
    r.add(19, -2)
    assert rows.row(1)[0] == 42 and rows.row(1)[19] == -2
    assert rows.row(0) == [0] * 20 and rows.row(2) == [0] * 20
    assert r.row == 1 and r.rows is rows
    for bad in (-1, 20):
        with pytest.raises(IndexError):
            r.inc(bad)
        with pytest.raises(IndexError):
            r.add(bad, 1)
    with pytest.raises(IndexError):
        _shm.CounterRow(rows, 3)


def test_counter_row_histogram_matches_bisect():
    import bisect

    bounds = (25, 50, 100, 250)
    rows = CounterRows(1, 10)
    r = _shm.CounterRow(rows, 0)
    with pytest.raises(ValueError):
        r.observe_us(1)  # no histogram yet
    with pytest.raises(ValueError):
        r.set_histogram(5, bounds)  # 5 + 4 + 3 > 10 columns
    r.set_histogram(2, bounds)
    values = [0, 1, 25, 26, 50, 99, 100, 101, 250, 251, 10**9]
    for v in values:
        r.observe_us(v)
    want = [0] * (len(bounds) + 1)
    for v in values:
        want[bisect.bisect_left(bounds, v)] += 1
    got = rows.row(0)
    assert got[2:7] == want
    assert got[7] == sum(values) and got[8] == len(values)
    assert got[:2] == [0, 0] and got[9] == 0


# --------------------------------------------------------------------------------------------
# SharedMutex (the dialog table's lock)

def test_shared_mutex_excludes_processes():
    """Four processes increment one unlocked word 2000 times each under the mutex (a read,
    a pause, a write: without exclusion updates are lost)."""
    mutex, cell = SharedMutex(), CounterRows(1, 1)

    def bump():
        for _ in range(2000):
            with mutex:
                v = cell.get(0, 0)
                cell.add(0, 0, v + 1 - cell.get(0, 0))
    run_in_children([bump] * 4)
    assert cell.get(0, 0) == 8000
    assert mutex.recoveries == 0


def test_shared_mutex_waits_without_the_gil():
    """A thread waiting for the mutex lets the holding thread of the same process run on
    (a wait holding the GIL would deadlock them)."""
    mutex, order = SharedMutex(), []
    mutex.__enter__()

    def waiter():
        with mutex:
            order.append("waiter")
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    order.append("holder")
    mutex.__exit__()
    t.join(5.0)
    assert not t.is_alive() and order == ["holder", "waiter"]


def test_shared_mutex_killed_holder():
    mutex = SharedMutex()
    holder = _hold_in_child(mutex, 0)
    os.kill(holder, signal.SIGKILL)
    os.waitpid(holder, 0)
    t0 = time.monotonic()
    with mutex:
        pass
    assert time.monotonic() - t0 < 1.0
    assert mutex.recoveries == 1
    with mutex:
        pass
    assert mutex.recoveries == 1


# --------------------------------------------------------------------------------------------
# RateTable

def test_rate_limit_bans_on_the_event_that_exceeds_it():
    r = RateTable(1000, 11)
    assert [r.hit(IP1, 100.0 + i * 0.1, 2.0, 3, 60.0) for i in range(4)] == [0, 0, 0, 1]
    assert r.blocked(IP1, 100.4)
    assert r.hit(IP1, 101.0, 2.0, 3, 60.0) == 1          # banned: blocked, not counted
    assert r.dump(101.0) == [(IP1, 4, 160.3)]
    assert r.banned_count(101.0) == 1
    assert not r.blocked(IP2, 101.0)
    assert r.hit(IP2, 101.0, 2.0, 3, 60.0) == 0          # other sources unaffected
    assert r.banned_count(101.0) == 1


def test_rate_window_restarts_after_it_ends():
    r = RateTable(1000, 11)
    for i in range(3):
        assert r.hit(IP1, 10.0 + i, 5.0, 3, 60.0) == 0
    assert r.hit(IP1, 15.0, 5.0, 3, 60.0) == 0           # window [10, 15) is over
    assert r.dump(15.0) == [(IP1, 1, 0.0)]
    for i in range(3):
        r.hit(IP1, 16.0, 5.0, 3, 60.0)
    assert r.hit(IP1, 16.5, 5.0, 3, 60.0) == 1           # 5th in window starting at 15


def test_rate_ban_lapses_and_counting_starts_fresh():
    r = RateTable(1000, 11)
    assert [r.hit(IP6, 0.0, 100.0, 1, 5.0) for _ in range(2)] == [0, 1]
    assert r.blocked(IP6, 4.99)
    assert not r.blocked(IP6, 5.0)
    assert r.banned_count(5.0) == 0
    assert r.hit(IP6, 5.0, 100.0, 1, 5.0) == 0           # fresh window despite 100 s window
    assert r.hit(IP6, 5.1, 100.0, 1, 5.0) == 1


def test_rate_limit_zero_bans_at_first_event():
    r = RateTable(100, 1)
    assert r.hit(IP1, 0.0, 1.0, 0, 10.0) == 1
    assert r.blocked(IP1, 9.0)


def test_rate_expire_removes_only_finished_entries():
    r = RateTable(1000, 11)
    r.hit(IP1, 0.0, 2.0, 10, 60.0)                       # window ends 2.0
    r.ban(IP2, 0.0, 30.0)                                # ban ends 30.0
    r.hit(IP6, 0.0, 50.0, 10, 60.0)                      # window ends 50.0
    assert r.expire(1.0) == 0
    assert r.expire(2.0) == 1
    assert sorted(ip for ip, _, _ in r.dump(2.0)) == sorted([IP2, IP6])
    assert r.expire(30.0) == 1
    assert r.dump(30.0) == [(IP6, 1, 0.0)]
    assert r.expire(50.0) == 1
    assert r.dump(50.0) == []


def test_rate_ban_and_unban():
    r = RateTable(1000, 11)
    assert r.ban(IP1, 10.0, 600.0) is True
    assert r.blocked(IP1, 609.0)
    assert r.hit(IP1, 11.0, 60.0, 10, 600.0) == 1
    assert r.unban(IP1) is True
    assert not r.blocked(IP1, 12.0)
    assert r.hit(IP1, 12.0, 60.0, 10, 600.0) == 0
    assert r.unban(IP1) is False                         # had a count but no ban
    assert r.dump(12.0) == []
    assert r.unban(IP2) is False


def test_rate_ipv4_and_ipv6_keys():
    r = RateTable(1000, 11)
    v4 = socket.inet_pton(socket.AF_INET, "1.2.3.4")
    v6 = socket.inet_pton(socket.AF_INET6, "::102:304")  # same last four bytes as v4
    r.hit(v4, 0.0, 10.0, 1, 10.0)
    r.hit(v4, 0.0, 10.0, 1, 10.0)
    assert r.blocked(v4, 1.0)
    assert not r.blocked(v6, 1.0)
    for bad in (b"", b"123", b"12345", bytes(15), bytes(17)):
        with pytest.raises(ValueError):
            r.hit(bad, 0.0, 1.0, 1, 1.0)
    with pytest.raises(TypeError):
        r.hit("1.2.3.4", 0.0, 1.0, 1, 1.0)


def test_rate_full_table_fails_open_then_reuses_expired_slots():
    r = RateTable(1, 5)                                   # smallest: 16 slots
    ips = [socket.inet_pton(socket.AF_INET, f"10.0.0.{i}") for i in range(1, 40)]
    n = 0
    while r.hit(ips[n], 0.0, 10.0, 0, 5.0) == 1:          # limit 0: every recorded source banned
        n += 1
    assert n == 16
    assert r.overflows == 1
    assert r.hit(ips[n + 1], 1.0, 10.0, 0, 5.0) == 0      # still full: allowed, counted
    assert r.overflows == 2
    assert r.ban(ips[n + 2], 1.0, 5.0) is False
    assert r.overflows == 3
    assert r.banned_count(1.0) == 16
    assert r.hit(ips[n], 10.0, 10.0, 0, 5.0) == 1         # window and ban over: slot reused
    assert r.banned_count(10.0) == 1
    assert r.overflows == 3


def test_rate_counts_exactly_across_processes():
    nproc, per, limit = 4, 500, 1000
    r = RateTable(1000, 21)
    allowed = CounterRows(nproc, 1)
    barrier = spin_barrier(nproc)

    def run(row):
        def go():
            barrier()
            for _ in range(per):
                if r.hit(IP1, 1.0, 100.0, limit, 60.0) == 0:
                    allowed.inc(row, 0)
        return go

    run_in_children([run(i) for i in range(nproc)])
    assert allowed.column_sums() == [limit]
    assert r.blocked(IP1, 2.0)
    assert r.dump(2.0) == [(IP1, limit + 1, 61.0)]


# --------------------------------------------------------------------------------------------
# NonceCounts

def test_nonce_counts_accept_replay_stale():
    n = NonceCounts(3)
    first = [n.new_index() for _ in range(3)]
    assert first == [(0, 1), (1, 1), (2, 1)]
    idx, gen = first[1]
    assert n.check(idx, gen, 1) == 1
    assert n.check(idx, gen, 1) == 0                     # replay
    assert n.check(idx, gen, 5) == 1                     # gaps are fine
    assert n.check(idx, gen, 3) == 0
    assert n.check(idx, gen, 6) == 1
    assert n.check(idx, gen, 0) == 0
    assert n.check(idx, gen + 1, 7) == -1                # never issued
    assert n.new_index() == (0, 2)                       # wraps, new generation
    assert n.check(0, 1, 1) == -1                        # old nonce in that slot is stale
    assert n.check(0, 2, 1) == 1
    assert n.check(idx, gen, 7) == 1                     # other slots unaffected


def test_nonce_counts_argument_checks():
    n = NonceCounts(2)
    i, g = n.new_index()
    for index, gen in [(-1, g), (2, g), (10**9, g), (i, 0), (i, -1), (i, 2**32)]:
        assert n.check(index, gen, 1) == -1
    assert n.check(1, 1, 1) == -1                        # slot 1 not issued yet
    for bad in (-1, 2**32):
        with pytest.raises(ValueError):
            n.check(i, g, bad)
    assert n.check(i, g, 2**32 - 1) == 1
    with pytest.raises(ValueError):
        NonceCounts(0)
    assert NonceCounts(1000).nbytes >= 8000


def test_nonce_indexes_unique_across_processes(tmp_path):
    nproc, per = 4, 2000
    n = NonceCounts(100_000)

    def run(k):
        def go():
            got = [n.new_index() for _ in range(per)]
            (tmp_path / f"{k}.json").write_text(json.dumps(got))
        return go

    run_in_children([run(k) for k in range(nproc)])
    allocated = [tuple(x) for k in range(nproc)
                 for x in json.loads((tmp_path / f"{k}.json").read_text())]
    assert len(set(allocated)) == nproc * per
    assert sorted(i for i, _ in allocated) == list(range(nproc * per))


def test_nonce_count_accepted_once_across_processes(tmp_path):
    nproc, top = 4, 20_000
    n = NonceCounts(16)
    idx, gen = n.new_index()
    barrier = spin_barrier(nproc)

    def run(k):
        def go():
            barrier()
            ok = [nc for nc in range(1, top + 1) if n.check(idx, gen, nc) == 1]
            (tmp_path / f"{k}.json").write_text(json.dumps(ok))
        return go

    run_in_children([run(k) for k in range(nproc)])
    accepted = [nc for k in range(nproc) for nc in json.loads((tmp_path / f"{k}.json").read_text())]
    assert len(accepted) == len(set(accepted)), "an nc value was accepted twice"
    assert top in accepted
    assert n.check(idx, gen, top) == 0


def test_module_exports():
    assert issubclass(_shm.LockError, RuntimeError)
    for cls in (CounterRows, KeyIndex, RateTable, NonceCounts):
        assert cls.__module__ == "kampx._shm"
