"""kampx.registrar without sockets: a real worker in the test process (kampx.sandbox) whose
socket records the replies."""
from __future__ import annotations

import time

import pytest

from kampx import config as config_mod
from kampx import dset
from kampx import registrar as reg
from kampx import stats as S
from kampx.registrar import ACCEPTED_REGS, REJECTED_REGS
from kampx.routing import Result, lookup, save
from kampx.routing.context import ctx
from kampx.sandbox import Sandbox
from sipclient import parse as parse_reply


_boxes = []


def Worker(capacity=100, **registrar):
    """A real worker (kampx.sandbox: its socket records) with what these tests read of it:
    request(text) parses as the worker hands a request to the registrar, last_reply() is
    the last datagram sent, count(col) one of its counters."""
    box = Sandbox(config={"registrar": {"min_expires": 1, **registrar},
                          "usrloc": {"capacity": capacity}})
    _boxes.append(box)
    w = box.worker
    w.request = lambda text, src=("127.0.0.1", 5070): box.message(
        text.replace("\n", "\r\n").encode(), src)
    w.last_reply = lambda: parse_reply(box.sent[-1][0])
    w.sent = box.sent
    w.count = box.count
    return w


@pytest.fixture(autouse=True)
def _close_boxes():
    yield
    while _boxes:
        _boxes.pop().close()


def register_text(user="alice", contact="<sip:alice@127.0.0.1:5070>", expires="60",
                  call_id="cid-1", cseq=1, extra="", to=None):
    lines = ["REGISTER sip:kampx.test SIP/2.0",
             "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1",
             f"From: <sip:{user}@kampx.test>;tag=1",
             f"To: <{to or f'sip:{user}@kampx.test'}>",
             f"Call-ID: {call_id}",
             f"CSeq: {cseq} REGISTER"]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if extra:
        lines.append(extra)
    return "\n".join(lines + ["Content-Length: 0", "", ""])


def invite_text(ruri):
    return "\n".join([f"INVITE {ruri} SIP/2.0", "Via: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK9",
                      "From: <sip:c@127.0.0.3>;tag=9", f"To: <{ruri}>", "Call-ID: inv-1",
                      "CSeq: 1 INVITE", "Content-Length: 0", "", ""])


@pytest.mark.parametrize("text, q", [(None, -1), ("", -1), ("1", 1000), ("1.", 1000),
                                     ("1.000", 1000), ("0", 0), ("0.5", 500), ("0.05", 50),
                                     ("0.125", 125)])
def test_parse_q(text, q):
    assert reg.parse_q(text) == q


@pytest.mark.parametrize("text", ["1.5", "2", "0.1234", "-0.5", ".5", "0,5", "1.001", "abc"])
def test_parse_q_rejects(text):
    with pytest.raises(ValueError):
        reg.parse_q(text)


@pytest.mark.parametrize("q, text", [(1000, "1"), (0, "0"), (500, "0.5"), (50, "0.05"),
                                     (125, "0.125"), (100, "0.1")])
def test_q_text(q, text):
    assert reg.q_text(q) == text


def test_uri_equal_folds_scheme_and_host_only():
    assert reg.uri_equal("sip:Bob@EXAMPLE.com:5060;X=1", "SIP:Bob@example.COM:5060;X=1")
    assert not reg.uri_equal("sip:Bob@example.com", "sip:bob@example.com")
    assert not reg.uri_equal("sip:b@h;x=A", "sip:b@h;x=a")
    assert reg.uri_equal("sip:[::1]:5070", "SIP:[::1]:5070")
    assert reg.uri_equal("sip:HOST", "sip:host")


def test_aor_of():
    assert reg.aor_of("sip:Alice%41@Kampx.TEST;user=phone", False) == "alicea"
    assert reg.aor_of("sip:Alice%41@Kampx.TEST;user=phone", False, True) == "AliceA"
    assert reg.aor_of("sip:Alice@Kampx.TEST", True) == "alice@kampx.test"
    assert reg.aor_of("sip:Alice@Kampx.TEST", True, True) == "Alice@kampx.test"
    assert reg.aor_of("sip:kampx.test", True) == "kampx.test"
    assert reg.aor_of("sip:kampx.test", False) == ""


