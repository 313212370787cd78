"""Digest authentication over the wire, against the built-in script: MD5 with and without
qop, SHA-256 (RFC 8760), stale and forged nonces, nonce-count replay, failures that look
alike, and subscriber changes by kampxctl taking effect in a running proxy."""
from __future__ import annotations

import shutil
import statistics
import subprocess
import time

import pytest

from authkit import (REALM, AuthProxy, answer, challenge, digest_header, register_request,
                     script_path, with_credentials)
from sipclient import UAS, SipClient, ack_for, authorize, in_dialog, parse_challenge, pick_challenge

USERS = {f"3{i:04d}": f"secret-{i}" for i in range(20)}
ALICE, BOB, CAROL, DAVE = "30001", "30002", "30003", "30004"
NOBODY = "39999"


@pytest.fixture(scope="module")
def px():
    p = AuthProxy(USERS).start()
    yield p
    p.close()


@pytest.fixture
def c(px):
    with px.client() as client:
        yield client


def _ok(r):
    assert r is not None and (r.status, r.reason) == (200, "OK"), r and r.first_line


# -- MD5 ----------------------------------------------------------------------------------

def test_md5_rfc2069_response_registers(px, c):
    """The built-in script offers qop="auth" (replay protection); a client that ignores it
    and answers in the RFC 2069 form still registers."""
    req, ch = challenge(c, ALICE)
    value = ch.get("www-authenticate")
    params = parse_challenge(value)
    assert params.get("qop") == "auth" and "algorithm" not in params, value
    again = with_credentials(req, digest_header(req, pick_challenge(ch), ALICE, USERS[ALICE]))
    assert "qop=" not in again.get("authorization")
    c.send(again)
    _ok(c.final(again))


def test_md5_with_qop_auth_chosen_by_the_client(px, c):
    req, ch = challenge(c, ALICE)
    value = digest_header(req, pick_challenge(ch), ALICE, USERS[ALICE], qop="auth")
    again = with_credentials(req, value)
    c.send(again)
    _ok(c.final(again))


def test_md5_sess_with_qop(px, c):
    req, ch = challenge(c, ALICE)
    value = digest_header(req, pick_challenge(ch), ALICE, USERS[ALICE], qop="auth",
                          algorithm="MD5-sess")
    again = with_credentials(req, value)
    c.send(again)
    _ok(c.final(again))


def test_username_with_domain_uses_ha1b(px, c):
    """A client that sends user@domain as digest username is checked against ha1b."""
    req, ch = challenge(c, BOB)
    value = digest_header(req, pick_challenge(ch), f"{BOB}@{REALM}", USERS[BOB])
    again = with_credentials(req, value)
    c.send(again)
    _ok(c.final(again))


def test_invite_credentials_are_checked_and_consumed(px, c):
    gw = UAS(*px.gateway, user="gw").start()
    try:
        inv = c.request("INVITE", f"sip:15550001@{REALM}", from_uri=f"sip:{CAROL}@{REALM}",
                        body="v=0\r\n")
        c.send(inv)
        ch = c.final(inv)
        assert (ch.status, ch.reason) == (407, "Proxy Authentication Required")
        c.send(ack_for(inv, ch))
        inv2 = authorize(inv, ch, CAROL, USERS[CAROL])
        c.send(inv2)
        got = gw.expect("INVITE")
        assert got.get("proxy-authorization") is None
        ok = c.expect_response(inv2, status=200)
        c.send(in_dialog("ACK", inv2, ok))
    finally:
        gw.stop()


# -- a script that offers qop (www_challenge flags 1) ------------------------------------

@pytest.fixture(scope="module")
def qop_px():
    p = AuthProxy(USERS, script=script_path("qop_registrar.py")).start()
    yield p
    p.close()


def test_challenge_offers_qop_when_the_script_asks(qop_px):
    with qop_px.client() as c:
        req, ch = challenge(c, ALICE)
        params = parse_challenge(ch.get("www-authenticate"))
        assert params["qop"] == "auth"
        _ok(answer(c, req, ch, ALICE, USERS[ALICE]))      # sipclient answers with qop=auth


def test_replayed_nonce_count_is_refused(qop_px):
    with qop_px.client() as c:
        req, ch = challenge(c, DAVE)
        params = pick_challenge(ch)
        first = with_credentials(req, digest_header(req, params, DAVE, USERS[DAVE], qop="auth",
                                                    nc=1, cnonce="c0ffee01"))
        c.send(first)
        _ok(c.final(first))
        # the very same credentials again (a captured request replayed)
        replay = with_credentials(first, first.get("authorization"))
        c.send(replay)
        r = c.final(replay)
        assert r.status == 401
        # a lower count is a replay too; the next count is fine
        lower = with_credentials(first, digest_header(first, params, DAVE, USERS[DAVE],
                                                      qop="auth", nc=1, cnonce="c0ffee02"))
        c.send(lower)
        assert c.final(lower).status == 401
        nxt = with_credentials(first, digest_header(first, params, DAVE, USERS[DAVE], qop="auth",
                                                    nc=2, cnonce="c0ffee03"))
        c.send(nxt)
        _ok(c.final(nxt))


