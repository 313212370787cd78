"""lookup("location") on the wire: the call reaches the registered contact, its NAT source
or its Path, also after kampx restarted."""
from __future__ import annotations

import time

import pytest

from regkit import bound, db_rows, invite, kill_all, nat_via, new_user, register, wait_for
from sipclient import UAS, SipClient


def test_relay_to_the_contact_verbatim(client, carrier, proxy, make_phone):
    """A third party (the client) registers the phone's contact: Via = source, so no NAT:
    the INVITE goes to the Contact itself, its URI unchanged."""
    user = new_user()
    phone = make_phone()
    contact = f"{phone.contact};transport=udp;line=7f"
    register(client, proxy, user, f"<{contact}>")
    req, r = invite(carrier, proxy, user)
    got = phone.expect("INVITE")
    assert got.uri == contact
    assert r is not None and r.status == 200
    assert got.get("record-route") is None   # the test script does not record-route


def test_call_forks_to_every_binding(client, carrier, proxy, make_phone):
    """Kamailio's lookup() appends a branch per further binding; the call rings all of them
    and the first 200 wins."""
    from sipclient import Behaviour
    user = new_user()
    a = make_phone()
    b = make_phone()
    a.behaviour = Behaviour(final=None)           # rings until cancelled
    register(client, proxy, user, f"<{a.contact}>")
    register(client, proxy, user, f"<{b.contact}>")
    req, r = invite(carrier, proxy, user)
    ia, ib = a.expect("INVITE"), b.expect("INVITE")
    assert ia.branch != ib.branch
    assert r is not None and r.status == 200
    a.expect("CANCEL", timeout=3)                 # the losing branch is cancelled


def test_unregistered_user_is_404(carrier, proxy):
    _, r = invite(carrier, proxy, new_user())
    assert (r.status, r.reason) == (404, "User not Registered")


def test_nat_relay_to_the_received_address(carrier, proxy, make_phone):
    """A phone behind NAT: its Via and Contact name a private address (here an unused
    loopback port), the REGISTER arrives from the NAT's public one (the phone's socket).
    The call goes to where the REGISTER came from, R-URI still the private Contact."""
    user = new_user()
    phone = make_phone()
    private = (proxy.addrs.client, 5998)            # nobody listens there
    contact = f"sip:{user}@{private[0]}:{private[1]}"
    sender = SipClient(phone.ip, 0, proxy=proxy.addr)   # builds the request only
    try:
        req = sender.request("REGISTER", f"sip:{proxy.addrs.proxy}",
                             from_uri=f"sip:{user}@kampx.test", contact=f"<{contact}>",
                             expires=60, via=nat_via(*private))
    finally:
        sender.close()
    phone.send_raw(req.encode(), proxy.addr)
    ok = wait_for(lambda: [m for m in phone.received if not m.is_request
                           and m.call_id == req.get("call-id")], 2.0)
    assert ok and ok[0].status == 200
    assert ok[0].get_all("contact") == [f"<{contact}>;expires=60"]
    invite(carrier, proxy, user)
    got = phone.expect("INVITE")
    assert got.uri == contact


def test_path_becomes_route_and_first_hop(client, carrier, proxy, make_phone):
    user = new_user()
    edge = make_phone(user="edge")
    edge_uri = f"sip:{edge.ip}:{edge.port};lr"
    contact = f"sip:{user}@{proxy.addrs.client}:5997"
    path = f"<{edge_uri}>, <sip:{proxy.addrs.client}:5996;lr>"
    _, ok = register(client, proxy, user, f"<{contact}>",
                     headers=[("Path", path), ("Supported", "path")])
    assert ok.status == 200
    assert ok.get("path") == path       # echoed: the REGISTER said Supported: path
    _, ok = register(client, proxy, user, contact=None, expires=None)
    assert ok.get("path") is None
    invite(carrier, proxy, user)
    got = edge.expect("INVITE")
    assert got.uri == contact
    assert got.get_all("route", split=True) == [f"<{edge_uri}>", f"<sip:{proxy.addrs.client}:5996;lr>"]


def test_register_without_supported_path_gets_no_path_back(client, proxy):
    user = new_user()
    _, ok = register(client, proxy, user, headers=[("Path", f"<sip:{proxy.addrs.phone}:5070;lr>")])
    assert ok.status == 200 and ok.get("path") is None


@pytest.mark.timeout(60)
def test_restart_between_register_and_call():
    from regkit import start_proxy
    px = start_proxy()
    phone = UAS(px.addrs.phone, 0).start()
    try:
        with SipClient(px.addrs.client, 0, proxy=px.addr) as c, \
                SipClient(px.addrs.carrier, 0, proxy=px.addr) as carrier:
            user, gone = new_user(), new_user()
            register(c, px, user, f"<{phone.contact}>", expires=300)
            register(c, px, gone, f"<{phone.contact};x=gone>", expires=2)
            assert px.stop() == 0, px.log_tail()
            time.sleep(2.5)                         # `gone` expires while kampx is down
            px.start()
            assert bound(c, px, gone) == []
            [listed] = bound(c, px, user)
            assert listed.startswith(f"<{phone.contact}>;expires=")
            remaining = int(listed.rsplit("=", 1)[1])
            assert 290 <= remaining <= 298          # the absolute expiry survived
            invite(carrier, px, user)
            assert phone.expect("INVITE").uri == phone.contact
            assert not [r for r in db_rows(px) if r["username"] == gone], \
                "rows that expired while kampx was down are deleted at start"
    finally:
        phone.stop()
        px.close()


@pytest.mark.timeout(60)
def test_kill_9_of_the_whole_proxy_keeps_what_is_a_second_old():
    """The durability promise (docs/architecture.md): SIGKILL of every kampx process loses
    at most the last second of binding changes."""
    from regkit import start_proxy
    px = start_proxy()
    phone = UAS(px.addrs.phone, 0).start()
    try:
        with SipClient(px.addrs.client, 0, proxy=px.addr) as c, \
                SipClient(px.addrs.carrier, 0, proxy=px.addr) as carrier:
            user, dropped = new_user(), new_user()
            register(c, px, user, f"<{phone.contact}>")
            register(c, px, dropped, f"<{phone.contact};x=1>")
            register(c, px, dropped, f"<{phone.contact};x=1>", expires=0)
            time.sleep(1.2)
            kill_all(px)
            px.start()
            invite(carrier, px, user)
            assert phone.expect("INVITE").uri == phone.contact
            assert bound(c, px, dropped) == [], "a removal is as durable as a registration"
    finally:
        phone.stop()
        px.close()
