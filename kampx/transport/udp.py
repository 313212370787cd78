"""UDP listen sockets.

One socket per listen address, bound by the supervisor and inherited by every worker: all
workers wait on it, so the load of a single source (a carrier trunk) spreads over all of
them (docs/architecture.md). SO_REUSEPORT is set so that a new kampx can bind the port while
an old one drains during an upgrade; a probe bind without it first tells a port already in
use apart, unless the operator asks to share the port (kampx run --takeover).
"""

from __future__ import annotations

import errno
import logging
import socket

from kampx.config import ListenAddr
from kampx.transport import steering

log = logging.getLogger("kampx.udp")

# Big receive buffers absorb bursts while every worker is busy (Kamailio's
# udp_rcv_buf_size plays the same part). SO_RCVBUFFORCE when we may, else what the kernel
# caps SO_RCVBUF at.
RCVBUF = 16 * 1024 * 1024
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; the socket module lacks it
SNDBUF = 4 * 1024 * 1024


class BindError(Exception):
    """One line for the operator: which socket and why."""


class ListenSocket:
    """A bound UDP socket and what the proxy writes about itself when using it."""

    __slots__ = (
        "index",
        "addr",
        "sock",
        "host",
        "port",
        "name",
        "fd",
        "hostport",
        "via_prefix",
        "rr_value",
        "rr_double",
        "family",
        "reply_socks",
        "tap",
    )

    def __init__(self, index: int, addr: ListenAddr, sock: socket.socket):
        self.index = index
        self.addr = addr
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.host = f"[{addr.host}]" if ":" in addr.host else addr.host
        self.port = addr.port
        self.name = str(addr)
        # RFC 3261 omits the default port; Kamailio writes IP alone for 5060 too
        self.hostport = self.host if addr.port == 5060 else f"{self.host}:{addr.port}"
        self.via_prefix = f"SIP/2.0/UDP {self.hostport};branch=".encode()
        self.rr_value = f"<sip:{self.hostport};lr>"
        # one of the two Record-Routes of a request that crosses sockets (Kamailio's form)
        self.rr_double = f"<sip:{self.hostport};r2=on;lr>".encode()
        # one per worker slot, same address and port: replies steered to their owner
        # (transport/steering.py); empty when the kernel does not steer
        self.reply_socks: list[socket.socket] = []
        # tap(data, dest, self) sees every datagram sent (HEP export); None: nothing to see
        self.tap = None

    def close(self) -> None:
        for s in [self.sock, *self.reply_socks]:
            s.close()

    def sendto(self, data: bytes, dest: tuple) -> bool:
        """Send one datagram; False (never an exception) when it cannot go: the kernel
        refuses it, or `dest` is not a usable address (a port outside 0-65535 raises
        OverflowError, a bad host ValueError/UnicodeError): destinations are built from what
        senders wrote, and no input may take a worker down."""
        if self.tap is not None:
            self.tap(data, dest, self)
        try:
            self.sock.sendto(data, dest)
            return True
        except (BlockingIOError, InterruptedError):
            # a full socket send buffer: retry once, then count it as lost
            try:
                self.sock.sendto(data, dest)
                return True
            except OSError:
                return False
        except (OSError, OverflowError, ValueError, TypeError):
            return False


def _set_buffers(s: socket.socket) -> None:
    for force, plain, size in (
        (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF, RCVBUF),
        (getattr(socket, "SO_SNDBUFFORCE", 32), socket.SO_SNDBUF, SNDBUF),
    ):
        try:
            s.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            try:
                s.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError:
                pass


def _probe_free(addr: ListenAddr) -> None:
    probe = socket.socket(addr.family, socket.SOCK_DGRAM)
    try:
        probe.bind((addr.host, addr.port))
    except OSError as e:
        raise BindError(_bind_reason(addr, e)) from None
    finally:
        probe.close()


def _bind_reason(addr: ListenAddr, e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return f"cannot listen on {addr}: address already in use"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {addr}: no such local address"
    if e.errno == errno.EACCES:
        return f"cannot listen on {addr}: permission denied"
    return f"cannot listen on {addr}: {e.strerror or e}"


def _bind(addr: ListenAddr) -> socket.socket:
    s = socket.socket(addr.family, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if addr.family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        _set_buffers(s)
        s.bind((addr.host, addr.port))
        s.setblocking(False)
    except OSError as e:
        s.close()
        raise BindError(_bind_reason(addr, e)) from None
    return s


def _add_reply_sockets(ls: ListenSocket, n: int) -> None:
    """Bind `n` reply sockets beside the shared one and attach a steering program that,
    until the supervisor gives it the workers, sends everything to the shared socket. Left
    without (kampx works as before) when the kernel refuses."""
    socks = []
    try:
        steering.attach(ls.sock, {})
        for _ in range(n):
            socks.append(_bind(ls.addr))
    except (OSError, BindError) as e:
        for s in socks:
            s.close()
        steering.detach(ls.sock)
        log.info("%s: replies not steered to their worker (%s)", ls.name, e)
        return
    ls.reply_socks = socks


def bind_listen_sockets(
    addrs: list[ListenAddr], takeover: bool = False, reply_slots: int = 0
) -> list[ListenSocket]:
    """Bind every listen address (all or nothing), and `reply_slots` reply sockets beside
    each (transport/steering.py). Raises BindError. With `takeover` the port is shared with
    another instance: no steering (its program would steer our replies to its sockets)."""
    out: list[ListenSocket] = []
    try:
        for i, addr in enumerate(addrs):
            if not takeover:
                _probe_free(addr)
            ls = ListenSocket(i, addr, _bind(addr))
            # arrival times on requests (transport/_recv.pyx): overload control's queue delay
            ls.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            out.append(ls)
            if takeover:
                steering.detach(ls.sock)
            elif reply_slots:
                _add_reply_sockets(ls, reply_slots)
    except BindError:
        for ls in out:
            ls.close()
        raise
    return out
