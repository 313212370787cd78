"""Publish one blob of bytes to every process of the proxy; readers re-parse only when it
changed.

A table loaded from the database (the permissions address table, the dispatcher sets) is
written rarely (a reload) and read on every request by every worker. So: a memfd mapping
created before fork with a header holding a sequence word and two copies of the blob. A
writer fills the copy readers are not using (`sequence + 1`'s) and then publishes it by
bumping the sequence word, its last store. Readers never lock: they copy the current copy
out and reread the sequence word, retrying if it moved (the publication after next rewrites
the very copy they were reading, seqlock-style); a CRC of each copy backs that up.

`SharedBlob` is the memory; `ParsedSnapshot` is one process's parsed view of it, rebuilt only
when the sequence word moves, so a per-request read costs one word read.

Writers (the ctl process, the supervisor on SIGHUP) serialise on a POSIX record lock of the
memfd (`writer()`, re-entrant within a process, so a caller can hold it across a publication
and its own bookkeeping); a writer killed mid-write releases it and leaves the published copy
untouched, since publication is its last step.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable
from typing import Generic, TypeVar

from kampx.memfd import SharedMemory

T = TypeVar("T")

_HEADER = 64  # uint64 words; word 0: magic + version, word 1: capacity, word 2: sequence
_SEQ_WORD = 2
_COPY_HEADER = struct.Struct("<QI")  # blob length, crc32 of the blob
_COPY_HEADER_SIZE = 64
_MAGIC = 0x6B78_5342  # "kxSB"


class BlobTooLarge(ValueError):
    """The blob does not fit the mapping (sized once, before fork)."""


class SharedBlob:
    """Up to `capacity` bytes published to every process. Construct before fork."""

    def __init__(self, name: str, capacity: int):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.name = name
        self.capacity = capacity
        self._copy_size = _COPY_HEADER_SIZE + capacity
        self.nbytes = _HEADER + 2 * self._copy_size
        self._shm = SharedMemory(name, self.nbytes)
        self._mm = self._shm.mm
        self._words = self._shm.words(_HEADER)
        self._words[0] = _MAGIC
        self._words[1] = capacity
        self.writer = self._shm.writer  # exclusive against every other writer; re-entrant

    def publish(self, blob: bytes) -> int:
        """Make `blob` the current content; returns its generation (1 for the first)."""
        if len(blob) > self.capacity:
            raise BlobTooLarge(f"{len(blob)} bytes do not fit ({self.capacity} reserved)")
        with self.writer():
            seq = self._words[_SEQ_WORD]
            off = self._copy_offset(seq + 1)
            start = off + _COPY_HEADER_SIZE
            self._mm[start : start + len(blob)] = blob
            _COPY_HEADER.pack_into(self._mm, off, len(blob), zlib.crc32(blob))
            self._words[_SEQ_WORD] = seq + 1  # publish: the last store
        return seq + 1

    @property
    def generation(self) -> int:
        """How many publications so far (0: never published, the blob is empty)."""
        return self._words[_SEQ_WORD]

    def generation_word(self) -> tuple[memoryview, int]:
        """`generation` as (the header's words, its word's index): a loop that watches it
        reads one word, without a call."""
        return self._words, _SEQ_WORD

    def read(self) -> tuple[int, bytes]:
        """(generation, blob) of one consistent publication; never blocks a writer."""
        attempt = 0
        while True:
            seq = self._words[_SEQ_WORD]
            data = self._read_copy(seq) if seq else b""
            # the copy is only good if nothing was published in between
            if data is not None and self._words[_SEQ_WORD] == seq:
                return seq, data
            attempt += 1
            if attempt > 3:
                time.sleep(0.0005)  # a writer is mid-flight; let it finish

    def _copy_offset(self, seq: int) -> int:
        return _HEADER + (seq & 1) * self._copy_size

    def _read_copy(self, seq: int) -> bytes | None:
        off = self._copy_offset(seq)
        length, crc = _COPY_HEADER.unpack_from(self._mm, off)
        if length > self.capacity:
            return None
        start = off + _COPY_HEADER_SIZE
        data = self._mm[start : start + length]
        return data if zlib.crc32(data) == crc else None

    def close(self) -> None:
        """Unmap (tests; a proxy keeps it for its lifetime)."""
        self._words.release()
        self._shm.close()


class ParsedSnapshot(Generic[T]):
    """This process's parsed view of a SharedBlob: `parse(generation, blob)` runs again only
    when a publication moved the generation. Safe in a threaded process (the ctl's RPC and
    metrics threads): the generation and its parse are replaced as one pair."""

    __slots__ = ("blob", "_parse", "_current")

    def __init__(self, blob: SharedBlob, parse: Callable[[int, bytes], T]):
        self.blob = blob
        self._parse = parse
        self._current = (0, parse(0, b""))  # zeroed memory is an empty blob at generation 0

    def get(self) -> T:
        seq, value = self._current
        if self.blob.generation != seq:
            seq, data = self.blob.read()
            value = self._parse(seq, data)
            self._current = (seq, value)
        return value
