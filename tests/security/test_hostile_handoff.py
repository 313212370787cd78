"""The workers' hand-off channel seen by a hostile local process (issue 10, item 6).

Each worker listens on an abstract Unix socket "@kampx-<instance>-w<id>" that any local
process can find in /proc/net/unix. A process that is not a worker of the proxy (this test
process; when we are root, also a process running as nobody) connects to every worker,
sends a well-formed frame carrying an INVITE "from" the carrier's address to a registered
user, and a 2-byte frame. The proxy must refuse those connections: the workers live on
(same pids, keepalives answered), the INVITE is neither answered nor relayed (the same
INVITE sent by the carrier itself is, which shows the injected one would have gone through),
and kampx_core_handoff_rejected_total counts every refusal.
"""
from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from authkit import REALM, AuthProxy, answer, challenge, register_request
from sipclient import UAS, SipClient

ALICE, PASSWORD = "50001", "pw-50001"
REJECTED = "kampx_core_handoff_rejected_total"
QUIET = 0.8


@pytest.fixture(scope="module")
def px():
    p = AuthProxy({ALICE: PASSWORD}).start()
    yield p
    p.close()


@pytest.fixture(scope="module")
def phone(px):
    """Alice's registered device: it records every request the proxy relays to it."""
    u = UAS(px.addrs.phone, 0, user=ALICE).start()
    with px.client(ALICE, ip=px.addrs.phone) as c:
        req, ch = challenge(c, ALICE, contact=f"<{u.contact}>")
        assert answer(c, req, ch, ALICE, PASSWORD).status == 200
    yield u
    u.stop()


@pytest.fixture
def carrier(px):
    with SipClient(px.addrs.carrier, 0, proxy=px.addr) as c:
        yield c


def handoff_addresses(pids: list[int]) -> list[bytes]:
    """The abstract addresses the processes `pids` listen on, from /proc/net/unix (columns:
    Num RefCount Protocol Flags Type St Inode Path), tied to them by socket inode so that
    another kampx on this machine is never touched."""
    inodes = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except FileNotFoundError:
                continue                 # closed while we looked
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    out = []
    with open("/proc/net/unix") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if len(cols) == 8 and cols[7].startswith("@kampx-") and int(cols[6]) in inodes:
                out.append(b"\0" + cols[7][1:].encode())
    return sorted(set(out))


def frame(src: tuple[str, int], payload: bytes) -> bytes:
    """What a worker sends: listen socket index, source port, IP length, IP, datagram."""
    ip = src[0].encode()
    return struct.pack("!BHB", 0, src[1], len(ip)) + ip + payload


def inject(addr: bytes, data: bytes) -> None:
    """Connect to a worker's hand-off socket and send one frame; a refusal may already
    have closed the connection when we send."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(addr)
        s.send(data)
    except OSError:
        pass
    finally:
        s.close()


def wait_metric(px, name: str, at_least: float, timeout: float = 3.0) -> float:
    deadline = time.monotonic() + timeout
    while True:
        v = px.metric(name)
        if v >= at_least or time.monotonic() >= deadline:
            return v
        time.sleep(0.1)


def keepalives_answered(px, n: int = 6) -> int:
    with px.client() as c:
        answered = 0
        for _ in range(n):
            req = c.request("OPTIONS", f"sip:{px.addr[0]}", contact=None)
            c.send(req)
            r = c.response(req, 1.0)
            answered += r is not None and r.status == 200
        return answered


def invite(carrier: SipClient):
    return carrier.request("INVITE", f"sip:{ALICE}@{REALM}", from_uri=f"sip:15550001111@{REALM}")


def run_attack(px, phone, carrier, send) -> None:
    """send(address, frame) for the carrier INVITE and a 2-byte frame, to every worker;
    then everything the module docstring promises."""
    pids = px.worker_pids()
    addrs = handoff_addresses(pids)
    assert len(addrs) == len(pids) == 2, (addrs, pids)
    before = px.metric(REJECTED)
    phone_before = len(phone.requests())
    for addr in addrs:
        send(addr, frame((carrier.ip, carrier.port), invite(carrier).encode()))
        send(addr, b"\x00\x13")
    assert carrier.quiet(QUIET) == []                       # not even a 100 Trying
    assert len(phone.requests()) == phone_before            # not relayed
    assert px.worker_pids() == pids                         # no worker died
    assert keepalives_answered(px) == 6
    assert wait_metric(px, REJECTED, before + 2 * len(addrs)) == before + 2 * len(addrs)

    # the control: the same INVITE from the carrier itself reaches alice's phone
    inv = invite(carrier)
    carrier.send(inv)
    assert phone.wait_for("INVITE", 2.0, count=1, match=lambda m: m.call_id == inv.get("Call-ID"))


def test_a_process_that_is_not_a_worker_is_refused(px, phone, carrier):
    run_attack(px, phone, carrier, inject)
    assert "connection refused: peer is not a worker of this proxy" in px.log_tail(200)


@pytest.mark.skipif(os.geteuid() != 0, reason="setuid to nobody needs root")
def test_a_process_running_as_nobody_is_refused(px, phone, carrier):
    def as_nobody(addr: bytes, data: bytes) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setuid(65534)
                inject(addr, data)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0

    run_attack(px, phone, carrier, as_nobody)
    assert "connection refused: peer runs as another user" in px.log_tail(200)
