"""sanity_check's C fast path (Message.sanity_clean): it may only ever say "passes" for a
request the Python checks (kampx/sanity.py) pass; the usual request takes it."""

from pathlib import Path

import pytest

from kampx._cparse import SipParseError, parse
from kampx.sanity import run_checks

TORTURE = Path(__file__).resolve().parent / "data" / "sip-torture"


class PythonOnly:
    """The message with the fast path turned off: the Python checks decide alone."""

    def __init__(self, msg):
        self._m = msg

    def __getattr__(self, name):
        return getattr(self._m, name)

    def sanity_clean(self):
        return False


def request(first="INVITE sip:bob@example.com SIP/2.0", cseq="1 INVITE", extra="",
            frm="<sip:alice@example.com>;tag=a", to="<sip:bob@example.com>", body="",
            clen=None, trailing=""):
    clen = len(body) if clen is None else clen
    return (f"{first}\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: {frm}\r\n"
            f"To: {to}\r\nCall-ID: c1\r\nCSeq: {cseq}\r\nMax-Forwards: 70\r\n{extra}"
            f"Content-Length: {clen}\r\n\r\n{body}{trailing}").encode()


VARIANTS = {
    "usual": request(),
    "SIPS upper": request(first="INVITE SIPS:bob@example.com SIP/2.0"),
    "tel": request(first="INVITE tel:+15551234 SIP/2.0", to="<tel:+15551234>"),
    "tels": request(first="INVITE tels:+15551234 SIP/2.0"),
    "http ruri": request(first="INVITE http://example.com/ SIP/2.0"),
    "im ruri": request(first="MESSAGE im:bob@example.com SIP/2.0", cseq="1 MESSAGE"),
    "cseq mismatch": request(cseq="1 BYE"),
    "cseq case": request(cseq="1 invite"),
    "expires": request(extra="Expires: 60\r\n"),
    "bad expires": request(extra="Expires: soon\r\n"),
    "empty expires": request(extra="Expires: \r\n"),
    "expires 2^32-1": request(extra="Expires: 4294967295\r\n"),
    "expires 2^32": request(extra="Expires: 4294967296\r\n"),
    "expires 11 digits": request(extra="Expires: 00000000060\r\n"),
    "expires negative": request(extra="Expires: -1\r\n"),
    "expires folded": request(extra="Expires: 6\r\n 0\r\n"),
    "expires twice": request(extra="Expires: 60\r\nExpires: soon\r\n"),
    "trailing bytes": request(body="v=0\r\n", trailing="xx"),
    "short body": request(body="v=0\r\n", clen=3),
    "from im": request(frm="<im:alice@example.com>;tag=a"),
    "to bare tel": request(to="tel:+1555"),
    "proxy-require": request(extra="Proxy-Require: foo\r\n"),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_fast_pass_implies_python_pass(name):
    try:
        msg = parse(VARIANTS[name])
    except SipParseError:
        pytest.skip("the parser refuses it before sanity")
    slow = run_checks(PythonOnly(msg))
    if msg.sanity_clean():
        assert slow is None, (name, slow)
    assert run_checks(msg) == slow  # with or without the fast path, the same verdict


def test_the_usual_requests_take_the_fast_path():
    for name in ("usual", "SIPS upper", "tel", "trailing bytes"):
        if name == "trailing bytes":
            assert not parse(VARIANTS[name]).sanity_clean()
        else:
            assert parse(VARIANTS[name]).sanity_clean(), name
    assert parse(VARIANTS["expires"]).sanity_clean()  # a plain Expires number is decided in C
    assert parse(VARIANTS["expires 2^32-1"]).sanity_clean()
    for name in ("bad expires", "empty expires", "expires 2^32", "expires 11 digits"):
        assert not parse(VARIANTS[name]).sanity_clean(), name  # the Python checks decide
    assert run_checks(parse(VARIANTS["cseq mismatch"])) == (
        400, "CSeq method does not match request method")


def test_torture_corpus_same_verdict_with_and_without_the_fast_path():
    seen = 0
    for path in sorted(TORTURE.rglob("*.dat")):
        try:
            msg = parse(path.read_bytes())
        except SipParseError:
            continue
        if not msg.is_request:
            continue
        seen += 1
        slow = run_checks(PythonOnly(msg))
        if msg.sanity_clean():
            assert slow is None, path.name
        assert run_checks(msg) == slow, path.name
    assert seen >= 20
