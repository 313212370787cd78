"""kampxctl's readable text output (the --json output is the data itself)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable


def when(epoch: float) -> str:
    """An epoch time as local time with its offset: what an operator compares with logs."""
    return datetime.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hms = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days} day{'s' if days != 1 else ''}, {hms}" if days else hms


def mib(nbytes: int) -> str:
    return f"{nbytes / 1048576:.1f} MiB"


def _table(header: tuple[str, ...], rows: Iterable[tuple], right: set[int]) -> list[str]:
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells):
        out = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "  ".join(out).rstrip()

    return [line(header)] + [line(r) for r in rows]


def address_rows(rows: list[dict], with_id: bool) -> list[str]:
    """kamctl's `address show` columns."""
    header = (
        ("id", "grp", "ip_addr", "mask", "port", "tag")
        if with_id
        else ("grp", "ip_addr", "mask", "port", "tag")
    )
    keys = header
    right = {0, 1, 3, 4} if with_id else {0, 2, 3}
    return _table(header, [tuple(r.get(k, "") for k in keys) for r in rows], right)


def dns_rows(entries: list[dict]) -> list[str]:
    """`dns show`: one line per record (a negative answer: one line saying so)."""
    rows = []
    for e in entries:
        records = e.get("records") or [f"({e.get('status', '?')})"]
        for i, rec in enumerate(records):
            first = i == 0
            rows.append(
                (
                    e.get("name", "") if first else "",
                    e.get("type", "") if first else "",
                    e.get("ttl", "") if first else "",
                    rec,
                )
            )
    if not rows:
        return ["(the DNS cache is empty)"]
    return _table(("name", "type", "ttl", "record"), rows, {2})


def dispatcher_rows(rows: list[dict]) -> list[str]:
    """kamctl's `dispatcher show` columns."""
    header = ("id", "setid", "destination", "flags", "priority", "attrs", "description")
    return _table(header, [tuple(r.get(k, "") for k in header) for r in rows], {0, 1, 3, 4})


def dispatcher_dump(destinations: list[dict]) -> list[str]:
    """The running sets, Kamailio's `dispatcher.list` state letters (AP, IP, DX...) with
    each destination's probe results."""
    rows = []
    for d in destinations:
        probes = d.get("probes", 0)
        last = d.get("last_code", 0) or "-"
        rows.append(
            (
                d.get("setid", ""),
                d.get("uri", ""),
                d.get("state", ""),
                d.get("priority", ""),
                d.get("attrs", ""),
                f"{probes - d.get('probes_failed', 0)}/{probes}",
                last,
            )
        )
    header = ("setid", "uri", "state", "priority", "attrs", "probes_ok", "last_code")
    return _table(header, rows, {0, 3, 5, 6})


def contact_lines(c: dict, now: float | None = None) -> list[str]:
    """One binding, kamctl `ul show`-style: the fields an operator checks first, then the rest
    when they are set."""
    now = time.time() if now is None else now
    exp = c.get("expires") or 0
    lines = [f"    Contact: {c.get('contact', '')}"]
    if exp:
        lines.append(f"        Expires: {max(0, int(exp - now))} s")
    else:
        lines.append("        Expires: permanent")
    q = c.get("q")
    lines.append(f"        Q: {'-' if q is None else f'{q:g}'}")
    for label, key in (
        ("Received", "received"),
        ("Path", "path"),
        ("Socket", "socket"),
        ("User-Agent", "user_agent"),
        ("Call-ID", "callid"),
        ("CSeq", "cseq"),
        ("Instance", "instance"),
        ("Reg-Id", "reg_id"),
        ("Flags", "flags"),
    ):
        value = c.get(key)
        if value not in (None, "", 0) or key in ("callid", "cseq"):
            lines.append(f"        {label}: {value}")
    if c.get("last_modified"):
        lines.append(f"        Last-Modified: {when(c['last_modified'])}")
    if c.get("ruid"):
        lines.append(f"        Ruid: {c['ruid']}")
    return lines


