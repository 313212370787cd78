"""The dispatcher wire tests' route script: INVITEs go to dispatcher set 1 (round-robin),
MESSAGE answers whether it came from a gateway of set 1 (ds_is_from_list)."""

from kampx.routing import *


def request_route(msg):
    if not mf_process_maxfwd_header(10):
        sl_send_reply(483, "Too Many Hops")
        exit()
    if is_method("OPTIONS") and is_myself() and ruri_user() is None:
        sl_send_reply(200, "Keepalive")
        exit()
    if is_method("ACK"):
        if t_check_trans():
            t_relay()
        exit()
    if is_method("MESSAGE"):
        if ds_is_from_list(1):
            sl_send_reply(200, "From a gateway")
        else:
            sl_send_reply(403, "Not a gateway")
        exit()
    if is_method("INVITE"):
        t_check_trans()
        if not ds_select_dst(1, 4):
            sl_send_reply(503, "No gateway")
            exit()
        if not t_relay():
            sl_reply_error()
        exit()
    sl_send_reply(501, "Not Implemented")
