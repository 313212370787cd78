"""Issue 10 item 2: in-dialog requests are relayed only within a dialog kampx Record-Routed
and saw established (kampx/dialog.py).

The attack of the report: a To-tag and `Route: <sip:PROXY;lr>` (or the realm alias with any
port, or the strict-route form with the proxy as Request-URI) in front of a third host,
from any source, no credentials: INVITE, MESSAGE, BYE, INFO, ACK all went out to the third
host. Now they get 404 Not here (the built-in script's answer when loose_route() refuses;
an ACK gets nothing), reach nobody, and are counted. Real dialogs keep working in both
directions, and across a restart of the proxy."""
from __future__ import annotations

import os
import signal
import time

import pytest

from authkit import REALM, AuthProxy
from kampxproc import KampxProcess
from sipclient import UAS, SipClient, in_dialog, response_to, route_set, uri_of

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
QUIET = 0.6
CALLEE = "60001"


def _proxy(**dialog) -> AuthProxy:
    config = {"dialog": dialog} if dialog else None
    return AuthProxy({CALLEE: "pw-60001"}, config=config).start()


@pytest.fixture(scope="module")
def px():
    p = _proxy()
    yield p
    p.close()


@pytest.fixture
def victim(px):
    """The third host the forged requests aim at (a UAS that records what reaches it)."""
    u = UAS(px.addrs.phone, 0, user="victim").start()
    yield u
    u.stop()


@pytest.fixture
def stranger(px):
    with SipClient(px.addrs.client, 0, proxy=px.addr, user="mallory", domain=REALM) as c:
        yield c


def _forged(c: SipClient, method: str, target: str, routes: list[str], ruri: str | None = None):
    return c.request(method, ruri or target, to_tag="forged-tag", body=SDP if method == "INVITE" else "",
                     headers=[("Route", r) for r in routes], contact=None)


def _attack(px, c, victim, method, ruri, routes, expect_reply=True):
    before = px.metric("kampx_dialog_rejected_requests_total")
    req = _forged(c, method, victim.contact, routes, ruri)
    c.send(req)
    if expect_reply:
        r = c.response(req, 1.0, skip_provisional=True)
        assert r is not None and (r.status, r.reason) == (404, "Not here"), r
    time.sleep(QUIET)
    assert victim.requests() == [], [m.first_line for m in victim.requests()]
    assert px.metric("kampx_dialog_rejected_requests_total") > before


@pytest.mark.parametrize("method", ["INVITE", "MESSAGE", "BYE", "INFO"])
def test_forged_in_dialog_request_via_our_route(px, stranger, victim, method):
    _attack(px, stranger, victim, method, victim.contact, [f"<sip:{px.addr[0]};lr>"])


def test_forged_ack_via_our_route_goes_nowhere(px, stranger, victim):
    _attack(px, stranger, victim, "ACK", victim.contact, [f"<sip:{px.addr[0]};lr>"],
            expect_reply=False)
    assert stranger.quiet(0.1) == [], "an ACK is never answered"


def test_forged_via_the_realm_alias_with_any_port(px, stranger, victim):
    _attack(px, stranger, victim, "MESSAGE", victim.contact, [f"<sip:{REALM}:5099;lr>"])


def test_forged_strict_route_form(px, stranger, victim):
    """The proxy as Request-URI (a strict router), the real target in the last Route."""
    _attack(px, stranger, victim, "INFO", f"sip:{px.addr[0]}", [f"<{victim.contact}>"])


def test_forged_from_the_carrier_too(px, victim):
    """The carrier's address is trusted for new calls, not for dialogs that never were."""
    with SipClient(px.addrs.carrier, 0, proxy=px.addr) as c:
        _attack(px, c, victim, "BYE", victim.contact, [f"<sip:{px.addr[0]};lr>"])


# -- real dialogs --------------------------------------------------------------------------------

def _call(px, phone: UAS, carrier: SipClient):
    """A call from the carrier to the subscriber (a static binding at `phone`), answered
    and ACKed: (INVITE, its 200, the INVITE as relayed to the phone)."""
    deadline = time.monotonic() + 5
    while px.ctl("ul", "add", CALLEE, phone.contact, "300", check=False).returncode != 0:
        assert time.monotonic() < deadline, "kampxctl ul add kept failing"
        time.sleep(0.1)                            # the ctl process may still be starting
    inv = carrier.request("INVITE", f"sip:{CALLEE}@{px.addr[0]}", body=SDP)
    carrier.send(inv)
    ok = carrier.expect_response(inv, status=200)
    carrier.send(in_dialog("ACK", inv, ok))
    phone.expect("ACK")
    return inv, ok, phone.requests("INVITE")[-1]


def _callee_request(method: str, phone: UAS, relayed, ok, cseq: int) -> bytes:
    """A request of the callee's, in the dialog: From = the 200's To (the callee's tag),
    To = the caller's From, Route = the Record-Route the callee received."""
    routes = relayed.get_all("record-route", split=True)
    return (f"{method} {uri_of(relayed.get('contact'))} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {phone.ip}:{phone.port};rport;branch=z9hG4bKcl{cseq}x{time.time_ns()}\r\n"
            f"Max-Forwards: 70\r\n" + "".join(f"Route: {r}\r\n" for r in routes)
            + f"From: {ok.get('to')}\r\nTo: {relayed.get('from')}\r\n"
            f"Call-ID: {relayed.call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
            ).encode()


@pytest.fixture
def phone(px):
    u = UAS(px.addrs.phone, 0, user=CALLEE).start()
    yield u
    u.stop()


