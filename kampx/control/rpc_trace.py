"""The live trace's control methods: trace.start, trace.read, trace.stop (`kampxctl trace`).

One trace at a time, proxy-wide. trace.start publishes its TraceSpec to the workers
(kampx.trace) and collects their records from the trace socket in a thread of its own;
trace.read waits (a long poll, up to `wait` seconds) for records past a cursor. A trace is
bounded three ways, so it always ends by itself: `count` messages, `duration` seconds, and
IDLE_S without a trace.read (the kampxctl that started it went away). At most `count`
records are kept, and records past `count` are not.
"""

from __future__ import annotations

import json
import socket
import threading
import time

from kampx.control.params import FAILED, int_param, seconds_param
from kampx.control.server import InvalidParams, RpcFault, check_params
from kampx.trace import TraceSpec, records_address

DEFAULT_COUNT = 100
MAX_COUNT = 100_000
DEFAULT_DURATION = 60.0
MAX_DURATION = 3600.0
MAX_WAIT = 5.0
IDLE_S = 15.0  # no trace.read for this long: the reader is gone, the trace ends
RECV_BUFFER = 4 << 20


class _Trace:
    __slots__ = ("spec", "count", "records", "messages", "done", "reason", "last_read")

    def __init__(self, spec: TraceSpec, count: int):
        self.spec = spec
        self.count = count
        self.records: list[dict] = []
        self.messages = 0  # records of messages (not of calls made by a timer)
        self.done = False
        self.reason = ""
        self.last_read = time.monotonic()


class TraceRpc:
    def __init__(self, shared):
        self.shared = shared
        self.blob = shared.trace_spec
        self._cond = threading.Condition()
        self._trace: _Trace | None = None
        self._next_id = 1
        self._sock: socket.socket | None = None
        if self.blob.read()[1]:  # a trace of a ctl process that died: end it now
            self.blob.publish(b"")

    def table(self) -> dict:
        return {"trace.start": self.start, "trace.read": self.read, "trace.stop": self.stop}

    # -- methods ----------------------------------------------------------------------------

    def start(self, params: dict) -> dict:
        check_params(params, ("method", "user", "ip", "count", "duration", "verbose"))
        count = int_param(params, "count", DEFAULT_COUNT, 1, MAX_COUNT)
        duration = seconds_param(params, "duration", DEFAULT_DURATION, MAX_DURATION)
        filters = {}
        for name in ("method", "user", "ip"):
            value = params.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidParams(f"'{name}' must be a non-empty string")
            filters[name] = value
        verbose = params.get("verbose", False)
        if not isinstance(verbose, bool):
            raise InvalidParams("'verbose' must be true or false")
        with self._cond:
            self._expire_locked()
            running = self._trace
            if running is not None and not running.done:
                left = running.spec.until - time.time()
                raise RpcFault(
                    FAILED,
                    f"trace {running.spec.id} is running (ends within {left:.0f} s); "
                    "one trace at a time",
                )
            self._open_socket()
            spec = TraceSpec(
                self._next_id, until=time.time() + duration, verbose=verbose, **filters
            )
            self._next_id += 1
            self._trace = _Trace(spec, count)
            self.blob.publish(spec.to_bytes())
        return {"id": spec.id, "until": spec.until, "count": count}

    def read(self, params: dict) -> dict:
        """Records past `after` (a cursor: how many were read), waiting up to `wait` s for
        one; `done` once the trace has ended and everything was read."""
        check_params(params, ("id", "after", "wait"), ("id",))
        after = int_param(params, "after", 0, 0, MAX_COUNT)
        wait = seconds_param(params, "wait", 1.0, MAX_WAIT, zero=True)
        deadline = time.monotonic() + wait
        with self._cond:
            trace = self._find(params["id"])
            while True:
                trace.last_read = time.monotonic()
                self._expire_locked()
                if len(trace.records) > after or trace.done:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
            records = trace.records[after:]
            return {
                "records": records,
                "next": after + len(records),
                "done": trace.done,
                "reason": trace.reason,
            }

    read.unlocked = True  # type: ignore[attr-defined]  # a long poll: run outside the method lock

    def stop(self, params: dict) -> dict:
        check_params(params, ("id",), ("id",))
        with self._cond:
            trace = self._find(params["id"])
            self._end_locked(trace, "stopped")
            return {"id": trace.spec.id, "messages": trace.messages}

    stop.unlocked = True  # type: ignore[attr-defined]

    # -- the trace --------------------------------------------------------------------------

    def _find(self, trace_id) -> _Trace:
        trace = self._trace
        if trace is None or trace.spec.id != trace_id:
            raise RpcFault(FAILED, f"no trace {trace_id}")
        return trace

    def _expire_locked(self) -> None:
        trace = self._trace
        if trace is None or trace.done:
            return
        if time.time() >= trace.spec.until:
            self._end_locked(trace, "duration")
        elif time.monotonic() - trace.last_read > IDLE_S:
            self._end_locked(trace, "nobody reading")

    def _end_locked(self, trace: _Trace, reason: str) -> None:
        if trace.done:
            return
        trace.done = True
        trace.reason = reason
        if self._trace is trace:
            self.blob.publish(b"")  # the workers take their taps off
        self._cond.notify_all()

    def _open_socket(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        except OSError:
            pass
        sock.bind(records_address(self.shared.instance))
        sock.settimeout(1.0)
        self._sock = sock
        threading.Thread(target=self._collect, daemon=True, name="ctl-trace").start()

    def _collect(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            try:
                data = sock.recv(1 << 17)
            except socket.timeout:
                with self._cond:
                    self._expire_locked()
                continue
            except OSError:
                return
            try:
                record = json.loads(data)
            except ValueError:
                continue
            with self._cond:
                self._add_locked(record)

    def _add_locked(self, record: dict) -> None:
        trace = self._trace
        if trace is None or trace.done or record.get("trace") != trace.spec.id:
            return  # a late record of an ended trace
        if record.get("dir") in ("in", "out"):
            if trace.messages >= trace.count:
                return
            trace.messages += 1
        elif len(trace.records) >= 2 * trace.count + 100:
            return  # script runs of timers: bounded too
        trace.records.append(record)
        if trace.messages >= trace.count:
            self._end_locked(trace, "count")
        self._cond.notify_all()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
