"""A kampx worker inside the calling process: no fork, no event loop, no packet on any wire.

    with Sandbox(config={"routing": {"carrier": "sip:192.0.2.9:5060"}}) as box:
        box.feed(b"OPTIONS sip:127.0.0.1 SIP/2.0\\r\\n...", ("192.0.2.1", 5060))
        box.sent          # [(bytes, (ip, port)), ...] what the worker sent
        box.errors        # exceptions the worker logged (script errors, internal errors)

The worker is the real one (kampx.worker.Worker, its tm, the route script, the shared
tables of a private SharedState over a database in a temporary directory); only its listen
socket is a recorder that checks each destination as the kernel would (a port outside
0-65535 raises OverflowError, a host that is not an IP literal raises) and keeps the
datagram instead of sending it. The fuzz target tools/fuzz_receive.py and the bounded fuzz
test drive Worker.process(), the path under the worker's per-datagram guard, through it.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Any, cast

from kampx import config as _config
from kampx._cparse import parse
from kampx.dns.resolver import Resolver
from kampx.routing import loader
from kampx.shared import SharedState
from kampx.transport.sockets import ListenSocket
from kampx.worker import Worker

SANDBOX_WORKER_ID = 0


class RecordingSocket:
    """Stands in for a UDP socket: validates like sendto(2) and records, never sends."""

    def __init__(self, family: int):
        self.family = family
        self.sent: list[tuple[bytes, tuple]] = []
        self.refused: list[tuple[bytes, tuple]] = []  # what sendto(2) would have refused

    def fileno(self) -> int:
        return -1

    def sendto(self, data, dest):
        host, port = dest
        try:
            if not isinstance(port, int) or not 0 <= port <= 65535:
                raise OverflowError("sendto(): port must be 0-65535.")
            socket.inet_pton(self.family, host)  # OSError for anything but an IP literal
        except (OSError, OverflowError, TypeError):
            self.refused.append((bytes(data), dest))
            raise
        self.sent.append((bytes(data), (host, port)))
        return len(data)


class _Context:
    def __init__(self, shared):
        self.shared = shared
        self.instance = shared.instance
        self.instance_tag = shared.tag_prefix

    def notify_booted(self, worker_id: int) -> None:
        pass


class _SandboxWorker(Worker):
    """Keeps every exception it would log, for the caller to look at, and never asks a
    DNS server anything (a sandbox must not send a query for a name a datagram made up):
    its resolver answers from the DNS cache alone (a test may fill it: `box.shared.dns_cache`),
    and a name the cache lacks fails as an unreachable nameserver would."""

    errors: list[tuple[str, Exception]]

    def _log_once(self, where: str, e: Exception) -> None:
        self.errors.append((where, e))

    def make_resolver(self) -> Resolver:
        return Resolver(
            self.cfg.dns, self.ctx.shared.dns_cache, self.stats, self.timers, offline=True
        )


class Sandbox:
    """One worker with `config` (sections of the TOML config as dicts) listening on
    `listen` (an IP literal) and `port`. `subscribers` {user: password} (in the [auth]
    realm) and `addresses` [(group, ip, mask, port, tag)] go into the database first.
    `script`, a loaded kampx.routing.loader.Script, runs instead of [routing] script
    (kampx.testing hands over its instrumented copy)."""

    def __init__(
        self,
        config: dict | None = None,
        listen: str = "127.0.0.1",
        port: int = 5060,
        subscribers: dict | None = None,
        addresses: list | None = None,
        script: loader.Script | None = None,
    ):
        from kampx import state
        from kampx.auth.credentials import subscriber_row
        from kampx.db import open_storage

        self.dir = tempfile.mkdtemp(prefix="kampx-sandbox-")
        host = f"[{listen}]" if ":" in listen else listen
        sections: dict[str, dict[str, Any]] = {
            "core": {"listen": [f"udp:{host}:{port}"], "children": 1},
            "db": {"url": "sqlite:///" + os.path.join(self.dir, "kampx.db").lstrip("/")},
            "usrloc": {"capacity": 1024},
            "tm": {"max_transactions": 4096},
        }
        for name, keys in (config or {}).items():
            sections.setdefault(name, {}).update(keys)
        self.cfg = _config.from_dict(sections)
        with open_storage(self.cfg) as storage:
            realm = self.cfg.auth.realm
            storage.subscribers.add_many(
                subscriber_row(u, realm, p) for u, p in (subscribers or {}).items()
            )
            for row in addresses or ():
                storage.addresses.add(*row)
        self.shared = SharedState(self.cfg)
        state.attach(self.shared, self.cfg)
        addr = self.cfg.core.listen_addrs()[0]
        self.socket = RecordingSocket(addr.family)
        # duck-typed: ListenSocket calls fileno(), family and sendto() of a worker's socket
        ls = ListenSocket(0, addr, cast(socket.socket, self.socket))
        if script is None:
            script = loader.load(self.cfg.routing.script)
        self.worker = _SandboxWorker(
            _Context(self.shared), SANDBOX_WORKER_ID, 1, [ls], 0, script, self.cfg
        )
        self.worker.errors = []
        self.worker.setup_state()

    @property
    def sent(self) -> list[tuple[bytes, tuple]]:
        return self.socket.sent

    @property
    def errors(self) -> list[tuple[str, Exception]]:
        return self.worker.errors

    def message(self, data: bytes, src: tuple = ("127.0.0.1", 5070)):
        """`data` parsed as the worker hands a request to its modules (src and lsock set),
        for calling a module (registrar.save, ...) directly with self.worker."""
        m = parse(data)
        m.src = src
        m.lsock = self.worker.sockets[0]
        return m

    def count(self, col: int) -> int:
        """One of the worker's counters (kampx.stats column)."""
        return self.shared.counters.get(SANDBOX_WORKER_ID, col)

    def feed(self, data: bytes, src: tuple, guarded: bool = False) -> None:
        """One datagram from `src`, as if read from the listen socket. Unguarded (the
        default), an exception in the receive path reaches the caller."""
        w = self.worker
        try:
            (w.receive if guarded else w.process)(data, src, w.sockets[0], False)
        finally:
            w.dialogs.journal.flush()  # as the loop does after each round

    def run_timers(self) -> int:
        return self.worker.timers.run(self.worker._timer_error)

    def reset(self) -> None:
        """Forget every transaction and what was sent (long fuzzing runs)."""
        self.worker.tm.clear()
        self.socket.sent.clear()

    def close(self) -> None:
        w = self.worker
        w.tm.clear()
        w.handoff.close()
        for m in w.modules.values():
            close = getattr(m, "close", None)
            if close is not None:
                close()
        for fd in (self.shared.dialog_journal_r, self.shared.dialog_journal_w):
            os.close(fd)
        self.shared.dispatcher.close()  # its memfd: a fuzz run makes many sandboxes
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["Sandbox", "RecordingSocket"]
