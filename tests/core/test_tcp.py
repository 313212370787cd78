"""SIP over TCP, over the real wire on loopback: framing (RFC 3261 18.3), keep-alives (RFC
5626 3.5.1), the limits that close a connection, a phone registered over TCP reached on its
own connection by a call from the UDP carrier, a connection lost mid-call, and a carrier
reached over a TCP connection the proxy opens (transport=tcp)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
from authkit import AuthProxy
from proxyctl import has_ipv6_loopback
from sipclient import Request, authorize, new_branch, new_callid, new_tag, parse
from streamclient import (
    StreamPeer,
    StreamServer,
    UdpPeer,
    echo_reply,
    lines,
    options,
    outbound_invite,
    register,
)

PASSWORD = "alice-pw-1"
GW_PORT = 5070


def _proxy(config: dict | None = None, carrier_params: str = "") -> AuthProxy:
    """kampx on udp: and tcp: PROXY:5060; `carrier_params` go on the carrier's URI."""
    px = AuthProxy(users={"alice": PASSWORD, "bob": "bob-pw-1"}, config=config)
    px.add_listen(f"tcp:{px.addrs.proxy}:5060")
    if carrier_params:
        px.set_carrier(f"sip:{px.addrs.carrier}:{GW_PORT}{carrier_params}")
    return px.start()


@pytest.fixture
def px():
    proxy = _proxy()
    yield proxy
    proxy.close()


def _phone(px) -> StreamPeer:
    return StreamPeer.connect(px.addrs.phone, (px.addrs.proxy, 5060))


def _options(peer: StreamPeer, proxy_ip: str) -> str:
    return options(peer, f"sip:{proxy_ip}")


def _register(px, phone: StreamPeer, user: str = "alice", password: str = PASSWORD) -> None:
    """REGISTER over the connection with digest; the Contact names the phone's port."""
    register(phone, user, password, ";transport=tcp")


class Carrier:
    """The carrier over UDP, from the address in the carrier group."""

    def __init__(self, px):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((px.addrs.carrier, 0))
        self.sock.settimeout(3.0)
        self.ip, self.port = px.addrs.carrier, self.sock.getsockname()[1]
        self.hostport = f"{self.ip}:{self.port}"
        self.proxy = (px.addrs.proxy, 5060)

    def send(self, text: str) -> None:
        self.sock.sendto(text.encode(), self.proxy)

    def recv(self, skip_provisional: bool = False):
        while True:
            msg = parse(self.sock.recvfrom(65535)[0])
            if skip_provisional and not msg.is_request and msg.status < 200:
                continue
            return msg

    def invite(self, call_id: str, ftag: str) -> None:
        self.send(
            lines(
                "INVITE sip:alice@kampx.test SIP/2.0",
                f"Via: SIP/2.0/UDP {self.hostport};branch={new_branch()}",
                f"From: <sip:+15550100@{self.ip}>;tag={ftag}",
                "To: <sip:alice@kampx.test>",
                f"Call-ID: {call_id}",
                "CSeq: 1 INVITE",
                f"Contact: <sip:gw@{self.hostport}>",
                "Max-Forwards: 70",
            )
        )

    def in_dialog(self, method: str, cseq: int, target: str, routes, call_id, ftag) -> None:
        self.send(
            lines(
                f"{method} {target} SIP/2.0",
                f"Via: SIP/2.0/UDP {self.hostport};branch={new_branch()}",
                *(f"Route: {r}" for r in routes),
                f"From: <sip:+15550100@{self.ip}>;tag={ftag}",
                "To: <sip:alice@kampx.test>;tag=callee",
                f"Call-ID: {call_id}",
                f"CSeq: {cseq} {method}",
                "Max-Forwards: 70",
            )
        )

    def close(self) -> None:
        self.sock.close()


