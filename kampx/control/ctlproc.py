"""The ctl helper process (`kampx: ctl`): the JSON-RPC control socket and /metrics.

Both are served here, off the workers' packet loops: every answer comes from shared memory
or /proc, so a slow `ul.dump` or a scrape never delays a packet. One process serves both
because they read the same tables and the same process list (`kampxctl stats` and /metrics
cannot drift apart), and one more process per proxy would cost a Python interpreter (~20 MB
RSS) for a few requests a minute. Each runs in its own thread: a stalled control client
does not delay a scrape, nor the other way round.

A socket or port that cannot be bound (still held by the previous kampx during an upgrade)
is retried every second instead of exiting: the supervisor restarts a helper that exits at
once, which would spin.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from kampx import stats as S
from kampx._shm import CounterRows
from kampx.control.client import socket_path
from kampx.process import HelperProcess

if TYPE_CHECKING:
    from kampx.control.server import RpcServer
    from kampx.stats.prometheus import MetricsServer

log = logging.getLogger("kampx.ctl")

RETRY_BIND_S = 1.0
TICK = 0.5


class CtlProcess(HelperProcess):
    role = "ctl"

    def __init__(self, shared, cfg, supervisor):
        """Built in the supervisor before fork: the reset baseline is shared memory, so
        `kampxctl stats --reset` survives a restart of this process."""
        super().__init__(shared, cfg)
        self.supervisor_pid = getattr(supervisor, "pid", None) or os.getpid()
        self.started = getattr(supervisor, "started", None) or time.time()
        self.baseline = CounterRows(1, S.ncols())
        self.sockets = getattr(supervisor, "sockets", ())  # the listen sockets (dlg.end)

    def serve(self) -> None:
        self._serve()

    def _serve(self) -> None:
        from kampx.control.methods import Methods
        from kampx.stats.kamctl import StatsView
        from kampx.stats.prometheus import KampxCollector, make_registry

        self.methods = Methods(
            self.shared,
            self.cfg,
            self.supervisor_pid,
            self.started,
            StatsView(self.shared.counters, self.baseline),
            self.sockets,
        )
        self.registry = make_registry(
            KampxCollector(
                self.shared, self.supervisor_pid, self.started, self.cfg.metrics.instance
            )
        )
        self.rpc: RpcServer | None = None
        self.http: MetricsServer | None = None
        self._complained: set[str] = set()
        next_try = 0.0
        try:
            while self.should_run():
                now = time.monotonic()
                if (self.rpc is None or self.http is None) and now >= next_try:
                    self._bind()
                    next_try = now + RETRY_BIND_S
                time.sleep(TICK)
        finally:
            if self.rpc is not None:
                self.rpc.close()
            if self.http is not None:
                self.http.close()

    def _bind(self) -> None:
        from kampx.control.server import RpcServer, bind_unix
        from kampx.stats.prometheus import MetricsServer

        if self.rpc is None:
            path = socket_path(self.cfg)
            try:
                sock = bind_unix(path)
            except OSError as e:
                self._complain("rpc", f"control socket {path}: {e.strerror or e}; retrying")
            else:
                self.rpc = RpcServer(sock, path, self.methods.table())
                threading.Thread(
                    target=self.rpc.serve_forever, daemon=True, name="ctl-accept"
                ).start()
                log.info("control socket %s", path)
        if self.http is None:
            listen = self.cfg.metrics.listen
            try:
                self.http = MetricsServer(listen, self.registry).start()
            except OSError as e:
                self._complain("http", f"metrics on {listen}: {e.strerror or e}; retrying")
            else:
                log.info("metrics on http://%s/metrics", listen)

    def _complain(self, what: str, line: str) -> None:
        if what not in self._complained:  # once, not every second
            self._complained.add(what)
            log.warning("%s", line)
