"""The tracked dialogs' control methods (Kamailio's dlg.list, dlg.list_ctx, dlg.end_dlg).

`dlg.end` ends a call from outside, as Kamailio's dlg.end_dlg does: a BYE to each side,
in the dialog as that side knows it (the caller's gets the callee's From and the caller's
route set, and the other way round), sent from the proxy's own socket so that a phone
behind NAT takes it, to the address each side's last message came from. Over UDP a BYE is
sent again after RETRANSMIT_S (UDP may lose it; a UA answers a repeated BYE like the
first); a side on TCP or TLS gets its BYE once, on its connection, written by the worker
that owns it. The 200s come back to the proxy and end there. The dialog's CDR is written
at once (end_reason "ended").
"""

from __future__ import annotations

import os
import socket
import threading
import time

from kampx import dialog as D
from kampx import stats as S
from kampx.control.params import NOT_FOUND
from kampx.control.server import RpcFault, check_params
from kampx.shared import HELPER_ROWS

STATE_NAMES = {D.PENDING: "pending", D.EARLY: "early", D.CONFIRMED: "confirmed"}
RETRANSMIT_S = (0.5, 1.5)  # after the first BYE: two more, then no more
# what `dlg list` shows of a dialog (the route sets and contacts: `dlg show`)
SUMMARY = (
    "callid",
    "from_tag",
    "to_tag",
    "direction",
    "src_user",
    "src_domain",
    "dst_ouser",
    "dst_user",
    "dst_domain",
)


class DialogRpc:
    def __init__(self, shared, cfg, sockets=()):
        self.shared = shared
        self.cfg = cfg
        self.sockets = list(sockets)
        if any(ls.reliable for ls in self.sockets):
            from kampx.transport.stream import RelaySender

            relay = RelaySender(shared)
            for ls in self.sockets:
                if ls.reliable:
                    ls.conns = relay  # a BYE on TCP/TLS goes through the connection's owner
        self._dialogs = None  # made on first use, in the ctl process (its journal, stats)
        self._lock = threading.Lock()

    def table(self) -> dict:
        return {"dlg.list": self.list_dialogs, "dlg.show": self.show, "dlg.end": self.end}

    @property
    def dialogs(self) -> D.Dialogs:
        if self._dialogs is None:
            stats = S.Stats(self.shared.counters, HELPER_ROWS["ctl"])
            self._dialogs = D.Dialogs.of(self.shared, self.cfg, stats)
        return self._dialogs

    def list_dialogs(self, params: dict) -> dict:
        """Every tracked dialog, oldest first: state, who calls whom, since when."""
        check_params(params, ())
        now = time.time()
        table = self.shared.dialog_table
        rows = [
            _view(state, expires, info, now, brief=True) for state, expires, info in table.entries()
        ]
        rows.sort(key=lambda r: r["setup_time"])
        tracked, early, confirmed, _ = table.counts()
        return {"dialogs": rows, "early": early, "confirmed": confirmed, "tracked": tracked}

    def show(self, params: dict) -> dict:
        """One tracked dialog, whole: params {callid}."""
        check_params(params, ("callid",), ("callid",))
        callid = str(params["callid"])
        found = self._find(callid)
        if not found:
            raise RpcFault(NOT_FOUND, f"no tracked dialog with Call-ID {callid}")
        return {"dialogs": [_view(s, e, info, time.time(), brief=False) for _, s, e, info in found]}

    def end(self, params: dict) -> dict:
        """End the tracked dialog of Call-ID `callid`: BYE both ways, its CDR written."""
        check_params(params, ("callid",), ("callid",))
        callid = str(params["callid"])
        found = self._find(callid)
        if not found:
            raise RpcFault(NOT_FOUND, f"no tracked dialog with Call-ID {callid}")
        ended = []
        with self._lock:
            dialogs = self.dialogs
            for k, state, _, _ in found:
                now = time.monotonic()
                dialogs.index.put(k, D.ENDED, now, now + dialogs.linger)  # the 200s, a late BYE
                dialogs.journal.write(D.OP_DELETE, k)
                info = dialogs.end_info(k, "ended")
                if info is None:
                    continue  # it ended meanwhile (a BYE, its timeout)
                sent = self._bye_both_ways(info) if state == D.CONFIRMED else []
                ended.append({"callid": callid, "from_tag": info.get("from_tag"), "bye_to": sent})
            dialogs.journal.flush()
        if not ended:
            raise RpcFault(NOT_FOUND, f"no tracked dialog with Call-ID {callid}")
        return {"ended": ended}

    def _find(self, callid: str) -> list:
        """(key, state, expiry, info) of the tracked dialogs of `callid`."""
        return [
            (D.key(callid, info.get("from_tag", "")), state, expires, info)
            for state, expires, info in self.shared.dialog_table.entries()
            if info.get("callid") == callid
        ]

    # -- the BYEs --

    def _bye_both_ways(self, info: dict) -> list[str]:
        if not self.sockets or info.get("partial"):
            return []
        byes = []  # (socket, BYE, destination)
        # each side gets the dialog as it knows it: its own contact and route set, the other
        # side as From, a CSeq above the other side's highest
        for side, other, from_key, to_key in (
            ("callee", "caller", "from", "to"),
            ("caller", "callee", "to", "from"),
        ):
            addr = info.get(f"{side}_addr")
            if not addr:
                continue
            dest = tuple(addr)
            index = info.get("socket", 0)
            if side == "callee":
                index = info.get("callee_socket", index)
            lsock = self._socket(index, dest)
            data = _bye(
                lsock,
                info.get(f"{side}_contact"),
                info.get(f"{side}_route") or [],
                info.get(from_key),
                info.get(to_key),
                info,
                int(info.get(f"{other}_cseq", 0)) + 1,
            )
            if data is not None:
                byes.append((lsock, data, dest))
        for lsock, data, dest in byes:
            lsock.sendto(data, dest)
        datagrams = [b for b in byes if not b[0].reliable]  # a stream carries it once
        if datagrams:
            threading.Thread(target=_resend, args=(datagrams,), daemon=True).start()
        return [f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for _, _, (h, p) in byes]

    def _socket(self, index: int, dest: tuple):
        """The socket the call used on `dest`'s side: the one it came in on (or the 2xx,
        for the callee) when that is of dest's address family, else the first UDP one of
        that family (a call that crossed from IPv4 to IPv6)."""
        family = socket.AF_INET6 if ":" in dest[0] else socket.AF_INET
        same = [ls for ls in self.sockets if ls.family == family]
        for ls in same:
            if ls.index == index:
                return ls
        same = [ls for ls in same if not ls.reliable] or same
        return same[0] if same else self.sockets[0]


