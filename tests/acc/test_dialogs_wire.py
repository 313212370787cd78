"""Accounting over the wire: the built-in script accounts every call, a real kampx writes
acc, missed_calls and acc_cdrs rows into its SQLite file, `kampxctl dlg` sees and ends
dialogs, /metrics counts calls. A carrier (a client in address group 200) calls alice (a
phone: UAS, or a hand-driven client when the phone must hang up itself)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest

from authkit import AuthProxy
from sipclient import (
    UAS,
    Behaviour,
    SipClient,
    ack_for,
    cancel_for,
    in_dialog,
    new_tag,
    response_to,
)

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n"

pytestmark = [pytest.mark.wire, pytest.mark.timeout(120)]

USERS = {"alice": "alice-pw-1", "bob": "bob-pw-1"}
TIMERS = {"t1_ms": 100, "t2_ms": 400, "fr_timer_ms": 1500, "fr_inv_timer_ms": 3000}


def start(config=None, children=2):
    sections = {"tm": dict(TIMERS)}
    for name, keys in (config or {}).items():
        sections.setdefault(name, {}).update(keys)
    return AuthProxy(users=USERS, config=sections, children=children).start()


@pytest.fixture(scope="module")
def px():
    p = start()
    yield p
    p.close()


@pytest.fixture
def phone(px):
    u = UAS(px.addrs.phone, 0, user="alice").start()
    register(px, "alice", u.contact)
    yield u
    u.stop()


@pytest.fixture
def carrier(px):
    c = SipClient(px.addrs.carrier, 0, proxy=px.addr, user="carrier")
    yield c
    c.close()


def register(px, user, contact, expires=120):
    with px.client(user) as c:
        req = c.request(
            "REGISTER",
            "sip:kampx.test",
            from_uri=f"sip:{user}@kampx.test",
            contact=f"<{contact}>",
            expires=expires,
        )
        c.send(req)
        ch = c.final(req)
        assert ch.status == 401
        from sipclient import authorize

        again = authorize(req, ch, user, USERS[user])
        c.send(again)
        assert c.final(again).status == 200


def call(px, carrier, user="alice"):
    req = carrier.request(
        "INVITE", f"sip:{user}@kampx.test", from_uri=f"sip:+15550100@{px.addrs.carrier}", body=SDP
    )
    carrier.send(req)
    return req


def answered(px, carrier, user="alice"):
    req = call(px, carrier, user)
    ok = carrier.expect_response(req, status=200, timeout=3)
    carrier.send(in_dialog("ACK", req, ok))
    return req, ok


def rows(px, table, callid, want=1, timeout=4.0):
    """The rows of `table` for `callid`, once there are `want` of them (the db writer
    writes every 0.25 s); a few more moments to be sure no extra row comes."""
    path = os.path.join(px.workdir, "kampx.db")
    deadline = time.monotonic() + timeout
    while True:
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            got = [
                dict(r) for r in db.execute(f"SELECT * FROM {table} WHERE callid = ?", (callid,))
            ]
        if len(got) >= want or time.monotonic() >= deadline:
            return got
        time.sleep(0.1)


def no_more_rows(px, table, callid, n):
    time.sleep(0.6)
    assert len(rows(px, table, callid, want=n + 1, timeout=0)) == n


def ctl_json(px, *args):
    return json.loads(px.ctl(*args, "--json").stdout)


def test_an_answered_call_hung_up_by_the_caller_gives_one_cdr_of_its_duration(px, phone, carrier):
    req, ok = answered(px, carrier)
    callid = req.get("Call-ID")
    listed = ctl_json(px, "dlg", "list")["dialogs"]
    mine = [d for d in listed if d["callid"] == callid]
    assert len(mine) == 1 and mine[0]["state"] == "confirmed"
    assert mine[0]["direction"] == "inbound" and mine[0]["dst_ouser"] == "alice"
    time.sleep(1.5)
    bye = in_dialog("BYE", req, ok)
    carrier.send(bye)
    assert carrier.final(bye).status == 200
    (cdr,) = rows(px, "acc_cdrs", callid)
    assert 1.4 <= cdr["duration"] <= 2.0, cdr
    assert cdr["end_reason"] == "caller"
    assert cdr["direction"] == "inbound"
    assert cdr["sip_code"] == "200"
    assert cdr["src_user"] == "+15550100" and cdr["dst_ouser"] == "alice"
    assert cdr["from_tag"] == ok.from_tag and cdr["to_tag"] == ok.to_tag
    acc = rows(px, "acc", callid, want=2)
    assert sorted((r["method"], r["sip_code"]) for r in acc) == [("BYE", "200"), ("INVITE", "200")]
    assert rows(px, "missed_calls", callid, want=0, timeout=0) == []
    assert all(d["callid"] != callid for d in ctl_json(px, "dlg", "list")["dialogs"])
    no_more_rows(px, "acc_cdrs", callid, 1)


def test_the_callee_hanging_up_ends_the_cdr_too(px, carrier):
    with SipClient(px.addrs.phone, 0, user="alice") as ph:
        register(px, "alice", ph.contact_uri("alice"))
        req = call(px, carrier)
        inv = ph.expect(match=lambda m: m.is_request and m.method == "INVITE")
        tag = new_tag()
        ph.send(
            response_to(
                inv,
                200,
                "OK",
                to_tag=tag,
                copy_record_route=True,
                headers=[("Contact", f"<{ph.contact_uri('alice')}>")],
            ),
            inv.source,
        )
        ok = carrier.expect_response(req, status=200, timeout=3)
        carrier.send(in_dialog("ACK", req, ok))
        ph.expect(match=lambda m: m.is_request and m.method == "ACK")
        time.sleep(0.5)
        # the callee's BYE: its route set is the Record-Route as it came, To/From swapped
        bye = sipclient_request(
            ph,
            "BYE",
            req.get("Contact").strip("<>"),
            [("Route", r) for r in inv.get_all("record-route", split=True)],
            from_=inv.get("to") + f";tag={tag}",
            to=inv.get("from"),
            callid=req.get("Call-ID"),
            cseq=1,
        )
        ph.send(bye, inv.source)
        got = carrier.expect(match=lambda m: m.is_request and m.method == "BYE")
        carrier.send(response_to(got, 200, "OK"), got.source)
        (cdr,) = rows(px, "acc_cdrs", req.get("Call-ID"))
    assert cdr["end_reason"] == "callee"
    assert 0.4 <= cdr["duration"] <= 1.2


def sipclient_request(c, method, uri, routes, *, from_, to, callid, cseq):
    from sipclient import Request, new_branch

    hdrs = [
        ("Via", f"SIP/2.0/UDP {c.hostport};rport;branch={new_branch()}"),
        ("Max-Forwards", "70"),
        *routes,
        ("From", from_),
        ("To", to),
        ("Call-ID", callid),
        ("CSeq", f"{cseq} {method}"),
    ]
    return Request(method, uri, hdrs)


@pytest.mark.parametrize("code", [486, 404])
def test_a_refused_call_is_a_missed_call(px, phone, carrier, code):
    phone.behaviour = Behaviour(final=code)
    req = call(px, carrier)
    final = carrier.final(req, 4)
    assert final.status == code
    carrier.send(ack_for(req, final))
    callid = req.get("Call-ID")
    (missed,) = rows(px, "missed_calls", callid)
    assert (missed["method"], missed["sip_code"]) == ("INVITE", str(code))
    assert missed["direction"] == "inbound" and missed["src_ip"] == px.addrs.carrier
    (cdr,) = rows(px, "acc_cdrs", callid)  # [acc] cdr_on_failed
    assert (cdr["end_reason"], cdr["sip_code"], cdr["duration"]) == ("failed", str(code), 0)
    assert rows(px, "acc", callid, want=0, timeout=0) == []  # no failed_transaction_flag


def test_a_canceled_call_is_a_missed_call_with_487(px, phone, carrier):
    phone.behaviour = Behaviour(final=None)  # rings until CANCEL
    req = call(px, carrier)
    carrier.expect_response(req, status=180, timeout=3)
    assert any(
        d["callid"] == req.get("Call-ID") and d["state"] == "early"
        for d in ctl_json(px, "dlg", "list")["dialogs"]
    )
    cancel = cancel_for(req)
    carrier.send(cancel)
    assert carrier.final(cancel).status == 200
    final = carrier.final(req, 4)
    assert final.status == 487
    carrier.send(ack_for(req, final))
    (missed,) = rows(px, "missed_calls", req.get("Call-ID"))
    assert missed["sip_code"] == "487"
    (cdr,) = rows(px, "acc_cdrs", req.get("Call-ID"))
    assert cdr["end_reason"] == "canceled"


def test_a_call_to_an_unregistered_user_is_missed_without_a_cdr(px, carrier):
    req = call(px, carrier, "bob")
    final = carrier.final(req)
    assert (final.status, final.reason) == (404, "User not Registered")
    (missed,) = rows(px, "missed_calls", req.get("Call-ID"))
    assert (missed["sip_code"], missed["sip_reason"]) == ("404", "User not Registered")
    assert missed["to_tag"] == final.to_tag
    no_more_rows(px, "acc_cdrs", req.get("Call-ID"), 0)


def test_dlg_end_sends_bye_both_ways_and_writes_the_cdr(px, phone, carrier):
    req, ok = answered(px, carrier)
    callid = req.get("Call-ID")
    shown = ctl_json(px, "dlg", "show", callid)["dialogs"][0]
    assert shown["callee_addr"] == [phone.ip, phone.port]
    out = ctl_json(px, "dlg", "end", callid)
    assert len(out["ended"][0]["bye_to"]) == 2
    to_caller = carrier.expect(match=lambda m: m.is_request and m.method == "BYE")
    assert to_caller.call_id == callid
    assert to_caller.to_tag == ok.from_tag and to_caller.from_tag == ok.to_tag
    carrier.send(response_to(to_caller, 200, "OK"), to_caller.source)
    to_callee = phone.wait_for("BYE", timeout=2)
    assert to_callee is not None and to_callee.from_tag == ok.from_tag
    assert int(to_callee.cseq[0]) > req.cseq[0]
    (cdr,) = rows(px, "acc_cdrs", callid)
    assert cdr["end_reason"] == "ended"
    r = px.ctl("dlg", "end", callid, check=False)
    assert r.returncode != 0 and "no tracked dialog" in r.stderr


def test_a_worker_killed_mid_call_loses_neither_the_dialog_nor_its_cdr(px, phone, carrier):
    req, ok = answered(px, carrier)
    for pid in px.worker_pids():  # every worker: whichever held the call is gone
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while len(px.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert any(d["callid"] == req.get("Call-ID") for d in ctl_json(px, "dlg", "list")["dialogs"])
    bye = in_dialog("BYE", req, ok)
    carrier.send(bye)
    assert carrier.final(bye, 4).status == 200
    (cdr,) = rows(px, "acc_cdrs", req.get("Call-ID"))
    assert cdr["end_reason"] == "caller"


def test_call_counters_on_metrics(px, phone, carrier):
    before = {
        k: px.metric(k)
        for k in (
            "kampx_acc_calls_attempted_total",
            "kampx_acc_calls_answered_total",
            "kampx_acc_call_duration_seconds_count",
        )
    }
    req, ok = answered(px, carrier)
    bye = in_dialog("BYE", req, ok)
    carrier.send(bye)
    carrier.final(bye)
    text = px.metrics_text()
    assert 'kampx_acc_calls_answered_total{direction="inbound"}' in text
    assert (
        'kampx_acc_calls_failed_total{class="4xx",direction="inbound"}' in text
        or 'kampx_acc_calls_failed_total{direction="inbound",class="4xx"}' in text
    )
    assert (
        px.metric("kampx_acc_calls_attempted_total")
        == before["kampx_acc_calls_attempted_total"] + 1
    )
    assert (
        px.metric("kampx_acc_calls_answered_total") == before["kampx_acc_calls_answered_total"] + 1
    )
    assert (
        px.metric("kampx_acc_call_duration_seconds_count")
        == before["kampx_acc_call_duration_seconds_count"] + 1
    )
    assert "kampx_dialog_active_dialogs " in text and "kampx_dialog_early_dialogs " in text


def test_a_dialog_that_times_out_ends_with_a_timeout_cdr():
    px = start({"dialog": {"lifetime_s": 2}})
    try:
        with (
            UAS(px.addrs.phone, 0, user="alice") as phone,
            SipClient(px.addrs.carrier, 0, proxy=px.addr) as carrier,
        ):
            register(px, "alice", phone.contact)
            req, ok = answered(px, carrier)
            (cdr,) = rows(px, "acc_cdrs", req.get("Call-ID"), timeout=6)
            assert cdr["end_reason"] == "timeout"
            assert 1.9 <= cdr["duration"] <= 3.3
            bye = in_dialog("BYE", req, ok)  # too late: the dialog is gone
            carrier.send(bye)
            assert carrier.final(bye).status == 404
    finally:
        px.close()


def user_call(px, user, number):
    """An authenticated user's INVITE (407 first); returns (client, INVITE, its 200)."""
    from sipclient import authorize

    c = px.client(user)
    req = c.request(
        "INVITE", f"sip:{number}@kampx.test", from_uri=f"sip:{user}@kampx.test", body=SDP
    )
    c.send(req)
    ch = c.final(req)
    assert ch.status == 407
    c.send(ack_for(req, ch))
    inv = authorize(req, ch, user, USERS[user])
    c.send(inv)
    ok = c.expect_response(inv, status=200, timeout=3)
    c.send(in_dialog("ACK", inv, ok))
    return c, inv, ok


@pytest.mark.parametrize("number, direction", [("15550001000", "outbound"), ("alice", "local")])
def test_calls_from_users_are_accounted_by_direction(px, phone, number, direction):
    with UAS(px.gateway[0], px.gateway[1], user="gw") as gw:
        c, inv, ok = user_call(px, "bob", number)
        try:
            bye = in_dialog("BYE", inv, ok)
            c.send(bye)
            assert c.final(bye).status == 200
        finally:
            c.close()
        answered_by = gw if direction == "outbound" else phone
        assert answered_by.requests("INVITE")
    (cdr,) = rows(px, "acc_cdrs", inv.get("Call-ID"))
    assert (cdr["direction"], cdr["end_reason"], cdr["src_user"]) == (direction, "caller", "bob")
    assert cdr["dst_ouser"] == number
    acc = rows(px, "acc", inv.get("Call-ID"), want=2)
    assert {r["direction"] for r in acc} == {direction}
    summary = ctl_json(px, "acc", "summary", "--since", "1h")
    assert summary["directions"][direction]["answered"] >= 1
