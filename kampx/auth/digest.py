"""HTTP digest as SIP uses it (RFC 3261 22.4, RFC 2617, RFC 7616, RFC 8760): the math, the
credentials a client sends and the challenge value a server sends.

Everything here is pure: no clock, no database, no shared memory. kampx/auth/authenticator.py
puts it together with nonces (nonce.py) and the subscriber table (subscribers.py). The
per-request steps (the credentials picked and validated, MD5) are C, in _digest.pyx; this
module keeps the forms the rest of kampx and the tests use, and SHA-256.

Strings are hashed as UTF-8 with undecodable bytes kept (surrogateescape), which is exactly
the bytes the client put on the wire, since the SIP parser decodes that way.
"""

from __future__ import annotations

import hashlib
from hmac import compare_digest

from kampx._cparse import SipParseError, parse_auth_header
from kampx.auth._digest import (
    BASE_ALGORITHM,
    HEX_LEN,
    QOPS,
    Credentials,
    DigestError,
    credentials,
    md5_response,
)

__all__ = ["Credentials", "DigestError", "credentials", "HEX_LEN", "QOPS"]

# RFC 8760 names -> hash function; "-sess" variants use the same hash (RFC 7616 3.4.2)
HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def base_algorithm(algorithm: str) -> str:
    """'md5-sess' -> 'MD5'; DigestError for an algorithm kampx does not know."""
    try:
        return BASE_ALGORITHM[algorithm.upper()]
    except KeyError:
        raise DigestError(f"unsupported algorithm {algorithm!r}") from None


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def h(algorithm: str, data: str | bytes) -> str:
    """H(data) as lower-case hex, with the hash of `algorithm` (MD5, SHA-256, or -sess)."""
    fn = HASHES[base_algorithm(algorithm)]
    return fn(data if isinstance(data, bytes) else _b(data)).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """A1 hashed: H(username:realm:password) (what kampx stores instead of the password)."""
    return h(algorithm, f"{username}:{realm}:{password}")


def response(
    algorithm: str,
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest a client computes from HA1 (RFC 2617 3.2.2.1, RFC 7616 3.4.1;
    the RFC 2069 form without qop). -sess: HA1 becomes H(HA1:nonce:cnonce). MD5 is
    computed in C (kampx/auth/_digest.pyx), SHA-256 with hashlib."""
    base = base_algorithm(algorithm)
    sess = algorithm.upper().endswith("-SESS")
    if base == "MD5":
        return md5_response(ha1_hex, nonce, method, uri, qop, nc, cnonce, sess, body)
    fn = HASHES[base]
    if sess:
        ha1_hex = fn(_b(f"{ha1_hex}:{nonce}:{cnonce or ''}")).hexdigest()
    if qop == "auth-int":
        ha2 = fn(_b(f"{method}:{uri}:{fn(body).hexdigest()}")).hexdigest()
    else:
        ha2 = fn(_b(f"{method}:{uri}")).hexdigest()
    if qop:
        return fn(_b(f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")).hexdigest()
    return fn(_b(f"{ha1_hex}:{nonce}:{ha2}")).hexdigest()


def parse_credentials(value: str) -> tuple[str, dict[str, str]]:
    """(scheme, params) of a header value; DigestError when it does not parse."""
    try:
        return parse_auth_header(value)
    except SipParseError as e:
        raise DigestError(str(e)) from None


def verify(cred: Credentials, stored_ha1: str, method: str, body: bytes = b"") -> bool:
    """True when the client's response matches the one computed from the stored HA1.
    Compared in constant time; the cost is the same whatever the HA1 is, so a made-up HA1
    for an unknown user takes as long as a real one."""
    ha1_hex = stored_ha1.lower()
    if cred.base_algorithm == "MD5":  # straight to the C (the credentials say which form)
        expected = md5_response(
            ha1_hex, cred.nonce, method, cred.uri, cred.qop, cred.nc, cred.cnonce, cred.sess, body
        )
    else:
        expected = response(
            cred.algorithm,
            ha1_hex,
            cred.nonce,
            method,
            cred.uri,
            cred.qop,
            cred.nc,
            cred.cnonce,
            body,
        )
    return compare_digest(expected, cred.response)


def _quote(text: str) -> str:
    if '"' in text or "\\" in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def challenge(
    realm: str,
    nonce: str,
    algorithm: str | None = None,
    qop: str | None = None,
    stale: bool = False,
    opaque: str | None = None,
) -> str:
    """A WWW-Authenticate / Proxy-Authenticate value, parameters in Kamailio's order:
    `Digest realm="R", nonce="N"[, opaque="O"][, qop="auth"][, stale=true][, algorithm=A]`."""
    value = f"Digest realm={_quote(realm)}, nonce={_quote(nonce)}"
    if opaque is not None or qop or stale or algorithm:  # a plain challenge is the common one
        if opaque is not None:
            value += f", opaque={_quote(opaque)}"
        if qop:
            value += f", qop={_quote(qop)}"
        if stale:
            value += ", stale=true"
        if algorithm:
            value += f", algorithm={algorithm}"
    return value
