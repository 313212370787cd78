"""Statistics: this file is the catalogue and the per-process handle that counts them;
kamctl.py names them as `kampxctl stats` shows them, prometheus.py exposes them on /metrics.

Every process adds to its own row of a shared CounterRows table (Kamailio's counters.c
model: no lock, no atomic on the hot path); /metrics and `kampxctl stats` sum the rows at
read time. A row outlives the process that wrote it, so totals never go down when a worker
dies. Columns are fixed at import time: plain counters, counters with one label (method,
code, reason) expanded into one column per label value, and the processing-time histogram.

Names follow Kamailio's statistics (group + name) so an operator finds what kamctl shows;
prometheus.py turns them into Prometheus families (kampx_<group>_<name>[_total]).
"""
from __future__ import annotations

from dataclasses import dataclass

from kampx._cparse import METHOD_NAMES

KIND_COUNTER = "counter"
KIND_GAUGE = "gauge"


@dataclass(frozen=True)
class Family:
    group: str
    name: str
    kind: str
    help: str
    label: str | None = None        # label name when the family has one label
    values: tuple = ()              # the label values, one column each
    base: int = 0                   # first column

    @property
    def size(self) -> int:
        return len(self.values) if self.label else 1

    def col(self, value=None) -> int:
        if self.label is None:
            return self.base
        return self.base + self.values.index(value)


REPLY_CODES = tuple(range(100, 700))
METHODS = METHOD_NAMES  # index = method id; "OTHER" first

FAMILIES: list[Family] = []
_next = 0


def _family(group, name, kind, help, label=None, values=()) -> Family:
    global _next
    f = Family(group, name, kind, help, label, tuple(values), _next)
    _next += f.size
    FAMILIES.append(f)
    return f


# -- core ------------------------------------------------------------------------------------
RCV_REQUESTS = _family("core", "rcv_requests", KIND_COUNTER, "SIP requests received, by method",
                       "method", METHODS)
RCV_REPLIES = _family("core", "rcv_replies", KIND_COUNTER, "SIP replies received, by status code",
                      "code", REPLY_CODES)
FWD_REQUESTS = _family("core", "fwd_requests", KIND_COUNTER, "Requests forwarded downstream")
FWD_REPLIES = _family("core", "fwd_replies", KIND_COUNTER, "Replies forwarded upstream")
DROP_REQUESTS = _family("core", "drop_requests", KIND_COUNTER,
                        "Requests dropped (by the route script, flood protection or a scanner filter)")
DROP_REPLIES = _family("core", "drop_replies", KIND_COUNTER, "Replies dropped (no route, or dropped by script)")
ERR_REQUESTS = _family("core", "err_requests", KIND_COUNTER, "Requests that could not be processed")
BAD_MSG_HDR = _family("core", "bad_msg_hdr", KIND_COUNTER, "Datagrams that failed to parse")
SEND_ERRORS = _family("core", "send_errors", KIND_COUNTER, "Datagrams the kernel refused to send")
HANDOFFS = _family("core", "handoffs", KIND_COUNTER,
                   "Packets handed to the worker that owns their transaction")
HANDOFF_FAILED = _family("core", "handoff_failed", KIND_COUNTER,
                         "Hand-offs that failed (owner gone); processed locally instead")
HANDOFF_REJECTED = _family("core", "handoff_rejected", KIND_COUNTER,
                           "Hand-off connections from a process that is not a worker of this "
                           "proxy, and malformed hand-off frames: refused and dropped")
INTERNAL_ERRORS = _family("core", "internal_errors", KIND_COUNTER,
                          "Datagrams whose processing raised an unexpected error (logged once "
                          "per distinct error; the worker goes on)")
SCRIPT_ERRORS = _family("script", "exceptions", KIND_COUNTER,
                        "Exceptions raised by the route script (the request got a 500)")

# -- tm ----------------------------------------------------------------------------------------
UAS_TRANSACTIONS = _family("tm", "UAS_transactions", KIND_COUNTER, "Server transactions created")
UAC_TRANSACTIONS = _family("tm", "UAC_transactions", KIND_COUNTER, "Client transactions (branches) created")
ACTIVE_TRANSACTIONS = _family("tm", "active_transactions", KIND_GAUGE,
                              "Server transactions currently held")
TXN_MEMORY = _family("tm", "memory_bytes", KIND_GAUGE,
                     "Bytes of messages held by transactions (counted against [tm] max_memory_mb)")
