#!/usr/bin/env python3
"""Where a worker's CPU goes, per benchmark scenario, without sockets: the scenarios of
tools/sipflows.py run through a real worker in this process (kampx.sandbox), so what is
measured is kampx's own Python and C, none of the kernel's (sendto is a recording stand-in;
on the wire, system calls add their own share: see docs/performance.md).

    python3 tools/profile_flow.py                      # every scenario: us per call, then shares
    python3 tools/profile_flow.py --scenario carrier_call --calls 5000 --top 25
    python3 tools/profile_flow.py --scenario carrier_call --time-only --stages
    python3 tools/profile_flow.py --scenario carrier_call --time-only --stages --evict 64

Two measures per scenario (three with --stages):
  time     CPU time per call over --calls calls (process_time, the cyclic GC on, as in a worker)
  stages   --stages: the same run, unprofiled, timed per message kind (the INVITE, each reply
           code, the ACK, the BYE...): which message of a call costs what
  shares   a cProfile run, each function's own time put in the room it belongs to (parser,
           tm, timers, script, auth, registrar/usrloc, dialog, counters...); the profiler's
           own cost inflates every call alike, so read these as shares, not microseconds.
For an exact, repeatable count (instructions, whatever else the machine does):
    valgrind --tool=callgrind python3 tools/profile_flow.py --scenario S --calls N --time-only
at two values of N; the difference over the difference in N is the cost of one call
(tools/callgrind_flow.sh does it; --own: kampx's work alone, --stage: one function).
"""
from __future__ import annotations

import argparse
import cProfile
import collections
import os
import pstats
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import sipflows  # noqa: E402

SCENARIOS = ("options", "register", "carrier_call", "outbound_call")

# (substring of the file or built-in's name, room), first match wins
ROOMS = [
    ("tools/", "harness (not kampx)"), ("sandbox.py", "harness (not kampx)"),
    ("kampx._cparse", "parser and edits (C)"), ("_cparse", "parser and edits (C)"),
    ("kampx/tm/timers", "timers"), ("heapq", "timers"), ("kampx/tm/", "tm"),
    ("kampx/worker.py", "worker dispatch"), ("kampx/forward.py", "forward"),
    ("kampx/routing/builtin", "route script"), ("kampx/routing/hooks", "route script"),
    ("kampx/routing/auth", "auth"), ("kampx/auth/", "auth"), ("hashlib", "auth"),
    ("hmac", "auth"), ("_hashlib", "auth"), ("base64", "auth"), ("_shm.NonceCounts", "auth"),
    ("kampx/routing/", "script API"), ("kampx/registrar", "registrar/usrloc"),
    ("kampx/usrloc", "registrar/usrloc"), ("LocationStore", "registrar/usrloc"),
    ("kampx/dialog", "dialog"), ("kampx/dset", "registrar/usrloc"),
    ("kampx/stats", "counters"), ("CounterRows", "counters"),
    ("kampx/sl.py", "sl"), ("kampx/rr.py", "rr/sanity/maxfwd"),
    ("kampx/sanity", "rr/sanity/maxfwd"), ("kampx/maxfwd", "rr/sanity/maxfwd"),
    ("kampx/security", "security"), ("RateTable", "security"),
    ("KeyIndex", "shared indexes"), ("kampx/transport/udp", "send (stand-in socket)"),
    ("time.", "clock"), ("monotonic", "clock"),
]


def room_of(filename: str, name: str) -> str:
    where = f"{filename}:{name}"
    for key, room in ROOMS:
        if key in where:
            return room
    return "python built-ins" if filename == "~" else f"other ({os.path.basename(filename)})"


def setup(users: int):
    box = sipflows.make_sandbox(users=users, tm={"max_transactions": 200_000})
    flows = sipflows.Flows(box)
    for i in range(users):                     # every user registered (carrier_call needs it)
        flows.register(10_000_000 + i, user=sipflows.USER if i == 0 else f"user{i:04d}")
    box.sent.clear()
    return box, flows


def drain_journal(box) -> None:
    """Read what the worker journaled, as the db writer does: with nobody reading, the pipe
    fills after ~2000 calls and every flush after that is a refused write() (EAGAIN) that
    the real worker never makes."""
    fd = box.shared.dialog_journal_r
    while True:
        try:
            if not os.read(fd, 1 << 16):
                return
        except BlockingIOError:
            return


def run(flows, box, scenario: str, start: int, n: int) -> None:
    fn = getattr(flows, scenario)
    for i in range(start, start + n):
        fn(i)
        if i % 256 == 0:
            box.sent.clear()
            box.run_timers()
            drain_journal(box)
    if box.errors:
        where, e = box.errors[0]
        raise SystemExit(f"{scenario}: the worker logged {type(e).__name__} in {where}: {e}")


def time_per_call(scenario: str, calls: int) -> float:
    box, flows = setup(1)
    try:
        run(flows, box, scenario, 0, min(2000, calls))           # warm
        t0 = time.process_time()
        run(flows, box, scenario, 100_000, calls)
        return (time.process_time() - t0) / calls * 1e6
    finally:
        box.close()


