# cython: language_level=3, boundscheck=False, wraparound=False
"""The byte form of the records a call leaves behind: a tracked dialog's two records (what the
INVITE and the 2xx said, kampx/dialog_table.py) and the accounting records of the journal
(kampx/acc.py: a transaction's row, a CDR that carries its dialog's two records).

Why not marshal, which wrote them before: marshal's writer keeps a table of every object it
has seen (to write a repeated one as a reference), so a flat tuple of eighteen short strings
cost ~10 000 instructions, and a carrier call writes five records: 4 % of the call. These
records are tuples of None, bools, ints, floats, ASCII text and bytes, and lists of those (a
dialog's addresses and route sets); `dumps` writes such a tuple in one measured copy and
`loads` reads it back, each about ten times faster.

Anything else (a dict, a str with non-ASCII characters, an int past 64 bits, a nested tuple,
a list in a list, more than 255 values) is written by marshal, as before, and `loads` tells
the two apart by the first byte: MAGIC is never the first byte of marshal's output (a type
code), so every record ever written still reads. The reader trusts nothing: a record cut
short or with an unknown type code raises ValueError, as marshal.loads does on a torn record.

The form: MAGIC, the count (1 byte), then per value a type code and its bytes:
  N None, T True, F False, i int (8 bytes, little-endian, signed), d float (8 bytes, the
  machine's double: records never leave the box), a/A ASCII text with a 1/4-byte length,
  b/B bytes with a 1/4-byte length; l a list: its count (1 byte), then its values as above
  (never a list).
"""

import marshal

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from cpython.ref cimport PyObject, Py_INCREF
from libc.stdint cimport int64_t
from libc.string cimport memcpy

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)
    object PyUnicode_DecodeASCII(const char *s, Py_ssize_t size, const char *errors)
    long long PyLong_AsLongLongAndOverflow(object o, int *overflow) except? -1

MAGIC = 0x01
cdef unsigned char _MAGIC = 0x01
cdef Py_ssize_t _MAX_VALUES = 255


cdef Py_ssize_t _scalar_size(object v) except -2:
    """The encoded size of one value that is not a list, or -1 when it needs marshal."""
    cdef Py_ssize_t n
    cdef int overflow = 0
    if v is None or v is True or v is False:
        return 1
    if type(v) is str:
        if not PyUnicode_IS_ASCII(v):
            return -1
        n = PyUnicode_GET_LENGTH(v)
        return (2 if n < 256 else 5) + n
    if type(v) is int:
        PyLong_AsLongLongAndOverflow(v, &overflow)
        return -1 if overflow else 9
    if type(v) is float:
        return 9
    if type(v) is bytes:
        n = PyBytes_GET_SIZE(v)
        return (2 if n < 256 else 5) + n
    return -1


cdef Py_ssize_t _size(tuple values) except -2:
    """The encoded size, or -1 when a value needs marshal."""
    cdef Py_ssize_t total = 2, i, j, n
    cdef object v
    for i in range(PyTuple_GET_SIZE(values)):
        v = <object>PyTuple_GET_ITEM(values, i)
        if type(v) is list:
            if PyList_GET_SIZE(v) > _MAX_VALUES:
                return -1
            total += 2
            for j in range(PyList_GET_SIZE(v)):
                n = _scalar_size(<object>PyList_GET_ITEM(v, j))
                if n < 0:
                    return -1
                total += n
        else:
            n = _scalar_size(v)
            if n < 0:
                return -1
            total += n
    return total


cdef inline Py_ssize_t _put_sized(char *o, Py_ssize_t pos, char short_code, char long_code,
                                  const char *data, Py_ssize_t n) noexcept:
    cdef unsigned int n32 = <unsigned int>n
    if n < 256:
        o[pos] = short_code
        o[pos + 1] = <char>n
        pos += 2
    else:
        o[pos] = long_code
        memcpy(o + pos + 1, &n32, 4)
        pos += 5
    memcpy(o + pos, data, n)
    return pos + n


cdef Py_ssize_t _put_scalar(char *o, Py_ssize_t pos, object v) except -1:
    """One value `_scalar_size` measured, written at `pos`; the position after it."""
    cdef int64_t iv
    cdef double dv
    if v is None:
        o[pos] = b'N'
        return pos + 1
    if v is True:
        o[pos] = b'T'
        return pos + 1
    if v is False:
        o[pos] = b'F'
        return pos + 1
    if type(v) is str:
        return _put_sized(o, pos, b'a', b'A', <const char *>PyUnicode_DATA(v),
                          PyUnicode_GET_LENGTH(v))
    if type(v) is int:
        iv = <int64_t>v
        o[pos] = b'i'
        memcpy(o + pos + 1, &iv, 8)
        return pos + 9
    if type(v) is float:
        dv = <double>v
        o[pos] = b'd'
        memcpy(o + pos + 1, &dv, 8)
        return pos + 9
    return _put_sized(o, pos, b'b', b'B', PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v))


