"""The digest math and formats of kampx/auth/digest.py: RFC 2617 and RFC 7616 test vectors,
RFC 2069 responses, -sess and auth-int, credentials parsing, challenge values."""
from __future__ import annotations

import hashlib

import pytest

from kampx.auth import digest as d

# RFC 2617 section 3.5
RFC2617 = dict(username="Mufasa", realm="testrealm@host.com", password="Circle Of Life",
               nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", method="GET",
               qop="auth", nc="00000001", cnonce="0a4f113b",
               response="6629fae49393a05397450978507c4ef1")

# RFC 7616 section 3.9.1
RFC7616 = dict(username="Mufasa", realm="http-auth@example.org", password="Circle of Life",
               nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", uri="/dir/index.html",
               method="GET", qop="auth", nc="00000001",
               cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
RFC7616_RESPONSES = {"MD5": "8ca523f5e9506fed4657c9700eebdbec",
                     "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"}


def test_rfc2617_vector():
    v = RFC2617
    ha1 = d.ha1(v["username"], v["realm"], v["password"])
    assert ha1 == hashlib.md5(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()
    assert d.response("MD5", ha1, v["nonce"], v["method"], v["uri"], v["qop"], v["nc"],
                      v["cnonce"]) == v["response"]


@pytest.mark.parametrize("alg", ["MD5", "SHA-256"])
def test_rfc7616_vectors(alg):
    v = RFC7616
    ha1 = d.ha1(v["username"], v["realm"], v["password"], alg)
    assert d.response(alg, ha1, v["nonce"], v["method"], v["uri"], v["qop"], v["nc"],
                      v["cnonce"]) == RFC7616_RESPONSES[alg]


def test_rfc2069_response_is_h_of_ha1_nonce_ha2():
    ha1 = hashlib.md5(b"alice:kampx.test:pw").hexdigest()
    ha2 = hashlib.md5(b"REGISTER:sip:kampx.test").hexdigest()
    expected = hashlib.md5(f"{ha1}:abc:{ha2}".encode()).hexdigest()
    assert d.response("MD5", ha1, "abc", "REGISTER", "sip:kampx.test") == expected


def test_sess_and_auth_int():
    ha1 = d.ha1("u", "r", "p", "SHA-256")
    sess = hashlib.sha256(f"{ha1}:n:c".encode()).hexdigest()
    body = b"v=0\r\n"
    ha2 = hashlib.sha256(b"INVITE:sip:x:" + hashlib.sha256(body).hexdigest().encode()).hexdigest()
    expected = hashlib.sha256(f"{sess}:n:00000002:c:auth-int:{ha2}".encode()).hexdigest()
    assert d.response("SHA-256-sess", ha1, "n", "INVITE", "sip:x", "auth-int", "00000002", "c",
                      body) == expected


def test_non_ascii_is_hashed_as_utf8():
    assert d.ha1("jörg", "r", "pässword") == hashlib.md5("jörg:r:pässword".encode()).hexdigest()


def _params(**kw):
    base = {"username": "alice", "realm": "kampx.test", "nonce": "n", "uri": "sip:kampx.test",
            "response": "0" * 32}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def test_credentials_defaults_and_fields():
    c = d.credentials(_params(response="A" * 32))
    assert (c.algorithm, c.qop, c.nc, c.response) == ("MD5", None, None, "a" * 32)
    c = d.credentials(_params(qop="auth", nc="0000000a", cnonce="x", username="bob@example.org"))
    assert (c.qop, c.nc_value, c.user) == ("auth", 10, "bob")


@pytest.mark.parametrize("bad", [
    dict(username=None), dict(nonce=None), dict(uri=None), dict(response=None), dict(realm=None),
    dict(response="0" * 31), dict(response="g" * 32), dict(algorithm="SHA-512"),
    dict(algorithm="SHA-256"),                     # a 32-digit response is too short for it
    dict(qop="auth"), dict(qop="auth", nc="1", cnonce="x"), dict(qop="auth", nc="00000001"),
    dict(qop="auth-conf", nc="00000001", cnonce="x"), dict(algorithm="MD5-sess"),
])
def test_credentials_rejects(bad):
    with pytest.raises(d.DigestError):
        d.credentials(_params(**bad))


def test_parse_credentials_header():
    scheme, params = d.parse_credentials(
        'Digest username="alice", realm="kampx.test", nonce="abc", uri="sip:kampx.test", '
        'response="' + "1" * 32 + '", algorithm=MD5, qop=auth, nc=00000001, cnonce="xyz"')
    assert scheme == "Digest"
    c = d.credentials(params)
    assert (c.username, c.qop, c.cnonce) == ("alice", "auth", "xyz")
    with pytest.raises(d.DigestError):
        d.parse_credentials('Digest username="unterminated')


def test_verify_accepts_the_right_password_only():
    ha1 = d.ha1("alice", "kampx.test", "pw")
    resp = d.response("MD5", ha1, "nonce1", "REGISTER", "sip:kampx.test")
    c = d.credentials(_params(nonce="nonce1", response=resp))
    assert d.verify(c, ha1, "REGISTER")
    assert d.verify(c, ha1.upper(), "REGISTER")            # stored HA1 case does not matter
    assert not d.verify(c, d.ha1("alice", "kampx.test", "pw2"), "REGISTER")
    assert not d.verify(c, ha1, "INVITE")                   # the method is in HA2


def test_challenge_values():
    assert d.challenge("kampx.test", "abc") == 'Digest realm="kampx.test", nonce="abc"'
    assert d.challenge("r", "n", "SHA-256", "auth", stale=True) == \
        'Digest realm="r", nonce="n", qop="auth", stale=true, algorithm=SHA-256'
    assert d.challenge('a"b\\c', "n") == 'Digest realm="a\\"b\\\\c", nonce="n"'