def test_aor_is_case_insensitive_by_default():
    w = Worker()
    reg.save(w, w.request(register_text(user="Alice")))
    assert reg.lookup(w, w.request(invite_text("sip:ALICE@kampx.test"))) == 1
    w = Worker(case_sensitive=True)
    reg.save(w, w.request(register_text(user="Alice")))
    assert reg.lookup(w, w.request(invite_text("sip:ALICE@kampx.test"))) == -1
    assert reg.lookup(w, w.request(invite_text("sip:Alice@kampx.test"))) == 1


@pytest.mark.parametrize("to, use_domain, expected", [
    ("sip:Al%69ce@Kampx.TEST;user=phone", False, "alice"),   # escapes decoded, lower-cased
    ("sip:Al%69ce@Kampx.TEST", True, "alice@kampx.test"),
    ("sips:bob@[2001:DB8::1]:5061", True, "bob@[2001:db8::1]"),
])
def test_save_takes_the_aor_from_the_to_uri_as_aor_of_does(to, use_domain, expected):
    w = Worker(use_domain=use_domain)
    assert reg.save(w, w.request(register_text(to=to))) == reg.RC_SAVED
    assert reg.aor_of(to, use_domain) == expected
    assert [b.contact for b in reg._store(w).lookup(expected, time.time())] == [
        "sip:alice@127.0.0.1:5070"]


def test_save_counts_and_replies():
    w = Worker()
    rc = reg.save(w, w.request(register_text()))
    assert rc == reg.RC_SAVED
    r = w.last_reply()
    assert (r.status, r.reason) == (200, "OK")
    assert r.get("contact") == "<sip:alice@127.0.0.1:5070>;expires=60"
    assert r.names()[-2:] == ["server", "content-length"]
    assert w.count(ACCEPTED_REGS.base) == 1
    assert w.count(REJECTED_REGS.base) == 0
    assert reg.save(w, w.request(register_text(contact="<sip:x@h>;q=7"))) == reg.RC_ERROR
    assert w.count(REJECTED_REGS.base) == 1
    assert w.count(ACCEPTED_REGS.base) == 1


def test_min_expires_mode_0_raises_the_interval():
    w = Worker(min_expires=120, min_expires_mode=0)
    reg.save(w, w.request(register_text(expires="30")))
    assert w.last_reply().get("contact") == "<sip:alice@127.0.0.1:5070>;expires=120"


@pytest.mark.parametrize("text, info", [
    (register_text(to="sip:kampx.test"), "No username in To URI"),
    (register_text(call_id="c" * 256), "Callid too long"),
    (register_text(contact=f"<sip:{'a' * 520}@h>"), "Contact/received too long"),
    (register_text(expires="soon"), "Expires parse error"),
    (register_text(contact='<sip:a@h>;+sip.instance="<urn:x>";reg-id=x'), "Invalid Reg-Id number"),
])
def test_kamailio_400s(text, info):
    w = Worker()
    assert reg.save(w, w.request(text)) == reg.RC_ERROR
    r = w.last_reply()
    assert (r.status, r.reason, r.get("p-registrar-error")) == (400, "Bad Request", info)


def test_no_reply_flag_and_unknown_flags():
    w = Worker()
    assert reg.save(w, w.request(register_text()), "location", 0x02) == reg.RC_SAVED
    assert w.sent == []
    with pytest.raises(ValueError):
        reg.save(w, w.request(register_text()), "location", 0x01)
    with pytest.raises(ValueError):
        reg.save(w, w.request(register_text()), "other_table")


def test_save_to_another_aor():
    w = Worker()
    reg.save(w, w.request(register_text()), uri="sip:bob@kampx.test")
    assert w.ctx.shared.location.lookup("bob", time.time())
    assert not w.ctx.shared.location.lookup("alice", time.time())


def test_lookup_codes_and_rewrite():
    w = Worker()
    reg.save(w, w.request(register_text(contact="<sip:alice@127.0.0.9:5070;line=1>")))
    m = w.request(invite_text("sip:alice@kampx.test"))
    assert reg.lookup(w, m) == reg.LOOKUP_FOUND
    assert m.ruri == "sip:alice@127.0.0.9:5070;line=1"
    assert m.dst is None                 # no NAT, no Path: the Request-URI decides
    m = w.request(invite_text("sip:nobody@kampx.test"))
    assert reg.lookup(w, m) == reg.LOOKUP_NONE
    assert m.ruri == "sip:nobody@kampx.test"
    assert reg.lookup(w, m, uri="not a uri") == reg.LOOKUP_ERROR


