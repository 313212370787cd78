"""Script functions of Kamailio's core, textops and pseudo-variables: flow (exit, drop),
the message (is_method, has_totag, headers, $si, $ru parts...), the Request-URI and $du
rewrites, is_myself, cfg_get and xlog."""

from __future__ import annotations

import logging

from kampx._cparse import METHOD_IDS, SipParseError, parse_uri
from kampx.routing.context import ctx
from kampx.routing.flow import drop, exit

_log = logging.getLogger("kampx.script")

__all__ = [
    "cfg_get",
    "exit",
    "drop",
    "is_method",
    "has_totag",
    "is_present_hf",
    "append_hf",
    "remove_hf",
    "src_ip",
    "src_port",
    "ruri_user",
    "ruri_host",
    "from_domain",
    "from_user",
    "to_user",
    "user_agent",
    "is_myself",
    "rewriteuri",
    "rewritehost",
    "rewritehostport",
    "rewriteport",
    "rewriteuser",
    "setdsturi",
    "resetdsturi",
    "xlog",
    "setflag",
    "resetflag",
    "isflagset",
]


# cfg_get's values of the running configuration by section and key: a script reads a few
# of them on every request (an outbound call ~27 times), and a frozen configuration's value
# never changes; a reload makes a new configuration, and the first read after it starts over
_cfg_of = None
_cfg_values: dict = {}


def cfg_get(section: str, key: str):
    """A value of the running configuration, e.g. cfg_get("routing", "carrier")
    (Kamailio's $sel(cfg_get.group.name))."""
    global _cfg_of
    cfg = ctx.worker.cfg
    if cfg is not _cfg_of:
        _cfg_values.clear()
        _cfg_of = cfg
    values = _cfg_values.get(section)
    if values is None:
        values = _cfg_values[section] = {}
    try:
        return values[key]
    except KeyError:
        value = values[key] = getattr(getattr(cfg, section), key)
        return value


# ---------------------------------------------------------------------------------- flow --
# exit() and drop(): kampx/routing/flow.py (C builtins: see why there)


# ------------------------------------------------------------------------------ messages --


def is_method(methods: str) -> bool:
    """True when the request's method is one of `methods` ("INVITE" or "INVITE|BYE")."""
    msg = ctx.msg
    if msg.is_request:  # one method the parser knows: its id, no name made (case-sensitive)
        mid = METHOD_IDS.get(methods)
        if mid is not None:
            return msg.method_id == mid
    m = msg.method
    if "|" not in methods:
        return m == methods
    return m in _method_set(methods)


_METHOD_SETS: dict = {}


def _method_set(methods: str) -> frozenset:
    found = _METHOD_SETS.get(methods)
    if found is None:
        found = _METHOD_SETS[methods] = frozenset(x.strip() for x in methods.split("|"))
    return found


def has_totag() -> bool:
    """True when the To header has a tag (an in-dialog request)."""
    return ctx.msg.has_to_tag


def is_present_hf(name: str) -> bool:
    return ctx.msg.has_header(name)


def append_hf(text: str) -> bool:
    """Append a header line "Name: value" (a trailing CRLF is optional)."""
    name, sep, value = text.rstrip("\r\n").partition(":")
    if not sep or not name.strip():
        raise ValueError(f"append_hf: '{text}' is not 'Name: value'")
    ctx.msg.append_header(name.strip(), value.strip())
    return True


def remove_hf(name: str) -> int:
    """Remove every header named `name`; returns how many."""
    return ctx.msg.remove_header(name)


def src_ip() -> str:
    """The source address of the message ($si)."""
    return ctx.msg.src[0]


def src_port() -> int:
    """The source port of the message ($sp)."""
    return ctx.msg.src[1]


def ruri_user():
    """The Request-URI's user part ($rU), None when it has none."""
    return ctx.msg._ruri_user()


def ruri_host():
    """The Request-URI's host ($rd)."""
    u = ctx.msg.uri
    return u.host if u is not None else None


def from_domain():
    """The From URI's host ($fd)."""
    return _addr_part(False, 1)


def from_user():
    """The From URI's user ($fU)."""
    return _addr_part(False, 0)


def to_user():
    """The To URI's user ($tU)."""
    return _addr_part(True, 0)


def user_agent():
    """The User-Agent header ($ua), None when absent."""
    return ctx.msg.user_agent


