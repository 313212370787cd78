"""permissions' control methods (Kamailio's permissions.addressReload and addressDump)."""

from __future__ import annotations

import math
import time

from kampx import state
from kampx.control.params import BUSY, FAILED
from kampx.control.server import RpcFault, check_params

RELOAD_DELTA = 1.0  # seconds between two address reloads (Kamailio's reload_delta)


class PermissionsRpc:
    def __init__(self, shared, cfg):
        self.shared = shared
        self.cfg = cfg
        self._last_address_reload = -math.inf

    def table(self) -> dict:
        return {
            "permissions.addressReload": self.address_reload,
            "permissions.addressDump": self.address_dump,
        }

    def address_reload(self, params: dict) -> dict:
        check_params(params, ())
        wait = self._last_address_reload + RELOAD_DELTA - time.monotonic()
        if wait > 0:
            wait = math.ceil(wait * 10) / 10
            raise RpcFault(BUSY, f"reload too soon, try again in {wait:g} s", {"retry_after": wait})
        self._last_address_reload = time.monotonic()
        try:
            n = state.reload(self.shared, self.cfg)
        except state.StateError as e:
            raise RpcFault(FAILED, str(e)) from None
        return {"rows": n, "generation": self.shared.permissions.generation}

    def address_dump(self, params: dict) -> dict:
        check_params(params, ())
        table = self.shared.permissions
        if table is None:
            return {"generation": 0, "rows": []}
        gen = table.generation
        rows = [
            {"grp": e.grp, "ip_addr": e.ip_addr, "mask": e.mask, "port": e.port, "tag": e.tag}
            for e in table.rows()
        ]
        return {"generation": gen, "rows": rows}
