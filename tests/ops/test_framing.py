"""The control channel's newline framing (kampx/control/framing.py)."""
import socket
import threading

from kampx.control.framing import read_line


def _read(payload: bytes, limit: int):
    a, b = socket.socketpair()
    t = threading.Thread(target=lambda: (a.sendall(payload), a.close()))
    t.start()
    try:
        return read_line(b, limit)
    finally:
        t.join()
        b.close()


def test_line_within_the_limit():
    assert _read(b'{"id":1}\nignored', 100) == (b'{"id":1}', False)
    assert _read(b"x" * 100 + b"\n", 100) == (b"x" * 100, False)


def test_line_over_the_limit_even_when_its_newline_is_in_the_last_chunk():
    assert _read(b"x" * 101 + b"\n", 100) == (b"", True)
    assert _read(b"x" * 300_000 + b"\n", 200_000) == (b"", True)


def test_end_of_stream_ends_the_line():
    assert _read(b'{"id":2}', 100) == (b'{"id":2}', False)
    assert _read(b"", 100) == (b"", False)
