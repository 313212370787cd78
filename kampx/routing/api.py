"""The functions a route script calls, named and behaving as Kamailio's (KEMI) functions.

A route script is a Python module:

    from kampx.routing import *

    def request_route(msg):
        if not mf_process_maxfwd_header(10):
            sl_send_reply(483, "Too Many Hops")
            exit()
        ...

The functions act on the message being processed (the `msg` handed to the route function),
as Kamailio's act on the current message: `lookup("location")` reads and rewrites its
Request-URI, `t_relay()` relays it. `exit()` ends processing from any depth, like a Kamailio
route block's `exit`. The route functions a script may define: request_route(msg)
(required), reply_route(msg), failure_route(msg), branch_route(msg).
"""
from __future__ import annotations

import logging

from kampx import maxfwd as _maxfwd
from kampx import methods as _M
from kampx import rr as _rr
from kampx import sanity as _sanity
from kampx import sl as _sl
from kampx._cparse import SipParseError, parse_uri
from kampx.routing.flow import Dropped, ScriptExit

_log = logging.getLogger("kampx.script")


class _Context:
    """What the running route function works on; set by the worker around each call."""

    __slots__ = ("worker", "msg", "txn")

    def __init__(self):
        self.worker = None
        self.msg = None
        self.txn = None     # in failure_route: the transaction whose branches failed


ctx = _Context()


