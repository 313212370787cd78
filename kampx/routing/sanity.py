"""Script functions of Kamailio's sanity module."""

from __future__ import annotations

from kampx import sanity as _sanity
from kampx import sl as _sl
from kampx.routing.context import ctx

__all__ = ["sanity_check"]


def sanity_check(
    msg_checks: int = _sanity.DEFAULT_MSG_CHECKS, uri_checks: int = _sanity.DEFAULT_URI_CHECKS
) -> bool:
    """Kamailio's sanity_check("1511", "7"): on failure the request has been answered
    (400/505/...) and False is returned."""
    result = _sanity.run_checks(ctx.msg, int(msg_checks), int(uri_checks))
    if result is None:
        return True
    code, reason = result
    if code:
        _sl.stateless_reply(ctx.worker, ctx.msg, code, reason)
    return False
