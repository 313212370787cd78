"""Hostile authentication over the wire, against the built-in script (issue 10).

Item 5, memory: the subscriber cache is keyed by names the attacker picks. A spray of
distinct unknown users, some with 60 kB names, must leave a worker's memory flat, and an
over-long name gets the same fresh challenge as any failure, counted as bad_credentials.

Item 7d, replay: the challenges offer qop="auth", so a captured response replayed is refused
by its nonce-count; a response carries its digest-uri, which must name the Request-URI's
target, so credentials captured for one call cannot place another. SIPp, which answers with
uri="sip:REMOTE_IP:REMOTE_PORT", still registers and calls.
"""
from __future__ import annotations

import os
import socket
import time
import urllib.request

import pytest

import sipprun
from authkit import (REALM, AuthProxy, challenge, digest_header, register_request,
                     with_credentials)
from sipclient import (UAS, SipClient, ack_for, authorize, in_dialog, parse_challenge,
                       pick_challenge)

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(os.path.dirname(HERE), "auth", "sipp")
USERS = {f"7{i:04d}": f"pw-7{i:04d}" for i in range(10)}
ALICE, BOB = "70001", "70002"
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
BIG = 60_000            # the attacker's username length


@pytest.fixture(scope="module")
def px():
    p = AuthProxy(USERS).start()
    yield p
    p.close()


def _ok(r):
    assert r is not None and (r.status, r.reason) == (200, "OK"), r and r.first_line


def _failures(px, reason: str) -> float:
    """kampx_auth_failures_total{reason=...} as Prometheus scrapes it (once the ctl process
    that serves /metrics is up)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            with urllib.request.urlopen(f"http://{px.metrics_listen}/metrics", timeout=2) as r:
                text = r.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("kampx_auth_failures_total{") and f'reason="{reason}"' in line)


# -- item 5: a spray of unknown users -----------------------------------------------------

def _anon_rss(pid: int) -> int:
    """Private memory of a process (RssAnon). VmRSS would also count the pages of the shared
    tables (nonce counts, transaction index) a worker touches for the first time: bounded,
    shared by all workers, and no part of a worker's own growth."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no RssAnon for {pid}")


