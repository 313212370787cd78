"""Route script of the registrar and permissions wire tests (tests/registrar/).

REGISTER -> save("location") without authentication; INVITE (and other out-of-dialog
requests) -> lookup("location"), relayed to every binding (forked) or 404. OPTIONS to a user named
"perm" asks the permissions functions about its source, or about the address in an
X-Address header ("IP PORT"); the verdict comes back in the reply's reason phrase:
  X-Check: source GROUP   -> allow_source_address(GROUP)
  X-Check: address GROUP  -> allow_address(GROUP, IP, PORT)
  X-Check: group          -> allow_source_address_group()
  X-Check: registered     -> registered("location") for the To URI
"""
from kampx.routing import *  # noqa: F401,F403


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
        if loose_route() or (is_method("ACK") and t_check_trans()):
            t_relay()
        else:
            sl_send_reply(404, "Not here")
        exit()
    if is_method("REGISTER"):
        save("location")
        exit()
    if is_method("OPTIONS") and ruri_user() == "perm":
        permissions_check(msg)
        exit()
    t_check_trans()
    rc = lookup("location")
    if rc == -1:
        sl_send_reply(404, "User not Registered")
        exit()
    if not rc:
        sl_send_reply(400, f"Lookup Failed {int(rc)}")
        exit()
    # every binding of the AOR, in parallel (Kamailio's append_branches + t_relay)
    if not t_relay():
        sl_reply_error()


def permissions_check(msg):
    what = (msg.header("x-check") or "").split()
    if what[:1] == ["source"]:
        ok = allow_source_address(int(what[1]))
    elif what[:1] == ["address"]:
        ip, port = msg.header("x-address").split()
        ok = allow_address(int(what[1]), ip, int(port))
    elif what[:1] == ["group"]:
        group = allow_source_address_group()
        sl_send_reply(200 if group else 403, f"Group {int(group)}")
        return
    elif what[:1] == ["registered"]:
        ok = registered("location", msg.to_uri)
    else:
        sl_send_reply(400, "Bad X-Check")
        return
    if ok:
        sl_send_reply(200, f"Allowed tag={peer_tag()}")
    else:
        sl_send_reply(403, "Forbidden")
