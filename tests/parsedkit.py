"""Parsed SIP messages for unit tests of code that takes a kampx Message (the dialogs,
accounting): real `kampx._cparse` parses, so the tests hold that code to the parser's
contract, and modules typed `msg: Message` (a C type: no stand-in passes) can be tested
without a proxy."""

from __future__ import annotations

from types import SimpleNamespace

from kampx._cparse import Message, parse

CALLER = "sip:+15550100@carrier.example"
CALLEE = "sip:alice@kampx.test"
# what the code reads of the socket a message came in on (kampx.transport.sockets)
LSOCK = SimpleNamespace(
    index=0, reliable=False, rr_value="<sip:127.0.0.1;lr>", rr_double=b"<sip:127.0.0.1;r2=on;lr>"
)


def request(
    method: str = "INVITE",
    call_id: str = "c1",
    from_tag: str = "ft",
    to_tag: str | None = None,
    *,
    ruri: str = CALLEE,
    from_uri: str = CALLER,
    to_uri: str = CALLEE,
    cseq: int = 1,
    contact: str | None = "sip:c@203.0.113.10",
    src: tuple = ("203.0.113.10", 5060),
    headers: tuple[str, ...] = (),
) -> Message:
    """A request as it came from `src` on LSOCK."""
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK{call_id}{cseq}",
        f"From: <{from_uri}>;tag={from_tag}",
        f"To: <{to_uri}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Max-Forwards: 70",
    ]
    if contact:
        lines.append(f"Contact: <{contact}>")
    msg = _parse(lines, headers)
    msg.src = src
    return msg


def reply(
    code: int = 200,
    to_tag: str | None = "tt",
    *,
    reason: str = "OK",
    call_id: str = "c1",
    contact: str | None = "sip:alice@198.51.100.7",
    record_routes: tuple[str, ...] = ("<sip:127.0.0.1;lr>",),
    src: tuple = ("198.51.100.7", 5060),
    headers: tuple[str, ...] = (),
) -> Message:
    """A reply to request() as it came from the callee at `src` on LSOCK."""
    lines = [
        f"SIP/2.0 {code} {reason}",
        "Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bKc11",
        f"From: <{CALLER}>;tag=ft",
        f"To: <{CALLEE}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
    ]
    lines += [f"Record-Route: {rr}" for rr in record_routes]
    if contact:
        lines.append(f"Contact: <{contact}>")
    msg = _parse(lines, headers)
    msg.src = src
    return msg


def _parse(lines: list[str], headers: tuple[str, ...]) -> Message:
    text = "\r\n".join([*lines, *headers, "Content-Length: 0", "", ""])
    msg = parse(text.encode())
    msg.lsock = LSOCK
    return msg
