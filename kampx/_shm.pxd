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


# One slot of a KeyIndex: the key's seeded hash (0 = empty; cleared first, written last) and
# its expiry in microseconds << 8 | one-byte value. 16-byte slots, 4 per cache line.
cdef struct TxnSlot:
    uint64_t key
    uint64_t word


@cython.final
cdef class CounterRows(_Region):
    cdef int64_t *cells
    cdef Py_ssize_t nrows
    cdef Py_ssize_t ncols
    cdef Py_ssize_t stride       # int64 cells per row: ncols rounded up to a cache line
    # Adds n to (row, col); returns -1 (and does nothing) when row or col is out of range.
    cdef int c_add(self, Py_ssize_t row, Py_ssize_t col, int64_t n) noexcept nogil
    # the same for Python callers and for C callers that type the table (a final class: a
    # direct C call)
    cpdef void inc(self, Py_ssize_t row, Py_ssize_t col)
    cpdef void add(self, Py_ssize_t row, Py_ssize_t col, int64_t n)
    cpdef int64_t add_get(self, Py_ssize_t row, Py_ssize_t col, int64_t n) except? -1


# One process's row of a CounterRows (kampx.stats.Stats subclasses it in Python). A module
# that types its `stats` as a CounterRow counts with a C call: inc, add and observe_us are
# cpdef (their override check is a type-version compare: Stats has no instance dict).
cdef class CounterRow:
    cdef CounterRows _rows
    cdef int64_t *cells
    cdef readonly Py_ssize_t row
    cdef Py_ssize_t ncols
    cdef Py_ssize_t hist_base
    cdef Py_ssize_t nbounds
    cdef int64_t bounds[32]
    cpdef void inc(self, Py_ssize_t col)
    cpdef void add(self, Py_ssize_t col, int64_t n)
    cpdef void observe_us(self, int64_t us)


# The transaction index and the dialog index (key -> one byte, with an expiry). tm and the
# dialogs type theirs: claim, lookup, release and put are C calls on the per-packet path.
@cython.final
cdef class KeyIndex(_Striped):
    cdef TxnSlot *slots
    cdef uint64_t seed
    cdef int segbits
    cdef uint64_t nbuckets          # per segment, power of two
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _locate(self, bytes key, uint64_t *h, TxnSlot **b1,
                            TxnSlot **b2) except -1
    cdef int _owner_arg(self, int owner) except -1
    cpdef int claim(self, bytes key, int owner, double now, double ttl) except? -99
    cpdef int lookup(self, bytes key, double now) except? -99
    cpdef bint release(self, bytes key, int owner) except -1
    cpdef bint put(self, bytes key, int value, double now, double expires_at) except -1
