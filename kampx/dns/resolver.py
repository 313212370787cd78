"""One process's resolver: RFC 3263 (kampx.dns.rfc3263) over the shared cache, and over
non-blocking queries (kampx.dns.client) for what the cache does not hold.

`resolve(...)` returns the Lookup at once when every answer the procedure needs is cached
(the usual case: a carrier's name is asked once per TTL by the whole proxy). Otherwise it
returns None, the procedure waits for its answer while the process serves other traffic,
and `on_done(lookup)` is called later, always, exactly once, from the event loop (never from
inside resolve()): with the targets, or empty after [dns] timeout at most.

When no nameserver answers in time (or every one fails), the lookup goes on with what the
cache still holds past its TTL, up to [dns] serve_stale seconds old (RFC 8767): a carrier's
switches stay reachable through a DNS outage. Such an answer is cached again for STALE_TTL,
so the nameservers are tried again that often, not on every call.
"""

from __future__ import annotations

import select
import time

from kampx import stats as S
from kampx.dns import rfc3263
from kampx.dns.client import DnsClient, parse_nameservers, system_nameservers
from kampx.dns.rfc3263 import FAILED, UNAVAILABLE, Answer, Lookup

QUERIES = S.family("dns", "queries", S.KIND_COUNTER, "DNS queries sent (retries included)")
CACHE_HITS = S.family("dns", "cache_hits", S.KIND_COUNTER, "Questions answered from the DNS cache")
CACHE_MISSES = S.family(
    "dns", "cache_misses", S.KIND_COUNTER, "Questions the DNS cache could not answer"
)
TIMEOUTS = S.family(
    "dns", "timeouts", S.KIND_COUNTER, "Questions no nameserver answered within [dns] timeout"
)
ERRORS = S.family(
    "dns",
    "errors",
    S.KIND_COUNTER,
    "Nameserver answers of no use (SERVFAIL, REFUSED, truncated, malformed)",
)
STALE_ANSWERS = S.family(
    "dns",
    "stale_answers",
    S.KIND_COUNTER,
    "Expired answers used because no nameserver answered (RFC 8767 serve-stale)",
)
FAILED_RELAYS = S.family(
    "dns",
    "failed_relays",
    S.KIND_COUNTER,
    "Requests answered with an error because their destination did not resolve",
)
STATISTICS = (QUERIES, CACHE_HITS, CACHE_MISSES, TIMEOUTS, ERRORS, STALE_ANSWERS, FAILED_RELAYS)
STALE_TTL = 30  # seconds a stale answer is reused before the nameservers are asked again


class _Counts:
    __slots__ = ("_stats",)

    def __init__(self, stats):
        self._stats = stats

    def sent(self) -> None:
        self._stats.inc(QUERIES.base)

    def timed_out(self) -> None:
        self._stats.inc(TIMEOUTS.base)

    def error(self) -> None:
        self._stats.inc(ERRORS.base)


class _Resolution:
    __slots__ = ("procedure", "on_done", "timer", "done", "question", "degraded")

    def __init__(self, procedure, on_done):
        self.procedure = procedure
        self.on_done = on_done
        self.timer = None
        self.done = False
        self.question = None  # the one it waits for
        self.degraded = False  # the nameservers failed it: no more waiting, stale or nothing


