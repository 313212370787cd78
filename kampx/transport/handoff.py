"""Worker-to-worker hand-off of datagrams (docs/architecture.md, "Transactions").

A packet that belongs to a transaction owned by another worker (a reply, a retransmission,
a CANCEL, an ACK) is passed to that worker together with its source address and the listen
socket it arrived on; the owner processes it as if it had received it.

The channel is a Unix SOCK_SEQPACKET connection per (sender, owner) pair: each worker
listens on an abstract-namespace address under its instance tag (nothing on disk, two
instances never meet) and senders connect on first use. Not SOCK_DGRAM: an unconnected Unix
datagram socket queues at most net.unix.max_dgram_qlen messages (10 on stock kernels), so a
worker busy for a millisecond would make hand-offs fail under load. A connected socket is
bounded by its byte buffer instead (thousands of messages), keeps message boundaries, and a
send is all or nothing.
"""
from __future__ import annotations

import select
import socket
import struct

# header: listen socket index (1), source port (2), length of the source IP text (1)
_HDR = struct.Struct("!BHB")
SNDBUF = 4 * 1024 * 1024
FULL_WAIT_S = 0.02       # a full queue means a stuck owner: wait this long, then give up


def address(instance: str, worker_id: int) -> bytes:
    return f"\0kampx-{instance}-w{worker_id}".encode()


def _set_sndbuf(s: socket.socket) -> None:
    for opt in (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, SNDBUF)
            return
        except OSError:
            continue


class Handoff:
    """A worker's end of the hand-off channel: its listener, the connections other workers
    opened to it, and the connections it opened to them."""

    def __init__(self, instance: str, worker_id: int, on_rejected=None):
        self.instance = instance
        self.on_rejected = on_rejected     # on_rejected(reason): a refused peer or bad frame
        self.worker_id = worker_id
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(address(instance, worker_id))
        self.listener.listen(256)
        self.listener.setblocking(False)
        self.inbound: dict[int, socket.socket] = {}     # fd -> accepted connection
        self.outbound: dict[int, socket.socket] = {}    # owner -> our connection to it

    def fileno(self) -> int:
        return self.listener.fileno()

    # ---------------------------------------------------------------- receiving --------

    def accept(self) -> list[int]:
        """Accept every pending connection; returns their fds (for the worker's epoll)."""
        fds = []
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return fds
            conn.setblocking(False)
            self.inbound[conn.fileno()] = conn
            fds.append(conn.fileno())

    def recv(self, fd: int):
        """(lsock_index, (ip, port), data); None when nothing is waiting; False when the
        sender went away (the caller unregisters the fd, then drop()s it)."""
        conn = self.inbound.get(fd)
        if conn is None:
            return False
        try:
            pkt = conn.recv(70000)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            pkt = b""
        if not pkt:
            return False
        idx, port, n = _HDR.unpack_from(pkt)
        o = _HDR.size
        return idx, (pkt[o:o + n].decode(), port), pkt[o + n:]

    def drop(self, fd: int) -> None:
        """Close an inbound connection whose sender went away (after epoll forgot it)."""
        conn = self.inbound.pop(fd, None)
        if conn is not None:
            conn.close()

    # ---------------------------------------------------------------- sending ----------

    def _connect(self, owner: int):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        _set_sndbuf(s)
        try:
            s.connect(address(self.instance, owner))
        except OSError:
            s.close()
            return None
        s.setblocking(False)
        self.outbound[owner] = s
        return s

    def send(self, owner: int, lsock_index: int, src: tuple, data: bytes) -> bool:
        """Pass a datagram to worker `owner`. False when that worker is gone (or so stuck
        that its queue stayed full): the caller then handles the packet itself."""
        ip = src[0].encode()
        frame = _HDR.pack(lsock_index, src[1], len(ip)) + ip + data
        for attempt in (0, 1):
            s = self.outbound.get(owner) or self._connect(owner)
            if s is None:
                return False
            try:
                s.send(frame)
                return True
            except BlockingIOError:
                _, writable, _ = select.select([], [s], [], FULL_WAIT_S)
                if not writable:
                    return False
                try:
                    s.send(frame)
                    return True
                except OSError:
                    return False
            except OSError:
                # the owner died (and maybe a new worker took its id): reconnect once
                self.outbound.pop(owner, None)
                s.close()
        return False

    def close(self) -> None:
        for s in list(self.inbound.values()) + list(self.outbound.values()):
            s.close()
        self.listener.close()
