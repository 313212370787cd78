"""The TOML configuration: where it is found, its keys, their defaults and their checks.

Every key is optional (README, "Running it"). An unknown section or key, or a value of the
wrong kind, is a ConfigError with one line naming the file and the key: the proxy refuses to
start rather than run with a setting the operator did not mean.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import tomllib
from dataclasses import dataclass, field

DEFAULT_PATHS = ("/etc/kampx/kampx.toml",)
DATA_DIR = "kampx-data"
# the default /metrics port: not the Prometheus server's 9090 (nor 9091/9093, Pushgateway and
# Alertmanager), below the exporters' range 9100-9999 where every port is someone's
METRICS_PORT = 9071


class ConfigError(Exception):
    """A configuration problem, worded as the one line an operator reads."""


@dataclass(frozen=True)
class ListenAddr:
    proto: str
    host: str
    port: int

    @property
    def family(self) -> int:
        import socket

        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.proto}:{host}:{self.port}"


LISTEN_PROTOS = ("udp", "tcp", "tls")


def parse_listen(text: str) -> ListenAddr:
    """'udp:IP:PORT', 'tcp:IP:PORT', 'tls:IP:PORT' (IPv6 as udp:[::1]:5060). Only literal
    IPs: kampx never resolves a name to decide where to listen."""
    proto, sep, rest = text.partition(":")
    proto = proto.lower()
    if not sep or proto not in LISTEN_PROTOS:
        raise ValueError(f"'{text}' is not udp:IP:PORT, tcp:IP:PORT or tls:IP:PORT")
    if rest.startswith("["):
        host, sep, port = rest[1:].partition("]:")
    else:
        host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}' is not {proto}:IP:PORT")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"'{text}': '{host}' is not an IP address") from None
    return ListenAddr(proto, host, int(port))


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """'IP:PORT', 'IP', '[v6]:PORT' -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"'{text}': bad port")
    if not host:
        raise ValueError(f"'{text}': no host")
    return host, int(port) if port else default_port


def parse_ip_port(text: str, default_port: int) -> tuple[str, int]:
    """parse_hostport() for an address that must be an IP literal (a nameserver, the HEP
    collector: kampx never resolves a name to reach its own infrastructure)."""
    host, port = parse_hostport(text.strip(), default_port)
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        raise ValueError(f"'{text}' is not IP[:PORT]") from None
    return host, port


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class CoreConfig:
    listen: tuple = ("udp:127.0.0.1:5060",)
    children: int = field(default_factory=_cpu_count)
    log_level: str = "info"
    # bound on how long SIGTERM waits for in-flight transactions (the contract: exit < 5 s)
    shutdown_timeout_s: float = 3.0
    # a reply that matches no transaction is dropped; true forwards it to the next Via as
    # Kamailio's core does (which lets anyone bounce a datagram off the proxy). Late 2xx
    # retransmissions of a dialog kampx established are forwarded either way.
    forward_stray_replies: bool = False

    def listen_addrs(self) -> list[ListenAddr]:
        return [parse_listen(x) for x in self.listen]


@dataclass(frozen=True)
class TcpConfig:
    """TCP and TLS connections (Kamailio's tcp_* core parameters; docs/transports.md)."""

    # a connection with no message either way for this long is closed
    # (tcp_connection_lifetime)
    connection_lifetime_s: int = 120
    connect_timeout_s: int = 10  # an outgoing connect gives up (tcp_connect_timeout)
    max_connections: int = 2048  # open at once, in and out, the whole proxy
    max_connections_per_ip: int = 64  # from one source address at once
    max_message_bytes: int = 65535  # headers + body of one message (Kamailio's BUF_SIZE)
    # a message begun must be complete within this (a slow sender holds memory)
    message_timeout_s: int = 10
    max_send_queue_bytes: int = 1048576  # written but not yet taken by the peer
    # a read from one connection that brings this many messages (its worker is behind)
    # spreads their requests over the other workers; 0 = never (docs/transports.md)
    spread_backlog: int = 16
    # RFC 3261 18.1.1: a request larger than this that would go over UDP goes over TCP
    # (when the proxy listens on TCP), and over UDP after all when TCP is refused; 0 = off,
    # as Kamailio's udp_mtu (the RFC suggests 1300)
    udp_mtu: int = 0


