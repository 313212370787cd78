"""save("location") on the wire: RFC 3261 10.3 as Kamailio's registrar answers it."""
from __future__ import annotations

import time

import pytest

from regkit import bound, contacts, db_rows, invite, new_user, register, start_proxy, wait_for
from sipclient import SipClient


def test_register_lists_binding_with_remaining_expires(client, proxy):
    user = new_user()
    contact = client.contact_uri(user)
    req, ok = register(client, proxy, user, expires=120)
    assert (ok.status, ok.reason) == (200, "OK")
    assert ok.get_all("contact") == [f"<{contact}>;expires=120"]
    assert ok.get("p-registrar-error") is None
    assert ok.to_tag and ok.call_id == req.get("call-id")
    time.sleep(1.1)
    assert bound(client, proxy, user) in ([f"<{contact}>;expires=119"], [f"<{contact}>;expires=118"])


def test_expires_param_header_and_default(client, proxy):
    user = new_user()
    a, b, c = (client.contact_uri(user, f";line={x}") for x in "abc")
    _, ok = register(client, proxy, user, f"<{a}>;expires=45", expires=300)
    assert contacts(ok) == [f"<{a}>;expires=45"]
    _, ok = register(client, proxy, user, f"<{b}>", expires=300)
    assert f"<{b}>;expires=300" in contacts(ok)
    _, ok = register(client, proxy, user, f"<{c}>", expires=None)       # default_expires
    assert f"<{c}>;expires=3600" in contacts(ok)
    _, ok = register(client, proxy, user, f"<{c}>", expires=90000)      # max_expires
    assert f"<{c}>;expires=3600" in contacts(ok)


def test_refresh_keeps_one_binding(client, proxy):
    user = new_user()
    contact = client.contact_uri(user)
    req, _ = register(client, proxy, user, expires=60)
    _, ok = register(client, proxy, user, expires=80, call_id=req.get("call-id"), cseq=2)
    assert contacts(ok) == [f"<{contact}>;expires=80"]
    # another Call-ID for the same contact (a rebooted phone) replaces it too
    _, ok = register(client, proxy, user, expires=70)
    assert contacts(ok) == [f"<{contact}>;expires=70"]
    # the contact URI's host compares case-insensitively
    upper = contact.replace(proxy.addrs.client, proxy.addrs.client.upper()).replace("sip:", "SIP:")
    _, ok = register(client, proxy, user, f"<{upper}>", expires=50)
    assert len(contacts(ok)) == 1


def test_several_contacts_in_one_request_and_headers(client, proxy):
    user = new_user()
    a, b, c = (f"sip:{user}@{proxy.addrs.phone}:{p}" for p in (5071, 5072, 5073))
    _, ok = register(client, proxy, user, f"<{a}>;expires=30, <{b}>", expires=40,
                     headers=[("Contact", f"<{c}>;expires=50")])
    assert sorted(contacts(ok)) == sorted([f"<{a}>;expires=30", f"<{b}>;expires=40",
                                           f"<{c}>;expires=50"])
    # all in ONE Contact header, comma-separated, as Kamailio answers
    assert len(ok.get_all("contact")) == 1


def _branch_no(invite) -> int:
    """kampx's branch names its position: z9hG4bKkx<worker>.<label>.<branch-no>."""
    return int(invite.branch.rsplit(".", 1)[1])


def test_q_orders_the_reply_and_the_lookup(client, carrier, proxy, make_phone):
    user = new_user()
    low, high, none = make_phone(), make_phone(), make_phone()
    register(client, proxy, user, f"<{low.contact}>;q=0.5")
    _, ok = register(client, proxy, user, f"<{high.contact}>;q=0.9")
    assert contacts(ok) == [f"<{high.contact}>;q=0.9;expires=60", f"<{low.contact}>;q=0.5;expires=60"]
    invite(carrier, proxy, user)
    # lookup() made the best binding the Request-URI branch, the other one a further branch
    got_high, got_low = high.expect("INVITE"), low.expect("INVITE")
    assert got_high.uri == high.contact and got_low.uri == low.contact
    assert (_branch_no(got_high), _branch_no(got_low)) == (0, 1)
    # no q counts as 1.0: it beats 0.9
    _, ok = register(client, proxy, user, f"<{none.contact}>")
    assert contacts(ok)[0] == f"<{none.contact}>;expires=60"
    invite(carrier, proxy, user)
    assert _branch_no(none.expect("INVITE")) == 0
    assert _branch_no(high.expect("INVITE", count=2)) == 1


def test_q_values_as_kamailio_prints_them(client, proxy):
    user = new_user()
    uris = [client.contact_uri(user, f";n={i}") for i in range(4)]
    register(client, proxy, user, ", ".join(f"<{u}>;q={q}" for u, q in
                                             zip(uris, ("1.000", "0.05", "0", "0.125"))))
    listed = bound(client, proxy, user)
    assert listed == [f"<{uris[0]}>;q=1;expires=60", f"<{uris[3]}>;q=0.125;expires=60",
                      f"<{uris[1]}>;q=0.05;expires=60", f"<{uris[2]}>;q=0;expires=60"]


