"""A worker's timers: one heap, run from the worker's event loop (no threads, no signals).

Transactions are owned by one worker (docs/architecture.md), so their timers (RFC 3261
A B D E F G H I J K, fr_timer, fr_inv_timer) live in that worker too. Cancelled timers are
marked dead and skipped when they reach the top of the heap.
"""

from __future__ import annotations

import heapq
import itertools
import time

_now = time.monotonic


class Timer:
    __slots__ = ("when", "seq", "fn", "args", "alive")

    def __init__(self, when, seq, fn, args):
        self.when = when
        self.seq = seq
        self.fn = fn
        self.args = args
        self.alive = True

    def __lt__(self, other):
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self):
        self.alive = False


class TimerHeap:
    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = itertools.count()

    def __len__(self):
        return len(self._heap)

    def call_later(self, delay: float, fn, *args) -> Timer:
        t = Timer(_now() + delay, next(self._seq), fn, args)
        heapq.heappush(self._heap, t)
        return t

    def timeout(self, cap: float = 1.0) -> float:
        """Seconds until the next live timer (at most `cap`), for epoll."""
        heap = self._heap
        while heap and not heap[0].alive:
            heapq.heappop(heap)
        if not heap:
            return cap
        return max(0.0, min(cap, heap[0].when - _now()))

    def run(self, on_error=None) -> int:
        """Fire every due timer; returns how many ran."""
        heap = self._heap
        now = _now()
        n = 0
        while heap and heap[0].when <= now:
            t = heapq.heappop(heap)
            if not t.alive:
                continue
            t.alive = False
            n += 1
            try:
                t.fn(*t.args)
            except Exception as e:  # a timer must never take the worker down
                if on_error is None:
                    raise
                on_error(e)
        return n
