"""Prometheus exposition at [metrics] listen /metrics, served by the ctl process.

Counters are not prometheus-client Counter objects: every process adds to its own row of a
shared CounterRows table (about 20 ns per increment; prometheus-client's multiprocess mode
costs 720-1775 ns and slows every scrape as worker pids pile up, ../shared/research.md).
A custom Collector sums the rows at scrape time. Rows of dead workers keep their counts, so
counters never go down while the proxy runs. `kampxctl stats --reset` does not reach here.

Names: kampx_<group>_<name> in lower case, counters with _total, HELP and TYPE on every
family, no timestamps; [metrics] instance adds instance="..." to every sample.
"""
from __future__ import annotations

import logging
import platform
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.core import (CollectorRegistry, CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from kampx import __version__, procinfo
from kampx import stats as S
from kampx.config import parse_hostport

log = logging.getLogger("kampx.metrics")

PREFIX = "kampx"
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
        for fam in S.FAMILIES:
            if fam.kind == "histogram":
                yield self._histogram(fam, totals)
            else:
                yield self._counter_family(fam, totals)
        yield from self._usrloc()
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
        m = self._family(cls, name, fam.help, [fam.label])
        for i, value in enumerate(fam.values):
            m.add_metric(self._values([str(value)]), totals[fam.base + i])
        return m

    def _histogram(self, fam: S.Family, totals: list[int]):
        """Stored as non-cumulative buckets in microseconds + sum_us + count; exported as a
        Prometheus histogram in seconds (cumulative buckets, +Inf = count)."""
        n = len(S.HIST_BUCKETS_US)
        buckets = []
        running = 0
        for i, le_us in enumerate(S.HIST_BUCKETS_US):
            running += totals[fam.base + i]
            buckets.append((floatToGoString(le_us / 1e6), running))
        running += totals[fam.base + n]
        buckets.append(("+Inf", running))
        m = self._family(HistogramMetricFamily, metric_name(fam.group, fam.name), fam.help)
        m.add_metric(self._values([]), buckets, totals[fam.base + n + 1] / 1e6)
        return m

    def _usrloc(self):
        loc = self.shared.location
        if loc is None:
            return
        aors, contacts = loc.stats(time.time())
        users = self._family(GaugeMetricFamily, "kampx_usrloc_registered_users",
                             "AORs with at least one live binding")
        users.add_metric(self._values([]), aors)
        yield users
        cts = self._family(GaugeMetricFamily, "kampx_usrloc_location_contacts",
                           "Live bindings (registered contacts) in the location table")
        cts.add_metric(self._values([]), contacts)
        yield cts

    def _security(self):
        now = time.monotonic()
        m = self._family(GaugeMetricFamily, "kampx_security_banned_sources",
                         "Source IPs currently banned, by table", ["table"])
        m.add_metric(self._values(["pike"]), self.shared.pike.banned_count(now))
        m.add_metric(self._values(["auth"]), self.shared.auth_bans.banned_count(now))
        yield m

    def _processes(self):
        cpu = self._family(CounterMetricFamily, "kampx_process_cpu_seconds",
                           "CPU time (user + system) used by each kampx process",
                           ["pid", "role"])
        rss = self._family(GaugeMetricFamily, "kampx_process_resident_memory_bytes",
                           "Resident set size of each kampx process (shared memory counted "
                           "in each)", ["pid", "role"])
        procs = procinfo.processes(self.supervisor_pid)
        for p in procs:
            labels = self._values([str(p.pid), p.role])
            cpu.add_metric(labels, p.cpu_seconds)
            rss.add_metric(labels, p.rss_bytes)
        n = self._family(GaugeMetricFamily, "kampx_processes",
                         "Live kampx processes (the supervisor and its children)")
        n.add_metric(self._values([]), len(procs))
        yield cpu
        yield rss
        yield n

    def _core(self):
        now = time.time()
        start = self._family(GaugeMetricFamily, "kampx_start_time_seconds",
                             "When the supervisor started, seconds since the epoch")
        start.add_metric(self._values([]), self.started)
        yield start
        up = self._family(GaugeMetricFamily, "kampx_uptime_seconds",
                          "Seconds since the supervisor started")
        up.add_metric(self._values([]), max(0.0, now - self.started))
        yield up
        info = self._family(GaugeMetricFamily, "kampx_build_info",
                            "Always 1; the labels say which kampx runs", ["version", "python"])
        info.add_metric(self._values([__version__, platform.python_version()]), 1)
        yield info


def make_registry(collector: KampxCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry = None  # set on the subclass made by MetricsServer
    server_version = f"kampx/{__version__}"

    def do_GET(self) -> None:
        self._respond(with_body=True)

    def do_HEAD(self) -> None:
        self._respond(with_body=False)

    def _respond(self, with_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept"))
            try:
                body = encoder(self.registry)
            except Exception:
                log.exception("scrape failed")
                self._plain(500, b"scrape failed (see the kampx log)\n", with_body)
                return
            self._send(200, content_type, body, with_body)
        elif path == "/":
            self._send(200, "text/html; charset=utf-8",
                       b'<html><body><a href="/metrics">/metrics</a></body></html>\n', with_body)
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MetricsServer:
    """/metrics over HTTP on [metrics] listen, in a thread of the calling process."""

    def __init__(self, listen: str, registry: CollectorRegistry):
        self.host, self.port = parse_hostport(listen, 9090)
        handler = type("Handler", (_Handler,), {"registry": registry})
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_cls = type("Server", (_Server,), {"address_family": family})
        self.httpd = server_cls((self.host, self.port), handler)   # OSError when taken
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                       name="metrics-http")

    @property
    def address(self) -> tuple[str, int]:
        return self.httpd.server_address[:2]

    def start(self) -> "MetricsServer":
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