def test_bad_q_is_400(client, proxy):
    user = new_user()
    _, r = register(client, proxy, user, f"<{client.contact_uri(user)}>;q=1.5")
    assert (r.status, r.reason) == (400, "Bad Request")
    assert r.get("p-registrar-error") == "Invalid q param in contact"
    assert bound(client, proxy, user) == []


def test_unregister_with_expires_header_and_param(client, proxy):
    user = new_user()
    a, b = client.contact_uri(user, ";x=a"), client.contact_uri(user, ";x=b")
    register(client, proxy, user, f"<{a}>, <{b}>")
    _, ok = register(client, proxy, user, f"<{a}>", expires=0)
    assert contacts(ok) == [f"<{b}>;expires=60"]
    _, ok = register(client, proxy, user, f"<{b}>;expires=0", expires=60)
    assert (ok.status, ok.reason) == (200, "OK")
    assert ok.get("contact") is None


def test_star_removes_every_binding(client, carrier, proxy, make_phone):
    user = new_user()
    phone = make_phone()
    register(client, proxy, user, f"<{phone.contact}>")
    register(client, proxy, user, f"<{client.contact_uri(user)}>")
    _, ok = register(client, proxy, user, "*", expires=0)
    assert (ok.status, ok.reason) == (200, "OK")
    assert ok.get("contact") is None
    _, r = invite(carrier, proxy, user)
    assert (r.status, r.reason) == (404, "User not Registered")
    assert phone.requests("INVITE") == []


@pytest.mark.parametrize("expires, extra, info", [
    (60, [], "* used in contact and expires is not zero"),
    (None, [], "* used in contact and expires is not zero"),
    (0, [("Contact", "<sip:x@127.0.0.1>")], "* used in contact and more than 1 contact"),
])
def test_star_misuse_is_400(client, proxy, expires, extra, info):
    user = new_user()
    register(client, proxy, user)
    _, r = register(client, proxy, user, "*", expires=expires, headers=extra)
    assert (r.status, r.reason) == (400, "Bad Request")
    assert r.get("p-registrar-error") == info
    assert len(bound(client, proxy, user)) == 1


@pytest.mark.timeout(30)
def test_binding_expires_on_time(client, carrier, proxy, make_phone):
    user = new_user()
    phone = make_phone()
    t0 = time.monotonic()
    register(client, proxy, user, f"<{phone.contact}>", expires=2)
    time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    assert len(bound(client, proxy, user)) == 1, "gone too early"
    time.sleep(max(0.0, 3.0 - (time.monotonic() - t0)))
    assert bound(client, proxy, user) == [], "still listed after it expired"
    _, r = invite(carrier, proxy, user)
    assert r.status == 404 and phone.requests("INVITE") == []
    # the timer removed it from memory and the db writer from the database
    assert wait_for(lambda: not [r for r in db_rows(proxy) if r["username"] == user], 3.0)


def test_out_of_order_cseq_is_rejected(client, proxy):
    user = new_user()
    contact = client.contact_uri(user)
    req, _ = register(client, proxy, user, expires=60, cseq=5)
    call_id = req.get("call-id")
    _, r = register(client, proxy, user, expires=30, call_id=call_id, cseq=4)
    assert (r.status, r.reason) == (400, "Bad Request")
    assert r.get("p-registrar-error") == "Invalid CSeq number"
    # Kamailio's error reply lists the bindings as they are: untouched
    assert contacts(r) == [f"<{contact}>;expires=60"]
    _, r = register(client, proxy, user, expires=0, call_id=call_id, cseq=3)
    assert r.status == 400, "an old un-REGISTER must not remove a newer binding"
    _, r = register(client, proxy, user, "*", expires=0, call_id=call_id, cseq=2)
    assert r.status == 400, "an old 'Contact: *' must not remove a newer binding"
    assert bound(client, proxy, user) == [f"<{contact}>;expires=60"]
    _, ok = register(client, proxy, user, expires=20, call_id=call_id, cseq=6)
    assert contacts(ok) == [f"<{contact}>;expires=20"]


def test_retransmitted_register_gets_200_again(client, proxy):
    user = new_user()
    contact = client.contact_uri(user)
    req, first = register(client, proxy, user, expires=60, cseq=7)
    client.send(req)                        # the same request again: lost 200
    again = client.final(req)
    assert (again.status, again.reason) == (200, "OK")
    assert contacts(again) == contacts(first) == [f"<{contact}>;expires=60"]


def test_contact_identity_by_instance_and_reg_id(client, proxy):
    """RFC 5626: +sip.instance with reg-id is the same binding even when the URI changed
    (a phone that came back on another port); both are echoed in the 200."""
    user = new_user()
    inst = '"<urn:uuid:00000000-0000-1000-8000-000000000001>"'
    a = client.contact_uri(user, ";ob")
    b = f"sip:{user}@{proxy.addrs.client}:5999;ob"
    _, ok = register(client, proxy, user, f"<{a}>;+sip.instance={inst};reg-id=1")
    assert contacts(ok) == [f"<{a}>;expires=60;+sip.instance={inst};reg-id=1"]
    _, ok = register(client, proxy, user, f"<{b}>;+sip.instance={inst};reg-id=1")
    assert contacts(ok) == [f"<{b}>;expires=60;+sip.instance={inst};reg-id=1"]
    _, r = register(client, proxy, user, f"<{b}>;+sip.instance={inst};reg-id=0")
    assert (r.status, r.get("p-registrar-error")) == (400, "Invalid Reg-Id number")


