"""kampx.testing itself: the private instrumented copy, the clock, scripts from files,
raw messages, overrides, errors, determinism."""
import time
import types

import pytest

import kampx.routing
from kampx.routing import loader
from kampx.tm import timers
from kampx.testing import Clock, ScriptHarness, build_request, digest_authorization
from kampx.auth import digest

STATIC = '''
from kampx.routing import *

def request_route(msg):
    if is_method("BYE"):
        raise RuntimeError("no BYE here")
    if not mf_process_maxfwd_header(10):
        sl_send_reply(483, "Too Many Hops")
        exit()
    rewritehostport("192.0.2.10:5080")
    append_hf("X-Routed: static")
    t_relay()

def branch_route(msg):
    append_hf("X-Branch: 1")
'''


@pytest.fixture
def static_script(tmp_path):
    path = tmp_path / "static.py"
    path.write_text(STATIC)
    return str(path)


def test_a_script_file_with_its_branch_route(static_script):
    with ScriptHarness(script=static_script) as px:
        out = px.send("INVITE sip:bob@example.org SIP/2.0\n"
                      "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKraw1\n"
                      "From: <sip:a@example.org>;tag=1\nTo: <sip:bob@example.org>\n"
                      "Call-ID: raw-1\nCSeq: 1 INVITE\nContent-Length: 0\n\n")
        (leg,) = out.relayed
        assert leg.ruri == "sip:bob@192.0.2.10:5080" and leg.destination == ("192.0.2.10", 5080)
        assert ("X-Routed", "static") in leg.added and ("X-Branch", "1") in leg.added
        assert "route branch_route" in out.calls
        assert out.routes == ["request_route", "branch_route"]
        assert out.decision == "relay INVITE sip:bob@192.0.2.10:5080 -> 192.0.2.10:5080"
        assert out.kind == "relay"


def test_a_script_exception_is_a_500_and_an_error(static_script):
    with ScriptHarness(script=static_script) as px:
        out = px.send(px.request("BYE", "sip:bob@example.org", to_tag="x"))
        assert (out.reply.code, out.reply.reason) == (500, "Server Internal Error")
        assert [where for where, _ in out.errors] == ["request_route"]
        assert isinstance(out.calls[0].result, RuntimeError)


def test_the_instrumented_copy_is_private():
    original = kampx.routing.lookup
    with ScriptHarness() as px:
        px.invite("alice", src=("192.0.2.1", 5060))
        assert kampx.routing.lookup is original
        other = loader.load("builtin:kamailio101")
        assert other.module.lookup is original
        assert other.module is not px.box.worker.script.module


def test_call_log_nests_and_compares_with_text():
    with ScriptHarness() as px:
        out = px.send(px.request("OPTIONS", "sip:127.0.0.1"))
        assert out.calls[0] == "route request_route" and out.calls[0].depth == 0
        assert out.calls[1] == "route REQINIT" and out.calls[1].depth == 1
        assert out.calls[2].depth == 2
        assert out.calls[-1] == "exit() -> 'exit'"
        assert px.calls[-len(out.calls):] == out.calls


def test_the_clock_moves_only_with_advance_and_is_put_back():
    clock = Clock()
    with ScriptHarness(clock=clock) as px:
        px.register("alice", password="x")
        # outside harness calls the process keeps the real clocks
        assert isinstance(time.monotonic, types.BuiltinFunctionType)
        assert isinstance(time.time, types.BuiltinFunctionType) and timers._now is time.monotonic
        seen = []
        with clock.installed():
            seen.append((time.monotonic(), time.time()))
            px.advance(2.5)
            seen.append((time.monotonic(), time.time()))
        assert seen[1][0] - seen[0][0] == pytest.approx(2.5)
        assert seen[1][1] - seen[0][1] == pytest.approx(2.5)
    assert isinstance(time.monotonic, types.BuiltinFunctionType) and time.time() != clock.time()


def test_runs_are_deterministic():
    def run():
        with ScriptHarness(subscribers={"bob": "pw"}) as px:
            out = px.invite("+1555", caller="bob")
            px.advance(40)
            return out.decision, [repr(c) for c in px.calls]

    assert run() == run()


def test_overrides_replace_an_api_function_in_the_copy_only():
    with ScriptHarness(overrides={"lookup": lambda table: kampx.routing.Result(-1)},
                       addresses=[(200, "203.0.113.10", 32, 0, "carrier")]) as px:
        out = px.invite("alice", src=("203.0.113.10", 5060))
        assert "lookup('location') -> Result(-1)" in out.calls
    with pytest.raises(ValueError):
        ScriptHarness(overrides={"no_such_function": print})


def test_advance_runs_retransmissions_in_order():
    with ScriptHarness(config={"routing": {"carrier": "sip:192.0.2.50:5060"}},
                       subscribers={"bob": "pw"}) as px:
        px.invite("+1555", caller="bob")
        sent = px.advance(3.6).relayed
        # Timer A: 0.5, 1, 2 s after the INVITE (0.5, 1.5, 3.5 s)
        assert [r.method for r in sent] == ["INVITE"] * 3


def test_digest_authorization_matches_kampx_verification():
    value = digest_authorization('Digest realm="r", nonce="n1", qop="auth"', "u", "p",
                                 "INVITE", "sip:x@r")
    scheme, params = digest.parse_credentials(value)
    cred = digest.credentials(params)
    assert scheme == "Digest" and cred.qop == "auth" and cred.nc == "00000001"
    assert digest.verify(cred, digest.ha1("u", "r", "p"), "INVITE")
    assert not digest.verify(cred, digest.ha1("u", "r", "q"), "INVITE")


def test_build_request_frames_the_body():
    data = build_request("INVITE", "sip:b@h", src=("::1", 5062), from_uri="sip:a@h",
                         to_uri="sip:b@h", call_id="c", from_tag="t", branch="z9hG4bKb",
                         body=b"v=0\r\n")
    assert b"Via: SIP/2.0/UDP [::1]:5062;rport;branch=z9hG4bKb\r\n" in data
    assert data.endswith(b"Content-Type: application/sdp\r\nContent-Length: 5\r\n\r\nv=0\r\n")
