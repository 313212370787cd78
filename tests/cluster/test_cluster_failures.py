"""The failure table of docs/scale-out.md, over SIP with a real PostgreSQL: the database
restarted under two nodes, a node killed, a node started after the others."""
from __future__ import annotations

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "wire"))

import proxyctl  # noqa: E402
import wirekit  # noqa: E402
from clusterkit import SLACK_S, SYNC_BOUND_S, Cluster, Node, wait_for  # noqa: E402
from sipclient import UAS, SipClient  # noqa: E402

pytestmark = [pytest.mark.wire, pytest.mark.timeout(150)]

SUBS = wirekit.pool()[:10]
BOUND = SYNC_BOUND_S + SLACK_S
# the db writer retries a lost server with back-off up to 10 s (kampx/db/postgres.py), then
# resyncs: the time for a node to be level again after the server is back
RECOVERY_S = 10.0 * 1.2 + BOUND + 3


@pytest.fixture
def cluster(pg):
    made = []

    def make(n: int = 2):
        c = Cluster(pg, n, SUBS)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def call_via(node, carrier_ip: str, sub, phone: UAS) -> None:
    """A carrier call for `sub` through `node`, answered by `phone` (checked)."""
    with SipClient(carrier_ip, 0, proxy=node.proxy) as carrier:
        inv = wirekit.carrier_invite(carrier, node, sub.user)
        wirekit.answered_call(carrier, inv, phone)


def log_has(node, text: str) -> bool:
    with open(node.log_path, errors="replace") as f:
        return text in f.read()


def test_database_restart_nodes_serve_from_memory_and_lose_nothing(pg, cluster):
    c = cluster(2)
    a, b = c[0], c[1]
    s0, s1 = SUBS[0], SUBS[1]
    with UAS(a.addrs.phone, user=s0.user) as p0, \
            UAS(a.addrs.client, user=s1.user) as p1, \
            SipClient(a.addrs.phone, 0, proxy=a.proxy) as ca:
        wirekit.register_phone(ca, a, s0, p0)
        assert wait_for(lambda: b.contacts(s0.user), BOUND)[0]
        pg.stop()
        # lookups from shared memory: both nodes still route calls
        call_via(b, a.addrs.carrier, s0, p0)
        call_via(a, a.addrs.carrier, s0, p0)
        # a REGISTER is authenticated from the node's replica and acknowledged: queued in
        # the node's table until the database is back, said clearly in the log
        wirekit.register_phone(ca, a, s1, p1)
        assert wait_for(lambda: log_has(a, "location changes not written"), 5, step=0.1)[0]
        assert not b.contacts(s1.user)
        time.sleep(1.5)
        pg.start()
        seen, took = wait_for(lambda: b.contacts(s1.user), RECOVERY_S, step=0.1)
        assert seen, "the registration acknowledged during the outage never reached node B"
        assert log_has(a, "location changes reach the database again")
        call_via(b, a.addrs.carrier, s1, p1)
    # and it is in the database itself
    with open_db(a) as st:
        assert {r["aor"] for r in st.locations.load_all(0)} >= {s0.user, s1.user}


def test_node_killed_the_others_keep_serving_its_registrations(cluster):
    c = cluster(2)
    a, b = c[0], c[1]
    sub = SUBS[2]
    with UAS(a.addrs.phone, user=sub.user) as phone, \
            SipClient(a.addrs.client, 0, proxy=a.proxy) as ca:
        wirekit.register_phone(ca, a, sub, phone)
        assert wait_for(lambda: b.contacts(sub.user), BOUND)[0]
        a.kill()
        time.sleep(SYNC_BOUND_S)
        assert b.contacts(sub.user), "node B dropped the killed node's binding"
        phone.received.clear()
        call_via(b, a.addrs.carrier, sub, phone)
        # delivered by B itself: the phone is not behind NAT, it needs no particular node
        assert phone.requests("INVITE")[0].source == (b.addrs.proxy, 5060)


def test_node_started_later_loads_the_current_state(pg, cluster):
    c = cluster(1)
    a = c[0]
    sub, new = SUBS[3], proxyctl.Subscriber("40404", "late-pw")
    late = Node(pg, "B")
    try:
        trunk_ip = late.addrs.carrier
        with UAS(a.addrs.phone, user=sub.user) as phone, \
                SipClient(a.addrs.client, 0, proxy=a.proxy) as ca:
            wirekit.register_phone(ca, a, sub, phone)
            a.ctl("add", new.user, new.password)
            a.ctl("address", "add", "200", trunk_ip, "32", "0", "trunk")
            with open_db(a) as st:          # A has written the binding behind
                assert wait_for(lambda: st.locations.count() == 1, BOUND, step=0.05)[0]
            late.start()
            # from its first packet: the binding, the subscriber, the address
            assert late.contacts(sub.user)[0]["contact"] == f"sip:{sub.user}@{phone.ip}:{phone.port}"
            with SipClient(late.addrs.client, 0, proxy=late.proxy, user=new.user) as cl:
                wirekit.register(cl, late, new)
            call_via(late, trunk_ip, sub, phone)
    finally:
        late.close()


class open_db:
    """The shared database as kampxctl on `node` opens it."""

    def __init__(self, node):
        from kampx import config
        from kampx.db import open_storage
        self.st = open_storage(config.load(node.config_path))

    def __enter__(self):
        return self.st

    def __exit__(self, *exc):
        self.st.close()


def test_three_nodes_share_one_state_and_survive_the_loss_of_one(cluster):
    """Every change made on one node of three reaches the other two; with the middle node
    killed, the remaining two still agree."""
    c = cluster(3)
    a, b, third = c[0], c[1], c[2]
    sub = SUBS[4]
    with UAS(a.addrs.phone, user=sub.user) as phone, \
            SipClient(a.addrs.client, 0, proxy=a.proxy) as ca, \
            SipClient(third.addrs.client, 0, proxy=third.proxy) as cc:
        contact = wirekit.register_phone(ca, a, sub, phone)
        for node in (b, third):
            seen, _ = wait_for(lambda n=node: n.contacts(sub.user), BOUND)
            assert seen and seen[0]["contact"] == contact, f"node {node.node} lacks the binding"
        # a trunk trusted on B is trusted on the third node, whose replica finds A's binding
        trunk_ip = b.addrs.carrier
        b.ctl("address", "add", "200", trunk_ip, "32", "0", "trunk-b")
        seen, _ = wait_for(lambda: any(r["ip_addr"] == trunk_ip for r in
                                       third.rpc("permissions.addressDump")["rows"]), BOUND)
        assert seen, "the address added on B did not reach the third node"
        call_via(third, trunk_ip, sub, phone)
        b.kill()
        # the unregistration on the third node reaches A; the dead node is not needed
        wirekit.register(cc, third, sub, contact=contact, expires=0)
        gone, took = wait_for(lambda: not a.contacts(sub.user), BOUND)
        assert gone, f"node A still has the binding {took:.2f} s after the third removed it"
        with SipClient(trunk_ip, 0, proxy=a.proxy) as trunk:
            inv = wirekit.carrier_invite(trunk, a, sub.user)
            assert trunk.final(inv).status == 404
