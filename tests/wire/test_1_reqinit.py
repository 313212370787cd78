"""Contract item 1: the request checks, in order (scanner drop, Max-Forwards, OPTIONS
keepalive, sanity), and malformed input that must never crash the proxy."""
from __future__ import annotations

import pytest

from sipclient import SipClient, header_params
from wirekit import QUIET, assert_reply_form, carrier_invite, register_phone

SCANNERS = ["friendly-scanner", "sipcli/v1.8", "VaxSIPUserAgent/3.1", "Friendly-Scanner",
            "SIPCLI", "x friendly-scanner y"]


def alive(c: SipClient, target) -> None:
    """The proxy still answers: an OPTIONS keepalive gets 200."""
    req = c.request("OPTIONS", f"sip:{target.addrs.proxy}", contact=None)
    c.send(req)
    r = c.response(req, 2)
    assert r is not None and r.status == 200, "the proxy stopped answering"


# -- scanner drop ---------------------------------------------------------------------------

@pytest.mark.parametrize("ua", SCANNERS)
def test_scanner_user_agent_dropped_silently(client, target, ua):
    req = client.request("OPTIONS", f"sip:{target.addrs.proxy}", contact=None, user_agent=ua)
    client.send(req)
    assert client.response(req, QUIET) is None
    alive(client, target)


def test_scanner_register_gets_no_challenge(client, target, sub):
    req = client.request("REGISTER", f"sip:{target.realm}", from_uri=f"sip:{sub.user}@{target.realm}",
                         expires=60, user_agent="friendly-scanner")
    client.send(req)
    assert client.response(req, QUIET) is None


def test_scanner_dropped_before_max_forwards(client, target):
    """Scanner check comes first: even Max-Forwards 0 gets no 483."""
    req = client.request("OPTIONS", f"sip:{target.addrs.proxy}", contact=None,
                         user_agent="sipcli", max_forwards=0)
    client.send(req)
    assert client.response(req, QUIET) is None


def test_scanner_from_carrier_dropped(carrier, target, client, sub, make_phone):
    """The carrier group is no exemption: a scanner INVITE from the carrier's address gets
    nothing (no 100, no 404) and is not relayed."""
    phone = make_phone(sub.user)
    register_phone(client, target, sub, phone)
    req = carrier_invite(carrier, target, sub.user, user_agent="VaxSIPUserAgent")
    assert carrier.response(req, QUIET) is None
    assert phone.requests("INVITE") == []


# -- Max-Forwards -----------------------------------------------------------------------------

@pytest.mark.parametrize("mf", ["0", "abc", "-1", "65536"])
def test_max_forwards_zero_or_not_a_number_gets_483(client, target, sub, mf):
    req = client.request("MESSAGE", f"sip:{sub.user}@{target.realm}", contact=None,
                         max_forwards=mf, body="hi", content_type="text/plain")
    client.send(req)
    r = client.expect_response(req)
    assert_reply_form(r, req, 483, "Too Many Hops")


def test_max_forwards_checked_before_keepalive(client, target):
    req = client.request("OPTIONS", f"sip:{target.addrs.proxy}", contact=None, max_forwards=0)
    client.send(req)
    r = client.expect_response(req)
    assert_reply_form(r, req, 483, "Too Many Hops")


@pytest.mark.parametrize("sent, relayed", [(None, "10"), ("1", "0"), ("70", "69"), ("2", "1"),
                                           ("71", "70"), ("300", "70"), ("65535", "70")])
def test_max_forwards_on_relayed_request(carrier, target, client, sub, make_phone, sent, relayed):
    """Missing -> inserted as 10; otherwise decremented by one (1 is forwarded as 0), and
    capped at 70 (Kamailio's maxfwd max_limit; values up to 65535 are numbers to it)."""
    phone = make_phone(sub.user)
    register_phone(client, target, sub, phone)
    carrier_invite(carrier, target, sub.user, max_forwards=sent)
    inv = phone.expect("INVITE")
    assert inv.get_all("max-forwards") == [relayed]


# -- OPTIONS keepalive ---------------------------------------------------------------------

@pytest.mark.parametrize("form", ["ip", "ip:port", "realm"])
def test_options_keepalive(client, target, form):
    host = {"ip": target.addrs.proxy, "ip:port": f"{target.addrs.proxy}:5060", "realm": target.realm}[form]
    req = client.request("OPTIONS", f"sip:{host}", contact=None)
    client.send(req)
    r = client.expect_response(req)
    assert_reply_form(r, req, 200, "Keepalive")
    assert r.get("via") == req.get("via").replace(";rport;", f";rport={client.port};") + f";received={client.ip}"


def test_options_with_user_part_is_not_implemented(client, target, sub):
    req = client.request("OPTIONS", f"sip:{sub.user}@{target.realm}", contact=None)
    client.send(req)
    r = client.expect_response(req)
    assert_reply_form(r, req, 501, "Not Implemented")


def test_options_keepalive_comes_before_sanity(client, target):
    """Keepalive is answered before sanity runs: a CSeq method mismatch still gets 200."""
    req = client.request("OPTIONS", f"sip:{target.addrs.proxy}", contact=None, cseq_method="INFO")
    client.send(req)
    r = client.expect_response(req)
    assert (r.status, r.reason) == (200, "Keepalive")


