"""allow_source_address() and friends on the wire: CIDRs, ports, tags, IPv6, and a reload of
the address table while requests flow."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from kampx import config as config_mod
from kampx.db import open_storage
from kampxproc import KampxProcess
from regkit import SCRIPT, new_user, register
from sipclient import Request, SipClient, new_branch, new_callid, new_tag, parse


def add_rows(px: KampxProcess, rows) -> None:
    with open_storage(config_mod.load(px.config_path)) as storage:
        for grp, ip, mask, port, tag in rows:
            storage.addresses.add(grp, ip, mask, port, tag)


def check(c: SipClient, px: KampxProcess, what: str, address: str | None = None):
    headers = [("X-Check", what)] + ([("X-Address", address)] if address else [])
    req = c.request("OPTIONS", f"sip:perm@{px.addrs.proxy}", headers=headers, contact=None)
    c.send(req)
    return c.final(req)


@pytest.fixture(scope="module")
def v6_port():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("::1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def perm_proxy(v6_port):
    """A proxy listening on IPv4 and on [::1], with its clients' rows in the database."""
    px = KampxProcess(script=SCRIPT, children=2)
    v4 = f'"udp:{px.addrs.proxy}:5060"'
    with open(px.config_path) as f:
        text = f.read()
    assert f"listen = [{v4}]" in text
    with open(px.config_path, "w") as f:
        f.write(text.replace(f"listen = [{v4}]", f'listen = [{v4}, "udp:[::1]:{v6_port}"]'))
    client = SipClient(px.addrs.client, 0, proxy=px.addr)
    fixed = SipClient(px.addrs.client, 0, proxy=px.addr)
    net = px.addrs.client.rsplit(".", 1)[0]
    add_rows(px, [
        (1, px.addrs.client, 32, 0, "phones"),
        (5, "127.0.0.0", 8, 0, "loopback"),
        (5, f"{net}.0", 24, 0, "net24"),
        (5, px.addrs.client, 32, fixed.port, "exact-port"),
        (6, px.addrs.client, 32, fixed.port, ""),
        (7, "10.0.0.0", 8, 5060, "ten-sip"),
        (8, "::1", 128, 0, "v6-host"),
        (9, "127.0.0.0", 8, 0, "v4-only"),
    ])
    px.start()
    px.client, px.fixed = client, fixed
    yield px
    client.close()
    fixed.close()
    px.close()


def test_group_match_with_tag(perm_proxy):
    r = check(perm_proxy.client, perm_proxy, "source 1")
    assert (r.status, r.reason) == (200, "Allowed tag=phones")
    r = check(perm_proxy.client, perm_proxy, "source 2")
    assert (r.status, r.reason) == (403, "Forbidden")


def test_longest_prefix_and_port_win(perm_proxy):
    px = perm_proxy
    # the /32 row with the exact port beats the /24 and the /8
    assert check(px.fixed, px, "source 5").reason == "Allowed tag=exact-port"
    # another port of the same IP: the /32 row does not apply, the /24 does
    assert check(px.client, px, "source 5").reason == "Allowed tag=net24"
    # a row without tag matches, and the script reads no tag
    assert check(px.fixed, px, "source 6").reason == "Allowed tag=None"
    assert check(px.client, px, "source 6").status == 403


def test_allow_address_checks_any_address_and_port(perm_proxy):
    px = perm_proxy
    assert check(px.client, px, "address 7", "10.20.30.40 5060").reason == "Allowed tag=ten-sip"
    assert check(px.client, px, "address 7", "10.20.30.40 5061").status == 403
    assert check(px.client, px, "address 7", "11.0.0.1 5060").status == 403
    assert check(px.client, px, "address 5", "127.200.0.9 9").reason == "Allowed tag=loopback"


def test_source_group_is_the_lowest_matching(perm_proxy):
    px = perm_proxy
    r = check(px.client, px, "group")
    assert (r.status, r.reason) == (200, "Group 1")
    with SipClient(px.addrs.phone, 0, proxy=px.addr) as other:     # only in 127/8 rows
        r = check(other, px, "group")
        assert (r.status, r.reason) == (200, "Group 5")


