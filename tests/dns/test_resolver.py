"""kampx.dns against a real DNS server on loopback (tests/dnsserver.py): the resolver's
answers, the shared cache (TTL, negative answers, bound, clear, seen by another process), and
a dead or failing nameserver costing a lookup [dns] timeout at most, never a block."""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

import dns.rcode
import pytest

from dnsserver import DnsServer
from kampx import stats as S
from kampx._shm import CounterRows
from kampx.dns.cache import DnsCache
from kampx.dns.resolver import CACHE_HITS, ERRORS, QUERIES, STALE_ANSWERS, TIMEOUTS, Resolver
from kampx.dns.rfc3263 import NOT_FOUND, OK, UNAVAILABLE, Answer, Target
from loopkit import Loop

pytestmark = pytest.mark.timeout(60)


def cfg(*servers, timeout=1.0, naptr=True, serve_stale=86400):
    return SimpleNamespace(nameservers=tuple(servers), timeout=timeout, naptr=naptr,
                           serve_stale=serve_stale)


class Rig:
    """A resolver on a Loop over its own cache; `lookup(host)` waits for the answer."""

    def __init__(self, *servers, timeout=1.0, naptr=True, cache=None, max_ttl=3600,
                 serve_stale=86400):
        self.loop = Loop()
        self.rows = CounterRows(1, S.ncols())
        self.cache = cache or DnsCache(256, max_ttl)
        self.resolver = Resolver(cfg(*servers, timeout=timeout, naptr=naptr,
                                     serve_stale=serve_stale), self.cache,
                                 S.Stats(self.rows, 0), self.loop.timers, self.loop.watch,
                                 self.loop.unwatch)

    def start(self, host, port=0, transport=None):
        got = []
        now = self.resolver.resolve(host, port, transport, False, got.append)
        return now, got

    def lookup(self, host, port=0, transport=None, timeout=5.0):
        """(lookup, answered from the cache at once?)"""
        now, got = self.start(host, port, transport)
        if now is not None:
            return now, True
        assert self.loop.run_until(lambda: got, timeout), "no answer in time"
        assert len(got) == 1
        return got[0], False

    def count(self, family):
        return self.rows.get(0, family.base)

    def close(self):
        self.resolver.close()
        self.loop.close()


@pytest.fixture
def server():
    with DnsServer("127.0.0.1") as s:
        s.add("carrier.example", "NAPTR", 300, '10 50 "s" "SIP+D2U" "" _sip._udp.carrier.example.')
        s.add("_sip._udp.carrier.example", "SRV", 300, "10 50 5061 sw1.carrier.example.",
              "20 50 5062 sw2.carrier.example.")
        s.add("sw1.carrier.example", "A", 300, "127.0.0.21")
        s.add("sw2.carrier.example", "A", 300, "127.0.0.22")
        yield s


def test_resolves_naptr_srv_a_then_answers_from_the_cache(server):
    rig = Rig(server.nameserver)
    try:
        lookup, cached = rig.lookup("carrier.example")
        assert not cached
        assert lookup.targets == (Target("127.0.0.21", 5061, "udp"), Target("127.0.0.22", 5062, "udp"))
        asked = server.total_asked()
        # the SRV answer carried the switches' A records: no separate query for them
        assert server.asked("sw1.carrier.example", "A") == 0
        again, cached = rig.lookup("carrier.example")
        assert cached and again.targets == lookup.targets
        assert server.total_asked() == asked
        assert rig.count(CACHE_HITS) >= 3
    finally:
        rig.close()


def test_another_process_uses_what_one_resolved(server):
    cache = DnsCache(256)
    rig = Rig(server.nameserver, cache=cache)
    try:
        rig.lookup("carrier.example")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # another worker: offline, so only the shared cache can answer
            try:
                child = Resolver(cfg(), cache, S.Stats(CounterRows(1, S.ncols()), 0),
                                 Loop().timers, offline=True)
                found = child.resolve("carrier.example", 0, None, False, lambda x: None)
                os.write(w, repr(found.targets if found else None).encode())
            finally:
                os._exit(0)
        os.close(w)
        out = os.read(r, 4096).decode()
        os.waitpid(pid, 0)
        os.close(r)
        assert "127.0.0.21" in out and "127.0.0.22" in out
    finally:
        rig.close()


