# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The SIP parser: one pass over a datagram, offsets only.

`parse(data)` frames a UDP datagram as one SIP message (RFC 3261 7, 18.3), records the start
line and every header as offsets into the original buffer (a C array, no Python object per
header) and validates, in C, the parts a proxy relies on before it routes: the start line and
the Request-URI, every Via, From, To, Contact, CSeq and Content-Length. Values become Python
objects only when asked for. Bad input raises SipParseError, whose `reason` is suitable for
a 400 reply.

Edits are recorded as "lumps" (Kamailio's word): (start, end, replacement) over the original
buffer, applied once by serialize(). An unedited message goes out as its original bytes.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Malloc, PyMem_Realloc, PyMem_Free
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memchr, memcmp, memcpy, memset
from libc.stdint cimport int32_t, int16_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "Python.h":  # a str's buffer, read in place (the credentials scanner)
    int PyUnicode_KIND(object)
    void *PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    bint PyUnicode_IS_ASCII(object)

import re

# -- limits -------------------------------------------------------------------------------
DEF MAX_MESSAGE = 65535        # a UDP datagram
DEF MAX_HEADERS = 1024         # header lines; more is not a message a proxy should carry
DEF INITIAL_HEADERS = 32

# -- header ids ---------------------------------------------------------------------------
# Known headers get an id so that lookups and the proxy's own checks never compare names
# (the ids, H_OTHER .. H_COUNT, are declared in _cparse.pxd).

# canonical names by id (index = id); used to write headers and to look names up
CANONICAL = (
    None, "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Max-Forwards", "Route",
    "Record-Route", "Content-Length", "Content-Type", "Expires", "Authorization",
    "Proxy-Authorization", "WWW-Authenticate", "Proxy-Authenticate", "User-Agent", "Server",
    "Supported", "Require", "Proxy-Require", "Unsupported", "Path", "Event", "Subject", "Allow",
    "Allow-Events", "Content-Encoding", "Refer-To", "Referred-By", "Session-Expires", "Accept",
    "Accept-Contact", "Reject-Contact", "Request-Disposition", "Identity", "Identity-Info",
    "Min-Expires", "Date", "Reason",
)

# RFC 3261 7.3.3 and later RFCs' compact forms
COMPACT = {
    "v": H_VIA, "f": H_FROM, "t": H_TO, "i": H_CALL_ID, "m": H_CONTACT, "l": H_CONTENT_LENGTH,
    "c": H_CONTENT_TYPE, "k": H_SUPPORTED, "s": H_SUBJECT, "e": H_CONTENT_ENCODING,
    "o": H_EVENT, "r": H_REFER_TO, "u": H_ALLOW_EVENTS, "x": H_SESSION_EXPIRES,
    "y": H_IDENTITY, "b": H_REFERRED_BY, "a": H_ACCEPT_CONTACT, "j": H_REJECT_CONTACT,
    "d": H_REQUEST_DISPOSITION, "n": H_IDENTITY_INFO,
}

cdef dict _NAME_TO_ID = {}
# lower case (as the modules write names) and the canonical spelling (as scripts do:
# remove_hf("Route")), each found without a lower() copy
for _i in range(1, H_COUNT):
    _NAME_TO_ID[CANONICAL[_i].lower()] = _i
    _NAME_TO_ID[CANONICAL[_i]] = _i
for _k, _v in COMPACT.items():
    _NAME_TO_ID[_k] = _v

# the same names for header_id() on the wire's bytes: lower-cased full names grouped by
# length (H_OTHER ends a group), compact forms by letter
DEF MAX_NAME = 24              # longer than any known name
DEF MAX_SAME_LENGTH = 8        # known names of one length (at most 5 today)
cdef tuple _LOWER_NAME_BYTES = tuple(
    b"" if _n is None else _n.lower().encode("ascii") for _n in CANONICAL)
cdef const char *_LOWER_NAME[H_COUNT]
cdef int _ID_BY_LENGTH[MAX_NAME][MAX_SAME_LENGTH]
cdef int _COMPACT_ID[256]
memset(_ID_BY_LENGTH, 0, sizeof(_ID_BY_LENGTH))
memset(_COMPACT_ID, 0, sizeof(_COMPACT_ID))
for _i in range(1, H_COUNT):
    _LOWER_NAME[_i] = PyBytes_AS_STRING(_LOWER_NAME_BYTES[_i])
    _n = len(_LOWER_NAME_BYTES[_i])
    _k = 0
    while _ID_BY_LENGTH[_n][_k] != H_OTHER:
        _k += 1
    assert _n < MAX_NAME and _k < MAX_SAME_LENGTH - 1, "widen MAX_NAME / MAX_SAME_LENGTH"
    _ID_BY_LENGTH[_n][_k] = _i
for _k, _v in COMPACT.items():
    _COMPACT_ID[ord(_k)] = _v

# headers whose value is a comma-separated list (RFC 3261 7.3.1)
cdef set _LIST_HEADERS = {H_VIA, H_CONTACT, H_ROUTE, H_RECORD_ROUTE, H_PATH, H_SUPPORTED,
                          H_REQUIRE, H_PROXY_REQUIRE, H_UNSUPPORTED, H_ALLOW, H_ALLOW_EVENTS,
                          H_ACCEPT, H_CONTENT_ENCODING}

# edit kinds (see Message's edits section)
cdef enum:
    INS = 0
    REP = 1

# -- methods ------------------------------------------------------------------------------
cdef enum:
    M_OTHER = 0
    M_INVITE
    M_ACK
    M_BYE
    M_CANCEL
    M_REGISTER
    M_OPTIONS
    M_INFO
    M_UPDATE
    M_PRACK
    M_SUBSCRIBE
    M_NOTIFY
    M_MESSAGE
    M_REFER
    M_PUBLISH

METHOD_NAMES = ("OTHER", "INVITE", "ACK", "BYE", "CANCEL", "REGISTER", "OPTIONS", "INFO",
                "UPDATE", "PRACK", "SUBSCRIBE", "NOTIFY", "MESSAGE", "REFER", "PUBLISH")
cdef dict _METHOD_IDS = {m: i for i, m in enumerate(METHOD_NAMES) if i}
cdef tuple _METHOD_BYTES = tuple(m.encode() for m in METHOD_NAMES)
cdef tuple _SMALL_NUMBERS = tuple(b"%d" % k for k in range(256))
METHOD_IDS = dict(_METHOD_IDS)


class SipParseError(ValueError):
    """The datagram is not a SIP message a proxy can act on. `reason` is the text for the
    400 reply's reason phrase (or the log line when the message is dropped); `code` names
    the kind of problem, stable for callers to test (the subclasses below), where the
    reason is Kamailio's wording and may change."""
    code = "malformed"

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class BadFraming(SipParseError):
    """Not even framed as SIP: empty, a broken start line, a Via that cannot say where a
    reply would go. Nothing can be answered (Kamailio drops these too)."""
    code = "framing"


class TooLarge(SipParseError):
    """More headers or bytes than the parser takes."""
    code = "size"


class BadHeader(SipParseError):
    """A header a proxy must read is broken (From, To, CSeq, Contact, Content-Length...)."""
    code = "header"


class BadUri(SipParseError):
    """A URI (the Request-URI, or one in a name-addr) does not parse."""
    code = "uri"


class BadCredentials(SipParseError):
    """Authorization / Proxy-Authorization that do not parse."""
    code = "credentials"


# -- character classes ----------------------------------------------------------------------
cdef unsigned char TOKEN[256]
cdef unsigned char HOSTCH[256]
cdef unsigned char URICH[256]
cdef unsigned char LOWER[256]

cdef void _init_tables():
    cdef int c
    for c in range(256):
        TOKEN[c] = 0
        HOSTCH[c] = 0
        URICH[c] = 0
        LOWER[c] = c + 32 if 65 <= c <= 90 else c
    for c in range(256):
        if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122):
            TOKEN[c] = 1
            HOSTCH[c] = 1
            URICH[c] = 1
    for c in b"-.!%*_+`'~":
        TOKEN[c] = 1
    for c in b"-._":
        HOSTCH[c] = 1
    # everything printable except separators that end a URI in a header: SP < > " and controls
    for c in range(33, 127):
        if c not in b'<>"':
            URICH[c] = 1
    for c in range(128, 256):
        URICH[c] = 1

_init_tables()

cdef inline bint is_ws(unsigned char c) noexcept nogil:
    return c == 32 or c == 9

cdef inline bint is_digit(unsigned char c) noexcept nogil:
    return 48 <= c <= 57


cdef inline bint _usual_scheme(const unsigned char *p, Py_ssize_t a, Py_ssize_t b):
    """sip:, sips: or tel: (any case) at p[a:b]: the schemes sanity's URI checks pass on
    their prefix alone (the parser has checked the rest)."""
    cdef unsigned char c[5]
    cdef Py_ssize_t i
    if b - a < 4:
        return False
    for i in range(5 if b - a >= 5 else 4):
        c[i] = p[a + i] | 0x20 if 65 <= p[a + i] <= 90 else p[a + i]
    if c[0] == 116 and c[1] == 101 and c[2] == 108 and c[3] == 58:  # tel:
        return True
    if not (c[0] == 115 and c[1] == 105 and c[2] == 112):  # sip
        return False
    return c[3] == 58 or (b - a >= 5 and c[3] == 115 and c[4] == 58)  # sip: / sips:


cdef inline str _str(const unsigned char *p, Py_ssize_t a, Py_ssize_t b):
    """Bytes [a, b) of the buffer as str: UTF-8, with undecodable bytes kept (surrogateescape)
    so that a value written back is byte-identical."""
    return PyUnicode_DecodeUTF8(<const char *>p + a, b - a, "surrogateescape")


cdef inline Py_ssize_t skip_lws(const unsigned char *p, Py_ssize_t i, Py_ssize_t e) noexcept nogil:
    """Skip SP/HT and line folding (CRLF or LF followed by SP/HT) inside a header value."""
    while i < e:
        if p[i] == 32 or p[i] == 9:
            i += 1
        elif p[i] == 13 and i + 2 < e and p[i + 1] == 10 and is_ws(p[i + 2]):
            i += 3
        elif p[i] == 10 and i + 1 < e and is_ws(p[i + 1]):
            i += 2
        else:
            break
    return i


cdef inline Py_ssize_t scan_token(const unsigned char *p, Py_ssize_t i, Py_ssize_t e) noexcept nogil:
    while i < e and TOKEN[p[i]]:
        i += 1
    return i


cdef Py_ssize_t scan_quoted(const unsigned char *p, Py_ssize_t i, Py_ssize_t e) noexcept nogil:
    """p[i] is '"'; returns the index after the closing quote, or -1 if unterminated.
    quoted-pair (backslash + any octet but CR/LF) is honoured (RFC 3261 25.1)."""
    i += 1
    while i < e:
        if p[i] == 34:
            return i + 1
        if p[i] == 92:
            if i + 1 >= e or p[i + 1] == 13 or p[i + 1] == 10:
                return -1
            i += 2
            continue
        if p[i] == 13 or p[i] == 10:
            # folding inside a quoted string is LWS
            if p[i] == 13 and i + 2 < e and p[i + 1] == 10 and is_ws(p[i + 2]):
                i += 3
                continue
            if p[i] == 10 and i + 1 < e and is_ws(p[i + 1]):
                i += 2
                continue
            return -1
        i += 1
    return -1


cdef Py_ssize_t scan_param_value(const unsigned char *p, Py_ssize_t i, Py_ssize_t e) noexcept nogil:
    """gen-value = token / host / quoted-string (RFC 3261 25.1). Hosts include IPv6
    references with or without brackets (RFC 5118 4.5). Returns end index or -1."""
    cdef Py_ssize_t s = i
    if i < e and p[i] == 34:
        return scan_quoted(p, i, e)
    while i < e and (TOKEN[p[i]] or p[i] == 58 or p[i] == 91 or p[i] == 93):
        i += 1
    if i == s:
        return -1
    return i


# -- URIs -----------------------------------------------------------------------------------



cdef int check_host(const unsigned char *p, Py_ssize_t s, Py_ssize_t e) noexcept nogil:
    """hostname / IPv4 / [IPv6] (RFC 3261 25.1; RFC 5118 tolerances). 0 ok, -1 bad."""
    cdef Py_ssize_t i
    if s >= e:
        return -1
    if p[s] == 91:
        if p[e - 1] != 93 or e - s < 4:
            return -1
        for i in range(s + 1, e - 1):
            if not (is_digit(p[i]) or (97 <= LOWER[p[i]] <= 102) or p[i] == 58 or p[i] == 46):
                return -1
        return 0
    for i in range(s, e):
        if not HOSTCH[p[i]]:
            return -1
    return 0


# The position records the parsers fill (UriPos, AddrPos, AddrCursor, ViaPos, Hdr: offsets
# into the datagram) are declared in _cparse.pxd.

