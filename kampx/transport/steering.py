"""Replies steered by the kernel to the worker that owns their transaction.

Every worker reads the one shared listen socket, so a reply reaches the owner of its
transaction only by chance (1/N with N workers) and is otherwise handed over
(transport/handoff.py): a local send, a wake-up and a second parse. Measured on a carrier
call with 2 workers: 1.8 hand-offs per call, and the second worker cost 20 % more CPU per
call than one worker alone (docs/performance.md).

This module makes the kernel deliver a reply to its owner instead. Besides the shared socket,
the supervisor binds one reply socket per worker slot on the same address and port, all in
one SO_REUSEPORT group, and attaches a classic BPF program to the group
(SO_ATTACH_REUSEPORT_CBPF). The kernel runs it on every datagram's UDP payload and delivers
the datagram to the socket whose index it returns:

- a request (anything not starting with "SIP/"): index 0, the shared socket, exactly as
  before: every idle worker may take it, a carrier trunk still spreads over all of them;
- a reply: the program finds the first "z9hG4bKkx" in the first SCAN_END bytes (kampx's
  branch magic, in the top Via, which is ours), reads the two hex digits of the worker id
  that follow, and returns the reply socket of that worker's slot (a table the supervisor
  rebuilds, and re-attaches, whenever a worker is spawned or dies);
- anything else (another proxy's branch first, a Via beyond SCAN_END, an unknown worker id, a
  short datagram): index 0.

It is only a shortcut: a reply that reaches the wrong worker anyway (the program could not
tell, two workers share a slot during a reload) is handed over as before, so nothing depends
on the steering being right. Without kernel support (or with --takeover, where another
instance shares the group) kampx runs without reply sockets, as before.
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68
MAGIC = b"z9hG4bKkx"  # what every kampx branch starts with (tm/manager.py branch_prefix)
SCAN_START = 16  # the shortest status line is 13 bytes ("SIP/2.0 200\r\n" would be 13)
SCAN_END = 640  # where the magic may start at the latest
MAX_INSNS = 4096  # BPF_MAXINSNS

# classic BPF opcodes (linux/filter.h)
_LD_W_ABS, _LD_W_IND, _LD_B_IND, _LD_MEM = 0x20, 0x40, 0x50, 0x60
_LDX_IMM, _ST, _TAX = 0x01, 0x02, 0x07
_ALU_SUB_K, _ALU_LSH_K, _ALU_ADD_X = 0x14, 0x64, 0x0C
_JA, _JEQ_K, _JGE_K = 0x05, 0x15, 0x35
_RET_K = 0x06

_SIP = struct.unpack("!I", b"SIP/")[0]
_MAGIC_0 = struct.unpack("!I", MAGIC[0:4])[0]
_MAGIC_4 = struct.unpack("!I", MAGIC[4:8])[0]


def _ins(code: int, jt: int = 0, jf: int = 0, k: int = 0) -> tuple[int, int, int, int]:
    return (code, jt, jf, k)


def _hex_digit(offset: int) -> list[tuple[int, int, int, int]]:
    """A = value of the lowercase hex digit at X + offset."""
    return [
        _ins(_LD_B_IND, k=offset),
        _ins(_JGE_K, 0, 2, ord("a")),
        _ins(_ALU_SUB_K, k=ord("a") - 10),
        _ins(_JA, k=1),
        _ins(_ALU_SUB_K, k=ord("0")),
    ]


def program(slots: dict[int, int]) -> list[tuple[int, int, int, int]]:
    """The steering program for `slots` (worker id -> reply socket index, 1 and up)."""
    if any(not 0 <= wid <= 255 for wid in slots) or any(i < 1 for i in slots.values()):
        raise ValueError("worker ids are 0-255 and reply socket indexes start at 1")
    positions = range(SCAN_START, SCAN_END)
    head = [_ins(_LD_W_ABS, k=0), _ins(_JEQ_K, 1, 0, _SIP), _ins(_RET_K, k=0)]
    # one position: load the word there; not the magic -> the next position; else X = it
    # and on to decode. After the last position (or a load past the datagram's end, which
    # ends the program with 0): no magic, index 0.
    decode_at = len(head) + 4 * len(positions) + 1
    scan: list[tuple[int, int, int, int]] = []
    for pos in positions:
        here = len(head) + len(scan)
        scan += [
            _ins(_LD_W_ABS, k=pos),
            _ins(_JEQ_K, 0, 2, _MAGIC_0),
            _ins(_LDX_IMM, k=pos),
            _ins(_JA, k=decode_at - (here + 4)),
        ]
    scan.append(_ins(_RET_K, k=0))
    decode = [
        _ins(_LD_W_IND, k=4),
        _ins(_JEQ_K, 1, 0, _MAGIC_4),
        _ins(_RET_K, k=0),
        _ins(_LD_B_IND, k=8),
        _ins(_JEQ_K, 1, 0, MAGIC[8]),
        _ins(_RET_K, k=0),
        *_hex_digit(9),
        _ins(_ALU_LSH_K, k=4),
        _ins(_ST, k=0),
        *_hex_digit(10),
        _ins(_TAX),
        _ins(_LD_MEM, k=0),
        _ins(_ALU_ADD_X),
    ]
    for wid, index in sorted(slots.items()):
        decode += [_ins(_JEQ_K, 0, 1, wid), _ins(_RET_K, k=index)]
    decode.append(_ins(_RET_K, k=0))  # a worker id no slot has
    out = head + scan + decode
    if len(out) > MAX_INSNS:
        raise ValueError(f"steering program too long ({len(out)} instructions)")
    return out


def attach(sock: socket.socket, slots: dict[int, int]) -> None:
    """Attach (or replace) the group's program. Raises OSError when the kernel refuses."""
    insns = program(slots)
    buf = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in insns))
    fprog = struct.pack("@HxxxxxxP", len(insns), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def detach(sock: socket.socket) -> None:
    """Take the group's program away (kernel default: a hash of the addresses)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
    except OSError:
        pass  # none attached, or a kernel without the option
