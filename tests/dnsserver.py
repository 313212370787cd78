"""A DNS server for tests, on loopback, in a thread of the test process (dnspython packets).

    with DnsServer("127.0.0.1") as dns:
        dns.add("_sip._udp.carrier.example", "SRV", 60, "10 50 5060 sw1.carrier.example.")
        dns.add("sw1.carrier.example", "A", 60, "127.0.0.21")
        dns.nameserver                # "127.0.0.1:PORT", for [dns] nameservers
        dns.asked("sw1.carrier.example", "A")   # how many queries it got for that
        dns.silent = True             # reads queries, answers none (a dead server)

Authoritative for whatever it holds: a name it holds with another type gets NODATA, a name
it does not hold NXDOMAIN, both with an SOA whose TTL and MINIMUM are `negative_ttl` (RFC
2308). SRV answers carry the A records of their targets in the additional section when
`glue` is on (as most servers do). No test may ask the machine's own resolver: the proxy
under test is pointed here with [dns] nameservers.
"""
from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, negative_ttl: int = 30,
                 glue: bool = True):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.05)
        self.host, self.port = self.sock.getsockname()
        self.nameserver = f"{self.host}:{self.port}"
        self.negative_ttl = negative_ttl
        self.glue = glue
        self.records: dict[tuple[str, str], tuple[int, list[str]]] = {}
        self.silent = False
        self.delay = 0.0  # seconds before each answer
        self.rcode = None  # e.g. dns.rcode.SERVFAIL: every answer gets it
        self.queries: Counter = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # -- the zone ---------------------------------------------------------------------
    def add(self, name: str, qtype: str, ttl: int, *rdatas: str) -> None:
        with self._lock:
            self.records[(name.lower().rstrip("."), qtype.upper())] = (ttl, list(rdatas))

    def remove(self, name: str, qtype: str) -> None:
        with self._lock:
            self.records.pop((name.lower().rstrip("."), qtype.upper()), None)

    def asked(self, name: str, qtype: str) -> int:
        with self._lock:
            return self.queries[(name.lower().rstrip("."), qtype.upper())]

    def total_asked(self) -> int:
        with self._lock:
            return sum(self.queries.values())

    # -- serving ----------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, src = self.sock.recvfrom(65535)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(wire)
                q = query.question[0]
            except Exception:
                continue
            name = q.name.to_text().lower().rstrip(".")
            qtype = dns.rdatatype.to_text(q.rdtype)
            with self._lock:
                self.queries[(name, qtype)] += 1
                silent, delay = self.silent, self.delay
                reply = None if silent else self._answer(query, name, qtype)
            if reply is None:
                continue
            data = reply.to_wire()
            if delay:
                threading.Timer(delay, self._send, (data, src)).start()
            else:
                self._send(data, src)

    def _send(self, data: bytes, dest) -> None:
        try:
            self.sock.sendto(data, dest)
        except OSError:
            pass

    def _answer(self, query, name: str, qtype: str):
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA | dns.flags.RA
        if self.rcode is not None:
            reply.set_rcode(self.rcode)
            return reply
        held = self.records.get((name, qtype))
        if held is None:
            exists = any(n == name for n, _ in self.records)
            reply.set_rcode(dns.rcode.NOERROR if exists else dns.rcode.NXDOMAIN)
            zone = name.split(".", 1)[-1] + "."
            ttl = self.negative_ttl
            reply.authority.append(dns.rrset.from_text(
                zone, ttl, "IN", "SOA", f"ns.{zone} hostmaster.{zone} 1 3600 600 86400 {ttl}"))
            return reply
        ttl, rdatas = held
        reply.answer.append(dns.rrset.from_text(name + ".", ttl, "IN", qtype, *rdatas))
        if qtype == "SRV" and self.glue:
            for rd in reply.answer[0]:
                target = rd.target.to_text().lower().rstrip(".")
                glue = self.records.get((target, "A"))
                if glue is not None:
                    reply.additional.append(
                        dns.rrset.from_text(target + ".", glue[0], "IN", "A", *glue[1]))
        return reply

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> "DnsServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_until(predicate, timeout: float = 5.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