def test_real_dialog_works_both_ways(px, phone):
    with SipClient(px.addrs.carrier, 0, proxy=px.addr) as carrier:
        inv, ok, relayed = _call(px, phone, carrier)
        before = px.metric("kampx_dialog_rejected_requests_total")
        reinv = in_dialog("INVITE", inv, ok)                      # the caller's re-INVITE
        carrier.send(reinv)
        r = carrier.expect_response(reinv, status=200)
        carrier.send(in_dialog("ACK", reinv, r, routes=route_set(ok)))
        phone.expect("ACK", count=2)
        phone.send_raw(_callee_request("INFO", phone, relayed, ok, 1), px.addr)   # callee's
        got = carrier.expect(2, lambda m: m.method == "INFO", what="the callee's INFO")
        assert got.uri == uri_of(inv.get("contact"))
        bye = in_dialog("BYE", inv, ok, cseq=5)                  # the caller hangs up
        carrier.send(bye)
        phone.expect("BYE")
        assert carrier.expect_response(bye, status=200)
        assert px.metric("kampx_dialog_rejected_requests_total") == before


def test_callee_reinvite_and_its_ack(px, phone):
    """The other direction of a 2xx ACK: the callee re-INVITEs, the caller answers 200
    through the proxy, and the callee's ACK (To-tag = the caller's tag) is relayed."""
    with SipClient(px.addrs.carrier, 0, proxy=px.addr) as carrier:
        inv, ok, relayed = _call(px, phone, carrier)
        phone.send_raw(_callee_request("INVITE", phone, relayed, ok, 1), px.addr)
        reinv = carrier.expect(2, lambda m: m.method == "INVITE", what="the callee's re-INVITE")
        carrier.send(response_to(reinv, 200, "OK", headers=[("Contact", f"<{inv.uri}>")]))
        deadline = time.monotonic() + 2
        while not any(not x.is_request and x.status == 200 and x.cseq[1] == "INVITE"
                      and x.call_id == relayed.call_id for x in list(phone.received)):
            assert time.monotonic() < deadline, "the caller's 200 did not reach the callee"
            time.sleep(0.05)
        phone.send_raw(_callee_request("ACK", phone, relayed, ok, 1), px.addr)
        carrier.expect(2, lambda m: m.method == "ACK", what="the callee's ACK")


def test_callee_hangs_up(px, phone):
    with SipClient(px.addrs.carrier, 0, proxy=px.addr) as carrier:
        inv, ok, relayed = _call(px, phone, carrier)
        phone.send_raw(_callee_request("BYE", phone, relayed, ok, 1), px.addr)
        carrier.expect(2, lambda m: m.method == "BYE", what="the callee's BYE")


def test_the_dialog_is_gone_after_its_bye_lingers(phone):
    """After a BYE the dialog admits requests for [dialog] linger_s (crossing BYEs), then
    nothing: the Call-ID and tags of a finished call cannot be reused to relay."""
    px = _proxy(linger_s=1)
    try:
        with SipClient(px.addrs.carrier, 0, proxy=px.addr) as carrier:
            phone_here = UAS(px.addrs.phone, 0, user=CALLEE).start()
            try:
                inv, ok, relayed = _call(px, phone_here, carrier)
                carrier.send(in_dialog("BYE", inv, ok, cseq=5))
                phone_here.expect("BYE")
                phone_here.send_raw(_callee_request("BYE", phone_here, relayed, ok, 1), px.addr)
                carrier.expect(2, lambda m: m.method == "BYE", what="a crossing BYE")
                time.sleep(1.5)
                info = in_dialog("INFO", inv, ok, cseq=6)
                carrier.send(info)
                r = carrier.expect_response(info)
                assert (r.status, r.reason) == (404, "Not here")
                assert phone_here.requests("INFO") == []
            finally:
                phone_here.stop()
    finally:
        px.close()


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_dialog_survives_a_restart_of_the_proxy(how):
    """A call established before kampx restarts can still be hung up through it: confirmed
    dialogs reach the database (within about a second) and are loaded at start."""
    px = _proxy()
    try:
        phone = UAS(px.addrs.phone, 0, user=CALLEE).start()
        with SipClient(px.addrs.carrier, 0, proxy=px.addr) as carrier:
            inv, ok, relayed = _call(px, phone, carrier)
            time.sleep(1.0)                                   # the write-behind interval
            if how == "sigkill":
                children = list(px.children())
                os.kill(px.proc.pid, signal.SIGKILL)       # first: it would respawn the others
                px.proc.wait(5)
                for pid in children:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + 5            # gone, and their sockets with them
                while any(os.path.exists(f"/proc/{pid}/fd/0") for pid in children):
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            else:
                assert px.stop() == 0
            KampxProcess.start(px)                    # the same database, not provisioned again
            assert "1 established dialogs loaded" in px.log_tail(100)
            bye = in_dialog("BYE", inv, ok, cseq=5)
            carrier.send(bye)
            phone.expect("BYE")
            assert carrier.expect_response(bye, status=200)
        phone.stop()
    finally:
        px.close()


def test_kamailio_behaviour_when_enforce_is_off():
    """The control: with [dialog] enforce = false (Kamailio's stock behaviour) the same
    forged request does go out to the third host, so the tests above would see a relay."""
    px = _proxy(enforce=False)
    try:
        victim = UAS(px.addrs.phone, 0, user="victim").start()
        try:
            with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
                c.send(_forged(c, "MESSAGE", victim.contact, [f"<sip:{px.addr[0]};lr>"]))
                victim.expect("MESSAGE")
        finally:
            victim.stop()
    finally:
        px.close()
