"""Route-script functions of Kamailio's registrar and permissions modules.

    if is_method("REGISTER"):
        save("location")                      # answers the REGISTER itself
        exit()
    if allow_source_address(200):             # from the carrier's address group?
        if not lookup("location"):
            sl_send_reply(404, "User not Registered")
            exit()
        t_relay()

They return Kamailio's numeric codes as a Result: an int that is true only when positive,
so `if not lookup("location")` reads as in a Kamailio config (-1 and -3 are false) and
`lookup("location") == -1` tells "not registered" from an error.
"""
from __future__ import annotations

from kampx import registrar as _reg
from kampx.routing.api import Result, ctx


_TRUE, _FALSE = Result(1), Result(-1)


# ------------------------------------------------------------------------------ registrar --

def save(table: str = "location", flags: int = 0, uri: str | None = None) -> Result:
    """Store the REGISTER's contacts for the To URI's AOR (or `uri`'s) and reply to it
    (RFC 3261 10.3). 1 saved, 3 all removed, 4 query; -1 refused, -2 too many contacts.
    flags 0x02: do not reply."""
    return Result(_reg.save(ctx.worker, ctx.msg, table, flags, uri))


def lookup(table: str = "location", uri: str | None = None) -> Result:
    """Rewrite the Request-URI to the best registered contact of its AOR (or `uri`'s).
    1 found, -1 not registered, -3 the URI is unusable."""
    return Result(_reg.lookup(ctx.worker, ctx.msg, table, uri))


def registered(table: str = "location", uri: str | None = None) -> Result:
    """1 when the AOR of the Request-URI (or `uri`) has a binding, else -1."""
    return Result(_reg.registered(ctx.worker, ctx.msg, table, uri))


def unregister(table: str, uri: str, ruid: str | None = None) -> Result:
    """Remove the AOR's bindings (or only the one with `ruid`). 1 done, -1 bad URI,
    -3 no such binding."""
    return Result(_reg.unregister(ctx.worker, ctx.msg, table, uri, ruid))


# ---------------------------------------------------------------------------- permissions --

def _addresses():
    table = ctx.worker.ctx.shared.permissions
    if table is None:
        raise RuntimeError("the permissions address table is not attached")
    return table


def _matched(tag: str | None) -> Result:
    """Kamailio sets peer_tag_avp on a match with a tag; the script reads it with
    peer_tag()."""
    if tag is None:
        return _FALSE
    ctx.msg.peer_tag = tag or None
    return _TRUE


def allow_source_address(group: int = 1) -> Result:
    """1 when the request's source IP and port match a row of address group `group`
    (port 0 in a row matches any port), else -1."""
    msg = ctx.msg
    return _matched(_addresses().match(int(group), msg.src[0], msg.src[1]))


def allow_address(group: int, ip: str, port: int) -> Result:
    """1 when `ip`:`port` matches a row of address group `group`, else -1."""
    return _matched(_addresses().match(int(group), str(ip), int(port)))


def allow_source_address_group() -> Result:
    """The lowest address group whose rows match the request's source, or -1."""
    msg = ctx.msg
    return allow_address_group(msg.src[0], msg.src[1])


def allow_address_group(ip: str, port: int) -> Result:
    """The lowest address group whose rows match `ip`:`port`, or -1."""
    table = _addresses()
    for group in _groups(table):
        tag = table.match(group, str(ip), int(port))
        if tag is not None:
            ctx.msg.peer_tag = tag or None
            return Result(group)
    return _FALSE


_group_cache: tuple[int, list[int]] = (-1, [])


def _groups(table) -> list[int]:
    """The table's group ids, ascending; recomputed only when a reload published a new
    table."""
    global _group_cache
    gen = table.generation
    if _group_cache[0] != gen:
        _group_cache = (gen, sorted({row.grp for row in table.rows()}))
    return _group_cache[1]


def peer_tag() -> str | None:
    """The tag of the address row the last allow_* check of this request matched (Kamailio's
    peer_tag_avp); None when it matched a row without tag, or nothing matched."""
    return ctx.msg.peer_tag


__all__ = ["save", "lookup", "registered", "unregister", "allow_source_address",
           "allow_address", "allow_source_address_group", "allow_address_group", "peer_tag"]
