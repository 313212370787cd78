"""Overload control and the sl ACK filter inside a real worker (kampx.sandbox): which
requests are refused when the worker is behind, and that the ACK of a reply the proxy made
statelessly never reaches the route script."""
from __future__ import annotations

import textwrap

import pytest

from kampx.sandbox import Sandbox

SRC = ("192.0.2.10", 5060)
SCRIPT = textwrap.dedent("""\
    from kampx.routing import *

    SEEN = []


    def request_route(msg):
        SEEN.append(msg.method)
        if is_method("ACK"):
            exit()
        sl_send_reply(404, "Not here")
    """)


def request(method: str, n: int = 1, to_tag: str | None = None) -> bytes:
    to = "<sip:bob@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    return (f"{method} sip:bob@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-ov-{n}\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:alice@192.0.2.10>;tag=a1\r\n"
            f"To: {to}\r\nCall-ID: ov-{n}@192.0.2.10\r\nCSeq: 1 {method}\r\n"
            "Content-Length: 0\r\n\r\n").encode()


@pytest.fixture
def box(tmp_path):
    script = tmp_path / "seen.py"
    script.write_text(SCRIPT)
    with Sandbox(config={"routing": {"script": str(script)}}) as b:
        yield b


def seen(box) -> list[str]:
    return box.worker.script.module.SEEN


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def to_tag_of(data: bytes) -> str:
    line = next(h for h in data.split(b"\r\n") if h.lower().startswith(b"to:"))
    return line.split(b";tag=")[1].decode()


def test_the_ack_of_a_stateless_reply_stops_before_the_script(box):
    box.feed(request("OPTIONS", 1), SRC)
    (reply, _), = box.sent
    assert status_of(reply) == 404
    box.feed(request("ACK", 1, to_tag=to_tag_of(reply)), SRC)
    # another To-tag (an ACK for somebody else's reply) still goes to the script
    box.feed(request("ACK", 2, to_tag="not-ours"), SRC)
    assert seen(box) == ["OPTIONS", "ACK"]


def test_behind_refuses_only_new_invite_and_register(box):
    box.worker.overload.observe(0.5)            # the batch waited 500 ms
    for n, method in enumerate(("INVITE", "REGISTER", "OPTIONS", "MESSAGE"), 1):
        box.feed(request(method, n), SRC)
    box.feed(request("INVITE", 9, to_tag="dialog-1"), SRC)  # in-dialog: served
    codes = [status_of(d) for d, _ in box.sent]
    assert codes == [503, 503, 404, 404, 404]
    assert b"Retry-After: 5\r\n" in box.sent[0][0]
    assert seen(box) == ["OPTIONS", "MESSAGE", "INVITE"]
    # the refused INVITE's ACK is absorbed like any ACK of a stateless reply
    box.feed(request("ACK", 1, to_tag=to_tag_of(box.sent[0][0])), SRC)
    assert "ACK" not in seen(box)
    box.worker.overload.observe(0.01)           # caught up
    box.feed(request("INVITE", 10), SRC)
    assert seen(box)[-1] == "INVITE"


def test_the_threshold_and_the_methods_come_from_the_config(tmp_path):
    script = tmp_path / "seen.py"
    script.write_text(SCRIPT)
    cfg = {"routing": {"script": str(script)},
           "overload": {"queue_delay_ms": 300, "methods": ["MESSAGE"], "retry_after_s": 9}}
    with Sandbox(config=cfg) as b:
        b.worker.overload.observe(0.2)          # under 300 ms: nothing refused
        b.feed(request("MESSAGE", 1), SRC)
        b.worker.overload.observe(0.4)
        b.feed(request("INVITE", 2), SRC)
        b.feed(request("MESSAGE", 3), SRC)
        codes = [status_of(d) for d, _ in b.sent]
        assert codes == [404, 404, 503]
        assert b"Retry-After: 9\r\n" in b.sent[2][0]
