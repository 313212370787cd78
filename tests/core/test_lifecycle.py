"""Processes and start-up: titles, one-line start-up errors, kampx check, graceful stop,
respawn after SIGKILL under load, SIGHUP reload under load, route-script errors."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import sipprun
from kampxproc import REPO, STATIC_RELAY, KampxProcess, kampx_cmd
from sipclient import UAS, Behaviour, SipClient

pytestmark = [pytest.mark.wire, pytest.mark.timeout(180)]


def run_cli(*args, cwd=None, timeout=20):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(kampx_cmd() + list(args), capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def test_process_titles():
    with KampxProcess(children=2) as px:
        sock = f"udp:{px.addrs.proxy}:5060"
        # ready = one worker answers; the other may still be booting (titled as its parent
        # until it sets its own): wait for every child's title, bounded
        expected = {f"kampx: udp receiver child=2 sock={sock}", "kampx: ctl", "kampx: db writer"}
        deadline = time.monotonic() + 10
        while not expected <= set(px.children().values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        titles = sorted(px.children().values())
        assert titles.count(f"kampx: udp receiver child=1 sock={sock}") == 1
        assert titles.count(f"kampx: udp receiver child=2 sock={sock}") == 1
        assert "kampx: timer" in titles
        with open(f"/proc/{px.proc.pid}/cmdline", "rb") as f:
            assert f.read().replace(b"\0", b" ").strip() == b"kampx: supervisor"


def test_sigterm_exits_zero_within_5s():
    px = KampxProcess(children=2).start()
    try:
        t0 = time.monotonic()
        rc = px.stop(signal.SIGTERM, timeout=10)
        assert rc == 0
        assert time.monotonic() - t0 < 5.0
        assert px.children() == {}
    finally:
        px.close()


@pytest.mark.parametrize("section,body,expect", [
    ("core", "foo = 1", "unknown key 'foo' in [core]"),
    ("core", 'children = "two"', "bad value for [core] children"),
    ("nosuch", "x = 1", "unknown section [nosuch]"),
    ("core", 'listen = ["udp:localhost:5060"]', "is not an IP address"),
    ("overload", "queue_delay_ms = 0", "bad value for [overload] queue_delay_ms"),
    ("overload", 'methods = ["INVITE", "ACK"]', "bad value for [overload] methods: 'ACK'"),
    ("overload", 'methods = ["FOO"]', "bad value for [overload] methods: 'FOO'"),
])
def test_config_errors_are_one_line(tmp_path, section, body, expect):
    cfg = write(tmp_path / "k.toml", f"[{section}]\n{body}\n")
    for cmd in (["check", "--config", str(cfg)], ["run", "--config", str(cfg)]):
        r = run_cli(*cmd, cwd=tmp_path)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0], r.stderr


def test_bad_route_script_named_with_file_and_line(tmp_path):
    script = write(tmp_path / "bad.py", "from kampx.routing import *\n\n"
                   "def request_route(msg):\n    lookupp('location')\n")
    cfg = write(tmp_path / "k.toml", f'[routing]\nscript = "{script}"\n'
                f'[db]\nurl = "sqlite:///{str(tmp_path / "k.db").lstrip("/")}"\n')
    r = run_cli("check", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode != 0
    assert f"{script}:4: unknown function lookupp()" in r.stderr
    bad_args = write(tmp_path / "bad2.py", "from kampx.routing import *\n\n"
                     "def request_route(msg):\n    sl_send_reply(404)\n")
    cfg2 = write(tmp_path / "k2.toml", f'[routing]\nscript = "{bad_args}"\n')
    r = run_cli("check", "--config", str(cfg2), cwd=tmp_path)
    assert r.returncode != 0 and f"{bad_args}:4: sl_send_reply()" in r.stderr
    r = run_cli("run", "--config", str(cfg2), cwd=tmp_path)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1


def test_check_accepts_a_good_config(tmp_path):
    cfg = write(tmp_path / "k.toml", f'[routing]\nscript = "{STATIC_RELAY}"\n'
                f'[db]\nurl = "sqlite:///{str(tmp_path / "k.db").lstrip("/")}"\n')
    r = run_cli("check", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_port_in_use_is_one_line():
    px = KampxProcess(children=1)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(px.addr)
    try:
        r = subprocess.run(kampx_cmd() + ["run", "--config", px.config_path], capture_output=True,
                           text=True, env=px.env, cwd=px.workdir, timeout=20)
        assert r.returncode != 0
        assert r.stderr.strip() == f"kampx: cannot listen on udp:{px.addr[0]}:5060: address already in use"
    finally:
        blocker.close()
        px.close()


def test_script_exception_gets_500_logged_once_and_counted(tmp_path):
    script = write(tmp_path / "boom.py", "from kampx.routing import *\n\n"
                   "def request_route(msg):\n"
                   "    if is_method('OPTIONS'):\n        sl_send_reply(200, 'Keepalive')\n        exit()\n"
                   "    raise RuntimeError('boom in the script')\n")
    with KampxProcess(script=str(script), children=1) as px, \
            SipClient(px.addrs.client, 0, proxy=px.addr) as c:
        for _ in range(3):
            req = c.request("MESSAGE", f"sip:bob@{px.addrs.proxy}", body="hi", content_type="text/plain")
            c.send(req)
            r = c.final(req, 2.0)
            assert r.status == 500
        # the worker is still serving
        req = c.request("OPTIONS", f"sip:{px.addrs.proxy}")
        c.send(req)
        assert c.final(req, 2.0).status == 200
        log = px.log_tail(200)
        assert log.count("RuntimeError: boom in the script") == 1


def _calls(px, calls, rate, timeout=60):
    uas = sipprun.Sipp("uas_call.xml", (px.addrs.phone, 5062), timeout=timeout + 10)
    uac = sipprun.Sipp("uac_call.xml", (px.addrs.client, 5064), px.addr, calls=calls, rate=rate,
                       timeout=timeout)
    return uas, uac


@pytest.mark.skipif(not sipprun.available(), reason="SIPp (sip-tester) not installed")
def test_sighup_reload_under_load_drops_no_call():
    px = KampxProcess(children=2, config={"tm": {"fr_timer_ms": 3000}})
    px.env["KAMPX_NEXT_HOP"] = f"{px.addrs.phone}:5062"
    px.start()
    try:
        before = set(px.worker_pids())
        uas, uac = _calls(px, calls=400, rate=100)
        time.sleep(1.5)
        os.kill(px.proc.pid, signal.SIGHUP)
        time.sleep(1.0)
        res = uac.wait()
        uas.stop()
        assert res.successful == 400 and res.failed == 0, res.out + px.log_tail()
        # the retired workers finish their transactions, then leave
        deadline = time.monotonic() + 40
        while set(px.worker_pids()) & before and time.monotonic() < deadline:
            time.sleep(0.2)
        after = set(px.worker_pids())
        assert len(after) == 2 and not (after & before), (before, after)
        assert "reload done" in px.log_tail(100)
    finally:
        px.close()


@pytest.mark.skipif(not sipprun.available(), reason="SIPp (sip-tester) not installed")
def test_sigkill_worker_under_load_respawns_others_unaffected():
    px = KampxProcess(children=3, config={"tm": {"fr_timer_ms": 3000}})
    px.env["KAMPX_NEXT_HOP"] = f"{px.addrs.phone}:5062"
    px.start()
    try:
        uas, uac = _calls(px, calls=400, rate=100)
        time.sleep(1.5)
        victim = px.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        res = uac.wait()
        uas.stop()
        # only the calls whose transactions the dead worker owned may fail
        assert res.successful + res.failed == 400
        assert res.failed <= 40, res.out
        pids = px.worker_pids()
        assert len(pids) == 3 and victim not in pids
        with SipClient(px.addrs.client, 0, proxy=px.addr) as c:      # still answering
            req = c.request("OPTIONS", f"sip:{px.addrs.proxy}")
            c.send(req)
            assert c.final(req, 2.0).status == 200
        assert "died (signal SIGKILL); respawning" in px.log_tail(100)
    finally:
        px.close()


@pytest.mark.skipif(not sipprun.available(), reason="SIPp (sip-tester) not installed")
@pytest.mark.parametrize("before_n,after_n", [(3, 2), (2, 3)])
def test_reload_changing_children_keeps_every_call(before_n, after_n):
    """[core] children changed by a reload: the reply sockets were bound for the first
    count. Fewer workers must not crash the supervisor (a retiring worker's slot is gone),
    more must not steer replies outside the socket group (the kernel would hash datagrams
    onto sockets nobody reads): every call before and after the reload completes."""
    px = KampxProcess(children=before_n, config={"tm": {"fr_timer_ms": 3000}})
    px.env["KAMPX_NEXT_HOP"] = f"{px.addrs.phone}:5062"
    px.start()
    try:
        with open(px.config_path) as f:
            text = f.read()
        with open(px.config_path, "w") as f:
            f.write(text.replace(f"children = {before_n}", f"children = {after_n}"))
        os.kill(px.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 20
        while "reload done" not in px.log_tail(100) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "reload done" in px.log_tail(100), px.log_tail()
        uas, uac = _calls(px, calls=200, rate=100)
        res = uac.wait()
        uas.stop()
        assert px.proc.poll() is None, px.log_tail()
        assert res.successful == 200 and res.failed == 0, res.out + px.log_tail()
    finally:
        px.close()
