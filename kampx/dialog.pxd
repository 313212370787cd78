# C types for kampx/dialog.py, compiled as it is written (setup.py's PYTHON_TYPED).

cdef class Journal:
    cdef public object fd, stats, held
    cdef public list pending
    cdef public Py_ssize_t size

    cpdef bint _queue(self, bytes rec) except -1
    cpdef _seal(self)
    cpdef flush(self)

cdef class Dialogs:
    cdef public object index, journal, stats, table, acc
    cdef public bint enforce
    cdef public double lifetime, linger, ttl_setup, _full_logged