def _spray(px, nonce: str, names: list[str], batch: int = 40) -> int:
    """REGISTERs with credentials for each name (valid nonce, wrong response), `batch` at a
    time, each batch's replies awaited so that the proxy's socket never overflows; how many
    were answered 401."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind((px.addrs.client, 0))
    s.settimeout(2.0)
    port = s.getsockname()[1]
    answered = 0
    try:
        for i in range(0, len(names), batch):
            chunk = names[i:i + batch]
            for name in chunk:
                s.sendto((f"REGISTER sip:{REALM} SIP/2.0\r\n"
                          f"Via: SIP/2.0/UDP {px.addrs.client}:{port};branch=z9hG4bK{os.urandom(8).hex()}\r\n"
                          f"From: <sip:{ALICE}@{REALM}>;tag={os.urandom(4).hex()}\r\n"
                          f"To: <sip:{ALICE}@{REALM}>\r\nCall-ID: {os.urandom(8).hex()}\r\n"
                          f"CSeq: 2 REGISTER\r\nMax-Forwards: 70\r\n"
                          f'Authorization: Digest username="{name}", realm="{REALM}", '
                          f'nonce="{nonce}", uri="sip:{REALM}", response="{"0" * 32}"\r\n'
                          "Content-Length: 0\r\n\r\n").encode(), px.addr)
            for _ in chunk:
                try:
                    answered += s.recv(65536).startswith(b"SIP/2.0 401 ")
                except socket.timeout:
                    break
    finally:
        s.close()
    return answered


def _names(tag: str, small: int, big: int) -> list[str]:
    """`small` distinct ~100-byte names with `big` 60 kB ones spread among them."""
    names = [f"{tag}{i:06d}-{os.urandom(46).hex()}" for i in range(small)]
    step = max(1, small // max(1, big))
    for j in range(big):
        names.insert(j * (step + 1), f"{tag}{j:06d}-" + "x" * BIG)
    return names


@pytest.mark.timeout(120)
def test_worker_memory_stays_flat_under_a_spray_of_unknown_users(px):
    """Issue 10's attack: ~60 kB usernames (and many distinct ~100-byte ones) grew a worker
    by 58 MiB, linearly. One nonce serves every request (the lookup happens before the
    response is checked). The warm-up fills the bounded tables; after it, 4000 more distinct
    names and 240 big ones may not grow any worker by more than 3 MiB (the old cache grew
    each of the two workers by 6 to 9 MiB here)."""
    with px.client() as c:
        _, ch = challenge(c, ALICE)
    nonce = parse_challenge(ch.get("www-authenticate"))["nonce"]
    pids = px.worker_pids()
    assert len(pids) == 2
    warm = _names("w", 8000, 20)
    assert _spray(px, nonce, warm) == len(warm)
    before = {pid: _anon_rss(pid) for pid in pids}
    names = _names("s", 4000, 240)
    t0 = time.monotonic()
    assert _spray(px, nonce, names) == len(names)
    assert time.monotonic() - t0 < 60
    grown = {pid: _anon_rss(pid) - before[pid] for pid in pids}
    print("worker RssAnon growth (MiB):", {p: round(g / 2**20, 2) for p, g in grown.items()},
          "before:", {p: round(b / 2**20, 2) for p, b in before.items()})
    assert max(grown.values()) < 3 * 2**20, grown


def test_an_overlong_username_gets_the_fresh_challenge_of_any_failure(px):
    """Refused before any lookup as bad credentials (-1): the reply is the one a wrong
    password gets (same status, headers and challenge but for its nonce)."""
    def shape(r):
        params = parse_challenge(r.get("www-authenticate"))
        nonce = params.pop("nonce")
        return (r.first_line, r.names(), params), nonce

    with px.client(ALICE) as c:
        req, ch = challenge(c, ALICE)
        params = pick_challenge(ch)
        wrong = with_credentials(req, digest_header(req, params, ALICE, "guess", qop="auth"))
        c.send(wrong)
        r_wrong = c.final(wrong)
        before = _failures(px, "bad_credentials")
        big = with_credentials(wrong, digest_header(wrong, params, "a" * BIG, "guess", qop="auth"))
        c.send(big)
        r_big = c.final(big)
    assert _failures(px, "bad_credentials") == before + 1
    (shape_w, nonce_w), (shape_b, nonce_b) = shape(r_wrong), shape(r_big)
    assert shape_b == shape_w
    assert shape_w[2] == {"scheme": "Digest", "realm": REALM, "qop": "auth"}
    assert nonce_b not in (nonce_w, params["nonce"])        # a fresh challenge


# -- item 7d: replay ---------------------------------------------------------------------

def test_challenges_offer_qop_auth(px):
    """The contract's form, Digest realm="R", nonce="N", then qop="auth" (Kamailio's order)."""
    with px.client(ALICE) as c:
        _, r401 = challenge(c, ALICE)
        inv = c.request("INVITE", f"sip:15550001@{REALM}", from_uri=f"sip:{ALICE}@{REALM}",
                        body=SDP)
        c.send(inv)
        r407 = c.final(inv)
        c.send(ack_for(inv, r407))
    for r, name in ((r401, "www-authenticate"), (r407, "proxy-authenticate")):
        value = r.get(name)
        assert value.startswith(f'Digest realm="{REALM}", nonce="'), value
        assert value.endswith('", qop="auth"'), value


def test_a_captured_register_replayed_from_elsewhere_is_refused(px):
    """The victim registers, answering the challenge as clients do (with the qop offered);
    the attacker, from another address, sends the captured Authorization again with its own
    Contact: refused with a fresh challenge, and the victim's binding is the only one."""
    victim_contact = f"sip:{BOB}@{px.addrs.client}:5999"
    with px.client(BOB) as victim:
        req = register_request(victim, BOB, contact=f"<{victim_contact}>")
        victim.send(req)
        captured = authorize(req, victim.final(req), BOB, USERS[BOB])
        victim.send(captured)
        _ok(victim.final(captured))
    with SipClient(px.addrs.phone, 0, proxy=px.addr, user=BOB, domain=REALM) as attacker:
        replay = with_credentials(register_request(attacker, BOB),
                                  captured.get("authorization"))
        attacker.send(replay)
        r = attacker.final(replay)
        assert r.status == 401 and "stale" not in parse_challenge(r.get("www-authenticate"))
        # what is bound now: a query (no Contact) with credentials of its own
        query = attacker.request("REGISTER", f"sip:{REALM}", from_uri=f"sip:{BOB}@{REALM}",
                                 contact=None)
        attacker.send(query)
        answer = authorize(query, attacker.final(query), BOB, USERS[BOB])
        attacker.send(answer)
        ok = attacker.final(answer)
    _ok(ok)
    assert ok.get_all("contact", split=True) == [f"<{victim_contact}>;expires=60"]


@pytest.fixture
def gw(px):
    u = UAS(*px.gateway, user="gw").start()
    yield u
    u.stop()


