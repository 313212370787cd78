"""Reading a JSON-RPC method's parameters: each a one-line InvalidParams when wrong."""

from __future__ import annotations

import math
import time

from kampx.control.server import InvalidParams, RpcFault

NOT_FOUND = 404
FAILED = 500
BUSY = 503
RELOAD_DELTA = 1.0  # seconds between two reloads of a table (Kamailio's reload_delta)


class ReloadDelta:
    """Kamailio's reload_delta: a table is reloaded at most every RELOAD_DELTA seconds; a
    reload asked sooner is refused BUSY with data {"retry_after": seconds}."""

    def __init__(self, delta: float = RELOAD_DELTA):
        self.delta = delta
        self._last = -math.inf

    def check(self) -> None:
        wait = self._last + self.delta - time.monotonic()
        if wait > 0:
            wait = math.ceil(wait * 10) / 10
            raise RpcFault(BUSY, f"reload too soon, try again in {wait:g} s", {"retry_after": wait})
        self._last = time.monotonic()


def int_param(params: dict, name: str, default: int, lo: int, hi: int | None) -> int:
    v = params.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise InvalidParams(f"'{name}' must be an integer {rng}")
    return v


def seconds_param(params: dict, name: str, default: float, hi: float, zero: bool = False) -> float:
    """A number of seconds up to `hi`, more than 0 (or 0 too with `zero`)."""
    v = params.get(name, default)
    if (
        isinstance(v, bool)
        or not isinstance(v, (int, float))
        or not (0 < v <= hi or zero and v == 0)
    ):
        low = "0 <=" if zero else "0 <"
        raise InvalidParams(f"'{name}' must be a number of seconds, {low} s <= {hi:g}")
    return float(v)


def str_param(params: dict, name: str, default: str | None = None) -> str:
    v = params.get(name, default)
    if not isinstance(v, str):
        raise InvalidParams(f"'{name}' must be a string")
    return v
