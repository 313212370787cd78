"""Issue 10 items 3, 4 and 7b: what one sender can make the proxy send or hold.

- Forking is bounded: [registrar] max_contacts defaults to 10, one request forks to at most
  [tm] max_branches (12) destinations, a REGISTER reply lists at most ~2 kB of Contacts.
- [tm] max_transactions and max_memory_mb hold for the whole proxy: past them a new
  request gets 503 with Retry-After at once, counted; a SIGKILLed worker gives its share back.
- A reply that matches no transaction is dropped, not bounced to its second Via."""
from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from authkit import REALM, AuthProxy, answer, challenge, register_request
from sipclient import UAS, Behaviour, SipClient

USER = "60001"
USERS = {USER: "pw-60001"}
QUIET = 0.6


def _wait_ctl(px, *args):
    deadline = time.monotonic() + 5
    while (r := px.ctl(*args, check=False)).returncode != 0:
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.1)


def _register_many(px, contacts: list[str], per_request: int = 100) -> None:
    """Bindings for USER, by REGISTERs of up to `per_request` Contacts each."""
    with px.client(USER) as c:
        for i in range(0, len(contacts), per_request):
            value = ", ".join(f"<{u}>" for u in contacts[i:i + per_request])
            req, ch = challenge(c, USER, contact=value, expires=300)
            assert answer(c, req, ch, USER, USERS[USER]).status == 200


def _carrier_invite(c: SipClient, px, body: str = "v=0\r\n"):
    inv = c.request("INVITE", f"sip:{USER}@{px.addr[0]}", body=body)
    c.send(inv)
    return inv


# -- forking -----------------------------------------------------------------------------------

def test_register_past_the_default_max_contacts_is_refused():
    px = AuthProxy(USERS).start()
    try:
        with px.client(USER) as c:
            for i in range(11):
                contact = f"sip:{USER}@{px.addrs.client}:{20000 + i}"
                req, ch = challenge(c, USER, contact=contact)
                r = answer(c, req, ch, USER, USERS[USER])
                if i < 10:
                    assert r.status == 200, r
            assert (r.status, r.reason) == (503, "Service Unavailable")
            assert r.get("P-Registrar-Error") == "Too many registered contacts"
    finally:
        px.close()


@pytest.fixture(scope="module")
def unlimited():
    """An operator who lifted max_contacts (0): the branch cap still holds."""
    px = AuthProxy(USERS, config={"registrar": {"max_contacts": 0}}).start()
    yield px
    px.close()


def test_one_invite_forks_to_at_most_max_branches(unlimited):
    px = unlimited
    with UAS(px.addrs.phone, 0, user=USER, behaviour=Behaviour(final=486)) as phone:
        _register_many(px, [f"sip:{USER}@{phone.ip}:{phone.port};line={i}" for i in range(40)])
        with SipClient(px.addrs.carrier, 0, proxy=px.addr) as trunk:
            inv = _carrier_invite(trunk, px)
            r = trunk.final(inv, 5.0)
            assert r.status == 486
        time.sleep(QUIET)
        branches = {m.branch for m in phone.requests("INVITE")}
        assert len(branches) == 12, len(branches)
    _wait_ctl(px, "ul", "rm", USER)


def test_register_reply_size_is_bounded(unlimited):
    """1000 bindings; a 400-byte REGISTER query draws about 2 kB, not 32 kB, and lists the
    most recently refreshed bindings."""
    px = unlimited
    _register_many(px, [f"sip:{USER}@192.0.2.{i % 250}:{10000 + i}" for i in range(1000)])
    with px.client(USER) as c:
        req, ch = challenge(c, USER, contact=None)
        assert len(req.encode()) < 500
        r = answer(c, req, ch, USER, USERS[USER])
        assert r.status == 200
        contacts = r.get("contact")
        assert 1000 < len(contacts) <= 2100, len(contacts)
        assert f":{10000 + 999}>" in contacts                       # the newest is listed
        assert f":{10000}>" not in contacts                         # the oldest is not
    _wait_ctl(px, "ul", "rm", USER)


# -- transactions --------------------------------------------------------------------------------

def _limited(**tm):
    return AuthProxy(USERS, config={"tm": tm}).start()


def _fill(px, phone, n: int, body: str = "v=0\r\n") -> tuple[int, list]:
    """n carrier INVITEs to a phone that rings forever; (relayed, the 503s received)."""
    refused = []
    with SipClient(px.addrs.carrier, 0, proxy=px.addr) as trunk:
        invs = [_carrier_invite(trunk, px, body) for _ in range(n)]
        for inv in invs:
            r = trunk.response(inv, 1.0, skip_provisional=True)
            if r is not None and r.status == 503:
                refused.append(r)
    time.sleep(0.3)
    return len({m.call_id for m in phone.requests("INVITE")}), refused


