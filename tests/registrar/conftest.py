"""Fixtures of the registrar wire tests: one kampx with the registrar test script per module,
clients and phones on its loopback addresses."""
from __future__ import annotations

import pytest

from regkit import start_proxy
from sipclient import UAS, SipClient

pytestmark = pytest.mark.wire


@pytest.fixture(scope="module")
def proxy():
    px = start_proxy()
    yield px
    px.close()


@pytest.fixture
def client(proxy):
    c = SipClient(proxy.addrs.client, 0, proxy=proxy.addr, user="alice")
    yield c
    c.close()


@pytest.fixture
def carrier(proxy):
    c = SipClient(proxy.addrs.carrier, 0, proxy=proxy.addr, user="carrier")
    yield c
    c.close()


@pytest.fixture
def make_phone(proxy):
    phones = []

    def make(ip: str | None = None, user: str = "phone") -> UAS:
        p = UAS(ip or proxy.addrs.phone, 0, user=user).start()
        phones.append(p)
        return p
    yield make
    for p in phones:
        p.stop()
