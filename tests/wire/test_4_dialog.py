"""Contract item 4: requests inside a dialog (they carry a To-tag)."""
from __future__ import annotations

import time

from sipclient import ack_for, in_dialog, uri_host_port, uri_of
from wirekit import QUIET, answered_call, assert_reply_form, carrier_invite, register_phone


def _call(carrier, target, client, sub, make_phone, **behaviour):
    phone = make_phone(sub.user, **behaviour)
    register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    return phone, inv


def test_ack_for_2xx_loose_routed(carrier, target, client, sub, make_phone):
    phone, inv = _call(carrier, target, client, sub, make_phone)
    ok = carrier.expect_response(inv, status=200)
    assert ok.get_all("record-route") == [f"<sip:{target.addrs.proxy};lr>"]
    ack = in_dialog("ACK", inv, ok)
    carrier.send(ack)
    got = phone.expect("ACK")
    assert got.uri == phone.contact
    assert got.get_all("route") == [], "the proxy's own Route must be consumed"
    assert carrier.quiet(QUIET, lambda m: m.cseq[1] == "ACK") == [], "an ACK is never answered"


def test_bye_loose_routed_to_callee(carrier, target, client, sub, make_phone):
    phone, inv = _call(carrier, target, client, sub, make_phone)
    ok, _ = answered_call(carrier, inv, phone)
    bye = in_dialog("BYE", inv, ok)
    carrier.send(bye)
    got = phone.expect("BYE")
    assert got.uri == phone.contact
    assert got.get_all("route") == []
    assert got.vias[0].startswith(f"SIP/2.0/UDP {target.addrs.proxy};branch=z9hG4bK")
    r = carrier.expect_response(bye)
    assert (r.status, r.reason) == (200, "OK")


def test_bye_from_callee_loose_routed_to_caller(carrier, target, client, sub, make_phone):
    """The callee's BYE goes back through the proxy (Record-Route) to the caller's Contact."""
    phone, inv = _call(carrier, target, client, sub, make_phone)
    ok, got_invite_ack = answered_call(carrier, inv, phone)
    relayed_inv = phone.requests("INVITE")[0]
    rr = relayed_inv.get_all("record-route", split=True)
    bye = (f"BYE {uri_of(relayed_inv.get('contact'))} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP {phone.ip}:{phone.port};rport;branch=z9hG4bKcalleebye{phone.port}\r\n"
           f"Max-Forwards: 70\r\n"
           + "".join(f"Route: {r}\r\n" for r in rr)
           + f"From: {ok.get('to')}\r\nTo: {relayed_inv.get('from')}\r\n"
           f"Call-ID: {relayed_inv.call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n")
    phone.send_raw(bye.encode(), target.proxy)
    got = carrier.expect(2, lambda m: m.method == "BYE", what="the callee's BYE")
    assert got.uri == uri_of(inv.get("contact"))
    assert got.get_all("route") == []


def test_in_dialog_without_our_route_gets_404_not_here(carrier, target, client, sub, make_phone):
    phone, inv = _call(carrier, target, client, sub, make_phone)
    ok, _ = answered_call(carrier, inv, phone)
    info = in_dialog("INFO", inv, ok)
    info.remove("route")
    carrier.send(info)
    r = carrier.expect_response(info)
    assert_reply_form(r, info, 404, "Not here")
    time.sleep(0.2)
    assert phone.requests("INFO") == []


def test_in_dialog_out_of_nowhere_gets_404_not_here(client, target, sub):
    """A BYE with a To-tag and no Route, for no call at all."""
    req = client.request("BYE", f"sip:{sub.user}@{target.realm}", to_tag="deadbeef", contact=None)
    client.send(req)
    r = client.expect_response(req)
    assert_reply_form(r, req, 404, "Not here")
    assert r.to_tag == "deadbeef", "the request's To-tag is kept"


def test_stray_ack_with_to_tag_dropped(carrier, target, client, sub, make_phone):
    """An ACK with a To-tag, no Route and no transaction: dropped, no reply."""
    phone = make_phone(sub.user)
    register_phone(client, target, sub, phone)
    req = carrier.request("ACK", phone.contact, to_tag="0badc0de", contact=None)
    carrier.send(req)
    assert carrier.quiet(QUIET) == []
    assert phone.requests() == []


def test_ack_for_2xx_without_route_not_relayed(carrier, target, client, sub, make_phone):
    """Kamailio: an ACK for a 2xx that skips the Route set is not matched to the INVITE
    transaction and is dropped (the route set is how a 2xx ACK reaches the callee)."""
    phone, inv = _call(carrier, target, client, sub, make_phone)
    ok = carrier.expect_response(inv, status=200)
    ack = in_dialog("ACK", inv, ok)
    ack.remove("route")
    carrier.send(ack)
    assert carrier.quiet(QUIET) == []
    assert phone.requests("ACK") == []


def test_ack_for_non_2xx_absorbed(carrier, target, client, sub, make_phone):
    """The caller's ACK for a relayed 486 matches the transaction and ends there: the callee
    gets exactly one ACK, the proxy's own, on the INVITE's branch."""
    phone, inv = _call(carrier, target, client, sub, make_phone, final=486)
    final = carrier.expect_response(inv, skip_provisional=True)
    assert final.status == 486
    carrier.send(ack_for(inv, final))
    time.sleep(QUIET)
    relayed = phone.requests("INVITE")[0]
    acks = phone.requests("ACK")
    assert len(acks) == 1
    assert acks[0].branch == relayed.branch
    assert acks[0].uri == relayed.uri
    assert carrier.quiet(0.1, lambda m: m.cseq[1] == "ACK") == []


def test_reinvite_loose_routed(carrier, target, client, sub, make_phone):
    phone, inv = _call(carrier, target, client, sub, make_phone)
    ok, _ = answered_call(carrier, inv, phone)
    reinv = in_dialog("INVITE", inv, ok)
    carrier.send(reinv)
    got = phone.expect("INVITE", count=2)
    assert got.to_tag == ok.to_tag
    r = carrier.expect_response(reinv, status=200)
    carrier.send(in_dialog("ACK", reinv, r, routes=[f"<sip:{target.addrs.proxy};lr>"]))
    phone.expect("ACK", count=2)
