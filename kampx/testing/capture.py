"""UDP datagrams out of a packet capture, for kampx replay.

`datagrams(path)` reads pcap or pcapng (dpkt, told apart by the file's magic number) over
the link layers tcpdump and Wireshark write for IP (Ethernet with or without VLAN tags,
Linux cooked v1 and v2, raw IP, BSD loopback) and yields every UDP datagram, IPv4 or IPv6,
with its capture time. IP fragments are not reassembled: a SIP message over UDP that was
fragmented is counted in `CaptureStats.fragments` and left out, as are non-UDP packets.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import NamedTuple

import dpkt

PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
LINKTYPE_RAW = 101  # what libpcap writes for DLT_RAW on every platform
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229


class CaptureError(Exception):
    """The file is not a capture this reader understands; str() says why."""


class Datagram(NamedTuple):
    time: float  # seconds since the epoch, as captured
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


class CaptureStats:
    """What was read and what was left out."""

    def __init__(self) -> None:
        self.packets = 0
        self.fragments = 0
        self.not_udp = 0


def datagrams(path: str, stats: CaptureStats | None = None) -> Iterator[Datagram]:
    stats = stats or CaptureStats()
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CaptureError(f"{path}: {e.strerror}") from None
    with f:
        reader = _reader(f, path)
        decode = _link_decoder(reader.datalink(), path)
        for ts, frame in reader:
            stats.packets += 1
            ip = decode(frame)
            found = _udp(ip, stats)
            if found is not None:
                src, dst, payload = found
                yield Datagram(float(ts), src, dst, payload)


def _reader(f, path: str):
    magic = f.read(4)
    f.seek(0)
    try:
        if magic == PCAPNG_MAGIC:
            return dpkt.pcapng.Reader(f)
        return dpkt.pcap.Reader(f)
    except (ValueError, dpkt.dpkt.NeedData) as e:
        raise CaptureError(f"{path}: not a pcap or pcapng capture ({e})") from None


def _link_decoder(linktype: int, path: str):
    """frame bytes -> the dpkt IP / IP6 object it carries (or something else, skipped)."""
    if linktype == dpkt.pcap.DLT_EN10MB:
        return lambda frame: dpkt.ethernet.Ethernet(frame).data
    if linktype == dpkt.pcap.DLT_LINUX_SLL:
        return lambda frame: dpkt.sll.SLL(frame).data
    if linktype == dpkt.pcap.DLT_LINUX_SLL2:
        return lambda frame: dpkt.sll2.SLL2(frame).data
    if linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
        return lambda frame: dpkt.loopback.Loopback(frame).data
    if linktype in (LINKTYPE_RAW, dpkt.pcap.DLT_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return _raw_ip
    raise CaptureError(f"{path}: link type {linktype} is not one kampx replay reads")


def _raw_ip(frame: bytes):
    version = frame[0] >> 4 if frame else 0
    if version == 4:
        return dpkt.ip.IP(frame)
    if version == 6:
        return dpkt.ip6.IP6(frame)
    return None


def _udp(ip, stats: CaptureStats):
    """(src, dst, payload) of a UDP datagram in `ip`, else None (counted in stats)."""
    if isinstance(ip, dpkt.ip.IP):
        family = socket.AF_INET
        if ip.mf or ip.offset:
            stats.fragments += 1
            return None
    elif isinstance(ip, dpkt.ip6.IP6):
        family = socket.AF_INET6
        if dpkt.ip.IP_PROTO_FRAGMENT in getattr(ip, "extension_hdrs", {}):
            stats.fragments += 1
            return None
    else:
        stats.not_udp += 1
        return None
    udp = ip.data
    if not isinstance(udp, dpkt.udp.UDP):
        stats.not_udp += 1
        return None
    src = (socket.inet_ntop(family, ip.src), udp.sport)
    dst = (socket.inet_ntop(family, ip.dst), udp.dport)
    return src, dst, bytes(udp.data)
