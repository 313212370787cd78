"""kampx replay: captures written here (dpkt), replayed through the built-in script and a
changed copy of it."""
import socket

import dpkt
import pytest

from kampx.cli.kampx import main
from kampx.testing.capture import CaptureError, datagrams
from kampx.testing.messages import build_request

PROXY = "10.0.0.1"
CARRIER = ("203.0.113.10", 5060)
ALICE = ("198.51.100.10", 5060)
BOB = ("198.51.100.11", 5060)
T0 = 1767254400.0  # 2026-01-01 08:00:00 UTC
CREDENTIALS = ('Digest username="alice", realm="kampx.test", nonce="live-proxy-nonce", '
               'uri="sip:kampx.test", response="0123456789abcdef0123456789abcdef"')


def request(method, ruri, src, n, headers=(), **fields):
    return build_request(method, ruri, src=src, from_uri=fields.pop("from_uri", f"sip:u@{src[0]}"),
                         to_uri=fields.pop("to_uri", ruri), call_id=f"cap-{n}", from_tag=f"t{n}",
                         branch=f"z9hG4bKcap{n}", headers=headers, **fields)


def traffic():
    """(time, src, dst, payload) of a morning at the proxy."""
    aor = "sip:alice@kampx.test"
    invite = request("INVITE", aor, CARRIER, 1)
    return [
        (T0, CARRIER, (PROXY, 5060), invite),
        (T0 + 0.01, (PROXY, 5060), CARRIER, b"SIP/2.0 404 User not Registered\r\n\r\n"),
        (T0 + 1, ALICE, (PROXY, 5060), request("REGISTER", "sip:kampx.test", ALICE, 2,
                                               from_uri=aor, to_uri=aor,
                                               contact=f"<sip:alice@{ALICE[0]}:5060>",
                                               headers=[f"Authorization: {CREDENTIALS}"])),
        (T0 + 1.5, ALICE, (PROXY, 5060), b"\r\n\r\n"),  # a keepalive: not SIP
        (T0 + 2, CARRIER, (PROXY, 5060), request("INVITE", aor, CARRIER, 3)),
        (T0 + 2.01, (PROXY, 5060), ALICE, request("INVITE", "sip:alice@198.51.100.10:5060",
                                                  (PROXY, 5060), 4)),
        (T0 + 3, BOB, (PROXY, 5060), request("INVITE", "sip:+15550100@kampx.test", BOB, 5,
                                             from_uri="sip:bob@kampx.test")),
    ]


def ip_packet(src, dst, payload):
    family = socket.AF_INET6 if ":" in src[0] else socket.AF_INET
    udp = dpkt.udp.UDP(sport=src[1], dport=dst[1], data=payload)
    udp.ulen = len(udp)
    if family == socket.AF_INET6:
        return dpkt.ip6.IP6(src=socket.inet_pton(family, src[0]), dst=socket.inet_pton(family, dst[0]),
                            nxt=dpkt.ip.IP_PROTO_UDP, hlim=64, data=udp, plen=len(udp))
    return dpkt.ip.IP(src=socket.inet_pton(family, src[0]), dst=socket.inet_pton(family, dst[0]),
                      p=dpkt.ip.IP_PROTO_UDP, data=udp)


def write_capture(path, packets, fmt="pcap", link="ethernet"):
    with open(path, "wb") as f:
        if fmt == "pcapng":
            writer = dpkt.pcapng.Writer(f, linktype=dpkt.pcap.DLT_EN10MB)
        else:
            writer = dpkt.pcap.Writer(f, linktype=dpkt.pcap.DLT_EN10MB if link == "ethernet" else 101)
        for ts, src, dst, payload in packets:
            ip = ip_packet(src, dst, payload)
            frame = ip if link == "raw" else dpkt.ethernet.Ethernet(
                src=b"\x02\x00\x00\x00\x00\x01", dst=b"\x02\x00\x00\x00\x00\x02",
                type=dpkt.ethernet.ETH_TYPE_IP6 if ":" in src[0] else dpkt.ethernet.ETH_TYPE_IP,
                data=ip)
            writer.writepkt(bytes(frame), ts=ts)
    return str(path)


def replay(capsys, *args):
    code = main(["replay", *args])
    return code, capsys.readouterr().out.splitlines()


EXPECTED = [
    "08:00:00.000 203.0.113.10:5060 INVITE sip:alice@kampx.test -> reply 404 User not Registered",
    "08:00:01.000 198.51.100.10:5060 REGISTER sip:kampx.test -> reply 200 OK",
    "08:00:02.000 203.0.113.10:5060 INVITE sip:alice@kampx.test -> "
    "relay INVITE sip:alice@198.51.100.10:5060 -> 198.51.100.10:5060",
    "08:00:03.000 198.51.100.11:5060 INVITE sip:+15550100@kampx.test -> "
    "reply 407 Proxy Authentication Required",
    "4 requests: 1 relay, 1 reply 200, 1 reply 404, 1 reply 407 (proxy 10.0.0.1:5060, script builtin:kamailio101)",
    "not replayed: 1 replies from the proxy, 1 requests not to the proxy, 1 UDP datagrams that are not SIP",
]


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_replay_prints_each_decision_and_a_summary(tmp_path, capsys, fmt):
    cap = write_capture(tmp_path / f"morning.{fmt}", traffic(), fmt)
    code, lines = replay(capsys, cap, "--address", "200:203.0.113.10")
    assert code == 0
    assert lines == EXPECTED


