"""Kamailio-named statistics over the shared counter rows, for `kampxctl stats`.

kampx/stats/__init__.py is the catalogue (families, one column per label value); this module names
every statistic the way kamctl shows it (`core:rcv_requests_invite`, `sl:404_replies`,
`tm:2xx_transactions`, ...) and maps each name to the columns it sums. /metrics reads the
very same column totals (kampx/stats/prometheus.py), so both always agree.

`stats.reset_statistics` never touches the shared rows (Prometheus counters must not go
down): it records a baseline, and kampxctl shows total - baseline. The baseline lives in its
own shared mapping created before fork, so it survives a restart of the ctl process.
"""

from __future__ import annotations

from dataclasses import dataclass

from kampx import stats as S
from kampx._shm import CounterRows

# Codes Kamailio always lists for its per-code statistics; any other code shows up once
# it has been counted.
KAMAILIO_RCV_REPLY_CODES = (401, 404, 407, 480, 486)
KAMAILIO_SL_CODES = (200, 202, 300, 301, 302, 400, 401, 403, 404, 407, 408, 483, 500)
REPLY_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")


@dataclass(frozen=True)
class Stat:
    group: str
    name: str
    kind: str  # stats.KIND_COUNTER or stats.KIND_GAUGE
    cols: tuple  # the columns summed
    always: bool = True  # False: listed only when not zero (the long tail of reply codes)


def _code_names(fam: S.Family) -> tuple[str, str]:
    """(total name, per-code/class pattern) of a family labelled by reply code."""
    if (fam.group, fam.name) == ("sl", "replies"):
        return "sent_replies", "{}_replies"
    return fam.name, fam.name + "_{}"


def _catalogue() -> list[Stat]:
    out: list[Stat] = []
    for fam in S.families():
        cols = tuple(range(fam.base, fam.base + fam.size))
        if fam.kind == "histogram":
            # a histogram: its count and sum (in the stored unit), per series
            n = len(fam.buckets)
            stem = fam.name.removesuffix("_seconds")
            unit = {1e6: "us", 1000: "ms"}.get(fam.scale, "units")
            for k, value in enumerate(fam.series or (None,)):
                base = fam.base + k * (n + 3)
                name = f"{stem}_{value}" if value is not None else stem
                out.append(Stat(fam.group, name + "_count", S.KIND_COUNTER, (base + n + 2,)))
                out.append(Stat(fam.group, f"{name}_sum_{unit}", S.KIND_COUNTER, (base + n + 1,)))
            continue
        if fam.label is None:
            out.append(Stat(fam.group, fam.name, fam.kind, cols))
        elif fam.label == "code" and fam.values == S.REPLY_CODES:
            total, pattern = _code_names(fam)
            listed = KAMAILIO_SL_CODES if fam.group == "sl" else KAMAILIO_RCV_REPLY_CODES
            out.append(Stat(fam.group, total, fam.kind, cols))
            for k, cls in enumerate(REPLY_CLASSES):
                first = fam.col(100 * (k + 1))
                out.append(
                    Stat(fam.group, pattern.format(cls), fam.kind, tuple(range(first, first + 100)))
                )
            for code in fam.values:
                out.append(
                    Stat(
                        fam.group,
                        pattern.format(code),
                        fam.kind,
                        (fam.col(code),),
                        always=code in listed,
                    )
                )
        elif (fam.group, fam.name) == ("tm", "transactions_finished"):
            out.append(Stat(fam.group, fam.name, fam.kind, cols))
            for v in fam.values:
                out.append(Stat(fam.group, f"{v}_transactions", fam.kind, (fam.col(v),)))
        else:
            out.append(Stat(fam.group, fam.name, fam.kind, cols))
            for v in fam.values:
                out.append(Stat(fam.group, f"{fam.name}_{str(v).lower()}", fam.kind, (fam.col(v),)))
    return out


CATALOGUE: list[Stat] = _catalogue()
GROUPS: tuple = tuple(sorted({s.group for s in CATALOGUE} | {"usrloc"}))
BY_NAME: dict[tuple[str, str], Stat] = {(s.group, s.name): s for s in CATALOGUE}


class UnknownStatistic(LookupError):
    """An unknown group or statistic name; str() is the operator's one line."""


class StatsView:
    """The statistics kampxctl shows: totals of the shared rows minus the reset baseline."""

    def __init__(self, counters, baseline: CounterRows | None = None):
        self.counters = counters
        # one row: per column, the total at the last reset (built before fork when shared)
        self.baseline = baseline if baseline is not None else CounterRows(1, S.ncols())

    def get(self, group: str | None, extra: dict | None = None) -> dict:
        """{group: {name: value}} for one group or all. `extra` adds values that are not
        counter columns (usrloc gauges read from the location table)."""
        if group is not None and group not in GROUPS:
            raise UnknownStatistic(f"no such statistics group: {group}")
        totals = self.counters.column_sums()
        base = self.baseline.row(0)
        out: dict[str, dict[str, int]] = {}
        for s in CATALOGUE:
            if group is not None and s.group != group:
                continue
            if s.kind == S.KIND_GAUGE:
                value = sum(totals[c] for c in s.cols)
            else:
                value = sum(max(0, totals[c] - base[c]) for c in s.cols)
            if value or s.always:
                out.setdefault(s.group, {})[s.name] = value
        for (g, name), value in (extra or {}).items():
            if group is None or g == group:
                out.setdefault(g, {})[name] = value
        if group is not None:
            out.setdefault(group, {})
        return out

    def reset(self, group: str | None = None, name: str | None = None) -> int:
        """Counters back to 0 for kampxctl (gauges untouched); returns how many statistics
        were reset. The shared rows, and so /metrics, are left alone."""
        if group is not None and group not in GROUPS:
            raise UnknownStatistic(f"no such statistics group: {group}")
        if name is not None:
            if group is None:
                matches = [s for s in CATALOGUE if s.name == name]
                if not matches:
                    raise UnknownStatistic(f"no such statistic: {name}")
            else:
                s = BY_NAME.get((group, name))
                if s is None:
                    raise UnknownStatistic(f"no such statistic: {group}:{name}")
                matches = [s]
        else:
            matches = [s for s in CATALOGUE if group is None or s.group == group]
        matches = [s for s in matches if s.kind == S.KIND_COUNTER]
        totals = self.counters.column_sums()
        cols = {c for s in matches for c in s.cols}
        for c in cols:
            self.baseline.add(0, c, totals[c] - self.baseline.get(0, c))
        return len(matches)
