# cython: language_level=3, boundscheck=False, wraparound=False
"""Accounting rows as INSERT parameters, the common case in C (kampx/db/base.py's acc_values).

Why: the db writer turns every accounting record into a row of about fifteen values, each
checked against its column: text that fits its width and can be stored, a SIP code as
Kamailio's char(3), a time as the database's value. As Python that was ~20 000 instructions a
row (a `__class__` lookup, `isascii()` and `in` per text, `divmod` and a concatenation per
time): with the SQLite work it made the db writer a sixth of the proxy's CPU on a carrier
call, three rows a call. Here a row whose values are what kampx itself writes (short ASCII
text, int codes, float times) is checked with C reads. Anything else, `plain_row` leaves to
base.py's Python path (it returns None), which makes every value storable or names the bad
one: one behaviour, two speeds.
"""

import time

from libc.math cimport isfinite, rint
from libc.string cimport memchr

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)
    void *PyUnicode_DATA(object o)
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

# a SIP code's char(3) ("" for none): an index, no formatting
cdef tuple CODES = ("",) + tuple(f"{c:03d}" for c in range(1, 1000))


cpdef tuple plain_row(values, tuple texts, tuple times, tuple codes, tuple reals, stamp):
    """`values` (a list, in column order) as the INSERT's parameters when each is the common
    case of its column, else None (any other sequence too): `texts` ((index, width), ...)
    hold str that is ASCII, without NUL and no longer than the width (kept as they are);
    `times` indexes hold None or a float (through `stamp`, the backend's time value), `codes`
    None, "", 0 or an int 1..999, `reals` None or a float (rounded to milliseconds)."""
    cdef Py_ssize_t n, k, j, width
    cdef list row, out
    cdef object v
    cdef tuple pair
    if type(values) is not list:  # what the db writer passes; acc_values takes any sequence
        return None
    row = <list>values
    n = len(row)
    for k in range(len(texts)):
        pair = <tuple>texts[k]
        j = pair[0]
        width = pair[1]
        if j >= n:
            return None
        v = row[j]
        if type(v) is not str:
            return None
        if PyUnicode_GET_LENGTH(v) > width or not PyUnicode_IS_ASCII(v):
            return None
        if memchr(PyUnicode_DATA(v), 0, PyUnicode_GET_LENGTH(v)) != NULL:
            return None
    out = list(row)
    for k in range(len(times)):
        j = times[k]
        if j >= n:
            return None
        v = out[j]
        if v is None:
            continue
        if type(v) is not float:
            return None
        out[j] = stamp(v)
    for k in range(len(codes)):
        j = codes[k]
        if j >= n:
            return None
        v = out[j]
        if v is None or (type(v) is str and not v):
            out[j] = ""
        elif type(v) is int and 0 <= v < 1000:
            out[j] = CODES[<long>v]
        else:
            return None
    for k in range(len(reals)):
        j = reals[k]
        if j >= n:
            return None
        v = out[j]
        if v is None:
            out[j] = 0.0
        elif type(v) is float:
            out[j] = round(v, 3)
        else:
            return None
    return tuple(out)


# utc_text's cache: the text of a second (a batch's records share a few), and of each ms
cdef dict _SECOND_TEXT = {}
cdef tuple _MS_TEXT = tuple(f".{ms:03d}" for ms in range(1000))


cpdef str utc_text(double epoch):
    """Epoch seconds as the UTC text the SQLite accounting tables hold:
    'YYYY-MM-DD HH:MM:SS.mmm' (SQLite's datetime() form plus milliseconds: the two compare as
    text in time order). ValueError or OverflowError for a time no date can hold."""
    cdef double total = rint(epoch * 1000.0)  # Python's round(): halves to even
    cdef long long ms_total, seconds, ms
    if not isfinite(total) or not -9.0e18 < total < 9.0e18:
        total_int = round(epoch * 1000)  # raises what Python raises for inf and nan
        seconds_obj, ms_obj = divmod(total_int, 1000)
        return _second_text(seconds_obj) + _MS_TEXT[ms_obj]
    ms_total = <long long>total
    seconds = ms_total // 1000  # floor, as divmod (times before 1970 too)
    ms = ms_total - seconds * 1000
    return _second_text(seconds) + <str>_MS_TEXT[ms]


cdef str _second_text(seconds):
    text = _SECOND_TEXT.get(seconds)
    if text is None:
        if len(_SECOND_TEXT) >= 64:
            _SECOND_TEXT.clear()
        text = _SECOND_TEXT[seconds] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
    return text
