"""RFC 3263 section 4: which (ip, port, transport) to try, in order, for a SIP URI's host.

The procedure is a generator: it yields the DNS questions it needs (`Question`) and is sent
each `Answer`; its return value is a `Lookup`. The same steps therefore run over the shared
cache alone (a request whose answers are all cached is relayed at once), over non-blocking
queries in a worker (kampx.dns.resolver parks the request until the answer comes), or over a
dict in a test.

    an IP literal              that address, the URI's port or the transport's default
    a port in the URI          A/AAAA of the host (no NAPTR, no SRV: RFC 3263 4.2)
    a transport in the URI     SRV _sip._udp.host (_sips._tcp for TLS), else A/AAAA
    neither                    NAPTR (when [dns] naptr) -> the SRV it names, else SRV for
                               each supported transport, else A/AAAA at 5060 (5061 TLS)

SRV targets are ordered by priority and, within a priority, by a weighted random draw (RFC
2782), so the load over equal switches follows their weights; each target's addresses follow
in the order the server gave them. The whole list is the failover order of a transaction.
"""

from __future__ import annotations

import random
from collections.abc import Generator
from typing import NamedTuple

from kampx.forward import is_ip

NAPTR, SRV, A, AAAA = "NAPTR", "SRV", "A", "AAAA"

# Answer.status
OK, NXDOMAIN, NODATA, FAILED = "ok", "nxdomain", "nodata", "failed"
# Lookup.failure
NOT_FOUND = "not found"  # the name (or every name it led to) has no usable record
UNAVAILABLE = "unavailable"  # a nameserver did not answer (time-out, SERVFAIL, REFUSED)

MAX_TARGETS = 16  # addresses kept per lookup: a failover list, not a census

# transport -> (NAPTR service, SRV prefix, default port)
SERVICES = {
    "udp": ("SIP+D2U", "_sip._udp.", 5060),
    "tcp": ("SIP+D2T", "_sip._tcp.", 5060),
    "tls": ("SIPS+D2T", "_sips._tcp.", 5061),
}
_BY_SERVICE = {service: transport for transport, (service, _, _) in SERVICES.items()}


class Question(NamedTuple):
    name: str  # lower case, no trailing dot
    qtype: str


class Answer(NamedTuple):
    """What a question got. `records` by type: A/AAAA an IP string each; SRV (priority,
    weight, port, target); NAPTR (order, preference, flags, services, regexp, replacement).
    `ttl`: seconds it may be reused (negative answers too)."""

    status: str
    records: tuple = ()
    ttl: int = 0


class Target(NamedTuple):
    ip: str
    port: int
    transport: str


class Lookup(NamedTuple):
    """The result: targets in the order to try them; when empty, why (`failure`)."""

    targets: tuple
    failure: str | None = None


def normalize(name: str) -> str:
    return name.rstrip(".").lower()


Procedure = Generator[Question, Answer, Lookup]


def resolve(
    host: str,
    port: int = 0,
    transport: str | None = None,
    secure: bool = False,
    *,
    naptr: bool = True,
    families: tuple = (A,),
    supported: tuple = ("udp",),
    rng: random.Random | None = None,
) -> Procedure:
    """The procedure for a URI's host, port (0: none given) and transport parameter (None:
    none given). `secure`: a sips: URI (TLS when supported, else resolved as sip:).
    `supported`: the transports the proxy can send over, preferred first. `families`: the
    address records to ask for (AAAA only when the proxy can send over IPv6)."""
    host = host[1:-1] if host.startswith("[") else host
    tried = _Tried()
    if transport is not None:
        transport = transport.lower()
    elif secure and "tls" in supported:
        transport = "tls"
    if is_ip(host):
        t = transport or "udp"
        return Lookup((Target(host, port or _default_port(t), t),))
    name = normalize(host)
    found: list | None
    if port:
        t = transport or "udp"
        found = yield from _addresses(name, port, t, families, tried)
        return _finish(found, tried)
    if transport is not None:
        if transport not in SERVICES:
            return Lookup((), NOT_FOUND)
        found = yield from _srv(SERVICES[transport][1] + name, transport, families, tried, rng)
        if found is None:
            found = yield from _addresses(
                name, _default_port(transport), transport, families, tried
            )
        return _finish(found, tried)
    if naptr:
        found = yield from _naptr(name, families, supported, tried, rng)
        if found:
            return _finish(found, tried)
    for t in supported:
        found = yield from _srv(SERVICES[t][1] + name, t, families, tried, rng)
        if found is not None:  # SRV records, even if they lead nowhere: no A fallback
            return _finish(found, tried)
    t = supported[0]
    found = yield from _addresses(name, _default_port(t), t, families, tried)
    return _finish(found, tried)


