"""What the proxy did with one message: the datagrams it sent, read back as SIP.

An Outcome is built from what the worker's recording socket kept while the harness fed it
one message (or moved the clock): the replies it sent (`replies`, the final one as `reply`)
and the requests it sent on (`relayed`), each compared with the request they came from, plus
the script calls made meanwhile (`calls`) and the errors the worker logged (`errors`).
"""

from __future__ import annotations

from collections import Counter

from kampx._cparse import Message, SipParseError, parse
from kampx.testing.calls import ROUTE


class Sent:
    """One datagram the proxy sent: `destination` (ip, port), `raw` bytes, `message` (the
    parsed kampx Message, None when the proxy passed on something its own parser refuses,
    such as a reply echoing a broken From), `headers` [(name, value)] in order."""

    def __init__(self, raw: bytes, destination: tuple[str, int]):
        self.raw = raw
        self.destination = destination
        self.message: Message | None = _parsed(raw)
        self.start_line = raw.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        self.headers = _headers(raw, self.message)

    def header(self, name: str) -> str | None:
        """The first value of header `name` (any case), None when absent."""
        found = self.header_all(name)
        return found[0] if found else None

    def header_all(self, name: str) -> list[str]:
        if self.message is not None:
            return self.message.header_all(name)
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]


class Reply(Sent):
    """A reply the proxy sent: `code`, `reason`."""

    def __init__(self, raw: bytes, destination: tuple[str, int]):
        super().__init__(raw, destination)
        _version, code, reason = (self.start_line.split(" ", 2) + ["", ""])[:3]
        self.code = int(code) if code.isdigit() else 0
        self.reason = reason

    def __repr__(self) -> str:
        return f"<Reply {self.code} {self.reason} -> {_hostport(self.destination)}>"


class Relayed(Sent):
    """A request the proxy sent on: `method`, `ruri`, `destination`; `added` and `removed`
    are the header lines [(name, value)] it has and the request it came from (`origin`,
    bytes) had not, and the reverse (a header whose value changed is in both); `via` is the
    proxy's own Via and `record_route` the Record-Route values it added."""

    def __init__(self, raw: bytes, destination: tuple[str, int], origin: bytes):
        super().__init__(raw, destination)
        self.origin = origin
        self.method, self.ruri = (self.start_line.split(" ", 2) + ["", ""])[:2]
        before = Counter(_headers(origin, _parsed(origin))) if origin else Counter()
        after = Counter(self.headers)
        self.added = list((after - before).elements())
        self.removed = list((before - after).elements())
        self.via = self.header("Via")
        self.record_route = [v for n, v in self.added if n.lower() == "record-route"]

    def __repr__(self) -> str:
        return f"<Relayed {self.method} {self.ruri} -> {_hostport(self.destination)}>"


def _parsed(raw: bytes) -> Message | None:
    try:
        return parse(raw)
    except SipParseError:
        return None


def _headers(raw: bytes, message: Message | None) -> list[tuple[str, str]]:
    """The header lines in order: the parser's (compact names expanded), or for what it
    refuses, the lines as written."""
    if message is not None:
        return list(message.headers)
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")[1:]
    pairs = (line.partition(":") for line in head)
    return [(name.strip(), value.strip()) for name, sep, value in pairs if sep]


def _hostport(dest: tuple[str, int]) -> str:
    host, port = dest
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Outcome:
    """What happened: `replies` (every reply sent, in order), `reply` (the last final
    reply, None if there was none), `relayed` (requests sent on), `calls` (script calls),
    `errors` (exceptions the worker logged). `dropped`: nothing was sent at all.
    `challenge`: the Outcome of the challenged first attempt, when the harness answered
    a 401/407 for the test."""

    def __init__(self, sent: list[Sent], calls: list, errors: list):
        self.sent = sent
        self.replies = [s for s in sent if isinstance(s, Reply)]
        self.relayed = [s for s in sent if isinstance(s, Relayed)]
        finals = [r for r in self.replies if r.code >= 200]
        self.reply: Reply | None = finals[-1] if finals else None
        self.calls = calls
        self.errors = errors
        self.challenge: Outcome | None = None  # the 401/407 the harness answered first

    @property
    def dropped(self) -> bool:
        return not self.sent

    @property
    def decision(self) -> str:
        """One line, free of tags and branch ids, to compare two runs: "relay INVITE
        sip:...  -> ip:port", "reply 404 User not Registered", "reply 100 ..." (a
        provisional reply only), or "drop"."""
        if self.relayed:
            return "; ".join(
                f"relay {r.method} {r.ruri} -> {_hostport(r.destination)}" for r in self.relayed
            )
        last = self.reply or (self.replies[-1] if self.replies else None)
        if last is not None:
            return f"reply {last.code} {last.reason}"
        return "drop"

    @property
    def kind(self) -> str:
        """The decision without its details: "relay", "reply 404", "drop"."""
        d = self.decision
        return " ".join(d.split()[:2]) if d.startswith("reply") else d.split()[0]

    @property
    def routes(self) -> list[str]:
        """The script's own functions that ran, in order: the route blocks taken
        (request_route, REQINIT, ..., branch_route, a failure route)."""
        return [c.name for c in self.calls if c.kind == ROUTE]

    def called(self, name: str) -> list:
        """The calls of function `name`, in order."""
        return [c for c in self.calls if c.name == name]

    def __repr__(self) -> str:
        return f"<Outcome {self.decision}>"


def read_sent(datagrams: list[tuple[bytes, tuple]], origin: bytes) -> list[Sent]:
    """The recorded datagrams as Replies and Relayed requests (relative to `origin`)."""
    return [
        Reply(raw, dest) if raw.startswith(b"SIP/2.0 ") else Relayed(raw, dest, origin)
        for raw, dest in datagrams
    ]
