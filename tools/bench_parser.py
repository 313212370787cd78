#!/usr/bin/env python3
"""Benchmark of the compiled SIP parser (kampx._cparse) against a plain Python parser.

Run by hand (never a timed test):  python3 tools/bench_parser.py [--seconds 0.5] [--repeat 7]

Cases (issue 2, part 5):
  parse INVITE        parse a typical ~1 kB INVITE
  parse 200 OK        parse the 200 OK to it
  parse+read INVITE   parse and read top Via branch, From tag, To tag, Call-ID, CSeq, R-URI
  relay cycle         parse, add a Via, add Record-Route, decrement Max-Forwards, rewrite the
                      R-URI, serialize: what t_relay() does to a request
Targets on one core: parse+read <= 2 us, relay cycle <= 6 us.

The pure-Python column is a straightforward parser written the way one would without a C
core (split lines, unfold, dict of headers, regexes for the parameters). Its only purpose is
to give the absolute numbers a yardstick that moves with the machine: the ratio means
something on a noisy box where the microseconds do not.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kampx import _cparse  # noqa: E402

INVITE = (
    b"INVITE sip:alice@atlanta.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Alice <sip:alice@atlanta.example.com>\r\n"
    b"From: \"Bob Smith\" <sip:bob@biloxi.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.biloxi.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.10:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK, REFER, NOTIFY, INFO\r\n"
    b"Supported: replaces, timer, 100rel\r\n"
    b"Session-Expires: 1800\r\n"
    b"User-Agent: ExamplePhone/4.2.1 (build 20240117)\r\n"
    b"P-Asserted-Identity: \"Bob Smith\" <sip:+15555550100@biloxi.example.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 307\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=bob 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 9 18 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:9 G722/8000\r\n"
    b"a=rtpmap:18 G729/8000\r\n"
    b"a=fmtp:18 annexb=no\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

OK200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKkx1.2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.10\r\n"
    b"Record-Route: <sip:127.0.0.1:5060;lr>\r\n"
    b"To: Alice <sip:alice@atlanta.example.com>;tag=a6c85cf\r\n"
    b"From: \"Bob Smith\" <sip:bob@biloxi.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.biloxi.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.20:5060>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 133\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=alice 2890844527 2890844527 IN IP4 192.0.2.20\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.20\r\n"
    b"t=0 0\r\n"
    b"m=audio 3456 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)

NEW_VIA = b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKkx1.2.0"
RECORD_ROUTE = "<sip:127.0.0.1:5060;lr>"
NEW_RURI = "sip:alice@192.0.2.20:5060"


# -- the compiled parser --------------------------------------------------------------------

def kx_parse(data):
    return _cparse.parse(data)


def kx_parse_read(data):
    m = _cparse.parse(data)
    return m.branch, m.from_tag, m.to_tag, m.call_id, m.cseq_num, m.cseq_method, m.ruri


def kx_relay(data):
    m = _cparse.parse(data)
    m.insert_header("Record-Route", RECORD_ROUTE)
    m.set_max_forwards(m.max_forwards - 1)
    m.set_ruri(NEW_RURI)
    return m.serialize(via=NEW_VIA)


# -- a plain Python parser, written the ordinary way ------------------------------------------

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
           "l": "content-length", "c": "content-type", "k": "supported", "s": "subject",
           "e": "content-encoding", "o": "event", "r": "refer-to", "u": "allow-events",
           "x": "session-expires", "y": "identity", "b": "referred-by"}
FOLD = re.compile(rb"\r?\n[ \t]+")
BRANCH = re.compile(r";\s*branch\s*=\s*([^;,\s]+)", re.I)
TAG = re.compile(r";\s*tag\s*=\s*([^;,\s]+)", re.I)


class PyMessage:
    __slots__ = ("start", "headers", "order", "body")

    def __init__(self, data):
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("no end of headers")
        lines = FOLD.sub(b" ", head).decode("utf-8", "surrogateescape").split("\r\n")
        self.start = lines[0].split(" ", 2)
        headers = {}
        order = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError("bad header line")
            key = name.strip().lower()
            key = COMPACT.get(key, key)
            headers.setdefault(key, []).append(value.strip())
            order.append((name.strip(), value.strip()))
        self.headers = headers
        self.order = order
        length = headers.get("content-length")
        if length is not None:
            n = int(length[0])
            if n > len(body):
                raise ValueError("Content-Length mis-match")
            body = body[:n]
        self.body = body

    def header(self, name):
        v = self.headers.get(name)
        return v[0] if v else None

    def branch(self):
        m = BRANCH.search(self.header("via") or "")
        return m.group(1) if m else None

    def tag(self, name):
        m = TAG.search(self.header(name) or "")
        return m.group(1) if m else None

    def cseq(self):
        num, method = self.header("cseq").split()
        return int(num), method

    def serialize(self, via, record_route, max_forwards, ruri):
        out = [" ".join((self.start[0], ruri, self.start[2])),
               "Record-Route: " + record_route, "Via: " + via]
        for name, value in self.order:
            if name.lower() == "max-forwards":
                value = str(max_forwards)
            out.append(name + ": " + value)
        return ("\r\n".join(out) + "\r\n\r\n").encode("utf-8", "surrogateescape") + self.body


def py_parse(data):
    return PyMessage(data)


def py_parse_read(data):
    m = PyMessage(data)
    num, method = m.cseq()
    return m.branch(), m.tag("from"), m.tag("to"), m.header("call-id"), num, method, m.start[1]


def py_relay(data):
    m = PyMessage(data)
    return m.serialize(NEW_VIA.decode(), RECORD_ROUTE, int(m.header("max-forwards")) - 1, NEW_RURI)


# -- timing -------------------------------------------------------------------------------------

def per_call_us(fn, arg, seconds, repeat):
    """Best of `repeat` runs of about `seconds` each, in microseconds per call."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn(arg)
        dt = time.perf_counter() - t0
        if dt >= seconds / 4:
            break
        n *= 2
    n = max(1, int(n * seconds / max(dt, 1e-9)))
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(arg)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def check_agreement():
    """Both parsers must read the same facts, or the comparison is meaningless."""
    assert kx_parse_read(INVITE) == py_parse_read(INVITE), (kx_parse_read(INVITE), py_parse_read(INVITE))
    assert kx_parse_read(OK200)[:6] == py_parse_read(OK200)[:6]
    relayed = _cparse.parse(kx_relay(INVITE))
    expect = _cparse.parse(py_relay(INVITE))
    assert relayed.headers == expect.headers and relayed.body == expect.body
    assert relayed.ruri == NEW_RURI and relayed.max_forwards == 69
    assert relayed.branch == NEW_VIA.decode().split("branch=")[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="length of one timing run")
    ap.add_argument("--repeat", type=int, default=7, help="runs per case; the best counts")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})  # one core
        except OSError:
            pass
    check_agreement()
    cases = [
        ("parse INVITE (%d B)" % len(INVITE), kx_parse, py_parse, INVITE, None),
        ("parse 200 OK (%d B)" % len(OK200), kx_parse, py_parse, OK200, None),
        ("parse+read INVITE", kx_parse_read, py_parse_read, INVITE, 2.0),
        ("parse+read 200 OK", kx_parse_read, py_parse_read, OK200, None),
        ("relay cycle INVITE", kx_relay, py_relay, INVITE, 6.0),
    ]
    rows = []
    for name, kx, py, data, target in cases:
        k = per_call_us(kx, data, args.seconds, args.repeat)
        p = per_call_us(py, data, args.seconds, args.repeat)
        rows.append((name, k, p, target))
    print(f"Python {sys.version.split()[0]}, one core, best of {args.repeat} x ~{args.seconds}s")
    print(f"| {'case':<22} | {'kampx us':>8} | {'pure Python us':>14} | {'speed-up':>8} | {'target':>9} |")
    print(f"|{'-' * 24}|{'-' * 9}:|{'-' * 15}:|{'-' * 9}:|{'-' * 11}|")
    failed = False
    for name, k, p, target in rows:
        if target is None:
            verdict = ""
        else:
            ok = k <= target
            failed |= not ok
            verdict = f"<={target:g} {'ok' if ok else 'MISS'}"
        print(f"| {name:<22} | {k:8.2f} | {p:14.2f} | {p / k:7.1f}x | {verdict:>9} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
