"""Script functions of Kamailio's tm module (kampx/tm)."""

from __future__ import annotations

import re
from time import monotonic

from kampx.methods import ACK, CANCEL
from kampx.routing.context import ctx
from kampx.routing.flow import ScriptExit

__all__ = [
    "t_relay",
    "t_check_trans",
    "t_precheck_trans",
    "t_newtran",
    "t_reply",
    "t_reply_code",
    "t_is_canceled",
    "t_on_failure",
    "t_set_fr",
    "t_check_status",
    "t_next_dst",
]


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
    if msg.method_id == CANCEL:
        return w.tm.lookup(msg.invite_key) is not None
    t = w.tm.lookup(msg.txn_key)
    if t is None:
        return False
    if msg.method_id == ACK:
        return True
    w.tm.retransmission(t, msg)
    raise ScriptExit()


def t_precheck_trans() -> bool:
    """True when another copy of this request is already being handled (by this or another
    worker): the shared transaction index has its key."""
    w, msg = ctx.worker, ctx.msg
    if msg.method_id in (ACK, CANCEL):
        return False
    return w.txn_index.lookup(msg.txn_key, monotonic()) >= 0


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


def t_on_failure(route) -> bool:
    """Arm `route` (a function of the script taking the message, or its name) to run when
    every branch of this request's transaction has failed, before the best negative reply
    goes upstream (Kamailio's t_on_failure). Armed once: a failure route that relays again
    calls t_on_failure() again to be called for those branches too."""
    if isinstance(route, str):
        fn = getattr(ctx.worker.script.module, route, None)
        if not callable(fn):
            raise ValueError(f"t_on_failure: the script has no function {route!r}")
        route = fn
    elif not callable(route):
        raise TypeError("t_on_failure: expected a function of the script or its name")
    ctx.msg.on_failure = route
    return True


def t_set_fr(fr_inv_ms: int, fr_ms: int = 0) -> bool:
    """This transaction's timers, in milliseconds, 0 keeping [tm]'s (Kamailio's t_set_fr):
    fr_inv for a final reply after a provisional, fr for a first reply. A short fr on a
    carrier's branch is how a silent switch is given up for the next one."""
    if fr_inv_ms < 0 or fr_ms < 0:
        raise ValueError("t_set_fr: timers are milliseconds, 0 or more")
    ctx.msg.fr_timers = (fr_inv_ms / 1000.0, fr_ms / 1000.0)
    return True


_STATUS_RES: dict[str, re.Pattern] = {}


def t_check_status(pattern: str) -> bool:
    """In failure_route, whether the best final code so far matches the regular expression
    `pattern` (whole code: "503|408", "5[0-9][0-9]"); in reply_route, the reply's code."""
    compiled = _STATUS_RES.get(pattern)
    if compiled is None:
        compiled = _STATUS_RES[pattern] = re.compile(pattern)
    t = ctx.txn
    if t is not None:
        code = t.best_code
    else:
        msg = ctx.msg
        code = msg.status if msg is not None and not msg.is_request else 0
    return code > 0 and compiled.fullmatch(str(code)) is not None


def t_next_dst() -> bool:
    """In failure_route: $du becomes the next RFC 3263 target (by SRV priority and weight,
    then address) of the name the failed branch went to; then t_relay() tries it. False
    when none is left (or the destination was no name)."""
    t = ctx.txn
    if t is None:
        return False
    uri = ctx.worker.tm.next_target(t)
    if uri is None:
        return False
    ctx.msg.dst = uri
    return True
