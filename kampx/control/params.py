"""Reading a JSON-RPC method's parameters: each a one-line InvalidParams when wrong."""

from __future__ import annotations

from kampx.control.server import InvalidParams

NOT_FOUND = 404
FAILED = 500
BUSY = 503


def int_param(params: dict, name: str, default: int, lo: int, hi: int | None) -> int:
    v = params.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise InvalidParams(f"'{name}' must be an integer {rng}")
    return v


def str_param(params: dict, name: str, default: str | None = None) -> str:
    v = params.get(name, default)
    if not isinstance(v, str):
        raise InvalidParams(f"'{name}' must be a string")
    return v
