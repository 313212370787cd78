"""`kampxctl trace` against a running kampx with the built-in script: the messages read and
sent, filtered by method, user and IP, with what the script did; bounded by count and time;
one trace at a time; the workers' taps gone once it ends."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time

import pytest

from authkit import REALM, AuthProxy, kampxctl_cmd
from sipclient import UAS, SipClient

pytestmark = [pytest.mark.wire, pytest.mark.timeout(90)]
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"


@pytest.fixture(scope="module")
def px():
    p = AuthProxy({"alice": "pw-alice"}).start()
    yield p
    p.close()


@pytest.fixture
def phone(px):
    u = UAS(px.addrs.phone, 0, user="alice").start()
    px.ctl("ul", "add", f"sip:alice@{REALM}", u.contact)
    yield u
    px.ctl("ul", "rm", f"sip:alice@{REALM}")
    u.stop()


class Trace:
    """`kampxctl trace ARGS` running beside the test; `started()` waits for its first line."""

    def __init__(self, px, *args):
        self.proc = subprocess.Popen(kampxctl_cmd() + ["--config", px.config_path, "trace", *args],
                                     cwd=px.workdir, env=px.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        # "tracing: ..." once trace.start answered; the workers look once per loop round
        ready, _, _ = select.select([self.proc.stderr], [], [], 10)
        assert ready, "kampxctl trace did not start"
        self.first = self.proc.stderr.readline()
        assert self.first.startswith("tracing:"), self.first
        # an idle worker's loop round ends at least every 0.5 s (its epoll timeout): by then
        # it has taken the trace; 1 s leaves room for a busy CI machine
        time.sleep(1.0)

    def finish(self, timeout=15.0) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


def carrier_call(px, user="alice"):
    with SipClient(px.addrs.carrier, 0, proxy=px.addr) as c:
        inv = c.request("INVITE", f"sip:{user}@{REALM}", from_uri=f"sip:15550001111@{px.addrs.carrier}",
                        body=SDP)
        c.send(inv)
        return inv, c.response(inv, 3.0, skip_provisional=True)


def test_a_carrier_call_with_the_scripts_decisions(px, phone):
    trace = Trace(px, "--user", "alice", "--count", "8", "--duration", "20")
    inv, final = carrier_call(px)
    assert final is not None and final.status == 200, final
    code, out, err = trace.finish()
    assert code == 0, err
    lines = out.splitlines()
    call_id = inv.get("call-id")
    messages = [line for line in lines if not line.startswith(" ")]
    # INVITE in, 100 out, INVITE out, 100 in, 180 in and out, 200 in and out: each once,
    # whichever worker read it (a reply handed to its transaction's owner is reported by the
    # owner alone)
    assert len(messages) == 8, out
    assert len({line.split(" ", 2)[2] for line in messages}) == 8, out
    assert sum(" SIP/2.0 200 OK" in line for line in messages) == 2, out
    # the INVITE read from the carrier, then what the script decided with it
    first = lines.index(next(line for line in lines if " IN  " in line and "INVITE sip:alice@" in line))
    assert f"{px.addrs.carrier}:" in lines[first] and f"[{call_id}]" in lines[first]
    decisions = lines[first + 1]
    assert decisions.startswith("      ") and "lookup('location') -> " in decisions, out
    assert "t_relay() -> True" in decisions and "allow_source_address(" in decisions, out
    # and the INVITE relayed to the phone's contact, with the proxy's 100 Trying
    assert any(" OUT " in line and f"-> {phone.ip}:{phone.port}" in line and "INVITE" in line
               for line in messages), out
    assert any(" OUT " in line and "100 " in line for line in messages), out
    assert "trace ended (count): " in err


def test_method_filter_and_json_lines(px, phone):
    trace = Trace(px, "--method", "OPTIONS", "--json", "--count", "2", "--duration", "20")
    carrier_call(px)  # an INVITE: not shown
    with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
        opt = c.request("OPTIONS", f"sip:{px.addrs.proxy}")
        c.send(opt)
        assert c.final(opt).status == 200
    code, out, err = trace.finish()
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["dir"], r["line"].split(" ")[0]) for r in records] == [("in", "OPTIONS"),
                                                                      ("out", "SIP/2.0")]
    assert {r["call_id"] for r in records} == {opt.get("call-id")}
    assert records[0]["cseq"].endswith("OPTIONS") and records[1]["line"].startswith("SIP/2.0 200")
    assert any("sl_send_reply(200" in c for c in records[0]["calls"]), records[0]["calls"]
    assert records[0]["src"].startswith(px.addrs.client + ":") and records[0]["worker"] in (0, 1)


def test_ip_filter_verbose_and_an_unparsable_datagram(px):
    trace = Trace(px, "--ip", px.addrs.client, "-v", "--count", "2", "--duration", "20")
    with SipClient(px.addrs.carrier, 0, proxy=px.addr) as other:  # another address: not shown
        other.send(other.request("OPTIONS", f"sip:{px.addrs.proxy}"))
    with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
        c.send(b"this is not SIP\r\n\r\n")
        reg = c.request("REGISTER", f"sip:{REALM}", from_uri=f"sip:alice@{REALM}", expires=60)
        c.send(reg)
        assert c.final(reg, timeout=5.0).status == 401  # a traced worker under a busy CI
    code, out, err = trace.finish()
    assert code == 0, err
    assert "(unparsable: " in out and "this is not SIP" in out, out
    assert "REGISTER sip:" in out and f"{px.addrs.carrier}:" not in out, out
    # -v: every call, one per line, indented by nesting, and the whole message
    assert "      | From: " in out and "      | Content-Length: 0" in out, out
    assert "      route REQINIT" in out and "        mf_process_maxfwd_header(" in out, out


def test_a_trace_ends_by_itself_and_costs_nothing_after(px):
    trace = Trace(px, "--duration", "1.5", "--count", "1000")
    second = subprocess.run(kampxctl_cmd() + ["--config", px.config_path, "trace"],
                            env=px.env, capture_output=True, text=True, timeout=10)
    assert second.returncode == 1 and "is running" in second.stderr, second.stderr
    code, out, err = trace.finish()
    assert code == 0 and "trace ended (duration)" in err, err
    time.sleep(1.2)  # every worker's once-a-second look at the end time has passed
    before = px.metric("kampx_trace_records_total")
    with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
        for _ in range(5):
            opt = c.request("OPTIONS", f"sip:{px.addrs.proxy}")
            c.send(opt)
            assert c.final(opt).status == 200
    assert px.metric("kampx_trace_records_total") == before


def test_a_killed_kampxctl_frees_the_proxy_for_the_next_trace(px):
    trace = Trace(px, "--duration", "2", "--count", "1000")
    trace.proc.send_signal(signal.SIGKILL)
    trace.proc.wait(5)
    deadline = time.monotonic() + 10
    while True:  # the abandoned trace ends at its duration, and the next one can start
        again = subprocess.run(kampxctl_cmd() + ["--config", px.config_path, "trace",
                                                 "--duration", "0.5"],
                               env=px.env, capture_output=True, text=True, timeout=15)
        if again.returncode == 0 or time.monotonic() > deadline:
            break
        assert "is running" in again.stderr
        time.sleep(0.5)
    assert again.returncode == 0 and "trace ended (duration)" in again.stderr, again.stderr


def test_ctrl_c_stops_the_trace(px):
    trace = Trace(px, "--duration", "30")
    trace.proc.send_signal(signal.SIGINT)
    code, _, err = trace.finish(10)
    assert code == 0 and "trace ended (stopped)" in err, err
    ok = subprocess.run(kampxctl_cmd() + ["--config", px.config_path, "trace", "--duration", "0.3"],
                        env=px.env, capture_output=True, text=True, timeout=15)
    assert ok.returncode == 0, ok.stderr
