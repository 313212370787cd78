#!/usr/bin/env python3
"""Where a running kampx spends its CPU, process by process: run it beside a load (the
side-by-side benchmark, SIPp) and it prints each process of the tree with its title, its CPU
time over the window (exact, from /proc/PID/schedstat), its share, the kernel's part of it
(system time, tick-sampled), voluntary and involuntary context switches per second.

    tools/proc_cpu.py --match 'kampx: supervisor' --wait 3 --seconds 8
    tools/proc_cpu.py --match 'kamailio -f' --wait 3 --seconds 8   # the reference, alike
    tools/proc_cpu.py --pid 12345 --seconds 10 --calls 8000   # adds CPU us per call

--match waits for a process whose title contains the text (the supervisor's), then measures
it and its children after --wait seconds (skip the start-up and the registration phase).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def children(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(_read(f"/proc/{d}/stat").rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def title(pid: int) -> str:
    try:
        return _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()[:60]
    except OSError:
        return "?"


CLK_TCK = os.sysconf("SC_CLK_TCK")


def sample(pid: int) -> tuple[int, int, int, int, int] | None:
    """(run ns, voluntary, involuntary context switches, user ticks, system ticks)"""
    try:
        ns = int(_read(f"/proc/{pid}/schedstat").split()[0])
        fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])
        vol = invol = 0
        for line in _read(f"/proc/{pid}/status").splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                vol = int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches"):
                invol = int(line.split()[1])
        return ns, vol, invol, utime, stime
    except (OSError, ValueError, IndexError):
        return None


def find(match: str, timeout: float) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for d in os.listdir("/proc"):
            if d.isdigit() and int(d) != os.getpid() and match in title(int(d)):
                return int(d)
        time.sleep(0.1)
    sys.exit(f"no process titled like {match!r} within {timeout:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pid", type=int)
    ap.add_argument("--match", help="title text of the root process (e.g. 'kampx: main')")
    ap.add_argument("--find-timeout", type=float, default=120)
    ap.add_argument("--wait", type=float, default=0, help="seconds before the window starts")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--calls", type=int, help="calls in the window: adds CPU us per call")
    a = ap.parse_args()
    root = a.pid or find(a.match, a.find_timeout)
    time.sleep(a.wait)
    pids = children(root)
    t0 = time.monotonic()
    before = {p: sample(p) for p in pids}
    time.sleep(a.seconds)
    dt = time.monotonic() - t0
    rows = []
    for p in pids:
        b, e = before.get(p), sample(p)
        if b and e:
            rows.append((e[0] - b[0], e[1] - b[1], e[2] - b[2], e[3] - b[3], e[4] - b[4], p))
    total = sum(r[0] for r in rows) or 1
    print(f"window {dt:.1f} s, {len(rows)} processes, total CPU {total / 1e9 / dt * 100:.1f} %")
    print(
        f"{'pid':>7} {'CPU%':>6} {'share':>6} {'kernel':>6} {'vol cs/s':>9} {'invol/s':>8}  title"
    )
    for ns, vol, invol, ut, st, p in sorted(rows, reverse=True):
        kernel = f"{st / (ut + st) * 100:5.0f}%" if ut + st else "     -"
        print(
            f"{p:>7} {ns / 1e9 / dt * 100:6.1f} {ns / total * 100:5.1f}% {kernel} "
            f"{vol / dt:9.0f} {invol / dt:8.0f}  {title(p)}"
        )
    ut, st = sum(r[3] for r in rows), sum(r[4] for r in rows)
    if ut + st:
        print(f"kernel share of the tree (system / user+system ticks): {st / (ut + st) * 100:.0f}%")
    if a.calls:
        print(f"CPU per call: {total / 1e3 / a.calls:.1f} us")


if __name__ == "__main__":
    main()
