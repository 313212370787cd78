"""The statistics' control methods (Kamailio's stats.get_statistics and
stats.reset_statistics), over kampx.stats.kamctl's view of the shared counters plus the gauges
other modules read live (usrloc's counts)."""

from __future__ import annotations

from kampx.control.params import NOT_FOUND
from kampx.control.server import InvalidParams, RpcFault, check_params
from kampx.stats.kamctl import StatsView, UnknownStatistic


class StatsRpc:
    def __init__(self, stats_view: StatsView, gauges):
        self.stats = stats_view
        self.gauges = gauges

    def table(self) -> dict:
        return {
            "stats.get_statistics": self.get_statistics,
            "stats.reset_statistics": self.reset_statistics,
        }

    def get_statistics(self, params: dict) -> dict:
        check_params(params, ("group",))
        group = params.get("group")
        if group is not None and not isinstance(group, str):
            raise InvalidParams("'group' must be a string")
        if group in ("all", ""):
            group = None
        try:
            return self.stats.get(group, self.gauges())
        except UnknownStatistic as e:
            raise RpcFault(NOT_FOUND, str(e)) from None

    def reset_statistics(self, params: dict) -> dict:
        check_params(params, ("group", "name"))
        group, name = params.get("group"), params.get("name")
        for key, v in (("group", group), ("name", name)):
            if v is not None and not isinstance(v, str):
                raise InvalidParams(f"'{key}' must be a string")
        if group in ("all", ""):
            group = None
        try:
            return {"reset": self.stats.reset(group, name)}
        except UnknownStatistic as e:
            raise RpcFault(NOT_FOUND, str(e)) from None
