"""A worker's datagrams of one loop round leave in one sendmmsg (kampx/transport/_send.pyx,
ListenSocket.flush): each to its own address, in order; an unusable address is refused when
the datagram is queued, as it was when sent at once; a refusal by the kernel is counted."""

import socket

import pytest

from kampx.config import ListenAddr
from kampx.transport._send import sendto_batch, sockaddr
from kampx.transport.sockets import ListenSocket


def _rx(family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(2.0)
    return s


def _listen(family=socket.AF_INET, host="127.0.0.1"):
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    ls = ListenSocket(0, ListenAddr("udp", host, s.getsockname()[1]), s)
    ls.pending = []
    return ls


def test_queued_datagrams_go_in_order_to_each_address_at_flush():
    ls, a, b = _listen(), _rx(), _rx()
    try:
        for i in range(5):
            assert ls.sendto(b"to-a %d" % i, a.getsockname())
        assert ls.sendto(b"to-b", b.getsockname())
        a.settimeout(0.05)
        with pytest.raises((TimeoutError, socket.timeout)):
            a.recv(100)  # nothing left before the flush
        a.settimeout(2.0)
        assert ls.flush() == 0
        assert [a.recv(100) for _ in range(5)] == [b"to-a %d" % i for i in range(5)]
        assert b.recv(100) == b"to-b"
        assert ls.pending == [] and ls.flush() == 0
    finally:
        for s in (ls, a, b):
            s.close()


@pytest.mark.parametrize("dest", [
    ("127.0.0.1", 0), ("127.0.0.1", 70000), ("127.0.0.1", -1), ("127.0.0.1", "5060"),
    ("example.com", 5060), ("::1", 5060), ("127.0.0.1\0", 5060), ("1.2.3.4",), (None, 5060),
    ("\udcff", 5060), [], ("127.0.0.1", True),
])
def test_an_unusable_destination_is_refused_when_queued(dest):
    ls = _listen()
    try:
        assert ls.sendto(b"x", dest) is False
        assert ls.pending == []
    finally:
        ls.close()


def test_ipv6_addresses_and_the_kernel_refusing_one_of_a_batch():
    try:
        ls, rx = _listen(socket.AF_INET6, "::1"), _rx(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no ::1 here")
    try:
        assert ls.sendto(b"one", rx.getsockname()[:2])
        # a multicast address with a port the kernel takes but no one reads: still sent;
        # a datagram too large for UDP is refused by the kernel and counted, the rest go
        ls.pending.append((b"x" * 70000, sockaddr("::1", rx.getsockname()[1], True)))
        assert ls.sendto(b"two", rx.getsockname()[:2])
        assert ls.flush() == 1
        assert rx.recv(100) == b"one" and rx.recv(100) == b"two"
    finally:
        ls.close()
        rx.close()


def test_sockaddr_packs_the_family_asked_for():
    assert len(sockaddr("127.0.0.1", 5060, False)) == 16
    assert len(sockaddr("::1", 5060, True)) == 28
    assert sockaddr("127.0.0.1", 5060, True) is None  # IPv4 text on an IPv6 socket
    assert sendto_batch(-1, []) == 0
