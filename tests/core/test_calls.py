"""The proxy core on the wire: a real kampx (static relay script, several workers) between a
UAC and a UAS on loopback. Calls, timers, CANCEL, ACK, and transactions whose packets land on
a worker other than the one that owns them."""
from __future__ import annotations

import collections
import re
import time

import pytest

import sipprun
from kampxproc import KampxProcess
from sipclient import UAS, Behaviour, SipClient, ack_for, cancel_for, in_dialog

pytestmark = [pytest.mark.wire, pytest.mark.timeout(120)]

TIMERS = {"t1_ms": 100, "t2_ms": 400, "fr_timer_ms": 1500, "fr_inv_timer_ms": 2500}
BRANCH_OWNER = re.compile(r"branch=z9hG4bKkx([0-9a-f]{2})")


@pytest.fixture
def uas_addr():
    return {}


def start_proxy(children=3, next_hop=None, **tm):
    px = KampxProcess(children=children, config={"tm": {**TIMERS, **tm}})
    px.env["KAMPX_NEXT_HOP"] = next_hop or f"{px.addrs.phone}:5062"
    return px.start()


@pytest.fixture
def proxy():
    px = start_proxy()
    yield px
    px.close()


@pytest.fixture
def uas(proxy):
    u = UAS(proxy.addrs.phone, 5062).start()
    yield u
    u.stop()


@pytest.fixture
def client(proxy):
    c = SipClient(proxy.addrs.client, 0, proxy=proxy.addr, user="alice")
    yield c
    c.close()


def invite(client, proxy, **kw):
    req = client.request("INVITE", f"sip:bob@{proxy.addrs.proxy}", body="v=0\r\n", **kw)
    client.send(req)
    return req


def responses_until_final(client, req, timeout=5.0):
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = client.recv(deadline - time.monotonic(), match=lambda m: not m.is_request and m.call_id == req.get("Call-ID"))
        if m is None:
            break
        out.append(m)
        if m.status >= 200:
            break
    return out


def test_call_setup_and_teardown(proxy, uas, client):
    req = invite(client, proxy)
    rs = responses_until_final(client, req)
    assert [r.status for r in rs][0] == 100
    assert rs[-1].status == 200
    assert rs[-1].get("Record-Route") == f"<sip:{proxy.addrs.proxy};lr>"
    client.send(in_dialog("ACK", req, rs[-1]))
    bye = in_dialog("BYE", req, rs[-1])
    client.send(bye)
    assert client.final(bye).status == 200
    got = uas.wait_for("BYE")
    assert got is not None
    inv = uas.requests("INVITE")[0]
    assert inv.get("Max-Forwards") == "69"
    vias = inv.get_all("Via", split=True)
    assert len(vias) == 2 and vias[0].startswith(f"SIP/2.0/UDP {proxy.addrs.proxy};branch=z9hG4bK")
    assert f"received={client.ip}" in vias[1] and f"rport={client.port}" in vias[1]
    assert uas.wait_for("ACK") is not None


def test_unanswered_invite_is_retransmitted_then_408(proxy, uas, client):
    uas.behaviour = Behaviour(silent=True)
    req = invite(client, proxy)
    rs = responses_until_final(client, req, timeout=6)
    assert rs[0].status == 100
    assert rs[-1].status == 408 and rs[-1].reason == "Request Timeout"
    copies = uas.requests("INVITE")
    # timer A: the proxy retransmits on its own (T1 = 100 ms, doubling) before fr_timer
    assert len(copies) >= 3
    assert len({c.branch for c in copies}) == 1
    client.send(ack_for(req, rs[-1]))
    time.sleep(0.3)
    assert uas.requests("ACK") == []     # the upstream ACK for the proxy's 408 is absorbed


def test_ringing_then_fr_inv_timer_cancels_downstream(proxy, uas, client):
    uas.behaviour = Behaviour(final=None)          # rings for ever
    req = invite(client, proxy)
    rs = responses_until_final(client, req, timeout=8)
    assert [r.status for r in rs][-2:] == [180, 408]
    assert uas.wait_for("CANCEL", timeout=2) is not None


def test_lost_200_client_retransmits_invite(proxy, uas, client):
    req = invite(client, proxy)
    rs = responses_until_final(client, req)
    assert rs[-1].status == 200
    client.send(req)                     # "our 200 got lost": retransmit the INVITE
    again = client.response(req, 2.0, status=200)
    assert again is not None and again.to_tag == rs[-1].to_tag
    time.sleep(0.3)
    assert len(uas.requests("INVITE")) == 1      # never relayed twice
    client.send(in_dialog("ACK", req, rs[-1]))


