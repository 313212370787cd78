#!/usr/bin/env python3
"""ns/op of every kampx._shm operation, called from Python (loop and call overhead included;
the "empty loop" line is what the loop alone costs). Bounded: a few seconds, ~300 MB.

    python3 tools/bench_shm.py            # 100k and 1M keys
    python3 tools/bench_shm.py --quick    # 10k keys, for a smoke run
"""
from __future__ import annotations

import argparse
import os
import random
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kampx._shm import CounterRows, NonceCounts, RateTable, KeyIndex  # noqa: E402


def per_op(fn, items) -> float:
    """Best of 3 runs of fn(items); ns per item."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter_ns()
        fn(items)
        best = min(best, time.perf_counter_ns() - t0)
    return best / len(items)


def once(fn, items) -> float:
    """One run (for operations that change state: the second run would measure another case)."""
    t0 = time.perf_counter_ns()
    fn(items)
    return (time.perf_counter_ns() - t0) / len(items)


def timed(fn) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6


ROWS: list[tuple[str, str, str]] = []


def row(structure: str, op: str, value: str) -> None:
    ROWS.append((structure, op, value))
    print(f"{structure:<22} {op:<44} {value:>12}", flush=True)


def bench_counters(n: int) -> None:
    c = CounterRows(64, 64)
    idx = list(range(n))
    inc, add, get = c.inc, c.add, c.get

    def loop_inc(items):
        for _ in items:
            inc(3, 17)

    def loop_add(items):
        for _ in items:
            add(3, 17, -2)

    def loop_get(items):
        for _ in items:
            get(3, 17)

    def loop_attr(items):
        for _ in items:
            c.inc(3, 17)

    name = "CounterRows 64x64"
    row(name, "inc(row, col)  [bound method]", f"{per_op(loop_inc, idx):.1f} ns")
    row(name, "c.inc(row, col)  [attribute lookup each call]", f"{per_op(loop_attr, idx):.1f} ns")
    row(name, "add(row, col, -2)", f"{per_op(loop_add, idx):.1f} ns")
    row(name, "get(row, col)", f"{per_op(loop_get, idx):.1f} ns")
    row(name, "column_sums() (4096 cells)", f"{per_op(lambda it: [c.column_sums() for _ in it], range(200)) / 1000:.1f} us")


def bench_txn(nkeys: int, seed: int) -> None:
    t = KeyIndex(nkeys, seed)
    keys = [b"z9hG4bK%016x|192.0.2.%d:5060|INVITE" % (i * 0x9E3779B1, i & 255)
            for i in range(nkeys)]
    absent = [k + b"-x" for k in keys]
    now = time.monotonic()
    name = f"KeyIndex {nkeys // 1000}k"

    def claim_new(items):
        for k in items:
            t.claim(k, 1, now, 32.0)

    def claim_live(items):
        for k in items:
            t.claim(k, 2, now, 32.0)

    def lookup(items):
        for k in items:
            t.lookup(k, now)

    def refresh(items):
        for k in items:
            t.refresh(k, 1, now + 40.0)

    def release(items):
        for k in items:
            t.release(k, 1)

    row(name, f"claim, new key (fill to {nkeys})", f"{once(claim_new, keys):.0f} ns")
    row(name, "claim, key live (returns owner)", f"{per_op(claim_live, keys):.0f} ns")
    row(name, "lookup, hit", f"{per_op(lookup, keys):.0f} ns")
    row(name, "lookup, miss", f"{per_op(lookup, absent):.0f} ns")
    row(name, "refresh", f"{per_op(refresh, keys):.0f} ns")
    row(name, "count(now) full walk", f"{timed(lambda: t.count(now)):.1f} ms")
    row(name, "purge_owner (nothing to purge) full walk", f"{timed(lambda: t.purge_owner(9)):.1f} ms")
    row(name, "release", f"{once(release, keys):.0f} ns")
    row(name, "claim into expired/released slots",
        f"{once(lambda it: [t.claim(k, 3, now + 100.0, 32.0) for k in it], absent):.0f} ns")
    row(name, "nbytes", f"{t.nbytes / 2**20:.1f} MiB")


def bench_txn_two_processes(nkeys: int, seed: int) -> None:
    """claim + lookup + release of distinct keys: one process alone, then two at once (each
    on its own core) timing themselves after a shared-memory barrier."""
    t = KeyIndex(nkeys, seed)
    keys = [b"z9hG4bK%016x|2p" % (i * 0x9E3779B1) for i in range(nkeys)]
    now = time.monotonic()
    results = CounterRows(3, 1)       # row 0: barrier; rows 1, 2: each child's elapsed ns

    def work(part, owner):
        for k in part:
            t.claim(k, owner, now, 32.0)
            t.lookup(k, now)
            t.release(k, owner)

    work(keys, 1)                     # warm up (page faults)
    t0 = time.perf_counter_ns()
    work(keys, 1)
    single = (time.perf_counter_ns() - t0) / len(keys)
    pids = []
    for owner in (1, 2):
        pid = os.fork()
        if pid == 0:
            part = keys[owner - 1::2]
            results.inc(0, 0)
            while results.get(0, 0) < 2:
                pass
            t1 = time.perf_counter_ns()
            work(part, owner)
            results.add(owner, 0, time.perf_counter_ns() - t1)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    per_child = [results.get(o, 0) / (nkeys // 2) for o in (1, 2)]
    name = f"KeyIndex {nkeys // 1000}k"
    row(name, "claim+lookup+release, 1 process", f"{single:.0f} ns")
    row(name, "same, 2 processes at once (per process)",
        f"{per_child[0]:.0f}/{per_child[1]:.0f} ns")


def bench_rate(nips: int, seed: int) -> None:
    r = RateTable(nips, seed)
    ips = [struct.pack("!I", 0x0A000000 + i * 7919 % 2**24) for i in range(nips)]
    ips6 = [socket.inet_pton(socket.AF_INET6, "2001:db8::") [:12] + ip for ip in ips[: nips // 10]]
    now = time.monotonic()
    name = f"RateTable {nips // 1000}k"

    def hit(items):
        for ip in items:
            r.hit(ip, now, 2.0, 1_000_000, 60.0)

    def blocked(items):
        for ip in items:
            r.blocked(ip, now)

    row(name, f"hit, new IPv4 source (fill to {nips})", f"{once(hit, ips):.0f} ns")
    row(name, "hit, known source", f"{per_op(hit, ips):.0f} ns")
    row(name, "hit, new IPv6 source", f"{once(hit, ips6):.0f} ns")
    row(name, "blocked", f"{per_op(blocked, ips):.0f} ns")
    row(name, "banned_count full walk", f"{timed(lambda: r.banned_count(now)):.1f} ms")
    row(name, "dump full walk (all live)", f"{timed(lambda: r.dump(now)):.1f} ms")
    row(name, "expire (nothing due) full walk", f"{timed(lambda: r.expire(now)):.1f} ms")
    row(name, "expire (all due) full walk", f"{timed(lambda: r.expire(now + 100.0)):.1f} ms")
    row(name, "nbytes", f"{r.nbytes / 2**20:.1f} MiB")


def bench_nonce(n: int) -> None:
    nc = NonceCounts(n)
    idx = list(range(n))

    def new_index(items):
        for _ in items:
            nc.new_index()

    issued = []

    def check(items):
        for i, g in issued:
            nc.check(i, g, 1)

    name = f"NonceCounts {n // 1000}k"
    row(name, "new_index", f"{per_op(new_index, idx):.0f} ns")
    issued = [nc.new_index() for _ in idx]
    row(name, "check, accept (nc=1)", f"{once(check, idx):.0f} ns")
    row(name, "check, replay (nc=1 again)", f"{per_op(check, idx):.0f} ns")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10k keys only")
    args = ap.parse_args()
    sizes = [10_000] if args.quick else [100_000, 1_000_000]
    seed = random.getrandbits(64)
    items = list(range(1_000_000 if not args.quick else 100_000))

    def empty(it):
        for _ in it:
            pass
    row("(baseline)", "empty Python for-loop over a list", f"{per_op(empty, items):.1f} ns")
    bench_counters(len(items))
    bench_txn_two_processes(sizes[0], seed)       # before the big key lists make fork slow
    for n in sizes:
        bench_txn(n, seed)
    for n in sizes:
        bench_rate(n, seed)
    bench_nonce(sizes[0])


if __name__ == "__main__":
    main()
