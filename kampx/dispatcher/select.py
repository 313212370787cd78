"""Choosing destinations in a set: Kamailio's ds_select_dst algorithms, as an ordered list
(the first to use now, the rest for failover with ds_next_dst()).

    0 hash over the Call-ID      1 hash over the From URI     2 hash over the To URI
    3 hash over the Request-URI  4 round-robin (shared by every worker)
    6 random                     8 by priority (highest first, then the rows' load order)
    9 by weight (attrs weight=N: chance proportional to N; absent = 1)

The hashed, round-robin and random algorithms pick a position over the whole set, so a call
keeps its destination when another one goes down; when the position's destination is
unusable (inactive or disabled), the next usable one after it is taken. After the first choice the
failover order is the set's own, going on from it and wrapping around, usable destinations
only. Hashes are CRC-32: the same on every worker and after a restart.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable

HASH_CALLID, HASH_FROM, HASH_TO, HASH_RURI, ROUND_ROBIN = 0, 1, 2, 3, 4
RANDOM, PRIORITY, WEIGHT = 6, 8, 9
ALGORITHMS = (HASH_CALLID, HASH_FROM, HASH_TO, HASH_RURI, ROUND_ROBIN, RANDOM, PRIORITY, WEIGHT)


class Selection:
    """What ds_select_dst() leaves in msg.ds_next for ds_next_dst() and ds_mark_dst():
    `setid`, `current` (the URI in use), `remaining` (the failover URIs, in order) and
    `domain` (True for ds_select_domain: the Request-URI's host:port is rewritten instead
    of $du)."""

    __slots__ = ("setid", "current", "remaining", "domain")

    def __init__(self, setid: int, uris: list[str], domain: bool):
        self.setid = setid
        self.current = uris[0]
        self.remaining = uris[1:]
        self.domain = domain

    def __len__(self) -> int:
        """The failover destinations left (tm gives a branch with some after it
        [tm] fr_failover_ms instead of fr_timer)."""
        return len(self.remaining)

    def advance(self) -> str | None:
        """The next failover URI, now current; None when there is none left."""
        if not self.remaining:
            return None
        self.current = self.remaining.pop(0)
        return self.current

    def __repr__(self) -> str:
        return f"Selection(set {self.setid}: {self.current} then {self.remaining})"


def hash_text(text: str | None) -> int:
    return zlib.crc32((text or "").encode("utf-8", "surrogateescape"))


def order(
    slots: list[int],
    usable: Callable[[int], bool],
    alg: int,
    key: Callable[[], str | None],
    round_robin: Callable[[], int],
    weight: Callable[[int], int],
) -> list[int]:
    """The set's usable slots in the order `alg` wants them (empty: none usable).
    `slots` is the set in its own order; `key` gives the hashed text (algs 0-3),
    `round_robin` the next shared position (alg 4), `weight` a slot's weight (alg 9)."""
    alive = [i for i, s in enumerate(slots) if usable(s)]
    if not alive:
        return []
    n = len(slots)
    if alg in (HASH_CALLID, HASH_FROM, HASH_TO, HASH_RURI):
        start = hash_text(key()) % n
    elif alg == ROUND_ROBIN:
        start = round_robin() % n
    elif alg == RANDOM:
        start = random.randrange(n)
    elif alg == PRIORITY:
        start = 0
    elif alg == WEIGHT:
        weights = [weight(slots[i]) for i in alive]
        if sum(weights) > 0:
            start = random.choices(alive, weights)[0]
        else:
            start = alive[0]
    else:
        raise ValueError(f"algorithm {alg} is not implemented ({', '.join(map(str, ALGORITHMS))})")
    # from `start` on, wrapping around, the usable ones
    ranked = sorted(alive, key=lambda i: (i - start) % n)
    return [slots[i] for i in ranked]
