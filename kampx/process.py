"""What every helper process (timer, db writer, ctl) shares: its title, signals that only
note a stop, a loop that ends when asked or when the supervisor is gone, one exit path.
Workers have their own loop (kampx/worker.py); this is the rest."""

from __future__ import annotations

import logging
import os
import signal
import time

log = logging.getLogger("kampx.process")


class HelperProcess:
    """Built in the supervisor before fork; run() is the child's whole life. Subclasses
    set `role` and implement serve(), which returns when should_run() turns False."""

    role = "helper"

    def __init__(self, shared, cfg):
        self.shared = shared
        self.cfg = cfg
        self.pid = 0

    def title(self) -> str:
        return f"kampx: {self.role}"

    def run(self) -> None:
        """The child process. Never returns."""
        from setproctitle import setproctitle

        setproctitle(self.title())
        self.stop = False
        self._parent = os.getppid()
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        code = 0
        try:
            self.serve()
        except Exception:
            log.exception("%s failed", self.title())
            code = 1
        finally:
            logging.shutdown()
        os._exit(code)

    def _on_stop(self, signum, frame) -> None:
        self.stop = True

    def should_run(self) -> bool:
        return not self.stop and os.getppid() == self._parent

    def every(self, interval: float, fn) -> None:
        """Call fn every `interval` seconds until should_run() is False."""
        while self.should_run():
            started = time.monotonic()
            fn()
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    def serve(self) -> None:
        raise NotImplementedError
