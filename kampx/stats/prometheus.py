"""Prometheus exposition at [metrics] listen /metrics, served by the ctl process.

Counters are not prometheus-client Counter objects: every process adds to its own row of a
shared CounterRows table (about 20 ns per increment; prometheus-client's multiprocess mode
costs 720-1775 ns and slows every scrape as worker pids pile up: measured before kampx
was written).
A custom Collector sums the rows at scrape time. Rows of dead workers keep their counts, so
counters never go down while the proxy runs. `kampxctl stats --reset` does not reach here.

Names: kampx_<group>_<name> in lower case, counters with _total, HELP and TYPE on every
family, no timestamps; [metrics] instance adds instance="..." to every sample.

The HTTP server is one thread running an event loop, not a thread per connection: anyone
who can reach the port could otherwise hold a thread (and its stack) per idle connection
for as long as they liked. A client has REQUEST_TIMEOUT_S to send its request head (sending
nothing, or a byte now and then, gets it cut off) and RESPONSE_TIMEOUT_S to read the answer;
at most MAX_CONNECTIONS are open, and when they are all taken the one that has waited longest
for its request is closed to make room (a connection that is being answered never is; when
all are, the newcomer is closed at once). Each connection carries one request (HTTP/1.0, as
before), which the loop answers in place: a scrape takes milliseconds, and scrapes queue
rather than run side by side, which also bounds the CPU a flood of them can take.
"""

from __future__ import annotations

import io
import logging
import platform
import selectors
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from kampx import __version__, procinfo
from kampx import stats as S
from kampx.config import METRICS_PORT, parse_hostport
from kampx.dispatcher.destinations import UNUSABLE

log = logging.getLogger("kampx.metrics")  # the name operators filter on

PREFIX = "kampx"

# A scrape's request is one short head sent at once; a client that has not finished it
# after this long is idle or trickling on purpose and is cut off.
REQUEST_TIMEOUT_S = 5.0
# Prometheus gives up on a scrape after scrape_timeout (10 s by default); so do we.
RESPONSE_TIMEOUT_S = 10.0
# A connection costs one fd and its request head here, not a thread. 64 is room for several
# Prometheus servers and people with curl, far below the default limit of 1024 fds. When
# full, the connection that has waited longest for its request makes room for the new one,
# so idle connections cannot lock a scrape out.
MAX_CONNECTIONS = 64
MAX_REQUEST_BYTES = 16 * 1024  # a request head (Prometheus sends about 300 bytes)
REPLY_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")


def metric_name(group: str, name: str) -> str:
    return f"{PREFIX}_{group}_{name}".lower().replace("-", "_")


