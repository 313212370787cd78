"""The worker-to-worker hand-off channel: a burst to a busy owner must not be lost (an
unconnected Unix datagram socket would queue only net.unix.max_dgram_qlen = 10 of them); a
frame that send() could not have written is dropped and reported, the next one delivered;
only sibling workers running as our user get a connection (issue 10, item 6)."""
import ast
import os
import select
import signal
import socket
import struct
import time

import pytest

from kampx.transport.handoff import Handoff, address


def _pair():
    inst = os.urandom(4).hex()
    return Handoff(inst, 1), Handoff(inst, 2)


def test_burst_to_a_busy_owner_is_queued_in_full():
    sender, owner = _pair()
    try:
        payloads = [os.urandom(900) for _ in range(500)]
        assert all(sender.send(2, 0, ("127.0.0.9", 5060 + i), p) for i, p in enumerate(payloads))
        fds = owner.accept()
        assert len(fds) == 1
        got = []
        while True:
            item = owner.recv(fds[0])
            if not item:
                break
            got.append(item)
        assert [g[2] for g in got] == payloads               # all of them, in order
        assert got[7][:2] == (0, ("127.0.0.9", 5067))
    finally:
        sender.close()
        owner.close()


def test_send_to_a_gone_worker_fails_and_reconnects_to_its_successor():
    sender, owner = _pair()
    inst = owner.instance
    try:
        assert sender.send(2, 0, ("127.0.0.9", 5060), b"one")
        owner.close()
        assert not sender.send(2, 0, ("127.0.0.9", 5060), b"lost")
        successor = Handoff(inst, 2)                          # a respawned worker, same id
        try:
            assert sender.send(2, 0, ("127.0.0.9", 5060), b"two")
            fd = successor.accept()[0]
            assert successor.recv(fd)[2] == b"two"
        finally:
            successor.close()
    finally:
        sender.close()


def test_sender_gone_is_reported_once():
    sender, owner = _pair()
    try:
        assert sender.send(2, 0, ("127.0.0.9", 5060), b"x")
        fd = owner.accept()[0]
        assert owner.recv(fd)[2] == b"x"
        assert owner.recv(fd) is None
        sender.close()
        assert owner.recv(fd) is False
        owner.drop(fd)
        assert fd not in owner.inbound
    finally:
        owner.close()


# -- hostile frames and strangers (issue 10, item 6) ------------------------------------------

def _frame(idx: int, port: int, ip: bytes, payload: bytes) -> bytes:
    """A frame as Handoff.send() lays it out: index (1), port (2), IP length (1), IP, data."""
    return struct.pack("!BHB", idx, port, len(ip)) + ip + payload


GOOD = _frame(1, 5060, b"127.0.0.9", b"good")


@pytest.mark.parametrize("bad, reason", [
    pytest.param(b"\x00\x13", "frame too short", id="2-bytes"),
    pytest.param(_frame(2, 5060, b"127.0.0.9", b"x"), "frame names no listen socket", id="index"),
    pytest.param(_frame(0, 0, b"127.0.0.9", b"x"), "frame has source port 0", id="port-0"),
    pytest.param(_frame(0, 5060, b"", b"x"), "frame has a bad source IP length", id="no-ip"),
    pytest.param(_frame(0, 5060, b"127.0.0.9", b""), "frame has no payload", id="no-payload"),
    pytest.param(struct.pack("!BHB", 0, 5060, 40) + b"127.0.0.9", "frame has no payload",
                 id="ip-past-end"),
    pytest.param(_frame(0, 5060, b"127.0.0.999", b"x"), "frame has a bad source IP", id="ip-999"),
    pytest.param(_frame(0, 5060, b"127.0.0.9 x", b"x"), "frame has a bad source IP", id="ip-junk"),
    pytest.param(_frame(0, 5060, b"fe80::zz", b"x"), "frame has a bad source IP", id="ipv6-junk"),
    pytest.param(_frame(0, 5060, "127.0.0.\u0669".encode(), b"x"), "frame has a bad source IP",
                 id="ip-arabic-digit"),
    pytest.param(_frame(0, 5060, b"\xff\xfe", b"x"), "frame has a bad source IP", id="ip-binary"),
])
def test_a_bad_frame_is_dropped_reported_and_the_next_one_delivered(bad, reason):
    reasons = []
    owner = Handoff(os.urandom(4).hex(), 2, on_rejected=reasons.append, listen_count=2)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.connect(address(owner.instance, 2))
        for frame in (bad, GOOD, bad, bad, GOOD):
            s.send(frame)
        fd = owner.accept()[0]
        assert owner.recv(fd) == (1, ("127.0.0.9", 5060), b"good")
        assert reasons == [reason]
        assert owner.recv(fd) == (1, ("127.0.0.9", 5060), b"good")   # past two bad ones
        assert reasons == [reason] * 3
        assert owner.recv(fd) is None
        s.send(bad)
        assert owner.recv(fd) is None                   # only a bad frame was waiting
        s.close()
        assert owner.recv(fd) is False
    finally:
        s.close()
        owner.close()


