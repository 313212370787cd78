"""A minimal stateful proxy: every request goes to one fixed next hop.

Used by the core tests, and a starting point for a script of your own. Set the next hop
with the environment variable KAMPX_NEXT_HOP ("IP:PORT") or edit NEXT_HOP below.
"""

import os

from kampx.routing import *

NEXT_HOP = os.environ.get("KAMPX_NEXT_HOP", "127.0.0.1:5080")


def request_route(msg):
    if not mf_process_maxfwd_header(10):
        sl_send_reply(483, "Too Many Hops")
        exit()
    if is_method("OPTIONS") and is_myself() and ruri_user() is None:
        sl_send_reply(200, "Keepalive")
        exit()
    if is_method("CANCEL"):
        if t_check_trans():
            t_relay()
        exit()
    if has_totag():
        if loose_route():
            t_relay()
            exit()
        if is_method("ACK"):
            if t_check_trans():
                t_relay()
            exit()
        sl_send_reply(404, "Not here")
        exit()
    t_check_trans()
    if is_method("INVITE"):
        record_route()
    rewritehostport(NEXT_HOP)
    if not t_relay():
        sl_reply_error()