@dataclass(frozen=True)
class TlsConfig:
    """The certificate of tls: listen addresses, and what clients must show."""

    certificate: str = ""  # PEM file; the chain may follow the certificate
    private_key: str = ""  # PEM file
    ca_list: str = ""  # PEM file of the CAs whose clients (and servers) are trusted
    verify_client: bool = False  # a client without a certificate from ca_list is refused
    verify_server: bool = False  # an outgoing connection checks the server's certificate
    min_version: str = "TLSv1.2"  # TLSv1.2 or TLSv1.3


@dataclass(frozen=True)
class DbConfig:
    # Kamailio's form: the path follows "sqlite://", so sqlite:///var/lib/x.db is absolute
    # and sqlite://kampx-data/kampx.db is relative to the current directory.
    # "postgresql://user:pass@host:port/db" shares the data between nodes (docs/scale-out.md).
    url: str = f"sqlite://{DATA_DIR}/kampx.db"
    # With a postgresql url: this node's own SQLite file (its replica of the subscriber table,
    # read by the workers without a network round trip, and its dialogs). "" = the default url.
    local: str = ""
    connect_timeout_s: int = 3  # PostgreSQL: a connection attempt gives up after this

    @property
    def shared(self) -> bool:
        """True when the url names a PostgreSQL server (several nodes, one service)."""
        return self.url.startswith(PG_SCHEMES)

    @property
    def display_url(self) -> str:
        """The url without its password, for messages and logs."""
        if not self.shared:
            return self.url
        import urllib.parse

        u = urllib.parse.urlsplit(self.url)
        if u.password is None:
            return self.url
        netloc = f"{u.username}:***@{u.hostname or ''}" + (f":{u.port}" if u.port else "")
        return urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


PG_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class AuthConfig:
    realm: str = "kampx.test"
    algorithms: tuple = ("MD5",)
    nonce_expires_s: int = 300


@dataclass(frozen=True)
class SecurityConfig:
    scanner_user_agents: tuple = ("friendly-scanner", "sipcli", "VaxSIPUserAgent")
    pike_enabled: bool = True
    pike_window_s: int = 2
    pike_max: int = 400
    pike_ban_s: int = 60
    auth_ban_failures: int = 10
    auth_ban_window_s: int = 60
    auth_ban_s: int = 600


@dataclass(frozen=True)
class RoutingConfig:
    script: str = "builtin:kamailio101"
    carrier_group: int = 200
    carrier: str = "sip:127.0.0.3:5060"
    # N > 0: the built-in script sends outbound calls to dispatcher set N instead of
    # `carrier` (kampx/dispatcher); 0 = not used
    carrier_set: int = 0


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = f"127.0.0.1:{METRICS_PORT}"
    instance: str = ""  # when set, every sample carries instance="..."


@dataclass(frozen=True)
class ControlConfig:
    socket: str = f"{DATA_DIR}/kampx.sock"


@dataclass(frozen=True)
class TmConfig:
    """RFC 3261 timers; fr_timer / fr_inv_timer as Kamailio's tm names them."""

    t1_ms: int = 500
    t2_ms: int = 4000
    t4_ms: int = 5000
    fr_timer_ms: int = 30000
    fr_inv_timer_ms: int = 120000
    # server transactions held by the whole proxy at once; past it new requests get 503
    max_transactions: int = 200000
    # bytes the transactions may hold (requests, relayed copies, replies); a UDP request is
    # at most 64 kB, so the budget, not the count, bounds memory under big bodies
    max_memory_mb: int = 1024
    # branches of one request (Kamailio's max_branches): bounds what one INVITE can fan out
    max_branches: int = 12
    # a branch that has another destination after it (the next of its name's RFC 3263
    # targets, or of its dispatcher set) waits this long for a first reply, instead of
    # fr_timer, before it counts as dead (408) and the failure route moves on; 0 = fr_timer
    fr_failover_ms: int = 3000


