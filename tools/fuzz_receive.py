#!/usr/bin/env python3
"""Fuzz the whole receive path of a worker: parse, transaction matching, the built-in route
script (auth, registrar, permissions, rr, tm), replies and their sending.

The target is Worker.process(), the path under the worker's per-datagram guard, in a
kampx.sandbox.Sandbox (the real worker, tables and script in this process; its socket only
records, so no packet leaves the machine). An input is a finding when an exception escapes
process(), or when the worker logged one of its own (a route-script error answered with
500, an error in the reply path or a timer): the guard would have kept the worker alive,
but each is a bug.

The worker is not fed blind: at start it registers a user, receives a call from the carrier
and relays it, so the seeds include a REGISTER with valid credentials, replies that carry
the branch the worker really sent (they reach the transaction layer, not just the parser),
CANCEL, ACK and in-dialog requests for that call. Every seed is also the torture corpus
(tests/data/sip-torture) and a few hand-made hostile datagrams.

Two ways to run it:

  python3 tools/fuzz_receive.py --seconds 600            # built-in mutator, any machine
  python3 tools/fuzz_receive.py --atheris -max_total_time=3600 -rss_limit_mb=2048

The built-in mutator (byte flips, line deletion/duplication, header values swapped for
hostile tokens, splices of two seeds) is what tests/security/test_fuzz_receive.py runs for
a bounded time in CI, from a random seed it prints. --atheris uses libFuzzer's coverage
guided mutation over the same seeds (pip install atheris; Python coverage of kampx).
A finding is written to --out (default ./fuzz-receive-findings/) and the run fails.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TORTURE = os.path.join(REPO, "tests", "data", "sip-torture")
sys.path.insert(0, HERE)

from sipflows import (CARRIER, CLIENT, PHONE, PROXY, ROUTE, Flows,  # noqa: E402
                      make_sandbox, request)

RESET_EVERY = 2000             # inputs between two resets of the worker's transactions

HOSTILE_VALUES = [
    b"", b" ", b"0", b"-1", b"99999", b"65536", b"4294967296", b"18446744073709551616",
    b"<<<broken", b"sip:", b"sip:@", b"sip:[::1", b"[::1]:99999", b"1.2.3.4:0", b"%00",
    b"\xff\xfe", b"\x00", b"A" * 300, b"A" * 70000, b"sip:a@b;lr;lr;lr", b";;;", b",,,",
    b"\"unterminated", b"Digest username=", b"z9hG4bKkx00", b"SIP/2.0/UDP 1.2.3.4:99999",
    b"<sip:127.0.0.1;lr>", b"<sip:kampx.test:1;lr>", b"*", b"tel:+1", b"sips:x@[::1]:5061",
]


def flow_seeds(box) -> list[bytes]:
    """Drive a registration and calls through `box` (tools/sipflows.py: answered from the
    carrier, cancelled, failed with 486 and 503, and an authenticated call out); every
    datagram of them becomes a seed, with the hostile datagrams of issue 10."""
    seeds: list[bytes] = []

    def feed(data: bytes, src: tuple) -> None:
        seeds.append(data)
        box.feed(data, src)

    flows = Flows(box, feed)
    flows.register(1)
    flows.carrier_call(1)
    flows.cancelled_call(2)
    flows.carrier_call(3, final=(486, "Busy Here"))
    flows.carrier_call(4, final=(503, "Unavailable"))
    flows.outbound_call(5)
    seeds.append(f"OPTIONS sip:{PROXY} SIP/2.0\r\nFrom: <<<broken\r\nVia: SIP/2.0/UDP "
                 f"1.2.3.4:99999;branch=z9hG4bKx\r\nTo: <sip:a@b>\r\nCall-ID: x\r\n"
                 f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n".encode())
    seeds.append(request("INFO", "sip:victim@198.51.100.7", CLIENT, "forged", 5,
                         branch="z9hG4bKforged", to_tag="forged", extra=ROUTE))
    seeds.append(request("MESSAGE", f"sip:{PROXY}", CLIENT, "strict", 5, branch="z9hG4bKs",
                         to_tag="x", extra="Route: <sip:victim@198.51.100.7>\r\n"))
    return seeds


def torture_seeds() -> list[bytes]:
    out = []
    if os.path.isdir(TORTURE):
        for name in sorted(os.listdir(TORTURE)):
            if name.endswith(".dat"):
                with open(os.path.join(TORTURE, name), "rb") as f:
                    out.append(f.read())
    return out


def mutate(rnd: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    """One to four random edits of `data` (mostly one: a datagram with many edits rarely
    gets past the parser), each at the byte, line or header-value level."""
    r = rnd.random()
    for _ in range(1 if r < 0.6 else 2 if r < 0.85 else rnd.randint(3, 4)):
        kind = rnd.randrange(7)
        if kind == 0 and data:                               # flip bytes
            b = bytearray(data)
            for _ in range(rnd.randint(1, 3)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            data = bytes(b)
        elif kind == 1 and data:                             # cut a span
            i = rnd.randrange(len(data))
            data = data[:i] + data[i + rnd.randint(1, 64):]
        elif kind in (2, 3):                                 # a header value swapped
            lines = data.split(b"\r\n")
            i = rnd.randrange(len(lines))
            name, sep, _ = lines[i].partition(b":")
            value = rnd.choice(HOSTILE_VALUES)
            if sep and rnd.random() < 0.5:
                lines[i] = name + b": " + value
            else:                                            # or spliced into the line
                j = rnd.randint(0, len(lines[i]))
                lines[i] = lines[i][:j] + value + lines[i][j:]
            data = b"\r\n".join(lines)
        elif kind == 4:                                      # a line deleted or repeated
            lines = data.split(b"\r\n")
            i = rnd.randrange(len(lines))
            if rnd.random() < 0.5:
                del lines[i]
            else:
                lines.insert(i, lines[i])
            data = b"\r\n".join(lines)
        elif kind == 5:                                      # splice with another seed
            other = rnd.choice(seeds)
            data = data[:rnd.randint(0, len(data))] + other[rnd.randint(0, len(other)):]
        else:                                                # the start line's tokens
            first, sep, rest = data.partition(b"\r\n")
            toks = first.split(b" ")
            toks[rnd.randrange(len(toks))] = rnd.choice(HOSTILE_VALUES)
            data = b" ".join(toks) + sep + rest
    return data[:65535]


class Finding(Exception):
    pass


class Target:
    """The sandbox and the check applied to every input."""

    def __init__(self):
        self.box = make_sandbox(tm={"max_transactions": 4096})
        self.seeds = flow_seeds(self.box) + torture_seeds()
        self.check_errors()
        self.inputs = 0

    def check_errors(self) -> None:
        if self.box.errors:
            where, e = self.box.errors[0]
            self.box.errors.clear()
            raise Finding(f"the worker logged an error in {where}:\n"
                          + "".join(traceback.format_exception(type(e), e, e.__traceback__)))

    def run_one(self, data: bytes, src: tuple) -> None:
        self.inputs += 1
        if self.inputs % RESET_EVERY == 0:
            self.box.reset()
        try:
            self.box.feed(data, src)
            if self.inputs % 64 == 0:
                self.box.run_timers()
        except Exception as e:
            raise Finding("an exception escaped Worker.process():\n"
                          + "".join(traceback.format_exception(type(e), e, e.__traceback__)))
        self.check_errors()
        del self.box.sent[:]

    def close(self) -> None:
        self.box.close()


SOURCES = [CARRIER, PHONE, CLIENT, ("::1", 5060), (PROXY, 5060)]


def _signature(text: str) -> str:
    """A finding's identity: the innermost frame and the exception's type."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', text)
    kinds = re.findall(r"^(\w+(?:Error|Exception|Exit)\w*)\b", text, re.M)
    return f"{frames[-1] if frames else ''} {kinds[-1] if kinds else ''}"


