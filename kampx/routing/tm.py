"""Script functions of Kamailio's tm module (kampx/tm)."""

from __future__ import annotations

import time

from kampx import methods as _M
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