def test_binding_fields_reach_the_database(client, proxy):
    user = new_user()
    inst = "<urn:uuid:00000000-0000-1000-8000-0000000000aa>"
    contact = f"sip:{user}@10.9.8.7:5062"
    edge = f"<sip:{proxy.addrs.phone}:5070;lr>"
    via_port = 5062
    _, ok = register(client, proxy, user, f'<{contact}>;+sip.instance="{inst}";reg-id=2;q=0.7',
                     expires=90, headers=[("User-Agent", "RegTest/1.0"), ("Path", edge)],
                     via=f"SIP/2.0/UDP 10.9.8.7:{via_port};rport;branch=z9hG4bKdb{user}")
    assert ok.status == 200

    def row():
        rows = [r for r in db_rows(proxy) if r["username"] == user]
        return rows[0] if rows else None
    r = wait_for(row, 2.0)
    assert r is not None, "not written behind within 2 s"
    assert r["contact"] == contact
    assert r["received"] == f"sip:{client.ip}:{client.port}"
    assert r["path"] == edge
    assert r["user_agent"] == "RegTest/1.0"
    assert r["instance"] == inst and r["reg_id"] == 2 and r["q"] == 700
    assert r["socket"] == f"udp:{proxy.addrs.proxy}:5060"
    assert r["expires"] - time.time() == pytest.approx(90, abs=3)


def test_query_of_an_unknown_user_has_no_contact(client, proxy):
    _, ok = register(client, proxy, new_user(), contact=None, expires=None)
    assert (ok.status, ok.reason) == (200, "OK")
    assert ok.get("contact") is None


# -- configured limits: a proxy of their own --------------------------------------------------

def test_min_expires_423():
    px = start_proxy({"min_expires": 60})
    try:
        with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
            user = new_user()
            _, r = register(c, px, user, expires=30)
            assert (r.status, r.reason) == (423, "Interval Too Brief")
            assert r.get("min-expires") == "60"
            assert r.get("p-registrar-error") == "Interval too brief"
            assert bound(c, px, user) == []
            _, ok = register(c, px, user, expires=60)
            assert contacts(ok) == [f"<{c.contact_uri(user)}>;expires=60"]
            _, ok = register(c, px, user, expires=0)       # removal is never too brief
            assert ok.status == 200 and ok.get("contact") is None
    finally:
        px.close()


def test_max_contacts_reject_and_overwrite():
    px = start_proxy({"max_contacts": 2})
    try:
        with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
            user = new_user()
            a, b, d = (c.contact_uri(user, f";n={x}") for x in "abd")
            register(c, px, user, f"<{a}>")
            register(c, px, user, f"<{b}>")
            _, r = register(c, px, user, f"<{d}>")
            assert (r.status, r.reason) == (503, "Service Unavailable")
            assert r.get("p-registrar-error") == "Too many registered contacts"
            assert sorted(contacts(r)) == sorted([f"<{a}>;expires=60", f"<{b}>;expires=60"])
            _, ok = register(c, px, user, f"<{a}>", expires=30)     # a refresh still works
            assert ok.status == 200
            _, ok = register(c, px, user, f"<{a}>, <{d}>;expires=0")
            assert ok.status == 200 and len(contacts(ok)) == 2
    finally:
        px.close()
    px = start_proxy({"max_contacts": 2, "max_contacts_policy": "overwrite"})
    try:
        with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
            user = new_user()
            a, b, d = (c.contact_uri(user, f";n={x}") for x in "abd")
            register(c, px, user, f"<{a}>")
            time.sleep(0.01)
            register(c, px, user, f"<{b}>")
            _, ok = register(c, px, user, f"<{d}>")
            assert ok.status == 200
            assert sorted(contacts(ok)) == sorted([f"<{b}>;expires=60", f"<{d}>;expires=60"])
    finally:
        px.close()


def test_table_full_is_503_and_logged():
    px = start_proxy(usrloc={"capacity": 3})
    try:
        with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
            users = [new_user() for _ in range(4)]
            reqs = [register(c, px, u)[0] for u in users[:3]]
            _, r = register(c, px, users[3])
            assert (r.status, r.reason) == (503, "Service Unavailable")
            assert r.get("p-registrar-error") == "usrloc_contact_insert failed"
            assert bound(c, px, users[3]) == []
            # a full table still takes refreshes of the bindings it holds
            _, ok = register(c, px, users[0], expires=30, call_id=reqs[0].get("call-id"), cseq=2)
            assert contacts(ok) == [f"<{c.contact_uri(users[0])}>;expires=30"]
        assert wait_for(lambda: "location table is full" in px.log_tail(200), 2.0), px.log_tail()
    finally:
        px.close()
