"""The script's pseudo-variables read from the request (kampx/routing/core.py): $fU, $fd,
$tU, $rU, $rd, held to what the parsed URIs say."""
from __future__ import annotations

import pytest

from kampx._cparse import parse
from kampx.routing import core
from kampx.routing.context import ctx


def _request(from_value: str, to_value: str, ruri: str = "sip:bob@kampx.test"):
    return parse((f"INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKrc\r\n"
                  f"From: {from_value};tag=1\r\nTo: {to_value}\r\nCall-ID: rc\r\n"
                  "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode())


@pytest.mark.parametrize("from_value, to_value", [
    ('"Alice" <sip:alice@Example.ORG:5070;transport=udp>', "<sip:bob@kampx.test>"),
    ("<sip:al%69ce@example.org>", "sip:Bob@kampx.test"),          # escapes kept, as Kamailio
    ("<sip:example.org>", "<sip:kampx.test>"),                     # no user
    ("<sips:carol@[2001:db8::1]>", "<tel:+4930123>"),
    ("<sip:@example.org>", "<urn:service:sos>"),                   # empty user, no host part
])
def test_from_and_to_parts_are_the_parsed_uris(from_value, to_value):
    m = _request(from_value, to_value)
    ctx.msg = m
    try:
        f, t = m.from_.parsed_uri, m.to.parsed_uri
        assert (core.from_user(), core.from_domain(), core.to_user()) == (f.user, f.host, t.user)
        assert (core.ruri_user(), core.ruri_host()) == ("bob", "kampx.test")
    finally:
        ctx.msg = None
