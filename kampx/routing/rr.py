"""Script functions of Kamailio's rr module (Record-Route and loose routing; kampx/rr.py)."""

from __future__ import annotations

from kampx import rr as _rr
from kampx.routing.context import ctx

__all__ = ["record_route", "loose_route"]


def record_route() -> bool:
    """Add `Record-Route: <sip:IP[:port];lr>` so in-dialog requests come back here."""
    return _rr.record_route(ctx.worker, ctx.msg)


def loose_route() -> bool:
    """Route an in-dialog request by its Route set (True when it named this proxy)."""
    return _rr.loose_route(ctx.worker, ctx.msg)
