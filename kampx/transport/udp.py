"""UDP listen sockets.

One socket per listen address, bound by the supervisor and inherited by every worker: all
workers wait on it, so the load of a single source (a carrier trunk) spreads over all of
them (docs/architecture.md). SO_REUSEPORT is set so that a new kampx can bind the port while
an old one drains during an upgrade; a probe bind without it first tells a port already in
use apart, unless the operator asks to share the port (kampx run --takeover).
"""

from __future__ import annotations

import logging
import socket

from kampx.config import ListenAddr
from kampx.transport import steering
from kampx.transport.sockets import BindError, ListenSocket, bind_reason

log = logging.getLogger("kampx.udp")

# Big receive buffers absorb bursts while every worker is busy (Kamailio's
# udp_rcv_buf_size plays the same part). SO_RCVBUFFORCE when we may, else what the kernel
# caps SO_RCVBUF at.
RCVBUF = 16 * 1024 * 1024
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; the socket module lacks it
SNDBUF = 4 * 1024 * 1024


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
        raise BindError(bind_reason(addr, e)) from None
    finally:
        probe.close()


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
        raise BindError(bind_reason(addr, e)) from None
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


def bind_udp(index: int, addr: ListenAddr, takeover: bool, reply_slots: int) -> ListenSocket:
    """Bind one UDP listen address, and `reply_slots` reply sockets beside it
    (transport/steering.py). Raises BindError. With `takeover` the port is shared with
    another instance: no steering (its program would steer our replies to its sockets)."""
    if not takeover:
        _probe_free(addr)
    ls = ListenSocket(index, addr, _bind(addr))
    # arrival times on requests (transport/_recv.pyx): overload control's queue delay
    ls.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    if takeover:
        steering.detach(ls.sock)
    elif reply_slots:
        _add_reply_sockets(ls, reply_slots)
    return ls
