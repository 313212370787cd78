"""Contract item 10: ready to answer SIP within 2 s of start, gone within 5 s of SIGTERM."""
from __future__ import annotations

import socket
import time

import pytest

import proxyctl
from wirekit import start_target
from sipclient import SipClient

READY_S = 2.0
EXIT_S = 5.0


@pytest.mark.timeout(60)
def test_ready_within_2s_and_exits_within_5s_of_sigterm():
    t = start_target()
    try:
        assert t.ready_after is not None and t.ready_after <= READY_S, \
            f"first 200 to OPTIONS after {t.ready_after:.2f}s"
        # it is really serving: a second OPTIONS from another address
        with SipClient(t.addrs.phone, 0, proxy=t.proxy) as c:
            req = c.request("OPTIONS", f"sip:{t.addrs.proxy}", contact=None)
            c.send(req)
            assert c.expect_response(req).status == 200
        pid = t.pid
        rc = t.stop(timeout=EXIT_S + 5)
        assert t.stopped_after is not None, "did not exit within 10 s of SIGTERM"
        assert t.stopped_after <= EXIT_S, f"exit took {t.stopped_after:.2f}s"
        assert rc == 0, f"exit status {rc} after SIGTERM"
        # nothing of it is left holding the SIP port
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind(t.proxy)
        finally:
            s.close()
        assert pid is not None
    finally:
        t.close()


@pytest.mark.timeout(60)
def test_sigterm_with_calls_in_progress():
    """A ringing call does not hold the proxy up at SIGTERM."""
    from sipclient import UAS, Behaviour
    from wirekit import carrier_invite, register_phone
    t = start_target()
    try:
        sub = next(iter(t.subscribers.values()))
        with SipClient(t.addrs.client, 0, proxy=t.proxy, user=sub.user, domain=t.realm) as c, \
                SipClient(t.addrs.carrier, 0, proxy=t.proxy, user="carrier") as carrier, \
                UAS(t.addrs.phone, 0, user=sub.user, behaviour=Behaviour(final=None)) as phone:
            register_phone(c, t, sub, phone)
            inv = carrier_invite(carrier, t, sub.user)
            carrier.expect_response(inv, status=180)
            rc = t.stop(timeout=EXIT_S + 5)
            assert t.stopped_after is not None and t.stopped_after <= EXIT_S, t.stopped_after
            assert rc == 0, rc
    finally:
        t.close()
