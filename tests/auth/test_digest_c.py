"""The digest check's C (kampx/auth/_digest.pyx) held to references outside it: MD5 against
hashlib, the request-digest against the RFC 2617 formula built with hashlib, the nonce text
decoder against the base64 module, keyed BLAKE2s (the nonces' MAC) against hashlib, and pick()
against find_params + credentials()."""
from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kampx.auth import _digest as C
from kampx.auth import digest as d


@pytest.mark.parametrize("n", [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000])
def test_md5_at_the_block_and_padding_edges(n):
    data = bytes(range(256)) * 4
    assert C.md5_hexdigest(data[:n]) == hashlib.md5(data[:n]).hexdigest()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_md5_of_any_bytes_is_hashlibs(data):
    assert C.md5_hexdigest(data) == hashlib.md5(data).hexdigest()


def test_md5_of_text_is_of_its_utf8_with_surrogates_kept():
    for text in ("", "abc", "j\u00f6rg", "\u0416", "\U0001f600", "bad\udcff"):
        assert C.md5_hexdigest(text) == hashlib.md5(
            text.encode("utf-8", "surrogateescape")).hexdigest()


def _reference(ha1, nonce, method, uri, qop, nc, cnonce, sess, body):
    """RFC 2617 3.2.2.1 with hashlib, written out."""
    def md5(s):
        return hashlib.md5(s if isinstance(s, bytes) else s.encode("utf-8", "surrogateescape")
                           ).hexdigest()
    if sess:
        ha1 = md5(f"{ha1}:{nonce}:{cnonce or ''}")
    ha2 = md5(f"{method}:{uri}:{md5(body)}" if qop == "auth-int" else f"{method}:{uri}")
    if qop:
        return md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return md5(f"{ha1}:{nonce}:{ha2}")


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)


@settings(max_examples=300, deadline=None)
@given(ha1=st.text(alphabet="0123456789abcdef", min_size=32, max_size=32) | _text,
       nonce=_text, uri=_text, qop=st.sampled_from([None, "auth", "auth-int"]),
       nc=st.text(alphabet="0123456789abcdef", min_size=8, max_size=8), cnonce=_text,
       sess=st.booleans(), body=st.binary(max_size=200))
def test_md5_response_is_the_rfc_formula(ha1, nonce, uri, qop, nc, cnonce, sess, body):
    got = C.md5_response(ha1, nonce, "INVITE", uri, qop, nc, cnonce, sess, body)
    assert got == _reference(ha1, nonce, "INVITE", uri, qop, nc, cnonce, sess, body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_b64url_encode_writes_what_base64_writes(raw):
    assert C.b64url_encode(raw) == base64.urlsafe_b64encode(raw).decode().rstrip("=")


@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=1, max_size=32), size=st.integers(1, 32),
       data=st.binary(min_size=1, max_size=64))
def test_keyed_blake2s_is_hashlibs(key, size, data):
    assert C.MacKey(key, size).mac(data) == hashlib.blake2s(data, key=key, digest_size=size).digest()


@pytest.mark.parametrize("n", [1, 17, 55, 56, 63, 64])
def test_keyed_blake2s_at_the_block_edges(n):
    key = bytes(range(32))
    data = bytes(range(100, 164))[:n]
    assert C.MacKey(key, 16).mac(data) == hashlib.blake2s(data, key=key, digest_size=16).digest()


def test_keyed_blake2s_refuses_what_it_cannot_mac():
    for key, size in ((b"", 16), (b"k" * 33, 16), (b"k", 0), (b"k", 33)):
        with pytest.raises(ValueError):
            C.MacKey(key, size)
    for data in (b"", b"x" * 65):
        with pytest.raises(ValueError):
            C.MacKey(b"k", 16).mac(data)
    with pytest.raises(ValueError):  # a nonce's MAC is 16 bytes
        C.seal_nonce(C.MacKey(b"k" * 16, 32), 1, 0, 0, 0)


