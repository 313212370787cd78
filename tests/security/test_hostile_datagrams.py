"""Issue 10 item 1: no datagram can take a worker down. Each attack of the report is sent to
a real proxy; the workers must be the same processes afterwards and keepalives answered."""
from __future__ import annotations

import socket
import time

import pytest

from authkit import AuthProxy
from sipclient import SipClient


@pytest.fixture(scope="module")
def px():
    p = AuthProxy({"60001": "pw-60001"}).start()
    yield p
    p.close()


def _keepalive_ok(px) -> bool:
    with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
        req = c.request("OPTIONS", f"sip:{px.addr[0]}", contact=None)
        c.send(req)
        r = c.response(req, 1.0)
        return r is not None and r.status == 200


def _send_raw(px, payloads: list[bytes]) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((px.addrs.client, 0))
        for p in payloads:
            s.sendto(p, px.addr)
    finally:
        s.close()


def _broken_from(px, via_port: str, n: int) -> bytes:
    # From first: the parser stops at it, so the 400 salvage path reads the Via itself
    return (f"OPTIONS sip:{px.addr[0]} SIP/2.0\r\nFrom: <<<broken\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.1:{via_port};branch=z9hG4bKkill{n}\r\n"
            f"To: <sip:a@b>\r\nCall-ID: kill{n}\r\nCSeq: 1 OPTIONS\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize("port", ["99999", "-1", "65536", "0", "x"])
def test_impossible_via_port_in_a_broken_request(px, port):
    """The report's killer: a 400 'salvage' reply aimed at an impossible port raised
    OverflowError in sendto and the worker exited. Ten of them left no live worker."""
    workers = px.worker_pids()
    _send_raw(px, [_broken_from(px, port, i) for i in range(10)])
    time.sleep(0.3)
    assert _keepalive_ok(px)
    assert px.worker_pids() == workers, "a worker died and was respawned"
    assert "crashed" not in px.log_tail(200)


def test_broken_request_with_a_usable_via_still_gets_its_400(px):
    """The salvage path still answers what it can address (the control of the test above)."""
    with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
        port = c.sock.getsockname()[1]
        c.sock.sendto(_broken_from(px, str(port), 99).replace(b"192.0.2.1", px.addrs.client.encode()),
                      px.addr)
        r = c.recv(1.0)
    assert r is not None and r.status == 400


def test_bad_message_counter_counts_them(px):
    before = px.metric("kampx_core_bad_msg_hdr_total")
    _send_raw(px, [_broken_from(px, "99999", 1000 + i) for i in range(5)] + [b"", b"\x00" * 10])
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and px.metric("kampx_core_bad_msg_hdr_total") < before + 6:
        time.sleep(0.1)
    assert px.metric("kampx_core_bad_msg_hdr_total") >= before + 6


def test_a_request_sanity_drops_without_a_reply_is_counted(px):
    """A request with a Via but no From, To, Call-ID or CSeq cannot be answered (Kamailio's
    sanity drops it too); it must still show in a counter, as every malformed message does."""
    before = px.metric("kampx_core_err_requests_total")
    with SipClient(px.addrs.client, 0, proxy=px.addr) as c:
        port = c.sock.getsockname()[1]
        for missing in ("From", "To", "Call-ID", "CSeq"):
            headers = {
                "Via": f"SIP/2.0/UDP {px.addrs.client}:{port};branch=z9hG4bKnohdr{missing}",
                "From": "<sip:a@example.com>;tag=1",
                "To": "<sip:b@example.com>",
                "Call-ID": f"nohdr-{missing}",
                "CSeq": "1 INVITE",
            }
            del headers[missing]
            text = f"INVITE sip:b@{px.addr[0]} SIP/2.0\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers.items()) + "Content-Length: 0\r\n\r\n"
            c.sock.sendto(text.encode(), px.addr)
        assert c.recv(0.5) is None, "no reply can be addressed to a request without them"
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and px.metric("kampx_core_err_requests_total") < before + 4:
        time.sleep(0.1)
    assert px.metric("kampx_core_err_requests_total") == before + 4
    assert _keepalive_ok(px)
