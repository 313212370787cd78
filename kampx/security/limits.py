"""Per-source-IP limits shared by every worker (kampx._shm.RateTable in shared memory):

  FloodGuard  Kamailio's pike: more than `limit` requests from one IP within a window bans
              the IP for `ban_s`; its requests are then dropped silently.
  AuthBans    fail2ban-like: `failures` failed authentications from one IP within a window
              ban it for `ban_s`.

Times are CLOCK_MONOTONIC seconds, the same in every process. Without a `clock`, the
limiters read time.monotonic as it is when they are built (kampx.testing builds them on its
own clock).
"""

from __future__ import annotations

import logging
import time

from kampx._inet import ip_key

log = logging.getLogger("kampx.security")

PIKE_OK = 1
PIKE_FLOOD = -1  # this request pushed the source over the limit (the ban starts)
PIKE_BLOCKED = -2  # the source was already banned

_LOGGED_MAX = 4096


# ip_key(ip): the packed address the shared tables key on (kampx/_inet.pyx); an IPv4-mapped
# IPv6 address is the IPv4 address (a dual-stack socket reports IPv4 peers that way), None
# when `ip` is not an IP address


class _BanLog:
    """Which bans this process has already logged, so a ban is one log line per worker
    rather than one per dropped request."""

    def __init__(self) -> None:
        self._until: dict[bytes, float] = {}

    def first(self, key: bytes, now: float, ban_s: float) -> bool:
        if self._until.get(key, 0.0) > now:
            return False
        if len(self._until) >= _LOGGED_MAX:
            self._until = {k: t for k, t in self._until.items() if t > now}
            if len(self._until) >= _LOGGED_MAX:
                self._until.clear()
        self._until[key] = now + ban_s
        return True


class FloodGuard:
    def __init__(self, table, window_s: float, limit: int, ban_s: float, clock=None):
        self._hit = table.hit
        self.window_s = window_s
        self.limit = limit
        self.ban_s = ban_s
        self._clock = clock or time.monotonic
        self._log = _BanLog()

    def check(self, ip: str) -> int:
        """Count one request from `ip`: PIKE_OK, PIKE_FLOOD or PIKE_BLOCKED."""
        key = ip_key(ip)
        if key is None:
            return PIKE_OK
        now = self._clock()
        if not self._hit(key, now, self.window_s, self.limit, self.ban_s):
            return PIKE_OK
        if self._log.first(key, now, self.ban_s):
            log.warning(
                "pike: %s sent more than %d requests in %gs, dropping its requests for %gs",
                ip,
                self.limit,
                self.window_s,
                self.ban_s,
            )
            return PIKE_FLOOD
        return PIKE_BLOCKED


class AuthBans:
    def __init__(self, table, failures: int, window_s: float, ban_s: float, clock=None):
        self._table = table
        self.failures = failures
        self.window_s = window_s
        self.ban_s = ban_s
        self._clock = clock or time.monotonic

    def banned(self, ip: str) -> bool:
        key = ip_key(ip)
        return key is not None and self._table.blocked(key, self._clock())

    def failed(self, ip: str) -> bool:
        """Count one failed authentication from `ip`; True when it got `ip` banned."""
        key = ip_key(ip)
        if key is None:
            return False
        now = self._clock()
        already = self._table.blocked(key, now)
        # hit() bans when the count would exceed its limit: the N-th failure bans
        if self._table.hit(key, now, self.window_s, self.failures - 1, self.ban_s) and not already:
            log.warning(
                "auth: %d failed authentications from %s within %gs, dropping its requests for %gs",
                self.failures,
                ip,
                self.window_s,
                self.ban_s,
            )
            return True
        return False
