"""Record-Route and loose routing (Kamailio's rr module, RFC 3261 16.6 step 4 and 16.4).

A request that leaves by another socket than the one it came in on (IPv4 in, IPv6 out; two
addresses) gets two Record-Routes, as Kamailio's rr does by default (enable_double_rr):
the top one for the socket it leaves by, the next one for the socket it came in on, both
marked `r2=on`. Each side then reaches the proxy at the address it can reach, and
loose_route() takes both Routes off.
"""

from __future__ import annotations

from kampx._cparse import SipParseError


def record_route(worker, msg) -> bool:
    """Insert `Record-Route: <sip:IP[:port];lr>` for the socket the request arrived on (two
    when a branch leaves by another socket: `branch_lines`)."""
    if msg.rr_added:
        return True
    msg.record_route(msg.lsock.rr_value)
    return True


def branch_lines(msg, out_lsock) -> bytes | None:
    """The Record-Route lines of a branch of `msg` that leaves by `out_lsock`: None for
    record_route()'s own (the same socket), else the double Record-Route."""
    lsock = msg.lsock
    if not msg.rr_added or out_lsock.index == lsock.index:
        return None
    return b"Record-Route: %s\r\nRecord-Route: %s\r\n" % (out_lsock.rr_double, lsock.rr_double)


def loose_route(worker, msg) -> bool:
    """Process the Route set of an in-dialog request.

    True when the request carried a Route set naming this proxy first: our Route is removed
    and the next hop is the following Route (a loose router, ;lr), or the Request-URI when
    ours was the last one. A strict-routed request (Request-URI is our Record-Route, RFC 3261
    16.4) gets its Request-URI back from the last Route. False when there is no Route, or
    the first one is not ours (the request is not for us to route this way), or the request
    is in-dialog (To-tag) but not in a dialog this proxy Record-Routed and saw established
    (kampx/dialog.py; counted as dialog.rejected_requests): nothing is changed then.
    """
    # the common case first, from the parser's offsets: every Route is ours (one, or the
    # two of a double Record-Route), so the next hop is the Request-URI
    try:
        count, hops = msg._route_hops(2)
    except SipParseError:
        return False
    if not count:
        return False
    myself = worker.forwarder.is_myself
    first = hops[0]
    if first is not None and myself(first[0], first[1]):
        ours = 1
        if count > 1 and first[3]:
            second = hops[1]
            if second is not None and myself(second[0], second[1]):
                ours = 2
        if count == ours:
            dialogs = worker.dialogs
            if msg.has_to_tag and not dialogs.admit(msg):
                return False  # a Route of ours, but no dialog of ours (kampx/dialog.py)
            for _ in range(ours):
                msg._remove_top_route()
            return True
    return _route_set(worker, msg)


def _route_set(worker, msg) -> bool:
    """loose_route() when the Route set goes on past ours or does not start with ours."""
    routes = msg.routes
    uri = msg.uri
    if routes:
        first = routes[0].parsed_uri if _is_uri(routes[0]) else None
        if first is not None and worker.forwarder.is_myself(first.host, first.port):
            if msg.has_to_tag and not worker.dialogs.admit(msg):
                return False  # a Route of ours, but no dialog of ours (kampx/dialog.py)
            msg.remove_top_route()
            ours = 1
            if len(routes) > 1 and "r2" in first.params:
                # a double Record-Route of ours (the request crosses sockets): both go
                second = routes[1].parsed_uri if _is_uri(routes[1]) else None
                if second is not None and worker.forwarder.is_myself(second.host, second.port):
                    msg.remove_top_route()
                    ours = 2
            if len(routes) > ours:
                nxt = routes[ours]
                nuri = nxt.parsed_uri if _is_uri(nxt) else None
                if nuri is not None and "lr" not in nuri.params:
                    # next hop is a strict router: it goes into the Request-URI and the
                    # Request-URI goes to the end of the Route set (RFC 3261 16.12.1.2)
                    msg.remove_header("route")
                    for r in routes[ours + 1 :]:
                        msg.append_header("Route", r.raw)
                    msg.append_header("Route", f"<{msg.ruri}>")
                    msg.set_ruri(nxt.uri)
                else:
                    msg.dst = nxt.uri
            return True
        if uri is not None and worker.forwarder.is_myself(uri.host, uri.port) and not uri.user:
            # we were addressed as a strict router: the last Route is the real target
            if msg.has_to_tag and not worker.dialogs.admit(msg):
                return False
            last = routes[-1]
            msg.remove_header("route")
            for r in routes[:-1]:
                msg.append_header("Route", r.raw)
            msg.set_ruri(last.uri)
            return True
    return False


def _is_uri(na) -> bool:
    try:
        na.parsed_uri  # noqa: B018 - parsing raises SipParseError on a bad URI
        return True
    except SipParseError:
        return False
