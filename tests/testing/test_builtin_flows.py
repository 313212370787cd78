"""The built-in script (builtin:kamailio101) through kampx.testing: the Kamailio 101
tutorial's call flows, each judged on what the proxy would send and what the script called."""
import pytest

from kampx.testing import ScriptHarness

CARRIER = ("203.0.113.10", 5060)
CARRIER_GW = "192.0.2.50:5070"
USERS = {"alice": "alice-pw", "bob": "bob-pw"}


@pytest.fixture
def px():
    with ScriptHarness(
        config={"routing": {"carrier": f"sip:{CARRIER_GW}"}, "tm": {"fr_inv_timer_ms": 6000}},
        subscribers=USERS,
        addresses=[(200, CARRIER[0], 32, 0, "carrier")],
    ) as harness:
        yield harness


def test_register_with_digest(px):
    out = px.register("alice", expires=600)
    challenge = out.challenge.reply
    assert (challenge.code, challenge.reason) == (401, "Unauthorized")
    offered = challenge.header("WWW-Authenticate")
    assert offered.startswith('Digest realm="kampx.test", nonce="') and 'qop="auth"' in offered
    assert (out.reply.code, out.reply.reason) == (200, "OK")
    assert out.reply.header("Contact") == "<sip:alice@198.51.100.10:5060>;expires=600"
    assert out.reply.destination == px.address_of("alice")
    assert "auth_check('kampx.test', 'subscriber', 1) -> Result(1)" in out.calls
    assert "save('location') -> Result(1)" in out.calls
    assert not out.relayed and not out.errors


def test_register_with_a_wrong_password_is_challenged_again(px):
    out = px.register("alice", password="not-it")
    assert out.reply.code == 401
    assert "auth_check('kampx.test', 'subscriber', 1) -> Result(-2)" in out.calls
    assert not out.called("save")


def test_carrier_call_to_a_registered_user(px):
    px.register("alice")
    out = px.invite("alice", src=CARRIER)
    assert [r.code for r in out.replies] == [100]
    assert out.replies[0].destination == CARRIER
    (leg,) = out.relayed
    assert leg.method == "INVITE"
    assert leg.ruri == "sip:alice@198.51.100.10:5060"
    assert leg.destination == ("198.51.100.10", 5060)
    assert leg.record_route == ["<sip:127.0.0.1;lr>"]
    assert leg.via.startswith("SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK")
    assert ("Max-Forwards", "69") in leg.added and ("Max-Forwards", "70") in leg.removed
    # not authenticated: the trunk's address is in the carrier group
    assert "allow_source_address(200) -> Result(1)" in out.calls
    assert not out.called("auth_check")
    assert "lookup('location') -> Result(1)" in out.calls
    assert out.calls[-2:] == ["t_relay() -> True", "exit() -> 'exit'"]


def test_carrier_call_to_an_unknown_user_gets_404(px):
    out = px.invite("carol", src=CARRIER)
    assert (out.reply.code, out.reply.reason) == (404, "User not Registered")
    assert out.reply.destination == CARRIER
    assert [r.code for r in out.replies] == [404]  # no 100 before it
    assert not out.relayed
    assert "lookup('location') -> Result(-1)" in out.calls
    assert out.calls[-2:] == ["sl_send_reply(404, 'User not Registered') -> True", "exit() -> 'exit'"]


def test_user_call_out_to_the_carrier_after_407(px):
    out = px.invite("+15550100", caller="bob")
    first = out.challenge.reply
    assert (first.code, first.reason) == (407, "Proxy Authentication Required")
    offered = first.header("Proxy-Authenticate")
    assert offered.startswith('Digest realm="kampx.test"') and 'qop="auth"' in offered
    assert not out.challenge.relayed
    (leg,) = out.relayed
    assert leg.ruri == f"sip:+15550100@{CARRIER_GW}"  # host and port replaced, user kept
    assert leg.destination == ("192.0.2.50", 5070)
    assert leg.header("Proxy-Authorization") is None  # consumed
    assert any(name == "Proxy-Authorization" for name, _ in leg.removed)
    assert leg.record_route == ["<sip:127.0.0.1;lr>"]
    assert "allow_source_address(200) -> Result(-1)" in out.calls
    assert "lookup('location') -> Result(-1)" in out.calls
    assert "route TOCARRIER" in out.calls
    assert "t_on_failure(CARRIER_FAILED) -> True" in out.calls


