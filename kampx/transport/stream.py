"""TCP and TLS: listen sockets, and the connections one worker owns (RFC 3261 18.3).

The model (docs/architecture.md, "Streams"):

- A `tcp:`/`tls:` listen socket is bound by the supervisor and inherited, like a UDP one.
  Its workers wait on it with EPOLLEXCLUSIVE and move to the back of the wait queue after
  each accept, so connections spread over them. The worker that accepts (or opens) a
  connection owns it: only it reads and writes it, so a message is never interleaved with
  another on the wire and no lock is held.
- Any worker may need to send on any connection (a reply, a call to a phone registered over
  TCP). A shared alias index (KeyIndex: "proto ip port" -> owner worker id, Kamailio's tcp
  connection aliases) names the owner; another worker passes it the message over the
  hand-off channel with SEND_FLAG set in the socket index, and the owner writes it. With no
  connection to that address the sending worker opens one (a carrier's `transport=tcp`).
- A read that brings a backlog ([tcp] spread_backlog messages) passes its requests round
  the other workers (SPREAD_FLAG frames): one busy connection does not hold a trunk's whole
  load on one worker once that worker falls behind.
- Each connection's messages of one loop round leave in one send (flush()).
- Framing: a message ends after its headers' CRLFCRLF plus Content-Length bytes, which a
  stream must carry; without one the peer gets a 400 (when it can be addressed) and the
  connection is closed, as is one whose headers or body pass [tcp] max_message_bytes. CRLF
  CRLF between messages is an RFC 5626 keep-alive ping, answered with CRLF.
- Limits (each close counted by reason in kampx_tcp_closed_total): open connections in the
  whole proxy and from one IP (shared per-worker counts: a killed worker's are dropped with
  it), idle lifetime, the time a begun message may take to complete (a slow sender holds
  memory), the queue of bytes written but not yet taken by the peer, the connect timeout.
  Reading is bounded per wake-up so one busy connection cannot starve the others.
- A connect that fails (refused, timed out, TLS handshake refused) tells tm at once
  (`on_unreachable`), which ends the branches waiting on that address with 480 instead of
  letting them run into their timers.
"""

from __future__ import annotations

import errno
import logging
import re
import select
import socket
import ssl
import time
import zlib

from kampx import sl
from kampx import stats as S
from kampx.config import ListenAddr
from kampx.stats.core import BAD_MSG_HDR
from kampx.transport.sockets import BindError, ListenSocket, bind_reason

log = logging.getLogger("kampx.stream")

SEND_FLAG = 0x80  # in a hand-off frame's socket index: "write this on your connection"
SPREAD_FLAG = 0x40  # "process this as read from that stream" (a busy connection's request)
IP_BUCKETS = 256  # per-source counts are kept per hash bucket of the source IP
BACKLOG = 1024
READ_CHUNK = 65536
READ_BUDGET = 4  # chunks read from one connection per wake-up
ACCEPT_BUDGET = 16  # connections accepted per wake-up
ALIAS_SLACK_S = 60.0  # an alias outlives its connection's idle lifetime by this much

_CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([0-9]{1,9})[ \t]*\r\n", re.I)
_EMPTY = b""

CONNECTING, HANDSHAKE, OPEN, CLOSED = range(4)

CLOSE_REASONS = (
    "eof",  # the peer closed it
    "reset",  # a read or write failed
    "idle",  # [tcp] connection_lifetime_s without a message
    "slow",  # a begun message not complete within [tcp] message_timeout_s
    "bad_framing",  # no Content-Length, or not SIP at all
    "too_large",  # a message past [tcp] max_message_bytes
    "send_queue_full",  # the peer does not take what we write
    "connect_failed",  # an outgoing connect refused or timed out
    "tls_failed",  # the TLS handshake failed
    "limit",  # [tcp] max_connections or max_connections_per_ip reached
    "shutdown",  # the worker stopped
)
TRANSPORTS = ("tcp", "tls")