@dataclass(frozen=True)
class RegistrarConfig:
    """Kamailio's registrar/usrloc parameters of the same names (kampx/registrar.py)."""

    default_expires: int = 3600
    min_expires: int = 60
    max_expires: int = 3600  # 0 = no upper bound
    # 1: a contact asking for less than min_expires gets 423 Interval Too Brief (RFC 3261
    # 10.3 step 7); 0: Kamailio's default, the interval is raised to min_expires
    min_expires_mode: int = 1
    # bindings per AOR (0 = unlimited). 10 covers a desk phone, a softphone, a mobile app
    # and their stale NAT bindings; every binding is a branch of each call to the AOR
    max_contacts: int = 10
    # what a REGISTER that would exceed max_contacts gets: "reject" (Kamailio: 503 Too many
    # registered contacts) or "overwrite" (the AOR's least recently refreshed bindings go)
    max_contacts_policy: str = "reject"
    use_domain: bool = False  # AOR = To user (Kamailio's default) or user@domain
    case_sensitive: bool = False  # AOR user compared as written (default: case-insensitive)
    append_branches: bool = True  # lookup() forks to every binding, not only the best one


@dataclass(frozen=True)
class DialogConfig:
    """The dialogs kampx Record-Routed and saw established (kampx/dialog.py)."""

    # relay an in-dialog request only within such a dialog (false: Kamailio's stock
    # behaviour, any To-tagged request with our Route is relayed)
    enforce: bool = True
    lifetime_s: int = 43200  # Kamailio's default_timeout; in-dialog requests renew it
    linger_s: int = 32  # a dialog ended by BYE still admits requests this long
    # dialogs held at once (16-byte slots, 2-4 per dialog, touched only when used): room for
    # the calls in progress plus those whose BYE never came, kept for lifetime_s. Past it a
    # new call gets 503 (evicting a live call would make its BYE a forgery)
    capacity: int = 1000000
    # dialogs tracked with dlg_manage() at once (2 kB of shared memory each, touched only
    # when used): their details for `kampxctl dlg`, their CDRs and call metrics. Past it a
    # call still goes through, untracked (counted in dialog:tracked_full)
    tracked_capacity: int = 20000


@dataclass(frozen=True)
class AccConfig:
    """Accounting (kampx/acc.py): Kamailio's acc module flags, and where records go."""

    log_flag: int = 1  # a flagged transaction's 2xx final: a row in `acc`
    log_missed_flag: int = 2  # a flagged INVITE's negative final: a row in `missed_calls`
    failed_transaction_flag: int = 3  # a flagged transaction's negative final: `acc` too
    inbound_flag: int = 4  # the call came in from the carrier (direction "inbound")
    outbound_flag: int = 5  # the call goes out to the carrier ("outbound"; neither: "local")
    db: bool = True  # rows into the database's acc, missed_calls and acc_cdrs tables
    log: str = ""  # also each record as a line: "syslog", or a file path (JSON lines)
    cdr_on_failed: bool = True  # a tracked call that failed gets a CDR too (duration 0)


@dataclass(frozen=True)
class UsrlocConfig:
    capacity: int = 100000  # bindings; the table is sized once, at start


@dataclass(frozen=True)
class OverloadConfig:
    """Overload control (kampx/overload.py), on by default."""

    enabled: bool = True
    # a new INVITE or REGISTER read in a batch whose oldest datagram waited longer than this
    # in the socket is refused with 503: well under T1 (500 ms), so accepted requests are
    # answered before their senders retransmit
    queue_delay_ms: int = 100
    # the Retry-After of every 503 for want of capacity (this one and [tm]'s limits)
    retry_after_s: int = 5
    methods: tuple = ("INVITE", "REGISTER")  # what is refused; all else is always served


