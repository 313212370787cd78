"""kampxctl: kamctl for kampx.

Subscriber and address-table commands work on the database, whether or not the proxy runs;
the live commands ask the running proxy over its control socket (docs/control.md). Output is
readable text, or JSON with --json. Any failure: exit status non-zero and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from kampx import __version__
from kampx import config as kconfig
from kampx.auth.credentials import parse_user, subscriber_row
from kampx.cli import ctl_completion, ctl_format
from kampx.control.client import ControlClient, ControlError, NotRunning, RpcError, socket_path
from kampx.control.rpc_acc import QUERIES as ACC_QUERIES
from kampx.control.server import RpcFault
from kampx.db import DispatcherRow, StorageError, open_storage
from kampx.dispatcher.destinations import DispatcherError
from kampx.dispatcher.destinations import check_row as check_dispatcher_row
from kampx.permissions import PermissionsError, check_row

PROG = "kampxctl"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
RELOAD_HINT = f"** INFO: execute '{PROG} address reload' to synchronize cache and database"
DISPATCHER_RELOAD_HINT = (
    f"** INFO: execute '{PROG} dispatcher reload' to synchronize cache and database"
)
# a shared PostgreSQL database notifies every node, which reloads by itself (kampx/cluster.py)
SHARED_RELOAD_HINT = "** INFO: every node reloads its address table from the shared database"
SHARED_DISPATCHER_HINT = "** INFO: every node reloads its dispatcher sets from the shared database"


def _reload_hint(ctx) -> str:
    return SHARED_RELOAD_HINT if ctx.cfg.db.shared else RELOAD_HINT


def _dispatcher_reload_hint(ctx) -> str:
    return SHARED_DISPATCHER_HINT if ctx.cfg.db.shared else DISPATCHER_RELOAD_HINT


class Failure(Exception):
    """A command failed; the message is the one line for stderr."""


@dataclass
class Ctx:
    cfg: kconfig.Config
    json: bool
    out: TextIO

    def print(self, *lines: str) -> None:
        for line in lines:
            self.out.write(line + "\n")

    def emit(self, data: Any, *text: str) -> None:
        """The JSON document with --json, else the text lines."""
        if self.json:
            self.out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        else:
            self.print(*text)

    def storage(self):
        return open_storage(self.cfg)

    def client(self) -> ControlClient:
        return ControlClient(socket_path(self.cfg))


# -- subscribers (database) ----------------------------------------------------------------


def _user(ctx: Ctx, text: str) -> tuple[str, str]:
    try:
        return parse_user(text, ctx.cfg.auth.realm)
    except ValueError as e:
        raise Failure(str(e)) from None


def _row(username: str, domain: str, password: str):
    try:
        return subscriber_row(username, domain, password)
    except ValueError as e:
        raise Failure(str(e)) from None


def cmd_add(ctx: Ctx, args) -> None:
    if args.file is not None:
        if args.user is not None:
            raise Failure("add: give either USER PASSWORD or --file FILE, not both")
        subs = _read_user_file(ctx, args.file)
        with ctx.storage() as st:
            n = st.subscribers.add_many(subs)
        ctx.emit({"added": n}, f"{n} users added")
        return
    if args.user is None or args.password is None:
        raise Failure("add: USER and PASSWORD are required (or --file FILE)")
    username, domain = _user(ctx, args.user)
    with ctx.storage() as st:
        st.subscribers.add(_row(username, domain, args.password))
    ctx.emit({"added": 1, "user": f"{username}@{domain}"}, f"new user '{username}@{domain}' added")


def _read_user_file(ctx: Ctx, path: str) -> list:
    """One `user,password` per line; blank lines and # comments skipped; both fields are
    stripped of surrounding blanks; the password is everything after the first comma."""
    try:
        f = sys.stdin if path == "-" else open(path, encoding="utf-8", newline=None)
    except OSError as e:
        raise Failure(f"cannot read {path}: {e.strerror}") from None
    subs = []
    lineno = 0
    try:
        with f:
            for lineno, line in enumerate(f, start=1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                user, comma, password = line.partition(",")
                if not comma:
                    raise Failure(f"{path}:{lineno}: expected user,password")
                try:
                    username, domain = parse_user(user.strip(), ctx.cfg.auth.realm)
                    subs.append(subscriber_row(username, domain, password.strip()))
                except ValueError as e:
                    raise Failure(f"{path}:{lineno}: {e}") from None
    except UnicodeDecodeError:
        raise Failure(f"{path}:{lineno + 1}: not UTF-8 text") from None
    if not subs:
        raise Failure(f"{path}: no users in the file")
    return subs


def cmd_passwd(ctx: Ctx, args) -> None:
    username, domain = _user(ctx, args.user)
    with ctx.storage() as st:
        st.subscribers.set_password(_row(username, domain, args.password))
    ctx.emit({"updated": f"{username}@{domain}"}, "password change succeeded")


def cmd_rm(ctx: Ctx, args) -> None:
    username, domain = _user(ctx, args.user)
    with ctx.storage() as st:
        st.subscribers.remove(username, domain)
    ctx.emit({"removed": f"{username}@{domain}"}, f"user '{username}@{domain}' removed")


# -- permissions address table ---------------------------------------------------------------


def _reload(ctx: Ctx, method: str) -> dict:
    client = ctx.client()
    try:
        result = client.call(method)
    except RpcError as e:
        # rate-limited (Kamailio's reload_delta): wait as told, once, so that two quick
        # `address add --reload` in a script both succeed
        retry = e.data.get("retry_after") if isinstance(e.data, dict) else None
        if e.code != 503 or not isinstance(retry, (int, float)) or not 0 <= retry <= 10:
            raise
        time.sleep(retry)
        result = client.call(method)
    if not isinstance(result, dict):
        raise Failure(f"{method}: malformed result")
    return result


def _address_reload(ctx: Ctx) -> dict:
    return _reload(ctx, "permissions.addressReload")


def _reloaded_line(result: dict) -> str:
    return (
        f"address table reloaded: {result.get('rows', '?')} rows "
        f"(generation {result.get('generation', '?')})"
    )


def cmd_address_add(ctx: Ctx, args) -> None:
    try:
        e = check_row((args.grp, args.ipaddr, args.mask, args.port, args.tag), "address")
    except PermissionsError as err:
        raise Failure(str(err)) from None
    with ctx.storage() as st:
        row_id = st.addresses.add(e.grp, e.ip_addr, e.mask, e.port, e.tag)
    row = {"id": row_id, **e._asdict()}
    reloaded = _address_reload(ctx) if args.reload else None
    text = [f"address {e.ip_addr}/{e.mask} port {e.port} added to group {e.grp}"]
    text.append(_reloaded_line(reloaded) if reloaded else _reload_hint(ctx))
    ctx.emit({"added": row, "reloaded": reloaded}, *text)


def cmd_address_rm(ctx: Ctx, args) -> None:
    try:
        e = check_row((args.grp, args.ipaddr, None, 0, ""), "address")
    except PermissionsError as err:
        raise Failure(str(err)) from None
    with ctx.storage() as st:
        n = st.addresses.remove(e.grp, e.ip_addr)
    reloaded = _address_reload(ctx) if args.reload else None
    text = [f"{n} address entr{'y' if n == 1 else 'ies'} removed"]
    text.append(_reloaded_line(reloaded) if reloaded else _reload_hint(ctx))
    ctx.emit({"removed": n, "reloaded": reloaded}, *text)


def cmd_address_show(ctx: Ctx, args) -> None:
    with ctx.storage() as st:
        rows = [
            {
                "id": r.id,
                "grp": r.grp,
                "ip_addr": r.ip_addr,
                "mask": r.mask,
                "port": r.port,
                "tag": r.tag,
            }
            for r in st.addresses.list()
        ]
    ctx.emit({"rows": rows}, *ctl_format.address_rows(rows, with_id=True))


def _emit_dump(ctx: Ctx, method: str, key: str, lines) -> None:
    """A table the running proxy holds: its generation, then result[key] as `lines` puts
    it."""
    result = ctx.client().call(method)
    if not isinstance(result, dict) or not isinstance(result.get(key), list):
        raise Failure(f"{method}: malformed result")
    ctx.emit(result, f"generation {result.get('generation', '?')}", *lines(result[key]))


def cmd_address_dump(ctx: Ctx, args) -> None:
    _emit_dump(
        ctx,
        "permissions.addressDump",
        "rows",
        lambda rows: ctl_format.address_rows(rows, with_id=False),
    )


def cmd_address_reload(ctx: Ctx, args) -> None:
    result = _address_reload(ctx)
    ctx.emit(result, _reloaded_line(result))


# -- DNS cache (live) ------------------------------------------------------------------------


def cmd_dns_show(ctx: Ctx, args) -> None:
    result = ctx.client().call("dns.view")
    if not isinstance(result, dict) or not isinstance(result.get("entries"), list):
        raise Failure("dns.view: malformed result")
    ctx.emit(result, *ctl_format.dns_rows(result["entries"]))


def cmd_dns_clear(ctx: Ctx, args) -> None:
    result = ctx.client().call("dns.delete_all")
    if not isinstance(result, dict):
        raise Failure("dns.delete_all: malformed result")
    ctx.emit(result, f"DNS cache cleared: {result.get('removed', '?')} answers removed")


# -- dispatcher sets -------------------------------------------------------------------------


def _dispatcher_reload(ctx: Ctx) -> dict:
    return _reload(ctx, "dispatcher.reload")


def _dispatcher_reloaded_line(result: dict) -> str:
    return (
        f"dispatcher reloaded: {result.get('destinations', '?')} destinations "
        f"(generation {result.get('generation', '?')})"
    )


def _dispatcher_done(ctx: Ctx, args, data: dict, line: str) -> None:
    reloaded = _dispatcher_reload(ctx) if args.reload else None
    hint = _dispatcher_reloaded_line(reloaded) if reloaded else _dispatcher_reload_hint(ctx)
    ctx.emit({**data, "reloaded": reloaded}, line, hint)


def cmd_dispatcher_add(ctx: Ctx, args) -> None:
    row = DispatcherRow(
        args.setid, args.uri, args.flags, args.priority, args.attrs, args.description
    )
    try:
        check_dispatcher_row(row, "dispatcher")
    except DispatcherError as err:
        raise Failure(str(err)) from None
    with ctx.storage() as st:
        row_id = st.dispatcher.add(row)
    added = {**row._asdict(), "id": row_id}
    _dispatcher_done(ctx, args, {"added": added}, f"{args.uri} added to set {args.setid}")


def cmd_dispatcher_rm(ctx: Ctx, args) -> None:
    with ctx.storage() as st:
        st.dispatcher.remove(args.id)
    _dispatcher_done(ctx, args, {"removed": args.id}, f"dispatcher entry {args.id} removed")


def cmd_dispatcher_show(ctx: Ctx, args) -> None:
    with ctx.storage() as st:
        rows = [r._asdict() for r in st.dispatcher.list()]
    ctx.emit({"rows": rows}, *ctl_format.dispatcher_rows(rows))


def cmd_dispatcher_dump(ctx: Ctx, args) -> None:
    _emit_dump(ctx, "dispatcher.list", "destinations", ctl_format.dispatcher_dump)


def cmd_dispatcher_reload(ctx: Ctx, args) -> None:
    result = _dispatcher_reload(ctx)
    ctx.emit(result, _dispatcher_reloaded_line(result))


# -- usrloc (live) ---------------------------------------------------------------------------


def cmd_ul_show(ctx: Ctx, args) -> None:
    client = ctx.client()
    if args.aor is not None:
        aor = client.call("ul.lookup", {"aor": args.aor})
        if not isinstance(aor, dict):
            raise Failure("ul.lookup: malformed result")
        ctx.emit(aor, *ctl_format.aor_lines(aor))
        return
    # Page by page, printed as it comes: a million bindings never sit in one list.
    # Nothing is written before the first page arrived: "not running" leaves stdout empty.
    now = time.time()
    aors = contacts = 0
    for aor in client.dump_aors():
        if ctx.json:
            ctx.out.write(
                ('{"aors": [\n' if aors == 0 else ",\n") + json.dumps(aor, ensure_ascii=False)
            )
        else:
            ctx.print(*ctl_format.aor_lines(aor, now))
        aors += 1
        contacts += len(aor.get("contacts", []))
    if ctx.json:
        ctx.out.write("\n]}\n" if aors else '{"aors": []}\n')
    else:
        ctx.print(f"{aors} AORs, {contacts} contacts")


def cmd_ul_add(ctx: Ctx, args) -> None:
    if not args.contact.lower().startswith(("sip:", "sips:")):
        raise Failure(f"{args.contact} is not a valid SIP URI (sip:[user@]domain)")
    if args.expires < 0:
        raise Failure(f"expires {args.expires} is negative (0 = permanent)")
    if args.q is not None and not 0.0 <= args.q <= 1.0:
        raise Failure(f"q {args.q:g} is not between 0 and 1")
    params = {"aor": args.aor, "contact": args.contact, "expires": args.expires, "q": args.q}
    result = ctx.client().call("ul.add", params)
    lifetime = f"expires in {args.expires} s" if args.expires else "permanent"
    ctx.emit(result, f"contact {args.contact} added to {args.aor} ({lifetime})")


def cmd_ul_rm(ctx: Ctx, args) -> None:
    client = ctx.client()
    if args.contact is None:
        result = client.call("ul.rm", {"aor": args.aor})
    else:
        result = client.call("ul.rm_contact", {"aor": args.aor, "contact": args.contact})
    n = result.get("removed", 0) if isinstance(result, dict) else 0
    ctx.emit(result, f"{n} contact{'s' if n != 1 else ''} of {args.aor} removed")


# -- core (live) ------------------------------------------------------------------------------


def cmd_stats(ctx: Ctx, args) -> None:
    group, _, name = (args.group or "").partition(":")
    params = {"group": group} if group else None
    client = ctx.client()
    if args.reset:
        if name:
            params = {**(params or {}), "name": name}
        result = client.call("stats.reset_statistics", params)
        n = result.get("reset", 0) if isinstance(result, dict) else 0
        ctx.emit(result, f"{n} statistics reset")
        return
    result = client.call("stats.get_statistics", params)
    if not isinstance(result, dict):
        raise Failure("stats.get_statistics: malformed result")
    if name:
        value = result.get(group, {}).get(name)
        if value is None:
            raise Failure(f"no such statistic {group}:{name}")
        result = {group: {name: value}}
    ctx.emit(result, *ctl_format.stats_lines(result))


def cmd_ps(ctx: Ctx, args) -> None:
    result = ctx.client().call("core.psx")
    if not isinstance(result, list):
        raise Failure("core.psx: malformed result")
    ctx.emit(result, *ctl_format.ps_lines(result))


def cmd_uptime(ctx: Ctx, args) -> None:
    result = ctx.client().call("core.uptime")
    if not isinstance(result, dict) or not {"now", "up_since", "uptime"} <= result.keys():
        raise Failure("core.uptime: malformed result")
    ctx.emit(result, *ctl_format.uptime_lines(result))


def cmd_tcp(ctx: Ctx, args) -> None:
    result = ctx.client().call("core.tcp_info")
    if not isinstance(result, dict) or "by_worker" not in result:
        raise Failure("core.tcp_info: malformed result")
    ctx.emit(result, *ctl_format.tcp_lines(result))


def cmd_reload(ctx: Ctx, args) -> None:
    result = ctx.client().call("cfg.reload")
    script = result.get("script", "?") if isinstance(result, dict) else "?"
    ctx.emit(result, f"reloading: route script {script}")


def cmd_version(ctx: Ctx, args) -> None:
    try:
        server = ctx.client().call("core.version")
    except NotRunning as e:
        server, note = None, str(e)
    else:
        note = (
            f"kampx {server.get('version', '?')} running at {socket_path(ctx.cfg)}"
            if isinstance(server, dict)
            else "kampx: malformed core.version result"
        )
    ctx.emit({"kampxctl": __version__, "kampx": server}, f"{PROG} {__version__}", note)


# -- dialogs (the running proxy's tracked dialogs) -------------------------------------------


def cmd_dlg_list(ctx: Ctx, args) -> None:
    result = ctx.client().call("dlg.list")
    if not isinstance(result, dict) or not isinstance(result.get("dialogs"), list):
        raise Failure("dlg.list: malformed result")
    ctx.emit(result, *ctl_format.dlg_rows(result))


def cmd_dlg_show(ctx: Ctx, args) -> None:
    result = ctx.client().call("dlg.show", {"callid": args.callid})
    if not isinstance(result, dict) or not isinstance(result.get("dialogs"), list):
        raise Failure("dlg.show: malformed result")
    ctx.emit(result, *ctl_format.dlg_show_lines(result["dialogs"]))


def cmd_dlg_end(ctx: Ctx, args) -> None:
    result = ctx.client().call("dlg.end", {"callid": args.callid})
    if not isinstance(result, dict) or not isinstance(result.get("ended"), list):
        raise Failure("dlg.end: malformed result")
    lines = []
    for d in result["ended"]:
        to = ", ".join(d.get("bye_to") or []) or "nobody (the call was not answered)"
        lines.append(f"ended {d.get('callid')}: BYE sent to {to}")
    ctx.emit(result, *lines)


# -- accounting (the database, through the running proxy) -----------------------------------

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")


def parse_since(text: str) -> float:
    """--since: SECONDS, or a number with s, m, h, d or w (30m, 1h, 2d)."""
    m = _SPAN.fullmatch(text.strip().lower())
    seconds = float(m.group(1)) * _UNITS[m.group(2)] if m else 0.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a time span (SECONDS, or N with s, m, h, d or w: 30m, 1h, 2d)"
        )
    return seconds


def _acc_call(ctx: Ctx, method: str, params: dict) -> dict:
    """The method's result from the running proxy; when it is not running, the same query
    on the database here (the records are there whether or not the proxy runs)."""
    try:
        result = ctx.client().call(method, params)
    except NotRunning:
        with ctx.storage() as st:
            try:
                result = ACC_QUERIES[method](st, params)
            except RpcFault as e:
                raise Failure(e.message) from None
    if not isinstance(result, dict):
        raise Failure(f"{method}: malformed result")
    return result


def _acc_params(args, **extra) -> dict:
    params: dict[str, Any] = {"since_s": args.since}
    if getattr(args, "limit", None) is not None:
        params["limit"] = args.limit
    params.update({k: v for k, v in extra.items() if v is not None})
    return params


def cmd_acc_cdrs(ctx: Ctx, args) -> None:
    result = _acc_call(ctx, "acc.cdrs", _acc_params(args, direction=args.direction))
    if not isinstance(result.get("rows"), list):
        raise Failure("acc.cdrs: malformed result")
    ctx.emit(result, *ctl_format.acc_cdr_rows(result["rows"]))


def cmd_acc_list(ctx: Ctx, args) -> None:
    table = "missed_calls" if args.missed else "acc"
    result = _acc_call(ctx, "acc.list", _acc_params(args, table=table, callid=args.callid))
    if not isinstance(result.get("rows"), list):
        raise Failure("acc.list: malformed result")
    ctx.emit(result, *ctl_format.acc_record_rows(result["rows"]))


def cmd_acc_summary(ctx: Ctx, args) -> None:
    result = _acc_call(ctx, "acc.summary", _acc_params(args))
    if not isinstance(result.get("directions"), dict) or not isinstance(result.get("total"), dict):
        raise Failure("acc.summary: malformed result")
    ctx.emit(result, *ctl_format.acc_summary_lines(result))


# -- live trace ------------------------------------------------------------------------------


def cmd_trace(ctx: Ctx, args) -> None:
    """Stream what the running proxy receives and sends, with its script's decisions, until
    COUNT messages, DURATION seconds, or Ctrl-C."""
    client = ctx.client()
    params: dict[str, Any] = {
        "count": args.count,
        "duration": args.duration,
        "verbose": args.verbose,
    }
    for name in ("method", "user", "ip"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    started = client.call("trace.start", params)
    if not isinstance(started, dict) or "id" not in started:
        raise Failure("trace.start: malformed result")
    trace_id, after, reason = started["id"], 0, "stopped"
    sys.stderr.write(
        f"tracing: {args.count} messages or {args.duration:g} s at most; Ctrl-C ends it\n"
    )
    try:
        while True:
            got = client.call("trace.read", {"id": trace_id, "after": after, "wait": 2.0})
            for record in got["records"]:
                if ctx.json:  # one JSON object per line, as they come
                    ctx.out.write(json.dumps(record, ensure_ascii=False) + "\n")
                else:
                    ctx.print(*ctl_format.trace_lines(record, args.verbose))
            ctx.out.flush()
            after = got["next"]
            if got["done"]:
                reason = got.get("reason") or "ended"
                break
    except KeyboardInterrupt:
        try:
            client.call("trace.stop", {"id": trace_id})
        except ControlError:
            pass
    sys.stderr.write(f"trace ended ({reason}): {after} records\n")


def cmd_rpc(ctx: Ctx, args) -> None:
    params = None
    if args.params is not None:
        try:
            params = json.loads(args.params)
        except ValueError:
            raise Failure("rpc: PARAMS must be JSON (an object or an array)") from None
        if not isinstance(params, (dict, list)):
            raise Failure("rpc: PARAMS must be a JSON object or array")
    result = ctx.client().call(args.method, params)
    # a generic call has no text form of its own: JSON either way
    ctx.out.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


def cmd_completion(ctx: Ctx, args) -> None:
    ctx.out.write(ctl_completion.bash(build_parser()))


# -- the parser -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr, like every other failure."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _json_tail(p: argparse.ArgumentParser) -> None:
    # --json also at the end of any command; SUPPRESS keeps the global value when absent
    p.add_argument(
        "--json",
        dest="json_tail",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine-readable output",
    )


def _command(subs, name: str, handler, help: str, **kw) -> argparse.ArgumentParser:
    p = subs.add_parser(name, help=help, description=help, **kw)
    p.set_defaults(handler=handler)
    _json_tail(p)
    return p


def _group(subs, name: str, help: str):
    p = subs.add_parser(name, help=help, description=help)
    _json_tail(p)
    return p.add_subparsers(
        dest=f"{name}_command", metavar="COMMAND", required=True, parser_class=_Parser
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=(
            "Control kampx: subscribers, address table, dispatcher sets, registrations, "
            "statistics, accounting."
        ),
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="config file (default: $KAMPX_CONFIG, /etc/kampx/kampx.toml, built-in defaults)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subs = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    p = _command(subs, "add", cmd_add, "add a subscriber, or many from a file")
    p.add_argument("user", metavar="USER", nargs="?", help="user or user@domain")
    p.add_argument("password", metavar="PASSWORD", nargs="?")
    p.add_argument("--file", metavar="FILE", help="one user,password per line ('-': stdin)")
    p = _command(subs, "passwd", cmd_passwd, "change a subscriber's password")
    p.add_argument("user", metavar="USER")
    p.add_argument("password", metavar="PASSWORD")
    p = _command(subs, "rm", cmd_rm, "remove a subscriber")
    p.add_argument("user", metavar="USER")

    ul = _group(subs, "ul", "registered contacts of the running proxy")
    p = _command(ul, "show", cmd_ul_show, "show all AORs, or one")
    p.add_argument("aor", metavar="AOR", nargs="?")
    p = _command(ul, "add", cmd_ul_add, "add a static binding")
    p.add_argument("aor", metavar="AOR")
    p.add_argument("contact", metavar="CONTACT")
    p.add_argument(
        "expires",
        metavar="EXPIRES",
        nargs="?",
        type=int,
        default=0,
        help="seconds (0 = permanent, the default)",
    )
    p.add_argument("q", metavar="Q", nargs="?", type=float, default=None, help="0..1")
    p = _command(ul, "rm", cmd_ul_rm, "remove an AOR's bindings, or one contact")
    p.add_argument("aor", metavar="AOR")
    p.add_argument("contact", metavar="CONTACT", nargs="?")

    addr = _group(subs, "address", "the permissions address table")
    p = _command(addr, "add", cmd_address_add, "add an entry to the database")
    p.add_argument("grp", metavar="GRP", type=int)
    p.add_argument("ipaddr", metavar="IPADDR")
    p.add_argument(
        "mask",
        metavar="MASK",
        nargs="?",
        type=int,
        default=None,
        help="prefix length (default: the whole address)",
    )
    p.add_argument("port", metavar="PORT", nargs="?", type=int, default=0, help="0 = any (default)")
    p.add_argument("tag", metavar="TAG", nargs="?", default="")
    p.add_argument("--reload", action="store_true", help="then reload the running proxy")
    p = _command(addr, "rm", cmd_address_rm, "remove the entries of GRP with IPADDR")
    p.add_argument("grp", metavar="GRP", type=int)
    p.add_argument("ipaddr", metavar="IPADDR")
    p.add_argument("--reload", action="store_true", help="then reload the running proxy")
    _command(addr, "show", cmd_address_show, "the table in the database")
    _command(addr, "dump", cmd_address_dump, "the table the running proxy holds")
    _command(addr, "reload", cmd_address_reload, "load the database table into the proxy")

    dns = _group(subs, "dns", "the running proxy's DNS cache")
    _command(dns, "show", cmd_dns_show, "the answers it holds, with the seconds they have left")
    _command(dns, "clear", cmd_dns_clear, "forget them all (the next request asks again)")

    ds = _group(subs, "dispatcher", "the dispatcher sets (carrier gateways)")
    p = _command(ds, "add", cmd_dispatcher_add, "add a destination to the database")
    p.add_argument("setid", metavar="SETID", type=int)
    p.add_argument("uri", metavar="URI", help="sip:IP[:PORT] or sip:HOST[:PORT]")
    p.add_argument(
        "flags",
        metavar="FLAGS",
        nargs="?",
        type=int,
        default=0,
        help="1 inactive, 2 trying, 4 disabled, 8 probing (default 0)",
    )
    p.add_argument("priority", metavar="PRIORITY", nargs="?", type=int, default=0)
    p.add_argument("attrs", metavar="ATTRS", nargs="?", default="", help='e.g. "weight=50"')
    p.add_argument("description", metavar="DESCRIPTION", nargs="?", default="")
    p.add_argument("--reload", action="store_true", help="then reload the running proxy")
    p = _command(ds, "rm", cmd_dispatcher_rm, "remove the destination with id ID")
    p.add_argument("id", metavar="ID", type=int)
    p.add_argument("--reload", action="store_true", help="then reload the running proxy")
    _command(ds, "show", cmd_dispatcher_show, "the table in the database")
    _command(ds, "dump", cmd_dispatcher_dump, "the sets the running proxy holds, with state")
    _command(ds, "reload", cmd_dispatcher_reload, "load the database table into the proxy")

    dlg = _group(subs, "dlg", "the dialogs the running proxy tracks (dlg_manage)")
    _command(dlg, "list", cmd_dlg_list, "every tracked dialog: state, caller, callee, duration")
    p = _command(dlg, "show", cmd_dlg_show, "one dialog, whole (contacts, route sets, CSeqs)")
    p.add_argument("callid", metavar="CALLID")
    p = _command(dlg, "end", cmd_dlg_end, "end a call: BYE to both sides, its CDR written")
    p.add_argument("callid", metavar="CALLID")

    acc = _group(subs, "acc", "accounting: the acc, missed_calls and acc_cdrs tables")
    since_help = "this far back: SECONDS, or 30m, 1h, 2d (default 1h)"
    p = _command(acc, "cdrs", cmd_acc_cdrs, "the calls (CDRs) that started lately, newest first")
    p.add_argument("--since", metavar="SPAN", type=parse_since, default=3600, help=since_help)
    p.add_argument("--direction", choices=["inbound", "outbound", "local"])
    p.add_argument("--limit", metavar="N", type=int, default=None, help="at most N rows (100)")
    p = _command(acc, "list", cmd_acc_list, "the accounted transactions, newest first")
    p.add_argument("--missed", action="store_true", help="the missed_calls table instead")
    p.add_argument("--since", metavar="SPAN", type=parse_since, default=3600, help=since_help)
    p.add_argument("--callid", metavar="CALLID", help="only this Call-ID's")
    p.add_argument("--limit", metavar="N", type=int, default=None, help="at most N rows (100)")
    p = _command(acc, "summary", cmd_acc_summary, "calls, answered, ASR, ACD per direction")
    p.add_argument("--since", metavar="SPAN", type=parse_since, default=3600, help=since_help)

    p = _command(subs, "stats", cmd_stats, "statistics of the running proxy")
    p.add_argument(
        "group",
        metavar="GROUP",
        nargs="?",
        help="a group (core, tm, sl, usrloc, ...) or group:name",
    )
    p.add_argument("--reset", action="store_true", help="reset them instead")
    _command(subs, "ps", cmd_ps, "the proxy's processes")
    _command(subs, "uptime", cmd_uptime, "when the proxy started")
    _command(subs, "tcp", cmd_tcp, "TCP and TLS connections open now, per worker")
    _command(subs, "reload", cmd_reload, "reload the route script")
    _command(subs, "version", cmd_version, "versions of kampxctl and the running proxy")
    p = _command(
        subs,
        "trace",
        cmd_trace,
        "stream the messages the proxy receives and sends, with its script's decisions",
    )
    p.add_argument("--method", metavar="M", help="requests with this method, and their replies")
    p.add_argument("--user", metavar="U", help="user part of the Request-URI, From or To")
    p.add_argument("--ip", metavar="IP", help="messages from or to this address")
    p.add_argument("--count", metavar="N", type=int, default=100, help="stop after N (100)")
    p.add_argument(
        "--duration", metavar="S", type=float, default=60.0, help="stop after S seconds (60)"
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="every script call and the whole messages"
    )
    p = _command(subs, "rpc", cmd_rpc, "call a control method (system.listMethods lists them)")
    p.add_argument("method", metavar="METHOD")
    p.add_argument("params", metavar="PARAMS", nargs="?", help="JSON object or array")
    p = _command(subs, "completion", cmd_completion, "print the bash completion script")
    p.add_argument("shell", choices=["bash"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = kconfig.load(args.config)
        ctx = Ctx(cfg, bool(args.json or getattr(args, "json_tail", False)), sys.stdout)
        args.handler(ctx, args)
        return 0
    except NotRunning as e:
        sys.stderr.write(f"{e}\n")
        return EXIT_NOT_RUNNING
    except (Failure, kconfig.ConfigError, StorageError, ControlError) as e:
        sys.stderr.write(f"{e}\n")
        return EXIT_FAILURE
    except BrokenPipeError:  # `kampxctl ul show | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