def _carrier_invite_arrives(carrier: Carrier, phone: StreamPeer, tcp_host: str, udp_host: str):
    """The carrier's INVITE (UDP) arrives on the phone's connection, Record-Routed twice
    (UDP in, TCP out: Kamailio's double Record-Route, the TCP one naming its transport).
    Returns (the INVITE, Call-ID, the carrier's tag)."""
    call_id, ftag = new_callid(), new_tag()
    carrier.invite(call_id, ftag)
    inv = phone.recv()
    assert inv.method == "INVITE"
    assert inv.vias[0].startswith(f"SIP/2.0/TCP {tcp_host};branch=z9hG4bK")
    assert inv.get_all("record-route") == [
        f"<sip:{tcp_host};transport=tcp;r2=on;lr>",
        f"<sip:{udp_host};r2=on;lr>",
    ]
    return inv, call_id, ftag


def _answered_call(px, phone: StreamPeer, carrier: Carrier):
    """The carrier calls alice (registered over TCP): the INVITE arrives on her connection;
    she answers, the carrier ACKs. Returns (the carrier's route set, Call-ID, its tag)."""
    inv, call_id, ftag = _carrier_invite_arrives(carrier, phone, px.addrs.proxy, px.addrs.proxy)
    phone.send(echo_reply(inv, 180, "Ringing", "callee", None))
    phone.send(echo_reply(inv, 200, "OK", "callee", f"sip:alice@{phone.hostport};transport=tcp"))
    answer = carrier.recv(skip_provisional=True)
    assert answer.status == 200
    routes = answer.get_all("record-route")[::-1]
    target = f"sip:alice@{phone.hostport};transport=tcp"
    carrier.in_dialog("ACK", 1, target, routes, call_id, ftag)
    ack = phone.recv()
    assert ack.method == "ACK" and not ack.get_all("route")
    return routes, call_id, ftag


# ---------------------------------------------------------------------------- framing --


def test_keepalive_ping_pong_and_messages_split_or_joined(px):
    phone = _phone(px)
    try:
        # RFC 5626 3.5.1: CRLFCRLF is answered with CRLF
        phone.send(b"\r\n\r\n")
        phone.sock.settimeout(3)
        assert phone.sock.recv(16) == b"\r\n"
        # two requests in one write, then one written in three pieces
        first, second = _options(phone, px.addrs.proxy), _options(phone, px.addrs.proxy)
        phone.send(first + second)
        assert phone.recv().status == 200
        assert phone.recv().status == 200
        third = _options(phone, px.addrs.proxy).encode()
        for piece in (third[:10], third[10:70], third[70:]):
            phone.send(piece)
            time.sleep(0.05)
        reply = phone.recv()
        assert reply.status == 200
        # rport filled in from the connection's source
        assert f"rport={phone.port}" in reply.vias[0]
    finally:
        phone.close()
    assert px.metric("kampx_tcp_keepalives_total") >= 1
    assert px.metric("kampx_tcp_passive_open_total") >= 1


def test_a_request_without_content_length_gets_400_and_the_connection_closes(px):
    phone = _phone(px)
    try:
        text = _options(phone, px.addrs.proxy).replace("Content-Length: 0\r\n", "")
        phone.send(text)
        reply = phone.recv()
        assert reply.status == 400 and "Content-Length" in reply.reason
        assert phone.wait_closed(3.0)
    finally:
        phone.close()
    assert px.metric('kampx_tcp_closed_total{reason="bad_framing"}') == 1
    # the proxy goes on: a new connection is served
    again = _phone(px)
    try:
        again.send(_options(again, px.addrs.proxy))
        assert again.recv().status == 200
    finally:
        again.close()


def test_garbage_on_a_connection_is_dropped_with_it_and_nothing_else_is_hurt(px):
    """Binary noise and a TLS hello sent to the TCP port: each connection is closed and
    counted, the workers go on (no internal error), other connections are served."""
    good = _phone(px)
    try:
        for noise in (bytes(range(256)) * 3 + b"\r\n\r\n",
                      b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 3000):
            bad = _phone(px)
            bad.send(noise)
            assert bad.wait_closed(3.0)
            bad.close()
        good.send(_options(good, px.addrs.proxy))
        assert good.recv().status == 200
    finally:
        good.close()
    assert px.metric('kampx_tcp_closed_total{reason="bad_framing"}') == 2
    assert px.metric("kampx_core_internal_errors_total") == 0


