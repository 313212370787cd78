"""Script functions of Kamailio's sanity module."""

from __future__ import annotations

from kampx.routing.context import ctx
from kampx.sanity import DEFAULT_MSG_CHECKS, DEFAULT_URI_CHECKS, run_checks
from kampx.sl import stateless_reply
from kampx.stats.core import ERR_REQUESTS

__all__ = ["sanity_check"]


def sanity_check(
    msg_checks: int = DEFAULT_MSG_CHECKS, uri_checks: int = DEFAULT_URI_CHECKS
) -> bool:
    """Kamailio's sanity_check("1511", "7"): on failure the request has been answered
    (400/505/...) and False is returned."""
    result = run_checks(ctx.msg, int(msg_checks), int(uri_checks))
    if result is None:
        return True
    code, reason = result
    if code:
        stateless_reply(ctx.worker, ctx.msg, code, reason)
    else:  # no reply can be built (no From, To, Call-ID or CSeq): dropped, but counted
        ctx.worker.stats.inc(ERR_REQUESTS.base)
    return False