OPEN_CONNECTIONS = S.family(
    "tcp",
    "current_opened_connections",
    S.KIND_GAUGE,
    "TCP and TLS connections open now",
    "transport",
    TRANSPORTS,
)
ACCEPTED = S.family(
    "tcp", "passive_open", S.KIND_COUNTER, "Connections accepted", "transport", TRANSPORTS
)
CONNECTED = S.family(
    "tcp",
    "active_open",
    S.KIND_COUNTER,
    "Connections kampx opened (to a destination with no connection yet)",
    "transport",
    TRANSPORTS,
)
CLOSED_BY = S.family(
    "tcp", "closed", S.KIND_COUNTER, "Connections closed, by reason", "reason", CLOSE_REASONS
)
TLS_FAILURES = S.family("tcp", "tls_handshake_failures", S.KIND_COUNTER, "TLS handshakes failed")
KEEPALIVES = S.family(
    "tcp", "keepalives", S.KIND_COUNTER, "CRLF keep-alive pings answered (RFC 5626 3.5.1)"
)
HANDED_SENDS = S.family(
    "tcp",
    "handed_sends",
    S.KIND_COUNTER,
    "Messages passed to the worker that owns their connection, to be written there",
)
SPREAD = S.family(
    "tcp",
    "spread_requests",
    S.KIND_COUNTER,
    "Requests of a busy connection passed to another worker to process",
)
MTU_SWITCHED = S.family(
    "tcp",
    "mtu_switched",
    S.KIND_COUNTER,
    "Requests larger than [tcp] udp_mtu sent over TCP instead of UDP (RFC 3261 18.1.1)",
)
STATISTICS = (
    OPEN_CONNECTIONS,
    ACCEPTED,
    CONNECTED,
    CLOSED_BY,
    TLS_FAILURES,
    KEEPALIVES,
    HANDED_SENDS,
    SPREAD,
    MTU_SWITCHED,
)


# ----------------------------------------------------------------------- listen sockets --


class StreamListenSocket(ListenSocket):
    """A tcp:/tls: listen socket. sendto() writes on the connection to `dest` through this
    worker's Streams (set after fork), False when nothing can carry it."""

    __slots__ = ("conns", "server_ctx", "client_ctx")

    def __init__(self, index: int, addr: ListenAddr, sock: socket.socket):
        super().__init__(index, addr, sock)
        self.conns: Streams | None = None
        self.server_ctx: ssl.SSLContext | None = None
        self.client_ctx: ssl.SSLContext | None = None

    def sendto(self, data: bytes, dest: tuple) -> bool:
        if self.tap is not None:
            self.tap(data, dest, self)
        conns = self.conns
        if conns is None:
            return False
        try:
            return conns.send(self, data, dest)
        except (OSError, OverflowError, ValueError, TypeError, IndexError):
            return False  # a destination built from what a sender wrote


