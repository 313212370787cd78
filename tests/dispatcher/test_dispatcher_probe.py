"""The dispatcher prober (kampx/dispatcher/probe.py) against real UDP gateways on loopback:
which destinations are probed, what an OPTIONS looks like, retransmissions, reply codes,
and the thresholds that take a gateway out and bring it back."""
from __future__ import annotations

import logging

import pytest
from sipclient import UAS, Behaviour

from kampx.config import DispatcherConfig
from kampx.db import DispatcherRow
from kampx.dispatcher.probe import Prober, parse_reply_codes, probe_socket
from kampx.dispatcher.table import DispatcherTable

pytestmark = pytest.mark.timeout(30)

PROBER_IP = "127.0.20.1"


@pytest.fixture
def table():
    t = DispatcherTable(64)
    yield t
    t.close()


@pytest.fixture
def gateways():
    """Three gateways on their own loopback addresses (ephemeral ports): up, silent, 404."""
    gws = [UAS(f"127.0.20.{i}", 0, behaviour=Behaviour(answer_other=code)).start()
           for i, code in ((2, 200), (3, None), (4, 404))]
    yield gws
    for g in gws:
        g.stop()


def uri(gw) -> str:
    return f"sip:{gw.ip}:{gw.port}"


def prober(table, **cfg):
    keys = {"ping_interval": 1, "ping_timeout_ms": 600, "probing_mode": 1, **cfg}
    sock = probe_socket(PROBER_IP)
    return Prober(table, DispatcherConfig(**keys), sock, t1=0.1, t2=0.4), sock


def states(table) -> dict[str, str]:
    return {d["uri"]: d["state"] for d in table.dump()[1]}


def test_reply_codes_parse_kamailio_form():
    rules = parse_reply_codes("class=3;code=403; code=404")
    assert rules.classes == {2, 3} and rules.codes == {403, 404}
    for bad in ("class=7", "code=99", "codes=404", "404"):
        with pytest.raises(ValueError):
            parse_reply_codes(bad)


def test_a_round_takes_the_silent_gateway_out(table, gateways):
    up, silent, notfound = gateways
    table.load([DispatcherRow(1, uri(g)) for g in gateways])
    p, sock = prober(table)
    try:
        out = p.round()
    finally:
        sock.close()
    assert out == {uri(up): (True, 200), uri(silent): (False, 408), uri(notfound): (False, 404)}
    assert states(table) == {uri(up): "AX", uri(silent): "IP", uri(notfound): "IP"}
    dump = {d["uri"]: d for d in table.dump()[1]}
    assert dump[uri(silent)]["probes"] == 1 and dump[uri(silent)]["probes_failed"] == 1
    assert dump[uri(silent)]["last_code"] == 408 and dump[uri(up)]["last_code"] == 200
    # the silent one got the OPTIONS again on timer E (0, T1, 3 T1 within 0.6 s)
    sent = silent.requests("OPTIONS")
    assert len(sent) >= 3 and len({m.branch for m in sent}) == 1
    assert len(up.requests("OPTIONS")) == 1


def test_the_options_is_kamailio_s(table, gateways):
    up = gateways[0]
    table.load([DispatcherRow(1, uri(up))])
    p, sock = prober(table, ping_from="sip:ping@kampx.test")
    try:
        p.round()
    finally:
        sock.close()
    m = up.expect("OPTIONS")
    assert m.first_line == f"OPTIONS {uri(up)} SIP/2.0"
    assert m.get("From").startswith("<sip:ping@kampx.test>;tag=")
    assert m.get("To") == f"<{uri(up)}>"
    assert m.branch.startswith("z9hG4bK") and m.get("Max-Forwards") == "70"
    assert m.cseq[1] == "OPTIONS" and m.call_id
    assert m.source[0] == PROBER_IP


def test_reply_codes_decide_success(table, gateways):
    notfound = gateways[2]
    table.load([DispatcherRow(1, uri(notfound))])
    p, sock = prober(table, ping_reply_codes="code=404")
    try:
        assert p.round() == {uri(notfound): (True, 404)}
    finally:
        sock.close()
    assert states(table) == {uri(notfound): "AX"}


def test_thresholds_take_out_and_bring_back(table, gateways):
    silent = gateways[1]
    table.load([DispatcherRow(1, uri(silent))])
    p, sock = prober(table, probing_threshold=2, inactive_threshold=2)
    try:
        p.round()
        assert states(table) == {uri(silent): "TX"}  # trying: still selected
        p.round()
        assert states(table) == {uri(silent): "IP"}
        silent.behaviour.answer_other = 200
        p.round()
        assert states(table) == {uri(silent): "IP"}  # one good probe is not enough
        p.round()
        assert states(table) == {uri(silent): "AP"}  # back, and still probed
    finally:
        sock.close()


def test_mode_0_probes_only_flagged_or_inactive_never_disabled(table, gateways):
    up, silent, notfound = gateways
    table.load([DispatcherRow(1, uri(up)), DispatcherRow(1, uri(silent), 8),
                DispatcherRow(1, uri(notfound), 4 | 8)])
    p, sock = prober(table, probing_mode=0)
    try:
        assert set(p.round()) == {uri(silent)}
        table.set_state(1, uri(up), 1)  # inactive without the probing flag: probed too
        assert set(p.round()) == {uri(up), uri(silent)}
    finally:
        sock.close()
    assert not notfound.requests("OPTIONS")
    assert states(table)[uri(notfound)] == "DP"


def test_a_host_name_is_not_probed_without_a_resolver(table, caplog):
    table.load([DispatcherRow(1, "sip:gw.example.invalid")])
    p, sock = prober(table)
    try:
        with caplog.at_level(logging.WARNING, "kampx.dispatcher"):
            assert p.round() == {} and p.round() == {}
    finally:
        sock.close()
    assert [r.getMessage() for r in caplog.records] == [
        "dispatcher: sip:gw.example.invalid not probed: no address for gw.example.invalid"]
    assert states(table) == {"sip:gw.example.invalid": "AX"}


def test_a_resolver_plugs_in(table, gateways):
    up = gateways[0]
    table.load([DispatcherRow(1, f"sip:gw1.example.invalid:{up.port}")])
    p, sock = prober(table)
    p.resolve = lambda host, port: (up.ip, port) if host == "gw1.example.invalid" else None
    try:
        assert p.round() == {f"sip:gw1.example.invalid:{up.port}": (True, 200)}
    finally:
        sock.close()
