"""The dialogs kampx has seen established, and the in-dialog check that rests on them.

Why: a request with a To-tag whose first Route names the proxy is relayed to the next Route or
the Request-URI (RFC 3261 16.4 loose routing), so without state anyone can use the proxy as
an open relay by inventing a dialog: a forged To-tag and `Route: <sip:PROXY;lr>` in front of
any destination. Kamailio's stock configuration has that hole; production ones close it with
the dialog module. kampx closes it by default: it relays an in-dialog request only when the
dialog it belongs to is one kampx Record-Routed and saw established.

What is recorded: when tm relays a dialog-creating request (INVITE, SUBSCRIBE, REFER) that
the script Record-Routed, the pair (Call-ID, caller's From tag) goes into the shared dialog
index (kampx._shm.KeyIndex, every worker sees it) as PENDING; a reply relayed upstream with a
To-tag makes it EARLY (1xx) or CONFIRMED (2xx); a final failure removes it; a BYE makes it
ENDED, still admitted for `linger_s` so that crossing BYEs and retransmissions go through.
SUBSCRIBE and REFER are EARLY from the start: a NOTIFY may overtake their 2xx (RFC 6665).

The check (admit): an in-dialog request is admitted when (Call-ID, From tag) is a dialog
(the caller's side sends it) or (Call-ID, To tag) is one (the callee's side), in state EARLY,
CONFIRMED or ENDED. A blind attacker would need a live call's Call-ID and caller tag.
loose_route() refuses to route a request that fails it (the built-in script then answers
404 "Not here"), and t_relay() refuses to relay any To-tagged request that fails it
(403), whatever the script did. [dialog] enforce = false restores Kamailio's behaviour.

Surviving a restart: CONFIRMED dialogs (and their refreshes and ends) are journaled through a
pipe the supervisor creates before fork (every worker writes, the db writer reads; records
of at most PIPE_BUF bytes are written whole) into the database's `dialog` table, loaded into
the index at start. A db writer that is being respawned loses nothing (the pipe holds the
records); a full pipe drops a record (counted in dialog.journal_dropped), which costs that
dialog its in-dialog requests after a restart, never before.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import struct
from collections import deque
from time import sleep

from kampx import stats as S
from kampx._clock import monotonic, time
from kampx._cparse import SipParseError, first_contact_uri, record_route_values
from kampx._records import split_journal
from kampx.acc import DIRECTIONS, direction_name

DIALOGS_PROCESSED = S.family(
    "dialog",
    "processed_dialogs",
    S.KIND_COUNTER,
    "Dialogs started by a Record-Routed request kampx relayed",
)
DIALOGS_CONFIRMED = S.family(
    "dialog", "confirmed_dialogs", S.KIND_COUNTER, "Dialogs confirmed by a 2xx kampx relayed"
)
DIALOGS_FAILED = S.family(
    "dialog", "failed_dialogs", S.KIND_COUNTER, "Dialogs whose creating request ended without a 2xx"
)
DIALOGS_ENDED = S.family("dialog", "ended_dialogs", S.KIND_COUNTER, "Dialogs ended by a BYE")
DIALOG_REJECTED = S.family(
    "dialog",
    "rejected_requests",
    S.KIND_COUNTER,
    "In-dialog requests refused: not in a dialog kampx established "
    "(forged To-tag, or a dialog that ended or expired)",
)
DIALOG_TABLE_FULL = S.family(
    "dialog",
    "table_full",
    S.KIND_COUNTER,
    "Dialog-creating requests refused with 503: the dialog index is full",
)
DIALOGS_UNTRACKED = S.family(
    "dialog",
    "tracked_full",
    S.KIND_COUNTER,
    "Dialogs dlg_manage() could not track: [dialog] tracked_capacity reached",
)
DIALOG_JOURNAL_DROPPED = S.family(
    "dialog",
    "journal_dropped",
    S.KIND_COUNTER,
    "Dialog changes not persisted (journal pipe full, or the database down too long)",
)
STATISTICS = (
    DIALOGS_PROCESSED,
    DIALOGS_CONFIRMED,
    DIALOGS_FAILED,
    DIALOGS_ENDED,
    DIALOG_REJECTED,
    DIALOG_TABLE_FULL,
    DIALOG_JOURNAL_DROPPED,
    DIALOGS_UNTRACKED,
)

log = logging.getLogger("kampx.dialog")

# index values (Kamailio's dialog states, in their order)
PENDING, EARLY, CONFIRMED, ENDED = 1, 2, 3, 4
CREATING = {"INVITE": PENDING, "SUBSCRIBE": EARLY, "REFER": EARLY}

TRACKED = 8  # in an index value: the dialog's details are in the DialogTable (dlg_manage())
STATE = 7  # an index value's state bits

OP_PUT, OP_DELETE, OP_ACC = 1, 2, 3  # OP_ACC: an accounting record (kampx/acc.py)
DIRECTION_INDEX = {name: i for i, name in enumerate(DIRECTIONS)}  # the byte a slot keeps
LOCAL = DIRECTION_INDEX["local"]
NO_PARTIES = ("", "", "", "", "", "", "local")  # a dialog nothing accounts (PARTY_FIELDS)
_RECORD = struct.Struct("!BBdH")  # op, state, timeout (epoch seconds), key length
_ACC_PREFIX = _RECORD.pack(OP_ACC, 0, 0.0, 0)[:-2]  # an accounting record's head, but its length
_U16 = struct.Struct("!H")
MAX_KEY = 2048  # longer Call-ID + tag pairs are not journaled
PIPE_BUF = select.PIPE_BUF  # a pipe write up to this size is atomic
MAX_DATA = PIPE_BUF - _RECORD.size  # the largest accounting record
MAX_HELD = 4000  # chunks a process keeps while the pipe is full (16 MB at worst)
PIPE_SIZE = 1 << 20  # ~14 000 records while the db writer restarts
FULL_LOG_EVERY_S = 10.0
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def setup_ttl(cfg) -> float:
    """How long a dialog may stay in setup (PENDING, EARLY): as long as an INVITE
    transaction can live, and a little more."""
    tm = cfg.tm
    return (tm.fr_inv_timer_ms + 64 * tm.t1_ms) / 1000 + 10


def key(call_id: str, tag: str) -> bytes:
    return f"{call_id}\0{tag}".encode("utf-8", "surrogateescape")


def split_key(k: bytes) -> tuple[str, str]:
    call_id, _, tag = k.decode("utf-8", "surrogateescape").partition("\0")
    return call_id, tag


# -------------------------------------------------------------------------- the journal --


def journal_pipe() -> tuple[int, int]:
    """The journal's (read fd, write fd), both non-blocking; created before fork."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # the default 64 kB: fewer records survive a db writer restart
    return r, w