def test_a_3kb_invite_from_a_tcp_phone_reaches_a_udp_phone(px):
    """alice (TCP) calls bob (UDP): 407, then the authorized INVITE with a 3 kB body goes
    out over UDP to bob, Record-Routed for both sockets; bob's 200 comes back on alice's
    connection."""
    proxy = px.addrs.proxy
    bob = UdpPeer(px.addrs.client, (proxy, 5060))
    alice = _phone(px)
    try:
        register(bob, "bob", "bob-pw-1")

        sdp = "v=0\r\n" + "".join(f"a=x-pad:{i:04d}{'z' * 40}\r\n" for i in range(64))
        assert len(sdp) > 3000
        inv = Request(
            "INVITE",
            "sip:bob@kampx.test",
            [
                ("Via", f"SIP/2.0/TCP {alice.hostport};branch={new_branch()};rport"),
                ("From", f"<sip:alice@kampx.test>;tag={new_tag()}"),
                ("To", "<sip:bob@kampx.test>"),
                ("Call-ID", new_callid()),
                ("CSeq", "1 INVITE"),
                ("Contact", f"<sip:alice@{alice.hostport};transport=tcp>"),
                ("Content-Type", "application/sdp"),
                ("Max-Forwards", "70"),
            ],
            body=sdp.encode(),
        )
        alice.send(inv.encode())
        challenge = alice.recv(skip_provisional=True)
        assert challenge.status == 407
        alice.send(authorize(inv, challenge, "alice", PASSWORD).encode())
        got = bob.recv()
        assert got.method == "INVITE" and got.body == sdp.encode()
        assert got.vias[0].startswith(f"SIP/2.0/UDP {proxy};branch=")
        assert got.vias[1].startswith(f"SIP/2.0/TCP {alice.hostport};")
        assert got.get_all("record-route") == [
            f"<sip:{proxy};r2=on;lr>",
            f"<sip:{proxy};transport=tcp;r2=on;lr>",
        ]
        bob.send(echo_reply(got, 200, "OK", "bobtag", f"sip:bob@{bob.hostport}"))
        ok = alice.recv(skip_provisional=True)
        assert ok.status == 200 and ok.to_tag == "bobtag"
    finally:
        alice.close()
        bob.close()


# ----------------------------------------------------------------- calls to a TCP phone --


def test_a_phone_registered_over_tcp_is_called_on_its_connection_both_ways(px):
    phone, carrier = _phone(px), Carrier(px)
    try:
        _register(px, phone)
        routes, call_id, ftag = _answered_call(px, phone, carrier)
        # the phone hangs up over TCP along its route set (the Record-Routes as received)
        phone_routes = [
            f"<sip:{px.addrs.proxy};transport=tcp;r2=on;lr>",
            f"<sip:{px.addrs.proxy};r2=on;lr>",
        ]
        phone.send(
            lines(
                f"BYE sip:gw@{carrier.hostport} SIP/2.0",
                f"Via: SIP/2.0/TCP {phone.hostport};branch={new_branch()};rport",
                *(f"Route: {r}" for r in phone_routes),
                "From: <sip:alice@kampx.test>;tag=callee",
                f"To: <sip:+15550100@{carrier.ip}>;tag={ftag}",
                f"Call-ID: {call_id}",
                "CSeq: 1 BYE",
                "Max-Forwards: 70",
            )
        )
        bye = carrier.recv()
        assert bye.method == "BYE" and not bye.get_all("route")
        assert bye.vias[0].startswith(f"SIP/2.0/UDP {px.addrs.proxy};")
        carrier.send(echo_reply(bye, 200, "OK", ftag, None))
        ok = phone.recv()
        assert ok.status == 200 and ok.cseq == (1, "BYE")
    finally:
        phone.close()
        carrier.close()


