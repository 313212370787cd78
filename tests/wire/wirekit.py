"""Call flows the wire tests share: register a phone, place calls from the carrier or from a
user, and small assertions about the form of replies."""
from __future__ import annotations

import re

import proxyctl
from sipclient import (Request, SipClient, SipMessage, UAS, ack_for, authorize, header_params,
                       in_dialog, uri_of)

SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")

# how long to wait before concluding that nothing is coming
QUIET = 0.8
POOL_SIZE = 400


def pool() -> list[proxyctl.Subscriber]:
    return [proxyctl.Subscriber(str(20000 + i), f"pw-{20000 + i}-{i * 7919 % 1000:03d}")
            for i in range(POOL_SIZE)]


def start_target(options: proxyctl.Options | None = None) -> proxyctl.Target:
    t = proxyctl.make_target(options)
    t.add_subscribers(pool())
    t.add_carrier(t.addrs.carrier)
    try:
        t.start()
    except Exception:
        t.close()
        raise
    return t


def register(c: SipClient, target, sub, contact: str | None = None, expires: int | None = 60,
             expires_param: int | None = None, call_id: str | None = None, cseq: int = 1,
             expect: int = 200) -> tuple[Request, SipMessage]:
    """REGISTER sub -> 401 -> REGISTER with credentials -> the final reply (checked)."""
    hdr = f"<{contact or c.contact_uri(sub.user)}>"
    if expires_param is not None:
        hdr += f";expires={expires_param}"
    req = c.request("REGISTER", f"sip:{target.realm}", from_uri=f"sip:{sub.user}@{target.realm}",
                    contact=hdr if contact != "" else None, expires=expires, call_id=call_id,
                    cseq=cseq)
    c.send(req)
    ch = c.final(req)
    assert ch.status == 401, str(ch)
    req2 = authorize(req, ch, sub.user, sub.password)
    c.send(req2)
    ok = c.final(req2)
    assert ok.status == expect, str(ok)
    return req2, ok


def register_phone(c: SipClient, target, sub, phone: UAS, expires: int = 120) -> str:
    """Register `phone` as sub's device; returns its contact URI."""
    contact = f"sip:{sub.user}@{phone.ip}:{phone.port}"
    register(c, target, sub, contact=contact, expires=expires)
    return contact


def contacts(resp: SipMessage) -> list[str]:
    return resp.get_all("contact", split=True)


def carrier_invite(carrier: SipClient, target, number: str, **kw) -> Request:
    """An INVITE from the carrier's trunk for `number` (sent by the caller)."""
    req = carrier.request("INVITE", f"sip:{number}@{target.addrs.proxy}",
                          from_uri=f"sip:+15550100@{target.addrs.carrier}",
                          body=SDP, **kw)
    carrier.send(req)
    return req


def user_invite(c: SipClient, target, sub, number: str, **kw) -> tuple[Request, Request]:
    """INVITE from a user: 407 -> ACK -> INVITE with credentials (sent). Returns
    (first INVITE, authenticated INVITE)."""
    req = c.request("INVITE", f"sip:{number}@{target.realm}", from_uri=f"sip:{sub.user}@{target.realm}",
                    body=SDP, **kw)
    c.send(req)
    ch = c.final(req)
    assert ch.status == 407, str(ch)
    c.send(ack_for(req, ch))
    req2 = authorize(req, ch, sub.user, sub.password)
    c.send(req2)
    return req, req2


def answered_call(caller: SipClient, invite: Request, phone: UAS) -> tuple[SipMessage, SipMessage]:
    """Wait for the 200 of `invite`, ACK it through the proxy; returns (200, the ACK the phone
    received)."""
    ok = caller.expect_response(invite, status=200, timeout=3)
    ack = in_dialog("ACK", invite, ok)
    caller.send(ack)
    got = phone.expect("ACK", timeout=2)
    return ok, got


def sent_by(via: str) -> str:
    m = re.match(r"SIP/2\.0/UDP\s+([^;]+)", via)
    return m.group(1).strip() if m else ""


def assert_reply_form(resp: SipMessage, req: Request, status: int, reason: str) -> None:
    """A reply the proxy generated: exact status line, the request's Via with received/rport,
    From/Call-ID/CSeq unchanged, a To-tag, Content-Length 0."""
    assert (resp.status, resp.reason) == (status, reason), resp.first_line
    assert header_params(resp.vias[0]).get("branch") == req.branch
    assert resp.get("from") == req.get("from")
    assert resp.call_id == req.get("call-id")
    assert resp.get("cseq") == req.get("cseq")
    assert uri_of(resp.get("to")) == uri_of(req.get("to"))
    assert resp.to_tag, "a proxy-generated reply carries a To-tag"
    assert resp.get("content-length") == "0"
