"""The details of the dialogs a script tracks with dlg_manage(), in shared memory.

Why a second table next to the dialog index (kampx/dialog.py): the index answers "is this
in-dialog request part of a dialog of ours?" for every dialog, in 16 bytes; a tracked dialog
also needs who called whom, when it was answered, the contacts and route sets to end it
(`kampxctl dlg end`), and what its CDR says. Those live here, one 2 kB slot per dialog,
written by whichever process moves the dialog on: the worker that relayed the INVITE
(created, early, confirmed, failed), any worker (a BYE, a refresh), the timer (a timeout),
the control process (dlg end). A worker that crashes loses none of it.

Layout: a header of counters, then `nslots` slots (nslots > capacity, so probe windows stay
short). A slot is a 40-byte head (state, direction, the lengths of its two records, session
interval, key hash, expiry, answer time, the caller's and callee's CSeq) and two records:
what the INVITE said and what the 2xx said, each written once as a tuple (its addresses and
route sets lists) in kampx/_records.pyx's form (a quarter of marshal's time; marshal's format
for a shed dict).
A dialog's end (`take`) hands back the head's figures and the two records undecoded: the
worker that ends a call needs only its direction and answer time, and the db writer decodes
the records into the CDR. Slots are found
by the key hash with linear probing over at most PROBE slots; a freed slot becomes a
tombstone, turned back to free by the timer's sweep once the slot after it is free. Every
access holds one robust process-shared mutex (kampx._shm.SharedMutex: no system call when
free, taken over from a holder that died); dialogs are touched a few times per call. What a
call does to its slot (create, set_state, answer, refresh, take) runs in C
(kampx._shm.DialogSlots: the same layout, probing and lock, without a struct pack or a slice
per field); the timer's sweep and the control process's reads stay here.
"""

from __future__ import annotations

import marshal
import re
import struct
from collections.abc import Iterator

from kampx import _records as records
from kampx._shm import DialogSlots, SharedMutex
from kampx.memfd import SharedMemory

# slot states (the live ones are kampx.dialog's PENDING, EARLY, CONFIRMED)
FREE, TOMBSTONE = 0, 255
SLOT = 2048
HEADER = 4096  # counters (words below), then the slots from the next page
# state, direction (a byte the caller chooses), setup length, answer length, session interval
# (RFC 4028 Session-Expires, s; 0: the default lifetime), key hash, expiry (epoch s), answer
# time (epoch s; 0 before the 2xx), the caller's and the callee's highest CSeq
_HEAD = struct.Struct("<BBHHHQddII")
H_STATE, H_DIRECTION, H_NSETUP, H_NANSWER, H_SESSION, H_HASH, H_EXPIRES = range(7)
H_ANSWERED, H_CALLER_CSEQ, H_CALLEE_CSEQ = range(7, 10)
# the head's fields that change alone, read and written in place (offsets in the head)
O_DIRECTION = 1
O_LENGTHS = struct.calcsize("<BB")  # setup length, answer length
O_HASH = struct.calcsize("<BBHHH")
O_EXPIRES = struct.calcsize("<BBHHHQ")  # expiry, answer time
_U16X2 = struct.Struct("<HH")
_U64 = struct.Struct("<Q")
_F64X2 = struct.Struct("<dd")
SETUP_AT = _HEAD.size  # the INVITE's side, written once
ANSWER_AT = 1280  # the 2xx's side, written once
SETUP_MAX = ANSWER_AT - SETUP_AT
ANSWER_MAX = SLOT - ANSWER_AT
PROBE = 32
_NOT_FREE = re.compile(b"[^\\x00]")
# header words
W_COUNT, W_EARLY, W_CONFIRMED, W_FULL = range(4)
# what a dialog too big for its slot gives up first (it can then not be ended by kampx)
SHEDDABLE = ("caller_route", "callee_route", "caller_contact", "callee_contact", "from", "to")

# The two records as kampx/dialog.py writes them: tuples of these fields in this order (fewer
# bytes and less time than a dict, in kampx/_records.pyx's form); `decode` turns them into the
# dict every reader gets. A record too big for its slot is shed to a dict (`_encode`), which
# `decode` reads as it is, as it does any dict a caller of create()/answer() passes.
# The party columns (Kamailio's default log_extra), which acc (kampx/acc.py) writes too.
PARTY_FIELDS = (
    "src_user",
    "src_domain",
    "src_ip",
    "dst_ouser",
    "dst_user",
    "dst_domain",
    "direction",
)
SETUP_FIELDS = (
    "callid",
    "from_tag",
    "to_tag",
    "from",
    "to",
    "ruri",
    "caller_contact",
    "caller_addr",
    "socket",
    "caller_cseq",
    "setup",
) + PARTY_FIELDS
# session_expires last: left out of the dict when 0 (the 2xx set no session interval)
ANSWER_FIELDS = (
    "to_tag",
    "to",
    "callee_contact",
    "callee_addr",
    "callee_socket",
    "callee_route",
    "caller_route",
    "answered",
    "code",
    "reason",
    "session_expires",
)