def test_a_forged_response_does_not_burn_the_next_count(qop_px):
    """nc is recorded only once the response is verified: an attacker's nc=99 with a wrong
    password must not make the real client's nc=2 look like a replay."""
    with qop_px.client() as c:
        req, ch = challenge(c, CAROL)
        params = pick_challenge(ch)
        bad = with_credentials(req, digest_header(req, params, CAROL, "guess", qop="auth", nc=99))
        c.send(bad)
        assert c.final(bad).status == 401
        value = digest_header(bad, params, CAROL, USERS[CAROL], qop="auth", nc=2)
        good = with_credentials(bad, value)
        c.send(good)
        _ok(c.final(good))


# -- SHA-256 --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sha_px():
    p = AuthProxy(USERS, config={"auth": {"algorithms": ["MD5", "SHA-256"]}}).start()
    yield p
    p.close()


def test_sha256_offered_first_with_one_nonce(sha_px):
    with sha_px.client() as c:
        _, ch = challenge(c, ALICE)
        values = [parse_challenge(v) for v in ch.get_all("www-authenticate")]
        assert [v.get("algorithm") for v in values] == ["SHA-256", "MD5"]
        assert values[0]["nonce"] == values[1]["nonce"]
        assert all(v["realm"] == REALM for v in values)


@pytest.mark.parametrize("alg", ["SHA-256", "MD5"])
def test_sha256_or_md5_answer_registers(sha_px, alg):
    with sha_px.client() as c:
        req, ch = challenge(c, BOB)
        _ok(answer(c, req, ch, BOB, USERS[BOB], prefer=(alg,)))


def test_sha256_with_qop_and_user_at_domain(sha_px):
    with sha_px.client() as c:
        req, ch = challenge(c, CAROL)
        params = pick_challenge(ch, ("SHA-256",))
        value = digest_header(req, params, f"{CAROL}@{REALM}", USERS[CAROL], qop="auth")
        again = with_credentials(req, value)
        c.send(again)
        _ok(c.final(again))


def test_sha256_answer_refused_when_not_enabled(px, c):
    req, ch = challenge(c, ALICE)
    params = dict(pick_challenge(ch), algorithm="SHA-256")
    again = with_credentials(req, digest_header(req, params, ALICE, USERS[ALICE]))
    c.send(again)
    assert c.final(again).status == 401


# -- nonces ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def short_px():
    p = AuthProxy(USERS, config={"auth": {"nonce_expires_s": 1}}).start()
    yield p
    p.close()


@pytest.mark.timeout(30)
def test_stale_nonce_gets_stale_true_and_a_working_nonce(short_px):
    with short_px.client() as c:
        req, ch = challenge(c, ALICE)
        time.sleep(2.2)
        late = authorize(req, ch, ALICE, USERS[ALICE])
        c.send(late)
        r = c.final(late)
        assert r.status == 401
        params = parse_challenge(r.get("www-authenticate"))
        assert params.get("stale") == "true"
        assert params["nonce"] != parse_challenge(ch.get("www-authenticate"))["nonce"]
        _ok(answer(c, late, r, ALICE, USERS[ALICE]))


def test_stale_with_a_wrong_password_is_still_only_stale(short_px):
    """The nonce is judged before the password (as Kamailio does): no hint either way."""
    with short_px.client() as c:
        req, ch = challenge(c, BOB)
        time.sleep(2.2)
        late = authorize(req, ch, BOB, "wrong")
        c.send(late)
        r = c.final(late)
        assert r.status == 401 and parse_challenge(r.get("www-authenticate")).get("stale") == "true"


def test_fresh_failures_have_no_stale_flag(px, c):
    req, ch = challenge(c, ALICE)
    r = answer(c, req, ch, ALICE, "wrong")
    assert r.status == 401 and "stale" not in parse_challenge(r.get("www-authenticate"))


def test_nonce_of_another_kampx_is_forged(px, short_px):
    """A nonce is an HMAC with the instance's secret: another instance's is worthless."""
    with short_px.client() as other, px.client() as c:
        _, foreign = challenge(other, ALICE)
        req, _ = challenge(c, ALICE)
        forged = authorize(req, foreign, ALICE, USERS[ALICE])
        c.send(forged)
        r = c.final(forged)
        assert r.status == 401
        assert "stale" not in parse_challenge(r.get("www-authenticate"))


