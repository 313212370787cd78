"""usrloc's control methods (Kamailio's ul.dump, ul.lookup, ul.rm, ul.rm_contact, ul.add) over
the shared location table, and its gauges for stats.get_statistics."""

from __future__ import annotations

import math
import time
import uuid

from kampx.control.params import FAILED, NOT_FOUND, int_param, str_param
from kampx.control.server import InvalidParams, RpcFault, check_params

DUMP_DEFAULT = 500
DUMP_MAX = 10000


def contact_object(b) -> dict:
    """A kampx.usrloc.Binding as docs/control.md's Contact object."""
    return {
        "contact": b.contact,
        "ruid": b.ruid,
        "expires": b.expires,
        "q": None if b.q < 0 else round(b.q / 1000.0, 3),
        "received": b.received,
        "path": b.path,
        "socket": b.socket,
        "user_agent": b.user_agent,
        "callid": b.callid,
        "cseq": b.cseq,
        "instance": b.instance,
        "reg_id": b.reg_id,
        "flags": b.flags,
        "last_modified": b.last_modified,
    }


def aor_key(text, realm: str, use_domain: bool, case_sensitive: bool = False) -> str:
    """The operator's `user` or `user@domain` (a sip: prefix tolerated) as the registrar keys
    its AORs (kampx.registrar.aor_of: the user alone with use_domain off, Kamailio's default,
    else user@domain; lower-cased unless case_sensitive), a bare user taking the realm as its
    domain."""
    from kampx._cparse import SipParseError
    from kampx.registrar import aor_of

    if not isinstance(text, str) or not text.strip():
        raise InvalidParams("'aor' must be a non-empty string (user or user@domain)")
    t = text.strip()
    if t.lower().startswith(("sip:", "sips:")):
        t = t.split(":", 1)[1]
    if "@" not in t:
        t = f"{t}@{realm}"
    try:
        key = aor_of("sip:" + t, use_domain, case_sensitive)
    except SipParseError:
        key = ""
    if not key or key.startswith("@") or (use_domain and "@" not in key):
        raise InvalidParams(f"'aor' {text!r} is not user or user@domain")
    return key


class UsrlocRpc:
    def __init__(self, shared, cfg):
        self.shared = shared
        self.cfg = cfg

    def table(self) -> dict:
        return {
            "ul.dump": self.ul_dump,
            "ul.lookup": self.ul_lookup,
            "ul.rm": self.ul_rm,
            "ul.rm_contact": self.ul_rm_contact,
            "ul.add": self.ul_add,
        }

    def gauges(self) -> dict:
        """Kamailio's usrloc gauges, read from the location table now."""
        loc = self.shared.location
        if loc is None:
            return {}
        aors, contacts = loc.stats(time.time())
        return {
            ("usrloc", "registered_users"): aors,
            ("usrloc", "location-users"): aors,
            ("usrloc", "location-contacts"): contacts,
        }

    def _location(self):
        loc = self.shared.location
        if loc is None:
            raise RpcFault(FAILED, "this proxy has no location table")
        return loc

    def _aor(self, params: dict) -> str:
        if "aor" not in params:
            raise InvalidParams("'aor' is required")
        reg = self.cfg.registrar
        return aor_key(
            params["aor"],
            self.cfg.auth.realm,
            reg.use_domain,
            getattr(reg, "case_sensitive", False),
        )

    def ul_dump(self, params: dict) -> dict:
        check_params(params, ("limit", "cursor"))
        limit = int_param(params, "limit", DUMP_DEFAULT, 1, DUMP_MAX)
        cursor = params.get("cursor")
        if cursor is None:
            cursor = 0
        elif isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0:
            raise InvalidParams("'cursor' must be the 'next' value of the previous page")
        nxt, page = self._location().dump(cursor, limit, time.time())
        if nxt != -1 and nxt <= cursor:
            raise RpcFault(FAILED, f"ul.dump did not advance past cursor {cursor}")
        aors = [
            {"aor": aor, "contacts": [contact_object(b) for b in bindings]}
            for aor, bindings in page
            if bindings
        ]
        return {"aors": aors, "next": None if nxt == -1 else nxt}

    def ul_lookup(self, params: dict) -> dict:
        check_params(params, ("aor",), ("aor",))
        aor = self._aor(params)
        bindings = self._location().lookup(aor, time.time())
        if not bindings:
            raise RpcFault(NOT_FOUND, "AOR not found")
        return {"aor": aor, "contacts": [contact_object(b) for b in bindings]}

    def ul_rm(self, params: dict) -> dict:
        check_params(params, ("aor",), ("aor",))
        n = self._location().delete(self._aor(params))
        if not n:
            raise RpcFault(NOT_FOUND, "AOR not found")
        return {"removed": n}

    def ul_rm_contact(self, params: dict) -> dict:
        check_params(params, ("aor", "contact"), ("aor", "contact"))
        aor = self._aor(params)
        contact = str_param(params, "contact")
        loc = self._location()
        n = loc.delete(aor, contact)
        if not n:
            if not loc.lookup(aor, time.time()):
                raise RpcFault(NOT_FOUND, "AOR not found")
            raise RpcFault(NOT_FOUND, "Contact not found")
        return {"removed": n}

    def ul_add(self, params: dict) -> dict:
        from kampx._cparse import SipParseError, parse_uri
        from kampx.usrloc import ERR_FULL, ERR_TOO_LARGE, OK

        check_params(
            params, ("aor", "contact", "expires", "q", "path", "flags"), ("aor", "contact")
        )
        aor = self._aor(params)
        contact = str_param(params, "contact").strip()
        try:
            ok = parse_uri(contact).scheme.lower() in ("sip", "sips")
        except SipParseError:
            ok = False
        if not ok:
            raise InvalidParams(f"'contact' {contact!r} is not a sip: or sips: URI")
        expires = int_param(params, "expires", 0, 0, None)
        q = params.get("q")
        if q is not None and (
            isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 1
        ):
            raise InvalidParams("'q' must be a number 0..1 or null")
        path = str_param(params, "path", "")
        flags = int_param(params, "flags", 0, 0, 2**32 - 1)
        now = time.time()
        callid = f"kampxctl-{uuid.uuid4().hex}"
        op = (
            contact,
            now + expires if expires else math.inf,
            -1 if q is None else int(round(q * 1000)),
            callid,
            1,
            "",
            path,
            "",
            "",
            "",
            0,
            flags,
        )
        status, bindings = self._location().apply(aor, now, [op])
        if status == ERR_FULL:
            raise RpcFault(FAILED, "usrloc table full")
        if status == ERR_TOO_LARGE:
            raise InvalidParams("'contact' and 'path' are too long for a location slot")
        if status != OK:
            raise RpcFault(FAILED, f"binding not stored (usrloc status {status})")
        for b in bindings:
            if b.callid == callid:
                return contact_object(b)
        raise RpcFault(FAILED, "binding stored but not found afterwards")
