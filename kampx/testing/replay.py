"""kampx replay: a capture's requests run through a route script, offline.

Every request the capture shows arriving at the proxy goes through a ScriptHarness at its
captured time (the harness clock follows the capture) and comes out as an Outcome whose
decision line says what kampx would have replied or relayed. With two scripts, both see the
same traffic and the requests they decide differently are the result.

A replay cannot know what the live proxy knew, so it assumes what the traffic implies:
- Credentials answer nonces only the live proxy could check: a request carrying Digest
  credentials for the realm is taken as authenticated (TRUSTED_AUTH, the script's
  auth_check and friends); one without is challenged as usual. The REGISTERs of the capture
  thus fill the location table for the calls after them.
- Dialogs may have started before the capture: [dialog] enforce is off, so in-dialog
  requests are judged by the script alone.
- The next hops answer as they did: a reply the capture shows reaching the proxy is fed
  back to the request the script relayed with the same Call-ID and CSeq, wherever the
  script sent it. A relayed request the capture has no reply for runs into its timeout, as
  the clock follows the capture.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from kampx._cparse import SipParseError, parse
from kampx.auth.authenticator import kind_for
from kampx.routing import auth as routing_auth
from kampx.routing.context import Result, ctx
from kampx.testing.capture import CaptureStats, Datagram, datagrams
from kampx.testing.clock import MONOTONIC_START, Clock
from kampx.testing.harness import ScriptHarness
from kampx.testing.outcome import Outcome, Relayed

_REQUEST_LINE = re.compile(rb"[A-Za-z]+ \S+ SIP/2\.0\r?\n")

# the keys of a config file the replay's own sandbox decides (no listen socket, its own
# temporary database, small tables)
SANDBOX_KEYS = {
    "core": ("listen", "children"),
    "db": None,
    "metrics": None,
    "control": None,
    "usrloc": ("capacity",),
    "tm": ("max_transactions",),
}


def _trusting(check: Callable) -> Callable:
    """`check` (auth_check, www_authorize, proxy_authorize) answering 1 for a request that
    carries Digest credentials for the realm."""

    @functools.wraps(check)
    def trusted(realm, *args):
        if routing_auth.has_credentials(realm):
            return Result(1)
        return check(realm, *args)

    return trusted


def _consume_trusted() -> bool:
    """consume_credentials() for credentials taken on trust: their header is removed."""
    return ctx.msg.remove_header(kind_for(ctx.msg).credentials) > 0


TRUSTED_AUTH: dict[str, Callable] = {
    "auth_check": _trusting(routing_auth.auth_check),
    "www_authorize": _trusting(routing_auth.www_authorize),
    "proxy_authorize": _trusting(routing_auth.proxy_authorize),
    "consume_credentials": functools.wraps(routing_auth.consume_credentials)(_consume_trusted),
}


class Captured(NamedTuple):
    """A request or a reply of the capture, addressed to the proxy."""

    time: float
    src: tuple[str, int]
    data: bytes
    is_request: bool

    def summary(self) -> str:
        """'HH:MM:SS.mmm IP:PORT METHOD R-URI' (UTC), as the replay prints it."""
        clock = time.strftime("%H:%M:%S", time.gmtime(self.time))
        millis = int(self.time * 1000) % 1000
        method, ruri = _request_line(self.data)
        return f"{clock}.{millis:03d} {_hostport(self.src)} {method} {ruri}"


def _request_line(data: bytes) -> tuple[str, str]:
    try:
        msg = parse(data)
        return msg.method, msg.ruri or "?"
    except SipParseError:
        words = data.split(b"\r\n", 1)[0].decode("utf-8", "replace").split()
        return (words[0], words[1]) if len(words) >= 2 else ("?", "?")


def _hostport(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_sip_request(payload: bytes) -> bool:
    return _REQUEST_LINE.match(payload) is not None


def proxy_address(packets: Iterable[Datagram], ip: str | None = None) -> tuple[str, int] | None:
    """Where most requests went (of those to `ip`, when given): on a capture of SIP traffic
    through a proxy, the proxy's address and port."""
    seen = Counter(
        d.dst for d in packets if is_sip_request(d.payload) and (ip is None or d.dst[0] == ip)
    )
    if seen:
        return seen.most_common(1)[0][0]
    return (ip, 5060) if ip else None


class Tally:
    """What became of the capture's datagrams besides the requests replayed."""

    def __init__(self) -> None:
        self.fed_back = 0  # downstream replies to a request the script relayed
        self.unmatched = 0  # downstream replies to nothing the script relayed
        self.from_proxy = 0  # replies the proxy sent
        self.elsewhere = 0  # requests not addressed to the proxy (the proxy's own relays)
        self.not_sip = 0

    def describe(self, stats: CaptureStats) -> str:
        parts = [
            (self.from_proxy, "replies from the proxy"),
            (self.unmatched, "replies to nothing relayed"),
            (self.elsewhere, "requests not to the proxy"),
            (self.not_sip, "UDP datagrams that are not SIP"),
            (stats.fragments, "IP fragments"),
            (stats.not_udp, "packets that are not UDP"),
        ]
        return ", ".join(f"{n} {what}" for n, what in parts if n)


def to_proxy(packets: Iterable[Datagram], proxy: str, tally: Tally) -> Iterator[Captured]:
    """The requests and replies the proxy (at IP `proxy`) received, in capture order."""
    for d in packets:
        payload = d.payload
        is_request = is_sip_request(payload)
        if not is_request and not payload.startswith(b"SIP/2.0 "):
            tally.not_sip += 1
        elif d.dst[0] == proxy and d.src[0] != proxy:
            yield Captured(d.time, d.src, payload, is_request)
        elif is_request:
            tally.elsewhere += 1
        else:
            tally.from_proxy += 1