cdef int parse_uri_at(const unsigned char *p, Py_ssize_t s, Py_ssize_t e, UriPos *u) noexcept nogil:
    """Parse the URI occupying exactly [s, e). Returns 0 or -1.

    sip/sips (RFC 3261 19.1.1): the userinfo runs to the first '@' (users may contain ';',
    '?', '/' and ',' unescaped, RFC 4475 3.1.1.2 and 3.1.1.9); host is a name, IPv4 or a
    bracketed IPv6 reference; then ;params and ?headers. tel (RFC 3966) keeps its number in
    user. Any other scheme is an opaque absoluteURI (RFC 4475 3.3.2-3.3.4)."""
    cdef Py_ssize_t i = s, at, j, hs, he
    cdef int port
    u.user_s = u.user_e = u.pass_s = u.pass_e = -1
    u.port = 0
    u.kind = 0
    u.headers_s = u.headers_e = e
    # scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
    if i >= e or not (97 <= LOWER[p[i]] <= 122):
        return -1
    while i < e and (97 <= LOWER[p[i]] <= 122 or is_digit(p[i]) or p[i] == 43 or p[i] == 45
                     or p[i] == 46):
        i += 1
    if i >= e or p[i] != 58:
        return -1
    u.scheme_s = s
    u.scheme_e = i
    i += 1
    for j in range(i, e):
        if not URICH[p[j]]:
            return -1
    if i - s == 4 and LOWER[p[s]] == 115 and LOWER[p[s + 1]] == 105 and LOWER[p[s + 2]] == 112:
        u.kind = 1
    elif i - s == 5 and LOWER[p[s]] == 115 and LOWER[p[s + 1]] == 105 and LOWER[p[s + 2]] == 112 \
            and LOWER[p[s + 3]] == 115:
        u.kind = 2
    elif i - s == 4 and LOWER[p[s]] == 116 and LOWER[p[s + 1]] == 101 and LOWER[p[s + 2]] == 108:
        u.kind = 3
    if u.kind == 0:
        # opaque: host = the rest, nothing else to check
        if i >= e:
            return -1
        u.host_s = i
        u.host_e = e
        u.params_s = u.params_e = e
        return 0
    if u.kind == 3:
        # tel:number;params
        j = i
        while j < e and p[j] != 59:
            j += 1
        if j == i:
            return -1
        u.user_s = i
        u.user_e = j
        u.host_s = u.host_e = j
        u.params_s = j + 1 if j < e else e
        u.params_e = e
        return 0
    # sip / sips: userinfo up to the first '@' if there is one
    at = -1
    for j in range(i, e):
        if p[j] == 64:
            at = j
            break
    if at >= 0:
        u.user_s = i
        u.user_e = at
        for j in range(i, at):
            if p[j] == 58:
                u.user_e = j
                u.pass_s = j + 1
                u.pass_e = at
                break
        i = at + 1
    # host
    hs = i
    if i < e and p[i] == 91:
        while i < e and p[i] != 93:
            i += 1
        if i >= e:
            return -1
        i += 1
    else:
        while i < e and HOSTCH[p[i]]:
            i += 1
    he = i
    if check_host(p, hs, he) < 0:
        return -1
    u.host_s = hs
    u.host_e = he
    if i < e and p[i] == 58:
        i += 1
        port = 0
        j = i
        while i < e and is_digit(p[i]):
            port = port * 10 + (p[i] - 48)
            if port > 65535:
                return -1
            i += 1
        if i == j or port == 0:
            return -1
        u.port = port
    u.params_s = u.params_e = i
    if i < e and p[i] == 59:
        u.params_s = i + 1
        while i < e and p[i] != 63:
            i += 1
        u.params_e = i
    if i < e and p[i] == 63:
        u.headers_s = i + 1
        u.headers_e = e
        i = e
    if i != e:
        return -1
    return 0


cdef class URI:
    """A parsed URI (RFC 3261 19.1 for sip/sips, RFC 3966 for tel, opaque otherwise).

    `user` and `host` are as written (escapes kept); `port` is 0 when absent; `params` maps
    lower-cased names to values (None for a flag parameter)."""
    # its fields: _cparse.pxd

    def __init__(self, uri):
        cdef bytes b = uri.encode("utf-8", "surrogateescape") if isinstance(uri, str) else bytes(uri)
        cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(b)
        cdef UriPos u
        if parse_uri_at(p, 0, PyBytes_GET_SIZE(b), &u) < 0:
            raise BadUri("Bad URI")
        self._fill(p, &u)

    cdef _fill(self, const unsigned char *p, UriPos *u):
        self.raw = _str(p, u.scheme_s, u.headers_e)
        self.scheme = _str(p, u.scheme_s, u.scheme_e).lower()
        self.user = _str(p, u.user_s, u.user_e) if u.user_s >= 0 else None
        self.password = _str(p, u.pass_s, u.pass_e) if u.pass_s >= 0 else None
        self.host = _str(p, u.host_s, u.host_e)
        self.port = u.port
        self.params_raw = _str(p, u.params_s, u.params_e)
        self.headers = _str(p, u.headers_s, u.headers_e)
        self._params = None

    @property
    def params(self):
        """URI parameters (RFC 3261 19.1.1): {lower-cased name: value or None}."""
        if self._params is None:
            self._params = _split_params(self.params_raw)
        return self._params

    @property
    def user_unescaped(self):
        """The user part with %HH escapes decoded (RFC 3261 19.1.4 comparison form)."""
        return unescape(self.user) if self.user is not None else None

    @property
    def hostport(self):
        return f"{self.host}:{self.port}" if self.port else self.host

    def __repr__(self):
        return f"URI({self.raw!r})"

    def __str__(self):
        return self.raw


cdef bint _uri_has_param(const unsigned char *p, UriPos *u, const char *name, int n) noexcept:
    # a URI parameter `name` (lower case) is present, with or without a value: the test
    # `name in URI.params` makes (_split_params: each ';' part's name, stripped, any case)
    cdef Py_ssize_t i = u.params_s, e = u.params_e, s, ne, a, b
    while i < e:
        s = i
        while i < e and p[i] != 59:
            i += 1
        ne = s
        while ne < i and p[ne] != 61:
            ne += 1
        a = s
        b = ne
        while a < b and (p[a] == 32 or 9 <= p[a] <= 13):
            a += 1
        while b > a and (p[b - 1] == 32 or 9 <= p[b - 1] <= 13):
            b -= 1
        if name_is(p, a, b, name, n):
            return True
        i += 1
    return False


