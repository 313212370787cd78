"""The DNS cache every kampx process shares (Kamailio's dns cache: dns.view, dns.delete_all).

One answer (positive or negative) per (name, type), kept for its TTL capped at
[dns] cache_max_ttl, so a name one worker resolved is known to all of them. Bounded: a fixed
number of slots made at start; a full bucket gives its soonest-expiring slot to a new answer.

Layout: a memfd mapping (anonymous shared memory that, unlike mmap(-1), has an fd for the
writers' lock): a header whose word 2 counts `clear()`s, then slots of SLOT_SIZE bytes in
buckets of WAYS. A slot: a sequence word (odd while a writer is in it), the key's hash, the
expiry (CLOCK_MONOTONIC seconds: system-wide), when it was stored, the key and the answer
(marshal). Readers never lock: they copy the slot and re-read its sequence word, seqlock
style, and take a torn or half-written slot for a miss. Writers (a worker that got an answer,
the ctl process clearing) serialise on a POSIX record lock of the memfd; one that dies in a
slot leaves its sequence odd, which the next writer, holding the lock, simply overwrites.

An answer stays in its slot after it expires until the slot is taken for another: when no
nameserver answers, the resolver may use it (`get_stale`, RFC 8767's serve-stale).

Each process also keeps the answers it used in a plain dict (`_memo`) until they expire or
the clear count moves: the answer a call needs costs a dict lookup, not a slot copy.
"""

from __future__ import annotations

import hashlib
import marshal
import struct
import time

from kampx.dns.rfc3263 import NODATA, NXDOMAIN, OK, Answer
from kampx.memfd import SharedMemory

SLOT_SIZE = 512
WAYS = 4
_MAGIC = 0x6B78444E  # "kxDN"
_HEADER = 64
_CLEAR_WORD = 2
# sequence, key hash, expires, stored, key length, data length
_SLOT = struct.Struct("<IxxxxQddHH")
_SEQ = struct.Struct("<I")
_ROOM = SLOT_SIZE - _SLOT.size
MEMO_MAX = 4096


class CacheEntry:
    """One cached answer as `dns show` lists it."""

    __slots__ = ("name", "qtype", "answer", "expires", "stored")

    def __init__(self, name, qtype, answer, expires, stored):
        self.name = name
        self.qtype = qtype
        self.answer = answer
        self.expires = expires
        self.stored = stored


def _key(name: str, qtype: str) -> bytes:
    return f"{qtype} {name}".encode()


