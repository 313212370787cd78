#!/usr/bin/env python3
"""The db writer's CPU per call, from the journal records a real flow writes.

Runs a flow of tools/profile_flow.py in-process (the worker writes its dialog and accounting
records into the journal pipe as it would on the wire), keeps those bytes, then feeds them
through the db writer's side (kampx.dialog.JournalWriter with kampx.acc.AccSink) into a new
SQLite database, in slices of about a drain's worth (the db writer drains every 0.25 s:
200 calls at 800 calls/s). Prints the journal bytes per call and the db writer's CPU per
call for each round (the database grows from round to round, as it does on the wire).

    .venv/bin/python tools/bench_dbwriter.py --scenario carrier_call --calls 2000
    .venv/bin/python tools/bench_dbwriter.py --scenario carrier_call --profile   # cProfile

Time without --profile before changing a small function: the profiler inflates them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import profile_flow  # noqa: E402

from kampx.acc import AccSink  # noqa: E402
from kampx.config import AccConfig  # noqa: E402
from kampx.db.sqlite import SqliteStorage  # noqa: E402
from kampx.dialog import JournalWriter  # noqa: E402

CALLS_PER_DRAIN = 200


def read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def journal_of(scenario: str, calls: int) -> bytes:
    """The journal bytes `calls` calls of `scenario` write (start-up records left out)."""
    box, flows = profile_flow.setup(1)
    try:
        fd = box.shared.dialog_journal_r
        read_all(fd)
        flow = getattr(flows, scenario)
        out = []
        for i in range(calls):
            flow(200_000 + i)
            if i % 64 == 63:  # read as the db writer would, before the pipe fills
                box.worker.dialogs.journal.flush()
                box.sent.clear()
                box.run_timers()
                out.append(read_all(fd))
        box.run_timers()
        box.worker.dialogs.journal.flush()
        out.append(read_all(fd))
        return b"".join(out)
    finally:
        box.close()


def drain(data: bytes, storage, per_drain: int) -> None:
    r, w = os.pipe2(os.O_NONBLOCK)
    try:
        writer = JournalWriter(r, None, acc_sink=AccSink(AccConfig()))
        for pos in range(0, len(data), per_drain):
            os.write(w, data[pos : pos + per_drain])  # whole records need not line up
            writer.collect()
            writer.write(storage)
        writer.collect()
        writer.write(storage)
    finally:
        os.close(r)
        os.close(w)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", choices=profile_flow.SCENARIOS, default="carrier_call")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="one more round under cProfile")
    a = ap.parse_args()
    data = journal_of(a.scenario, a.calls)
    print(f"{a.scenario}: {len(data) / a.calls:.0f} journal bytes per call")
    # a pipe write is atomic up to PIPE_BUF; a drain's worth stays under the pipe's size
    per_drain = min(max(1, len(data) * CALLS_PER_DRAIN // a.calls), 60_000)
    with tempfile.TemporaryDirectory() as tmp:
        storage = SqliteStorage(os.path.join(tmp, "kampx.db"))
        try:
            for n in range(a.rounds):
                t0 = time.process_time()
                drain(data, storage, per_drain)
                us = (time.process_time() - t0) / a.calls * 1e6
                print(f"  round {n + 1}: {us:.1f} us of db writer CPU per call")
            counts = storage.acc.summary(0.0)  # every CDR written, or the run measured nothing
            cdrs = sum(v["calls"] for v in counts.values())
            print(f"  CDRs in the database: {cdrs} ({a.rounds} rounds of {a.calls} calls)")
            if a.profile:
                import cProfile
                import pstats

                prof = cProfile.Profile()
                prof.enable()
                drain(data, storage, per_drain)
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        finally:
            storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
