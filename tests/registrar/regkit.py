"""Helpers of the registrar wire tests: a kampx running tests/scripts/registrar_script.py,
REGISTER / INVITE builders, and a look into its database."""
from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import time

from kampxproc import REPO, KampxProcess
from sipclient import SipClient, SipMessage, new_branch

SCRIPT = os.path.join(REPO, "tests", "scripts", "registrar_script.py")
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n"
_users = itertools.count(1)


def new_user(prefix: str = "u") -> str:
    """A user name no other test of this process registers."""
    return f"{prefix}{os.getpid()}x{next(_users)}"


def start_proxy(registrar: dict | None = None, usrloc: dict | None = None, children: int = 2,
                extra: dict | None = None) -> KampxProcess:
    config = {"registrar": {"min_expires": 1, **(registrar or {})}}
    if usrloc:
        config["usrloc"] = usrloc
    config.update(extra or {})
    return KampxProcess(script=SCRIPT, children=children, config=config).start()


def register(c: SipClient, px: KampxProcess, user: str, contact: str | None = "auto",
             expires: int | None = 60, *, call_id: str | None = None, cseq: int = 1,
             headers: list | None = None, via: str | None = None, send=None,
             timeout: float = 2.0) -> tuple:
    """Send a REGISTER for `user` (contact: a URI, a raw Contact value starting with '<' or
    '*', None for a query) and return (request, final reply)."""
    if contact == "auto":
        contact = f"<{c.contact_uri(user)}>"
    elif contact and contact[0] not in "<*":
        contact = f"<{contact}>"
    req = c.request("REGISTER", f"sip:{px.addrs.proxy}", from_uri=f"sip:{user}@kampx.test",
                    contact=contact, expires=expires, call_id=call_id, cseq=cseq,
                    headers=headers, via=via)
    (send or c.send)(req)
    return req, c.final(req, timeout)


def contacts(reply: SipMessage) -> list[str]:
    return reply.get_all("contact", split=True)


def bound(c: SipClient, px: KampxProcess, user: str) -> list[str]:
    """The user's bindings as the registrar lists them (a REGISTER without Contact)."""
    _, ok = register(c, px, user, contact=None, expires=None)
    assert ok.status == 200, str(ok)
    return contacts(ok)


def invite(c: SipClient, px: KampxProcess, user: str) -> tuple:
    """An INVITE for `user` sent by `c` (a carrier, say) -> (request, first final reply or
    None if none within 2 s)."""
    req = c.request("INVITE", f"sip:{user}@{px.addrs.proxy}", from_uri=f"sip:carrier@{c.ip}",
                    body=SDP)
    c.send(req)
    return req, c.response(req, 3.0, skip_provisional=True)


def nat_via(ip: str, port: int) -> str:
    """A Via naming a private address the request did not come from (a phone behind NAT)."""
    return f"SIP/2.0/UDP {ip}:{port};rport;branch={new_branch()}"


def db_rows(px: KampxProcess) -> list[dict]:
    """The location table as the database holds it now (read-only)."""
    path = os.path.join(px.workdir, "kampx.db")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM location")]
    finally:
        conn.close()


def wait_for(predicate, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(step)


def kill_all(px: KampxProcess) -> None:
    """SIGKILL the whole proxy, one process at a time by PID (the supervisor first, so it
    respawns nothing)."""
    children = list(px.children())
    os.kill(px.proc.pid, signal.SIGKILL)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    px.proc.wait(5)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") and _alive(p)
                                              for p in children):
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
