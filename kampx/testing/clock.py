"""The harness's clock: time that moves only when the test moves it.

kampx reads time as time.monotonic() and time.time() at the moment it needs it (the
transaction index, dialogs, nonces, the registrar), except the timer heap, which binds
time.monotonic once (kampx.tm.timers._now). `Clock.installed()` points all three at this
clock for the duration of a harness call and puts the real ones back afterwards, so the test
process around the harness keeps real time and a harness run is the same run every time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from kampx.tm import timers

# a fixed start: 2026-01-01T00:00:00Z on the wall clock, an arbitrary uptime for monotonic
WALL_START = 1767225600.0
MONOTONIC_START = 1000.0


class Clock:
    """Both clocks of the process, moved together by `advance`."""

    def __init__(self, wall: float = WALL_START, monotonic: float = MONOTONIC_START):
        self._wall = float(wall)
        self._monotonic = float(monotonic)
        self._depth = 0
        self._saved: tuple = ()

    def monotonic(self) -> float:
        return self._monotonic

    def time(self) -> float:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._monotonic += seconds
        self._wall += seconds

    @contextmanager
    def installed(self) -> Iterator[Clock]:
        """time.monotonic, time.time and the timer heap read this clock inside the block
        (re-entrant: a harness call may make another)."""
        if self._depth == 0:
            self._saved = (time.monotonic, time.time, timers._now)
            time.monotonic = self.monotonic
            time.time = self.time
            timers._now = self.monotonic
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0:
                time.monotonic, time.time, timers._now = self._saved
                self._saved = ()
