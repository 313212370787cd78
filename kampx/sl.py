"""Replies (Kamailio's sl module): stateless ones, the one send_reply() that goes through the
request's transaction when it has one, and the 400 for a datagram the parser refused.

The To-tag of a stateless reply is derived from the request (Call-ID, From tag, top branch)
with a per-instance prefix, so a retransmitted request gets the same reply again, tag
included, without any state.

`worker` below is what every module gets from the worker: its stats, tm, server_header and
sl_tag_prefix.
"""

from __future__ import annotations

from kampx import __version__
from kampx import stats as S
from kampx._cparse import build_reply
from kampx.forward import reply_destination
from kampx.methods import ACK
from kampx.stats.core import SEND_ERRORS

SL_REPLIES = S.family(
    "sl", "replies", S.KIND_COUNTER, "Stateless replies sent, by status code", "code", S.REPLY_CODES
)
SL_ERR_REPLIES = S.family(
    "sl", "sent_err_replies", S.KIND_COUNTER, "Stateless error replies (400 on bad input)"
)
STATISTICS = (SL_REPLIES, SL_ERR_REPLIES)


def own_tag_start(prefix: str) -> str:
    """What every stateless To-tag starts with (Message.sl_tag(prefix), Kamailio's sl tag
    shape: 32 hex of the instance, '.', 8 hex of the request): an ACK whose To-tag starts so
    acknowledges a reply sent here statelessly, and ends before the script (Kamailio's sl
    ACK filter)."""
    return f"{prefix}."


def stateless_reply(worker, msg, code: int, reason: str, extra=None, body=b"") -> bool:
    """Reply to request `msg` without a transaction (sl_send_reply). ACKs are never
    answered."""
    if msg.method_id == ACK:
        return False
    headers = [*extra, worker.server_header] if extra else [worker.server_header]
    tag = msg._sl_tag(worker.sl_tag_prefix) if code > 100 else None
    data = build_reply(msg, code, reason, to_tag=tag, extra=headers, body=body)
    ok = msg.lsock.sendto(data, reply_destination(msg, msg.src))
    stats = worker.stats
    if ok:
        if 100 <= code <= 699:
            stats.inc(SL_REPLIES.base + code - 100)
    else:
        stats.inc(SEND_ERRORS.base)
    if code >= 200 and msg.flags:
        acc = worker.dialogs.acc  # a flagged request's final, as Kamailio's acc sees sl's
        if acc is not None and msg.flags & acc.mask:
            acc.final(msg, code, reason, tag)
    return ok


def send_reply(worker, msg, code: int, reason: str, extra=None, body=b"") -> bool:
    """Reply through the request's transaction when it has one (its retransmissions then
    get the same reply), else statelessly: Kamailio's send_reply()."""
    t = msg.txn
    if t is not None:
        return worker.tm.reply(t, code, reason, extra, body)
    return stateless_reply(worker, msg, code, reason, extra, body)


# -- a 400 for what the parser refused ----------------------------------------------------------

_WANTED = {
    b"via": b"via",
    b"v": b"via",
    b"from": b"from",
    b"f": b"from",
    b"to": b"to",
    b"t": b"to",
    b"call-id": b"call-id",
    b"i": b"call-id",
    b"cseq": b"cseq",
}


def sent_by_port(sent_by: str) -> int | None:
    """The port of a Via sent-by ("host", "host:port", "[v6]", "[v6]:port"): 5060 when
    absent, None when it is not a port (not digits, 0, above 65535)."""
    if sent_by.startswith("["):
        _, _, rest = sent_by.partition("]")
        text = rest[1:] if rest.startswith(":") else ""
    else:
        _, _, text = sent_by.rpartition(":") if ":" in sent_by else ("", "", "")
    if not text:
        return 5060
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) < 65536):
        return None
    return int(text)


def salvage_400(data: bytes, src, reason: str, tag_prefix: str):
    """(payload, destination) of a 400 for a request the parser refused (but could frame:
    the caller skips kampx._cparse.BadFraming), built from its raw lines (Via, From, To,
    Call-ID, CSeq copied as received); None when it cannot be addressed: not a request, an
    ACK, no usable Via, missing headers, an impossible port."""
    try:
        head = data.split(b"\r\n\r\n", 1)[0]
        lines = head.split(b"\r\n")
        first = lines[0].split(b" ")
        if len(first) < 3 or first[0].startswith(b"SIP/") or first[0] == b"ACK":
            return None
        out: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            canon = _WANTED.get(name.strip().lower())
            if sep and canon is not None:
                out.setdefault(canon, value.strip())
        if len(out) < 5:
            return None
        via = out[b"via"].split(b",")[0].decode("ascii")
        sent_by = via.split(None, 1)[1].split(";")[0].strip()
        if "rport" in via:
            dest = src
        else:
            port = sent_by_port(sent_by)
            if port is None:
                return None
            dest = (src[0], port)
        tag = f"{tag_prefix}.bad".encode()
        to_val = out[b"to"]
        to_line = to_val if b";tag=" in to_val.lower() else to_val + b";tag=" + tag
        payload = b"".join(
            [
                b"SIP/2.0 400 ",
                reason.encode(),
                b"\r\n",
                b"Via: ",
                out[b"via"],
                b";received=",
                src[0].encode(),
                b"\r\n",
                b"From: ",
                out[b"from"],
                b"\r\n",
                b"To: ",
                to_line,
                b"\r\n",
                b"Call-ID: ",
                out[b"call-id"],
                b"\r\n",
                b"CSeq: ",
                out[b"cseq"],
                b"\r\n",
                b"Server: kampx (",
                __version__.encode(),
                b")\r\n",
                b"Content-Length: 0\r\n\r\n",
            ]
        )
        return payload, dest
    except (IndexError, ValueError, UnicodeDecodeError):
        return None