FINAL_REPLIES = _family("tm", "transactions_finished", KIND_COUNTER,
                        "Server transactions by the class of their final reply",
                        "class", ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx"))
RPL_RECEIVED = _family("tm", "rpl_received", KIND_COUNTER, "Replies received for transactions")
RPL_ABSORBED = _family("tm", "rpl_absorbed", KIND_COUNTER, "Replies absorbed (100, retransmissions, CANCEL 200)")
RPL_RELAYED = _family("tm", "rpl_relayed", KIND_COUNTER, "Replies relayed upstream")
RPL_GENERATED = _family("tm", "rpl_generated", KIND_COUNTER, "Replies generated by tm (t_reply, 100, 408)")
RPL_SENT = _family("tm", "rpl_sent", KIND_COUNTER, "Replies sent by tm (relayed + generated + retransmitted)")
RETRANS_ABSORBED = _family("tm", "retransmissions_absorbed", KIND_COUNTER,
                           "Request retransmissions answered from a transaction")
TIMEOUTS = _family("tm", "timeouts", KIND_COUNTER, "Branches that timed out (408)")
TXN_REFUSED = _family("tm", "refused_transactions", KIND_COUNTER,
                      "New transactions refused with 503: [tm] max_transactions or "
                      "max_memory_mb reached")
BRANCHES_CAPPED = _family("tm", "branches_capped", KIND_COUNTER,
                          "Branches not sent because a request reached [tm] max_branches")

# -- dialog ------------------------------------------------------------------------------------
DIALOGS_PROCESSED = _family("dialog", "processed_dialogs", KIND_COUNTER,
                            "Dialogs started by a Record-Routed request kampx relayed")
DIALOGS_CONFIRMED = _family("dialog", "confirmed_dialogs", KIND_COUNTER,
                            "Dialogs confirmed by a 2xx kampx relayed")
DIALOGS_FAILED = _family("dialog", "failed_dialogs", KIND_COUNTER,
                         "Dialogs whose creating request ended without a 2xx")
DIALOGS_ENDED = _family("dialog", "ended_dialogs", KIND_COUNTER, "Dialogs ended by a BYE")
DIALOG_REJECTED = _family("dialog", "rejected_requests", KIND_COUNTER,
                          "In-dialog requests refused: not in a dialog kampx established "
                          "(forged To-tag, or a dialog that ended or expired)")
DIALOG_TABLE_FULL = _family("dialog", "table_full", KIND_COUNTER,
                            "Dialog-creating requests refused with 503: the dialog index is full")
DIALOG_JOURNAL_DROPPED = _family("dialog", "journal_dropped", KIND_COUNTER,
                                 "Dialog changes not persisted (journal pipe full, or the "
                                 "database down too long)")

# -- sl ----------------------------------------------------------------------------------------
SL_REPLIES = _family("sl", "replies", KIND_COUNTER, "Stateless replies sent, by status code",
                     "code", REPLY_CODES)
SL_ERR_REPLIES = _family("sl", "sent_err_replies", KIND_COUNTER, "Stateless error replies (400 on bad input)")

# -- registrar / usrloc -----------------------------------------------------------------------
ACCEPTED_REGS = _family("registrar", "accepted_regs", KIND_COUNTER, "REGISTER requests accepted")
REJECTED_REGS = _family("registrar", "rejected_regs", KIND_COUNTER, "REGISTER requests rejected")
EXPIRED_CONTACTS = _family("usrloc", "expired_contacts", KIND_COUNTER, "Bindings removed on expiry")
DB_WRITES = _family("usrloc", "db_writes", KIND_COUNTER,
                    "Binding changes written behind to the database")
DB_ERRORS = _family("usrloc", "db_errors", KIND_COUNTER,
                    "Write-behind rounds that failed (retried; the proxy answers from memory)")

# -- auth / security ------------------------------------------------------------------------
AUTH_CHALLENGES = _family("auth", "challenges", KIND_COUNTER, "Digest challenges sent",
                          "code", ("401", "407"))
AUTH_SUCCESSES = _family("auth", "successes", KIND_COUNTER, "Requests authenticated")
AUTH_FAILURES = _family("auth", "failures", KIND_COUNTER, "Failed authentications, by reason",
                        "reason", ("no_credentials", "bad_credentials", "stale_nonce",
                                   "replayed", "unknown_user", "wrong_password", "user_mismatch"))
PIKE_BLOCKED = _family("security", "pike_blocked", KIND_COUNTER,
                       "Requests dropped because their source exceeded the flood limit")
BAN_BLOCKED = _family("security", "ban_blocked", KIND_COUNTER,
                      "Requests dropped because their source is banned for failed authentications")
AUTH_BANS = _family("security", "auth_bans", KIND_COUNTER, "Sources banned for failed authentications")
SCANNER_DROPPED = _family("security", "scanner_dropped", KIND_COUNTER,
                          "Requests dropped for a scanner User-Agent")

# -- request processing time -------------------------------------------------------------------
HIST_BUCKETS_US = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000)
PROC_TIME = _family("core", "request_processing_seconds", "histogram",
                    "Time from receiving a request to finishing its route script",
                    "le", HIST_BUCKETS_US + ("+Inf", "sum_us", "count"))

NCOLS = _next


class Stats:
    """This process's row. `inc`/`add` are the whole hot-path API."""

    __slots__ = ("rows", "row", "_add")

    def __init__(self, rows, row: int):
        self.rows = rows
        self.row = row
        self._add = rows.add

    def inc(self, col: int) -> None:
        self._add(self.row, col, 1)

    def add(self, col: int, n: int) -> None:
        self._add(self.row, col, n)

    def observe_us(self, us: int) -> None:
        base = PROC_TIME.base
        for i, le in enumerate(HIST_BUCKETS_US):
            if us <= le:
                self._add(self.row, base + i, 1)
                break
        else:
            self._add(self.row, base + len(HIST_BUCKETS_US), 1)
        self._add(self.row, base + len(HIST_BUCKETS_US) + 1, us)
        self._add(self.row, base + len(HIST_BUCKETS_US) + 2, 1)
