"""A small, exact SIP-over-UDP toolkit for the wire tests: message parser, request builder,
client socket, digest answers and an in-process UAS.

It deliberately does not import kampx: the tests judge kampx from the outside, so they must
not share its parser (a bug there would be invisible). Everything here is loopback-only.
"""
from __future__ import annotations

import hashlib
import heapq
import itertools
import os
import re
import select
import socket
import threading
import time
from dataclasses import dataclass, field

# RFC 3261 7.3.3 (and later RFCs): compact header forms -> full lowercase names
COMPACT = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length",
    "c": "content-type", "f": "from", "s": "subject", "k": "supported", "t": "to", "v": "via",
    "o": "event", "r": "refer-to", "b": "referred-by", "x": "session-expires",
    "u": "allow-events", "a": "accept-contact", "j": "reject-contact",
    "d": "request-disposition", "y": "identity", "n": "identity-info",
}

T1 = 0.5
T2 = 4.0


def norm(name: str) -> str:
    """Header name as a lookup key: lowercase, compact form expanded."""
    key = name.strip().lower()
    return COMPACT.get(key, key)


def new_branch() -> str:
    return "z9hG4bK" + os.urandom(8).hex()


def new_tag() -> str:
    return os.urandom(5).hex()


def new_callid(host: str = "wire.test") -> str:
    return f"{os.urandom(10).hex()}@{host}"


# -- header value helpers -----------------------------------------------------------------

def split_commas(value: str) -> list[str]:
    """Split a header value on the commas that separate values, not those inside quotes or
    <...> (a Via, Route or Contact line may carry several values)."""
    out, cur, quoted, angle = [], [], False, False
    i = 0
    while i < len(value):
        ch = value[i]
        if quoted:
            cur.append(ch)
            if ch == "\\" and i + 1 < len(value):
                cur.append(value[i + 1])
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
            cur.append(ch)
        elif ch == "<":
            angle = True
            cur.append(ch)
        elif ch == ">":
            angle = False
            cur.append(ch)
        elif ch == "," and not angle:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def uri_of(value: str) -> str:
    """The URI in a name-addr or addr-spec header value (From, To, Contact, Route...)."""
    if "<" in value:
        return value[value.index("<") + 1:value.index(">", value.index("<"))]
    return value.split(";", 1)[0].strip()


def header_params(value: str) -> dict[str, str | None]:
    """The ;params after the URI (name-addr) or after the sent-by (Via). Names lowercased."""
    rest = value[value.index(">", value.index("<")) + 1:] if "<" in value else value
    parts = rest.split(";")[1:]
    out: dict[str, str | None] = {}
    for p in parts:
        name, eq, val = p.strip().partition("=")
        out[name.strip().lower()] = val.strip().strip('"') if eq else None
    return out


