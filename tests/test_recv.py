"""The listen socket's reader (kampx/transport/_recv.pyx): every datagram the socket holds
in one recvmmsg call, whole, with the address of its own sender."""

import socket

import pytest

from kampx.transport._recv import Receiver


def _pair(family=socket.AF_INET, host="127.0.0.1"):
    rx = socket.socket(family, socket.SOCK_DGRAM)
    rx.bind((host, 0))
    rx.setblocking(False)
    return rx


def test_empty_socket_gives_nothing_and_no_exception():
    rx = _pair()
    with rx:
        assert Receiver(rx.fileno()).recv() == []


def test_takes_at_most_a_batch_in_arrival_order():
    rx = _pair()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        tx.bind(("127.0.0.1", 0))
        for i in range(7):
            tx.sendto(b"d%d" % i, rx.getsockname())
        r = Receiver(rx.fileno(), 4)
        first, second = r.recv(), r.recv()
        assert [d for d, _ in first] == [b"d0", b"d1", b"d2", b"d3"]
        assert [d for d, _ in second] == [b"d4", b"d5", b"d6"]
        assert {src for _, src in first + second} == {tx.getsockname()}
        assert r.recv() == []


def test_each_datagram_keeps_its_own_sender():
    rx = _pair()
    a, b = (socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2))
    with rx, a, b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.2", 0))
        a.sendto(b"from a", rx.getsockname())
        b.sendto(b"from b", rx.getsockname())
        a.sendto(b"a again", rx.getsockname())
        got = Receiver(rx.fileno()).recv()
        assert got == [(b"from a", a.getsockname()), (b"from b", b.getsockname()),
                       (b"a again", a.getsockname())]


def test_largest_udp_datagram_comes_whole():
    rx = _pair()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        big = bytes(range(256)) * 255 + b"x" * 227  # 65507 bytes, the IPv4 UDP maximum
        tx.sendto(big, rx.getsockname())
        [(data, _)] = Receiver(rx.fileno(), 2).recv()
        assert data == big


def test_ipv6_source_is_ip_and_port():
    try:
        rx = _pair(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with rx, tx:
        tx.bind(("::1", 0))
        tx.sendto(b"v6", rx.getsockname()[:2])
        assert Receiver(rx.fileno()).recv() == [(b"v6", ("::1", tx.getsockname()[1]))]


def test_a_closed_descriptor_raises_oserror():
    rx = _pair()
    fd = rx.fileno()
    r = Receiver(fd)
    rx.close()
    with pytest.raises(OSError):
        r.recv()


def test_delay_is_how_long_the_batch_head_waited_in_the_socket():
    import time

    from kampx.transport.udp import SO_TIMESTAMPNS
    rx = _pair()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        r = Receiver(rx.fileno(), 4, True)
        tx.sendto(b"old", rx.getsockname())
        time.sleep(0.2)
        tx.sendto(b"new", rx.getsockname())
        assert [d for d, _ in r.recv()] == [b"old", b"new"]
        assert 0.2 <= r.delay < 2.0          # the head of the batch: the older one
        sent = time.time()
        tx.sendto(b"now", rx.getsockname())
        r.recv()
        waited = time.time() - sent  # a busy machine (the suite in parallel) may take a while
        assert 0.0 <= r.delay <= waited + 0.001
        last = r.delay
        assert r.recv() == [] and r.delay == last   # an empty read keeps the last value


def test_without_timestamps_the_delay_stays_zero():
    import time
    rx = _pair()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        r = Receiver(rx.fileno(), 4)
        tx.sendto(b"x", rx.getsockname())
        time.sleep(0.05)
        assert r.recv() and r.delay == 0.0