def _resend(byes) -> None:
    started = time.monotonic()
    for at in RETRANSMIT_S:
        time.sleep(max(0.0, started + at - time.monotonic()))
        for lsock, data, dest in byes:
            lsock.sendto(data, dest)


def _bye(lsock, contact, route, from_hdr, to_hdr, info, cseq) -> bytes | None:
    """A BYE within the dialog as one side sees it (RFC 3261 12.2.1.1): its remote target
    as Request-URI, its route set, the other side as From."""
    if not contact or not from_hdr or not to_hdr:
        return None
    branch = "z9hG4bKkxdlg" + os.urandom(8).hex()
    lines = [
        f"BYE {contact} SIP/2.0",
        f"Via: SIP/2.0/{lsock.proto.upper()} {lsock.hostport};branch={branch};rport",
        *(f"Route: {r}" for r in route),
        "Max-Forwards: 70",
        f"From: {from_hdr}",
        f"To: {to_hdr}",
        f"Call-ID: {info['callid']}",
        f"CSeq: {cseq} BYE",
        'Reason: SIP;cause=200;text="ended by kampxctl dlg end"',
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def _view(state: int, expires: float, info: dict, now: float, brief: bool) -> dict:
    """A dialog as the control socket shows it."""
    answered = info.get("answered")
    out = {
        "state": STATE_NAMES.get(state, str(state)),
        "setup_time": info.get("setup"),
        "answered_time": answered,
        "duration": round(now - answered, 3) if answered else 0.0,
        "expires_in": max(0, round(expires - now)),
    }
    if brief:
        out.update({k: info.get(k, "") for k in SUMMARY})
    else:
        out.update({k: v for k, v in info.items() if k not in ("setup", "answered")})
    return out
