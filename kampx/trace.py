"""Live tracing (`kampxctl trace`): the workers show the ctl the SIP messages they read and
send, with the route-script calls each received message caused.

The ctl publishes what to trace (a TraceSpec: filters, an end time) in a SharedBlob made
before fork; an empty blob means nobody traces. A worker compares the blob's generation with
the one it saw once per loop round (one word read: that is all a trace costs while nobody
traces) and, when it moved, installs or removes its taps:

- every datagram it reads is parsed once more and matched against the filter (method, user
  of the Request-URI/From/To, source or destination IP); for a match the route script's
  calls are recorded while the worker processes it: the script's functions and the API
  functions it imported are wrapped in its own module (kampx.testing.calls.record_calls), so
  the module state the script built stays the same;
- every datagram it sends is matched the same way.

Each match becomes one record (a JSON object: time, worker, direction, addresses, the first
line, Call-ID, CSeq, the calls, the whole message with `verbose`) sent to the ctl over a Unix
datagram socket in the abstract namespace, named after the instance. A record the ctl's socket
cannot take now is lost and counted (trace:dropped): tracing never delays SIP. A received
message the worker hands to the owner of its transaction is reported by the owner, which is
the one that runs the script on it.

A trace ends by itself: at its end time (each worker checks it every second, so a trace
outlives a dead ctl by a second at most), or when the ctl takes the spec back (the count
was reached, kampxctl stopped, or nobody read the records for a while).
"""

from __future__ import annotations

import json
import socket
import time

from kampx import stats as S
from kampx._cparse import SipParseError, parse

RECORDS = S.family("trace", "records", S.KIND_COUNTER, "Messages reported to a live trace")
DROPPED = S.family(
    "trace", "dropped", S.KIND_COUNTER, "Live trace records lost (the ctl could not take them)"
)
STATISTICS = (RECORDS, DROPPED)

SPEC_CAPACITY = 4096
MAX_CALLS = 64  # calls reported per message
MAX_CALL_TEXT = 240  # characters per call
MAX_DATA = 16384  # bytes of a message shown with verbose


def records_address(instance: str) -> bytes:
    """The ctl's record socket: abstract namespace, nothing to unlink."""
    return f"\0kampx-{instance}-trace".encode()


class TraceSpec:
    """What one trace shows. `method`: a request's method or a reply's CSeq method;
    `user`: the user part of the Request-URI, From or To; `ip`: the source or destination
    address. None matches anything."""

    __slots__ = ("id", "method", "user", "ip", "until", "verbose")

    def __init__(self, id: int, method=None, user=None, ip=None, until=0.0, verbose=False):
        self.id = id
        self.method = method.upper() if method else None
        self.user = user or None
        self.ip = ip or None
        self.until = until
        self.verbose = verbose

    def to_bytes(self) -> bytes:
        return json.dumps({name: getattr(self, name) for name in self.__slots__}).encode()

    @classmethod
    def from_bytes(cls, blob: bytes) -> TraceSpec | None:
        if not blob:
            return None
        try:
            return cls(**json.loads(blob))
        except (ValueError, TypeError):
            return None

    def matches(self, msg, src_ip: str, dst_ip: str) -> bool:
        """`msg`: the parsed message, None when it does not parse (then only `ip` can
        match, and only a trace without method or user filter shows it)."""
        if self.ip is not None and self.ip not in (src_ip, dst_ip):
            return False
        if self.method is None and self.user is None:
            return True
        if msg is None:
            return False
        if self.method is not None:
            method = msg.method if msg.is_request else msg.cseq_method
            if (method or "").upper() != self.method:
                return False
        return self.user is None or self.user in _users(msg)


def _users(msg) -> tuple:
    users = []
    try:
        if msg.is_request and msg.uri is not None:
            users.append(msg.uri.user)
        for na in (msg.from_, msg.to):
            if na is not None:
                users.append(na.parsed_uri.user)
    except (SipParseError, ValueError):
        pass  # a URI that does not parse names no user
    return tuple(users)


