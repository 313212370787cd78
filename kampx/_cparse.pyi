"""Type stub for the compiled SIP parser (kampx/_cparse.pyx)."""

from typing import Any, Iterator, Optional, Sequence

CANONICAL: tuple
COMPACT: dict[str, int]
METHOD_NAMES: tuple[str, ...]
METHOD_IDS: dict[str, int]

class SipParseError(ValueError):
    """`reason`: Kamailio's wording (the 400's phrase); `code`: the kind, stable."""

    reason: str
    code: str

class BadFraming(SipParseError):
    """Not framed as SIP (start line, Via, empty): nothing can be answered."""

class TooLarge(SipParseError):
    """More headers or bytes than the parser takes."""

class BadHeader(SipParseError):
    """A header a proxy must read is broken."""

class BadUri(SipParseError):
    """A URI does not parse."""

class BadCredentials(SipParseError):
    """Authorization / Proxy-Authorization that do not parse."""

class URI:
    raw: str
    scheme: str
    user: Optional[str]
    password: Optional[str]
    host: str
    port: int
    params_raw: str
    headers: str
    def __init__(self, uri: str | bytes) -> None: ...
    @property
    def params(self) -> dict[str, Optional[str]]: ...
    @property
    def user_unescaped(self) -> Optional[str]: ...
    @property
    def hostport(self) -> str: ...

class NameAddr:
    raw: str
    display: str
    uri: str
    params_raw: str
    tag: Optional[str]
    brackets: bool
    @property
    def params(self) -> dict[str, Optional[str]]: ...
    @property
    def parsed_uri(self) -> URI: ...
    @property
    def expires(self) -> Optional[int]: ...
    @property
    def q(self) -> Optional[str]: ...

class Via:
    raw: str
    version: str
    transport: str
    host: str
    port: int
    params_raw: str
    branch: Optional[str]
    received: Optional[str]
    rport: Optional[int]
    maddr: Optional[str]
    @property
    def protocol(self) -> str: ...
    @property
    def sent_by(self) -> str: ...
    @property
    def params(self) -> dict[str, Optional[str]]: ...
    @property
    def ttl(self) -> Optional[int]: ...

class CSeq:
    number: int
    method: str
    def __init__(self, number: int, method: str) -> None: ...

