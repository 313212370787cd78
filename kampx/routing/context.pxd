# The C view of the script's context (context.py): the modules of the script API cimport
# _Context and declare their `ctx` as one (cdef _Context ctx in their .pxd), so reading the
# message and the worker is a C load, not an attribute lookup.
from kampx._cparse cimport Message


cdef class _Context:
    cdef public object worker
    cdef public Message msg
    cdef public object txn


cdef dict _RESULTS
# every script function with a return code makes its Result here: a C call for the modules
# that cimport it
cpdef object result(long code)
