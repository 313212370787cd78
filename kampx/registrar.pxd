# C types for kampx/registrar.py (compiled with setup.py's PYTHON_COMPILED): a REGISTER being
# saved is a C struct over a typed Message, so that its steps read the message's fields and
# their own through C calls and loads instead of attribute lookups.
cimport cython

from kampx._cparse cimport Message
from kampx.sl cimport send_reply  # a reply's C call


cdef class _Register:
    cdef object worker
    cdef Message msg
    cdef object src
    cdef str aor
    cdef str callid
    cdef object cseq
    cdef bint star
    cdef list ops
    cdef double now
    cdef long long act
    cdef str path
    cdef str nat_source
    cdef bint flow
    cdef object _contacts
    cdef object _header_expires
    cdef build_ops(self)
    cdef str _path(self, Message msg)
    cdef tuple _op(self, c, cfg, header_expires, str ua, str socket)
    cdef long long _expires(self, param, header_expires, cfg) except? -1
    cdef int run(self, store, bint reply) except? -100


@cython.locals(req=_Register)
cpdef int save(worker, Message msg, str table=*, int flags=*, uri=*) except? -100
cdef int _accepted(worker, Message msg, bindings, bint reply, long long act, int rc) except? -100
cdef int _rejected(worker, Message msg, err, bindings, bint reply, long long act) except? -100
cdef bint _behind_nat(Message msg) except -1
