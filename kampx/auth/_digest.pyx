# cython: language_level=3
"""The digest check's hot path in C: the credentials picked and validated from a request's
header values in one call, MD5 (RFC 1321) and the MD5 request-digest computed without a
Python object per hash, and the nonce text decoded.

kampx/auth/digest.py keeps the contract (what is valid, the RFC forms, SHA-256) and calls
in here; kampx/auth/authenticator.py puts it together with nonces and subscribers. Why C:
the same steps in Python were ~8 us of a REGISTER's ~11 us check (a header scan, a dict of
parameters, a NamedTuple, regular expressions, three hashlib objects and their hex strings,
seven f-strings).

Strings are hashed as UTF-8 with undecodable bytes kept (surrogateescape): the bytes the
client put on the wire, since the SIP parser decodes that way. An ASCII str is hashed from
its own buffer.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint32_t, uint64_t

from kampx._cparse import SipParseError, auth_fields, parse_auth_header


cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    bint PyUnicode_IS_ASCII(object)
    const void *PyUnicode_DATA(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)


class DigestError(ValueError):
    """Credentials that cannot be checked (missing or malformed fields)."""


# ------------------------------------------------------------------------ MD5 -------------

cdef extern from "kx_md5.h":
    ctypedef struct md5_ctx "kx_md5_t":
        pass
    void md5_init "kx_md5_init"(md5_ctx *x) noexcept nogil
    void md5_update "kx_md5_update"(md5_ctx *x, const void *p, size_t n) noexcept nogil
    void md5_hex "kx_md5_hex"(md5_ctx *x, char *out) noexcept nogil


cdef inline void md5_str(md5_ctx *x, str s):
    """Hash `s` as UTF-8 (surrogateescape)."""
    if PyUnicode_IS_ASCII(s):
        md5_update(x, PyUnicode_DATA(s), PyUnicode_GET_LENGTH(s))
    else:
        b = s.encode("utf-8", "surrogateescape")
        md5_update(x, <const char *>b, len(b))


cdef inline void md5_bytes(md5_ctx *x, const char *p, Py_ssize_t n) noexcept nogil:
    md5_update(x, p, n)


cdef inline void md5_colon(md5_ctx *x) noexcept nogil:
    md5_update(x, <const char *>b":", 1)


def md5_hexdigest(data) -> str:
    """MD5 of bytes (or of a str as UTF-8) as lower-case hex: hashlib's answer, without
    its object (what the tests hold this MD5 to)."""
    cdef md5_ctx x
    cdef char out[32]
    md5_init(&x)
    if isinstance(data, str):
        md5_str(&x, data)
    else:
        b = bytes(data)
        md5_update(&x, <const char *>b, len(b))
    md5_hex(&x, out)
    return out[:32].decode("ascii")


cpdef str md5_response(str ha1_hex, str nonce, str method, str uri, qop, nc, cnonce, bint sess,
                       bytes body):
    """The MD5 request-digest (RFC 2617 3.2.2.1; RFC 2069 without qop): digest.response's
    MD5 and MD5-sess cases. `ha1_hex` is hashed as given (lower-case hex when it is
    anyone's; a malformed stored one simply matches nothing). qop, nc and cnonce are
    hashed as the Python form formats them (credentials() lets no None through)."""
    cdef md5_ctx x
    cdef char sess_ha1[32]
    cdef char ha2[32]
    cdef char hbody[32]
    cdef char out[32]
    cdef bint has_qop = qop is not None and qop != ""
    if ha1_hex is None or nonce is None or method is None or uri is None or body is None:
        raise TypeError("md5_response: HA1, nonce, method, URI and body are required")
    if has_qop:
        qop, nc, cnonce = f"{qop}", f"{nc}", f"{cnonce}"
    if sess:  # HA1 = H(HA1:nonce:cnonce)
        md5_init(&x)
        md5_str(&x, ha1_hex)
        md5_colon(&x)
        md5_str(&x, nonce)
        md5_colon(&x)
        md5_str(&x, f"{cnonce or ''}")
        md5_hex(&x, sess_ha1)
    md5_init(&x)
    md5_str(&x, method)
    md5_colon(&x)
    md5_str(&x, uri)
    if qop == "auth-int":
        md5_colon(&x)
        _body_hash(body, hbody)
        md5_bytes(&x, hbody, 32)
    md5_hex(&x, ha2)
    md5_init(&x)
    if sess:
        md5_bytes(&x, sess_ha1, 32)
    else:
        md5_str(&x, ha1_hex)
    md5_colon(&x)
    md5_str(&x, nonce)
    md5_colon(&x)
    if has_qop:
        md5_str(&x, nc)
        md5_colon(&x)
        md5_str(&x, cnonce)
        md5_colon(&x)
        md5_str(&x, qop)
        md5_colon(&x)
    md5_bytes(&x, ha2, 32)
    md5_hex(&x, out)
    return out[:32].decode("ascii")


cdef void _body_hash(bytes body, char *out):
    cdef md5_ctx x
    md5_init(&x)
    md5_update(&x, <const char *>body, len(body))
    md5_hex(&x, out)


# ------------------------------------------------------------------ credentials -----------

# RFC 8760 names -> the hash they use ("-sess" variants use the same hash, RFC 7616 3.4.2)
BASE_ALGORITHM = {"MD5": "MD5", "MD5-SESS": "MD5", "SHA-256": "SHA-256",
                  "SHA-256-SESS": "SHA-256"}
HEX_LEN = {"MD5": 32, "SHA-256": 64}
QOPS = ("auth", "auth-int")


cdef bint _all_hex(str s, bint lower_only):
    cdef Py_UCS4 c
    for c in s:
        if not (u'0' <= c <= u'9' or u'a' <= c <= u'f' or (not lower_only and u'A' <= c <= u'F')):
            return False
    return True


cdef class Credentials:
    """One Authorization / Proxy-Authorization header, checked for completeness: what
    credentials() accepted. `response` is lower-case hex; `algorithm` upper-case, as the
    client named it ("MD5" when absent); qop "auth" / "auth-int" / None (RFC 2069), with an
    8-hex-digit nc and a cnonce."""

    # fields: _digest.pxd (sess: an "-sess" algorithm, HA1 = H(HA1:nonce:cnonce))

    @property
    def nc_value(self) -> int:
        return int(self.nc, 16) if self.nc else 0

    @property
    def user(self) -> str:
        """The user part of the username ('alice' for 'alice@example.org')."""
        return self.username.partition("@")[0]

    def __repr__(self):
        return (f"Credentials(username={self.username!r}, realm={self.realm!r}, "
                f"nonce={self.nonce!r}, uri={self.uri!r}, algorithm={self.algorithm!r}, "
                f"qop={self.qop!r}, nc={self.nc!r})")


# the fields credentials() reads, in the order _validated() takes them
_FIELDS = ("username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc",
           "cnonce", "opaque")


def credentials(dict params) -> Credentials:
    """Digest parameters (lower-case names) -> Credentials, or DigestError naming what is
    missing or malformed. Only what verification needs is checked here; the nonce's own
    validity is nonce.py's business."""
    return _validated([params.get(k) for k in _FIELDS])


cdef Credentials _validated(list f):
    username, realm, nonce, uri, resp = f[0], f[1], f[2], f[3], f[4]
    if not (username and realm and nonce and uri and resp):
        raise DigestError(f"missing {', '.join([k for k, v in zip(_FIELDS, f[:5]) if not v])}")
    algorithm = f[5]
    algorithm = "MD5" if not algorithm else algorithm.upper()
    base = BASE_ALGORITHM.get(algorithm)
    if base is None:
        raise DigestError(f"unsupported algorithm {algorithm!r}")
    if not _all_hex(resp, True):  # lower-case hex as most clients send it, else lowered
        resp = resp.lower()
        if not _all_hex(resp, True):
            raise DigestError("malformed response")
    if len(resp) != (32 if base == "MD5" else 64):
        raise DigestError("malformed response")
    cdef bint sess = algorithm.endswith("-SESS")
    qop, nc, cnonce = f[6], None, f[8]
    if qop is not None:
        if qop != "auth":
            qop = qop.lower()
            if qop not in QOPS:
                raise DigestError(f"unsupported qop {qop!r}")
        nc = f[7]
        if not nc or len(nc) != 8 or not _all_hex(nc, False) or not cnonce:
            raise DigestError("qop without a valid nc and cnonce")
    elif sess and not cnonce:
        raise DigestError("-sess algorithm without cnonce")
    cdef Credentials c = Credentials.__new__(Credentials)
    c.username, c.realm, c.nonce, c.uri, c.response = username, realm, nonce, uri, resp
    c.algorithm, c.base_algorithm, c.sess = algorithm, base, sess
    c.qop, c.nc, c.cnonce, c.opaque = qop, nc, cnonce, f[9]
    return c


def find_params(values, str realm):
    """The params of the first Digest credentials among header `values` for `realm`
    (case-insensitive, as Kamailio compares), a DigestError when only unparseable ones
    exist, else None."""
    return _first_for_realm(values, realm, False)


cpdef object pick(values, str realm):
    """The Credentials among header `values` for `realm` (find_params and credentials()
    in one call, no dict of parameters): a DigestError (returned, not raised) when the
    first ones for `realm` are malformed or only unparseable ones exist, else None."""
    return _first_for_realm(values, realm, True)


cdef object _first_for_realm(values, str realm, bint validate):
    want = realm.lower()
    error = None
    for value in values:
        try:
            if validate:  # the ten fields only
                scheme, found = auth_fields(value, _FIELDS)
                r = (<list>found)[1]
            else:
                scheme, found = parse_auth_header(value)
                r = (<dict>found).get("realm")
        except SipParseError as e:
            error = DigestError(str(e))
            continue
        if scheme.lower() == "digest" and (r if r is not None else "").lower() == want:
            if not validate:
                return found
            try:
                return _validated(found)
            except DigestError as e:
                return e
    return error


# ------------------------------------------------------------------------ nonces ----------

cdef signed char B64URL[128]
for _i in range(128):
    B64URL[_i] = -1
cdef const unsigned char *_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
for _i in range(64):
    B64URL[_ALPHABET[_i]] = _i


cdef Py_ssize_t _b64url_into(str text, unsigned char *p, Py_ssize_t cap) except -2:
    """Decode base64url without padding into p (cap bytes at most): the length, or -1 for
    anything else (another alphabet, padding, a length no encoding has, bits left over)."""
    cdef Py_ssize_t n = len(text), i, o = 0
    cdef Py_UCS4 ch
    cdef uint32_t acc = 0
    cdef int bits = 0, v
    if n % 4 == 1 or n * 3 // 4 > cap:
        return -1
    for i in range(n):
        ch = text[i]
        if ch >= 128:
            return -1
        v = B64URL[ch]
        if v < 0:
            return -1
        acc = (acc << 6) | <uint32_t>v
        bits += 6
        if bits >= 8:
            bits -= 8
            p[o] = <unsigned char>(acc >> bits)
            o += 1
    if acc & ((1u << bits) - 1):  # non-zero bits past the last byte: another spelling
        return -1
    return o


def b64url_decode(str text):
    """base64url without padding (RFC 4648 5) -> bytes; None for anything else: another
    alphabet, padding, a length no encoding has, bits left over. Strict, so that one
    nonce has one spelling."""
    out = bytearray(len(text) * 3 // 4 + 1)
    cdef Py_ssize_t n = _b64url_into(text, out, len(out))
    return None if n < 0 else bytes(out[:n])


# A nonce (kampx/auth/nonce.py): version (1) | issued ms (8) | index (4) | generation (4),
# big-endian, then a 16-byte MAC over those 17 bytes, all in base64url (44 characters)
cdef enum:
    NONCE_BODY = 17
    NONCE_RAW = 33


cdef inline uint64_t _be(const unsigned char *p, int n) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(n):
        v = (v << 8) | p[i]
    return v


cdef extern from "kx_blake2s.h":
    int kx_blake2s_keyed(uint32_t *h, const unsigned char *key, size_t keylen,
                         size_t outlen) noexcept nogil
    int kx_blake2s_mac(const uint32_t *keyed, const unsigned char *msg, size_t n,
                       unsigned char *out, size_t outlen) noexcept nogil


cdef class MacKey:
    """Keyed BLAKE2s (RFC 7693's MAC mode) with `size`-byte MACs: the state after the key
    block, so that a MAC of up to 64 bytes is one compression (kx_blake2s.h). Fields:
    _digest.pxd."""

    def __cinit__(self, bytes key not None, int size):
        if kx_blake2s_keyed(self.h, key, len(key), size) < 0:
            raise ValueError("a BLAKE2s key is 1 to 32 bytes, a MAC 1 to 32 bytes")
        self.size = size

    def mac(self, bytes data not None) -> bytes:
        """The MAC of `data` (1 to 64 bytes)."""
        cdef unsigned char out[32]
        if kx_blake2s_mac(self.h, data, len(data), out, self.size) < 0:
            raise ValueError("a MAC covers 1 to 64 bytes")
        return PyBytes_FromStringAndSize(<char *>out, self.size)


cpdef tuple open_nonce(str text, MacKey key):
    """(version, issued_ms, index, generation) of a nonce whose MAC under `key` (16-byte
    MACs) confirms; None for any other text."""
    cdef unsigned char raw[NONCE_RAW + 1]
    cdef unsigned char mac[NONCE_RAW - NONCE_BODY]
    cdef unsigned char diff = 0
    cdef int i
    if key is None or text is None:
        raise TypeError("open_nonce: a text and a key are required")
    if key.size != NONCE_RAW - NONCE_BODY:
        raise ValueError("a nonce's MAC is 16 bytes")
    if len(text) != 44 or _b64url_into(text, raw, NONCE_RAW) != NONCE_RAW:
        return None
    kx_blake2s_mac(key.h, raw, NONCE_BODY, mac, NONCE_RAW - NONCE_BODY)
    for i in range(NONCE_RAW - NONCE_BODY):  # constant time: every byte compared
        diff |= mac[i] ^ raw[NONCE_BODY + i]
    if diff:
        return None
    return (raw[0], _be(raw + 1, 8), _be(raw + 9, 4), _be(raw + 13, 4))


cpdef str seal_nonce(MacKey key, int version, uint64_t issued_ms, uint32_t index,
                     uint32_t generation):
    """The nonce text for these fields, MAC'd under `key` (open_nonce's inverse)."""
    cdef unsigned char raw[NONCE_RAW]
    cdef int i
    if key is None:
        raise TypeError("seal_nonce: a key is required")
    if key.size != NONCE_RAW - NONCE_BODY:
        raise ValueError("a nonce's MAC is 16 bytes")
    raw[0] = <unsigned char>version
    for i in range(8):
        raw[1 + i] = <unsigned char>(issued_ms >> (8 * (7 - i)))
    for i in range(4):
        raw[9 + i] = <unsigned char>(index >> (8 * (3 - i)))
        raw[13 + i] = <unsigned char>(generation >> (8 * (3 - i)))
    kx_blake2s_mac(key.h, raw, NONCE_BODY, raw + NONCE_BODY, NONCE_RAW - NONCE_BODY)
    return _b64url_text(raw, NONCE_RAW)


def b64url_encode(bytes raw not None) -> str:
    """base64url without padding (RFC 4648 5)."""
    return _b64url_text(raw, len(raw))


cdef str _b64url_text(const unsigned char *p, Py_ssize_t n):
    """base64url without padding of p[:n], written straight into a new ASCII str."""
    cdef Py_ssize_t i, o = 0
    cdef uint32_t acc = 0
    cdef int bits = 0
    cdef str out = PyUnicode_New((n * 4 + 2) // 3, 127)
    cdef unsigned char *q = <unsigned char *>PyUnicode_DATA(out)
    for i in range(n):
        acc = (acc << 8) | p[i]
        bits += 8
        while bits >= 6:
            bits -= 6
            q[o] = _ALPHABET[(acc >> bits) & 63]
            o += 1
    if bits:
        q[o] = _ALPHABET[(acc << (6 - bits)) & 63]
    return out