cdef dict _split_params(str text):
    cdef dict out = {}
    if not text:
        return out
    for part in text.split(";"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if name not in out:             # given twice: the first counts, as in the views
            out[name] = value.strip() if sep else None
    return out


def unescape(str text):
    """Decode %HH escapes (RFC 3261 19.1.2); a '%' not followed by two hex digits stays."""
    if "%" not in text:
        return text
    cdef bytes raw = text.encode("utf-8", "surrogateescape")
    cdef bytearray out = bytearray()
    cdef Py_ssize_t i = 0, n = len(raw)
    while i < n:
        c = raw[i]
        if c == 37 and _is_hex(raw, i + 1) and _is_hex(raw, i + 2):
            out.append(int(raw[i + 1:i + 3], 16))
            i += 3
            continue
        out.append(c)
        i += 1
    return bytes(out).decode("utf-8", "surrogateescape")


cdef inline bint _is_hex(bytes raw, Py_ssize_t k):
    if k >= len(raw):
        return False
    c = raw[k]
    return 48 <= c <= 57 or 65 <= c <= 70 or 97 <= c <= 102


def parse_uri(uri):
    """Parse a URI (str or bytes) into a URI object; SipParseError when it is not one."""
    return URI(uri)


# -- name-addr / addr-spec (From, To, Contact, Route, Record-Route, Path) ---------------------



cdef Py_ssize_t parse_params(const unsigned char *p, Py_ssize_t i, Py_ssize_t e,
                             Py_ssize_t *tag_s, Py_ssize_t *tag_e) noexcept nogil:
    """*( SEMI generic-param ), stopping at ',' or e. Returns the end index or -1.
    Records a tag= parameter when tag_s is not NULL."""
    cdef Py_ssize_t ns, ne, vs, ve
    while True:
        i = skip_lws(p, i, e)
        if i >= e or p[i] == 44:
            return i
        if p[i] != 59:
            return -1
        i = skip_lws(p, i + 1, e)
        ns = i
        i = scan_token(p, i, e)
        ne = i
        if ns == ne:
            return -1
        i = skip_lws(p, i, e)
        if i < e and p[i] == 61:
            i = skip_lws(p, i + 1, e)
            vs = i
            ve = scan_param_value(p, i, e)
            if ve < 0:
                return -1
            i = ve
            if tag_s != NULL and tag_s[0] < 0 and ne - ns == 3 and LOWER[p[ns]] == 116 \
                    and LOWER[p[ns + 1]] == 97 and LOWER[p[ns + 2]] == 103:
                tag_s[0] = vs
                tag_e[0] = ve


cdef Py_ssize_t parse_addr(const unsigned char *p, Py_ssize_t i, Py_ssize_t e, AddrPos *a) noexcept nogil:
    """One name-addr or addr-spec with its header params (RFC 3261 20.10, 20.20, 20.39).
    Returns the index of the ',' that ends it (or e), -1 on error."""
    cdef Py_ssize_t j, k, last_tok_e
    i = skip_lws(p, i, e)
    a.s = i
    a.disp_s = a.disp_e = i
    a.tag_s = a.tag_e = -1
    a.brackets = False
    if i >= e:
        return -1
    if p[i] == 34:
        j = scan_quoted(p, i, e)
        if j < 0:
            return -1
        a.disp_e = j
        i = skip_lws(p, j, e)
        if i >= e or p[i] != 60:
            return -1
    elif p[i] != 60:
        # either *(token LWS) '<' (a display name) or an addr-spec
        j = i
        last_tok_e = i
        while j < e and (TOKEN[p[j]] or is_ws(p[j]) or p[j] == 13 or p[j] == 10):
            if TOKEN[p[j]]:
                last_tok_e = j + 1
            j += 1
        if j < e and p[j] == 60 and j > i:
            a.disp_e = last_tok_e
            i = j
    if p[i] == 60:
        a.brackets = True
        j = i + 1
        while j < e and p[j] != 62:
            j += 1
        if j >= e:
            return -1
        a.uri_s = i + 1
        a.uri_e = j
        i = j + 1
    else:
        # addr-spec: the URI ends at ';', ',' or whitespace (its ;params are header params)
        j = i
        while j < e and p[j] != 59 and p[j] != 44 and not is_ws(p[j]) and p[j] != 13 and p[j] != 10:
            j += 1
        a.uri_s = i
        a.uri_e = j
        i = j
    if a.uri_e <= a.uri_s:
        return -1
    a.params_s = i
    k = parse_params(p, i, e, &a.tag_s, &a.tag_e)
    if k < 0:
        return -1
    a.params_e = k
    j = k
    while j > a.s and (is_ws(p[j - 1]) or p[j - 1] == 13 or p[j - 1] == 10):
        j -= 1
    a.e = j
    return k


cdef int check_addr_uri(const unsigned char *p, AddrPos *a) noexcept nogil:
    cdef UriPos u
    return parse_uri_at(p, a.uri_s, a.uri_e, &u)


cdef class NameAddr:
    """From/To/Contact/Route/Record-Route/Path value (RFC 3261 20.10, 20.20, 20.39):
    `display` (quotes kept), `uri` (text between <> or the addr-spec), header `params`
    ({lower-cased name: value or None}), `tag`, `raw` (the whole value)."""
    cdef readonly str raw, display, uri, params_raw
    cdef readonly object tag
    cdef readonly bint brackets
    cdef dict _params
    cdef URI _uri

    @staticmethod
    cdef NameAddr from_pos(const unsigned char *p, AddrPos *a):
        cdef NameAddr n = NameAddr.__new__(NameAddr)
        n.raw = _str(p, a.s, a.e)
        n.display = _str(p, a.disp_s, a.disp_e)
        n.uri = _str(p, a.uri_s, a.uri_e)
        n.params_raw = _str(p, a.params_s, a.params_e).strip()
        n.tag = _str(p, a.tag_s, a.tag_e) if a.tag_s >= 0 else None
        n.brackets = a.brackets
        return n

    @property
    def params(self):
        if self._params is None:
            self._params = _split_params(_collapse(self.params_raw))
        return self._params

    @property
    def parsed_uri(self):
        """The URI parsed (URI object)."""
        if self._uri is None:
            self._uri = URI(self.uri)
        return self._uri

    @property
    def expires(self):
        """The `expires` header parameter as int, None when absent (RFC 3261 20.10)."""
        v = self.params.get("expires")
        if v is None:
            return None
        return _delta(v, 0xFFFFFFFF, -1)

    @property
    def q(self):
        v = self.params.get("q")
        return None if v is None else v

    def __repr__(self):
        return f"NameAddr({self.raw!r})"


_FOLD = re.compile(r"[ \t]*\r?\n[ \t]*")


cdef str _collapse(str text):
    """Header value with each line fold (CRLF and the whitespace around it) replaced by one
    SP, as RFC 3261 7.3.1 allows; other octets, whitespace included, are kept."""
    if "\n" not in text:
        return text
    return _FOLD.sub(" ", text)


cdef object _delta(str v, long long limit, object bad):
    """A decimal number 0..limit (delta-seconds, ttl), else `bad`. str.isdigit() alone also
    takes digits int() refuses ('²'), and int() refuses over 4300 digits."""
    if not (v.isascii() and v.isdigit()) or len(v.lstrip("0")) > 18:
        return bad
    n = int(v)
    return n if n <= limit else bad


def parse_name_addr(value):
    """Parse one name-addr / addr-spec value (str or bytes) -> NameAddr."""
    cdef bytes b = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(b)
    cdef AddrPos a
    cdef Py_ssize_t k = parse_addr(p, 0, len(b), &a)
    if k < 0 or k != len(b) or check_addr_uri(p, &a) < 0:
        raise BadUri("Bad name-addr")
    return NameAddr.from_pos(p, &a)


# -- Via ----------------------------------------------------------------------------------





cdef inline bint name_is(const unsigned char *p, Py_ssize_t s, Py_ssize_t e, const char *lit, int n) noexcept nogil:
    cdef int k
    if e - s != n:
        return False
    for k in range(n):
        if LOWER[p[s + k]] != <unsigned char>lit[k]:
            return False
    return True


cdef Py_ssize_t parse_via(const unsigned char *p, Py_ssize_t i, Py_ssize_t e, ViaPos *v) noexcept nogil:
    """One via-parm (RFC 3261 20.42): sent-protocol LWS sent-by *( SEMI via-params ).
    LWS is allowed around the '/' of sent-protocol (RFC 4475 3.1.1.1). Returns the index of
    the ',' that ends it (or e), -1 on error."""
    cdef Py_ssize_t j, ns, ne, vs, ve, hs, semi
    cdef int port
    i = skip_lws(p, i, e)
    v.s = i
    v.branch_s = v.branch_e = v.received_s = v.received_e = v.maddr_s = v.maddr_e = -1
    v.rport_s = v.rport_e = -1
    v.has_rport = 0
    v.port = 0
    # protocol-name
    j = scan_token(p, i, e)
    if j == i or not name_is(p, i, j, "sip", 3):
        return -1
    i = skip_lws(p, j, e)
    if i >= e or p[i] != 47:
        return -1
    i = skip_lws(p, i + 1, e)
    v.ver_s = i
    i = scan_token(p, i, e)
    v.ver_e = i
    if v.ver_e == v.ver_s:
        return -1
    i = skip_lws(p, i, e)
    if i >= e or p[i] != 47:
        return -1
    i = skip_lws(p, i + 1, e)
    v.tr_s = i
    i = scan_token(p, i, e)
    v.tr_e = i
    if v.tr_e == v.tr_s:
        return -1
    j = skip_lws(p, i, e)
    if j == i:
        return -1   # LWS is required between sent-protocol and sent-by
    i = j
    # sent-by = host [ COLON port ]
    hs = i
    if i < e and p[i] == 91:
        while i < e and p[i] != 93:
            i += 1
        if i >= e:
            return -1
        i += 1
    else:
        while i < e and HOSTCH[p[i]]:
            i += 1
    if check_host(p, hs, i) < 0:
        return -1
    v.host_s = hs
    v.host_e = i
    i = skip_lws(p, i, e)
    if i < e and p[i] == 58:
        i = skip_lws(p, i + 1, e)
        j = i
        port = 0
        while i < e and is_digit(p[i]):
            port = port * 10 + (p[i] - 48)
            if port > 65535:
                return -1
            i += 1
        if i == j:
            return -1
        v.port = port
    v.params_s = i
    while True:
        i = skip_lws(p, i, e)
        if i >= e or p[i] == 44:
            break
        if p[i] != 59:
            return -1
        semi = i
        i = skip_lws(p, i + 1, e)
        ns = i
        i = scan_token(p, i, e)
        ne = i
        if ns == ne:
            return -1
        i = skip_lws(p, i, e)
        vs = ve = -1
        if i < e and p[i] == 61:
            i = skip_lws(p, i + 1, e)
            vs = i
            ve = scan_param_value(p, i, e)
            if ve < 0:
                return -1
            i = ve
        # a parameter given twice counts once, the first time: a received stamp inserted
        # after sent-by (Kamailio's place for it) wins over one the sender wrote
        if name_is(p, ns, ne, "branch", 6):
            if vs < 0:
                return -1
            if v.branch_s < 0:
                v.branch_s = vs
                v.branch_e = ve
        elif name_is(p, ns, ne, "received", 8):
            if vs < 0:
                return -1
            if v.received_s < 0:
                v.received_s = vs
                v.received_e = ve
        elif name_is(p, ns, ne, "rport", 5):
            port = 0
            if vs >= 0:
                for j in range(vs, ve):
                    if not is_digit(p[j]):
                        return -1
                    port = port * 10 + (p[j] - 48)
                    if port > 65535:       # RFC 3581: a port number
                        return -1
            if not v.has_rport:
                v.has_rport = 1
                v.rport_p = semi
                v.rport = port
                if vs >= 0:
                    v.rport_s = vs
                    v.rport_e = ve
                else:
                    v.rport_s = v.rport_e = ne
        elif name_is(p, ns, ne, "maddr", 5):
            if vs < 0:
                return -1
            if v.maddr_s < 0:
                v.maddr_s = vs
                v.maddr_e = ve
    v.params_e = i
    j = i
    while j > v.s and (is_ws(p[j - 1]) or p[j - 1] == 13 or p[j - 1] == 10):
        j -= 1
    v.e = j
    return i


cdef class Via:
    """One Via value (RFC 3261 20.42, 18.2.1; RFC 3581 rport): `protocol` "SIP/2.0",
    `transport` upper-cased, `host`, `port` (0 when absent), `branch`, `received`, `rport`
    (None absent, 0 present without value, else the number), `maddr`, `ttl`, `params`."""
    cdef readonly str raw, version, transport, host, params_raw
    cdef readonly int port
    cdef readonly object branch, received, rport, maddr
    cdef dict _params

    @staticmethod
    cdef Via from_pos(const unsigned char *p, ViaPos *v):
        cdef Via x = Via.__new__(Via)
        x.raw = _str(p, v.s, v.e)
        x.version = _str(p, v.ver_s, v.ver_e)
        x.transport = _str(p, v.tr_s, v.tr_e).upper()
        x.host = _str(p, v.host_s, v.host_e)
        x.port = v.port
        x.params_raw = _str(p, v.params_s, v.params_e)
        x.branch = _str(p, v.branch_s, v.branch_e) if v.branch_s >= 0 else None
        x.received = _str(p, v.received_s, v.received_e) if v.received_s >= 0 else None
        x.maddr = _str(p, v.maddr_s, v.maddr_e) if v.maddr_s >= 0 else None
        if not v.has_rport:
            x.rport = None
        elif v.rport_s == v.rport_e:
            x.rport = 0
        else:
            x.rport = v.rport
        return x

    @property
    def protocol(self):
        return "SIP/" + self.version

    @property
    def sent_by(self):
        return f"{self.host}:{self.port}" if self.port else self.host

    @property
    def params(self):
        if self._params is None:
            self._params = _split_params(_collapse(self.params_raw).replace(" ", "").replace("\t", ""))
        return self._params

    @property
    def ttl(self):
        v = self.params.get("ttl")
        return None if v is None else _delta(v, 255, None)

    def __repr__(self):
        return f"Via({self.raw!r})"


# -- the header table -----------------------------------------------------------------------



cdef bint _plain_uint32(const unsigned char *p, Hdr *h) noexcept:
    """The header's value is 1 to 10 ASCII digits worth at most 2^32-1 (an Expires value
    sanity_check accepts), on one line."""
    cdef Py_ssize_t i, n = h.val_e - h.val_s
    cdef uint64_t v = 0
    if h.folded or n < 1 or n > 10:
        return False
    for i in range(h.val_s, h.val_e):
        if not 48 <= p[i] <= 57:
            return False
        v = v * 10 + (p[i] - 48)
    return v <= 0xFFFFFFFF


cdef int header_id(const unsigned char *p, Py_ssize_t s, Py_ssize_t e) noexcept:
    # the name's id without a Python object: every header line of every message comes here
    cdef Py_ssize_t n = e - s
    cdef unsigned char buf[MAX_NAME]
    cdef Py_ssize_t k
    cdef int hid
    if n <= 0 or n >= MAX_NAME:
        return H_OTHER
    for k in range(n):
        buf[k] = LOWER[p[s + k]]
    if n == 1:
        return _COMPACT_ID[buf[0]]
    for k in range(MAX_SAME_LENGTH):
        hid = _ID_BY_LENGTH[n][k]
        if hid == H_OTHER:
            break
        if memcmp(buf, _LOWER_NAME[hid], n) == 0:
            return hid
    return H_OTHER


cpdef int header_id_of(str name):
    """The id of a header name (full or compact, any case); 0 for an unknown header."""
    hid = _NAME_TO_ID.get(name)  # the usual spelling: lower case, as the modules write it
    if hid is not None:
        return hid
    if not name.isascii():      # str.lower() maps some non-ASCII letters onto ASCII ones
        return H_OTHER
    return _NAME_TO_ID.get(name.lower(), H_OTHER)


cdef class CSeq:
    """CSeq (RFC 3261 20.16): `number` (0..2**32-1) and `method`."""
    cdef readonly object number
    cdef readonly str method

    def __init__(self, number, method):
        self.number = number
        self.method = method

    def __repr__(self):
        return f"CSeq({self.number}, {self.method!r})"

    def __iter__(self):
        return iter((self.number, self.method))


cdef class Message:
    """A parsed SIP message (RFC 3261 7). Header values come out as str (UTF-8, undecodable
    bytes preserved). Edits are recorded and applied once by serialize().

    Its fields are declared in _cparse.pxd, so that compiled modules read them in C."""

    def __cinit__(self):
        # a Message made directly (not by parse()) is an empty, harmless one
        cdef int k
        self.hdrs = NULL
        self.buf = b""
        self.p = <const unsigned char *>PyBytes_AS_STRING(self.buf)
        for k in range(H_COUNT):
            self.first[k] = -1
            self.counts[k] = 0
        self.clen = -1
        self.max_forwards_value = -1

    def __dealloc__(self):
        if self.hdrs != NULL:
            PyMem_Free(self.hdrs)

    # ---- start line -----------------------------------------------------------------------

    @property
    def method(self):
        """Request method (case-sensitive, RFC 3261 7.1); for a reply, the CSeq method."""
        if self.is_request:
            if self.method_id:
                return METHOD_NAMES[self.method_id]
            return _str(self.p, self.m_s, self.m_e)
        return self.cseq_method

    def sanity_clean(self):
        """True when the request certainly passes Kamailio's default sanity_check("1511",
        "7") (kampx/sanity.py): SIP/2.0, sip/sips/tel Request-URI, From and To URIs, the
        required headers, the CSeq method equal to the request's, Content-Length covering
        the datagram, an Expires header (if any) of 1-10 ASCII digits up to 2^32-1. False
        means "look closer" (the Python checks decide), never "bad"."""
        cdef Py_ssize_t n
        if not self.is_request or self.ver_e - self.ver_s != 7:
            return False
        if memcmp(self.p + self.ver_s, b"SIP/2.0", 7) != 0:
            return False
        if (self.first[H_CALL_ID] < 0 or self.first[H_FROM] < 0 or self.first[H_TO] < 0
                or self.first[H_CSEQ] < 0):
            return False
        if self.first[H_EXPIRES] >= 0 and not _plain_uint32(self.p, &self.hdrs[self.first[H_EXPIRES]]):
            return False
        n = self.m_e - self.m_s
        if n == 0 or self.cseq_m_e - self.cseq_m_s != n:
            return False
        if memcmp(self.p + self.m_s, self.p + self.cseq_m_s, n) != 0:
            return False
        if self.clen >= 0 and self.end != len(self.buf):
            return False
        return (_usual_scheme(self.p, self.ruri_s, self.ruri_e)
                and _usual_scheme(self.p, self.from_a.uri_s, self.from_a.uri_e)
                and _usual_scheme(self.p, self.to_a.uri_s, self.to_a.uri_e))

    @property
    def ruri(self):
        """The Request-URI as it will be sent (after any rewrite)."""
        if self.new_ruri is not None:
            return self.new_ruri.decode("utf-8", "surrogateescape")
        return _str(self.p, self.ruri_s, self.ruri_e) if self.is_request else None

    @property
    def original_ruri(self):
        return _str(self.p, self.ruri_s, self.ruri_e) if self.is_request else None

    @property
    def uri(self):
        """The Request-URI parsed (URI), after any rewrite."""
        if not self.is_request:
            return None
        if self._uri is not None:  # a URI is immutable: made once per Request-URI
            return self._uri
        cdef URI u
        if self.new_ruri is not None:
            u = URI(self.new_ruri)
        else:
            u = URI.__new__(URI)
            u._fill(self.p, &self.ruri_pos)
        self._uri = u
        return u

    def ruri_host_port(self):
        """The Request-URI's (host, port) as its URI view has them (the host as written, an
        IPv6 one in brackets; port 0 when absent), read from the parsed offsets while the
        Request-URI is the received one, so that no URI view is made for them (the
        keepalive's `uri == myself`). None for a reply."""
        return self._ruri_host_port()

    cdef tuple _ruri_host_port(self):  # for compiled callers that type the message
        if not self.is_request:
            return None
        if self._uri is not None or self.new_ruri is not None:
            u = self.uri
            return (u.host, u.port)
        return (_str(self.p, self.ruri_pos.host_s, self.ruri_pos.host_e), self.ruri_pos.port)

    def ruri_user(self):
        """The Request-URI's user part ($rU) as its URI view has it, None when it has none
        (or for a reply); from the parsed offsets while the Request-URI is the received
        one."""
        return self._ruri_user()

    cdef _ruri_user(self):  # for compiled callers that type the message
        if not self.is_request:
            return None
        if self._uri is not None or self.new_ruri is not None:
            return self.uri.user
        if self.ruri_pos.user_s < 0:
            return None
        return _str(self.p, self.ruri_pos.user_s, self.ruri_pos.user_e)

    @property
    def ruri_scheme_kind(self):
        """1 sip, 2 sips, 3 tel, 0 another scheme (RFC 3261 8.2.2.1: 416 for those)."""
        return self.ruri_pos.kind

    @property
    def version(self):
        return _str(self.p, self.ver_s, self.ver_e)

    @property
    def reason(self):
        return self._reason()

    cdef _reason(self):  # the property, for compiled callers that type the message
        return _str(self.p, self.reason_s, self.reason_e) if not self.is_request else None

    # ---- raw access -----------------------------------------------------------------------

    @property
    def raw(self):
        """The framed message as received (trailing octets beyond Content-Length dropped)."""
        if self.end == len(self.buf):
            return self.buf
        return self.buf[:self.end]

    @property
    def body(self):
        return self.buf[self.body_s:self.end]

    @property
    def content_length(self):
        return None if self.clen < 0 else self.clen

    # ---- headers --------------------------------------------------------------------------

    cdef str _value(self, int k):
        cdef Hdr *h = &self.hdrs[k]
        cdef str v = _str(self.p, h.val_s, h.val_e)
        return _collapse(v) if h.folded else v

    cdef int _id_for(self, str name) except -2:
        return header_id_of(name)

    cdef bint _name_eq(self, int k, bytes lname):
        cdef Hdr *h = &self.hdrs[k]
        cdef Py_ssize_t n = h.name_e - h.name_s, j
        if n != len(lname):
            return False
        cdef const unsigned char *q = <const unsigned char *>PyBytes_AS_STRING(lname)
        for j in range(n):
            if LOWER[self.p[h.name_s + j]] != q[j]:
                return False
        return True

    cdef list _indexes(self, str name):
        cdef int hid = self._id_for(name)
        cdef list out = []
        cdef int k
        cdef bytes lname
        if hid != H_OTHER:
            if self.first[hid] < 0:
                return out
            for k in range(self.first[hid], self.nhdr):
                if self.hdrs[k].hid == hid:
                    out.append(k)
            return out
        lname = name.lower().encode("utf-8", "surrogateescape")
        for k in range(self.nhdr):
            if self.hdrs[k].hid == H_OTHER and self._name_eq(k, lname):
                out.append(k)
        return out

    def header(self, str name):
        """The first value of header `name` (full or compact name, any case), or None."""
        return self._header(name)

    # header(): the same for compiled callers that type the message (a C call)
    cdef str _header(self, str name):
        cdef int hid = self._id_for(name)
        if hid != H_OTHER:
            return self._value(self.first[hid]) if self.first[hid] >= 0 else None
        idx = self._indexes(name)
        return self._value(idx[0]) if idx else None

    def header_all(self, str name):
        """Every header line of `name`, in order, one value per line."""
        return [self._value(k) for k in self._indexes(name)]

    def header_values(self, str name):
        """Every comma-separated value of `name` across all its lines (RFC 3261 7.3.1),
        commas inside quotes and <> kept."""
        cdef list out = []
        for k in self._indexes(name):
            out.extend(split_commas(self._value(k)))
        return out

    def has_header(self, str name):
        cdef int hid = self._id_for(name)
        if hid != H_OTHER:
            return self.first[hid] >= 0
        return bool(self._indexes(name))

    def header_count(self, str name):
        """Number of header lines named `name`."""
        cdef int hid = self._id_for(name)
        if hid != H_OTHER:
            return self.counts[hid]
        return len(self._indexes(name))

    @property
    def headers(self):
        """[(name as written, value)] in order."""
        return [(_str(self.p, self.hdrs[k].name_s, self.hdrs[k].name_e), self._value(k))
                for k in range(self.nhdr)]

    def __iter__(self):
        return iter(self.headers)

    def __len__(self):
        return self.nhdr

    # ---- parsed views ---------------------------------------------------------------------

    @property
    def call_id(self):
        return self._call_id()

    cdef _call_id(self):  # the property, for compiled callers that type the message
        k = self.first[H_CALL_ID]
        return self._value(k) if k >= 0 else None

    @property
    def cseq(self):
        """CSeq(number, method) (RFC 3261 20.16), None when absent."""
        if self.first[H_CSEQ] < 0:
            return None
        return CSeq(self.cseq_num, _str(self.p, self.cseq_m_s, self.cseq_m_e))

    @property
    def cseq_num(self):
        return self.cseq_num if self.first[H_CSEQ] >= 0 else None

    @property
    def cseq_method(self):
        return self._cseq_method()

    cdef _cseq_method(self):  # the property, for compiled callers that type the message
        return _str(self.p, self.cseq_m_s, self.cseq_m_e) if self.first[H_CSEQ] >= 0 else None

    @property
    def max_forwards(self):
        """Max-Forwards (RFC 3261 20.22): None when absent, -1 when not a number."""
        if self.max_forwards_value == -1:
            return None
        if self.max_forwards_value == -2:
            return -1
        return self.max_forwards_value

    @property
    def from_(self):
        """From (RFC 3261 20.20) as NameAddr; None when absent."""
        if self.first[H_FROM] < 0:
            return None
        if self._from_na is None:  # immutable, of the bytes as received: made once
            self._from_na = NameAddr.from_pos(self.p, &self.from_a)
        return self._from_na

    @property
    def to(self):
        """To (RFC 3261 20.39) as NameAddr; None when absent."""
        if self.first[H_TO] < 0:
            return None
        if self._to_na is None:
            self._to_na = NameAddr.from_pos(self.p, &self.to_a)
        return self._to_na

    def addr_user_host(self, bint to_side=False):
        """(user or None, host) of the From URI (the To URI with `to_side`), as its
        parsed_uri gives them, without building the views; None when the header is absent.
        Raises BadUri as parsed_uri does."""
        cdef AddrPos *a = &self.to_a if to_side else &self.from_a
        cdef UriPos u
        if self.first[H_TO if to_side else H_FROM] < 0:
            return None
        if parse_uri_at(self.p, a.uri_s, a.uri_e, &u) < 0:
            raise BadUri("Bad URI")
        return (_str(self.p, u.user_s, u.user_e) if u.user_s >= 0 else None,
                _str(self.p, u.host_s, u.host_e))

    def acc_parties(self):
        """(From user, From host, To user, Request-URI user, Request-URI host): accounting's
        party columns $fU $fd $tU $rU $rd in one call, each "" when absent; a From or To
        whose URI does not parse gives "" (addr_user_host would raise); the Request-URI
        as `uri` gives it (after any rewrite)."""
        return self._acc_parties()

    # acc_parties(): the same for compiled callers that type the message (a C call)
    cdef tuple _acc_parties(self):
        cdef UriPos u
        fu = fh = tu = ""
        if self.first[H_FROM] >= 0 and parse_uri_at(self.p, self.from_a.uri_s, self.from_a.uri_e, &u) >= 0:
            if u.user_s >= 0:
                fu = _str(self.p, u.user_s, u.user_e)
            fh = _str(self.p, u.host_s, u.host_e)
        if self.first[H_TO] >= 0 and parse_uri_at(self.p, self.to_a.uri_s, self.to_a.uri_e, &u) >= 0:
            if u.user_s >= 0:
                tu = _str(self.p, u.user_s, u.user_e)
        if not self.is_request:
            return fu, fh, tu, "", ""
        cdef const unsigned char *q
        if self._uri is None:  # the Request-URI's user and host from offsets, no URI view
            q = _ruri_at(self, &u)
            if q != NULL:  # else the view below says why (BadUri)
                return (fu, fh, tu, _str(q, u.user_s, u.user_e) if u.user_s >= 0 else "",
                        _str(q, u.host_s, u.host_e))
        r = self.uri
        return fu, fh, tu, r.user or "", r.host or ""

    @property
    def from_tag(self):
        return self._from_tag()

    cdef _from_tag(self):  # the property, for compiled callers that type the message
        if self.first[H_FROM] < 0 or self.from_a.tag_s < 0:
            return None
        return _str(self.p, self.from_a.tag_s, self.from_a.tag_e)

    @property
    def to_tag(self):
        return self._to_tag()

    cdef _to_tag(self):  # the property, for compiled callers that type the message
        if self.first[H_TO] < 0 or self.to_a.tag_s < 0:
            return None
        return _str(self.p, self.to_a.tag_s, self.to_a.tag_e)

    @property
    def from_uri(self):
        return _str(self.p, self.from_a.uri_s, self.from_a.uri_e) if self.first[H_FROM] >= 0 else None

    @property
    def to_uri(self):
        return _str(self.p, self.to_a.uri_s, self.to_a.uri_e) if self.first[H_TO] >= 0 else None

    @property
    def top_via(self):
        """The first Via value (RFC 3261 20.42) as Via; None when there is no Via. Built
        once: it views the bytes as received, which edits never change."""
        if self.first[H_VIA] < 0:
            return None
        if self._top_via is None:
            self._top_via = Via.from_pos(self.p, &self.topvia)
        return self._top_via

    @property
    def has_via(self):
        """Whether the message has a Via (without building the top_via view)."""
        return self.first[H_VIA] >= 0

    @property
    def reply_port(self):
        """Where a reply to this request goes over UDP (RFC 3261 18.2.2, RFC 3581 4): the
        top Via's sent-by port (5060 when absent); 0 when it asks for rport or there is no
        Via: the source port, then."""
        if self.first[H_VIA] < 0 or self.topvia.has_rport:
            return 0
        return self.topvia.port or 5060

    @property
    def branch(self):
        """The top Via's branch, or None."""
        return self._branch()

    cdef _branch(self):  # the property, for compiled callers that type the message
        if self.first[H_VIA] < 0 or self.topvia.branch_s < 0:
            return None
        return _str(self.p, self.topvia.branch_s, self.topvia.branch_e)

    @property
    def via(self):
        """Every Via value, top first."""
        cdef list out = []
        cdef ViaPos v
        cdef Py_ssize_t i, e
        for k in self._indexes("via"):
            i = self.hdrs[k].val_s
            e = self.hdrs[k].val_e
            while i < e:
                i = parse_via(self.p, i, e, &v)
                if i < 0:
                    raise BadFraming("Bad Via header")
                out.append(Via.from_pos(self.p, &v))
                if i < e:
                    i += 1
        return out

    cdef bint _next_addr(self, int hid, AddrCursor *c, AddrPos *a) except -1:
        # the next name-addr value of header `hid` (all its lines, in order) into `a`: True,
        # or False after the last; BadHeader for a value that does not parse. `c` starts
        # zeroed (k = -1: not started).
        cdef Hdr *h
        if c.k < 0:
            if self.first[hid] < 0:
                return False
            c.k = self.first[hid]
            c.i = self.hdrs[c.k].val_s
        while True:
            h = &self.hdrs[c.k]
            if h.hid == hid and c.i < h.val_e:
                c.i = parse_addr(self.p, c.i, h.val_e, a)
                if c.i < 0 or check_addr_uri(self.p, a) < 0:
                    raise BadHeader("Bad " + CANONICAL[hid] + " header")
                if c.i < h.val_e:
                    c.i += 1  # past the comma
                return True
            c.k += 1
            if c.k >= self.nhdr:
                return False
            c.i = self.hdrs[c.k].val_s

    cdef list _addr_list(self, int hid):
        cdef list out = []
        cdef AddrPos a
        cdef AddrCursor c = AddrCursor(-1, 0)
        while self._next_addr(hid, &c, &a):
            out.append(NameAddr.from_pos(self.p, &a))
        return out

    @property
    def contacts(self):
        """Contact values as NameAddr (RFC 3261 20.10); [] for `Contact: *` (see contact_star)."""
        if self.contact_star:
            return []
        return self._addr_list(H_CONTACT)

    @property
    def routes(self):
        """Route values, in order (RFC 3261 20.34)."""
        return self._addr_list(H_ROUTE)

    def route_hops(self, int n):
        """(count, hops): how many Route values the request carries, and the first `n` as
        (host, port, lr, r2) read from their URIs: what loose_route decides on, without a
        NameAddr, a URI and a params dict per Route (the same values as
        routes[i].parsed_uri's host, port, "lr"/"r2" in params). A hop whose URI does not
        parse is None. BadHeader, as `routes`, for a Route value that does not parse."""
        return self._route_hops(n)

    # route_hops(): the same for compiled callers that type the message (a C call)
    cdef tuple _route_hops(self, int n):
        cdef list hops = []
        cdef Py_ssize_t count = 0
        cdef AddrPos a
        cdef UriPos u
        cdef AddrCursor c = AddrCursor(-1, 0)
        cdef const unsigned char *p = self.p
        while self._next_addr(H_ROUTE, &c, &a):
            if count < n:
                if parse_uri_at(p, a.uri_s, a.uri_e, &u) < 0:
                    hops.append(None)
                else:
                    hops.append((_str(p, u.host_s, u.host_e), u.port,
                                 _uri_has_param(p, &u, b"lr", 2),
                                 _uri_has_param(p, &u, b"r2", 2)))
            count += 1
        return count, hops

    @property
    def record_routes(self):
        """Record-Route values, in order (RFC 3261 20.30)."""
        return self._addr_list(H_RECORD_ROUTE)

    @property
    def paths(self):
        """Path values (RFC 3327)."""
        return self._addr_list(H_PATH)

    @property
    def expires(self):
        """Expires header (RFC 3261 20.19): None when absent, -1 when not a valid delta."""
        v = self.header("expires")
        if v is None:
            return None
        return _delta(v.strip(), 0xFFFFFFFF, -1)

    @property
    def user_agent(self):
        return self._value(self.first[H_USER_AGENT]) if self.first[H_USER_AGENT] >= 0 else None

    def digest_credentials(self, str name="authorization"):
        """The first Authorization / Proxy-Authorization header as (scheme, {param: value})
        with quoted values unquoted (RFC 3261 22.4, RFC 7616); None when absent."""
        v = self.header(name)
        if v is None:
            return None
        return parse_auth_header(v)

    # ---- edits ----------------------------------------------------------------------------
    #
    # Each edit is a lump (start, end, data, kind) over the original buffer: INS puts data at
    # start (== end), REP replaces [start, end) (a zero-length REP still replaces: it is the
    # new text of a value that was empty). Reads keep showing the original message. When two
    # lumps overlap, the one recorded later wins, and an insertion inside a replaced span is
    # dropped with it (what it was attached to is gone): see _apply().

    def set_ruri(self, uri):
        """Rewrite the Request-URI (str or bytes)."""
        if not self.is_request:
            raise ValueError("not a request")
        b = _to_bytes(uri)
        if not b or b" " in b or b"\t" in b or b"\r" in b or b"\n" in b:
            raise ValueError("bad Request-URI")
        self.new_ruri = b
        self._uri = None
        self.edited = True

    def reset_ruri(self):
        self.new_ruri = None
        self._uri = None

    def add_top_via_params(self, str params):
        """Stamp parameters (e.g. ';received=1.2.3.4;rport=5060') on the top Via: what a
        server puts on a received request (RFC 3261 18.2.1, RFC 3581 4). They are written
        where Kamailio writes them: `rport` fills the Via's own rport parameter in place;
        `received` goes right after sent-by in the relayed request (serialize) and at the
        end of the Via in a reply built here (top_via_with_stamp, build_reply); anything
        else is appended. A later call replaces the stamp; an empty string removes it."""
        if self.first[H_VIA] < 0:
            raise ValueError("no Via")
        b = params.encode("utf-8", "surrogateescape")
        if b and (b[0] != 59 or b"\r" in b or b"\n" in b or b"," in b):
            raise ValueError("Via parameters must start with ';' and hold no ',' or line break")
        self.via_extra = b if b else None
        self.stamp_relay = self.stamp_reply = None
        self.stamp_received = self.stamp_rport = None  # any parameters: the general edits
        self.edited = True

    def stamp_source(self):
        """received/rport on the top Via from `src` (RFC 3261 18.2.1, RFC 3581 4): both
        when the Via asks for rport, else received when the sent-by host is not the source
        address. What the transport does to every request it takes in; a request without a
        Via is left alone."""
        return self._stamp_source()

    # stamp_source(): the same for compiled callers that type the message (a C call)
    cdef _stamp_source(self):
        if self.first[H_VIA] < 0:
            return
        ip, port = self.src
        cdef bytes ipb = (<str?>ip).encode("utf-8", "surrogateescape")
        cdef ViaPos *v = &self.topvia
        cdef char digits[32]
        cdef int n
        if v.has_rport:
            if not 0 <= <int?>port <= 65535:
                raise ValueError("source port out of range")
            memcpy(digits, b";rport=", 7)
            n = 7 + _decimal(digits + 7, <int>port)
            self.stamp_received = b";received=" + ipb
            self.stamp_rport = PyBytes_FromStringAndSize(digits, n)
            self.via_extra = self.stamp_received + self.stamp_rport
        elif not _via_host_is(self, ipb, False):
            self.via_extra = self.stamp_received = b";received=" + ipb
            self.stamp_rport = None
        else:
            return
        self.stamp_relay = self.stamp_reply = None
        self.edited = True

    def sent_by_is_source(self):
        """Whether the top Via's sent-by is where the request came from (`src`): its host,
        brackets and ASCII case aside, is the source address and its port (5060 when it has
        none) the source port. The registrar's NAT test (Kamailio's nat_uac_test 2 + 16) on
        the parsed offsets; True for a request without a Via (nothing says otherwise)."""
        if self.first[H_VIA] < 0:
            return True
        ip, port = self.src
        if (self.topvia.port or 5060) != <int?>port:
            return False
        return _via_host_is(self, (<str?>ip).encode("utf-8", "surrogateescape"), True)

    cdef int _lump(self, Py_ssize_t s, Py_ssize_t e, bytes data, int kind) except -1:
        if self.lumps is None:
            self.lumps = []
        self.lumps.append((s, e, data, kind))
        self.edited = True
        return len(self.lumps) - 1

    cdef object _key(self, str name):
        # lines added by edits are tracked per header: its id, else its lower-cased name
        cdef int hid = self._id_for(name)
        return hid if hid != H_OTHER else name.lower()

    cdef _track(self, key, int idx):
        if self.added is None:
            self.added = {}
        self.added.setdefault(key, []).append(idx)

    cdef int _cancel_added(self, key) except -1:
        if self.added is None:
            return 0
        idx = self.added.pop(key, None)
        if not idx:
            return 0
        for i in idx:
            self.lumps[i] = None
        return len(idx)

    cdef Py_ssize_t _headers_end(self):
        return self.hdrs[self.nhdr - 1].line_e if self.nhdr else self.hdr_s

    def insert_header(self, str name, value, bint before_via=False):
        """Add `name: value` as the first header line (before the first Via with
        before_via=True, which is where a proxy puts its own Via)."""
        cdef Py_ssize_t pos = self.hdr_s
        if before_via and self.first[H_VIA] >= 0:
            pos = self.hdrs[self.first[H_VIA]].line_s
        self._track(self._key(name), self._lump(pos, pos, _line(name, value), INS))

    def append_header(self, str name, value):
        """Add `name: value` after the last header."""
        cdef Py_ssize_t pos = self._headers_end()
        self._track(self._key(name), self._lump(pos, pos, _line(name, value), INS))

    def remove_header(self, str name):
        """Remove every line of header `name`, lines added by earlier edits included;
        returns how many lines."""
        idx = self._indexes(name)
        for k in idx:
            self._lump(self.hdrs[k].line_s, self.hdrs[k].line_e, b"", REP)
        return len(idx) + self._cancel_added(self._key(name))

    def replace_header(self, str name, value):
        """Give header `name` the value `value`: its first line keeps its place and every
        further line goes (lines added by earlier edits included). When the message has no
        such header it is added after the last one; calling again rewrites that line."""
        self._set(name, _value_bytes(value), False)

    cdef _set(self, str name, bytes v, bint at_top):
        cdef int k
        cdef Py_ssize_t pos
        key = self._key(name)
        idx = self._indexes(name)
        if idx:
            k = idx[0]
            self._lump(self.hdrs[k].val_s, self.hdrs[k].val_e, v, REP)
            for k in idx[1:]:
                self._lump(self.hdrs[k].line_s, self.hdrs[k].line_e, b"", REP)
            self._cancel_added(key)
            return
        added = self.added.get(key) if self.added is not None else None
        if added:
            # an earlier edit added the header: rewrite that line in place, drop the others
            pos = self.lumps[added[0]][0]
            self.lumps[added[0]] = (pos, pos, _line(name, v), INS)
            for i in added[1:]:
                self.lumps[i] = None
            del added[1:]
            return
        pos = self.hdr_s if at_top else self._headers_end()
        self._track(key, self._lump(pos, pos, _line(name, v), INS))

    def set_max_forwards(self, int n):
        """Set Max-Forwards to n, 0..255 (RFC 3261 20.22); inserted first when absent."""
        if not 0 <= n <= 255:
            raise ValueError("Max-Forwards must be 0..255")
        self._set("Max-Forwards", str(n).encode(), True)

    def process_maxfwd(self, int default, int limit):
        """Kamailio's mf_process_maxfwd_header(default) (RFC 3261 16.6 step 3): an absent
        Max-Forwards is inserted with `default`, a present one decremented and capped at
        `limit`. 1: the request may go on; -1: Max-Forwards is 0 or not a number (483)."""
        cdef int mf = self.max_forwards_value
        cdef int n
        cdef Hdr *h
        if mf == -1:
            self.set_max_forwards(min(default, 255))
            return 1
        if mf <= 0:  # 0, or -2: not a number
            return -1
        n = min(mf - 1, limit)
        if n < 0:
            n = 0
        if n > 255:
            n = 255
        if self.counts[H_MAX_FORWARDS] == 1 and self.added is None:
            # the common case: one line as received, its value replaced
            h = &self.hdrs[self.first[H_MAX_FORWARDS]]
            self._lump(h.val_s, h.val_e, <bytes>_SMALL_NUMBERS[n], REP)
        else:
            self.set_max_forwards(n)
        return 1

    def remove_top_route(self):
        """Remove the first Route value (the whole line when it was the line's last value).
        Each call removes the next one: a proxy that finds its own address twice (double
        Record-Route) calls it twice."""
        self._remove_first_value(H_ROUTE)

    def remove_top_via(self):
        """Remove the first Via value: what a proxy does to a reply before sending it on."""
        self._remove_first_value(H_VIA)

    # the two for compiled callers that type the message (a C call)
    cdef _remove_top_route(self):
        self._remove_first_value(H_ROUTE)

    cdef _remove_top_via(self):
        self._remove_first_value(H_VIA)

    cdef _remove_first_value(self, int hid):
        cdef int k, skip = self.removed_via if hid == H_VIA else self.removed_route
        cdef Py_ssize_t i, e, nxt, after
        cdef AddrPos a
        cdef ViaPos v
        if self.first[hid] >= 0:
            for k in range(self.first[hid], self.nhdr):
                if self.hdrs[k].hid != hid:
                    continue
                i = self.hdrs[k].val_s
                e = self.hdrs[k].val_e
                while i < e:
                    if hid == H_VIA:
                        nxt = parse_via(self.p, i, e, &v)
                    else:
                        nxt = parse_addr(self.p, i, e, &a)
                    if nxt < 0:
                        raise BadHeader("Bad " + CANONICAL[hid] + " header")
                    after = skip_lws(self.p, nxt + 1, e) if nxt < e else e
                    if skip == 0:
                        if after >= e:
                            # the line's last value (earlier ones already gone): the line goes
                            self._lump(self.hdrs[k].line_s, self.hdrs[k].line_e, b"", REP)
                        else:
                            # "value ," and the whitespace after the comma
                            self._lump(i, after, b"", REP)
                        if hid == H_VIA:
                            self.removed_via += 1
                        else:
                            self.removed_route += 1
                        return
                    skip -= 1
                    i = after
        raise ValueError("no " + CANONICAL[hid] + " header")

    def record_route(self, value):
        """Record-Route `value` (the proxy's own) as the first header line of what
        serialize() writes; `serialize(rr=...)` writes other lines in its place for one
        branch (two Record-Routes when the branch leaves by another socket)."""
        self.rr_line = b"Record-Route: " + _value_bytes(value) + b"\r\n"
        self.rr_added = True
        self.edited = True

    def serialize(self, via=None, rr=None):
        """The message with every recorded edit applied, built in one pass. `via`, when
        given, is written as an extra top Via (a proxy's per-branch Via) without being
        recorded, so one request can be serialised once per branch; `rr`, when given, the
        Record-Route line(s) in place of record_route()'s, for this branch alone (bytes,
        whole lines with their CRLF: the proxy's own, never a header value). An edited
        message also loses the defects a liberal parse let through: a request line with
        runs of whitespace is written with single SPs, a header section cut short by the
        end of the datagram gets its line end and empty line."""
        return self._serialize(via, rr)

    # serialize(): the same for compiled callers that type the message (a C call)
    cdef bytes _serialize(self, via=None, rr=None):
        cdef list edits = []
        cdef Py_ssize_t pos, derived
        cdef bytes vb
        if via is None and not self.edited:
            return self.raw
        # derived edits first: they lose to any recorded edit they overlap
        if self.via_extra is not None:
            if self.stamp_relay is None:
                self.stamp_relay = self._stamp_edits(True)
            edits.extend(self.stamp_relay)
        derived = len(edits)
        if rr is None:
            rr = self.rr_line
        if rr is not None:
            edits.append((self.hdr_s, self.hdr_s, <bytes?>rr, INS))
        if self.lumps is not None:
            edits.extend(self.lumps)
        if self.sl_loose:
            edits.append((0, self.sl_e, b" ".join((
                self.buf[self.m_s:self.m_e],
                self.new_ruri if self.new_ruri is not None else self.buf[self.ruri_s:self.ruri_e],
                self.buf[self.ver_s:self.ver_e])), REP))
        elif self.new_ruri is not None:
            edits.append((self.ruri_s, self.ruri_e, self.new_ruri, REP))
        if via is not None:
            vb = _value_bytes(via)
            pos = self.hdrs[self.first[H_VIA]].line_s if self.first[H_VIA] >= 0 else self.hdr_s
            edits.append((pos, pos, b"Via: " + vb + b"\r\n", INS))
        if self.no_blank:
            return self._close_headers(edits, derived)
        return _apply(self.buf, self.end, edits)

    cdef bytes _close_headers(self, list edits, Py_ssize_t derived):
        # The datagram ended inside the header section (so the body is empty). Lines added at
        # its end must start on a line of their own, whatever became of the last line, and
        # the section gets its empty line.
        cdef list head = edits[:derived], tail = []
        for t in edits[derived:]:
            if t is not None and t[3] == INS and t[0] == self.end:
                tail.append(t[2])
            else:
                head.append(t)
        out = _apply(self.buf, self.end, head)
        if not out.endswith(b"\n"):
            out += b"\n" if out.endswith(b"\r") else b"\r\n"
        return out + b"".join(tail) + b"\r\n"

    cdef list _stamp_edits(self, bint relay):
        # the edits that write via_extra into the top Via (see add_top_via_params)
        cdef list out = [], tail = []
        cdef ViaPos *v = &self.topvia
        if self.stamp_received is not None:  # stamp_source's: what the loop below makes of it
            if self.stamp_rport is not None:
                out.append((v.rport_p, v.rport_e, self.stamp_rport, REP))
            if relay:
                out.append((v.params_s, v.params_s, self.stamp_received, INS))
            else:
                out.append((v.e, v.e, self.stamp_received, INS))
            return out
        received = None
        for part in self.via_extra.split(b";")[1:]:
            name = part.partition(b"=")[0].strip().lower()
            if name == b"rport" and v.has_rport:
                out.append((v.rport_p, v.rport_e, b";" + part, REP))
            elif name == b"received" and received is None:
                received = b";" + part
            else:
                tail.append(b";" + part)
        if received is not None:
            if relay:
                out.append((v.params_s, v.params_s, received, INS))
            else:
                tail.insert(0, received)
        if tail:
            out.append((v.e, v.e, b"".join(tail), INS))
        return out

    def top_via_with_stamp(self):
        """The top Via line's value including a recorded received/rport stamp, as a reply
        built here carries it (RFC 3261 8.2.6.2, 18.2.1): rport filled in, received last."""
        if self.first[H_VIA] < 0:
            return None
        cdef Hdr *h = &self.hdrs[self.first[H_VIA]]
        if self.via_extra is None:
            return self.buf[h.val_s:h.val_e]
        if self.stamp_received is not None:
            return self._via_with_source_stamp(h)
        if self.stamp_reply is None:
            self.stamp_reply = self._stamp_edits(False)
        return _apply(self.buf, h.val_e, self.stamp_reply)[h.val_s:]

    cdef bytes _via_with_source_stamp(self, Hdr *h):
        # top_via_with_stamp for stamp_source's stamp, in one copy: the rport parameter
        # filled in, received at the end of the top via-parm (_stamp_edits(False), direct)
        cdef ViaPos *v = &self.topvia
        cdef const char *b = <const char *>self.p
        cdef bytes rcv = self.stamp_received, rp = self.stamp_rport
        cdef Py_ssize_t cut = v.rport_p if rp is not None else v.e
        cdef Py_ssize_t resume = v.rport_e if rp is not None else v.e
        cdef Py_ssize_t nr = len(rcv), np = len(rp) if rp is not None else 0
        cdef Py_ssize_t pos
        cdef bytes out = PyBytes_FromStringAndSize(
            NULL, (h.val_e - h.val_s) - (resume - cut) + np + nr)
        cdef char *o = PyBytes_AS_STRING(out)
        pos = _put(o, 0, b + h.val_s, cut - h.val_s)
        if rp is not None:
            pos = _put(o, pos, PyBytes_AS_STRING(rp), np)
            pos = _put(o, pos, b + resume, v.e - resume)
        pos = _put(o, pos, PyBytes_AS_STRING(rcv), nr)
        _put(o, pos, b + v.e, h.val_e - v.e)
        return out

    def server_key(self, method=None):
        """The key of the server transaction this request belongs to (RFC 3261 17.2.3):
        top branch, sent-by (host lower-cased) and method class (ACK counts as INVITE;
        `method` overrides it), as bytes; None when the branch is not an RFC 3261 one (no
        z9hG4bK cookie: kampx/tm/keys.py keys it by the RFC 2543 fields)."""
        cdef ViaPos *v = &self.topvia
        cdef const unsigned char *p = self.p
        cdef Py_ssize_t bn, hn, mn, k, pos
        cdef bytes m, out
        cdef char portbuf[8]
        cdef int pn, port
        cdef char *o
        if self.first[H_VIA] < 0 or v.branch_s < 0:
            return None
        bn = v.branch_e - v.branch_s
        if bn <= 7 or memcmp(p + v.branch_s, b"z9hG4bK", 7) != 0:
            return None
        if method is None:
            if self.is_request and self.method_id:
                m = _METHOD_BYTES[M_INVITE if self.method_id == M_ACK else self.method_id]
            else:
                m = (<str>self.method).encode("utf-8", "surrogateescape")
        else:
            m = (<str?>method).encode("utf-8", "surrogateescape")
        port = v.port
        pn = 0
        while True:  # the port's digits, backwards
            portbuf[pn] = 48 + port % 10
            pn += 1
            port //= 10
            if port == 0 or pn == 8:
                break
        hn = v.host_e - v.host_s
        mn = len(m)
        out = PyBytes_FromStringAndSize(NULL, bn + 1 + hn + 1 + pn + 1 + mn)
        o = PyBytes_AS_STRING(out)
        memcpy(o, p + v.branch_s, bn)
        pos = bn
        o[pos] = 0
        pos += 1
        for k in range(hn):
            o[pos + k] = LOWER[p[v.host_s + k]]
        pos += hn
        o[pos] = 58  # ":"
        pos += 1
        for k in range(pn):
            o[pos + k] = portbuf[pn - 1 - k]
        pos += pn
        o[pos] = 0
        pos += 1
        memcpy(o + pos, PyBytes_AS_STRING(m), mn)
        return out

    def dialog_key(self, bint callee=False):
        """Call-ID, NUL, the From tag (the To tag with `callee`) as bytes: the key of the
        dialog this message belongs to in the dialog index (kampx/dialog.py's `key`, which
        this equals; an absent Call-ID or tag counts as empty)."""
        return self._dialog_key(callee)

    # dialog_key(): the same for compiled callers that type the message (a C call)
    cdef bytes _dialog_key(self, bint callee=False):
        cdef Py_ssize_t cs = 0, ce = 0, ts = 0, te = 0
        cdef AddrPos *a = &self.to_a if callee else &self.from_a
        cdef int k = self.first[H_CALL_ID]
        cdef int hk = self.first[H_TO] if callee else self.first[H_FROM]
        cdef bytes out
        cdef char *o
        if k >= 0:
            if self.hdrs[k].folded:  # the value as the call_id view gives it
                tag = (self.to_tag if callee else self.from_tag) or ""
                return f"{self.call_id}\0{tag}".encode("utf-8", "surrogateescape")
            cs, ce = self.hdrs[k].val_s, self.hdrs[k].val_e
        if hk >= 0 and a.tag_s >= 0:
            ts, te = a.tag_s, a.tag_e
        out = PyBytes_FromStringAndSize(NULL, (ce - cs) + 1 + (te - ts))
        o = PyBytes_AS_STRING(out)
        memcpy(o, self.p + cs, ce - cs)
        o[ce - cs] = 0
        memcpy(o + (ce - cs) + 1, self.p + ts, te - ts)
        return out

    def sl_tag(self, str prefix):
        """The To-tag of a stateless reply to this request: `prefix`, '.', 8 hex of a hash
        of Call-ID, From tag and top branch, so a retransmission gets the same tag without
        any state (what Kamailio's sl does with a CRC)."""
        return self._sl_tag(prefix)

    # sl_tag(): the same for compiled callers that type the message (a C call)
    cdef str _sl_tag(self, str prefix):
        cdef uint32_t h = 2166136261u  # FNV-1a, 32 bits
        cdef Py_ssize_t s, e, k
        cdef int part
        cdef const unsigned char *p = self.p
        cdef Hdr *hd
        for part in range(3):
            s = e = -1
            if part == 0 and self.first[H_CALL_ID] >= 0:
                hd = &self.hdrs[self.first[H_CALL_ID]]
                s, e = hd.val_s, hd.val_e
            elif part == 1 and self.from_a.tag_s >= 0:
                s, e = self.from_a.tag_s, self.from_a.tag_e
            elif part == 2 and self.first[H_VIA] >= 0 and self.topvia.branch_s >= 0:
                s, e = self.topvia.branch_s, self.topvia.branch_e
            for k in range(s, e):
                h = (h ^ p[k]) * 16777619u
            h = (h ^ (0x100 if s < 0 else 0)) * 16777619u  # absent and empty differ
            h = (h ^ 0) * 16777619u
        return f"{prefix}.{h:08x}"

    def header_lines(self, str name):
        """The raw header lines (bytes, with their line ends) of `name`, for copying into a
        reply exactly as received (RFC 3261 8.2.6.2)."""
        return [self.buf[self.hdrs[k].line_s:self.hdrs[k].line_e] for k in self._indexes(name)]


cdef bytes _to_bytes(x):
    if type(x) is bytes:  # immutable: no copy
        return <bytes>x
    if isinstance(x, str):
        return (<str>x).encode("utf-8", "surrogateescape")
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError(f"expected str or bytes, not {type(x).__name__}")


cdef bytes _value_bytes(value):
    cdef bytes v = _to_bytes(value)
    if b"\r" in v or b"\n" in v:
        raise ValueError("header values may not contain line breaks")
    return v


cdef bytes _token_bytes(x):
    cdef bytes n = _to_bytes(x)
    cdef Py_ssize_t k
    if not n:
        raise ValueError("empty token")
    for k in range(len(n)):
        if not TOKEN[<unsigned char>n[k]]:
            raise ValueError(f"not a token (RFC 3261 25.1): {x!r}")
    return n


cdef bytes _line(str name, value):
    return _token_bytes(name) + b": " + _value_bytes(value) + b"\r\n"


cdef struct Edit:
    Py_ssize_t s, e
    Py_ssize_t order                  # recording order: the later edit wins an overlap
    int kind
    bint keep
    const char *data
    Py_ssize_t n


cdef inline bint _before(Edit *a, Edit *b) noexcept nogil:
    if a.s != b.s:
        return a.s < b.s
    if a.e != b.e:
        return a.e < b.e              # insertions before a replacement at the same offset
    return a.order < b.order          # insertions at one offset keep their recording order


cdef bytes _apply(bytes buf, Py_ssize_t end, list edits):
    """Apply the (start, end, data, kind) edits (None entries skipped) to buf[:end] with one
    allocation. Overlaps are resolved by recording order (see the edits section)."""
    cdef Py_ssize_t count = len(edits), m = 0, i, j, last, total, pos, n
    cdef Edit stack[16]
    cdef Edit *ed = stack
    cdef Edit tmp
    cdef char *out
    cdef const char *src = PyBytes_AS_STRING(buf)
    cdef bytes data
    if count > 16:
        ed = <Edit *>PyMem_Malloc(count * sizeof(Edit))
        if ed == NULL:
            raise MemoryError()
    try:
        for i in range(count):
            t = edits[i]
            if t is None:
                continue
            data = t[2]
            ed[m].s = t[0]
            ed[m].e = t[1]
            ed[m].kind = t[3]
            ed[m].order = i
            ed[m].keep = True
            ed[m].data = PyBytes_AS_STRING(data)
            ed[m].n = PyBytes_GET_SIZE(data)
            if not 0 <= ed[m].s <= ed[m].e <= end:
                raise ValueError("edit outside the message")
            m += 1
        # insertion sort: a handful of edits, mostly recorded in order already
        for i in range(1, m):
            tmp = ed[i]
            j = i - 1
            while j >= 0 and _before(&tmp, &ed[j]):
                ed[j + 1] = ed[j]
                j -= 1
            ed[j + 1] = tmp
        # kept edits never overlap, so only the last kept replacement can meet the next edit
        last = -1
        total = end
        for i in range(m):
            if last >= 0 and (ed[i].s < ed[last].e or
                              (ed[i].kind == REP and ed[i].e == ed[i].s and
                               ed[last].s == ed[last].e and ed[last].s == ed[i].s)):
                if ed[i].kind == INS or ed[i].order < ed[last].order:
                    ed[i].keep = False
                    continue
                ed[last].keep = False
                total -= ed[last].n - (ed[last].e - ed[last].s)
            if ed[i].kind == REP:
                last = i
            total += ed[i].n - (ed[i].e - ed[i].s)
        result = PyBytes_FromStringAndSize(NULL, total)
        out = PyBytes_AS_STRING(result)
        n = 0
        pos = 0
        for i in range(m):
            if not ed[i].keep:
                continue
            memcpy(out + n, src + pos, ed[i].s - pos)
            n += ed[i].s - pos
            memcpy(out + n, ed[i].data, ed[i].n)
            n += ed[i].n
            pos = ed[i].e
        memcpy(out + n, src + pos, end - pos)
        return result
    finally:
        if ed != stack:
            PyMem_Free(ed)


def split_commas(str value):
    """Split a header value on commas outside quoted strings and <...> (RFC 3261 7.3.1)."""
    cdef list out = []
    cdef Py_ssize_t i, start = 0, n = len(value)
    cdef bint inq = False, inb = False
    cdef Py_UCS4 c
    i = 0
    while i < n:
        c = value[i]
        if inq:
            if c == u'\\':
                i += 1
            elif c == u'"':
                inq = False
        elif c == u'"':
            inq = True
        elif c == u'<':
            inb = True
        elif c == u'>':
            inb = False
        elif c == u',' and not inb:
            part = value[start:i].strip()
            if part:
                out.append(part)
            start = i + 1
        i += 1
    part = value[start:].strip()
    if part:
        out.append(part)
    return out


def parse_auth_header(str value):
    """Digest credentials or challenge (RFC 3261 22.4, RFC 7616 3.4): returns
    (scheme, {lower-cased param: value}) with quoted values unquoted. SipParseError when
    the parameter list is malformed."""
    params = {}
    scheme = _scan_auth(value, params, None, None)
    return scheme, params


def auth_fields(str value, tuple names):
    """parse_auth_header for a caller that wants only `names` (lower-case ASCII; any other
    name matches nothing): returns (scheme, [value or None per name]), the last one when a
    name repeats, as the dict keeps it. The same grammar and errors; no dict and no string for the other params
    (the digest check: kampx/auth/_digest.pyx)."""
    cdef list found = [None] * len(names)
    scheme = _scan_auth(value, None, names, found)
    return scheme, found


ctypedef fused ucs_t:  # a str's buffer, one of its three kinds (PEP 393)
    uint8_t
    uint16_t
    uint32_t


cdef inline bint _name_is(const ucs_t *d, Py_ssize_t i, Py_ssize_t j, str want):
    """The name at [i, j), ASCII case aside, is `want` (lower-case ASCII)."""
    cdef Py_ssize_t k, n = j - i
    cdef const uint8_t *w
    cdef uint32_t c
    if n != PyUnicode_GET_LENGTH(want) or not PyUnicode_IS_ASCII(want):
        return False
    w = <const uint8_t *>PyUnicode_DATA(want)
    for k in range(n):
        c = d[i + k]
        if 65 <= c <= 90:  # A-Z
            c += 32
        if c != w[k]:
            return False
    return True


cdef str _scan_auth(str value, dict params, tuple names, list found):
    """The scheme of an auth header value; its params go into `params` (lower-cased
    names) or, with `names`, into `found` (the value at the name's index)."""
    cdef str v = _collapse(value).strip(" \t")
    cdef int kind = PyUnicode_KIND(v)
    cdef void *d = PyUnicode_DATA(v)
    # the scan reads the string's own buffer, typed by its kind: a C load per character
    # (Cython's str indexing made each one a call: parse_auth_header 19.7k -> 14.4k
    # instructions for a REGISTER's credentials)
    if kind == 1:
        return _scan_auth_in(v, <const uint8_t *>d, params, names, found)
    if kind == 2:
        return _scan_auth_in(v, <const uint16_t *>d, params, names, found)
    return _scan_auth_in(v, <const uint32_t *>d, params, names, found)


cdef str _scan_auth_in(str v, const ucs_t *d, dict params, tuple names, list found):
    cdef Py_ssize_t n = len(v), sp = 0, i, j, k, e, nm_s, nm_e, w
    cdef Py_UCS4 c
    while sp < n:
        c = d[sp]
        if c == u" " or c == u"\t":
            break
        sp += 1
    i = sp
    while i < n:
        c = d[i]
        if c == u" " or c == u"," or c == u"\t":
            i += 1
            continue
        j = i
        while j < n:
            c = d[j]
            if c == u"=" or c == u" " or c == u"," or c == u"\t":
                break
            j += 1
        if j == i:
            raise BadCredentials("Bad credentials")
        nm_s, nm_e = i, j
        while j < n and _blank(d[j]):
            j += 1
        if j >= n or d[j] != u"=":
            raise BadCredentials("Bad credentials")
        j += 1
        while j < n and _blank(d[j]):
            j += 1
        val = None  # sliced below, only when kept
        if j < n and d[j] == u'"':
            j += 1
            k = j
            while j < n:
                c = d[j]
                if c == u'"' or c == u"\\":
                    break
                j += 1
            if j < n and d[j] == u"\\":  # an escape: unquote character by character
                buf = [v[k:j]]
                while j < n and d[j] != u'"':
                    if d[j] == u"\\" and j + 1 < n:
                        j += 1
                    buf.append(v[j])
                    j += 1
                val = "".join(buf)
            if j >= n:
                raise BadCredentials("Bad credentials")
            j += 1
            e = j - 1
        else:
            k = j
            while j < n:
                c = d[j]
                if c == u" " or c == u"," or c == u"\t":
                    break
                j += 1
            e = j
        if names is None:
            params[v[nm_s:nm_e].lower()] = val if val is not None else v[k:e]
        else:
            for w in range(len(names)):
                if _name_is(d, nm_s, nm_e, <str?>names[w]):
                    found[w] = val if val is not None else v[k:e]
                    break
        i = j
    return v[:sp]


cdef inline bint _blank(Py_UCS4 c) noexcept nogil:
    return c == u" " or c == u"\t"


# -- the parser -------------------------------------------------------------------------------

cdef inline Py_ssize_t find_eol(const unsigned char *p, Py_ssize_t i, Py_ssize_t e) noexcept nogil:
    """Index of the LF ending the line that starts at i, or e."""
    cdef const void *q = memchr(p + i, 10, e - i)
    if q == NULL:
        return e
    return <const unsigned char *>q - p


cdef Py_ssize_t scan_version(const unsigned char *p, Py_ssize_t i, Py_ssize_t e) noexcept nogil:
    """SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT (RFC 3261 25.1; "SIP" in any case, 7.1).
    Returns the index after it, or -1."""
    cdef Py_ssize_t j
    if e - i < 7 or LOWER[p[i]] != 115 or LOWER[p[i + 1]] != 105 or LOWER[p[i + 2]] != 112 \
            or p[i + 3] != 47:
        return -1
    i += 4
    j = i
    while i < e and is_digit(p[i]):
        i += 1
    if i == j or i >= e or p[i] != 46:
        return -1
    i += 1
    j = i
    while i < e and is_digit(p[i]):
        i += 1
    return i if i > j else -1


cdef int parse_start_line(Message m, const unsigned char *p, Py_ssize_t e) except -1:
    cdef Py_ssize_t eol = find_eol(p, 0, e)
    cdef Py_ssize_t le = eol, i, j, code_s
    cdef int code
    if eol >= e:
        raise BadFraming("Bad start line")
    if le > 0 and p[le - 1] == 13:
        le -= 1
    m.hdr_s = eol + 1
    if le >= 4 and LOWER[p[0]] == 115 and LOWER[p[1]] == 105 and LOWER[p[2]] == 112 \
            and p[3] == 47:
        # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
        m.is_request = False
        i = scan_version(p, 0, le)
        if i < 0 or i >= le or p[i] != 32:
            raise BadFraming("Bad status line")
        m.ver_s = 0
        m.ver_e = i
        i += 1
        code_s = i
        code = 0
        while i < le and is_digit(p[i]):
            code = code * 10 + (p[i] - 48)
            i += 1
            if i - code_s > 3:
                raise BadFraming("Bad status code")
        if i - code_s != 3 or code < 100 or code > 699:
            raise BadFraming("Bad status code")
        m.status = code
        m.sl_e = le
        if i < le:
            if p[i] != 32:
                raise BadFraming("Bad status line")
            i += 1
        m.reason_s = i
        m.reason_e = le
        return 0
    # Request-Line = Method SP Request-URI SP SIP-Version CRLF (runs of SP tolerated)
    m.is_request = True
    i = scan_token(p, 0, le)
    if i == 0 or i >= le or not is_ws(p[i]):
        raise BadFraming("Bad request line")
    m.m_s = 0
    m.m_e = i
    m.method_id = _METHOD_IDS.get(_str(p, 0, i), M_OTHER) if i <= 9 else M_OTHER
    while i < le and is_ws(p[i]):
        i += 1
    j = i
    while j < le and not is_ws(p[j]):
        j += 1
    m.ruri_s = i
    m.ruri_e = j
    if j == i:
        raise BadFraming("Bad request line")
    while j < le and is_ws(p[j]):
        j += 1
    m.ver_s = j
    while j < le and not is_ws(p[j]):
        j += 1
    m.ver_e = j
    while j < le and is_ws(p[j]):
        j += 1
    if j != le or scan_version(p, m.ver_s, m.ver_e) != m.ver_e:
        raise BadFraming("Bad request line")
    if parse_uri_at(p, m.ruri_s, m.ruri_e, &m.ruri_pos) < 0:
        raise BadUri("Bad Request URI")
    m.sl_e = le
    # tolerated above: runs of SP/HT between the elements and after the version (RFC 4475
    # 3.1.2.9, 3.1.2.10); an edited message is written with single SPs
    m.sl_loose = not (p[m.m_e] == 32 and m.ruri_s == m.m_e + 1 and p[m.ruri_e] == 32
                      and m.ver_s == m.ruri_e + 1 and m.ver_e == le)
    if m.ruri_pos.kind in (1, 2) and m.ruri_pos.headers_s < m.ruri_pos.headers_e:
        # RFC 3261 19.1.5: headers are not allowed in a Request-URI (RFC 4475 3.1.2.11)
        raise BadUri("Bad Request URI")
    return 0


cdef int add_header(Message m, Py_ssize_t ns, Py_ssize_t ne, Py_ssize_t vs, Py_ssize_t ve,
                    Py_ssize_t ls, Py_ssize_t le, bint folded) except -1:
    cdef Hdr *h
    cdef int hid
    if m.nhdr == m.cap:
        if m.cap >= MAX_HEADERS:
            raise TooLarge("Too many headers")
        m.cap = m.cap * 4 if m.cap * 4 <= MAX_HEADERS else MAX_HEADERS
        h = <Hdr *>PyMem_Realloc(m.hdrs, m.cap * sizeof(Hdr))
        if h == NULL:
            raise MemoryError()
        m.hdrs = h
    hid = header_id(m.p, ns, ne)
    h = &m.hdrs[m.nhdr]
    h.name_s = ns
    h.name_e = ne
    h.val_s = vs
    h.val_e = ve
    h.line_s = ls
    h.line_e = le
    h.hid = hid
    h.folded = folded
    if m.first[hid] < 0:
        m.first[hid] = m.nhdr
    m.counts[hid] += 1
    m.nhdr += 1
    return 0


cdef int parse_headers(Message m, const unsigned char *p, Py_ssize_t e) except -1:
    """Header lines up to the empty line; folding (a line starting with SP/HT continues the
    previous header, RFC 3261 7.3.1). Sets m.body_s."""
    cdef Py_ssize_t i = m.hdr_s, ls, ns, ne, vs, ve, eol, j
    cdef bint folded
    while True:
        if i >= e:
            # no empty line before the end of the datagram: liberal, the headers end here
            # (RFC 4475 3.1.2.15's archive file); an edited message gets the missing ends
            m.body_s = e
            m.no_blank = True
            return 0
        if p[i] == 13 and i + 1 < e and p[i + 1] == 10:
            m.body_s = i + 2
            return 0
        if p[i] == 10:
            m.body_s = i + 1
            return 0
        if is_ws(p[i]):
            raise BadHeader("Bad header folding")
        ls = i
        ns = i
        ne = scan_token(p, i, e)
        if ne == ns:
            raise BadHeader("Bad header name")
        i = ne
        while i < e and is_ws(p[i]):
            i += 1
        if i >= e or p[i] != 58:
            raise BadHeader("Bad header line")
        i += 1
        # the value: this line plus folded continuation lines
        folded = False
        vs = skip_lws(p, i, e)
        if vs > i and vs <= e:
            # leading LWS may itself have crossed a fold ("TO :\r\n sip:...")
            for j in range(i, vs):
                if p[j] == 10:
                    folded = True
                    break
        eol = find_eol(p, vs, e)
        while eol + 1 < e and is_ws(p[eol + 1]):
            folded = True
            eol = find_eol(p, eol + 1, e)
        ve = eol
        while ve > vs and (p[ve - 1] == 13 or p[ve - 1] == 10 or is_ws(p[ve - 1])):
            ve -= 1
        if vs > ve:
            vs = ve
        i = eol + 1 if eol < e else e
        add_header(m, ns, ne, vs, ve, ls, i, folded)


cdef int validate(Message m, const unsigned char *p) except -1:
    """The headers a proxy acts on: Via, From, To, Contact, CSeq, Content-Length,
    Max-Forwards. Errors name the header, for the 400's reason phrase."""
    cdef int k, hid
    cdef Hdr *h
    cdef Py_ssize_t i, e, j, s
    cdef ViaPos v
    cdef AddrPos a
    cdef unsigned long long n
    cdef long long cl
    cdef int mf
    cdef bint first_via = True
    m.clen = -1
    m.max_forwards_value = -1
    m.contact_star = 0
    for k in range(m.nhdr):
        h = &m.hdrs[k]
        hid = h.hid
        i = h.val_s
        e = h.val_e
        if hid == H_VIA:
            if i >= e:
                raise BadFraming("Bad Via header")
            while i < e:
                if first_via:
                    i = parse_via(p, i, e, &m.topvia)
                    first_via = False
                else:
                    i = parse_via(p, i, e, &v)
                if i < 0:
                    raise BadFraming("Bad Via header")
                if i < e:
                    i += 1
                    if skip_lws(p, i, e) >= e:
                        raise BadFraming("Bad Via header")
        elif hid == H_FROM or hid == H_TO:
            j = parse_addr(p, i, e, &a)
            if j != e or check_addr_uri(p, &a) < 0:
                raise BadHeader("Bad " + CANONICAL[hid] + " header")
            if m.first[hid] == k:
                if hid == H_FROM:
                    m.from_a = a
                else:
                    m.to_a = a
        elif hid == H_CONTACT:
            j = skip_lws(p, i, e)
            if j < e and p[j] == 42 and skip_lws(p, j + 1, e) == e:
                m.contact_star = 1
                continue
            if i >= e:
                raise BadHeader("Bad Contact header")
            while i < e:
                i = parse_addr(p, i, e, &a)
                if i < 0 or check_addr_uri(p, &a) < 0:
                    raise BadHeader("Bad Contact header")
                if i < e:
                    i += 1
                    if skip_lws(p, i, e) >= e:     # a ',' with nothing after it
                        raise BadHeader("Bad Contact header")
        elif hid == H_CSEQ:
            s = skip_lws(p, i, e)
            j = s
            n = 0
            while j < e and is_digit(p[j]):
                n = n * 10 + (p[j] - 48)
                if n > 0xFFFFFFFF:
                    raise BadHeader("CSeq number is illegal")
                j += 1
            if j == s or (j < e and not (is_ws(p[j]) or p[j] == 13 or p[j] == 10)):
                # "1a INVITE": the number is what is wrong (Kamailio's sanity reason)
                raise BadHeader("CSeq number is illegal")
            i = skip_lws(p, j, e)
            if i == j or i >= e:
                raise BadHeader("Bad CSeq header")
            j = scan_token(p, i, e)
            if j != e or j == i:
                raise BadHeader("Bad CSeq header")
            if m.first[H_CSEQ] == k:
                m.cseq_num = n
                m.cseq_m_s = i
                m.cseq_m_e = j
        elif hid == H_CONTENT_LENGTH:
            if i >= e:
                raise BadHeader("Bad Content-Length header")
            cl = 0
            for j in range(i, e):
                if not is_digit(p[j]):
                    raise BadHeader("Bad Content-Length header")
                cl = cl * 10 + (p[j] - 48)
                if cl > MAX_MESSAGE:
                    raise BadHeader("Content-Length mis-match")
            if m.clen >= 0 and m.clen != cl:
                raise BadHeader("Content-Length mis-match")
            m.clen = cl
        elif hid == H_MAX_FORWARDS:
            if m.first[H_MAX_FORWARDS] == k:
                mf = 0
                if i >= e:
                    mf = -2
                for j in range(i, e):
                    if not is_digit(p[j]):
                        mf = -2
                        break
                    mf = mf * 10 + (p[j] - 48)
                    if mf > 65535:
                        # Kamailio reads it as a 16-bit number: anything up to 65535 is a
                        # value (its maxfwd module then caps what goes out), beyond is an error
                        mf = -2
                        break
                m.max_forwards_value = mf
    return 0


def parse(data):
    """Parse one datagram (bytes) into a Message. Raises SipParseError."""
    cdef bytes buf = data if type(data) is bytes else bytes(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Message m
    cdef const unsigned char *p
    if n == 0:
        raise BadFraming("Empty message")
    if n > MAX_MESSAGE:
        raise TooLarge("Message too large")
    m = Message.__new__(Message)
    m.buf = buf
    p = <const unsigned char *>PyBytes_AS_STRING(buf)
    m.p = p
    m.cap = INITIAL_HEADERS
    m.hdrs = <Hdr *>PyMem_Malloc(m.cap * sizeof(Hdr))
    if m.hdrs == NULL:
        raise MemoryError()
    parse_start_line(m, p, n)
    parse_headers(m, p, n)
    validate(m, p)
    m.has_to_tag = m.first[H_TO] >= 0 and m.to_a.tag_s >= 0  # a C field: read on every request
    # framing (RFC 3261 18.3): Content-Length bounds the body; a shorter datagram is an
    # error, extra octets are dropped. Without Content-Length the body runs to the end.
    if m.clen >= 0:
        if m.body_s + m.clen > n:
            raise BadHeader("Content-Length mis-match")
        m.end = m.body_s + m.clen
    else:
        m.end = n
    return m


# -- replies ------------------------------------------------------------------------------------

cdef inline Py_ssize_t _put(char *out, Py_ssize_t pos, const char *src, Py_ssize_t n) noexcept:
    # copy when there is somewhere to copy to (build_reply's second pass), else just count
    if out != NULL:
        memcpy(out + pos, src, n)
    return pos + n


cdef int _decimal(char *out, unsigned long long v) noexcept:
    # v's decimal digits into out (room for 20), their count: snprintf's %d costs ~700
    # instructions a call, more than the rest of a short reply's Content-Length line
    cdef char tmp[20]
    cdef int n = 0, k
    while True:
        tmp[n] = 48 + <int>(v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    for k in range(n):
        out[k] = tmp[n - 1 - k]
    return n


cdef Py_ssize_t _put_line(char *out, Py_ssize_t pos, const char *src, Py_ssize_t n) noexcept:
    # a copied line that was the datagram's last one may lack its line end
    pos = _put(out, pos, src, n)
    if n and src[n - 1] == 10:
        return pos
    if n and src[n - 1] == 13:
        return _put(out, pos, b"\n", 1)
    return _put(out, pos, b"\r\n", 2)


cdef inline bint _via_host_is(Message m, bytes ipb, bint fold_case):
    """Whether the top Via's host, brackets aside ("[v6]"), is the address `ipb`: byte for
    byte (stamp_source), or ASCII case aside (sent_by_is_source)."""
    cdef Py_ssize_t hs = m.topvia.host_s, he = m.topvia.host_e, k
    cdef const unsigned char *q = ipb
    if he - hs >= 2 and m.p[hs] == 91:
        hs += 1
        he -= 1
    if he - hs != len(ipb):
        return False
    if not fold_case:
        return memcmp(m.p + hs, q, he - hs) == 0
    for k in range(he - hs):
        if LOWER[m.p[hs + k]] != LOWER[q[k]]:
            return False
    return True


cdef const unsigned char *_ruri_at(Message m, UriPos *u):
    """Request `m`'s Request-URI as positions into the returned text: the received one's
    (parsed with the message) or the rewritten one's (parsed now); NULL when a rewrite does
    not parse. The text is the message's or its new_ruri's: valid while `m` lives."""
    cdef bytes b
    if m.new_ruri is None:
        u[0] = m.ruri_pos
        return m.p
    b = m.new_ruri
    if parse_uri_at(<const unsigned char *>PyBytes_AS_STRING(b), 0, PyBytes_GET_SIZE(b), u) < 0:
        return NULL
    return <const unsigned char *>PyBytes_AS_STRING(b)


cpdef tuple ruri_hop(Message m):
    """The Request-URI as a relay reads it: (kind, host, port, params), kind 1 sip, 2 sips,
    3 tel, 0 another scheme; the host as written (an IPv6 one in brackets), port 0 when
    absent, params the text after the first ';' ("" when none): the URI view's values,
    read from the parsed offsets (or the rewritten Request-URI's) without making one.
    None for a reply, or a rewritten Request-URI that does not parse."""
    cdef UriPos u
    cdef const unsigned char *p
    if not m.is_request:
        return None
    p = _ruri_at(m, &u)
    if p == NULL:
        return None
    return (u.kind, _str(p, u.host_s, u.host_e), u.port, _str(p, u.params_s, u.params_e))


cpdef object first_contact_uri(Message m):
    """The first Contact's URI as `m.contacts[0].uri` has it; None when there is none (or for
    `Contact: *`). Only that value is parsed, and no NameAddr is made: what a dialog records
    of a call's INVITE and 2xx. BadHeader, as `contacts`, when it does not parse."""
    cdef AddrPos a
    cdef AddrCursor c = AddrCursor(-1, 0)
    if m.contact_star or not m._next_addr(H_CONTACT, &c, &a):
        return None
    return _str(m.p, a.uri_s, a.uri_e)


cpdef list record_route_values(Message m):
    """The Record-Route values as `[r.raw for r in m.record_routes]`, without a NameAddr
    per value (a dialog's route set, recorded from its 2xx)."""
    cdef list out = []
    cdef AddrPos a
    cdef AddrCursor c = AddrCursor(-1, 0)
    while m._next_addr(H_RECORD_ROUTE, &c, &a):
        out.append(_str(m.p, a.s, a.e))
    return out


cpdef bytes build_reply(Message req, int code, reason, to_tag=None, extra=None, body=b""):
    """A response to `req` (RFC 3261 8.2.6.2): status line, every Via line as received (the
    top one with the received/rport stamp the transport recorded), From, To (with `to_tag`
    added when the request's To has none and code > 100), Call-ID, CSeq, the `extra` header
    lines (sequence of "Name: value" str/bytes), Content-Length and `body`. Measured once,
    then written into the one bytes object it returns."""
    if req is None:
        raise TypeError("build_reply: a request is required")
    if not 100 <= code <= 699:
        raise ValueError("status code must be 100..699")
    cdef bytes reason_b = _value_bytes(reason)
    cdef bytes tag_b = None
    cdef bytes top = None
    cdef bytes body_b = _to_bytes(body)
    cdef list extra_b = [_value_bytes(x) for x in extra] if extra else None
    cdef char status[4]
    cdef char clen[32]
    cdef int clen_n
    cdef Py_ssize_t pos, vend, total = 0
    cdef int k, rnd
    cdef Hdr *h
    cdef bint first_via
    cdef const char *b = <const char *>req.p
    cdef char *out = NULL
    cdef bytes result = None
    if to_tag is not None and code > 100 and req.first[H_TO] >= 0 and req.to_a.tag_s < 0:
        tag_b = _token_bytes(to_tag)
    if req.first[H_VIA] >= 0:
        top = req.top_via_with_stamp()
    status[0] = 48 + code // 100
    status[1] = 48 + code // 10 % 10
    status[2] = 48 + code % 10
    memcpy(clen, b"Content-Length: ", 16)
    clen_n = 16 + _decimal(clen + 16, len(body_b))
    memcpy(clen + clen_n, b"\r\n\r\n", 4)
    clen_n += 4
    for rnd in range(2):  # the first round measures, the second writes
        pos = _put(out, 0, b"SIP/2.0 ", 8)
        pos = _put(out, pos, status, 3)
        pos = _put(out, pos, b" ", 1)
        pos = _put(out, pos, PyBytes_AS_STRING(reason_b), len(reason_b))
        pos = _put(out, pos, b"\r\n", 2)
        first_via = True
        for k in range(req.nhdr):
            h = &req.hdrs[k]
            if h.hid == H_VIA:
                if first_via:
                    first_via = False
                    pos = _put(out, pos, b"Via: ", 5)
                    pos = _put(out, pos, PyBytes_AS_STRING(top), len(top))
                    pos = _put(out, pos, b"\r\n", 2)
                else:
                    pos = _put_line(out, pos, b + h.line_s, h.line_e - h.line_s)
            elif h.hid == H_TO and req.first[H_TO] == k:
                if tag_b is not None:  # ";tag=" after the To value, before its line end
                    vend = h.val_e - h.line_s
                    pos = _put(out, pos, b + h.line_s, vend)
                    pos = _put(out, pos, b";tag=", 5)
                    pos = _put(out, pos, PyBytes_AS_STRING(tag_b), len(tag_b))
                    pos = _put_line(out, pos, b + h.val_e, h.line_e - h.val_e)
                else:
                    pos = _put_line(out, pos, b + h.line_s, h.line_e - h.line_s)
            elif (h.hid == H_FROM and req.first[H_FROM] == k) or \
                 (h.hid == H_CALL_ID and req.first[H_CALL_ID] == k) or \
                 (h.hid == H_CSEQ and req.first[H_CSEQ] == k):
                pos = _put_line(out, pos, b + h.line_s, h.line_e - h.line_s)
        if extra_b is not None:
            for x in extra_b:
                pos = _put(out, pos, PyBytes_AS_STRING(<bytes>x), len(<bytes>x))
                pos = _put(out, pos, b"\r\n", 2)
        pos = _put(out, pos, clen, clen_n)
        pos = _put(out, pos, PyBytes_AS_STRING(body_b), len(body_b))
        if rnd == 0:
            total = pos
            result = PyBytes_FromStringAndSize(NULL, total)
            out = PyBytes_AS_STRING(result)
    return result
