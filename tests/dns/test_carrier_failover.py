"""The built-in script's carrier by name over the wire (issue 12): RFC 3263 order and weights,
failover on 503 and on silence, the DNS cache seen and cleared with kampxctl, and a dead DNS
server delaying only the requests for its name."""
from __future__ import annotations

import statistics
import threading
import time

import pytest

from carrierkit import PASSWORD, REALM, SDP, USER, CarrierRig
from dnsserver import wait_until
from proxyctl import ping
from sipclient import UAS, Behaviour, SipClient, ack_for, authorize, cancel_for, in_dialog

pytestmark = [pytest.mark.wire, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def rig():
    r = CarrierRig()
    yield r
    r.close()


@pytest.fixture
def carrier(rig):
    rig.reset()
    return rig


def test_calls_go_to_the_first_srv_priority(carrier):
    for _ in range(4):
        _, final, _ = carrier.call()
        assert final.status == 200
    assert len(carrier.sw1.requests("INVITE")) == 4
    assert carrier.sw2.requests("INVITE") == []
    got = carrier.sw1.requests("INVITE")[0]
    assert got.uri == "sip:15550001000@carrier.example"  # the R-URI keeps the name
    assert carrier.dns.asked("carrier.example", "NAPTR") == 1  # then the cache answers


def test_equal_priorities_share_calls_by_weight(carrier):
    carrier.zone(((10, carrier.sw1, 80), (10, carrier.sw2, 20)))
    carrier.ctl("dns", "clear")
    n = 40
    for _ in range(n):
        assert carrier.call()[1].status == 200
    first = len(carrier.sw1.requests("INVITE"))
    assert first + len(carrier.sw2.requests("INVITE")) == n
    # 80 % expected (32 of 40): binomial sd ~2.5, so 24..39 is a > 3 sd band
    assert 24 <= first <= 39, first


def test_a_503_from_the_first_switch_moves_the_call_to_the_second(carrier):
    carrier.sw1.behaviour = Behaviour(send_180=False, final=503)
    inv, final, took = carrier.call()
    assert final.status == 200
    assert len(carrier.sw1.requests("INVITE")) == 1 and len(carrier.sw2.requests("INVITE")) == 1
    carrier.sw1.expect("ACK")  # tm ACKed the 503 hop by hop
    assert final.get("to") and carrier.sw2.expect("ACK")
    print(f"503 from the first switch: the call answered by the second in {took * 1000:.1f} ms")


def test_a_silent_first_switch_is_given_up_after_fr_failover(carrier):
    carrier.sw1.behaviour = Behaviour(silent=True)
    inv, final, took = carrier.call()
    assert final.status == 200
    assert carrier.sw2.requests("INVITE"), "the call never reached the second switch"
    # [tm] fr_failover_ms = 1000 here: the second switch gets the call after ~1 s, not 30
    assert 0.9 <= took < 3.0, took
    print(f"silent first switch: the call answered by the second in {took * 1000:.0f} ms")


def test_every_switch_failing_gives_the_caller_the_best_reply(carrier):
    carrier.sw1.behaviour = Behaviour(send_180=False, final=503)
    carrier.sw2.behaviour = Behaviour(send_180=False, final=503)
    _, final, _ = carrier.call()
    assert (final.status, final.reason) == (500, "Service Unavailable")  # 503 is not passed up
    carrier.sw2.behaviour = Behaviour(send_180=False, final=486)
    _, final, _ = carrier.call()
    assert final.status == 486


def test_a_busy_switch_is_final_no_failover(carrier):
    carrier.sw1.behaviour = Behaviour(send_180=False, final=486)
    _, final, _ = carrier.call()
    assert final.status == 486
    assert carrier.sw2.requests("INVITE") == []


def test_dns_show_and_clear(carrier):
    carrier.call()
    shown = carrier.ctl_json("dns", "show")
    names = {(e["name"], e["type"]) for e in shown["entries"]}
    assert {("carrier.example", "NAPTR"), ("_sip._udp.carrier.example", "SRV"),
            ("sw1.carrier.example", "A")} <= names
    srv = next(e for e in shown["entries"] if e["type"] == "SRV")
    assert 0 < srv["ttl"] <= 300 and len(srv["records"]) == 2
    assert carrier.px.metric("kampx_dns_queries_total") >= 2  # NAPTR, SRV (A: its glue)
    assert carrier.px.metric("kampx_dns_cache_hits_total") >= 1
    text = carrier.ctl("dns", "show").stdout
    assert "sw1.carrier.example" in text and "SRV" in text
    cleared = carrier.ctl_json("dns", "clear")
    assert cleared["removed"] >= 3
    assert carrier.ctl_json("dns", "show")["entries"] == []
    before = carrier.dns.asked("carrier.example", "NAPTR")
    carrier.call()
    assert carrier.dns.asked("carrier.example", "NAPTR") == before + 1


def test_an_unknown_carrier_name_is_answered_and_counted():
    rig = CarrierRig(carrier="sip:no-such-carrier.example", children=1)
    try:
        _, final, _ = rig.call()
        assert (final.status, final.reason) == (500, "Unresolvable destination")
        stats = rig.ctl_json("stats", "dns")
        assert any("failed_relays" in k and v >= 1 for k, v in _flat(stats).items()), stats
        # the NXDOMAIN is cached: the second call asks nobody
        asked = rig.dns.total_asked()
        _, final, _ = rig.call()
        assert final.status == 500 and rig.dns.total_asked() == asked
    finally:
        rig.close()


def _flat(obj, prefix=""):
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(_flat(v, f"{prefix}{i}."))
    elif isinstance(obj, (int, float)):
        out[prefix.rstrip(".")] = obj
    return out


def test_a_dead_dns_server_delays_only_its_calls(carrier):
    """Calls to the carrier wait for the silent DNS server and get 503 after [dns] timeout
    (1 s here); meanwhile the same workers answer keepalives and relay calls from the trunk
    to a registered number at once: no worker is blocked on the lookup."""
    px = carrier.px
    with UAS(px.addrs.client, 0, user="phone") as phone, \
            SipClient(px.addrs.carrier, 0, proxy=px.addr, user="trunk") as trunk:
        carrier.ctl("address", "add", "200", px.addrs.carrier, "32", "0", "trunk", "--reload")
        carrier.ctl("ul", "add", "5551234", f"sip:5551234@{phone.ip}:{phone.port}")

        def served() -> list[float]:
            """Seconds each of 10 keepalives and 5 trunk calls took to be answered."""
            took = []
            for _ in range(10):
                t0 = time.monotonic()
                assert ping(px.addr, 0.5, src_ip=px.addrs.client)
                took.append(time.monotonic() - t0)
            for _ in range(5):
                inv = trunk.request("INVITE", f"sip:5551234@{px.addr[0]}", body=SDP)
                t0 = time.monotonic()
                trunk.send(inv)
                ok = trunk.final(inv, 2.0)
                took.append(time.monotonic() - t0)
                assert ok.status == 200
                trunk.send(in_dialog("ACK", inv, ok))
            return took

        baseline = served()
        carrier.dns.silent = True
        results = []
        caller = threading.Thread(target=lambda: results.append(carrier.call(timeout=6)))
        caller.start()
        assert wait_until(lambda: carrier.dns.total_asked() > 0, 2)  # the lookup is in flight
        during = served()
        still_waiting = not results
        caller.join(10)
    _, final, took = results[0]
    assert still_waiting, "the outbound call ended before the measurement: nothing overlapped"
    assert (final.status, final.reason) == (503, "Service Unavailable")
    assert 0.9 <= took < 2.5, took
    assert carrier.sw1.requests("INVITE") == [] and carrier.sw2.requests("INVITE") == []
    # a worker blocked on DNS would hold what it reads for up to the 1 s timeout
    assert max(during) < 0.3, (baseline, during)
    print(f"served in (ms) without DNS trouble: median {statistics.median(baseline) * 1000:.1f} "
          f"max {max(baseline) * 1000:.1f}; with the DNS server silent: median "
          f"{statistics.median(during) * 1000:.1f} max {max(during) * 1000:.1f}")


def test_cancel_while_the_name_is_resolving(carrier):
    """A call CANCELed before its carrier's name resolved: 200 to the CANCEL, 487 to the
    INVITE, and no switch ever sees it; a retransmitted INVITE meanwhile gets 100 again."""
    carrier.dns.delay = 0.6
    c = carrier.client
    req = c.request("INVITE", f"sip:15550002000@{REALM}", body=SDP)
    c.send(req)
    ch = c.final(req)
    c.send(ack_for(req, ch))
    inv = authorize(req, ch, USER, PASSWORD)
    c.send(inv)
    assert c.expect_response(inv, timeout=0.5).status == 100
    c.send(inv)  # retransmitted while the lookup runs
    assert c.expect_response(inv, timeout=0.5).status == 100
    cancel = cancel_for(inv)
    c.send(cancel)
    assert c.expect_response(cancel, timeout=1).status == 200
    final = c.final(inv, 3)
    assert final.status == 487
    c.send(ack_for(inv, final))
    time.sleep(0.8)  # the answer has come by now: still nothing may go out
    assert carrier.sw1.requests() == [] and carrier.sw2.requests() == []
