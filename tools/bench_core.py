#!/usr/bin/env python3
"""Core benchmark (a benchmark, never a timed test): stateless OPTIONS replies per second and
stateful relayed calls per second through kampx with the static relay script, children=1 and
children=2, with the proxy's CPU time per request. SIPp drives it on loopback; every run is
bounded in calls and time.

    python3 tools/bench_core.py [--duration 8] [--scenario options --scenario call]

A step passes when no call failed, SIPp produced the asked rate and retransmissions stay
under 0.1 %. The rate doubles until a step fails, then is bisected to 10 %.
Reports max sustained rate, proxy CPU us/request at that rate and at a fixed moderate rate
(the figure that compares across noisy runs), and the children=2 / children=1 ratio.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

import sipprun  # noqa: E402
from kampxproc import KampxProcess  # noqa: E402

START = {"options": 4000, "call": 400}
MODERATE = {"options": 3000, "call": 300}


def tree_cpu(pid: int) -> float:
    """CPU seconds (user+system) of pid and its children, from /proc."""
    hz = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / hz
        except (OSError, IndexError, ValueError):
            pass
    return total


def step(px, scenario: str, rate: int, duration: float):
    calls = int(rate * duration)
    uas = None
    if scenario == "call":
        uas = sipprun.Sipp("uas_call.xml", (px.addrs.phone, 5062), timeout=duration + 30)
        uac = sipprun.Sipp("uac_call.xml", (px.addrs.client, 5064), px.addr, calls=calls, rate=rate,
                           timeout=duration + 20, extra=["-l", str(rate * 3)])
    else:
        uac = sipprun.Sipp("options.xml", (px.addrs.client, 5064), px.addr, calls=calls, rate=rate,
                           timeout=duration + 20)
    t0, c0 = time.monotonic(), tree_cpu(px.proc.pid)
    res = uac.wait()
    elapsed, cpu = time.monotonic() - t0, tree_cpu(px.proc.pid) - c0
    if uas is not None:
        uas.stop()
    ok = (res.failed == 0 and res.successful >= calls * 0.999 and elapsed <= duration * 1.15 + 3
          and res.retransmissions <= calls * 0.001)
    return ok, res, cpu, elapsed


def search(px, scenario: str, duration: float):
    rate, best, worst, best_cpu = START[scenario], None, None, None
    for _ in range(10):
        ok, res, cpu, _ = step(px, scenario, rate, duration)
        print(f"  {scenario} rate={rate}: {'pass' if ok else 'FAIL'} ok={res.successful} "
              f"failed={res.failed} retrans={res.retransmissions} cpu_us/req="
              f"{cpu / max(1, res.successful) * 1e6:.0f}", flush=True)
        if ok:
            best, best_cpu = rate, cpu / max(1, res.successful) * 1e6
        else:
            worst = rate
        if worst is None:
            rate *= 2
        elif best is None:
            rate //= 2
        elif worst - best <= best * 0.1:
            break
        else:
            rate = (best + worst) // 2
    return best, best_cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--scenario", action="append", choices=["options", "call"])
    ap.add_argument("--children", action="append", type=int)
    args = ap.parse_args()
    scenarios = args.scenario or ["options", "call"]
    children = args.children or [1, 2]
    rows = []
    for scen in scenarios:
        for n in children:
            px = KampxProcess(children=n, config={"core": {"log_level": "warning"}})
            px.env["KAMPX_NEXT_HOP"] = f"{px.addrs.phone}:5062"
            px.start()
            try:
                print(f"{scen}, children={n}", flush=True)
                _, _, cpu, _ = step(px, scen, MODERATE[scen], args.duration)
                mod = MODERATE[scen]
                mod_cpu = cpu / (mod * args.duration) * 1e6
                best, best_cpu = search(px, scen, args.duration)
                rows.append((scen, n, best, best_cpu, mod_cpu))
            finally:
                px.close()
    print("\n| scenario | children | max sustained /s | proxy CPU us/req at max | proxy CPU us/req at moderate rate |")
    print("|---|---|---|---|---|")
    for scen, n, best, best_cpu, mod_cpu in rows:
        print(f"| {scen} | {n} | {best or 0} | {best_cpu or 0:.0f} | {mod_cpu:.0f} ({MODERATE[scen]}/s) |")
    for scen in scenarios:
        by = {n: best for s, n, best, _, _ in rows if s == scen}
        if by.get(1) and by.get(2):
            print(f"{scen}: children=2 / children=1 = {by[2] / by[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
