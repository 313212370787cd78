"""The test client itself: parser, digest answers (published test vectors) and the UAS.
These need no proxy; if they fail, every wire verdict is suspect."""
from __future__ import annotations

import time

import pytest

import sipclient as sc

LO = "127.0.0.1"


def test_parse_request_with_compact_and_folded_headers():
    raw = (b"INVITE sip:bob@example.test SIP/2.0\r\n"
           b"v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa, SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKb\r\n"
           b"Via: SIP/2.0/UDP 127.0.0.3;branch=z9hG4bKc\r\n"
           b"f: \"A, B\" <sip:a@example.test>;tag=1\r\n"
           b"t: <sip:bob@example.test>\r\n"
           b"i: abc@x\r\nCSeq: 7 INVITE\r\nSubject: first\r\n second\r\n"
           b"m: <sip:a@127.0.0.1:5070>\r\nl: 4\r\n\r\nbody")
    m = sc.parse(raw, ("127.0.0.1", 5070))
    assert (m.method, m.uri) == ("INVITE", "sip:bob@example.test")
    assert m.vias == ["SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa",
                      "SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKb", "SIP/2.0/UDP 127.0.0.3;branch=z9hG4bKc"]
    assert m.branch == "z9hG4bKa"
    assert m.from_tag == "1" and m.to_tag is None
    assert m.call_id == "abc@x" and m.cseq == (7, "INVITE")
    assert m.get("SUBJECT") == "first second"
    assert m.get("content-length") == "4" and m.body == b"body"
    assert m.names()[:3] == ["via", "via", "from"]
    assert sc.uri_of(m.get("from")) == "sip:a@example.test"


def test_parse_response_and_rejects_garbage():
    m = sc.parse(b"SIP/2.0 500 Service Unavailable\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\r\n")
    assert (m.status, m.reason) == (500, "Service Unavailable")
    for bad in (b"", b"hello", b"SIP/2.0 abc\r\n\r\n", b"INVITE sip:x SIP/3.0\r\n\r\n"):
        with pytest.raises(sc.ParseError):
            sc.parse(bad)


def test_split_commas_respects_quotes_and_brackets():
    assert sc.split_commas('"a, b" <sip:x;p=1,2>;q=1, <sip:y>') == ['"a, b" <sip:x;p=1,2>;q=1', "<sip:y>"]
    assert sc.header_params('<sip:a@b;x=1>;tag=9;lr') == {"tag": "9", "lr": None}
    assert sc.uri_host_port("sip:u@127.1.2.3:5070;transport=udp") == ("127.1.2.3", 5070)
    assert sc.uri_host_port("sip:127.1.2.3;lr") == ("127.1.2.3", None)


def test_request_builder_content_length():
    c = sc.Request("MESSAGE", "sip:a@b", [("Via", "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1")], body="hello")
    assert c.encode().endswith(b"Content-Length: 5\r\n\r\nhello")
    c.set_content_length(99)
    assert b"Content-Length: 99\r\n" in c.encode()
    c.set_content_length(None)
    assert b"Content-Length" not in c.encode()


# RFC 2617 3.5 and RFC 7616 3.9.1 published examples
@pytest.mark.parametrize("alg, password, realm, nonce, cnonce, expected", [
    ("MD5", "Circle Of Life", "testrealm@host.com", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "0a4f113b",
     "6629fae49393a05397450978507c4ef1"),
    ("MD5", "Circle of Life", "http-auth@example.org", "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
     "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "Circle of Life", "http-auth@example.org", "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
     "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_digest_published_vectors(alg, password, realm, nonce, cnonce, expected):
    v = sc.digest_response(username="Mufasa", password=password, realm=realm, nonce=nonce,
                           method="GET", uri="/dir/index.html", algorithm=alg, qop="auth", nc=1,
                           cnonce=cnonce)
    assert f'response="{expected}"' in v
    assert "nc=00000001" in v and "qop=auth" in v


def test_digest_without_qop_and_with_stored_ha1():
    stored = sc.ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    a = sc.digest_response(username="Mufasa", password="Circle Of Life", realm="testrealm@host.com",
                           nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", method="GET", uri="/dir/index.html")
    b = sc.digest_response(username="Mufasa", ha1_hex=stored, realm="testrealm@host.com",
                           nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", method="GET", uri="/dir/index.html")
    assert a == b and 'response="670fd8c2df070c60b045671b8b24ff02"' in a and "qop" not in a


def test_pick_challenge_prefers_listed_algorithm():
    r = sc.parse(b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n"
                 b'WWW-Authenticate: Digest realm="r", nonce="n1", algorithm=SHA-256, qop="auth"\r\n'
                 b'WWW-Authenticate: Digest realm="r", nonce="n2"\r\n\r\n')
    assert sc.pick_challenge(r, ("SHA-256", "MD5"))["nonce"] == "n1"
    assert sc.pick_challenge(r, ("MD5",))["nonce"] == "n2"


@pytest.mark.timeout(20)
def test_uas_answers_absorbs_and_cancels():
    with sc.UAS(LO, 0, user="bob") as uas, sc.SipClient(LO, 0, proxy=(uas.ip, uas.port)) as c:
        inv = c.request("INVITE", uas.contact)
        c.send(inv)
        codes = [c.expect_response(inv).status for _ in range(3)]
        assert codes == [100, 180, 200]
        c.send(inv)                                   # retransmission: the 200 again
        assert c.expect_response(inv, timeout=0.3).status == 200
        assert len(uas.requests("INVITE")) == 2 and uas.behaviour.final == 200

        uas.behaviour.final = None                    # ring, then CANCEL
        inv2 = c.request("INVITE", uas.contact)
        c.send(inv2)
        assert c.expect_response(inv2, status=180)
        cancel = sc.cancel_for(inv2)
        c.send(cancel)
        assert c.expect_response(cancel).status == 200
        final = c.expect_response(inv2, skip_provisional=True)
        assert (final.status, final.reason) == (487, "Request Terminated")


@pytest.mark.timeout(20)
def test_uas_misbehaviours():
    with sc.UAS(LO, 0, behaviour=sc.Behaviour(silent=True)) as uas, sc.SipClient(LO, 0, proxy=(uas.ip, uas.port)) as c:
        inv = c.request("INVITE", uas.contact)
        c.send(inv)
        assert c.response(inv, 0.4) is None
        uas.behaviour = sc.Behaviour(drop_first_200=True, send_100=False, send_180=False)
        inv = c.request("INVITE", uas.contact)
        t0 = time.monotonic()
        c.send(inv)
        ok = c.expect_response(inv, status=200)
        assert time.monotonic() - t0 >= sc.T1 * 0.8
        uas.behaviour = sc.Behaviour(final=503, delay=0.3)
        inv = c.request("INVITE", uas.contact)
        t0 = time.monotonic()
        c.send(inv)
        final = c.final(inv)
        assert final.status == 503 and time.monotonic() - t0 >= 0.25
        c.send(sc.ack_for(inv, final))
        assert uas.expect("ACK").branch == inv.branch
