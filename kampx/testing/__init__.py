"""kampx.testing: route scripts tested like any Python code, offline.

    from kampx.testing import ScriptHarness

    def test_unknown_user_gets_404():
        with ScriptHarness(addresses=[(200, "203.0.113.10", 32, 0, "carrier")]) as px:
            out = px.invite("bob", src=("203.0.113.10", 5060))
            assert (out.reply.code, out.reply.reason) == (404, "User not Registered")

ScriptHarness (harness.py) runs a script on the real worker without sockets, processes or
real time; Outcome (outcome.py) is what it did with a message; Call (calls.py) one script
function it called; build_request / digest_authorization (messages.py) write requests;
replay.py runs a capture through it (`kampx replay`). docs/testing-scripts.md is the guide.
"""

from kampx.testing.calls import Call
from kampx.testing.clock import Clock
from kampx.testing.harness import DEFAULT_SOURCE, ScriptHarness
from kampx.testing.messages import build_request, digest_authorization
from kampx.testing.outcome import Outcome, Relayed, Reply

__all__ = [
    "Call",
    "Clock",
    "DEFAULT_SOURCE",
    "Outcome",
    "Relayed",
    "Reply",
    "ScriptHarness",
    "build_request",
    "digest_authorization",
]
