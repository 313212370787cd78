"""The dispatcher inside a real worker (kampx.sandbox): the selection algorithms, failover
order, state marks, ds_is_from_list, reloads, and the sets and round-robin positions shared
with another process."""
from __future__ import annotations

import collections
import os

import pytest

from kampx.db import DispatcherRow
from kampx.dispatcher import dispatch
from kampx.dispatcher.destinations import DispatcherError
from kampx.dispatcher.select import Selection
from kampx.dns.rfc3263 import OK, Answer
from kampx.routing import dispatcher as script_api
from kampx.routing.context import ctx
from kampx.sandbox import Sandbox

pytestmark = pytest.mark.timeout(30)

GW = [f"sip:127.0.20.{i}:5060" for i in range(1, 5)]


def request(n: int = 1, callid: str | None = None, from_user: str = "alice",
            ruri: str = "sip:+15551234@127.0.0.1") -> bytes:
    return (f"INVITE {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-ds-{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{from_user}@192.0.2.10>;tag=a{n}\r\n"
            f"To: <sip:+15551234@127.0.0.1>\r\nCall-ID: {callid or f'ds-{n}'}@192.0.2.10\r\n"
            "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()


@pytest.fixture
def box():
    with Sandbox() as b:
        yield b


def load(box, *rows) -> None:
    box.shared.dispatcher.load([DispatcherRow(*r) for r in rows])


def select(box, setid, alg, n=1, limit=0, **kw):
    """(result, msg) of ds_select_dst on a fresh request."""
    msg = box.message(request(n, **kw))
    return dispatch.select_dst(box.worker, msg, setid, alg, limit), msg


def chain(box, msg) -> list[str]:
    """$du and every failover destination after it."""
    out = [msg.dst]
    while dispatch.next_dst(box.worker, msg) > 0:
        out.append(msg.dst)
    return out


def test_unknown_or_empty_set_is_false(box):
    load(box, (1, GW[0]))
    assert select(box, 2, 0)[0] == -1
    box.shared.dispatcher.set_state(1, GW[0], 4)  # disabled
    result, msg = select(box, 1, 0)
    assert result == -1 and msg.dst is None


def test_hash_over_call_id_is_stable_and_spreads(box):
    load(box, *((1, g) for g in GW))
    picks = {}
    for n in range(200):
        r, msg = select(box, 1, 0, n=n, callid=f"c{n}")
        assert r == 1
        picks[n] = msg.dst
        r, again = select(box, 1, 0, n=n + 1000, callid=f"c{n}")  # same Call-ID
        assert again.dst == msg.dst
    assert set(picks.values()) == set(GW)  # 200 Call-IDs reach every gateway


def test_hash_keeps_calls_when_another_gateway_goes_down(box):
    load(box, *((1, g) for g in GW))
    before = {n: select(box, 1, 0, n=n)[1].dst for n in range(100)}
    box.shared.dispatcher.set_state(1, GW[1], 9)  # inactive + probing
    after = {n: select(box, 1, 0, n=n)[1].dst for n in range(100)}
    for n in before:
        if before[n] != GW[1]:
            assert after[n] == before[n]
        else:  # moved to the next usable one in the set
            assert after[n] == GW[2]


def test_from_to_and_ruri_hashes(box):
    load(box, *((1, g) for g in GW))
    by_from = {select(box, 1, 1, n=n, from_user="bob")[1].dst for n in range(20)}
    assert len(by_from) == 1  # same From URI, whatever the Call-ID
    by_ruri = {select(box, 1, 3, n=n)[1].dst for n in range(20)}
    assert len(by_ruri) == 1
    spread = {select(box, 1, 1, n=n, from_user=f"u{n}")[1].dst for n in range(100)}
    assert len(spread) > 1


def test_failover_order_follows_the_set_from_the_choice(box):
    load(box, *((1, g) for g in GW))
    box.shared.dispatcher.set_state(1, GW[3], 1)
    for n in range(40):
        r, msg = select(box, 1, 4, n=n)
        first = GW.index(msg.dst)
        expected = [GW[(first + k) % 4] for k in range(4)]
        assert chain(box, msg) == [g for g in expected if g != GW[3]]


def test_round_robin_turns_over_the_set(box):
    load(box, *((1, g) for g in GW))
    picks = [select(box, 1, 4, n=n)[1].dst for n in range(8)]
    assert picks[:4] == picks[4:] and sorted(picks[:4]) == GW


def test_round_robin_is_shared_with_another_process(box):
    """Two "workers" (this process and a forked one) take turns on one shared position:
    together they reach every gateway equally often."""
    load(box, *((1, g) for g in GW))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            picks = [select(box, 1, 4, n=n)[1].dst for n in range(200)]
            os.write(w, "\n".join(picks).encode())
        finally:
            os._exit(0)
    os.close(w)
    mine = [select(box, 1, 4, n=n)[1].dst for n in range(200)]
    theirs = b""
    while chunk := os.read(r, 65536):
        theirs += chunk
    os.close(r)
    assert os.waitpid(pid, 0)[1] == 0
    counts = collections.Counter(mine + theirs.decode().split("\n"))
    assert counts == {g: 100 for g in GW}


def test_random_reaches_every_gateway(box):
    load(box, *((1, g) for g in GW))
    counts = collections.Counter(select(box, 1, 6, n=n)[1].dst for n in range(2000))
    assert set(counts) == set(GW) and min(counts.values()) > 400, counts


def test_priority_highest_first_then_load_order(box):
    load(box, (1, GW[0], 0, 1), (1, GW[1], 0, 10), (1, GW[2], 0, 5), (1, GW[3], 0, 10))
    r, msg = select(box, 1, 8)
    assert chain(box, msg) == [GW[1], GW[3], GW[2], GW[0]]
    box.shared.dispatcher.set_state(1, GW[1], 9)
    r, msg = select(box, 1, 8, limit=2)
    assert chain(box, msg) == [GW[3], GW[2]]


def test_weights_share_the_calls(box):
    load(box, (1, GW[0], 0, 0, "weight=50"), (1, GW[1], 0, 0, "weight=30"),
         (1, GW[2], 0, 0, "weight=20"), (1, GW[3], 0, 0, "weight=0"))
    n = 4000
    counts = collections.Counter(select(box, 1, 9, n=i)[1].dst for i in range(n))
    assert counts[GW[3]] == 0
    for gw, share in ((GW[0], 0.5), (GW[1], 0.3), (GW[2], 0.2)):
        assert abs(counts[gw] / n - share) < 0.04, counts


def test_inactive_and_disabled_are_skipped_by_every_algorithm(box):
    load(box, *((1, g) for g in GW))
    box.shared.dispatcher.set_state(1, GW[0], 9)  # IP
    box.shared.dispatcher.set_state(1, GW[2], 4)  # DX
    for alg in (0, 1, 2, 3, 4, 6, 8, 9):
        for n in range(30):
            r, msg = select(box, 1, alg, n=n, from_user=f"u{n}")
            assert r == 1 and set(chain(box, msg)) == {GW[1], GW[3]}, alg


def test_trying_is_still_usable(box):
    load(box, (1, GW[0]))
    box.shared.dispatcher.set_state(1, GW[0], 2)
    assert select(box, 1, 0)[1].dst == GW[0]


def test_an_unknown_algorithm_is_an_error(box):
    load(box, (1, GW[0]))
    with pytest.raises(ValueError, match="algorithm 5"):
        select(box, 1, 5)


def test_next_dst_walks_the_list_then_is_false(box):
    load(box, *((1, g) for g in GW[:2]))
    r, msg = select(box, 1, 8)
    assert isinstance(msg.ds_next, Selection)
    assert dispatch.next_dst(box.worker, msg) == 1 and msg.dst == GW[1]
    assert dispatch.next_dst(box.worker, msg) == -1 and msg.dst == GW[1]
    fresh = box.message(request(99))
    assert dispatch.next_dst(box.worker, fresh) == -1


def test_mark_dst_marks_the_destination_in_use(box):
    t = box.shared.dispatcher
    load(box, *((1, g) for g in GW[:2]), (2, GW[0]))
    r, msg = select(box, 1, 8)
    assert dispatch.mark_dst(box.worker, msg) == 1  # default "ip"
    states = {(d["setid"], d["uri"]): d["state"] for d in t.dump()[1]}
    assert states == {(1, GW[0]): "IP", (1, GW[1]): "AX", (2, GW[0]): "AX"}
    dispatch.next_dst(box.worker, msg)
    assert dispatch.mark_dst(box.worker, msg, "d") == 1
    assert select(box, 1, 8)[0] == -1
    r, msg = select(box, 2, 8)
    assert dispatch.mark_dst(box.worker, msg, "a") == 1
    with pytest.raises(DispatcherError):
        dispatch.mark_dst(box.worker, msg, "x")


def test_select_domain_rewrites_the_request_uri(box):
    load(box, (1, "sip:127.0.20.9:5070"), (1, "sip:127.0.20.10"))
    msg = box.message(request(1))
    ctx.worker, ctx.msg = box.worker, msg
    try:
        assert script_api.ds_select_domain(1, 8)
        assert msg.dst is None and msg.ruri == "sip:+15551234@127.0.20.9:5070"
        assert script_api.ds_next_domain()
        assert msg.ruri == "sip:+15551234@127.0.20.10"
        assert not script_api.ds_next_domain()
    finally:
        ctx.worker = ctx.msg = None


def test_is_from_list(box):
    load(box, (1, "sip:127.0.20.1"), (1, "sip:127.0.20.2:5080"), (2, "sip:127.0.20.1:5060"),
         (3, "sip:[::1]:5090"), (4, "sip:gw.example.net"))

    def from_(ip, port, setid=-1):
        return dispatch.is_from_list(box.worker, box.message(request(1), (ip, port)), setid)

    assert from_("127.0.20.1", 40000) == 1  # no port in the URI (or 5060): any port
    assert from_("127.0.20.1", 40000, 2) == 1
    assert from_("127.0.20.1", 40000, 3) == -1
    assert from_("127.0.20.2", 5080, 1) == 1
    assert from_("127.0.20.2", 5060) == -1  # the URI names 5080
    assert from_("::1", 5090, 3) == 1
    assert from_("127.0.20.3", 5060) == -1
    assert from_("127.0.20.1", 5060, 4) == -1  # a name not resolved matches nothing
    # once kampx resolved the name (relaying to it, probing it), its addresses match: from
    # the DNS cache only, never a query to check a source
    box.shared.dns_cache.put("gw.example.net", "A", Answer(OK, ("127.0.20.7",), 300))
    assert from_("127.0.20.7", 5060, 4) == 1
    assert from_("127.0.20.7", 5060, 1) == -1
    assert from_("127.0.20.8", 5060, 4) == -1


def test_reload_keeps_the_state_of_unchanged_destinations(box):
    t = box.shared.dispatcher
    load(box, (1, GW[0]), (1, GW[1]), (1, GW[2]))
    t.set_state(1, GW[0], 9)
    t.set_state(1, GW[1], 9)
    load(box, (1, GW[0]), (1, GW[1], 8), (1, GW[3]))  # GW[1]'s row changed: its flags win
    states = {d["uri"]: d["state"] for d in t.dump()[1]}
    assert states == {GW[0]: "IP", GW[1]: "AP", GW[3]: "AX"}


def test_a_bad_row_leaves_the_sets_in_place(box):
    t = box.shared.dispatcher
    load(box, (1, GW[0]))
    gen = t.generation
    for bad, match in (((1, "http://x"), "not a sip: URI"), ((1, GW[1], 16), "flags 16"),
                       ((1, GW[1], 0, 0, "weight=101"), "weight=101"), ((-1, GW[1]), "negative")):
        with pytest.raises(DispatcherError, match=match):
            load(box, (1, GW[0]), bad)
    assert t.generation == gen and [d["uri"] for d in t.dump()[1]] == [GW[0]]


def test_another_process_sees_a_reload_and_a_mark(box):
    """The sets and the state are shared: a forked reader sees what this process publishes."""
    t = box.shared.dispatcher
    load(box, (1, GW[0]))
    assert t.sets().destinations[0].uri == GW[0]  # parsed here before the fork
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.read(go_r, 1)
            os.write(w, repr([(d["uri"], d["state"]) for d in t.dump()[1]]).encode())
        finally:
            os._exit(0)
    load(box, (1, GW[0]), (1, GW[1]))
    t.set_state(1, GW[1], 9)
    os.write(go_w, b"x")
    seen = os.read(r, 65536).decode()
    os.waitpid(pid, 0)
    for fd in (r, w, go_r, go_w):
        os.close(fd)
    assert seen == repr([(GW[0], "AX"), (GW[1], "IP")])
