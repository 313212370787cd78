"""Script functions of Kamailio's registrar module (kampx/registrar.py): save, lookup,
registered, unregister. They return Kamailio's codes as a Result: true only when positive,
so `if not lookup("location")` reads as in a Kamailio config and `lookup("location") == -1`
tells "not registered" from an error."""

from __future__ import annotations

from kampx.registrar import lookup as _lookup
from kampx.registrar import registered as _registered
from kampx.registrar import save as _save
from kampx.registrar import unregister as _unregister
from kampx.routing.context import Result, ctx, result

__all__ = ["save", "lookup", "registered", "unregister"]


def save(table: str = "location", flags: int = 0, uri: str | None = None) -> Result:
    """Store the REGISTER's contacts for the To URI's AOR (or `uri`'s) and reply to it
    (RFC 3261 10.3). 1 saved, 3 all removed, 4 query; -1 refused, -2 too many contacts.
    flags 0x02: do not reply."""
    return result(_save(ctx.worker, ctx.msg, table, flags, uri))


def lookup(table: str = "location", uri: str | None = None) -> Result:
    """Rewrite the Request-URI to the best registered contact of its AOR (or `uri`'s).
    1 found, -1 not registered, -3 the URI is unusable."""
    return result(_lookup(ctx.worker, ctx.msg, table, uri))


def registered(table: str = "location", uri: str | None = None) -> Result:
    """1 when the AOR of the Request-URI (or `uri`) has a binding, else -1."""
    return result(_registered(ctx.worker, ctx.msg, table, uri))


def unregister(table: str, uri: str, ruid: str | None = None) -> Result:
    """Remove the AOR's bindings (or only the one with `ruid`). 1 done, -1 bad URI,
    -3 no such binding."""
    return result(_unregister(ctx.worker, ctx.msg, table, uri, ruid))
