"""Worker-to-worker hand-off of datagrams (docs/architecture.md, "Transactions").

A packet that belongs to a transaction owned by another worker (a reply, a retransmission,
a CANCEL, an ACK) is forwarded to that worker's Unix datagram socket together with its
source address and the listen socket it arrived on; the owner processes it as if it had
received it. Sockets live in the abstract namespace under the supervisor's instance tag, so
nothing is left on disk and two kampx instances never see each other's workers.
"""
from __future__ import annotations

import socket
import struct

# header: listen socket index (1), source port (2), length of the source IP text (1)
_HDR = struct.Struct("!BHB")


def address(instance: str, worker_id: int) -> bytes:
    return f"\0kampx-{instance}-w{worker_id}".encode()


class Handoff:
    """The worker's own hand-off socket (receive) and the means to send to the others."""

    def __init__(self, instance: str, worker_id: int):
        self.instance = instance
        self.worker_id = worker_id
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind(address(instance, worker_id))
        self.sock.setblocking(False)
        self._addr_cache: dict[int, bytes] = {}

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, owner: int, lsock_index: int, src: tuple, data: bytes) -> bool:
        """Forward a datagram to worker `owner`. False when that worker is gone or full."""
        dest = self._addr_cache.get(owner)
        if dest is None:
            dest = self._addr_cache[owner] = address(self.instance, owner)
        ip = src[0].encode()
        try:
            self.sock.sendto(_HDR.pack(lsock_index, src[1], len(ip)) + ip + data, dest)
            return True
        except OSError:
            return False

    def recv(self):
        """(lsock_index, (ip, port), data) or None when nothing is waiting."""
        try:
            pkt = self.sock.recv(70000)
        except (BlockingIOError, InterruptedError):
            return None
        idx, port, n = _HDR.unpack_from(pkt)
        o = _HDR.size
        return idx, (pkt[o:o + n].decode(), port), pkt[o + n:]

    def close(self) -> None:
        self.sock.close()
