"""SIP requests for tests, written out in full, and the digest answer to a challenge.

`build_request` writes a request the way a phone would send it over UDP (Via with rport
naming the source, Max-Forwards 70, Content-Length), with every identifier passed in, so the
harness can make them deterministic. `digest_authorization` answers a 401/407 challenge with
kampx's own digest code (kampx.auth.digest), as a client would: qop=auth when offered.
"""

from __future__ import annotations

from collections.abc import Iterable

from kampx.auth import digest

CNONCE = "0a4f113b"  # fixed: the harness is deterministic, and nonce counts guard replays


def build_request(
    method: str,
    ruri: str,
    *,
    src: tuple[str, int],
    from_uri: str,
    to_uri: str,
    call_id: str,
    from_tag: str,
    branch: str,
    cseq: int = 1,
    to_tag: str | None = None,
    contact: str | None = None,
    headers: Iterable[str] = (),
    body: bytes = b"",
    max_forwards: int | None = 70,
) -> bytes:
    """The request as bytes. `headers` are extra "Name: value" lines, after the standard
    ones; a body without a Content-Type header in `headers` is sent as application/sdp."""
    host, port = src
    sent_by = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    to = f"<{to_uri}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {sent_by};rport;branch={branch}",
    ]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines += [
        f"From: <{from_uri}>;tag={from_tag}",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    extra = list(headers)
    lines += extra
    if body and not any(h.lower().startswith("content-type:") for h in extra):
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def digest_authorization(
    challenge: str, username: str, password: str, method: str, uri: str, nc: int = 1
) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge` (a
    WWW-Authenticate / Proxy-Authenticate value) for `method` on `uri`."""
    _scheme, params = digest.parse_credentials(challenge)
    realm, nonce = params["realm"], params["nonce"]
    algorithm = params.get("algorithm") or "MD5"
    offered = [q.strip() for q in (params.get("qop") or "").split(",")]
    qop = "auth" if "auth" in offered else None
    nc_text = f"{nc:08x}" if qop else None
    cnonce = CNONCE if qop else None
    key = digest.ha1(username, realm, password, algorithm)
    answer = digest.response(algorithm, key, nonce, method, uri, qop, nc_text, cnonce)
    parts = [
        f'Digest username="{username}"',
        f'realm="{realm}"',
        f'nonce="{nonce}"',
        f'uri="{uri}"',
        f'response="{answer}"',
        f"algorithm={algorithm}",
    ]
    if "opaque" in params:
        parts.append(f'opaque="{params["opaque"]}"')
    if qop:
        parts += [f"qop={qop}", f"nc={nc_text}", f'cnonce="{cnonce}"']
    return ", ".join(parts)
