"""kampx._inet: IP address text read in C gives the answers socket.inet_pton gives
(kampx/_inet.pyx), including for text C hands back to Python."""

import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kampx._inet import ip_key, is_ip

_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"


def python_is_ip(host):
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return True
    except OSError:
        return False


def python_ip_key(ip):
    try:
        if ":" not in ip:
            return socket.inet_pton(socket.AF_INET, ip)
        raw = socket.inet_pton(socket.AF_INET6, ip.strip("[]").partition("%")[0])
    except (OSError, ValueError, TypeError):
        return None
    return raw[12:] if raw[:12] == _V4_MAPPED else raw


CASES = [
    "127.0.0.1", "0.0.0.0", "255.255.255.255", "256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4",
    "1.2.3.4 ", " 1.2.3.4", "1.2.3.", "", ".", "::", "::1", "[::1]", "fe80::1%eth0",
    "[fe80::1%eth0]", "::ffff:127.0.0.1", "::ffff:1.2.3.4", "2001:db8::1", "2001:db8:::1",
    "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:1.2.3.4", "carrier.example",
    "localhost", "a" * 200, "1." * 40 + "1", ":" * 70, "1.2.3.4\x00", "\x00", "é.1.1.1",
    "1.2.3.\u0664", "\udcff", "[1.2.3.4]", "[]",
]


@pytest.mark.parametrize("text", CASES)
def test_known_texts(text):
    assert ip_key(text) == python_ip_key(text)
    try:
        expected = python_is_ip(text)
    except ValueError as e:  # NUL or surrogates: inet_pton's argument parsing refuses them
        with pytest.raises(type(e)):
            is_ip(text)
    else:
        assert is_ip(text) is expected


def test_packed_forms():
    assert ip_key("127.0.0.1") == bytes([127, 0, 0, 1])
    assert ip_key("10.1.2.3") == bytes([10, 1, 2, 3])
    assert ip_key("::ffff:10.1.2.3") == bytes([10, 1, 2, 3])
    assert ip_key("[2001:db8::1]") == bytes.fromhex("20010db8000000000000000000000001")
    assert is_ip("10.1.2.3") and is_ip("::1") and not is_ip("[::1]") and not is_ip("x.example")


def test_not_a_string():
    assert ip_key(None) is None and ip_key(b"1.2.3.4") is None
    with pytest.raises(TypeError):
        is_ip(None)


_ADDRESS_CHARS = st.sampled_from(list("0123456789abcdefABCDEF.:[]%x ") + ["\x00", "é"])


@settings(max_examples=3000, deadline=None)
@given(st.one_of(
    st.text(_ADDRESS_CHARS, max_size=50),
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
))
def test_agrees_with_python(text):
    assert ip_key(text) == python_ip_key(text)
    try:
        expected = python_is_ip(text)
    except ValueError:
        with pytest.raises(ValueError):
            is_ip(text)
    else:
        assert is_ip(text) is expected
