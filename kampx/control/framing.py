"""The control channel's framing, shared by server and client: one JSON document per
connection in each direction, ended by a newline (docs/control.md)."""

from __future__ import annotations

import socket


def read_line(sock: socket.socket, limit: int) -> tuple[bytes, bool]:
    """Bytes up to the first newline (or the end of the stream): (line, too_long). A line
    longer than `limit` is not kept: (b"", True)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        nl = chunk.find(b"\n")
        if nl >= 0:
            chunks.append(chunk[:nl])
            size += nl
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"", True
    if size > limit:
        return b"", True
    return b"".join(chunks), False
