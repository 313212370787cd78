#!/usr/bin/env python3
"""atheris harness for the SIP parser (kampx/_cparse.pyx), for long fuzzing runs by hand.

Each input is one UDP datagram. The harness parses it; when the parser accepts it, it reads
every parsed view, builds a reply, applies the edits a proxy makes when it relays (or, for a
reply, strips the top Via), serializes, and parses the result again. It fails on:

- any exception other than SipParseError out of parse(), and any at all where the parser has
  already vouched for the data (Via, Contact, From, To, CSeq views of an accepted message);
- a serialized edit or a built reply that no longer parses, or lost or changed a header it
  should have kept;
- a crash (the C code) or, through libFuzzer's -timeout, a hang.

Coverage of the C code needs a build of the module with clang's -fsanitize=fuzzer-no-link:
by default the harness compiles a private copy of kampx/_cparse.pyx with that and
AddressSanitizer into --build-dir (so a rebuild of the working tree never disturbs a running
fuzzer), re-executes itself with atheris' asan_with_fuzzer.so preloaded (atheris' documented
way for native extensions) and loads that copy. --no-build fuzzes the in-tree module as
built, with Python coverage only.

  python3 tools/fuzz_parser.py -max_total_time=1800 -timeout=10 -rss_limit_mb=1024
  python3 tools/fuzz_parser.py -runs=1 crash-<hash>        # replay one input

Seeds: the torture corpus (tests/data/sip-torture, RFC 4475 and RFC 5118) and a few
generated messages; new inputs go to --corpus (tools/fuzz-corpus/, git-ignored).
Every libFuzzer flag (-max_total_time, -max_len, -timeout, -rss_limit_mb, -runs, -jobs ...)
passes through. -max_len defaults to 65536: a whole UDP datagram.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TORTURE = os.path.join(REPO, "tests", "data", "sip-torture")

GENERATED_SEEDS = {
    "gen-invite.sip": (
        b"INVITE sip:bob@example.com;transport=udp SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport, SIP/2.0/TCP [2001:db8::1]:5070"
        b";branch=z9hG4bK2;received=192.0.2.2;maddr=239.1.1.1;ttl=16\r\n"
        b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
        b"Route: <sip:p3.example.com;lr>\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: \"A \\\"q\\\" B\" <sip:alice@example.com>;tag=ab\r\n"
        b"t: sip:bob@example.com\r\n"
        b"i: 1@h\r\nCSeq: 1 INVITE\r\n"
        b"m: <sip:a@192.0.2.1>;expires=60;q=0.5, sip:b@192.0.2.1;expires=30\r\n"
        b"Proxy-Authorization: Digest username=\"a\", realm=\"r\", nonce=\"n\", "
        b"uri=\"sip:bob@example.com\", response=\"0123\", qop=auth, nc=00000001, cnonce=\"c\"\r\n"
        b"Subject: folded\r\n  value\r\n"
        b"c: application/sdp\r\nl: 4\r\n\r\nv=0\r\nextra"),
    "gen-200.sip": (
        b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKkx1.2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;rport=5060;received=192.0.2.9\r\n"
        b"Record-Route: <sip:127.0.0.1;lr>\r\nf: <sip:a@x>;tag=1\r\nt: <sip:b@y>;tag=2\r\n"
        b"i: x\r\nCSeq: 1 INVITE\r\nContact: *\r\nExpires: 10\r\nl: 0\r\n\r\n"),
    "gen-register-lf.sip": (
        b"REGISTER sips:[2001:db8::1]:5061 SIP/2.0\nVia: SIP/2.0/TLS h;branch=z9hG4bKr\n"
        b"From: <tel:+1-555;phone-context=x>;tag=1\nTo: <sip:%61lice:pw@h?subject=x>\n"
        b"Call-ID: c\nCSeq: 2 REGISTER\nAuthorization: Digest username=\"a\"\n\n"),
}


# -- building an instrumented private copy --------------------------------------------------------

def find_clang():
    for cc in (os.environ.get("FUZZ_CC"), "clang", "clang-18", "clang-17", "clang-16", "clang-15",
               "clang-14"):
        if cc and shutil.which(cc):
            return cc
    return None


def build(build_dir):
    """Compile kampx/_cparse.pyx with libFuzzer coverage and ASan into build_dir/kampx/."""
    cc = find_clang()
    if cc is None:
        return False
    pkg = os.path.join(build_dir, "kampx")
    os.makedirs(pkg, exist_ok=True)
    shutil.copy(os.path.join(REPO, "kampx", "__init__.py"), pkg)
    csrc = os.path.join(build_dir, "_cparse.c")
    subprocess.run([sys.executable, "-m", "cython", "-3",
                    os.path.join(REPO, "kampx", "_cparse.pyx"), "-o", csrc], check=True)
    so = os.path.join(pkg, "_cparse" + sysconfig.get_config_var("EXT_SUFFIX"))
    obj = csrc[:-2] + ".o"
    subprocess.run([cc, "-c", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
                    "-fsanitize=fuzzer-no-link,address", "-I", sysconfig.get_paths()["include"],
                    "-I", os.path.join(REPO, "kampx", "include"), csrc, "-o", obj], check=True)
    # linked without the runtimes: they come from the preloaded asan_with_fuzzer.so
    subprocess.run([cc, "-shared", obj, "-o", so], check=True)
    return True


def reexec_with_asan(argv):
    """The instrumented module needs libFuzzer's symbols global and ASan's runtime loaded
    before Python starts: re-execute under atheris' asan_with_fuzzer.so (atheris'
    documented way for native extensions)."""
    import atheris
    if os.environ.get("KAMPX_FUZZ_ASAN") == "1":
        return
    env = dict(os.environ, KAMPX_FUZZ_ASAN="1",
               LD_PRELOAD=os.path.join(atheris.path(), "asan_with_fuzzer.so"),
               ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:"
                            + os.environ.get("ASAN_OPTIONS", ""))
    os.execve(sys.executable, [sys.executable] + argv, env)


# -- the checks ------------------------------------------------------------------------------------

cp = None  # the module under test, imported in main()

NAMES = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq", "contact", "m",
         "max-forwards", "route", "record-route", "content-length", "l", "content-type", "c",
         "expires", "authorization", "proxy-authorization", "subject", "s", "supported", "k",
         "user-agent", "x-unknown", "C%6Fntact", "")
NEW_VIA = b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKkx1.fuzz.0"
RECORD_ROUTE = "<sip:127.0.0.1:5060;lr>"
NEW_RURI = "sip:relayed@127.0.0.1:5070"


class Mismatch(AssertionError):
    pass


def expect(cond, what):
    if not cond:
        raise Mismatch(what)


def touch_uri(u):
    u.raw, u.scheme, u.user, u.password, u.host, u.port, u.params_raw, u.headers
    u.params, u.user_unescaped, u.hostport, repr(u), str(u)


def touch_addr(a):
    a.raw, a.display, a.uri, a.params_raw, a.tag, a.brackets, repr(a)
    a.params, a.expires, a.q
    touch_uri(a.parsed_uri)     # the parser checked this URI: it must parse again


def touch_via(v):
    v.raw, v.version, v.transport, v.host, v.port, v.params_raw, v.branch, v.received
    v.rport, v.maddr, v.protocol, v.sent_by, v.params, v.ttl, repr(v)


def touch(m):
    """Read every view; anything the parser validated must come out without an error."""
    m.buf, m.is_request, m.method_id, m.status, m.edited, m.max_forwards_value
    m.contact_star, m.method, m.ruri, m.original_ruri, m.ruri_scheme_kind, m.version
    m.reason, m.raw, m.body, m.content_length, m.call_id, m.cseq, m.cseq_num, m.cseq_method
    m.max_forwards, m.from_tag, m.to_tag, m.has_to_tag, m.from_uri, m.to_uri, m.branch
    m.expires, m.user_agent, len(m), list(m)
    if m.is_request:
        touch_uri(m.uri)
    for a in (m.from_, m.to):
        if a is not None:
            touch_addr(a)
    tv = m.top_via
    vias = m.via
    expect((tv is None) == (not vias), "top_via vs via")
    for v in vias:
        touch_via(v)
    if vias:
        expect(vias[0].raw == tv.raw and vias[0].branch == m.branch, "top via")
    for a in m.contacts:
        touch_addr(a)
    for view in ("routes", "record_routes", "paths"):
        try:
            for a in getattr(m, view):     # not checked at parse time: may be refused here
                touch_addr(a)
        except cp.SipParseError:
            pass
    for name in NAMES:
        m.header(name), m.header_all(name), m.header_values(name), m.header_lines(name)
        m.has_header(name), m.header_count(name)
    for name in ("authorization", "proxy-authorization"):
        try:
            m.digest_credentials(name)
        except cp.SipParseError:
            pass
    m.top_via_with_stamp()
    expect(m.serialize() is m.raw or m.serialize() == m.raw, "unedited serialize")
    return vias


def filtered(headers, skip):
    return [(n, v) for n, v in headers if cp.header_id_of(n) not in skip]


def check_reply(m):
    if not m.is_request:
        return
    tagged = "fz1" if not m.has_to_tag else None
    out = cp.build_reply(m, 180, "Ringing", to_tag="fz1", extra=["X-Fuzz: 1"], body=b"ab")
    try:
        r = cp.parse(out)
    except cp.SipParseError as e:
        if over_limits(e, out, len(m)):
            return
        raise Mismatch(f"built reply does not parse: {e.reason}") from None
    expect(r.status == 180 and r.body == b"ab", "reply start/body")
    expect(r.call_id == m.call_id and r.cseq_num == m.cseq_num, "reply Call-ID/CSeq")
    expect(r.from_tag == m.from_tag, "reply From tag")
    if m.to is not None:
        expect(r.to_tag == (tagged or m.to_tag), "reply To tag")
    expect([v.raw for v in r.via[1:]] == [v.raw for v in m.via[1:]], "reply lower Vias")


def over_limits(e, out, lines):
    """A message at the parser's limits may outgrow them by what an edit adds: refusing
    that on the way back in is the limit working, not a defect."""
    return (e.reason == "Too many headers" and lines > 1024) or \
           (e.reason == "Message too large" and len(out) > 65535)


def check_relay(m, vias, data):
    """The request edits of t_relay(); the result must parse and keep every other header."""
    ids = cp.header_id_of
    m.insert_header("Record-Route", RECORD_ROUTE)
    mf = m.max_forwards
    n = mf - 1 if mf is not None and mf > 0 else 70
    m.set_max_forwards(n)
    m.set_ruri(NEW_RURI)
    if vias:
        m.add_top_via_params(";received=127.0.0.1;rport=5060")
    routes = None
    if m.has_header("route"):
        try:
            routes = m.routes
        except cp.SipParseError:
            routes = None
        if routes:
            m.remove_top_route()
    m.append_header("X-Fuzz", "1")
    if len(data) % 3 == 0:
        m.replace_header("Subject", "fuzz")
    out = m.serialize(via=NEW_VIA)
    try:
        r = cp.parse(out)
    except cp.SipParseError as e:
        if over_limits(e, out, len(m) + 4):
            return
        raise Mismatch(f"relayed message does not parse: {e.reason}") from None
    skip = {ids("via"), ids("record-route"), ids("max-forwards"), ids("route"), ids("subject"),
            ids("content-length")}
    def keep(h):
        return [(n, v) for n, v in filtered(h, skip) if n.lower() != "x-fuzz"]
    expect(keep(r.headers) == keep(m.headers), "untouched headers")
    expect(r.header_all("x-fuzz")[-1:] == ["1"], "appended header")
    expect(r.header_all("record-route") == [RECORD_ROUTE] + m.header_all("record-route"), "RR")
    expect(r.max_forwards == n and r.header_count("max-forwards") == 1, "Max-Forwards")
    expect(r.ruri == NEW_RURI and r.method == m.method, "R-URI")
    expect(r.body == m.body, "body")
    rv = r.via
    expect(rv[0].raw == NEW_VIA.decode(), "new Via")
    if vias:
        expect(len(rv) == len(vias) + 1, "Via count")
        expect(rv[1].received == "127.0.0.1" and rv[1].rport == 5060, "Via stamp")
        expect(rv[1].branch == vias[0].branch and rv[1].host == vias[0].host, "stamped Via")
        expect([v.raw for v in rv[2:]] == [v.raw for v in vias[1:]], "lower Vias")
    if routes:
        expect([a.raw for a in r.routes] == [a.raw for a in routes[1:]], "Route")
    if len(data) % 3 == 0:
        expect(r.header_all("subject") == ["fuzz"], "Subject")


def check_response_relay(m, vias):
    if not vias:
        return
    m.remove_top_via()
    out = m.serialize()
    try:
        r = cp.parse(out)
    except cp.SipParseError as e:
        raise Mismatch(f"relayed reply does not parse: {e.reason}") from None
    expect([v.raw for v in r.via] == [v.raw for v in vias[1:]], "reply Vias")
    skip = {cp.header_id_of("via")}
    expect(filtered(r.headers, skip) == filtered(m.headers, skip), "reply headers")
    expect(r.body == m.body and r.status == m.status, "reply body/status")


def check_helpers(data):
    """The stand-alone parsers take the same input: their error or a value, nothing else."""
    text = data.decode("utf-8", "surrogateescape")
    for f in (cp.parse_uri, cp.parse_name_addr):
        try:
            f(data)
        except cp.SipParseError:
            pass
    try:
        cp.parse_auth_header(text)
    except cp.SipParseError:
        pass
    cp.split_commas(text)
    cp.unescape(text)
    cp.header_id_of(text[:40])


def test_one_input(data):
    if len(data) < 2048:
        check_helpers(data)
    try:
        m = cp.parse(data)
    except cp.SipParseError as e:
        assert isinstance(e.reason, str) and e.reason
        return
    vias = touch(m)
    again = cp.parse(m.raw)
    expect(again.headers == m.headers and again.body == m.body, "raw re-parse")
    if m.is_request:
        check_reply(m)
        check_relay(m, vias, data)
    else:
        check_response_relay(m, vias)


def main():
    global cp
    ap = argparse.ArgumentParser(description="atheris harness for kampx._cparse",
                                 epilog="other arguments go to libFuzzer")
    ap.add_argument("--no-build", action="store_true", help="fuzz the in-tree module as built")
    ap.add_argument("--build-dir", default=os.path.join("/tmp", f"kampx-fuzz-{os.getuid()}"))
    ap.add_argument("--corpus", default=os.path.join(HERE, "fuzz-corpus"))
    args, rest = ap.parse_known_args()
    import atheris
    if args.no_build:
        sys.path.insert(0, REPO)
    else:
        if os.environ.get("KAMPX_FUZZ_BUILT") != "1":
            if not build(args.build_dir):
                sys.exit("no clang found: install clang, or fuzz without C coverage (--no-build)")
            os.environ["KAMPX_FUZZ_BUILT"] = "1"   # the re-exec and -jobs workers reuse it
        reexec_with_asan(sys.argv)
        sys.path.insert(0, args.build_dir)
    os.makedirs(args.corpus, exist_ok=True)
    for name, data in GENERATED_SEEDS.items():
        path = os.path.join(args.corpus, name)
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
    if not any(a.startswith("-max_len") for a in rest):
        rest.append("-max_len=65536")
    dirs = [a for a in rest if not a.startswith("-")]
    flags = [a for a in rest if a.startswith("-")]
    if not dirs:      # fuzzing: corpus dir first (written to), then read-only seed dirs
        dirs = [args.corpus] + ([TORTURE] if os.path.isdir(TORTURE) else [])  # read recursively
    atheris.Setup([sys.argv[0]] + flags + dirs, test_one_input)
    from kampx import _cparse
    cp = _cparse
    print(f"fuzzing {cp.__file__}", file=sys.stderr)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
