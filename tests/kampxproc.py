"""Run a real kampx on loopback for the core tests: any route script, any config keys.

    with KampxProcess(script=STATIC_RELAY, config={"tm": {...}}, env={...}) as px:
        px.addr            # (proxy ip, 5060)
        px.worker_pids()   # live workers, from their process titles
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import proxyctl

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STATIC_RELAY = os.path.join(REPO, "kampx", "routing", "examples", "static_relay.py")


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def kampx_cmd() -> list[str]:
    if os.environ.get("KAMPX_BIN"):
        return os.environ["KAMPX_BIN"].split()
    path = shutil.which("kampx")
    return [path] if path else [sys.executable, "-m", "kampx"]


class KampxProcess:
    def __init__(self, script: str = STATIC_RELAY, children: int = 2, config: dict | None = None,
                 env: dict | None = None):
        self.addrs = proxyctl.allocate_addresses()
        self.workdir = tempfile.mkdtemp(prefix="kampx-core-")
        self.addr = (self.addrs.proxy, 5060)
        self.metrics_listen = f"{self.addrs.proxy}:{proxyctl.free_tcp_port(self.addrs.proxy)}"
        sections = {
            "core": {"listen": [f"udp:{self.addrs.proxy}:5060"], "children": children},
            "db": {"url": "sqlite:///" + os.path.join(self.workdir, "kampx.db").lstrip("/")},
            "routing": {"script": script},
            "security": {"pike_enabled": False, "auth_ban_failures": 0},
            "metrics": {"listen": self.metrics_listen},
            "control": {"socket": os.path.join(self.workdir, "kampx.sock")},
        }
        for name, keys in (config or {}).items():
            sections.setdefault(name, {}).update(keys)
        self.ctl_socket = sections["control"].get("socket") or None
        self.listen_count = len(sections["core"]["listen"])
        self.children_expected = sections["core"]["children"] * self.listen_count
        self.config_path = os.path.join(self.workdir, "kampx.toml")
        with open(self.config_path, "w") as f:
            for name, keys in sections.items():
                f.write(f"[{name}]\n")
                for k, v in keys.items():
                    f.write(f"{k} = {_toml_value(v)}\n")
                f.write("\n")
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = REPO + (os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else "")
        self.env.update(env or {})
        self.proc = None
        self.log_path = os.path.join(self.workdir, "kampx.log")

    def add_listen(self, *addrs: str) -> None:
        """More `[core] listen` addresses beside udp:PROXY:5060 (before start()); each brings
        `children` more workers."""
        with open(self.config_path) as f:
            cfg = f.read()
        one = f'listen = ["udp:{self.addrs.proxy}:5060"]'
        assert one in cfg
        every = ", ".join(f'"{a}"' for a in (f"udp:{self.addrs.proxy}:5060", *addrs))
        with open(self.config_path, "w") as f:
            f.write(cfg.replace(one, f"listen = [{every}]"))
        self.children_expected += self.children_expected // self.listen_count * len(addrs)
        self.listen_count += len(addrs)

    def start(self, ready_timeout: float = 10.0) -> "KampxProcess":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(kampx_cmd() + ["run", "--config", self.config_path],
                                     cwd=self.workdir, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kampx exited ({self.proc.returncode}):\n{self.log_tail()}")
            # ready: answering, and every worker titled (a test comparing worker pids
            # before and after must not see one still booting)
            if (proxyctl.ping(self.addr, 0.2, src_ip=self.addrs.client)
                    and len(self.worker_pids()) >= self.children_expected):
                self._wait_for_ctl(deadline)
                return self
            time.sleep(0.05)
        raise RuntimeError(f"kampx not ready in {ready_timeout}s:\n{self.log_tail()}")

    def _wait_for_ctl(self, deadline: float) -> None:
        """The ctl helper binds the control socket on its own schedule, after the workers
        may already answer: a test's first kampxctl must not find it missing. Up to the
        start deadline (a test that breaks the control socket on purpose still starts)."""
        if self.ctl_socket is None:
            return
        while time.monotonic() < deadline:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.ctl_socket)
                return
            except OSError:
                time.sleep(0.02)
            finally:
                s.close()

    def metrics_text(self, timeout: float = 5.0) -> str:
        """/metrics scraped over HTTP, as Prometheus would; waits for the ctl process."""
        import urllib.request
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.metrics_listen}/metrics", timeout=2) as r:
                    return r.read().decode()
            except OSError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def metric(self, name: str, timeout: float = 5.0) -> float:
        """Sum of the samples of one family on /metrics."""
        text = self.metrics_text(timeout)
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def children(self) -> dict[int, str]:
        """pid -> process title of the supervisor's children."""
        out = {}
        if self.proc is None:
            return out
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid != self.proc.pid:
                    continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    out[int(entry)] = f.read().replace(b"\0", b" ").decode().strip()
            except (OSError, IndexError, ValueError):
                continue
        return out

    def worker_pids(self) -> list[int]:
        return sorted(pid for pid, title in self.children().items() if " receiver child=" in title)

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in list(self.children()) + [self.proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(5)
            return None

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        if getattr(self, "log", None):
            self.log.close()
        self.addrs.release()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
