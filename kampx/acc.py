"""Accounting (Kamailio's acc module): a record per flagged transaction, missed calls, CDRs,
and the call counters behind ASR and ACD.

What makes a record (flags are the message flags setflag() sets, numbers in [acc]):
- a transaction whose request carries log_flag gets a row in `acc` at its 2xx final, and at
  a negative final too when it carries failed_transaction_flag;
- an INVITE (outside a dialog) carrying log_missed_flag gets a row in `missed_calls` at a
  negative final (486, 404, 487 after a CANCEL, 408 ...);
- a dialog tracked with dlg_manage() gets one row in `acc_cdrs` when it ends: by a BYE from
  either side, by its timeout, by `kampxctl dlg end`, or by failing ([acc] cdr_on_failed).
Stateless replies (sl_send_reply) count as finals, as Kamailio's acc does with sl's
callbacks: the built-in script's "404 User not Registered" to the carrier is a missed call.

The call counters count INVITEs the script accounts (any [acc] flag, the direction flags
included): attempted at their final reply, then answered or failed by class; the duration
of each answered call that ended goes into a histogram. ASR = answered / attempted, ACD =
duration sum / count, per direction (inbound_flag: from the carrier, outbound_flag: to it,
neither: local).

Where records go: the process that makes one (a worker, the timer, the control process)
writes it as one record (kampx/_records.pyx's form; marshal's for a dict) into
the journal pipe (kampx/dialog.py's, records of at most
PIPE_BUF bytes written whole, never blocking: a full pipe keeps them in the process until
the next round); the db writer reads them and inserts them in batches into the database
([acc] db) and writes them to [acc] log. Nothing is written to a database on the packet
path, and a clean stop loses nothing: the supervisor stops the db writer last, and it
drains the pipe before it exits.
"""

from __future__ import annotations

import json
import logging
import os
import syslog

from kampx import _records as records
from kampx import stats as S
from kampx._clock import monotonic, time
from kampx.db.base import acc_columns
from kampx.dialog_table import ANSWER_FIELDS, PARTY_FIELDS, SETUP_FIELDS
from kampx.dialog_table import decode as decode_dialog
from kampx.methods import INVITE
from kampx.stats.family import Family

log = logging.getLogger("kampx.acc")
TABLES = ("acc", "missed_calls", "acc_cdrs")

DIRECTIONS = ("inbound", "outbound", "local")
CDR_RECORD = "cdr"  # the first item of a CDR record (Accounting.ended)
ROW_RECORD = "row"  # the first item of a transaction's row record (Accounting._row)
# a transaction row's columns: its own, then the party columns (PARTY_FIELDS, Kamailio's
# default log_extra, which a tracked dialog's record keeps too)
ROW_FIELDS = (
    "t",
    "method",
    "from_tag",
    "to_tag",
    "callid",
    "sip_code",
    "sip_reason",
    "time",
) + PARTY_FIELDS
FAIL_CLASSES = ("3xx", "4xx", "5xx", "6xx")
# histogram buckets of call durations, seconds
DURATION_BUCKETS_S = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)

CALLS_ATTEMPTED = S.family(
    "acc",
    "calls_attempted",
    S.KIND_COUNTER,
    "Accounted INVITEs that got a final reply, by direction",
    "direction",
    DIRECTIONS,
)
CALLS_ANSWERED = S.family(
    "acc",
    "calls_answered",
    S.KIND_COUNTER,
    "Accounted INVITEs answered with a 2xx, by direction",
    "direction",
    DIRECTIONS,
)
CALLS_FAILED = S.family(
    "acc",
    "calls_failed",
    S.KIND_COUNTER,
    "Accounted INVITEs that ended with a negative final, by direction and class",
    ("direction", "class"),
    tuple((d, c) for d in DIRECTIONS for c in FAIL_CLASSES),
)
CALL_DURATION = S.family(
    "acc",
    "call_duration_seconds",
    S.KIND_HISTOGRAM,
    "Duration of answered tracked calls that ended (answer to end), by direction",
    "direction",
    DIRECTIONS,
    buckets=tuple(b * 1000 for b in DURATION_BUCKETS_S),
    scale=1000,  # stored in milliseconds
)
RECORDS_WRITTEN = S.family(
    "acc",
    "records_written",
    S.KIND_COUNTER,
    "Accounting records in the database (or the log when [acc] db is off), by table",
    "table",
    TABLES,
)
RECORDS_DROPPED = S.family(
    "acc",
    "records_dropped",
    S.KIND_COUNTER,
    "Accounting records lost: too large for the journal, or held back too long",
)
STATISTICS = (
    CALLS_ATTEMPTED,
    CALLS_ANSWERED,
    CALLS_FAILED,
    CALL_DURATION,
    RECORDS_WRITTEN,
    RECORDS_DROPPED,
)


