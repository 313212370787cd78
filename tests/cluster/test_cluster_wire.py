"""Two kampx nodes on one PostgreSQL, over SIP: a registration on one node is served by the
other, a phone behind NAT is reached through the node it registered with, an unregistration
and an expiry reach every node within the stated delay, an address added once is trusted by
every node, a subscriber added on one node registers on the other."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "wire"))

import proxyctl  # noqa: E402
import wirekit  # noqa: E402
from clusterkit import SLACK_S, SYNC_BOUND_S, Cluster, wait_for  # noqa: E402
from sipclient import UAS, SipClient, ack_for, in_dialog, response_to  # noqa: E402

pytestmark = [pytest.mark.wire, pytest.mark.timeout(120)]

SUBS = wirekit.pool()[:20]
BOUND = SYNC_BOUND_S + SLACK_S


@pytest.fixture(scope="module")
def cluster(pg_server):
    pg_server.reset()
    c = Cluster(pg_server, 2, SUBS)
    yield c
    c.close()


def nat_register(phone: SipClient, node, sub, expires: int = 120) -> str:
    """REGISTER from the phone's own socket, its Via and Contact naming another address (a
    phone behind NAT: the Contact is unreachable, only the REGISTER's source is). The
    'private' address is loopback too, where nothing listens."""
    private = f"{node.addrs.client}:9"
    req = phone.request("REGISTER", f"sip:{node.realm}", from_uri=f"sip:{sub.user}@{node.realm}",
                        contact=f"<sip:{sub.user}@{private}>", expires=expires,
                        via=f"SIP/2.0/UDP {private};rport;branch=z9hG4bK{os.urandom(6).hex()}")
    phone.proxy = node.proxy
    phone.send(req)
    ch = phone.final(req)
    assert ch.status == 401, str(ch)
    from sipclient import authorize
    req2 = authorize(req, ch, sub.user, sub.password)
    phone.send(req2)
    ok = phone.final(req2)
    assert ok.status == 200, str(ok)
    return f"sip:{sub.user}@{private}"


def test_register_on_a_call_via_b_reaches_the_nat_phone_through_a(cluster):
    a, b = cluster[0], cluster[1]
    sub = SUBS[0]
    with SipClient(a.addrs.phone, 0, user=sub.user) as phone, \
            SipClient(a.addrs.carrier, 0, proxy=b.proxy) as carrier:
        contact = nat_register(phone, a, sub)
        seen, took = wait_for(lambda: b.contacts(sub.user), BOUND)
        assert seen and seen[0]["contact"] == contact, "the binding did not reach node B"
        assert seen[0]["socket"] == f"udp:{a.addrs.proxy}:5060"
        inv = wirekit.carrier_invite(carrier, b, sub.user)
        got = phone.expect(timeout=3, match=lambda m: m.is_request and m.method == "INVITE")
        # from node A's socket (the phone's NAT pinhole), to the Contact it registered
        assert got.source == (a.addrs.proxy, 5060), got.source
        assert got.uri == contact
        assert "kx-ruid" not in str(got)
        phone.send(response_to(got, 200, "OK", to_tag="ph1", copy_record_route=True), got.source)
        ok = carrier.expect_response(inv, status=200, timeout=3)
        rr = ok.get_all("record-route", split=True)
        assert len(rr) == 2, rr      # both nodes stay on the dialog's path


def test_unregister_on_b_then_call_via_a_gets_404(cluster):
    a, b = cluster[0], cluster[1]
    sub = SUBS[1]
    with SipClient(a.addrs.client, 0, proxy=a.proxy, user=sub.user) as ca, \
            SipClient(b.addrs.client, 0, proxy=b.proxy, user=sub.user) as cb, \
            SipClient(a.addrs.carrier, 0, proxy=a.proxy) as carrier:
        contact = ca.contact_uri(sub.user)
        wirekit.register(ca, a, sub, contact=contact)
        assert wait_for(lambda: b.contacts(sub.user), BOUND)[0]
        wirekit.register(cb, b, sub, contact=contact, expires=0)
        gone, took = wait_for(lambda: not a.contacts(sub.user), BOUND)
        assert gone, f"node A still has the binding {took:.2f} s after B removed it"
        inv = wirekit.carrier_invite(carrier, a, sub.user)
        assert carrier.final(inv).status == 404


def test_expiry_is_seen_on_every_node(cluster):
    a, b = cluster[0], cluster[1]
    sub = SUBS[2]
    with SipClient(b.addrs.client, 0, proxy=b.proxy, user=sub.user) as cb:
        wirekit.register(cb, b, sub, expires=2)
        assert wait_for(lambda: a.contacts(sub.user), BOUND)[0]
        gone, took = wait_for(lambda: not a.contacts(sub.user) and not b.contacts(sub.user),
                              2 + BOUND)
        assert gone
    with proxyctl_db(a) as st:       # and the row is deleted from the shared table
        assert wait_for(lambda: not [r for r in st.locations.load_all(0)
                                     if r["aor"] == sub.user], BOUND, step=0.1)[0]


def test_address_added_on_one_node_is_trusted_on_every_node(cluster):
    a, b = cluster[0], cluster[1]
    sub = SUBS[3]
    trunk_ip = b.addrs.phone            # not in the table yet: challenged like a user
    with SipClient(b.addrs.client, 0, proxy=b.proxy, user=sub.user) as cb, \
            UAS(b.addrs.client, 0, user=sub.user) as phone, \
            SipClient(trunk_ip, 0, proxy=b.proxy) as trunk:
        wirekit.register_phone(cb, b, sub, phone)
        inv = wirekit.carrier_invite(trunk, b, sub.user)
        assert trunk.final(inv).status == 407
        a.ctl("address", "add", "200", trunk_ip, "32", "0", "trunk2")
        # no reload asked for: the shared table's notification reloads every node

        def trusted():
            req = wirekit.carrier_invite(trunk, b, sub.user)
            r = trunk.final(req)
            trunk.send(ack_for(req, r) if r.status >= 300 else in_dialog("ACK", req, r))
            return r.status == 200
        ok, took = wait_for(trusted, BOUND, step=0.1)
        assert ok, "node B still challenges the address added on node A"


def test_dispatcher_row_added_on_one_node_reaches_every_node(cluster):
    """kampxctl dispatcher add on node A, no reload asked for: the shared table's
    notification reloads node B's dispatcher sets."""
    a, b = cluster[0], cluster[1]
    gateway = f"sip:{b.addrs.phone}:5099"

    def listed():
        return [d["uri"] for d in b.rpc("dispatcher.list")["destinations"]]

    assert listed() == []
    a.ctl("dispatcher", "add", "1", gateway, "0", "0", "weight=50", "gw-b")
    ok, took = wait_for(lambda: listed() == [gateway], BOUND, step=0.1)
    assert ok, "node B does not hold the dispatcher row added on node A"


def test_subscriber_added_on_a_registers_on_b(cluster):
    a, b = cluster[0], cluster[1]
    new = proxyctl.Subscriber("31337", "fresh-pw")
    a.ctl("add", new.user, new.password)
    with SipClient(b.addrs.client, 0, proxy=b.proxy, user=new.user) as cb:
        def registers():
            try:
                wirekit.register(cb, b, new)
                return True
            except AssertionError:
                return False
        assert wait_for(registers, BOUND, step=0.2)[0]
    b.ctl("rm", new.user)


class proxyctl_db:
    """The shared database as kampxctl on `node` opens it."""
    def __init__(self, node):
        from kampx import config
        from kampx.db import open_storage
        self.st = open_storage(config.load(node.config_path))

    def __enter__(self):
        return self.st

    def __exit__(self, *exc):
        self.st.close()
