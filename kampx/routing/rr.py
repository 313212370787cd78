"""Script functions of Kamailio's rr module (Record-Route and loose routing; kampx/rr.py)."""

from __future__ import annotations

from kampx.routing.context import ctx
from kampx.rr import loose_route as _loose_route
from kampx.rr import record_route as _record_route

__all__ = ["record_route", "loose_route"]


def record_route() -> bool:
    """Add `Record-Route: <sip:IP[:port];lr>` so in-dialog requests come back here."""
    return _record_route(ctx.worker, ctx.msg)


def loose_route() -> bool:
    """Route an in-dialog request by its Route set (True when it named this proxy)."""
    return _loose_route(ctx.worker, ctx.msg)
