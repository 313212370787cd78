"""Stateful transactions (Kamailio's tm): RFC 3261 sections 16 and 17 for a UDP proxy.

A worker's TransactionManager holds the transactions that worker created. Retransmissions,
replies, CANCELs and ACKs that another worker received are handed over to the owner before
they get here (docs/architecture.md), so everything below is single-threaded plain Python.

Server side (upstream): 100 Trying for INVITE, retransmissions answered with the last reply,
non-2xx finals retransmitted (timer G) until the ACK (absorbed) or timer H; after a 2xx the
INVITE transaction lingers (RFC 6026 Accepted) so retransmitted INVITEs get the 2xx again.
Client side (downstream): retransmissions (timers A/E), fr_timer / fr_inv_timer (Kamailio's
names for B/F and C), hop-by-hop ACK for non-2xx finals, CANCEL on the same branch.
A branch to a name waits (state C_RESOLVING) while kampx.dns resolves it, without holding up
anything else; it then goes to the first RFC 3263 target, the others kept for t_next_dst().
Reply selection per RFC 3261 16.7: provisional (not 100) and 2xx relayed at once, the best
final otherwise (6xx, then the lowest class), 503 turned into 500 with its reason kept, a
failure route before a negative final goes upstream: the one t_on_failure() armed for the
transaction (re-armed each time, as in Kamailio), else the script's failure_route.
"""

from __future__ import annotations

import logging
import os

from kampx import dset
from kampx._clock import monotonic
from kampx._cparse import Message, SipParseError, build_reply, parse
from kampx.dialog import CONFIRMED, STATE
from kampx.dns.resolver import FAILED_RELAYS
from kampx.dns.rfc3263 import UNAVAILABLE
from kampx.forward import StreamDest, Unresolved, reply_destination
from kampx.methods import ACK, CANCEL, INVITE
from kampx.overload import overload_reply
from kampx.routing.flow import HandedOff, ScriptExit
from kampx.rr import branch_lines
from kampx.shared import TXN_BYTES, TXN_COUNT
from kampx.stats.core import DROP_REPLIES, FWD_REPLIES, FWD_REQUESTS, INTERNAL_ERRORS, SEND_ERRORS
from kampx.tm.keys import branch_owner, server_key
from kampx.tm.stats import (
    ACTIVE_TRANSACTIONS,
    BRANCHES_CAPPED,
    FINAL_REPLIES,
    RETRANS_ABSORBED,
    RPL_ABSORBED,
    RPL_GENERATED,
    RPL_RECEIVED,
    RPL_RELAYED,
    RPL_SENT,
    TIMEOUTS,
    TXN_MEMORY,
    TXN_REFUSED,
    UAC_TRANSACTIONS,
    UAS_TRANSACTIONS,
)
from kampx.tm.timers import Timer, TimerHeap
from kampx.transport.stream import MTU_SWITCHED

log = logging.getLogger("kampx.tm")

TRYING_REASON = "trying -- your call is important to us"  # Kamailio's auto_inv_100_reason
# what a transaction costs besides the bytes of its messages (objects, timers, index entry),
# charged against [tm] max_memory_mb
TXN_OVERHEAD = 2048
FORBIDDEN_REPLY = (403, "Forbidden", ())
LIMIT_LOG_EVERY_S = 10.0

# server transaction states
S_PROCEEDING, S_COMPLETED, S_ACCEPTED, S_CONFIRMED, S_TERMINATED = range(1, 6)
# client transaction states (C_RESOLVING: its name is being resolved, nothing sent yet)
C_RESOLVING, C_TRYING, C_PROCEEDING, C_COMPLETED, C_ACCEPTED, C_TERMINATED = range(6)
# what a request whose destination does not resolve gets
UNRESOLVABLE_REPLY = (500, "Unresolvable destination", ())
DNS_UNAVAILABLE_REPLY = (503, "Service Unavailable", ())
# a destination's transport (transport=tls, sips:) on which the proxy does not listen
NO_SOCKET_REPLY = (503, "No socket for the destination's transport", ())
# CANCEL progress of a branch
CANCEL_NONE, CANCEL_PENDING, CANCEL_SENT = range(3)


class ServerTxn:
    """The upstream side of a relayed request."""

    __slots__ = (
        "key",
        "method",
        "is_invite",
        "request",
        "lsock",
        "reply_dest",
        "state",
        "last_reply",
        "last_code",
        "to_tag",
        "branches",
        "best_code",
        "best_reply",
        "best_local_reason",
        "timer_g",
        "timer_end",
        "g_interval",
        "cancelled",
        "pending",
        "failure_done",
        "index_key",
        "label",
        "invite",
        "charged",
        "dialog",
        "dialog_state",
        "next_targets",
        "next_dst",
    )

    def __init__(self, key, msg: Message, lsock, reply_dest, label):
        self.key = key
        self.index_key = key
        self.method = msg.method
        self.is_invite = msg.method_id == INVITE
        self.request: Message | None = msg  # let go once the final reply is sent
        self.lsock = lsock
        self.reply_dest = reply_dest
        self.state = S_PROCEEDING
        self.last_reply: bytes | None = None
        self.last_code = 0
        self.to_tag: str | None = None
        self.branches: list[ClientTxn] = []
        self.best_code = 0
        self.best_reply = None  # the parsed reply chosen so far (None: local)
        self.best_local_reason = None
        self.timer_g: Timer | None = None
        self.timer_end: Timer | None = None
        self.g_interval = 0.0
        self.cancelled = False
        self.pending = 0  # branches without a final response
        self.failure_done = False
        self.label = label
        self.invite = None  # for a CANCEL's transaction: the INVITE it cancels
        self.charged = 0  # bytes counted against [tm] max_memory_mb
        self.dialog = None  # key of the dialog this request started (kampx.dialog)
        self.dialog_state = 0
        # the RFC 3263 targets after the one the last branch to a name went to
        # (t_next_dst() takes them in order), and the $du t_next_dst() last set
        self.next_targets = ()
        self.next_dst = None


