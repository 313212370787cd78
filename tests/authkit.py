"""Helpers of the auth and security wire tests (tests/auth, tests/security): a kampx running
the built-in script (or any script) with subscribers and the carrier provisioned through
kampxctl, and the REGISTER flows the tests repeat.

Addresses come from proxyctl's locked loopback blocks: proxy C (port 5060), carrier C+1 (in
address group 200; its gateway listens at C+1:5070), phones C+2, clients C+3.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import sipclient
from kampxproc import REPO, KampxProcess
from sipclient import SipClient, authorize

REALM = "kampx.test"
CARRIER_GROUP = 200
GW_PORT = 5070


def kampxctl_cmd() -> list[str]:
    if os.environ.get("KAMPXCTL_BIN"):
        return os.environ["KAMPXCTL_BIN"].split()
    path = shutil.which("kampxctl")
    return [path] if path else [sys.executable, "-m", "kampx.cli.kampxctl"]


class AuthProxy(KampxProcess):
    """kampx with the built-in script (by default), `users` {name: password} added and the
    carrier's address in group 200 before start. `config` keys override the defaults (pike
    and the auth ban are off unless a test turns them on)."""

    def __init__(self, users: dict[str, str] | None = None, config: dict | None = None,
                 script: str = "builtin:kamailio101", children: int = 2):
        sections = {"auth": {"realm": REALM}, "registrar": {"min_expires": 1}}
        for name, keys in (config or {}).items():
            sections.setdefault(name, {}).update(keys)
        super().__init__(script=script, children=children, config=sections)
        # the carrier's gateway address is only known once the addresses are allocated
        self._append_routing()
        self.users = dict(users or {})

    def _append_routing(self) -> None:
        with open(self.config_path) as f:
            text = f.read()
        routing = (f"carrier_group = {CARRIER_GROUP}\n"
                   f'carrier = "sip:{self.addrs.carrier}:{GW_PORT}"\n')
        text = text.replace("[routing]\n", "[routing]\n" + routing, 1)
        with open(self.config_path, "w") as f:
            f.write(text)

    def set_carrier(self, uri: str) -> None:
        """[routing] carrier = `uri` instead of the gateway's UDP address (before start())."""
        with open(self.config_path) as f:
            text = f.read()
        old = f'carrier = "sip:{self.addrs.carrier}:{GW_PORT}"'
        assert old in text
        with open(self.config_path, "w") as f:
            f.write(text.replace(old, f'carrier = "{uri}"'))

    @property
    def gateway(self) -> tuple[str, int]:
        return (self.addrs.carrier, GW_PORT)

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = kampxctl_cmd() + ["--config", self.config_path, *args]
        r = subprocess.run(cmd, cwd=self.workdir, env=self.env, capture_output=True, text=True,
                           timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.returncode} {r.stderr.strip()}")
        return r

    def start(self, ready_timeout: float = 15.0) -> "AuthProxy":
        if self.users:
            path = os.path.join(self.workdir, "users.csv")
            with open(path, "w") as f:
                f.writelines(f"{u},{p}\n" for u, p in self.users.items())
            self.ctl("add", "--file", path)
        self.ctl("address", "add", str(CARRIER_GROUP), self.addrs.carrier, "32", "0", "carrier")
        super().start(ready_timeout)
        return self

    def client(self, user: str = "wire", ip: str | None = None) -> SipClient:
        return SipClient(ip or self.addrs.client, 0, proxy=self.addr, user=user, domain=REALM)


def register_request(c: SipClient, user: str, expires: int = 60, **kw) -> sipclient.Request:
    return c.request("REGISTER", f"sip:{REALM}", from_uri=f"sip:{user}@{REALM}",
                     expires=expires, **kw)


def challenge(c: SipClient, user: str, **kw) -> tuple[sipclient.Request, sipclient.SipMessage]:
    """REGISTER without credentials -> (request, its 401)."""
    req = register_request(c, user, **kw)
    c.send(req)
    r = c.final(req)
    assert r.status == 401, str(r)
    return req, r


def answer(c: SipClient, req, ch, user: str, password: str, **kw) -> sipclient.SipMessage | None:
    """Send `req` again with credentials answering `ch`; the final reply or None."""
    again = authorize(req, ch, user, password, **kw)
    c.send(again)
    return c.response(again, 1.0)


def digest_header(req, ch, user: str, password: str, *, qop: str | None = None, nc: int = 1,
                  cnonce: str | None = None, algorithm: str | None = None) -> str:
    """The Authorization value for `req` answering challenge `ch` (parsed), with a qop the
    challenge may not have offered."""
    return sipclient.digest_response(
        username=user, password=password, realm=ch["realm"], nonce=ch["nonce"],
        method=req.method, uri=req.uri, algorithm=algorithm or ch.get("algorithm", "MD5"),
        qop=qop, nc=nc, cnonce=cnonce, include_algorithm="algorithm" in ch or algorithm is not None)


def with_credentials(req, header_value: str, name: str = "Authorization"):
    """A copy of `req` with a new branch, CSeq + 1 and the given credentials."""
    out = req.copy()
    out.remove("Authorization").remove("Proxy-Authorization")
    out.add(name, header_value)
    via = out.get("via")
    out.set("Via", re.sub(r"branch=[^;,\s]+", "branch=" + sipclient.new_branch(), via))
    num, meth = out.cseq
    out.set("CSeq", f"{num + 1} {meth}")
    return out


def script_path(name: str) -> str:
    return os.path.join(REPO, "tests", "auth", "scripts", name)
