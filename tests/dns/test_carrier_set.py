"""The built-in script pointed at a dispatcher set ([routing] carrier_set): calls spread over
the gateways, a 503 or a silent gateway moves the call to the next one, and a silent one is
marked inactive so the next calls go straight to the other."""
from __future__ import annotations

import pytest

from carrierkit import CarrierRig
from dnsserver import wait_until
from sipclient import Behaviour

pytestmark = [pytest.mark.wire, pytest.mark.timeout(120)]


@pytest.fixture
def rig():
    r = CarrierRig(carrier_set=1, config={"dispatcher": {"ping_interval": 0}})
    yield r
    r.close()


def test_calls_alternate_over_the_set(rig):
    for _ in range(4):
        assert rig.call()[1].status == 200
    assert len(rig.sw1.requests("INVITE")) == 2 and len(rig.sw2.requests("INVITE")) == 2
    got = rig.sw1.requests("INVITE")[0]
    assert got.uri.startswith("sip:15550001000@")  # $du is set, the Request-URI kept


def test_a_503_moves_the_call_to_the_other_gateway(rig):
    rig.sw1.behaviour = Behaviour(send_180=False, final=503)
    for _ in range(4):
        assert rig.call()[1].status == 200
    assert len(rig.sw2.requests("INVITE")) == 4
    assert len(rig.sw1.requests("INVITE")) == 2  # round-robin chose it first twice
    dump = rig.ctl_json("dispatcher", "dump")["destinations"]
    assert all(d["state"].startswith("A") for d in dump), dump  # a 503 marks nothing


def test_a_silent_gateway_is_passed_over_and_marked_inactive(rig):
    rig.sw1.behaviour = Behaviour(silent=True)
    took = []
    for _ in range(4):
        _, final, seconds = rig.call()
        assert final.status == 200
        took.append(seconds)
    calls_to_sw1 = {m.call_id for m in rig.sw1.requests("INVITE")}  # retransmissions too
    assert len(calls_to_sw1) == 1, "marked inactive after its first silence"
    assert len(rig.sw2.requests("INVITE")) == 4
    assert sorted(took)[-1] >= 0.9 and sorted(took)[-2] < 0.5, took  # one call waited
    dump = {d["uri"]: d for d in rig.ctl_json("dispatcher", "dump")["destinations"]}
    assert dump[f"sip:{rig.sw1.ip}:{rig.sw1.port}"]["state"] == "IP"


def test_every_gateway_down_gives_503(rig):
    rig.ctl("rpc", "dispatcher.set_state",
            f'{{"state": "i", "uri": "sip:{rig.sw1.ip}:{rig.sw1.port}"}}')
    rig.ctl("rpc", "dispatcher.set_state",
            f'{{"state": "i", "uri": "sip:{rig.sw2.ip}:{rig.sw2.port}"}}')
    _, final, _ = rig.call()
    assert final.status == 503
    assert rig.sw1.requests() == [] and rig.sw2.requests() == []


def test_the_prober_resolves_a_gateway_by_name():
    """A gateway given by name is probed at the address kampx's DNS gives it (the test's
    DNS server, never the machine's resolver), and a call through the set reaches it."""
    rig = CarrierRig(carrier_set=3, config={"dispatcher": {
        "ping_interval": 1, "ping_timeout_ms": 500, "probing_mode": 1}})
    try:
        # the set: sw1 by name (port in the URI: an A lookup), nothing else
        for d in rig.ctl_json("dispatcher", "show")["rows"]:
            rig.ctl("dispatcher", "rm", str(d["id"]))
        rig.ctl("dispatcher", "add", "3", f"sip:sw1.carrier.example:{rig.sw1.port}", "--reload")
        assert wait_until(lambda: rig.dns.asked("sw1.carrier.example", "A") >= 1, 5)
        seen = len(rig.sw1.requests("OPTIONS"))
        assert rig.sw1.wait_for("OPTIONS", timeout=5, count=seen + 1) is not None
        dump = rig.ctl_json("dispatcher", "dump")["destinations"]
        assert [d["uri"] for d in dump] == [f"sip:sw1.carrier.example:{rig.sw1.port}"]
        assert dump[0]["state"].startswith("A") and dump[0]["probes"] >= 1
        assert dump[0]["last_code"] == 200
        assert rig.call()[1].status == 200
        assert rig.sw1.requests("INVITE") and rig.sw2.requests("INVITE") == []
    finally:
        rig.close()