def test_a_connection_lost_mid_call_fails_fast_with_480(px):
    """The phone's connection closes during the call: the carrier's BYE gets 480 at once
    (no connection, the phone's port refuses a new one), not 408 after the timers; a new
    call to the binding too."""
    phone, carrier = _phone(px), Carrier(px)
    try:
        _register(px, phone)
        routes, call_id, ftag = _answered_call(px, phone, carrier)
        phone.close()
        time.sleep(0.2)
        started = time.monotonic()
        carrier.in_dialog(
            "BYE", 2, f"sip:alice@{phone.hostport};transport=tcp", routes, call_id, ftag
        )
        reply = carrier.recv(skip_provisional=True)
        assert reply.status == 480
        carrier.invite(new_callid(), new_tag())
        reply = carrier.recv(skip_provisional=True)
        assert reply.status == 480
        assert time.monotonic() - started < 2.5
    finally:
        carrier.close()
    assert px.metric('kampx_tcp_closed_total{reason="eof"}') >= 1


def test_dlg_end_reaches_the_tcp_phone_on_its_connection(px):
    """kampxctl dlg end from the ctl process: the phone's BYE is written on its connection
    by the worker that owns it, once; the carrier's goes over UDP."""
    phone, carrier = _phone(px), Carrier(px)
    try:
        _register(px, phone)
        _, call_id, _ = _answered_call(px, phone, carrier)
        out = px.ctl("dlg", "end", call_id).stdout
        assert f"{phone.ip}:{phone.port}" in out and f"{carrier.ip}:{carrier.port}" in out
        to_phone, to_carrier = phone.recv(), carrier.recv()
        assert to_phone.method == to_carrier.method == "BYE"
        assert to_phone.vias[0].startswith(f"SIP/2.0/TCP {px.addrs.proxy};")
        assert to_carrier.vias[0].startswith(f"SIP/2.0/UDP {px.addrs.proxy};")
        phone.send(echo_reply(to_phone, 200, "OK", "x", None))
        with pytest.raises((TimeoutError, socket.timeout)):
            phone.recv(timeout=2.0)  # UDP's resends at 0.5 and 1.5 s: not on a stream
    finally:
        phone.close()
        carrier.close()


# ------------------------------------------------------------------------ limits --------


def test_slow_oversized_idle_and_too_many_connections_are_closed():
    px = _proxy(
        {
            "tcp": {
                "message_timeout_s": 1,
                "connection_lifetime_s": 3,
                "max_message_bytes": 4096,
                "max_connections_per_ip": 3,
            }
        }
    )
    peers: list[StreamPeer] = []
    try:
        # slowloris: half a request, then nothing: closed within the message timeout (+1 s
        # sweep), before the idle lifetime
        slow = _phone(px)
        peers.append(slow)
        slow.send(_options(slow, px.addrs.proxy)[:60])
        assert slow.wait_closed(2.8)
        # headers that never end: closed once past max_message_bytes
        big = _phone(px)
        peers.append(big)
        big.send(b"OPTIONS sip:x SIP/2.0\r\n" + b"X-Pad: " + b"a" * 5000)
        assert big.wait_closed(2.0)
        # a body announced past the limit
        huge = _phone(px)
        peers.append(huge)
        huge.send(_options(huge, px.addrs.proxy).replace("Content-Length: 0", "Content-Length: 9000"))
        assert huge.wait_closed(2.0)
        # three connections from one IP are served, the fourth is refused at once
        three = [_phone(px) for _ in range(3)]
        peers += three
        for p in three:
            p.send(_options(p, px.addrs.proxy))
            assert p.recv().status == 200
        fourth = _phone(px)
        peers.append(fourth)
        assert fourth.wait_closed(2.0)
        # another source is not affected
        other = StreamPeer.connect(px.addrs.client, (px.addrs.proxy, 5060))
        peers.append(other)
        other.send(_options(other, px.addrs.proxy))
        assert other.recv().status == 200
        # and a connection with nothing to say is closed after the idle lifetime
        assert other.wait_closed(5.0)
        assert px.metric('kampx_tcp_closed_total{reason="slow"}') == 1
        assert px.metric('kampx_tcp_closed_total{reason="too_large"}') == 2
        assert px.metric('kampx_tcp_closed_total{reason="limit"}') == 1
        assert px.metric('kampx_tcp_closed_total{reason="idle"}') >= 1
        assert px.metric("kampx_core_internal_errors_total") == 0
    finally:
        for p in peers:
            p.close()
        px.close()


