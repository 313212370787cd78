"""SIP over TLS on loopback, with a CA and certificates the test makes (openssl command):
a phone registers over TLS and is called on its connection by the UDP carrier; with
[tls] verify_client a client without a certificate, or with one from another CA, is refused
and counted, and one with a good certificate is served."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile

import pytest
from authkit import AuthProxy
from sipclient import ack_for, new_branch, new_callid, new_tag, parse
from streamclient import (
    StreamPeer,
    StreamServer,
    UdpPeer,
    echo_reply,
    lines,
    options,
    outbound_invite,
    register,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")

PASSWORD = "alice-pw-1"


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(d: str, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN={name}", cwd=d)


def _make_cert(d: str, ca: str, name: str, san: str) -> None:
    with open(os.path.join(d, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName={san}\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
             cwd=d)


@pytest.fixture(scope="module")
def pki():
    d = tempfile.mkdtemp(prefix="kampx-tls-")
    _make_ca(d, "ca")
    _make_ca(d, "rogue-ca")
    _make_cert(d, "ca", "server", "IP:127.0.0.1")  # the address is not checked by the tests
    _make_cert(d, "ca", "phone", "DNS:phone.kampx.test")
    _make_cert(d, "rogue-ca", "rogue", "DNS:rogue.kampx.test")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _proxy(pki: str, verify_client: bool, more: dict | None = None,
           carrier_tls: bool = False) -> AuthProxy:
    tls = {
        "certificate": os.path.join(pki, "server.pem"),
        "private_key": os.path.join(pki, "server.key"),
        "ca_list": os.path.join(pki, "ca.pem"),
        "verify_client": verify_client,
        **(more or {}),
    }
    px = AuthProxy(users={"alice": PASSWORD}, config={"tls": tls})
    px.add_listen(f"tls:{px.addrs.proxy}:5061")
    if carrier_tls:  # outbound calls to the gateway over TLS, at GW:5061
        px.set_carrier(f"sip:{px.addrs.carrier}:5061;transport=tls")
    return px.start()


def _client_ctx(pki: str, cert: str | None) -> ssl.SSLContext:
    """A client that checks the proxy's certificate against the test CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(os.path.join(pki, "ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(os.path.join(pki, f"{cert}.pem"), os.path.join(pki, f"{cert}.key"))
    return ctx


def _options(peer: StreamPeer, proxy_ip: str) -> str:
    return options(peer, f"sip:{proxy_ip}:5061;transport=tls")


def test_a_phone_registered_over_tls_is_called_on_its_connection(pki):
    px = _proxy(pki, verify_client=False)
    proxy = px.addrs.proxy
    phone = StreamPeer.connect(px.addrs.phone, (proxy, 5061), tls=_client_ctx(pki, None))
    carrier = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    carrier.bind((px.addrs.carrier, 0))
    carrier.settimeout(3.0)
    chp = f"{px.addrs.carrier}:{carrier.getsockname()[1]}"
    try:
        phone.send(_options(phone, proxy))
        assert phone.recv().status == 200
        register(phone, "alice", PASSWORD, ";transport=tls")

        carrier.sendto(
            lines(
                "INVITE sip:alice@kampx.test SIP/2.0",
                f"Via: SIP/2.0/UDP {chp};branch={new_branch()}",
                f"From: <sip:+15550100@{px.addrs.carrier}>;tag={new_tag()}",
                "To: <sip:alice@kampx.test>",
                f"Call-ID: {new_callid()}",
                "CSeq: 1 INVITE",
                f"Contact: <sip:gw@{chp}>",
                "Max-Forwards: 70",
            ).encode(),
            (proxy, 5060),
        )
        inv = phone.recv()
        assert inv.method == "INVITE"
        assert inv.vias[0].startswith(f"SIP/2.0/TLS {proxy};branch=")  # 5061: TLS's default
        assert inv.get_all("record-route") == [
            f"<sip:{proxy};transport=tls;r2=on;lr>",
            f"<sip:{proxy};r2=on;lr>",
        ]
        phone.send(echo_reply(inv, 486, "Busy Here", "callee", None))
        while True:
            reply = parse(carrier.recvfrom(65535)[0])
            if reply.status >= 200:
                break
        assert reply.status == 486
        assert px.metric('kampx_tcp_current_opened_connections{transport="tls"}') == 1
    finally:
        phone.close()
        carrier.close()
        px.close()


