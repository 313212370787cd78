"""Script functions of Kamailio's maxfwd module."""

from __future__ import annotations

from kampx.maxfwd import MAX_LIMIT, process_maxfwd
from kampx.routing.context import ctx

__all__ = ["mf_process_maxfwd_header"]


def mf_process_maxfwd_header(default: int, limit: int = MAX_LIMIT) -> bool:
    """Max-Forwards: insert `default` when absent, else decrement (at most `limit`, Kamailio's
    max_limit); False when it is 0 or not a number (reply 483 Too Many Hops)."""
    return process_maxfwd(ctx.msg, int(default), int(limit)) > 0