def read_journal(
    fd: int, leftover: bytes = b""
) -> tuple[list[tuple[int, bytes, int, float]], bytes]:
    """Every whole record waiting in the pipe: ([(op, key, state, timeout)], the bytes of a
    record not yet complete, to pass back next time)."""
    chunks = [leftover]
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        except InterruptedError:
            continue
        if not data:
            break
        chunks.append(data)
    buf = b"".join(chunks)
    out, pos = split_journal(buf)  # in C (kampx/_records.pyx): the frames are _RECORD's
    return out, buf[pos:]


class Journal:
    """A process's end of the journal. Records are kept until `flush()`, which the worker
    loop calls once per round of datagrams: one write() per PIPE_BUF bytes of records
    instead of one per record (a pipe write of at most PIPE_BUF is atomic, so records of
    several processes never interleave). A full pipe (the db writer busy or restarting)
    keeps the chunks here for the next flush, up to MAX_HELD; past it the oldest go
    (counted as dialog.journal_dropped)."""

    __slots__ = ("fd", "stats", "pending", "size", "held")

    def __init__(self, fd: int, stats):
        self.fd = fd
        self.stats = stats
        self.pending: list[bytes] = []
        self.size = 0
        self.held: deque[tuple[bytes, int]] = deque()  # (chunk, records) the pipe refused

    def write(self, op, k: bytes, state=0, timeout: float = 0.0) -> bool:
        """Queue a record; False when it is too large to journal."""
        if len(k) > (MAX_DATA if op == OP_ACC else MAX_KEY):
            return False
        return self._queue(_RECORD.pack(op, state, timeout, len(k)) + k)

    def record(self, data: bytes) -> bool:
        """Queue an accounting record (OP_ACC, kampx/acc.py), its head prebuilt; False when
        it is too large to journal."""
        if len(data) > MAX_DATA:
            return False
        return self._queue(_ACC_PREFIX + _U16.pack(len(data)) + data)

    def _queue(self, rec: bytes) -> bool:
        if self.size + len(rec) > PIPE_BUF:
            self._seal()
        self.pending.append(rec)
        self.size += len(rec)
        return True

    def _seal(self) -> None:
        if self.pending:
            self.held.append((b"".join(self.pending), len(self.pending)))
            self.pending.clear()
            self.size = 0

    def flush(self) -> None:
        if not self.pending and not self.held:
            return
        self._seal()
        held = self.held
        while held:
            chunk, n = held[0]
            try:
                os.write(self.fd, chunk)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EPIPE, errno.EBADF):
                    raise
                if e.errno != errno.EAGAIN:
                    held.clear()  # nobody will ever read it
                    self.stats.add(DIALOG_JOURNAL_DROPPED.base, n)
                break
            held.popleft()
        while len(held) > MAX_HELD:
            self.stats.add(DIALOG_JOURNAL_DROPPED.base, held.popleft()[1])

    def drain(self, timeout: float) -> None:
        """Flush until everything is in the pipe or `timeout` passed (a process exiting)."""
        deadline = monotonic() + timeout
        self.flush()
        while self.held and monotonic() < deadline:
            sleep(0.01)
            self.flush()


