"""The control methods (docs/control.md), served by the ctl process over the shared tables.

Nothing here talks to a worker: the location table, the address table and the counters are
in shared memory, the process list comes from /proc, and a route-script reload is the
supervisor's SIGHUP. Names and results follow Kamailio's RPC where Kamailio has the method.
"""
from __future__ import annotations

import math
import os
import platform
import signal
import time
import uuid

from kampx import __version__, procinfo, state
from kampx import config as config_mod
from kampx.control.server import InvalidParams, RpcFault, check_params
from kampx.stats.kamctl import StatsView, UnknownStatistic

NOT_FOUND = 404
FAILED = 500
BUSY = 503

DUMP_DEFAULT = 500
DUMP_MAX = 10000
RELOAD_DELTA = 1.0          # seconds between two address reloads (Kamailio's reload_delta)
CFG_RELOAD_WAIT = 8.0       # how long cfg.reload waits for the new workers to appear
PSX_WINDOW = 0.2


def contact_object(b) -> dict:
    """A kampx.usrloc.Binding as docs/control.md's Contact object."""
    return {"contact": b.contact, "ruid": b.ruid, "expires": b.expires,
            "q": None if b.q < 0 else round(b.q / 1000.0, 3), "received": b.received,
            "path": b.path, "socket": b.socket, "user_agent": b.user_agent,
            "callid": b.callid, "cseq": b.cseq, "instance": b.instance, "reg_id": b.reg_id,
            "flags": b.flags, "last_modified": b.last_modified}


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


def _int(params: dict, name: str, default: int, lo: int, hi: int | None) -> int:
    v = params.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise InvalidParams(f"'{name}' must be an integer {rng}")
    return v


def _str(params: dict, name: str, default: str | None = None) -> str:
    v = params.get(name, default)
    if not isinstance(v, str):
        raise InvalidParams(f"'{name}' must be a string")
    return v


