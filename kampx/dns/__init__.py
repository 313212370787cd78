"""DNS for relaying to names (Kamailio's core resolver and DNS cache): RFC 3263 from a SIP
URI to the ordered (ip, port) list to try, a cache every process shares, and queries that
never block a worker.

    rfc3263   the resolution procedure (NAPTR -> SRV -> A/AAAA), as a generator of questions
    cache     the shared cache of answers (positive and negative, TTLs honoured, bounded)
    client    non-blocking queries to the configured nameservers (dnspython builds and
              parses the packets)
    resolver  one process's resolver: the procedure over the cache, over the client on a miss

kampx resolves a name only where a route relays a request to it, never to check or answer
one (a Via's sent-by, a Contact, a From are never looked up).
"""

from kampx.dns.rfc3263 import Answer, Target

__all__ = ["Answer", "Target"]
