#!/usr/bin/env python3
"""Benchmark kampx on a shared PostgreSQL (docs/scale-out.md): replication delay, the db
writer's CPU cost with PostgreSQL against SQLite, REGISTERs through one node and two.

Everything runs on this machine: a throwaway PostgreSQL server (tests/cluster/pgserver.py,
Debian's package, loopback) and kampx nodes on locked loopback blocks; every load is bounded
in calls and time (SIPp -m / -timeout) and only processes started here are stopped.

  delay     two nodes, the built-in script (digest auth): N REGISTERs on node A, each timed
            from its 200 OK until node B's ul.lookup shows the binding (control socket,
            polled every 2 ms): p50 / p99 / max. Then N unREGISTERs on B, timed until A no
            longer shows the binding.
  cpu       one node, REGISTER -> save() without auth (tests/scripts/registrar_script.py),
            SIPp at RATE/s for SECONDS, once on SQLite and once on PostgreSQL: CPU seconds of
            the db writer process (and of the PostgreSQL server) per 1000 REGISTERs.
  scale     the same REGISTER load against one node, then split over two nodes (two SIPp,
            half the rate each), at increasing rates: 200 OKs received, and how long after
            the load until both nodes hold every binding.
  calls     carrier-in calls (the built-in script: trusted trunk -> lookup -> the phone, a
            SIPp UAS registered on node A) through one node, then split over two nodes (two
            SIPp carriers, half the rate each, node B finding A's binding in its replica):
            calls completed, and the nodes' CPU (whole process trees) and the database
            server's per call.

    python3 tools/bench_cluster.py                       # all four
    python3 tools/bench_cluster.py --parts delay --n 300
    python3 tools/bench_cluster.py --parts cpu,scale --rates 1000,2000 --seconds 5
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "tests", "cluster"))
sys.path.insert(0, os.path.join(REPO, "tests", "wire"))

import pgserver  # noqa: E402

REG_SCRIPT = os.path.join(REPO, "tests", "scripts", "registrar_script.py")
SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="kampx register (no auth)">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
      From: <sip:[kxtag]b[step]x[call_number]@bench.kampx.test>;tag=[call_number]kx[pid]
      To: <sip:[kxtag]b[step]x[call_number]@bench.kampx.test>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:b[step]x[call_number]@[local_ip]:[local_port]>
      Expires: 3600
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# ------------------------------------------------------------------------------ delay --

def part_delay(pg, n: int) -> dict:
    import wirekit
    from clusterkit import Cluster, wait_for
    from sipclient import SipClient
    pg.reset()
    subs = wirekit.pool()[:n]
    c = Cluster(pg, 2, subs)
    up, down = [], []
    try:
        a, b = c[0], c[1]
        with SipClient(a.addrs.client, 0, proxy=a.proxy) as ca, \
                SipClient(b.addrs.client, 0, proxy=b.proxy) as cb:
            for sub in subs:
                contact = ca.contact_uri(sub.user)
                wirekit.register(ca, a, sub, contact=contact, expires=600)
                t0 = time.monotonic()
                seen, _ = wait_for(lambda: b.contacts(sub.user), 5.0, step=0.002)
                if seen:
                    up.append(time.monotonic() - t0)
                time.sleep(random.uniform(0.01, 0.3))   # not in step with the db writer
            for sub in subs:
                wirekit.register(cb, b, sub, contact=ca.contact_uri(sub.user), expires=0)
                t0 = time.monotonic()
                gone, _ = wait_for(lambda: not a.contacts(sub.user), 5.0, step=0.002)
                if gone:
                    down.append(time.monotonic() - t0)
                time.sleep(random.uniform(0.01, 0.3))
    finally:
        c.close()
    return {"n": n, "up": up, "down": down}


# ---------------------------------------------------------------------------- helpers --

def proc_tree(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for ch in parents.get(todo.pop(), []):
            out.append(ch)
            todo.append(ch)
    return out


def cpu_s(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def titled(px, title: str) -> list[int]:
    out = []
    for pid in proc_tree(px.proc.pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(title.encode()):
                    out.append(pid)
        except OSError:
            pass
    return out


def postmaster_pids(pg) -> list[int]:
    with open(os.path.join(pg.data, "postmaster.pid")) as f:
        pid = int(f.readline())
    return [pid, *proc_tree(pid)]


def node(pg, shared: bool, capacity: int):
    from kampxproc import KampxProcess
    px = KampxProcess(script=REG_SCRIPT, children=2,
                      config={"usrloc": {"capacity": capacity}, "core": {"log_level": "warning"}})
    if shared:
        local = os.path.join(px.workdir, "node.db").lstrip("/")
        with open(px.config_path) as f:
            text = f.read()
        import re
        text = re.sub(r'(?m)^\[db\]\nurl = .*$', f'[db]\nurl = "{pg.url}"\nlocal = "sqlite:///{local}"', text)
        with open(px.config_path, "w") as f:
            f.write(text)
    return px.start()


def sipp_register(px, rate: int, seconds: float, step: int, tag: str, scen: str):
    import sipprun
    calls = int(rate * seconds)
    return sipprun.Sipp(scen, (px.addrs.client, 0), px.addr, calls=calls, rate=rate,
                        timeout=seconds * 4 + 20,
                        extra=["-l", str(max(100, rate)), "-key", "step", str(step),
                               "-key", "kxtag", tag]), calls


def contacts(px) -> int:
    from kampx.control.client import ControlClient
    stats = ControlClient(os.path.join(px.workdir, "kampx.sock")).call(
        "stats.get_statistics", {"group": "usrloc"})
    return int(stats.get("usrloc", {}).get("location-contacts", 0))


def scenario_file() -> str:
    f = tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False)
    f.write(SCENARIO)
    f.close()
    return f.name


# -------------------------------------------------------------------------------- cpu --

def part_cpu(pg, rate: int, seconds: float) -> list[dict]:
    scen = scenario_file()
    rows = []
    try:
        for shared in (False, True):
            pg.reset()
            px = node(pg, shared, int(rate * seconds * 1.5) + 1000)
            try:
                time.sleep(1.0)
                writer = titled(px, "kampx: db writer")
                pm = postmaster_pids(pg)
                w0, p0 = cpu_s(writer), cpu_s(pm)
                s, calls = sipp_register(px, rate, seconds, 0, "c", scen)
                r = s.wait()
                time.sleep(1.5)         # the last batches written
                rows.append({"db": "PostgreSQL" if shared else "SQLite", "calls": calls,
                             "ok": r.successful, "writer": cpu_s(writer) - w0,
                             "server": cpu_s(postmaster_pids(pg)) - p0 if shared else 0.0})
            finally:
                px.close()
    finally:
        os.unlink(scen)
    return rows


# ------------------------------------------------------------------------------ scale --

def part_scale(pg, rates: list[int], seconds: float) -> list[dict]:
    scen = scenario_file()
    rows = []
    try:
        for nodes in (1, 2):
            pg.reset()
            cap = int(sum(rates) * seconds * 1.5) + 1000
            pxs = [node(pg, True, cap) for _ in range(nodes)]
            try:
                time.sleep(1.0)
                total = 0
                for step, rate in enumerate(rates):
                    t0 = time.monotonic()
                    runs = [sipp_register(px, rate // nodes, seconds, step, f"n{i}", scen)
                            for i, px in enumerate(pxs)]
                    results = [s.wait() for s, _ in runs]
                    elapsed = time.monotonic() - t0
                    ok = sum(r.successful for r in results)
                    total += ok
                    t1 = time.monotonic()
                    level = None
                    while time.monotonic() - t1 < 20:
                        if all(contacts(px) >= total for px in pxs):
                            level = time.monotonic() - t1
                            break
                        time.sleep(0.05)
                    rows.append({"nodes": nodes, "rate": rate,
                                 "calls": sum(c for _, c in runs), "ok": ok,
                                 "failed": sum(r.failed for r in results), "elapsed": elapsed,
                                 "level": level})
            finally:
                for px in pxs:
                    px.close()
    finally:
        os.unlink(scen)
    return rows


# ------------------------------------------------------------------------------ calls --

CALL_PORT = 5064            # the carrier's SIPp on each node; the phone's UAS answers on 5062


def part_calls(pg, rates: list[int], seconds: float) -> list[dict]:
    import proxyctl
    import sipprun
    import wirekit
    from clusterkit import Cluster, wait_for
    from sipclient import SipClient
    sub = wirekit.pool()[0]
    rows = []
    for nodes in (1, 2):
        pg.reset()
        c = Cluster(pg, nodes, [sub], proxyctl.Options(children=2))
        uas = None
        try:
            a = c[0]
            phone = (a.addrs.phone, 5062)
            uas = sipprun.Sipp("uas_call.xml", phone, timeout=len(rates) * (seconds * 3 + 30))
            # registered from the phone's own address: no NAT, so each node delivers directly
            with SipClient(a.addrs.phone, 0, proxy=a.proxy) as reg:
                wirekit.register(reg, a, sub, contact=f"sip:{sub.user}@{phone[0]}:{phone[1]}",
                                 expires=3600)
            seen, _ = wait_for(lambda: all(n.contacts(sub.user) for n in c.nodes), 5.0)
            assert seen, "the binding did not reach every node"
            trees = [[n.pid, *n._children()] for n in c.nodes]
            for rate in rates:
                n0, p0 = cpu_s(sum(trees, [])), cpu_s(postmaster_pids(pg))
                t0 = time.monotonic()
                runs = [sipprun.Sipp("uac_call.xml", (a.addrs.carrier, CALL_PORT + 2 * i),
                                     n.proxy, calls=int(rate // nodes * seconds),
                                     rate=rate // nodes, service=sub.user,
                                     timeout=seconds * 2 + 20,
                                     extra=["-l", str(max(50, rate * 3))])
                        for i, n in enumerate(c.nodes)]
                results = [s.wait() for s in runs]
                elapsed = time.monotonic() - t0
                time.sleep(1.0)          # the last BYEs' transactions
                ok = sum(r.successful for r in results)
                rows.append({"nodes": nodes, "rate": rate,
                             "calls": sum(int(rate // nodes * seconds) for _ in c.nodes),
                             "ok": ok, "failed": sum(r.failed for r in results),
                             "elapsed": elapsed, "proxy": cpu_s(sum(trees, [])) - n0,
                             "server": cpu_s(postmaster_pids(pg)) - p0})
        finally:
            if uas is not None:
                uas.kill()
            c.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="delay,cpu,scale,calls")
    ap.add_argument("--n", type=int, default=200, help="REGISTERs timed for the delay")
    ap.add_argument("--rate", type=int, default=1000, help="REGISTERs/s for the CPU part")
    ap.add_argument("--rates", default="500,1000,2000")
    ap.add_argument("--call-rates", default="200,400")
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    pg = pgserver.PgServer()
    try:
        pg.start()
        pg.create_database()
        if "delay" in parts:
            r = part_delay(pg, args.n)
            print(f"replication delay, two nodes, {r['n']} bindings, ms "
                  "(200 OK on one node -> visible on the other):")
            for name, v in (("REGISTER on A -> on B", r["up"]),
                            ("unREGISTER on B -> gone on A", r["down"])):
                if v:
                    print(f"  {name:<30} p50 {pct(v, 50) * 1e3:6.1f}  p99 {pct(v, 99) * 1e3:6.1f}"
                          f"  max {max(v) * 1e3:6.1f}  mean {statistics.mean(v) * 1e3:6.1f}"
                          f"  ({len(v)}/{r['n']} seen within 5 s)")
        if "cpu" in parts:
            rows = part_cpu(pg, args.rate, args.seconds)
            print(f"\nwrite-behind CPU, one node, {args.rate} REGISTER/s for {args.seconds:g} s "
                  "(CPU seconds per 1000 REGISTERs):")
            for r in rows:
                k = max(1, r["ok"]) / 1000
                print(f"  {r['db']:<10} {r['ok']:>6}/{r['calls']} OK  db writer "
                      f"{r['writer'] / k:6.3f} s  database server {r['server'] / k:6.3f} s")
        if "scale" in parts:
            rows = part_scale(pg, [int(x) for x in args.rates.split(",")], args.seconds)
            print(f"\nREGISTER (no auth) through one node vs two, {args.seconds:g} s per rate, "
                  "PostgreSQL:")
            print(f"  {'nodes':>5} {'rate/s':>7} {'sent':>6} {'200 OK':>7} {'failed':>6} "
                  f"{'real/s':>7} {'all nodes level after':>22}")
            for r in rows:
                lvl = f"{r['level']:.2f} s" if r["level"] is not None else "> 20 s"
                print(f"  {r['nodes']:>5} {r['rate']:>7} {r['calls']:>6} {r['ok']:>7} "
                      f"{r['failed']:>6} {r['ok'] / r['elapsed']:>7.0f} {lvl:>22}")
        if "calls" in parts:
            rows = part_calls(pg, [int(x) for x in args.call_rates.split(",")], args.seconds)
            print(f"\ncarrier-in calls through one node vs two, {args.seconds:g} s per rate, "
                  "PostgreSQL (CPU per completed call, all nodes' process trees together):")
            print(f"  {'nodes':>5} {'rate/s':>7} {'calls':>6} {'done':>6} {'failed':>6} "
                  f"{'real/s':>7} {'nodes us/call':>14} {'database us/call':>17}")
            for r in rows:
                k = max(1, r["ok"])
                print(f"  {r['nodes']:>5} {r['rate']:>7} {r['calls']:>6} {r['ok']:>6} "
                      f"{r['failed']:>6} {r['ok'] / r['elapsed']:>7.0f} "
                      f"{r['proxy'] / k * 1e6:>14.0f} {r['server'] / k * 1e6:>17.0f}")
    finally:
        pg.close()


if __name__ == "__main__":
    main()
