"""HEPv3 export (kampx/hep.py): the packet format, and on the wire every datagram a worker
reads and sends reaching a collector the test runs, with addresses, ports, time and the
Call-ID as correlation id."""
from __future__ import annotations

import socket
import struct
import time

import pytest

from kampx import config
from kampx.hep import (AUTH_KEY, CAPTURE_ID, CORRELATION_ID, IP_FAMILY, IP_PROTO, IPV4_DST,
                       IPV4_SRC, IPV6_SRC, PAYLOAD, PROTO_TYPE, SRC_PORT, DST_PORT, TS_SEC,
                       TS_USEC, decode, encode)
from kampxproc import KampxProcess
from sipclient import UAS, SipClient, in_dialog

INVITE = (b"INVITE sip:bob@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
          b"From: <sip:a@x>;tag=1\r\nTo: <sip:bob@x>\r\ni: abc-123@host\r\nCSeq: 1 INVITE\r\n"
          b"Content-Length: 0\r\n\r\n")


def test_encode_decode_ipv4():
    pkt = encode(INVITE, ("192.0.2.1", 5061), ("192.0.2.9", 5060), 1700000000.25,
                 struct.pack("!HHHI", 0, CAPTURE_ID, 10, 7))
    assert pkt[:4] == b"HEP3" and struct.unpack("!H", pkt[4:6])[0] == len(pkt)
    c = decode(pkt)
    assert c[IP_FAMILY] == b"\x02" and c[IP_PROTO] == b"\x11" and c[PROTO_TYPE] == b"\x01"
    assert socket.inet_ntoa(c[IPV4_SRC]) == "192.0.2.1" and socket.inet_ntoa(c[IPV4_DST]) == "192.0.2.9"
    assert struct.unpack("!H", c[SRC_PORT])[0] == 5061 and struct.unpack("!H", c[DST_PORT])[0] == 5060
    assert struct.unpack("!I", c[TS_SEC])[0] == 1700000000
    assert struct.unpack("!I", c[TS_USEC])[0] == 250000
    assert struct.unpack("!I", c[CAPTURE_ID])[0] == 7
    assert c[CORRELATION_ID] == b"abc-123@host"  # the compact form i: found too
    assert c[PAYLOAD] == INVITE


def test_encode_ipv6_and_no_call_id():
    pkt = encode(b"garbage", ("2001:db8::1", 5060), ("2001:db8::2", 5070), 1.0, b"")
    c = decode(pkt)
    assert c[IP_FAMILY] == b"\x0a" and socket.inet_ntop(socket.AF_INET6, c[IPV6_SRC]) == "2001:db8::1"
    assert CORRELATION_ID not in c and c[PAYLOAD] == b"garbage"


def test_decode_refuses_what_is_not_hep():
    with pytest.raises(ValueError):
        decode(b"HEP2\x00\x06")
    with pytest.raises(ValueError):
        decode(b"HEP3\x00\x0c\x00\x00\x00\x01\x00\x09")  # a chunk longer than the packet


@pytest.mark.parametrize("collector", ["127.0.0.1", "127.0.0.1:9060", "[::1]:9060"])
def test_config_accepts_ip_collectors(collector):
    assert config.from_dict({"hep": {"collector": collector}}).hep.collector == collector


@pytest.mark.parametrize("collector", ["homer.example:9060", "127.0.0.1:99999"])
def test_config_refuses_names_and_bad_ports(collector):
    with pytest.raises(config.ConfigError, match=r"\[hep\] collector"):
        config.from_dict({"hep": {"collector": collector}})


class Collector:
    def __init__(self, ip):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 0))
        self.sock.settimeout(0.2)
        self.addr = self.sock.getsockname()

    def drain(self, seconds=1.0):
        out, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                out.append(decode(self.sock.recv(65535)))
            except (TimeoutError, socket.timeout):
                continue
        return out

    def close(self):
        self.sock.close()


