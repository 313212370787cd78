"""A real kampx (static relay script, two workers) operated from outside: kampxctl over its
control socket, /metrics over HTTP while SIPp places a known number of calls, counters
across a worker's SIGKILL, promtool on a real scrape, and the not-running error."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import tomllib

import pytest

import sipprun
from ctlkit import kampxctl, scrape, value
from kampxproc import STATIC_RELAY, KampxProcess

pytestmark = [pytest.mark.wire, pytest.mark.timeout(180)]

TIMERS = {"t1_ms": 100, "t2_ms": 400, "fr_timer_ms": 1500, "fr_inv_timer_ms": 2500}
needs_sipp = pytest.mark.skipif(not sipprun.available(), reason="SIPp (sip-tester) not installed")


class Proxy:
    def __init__(self):
        self.px = KampxProcess(children=2, config={"tm": TIMERS})
        self.px.env["KAMPX_NEXT_HOP"] = f"{self.px.addrs.phone}:5062"
        with open(self.px.config_path, "rb") as f:
            conf = tomllib.load(f)
        self.metrics_url = f"http://{conf['metrics']['listen']}/metrics"
        self.socket = conf["control"]["socket"]
        self.config = self.px.config_path

    def start(self) -> "Proxy":
        self.px.start()
        deadline = time.monotonic() + 10       # the ctl process binds right after fork
        while time.monotonic() < deadline:
            if os.path.exists(self.socket) and self._http_up():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"ctl not up:\n{self.px.log_tail()}")

    def _http_up(self) -> bool:
        try:
            scrape(self.metrics_url)
            return True
        except OSError:
            return False

    def ctl(self, *args) -> subprocess.CompletedProcess:
        return kampxctl(self.config, *args)

    def ctl_json(self, *args):
        p = self.ctl("--json", *args)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    def calls(self, n: int, rate: int = 40) -> sipprun.Result:
        uas = sipprun.Sipp("uas_call.xml", (self.px.addrs.phone, 5062), timeout=60)
        try:
            uac = sipprun.Sipp("uac_call.xml", (self.px.addrs.client, 5064), self.px.addr,
                               calls=n, rate=rate, timeout=40)
            res = uac.wait()
        finally:
            uas.stop()
        assert res.successful == n and res.failed == 0, res.out
        return res


@pytest.fixture(scope="module")
def proxy():
    p = Proxy().start()
    yield p
    p.px.close()


def _counters(samples: dict) -> dict:
    """The monotonic samples of a scrape: counters and histogram parts."""
    return {k: v for k, v in samples.items()
            if k[0].endswith(("_total", "_bucket", "_count", "_sum"))
            and not k[0].startswith("kampx_process_")}


# -- /metrics ------------------------------------------------------------------------------

@needs_sipp
def test_metrics_count_exactly_the_calls_sipp_sent(proxy):
    n = 60
    _, before = scrape(proxy.metrics_url)
    res = proxy.calls(n)
    time.sleep(0.3)
    text, after = scrape(proxy.metrics_url)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    # each call is INVITE, ACK, BYE from the caller, relayed once each (SIPp's own
    # retransmissions would be absorbed, and it reports how many it made)
    extra = res.retransmissions
    for method in ("INVITE", "ACK", "BYE"):
        assert n <= delta("kampx_core_rcv_requests_total", method=method) <= n + extra
    assert delta("kampx_core_rcv_requests_total", method="REGISTER") == 0
    assert delta("kampx_core_fwd_requests_total") == 3 * n
    assert delta("kampx_tm_uas_transactions_total") == 2 * n          # INVITE and BYE
    assert delta("kampx_tm_uac_transactions_total") == 2 * n
    assert delta("kampx_tm_transactions_finished_total", **{"class": "2xx"}) == 2 * n
    assert delta("kampx_core_rcv_replies_total", **{"class": "2xx", "code": "200"}) >= 2 * n
    # 180, 200 (INVITE) and 200 (BYE) per call: a 180 that reaches the proxy after its 200
    # (two workers, UDP) is absorbed, as Kamailio does, and counted as such
    late_180 = delta("kampx_tm_rpl_absorbed_total")
    assert late_180 <= n // 10
    assert delta("kampx_core_fwd_replies_total") + late_180 >= 3 * n
    assert delta("kampx_script_exceptions_total") == 0
    # the processing-time histogram saw every request, cumulative and consistent
    count = delta("kampx_core_request_processing_seconds_count")
    assert 3 * n <= count <= 3 * n + extra
    inf = value(after, "kampx_core_request_processing_seconds_bucket", le="+Inf")
    assert inf == value(after, "kampx_core_request_processing_seconds_count")
    buckets = sorted((float(dict(k[1])["le"]), v) for k, v in after.items()
                     if k[0] == "kampx_core_request_processing_seconds_bucket")
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)
    assert 0 < delta("kampx_core_request_processing_seconds_sum") < count * 0.1
    # every family has HELP and TYPE; no sample carries a timestamp
    for line in text.splitlines():
        if line and not line.startswith("#"):
            rest = line.rsplit("}", 1)[1] if "}" in line else line.split(" ", 1)[1]
            assert len(rest.split()) == 1, line
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names == {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}

    # kampxctl stats reads the same numbers
    st = proxy.ctl_json("stats")
    assert st["core"]["rcv_requests_invite"] == value(after, "kampx_core_rcv_requests_total",
                                                      method="INVITE")
    assert st["core"]["fwd_requests"] == value(after, "kampx_core_fwd_requests_total")
    assert st["tm"]["UAS_transactions"] == value(after, "kampx_tm_uas_transactions_total")
    assert st["tm"]["2xx_transactions"] == value(after, "kampx_tm_transactions_finished_total",
                                                 **{"class": "2xx"})
    assert st["core"]["request_processing_count"] == value(
        after, "kampx_core_request_processing_seconds_count")


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian: prometheus) not installed")
def test_promtool_accepts_a_real_scrape(proxy):
    text, _ = scrape(proxy.metrics_url)
    p = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0 and not p.stdout.strip() and not p.stderr.strip(), p.stdout + p.stderr


def test_metrics_process_usrloc_build_info(proxy):
    text, s = scrape(proxy.metrics_url)
    roles = {dict(k[1])["role"] for k in s if k[0] == "kampx_process_resident_memory_bytes"}
    assert {"supervisor", "timer", "ctl"} <= roles
    assert sum(r.startswith("udp receiver child=") for r in roles) == 2
    assert value(s, "kampx_processes") == len(proxy.px.children()) + 1
    assert all(v > 0 for k, v in s.items() if k[0] == "kampx_process_resident_memory_bytes")
    assert 0 < value(s, "kampx_uptime_seconds") < 600
    assert any(k[0] == "kampx_build_info" and v == 1 for k, v in s.items())
    assert "# TYPE kampx_tm_active_transactions gauge" in text
    assert "# TYPE kampx_core_request_processing_seconds histogram" in text
    # OpenMetrics for scrapers that ask for it
    om, _ = scrape(proxy.metrics_url, accept="application/openmetrics-text; version=1.0.0")
    assert om.rstrip().endswith("# EOF")


@needs_sipp
def test_counters_keep_their_totals_across_a_worker_respawn(proxy):
    proxy.calls(20)
    time.sleep(0.3)
    _, before = scrape(proxy.metrics_url)
    old = proxy.px.worker_pids()
    os.kill(old[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = proxy.px.worker_pids()
        if len(now) == 2 and old[0] not in now:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the worker was not respawned")
    _, after = scrape(proxy.metrics_url)
    for k, v in _counters(before).items():
        assert after.get(k, 0) >= v, k
    invites = value(before, "kampx_core_rcv_requests_total", method="INVITE")
    assert value(after, "kampx_core_rcv_requests_total", method="INVITE") == invites
    proxy.calls(10)
    time.sleep(0.3)
    _, later = scrape(proxy.metrics_url)
    assert value(later, "kampx_core_rcv_requests_total", method="INVITE") >= invites + 10
    assert value(later, "kampx_tm_uas_transactions_total") == \
        value(before, "kampx_tm_uas_transactions_total") + 20


# -- kampxctl against the running proxy ----------------------------------------------------

def test_ctl_uptime_ps_version(proxy):
    p = proxy.ctl("uptime")
    assert p.returncode == 0 and p.stdout.startswith("now: ") and "uptime: " in p.stdout
    up = proxy.ctl_json("uptime")
    _, s = scrape(proxy.metrics_url)
    assert abs(up["up_since"] - value(s, "kampx_start_time_seconds")) < 1e-3

    p = proxy.ctl("ps")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["PID", "ROLE", "CPU", "MEM"]
    assert lines[1].split()[:2] == [str(proxy.px.proc.pid), "supervisor"]
    ps = proxy.ctl_json("ps")
    assert [x["pid"] for x in ps] == [proxy.px.proc.pid] + sorted(proxy.px.children())
    assert {x["role"] for x in ps} >= {"supervisor", "timer", "ctl"}
    assert all(x["rss_bytes"] > 0 and x["cpu_percent"] >= 0 for x in ps)

    p = proxy.ctl("version")
    assert p.returncode == 0 and f"running at {proxy.socket}" in p.stdout
    assert proxy.ctl_json("version")["kampx"]["name"] == "kampx"
    assert "ul.dump" in proxy.ctl_json("rpc", "system.listMethods")


def test_ctl_stats_text_json_and_reset(proxy):
    p = proxy.ctl("stats", "core")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert lines == sorted(lines) and all(line.startswith("core:") for line in lines)
    assert any(line.startswith("core:rcv_requests_invite = ") for line in lines)
    p = proxy.ctl("stats", "core:rcv_requests_options")
    assert p.returncode == 0 and p.stdout.startswith("core:rcv_requests_options = ")
    assert proxy.ctl_json("stats", "tm").keys() == {"tm"}
    p = proxy.ctl("stats", "nosuch")
    assert p.returncode == 1 and p.stderr.strip() == "no such statistics group: nosuch"

    _, before = scrape(proxy.metrics_url)
    p = proxy.ctl("stats", "--reset", "core")
    assert p.returncode == 0 and p.stdout.strip().endswith("statistics reset")
    assert proxy.ctl_json("stats", "core")["core"]["rcv_requests"] <= 2   # our own pings only
    _, after = scrape(proxy.metrics_url)            # /metrics never goes down
    assert value(after, "kampx_core_rcv_requests_total", method="OPTIONS") >= \
        value(before, "kampx_core_rcv_requests_total", method="OPTIONS")


def test_ctl_address_commands(proxy):
    ip = proxy.px.addrs.carrier
    p = proxy.ctl("address", "add", "200", ip, "32", "0", "carrier")
    assert p.returncode == 0
    assert "** INFO: execute 'kampxctl address reload'" in p.stdout
    time.sleep(1.1)                                  # the reload rate limit of earlier tests
    p = proxy.ctl("address", "reload")
    assert p.returncode == 0 and p.stdout.startswith("address table reloaded: 1 rows")
    p = proxy.ctl("address", "dump")
    assert p.returncode == 0 and ip in p.stdout and "carrier" in p.stdout
    dump = proxy.ctl_json("address", "dump")
    assert dump["rows"] == [{"grp": 200, "ip_addr": ip, "mask": 32, "port": 0, "tag": "carrier"}]
    # --reload right after a reload: kampxctl waits out the 503 and retries once
    res = proxy.ctl_json("address", "add", "1", "127.0.0.0", "8", "--reload")
    assert res["reloaded"]["rows"] == 2
    assert proxy.ctl_json("address", "show")["rows"][1]["ip_addr"] == "127.0.0.0"
    res = proxy.ctl_json("address", "rm", "1", "127.0.0.0", "--reload")
    assert res["removed"] == 1 and res["reloaded"]["rows"] == 1
    assert len(proxy.ctl_json("address", "dump")["rows"]) == 1


def test_ctl_subscriber_commands(proxy):
    assert proxy.ctl("add", "opsuser", "secret").stdout.strip() == "new user 'opsuser@kampx.test' added"
    assert proxy.ctl("passwd", "opsuser", "other").returncode == 0
    assert proxy.ctl("rm", "opsuser").returncode == 0
    p = proxy.ctl("rm", "opsuser")
    assert p.returncode == 1 and p.stderr.strip() == "no such user opsuser@kampx.test"


def test_ctl_ul_commands(proxy):
    p = proxy.ctl("ul", "show")
    assert p.returncode == 0, p.stderr
    p = proxy.ctl("ul", "add", "opsbob", "sip:opsbob@127.0.0.9:5099", "120", "0.5")
    assert p.returncode == 0 and "added to opsbob" in p.stdout
    aor = proxy.ctl_json("ul", "show", "opsbob")
    assert aor["contacts"][0]["contact"] == "sip:opsbob@127.0.0.9:5099"
    assert aor["contacts"][0]["q"] == 0.5
    p = proxy.ctl("ul", "show")
    assert "AOR: opsbob" in p.stdout and "Contact: sip:opsbob@127.0.0.9:5099" in p.stdout
    assert any(a["aor"] == "opsbob" for a in proxy.ctl_json("ul", "show")["aors"])
    _, s = scrape(proxy.metrics_url)
    assert value(s, "kampx_usrloc_location_contacts") >= 1
    p = proxy.ctl("ul", "rm", "opsbob", "sip:opsbob@127.0.0.9:5099")
    assert p.returncode == 0 and p.stdout.strip() == "1 contact of opsbob removed"
    p = proxy.ctl("ul", "show", "opsbob")
    assert p.returncode == 1 and p.stderr.strip() == "AOR not found"


def test_ctl_reload_starts_new_workers(proxy):
    old = set(proxy.px.worker_pids())
    p = proxy.ctl("reload")
    assert p.returncode == 0
    assert p.stdout.strip() == f"reloading: route script {STATIC_RELAY}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and set(proxy.px.worker_pids()) & old:
        time.sleep(0.1)
    assert not set(proxy.px.worker_pids()) & old and len(proxy.px.worker_pids()) == 2


def test_ctl_reload_refuses_a_broken_script(proxy):
    bad = "/tmp/kxops-bad-%d.py" % os.getpid()
    with open(bad, "w") as f:
        f.write("def request_route(msg):\n    undefined_function()\n")
    with open(proxy.config) as f:
        original = f.read()
    try:
        with open(proxy.config, "w") as f:
            f.write(original.replace(_script_of(original), bad))
        old = set(proxy.px.worker_pids())
        p = proxy.ctl("reload")
        assert p.returncode == 1 and "undefined_function" in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
        assert set(proxy.px.worker_pids()) == old              # the running script stays
    finally:
        with open(proxy.config, "w") as f:
            f.write(original)
        os.unlink(bad)


def _script_of(conf_text: str) -> str:
    return tomllib.loads(conf_text)["routing"]["script"]


def test_ctl_process_respawn_keeps_socket_and_reset_baseline(proxy):
    """A killed ctl process leaves its socket file behind; the respawned one replaces it, and
    the stats reset baseline (shared memory) is still in force."""
    _, s = scrape(proxy.metrics_url)
    at_reset = sum(v for k, v in s.items() if k[0] == "kampx_core_rcv_requests_total")
    assert at_reset >= 1                      # at least the start-up ping
    assert proxy.ctl("stats", "--reset").returncode == 0
    (ctl_pid,) = [pid for pid, title in proxy.px.children().items() if title == "kampx: ctl"]
    os.kill(ctl_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [pid for pid, title in proxy.px.children().items() if title == "kampx: ctl"]
        if pids and pids[0] != ctl_pid:
            p = proxy.ctl("uptime")
            if p.returncode == 0:
                break
        time.sleep(0.1)
    else:
        pytest.fail("the ctl process did not come back")
    core = proxy.ctl_json("stats", "core")["core"]
    _, s = scrape(proxy.metrics_url)
    total = sum(v for k, v in s.items() if k[0] == "kampx_core_rcv_requests_total")
    assert total >= at_reset                                # /metrics was never reset
    assert core["rcv_requests"] == total - at_reset         # kampxctl still is


# -- not running -----------------------------------------------------------------------------

LIVE = [("ul", "show"), ("ul", "show", "alice"), ("ul", "add", "a", "sip:a@h"), ("ul", "rm", "a"),
        ("address", "dump"), ("address", "reload"), ("stats",), ("ps",), ("uptime",),
        ("reload",), ("rpc", "core.version")]


def test_not_running_error():
    d = "/tmp/kxops-nr-%d" % os.getpid()
    os.makedirs(d, exist_ok=True)
    sock = os.path.join(d, "kampx.sock")
    cfg = os.path.join(d, "kampx.toml")
    with open(cfg, "w") as f:
        f.write(f'[db]\nurl = "sqlite://{d}/kampx.db"\n[control]\nsocket = "{sock}"\n')
    try:
        for stale in (False, True):
            if stale:      # a socket file a killed proxy left behind: ECONNREFUSED
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.bind(sock)
                s.close()
            for args in LIVE:
                for extra in ((), ("--json",)):
                    p = kampxctl(cfg, *args, *extra)
                    assert p.returncode == 3, (args, p.stderr)
                    assert p.stderr == f"kampx is not running at {sock}\n"
                    assert p.stdout == ""
        p = kampxctl(cfg, "version")      # not an error there
        assert p.returncode == 0 and "not running" in p.stdout
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_socket_removed_on_stop():
    p = Proxy().start()
    try:
        assert os.stat(p.socket).st_mode & 0o777 == 0o660
        assert p.px.stop() == 0
        assert not os.path.exists(p.socket)
        r = p.ctl("uptime")
        assert r.returncode == 3 and r.stderr.strip() == f"kampx is not running at {p.socket}"
    finally:
        p.px.close()
