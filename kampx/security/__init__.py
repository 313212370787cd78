"""What keeps attackers out: the scanner drop, flood protection (pike) and the brute-force
ban on failed authentications. The route script reaches them through
kampx/routing/security.py (is_scanner, pike_check_req, auth_banned)."""

from kampx.security.guard import SecurityGuard
from kampx.security.limits import PIKE_BLOCKED, PIKE_FLOOD, PIKE_OK, AuthBans, FloodGuard, ip_key
from kampx.security.scanner import ScannerFilter, compile_patterns

__all__ = [
    "SecurityGuard",
    "FloodGuard",
    "AuthBans",
    "ScannerFilter",
    "compile_patterns",
    "ip_key",
    "PIKE_OK",
    "PIKE_FLOOD",
    "PIKE_BLOCKED",
]