def _addr_part(to_side: bool, index: int):
    """The user (0) or host (1) of the From URI (the To URI with `to_side`), read from the
    parsed offsets (no URI object); None when there is none."""
    try:
        parts = ctx.msg.addr_user_host(to_side)
    except SipParseError:  # the parser already refuses a bad From/To URI: not expected
        return None
    return parts[index] if parts is not None else None


def is_myself(uri: str | None = None) -> bool:
    """True when `uri` (default: the Request-URI) names this proxy: one of its listen
    addresses (port absent = 5060) or the realm (Kamailio's `uri == myself`)."""
    fw = ctx.worker.forwarder
    if uri is None:  # from the parsed offsets: no URI view made
        hp = ctx.msg._ruri_host_port()
        return hp is not None and fw.is_myself(hp[0], hp[1])
    try:
        u = parse_uri(uri)
    except SipParseError:
        return False
    return fw.is_myself(u.host, u.port)


# ------------------------------------------------------------------- Request-URI / dst --


def rewriteuri(uri: str) -> bool:
    """Replace the Request-URI ($ru = uri)."""
    ctx.msg.set_ruri(uri)
    return True


def rebuild_ruri(msg, user=..., host=None, port=None) -> bool:
    """Replace parts of `msg`'s Request-URI, keeping the others (the rewrite* functions;
    also the dispatcher's ds_select_domain). Port 0: none."""
    u = msg.uri
    if u is None:
        return False
    user = u.user if user is ... else user
    userinfo = ""
    if user:
        userinfo = user + (f":{u.password}" if u.password else "") + "@"
    h = host if host is not None else u.host
    p = port if port is not None else u.port
    hostport = f"{h}:{p}" if p else h
    params = f";{u.params_raw}" if u.params_raw else ""
    headers = f"?{u.headers}" if u.headers else ""
    msg.set_ruri(f"{u.scheme}:{userinfo}{hostport}{params}{headers}")
    return True


def rewritehost(host: str) -> bool:
    """Replace the Request-URI's host, keeping user, port and parameters."""
    return rebuild_ruri(ctx.msg, host=host)


def rewritehostport(hostport: str) -> bool:
    """Replace the Request-URI's host and port ("host:port" or "host")."""
    host, sep, port = hostport.rpartition(":") if not hostport.endswith("]") else (hostport, "", "")
    if not sep or not port.isdigit():
        host, port = hostport, "0"
    return rebuild_ruri(ctx.msg, host=host, port=int(port))


def rewriteport(port: int) -> bool:
    return rebuild_ruri(ctx.msg, port=int(port))


def rewriteuser(user: str) -> bool:
    return rebuild_ruri(ctx.msg, user=user)


def setdsturi(uri: str) -> bool:
    """Send to `uri` instead of the Request-URI's host ($du = uri)."""
    parse_uri(uri)
    ctx.msg.dst = uri
    return True


def resetdsturi() -> bool:
    ctx.msg.dst = None
    return True


# ----------------------------------------------------------------------------- log --------

_LEVELS = {
    "L_DBG": logging.DEBUG,
    "L_INFO": logging.INFO,
    "L_NOTICE": logging.INFO,
    "L_WARN": logging.WARNING,
    "L_ERR": logging.ERROR,
    "L_CRIT": logging.CRITICAL,
    "L_ALERT": logging.CRITICAL,
}


def xlog(level: str, text: str | None = None) -> bool:
    """Log a line from the script: xlog("L_WARN", "text") or xlog("text")."""
    if text is None:
        level, text = "L_INFO", level
    _log.log(_LEVELS.get(level, logging.INFO), "%s", text.rstrip("\n"))
    return True


# ----------------------------------------------------------------- message flags ----------


def _flag_bit(flag: int) -> int:
    if not 0 <= flag <= 31:
        raise ValueError(f"flag must be 0..31, not {flag}")
    return 1 << flag


def setflag(flag: int) -> bool:
    """Set message flag 0..31 (Kamailio's setflag): the flags a request carries when it is
    relayed are its transaction's, which accounting reads ([acc] log_flag ...)."""
    ctx.msg.flags |= _flag_bit(flag)
    return True


def resetflag(flag: int) -> bool:
    ctx.msg.flags &= ~_flag_bit(flag)
    return True


def isflagset(flag: int) -> bool:
    return bool(ctx.msg.flags & _flag_bit(flag))
