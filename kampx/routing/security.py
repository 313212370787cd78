"""Script functions of Kamailio's pike module and kampx's scanner filter and brute-force
ban (kampx/security): per worker, the guard is built on first use, after fork."""

from __future__ import annotations

from kampx.routing.context import Result, ctx, result
from kampx.security.guard import SecurityGuard

__all__ = ["is_scanner", "pike_check_req", "auth_banned"]


# the last worker asked for and its guard: the script asks three times a request
_last_worker = None
_last_guard = None


def guard(w):
    """The worker's SecurityGuard (scanner patterns, pike, the auth ban), built on first use."""
    global _last_worker, _last_guard
    if w is _last_worker:
        return _last_guard
    g = w.modules.get("security")
    if g is None:
        own = {ls.addr.host for ls in w.sockets}
        g = w.modules["security"] = SecurityGuard(
            w.cfg.security, w.cfg.routing.carrier_group, w.ctx.shared, w.stats, own
        )
    _last_worker, _last_guard = w, g
    return g


def is_scanner() -> bool:
    """True when the User-Agent matches [security] scanner_user_agents (counted as
    security.scanner_dropped): drop it without a reply."""
    w = ctx.worker
    return guard(w).is_scanner(ctx.msg)


def pike_check_req() -> Result:
    """Flood protection per source IP ([security] pike_*): 1 allowed, -1 the source just went
    over the limit, -2 it is banned. Carriers and the proxy itself are exempt."""
    w = ctx.worker
    return result(guard(w).pike_check(ctx.msg))


def auth_banned() -> bool:
    """True when the source is banned for failed authentications ([security] auth_ban_*)."""
    w = ctx.worker
    return guard(w).banned(ctx.msg)
