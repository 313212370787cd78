"""Kamailio's permissions address table (allow_source_address), in shared memory.

The supervisor creates one AddressTable before fork; every worker matches against it and the
ctl process reloads it from the database. Rows are Kamailio's (grp, ip_addr, mask, port, tag):
port 0 matches any port, and when several rows of a group match, the longest prefix wins (at
equal prefix, a row for the exact port beats a port-0 row; then the first row loaded).

Layout: a header with a sequence word, then two copies of the table. `load()` writes the copy
readers are not using and then publishes it by bumping the sequence word; the copy a reader
uses is `sequence & 1`. Readers never lock: a reader copies the active copy out and rereads the
sequence word, and retries if it moved (the copy could have been rewritten by the reload after
next, seqlock-style); a CRC of each copy backs that up. Each process keeps the parsed table
and rebuilds it only when the sequence word changes, so a per-request check costs one word read
plus a few dict lookups.

Writers (the ctl process; the supervisor on SIGHUP) serialise on a POSIX record lock of the
memfd backing the mapping (kampx/memfd.py); a writer killed mid-load releases it and leaves
the published copy untouched, since publication is its last step.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
import zlib
from typing import Any, NamedTuple

from kampx.memfd import SharedMemory

DEFAULT_CAPACITY = 65536
MAX_TAG_BYTES = 64  # Kamailio's address.tag is VARCHAR(64)

_MAGIC = 0x6B785041  # "kxPA"
_HEADER = 64
_SEQ_WORD = 2  # header word (uint64) 2: the sequence number, the only word that changes
_COPY_HEADER = struct.Struct("<II")  # row count, crc32 of the records
_COPY_HEADER_SIZE = 64
# grp, family (4/6), mask, port, address (16 bytes, IPv4 in the first 4), tag length, tag
_RECORD = struct.Struct("<IBBH16sB64s7x")
_V4_MAPPED = bytes(10) + b"\xff\xff"


class PermissionsError(ValueError):
    """A bad address row, worded as one line naming the row."""


class AddressEntry(NamedTuple):
    grp: int
    ip_addr: str
    mask: int
    port: int
    tag: str


def check_row(row: Any, where: str = "address row") -> AddressEntry:
    """Validate one row and return it normalised (canonical IP text, defaults filled in:
    mask = full length, port 0, tag "").

    `row` is (grp, ip_addr, mask, port, tag) or anything with those attributes (AddressRow)."""
    if hasattr(row, "grp"):
        grp, ip_text, mask, port, tag = row.grp, row.ip_addr, row.mask, row.port, row.tag
        if getattr(row, "id", None) is not None:
            where = f"address row id {row.id}"
    else:
        try:
            grp, ip_text, mask, port, tag = row
        except (TypeError, ValueError):
            raise PermissionsError(f"{where}: expected (grp, ip_addr, mask, port, tag)") from None
    if not _is_int(grp) or not 0 <= grp < 2**32:
        raise PermissionsError(f"{where}: group {grp!r} is not a number 0..4294967295")
    try:
        if not isinstance(ip_text, str):
            raise ValueError
        ip = ipaddress.ip_address(ip_text.strip())
        if getattr(ip, "scope_id", None):
            raise ValueError  # a zone (fe80::1%eth0) never appears as a packet's source
    except ValueError:
        raise PermissionsError(f"{where}: '{ip_text}' is not an IP address") from None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        raise PermissionsError(f"{where}: write the IPv4-mapped address {ip} as {ip.ipv4_mapped}")
    bits = ip.max_prefixlen
    if mask is None:
        mask = bits
    if not _is_int(mask) or not 0 <= mask <= bits:
        raise PermissionsError(f"{where}: mask {mask!r} is not 0..{bits} for {ip}")
    if port is None:
        port = 0
    if not _is_int(port) or not 0 <= port <= 65535:
        raise PermissionsError(f"{where}: port {port!r} is not 0..65535 (0 = any)")
    tag = "" if tag is None else tag
    if not isinstance(tag, str):
        raise PermissionsError(f"{where}: tag {tag!r} is not a string")
    if len(tag.encode()) > MAX_TAG_BYTES:
        raise PermissionsError(f"{where}: tag is longer than {MAX_TAG_BYTES} bytes")
    return AddressEntry(grp, str(ip), mask, port, tag)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_source(ip: str) -> tuple[int, int] | None:
    """(family, address as int) of a packet's source; IPv4-mapped IPv6 counts as IPv4 (a
    dual-stack socket reports IPv4 peers that way). None when `ip` is not an address."""
    try:
        if ":" not in ip:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip), "big")
        raw = socket.inet_pton(socket.AF_INET6, ip.strip("[]").partition("%")[0])
    except (OSError, ValueError, TypeError):
        return None
    if raw[:12] == _V4_MAPPED:
        return 4, int.from_bytes(raw[12:], "big")
    return 6, int.from_bytes(raw, "big")


# Parsed sources of this process: a proxy sees the same peers (trunks, phones) again and again,
# and a dict hit is several times cheaper than inet_pton + int.from_bytes.
_SOURCES: dict[str, tuple[int, int]] = {}
_SOURCES_MAX = 4096


class _Snapshot:
    """One published table, parsed for matching: per group and family, prefix levels from the
    longest mask down, each a dict network -> {port: tag}."""

    __slots__ = ("seq", "rows", "groups")

    def __init__(self, seq: int, rows: list[AddressEntry]):
        self.seq = seq
        self.rows = rows
        levels: dict[tuple[int, int], dict[int, dict[int, dict[int, str]]]] = {}
        for e in rows:
            ip = ipaddress.ip_address(e.ip_addr)
            shift = ip.max_prefixlen - e.mask
            by_shift = levels.setdefault((e.grp, ip.version), {})
            ports = by_shift.setdefault(shift, {}).setdefault(int(ip) >> shift, {})
            ports.setdefault(e.port, e.tag)  # the first row loaded wins a tie
        self.groups: dict[int, dict[int, list]] = {}
        for (grp, family), by_shift in levels.items():
            self.groups.setdefault(grp, {})[family] = sorted(by_shift.items())

    def match(self, group: int, ip: str, port: int) -> str | None:
        families = self.groups.get(group)
        if families is None:
            return None
        src = _SOURCES.get(ip)
        if src is None:
            src = parse_source(ip)
            if src is None:
                return None
            if len(_SOURCES) >= _SOURCES_MAX:
                _SOURCES.clear()
            _SOURCES[ip] = src
        levels = families.get(src[0])
        if levels is None:
            return None
        addr = src[1]
        for shift, nets in levels:
            ports = nets.get(addr >> shift)
            if ports is not None:
                tag = ports.get(port)
                if tag is None:
                    tag = ports.get(0)
                if tag is not None:
                    return tag
        return None


class AddressTable:
    """The shared address table. Construct it before fork; use it in any process after."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._copy_size = _COPY_HEADER_SIZE + capacity * _RECORD.size
        self.nbytes = _HEADER + 2 * self._copy_size
        self._shm = SharedMemory("permissions", self.nbytes)
        self._fd, self._mm = self._shm.fd, self._shm.mm
        self._words = self._shm.words(_HEADER)
        struct.pack_into("<IIII", self._mm, 0, _MAGIC, 1, capacity, _RECORD.size)
        # zeroed memory is a valid empty table at sequence 0
        self._snap = _Snapshot(0, [])

    # -- writer ---------------------------------------------------------------------------

    def load(self, rows) -> int:
        """Validate every row, then publish them as the new table (all or nothing: a bad row
        leaves the current table in place). Returns the new generation."""
        entries = [check_row(r, f"address row {i + 1}") for i, r in enumerate(rows)]
        if len(entries) > self.capacity:
            raise PermissionsError(
                f"{len(entries)} address rows do not fit the table (capacity {self.capacity})"
            )
        records = b"".join(self._pack(e) for e in entries)
        with self._shm.writer():
            seq = self._words[_SEQ_WORD]
            off = self._copy_offset(seq + 1)
            start = off + _COPY_HEADER_SIZE
            self._mm[start : start + len(records)] = records
            _COPY_HEADER.pack_into(self._mm, off, len(entries), zlib.crc32(records))
            self._words[_SEQ_WORD] = seq + 1  # publish: the last store of a load
        return seq + 1

    def reload_from(self, storage) -> int:
        """Load the address table of a kampx.db Storage; returns the number of rows."""
        rows = storage.addresses.list()
        self.load(rows)
        return len(rows)

    @staticmethod
    def _pack(e: AddressEntry) -> bytes:
        packed = ipaddress.ip_address(e.ip_addr).packed
        tag = e.tag.encode()
        return _RECORD.pack(
            e.grp, 4 if len(packed) == 4 else 6, e.mask, e.port, packed, len(tag), tag
        )

    # -- readers --------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """How many loads have been published (0: never loaded, empty)."""
        return self._words[_SEQ_WORD]

    def match(self, group: int, ip: str, port: int) -> str | None:
        """The tag of the best row of `group` matching source ip:port ("" for a row without
        tag), None when none matches."""
        snap = self._snap
        if self._words[_SEQ_WORD] != snap.seq:
            snap = self._refresh()
        return snap.match(group, ip, port)

    def allow(self, group: int, ip: str, port: int) -> bool:
        return self.match(group, ip, port) is not None

    def rows(self) -> list[AddressEntry]:
        """The table as published now, in load order (permissions.addressDump)."""
        snap = self._snap
        if self._words[_SEQ_WORD] != snap.seq:
            snap = self._refresh()
        return list(snap.rows)

    def _copy_offset(self, seq: int) -> int:
        return _HEADER + (seq & 1) * self._copy_size

    def _read_copy(self, seq: int) -> bytes | None:
        """The records of the copy published as `seq`, or None when they fail their CRC."""
        off = self._copy_offset(seq)
        count, crc = _COPY_HEADER.unpack_from(self._mm, off)
        if count > self.capacity:
            return None
        start = off + _COPY_HEADER_SIZE
        data = self._mm[start : start + count * _RECORD.size]
        return data if zlib.crc32(data) == crc else None

    def _refresh(self) -> _Snapshot:
        attempt = 0
        while True:
            seq = self._words[_SEQ_WORD]
            data = self._read_copy(seq)
            # the copy is only good if no load published in between: the one after next
            # rewrites the very copy we were reading
            if data is not None and self._words[_SEQ_WORD] == seq:
                break
            attempt += 1
            if attempt > 3:
                time.sleep(0.0005)  # a writer is mid-flight; let it finish
        rows = []
        for grp, family, mask, port, addr, taglen, tag in _RECORD.iter_unpack(data):
            ip = ipaddress.ip_address(addr[:4] if family == 4 else addr)
            rows.append(AddressEntry(grp, str(ip), mask, port, tag[:taglen].decode()))
        self._snap = _Snapshot(seq, rows)
        return self._snap

    def close(self) -> None:
        """Unmap (tests; a proxy keeps the table for its lifetime)."""
        self._words.release()
        self._shm.close()
