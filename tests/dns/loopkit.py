"""A process's event loop in miniature, for driving kampx.dns outside a worker: an epoll of
the fds the resolver watches and the TimerHeap it schedules on."""
from __future__ import annotations

import select
import time

from kampx.tm.timers import TimerHeap


class Loop:
    def __init__(self):
        self.ep = select.epoll()
        self.io = {}
        self.timers = TimerHeap()

    def watch(self, fd, callback):
        self.io[fd] = callback
        self.ep.register(fd, select.EPOLLIN)

    def unwatch(self, fd):
        if self.io.pop(fd, None) is not None:
            self.ep.unregister(fd)

    def run_until(self, predicate, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            for fd, _ in self.ep.poll(min(self.timers.timeout(0.05), 0.05)):
                cb = self.io.get(fd)
                if cb is not None:
                    cb()
            self.timers.run()
        return True

    def close(self):
        self.ep.close()
