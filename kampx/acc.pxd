# C types for kampx/acc.py, compiled as it is written (setup.py's PYTHON_TYPED).

from kampx._clock cimport monotonic, time
from kampx._cparse cimport Message
cimport cython
from kampx._shm cimport CounterRow
from kampx.stats.family cimport Family

cdef class Accounting:
    cdef public long long log_bit, missed_bit, failed_bit, in_bit, out_bit, mask
    cdef public bint cdr_on_failed
    cdef public dict _call_cols
    cdef public object journal
    cdef public CounterRow stats

    # the calls a final reply's records make, C calls from tm's manager and the dialogs
    # (cpdef: still callable from Python). The parameters that .py annotates `int` are C
    # ints here, so acc.py leaves them unannotated (a Python `int` there would conflict).
    cpdef str direction(self, long long flags)
    cpdef tuple party_values(self, Message req)
    cpdef final(self, Message req, int code, str reason, to_tag)
    cpdef _count_call(self, str direction, int code)
    cpdef tuple _row(self, str table, Message req, int code, str reason, to_tag)
    cpdef emit(self, row)
    cpdef _emit(self, bytes data)