class _Tried:
    """Whether any question failed for want of a nameserver (an empty result is then
    UNAVAILABLE, not NOT_FOUND: the caller should not be told the name does not exist)."""

    __slots__ = ("failed",)

    def __init__(self):
        self.failed = False


def _ask(name: str, qtype: str, tried: _Tried) -> Generator[Question, Answer, tuple]:
    answer = yield Question(name, qtype)
    if answer.status == FAILED:
        tried.failed = True
    return answer.records if answer.status == OK else ()


def _finish(found: list | None, tried: _Tried) -> Lookup:
    if found:
        return Lookup(tuple(found[:MAX_TARGETS]))
    return Lookup((), UNAVAILABLE if tried.failed else NOT_FOUND)


def _default_port(transport: str) -> int:
    return SERVICES.get(transport, SERVICES["udp"])[2]


def _addresses(name, port, transport, families, tried) -> Generator[Question, Answer, list]:
    found: list = []
    for qtype in families:
        for ip in (yield from _ask(name, qtype, tried)):
            found.append(Target(ip, port, transport))
    return found


def _naptr(name, families, supported, tried, rng) -> Generator[Question, Answer, list]:
    """RFC 3263 4.1: the NAPTR records of services kampx speaks, by order then preference;
    the first whose SRV leads to addresses wins (RFC 3403: an order is tried before the
    next)."""
    records = yield from _ask(name, NAPTR, tried)
    usable = sorted(
        (order, pref, _BY_SERVICE[services.upper()], normalize(replacement))
        for order, pref, flags, services, _regexp, replacement in records
        if flags.lower() == "s"
        and services.upper() in _BY_SERVICE
        and _BY_SERVICE[services.upper()] in supported
        and normalize(replacement)
    )
    for _order, _pref, transport, srv_name in usable:
        found = yield from _srv(srv_name, transport, families, tried, rng)
        if found:
            return found
    return []


def _srv(name, transport, families, tried, rng) -> Generator[Question, Answer, list | None]:
    """The addresses of the SRV targets, in order; None when there are no SRV records (the
    caller falls back to A/AAAA), [] when there are but none leads anywhere (a lone "."
    target: RFC 2782's "decidedly not available")."""
    records = yield from _ask(name, SRV, tried)
    if not records:
        return None
    found: list = []
    for _prio, _weight, port, target in order_srv(records, rng):
        if target in ("", "."):
            continue  # RFC 2782: "." means the service is decidedly not available
        found.extend((yield from _addresses(normalize(target), port, transport, families, tried)))
        if len(found) >= MAX_TARGETS:
            break
    return found


def order_srv(records, rng: random.Random | None = None) -> list:
    """RFC 2782's order: ascending priority; within one priority, repeatedly draw a record
    with probability proportional to its weight (weight 0 ones get a small chance, drawn
    last in the ordering of equal sums as the RFC describes)."""
    draw = (rng or random).randint
    out = []
    by_prio: dict[int, list] = {}
    for rec in records:
        by_prio.setdefault(rec[0], []).append(rec)
    for prio in sorted(by_prio):
        group = sorted(by_prio[prio], key=lambda r: r[1] != 0)  # weight 0 first (RFC 2782)
        while group:
            total = sum(r[1] for r in group)
            pick = draw(0, total)
            running = 0
            for i, rec in enumerate(group):
                running += rec[1]
                if running >= pick:
                    out.append(group.pop(i))
                    break
    return out