class ClientTxn:
    """One downstream branch of a server transaction."""

    __slots__ = (
        "server",
        "branch",
        "dest",
        "lsock",
        "data",
        "is_invite",
        "state",
        "timer_retx",
        "timer_fr",
        "interval",
        "last_code",
        "cancel",
        "cancel_data",
        "cancel_timer",
        "cancel_interval",
        "ack_data",
        "sent_at",
        "udp_fallback",
    )

    def __init__(self, server, branch, dest, lsock, data, is_invite):
        self.server = server
        self.branch = branch
        self.dest = dest
        self.lsock = lsock
        self.data = data
        self.is_invite = is_invite
        self.state = C_TRYING
        self.timer_retx = None
        self.timer_fr = None
        self.interval = 0.0
        self.last_code = 0
        self.cancel = CANCEL_NONE
        self.cancel_data = None
        self.cancel_timer = None
        self.cancel_interval = 0.0
        self.ack_data = None
        self.sent_at = 0.0
        # (udp lsock, data): a request moved to TCP for its size, to send over UDP when
        # TCP is refused (RFC 3261 18.1.1)
        self.udp_fallback = None


def _class_rank(code: int) -> tuple:
    """Ordering for RFC 3261 16.7.6: any 6xx wins, else the lowest class; earlier is kept
    within a class (ties keep the first)."""
    if code >= 600:
        return (0, 0)
    return (1, code // 100)


class TransactionManager:
    """One worker's transactions. Its collaborators, all from the worker:

    - `forwarder` (kampx.forward.Forwarder): destinations, listen sockets, sending what
      has no transaction;
    - `resolver` (kampx.dns.resolver.Resolver): RFC 3263 for a destination that is a name;
    - `hooks` (kampx.routing.hooks.Hooks): the script's reply, failure and branch routes;
    - `dialogs` (kampx.dialog.Dialogs): the dialogs a relayed request starts, the check of
      in-dialog requests;
    - `handoff_to(owner, msg) -> bool`: passes a packet to the worker owning its
      transaction;
    - `txn_index` (shared KeyIndex: transaction key -> owner) and `load` (the proxy-wide
      transaction totals, shared CounterRows);
    - `report(where, exc)`: logs an unexpected error once.
    """

    def __init__(
        self,
        cfg,
        *,
        worker_id: int,
        stats,
        timers: TimerHeap,
        forwarder,
        resolver,
        hooks,
        dialogs,
        handoff_to,
        txn_index,
        load,
        tag_prefix: str,
        server_header: str,
        report,
    ):
        tm = cfg.tm
        self.t1 = tm.t1_ms / 1000.0
        self.t2 = tm.t2_ms / 1000.0
        self.t4 = tm.t4_ms / 1000.0
        self.fr = tm.fr_timer_ms / 1000.0
        self.fr_inv = tm.fr_inv_timer_ms / 1000.0
        self.fr_failover = tm.fr_failover_ms / 1000.0
        self.wait = min(5.0, 64 * self.t1)  # Kamailio's wt_timer: how long finished ones linger
        self.max_transactions = tm.max_transactions
        self.overload_reply = overload_reply(cfg.overload)
        self.max_bytes = tm.max_memory_mb << 20
        self.max_branches = tm.max_branches
        self.udp_mtu = cfg.tcp.udp_mtu
        self.worker_id = worker_id
        self.stats = stats
        self.timers = timers
        self.fwd = forwarder
        self.resolver = resolver
        self.hooks = hooks
        self.dialogs = dialogs
        self.acc = dialogs.acc  # kampx.acc.Accounting: finals of flagged requests
        self.acc_mask = self.acc.mask if self.acc is not None else 0
        self.handoff_to = handoff_to
        self.txn_index = txn_index
        self.load = load
        self.server_header = server_header
        self.report = report
        self._limit_logged = 0.0
        self.server: dict[bytes, ServerTxn] = {}
        self.client: dict[str, ClientTxn] = {}
        self._label = 0
        epoch = os.urandom(2).hex()
        self.branch_prefix = f"z9hG4bKkx{worker_id:02x}{epoch}."
        # Kamailio's tm tag shape: 32 hex, '-', 8 hex (worker id + transaction label)
        self.tag_prefix = f"{tag_prefix}-{worker_id:02x}"
        # index entries live as long as a transaction can: fr_inv + everything after it
        self.index_ttl = self.fr_inv + 64 * self.t1 + 10.0

    # ---------------------------------------------------------------- matching ------------

    def match_request(self, msg: Message) -> bool:
        """Match a request against the transactions before the script sees it (Kamailio's
        t_check_trans done by the core): a retransmission is answered from its transaction,
        an ACK to a non-2xx final absorbed, a packet of another worker's transaction handed
        to it. True when the script is to see the request."""
        mid = msg.method_id
        now = monotonic()
        if mid == CANCEL:
            key = msg.invite_key = server_key(msg, "INVITE")
            msg.txn_key = server_key(msg)
            if not msg.handed_off and self.server.get(key) is None:
                owner = self.txn_index.lookup(key, now)
                if owner >= 0 and owner != self.worker_id and self.handoff_to(owner, msg):
                    return False
            own = self.server.get(msg.txn_key)
            if own is not None:  # a retransmitted CANCEL
                self.retransmission(own, msg)
                return False
            return True
        key = msg.txn_key = server_key(msg)
        t: ServerTxn | None = self.server.get(key)
        if t is None:
            if not msg.handed_off:
                owner = self.txn_index.lookup(key, now)
                if owner >= 0 and owner != self.worker_id and self.handoff_to(owner, msg):
                    return False
            return True
        if mid == ACK and 200 <= t.last_code < 300:
            return True  # an ACK for a 2xx sharing the INVITE's branch: route it
        self.retransmission(t, msg)
        return False

    def match_reply(self, msg: Message) -> bool:
        """A reply: to its client transaction here, or handed to the worker its branch
        names. False when it belongs to no transaction (a stray reply)."""
        branch = msg._branch()
        c: ClientTxn | None = self.client.get(branch) if branch is not None else None
        if c is not None:
            try:
                self.on_reply(msg, c)
            except ScriptExit:
                pass
            except Exception as e:  # a reply must never take the worker down
                self.stats.inc(INTERNAL_ERRORS.base)
                self.report("reply", e)
            return True
        owner = branch_owner(branch)
        return (
            owner >= 0
            and owner != self.worker_id
            and not msg.handed_off
            and self.handoff_to(owner, msg)
        )

    # ---------------------------------------------------------------- t_relay -------------

    def t_relay(self, msg: Message, host=None, port=None) -> bool:
        """t_relay(): relay `msg` statefully to host:port, $du or its Request-URI, forking
        to every branch of its destination set; a CANCEL cancels the INVITE it matches, an
        ACK (to a 2xx) goes statelessly. An in-dialog request outside every dialog kampx
        established is refused (403 for sl_reply_error: kampx/dialog.py). False when
        nothing was relayed."""
        mid = msg.method_id
        if mid == CANCEL:
            t: ServerTxn | None = self.server.get(msg.invite_key or b"")  # match_request set it
            if t is None:
                return False
            return self.cancel(msg, t, msg.lsock, msg.src)
        if host is None and port is None and mid != ACK and msg.branches:
            return dset.fork(msg, self.t_relay)
        if msg.has_to_tag and not self.dialogs.admit(msg):
            msg.error_reply = FORBIDDEN_REPLY
            return False
        dest = self.fwd.destination(msg, host, port)
        if dest is None:
            return False
        if type(dest) is Unresolved:
            return self._relay_to_name(msg, dest)
        if mid == ACK:
            return self.fwd.forward_stateless(msg, dest, self.branch_prefix)
        lsock = self.fwd.socket_for(dest)
        if lsock is None:
            msg.error_reply = NO_SOCKET_REPLY
            return False
        if len(dest) == 3:  # a StreamDest: the socket says the transport now
            dest = (dest[0], dest[1])
        if not self.relay(msg, msg.lsock, msg.src, dest, lsock):
            return False
        t = msg.txn
        if t.next_dst is not None:
            # the targets after this one stay for the next t_next_dst() only when this
            # branch went where t_next_dst() pointed
            if msg.dst != t.next_dst:
                t.next_targets = ()
            t.next_dst = None
        return True

    def _relay_to_name(self, msg: Message, name: Unresolved) -> bool:
        """t_relay() to a host name: at once when the resolver has the answers cached,
        else the branch waits in C_RESOLVING while the worker goes on."""
        pending: list = []
        lookup = self.resolver.resolve(
            name.host,
            name.port,
            name.transport,
            name.secure,
            lambda found: self._resolved(pending[0], found) if pending else None,
        )
        if msg.method_id == ACK:  # a 2xx's ACK: stateless, to the first target
            if lookup is None:
                pending.append(_StatelessAck(msg))
                return True
            return bool(lookup.targets) and self._send_ack(msg, lookup.targets[0])
        if lookup is not None:
            if not lookup.targets:
                self.stats.inc(FAILED_RELAYS.base)
                msg.error_reply = (
                    DNS_UNAVAILABLE_REPLY if lookup.failure == UNAVAILABLE else UNRESOLVABLE_REPLY
                )
                return False
            first = lookup.targets[0]
            dest = (first.ip, first.port)
            lsock = self.fwd.socket_for(self.fwd.target_dest(first))
            if lsock is None:
                msg.error_reply = NO_SOCKET_REPLY
                return False
            if not self.relay(msg, msg.lsock, msg.src, dest, lsock):
                return False
            msg.txn.next_targets = lookup.targets[1:]
            msg.txn.next_dst = None
            return True
        # waiting for the nameserver: the branch is made now (the request as it is now,
        # from the first listen socket of the family its name will most likely resolve to)
        lsock = self.fwd.socket_for(("0.0.0.0", 0)) or self.fwd.sockets[0]
        if not self.relay(msg, msg.lsock, msg.src, None, lsock):
            return False
        pending.append(msg.txn.branches[-1])
        return True

    def _resolved(self, c, lookup) -> None:
        """The resolver's answer for branch `c` (C_RESOLVING), or for a stateless ACK."""
        if type(c) is _StatelessAck:
            if lookup.targets:
                self._send_ack(c.msg, lookup.targets[0])
            return
        if c.state != C_RESOLVING:
            return  # the transaction ended meanwhile
        t = c.server
        if t.state != S_PROCEEDING or t.cancelled or not lookup.targets:
            c.state = C_TERMINATED
            self._drop_branch(c)
            if t.cancelled:
                self._branch_final(t, 487, None, "Request Terminated")
                return
            code, reason, _ = UNRESOLVABLE_REPLY
            if lookup.failure == UNAVAILABLE:
                code, reason, _ = DNS_UNAVAILABLE_REPLY
            if t.state == S_PROCEEDING:
                self.stats.inc(FAILED_RELAYS.base)
            self._branch_final(t, code, None, reason)
            return
        first = lookup.targets[0]
        dest = (first.ip, first.port)
        lsock = self.fwd.socket_for(self.fwd.target_dest(first))
        if lsock is None:
            c.state = C_TERMINATED
            self._drop_branch(c)
            code, reason, _ = NO_SOCKET_REPLY
            self._branch_final(t, code, None, reason)
            return
        if lsock is not c.lsock:  # another address family: our Via names its socket
            c.data = c.data.replace(c.lsock.via_prefix, lsock.via_prefix, 1)
            c.lsock = lsock
        c.dest = dest
        t.next_targets = lookup.targets[1:]
        t.next_dst = None
        c.state = C_TRYING
        self._start_branch(c, self._first_reply_timeout(t))

    def _send_ack(self, msg: Message, target) -> bool:
        return self.fwd.forward_stateless(msg, self.fwd.target_dest(target), self.branch_prefix)

    def next_target(self, t: ServerTxn):
        """t_next_dst(): the $du of the next RFC 3263 target of the last name relayed to,
        None when there is none left."""
        if not t.next_targets:
            return None
        target = t.next_targets[0]
        t.next_targets = t.next_targets[1:]
        host = f"[{target.ip}]" if ":" in target.ip else target.ip
        uri = f"sip:{host}:{target.port}"
        if target.transport != "udp":
            uri += f";transport={target.transport}"
        t.next_dst = uri
        return uri

    # ---------------------------------------------------------------- server side ---------

    @property
    def active(self) -> int:
        return len(self.server)

    def busy(self) -> int:
        """Transactions still waiting for a final reply (what a graceful stop waits for)."""
        return sum(1 for t in self.server.values() if t.state == S_PROCEEDING)

    def lookup(self, key: bytes):
        return self.server.get(key)

    def new_server(self, msg: Message, lsock, src):
        """Create the server transaction for `msg` and claim its key in the shared index.
        Returns the transaction, or None when it cannot be created: the proxy holds
        [tm] max_transactions already, or their messages fill [tm] max_memory_mb, or the
        index has no room (msg.error_reply is then 503 with Retry-After, for
        sl_reply_error()). Raises HandedOff when another worker owns the key (a
        retransmission that raced its original): the request has been passed to that worker
        and processing here ends."""
        key = msg.txn_key or server_key(msg)
        t: ServerTxn | None = self.server.get(key)
        if t is not None:
            return t
        owner = self.txn_index.claim(key, self.worker_id, monotonic(), self.index_ttl)
        if owner != self.worker_id:
            if owner >= 0 and not msg.handed_off and self.handoff_to(owner, msg):
                raise HandedOff()
            if owner == -2:
                return self._refuse(msg, "the transaction index is full")
            # the owner is gone (its entry outlived it), or the packet came to us from a
            # worker whose entry vanished: serve it here, without the index
        cost = len(msg.buf) + TXN_OVERHEAD
        why = self._charge(cost)
        if why is not None:
            if owner == self.worker_id:
                self.txn_index.release(key, owner)
            return self._refuse(msg, why)
        self._label += 1
        t = ServerTxn(key, msg, lsock, reply_destination(msg, src), self._label)
        t.charged = cost
        self.server[key] = t
        self.stats.inc(UAS_TRANSACTIONS.base)
        self.stats.inc(ACTIVE_TRANSACTIONS.base)
        self.stats.add(TXN_MEMORY.base, cost)
        if t.is_invite:
            self._send_local(t, 100, TRYING_REASON)
        msg.txn = t
        return t

    # -- the proxy-wide limits (shared totals; the supervisor takes back a dead worker's) --

    def _charge(self, cost):  # cost: int (C-typed in manager.pxd)
        """Count one more transaction of `cost` bytes in the proxy's totals; None when it
        fits, else why not (nothing counted)."""
        load = self.load
        if load.add_get(0, TXN_COUNT, 1) > self.max_transactions:
            load.add(0, TXN_COUNT, -1)
            return f"[tm] max_transactions ({self.max_transactions}) reached"
        if load.add_get(0, TXN_BYTES, cost) > self.max_bytes:
            load.add(0, TXN_BYTES, -cost)
            load.add(0, TXN_COUNT, -1)
            return f"[tm] max_memory_mb ({self.max_bytes >> 20}) reached"
        return None

    def _charge_bytes(self, t: ServerTxn, n) -> bool:  # n: int (manager.pxd)
        if self.load.add_get(0, TXN_BYTES, n) > self.max_bytes:
            self.load.add(0, TXN_BYTES, -n)
            return False
        t.charged += n
        self.stats.add(TXN_MEMORY.base, n)
        return True

    def _uncharge(self, t: ServerTxn) -> None:
        self.load.add(0, TXN_COUNT, -1)
        self.load.add(0, TXN_BYTES, -t.charged)
        self.stats.add(TXN_MEMORY.base, -t.charged)
        t.charged = 0

    def _refuse(self, msg: Message, why: str) -> None:
        """A request refused for want of room: 503 for sl_reply_error(), counted, logged
        at most every LIMIT_LOG_EVERY_S (a flood must not become a flood of log lines)."""
        self.stats.inc(TXN_REFUSED.base)
        msg.error_reply = self.overload_reply
        now = monotonic()
        if now >= self._limit_logged + LIMIT_LOG_EVERY_S:
            self._limit_logged = now
            log.warning("new transactions refused with 503: %s", why)
        return None

    def retransmission(self, t: ServerTxn, msg: Message) -> None:
        """A retransmitted request (or ACK) for server transaction t."""
        if msg.method_id == ACK:
            self._on_ack(t)
            return
        self.stats.inc(RETRANS_ABSORBED.base)
        if t.last_reply is not None:
            self._send_upstream(t, t.last_reply)

    def _on_ack(self, t: ServerTxn) -> None:
        if t.is_invite and t.state == S_COMPLETED:
            t.state = S_CONFIRMED
            if t.timer_g is not None:
                t.timer_g.cancel()
                t.timer_g = None
            self._end_after(t, self.t4)
        # an ACK to an ACK-less state (retransmitted ACK, ACK after 2xx) is absorbed

    def _send_upstream(self, t: ServerTxn, data: bytes) -> None:
        if not t.lsock.sendto(data, t.reply_dest):
            self.stats.inc(SEND_ERRORS.base)
        self.stats.inc(RPL_SENT.base)

    def _tag(self, t: ServerTxn) -> str:
        if t.to_tag is None:
            t.to_tag = f"{self.tag_prefix}{t.label & 0xFFFFFF:06x}"
        return t.to_tag

    def _send_local(self, t: ServerTxn, code, reason: str, extra=None, body=b"") -> None:
        """A reply generated here for server transaction t (100, t_reply, 408, 487)."""
        req = t.request
        if req is None:  # its final went out and let the request go: nothing more to send
            return
        headers = list(extra) if extra else []
        headers.append(self.server_header)
        data = build_reply(
            req,
            code,
            reason,
            to_tag=self._tag(t) if code > 100 else None,
            extra=headers,
            body=body,
        )
        self.stats.inc(RPL_GENERATED.base)
        self._reply(t, code, data, reason, t.to_tag)

    def reply(self, t: ServerTxn, code: int, reason: str, extra=None, body=b"") -> bool:
        """t_reply(): a stateful reply from the route script."""
        if t.state != S_PROCEEDING or (code < 200 and t.last_code >= 200):
            return False
        if code >= 200:
            for c in t.branches:
                self._stop_branch(c)
        self._send_local(t, code, reason, extra, body)
        return True

    def _reply(self, t: ServerTxn, code, data: bytes, reason: str = "", to_tag=None) -> None:
        """Send a reply upstream and move the server transaction on (`reason` and `to_tag`:
        the reply's, for the dialog and accounting records of a final)."""
        t.last_reply = data
        t.last_code = code
        if code >= 300 and t.dialog_state:
            self.dialogs.failed(t.dialog, t.dialog_state, code, reason)
            t.dialog_state = 0
        self._send_upstream(t, data)
        if code < 200:
            return
        req = t.request
        if req is not None and req.flags & self.acc_mask:
            self.acc.final(req, code, reason, to_tag)
        self.stats.inc(FINAL_REPLIES.base + min(code // 100, 6) - 1)
        if t.is_invite:
            if code < 300:
                t.state = S_ACCEPTED
                self._end_after(t, self.wait)
            else:
                t.state = S_COMPLETED
                if not t.lsock.reliable:  # timer G: retransmissions on UDP only
                    t.g_interval = self.t1
                    t.timer_g = self.timers.later(self.t1, self._timer_g, (t,))
                self._end_after(t, 64 * self.t1)
        else:
            t.state = S_COMPLETED
            self._end_after(t, self.wait)
        # the reply bytes are all a finished transaction needs: let the parse go
        t.request = None

    def _timer_g(self, t: ServerTxn) -> None:
        if t.state != S_COMPLETED:
            return
        self._send_upstream(t, t.last_reply or b"")
        t.g_interval = min(2 * t.g_interval, self.t2)
        t.timer_g = self.timers.later(t.g_interval, self._timer_g, (t,))

    def _end_after(self, t: ServerTxn, delay: float) -> None:
        if t.timer_end is not None:
            t.timer_end.cancel()
        t.timer_end = self.timers.later(delay, self._terminate, (t,))

    def _terminate(self, t: ServerTxn) -> None:
        if t.state == S_TERMINATED:
            return
        t.state = S_TERMINATED
        for timer in (t.timer_g, t.timer_end):
            if timer is not None:
                timer.cancel()
        for c in t.branches:
            self._drop_branch(c)
        t.branches = []
        if self.server.get(t.key) is t:
            del self.server[t.key]
            self.stats.add(ACTIVE_TRANSACTIONS.base, -1)
            self._uncharge(t)
            self.txn_index.release(t.index_key, self.worker_id)
        t.request = None
        t.invite = None

    # ---------------------------------------------------------------- relaying ------------

    def relay(self, msg: Message, lsock, src, dest, send_lsock) -> bool:
        """t_relay(): create (or reuse) the server transaction and send one branch to
        `dest` (ip, port) from `send_lsock` (dest None: a branch that waits for its name to
        resolve, sent by _resolved()). False when the request could not be relayed."""
        t: ServerTxn | None = msg.txn
        if t is None:
            t = self.new_server(msg, lsock, src)
            if t is None:
                return False
            started = self.dialogs.start(msg)
            if started is not None:
                t.dialog, t.dialog_state = started
                if t.dialog is None:  # the dialog index is full
                    code, reason, extra = self.overload_reply
                    self.reply(t, code, reason, extra)
                    return False
        if t.state != S_PROCEEDING:
            return False
        if len(t.branches) >= self.max_branches:
            self.stats.inc(BRANCHES_CAPPED.base)
            return False
        self._label += 1
        branch = f"{self.branch_prefix}{t.label:x}.{len(t.branches)}"
        if self.hooks.branch_route is not None:
            self.hooks.branch_route(msg)
        data = msg._serialize(
            via=send_lsock.via_prefix + branch.encode(), rr=branch_lines(msg, send_lsock)
        )
        fallback = None
        if self.udp_mtu and len(data) > self.udp_mtu and dest is not None:
            fallback, send_lsock, data = self._over_tcp(msg, branch, dest, send_lsock, data)
        if not self._charge_bytes(t, len(data)):
            self._refuse(msg, f"[tm] max_memory_mb ({self.max_bytes >> 20}) reached")
            return False
        c = ClientTxn(t, branch, dest, send_lsock, data, t.is_invite)
        c.udp_fallback = fallback
        t.branches.append(c)
        t.pending += 1
        self.client[branch] = c
        self.stats.inc(UAC_TRANSACTIONS.base)
        if dest is None:
            c.state = C_RESOLVING
            return True
        if msg.fr_timers is None and not msg.ds_next and not t.next_targets:
            self._start_branch(c, self.fr)  # the common case, without a call to find it
        else:
            self._start_branch(c, self._first_reply_timeout(t))
        return True

    def _over_tcp(self, msg: Message, branch: str, dest: tuple, lsock, data: bytes) -> tuple:
        """RFC 3261 18.1.1: a request larger than [tcp] udp_mtu that would go over UDP goes
        over TCP when the proxy has a TCP socket of that family. Returns (the UDP fallback
        or None, the socket, the data) to send with."""
        if lsock.reliable:
            return None, lsock, data
        tcp = self.fwd.socket_for(StreamDest(dest[0], dest[1], "tcp"))
        if tcp is None:
            return None, lsock, data
        self.stats.inc(MTU_SWITCHED.base)
        over_tcp = msg._serialize(via=tcp.via_prefix + branch.encode(), rr=branch_lines(msg, tcp))
        return (lsock, data), tcp, over_tcp

    def _start_branch(self, c: ClientTxn, fr: float) -> None:
        sent = self._send_branch(c)
        if c.lsock.reliable:
            if not sent:
                # no connection carries it and none can be made: the branch fails as soon
                # as the script's turn is over, not when its timer runs out
                c.timer_fr = self.timers.later(0.0, self._branch_unreachable, (c,))
                return
        else:  # timers A/E: retransmissions on UDP only (RFC 3261 17.1.1.2)
            c.interval = self.t1
            c.timer_retx = self.timers.later(self.t1, self._retransmit, (c,))
        c.timer_fr = self.timers.later(fr, self._branch_timeout, (c,))

    def _first_reply_timeout(self, t: ServerTxn) -> float:
        """fr_timer: [tm] fr_timer_ms or the transaction's t_set_fr(); shortened to
        [tm] fr_failover_ms when another destination waits after this branch."""
        fr = self.fr
        req = t.request
        if req is not None:
            if req.fr_timers is not None and req.fr_timers[1]:
                fr = req.fr_timers[1]
            if self.fr_failover and (t.next_targets or req.ds_next):
                fr = min(fr, self.fr_failover)
        return fr

    def _final_reply_timeout(self, t: ServerTxn) -> float:
        """fr_inv_timer (after a provisional): [tm] fr_inv_timer_ms or t_set_fr()'s."""
        req = t.request
        if req is not None and req.fr_timers is not None and req.fr_timers[0]:
            return req.fr_timers[0]
        return self.fr_inv

    def _send_branch(self, c: ClientTxn) -> bool:
        if c.lsock.sendto(c.data, c.dest):
            self.stats.inc(FWD_REQUESTS.base)
            return True
        self.stats.inc(SEND_ERRORS.base)
        return False

    def _retransmit(self, c: ClientTxn) -> None:
        """Timers A (INVITE: doubling) and E (non-INVITE: doubling up to T2)."""
        if c.state not in (C_TRYING, C_PROCEEDING):
            return
        if c.is_invite and c.state == C_PROCEEDING:
            return
        c.lsock.sendto(c.data, c.dest)
        c.interval = 2 * c.interval if c.is_invite else min(2 * c.interval, self.t2)
        if c.state == C_PROCEEDING:
            c.interval = self.t2
        c.timer_retx = self.timers.later(c.interval, self._retransmit, (c,))

    def _branch_timeout(self, c: ClientTxn) -> None:
        """fr_timer / fr_inv_timer fired: no final reply on this branch."""
        if c.state not in (C_TRYING, C_PROCEEDING):
            return
        if c.is_invite and c.state == C_PROCEEDING and c.cancel == CANCEL_NONE:
            self._send_cancel(c)  # RFC 3261 16.8: stop the ringing downstream
        self.stats.inc(TIMEOUTS.base)
        self._branch_failed(c, 408, "Request Timeout")

    def _branch_unreachable(self, c: ClientTxn) -> None:
        """The connection a branch needs could not be made (or the message not written)."""
        if c.state != C_TRYING:
            return
        if c.udp_fallback is not None:  # moved to TCP for its size: UDP after all
            self._stop_branch(c)
            c.lsock, c.data = c.udp_fallback
            c.udp_fallback = None
            self._start_branch(c, self._first_reply_timeout(c.server))
            return
        self._branch_failed(c, 480, "Temporarily Unavailable")

    def _branch_failed(self, c: ClientTxn, code: int, reason: str) -> None:
        self._stop_branch(c)
        c.state = C_TERMINATED
        t = c.server
        if t.cancelled:
            code, reason = 487, "Request Terminated"
        self._branch_final(t, code, None, reason)
        self._later_drop(c)

    def unreachable(self, lsock, dest: tuple) -> None:
        """A connection to `dest` over `lsock`'s transport failed before it carried
        anything (transport/stream.py): the branches that waited on it fail now."""
        for c in list(self.client.values()):
            if c.lsock is lsock and c.dest == dest and c.state == C_TRYING:
                self._branch_unreachable(c)

    def _stop_branch(self, c: ClientTxn) -> None:
        for timer in (c.timer_retx, c.timer_fr):
            if timer is not None:
                timer.cancel()
        c.timer_retx = c.timer_fr = None

    def _drop_branch(self, c: ClientTxn) -> None:
        self._stop_branch(c)
        if c.cancel_timer is not None:
            c.cancel_timer.cancel()
        if self.client.get(c.branch) is c:
            del self.client[c.branch]

    def _later_drop(self, c: ClientTxn) -> None:
        # keep the branch a while to absorb retransmitted finals (timers D/K)
        self.timers.later(self.wait, self._drop_branch, (c,))

    # ---------------------------------------------------------------- CANCEL --------------

    def cancel(self, cancel_msg: Message, invite_t: ServerTxn, lsock, src) -> bool:
        """Relay a CANCEL (RFC 3261 16.10): 200 to it, CANCEL on every pending branch."""
        ct = self.new_server(cancel_msg, lsock, src)
        if ct is None:
            return False
        ct.invite = invite_t
        self._send_local(ct, 200, "canceling")
        if invite_t.state != S_PROCEEDING:
            return True
        invite_t.cancelled = True
        for c in invite_t.branches:
            if c.state == C_PROCEEDING and c.cancel == CANCEL_NONE:
                self._send_cancel(c)
            elif c.state in (C_TRYING, C_RESOLVING) and c.cancel == CANCEL_NONE:
                c.cancel = CANCEL_PENDING  # RFC 3261 9.1: wait for a provisional
        return True

    def _send_cancel(self, c: ClientTxn) -> None:
        c.cancel = CANCEL_SENT
        c.cancel_data = _build_cancel(c.data)
        c.lsock.sendto(c.cancel_data, c.dest)
        self.stats.inc(FWD_REQUESTS.base)
        if c.lsock.reliable:
            return  # sent once on a stream
        c.cancel_interval = self.t1
        c.cancel_timer = self.timers.later(self.t1, self._retransmit_cancel, (c, 0.0))

    def _retransmit_cancel(self, c: ClientTxn, elapsed: float) -> None:
        if c.cancel != CANCEL_SENT or c.state not in (C_TRYING, C_PROCEEDING):
            return
        elapsed += c.cancel_interval
        if elapsed >= 64 * self.t1:
            return
        c.lsock.sendto(c.cancel_data, c.dest)
        c.cancel_interval = min(2 * c.cancel_interval, self.t2)
        c.cancel_timer = self.timers.later(c.cancel_interval, self._retransmit_cancel, (c, elapsed))

    # ---------------------------------------------------------------- replies -------------

    def on_reply(self, msg: Message, c: ClientTxn) -> None:
        """A reply for branch c (owner already checked)."""
        self.stats.inc(RPL_RECEIVED.base)
        code = msg.status
        if msg._cseq_method() == "CANCEL":
            if code >= 200 and c.cancel_timer is not None:
                c.cancel_timer.cancel()
                c.cancel_timer = None
            self.stats.inc(RPL_ABSORBED.base)
            return
        t = c.server
        if self.hooks.reply_route is not None and not self.hooks.reply_route(msg):
            self.stats.inc(DROP_REPLIES.base)
            return
        if c.state in (C_COMPLETED, C_ACCEPTED, C_TERMINATED):
            self._late_reply(c, msg, code)
            return
        if code < 200:
            if c.state == C_TRYING:
                c.state = C_PROCEEDING
                if c.is_invite:
                    if c.timer_retx is not None:
                        c.timer_retx.cancel()
                        c.timer_retx = None
                    if c.timer_fr is not None:
                        c.timer_fr.cancel()
                    req = t.request
                    fr_inv = (
                        self.fr_inv
                        if req is None or req.fr_timers is None
                        else self._final_reply_timeout(t)
                    )
                    c.timer_fr = self.timers.later(fr_inv, self._branch_timeout, (c,))
            if c.cancel == CANCEL_PENDING:
                self._send_cancel(c)
            if code == 100 or t.state != S_PROCEEDING or t.last_code >= 200:
                self.stats.inc(RPL_ABSORBED.base)
                return
            self._relay_reply(t, msg, code)
            return
        c.last_code = code
        self._stop_branch(c)
        if code < 300:
            c.state = C_ACCEPTED if c.is_invite else C_COMPLETED
            t.pending -= 1
            proceeding = t.state == S_PROCEEDING
            if t.is_invite and t.state in (S_PROCEEDING, S_ACCEPTED):
                # RFC 3261 16.7 step 10: a 2xx ends the other branches of a forked INVITE
                for other in t.branches:
                    if other is not c and other.cancel == CANCEL_NONE:
                        if other.state == C_PROCEEDING:
                            self._send_cancel(other)
                        elif other.state == C_TRYING:
                            other.cancel = CANCEL_PENDING
                # further 2xx of a forked INVITE are relayed as they come
                self._relay_reply(t, msg, code, stateless=t.state == S_ACCEPTED)
            elif t.state == S_PROCEEDING:
                self._relay_reply(t, msg, code)
            if not proceeding or t.state == S_PROCEEDING:
                self._later_drop(c)
            # else this reply was the transaction's final: it ends after the same wait and
            # drops its branches then (_terminate), so the branch needs no timer of its own
            return
        c.state = C_COMPLETED
        if c.is_invite:
            c.ack_data = _build_ack(c.data, msg)
            c.lsock.sendto(c.ack_data, c.dest)
        self._later_drop(c)
        self._branch_final(t, code, msg, None)

    def _late_reply(self, c: ClientTxn, msg: Message, code: int) -> None:
        """A reply on a branch that already had its final."""
        t = c.server
        if c.is_invite and code >= 300 and c.ack_data is not None:
            c.lsock.sendto(c.ack_data, c.dest)  # the final was retransmitted: ACK again
        elif c.is_invite and 200 <= code < 300 and t is not None and t.state != S_TERMINATED:
            self._relay_reply(t, msg, code, stateless=True)  # 2xx retransmissions go through
            return
        self.stats.inc(RPL_ABSORBED.base)

    def _relay_reply(self, t: ServerTxn, msg: Message, code, stateless: bool = False) -> None:
        try:
            msg._remove_top_via()
        except (ValueError, SipParseError):
            self.stats.inc(DROP_REPLIES.base)
            return
        if t.dialog is not None and t.dialog_state & STATE != CONFIRMED:
            # before it leaves: the caller's ACK (or PRACK) must find the dialog
            t.dialog_state = self.dialogs.on_reply(t.dialog, t.dialog_state, code, msg)
        data = msg._serialize()
        self.stats.inc(RPL_RELAYED.base)
        self.stats.inc(FWD_REPLIES.base)
        if stateless:
            self._send_upstream(t, data)
            return
        self._reply(t, code, data, msg._reason() or "", msg._to_tag())

    def _branch_final(self, t: ServerTxn, code: int, msg, local_reason) -> None:
        """A branch ended with a negative final (or timed out): keep the best, and when no
        branch is left pending run failure_route, then send the best upstream."""
        t.pending -= 1
        if t.state != S_PROCEEDING:
            return
        if t.best_code == 0 or _class_rank(code) < _class_rank(t.best_code):
            t.best_code = code
            t.best_reply = msg
            t.best_local_reason = local_reason
        if t.pending > 0:
            return
        request = t.request
        if request is not None:
            before = len(t.branches)
            armed = request.on_failure
            if armed is not None:
                request.on_failure = None  # armed once: the route re-arms it to be called again
                self.hooks.run_failure_route(armed, t, request)
            elif self.hooks.failure_route is not None and not t.failure_done:
                t.failure_done = True
                self.hooks.failure_route(t, request)
            if t.state != S_PROCEEDING or len(t.branches) > before:
                return  # the script replied or relayed to a new branch
        self._send_best(t)

    def _send_best(self, t: ServerTxn) -> None:
        code = t.best_code
        msg = t.best_reply
        if msg is None:
            self._send_local(t, code, t.best_local_reason or "Request Timeout")
            return
        if code == 503:
            # RFC 3261 16.7 step 6: a 503 is not passed upstream. Like Kamailio, answer with a
            # 500 of our own; its phrase is 503's standard one, whatever the callee wrote.
            self._send_local(t, 500, "Service Unavailable")
            return
        try:
            msg.remove_top_via()
        except (ValueError, SipParseError):
            self._send_local(t, 500, "Server Internal Error")
            return
        data = msg.serialize()
        self.stats.inc(RPL_RELAYED.base)
        self.stats.inc(FWD_REPLIES.base)
        self._reply(t, code, data, msg.reason or "", msg.to_tag)

    # ---------------------------------------------------------------- shutdown ------------

    def clear(self) -> None:
        """Drop every transaction (process exit): release their index entries."""
        for t in list(self.server.values()):
            self._terminate(t)


class _StatelessAck:
    """A 2xx's ACK waiting for its destination's name to resolve."""

    __slots__ = ("msg",)

    def __init__(self, msg):
        self.msg = msg


def _build_cancel(invite: bytes) -> bytes:
    """CANCEL for a request we sent (RFC 3261 9.1): same Request-URI, Call-ID, From, To,
    CSeq number and Route set; our Via alone (same branch)."""
    return _build_from_sent(invite, b"CANCEL", None)


def _build_ack(invite: bytes, reply) -> bytes:
    """ACK for a non-2xx final (RFC 3261 17.1.1.3): like the INVITE we sent, the To of the
    reply (with its tag), CSeq method ACK."""
    to_lines = reply.header_lines("to")
    return _build_from_sent(invite, b"ACK", to_lines[0] if to_lines else None)


def _build_from_sent(sent: bytes, method: bytes, to_line) -> bytes:
    msg = parse(sent)
    ruri = sent[sent.index(b" ") + 1 : sent.index(b"\r\n")]
    ruri = ruri[: ruri.rindex(b" ")]
    out = [method + b" " + ruri + b" SIP/2.0\r\n", msg.header_lines("via")[0]]
    for name in ("from", "call-id"):
        out.extend(msg.header_lines(name)[:1])
    out.append(to_line if to_line is not None else msg.header_lines("to")[0])
    cseq = msg.cseq_num
    assert cseq is not None  # a request kampx sent passed the parser's CSeq check
    out.append(b"CSeq: %d " % cseq + method + b"\r\n")
    out.extend(msg.header_lines("route"))
    out.append(b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    return b"".join(x if x.endswith(b"\n") else x + b"\r\n" for x in out)
