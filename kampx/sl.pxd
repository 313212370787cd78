# C types for kampx/sl.py (setup.py's PYTHON_COMPILED): a reply's request is a parsed message
# (its fields are C loads), and the script API's sl functions call these in C.
cimport cython
from kampx._cparse cimport Message, build_reply
from kampx._shm cimport CounterRow
from kampx.forward cimport reply_destination
from kampx.stats.family cimport Family


@cython.locals(stats=CounterRow)  # the worker's counters: a C call per reply
cpdef bint stateless_reply(object worker, Message msg, int code, object reason, object extra=*,
                           object body=*) except -1
cpdef object send_reply(object worker, Message msg, int code, object reason, object extra=*,
                        object body=*)

# the statistics counted here, as C values: `stats.inc(NAME.base)` is a C field read
cdef Family SEND_ERRORS
