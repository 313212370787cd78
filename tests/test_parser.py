"""Unit tests of the SIP parser API (kampx/_cparse.pyx, typed in kampx/_cparse.pyi)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kampx import _cparse as cp
from kampx._cparse import (SipParseError, auth_fields, build_reply, header_id_of, parse, parse_auth_header,
                           parse_name_addr, parse_uri, split_commas, unescape)


def make(*headers: str, start: str = "INVITE sip:bob@example.com SIP/2.0", body: bytes = b"",
         content_length: bool = True) -> bytes:
    lines = [start, *headers]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


BASIC = (
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1;rport",
    "Max-Forwards: 70",
    "From: \"Alice\" <sip:alice@example.com>;tag=f1",
    "To: <sip:bob@example.com>",
    "Call-ID: c1@192.0.2.1",
    "CSeq: 1 INVITE",
    "Contact: <sip:alice@192.0.2.1:5060>",
)


def basic(*extra: str, **kw) -> cp.Message:
    return parse(make(*BASIC, *extra, **kw))


# -- start line ----------------------------------------------------------------------------------------

def test_request_line():
    m = basic()
    assert m.is_request and m.method == "INVITE" and m.method_id == cp.METHOD_IDS["INVITE"]
    assert m.ruri == m.original_ruri == "sip:bob@example.com"
    assert m.version == "SIP/2.0" and m.reason is None and m.status == 0
    assert m.ruri_scheme_kind == 1


@pytest.mark.parametrize("method", ["ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO",
                                    "UPDATE", "PRACK", "SUBSCRIBE", "NOTIFY", "MESSAGE",
                                    "REFER", "PUBLISH"])
def test_known_methods_have_ids(method):
    m = parse(make(start=f"{method} sip:x@example.com SIP/2.0"))
    assert m.method == method and cp.METHOD_NAMES[m.method_id] == method


def test_method_is_case_sensitive():
    m = parse(make(start="invite sip:x@example.com SIP/2.0"))
    assert m.method == "invite" and m.method_id == 0


def test_status_line():
    m = parse(make(*BASIC[1:6], start="SIP/2.0 486 Busy Here"))
    assert not m.is_request and m.status == 486 and m.reason == "Busy Here"
    assert m.method == "INVITE"          # a reply's method is its CSeq's
    assert m.ruri is None and m.uri is None


@pytest.mark.parametrize("line", [
    "SIP/2.0 99 Too Low", "SIP/2.0 700 Too High", "SIP/2.0 2000 OK", "SIP/2.0 20 OK",
    "SIP/2.0 abc OK", "SIP/2.0  200 OK", "INVITE sip:x@y", "INVITE sip:x@y HTTP/1.1",
    "INVITE  SIP/2.0", " INVITE sip:x@y SIP/2.0", "IN<VITE sip:x@y SIP/2.0",
    "INVITE <sip:x@y> SIP/2.0", "INVITE sip:x@y?Route=a SIP/2.0", "INVITE sip:x@[::1 SIP/2.0",
])
def test_bad_start_lines(line):
    with pytest.raises(SipParseError) as e:
        parse(make(start=line))
    assert e.value.reason


def test_empty_and_oversized_datagrams():
    with pytest.raises(SipParseError, match="Empty"):
        parse(b"")
    with pytest.raises(SipParseError, match="too large"):
        parse(make("X-Pad: " + "a" * 70000))
    with pytest.raises(SipParseError):
        parse(b"INVITE sip:x@y SIP/2.0")            # no line end at all


# -- header names and lookup ------------------------------------------------------------------------------

COMPACT = {"i": "Call-ID", "m": "Contact", "f": "From", "t": "To", "v": "Via",
           "l": "Content-Length", "c": "Content-Type", "k": "Supported", "s": "Subject",
           "e": "Content-Encoding", "o": "Event", "r": "Refer-To", "u": "Allow-Events",
           "x": "Session-Expires", "y": "Identity", "b": "Referred-By"}
VALUES = {"Call-ID": "cid@h", "Contact": "<sip:c@h>", "From": "<sip:f@h>;tag=1",
          "To": "<sip:t@h>", "Via": "SIP/2.0/UDP h;branch=z9hG4bKc", "Content-Length": "0",
          "Content-Type": "text/plain", "Supported": "path", "Subject": "hi",
          "Content-Encoding": "gzip", "Event": "presence", "Refer-To": "<sip:r@h>",
          "Allow-Events": "talk", "Session-Expires": "1800", "Identity": "abc",
          "Referred-By": "<sip:b@h>"}


@pytest.mark.parametrize("short, full", sorted(COMPACT.items()))
def test_compact_names(short, full):
    value = VALUES[full]
    compact = parse(make(f"{short}: {value}", start="MESSAGE sip:x@h SIP/2.0",
                         content_length=False))
    long_ = parse(make(f"{full}: {value}", start="MESSAGE sip:x@h SIP/2.0", content_length=False))
    for m in (compact, long_):
        assert m.header(short) == m.header(full) == m.header(full.upper()) == value
        assert m.header_count(short) == m.header_count(full) == 1
        assert m.has_header(short) and m.has_header(full.lower())
    assert header_id_of(short) == header_id_of(full) == header_id_of(full.swapcase()) != 0
    assert compact.headers == [(short, value)] and long_.headers == [(full, value)]


def test_case_insensitive_lookup_of_known_and_unknown_headers():
    m = basic("X-Custom-Thing: one", "x-custom-thing: two", "X-CUSTOM-THING: three")
    assert m.header("call-id") == m.header("CALL-ID") == m.header("Call-Id") == "c1@192.0.2.1"
    assert m.header("x-Custom-THING") == "one"
    assert m.header_all("X-CUSTOM-thing") == ["one", "two", "three"]
    assert m.header_count("x-custom-thing") == 3 and m.header_count("x-other") == 0
    assert m.header("x-other") is None and not m.has_header("x-other")
    assert m.header_all("x-other") == [] and m.header_values("x-other") == []
    assert header_id_of("X-Custom-Thing") == 0


def test_non_ascii_lookup_names_match_nothing():
    # 'K' KELVIN SIGN lower-cases to 'k' (Supported's compact form): not a header name
    m = basic("Supported: path")
    assert header_id_of("\u212a") == 0
    assert m.header("\u212a") is None and m.header("k") == "path"


def test_headers_iteration_order_and_len():
    m = basic("X-A: 1")
    names = [n for n, _ in m]
    assert names == ["Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Contact", "X-A",
                     "Content-Length"]
    assert len(m) == 9 and m.headers == list(m)


def test_header_lines_raw_bytes():
    m = parse(b"OPTIONS sip:x@h SIP/2.0\r\nSubject: a\r\n b\r\nsubject:c\r\n\r\n")
    assert m.header_lines("s") == [b"Subject: a\r\n b\r\n", b"subject:c\r\n"]
    assert m.header_all("subject") == ["a b", "c"]


def test_header_value_whitespace_and_folding():
    m = parse(b"OPTIONS sip:x@h SIP/2.0\r\nX-A:   spaced  out   \r\nX-B:\r\n\tfolded\r\n"
              b"X-C: a\tb\r\nX-D: one,\r\n    two\r\nX-E:\r\n\r\n")
    assert m.header("x-a") == "spaced  out"          # inner runs kept, ends trimmed
    assert m.header("x-b") == "folded"
    assert m.header("x-c") == "a\tb"
    assert m.header("x-d") == "one, two"             # a fold reads as one SP
    assert m.header("x-e") == ""


def test_folded_value_keeps_non_fold_whitespace():
    """Only line folds collapse; other octets (NBSP, control characters) survive."""
    m = parse("OPTIONS sip:x@h SIP/2.0\r\nX-A: a\u00a0b\x1cc\r\n d\r\n\r\n".encode())
    assert m.header("x-a") == "a\u00a0b\x1cc d"


@pytest.mark.parametrize("bad", [
    b"OPTIONS sip:x@h SIP/2.0\r\n folded-first: x\r\n\r\n",
    b"OPTIONS sip:x@h SIP/2.0\r\nNo colon here\r\n\r\n",
    b"OPTIONS sip:x@h SIP/2.0\r\n: no name\r\n\r\n",
    b"OPTIONS sip:x@h SIP/2.0\r\nBad<name>: x\r\n\r\n",
])
def test_bad_header_lines(bad):
    with pytest.raises(SipParseError):
        parse(bad)


def test_too_many_headers():
    many = [f"X-H{i}: {i}" for i in range(1100)]
    with pytest.raises(SipParseError, match="Too many headers"):
        parse(make(*many, start="OPTIONS sip:x@h SIP/2.0"))
    ok = parse(make(*many[:1000], start="OPTIONS sip:x@h SIP/2.0"))
    assert len(ok) == 1001 and ok.header("x-h999") == "999"


def test_bare_lf_line_ends():
    m = parse(b"OPTIONS sip:x@h SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nCall-ID: c\n"
              b"Subject: a\n  b\nContent-Length: 2\n\nhi")
    assert m.branch == "z9hG4bK1" and m.call_id == "c" and m.header("subject") == "a b"
    assert m.body == b"hi"


# -- header_values / split_commas --------------------------------------------------------------------------

def test_header_values_splits_across_lines_and_commas():
    m = basic("Supported: path, timer", "Supported: 100rel,gruu ,, outbound")
    assert m.header_values("supported") == ["path", "timer", "100rel", "gruu", "outbound"]
    assert m.header_values("k") == m.header_values("Supported")


def test_split_commas_respects_quotes_and_brackets():
    assert split_commas('"Doe, John" <sip:j@h>, <sip:a@h;x=1,2>') == [
        '"Doe, John" <sip:j@h>', "<sip:a@h;x=1,2>"]
    assert split_commas(r'"a \", b" <sip:x@h>, c') == [r'"a \", b" <sip:x@h>', "c"]
    assert split_commas("<sip:a@h?x=1,2>,<sip:b@h>") == ["<sip:a@h?x=1,2>", "<sip:b@h>"]
    assert split_commas(" , ,") == [] and split_commas("one") == ["one"]


def test_header_values_of_contacts_with_commas_inside():
    m = basic('Contact: "Doe, J" <sip:j@h>;q=0.5, <sip:k@h>')
    assert m.header_values("contact") == ["<sip:alice@192.0.2.1:5060>", '"Doe, J" <sip:j@h>;q=0.5',
                                          "<sip:k@h>"]
    assert [c.display for c in m.contacts] == ["", '"Doe, J"', ""]


# -- Via ------------------------------------------------------------------------------------------------------

def via_of(value: str) -> cp.Via:
    return parse(make(f"Via: {value}", start="OPTIONS sip:x@h SIP/2.0")).top_via


def test_via_fields():
    v = via_of("SIP/2.0/udp 192.0.2.1:5062;branch=z9hG4bKx;received=198.51.100.1;rport=5070"
               ";maddr=239.1.1.1;ttl=16;Custom=Val;flag")
    assert (v.protocol, v.version, v.transport) == ("SIP/2.0", "2.0", "UDP")
    assert (v.host, v.port, v.sent_by) == ("192.0.2.1", 5062, "192.0.2.1:5062")
    assert v.branch == "z9hG4bKx" and v.received == "198.51.100.1"
    assert v.rport == 5070 and v.maddr == "239.1.1.1" and v.ttl == 16
    assert v.params == {"branch": "z9hG4bKx", "received": "198.51.100.1", "rport": "5070",
                        "maddr": "239.1.1.1", "ttl": "16", "custom": "Val", "flag": None}


def test_via_rport_flag_absent_and_valued():
    assert via_of("SIP/2.0/UDP h;branch=z9hG4bK1;rport").rport == 0
    assert via_of("SIP/2.0/UDP h;branch=z9hG4bK1").rport is None
    assert via_of("SIP/2.0/UDP h;rport=1;branch=z9hG4bK1").rport == 1
    assert via_of("SIP/2.0/UDP h;branch=z9hG4bK1").ttl is None
    assert via_of('SIP/2.0/UDP h;ttl="1"').ttl is None       # a ttl is a number, not a string
    with pytest.raises(SipParseError):
        via_of("SIP/2.0/UDP h;rport=abc")


def test_via_hosts():
    assert via_of("SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bK1").sent_by == "[2001:db8::1]:5061"
    assert via_of("SIP/2.0/TCP proxy.example.com").host == "proxy.example.com"
    assert via_of("SIP / 2.0 / UDP h : 5060 ; branch = z9hG4bK1").port == 5060


def test_via_several_values_and_lines():
    m = parse(make("Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b:5070;branch=z9hG4bK2",
                   "v: SIP/2.0/TLS c;branch=z9hG4bK3", start="OPTIONS sip:x@h SIP/2.0"))
    assert [(v.host, v.transport, v.branch) for v in m.via] == [
        ("a", "UDP", "z9hG4bK1"), ("b", "TCP", "z9hG4bK2"), ("c", "TLS", "z9hG4bK3")]
    assert m.branch == "z9hG4bK1" and m.top_via.raw == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert m.header_count("via") == 2


@pytest.mark.parametrize("value", [
    "", "SIP/2.0/UDP", "SIP/2.0 h", "SIP/2.0/UDP h;", "SIP/2.0/UDP h;;branch=z9hG4bK1",
    "SIP/2.0/UDP h,", "SIP/2.0/UDP h, ", "SIP/2.0/UDPh", "XIP/2.0/UDP h", "SIP/2.0/UDP h:",
    "SIP/2.0/UDP h:70000", "SIP/2.0/UDP [::1", "SIP/2.0/UDP h;branch",
    "SIP/2.0/UDP h;received", "SIP/2.0/UDP h;maddr", "SIP/2.0/UDP h junk",
])
def test_bad_vias(value):
    with pytest.raises(SipParseError, match="Via"):
        parse(make(f"Via: {value}", start="OPTIONS sip:x@h SIP/2.0"))


# -- URIs ------------------------------------------------------------------------------------------------------

def test_sip_uri_parts():
    u = parse_uri("sip:alice:secret@example.com:5070;transport=tcp;lr;Method=INVITE?subject=hi&x=y")
    assert (u.scheme, u.user, u.password, u.host, u.port) == (
        "sip", "alice", "secret", "example.com", 5070)
    assert u.params == {"transport": "tcp", "lr": None, "method": "INVITE"}
    assert u.params_raw == "transport=tcp;lr;Method=INVITE"
    assert u.headers == "subject=hi&x=y" and u.hostport == "example.com:5070"
    assert str(u) == u.raw == "sip:alice:secret@example.com:5070;transport=tcp;lr;Method=INVITE?subject=hi&x=y"


@pytest.mark.parametrize("uri, host, port", [
    ("sip:192.0.2.7", "192.0.2.7", 0), ("sip:u@192.0.2.7:5060", "192.0.2.7", 5060),
    ("sips:[2001:db8::7]", "[2001:db8::7]", 0), ("sip:[::1]:5080;lr", "[::1]", 5080),
    ("SIP:host-1.example.COM", "host-1.example.COM", 0),
])
def test_uri_hosts(uri, host, port):
    u = parse_uri(uri)
    assert (u.host, u.port) == (host, port) and u.scheme in ("sip", "sips")


def test_uri_user_escapes():
    u = parse_uri("sip:%61lice%20smith@h")
    assert u.user == "%61lice%20smith" and u.user_unescaped == "alice smith"
    assert unescape("100%") == "100%" and unescape("%4") == "%4" and unescape("%zz%41") == "%zzA"
    assert unescape("%e2%82%ac") == "\u20ac" and unescape("%ff") == "\udcff"   # bytes kept
    assert parse_uri("sip:h").user is None and parse_uri("sip:h").user_unescaped is None


def test_tel_and_opaque_uris():
    t = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (t.scheme, t.user, t.host, t.port) == ("tel", "+1-201-555-0123", "", 0)
    assert t.params == {"phone-context": "example.com"}
    o = parse_uri("urn:service:sos")
    assert (o.scheme, o.host, o.user, o.params) == ("urn", "service:sos", None, {})
    o = parse_uri(b"http://www.example.com/a;b?c")
    assert o.scheme == "http" and o.host == "//www.example.com/a;b?c"


@pytest.mark.parametrize("bad", [
    "", "sip", "sip:", "1sip:h", "sip:h:0", "sip:h:65536", "sip:h:abc", "sip:u@", "sip:[::1",
    "sip:ho st", "sip:h>", "sip:h\x00", "tel:", "tel:;x", "sip:u@h/x", "sip:h:",
])
def test_bad_uris(bad):
    with pytest.raises(SipParseError, match="Bad URI"):
        parse_uri(bad)


def test_ruri_view_after_rewrite():
    m = basic()
    assert m.uri.user == "bob" and m.uri is m.uri  # made once
    m.set_ruri("sip:carol@192.0.2.9:5080;transport=udp")
    assert m.ruri == "sip:carol@192.0.2.9:5080;transport=udp"
    assert m.original_ruri == "sip:bob@example.com"
    assert (m.uri.user, m.uri.host, m.uri.port) == ("carol", "192.0.2.9", 5080)
    m.set_ruri("sip:dave@192.0.2.10")  # each rewrite gets its own view
    assert (m.uri.user, m.uri.host, m.uri.port) == ("dave", "192.0.2.10", 0)
    m.reset_ruri()
    assert m.ruri == "sip:bob@example.com"
    assert (m.uri.user, m.uri.host) == ("bob", "example.com")


# -- name-addr / addr-spec -----------------------------------------------------------------------------------

def test_name_addr_and_addr_spec_params():
    a = parse_name_addr('"Alice \\"A\\" Smith" <sip:alice@h;transport=tcp>;tag=9;x=y')
    assert a.display == '"Alice \\"A\\" Smith"' and a.brackets
    assert a.uri == "sip:alice@h;transport=tcp" and a.tag == "9"
    assert a.params == {"tag": "9", "x": "y"}
    assert a.parsed_uri.params == {"transport": "tcp"}
    s = parse_name_addr("sip:alice@h;transport=tcp;tag=9")
    assert not s.brackets and s.display == ""
    assert s.uri == "sip:alice@h" and s.params == {"transport": "tcp", "tag": "9"}
    assert s.parsed_uri.params == {}
    t = parse_name_addr("Alice Smith <sip:a@h>")
    assert t.display == "Alice Smith" and t.uri == "sip:a@h" and t.tag is None


@pytest.mark.parametrize("bad", [
    '"unterminated <sip:a@h>', "<sip:a@h", "<>", "sip:a@h;", "<sip:a@h>;;tag=1", "<sip:a@h> junk",
    'Bell, Alexander <sip:a@h>', "< sip:a@h >", '"x" sip:a@h', "<sip:a@h>, <sip:b@h>",
    "<sip:a@h:0>", "",
])
def test_bad_name_addrs(bad):
    with pytest.raises(SipParseError):
        parse_name_addr(bad)


def test_from_to_views():
    m = parse(make('From: "A" <sip:a@h>;tag=abc', "To: sip:b@h", "Call-ID: c",
                   start="BYE sip:b@h SIP/2.0"))
    assert m.from_tag == "abc" and m.from_uri == "sip:a@h" and m.from_.display == '"A"'
    assert m.to_tag is None and not m.has_to_tag and m.to_uri == "sip:b@h"
    flag = parse(make("To: <sip:b@h>;tag", start="BYE sip:b@h SIP/2.0"))   # a generic-param
    assert flag.to_tag is None and flag.to.params == {"tag": None}


@pytest.mark.parametrize("header", ["From: <sip:a@h", "To: <sip:a@h>;tag=", "From: ",
                                    "To: <sip:a@h>, <sip:b@h>", "From: <bad uri>"])
def test_bad_from_to(header):
    with pytest.raises(SipParseError, match="From|To"):
        parse(make(header, start="OPTIONS sip:x@h SIP/2.0"))


def test_route_views_are_checked_when_read():
    m = basic("Route: <sip:p1@h;lr>, <sip:p2@h;lr>", "Route: <sip:p3@h;lr>",
              "Record-Route: <sip:rr@h;lr>", "Path: <sip:path@h;lr>")
    assert [r.uri for r in m.routes] == ["sip:p1@h;lr", "sip:p2@h;lr", "sip:p3@h;lr"]
    assert [r.uri for r in m.record_routes] == ["sip:rr@h;lr"]
    assert [r.uri for r in m.paths] == ["sip:path@h;lr"]
    bad = basic("Route: <sip:p1@h;lr>, garbage here")
    with pytest.raises(SipParseError, match="Route"):
        bad.routes


# -- CSeq, Max-Forwards, Expires, Contact ----------------------------------------------------------------------

def test_cseq():
    m = basic()
    assert m.cseq.number == 1 and m.cseq.method == "INVITE" and tuple(m.cseq) == (1, "INVITE")
    assert (m.cseq_num, m.cseq_method) == (1, "INVITE")
    m = parse(make("CSeq:\t4294967295   REGISTER", start="REGISTER sip:h SIP/2.0"))
    assert m.cseq_num == 2 ** 32 - 1 and m.cseq_method == "REGISTER"
    assert parse(make(start="OPTIONS sip:h SIP/2.0")).cseq is None


@pytest.mark.parametrize("value, reason", [
    ("4294967296 INVITE", "CSeq number is illegal"), ("INVITE", "CSeq number is illegal"),
    ("1", "Bad CSeq header"), ("1INVITE", "CSeq number is illegal"),
    ("1a MESSAGE", "CSeq number is illegal"), ("1 INVITE x", "Bad CSeq header"),
    ("-1 INVITE", "CSeq number is illegal"), ("1 IN<VITE", "Bad CSeq header"),
])
def test_bad_cseq(value, reason):
    with pytest.raises(SipParseError) as e:
        parse(make(f"CSeq: {value}", start="INVITE sip:h SIP/2.0"))
    assert e.value.reason == reason


@pytest.mark.parametrize("value, view, raw", [
    (None, None, -1), ("70", 70, 70), ("0", 0, 0), ("255", 255, 255), ("0070", 70, 70),
    ("256", 256, 256), ("65535", 65535, 65535), ("65536", -1, -2),
    ("99999999999999999999", -1, -2), ("abc", -1, -2), ("-1", -1, -2),
    ("", -1, -2), ("7 0", -1, -2),
])
def test_max_forwards(value, view, raw):
    headers = [] if value is None else [f"Max-Forwards: {value}"]
    m = parse(make(*headers, start="OPTIONS sip:h SIP/2.0"))
    assert m.max_forwards == view and m.max_forwards_value == raw


def test_max_forwards_first_line_counts():
    m = parse(make("Max-Forwards: 5", "Max-Forwards: abc", start="OPTIONS sip:h SIP/2.0"))
    assert m.max_forwards == 5 and m.header_count("max-forwards") == 2


@pytest.mark.parametrize("value, expect", [
    (None, None), ("3600", 3600), ("0", 0), (" 60 ", 60), ("4294967295", 2 ** 32 - 1),
    ("4294967296", -1), ("99999999999", -1), ("-5", -1), ("soon", -1), ("\u00b2", -1),
    ("\u0661\u0662", -1), ("", -1),
])
def test_expires_header(value, expect):
    headers = [] if value is None else [f"Expires: {value}"]
    assert parse(make(*headers, start="REGISTER sip:h SIP/2.0")).expires == expect


def test_contact_star_and_params():
    m = parse(make("Contact: *", "Expires: 0", start="REGISTER sip:h SIP/2.0"))
    assert m.contact_star == 1 and m.contacts == [] and m.expires == 0
    m = parse(make("Contact: <sip:a@h>;expires=60;q=0.7, sip:b@h;q=1.0",
                   "m: <sip:c@h>;expires=abc, <sip:d@h>;expires=\"5\"",
                   start="REGISTER sip:h SIP/2.0"))
    assert m.contact_star == 0
    assert [(c.uri, c.expires, c.q) for c in m.contacts] == [
        ("sip:a@h", 60, "0.7"), ("sip:b@h", None, "1.0"), ("sip:c@h", -1, None),
        ("sip:d@h", -1, None)]


@pytest.mark.parametrize("value", ["", "<sip:a@h>,", "<sip:a@h>, ", "<sip:a@h>;;x",
                                   "<sip:a@h>,,<sip:b@h>", "*, <sip:a@h>", "<sip:a@h> x"])
def test_bad_contacts(value):
    with pytest.raises(SipParseError, match="Contact"):
        parse(make(f"Contact: {value}", start="REGISTER sip:h SIP/2.0"))


# -- Authorization ---------------------------------------------------------------------------------------------

def test_digest_authorization():
    value = ('Digest username="alice", realm="example.com", nonce="abc,def",\r\n'
             ' uri="sip:bob@example.com", response="0123456789abcdef", algorithm=MD5,'
             ' qop=auth, nc=00000001, cnonce="x\\"y", opaque=""')
    m = basic(f"Authorization: {value}", "Proxy-Authorization: Digest username=\"bob\"")
    scheme, params = m.digest_credentials()
    assert scheme == "Digest"
    assert params == {"username": "alice", "realm": "example.com", "nonce": "abc,def",
                      "uri": "sip:bob@example.com", "response": "0123456789abcdef",
                      "algorithm": "MD5", "qop": "auth", "nc": "00000001", "cnonce": 'x"y',
                      "opaque": ""}
    assert m.digest_credentials("proxy-authorization") == ("Digest", {"username": "bob"})
    assert basic().digest_credentials() is None


def test_parse_auth_header_forms():
    assert parse_auth_header('Digest\tUserName = "a" ,Realm="r"') == (
        "Digest", {"username": "a", "realm": "r"})
    assert parse_auth_header("Digest") == ("Digest", {})
    assert parse_auth_header('Digest realm="r", nonce="n", stale=TRUE, algorithm=SHA-256') == (
        "Digest", {"realm": "r", "nonce": "n", "stale": "TRUE", "algorithm": "SHA-256"})


@pytest.mark.parametrize("bad", ['Digest username', 'Digest username="a', 'Digest =x',
                                 'Digest a="1" b', 'Digest ,=,'])
def test_bad_auth_headers(bad):
    with pytest.raises(SipParseError, match="credentials"):
        parse_auth_header(bad)


def _auth_header_reference(value: str):
    """The parameter grammar parse_auth_header keeps, written plainly: the model its typed
    scanner is checked against."""
    v = value.strip(" \t")
    sp = 0
    while sp < len(v) and v[sp] not in " \t":
        sp += 1
    scheme, rest = v[:sp], v[sp:]
    params, i, n = {}, 0, len(rest)
    while i < n:
        if rest[i] in " ,\t":
            i += 1
            continue
        j = i
        while j < n and rest[j] not in "= ,\t":
            j += 1
        name = rest[i:j].lower()
        while j < n and rest[j] in " \t":
            j += 1
        if not name or j >= n or rest[j] != "=":
            raise SipParseError("Bad credentials")
        j += 1
        while j < n and rest[j] in " \t":
            j += 1
        if j < n and rest[j] == '"':
            j, out = j + 1, []
            while j < n and rest[j] != '"':
                if rest[j] == "\\" and j + 1 < n:
                    j += 1
                out.append(rest[j])
                j += 1
            if j >= n:
                raise SipParseError("Bad credentials")
            val, j = "".join(out), j + 1
        else:
            k = j
            while j < n and rest[j] not in " ,\t":
                j += 1
            val = rest[k:j]
        params[name] = val
        i = j
    return scheme, params


def test_parse_auth_header_unescapes_quoted_values():
    assert parse_auth_header(r'Digest username="a\"b", realm="x\\y", nonce="", uri="\z"') == (
        "Digest", {"username": 'a"b', "realm": "x\\y", "nonce": "", "uri": "z"})
    assert parse_auth_header('Digest username="\u00e9l\u00e8ve", realm=r')[1] == {
        "username": "\u00e9l\u00e8ve", "realm": "r"}
    with pytest.raises(SipParseError):
        parse_auth_header('Digest username="a\\"')  # the escaped quote does not close it


# one, two and four bytes a character (PEP 393): the scanner has a variant for each
_AUTH_ALPHABET = 'DgA ,\t="\\ab\u00e9\u0416\U0001f600'
_WANTED = ("a", "ab", "dg", "ba", "gda")


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet=_AUTH_ALPHABET, max_size=40))
def test_parse_auth_header_matches_its_model(tail):
    value = "Digest " + tail
    try:
        expected = _auth_header_reference(value)
    except SipParseError:
        with pytest.raises(SipParseError):
            parse_auth_header(value)
        with pytest.raises(SipParseError):
            auth_fields(value, _WANTED)
        return
    assert parse_auth_header(value) == expected
    # the digest check's form: only the wanted names, the same values
    assert auth_fields(value, _WANTED) == (expected[0], [expected[1].get(n) for n in _WANTED])


def test_auth_fields_reads_names_in_any_case_and_keeps_the_last():
    assert auth_fields('Digest USERNAME="a", Realm=r, x="y", realm="s"', ("username", "realm",
                                                                          "nonce")) == (
        "Digest", ["a", "s", None])
    # names are lower-case ASCII: another one matches nothing; a name that is no string
    # is refused, not read as one
    assert auth_fields('Digest a=1, b=2', ("a", "b\u00e9", "b")) == ("Digest", ["1", None, "2"])
    with pytest.raises(TypeError):
        auth_fields("Digest a=1", (1,))


# -- framing: Content-Length ------------------------------------------------------------------------------------

def test_content_length_shorter_body_is_an_error():
    with pytest.raises(SipParseError) as e:
        parse(make(start="MESSAGE sip:h SIP/2.0", content_length=False).replace(
            b"\r\n\r\n", b"\r\nContent-Length: 10\r\n\r\nshort"))
    assert e.value.reason == "Content-Length mis-match"


def test_content_length_longer_datagram_is_truncated():
    data = make("Content-Length: 5", start="MESSAGE sip:h SIP/2.0", content_length=False) \
        + b"helloEXTRA BYTES"
    m = parse(data)
    assert m.content_length == 5 and m.body == b"hello"
    assert m.raw == data[:-len(b"EXTRA BYTES")] and m.serialize() == m.raw
    m.append_header("X-A", "1")
    assert m.serialize().endswith(b"X-A: 1\r\n\r\nhello")


def test_content_length_absent_body_runs_to_the_end():
    m = parse(make(start="MESSAGE sip:h SIP/2.0", content_length=False) + b"all\r\nof it")
    assert m.content_length is None and m.body == b"all\r\nof it"


@pytest.mark.parametrize("value, reason", [
    ("abc", "Bad Content-Length header"), ("", "Bad Content-Length header"),
    ("-1", "Bad Content-Length header"), ("1 0", "Bad Content-Length header"),
    ("99999999", "Content-Length mis-match"),
])
def test_bad_content_length(value, reason):
    with pytest.raises(SipParseError) as e:
        parse(make(f"Content-Length: {value}", start="MESSAGE sip:h SIP/2.0",
                   content_length=False))
    assert e.value.reason == reason


def test_content_length_repeated():
    ok = parse(make("l: 2", "Content-Length: 2", start="MESSAGE sip:h SIP/2.0",
                    content_length=False) + b"hi")
    assert ok.body == b"hi"
    with pytest.raises(SipParseError, match="mis-match"):
        parse(make("l: 2", "Content-Length: 3", start="MESSAGE sip:h SIP/2.0",
                   content_length=False) + b"hi!")


def test_binary_body_untouched():
    body = bytes(range(256)) * 3
    m = parse(make(*BASIC, start="MESSAGE sip:h SIP/2.0", body=body))
    assert m.body == body
    m.set_max_forwards(69)
    assert parse(m.serialize(via="SIP/2.0/UDP p;branch=z9hG4bKp")).body == body


def test_missing_empty_line_is_tolerated():
    m = parse(b"OPTIONS sip:x@h SIP/2.0\r\nCall-ID: c\r\nl: 0")
    assert m.call_id == "c" and m.body == b"" and m.content_length == 0


# -- serialization: the unedited message -----------------------------------------------------------------------

def test_unedited_message_serializes_to_the_same_object():
    data = make(*BASIC, body=b"v=0\r\n")
    m = parse(data)
    assert m.buf is data and m.raw is data and m.serialize() is data
    assert not m.edited
    # reading views is not an edit
    m.via, m.contacts, m.from_, m.headers, m.top_via_with_stamp()
    assert m.serialize() is data


def test_bytes_like_input():
    data = make(*BASIC)
    assert parse(bytearray(data)).headers == parse(memoryview(data)).headers == parse(data).headers


# -- edits ----------------------------------------------------------------------------------------------------------

def reparse(m, **kw):
    return parse(m.serialize(**kw))


def test_set_ruri():
    m = basic()
    m.set_ruri("sip:carol@192.0.2.9")
    out = m.serialize()
    assert out.startswith(b"INVITE sip:carol@192.0.2.9 SIP/2.0\r\n") and m.edited
    assert parse(out).headers == m.headers
    m.set_ruri(b"sip:dave@192.0.2.10")           # the last rewrite wins
    assert reparse(m).ruri == "sip:dave@192.0.2.10"
    for bad in ("", "sip:a b", "sip:a\r\nX: y", "sip:a\tb"):
        with pytest.raises(ValueError):
            m.set_ruri(bad)
    with pytest.raises(TypeError):
        m.set_ruri(5)
    reply = parse(make(*BASIC[:6], start="SIP/2.0 200 OK"))
    with pytest.raises(ValueError, match="not a request"):
        reply.set_ruri("sip:x@h")


def test_add_top_via_params_fills_rport_in_place():
    """Kamailio's forms (docs/testing.md): a relayed request gets received right after
    sent-by and rport filled in place; a reply built here gets rport filled in place and
    received at the end."""
    m = basic()
    m.add_top_via_params(";received=198.51.100.7;rport=5099")
    r = reparse(m)
    assert r.via[0].raw == "SIP/2.0/UDP 192.0.2.1:5060;received=198.51.100.7;branch=z9hG4bKa1;rport=5099"
    assert r.top_via.rport == 5099 and r.top_via.received == "198.51.100.7"
    assert m.top_via_with_stamp() == \
        b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1;rport=5099;received=198.51.100.7"
    # a later stamp replaces the earlier one; an empty one removes it
    m.add_top_via_params(";received=198.51.100.8")
    assert reparse(m).via[0].raw == "SIP/2.0/UDP 192.0.2.1:5060;received=198.51.100.8;branch=z9hG4bKa1;rport"
    assert m.top_via_with_stamp() == b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1;rport;received=198.51.100.8"
    m.add_top_via_params("")
    assert reparse(m).via[0].raw == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1;rport"
    assert m.top_via_with_stamp() == b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1;rport"


def test_add_top_via_params_rport_valued_flag_absent_and_multi_value_via():
    m = parse(make("Via: SIP/2.0/UDP a;rport;branch=z9hG4bK1 , SIP/2.0/UDP b;branch=z9hG4bK2",
                   start="OPTIONS sip:x@h SIP/2.0"))
    m.add_top_via_params(";received=192.0.2.9;rport=7")
    r = reparse(m)
    assert [v.raw for v in r.via] == ["SIP/2.0/UDP a;received=192.0.2.9;rport=7;branch=z9hG4bK1",
                                      "SIP/2.0/UDP b;branch=z9hG4bK2"]
    v = parse(make("Via: SIP/2.0/UDP [2001:db8::1]:5070 ; rport = 1 ;branch=z9hG4bK1",
                   start="OPTIONS sip:x@h SIP/2.0"))
    v.add_top_via_params(";received=2001:db8::9;rport=5071")
    assert reparse(v).via[0].raw == \
        "SIP/2.0/UDP [2001:db8::1]:5070;received=2001:db8::9 ;rport=5071 ;branch=z9hG4bK1"
    n = parse(make("Via: SIP/2.0/UDP a;branch=z9hG4bK1", start="OPTIONS sip:x@h SIP/2.0"))
    n.add_top_via_params(";received=192.0.2.9;rport=7;x=y")     # no rport in the Via: appended
    assert reparse(n).via[0].raw == "SIP/2.0/UDP a;received=192.0.2.9;branch=z9hG4bK1;rport=7;x=y"
    assert n.top_via_with_stamp() == b"SIP/2.0/UDP a;branch=z9hG4bK1;received=192.0.2.9;rport=7;x=y"


def test_add_top_via_params_checks_its_input():
    m = basic()
    for bad in ("received=1.2.3.4", ";a=1\r\nX: y", ";a=1, SIP/2.0/UDP evil"):
        with pytest.raises(ValueError):
            m.add_top_via_params(bad)
    with pytest.raises(ValueError, match="no Via"):
        parse(make(start="OPTIONS sip:x@h SIP/2.0")).add_top_via_params(";rport=1")


def test_record_route_per_branch():
    """record_route() puts ours first in every serialisation; serialize(rr=...) writes other
    lines in its place for one branch (the double Record-Route of a branch that leaves by
    another socket), the message itself unchanged."""
    m = basic("Record-Route: <sip:old@h;lr>")
    m.record_route("<sip:proxy@h;lr>")
    assert m.rr_added and m.rr_line == b"Record-Route: <sip:proxy@h;lr>\r\n"
    one = parse(m.serialize(via="SIP/2.0/UDP p;branch=z9hG4bK1"))
    assert one.header_all("record-route") == ["<sip:proxy@h;lr>", "<sip:old@h;lr>"]
    two = parse(
        m.serialize(
            via="SIP/2.0/UDP p;branch=z9hG4bK2",
            rr=b"Record-Route: <sip:out@h;r2=on;lr>\r\nRecord-Route: <sip:in@h;r2=on;lr>\r\n",
        )
    )
    assert two.header_all("record-route") == [
        "<sip:out@h;r2=on;lr>",
        "<sip:in@h;r2=on;lr>",
        "<sip:old@h;lr>",
    ]
    assert parse(m.serialize()).header_all("record-route")[0] == "<sip:proxy@h;lr>"
    with pytest.raises(ValueError):
        basic().record_route("<sip:a@h;lr>\r\nX-Evil: 1")
    with pytest.raises(TypeError):
        m.serialize(rr="Record-Route: <sip:str@h>\r\n")  # lines of the proxy's own: bytes


def test_insert_header_top_and_before_via():
    m = basic("Record-Route: <sip:old@h;lr>")
    m.insert_header("Record-Route", "<sip:proxy@h;lr>")
    m.insert_header("X-Before-Via", "1", before_via=True)
    r = reparse(m)
    assert [n for n, _ in r.headers][:3] == ["Record-Route", "X-Before-Via", "Via"]
    assert r.header_all("record-route") == ["<sip:proxy@h;lr>", "<sip:old@h;lr>"]
    m2 = parse(make("X-First: 1", *BASIC, start="OPTIONS sip:x@h SIP/2.0"))
    m2.insert_header("X-Top", "t")
    m2.insert_header("X-Via", "v", before_via=True)
    assert [n for n, _ in reparse(m2).headers][:4] == ["X-Top", "X-First", "X-Via", "Via"]


def test_append_remove_replace_header():
    m = basic("X-A: 1", "X-A: 2", "X-B: keep")
    m.append_header("X-C", "new")
    assert m.remove_header("x-a") == 2
    m.replace_header("Contact", "<sip:changed@h>")
    m.replace_header("X-Absent", b"added")
    r = reparse(m)
    assert r.header_all("x-a") == [] and r.header("x-b") == "keep"
    assert r.header("contact") == "<sip:changed@h>"
    names = [n for n, _ in r.headers]
    assert names[-3:] == ["Content-Length", "X-C", "X-Absent"]
    assert r.header("x-c") == "new" and r.header("x-absent") == "added"
    assert m.remove_header("x-nothing") == 0


def test_replace_header_removes_further_lines():
    m = basic("Subject: one", "Subject: two", "s: three")
    m.replace_header("subject", "only")
    r = reparse(m)
    assert r.header_all("subject") == ["only"]
    assert [n for n, _ in r.headers].index("Subject") == 7          # kept its place


def test_edit_values_are_checked():
    m = basic()
    with pytest.raises(ValueError):
        m.append_header("X-A", "a\r\nInjected: 1")
    with pytest.raises(ValueError):
        m.replace_header("X-A", "a\nb")
    with pytest.raises(ValueError):
        m.insert_header("Bad Name", "x")
    with pytest.raises(ValueError):
        m.append_header("", "x")
    with pytest.raises(ValueError):
        m.append_header("X:Y", "x")
    with pytest.raises(TypeError):
        m.replace_header("Expires", 3600)         # bytes(3600) would be 3600 NULs
    with pytest.raises(ValueError):
        m.serialize(via="SIP/2.0/UDP h\r\nX: y")
    assert m.serialize() is m.buf and not m.edited


def test_set_max_forwards_replace_and_insert():
    m = basic()
    m.set_max_forwards(69)
    assert reparse(m).max_forwards == 69
    m.set_max_forwards(68)                      # again: still one header, the last value
    r = reparse(m)
    assert r.max_forwards == 68 and r.header_count("max-forwards") == 1
    n = parse(make(*BASIC[2:], start="OPTIONS sip:x@h SIP/2.0"))
    n.set_max_forwards(70)
    n.set_max_forwards(10)
    r = reparse(n)
    assert r.header_all("max-forwards") == ["10"] and r.headers[0] == ("Max-Forwards", "10")
    d = parse(make("Max-Forwards: abc", "Max-Forwards: 9", start="OPTIONS sip:x@h SIP/2.0"))
    d.set_max_forwards(8)
    assert reparse(d).header_all("max-forwards") == ["8"]
    for bad in (-1, 256):
        with pytest.raises(ValueError):
            m.set_max_forwards(bad)


def test_remove_top_route_whole_line():
    m = basic("Route: <sip:p1@h;lr>", "Route: <sip:p2@h;lr>")
    m.remove_top_route()
    r = reparse(m)
    assert r.header_all("route") == ["<sip:p2@h;lr>"]


def test_remove_top_route_first_of_several_values():
    m = basic("Route: <sip:p1@h;lr> ,  <sip:p2@h;lr>,<sip:p3@h;lr>")
    m.remove_top_route()
    assert reparse(m).header_all("route") == ["<sip:p2@h;lr>,<sip:p3@h;lr>"]


def test_remove_top_route_repeatedly():
    """Double Record-Route: a proxy finds itself twice and removes two Route values."""
    m = basic("Route: <sip:p1@h;lr>, <sip:p2@h;lr>", "Route: <sip:p3@h;lr>, <sip:p4@h;lr>")
    m.remove_top_route()
    m.remove_top_route()
    r = reparse(m)
    assert r.header_all("route") == ["<sip:p3@h;lr>, <sip:p4@h;lr>"]
    m.remove_top_route()
    assert [x.uri for x in reparse(m).routes] == ["sip:p4@h;lr"]
    m.remove_top_route()
    assert reparse(m).header_count("route") == 0
    with pytest.raises(ValueError, match="no Route"):
        m.remove_top_route()


def test_remove_top_route_bad_value_and_absent():
    with pytest.raises(ValueError, match="no Route"):
        basic().remove_top_route()
    with pytest.raises(SipParseError, match="Route"):
        basic("Route: not a <uri").remove_top_route()


def test_remove_top_via():
    m = parse(make("Via: SIP/2.0/UDP p;branch=z9hG4bKp, SIP/2.0/UDP a;branch=z9hG4bKa",
                   "Via: SIP/2.0/UDP b;branch=z9hG4bKb", *BASIC[1:6], start="SIP/2.0 200 OK"))
    m.remove_top_via()
    r = reparse(m)
    assert [v.host for v in r.via] == ["a", "b"]
    m.remove_top_via()
    assert [v.host for v in reparse(m).via] == ["b"]
    m.remove_top_via()
    assert reparse(m).via == []
    with pytest.raises(ValueError, match="no Via"):
        m.remove_top_via()


def test_serialize_with_a_branch_via_is_not_recorded():
    m = basic()
    m.set_max_forwards(69)
    a = m.serialize(via="SIP/2.0/UDP proxy;branch=z9hG4bKkx1.a.0")
    b = m.serialize(via=b"SIP/2.0/UDP proxy;branch=z9hG4bKkx1.a.1")
    assert parse(a).branch == "z9hG4bKkx1.a.0" and parse(b).branch == "z9hG4bKkx1.a.1"
    assert [v.branch for v in parse(a).via] == ["z9hG4bKkx1.a.0", "z9hG4bKa1"]
    assert b"kx1" not in m.serialize()
    # no Via at all: the new one goes first
    n = parse(make("Call-ID: c", start="OPTIONS sip:x@h SIP/2.0"))
    assert parse(n.serialize(via="SIP/2.0/UDP p;branch=z9hG4bKp")).headers[0][0] == "Via"


def test_relay_cycle_keeps_everything_else():
    data = make(*BASIC, "Route: <sip:proxy@h;lr>", "Subject: x", body=b"body!")
    m = parse(data)
    m.insert_header("Record-Route", "<sip:proxy@h;lr>")
    m.set_max_forwards(m.max_forwards - 1)
    m.set_ruri("sip:bob@192.0.2.20")
    m.remove_top_route()
    m.add_top_via_params(";received=192.0.2.1;rport=5060")
    r = reparse(m, via="SIP/2.0/UDP proxy:5060;branch=z9hG4bKkx1.b.0")
    assert r.ruri == "sip:bob@192.0.2.20" and r.max_forwards == 69 and r.routes == []
    assert r.record_routes[0].uri == "sip:proxy@h;lr"
    assert [v.branch for v in r.via] == ["z9hG4bKkx1.b.0", "z9hG4bKa1"]
    assert r.via[1].rport == 5060 and r.body == b"body!"
    for name in ("from", "to", "call-id", "cseq", "contact", "subject", "content-length"):
        assert r.header_all(name) == m.header_all(name)


# -- overlapping and repeated edits: the later one wins --------------------------------------------------------

def test_remove_after_replace_removes():
    m = basic("Subject: a")
    m.replace_header("Subject", "b")
    m.remove_header("Subject")
    assert reparse(m).header_count("subject") == 0


def test_replace_after_remove_restores_with_new_value():
    m = basic("Subject: a", "Subject: c")
    m.remove_header("Subject")
    m.replace_header("Subject", "b")
    assert reparse(m).header_all("subject") == ["b"]


def test_replace_twice_and_empty_values():
    m = basic("Subject:", "X-E:")
    m.replace_header("Subject", "one")
    m.replace_header("Subject", "two")
    m.replace_header("x-e", "v")
    r = reparse(m)
    assert r.header_all("subject") == ["two"] and r.header("x-e") == "v"


def test_added_lines_are_tracked():
    m = basic()
    m.replace_header("X-New", "1")
    m.replace_header("x-new", "2")             # rewrites the added line, no second one
    m.append_header("X-Other", "a")
    m.append_header("X-Other", "b")
    assert m.remove_header("x-other") == 2     # lines added by edits go too
    r = reparse(m)
    assert r.header_all("x-new") == ["2"] and r.header_count("x-other") == 0
    m.append_header("X-New", "3")
    m.replace_header("X-New", "4")             # rewrites the first added, drops the other
    assert reparse(m).header_all("x-new") == ["4"]


def test_remove_header_and_remove_top_value_of_the_same_line():
    m = basic("Route: <sip:a@h;lr>, <sip:b@h;lr>")
    m.remove_top_route()
    m.remove_header("route")
    assert reparse(m).header_count("route") == 0
    m = basic("Route: <sip:a@h;lr>, <sip:b@h;lr>")
    m.remove_header("route")
    m.remove_top_route()        # later: wins over the line removal for its own span only
    assert reparse(m).header_all("route") == ["<sip:b@h;lr>"]


def test_stamp_on_a_removed_via_is_dropped():
    m = parse(make("Via: SIP/2.0/UDP a;branch=z9hG4bK1;rport", "Via: SIP/2.0/UDP b;branch=z9hG4bK2",
                   start="OPTIONS sip:x@h SIP/2.0"))
    m.add_top_via_params(";received=192.0.2.1;rport=9")
    m.remove_top_via()
    assert [v.raw for v in reparse(m).via] == ["SIP/2.0/UDP b;branch=z9hG4bK2"]


def test_many_edits():
    m = parse(make(*[f"X-H{i}: {i}" for i in range(200)], start="OPTIONS sip:x@h SIP/2.0"))
    for i in range(0, 200, 2):
        m.remove_header(f"x-h{i}")
    for i in range(40):
        m.append_header("X-New", str(i))
    r = reparse(m)
    assert [v for n, v in r.headers if n.startswith("X-H")] == [str(i) for i in range(1, 200, 2)]
    assert r.header_all("x-new") == [str(i) for i in range(40)]


# -- defects a liberal parse lets in are not forwarded --------------------------------------------------------

def test_loose_request_line_rewritten_when_edited():
    m = parse(b"INVITE \t sip:b@h  SIP/2.0 \r\nCall-ID: c\r\n\r\n")
    assert m.ruri == "sip:b@h" and m.version == "SIP/2.0"
    assert m.serialize().startswith(b"INVITE \t sip:b@h  SIP/2.0 \r\n")
    m.append_header("X-A", "1")
    assert m.serialize().startswith(b"INVITE sip:b@h SIP/2.0\r\nCall-ID")
    m.set_ruri("sip:c@h")
    assert m.serialize().startswith(b"INVITE sip:c@h SIP/2.0\r\n")


def test_unterminated_header_section_gets_its_ends_when_edited():
    for data in (b"OPTIONS sip:x@h SIP/2.0\r\nCall-ID: c\r\nSubject: s",
                 b"OPTIONS sip:x@h SIP/2.0\r\nCall-ID: c\r\nSubject: s\r",
                 b"OPTIONS sip:x@h SIP/2.0\r\nCall-ID: c\r\nSubject: s\r\n",
                 b"OPTIONS sip:x@h SIP/2.0\nCall-ID: c\nSubject: s\n"):
        m = parse(data)
        assert m.serialize() is data                   # unedited: as received
        m.append_header("X-A", "1")
        out = m.serialize()
        assert out.endswith(b"X-A: 1\r\n\r\n")
        r = parse(out)
        assert r.headers == [("Call-ID", "c"), ("Subject", "s"), ("X-A", "1")], data


# -- regressions found by the fuzzer (tools/fuzz_parser.py) ----------------------------------------------------

def test_fuzz_appended_header_after_unterminated_last_line():
    """The datagram ends inside the last header line (no CR LF, no empty line): an appended
    header was glued onto it and the relayed message no longer parsed."""
    m = parse(b"REGISTER sip:h SIP/2.0\nTo: sip:user@example.com\r\nCall-ID: x")
    m.append_header("X-Fuzz", "1")
    m.set_max_forwards(70)
    r = parse(m.serialize(via="SIP/2.0/UDP p;branch=z9hG4bKp"))
    assert r.call_id == "x" and r.header("x-fuzz") == "1" and r.max_forwards == 70


def test_fuzz_stamp_on_unterminated_last_via():
    """The top Via is the unterminated last line: its stamp must go before the line end."""
    m = parse(b"REGISTER sip:h SIP/2.0\r\nCall-ID: c\r\nVia: SIP/2.0/TCP 192.0.2.253;branch=z9hG4bKk")
    m.add_top_via_params(";received=127.0.0.1;rport=5060")
    m.append_header("X-Fuzz", "1")
    r = parse(m.serialize(via="SIP/2.0/UDP p;branch=z9hG4bKp"))
    assert r.via[1].raw == "SIP/2.0/TCP 192.0.2.253;received=127.0.0.1;branch=z9hG4bKk;rport=5060"
    assert r.header("x-fuzz") == "1"


def test_fuzz_unterminated_last_line_removed():
    """A second, bad Max-Forwards as the unterminated last line is removed by
    set_max_forwards(): no empty line may appear before the lines appended after it."""
    m = parse(b"REGISTER sip:h SIP/2.0\r\nMax-Forwards: 5\r\nCall-ID: c\r\nMax-Forwards: 7junk")
    m.set_max_forwards(4)
    m.append_header("X-Fuzz", "1")
    r = parse(m.serialize())
    assert r.headers == [("Max-Forwards", "4"), ("Call-ID", "c"), ("X-Fuzz", "1")]


def test_fuzz_control_octet_in_sip_version():
    """'SIP/\r' passed as a version (any token starting with SIP/ did); relayed, the
    rewritten request line no longer parsed. SIP-Version is SIP/digits.digits now."""
    with pytest.raises(SipParseError, match="Bad request line"):
        parse(b'I ip:m SIP/\r \ne : "\r;C\r\n')
    for bad in (b"SIP/2.0\r", b"SIP/", b"SIP/2", b"SIP/2.", b"SIP/.0", b"SIP/2.0x", b"SIP/2.0/UDP"):
        with pytest.raises(SipParseError, match="Bad request line"):
            parse(b"OPTIONS sip:x@h " + bad + b" \r\n\r\n")
        with pytest.raises(SipParseError, match="Bad status"):
            parse(bad + b" 200 OK\r\n\r\n")
    m = parse(b"OPTIONS sip:x@h sip/2.0\r\n\r\n")     # RFC 3261 7.1: any case
    assert m.is_request and m.version == "sip/2.0"
    r = parse(b"sip/2.0 200 OK\r\n\r\n")
    assert not r.is_request and r.status == 200


def test_fuzz_stamp_wins_over_a_received_the_sender_wrote():
    """With received stamped right after sent-by, a received the sender put in its Via came
    later and, last one winning, was what the relayed Via read as (and where a stateless
    reply forward would go). A parameter given twice now counts the first time."""
    m = parse(make("Via: SIP/2.0/UDP 192.0.2.1;received=203.0.113.66;rport=1;rport=2;branch=z9hG4bK1",
                   start="OPTIONS sip:x@h SIP/2.0"))
    assert m.top_via.received == "203.0.113.66" and m.top_via.rport == 1
    m.add_top_via_params(";received=192.0.2.1;rport=5060")
    v = reparse(m).top_via
    assert v.raw == ("SIP/2.0/UDP 192.0.2.1;received=192.0.2.1;received=203.0.113.66;rport=5060"
                     ";rport=2;branch=z9hG4bK1")
    assert (v.received, v.rport) == ("192.0.2.1", 5060)
    assert v.params["received"] == "192.0.2.1" and v.params["rport"] == "5060"
    twice = parse(make("From: <sip:a@h>;tag=first;tag=second", "Via: SIP/2.0/UDP h;branch=z9hG4bKa;branch=z9hG4bKb",
                       start="OPTIONS sip:x@h SIP/2.0"))
    assert twice.from_tag == "first" == twice.from_.params["tag"] == twice.from_.tag
    assert twice.branch == "z9hG4bKa" == twice.top_via.params["branch"]
    assert parse_uri("sip:h;transport=tcp;transport=udp").params == {"transport": "tcp"}


# -- regressions found by review while hardening ----------------------------------------------------------

def test_huge_numbers_in_checked_views_do_not_raise():
    """int() refuses strings over 4300 digits: the views of values the parser accepted used
    to raise ValueError for an overlong rport, ttl or expires."""
    nines = "9" * 5000
    with pytest.raises(SipParseError, match="Via"):
        parse(make(f"Via: SIP/2.0/UDP h;branch=z9hG4bK1;rport={nines}", start="OPTIONS sip:x@h SIP/2.0"))
    with pytest.raises(SipParseError, match="Via"):
        parse(make("Via: SIP/2.0/UDP h;rport=65536", start="OPTIONS sip:x@h SIP/2.0"))
    m = parse(make(f"Via: SIP/2.0/UDP h;rport=65535;ttl={nines}",
                   f"Contact: <sip:a@h>;expires={nines}", f"Expires: {nines}",
                   start="REGISTER sip:x@h SIP/2.0"))
    assert m.top_via.rport == 65535 and m.top_via.ttl is None
    assert m.contacts[0].expires == -1 and m.expires == -1
    assert via_of("SIP/2.0/UDP h;ttl=256").ttl is None and via_of("SIP/2.0/UDP h;ttl=255").ttl == 255
    padded = parse(make("Contact: <sip:a@h>;expires=000000000000000000000060",
                        "Expires: 000000000000000000000000030", start="REGISTER sip:x@h SIP/2.0"))
    assert padded.contacts[0].expires == 60 and padded.expires == 30


def test_non_ascii_digits_are_not_numbers():
    """str.isdigit() is true for '\u00b2', which int() refuses: Expires used to raise."""
    m = parse("REGISTER sip:x@h SIP/2.0\r\nExpires: \u00b2\r\n\r\n".encode())
    assert m.expires == -1


# -- build_reply -------------------------------------------------------------------------------------------------

def test_build_reply_refuses_none_instead_of_reading_through_it():
    # a transaction that let its request go must not reach the reply builder: a TypeError,
    # where a None read as a Message would have crashed the worker
    with pytest.raises(TypeError):
        build_reply(None, 200, "OK")


def test_build_reply_copies_and_stamps():
    m = parse(make("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1;rport",
                   "v: SIP/2.0/UDP 192.0.2.50;branch=z9hG4bKz", *BASIC[1:],
                   "Record-Route: <sip:rr@h;lr>", "Subject: not copied"))
    m.add_top_via_params(";received=198.51.100.1;rport=6000")
    out = build_reply(m, 486, "Busy Here", to_tag="tt1", extra=["Retry-After: 60", b"X-A: b"])
    r = parse(out)
    assert r.status == 486 and r.reason == "Busy Here" and r.version == "SIP/2.0"
    assert [v.raw for v in r.via] == [
        "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1;rport=6000;received=198.51.100.1",
        "SIP/2.0/UDP 192.0.2.50;branch=z9hG4bKz"]
    assert r.header_lines("via")[1] == b"v: SIP/2.0/UDP 192.0.2.50;branch=z9hG4bKz\r\n"
    assert r.from_.raw == m.from_.raw and r.call_id == m.call_id
    assert (r.cseq_num, r.cseq_method) == (1, "INVITE")
    assert r.to_uri == "sip:bob@example.com" and r.to_tag == "tt1"
    assert r.header("retry-after") == "60" and r.header("x-a") == "b"
    assert r.content_length == 0 and r.body == b""
    assert not r.has_header("subject") and not r.has_header("record-route")
    assert not r.has_header("contact") and not r.has_header("max-forwards")


def test_build_reply_to_tag_rules():
    m = basic()
    assert parse(build_reply(m, 100, "Trying", to_tag="x")).to_tag is None     # never on 100
    assert parse(build_reply(m, 200, "OK")).to_tag is None                    # none given
    assert parse(build_reply(m, 180, b"Ringing", to_tag=b"b1")).to_tag == "b1"
    tagged = basic().serialize().replace(b"To: <sip:bob@example.com>",
                                         b"To: <sip:bob@example.com>;tag=orig")
    assert parse(build_reply(parse(tagged), 200, "OK", to_tag="new")).to_tag == "orig"
    spec = parse(basic().serialize().replace(b"To: <sip:bob@example.com>",
                                             b"To: sip:bob@example.com"))
    r = parse(build_reply(spec, 404, "Not Here", to_tag="t9"))
    assert r.to_uri == "sip:bob@example.com" and r.to_tag == "t9"


def test_build_reply_body_and_checks():
    m = basic()
    r = parse(build_reply(m, 200, "OK", to_tag="a", extra=["Content-Type: text/plain"],
                          body="héllo"))
    assert r.body == "héllo".encode() and r.content_length == len("héllo".encode())
    for bad in (99, 700):
        with pytest.raises(ValueError):
            build_reply(m, bad, "x")
    with pytest.raises(ValueError):
        build_reply(m, 200, "OK\r\nX: injected")
    with pytest.raises(ValueError):
        build_reply(m, 200, "OK", to_tag="a;b")
    with pytest.raises(ValueError):
        build_reply(m, 200, "OK", extra=["X: a\r\nY: b"])


def test_build_reply_from_unterminated_request():
    m = parse(b"OPTIONS sip:x@h SIP/2.0\r\nCSeq: 1 OPTIONS\r\nCall-ID: c\r\n"
              b"Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP b;branch=z9hG4bK2")
    r = parse(build_reply(m, 200, "OK"))
    assert [v.host for v in r.via] == ["a", "b"] and r.call_id == "c"
    assert r.content_length == 0


def test_build_reply_without_via_from_to():
    m = parse(make("CSeq: 1 OPTIONS", start="OPTIONS sip:x@h SIP/2.0"))
    r = parse(build_reply(m, 400, "Missing Headers", to_tag="t"))
    assert r.via == [] and r.from_ is None and r.to is None and r.cseq_num == 1


def test_build_reply_tag_on_an_unterminated_to_line():
    m = parse(b"OPTIONS sip:x@h SIP/2.0\r\nCSeq: 1 OPTIONS\r\nCall-ID: c\r\n"
              b"Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\nTo: <sip:x@h>")
    out = build_reply(m, 404, "Not Here", to_tag="t7")
    assert b"\r\nTo: <sip:x@h>;tag=t7\r\nContent-Length: 0\r\n\r\n" in out
    assert parse(out).to_tag == "t7"


# -- what the transport and tm take from a request, in C ----------------------------------------------------

def test_stamp_source_follows_rfc3581_and_rfc3261():
    m = basic()  # its Via asks for rport
    m.src = ("198.51.100.7", 5099)
    m.stamp_source()
    assert m.top_via_with_stamp() == (b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1;rport=5099"
                                      b";received=198.51.100.7")
    same = parse(make("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1", *BASIC[1:]))
    same.src = ("192.0.2.1", 6000)  # sent-by is the source: nothing to add
    same.stamp_source()
    assert same.top_via_with_stamp() == b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa1"
    assert not same.edited
    other = parse(make("Via: SIP/2.0/UDP host.example;branch=z9hG4bKa1", *BASIC[1:]))
    other.src = ("192.0.2.1", 5060)
    other.stamp_source()
    assert other.via[0].raw == "SIP/2.0/UDP host.example;branch=z9hG4bKa1"  # as received
    assert parse(other.serialize()).via[0].received == "192.0.2.1"
    v6 = parse(make("Via: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKa1", *BASIC[1:]))
    v6.src = ("2001:db8::1", 40000)  # brackets are not part of the address
    v6.stamp_source()
    assert not v6.edited
    none = parse(make("CSeq: 1 OPTIONS", start="OPTIONS sip:x@h SIP/2.0"))
    none.src = ("192.0.2.1", 5060)
    none.stamp_source()  # no Via: nothing to stamp, no error
    assert not none.edited


@pytest.mark.parametrize("ruri", [
    "sip:127.0.0.1", "sip:127.0.0.1:5060", "sip:alice@[2001:DB8::1]:5070;transport=udp",
    "sips:%61lice:pw@Host.Example;lr", "tel:+15551234567", "sip:@h",
])
def test_ruri_host_port_and_user_are_the_uri_views(ruri):
    """The keepalive's `uri == myself` and $rU read from the parsed offsets: the same
    values the URI view gives, before and after a rewrite, and before and after the view
    was made."""
    m = basic(start=f"OPTIONS {ruri} SIP/2.0")
    fresh = basic(start=f"OPTIONS {ruri} SIP/2.0")
    assert m.ruri_host_port() == (fresh.uri.host, fresh.uri.port)
    assert m.ruri_user() == fresh.uri.user
    assert m.uri is not None and m.ruri_host_port() == (m.uri.host, m.uri.port)  # view made
    m.set_ruri("sip:carol@192.0.2.9:5080")
    assert m.ruri_host_port() == ("192.0.2.9", 5080) and m.ruri_user() == "carol"
    reply = parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n")
    assert reply.ruri_host_port() is None and reply.ruri_user() is None


@pytest.mark.parametrize("ruri", [
    "sip:127.0.0.1", "SIP:bob@Host.Example:5070", "sips:alice@[2001:DB8::1]:5071;transport=tcp",
    "sip:a@h;maddr=192.0.2.9;lr", "tel:+15551234567", "urn:service:sos", "sip:@h",
])
def test_ruri_hop_is_the_uri_view(ruri):
    """A relay's destination read from the offsets: the URI view's scheme (as 1 sip, 2
    sips, 3 tel, 0 other), host, port and parameters, received and rewritten."""
    kinds = {"sip": 1, "sips": 2, "tel": 3}

    def view(u):
        return (kinds.get(u.scheme, 0), u.host, u.port, u.params_raw)

    m = basic(start=f"INVITE {ruri} SIP/2.0")
    assert cp.ruri_hop(m) == view(basic(start=f"INVITE {ruri} SIP/2.0").uri)
    m.set_ruri(ruri.replace("127.0.0.1", "192.0.2.77"))
    assert cp.ruri_hop(m) == view(m.uri)
    m.set_ruri("no-scheme")  # a rewrite that does not parse: no destination
    assert cp.ruri_hop(m) is None
    reply = parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n")
    assert cp.ruri_hop(reply) is None


@pytest.mark.parametrize("headers", [
    ("Contact: <sip:alice@192.0.2.1:5060>",),
    ("Contact: \"A, B\" <sip:a@h;lr>;expires=60, sip:b@h2", "Contact: <sip:c@h3>"),
    ("Contact: sip:plain@192.0.2.7;transport=tcp",),
    ("Contact: *",),
    (),
    ("Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr;ftag=x>", "Record-Route: <sip:p3>"),
    ("Record-Route: \"Edge\" <sip:[2001:db8::1]:5070;lr>", "Contact: <sip:x@h>"),
])
def test_first_contact_uri_and_record_route_values_are_the_views(headers):
    """What a dialog records of its INVITE and 2xx, read without a NameAddr per value: the
    same strings `contacts[0].uri` and `[r.raw for r in record_routes]` give."""
    base = [h for h in BASIC if not h.startswith("Contact")]
    m = parse(make(*base, *headers))
    contacts = m.contacts
    assert cp.first_contact_uri(m) == (contacts[0].uri if contacts else None)
    assert cp.record_route_values(m) == [r.raw for r in m.record_routes]


@pytest.mark.parametrize("via,src,expected", [
    ("192.0.2.1:5060", ("192.0.2.1", 5060), True),
    ("192.0.2.1", ("192.0.2.1", 5060), True),          # no port: 5060
    ("192.0.2.1", ("192.0.2.1", 5070), False),
    ("192.0.2.1:5070", ("192.0.2.1", 5060), False),
    ("192.0.2.10:5060", ("192.0.2.1", 5060), False),   # a longer host
    ("192.0.2.1:5060", ("192.0.2.10", 5060), False),   # a shorter one
    ("10.0.0.7:5060", ("192.0.2.1", 5060), False),     # the phone behind a NAT
    ("[2001:DB8::A]:5062", ("2001:db8::a", 5062), True),  # brackets and case aside
    ("[2001:db8::b]:5062", ("2001:db8::a", 5062), False),
    ("Host.Example:5060", ("host.example", 5060), True),
])
def test_sent_by_is_source_is_the_registrars_nat_test(via, src, expected):
    m = parse(make(f"Via: SIP/2.0/UDP {via};branch=z9hG4bKa1", *BASIC[1:]))
    m.src = src
    assert m.sent_by_is_source() is expected
    none = parse(make("CSeq: 1 OPTIONS", start="OPTIONS sip:x@h SIP/2.0"))
    none.src = src
    assert none.sent_by_is_source() is True  # no Via: nothing says otherwise


@pytest.mark.parametrize("line,rc,after", [
    ("Max-Forwards: 70", 1, "69"),
    ("Max-Forwards: 1", 1, "0"),
    ("Max-Forwards: 0", -1, "0"),
    ("Max-Forwards: 200", 1, "70"),       # capped at the limit (Kamailio's max_limit)
    ("Max-Forwards: 65535", 1, "70"),
    ("Max-Forwards: abc", -1, "abc"),     # not a number: 483, the header left as it was
    (None, 1, "10"),                      # absent: inserted with the default
])
def test_process_maxfwd(line, rc, after):
    headers = [h for h in BASIC if not h.startswith("Max-Forwards")] + ([line] if line else [])
    m = parse(make(*headers))
    assert m.process_maxfwd(10, 70) == rc
    out = parse(m.serialize())
    assert out.header_all("max-forwards") == [after]


def test_process_maxfwd_on_two_lines_and_twice():
    m = parse(make(*BASIC, "Max-Forwards: 9"))  # the first line counts, the others go
    assert m.process_maxfwd(10, 70) == 1
    assert parse(m.serialize()).header_all("max-forwards") == ["69"]
    m = basic()
    m.process_maxfwd(10, 70)
    m.process_maxfwd(10, 70)  # decremented from what came in, not twice
    assert parse(m.serialize()).header_all("max-forwards") == ["69"]


def test_reply_port_and_has_via():
    assert basic().has_via and basic().reply_port == 0  # rport: the source port
    plain = parse(make("Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKa1", *BASIC[1:]))
    assert plain.reply_port == 5070
    default = parse(make("Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa1", *BASIC[1:]))
    assert default.reply_port == 5060
    none = parse(make("CSeq: 1 OPTIONS", start="OPTIONS sip:x@h SIP/2.0"))
    assert not none.has_via and none.reply_port == 0


def test_server_key_is_branch_sent_by_and_method_class():
    m = parse(make("Via: SIP/2.0/UDP Host.Example:5070;branch=z9hG4bKx1", *BASIC[1:]))
    assert m.server_key() == b"z9hG4bKx1\x00host.example:5070\x00INVITE"
    assert m.server_key("CANCEL") == b"z9hG4bKx1\x00host.example:5070\x00CANCEL"
    ack = parse(make("Via: SIP/2.0/UDP h;branch=z9hG4bKx1", *BASIC[1:], start="ACK sip:b@h SIP/2.0"))
    assert ack.server_key() == b"z9hG4bKx1\x00h:0\x00INVITE"  # ACK: the INVITE's class
    odd = parse(make("Via: SIP/2.0/UDP h:65535;branch=z9hG4bKx1", *BASIC[1:],
                     start="FOO sip:b@h SIP/2.0"))
    assert odd.server_key() == b"z9hG4bKx1\x00h:65535\x00FOO"
    for via in ("Via: SIP/2.0/UDP h;branch=1234", "Via: SIP/2.0/UDP h;branch=z9hG4bK",
                "Via: SIP/2.0/UDP h"):
        assert parse(make(via, *BASIC[1:])).server_key() is None  # RFC 2543: keyed elsewhere
    assert parse(make("CSeq: 1 OPTIONS", start="OPTIONS sip:x@h SIP/2.0")).server_key() is None


def test_dialog_key_is_the_dialog_modules_key():
    from kampx.dialog import key
    m = parse(make(*BASIC[:3], "To: <sip:bob@example.com>;tag=t9", *BASIC[4:]))
    assert m.dialog_key() == key(m.call_id, "f1") == b"c1@192.0.2.1\x00f1"
    assert m.dialog_key(True) == key(m.call_id, "t9")
    assert basic().dialog_key(True) == key("c1@192.0.2.1", "")  # no To tag: empty
    folded = parse(make(*BASIC[:4], "Call-ID: c1\r\n @h", *BASIC[5:]))
    assert folded.call_id == "c1 @h" and folded.dialog_key() == key(folded.call_id, "f1")
    raw = make(*BASIC[:4], "Call-ID: c\u00e9X", *BASIC[5:]).replace(b"X", b"\xff")
    odd = parse(raw)  # not UTF-8: the bytes as received
    assert odd.dialog_key() == key(odd.call_id, "f1") == b"c\xc3\xa9\xff\x00f1"


def test_addr_user_host_is_what_the_parsed_uris_say():
    m = basic()
    assert m.addr_user_host() == (m.from_.parsed_uri.user, m.from_.parsed_uri.host) == (
        "alice", "example.com")
    assert m.addr_user_host(True) == ("bob", "example.com")
    anon = parse(make(*BASIC[:3], "To: <sip:example.com>", *BASIC[4:]))
    assert anon.addr_user_host(True) == (None, "example.com")
    none = parse(make("CSeq: 1 OPTIONS", start="OPTIONS sip:x@h SIP/2.0"))
    assert none.addr_user_host() is None and none.addr_user_host(True) is None
    tel = parse(make(*BASIC[:2], "From: <tel:+15550100>;tag=f1", *BASIC[3:]))
    assert tel.addr_user_host() == (tel.from_.parsed_uri.user, tel.from_.parsed_uri.host)


def test_acc_parties_are_what_the_parsed_uris_say():
    def views(m):
        out = []
        for side in (m.from_, m.to):
            try:
                u = side.parsed_uri if side is not None else None
            except SipParseError:
                u = None
            out.append(u)
        f, t = out
        r = m.uri
        return (
            (f.user or "") if f else "",
            (f.host or "") if f else "",
            (t.user or "") if t else "",
            (r.user or "") if r else "",
            (r.host or "") if r else "",
        )

    m = basic()
    assert m.acc_parties() == views(m) == ("alice", "example.com", "bob", "bob", "example.com")
    anon = parse(make(*BASIC[:3], "To: <sip:example.com>", *BASIC[4:]))
    assert anon.acc_parties() == views(anon) and anon.acc_parties()[2] == ""
    none = parse(make("CSeq: 1 OPTIONS", start="OPTIONS sip:x@h SIP/2.0"))
    assert none.acc_parties() == views(none) == ("", "", "", "x", "h")
    tel = parse(make(*BASIC[:2], "From: <tel:+15550100>;tag=f1", *BASIC[3:]))
    assert tel.acc_parties() == views(tel)
    escaped = parse(make(*BASIC[:3], "To: <sip:b%40b@example.com>", *BASIC[4:]))
    assert escaped.acc_parties()[2] == "b%40b" == escaped.to.parsed_uri.user  # as received
    rewritten = basic()
    rewritten.set_ruri("sip:carol@192.0.2.9:5070")
    assert rewritten.acc_parties()[3:] == ("carol", "192.0.2.9") == views(rewritten)[3:]
    # the Request-URI's columns come from its offsets (received or rewritten) unless its
    # view was made already: the same values either way, and the view's error when a
    # rewrite does not parse
    for ruri in ("sip:192.0.2.9;lr", "tel:+15550100", "sips:[2001:DB8::1]:5071", "urn:x:y"):
        m = basic()
        m.set_ruri(ruri)
        fresh = basic()
        fresh.set_ruri(ruri)
        fresh.uri  # the view first
        assert m.acc_parties() == fresh.acc_parties() == views(m)
        received = basic(start=f"INVITE {ruri} SIP/2.0")
        assert received.acc_parties() == views(received)
    bad = basic()
    bad.set_ruri("no-scheme")
    with pytest.raises(SipParseError):
        bad.acc_parties()
    reply = parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
                  b"From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n"
                  b"Content-Length: 0\r\n\r\n")
    assert reply.acc_parties() == ("a", "x", "b", "", "")


def test_sl_tag_is_stable_per_request_and_tells_requests_apart():
    a = basic().sl_tag("p" * 32)
    assert a == basic().sl_tag("p" * 32)  # a retransmission: the same tag
    prefix, _, h = a.partition(".")
    assert prefix == "p" * 32 and len(h) == 8 and int(h, 16) >= 0
    other_branch = parse(make("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa2", *BASIC[1:]))
    assert other_branch.sl_tag("p") != basic().sl_tag("p")
    no_tag = parse(make(*BASIC[:2], "From: <sip:alice@example.com>", *BASIC[3:]))
    assert no_tag.sl_tag("p") != basic().sl_tag("p")


# -- odds and ends ---------------------------------------------------------------------------------------------

def test_message_made_directly_is_empty_and_safe():
    m = cp.Message()
    assert m.header("via") is None and m.via == [] and m.contacts == [] and len(m) == 0
    assert m.call_id is None and m.cseq is None and m.max_forwards is None
    assert m.top_via is None and m.top_via_with_stamp() is None and m.serialize() == b""
    with pytest.raises(ValueError):
        m.remove_top_via()


def test_messages_accept_attributes():
    m = basic()
    m.source = ("192.0.2.1", 5060)
    assert m.source == ("192.0.2.1", 5060)


def test_error_is_a_value_error_with_reason():
    with pytest.raises(ValueError) as e:
        parse(b"garbage\r\n\r\n")
    assert isinstance(e.value, SipParseError) and e.value.reason == str(e.value)


def test_canonical_names_and_compact_table():
    assert cp.CANONICAL[header_id_of("via")] == "Via"
    for short, hid in cp.COMPACT.items():
        assert len(short) == 1 and header_id_of(short) == hid and cp.CANONICAL[hid]


def _with_header(name: str, value: str = "v1") -> cp.Message:
    return parse(make("Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa1", "From: <sip:a@h>;tag=1",
                      "To: <sip:b@h>", "Call-ID: c1", "CSeq: 1 OPTIONS", f"{name}: {value}",
                      start="OPTIONS sip:h SIP/2.0", content_length=False))


def _value_for(name: str) -> str:
    """A value the parser accepts for this header (Contact, Content-Length... are checked)."""
    for value in ("<sip:v1@h>", "0"):
        try:
            _with_header(name, value)
            return value
        except SipParseError:
            pass
    raise AssertionError(name)


ALWAYS_SENT = {cp.header_id_of(n) for n in ("via", "from", "to", "call-id", "cseq")}


@pytest.mark.parametrize("hid", [h for h in range(1, len(cp.CANONICAL)) if h not in ALWAYS_SENT])
def test_every_known_name_on_the_wire_gets_its_id(hid):
    """The parser tells known names apart in C (by length, then the lower-cased bytes):
    every canonical name and compact form, in any case, reaches the same header as the
    name looked up from Python; the one-byte-longer or -shorter name is another header."""
    canonical = cp.CANONICAL[hid]  # (the five ALWAYS_SENT: every message built here has them)
    forms = [canonical, canonical.lower(), canonical.upper(), canonical.swapcase()]
    forms += [s for s, h in cp.COMPACT.items() if h == hid] + \
        [s.upper() for s, h in cp.COMPACT.items() if h == hid]
    value = _value_for(canonical)
    for form in forms:
        m = _with_header(form, value)
        assert m.header(canonical) == value, form
        assert m.header_all(canonical) == [value], form
    for near in (canonical + "s", canonical[:-1], canonical[:-1] + "_", "X" + canonical[1:]):
        if cp.header_id_of(near) == 0:
            m = _with_header(near, value)
            assert m.header(canonical) is None, near
            assert m.header(near) == value, near


def test_unknown_one_letter_and_long_names_are_other_headers():
    for name in ("z", "Z", "q", "X-" + "a" * 40, "Via-" + "x" * 19):
        m = _with_header(name)
        assert m.header(name) == "v1"
        assert cp.header_id_of(name) == 0


@pytest.mark.parametrize("n", [0, 1, 9, 10, 99, 100, 1000, 12345])
def test_build_reply_writes_the_body_length(n):
    r = parse(cp.build_reply(basic(), 200, "OK", to_tag="t", body=b"x" * n))
    assert r.header("content-length") == str(n) and r.body == b"x" * n


@pytest.mark.parametrize("port", [1, 9, 10, 5060, 65535])
def test_stamp_writes_the_source_port(port):
    m = basic()  # its Via asks for rport
    m.src = ("198.51.100.7", port)
    m.stamp_source()
    assert parse(cp.build_reply(m, 200, "OK")).via[0].rport == port
    assert parse(m.serialize()).via[0].rport == port
    with pytest.raises(ValueError):
        m.src = ("198.51.100.7", 70000)
        m.stamp_source()


def test_header_id_of_any_case_but_only_ascii():
    for name in ("via", "Via", "VIA", "v", "V", "user-agent", "User-Agent"):
        assert cp.CANONICAL[header_id_of(name)] in ("Via", "User-Agent")
    assert header_id_of("\u212a") == 0  # KELVIN SIGN lower-cases to "k" (Supported's form)
    assert header_id_of("x-unknown") == 0


def test_route_hops_reads_hosts_ports_and_the_lr_r2_flags():
    m = basic("Route: <sip:127.0.0.1;r2=on;lr>, <sip:[2001:db8::1]:5070;LR;r2=on>",
              "Route: <sip:next.example;transport=udp>, <sip:x.example;lr=1>")
    count, hops = m.route_hops(3)
    assert count == 4
    assert hops == [("127.0.0.1", 0, True, True), ("[2001:db8::1]", 5070, True, True),
                    ("next.example", 0, False, False)]
    for hop, r in zip(hops, m.routes):
        u = r.parsed_uri
        assert hop == (u.host, u.port, "lr" in u.params, "r2" in u.params)
    assert m.route_hops(0) == (4, [])
    assert basic().route_hops(2) == (0, [])
    assert basic("Route: <sip:h;lrx;xlr;r2>").route_hops(1) == (1, [("h", 0, False, True)])