def test_without_the_carrier_group_the_trunk_is_challenged(tmp_path, capsys):
    cap = write_capture(tmp_path / "morning.pcap", traffic())
    code, lines = replay(capsys, cap)
    assert lines[0].endswith("-> reply 407 Proxy Authentication Required")


def test_diff_shows_only_the_requests_decided_differently(tmp_path, capsys):
    from kampx.routing import loader

    builtin = open(loader._locate("builtin:kamailio101")[1]).read()
    changed = builtin.replace('sl_send_reply(404, "User not Registered")',
                              'sl_send_reply(480, "Temporarily Unavailable")')
    assert changed != builtin
    (tmp_path / "new.py").write_text(changed)
    cap = write_capture(tmp_path / "morning.pcap", traffic())
    code, lines = replay(capsys, cap, "--address", "200:203.0.113.10",
                         "--diff", str(tmp_path / "new.py"))
    assert code == 1
    assert lines[:3] == [
        "08:00:00.000 203.0.113.10:5060 INVITE sip:alice@kampx.test",
        "    builtin:kamailio101  reply 404 User not Registered",
        "    new.py               reply 480 Temporarily Unavailable",
    ]
    assert lines[4] == "1 of 4 requests decided differently by builtin:kamailio101 and new.py"
    code, lines = replay(capsys, cap, "--address", "200:203.0.113.10",
                         "--script", str(tmp_path / "new.py"), "--diff", str(tmp_path / "new.py"))
    assert code == 0 and lines[0].startswith("4 requests")


def test_ipv6_over_raw_ip_with_the_proxy_named(tmp_path, capsys):
    proxy, phone = ("2001:db8::1", 5060), ("2001:db8::10", 5060)
    options = request("OPTIONS", "sip:[2001:db8::1]", phone, 1, from_uri="sip:u@[2001:db8::10]")
    other = request("OPTIONS", "sip:[2001:db8::2]", phone, 2, from_uri="sip:u@[2001:db8::10]")
    cap = write_capture(tmp_path / "v6.pcap", [(T0, phone, proxy, options),
                                               (T0 + 1, phone, ("2001:db8::2", 5060), other)],
                        link="raw")
    code, lines = replay(capsys, cap, "--proxy", "2001:db8::1")
    assert lines[0] == "08:00:00.000 [2001:db8::10]:5060 OPTIONS sip:[2001:db8::1] -> reply 200 Keepalive"
    assert lines[-1] == "not replayed: 1 requests not to the proxy"


def test_the_config_sets_realm_and_carrier(tmp_path, capsys):
    (tmp_path / "kampx.toml").write_text(
        '[core]\nlisten = ["udp:10.0.0.1:5060"]\n[routing]\ncarrier = "sip:192.0.2.77:5080"\n'
        '[db]\nurl = "sqlite:///nonexistent/dir/kampx.db"\n')
    bob = request("INVITE", "sip:+15550100@kampx.test", BOB, 1, from_uri="sip:bob@kampx.test",
                  headers=['Proxy-Authorization: Digest username="bob", realm="kampx.test", '
                           'nonce="n", uri="sip:+15550100@kampx.test", '
                           'response="0123456789abcdef0123456789abcdef"'])
    cap = write_capture(tmp_path / "out.pcap", [(T0, BOB, (PROXY, 5060), bob)])
    code, lines = replay(capsys, cap, "--config", str(tmp_path / "kampx.toml"))
    assert lines[0].endswith("-> relay INVITE sip:+15550100@192.0.2.77:5080 -> 192.0.2.77:5080")


def test_fragments_are_left_out(tmp_path):
    ip = ip_packet(CARRIER, (PROXY, 5060), request("OPTIONS", "sip:10.0.0.1", CARRIER, 1))
    ip.mf = 1
    path = tmp_path / "frag.pcap"
    with open(path, "wb") as f:
        dpkt.pcap.Writer(f, linktype=101).writepkt(bytes(ip), ts=T0)
    from kampx.testing.capture import CaptureStats
    stats = CaptureStats()
    assert list(datagrams(str(path), stats)) == [] and stats.fragments == 1


def test_unreadable_captures(tmp_path, capsys):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all")
    with pytest.raises(CaptureError):
        list(datagrams(str(junk)))
    assert main(["replay", str(junk)]) == 2
    assert main(["replay", str(tmp_path / "missing.pcap")]) == 2
    assert "missing.pcap" in capsys.readouterr().err
    cap = write_capture(tmp_path / "morning.pcap", traffic())
    assert main(["replay", cap, "--script", str(tmp_path / "nope.py")]) == 2
    assert "route script" in capsys.readouterr().err


