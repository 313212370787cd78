"""Kamailio's registrar: REGISTER processing (RFC 3261 10.3) and location lookup.

save() answers the REGISTER itself, as Kamailio's save("location") does: 200 OK listing every
current binding of the AOR in one Contact header ("<uri>;expires=N, <uri2>;q=0.5;expires=M",
remaining seconds), or an error with Kamailio's code, reason phrase and P-Registrar-Error
line. lookup() rewrites the Request-URI to the AOR's best binding and, like Kamailio with
append_branches, makes every further binding a branch of the destination set (kampx/dset.py)
that t_relay() forks to. The
bindings live in the shared-memory location table (kampx/usrloc, shared.location); this
module is the policy.

Choices where Kamailio offers several:
- AOR = the To URI's user, unescaped (use_domain = false, Kamailio's default), else
  user@domain; lower-cased unless [registrar] case_sensitive (Kamailio's default is
  case-insensitive).
- A contact asking for less than min_expires gets 423 Interval Too Brief with Min-Expires
  ([registrar] min_expires_mode = 1), or is raised to it (0, Kamailio's default).
- max_contacts: "reject" answers 503 (Kamailio), "overwrite" drops the AOR's least recently
  refreshed bindings instead.
- NAT: when the top Via's sent-by is not the address the REGISTER came from (what
  nat_uac_test("18") checks) and the Contact does not name that address either, the source
  is kept as the binding's `received` ("sip:IP:PORT") and lookup() sends there. A third
  party registering someone else's contact (Via = source) is not mistaken for NAT.
- Path (RFC 3327) is always stored; lookup() turns it into Route headers and sends to the
  first hop. The 200 OK echoes Path when the REGISTER says Supported: path.
- Several nodes on one PostgreSQL database ([db] url postgresql://): a binding registered on
  another node (its socket is not ours) is reached through that node, which holds the
  phone's NAT pinhole; see kampx/cluster.py for the mark on the Request-URI and why not Path.
- Lookup order: highest q first (no q counts as 1.0), then the most recently refreshed. The
  200 OK lists q descending, then the least recently refreshed first (Kamailio lists
  bindings in the order they were created; refreshing one moves it to the end here).
"""

from __future__ import annotations

import logging
import re
import time

from kampx import cluster, dset
from kampx import stats as S
from kampx._cparse import SipParseError, parse_name_addr, parse_uri, split_commas, unescape
from kampx.sl import send_reply
from kampx.usrloc import ERR_CSEQ, ERR_FULL, ERR_TOO_LARGE, ERR_TOO_MANY, OK, LockError

ACCEPTED_REGS = S.family("registrar", "accepted_regs", S.KIND_COUNTER, "REGISTER requests accepted")
REJECTED_REGS = S.family("registrar", "rejected_regs", S.KIND_COUNTER, "REGISTER requests rejected")
STATISTICS = (ACCEPTED_REGS, REJECTED_REGS)

log = logging.getLogger("kampx.registrar")

TABLE = "location"

# Kamailio's limits (registrar: contact_max_size, CALLID_MAX_SIZE, MAX_UA_SIZE; usrloc:
# cseq_delay, the window in which a REGISTER with the same Call-ID and CSeq is taken for a
# retransmission and answered with the current bindings instead of 400)
CONTACT_MAX = 512
CALLID_MAX = 255
UA_MAX = 255
NO_UA = "n/a"
CSEQ_DELAY = 20
PERMANENT_EXPIRES = 0xFFFFFFFF  # what the 200 OK shows for a binding that never expires
# bytes of Contact text a REGISTER reply lists at most (about 15 to 25 bindings; see
# contact_header): what one REGISTER can draw, whatever the AOR holds
CONTACTS_REPLY_MAX = 2048

# save() flags (Kamailio's REG_SAVE_*_FL values)
SAVE_NO_REPLY = 0x02