def aor_lines(aor: dict, now: float | None = None) -> list[str]:
    lines = [f"AOR: {aor.get('aor', '')}"]
    for c in aor.get("contacts", []):
        lines.extend(contact_lines(c, now))
    return lines


def stats_lines(groups: dict, only: str | None = None) -> list[str]:
    """Kamailio's `group:name = value`, sorted."""
    out = []
    for group in sorted(groups):
        for name in sorted(groups[group]):
            if only is None or name == only:
                out.append(f"{group}:{name} = {groups[group][name]}")
    return out


def ps_lines(processes: list[dict]) -> list[str]:
    rows = [
        (
            p.get("pid", ""),
            p.get("role", ""),
            f"{p.get('cpu_percent', 0.0):.1f}%",
            mib(int(p.get("rss_bytes", 0))),
        )
        for p in processes
    ]
    return _table(("PID", "ROLE", "CPU", "MEM"), rows, {0, 2, 3})


def tcp_lines(result: dict) -> list[str]:
    out = [
        f"tcp connections: {result.get('opened_connections', 0)}, "
        f"tls: {result.get('opened_tls_connections', 0)} "
        f"(at most {result.get('max_connections', '?')} in all, "
        f"{result.get('max_connections_per_ip', '?')} per IP)",
    ]
    rows = [(w, n) for w, n in sorted(result["by_worker"].items(), key=lambda x: int(x[0]))]
    if rows:
        out += _table(("WORKER", "CONNECTIONS"), rows, {0, 1})
    return out


def uptime_lines(result: dict) -> list[str]:
    return [
        f"now: {when(result['now'])}",
        f"up since: {when(result['up_since'])}",
        f"uptime: {int(result['uptime'])} s ({duration(result['uptime'])})",
    ]


# the route-script calls a trace line names by default: those that answer, relay, redirect
# or end the request (-v lists every call)
DECISIVE_CALLS = frozenset(
    {
        "lookup", "save", "unregister", "t_relay", "t_reply", "send_reply", "sl_send_reply",
        "sl_reply", "sl_reply_error", "auth_challenge", "www_challenge", "proxy_challenge",
        "auth_check", "www_authorize", "proxy_authorize", "allow_source_address",
        "ds_select_dst", "ds_select_domain", "ds_next_dst", "ds_next_domain", "t_next_dst",
        "rewritehost", "rewritehostport", "rewriteuri", "rewriteuser", "setdsturi",
    }
)  # fmt: skip
_DIRECTIONS = {"in": "IN ", "out": "OUT", "timer": "TMR"}


def trace_lines(record: dict, verbose: bool) -> list[str]:
    """One line per message (time, worker, direction, addresses, first line, Call-ID), then
    what the script did with a received one: the routes it went through and its decisive
    calls; with `verbose` every call (indented by nesting) and the whole message."""
    stamp = datetime.datetime.fromtimestamp(record.get("t", 0)).strftime("%H:%M:%S.%f")[:-3]
    direction = _DIRECTIONS.get(record.get("dir", ""), "?  ")
    where = f"{record.get('src', '')} -> {record.get('dst', '')}" if record.get("dst") else ""
    head = f"{stamp} w{record.get('worker', '?')} {direction} {where:47} {record.get('line', '')}"
    if record.get("call_id"):
        head += f"  [{record['call_id']}]"
    if record.get("problem"):
        head += f"  (unparsable: {record['problem']})"
    lines = [head]
    calls = record.get("calls") or []
    if verbose:
        lines.extend(f"      {c}" for c in calls)
        if record.get("data"):
            lines.extend("      | " + line for line in record["data"].rstrip("\r\n").split("\r\n"))
    elif calls:
        lines.append("      " + _decisions(calls))
    return lines


def _decisions(calls: list[str]) -> str:
    routes, acts = [], []
    for text in calls:
        text = text.strip()
        if text.startswith("route "):
            routes.append(text[6:])
        elif text.split("(", 1)[0] in DECISIVE_CALLS or text.endswith(("-> 'exit'", "-> 'drop'")):
            acts.append(text)
    return " > ".join(routes) + (": " if routes and acts else "") + ", ".join(acts)


