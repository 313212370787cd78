"""IPv4 and IPv6 on one proxy, over the real wire (127.x and ::1): a phone registers over
IPv6, the carrier calls it over IPv4, and the call goes both ways across the two sockets.

A request that leaves by another socket than it came in on gets two Record-Routes (Kamailio's
double Record-Route, r2=on): each side must reach the proxy at an address of its own family,
and loose_route() must take both Routes off an in-dialog request."""

from __future__ import annotations

import socket

import pytest
from authkit import AuthProxy
from proxyctl import has_ipv6_loopback
from sipclient import Request, authorize, new_branch, new_callid, new_tag, parse

PASSWORD = "alice-pw-1"


def _free_udp_port_v6() -> int:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("::1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


pytestmark = pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1 on this machine")


class Peer:
    """A UDP endpoint that sends text and reads parsed messages."""

    def __init__(self, family, ip):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(3.0)
        self.ip, self.port = ip, self.sock.getsockname()[1]
        self.hostport = f"[{ip}]:{self.port}" if ":" in ip else f"{ip}:{self.port}"

    def send(self, text: str, dest) -> None:
        self.sock.sendto(text.encode(), dest)

    def recv(self, skip_provisional: bool = False):
        while True:
            data, _ = self.sock.recvfrom(65535)
            msg = parse(data)
            if skip_provisional and not msg.is_request and msg.status < 200:
                continue
            return msg

    def close(self) -> None:
        self.sock.close()


def _lines(*lines: str) -> str:
    return "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n"


def _echo_reply(req, code: int, reason: str, to_tag: str, contact: str) -> str:
    """A UAS's reply: Via, Record-Route, From, Call-ID and CSeq as received."""
    heads = [f"SIP/2.0 {code} {reason}"]
    heads += [f"Via: {v}" for v in req.get_all("via")]
    heads += [f"Record-Route: {v}" for v in req.get_all("record-route")]
    heads += [
        f"From: {req.get('from')}",
        f"To: {req.get('to')};tag={to_tag}",
        f"Call-ID: {req.get('call-id')}",
        f"CSeq: {req.get('cseq')}",
        f"Contact: <{contact}>",
    ]
    return _lines(*heads)


@pytest.fixture
def px():
    port6 = _free_udp_port_v6()
    proxy = AuthProxy(users={"alice": PASSWORD})
    proxy.add_listen(f"udp:[::1]:{port6}")
    proxy.addr6 = ("::1", port6)
    proxy.start()
    yield proxy
    proxy.close()


def _register(px, phone) -> None:
    """REGISTER over IPv6 with digest: the contact is the phone's IPv6 address."""
    reg = Request(
        "REGISTER",
        "sip:kampx.test",
        [
            ("Via", f"SIP/2.0/UDP {phone.hostport};branch={new_branch()};rport"),
            ("From", f"<sip:alice@kampx.test>;tag={new_tag()}"),
            ("To", "<sip:alice@kampx.test>"),
            ("Call-ID", new_callid()),
            ("CSeq", "1 REGISTER"),
            ("Contact", f"<sip:alice@{phone.hostport}>"),
            ("Expires", "300"),
            ("Max-Forwards", "70"),
        ],
    )
    phone.sock.sendto(reg.encode(), px.addr6)
    challenge = phone.recv()
    assert challenge.status == 401
    phone.sock.sendto(authorize(reg, challenge, "alice", PASSWORD).encode(), px.addr6)
    registered = phone.recv()
    assert registered.status == 200 and f"alice@{phone.hostport}" in registered.get("contact")


def _call(px, phone, carrier):
    """The carrier calls alice (registered over IPv6), she answers, the carrier ACKs:
    (the INVITE as the phone got it, Call-ID, the carrier's tag)."""
    v4, port6 = px.addrs.proxy, px.addr6[1]
    # the carrier's INVITE over IPv4 reaches the phone over IPv6, Record-Routed twice
    call_id, ftag = new_callid(), new_tag()
    carrier.send(
        _lines(
            "INVITE sip:alice@kampx.test SIP/2.0",
            f"Via: SIP/2.0/UDP {carrier.hostport};branch={new_branch()}",
            f"From: <sip:+15550100@{carrier.ip}>;tag={ftag}",
            "To: <sip:alice@kampx.test>",
            f"Call-ID: {call_id}",
            "CSeq: 1 INVITE",
            f"Contact: <sip:gw@{carrier.hostport}>",
            "Max-Forwards: 70",
        ),
        (v4, 5060),
    )
    inv = phone.recv()
    assert inv.is_request and inv.method == "INVITE"
    assert inv.get_all("via")[0].startswith(f"SIP/2.0/UDP [::1]:{port6};")
    assert inv.get_all("record-route") == [
        f"<sip:[::1]:{port6};r2=on;lr>",
        f"<sip:{v4};r2=on;lr>",
    ]
    phone.send(_echo_reply(inv, 200, "OK", "callee", f"sip:alice@{phone.hostport}"), px.addr6)
    answer = carrier.recv(skip_provisional=True)
    assert answer.status == 200
    routes = answer.get_all("record-route")[::-1]  # the caller's route set
    assert routes[0] == f"<sip:{v4};r2=on;lr>"

    # the carrier's ACK along its route set: both Routes of ours are taken off
    carrier.send(
        _lines(
            f"ACK sip:alice@{phone.hostport} SIP/2.0",
            f"Via: SIP/2.0/UDP {carrier.hostport};branch={new_branch()}",
            *(f"Route: {r}" for r in routes),
            f"From: <sip:+15550100@{carrier.ip}>;tag={ftag}",
            "To: <sip:alice@kampx.test>;tag=callee",
            f"Call-ID: {call_id}",
            "CSeq: 1 ACK",
            "Max-Forwards: 70",
        ),
        (v4, 5060),
    )
    ack = phone.recv()
    assert ack.method == "ACK" and not ack.get_all("route")
    return inv, call_id, ftag


def test_ipv6_phone_called_from_the_ipv4_carrier_both_ways(px):
    phone = Peer(socket.AF_INET6, "::1")
    carrier = Peer(socket.AF_INET, px.addrs.carrier)
    v4, port6 = px.addrs.proxy, px.addr6[1]
    try:
        # the keepalive over IPv6: answered, received/rport in the IPv6 form
        phone.send(
            _lines(
                f"OPTIONS sip:[::1]:{port6} SIP/2.0",
                f"Via: SIP/2.0/UDP {phone.hostport};branch={new_branch()};rport",
                f"From: <sip:ka@[::1]>;tag={new_tag()}",
                "To: <sip:[::1]>",
                f"Call-ID: {new_callid()}",
                "CSeq: 1 OPTIONS",
                "Max-Forwards: 70",
            ),
            px.addr6,
        )
        ok = phone.recv()
        assert ok.status == 200
        assert f"rport={phone.port}" in ok.get("via") and "received=::1" in ok.get("via")

        _register(px, phone)
        inv, call_id, ftag = _call(px, phone, carrier)

        # the phone hangs up over IPv6 along its route set: the carrier gets it over IPv4
        phone.send(
            _lines(
                f"BYE sip:gw@{carrier.hostport} SIP/2.0",
                f"Via: SIP/2.0/UDP {phone.hostport};branch={new_branch()};rport",
                *(f"Route: {r}" for r in inv.get_all("record-route")),
                "From: <sip:alice@kampx.test>;tag=callee",
                f"To: <sip:+15550100@{carrier.ip}>;tag={ftag}",
                f"Call-ID: {call_id}",
                "CSeq: 1 BYE",
                "Max-Forwards: 70",
            ),
            px.addr6,
        )
        bye = carrier.recv()
        assert bye.method == "BYE" and not bye.get_all("route")
        assert bye.get_all("via")[0].startswith(f"SIP/2.0/UDP {v4};")
        carrier.send(_echo_reply(bye, 200, "OK", ftag, f"sip:gw@{carrier.hostport}"), (v4, 5060))
        assert phone.recv().status == 200
    finally:
        phone.close()
        carrier.close()


def test_dlg_end_sends_each_side_its_bye_from_a_socket_of_its_family(px):
    phone = Peer(socket.AF_INET6, "::1")
    carrier = Peer(socket.AF_INET, px.addrs.carrier)
    v4, port6 = px.addrs.proxy, px.addr6[1]
    try:
        _register(px, phone)
        _, call_id, _ = _call(px, phone, carrier)
        out = px.ctl("dlg", "end", call_id).stdout
        assert f"[::1]:{phone.port}" in out and f"{carrier.ip}:{carrier.port}" in out
        to_phone, to_carrier = phone.recv(), carrier.recv()
        assert to_phone.method == to_carrier.method == "BYE"
        assert to_phone.get_all("via")[0].startswith(f"SIP/2.0/UDP [::1]:{port6};")
        assert to_carrier.get_all("via")[0].startswith(f"SIP/2.0/UDP {v4};")
    finally:
        phone.close()
        carrier.close()


def test_a_call_on_one_socket_keeps_a_single_record_route(px):
    """The double Record-Route is only for requests that cross sockets."""
    callee = Peer(socket.AF_INET, px.addrs.phone)
    carrier = Peer(socket.AF_INET, px.addrs.carrier)
    v4 = px.addrs.proxy
    try:
        carrier.send(
            _lines(
                f"INVITE sip:bob@{callee.hostport} SIP/2.0",
                f"Via: SIP/2.0/UDP {carrier.hostport};branch={new_branch()}",
                f"From: <sip:+15550100@{carrier.ip}>;tag={new_tag()}",
                f"To: <sip:bob@{callee.hostport}>",
                f"Call-ID: {new_callid()}",
                "CSeq: 1 INVITE",
                f"Contact: <sip:gw@{carrier.hostport}>",
                "Max-Forwards: 70",
            ),
            (v4, 5060),
        )
        reply = carrier.recv(skip_provisional=True)
        # the built-in script answers a carrier's call to an unregistered user with 404;
        # what matters here is that nothing reached the callee with two Record-Routes
        assert reply.status == 404
        callee.sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            callee.recv()
    finally:
        callee.close()
        carrier.close()