class Message:
    buf: bytes
    is_request: bool
    method_id: int
    status: int
    edited: bool
    max_forwards_value: int
    contact_star: int
    method: str
    ruri: Optional[str]
    original_ruri: Optional[str]
    uri: Optional[URI]
    ruri_scheme_kind: int
    version: str
    reason: Optional[str]
    raw: bytes
    body: bytes
    content_length: Optional[int]
    call_id: Optional[str]
    cseq: Optional[CSeq]
    cseq_num: Optional[int]
    cseq_method: Optional[str]
    max_forwards: Optional[int]
    from_: Optional[NameAddr]
    to: Optional[NameAddr]
    from_tag: Optional[str]
    to_tag: Optional[str]
    has_to_tag: bool
    from_uri: Optional[str]
    to_uri: Optional[str]
    top_via: Optional[Via]
    branch: Optional[str]
    via: list[Via]
    contacts: list[NameAddr]
    routes: list[NameAddr]
    record_routes: list[NameAddr]
    paths: list[NameAddr]
    expires: Optional[int]
    user_agent: Optional[str]
    headers: list[tuple[str, str]]
    # what the proxy attaches while it processes the message (one declared slot each)
    src: tuple[str, int]  # where it came from
    lsock: Any  # the ListenSocket it arrived on
    handed_off: bool  # passed over by the worker that read it
    dst: Optional[str]  # $du: a URI to send to instead of the Request-URI
    txn_key: Optional[bytes]  # the key of its server transaction (tm)
    invite_key: Optional[bytes]  # a CANCEL's: the key of the INVITE it cancels
    txn: Any  # its tm ServerTxn, once one exists
    branches: Optional[list]  # the destination set's appended branches (dset)
    path_route: bool  # a branch's Path went into the Route header (dset)
    rr_added: bool  # record_route() added ours (rr)
    rr_line: bytes | None  # ours, as serialize() writes it
    dialog_admitted: bool  # an in-dialog request of a dialog kampx established
    auth_outcome: Any  # what auth_check() found
    peer_tag: Optional[str]  # the tag of the address row allow_*() matched
    error_reply: Optional[tuple[int, str, tuple[str, ...]]]  # for sl_reply_error()
    on_failure: Any  # t_on_failure(): the failure route armed for its transaction (tm)
    fr_timers: Optional[tuple[float, float]]  # t_set_fr(): (fr_inv, fr) seconds, 0 = default
    ds_next: Any  # dispatcher: the destinations ds_next_dst() moves on to
    flags: int  # setflag()/isflagset(): the message flags (acc)
    dlg_manage: bool  # dlg_manage(): its dialog is tracked (dialog)
    dlg_direction: Optional[str]  # an in-dialog request of a tracked call: its direction (dialog)
    acc_party_values: Optional[tuple]  # acc's party columns, with what they were read from
    def sanity_clean(self) -> bool: ...
    def header(self, name: str) -> Optional[str]: ...
    def header_all(self, name: str) -> list[str]: ...
    def header_values(self, name: str) -> list[str]: ...
    def header_lines(self, name: str) -> list[bytes]: ...
    def has_header(self, name: str) -> bool: ...
    def header_count(self, name: str) -> int: ...
    def digest_credentials(self, name: str = ...) -> Optional[tuple[str, dict[str, str]]]: ...
    def __iter__(self) -> Iterator[tuple[str, str]]: ...
    def __len__(self) -> int: ...
    # edits (applied once by serialize)
    def set_ruri(self, uri: str | bytes) -> None: ...
    def reset_ruri(self) -> None: ...
    def add_top_via_params(self, params: str) -> None: ...
    def stamp_source(self) -> None: ...
    def sent_by_is_source(self) -> bool: ...
    def ruri_host_port(self) -> Optional[tuple[str, int]]: ...
    def ruri_user(self) -> Optional[str]: ...
    def process_maxfwd(self, default: int, limit: int) -> int: ...
    def insert_header(self, name: str, value: str | bytes, before_via: bool = ...) -> None: ...
    def append_header(self, name: str, value: str | bytes) -> None: ...
    def remove_header(self, name: str) -> int: ...
    def replace_header(self, name: str, value: str | bytes) -> None: ...
    def set_max_forwards(self, n: int) -> None: ...
    def remove_top_route(self) -> None: ...
    def route_hops(self, n: int) -> tuple[int, list[Optional[tuple[str, int, bool, bool]]]]: ...
    def remove_top_via(self) -> None: ...
    def top_via_with_stamp(self) -> Optional[bytes]: ...
    def server_key(self, method: Optional[str] = ...) -> Optional[bytes]: ...
    @property
    def has_via(self) -> bool: ...
    @property
    def reply_port(self) -> int: ...
    def sl_tag(self, prefix: str) -> str: ...
    def dialog_key(self, callee: bool = ...) -> bytes: ...
    def addr_user_host(self, to_side: bool = ...) -> Optional[tuple[Optional[str], str]]: ...
    def acc_parties(self) -> tuple[str, str, str, str, str]: ...
    def record_route(self, value: str | bytes) -> None:
        """Our Record-Route as the first header line serialize() writes."""
    def serialize(self, via: str | bytes | None = ..., rr: str | bytes | None = ...) -> bytes: ...

def parse(data: bytes) -> Message: ...
def parse_uri(uri: str | bytes) -> URI: ...
def parse_name_addr(value: str | bytes) -> NameAddr: ...
def parse_auth_header(value: str) -> tuple[str, dict[str, str]]: ...
def auth_fields(value: str, names: tuple[str, ...]) -> tuple[str, list[str | None]]: ...
def split_commas(value: str) -> list[str]: ...
def unescape(text: str) -> str: ...
def header_id_of(name: str) -> int: ...
def build_reply(
    req: Message,
    code: int,
    reason: str | bytes,
    to_tag: str | bytes | None = ...,
    extra: Sequence[str | bytes] | None = ...,
    body: bytes = ...,
) -> bytes: ...
def ruri_hop(m: Message) -> tuple[int, str, int, str] | None: ...
def first_contact_uri(m: Message) -> str | None: ...
def record_route_values(m: Message) -> list[str]: ...
