"""Script functions of Kamailio's sl module: stateless replies, and send_reply (through the
transaction when the request has one)."""

from __future__ import annotations

from kampx.routing.context import ctx
from kampx.sl import send_reply as _send_reply
from kampx.sl import stateless_reply as _stateless_reply

__all__ = ["sl_send_reply", "sl_reply_error", "send_reply", "sl_reply"]


def sl_send_reply(code: int, reason: str) -> bool:
    """Reply statelessly (Kamailio's sl_send_reply)."""
    return _stateless_reply(ctx.worker, ctx.msg, int(code), reason)


sl_reply = sl_send_reply


def sl_reply_error() -> bool:
    """Reply to a request whose processing failed (Kamailio's sl_reply_error): the reply
    the failing function chose (503 with Retry-After when tm had no room, 403 for an
    in-dialog request outside any dialog kampx established), else 500. Through the
    request's transaction when it has one (nothing when that already has its final)."""
    code, reason, extra = ctx.msg.error_reply or (500, "Server Internal Error", ())
    return _send_reply(ctx.worker, ctx.msg, code, reason, extra)


def send_reply(code: int, reason: str) -> bool:
    """Reply statefully when the request has a transaction, else statelessly."""
    return _send_reply(ctx.worker, ctx.msg, int(code), reason)
