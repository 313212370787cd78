"""kampx/tm without sockets or processes: a TransactionManager with its collaborators made
here (a Forwarder over a recording socket, script hooks, a hand-off that records, shared
tables of its own) and a clock the test moves. Each test is one RFC 3261 behaviour."""
from __future__ import annotations

import os
import socket
import time
from types import SimpleNamespace

import pytest

from kampx import config
from kampx import stats as S
from kampx.tm.stats import RETRANS_ABSORBED, TIMEOUTS, TXN_REFUSED, UAC_TRANSACTIONS, UAS_TRANSACTIONS
from kampx._cparse import parse
from kampx._shm import CounterRows, KeyIndex
from kampx.dialog import Dialogs, Journal, journal_pipe
from kampx.dns.cache import DnsCache
from kampx.dns.resolver import Resolver
from kampx.forward import Forwarder
from kampx.sandbox import RecordingSocket
from kampx.tm import timers
from kampx.tm.keys import server_key
from kampx.tm.manager import TransactionManager
from kampx.tm.timers import TimerHeap
from kampx.transport.sockets import ListenSocket

CALLER = ("192.0.2.1", 5061)
CALLEE = ("192.0.2.2", 5062)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Harness:
    """One worker's tm. `sent` lists (first line, destination) of what left, in order."""

    def __init__(self, clock, **tm):
        self.cfg = config.from_dict({"core": {"listen": ["udp:127.0.0.1:5060"], "children": 1},
                                     "tm": {"fr_timer_ms": 2000, "fr_inv_timer_ms": 6000, **tm}})
        self.clock = clock
        self.rows = CounterRows(1, S.ncols())
        self.stats = S.Stats(self.rows, 0)
        self.sock = RecordingSocket(socket.AF_INET)
        self.ls = ListenSocket(0, self.cfg.core.listen_addrs()[0], self.sock)
        self.jr, jw = journal_pipe()
        self.jw = jw
        self.dialogs = Dialogs(KeyIndex(1024, 1), Journal(jw, self.stats), self.cfg.dialog, 60,
                               self.stats)
        self.hooks = SimpleNamespace(reply_route=None, failure_route=None, branch_route=None,
                                     run_failure_route=lambda route, t, req: route(req))
        self.handed, self.errors = [], []
        self.index = KeyIndex(1024, 2)
        self.timers = TimerHeap()
        self.dns_cache = DnsCache(64)
        self.tm = TransactionManager(
            self.cfg, worker_id=0, stats=self.stats, timers=self.timers,
            forwarder=Forwarder([self.ls], "kampx.test", self.stats, self.dialogs, False),
            resolver=Resolver(self.cfg.dns, self.dns_cache, self.stats, self.timers, offline=True),
            hooks=self.hooks, dialogs=self.dialogs,
            handoff_to=lambda owner, msg: self.handed.append((owner, msg)) or True,
            txn_index=self.index, load=CounterRows(1, 2), tag_prefix="f" * 32,
            server_header="Server: test", report=lambda where, e: self.errors.append(e))

    def close(self):
        self.dns_cache.close()
        os.close(self.jr)
        os.close(self.jw)

    # -- traffic --
    def request(self, method="INVITE", branch="z9hG4bKc1", src=CALLER, cseq=1, to_tag=None,
                call_id="call-1"):
        to = "<sip:bob@192.0.2.2:5062>" + (f";tag={to_tag}" if to_tag else "")
        m = parse((f"{method} sip:bob@192.0.2.2:5062 SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {src[0]}:{src[1]};branch={branch}\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:alice@x>;tag=ft\r\nTo: {to}\r\n"
                   f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
                   ).encode())
        m.src, m.lsock = src, self.ls
        return m

    def receive_request(self, m) -> bool:
        """What the worker does: match, and if the script would run, t_relay()."""
        if self.tm.match_request(m):
            return self.tm.t_relay(m)
        return False

    def downstream(self, method="INVITE"):
        """The last request of `method` sent to the callee."""
        for data, dest in reversed(self.sock.sent):
            if dest == CALLEE and data.startswith(method.encode() + b" "):
                return parse(data)
        raise AssertionError(f"no {method} went downstream: {self.lines()}")

    def reply(self, code, reason, to_tag="callee", method="INVITE"):
        """The callee answers the last `method` it got."""
        req = self.downstream(method)
        vias = "".join(f"Via: {v.raw}\r\n" for v in req.via)
        to = req.header("to") + (f";tag={to_tag}" if code > 100 and to_tag else "")
        m = parse((f"SIP/2.0 {code} {reason}\r\n{vias}From: {req.header('from')}\r\nTo: {to}\r\n"
                   f"Call-ID: {req.call_id}\r\nCSeq: {req.header('cseq')}\r\n"
                   f"Content-Length: 0\r\n\r\n").encode())
        m.src, m.lsock = CALLEE, self.ls
        assert self.tm.match_reply(m), "the reply matched no transaction"

    def upstream(self):
        """First lines of what went back to the caller, in order."""
        return [d.split(b"\r\n", 1)[0].decode() for d, dest in self.sock.sent if dest == CALLER]

    def lines(self):
        return [(d.split(b"\r\n", 1)[0].decode(), dest) for d, dest in self.sock.sent]

    def tick(self, seconds):
        """Move the clock in small steps, firing due timers."""
        end = self.clock.t + seconds
        while self.clock.t < end:
            self.clock.t = min(end, self.clock.t + 0.05)
            self.tm.timers.run()

    def count(self, fam) -> int:
        return self.rows.get(0, fam.base)