def test_a_sealed_nonce_is_its_fields_and_their_blake2s_mac():
    key = bytes(range(7, 39))
    text = C.seal_nonce(C.MacKey(key, 16), 1, 0x0102030405060708, 0xA0B0C0D0, 7)
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    body = bytes([1]) + (0x0102030405060708).to_bytes(8, "big") + (0xA0B0C0D0).to_bytes(4, "big") \
        + (7).to_bytes(4, "big")
    assert raw == body + hashlib.blake2s(body, key=key, digest_size=16).digest()
    assert C.open_nonce(text, C.MacKey(key, 16)) == (1, 0x0102030405060708, 0xA0B0C0D0, 7)
    assert C.open_nonce(text, C.MacKey(key[:-1] + b"\0", 16)) is None  # another key
    flipped = text[:30] + ("A" if text[30] != "A" else "B") + text[31:]
    assert C.open_nonce(flipped, C.MacKey(key, 16)) is None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_b64url_decode_reads_what_base64_writes(raw):
    text = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert C.b64url_decode(text) == raw


@pytest.mark.parametrize("text", [
    "A",             # a length no encoding has
    "AB",            # bits left over past the last byte: another spelling of "AA"
    "AA==",          # padding
    "A+",            # the standard alphabet
    "A/",
    "A\u00e9",       # not ASCII
    "A A",
])
def test_b64url_decode_refuses_every_other_spelling(text):
    assert C.b64url_decode(text) is None


VALID = ('Digest username="alice", realm="kampx.test", nonce="n", uri="sip:kampx.test", '
         'response="' + "ab" * 16 + '"')


@pytest.mark.parametrize("values,expected", [
    ([], None),
    (['Digest realm="other", username="a"'], None),                 # another realm
    (['Basic realm="kampx.test"'], None),                           # another scheme
    (['Digest username="unterminated'], C.DigestError),             # only unparseable
    (['Digest username="unterminated', VALID], C.Credentials),     # the next one is good
    (['Digest realm="KAMPX.test", nonce="n"', VALID], C.DigestError),  # first for the realm
    ([VALID.replace('"' + "ab" * 16 + '"', "xyz")], C.DigestError),   # malformed response
])
def test_pick_is_find_params_then_credentials(values, expected):
    got = C.pick(values, "Kampx.Test")
    if expected is None:
        assert got is None
    else:
        assert isinstance(got, expected)
    # the two-step form it replaces gives the same answer
    found = C.find_params(values, "Kampx.Test")
    if isinstance(found, dict):
        try:
            two_step = d.credentials(found)
        except d.DigestError as e:
            two_step = e
    else:
        two_step = found
    assert type(got) is type(two_step)


def test_picked_credentials_carry_the_fields():
    c = C.pick([VALID.replace("ab" * 16, "AB" * 16) + ", qop=AUTH, nc=0000000A, cnonce=c, "
                "algorithm=md5-sess, opaque=o"], "kampx.test")
    assert (c.username, c.realm, c.nonce, c.uri) == ("alice", "kampx.test", "n", "sip:kampx.test")
    assert (c.response, c.algorithm, c.base_algorithm, c.sess) == ("ab" * 16, "MD5-SESS", "MD5",
                                                                   True)
    assert (c.qop, c.nc, c.nc_value, c.cnonce, c.opaque, c.user) == ("auth", "0000000A", 10, "c",
                                                                     "o", "alice")


def test_md5_response_formats_missing_fields_as_the_python_form_and_refuses_none_text():
    # qop without nc/cnonce (credentials() never lets it through; digest.response() may be
    # called so): hashed as the f-string form hashes them, like the SHA-256 path
    got = C.md5_response("a" * 32, "n", "INVITE", "sip:x", "auth", None, None, False, b"")
    assert got == _reference("a" * 32, "n", "INVITE", "sip:x", "auth", None, None, False, b"")
    # a missing nonce, method, URI or body is a TypeError, never read as a string
    args = dict(ha1_hex="a" * 32, nonce="n", method="INVITE", uri="sip:x", qop="auth-int",
                nc="00000001", cnonce="c", sess=False, body=b"")
    for name in ("ha1_hex", "nonce", "method", "uri", "body"):
        with pytest.raises(TypeError):
            C.md5_response(**{**args, name: None})