def key_hash(k: bytes) -> int:
    """A 64-bit hash of a dialog key, the same in every process of one kampx (they are all
    forked from the supervisor, so they share Python's hash secret)."""
    return (hash(k) & 0xFFFFFFFFFFFFFFFF) or 1


class DialogTable:
    def __init__(self, capacity: int):
        self.capacity = max(1, capacity)
        self.nslots = self.capacity + self.capacity // 4 + PROBE
        self.shm = SharedMemory("dialogs", HEADER + self.nslots * SLOT)
        self.lock = SharedMutex()
        self.mm = self.shm.mm
        self.words = self.shm.words(64)
        self.nbytes = self.shm.nbytes
        # the per-call operations, in C over the same bytes and lock (kampx/_shm.pyx)
        self.slots = DialogSlots(
            self.mm, self.lock, self.capacity, self.nslots, HEADER, SLOT, SETUP_AT, ANSWER_AT, PROBE
        )

    # ---------------------------------------------------------------- slots ---------------
    # A dialog is two records: what its INVITE said (setup), what its 2xx said
    # (answer), each written once; its state, expiry and CSeqs change in the head alone.

    def _head(self, i: int) -> tuple:
        return _HEAD.unpack_from(self.mm, HEADER + i * SLOT)

    def _records(self, i: int, head: tuple) -> tuple[bytes, bytes]:
        off = HEADER + i * SLOT
        setup = self.mm[off + SETUP_AT : off + SETUP_AT + head[H_NSETUP]]
        answer = self.mm[off + ANSWER_AT : off + ANSWER_AT + head[H_NANSWER]]
        return setup, answer

    def _info(self, i: int) -> dict:
        head = self._head(i)
        info = decode(*self._records(i, head))
        info["caller_cseq"] = max(head[H_CALLER_CSEQ], info.get("caller_cseq", 0))
        info["callee_cseq"] = head[H_CALLEE_CSEQ]
        return info

    def _set_state(self, i: int, state: int) -> None:
        self.mm[HEADER + i * SLOT] = state

    def _find(self, h: int) -> int:
        mm, n = self.mm, self.nslots
        i = h % n
        for _ in range(PROBE):
            off = HEADER + i * SLOT
            state = mm[off]
            if state == FREE:
                return -1
            if state != TOMBSTONE and _U64.unpack_from(mm, off + O_HASH)[0] == h:
                return i
            i = i + 1 if i + 1 < n else 0
        return -1

    def _count(self, state: int, delta: int) -> None:
        w = self.words
        w[W_COUNT] += delta
        if state == 2:
            w[W_EARLY] += delta
        elif state == 3:
            w[W_CONFIRMED] += delta

    # ---------------------------------------------------------------- the API -------------

    def create(
        self, k: bytes, state: int, expires: float, info: tuple | dict, direction: int = 0
    ) -> bool:
        """Track dialog `k` (`info`: what its INVITE said, SETUP_FIELDS' values or a dict;
        `direction`: a byte `take` gives back); False when the table is full (the call goes
        on untracked)."""
        data = _encode(info, SETUP_MAX, SETUP_FIELDS)
        return self.slots.create(key_hash(k), state, expires, data, direction)

    def set_state(self, k: bytes, state: int, expires: float) -> bool:
        """Dialog `k` moves to `state` (EARLY), to end at `expires`; False if untracked."""
        return self.slots.set_state(key_hash(k), state, expires)

    def answer(
        self,
        k: bytes,
        state: int,
        expires: float,
        fields: tuple | dict,
        session_s: int = 0,
        answered: float = 0.0,
    ) -> bool:
        """Dialog `k` was answered at `answered` (epoch s): what its 2xx said (`fields`:
        ANSWER_FIELDS' values or a dict), its new state and end, its session interval
        (`session_s`, RFC 4028; 0: none)."""
        data = _encode(fields, ANSWER_MAX, ANSWER_FIELDS)
        return self.slots.answer(key_hash(k), state, expires, data, session_s, answered)

    def refresh(
        self, k: bytes, now: float, lifetime: float, caller: bool, cseq: int, session: bool
    ) -> bool:
        """An in-dialog request of `k`: the sender's (the caller's when `caller`) highest
        CSeq is remembered (a BYE kampx sends must be above it) and the dialog lives on:
        `lifetime` more seconds, or its session interval when it has one and the request
        refreshes the session (`session`: a re-INVITE or UPDATE, RFC 4028)."""
        return self.slots.refresh(
            key_hash(k), now, lifetime, caller, min(max(cseq, 0), 0xFFFFFFFF), session
        )

    def take(self, k: bytes) -> tuple[int, int, float, bytes, bytes] | None:
        """Stop tracking `k`: (state, direction, answer time or 0, setup record, answer
        record), the records undecoded (`decode`); None when it was not tracked (or
        another process took it first: exactly one caller gets a dialog's end)."""
        return self.slots.take(key_hash(k))

    def remove(self, k: bytes) -> tuple[int, dict] | None:
        """As `take`, decoded: (state, info)."""
        taken = self.take(k)
        if taken is None:
            return None
        return taken[0], decode(taken[3], taken[4])

    def _free(self, i: int) -> tuple[int, int, float, bytes, bytes]:
        mm, off = self.mm, HEADER + i * SLOT
        state, direction = mm[off], mm[off + O_DIRECTION]
        n_setup, n_answer = _U16X2.unpack_from(mm, off + O_LENGTHS)
        answered = _F64X2.unpack_from(mm, off + O_EXPIRES)[1]
        setup = mm[off + SETUP_AT : off + SETUP_AT + n_setup]
        answer = mm[off + ANSWER_AT : off + ANSWER_AT + n_answer]
        mm[off] = TOMBSTONE
        self._count(state, -1)
        return state, direction, answered, setup, answer

    def get(self, k: bytes) -> tuple[int, float, dict] | None:
        with self.lock:
            i = self._find(key_hash(k))
            if i < 0:
                return None
            head = self._head(i)
            return head[H_STATE], head[H_EXPIRES], self._info(i)

    def _used(self) -> Iterator[int]:
        """Slots not free, from one strided read of every state byte (no lock: a hint)."""
        states = self.mm[HEADER : HEADER + self.nslots * SLOT : SLOT]
        for m in _NOT_FREE.finditer(states):
            yield m.start()

    def expire(self, now: float) -> list[tuple[int, int, float, bytes, bytes]]:
        """Remove and return (as `take`) every dialog whose expiry passed (the timer's
        sweep), and turn tombstones followed by a free slot back into free slots."""
        out = []
        for i in sorted(self._used(), reverse=True):  # a tombstone's successor first
            head = self._head(i)  # unlocked: a hint, checked again under the lock
            state, expires = head[H_STATE], head[H_EXPIRES]
            if state != TOMBSTONE and expires > now:
                continue
            if state == TOMBSTONE and self._head((i + 1) % self.nslots)[H_STATE] != FREE:
                continue
            with self.lock:
                head = self._head(i)
                state = head[H_STATE]
                if state != TOMBSTONE and state != FREE and head[H_EXPIRES] <= now:
                    out.append(self._free(i))
                    state = TOMBSTONE
                if state == TOMBSTONE and self._head((i + 1) % self.nslots)[H_STATE] == FREE:
                    self._set_state(i, FREE)
        return out

    def entries(self) -> Iterator[tuple[int, float, dict]]:
        """(state, expiry, info) of every tracked dialog (a snapshot per slot)."""
        for i in self._used():
            with self.lock:
                head = self._head(i)
                if head[H_STATE] in (FREE, TOMBSTONE):
                    continue
                info = self._info(i)
            yield head[H_STATE], head[H_EXPIRES], info

    def counts(self) -> tuple[int, int, int, int]:
        """(tracked, early, confirmed, refused because full)."""
        w = self.words
        return w[W_COUNT], w[W_EARLY], w[W_CONFIRMED], w[W_FULL]


