# C types for kampx/acc.py, compiled as it is written (setup.py's PYTHON_TYPED).

cdef class Accounting:
    cdef public long long log_bit, missed_bit, failed_bit, in_bit, out_bit, mask
    cdef public bint cdr_on_failed
    cdef public dict _call_cols
    cdef public object journal, stats