# -------------------------------------------------------------------------- the check --


class Dialogs:
    """One process's view of the shared dialog index, and of the details of the dialogs
    tracked with dlg_manage() (`table`, kampx/dialog_table.py; None: no tracking) whose
    ends make CDRs through `acc` (kampx/acc.py). `ttl_setup` bounds a PENDING or EARLY
    entry (as long as an INVITE transaction can live)."""

    def __init__(self, index, journal: Journal, cfg, ttl_setup: float, stats, table=None, acc=None):
        self.index = index
        self.journal = journal
        self.enforce = cfg.enforce
        self.lifetime = float(cfg.lifetime_s)
        self.linger = float(cfg.linger_s)
        self.ttl_setup = ttl_setup
        self.stats = stats
        self.table = table
        self.acc = acc
        self._full_logged = -FULL_LOG_EVERY_S

    @classmethod
    def of(cls, shared, cfg, stats) -> Dialogs:
        """A process's handle on the shared dialogs, with its own journal and accounting."""
        from kampx.acc import Accounting

        journal = Journal(shared.dialog_journal_w, stats)
        return cls(
            shared.dialogs,
            journal,
            cfg.dialog,
            setup_ttl(cfg),
            stats,
            table=shared.dialog_table,
            acc=Accounting(cfg.acc, journal, stats),
        )

    # -- the dialog-creating side (tm calls these for its server transactions) --

    def start(self, msg):
        """Record the dialog a relay of `msg` starts: (key, state); None when it starts
        none (not a dialog-creating method, no Record-Route of ours, already in a dialog);
        (None, 0) when the index is full (the request must not be relayed: its in-dialog
        requests could not be told from forged ones). A dialog-creating request marked
        with dlg_manage() is tracked too (state | TRACKED)."""
        if not msg.rr_added or msg.has_to_tag:
            return None
        state = CREATING.get(msg.method)
        if state is None:
            return None
        k = msg._dialog_key()
        now = monotonic()
        if msg.dlg_manage and self.table is not None and self._track(k, msg, state):
            state |= TRACKED
        if not self.index.put(k, state, now, now + self.ttl_setup):
            if state & TRACKED:
                self.table.remove(k)
            self.stats.inc(DIALOG_TABLE_FULL.base)
            if now >= self._full_logged + FULL_LOG_EVERY_S:
                self._full_logged = now
                log.warning("the dialog index is full ([dialog] capacity): new calls get 503")
            return None, 0
        self.stats.inc(DIALOGS_PROCESSED.base)
        return k, state

    def _track(self, k: bytes, msg, state) -> bool:
        now = time()
        # kampx/dialog_table.py's SETUP_FIELDS, in order
        info = (
            msg._call_id(),
            msg._from_tag() or "",
            "",
            msg._header("from"),
            msg._header("to"),
            msg.original_ruri,
            first_contact_uri(msg),
            list(msg.src),
            msg.lsock.index,
            msg.cseq_num or 0,
            now,
        )
        if self.acc is not None:
            parties = self.acc.party_values(msg)
            direction = DIRECTION_INDEX.get(parties[-1], LOCAL)  # direction comes last
        else:
            parties, direction = NO_PARTIES, LOCAL  # when nothing accounts the call
        if self.table.create(k, state, now + self.ttl_setup, info + parties, direction):
            return True
        self.stats.inc(DIALOGS_UNTRACKED.base)
        return False

    def on_reply(self, k: bytes, state, code, reply) -> int:
        """Reply `reply` (code `code`) relayed upstream for the transaction that started
        dialog `k` (in `state`); returns the dialog's new state. Called before the reply is
        sent, so the caller's ACK or PRACK always finds the dialog."""
        tracked = state & TRACKED
        if code < 200:
            if code > 100 and reply.has_to_tag and state & STATE == PENDING:
                now = monotonic()
                self.index.put(k, EARLY | tracked, now, now + self.ttl_setup)
                if tracked:
                    self.table.set_state(k, EARLY, time() + self.ttl_setup)
                return EARLY | tracked
            return state
        if code < 300:
            if state & STATE != CONFIRMED:
                self._confirm(k, monotonic(), tracked)
                self.stats.inc(DIALOGS_CONFIRMED.base)
                if tracked:
                    self._answered(k, code, reply)
            return CONFIRMED | tracked
        return state

    def _answered(self, k: bytes, code, reply) -> None:
        now = time()
        try:
            rrs = record_route_values(reply)
        except SipParseError:
            # a callee's Record-Route that does not parse (a reply's are checked only when
            # read): the 2xx still goes to the caller, as Kamailio relays it; the record has
            # no route sets
            rrs = []
        at, below = _own_record_route(rrs, reply.lsock)
        session_s = _session_interval(reply)
        # kampx/dialog_table.py's ANSWER_FIELDS, in order
        fields = (
            reply._to_tag() or "",
            reply._header("to"),
            first_contact_uri(reply),
            list(reply.src),
            reply.lsock.index,  # the callee's side may be another transport
            # RFC 3261 12.1: the callee's side of us is the Record-Routes above ours,
            # nearest first; the caller's side those below
            rrs[:at][::-1] if at >= 0 else [],
            rrs[below:] if at >= 0 else [],
            now,
            code,
            reply._reason() or "",
            session_s,
        )
        expires = now + (session_s or self.lifetime)
        self.table.answer(k, CONFIRMED, expires, fields, session_s, now)

    def failed(self, k: bytes, state, code=0, reason: str = "") -> None:
        """The transaction that started dialog `k` ended without a 2xx (final `code`)."""
        if state & STATE != CONFIRMED:
            self.index.discard(k)
            self.stats.inc(DIALOGS_FAILED.base)
            if state & TRACKED:
                self.end(k, "canceled" if code == 487 else "failed", code, reason)

    def end(self, k: bytes, why: str, code=0, reason: str = "") -> str | None:
        """Stop tracking dialog `k` and write its CDR (`why`: caller, callee, timeout,
        failed, canceled); returns its direction, None when it was not tracked (or another
        process ended it first). Its records are not decoded here (the db writer does)."""
        taken = self._end(k, why, code, reason)
        if taken is None:
            return None
        return direction_name(taken[1])

    def end_info(self, k: bytes, why: str) -> dict | None:
        """As `end`, returning everything tracked of the dialog, each side's highest CSeq
        included (`kampxctl dlg end` sends its BYEs from it)."""
        tracked = self.table.get(k) if self.table is not None else None
        if self._end(k, why, 0, "") is None:
            return None
        return tracked[2] if tracked is not None else {}

    def _end(self, k: bytes, why: str, code, reason: str):
        taken = self.table.take(k) if self.table is not None else None
        if taken is not None and self.acc is not None:
            _, direction, answered, setup, answer = taken
            self.acc.ended(direction, answered, setup, answer, why, code, reason)
        return taken

    def _confirm(self, k: bytes, now: float, tracked=0) -> None:
        self.index.put(k, CONFIRMED | tracked, now, now + self.lifetime)
        self.journal.write(OP_PUT, k, CONFIRMED, time() + self.lifetime)

    # -- the in-dialog side --

    def admit(self, msg) -> bool:
        """Whether in-dialog request `msg` belongs to a dialog kampx established (see the
        module docstring); a BYE ends it, other requests (not ACK) refresh its lifetime.
        A refused request is counted. Always True with [dialog] enforce = false."""
        if msg.dialog_admitted:
            return True
        if not self.enforce:
            if self.table is not None and msg.method == "BYE":
                self._bye_untracked(msg)
            return True
        now = monotonic()
        k = msg._dialog_key()
        value = self.index.lookup(k, now)
        if value < 0 or value & STATE < EARLY:
            k = msg._dialog_key(True)
            value = self.index.lookup(k, now)
            if value < 0 or value & STATE < EARLY:
                self.stats.inc(DIALOG_REJECTED.base)
                return False
        msg.dialog_admitted = True
        state, tracked = value & STATE, value & TRACKED
        method = msg.method
        if method == "BYE":
            if state != ENDED:
                self.index.put(k, ENDED, now, now + self.linger)
                self.journal.write(OP_DELETE, k)
                self.stats.inc(DIALOGS_ENDED.base)
                if tracked:
                    direction = self.end(k, self._side(msg, k))
                    if direction is not None:  # the BYE's own record is the call's direction
                        msg.dlg_direction = direction
        elif state == CONFIRMED and method != "ACK":
            self._confirm(k, now, tracked)  # Kamailio resets a dialog's timeout likewise
            if tracked:
                self._refresh(k, msg)
        return True

    def _bye_untracked(self, msg) -> None:
        """[dialog] enforce = false: a BYE still ends the tracked dialog it names."""
        for tag in (msg.from_tag, msg.to_tag):
            k = key(msg.call_id or "", tag or "")
            if self.end(k, self._side(msg, k)) is not None:
                return

    @staticmethod
    def _side(msg, k: bytes) -> str:
        """Who sent in-dialog request `msg` of dialog `k`: "caller" or "callee"."""
        return "caller" if k == msg.dialog_key() else "callee"  # keyed by the From tag

    def _refresh(self, k: bytes, msg) -> None:
        """An in-dialog request of tracked dialog `k`: its lifetime starts again, and the
        sender's CSeq is remembered (a BYE kampx sends must be above it)."""
        caller = self._side(msg, k) == "caller"
        session = msg.method in ("INVITE", "UPDATE")
        self.table.refresh(k, time(), self.lifetime, caller, msg.cseq_num or 0, session)

    def known(self, call_id: str | None, tag: str | None) -> bool:
        """Whether (Call-ID, caller tag) is a dialog past its setup (for stray 2xx)."""
        value = self.index.lookup(key(call_id or "", tag or ""), monotonic())
        return value >= 0 and value & STATE >= EARLY

    def expire(self) -> int:
        """End every tracked dialog whose lifetime (or setup time) ran out: a CDR each
        ("timeout"; "lost" for one whose setup never finished: its worker died). The
        timer process calls this."""
        ended = self.table.expire(time()) if self.table is not None else []
        if self.acc is not None:
            for state, direction, answered, setup, answer in ended:
                why = "timeout" if state == CONFIRMED else "lost"
                self.acc.ended(direction, answered, setup, answer, why)
        return len(ended)


