"""Where things go, and sending what has no transaction (Kamailio's core forwarding).

One Forwarder per worker knows the proxy's own addresses (is_myself: `uri == myself` in a
Kamailio config), picks the listen socket to send from, works out a relayed request's
destination (an address, or a name that tm has kampx.dns resolve: only there, when a route
relays a request to it, is a name ever resolved, never to check or answer one), and sends the
two things that go out without a transaction: an ACK for a 2xx (a new branch of ours on top)
and a reply that matches no transaction.
"""

from __future__ import annotations

from socket import AF_INET, AF_INET6
from typing import NamedTuple

from kampx._cparse import SipParseError, parse_uri, ruri_hop
from kampx._inet import is_ip
from kampx.stats.core import DROP_REPLIES, FWD_REPLIES, FWD_REQUESTS, SEND_ERRORS


def _is_dns_name(host: str) -> bool:
    """A name a DNS query can carry: ASCII letters, digits, '-', '_' and dots, labels of
    1-63 bytes, 253 at most (IDNs arrive in their xn-- form)."""
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not name.isascii():
        return False
    for label in name.split("."):
        if not 0 < len(label) <= 63 or not label.replace("-", "").replace("_", "").isalnum():
            return False
    return True


class Unresolved(NamedTuple):
    """A destination that is a host name: what RFC 3263 starts from (port 0: none given;
    transport None: no transport parameter; secure: a sips: URI)."""

    host: str
    port: int
    transport: str | None
    secure: bool


class StreamDest(NamedTuple):
    """A destination to reach over TCP or TLS (a `transport=tcp` or sips: URI); a plain
    (ip, port) tuple means UDP."""

    ip: str
    port: int
    proto: str


STREAM_TRANSPORTS = {"tcp": "tcp", "tls": "tls"}


def resolve_destination(host: str, port: int, transport=None, secure: bool = False):
    """The (ip, port) to send to for an IP host, an Unresolved for a name, None when
    there is none (not a port; a name no DNS query could carry)."""
    if host.startswith("["):
        host = host[1:-1]
    if not 0 <= port < 65536:
        return None  # not a port (0 = none given: 5060)
    if is_ip(host):
        if transport is None and not secure:
            return (host, port or 5060)
        proto = "tls" if secure else STREAM_TRANSPORTS.get(transport.lower(), "")
        if proto:
            return StreamDest(host, port or (5061 if proto == "tls" else 5060), proto)
        if transport.lower() != "udp":
            return None  # sctp, ws...: a transport kampx does not speak
        return (host, port or 5060)
    if not _is_dns_name(host):
        return None
    return Unresolved(host, port, transport, secure)


def reply_destination(msg, src) -> tuple:
    """Where a reply to request `msg` goes (RFC 3261 18.2.2, RFC 3581): the source IP, at the
    source port with rport or over a stream, else the sent-by port."""
    port = msg.reply_port  # 0: rport, or no Via
    if port == 0 or msg.lsock.reliable:
        return src  # a stream: the connection it came on (RFC 3261 18.2.2)
    return (src[0], port)


