"""Script functions of Kamailio's dispatcher module (kampx/dispatcher): carrier gateway
sets, load balancing and failover. They return Kamailio's codes as a Result (true only when
positive).

    if not ds_select_dst(1, 4):          # set 1, round-robin
        sl_send_reply(404, "No destination")
        exit()
    t_on_failure(gateway_failed)
    t_relay()

    def gateway_failed(msg):             # a failure route
        if t_is_canceled():
            exit()
        ds_mark_dst("ip")                # inactive + probing: the prober brings it back
        if ds_next_dst():
            t_relay()
"""

from __future__ import annotations

from kampx.dispatcher import dispatch as _ds
from kampx.routing.context import Result, ctx, result

__all__ = [
    "ds_select_dst",
    "ds_select_domain",
    "ds_next_dst",
    "ds_next_domain",
    "ds_mark_dst",
    "ds_is_from_list",
]


def ds_select_dst(setid: int, alg: int, limit: int = 0) -> Result:
    """Set $du to a usable destination of set `setid` chosen by algorithm `alg` (0 Call-ID
    hash, 1 From, 2 To, 3 R-URI hash, 4 round-robin, 6 random, 8 priority, 9 weight) and keep up to
    `limit` (0: all) for ds_next_dst(). -1 when the set does not exist or has no usable
    destination."""
    return result(_ds.select_dst(ctx.worker, ctx.msg, int(setid), int(alg), int(limit)))


def ds_select_domain(setid: int, alg: int, limit: int = 0) -> Result:
    """As ds_select_dst(), but rewrite the Request-URI's host:port instead of $du."""
    return result(_ds.select_dst(ctx.worker, ctx.msg, int(setid), int(alg), int(limit), True))


def ds_next_dst() -> Result:
    """In a failure route: use the next destination of the last selection; -1 when none
    is left."""
    return result(_ds.next_dst(ctx.worker, ctx.msg))


def ds_next_domain() -> Result:
    """ds_next_dst() for a selection made by ds_select_domain()."""
    return result(_ds.next_dst(ctx.worker, ctx.msg))


def ds_mark_dst(state: str = "ip") -> Result:
    """In a failure route: mark the destination that failed: "ip" (the default) inactive
    and probing, "a" active, "d" disabled, "t" trying, each letter optionally with "p"."""
    return result(_ds.mark_dst(ctx.worker, ctx.msg, str(state)))


def ds_is_from_list(setid: int = -1) -> Result:
    """1 when the request comes from a destination of set `setid` (-1: any set)."""
    return result(_ds.is_from_list(ctx.worker, ctx.msg, int(setid)))
