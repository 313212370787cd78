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

Only the proxy's own workers may talk on it. An abstract address has no file mode: any
local process can find it in /proc/net/unix and connect, and a frame names the source
address the owner will believe (a stranger could claim to be the carrier). So accept() asks
the kernel who connected (SO_PEERCRED, taken at connect time) and keeps the connection only
when the peer runs as our effective uid AND is a child of our parent, the supervisor, as
every worker is; anything else is closed at once. Respawned and reloaded workers still
connect lazily by worker id, as before. Every frame is validated before the owner sees it
(length, listen socket index, port, the source IP a valid IPv4/IPv6 literal, a payload): a
bad frame is dropped and the next one read. Each refusal and each bad frame is reported to
`on_rejected(reason)` with a fixed reason text (the worker counts core.handoff_rejected and
logs each reason once), never raised: nothing on this channel can end a worker.
"""

from __future__ import annotations

import os
import select
import socket
import struct

# header: listen socket index (1), source port (2), length of the source IP text (1)
_HDR = struct.Struct("!BHB")
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
MAX_IP_TEXT = 45 + 1 + 15  # longest IPv6 text (INET6_ADDRSTRLEN - 1), "%" and a zone name
SNDBUF = 4 * 1024 * 1024
FULL_WAIT_S = 0.02  # a full queue means a stuck owner: wait this long, then give up

REFUSED_UID = "connection refused: peer runs as another user"
REFUSED_NOT_WORKER = "connection refused: peer is not a worker of this proxy"


def address(instance: str, worker_id: int) -> bytes:
    return f"\0kampx-{instance}-w{worker_id}".encode()


def _set_sndbuf(s: socket.socket) -> None:
    for opt in (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, SNDBUF)
            return
        except OSError:
            continue


def parent_pid(pid: int) -> int | None:
    """The parent of `pid` from /proc/<pid>/stat; None when it is gone. The process name
    (field 2) may hold spaces and parentheses, so the fields after it are found from the
    last ")"."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat.rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def frame(lsock_index: int, src: tuple, data: bytes) -> bytes:
    """What Handoff.send() writes and Handoff.decode() reads."""
    ip = src[0].encode()
    return _HDR.pack(lsock_index, src[1], len(ip)) + ip + data


def send_once(instance: str, owner: int, lsock_index: int, src: tuple, data: bytes) -> bool:
    """One frame to worker `owner` from a process that is no worker (the ctl process: a
    dlg.end BYE to write on a worker's connection), on a connection of its own. The owner
    accepts it as from a sibling: same uid, child of the same supervisor."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.settimeout(FULL_WAIT_S * 10)
        s.connect(address(instance, owner))
        s.send(frame(lsock_index, src, data))
        return True
    except OSError:
        return False
    finally:
        s.close()


class BadFrame(Exception):
    """A frame that is not what Handoff.send() writes; the argument is the reason."""


class Handoff:
    """A worker's end of the hand-off channel: its listener, the connections other workers
    opened to it, and the connections it opened to them. `listen_count` is the number of
    listen sockets, when known: a frame naming a socket index past it is dropped."""

    def __init__(self, instance: str, worker_id: int, on_rejected=None, listen_count: int = 256):
        self.instance = instance
        self.on_rejected = on_rejected  # on_rejected(reason): a refused peer or bad frame
        self.worker_id = worker_id
        self.listen_count = listen_count
        self.uid = os.geteuid()
        self.supervisor = os.getppid()  # every worker is its child
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(address(instance, worker_id))
        self.listener.listen(256)
        self.listener.setblocking(False)
        self.inbound: dict[int, socket.socket] = {}  # fd -> accepted connection
        self.outbound: dict[int, socket.socket] = {}  # owner -> our connection to it

    def fileno(self) -> int:
        return self.listener.fileno()

    def _rejected(self, reason: str) -> None:
        if self.on_rejected is not None:
            self.on_rejected(reason)

    # ---------------------------------------------------------------- receiving --------

    def accept(self) -> list[int]:
        """Accept every pending connection from a sibling worker; returns their fds (for
        the worker's epoll). Connections from any other process are closed at once."""
        fds: list[int] = []
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return fds
            refused = self._refusal(conn)
            if refused:
                conn.close()
                self._rejected(refused)
                continue
            conn.setblocking(False)
            self.inbound[conn.fileno()] = conn
            fds.append(conn.fileno())

    def _refusal(self, conn: socket.socket) -> str | None:
        """Why the peer of `conn` may not hand us packets; None when it is a sibling."""
        pid, uid, _ = _CRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
        )
        if uid != self.uid:
            return REFUSED_UID
        # a peer that has exited since it connected has no parent left to check: refused
        if pid <= 0 or parent_pid(pid) != self.supervisor:
            return REFUSED_NOT_WORKER
        return None

    def recv(self, fd: int):
        """(lsock_index, (ip, port), data); None when nothing is waiting; False when the
        sender went away (the caller unregisters the fd, then drop()s it). Bad frames are
        reported and skipped."""
        conn = self.inbound.get(fd)
        if conn is None:
            return False
        while True:
            try:
                pkt = conn.recv(70000)
            except (BlockingIOError, InterruptedError):
                return None
            except OSError:
                pkt = b""
            if not pkt:
                return False
            try:
                return self.decode(pkt)
            except BadFrame as e:
                self._rejected(e.args[0])

    def decode(self, pkt: bytes):
        """(lsock_index, (ip, port), data) of one frame; BadFrame(reason) when it is not
        one send() could have written. Per handed-off packet: a few compares, no regex."""
        o = _HDR.size
        if len(pkt) < o:
            raise BadFrame("frame too short")
        idx, port, n = _HDR.unpack_from(pkt)
        # 0x80: a message to write, 0x40: a stream's request to process (transport/stream.py)
        if idx & 0x3F >= self.listen_count:
            raise BadFrame("frame names no listen socket")
        if port == 0:
            raise BadFrame("frame has source port 0")
        if not 0 < n <= MAX_IP_TEXT:
            raise BadFrame("frame has a bad source IP length")
        if len(pkt) <= o + n:
            raise BadFrame("frame has no payload")
        try:
            ip = pkt[o : o + n].decode("ascii")
            if ":" in ip:
                # a link-local source comes as "fe80::1%eth0": the zone is the kernel's
                socket.inet_pton(socket.AF_INET6, ip.partition("%")[0])
            else:
                socket.inet_pton(socket.AF_INET, ip)
        except (UnicodeDecodeError, OSError):
            raise BadFrame("frame has a bad source IP") from None
        return idx, (ip, port), pkt[o + n :]

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
        msg = frame(lsock_index, src, data)
        for _attempt in (0, 1):
            s = self.outbound.get(owner) or self._connect(owner)
            if s is None:
                return False
            try:
                s.send(msg)
                return True
            except BlockingIOError:
                _, writable, _ = select.select([], [s], [], FULL_WAIT_S)
                if not writable:
                    return False
                try:
                    s.send(msg)
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
