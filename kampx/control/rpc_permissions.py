"""permissions' control methods (Kamailio's permissions.addressReload and addressDump)."""

from __future__ import annotations

from kampx import state
from kampx.control.params import FAILED, ReloadDelta
from kampx.control.server import RpcFault, check_params


class PermissionsRpc:
    def __init__(self, shared, cfg):
        self.shared = shared
        self.cfg = cfg
        self._address_reload_delta = ReloadDelta()

    def table(self) -> dict:
        return {
            "permissions.addressReload": self.address_reload,
            "permissions.addressDump": self.address_dump,
        }

    def address_reload(self, params: dict) -> dict:
        check_params(params, ())
        self._address_reload_delta.check()
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