class Forwarder:
    """`sockets`: every ListenSocket (any may be needed to send); `realm`: a host name that
    also means this proxy; `dialogs`: kampx.dialog.Dialogs (stray 2xx of known dialogs)."""

    def __init__(self, sockets, realm: str, stats, dialogs, forward_stray_replies: bool):
        self.sockets = sockets
        self.realm = realm.lower()
        self.stats = stats
        self.dialogs = dialogs
        self.forward_stray_replies = forward_stray_replies
        self._stateless_seq = 0
        # host (lower case, IPv6 without brackets) -> the ports that mean this proxy there
        # (0: a URI without a port, 5060 or 5061 for TLS)
        self._myself: dict[str, set] = {}
        self._senders: dict[tuple, object] = {}  # (family, proto) -> the first such socket
        for ls in sockets:
            self._senders.setdefault((ls.family, ls.proto), ls)
            ports = self._myself.setdefault(ls.addr.host.lower(), set())
            ports.add(ls.port)
            if ls.port == (5061 if ls.proto == "tls" else 5060):
                ports.add(0)

    def is_myself(self, host: str, port: int) -> bool:
        ports = self._myself.get(host)  # an IP address as written: the common case, no copy
        if ports is not None and port in ports:
            return True
        h = host.lower()
        if h.startswith("["):
            h = h[1:-1]
        if h == self.realm:
            return True
        ports = self._myself.get(h)
        return ports is not None and port in ports

    def socket_for(self, dest: tuple):
        """The listen socket to send to `dest` from: the first of its address family and
        transport (a StreamDest names TCP or TLS; a plain tuple UDP). None when the proxy
        has no such socket (it listens on no TLS address, say)."""
        fam = AF_INET6 if ":" in dest[0] else AF_INET
        proto = dest[2] if len(dest) == 3 else "udp"
        return self._senders.get((fam, proto))

    @staticmethod
    def target_dest(target) -> tuple:
        """An RFC 3263 target (kampx.dns) as a destination: a StreamDest unless UDP."""
        if target.transport == "udp":
            return (target.ip, target.port)
        return StreamDest(target.ip, target.port, target.transport)

    def destination(self, msg, host=None, port=None):
        """Where a relayed request goes: `host:port` when given, else $du, else the
        Request-URI (its maddr first); None when that is not a sip/sips URI or unusable.
        An (ip, port), or an Unresolved when the host is a name."""
        if host is not None:
            return resolve_destination(host, int(port or 0))
        if not msg.dst:  # the common case: the Request-URI, read without a URI view
            hop = ruri_hop(msg)
            if hop is None:
                return None
            kind = hop[0]
            if kind != 1 and kind != 2:  # not sip/sips
                return None
            if not hop[3]:  # no parameters: no maddr, no transport
                return resolve_destination(hop[1], hop[2], None, kind == 2)
        try:
            # the Request-URI's view is built once per Request-URI (rewrites included)
            u = parse_uri(msg.dst) if msg.dst else msg.uri
        except SipParseError:
            return None
        if u.scheme not in ("sip", "sips"):
            return None
        if not u.params_raw:  # the common case: no maddr, no transport
            return resolve_destination(u.host, u.port, None, u.scheme == "sips")
        params = u.params
        return resolve_destination(
            params.get("maddr") or u.host, u.port, params.get("transport"), u.scheme == "sips"
        )

    def forward_stateless(self, msg, dest, branch_prefix: str) -> bool:
        """Forward without a transaction (an ACK for a 2xx): our Via with a fresh branch."""
        lsock = self.socket_for(dest)
        if lsock is None:
            self.stats.inc(SEND_ERRORS.base)
            return False
        self._stateless_seq += 1  # unique: the prefix names the worker and its start
        branch = f"{branch_prefix}a{self._stateless_seq:x}.0"
        if lsock.sendto(msg._serialize(via=lsock.via_prefix + branch.encode()), dest):
            self.stats.inc(FWD_REQUESTS.base)
            return True
        self.stats.inc(SEND_ERRORS.base)
        return False

    def stray_reply(self, msg) -> bool:
        """A reply with no transaction here: our Via removed and sent on to the next Via,
        as Kamailio's core does, but only for a 2xx to an INVITE of a dialog kampx
        established (the callee retransmits its 2xx until the ACK comes) unless
        [core] forward_stray_replies: anything else would let anyone bounce datagrams off
        the proxy to the address they write in the second Via."""
        stats = self.stats
        via = msg.top_via
        if via is None or not self.is_myself(via.host, via.port):
            stats.inc(DROP_REPLIES.base)
            return False
        if not self.forward_stray_replies and not (
            200 <= msg.status < 300
            and msg.cseq_method == "INVITE"
            and self.dialogs.known(msg.call_id, msg.from_tag)
        ):
            stats.inc(DROP_REPLIES.base)
            return False
        try:
            vias = msg.via
            msg.remove_top_via()
        except (SipParseError, ValueError):
            stats.inc(DROP_REPLIES.base)
            return False
        if len(vias) < 2:
            stats.inc(DROP_REPLIES.base)
            return False
        nxt = vias[1]
        host = nxt.received or nxt.host
        if host.startswith("["):
            host = host[1:-1]
        if not is_ip(host):
            stats.inc(DROP_REPLIES.base)  # never resolve a name to answer
            return False
        dest: tuple = (host, nxt.rport if nxt.rport else (nxt.port or 5060))
        proto = STREAM_TRANSPORTS.get(nxt.transport.lower())
        if proto is not None:
            dest = StreamDest(host, dest[1], proto)
        lsock = self.socket_for(dest)
        if lsock is not None and lsock.sendto(msg.serialize(), dest):
            stats.inc(FWD_REPLIES.base)
            return True
        stats.inc(SEND_ERRORS.base)
        return False