def uri_host_port(uri: str) -> tuple[str, int | None]:
    """('127.1.2.3', 5060) from sip:user@127.1.2.3:5060;params (port None when absent)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    hostport = rest.rsplit("@", 1)[-1]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        return host, int(tail[1:]) if tail.startswith(":") else None
    host, _, port = hostport.partition(":")
    return host, int(port) if port else None


def uri_user(uri: str) -> str | None:
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    rest = rest.split(";", 1)[0]
    return rest.rsplit("@", 1)[0] if "@" in rest else None


# -- parsed messages ----------------------------------------------------------------------

class ParseError(ValueError):
    pass


@dataclass
class SipMessage:
    """One parsed SIP message. Headers keep their received order and spelling; lookups go by
    normalised name (compact forms expanded, case ignored)."""
    raw: bytes
    first_line: str
    headers: list[tuple[str, str]]
    body: bytes
    source: tuple[str, int] | None = None
    received_at: float = 0.0
    method: str | None = None       # requests
    uri: str | None = None
    status: int | None = None       # responses
    reason: str | None = None

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str) -> str | None:
        key = norm(name)
        for n, v in self.headers:
            if norm(n) == key:
                return v
        return None

    def get_all(self, name: str, split: bool = False) -> list[str]:
        """Every value of a header, in order; split=True also splits comma-joined values."""
        key = norm(name)
        vals = [v for n, v in self.headers if norm(n) == key]
        if split:
            vals = [x for v in vals for x in split_commas(v)]
        return vals

    def has(self, name: str) -> bool:
        return self.get(name) is not None

    def names(self) -> list[str]:
        """Header names as normalised keys, in order (for comparing the shape of replies)."""
        return [norm(n) for n, _ in self.headers]

    @property
    def call_id(self) -> str | None:
        return self.get("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        num, _, meth = (self.get("cseq") or "").strip().partition(" ")
        return int(num), meth.strip()

    @property
    def vias(self) -> list[str]:
        return self.get_all("via", split=True)

    @property
    def branch(self) -> str | None:
        vias = self.vias
        return header_params(vias[0]).get("branch") if vias else None

    @property
    def from_tag(self) -> str | None:
        return header_params(self.get("from") or "").get("tag")

    @property
    def to_tag(self) -> str | None:
        return header_params(self.get("to") or "").get("tag")

    def __str__(self) -> str:
        return self.raw.decode("utf-8", "replace")


def parse(data: bytes, source=None) -> SipMessage:
    """Parse one datagram. Raises ParseError when it is not a SIP message at all."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        idx = data.find(sep)
        if idx >= 0:
            head, body = data[:idx], data[idx + len(sep):]
            break
    else:
        head, body = data, b""
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    if not lines or not lines[0].strip():
        raise ParseError("empty message")
    first = lines[0].strip()
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation line
            n, v = headers[-1]
            headers[-1] = (n, v + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ParseError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    msg = SipMessage(raw=data, first_line=first, headers=headers, body=body, source=source,
                     received_at=time.monotonic())
    if first.startswith("SIP/"):
        m = re.match(r"SIP/2\.0 (\d{3}) ?(.*)$", first)
        if not m:
            raise ParseError(f"bad status line {first!r}")
        msg.status, msg.reason = int(m.group(1)), m.group(2)
    else:
        m = re.match(r"([A-Za-z]+) (\S+) SIP/2\.0$", first)
        if not m:
            raise ParseError(f"bad request line {first!r}")
        msg.method, msg.uri = m.group(1), m.group(2)
    return msg


# -- building requests --------------------------------------------------------------------

class Request:
    """A request being built: request line, ordered headers, body. Content-Length is computed
    at encode() time unless set explicitly (tests set wrong ones on purpose)."""

    def __init__(self, method: str, uri: str, headers: list[tuple[str, str]] | None = None,
                 body: bytes | str = b"", version: str = "SIP/2.0"):
        self.method = method
        self.uri = uri
        self.version = version
        self.headers: list[list[str]] = [[n, v] for n, v in (headers or [])]
        self.body = body.encode() if isinstance(body, str) else body
        self.auto_length = True

    def get(self, name: str) -> str | None:
        key = norm(name)
        for n, v in self.headers:
            if norm(n) == key:
                return v
        return None

    def set(self, name: str, value: str) -> "Request":
        """Replace the first header of that name (dropping others), or append it."""
        key = norm(name)
        for i, (n, _) in enumerate(self.headers):
            if norm(n) == key:
                self.headers[i][1] = value
                self.headers = [h for j, h in enumerate(self.headers) if j <= i or norm(h[0]) != key]
                return self
        self.headers.append([name, value])
        return self

    def add(self, name: str, value: str, top: bool = False) -> "Request":
        """Add a header line; top=True puts it before every other header of that name."""
        if top:
            key = norm(name)
            for i, (n, _) in enumerate(self.headers):
                if norm(n) == key:
                    self.headers.insert(i, [name, value])
                    return self
        self.headers.append([name, value])
        return self

    def remove(self, name: str) -> "Request":
        key = norm(name)
        self.headers = [h for h in self.headers if norm(h[0]) != key]
        if key == "content-length":
            self.auto_length = False
        return self

    def set_content_length(self, value: str | int | None) -> "Request":
        """Force a Content-Length value (None: send none at all)."""
        self.headers = [h for h in self.headers if norm(h[0]) != "content-length"]
        self.auto_length = False
        if value is not None:
            self.headers.append(["Content-Length", str(value)])
        return self

    @property
    def branch(self) -> str | None:
        via = self.get("via")
        return header_params(via).get("branch") if via else None

    @property
    def cseq(self) -> tuple[int, str]:
        num, _, meth = (self.get("cseq") or "").partition(" ")
        return int(num), meth.strip()

    def encode(self) -> bytes:
        lines = [f"{self.method} {self.uri} {self.version}"]
        lines += [f"{n}: {v}" for n, v in self.headers if norm(n) != "content-length" or not self.auto_length]
        if self.auto_length:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body

    def copy(self) -> "Request":
        r = Request(self.method, self.uri, [tuple(h) for h in self.headers], self.body, self.version)
        r.auto_length = self.auto_length
        return r


# -- digest authentication (RFC 2617, RFC 7616 / RFC 8760) --------------------------------

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256, "SHA-512-256": None}


