"""The reply steering program (kampx/transport/steering.py), run by the real kernel: a
SO_REUSEPORT group of a shared socket and three reply sockets on loopback, datagrams sent to
it, and where each one lands."""

import socket

import pytest

from kampx.transport import steering

HOST = "127.0.0.1"
SLOTS = {0x05: 1, 0x07: 2, 0xA3: 3}  # worker id -> reply socket index


def _sock(port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((HOST, port))
    s.setblocking(False)
    return s


@pytest.fixture
def group():
    shared = _sock()
    port = shared.getsockname()[1]
    socks = [shared] + [_sock(port) for _ in range(3)]
    try:
        steering.attach(shared, SLOTS)
    except OSError as e:
        for s in socks:
            s.close()
        pytest.skip(f"kernel refuses SO_ATTACH_REUSEPORT_CBPF: {e}")
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    yield socks, tx, (HOST, port)
    tx.close()
    for s in socks:
        s.close()


def _where(group, payload: bytes) -> int:
    socks, tx, addr = group
    tx.sendto(payload, addr)
    import select
    ready, _, _ = select.select(socks, [], [], 1.0)
    assert len(ready) == 1, "the datagram must land on exactly one socket"
    data = ready[0].recv(65535)
    assert data == payload
    return socks.index(ready[0])


def reply(branch: str, status="200 OK", via_name="Via", before_via="") -> bytes:
    return (f"SIP/2.0 {status}\r\n{before_via}{via_name}: SIP/2.0/UDP 127.0.0.1:5060;"
            f"branch={branch}\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKcaller\r\n"
            "Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()


@pytest.mark.parametrize("wid,index", sorted(SLOTS.items()))
def test_a_reply_goes_to_the_reply_socket_of_its_worker(group, wid, index):
    assert _where(group, reply(f"z9hG4bKkx{wid:02x}beef.1f.0")) == index


@pytest.mark.parametrize("status", ["180 Ringing", "100 trying -- your call is important to us",
                                    "486 Busy Here" + " very long reason" * 10, "200"])
def test_any_reason_phrase_and_the_compact_via(group, status):
    assert _where(group, reply("z9hG4bKkx07beef.1.0", status=status)) == 2
    assert _where(group, reply("z9hG4bKkx07beef.1.0", status=status, via_name="v")) == 2


def test_requests_stay_on_the_shared_socket(group):
    req = (b"INVITE sip:bob@example.com SIP/2.0\r\n"
           b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKkx05beef.1.0\r\n\r\n")
    assert _where(group, req) == 0
    assert _where(group, b"OPTIONS sip:x SIP/2.0\r\n\r\n") == 0


@pytest.mark.parametrize("payload", [
    reply("z9hG4bKkx42beef.1.0"),                       # a worker id no slot has
    reply("z9hG4bKsomeoneelse"),                        # another proxy's branch on top
    reply("z9hG4bKky05beef.1.0"),                       # not kampx's magic after z9hG
    reply("z9hG4bKkx05", before_via="X-Pad: " + "p" * 700 + "\r\n"),  # magic past SCAN_END
    b"SIP/2.0 200 OK\r\n",                              # too short to hold anything
    b"SIP/",
    b"",
    b"\xff" * 40,
])
def test_anything_it_cannot_tell_goes_to_the_shared_socket(group, payload):
    assert _where(group, payload) == 0


def test_the_table_is_replaced_on_reattach(group):
    socks, _, _ = group
    assert _where(group, reply("z9hG4bKkx05beef.1.0")) == 1
    steering.attach(socks[0], {0x05: 3})
    assert _where(group, reply("z9hG4bKkx05beef.1.0")) == 3
    steering.detach(socks[0])
    # without a program the kernel hashes the addresses: some socket, exactly one
    assert 0 <= _where(group, reply("z9hG4bKkx05beef.1.0")) <= 3


def test_the_program_fits_with_every_worker_id():
    assert len(steering.program({wid: wid + 1 for wid in range(256)})) <= steering.MAX_INSNS
    with pytest.raises(ValueError):
        steering.program({256: 1})
