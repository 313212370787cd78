#!/usr/bin/env python3
"""Overload, side by side: carrier-in calls offered at 1x, 2x, 5x a rate M (the measured
maximum of the call-carrier-in scenario), against kampx and against Kamailio (stock: the
reference config of tests/reference, no ratelimit), one target after the other.

Per step, SIPp (the carrier) offers factor x M calls/s for SECONDS; a 503 ends a call
cleanly (ACKed), anything else is the normal flow: INVITE, 180, 200, ACK, BYE, 200 through
the proxy to a SIPp UAS registered as the callee. Beside it, a keepalive prober sends an
OPTIONS every 20 ms (no retransmission) and times each answer. When the load stops, a
probe INVITE for an unregistered number every 100 ms measures the recovery: the time until
one is processed (404) within 1 s.

  completed/s   calls the phone completed (UAS successful) per second of load: the goodput
  refused       calls that ended with 503 (kampx's overload control; Kamailio has none)
  lost          calls the carrier gave up on without a final reply (timeouts, losses)
  broken        calls the phone accepted that did not complete (an in-progress failure)

Everything on loopback addresses of this machine, bounded (SIPp -m and -timeout); only
processes started here are stopped.

    python3 tools/overload_bench.py --max kampx=3100,kamailio=5200    # kampx, then Kamailio
    python3 tools/overload_bench.py --max 3100 --targets kampx --factors 2 --seconds 10
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for p in (REPO, os.path.join(REPO, "tests"), os.path.join(REPO, "tests", "wire")):
    sys.path.insert(0, p)

import proxyctl  # noqa: E402
import sipprun  # noqa: E402
import wirekit  # noqa: E402
from sipclient import SipClient  # noqa: E402

UAC_PORT, UAS_PORT = 5064, 5062
CALLEE = proxyctl.Subscriber("30001", "callee-pw-30001")

# uac_call.xml of the tests, with a 503 ending the call cleanly
UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="carrier-in under overload">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:carrier@[local_ip]:[local_port]>;tag=[call_number]kx[pid]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:carrier@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=carrier 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="503" optional="true" next="refused"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: <sip:carrier@[local_ip]:[local_port]>;tag=[call_number]kx[pid]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="180" timeout="300" ontimeout="hangup"/>
  <label id="hangup"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      From: <sip:carrier@[local_ip]:[local_port]>;tag=[call_number]kx[pid]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true" next="end"/>
  <label id="refused"/>
  <send>
    <![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <label id="end"/>
</scenario>
"""


class Prober(threading.Thread):
    """An OPTIONS keepalive every `interval` s, each sent once; answered ones timed."""

    def __init__(self, local_ip: str, proxy: tuple, interval: float = 0.02):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((local_ip, 0))
        self.sock.settimeout(0.005)
        self.proxy, self.interval = proxy, interval
        self.sent: dict[str, float] = {}
        self.rtt: list[float] = []
        self.running = True

    def run(self) -> None:
        ip, port = self.sock.getsockname()
        nxt = time.monotonic()
        while self.running:
            now = time.monotonic()
            if now >= nxt:
                nxt += self.interval
                cid = uuid.uuid4().hex
                self.sent[cid] = now
                msg = (f"OPTIONS sip:{self.proxy[0]}:{self.proxy[1]} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP {ip}:{port};branch=z9hG4bK{cid[:16]}\r\n"
                       f"From: <sip:probe@{ip}>;tag={cid[:8]}\r\nTo: <sip:{self.proxy[0]}>\r\n"
                       f"Call-ID: {cid}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                       "Content-Length: 0\r\n\r\n")
                self.sock.sendto(msg.encode(), self.proxy)
            try:
                data = self.sock.recv(65535)
            except OSError:
                continue
            for line in data.split(b"\r\n"):
                if line.lower().startswith(b"call-id:"):
                    t = self.sent.get(line.split(b":", 1)[1].strip().decode())
                    if t is not None:
                        self.rtt.append(time.monotonic() - t)

    def stop(self) -> dict:
        self.running = False
        self.join(2)
        self.sock.close()
        r = sorted(self.rtt)
        return {"sent": len(self.sent), "answered": len(r),
                "p99_ms": r[int(len(r) * 0.99) - 1] * 1e3 if r else None,
                "max_ms": r[-1] * 1e3 if r else None}


def recovery(target, limit: float = 20.0) -> float | None:
    """Seconds until a new INVITE (an unregistered number) is processed within 1 s."""
    t0 = time.monotonic()
    with SipClient(target.addrs.carrier, 0, proxy=target.proxy) as c:
        while time.monotonic() - t0 < limit:
            inv = wirekit.carrier_invite(c, target, "39999")
            r = c.recv(1.0, match=lambda m: not m.is_request and m.call_id == inv.get("call-id")
                       and m.status >= 200)
            if r is not None and r.status == 404:
                return time.monotonic() - t0
            time.sleep(0.1)
    return None


def refused_count(target) -> int:
    if target.name != "kampx":
        return 0
    from kampx.control.client import ControlClient, ControlError
    ctl = ControlClient(os.path.join(target.workdir, "kampx.sock"))
    for _ in range(50):       # the control process starts beside the workers
        try:
            st = ctl.call("stats.get_statistics", {"group": "core"})
            return int(st.get("core", {}).get("overload_rejected", 0))
        except ControlError:
            time.sleep(0.1)
    raise RuntimeError("kampx's control socket did not answer")


ERRORS_DIR = os.environ.get("KAMPX_OVERLOAD_ERRORS")   # keep SIPp's error logs there


def errors(side: str, name: str, factor: float) -> list[str]:
    if not ERRORS_DIR:
        return []
    return ["-trace_err", "-error_file", os.path.join(ERRORS_DIR, f"{name}-{factor:g}x-{side}.log")]


class BenchKamailio(proxyctl.KamailioTarget):
    """The tests' Kamailio set up as for a benchmark: 1 GB of shared memory (the tests' 64 MB
    runs out near 900 calls/s: each transaction is held for seconds after its end) and the
    TLSF allocator (the default one costs Kamailio much of its speed at these sizes)."""

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("-m") + 1] = "1024"
        cmd[cmd.index("-M") + 1] = "16"
        return [cmd[0], "-x", "tlsf", *cmd[1:]]