# Kamailio's save() / lookup() return codes
RC_SAVED, RC_REMOVED_ALL, RC_QUERY = 1, 3, 4
RC_ERROR, RC_TOO_MANY = -1, -2
LOOKUP_FOUND, LOOKUP_NONE, LOOKUP_ERROR = 1, -1, -3


class RegError:
    """One of Kamailio's registrar errors (registrar/reply.c): code, reason, error info."""

    __slots__ = ("code", "reason", "info")

    def __init__(self, code: int, reason: str, info: str):
        self.code, self.reason, self.info = code, reason, info


_BAD = "Bad Request"
R_UL_GET_R = RegError(500, "Server Internal Error", "usrloc_record_get failed")
R_UL_INS_C = RegError(500, "Server Internal Error", "usrloc_contact_insert failed")
R_INV_CSEQ = RegError(400, _BAD, "Invalid CSeq number")
R_AOR_PARSE = RegError(400, _BAD, "Error while parsing AOR")
R_TO_USER = RegError(400, _BAD, "No username in To URI")
R_INV_Q = RegError(400, _BAD, "Invalid q param in contact")
R_TO_MISS = RegError(400, _BAD, "To header not found")
R_CID_MISS = RegError(400, _BAD, "Call-ID header not found")
R_CS_MISS = RegError(400, _BAD, "CSeq header not found")
R_PARSE_EXP = RegError(400, _BAD, "Expires parse error")
R_PARSE_CONT = RegError(400, _BAD, "Contact parse error")
R_STAR_EXP = RegError(400, _BAD, "* used in contact and expires is not zero")
R_STAR_CONT = RegError(400, _BAD, "* used in contact and more than 1 contact")
R_TOO_MANY = RegError(503, "Service Unavailable", "Too many registered contacts")
R_TABLE_FULL = RegError(503, "Service Unavailable", "usrloc_contact_insert failed")
R_CONTACT_LEN = RegError(400, _BAD, "Contact/received too long")
R_CALLID_LEN = RegError(400, _BAD, "Callid too long")
R_PARSE_PATH = RegError(400, _BAD, "Path parse error")
R_INV_REGID = RegError(400, _BAD, "Invalid Reg-Id number")
R_LOW_EXP = RegError(423, "Interval Too Brief", "Interval too brief")

# RFC 3261 qvalue: "0" [ "." 0*3DIGIT ] / "1" [ "." 0*3("0") ]
_QVALUE = re.compile(r"^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$")


class _Reject(Exception):
    def __init__(self, err: RegError):
        self.err = err


# ------------------------------------------------------------------------------ helpers --


def _store(worker):
    store = worker.ctx.shared.location
    if store is None:
        raise RuntimeError("the location table is not attached")
    return store


def _aor(worker, uri: str) -> str:
    cfg = worker.cfg.registrar
    return aor_of(uri, cfg.use_domain, cfg.case_sensitive)


def _check_table(table: str) -> None:
    if table != TABLE:
        raise ValueError(f"usrloc table '{table}' does not exist (kampx has '{TABLE}')")


def aor_of(uri: str, use_domain: bool, case_sensitive: bool = False) -> str:
    """Kamailio's extract_aor(): the user part unescaped, plus "@domain" with use_domain;
    lower-cased (the domain always; the user too unless case_sensitive, Kamailio's default
    being case-insensitive). Raises SipParseError when the URI does not parse."""
    return _aor_of_uri(parse_uri(uri), use_domain, case_sensitive)


def _aor_of_uri(u, use_domain: bool, case_sensitive: bool) -> str:
    return _aor_of_parts(u.user, u.host, use_domain, case_sensitive)


def _aor_of_parts(user: str | None, host: str, use_domain: bool, case_sensitive: bool) -> str:
    user = user or ""
    if "%" in user:
        user = unescape(user)
    if not case_sensitive:
        user = user.lower()
    if not use_domain:
        return user
    host = host.lower()
    return f"{user}@{host}" if user else host


