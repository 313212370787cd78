"""Statistics: the declaration every module uses, the catalogue that lays them out in
columns, and the per-process handle that counts them. kamctl.py names them as `kampxctl
stats` shows them, prometheus.py exposes them on /metrics.

As in Kamailio (each module's stat_export_t), a module declares its own statistics next to
the code that counts them, with `family(...)`, and lists them in its `STATISTICS` tuple;
CATALOGUE names those modules in column order. Every process adds to its own row of a shared
CounterRows table (Kamailio's counters.c model: no lock, no atomic on the hot path);
/metrics and `kampxctl stats` sum the rows at read time. A row outlives the process that
wrote it, so totals never go down when a worker dies. Columns are laid out once, by
`families()`, before the supervisor creates the table and forks: plain counters, counters
with one label (method, code, reason) expanded into one column per label value, and the
processing-time histogram.

Names follow Kamailio's statistics (group + name) so an operator finds what kamctl shows;
prometheus.py turns them into Prometheus families (kampx_<group>_<name>[_total]).
"""

from __future__ import annotations

import importlib

from kampx._cparse import METHOD_NAMES
from kampx._shm import CounterRow
from kampx.stats.family import Family

KIND_COUNTER = "counter"
KIND_GAUGE = "gauge"
KIND_HISTOGRAM = "histogram"

# The modules that declare statistics (a STATISTICS tuple each), in column order.
CATALOGUE = (
    "kampx.stats.core",
    "kampx.overload",
    "kampx.routing.hooks",
    "kampx.tm.stats",
    "kampx.dialog",
    "kampx.sl",
    "kampx.registrar",
    "kampx.usrloc",
    "kampx.auth.authenticator",
    "kampx.security.guard",
    "kampx.cluster",
    "kampx.dns.resolver",
    "kampx.hep",
    "kampx.trace",
    "kampx.dispatcher.stats",
    "kampx.acc",
    "kampx.transport.stream",
)


REPLY_CODES = tuple(range(100, 700))
METHODS = METHOD_NAMES  # index = method id; "OTHER" first
HIST_BUCKETS_US = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000)


def family(
    group, name, kind, help, label=None, values=(), buckets=HIST_BUCKETS_US, scale=1e6
) -> Family:
    """Declare a statistic; list it in the module's STATISTICS so the catalogue lays it out.
    A histogram stores, per value of its optional label, its buckets (in 1/scale of the
    exported unit: microseconds by default), then +Inf, the sum and the count."""
    if kind == KIND_HISTOGRAM:
        fam = Family(
            group,
            name,
            kind,
            help,
            "le",
            tuple(buckets) + ("+Inf", "sum", "count"),
            buckets=tuple(buckets),
            scale=scale,
            series_label=label,
            series=tuple(values),
        )
    else:
        fam = Family(group, name, kind, help, label, tuple(values))
    _declared.append(fam)
    return fam


_declared: list[Family] = []
_laid_out: tuple[Family, ...] = ()


def families() -> tuple[Family, ...]:
    """Every statistic of the proxy, columns assigned (once, in CATALOGUE order)."""
    global _laid_out
    if not _laid_out:
        out: list[Family] = []
        for name in CATALOGUE:
            out.extend(importlib.import_module(name).STATISTICS)
        missing = [f"{f.group}:{f.name}" for f in _declared if all(f is not g for g in out)]
        if missing:  # declared, but in no module's STATISTICS: it would have no column
            raise RuntimeError(f"statistics not in any STATISTICS tuple: {missing}")
        col = 0
        for fam in out:
            fam.base = col
            col += fam.size
        _laid_out = tuple(out)
    return _laid_out


def ncols() -> int:
    """Columns of the counter table."""
    last = families()[-1]
    return last.base + last.size


class Stats(CounterRow):
    """This process's row. `inc`/`add` (and `observe_us`, the request processing time
    histogram) are the whole hot-path API: one C call each (kampx._shm.CounterRow)."""

    __slots__ = ()

    def __init__(self, rows, row: int):
        from kampx.stats.core import PROC_TIME

        families()
        super().__init__(rows, row)
        self.set_histogram(PROC_TIME.base, HIST_BUCKETS_US)