def harness_config(sections: dict) -> dict:
    """A config file's sections without the keys the replay's sandbox sets itself, and
    with [dialog] enforce off (see the module docstring)."""
    out = copy.deepcopy(sections)
    for name, keys in SANDBOX_KEYS.items():
        if keys is None:
            out.pop(name, None)
        elif name in out:
            for key in keys:
                out[name].pop(key, None)
    out.setdefault("dialog", {})["enforce"] = False
    return out


class Replayer:
    """One script over a capture, in order: decide(request) -> Outcome; answer(reply)
    feeds a downstream reply back to the request the script relayed with the same Call-ID
    and CSeq (wherever the script sent it), with the reply's code, reason, To-tag, Contact
    and Record-Route."""

    def __init__(self, script: str, sections: dict, addresses: list, proxy: tuple[str, int]):
        self._setup = (script, harness_config(sections), addresses, proxy)
        self._harness: ScriptHarness | None = None
        self._start = 0.0
        self._relayed: dict[tuple, Relayed] = {}  # (Call-ID, CSeq number, method) -> last

    def _at(self, when: float) -> ScriptHarness:
        """The harness, its clock moved on to capture time `when` (it starts at the first
        datagram's time)."""
        px = self._harness
        if px is None:
            script, config, addresses, proxy = self._setup
            px = self._harness = ScriptHarness(
                script,
                config=config,
                addresses=addresses,
                listen=proxy[0],
                port=proxy[1],
                overrides=TRUSTED_AUTH,
                clock=Clock(wall=when),
            )
            self._start = when
        ahead = (when - self._start) - (px.clock.monotonic() - MONOTONIC_START)
        if ahead > 0:
            self._remember(px.advance(ahead))
        return px

    def _remember(self, outcome: Outcome) -> Outcome:
        for r in outcome.relayed:
            m = r.message
            if m is not None and m.cseq is not None:
                self._relayed[(m.call_id, m.cseq.number, m.cseq.method)] = r
        return outcome

    def decide(self, request: Captured) -> Outcome:
        px = self._at(request.time)
        return self._remember(px.send_guarded(request.data, request.src))

    def answer(self, reply: Captured) -> Outcome | None:
        """None when the reply does not parse or answers nothing the script relayed."""
        px = self._at(reply.time)
        try:
            msg = parse(reply.data)
        except SipParseError:
            return None
        cseq = msg.cseq
        relayed = self._relayed.get((msg.call_id, cseq.number, cseq.method)) if cseq else None
        if relayed is None or relayed.message is None:
            return None
        kept = [f"{n}: {v}" for n, v in msg.headers if n.lower() in ("contact", "record-route")]
        outcome = px.reply_to(relayed, msg.status, msg.reason, kept, to_tag=msg.to_tag)
        return self._remember(outcome)

    def close(self) -> None:
        if self._harness is not None:
            self._harness.close()


def decision_line(outcome: Outcome) -> str:
    text = outcome.decision
    if outcome.errors:
        where, e = outcome.errors[0]
        text += f" [{where} raised {type(e).__name__}: {e}]"
    return text


def summary(kinds: Counter, total: int) -> str:
    """'12 requests: 5 relay, 3 reply 404, ...' (most frequent first)."""
    ranked = sorted(kinds.items(), key=lambda item: (-item[1], item[0]))
    return f"{total} requests: " + ", ".join(f"{n} {kind}" for kind, n in ranked)


def script_label(spec: str) -> str:
    return spec if spec.startswith("builtin:") else os.path.basename(spec)


def replay(
    path: str,
    script: str,
    sections: dict,
    addresses: list,
    proxy: str | None,
    out: Callable[[str], None],
    other: str | None = None,
) -> int:
    """Print the decisions for the capture at `path` (or, with `other`, only the requests
    on which `script` and `other` differ); the number of requests that differed. `proxy`
    is the proxy's IP, None to take the address most requests went to."""
    stats = CaptureStats()
    packets = list(datagrams(path, stats))
    found = proxy_address(packets, proxy)
    tally = Tally()
    if found is None:
        out("0 requests: no SIP request in the capture")
        return 0
    runs = [Replayer(s, sections, addresses, found) for s in (script, other) if s]
    labels = [script_label(s) for s in (script, other) if s]
    width = max(len(label) for label in labels)
    kinds: Counter = Counter()
    total = differ = 0
    try:
        for captured in to_proxy(packets, found[0], tally):
            if not captured.is_request:
                answered = [run.answer(captured) for run in runs]
                if answered[0] is None:
                    tally.unmatched += 1
                else:
                    tally.fed_back += 1
                continue
            total += 1
            outcomes = [run.decide(captured) for run in runs]
            kinds[outcomes[0].kind] += 1
            if other is None:
                out(f"{captured.summary()} -> {decision_line(outcomes[0])}")
                continue
            lines = [decision_line(o) for o in outcomes]
            if lines[0] != lines[1]:
                differ += 1
                out(captured.summary())
                for label, line in zip(labels, lines):
                    out(f"    {label:<{width}}  {line}")
    finally:
        for run in runs:
            run.close()
    out(summary(kinds, total) + f" (proxy {_hostport(found)}, script {labels[0]})")
    if other is not None:
        out(f"{differ} of {total} requests decided differently by {labels[0]} and {labels[1]}")
    if tally.fed_back:
        out(f"{tally.fed_back} downstream replies fed back to the requests relayed")
    left_out = tally.describe(stats)
    if left_out:
        out(f"not replayed: {left_out}")
    return differ
