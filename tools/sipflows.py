"""The benchmark scenarios as message flows through a kampx.sandbox worker (no sockets, no
processes): keepalive OPTIONS, REGISTER with digest, a call from the carrier to a registered
user, an authenticated call out to the carrier. Each flow plays every side: the caller
sends, the worker relays, the callee answers the very request the worker sent (its branch,
its Vias). tools/profile_flow.py times and profiles them; tools/fuzz_receive.py takes its
seeds from them.

    box = make_sandbox()
    flows = Flows(box)
    flows.register(1); flows.carrier_call(1)
"""
from __future__ import annotations

import hashlib
import re

PROXY = "127.0.0.1"
REALM = "kampx.test"
CARRIER = ("192.0.2.9", 5060)    # address group 200 in the sandbox's permissions table
PHONE = ("192.0.2.20", 5062)     # where the registered users' bindings point
CLIENT = ("192.0.2.30", 5060)
USER, PASSWORD = "alice", "flow-pw"
SDP = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
ROUTE = f"Route: <sip:{PROXY};lr>\r\n"


def make_sandbox(users: int = 1, **config):
    """A worker with the built-in script, the carrier's address in group 200, and `users`
    subscribers (alice, then user0001...) with PASSWORD."""
    from kampx.sandbox import Sandbox
    sections = {"auth": {"realm": REALM},
                "routing": {"carrier": f"sip:{CARRIER[0]}:5060", "carrier_group": 200},
                "security": {"pike_enabled": False, "auth_ban_failures": 0},
                "registrar": {"min_expires": 1}}
    for name, keys in config.items():
        sections.setdefault(name, {}).update(keys)
    names = [USER] + [f"user{i:04d}" for i in range(1, users)]
    return Sandbox(config=sections, listen=PROXY, subscribers={n: PASSWORD for n in names},
                   addresses=[(200, CARRIER[0], 32, 0, "carrier")])


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def authorization(challenge: str, method: str, uri: str, header: str, user: str = USER) -> str:
    """The credentials line answering `challenge` (qop=auth when offered, nc 1)."""
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    ha1 = _md5(f"{user}:{params['realm']}:{PASSWORD}")
    ha2 = _md5(f"{method}:{uri}")
    base = f'{header}: Digest username="{user}", realm="{params["realm"]}", ' \
           f'nonce="{params["nonce"]}", uri="{uri}"'
    if "qop" in params:
        response = _md5(f"{ha1}:{params['nonce']}:00000001:fz:auth:{ha2}")
        return base + f', response="{response}", qop=auth, nc=00000001, cnonce="fz"'
    return base + f', response="{_md5(ha1 + ":" + params["nonce"] + ":" + ha2)}"'


