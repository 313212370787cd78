"""The dispatcher's statistics (`kampxctl stats dispatcher`, kampx_dispatcher_*_total):
what the script functions and the prober counted. The per-destination gauges and probe
counts come from the shared table at scrape time (kampx/stats/prometheus.py)."""

from __future__ import annotations

from kampx import stats as S

SELECTED = S.family(
    "dispatcher",
    "selected",
    S.KIND_COUNTER,
    "ds_select_dst/ds_select_domain that chose a destination",
)
NO_DESTINATION = S.family(
    "dispatcher",
    "no_destination",
    S.KIND_COUNTER,
    "ds_select_dst/ds_select_domain that found no usable destination (or no such set)",
)
FAILOVERS = S.family(
    "dispatcher", "failovers", S.KIND_COUNTER, "ds_next_dst/ds_next_domain that moved on"
)
MARKED = S.family("dispatcher", "marked", S.KIND_COUNTER, "Destinations marked by ds_mark_dst")
PROBES_SENT = S.family("dispatcher", "probes_sent", S.KIND_COUNTER, "OPTIONS probes sent")
PROBES_FAILED = S.family(
    "dispatcher", "probes_failed", S.KIND_COUNTER, "OPTIONS probes with no accepted reply in time"
)

STATISTICS = (SELECTED, NO_DESTINATION, FAILOVERS, MARKED, PROBES_SENT, PROBES_FAILED)
