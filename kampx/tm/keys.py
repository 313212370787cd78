"""Transaction identities (RFC 3261 17.1.3, 17.2.3) and the branches kampx sends.

A server transaction is keyed by the top Via's branch, sent-by and method (ACK counts as
INVITE, CANCEL is its own); a pre-RFC 3261 request (no z9hG4bK cookie) by the RFC 2543
fields instead. The key is what the shared index (kampx._shm.KeyIndex) maps to the worker
that owns the transaction.

Branches kampx sends downstream carry their owner: z9hG4bKkx<worker:2 hex><epoch>.<label>.<n>.
The epoch is random per worker process, so a late reply for a transaction of an earlier
process never matches a new one.
"""

from __future__ import annotations

MAGIC = "z9hG4bK"
OUR_PREFIX = "z9hG4bKkx"
_PREFIX_LEN = len(OUR_PREFIX)


def server_key(msg, method: str | None = None) -> bytes:
    """The key of the server transaction `msg` belongs to. `method` overrides the method
    class (CANCEL looks up its INVITE with method="INVITE")."""
    key = msg.server_key(method)  # the RFC 3261 key, made in C
    if key is not None:
        return key
    if method is None:
        method = msg.method
        if method == "ACK":
            method = "INVITE"
    via = msg.top_via
    branch = via.branch if via is not None else None
    if branch is not None and branch.startswith(MAGIC) and len(branch) > len(MAGIC):
        return f"{branch}\x00{via.host.lower()}:{via.port}\x00{method}".encode(
            "utf-8", "surrogateescape"
        )
    # RFC 2543 fallback (17.2.3): Request-URI, From tag, Call-ID, CSeq number, top Via
    return (
        f"2543\x00{msg.original_ruri}\x00{msg.from_tag}\x00{msg.call_id}\x00"
        f"{msg.cseq_num}\x00{via.raw if via is not None else ''}\x00{method}"
    ).encode("utf-8", "surrogateescape")


def branch_owner(branch: str | None) -> int:
    """The worker id a branch of ours names, -1 when the branch is not ours."""
    if branch is None or not branch.startswith(OUR_PREFIX) or len(branch) < _PREFIX_LEN + 2:
        return -1
    try:
        return int(branch[_PREFIX_LEN : _PREFIX_LEN + 2], 16)
    except ValueError:
        return -1
