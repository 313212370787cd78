"""RFC 3263's procedure (kampx/dns/rfc3263.py) over a dict of answers: which questions in
which order, and the targets in the order a transaction tries them."""
from __future__ import annotations

import random
from collections import Counter

from kampx.dns.rfc3263 import (
    FAILED, NODATA, NOT_FOUND, NXDOMAIN, OK, UNAVAILABLE, Answer, Target, order_srv, resolve,
)

NAPTR_UDP = (10, 50, "s", "SIP+D2U", "", "_sip._udp.carrier.example")


def run(procedure, zone: dict, asked: list | None = None):
    """Drive the procedure; a question not in `zone` is NXDOMAIN; a value None is FAILED."""
    answer = None
    try:
        while True:
            q = procedure.send(answer)
            if asked is not None:
                asked.append((q.name, q.qtype))
            if q not in zone:
                answer = Answer(NXDOMAIN, (), 30)
            elif zone[q] is None:
                answer = Answer(FAILED)
            else:
                answer = Answer(OK, tuple(zone[q]), 60)
    except StopIteration as end:
        return end.value


def q(name, qtype):
    from kampx.dns.rfc3263 import Question
    return Question(name, qtype)


def test_an_ip_literal_asks_nothing():
    asked = []
    lookup = run(resolve("192.0.2.7", 0), {}, asked)
    assert asked == [] and lookup.targets == (Target("192.0.2.7", 5060, "udp"),)
    assert run(resolve("[2001:db8::1]", 5070), {}).targets == (Target("2001:db8::1", 5070, "udp"),)


def test_a_port_means_address_records_only():
    asked = []
    zone = {q("sw1.carrier.example", "A"): ["192.0.2.1", "192.0.2.2"]}
    lookup = run(resolve("SW1.Carrier.Example.", 5080), zone, asked)
    assert asked == [("sw1.carrier.example", "A")]
    assert [t.ip for t in lookup.targets] == ["192.0.2.1", "192.0.2.2"]
    assert {t.port for t in lookup.targets} == {5080}


def test_a_transport_parameter_skips_naptr():
    asked = []
    zone = {q("_sip._udp.carrier.example", "SRV"): [(10, 0, 5070, "sw1.carrier.example")],
            q("sw1.carrier.example", "A"): ["192.0.2.1"]}
    lookup = run(resolve("carrier.example", 0, "udp"), zone, asked)
    assert asked == [("_sip._udp.carrier.example", "SRV"), ("sw1.carrier.example", "A")]
    assert lookup.targets == (Target("192.0.2.1", 5070, "udp"),)


def test_naptr_then_srv_by_priority_then_addresses():
    asked = []
    zone = {q("carrier.example", "NAPTR"): [NAPTR_UDP],
            q("_sip._udp.carrier.example", "SRV"): [(20, 0, 5062, "sw2.carrier.example"),
                                                   (10, 0, 5061, "sw1.carrier.example")],
            q("sw1.carrier.example", "A"): ["192.0.2.1"],
            q("sw2.carrier.example", "A"): ["192.0.2.2", "192.0.2.3"]}
    lookup = run(resolve("carrier.example"), zone, asked)
    assert asked[0] == ("carrier.example", "NAPTR")
    assert lookup.targets == (Target("192.0.2.1", 5061, "udp"), Target("192.0.2.2", 5062, "udp"),
                              Target("192.0.2.3", 5062, "udp"))


def test_naptr_of_unsupported_services_falls_back_to_srv():
    zone = {q("carrier.example", "NAPTR"): [(10, 50, "s", "SIPS+D2T", "", "_sips._tcp.carrier.example"),
                                           (10, 60, "u", "E2U+sip", "!^.*$!sip:x@y!", ".")],
            q("_sip._udp.carrier.example", "SRV"): [(10, 0, 5060, "sw1.carrier.example")],
            q("sw1.carrier.example", "A"): ["192.0.2.1"]}
    assert run(resolve("carrier.example"), zone).targets == (Target("192.0.2.1", 5060, "udp"),)


def test_naptr_off_asks_srv_first():
    asked = []
    run(resolve("carrier.example", naptr=False), {}, asked)
    assert asked[0] == ("_sip._udp.carrier.example", "SRV")


