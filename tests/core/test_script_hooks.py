"""Route-script hooks on the wire: failure_route (serial forking to a second destination),
reply_route (dropping a provisional), and a worker that cannot boot."""
from __future__ import annotations

import subprocess
import time

import pytest

from kampxproc import KampxProcess, kampx_cmd
from sipclient import UAS, Behaviour, SipClient

pytestmark = [pytest.mark.wire, pytest.mark.timeout(60)]

FAILOVER = '''\
import os
from kampx.routing import *

PRIMARY, BACKUP = os.environ["KX_PRIMARY"], os.environ["KX_BACKUP"]

def request_route(msg):
    if is_method("OPTIONS") and is_myself():
        sl_send_reply(200, "Keepalive")
        exit()
    if has_totag():
        if loose_route():
            t_relay()
        exit()
    record_route()
    rewritehostport(PRIMARY)
    t_relay()

def failure_route(msg):
    # the primary refused the call: try the backup (serial forking, Kamailio's t_on_failure)
    if t_reply_code() >= 500 and not t_is_canceled():
        rewritehostport(BACKUP)
        t_relay()

def reply_route(msg):
    if msg.status == 183:
        drop()
'''


def _proxy(tmp_path, script_text, env):
    script = tmp_path / "script.py"
    script.write_text(script_text)
    px = KampxProcess(script=str(script), children=2, config={"tm": {"fr_timer_ms": 2000}})
    px.env.update(env)
    return px


def test_failure_route_serial_forks_to_the_backup(tmp_path):
    px = _proxy(tmp_path, FAILOVER, {})
    with UAS(px.addrs.phone, 5062, behaviour=Behaviour(final=503)) as primary, \
            UAS(px.addrs.phone, 5063, behaviour=Behaviour(final=200)) as backup:
        px.env.update(KX_PRIMARY=f"{px.addrs.phone}:5062", KX_BACKUP=f"{px.addrs.phone}:5063")
        px.start()
        try:
            with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
                req = c.request("INVITE", f"sip:bob@{px.addrs.proxy}", body="v=0\r\n")
                c.send(req)
                final = c.final(req, 5.0)
                assert final.status == 200, px.log_tail()
            assert primary.wait_for("INVITE") is not None
            assert backup.wait_for("INVITE") is not None
            assert primary.wait_for("ACK") is not None       # our hop-by-hop ACK for its 503
        finally:
            px.close()


def _provisional_reaches_caller(tmp_path, script_text) -> bool:
    """A 183 the callee's side sends for the relayed INVITE: does the caller see it?"""
    from sipclient import response_to
    px = _proxy(tmp_path, script_text, {})
    with UAS(px.addrs.phone, 5062, behaviour=Behaviour(final=200, send_180=False, delay=0.5)) as uas, \
            UAS(px.addrs.phone, 5063):
        px.env.update(KX_PRIMARY=f"{px.addrs.phone}:5062", KX_BACKUP=f"{px.addrs.phone}:5063")
        px.start()
        try:
            with SipClient(px.addrs.client, 0, proxy=px.addr) as c, \
                    SipClient(px.addrs.phone, 0) as callee_side:
                req = c.request("INVITE", f"sip:bob@{px.addrs.proxy}", body="v=0\r\n")
                c.send(req)
                inv = uas.wait_for("INVITE")
                callee_side.send(response_to(inv, 183, "Session Progress", to_tag="x183"),
                                 dest=px.addr)
                got = c.response(req, 0.4, status=183)
                assert c.final(req, 3.0).status == 200
                return got is not None
        finally:
            px.close()


def test_reply_route_drop_stops_a_provisional(tmp_path):
    assert not _provisional_reaches_caller(tmp_path, FAILOVER)
    # the control: without the drop() the same 183 is relayed
    assert _provisional_reaches_caller(tmp_path, FAILOVER.replace("        drop()", "        pass"))


def test_worker_that_cannot_boot_stops_the_proxy(tmp_path):
    script = tmp_path / "noboot.py"
    script.write_text("from kampx.routing import *\n\n"
                      "def child_init(worker_id):\n    raise RuntimeError('no licence file')\n\n"
                      "def request_route(msg):\n    exit()\n")
    px = KampxProcess(script=str(script), children=2)
    try:
        t0 = time.monotonic()
        r = subprocess.run(kampx_cmd() + ["run", "--config", px.config_path], capture_output=True,
                           text=True, env=px.env, cwd=px.workdir, timeout=30)
        assert r.returncode != 0
        assert time.monotonic() - t0 < 10, "it must stop, not respawn in a loop"
        assert "cannot boot: no licence file" in r.stderr
        assert r.stderr.count("cannot boot") <= 2            # no respawn loop
    finally:
        px.close()