def _v6_check(px, port: int, what: str):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("::1", 0))
    s.settimeout(2.0)
    try:
        me = s.getsockname()[1]
        req = Request("OPTIONS", f"sip:perm@[::1]:{port}", [
            ("Via", f"SIP/2.0/UDP [::1]:{me};rport;branch={new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:v6@[::1]>;tag={new_tag()}"),
            ("To", f"<sip:perm@[::1]:{port}>"),
            ("Call-ID", new_callid("v6")),
            ("CSeq", "1 OPTIONS"),
            ("X-Check", what),
        ])
        s.sendto(req.encode(), ("::1", port))
        data, _ = s.recvfrom(65535)
        return parse(data)
    finally:
        s.close()


def test_ipv6_source(perm_proxy, v6_port):
    r = _v6_check(perm_proxy, v6_port, "source 8")
    assert (r.status, r.reason) == (200, "Allowed tag=v6-host")
    # an IPv6 source never matches an IPv4 row, not even 127.0.0.0/8
    assert _v6_check(perm_proxy, v6_port, "source 9").status == 403
    assert _v6_check(perm_proxy, v6_port, "group").reason == "Group 8"


def _kampxctl(px: KampxProcess, *args) -> subprocess.CompletedProcess:
    exe = shutil.which("kampxctl")
    cmd = [exe] if exe else [os.sys.executable, "-m", "kampx.cli.kampxctl"]
    return subprocess.run(cmd + ["--config", px.config_path, *args], capture_output=True,
                          text=True, timeout=20, env=px.env, cwd=px.workdir)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["kampxctl", "sighup"])
def test_reload_while_requests_flow(how):
    """A second client checks group 20 in a loop while the operator adds its address and
    reloads: every request is answered, the verdict turns from 403 to 200 once and stays."""
    px = KampxProcess(script=SCRIPT, children=2).start()
    answers, lost = [], []
    stop = threading.Event()

    def traffic():
        with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
            while not stop.is_set():
                req = c.request("OPTIONS", f"sip:perm@{px.addrs.proxy}",
                                headers=[("X-Check", "source 20")], contact=None)
                c.send(req)
                r = c.response(req, 2.0, skip_provisional=True)
                (answers.append(r.status) if r is not None else lost.append(req))
                time.sleep(0.005)
    t = threading.Thread(target=traffic)
    t.start()
    try:
        time.sleep(0.5)
        if how == "kampxctl":
            out = _kampxctl(px, "address", "add", "20", px.addrs.client, "32", "0", "late")
            assert out.returncode == 0, out.stderr
            out = _kampxctl(px, "address", "reload")
            assert out.returncode == 0, out.stderr
        else:
            add_rows(px, [(20, px.addrs.client, 32, 0, "late")])
            os.kill(px.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (not answers or answers[-1] != 200):
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        t.join(10)
        px.close()
    assert lost == [], f"{len(lost)} requests unanswered during the reload"
    assert answers and answers[0] == 403 and answers[-1] == 200, answers[-10:]
    first_ok = answers.index(200)
    assert set(answers[first_ok:]) == {200}, "a reader saw the old table after the new one"
    assert set(answers[:first_ok]) == {403}
    assert len(answers) > 50


def test_registered_function(perm_proxy):
    px = perm_proxy
    user = new_user()
    with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
        req = c.request("OPTIONS", f"sip:perm@{px.addrs.proxy}", to_uri=f"sip:{user}@kampx.test",
                        headers=[("X-Check", "registered")], contact=None)
        assert c.transact(req).status == 403
        register(c, px, user)
        req = c.request("OPTIONS", f"sip:perm@{px.addrs.proxy}", to_uri=f"sip:{user}@kampx.test",
                        headers=[("X-Check", "registered")], contact=None)
        assert c.transact(req).status == 200