class Resolver:
    """`cfg`: the [dns] section; `cache`: the shared DnsCache; `timers`: the process's
    TimerHeap; `watch(fd, callback)` / `unwatch(fd)`: the process's event loop. With
    `offline`, nothing is ever sent: what the cache lacks fails (kampx.sandbox: a datagram
    must not make a test ask a nameserver about a name it made up)."""

    def __init__(
        self,
        cfg,
        cache,
        stats,
        timers,
        watch=None,
        unwatch=None,
        *,
        families: tuple = (rfc3263.A,),
        supported: tuple = ("udp",),
        offline: bool = False,
    ):
        self.cache = cache
        self.stats = stats
        self.timers = timers
        self.timeout = cfg.timeout
        self.naptr = cfg.naptr
        self.serve_stale = cfg.serve_stale
        self.families = families
        self.supported = supported
        self.client: DnsClient | None = None
        if not offline:
            servers = (
                parse_nameservers(cfg.nameservers) if cfg.nameservers else system_nameservers()
            )
            self.client = DnsClient(
                servers, cfg.timeout, timers, watch, unwatch, self._store, _Counts(stats)
            )

    def resolve(self, host: str, port: int, transport, secure: bool, on_done) -> Lookup | None:
        procedure = rfc3263.resolve(
            host,
            port,
            transport,
            secure,
            naptr=self.naptr,
            families=self.families,
            supported=self.supported,
        )
        r = _Resolution(procedure, on_done)
        return self._advance(r, None)

    def _advance(self, r: _Resolution, answer: Answer | None) -> Lookup | None:
        """Run the procedure as far as the cache answers; the Lookup when it ends, None when
        it waits for a nameserver."""
        cache, stats = self.cache, self.stats
        try:
            question = r.procedure.send(answer)  # the first send(None) starts it
            while True:
                cached = cache.get(question.name, question.qtype)
                if cached is None:
                    if not r.degraded:
                        break
                    cached = self._stale_or_failed(question)
                else:
                    stats.inc(CACHE_HITS.base)
                question = r.procedure.send(cached)
        except StopIteration as end:
            return end.value
        r.question = question
        stats.inc(CACHE_MISSES.base)
        if r.timer is None:
            r.timer = self.timers.call_later(self.timeout, self._expire, r)
        if self.client is None:
            self.timers.call_later(0, self._answered, r, Answer(FAILED))
        else:
            self.client.ask(question.name, question.qtype, lambda a: self._answered(r, a))
        return None

    def _answered(self, r: _Resolution, answer: Answer) -> None:
        if r.done:
            return
        if answer.status == FAILED:
            r.degraded = True
            answer = self._stale_or_failed(r.question)
        lookup = self._advance(r, answer)
        if lookup is not None:
            self._done(r, lookup)

    def _expire(self, r: _Resolution) -> None:
        """[dns] timeout is over: what is still missing comes from stale answers or not
        at all, now."""
        r.timer = None
        if not r.done:
            self._answered(r, Answer(FAILED))
            if not r.done:  # cannot happen: degraded lookups never wait
                self._done(r, Lookup((), UNAVAILABLE))

    def _stale_or_failed(self, question) -> Answer:
        if self.serve_stale:
            stale = self.cache.get_stale(question.name, question.qtype, self.serve_stale)
            if stale is not None:
                self.stats.inc(STALE_ANSWERS.base)
                self.cache.put(question.name, question.qtype, stale._replace(ttl=STALE_TTL))
                return stale
        return Answer(FAILED)

    def _done(self, r: _Resolution, lookup: Lookup) -> None:
        r.done = True
        if r.timer is not None:
            r.timer.cancel()
            r.timer = None
        r.procedure.close()
        r.on_done(lookup)

    def _store(self, name: str, qtype: str, answer: Answer, extra) -> None:
        self.cache.put(name, qtype, answer)
        for ename, etype, eanswer in extra:
            self.cache.put(ename, etype, eanswer)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class BlockingResolver:
    """RFC 3263 for a helper process that has no event loop of its own (the dispatcher
    prober): the same cache and queries as a worker's, and the caller waits, [dns] timeout
    at most. Never in a worker."""

    def __init__(self, cfg, cache, stats):
        from kampx.tm.timers import TimerHeap

        self._ep = select.epoll()
        self._io: dict = {}
        self._timers = TimerHeap()
        self._timeout = cfg.timeout
        self.resolver = Resolver(cfg, cache, stats, self._timers, self._watch, self._unwatch)

    def _watch(self, fd: int, callback) -> None:
        self._io[fd] = callback
        self._ep.register(fd, select.EPOLLIN)

    def _unwatch(self, fd: int) -> None:
        if self._io.pop(fd, None) is not None:
            self._ep.unregister(fd)

    def lookup(self, host: str, port: int = 0, transport=None) -> Lookup:
        got: list = []
        found = self.resolver.resolve(host, port, transport, False, got.append)
        if found is not None:
            return found
        deadline = time.monotonic() + self._timeout + 1.0
        while not got and time.monotonic() < deadline:
            for fd, _ in self._ep.poll(self._timers.timeout(0.1)):
                callback = self._io.get(fd)
                if callback is not None:
                    callback()
            self._timers.run()
        return got[0] if got else Lookup((), UNAVAILABLE)

    def address(self, host: str, port: int):
        """(ip, port) of the first RFC 3263 target, None when there is none: the prober's
        resolve hook."""
        targets = self.lookup(host, port).targets
        return (targets[0].ip, targets[0].port) if targets else None
