"""HEPv3 export to a Homer capture server (Kamailio's siptrace with hep_mode_on, hep_version 3).

With `[hep] collector = "IP:PORT"` every SIP datagram a worker reads and every one it sends
goes, as it is, to the collector in one HEPv3 packet: addresses and ports, the time it was
read or sent (microseconds), the capture agent id, the Call-ID as correlation id (Homer
groups a call's messages by it) and the datagram. A handed-off packet is reported once, by
the worker that read it.

Off (the default) it costs nothing: no tap is installed. On, each message costs an encoding;
the packets of one loop round leave together in one sendmmsg(2) on the worker's own
connected socket (flush(), called by the loop). A collector that is down or slow loses
packets (counted in hep:send_errors), never delays SIP.

HEPv3 (the HEP-EEP specification): "HEP3", the total length, then chunks of vendor id
(0: generic), type, length (header included) and value.
"""

from __future__ import annotations

import re
import socket
import struct
import time

from kampx import stats as S
from kampx.config import parse_ip_port
from kampx.transport._send import send_batch

PACKETS = S.family("hep", "packets", S.KIND_COUNTER, "SIP messages sent to the HEP collector")
SEND_ERRORS = S.family(
    "hep", "send_errors", S.KIND_COUNTER, "HEP packets the collector socket refused (lost)"
)
STATISTICS = (PACKETS, SEND_ERRORS)

# generic chunk types (vendor 0)
IP_FAMILY, IP_PROTO, IPV4_SRC, IPV4_DST, IPV6_SRC, IPV6_DST = 1, 2, 3, 4, 5, 6
SRC_PORT, DST_PORT, TS_SEC, TS_USEC, PROTO_TYPE, CAPTURE_ID = 7, 8, 9, 10, 11, 12
AUTH_KEY, PAYLOAD, CORRELATION_ID = 14, 15, 17
DEFAULT_PORT = 9060  # Homer's
PROTO_SIP = 1  # the protocol type chunk's value (written in _TIME_PROTO's packing)
UDP = 17
_CHUNK = struct.Struct("!HHH")
_U8 = struct.Struct("!HHHB")
_U16 = struct.Struct("!HHHH")
_U32 = struct.Struct("!HHHI")
_TIME_PROTO = struct.Struct("!HHHIHHHIHHHB")  # seconds, microseconds, protocol type
_HEADER = struct.Struct("!4sH")
_CALL_ID = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.I | re.M)
# the address chunks of the (src, dst) pairs seen: a proxy talks to the same peers all day
_ADDRESSES: dict[tuple, bytes] = {}
_ADDRESSES_MAX = 4096
MAX_PENDING = 256  # packets held before a round ends: flushed early past this


def chunk(ctype: int, value: bytes) -> bytes:
    return _CHUNK.pack(0, ctype, 6 + len(value)) + value


def _address_chunks(src: tuple, dst: tuple) -> bytes:
    if ":" in src[0]:
        family, s_type, d_type, af = socket.AF_INET6, IPV6_SRC, IPV6_DST, 10
    else:
        family, s_type, d_type, af = socket.AF_INET, IPV4_SRC, IPV4_DST, 2
    return b"".join(
        (
            _U8.pack(0, IP_FAMILY, 7, af),
            _U8.pack(0, IP_PROTO, 7, UDP),
            chunk(s_type, socket.inet_pton(family, src[0].strip("[]"))),
            chunk(d_type, socket.inet_pton(family, dst[0].strip("[]"))),
            _U16.pack(0, SRC_PORT, 8, src[1]),
            _U16.pack(0, DST_PORT, 8, dst[1]),
        )
    )


def encode(data: bytes, src: tuple, dst: tuple, when: float, agent: bytes) -> bytes:
    """One HEPv3 packet for SIP datagram `data` from src to dst ((ip, port) each) at
    `when` (epoch seconds); `agent`: the constant chunks (capture id, auth key)."""
    sec = int(when)
    key = (src, dst)
    addresses = _ADDRESSES.get(key)
    if addresses is None:
        if len(_ADDRESSES) >= _ADDRESSES_MAX:
            _ADDRESSES.clear()
        addresses = _ADDRESSES[key] = _address_chunks(src, dst)
    m = _CALL_ID.search(data)
    correlation = chunk(CORRELATION_ID, m.group(1).strip()) if m else b""
    head = addresses + _TIME_PROTO.pack(
        0, TS_SEC, 10, sec, 0, TS_USEC, 10, int((when - sec) * 1_000_000), 0, PROTO_TYPE, 7, 1
    )
    size = 12 + len(head) + len(agent) + len(correlation) + len(data)
    return b"".join(
        (
            _HEADER.pack(b"HEP3", size),
            head,
            agent,
            correlation,
            _CHUNK.pack(0, PAYLOAD, 6 + len(data)),
            data,
        )
    )


def decode(packet: bytes) -> dict[int, bytes]:
    """Chunk type -> value of a HEPv3 packet (vendor 0 chunks); ValueError when it is not
    one (tests, tools)."""
    if packet[:4] != b"HEP3" or struct.unpack("!H", packet[4:6])[0] != len(packet):
        raise ValueError("not a HEPv3 packet")
    out, off = {}, 6
    while off < len(packet):
        vendor, ctype, length = _CHUNK.unpack_from(packet, off)
        if length < 6 or off + length > len(packet):
            raise ValueError("bad chunk length")
        if vendor == 0:
            out[ctype] = packet[off + 6 : off + length]
        off += length
    return out


class HepExporter:
    """One worker's export: `received(data, src, lsock)` and `sent(data, dest, lsock)` are
    the taps the worker installs."""

    def __init__(self, cfg, stats):
        host, port = parse_ip_port(cfg.collector, DEFAULT_PORT)
        self.collector = (host, port)
        self.stats = stats
        agent = _U32.pack(0, CAPTURE_ID, 10, cfg.capture_id)
        if cfg.auth_key:
            agent += chunk(AUTH_KEY, cfg.auth_key.encode())
        self.agent = agent
        self.sock = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM
        )
        self.sock.setblocking(False)
        self.sock.connect(self.collector)
        self._fd = self.sock.fileno()
        self.pending: list[bytes] = []

    def received(self, data: bytes, src: tuple, lsock) -> None:
        self._send(data, src, (lsock.addr.host, lsock.port))

    def sent(self, data: bytes, dest: tuple, lsock) -> None:
        self._send(data, (lsock.addr.host, lsock.port), dest)

    def _send(self, data: bytes, src: tuple, dst: tuple) -> None:
        try:
            self.pending.append(encode(data, src, dst, time.time(), self.agent))
        except (OSError, ValueError, OverflowError, struct.error):
            self.stats.inc(SEND_ERRORS.base)  # an address no packet can carry
            return
        if len(self.pending) >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Send what this round produced: one system call for all of it."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        sent = send_batch(self._fd, pending)
        self.stats.add(PACKETS.base, sent)
        if sent < len(pending):
            self.stats.add(SEND_ERRORS.base, len(pending) - sent)

    def close(self) -> None:
        self.sock.close()
