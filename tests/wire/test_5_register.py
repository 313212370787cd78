"""Contract item 5: REGISTER with digest authentication, bindings, expiry."""
from __future__ import annotations

import re
import time

import pytest

from wirekit import pool, start_target
import proxyctl
from sipclient import SipClient, authorize, parse_challenge
from wirekit import QUIET, assert_reply_form, carrier_invite, contacts, register, register_phone

NONCE = re.compile(r'^Digest realm="(?P<realm>[^"]+)", nonce="(?P<nonce>[^"]+)"')


def _register_req(c, target, user, contact="auto", expires=60):
    return c.request("REGISTER", f"sip:{target.realm}", from_uri=f"sip:{user}@{target.realm}",
                     contact=contact, expires=expires)


def _challenge(c, target, user):
    req = _register_req(c, target, user)
    c.send(req)
    return req, c.final(req)


def test_register_challenge_form(client, target, sub):
    req, r = _challenge(client, target, sub.user)
    assert_reply_form(r, req, 401, "Unauthorized")
    values = r.get_all("www-authenticate")
    assert len(values) >= 1
    m = NONCE.match(values[0])
    assert m, values[0]
    assert m.group("realm") == target.realm
    ch = parse_challenge(values[0])
    assert ch["scheme"] == "Digest"
    assert ch.get("algorithm", "MD5").upper() in ("MD5", "SHA-256")
    assert r.get("proxy-authenticate") is None


def test_register_ok_with_contact_and_expires(client, target, sub):
    contact = client.contact_uri(sub.user)
    req, ok = register(client, target, sub, contact=contact, expires=120)
    assert (ok.status, ok.reason) == (200, "OK")
    assert ok.get_all("contact") == [f"<{contact}>;expires=120"]
    assert ok.to_tag and ok.get("from") == req.get("from") and ok.call_id == req.get("call-id")
    assert ok.get("content-length") == "0"


def test_register_expires_contact_param_wins(client, target, sub):
    contact = client.contact_uri(sub.user)
    _, ok = register(client, target, sub, contact=contact, expires=300, expires_param=45)
    assert ok.get_all("contact") == [f"<{contact}>;expires=45"]


def test_register_default_expires(client, target, sub):
    contact = client.contact_uri(sub.user)
    _, ok = register(client, target, sub, contact=contact, expires=None)
    assert ok.get_all("contact") == [f"<{contact}>;expires=3600"]


def test_register_expires_capped(client, target, sub):
    contact = client.contact_uri(sub.user)
    _, ok = register(client, target, sub, contact=contact, expires=100000)
    assert ok.get_all("contact") == [f"<{contact}>;expires=3600"]


def test_register_two_bindings_listed_in_one_contact_header(client, target, sub):
    """Kamailio lists every binding of the AOR in ONE Contact header, comma-separated,
    oldest first."""
    a = f"sip:{sub.user}@{target.addrs.phone}:5091"
    b = f"sip:{sub.user}@{target.addrs.phone}:5092;line=b"
    register(client, target, sub, contact=a, expires=60)
    _, ok = register(client, target, sub, contact=b, expires=90)
    assert ok.get_all("contact") == [f"<{a}>;expires=60, <{b}>;expires=90"]


def test_register_query_lists_bindings(client, target, sub):
    a = client.contact_uri(sub.user)
    register(client, target, sub, contact=a, expires=60)
    _, ok = register(client, target, sub, contact="", expires=None)
    assert contacts(ok) == [f"<{a}>;expires=60"]


def test_register_refresh_keeps_one_binding(client, target, sub):
    contact = client.contact_uri(sub.user)
    req, _ = register(client, target, sub, contact=contact, expires=60)
    # same Call-ID, next CSeq: a refresh
    _, ok = register(client, target, sub, contact=contact, expires=80, call_id=req.get("call-id"),
                     cseq=req.cseq[0] + 1)
    assert ok.get_all("contact") == [f"<{contact}>;expires=80"]
    # another Call-ID for the same contact (a rebooted phone) still replaces it
    _, ok = register(client, target, sub, contact=contact, expires=70)
    assert ok.get_all("contact") == [f"<{contact}>;expires=70"]


def test_register_expires_zero_removes(client, target, sub, carrier):
    contact = client.contact_uri(sub.user)
    register(client, target, sub, contact=contact, expires=60)
    _, ok = register(client, target, sub, contact=contact, expires=0)
    assert (ok.status, ok.reason) == (200, "OK")
    assert ok.get("contact") is None
    inv = carrier_invite(carrier, target, sub.user)
    r = carrier.final(inv)
    assert (r.status, r.reason) == (404, "User not Registered")


