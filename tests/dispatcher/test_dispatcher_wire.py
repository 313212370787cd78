"""The dispatcher on the wire: a real kampx (tests/kampxproc.py) with gateways on loopback.
The prober takes a silent gateway out (dispatcher dump, the gauge, ds_select_dst) and puts it
back once it answers; kampxctl dispatcher add/rm/show/dump/reload end to end."""
from __future__ import annotations

import collections
import json
import os
import signal
import time

import pytest
from kampxproc import KampxProcess
from sipclient import UAS, Behaviour, SipClient

from kampx.cli import kampxctl

pytestmark = [pytest.mark.wire, pytest.mark.timeout(60)]

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts", "ds_relay.py")


def proxy(**dispatcher) -> KampxProcess:
    return KampxProcess(script=SCRIPT, config={"dispatcher": dispatcher}) if dispatcher \
        else KampxProcess(script=SCRIPT, config={"dispatcher": {"ping_interval": 0}})


def wait_ctl(px, capsys, timeout: float = 5.0) -> None:
    """The control socket answers (the ctl process binds it once the workers are up)."""
    deadline = time.monotonic() + timeout
    while ctl(px, "uptime", capsys=capsys)[0] != 0:
        assert time.monotonic() < deadline, "the control socket did not come up"
        time.sleep(0.05)


def ctl(px, *args, capsys) -> tuple[int, str, str]:
    code = kampxctl.main(["--config", px.config_path, *args])
    out, err = capsys.readouterr()
    return code, out, err


def dump(px, capsys) -> dict[str, dict]:
    code, out, err = ctl(px, "--json", "dispatcher", "dump", capsys=capsys)
    assert code == 0, err
    return {d["uri"]: d for d in json.loads(out)["destinations"]}