def test_no_srv_means_the_address_at_5060():
    asked = []
    zone = {q("pbx.example", "A"): ["192.0.2.9"]}
    lookup = run(resolve("pbx.example"), zone, asked)
    assert asked == [("pbx.example", "NAPTR"), ("_sip._udp.pbx.example", "SRV"), ("pbx.example", "A")]
    assert lookup.targets == (Target("192.0.2.9", 5060, "udp"),)


def test_srv_target_dot_means_no_service():
    zone = {q("_sip._udp.x.example", "SRV"): [(0, 0, 0, ".")], q("x.example", "A"): ["192.0.2.9"]}
    lookup = run(resolve("x.example", naptr=False), zone)
    # RFC 2782: "." says the service is not there: the A fallback only applies without SRV
    assert lookup.targets == () and lookup.failure == NOT_FOUND


def test_nothing_found_is_not_found_and_a_dead_server_is_unavailable():
    assert run(resolve("nowhere.example"), {}).failure == NOT_FOUND
    zone = {q("nowhere.example", "NAPTR"): None, q("_sip._udp.nowhere.example", "SRV"): None,
            q("nowhere.example", "A"): None}
    lookup = run(resolve("nowhere.example"), zone)
    assert lookup.targets == () and lookup.failure == UNAVAILABLE


def test_aaaa_only_when_asked_for():
    asked = []
    zone = {q("pbx.example", "A"): ["192.0.2.9"], q("pbx.example", "AAAA"): ["2001:db8::9"]}
    lookup = run(resolve("pbx.example", 5060, families=("A", "AAAA")), zone, asked)
    assert [t.ip for t in lookup.targets] == ["192.0.2.9", "2001:db8::9"]
    asked2 = []
    run(resolve("pbx.example", 5060), zone, asked2)
    assert ("pbx.example", "AAAA") not in asked2


def test_srv_weights_share_the_first_place_in_proportion():
    records = [(10, 60, 5060, "a"), (10, 30, 5060, "b"), (10, 10, 5060, "c"), (20, 100, 5060, "z")]
    rng = random.Random(7)
    firsts = Counter(order_srv(records, rng)[0][3] for _ in range(6000))
    assert firsts["z"] == 0  # a lower priority is never first while a higher one exists
    assert abs(firsts["a"] / 6000 - 0.6) < 0.04
    assert abs(firsts["b"] / 6000 - 0.3) < 0.04
    assert abs(firsts["c"] / 6000 - 0.1) < 0.03
    for _ in range(50):
        assert order_srv(records, rng)[-1][3] == "z"


def test_srv_weight_zero_still_gets_chosen_sometimes():
    records = [(10, 0, 5060, "zero"), (10, 100, 5060, "hundred")]
    rng = random.Random(3)
    firsts = Counter(order_srv(records, rng)[0][3] for _ in range(5000))
    assert 0 < firsts["zero"] < 200


def test_a_proxy_that_speaks_tcp_and_tls_follows_naptr_to_them():
    zone = {q("carrier.example", "NAPTR"): [(10, 50, "s", "SIP+D2T", "", "_sip._tcp.carrier.example")],
            q("_sip._tcp.carrier.example", "SRV"): [(10, 0, 5060, "sw1.carrier.example")],
            q("_sips._tcp.carrier.example", "SRV"): [(10, 0, 5061, "sw2.carrier.example")],
            q("sw1.carrier.example", "A"): ["192.0.2.1"],
            q("sw2.carrier.example", "A"): ["192.0.2.2"]}
    both = ("udp", "tcp", "tls")
    assert run(resolve("carrier.example", supported=both), zone).targets == (
        Target("192.0.2.1", 5060, "tcp"),)
    # a sips: URI goes to the TLS service when the proxy speaks TLS
    assert run(resolve("carrier.example", 0, None, True, naptr=False, supported=both),
               zone).targets == (Target("192.0.2.2", 5061, "tls"),)
    # UDP only: the TCP-only NAPTR is passed over (then nothing answers for UDP)
    assert run(resolve("carrier.example"), zone).targets == ()