# ----------------------------------------------------------- a carrier over TCP ---------


def test_outbound_calls_to_a_tcp_carrier_use_one_connection_and_fail_fast_when_down():
    # the carrier's gateway listens on TCP; the proxy connects to it (transport=tcp)
    px = _proxy(carrier_params=";transport=tcp")
    gw_ip = px.addrs.carrier
    gw: StreamServer | None = StreamServer(gw_ip, GW_PORT)
    try:
        phone = UdpPeer(px.addrs.phone, (px.addrs.proxy, 5060))
        hp = phone.hostport
        inv, challenge, authed = outbound_invite(phone, "alice", PASSWORD)
        conn = gw.accept()
        got = conn.recv()
        assert got.method == "INVITE"
        assert got.vias[0].startswith(f"SIP/2.0/TCP {px.addrs.proxy};branch=")
        conn.send(echo_reply(got, 200, "OK", "gwtag", f"sip:gw@{gw_ip}:{GW_PORT};transport=tcp"))
        ok = phone.recv(skip_provisional=True)
        assert ok.status == 200
        # the BYE to the gateway's Contact reuses the proxy's connection
        routes = ok.get_all("record-route")[::-1]
        phone.send(
            lines(
                f"BYE sip:gw@{gw_ip}:{GW_PORT};transport=tcp SIP/2.0",
                f"Via: SIP/2.0/UDP {hp};branch={new_branch()};rport",
                *(f"Route: {r}" for r in routes),
                "From: <sip:alice@kampx.test>;tag=" + authed.get("from").split("tag=")[1],
                "To: <sip:+15559999@kampx.test>;tag=gwtag",
                f"Call-ID: {authed.get('call-id')}",
                "CSeq: 3 BYE",
                "Max-Forwards: 70",
            )
        )
        bye = conn.recv()
        assert bye.method == "BYE"
        gw.sock.settimeout(0.3)
        with pytest.raises((TimeoutError, socket.timeout)):
            gw.sock.accept()  # no second connection
        conn.send(echo_reply(bye, 200, "OK", "gwtag", None))
        assert phone.recv().status == 200

        # the gateway goes away: the next call fails at once with 480
        conn.close()
        gw.close()
        gw = None
        time.sleep(0.2)
        again = authorize(inv, challenge, "alice", PASSWORD, nc=2)
        again.set("Call-ID", new_callid())
        started = time.monotonic()
        phone.send(again.encode())
        assert phone.recv(skip_provisional=True).status == 480
        assert time.monotonic() - started < 2.0
        assert px.metric("kampx_tcp_active_open_total") >= 2
        assert px.metric('kampx_tcp_closed_total{reason="connect_failed"}') >= 1
        phone.close()
    finally:
        if gw is not None:
            gw.close()
        px.close()


def test_tcp_workers_are_titled_and_share_the_connections(px):
    titles = list(px.children().values())
    sock = f"tcp:{px.addrs.proxy}:5060"
    assert titles.count(f"kampx: tcp receiver child=1 sock={sock}") == 1
    assert titles.count(f"kampx: tcp receiver child=2 sock={sock}") == 1
    # sequential connections alternate between the two workers once both wait on the
    # socket (one may still be booting when the first ones come): at most 20 to see both
    peers: list[StreamPeer] = []
    try:
        info: dict = {}
        while len(peers) < 20:
            p = _phone(px)
            peers.append(p)
            p.send(_options(p, px.addrs.proxy))
            assert p.recv().status == 200
            info = json.loads(px.ctl("rpc", "core.tcp_info").stdout)
            if len(info["by_worker"]) == 2:
                break
        assert len(info["by_worker"]) == 2, info  # both workers hold some
        assert info["opened_connections"] == len(peers)
        assert sum(info["by_worker"].values()) == len(peers)
        text = px.ctl("tcp").stdout
        assert f"tcp connections: {len(peers)}" in text
    finally:
        for p in peers:
            p.close()


