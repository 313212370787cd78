"""What the ctl process costs: a /metrics scrape and a full `ul show` over the control socket,
with a location table of N bindings (one per AOR), in this process on a temp socket.

    python tools/bench_ctl.py [--bindings 1000000] [--page 500] [--scrapes 20]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

from prometheus_client.exposition import generate_latest

from kampx import stats as S
from kampx._shm import CounterRows, RateTable
from kampx.config import from_dict
from kampx.control.client import ControlClient
from kampx.control.methods import Methods
from kampx.control.server import RpcServer, bind_unix
from kampx.stats.prometheus import KampxCollector, make_registry
from kampx.shared import COUNTER_ROWS
from kampx.stats.kamctl import StatsView
from kampx.usrloc import LocationStore


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bindings", type=int, default=1_000_000)
    ap.add_argument("--page", type=int, default=500)
    ap.add_argument("--scrapes", type=int, default=20)
    args = ap.parse_args()

    n = args.bindings
    shared = SimpleNamespace(location=LocationStore(n, 42, track_changes=False),
                             counters=CounterRows(COUNTER_ROWS, S.ncols()),
                             pike=RateTable(65536, 1), auth_bans=RateTable(65536, 2),
                             permissions=None)
    now = time.time()
    t = time.perf_counter()
    for i in range(n):
        shared.location.apply(f"user{i}", now, [(f"sip:user{i}@10.{i >> 16 & 255}.{i >> 8 & 255}."
                                                 f"{i & 255}:5060", now + 3600, -1, f"call-{i}", 1,
                                                 "", "", "udp:127.0.0.1:5060", "bench-phone",
                                                 "", 0, 0)])
    print(f"filled {n} bindings in {time.perf_counter() - t:.1f} s")
    # every worker row busy, every reply code seen: the largest exposition
    for row in range(0, COUNTER_ROWS, 3):
        for col in range(S.ncols()):
            shared.counters.add(row, col, 1)

    registry = make_registry(KampxCollector(shared, os.getpid(), now))
    times = []
    for _ in range(args.scrapes):
        t = time.perf_counter()
        body = generate_latest(registry)
        times.append(time.perf_counter() - t)
    times.sort()
    t = time.perf_counter()
    shared.location.stats(time.time())
    loc_ms = (time.perf_counter() - t) * 1e3
    print(f"scrape: {len(body)} bytes, median {times[len(times) // 2] * 1e3:.1f} ms, "
          f"max {times[-1] * 1e3:.1f} ms (of which location stats {loc_ms:.1f} ms)")

    d = tempfile.mkdtemp(prefix="kxbench", dir="/tmp")
    path = os.path.join(d, "ctl.sock")
    try:
        cfg = from_dict({"control": {"socket": path}})
        methods = Methods(shared, cfg, os.getpid(), now, StatsView(shared.counters))
        server = RpcServer(bind_unix(path), path, methods.table())
        threading.Thread(target=server.serve_forever, daemon=True).start()
        client = ControlClient(path)
        pages = 0
        worst = 0.0
        aors = 0
        t = time.perf_counter()
        cursor = None
        while True:
            t1 = time.perf_counter()
            params = {"limit": args.page} if cursor is None else {"limit": args.page, "cursor": cursor}
            page = client.call("ul.dump", params)
            worst = max(worst, time.perf_counter() - t1)
            pages += 1
            aors += len(page["aors"])
            cursor = page["next"]
            if cursor is None:
                break
        total = time.perf_counter() - t
        print(f"ul.dump over the socket: {aors} AORs in {pages} pages of {args.page}, "
              f"{total:.1f} s, worst page {worst * 1e3:.1f} ms")
        server.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