def test_ttl_expiry_asks_again(server):
    server.add("short.example", "A", 1, "127.0.0.23")
    rig = Rig(server.nameserver)
    try:
        rig.lookup("short.example", 5060)
        assert rig.lookup("short.example", 5060)[1]
        time.sleep(1.1)
        lookup, cached = rig.lookup("short.example", 5060)
        assert not cached and lookup.targets == (Target("127.0.0.23", 5060, "udp"),)
        assert server.asked("short.example", "A") == 2
    finally:
        rig.close()


def test_cache_max_ttl_caps_a_long_ttl(server):
    rig = Rig(server.nameserver, max_ttl=1)
    try:
        rig.lookup("sw1.carrier.example", 5060)
        time.sleep(1.1)
        assert not rig.lookup("sw1.carrier.example", 5060)[1]
        assert server.asked("sw1.carrier.example", "A") == 2
    finally:
        rig.close()


def test_negative_answers_are_cached_for_the_soa_ttl(server):
    rig = Rig(server.nameserver)
    try:
        lookup, cached = rig.lookup("nowhere.example")
        assert lookup.targets == () and lookup.failure == NOT_FOUND and not cached
        asked = server.total_asked()
        assert asked == 3  # NAPTR, SRV, A: each NXDOMAIN
        again, cached = rig.lookup("nowhere.example")
        assert cached and again.failure == NOT_FOUND
        assert server.total_asked() == asked
        entry = [e for e in rig.cache.entries() if e.name == "nowhere.example" and e.qtype == "A"]
        assert entry and entry[0].answer.status == "nxdomain" and 0 < entry[0].answer.ttl <= 30
    finally:
        rig.close()


def test_a_silent_server_fails_the_lookup_after_the_timeout(server):
    server.silent = True
    rig = Rig(server.nameserver, timeout=0.6)
    try:
        t0 = time.monotonic()
        lookup, cached = rig.lookup("carrier.example")
        took = time.monotonic() - t0
        assert not cached and lookup.targets == () and lookup.failure == UNAVAILABLE
        assert 0.55 <= took < 1.0
        assert rig.count(TIMEOUTS) >= 1 or server.total_asked() >= 1
        # a failure is never cached: the next request asks again
        server.silent = False
        lookup, cached = rig.lookup("carrier.example")
        assert not cached and len(lookup.targets) == 2
    finally:
        rig.close()


def test_a_request_during_the_last_attempt_asks_afresh_when_the_server_is_back(server):
    """A question in its last attempt is not joined: its failure would reach a request that
    arrived after the nameserver came back."""
    server.silent = True
    rig = Rig(server.nameserver, timeout=0.6)  # attempts at 0 and 0.3 s, gives up at 0.6 s
    try:
        _, first = rig.start("carrier.example")
        rig.loop.run_until(lambda: False, 0.42)
        assert not first and server.total_asked() == 2
        server.silent = False
        lookup, cached = rig.lookup("carrier.example")
        assert not cached and len(lookup.targets) == 2
        # the first one's question fails at its timeout; it takes what the cache now holds
        assert rig.loop.run_until(lambda: first, 1.0)
        assert first[0].targets == lookup.targets
    finally:
        rig.close()


def test_the_second_nameserver_answers_when_the_first_is_dead(server):
    with DnsServer("127.0.0.1") as dead:
        dead.silent = True
        rig = Rig(dead.nameserver, server.nameserver, timeout=2.0)
        try:
            t0 = time.monotonic()
            lookup, _ = rig.lookup("sw2.carrier.example", 5060)
            assert lookup.targets == (Target("127.0.0.22", 5060, "udp"),)
            assert time.monotonic() - t0 < 1.5
            assert dead.total_asked() == 1 and rig.count(QUERIES) == 2
        finally:
            rig.close()


def test_servfail_is_unavailable_and_counted(server):
    server.rcode = dns.rcode.SERVFAIL
    rig = Rig(server.nameserver, timeout=1.0)
    try:
        lookup, _ = rig.lookup("sw1.carrier.example", 5060)
        assert lookup.failure == UNAVAILABLE
        assert rig.count(ERRORS) >= 1
        assert not rig.cache.entries()
    finally:
        rig.close()