def wait_state(px, capsys, uri: str, state: str, timeout: float = 6.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = dump(px, capsys)[uri]["state"]
        if seen == state:
            return
        assert time.monotonic() < deadline, f"{uri} still {seen}, not {state}"
        time.sleep(0.1)


def gateway_up(px, uri: str) -> float:
    for line in px.metrics_text().splitlines():
        if line.startswith("kampx_dispatcher_destination_up{") and f'uri="{uri}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no kampx_dispatcher_destination_up for {uri}")


def calls(px, caller: SipClient, n: int) -> list[int]:
    """n INVITEs through the proxy; their final status codes."""
    out = []
    for i in range(n):
        req = caller.request("INVITE", f"sip:+1555000{i}@{px.addrs.proxy}")
        caller.send(req)
        out.append(caller.final(req, 4).status)
    return out


def test_probing_takes_a_silent_gateway_out_and_brings_it_back(capsys):
    px = proxy(ping_interval=1, ping_timeout_ms=400, probing_mode=1)
    with UAS(px.addrs.carrier, 0) as good, \
            UAS(px.addrs.phone, 0, behaviour=Behaviour(answer_other=None, silent=True)) as bad:
        good_uri, bad_uri = f"sip:{good.ip}:{good.port}", f"sip:{bad.ip}:{bad.port}"
        for uri in (good_uri, bad_uri):
            assert ctl(px, "dispatcher", "add", "1", uri, capsys=capsys)[0] == 0
        with px, SipClient(px.addrs.client, 0, proxy=px.addr) as caller:
            wait_ctl(px, capsys)
            wait_state(px, capsys, bad_uri, "IP")
            assert dump(px, capsys)[good_uri]["state"] == "AX"
            assert gateway_up(px, bad_uri) == 0 and gateway_up(px, good_uri) == 1
            assert calls(px, caller, 4) == [200] * 4
            assert len(good.requests("INVITE")) == 4 and not bad.requests("INVITE")

            bad.behaviour.answer_other, bad.behaviour.silent = 200, False  # it comes back
            wait_state(px, capsys, bad_uri, "AP")
            assert gateway_up(px, bad_uri) == 1
            assert calls(px, caller, 4) == [200] * 4
            assert len(good.requests("INVITE")) == 6 and len(bad.requests("INVITE")) == 2

            code, out, _ = ctl(px, "dispatcher", "dump", capsys=capsys)
            lines = {line.split()[1]: line.split() for line in out.splitlines()[2:]}
            assert lines[bad_uri][2] == "AP" and lines[good_uri][2] == "AX"
            assert px.metric("kampx_dispatcher_probes_failed_total") >= 1
            assert px.metric("kampx_dispatcher_selected_total") == 8
            # the prober notices a stop between its rounds: nobody is killed for being late
            assert px.stop() == 0
            assert "did not stop in time" not in px.log_tail(200)


def test_kampxctl_dispatcher_commands_end_to_end(capsys):
    px = proxy()
    with px, UAS(px.addrs.carrier, 0) as gw, SipClient(px.addrs.client, 0, proxy=px.addr) as caller:
        gw_uri = f"sip:{gw.ip}:{gw.port}"
        wait_ctl(px, capsys)
        assert calls(px, caller, 1) == [503]  # no set 1 yet
        code, out, _ = ctl(px, "dispatcher", "add", "1", gw_uri, "8", "5", "weight=50", "gw1",
                           "--reload", capsys=capsys)
        assert code == 0
        assert out.splitlines() == [f"{gw_uri} added to set 1",
                                    "dispatcher reloaded: 1 destinations (generation 2)"]
        code, out, _ = ctl(px, "dispatcher", "show", capsys=capsys)
        assert out.splitlines()[0].split() == ["id", "setid", "destination", "flags", "priority",
                                               "attrs", "description"]
        assert out.splitlines()[1].split() == ["1", "1", gw_uri, "8", "5", "weight=50", "gw1"]
        assert dump(px, capsys)[gw_uri]["state"] == "AP"  # flag 8: probing
        assert calls(px, caller, 1) == [200] and len(gw.requests("INVITE")) == 1
        code, out, _ = ctl(px, "stats", "dispatcher", capsys=capsys)
        assert "dispatcher:selected = 1" in out and "dispatcher:no_destination = 1" in out

        # a row added without --reload reaches the proxy on SIGHUP
        other = f"sip:{px.addrs.phone}:5099"
        assert ctl(px, "dispatcher", "add", "2", other, capsys=capsys)[0] == 0
        assert other not in dump(px, capsys)
        os.kill(px.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 5
        while other not in dump(px, capsys):
            assert time.monotonic() < deadline, "SIGHUP did not reload the dispatcher"
            time.sleep(0.1)

        # ds_is_from_list(1): the gateway of set 1 is recognised by its IP and port
        with SipClient(gw.ip, 0) as stranger:
            stranger.send(stranger.request("MESSAGE", f"sip:x@{px.addrs.proxy}"), px.addr)
            assert stranger.expect().status == 403  # same IP, another port
        gw.send_raw(caller.request("MESSAGE", f"sip:x@{px.addrs.proxy}",
                                   via=f"SIP/2.0/UDP {gw.ip}:{gw.port};rport;branch=z9hG4bKm1")
                    .encode(), px.addr)
        deadline = time.monotonic() + 3
        while not [m for m in gw.received if not m.is_request and m.status == 200]:
            assert time.monotonic() < deadline, "no 200 to the gateway's MESSAGE"
            time.sleep(0.05)

        # state by RPC, then rm + reload, and the JSON forms
        code, out, _ = ctl(px, "rpc", "dispatcher.set_state",
                           json.dumps({"state": "d", "setid": 1, "uri": gw_uri}), capsys=capsys)
        assert json.loads(out) == {"changed": 1}
        assert dump(px, capsys)[gw_uri]["state"] == "DX"
        assert calls(px, caller, 1) == [503]
        code, out, _ = ctl(px, "--json", "dispatcher", "rm", "1", "--reload", capsys=capsys)
        assert code == 0 and json.loads(out)["reloaded"]["destinations"] == 1
        assert set(dump(px, capsys)) == {other}
        code, out, err = ctl(px, "dispatcher", "rm", "1", capsys=capsys)
        assert code == 1 and err == "no dispatcher entry with id 1\n"
        code, out, _ = ctl(px, "dispatcher", "reload", capsys=capsys)
        assert code == 0 and out.startswith("dispatcher reloaded: 1 destinations")
        roles = collections.Counter(t.split("kampx: ", 1)[-1] for t in px.children().values())
        assert "dispatcher prober" not in roles  # ping_interval = 0: no prober


def test_a_stopped_proxy_is_reported(capsys):
    px = proxy()
    try:
        code, out, err = ctl(px, "dispatcher", "dump", capsys=capsys)
        assert code == 3 and err.startswith("kampx is not running at ")
    finally:
        px.close()


def test_the_prober_stops_at_once_between_long_intervals():
    """A prober waiting out a long ping_interval still stops with the proxy (within the
    contract's 5 s, without being killed)."""
    px = proxy(ping_interval=60, ping_timeout_ms=400)
    with px:
        assert any("dispatcher prober" in t for t in px.children().values())
        time.sleep(0.5)  # its first round is done: it waits for the next
        started = time.monotonic()
        assert px.stop() == 0
        assert time.monotonic() - started < 3
        assert "did not stop in time" not in px.log_tail(200)
