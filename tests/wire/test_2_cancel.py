"""Contract item 2: CANCEL matched to its INVITE transaction, and stray CANCELs."""
from __future__ import annotations

from sipclient import ack_for, cancel_for
from wirekit import QUIET, carrier_invite, register_phone


def test_cancel_matched(carrier, target, client, sub, make_phone):
    phone = make_phone(sub.user, final=None)          # rings until cancelled
    register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    carrier.expect_response(inv, status=180)
    relayed = phone.expect("INVITE")

    cancel = cancel_for(inv)
    carrier.send(cancel)
    ok = carrier.expect_response(cancel)
    assert ok.status == 200, ok.first_line
    assert ok.cseq == (inv.cseq[0], "CANCEL")

    # downstream: a CANCEL on the very branch the INVITE was relayed on
    down = phone.expect("CANCEL")
    assert down.branch == relayed.branch
    assert down.uri == relayed.uri
    assert down.cseq == (relayed.cseq[0], "CANCEL")

    # upstream: the phone's 487 is passed back
    final = carrier.expect_response(inv, skip_provisional=True)
    assert (final.status, final.reason) == (487, "Request Terminated")
    carrier.send(ack_for(inv, final))


def test_cancel_reply_reason(carrier, target, client, sub, make_phone):
    """Kamailio's tm answers a matched CANCEL with '200 canceling'."""
    phone = make_phone(sub.user, final=None)
    register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    carrier.expect_response(inv, status=180)
    cancel = cancel_for(inv)
    carrier.send(cancel)
    ok = carrier.expect_response(cancel)
    assert (ok.status, ok.reason) == (200, "canceling")
    assert ok.to_tag
    final = carrier.expect_response(inv, skip_provisional=True)
    carrier.send(ack_for(inv, final))


def test_stray_cancel_gets_nothing(carrier, target, client, sub, make_phone):
    phone = make_phone(sub.user)
    register_phone(client, target, sub, phone)
    cancel = carrier.request("CANCEL", f"sip:{sub.user}@{target.addrs.proxy}", contact=None)
    carrier.send(cancel)
    assert carrier.quiet(QUIET) == []
    assert phone.requests() == []


def test_cancel_after_final_is_not_relayed(carrier, target, client, sub, make_phone):
    """A CANCEL that arrives after the INVITE got its final reply cancels nothing downstream."""
    phone = make_phone(sub.user, final=486)
    register_phone(client, target, sub, phone)
    inv = carrier_invite(carrier, target, sub.user)
    final = carrier.expect_response(inv, skip_provisional=True)
    assert final.status == 486
    carrier.send(ack_for(inv, final))
    carrier.send(cancel_for(inv))
    carrier.quiet(QUIET)
    assert phone.requests("CANCEL") == []
