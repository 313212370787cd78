"""kampx._clock: the packet path's C clock reads give Python's values (kampx/_clock.pyx)."""

import time

from kampx import _clock
from kampx.tm import timers


def _between(read, reference, rounds=2000):
    for _ in range(rounds):
        before = reference()
        value = read()
        after = reference()
        assert before <= value <= after, (before, value, after)


def test_monotonic_is_time_monotonic():
    _between(_clock.monotonic, time.monotonic)


def test_time_is_time_time():
    _between(_clock.time, time.time)


def test_monotonic_ns_is_perf_counter_ns():
    _between(_clock.monotonic_ns, time.perf_counter_ns)
    _between(_clock.monotonic_ns, time.monotonic_ns)


def test_timers_still_follow_a_replaced_clock(monkeypatch):
    now = [500.0]
    monkeypatch.setattr(timers, "_now", lambda: now[0])
    heap = timers.TimerHeap()
    fired = []
    heap.call_later(0.05, fired.append, "x")
    assert heap.run() == 0
    now[0] += 0.06
    assert heap.run() == 1 and fired == ["x"]


def test_timers_read_the_real_clock_by_default():
    heap = timers.TimerHeap()
    fired = []
    heap.call_later(0.0, fired.append, "now")
    deadline = time.monotonic() + 1.0
    while not fired and time.monotonic() < deadline:
        heap.run()
        time.sleep(0.002)
    assert fired == ["now"]
    # due 10 s ahead: the real clock says not yet
    heap.call_later(10.0, fired.append, "later")
    assert heap.run() == 0 and 9.0 < heap.timeout(cap=60.0) <= 10.02