def test_an_ipv6_source_with_a_zone_is_delivered():
    sender, owner = _pair()
    try:
        for ip in ("::1", "fe80::1%lo", "::ffff:127.0.0.9"):
            assert sender.send(2, 0, (ip, 5060), b"v6")
        fd = owner.accept()[0]
        assert [owner.recv(fd)[1][0] for _ in range(3)] == ["::1", "fe80::1%lo", "::ffff:127.0.0.9"]
    finally:
        sender.close()
        owner.close()


def _child(body) -> int:
    """Fork; the child runs body() and exits 0, or 1 when it raised."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    return pid


def _wait(pid: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish in {timeout} s")


def _read_line(fd: int, timeout: float = 10.0) -> bytes:
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise AssertionError(f"nothing from the child in {timeout} s (so far {buf!r})")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf


def test_only_siblings_running_as_our_user_are_accepted():
    """The test process plays the supervisor. Worker A (its child) owns the channel; B, a
    sibling of A, gets through. The test process itself (A's parent, not a sibling) and,
    when we can setuid, a sibling running as nobody are refused: their frames never reach A,
    their connections are closed, and A reports each refusal."""
    inst = os.urandom(4).hex()
    ready_r, ready_w = os.pipe()
    out_r, out_w = os.pipe()
    go_r, go_w = os.pipe()       # closed by the test: the senders may exit

    def worker_a():
        got, reasons = [], []
        h = Handoff(inst, 2, on_rejected=reasons.append)
        os.write(ready_w, b"ready\n")
        fds: set[int] = set()
        deadline = time.monotonic() + 8
        while b"stop" not in got and time.monotonic() < deadline:
            readable, _, _ = select.select([h.fileno(), *fds], [], [], 0.1)
            for fd in readable:
                if fd == h.fileno():
                    fds.update(h.accept())
                    continue
                item = h.recv(fd)
                if item is False:
                    fds.discard(fd)
                    h.drop(fd)
                elif item:
                    got.append(item[2])
        os.write(out_w, repr((got, reasons)).encode() + b"\n")

    def sender(payloads, uid=None):
        def body():
            os.close(go_w)     # so that the test's close of it reaches us
            if uid is not None:
                os.setuid(uid)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            s.connect(address(inst, 2))
            os.write(ready_w, b"connected\n")
            for p in payloads:
                try:
                    s.send(_frame(0, 5060, b"127.0.0.9", p))
                except OSError:
                    break      # refused and closed already
            select.select([go_r], [], [], 10)      # alive until A has looked at us
        return body

    a = _child(worker_a)
    senders = []
    me = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        assert _read_line(ready_r) == b"ready\n"
        me.connect(address(inst, 2))
        try:
            me.send(_frame(0, 5060, b"127.0.0.9", b"from-parent"))
        except BrokenPipeError:
            pass                 # A refused and closed the connection first: the same result
        refused = ["connection refused: peer is not a worker of this proxy"]
        if os.geteuid() == 0:
            senders.append(_child(sender([b"from-nobody"], uid=65534)))
            refused.append("connection refused: peer runs as another user")
            assert _read_line(ready_r) == b"connected\n"     # queued before B's
        senders.append(_child(sender([b"from-sibling", b"stop"])))
        got, reasons = ast.literal_eval(_read_line(out_r).decode())
        assert got == [b"from-sibling", b"stop"]
        assert sorted(reasons) == sorted(refused)
        me.settimeout(2)
        try:                     # A closed it: reset (our frame unread) or end of stream
            closed = me.recv(100) == b""
        except ConnectionResetError:
            closed = True
        assert closed
    finally:
        os.close(go_w)
        me.close()
        codes = [_wait(pid) for pid in [a, *senders]]
        for fd in (ready_r, ready_w, out_r, out_w, go_r):
            os.close(fd)
    assert codes == [0] * len(codes)
