"""The script's pseudo-variables read from the request (kampx/routing/core.py): $fU, $fd,
$tU, $rU, $rd, held to what the parsed URIs say."""
from __future__ import annotations

import pytest

from kampx._cparse import parse
from kampx.routing import core
from kampx.routing.context import ctx


def _request(from_value: str, to_value: str, ruri: str = "sip:bob@kampx.test"):
    return parse((f"INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKrc\r\n"
                  f"From: {from_value};tag=1\r\nTo: {to_value}\r\nCall-ID: rc\r\n"
                  "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode())


@pytest.mark.parametrize("from_value, to_value", [
    ('"Alice" <sip:alice@Example.ORG:5070;transport=udp>', "<sip:bob@kampx.test>"),
    ("<sip:al%69ce@example.org>", "sip:Bob@kampx.test"),          # escapes kept, as Kamailio
    ("<sip:example.org>", "<sip:kampx.test>"),                     # no user
    ("<sips:carol@[2001:db8::1]>", "<tel:+4930123>"),
    ("<sip:@example.org>", "<urn:service:sos>"),                   # empty user, no host part
])
def test_from_and_to_parts_are_the_parsed_uris(from_value, to_value):
    m = _request(from_value, to_value)
    ctx.msg = m
    try:
        f, t = m.from_.parsed_uri, m.to.parsed_uri
        assert (core.from_user(), core.from_domain(), core.to_user()) == (f.user, f.host, t.user)
        assert (core.ruri_user(), core.ruri_host()) == ("bob", "kampx.test")
    finally:
        ctx.msg = None


def test_script_functions_outside_a_route_raise_instead_of_crashing():
    """`ctx.msg` is a C-typed field (kampx/routing/context.pxd) that the API reads as a C
    load: with no message (a script calling is_method() at import time, say) it must raise,
    not read through a null pointer. In a child process, so that a crash fails this test
    instead of taking the test run down."""
    import subprocess
    import sys

    code = (
        "from kampx.routing import core, sl, tm\n"
        "from kampx.routing.context import ctx\n"
        "assert ctx.msg is None\n"
        "for f in (core.has_totag, lambda: core.is_method('INVITE'), core.src_ip,\n"
        "          lambda: sl.sl_send_reply(200, 'OK'), tm.t_check_trans):\n"
        "    try:\n"
        "        f()\n"
        "    except AttributeError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit('no error')\n"
        "try:\n"
        "    ctx.msg = 'not a message'\n"
        "except TypeError:\n"
        "    print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("method, asked, expected", [
    ("INVITE", "INVITE", True),
    ("INVITE", "BYE", False),
    ("invite", "INVITE", False),      # methods are case-sensitive (RFC 3261 7.1)
    ("invite", "invite", True),
    ("FOO", "FOO", True),             # a method the parser has no id for
    ("FOO", "INVITE", False),
    ("BYE", "INVITE|BYE", True),
    ("ACK", "INVITE|BYE", False),
])
def test_is_method_matches_the_method_name_exactly(method, asked, expected):
    """is_method() compares the parser's method id for a method it knows, the name
    otherwise: either way what `msg.method == asked` says."""
    m = parse((f"{method} sip:bob@kampx.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKim\r\n"
               f"From: <sip:a@h>;tag=1\r\nTo: <sip:bob@kampx.test>\r\nCall-ID: im\r\n"
               f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n").encode())
    ctx.msg = m
    try:
        assert core.is_method(asked) is expected
    finally:
        ctx.msg = None


def test_is_method_of_a_reply_is_its_cseq_method():
    ctx.msg = parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKim\r\n"
                    b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: im\r\n"
                    b"CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n")
    try:
        assert core.is_method("INVITE") and not core.is_method("BYE")
    finally:
        ctx.msg = None


def test_cfg_get_reads_the_running_configuration_across_a_reload():
    """cfg_get() reads the configuration the worker runs now: after a reload (a new
    configuration object) the new values; an unknown key raises as getattr does."""
    import dataclasses
    from types import SimpleNamespace

    from kampx.config import Config

    first = Config()
    worker = SimpleNamespace(cfg=first)
    ctx.worker = worker
    try:
        assert core.cfg_get("acc", "log_flag") == first.acc.log_flag
        worker.cfg = dataclasses.replace(
            first, acc=dataclasses.replace(first.acc, log_flag=first.acc.log_flag + 7))
        assert core.cfg_get("acc", "log_flag") == first.acc.log_flag + 7
        assert core.cfg_get("routing", "carrier") == first.routing.carrier
        with pytest.raises(AttributeError):
            core.cfg_get("acc", "no_such_key")
    finally:
        ctx.worker = None


def test_exit_and_drop_raise_their_exceptions_from_c():
    """exit() and drop() (C builtins, kampx/routing/_raise.pyx) raise ScriptExit and Dropped
    (a ScriptExit: a caller that stops on exit also stops on drop), take no arguments, and
    are kampx's functions to the loader (their module and signature)."""
    import inspect

    from kampx.routing import flow

    with pytest.raises(flow.ScriptExit) as e:
        core.exit()
    assert type(e.value) is flow.ScriptExit
    with pytest.raises(flow.Dropped):
        core.drop()
    assert issubclass(flow.Dropped, flow.ScriptExit)
    for fn in (core.exit, core.drop):
        assert fn.__module__ == "kampx.routing.flow"
        assert str(inspect.signature(fn)) == "()"
        with pytest.raises(TypeError):
            fn(1)


def test_the_loader_refuses_exit_with_an_argument(tmp_path):
    """A script that calls exit(1) is refused when it loads, with its file and line."""
    from kampx.routing import loader

    script = tmp_path / "bad_exit.py"
    script.write_text("from kampx.routing import *\n\n\ndef request_route(msg):\n    exit(1)\n")
    with pytest.raises(loader.ScriptError) as e:
        loader.load(str(script))
    assert f"{script}:5: exit()" in str(e.value)