def tls_contexts(tls) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts from [tls]. Raises ssl.SSLError / OSError."""
    minimum = ssl.TLSVersion.TLSv1_3 if tls.min_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = minimum
    server.load_cert_chain(tls.certificate, tls.private_key)
    if tls.ca_list:
        server.load_verify_locations(tls.ca_list)
    server.verify_mode = ssl.CERT_REQUIRED if tls.verify_client else ssl.CERT_OPTIONAL
    if not tls.ca_list:
        server.verify_mode = ssl.CERT_NONE
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.minimum_version = minimum
    client.load_cert_chain(tls.certificate, tls.private_key)  # for servers that ask
    if tls.verify_server:
        if tls.ca_list:
            client.load_verify_locations(tls.ca_list)
        else:
            client.load_default_certs()
    else:
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
    return server, client


def bind_stream(index: int, addr: ListenAddr, takeover: bool, tls) -> StreamListenSocket:
    """Bind and listen on a tcp:/tls: address. Raises BindError (a tls: address whose
    certificate or key cannot be loaded too)."""
    s = socket.socket(addr.family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if takeover:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if addr.family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr.host, addr.port))
        s.listen(BACKLOG)
        s.setblocking(False)
    except OSError as e:
        s.close()
        raise BindError(bind_reason(addr, e)) from None
    ls = StreamListenSocket(index, addr, s)
    if addr.proto == "tls":
        try:
            ls.server_ctx, ls.client_ctx = tls_contexts(tls)
        except (ssl.SSLError, OSError) as e:
            s.close()
            raise BindError(f"cannot listen on {addr}: [tls] certificate/key: {e}") from None
    return ls


class RelaySender:
    """Sending on a stream from a process that owns no connection (the ctl process's
    `dlg end`): through the worker that owns the connection to `dest`, or not at all (a
    BYE to a phone whose connection is gone cannot reach it anyway)."""

    def __init__(self, shared):
        self.shared = shared

    def send(self, lsock, data: bytes, dest: tuple, handed: bool = False) -> bool:
        from kampx.transport.handoff import send_once

        aliases = self.shared.stream_aliases
        if aliases is None:
            return False
        owner = aliases.lookup(alias_key(lsock.proto, dest[0], dest[1]), time.monotonic())
        if owner < 0:
            return False
        return send_once(self.shared.instance, owner, lsock.index | SEND_FLAG, dest, data)


# ----------------------------------------------------------------------------- framing --


class FrameError(Exception):
    """The stream cannot be framed any further: args[0] is the close reason."""


def frame(buf: bytearray, max_bytes: int):
    """The next thing in `buf`, taken off its front: (b"", n) n keep-alive pings (CRLFCRLF)
    skipped, (message, 0) a whole message, (None, 0) nothing whole yet. Raises
    FrameError("too_large") past max_bytes, FrameError("bad_framing") for what does not
    start with a letter and for a message without a Content-Length (then its args[1] is the
    header block, for a 400)."""
    pings = 0
    while buf[:2] == b"\r\n":
        if buf[:4] == b"\r\n\r\n":
            del buf[:4]
            pings += 1
        elif len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
            break  # maybe the start of a ping
        else:
            del buf[:2]  # a lone CRLF (a pong, or a sender's padding)
    if pings:
        return _EMPTY, pings
    if buf and buf[0] != 13 and not 65 <= (buf[0] | 0x20) - 0x20 <= 90:
        # a SIP message starts with its method or "SIP/": anything else (a TLS hello on
        # the TCP port, binary noise) is not worth waiting for
        raise FrameError("bad_framing")
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > max_bytes:
            raise FrameError("too_large")
        return None, 0
    if end + 4 > max_bytes:
        raise FrameError("too_large")
    m = _CONTENT_LENGTH.search(buf, 0, end + 2)
    if m is None:
        raise FrameError("bad_framing", bytes(buf[: end + 4]))
    total = end + 4 + int(m.group(1))
    if total > max_bytes:
        raise FrameError("too_large")
    if len(buf) < total:
        return None, 0
    if len(buf) == total:  # the usual case: the read brought one whole message
        data = bytes(buf)
        buf.clear()
    else:
        data = bytes(memoryview(buf)[:total])
        del buf[:total]
    return data, 0


# ------------------------------------------------------------------------- connections --


def alias_key(proto: str, ip: str, port: int) -> bytes:
    if ":" in ip:  # one spelling per IPv6 address
        ip = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip))
    return f"{proto} {ip} {port}".encode()


def ip_bucket(ip: str) -> int:
    return 1 + (zlib.crc32(ip.encode()) % IP_BUCKETS)  # column 0 is the total


class Conn:
    __slots__ = (
        "sock",
        "fd",
        "lsock",
        "peer",
        "key",
        "bucket",
        "rbuf",
        "wbuf",
        "state",
        "outgoing",
        "last",
        "since",
        "events",
        "out",
    )

    def __init__(self, sock, lsock, peer: tuple, key: bytes, bucket: int, outgoing: bool, now):
        self.sock = sock
        self.fd = sock.fileno()
        self.lsock = lsock
        self.peer = peer
        self.key = key
        self.bucket = bucket
        self.rbuf = bytearray()
        self.wbuf = bytearray()
        self.state = OPEN
        self.outgoing = outgoing
        self.last = now  # the last message either way (idle lifetime)
        self.since = 0.0  # when the unfinished message in rbuf began (0: none)
        self.events = select.EPOLLIN
        self.out: list[bytes] = []  # written this round, sent by Streams.flush()


class Streams:
    """The stream connections one worker owns, and sending on anyone's.

    `shared`: SharedState (stream_aliases, stream_load); `handoff`: the worker's Handoff;
    `deliver(data, src, lsock)`: one framed message into the worker's receive path;
    `on_unreachable(lsock, dest)`: an outgoing connect failed; `tag_prefix`: To-tags of a
    400 made here."""

    def __init__(
        self, worker_id, cfg, shared, handoff, stats, ep, deliver, on_unreachable, tag_prefix
    ):
        self.worker_id = worker_id
        self.cfg = cfg.tcp
        self.aliases = shared.stream_aliases
        self.load = shared.stream_load
        self.handoff = handoff
        self.stats = stats
        self.ep = ep
        self.deliver = deliver
        self.on_unreachable = on_unreachable
        self.tag_prefix = tag_prefix
        self.fds: dict[int, Conn] = {}
        self.by_key: dict[bytes, Conn] = {}
        self.dirty: list[Conn] = []  # connections written to this round
        self.live = shared.live_workers
        self.siblings: list[int] = []  # the other workers taking work (refreshed by sweep)
        self.spread_turn = 0
        self.spread_backlog = self.cfg.spread_backlog
        self.noted: set[str] = set()  # the kinds of trouble already logged
        self.alias_ttl = self.cfg.connection_lifetime_s + ALIAS_SLACK_S
        self.max_bytes = self.cfg.max_message_bytes

    # ---------------------------------------------------------------- accepting --------

    def accept(self, lsock) -> int:
        """Accept what the listen socket holds (up to ACCEPT_BUDGET); returns how many."""
        n = 0
        for _ in range(ACCEPT_BUDGET):
            try:
                sock, addr = lsock.sock.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # out of descriptors, a connection reset before accept
                log.warning("%s: accept failed: %s", lsock.name, e)
                break
            n += 1
            peer = (addr[0], addr[1])
            bucket = ip_bucket(peer[0])
            if not self._room(bucket):
                sock.close()
                self.stats.inc(CLOSED_BY.col("limit"))
                self._note(
                    "limit",
                    f"a connection from {peer[0]} refused: [tcp] max_connections "
                    f"({self.cfg.max_connections}) or max_connections_per_ip "
                    f"({self.cfg.max_connections_per_ip}) reached",
                )
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = self._add(sock, lsock, peer, bucket, outgoing=False)
            self.stats.inc(ACCEPTED.col(lsock.proto))
            if lsock.server_ctx is not None:
                self._start_tls(c, server=True)
        return n

    def _room(self, bucket: int) -> bool:
        """Below [tcp] max_connections in all and max_connections_per_ip from this source's
        bucket (shared counts; two workers accepting at the same instant may pass by one)."""
        load = self.load
        return (
            load.column_sum(0) < self.cfg.max_connections
            and load.column_sum(bucket) < self.cfg.max_connections_per_ip
        )

    def _add(self, sock, lsock, peer, bucket, outgoing) -> Conn:
        now = time.monotonic()
        key = alias_key(lsock.proto, peer[0], peer[1])
        c = Conn(sock, lsock, peer, key, bucket, outgoing, now)
        old = self.by_key.get(key)
        if old is not None:
            self.close(old, "reset")  # a new connection from the same address replaces it
        self.fds[c.fd] = c
        self.by_key[key] = c
        self.ep.register(c.fd, c.events)
        self.aliases.put(key, self.worker_id, now, now + self.alias_ttl)
        row = self.worker_id
        self.load.add(row, 0, 1)
        self.load.add(row, bucket, 1)
        self.stats.add(OPEN_CONNECTIONS.col(lsock.proto), 1)
        return c

    def _start_tls(self, c: Conn, server: bool) -> None:
        ctx = c.lsock.server_ctx if server else c.lsock.client_ctx
        try:
            c.sock = ctx.wrap_socket(
                c.sock,
                server_side=server,
                do_handshake_on_connect=False,
                server_hostname=None if server or not ctx.check_hostname else c.peer[0],
            )
        except (ssl.SSLError, OSError, ValueError):
            self.stats.inc(TLS_FAILURES.base)
            self.close(c, "tls_failed")
            return
        c.state = HANDSHAKE
        c.since = time.monotonic()  # the handshake must end within [tcp] connect_timeout_s
        self._handshake(c)

    def _handshake(self, c: Conn) -> None:
        try:
            c.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(c, select.EPOLLIN)
            return
        except ssl.SSLWantWriteError:
            self._want(c, select.EPOLLIN | select.EPOLLOUT)
            return
        except (ssl.SSLError, OSError) as e:
            self.stats.inc(TLS_FAILURES.base)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("TLS handshake with %s:%d failed: %s", c.peer[0], c.peer[1], e)
            self.close(c, "tls_failed")
            return
        c.state = OPEN
        c.since = 0.0
        self._want(c, select.EPOLLIN | (select.EPOLLOUT if c.wbuf else 0))
        if c.wbuf:
            self._flush(c)

    def _want(self, c: Conn, events: int) -> None:
        if c.events != events and c.state != CLOSED:
            c.events = events
            self.ep.modify(c.fd, events)

    # ---------------------------------------------------------------- events -----------

    def on_event(self, fd: int, ev: int) -> None:
        c = self.fds.get(fd)
        if c is None:
            return
        if c.state == CONNECTING:
            self._connected(c)
            return
        if c.state == HANDSHAKE:
            self._handshake(c)
            if c.state != OPEN:
                return
        if ev & select.EPOLLOUT and c.wbuf:
            self._flush(c)
        if c.state == OPEN and ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            self._read(c)

    def _read(self, c: Conn) -> None:
        sock = c.sock
        got = False
        # a TLS record is at most 16 kB: a short read says nothing about what is left
        short_is_all = c.lsock.server_ctx is None
        for _ in range(READ_BUDGET):
            try:
                chunk = sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                self._want(c, select.EPOLLIN | select.EPOLLOUT)
                break
            except (OSError, ssl.SSLError):
                self.close(c, "reset")
                return
            if not chunk:
                if got:
                    self._frame(c)
                if c.state != CLOSED:
                    self.close(c, "eof")
                return
            c.rbuf += chunk
            got = True
            if short_is_all and len(chunk) < READ_CHUNK:
                break
        if got:
            self._frame(c)

    def _frame(self, c: Conn) -> None:
        buf = c.rbuf
        got: list[bytes] = []
        bad = None
        framed = False
        while buf and c.state == OPEN:
            try:
                data, pings = frame(buf, self.max_bytes)
            except FrameError as e:
                bad = e
                break
            if data is None:
                break
            framed = True
            if pings:
                self.stats.add(KEEPALIVES.base, pings)
                for _ in range(pings):
                    self._write(c, b"\r\n")  # RFC 5626 3.5.1: the pong
                continue
            got.append(data)
        if framed:
            c.last = time.monotonic()
        if self.spread_backlog and len(got) >= self.spread_backlog and self.siblings:
            self._spread(c, got)
        else:
            for data in got:
                self.deliver(data, c.peer, c.lsock)
        if bad is not None:
            if c.state == OPEN:
                self._bad_stream(c, bad)
            return
        if buf:
            # what is left began after the last whole message: a busy connection whose
            # reads end mid-message is not a slow sender
            if framed or not c.since:
                c.since = time.monotonic()
        else:
            c.since = 0.0

    def _spread(self, c: Conn, got: list[bytes]) -> None:
        """A read that brought a backlog of messages: its requests go round the workers that
        take work (this one included), so that one busy connection (a trunk) does not hold
        its whole load on one worker. The others process them as if they had read them and
        their answers come back here to be written (handed sends). Replies stay: their
        transaction's owner is named by their branch anyway."""
        targets = self.siblings
        n = len(targets) + 1
        turn = self.spread_turn
        index = c.lsock.index | SPREAD_FLAG
        for data in got:
            if data[:4] != b"SIP/":
                turn = (turn + 1) % n
                if turn and self.handoff.send(targets[turn - 1], index, c.peer, data):
                    self.stats.inc(SPREAD.base)
                    continue
            self.deliver(data, c.peer, c.lsock)
        self.spread_turn = turn

    def _note(self, what: str, text: str) -> None:
        """A warning once per kind per worker (a flood costs one line; the counters in
        kampx_tcp_closed_total say how many)."""
        if what not in self.noted:
            self.noted.add(what)
            log.warning("%s (logged once; kampx_tcp_closed_total counts them)", text)

    def _refresh_siblings(self) -> None:
        live = self.live
        me = self.worker_id
        self.siblings = [w for w in range(live.shape[1]) if w != me and live.get(0, w)]

    def _bad_stream(self, c: Conn, e: FrameError) -> None:
        """What cannot be framed: a 400 when it is a request that can be addressed (no
        Content-Length), then the connection is closed (the stream has lost its place)."""
        self.stats.inc(BAD_MSG_HDR.base)
        reason = e.args[0]
        out = c.out  # what this round answered before: it goes first
        if len(e.args) > 1:
            reply = sl.salvage_400(e.args[1], c.peer, "Content-Length required", self.tag_prefix)
            if reply is not None:
                out.append(reply[0])
        if out and not c.wbuf:
            self._send_now(c, b"".join(out))
        out.clear()
        self.close(c, reason)

    # ---------------------------------------------------------------- sending ----------

    def send(self, lsock, data: bytes, dest: tuple, handed: bool = False) -> bool:
        """Write one message to `dest` over `lsock`'s transport: on our connection to it,
        through the worker that owns one, or on a new one. False when it cannot go."""
        ip, port = dest[0], dest[1]
        key = alias_key(lsock.proto, ip, port)
        c = self.by_key.get(key)
        if c is not None:
            return self._write(c, data)
        if not handed:
            owner = self.aliases.lookup(key, time.monotonic())
            if 0 <= owner != self.worker_id:
                if self.handoff.send(owner, lsock.index | SEND_FLAG, (ip, port), data):
                    self.stats.inc(HANDED_SENDS.base)
                    return True
                self.aliases.release(key, owner)  # that worker is gone: its alias too
        return self._connect(lsock, (ip, port), data)

    def _write(self, c: Conn, data: bytes) -> bool:
        """Write a message: gathered with the others for this connection until the worker's
        loop calls flush() at the end of its round (one system call for the replies to
        everything one read brought)."""
        c.last = time.monotonic()
        if c.state != OPEN or c.wbuf:
            return self._queue(c, data)
        if not c.out:
            self.dirty.append(c)
        c.out.append(data)
        return True

    def flush(self) -> None:
        """Send what this round wrote on each connection."""
        dirty = self.dirty
        self.dirty = []
        for c in dirty:
            out = c.out
            if not out or c.state != OPEN:
                continue
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if c.wbuf:
                self._queue(c, data)
            else:
                self._send_now(c, data)

    def _send_now(self, c: Conn, data: bytes) -> bool:
        try:
            n = c.sock.send(data)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            n = 0
        except (OSError, ssl.SSLError):
            self.close(c, "reset")
            return False
        if n < len(data):
            return self._queue(c, memoryview(data)[n:])
        return True

    def _queue(self, c: Conn, data) -> bool:
        if len(c.wbuf) + len(data) > self.cfg.max_send_queue_bytes:
            self._note(
                "send_queue_full",
                f"connection to {c.peer[0]}:{c.peer[1]} closed: the peer does not take what "
                f"is written ([tcp] max_send_queue_bytes {self.cfg.max_send_queue_bytes})",
            )
            self.close(c, "send_queue_full")
            return False
        c.wbuf += data
        if c.state == OPEN:
            self._want(c, select.EPOLLIN | select.EPOLLOUT)
        return True

    def _flush(self, c: Conn) -> None:
        try:
            n = c.sock.send(c.wbuf)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        except (OSError, ssl.SSLError):
            self.close(c, "reset")
            return
        del c.wbuf[:n]
        if not c.wbuf:
            self._want(c, select.EPOLLIN)

    def _connect(self, lsock, dest: tuple, data: bytes) -> bool:
        """A new connection to `dest` from `lsock`'s address, `data` queued until it is up."""
        bucket = ip_bucket(dest[0])
        if self.load.column_sum(0) >= self.cfg.max_connections:
            self.stats.inc(CLOSED_BY.col("limit"))
            self._note(
                "limit-out",
                f"no connection opened to {dest[0]}:{dest[1]}: [tcp] max_connections "
                f"({self.cfg.max_connections}) reached",
            )
            return False
        sock = socket.socket(lsock.family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((lsock.addr.host, 0))
            err = sock.connect_ex(dest)
        except (OSError, OverflowError, ValueError, TypeError):
            sock.close()
            return False
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.stats.inc(CLOSED_BY.col("connect_failed"))
            return False
        c = self._add(sock, lsock, dest, bucket, outgoing=True)
        self.stats.inc(CONNECTED.col(lsock.proto))
        c.state = CONNECTING
        c.since = c.last  # the connect timeout runs from here
        c.wbuf += data
        self._want(c, select.EPOLLOUT)
        return True

    def _connected(self, c: Conn) -> None:
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.close(c, "connect_failed")
            return
        c.since = 0.0
        if c.lsock.client_ctx is not None:
            self._start_tls(c, server=False)
            return
        c.state = OPEN
        self._want(c, select.EPOLLIN | select.EPOLLOUT)
        self._flush(c)

    # ---------------------------------------------------------------- closing ----------

    def close(self, c: Conn, reason: str) -> None:
        if c.state == CLOSED:
            return
        failed_connect = c.outgoing and c.state in (CONNECTING, HANDSHAKE)
        c.state = CLOSED
        self.fds.pop(c.fd, None)
        if self.by_key.get(c.key) is c:
            del self.by_key[c.key]
            self.aliases.release(c.key, self.worker_id)
        try:
            self.ep.unregister(c.fd)
        except OSError:
            pass
        # the shared counts drop before the socket closes: a peer that sees the close and
        # connects again at once must find its slot free ([tcp] max_connections_per_ip)
        row = self.worker_id
        self.load.add(row, 0, -1)
        self.load.add(row, c.bucket, -1)
        self.stats.add(OPEN_CONNECTIONS.col(c.lsock.proto), -1)
        self.stats.inc(CLOSED_BY.col(reason))
        try:
            c.sock.close()
        except OSError:
            pass
        if failed_connect:
            self.on_unreachable(c.lsock, c.peer)

    def sweep(self, now: float) -> None:
        """Once a second: idle connections, slow messages and connects that take too long
        are closed; the aliases of the others are kept alive."""
        self._refresh_siblings()
        cfg = self.cfg
        idle_before = now - cfg.connection_lifetime_s
        refresh_at = now + self.alias_ttl
        for c in list(self.fds.values()):
            if c.state == CONNECTING or c.state == HANDSHAKE:
                limit = cfg.connect_timeout_s
                if c.since and now - c.since > limit:
                    if c.state == HANDSHAKE:
                        self.stats.inc(TLS_FAILURES.base)
                    self.close(c, "connect_failed" if c.state == CONNECTING else "tls_failed")
                continue
            if c.last < idle_before and not c.wbuf:
                self.close(c, "idle")
            elif c.since and now - c.since > cfg.message_timeout_s:
                self.close(c, "slow")
            else:
                self.aliases.refresh(c.key, self.worker_id, refresh_at)

    def close_all(self) -> None:
        self.flush()
        for c in list(self.fds.values()):
            if c.wbuf and c.state == OPEN:
                try:  # what is queued, one last try
                    c.sock.setblocking(True)
                    c.sock.settimeout(0.2)
                    c.sock.sendall(c.wbuf)
                except (OSError, ssl.SSLError):
                    pass
            self.close(c, "shutdown")