def test_user_call_to_a_registered_user(px):
    px.register("alice")
    out = px.invite("alice", caller="bob")
    assert out.challenge.reply.code == 407
    (leg,) = out.relayed
    assert leg.ruri == "sip:alice@198.51.100.10:5060"
    assert "route TOCARRIER" not in out.calls


def test_a_user_calling_without_a_password_stays_challenged(px):
    out = px.invite("alice", from_uri="sip:mallory@kampx.test", src=("192.0.2.66", 5060))
    assert out.reply.code == 407 and not out.relayed
    assert "auth_check('kampx.test', 'subscriber', 1) -> Result(-5)" in out.calls


def test_a_carrier_503_moves_on_and_reaches_the_caller_as_500(px):
    call = px.invite("+15550100", caller="bob")
    (leg,) = call.relayed
    out = px.reply_to(leg, 503)
    assert (out.reply.code, out.reply.reason) == (500, "Service Unavailable")
    assert out.reply.destination == px.address_of("bob")
    # the failure route ran; an IP carrier has no next destination
    assert out.routes == ["CARRIER_FAILED"]
    assert "t_next_dst() -> False" in out.calls
    assert [r.method for r in out.relayed] == ["ACK"]  # tm ACKs the 503 hop by hop


def test_an_answered_call_passes_the_200_upstream(px):
    px.register("alice")
    (leg,) = px.invite("alice", src=CARRIER).relayed
    ringing = px.reply_to(leg, 180)
    assert [r.code for r in ringing.replies] == [180] and ringing.replies[0].destination == CARRIER
    answered = px.reply_to(leg, 200, headers=["Contact: <sip:alice@198.51.100.10:5060>"])
    assert answered.reply.code == 200
    assert answered.reply.header("Contact") == "<sip:alice@198.51.100.10:5060>"


def test_a_silent_callee_times_out_with_408(px):
    px.register("alice")
    (leg,) = px.invite("alice", src=CARRIER).relayed
    px.reply_to(leg, 180)
    assert px.advance(5.9).reply is None
    out = px.advance(0.2)  # fr_inv_timer: 6 s after the provisional
    assert (out.reply.code, out.reply.reason) == (408, "Request Timeout")
    assert [r.method for r in out.relayed] == ["CANCEL"]


def test_a_registration_expires_on_the_harness_clock(px):
    px.register("alice", expires=60)
    px.advance(59)
    assert px.invite("alice", src=CARRIER).relayed
    px.advance(2)
    assert px.invite("alice", src=CARRIER).reply.code == 404


def test_keepalive_and_too_many_hops(px):
    ping = px.send(px.request("OPTIONS", "sip:127.0.0.1"))
    assert (ping.reply.code, ping.reply.reason) == (200, "Keepalive")
    loop = px.send(px.request("INVITE", "sip:alice@kampx.test", max_forwards=0), CARRIER)
    assert (loop.reply.code, loop.reply.reason) == (483, "Too Many Hops")
    assert "mf_process_maxfwd_header(10) -> False" in loop.calls


def test_unsupported_method_gets_501(px):
    out = px.send(px.request("MESSAGE", "sip:alice@kampx.test"), CARRIER)
    assert (out.reply.code, out.reply.reason) == (501, "Not Implemented")


def test_a_scanner_is_dropped_silently(px):
    out = px.send(px.request("OPTIONS", "sip:100@127.0.0.1", headers=["User-Agent: friendly-scanner"]))
    assert out.dropped and out.decision == "drop"
    assert out.calls[-2:] == ["is_scanner() -> True", "drop() -> 'drop'"]