# -- sanity_check("1511", "7") --------------------------------------------------------------

def _message(client, target, sub, **kw):
    return client.request("MESSAGE", f"sip:{sub.user}@{target.realm}", contact=None,
                          body=kw.pop("body", "hello"), content_type="text/plain", **kw)


def test_sanity_cseq_method_mismatch(client, target, sub):
    req = _message(client, target, sub, cseq_method="INFO")
    client.send(req)
    r = client.recv(2, lambda m: m.branch == req.branch)
    assert r is not None
    assert (r.status, r.reason) == (400, "CSeq method does not match request method"), r.first_line


@pytest.mark.parametrize("cseq", ["abc MESSAGE", "1a MESSAGE", "-1 MESSAGE", "99999999999 MESSAGE"])
def test_sanity_cseq_number_illegal(client, target, sub, cseq):
    req = _message(client, target, sub)
    req.set("CSeq", cseq)
    client.send(req)
    r = client.recv(2, lambda m: m.branch == req.branch)
    assert r is not None
    assert (r.status, r.reason) == (400, "CSeq number is illegal"), r.first_line


@pytest.mark.parametrize("length", [0, 2, 50])
def test_sanity_content_length_mismatch(client, target, sub, length):
    req = _message(client, target, sub, body="hello world")
    req.set_content_length(length)
    client.send(req)
    r = client.recv(2, lambda m: m.branch == req.branch)
    assert r is not None
    assert (r.status, r.reason) == (400, "Content-Length mis-match"), r.first_line


@pytest.mark.parametrize("ruri", ["http://example.test/x", "mailto:someone@example.test", "foo"])
def test_sanity_bad_request_uri_scheme(client, target, ruri):
    req = client.request("MESSAGE", ruri, to_uri=f"sip:someone@{target.realm}", contact=None,
                         body="x", content_type="text/plain")
    client.send(req)
    r = client.recv(2, lambda m: m.branch == req.branch)
    assert r is not None
    assert (r.status, r.reason) == (400, "Bad Request URI"), r.first_line


@pytest.mark.parametrize("method", ["MESSAGE", "REGISTER"])
def test_sanity_expires_illegal(client, target, sub, method):
    if method == "REGISTER":
        req = client.request("REGISTER", f"sip:{target.realm}", from_uri=f"sip:{sub.user}@{target.realm}",
                             headers=[("Expires", "soon")])
    else:
        req = _message(client, target, sub, headers=[("Expires", "soon")])
    client.send(req)
    r = client.recv(2, lambda m: m.branch == req.branch)
    assert r is not None
    assert (r.status, r.reason) == (400, "Expires value is illegal"), r.first_line


def test_sanity_reply_form(client, target, sub):
    """A sanity 400 is an ordinary stateless reply: Via echoed with received/rport, To-tag."""
    req = _message(client, target, sub, cseq_method="INFO")
    client.send(req)
    r = client.recv(2, lambda m: m.branch == req.branch)
    assert_reply_form(r, req, 400, "CSeq method does not match request method")


# -- malformed input: never a crash ---------------------------------------------------------

@pytest.mark.parametrize("missing", ["call-id", "from", "to", "cseq"])
def test_missing_mandatory_header(client, target, sub, missing):
    req = _message(client, target, sub)
    req.remove(missing)
    client.send(req)
    r = client.recv(QUIET, lambda m: m.branch == req.branch)
    assert r is None or r.status == 400, r.first_line
    alive(client, target)


def test_missing_via(client, target, sub):
    req = _message(client, target, sub)
    req.remove("via")
    client.send(req)
    assert client.quiet(QUIET) == []
    alive(client, target)


@pytest.mark.parametrize("data", [
    b"", b"\r\n\r\n", b"hello world", b"\x00\xff" * 100, b"INVITE\r\n\r\n",
    b"SIP/2.0 200 OK\r\n\r\n", b"INVITE sip:x SIP/3.0\r\nVia: garbage\r\n\r\n",
    b"REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9\r\nContent-Length: 99999\r\n\r\n",
])
def test_garbage_datagram(client, target, data):
    client.send(data)
    assert client.quiet(QUIET) == []
    alive(client, target)


def test_stray_ack_without_transaction(client, target, sub, make_phone):
    """An ACK out of nowhere (no To-tag, no transaction): no reply, not relayed."""
    phone = make_phone(sub.user)
    register_phone(client, target, sub, phone)
    req = client.request("ACK", f"sip:{sub.user}@{target.realm}", contact=None)
    client.send(req)
    assert client.quiet(QUIET) == []
    assert phone.requests("ACK") == []
    alive(client, target)


def test_response_to_nothing_is_ignored(client, target):
    """A reply for no transaction of the proxy: nothing happens."""
    client.send(f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {target.addrs.proxy};branch=z9hG4bKnothing\r\n"
                f"From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: stray@x\r\n"
                f"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert client.quiet(QUIET) == []
    alive(client, target)