def parse_q(text: str | None) -> int:
    """A Contact q parameter as q*1000; -1 when absent. ValueError when malformed."""
    if text is None or text == "":
        return -1
    if not _QVALUE.match(text):
        raise ValueError(text)
    whole, _, frac = text.partition(".")
    return int(whole) * 1000 + int((frac + "000")[:3])


def q_text(q: int) -> str:
    """q*1000 as Kamailio prints it (q2str): "1", "0", "0.5", "0.05", "0.125"."""
    if q >= 1000:
        return "1"
    if q <= 0:
        return "0"
    return "0." + f"{q:03d}".rstrip("0")


def _q_key(q: int) -> int:
    return 1000 if q < 0 else q


def uri_equal(a: str, b: str) -> bool:
    """Contact URIs compare byte for byte except scheme and host (case-insensitive), as the
    location table matches them."""
    return a == b or (len(a) == len(b) and _fold(a) == _fold(b))


def _fold(uri: str) -> str:
    scheme, sep, rest = uri.partition(":")
    if not sep:
        return uri
    at = rest.find("@")
    stop = len(rest)
    for ch in ";?>":
        i = rest.find(ch)
        if i >= 0:
            stop = min(stop, i)
    start = at + 1 if 0 <= at < stop else 0
    end = start
    if rest[start : start + 1] == "[":
        end = rest.find("]", start)
        end = len(rest) if end < 0 else end
    while end < len(rest) and rest[end] not in ":;?>":
        end += 1
    return scheme.lower() + ":" + rest[:start] + rest[start:end].lower() + rest[end:]


def _unquote(v: str | None) -> str:
    if not v:
        return ""
    v = v.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        return v[1:-1]
    return v


