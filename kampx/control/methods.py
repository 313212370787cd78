"""The control methods (docs/control.md), served by the ctl process over the shared tables.

Each module's methods are its own (rpc_usrloc, rpc_permissions, rpc_dispatcher, rpc_dns,
rpc_stats); this file has the core's (core.*, cfg.reload, system.listMethods) and puts the
table together. Nothing here talks to a worker: the location table, the address table, the
dispatcher sets, the DNS cache and the counters are in shared memory, the process list comes
from /proc, and a route-script reload is the supervisor's SIGHUP. Names and results follow
Kamailio's RPC where Kamailio has the method.
"""

from __future__ import annotations

import os
import platform
import signal
import time

from kampx import __version__, procinfo
from kampx import config as config_mod
from kampx.control.params import FAILED
from kampx.control.rpc_acc import AccRpc
from kampx.control.rpc_dialog import DialogRpc
from kampx.control.rpc_dispatcher import DispatcherRpc
from kampx.control.rpc_dns import DnsRpc
from kampx.control.rpc_permissions import PermissionsRpc
from kampx.control.rpc_stats import StatsRpc
from kampx.control.rpc_trace import TraceRpc
from kampx.control.rpc_usrloc import UsrlocRpc, aor_key, contact_object  # noqa: F401
from kampx.control.server import RpcFault, check_params
from kampx.stats.kamctl import StatsView

CFG_RELOAD_WAIT = 8.0  # how long cfg.reload waits for the new workers to appear
PSX_WINDOW = 0.2


class Methods:
    """The method table of one ctl process."""

    def __init__(
        self,
        shared,
        cfg,
        supervisor_pid: int,
        started: float,
        stats_view: StatsView,
        sockets=(),
    ):
        self.shared = shared
        self.supervisor_pid = supervisor_pid
        self.started = started
        self.usrloc = UsrlocRpc(shared, cfg)
        self.permissions = PermissionsRpc(shared, cfg)
        self.dispatcher = DispatcherRpc(shared, cfg)
        self.stats = StatsRpc(stats_view, self.usrloc.gauges)
        self.dns = DnsRpc(shared)
        self.trace = TraceRpc(shared)
        self.acc = AccRpc(lambda: self.cfg)
        self.dialogs = DialogRpc(shared, cfg, sockets)  # sockets: dlg.end's BYEs leave by them
        self.cfg = cfg

    @property
    def cfg(self):
        return self._cfg

    @cfg.setter
    def cfg(self, cfg) -> None:
        """The running config, the same for every module's methods (cfg.reload swaps it)."""
        self._cfg = self.usrloc.cfg = self.permissions.cfg = self.dispatcher.cfg = cfg

    def table(self) -> dict:
        return {
            **self.usrloc.table(),
            **self.permissions.table(),
            **self.dns.table(),
            **self.dispatcher.table(),
            **self.trace.table(),
            **self.acc.table(),
            **self.dialogs.table(),
            "core.uptime": self.core_uptime,
            "core.psx": self.core_psx,
            "core.version": self.core_version,
            "core.tcp_info": self.core_tcp_info,
            **self.stats.table(),
            "cfg.reload": self.cfg_reload,
            "system.listMethods": self.list_methods,
        }

    # -- core ---------------------------------------------------------------------------------

    def core_uptime(self, params: dict) -> dict:
        check_params(params, ())
        now = time.time()
        return {"now": now, "up_since": self.started, "uptime": now - self.started}

    def core_psx(self, params: dict) -> list:
        check_params(params, ())
        return procinfo.psx(self.supervisor_pid, PSX_WINDOW)

    def core_version(self, params: dict) -> dict:
        check_params(params, ())
        return {"name": "kampx", "version": __version__, "python": platform.python_version()}

    def core_tcp_info(self, params: dict) -> dict:
        """Kamailio's core.tcp_info: the TCP/TLS connections open now (from the shared
        counts each worker keeps), per worker id, and the limits."""
        from kampx.transport.stream import OPEN_CONNECTIONS

        check_params(params, ())
        tcp = self.cfg.tcp
        out = {
            "max_connections": tcp.max_connections,
            "max_connections_per_ip": tcp.max_connections_per_ip,
            "connection_lifetime_s": tcp.connection_lifetime_s,
            "opened_connections": 0,
            "opened_tls_connections": 0,
            "by_worker": {},
        }
        load = self.shared.stream_load
        if load is None:  # no tcp: or tls: listen address
            return out
        counters = self.shared.counters
        out["opened_connections"] = counters.column_sum(OPEN_CONNECTIONS.col("tcp"))
        out["opened_tls_connections"] = counters.column_sum(OPEN_CONNECTIONS.col("tls"))
        nrows = load.shape[0]
        out["by_worker"] = {str(w): n for w in range(nrows) if (n := load.get(w, 0)) > 0}
        return out

    def list_methods(self, params: dict) -> list:
        check_params(params, ())
        return sorted(self.table())

    # -- reload -------------------------------------------------------------------------------

    def cfg_reload(self, params: dict) -> dict:
        """Check the config and route script here (so a broken one is reported to the caller),
        then SIGHUP the supervisor and wait until its replacement workers exist."""
        from kampx.routing import loader

        check_params(params, ())
        try:
            cfg = config_mod.load(self.cfg.path) if self.cfg.path else self.cfg
            loader.load(cfg.routing.script)
        except config_mod.ConfigError as e:
            raise RpcFault(FAILED, str(e)) from None
        except loader.ScriptError as e:
            raise RpcFault(FAILED, f"route script {e}") from None
        before = {p.pid for p in procinfo.processes(self.supervisor_pid)}
        try:
            os.kill(self.supervisor_pid, signal.SIGHUP)
        except ProcessLookupError:
            raise RpcFault(FAILED, "the supervisor is gone") from None
        deadline = time.monotonic() + CFG_RELOAD_WAIT
        while time.monotonic() < deadline:
            # a new child is a worker (still titled "supervisor" right after fork):
            # helpers are not restarted by a reload
            fresh = {
                p.pid
                for p in procinfo.processes(self.supervisor_pid)[1:]
                if p.pid not in before and (" receiver child=" in p.role or p.role == "supervisor")
            }
            if fresh:
                self.cfg = cfg
                return {"script": cfg.routing.script}
            time.sleep(0.05)
        raise RpcFault(
            FAILED, f"no new worker started within {CFG_RELOAD_WAIT:g} s (see the kampx log)"
        )