def test_nat_detection_uses_via_not_contact():
    w = Worker()
    # Via names the source: a third-party registration, no NAT even though Contact differs
    reg.save(w, w.request(register_text(contact="<sip:alice@127.0.0.9:5090>")))
    [b] = w.ctx.shared.location.lookup("alice", time.time())
    assert b.received == ""
    # Via names a private address the packet did not come from: NAT
    text = register_text(user="bob", contact="<sip:bob@192.168.1.20:5060>").replace(
        "Via: SIP/2.0/UDP 127.0.0.1:5070", "Via: SIP/2.0/UDP 192.168.1.20:5060")
    reg.save(w, w.request(text, src=("127.0.0.1", 40000)))
    [b] = w.ctx.shared.location.lookup("bob", time.time())
    assert b.received == "sip:127.0.0.1:40000"
    m = w.request(invite_text("sip:bob@kampx.test"))
    reg.lookup(w, m)
    assert (m.ruri, m.dst) == ("sip:bob@192.168.1.20:5060", "sip:127.0.0.1:40000")
    # behind NAT but the Contact already names the public address: nothing to remember
    text = register_text(user="carol", contact="<sip:carol@127.0.0.1:40001>").replace(
        "Via: SIP/2.0/UDP 127.0.0.1:5070", "Via: SIP/2.0/UDP 10.0.0.2:5060")
    reg.save(w, w.request(text, src=("127.0.0.1", 40001)))
    [b] = w.ctx.shared.location.lookup("carol", time.time())
    assert b.received == ""


def test_ipv6_source_received():
    w = Worker()
    text = register_text(contact="<sip:alice@[fd00::5]:5060>").replace(
        "Via: SIP/2.0/UDP 127.0.0.1:5070", "Via: SIP/2.0/UDP [fd00::5]:5060")
    reg.save(w, w.request(text, src=("::1", 40000)))
    [b] = w.ctx.shared.location.lookup("alice", time.time())
    assert b.received == "sip:[::1]:40000"


def test_same_cseq_later_than_cseq_delay_is_out_of_order(monkeypatch):
    w = Worker()
    reg.save(w, w.request(register_text(cseq=3)))
    real = time.time
    monkeypatch.setattr(reg.time, "time", lambda: real() + reg.CSEQ_DELAY + 1)
    assert reg.save(w, w.request(register_text(cseq=3))) == reg.RC_ERROR
    assert w.last_reply().get("p-registrar-error") == "Invalid CSeq number"


def test_unregister_all_or_by_ruid():
    w = Worker()
    m = w.request(register_text(contact="<sip:alice@127.0.0.1:5070>, <sip:alice@127.0.0.1:5071>"))
    reg.save(w, m)
    bindings = w.ctx.shared.location.lookup("alice", time.time())
    assert len(bindings) == 2
    assert reg.unregister(w, m, "location", "sip:alice@kampx.test", "nope") == -3
    assert reg.unregister(w, m, "location", "sip:alice@kampx.test", bindings[0].ruid) == 1
    assert [b.ruid for b in w.ctx.shared.location.lookup("alice", time.time())] == [bindings[1].ruid]
    assert reg.registered(w, m, "location", "sip:alice@kampx.test") == 1
    assert reg.unregister(w, m, "location", "sip:alice@kampx.test") == 1
    assert reg.registered(w, m, "location", "sip:alice@kampx.test") == -1
    assert reg.unregister(w, m, "location", "::bad::") == -1


def test_script_functions_return_kamailio_codes():
    w = Worker()
    m = w.request(invite_text("sip:alice@kampx.test"))
    ctx.worker, ctx.msg = w, m
    try:
        rc = lookup("location")
        assert isinstance(rc, Result) and rc == -1 and not rc
        ctx.msg = w.request(register_text())
        rc = save("location")
        assert rc == 1 and rc
        ctx.msg = m
        assert lookup("location") and m.ruri == "sip:alice@127.0.0.1:5070"
        assert repr(Result(-3)) == "Result(-3)"
    finally:
        ctx.worker = ctx.msg = None