def test_a_broken_request_is_replayed_not_fatal(tmp_path, capsys):
    broken = request("OPTIONS", "sip:10.0.0.1", CARRIER, 1, from_uri="sip:u@2001:db8::10")
    cap = write_capture(tmp_path / "broken.pcap", [(T0, CARRIER, (PROXY, 5060), broken)])
    code, lines = replay(capsys, cap)
    assert code == 0
    assert lines[0] == "08:00:00.000 203.0.113.10:5060 OPTIONS sip:10.0.0.1 -> reply 400 Bad From header"


def test_a_bad_address_option(tmp_path, capsys):
    cap = write_capture(tmp_path / "morning.pcap", traffic())
    assert main(["replay", cap, "--address", "carrier:203.0.113.10"]) == 2
    assert "--address carrier:203.0.113.10: expected GROUP:IP[/MASK]" in capsys.readouterr().err


def test_downstream_replies_are_fed_back_to_the_relayed_request(tmp_path):
    from kampx.testing.capture import CaptureStats
    from kampx.testing.replay import Captured, Replayer

    carrier_gw = ("192.0.2.50", 5060)
    run = Replayer("builtin:kamailio101", {"routing": {"carrier": "sip:192.0.2.50:5060"}}, [],
                   (PROXY, 5060))
    try:
        bob = request("INVITE", "sip:+15550100@kampx.test", BOB, 1, from_uri="sip:bob@kampx.test",
                      headers=["Proxy-Authorization: Digest username=\"bob\", realm=\"kampx.test\", "
                               "nonce=\"n\", uri=\"sip:+15550100@kampx.test\", "
                               "response=\"0123456789abcdef0123456789abcdef\""])
        out = run.decide(Captured(T0, BOB, bob, True))
        assert out.relayed[0].destination == carrier_gw
        # the carrier's 503, as captured: its Via names the live proxy's branch, not ours
        busy = (b"SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKlive\r\n"
                b"From: <sip:bob@kampx.test>;tag=t1\r\nTo: <sip:+15550100@kampx.test>;tag=gw1\r\n"
                b"Call-ID: cap-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
        fed = run.answer(Captured(T0 + 0.5, carrier_gw, busy, False))
        assert "route CARRIER_FAILED" in fed.calls
        assert (fed.reply.code, fed.reply.destination) == (500, BOB)
        stray = busy.replace(b"cap-1", b"cap-other")
        assert run.answer(Captured(T0 + 0.6, carrier_gw, stray, False)) is None
    finally:
        run.close()


def test_the_summary_counts_replies_fed_back(tmp_path, capsys):
    phone_ok = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKlive\r\n"
                b"From: <sip:u@203.0.113.10>;tag=t3\r\nTo: <sip:alice@kampx.test>;tag=ph\r\n"
                b"Call-ID: cap-3\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@198.51.100.10>\r\n"
                b"Content-Length: 0\r\n\r\n")
    answered = sorted(traffic() + [(T0 + 2.5, ALICE, (PROXY, 5060), phone_ok)], key=lambda p: p[0])
    cap = write_capture(tmp_path / "answered.pcap", answered)
    code, lines = replay(capsys, cap, "--address", "200:203.0.113.10")
    assert "1 downstream replies fed back to the requests relayed" in lines


def _sll(ip):
    return dpkt.sll.SLL(type=dpkt.ethernet.ETH_TYPE_IP, hlen=6, hdr=b"\x02\x00\x00\x00\x00\x01",
                        data=ip)


def _sll2(ip):
    return dpkt.sll2.SLL2(ethtype=dpkt.ethernet.ETH_TYPE_IP, intindex=1,
                          hdr=b"\x02\x00\x00\x00\x00\x01", data=ip)


@pytest.mark.parametrize("linktype, frame", [
    (dpkt.pcap.DLT_LINUX_SLL, _sll),
    (dpkt.pcap.DLT_LINUX_SLL2, _sll2),
    (dpkt.pcap.DLT_NULL, lambda ip: dpkt.loopback.Loopback(family=socket.AF_INET, data=ip)),
    (101, lambda ip: ip),
])
def test_link_layers(tmp_path, linktype, frame):
    payload = request("OPTIONS", "sip:10.0.0.1", CARRIER, 1)
    path = tmp_path / "link.pcap"
    with open(path, "wb") as f:
        dpkt.pcap.Writer(f, linktype=linktype).writepkt(
            bytes(frame(ip_packet(CARRIER, (PROXY, 5060), payload))), ts=T0)
    (d,) = datagrams(str(path))
    assert (d.time, d.src, d.dst, d.payload) == (T0, CARRIER, (PROXY, 5060), payload)


def test_the_proxy_port_comes_from_the_capture(tmp_path, capsys):
    ping = request("OPTIONS", "sip:10.0.0.1:5080", CARRIER, 1)
    cap = write_capture(tmp_path / "port.pcap", [(T0, CARRIER, (PROXY, 5080), ping)])
    code, lines = replay(capsys, cap)
    assert lines[0].endswith("OPTIONS sip:10.0.0.1:5080 -> reply 200 Keepalive")
    assert "(proxy 10.0.0.1:5080," in lines[1]
