"""Non-blocking DNS queries for one process's event loop (a worker, the dispatcher prober).

dnspython builds each query and parses each answer; the sending, the waiting and the
time-outs are the loop's: every attempt has a socket of its own (a fresh random source port
and query id, connected to the nameserver so the kernel drops datagrams from anyone else, and
an ICMP "port unreachable" ends the attempt at once), watched by the loop through
`watch(fd, callback)` / `unwatch(fd)`; the retries are timers of the process's TimerHeap.

A question is sent to the nameservers in turn, each attempt waiting `timeout / (2 * number of
nameservers)` (at least MIN_ATTEMPT_S), until one answers or `timeout` is over. Questions
asked again while one is in flight wait for the same answer (unless its last attempt is under
way: then a new question has the whole `timeout`). An attempt's socket stays open
until the question is answered: a slow nameserver's late answer still counts. SERVFAIL,
REFUSED, a truncated or malformed answer move on to the next nameserver; when every attempt
is spent the answer is FAILED, which is never cached.
"""

from __future__ import annotations

import errno
import logging
import socket
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from kampx.dns.rfc3263 import (
    AAAA,
    FAILED,
    NAPTR,
    NODATA,
    NXDOMAIN,
    OK,
    SRV,
    A,
    Answer,
    is_ip,
    normalize,
)

log = logging.getLogger("kampx.dns")

MIN_ATTEMPT_S = 0.2
NEGATIVE_TTL = 60  # without an SOA in the answer (Kamailio's dns_neg_cache_ttl)
EDNS_PAYLOAD = 1232  # the DNS flag day 2020 size: no fragments, rarely a truncation
MAX_IN_FLIGHT = 256  # questions waiting at once; past it a question fails at once
_RECV = 65535


def parse_nameservers(entries) -> list[tuple[str, int]]:
    """["IP", "IP:PORT", "[IPv6]:PORT"] -> [(ip, port)]; ValueError naming a bad one."""
    from kampx.config import parse_ip_port

    return [parse_ip_port(entry, 53) for entry in entries]


def system_nameservers() -> list[tuple[str, int]]:
    """The nameservers of /etc/resolv.conf (read, not asked), or loopback's when it has none."""
    import dns.resolver

    try:
        found = dns.resolver.Resolver(configure=True).nameservers
    except (dns.exception.DNSException, OSError):
        found = []
    servers = [(str(ns), 53) for ns in found if is_ip(str(ns))]
    return servers or [("127.0.0.1", 53)]


class _Question:
    __slots__ = ("name", "qtype", "waiters", "deadline", "attempt", "socks", "timer")

    def __init__(self, name, qtype, deadline):
        self.name = name
        self.qtype = qtype
        self.waiters: list = []
        self.deadline = deadline
        self.attempt = 0
        self.socks: list = []  # one per attempt, open until the answer
        self.timer = None


