"""The core's statistics (Kamailio's core group): counted by the worker loop, forward.py,
sl.py and the route hooks."""

from __future__ import annotations

from kampx import stats as S

RCV_REQUESTS = S.family(
    "core", "rcv_requests", S.KIND_COUNTER, "SIP requests received, by method", "method", S.METHODS
)
RCV_REPLIES = S.family(
    "core",
    "rcv_replies",
    S.KIND_COUNTER,
    "SIP replies received, by status code",
    "code",
    S.REPLY_CODES,
)
FWD_REQUESTS = S.family("core", "fwd_requests", S.KIND_COUNTER, "Requests forwarded downstream")
FWD_REPLIES = S.family("core", "fwd_replies", S.KIND_COUNTER, "Replies forwarded upstream")
DROP_REQUESTS = S.family(
    "core",
    "drop_requests",
    S.KIND_COUNTER,
    "Requests dropped (by the route script, flood protection or a scanner filter)",
)
DROP_REPLIES = S.family(
    "core", "drop_replies", S.KIND_COUNTER, "Replies dropped (no route, or dropped by script)"
)
ERR_REQUESTS = S.family(
    "core", "err_requests", S.KIND_COUNTER, "Requests that could not be processed"
)
BAD_MSG_HDR = S.family("core", "bad_msg_hdr", S.KIND_COUNTER, "Datagrams that failed to parse")
SEND_ERRORS = S.family(
    "core", "send_errors", S.KIND_COUNTER, "Datagrams the kernel refused to send"
)
HANDOFFS = S.family(
    "core", "handoffs", S.KIND_COUNTER, "Packets handed to the worker that owns their transaction"
)
HANDOFF_FAILED = S.family(
    "core",
    "handoff_failed",
    S.KIND_COUNTER,
    "Hand-offs that failed (owner gone); processed locally instead",
)
STEERED = S.family(
    "core",
    "steered_datagrams",
    S.KIND_COUNTER,
    "Datagrams the kernel delivered to a worker's own reply socket (replies steered to the "
    "worker that owns their transaction)",
)
HANDOFF_REJECTED = S.family(
    "core",
    "handoff_rejected",
    S.KIND_COUNTER,
    "Hand-off connections from a process that is not a worker of this "
    "proxy, and malformed hand-off frames: refused and dropped",
)
INTERNAL_ERRORS = S.family(
    "core",
    "internal_errors",
    S.KIND_COUNTER,
    "Datagrams whose processing raised an unexpected error (logged once "
    "per distinct error; the worker goes on)",
)
PROC_TIME = S.family(
    "core",
    "request_processing_seconds",
    S.KIND_HISTOGRAM,
    "Time from receiving a request to finishing its route script",
)
STATISTICS = (
    RCV_REQUESTS,
    RCV_REPLIES,
    FWD_REQUESTS,
    FWD_REPLIES,
    DROP_REQUESTS,
    DROP_REPLIES,
    ERR_REQUESTS,
    BAD_MSG_HDR,
    SEND_ERRORS,
    HANDOFFS,
    HANDOFF_FAILED,
    STEERED,
    HANDOFF_REJECTED,
    INTERNAL_ERRORS,
    PROC_TIME,
)
