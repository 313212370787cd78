"""Security of the built-in script over the wire: scanner drop, flood protection (pike) with
its ban and expiry, the brute-force ban, and the exemptions of the carrier's addresses."""
from __future__ import annotations

import time

import pytest

from authkit import REALM, AuthProxy, answer, challenge, register_request
from sipclient import SipClient, authorize

USERS = {f"4{i:04d}": f"pw-{i}" for i in range(10)}
ALICE = "40001"


def keepalive(c: SipClient, proxy, timeout: float = 0.5, **kw):
    req = c.request("OPTIONS", f"sip:{proxy[0]}", contact=None, **kw)
    c.send(req)
    return c.response(req, timeout)


# -- scanner drop ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def custom_scanners():
    patterns = ["evil-ua", "^Bad[0-9]+$"]
    p = AuthProxy(USERS, config={"security": {"scanner_user_agents": patterns}}).start()
    yield p
    p.close()


@pytest.mark.parametrize("ua", ["evil-ua/2.0", "Mozilla EVIL-UA", "bad42"])
def test_configured_scanner_patterns_dropped(custom_scanners, ua):
    with custom_scanners.client() as c:
        assert keepalive(c, custom_scanners.addr, user_agent=ua) is None
        assert keepalive(c, custom_scanners.addr) is not None


@pytest.mark.parametrize("ua", ["friendly-scanner", "bad42x", "my bad42"])
def test_only_the_configured_patterns_are_dropped(custom_scanners, ua):
    """The list replaces the default one; a regex entry matches as written (anchors kept)."""
    with custom_scanners.client() as c:
        r = keepalive(c, custom_scanners.addr, user_agent=ua)
        assert r is not None and r.status == 200


def test_scanner_register_from_carrier_dropped(custom_scanners):
    with SipClient(custom_scanners.addrs.carrier, 0, proxy=custom_scanners.addr) as c:
        req = register_request(c, ALICE, user_agent="evil-ua")
        c.send(req)
        assert c.response(req, 0.5) is None


# -- pike: flood protection --------------------------------------------------------------------

@pytest.fixture
def pike():
    p = AuthProxy(USERS, config={"security": {"pike_enabled": True, "pike_max": 10,
                                              "pike_window_s": 5, "pike_ban_s": 2}}).start()
    yield p
    p.close()


def _burst(c: SipClient, proxy, n: int) -> int:
    """Send n keepalives back to back; how many were answered."""
    reqs = []
    for _ in range(n):
        req = c.request("OPTIONS", f"sip:{proxy[0]}", contact=None)
        c.send(req)
        reqs.append(req)
    branches = {r.branch for r in reqs}
    answered = set()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and len(answered) < n:
        m = c.recv(max(0.01, deadline - time.monotonic()), lambda m: m.branch in branches)
        if m is None:
            break
        answered.add(m.branch)
    return len(answered)


@pytest.mark.timeout(30)
def test_pike_bans_a_flooding_source_then_lets_it_back(pike):
    # the phones' address: the start-up ping came from the clients' and counts there
    with pike.client(ip=pike.addrs.phone) as c, pike.client() as other:
        assert _burst(c, pike.addr, 30) == 10          # pike_max, then silence
        assert keepalive(c, pike.addr) is None         # banned: even a single request
        assert keepalive(other, pike.addr) is not None  # another source is unaffected
        time.sleep(2.5)                                # pike_ban_s
        r = keepalive(c, pike.addr)
        assert r is not None and r.status == 200       # the ban lapsed


def test_pike_exempts_the_carrier(pike):
    with SipClient(pike.addrs.carrier, 0, proxy=pike.addr) as carrier:
        assert _burst(carrier, pike.addr, 30) == 30


def test_pike_counts_every_worker(pike):
    """The counts live in shared memory: two workers, one limit."""
    with pike.client(ip=pike.addrs.phone) as c:
        answered = sum(_burst(c, pike.addr, 4) for _ in range(3))
    assert answered == 10


# -- brute-force ban -------------------------------------------------------------------------

@pytest.fixture
def bans():
    p = AuthProxy(USERS, config={"security": {"auth_ban_failures": 3, "auth_ban_window_s": 60,
                                              "auth_ban_s": 2}}).start()
    yield p
    p.close()


def _wrong(c: SipClient, user: str = ALICE):
    req, ch = challenge(c, user)
    return answer(c, req, ch, user, "guess")


@pytest.mark.timeout(30)
def test_failed_authentications_ban_the_source(bans):
    with bans.client() as c, SipClient(bans.addrs.phone, 0, proxy=bans.addr) as other:
        for _ in range(3):
            r = _wrong(c)
            assert r is not None and r.status == 401
        # banned now: nothing at all, not even a keepalive or a correct password
        assert keepalive(c, bans.addr) is None
        req = register_request(c, ALICE)
        c.send(req)
        assert c.response(req, 0.5) is None
        assert keepalive(other, bans.addr) is not None
        time.sleep(2.5)
        req, ch = challenge(c, ALICE)
        r = answer(c, req, ch, ALICE, USERS[ALICE])
        assert r is not None and r.status == 200


def test_invite_failures_count_too(bans):
    with bans.client(ALICE) as c:
        for _ in range(3):
            inv = c.request("INVITE", f"sip:5550100@{REALM}", from_uri=f"sip:{ALICE}@{REALM}",
                            body="v=0\r\n")
            c.send(inv)
            ch = c.final(inv)
            bad = authorize(inv, ch, ALICE, "guess")
            c.send(bad)
            assert c.final(bad).status == 407
        assert keepalive(c, bans.addr) is None


def test_challenges_without_credentials_do_not_ban(bans):
    """The first leg of every login carries no credentials: never a failure."""
    with bans.client() as c:
        for _ in range(10):
            challenge(c, ALICE)
        assert keepalive(c, bans.addr) is not None


def test_unknown_users_count_like_wrong_passwords(bans):
    with bans.client() as c:
        for user in ("49990", "49991", "49992"):
            assert _wrong(c, user).status == 401
        assert keepalive(c, bans.addr) is None


def test_carrier_is_never_banned(bans):
    with SipClient(bans.addrs.carrier, 0, proxy=bans.addr, domain=REALM) as carrier:
        for _ in range(5):
            assert _wrong(carrier).status == 401
        assert keepalive(carrier, bans.addr) is not None
