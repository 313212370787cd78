"""The dispatcher's control methods (Kamailio's dispatcher.reload, dispatcher.list and
dispatcher.set_state), over the shared dispatcher table."""

from __future__ import annotations

from kampx import state
from kampx.control.params import FAILED, NOT_FOUND, ReloadDelta, int_param, str_param
from kampx.control.server import InvalidParams, RpcFault, check_params
from kampx.dispatcher.destinations import DispatcherError, parse_state


class DispatcherRpc:
    def __init__(self, shared, cfg):
        self.shared = shared
        self.cfg = cfg
        self._reload_delta = ReloadDelta()

    def table(self) -> dict:
        return {
            "dispatcher.reload": self.reload,
            "dispatcher.list": self.list,
            "dispatcher.set_state": self.set_state,
        }

    def reload(self, params: dict) -> dict:
        check_params(params, ())
        self._reload_delta.check()
        try:
            n = state.reload_dispatcher(self.shared, self.cfg)
        except state.StateError as e:
            raise RpcFault(FAILED, str(e)) from None
        return {"destinations": n, "generation": self.shared.dispatcher.generation}

    def list(self, params: dict) -> dict:
        """Every destination set by set, with its state ("AP", "IP", "DX"...) and probes."""
        check_params(params, ())
        generation, destinations = self.shared.dispatcher.dump()
        return {"generation": generation, "destinations": destinations}

    def set_state(self, params: dict) -> dict:
        """{"state": "ip", "setid": N (-1: any), "uri": "sip:..."} -> {"changed": n}."""
        check_params(params, ("state", "setid", "uri"), ("state", "uri"))
        try:
            flags = parse_state(str_param(params, "state"))
        except DispatcherError as e:
            raise InvalidParams(str(e)) from None
        setid = int_param(params, "setid", -1, -1, 2**31 - 1)
        uri = str_param(params, "uri")
        changed = self.shared.dispatcher.set_state(setid, uri, flags)
        if not changed:
            raise RpcFault(
                NOT_FOUND,
                f"no destination {uri} in " + ("any set" if setid == -1 else f"set {setid}"),
            )
        return {"changed": changed}
