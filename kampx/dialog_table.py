"""The details of the dialogs a script tracks with dlg_manage(), in shared memory.

Why a second table next to the dialog index (kampx/dialog.py): the index answers "is this
in-dialog request part of a dialog of ours?" for every dialog, in 16 bytes; a tracked dialog
also needs who called whom, when it was answered, the contacts and route sets to end it
(`kampxctl dlg end`), and what its CDR says. Those live here, one 2 kB slot per dialog,
written by whichever process moves the dialog on: the worker that relayed the INVITE
(created, early, confirmed, failed), any worker (a BYE, a refresh), the timer (a timeout),
the control process (dlg end). A worker that crashes loses none of it.

Layout: a header of counters, then `nslots` slots (nslots > capacity, so probe windows stay
short). A slot is a 32-byte head (state, data length, key hash, expiry) and the dialog as
JSON. Slots are found by the key hash with linear probing over at most PROBE slots; a freed
slot becomes a tombstone, turned back to free by the timer's sweep once the slot after it is
free. Every access holds the memfd writers' lock (kampx/memfd.py: a POSIX lock, released by
the kernel when its holder dies); dialogs are touched a few times per call, not per packet.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Callable, Iterator

from kampx.memfd import SharedMemory

# slot states (the live ones are kampx.dialog's PENDING, EARLY, CONFIRMED)
FREE, TOMBSTONE = 0, 255
SLOT = 2048
HEADER = 4096  # counters (words below), then the slots from the next page
_HEAD = struct.Struct("<BxH4xQd")  # state, data length, key hash, expiry (epoch s)
DATA_MAX = SLOT - _HEAD.size
PROBE = 32
_NOT_FREE = re.compile(b"[^\\x00]")
# header words
W_COUNT, W_EARLY, W_CONFIRMED, W_FULL = range(4)
# what a dialog too big for its slot gives up first (it can then not be ended by kampx)
SHEDDABLE = ("caller_route", "callee_route", "caller_contact", "callee_contact", "from", "to")


def key_hash(k: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(k, digest_size=8).digest(), "little") or 1


class DialogTable:
    def __init__(self, capacity: int):
        self.capacity = max(1, capacity)
        self.nslots = self.capacity + self.capacity // 4 + PROBE
        self.shm = SharedMemory("dialogs", HEADER + self.nslots * SLOT)
        self.words = self.shm.words(64)
        self.nbytes = self.shm.nbytes

    # ---------------------------------------------------------------- slots ---------------

    def _head(self, i: int) -> tuple[int, int, int, float]:
        state, n, h, expires = _HEAD.unpack_from(self.shm.mm, HEADER + i * SLOT)
        return state, n, h, expires

    def _load(self, i: int, n: int) -> dict:
        off = HEADER + i * SLOT + _HEAD.size
        return json.loads(self.shm.mm[off : off + n])

    def _store(self, i: int, state: int, h: int, expires: float, info: dict) -> None:
        data = _encode(info)
        off = HEADER + i * SLOT
        self.shm.mm[off + _HEAD.size : off + _HEAD.size + len(data)] = data
        _HEAD.pack_into(self.shm.mm, off, state, len(data), h, expires)

    def _set_state(self, i: int, state: int) -> None:
        self.shm.mm[HEADER + i * SLOT] = state

    def _find(self, h: int) -> int:
        home = h % self.nslots
        for j in range(PROBE):
            i = (home + j) % self.nslots
            state, _, sh, _ = self._head(i)
            if state == FREE:
                return -1
            if state != TOMBSTONE and sh == h:
                return i
        return -1

    def _count(self, state: int, delta: int) -> None:
        w = self.words
        w[W_COUNT] += delta
        if state == 2:
            w[W_EARLY] += delta
        elif state == 3:
            w[W_CONFIRMED] += delta

    # ---------------------------------------------------------------- the API -------------

    def create(self, k: bytes, state: int, expires: float, info: dict) -> bool:
        """Track dialog `k`; False when the table is full (the call goes on untracked)."""
        h = key_hash(k)
        home = h % self.nslots
        with self.shm.writer():
            if self.words[W_COUNT] >= self.capacity:
                self.words[W_FULL] += 1
                return False
            for j in range(PROBE):
                i = (home + j) % self.nslots
                if self._head(i)[0] in (FREE, TOMBSTONE):
                    self._store(i, state, h, expires, info)
                    self._count(state, 1)
                    return True
            self.words[W_FULL] += 1
            return False

    def update(
        self, k: bytes, change: Callable[[int, dict], tuple[int, float] | None]
    ) -> dict | None:
        """Run change(state, info) on dialog `k` under the lock: it edits `info` in place
        and returns the new (state, expiry), or None to leave the dialog as it was. Returns
        the info (after the change), None when `k` is not tracked."""
        h = key_hash(k)
        with self.shm.writer():
            i = self._find(h)
            if i < 0:
                return None
            state, n, _, _ = self._head(i)
            info = self._load(i, n)
            new = change(state, info)
            if new is not None:
                self._store(i, new[0], h, new[1], info)
                if new[0] != state:
                    self._count(state, -1)
                    self._count(new[0], 1)
            return info

    def remove(self, k: bytes) -> tuple[int, dict] | None:
        """Stop tracking `k`: its (state, info), None when it was not tracked (or another
        process removed it first: exactly one caller gets a dialog's end)."""
        h = key_hash(k)
        with self.shm.writer():
            i = self._find(h)
            if i < 0:
                return None
            return self._free(i)

    def _free(self, i: int) -> tuple[int, dict]:
        state, n, _, _ = self._head(i)
        info = self._load(i, n)
        self._set_state(i, TOMBSTONE)
        self._count(state, -1)
        return state, info

    def get(self, k: bytes) -> tuple[int, float, dict] | None:
        with self.shm.writer():
            i = self._find(key_hash(k))
            if i < 0:
                return None
            state, n, _, expires = self._head(i)
            return state, expires, self._load(i, n)

    def _used(self) -> Iterator[int]:
        """Slots not free, from one strided read of every state byte (no lock: a hint)."""
        states = self.shm.mm[HEADER : HEADER + self.nslots * SLOT : SLOT]
        for m in _NOT_FREE.finditer(states):
            yield m.start()

    def expire(self, now: float) -> list[tuple[int, dict]]:
        """Remove and return every dialog whose expiry passed (the timer's sweep), and
        turn tombstones followed by a free slot back into free slots."""
        out = []
        for i in sorted(self._used(), reverse=True):  # a tombstone's successor first
            with self.shm.writer():
                state, _, _, expires = self._head(i)
                if state != TOMBSTONE and state != FREE and expires <= now:
                    out.append(self._free(i))
                    state = TOMBSTONE
                if state == TOMBSTONE and self._head((i + 1) % self.nslots)[0] == FREE:
                    self._set_state(i, FREE)
        return out

    def entries(self) -> Iterator[tuple[int, float, dict]]:
        """(state, expiry, info) of every tracked dialog (a snapshot per slot)."""
        for i in self._used():
            with self.shm.writer():
                state, n, _, expires = self._head(i)
                if state in (FREE, TOMBSTONE):
                    continue
                info = self._load(i, n)
            yield state, expires, info

    def counts(self) -> tuple[int, int, int, int]:
        """(tracked, early, confirmed, refused because full)."""
        w = self.words
        return w[W_COUNT], w[W_EARLY], w[W_CONFIRMED], w[W_FULL]


def _encode(info: dict) -> bytes:
    data = json.dumps(info, separators=(",", ":")).encode()
    if len(data) <= DATA_MAX:
        return data
    for name in SHEDDABLE:  # keep what the CDR needs
        if info.pop(name, None) is not None:
            info["partial"] = True
            data = json.dumps(info, separators=(",", ":")).encode()
            if len(data) <= DATA_MAX:
                return data
    for cut in (200, 48):  # pathological: every string shortened
        data = json.dumps(
            {k: (v[:cut] if isinstance(v, str) else v) for k, v in info.items()},
            separators=(",", ":"),
        ).encode()
        if len(data) <= DATA_MAX:
            break
    return data
