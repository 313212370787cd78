# C-level view of kampx/_shm.pyx for other compiled modules.
#
# `from kampx._shm cimport CounterRows` lets Cython code bump a counter with a direct C call
# (no Python argument parsing):  counters.c_add(row, col, 1)
cimport cython
from libc.stdint cimport int64_t, uint64_t
from kampx.kx_shm cimport kx_mutex_t

cdef class _Region:
    """One anonymous MAP_SHARED mapping, created before fork and inherited by the children."""
    cdef char *base
    cdef size_t size
    cdef int _map(self, size_t nbytes) except -1


cdef class _Striped(_Region):
    """A region whose records are guarded by an array of robust process-shared mutexes."""
    cdef kx_mutex_t *locks
    cdef Py_ssize_t nlocks
    cdef int _init_locks(self, kx_mutex_t *locks, Py_ssize_t n) except -1


@cython.final
cdef class CounterRows(_Region):
    cdef int64_t *cells
    cdef Py_ssize_t nrows
    cdef Py_ssize_t ncols
    cdef Py_ssize_t stride       # int64 cells per row: ncols rounded up to a cache line
    # Adds n to (row, col); returns -1 (and does nothing) when row or col is out of range.
    cdef int c_add(self, Py_ssize_t row, Py_ssize_t col, int64_t n) noexcept nogil
