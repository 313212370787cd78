"""Stateless replies (Kamailio's sl module).

The To-tag of a stateless reply is derived from the request (Call-ID, From tag, top branch)
with a per-instance prefix, so a retransmitted request gets the same reply again, tag
included, without any state.
"""
from __future__ import annotations

import hashlib

from kampx import stats as S
from kampx._cparse import build_reply

SERVER_HEADER = None  # set by the worker: "Server: kampx (VERSION)"


def to_tag(prefix: str, msg) -> str:
    """Kamailio's sl tag shape: 32 hex of the instance, '.', 8 hex of the request."""
    h = hashlib.blake2s(f"{msg.call_id}\x00{msg.from_tag}\x00{msg.branch}".encode(
        "utf-8", "surrogateescape"), digest_size=4).hexdigest()
    return f"{prefix}.{h}"


def send_reply(worker, msg, code: int, reason: str, extra=None, body=b"") -> bool:
    """Reply to request `msg` without a transaction. ACKs are never answered."""
    if msg.method_id == 2:
        return False
    headers = list(extra) if extra else []
    if worker.server_header:
        headers.append(worker.server_header)
    data = build_reply(msg, code, reason, to_tag=to_tag(worker.sl_tag_prefix, msg) if code > 100 else None,
                       extra=headers, body=body)
    ok = msg.lsock.sendto(data, worker.reply_destination(msg, msg.src))
    stats = worker.stats
    if ok:
        if 100 <= code <= 699:
            stats.inc(S.SL_REPLIES.base + code - 100)
    else:
        stats.inc(S.SEND_ERRORS.base)
    return ok