def test_max_transactions_holds_for_the_whole_proxy():
    """The report: max_transactions = 5 let 40 forged transactions in. Now 5, and the rest
    get 503 with Retry-After at once; once the calls end, new ones are accepted again."""
    # short timers: the unanswered calls time out (408) and their transactions end within
    # about 5 s (64 * T1 without an ACK, the test does not send one)
    px = _limited(max_transactions=5, fr_inv_timer_ms=1000, t1_ms=50, t2_ms=400)
    try:
        with UAS(px.addrs.phone, 0, user=USER, behaviour=Behaviour(final=None)) as phone:
            _wait_ctl(px, "ul", "add", USER, phone.contact, "300")
            relayed, refused = _fill(px, phone, 40)
            assert relayed == 5, relayed
            assert len(refused) == 35
            assert all(r.reason == "Service Unavailable" and r.get("retry-after") for r in refused)
            assert px.metric("kampx_tm_refused_transactions_total") >= 35
            assert px.metric("kampx_tm_active_transactions") <= 5
            deadline = time.monotonic() + 15
            while px.metric("kampx_tm_active_transactions") > 0:
                assert time.monotonic() < deadline, "the transactions never ended"
                time.sleep(0.2)
            relayed, refused = _fill(px, phone, 3)
            assert refused == [] and relayed == 8
    finally:
        px.close()


def test_a_killed_worker_gives_its_transactions_back():
    px = _limited(max_transactions=4)
    try:
        with UAS(px.addrs.phone, 0, user=USER, behaviour=Behaviour(final=None)) as phone:
            _wait_ctl(px, "ul", "add", USER, phone.contact, "300")
            relayed, refused = _fill(px, phone, 4)
            assert relayed == 4 and refused == []
            for pid in px.worker_pids():
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while len(px.worker_pids()) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            relayed, refused = _fill(px, phone, 4)
            assert refused == [], "the dead workers' transactions still counted"
    finally:
        px.close()


def test_memory_budget_bounds_big_transactions():
    """60 kB bodies: each transaction holds ~122 kB. A 1 MB budget takes a few, then 503."""
    px = _limited(max_memory_mb=1)
    try:
        with UAS(px.addrs.phone, 0, user=USER, behaviour=Behaviour(final=None)) as phone:
            _wait_ctl(px, "ul", "add", USER, phone.contact, "300")
            relayed, refused = _fill(px, phone, 20, body="v=0\r\n" + "a=x\r\n" * 12000)
            assert 1 <= relayed <= 9, relayed
            assert len(refused) == 20 - relayed
            assert px.metric("kampx_tm_memory_bytes") <= 1 << 20
    finally:
        px.close()


# -- stray replies -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def px():
    p = AuthProxy(USERS).start()
    yield p
    p.close()


def _stray_reply(px, victim: tuple, code: int = 200) -> bytes:
    return (f"SIP/2.0 {code} OK\r\n"
            f"Via: SIP/2.0/UDP {px.addr[0]};branch=z9hG4bKkx00abcd.1.0\r\n"
            f"Via: SIP/2.0/UDP {victim[0]}:{victim[1]};branch=z9hG4bKvictim\r\n"
            f"From: <sip:a@{REALM}>;tag=f1\r\nTo: <sip:b@{REALM}>;tag=t1\r\n"
            f"Call-ID: reflect-{time.time_ns()}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            ).encode()


@pytest.mark.parametrize("code", [200, 180, 486])
def test_stray_reply_is_not_reflected(px, code):
    """A reply with the proxy's Via on top and a victim's below: Kamailio's core forwards
    it (a 1:1 reflector); kampx drops it."""
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind((px.addrs.phone, 0))
    victim.settimeout(QUIET)
    try:
        before = px.metric("kampx_core_drop_replies_total")
        with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
            c.send(_stray_reply(px, victim.getsockname(), code))
        with pytest.raises(socket.timeout):
            victim.recvfrom(65535)
        assert px.metric("kampx_core_drop_replies_total") > before
    finally:
        victim.close()


def test_stray_replies_forwarded_when_asked():
    """The control: [core] forward_stray_replies = true is Kamailio's behaviour."""
    p = AuthProxy(USERS, config={"core": {"forward_stray_replies": True}}).start()
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind((p.addrs.phone, 0))
    victim.settimeout(2)
    try:
        with SipClient(p.addrs.client, 0, proxy=p.addr) as c:
            c.send(_stray_reply(p, victim.getsockname()))
        data, _ = victim.recvfrom(65535)
        assert data.startswith(b"SIP/2.0 200")
    finally:
        victim.close()
        p.close()
