"""The route-script API: `from kampx.routing import *` in a script gives the functions
Kamailio's KEMI would, each kampx module exporting its own (an explicit __all__ in each file
below, one file per Kamailio module):

    core         flow (exit, drop), the message, Request-URI/$du rewrites, is_myself, xlog
    sl           sl_send_reply, sl_reply_error, send_reply
    maxfwd       mf_process_maxfwd_header
    sanity       sanity_check
    rr           record_route, loose_route
    tm           t_relay, t_check_trans, t_reply ...
    registrar    save, lookup, registered, unregister
    permissions  allow_source_address, allow_address ...
    auth         auth_check, www_challenge, proxy_challenge, consume_credentials ...
    security     is_scanner, pike_check_req, auth_banned
    dispatcher   ds_select_dst, ds_next_dst, ds_mark_dst, ds_is_from_list ...
    dialog       dlg_manage, is_known_dlg (accounting: setflag in core, [acc] flags)

A route script is a Python module:

    from kampx.routing import *

    def request_route(msg):
        if not mf_process_maxfwd_header(10):
            sl_send_reply(483, "Too Many Hops")
            exit()
        ...

The functions act on the message being processed (the `msg` handed to the route function),
as Kamailio's act on the current message: `lookup("location")` reads and rewrites its
Request-URI, `t_relay()` relays it. `exit()` ends processing from any depth, like a Kamailio
route block's `exit`. The route functions a script may define: request_route(msg)
(required), reply_route(msg), failure_route(msg), branch_route(msg).
"""

from kampx.routing import (
    auth,
    core,
    dialog,
    dispatcher,
    maxfwd,
    permissions,
    registrar,
    rr,
    sanity,
    security,
    sl,
    tm,
)
from kampx.routing.context import Result

MODULES = (
    core,
    sl,
    maxfwd,
    sanity,
    rr,
    tm,
    registrar,
    permissions,
    auth,
    security,
    dispatcher,
    dialog,
)


def _exports() -> dict:
    out = {"Result": Result}
    for module in MODULES:
        for name in module.__all__:
            if name in out:
                raise ImportError(f"route-script function {name} exported twice")
            out[name] = getattr(module, name)
    return out


globals().update(_exports())
__all__ = sorted(_exports())