def test_uas_2xx_retransmissions_are_forwarded(proxy, uas, client):
    uas.behaviour = Behaviour(retransmit_2xx=2, drop_first_200=True)
    req = invite(client, proxy)
    rs = responses_until_final(client, req)
    assert rs[-1].status == 200
    more = client.quiet(2.0, match=lambda m: not m.is_request and m.status == 200)
    assert len(more) >= 1              # retransmitted 2xx went through the proxy too
    client.send(in_dialog("ACK", req, rs[-1]))


def test_cancel_gets_200_and_487(proxy, uas, client):
    uas.behaviour = Behaviour(final=None)
    req = invite(client, proxy)
    client.response(req, 2.0, status=180)
    cancel = cancel_for(req)
    client.send(cancel)
    ok = client.response(cancel, 2.0)
    assert ok is not None and ok.status == 200
    final = client.final(req, 3.0)
    assert final is not None and final.status == 487
    down = uas.wait_for("CANCEL")
    assert down.branch == uas.requests("INVITE")[0].branch     # same branch downstream
    client.send(ack_for(req, final))
    time.sleep(0.3)
    acks = uas.requests("ACK")
    assert len(acks) == 1                 # the proxy's own hop-by-hop ACK, not ours


def test_stray_cancel_is_not_answered_nor_relayed(proxy, uas, client):
    req = client.request("INVITE", f"sip:bob@{proxy.addrs.proxy}")
    cancel = cancel_for(req)
    client.send(cancel)
    assert client.recv(0.8) is None
    assert uas.requests() == []


def test_non_2xx_final_acked_hop_by_hop(proxy, uas, client):
    uas.behaviour = Behaviour(final=486)
    req = invite(client, proxy)
    rs = responses_until_final(client, req)
    assert rs[-1].status == 486
    ack = uas.wait_for("ACK")
    assert ack is not None and ack.branch == uas.requests("INVITE")[0].branch
    client.send(ack_for(req, rs[-1]))
    time.sleep(0.3)
    assert len(uas.requests("ACK")) == 1


def test_503_becomes_local_500(proxy, uas, client):
    uas.behaviour = Behaviour(final=503, final_reason="Overloaded Right Now")
    req = invite(client, proxy)
    rs = responses_until_final(client, req)
    assert rs[-1].status == 500 and rs[-1].reason == "Service Unavailable"
    assert [r.status for r in rs].count(100) == 1    # 100 is ours alone, never forwarded


def test_bye_retransmission_answered_once_relayed(proxy, uas, client):
    req = invite(client, proxy)
    rs = responses_until_final(client, req)
    client.send(in_dialog("ACK", req, rs[-1]))
    bye = in_dialog("BYE", req, rs[-1])
    client.send(bye)
    first = client.final(bye)
    client.send(bye)
    second = client.final(bye)
    assert first.status == second.status == 200
    time.sleep(0.3)
    assert len(uas.requests("BYE")) == 1


def test_cross_worker_cancel_and_retransmissions(proxy, uas):
    """Calls in bursts from many source ports: with 3 workers on one socket, CANCELs,
    retransmissions and replies reach workers that do not own the transaction (the proxy's
    hand-off counter proves it); every one must still be matched exactly once."""
    uas.behaviour = Behaviour(final=None)
    n = 24
    received_before = _requests_by_method(proxy)
    clients = [SipClient(proxy.addrs.client, 0, proxy=proxy.addr, user=f"u{i}") for i in range(n)]
    try:
        reqs = [invite(c, proxy) for c in clients]
        for c, req in zip(clients, reqs):
            assert c.response(req, 3.0, status=180) is not None, proxy.log_tail()
        cancels = [cancel_for(req) for req in reqs]
        for c, req, cancel in zip(clients, reqs, cancels):
            c.send(req)                                    # a retransmission ...
            c.send(cancel)                                 # ... and the CANCEL, in a burst
        for c, req, cancel in zip(clients, reqs, cancels):
            assert c.response(cancel, 2.0).status == 200
            final = c.final(req, 3.0)
            assert final is not None and final.status == 487
            c.send(ack_for(req, final))
    finally:
        for c in clients:
            c.close()
    time.sleep(0.3)
    invites = {m.branch: m for m in uas.requests("INVITE")}
    assert len(invites) == n                               # none relayed twice
    assert len({m.branch for m in uas.requests("CANCEL")}) == n
    assert proxy.metric("kampx_core_handoffs_total") > 0   # the foreign-packet path ran
    # a datagram is counted once, where it arrived, not again by the worker it is handed to
    received = _requests_by_method(proxy)
    sent = {"INVITE": 2 * n, "CANCEL": n, "ACK": n}
    assert {m: received[m] - received_before.get(m, 0) for m in sent} == sent


