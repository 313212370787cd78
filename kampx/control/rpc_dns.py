"""The DNS cache's control methods (Kamailio's dns.view and dns.delete_all)."""

from __future__ import annotations

from kampx.control.server import check_params


class DnsRpc:
    def __init__(self, shared):
        self.shared = shared

    def table(self) -> dict:
        return {"dns.view": self.view, "dns.delete_all": self.delete_all}

    def view(self, params: dict) -> dict:
        """Every live answer: name, type, what it says, the seconds it has left."""
        check_params(params, ())
        cache = self.shared.dns_cache
        entries = [
            {
                "name": e.name,
                "type": e.qtype,
                "status": e.answer.status,
                "ttl": e.answer.ttl,
                "records": [_record_text(e.qtype, r) for r in e.answer.records],
            }
            for e in cache.entries()
        ]
        return {"capacity": cache.capacity, "entries": entries}

    def delete_all(self, params: dict) -> dict:
        """Empty the cache in every process: the next request for a name asks again."""
        check_params(params, ())
        return {"removed": self.shared.dns_cache.clear()}


def _record_text(qtype: str, record) -> str:
    """A record as a zone file writes its data."""
    if isinstance(record, str):
        return record
    if qtype == "SRV":
        prio, weight, port, target = record
        return f"{prio} {weight} {port} {target}"
    if qtype == "NAPTR":
        order, pref, flags, services, regexp, replacement = record
        return f'{order} {pref} "{flags}" "{services}" "{regexp}" {replacement}'
    return " ".join(str(x) for x in record)
