"""The stream transport's pieces without a proxy: framing (RFC 3261 18.3, RFC 5626 3.5.1),
listen addresses and [tcp]/[tls] config, destinations with a transport, alias keys."""

from __future__ import annotations

import pytest

from kampx import config
from kampx.forward import Forwarder, StreamDest, resolve_destination
from kampx.transport.stream import FrameError, alias_key, frame

MSG = (
    b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)


def test_one_message_then_nothing():
    buf = bytearray(MSG)
    assert frame(buf, 65535) == (MSG, 0)
    assert buf == b""
    assert frame(buf, 65535) == (None, 0)


def test_a_message_in_pieces_waits_for_its_body():
    buf = bytearray(MSG[:-2])
    assert frame(buf, 65535) == (None, 0)
    assert buf == MSG[:-2]  # nothing taken
    buf += MSG[-2:] + MSG
    assert frame(buf, 65535)[0] == MSG
    assert frame(buf, 65535)[0] == MSG
    assert buf == b""


def test_compact_content_length_and_case():
    m = MSG.replace(b"Content-Length: 5", b"l:5")
    assert frame(bytearray(m), 65535)[0] == m
    m = MSG.replace(b"Content-Length: 5", b"CONTENT-LENGTH   :   5  ")
    assert frame(bytearray(m), 65535)[0] == m


def test_keepalive_pings_are_counted_and_a_lone_crlf_skipped():
    buf = bytearray(b"\r\n\r\n\r\n\r\n" + MSG)
    assert frame(buf, 65535) == (b"", 2)
    assert frame(buf, 65535)[0] == MSG
    buf = bytearray(b"\r\n" + MSG)  # a pong (or padding) before a message
    assert frame(buf, 65535)[0] == MSG
    buf = bytearray(b"\r\n\r")  # maybe the start of a ping: wait
    assert frame(buf, 65535) == (None, 0) and buf == b"\r\n\r"


def test_no_content_length_is_bad_framing_with_the_head_for_a_400():
    m = MSG.replace(b"Content-Length: 5\r\n", b"")
    with pytest.raises(FrameError) as e:
        frame(bytearray(m), 65535)
    assert e.value.args[0] == "bad_framing"
    assert e.value.args[1].startswith(b"OPTIONS sip:x") and e.value.args[1].endswith(b"\r\n\r\n")
    # a Content-Length in the body does not count
    m = b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\nContent-Length: 0\r\n"
    with pytest.raises(FrameError):
        frame(bytearray(m), 65535)


def test_too_large_headers_or_body():
    with pytest.raises(FrameError, match="too_large"):
        frame(bytearray(b"OPTIONS sip:x SIP/2.0\r\nX: " + b"a" * 2000), 1024)
    with pytest.raises(FrameError, match="too_large"):
        frame(bytearray(MSG.replace(b"Content-Length: 5", b"Content-Length: 99999")), 1024)
    # a huge number is too large, not an error of another kind
    with pytest.raises(FrameError, match="too_large"):
        frame(bytearray(MSG.replace(b"Content-Length: 5", b"Content-Length: 999999999")), 1024)


def test_listen_addresses_by_transport():
    assert config.parse_listen("tcp:127.0.0.1:5060") == config.ListenAddr("tcp", "127.0.0.1", 5060)
    assert config.parse_listen("TLS:[::1]:5061") == config.ListenAddr("tls", "::1", 5061)
    assert str(config.parse_listen("tls:[::1]:5061")) == "tls:[::1]:5061"
    for bad in ("sctp:127.0.0.1:5060", "ws:127.0.0.1:80", "tcp:localhost:5060", "tcp:1.2.3.4"):
        with pytest.raises(ValueError):
            config.parse_listen(bad)


