# C types for kampx/dialog.py, compiled as it is written (setup.py's PYTHON_TYPED).

from kampx.acc cimport Accounting

cdef class Journal:
    cdef public object fd, stats, held
    cdef public list pending
    cdef public Py_ssize_t size

    cpdef bint write(self, int op, bytes k, int state=*, double timeout=*) except -1
    cpdef bint record(self, bytes data) except -1
    cpdef bint _queue(self, bytes rec) except -1
    cpdef _seal(self)
    cpdef flush(self)

cdef class Dialogs:
    cdef public object index, stats, table
    cdef public Journal journal
    cdef public Accounting acc
    cdef public bint enforce
    cdef public double lifetime, linger, ttl_setup, _full_logged

    # a relayed call's steps, C calls from tm's manager and between themselves (cpdef:
    # still callable from Python). `msg` and `reply` stay objects: the unit tests hand in
    # stand-ins. The parameters typed C int here are unannotated in dialog.py.
    cpdef start(self, msg)
    cpdef bint _track(self, bytes k, msg, int state) except -1
    cpdef int on_reply(self, bytes k, int state, int code, reply) except? -1
    cpdef _answered(self, bytes k, int code, reply)
    cpdef failed(self, bytes k, int state, int code=*, str reason=*)
    cpdef end(self, bytes k, str why, int code=*, str reason=*)
    cpdef _end(self, bytes k, str why, int code, str reason)
    cpdef _confirm(self, bytes k, double now, int tracked=*)
    cpdef bint admit(self, msg) except -1
    cpdef _bye_untracked(self, msg)
    cpdef _refresh(self, bytes k, msg)