class KampxCollector:
    """Everything /metrics shows, read from shared memory and /proc at scrape time."""

    def __init__(self, shared, supervisor_pid: int, started: float, instance: str = ""):
        self.shared = shared
        self.supervisor_pid = supervisor_pid
        self.started = started
        self.instance = instance

    # prometheus-client calls describe() at registration; returning nothing makes it
    # skip the pre-scrape (which would read every table once for nothing)
    def describe(self):
        return []

    def _labels(self, names: list[str]) -> list[str]:
        return names + ["instance"] if self.instance else names

    def _values(self, values: list[str]) -> list[str]:
        return values + [self.instance] if self.instance else values

    def _family(self, cls, name: str, help: str, labels: list[str] | None = None, **kw):
        return cls(name, help, labels=self._labels(labels or []), **kw)

    def collect(self):
        totals = self.shared.counters.column_sums()
        for fam in S.families():
            if fam.kind == "histogram":
                yield self._histogram(fam, totals)
            else:
                yield self._counter_family(fam, totals)
        yield from self._usrloc()
        yield from self._dialogs()
        yield from self._dispatcher()
        yield from self._security()
        yield from self._processes()
        yield from self._core()

    def _counter_family(self, fam: S.Family, totals: list[int]):
        name = metric_name(fam.group, fam.name)
        cls = CounterMetricFamily if fam.kind == S.KIND_COUNTER else GaugeMetricFamily
        if fam.label is None:
            m = self._family(cls, name, fam.help)
            m.add_metric(self._values([]), totals[fam.base])
            return m
        if fam.label == "code" and fam.values == S.REPLY_CODES:
            # 600 possible codes: a series appears once its code has been seen
            m = self._family(cls, name, fam.help, ["class", "code"])
            for i, code in enumerate(fam.values):
                v = totals[fam.base + i]
                if v:
                    m.add_metric(self._values([REPLY_CLASSES[code // 100 - 1], str(code)]), v)
            return m
        if isinstance(fam.label, tuple):  # several labels: each value is a tuple
            m = self._family(cls, name, fam.help, list(fam.label))
            for i, value in enumerate(fam.values):
                m.add_metric(self._values([str(v) for v in value]), totals[fam.base + i])
            return m
        m = self._family(cls, name, fam.help, [fam.label])
        for i, value in enumerate(fam.values):
            m.add_metric(self._values([str(value)]), totals[fam.base + i])
        return m

    def _histogram(self, fam: S.Family, totals: list[int]):
        """Stored as non-cumulative buckets in 1/scale units + sum + count (per value of its
        label, if any); exported as a Prometheus histogram (cumulative buckets, +Inf =
        count) in the exported unit (seconds)."""
        n = len(fam.buckets)
        labels = [fam.series_label] if fam.series_label else []
        m = self._family(HistogramMetricFamily, metric_name(fam.group, fam.name), fam.help, labels)
        for k, value in enumerate(fam.series or (None,)):
            base = fam.base + k * (n + 3)
            buckets = []
            running = 0
            for i, le in enumerate(fam.buckets):
                running += totals[base + i]
                buckets.append((floatToGoString(le / fam.scale), running))
            running += totals[base + n]
            buckets.append(("+Inf", running))
            values = [str(value)] if fam.series_label else []
            m.add_metric(self._values(values), buckets, totals[base + n + 1] / fam.scale)
        return m

    def _usrloc(self):
        loc = self.shared.location
        if loc is None:
            return
        aors, contacts = loc.stats(time.time())
        users = self._family(
            GaugeMetricFamily,
            "kampx_usrloc_registered_users",
            "AORs with at least one live binding",
        )
        users.add_metric(self._values([]), aors)
        yield users
        cts = self._family(
            GaugeMetricFamily,
            "kampx_usrloc_location_contacts",
            "Live bindings (registered contacts) in the location table",
        )
        cts.add_metric(self._values([]), contacts)
        yield cts

    def _dialogs(self):
        """Kamailio's dialog:active_dialogs and early_dialogs, of the tracked dialogs."""
        table = getattr(self.shared, "dialog_table", None)
        if table is None:
            return
        _, early, confirmed, _ = table.counts()
        for name, text, value in (
            ("active_dialogs", "Tracked dialogs (dlg_manage) answered and not ended", confirmed),
            ("early_dialogs", "Tracked dialogs ringing (a provisional with a To-tag)", early),
        ):
            m = self._family(GaugeMetricFamily, f"kampx_dialog_{name}", text)
            m.add_metric(self._values([]), value)
            yield m

    def _dispatcher(self):
        """Per destination of the running sets: up (usable by ds_select_dst) and its probes."""
        table = getattr(self.shared, "dispatcher", None)
        if table is None:
            return
        labels = ["setid", "uri"]
        up = self._family(
            GaugeMetricFamily,
            "kampx_dispatcher_destination_up",
            "1 when the destination is usable by ds_select_dst (not inactive, not disabled)",
            labels,
        )
        probes = self._family(
            CounterMetricFamily,
            "kampx_dispatcher_destination_probes",
            "OPTIONS probes sent to the destination",
            labels,
        )
        failed = self._family(
            CounterMetricFamily,
            "kampx_dispatcher_destination_probes_failed",
            "OPTIONS probes of the destination with no accepted reply in time",
            labels,
        )
        _, destinations = table.dump()
        for d in destinations:
            values = self._values([str(d["setid"]), d["uri"]])
            up.add_metric(values, 0 if d["flags"] & UNUSABLE else 1)
            probes.add_metric(values, d["probes"])
            failed.add_metric(values, d["probes_failed"])
        yield up
        yield probes
        yield failed

    def _security(self):
        now = time.monotonic()
        m = self._family(
            GaugeMetricFamily,
            "kampx_security_banned_sources",
            "Source IPs currently banned, by table",
            ["table"],
        )
        m.add_metric(self._values(["pike"]), self.shared.pike.banned_count(now))
        m.add_metric(self._values(["auth"]), self.shared.auth_bans.banned_count(now))
        yield m

    def _processes(self):
        cpu = self._family(
            CounterMetricFamily,
            "kampx_process_cpu_seconds",
            "CPU time (user + system) used by each kampx process",
            ["pid", "role"],
        )
        rss = self._family(
            GaugeMetricFamily,
            "kampx_process_resident_memory_bytes",
            "Resident set size of each kampx process (shared memory counted in each)",
            ["pid", "role"],
        )
        procs = procinfo.processes(self.supervisor_pid)
        for p in procs:
            labels = self._values([str(p.pid), p.role])
            cpu.add_metric(labels, p.cpu_seconds)
            rss.add_metric(labels, p.rss_bytes)
        n = self._family(
            GaugeMetricFamily,
            "kampx_processes",
            "Live kampx processes (the supervisor and its children)",
        )
        n.add_metric(self._values([]), len(procs))
        yield cpu
        yield rss
        yield n

    def _core(self):
        now = time.time()
        start = self._family(
            GaugeMetricFamily,
            "kampx_start_time_seconds",
            "When the supervisor started, seconds since the epoch",
        )
        start.add_metric(self._values([]), self.started)
        yield start
        up = self._family(
            GaugeMetricFamily, "kampx_uptime_seconds", "Seconds since the supervisor started"
        )
        up.add_metric(self._values([]), max(0.0, now - self.started))
        yield up
        info = self._family(
            GaugeMetricFamily,
            "kampx_build_info",
            "Always 1; the labels say which kampx runs",
            ["version", "python"],
        )
        info.add_metric(self._values([__version__, platform.python_version()]), 1)
        yield info


def make_registry(collector: KampxCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


class _Handler(BaseHTTPRequestHandler):
    """One request, parsed by the standard library from the head the event loop read
    (`request` is those bytes), answered into a buffer the loop then writes."""

    registry: CollectorRegistry  # set on the subclass made by MetricsServer
    server_version = f"kampx/{__version__}"

    def setup(self) -> None:
        self.rfile = io.BytesIO(self.request)
        self.wfile = io.BytesIO()

    def finish(self) -> None:
        pass

    def do_GET(self) -> None:
        self._respond(with_body=True)

    def do_HEAD(self) -> None:
        self._respond(with_body=False)

    def _respond(self, with_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            try:
                body = encoder(self.registry)
            except Exception:
                log.exception("scrape failed")
                self._plain(500, b"scrape failed (see the kampx log)\n", with_body)
                return
            self._send(200, content_type, body, with_body)
        elif path == "/":
            self._send(
                200,
                "text/html; charset=utf-8",
                b'<html><body><a href="/metrics">/metrics</a></body></html>\n',
                with_body,
            )
        else:
            self._plain(404, b"not found: try /metrics\n", with_body)

    def _plain(self, code: int, body: bytes, with_body: bool) -> None:
        self._send(code, "text/plain; charset=utf-8", body, with_body)

    def _send(self, code: int, content_type: str, body: bytes, with_body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # scrapes are not worth a log line
        log.debug("%s %s", self.address_string(), format % args)


def _head_end(buf: bytearray, start: int) -> int:
    """Where the request head in `buf` ends (past its blank line), -1 while it has not; the
    search starts at `start`, just before the bytes that arrived last. Bare LF lines are
    accepted, as http.server accepts them."""
    i = buf.find(b"\r\n\r\n", start)
    if i >= 0:
        return i + 4
    i = buf.find(b"\n\n", start)
    return i + 2 if i >= 0 else -1


class _Conn:
    """A client connection: reading its request head until `deadline`, then (out set)
    writing the response until a new deadline."""

    __slots__ = ("sock", "addr", "deadline", "head", "out")

    def __init__(self, sock: socket.socket, addr, deadline: float):
        self.sock, self.addr, self.deadline = sock, addr, deadline
        self.head = bytearray()
        self.out: memoryview | None = None


class MetricsServer:
    """/metrics over HTTP on [metrics] listen: one thread of the calling process runs an
    event loop over the listener and every connection (module docstring)."""

    def __init__(self, listen: str, registry: CollectorRegistry):
        self.host, self.port = parse_hostport(listen, METRICS_PORT)
        self.handler = type("Handler", (_Handler,), {"registry": registry})
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((self.host, self.port))  # OSError when taken
            self.listener.listen(128)
        except OSError:
            self.listener.close()
            raise
        self.listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.sel.register(self._wake_r, selectors.EVENT_READ)
        self.conns: dict[socket.socket, _Conn] = {}  # oldest first
        self._stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True, name="metrics-http")

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()[:2]

    def start(self) -> "MetricsServer":
        self.thread.start()
        return self

    def close(self) -> None:
        self._stopping = True
        self._wake_w.send(b"x")
        self.thread.join(5)
        for c in list(self.conns.values()):
            self._drop(c)
        self.sel.close()
        self.listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # ---------------------------------------------------------------- the loop --------

    def _serve(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            for c in [c for c in self.conns.values() if c.deadline <= now]:
                self._drop(c)  # too slow to ask, or to take the answer
            wait = min((c.deadline for c in self.conns.values()), default=None)
            for key, _ in self.sel.select(None if wait is None else max(0.0, wait - now)):
                try:
                    if key.fileobj is self.listener:
                        self._accept()
                    elif key.fileobj is not self._wake_r:
                        self._step(key.data)
                except Exception:
                    # a bug here must not take /metrics down: drop that client, go on
                    log.exception("metrics connection failed")
                    if key.data is not None:
                        self._drop(key.data)

    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and the like: the clients wait in the backlog
                log.debug("metrics accept: %s", e)
                return
            if len(self.conns) >= MAX_CONNECTIONS:
                idle = next((c for c in self.conns.values() if c.out is None), None)
                if idle is None:  # every slot is answering a scrape: no room
                    sock.close()
                    continue
                self._drop(idle)  # the one that has kept a slot longest without asking
            sock.setblocking(False)
            c = _Conn(sock, addr, time.monotonic() + REQUEST_TIMEOUT_S)
            self.conns[sock] = c
            self.sel.register(sock, selectors.EVENT_READ, c)

    def _step(self, c: _Conn) -> None:
        if c.out is not None:
            self._write(c)
            return
        try:
            data = c.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(c)
            return
        seen = len(c.head)
        c.head += data
        end = _head_end(c.head, max(0, seen - 3))
        if end < 0:
            if len(c.head) > MAX_REQUEST_BYTES:
                self._drop(c)
            return
        # a request that ended its head: answer it here (a scrape takes milliseconds)
        h = self.handler(bytes(c.head[:end]), c.addr, self)
        c.out = memoryview(h.wfile.getvalue())
        c.deadline = time.monotonic() + RESPONSE_TIMEOUT_S
        self.sel.modify(c.sock, selectors.EVENT_WRITE, c)
        self._write(c)

    def _write(self, c: _Conn) -> None:
        out = c.out
        assert out is not None  # called once the response is buffered
        try:
            n = c.sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(c)
            return
        c.out = out[n:]
        if not c.out:
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._drop(c)

    def _drop(self, c: _Conn) -> None:
        if self.conns.pop(c.sock, None) is not None:
            self.sel.unregister(c.sock)
        c.sock.close()
