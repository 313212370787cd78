"""ScriptHarness: a route script run offline, one message at a time.

    with ScriptHarness(subscribers={"alice": "pw"}) as px:
        px.register("alice")                      # 401, then the digest answer: 200
        out = px.invite("alice", src=CARRIER)     # a call from the carrier's trunk
        assert out.relayed[0].ruri == "sip:alice@198.51.100.10:5060"

The proxy is the real one (kampx.sandbox.Sandbox: a worker in this process, its tm, its
shared tables over a temporary database, a socket that records), running a private,
instrumented copy of the script (kampx.testing.calls), on a clock that moves only with
advance() (kampx.testing.clock). Nothing is sent and no name is resolved: a relay to a
name fails unless the test fills `px.box.shared.dns_cache`. Every action returns an
Outcome (kampx.testing.outcome): the replies, the relayed requests, the script's calls.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable

from kampx._cparse import build_reply
from kampx.sandbox import Sandbox
from kampx.testing.calls import CallLog, instrumented
from kampx.testing.clock import Clock
from kampx.testing.messages import build_request, digest_authorization
from kampx.testing.outcome import Outcome, read_sent

DEFAULT_SOURCE = ("192.0.2.1", 5060)  # a request's source when the test names none
PHONE_NET = "198.51.100."  # users' phones: 198.51.100.10, .11, ... in order of first use
PHONE_FIRST = 10
TIMER_STEP_MIN = 0.001  # advance(): the smallest step between two runs of the timers

REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    404: "Not Found",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    487: "Request Terminated",
    500: "Server Internal Error",
    503: "Service Unavailable",
    603: "Decline",
}

# the challenge a 401 / 407 carries, and the header that answers it
_ANSWERS = {
    401: ("WWW-Authenticate", "Authorization"),
    407: ("Proxy-Authenticate", "Proxy-Authorization"),
}


class ScriptHarness:
    """The proxy running `script` ("builtin:NAME" or a file) with `config` (sections of the
    TOML config as dicts), `subscribers` {user: password} in the [auth] realm and
    `addresses` [(group, ip, mask, port, tag)] (the permissions table), listening on
    `listen`:`port`. `overrides`
    {api-name: function} replace script-API functions in the script's copy."""

    def __init__(
        self,
        script: str = "builtin:kamailio101",
        config: dict | None = None,
        subscribers: dict[str, str] | None = None,
        addresses: Iterable[tuple] = (),
        listen: str = "127.0.0.1",
        port: int = 5060,
        overrides: dict[str, Callable] | None = None,
        clock: Clock | None = None,
    ):
        self.clock = clock or Clock()
        self.calls = CallLog()
        self.history: list[Outcome] = []
        self.passwords = dict(subscribers or {})
        sections = copy.deepcopy(config or {})
        sections.setdefault("routing", {})["script"] = script
        with self.clock.installed():
            loaded = instrumented(script, self.calls, overrides)
            self.box = Sandbox(
                config=sections,
                listen=listen,
                port=port,
                subscribers=self.passwords,
                addresses=list(addresses),
                script=loaded,
            )
        self.realm = self.box.cfg.auth.realm
        self._ids = itertools.count(1)
        self._phones: dict[str, tuple[str, int]] = {}

    # ------------------------------------------------------------------ the proxy's input --

    def send(self, message: bytes | str, src: tuple[str, int] = DEFAULT_SOURCE) -> Outcome:
        """Feed one datagram from `src`, as the listen socket would hand it over. Text
        written with bare newlines gets CRLFs. An exception on the receive path outside the
        script (which the worker would log and survive) reaches the caller."""
        data = _wire(message)
        return self._run(lambda: self.box.feed(data, src), data)

    def send_guarded(self, message: bytes, src: tuple[str, int]) -> Outcome:
        """send() behind the worker's per-datagram guard: an internal error is logged in
        Outcome.errors, as a running proxy would (kampx replay's garbage-proof path)."""
        return self._run(lambda: self.box.feed(message, src, guarded=True), message)

    def reply_to(
        self,
        relayed,
        code: int,
        reason: str | None = None,
        headers: Iterable[str] = (),
        to_tag: str | None = None,
    ) -> Outcome:
        """The downstream's answer to a relayed request (an Outcome's `relayed` item): a
        reply with `code` from where the request went; its To-tag `to_tag` or a new one
        (none on a 100)."""
        if to_tag is None and code > 100:
            to_tag = f"callee{next(self._ids)}"
        data = build_reply(
            relayed.message, code, reason or REASONS.get(code, "Reply"), to_tag, list(headers)
        )
        dest = relayed.destination
        return self._run(lambda: self.box.feed(data, dest), relayed.origin)

    def advance(self, seconds: float) -> Outcome:
        """Move the clock `seconds` on, firing every timer that falls due on the way in
        order (retransmissions, fr_timer's 408, expiries); returns what they sent."""
        box = self.box
        end = self.clock.monotonic() + seconds

        def run_until_end() -> None:
            while True:
                box.run_timers()
                left = end - self.clock.monotonic()
                if left <= 0:
                    return
                step = max(box.worker.timers.timeout(left), TIMER_STEP_MIN)
                self.clock.advance(min(step, left))

        return self._run(run_until_end, b"")

    def _run(self, action: Callable[[], None], origin: bytes) -> Outcome:
        box = self.box
        sent_at, calls_at, errors_at = len(box.sent), len(self.calls), len(box.errors)
        with self.clock.installed():
            action()
        out = Outcome(
            read_sent(box.sent[sent_at:], origin), self.calls[calls_at:], box.errors[errors_at:]
        )
        self.history.append(out)
        return out

    # ------------------------------------------------------------------ requests, built --

    def address_of(self, user: str) -> tuple[str, int]:
        """The phone of `user`: 198.51.100.10:5060 for the first user named, .11 next..."""
        found = self._phones.get(user)
        if found is None:
            found = self._phones[user] = (f"{PHONE_NET}{PHONE_FIRST + len(self._phones)}", 5060)
        return found

    def request(
        self,
        method: str,
        ruri: str,
        *,
        src: tuple[str, int] = DEFAULT_SOURCE,
        from_uri: str | None = None,
        to_uri: str | None = None,
        call_id: str | None = None,
        cseq: int = 1,
        from_tag: str | None = None,
        **fields,
    ) -> bytes:
        """A request with fresh, deterministic identifiers (Call-ID, tags, branch); From
        defaults to sip:caller@SRC-IP, To to the Request-URI. `fields`: to_tag, contact,
        headers, body, max_forwards (kampx.testing.messages.build_request)."""
        n = next(self._ids)
        return build_request(
            method,
            ruri,
            src=src,
            from_uri=from_uri or f"sip:caller@{src[0]}",
            to_uri=to_uri or ruri,
            call_id=call_id or f"call-{n}@harness",
            from_tag=from_tag or f"tag{n}",
            branch=f"z9hG4bK-harness-{n}",
            cseq=cseq,
            **fields,
        )

    def register(
        self,
        user: str,
        contact: str | None = None,
        expires: int | None = None,
        src: tuple[str, int] | None = None,
        password: str | None = None,
    ) -> Outcome:
        """REGISTER user's phone (contact <sip:USER@PHONE-IP:PORT> by default); a 401 is
        answered with the digest of `password` or the subscriber's. The Outcome of the last
        REGISTER sent; `.challenge` holds the 401's when there was one."""
        src = src or self.address_of(user)
        aor = f"sip:{user}@{self.realm}"
        contact = contact or f"<sip:{user}@{src[0]}:{src[1]}>"
        headers = [f"Expires: {expires}"] if expires is not None else []
        return self._authenticated(
            "REGISTER",
            f"sip:{self.realm}",
            src,
            user,
            password,
            from_uri=aor,
            to_uri=aor,
            contact=contact,
            headers=headers,
        )

    def invite(
        self,
        to: str,
        caller: str | None = None,
        src: tuple[str, int] | None = None,
        from_uri: str | None = None,
        headers: Iterable[str] = (),
        body: bytes = b"",
    ) -> Outcome:
        """INVITE `to` (a user of the realm, or a whole URI). From subscriber `caller`
        (from their phone, a 407 answered with their password), else from `from_uri` or
        sip:caller@SRC-IP at `src` (the carrier's trunk, say)."""
        ruri = to if ":" in to else f"sip:{to}@{self.realm}"
        if caller is not None:
            src = src or self.address_of(caller)
            from_uri = from_uri or f"sip:{caller}@{self.realm}"
        src = src or DEFAULT_SOURCE
        return self._authenticated(
            "INVITE",
            ruri,
            src,
            caller,
            None,
            from_uri=from_uri or f"sip:caller@{src[0]}",
            contact=f"<sip:{caller or 'caller'}@{src[0]}:{src[1]}>",
            headers=list(headers),
            body=body,
        )

    def _authenticated(
        self,
        method: str,
        ruri: str,
        src: tuple[str, int],
        user: str | None,
        password: str | None,
        headers: list[str],
        **fields,
    ) -> Outcome:
        """Send the request; when it is challenged and `user` has a password, send it again
        (same Call-ID and From-tag, next CSeq) with the digest answer."""
        n = next(self._ids)
        call_id, from_tag = f"call-{n}@harness", f"tag{n}"
        first = self.send(
            self.request(
                method, ruri, src=src, call_id=call_id, from_tag=from_tag, headers=headers, **fields
            ),
            src,
        )
        reply = first.reply
        password = password or self.passwords.get(user or "")
        if reply is None or reply.code not in _ANSWERS or user is None or password is None:
            return first
        asked, answer = _ANSWERS[reply.code]
        offered = reply.header(asked)
        if offered is None:
            return first
        credentials = digest_authorization(offered, user, password, method, ruri)
        second = self.send(
            self.request(
                method,
                ruri,
                src=src,
                call_id=call_id,
                from_tag=from_tag,
                cseq=2,
                headers=[*headers, f"{answer}: {credentials}"],
                **fields,
            ),
            src,
        )
        second.challenge = first
        return second

    # ------------------------------------------------------------------ lifetime --

    def close(self) -> None:
        self.box.close()

    def __enter__(self) -> ScriptHarness:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _wire(message: bytes | str) -> bytes:
    if isinstance(message, str):
        if "\r\n" not in message:
            message = message.replace("\n", "\r\n")
        return message.encode()
    return message