def _refused(px, pki: str, cert: str | None) -> bool:
    """True when the proxy will not talk to a client showing `cert` (None: no certificate):
    the handshake fails, or (TLS 1.3) the first read meets the proxy's alert or its close."""
    try:
        peer = StreamPeer.connect(px.addrs.client, (px.addrs.proxy, 5061), tls=_client_ctx(pki, cert))
    except (ssl.SSLError, ConnectionError):
        return True
    try:
        peer.send(_options(peer, px.addrs.proxy))
        return peer.recv_raw(3.0) == b""
    except (ssl.SSLError, ConnectionError):
        return True
    finally:
        peer.close()


def test_verify_client_refuses_no_certificate_and_another_cas(pki):
    px = _proxy(pki, verify_client=True)
    try:
        assert _refused(px, pki, None)
        assert _refused(px, pki, "rogue")
        assert not _refused(px, pki, "phone")
        assert px.metric("kampx_tcp_tls_handshake_failures_total") == 2
        assert px.metric('kampx_tcp_closed_total{reason="tls_failed"}') == 2
        assert px.metric("kampx_core_internal_errors_total") == 0
    finally:
        px.close()


def test_a_certificate_that_cannot_be_loaded_stops_the_start_with_one_line(pki):
    px = AuthProxy(config={"tls": {"certificate": os.path.join(pki, "missing.pem"),
                                   "private_key": os.path.join(pki, "server.key")}})
    px.add_listen(f"tls:{px.addrs.proxy}:5061")
    try:
        with pytest.raises(RuntimeError) as e:
            px.start(ready_timeout=5)
        assert f"cannot listen on tls:{px.addrs.proxy}:5061: [tls] certificate/key" in str(e.value)
    finally:
        px.close()


def test_min_version_refuses_an_older_client(pki):
    px = _proxy(pki, verify_client=False, more={"min_version": "TLSv1.3"})
    try:
        old = _client_ctx(pki, None)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises((ssl.SSLError, ConnectionError)):
            StreamPeer.connect(px.addrs.client, (px.addrs.proxy, 5061), tls=old)
        new = StreamPeer.connect(px.addrs.client, (px.addrs.proxy, 5061), tls=_client_ctx(pki, None))
        new.send(_options(new, px.addrs.proxy))
        assert new.recv().status == 200
        new.close()
        assert px.metric("kampx_tcp_tls_handshake_failures_total") == 1
    finally:
        px.close()


def test_calls_to_a_tls_carrier_check_its_certificate(pki):
    """[tls] verify_server: the gateway's certificate (for its IP, from the CA) is checked;
    a call reaches it over TLS. A gateway showing another CA's certificate is refused: the
    call fails at once with 480."""
    px = _proxy(pki, verify_client=False, more={"verify_server": True}, carrier_tls=True)
    gw_ip = px.addrs.carrier
    _make_cert(pki, "ca", "gw", f"IP:{gw_ip}")
    _make_cert(pki, "rogue-ca", "gw-rogue", f"IP:{gw_ip}")
    phone = UdpPeer(px.addrs.phone, (px.addrs.proxy, 5060))
    try:
        for cert, works in (("gw", True), ("gw-rogue", False)):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(os.path.join(pki, f"{cert}.pem"), os.path.join(pki, f"{cert}.key"))
            gw = StreamServer(gw_ip, 5061, tls=ctx)
            try:
                if works:
                    _, _, authed = outbound_invite(phone, "alice", PASSWORD)
                    conn = gw.accept()
                    got = conn.recv()
                    assert got.method == "INVITE"
                    assert got.vias[0].startswith(f"SIP/2.0/TLS {px.addrs.proxy};branch=")
                    conn.send(echo_reply(got, 486, "Busy Here", "gw", None))
                    busy = phone.recv(skip_provisional=True)
                    assert busy.status == 486
                    # the ACK stops the 486's retransmissions, which would reach the next call
                    phone.send(ack_for(authed, busy).encode())
                    conn.close()
                else:
                    _, _, authed = outbound_invite(phone, "alice", PASSWORD)
                    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                        gw.accept().recv()  # the proxy gives up on the handshake
                    refused = phone.recv(skip_provisional=True)
                    assert refused.status == 480
                    phone.send(ack_for(authed, refused).encode())
            finally:
                gw.close()
        assert px.metric("kampx_tcp_tls_handshake_failures_total") >= 1
    finally:
        phone.close()
        px.close()