def run_builtin(seconds: float, seed: int, out_dir: str, keep_going: bool = False,
                log=print) -> int:
    """The built-in mutator for `seconds`; returns how many inputs ran. A finding's input
    is written to out_dir; then Finding is raised, or with keep_going each distinct finding
    is logged and the run goes on (Finding at the end when there was any)."""
    rnd = random.Random(seed)
    target = Target()
    deadline = time.monotonic() + seconds
    found: dict[str, str] = {}
    try:
        while time.monotonic() < deadline:
            data = mutate(rnd, rnd.choice(target.seeds), target.seeds)
            src = rnd.choice(SOURCES[:3])
            try:
                target.run_one(data, src)
            except Finding as f:
                sig = _signature(str(f))
                if sig in found:
                    continue
                os.makedirs(out_dir, exist_ok=True)
                path = os.path.join(out_dir, f"finding-{hashlib.sha1(data).hexdigest()[:12]}.sip")
                with open(path, "wb") as fh:
                    fh.write(data)
                found[sig] = f"{f}\ninput (from {src[0]}:{src[1]}) saved to {path}"
                if not keep_going:
                    raise Finding(found[sig]) from None
                log(f"FINDING {len(found)}:\n{found[sig]}\n")
        if found:
            raise Finding(f"{len(found)} distinct findings in {target.inputs} inputs:\n\n" + "\n\n".join(found.values()))
        return target.inputs
    finally:
        target.close()


def run_atheris(argv: list[str]) -> None:
    import atheris
    with atheris.instrument_imports(include=["kampx"]):
        import kampx.sandbox  # noqa: F401
        import kampx.worker  # noqa: F401
    target = Target()
    corpus = os.path.join(REPO, "tools", "fuzz-corpus-receive")
    os.makedirs(corpus, exist_ok=True)
    for i, s in enumerate(target.seeds):
        with open(os.path.join(corpus, f"seed-{i:03d}.sip"), "wb") as f:
            f.write(s)

    def one(data: bytes) -> None:
        src = SOURCES[data[0] % 3] if data else SOURCES[0]
        target.run_one(data[1:], src)

    atheris.Setup([sys.argv[0]] + argv + [corpus], one)
    atheris.Fuzz()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", default="fuzz-receive-findings")
    ap.add_argument("--keep-going", action="store_true", help="log each distinct finding, go on")
    ap.add_argument("--atheris", action="store_true", help="libFuzzer mode; other flags pass through")
    args, rest = ap.parse_known_args()
    sys.path.insert(0, REPO)
    if args.atheris:
        run_atheris(rest)
        return 0
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"fuzz_receive: seed {seed}, {args.seconds:.0f} s")
    try:
        n = run_builtin(args.seconds, seed, args.out, args.keep_going)
    except Finding as f:
        print(f"FINDING (seed {seed}):\n{f}" if not args.keep_going else str(f).split(":")[0])
        return 1
    print(f"fuzz_receive: {n} inputs, {n / args.seconds:.0f}/s, nothing escaped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
