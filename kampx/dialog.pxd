# C types for kampx/dialog.py, compiled as it is written (setup.py's PYTHON_TYPED).

from kampx._clock cimport monotonic, time
from kampx._cparse cimport Message, first_contact_uri, record_route_values
from kampx.acc cimport Accounting
from kampx.dialog_table cimport DialogTable
from kampx._shm cimport CounterRow, KeyIndex

cdef class Journal:
    cdef public object fd, held
    cdef public CounterRow stats
    cdef public list pending
    cdef public Py_ssize_t size

    cpdef bint write(self, int op, bytes k, int state=*, double timeout=*) except -1
    cpdef bint record(self, bytes data) except -1
    cpdef bint _queue(self, bytes rec) except -1
    cpdef _seal(self)
    cpdef flush(self)

cdef class Dialogs:
    cdef public KeyIndex index
    cdef public DialogTable table
    cdef public CounterRow stats
    cdef public Journal journal
    cdef public Accounting acc
    cdef public bint enforce
    cdef public double lifetime, linger, ttl_setup, _full_logged

    # a relayed call's steps, C calls from tm's manager and between themselves (cpdef:
    # still callable from Python); a message's fields read as C fields. The parameters
    # typed here are unannotated in dialog.py (a Python `int` there would conflict).
    cpdef start(self, Message msg)
    cpdef bint _track(self, bytes k, Message msg, int state) except -1
    cpdef int on_reply(self, bytes k, int state, int code, Message reply) except? -1
    cpdef _answered(self, bytes k, int code, Message reply)
    cpdef failed(self, bytes k, int state, int code=*, str reason=*)
    cpdef end(self, bytes k, str why, int code=*, str reason=*)
    cpdef _end(self, bytes k, str why, int code, str reason)
    cpdef _confirm(self, bytes k, double now, int tracked=*)
    cpdef bint admit(self, Message msg) except -1
    cpdef _bye_untracked(self, Message msg)
    cpdef _refresh(self, bytes k, Message msg)