def dumps(values):
    """`values` as bytes (see the module's docstring); marshal's bytes for what the form
    does not take (anything but a tuple of its types, a dict included)."""
    if type(values) is not tuple:
        return marshal.dumps(values)
    cdef Py_ssize_t count = PyTuple_GET_SIZE(values)
    cdef Py_ssize_t size = _size(values) if count <= _MAX_VALUES else -1
    if size < 0:
        return marshal.dumps(values)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef char *o = PyBytes_AS_STRING(out)
    cdef Py_ssize_t pos = 2, i, j
    cdef object v
    o[0] = <char>_MAGIC
    o[1] = <char>count
    for i in range(count):
        v = <object>PyTuple_GET_ITEM(values, i)
        if type(v) is list:
            o[pos] = b'l'
            o[pos + 1] = <char>PyList_GET_SIZE(v)
            pos += 2
            for j in range(PyList_GET_SIZE(v)):
                pos = _put_scalar(o, pos, <object>PyList_GET_ITEM(v, j))
        else:
            pos = _put_scalar(o, pos, v)
    return out


cdef inline Py_ssize_t _length(const unsigned char *p, Py_ssize_t pos, Py_ssize_t end,
                               bint long_form, Py_ssize_t *n) except -1:
    cdef unsigned int n32
    if long_form:
        if pos + 4 > end:
            raise ValueError("record cut short")
        memcpy(&n32, p + pos, 4)
        n[0] = n32
        pos += 4
    else:
        if pos + 1 > end:
            raise ValueError("record cut short")
        n[0] = p[pos]
        pos += 1
    if n[0] > end - pos:
        raise ValueError("record cut short")
    return pos


cdef object _read_scalar(const unsigned char *p, Py_ssize_t *at, Py_ssize_t end):
    """The value at at[0] (not a list), at[0] moved past it; ValueError when torn."""
    cdef Py_ssize_t pos = at[0], n
    cdef int64_t iv
    cdef double dv
    cdef unsigned char code
    cdef object v
    if pos >= end:
        raise ValueError("record cut short")
    code = p[pos]
    pos += 1
    if code == b'N':
        v = None
    elif code == b'T':
        v = True
    elif code == b'F':
        v = False
    elif code == b'i' or code == b'd':
        if pos + 8 > end:
            raise ValueError("record cut short")
        if code == b'i':
            memcpy(&iv, p + pos, 8)
            v = iv
        else:
            memcpy(&dv, p + pos, 8)
            v = dv
        pos += 8
    elif code == b'a' or code == b'A':
        pos = _length(p, pos, end, code == b'A', &n)
        v = PyUnicode_DecodeASCII(<const char *>p + pos, n, "strict")
        pos += n
    elif code == b'b' or code == b'B':
        pos = _length(p, pos, end, code == b'B', &n)
        v = PyBytes_FromStringAndSize(<const char *>p + pos, n)
        pos += n
    else:
        raise ValueError("unknown value type in record")
    at[0] = pos
    return v


def loads(data):
    """The tuple `dumps` wrote (or whatever marshal wrote). ValueError for a torn record."""
    cdef bytes buf = data if type(data) is bytes else bytes(data)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(buf)
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(buf)
    if end == 0 or p[0] != _MAGIC:
        return marshal.loads(buf)
    if end < 2:
        raise ValueError("record cut short")
    cdef Py_ssize_t count = p[1], pos = 2, i, j, n
    cdef tuple out = PyTuple_New(count)
    cdef list items
    cdef object v
    for i in range(count):
        if pos < end and p[pos] == b'l':
            if pos + 2 > end:
                raise ValueError("record cut short")
            n = p[pos + 1]
            pos += 2
            items = PyList_New(n)
            for j in range(n):
                v = _read_scalar(p, &pos, end)
                Py_INCREF(v)
                PyList_SET_ITEM(items, j, v)
            v = items
        else:
            v = _read_scalar(p, &pos, end)
        Py_INCREF(v)
        PyTuple_SET_ITEM(out, i, v)
    if pos != end:
        raise ValueError("bytes after the record")
    return out


# -- the journal's frames ----------------------------------------------------------------------
# A journal record (kampx/dialog.py: struct "!BBdH", then the key): op, state, timeout (a
# big-endian double), the key's length (big-endian), the key. The db writer reads a drain's
# worth at once, five records a carrier call: struct.unpack_from, two slices and a tuple per
# record in Python cost ~4 000 instructions each.

cdef Py_ssize_t _FRAME_HEAD = 12


def split_journal(bytes buf):
    """The whole records at the start of `buf`: ([(op, key, state, timeout)], the offset
    where the first incomplete one starts)."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t end = PyBytes_GET_SIZE(buf), pos = 0, n
    cdef unsigned long long bits
    cdef double timeout
    cdef int k
    cdef list out = []
    while end - pos >= _FRAME_HEAD:
        n = (<Py_ssize_t>p[pos + 10] << 8) | p[pos + 11]
        if end - pos - _FRAME_HEAD < n:
            break
        bits = 0
        for k in range(8):
            bits = (bits << 8) | p[pos + 2 + k]
        memcpy(&timeout, &bits, 8)
        out.append((p[pos], PyBytes_FromStringAndSize(<char *>p + pos + _FRAME_HEAD, n),
                    p[pos + 1], timeout))
        pos += _FRAME_HEAD + n
    return out, pos
