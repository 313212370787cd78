"""The timer process: periodic upkeep of shared tables, off the workers' packet loops
(Kamailio's timer processes): flood-protection and ban tables age out, expired location
bindings are removed on time."""
from __future__ import annotations

import logging
import os
import signal
import time

from kampx import stats as S
from kampx.shared import HELPER_ROWS

log = logging.getLogger("kampx.timer")

TICK = 0.5


class TimerProcess:
    role = "timer"

    def __init__(self, shared, cfg):
        self.shared = shared
        self.cfg = cfg
        self.pid = 0

    def title(self) -> str:
        return "kampx: timer"

    def run(self) -> None:
        from setproctitle import setproctitle
        setproctitle(self.title())
        self.stop = False
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.stats = S.Stats(self.shared.counters, HELPER_ROWS["timer"])
        parent = os.getppid()
        while not self.stop and os.getppid() == parent:
            started = time.monotonic()
            try:
                self.tick()
            except Exception:
                log.exception("timer task failed")
            time.sleep(max(0.0, TICK - (time.monotonic() - started)))
        os._exit(0)

    def _on_stop(self, signum, frame) -> None:
        self.stop = True

    def tick(self) -> None:
        now = time.monotonic()
        self.shared.pike.expire(now)
        self.shared.auth_bans.expire(now)
        loc = self.shared.location
        if loc is not None:
            n = loc.expire(time.time())
            if n:
                self.stats.add(S.EXPIRED_CONTACTS.base, n)