def _relaying(**kw):
    """A worker whose relay() records what t_relay would send for each branch."""
    w = Worker(**kw)
    w.relayed = []

    def relay(msg):
        routes = [v for v in (msg.serialize().decode().split("\r\n")) if v.startswith("Route:")]
        w.relayed.append((msg.ruri, msg.dst, routes))
        return True
    w.relay = relay
    return w


def test_lookup_appends_a_branch_per_binding_and_relay_forks():
    w = _relaying()
    text = register_text(contact="<sip:alice@127.0.0.1:5071>;q=0.5, <sip:alice@127.0.0.1:5072>")
    reg.save(w, w.request(text, src=("127.0.0.1", 5070)))
    nat = register_text(contact="<sip:alice@10.0.0.9:5060>;q=0.1", call_id="cid-2").replace(
        "Via: SIP/2.0/UDP 127.0.0.1:5070", "Via: SIP/2.0/UDP 10.0.0.9:5060")
    reg.save(w, w.request(nat, src=("127.0.0.1", 41000)))
    path = register_text(contact="<sip:alice@127.0.0.1:5073>;q=0.3", call_id="cid-3",
                         extra="Path: <sip:127.0.0.7:5090;lr>")
    reg.save(w, w.request(path))
    m = w.request(invite_text("sip:alice@kampx.test").replace(
        "Content-Length", "Route: <sip:127.0.0.8;lr>\nContent-Length"))
    assert reg.lookup(w, m) == 1
    assert [b.uri for b in m.branches] == ["sip:alice@127.0.0.1:5071", "sip:alice@127.0.0.1:5073",
                                           "sip:alice@10.0.0.9:5060"]
    assert dset.fork(m, w.relay)
    assert w.relayed == [
        ("sip:alice@127.0.0.1:5072", None, ["Route: <sip:127.0.0.8;lr>"]),
        ("sip:alice@127.0.0.1:5071", None, ["Route: <sip:127.0.0.8;lr>"]),
        ("sip:alice@127.0.0.1:5073", "sip:127.0.0.7:5090;lr",
         ["Route: <sip:127.0.0.7:5090;lr>, <sip:127.0.0.8;lr>"]),
        ("sip:alice@10.0.0.9:5060", "sip:127.0.0.1:41000", ["Route: <sip:127.0.0.8;lr>"]),
    ]
    assert not m.branches


def test_append_branches_off_and_path_route_removed_again():
    w = _relaying(append_branches=False)
    reg.save(w, w.request(register_text(contact="<sip:alice@127.0.0.1:5071>", extra="Path: <sip:127.0.0.7;lr>")))
    reg.save(w, w.request(register_text(contact="<sip:alice@127.0.0.1:5072>;q=0.2", call_id="c2")))
    m = w.request(invite_text("sip:alice@kampx.test"))
    reg.lookup(w, m)
    assert m.branches == []
    dset.fork(m, w.relay)
    assert w.relayed == [("sip:alice@127.0.0.1:5071", "sip:127.0.0.7;lr", ["Route: <sip:127.0.0.7;lr>"])]
    w = _relaying()
    reg.save(w, w.request(register_text(contact="<sip:alice@127.0.0.1:5071>", extra="Path: <sip:127.0.0.7;lr>")))
    reg.save(w, w.request(register_text(contact="<sip:alice@127.0.0.1:5072>;q=0.2", call_id="c2")))
    m = w.request(invite_text("sip:alice@kampx.test"))
    reg.lookup(w, m)
    dset.fork(m, w.relay)
    assert w.relayed[1] == ("sip:alice@127.0.0.1:5072", None, []), "the Path Route is gone again"


@pytest.mark.parametrize("keys, words", [
    ({"max_contacts_policy": "oldest"}, "max_contacts_policy"),
    ({"min_expires_mode": 2}, "min_expires_mode"),
    ({"use_domain": "yes"}, "use_domain"),
    ({"min_expires": 100, "max_expires": 50}, "min_expires"),
])
def test_registrar_config_checks(keys, words):
    with pytest.raises(config_mod.ConfigError, match=words):
        config_mod.from_dict({"registrar": keys})
