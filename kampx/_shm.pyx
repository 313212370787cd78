# distutils: include_dirs = kampx/include
# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Shared-memory structures used by every kampx process (see docs/architecture.md).

Each structure maps its own anonymous MAP_SHARED region in its constructor. The supervisor builds
them before fork; children inherit the mapping at the same address, so there are no names to
find or unlink and a respawned child sees the same memory.

Locking rules, enforced by keeping every locked section inside a `nogil` C function:
  - no Python code and no allocation runs while a lock is held;
  - a critical section touches one segment: at most two buckets of eight slots (or, for the
    scans the supervisor/ctl/timer run, one segment's slots);
  - locks are robust process-shared mutexes; a record is written so that a process killed in the
    middle leaves either the old record, an empty slot or the new record, never a mix (the slot's
    key word is cleared first and written last).
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.errno cimport errno
from libc.stdint cimport UINT32_MAX, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy
from posix.mman cimport MAP_ANONYMOUS, MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap
from posix.time cimport nanosleep, timespec
from posix.unistd cimport write

from kampx.kx_shm cimport (kx_atomic_add64, kx_atomic_cas64, kx_atomic_load64, kx_atomic_store64,
                           kx_hash64, kx_mutex_init, kx_mutex_lock, kx_mutex_t, kx_mutex_trylock,
                           kx_mutex_unlock)

import os

cdef extern from *:
    # Start loading a cache line we are about to need (no-op semantics, never faults).
    void __builtin_prefetch(const void *addr) nogil

cdef enum:
    LINE = 64                 # cache line: rows, headers and mutexes are aligned to it
    BUCKET = 8                # slots per hash bucket (two buckets are candidates for a key)
    MAX_SEG_BITS = 10         # at most 1024 segments (= lock stripes) per table
    SEG_TARGET = 512          # aim for at least this many entries per segment
    LOCK_FAILED = -100        # internal: kx_mutex_lock returned an unrecoverable error

cdef Py_ssize_t MAX_CAPACITY = 1 << 28


class LockError(RuntimeError):
    """A shared mutex is unusable (memory corrupted); the structure cannot be trusted."""


cdef inline size_t _round_line(size_t n) noexcept nogil:
    return (n + LINE - 1) & ~(<size_t>LINE - 1)


# ---------------------------------------------------------------------------------------------
# Mapping and lock plumbing

cdef class _Region:
    def __cinit__(self, *args, **kwargs):
        self.base = NULL
        self.size = 0

    cdef int _map(self, size_t nbytes) except -1:
        cdef void *p
        if self.base != NULL:
            raise RuntimeError("already initialised")
        p = mmap(NULL, nbytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        if p == MAP_FAILED:
            raise OSError(errno, f"mmap of {nbytes} shared bytes failed: {os.strerror(errno)}")
        self.base = <char *>p        # fresh anonymous pages are zero: every slot starts empty
        self.size = nbytes
        return 0

    def __dealloc__(self):
        # Unmaps this process's view only; other processes keep theirs.
        if self.base != NULL:
            munmap(self.base, self.size)
            self.base = NULL

    @property
    def nbytes(self):
        """Size of the shared mapping in bytes."""
        return self.size


cdef inline int _lock(kx_mutex_t *m, uint64_t *stats) noexcept nogil:
    """0 when locked; counts a recovery (previous owner died holding it); LOCK_FAILED if broken."""
    cdef int rc = kx_mutex_lock(m)
    if rc == 1:
        kx_atomic_add64(&stats[0], 1)
        return 0
    return LOCK_FAILED if rc < 0 else 0


cdef void _hold(kx_mutex_t *m, uint64_t *stats, double seconds, int fd) noexcept nogil:
    cdef timespec ts
    cdef char byte = b'L'
    if _lock(m, stats) != 0:
        return
    if fd >= 0:
        write(fd, &byte, 1)
    ts.tv_sec = <long>seconds
    ts.tv_nsec = <long>((seconds - <double>ts.tv_sec) * 1e9)
    nanosleep(&ts, NULL)
    kx_mutex_unlock(m)


cdef class _Striped(_Region):
    """Layout: [stats line][nlocks mutexes, one per cache line][payload]."""

    cdef int _init_locks(self, kx_mutex_t *locks, Py_ssize_t n) except -1:
        cdef Py_ssize_t i
        cdef int rc
        self.locks = locks
        self.nlocks = n
        for i in range(n):
            rc = kx_mutex_init(&locks[i])
            if rc != 0:
                raise OSError(rc, f"pthread_mutex_init: {os.strerror(rc)}")
        return 0

    @property
    def stripes(self):
        """Number of lock stripes (segments)."""
        return self.nlocks

    @property
    def recoveries(self):
        """How many times a lock was taken over from a process that died holding it."""
        return kx_atomic_load64(&(<uint64_t *>self.base)[0])

    def _test_hold_lock(self, Py_ssize_t stripe, double seconds, int notify_fd=-1):
        """Test hook: lock `stripe`, write one byte to notify_fd (if >= 0), sleep, unlock."""
        if not 0 <= stripe < self.nlocks:
            raise IndexError(f"stripe {stripe} out of range 0..{self.nlocks - 1}")
        with nogil:
            _hold(&self.locks[stripe], <uint64_t *>self.base, seconds, notify_fd)


cdef class CounterRow:
    """One process's row of a CounterRows, for the hot path: `inc(col)` and `add(col, n)`
    are one C call each (the row is bound once), and `observe_us(us)` files a time into a
    histogram of HIST_MAX or fewer buckets (first bound >= us; then the sum and the count)
    without a Python call per step. kampx.stats.Stats is this with the catalogue's names."""

    # its fields: _shm.pxd

    def __init__(self, CounterRows rows, Py_ssize_t row):
        if not 0 <= row < rows.nrows:
            raise IndexError(f"row {row} out of range 0..{rows.nrows - 1}")
        self._rows = rows
        self.row = row
        self.ncols = rows.ncols
        self.cells = rows.cells + row * rows.stride
        self.hist_base = -1
        self.nbounds = 0

    @property
    def rows(self):
        """The CounterRows this row belongs to."""
        return self._rows

    cpdef void inc(self, Py_ssize_t col):
        if <size_t>col >= <size_t>self.ncols:
            _range_error(self._rows.nrows, self.ncols, self.row, col)
        kx_atomic_add64(<uint64_t *>&self.cells[col], 1)

    cpdef void add(self, Py_ssize_t col, int64_t n):
        if <size_t>col >= <size_t>self.ncols:
            _range_error(self._rows.nrows, self.ncols, self.row, col)
        kx_atomic_add64(<uint64_t *>&self.cells[col], <uint64_t>n)

    def set_histogram(self, Py_ssize_t base, bounds):
        """observe_us() files into columns base .. base + len(bounds) + 2: a bucket per
        bound, the overflow bucket, the sum, the count."""
        cdef Py_ssize_t i, n = len(bounds)
        if n > 32 or base < 0 or base + n + 3 > self.ncols:
            raise ValueError("histogram does not fit the row")
        for i in range(n):
            self.bounds[i] = bounds[i]
        self.nbounds = n
        self.hist_base = base

    cpdef void observe_us(self, int64_t us):
        cdef Py_ssize_t i = 0
        if self.hist_base < 0:
            raise ValueError("no histogram set")
        while i < self.nbounds and self.bounds[i] < us:
            i += 1
        kx_atomic_add64(<uint64_t *>&self.cells[self.hist_base + i], 1)
        kx_atomic_add64(<uint64_t *>&self.cells[self.hist_base + self.nbounds + 1], <uint64_t>us)
        kx_atomic_add64(<uint64_t *>&self.cells[self.hist_base + self.nbounds + 2], 1)


cdef class SharedMutex(_Striped):
    """One robust process-shared mutex for a structure whose records Python code reads and
    writes under it (kampx/dialog_table.py): a lock and an unlock without a system call when
    nobody else holds it (a POSIX record lock costs two). Not re-entrant. Taken without the
    GIL when it must wait, so a thread of the same process holding it can finish."""

    def __init__(self):
        self._map(2 * LINE)
        self._init_locks(<kx_mutex_t *>(self.base + LINE), 1)

    def __enter__(self):
        self.acquire()
        return None

    def __exit__(self, *exc):
        kx_mutex_unlock(self.locks)
        return False

    cdef int acquire(self) except -1:
        cdef int rc = kx_mutex_trylock(self.locks)
        if rc == 2:
            with nogil:
                rc = kx_mutex_lock(self.locks)
        if rc == 1:
            kx_atomic_add64(&(<uint64_t *>self.base)[0], 1)
        elif rc < 0:
            raise LockError("the shared mutex is unusable")
        return 0

    cdef void release(self) noexcept:
        kx_mutex_unlock(self.locks)


# the slot head of kampx/dialog_table.py ("<BBHHHQddII"): byte offsets of its fields
cdef enum:
    D_STATE = 0
    D_DIRECTION = 1
    D_NSETUP = 2
    D_NANSWER = 4
    D_SESSION = 6
    D_HASH = 8
    D_EXPIRES = 16
    D_ANSWERED = 24
    D_CALLER_CSEQ = 32
    D_CALLEE_CSEQ = 36
    D_FREE = 0
    D_TOMBSTONE = 255


@cython.final
cdef class DialogSlots:
    """The per-call operations of kampx/dialog_table.py's slots (create, set_state,
    answer, refresh, take) in C over its shared mapping, under its SharedMutex: the layout,
    probing and counting are the Python module's (its docstring); this only does them
    without a struct pack or a slice per field. `h` is the dialog key's hash (key_hash)."""

    cdef object _view  # the mapping's buffer, held: the pointer below stays valid
    cdef unsigned char *base
    cdef uint64_t *words
    cdef SharedMutex mutex
    cdef Py_ssize_t capacity, nslots, header, slot, setup_at, answer_at, probe

    def __init__(self, mm, SharedMutex mutex, Py_ssize_t capacity, Py_ssize_t nslots,
                 Py_ssize_t header, Py_ssize_t slot, Py_ssize_t setup_at, Py_ssize_t answer_at,
                 Py_ssize_t probe):
        cdef unsigned char[::1] view = mm
        if view.shape[0] < header + nslots * slot:
            raise ValueError("the mapping is smaller than the slots")
        self._view = view
        self.base = &view[0]
        self.words = <uint64_t *>self.base
        self.mutex = mutex
        self.capacity, self.nslots, self.header, self.slot = capacity, nslots, header, slot
        self.setup_at, self.answer_at, self.probe = setup_at, answer_at, probe

    cdef inline unsigned char *_at(self, Py_ssize_t i) noexcept:
        return self.base + self.header + i * self.slot

    cdef Py_ssize_t _find(self, uint64_t h) noexcept:
        cdef Py_ssize_t i = <Py_ssize_t>(h % <uint64_t>self.nslots), j
        cdef unsigned char *p
        for j in range(self.probe):
            p = self._at(i)
            if p[D_STATE] == D_FREE:
                return -1
            if p[D_STATE] != D_TOMBSTONE and memcmp(p + D_HASH, &h, 8) == 0:
                return i
            i = i + 1 if i + 1 < self.nslots else 0
        return -1

    cdef void _count(self, int state, int delta) noexcept:
        cdef uint64_t d = <uint64_t><int64_t>delta
        self.words[0] += d
        if state == 2:
            self.words[1] += d
        elif state == 3:
            self.words[2] += d

    cdef unsigned char *_locked_slot(self, uint64_t h) except? NULL:
        # dialog h's slot with the lock held (the caller releases it); NULL, the lock
        # released, when h is not tracked
        cdef Py_ssize_t i
        self.mutex.acquire()
        i = self._find(h)
        if i < 0:
            self.mutex.release()
            return NULL
        return self._at(i)

    cdef void _move(self, int old, int new) noexcept:
        if new != old:
            self._count(old, -1)
            self._count(new, 1)

    def create(self, uint64_t h, int state, double expires, bytes data, int direction):
        """A new slot: the INVITE's record `data`, `state`, `direction`, `expires`; False
        when the table is at capacity or no free slot is within the probe window."""
        cdef Py_ssize_t n = len(data), i, j
        cdef unsigned char *p
        cdef uint16_t zero16 = 0, n16 = <uint16_t>n
        cdef double zero = 0.0
        cdef uint32_t zero32 = 0
        if n > self.answer_at - self.setup_at:
            raise ValueError("the setup record is larger than its room")
        self.mutex.acquire()
        try:
            if self.words[0] >= <uint64_t>self.capacity:
                self.words[3] += 1
                return False
            i = <Py_ssize_t>(h % <uint64_t>self.nslots)
            for j in range(self.probe):
                p = self._at(i)
                if p[D_STATE] == D_FREE or p[D_STATE] == D_TOMBSTONE:
                    memcpy(p + self.setup_at, PyBytes_AS_STRING(data), n)
                    p[D_DIRECTION] = <unsigned char>direction
                    memcpy(p + D_NSETUP, &n16, 2)
                    memcpy(p + D_NANSWER, &zero16, 2)
                    memcpy(p + D_SESSION, &zero16, 2)
                    memcpy(p + D_HASH, &h, 8)
                    memcpy(p + D_EXPIRES, &expires, 8)
                    memcpy(p + D_ANSWERED, &zero, 8)
                    memcpy(p + D_CALLER_CSEQ, &zero32, 4)
                    memcpy(p + D_CALLEE_CSEQ, &zero32, 4)
                    p[D_STATE] = <unsigned char>state  # last: the slot is taken now
                    self._count(state, 1)
                    return True
                i = i + 1 if i + 1 < self.nslots else 0
            self.words[3] += 1
            return False
        finally:
            self.mutex.release()

    def set_state(self, uint64_t h, int state, double expires):
        cdef unsigned char *p
        cdef int old
        p = self._locked_slot(h)
        if p == NULL:
            return False
        try:
            old = p[D_STATE]
            memcpy(p + D_EXPIRES, &expires, 8)
            p[D_STATE] = <unsigned char>state
            self._move(old, state)
            return True
        finally:
            self.mutex.release()

    def answer(self, uint64_t h, int state, double expires, bytes data, int session_s,
               double answered):
        """The 2xx's record, once (a second 2xx of a forked INVITE finds it set: False)."""
        cdef Py_ssize_t n = len(data)
        cdef unsigned char *p
        cdef uint16_t have, n16 = <uint16_t>n, s16 = <uint16_t>session_s
        cdef int old
        if n > self.slot - self.answer_at:
            raise ValueError("the answer record is larger than its room")
        p = self._locked_slot(h)
        if p == NULL:
            return False
        try:
            memcpy(&have, p + D_NANSWER, 2)
            if have:
                return False
            memcpy(p + self.answer_at, PyBytes_AS_STRING(data), n)
            memcpy(p + D_NANSWER, &n16, 2)
            memcpy(p + D_SESSION, &s16, 2)
            memcpy(p + D_EXPIRES, &expires, 8)
            memcpy(p + D_ANSWERED, &answered, 8)
            old = p[D_STATE]
            p[D_STATE] = <unsigned char>state
            self._move(old, state)
            return True
        finally:
            self.mutex.release()

    def refresh(self, uint64_t h, double now, double lifetime, bint caller, uint32_t cseq,
                bint session):
        """An in-dialog request: the sender's highest CSeq, and the dialog's new end (its
        session interval instead of `lifetime` when it has one; only a session refresh
        renews that)."""
        cdef unsigned char *p
        cdef uint32_t have
        cdef uint16_t session_s
        cdef double expires
        p = self._locked_slot(h)
        if p == NULL:
            return False
        try:
            memcpy(&have, p + (D_CALLER_CSEQ if caller else D_CALLEE_CSEQ), 4)
            if cseq > have:
                memcpy(p + (D_CALLER_CSEQ if caller else D_CALLEE_CSEQ), &cseq, 4)
            memcpy(&session_s, p + D_SESSION, 2)
            if not session_s:
                expires = now + lifetime
                memcpy(p + D_EXPIRES, &expires, 8)
            elif session:
                expires = now + session_s
                memcpy(p + D_EXPIRES, &expires, 8)
            return True
        finally:
            self.mutex.release()

    def take(self, uint64_t h):
        """Free the slot: (state, direction, answer time or 0, setup record, answer
        record); None when `h` is not tracked (exactly one caller gets a dialog's end)."""
        cdef unsigned char *p
        cdef uint16_t n_setup, n_answer
        cdef double answered
        cdef int state
        p = self._locked_slot(h)
        if p == NULL:
            return None
        try:
            state = p[D_STATE]
            memcpy(&n_setup, p + D_NSETUP, 2)
            memcpy(&n_answer, p + D_NANSWER, 2)
            memcpy(&answered, p + D_ANSWERED, 8)
            out = (state, p[D_DIRECTION], answered,
                   (<char *>p)[self.setup_at:self.setup_at + n_setup],
                   (<char *>p)[self.answer_at:self.answer_at + n_answer])
            p[D_STATE] = D_TOMBSTONE
            self._count(state, -1)
            return out
        finally:
            self.mutex.release()


cdef inline void _plan(Py_ssize_t capacity, int *segbits, uint64_t *nbuckets) noexcept nogil:
    """Segments of >= SEG_TARGET entries (up to 1024 of them); buckets per segment a power of
    two with room for twice the segment's share, so two-choice placement keeps every bucket
    below eight live entries with overwhelming probability."""
    cdef int bits = 0
    cdef Py_ssize_t per_seg, need
    cdef uint64_t nb = 2
    while bits < MAX_SEG_BITS and (capacity >> (bits + 1)) >= SEG_TARGET:
        bits += 1
    per_seg = (capacity + (1 << bits) - 1) >> bits
    need = (2 * per_seg + BUCKET - 1) // BUCKET
    while nb < <uint64_t>need:
        nb <<= 1
    segbits[0] = bits
    nbuckets[0] = nb


cdef inline Py_ssize_t _seg_of(uint64_t h, int segbits) noexcept nogil:
    return 0 if segbits == 0 else <Py_ssize_t>(h >> (64 - segbits))


cdef inline void _buckets(uint64_t h, uint64_t bmask, uint64_t *b1, uint64_t *b2) noexcept nogil:
    # Low bits pick the first bucket, bits 24.. the second; the segment uses the top bits.
    b1[0] = h & bmask
    b2[0] = (h >> 24) & bmask
    if b2[0] == b1[0]:
        b2[0] = b1[0] ^ 1


cdef int _check_capacity(Py_ssize_t capacity) except -1:
    if not 1 <= capacity <= MAX_CAPACITY:
        raise ValueError(f"capacity must be 1..{MAX_CAPACITY}, not {capacity}")
    return 0


cdef uint64_t _seed64(object seed) except? 0:
    return <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)


# ---------------------------------------------------------------------------------------------
# CounterRows

cdef int _range_error(Py_ssize_t nrows, Py_ssize_t ncols, Py_ssize_t row,
                      Py_ssize_t col) except -1:
    if not 0 <= row < nrows:
        raise IndexError(f"row {row} out of range 0..{nrows - 1}")
    raise IndexError(f"column {col} out of range 0..{ncols - 1}")

cdef class CounterRows(_Region):
    """Per-process counter rows (Kamailio counters.c): a process adds to its own row, readers
    sum the rows. Adds are relaxed atomics, so even a row shared by mistake stays exact."""

    def __init__(self, Py_ssize_t nrows, Py_ssize_t ncols):
        if nrows < 1 or ncols < 1:
            raise ValueError("nrows and ncols must be >= 1")
        self.nrows = nrows
        self.ncols = ncols
        self.stride = _round_line(ncols * sizeof(int64_t)) // sizeof(int64_t)
        self._map(<size_t>(nrows * self.stride) * sizeof(int64_t))
        self.cells = <int64_t *>self.base

    cdef int c_add(self, Py_ssize_t row, Py_ssize_t col, int64_t n) noexcept nogil:
        if <size_t>row >= <size_t>self.nrows or <size_t>col >= <size_t>self.ncols:
            return -1
        kx_atomic_add64(<uint64_t *>&self.cells[row * self.stride + col], <uint64_t>n)
        return 0

    cpdef void inc(self, Py_ssize_t row, Py_ssize_t col):
        if self.c_add(row, col, 1):
            _range_error(self.nrows, self.ncols, row, col)

    cpdef void add(self, Py_ssize_t row, Py_ssize_t col, int64_t n):
        if self.c_add(row, col, n):
            _range_error(self.nrows, self.ncols, row, col)

    cpdef int64_t add_get(self, Py_ssize_t row, Py_ssize_t col, int64_t n) except? -1:
        """Add n and return the cell's new value, in one atomic step: a shared total that
        several processes test against a limit (add, then back out if over)."""
        if <size_t>row >= <size_t>self.nrows or <size_t>col >= <size_t>self.ncols:
            _range_error(self.nrows, self.ncols, row, col)
        return <int64_t>kx_atomic_add64(<uint64_t *>&self.cells[row * self.stride + col],
                                        <uint64_t>n)

    def get(self, Py_ssize_t row, Py_ssize_t col):
        if <size_t>row >= <size_t>self.nrows or <size_t>col >= <size_t>self.ncols:
            _range_error(self.nrows, self.ncols, row, col)
        return <int64_t>kx_atomic_load64(<uint64_t *>&self.cells[row * self.stride + col])

    def column_sums(self):
        cdef Py_ssize_t r, c
        cdef list out = [0] * self.ncols
        cdef int64_t s
        for c in range(self.ncols):
            s = 0
            for r in range(self.nrows):
                s += <int64_t>kx_atomic_load64(<uint64_t *>&self.cells[r * self.stride + c])
            out[c] = s
        return out

    def column_sum(self, Py_ssize_t col):
        """One column's sum over all rows (a shared total kept per process)."""
        cdef Py_ssize_t r
        cdef int64_t s = 0
        if not 0 <= col < self.ncols:
            _range_error(self.nrows, self.ncols, 0, col)
        for r in range(self.nrows):
            s += <int64_t>kx_atomic_load64(<uint64_t *>&self.cells[r * self.stride + col])
        return s

    def row(self, Py_ssize_t r):
        cdef Py_ssize_t c
        if not 0 <= r < self.nrows:
            _range_error(self.nrows, self.ncols, r, 0)
        return [<int64_t>kx_atomic_load64(<uint64_t *>&self.cells[r * self.stride + c])
                for c in range(self.ncols)]

    def zero_row(self, Py_ssize_t r):
        cdef Py_ssize_t c
        if not 0 <= r < self.nrows:
            _range_error(self.nrows, self.ncols, r, 0)
        for c in range(self.ncols):
            kx_atomic_store64(<uint64_t *>&self.cells[r * self.stride + c], 0)

    def fold_row(self, Py_ssize_t src, Py_ssize_t dst):
        """Move row src's counts into row dst and leave src at zero, so column sums never go
        backwards when a dead process's row is handed to its replacement. Exact even while
        src's owner is still adding (each value is moved with two atomic adds)."""
        cdef Py_ssize_t c
        cdef uint64_t v
        if not 0 <= src < self.nrows:
            _range_error(self.nrows, self.ncols, src, 0)
        if not 0 <= dst < self.nrows:
            _range_error(self.nrows, self.ncols, dst, 0)
        if src == dst:
            return
        for c in range(self.ncols):
            v = kx_atomic_load64(<uint64_t *>&self.cells[src * self.stride + c])
            kx_atomic_add64(<uint64_t *>&self.cells[dst * self.stride + c], v)
            kx_atomic_add64(<uint64_t *>&self.cells[src * self.stride + c], <uint64_t>0 - v)

    @property
    def shape(self):
        """(nrows, ncols)."""
        return (self.nrows, self.ncols)


# ---------------------------------------------------------------------------------------------
# KeyIndex

# TxnSlot (_shm.pxd): a key's seeded hash and its expiry << 8 | one-byte value

cdef enum:
    TXN_FULL = -2
    TXN_NONE = -1

cdef uint64_t MAX_USEC = (<uint64_t>1 << 56) - 1


cdef inline uint64_t _usec(double t) noexcept nogil:
    if not t > 0:          # also NaN
        return 0
    if t >= <double>MAX_USEC / 1e6:
        return MAX_USEC
    return <uint64_t>(t * 1e6)


cdef inline bint _txn_live(uint64_t word, uint64_t now_us) noexcept nogil:
    return (word >> 8) > now_us


cdef TxnSlot *_txn_find(TxnSlot *b1, TxnSlot *b2, uint64_t h) noexcept nogil:
    cdef int i
    for i in range(BUCKET):
        if kx_atomic_load64(&b1[i].key) == h:
            return &b1[i]
    for i in range(BUCKET):
        if kx_atomic_load64(&b2[i].key) == h:
            return &b2[i]
    return NULL


cdef int _txn_claim(TxnSlot *b1, TxnSlot *b2, uint64_t h, uint64_t word,
                    uint64_t now_us) noexcept nogil:
    cdef TxnSlot *bk[2]
    cdef TxnSlot *free_slot[2]
    cdef int live[2]
    cdef TxnSlot *s
    cdef TxnSlot *target
    cdef uint64_t k, w
    cdef int i, j
    bk[0] = b1
    bk[1] = b2
    free_slot[0] = free_slot[1] = NULL
    live[0] = live[1] = 0
    for j in range(2):
        for i in range(BUCKET):
            s = &bk[j][i]
            k = kx_atomic_load64(&s.key)
            if k == h:
                w = kx_atomic_load64(&s.word)
                if _txn_live(w, now_us):
                    return <int>(w & 0xFF)
                # Same key, expired: take it over in place so a key never has two slots.
                kx_atomic_store64(&s.word, word)
                return <int>(word & 0xFF)
            if k == 0 or not _txn_live(kx_atomic_load64(&s.word), now_us):
                if free_slot[j] == NULL:
                    free_slot[j] = s
            else:
                live[j] += 1
    if free_slot[0] != NULL and (free_slot[1] == NULL or live[0] <= live[1]):
        target = free_slot[0]
    elif free_slot[1] != NULL:
        target = free_slot[1]
    else:
        return TXN_FULL
    kx_atomic_store64(&target.key, 0)
    kx_atomic_store64(&target.word, word)
    kx_atomic_store64(&target.key, h)
    return <int>(word & 0xFF)


@cython.final
cdef class KeyIndex(_Striped):
    """A key -> one-byte value (0..255) with an expiry. Two uses: the transaction index (RFC
    3261 17.2.3 transaction key -> owner worker id) and the dialog index (Call-ID and the
    caller's tag -> dialog state)."""
    # fields and C methods: _shm.pxd

    def __init__(self, Py_ssize_t capacity, seed):
        cdef uint64_t nb
        cdef int bits
        cdef size_t head, nslots
        _check_capacity(capacity)
        _plan(capacity, &bits, &nb)
        self._capacity = capacity
        self.seed = _seed64(seed)
        self.segbits = bits
        self.nbuckets = nb
        nslots = (<size_t>1 << bits) * nb * BUCKET
        head = LINE + (<size_t>1 << bits) * sizeof(kx_mutex_t)
        self._map(head + nslots * sizeof(TxnSlot))
        self._init_locks(<kx_mutex_t *>(self.base + LINE), 1 << bits)
        self.slots = <TxnSlot *>(self.base + head)

    cdef Py_ssize_t _locate(self, bytes key, uint64_t *h, TxnSlot **b1,
                            TxnSlot **b2) except -1:
        """Hash key; point b1/b2 at its two candidate buckets; return its segment (stripe)."""
        cdef Py_ssize_t seg
        cdef uint64_t i1, i2
        cdef TxnSlot *segbase
        if key is None:
            raise TypeError("a key index's key is bytes, not None")
        h[0] = kx_hash64(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), self.seed)
        seg = _seg_of(h[0], self.segbits)
        segbase = self.slots + <size_t>seg * self.nbuckets * BUCKET
        _buckets(h[0], self.nbuckets - 1, &i1, &i2)
        b1[0] = segbase + i1 * BUCKET
        b2[0] = segbase + i2 * BUCKET
        # In a big table both buckets (two lines each) and the stripe lock are cache misses:
        # issue them together instead of one after another.
        __builtin_prefetch(&self.locks[seg])
        __builtin_prefetch(b1[0])
        __builtin_prefetch(b1[0] + BUCKET // 2)
        __builtin_prefetch(b2[0])
        __builtin_prefetch(b2[0] + BUCKET // 2)
        return seg

    cdef int _owner_arg(self, int owner) except -1:
        if not 0 <= owner <= 255:
            raise ValueError(f"value must be 0..255, not {owner}")
        return 0

    cpdef int claim(self, bytes key, int owner, double now, double ttl) except? -99:
        cdef uint64_t h
        cdef TxnSlot *b1
        cdef TxnSlot *b2
        cdef Py_ssize_t seg
        cdef int r
        self._owner_arg(owner)
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0, not {ttl}")
        seg = self._locate(key, &h, &b1, &b2)
        r = _txn_locked_claim(&self.locks[seg], <uint64_t *>self.base, b1, b2, h,
                              (_usec(now + ttl) << 8) | <uint64_t>owner, _usec(now))
        if r == LOCK_FAILED:
            raise LockError("key index stripe lock is unrecoverable")
        return r

    cpdef int lookup(self, bytes key, double now) except? -99:
        cdef uint64_t h
        cdef TxnSlot *b1
        cdef TxnSlot *b2
        cdef Py_ssize_t seg = self._locate(key, &h, &b1, &b2)
        cdef int r = _txn_locked_lookup(&self.locks[seg], <uint64_t *>self.base, b1, b2,
                                        h, _usec(now))
        if r == LOCK_FAILED:
            raise LockError("key index stripe lock is unrecoverable")
        return r

    def refresh(self, bytes key not None, int owner, double expires_at):
        cdef uint64_t h
        cdef TxnSlot *b1
        cdef TxnSlot *b2
        cdef Py_ssize_t seg
        cdef int r
        self._owner_arg(owner)
        seg = self._locate(key, &h, &b1, &b2)
        r = _txn_locked_refresh(&self.locks[seg], <uint64_t *>self.base, b1, b2, h,
                                owner, (_usec(expires_at) << 8) | <uint64_t>owner)
        if r == LOCK_FAILED:
            raise LockError("key index stripe lock is unrecoverable")
        return r == 1

    cpdef bint release(self, bytes key, int owner) except -1:
        cdef uint64_t h
        cdef TxnSlot *b1
        cdef TxnSlot *b2
        cdef Py_ssize_t seg
        cdef int r
        self._owner_arg(owner)
        seg = self._locate(key, &h, &b1, &b2)
        r = _txn_locked_release(&self.locks[seg], <uint64_t *>self.base, b1, b2,
                                h, owner)
        if r == LOCK_FAILED:
            raise LockError("key index stripe lock is unrecoverable")
        return r == 1

    cpdef bint put(self, bytes key, int value, double now, double expires_at) except -1:
        cdef uint64_t h
        cdef TxnSlot *b1
        cdef TxnSlot *b2
        cdef Py_ssize_t seg
        cdef int r
        self._owner_arg(value)
        seg = self._locate(key, &h, &b1, &b2)
        r = _txn_locked_put(&self.locks[seg], <uint64_t *>self.base, b1, b2, h,
                            (_usec(expires_at) << 8) | <uint64_t>value, _usec(now))
        if r == LOCK_FAILED:
            raise LockError("key index stripe lock is unrecoverable")
        return r == 1

    def discard(self, bytes key not None):
        cdef uint64_t h
        cdef TxnSlot *b1
        cdef TxnSlot *b2
        cdef Py_ssize_t seg
        cdef int r
        seg = self._locate(key, &h, &b1, &b2)
        r = _txn_locked_release(&self.locks[seg], <uint64_t *>self.base, b1, b2, h, -1)
        if r == LOCK_FAILED:
            raise LockError("key index stripe lock is unrecoverable")
        return r == 1

    def purge_owner(self, int owner):
        cdef Py_ssize_t n
        self._owner_arg(owner)
        with nogil:
            n = _txn_scan(self.locks, <uint64_t *>self.base, self.slots, self.nlocks,
                          self.nbuckets * BUCKET, owner, 0)
        if n < 0:
            raise LockError("key index stripe lock is unrecoverable")
        return n

    def count(self, double now):
        cdef Py_ssize_t n
        cdef uint64_t now_us = _usec(now)
        with nogil:
            n = _txn_scan(self.locks, <uint64_t *>self.base, self.slots, self.nlocks,
                          self.nbuckets * BUCKET, -1, now_us)
        if n < 0:
            raise LockError("key index stripe lock is unrecoverable")
        return n

    def _stripe_of(self, bytes key not None):
        """Test hook: the lock stripe guarding key."""
        cdef TxnSlot *b1
        cdef TxnSlot *b2
        cdef uint64_t h
        return self._locate(key, &h, &b1, &b2)

    @property
    def capacity(self):
        """Entries the index was sized for (it holds more until a bucket pair fills)."""
        return self._capacity

    @property
    def slots_total(self):
        """Physical slots (about 2-4x capacity)."""
        return self.nlocks * self.nbuckets * BUCKET


cdef int _txn_locked_claim(kx_mutex_t *m, uint64_t *stats, TxnSlot *b1, TxnSlot *b2, uint64_t h,
                           uint64_t word, uint64_t now_us) noexcept nogil:
    cdef int r
    if _lock(m, stats) != 0:
        return LOCK_FAILED
    r = _txn_claim(b1, b2, h, word, now_us)
    kx_mutex_unlock(m)
    return r


cdef int _txn_locked_lookup(kx_mutex_t *m, uint64_t *stats, TxnSlot *b1, TxnSlot *b2, uint64_t h,
                            uint64_t now_us) noexcept nogil:
    cdef TxnSlot *s
    cdef uint64_t w
    cdef int r = TXN_NONE
    if _lock(m, stats) != 0:
        return LOCK_FAILED
    s = _txn_find(b1, b2, h)
    if s != NULL:
        w = kx_atomic_load64(&s.word)
        if _txn_live(w, now_us):
            r = <int>(w & 0xFF)
    kx_mutex_unlock(m)
    return r


cdef int _txn_locked_refresh(kx_mutex_t *m, uint64_t *stats, TxnSlot *b1, TxnSlot *b2, uint64_t h,
                             int owner, uint64_t word) noexcept nogil:
    cdef TxnSlot *s
    cdef int r = 0
    if _lock(m, stats) != 0:
        return LOCK_FAILED
    s = _txn_find(b1, b2, h)
    if s != NULL and <int>(kx_atomic_load64(&s.word) & 0xFF) == owner:
        kx_atomic_store64(&s.word, word)
        r = 1
    kx_mutex_unlock(m)
    return r


cdef int _txn_locked_release(kx_mutex_t *m, uint64_t *stats, TxnSlot *b1, TxnSlot *b2, uint64_t h,
                             int owner) noexcept nogil:
    """Remove h's entry if its value is `owner` (any value when owner < 0)."""
    cdef TxnSlot *s
    cdef int r = 0
    if _lock(m, stats) != 0:
        return LOCK_FAILED
    s = _txn_find(b1, b2, h)
    if s != NULL and (owner < 0 or <int>(kx_atomic_load64(&s.word) & 0xFF) == owner):
        kx_atomic_store64(&s.key, 0)
        r = 1
    kx_mutex_unlock(m)
    return r


cdef int _txn_locked_put(kx_mutex_t *m, uint64_t *stats, TxnSlot *b1, TxnSlot *b2, uint64_t h,
                         uint64_t word, uint64_t now_us) noexcept nogil:
    """Set h's entry to `word`, in place when it exists (live or not), else in a free slot:
    1, or 0 when both buckets are full of live entries."""
    cdef TxnSlot *s
    cdef int r
    if _lock(m, stats) != 0:
        return LOCK_FAILED
    s = _txn_find(b1, b2, h)
    if s != NULL:
        kx_atomic_store64(&s.word, word)
        r = 1
    else:
        r = 0 if _txn_claim(b1, b2, h, word, now_us) == TXN_FULL else 1
    kx_mutex_unlock(m)
    return r


cdef Py_ssize_t _txn_scan(kx_mutex_t *locks, uint64_t *stats, TxnSlot *slots, Py_ssize_t nseg,
                          uint64_t seg_slots, int purge_owner, uint64_t now_us) noexcept nogil:
    """purge_owner >= 0: remove that owner's entries and return how many; otherwise count the
    entries live at now_us. One segment locked at a time. -1 on a broken lock."""
    cdef Py_ssize_t seg, n = 0
    cdef uint64_t i, w
    cdef TxnSlot *s
    for seg in range(nseg):
        if _lock(&locks[seg], stats) != 0:
            return -1
        s = slots + <size_t>seg * seg_slots
        for i in range(seg_slots):
            if kx_atomic_load64(&s[i].key) == 0:
                continue
            w = kx_atomic_load64(&s[i].word)
            if purge_owner >= 0:
                if <int>(w & 0xFF) == purge_owner:
                    kx_atomic_store64(&s[i].key, 0)
                    n += 1
            elif _txn_live(w, now_us):
                n += 1
        kx_mutex_unlock(&locks[seg])
    return n


# ---------------------------------------------------------------------------------------------
# RateTable

cdef struct RateRec:
    double window_end       # the current counting window ends here
    double banned_until     # 0 = no ban on record
    uint32_t count          # events in the current window
    uint8_t iplen           # 4 or 16
    uint8_t ip[16]

cdef enum:
    RATE_STAT_OVERFLOWS = 1     # stats[1]; stats[0] counts lock recoveries


cdef inline bint _rate_expired(const RateRec *r, double now) noexcept nogil:
    return r.window_end <= now and r.banned_until <= now


cdef Py_ssize_t _rate_slot(uint64_t *keys, RateRec *recs, uint64_t b1, uint64_t b2, uint64_t h,
                           const uint8_t *ip, uint8_t iplen, double now, bint create,
                           bint *found) noexcept nogil:
    """Slot index of ip's record (found=1), else with create a free slot in the less loaded
    bucket (found=0; the caller fills it), else -1. A slot is free when empty or expired."""
    cdef uint64_t bk[2]
    cdef Py_ssize_t free_slot[2]
    cdef int live[2]
    cdef int i, j
    cdef uint64_t s, k
    bk[0] = b1 * BUCKET
    bk[1] = b2 * BUCKET
    free_slot[0] = free_slot[1] = -1
    live[0] = live[1] = 0
    found[0] = 0
    for j in range(2):
        for i in range(BUCKET):
            s = bk[j] + i
            k = kx_atomic_load64(&keys[s])
            if k == h and recs[s].iplen == iplen and memcmp(recs[s].ip, ip, iplen) == 0:
                found[0] = 1
                return <Py_ssize_t>s
            if k == 0 or _rate_expired(&recs[s], now):
                if free_slot[j] < 0:
                    free_slot[j] = <Py_ssize_t>s
            else:
                live[j] += 1
    if not create:
        return -1
    if free_slot[0] >= 0 and (free_slot[1] < 0 or live[0] <= live[1]):
        return free_slot[0]
    return free_slot[1]


cdef inline void _rate_fill(uint64_t *keys, RateRec *r, Py_ssize_t s, uint64_t h,
                            const uint8_t *ip, uint8_t iplen, double window_end,
                            uint32_t count, double banned_until) noexcept nogil:
    kx_atomic_store64(&keys[s], 0)
    r.window_end = window_end
    r.banned_until = banned_until
    r.count = count
    r.iplen = iplen
    memcpy(r.ip, ip, iplen)
    kx_atomic_store64(&keys[s], h)      # release: the record above is complete before this


cdef int _rate_hit(kx_mutex_t *m, uint64_t *stats, uint64_t *keys, RateRec *recs, uint64_t b1,
                   uint64_t b2, uint64_t h, const uint8_t *ip, uint8_t iplen, double now,
                   double window_s, int64_t limit, double ban_s) noexcept nogil:
    cdef bint found
    cdef Py_ssize_t s
    cdef RateRec *r
    cdef int blocked = 0
    if _lock(m, stats) != 0:
        return LOCK_FAILED
    s = _rate_slot(keys, recs, b1, b2, h, ip, iplen, now, 1, &found)
    if s < 0:
        kx_atomic_add64(&stats[RATE_STAT_OVERFLOWS], 1)          # full: fail open
    elif not found:
        if 1 > limit:
            _rate_fill(keys, &recs[s], s, h, ip, iplen, now + window_s, 1, now + ban_s)
            blocked = 1
        else:
            _rate_fill(keys, &recs[s], s, h, ip, iplen, now + window_s, 1, 0.0)
    else:
        r = &recs[s]
        if r.banned_until > now:
            blocked = 1
        else:
            if r.banned_until != 0.0 or now >= r.window_end:
                # A lapsed ban or an elapsed window: count from zero in a new window.
                r.banned_until = 0.0
                r.count = 0
                r.window_end = now + window_s
            if r.count != UINT32_MAX:
                r.count += 1
            if <int64_t>r.count > limit:
                r.banned_until = now + ban_s
                blocked = 1
    kx_mutex_unlock(m)
    return blocked


cdef int _rate_query(kx_mutex_t *m, uint64_t *stats, uint64_t *keys, RateRec *recs, uint64_t b1,
                     uint64_t b2, uint64_t h, const uint8_t *ip, uint8_t iplen, double now,
                     int op, double ban_s) noexcept nogil:
    """op 0: blocked? (1/0)  op 1: ban (1 recorded, 0 no room)  op 2: unban (1 had a ban)."""
    cdef bint found
    cdef Py_ssize_t s
    cdef int r = 0
    if _lock(m, stats) != 0:
        return LOCK_FAILED
    s = _rate_slot(keys, recs, b1, b2, h, ip, iplen, now, op == 1, &found)
    if op == 0:
        r = found and recs[s].banned_until > now
    elif op == 1:
        if s < 0:
            kx_atomic_add64(&stats[RATE_STAT_OVERFLOWS], 1)
        elif found:
            recs[s].banned_until = now + ban_s
            r = 1
        else:
            _rate_fill(keys, &recs[s], s, h, ip, iplen, now, 0, now + ban_s)
            r = 1
    elif found:
        r = recs[s].banned_until != 0.0
        kx_atomic_store64(&keys[s], 0)
    kx_mutex_unlock(m)
    return r


cdef Py_ssize_t _rate_scan(kx_mutex_t *locks, uint64_t *stats, uint64_t *keys, RateRec *recs,
                           Py_ssize_t nseg, uint64_t seg_slots, double now, int op,
                           RateRec *out) noexcept nogil:
    """op 0: remove expired entries; op 1: count banned; op 2: copy live records to out.
    Returns the count, -1 on a broken lock. One segment locked at a time."""
    cdef Py_ssize_t seg, n = 0
    cdef uint64_t i, s
    for seg in range(nseg):
        if _lock(&locks[seg], stats) != 0:
            return -1
        for i in range(seg_slots):
            s = <uint64_t>seg * seg_slots + i
            if kx_atomic_load64(&keys[s]) == 0:
                continue
            if op == 0:
                if _rate_expired(&recs[s], now):
                    kx_atomic_store64(&keys[s], 0)
                    n += 1
            elif op == 1:
                n += recs[s].banned_until > now
            elif not _rate_expired(&recs[s], now):
                out[n] = recs[s]
                n += 1
        kx_mutex_unlock(&locks[seg])
    return n


@cython.final
cdef class RateTable(_Striped):
    """Per-source-IP event counters with bans (pike flood limits, failed-auth bans)."""
    cdef uint64_t *keys
    cdef RateRec *recs
    cdef uint64_t seed
    cdef int segbits
    cdef uint64_t nbuckets
    cdef Py_ssize_t _capacity

    def __init__(self, Py_ssize_t capacity, seed):
        cdef uint64_t nb
        cdef int bits
        cdef size_t head, nslots
        _check_capacity(capacity)
        _plan(capacity, &bits, &nb)
        self._capacity = capacity
        self.seed = _seed64(seed)
        self.segbits = bits
        self.nbuckets = nb
        nslots = (<size_t>1 << bits) * nb * BUCKET
        head = LINE + (<size_t>1 << bits) * sizeof(kx_mutex_t)
        # Dense key words first (a bucket's eight keys share one cache line), records after.
        self._map(head + nslots * sizeof(uint64_t) + nslots * sizeof(RateRec))
        self._init_locks(<kx_mutex_t *>(self.base + LINE), 1 << bits)
        self.keys = <uint64_t *>(self.base + head)
        self.recs = <RateRec *>(self.base + head + nslots * sizeof(uint64_t))

    cdef int _locate(self, bytes ip, uint64_t *h, Py_ssize_t *seg, uint64_t *b1,
                     uint64_t *b2) except -1:
        cdef Py_ssize_t n = PyBytes_GET_SIZE(ip)
        if n != 4 and n != 16:
            raise ValueError(f"ip must be 4 or 16 packed bytes (socket.inet_pton), not {n}")
        h[0] = kx_hash64(PyBytes_AS_STRING(ip), n, self.seed)
        seg[0] = _seg_of(h[0], self.segbits)
        _buckets(h[0], self.nbuckets - 1, b1, b2)
        b1[0] += <uint64_t>seg[0] * self.nbuckets
        b2[0] += <uint64_t>seg[0] * self.nbuckets
        __builtin_prefetch(&self.locks[seg[0]])       # see KeyIndex._locate
        __builtin_prefetch(&self.keys[b1[0] * BUCKET])
        __builtin_prefetch(&self.keys[b2[0] * BUCKET])
        return 0

    def hit(self, bytes ip not None, double now, double window_s, int64_t limit, double ban_s):
        cdef uint64_t h, b1, b2
        cdef Py_ssize_t seg
        cdef int r
        self._locate(ip, &h, &seg, &b1, &b2)
        r = _rate_hit(&self.locks[seg], <uint64_t *>self.base, self.keys, self.recs, b1, b2, h,
                      <const uint8_t *>PyBytes_AS_STRING(ip), <uint8_t>PyBytes_GET_SIZE(ip),
                      now, window_s, limit, ban_s)
        if r == LOCK_FAILED:
            raise LockError("rate table stripe lock is unrecoverable")
        return r

    cdef int _query(self, bytes ip, double now, int op, double ban_s) except -2:
        cdef uint64_t h, b1, b2
        cdef Py_ssize_t seg
        cdef int r
        self._locate(ip, &h, &seg, &b1, &b2)
        r = _rate_query(&self.locks[seg], <uint64_t *>self.base, self.keys, self.recs, b1, b2, h,
                        <const uint8_t *>PyBytes_AS_STRING(ip), <uint8_t>PyBytes_GET_SIZE(ip),
                        now, op, ban_s)
        if r == LOCK_FAILED:
            raise LockError("rate table stripe lock is unrecoverable")
        return r

    def blocked(self, bytes ip not None, double now):
        return self._query(ip, now, 0, 0.0) == 1

    def ban(self, bytes ip not None, double now, double ban_s):
        return self._query(ip, now, 1, ban_s) == 1

    def unban(self, bytes ip not None):
        return self._query(ip, 0.0, 2, 0.0) == 1

    cdef Py_ssize_t _scan(self, double now, int op, RateRec *out) except -1:
        cdef Py_ssize_t n
        with nogil:
            n = _rate_scan(self.locks, <uint64_t *>self.base, self.keys, self.recs, self.nlocks,
                           self.nbuckets * BUCKET, now, op, out)
        if n < 0:
            raise LockError("rate table stripe lock is unrecoverable")
        return n

    def expire(self, double now):
        return self._scan(now, 0, NULL)

    def banned_count(self, double now):
        return self._scan(now, 1, NULL)

    def dump(self, double now):
        cdef size_t nslots = <size_t>self.nlocks * self.nbuckets * BUCKET
        cdef RateRec *out = <RateRec *>malloc(nslots * sizeof(RateRec))   # before any lock
        cdef Py_ssize_t i, n
        if out == NULL:
            raise MemoryError()
        try:
            n = self._scan(now, 2, out)
            return [((<char *>out[i].ip)[:out[i].iplen], out[i].count, out[i].banned_until)
                    for i in range(n)]
        finally:
            free(out)

    def _stripe_of(self, bytes ip not None):
        """Test hook: the lock stripe guarding ip."""
        cdef uint64_t h, b1, b2
        cdef Py_ssize_t seg
        self._locate(ip, &h, &seg, &b1, &b2)
        return seg

    @property
    def overflows(self):
        """Events let through (fail open) because no slot was free for a new source."""
        return kx_atomic_load64(&(<uint64_t *>self.base)[RATE_STAT_OVERFLOWS])

    @property
    def capacity(self):
        return self._capacity


# ---------------------------------------------------------------------------------------------
# NonceCounts

cdef uint64_t GEN_SPAN = 0xFFFFFFFF     # generations run 1..2**32-1; 0 marks a never-used slot


@cython.final
cdef class NonceCounts(_Region):
    """Digest nonce-count replay protection: slot = generation << 32 | highest nc seen."""
    cdef uint64_t *next_seq         # header word: allocations so far
    cdef uint64_t *slots
    cdef uint64_t nslots

    def __init__(self, Py_ssize_t size):
        if not 1 <= size <= MAX_CAPACITY:
            raise ValueError(f"size must be 1..{MAX_CAPACITY}, not {size}")
        self.nslots = size
        self._map(LINE + <size_t>size * sizeof(uint64_t))
        self.next_seq = <uint64_t *>self.base
        self.slots = <uint64_t *>(self.base + LINE)

    def new_index(self):
        cdef uint64_t seq = kx_atomic_add64(self.next_seq, 1) - 1
        cdef uint64_t idx = seq % self.nslots
        cdef uint64_t gen = (seq // self.nslots) % GEN_SPAN + 1
        cdef uint64_t cur
        while True:
            cur = kx_atomic_load64(&self.slots[idx])
            # A process that lapped us (size allocations later) already owns the slot: leave it.
            if (cur >> 32) != 0 and <int32_t>(<uint32_t>(cur >> 32) - <uint32_t>gen) > 0:
                break
            if kx_atomic_cas64(&self.slots[idx], cur, gen << 32):
                break
        return (idx, gen)

    def check(self, Py_ssize_t index, int64_t generation, int64_t nc):
        cdef uint64_t cur
        if not 0 <= nc <= 0xFFFFFFFF:
            raise ValueError(f"nc must be 0..0xffffffff, not {nc}")
        if <size_t>index >= self.nslots or not 1 <= generation <= <int64_t>GEN_SPAN:
            return -1
        while True:
            cur = kx_atomic_load64(&self.slots[index])
            if (cur >> 32) != <uint64_t>generation:
                return -1
            if <uint64_t>nc <= (cur & 0xFFFFFFFF):
                return 0
            if kx_atomic_cas64(&self.slots[index], cur, (<uint64_t>generation << 32) | <uint64_t>nc):
                return 1

    @property
    def size(self):
        return self.nslots