class Methods:
    """The method table of one ctl process."""

    def __init__(self, shared, cfg, supervisor_pid: int, started: float,
                 stats_view: StatsView):
        self.shared = shared
        self.cfg = cfg
        self.supervisor_pid = supervisor_pid
        self.started = started
        self.stats = stats_view
        self._last_address_reload = -math.inf

    def table(self) -> dict:
        return {
            "ul.dump": self.ul_dump,
            "ul.lookup": self.ul_lookup,
            "ul.rm": self.ul_rm,
            "ul.rm_contact": self.ul_rm_contact,
            "ul.add": self.ul_add,
            "permissions.addressReload": self.address_reload,
            "permissions.addressDump": self.address_dump,
            "core.uptime": self.core_uptime,
            "core.psx": self.core_psx,
            "core.version": self.core_version,
            "stats.get_statistics": self.get_statistics,
            "stats.reset_statistics": self.reset_statistics,
            "cfg.reload": self.cfg_reload,
            "system.listMethods": self.list_methods,
        }

    # -- usrloc -------------------------------------------------------------------------------

    def _location(self):
        loc = self.shared.location
        if loc is None:
            raise RpcFault(FAILED, "this proxy has no location table")
        return loc

    def _aor(self, params: dict) -> str:
        if "aor" not in params:
            raise InvalidParams("'aor' is required")
        reg = self.cfg.registrar
        return aor_key(params["aor"], self.cfg.auth.realm, reg.use_domain,
                       getattr(reg, "case_sensitive", False))

    def ul_dump(self, params: dict) -> dict:
        check_params(params, ("limit", "cursor"))
        limit = _int(params, "limit", DUMP_DEFAULT, 1, DUMP_MAX)
        cursor = params.get("cursor")
        if cursor is None:
            cursor = 0
        elif isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0:
            raise InvalidParams("'cursor' must be the 'next' value of the previous page")
        nxt, page = self._location().dump(cursor, limit, time.time())
        if nxt != -1 and nxt <= cursor:
            raise RpcFault(FAILED, f"ul.dump did not advance past cursor {cursor}")
        aors = [{"aor": aor, "contacts": [contact_object(b) for b in bindings]}
                for aor, bindings in page if bindings]
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
        contact = _str(params, "contact")
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
        check_params(params, ("aor", "contact", "expires", "q", "path", "flags"),
                     ("aor", "contact"))
        aor = self._aor(params)
        contact = _str(params, "contact").strip()
        try:
            ok = parse_uri(contact).scheme.lower() in ("sip", "sips")
        except SipParseError:
            ok = False
        if not ok:
            raise InvalidParams(f"'contact' {contact!r} is not a sip: or sips: URI")
        expires = _int(params, "expires", 0, 0, None)
        q = params.get("q")
        if q is not None and (isinstance(q, bool) or not isinstance(q, (int, float))
                              or not 0 <= q <= 1):
            raise InvalidParams("'q' must be a number 0..1 or null")
        path = _str(params, "path", "")
        flags = _int(params, "flags", 0, 0, 2**32 - 1)
        now = time.time()
        callid = f"kampxctl-{uuid.uuid4().hex}"
        op = (contact, now + expires if expires else math.inf,
              -1 if q is None else int(round(q * 1000)), callid, 1, "", path, "", "", "", 0,
              flags)
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

    # -- permissions --------------------------------------------------------------------------

    def address_reload(self, params: dict) -> dict:
        check_params(params, ())
        wait = self._last_address_reload + RELOAD_DELTA - time.monotonic()
        if wait > 0:
            wait = math.ceil(wait * 10) / 10
            raise RpcFault(BUSY, f"reload too soon, try again in {wait:g} s",
                           {"retry_after": wait})
        self._last_address_reload = time.monotonic()
        try:
            n = state.reload(self.shared, self.cfg)
        except state.StateError as e:
            raise RpcFault(FAILED, str(e)) from None
        return {"rows": n, "generation": self.shared.permissions.generation}

    def address_dump(self, params: dict) -> dict:
        check_params(params, ())
        table = self.shared.permissions
        if table is None:
            return {"generation": 0, "rows": []}
        gen = table.generation
        rows = [{"grp": e.grp, "ip_addr": e.ip_addr, "mask": e.mask, "port": e.port,
                 "tag": e.tag} for e in table.rows()]
        return {"generation": gen, "rows": rows}

    # -- core ---------------------------------------------------------------------------------

    def core_uptime(self, params: dict) -> dict:
        check_params(params, ())
        now = time.time()
        return {"now": now, "up_since": self.started, "uptime": now - self.started}

    def core_psx(self, params: dict) -> list:
        check_params(params, ())
        return procinfo.psx(self.supervisor_pid, PSX_WINDOW)

    def core_version(self, params: dict) -> dict:
        check_params(params, ())
        return {"name": "kampx", "version": __version__, "python": platform.python_version()}

    def list_methods(self, params: dict) -> list:
        check_params(params, ())
        return sorted(self.table())

    # -- statistics ---------------------------------------------------------------------------

    def usrloc_values(self) -> dict:
        """Kamailio's usrloc gauges, read from the location table now."""
        loc = self.shared.location
        if loc is None:
            return {}
        aors, contacts = loc.stats(time.time())
        return {("usrloc", "registered_users"): aors, ("usrloc", "location-users"): aors,
                ("usrloc", "location-contacts"): contacts}

    def get_statistics(self, params: dict) -> dict:
        check_params(params, ("group",))
        group = params.get("group")
        if group is not None and not isinstance(group, str):
            raise InvalidParams("'group' must be a string")
        if group in ("all", ""):
            group = None
        try:
            return self.stats.get(group, self.usrloc_values())
        except UnknownStatistic as e:
            raise RpcFault(NOT_FOUND, str(e)) from None

    def reset_statistics(self, params: dict) -> dict:
        check_params(params, ("group", "name"))
        group, name = params.get("group"), params.get("name")
        for key, v in (("group", group), ("name", name)):
            if v is not None and not isinstance(v, str):
                raise InvalidParams(f"'{key}' must be a string")
        if group in ("all", ""):
            group = None
        try:
            return {"reset": self.stats.reset(group, name)}
        except UnknownStatistic as e:
            raise RpcFault(NOT_FOUND, str(e)) from None

    # -- reload -------------------------------------------------------------------------------

    def cfg_reload(self, params: dict) -> dict:
        """Check the config and route script here (so a broken one is reported to the caller),
        then SIGHUP the supervisor and wait until its replacement workers exist."""
        from kampx.routing import loader
        check_params(params, ())
        try:
            cfg = config_mod.load(self.cfg.path) if self.cfg.path else self.cfg
            loader.load(cfg.routing.script)
        except config_mod.ConfigError as e:
            raise RpcFault(FAILED, str(e)) from None
        except loader.ScriptError as e:
            raise RpcFault(FAILED, f"route script {e}") from None
        before = {p.pid for p in procinfo.processes(self.supervisor_pid)}
        try:
            os.kill(self.supervisor_pid, signal.SIGHUP)
        except ProcessLookupError:
            raise RpcFault(FAILED, "the supervisor is gone") from None
        deadline = time.monotonic() + CFG_RELOAD_WAIT
        while time.monotonic() < deadline:
            # a new child is a worker (still titled "supervisor" right after fork):
            # helpers are not restarted by a reload
            fresh = {p.pid for p in procinfo.processes(self.supervisor_pid)[1:]
                     if p.pid not in before
                     and (p.role.startswith("udp receiver") or p.role == "supervisor")}
            if fresh:
                self.cfg = cfg
                return {"script": cfg.routing.script}
            time.sleep(0.05)
        raise RpcFault(FAILED, f"no new worker started within {CFG_RELOAD_WAIT:g} s "
                               "(see the kampx log)")
