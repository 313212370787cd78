"""The timer process: periodic upkeep of shared tables, off the workers' packet loops
(Kamailio's timer processes): flood-protection and ban tables age out, expired location
bindings are removed on time."""

from __future__ import annotations

import logging
import time

from kampx import stats as S
from kampx.process import HelperProcess
from kampx.shared import HELPER_ROWS
from kampx.usrloc import EXPIRED_CONTACTS

log = logging.getLogger("kampx.timer")

TICK = 0.5


class TimerProcess(HelperProcess):
    role = "timer"

    def serve(self) -> None:
        self.stats = S.Stats(self.shared.counters, HELPER_ROWS["timer"])
        self.every(TICK, self._tick_safely)

    def _tick_safely(self) -> None:
        try:
            self.tick()
        except Exception:
            log.exception("timer task failed")

    def tick(self) -> None:
        now = time.monotonic()
        self.shared.pike.expire(now)
        self.shared.auth_bans.expire(now)
        loc = self.shared.location
        if loc is not None:
            n = loc.expire(time.time())
            if n:
                self.stats.add(EXPIRED_CONTACTS.base, n)
