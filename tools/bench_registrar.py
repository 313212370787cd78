#!/usr/bin/env python3
"""Benchmark the registrar: save() and lookup() from Python over a full location table, the
memory one binding costs, and REGISTERs per second through a running kampx (SIPp).

In-process part (one core, no sockets): for each table size the table is filled with one
binding per AOR, then timed per call:
  store lookup     LocationStore.lookup (the shared-memory read)
  store refresh    LocationStore.apply of one contact (a re-REGISTER: CSeq + 1)
  lookup()         kampx.registrar.lookup on a just-parsed INVITE: AOR from the R-URI,
                   table read, R-URI rewritten
  save()           kampx.registrar.save on a just-parsed REGISTER: checks, expires, table
                   write, the 200 OK built and handed to the socket (kampx.sandbox: a worker in this
                   process, its socket records instead of sending)
Parsing is not included: the time of parse + call minus that of the parse alone over the same
texts (tools/bench_parser.py measures the parser).

End-to-end part: kampx with tests/scripts/registrar_script.py (REGISTER -> save, no
authentication) on free loopback addresses, SIPp sending REGISTERs for distinct users at
fixed rates for a few seconds each (bounded: calls = rate x seconds, SIPp -timeout); the
table reports, per rate, how many got their 200 OK, how fast they really went, how many
bindings kampx then holds, and how long the db writer took to have them all in SQLite.

    python3 tools/bench_registrar.py                       # 100k and 1M, then SIPp
    python3 tools/bench_registrar.py --sizes 100000 --calls 20000 --no-e2e
    python3 tools/bench_registrar.py --no-inproc --rates 1000,2000,3000 --seconds 5
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from kampx import registrar  # noqa: E402
from kampx._cparse import parse  # noqa: E402
from kampx.sandbox import Sandbox  # noqa: E402
from kampx.usrloc import OK  # noqa: E402

REALM = "bench.kampx.test"


# ------------------------------------------------------------------------ in-process --

SOCKET_NAME = "udp:127.0.0.1:5060"


def contact(i: int) -> str:
    return f"sip:u{i}@10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:5060"


def register_text(i: int, cseq: int) -> str:
    return (f"REGISTER sip:{REALM} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:5060;rport;"
            f"branch=z9hG4bK{i}x{cseq}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:u{i}@{REALM}>;tag=f{i}\r\nTo: <sip:u{i}@{REALM}>\r\n"
            f"Call-ID: reg-{i}@bench\r\nCSeq: {cseq} REGISTER\r\n"
            f"Contact: <{contact(i)}>\r\nExpires: 3600\r\nUser-Agent: Bench-UA/1.0\r\n"
            f"Content-Length: 0\r\n\r\n")


def invite_text(i: int) -> str:
    return (f"INVITE sip:u{i}@{REALM} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bKinv{i}\r\nMax-Forwards: 70\r\n"
            f"From: <sip:carrier@127.0.0.3>;tag=c{i}\r\nTo: <sip:u{i}@{REALM}>\r\n"
            f"Call-ID: inv-{i}@bench\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def per_call_us(fn, args: list) -> float:
    t0 = time.perf_counter()
    for a in args:
        fn(*a)
    return (time.perf_counter() - t0) / len(args) * 1e6


def inproc(n: int, calls: int, seed: int) -> dict:
    rng = random.Random(seed)
    rss0 = rss_bytes()
    box = Sandbox(config={"registrar": {"min_expires": 1}, "usrloc": {"capacity": n}})
    store, w = box.shared.location, box.worker
    w.message = lambda text, src=("127.0.0.1", 5070): box.message(text.encode(), src)
    now = time.time()
    exp = float(int(now) + 3600)
    for i in range(n):
        st, _ = store.apply(f"u{i}", now, [(contact(i), exp, -1, f"reg-{i}@bench", 1,
                                             "sip:127.0.0.1:5070", "", SOCKET_NAME,
                                             "Bench-UA/1.0", "", 0, 0)])
        assert st == OK, st
    res = {"n": n, "nbytes": store.nbytes, "rss": rss_bytes() - rss0}
    pick = [rng.randrange(n) for _ in range(calls)]
    res["store_lookup"] = per_call_us(store.lookup, [(f"u{i}", now) for i in pick])
    cseq = dict.fromkeys(pick, 1)
    args = []
    for i in pick:
        cseq[i] += 1
        args.append((f"u{i}", now, [(contact(i), exp, -1, f"reg-{i}@bench", cseq[i],
                                     "sip:127.0.0.1:5070", "", SOCKET_NAME, "Bench-UA/1.0",
                                     "", 0, 0)]))
    res["store_refresh"] = per_call_us(store.apply, args)
    # A message reaches the registrar just parsed (hot in the cache): time parse + call and
    # subtract the time of the parse alone, over the same texts.
    invites = [invite_text(i) for i in pick]
    res["lookup"] = _minus_parse(w, invites, lambda m: registrar.lookup(w, m), 1)
    registers = []
    for i in pick:
        cseq[i] += 1
        registers.append(register_text(i, cseq[i]))
    res["save"] = _minus_parse(w, registers, lambda m: registrar.save(w, m), 1)
    box.close()
    return res


def _minus_parse(w, texts: list, call, expect) -> float:
    message = w.message
    t0 = time.perf_counter()
    for t in texts:
        message(t)
    parse_only = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in texts:
        if call(message(t)) != expect:
            raise AssertionError("the registrar call failed")
    both = time.perf_counter() - t0
    return (both - parse_only) / len(texts) * 1e6


# ------------------------------------------------------------------------ end to end --

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="kampx register (no auth)">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
      From: <sip:b[step]x[call_number]@bench.kampx.test>;tag=[call_number]kx[pid]
      To: <sip:b[step]x[call_number]@bench.kampx.test>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:b[step]x[call_number]@[local_ip]:[local_port]>
      Expires: 3600
      Max-Forwards: 70
      User-Agent: SIPp bench
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


def e2e(rates: list[int], seconds: float, children: int) -> list[dict]:
    import sipprun
    from kampxproc import KampxProcess
    if not sipprun.available():
        print("SIPp not found (Debian package sip-tester): end-to-end part skipped")
        return []
    total = sum(rates) * seconds
    script = os.path.join(REPO, "tests", "scripts", "registrar_script.py")
    px = KampxProcess(script=script, children=children,
                      config={"usrloc": {"capacity": int(total * 1.2) + 1000},
                              "core": {"log_level": "warning"}})
    px.start()
    scen = tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False)
    scen.write(SCENARIO)
    scen.close()
    rows = []
    try:
        for step, rate in enumerate(rates):
            calls = int(rate * seconds)
            t0 = time.monotonic()
            # every step registers its own users (b<step>x<n>): each REGISTER is a new binding
            s = sipprun.Sipp(scen.name, (px.addrs.client, 0), px.addr, calls=calls, rate=rate,
                             timeout=seconds * 4 + 20,
                             extra=["-l", str(max(100, rate)), "-key", "step", str(step)])
            r = s.wait()
            elapsed = time.monotonic() - t0
            bound = _contacts(px)
            rows.append({"rate": rate, "calls": calls, "ok": r.successful, "failed": r.failed,
                         "retrans": r.retransmissions, "elapsed": elapsed, "bound": bound,
                         "db_lag": _db_catch_up(px, bound)})
            if r.failed > calls * 0.01:
                break
    finally:
        os.unlink(scen.name)
        px.close()
    return rows


def _db_catch_up(px, bound: int | None, limit: float = 10.0) -> float | None:
    """Seconds after the load until the database holds every binding (the write-behind lag;
    None when it did not within `limit`)."""
    import sqlite3
    if bound is None:
        return None
    t0 = time.monotonic()
    db = os.path.join(px.workdir, "kampx.db")
    while time.monotonic() - t0 < limit:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            n = conn.execute("SELECT COUNT(*) FROM location").fetchone()[0]
        finally:
            conn.close()
        if n >= bound:
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def _contacts(px) -> int | None:
    """Bindings in the running kampx (usrloc location-contacts over its control socket): the
    200 OKs must have stored what they claim."""
    from kampx.control.client import ControlClient, ControlError
    try:
        stats = ControlClient(os.path.join(px.workdir, "kampx.sock")).call(
            "stats.get_statistics", {"group": "usrloc"})
    except ControlError:
        return None
    value = stats.get("usrloc", {}).get("location-contacts")
    return None if value is None else int(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--calls", type=int, default=100000, help="timed calls per measure")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cpu", type=int, default=0, help="pin the in-process part to this CPU (-1: no)")
    ap.add_argument("--rates", default="1000,2000,3000,4000,5000")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--children", type=int, default=2)
    ap.add_argument("--no-inproc", action="store_true")
    ap.add_argument("--no-e2e", action="store_true")
    args = ap.parse_args()
    if not args.no_inproc:
        affinity = os.sched_getaffinity(0)
        if args.cpu >= 0:
            os.sched_setaffinity(0, {args.cpu})
        rows = [inproc(int(s), args.calls, args.seed) for s in args.sizes.split(",")]
        os.sched_setaffinity(0, affinity)
        print("in-process, one core, us per call (targets: lookup <= 2, save <= 10)")
        print(f"{'bindings':>9} {'store lookup':>12} {'store refresh':>13} {'lookup()':>9} "
              f"{'save()':>7} {'map B/binding':>13} {'RSS B/binding':>13} {'map MB':>7}")
        for r in rows:
            print(f"{r['n']:>9} {r['store_lookup']:>12.2f} {r['store_refresh']:>13.2f} "
                  f"{r['lookup']:>9.2f} {r['save']:>7.2f} {r['nbytes'] / r['n']:>13.0f} "
                  f"{r['rss'] / r['n']:>13.0f} {r['nbytes'] / 1e6:>7.0f}")
    if not args.no_e2e:
        rows = e2e([int(x) for x in args.rates.split(",")], args.seconds, args.children)
        if rows:
            print(f"\nend to end: SIPp REGISTER -> kampx ({args.children} workers, save without "
                  f"auth) -> 200 OK, {args.seconds:g} s per rate")
            print(f"{'offered/s':>9} {'sent':>7} {'200 OK':>7} {'failed':>6} {'retrans':>7} "
                  f"{'achieved/s':>10} {'bindings':>9} {'db lag s':>8}")
            for r in rows:
                lag = "-" if r["db_lag"] is None else f"{r['db_lag']:.2f}"
                print(f"{r['rate']:>9} {r['calls']:>7} {r['ok']:>7} {r['failed']:>6} "
                      f"{r['retrans']:>7} {r['ok'] / r['elapsed']:>10.0f} {r['bound']!s:>9} "
                      f"{lag:>8}")
            print("db lag: seconds after the load until the database held every binding")


if __name__ == "__main__":
    main()
