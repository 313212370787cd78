"""Contract item 9: the shape of relayed requests and the proxy's stateful reply handling."""
from __future__ import annotations

import re
import time

import pytest

from sipclient import ack_for, cancel_for, header_params, in_dialog
from wirekit import QUIET, answered_call, carrier_invite, register, register_phone, sent_by

BRANCH = re.compile(r"^z9hG4bK[0-9A-Za-z.\-_!%*+`'~]+$")


def _relayed(carrier, target, client, sub, make_phone, contact_params="", **behaviour):
    phone = make_phone(sub.user, **behaviour)
    contact = f"sip:{sub.user}@{phone.ip}:{phone.port}{contact_params}"
    register(client, target, sub, contact=contact, expires=120)
    inv = carrier_invite(carrier, target, sub.user)
    return phone, inv, contact, phone.expect("INVITE")


def test_ruri_is_contact_verbatim(carrier, target, client, sub, make_phone):
    _, inv, contact, got = _relayed(carrier, target, client, sub, make_phone,
                                    contact_params=";transport=udp;line=ab12;X-Odd=Case")
    assert got.uri == contact


def test_top_via_is_the_proxy(carrier, target, client, sub, make_phone):
    _, inv, _, got = _relayed(carrier, target, client, sub, make_phone)
    vias = got.vias
    assert len(vias) == 2
    top = vias[0]
    assert top.startswith(f"SIP/2.0/UDP {target.addrs.proxy};branch=z9hG4bK"), top
    assert sent_by(top) == target.addrs.proxy, "port 5060 is left out"
    assert BRANCH.match(header_params(top)["branch"])
    # the caller's Via below it, stamped with received and rport (RFC 3581)
    p = header_params(vias[1])
    assert p["branch"] == inv.branch
    assert p["received"] == carrier.ip
    assert p["rport"] == str(carrier.port)


def test_kamailio_via_stamping_order(carrier, target, client, sub, make_phone):
    """Exact form of the caller's Via on a relayed request, as Kamailio writes it:
    received inserted after sent-by, then rport filled in place."""
    _, inv, _, got = _relayed(carrier, target, client, sub, make_phone)
    assert got.vias[1] == (f"SIP/2.0/UDP {carrier.ip}:{carrier.port};received={carrier.ip};"
                           f"rport={carrier.port};branch={inv.branch}")


def test_record_route_added(carrier, target, client, sub, make_phone):
    _, _, _, got = _relayed(carrier, target, client, sub, make_phone)
    assert got.get_all("record-route") == [f"<sip:{target.addrs.proxy};lr>"]
    assert got.names()[0] == "record-route", "Kamailio puts Record-Route first"
    assert got.names()[1] == "via"


def test_headers_and_body_otherwise_unchanged(carrier, target, client, sub, make_phone):
    _, inv, _, got = _relayed(carrier, target, client, sub, make_phone)
    for name in ("from", "to", "call-id", "cseq", "contact", "content-type"):
        assert got.get(name) == inv.get(name), name
    assert got.body == inv.body
    assert got.get("content-length") == str(len(inv.body))


def test_branch_differs_per_transaction(carrier, target, client, sub, make_phone):
    phone, inv, _, got = _relayed(carrier, target, client, sub, make_phone)
    ok, ack = answered_call(carrier, inv, phone)
    bye = in_dialog("BYE", inv, ok)
    carrier.send(bye)
    got_bye = phone.expect("BYE")
    assert got_bye.branch != got.branch and got_bye.branch.startswith("z9hG4bK")
    assert carrier.expect_response(bye).status == 200


# -- stateful reply handling ------------------------------------------------------------------

# the callee's final comes a moment after its 180: two workers racing on a 180 and a final
# sent back to back may relay the final first and then drop the late 180 (Kamailio does)
SETTLE = 0.15


def _final_after_ringing(carrier, inv):
    ringing = carrier.expect_response(inv, status=180)
    return ringing, carrier.expect_response(inv, skip_provisional=True)


def test_503_becomes_500(carrier, target, client, sub, make_phone):
    phone, inv, _, _ = _relayed(carrier, target, client, sub, make_phone, final=503, delay=SETTLE)
    ringing, r = _final_after_ringing(carrier, inv)
    assert (r.status, r.reason) == (500, "Service Unavailable")
    carrier.send(ack_for(inv, r))


