"""Max-Forwards (Kamailio's maxfwd module, RFC 3261 16.6 step 3)."""

# Kamailio's maxfwd max_limit: what a request leaves with at most (checked on the wire: 5.6
# forwards an incoming 71..65535 as 70)
MAX_LIMIT = 70


def process_maxfwd(msg, default: int, limit: int = MAX_LIMIT) -> int:
    """Kamailio's mf_process_maxfwd_header(default): an absent header is inserted with
    `default`; a present one is decremented, and capped at `limit`. Returns 1 when the
    request may go on, -1 when Max-Forwards is 0 or not a number (the script answers 483
    Too Many Hops). Done in C on the parsed header (kampx._cparse Message.process_maxfwd)."""
    return msg.process_maxfwd(default, limit)