def stages(scenario: str, calls: int, evict_mb: int = 0) -> None:
    """Print each message kind's wall time per call (one clock read around each datagram:
    no profiler, so the figures are what the worker spends, plus ~0.1 us each).

    With `evict_mb`, a buffer that size is written through before each datagram, outside
    the timed part: the caches are as cold as after other processes ran, as on the wire
    (a worker wakes per datagram or two, and SIPp and the other worker ran in between)."""
    box, flows = setup(1)
    spent: dict[bytes, int] = collections.Counter()
    seen: dict[bytes, int] = collections.Counter()
    feed = box.feed
    evict = bytearray(evict_mb << 20)
    lines = b"\x01" * (len(evict) // 64)

    def timed(data: bytes, src, *args) -> None:
        first = data.split(b"\r\n", 1)[0].split(b" ")
        kind = b" ".join(first[:2]) if first[0].startswith(b"SIP/") else first[0]
        if lines:
            evict[::64] = lines  # one byte per cache line: every line of the buffer
        t0 = time.perf_counter_ns()
        feed(data, src, *args)
        spent[kind] += time.perf_counter_ns() - t0
        seen[kind] += 1

    try:
        run(flows, box, scenario, 0, min(2000, calls))
        flows.feed = timed
        run(flows, box, scenario, 100_000, calls)
    finally:
        box.close()
    cold = f", caches evicted ({evict_mb} MiB) before each datagram" if evict_mb else ""
    print(f"  per message kind ({scenario}, unprofiled{cold}, us per call):")
    for kind, ns in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"    {ns / calls / 1000:7.1f}  {kind.decode()} ({seen[kind] / calls:g} per call)")
    print(f"    {sum(spent.values()) / calls / 1000:7.1f}  all of them")


def shares(scenario: str, calls: int, top: int) -> float:
    """Print the rooms' shares; return the harness's share of all profiled time."""
    box, flows = setup(1)
    try:
        run(flows, box, scenario, 0, min(2000, calls))
        prof = cProfile.Profile()
        prof.enable()
        run(flows, box, scenario, 100_000, calls)
        prof.disable()
    finally:
        box.close()
    st = pstats.Stats(prof)
    rooms: dict[str, float] = collections.Counter()
    funcs = []
    for (filename, _line, name), (_cc, _nc, tt, _ct, _callers) in st.stats.items():
        room = room_of(filename, name)
        rooms[room] += tt
        if not room.startswith("harness"):
            funcs.append((tt, f"{os.path.relpath(filename) if filename != '~' else ''}:{name}"))
    total = sum(v for k, v in rooms.items() if not k.startswith("harness"))
    harness = sum(rooms.values()) - total
    print(f"  shares of kampx's own time ({scenario}, cProfile, harness left out):")
    for room, tt in sorted(rooms.items(), key=lambda kv: -kv[1]):
        if not room.startswith("harness"):
            print(f"    {100 * tt / total:5.1f}%  {room}")
    print("  top functions by own time:")
    for tt, name in sorted(funcs, reverse=True)[:top]:
        print(f"    {100 * tt / total:5.1f}%  {name}")
    return harness / (harness + total)


def mark_kampx_work() -> None:
    """--mark-kampx: every datagram's processing, the journal flush and the timers go
    through operator.call, a C function the harness never calls otherwise, so that
    callgrind --toggle-collect=_operator_call counts kampx's own instructions and none of
    the harness's (tools/callgrind_flow.sh --own)."""
    import operator

    from kampx.sandbox import Sandbox

    call = operator.call

    def feed(self, data, src, guarded=False):
        w = self.worker
        try:
            call(w.receive if guarded else w.process, data, src, w.sockets[0], False)
        finally:
            call(w.dialogs.journal.flush)

    run_timers = Sandbox.run_timers
    Sandbox.feed = feed
    Sandbox.run_timers = lambda self: call(run_timers, self)


def mark_function(where: str) -> None:
    """--mark module:Qual.name: that function runs inside a functools.partial call, so that
    callgrind --toggle-collect=partial_vectorcall counts its instructions, callees included
    (tools/callgrind_flow.sh --stage). It must be looked up through its module or class
    when called (a name imported elsewhere under its own name is not replaced)."""
    import functools
    import importlib

    module, qual = where.split(":")
    owner = importlib.import_module(module)
    *path, name = qual.split(".")
    for part in path:
        owner = getattr(owner, part)
    fn = getattr(owner, name)

    def marked(*args, **kwargs):
        return functools.partial(fn)(*args, **kwargs)

    setattr(owner, name, marked)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", choices=SCENARIOS, action="append")
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--time-only", action="store_true")
    ap.add_argument("--stages", action="store_true", help="also time each message kind")
    ap.add_argument("--evict", type=int, default=0, metavar="MB",
                    help="with --stages: write MB of memory before each datagram (cold caches)")
    ap.add_argument("--mark-kampx", action="store_true",
                    help="kampx's own work through operator.call (for callgrind)")
    ap.add_argument("--mark", metavar="MODULE:QUAL.NAME",
                    help="one function through functools.partial (for callgrind)")
    args = ap.parse_args()
    if args.mark_kampx:
        mark_kampx_work()
    if args.mark:
        mark_function(args.mark)
    for scenario in args.scenario or SCENARIOS:
        us = time_per_call(scenario, args.calls)
        print(f"{scenario}: {us:.1f} us of CPU per call with the harness "
              f"(in-process, {args.calls} calls)")
        if args.stages:
            stages(scenario, args.calls, args.evict)
        if not args.time_only:
            h = shares(scenario, args.calls, args.top)
            print(f"  => about {us * (1 - h):.0f} us per call are kampx's own "
                  f"(the harness took {100 * h:.0f}% of the profile)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
