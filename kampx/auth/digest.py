"""HTTP digest as SIP uses it (RFC 3261 22.4, RFC 2617, RFC 7616, RFC 8760): the math, the
credentials a client sends and the challenge value a server sends.

Everything here is pure: no clock, no database, no shared memory. kampx/auth/authenticator.py
puts it together with nonces (nonce.py) and the subscriber table (subscribers.py).

Strings are hashed as UTF-8 with undecodable bytes kept (surrogateescape), which is exactly
the bytes the client put on the wire, since the SIP parser decodes that way.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import NamedTuple

from kampx._cparse import SipParseError, parse_auth_header

# RFC 8760 names -> hash function; "-sess" variants use the same hash (RFC 7616 3.4.2)
HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
HEX_LEN = {"MD5": 32, "SHA-256": 64}
QOPS = ("auth", "auth-int")

_HEX8 = re.compile(r"[0-9a-fA-F]{8}\Z")


class DigestError(ValueError):
    """Credentials that cannot be checked (missing or malformed fields)."""


_BASE = {"MD5": "MD5", "MD5-SESS": "MD5", "SHA-256": "SHA-256", "SHA-256-SESS": "SHA-256"}
_LOWER_HEX = re.compile(r"[0-9a-f]+\Z")


def base_algorithm(algorithm: str) -> str:
    """'md5-sess' -> 'MD5'; DigestError for an algorithm kampx does not know."""
    try:
        return _BASE[algorithm.upper()]
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
    the RFC 2069 form without qop). -sess: HA1 becomes H(HA1:nonce:cnonce)."""
    fn = HASHES[base_algorithm(algorithm)]
    if algorithm.upper().endswith("-SESS"):
        ha1_hex = fn(_b(f"{ha1_hex}:{nonce}:{cnonce or ''}")).hexdigest()
    if qop == "auth-int":
        ha2 = fn(_b(f"{method}:{uri}:{fn(body).hexdigest()}")).hexdigest()
    else:
        ha2 = fn(_b(f"{method}:{uri}")).hexdigest()
    if qop:
        return fn(_b(f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")).hexdigest()
    return fn(_b(f"{ha1_hex}:{nonce}:{ha2}")).hexdigest()


class Credentials(NamedTuple):
    """One Authorization / Proxy-Authorization header, checked for completeness."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str  # lower-case hex
    algorithm: str  # as the client named it, upper-case ("MD5" when absent)
    qop: str | None  # "auth" / "auth-int" / None (RFC 2069)
    nc: str | None  # 8 hex digits with qop
    cnonce: str | None
    opaque: str | None

    @property
    def base_algorithm(self) -> str:
        return base_algorithm(self.algorithm)

    @property
    def nc_value(self) -> int:
        return int(self.nc, 16) if self.nc else 0

    @property
    def user(self) -> str:
        """The user part of the username ('alice' for 'alice@example.org')."""
        return self.username.partition("@")[0]


def parse_credentials(value: str) -> tuple[str, dict[str, str]]:
    """(scheme, params) of a header value; DigestError when it does not parse."""
    try:
        return parse_auth_header(value)
    except SipParseError as e:
        raise DigestError(str(e)) from None


_REQUIRED = ("username", "realm", "nonce", "uri", "response")


def credentials(params: dict[str, str]) -> Credentials:
    """Digest parameters (lower-case names) -> Credentials, or DigestError naming what is
    missing or malformed. Only what verification needs is checked here; the nonce's own
    validity is nonce.py's business."""
    get = params.get
    username, realm, nonce = get("username"), get("realm"), get("nonce")
    uri, resp = get("uri"), get("response")
    if not (username and realm and nonce and uri and resp):
        raise DigestError(f"missing {', '.join(k for k in _REQUIRED if not get(k))}")
    algorithm = (get("algorithm") or "MD5").upper()
    base = base_algorithm(algorithm)
    resp = resp.lower()
    if len(resp) != HEX_LEN[base] or not _LOWER_HEX.match(resp):
        raise DigestError("malformed response")
    qop = get("qop")
    nc = None
    cnonce = get("cnonce")
    if qop is not None:
        qop = qop.lower()
        if qop not in QOPS:
            raise DigestError(f"unsupported qop {qop!r}")
        nc = get("nc")
        if not nc or not _HEX8.match(nc) or not cnonce:
            raise DigestError("qop without a valid nc and cnonce")
    elif not cnonce and algorithm.endswith("-SESS"):
        raise DigestError("-sess algorithm without cnonce")
    return Credentials(username, realm, nonce, uri, resp, algorithm, qop, nc, cnonce, get("opaque"))


def verify(cred: Credentials, stored_ha1: str, method: str, body: bytes = b"") -> bool:
    """True when the client's response matches the one computed from the stored HA1.
    Compared in constant time; the cost is the same whatever the HA1 is, so a made-up HA1
    for an unknown user takes as long as a real one."""
    expected = response(
        cred.algorithm,
        stored_ha1.lower(),
        cred.nonce,
        method,
        cred.uri,
        cred.qop,
        cred.nc,
        cred.cnonce,
        body,
    )
    return hmac.compare_digest(expected, cred.response)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


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
    parts = [f"Digest realm={_quote(realm)}", f"nonce={_quote(nonce)}"]
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    if qop:
        parts.append(f"qop={_quote(qop)}")
    if stale:
        parts.append("stale=true")
    if algorithm:
        parts.append(f"algorithm={algorithm}")
    return ", ".join(parts)
