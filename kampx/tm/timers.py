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
"""

from __future__ import annotations

import heapq
import time
from math import ceil

_now = time.monotonic
TICK_HZ = 100  # ticks per second


class Timer:
    __slots__ = ("fn", "args", "alive", "bucket")

    def __init__(self, fn, args, bucket) -> None:
        self.fn = fn
        self.args = args
        self.alive = True
        self.bucket = bucket

    def cancel(self) -> None:
        if self.alive:
            self.alive = False
            self.bucket.pop(self, None)
            self.fn = self.args = self.bucket = None


class TimerHeap:
    def __init__(self) -> None:
        self._buckets: dict[int, dict[Timer, None]] = {}
        self._ticks: list[int] = []  # heap of the ticks that have a bucket

    def __len__(self) -> int:
        """Timers armed and neither fired nor cancelled."""
        return sum(len(b) for b in self._buckets.values())

    def call_later(self, delay: float, fn, *args) -> Timer:
        # the first tick boundary at or after the due time: never early
        tick = ceil((_now() + delay) * TICK_HZ)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = {}
            heapq.heappush(self._ticks, tick)
        t = Timer(fn, args, bucket)
        bucket[t] = None
        return t

    def timeout(self, cap: float = 1.0) -> float:
        """Seconds until the next bucket with a live timer (at most `cap`), for epoll."""
        ticks, buckets = self._ticks, self._buckets
        while ticks:
            if buckets[ticks[0]]:
                return max(0.0, min(cap, ticks[0] / TICK_HZ - _now()))
            del buckets[heapq.heappop(ticks)]  # all cancelled: nothing to wake up for
        return cap

    def run(self, on_error=None) -> int:
        """Fire every due timer; returns how many ran."""
        ticks, buckets = self._ticks, self._buckets
        if not ticks:
            return 0
        now = _now() * TICK_HZ
        n = 0
        while ticks and ticks[0] <= now:
            # a copy: a timer that fires may cancel another of the same bucket
            for t in list(buckets.pop(heapq.heappop(ticks))):
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
