"""A dispatcher destination: one row of Kamailio's dispatcher table, checked and parsed once
(at load), and the ds flags that make up its state.

Flags are Kamailio's: 1 inactive, 2 trying, 4 disabled, 8 probing. A destination is usable
by ds_select_dst() unless it is inactive or disabled (trying still is: it failed fewer
probes than [dispatcher] probing_threshold). `state_text()` prints them as Kamailio's
`dispatcher.list` does: A/I/D/T, then P when probing, else X ("AP", "IP", "DX").
"""

from __future__ import annotations

import ipaddress
from typing import Any, NamedTuple

from kampx._cparse import SipParseError, parse_uri
from kampx.db.base import DispatcherRow
from kampx.forward import is_ip

INACTIVE, TRYING, DISABLED, PROBING = 1, 2, 4, 8
ALL_FLAGS = INACTIVE | TRYING | DISABLED | PROBING
UNUSABLE = INACTIVE | DISABLED
MAX_URI = 192  # Kamailio's dispatcher.destination is VARCHAR(192)
MAX_ATTRS = 128
MAX_DESCRIPTION = 64
DEFAULT_PORT = 5060


class DispatcherError(ValueError):
    """A bad dispatcher row or state, worded as one line naming it."""


class Destination(NamedTuple):
    """One usable row: the URI as written and what the algorithms and probes need of it."""

    setid: int
    uri: str
    flags: int  # the row's flags (the run-time state starts from them)
    priority: int
    attrs: str
    description: str
    id: int | None
    host: str  # as written in the URI, IPv6 without brackets
    port: int  # 0 when the URI has none
    weight: int  # attrs weight=N (0..100); 1 when absent

    @property
    def target(self) -> tuple[str, int]:
        """(host, port) to send to, port 5060 when the URI has none."""
        return self.host, self.port or DEFAULT_PORT


def parse_attrs(text: str) -> dict[str, str]:
    """Kamailio's attrs "weight=50;duid=gw1;maxload=0" as a dict (keys lower-cased)."""
    out = {}
    for part in text.split(";"):
        name, _, value = part.partition("=")
        if name.strip():
            out[name.strip().lower()] = value.strip()
    return out


def check_row(row: Any, where: str = "dispatcher row") -> Destination:
    """Validate one row (a DispatcherRow or a tuple of its fields) and parse it."""
    try:
        row = DispatcherRow(*row)
    except TypeError:
        raise DispatcherError(f"{where}: expected (setid, destination, ...)") from None
    if row.id is not None:
        where = f"dispatcher row id {row.id}"
    for name in ("setid", "flags", "priority"):
        v = getattr(row, name)
        if isinstance(v, bool) or not isinstance(v, int) or not -(2**31) <= v < 2**31:
            raise DispatcherError(f"{where}: {name} {v!r} is not a 32-bit integer")
    if row.setid < 0:
        raise DispatcherError(f"{where}: setid {row.setid} is negative")
    if row.flags & ~ALL_FLAGS or row.flags < 0:
        raise DispatcherError(
            f"{where}: flags {row.flags} (1 inactive, 2 trying, 4 disabled, 8 probing)"
        )
    uri, attrs, description = (str(x or "") for x in (row.destination, row.attrs, row.description))
    host, port = _target_of(uri, where)
    for name, value, limit in (
        ("attrs", attrs, MAX_ATTRS),
        ("description", description, MAX_DESCRIPTION),
    ):
        if len(value.encode()) > limit:
            raise DispatcherError(f"{where}: {name} longer than {limit} bytes")
    weight = parse_attrs(attrs).get("weight", "1")
    if not weight.isdigit() or int(weight) > 100:
        raise DispatcherError(f"{where}: weight={weight} is not 0..100")
    return Destination(
        row.setid, uri, row.flags, row.priority, attrs, description, row.id, host, port, int(weight)
    )


def _target_of(uri: str, where: str) -> tuple[str, int]:
    if not uri or len(uri.encode()) > MAX_URI:
        raise DispatcherError(f"{where}: destination must be a SIP URI of 1..{MAX_URI} bytes")
    try:
        u = parse_uri(uri)
    except SipParseError:
        u = None
    if u is None or u.scheme not in ("sip", "sips") or not u.host:
        raise DispatcherError(f"{where}: destination '{uri}' is not a sip: URI")
    host = u.host[1:-1] if u.host.startswith("[") else u.host
    return host.lower(), u.port


def addresses_of(host: str) -> list[str]:
    """The IPs a destination's host stands for: itself when an IP literal, [] for a name
    (ds_is_from_list() matches a name through the DNS cache, kampx/dispatcher/dispatch.py)."""
    return [ipaddress.ip_address(host).compressed] if is_ip(host) else []


def parse_state(text: str) -> int:
    """ds_mark_dst / dispatcher.set_state letters -> the flags that replace the state:
    a active, i inactive, t trying, d disabled, each optionally followed by p (probing)."""
    letters = text.strip().lower()
    base = {"a": 0, "i": INACTIVE, "t": TRYING, "d": DISABLED}
    if not letters or letters[0] not in base or letters[1:] not in ("", "p"):
        raise DispatcherError(f"state '{text}': a, i, t or d, optionally followed by p")
    return base[letters[0]] | (PROBING if letters.endswith("p") else 0)


def state_text(flags: int) -> str:
    """Kamailio's two-letter state: A(ctive)/I(nactive)/D(isabled)/T(rying), P(robing)/X."""
    if flags & DISABLED:
        first = "D"
    elif flags & INACTIVE:
        first = "I"
    elif flags & TRYING:
        first = "T"
    else:
        first = "A"
    return first + ("P" if flags & PROBING else "X")
