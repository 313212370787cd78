"""No open relay: a request from a source that is neither the carrier nor authenticated never
leaves the proxy, whatever it asks for. A UAS on the carrier gateway's address (where the
built-in script sends outbound calls) and one on the phones' address record everything that
reaches them; each test checks they got nothing."""
from __future__ import annotations

import time

import pytest

from authkit import REALM, AuthProxy
from sipclient import UAS, SipClient, ack_for, authorize, cancel_for, in_dialog

USERS = {"60001": "pw-60001", "60002": "pw-60002"}
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 9 RTP/AVP 0\r\n")
QUIET = 0.6


@pytest.fixture(scope="module")
def px():
    p = AuthProxy(USERS).start()
    yield p
    p.close()


@pytest.fixture
def gw(px):
    u = UAS(*px.gateway, user="gw").start()
    yield u
    u.stop()


@pytest.fixture
def phone(px):
    u = UAS(px.addrs.phone, 0, user="phone").start()
    yield u
    u.stop()


@pytest.fixture
def stranger(px):
    """A source in no address group, with no credentials."""
    with SipClient(px.addrs.client, 0, proxy=px.addr, user="mallory", domain=REALM) as c:
        yield c


def _nothing_relayed(*uases):
    time.sleep(QUIET)
    for u in uases:
        assert u.requests() == [], [m.first_line for m in u.requests()]


def _final(c, req):
    return c.response(req, 1.0, skip_provisional=True)


def test_unauthenticated_call_out_is_challenged_not_relayed(px, stranger, gw):
    inv = stranger.request("INVITE", f"sip:15551230000@{REALM}", body=SDP)
    stranger.send(inv)
    r = _final(stranger, inv)
    assert r.status == 407
    stranger.send(ack_for(inv, r))
    _nothing_relayed(gw)


def test_call_addressed_straight_at_the_gateway(px, stranger, gw):
    inv = stranger.request("INVITE", f"sip:15551230001@{px.gateway[0]}:{px.gateway[1]}", body=SDP)
    stranger.send(inv)
    assert _final(stranger, inv).status == 407
    _nothing_relayed(gw)


def test_preloaded_route_to_the_gateway(px, stranger, gw):
    route = f"<sip:{px.gateway[0]}:{px.gateway[1]};lr>"
    inv = stranger.request("INVITE", f"sip:15551230002@{REALM}", body=SDP,
                           headers=[("Route", route)])
    stranger.send(inv)
    assert _final(stranger, inv).status == 407
    _nothing_relayed(gw)


def test_preloaded_route_is_removed_even_when_authenticated(px, gw, phone):
    """An authenticated call goes where the script sends it (the carrier), never to a hop a
    preloaded Route names (here: the phones' address)."""
    with SipClient(px.addrs.client, 0, proxy=px.addr, user="60001", domain=REALM) as c:
        route = f"<sip:{phone.ip}:{phone.port};lr>"
        inv = c.request("INVITE", f"sip:15551230003@{REALM}", body=SDP, headers=[("Route", route)])
        c.send(inv)
        ch = _final(c, inv)
        c.send(ack_for(inv, ch))
        inv2 = authorize(inv, ch, "60001", USERS["60001"])
        c.send(inv2)
        got = gw.expect("INVITE")
        assert got.get("route") is None
        ok = c.expect_response(inv2, status=200)
        c.send(in_dialog("ACK", inv2, ok))
        gw.expect("ACK")        # before the next test's gateway takes this address
        assert phone.requests() == []


def test_fake_in_dialog_request_without_our_route(px, stranger, gw):
    """A To-tag does not open a door: without the proxy's Route it is 404 Not here."""
    inv = stranger.request("INVITE", f"sip:15551230004@{px.gateway[0]}:{px.gateway[1]}",
                           to_tag="forged", body=SDP,
                           headers=[("Route", f"<sip:{px.gateway[0]}:{px.gateway[1]};lr>")])
    stranger.send(inv)
    r = _final(stranger, inv)
    assert (r.status, r.reason) == (404, "Not here")
    _nothing_relayed(gw)


@pytest.mark.parametrize("method", ["MESSAGE", "SUBSCRIBE", "OPTIONS", "BYE", "INFO", "NOTIFY",
                                    "PUBLISH", "REFER"])
def test_other_methods_are_not_implemented(px, stranger, gw, method):
    req = stranger.request(method, f"sip:15551230005@{px.gateway[0]}:{px.gateway[1]}",
                           body="x", content_type="text/plain")
    stranger.send(req)
    r = _final(stranger, req)
    assert (r.status, r.reason) == (501, "Not Implemented")
    _nothing_relayed(gw)


def test_stray_ack_and_cancel_go_nowhere(px, stranger, gw):
    inv = stranger.request("INVITE", f"sip:15551230006@{px.gateway[0]}:{px.gateway[1]}", body=SDP)
    stranger.send(cancel_for(inv))
    ack = stranger.request("ACK", f"sip:15551230006@{px.gateway[0]}:{px.gateway[1]}")
    stranger.send(ack)
    assert stranger.quiet(QUIET) == []
    _nothing_relayed(gw)


def test_credentials_for_another_realm_do_not_count(px, gw):
    """Valid credentials, but for a realm other than the From domain the script checks."""
    with SipClient(px.addrs.client, 0, proxy=px.addr, user="60002", domain=REALM) as c:
        inv = c.request("INVITE", f"sip:15551230007@{REALM}", body=SDP)
        c.send(inv)
        ch = _final(c, inv)
        c.send(ack_for(inv, ch))
        inv2 = authorize(inv, ch, "60002", USERS["60002"], realm="other.test")
        c.send(inv2)
        assert _final(c, inv2).status == 407
    _nothing_relayed(gw)


def test_register_is_never_relayed(px, stranger, gw):
    """A REGISTER for another domain is answered here (challenged), not forwarded."""
    req = stranger.request("REGISTER", f"sip:{px.gateway[0]}:{px.gateway[1]}",
                           from_uri=f"sip:60001@{px.gateway[0]}", expires=60)
    stranger.send(req)
    assert _final(stranger, req).status == 401
    _nothing_relayed(gw)
