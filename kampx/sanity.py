"""Request sanity checks (Kamailio's sanity module).

`sanity_check(msg, msg_checks, uri_checks)` runs the checks selected by the two bit masks,
in Kamailio's order, and on the first failure answers statelessly with Kamailio's code and
reason phrase (no reply to an ACK). The built-in script uses Kamailio's default
sanity_check("1511", "7"): request-line version, Request-URI scheme, required headers, CSeq
method and number, Content-Length, Expires, and the Request-URI, From and To URIs.
"""

from __future__ import annotations

from kampx._cparse import SipParseError, parse_uri

SIP_VERSION = 1
RURI_SCHEME = 2
REQUIRED_HEADERS = 4
VIA_SIP_VERSION = 8  # never fails in Kamailio either: the Via parser enforces it
VIA_PROTOCOL = 16  # likewise
CSEQ_METHOD = 32
CSEQ_VALUE = 64
CONTENT_LENGTH = 128
EXPIRES_VALUE = 256
PROXY_REQUIRE = 512
PARSE_URIS = 1024
DIGEST = 2048
DUPTAGS = 4096

URI_RURI = 1
URI_FROM = 2
URI_TO = 4
URI_CONTACT = 8

DEFAULT_MSG_CHECKS = 1511
DEFAULT_URI_CHECKS = 7

_SUPPORTED_SCHEMES = ("sip", "sips", "tel", "tels")


_FAST_SCHEMES = ("sip:", "sips:", "tel:")


def _bad_uri(text) -> bool:
    """Not a URI Kamailio's parser takes (sip, sips, tel, tels). The parser has already
    checked the syntax of the Request-URI, From and To URIs: for the usual schemes the
    prefix is all that is left to look at."""
    if text is None:
        return True
    if text[:5].lower().startswith(_FAST_SCHEMES):
        return False
    try:
        u = parse_uri(text)
    except SipParseError:
        return True
    return u.scheme not in _SUPPORTED_SCHEMES


def _check_uint(text: str) -> bool:
    text = text.strip()
    return text.isdigit() and len(text) <= 10 and int(text) <= 0xFFFFFFFF


def run_checks(msg, msg_checks: int = DEFAULT_MSG_CHECKS, uri_checks: int = DEFAULT_URI_CHECKS):
    """None when the request passes, else (code, reason) of the first failed check; code 0
    means "drop without a reply"."""
    if msg_checks == DEFAULT_MSG_CHECKS and uri_checks == DEFAULT_URI_CHECKS and msg.sanity_clean():
        return None  # the common case, decided in C on the parsed offsets
    if msg_checks & SIP_VERSION and msg.version != "SIP/2.0":
        return 505, "Version Not Supported (R-URI)"
    if msg_checks & RURI_SCHEME and _bad_uri(msg.original_ruri):
        return 400, "Bad Request URI"
    if msg_checks & REQUIRED_HEADERS:
        if msg.call_id is None or msg.from_ is None or msg.to is None or msg.cseq is None:
            # Kamailio cannot build a reply without them either: the request is dropped
            return 0, "Missing Required Header in Request"
    if msg_checks & CSEQ_METHOD and msg.cseq is not None:
        if not msg.cseq_method:
            return 400, "Missing method in CSeq header"
        if msg.cseq_method != msg.method:
            return 400, "CSeq method does not match request method"
    # CSeq number range is enforced by the parser with Kamailio's reason
    if msg_checks & CONTENT_LENGTH and msg.content_length is not None:
        # Kamailio compares with the whole datagram: extra octets fail too
        if len(msg.buf) - (len(msg.raw) - msg.content_length) != msg.content_length:
            return 400, "Content-Length mis-match"
    if msg_checks & EXPIRES_VALUE:
        v = msg.header("expires")
        if v is not None:
            if not v.strip():
                return 400, "Bad Expires Header"
            if not _check_uint(v):
                return 400, "Expires value is illegal"
    if msg_checks & PROXY_REQUIRE and msg.has_header("proxy-require"):
        # kampx supports no extension that a proxy must understand
        return 420, "Bad Extension"
    if msg_checks & PARSE_URIS:
        if uri_checks & URI_RURI and _bad_uri(msg.original_ruri):
            return 400, "Bad Request URI"
        if uri_checks & URI_FROM:
            if msg.from_ is None:
                return 400, "Missing From Header"
            if _bad_uri(msg.from_uri):
                return 400, "Bad From URI"
        if uri_checks & URI_TO:
            if msg.to is None:
                return 400, "Missing To Header"
            if _bad_uri(msg.to_uri):
                return 400, "Bad To URI"
        if uri_checks & URI_CONTACT and not msg.contact_star:
            try:
                contacts = msg.contacts
            except SipParseError:
                return 400, "Bad Contact Header"
            if contacts and _bad_uri(contacts[0].uri):
                return 400, "Bad Contact URI"
    if msg_checks & DUPTAGS:
        for h in ("from", "to"):
            v = msg.header(h)
            if v is not None and v.lower().count(";tag=") > 1:
                return 400, "Duplicate tag"
    return None