def run_target(name: str, m: int, factors: list[float], seconds: float, scen: str) -> list[dict]:
    cls = BenchKamailio if name == "kamailio" else proxyctl.TARGETS[name]
    target = cls(proxyctl.Options(children=2))
    target.add_subscribers([CALLEE])
    target.add_carrier(target.addrs.carrier)
    rows = []
    try:
        target.start()
        with SipClient(target.addrs.phone, 0, proxy=target.proxy) as reg:
            wirekit.register(reg, target, CALLEE, expires=3600,
                             contact=f"sip:{CALLEE.user}@{target.addrs.phone}:{UAS_PORT}")
        for step, factor in enumerate(factors):
            rate = int(m * factor)
            calls = int(rate * seconds)
            uas = sipprun.Sipp("uas_call.xml", (target.addrs.phone, UAS_PORT),
                               timeout=seconds * 3 + 60, extra=errors("uas", name, factor))
            probe = Prober(target.addrs.client, target.proxy)
            probe.start()
            r0 = refused_count(target)
            t0 = time.monotonic()
            uac = sipprun.Sipp(scen, (target.addrs.carrier, UAC_PORT + 2 * step), target.proxy,
                               calls=calls, rate=rate, service=CALLEE.user,
                               timeout=seconds * 2 + 40,
                               extra=["-l", str(rate * 12), *errors("uac", name, factor)])
            time.sleep(max(0.0, t0 + seconds - time.monotonic()))
            rec = recovery(target)
            ur = uac.wait()
            time.sleep(3.0)                 # the UAS's calls end (BYE, then its 2 s pause)
            sr = uas.stop()
            pr = probe.stop()
            refused = refused_count(target) - r0
            rows.append({"target": name, "factor": factor, "rate": rate, "calls": calls,
                         "offered": (ur.successful + ur.failed) / seconds,
                         "completed": sr.successful, "completed_s": sr.successful / seconds,
                         "refused": refused if name == "kampx" else None,
                         "lost": ur.failed, "broken": sr.failed, "recovery": rec, **pr})
            print(fmt(rows[-1]), flush=True)
            time.sleep(2.0)
    finally:
        target.close()
    return rows


HEAD = (f"{'target':<9}{'x M':>5}{'offered/s':>10}{'completed/s':>12}{'refused':>9}"
        f"{'lost':>7}{'broken':>7}{'OPTIONS ans.':>14}{'p99 ms':>8}{'max ms':>8}{'recovery':>10}")


def fmt(r: dict) -> str:
    rec = f"{r['recovery']:.2f} s" if r["recovery"] is not None else "> 20 s"
    p99 = f"{r['p99_ms']:.0f}" if r["p99_ms"] is not None else "-"
    mx = f"{r['max_ms']:.0f}" if r["max_ms"] is not None else "-"
    return (f"{r['target']:<9}{r['factor']:>5g}{r['offered']:>10.0f}{r['completed_s']:>12.0f}"
            f"{'-' if r['refused'] is None else r['refused']:>9}{r['lost']:>7}{r['broken']:>7}"
            f"{r['answered']:>7}/{r['sent']:<6}{p99:>8}{mx:>8}{rec:>10}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", required=True,
                    help="M, the target's maximum call-carrier-in calls/s: one number for "
                         "every target, or per target: kampx=3100,kamailio=5200")
    ap.add_argument("--targets", default="kampx,kamailio")
    ap.add_argument("--factors", default="1,2,5")
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    if not sipprun.available():
        sys.exit("SIPp (sip-tester) is not installed")
    with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
        f.write(UAC)
    try:
        names = args.targets.split(",")
        if "=" in args.max:
            maxima = {k: int(v) for k, v in (i.split("=") for i in args.max.split(","))}
        else:
            maxima = dict.fromkeys(names, int(args.max))
        print(f"M = {maxima} calls/s, {args.seconds:g} s per step\n{HEAD}", flush=True)
        rows = []
        for name in names:
            rows += run_target(name, maxima[name], [float(x) for x in args.factors.split(",")],
                               args.seconds, f.name)
        for name in {r["target"] for r in rows}:
            done = [r["completed_s"] for r in rows if r["target"] == name]
            print(f"{name}: completed/s mean {statistics.mean(done):.0f}")
    finally:
        os.unlink(f.name)


if __name__ == "__main__":
    main()