def test_register_expires_zero_removes_only_that_binding(client, target, sub):
    a = f"sip:{sub.user}@{target.addrs.phone}:5093"
    b = f"sip:{sub.user}@{target.addrs.phone}:5094"
    register(client, target, sub, contact=a, expires=60)
    register(client, target, sub, contact=b, expires=60)
    _, ok = register(client, target, sub, contact=a, expires=0)
    assert ok.get_all("contact") == [f"<{b}>;expires=60"]


def test_register_star_removes_all(client, target, sub):
    register(client, target, sub, contact=f"sip:{sub.user}@{target.addrs.phone}:5095", expires=60)
    register(client, target, sub, contact=f"sip:{sub.user}@{target.addrs.phone}:5096", expires=60)
    req = client.request("REGISTER", f"sip:{target.realm}", from_uri=f"sip:{sub.user}@{target.realm}",
                         contact="*", expires=0)
    client.send(req)
    ch = client.final(req)
    req2 = authorize(req, ch, sub.user, sub.password)
    client.send(req2)
    ok = client.final(req2)
    assert (ok.status, ok.reason) == (200, "OK")
    assert ok.get("contact") is None


@pytest.mark.timeout(30)
def test_binding_expires_on_time(client, target, sub, carrier, make_phone):
    phone = make_phone(sub.user)
    t0 = time.monotonic()
    register_phone(client, target, sub, phone, expires=3)
    time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
    _, ok = register(client, target, sub, contact="", expires=None)
    assert len(contacts(ok)) == 1, "gone too early"
    time.sleep(max(0.0, 4.5 - (time.monotonic() - t0)))
    _, ok = register(client, target, sub, contact="", expires=None)
    assert contacts(ok) == [], "still listed after it expired"
    inv = carrier_invite(carrier, target, sub.user)
    r = carrier.final(inv)
    assert (r.status, r.reason) == (404, "User not Registered")
    assert phone.requests("INVITE") == []


# -- authentication failures: always a fresh challenge ----------------------------------------

def _failed(client, target, from_user, auth_user, password, **kw):
    req, ch = _challenge(client, target, from_user)
    bad = authorize(req, ch, auth_user, password, **kw)
    client.send(bad)
    return bad, client.final(bad)


def _assert_fresh_challenge(req, r, target):
    assert_reply_form(r, req, 401, "Unauthorized")
    m = NONCE.match(r.get("www-authenticate") or "")
    assert m and m.group("realm") == target.realm, r.get("www-authenticate")


def test_wrong_password_challenged_again(client, target, sub):
    req, r = _failed(client, target, sub.user, sub.user, "not-" + sub.password)
    _assert_fresh_challenge(req, r, target)


def test_unknown_user_challenged_again(client, target):
    req, r = _failed(client, target, "49999", "49999", "whatever")
    _assert_fresh_challenge(req, r, target)


def test_auth_user_different_from_from_user(client, target, sub, new_subscriber):
    other = new_subscriber()
    req, r = _failed(client, target, sub.user, other.user, other.password)
    _assert_fresh_challenge(req, r, target)


def test_forged_nonce_challenged_again(client, target, sub):
    req, r = _failed(client, target, sub.user, sub.user, sub.password,
                     nonce="ZmFrZW5vbmNlZmFrZW5vbmNlZmFrZQ==")
    _assert_fresh_challenge(req, r, target)


def test_wrong_realm_challenged_again(client, target, sub):
    req, r = _failed(client, target, sub.user, sub.user, sub.password, realm="elsewhere.test")
    _assert_fresh_challenge(req, r, target)


def test_unknown_user_and_wrong_password_look_the_same(make_client, target, sub):
    """Nothing on the wire tells an unknown user from a wrong password: same status line,
    same headers in the same order, same challenge apart from the nonce value."""
    a, b = make_client(sub.user), make_client("49998")
    _, wrong = _failed(a, target, sub.user, sub.user, "bad-password")
    _, unknown = _failed(b, target, "49998", "49998", "bad-password")

    def shape(r):
        ch = parse_challenge(r.get("www-authenticate"))
        ch.pop("nonce")
        return r.first_line, r.names(), ch, r.get("server"), r.body
    assert shape(wrong) == shape(unknown)


@pytest.fixture(scope="module")
def short_nonce_target():
    t = start_target(proxyctl.Options(nonce_expires_s=2))
    yield t
    t.close()


@pytest.mark.slow
@pytest.mark.timeout(40)
def test_stale_nonce_challenged_again(short_nonce_target):
    t = short_nonce_target
    s = pool()[0]
    with SipClient(t.addrs.client, 0, proxy=t.proxy, user=s.user, domain=t.realm) as c:
        req, ch = _challenge(c, t, s.user)
        time.sleep(3.5)
        late = authorize(req, ch, s.user, s.password)
        c.send(late)
        r = c.final(late)
        _assert_fresh_challenge(late, r, t)
        # and the fresh challenge works
        again = authorize(late, r, s.user, s.password)
        c.send(again)
        assert c.final(again).status == 200
