"""A SIP endpoint on one TCP or TLS connection, for the stream transport tests: it sends text
and reads whole messages framed by their Content-Length, as RFC 3261 18.3 frames them.
A StreamServer is the other side: a listening gateway the proxy connects to."""

from __future__ import annotations

import re
import socket
import ssl
import time

from sipclient import Request, SipMessage, authorize, new_branch, new_callid, new_tag, parse

_CL = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.I)


class StreamPeer:
    """One connection (`sock`, already connected), read message by message."""

    def __init__(self, sock: socket.socket, transport: str = "TCP"):
        self.sock = sock
        self.sock.settimeout(3.0)
        self.transport = transport
        self.buf = bytearray()
        self.ip, self.port = sock.getsockname()[:2]
        self.hostport = f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"

    @classmethod
    def connect(cls, src_ip: str, dest: tuple, tls: ssl.SSLContext | None = None) -> StreamPeer:
        family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(3.0)
        s.bind((src_ip, 0))
        s.connect(dest)
        if tls is not None:
            s = tls.wrap_socket(s, server_hostname=None)
        return cls(s, "TLS" if tls is not None else "TCP")

    def send(self, data: str | bytes) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def recv_raw(self, timeout: float = 3.0) -> bytes:
        """The next whole message's bytes (b"" when the proxy closed the connection)."""
        deadline = time.monotonic() + timeout
        while True:
            while self.buf[:2] == b"\r\n":
                del self.buf[:2]
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                m = _CL.search(self.buf, 0, end + 2)
                assert m is not None, f"a message without Content-Length: {bytes(self.buf)!r}"
                total = end + 4 + int(m.group(1))
                if len(self.buf) >= total:
                    data = bytes(self.buf[:total])
                    del self.buf[:total]
                    return data
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no whole message in {timeout} s: {bytes(self.buf)!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                return b""
            self.buf += chunk

    def recv(self, timeout: float = 3.0, skip_provisional: bool = False) -> SipMessage:
        while True:
            data = self.recv_raw(timeout)
            assert data, "the proxy closed the connection"
            msg = parse(data)
            if skip_provisional and not msg.is_request and msg.status < 200:
                continue
            return msg

    def wait_closed(self, timeout: float) -> bool:
        """True when the proxy closes the connection within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, socket.timeout):
                return False
            except (ConnectionResetError, ssl.SSLError):
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False

    def close(self) -> None:
        self.sock.close()


class StreamServer:
    """A listening TCP (or TLS) gateway: accept() gives the proxy's connection as a peer."""

    def __init__(self, ip: str, port: int = 0, tls: ssl.SSLContext | None = None):
        self.sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.sock.listen(16)
        self.sock.settimeout(3.0)
        self.tls = tls
        self.ip, self.port = ip, self.sock.getsockname()[1]

    def accept(self, timeout: float = 3.0) -> StreamPeer:
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True)
        return StreamPeer(conn, "TLS" if self.tls is not None else "TCP")

    def close(self) -> None:
        self.sock.close()


def lines(*heads: str, body: str = "") -> str:
    """A message from its lines and body, Content-Length counted."""
    return "\r\n".join(heads) + f"\r\nContent-Length: {len(body.encode())}\r\n\r\n" + body


def echo_reply(req: SipMessage, code: int, reason: str, to_tag: str, contact: str | None) -> str:
    """A UAS's reply: Via, Record-Route, From, Call-ID and CSeq as received."""
    heads = [f"SIP/2.0 {code} {reason}"]
    heads += [f"Via: {v}" for v in req.get_all("via")]
    heads += [f"Record-Route: {v}" for v in req.get_all("record-route")]
    to = req.get("to")
    heads += [
        f"From: {req.get('from')}",
        f"To: {to}" if ";tag=" in to else f"To: {to};tag={to_tag}",
        f"Call-ID: {req.get('call-id')}",
        f"CSeq: {req.get('cseq')}",
    ]
    if contact:
        heads.append(f"Contact: <{contact}>")
    return lines(*heads)


def options(peer: StreamPeer, target: str) -> str:
    """A keepalive OPTIONS to `target` (a request URI) over the peer's connection, its Via
    naming the peer's transport."""
    return lines(
        f"OPTIONS {target} SIP/2.0",
        f"Via: SIP/2.0/{peer.transport} {peer.hostport};branch={new_branch()};rport",
        f"From: <sip:ka@{peer.hostport}>;tag={new_tag()}",
        f"To: <{target}>",
        f"Call-ID: {new_callid()}",
        "CSeq: 1 OPTIONS",
        "Max-Forwards: 70",
    )


class UdpPeer:
    """A UDP endpoint talking to one proxy address, with the send/recv of a StreamPeer."""

    def __init__(self, ip: str, proxy: tuple, port: int = 0):
        self.sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.sock.settimeout(3.0)
        self.proxy = proxy
        self.transport = "UDP"
        self.ip, self.port = ip, self.sock.getsockname()[1]
        self.hostport = f"[{ip}]:{self.port}" if ":" in ip else f"{ip}:{self.port}"

    def send(self, data: str | bytes) -> None:
        self.sock.sendto(data.encode() if isinstance(data, str) else data, self.proxy)

    def recv(self, timeout: float = 3.0, skip_provisional: bool = False) -> SipMessage:
        self.sock.settimeout(timeout)
        while True:
            msg = parse(self.sock.recvfrom(65535)[0])
            if skip_provisional and not msg.is_request and msg.status < 200:
                continue
            return msg

    def close(self) -> None:
        self.sock.close()


def register(peer, user: str, password: str, contact_params: str = "") -> None:
    """A digest REGISTER of `user` from `peer` (a StreamPeer or UdpPeer): 401, then 200."""
    reg = Request("REGISTER", "sip:kampx.test", [
        ("Via", f"SIP/2.0/{peer.transport} {peer.hostport};branch={new_branch()};rport"),
        ("From", f"<sip:{user}@kampx.test>;tag={new_tag()}"),
        ("To", f"<sip:{user}@kampx.test>"),
        ("Call-ID", new_callid()),
        ("CSeq", "1 REGISTER"),
        ("Contact", f"<sip:{user}@{peer.hostport}{contact_params}>"),
        ("Expires", "300"),
        ("Max-Forwards", "70"),
    ])
    peer.send(reg.encode())
    challenge = peer.recv()
    assert challenge.status == 401, challenge.first_line
    peer.send(authorize(reg, challenge, user, password).encode())
    ok = peer.recv()
    assert ok.status == 200, ok.first_line


def outbound_invite(peer, user: str, password: str, number: str = "+15559999"):
    """`user` calls `number`, which no one registered: 407, then the authorized INVITE that
    goes to the carrier. Returns (the first INVITE, the 407, the authorized INVITE)."""
    inv = Request("INVITE", f"sip:{number}@kampx.test", [
        ("Via", f"SIP/2.0/{peer.transport} {peer.hostport};branch={new_branch()};rport"),
        ("From", f"<sip:{user}@kampx.test>;tag={new_tag()}"),
        ("To", f"<sip:{number}@kampx.test>"),
        ("Call-ID", new_callid()),
        ("CSeq", "1 INVITE"),
        ("Contact", f"<sip:{user}@{peer.hostport}>"),
        ("Max-Forwards", "70"),
    ])
    peer.send(inv.encode())
    challenge = peer.recv(skip_provisional=True)
    assert challenge.status == 407, challenge.first_line
    authed = authorize(inv, challenge, user, password)
    peer.send(authed.encode())
    return inv, challenge, authed
