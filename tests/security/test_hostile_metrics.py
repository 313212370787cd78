"""/metrics against clients that connect and hang on (issue 10, item 7a).

The ctl process serves /metrics. Idle and trickling connections must neither cost it a
thread each nor keep a scrape out: the server cuts a client that has not sent its request
within kampx.stats.prometheus.REQUEST_TIMEOUT_S (5 s) and holds at most MAX_CONNECTIONS (64)
sockets, making room by closing the one that has waited longest for its request.
"""
from __future__ import annotations

import os
import socket
import time
import urllib.request

import pytest

from kampxproc import KampxProcess

REQUEST_TIMEOUT_S = 5.0        # kampx.stats.prometheus.REQUEST_TIMEOUT_S
CAP = 64                       # kampx.stats.prometheus.MAX_CONNECTIONS
SLACK_S = 2.0


@pytest.fixture(scope="module")
def px():
    with KampxProcess() as p:
        p.metric("kampx_build_info")        # the ctl process is up and serving
        yield p


def ctl_pid(px) -> int:
    (pid,) = [pid for pid, title in px.children().items() if title.endswith(": ctl")]
    return pid


def proc_status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def fd_links(pid: int) -> list[str]:
    """What the open fds of `pid` point to (an fd closed while we look is skipped)."""
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return out


def tcp_sockets(pid: int) -> int:
    return sum(link.startswith("socket:") for link in fd_links(pid))


def metrics_hostport(px) -> tuple[str, int]:
    host, port = px.metrics_listen.rsplit(":", 1)
    return host, int(port)


def open_idle(px, n: int) -> list[socket.socket]:
    """n connections from the clients' address that never send a byte."""
    out = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((px.addrs.client, 0))
        s.connect(metrics_hostport(px))
        out.append(s)
    return out


def scrape(px, timeout: float = 2.0) -> tuple[float, str]:
    """GET /metrics as Prometheus sends it (HTTP/1.1, keep-alive, its Accept); seconds taken
    and the body."""
    req = urllib.request.Request(f"http://{px.metrics_listen}/metrics", headers={
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        "User-Agent": "Prometheus/2.45.0", "Connection": "keep-alive"})
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.status == 200
        body = r.read().decode()
    return time.monotonic() - t0, body


def closed_by_server(s: socket.socket, deadline: float) -> bool:
    """Whether the server closes `s` before `deadline` (monotonic)."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    s.settimeout(left)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_a_prometheus_scrape_works(px):
    took, body = scrape(px)
    assert "kampx_build_info" in body and body.rstrip().endswith("# EOF")   # OpenMetrics
    assert took < 1.0


def test_idle_connections_hold_no_thread_and_do_not_block_a_scrape(px):
    pid = ctl_pid(px)
    threads = proc_status(pid, "Threads")
    t0 = time.monotonic()
    idle = open_idle(px, 50)
    try:
        time.sleep(0.3)
        assert proc_status(pid, "Threads") <= threads + 1, "a thread per idle connection"
        took, _ = scrape(px)                                   # while all 50 are open
        assert took < 1.0
        # they are cut at the request timeout: not at once, not never
        assert not closed_by_server(idle[0], t0 + REQUEST_TIMEOUT_S - 1.0)
        end = t0 + REQUEST_TIMEOUT_S + SLACK_S
        assert all(closed_by_server(s, end) for s in idle)
        assert proc_status(pid, "Threads") <= threads + 1
    finally:
        for s in idle:
            s.close()


def test_a_trickling_client_is_cut_off(px):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((px.addrs.client, 0))
    s.connect(metrics_hostport(px))
    t0 = time.monotonic()
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        cut = False
        for i in range(int((REQUEST_TIMEOUT_S + SLACK_S) / 0.5)):
            try:
                s.sendall(b"X-Slow-%d: 1\r\n" % i)             # a header every 0.5 s
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            if closed_by_server(s, time.monotonic() + 0.5):
                cut = True
                break
        assert cut, "still connected after the request timeout"
        assert REQUEST_TIMEOUT_S - 1.0 <= time.monotonic() - t0 <= REQUEST_TIMEOUT_S + SLACK_S
    finally:
        s.close()


def test_connections_past_the_cap_cost_nothing_and_do_not_lock_a_scrape_out(px):
    pid = ctl_pid(px)
    threads, sockets = proc_status(pid, "Threads"), tcp_sockets(pid)
    idle = open_idle(px, 2 * CAP)
    try:
        time.sleep(0.3)
        assert proc_status(pid, "Threads") <= threads + 1
        assert tcp_sockets(pid) <= sockets + CAP
        for _ in range(3):
            took, _ = scrape(px)
            assert took < 1.0
        assert tcp_sockets(pid) <= sockets + CAP
    finally:
        for s in idle:
            s.close()