def test_concurrent_lookups_of_one_name_share_one_query(server):
    server.delay = 0.2
    rig = Rig(server.nameserver)
    try:
        first = rig.start("sw1.carrier.example", 5060)
        second = rig.start("sw1.carrier.example", 5060)
        assert first[0] is None and second[0] is None
        assert rig.loop.run_until(lambda: first[1] and second[1], 3)
        assert first[1][0].targets == second[1][0].targets
        assert server.asked("sw1.carrier.example", "A") == 1
    finally:
        rig.close()


def test_answers_never_come_from_inside_resolve():
    """Without any nameserver the failure still arrives from the loop, never from inside
    resolve() (its caller must be able to finish setting up first)."""
    rig = Rig("127.0.0.1:9")  # nothing listens on the discard port: refused at once
    try:
        now, got = rig.start("x.example", 5060)
        assert now is None and got == []
        assert rig.loop.run_until(lambda: got, 3)
        assert got[0].failure == UNAVAILABLE
    finally:
        rig.close()


def test_the_cache_is_bounded_and_clear_reaches_every_process():
    cache = DnsCache(8)
    try:
        for i in range(100):
            cache.put(f"n{i}.example", "A", Answer(OK, (f"192.0.2.{i}",), 300))
        assert len(cache.entries()) <= cache.capacity == 8
        assert cache.get("n99.example", "A") is not None
        from_parent, to_child = os.pipe()
        from_child, to_parent = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                before = cache.get("n99.example", "A") is not None  # now in this process's memo
                os.write(to_parent, b"r")
                os.read(from_parent, 1)  # the parent cleared: the memo must not answer any more
                after = cache.get("n99.example", "A") is None
                os.write(to_parent, b"1" if before and after else b"0")
            finally:
                os._exit(0)
        assert os.read(from_child, 1) == b"r"
        assert cache.clear() >= 1
        os.write(to_child, b"x")
        result = os.read(from_child, 1)
        os.waitpid(pid, 0)
        for fd in (to_child, from_parent, from_child, to_parent):
            os.close(fd)
        assert result == b"1"
        assert cache.entries() == []
    finally:
        cache.close()


def test_a_ttl_of_zero_and_failures_are_not_cached():
    cache = DnsCache(8)
    try:
        assert not cache.put("z.example", "A", Answer(OK, ("192.0.2.1",), 0))
        assert not cache.put("f.example", "A", Answer("failed"))
        assert cache.entries() == []
    finally:
        cache.close()


@pytest.mark.parametrize("serve_stale", [86400, 0])
def test_a_dns_outage_serves_expired_answers(server, serve_stale):
    """RFC 8767: the carrier's records expired while its DNS server is down: the lookup
    waits [dns] timeout, then goes on with the expired answers (unless serve_stale = 0), and
    reuses them for STALE_TTL without asking again."""
    for name, qtype, data in (("carrier.example", "NAPTR",
                               '10 50 "s" "SIP+D2U" "" _sip._udp.carrier.example.'),
                              ("_sip._udp.carrier.example", "SRV", "10 50 5061 sw1.carrier.example."),
                              ("sw1.carrier.example", "A", "127.0.0.21")):
        server.add(name, qtype, 1, data)
    rig = Rig(server.nameserver, timeout=0.5, serve_stale=serve_stale)
    try:
        fresh, _ = rig.lookup("carrier.example")
        time.sleep(1.1)
        server.silent = True
        t0 = time.monotonic()
        lookup, cached = rig.lookup("carrier.example")
        assert not cached and 0.45 <= time.monotonic() - t0 < 1.0
        if not serve_stale:
            assert lookup.failure == UNAVAILABLE and rig.count(STALE_ANSWERS) == 0
            return
        assert lookup.targets == fresh.targets == (Target("127.0.0.21", 5061, "udp"),)
        assert rig.count(STALE_ANSWERS) >= 1
        asked = server.total_asked()
        again, cached = rig.lookup("carrier.example")
        assert cached and again.targets == fresh.targets and server.total_asked() == asked
    finally:
        rig.close()
