"""A statistic's declaration (`kampx.stats.family()` makes them): its names, its kind, its
label values and, once `kampx.stats.families()` has laid the catalogue out, its first
column in the counter table.

A C type (family.pxd): the modules that count on every packet declare the families they
import as `cdef Family NAME`, so `stats.inc(NAME.base)` reads the column as a C field, not
through a module dictionary and an attribute lookup (docs/performance.md)."""

from __future__ import annotations

from bisect import bisect_left


class Family:
    """One statistic (a counter, a gauge or a histogram) and the columns it occupies."""

    def __init__(
        self,
        group: str,
        name: str,
        kind: str,
        help: str,
        label=None,
        values: tuple = (),
        base: int = -1,
        buckets: tuple = (),
        scale: float = 1e6,
        series_label=None,
        series: tuple = (),
    ):
        self.group = group
        self.name = name
        self.kind = kind
        self.help = help
        # the label name when the family has one label; a tuple of names when it has several
        # (its values are then tuples, one value per name)
        self.label = label
        self.values = values  # the label values, one column each
        self.base = base  # first column, set by families(); -1 until then
        # histograms: bucket bounds (in the stored unit), stored units per exported unit,
        # and a label whose every value has its own buckets (series)
        self.buckets = buckets
        self.scale = scale
        self.series_label = series_label
        self.series = series

    def __repr__(self) -> str:
        return f"Family({self.group!r}, {self.name!r}, {self.kind!r}, base={self.base})"

    @property
    def size(self) -> int:
        return (len(self.values) if self.label else 1) * max(1, len(self.series))

    def col(self, value=None) -> int:
        if self.label is None:
            return self.base
        return self.base + self.values.index(value)

    def observe(self, stats, series_index, value) -> None:
        """One observation (in the exported unit, e.g. seconds) into this histogram's
        buckets of series `series_index` (its index in `series`; 0 when it has none), in
        the counter row `stats`: the first bucket whose bound is not below it, the sum (in
        the stored unit) and the count."""
        n = len(self.buckets)
        scaled = value * self.scale
        base = self.base + series_index * (n + 3)
        stats.add(base + bisect_left(self.buckets, scaled), 1)
        stats.add(base + n + 1, int(scaled))
        stats.add(base + n + 2, 1)