@pytest.fixture
def h(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(timers, "_now", clock)
    harness = Harness(clock)
    yield harness
    harness.tm.clear()
    harness.close()


def test_invite_relayed_with_100_then_provisional_and_final_passed_up(h):
    assert h.receive_request(h.request())
    fwd = h.downstream()
    assert fwd.top_via.host == "127.0.0.1" and fwd.branch.startswith(h.tm.branch_prefix)
    assert fwd.via[1].branch == "z9hG4bKc1"
    h.reply(100, "Trying")
    h.reply(180, "Ringing")
    h.reply(200, "OK")
    assert h.upstream() == ["SIP/2.0 100 trying -- your call is important to us",
                            "SIP/2.0 180 Ringing", "SIP/2.0 200 OK"]
    assert h.count(UAS_TRANSACTIONS) == 1 and h.count(UAC_TRANSACTIONS) == 1


def test_retransmitted_invite_gets_the_last_reply_and_is_not_relayed_again(h):
    h.receive_request(h.request())
    h.reply(180, "Ringing")
    assert not h.receive_request(h.request())          # the same branch: a retransmission
    assert h.upstream()[-2:] == ["SIP/2.0 180 Ringing", "SIP/2.0 180 Ringing"]
    assert sum(1 for line, dest in h.lines() if line.startswith("INVITE")) == 1
    assert h.count(RETRANS_ABSORBED) == 1


def test_timer_a_retransmits_until_a_provisional_then_fr_inv_cancels_with_408(h):
    h.receive_request(h.request())
    h.tick(1.6)                                         # T1 0.5, then 1.0: two retransmissions
    assert sum(1 for line, _ in h.lines() if line.startswith("INVITE")) == 3
    h.reply(180, "Ringing")
    h.tick(7)                                           # fr_inv_timer 6 s after the 180
    assert any(line.startswith("CANCEL") for line, _ in h.lines())
    assert h.upstream()[-1] == "SIP/2.0 408 Request Timeout"
    assert h.count(TIMEOUTS) == 1


def test_non_2xx_final_acked_downstream_and_retransmitted_up_until_the_ack(h):
    h.receive_request(h.request())
    h.reply(486, "Busy Here")
    ack = h.downstream("ACK")
    assert ack.branch == h.downstream("INVITE").branch       # hop by hop, same branch
    assert ack.to_tag == "callee"
    h.tick(1.6)                                                # timer G: 0.5, 1.0
    assert h.upstream().count("SIP/2.0 486 Busy Here") == 3
    caller_ack = h.request("ACK", to_tag="callee")
    assert not h.tm.match_request(caller_ack)                  # absorbed by the transaction
    h.tick(4)
    assert h.upstream().count("SIP/2.0 486 Busy Here") == 3    # no more after the ACK


def test_503_goes_up_as_500(h):
    h.receive_request(h.request())
    h.reply(503, "Overloaded")
    assert h.upstream()[-1] == "SIP/2.0 500 Service Unavailable"


def test_cancel_after_a_provisional_then_487(h):
    h.receive_request(h.request())
    h.reply(180, "Ringing")
    cancel = h.request("CANCEL")
    assert h.tm.match_request(cancel)
    assert h.tm.t_relay(cancel)
    assert h.upstream()[-1] == "SIP/2.0 200 canceling"
    assert h.downstream("CANCEL").branch == h.downstream("INVITE").branch
    h.reply(200, "OK", method="CANCEL")
    h.reply(487, "Request Terminated")
    assert h.upstream()[-1] == "SIP/2.0 487 Request Terminated"


def test_cancel_before_any_provisional_waits_for_one(h):
    """RFC 3261 9.1: no CANCEL on a branch that has had no provisional yet."""
    h.receive_request(h.request())
    cancel = h.request("CANCEL")
    h.tm.match_request(cancel)
    h.tm.t_relay(cancel)
    assert not any(line.startswith("CANCEL") for line, _ in h.lines())
    h.reply(180, "Ringing")
    assert any(line.startswith("CANCEL") for line, _ in h.lines())


def test_failure_route_can_serially_fork(h):
    tried = []

    def failure_route(t, request):
        tried.append(t.best_code)
        if len(tried) == 1:
            h.tm.t_relay(request)                           # a second branch, same transaction
    h.hooks.failure_route = failure_route
    h.receive_request(h.request())
    h.reply(486, "Busy Here")
    assert tried == [486]
    assert "SIP/2.0 486 Busy Here" not in h.upstream()       # held back for the new branch
    h.reply(200, "OK")
    assert h.upstream()[-1] == "SIP/2.0 200 OK"


def test_best_final_of_a_fork_goes_up(h):
    """RFC 3261 16.7: with every branch failed, a 6xx beats a lower class."""
    m = h.request()
    h.tm.match_request(m)
    h.tm.t_relay(m)
    h.tm.t_relay(m)                                     # a second branch
    first, second = [parse(d) for d, dest in h.sock.sent if d.startswith(b"INVITE")]
    for req, code, reason in ((first, 486, "Busy Here"), (second, 603, "Decline")):
        vias = "".join(f"Via: {v.raw}\r\n" for v in req.via)
        r = parse((f"SIP/2.0 {code} {reason}\r\n{vias}From: {req.header('from')}\r\n"
                   f"To: {req.header('to')};tag=x\r\nCall-ID: {req.call_id}\r\n"
                   f"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode())
        r.src, r.lsock = CALLEE, h.ls
        h.tm.match_reply(r)
    assert h.upstream()[-1] == "SIP/2.0 603 Decline"


def test_a_request_another_worker_owns_is_handed_to_it(h):
    m = h.request()
    h.index.claim(server_key(m), 7, time.monotonic(), 60)
    assert not h.tm.match_request(m)
    assert [owner for owner, _ in h.handed] == [7]
    assert h.sock.sent == []


def test_a_reply_for_another_worker_is_handed_by_its_branch(h):
    r = parse(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKkx05abcd.1.0\r\n"
              b"Via: SIP/2.0/UDP 192.0.2.1:5061;branch=z9hG4bKc1\r\nFrom: <sip:a@x>;tag=1\r\n"
              b"To: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    r.src, r.lsock = CALLEE, h.ls
    assert h.tm.match_reply(r)
    assert [owner for owner, _ in h.handed] == [5]


def test_max_transactions_refuses_with_503(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(timers, "_now", clock)
    h = Harness(clock, max_transactions=2)
    try:
        assert h.receive_request(h.request(branch="z9hG4bKa"))
        assert h.receive_request(h.request(branch="z9hG4bKb"))
        third = h.request(branch="z9hG4bKc")
        assert not h.receive_request(third)
        assert third.error_reply[:2] == (503, "Service Unavailable")
        assert h.count(TXN_REFUSED) == 1
    finally:
        h.tm.clear()
        h.close()


def test_a_final_s_branch_absorbs_retransmissions_for_the_wait_then_goes(h):
    """The branch that carried a transaction's final lives as long as the transaction (it
    goes with it, no timer of its own), a non-INVITE's and an INVITE's 2xx alike."""
    for method in ("OPTIONS", "INVITE"):
        h.receive_request(h.request(method, branch=f"z9hG4bK{method}", call_id=method))
        h.reply(200, "OK", method=method)
        assert len(h.tm.client) == 1
        h.tick(4)
        h.reply(200, "OK", method=method)  # a retransmitted final still finds its branch
        h.tick(2)
        assert not h.tm.client and not h.tm.server, method


def test_a_finished_transaction_is_forgotten_and_gives_its_room_back(h):
    h.receive_request(h.request())
    h.reply(200, "OK")
    assert h.tm.active == 1
    h.tick(6)                                           # Kamailio's wait timer (5 s)
    assert h.tm.active == 0
    assert h.tm.load.get(0, 0) == 0 and h.tm.load.get(0, 1) == 0
