"""What Kamailio's dispatcher functions do to a request (kampx/routing/dispatcher.py is
their script face): choose destinations of a set, move on to the next after a failure, mark
a destination's state, recognise a request from a set's gateway. Each returns Kamailio's
code: 1 done, -1 not (no such set, no usable destination, none left, no match).

ds_select_dst() leaves a `Selection` (kampx/dispatcher/select.py) in msg.ds_next: the URI
in use and the failover URIs after it; ds_next_dst() and ds_mark_dst() work from it.
"""

from __future__ import annotations

from kampx._cparse import parse_uri
from kampx.dispatcher import select as _select
from kampx.dispatcher import stats as DS
from kampx.dispatcher.destinations import parse_state
from kampx.dispatcher.select import Selection

DONE, NOT = 1, -1


def _table(worker):
    table = worker.ctx.shared.dispatcher
    if table is None:
        raise RuntimeError("the dispatcher table is not attached")
    return table


def _hash_key(msg, alg: int) -> str | None:
    if alg == _select.HASH_CALLID:
        return msg.call_id
    if alg == _select.HASH_FROM:
        return msg.from_uri
    if alg == _select.HASH_TO:
        return msg.to_uri
    return msg.ruri


def select_dst(worker, msg, setid: int, alg: int, limit: int = 0, domain: bool = False) -> int:
    """Choose among set `setid`'s usable destinations with algorithm `alg`; at most `limit`
    of them (0: all) go into the failover list. The first becomes $du (domain=False) or
    the Request-URI's host:port (domain=True, ds_select_domain)."""
    table = _table(worker)
    sets = table.sets()
    slots = sets.sets.get(setid)
    ordered = []
    if slots:
        ordered = _select.order(
            slots,
            lambda s: table.usable(sets, s),
            alg,
            lambda: _hash_key(msg, alg),
            lambda: table.next_round_robin(sets, setid),
            lambda s: sets.destinations[s].weight,
        )
    if limit > 0:
        ordered = ordered[:limit]
    if not ordered:
        worker.stats.inc(DS.NO_DESTINATION.base)
        return NOT
    selection = Selection(setid, [sets.destinations[s].uri for s in ordered], domain)
    msg.ds_next = selection
    _use(msg, selection)
    worker.stats.inc(DS.SELECTED.base)
    return DONE


def _use(msg, selection: Selection) -> None:
    uri = selection.current
    if not selection.domain:
        msg.dst = uri
        return
    from kampx.routing.core import rebuild_ruri

    target = parse_uri(uri)
    rebuild_ruri(msg, host=target.host, port=target.port)


def next_dst(worker, msg) -> int:
    """Move on to the next failover destination of the last selection; -1 when none is
    left (or nothing was selected)."""
    selection = msg.ds_next
    if not isinstance(selection, Selection) or selection.advance() is None:
        return NOT
    _use(msg, selection)
    worker.stats.inc(DS.FAILOVERS.base)
    return DONE


def mark_dst(worker, msg, state: str = "ip") -> int:
    """Give the destination in use (the last selection's, else $du) the state `state`
    (ds flags letters: "ip" inactive and probing, "a" active, "d" disabled, "t" trying...).
    -1 when there is no such destination."""
    flags = parse_state(state)
    selection = msg.ds_next
    if isinstance(selection, Selection):
        setid, uri = selection.setid, selection.current
    elif msg.dst:
        setid, uri = -1, msg.dst
    else:
        return NOT
    if not _table(worker).set_state(setid, uri, flags):
        return NOT
    worker.stats.inc(DS.MARKED.base)
    return DONE


def is_from_list(worker, msg, setid: int = -1) -> int:
    """1 when the request's source is a destination of set `setid` (-1: of any set): its IP,
    and its port when the destination's URI names one other than 5060."""
    sets = _table(worker).sets()
    ip, port = msg.src
    found = sets.source_sets(ip, port)
    if sets.named and not (found and (setid == -1 or setid in found)):
        found = found | _named_sources(worker.resolver.cache, sets.named, ip, port)
    return DONE if found and (setid == -1 or setid in found) else NOT


def _named_sources(cache, named, ip: str, port: int) -> set[int]:
    """The sets with a destination given by a name whose cached A/AAAA records hold `ip`:
    the addresses kampx resolved relaying to it or probing it. Never a query here: kampx
    resolves a name to reach it, not to check who is calling."""
    found: set[int] = set()
    for name, dport, setid in named:
        if dport and dport != port:
            continue
        for qtype in ("A", "AAAA"):
            answer = cache.get(name, qtype)
            if answer is not None and ip in answer.records:
                found.add(setid)
    return found
