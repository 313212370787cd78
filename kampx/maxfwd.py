"""Max-Forwards (Kamailio's maxfwd module, RFC 3261 16.6 step 3)."""


def process_maxfwd(msg, default: int) -> int:
    """Kamailio's mf_process_maxfwd_header(default): an absent header is inserted with
    `default`; a present one is decremented. Returns 1 when the request may go on, -1 when
    Max-Forwards is 0 or not a number (the script answers 483 Too Many Hops)."""
    mf = msg.max_forwards
    if mf is None:
        msg.set_max_forwards(default)
        return 1
    if mf <= 0:
        return -1
    msg.set_max_forwards(mf - 1)
    return 1