@pytest.mark.wire
@pytest.mark.timeout(60)
def test_every_message_of_a_call_reaches_the_collector():
    collector = Collector("127.0.0.1")
    uas = UAS("127.0.0.1", 0).start()
    px = KampxProcess(children=2, config={"hep": {"collector": f"{collector.addr[0]}:{collector.addr[1]}",
                                                  "capture_id": 2001}},
                      env={"KAMPX_NEXT_HOP": f"{uas.ip}:{uas.port}"})
    try:
        px.start()
        collector.drain(0.5)  # the readiness keepalives
        with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
            t0 = time.time()
            inv = c.request("INVITE", f"sip:bob@{uas.ip}:{uas.port}")
            c.send(inv)
            ok = c.final(inv, 3)
            c.send(in_dialog("ACK", inv, ok))
            uas.expect("ACK")
            packets = collector.drain(1.0)
        call_id = inv.get("call-id").encode()
        mine = [p for p in packets if p.get(CORRELATION_ID) == call_id]
        lines = [(p[PAYLOAD].split(b"\r\n", 1)[0].decode(), socket.inet_ntoa(p[IPV4_SRC]),
                  socket.inet_ntoa(p[IPV4_DST])) for p in mine]
        proxy, client = px.addr[0], px.addrs.client
        expected = [
            (f"INVITE sip:bob@{uas.ip}:{uas.port} SIP/2.0", client, proxy),  # read
            ("SIP/2.0 100 trying -- your call is important to us", proxy, client),
            (f"INVITE sip:bob@{uas.ip}:{uas.port} SIP/2.0", proxy, uas.ip),  # relayed
            ("SIP/2.0 200 OK", uas.ip, proxy),
            ("SIP/2.0 200 OK", proxy, client),
        ]
        for e in expected:
            assert e in lines, (e, lines)
        assert sum(1 for line in lines if line[0].startswith("ACK")) == 2  # in and out
        for p in mine:
            assert struct.unpack("!I", p[CAPTURE_ID])[0] == 2001
            when = struct.unpack("!I", p[TS_SEC])[0] + struct.unpack("!I", p[TS_USEC])[0] / 1e6
            assert t0 - 1 <= when <= time.time() + 1
            assert AUTH_KEY not in p
        # every datagram once: a handed-off one is not reported twice
        payloads = [p[PAYLOAD] for p in mine]
        assert len(payloads) == len(set(payloads))
        assert px.metric("kampx_hep_packets_total") >= len(mine)
    finally:
        px.close()
        uas.stop()
        collector.close()


def test_send_batch_sends_every_packet_in_order():
    from kampx.transport._send import send_batch
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(1)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    try:
        packets = [b"p%03d" % i + b"x" * i for i in range(100)]
        assert send_batch(tx.fileno(), packets) == 100
        assert [rx.recv(2048) for _ in range(100)] == packets
        assert send_batch(tx.fileno(), []) == 0
    finally:
        rx.close()
        tx.close()


def test_a_collector_that_is_gone_loses_packets_and_counts_them():
    from types import SimpleNamespace
    from kampx import stats as S
    from kampx._shm import CounterRows
    from kampx.hep import PACKETS, SEND_ERRORS, HepExporter
    gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gone.bind(("127.0.0.1", 0))
    port = gone.getsockname()[1]
    gone.close()  # nothing listens there: ICMP port unreachable
    rows = CounterRows(1, S.ncols())
    hep = HepExporter(SimpleNamespace(collector=f"127.0.0.1:{port}", capture_id=1, auth_key=""),
                      S.Stats(rows, 0))
    ls = SimpleNamespace(addr=SimpleNamespace(host="127.0.0.1"), port=5060)
    try:
        for _ in range(3):
            for _ in range(10):
                hep.received(INVITE, ("192.0.2.1", 5061), ls)
            hep.flush()  # never raises
            time.sleep(0.05)
        assert rows.get(0, PACKETS.base) + rows.get(0, SEND_ERRORS.base) == 30
        assert rows.get(0, SEND_ERRORS.base) >= 1
    finally:
        hep.close()