def _requests_by_method(proxy) -> dict:
    out = {}
    for line in proxy.metrics_text().splitlines():
        if line.startswith("kampx_core_rcv_requests_total{"):
            method = line.split('method="', 1)[1].split('"', 1)[0]
            out[method] = float(line.rsplit(" ", 1)[1])
    return out


def test_duplicate_datagrams_racing_in_two_workers_are_relayed_once(proxy, uas):
    """Each INVITE sent twice back to back: two workers often run the script on the two
    copies at the same time. The shared index lets one claim the transaction; the other copy
    is handed to it as a retransmission. Every call goes downstream on exactly one branch."""
    uas.behaviour = Behaviour(final=486)
    n = 40
    with SipClient(proxy.addrs.client, 0, proxy=proxy.addr) as c:
        reqs = [c.request("INVITE", f"sip:bob{i}@{proxy.addrs.proxy}", body="v=0\r\n")
                for i in range(n)]
        for req in reqs:
            data = req.encode()
            c.send(data)
            c.send(data)
        for req in reqs:
            assert c.final(req, 5.0).status == 486
    time.sleep(0.3)
    branches = collections.defaultdict(set)
    for m in uas.requests("INVITE"):
        branches[m.call_id].add(m.branch)
    assert len(branches) == n
    assert all(len(b) == 1 for b in branches.values()), branches


@pytest.mark.skipif(not sipprun.available(), reason="SIPp (sip-tester) not installed")
def test_sipp_calls_all_succeed():
    px = start_proxy(children=2)
    try:
        uas = sipprun.Sipp("uas_call.xml", (px.addrs.phone, 5062), timeout=60)
        uac = sipprun.Sipp("uac_call.xml", (px.addrs.client, 5064), px.addr, calls=200, rate=100,
                           timeout=40)
        res = uac.wait()
        uas.stop()
        assert res.successful == 200 and res.failed == 0, res.out
    finally:
        px.close()


def test_trunk_from_one_source_spreads_over_workers():
    """One source IP:port (a carrier trunk): each worker relays a share. The owner of each
    relayed INVITE is written in its branch, so the UAS counts per worker. The INVITEs are
    paced (a trunk's calls arrive spread out, not in one burst), so what is measured is the
    workers taking turns, not which of them the scheduler ran during a burst on a busy box."""
    px = start_proxy(children=3)
    try:
        with UAS(px.addrs.phone, 5062, behaviour=Behaviour(final=486)) as uas, \
                SipClient(px.addrs.carrier, 5070, proxy=px.addr) as trunk:
            n = 300
            for i in range(n):
                trunk.send(trunk.request("INVITE", f"sip:{i}@{px.addrs.proxy}"))
                time.sleep(0.002)
            deadline = time.monotonic() + 10
            branches = {}
            while len(branches) < n and time.monotonic() < deadline:
                time.sleep(0.1)
                # one entry per relayed INVITE: the proxy's own retransmissions share a branch
                branches = {m.branch: m for m in uas.requests("INVITE")}
            owners = collections.Counter(BRANCH_OWNER.search(m.get("Via")).group(1)
                                         for m in branches.values())
        assert sum(owners.values()) == n
        assert len(owners) == 3, owners
        assert min(owners.values()) >= n // 6, owners      # turns, not just "someone idle"
    finally:
        px.close()


def test_replies_are_steered_to_the_worker_that_owns_the_call():
    """The kernel delivers each reply to its owner's reply socket (kampx/transport/
    steering.py): a trunk's calls spread over 3 workers (each relays a share) and not one
    of their replies needs a hand-off; every one arrived on a worker's own socket."""
    px = start_proxy(children=3)
    try:
        with UAS(px.addrs.phone, 5062, behaviour=Behaviour(final=486)) as uas, \
                SipClient(px.addrs.carrier, 5070, proxy=px.addr) as trunk:
            steered_before = px.metric("kampx_core_steered_datagrams_total")
            n = 60
            reqs = []
            for i in range(n):
                reqs.append(trunk.request("INVITE", f"sip:{i}@{px.addrs.proxy}"))
                trunk.send(reqs[-1])
                time.sleep(0.002)
            finals = [trunk.final(r, 5.0) for r in reqs]
            assert all(f is not None and f.status == 486 for f in finals)
            owners = {BRANCH_OWNER.search(m.get("Via")).group(1) for m in uas.requests("INVITE")}
            assert len(owners) == 3, owners                  # all three workers own calls
            replies = sum(1 for _, data in uas.sent if data.startswith(b"SIP/2.0 "))
        assert px.metric("kampx_core_handoffs_total") == 0, px.log_tail()
        assert px.metric("kampx_core_steered_datagrams_total") - steered_before >= replies
    finally:
        px.close()
