"""The dispatcher prober (`kampx: dispatcher prober`): Kamailio's ds_ping_interval. Every
[dispatcher] ping_interval seconds it sends an OPTIONS to each destination that is due a
probe and records the outcome in the shared table (kampx/dispatcher/table.py), which takes
a destination out of ds_select_dst() after probing_threshold failed probes in a row and
puts it back after inactive_threshold good ones.

Due a probe: with probing_mode 0 (Kamailio's default) the destinations flagged probing (8)
or currently inactive, with probing_mode 1 all of them; never a disabled one. A probe
succeeds when a final reply whose code ping_reply_codes accepts arrives within
ping_timeout_ms; the request is retransmitted meanwhile as RFC 3261's timer E does (T1,
doubling, capped at T2). No accepted reply in time: failed, recorded as 408 like Kamailio's
local timeout.

The probes leave from a UDP socket of their own, bound to the first listen address's IP and
an ephemeral port (port 0), not from the listen socket: replies to the listen socket would
reach the workers, which would take them for stray replies. So a gateway sees the probes
come from the proxy's IP but another port than its calls: a carrier ACL on the proxy's IP
accepts them, one on IP and port 5060 drops them and the gateway looks dead (open it to the
proxy's IP, or set ping_interval = 0).

Destination hosts are resolved by a pluggable `resolve(host, port) -> (ip, port) or None`:
in the prober process, kampx's DNS (RFC 3263 over the shared cache, the first target, at
most [dns] timeout of waiting: the prober has no other traffic to hold up); a Prober made
without one takes IP literals only. A destination whose host does not resolve is not
probed, and its state does not change; that is logged once per host.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import time
from collections.abc import Callable
from typing import NamedTuple

from kampx import stats as S
from kampx._cparse import SipParseError, parse
from kampx.dispatcher import stats as DS
from kampx.dispatcher.destinations import DISABLED, INACTIVE, PROBING, Destination
from kampx.forward import is_ip
from kampx.process import HelperProcess
from kampx.shared import HELPER_ROWS

STOP_CHECK_S = 0.25  # a stop is noticed this soon between rounds

log = logging.getLogger("kampx.dispatcher")

TIMEOUT_CODE = 408
Resolver = Callable[[str, int], "tuple[str, int] | None"]


class ReplyCodes(NamedTuple):
    classes: frozenset[int]  # 2 for 2xx ...
    codes: frozenset[int]


def parse_reply_codes(text: str) -> ReplyCodes:
    """Kamailio's ds_ping_reply_codes: "class=2;code=403;code=404" (any 2xx, 403 and 404).
    A 2xx is always accepted, as in Kamailio. ValueError naming the bad part."""
    classes, codes = {2}, set()
    for part in text.split(";"):
        if not part.strip():
            continue
        name, _, value = (x.strip() for x in part.partition("="))
        if name == "class" and value.isdigit() and 1 <= int(value) <= 6:
            classes.add(int(value))
        elif name == "code" and value.isdigit() and 100 <= int(value) <= 699:
            codes.add(int(value))
        else:
            raise ValueError(f"'{part.strip()}' is not class=1..6 or code=100..699")
    return ReplyCodes(frozenset(classes), frozenset(codes))


def accepted(code: int, rules: ReplyCodes) -> bool:
    return code // 100 in rules.classes or code in rules.codes


def resolve_ip_literal(host: str, port: int) -> tuple[str, int] | None:
    """The default resolver: an IP literal is its own address; a name resolves to nothing."""
    return (host, port or 5060) if is_ip(host) else None


def due(flags: int, probing_mode: int) -> bool:
    """Whether a destination with these flags is probed this round."""
    if flags & DISABLED:
        return False
    return probing_mode == 1 or bool(flags & (PROBING | INACTIVE))


def options_request(
    uri: str, from_uri: str, via_hostport: str, branch: str, call_id: str, tag: str
) -> bytes:
    """The OPTIONS Kamailio's dispatcher sends: From ping_from, To and R-URI the destination."""
    return (
        f"OPTIONS {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_hostport};branch={branch};rport\r\n"
        f"From: <{from_uri}>;tag={tag}\r\n"
        f"To: <{uri}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 10 OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class _Probe:
    __slots__ = ("slot", "dest", "addr", "call_id", "data", "next_send", "interval", "code")

    def __init__(
        self, slot: int, dest: Destination, addr: tuple[str, int], call_id: str, data: bytes
    ):
        self.slot, self.dest, self.addr, self.call_id, self.data = slot, dest, addr, call_id, data
        self.next_send = 0.0
        self.interval = 0.0
        self.code = 0  # the final reply's code; 0 while there is none


class Prober:
    """Probe rounds over `table` from `sock` (bound), per `cfg` ([dispatcher]) and the
    RFC 3261 timers t1/t2 (seconds)."""

    def __init__(
        self,
        table,
        cfg,
        sock: socket.socket,
        stats: S.Stats | None = None,
        resolve: Resolver = resolve_ip_literal,
        t1: float = 0.5,
        t2: float = 4.0,
    ):
        self.table = table
        self.cfg = cfg
        self.sock = sock
        self.stats = stats
        self.resolve = resolve
        self.t1, self.t2 = t1, t2
        self.rules = parse_reply_codes(cfg.ping_reply_codes)
        host, port = sock.getsockname()[:2]
        self.via_hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._unresolved: set[str] = set()

    def _probes(self):
        sets = self.table.sets()
        probes = []
        for slot, d in enumerate(sets.destinations):
            if not due(self.table.flags(sets, slot), self.cfg.probing_mode):
                continue
            addr = self.resolve(d.host, d.port)
            if addr is None or (":" in addr[0]) != (self.sock.family == socket.AF_INET6):
                if d.host not in self._unresolved:
                    self._unresolved.add(d.host)
                    log.warning("dispatcher: %s not probed: no address for %s", d.uri, d.host)
                continue
            token = os.urandom(8).hex()
            data = options_request(
                d.uri, self.cfg.ping_from, self.via_hostport, f"z9hG4bKds{token}", token, token[:8]
            )
            probes.append(_Probe(slot, d, addr, token, data))
        return sets.generation, probes

    def round(self) -> dict[str, tuple[bool, int]]:
        """One round: probe every destination due, wait for the replies (at most
        ping_timeout_ms), record the outcomes. Returns {uri: (ok, code)}."""
        generation, probes = self._probes()
        if not probes:
            return {}
        by_callid = {p.call_id: p for p in probes}
        start = time.monotonic()
        deadline = start + self.cfg.ping_timeout_ms / 1000
        for p in probes:
            p.next_send, p.interval = start, self.t1
        pending = len(probes)
        while pending:
            now = time.monotonic()
            if now >= deadline:
                break
            for p in probes:
                if not p.code and p.next_send <= now:
                    self._send(p)
                    p.next_send = now + p.interval
                    p.interval = min(2 * p.interval, self.t2)
            wake = min([p.next_send for p in probes if not p.code] + [deadline])
            if select.select([self.sock], [], [], max(0.0, wake - time.monotonic()))[0]:
                pending -= self._receive(by_callid)
        out = {}
        for p in probes:
            code = p.code or TIMEOUT_CODE
            ok = bool(p.code) and accepted(p.code, self.rules)
            self.table.record_probe(
                generation,
                p.slot,
                ok,
                code,
                self.cfg.probing_threshold,
                self.cfg.inactive_threshold,
            )
            if self.stats is not None:
                self.stats.inc(DS.PROBES_SENT.base)
                if not ok:
                    self.stats.inc(DS.PROBES_FAILED.base)
            out[p.dest.uri] = (ok, code)
        return out

    def _send(self, p: _Probe) -> None:
        try:
            self.sock.sendto(p.data, p.addr)
        except OSError as e:  # unreachable right now: the timeout decides
            log.debug("dispatcher probe to %s: %s", p.addr, e)

    def _receive(self, by_callid: dict) -> int:
        """Read what the socket holds; returns how many probes got their final reply."""
        finished = 0
        while True:
            try:
                data = self.sock.recv(65535, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return finished
            except OSError:  # ICMP unreachable reported on the socket: the timeout decides
                continue
            try:
                msg = parse(data)
            except SipParseError:
                continue
            p = by_callid.get(msg.call_id) if not msg.is_request else None
            if p is not None and not p.code and msg.status >= 200:
                p.code = msg.status
                finished += 1


def probe_socket(listen_host: str) -> socket.socket:
    """A UDP socket on the listen IP, ephemeral port (module docstring: why)."""
    family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((listen_host, 0))
    except OSError:
        sock.close()
        raise
    return sock


class ProberProcess(HelperProcess):
    """The helper process around Prober: one round every ping_interval seconds."""

    role = "dispatcher prober"

    def __init__(self, shared, cfg, resolve: Resolver | None = None):
        super().__init__(shared, cfg)
        self.resolve = resolve  # None: kampx's DNS resolver, made in the process

    def serve(self) -> None:
        cfg = self.cfg
        stats = S.Stats(self.shared.counters, HELPER_ROWS["dispatcher prober"])
        if self.resolve is None:  # names through kampx's DNS (RFC 3263, the shared cache)
            from kampx.dns.resolver import BlockingResolver

            self.resolve = BlockingResolver(cfg.dns, self.shared.dns_cache, stats).address
        sock = probe_socket(cfg.core.listen_addrs()[0].host)
        prober = Prober(
            self.shared.dispatcher,
            cfg.dispatcher,
            sock,
            stats,
            self.resolve or resolve_ip_literal,
            cfg.tm.t1_ms / 1000,
            cfg.tm.t2_ms / 1000,
        )

        def probe_round() -> None:
            try:
                prober.round()
            except Exception:
                log.exception("dispatcher probe round failed")

        next_round = time.monotonic()
        try:
            while self.should_run():
                now = time.monotonic()
                if now >= next_round:
                    probe_round()
                    next_round = max(next_round + cfg.dispatcher.ping_interval, now)
                time.sleep(min(STOP_CHECK_S, max(0.0, next_round - time.monotonic())))
        finally:
            sock.close()