def direction_name(index: int) -> str:
    """The direction a dialog slot keeps as its index in DIRECTIONS."""
    return DIRECTIONS[index] if 0 <= index < len(DIRECTIONS) else "local"


def flag_bits(cfg) -> tuple[int, int, int, int, int]:
    """(log, missed, failed, inbound, outbound) flag masks of an [acc] section."""
    return (
        1 << cfg.log_flag,
        1 << cfg.log_missed_flag,
        1 << cfg.failed_transaction_flag,
        1 << cfg.inbound_flag,
        1 << cfg.outbound_flag,
    )


class Accounting:
    """One process's accounting: `final()` for replies, `cdr()` for ended dialogs; records
    go out through `journal` (kampx.dialog.Journal, flushed by the process's loop)."""

    def __init__(self, cfg, journal, stats):
        self.log_bit, self.missed_bit, self.failed_bit, self.in_bit, self.out_bit = flag_bits(cfg)
        self.mask = self.log_bit | self.missed_bit | self.failed_bit | self.in_bit | self.out_bit
        self.cdr_on_failed = cfg.cdr_on_failed
        # the call counters' columns by direction: (attempted, answered, failed by class)
        self._call_cols = {
            d: (
                CALLS_ATTEMPTED.col(d),
                CALLS_ANSWERED.col(d),
                tuple(CALLS_FAILED.col((d, c)) for c in FAIL_CLASSES),
            )
            for d in DIRECTIONS
        }
        self.journal = journal
        self.stats = stats

    def direction(self, flags) -> str:
        if flags & self.in_bit:
            return "inbound"
        if flags & self.out_bit:
            return "outbound"
        return "local"

    # -- the party columns (Kamailio's default log_extra) --

    def party_values(self, req) -> tuple:
        """The party columns, PARTY_FIELDS in order: src_user=$fU, src_domain=$fd,
        src_ip=$si, dst_ouser=$tU, dst_user=$rU, dst_domain=$rd (the Request-URI as
        relayed), direction. Kept on the request for its next record
        (the dialog's start, then its final), while its flags and Request-URI stay what
        they were."""
        key = (req.flags, req.ruri)
        cached = req.acc_party_values
        if cached is not None and cached[0] == key:
            return cached[1]
        src_user, src_domain, dst_ouser, dst_user, dst_domain = req._acc_parties()
        values = (
            src_user,
            src_domain,
            req.src[0] if req.src else "",
            dst_ouser,
            dst_user,
            dst_domain,
            # an in-dialog request of a tracked call: the call's (kampx/dialog.py)
            req.dlg_direction or self.direction(req.flags),
        )
        req.acc_party_values = (key, values)
        return values

    # -- transactions --

    def final(self, req, code, reason: str, to_tag) -> None:
        """The final reply `code` to request `req` left (a stateful or stateless one).
        Call only when req.flags & self.mask (the caller's test keeps this off the path of
        unaccounted requests)."""
        flags = req.flags
        call = req.method_id == INVITE and not req.has_to_tag
        if call:
            self._count_call(self.direction(flags), code)
        if code < 300:
            if flags & self.log_bit:
                self.emit(self._row("acc", req, code, reason, to_tag))
            return
        if flags & self.failed_bit:
            self.emit(self._row("acc", req, code, reason, to_tag))
        if call and flags & self.missed_bit:
            self.emit(self._row("missed_calls", req, code, reason, to_tag))

    def _count_call(self, direction: str, code) -> None:
        stats = self.stats
        attempted, answered, failed = self._call_cols[direction]
        stats.inc(attempted)
        if code < 300:
            stats.inc(answered)
        else:
            stats.inc(failed[min(code // 100, 6) - 3])

    def _row(self, table: str, req, code, reason: str, to_tag) -> tuple:
        """A transaction's row as its journal record: ROW_RECORD, then the values of
        ROW_FIELDS (a tuple: half the bytes and marshal time of a dict; decode_record
        makes the dict)."""
        return (
            ROW_RECORD,
            table,
            req.method,
            req._from_tag() or "",
            to_tag or req._to_tag() or "",
            req._call_id() or "",
            code,
            reason,
            time(),
        ) + self.party_values(req)

    # -- dialogs --

    def ended(
        self,
        direction: int,
        answered: float,
        setup: bytes,
        answer: bytes,
        end_reason: str,
        code: int = 0,
        reason: str = "",
        now: float | None = None,
    ) -> None:
        """A tracked dialog ended (kampx/dialog_table.py's `take`: its direction index in
        DIRECTIONS, answer time or 0, and its two records): the duration histogram here,
        the CDR as one record that carries the dialog's records undecoded (the db writer
        makes the row: `decode_record`). `code`/`reason`: the final of a failed call."""
        end = time() if now is None else now
        if not answered and not self.cdr_on_failed:
            return
        if answered:
            if not 0 <= direction < len(DIRECTIONS):
                direction = len(DIRECTIONS) - 1  # "local", as direction_name() says
            duration_fam: Family = CALL_DURATION  # typed: the observation is a C call
            duration_fam.observe(self.stats, direction, round(max(0.0, end - answered), 3))
        self._emit(records.dumps((CDR_RECORD, end_reason, end, code, reason, setup, answer)))

    def emit(self, row: tuple | dict) -> None:
        self._emit(records.dumps(row))

    def _emit(self, data: bytes) -> None:
        if not self.journal.record(data):
            self.stats.inc(RECORDS_DROPPED.base)


# the party columns a CDR takes from its dialog's records, as they are
_CDR_COPIED = ("callid", "from_tag", "to_tag") + PARTY_FIELDS


def cdr_row(info: dict, end_reason: str, end: float) -> dict:
    """The `acc_cdrs` row of a tracked dialog (`info`: kampx/dialog.py's record) that ended
    at `end`."""
    answered = info.get("answered")
    start = answered if answered is not None else end
    row = {
        "t": "acc_cdrs",
        "start_time": start,
        "end_time": end,
        "duration": round(max(0.0, end - start), 3),
        "setup_time": info.get("setup", start),
        "end_reason": end_reason,
        "sip_code": info.get("code", 0),
        "sip_reason": info.get("reason", ""),
    }
    for name in _CDR_COPIED:
        row[name] = info.get(name, "")
    return row


def decode_record(data: bytes) -> dict | None:
    """A journal's accounting record as its row: a transaction's row as emitted, a CDR
    made from the dialog's records (`Accounting.ended`); None when it is not one."""
    try:
        record = records.loads(data)
        if isinstance(record, tuple) and len(record) == 1 + len(ROW_FIELDS):
            if record[0] == ROW_RECORD:
                return dict(zip(ROW_FIELDS, record[1:]))
        if isinstance(record, tuple) and len(record) == 7 and record[0] == CDR_RECORD:
            _, end_reason, end, code, reason, setup, answer = record
            info = decode_dialog(setup, answer)
            if code:
                info["code"], info["reason"] = code, reason
            return cdr_row(info, end_reason, end)
    except (EOFError, ValueError, TypeError):
        return None
    return record if isinstance(record, dict) else None


def record_columns(data: bytes) -> tuple[str, list] | None:
    """A journal's accounting record as (table, its values in the table's column order:
    kampx/db/base.py's ACC_TABLE_COLUMNS), what the db writer inserts: decode_record's row
    without the dict on the way. None when it is not one."""
    try:
        record = records.loads(data)
    except (EOFError, ValueError, TypeError):
        return None
    if type(record) is tuple:
        if len(record) == 1 + len(ROW_FIELDS) and record[0] == ROW_RECORD:
            if record[1] in _ROW_TABLES:  # ROW_FIELDS after "t" are those tables' columns
                return record[1], list(record[2:])
            return None
        if len(record) == 7 and record[0] == CDR_RECORD:
            cdr = _cdr_columns(record)
            if cdr is not None:
                return "acc_cdrs", cdr
    row = decode_record(data)  # a dict (an older writer), a shed dialog record, or nothing
    return acc_columns(row) if row is not None else None


_ROW_TABLES = ("acc", "missed_calls")
# where the columns a CDR copies are in the setup record, and those the answer record
# overrides (its value wins, as in kampx/dialog_table.py's decode)
_CDR_FROM_SETUP = tuple(SETUP_FIELDS.index(name) for name in _CDR_COPIED)
_CDR_FROM_ANSWER = tuple(
    (k, ANSWER_FIELDS.index(name)) for k, name in enumerate(_CDR_COPIED) if name in ANSWER_FIELDS
)
_SETUP_AT = SETUP_FIELDS.index("setup")
_ANSWERED_AT = ANSWER_FIELDS.index("answered")
_CODE_AT = ANSWER_FIELDS.index("code")
_REASON_AT = ANSWER_FIELDS.index("reason")


def _cdr_columns(record: tuple) -> list | None:
    """cdr_row's values for a CDR record whose dialog records are both in the compact form
    (None otherwise: decode_record's dict path reads the rest), in the order of
    ACC_CDRS_COLUMNS: the four times, the copied columns, sip_code, sip_reason, end_reason."""
    _, end_reason, end, code, reason, setup_data, answer_data = record
    try:
        setup = records.loads(setup_data)
        answer = records.loads(answer_data) if answer_data else None
    except (EOFError, ValueError, TypeError):
        return None
    if type(setup) is not tuple or len(setup) != len(SETUP_FIELDS):
        return None
    copied = [setup[i] for i in _CDR_FROM_SETUP]
    start = None
    if answer is None:
        sip_code, sip_reason = 0, ""
    elif type(answer) is tuple and len(answer) == len(ANSWER_FIELDS):
        for k, i in _CDR_FROM_ANSWER:
            copied[k] = answer[i]
        start, sip_code, sip_reason = answer[_ANSWERED_AT], answer[_CODE_AT], answer[_REASON_AT]
    else:
        return None
    if code:
        sip_code, sip_reason = code, reason
    if start is None:
        start = end
    return [
        start,
        end,
        round(max(0.0, end - start), 3),
        setup[_SETUP_AT],
        *copied,
        sip_code,
        sip_reason,
        end_reason,
    ]


# -------------------------------------------------------------------------- the db writer --


class AccSink:
    """The db writer's side: the records the journal brings, into the database in batches
    ([acc] db: one transaction per drain, kept and retried while the database fails, up to
    MAX_PENDING) and, as they arrive, into [acc] log ("syslog", or a JSON-lines file that
    is reopened when logrotate moved it)."""

    MAX_PENDING = 500_000

    def __init__(self, cfg, stats=None):
        self.db = cfg.db
        self.target = cfg.log
        self.stats = stats
        self.rows: list[tuple[str, list]] = []  # (table, values in column order)
        self._file = None
        self._inode = None
        self._checked = 0.0

    def add(self, data: bytes) -> None:
        row = decode_record(data) if self.target or not self.db else None
        if self.target and row is not None:  # [acc] log: every record that decodes
            self._log(row)
        if not self.db:
            if row is None:
                self._count(RECORDS_DROPPED.base)
            elif row.get("t") in TABLES:
                self._count(RECORDS_WRITTEN.col(row["t"]))
            return
        columns = record_columns(data)  # the database's row: its columns, no dict on the way
        if columns is None:  # not a record, or of no accounting table
            self._count(RECORDS_DROPPED.base)
            return
        self.rows.append(columns)
        if len(self.rows) > self.MAX_PENDING:  # a database down for a long time
            del self.rows[0]
            self._count(RECORDS_DROPPED.base)

    def write(self, storage) -> int:
        """Insert the pending rows in one transaction (StorageError: they are kept)."""
        if not self.rows:
            return 0
        storage.acc.insert_columns(self.rows)
        n = len(self.rows)
        written = dict.fromkeys(TABLES, 0)
        for table, _ in self.rows:
            written[table] += 1
        for table, count in written.items():
            if count and self.stats is not None:
                self.stats.add(RECORDS_WRITTEN.col(table), count)
        self.rows = []
        return n

    def _count(self, col: int) -> None:
        if self.stats is not None:
            self.stats.inc(col)

    def _log(self, row: dict) -> None:
        line = json.dumps(row, separators=(",", ":"))
        if self.target == "syslog":
            syslog.syslog(syslog.LOG_INFO, "ACC: " + line)
            return
        try:
            f = self._open()
            f.write(line + "\n")
            f.flush()
        except OSError as e:
            self._count(RECORDS_DROPPED.base)
            log.error("accounting record not logged to %s: %s", self.target, e)
            self._file = None

    def _open(self):
        now = monotonic()
        if self._file is not None and now - self._checked >= 1.0:
            self._checked = now
            try:
                moved = os.stat(self.target).st_ino != self._inode
            except FileNotFoundError:
                moved = True
            if moved:  # rotated: a new file under the name
                self._file.close()
                self._file = None
        if self._file is None:
            self._file = open(self.target, "a", encoding="utf-8")  # noqa: SIM115
            self._inode = os.fstat(self._file.fileno()).st_ino
            self._checked = now
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
