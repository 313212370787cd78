"""Contract item 3: retransmissions are absorbed by the proxy's transactions; 2xx
retransmissions from the callee are forwarded."""
from __future__ import annotations

import time

from sipclient import ack_for, in_dialog
from wirekit import QUIET, answered_call, carrier_invite, register_phone

# a retransmission is answered at once; the proxy's own reply retransmissions come at T1 (0.5 s)
# or later, so an answer within this window is the answer to our retransmission
PROMPT = 0.3

TRYING = "trying -- your call is important to us"


def test_invite_retransmission_before_any_reply_gets_100(carrier, target, client, sub, make_phone):
    phone = make_phone(sub.user, silent=True)
    register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    first = carrier.expect_response(inv)
    assert (first.status, first.reason) == (100, TRYING)
    carrier.send(inv)
    again = carrier.expect_response(inv, timeout=PROMPT)
    assert again.status == 100
    time.sleep(0.2)
    assert len({m.branch for m in phone.requests("INVITE")}) == 1, "relayed twice"


def test_invite_retransmission_after_provisional_gets_it_again(carrier, target, client, sub, make_phone):
    phone = make_phone(sub.user, final=None)
    register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    carrier.expect_response(inv, status=100)
    ringing = carrier.expect_response(inv, status=180)
    carrier.send(inv)
    again = carrier.expect_response(inv, timeout=PROMPT)
    assert (again.status, again.reason) == (180, "Ringing")
    assert again.to_tag == ringing.to_tag
    time.sleep(0.2)
    assert len(phone.requests("INVITE")) == 1, "the retransmission was relayed"


def test_invite_retransmission_after_final_gets_final(carrier, target, client, sub, make_phone):
    phone = make_phone(sub.user, final=486)
    register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    final = carrier.expect_response(inv, skip_provisional=True)
    assert final.status == 486
    carrier.send(inv)
    again = carrier.expect_response(inv, timeout=PROMPT)
    assert (again.status, again.reason) == (486, "Busy Here")
    assert again.to_tag == final.to_tag
    carrier.send(ack_for(inv, final))
    time.sleep(0.2)
    assert len(phone.requests("INVITE")) == 1


def test_invite_retransmission_after_200_gets_200(carrier, target, client, sub, make_phone):
    phone = make_phone(sub.user)
    register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    ok = carrier.expect_response(inv, status=200)
    carrier.send(inv)
    again = carrier.expect_response(inv, timeout=PROMPT)
    assert again.status == 200 and again.to_tag == ok.to_tag
    carrier.send(in_dialog("ACK", inv, ok))
    time.sleep(0.2)
    assert len(phone.requests("INVITE")) == 1


def test_non_2xx_final_retransmitted_until_ack(carrier, target, client, sub, make_phone):
    """The proxy retransmits a non-2xx final it relayed until the caller's ACK (INVITE server
    transaction, RFC 3261 17.2.1); the ACK stops it."""
    phone = make_phone(sub.user, final=486)
    register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    final = carrier.expect_response(inv, skip_provisional=True)
    again = carrier.expect_response(inv, timeout=1.0)   # at T1
    assert again.status == 486
    carrier.send(ack_for(inv, final))
    time.sleep(0.1)
    carrier.quiet(0.05)
    assert carrier.quiet(1.6, lambda m: m.status == 486) == [], "retransmitted after the ACK"


def test_bye_retransmission_absorbed(carrier, target, client, sub, make_phone):
    phone = make_phone(sub.user)
    register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    ok, _ = answered_call(carrier, inv, phone)
    bye = in_dialog("BYE", inv, ok)
    carrier.send(bye)
    first = carrier.expect_response(bye)
    assert first.status == 200
    carrier.send(bye)
    again = carrier.expect_response(bye, timeout=PROMPT)
    assert again.status == 200
    time.sleep(0.3)
    assert len(phone.requests("BYE")) == 1, "the BYE retransmission was relayed"


def test_2xx_retransmissions_forwarded(carrier, target, client, sub, make_phone):
    phone = make_phone(sub.user, retransmit_2xx=2)
    register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    oks = [carrier.expect_response(inv, status=200, timeout=3) for _ in range(3)]
    assert len({m.to_tag for m in oks}) == 1
    carrier.send(in_dialog("ACK", inv, oks[0]))


def test_lost_200_recovered_by_retransmission(carrier, target, client, sub, make_phone):
    """The callee's first 200 is lost; its retransmission (T1 later) reaches the caller."""
    phone = make_phone(sub.user, drop_first_200=True)
    register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    ok = carrier.expect_response(inv, status=200, timeout=2)
    carrier.send(in_dialog("ACK", inv, ok))
    assert phone.expect("ACK")