@dataclass(frozen=True)
class DnsConfig:
    """Resolving the names requests are relayed to (kampx/dns, docs/routing.md)."""

    # "IP" or "IP:PORT" each, asked in turn; empty: the nameservers of /etc/resolv.conf
    nameservers: tuple = ()
    # RFC 3263 NAPTR first when a URI gives neither port nor transport (Kamailio's
    # dns_try_naptr, off there by default: on here, as the RFC has it; the answer is cached)
    naptr: bool = True
    # how long a request waits for its name to resolve (every query of the lookup)
    timeout: float = 2.0
    cache_max_ttl: int = 3600  # seconds an answer is kept at most, whatever its TTL
    cache_size: int = 4096  # answers the shared cache holds (512 bytes each)
    # when no nameserver answers, an answer that expired at most this long ago is used
    # (RFC 8767 serve-stale: a DNS outage does not cut the carrier off); 0 = never
    serve_stale: int = 86400


@dataclass(frozen=True)
class HepConfig:
    """HEPv3 export of every SIP message to a Homer collector (kampx/hep.py)."""

    collector: str = ""  # "IP:PORT" (port default 9060); empty: off
    capture_id: int = 1  # Kamailio's hep_capture_id
    auth_key: str = ""  # sent in each packet when set (HEP's authentication key chunk)


@dataclass(frozen=True)
class DispatcherConfig:
    """Kamailio's dispatcher probing parameters (ds_ping_interval, ds_probing_threshold,
    ds_inactive_threshold, ds_probing_mode, ds_ping_reply_codes, ds_ping_from), kampx/dispatcher.
    Read by the prober at start: a change needs a restart."""

    ping_interval: int = 10  # seconds between two OPTIONS rounds; 0 = no probing
    # a probe with no accepted reply within this long failed (retransmitted per RFC 3261
    # timer E meanwhile); at most ping_interval
    ping_timeout_ms: int = 2000
    probing_threshold: int = 1  # consecutive failed probes that make a destination inactive
    inactive_threshold: int = 1  # consecutive good probes that make it active again
    probing_mode: int = 0  # 0: probe destinations flagged probing (8) or inactive; 1: all
    # replies that count as success: Kamailio's "class=2;code=403;code=404" (any 2xx, 403, 404)
    ping_reply_codes: str = "class=2"
    ping_from: str = "sip:dispatcher@localhost"