def test_nonce_reusable_without_qop_until_it_expires(px, c):
    """RFC 2069 clients (and Kamailio) reuse a nonce; without qop there is no count to check."""
    req, ch = challenge(c, BOB)
    params = pick_challenge(ch)
    for r in (req, register_request(c, BOB)):
        again = with_credentials(r, digest_header(r, params, BOB, USERS[BOB]))
        c.send(again)
        _ok(c.final(again))


# -- failures look alike --------------------------------------------------------------------

def _shape(r):
    ch = parse_challenge(r.get("www-authenticate"))
    ch.pop("nonce")
    return r.first_line, r.names(), ch, r.get("server"), r.body


def test_wrong_password_unknown_user_and_mismatch_look_the_same(px):
    with px.client(ALICE) as a, px.client(NOBODY) as b, px.client(CAROL) as m:
        req, ch = challenge(a, ALICE)
        wrong = answer(a, req, ch, ALICE, "bad-password")
        req, ch = challenge(b, NOBODY)
        unknown = answer(b, req, ch, NOBODY, "bad-password")
        req, ch = challenge(m, CAROL)
        mismatch = answer(m, req, ch, DAVE, USERS[DAVE])     # DAVE's valid credentials, From CAROL
    assert wrong.status == unknown.status == mismatch.status == 401
    assert _shape(wrong) == _shape(unknown) == _shape(mismatch)


def _timed_failures(px, user: str, n: int) -> list[float]:
    out = []
    with px.client(user) as c:
        for _ in range(n):
            req, ch = challenge(c, user)
            bad = authorize(req, ch, user, "not-the-password")
            t0 = time.perf_counter()
            c.send(bad)
            r = c.final(bad)
            out.append(time.perf_counter() - t0)
            assert r.status == 401
    return out


def test_unknown_user_and_wrong_password_take_comparable_time(px):
    """Medians of interleaved rounds within 35 % of each other (loopback round trips of a
    few hundred microseconds; the noise of a shared machine is the tolerance)."""
    known, unknown = [], []
    for _ in range(6):
        known += _timed_failures(px, ALICE, 10)
        unknown += _timed_failures(px, NOBODY, 10)
    mk, mu = statistics.median(known), statistics.median(unknown)
    assert 1 / 1.35 < mk / mu < 1.35, (mk, mu)


# -- subscriber changes reach a running proxy ---------------------------------------------

def test_kampxctl_add_passwd_rm_take_effect(px, c):
    user = "38888"
    req, ch = challenge(c, user)
    assert answer(c, req, ch, user, "first-pw").status == 401      # not yet a subscriber
    px.ctl("add", user, "first-pw")
    req, ch = challenge(c, user)
    _ok(answer(c, req, ch, user, "first-pw"))                       # at once
    px.ctl("passwd", user, "second-pw")
    req, ch = challenge(c, user)
    _ok(answer(c, req, ch, user, "second-pw"))                      # the new one, at once
    time.sleep(0.25)                                                # the cache's recheck time
    req, ch = challenge(c, user)
    assert answer(c, req, ch, user, "first-pw").status == 401       # the old one is gone
    px.ctl("rm", user)
    time.sleep(0.25)
    req, ch = challenge(c, user)
    assert answer(c, req, ch, user, "second-pw").status == 401


# -- sipsak ---------------------------------------------------------------------------------

def _sipsak_register(px, user: str, password: str, contact: str) -> int:
    # -u: sipsak 0.9.8 sends "user@" as auth username unless told; -H/--local-ip: no lookups
    r = subprocess.run(["sipsak", "-U", "-C", contact, "-x", "60",
                        "-s", f"sip:{user}@{px.addrs.proxy}", "-u", user, "-a", password,
                        "--local-ip", px.addrs.client, "-H", px.addrs.client],
                       capture_output=True, text=True, timeout=30)
    return r.returncode


@pytest.mark.skipif(not shutil.which("sipsak"), reason="sipsak not installed")
def test_sipsak_registers(px):
    user, password = "31000", "sipsak-pw"
    px.ctl("add", f"{user}@{px.addrs.proxy}", password)    # sipsak's realm: the proxy's IP
    contact = f"sip:{user}@{px.addrs.phone}:5099"
    assert _sipsak_register(px, user, "wrong", contact) != 0
    assert _sipsak_register(px, user, password, contact) == 0
    # the binding is there: a query (REGISTER without Contact) lists it
    with SipClient(px.addrs.client, 0, proxy=px.addr, user=user, domain=px.addrs.proxy) as c:
        req = c.request("REGISTER", f"sip:{px.addrs.proxy}", contact=None)
        c.send(req)
        ok = answer(c, req, c.final(req), user, password)
        assert ok.status == 200 and contact in (ok.get("contact") or ""), str(ok)
