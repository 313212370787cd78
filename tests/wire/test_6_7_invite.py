"""Contract items 6 and 7: INVITEs from the carrier's address group and from users."""
from __future__ import annotations

import re
import time

from sipclient import ack_for, authorize, cancel_for, in_dialog, parse_challenge
from wirekit import (QUIET, SDP, answered_call, assert_reply_form, carrier_invite, register_phone,
                     user_invite)

TRYING = "trying -- your call is important to us"


# -- item 6: from the carrier ---------------------------------------------------------------

def test_carrier_invite_100_first_then_relayed_to_contact(carrier, target, client, sub, make_phone):
    phone = make_phone(sub.user)
    contact = register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    first = carrier.expect_response(inv)
    assert (first.status, first.reason) == (100, TRYING)
    assert first.to_tag is None, "Kamailio's 100 has no To-tag"
    got = phone.expect("INVITE")
    assert got.uri == contact
    ok, _ = answered_call(carrier, inv, phone)
    assert (ok.status, ok.reason) == (200, "OK") and ok.to_tag


def test_carrier_invite_not_challenged(carrier, target, client, sub, make_phone):
    phone = make_phone(sub.user)
    register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    assert carrier.quiet(0.5, lambda m: m.status in (401, 407)) == []
    phone.expect("INVITE")
    ok = carrier.expect_response(inv, status=200)
    carrier.send(in_dialog("ACK", inv, ok))


def test_carrier_invite_unregistered_gets_404(carrier, target, carrier_gw):
    inv = carrier_invite(carrier, target, "5550001111")
    r = carrier.expect_response(inv)
    assert_reply_form(r, inv, 404, "User not Registered")
    carrier.send(ack_for(inv, r))
    time.sleep(0.2)
    assert carrier_gw.requests() == [], "a carrier call must never be sent back to the carrier"


def test_carrier_invite_unregistered_no_100_before_404(carrier, target):
    """Kamailio answers 404 statelessly: the 404 is the only reply (no 100 before it)."""
    inv = carrier_invite(carrier, target, "5550002222")
    replies = carrier.quiet(QUIET)
    assert [(m.status, m.reason) for m in replies] == [(404, "User not Registered")]


def test_carrier_invite_reaches_every_binding(carrier, target, client, sub, make_phone):
    """Two registered devices: lookup() forks to both (Kamailio appends a branch per contact)."""
    a, b = make_phone(sub.user, final=None), make_phone(sub.user, final=None)
    register_phone(client, target, sub, a)
    register_phone(client, target, sub, b)
    inv = carrier_invite(carrier, target, sub.user)
    ia, ib = a.expect("INVITE"), b.expect("INVITE")
    assert ia.branch != ib.branch
    carrier.send(cancel_for(inv))
    final = carrier.expect_response(inv, skip_provisional=True, timeout=3)
    assert final.status == 487
    carrier.send(ack_for(inv, final))


# -- item 7: from users -------------------------------------------------------------------

def test_user_invite_challenged_with_407(client, target, sub):
    inv = client.request("INVITE", f"sip:5551234@{target.realm}", body=SDP)
    client.send(inv)
    r = client.expect_response(inv)
    assert_reply_form(r, inv, 407, "Proxy Authentication Required")
    value = r.get("proxy-authenticate")
    assert re.match(r'^Digest realm="' + re.escape(target.realm) + r'", nonce="[^"]+"', value), value
    assert r.get("www-authenticate") is None
    client.send(ack_for(inv, r))


def test_user_invite_wrong_password_challenged_again(client, target, sub):
    inv = client.request("INVITE", f"sip:5551234@{target.realm}", body=SDP)
    client.send(inv)
    ch = client.final(inv)
    client.send(ack_for(inv, ch))
    bad = authorize(inv, ch, sub.user, "wrong-" + sub.password)
    client.send(bad)
    r = client.final(bad)
    assert_reply_form(r, bad, 407, "Proxy Authentication Required")
    assert parse_challenge(r.get("proxy-authenticate"))["realm"] == target.realm
    client.send(ack_for(bad, r))


def test_user_invite_auth_user_must_be_from_user(client, target, sub, new_subscriber):
    other = new_subscriber()
    inv = client.request("INVITE", f"sip:5551234@{target.realm}", body=SDP)
    client.send(inv)
    ch = client.final(inv)
    client.send(ack_for(inv, ch))
    bad = authorize(inv, ch, other.user, other.password)
    client.send(bad)
    r = client.final(bad)
    assert r.status == 407
    client.send(ack_for(bad, r))


def test_user_invite_to_registered_user_relayed(client, target, sub, new_subscriber, make_phone,
                                                carrier_gw, make_client):
    callee = new_subscriber()
    phone = make_phone(callee.user)
    contact = register_phone(make_client(callee.user), target, callee, phone)
    _, inv = user_invite(client, target, sub, callee.user)
    got = phone.expect("INVITE")
    assert got.uri == contact
    assert got.get("proxy-authorization") is None, "credentials are consumed"
    ok = client.expect_response(inv, status=200)
    client.send(in_dialog("ACK", inv, ok))
    phone.expect("ACK")
    assert carrier_gw.requests() == [], "a registered number never goes to the carrier"


def test_user_invite_to_unregistered_number_goes_to_carrier(client, target, sub, carrier_gw):
    _, inv = user_invite(client, target, sub, "15557654321")
    got = carrier_gw.expect("INVITE")
    # user part kept, host and port rewritten to the carrier's
    assert got.uri == f"sip:15557654321@{target.addrs.carrier}:{target.carrier_gateway[1]}"
    assert got.get("proxy-authorization") is None
    ok = client.expect_response(inv, status=200)
    client.send(in_dialog("ACK", inv, ok))
    carrier_gw.expect("ACK")


def test_user_invite_to_unregistered_keeps_ruri_params(client, target, sub, carrier_gw):
    req = client.request("INVITE", f"sip:15550009999@{target.realm};user=phone", body=SDP)
    client.send(req)
    ch = client.final(req)
    client.send(ack_for(req, ch))
    inv = authorize(req, ch, sub.user, sub.password)
    client.send(inv)
    got = carrier_gw.expect("INVITE")
    assert got.uri == f"sip:15550009999@{target.addrs.carrier}:{target.carrier_gateway[1]};user=phone"
    ok = client.expect_response(inv, status=200)
    client.send(in_dialog("ACK", inv, ok))


def test_user_gets_100_after_authentication(client, target, sub, carrier_gw):
    _, inv = user_invite(client, target, sub, "15551110000")
    first = client.expect_response(inv)
    assert (first.status, first.reason) == (100, TRYING)
    ok = client.expect_response(inv, status=200)
    client.send(in_dialog("ACK", inv, ok))