def test_tls_listen_needs_a_certificate_and_verify_client_a_ca():
    with pytest.raises(config.ConfigError, match=r"\[tls\] certificate"):
        config.from_dict({"core": {"listen": ["tls:127.0.0.1:5061"]}})
    with pytest.raises(config.ConfigError, match="ca_list"):
        config.from_dict({"tls": {"verify_client": True}})
    with pytest.raises(config.ConfigError, match="min_version"):
        config.from_dict({"tls": {"min_version": "TLSv1.0"}})
    with pytest.raises(config.ConfigError, match="max_message_bytes"):
        config.from_dict({"tcp": {"max_message_bytes": 100}})
    cfg = config.from_dict({"core": {"listen": ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]}})
    assert cfg.tcp.connection_lifetime_s == 120 and cfg.tcp.max_connections == 2048


def test_destinations_carry_their_transport():
    resolve = resolve_destination
    assert resolve("192.0.2.1", 0) == ("192.0.2.1", 5060)
    assert resolve("192.0.2.1", 0, "udp") == ("192.0.2.1", 5060)
    assert resolve("192.0.2.1", 0, "TCP") == StreamDest("192.0.2.1", 5060, "tcp")
    assert resolve("192.0.2.1", 0, "tls") == StreamDest("192.0.2.1", 5061, "tls")
    assert resolve("192.0.2.1", 5070, None, True) == StreamDest("192.0.2.1", 5070, "tls")
    assert resolve("[2001:db8::1]", 0, "tcp") == StreamDest("2001:db8::1", 5060, "tcp")
    assert resolve("192.0.2.1", 0, "sctp") is None  # a transport kampx does not speak


def test_alias_keys_spell_an_address_one_way():
    assert alias_key("tcp", "2001:db8:0:0::1", 5060) == alias_key("tcp", "2001:db8::1", 5060)
    assert alias_key("tcp", "192.0.2.1", 5060) != alias_key("tls", "192.0.2.1", 5060)


def test_a_uri_without_port_names_a_tls_socket_on_5061():
    import socket

    from kampx.transport.sockets import ListenSocket

    socks = [socket.socket(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)]
    try:
        tls = ListenSocket(0, config.ListenAddr("tls", "192.0.2.1", 5061), socks[0])
        udp = ListenSocket(1, config.ListenAddr("udp", "192.0.2.2", 5070), socks[1])
        assert tls.rr_value == "<sip:192.0.2.1;transport=tls;lr>"  # 5061 left out, as 5060
        assert udp.rr_value == "<sip:192.0.2.2:5070;lr>"
        fwd = Forwarder([tls, udp], "kampx.test", None, None, False)
        assert fwd.is_myself("192.0.2.1", 0) and fwd.is_myself("192.0.2.1", 5061)
        assert not fwd.is_myself("192.0.2.2", 0) and fwd.is_myself("192.0.2.2", 5070)
        assert fwd.socket_for(StreamDest("192.0.2.9", 5061, "tls")) is tls
        assert fwd.socket_for(("192.0.2.9", 5060)) is udp
        assert fwd.socket_for(StreamDest("192.0.2.9", 5060, "tcp")) is None  # no TCP here
    finally:
        for s in socks:
            s.close()


# ------------------------------------------------------------------- hostile input --

def test_myself_is_a_listen_address_in_any_spelling_or_the_realm_at_any_port():
    """is_myself() finds an address as written first, then lower-cased and without IPv6
    brackets: both ways give the same answers."""
    import socket

    from kampx.transport.sockets import ListenSocket

    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
             socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)]
    try:
        v4 = ListenSocket(0, config.ListenAddr("udp", "192.0.2.1", 5060), socks[0])
        v6 = ListenSocket(1, config.ListenAddr("udp", "2001:db8::1", 5080), socks[1])
        fwd = Forwarder([v4, v6], "Kampx.Test", None, None, False)
        assert fwd.is_myself("192.0.2.1", 5060) and fwd.is_myself("192.0.2.1", 0)
        assert not fwd.is_myself("192.0.2.1", 5070) and not fwd.is_myself("192.0.2.9", 5060)
        assert fwd.is_myself("[2001:db8::1]", 5080) and fwd.is_myself("[2001:DB8::1]", 5080)
        assert fwd.is_myself("2001:db8::1", 5080) and fwd.is_myself("2001:DB8::1", 5080)
        assert not fwd.is_myself("[2001:db8::1]", 0)  # no port: 5060, not this socket's
        assert fwd.is_myself("KAMPX.test", 0) and fwd.is_myself("kampx.test", 5999)  # realm
        assert not fwd.is_myself("other.test", 0) and not fwd.is_myself("", 0)
    finally:
        for s in socks:
            s.close()


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from kampx.transport._send import sockaddr  # noqa: E402

