#!/usr/bin/env python3
"""How datagrams from ONE source IP:port (a carrier trunk) spread over worker processes, for
the three ways of sharing a UDP port (docs/architecture.md, "UDP"):

  shared+rotate  one socket bound before fork, every worker in epoll with EPOLLEXCLUSIVE,
             re-registered after each wake-up so workers take turns (kampx)
  shared     the same without re-registering: the first idle worker is always preferred
  reuseport  one SO_REUSEPORT socket per worker (the kernel hashes the 4-tuple)
  cbpf       the reuseport group steered by SO_ATTACH_REUSEPORT_CBPF (random pick)

Each worker does `--work-us` of busy work per datagram, like a proxy would. Loopback only,
bounded count. Prints datagrams per worker and the spread (min/max share)."""
from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import time

SO_ATTACH_REUSEPORT_CBPF = 51


def cbpf_random(n: int) -> bytes:
    # ld rand; mod #n; ret a   (BPF_LD|BPF_W|BPF_ABS with SKF_AD_RANDOM, BPF_ALU|BPF_MOD|BPF_K, BPF_RET|BPF_A)
    insns = [(0x20, 0, 0, 0xfffff038), (0x94, 0, 0, n), (0x16, 0, 0, 0)]
    return b"".join(struct.pack("HBBI", *i) for i in insns)


def make_socket(addr, reuse: bool) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(addr)
    s.setblocking(False)
    return s


def worker(sock, pipe_w, work_us: float, stop_after: float, rotate: bool):
    ep = select.epoll()
    flags = select.EPOLLIN | select.EPOLLEXCLUSIVE
    ep.register(sock.fileno(), flags)
    n = 0
    last = time.monotonic()
    while time.monotonic() - last < stop_after:
        for _ in ep.poll(0.1):
            got = 0
            while True:
                try:
                    sock.recvfrom(2048)
                except BlockingIOError:
                    break
                n += 1
                got += 1
                last = time.monotonic()
                end = time.perf_counter() + work_us / 1e6
                while time.perf_counter() < end:
                    pass
            if rotate and got:
                # back of the socket's exclusive wait queue: the next datagram goes to a
                # worker that has waited longer (what blocking recvfrom gives Kamailio)
                ep.unregister(sock.fileno())
                ep.register(sock.fileno(), flags)
    os.write(pipe_w, struct.pack("I", n))
    os._exit(0)


def run(mode: str, workers: int, count: int, work_us: float, rate: int) -> list[int]:
    addr = ("127.0.99.1", 0)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(addr)
    addr = probe.getsockname()
    probe.close()
    socks = []
    if mode.startswith("shared"):
        socks = [make_socket(addr, True)] * workers
    else:
        socks = [make_socket(addr, True) for _ in range(workers)]
        if mode == "cbpf":
            socks[0].setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, _sock_fprog(cbpf_random(workers)))
    r, w = os.pipe()
    pids = []
    for i in range(workers):
        pid = os.fork()
        if pid == 0:
            worker(socks[i], w, work_us, 1.0, mode == "shared+rotate")
        pids.append(pid)
    time.sleep(0.3)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.99.2", 5060))            # one fixed source: the trunk
    gap = 1.0 / rate
    t = time.perf_counter()
    for i in range(count):
        tx.sendto(b"x" * 400, addr)
        t += gap
        while time.perf_counter() < t:
            pass
    counts = []
    for pid in pids:
        os.waitpid(pid, 0)
    for _ in pids:
        counts.append(struct.unpack("I", os.read(r, 4))[0])
    return sorted(counts, reverse=True)


def _sock_fprog(code: bytes) -> bytes:
    import ctypes
    buf = ctypes.create_string_buffer(code)
    _sock_fprog.keep = buf          # the kernel copies it during setsockopt
    return struct.pack("HL", len(code) // 8, ctypes.addressof(buf))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--rate", type=int, default=8000, help="datagrams per second")
    ap.add_argument("--work-us", type=float, default=100.0, help="busy work per datagram")
    a = ap.parse_args()
    print(f"{a.count} datagrams from one source at {a.rate}/s, {a.workers} workers, "
          f"{a.work_us:.0f} us of work each")
    print("| mode | per worker | min/max share |\n|---|---|---|")
    for mode in ("shared+rotate", "shared", "reuseport", "cbpf"):
        c = run(mode, a.workers, a.count, a.work_us, a.rate)
        share = f"{min(c) / sum(c):.2f} / {max(c) / sum(c):.2f}" if sum(c) else "-"
        print(f"| {mode} | {' / '.join(map(str, c))} | {share} |")


if __name__ == "__main__":
    main()