class Result(int):
    """A Kamailio return code: the number, true only when positive (a Kamailio script
    treats a negative return as false): `if not lookup("location"): ...`."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return int(self) > 0

    def __repr__(self) -> str:
        return f"Result({int(self)})"


def cfg_get(section: str, key: str):
    """A value of the running configuration, e.g. cfg_get("routing", "carrier")
    (Kamailio's $sel(cfg_get.group.name))."""
    return getattr(getattr(ctx.worker.cfg, section), key)

# ---------------------------------------------------------------------------------- flow --


def exit():  # noqa: A001 - Kamailio's name, on purpose
    """End processing of the current message (Kamailio's `exit`)."""
    raise ScriptExit()


def drop():
    """End processing; a reply is not forwarded (Kamailio's `drop`)."""
    raise Dropped()


# ------------------------------------------------------------------------------ messages --


def is_method(methods: str) -> bool:
    """True when the request's method is one of `methods` ("INVITE" or "INVITE|BYE")."""
    m = ctx.msg.method
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
    u = ctx.msg.uri
    return u.user if u is not None else None


def ruri_host():
    """The Request-URI's host ($rd)."""
    u = ctx.msg.uri
    return u.host if u is not None else None


def from_domain():
    """The From URI's host ($fd)."""
    return _uri_host(ctx.msg.from_uri)


def from_user():
    """The From URI's user ($fU)."""
    return _uri_user(ctx.msg.from_uri)


def to_user():
    """The To URI's user ($tU)."""
    return _uri_user(ctx.msg.to_uri)


def user_agent():
    """The User-Agent header ($ua), None when absent."""
    return ctx.msg.user_agent


def _uri_host(text):
    try:
        return parse_uri(text).host if text else None
    except SipParseError:
        return None


def _uri_user(text):
    try:
        return parse_uri(text).user if text else None
    except SipParseError:
        return None


def is_myself(uri: str | None = None) -> bool:
    """True when `uri` (default: the Request-URI) names this proxy: one of its listen
    addresses (port absent = 5060) or the realm (Kamailio's `uri == myself`)."""
    w = ctx.worker
    if uri is None:
        u = ctx.msg.uri
    else:
        try:
            u = parse_uri(uri)
        except SipParseError:
            return False
    return u is not None and w.forwarder.is_myself(u.host, u.port)


# ------------------------------------------------------------------- Request-URI / dst --


def rewriteuri(uri: str) -> bool:
    """Replace the Request-URI ($ru = uri)."""
    ctx.msg.set_ruri(uri)
    return True


def _rebuild_ruri(user=..., host=None, port=None) -> bool:
    msg = ctx.msg
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
    return _rebuild_ruri(host=host)


def rewritehostport(hostport: str) -> bool:
    """Replace the Request-URI's host and port ("host:port" or "host")."""
    host, sep, port = hostport.rpartition(":") if not hostport.endswith("]") else (hostport, "", "")
    if not sep or not port.isdigit():
        host, port = hostport, "0"
    return _rebuild_ruri(host=host, port=int(port))


def rewriteport(port: int) -> bool:
    return _rebuild_ruri(port=int(port))


def rewriteuser(user: str) -> bool:
    return _rebuild_ruri(user=user)


def setdsturi(uri: str) -> bool:
    """Send to `uri` instead of the Request-URI's host ($du = uri)."""
    parse_uri(uri)
    ctx.msg.dst = uri
    return True


def resetdsturi() -> bool:
    ctx.msg.dst = None
    return True


# ------------------------------------------------------------------------- stateless -----


def sl_send_reply(code: int, reason: str) -> bool:
    """Reply statelessly (Kamailio's sl_send_reply)."""
    return _sl.stateless_reply(ctx.worker, ctx.msg, int(code), reason)


sl_reply = sl_send_reply


def sl_reply_error() -> bool:
    """Reply to a request whose processing failed (Kamailio's sl_reply_error): the reply
    the failing function chose (503 with Retry-After when tm had no room, 403 for an
    in-dialog request outside any dialog kampx established), else 500. Through the
    request's transaction when it has one (nothing when that already has its final)."""
    code, reason, extra = ctx.msg.error_reply or (500, "Server Internal Error", ())
    return _sl.send_reply(ctx.worker, ctx.msg, code, reason, extra)


def send_reply(code: int, reason: str) -> bool:
    """Reply statefully when the request has a transaction, else statelessly."""
    return _sl.send_reply(ctx.worker, ctx.msg, int(code), reason)


def mf_process_maxfwd_header(default: int, limit: int = _maxfwd.MAX_LIMIT) -> bool:
    """Max-Forwards: insert `default` when absent, else decrement (at most `limit`, Kamailio's
    max_limit); False when it is 0 or not a number (reply 483 Too Many Hops)."""
    return _maxfwd.process_maxfwd(ctx.msg, int(default), int(limit)) > 0


def sanity_check(msg_checks: int = _sanity.DEFAULT_MSG_CHECKS,
                 uri_checks: int = _sanity.DEFAULT_URI_CHECKS) -> bool:
    """Kamailio's sanity_check("1511", "7"): on failure the request has been answered
    (400/505/...) and False is returned."""
    result = _sanity.run_checks(ctx.msg, int(msg_checks), int(uri_checks))
    if result is None:
        return True
    code, reason = result
    if code:
        _sl.stateless_reply(ctx.worker, ctx.msg, code, reason)
    return False


# ------------------------------------------------------------------------------ rr --------


def record_route() -> bool:
    """Add `Record-Route: <sip:IP[:port];lr>` so in-dialog requests come back here."""
    return _rr.record_route(ctx.worker, ctx.msg)


def loose_route() -> bool:
    """Route an in-dialog request by its Route set (True when it named this proxy)."""
    return _rr.loose_route(ctx.worker, ctx.msg)


# ------------------------------------------------------------------------------ tm --------


def t_relay(host: str | None = None, port: int | None = None) -> bool:
    """Relay the request statefully to `host:port`, else to $du, else to the Request-URI
    (Kamailio's t_relay). An ACK is forwarded statelessly; a CANCEL cancels the INVITE it
    matches. False when the request could not be relayed."""
    return ctx.worker.tm.t_relay(ctx.msg, host, port)


def t_check_trans() -> bool:
    """For CANCEL and ACK: True when the INVITE transaction they belong to exists here.
    For other requests: a retransmission of an existing transaction is answered from it and
    the script ends here (Kamailio's t_check_trans)."""
    w, msg = ctx.worker, ctx.msg
    if msg.method_id == _M.CANCEL:
        return w.tm.lookup(msg.invite_key) is not None
    t = w.tm.lookup(msg.txn_key)
    if t is None:
        return False
    if msg.method_id == _M.ACK:
        return True
    w.tm.retransmission(t, msg)
    raise ScriptExit()


def t_precheck_trans() -> bool:
    """True when another copy of this request is already being handled (by this or another
    worker): the shared transaction index has its key."""
    import time
    w, msg = ctx.worker, ctx.msg
    if msg.method_id in (_M.ACK, _M.CANCEL):
        return False
    return w.txn_index.lookup(msg.txn_key, time.monotonic()) >= 0


def t_newtran() -> bool:
    """Create the server transaction now (a retransmission that raced us is handed over)."""
    w, msg = ctx.worker, ctx.msg
    return w.tm.new_server(msg, msg.lsock, msg.src) is not None


def t_reply(code: int, reason: str) -> bool:
    """Reply statefully (creating the transaction if needed)."""
    w, msg = ctx.worker, ctx.msg
    t = msg.txn or w.tm.new_server(msg, msg.lsock, msg.src)
    if t is None:
        return False
    return w.tm.reply(t, int(code), reason)


def t_reply_code() -> int:
    """In failure_route: the best final code received so far."""
    t = ctx.txn
    return t.best_code if t is not None else 0


def t_is_canceled() -> bool:
    """In failure_route: True when the INVITE was CANCELed upstream."""
    t = ctx.txn
    return bool(t is not None and t.cancelled)


# ----------------------------------------------------------------------------- log --------

_LEVELS = {"L_DBG": logging.DEBUG, "L_INFO": logging.INFO, "L_NOTICE": logging.INFO,
           "L_WARN": logging.WARNING, "L_ERR": logging.ERROR, "L_CRIT": logging.CRITICAL,
           "L_ALERT": logging.CRITICAL}


def xlog(level: str, text: str | None = None) -> bool:
    """Log a line from the script: xlog("L_WARN", "text") or xlog("text")."""
    if text is None:
        level, text = "L_INFO", level
    _log.log(_LEVELS.get(level, logging.INFO), "%s", text.rstrip("\n"))
    return True


__all__ = [name for name in dir() if not name.startswith("_") and name not in (
    "annotations", "logging", "Dropped", "ScriptExit", "SipParseError", "parse_uri", "ctx")]
