"""A listen socket as the rest of kampx sees it, whatever its transport.

tm, sl, forward and the dialog code send with `lsock.sendto(data, (ip, port))` and write
what the proxy says about itself from the same object (its Via, its Record-Route). A UDP
socket sends a datagram; a stream socket (TCP, TLS: kampx/transport/stream.py) writes on the
connection to that address, wherever it lives. `reliable` tells tm to start no
retransmission timers (RFC 3261 17.1.1.2: a reliable transport carries the request once).
"""

from __future__ import annotations

import errno
import socket

from kampx.config import ListenAddr
from kampx.transport._send import sendto_batch, sockaddr

ADDR_CACHE_MAX = 4096  # packed destination addresses kept per socket (then forgotten)


class BindError(Exception):
    """One line for the operator: which socket and why."""


def bind_reason(addr: ListenAddr, e: OSError) -> str:
    if e.errno == errno.EADDRINUSE:
        return f"cannot listen on {addr}: address already in use"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {addr}: no such local address"
    if e.errno == errno.EACCES:
        return f"cannot listen on {addr}: permission denied"
    return f"cannot listen on {addr}: {e.strerror or e}"


class ListenSocket:
    """A bound socket and what the proxy writes about itself when using it."""

    __slots__ = (
        "index",
        "addr",
        "sock",
        "host",
        "port",
        "name",
        "fd",
        "hostport",
        "proto",
        "reliable",
        "via_prefix",
        "rr_value",
        "rr_double",
        "family",
        "reply_socks",
        "tap",
        "pending",
        "addr_cache",
        "v6",
    )

    def __init__(self, index: int, addr: ListenAddr, sock: socket.socket):
        self.index = index
        self.addr = addr
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.proto = addr.proto  # "udp", "tcp" or "tls"
        self.reliable = addr.proto != "udp"
        self.host = f"[{addr.host}]" if ":" in addr.host else addr.host
        self.port = addr.port
        self.name = str(addr)
        # RFC 3261 omits the default port; Kamailio writes IP alone for 5060 too (5061 TLS)
        default = 5061 if addr.proto == "tls" else 5060
        self.hostport = self.host if addr.port == default else f"{self.host}:{addr.port}"
        self.via_prefix = f"SIP/2.0/{addr.proto.upper()} {self.hostport};branch=".encode()
        # a Record-Route names the transport to come back on (UDP: none, the default)
        param = "" if addr.proto == "udp" else f";transport={addr.proto}"
        self.rr_value = f"<sip:{self.hostport}{param};lr>"
        # one of the two Record-Routes of a request that crosses sockets (Kamailio's form)
        self.rr_double = f"<sip:{self.hostport}{param};r2=on;lr>".encode()
        # one per worker slot, same address and port: replies steered to their owner
        # (transport/steering.py); empty when the kernel does not steer (and for streams)
        self.reply_socks: list[socket.socket] = []
        # tap(data, dest, self) sees every message sent (HEP export); None: nothing to see
        self.tap = None
        # a worker's loop sets a list: datagrams wait there for flush() at the end of its
        # round, one sendmmsg for all (None: each is sent at once)
        self.pending: list | None = None
        self.addr_cache: dict = {}
        self.v6 = sock.family == socket.AF_INET6

    def close(self) -> None:
        for s in [self.sock, *self.reply_socks]:
            s.close()

    def sendto(self, data: bytes, dest: tuple) -> bool:
        """Send one datagram (or queue it for this round's flush()); False (never an
        exception) when it cannot go: `dest` is not a usable address (destinations are built
        from what senders wrote, and no input may take a worker down), or, sent at once, the
        kernel refuses it. What the kernel refuses at flush() is counted there."""
        if self.tap is not None:
            self.tap(data, dest, self)
        pending = self.pending
        if pending is not None:
            try:
                addr = self.addr_cache.get(dest)
                if addr is None:
                    addr = sockaddr(dest[0], dest[1], self.v6)
                    if addr is None:
                        return False
                    if len(self.addr_cache) >= ADDR_CACHE_MAX:
                        self.addr_cache.clear()
                    self.addr_cache[dest] = addr
            except (TypeError, IndexError):
                return False  # not an (ip, port) pair
            pending.append((data, addr))
            return True
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

    def flush(self) -> int:
        """Send the datagrams queued this round; returns how many could not go."""
        pending = self.pending
        if not pending:
            return 0
        failed = sendto_batch(self.fd, pending)
        pending.clear()
        return failed
