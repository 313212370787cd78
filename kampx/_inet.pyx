# cython: language_level=3
"""IP address text, read with C calls: is it an address, and its packed form.

A carrier call asks about ten times (where a relayed request goes, the flood guard's and the
bans' key of each request's source). As `socket.inet_pton` each answer was a Python call with
its argument parsing and, for a name, an OSError raised and caught: ~750 instructions. Here
an ASCII text goes to libc's inet_pton from C.

The answers are the Python ones: the same function on the same bytes. Anything that C cannot
take as it is (not a str, not ASCII, a NUL inside, longer than any address) goes the Python
way, so even the errors stay what they were.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.string cimport memchr

import socket

cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char *src, void *dst)

cdef extern from "sys/socket.h":
    enum:
        AF_INET
        AF_INET6

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object)
    const char *PyUnicode_AsUTF8AndSize(object, Py_ssize_t *) except NULL

# the longest text of an address inet_pton takes (IPv6 with an IPv4 tail: 45) and then some
cdef enum:
    TEXT_MAX = 63
cdef bytes _V4_MAPPED = b"\x00" * 10 + b"\xff\xff"


cdef inline const char *_plain(object text, Py_ssize_t *n):
    """The text's bytes when C can hand them to inet_pton as they are, else NULL."""
    if type(text) is not str or not PyUnicode_IS_COMPACT_ASCII(text):
        return NULL
    cdef const char *s = PyUnicode_AsUTF8AndSize(text, n)  # compact ASCII: no copy made
    if n[0] > TEXT_MAX or memchr(s, 0, n[0]) != NULL:
        return NULL
    return s


cpdef bint is_ip(object host) except -1:
    """True when `host` is an IPv4 or IPv6 address (no brackets), as
    socket.inet_pton(AF_INET6 if ":" in host else AF_INET, host) tells."""
    cdef Py_ssize_t n
    cdef unsigned char packed[16]
    cdef const char *s = _plain(host, &n)
    if s == NULL:
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            return True
        except OSError:
            return False
    return inet_pton(AF_INET6 if memchr(s, 58, n) != NULL else AF_INET, s, packed) == 1


cpdef object ip_key(object ip):
    """The packed address of `ip` (4 or 16 bytes; an IPv4-mapped IPv6 address is the IPv4
    address), None when it is not an IP address. IPv6 may come in brackets or with a zone."""
    cdef Py_ssize_t n
    cdef unsigned char packed[16]
    cdef const char *s = _plain(ip, &n)
    if s != NULL and memchr(s, 58, n) == NULL:
        if inet_pton(AF_INET, s, packed) == 1:
            return PyBytes_FromStringAndSize(<char *>packed, 4)
        return None
    try:  # IPv6, or what C does not take as it is: rare, the Python way
        if ":" not in ip:
            return socket.inet_pton(socket.AF_INET, ip)
        raw = socket.inet_pton(socket.AF_INET6, ip.strip("[]").partition("%")[0])
    except (OSError, ValueError, TypeError):
        return None
    return raw[12:] if raw[:12] == _V4_MAPPED else raw
