"""Script functions of Kamailio's permissions module (kampx/permissions.py): the request's
source, or any address, against the address table's groups."""

from __future__ import annotations

from kampx.routing.context import Result, ctx

_TRUE, _FALSE = Result(1), Result(-1)

__all__ = [
    "allow_source_address",
    "allow_address",
    "allow_source_address_group",
    "allow_address_group",
    "peer_tag",
]


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
