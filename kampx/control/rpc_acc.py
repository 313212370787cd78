"""Accounting's control methods: the acc, missed_calls and acc_cdrs tables, read from the
database (Kamailio has no RPC for them: kamctl reads the tables with SQL).

Each call opens the storage (kampx/db) in the calling thread, as a reload does, and closes it
again: the tables are written by the db writer, not held in shared memory. The methods run
outside the ctl's method lock (a query over a day of CDRs must not delay a `ul show`).

The functions `cdrs`, `records` and `summary` take an open storage and the method's params:
kampxctl calls them itself when the proxy is not running (the database is still there).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kampx.control.params import FAILED, int_param, seconds_param, str_param
from kampx.control.server import InvalidParams, RpcFault, check_params
from kampx.db.base import ACC_DIRECTIONS, StorageError

DEFAULT_SINCE_S = 3600
MAX_SINCE_S = 3650 * 86400  # ten years: "everything"
DEFAULT_LIMIT = 100
MAX_LIMIT = 10000
TABLES = ("acc", "missed_calls")


def _since(params: dict, now: float) -> float:
    return now - seconds_param(params, "since_s", DEFAULT_SINCE_S, MAX_SINCE_S)


def cdrs(storage, params: dict, now: float | None = None) -> dict:
    """acc.cdrs {since_s, direction, limit} -> {"since": epoch, "rows": [CDR, ...]}, newest
    first."""
    check_params(params, ("since_s", "direction", "limit"))
    now = time.time() if now is None else now
    since = _since(params, now)
    direction = params.get("direction")
    if direction is not None and direction not in ACC_DIRECTIONS:
        raise InvalidParams(f"'direction' must be one of {', '.join(ACC_DIRECTIONS)}")
    limit = int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    rows = storage.acc.cdrs(since=since, direction=direction, limit=limit)
    return {"since": since, "rows": rows}


def records(storage, params: dict, now: float | None = None) -> dict:
    """acc.list {table, since_s, limit, callid} -> {"table": name, "since": epoch,
    "rows": [record, ...]}, newest first."""
    check_params(params, ("table", "since_s", "limit", "callid"))
    now = time.time() if now is None else now
    table = str_param(params, "table", "acc")
    if table not in TABLES:
        raise InvalidParams(f"'table' must be one of {', '.join(TABLES)}")
    since = _since(params, now)
    limit = int_param(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    callid = str_param(params, "callid") if "callid" in params else None
    rows = storage.acc.records(table, since=since, limit=limit, callid=callid)
    return {"table": table, "since": since, "rows": rows}


def _figures(calls: int, answered: int, duration: float) -> dict:
    """ASR (answered / calls, %), ACD (seconds per answered call), minutes."""
    return {
        "calls": calls,
        "answered": answered,
        "duration": round(duration, 3),
        "asr": round(100.0 * answered / calls, 1) if calls else 0.0,
        "acd": round(duration / answered, 1) if answered else 0.0,
        "minutes": round(duration / 60.0, 1),
    }


def summary(storage, params: dict, now: float | None = None) -> dict:
    """acc.summary {since_s} -> {"since", "until", "directions": {direction: figures},
    "total": figures}: the CDRs that started in the window, figures as _figures'."""
    check_params(params, ("since_s",))
    now = time.time() if now is None else now
    since = _since(params, now)
    per = storage.acc.summary(since, now)
    total = [0, 0, 0.0]
    directions = {}
    for d, f in sorted(per.items()):
        directions[d] = _figures(f["calls"], f["answered"], f["duration"])
        total[0] += f["calls"]
        total[1] += f["answered"]
        total[2] += f["duration"]
    return {
        "since": since,
        "until": now,
        "directions": directions,
        "total": _figures(int(total[0]), int(total[1]), float(total[2])),
    }


QUERIES: dict[str, Callable[..., dict]] = {
    "acc.cdrs": cdrs,
    "acc.list": records,
    "acc.summary": summary,
}


class AccRpc:
    """The methods over the storage of the running config (`cfg_of()`: cfg.reload swaps
    it)."""

    def __init__(self, cfg_of: Callable[[], Any]):
        self._cfg_of = cfg_of

    def table(self) -> dict:
        return {"acc.cdrs": self.cdrs, "acc.list": self.list, "acc.summary": self.summary}

    def _query(self, name: str, params: dict) -> dict:
        from kampx.db import open_storage

        query = QUERIES[name]
        try:
            with open_storage(self._cfg_of()) as storage:
                return query(storage, params)
        except StorageError as e:
            raise RpcFault(FAILED, str(e)) from None

    def cdrs(self, params: dict) -> dict:
        return self._query("acc.cdrs", params)

    def list(self, params: dict) -> dict:
        return self._query("acc.list", params)

    def summary(self, params: dict) -> dict:
        return self._query("acc.summary", params)

    # each opens its own storage: nothing shared to guard
    cdrs.unlocked = True  # type: ignore[attr-defined]
    list.unlocked = True  # type: ignore[attr-defined]
    summary.unlocked = True  # type: ignore[attr-defined]