def request(method: str, ruri: str, src: tuple, call_id: str, cseq: int, *, branch: str,
            to_tag: str = "", extra: str = "", body: str = "", user: str = USER) -> bytes:
    to = f"<sip:{user}@{REALM}>" + (f";tag={to_tag}" if to_tag else "")
    return (f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {src[0]}:{src[1]};rport;branch={branch}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@{REALM}>;tag=ft{call_id}\r\nTo: {to}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:{user}@{src[0]}:{src[1]}>\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n{body}").encode()


def reply(req: bytes, code: int, reason: str, to_tag: str = "callee",
          contact: tuple = PHONE) -> bytes:
    """A reply to a request the worker sent, copying its Vias and dialog headers; the
    answerer's Contact is at `contact`."""
    head = req.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    keep = [h for h in head if h.split(b":", 1)[0].lower() in
            (b"via", b"from", b"call-id", b"cseq", b"record-route")]
    to = [h for h in head if h.lower().startswith(b"to:")][0]
    if code > 100 and b";tag=" not in to:
        to += b";tag=" + to_tag.encode()
    return (b"SIP/2.0 %d " % code + reason.encode() + b"\r\n" + b"\r\n".join(keep + [to])
            + b"\r\nContact: <sip:%s@%s:%d>\r\nContent-Length: 0\r\n\r\n"
            % (USER.encode(), contact[0].encode(), contact[1]))


def last_to(box, dest=None, start: bytes = b"") -> bytes:
    for data, addr in reversed(box.sent):
        if (dest is None or addr == dest) and data.startswith(start):
            return data
    raise RuntimeError(f"the sandbox sent nothing starting with {start!r} to {dest}")


def header_value(data: bytes, name: bytes) -> str:
    return data.split(name + b": ")[1].split(b"\r\n")[0].decode()


class Flows:
    """The scenarios, each one complete exchange per call; `feed(data, src)` is the box's
    unless given (the fuzz target records the datagrams as seeds)."""

    def __init__(self, box, feed=None):
        self.box = box
        self.feed = feed or box.feed

    def options(self, i: int) -> None:
        self.feed(request("OPTIONS", f"sip:{PROXY}", CLIENT, f"ka{i}", 1, branch=f"z9hG4bKo{i}"),
                  CLIENT)

    def register(self, i: int, user: str = USER, expires: int = 3600) -> None:
        ruri = f"sip:{REALM}"
        cid = f"reg{i}"
        self.feed(request("REGISTER", ruri, PHONE, cid, 1, branch=f"z9hG4bKr{i}a", user=user),
                  PHONE)
        ch = header_value(last_to(self.box, PHONE, b"SIP/2.0 401"), b"WWW-Authenticate")
        auth = authorization(ch, "REGISTER", ruri, "Authorization", user)
        self.feed(request("REGISTER", ruri, PHONE, cid, 2, branch=f"z9hG4bKr{i}b", user=user,
                          extra=f"{auth}\r\nExpires: {expires}\r\n"), PHONE)

    def carrier_call(self, i: int, user: str = USER, final=(200, "OK")) -> None:
        """The carrier calls a registered user: INVITE, 100/180/200 (or `final`), ACK, BYE."""
        cid = f"in{i}"
        self.feed(request("INVITE", f"sip:{user}@{PROXY}", CARRIER, cid, 1,
                          branch=f"z9hG4bKi{i}", extra="Content-Type: application/sdp\r\n",
                          body=SDP), CARRIER)
        relayed = last_to(self.box, PHONE, b"INVITE ")
        for code, reason in ((100, "Trying"), (180, "Ringing"), final):
            self.feed(reply(relayed, code, reason), PHONE)
        if final[0] >= 300:
            self.feed(request("ACK", f"sip:{user}@{PROXY}", CARRIER, cid, 1,
                              branch=f"z9hG4bKi{i}", to_tag="callee"), CARRIER)
            return
        self.feed(request("ACK", f"sip:{user}@{PHONE[0]}:{PHONE[1]}", CARRIER, cid, 1,
                          branch=f"z9hG4bKa{i}", to_tag="callee", extra=ROUTE), CARRIER)
        self.feed(request("BYE", f"sip:{user}@{PHONE[0]}:{PHONE[1]}", CARRIER, cid, 2,
                          branch=f"z9hG4bKb{i}", to_tag="callee", extra=ROUTE), CARRIER)
        self.feed(reply(last_to(self.box, PHONE, b"BYE "), 200, "OK"), PHONE)

    def cancelled_call(self, i: int, user: str = USER) -> None:
        """The carrier calls, the phone rings, the carrier cancels: CANCEL, 200, 487, ACK."""
        cid = f"cx{i}"
        inv = request("INVITE", f"sip:{user}@{PROXY}", CARRIER, cid, 1, branch=f"z9hG4bKx{i}")
        self.feed(inv, CARRIER)
        relayed = last_to(self.box, PHONE, b"INVITE ")
        self.feed(reply(relayed, 180, "Ringing"), PHONE)
        self.feed(inv.replace(b"INVITE sip", b"CANCEL sip", 1).replace(b"1 INVITE", b"1 CANCEL"),
                  CARRIER)
        self.feed(reply(last_to(self.box, PHONE, b"CANCEL "), 200, "OK"), PHONE)
        self.feed(reply(relayed, 487, "Request Terminated"), PHONE)
        self.feed(request("ACK", f"sip:{user}@{PROXY}", CARRIER, cid, 1, branch=f"z9hG4bKx{i}",
                          to_tag="callee"), CARRIER)

    def outbound_call(self, i: int) -> None:
        """A user calls out: INVITE, 407, ACK, INVITE with credentials, relayed to the
        carrier, 100/180/200, ACK, BYE and its 200."""
        cid = f"out{i}"
        ruri = f"sip:1555{i:07d}@{REALM}"
        self.feed(request("INVITE", ruri, PHONE, cid, 1, branch=f"z9hG4bKu{i}a", body=SDP,
                          extra="Content-Type: application/sdp\r\n"), PHONE)
        r407 = last_to(self.box, PHONE, b"SIP/2.0 407")
        self.feed(request("ACK", ruri, PHONE, cid, 1, branch=f"z9hG4bKu{i}a",
                          to_tag=header_value(r407, b"To").split("tag=")[1]), PHONE)
        auth = authorization(header_value(r407, b"Proxy-Authenticate"), "INVITE", ruri,
                             "Proxy-Authorization")
        self.feed(request("INVITE", ruri, PHONE, cid, 2, branch=f"z9hG4bKu{i}b", body=SDP,
                          extra=f"{auth}\r\nContent-Type: application/sdp\r\n"), PHONE)
        relayed = last_to(self.box, CARRIER, b"INVITE ")
        for code, reason in ((100, "Trying"), (180, "Ringing"), (200, "OK")):
            self.feed(reply(relayed, code, reason, contact=CARRIER), CARRIER)
        target = f"sip:{USER}@{CARRIER[0]}:{CARRIER[1]}"   # the carrier's Contact
        self.feed(request("ACK", target, PHONE, cid, 2, branch=f"z9hG4bKu{i}c", to_tag="callee",
                          extra=ROUTE), PHONE)
        self.feed(request("BYE", target, PHONE, cid, 3, branch=f"z9hG4bKu{i}d", to_tag="callee",
                          extra=ROUTE), PHONE)
        self.feed(reply(last_to(self.box, CARRIER, b"BYE "), 200, "OK"), CARRIER)
