# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A worker's timers, run from the worker's event loop (no threads, no signals).

Transactions are owned by one worker (docs/architecture.md), so their timers (RFC 3261
A B D E F G H I J K, fr_timer, fr_inv_timer) live in that worker too.

Most of them never fire: a reply cancels Timer A/B within milliseconds, yet a cancelled
Timer B stays due 32 s later. A heap of timer objects paid a Python comparison per level on
every push and pop (a sixth of a call's CPU at 800 calls/s). Here timers go into buckets of
one TICK (10 ms, like Kamailio's ms-based timer lists; an RFC 3261 timer is never shorter than
T1/2), kept in a dict by tick number: arming is two dict operations, and only a new bucket
touches the heap, which holds plain integers (compared in C). A timer fires in the first tick
that starts at or after its due time: never early, at most one tick late; timers of one bucket
fire in the order they were armed.

Cancelling takes the timer out of its bucket (a bucket is an insertion-ordered dict) and drops
what it referred to: a cancelled fr_inv_timer must not keep its branch, the relayed INVITE
and its replies alive for the 120 s until its tick comes (at 3000 calls/s that was hundreds of
MiB per worker, found by tools/soak).

Compiled (Cython): a call arms and cancels about ten timers, and as Python each arming was
five calls (the clock, ceil, the Timer, two dict operations). `_now` stays a module global
that tests and kampx.testing.clock replace with their own clock; while it is time.monotonic,
the clock is read with a C call (kampx/_clock.pyx).
"""

import time
from heapq import heappop, heappush

from libc.math cimport ceil

from kampx._clock cimport monotonic

_now = time.monotonic
cdef object _MONOTONIC = _now


cdef inline double _clock() except? -1.0:
    """_now(): a C call while it is the real clock, else whatever replaced it."""
    now = _now
    if now is _MONOTONIC:
        return monotonic()
    return <double>now()
TICK_HZ = 100  # ticks per second
cdef double _TICK_HZ = 100.0


cdef class Timer:
    """An armed timer: `cancel()` it, or it fires once."""

    # its fields: timers.pxd

    cpdef cancel(self):
        if self.alive:
            self.alive = False
            self.bucket.pop(self, None)
            self.fn = self.args = self.bucket = None


cdef class TimerHeap:
    # its fields: timers.pxd

    def __init__(self):
        self._buckets = {}
        self._ticks = []

    def __len__(self):
        """Timers armed and neither fired nor cancelled."""
        return sum(len(b) for b in self._buckets.values())

    def call_later(self, double delay, fn, *args):
        return self.later(delay, fn, args)

    cpdef Timer later(self, double delay, fn, tuple args):
        """call_later() with the arguments as a tuple: tm's C call."""
        # the first tick boundary at or after the due time: never early
        cdef object tick = <long long>ceil((_clock() + delay) * _TICK_HZ)
        cdef dict bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = {}
            self._buckets[tick] = bucket
            heappush(self._ticks, tick)
        cdef Timer t = Timer.__new__(Timer)
        t.fn = fn
        t.args = args
        t.alive = True
        t.bucket = bucket
        bucket[t] = None
        return t

    cpdef double timeout(self, double cap=1.0):
        """Seconds until the next bucket with a live timer (at most `cap`), for epoll."""
        cdef list ticks = self._ticks
        cdef dict buckets = self._buckets
        while ticks:
            if buckets[ticks[0]]:
                return max(0.0, min(cap, <long long>ticks[0] / _TICK_HZ - _clock()))
            del buckets[heappop(ticks)]  # all cancelled: nothing to wake up for
        return cap

    cpdef int run(self, on_error=None) except -1:
        """Fire every due timer; returns how many ran."""
        cdef list ticks = self._ticks
        cdef dict buckets = self._buckets
        cdef Timer t
        cdef int n = 0
        if not ticks:
            return 0
        cdef double now = _clock() * _TICK_HZ
        while ticks and <long long>ticks[0] <= now:
            # a copy: a timer that fires may cancel another of the same bucket
            for t in list(buckets.pop(heappop(ticks))):
                if not t.alive:
                    continue
                t.alive = False
                fn, args = t.fn, t.args
                t.fn = t.args = t.bucket = None  # no cycle through the transaction it served
                n += 1
                try:
                    fn(*args)
                except Exception as e:  # a timer must never take the worker down
                    if on_error is None:
                        raise
                    on_error(e)
        return n