def _own_record_route(rrs: list[str], lsock) -> tuple[int, int]:
    """Where this proxy's Record-Route is in a 2xx's list (the socket the 2xx came in on:
    the one the INVITE left by), and where the caller's side starts after it: past both of
    ours when the INVITE crossed sockets (kampx/rr.py); (-1, 0) when it is not there."""
    if rrs and rrs[0] == lsock.rr_value:
        return 0, 1  # the common case: the callee's side Record-Routed nothing
    double = lsock.rr_double.decode()
    for i, r in enumerate(rrs):
        if r == lsock.rr_value:
            return i, i + 1
        if r == double:
            below = i + 1
            if below < len(rrs) and ";r2=on;lr>" in rrs[below]:
                below += 1  # the other of our two
            return i, below
    return -1, 0


def _session_interval(reply) -> int:
    """The session interval a 2xx sets (RFC 4028 Session-Expires: seconds, at least 90);
    0 when it sets none."""
    value = reply.header("session-expires") or reply.header("x")
    if not value:
        return 0
    try:
        seconds = int(value.split(";", 1)[0].strip())
    except ValueError:
        return 0
    return min(max(seconds, 90), 65535)


# -------------------------------------------------------------------------- start-up --


def load(index, rows, now_wall: float, now_mono: float) -> int:
    """Fill the index from the database's live dialogs ((call_id, from_tag, timeout) rows,
    timeout in epoch seconds); returns how many went in."""
    n = 0
    for call_id, tag, timeout in rows:
        if timeout > now_wall and index.put(
            key(call_id, tag), CONFIRMED, now_mono, now_mono + (timeout - now_wall)
        ):
            n += 1
    return n


