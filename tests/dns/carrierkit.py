"""The built-in script's carrier by name, on loopback: a kampx whose [routing] carrier is
"sip:carrier.example", a DNS server of the test's holding NAPTR -> SRV -> A for it, two carrier
switches (SIP UASs) and an authenticated user placing outbound calls."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from dnsserver import DnsServer
from kampxproc import KampxProcess
from sipclient import UAS, Behaviour, SipClient, ack_for, authorize, in_dialog

USER, PASSWORD, REALM = "alice", "alice-secret-1", "kampx.test"
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 0\r\n")


class CarrierRig:
    def __init__(self, children: int = 2, dns_timeout: float = 1.0, fr_failover_ms: int = 1000,
                 carrier: str = "sip:carrier.example", carrier_set: int = 0,
                 config: dict | None = None):
        self.dns = DnsServer("127.0.0.1")
        sections = {
            "routing": {"carrier": carrier, "carrier_set": carrier_set},
            "dns": {"nameservers": [self.dns.nameserver], "timeout": dns_timeout},
            "tm": {"fr_failover_ms": fr_failover_ms},
        }
        for name, keys in (config or {}).items():
            sections.setdefault(name, {}).update(keys)
        self.px = KampxProcess(script="builtin:kamailio101", children=children, config=sections)
        self.ctl("add", USER, PASSWORD)
        self.sw1 = UAS(self.px.addrs.carrier, 0, user="sw1").start()
        self.sw2 = UAS(self.px.addrs.phone, 0, user="sw2").start()
        self.zone(((10, self.sw1), (20, self.sw2)))
        if carrier_set:  # the two switches as the set's gateways, by address
            for uas in (self.sw1, self.sw2):
                self.ctl("dispatcher", "add", str(carrier_set), f"sip:{uas.ip}:{uas.port}")
        self.px.start()
        self.client = SipClient(self.px.addrs.client, 0, proxy=self.px.addr, user=USER, domain=REALM)

    def zone(self, switches, ttl: int = 300) -> None:
        """carrier.example's NAPTR -> SRV (priority, switch) [(weight, ...)] -> A records."""
        dns = self.dns
        dns.add("carrier.example", "NAPTR", ttl,
                '10 50 "s" "SIP+D2U" "" _sip._udp.carrier.example.')
        srv = []
        for i, entry in enumerate(switches, 1):
            prio, uas = entry[0], entry[1]
            weight = entry[2] if len(entry) > 2 else 50
            srv.append(f"{prio} {weight} {uas.port} sw{i}.carrier.example.")
            dns.add(f"sw{i}.carrier.example", "A", ttl, uas.ip)
        dns.add("_sip._udp.carrier.example", "SRV", ttl, *srv)

    def ctl(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "kampx.cli.kampxctl", "--config", self.px.config_path, *args]
        r = subprocess.run(cmd, env=self.px.env, capture_output=True, text=True, timeout=20)
        if check and r.returncode != 0:
            raise AssertionError(f"kampxctl {' '.join(args)}: {r.returncode} {r.stderr}")
        return r

    def ctl_json(self, *args):
        return json.loads(self.ctl(*args, "--json").stdout)

    def reset(self) -> None:
        for uas in (self.sw1, self.sw2):
            uas.behaviour = Behaviour()
            with uas._cond:
                uas.received.clear()
        self.dns.silent = False
        self.dns.delay = 0.0
        self.zone(((10, self.sw1), (20, self.sw2)))
        self.ctl("dns", "clear")

    def call(self, number: str = "15550001000", timeout: float = 8.0):
        """An outbound call from the user: 407, then the authenticated INVITE. Returns
        (INVITE, final reply, seconds from the INVITE to the final); a 2xx is ACKed."""
        c = self.client
        req = c.request("INVITE", f"sip:{number}@{REALM}", body=SDP)
        c.send(req)
        ch = c.final(req)
        assert ch.status == 407, str(ch)
        c.send(ack_for(req, ch))
        inv = authorize(req, ch, USER, PASSWORD)
        t0 = time.monotonic()
        c.send(inv)
        final = c.final(inv, timeout)
        took = time.monotonic() - t0
        if 200 <= final.status < 300:
            c.send(in_dialog("ACK", inv, final))
        elif final.status >= 300:
            c.send(ack_for(inv, final))
        return inv, final, took

    def close(self) -> None:
        self.client.close()
        for uas in (self.sw1, self.sw2):
            uas.stop()
        self.px.close()
        self.dns.close()
