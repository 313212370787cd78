"""Helpers of the ops tests: the real control server in this process over real shared tables,
kampxctl as a subprocess, and /metrics scraped over HTTP."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families

from kampx import config as kconfig
from kampx import stats as S
from kampx._shm import CounterRows, RateTable
from kampx.control.methods import Methods
from kampx.control.server import RpcServer, bind_unix
from kampx.permissions import AddressTable
from kampx.shared import COUNTER_ROWS
from kampx.shared_snapshot import SharedBlob
from kampx.stats.kamctl import StatsView
from kampx.trace import SPEC_CAPACITY
from kampx.usrloc import LocationStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def kampxctl(config_path: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """kampxctl as an operator runs it: its own process, exit status and both streams."""
    return subprocess.run([sys.executable, "-m", "kampx.cli.kampxctl", "--config", config_path,
                           *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": REPO})


def scrape(url: str, accept: str | None = None) -> tuple[str, dict]:
    """GET /metrics -> (text, {(sample name, sorted label items): value})."""
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        text = r.read().decode()
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class InProcessCtl:
    """RpcServer + Methods over fresh shared tables, on a socket in a short temp dir (sun_path
    is 107 bytes), with a config file kampxctl can be pointed at."""

    def __init__(self, capacity: int = 1000, config: dict | None = None):
        self.dir = tempfile.mkdtemp(prefix="kxops", dir="/tmp")
        self.sock_path = os.path.join(self.dir, "ctl.sock")
        sections = {"db": {"url": f"sqlite://{self.dir}/kampx.db"},
                    "control": {"socket": self.sock_path},
                    "auth": {"realm": "kampx.test"}}
        for k, v in (config or {}).items():
            sections.setdefault(k, {}).update(v)
        self.config_path = os.path.join(self.dir, "kampx.toml")
        with open(self.config_path, "w") as f:
            for name, keys in sections.items():
                f.write(f"[{name}]\n")
                for k, v in keys.items():
                    f.write(f"{k} = {v!r}\n".replace("'", '"'))
        self.cfg = kconfig.load(self.config_path)
        self.shared = SimpleNamespace(
            location=LocationStore(capacity, 7, track_changes=False),
            permissions=AddressTable(256),
            counters=CounterRows(COUNTER_ROWS, S.ncols()),
            pike=RateTable(1024, 1), auth_bans=RateTable(1024, 2),
            trace_spec=SharedBlob("trace", SPEC_CAPACITY), instance=secrets.token_hex(4))
        self.started = time.time() - 5
        self.methods = Methods(self.shared, self.cfg, os.getpid(), self.started,
                               StatsView(self.shared.counters))
        self.server = RpcServer(bind_unix(self.sock_path), self.sock_path, self.methods.table())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "InProcessCtl":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.close()
        self.thread.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def register(self, aor: str, contact: str, expires: float = 3600, q: int = -1,
                 callid: str = "c1", cseq: int = 1, **kw) -> None:
        """A binding as the registrar stores one."""
        now = time.time()
        op = (contact, now + expires, q, callid, cseq, kw.get("received", ""),
              kw.get("path", ""), kw.get("socket", "udp:127.0.0.1:5060"),
              kw.get("user_agent", "test-phone"), "", 0, 0)
        status, _ = self.shared.location.apply(aor, now, [op])
        assert status == 0, status