class DnsClient:
    """`on_answer(name, qtype, answer, extra)` is called for every answer (the resolver
    caches it); `extra`: [(name, qtype, Answer)] address records of an SRV answer's targets
    found in its additional section. Then each waiter's callback gets the Answer."""

    def __init__(self, nameservers, timeout: float, timers, watch, unwatch, on_answer, counts):
        self.nameservers = list(nameservers)
        self.timeout = timeout
        self.attempt_s = max(MIN_ATTEMPT_S, timeout / (2 * max(1, len(self.nameservers))))
        self.timers = timers
        self.watch = watch
        self.unwatch = unwatch
        self.on_answer = on_answer
        self.counts = counts  # .sent() .timed_out() .error()
        self.in_flight: dict[tuple[str, str], _Question] = {}

    def ask(self, name: str, qtype: str, callback) -> None:
        """Ask (name, qtype); `callback(answer)` later, always, exactly once."""
        key = (name, qtype)
        q = self.in_flight.get(key)
        # A question whose last attempt is under way is not joined: a request arriving as
        # the nameserver comes back deserves a fresh question, not the old one's failure.
        if q is None or q.deadline - time.monotonic() < self.attempt_s:
            if len(self.in_flight) >= MAX_IN_FLIGHT or not self.nameservers:
                self.timers.call_later(0, callback, Answer(FAILED))  # never from inside ask()
                return
            q = _Question(name, qtype, time.monotonic() + self.timeout)
            self.in_flight[key] = q
            q.waiters.append(callback)
            self._send(q)
            return
        q.waiters.append(callback)

    def _send(self, q: _Question) -> None:
        q.timer = None
        now = time.monotonic()
        if now >= q.deadline:
            self.counts.timed_out()
            self._finish(q, Answer(FAILED))
            return
        ip, port = self.nameservers[q.attempt % len(self.nameservers)]
        q.attempt += 1
        query = dns.message.make_query(q.name + ".", q.qtype, use_edns=0, payload=EDNS_PAYLOAD)
        try:
            sock = socket.socket(
                socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM
            )
        except OSError as e:
            log.warning("dns: no socket for a query: %s", e)
            self.timers.call_later(0, self._finish, q, Answer(FAILED))
            return
        sock.setblocking(False)
        q.socks.append(sock)
        try:
            sock.connect((ip, port))
            sock.send(query.to_wire())
        except OSError:
            pass  # the attempt's timer moves on to the next nameserver
        self.counts.sent()
        self.watch(sock.fileno(), lambda: self._readable(q, sock, query))
        wait = min(self.attempt_s, max(0.0, q.deadline - now))
        q.timer = self.timers.call_later(wait, self._send, q)

    def _readable(self, q: _Question, sock, query) -> None:
        if sock not in q.socks:
            return
        try:
            wire = sock.recv(_RECV)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno == errno.ECONNREFUSED:  # no server at that address: try the next now
                q.socks.remove(sock)
                self.unwatch(sock.fileno())
                sock.close()
                self._retry_now(q)
            return
        try:
            reply = dns.message.from_wire(wire)
        except Exception:  # anything may arrive: dnspython raises more than DNSException
            self.counts.error()
            return  # not an answer; the attempt's timer goes on
        if not query.is_response(reply):
            return  # not the answer to this query (a late one of an earlier attempt)
        answer, extra = _read_answer(reply, q.qtype)
        if answer is None:  # SERVFAIL, REFUSED, truncated: another nameserver may do better
            self.counts.error()
            self._retry_now(q)
            return
        self.on_answer(q.name, q.qtype, answer, extra)
        self._finish(q, answer)

    def _retry_now(self, q: _Question) -> None:
        if q.timer is not None:
            q.timer.cancel()
        if q.attempt >= 2 * len(self.nameservers):
            self.counts.error()
            self._finish(q, Answer(FAILED))
            return
        self._send(q)

    def _close(self, q: _Question) -> None:
        if q.timer is not None:
            q.timer.cancel()
            q.timer = None
        for sock in q.socks:
            self.unwatch(sock.fileno())
            sock.close()
        q.socks = []

    def _finish(self, q: _Question, answer: Answer) -> None:
        self._close(q)
        if self.in_flight.get((q.name, q.qtype)) is q:
            del self.in_flight[(q.name, q.qtype)]
        waiters, q.waiters = q.waiters, []
        for callback in waiters:
            callback(answer)

    def close(self) -> None:
        for q in list(self.in_flight.values()):
            self._close(q)
        self.in_flight.clear()


def _read_answer(reply, qtype: str):
    """(Answer, extra) of a reply; (None, []) when another nameserver should be asked."""
    if reply.flags & dns.flags.TC:
        return None, []
    rcode = reply.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return Answer(NXDOMAIN, (), _negative_ttl(reply)), []
    if rcode != dns.rcode.NOERROR:
        return None, []
    rdtype = dns.rdatatype.from_text(qtype)
    try:
        chain = reply.resolve_chaining()
    except dns.exception.DNSException:
        return None, []
    rrset = chain.answer
    if rrset is None or rrset.rdtype != rdtype:
        return Answer(NODATA, (), _negative_ttl(reply)), []
    records = tuple(_record(qtype, rd) for rd in rrset)
    answer = Answer(OK, records, min(rrset.ttl, chain.minimum_ttl))
    extra = _additional_addresses(reply, records) if qtype == SRV else []
    return answer, extra


def _record(qtype: str, rd):
    if qtype in (A, AAAA):
        return rd.address
    if qtype == SRV:
        return (rd.priority, rd.weight, rd.port, normalize(rd.target.to_text()))
    if qtype == NAPTR:
        return (
            rd.order,
            rd.preference,
            rd.flags.decode("ascii", "replace"),
            rd.service.decode("ascii", "replace"),
            rd.regexp.decode("ascii", "replace"),
            normalize(rd.replacement.to_text()),
        )
    raise ValueError(qtype)


def _negative_ttl(reply) -> int:
    """RFC 2308 section 5: the SOA's TTL, at most its MINIMUM field."""
    for rrset in reply.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return min(rrset.ttl, rrset[0].minimum)
    return NEGATIVE_TTL


def _additional_addresses(reply, srv_records) -> list:
    """The A/AAAA records of the additional section that belong to the SRV targets (and
    only those: an answer must not slip in records for names it was not asked about)."""
    targets = {rec[3] for rec in srv_records}
    out = []
    for rrset in reply.additional:
        if rrset.rdclass != dns.rdataclass.IN or rrset.rdtype not in (
            dns.rdatatype.A,
            dns.rdatatype.AAAA,
        ):
            continue
        name = normalize(rrset.name.to_text())
        if name in targets:
            qtype = dns.rdatatype.to_text(rrset.rdtype)
            out.append((name, qtype, Answer(OK, tuple(rd.address for rd in rrset), rrset.ttl)))
    return out
