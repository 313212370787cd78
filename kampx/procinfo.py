"""The proxy's processes as an operator sees them: the supervisor and its children, each with
its role (the process title without "kampx: "), CPU and memory. Read with psutil from /proc;
nothing in the workers is asked or touched. Used by core.psx and by /metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil

TITLE_PREFIX = "kampx: "


@dataclass
class ProcInfo:
    pid: int
    role: str
    cpu_seconds: float  # user + system, since the process started
    rss_bytes: int


def role_of(proc: psutil.Process) -> str:
    """The role from the title setproctitle wrote ("kampx: timer" -> "timer"); a child that
    has not set its title yet (just forked) shows its command line."""
    title = " ".join(proc.cmdline()).strip()
    return title[len(TITLE_PREFIX) :] if title.startswith(TITLE_PREFIX) else title


def _sample(proc: psutil.Process) -> ProcInfo | None:
    try:
        with proc.oneshot():
            t = proc.cpu_times()
            return ProcInfo(proc.pid, role_of(proc), t.user + t.system, proc.memory_info().rss)
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None  # exited (or is exiting) between the listing and the read


def processes(supervisor_pid: int) -> list[ProcInfo]:
    """The supervisor first, then its live children in pid order."""
    try:
        sup = psutil.Process(supervisor_pid)
        children = sorted(sup.children(), key=lambda p: p.pid)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in [sup] + children:
        info = _sample(p)
        if info is not None:
            out.append(info)
    return out


def psx(supervisor_pid: int, window: float = 0.2) -> list[dict]:
    """core.psx: every process sampled twice over the same `window`, CPU in percent of one
    core over that window."""
    first = {p.pid: p for p in processes(supervisor_pid)}
    t0 = time.monotonic()
    time.sleep(window)
    second = processes(supervisor_pid)
    elapsed = max(time.monotonic() - t0, 1e-6)
    out = []
    for idx, p in enumerate(second):
        before = first.get(p.pid)
        used = p.cpu_seconds - before.cpu_seconds if before is not None else 0.0
        out.append(
            {
                "idx": idx,
                "pid": p.pid,
                "role": p.role,
                "cpu_percent": round(max(0.0, used) * 100.0 / elapsed, 1),
                "rss_bytes": p.rss_bytes,
            }
        )
    return out
