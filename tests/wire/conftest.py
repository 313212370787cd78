"""Fixtures for the wire acceptance suite: one proxy per test process (pytest-xdist workers
each start their own, on their own loopback addresses), a pool of provisioned subscribers
handed out one per use so tests never share registrations, clients and UASes."""
from __future__ import annotations

import itertools
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import proxyctl  # noqa: E402
from wirekit import pool, start_target  # noqa: E402
import sipclient  # noqa: E402

from wirekit import POOL_SIZE  # noqa: E402
DEFAULT_TIMEOUT_S = 60


def pytest_configure(config):
    config.addinivalue_line("markers", "wire: talks SIP to a real proxy on loopback")
    config.addinivalue_line("markers", "slow: waits for protocol timers (seconds)")
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit")


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.wire)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(DEFAULT_TIMEOUT_S))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """Every wire test has a time limit. pytest-timeout enforces it when installed; without
    it, this alarm does (main thread only, which is where pytest runs tests)."""
    marker = item.get_closest_marker("timeout")
    if marker is None or item.config.pluginmanager.hasplugin("timeout"):
        yield
        return
    seconds = marker.args[0] if marker.args else DEFAULT_TIMEOUT_S

    def expired(signum, frame):
        pytest.fail(f"timeout: test ran longer than {seconds}s", pytrace=False)

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def target():
    t = start_target()
    yield t
    t.close()


@pytest.fixture(scope="session")
def _pool_iter():
    return iter(pool())


@pytest.fixture
def new_subscriber(_pool_iter):
    """A factory of subscribers nobody else has used in this test process."""
    def take() -> proxyctl.Subscriber:
        try:
            return next(_pool_iter)
        except StopIteration:
            pytest.fail(f"subscriber pool exhausted: raise POOL_SIZE ({POOL_SIZE})")
    return take


@pytest.fixture
def sub(new_subscriber):
    return new_subscriber()


@pytest.fixture
def client(target, sub):
    """A user's SIP client (From = sub@realm) on the clients' address."""
    with sipclient.SipClient(target.addrs.client, 0, proxy=target.proxy, user=sub.user,
                             domain=target.realm) as c:
        yield c


@pytest.fixture
def make_client(target):
    made = []

    def make(user: str = "wire", ip: str | None = None) -> sipclient.SipClient:
        c = sipclient.SipClient(ip or target.addrs.client, 0, proxy=target.proxy, user=user,
                                domain=target.realm)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


@pytest.fixture
def carrier(target):
    """The carrier's trunk: its source address is in the carrier address group."""
    with sipclient.SipClient(target.addrs.carrier, 0, proxy=target.proxy, user="carrier",
                             domain=target.addrs.carrier) as c:
        yield c


@pytest.fixture
def make_phone(target):
    """UASes on the phones' address (a registered user's device)."""
    made = []

    def make(user: str = "phone", **behaviour) -> sipclient.UAS:
        u = sipclient.UAS(target.addrs.phone, 0, user=user,
                          behaviour=sipclient.Behaviour(**behaviour)).start()
        made.append(u)
        return u
    yield make
    for u in made:
        u.stop()


@pytest.fixture
def carrier_gw(target):
    """The carrier's gateway, where calls to unregistered numbers go."""
    u = sipclient.UAS(*target.carrier_gateway, user="gw").start()
    yield u
    u.stop()


@pytest.fixture
def is_kamailio():
    return proxyctl.target_name() == "kamailio"
