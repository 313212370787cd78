"""A worker's timer buckets (kampx/tm/timers.py), on a fake clock: never early, at most one
tick late, cancelled timers never fire and never wake the loop, re-arming from a timer."""

import pytest

from kampx.tm import timers
from kampx.tm.timers import TICK_HZ, TimerHeap

TICK = 1 / TICK_HZ


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(timers, "_now", lambda: now[0])
    return now


def test_fires_at_the_first_tick_after_due_never_before(clock):
    h, fired = TimerHeap(), []
    h.call_later(0.503, fired.append, "a")
    clock[0] += 0.502
    assert h.run() == 0 and fired == []
    clock[0] += 0.001  # exactly due, but the tick starts later
    h.run()
    clock[0] += TICK
    assert h.run() == 1 and fired == ["a"]


def test_order_by_due_time_then_by_arming(clock):
    h, fired = TimerHeap(), []
    h.call_later(2.0, fired.append, "late")
    h.call_later(1.0, fired.append, "early-1")
    h.call_later(1.0, fired.append, "early-2")
    clock[0] += 3.0
    assert h.run() == 3
    assert fired == ["early-1", "early-2", "late"]


def test_cancelled_timers_do_not_fire_nor_shorten_the_wait(clock):
    h, fired = TimerHeap(), []
    h.call_later(0.5, fired.append, "cancelled").cancel()
    h.call_later(5.0, fired.append, "kept")
    assert h.timeout(cap=10.0) == pytest.approx(5.0, abs=TICK)
    assert len(h) == 1  # the dead bucket is gone
    assert h.timeout(cap=1.0) == 1.0
    clock[0] += 6.0
    h.run()
    assert fired == ["kept"]
    assert h.timeout(cap=0.5) == 0.5 and len(h) == 0


def test_a_timer_rearmed_from_its_callback_fires_later(clock):
    h, fired = TimerHeap(), []

    def tick(n):
        fired.append(n)
        if n < 3:
            h.call_later(0.5, tick, n + 1)

    h.call_later(0.5, tick, 1)
    for _ in range(4):
        clock[0] += 0.5 + TICK
        h.run()
    assert fired == [1, 2, 3]


def test_an_error_in_a_timer_is_reported_and_the_others_run(clock):
    h, fired, errors = TimerHeap(), [], []
    h.call_later(0.1, lambda: 1 / 0)
    h.call_later(0.1, fired.append, "after")
    clock[0] += 1.0
    assert h.run(errors.append) == 2
    assert fired == ["after"] and isinstance(errors[0], ZeroDivisionError)


def test_a_cancelled_timer_lets_go_of_what_it_would_have_called(clock):
    """A cancelled fr_inv_timer is due 120 s later: until then its bucket must not keep the
    branch (the relayed INVITE, its replies) alive."""
    import gc
    import weakref

    class Branch:
        pass

    h = TimerHeap()
    b = Branch()
    t = h.call_later(120.0, lambda branch: None, b)
    gone = weakref.ref(b)
    assert len(h) == 1
    t.cancel()
    t.cancel()                       # twice is harmless
    del b
    gc.collect()
    assert gone() is None
    assert len(h) == 0
    clock[0] += 121
    assert h.run() == 0


def test_a_timer_may_cancel_another_of_its_own_bucket(clock):
    h, fired = TimerHeap(), []
    second = None

    def first():
        fired.append("first")
        second.cancel()
    h.call_later(0.5, first)
    second = h.call_later(0.5, fired.append, "second")
    h.call_later(0.5, fired.append, "third")
    clock[0] += 0.6
    assert h.run() == 2
    assert fired == ["first", "third"]
