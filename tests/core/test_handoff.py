"""The worker-to-worker hand-off channel: a burst to a busy owner must not be lost (an
unconnected Unix datagram socket would queue only net.unix.max_dgram_qlen = 10 of them)."""
import os

from kampx.transport.handoff import Handoff


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