def test_a_request_past_udp_mtu_goes_over_tcp_and_over_udp_when_tcp_is_refused():
    """RFC 3261 18.1.1 with [tcp] udp_mtu: the carrier's 3 kB INVITE to a phone registered
    over UDP goes over TCP when the phone's address takes TCP, and over UDP after all when
    it refuses TCP; a small one stays on UDP."""
    px = _proxy({"tcp": {"udp_mtu": 1300}})
    carrier = Carrier(px)
    # alice's phone: UDP and TCP on the same port, registered over UDP
    tcp = StreamServer(px.addrs.client, 0)
    udp = UdpPeer(px.addrs.client, (px.addrs.proxy, 5060), tcp.port)
    try:
        register(udp, "alice", PASSWORD)

        def invite(size: int) -> None:
            body = "v=0\r\n" + "a=x-pad:" + "z" * size + "\r\n"
            carrier.send(
                lines(
                    "INVITE sip:alice@kampx.test SIP/2.0",
                    f"Via: SIP/2.0/UDP {carrier.hostport};branch={new_branch()}",
                    f"From: <sip:+15550100@{carrier.ip}>;tag={new_tag()}",
                    "To: <sip:alice@kampx.test>",
                    f"Call-ID: {new_callid()}",
                    "CSeq: 1 INVITE",
                    "Content-Type: application/sdp",
                    "Max-Forwards: 70",
                    body=body,
                )
            )

        invite(3000)
        conn = tcp.accept()
        got = conn.recv()
        assert got.method == "INVITE" and len(got.raw) > 3000
        assert got.vias[0].startswith(f"SIP/2.0/TCP {px.addrs.proxy};branch=")
        conn.send(echo_reply(got, 486, "Busy Here", "x", None))
        assert carrier.recv(skip_provisional=True).status == 486
        conn.close()

        invite(100)  # small: UDP, as always
        small = udp.recv()
        assert small.method == "INVITE" and small.vias[0].startswith("SIP/2.0/UDP ")
        udp.send(echo_reply(small, 486, "Busy Here", "x", None))
        assert carrier.recv(skip_provisional=True).status == 486

        tcp.close()  # the phone stops taking TCP: the large INVITE goes over UDP after all
        time.sleep(0.2)
        invite(3000)
        big = udp.recv()
        while big.method == "ACK":  # the proxy's ACK to the 486 above
            big = udp.recv()
        assert big.method == "INVITE" and big.vias[0].startswith(f"SIP/2.0/UDP {px.addrs.proxy};")
        udp.send(echo_reply(big, 486, "Busy Here", "x", None))
        assert carrier.recv(skip_provisional=True).status == 486
        assert px.metric("kampx_tcp_mtu_switched_total") == 2
    finally:
        udp.close()
        tcp.close()
        carrier.close()
        px.close()


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1 on this machine")
def test_a_phone_on_tcp_over_ipv6_is_called_from_the_ipv4_carrier():
    probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    probe.bind(("::1", 0))
    port6 = probe.getsockname()[1]
    probe.close()
    px = AuthProxy(users={"alice": PASSWORD})
    px.add_listen(f"tcp:[::1]:{port6}")
    px.start()
    phone = StreamPeer.connect("::1", ("::1", port6))
    carrier = Carrier(px)
    try:
        phone.send(_options(phone, f"[::1]:{port6}"))
        ok = phone.recv()
        assert ok.status == 200 and f"rport={phone.port}" in ok.vias[0]
        _register(px, phone)
        inv, _, _ = _carrier_invite_arrives(carrier, phone, f"[::1]:{port6}", px.addrs.proxy)
        phone.send(echo_reply(inv, 486, "Busy Here", "callee", None))
        assert carrier.recv(skip_provisional=True).status == 486
    finally:
        phone.close()
        carrier.close()
        px.close()


