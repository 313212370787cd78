"""builtin:kamailio101 -- the Kamailio 101 tutorial's proxy, in Python.

The final proxy of Nick vs Networking's "Kamailio 101" series (part 9) with Record-Route, so
in-dialog requests stay on the proxy, and Kamailio's default REQINIT checks. Users register
with digest authentication; calls from the carrier's trunk (its addresses are permissions
address group [routing] carrier_group) go to the registered user or get 404; calls from
users are authenticated and go to the registered user, else out to [routing] carrier.
Every call is accounted (ACCOUNT: Kamailio's acc flags and dlg_manage()): a row in `acc`
when answered, in `missed_calls` when not, a CDR in `acc_cdrs` when it ends, with its
direction (inbound from the carrier, outbound to it, local between users).

Each route block of the Kamailio config is a function here, called where the config says
`route(NAME)`; every block ends the request (exit) unless it returns to its caller on
purpose, as route(WITHINDLG) does for a request outside a dialog.

To start a script of your own, copy this file, edit it and point the config at it:

    [routing]
    script = "/etc/kampx/myproxy.py"

`kampx check --config FILE` validates it before you reload.
"""

from kampx.routing import *


def request_route(msg):
    REQINIT()

    # CANCEL: relayed when it matches an INVITE transaction of ours, else dropped
    if is_method("CANCEL"):
        if t_check_trans():
            RELAY()
        exit()

    WITHINDLG()

    # retransmissions of initial requests: their transaction answers them
    if not is_method("ACK"):
        if t_precheck_trans():
            t_check_trans()
            exit()
        t_check_trans()

    # a preloaded Route must not steer an initial request anywhere
    remove_hf("Route")

    if is_method("REGISTER"):
        REGISTRAR()

    if is_method("INVITE"):
        if allow_source_address(cfg_get("routing", "carrier_group")):
            ACCOUNT("inbound")
            ONNETINVITE(from_carrier=True)  # the carrier's trunk: no authentication
        AUTH()
        ACCOUNT()
        ONNETINVITE(from_carrier=False)

    sl_send_reply(501, "Not Implemented")
    exit()


def REQINIT():
    """Kamailio's default request checks, security first."""
    # scanners (friendly-scanner, sipcli, ...): silent drop, from any source
    if is_scanner():
        drop()
    # a source over the flood limit, or banned for failed authentications: silent drop
    # (the carrier's addresses and the proxy's own are exempt)
    if auth_banned() or not pike_check_req():
        drop()
    if not mf_process_maxfwd_header(10):
        sl_send_reply(483, "Too Many Hops")
        exit()
    # keepalive: OPTIONS to the proxy itself, no user part
    if is_method("OPTIONS") and is_myself() and ruri_user() is None:
        sl_send_reply(200, "Keepalive")
        exit()
    # sanity_check("1511", "7") has already answered a broken request with its 400
    if not sanity_check(1511, 7):
        exit()


def WITHINDLG():
    """In-dialog requests (To-tag): along the Route set we Record-Routed, else 404."""
    if not has_totag():
        return
    if loose_route():
        if is_method("BYE"):
            setflag(cfg_get("acc", "log_flag"))  # Kamailio's default: BYEs are accounted
            setflag(cfg_get("acc", "failed_transaction_flag"))
        RELAY()
    if is_method("ACK"):
        # an ACK for a non-2xx final of ours is absorbed by its transaction
        if t_check_trans():
            RELAY()
        exit()
    sl_send_reply(404, "Not here")
    exit()


def REGISTRAR():
    """REGISTER: www digest authentication (realm = From domain), then save the bindings.
    save() answers the REGISTER itself (200 with the bindings, or the error).

    The challenges offer qop="auth" (flag 1; the tutorial has 0): a client that uses it
    counts its responses (nc), so a captured one replayed is refused. RFC 2069 clients,
    which ignore qop, still authenticate."""
    realm = from_domain()
    if not auth_check(realm, "subscriber", 1):
        www_challenge(realm, 1)
        exit()
    consume_credentials()
    save("location")
    exit()


def AUTH():
    """Calls from users: proxy digest authentication; the auth user must be the caller."""
    realm = from_domain()
    if not auth_check(realm, "subscriber", 1):
        proxy_challenge(realm, 1)  # qop="auth", as for REGISTER
        exit()
    consume_credentials()


def ONNETINVITE(from_carrier):
    """A call for a number of ours: to its registered device. Not registered: the carrier
    gets 404, a user's call goes out to the carrier."""
    if lookup("location"):
        record_route()
        RELAY()
    if from_carrier:
        sl_send_reply(404, "User not Registered")
        exit()
    TOCARRIER()


def TOCARRIER():
    """Out to the carrier. With [routing] carrier_set, to a gateway of that dispatcher set
    (round-robin over the active ones); else the Request-URI host and port become
    [routing] carrier's, which may be a name ("sip:carrier.example"), resolved per RFC 3263
    (NAPTR, SRV by priority and weight, A). When a switch answers 503 or nothing,
    CARRIER_FAILED moves the call on to the next one."""
    carrier_set = cfg_get("routing", "carrier_set")
    if carrier_set:
        if not ds_select_dst(carrier_set, 4):
            sl_send_reply(503, "Service Unavailable")  # every gateway of the set is down
            exit()
    else:
        carrier = cfg_get("routing", "carrier")  # "sip:HOST[:PORT][;transport=tcp]"
        hostport = carrier.split(":", 1)[1].split(";", 1)[0].rpartition("@")[2]
        rewritehostport(hostport)
        if ";" in carrier:
            setdsturi(carrier)  # its parameters (transport=tcp) say how to reach it
    setflag(cfg_get("acc", "outbound_flag"))
    record_route()
    t_on_failure(CARRIER_FAILED)
    RELAY()


def CARRIER_FAILED(msg):
    """Failure route of a call to the carrier: a switch that answered 503, or nothing at
    all (408: [tm] fr_failover_ms without a reply while another switch was left), is
    passed over for the next address of its name, then for the next gateway of the set (a
    gateway that did not answer at all is marked inactive: the prober brings it back),
    until none is left; then the best reply goes to the caller (a 503 as 500)."""
    if t_is_canceled():
        exit()
    if not t_check_status("503|408"):
        exit()
    if not t_next_dst():
        if not cfg_get("routing", "carrier_set"):
            exit()
        if t_check_status("408"):
            ds_mark_dst("ip")
        if not ds_next_dst():
            exit()
    t_on_failure(CARRIER_FAILED)
    t_relay()


def ACCOUNT(direction=None):
    """Account this call: a row in acc when it is answered, in missed_calls when not
    (including the 404 to an unregistered user), its dialog tracked for its CDR and
    `kampxctl dlg`. `direction` "inbound" (from the carrier) sets [acc] inbound_flag;
    TOCARRIER sets outbound_flag; a call with neither is local."""
    setflag(cfg_get("acc", "log_flag"))
    setflag(cfg_get("acc", "log_missed_flag"))
    if direction is not None:
        setflag(cfg_get("acc", direction + "_flag"))
    dlg_manage()


def RELAY():
    """Statefully, to the Request-URI (or the destination lookup() set)."""
    if not t_relay():
        sl_reply_error()
    exit()