@dataclass(frozen=True)
class Config:
    core: CoreConfig = field(default_factory=CoreConfig)
    db: DbConfig = field(default_factory=DbConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    tm: TmConfig = field(default_factory=TmConfig)
    dialog: DialogConfig = field(default_factory=DialogConfig)
    acc: AccConfig = field(default_factory=AccConfig)
    registrar: RegistrarConfig = field(default_factory=RegistrarConfig)
    usrloc: UsrlocConfig = field(default_factory=UsrlocConfig)
    overload: OverloadConfig = field(default_factory=OverloadConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    hep: HepConfig = field(default_factory=HepConfig)
    dispatcher: DispatcherConfig = field(default_factory=DispatcherConfig)
    tcp: TcpConfig = field(default_factory=TcpConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    path: str | None = None  # the file it came from; None = embedded default

    @property
    def base_dir(self) -> str:
        """Relative paths in a config file are relative to the current directory, as the
        embedded default's ./kampx-data/ is."""
        return os.getcwd()

    def db_path(self) -> str:
        """The SQLite file of [db] url: sqlite:///abs/path, sqlite:////abs/path (SQLAlchemy's
        spelling) or sqlite://relative/path. With a postgresql url, the node's own file:
        [db] local, else the default url's."""
        url, key = self.db.url, "url"
        if self.db.shared:
            url, key = self.db.local or DbConfig.url, "local"
        if not url.startswith("sqlite://") or len(url) == len("sqlite://"):
            shown = DbConfig(url=url).display_url
            raise ConfigError(
                f"bad value for [db] {key}: unsupported database '{shown}' "
                "(sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB)"
            )
        path = url[len("sqlite://") :]
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        return path if os.path.isabs(path) else os.path.join(self.base_dir, path)


# -- validation --------------------------------------------------------------------------


def _check_value(section: str, key: str, default, value):
    where = f"[{section}] {key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"bad value for {where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"bad value for {where}: expected a non-negative integer, got {value!r}"
            )
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(
                f"bad value for {where}: expected a non-negative number, got {value!r}"
            )
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"bad value for {where}: expected a string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"bad value for {where}: expected a list of strings, got {value!r}")
        return tuple(value)
    raise AssertionError(where)  # pragma: no cover


def _semantic_checks(cfg: Config) -> None:
    try:
        addrs = cfg.core.listen_addrs()
    except ValueError as e:
        raise ConfigError(f"bad value for [core] listen: {e}") from None
    if not addrs:
        raise ConfigError("bad value for [core] listen: at least one address is needed")
    if cfg.core.children < 1:
        raise ConfigError("bad value for [core] children: must be at least 1")
    if cfg.core.children * len(addrs) > 200:
        raise ConfigError("bad value for [core] children: at most 200 workers in all")
    if len(addrs) > 63:  # a socket's index is 6 bits in a hand-off frame
        raise ConfigError("bad value for [core] listen: at most 63 addresses")
    _stream_checks(cfg, addrs)
    if cfg.core.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError(f"bad value for [core] log_level: '{cfg.core.log_level}'")
    for alg in cfg.auth.algorithms:
        if alg.upper() not in ("MD5", "SHA-256"):
            raise ConfigError(f"bad value for [auth] algorithms: '{alg}' (MD5, SHA-256)")
    if not cfg.auth.algorithms:
        raise ConfigError("bad value for [auth] algorithms: at least one algorithm is needed")
    if cfg.auth.nonce_expires_s < 1:
        raise ConfigError("bad value for [auth] nonce_expires_s: must be at least 1")
    _security_checks(cfg.security)
    if not cfg.routing.carrier.lower().startswith(("sip:", "sips:")):
        raise ConfigError(
            f"bad value for [routing] carrier: '{cfg.routing.carrier}' is not a sip: URI"
        )
    try:
        parse_hostport(cfg.metrics.listen, METRICS_PORT)
    except ValueError as e:
        raise ConfigError(f"bad value for [metrics] listen: {e}") from None
    r = cfg.registrar
    if r.min_expires and r.max_expires and r.min_expires > r.max_expires:
        raise ConfigError("bad value for [registrar] min_expires: larger than max_expires")
    if r.min_expires_mode not in (0, 1):
        raise ConfigError(
            "bad value for [registrar] min_expires_mode: 0 (raise to min_expires) or 1 (reply 423)"
        )
    if r.max_contacts_policy not in ("reject", "overwrite"):
        raise ConfigError(
            f"bad value for [registrar] max_contacts_policy: '{r.max_contacts_policy}' "
            "(reject, overwrite)"
        )
    if r.max_contacts > 0x7FFFFFFF:
        raise ConfigError("bad value for [registrar] max_contacts: too large")
    if cfg.usrloc.capacity < 1:
        raise ConfigError("bad value for [usrloc] capacity: must be at least 1")
    if cfg.tm.t1_ms < 1 or cfg.tm.t2_ms < cfg.tm.t1_ms:
        raise ConfigError("bad value for [tm] t1_ms/t2_ms: need 0 < t1 <= t2")
    for section, key in (
        ("tm", "max_transactions"),
        ("tm", "max_memory_mb"),
        ("tm", "max_branches"),
        ("dialog", "capacity"),
        ("dialog", "lifetime_s"),
    ):
        if getattr(getattr(cfg, section), key) < 1:
            raise ConfigError(f"bad value for [{section}] {key}: must be at least 1")
    _db_checks(cfg)
    _overload_checks(cfg.overload)
    _dns_checks(cfg.dns)
    if cfg.hep.collector:
        try:
            parse_ip_port(cfg.hep.collector, 9060)
        except ValueError as e:
            raise ConfigError(f"bad value for [hep] collector: {e}") from None
    if cfg.hep.capture_id > 0xFFFFFFFF:
        raise ConfigError("bad value for [hep] capture_id: at most 4294967295")
    _dispatcher_checks(cfg.dispatcher)
    _acc_checks(cfg.acc)


def _acc_checks(acc: AccConfig) -> None:
    flags: dict[int, str] = {}
    for key in (
        "log_flag",
        "log_missed_flag",
        "failed_transaction_flag",
        "inbound_flag",
        "outbound_flag",
    ):
        value = getattr(acc, key)
        if value > 31:
            raise ConfigError(f"bad value for [acc] {key}: a message flag is 0..31")
        if value in flags:
            raise ConfigError(f"bad value for [acc] {key}: flag {value} is also {flags[value]}")
        flags[value] = key


def _dns_checks(dns: DnsConfig) -> None:
    try:
        for entry in dns.nameservers:
            parse_ip_port(entry, 53)
    except ValueError as e:
        raise ConfigError(f"bad value for [dns] nameservers: {e}") from None
    if not 0.1 <= dns.timeout <= 60:
        raise ConfigError("bad value for [dns] timeout: 0.1 to 60 seconds")
    if dns.cache_size < 1:
        raise ConfigError("bad value for [dns] cache_size: must be at least 1")


def _dispatcher_checks(ds: DispatcherConfig) -> None:
    from kampx.dispatcher.probe import parse_reply_codes

    if ds.ping_interval and not 1 <= ds.ping_timeout_ms <= ds.ping_interval * 1000:
        raise ConfigError("bad value for [dispatcher] ping_timeout_ms: 1 .. ping_interval * 1000")
    for key in ("probing_threshold", "inactive_threshold"):
        if getattr(ds, key) < 1:
            raise ConfigError(f"bad value for [dispatcher] {key}: must be at least 1")
    if ds.probing_mode not in (0, 1):
        raise ConfigError(
            "bad value for [dispatcher] probing_mode: 0 (flagged and inactive destinations) "
            "or 1 (all)"
        )
    try:
        parse_reply_codes(ds.ping_reply_codes)
    except ValueError as e:
        raise ConfigError(f"bad value for [dispatcher] ping_reply_codes: {e}") from None
    if not ds.ping_from.lower().startswith(("sip:", "sips:")):
        raise ConfigError(
            f"bad value for [dispatcher] ping_from: '{ds.ping_from}' is not a sip: URI"
        )


def _overload_checks(ov: OverloadConfig) -> None:
    from kampx._cparse import METHOD_IDS

    if ov.queue_delay_ms < 1:
        raise ConfigError("bad value for [overload] queue_delay_ms: must be at least 1")
    for m in ov.methods:
        if m not in METHOD_IDS or m in ("ACK", "CANCEL"):
            raise ConfigError(
                f"bad value for [overload] methods: '{m}' (request methods that start "
                "transactions, e.g. INVITE, REGISTER, SUBSCRIBE, MESSAGE)"
            )


def _db_checks(cfg: Config) -> None:
    cfg.db_path()
    if not cfg.db.shared:
        return
    import urllib.parse

    try:
        u = urllib.parse.urlsplit(cfg.db.url)
        u.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise ConfigError(f"bad value for [db] url: {e}") from None
    if not u.path.strip("/"):
        raise ConfigError(
            f"bad value for [db] url: '{cfg.db.display_url}' names no database "
            "(postgresql://USER:PASSWORD@HOST:PORT/DB)"
        )
    if cfg.db.connect_timeout_s < 1:
        raise ConfigError("bad value for [db] connect_timeout_s: must be at least 1")


def _stream_checks(cfg: Config, addrs: list[ListenAddr]) -> None:
    tcp, tls = cfg.tcp, cfg.tls
    for key in (
        "connection_lifetime_s",
        "connect_timeout_s",
        "max_connections",
        "max_connections_per_ip",
        "message_timeout_s",
    ):
        if getattr(tcp, key) < 1:
            raise ConfigError(f"bad value for [tcp] {key}: must be at least 1")
    if not 1024 <= tcp.max_message_bytes <= 1 << 20:
        raise ConfigError("bad value for [tcp] max_message_bytes: 1024 to 1048576")
    if tls.min_version not in ("TLSv1.2", "TLSv1.3"):
        raise ConfigError(
            f"bad value for [tls] min_version: '{tls.min_version}' (TLSv1.2 or TLSv1.3)"
        )
    if any(a.proto == "tls" for a in addrs):
        for key in ("certificate", "private_key"):
            if not getattr(tls, key):
                raise ConfigError(f"[tls] {key} is needed to listen on tls: addresses")
    if tls.verify_client and not tls.ca_list:
        raise ConfigError("[tls] verify_client needs [tls] ca_list (the CAs to trust)")


def _security_checks(sec: SecurityConfig) -> None:
    import re

    from kampx.security.scanner import compile_patterns

    try:
        compile_patterns(sec.scanner_user_agents)
    except re.error as e:
        raise ConfigError(f"bad value for [security] scanner_user_agents: {e}") from None
    if sec.pike_enabled:
        for key in ("pike_window_s", "pike_max", "pike_ban_s"):
            if getattr(sec, key) < 1:
                raise ConfigError(
                    f"bad value for [security] {key}: must be at least 1 (or pike_enabled = false)"
                )
    if sec.auth_ban_failures:
        for key in ("auth_ban_window_s", "auth_ban_s"):
            if getattr(sec, key) < 1:
                raise ConfigError(
                    f"bad value for [security] {key}: must be at least 1 (or auth_ban_failures = 0)"
                )


def from_dict(data: dict, path: str | None = None) -> Config:
    sections = {}
    for f in dataclasses.fields(Config):
        if f.default_factory is dataclasses.MISSING:  # path, the one field that is no section
            continue
        sections[f.name] = f.default_factory()
    for name, table in data.items():
        if name not in sections:
            raise ConfigError(f"{path or 'config'}: unknown section [{name}]")
        if not isinstance(table, dict):
            raise ConfigError(f"{path or 'config'}: [{name}] must be a table")
        current = sections[name]
        known = {f.name: getattr(current, f.name) for f in dataclasses.fields(current)}
        changes = {}
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"{path or 'config'}: unknown key '{key}' in [{name}]")
            changes[key] = _check_value(name, key, known[key], value)
        sections[name] = dataclasses.replace(current, **changes)
    cfg = Config(**sections, path=path)
    _semantic_checks(cfg)
    return cfg


def find_config_path(explicit: str | None) -> str | None:
    """FILE, else $KAMPX_CONFIG, else /etc/kampx/kampx.toml when it exists, else None
    (the embedded default)."""
    if explicit:
        return explicit
    env = os.environ.get("KAMPX_CONFIG")
    if env:
        return env
    for p in DEFAULT_PATHS:
        if os.path.exists(p):
            return p
    return None


def load(explicit: str | None = None) -> Config:
    path = find_config_path(explicit)
    if path is None:
        return from_dict({})
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except PermissionError:
        raise ConfigError(f"config file {path}: permission denied") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    return from_dict(data, os.path.abspath(path))