def _hash(key: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") | 1


class DnsCache:
    """Construct before fork; use in any process after. `entries`: answers held at most."""

    def __init__(self, entries: int = 4096, max_ttl: int = 3600):
        self.buckets = max(1, (entries + WAYS - 1) // WAYS)
        self.max_ttl = max_ttl
        self.nbytes = _HEADER + self.buckets * WAYS * SLOT_SIZE
        self._shm = SharedMemory("dns-cache", self.nbytes)
        self._mm = self._shm.mm
        self._words = self._shm.words(_HEADER)
        struct.pack_into("<IIII", self._mm, 0, _MAGIC, 1, self.buckets, SLOT_SIZE)
        self._memo: dict[bytes, tuple[float, Answer]] = {}
        self._memo_clears = 0

    @property
    def capacity(self) -> int:
        return self.buckets * WAYS

    # -- readers ------------------------------------------------------------------------

    def get(self, name: str, qtype: str, now: float | None = None) -> Answer | None:
        """The answer cached for (name, type), with the TTL it has left; None when there is
        none live."""
        if now is None:
            now = time.monotonic()
        key = _key(name, qtype)
        clears = self._words[_CLEAR_WORD]
        if clears != self._memo_clears:
            self._memo.clear()
            self._memo_clears = clears
        memo = self._memo.get(key)
        if memo is not None:
            if memo[0] > now:
                return memo[1]._replace(ttl=int(memo[0] - now))
            del self._memo[key]
        found = self._find(key, _hash(key))
        if found is None or found[0] <= now:
            return None
        expires, answer = found
        self._remember(key, expires, answer)
        return answer._replace(ttl=int(expires - now))

    def get_stale(self, name: str, qtype: str, max_stale: float, now: float | None = None):
        """An answer with records that expired less than `max_stale` seconds ago and is still
        in its slot (RFC 8767, serve-stale: what to use when no nameserver answers), with a
        TTL of 0; None when there is none."""
        if now is None:
            now = time.monotonic()
        found = self._find(_key(name, qtype), _hash(_key(name, qtype)))
        if found is None or found[1].status != OK or found[0] + max_stale <= now:
            return None
        return found[1]._replace(ttl=0)

    def _find(self, key: bytes, h: int):
        """(expires, answer) of key's slot, live or expired; None when it has none."""
        base = _HEADER + (h % self.buckets) * WAYS * SLOT_SIZE
        for way in range(WAYS):
            slot = self._read_slot(base + way * SLOT_SIZE)
            if slot is None:
                continue
            sh, expires, _stored, skey, data = slot
            if sh == h and skey == key:
                try:
                    return expires, Answer(*marshal.loads(data))
                except (ValueError, EOFError, TypeError):
                    return None  # not ours to trust: a miss
        return None

    def _read_slot(self, off: int):
        """(hash, expires, stored, key, data) of the slot at `off`, or None when it is empty
        or a writer is in it."""
        mm = self._mm
        for _ in range(3):
            raw = mm[off : off + SLOT_SIZE]
            seq, h, expires, stored, klen, dlen = _SLOT.unpack_from(raw)
            if seq & 1:
                continue
            if _SEQ.unpack_from(mm, off)[0] != seq:
                continue  # rewritten while we copied
            if h == 0 or klen + dlen > _ROOM:
                return None
            start = _SLOT.size
            return (
                h,
                expires,
                stored,
                raw[start : start + klen],
                raw[start + klen : start + klen + dlen],
            )
        return None

    def _remember(self, key: bytes, expires: float, answer: Answer) -> None:
        if len(self._memo) >= MEMO_MAX:
            self._memo.clear()
        self._memo[key] = (expires, answer)

    # -- writers ------------------------------------------------------------------------

    def put(self, name: str, qtype: str, answer: Answer, now: float | None = None) -> bool:
        """Cache `answer` for its TTL (capped at max_ttl). False when it is not cached: a
        TTL of 0, a failure (time-outs are not remembered: the next request asks again), or
        an answer too big for a slot (it is still used by this process until it expires)."""
        if now is None:
            now = time.monotonic()
        ttl = min(answer.ttl, self.max_ttl)
        if ttl <= 0 or answer.status not in (OK, NXDOMAIN, NODATA):
            return False
        key = _key(name, qtype)
        expires = now + ttl
        self._remember(key, expires, answer._replace(ttl=ttl))
        data = marshal.dumps((answer.status, tuple(answer.records), ttl))
        if len(key) + len(data) > _ROOM:
            return False
        h = _hash(key)
        base = _HEADER + (h % self.buckets) * WAYS * SLOT_SIZE
        with self._shm.writer():
            off = self._pick_slot(base, h, key, now)
            (seq,) = _SEQ.unpack_from(self._mm, off)
            seq |= 1  # odd: a writer is in it (already odd if one died here)
            _SEQ.pack_into(self._mm, off, seq)
            self._mm[off + _SLOT.size : off + _SLOT.size + len(key) + len(data)] = key + data
            struct.pack_into("<QddHH", self._mm, off + 8, h, expires, now, len(key), len(data))
            _SEQ.pack_into(self._mm, off, (seq + 1) & 0xFFFFFFFF)
        return True

    def _pick_slot(self, base: int, h: int, key: bytes, now: float) -> int:
        """The slot for `key` in its bucket: its own, else an empty or expired one, else the
        one expiring soonest."""
        best_off, best_exp = base, float("inf")
        for way in range(WAYS):
            off = base + way * SLOT_SIZE
            _seq, sh, expires, _stored, klen, _dlen = _SLOT.unpack_from(self._mm, off)
            if sh == h and self._mm[off + _SLOT.size : off + _SLOT.size + klen] == key:
                return off
            if sh == 0 or expires <= now:
                expires = -1.0
            if expires < best_exp:
                best_off, best_exp = off, expires
        return best_off

    def clear(self) -> int:
        """Forget every answer (dns.delete_all), in every process; returns how many were live."""
        now = time.monotonic()
        with self._shm.writer():
            live = len(self.entries(now))
            for i in range(self.buckets * WAYS):
                off = _HEADER + i * SLOT_SIZE
                (seq,) = _SEQ.unpack_from(self._mm, off)
                _SEQ.pack_into(self._mm, off, seq | 1)
                struct.pack_into("<QddHH", self._mm, off + 8, 0, 0.0, 0.0, 0, 0)
                _SEQ.pack_into(self._mm, off, ((seq | 1) + 1) & 0xFFFFFFFF)
            self._words[_CLEAR_WORD] += 1
        return live

    def entries(self, now: float | None = None) -> list[CacheEntry]:
        """Every live answer (dns.view), by name then type."""
        if now is None:
            now = time.monotonic()
        out = []
        for i in range(self.buckets * WAYS):
            slot = self._read_slot(_HEADER + i * SLOT_SIZE)
            if slot is None:
                continue
            _h, expires, stored, key, data = slot
            if expires <= now:
                continue
            try:
                answer = Answer(*marshal.loads(data))
                qtype, name = key.decode().split(" ", 1)
            except (ValueError, EOFError, TypeError, UnicodeDecodeError):
                continue
            out.append(
                CacheEntry(name, qtype, answer._replace(ttl=int(expires - now)), expires, stored)
            )
        out.sort(key=lambda e: (e.name, e.qtype))
        return out

    def close(self) -> None:
        """Unmap (tests; a proxy keeps the cache for its lifetime)."""
        self._words.release()
        self._shm.close()