def _invite(c, number: str):
    return c.request("INVITE", f"sip:{number}@{REALM}", from_uri=f"sip:{ALICE}@{REALM}",
                     body=SDP)


def _final(c, inv):
    """Send `inv`; its final reply, ACKed."""
    c.send(inv)
    r = c.response(inv, 3.0, skip_provisional=True)
    assert r is not None
    c.send(ack_for(inv, r) if r.status >= 300 else in_dialog("ACK", inv, r))
    return r


def test_captured_invite_credentials_cannot_call_again_or_elsewhere(px, gw):
    """The victim calls 15550100, answering the 407 as clients do (with the qop offered).
    Replayed by an attacker, its credentials are refused for the same number (nonce-count)
    and for another one (digest-uri); so is an RFC 2069 response (no count) for another
    number. Only the victim's call reaches the carrier."""
    with px.client(ALICE) as victim, px.client(ALICE, ip=px.addrs.phone) as attacker:
        inv = _invite(victim, "15550100")
        ch = _final(victim, inv)
        assert ch.status == 407
        authorized = authorize(inv, ch, ALICE, USERS[ALICE])
        assert _final(victim, authorized).status == 200
        captured = authorized.get("proxy-authorization")
        rfc2069 = digest_header(inv, pick_challenge(ch), ALICE, USERS[ALICE])
        for number, value in (("15550100", captured), ("19005550199", captured),
                              ("19005550199", rfc2069)):
            replay = _invite(attacker, number)
            replay.add("Proxy-Authorization", value)
            r = _final(attacker, replay)
            assert r.status == 407, (number, r.first_line)
        time.sleep(0.3)
    assert [m.uri.split("@")[0] for m in gw.requests("INVITE")] == ["sip:15550100"]


def test_digest_uri_must_name_the_request_uri_target(px):
    """REGISTER sip:PROXY_IP: a response computed for another registrar is refused as bad
    credentials; SIPp's form, uri="sip:PROXY_IP:5060" (the default port spelled out, no
    user), is the same target and registers."""
    with px.client(ALICE) as c:
        req = c.request("REGISTER", f"sip:{px.addrs.proxy}", from_uri=f"sip:{ALICE}@{REALM}",
                        expires=60)
        c.send(req)
        params = pick_challenge(c.final(req))
        before = _failures(px, "bad_credentials")
        for uri, status in (("sip:registrar.example.net", 401),
                            (f"sip:{px.addrs.proxy}:5060", 200)):
            signed = req.copy()
            signed.uri = uri
            # nc 1 both times: a refused response counts nothing
            again = with_credentials(req, digest_header(signed, params, ALICE, USERS[ALICE],
                                                        qop="auth"))
            c.send(again)
            assert c.final(again).status == status, uri
    assert _failures(px, "bad_credentials") == before + 1


# -- SIPp still authenticates ---------------------------------------------------------------

needs_sipp = pytest.mark.skipif(not sipprun.available(), reason="SIPp (sip-tester) not installed")


@needs_sipp
@pytest.mark.timeout(60)
def test_sipp_registers_answering_qop(px):
    """SIPp's [authentication] with the qop offered: nc=00000001, and its
    uri="sip:REMOTE_IP:REMOTE_PORT" against REGISTER sip:REMOTE_IP:REMOTE_PORT."""
    users = list(USERS)[5:]
    for i, user in enumerate(users):
        res = sipprun.Sipp(os.path.join(SCENARIOS, "register_qop.xml"),
                           (px.addrs.client, 5064 + i), px.addr, calls=1, service=user,
                           extra=["-ap", USERS[user]], timeout=20).wait()
        assert (res.successful, res.failed) == (1, 0), res.out


@needs_sipp
@pytest.mark.timeout(90)
def test_sipp_calls_out_answering_qop(px):
    """20 calls from a user, each challenged with qop and authenticated by SIPp (its uri has
    no user: sip:REMOTE_IP:REMOTE_PORT for INVITE sip:NUMBER@REMOTE_IP:REMOTE_PORT), relayed
    to the carrier's UAS."""
    caller = list(USERS)[0]
    uas = sipprun.Sipp("uas_call.xml", px.gateway, timeout=60)
    try:
        res = sipprun.Sipp(os.path.join(SCENARIOS, "call_qop.xml"), (px.addrs.client, 5070),
                           px.addr, calls=20, rate=20, service="15550123",
                           extra=["-key", "caller", caller, "-au", caller, "-ap", USERS[caller]],
                           timeout=40).wait()
    finally:
        uas.stop()
    assert (res.successful, res.failed) == (20, 0), res.out
