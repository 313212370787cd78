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
