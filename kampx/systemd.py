"""sd_notify(3) without libsystemd: READY=1, RELOADING=1, STOPPING=1, STATUS=... are
datagrams to $NOTIFY_SOCKET (a path, or @name in the abstract namespace)."""

from __future__ import annotations

import os
import socket
import time


def notify(*states: str) -> bool:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]
    payload = "\n".join(states)
    if "RELOADING=1" in states:
        # systemd >= 253 wants the time the reload started (Type=notify-reload)
        payload += f"\nMONOTONIC_USEC={int(time.monotonic() * 1e6)}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(payload.encode(), path)
        return True
    except OSError:
        return False