def _h(algorithm: str, text: str) -> str:
    base = algorithm.upper().removesuffix("-SESS")
    if base == "MD5":
        return hashlib.md5(text.encode()).hexdigest()
    if base == "SHA-256":
        return hashlib.sha256(text.encode()).hexdigest()
    raise ValueError(f"unsupported digest algorithm {algorithm}")


def ha1(user: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    return _h(algorithm, f"{user}:{realm}:{password}")


def parse_challenge(value: str) -> dict[str, str]:
    """'Digest realm="r", nonce="n", qop="auth"' -> {'scheme': 'Digest', 'realm': 'r', ...}.
    Parameter names are lowercased; quoted values unquoted."""
    scheme, _, rest = value.strip().partition(" ")
    out = {"scheme": scheme}
    for m in re.finditer(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?', rest):
        val = m.group(2)
        if val.startswith('"'):
            val = val[1:-1].replace('\\"', '"')
        out[m.group(1).lower()] = val
    return out


def digest_response(*, username: str, realm: str, nonce: str, method: str, uri: str,
                    password: str | None = None, ha1_hex: str | None = None,
                    algorithm: str = "MD5", qop: str | None = None, nc: int = 1,
                    cnonce: str | None = None, opaque: str | None = None,
                    body: bytes = b"", include_algorithm: bool | None = None) -> str:
    """The Authorization / Proxy-Authorization value answering a challenge.

    qop: None (RFC 2069 form), "auth" or "auth-int". algorithm: MD5, MD5-sess, SHA-256,
    SHA-256-sess. Either the password or a precomputed HA1 is needed."""
    alg = algorithm.upper()
    if ha1_hex is None:
        if password is None:
            raise ValueError("need password or ha1_hex")
        ha1_hex = ha1(username, realm, password, alg)
    if cnonce is None and (qop or alg.endswith("-SESS")):
        cnonce = os.urandom(8).hex()
    if alg.endswith("-SESS"):
        ha1_hex = _h(alg, f"{ha1_hex}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}" if qop != "auth-int" else f"{method}:{uri}:{_h(alg, body.decode('latin-1'))}"
    ha2 = _h(alg, a2)
    ncs = f"{nc:08x}"
    if qop:
        resp = _h(alg, f"{ha1_hex}:{nonce}:{ncs}:{cnonce}:{qop}:{ha2}")
    else:
        resp = _h(alg, f"{ha1_hex}:{nonce}:{ha2}")
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
             f'response="{resp}"']
    if include_algorithm or (include_algorithm is None and alg != "MD5"):
        parts.append(f"algorithm={algorithm}")
    if qop:
        parts += [f"qop={qop}", f"nc={ncs}", f'cnonce="{cnonce}"']
    if opaque is not None:
        parts.append(f'opaque="{opaque}"')
    return "Digest " + ", ".join(parts)


def pick_challenge(resp: SipMessage, prefer: tuple[str, ...] = ("MD5",)) -> dict[str, str]:
    """The challenge of a 401/407 to answer: the first offered with an algorithm in `prefer`
    (a challenge without algorithm= means MD5)."""
    name = "www-authenticate" if resp.status == 401 else "proxy-authenticate"
    challenges = [parse_challenge(v) for v in resp.get_all(name)]
    if not challenges:
        raise AssertionError(f"{resp.status} without {name}:\n{resp}")
    for alg in prefer:
        for ch in challenges:
            if ch.get("algorithm", "MD5").upper() == alg.upper():
                return ch
    raise AssertionError(f"no challenge with algorithm in {prefer}: {challenges}")


def authorize(req: Request, resp: SipMessage, username: str, password: str | None = None, *,
              ha1_hex: str | None = None, prefer: tuple[str, ...] = ("MD5",), nc: int = 1,
              realm: str | None = None, nonce: str | None = None, uri: str | None = None,
              bump_cseq: bool = True) -> Request:
    """The request again, answering the 401/407 `resp`: new branch, CSeq + 1, and an
    Authorization (401) or Proxy-Authorization (407). realm/nonce/uri override what goes into
    the credentials (for forging bad ones on purpose)."""
    ch = pick_challenge(resp, prefer)
    qop = None
    if ch.get("qop"):
        offered = [q.strip() for q in ch["qop"].split(",")]
        qop = "auth" if "auth" in offered else offered[0]
    value = digest_response(username=username, password=password, ha1_hex=ha1_hex,
                            realm=realm if realm is not None else ch["realm"],
                            nonce=nonce if nonce is not None else ch["nonce"],
                            method=req.method, uri=uri or req.uri,
                            algorithm=ch.get("algorithm", "MD5"), qop=qop, nc=nc,
                            opaque=ch.get("opaque"), body=req.body,
                            include_algorithm="algorithm" in ch)
    out = req.copy()
    hdr = "Authorization" if resp.status == 401 else "Proxy-Authorization"
    out.remove("Authorization").remove("Proxy-Authorization")
    out.add(hdr, value)
    via = out.get("via")
    out.set("Via", re.sub(r"branch=[^;,\s]+", "branch=" + new_branch(), via))
    if bump_cseq:
        num, meth = out.cseq
        out.set("CSeq", f"{num + 1} {meth}")
    return out


# -- the client socket --------------------------------------------------------------------

class SipClient:
    """A UDP endpoint on a loopback address that builds, sends and receives SIP."""

    def __init__(self, ip: str, port: int = 0, proxy: tuple[str, int] | None = None,
                 user: str = "wire", domain: str | None = None):
        if not ip.startswith("127.") and ip != "::1":
            raise ValueError(f"{ip}: loopback addresses only")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.ip, self.port = self.sock.getsockname()[:2]
        self.proxy = proxy
        self.user = user
        self.domain = domain or ip
        self.log: list[tuple[str, tuple, bytes]] = []  # ("out"/"in", peer, datagram)
        self._pending: list[SipMessage] = []

    # context manager / cleanup
    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def hostport(self) -> str:
        return f"{self.ip}:{self.port}"

    def contact_uri(self, user: str | None = None, params: str = "") -> str:
        return f"sip:{user or self.user}@{self.ip}:{self.port}{params}"

    def request(self, method: str, uri: str, *, from_uri: str | None = None,
                from_tag: str | None = "auto", to_uri: str | None = None,
                to_tag: str | None = None, call_id: str | None = None, cseq: int = 1,
                cseq_method: str | None = None, branch: str | None = None,
                via: str | None = None, rport: bool = True, max_forwards: int | str | None = 70,
                contact: str | None = "auto", expires: int | None = None,
                user_agent: str | None = None, headers: list[tuple[str, str]] | None = None,
                body: bytes | str = b"", content_type: str | None = None) -> Request:
        """A request with the usual headers in the usual order. Pass None to leave a header
        out (from_uri etc. default to this client's user at its domain)."""
        if from_uri is None:
            from_uri = f"sip:{self.user}@{self.domain}"
        if to_uri is None:
            to_uri = uri if method != "REGISTER" else from_uri
        if from_tag == "auto":
            from_tag = new_tag()
        hdrs: list[tuple[str, str]] = []
        if via is None:
            via = (f"SIP/2.0/UDP {self.ip}:{self.port};"
                   + ("rport;" if rport else "") + f"branch={branch or new_branch()}")
        if via:
            hdrs.append(("Via", via))
        if max_forwards is not None:
            hdrs.append(("Max-Forwards", str(max_forwards)))
        if from_uri:
            hdrs.append(("From", f"<{from_uri}>" + (f";tag={from_tag}" if from_tag else "")))
        if to_uri:
            hdrs.append(("To", f"<{to_uri}>" + (f";tag={to_tag}" if to_tag else "")))
        if call_id is not False:
            hdrs.append(("Call-ID", call_id or new_callid(self.ip)))
        if cseq is not None:
            hdrs.append(("CSeq", f"{cseq} {cseq_method or method}"))
        if contact == "auto":
            contact = f"<{self.contact_uri()}>" if method in ("INVITE", "REGISTER", "SUBSCRIBE") else None
        if contact:
            hdrs.append(("Contact", contact))
        if expires is not None:
            hdrs.append(("Expires", str(expires)))
        if user_agent:
            hdrs.append(("User-Agent", user_agent))
        hdrs.extend(headers or [])
        if body and content_type is None:
            content_type = "application/sdp"
        if content_type:
            hdrs.append(("Content-Type", content_type))
        return Request(method, uri, hdrs, body)

    def send(self, msg: Request | SipMessage | bytes | str, dest: tuple[str, int] | None = None) -> None:
        dest = dest or self.proxy
        if dest is None:
            raise ValueError("no destination")
        if not (dest[0].startswith("127.") or dest[0] == "::1"):
            raise ValueError(f"{dest[0]}: loopback addresses only")
        if isinstance(msg, Request):
            data = msg.encode()
        elif isinstance(msg, SipMessage):
            data = msg.raw
        elif isinstance(msg, str):
            data = msg.encode()
        else:
            data = msg
        self.log.append(("out", dest, data))
        self.sock.sendto(data, dest)

    def recv(self, timeout: float = 2.0, match=None) -> SipMessage | None:
        """The next received message for which match(msg) is true (every message when match
        is None), or None after `timeout` seconds. Non-matching messages are kept for later
        recv() calls; datagrams that do not parse are logged and skipped."""
        for i, m in enumerate(self._pending):
            if match is None or match(m):
                return self._pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return None
            data, src = self.sock.recvfrom(65535)
            self.log.append(("in", src, data))
            try:
                m = parse(data, src)
            except ParseError:
                continue
            if match is None or match(m):
                return m
            self._pending.append(m)

    def expect(self, timeout: float = 2.0, match=None, what: str = "a message") -> SipMessage:
        m = self.recv(timeout, match)
        if m is None:
            raise AssertionError(f"timeout ({timeout}s) waiting for {what} at {self.hostport}; "
                                 f"received: {[d[:60] for k, _, d in self.log if k == 'in'][-5:]}")
        return m

    def response(self, req: Request, timeout: float = 2.0, status=None,
                 skip_provisional: bool = False) -> SipMessage | None:
        """The next response to `req` (same branch and CSeq); status filters on a code or a
        collection of codes; skip_provisional ignores 1xx."""
        branch, (num, meth) = req.branch, req.cseq

        def ok(m: SipMessage) -> bool:
            if m.is_request or m.branch != branch or m.cseq != (num, meth):
                return False
            if status is None:
                return not (skip_provisional and m.status < 200)
            return m.status == status if isinstance(status, int) else m.status in status

        def same_txn_provisional(m: SipMessage) -> bool:
            return (not m.is_request and m.status < 200 and m.branch == branch
                    and m.cseq == (num, meth))
        found = self.recv(timeout, ok)
        # provisionals passed over on the way are consumed: they came before what we waited for
        self._pending = [m for m in self._pending
                         if not (same_txn_provisional(m) and (found is None or m.received_at <= found.received_at))]
        return found

    def expect_response(self, req: Request, timeout: float = 2.0, status=None,
                        skip_provisional: bool = False) -> SipMessage:
        m = self.response(req, timeout, status, skip_provisional)
        if m is None:
            raise AssertionError(f"no response (status {status}) to {req.method} {req.uri} within {timeout}s; "
                                 f"received: {[d[:60] for k, _, d in self.log if k == 'in'][-5:]}")
        return m

    def final(self, req: Request, timeout: float = 2.0) -> SipMessage:
        return self.expect_response(req, timeout, skip_provisional=True)

    def quiet(self, seconds: float, match=None) -> list[SipMessage]:
        """Everything (or everything matching) received during `seconds`."""
        out, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            m = self.recv(left, match)
            if m is None:
                break
            out.append(m)
        return out

    def transact(self, req: Request, timeout: float = 2.0) -> SipMessage:
        """Send and return the final response."""
        self.send(req)
        return self.final(req, timeout)


# -- dialog helpers -----------------------------------------------------------------------

def ack_for(invite: Request, resp: SipMessage) -> Request:
    """The ACK to a non-2xx final: same R-URI, branch (top Via), From, Call-ID and Route as the
    INVITE, To from the response (RFC 3261 17.1.1.3)."""
    hdrs = [("Via", invite.get("via"))]
    for name in ("Max-Forwards", "From"):
        if invite.get(name) is not None:
            hdrs.append((name, invite.get(name)))
    hdrs += [("To", resp.get("to")), ("Call-ID", invite.get("call-id")),
             ("CSeq", f"{invite.cseq[0]} ACK")]
    hdrs += [(n, v) for n, v in invite.headers if norm(n) == "route"]
    return Request("ACK", invite.uri, hdrs)


def route_set(resp: SipMessage) -> list[str]:
    """The caller's route set from a 2xx/18x: Record-Route reversed."""
    return list(reversed(resp.get_all("record-route", split=True)))


def in_dialog(method: str, invite: Request, resp: SipMessage, cseq: int | None = None,
              via_host: tuple[str, int] | None = None, rport: bool = True,
              routes: list[str] | None = None) -> Request:
    """A request in the dialog the INVITE created, sent by the caller: new branch, R-URI =
    the callee's Contact, Route = Record-Route reversed (or `routes`: the route set is fixed
    by the dialog-creating 2xx, a re-INVITE's 2xx does not change it), To with the callee's
    tag. An ACK to a 2xx keeps the INVITE's CSeq number (RFC 3261 13.2.2.4)."""
    via = invite.get("via")
    m = re.match(r"SIP/2\.0/UDP ([^;]+)", via)
    sent_by = m.group(1) if via_host is None else f"{via_host[0]}:{via_host[1]}"
    num = invite.cseq[0] if method == "ACK" else (cseq if cseq is not None else invite.cseq[0] + 1)
    contact = resp.get("contact")
    target = uri_of(contact) if contact else invite.uri
    hdrs = [("Via", f"SIP/2.0/UDP {sent_by};" + ("rport;" if rport else "") + f"branch={new_branch()}"),
            ("Max-Forwards", "70")]
    hdrs += [("Route", r) for r in (route_set(resp) if routes is None else routes)]
    hdrs += [("From", invite.get("from")), ("To", resp.get("to")),
             ("Call-ID", invite.get("call-id")), ("CSeq", f"{num} {method}")]
    return Request(method, target, hdrs)


def cancel_for(invite: Request) -> Request:
    """CANCEL for a pending INVITE: same R-URI, top Via (branch), From, To, Call-ID, Route,
    CSeq number (RFC 3261 9.1)."""
    hdrs = [("Via", invite.get("via")), ("Max-Forwards", "70"), ("From", invite.get("from")),
            ("To", invite.get("to")), ("Call-ID", invite.get("call-id")),
            ("CSeq", f"{invite.cseq[0]} CANCEL")]
    hdrs += [(n, v) for n, v in invite.headers if norm(n) == "route"]
    return Request("CANCEL", invite.uri, hdrs)


def response_to(req: SipMessage, status: int, reason: str, *, to_tag: str | None = None,
                headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                copy_record_route: bool = False) -> bytes:
    """A response to a received request: Via (all), From, To (+tag), Call-ID, CSeq copied."""
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for v in req.get_all("via")]
    if copy_record_route:
        lines += [f"Record-Route: {v}" for v in req.get_all("record-route")]
    to = req.get("to") or ""
    if to_tag and "tag=" not in to:
        to += f";tag={to_tag}"
    lines += [f"From: {req.get('from')}", f"To: {to}", f"Call-ID: {req.get('call-id')}",
              f"CSeq: {req.get('cseq')}"]
    lines += [f"{n}: {v}" for n, v in headers or []]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- the in-process UAS -------------------------------------------------------------------

@dataclass
class Behaviour:
    """How the UAS answers an INVITE. Change the attributes at any time (tests do it before
    sending the INVITE)."""
    send_100: bool = True
    send_180: bool = True
    final: int | None = 200           # None: never answer with a final (ring until CANCEL)
    final_reason: str | None = None   # default: the standard phrase
    silent: bool = False              # never answer an INVITE at all
    delay: float = 0.0                # seconds between the provisionals and the final
    drop_first_200: bool = False      # "lose" the first 200; it goes out again at T1
    retransmit_2xx: int = 0           # extra 2xx retransmissions (T1, 2T1...) until ACK
    reason_100: str = "Trying"
    answer_other: int | None = 200    # reply to BYE/OPTIONS/INFO...; None = stay silent
    extra_headers: list[tuple[str, str]] = field(default_factory=list)


REASONS = {100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 404: "Not Found",
           408: "Request Timeout", 480: "Temporarily Unavailable", 486: "Busy Here",
           487: "Request Terminated", 500: "Server Internal Error", 503: "Service Unavailable",
           600: "Busy Everywhere", 603: "Decline"}


class UAS:
    """A user agent server on its own thread and socket. It answers INVITEs per `behaviour`,
    answers CANCEL (200, then 487 for the INVITE), BYE and other requests, absorbs
    retransmissions like an RFC 3261 UAS, and records everything it receives."""

    def __init__(self, ip: str, port: int = 0, user: str = "uas",
                 behaviour: Behaviour | None = None):
        if not ip.startswith("127.") and ip != "::1":
            raise ValueError(f"{ip}: loopback addresses only")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((ip, port))
        self.ip, self.port = self.sock.getsockname()[:2]
        self.user = user
        self.behaviour = behaviour or Behaviour()
        self.received: list[SipMessage] = []
        self.sent: list[tuple[tuple, bytes]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._timers: list = []
        self._seq = itertools.count()
        self._txns: dict = {}   # (branch, method) -> state dict
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name=f"uas-{self.ip}:{self.port}", daemon=True)

    @property
    def contact(self) -> str:
        return f"sip:{self.user}@{self.ip}:{self.port}"

    def start(self) -> "UAS":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        self.sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- what tests read --
    def requests(self, method: str | None = None) -> list[SipMessage]:
        with self._cond:
            return [m for m in self.received if m.is_request and (method is None or m.method == method)]

    def wait_for(self, method: str, timeout: float = 2.0, count: int = 1, match=None) -> SipMessage | None:
        """The count-th received request of `method` (matching `match`), waiting up to timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [m for m in self.received
                       if m.is_request and m.method == method and (match is None or match(m))]
                if len(got) >= count:
                    return got[count - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def expect(self, method: str, timeout: float = 2.0, count: int = 1, match=None) -> SipMessage:
        m = self.wait_for(method, timeout, count, match)
        if m is None:
            raise AssertionError(f"UAS {self.ip}:{self.port} got no {method} (#{count}) in {timeout}s; "
                                 f"got {[x.first_line for x in self.requests()]}")
        return m

    def send_raw(self, data: bytes, dest: tuple[str, int]) -> None:
        """Send anything from the UAS socket (tests use it for in-dialog requests)."""
        self._send(data, dest)

    def send_final(self, invite: SipMessage, status: int, reason: str | None = None) -> None:
        """Answer a pending INVITE now (from the test thread)."""
        self._schedule(0, self._final, invite, status, reason)

    # -- the thread --
    def _schedule(self, delay: float, fn, *args) -> None:
        with self._cond:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn, args))
        os.write(self._wake_w, b"x")

    def _send(self, data: bytes, dest: tuple[str, int]) -> None:
        if not (dest[0].startswith("127.") or dest[0] == "::1"):
            return  # never to a non-loopback address, whatever a Via says
        self.sent.append((dest, data))
        try:
            self.sock.sendto(data, dest)
        except OSError:
            pass

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                timeout = max(0.0, self._timers[0][0] - time.monotonic()) if self._timers else 0.5
            r, _, _ = select.select([self.sock, self._wake_r], [], [], timeout)
            if self._wake_r in r:
                os.read(self._wake_r, 64)
            if self.sock in r:
                try:
                    data, src = self.sock.recvfrom(65535)
                except OSError:
                    break
                try:
                    msg = parse(data, src)
                except ParseError:
                    continue
                with self._cond:
                    self.received.append(msg)
                    self._cond.notify_all()
                if msg.is_request:
                    self._on_request(msg)
            while True:
                with self._cond:
                    if not self._timers or self._timers[0][0] > time.monotonic():
                        break
                    _, _, fn, args = heapq.heappop(self._timers)
                fn(*args)

    def _reply_to(self, req: SipMessage) -> tuple[str, int]:
        """RFC 3261 18.2.2 / RFC 3581: to the source address, at rport when asked."""
        return req.source

    def _on_request(self, req: SipMessage) -> None:
        b = self.behaviour
        key = (req.branch, "INVITE" if req.method in ("INVITE", "ACK") else req.method)
        if req.method == "ACK":
            t = self._txns.get(key)
            if t is not None:      # ACK to our non-2xx final
                t["acked"] = True
            else:                  # ACK to a 2xx: stop its retransmissions
                for t in self._txns.values():
                    if t.get("to_tag") and t.get("to_tag") == req.to_tag:
                        t["acked"] = True
            return
        if req.method == "CANCEL":
            t = self._txns.get((req.branch, "INVITE"))
            if t is None:
                self._send(response_to(req, 481, "Call/Transaction Does Not Exist", to_tag=new_tag()),
                           self._reply_to(req))
                return
            self._send(response_to(req, 200, "OK", to_tag=t["to_tag"]), self._reply_to(req))
            if t["final"] is None:
                self._final(t["invite"], 487, "Request Terminated")
            return
        t = self._txns.get(key)
        if t is not None:          # retransmission: the last response again
            if t.get("last") is not None:
                self._send(t["last"], self._reply_to(req))
            return
        if req.method != "INVITE":
            t = self._txns[key] = {"invite": req, "final": None, "to_tag": new_tag(), "last": None}
            if b.answer_other is not None:
                t["last"] = response_to(req, b.answer_other, REASONS.get(b.answer_other, "OK"),
                                        to_tag=req.to_tag or t["to_tag"])
                t["final"] = b.answer_other
                self._send(t["last"], self._reply_to(req))
            return
        t = self._txns[key] = {"invite": req, "final": None, "to_tag": req.to_tag or new_tag(),
                               "last": None, "acked": False}
        if b.silent:
            return
        if b.send_100:
            t["last"] = response_to(req, 100, b.reason_100)
            self._send(t["last"], self._reply_to(req))
        if b.send_180:
            t["last"] = response_to(req, 180, "Ringing", to_tag=t["to_tag"], copy_record_route=True,
                                    headers=[("Contact", f"<{self.contact}>")])
            self._send(t["last"], self._reply_to(req))
        if b.final is not None:
            self._schedule(b.delay, self._final, req, b.final, b.final_reason)

    def _final(self, invite: SipMessage, status: int, reason: str | None) -> None:
        b = self.behaviour
        t = self._txns.get((invite.branch, "INVITE"))
        if t is None or t["final"] is not None:
            return
        t["final"] = status
        hdrs = list(b.extra_headers)
        if status < 300:
            hdrs.append(("Contact", f"<{self.contact}>"))
        t["last"] = response_to(invite, status, reason or REASONS.get(status, "Unknown"),
                                to_tag=t["to_tag"], copy_record_route=status < 300, headers=hdrs)
        if 200 <= status < 300:
            if not b.drop_first_200:
                self._send(t["last"], self._reply_to(invite))
            retrans = b.retransmit_2xx + (1 if b.drop_first_200 else 0)
            if retrans:
                self._schedule(T1, self._retransmit_2xx, t, invite, retrans, T1)
        else:
            self._send(t["last"], self._reply_to(invite))

    def _retransmit_2xx(self, t: dict, invite: SipMessage, left: int, interval: float) -> None:
        if t.get("acked") or left <= 0:
            return
        self._send(t["last"], self._reply_to(invite))
        if left > 1:
            self._schedule(min(interval * 2, T2), self._retransmit_2xx, t, invite, left - 1,
                           min(interval * 2, T2))
