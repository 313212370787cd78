"""Binding every `[core] listen` address, UDP and stream alike, all or nothing."""

from __future__ import annotations

from kampx.config import ListenAddr
from kampx.transport.sockets import BindError, ListenSocket
from kampx.transport.stream import bind_stream
from kampx.transport.udp import bind_udp


def bind_listen_sockets(
    addrs: list[ListenAddr], takeover: bool = False, reply_slots: int = 0, tls=None
) -> list[ListenSocket]:
    """Bind every listen address in order (its index is its place in the list). Raises
    BindError, with every socket bound so far closed. `tls` is the [tls] config, for tls:
    addresses (their certificate is loaded here: a bad one stops the start)."""
    out: list[ListenSocket] = []
    try:
        for i, addr in enumerate(addrs):
            if addr.proto == "udp":
                out.append(bind_udp(i, addr, takeover, reply_slots))
            else:
                out.append(bind_stream(i, addr, takeover, tls))
    except BindError:
        for ls in out:
            ls.close()
        raise
    return out