def _ip_text(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


def _source_uri(src: tuple) -> str:
    ip, port = src[0], src[1]
    return f"sip:[{ip}]:{port}" if ":" in ip else f"sip:{ip}:{port}"


def _behind_nat(msg) -> bool:
    """The top Via's sent-by is not where the request came from (nat_uac_test 2 + 16)."""
    return not msg.sent_by_is_source()


def _contact_is_source(uri: str, src: tuple) -> bool:
    if src[0] not in uri:  # the usual NAT case: the Contact names a private address
        return False
    try:
        u = parse_uri(uri)
    except SipParseError:
        return False
    return _ip_text(u.host).lower() == src[0].lower() and (u.port or 5060) == src[1]


# --------------------------------------------------------------------------------- save --


class _Register:
    """One REGISTER: what it asks for, validated the way Kamailio's registrar validates it
    (errors raise _Reject), then applied to the location table by run()."""

    # fields: registrar.pxd

    def __init__(self, worker, msg, aor_uri: str | None):
        self.worker, self.msg, self.src = worker, msg, msg.src
        cfg = worker.cfg.registrar
        self.now = time.time()
        self.act = int(self.now)  # Kamailio's act_time: whole seconds
        if msg.to_uri is None:
            raise _Reject(R_TO_MISS)
        if msg.call_id is None:
            raise _Reject(R_CID_MISS)
        if msg.cseq_num is None:
            raise _Reject(R_CS_MISS)
        try:
            if aor_uri:
                self.aor = aor_of(aor_uri, cfg.use_domain, cfg.case_sensitive)
            else:  # the To URI's user and host from the parsed offsets, no URI object
                user, host = msg.addr_user_host(True)
                self.aor = _aor_of_parts(user, host, cfg.use_domain, cfg.case_sensitive)
        except SipParseError:
            raise _Reject(R_AOR_PARSE) from None
        if not self.aor:
            raise _Reject(R_TO_USER)
        self.callid = msg.call_id.strip()
        if len(self.callid) > CALLID_MAX:
            raise _Reject(R_CALLID_LEN)
        self.cseq = msg.cseq_num
        header_expires = msg.expires  # None absent, -1 malformed
        if header_expires == -1:
            raise _Reject(R_PARSE_EXP)
        try:
            contacts = msg.contacts
        except SipParseError:
            raise _Reject(R_PARSE_CONT) from None
        self.star = bool(msg.contact_star)
        self.ops: list[tuple] = []
        if self.star:
            values = msg.header_values("contact")
            if values and values[0].strip() == "*":
                if header_expires != 0:
                    raise _Reject(R_STAR_EXP)
                if len(values) > 1:
                    raise _Reject(R_STAR_CONT)
            else:
                raise _Reject(R_STAR_CONT)
            return
        self.path = self._path(msg)
        lsock = msg.lsock
        self.flow = lsock is not None and lsock.reliable
        if self.flow:
            # over TCP/TLS the binding is the connection (Kamailio's tcp alias, RFC 5626's
            # flow): lookup() sends calls back on it, wherever the Contact points
            self.nat_source = f"{_source_uri(msg.src)};transport={lsock.proto}"
        else:
            self.nat_source = _source_uri(msg.src) if _behind_nat(msg) else ""
        self._contacts = contacts
        self._header_expires = header_expires

    def build_ops(self) -> None:
        """The location table ops, one per Contact. A contact Kamailio would refuse raises
        _Reject (its reply lists the AOR's bindings, as Kamailio's does)."""
        msg, cfg = self.msg, self.worker.cfg.registrar
        ua = msg.user_agent
        ua = ua.strip() if ua else ""
        if not ua or len(ua) >= UA_MAX:
            ua = NO_UA
        socket = msg.lsock.name if msg.lsock is not None else ""
        self.ops = [self._op(c, cfg, self._header_expires, ua, socket) for c in self._contacts]

    def _path(self, msg) -> str:
        try:
            paths = msg.paths
        except SipParseError:
            raise _Reject(R_PARSE_PATH) from None
        return ",".join([p.raw.strip() for p in paths]) if paths else ""

    def _op(self, c, cfg, header_expires, ua: str, socket: str) -> tuple:
        uri = c.uri
        if len(uri) > CONTACT_MAX:
            raise _Reject(R_CONTACT_LEN)
        params = c.params
        expires = self._expires(params.get("expires"), header_expires, cfg)
        try:
            q = parse_q(params.get("q"))
        except ValueError:
            raise _Reject(R_INV_Q) from None
        instance = _unquote(params.get("+sip.instance"))
        reg_id = 0
        raw_reg_id = params.get("reg-id")
        if instance and raw_reg_id:
            if not raw_reg_id.isdigit() or not 0 < int(raw_reg_id) <= 0x7FFFFFFF:
                raise _Reject(R_INV_REGID)
            reg_id = int(raw_reg_id)
        received = self.nat_source
        if received and not self.flow and _contact_is_source(uri, self.src):
            received = ""
        expires_at = float(self.act + expires) if expires else 0.0
        return (
            uri,
            expires_at,
            q,
            self.callid,
            self.cseq,
            received,
            self.path,
            socket,
            ua,
            instance,
            reg_id,
            0,
        )

    def _expires(self, param: str | None, header_expires, cfg) -> int:
        """Kamailio's calc_contact_expires(): the contact's expires parameter, else the
        Expires header, else default_expires; then min/max bounds. 0 removes."""
        if param is None or param == "":
            e = header_expires if header_expires is not None else cfg.default_expires
        elif param.isascii() and param.isdigit() and int(param) <= 0xFFFFFFFF:
            e = int(param)
        else:
            e = cfg.default_expires
        if e == 0:
            return 0
        if cfg.min_expires and e < cfg.min_expires:
            if cfg.min_expires_mode:
                raise _Reject(R_LOW_EXP)
            e = cfg.min_expires
        if cfg.max_expires and e > cfg.max_expires:
            e = cfg.max_expires
        return e

    def run(self, store, reply: bool) -> int:
        worker, msg = self.worker, self.msg
        if self.star:
            status, bindings = store.remove_all(self.aor, self.callid, self.cseq, self.now)
            if status == ERR_CSEQ:
                return _rejected(worker, msg, R_INV_CSEQ, bindings, reply, self.act)
            return _accepted(worker, msg, [], reply, self.act, RC_REMOVED_ALL)
        if not self.ops:
            return _accepted(
                worker, msg, store.lookup(self.aor, self.now), reply, self.act, RC_QUERY
            )
        cfg = worker.cfg.registrar
        limit = cfg.max_contacts if cfg.max_contacts_policy == "overwrite" else -cfg.max_contacts
        ops = self.ops
        status, bindings = store.apply(self.aor, self.now, ops, limit)
        if status == ERR_CSEQ:
            ops = _without_retransmissions(ops, bindings, self.now)
            if ops is None:
                return _rejected(worker, msg, R_INV_CSEQ, bindings, reply, self.act)
            if ops:
                status, bindings = store.apply(self.aor, self.now, ops, limit)
            else:
                status = OK  # a retransmission: the bindings as they are
        if status == OK:
            return _accepted(worker, msg, bindings, reply, self.act, RC_SAVED)
        if status == ERR_CSEQ:
            return _rejected(worker, msg, R_INV_CSEQ, bindings, reply, self.act)
        if status == ERR_TOO_MANY:
            log.info("too many contacts for AOR <%s> (max %d)", self.aor, cfg.max_contacts)
            _rejected(worker, msg, R_TOO_MANY, bindings, reply, self.act)
            return RC_TOO_MANY
        if status == ERR_FULL:
            _log_full(self.aor, store.capacity)
            return _rejected(worker, msg, R_TABLE_FULL, bindings, reply, self.act)
        if status == ERR_TOO_LARGE:
            log.warning(
                "REGISTER for <%s> refused: a binding does not fit a location slot "
                "(%d bytes of strings at most)",
                self.aor,
                store.max_string_bytes,
            )
            return _rejected(worker, msg, R_UL_INS_C, bindings, reply, self.act)
        raise AssertionError(f"unknown usrloc status {status}")


_full = {"next_log": 0.0, "refused": 0}
FULL_LOG_EVERY_S = 10.0


def _log_full(aor: str, capacity: int) -> None:
    """The table-full line, at most once per FULL_LOG_EVERY_S per process (a full table
    refuses every new binding; one line per REGISTER would flood the log)."""
    _full["refused"] += 1
    now = time.monotonic()
    if now < _full["next_log"]:
        return
    log.error(
        "REGISTER for <%s> refused: the location table is full (%d bindings, [usrloc] "
        "capacity); %d refused since the last such line",
        aor,
        capacity,
        _full["refused"],
    )
    _full["next_log"] = now + FULL_LOG_EVERY_S
    _full["refused"] = 0


def save(worker, msg, table: str = TABLE, flags: int = 0, uri: str | None = None) -> int:
    """save("location"): apply the REGISTER to the location table and answer it.

    Returns Kamailio's codes: 1 saved, 3 all removed (Contact: *), 4 a query (no Contact),
    -1 error, -2 too many contacts. With flags 0x02 no reply is sent."""
    _check_table(table)
    if flags & ~SAVE_NO_REPLY:
        raise ValueError(f"save(): unsupported flags {flags:#x} (0x02 = no reply)")
    reply = not flags & SAVE_NO_REPLY
    store = _store(worker)
    try:
        req = _Register(worker, msg, uri)
    except _Reject as e:
        return _rejected(worker, msg, e.err, [], reply, 0)
    try:
        if not req.star:
            try:
                req.build_ops()
            except _Reject as e:
                return _rejected(worker, msg, e.err, store.lookup(req.aor, req.now), reply, req.act)
        return req.run(store, reply)
    except LockError:
        log.error("REGISTER for %s: the location table's lock is unusable", req.aor)
        return _rejected(worker, msg, R_UL_GET_R, [], reply, req.act)


def _without_retransmissions(ops: list, bindings: list, now: float):
    """After ERR_CSEQ: the ops minus those that repeat the stored binding's Call-ID and CSeq
    within CSEQ_DELAY (a retransmitted REGISTER, Kamailio's get_ucontact() -2). None when a
    contact really is out of order (lower CSeq, or the same CSeq too late)."""
    kept = []
    for op in ops:
        b = _stored_match(op, bindings)
        if b is not None and b.callid == op[3]:
            if op[4] < b.cseq:
                return None
            if op[4] == b.cseq:
                if b.last_modified + CSEQ_DELAY > now:
                    continue
                return None
        kept.append(op)
    return kept


def _stored_match(op: tuple, bindings: list):
    instance, reg_id = op[9], op[10]
    if instance and reg_id > 0:
        for b in bindings:
            if b.instance == instance and b.reg_id == reg_id:
                return b
    for b in bindings:
        if uri_equal(b.contact, op[0]):
            return b
    return None


# ---------------------------------------------------------------------------- replies --


def contact_header(bindings, act: int) -> str | None:
    """The 200 OK's Contact line for `bindings` (None when there are none). An AOR with more
    bindings than CONTACTS_REPLY_MAX bytes of Contact text lists its most recently
    refreshed ones only (the REGISTER being answered is among them): a small REGISTER must
    not draw a reply many times its size (an AOR with 1000 bindings answered a 442-byte
    query with 32 kB)."""
    if not bindings:
        return None
    if len(bindings) == 1:
        return "Contact: " + _contact_part(bindings[0], act)
    kept: list[tuple[int, float, str]] = []
    size = 0
    for b in sorted(bindings, key=lambda b: -b.last_modified):
        part = _contact_part(b, act)
        size += len(part) + 2
        if kept and size > CONTACTS_REPLY_MAX:
            break
        kept.append((-_q_key(b.q), b.last_modified, part))
    kept.sort(key=lambda k: k[:2])
    return "Contact: " + ", ".join(k[2] for k in kept)


def _contact_part(b, act: int) -> str:
    """One binding as the 200 OK lists it: <uri>;q=..;expires=..;+sip.instance=..;reg-id=.."""
    p = f"<{b.contact}>"
    if b.q >= 0:
        p += f";q={q_text(b.q)}"
    remaining = PERMANENT_EXPIRES if b.expires == 0 else max(0, int(b.expires) - act)
    p += f";expires={remaining}"
    if b.instance:
        p += f';+sip.instance="{b.instance}"'
    if b.reg_id > 0:
        p += f";reg-id={b.reg_id}"
    return p


def _accepted(worker, msg, bindings, reply: bool, act: int, rc: int) -> int:
    worker.stats.inc(ACCEPTED_REGS.base)
    if reply:
        extra = []
        line = contact_header(bindings, act)
        if line:
            extra.append(line)
        if msg.has_header("path") and "path" in (v.lower() for v in msg.header_values("supported")):
            extra.append("Path: " + ", ".join(v.strip() for v in msg.header_values("path")))
        send_reply(worker, msg, 200, "OK", extra)
    return rc


def _rejected(worker, msg, err: RegError, bindings, reply: bool, act: int) -> int:
    worker.stats.inc(REJECTED_REGS.base)
    if reply:
        extra = []
        line = contact_header(bindings, act or int(time.time()))
        if line:
            extra.append(line)
        if err is R_LOW_EXP:
            extra.append(f"Min-Expires: {worker.cfg.registrar.min_expires}")
        extra.append(f"P-Registrar-Error: {err.info}")
        send_reply(worker, msg, err.code, err.reason, extra)
    return RC_ERROR


# ------------------------------------------------------------------------------ lookup --


def _branch(b) -> dset.Branch:
    """The branch a binding makes: Kamailio prefers the first Path hop over the received
    address (the last hop before the phone handles its NAT)."""
    if b.path:
        hops = split_commas(b.path)
        return dset.Branch(b.contact, parse_name_addr(hops[0]).uri, b.path)
    return dset.Branch(b.contact, b.received or None, "")


def lookup(worker, msg, table: str = TABLE, uri: str | None = None) -> int:
    """lookup("location"): the Request-URI (or `uri`) names an AOR; its best binding's
    Contact becomes the Request-URI, verbatim; the destination is the binding's first Path
    hop (the Path goes in as Route headers) or its NAT source address. With append_branches
    (Kamailio's default) every further binding becomes a branch of the request's
    destination set (kampx/dset.py), which t_relay() forks to. Returns 1 found, -1 no
    binding, -3 the URI is not usable."""
    if table != TABLE:
        _check_table(table)
    cfg = worker.cfg.registrar
    try:
        u = msg.uri if uri is None else parse_uri(uri)
        aor = _aor_of_uri(u, cfg.use_domain, cfg.case_sensitive) if u is not None else None
    except SipParseError:
        aor = None
    if aor is None:
        return LOOKUP_ERROR
    bindings = _store(worker).lookup(aor, time.time())
    via_nodes = False
    if worker.cfg.db.shared and bindings:
        ruid = cluster.pinned_ruid(u)
        if ruid is None:
            via_nodes = True
        else:  # another node sent us one of our bindings: deliver it, and only it
            bindings = [b for b in bindings if b.ruid == ruid]
    if not bindings:
        return LOOKUP_NONE
    b = bindings[0]
    if via_nodes:
        return _lookup_via_nodes(worker, msg, uri, aor, bindings)
    if len(bindings) == 1 and not b.path and not msg.path_route:
        # the common case: one binding, no Path
        msg.set_ruri(b.contact)
        msg.dst = b.received or None
        dset.clear(msg)
        return LOOKUP_FOUND
    return _set_branches(worker, msg, aor, bindings, _branch)


def _set_branches(worker, msg, aor: str, bindings, make) -> int:
    cfg = worker.cfg.registrar
    branches = []
    # at most [tm] max_branches destinations, the best first (tm refuses more anyway)
    for b in bindings[: worker.cfg.tm.max_branches] if cfg.append_branches else bindings[:1]:
        try:
            branches.append(make(b))
        except (SipParseError, IndexError):
            log.warning("binding %s of <%s>: unusable Path '%s'; skipped", b.ruid, aor, b.path)
    if not branches:
        return LOOKUP_ERROR
    dset.set_branches(msg, branches)
    return LOOKUP_FOUND


def _lookup_via_nodes(worker, msg, uri: str | None, aor: str, bindings) -> int:
    """lookup() on a node of several: a binding another node registered goes through that
    node (kampx/cluster.py), ours as on a single node."""
    ruri = uri if uri is not None else msg.ruri

    def make(b):
        return cluster.node_branch(worker, ruri, b) or _branch(b)

    return _set_branches(worker, msg, aor, bindings, make)


def registered(worker, msg, table: str = TABLE, uri: str | None = None) -> int:
    """registered("location"): 1 when the AOR of the Request-URI (or `uri`) has a binding,
    else -1."""
    _check_table(table)
    target = uri if uri is not None else msg.ruri
    try:
        aor = _aor(worker, target) if target else None
    except SipParseError:
        return -1
    if aor is None:
        return -1
    return 1 if _store(worker).lookup(aor, time.time()) else -1


def unregister(worker, msg, table: str, uri: str, ruid: str | None = None) -> int:
    """unregister("location", uri[, ruid]): remove the AOR's bindings (or the one with that
    ruid). Returns 1 done, -1 the URI does not parse, -3 no binding with that ruid."""
    _check_table(table)
    try:
        aor = _aor(worker, uri)
    except SipParseError:
        return -1
    store = _store(worker)
    if not ruid:
        store.delete(aor)
        return 1
    for b in store.lookup(aor, time.time()):
        if b.ruid == ruid:
            store.delete(aor, b.contact)
            return 1
    return -3