def test_503_becomes_a_local_500(carrier, target, client, sub, make_phone):
    """Kamailio does not relay a 503: it answers with its own 500 "Service Unavailable" (its
    own To-tag, whatever reason the 503 had)."""
    phone, inv, _, _ = _relayed(carrier, target, client, sub, make_phone, final=503,
                                final_reason="Overloaded Right Now", delay=SETTLE)
    ringing, r = _final_after_ringing(carrier, inv)
    assert (r.status, r.reason) == (500, "Service Unavailable")
    assert r.to_tag and r.to_tag != ringing.to_tag
    carrier.send(ack_for(inv, r))


@pytest.mark.parametrize("code, reason", [(486, "Busy Here"), (404, "Not Found"), (480, "Temporarily Unavailable"),
                                          (603, "Decline"), (500, "Server Internal Error"),
                                          (486, "Quite Busy Indeed")])
def test_other_finals_pass_unchanged(carrier, target, client, sub, make_phone, code, reason):
    phone, inv, _, _ = _relayed(carrier, target, client, sub, make_phone, final=code, final_reason=reason,
                                delay=SETTLE)
    ringing, r = _final_after_ringing(carrier, inv)
    assert (r.status, r.reason) == (code, reason)
    assert r.to_tag == ringing.to_tag, "the callee's reply itself, not a local one"
    carrier.send(ack_for(inv, r))


def test_downstream_100_never_forwarded(carrier, target, client, sub, make_phone):
    phone, inv, _, _ = _relayed(carrier, target, client, sub, make_phone,
                                reason_100="Downstream Trying", final=None)
    carrier.expect_response(inv, status=180)
    carrier.quiet(0.3)
    received = [d for kind, _, d in carrier.log if kind == "in"]
    assert sum(d.startswith(b"SIP/2.0 100 ") for d in received) == 1, "only the proxy's own 100"
    assert not any(b"Downstream Trying" in d for d in received)
    carrier.send(cancel_for(inv))
    r = carrier.expect_response(inv, skip_provisional=True)
    carrier.send(ack_for(inv, r))


def test_provisional_from_callee_forwarded(carrier, target, client, sub, make_phone):
    phone, inv, _, _ = _relayed(carrier, target, client, sub, make_phone, final=None)
    r = carrier.expect_response(inv, status=180)
    assert r.reason == "Ringing" and r.to_tag
    assert r.get_all("record-route") == [f"<sip:{target.addrs.proxy};lr>"]
    carrier.send(cancel_for(inv))
    final = carrier.expect_response(inv, skip_provisional=True)
    carrier.send(ack_for(inv, final))


def test_replies_carry_only_the_callers_via(carrier, target, client, sub, make_phone):
    phone, inv, _, _ = _relayed(carrier, target, client, sub, make_phone)
    ok = carrier.expect_response(inv, status=200)
    assert len(ok.vias) == 1 and header_params(ok.vias[0])["branch"] == inv.branch
    carrier.send(in_dialog("ACK", inv, ok))


@pytest.mark.timeout(30)
def test_no_answer_at_all_gets_408(carrier, target, client, sub, make_phone):
    """The callee never answers: after fr_timer the proxy replies 408 itself."""
    phone, inv, _, _ = _relayed(carrier, target, client, sub, make_phone, silent=True)
    limit = target.options.fr_timer_ms / 1000
    t0 = time.monotonic()
    r = carrier.expect_response(inv, skip_provisional=True, timeout=limit + 3)
    took = time.monotonic() - t0
    assert (r.status, r.reason) == (408, "Request Timeout")
    assert r.to_tag
    assert limit - 0.5 <= took <= limit + 2.5, took
    carrier.send(ack_for(inv, r))
    assert len({m.branch for m in phone.requests("INVITE")}) == 1


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_ringing_without_answer_gets_408(carrier, target, client, sub, make_phone):
    """180 but no final: after fr_inv_timer the proxy cancels downstream and replies 408."""
    phone, inv, _, _ = _relayed(carrier, target, client, sub, make_phone, final=None)
    carrier.expect_response(inv, status=180)
    limit = target.options.fr_inv_timer_ms / 1000
    t0 = time.monotonic()
    r = carrier.expect_response(inv, skip_provisional=True, timeout=limit + 4)
    took = time.monotonic() - t0
    assert r.status in (408, 487), r.first_line
    assert limit - 0.5 <= took <= limit + 3, took
    carrier.send(ack_for(inv, r))
    assert phone.wait_for("CANCEL", 1) is not None
