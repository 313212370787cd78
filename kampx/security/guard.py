"""The security checks of one worker process, as the route script uses them: scanner drop,
flood protection (pike) and the brute-force ban, with the sources they exempt and the
counters they keep.

Exempt from pike and the ban: the proxy's own addresses (a request looping back) and the
carrier's address group ([routing] carrier_group), whose trunks legitimately send more than
any phone and never authenticate. The scanner drop exempts nobody (the contract: "from any
source, carrier included").
"""

from __future__ import annotations

from kampx import stats as S
from kampx.security.limits import PIKE_OK, AuthBans, FloodGuard
from kampx.security.scanner import ScannerFilter

PIKE_DROPPED = S.family(
    "security",
    "pike_blocked",
    S.KIND_COUNTER,
    "Requests dropped because their source exceeded the flood limit",
)
BAN_DROPPED = S.family(
    "security",
    "ban_blocked",
    S.KIND_COUNTER,
    "Requests dropped because their source is banned for failed authentications",
)
AUTH_BANS = S.family(
    "security", "auth_bans", S.KIND_COUNTER, "Sources banned for failed authentications"
)
SCANNER_DROPPED = S.family(
    "security", "scanner_dropped", S.KIND_COUNTER, "Requests dropped for a scanner User-Agent"
)
STATISTICS = (PIKE_DROPPED, BAN_DROPPED, AUTH_BANS, SCANNER_DROPPED)


class SecurityGuard:
    def __init__(self, sec_cfg, carrier_group: int, shared, stats, own_ips=()):
        self.scanner = ScannerFilter(sec_cfg.scanner_user_agents)
        self.flood = None
        if sec_cfg.pike_enabled:
            self.flood = FloodGuard(
                shared.pike, sec_cfg.pike_window_s, sec_cfg.pike_max, sec_cfg.pike_ban_s
            )
        self.bans = None
        if sec_cfg.auth_ban_failures > 0:
            self.bans = AuthBans(
                shared.auth_bans,
                sec_cfg.auth_ban_failures,
                sec_cfg.auth_ban_window_s,
                sec_cfg.auth_ban_s,
            )
        self.permissions = shared.permissions
        self.carrier_group = carrier_group
        self.own_ips = frozenset(own_ips)
        self.stats = stats

    def exempt(self, src) -> bool:
        """The source is this proxy or a carrier (src = (ip, port))."""
        ip, port = src
        if ip in self.own_ips:
            return True
        perms = self.permissions
        return perms is not None and perms.allow(self.carrier_group, ip, port)

    def is_scanner(self, msg) -> bool:
        if self.scanner.matches(msg.user_agent):
            self.stats.inc(SCANNER_DROPPED.base)
            return True
        return False

    def pike_check(self, msg) -> int:
        """Kamailio's pike_check_req(): 1 allowed, -1 flood detected now, -2 already banned.
        Always 1 when pike is off or the source is exempt."""
        if self.flood is None or self.exempt(msg.src):
            return PIKE_OK
        rc = self.flood.check(msg.src[0])
        if rc != PIKE_OK:
            self.stats.inc(PIKE_DROPPED.base)
        return rc

    def banned(self, msg) -> bool:
        """The source is banned for failed authentications (exempt sources never are)."""
        if self.bans is None or not self.bans.banned(msg.src[0]) or self.exempt(msg.src):
            return False
        self.stats.inc(BAN_DROPPED.base)
        return True

    def auth_failed(self, msg) -> None:
        """Count a failed authentication towards the source's ban."""
        if self.bans is None or self.exempt(msg.src):
            return
        if self.bans.failed(msg.src[0]):
            self.stats.inc(AUTH_BANS.base)