# -- accounting ------------------------------------------------------------------------------


def utc_iso(epoch: float | None) -> str:
    """An epoch time as UTC ISO 8601 to the second (the accounting tables are UTC)."""
    if epoch is None:
        return "-"
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def _party(user: str, domain: str) -> str:
    if user and domain:
        return f"{user}@{domain}"
    return user or domain or "-"


def acc_cdr_rows(rows: list[dict]) -> list[str]:
    """`acc cdrs`: a line per call, newest first."""
    if not rows:
        return ["(no CDRs in that time)"]
    header = (
        "start_time", "duration", "direction", "caller", "callee", "code", "end_reason", "callid"
    )  # fmt: skip
    table = [
        (
            utc_iso(r.get("start_time")),
            f"{float(r.get('duration') or 0):.3f}",
            r.get("direction") or "-",
            _party(r.get("src_user", ""), r.get("src_domain", "")),
            r.get("dst_ouser") or r.get("dst_user") or "-",
            r.get("sip_code") or "-",
            r.get("end_reason") or "-",
            r.get("callid", ""),
        )
        for r in rows
    ]
    return _table(header, table, {1, 5})


def acc_record_rows(rows: list[dict]) -> list[str]:
    """`acc list`: a line per accounted transaction (or missed call), newest first."""
    if not rows:
        return ["(no records in that time)"]
    header = ("time", "method", "code", "reason", "direction", "caller", "callee", "callid")
    table = [
        (
            utc_iso(r.get("time")),
            r.get("method") or "-",
            r.get("sip_code") or "-",
            r.get("sip_reason") or "-",
            r.get("direction") or "-",
            _party(r.get("src_user", ""), r.get("src_domain", "")),
            r.get("dst_ouser") or r.get("dst_user") or "-",
            r.get("callid", ""),
        )
        for r in rows
    ]
    return _table(header, table, {2})


def acc_summary_lines(result: dict) -> list[str]:
    """`acc summary`: per direction and in all, calls, answered, ASR, ACD and minutes."""

    def row(name: str, f: dict) -> tuple:
        return (
            name,
            f.get("calls", 0),
            f.get("answered", 0),
            f"{f.get('asr', 0.0):.1f}%",
            f"{f.get('acd', 0.0):.1f}",
            f"{f.get('minutes', 0.0):.1f}",
        )

    since = result.get("since")
    rows = [row(d or "-", f) for d, f in sorted(result.get("directions", {}).items())]
    rows.append(row("total", result.get("total", {})))
    header = ("direction", "calls", "answered", "ASR", "ACD_s", "minutes")
    return [f"calls that started since {utc_iso(since)}"] + _table(header, rows, {1, 2, 3, 4, 5})


def dlg_rows(result: dict) -> list[str]:
    """`dlg list`: a line per tracked dialog, oldest first, then the counts."""
    dialogs = result.get("dialogs", [])
    counts = (
        f"{result.get('tracked', len(dialogs))} dialogs: {result.get('confirmed', 0)} "
        f"confirmed, {result.get('early', 0)} early"
    )
    if not dialogs:
        return ["(no tracked dialogs)", counts]
    header = ("state", "since", "duration", "direction", "caller", "callee", "callid")
    table = [
        (
            d.get("state", "?"),
            utc_iso(d.get("answered_time") or d.get("setup_time")),
            f"{float(d.get('duration') or 0):.1f}",
            d.get("direction") or "-",
            _party(d.get("src_user", ""), d.get("src_domain", "")),
            d.get("dst_ouser") or d.get("dst_user") or "-",
            d.get("callid", ""),
        )
        for d in dialogs
    ]
    return _table(header, table, {2}) + [counts]


def dlg_show_lines(dialogs: list[dict]) -> list[str]:
    """`dlg show`: every field of the dialog(s) of one Call-ID, one per line."""
    out: list[str] = []
    for d in dialogs:
        if out:
            out.append("")
        for name in sorted(d):
            value = d[name]
            if name in ("setup_time", "answered_time") and value:
                value = utc_iso(value)
            out.append(f"{name}: {value}")
    return out
