"""What a nameserver (or someone spoofing one) sends back must never crash a worker or slip
in a record: garbage, answers to other questions, other ids, truncated answers, huge record
sets. The client (kampx/dns/client.py) is driven by a raw UDP socket playing the server."""
from __future__ import annotations

import os
import select
import socket

import dns.flags
import dns.message
import dns.rrset
import pytest

from kampx import stats as S
from kampx._shm import CounterRows
from kampx.dns.cache import DnsCache
from kampx.dns.client import DnsClient
from kampx.dns.rfc3263 import FAILED, OK
from loopkit import Loop

pytestmark = pytest.mark.timeout(30)


class Counts:
    def __init__(self):
        self.n = {"sent": 0, "timed_out": 0, "error": 0}

    def sent(self):
        self.n["sent"] += 1

    def timed_out(self):
        self.n["timed_out"] += 1

    def error(self):
        self.n["error"] += 1


@pytest.fixture
def rig():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(2)
    loop = Loop()
    stored = []
    counts = Counts()
    client = DnsClient([server.getsockname()], 1.0, loop.timers, loop.watch, loop.unwatch,
                       lambda *a: stored.append(a), counts)
    yield server, loop, client, stored, counts
    client.close()
    loop.close()
    server.close()


def ask(loop, client, name, qtype):
    got = []
    client.ask(name, qtype, got.append)
    return got


def answer_for(query, name=None, rrs=(), tc=False):
    reply = dns.message.make_response(query)
    for text in rrs:
        reply.answer.append(dns.rrset.from_text(name or query.question[0].name, 60, "IN", *text))
    if tc:
        reply.flags |= dns.flags.TC
    return reply


def test_garbage_other_ids_and_other_questions_are_ignored(rig):
    server, loop, client, stored, counts = rig
    got = ask(loop, client, "sw1.carrier.example", "A")
    wire, src = server.recvfrom(4096)
    query = dns.message.from_wire(wire)
    server.sendto(os.urandom(40), src)                                      # garbage
    server.sendto(b"", src)                                                 # empty
    wrong_id = answer_for(query, rrs=[("A", "192.0.2.66")])
    wrong_id.id ^= 0x5A5A
    server.sendto(wrong_id.to_wire(), src)
    other = dns.message.make_query("evil.example.", "A")
    other.id = query.id
    server.sendto(answer_for(other, rrs=[("A", "192.0.2.66")]).to_wire(), src)  # other question
    loop.run_until(lambda: got, 0.3)
    assert got == []
    server.sendto(answer_for(query, rrs=[("A", "192.0.2.10")]).to_wire(), src)
    assert loop.run_until(lambda: got, 2)
    assert got[0].status == OK and got[0].records == ("192.0.2.10",)
    assert [s[0] for s in stored] == ["sw1.carrier.example"]


def test_an_answer_for_another_name_in_the_answer_section_is_not_used(rig):
    """A reply whose answer section holds records for a name that was not asked (no CNAME
    chain to it) gives no data for the question."""
    server, loop, client, stored, counts = rig
    got = ask(loop, client, "sw1.carrier.example", "A")
    wire, src = server.recvfrom(4096)
    query = dns.message.from_wire(wire)
    server.sendto(answer_for(query, name="evil.example.", rrs=[("A", "192.0.2.66")]).to_wire(), src)
    assert loop.run_until(lambda: got, 2)
    assert got[0].records == () and got[0].status != OK


def test_srv_glue_for_names_not_among_the_targets_is_dropped(rig):
    server, loop, client, stored, counts = rig
    got = ask(loop, client, "_sip._udp.carrier.example", "SRV")
    wire, src = server.recvfrom(4096)
    query = dns.message.from_wire(wire)
    reply = answer_for(query, rrs=[("SRV", "10 50 5060 sw1.carrier.example.")])
    reply.additional.append(dns.rrset.from_text("sw1.carrier.example.", 60, "IN", "A", "192.0.2.10"))
    reply.additional.append(dns.rrset.from_text("bank.example.", 60, "IN", "A", "192.0.2.66"))
    server.sendto(reply.to_wire(), src)
    assert loop.run_until(lambda: got, 2)
    (_name, _qtype, _answer, extra), = stored
    assert [(n, t) for n, t, _ in extra] == [("sw1.carrier.example", "A")]


def test_a_truncated_answer_moves_on_and_fails_cleanly(rig):
    server, loop, client, stored, counts = rig
    got = ask(loop, client, "big.example", "A")
    for _ in range(2):  # the one nameserver, asked twice
        assert loop.run_until(lambda: select.select([server], [], [], 0)[0], 2)
        wire, src = server.recvfrom(4096)
        server.sendto(answer_for(dns.message.from_wire(wire), tc=True).to_wire(), src)
    assert loop.run_until(lambda: got, 3)
    assert got[0].status == FAILED and counts.n["error"] >= 1 and stored == []


def test_a_huge_record_set_is_used_but_not_cached():
    cache = DnsCache(16)
    try:
        from kampx.dns.rfc3263 import Answer
        big = Answer(OK, tuple(f"192.0.2.{i}" for i in range(200)), 60)
        assert not cache.put("big.example", "A", big)   # over a slot: not shared
        assert cache.get("big.example", "A").records == big.records  # this process keeps it
        assert cache.entries() == []
    finally:
        cache.close()