def _hostport(addr) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Tracer:
    """One worker's side of a live trace. `refresh()` reads the spec; while `active`, the
    worker routes its datagrams through `wrap(process)` and its sockets' send tap through
    `sent`, and calls `flush()` once per loop round."""

    def __init__(self, blob, instance: str, worker_id: int, stats, script_module, handoffs_col):
        from kampx.testing.calls import CallLog

        self.blob = blob
        self.seen = 0  # the blob generation the taps were set for
        self.spec: TraceSpec | None = None
        self.address = records_address(instance)
        self.worker_id = worker_id
        self.stats = stats
        self.module = script_module
        self.handoffs_col = handoffs_col
        self.log = CallLog()
        self.log.recording = False
        self._originals: dict | None = None  # the script's functions while they are wrapped
        self._sock: socket.socket | None = None
        self._current: dict | None = None  # the record of the datagram being processed
        self._pending: list[dict] = []  # records made while it is processed (sent messages)
        self._handoffs = 0

    @property
    def active(self) -> bool:
        return self.spec is not None

    def changed(self) -> bool:
        return self.blob.generation != self.seen

    def watch(self) -> tuple[memoryview, int]:
        """Where `changed()` looks, for a loop that asks every round: (words, index) of the
        published spec's generation; it moved when words[index] != `seen`."""
        return self.blob.generation_word()

    def refresh(self) -> None:
        """Take the published spec (a trace starts, changes or ends)."""
        self.seen, data = self.blob.read()
        spec = TraceSpec.from_bytes(data)
        if spec is not None and spec.until <= time.time():
            spec = None
        if spec is None:
            self.stop()
            return
        if self._originals is None:
            from kampx.testing.calls import record_calls

            self._originals = record_calls(self.module, self.log)
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)
        self.spec = spec
        self.log.recording = True  # between datagrams: what timers and DNS answers run

    def expired(self, now: float) -> bool:
        return self.spec is not None and now >= self.spec.until

    def stop(self) -> None:
        self.flush()
        self.spec = None
        if self._originals is not None:
            self.module.__dict__.update(self._originals)
            self._originals = None
        self.log.recording = False
        self.log.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- the taps ---------------------------------------------------------------------------

    def wrap(self, process):
        """process() that reports what the datagram is and what the script did with it."""

        def traced(data, src, lsock, handed_off):
            self._begin(data, src, lsock)
            try:
                process(data, src, lsock, handed_off)
            finally:
                self._end()

        return traced

    def sent(self, data: bytes, dest: tuple, lsock) -> None:
        record = self._record("out", data, (lsock.addr.host, lsock.port), dest)
        if record is not None:
            self._pending.append(record)

    def _begin(self, data: bytes, src: tuple, lsock) -> None:
        if self.log:
            self.flush()  # calls made since the last datagram belong to no datagram
        self._current = self._record("in", data, src, (lsock.addr.host, lsock.port))
        self.log.recording = self._current is not None
        if self._current is not None:
            self._handoffs = self.stats.rows.get(self.stats.row, self.handoffs_col)

    def _end(self) -> None:
        record, self._current = self._current, None
        if record is not None:
            if self.stats.rows.get(self.stats.row, self.handoffs_col) != self._handoffs:
                record = None  # handed to its transaction's owner, which reports it
            else:
                record["calls"] = self._calls()
        self.log.clear()
        self.log.recording = self.spec is not None
        if record is not None:
            self._pending.insert(0, record)
        self.flush()

    def flush(self) -> None:
        """Send the records made since the last flush; calls made outside a datagram's
        processing (a failure route run by a timer) become a record of their own when the
        message they were about matches."""
        if self.log:
            msg = next((a for c in self.log for a in c.args if hasattr(a, "is_request")), None)
            if msg is not None and self.spec is not None:
                src = getattr(msg, "src", None) or ("", 0)
                if self.spec.matches(msg, src[0], ""):
                    self._pending.append(self._timer_record(msg))
            self.log.clear()
        pending, self._pending = self._pending, []
        for record in pending:
            self._emit(record)

    # -- records ----------------------------------------------------------------------------

    def _record(self, direction: str, data: bytes, src: tuple, dst: tuple) -> dict | None:
        spec = self.spec
        if spec is None:
            return None
        problem: str | None = None
        try:
            msg = parse(data)
        except SipParseError as e:
            msg, problem = None, e.reason
        if not spec.matches(msg, src[0], dst[0]):
            return None
        record: dict = {
            "t": time.time(),
            "worker": self.worker_id,
            "dir": direction,
            "src": _hostport(src),
            "dst": _hostport(dst),
            "line": data.split(b"\r\n", 1)[0][:200].decode("utf-8", "replace"),
        }
        if msg is not None:
            record["call_id"] = msg.call_id
            record["cseq"] = (
                f"{msg.cseq_num} {msg.cseq_method}" if msg.cseq_num is not None else None
            )
        else:
            record["problem"] = problem
        if spec.verbose:
            record["data"] = data[:MAX_DATA].decode("utf-8", "replace")
        return record

    def _timer_record(self, msg) -> dict:
        src = getattr(msg, "src", None)
        return {
            "t": time.time(),
            "worker": self.worker_id,
            "dir": "timer",
            "src": _hostport(src) if src else "",
            "dst": "",
            "line": msg.buf.split(b"\r\n", 1)[0][:200].decode("utf-8", "replace"),
            "call_id": msg.call_id,
            "cseq": f"{msg.cseq_num} {msg.cseq_method}",
            "calls": self._calls(),
        }

    def _calls(self) -> list[str]:
        out = []
        for call in self.log[:MAX_CALLS]:
            text = repr(call)
            if len(text) > MAX_CALL_TEXT:
                text = text[: MAX_CALL_TEXT - 3] + "..."
            out.append("  " * call.depth + text)
        if len(self.log) > MAX_CALLS:
            out.append(f"... {len(self.log) - MAX_CALLS} more")
        return out

    def _emit(self, record: dict) -> None:
        spec, sock = self.spec, self._sock
        if spec is None or sock is None:
            return
        record["trace"] = spec.id
        try:
            sock.sendto(json.dumps(record, default=str).encode(), self.address)
        except OSError:  # the ctl is gone or behind: a trace must never hold SIP up
            self.stats.inc(DROPPED.base)
            return
        self.stats.inc(RECORDS.base)