def decode(setup: bytes, answer: bytes = b"") -> dict:
    """A dialog's details from its two records (what `take` gives back)."""
    info = _decode(setup, SETUP_FIELDS)
    if answer:
        info.update(_decode(answer, ANSWER_FIELDS))
    return info


def _decode(data: bytes, fields: tuple[str, ...]) -> dict:
    try:
        info = records.loads(data)
    except (EOFError, ValueError, TypeError):  # a writer died halfway through the slot
        return {}
    if isinstance(info, tuple) and len(info) == len(fields):
        return _as_dict(info, fields)
    return info if isinstance(info, dict) else {}


def _as_dict(values: tuple, fields: tuple[str, ...]) -> dict:
    info = dict(zip(fields, values))
    if not info.get("session_expires", 1):
        del info["session_expires"]
    return info


def _encode(info: tuple | dict, room: int, fields: tuple[str, ...]) -> bytes:
    data = records.dumps(info)
    if len(data) <= room:
        return data
    if isinstance(info, tuple):  # too big: shed by name, as a dict
        info = _as_dict(info, fields)
    for name in SHEDDABLE:  # keep what the CDR needs
        if info.pop(name, None) is not None:
            info["partial"] = True
            data = marshal.dumps(info)
            if len(data) <= room:
                return data
    for cut in (200, 48):  # pathological: every string shortened
        data = marshal.dumps({k: (v[:cut] if isinstance(v, str) else v) for k, v in info.items()})
        if len(data) <= room:
            break
    return data
