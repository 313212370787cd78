"""Overload control: when a worker falls behind, refuse new calls and registrations early and
cheaply instead of letting retransmissions snowball.

Contract (what callers see):
- Only new work is refused: an out-of-dialog request (no To-tag) whose method is in
  [overload] methods (INVITE and REGISTER: each INVITE brings a whole call, each REGISTER a
  digest check and a database write) gets `503 Service Unavailable` with `Retry-After`
  (RFC 3261 21.5.4), statelessly, before the route script runs.
- Everything else is served as always: retransmissions of accepted requests (tm matches them
  first and answers from their transaction), in-dialog requests, CANCEL, ACK, OPTIONS
  keepalives and every reply. An accepted call is never cut short by overload.

When: a request read in a batch whose oldest datagram waited longer than [overload]
queue_delay_ms in the socket. Why the queue delay: it is what callers experience, whatever
the cause (a burst, a slow script, the CPU taken by another process); the kernel stamps each
datagram as it arrives, so it costs no system call (transport/_recv.pyx). Refusing costs a
parse and one 503 built in C, a fraction of a call, so the queue drains within a few
batches and the worker accepts again: the delay settles around the threshold and the
accepted calls fill the worker's capacity. The threshold stays well under T1 (500 ms): an
accepted request is answered before its sender retransmits it.

Seen by operators: core.overload_rejected (kampx_core_overload_rejected_total), and one log
line when a worker starts refusing and one when it has refused nothing for QUIET_S, with the
count, never one per packet. [tm] max_transactions and max_memory_mb, the limits on what is
held rather than on lag, answer 503 with the same Retry-After (tm/manager.py).
"""

from __future__ import annotations

import logging
import time

from kampx import sl
from kampx import stats as S
from kampx._cparse import METHOD_IDS

log = logging.getLogger("kampx.overload")

OVERLOAD_REJECTED = S.family(
    "core",
    "overload_rejected",
    S.KIND_COUNTER,
    "New requests refused with 503 because the worker was behind ([overload] queue_delay_ms)",
)
STATISTICS = (OVERLOAD_REJECTED,)

QUIET_S = 2.0  # an episode ends after this long without a refusal


class OverloadControl:
    """One per worker. The loop calls observe() with each batch's queue delay; the worker
    asks refuse() for each request the route script would otherwise see."""

    __slots__ = (
        "worker",
        "threshold",
        "methods",
        "reply",
        "behind",
        "delay",
        "refused",
        "since",
        "last",
    )

    def __init__(self, cfg, worker) -> None:
        self.worker = worker  # what sl needs to reply: stats, sl_tag_prefix, server_header
        self.threshold = cfg.queue_delay_ms / 1000 if cfg.enabled else float("inf")
        self.methods = frozenset(METHOD_IDS[m] for m in cfg.methods)
        self.reply = overload_reply(cfg)
        self.behind = False  # the last batch read from the shared socket started too late
        self.delay = 0.0
        self.refused = 0  # in the current episode
        self.since = 0.0  # when the episode began (0.0: none)
        self.last = 0.0  # the episode's latest refusal

    def observe(self, delay: float) -> None:
        self.behind = delay > self.threshold
        self.delay = delay

    def refuse(self, msg) -> bool:
        """True when `msg` was refused with 503 (and counted); then nothing else is done
        with it."""
        if msg.method_id not in self.methods or msg.has_to_tag:
            return False
        code, reason, extra = self.reply
        sl.stateless_reply(self.worker, msg, code, reason, extra)
        self.worker.stats.inc(OVERLOAD_REJECTED.base)
        now = time.monotonic()
        if not self.since:
            self.since = now
            log.warning(
                "overloaded: requests waited %.0f ms (over [overload] queue_delay_ms); new "
                "%s refused with 503 until the worker catches up",
                self.delay * 1000,
                "/".join(sorted(m for m, i in METHOD_IDS.items() if i in self.methods)),
            )
        self.refused += 1
        self.last = now
        return True

    def tick(self, now: float) -> None:
        """From the loop, now and then: close an episode that has gone quiet."""
        if self.since and now - self.last >= QUIET_S:
            log.warning(
                "overload over: %d new requests refused in %.1f s",
                self.refused,
                self.last - self.since,
            )
            self.since = 0.0
            self.refused = 0


def overload_reply(cfg) -> tuple:
    """The 503 for want of capacity, Retry-After from [overload] retry_after_s."""
    return (503, "Service Unavailable", (f"Retry-After: {cfg.retry_after_s}",))
