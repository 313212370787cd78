"""packaging/: the systemd unit (systemd-analyze verify), the default configuration, the
Grafana dashboard against the metrics kampx really exports, and the Debian package built
with dpkg-buildpackage (tools/build-deb.sh) where the Debian build tools are installed."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from types import SimpleNamespace

import pytest

from kampx import config as kconfig
from kampx import stats as S
from kampx._shm import CounterRows, RateTable
from kampx.dialog_table import DialogTable
from kampx.dispatcher.table import DispatcherTable
from kampx.stats.prometheus import KampxCollector
from kampx.shared import COUNTER_ROWS
from kampx.usrloc import LocationStore

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PKG = os.path.join(REPO, "packaging")
UNIT = os.path.join(PKG, "systemd", "kampx.service")


def unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with open(UNIT) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith(("#", "[")) and "=" in line:
                k, _, v = line.partition("=")
                out.setdefault(k, []).append(v)
    return out


def test_unit_has_the_operational_settings():
    u = unit_settings()
    assert u["Type"] == ["notify"] and u["NotifyAccess"] == ["main"]
    assert u["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert u["KillMode"] == ["mixed"]
    assert u["RuntimeDirectory"] == ["kampx"] and u["StateDirectory"] == ["kampx"]
    assert u["User"] == ["kampx"]
    assert u["ExecStart"] == ["/usr/bin/kampx run --config /etc/kampx/kampx.toml"]
    for key in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome",
                "RestrictAddressFamilies", "SystemCallFilter", "CapabilityBoundingSet"):
        assert key in u, key
    # the contract: a graceful stop takes < 5 s; systemd must not SIGKILL before that
    assert int(u["TimeoutStopSec"][0]) > 5


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_systemd_analyze_verify():
    # the console script of the interpreter running the tests (a venv's bin/ is not on PATH)
    kampx = os.path.join(os.path.dirname(sys.executable), "kampx")
    if not os.path.exists(kampx):
        kampx = shutil.which("kampx")
    assert kampx, "kampx console script not found (pip install -e .)"
    d = tempfile.mkdtemp(prefix="kxunit")
    try:
        # verify checks that ExecStart= exists: point it at this checkout's kampx
        with open(UNIT) as f:
            text = f.read().replace("/usr/bin/kampx", kampx)
        path = os.path.join(d, "kampx.service")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run(["systemd-analyze", "verify", path], capture_output=True,
                           text=True, timeout=60)
        complaints = [line for line in (p.stdout + p.stderr).splitlines() if "kampx" in line]
        assert p.returncode == 0 and not complaints, p.stdout + p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_default_config_matches_the_unit():
    cfg = kconfig.load(os.path.join(PKG, "kampx.toml"))
    u = unit_settings()
    assert cfg.control.socket == f"/run/{u['RuntimeDirectory'][0]}/kampx.sock"
    assert cfg.db_path().startswith(f"/var/lib/{u['StateDirectory'][0]}/")
    assert cfg.routing.script == "builtin:kamailio101" and cfg.routing.carrier_group == 200
    # every listen address of the shipped file is loopback until the operator changes it
    assert all(a.host.startswith("127.") for a in cfg.core.listen_addrs())


def exported_names() -> set[str]:
    """Every sample name /metrics can carry, from the real collector over real tables."""
    dispatcher = DispatcherTable(4)
    dispatcher.load([(1, "sip:127.0.0.21")])
    shared = SimpleNamespace(counters=CounterRows(COUNTER_ROWS, S.ncols()),
                             location=LocationStore(16, 1, track_changes=False),
                             pike=RateTable(64, 1), auth_bans=RateTable(64, 2),
                             dispatcher=dispatcher, dialog_table=DialogTable(4))
    for fam in S.families():          # every labelled series present (reply codes appear once seen)
        for col in range(fam.base, fam.base + fam.size):
            shared.counters.add(0, col, 1)
    names = set()
    for fam in KampxCollector(shared, os.getpid(), time.time()).collect():
        names.update(s.name for s in fam.samples)
    return names


def test_grafana_dashboard_queries_only_exported_metrics():
    with open(os.path.join(PKG, "grafana", "kampx-dashboard.json")) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = {m for e in exprs for m in re.findall(r"\bkampx_[a-z0-9_]+", e)}
    names = exported_names()
    missing = used - names
    assert not missing, f"the dashboard queries metrics kampx does not export: {sorted(missing)}"
    # the families operators watch are all on it
    for must in ("kampx_core_rcv_requests_total", "kampx_core_rcv_replies_total",
                 "kampx_tm_active_transactions", "kampx_usrloc_registered_users",
                 "kampx_core_request_processing_seconds_bucket",
                 "kampx_process_cpu_seconds_total", "kampx_process_resident_memory_bytes",
                 "kampx_registrar_accepted_regs_total", "kampx_auth_failures_total",
                 "kampx_acc_calls_answered_total", "kampx_acc_call_duration_seconds_sum",
                 "kampx_dialog_active_dialogs"):
        assert must in used, must


DEB_TOOLS = ("dpkg-buildpackage", "dh", "git")


@pytest.mark.timeout(600)
@pytest.mark.skipif(not all(shutil.which(t) for t in DEB_TOOLS)
                    or not os.path.exists("/usr/share/dh-python/dhpython/build/plugin_pyproject.py"),
                    reason="Debian build tools (debhelper, dh-python, pybuild-plugin-pyproject) not installed")
def test_debian_package_builds():
    if subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    out = tempfile.mkdtemp(prefix="kxdeb")
    try:
        p = subprocess.run([os.path.join(REPO, "tools", "build-deb.sh"), out],
                           capture_output=True, text=True, timeout=570,
                           env={**os.environ, "PYTHON": sys.executable})
        assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
        (deb,) = [f for f in os.listdir(out) if re.fullmatch(r"kampx_[^_]+_[a-z0-9]+\.deb", f)]
        deb = os.path.join(out, deb)
        files = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True).stdout
        for path in ("./usr/bin/kampx", "./usr/bin/kampxctl", "./lib/systemd/system/kampx.service",
                     "./etc/kampx/kampx.toml", "./usr/share/kampx/grafana/kampx-dashboard.json"):
            assert path in files, path
        assert re.search(r"/kampx/_cparse\.cpython-\d+-[^ ]+\.so", files)
        # the Python modules setup.py compiles ship compiled too (docs/development.md)
        assert re.search(r"/kampx/tm/manager\.cpython-\d+-[^ ]+\.so", files)
        info = subprocess.run(["dpkg-deb", "-I", deb], capture_output=True, text=True).stdout
        assert "python3-psutil" in info and "python3-prometheus-client" in info
        package = subprocess.run(["dpkg-deb", "-f", deb, "Package"], capture_output=True,
                                 text=True).stdout
        assert package.strip() == "kampx"
        with tempfile.TemporaryDirectory() as ctrl:
            subprocess.run(["dpkg-deb", "-e", deb, ctrl], check=True)
            with open(os.path.join(ctrl, "conffiles")) as f:
                assert "/etc/kampx/kampx.toml" in f.read().split()
            with open(os.path.join(ctrl, "postinst")) as f:
                assert "adduser --system" in f.read()
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_packaged_config_is_valid_toml_with_known_keys():
    with open(os.path.join(PKG, "kampx.toml"), "rb") as f:
        data = tomllib.load(f)
    kconfig.from_dict(data)         # unknown keys or bad values raise ConfigError


def test_default_metrics_port_is_not_prometheus_own_and_is_documented():
    """The contract: /metrics on a loopback port that does not collide with the Prometheus
    server's 9090 (nor Pushgateway/Alertmanager, nor the 9100-9999 exporter range), and the
    README says which."""
    from kampx import config
    host, port = config.parse_hostport(config.from_dict({}).metrics.listen, 0)
    assert host == "127.0.0.1"
    assert port not in (9090, 9091, 9093, 9094) and not 9100 <= port <= 9999
    with open(os.path.join(REPO, "README.md")) as f:
        assert f"127.0.0.1:{port}" in f.read()
    with open(os.path.join(REPO, "packaging", "kampx.toml")) as f:
        assert f'listen = "127.0.0.1:{port}"' in f.read()