def test_a_backlog_on_one_connection_is_spread_over_the_workers():
    """Twelve requests in one write ([tcp] spread_backlog 4): the worker reading the
    connection passes some to the other workers (as if they had read them); every answer
    still comes back on the connection, written by its owner."""
    px = _proxy({"tcp": {"spread_backlog": 4}})
    phone = _phone(px)
    try:
        time.sleep(1.2)  # the reader learns who the other workers are once a second
        counted = px.metric('kampx_core_rcv_requests_total{method="OPTIONS"}')
        requests = [_options(phone, px.addrs.proxy) for _ in range(12)]
        phone.send("".join(requests))
        replies = [phone.recv() for _ in requests]
        assert all(r.status == 200 for r in replies)
        sent = {r.get("call-id") for r in replies}
        assert len(sent) == 12  # each answered once
        assert px.metric("kampx_tcp_spread_requests_total") >= 1
        assert px.metric("kampx_tcp_handed_sends_total") >= 1
        assert px.metric("kampx_core_internal_errors_total") == 0
        # each counted once, by the worker that processed it
        assert px.metric('kampx_core_rcv_requests_total{method="OPTIONS"}') == counted + 12
    finally:
        phone.close()
        px.close()


def test_a_killed_worker_takes_its_connections_and_leaves_no_count_or_alias(px):
    """The TCP workers are SIGKILLed: the phone's connection closes, the supervisor
    respawns them with their connection counts zeroed and their aliases gone, a call to
    the phone fails at once with 480 (not sent towards a dead worker), and new connections
    are served."""
    phone, carrier = _phone(px), Carrier(px)
    try:
        _register(px, phone)
        before = [pid for pid, t in px.children().items() if "tcp receiver" in t]
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        assert phone.wait_closed(3.0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = [pid for pid, t in px.children().items() if "tcp receiver" in t]
            if len(now) == 2 and not set(now) & set(before):
                break
            time.sleep(0.1)
        info = json.loads(px.ctl("rpc", "core.tcp_info").stdout)
        assert info["opened_connections"] == 0 and info["by_worker"] == {}, info
        started = time.monotonic()
        carrier.invite(new_callid(), new_tag())
        assert carrier.recv(skip_provisional=True).status == 480
        assert time.monotonic() - started < 2.5
        fresh = _phone(px)
        fresh.send(_options(fresh, px.addrs.proxy))
        assert fresh.recv().status == 200
        fresh.close()
    finally:
        phone.close()
        carrier.close()


def test_a_busy_connection_whose_reads_end_mid_message_is_not_a_slow_sender():
    """[tcp] message_timeout_s 1: for 3 s every write finishes the last request and begins
    the next, so the proxy's buffer is never empty; each request is answered and the
    connection stays open (only a message that itself takes too long is slow)."""
    px = _proxy({"tcp": {"message_timeout_s": 1}})
    phone = _phone(px)
    try:
        first = _options(phone, px.addrs.proxy).encode()
        phone.send(first[:30])
        rest = first[30:]
        answered = 0
        started = time.monotonic()
        while time.monotonic() - started < 3.0:
            nxt = _options(phone, px.addrs.proxy).encode()
            phone.send(rest + nxt[:30])  # the end of one request, the start of the next
            rest = nxt[30:]
            assert phone.recv().status == 200
            answered += 1
            time.sleep(0.2)
        phone.send(rest)
        assert phone.recv().status == 200
        assert answered >= 10
        assert px.metric('kampx_tcp_closed_total{reason="slow"}') == 0
    finally:
        phone.close()
        px.close()