_PIECES = st.sampled_from([
    b"\r\n", b"\r\n\r\n", b"Content-Length: ", b"l:", b"0", b"5", b"999999999", b"\r", b"\n",
    b"OPTIONS sip:x SIP/2.0", b"SIP/2.0 200 OK", b":", b" ", b"\x00", b"hello", b"\xff",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.binary(max_size=40)), max_size=30))
def test_framing_any_bytes_ends_in_messages_a_wait_or_a_frame_error(parts):
    """Whatever a peer sends: frame() takes whole messages off the front, or waits, or says
    why the stream cannot go on; it never raises anything else and always makes progress."""
    buf = bytearray(b"".join(parts))
    for _ in range(len(buf) + 2):
        before = len(buf)
        whole = bytes(buf)
        try:
            data, pings = frame(buf, 2048)
        except FrameError as e:
            assert e.args[0] in ("too_large", "bad_framing")
            return
        if data is None:
            # a wait takes at most the lone CRLFs (padding, pongs) in front
            taken = whole[: len(whole) - len(buf)] if len(buf) < before else b""
            assert bytes(buf) == whole[len(taken):] and taken.replace(b"\r\n", b"") == b""
            return
        assert len(buf) < before  # a message or a ping was taken off
        if data:
            assert len(data) <= 2048 and data.find(b"\r\n\r\n") >= 0
    raise AssertionError("frame() did not finish")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.none()), st.one_of(st.integers(), st.text(), st.none()),
       st.booleans())
def test_sockaddr_takes_anything_a_sender_could_write(ip, port, v6):
    out = sockaddr(ip, port, v6)
    assert out is None or len(out) == (28 if v6 else 16)


def test_a_closed_connection_frees_its_slot_before_the_peer_can_see_the_close():
    """[tcp] max_connections_per_ip is counted in shared rows: close() must drop the
    connection's counts before the socket closes, or a peer that sees the close and
    reconnects at once is refused for a slot that is no longer used."""
    from types import SimpleNamespace

    from kampx._shm import CounterRows
    from kampx.transport.stream import IP_BUCKETS, Conn, Streams, ip_bucket

    load = CounterRows(4, 1 + IP_BUCKETS)
    bucket = ip_bucket("192.0.2.7")
    seen_at_close = []

    class Sock:
        def fileno(self):
            return 99

        def close(self):  # the moment the peer can see the close
            seen_at_close.append((load.column_sum(0), load.column_sum(bucket)))

    streams = Streams.__new__(Streams)
    streams.worker_id, streams.load, streams.fds, streams.by_key = 1, load, {}, {}
    streams.aliases = SimpleNamespace(release=lambda key, wid: None)
    streams.ep = SimpleNamespace(unregister=lambda fd: None)
    streams.stats = SimpleNamespace(add=lambda col, n: None, inc=lambda col: None)
    c = Conn(Sock(), SimpleNamespace(proto="tcp"), ("192.0.2.7", 5060), b"k", bucket, False, 0.0)
    load.add(1, 0, 1)
    load.add(1, bucket, 1)
    streams.fds[c.fd] = c
    streams.close(c, "too_large")
    assert seen_at_close == [(0, 0)]
