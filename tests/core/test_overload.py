"""Overload control on the wire (kampx/overload.py): a worker that falls behind refuses new
INVITEs and REGISTERs with 503 + Retry-After and serves everything else; it accepts again
as soon as it has caught up.

A worker is made to fall behind for certain by stopping it (SIGSTOP) while requests arrive:
they wait in the socket, and the batch it reads on SIGCONT starts with a datagram that
waited longer than [overload] queue_delay_ms."""
from __future__ import annotations

import os
import signal
import time

import pytest

from kampxproc import KampxProcess
from sipclient import UAS, Behaviour, SipClient, cancel_for, in_dialog

pytestmark = [pytest.mark.wire, pytest.mark.timeout(60)]

STALL_S = 0.4


def start(overload: dict | None = None) -> KampxProcess:
    px = KampxProcess(children=1, config={"overload": overload or {}})
    px.env["KAMPX_NEXT_HOP"] = f"{px.addrs.phone}:5062"
    return px.start()


def stalled(px: KampxProcess, send) -> None:
    """Run send() while the only worker is stopped, then let it go on."""
    (pid,) = px.worker_pids()
    os.kill(pid, signal.SIGSTOP)
    try:
        send()
        time.sleep(STALL_S)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_behind_refuses_new_invites_and_registers_and_serves_the_rest():
    px = start()
    try:
        with UAS(px.addrs.phone, 5062, behaviour=Behaviour(final=None)) as phone, \
                SipClient(px.addrs.client, 0, proxy=px.addr, user="alice") as c:
            # a call accepted before the overload: ringing
            ringing = c.request("INVITE", f"sip:bob@{px.addrs.proxy}", body="v=0\r\n")
            c.send(ringing)
            assert c.expect_response(ringing, status=180, timeout=3)
            phone.expect("INVITE")
            new_call = c.request("INVITE", f"sip:carol@{px.addrs.proxy}", body="v=0\r\n")
            reg = c.request("REGISTER", f"sip:{px.addrs.proxy}", contact=c.contact_uri("alice"),
                            expires=60)
            keepalive = c.request("OPTIONS", f"sip:{px.addrs.proxy}")
            indialog = c.request("INFO", f"sip:bob@{px.addrs.proxy}", to_tag="t-1")

            def send():
                for req in (new_call, reg, keepalive, indialog):
                    c.send(req)
                c.send(ringing)         # a retransmission of the accepted INVITE

            stalled(px, send)
            for req in (new_call, reg):
                r = c.final(req, 3)
                assert r.status == 503, str(r)
                assert r.reason == "Service Unavailable"
                assert r.get("retry-after") == "5"
            assert c.final(keepalive, 3).status == 200
            # the in-dialog request went on to the script (a 404 from the static relay, not
            # a 503 from overload control)
            assert c.final(indialog, 3).status == 404
            # the accepted call: its retransmission answered from its transaction, and it
            # completes normally
            assert c.expect_response(ringing, status=180, timeout=3)
            assert not phone.requests("REGISTER") and len(phone.requests("INVITE")) == 1
            c.send(cancel_for(ringing))
            assert c.final(ringing, 3).status == 487
            # caught up: the next call is accepted
            after = c.request("INVITE", f"sip:dave@{px.addrs.proxy}", body="v=0\r\n")
            c.send(after)
            assert c.expect_response(after, status=180, timeout=3)
            phone.expect("INVITE", count=2)
        assert px.metric("kampx_core_overload_rejected_total") == 2
        assert "overloaded: requests waited" in open(px.log_path).read()
    finally:
        px.close()


def test_the_episode_ends_with_one_log_line_and_the_count():
    px = start()
    try:
        with SipClient(px.addrs.client, 0, proxy=px.addr, user="alice") as c:
            reqs = [c.request("INVITE", f"sip:u{i}@{px.addrs.proxy}", body="v=0\r\n")
                    for i in range(5)]
            stalled(px, lambda: [c.send(r) for r in reqs])
            assert all(c.final(r, 3).status == 503 for r in reqs)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                with open(px.log_path) as f:
                    log = f.read()
                if "overload over" in log:
                    break
                time.sleep(0.1)
        assert log.count("overloaded: requests waited") == 1, log
        assert "overload over: 5 new requests refused" in log
    finally:
        px.close()


def test_disabled_serves_everything_however_late():
    px = start({"enabled": False})
    try:
        with UAS(px.addrs.phone, 5062) as phone, \
                SipClient(px.addrs.client, 0, proxy=px.addr, user="alice") as c:
            inv = c.request("INVITE", f"sip:bob@{px.addrs.proxy}", body="v=0\r\n")
            stalled(px, lambda: c.send(inv))
            ok = c.expect_response(inv, status=200, timeout=3)
            c.send(in_dialog("ACK", inv, ok))
            phone.expect("ACK")
        assert px.metric("kampx_core_overload_rejected_total") == 0
    finally:
        px.close()


def test_a_threshold_above_the_stall_refuses_nothing():
    px = start({"queue_delay_ms": int(STALL_S * 1000 * 4), "methods": ["INVITE"]})
    try:
        with UAS(px.addrs.phone, 5062), \
                SipClient(px.addrs.client, 0, proxy=px.addr, user="alice") as c:
            inv = c.request("INVITE", f"sip:bob@{px.addrs.proxy}", body="v=0\r\n")
            stalled(px, lambda: c.send(inv))
            assert c.expect_response(inv, status=200, timeout=3)
    finally:
        px.close()
