"""The timer process: periodic upkeep of shared tables, off the workers' packet loops
(Kamailio's timer processes): flood-protection and ban tables age out, expired location
bindings are removed on time, tracked dialogs whose lifetime ran out end with their CDR."""

from __future__ import annotations

import logging
import time

from kampx import stats as S
from kampx.dialog import Dialogs
from kampx.process import HelperProcess
from kampx.shared import HELPER_ROWS
from kampx.usrloc import EXPIRED_CONTACTS

log = logging.getLogger("kampx.timer")

TICK = 0.5
DIALOG_SWEEP_S = 1.0  # how late a dialog's timeout may end it


class TimerProcess(HelperProcess):
    role = "timer"

    def serve(self) -> None:
        self.stats = S.Stats(self.shared.counters, HELPER_ROWS["timer"])
        self.dialogs = Dialogs.of(self.shared, self.cfg, self.stats)
        self._next_sweep = 0.0
        try:
            self.every(TICK, self._tick_safely)
        finally:
            self.dialogs.journal.drain(1.0)

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
        if now >= self._next_sweep:
            self._next_sweep = now + DIALOG_SWEEP_S
            self.dialogs.expire()
            self.dialogs.journal.flush()
