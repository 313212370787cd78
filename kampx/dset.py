"""The destination set of a request (Kamailio's core dset: the Request-URI branch plus the
branches appended to it). lookup() fills it, one branch per further binding of the AOR;
t_relay() forks to every branch (kampx/tm). A branch carries its own Request-URI, where to
send it ($du) and the Path that becomes its Route set."""

from __future__ import annotations

from typing import NamedTuple

from kampx._cparse import SipParseError, split_commas


class Branch(NamedTuple):
    uri: str  # the Request-URI of this branch
    dst: str | None  # where to send it (first Path hop, NAT source), None: the URI
    path: str  # Path hops ("" none), sent as Route headers before the request's own


def use_branch(msg, br: Branch) -> None:
    """Make `br` the request's Request-URI, destination and Route set. The Path hops go
    first in the Route set, before any Route the request arrived with; a later branch
    rewrites the Route line an earlier one set."""
    msg.set_ruri(br.uri)
    msg.dst = br.dst
    if not br.path and not msg.path_route:
        return
    try:
        original = [r.raw.strip() for r in msg.routes]
    except SipParseError:
        original = []
    value = (
        ", ".join([h.strip() for h in split_commas(br.path)] + original)
        if br.path
        else ", ".join(original)
    )
    if value:
        msg.replace_header("Route", value)
    else:
        msg.remove_header("Route")  # only our own line existed
    msg.path_route = True


def set_branches(msg, branches: list[Branch]) -> None:
    """The first branch goes into the request itself, the others are appended."""
    use_branch(msg, branches[0])
    msg.branches = branches[1:]


def clear(msg) -> None:
    msg.branches = None


def take(msg) -> list[Branch]:
    """The appended branches, removed from the request (t_relay forks to them once)."""
    branches = msg.branches
    msg.branches = None
    return branches or []


def has_branches(msg) -> bool:
    return bool(msg.branches)


def fork(msg, relay_one) -> bool:
    """Parallel forking: relay_one(msg) for the request as it is, then again after each
    appended branch is made the request's own (each a client transaction of the same server
    transaction: the best final reply goes upstream). The branches are consumed. True when
    any branch went out."""
    branches = take(msg)  # first: relay_one must see a request without branches
    sent = relay_one(msg)
    for br in branches:
        use_branch(msg, br)
        sent = relay_one(msg) or sent
    return sent
