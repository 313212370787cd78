"""Two or three kampx nodes on one PostgreSQL database, for the cluster wire tests.

Every node is a tests/proxyctl.py KampxTarget (its own locked block of loopback addresses,
the built-in Kamailio 101 script) whose [db] names the shared server and the node's own
SQLite file. The first node provisions the shared tables: the subscriber pool, the carrier's
address and every node's address in the trusted group (a node relays a call for a phone
registered on another node to that node, which must not challenge it: kampx/cluster.py).
"""
from __future__ import annotations

import os
import re
import time

import proxyctl
from kampx.control.client import ControlClient, ControlError, RpcError

SYNC_BOUND_S = 1.25      # kampx/cluster.py: FLUSH_INTERVAL + POLL_S, the stated bound
SLACK_S = 1.0            # a loaded CI machine (2 cores shared with the other tests)


class Node(proxyctl.KampxTarget):
    def __init__(self, pg, name: str, options: proxyctl.Options | None = None):
        super().__init__(options or proxyctl.Options(children=1))
        self.pg = pg
        self.node = name

    def write_config(self) -> None:
        super().write_config()
        with open(self.config_path) as f:
            text = f.read()
        local = os.path.join(self.workdir, "node.db").lstrip("/")
        text, n = re.subn(r'(?m)^\[db\]\nurl = .*$',
                          f'[db]\nurl = "{self.pg.url}"\nlocal = "sqlite:///{local}"', text)
        assert n == 1
        with open(self.config_path, "w") as f:
            f.write(text)

    def start(self, ready_timeout: float = 15.0) -> None:
        super().start(ready_timeout)
        # ready = answering SIP and its control socket (the ctl process starts alongside)
        up, _ = wait_for(self._ctl_up, 5.0, step=0.05)
        assert up, "the control socket did not come up:\n" + self.log_tail()

    def _ctl_up(self) -> bool:
        try:
            self.rpc("core.uptime")
            return True
        except ControlError:
            return False

    def rpc(self, method: str, params=None, timeout: float = 2.0):
        return ControlClient(os.path.join(self.workdir, "kampx.sock"), timeout).call(method, params)

    def contacts(self, aor: str) -> list[dict]:
        try:
            return self.rpc("ul.lookup", {"aor": aor})["contacts"]
        except RpcError:
            return []

    def kill(self) -> None:
        """SIGKILL the whole node (its process tree, by PID)."""
        import signal
        for pid in [self.pid, *self._children()]:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc is not None:
            self.proc.wait(5)


class Cluster:
    def __init__(self, pg, n: int = 2, subscribers=(), options=None):
        self.nodes = [Node(pg, "ABC"[i], options) for i in range(n)]
        first = self.nodes[0]
        first.add_subscribers(list(subscribers))
        first.add_carrier(first.addrs.carrier)
        for node in self.nodes:
            first.add_carrier(node.addrs.proxy)    # the nodes trust each other
        try:
            for node in self.nodes:
                node.start()
        except Exception:
            self.close()
            raise

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def wait_for(pred, timeout: float, step: float = 0.01):
    """pred()'s first truthy value within `timeout` s (else its last value) and the time
    it took."""
    t0 = time.monotonic()
    while True:
        v = pred()
        if v or time.monotonic() - t0 >= timeout:
            return v, time.monotonic() - t0
        time.sleep(step)