class JournalWriter:
    """The db writer's side: applies journal records to the database's `dialog` table.
    Records that could not be written are kept (the latest per dialog) and retried."""

    MAX_PENDING = 500_000

    def __init__(self, fd: int, stats=None, acc_sink=None):
        self.fd = fd
        self.stats = stats
        self.acc_sink = acc_sink  # kampx.acc.AccSink: where OP_ACC records go
        self.leftover = b""
        self.pending: dict[bytes, tuple[int, int, float]] = {}  # key -> (op, state, timeout)
        self.written = 0

    def collect(self) -> int:
        """Read what the pipe holds into `pending`; returns how many records came."""
        records, self.leftover = read_journal(self.fd, self.leftover)
        for op, k, state, timeout in records:
            if op == OP_ACC:
                if self.acc_sink is not None:
                    self.acc_sink.add(k)
                continue
            self.pending.pop(k, None)  # re-inserted last: dict order = arrival order
            self.pending[k] = (op, state, timeout)
        while len(self.pending) > self.MAX_PENDING:  # a database down for a long time
            self.pending.pop(next(iter(self.pending)))
            if self.stats is not None:
                self.stats.inc(DIALOG_JOURNAL_DROPPED.base)
        return len(records)

    def write(self, storage) -> int:
        """Write `pending` in one transaction, then the accounting records; raises
        StorageError (what was not written is kept)."""
        n = self._write_dialogs(storage)
        if self.acc_sink is not None:
            n += self.acc_sink.write(storage)
        return n

    def _write_dialogs(self, storage) -> int:
        if not self.pending:
            return 0
        puts, deletes = [], []
        for k, (op, state, timeout) in self.pending.items():
            call_id, tag = split_key(k)
            if op == OP_PUT:
                puts.append((call_id, tag, state, timeout))
            else:
                deletes.append((call_id, tag))
        storage.dialogs.apply(puts, deletes)
        n = len(self.pending)
        self.pending.clear()
        self.written += n
        return n
