# C types for kampx/dialog_table.py (setup.py's PYTHON_COMPILED): the dialogs (dialog.py)
# type their table, so a call's create, answer, set_state, refresh and take are C calls.
cimport cython
from libc.stdint cimport uint64_t


@cython.final
cdef class DialogTable:
    cdef public object capacity, nslots, shm, lock, mm, words, nbytes, slots
    cpdef bint create(self, bytes k, int state, double expires, info, int direction=*) except -1
    cpdef bint set_state(self, bytes k, int state, double expires) except -1
    cpdef bint answer(self, bytes k, int state, double expires, fields, int session_s=*,
                      double answered=*) except -1
    cpdef bint refresh(self, bytes k, double now, double lifetime, bint caller, long long cseq,
                       bint session) except -1
    cpdef take(self, bytes k)


cpdef uint64_t key_hash(bytes k) except? 0
cpdef bytes _encode(info, Py_ssize_t room, tuple fields)
