"""Where replies go and how the proxy stamps the Via (RFC 3261 18.2.2, RFC 3581), as
Kamailio does it. Not a numbered contract item, but every reply depends on it."""
from __future__ import annotations

from sipclient import SipClient


def _options(c: SipClient, target, via: str):
    req = c.request("OPTIONS", f"sip:{target.addrs.proxy}", contact=None, via=via)
    c.send(req)
    return req


def test_rport_reply_goes_to_source_port(client, target, make_client):
    elsewhere = make_client()
    req = _options(client, target, f"SIP/2.0/UDP {client.ip}:{elsewhere.port};rport;branch=z9hG4bKrp{client.port}")
    r = client.expect_response(req)
    assert r.get("via") == (f"SIP/2.0/UDP {client.ip}:{elsewhere.port};rport={client.port};"
                            f"branch=z9hG4bKrp{client.port};received={client.ip}")
    assert elsewhere.quiet(0.3) == []


def test_no_rport_reply_goes_to_via_port(client, target, make_client):
    elsewhere = make_client()
    branch = f"z9hG4bKnorp{client.port}"
    req = _options(client, target, f"SIP/2.0/UDP {client.ip}:{elsewhere.port};branch={branch}")
    r = elsewhere.expect_response(req)
    assert r.get("via") == f"SIP/2.0/UDP {client.ip}:{elsewhere.port};branch={branch}", \
        "received is only added when the sent-by host differs from the source"
    assert client.quiet(0.3) == []


def test_received_added_when_host_differs(client, target):
    branch = f"z9hG4bKrecv{client.port}"
    # the Via names another of this run's addresses; the reply must still come to the source
    req = _options(client, target, f"SIP/2.0/UDP {target.addrs.phone}:{client.port};branch={branch}")
    r = client.expect_response(req)
    assert r.get("via") == f"SIP/2.0/UDP {target.addrs.phone}:{client.port};branch={branch};received={client.ip}"
