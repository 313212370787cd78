#!/usr/bin/env python3
"""kampx against Kamailio over TCP or TLS, side by side, with the team harness (bench.py).

The harness speaks UDP; this tool runs the same scenarios over a stream transport by
changing only what must change, then hands over to bench.py's own runner and report:

  - SIPp runs in TCP mode (`-t t1`: one connection per SIPp process, as a trunk or a
    busy phone line) instead of `-t u1`;
  - both proxies listen on udp:, tcp: (and tls:) at the harness's address, and send calls
    to the carrier gateway over the same transport: Kamailio's harness config with TCP (and
    the tls module) enabled and `$du = "sip:GW;transport=tcp"` before the relay
    (written to OUT/kamailio-stream.cfg), kampx's generated config with the same listens and
    `carrier = "sip:GW;transport=tcp"`;
  - TLS: Debian's SIPp is built without TLS, so SIPp's TCP goes through socat, which speaks
    TLS to the proxy (UAC side: SIPp, its messages addressed to PROXY:5061, sends them with
    -rsa to socat at PROXY:5062 -> TLS PROXY:5061; gateway
    side: the proxy's TLS to GW:5061 -> socat -> SIPp's TCP at GW:5060). socat's CPU is not
    the proxy's: the CPU-per-call columns count the proxy's processes only. The latency
    probe (UDP OPTIONS) is off in TLS mode.

kampx's /metrics at the end of each step is kept as OUT/run/kampx-*/metrics.txt
(connections, hand-offs, handed sends).

Scenarios: options, register and call-outbound (call-carrier-in needs the callee's SIPp to
register over the connection it answers on, which SIPp cannot do across two processes).

    python3 tools/bench_transport.py --bench ../shared/bench --transport tcp \\
        --kampx-bin .venv/bin/kampx --kampxctl-bin .venv/bin/kampxctl \\
        --rates options=4000,register=1000,call-outbound=300 --duration 10 --out /tmp/bt-tcp

Needs: sip-tester, kamailio (+ kamailio-tls-modules for TLS), sqlite3, socat and openssl
for TLS. Every address is the harness's loopback block (127.0.1.x).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

FRONT_PORT = 5062  # TLS mode: socat's TCP front for SIPp's UAC, on the proxy's address
TLS_PORT = 5061


def _derive_kamailio_cfg(src: str, out: str, proxy: str, gw: str, transport: str, pki: str) -> str:
    with open(src) as f:
        text = f.read()

    def swap(old: str, new: str) -> None:
        nonlocal text
        if old not in text:
            raise SystemExit(f"{src}: no line '{old.strip()}' to change (the harness changed)")
        text = text.replace(old, new, 1)

    listens = f"disable_tcp=no\nlisten=tcp:{proxy}:5060\n"
    if transport == "tls":
        listens += f"enable_tls=yes\nlisten=tls:{proxy}:{TLS_PORT}\n"
    swap("disable_tcp=yes\n", listens)
    if transport == "tls":
        tls_cfg = os.path.join(out, "kamailio-tls.cfg")
        with open(tls_cfg, "w") as f:
            for side in ("server", "client"):
                f.write(
                    f"[{side}:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
                    f"require_certificate = no\ncertificate = {pki}/server.pem\n"
                    f"private_key = {pki}/server.key\n\n"
                )
        swap(
            'loadmodule "permissions.so"\n',
            f'loadmodule "permissions.so"\nloadmodule "tls.so"\nmodparam("tls", "config", "{tls_cfg}")\n',
        )
    port = TLS_PORT if transport == "tls" else 5060
    swap(
        "\trewritehostport(CARRIER_HOSTPORT);\n\troute(RELAY);",
        f'\trewritehostport(CARRIER_HOSTPORT);\n\t$du = "sip:{gw}:{port};transport={transport}";'
        "\n\troute(RELAY);",
    )
    path = os.path.join(out, "kamailio-stream.cfg")
    with open(path, "w") as f:
        f.write(text)
    return path


def _make_pki(d: str) -> None:
    os.makedirs(d, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", "server.key", "-out", "server.pem", "-days", "2",
         "-subj", "/CN=bench-proxy"],
        cwd=d, check=True, capture_output=True, timeout=30,
    )


def _patch(bench, transport: str, pki: str) -> None:
    """SIPp in TCP mode, kampx's generated config with the stream listens and carrier."""
    plain_sipp_base = bench.sipp_base

    def sipp_base(args, scn_file, local_ip, *rest, **kw):
        cmd = plain_sipp_base(args, scn_file, local_ip, *rest, **kw)
        cmd[cmd.index("-t") + 1] = "t1"
        if transport == "tls" and local_ip != bench.ADDR["carrier_uas"]:
            # a UAC: its messages name the proxy's TLS address, its bytes go to socat
            cmd += ["-rsa", f"{bench.ADDR['proxy']}:{FRONT_PORT}"]
        return cmd

    bench.sipp_base = sipp_base

    proxy, gw = bench.ADDR["proxy"], bench.ADDR["carrier_uas"]
    write_plain = bench.KampxTarget._write_config

    def write_config(self):
        path = write_plain(self)
        with open(path) as f:
            text = f.read()
        listens = [f"udp:{proxy}:5060", f"tcp:{proxy}:5060"]
        port = 5060
        if transport == "tls":
            listens.append(f"tls:{proxy}:{TLS_PORT}")
            port = TLS_PORT
            text += f'\n[tls]\ncertificate = "{pki}/server.pem"\nprivate_key = "{pki}/server.key"\n'
        old_listen = f'listen = ["udp:{proxy}:{bench.PROXY_PORT}"]'
        old_carrier = f'carrier = "sip:{gw}:{bench.SIP_PORT}"'
        for old in (old_listen, old_carrier):
            if old not in text:
                raise SystemExit(f"kampx config: no line '{old}' to change (the harness changed)")
        text = text.replace(old_listen, "listen = [" + ", ".join(f'"{x}"' for x in listens) + "]")
        text = text.replace(old_carrier, f'carrier = "sip:{gw}:{port};transport={transport}"')
        with open(path, "w") as f:
            f.write(text)
        return path

    bench.KampxTarget._write_config = write_config

    plain_stop = bench.KampxTarget.stop

    def stop(self):
        """kampx's counters at the end of the step (connections, hand-offs) into its work
        directory, then the harness's stop."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{proxy}:9090/metrics", timeout=3) as r:
                text = r.read().decode()
            with open(os.path.join(self.workdir, "metrics.txt"), "w") as f:
                f.write(text)
        except OSError:
            pass
        plain_stop(self)

    bench.KampxTarget.stop = stop

    if transport != "tls":
        return
    plain_run_step = bench.run_step

    def run_step(args, target, scen_name, rate, stepdir, callers, callees):
        """The step with socat's TLS fronts up, SIPp's UAC pointed at the front."""
        fronts = [
            bench.popen(
                ["socat", f"TCP-LISTEN:{FRONT_PORT},bind={proxy},fork,reuseaddr",
                 f"OPENSSL:{proxy}:{TLS_PORT},verify=0"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ),
            bench.popen(
                ["socat", f"OPENSSL-LISTEN:{TLS_PORT},bind={gw},fork,reuseaddr,verify=0,"
                 f"cert={pki}/server.pem,key={pki}/server.key", f"TCP:{gw}:5060"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ),
        ]
        bench.PROXY_PORT = TLS_PORT  # what the UAC's messages name; -rsa sends them to socat
        try:
            time.sleep(0.5)
            return plain_run_step(args, target, scen_name, rate, stepdir, callers, callees)
        finally:
            bench.PROXY_PORT = 5060
            for p in fronts:
                bench.stop_proc(p)

    bench.run_step = run_step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True, help="the harness folder (../shared/bench)")
    ap.add_argument("--transport", choices=("tcp", "tls"), required=True)
    ap.add_argument("--out", required=True)
    args, rest = ap.parse_known_args()
    bench_dir = os.path.abspath(args.bench)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    for tool in ["sipp", "kamailio", "sqlite3"] + (["socat", "openssl"] if args.transport == "tls" else []):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (Debian: docs/benchmarks.md lists the packages)")
    pki = os.path.join(out, "pki")
    if args.transport == "tls":
        _make_pki(pki)
    sys.path.insert(0, bench_dir)
    import bench  # the harness, as a module

    cfg = _derive_kamailio_cfg(
        os.path.join(bench_dir, "kamailio", "kamailio.cfg"), out, bench.ADDR["proxy"],
        bench.ADDR["carrier_uas"], args.transport, pki,
    )
    _patch(bench, args.transport, pki)
    argv = ["bench.py", "--kamailio-cfg", cfg, "--out", os.path.join(out, "run"), *rest]
    if "--target" not in rest:
        argv += ["--target", "kamailio", "--target", "kampx"]
    if "--scenario" not in rest:
        argv += ["--scenario", "options", "--scenario", "register", "--scenario", "call-outbound"]
    if args.transport == "tls":
        argv += ["--probe-rate", "0"]
    sys.argv = argv
    return bench.main() or 0


if __name__ == "__main__":
    sys.exit(main())
