"""Kamailio's dispatcher for kampx: sets of carrier gateways, load balancing, failover and
probing (docs/routing.md).

    destinations.py  a row of the dispatcher table, checked and parsed; the ds flags
    table.py         the sets and each destination's state in shared memory
    select.py        the selection algorithms and the failover order (msg.ds_next)
    dispatch.py      ds_select_dst, ds_next_dst, ds_mark_dst, ds_is_from_list on a request
    probe.py         the OPTIONS prober (its helper process)
    stats.py         the dispatcher's counters

The route script reaches it through kampx/routing/dispatcher.py, operators through
`kampxctl dispatcher` (kampx/control/rpc_dispatcher.py).
"""
