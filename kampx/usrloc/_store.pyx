# distutils: include_dirs = kampx/include
# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The location table (usrloc): every registration, in shared memory, for every process.

Layout (one anonymous MAP_SHARED mapping, created before fork, inherited by every child):

    header | stripe mutexes | alloc mutex | per-stripe undo journals | free-slot stack |
    bucket heads | slot meta (state, next, hash, expires) | version | persisted | slots

- A binding lives in one fixed-size slot (default 768 bytes: a 48-byte header and 720 bytes
  of packed strings). Typical bindings need 250-450 bytes of strings; 720 leaves room for
  RFC 8599 push contacts (long pn-prid parameters) with a Path. A binding that does not fit
  is refused (ERR_TOO_LARGE); only user_agent is ever cut. All in, with the dense arrays
  below, 1M bindings take 821 MB (821 bytes per binding).
- The AOR's bindings hang off one hash bucket (chained through the dense `meta` array, so
  walks and scans do not touch the big slots). A bucket's chain is guarded by one of 256
  striped robust mutexes; lookups take it too (a few hundred ns, never across Python code).
- Slots are never rewritten while visible. A change writes a fresh slot, then publishes it by
  relinking the chain and flipping state words (copy-on-write). Those few publishing words are
  written through the stripe's undo journal: old value logged first, then the word. A process
  killed inside a critical section leaves the mutex EOWNERDEAD; the next locker rolls the
  journal back, frees the slots the dead process had reserved or retired, and goes on. So a
  whole apply() (all its contacts) is either entirely visible or not at all, and no half-written
  slot is ever reachable.
- Critical sections are C only (nogil functions): no Python code, no allocation by Python, so
  no finalizer can re-enter the store while a mutex is held. Results are copied out under the
  lock and turned into Python objects after it is released.
- Persistence: every change stamps the slot with a fresh global version. The db writer scans
  for version != persisted (two dense arrays, ~2 ms for 1M slots, resuming where its last
  batch stopped), writes the rows, then acknowledges (slot, version) tokens. Deleted bindings
  stay as invisible tombstones until their deletion is acknowledged; a writer that dies before
  acking sees the same changes again, and an ack for a version that has since changed again
  is ignored, so no change is lost.
- Capacity: `capacity` bindings (live + unacknowledged tombstones) plus SPARE slots that only
  copy-on-write refreshes may use, so a full table still accepts re-registrations.
- Several nodes (kampx/cluster.py): sync_put()/sync_drop() apply another node's change, read
  back from the shared database, as already persisted (no new change for the db writer). A
  binding with an unacknowledged local change is left alone: that change reaches the database
  after the remote one and wins there, and comes back to the other nodes in turn.
"""
cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.errno cimport errno
from libc.math cimport INFINITY, isnan
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset
from posix.mman cimport (MAP_ANONYMOUS, MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, madvise,
                         mmap, munmap)

cdef extern from "<sys/mman.h>" nogil:
    int MADV_HUGEPAGE

from kampx.kx_shm cimport (kx_atomic_add64, kx_atomic_load32, kx_atomic_store32, kx_hash64,
                           kx_mix64, kx_mutex_init, kx_mutex_lock, kx_mutex_t, kx_mutex_unlock)

import os

# The publishing words and the undo journal need a compiler barrier between "log the old value"
# and "write the new one": a SIGKILL can land between any two instructions.
cdef extern from *:
    """
    #include <signal.h>
    #include <unistd.h>

    #define KX_UL_FENCE() __atomic_signal_fence(__ATOMIC_SEQ_CST)
    #define kx_ul_prefetch(p) __builtin_prefetch((p), 0, 3)

    typedef struct { uint64_t off; uint64_t old; } kx_ul_jent;   /* off<<1 | is_64bit */
    typedef struct { uint32_t count; char pad[60]; } kx_ul_jhdr;

    /* Test hook (process-local): SIGKILL ourselves at the Nth fault point. */
    static int kx_ul_fault_countdown = 0;
    static inline void kx_ul_fault_point(void) {
        if (kx_ul_fault_countdown > 0 && --kx_ul_fault_countdown == 0) kill(getpid(), SIGKILL);
    }

    static inline void kx_ul_jw32(char *base, kx_ul_jhdr *jh, kx_ul_jent *je, uint32_t *p, uint32_t v) {
        uint32_t n = jh->count;
        je[n].off = (uint64_t)((char *)p - base) << 1;
        je[n].old = *p;
        KX_UL_FENCE();
        __atomic_store_n(&jh->count, n + 1, __ATOMIC_RELAXED);
        KX_UL_FENCE();
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
        kx_ul_fault_point();
    }

    static inline void kx_ul_jw64(char *base, kx_ul_jhdr *jh, kx_ul_jent *je, uint64_t *p, uint64_t v) {
        uint32_t n = jh->count;
        je[n].off = ((uint64_t)((char *)p - base) << 1) | 1;
        je[n].old = *p;
        KX_UL_FENCE();
        __atomic_store_n(&jh->count, n + 1, __ATOMIC_RELAXED);
        KX_UL_FENCE();
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
        kx_ul_fault_point();
    }

    /* Commit: forget the undo records; from here on the changes stand. */
    static inline void kx_ul_jcommit(kx_ul_jhdr *jh) {
        kx_ul_fault_point();
        KX_UL_FENCE();
        __atomic_store_n(&jh->count, 0, __ATOMIC_RELEASE);
        KX_UL_FENCE();
        kx_ul_fault_point();
    }

    /* Roll back, newest first. Each step is idempotent, so a locker killed while rolling back
     * leaves the rest for the next one. */
    static inline void kx_ul_jundo(char *base, kx_ul_jhdr *jh, kx_ul_jent *je, uint32_t cap) {
        uint32_t n = jh->count;
        if (n > cap) n = cap;
        while (n > 0) {
            n--;
            uint64_t off = je[n].off;
            if (off & 1) __atomic_store_n((uint64_t *)(base + (off >> 1)), je[n].old, __ATOMIC_RELAXED);
            else __atomic_store_n((uint32_t *)(base + (off >> 1)), (uint32_t)je[n].old, __ATOMIC_RELAXED);
            KX_UL_FENCE();
            __atomic_store_n(&jh->count, n, __ATOMIC_RELAXED);
            KX_UL_FENCE();
        }
    }
    """
    ctypedef struct kx_ul_jent:
        uint64_t off
        uint64_t old
    ctypedef struct kx_ul_jhdr:
        uint32_t count
    int kx_ul_fault_countdown
    void kx_ul_fault_point() noexcept nogil
    void kx_ul_prefetch(const void *p) noexcept nogil
    void kx_ul_jw32(char *base, kx_ul_jhdr *jh, kx_ul_jent *je, uint32_t *p, uint32_t v) noexcept nogil
    void kx_ul_jw64(char *base, kx_ul_jhdr *jh, kx_ul_jent *je, uint64_t *p, uint64_t v) noexcept nogil
    void kx_ul_jcommit(kx_ul_jhdr *jh) noexcept nogil
    void kx_ul_jundo(char *base, kx_ul_jhdr *jh, kx_ul_jent *je, uint32_t cap) noexcept nogil


# ---------------------------------------------------------------------------------------------
# Public constants

cdef enum:
    R_OK = 0
    R_CSEQ = 1          # same Call-ID and CSeq not higher than the stored binding's (RFC 3261 10.3/7)
    R_FULL = 2          # the table has no room for the new bindings
    R_TOO_MANY = 3      # max_contacts "reject" policy: the AOR would exceed the limit
    R_TOO_LARGE = 4     # a binding's strings do not fit in a slot (or the request is too big)

cdef enum:
    R_SAME = 5          # sync: the table already holds exactly this binding
    R_DIRTY = 6         # sync: the local binding has a change the database has not seen
    R_ABSENT = 7        # sync: no such binding

OK = R_OK
SKIP_SAME = R_SAME
SKIP_DIRTY = R_DIRTY
SKIP_ABSENT = R_ABSENT
ERR_CSEQ = R_CSEQ
ERR_FULL = R_FULL
ERR_TOO_MANY = R_TOO_MANY
ERR_TOO_LARGE = R_TOO_LARGE

DEFAULT_SLOT_SIZE = 768

cdef enum:
    LINE = 64
    MAGIC_LO = 0x6c7573786b     # "kxsul"
    NSTRIPES = 256              # robust mutexes; a power of two
    JCAP = 1024                 # undo records per stripe journal
    JNEED_PER_BINDING = 3       # journal records one binding change needs at most
    SPARE = 1024                # slots only copy-on-write refreshes may use
    SLOT_HDR = 48               # sizeof(Slot)
    NSTR = 9
    RUID_LEN = 16
    MIN_SLOT = 256
    MAX_SLOT = 16384
    SCAN_CHUNK = 64             # buckets a whole-table scan handles per lock hold
    MAX_CAPACITY = 1 << 30
    LOCK_FAILED = -100

# slot states (low byte of meta.state; the stripe number is in the upper 24 bits)
cdef enum:
    ST_FREE = 0
    ST_RESERVED = 1     # taken from the free stack by a writer, not yet published
    ST_LIVE = 2         # linked in its bucket chain
    ST_TOMB = 3         # deleted, unlinked, waiting for the db writer's acknowledgement
    ST_RETIRED = 4      # unlinked by a committed change, about to return to the free stack

# strings packed in a slot, in this order (user_agent last: it is the one that may be cut)
cdef enum:
    S_RUID = 0
    S_AOR = 1
    S_CONTACT = 2
    S_CALLID = 3
    S_RECEIVED = 4
    S_PATH = 5
    S_SOCKET = 6
    S_INSTANCE = 7
    S_UA = 8

# planned action for one binding of the AOR inside apply()
cdef enum:
    A_KEEP = 0
    A_UPDATE = 1
    A_REMOVE = 2
    A_ADD = 3
    A_NONE = 4          # an add that a later contact of the same request cancelled

cdef uint32_t NIL = 0xFFFFFFFFu
cdef uint64_t MAGIC = (<uint64_t>MAGIC_LO << 8) | 1


# ---------------------------------------------------------------------------------------------
# Shared-memory records

cdef struct Hdr:
    uint64_t magic          # names the mapping in a core dump
    uint32_t total          # slots = capacity + SPARE
    uint32_t top            # free-stack height (alloc mutex)
    uint64_t ruid_salt
    uint64_t ruid_counter   # atomic
    uint64_t version_counter  # atomic; versions start at 1, 0 = never written
    uint64_t recoveries     # atomic; stripes/allocator repaired after a dead owner

cdef struct Meta:           # 24 bytes, dense: chains, expiry scans and stats stay out of slots
    uint32_t state
    uint32_t next
    uint64_t hash
    double expires          # INFINITY = permanent

cdef struct Slot:           # SLOT_HDR bytes, then the strings
    double last_modified
    int64_t cseq
    int32_t q
    int32_t reg_id
    uint32_t flags
    uint16_t len[9]
    uint16_t pad

cdef struct Rec:            # a slot copied out of shared memory (private buffer)
    uint32_t size           # whole record, 8-aligned
    uint32_t slot
    uint32_t kind
    uint32_t pad
    uint64_t hash
    uint64_t version
    double expires
    # followed by the slot's bytes

cdef struct Buf:
    char *p
    size_t len
    size_t cap

cdef struct Tbl:
    char *base
    Hdr *hdr
    kx_mutex_t *smx
    kx_mutex_t *amx
    kx_ul_jhdr *jh
    kx_ul_jent *je
    uint32_t *stack
    uint32_t *buckets
    Meta *meta
    uint64_t *version
    uint64_t *persisted
    char *slots
    uint32_t total
    uint32_t capacity
    uint32_t nbuckets
    uint32_t slot_size
    uint32_t data_cap
    uint64_t seed
    bint track

cdef struct Op:             # one contact of apply(), strings borrowed from the caller's objects
    const char *s[9]
    uint32_t n[9]
    double expires          # INFINITY = permanent
    int64_t cseq
    int32_t q
    int32_t reg_id
    uint32_t flags
    bint remove

cdef struct Ent:            # one binding of the AOR while apply() plans
    uint32_t slot           # stored slot, NIL for an add
    uint32_t newslot
    int32_t op              # the contact giving its new content (-1: untouched)
    int32_t order           # request position (tie-break for "oldest"); -1 for stored
    int32_t action
    uint32_t ua_n           # user_agent bytes that fit
    bint expired
    double lm               # last_modified after the request
    char ruid[16]

cdef struct Txn:            # one critical section's publishing state
    Tbl *t
    uint32_t s
    uint32_t nretired
    uint32_t retired[1024]  # JCAP: a retired slot costs at least one journal record


# ---------------------------------------------------------------------------------------------
# Small helpers (nogil)

cdef inline size_t round_line(size_t n) noexcept nogil:
    return (n + LINE - 1) & ~(<size_t>LINE - 1)

cdef inline uint32_t kind_of(uint32_t st) noexcept nogil:
    return st & 0xFF

cdef inline uint32_t stripe_in(uint32_t st) noexcept nogil:
    return st >> 8

cdef inline uint32_t mkstate(uint32_t kind, uint32_t s) noexcept nogil:
    return kind | (s << 8)

cdef inline uint32_t bucket_of(Tbl *t, uint64_t h) noexcept nogil:
    return <uint32_t>(h & (t.nbuckets - 1))

cdef inline uint32_t stripe_of_bucket(uint32_t b) noexcept nogil:
    return b & (NSTRIPES - 1)

cdef inline Slot *slot_at(Tbl *t, uint32_t i) noexcept nogil:
    return <Slot *>(t.slots + <size_t>i * t.slot_size)

cdef inline char *slot_str(Slot *sl, int k) noexcept nogil:
    cdef char *p = (<char *>sl) + SLOT_HDR
    cdef int j
    for j in range(k):
        p += sl.len[j]
    return p

cdef inline size_t slot_used(Slot *sl) noexcept nogil:
    cdef size_t n = SLOT_HDR
    cdef int j
    for j in range(NSTR):
        n += sl.len[j]
    return n

cdef inline bint bytes_eq(const char *a, size_t an, const char *b, size_t bn) noexcept nogil:
    return an == bn and (an == 0 or memcmp(a, b, an) == 0)

cdef inline bint slot_is_aor(Tbl *t, uint32_t i, uint64_t h, const char *aor, uint32_t n) noexcept nogil:
    cdef Slot *sl
    if t.meta[i].hash != h:
        return False
    sl = slot_at(t, i)
    return bytes_eq(slot_str(sl, S_AOR), sl.len[S_AOR], aor, n)

cdef inline char lower(char c) noexcept nogil:
    if c >= 65 and c <= 90:
        return c + 32
    return c

cdef bint uri_eq(const char *a, size_t an, const char *b, size_t bn) noexcept nogil:
    """Contact URIs equal byte for byte except that scheme and host compare case-insensitively.
    The regions are found on `a`; equal strings have their delimiters at the same places."""
    cdef size_t i, scheme_end, host_start, host_end
    if an != bn:
        return False
    scheme_end = 0
    while scheme_end < an and a[scheme_end] != 58:              # ':'
        scheme_end += 1
    host_start = scheme_end + 1
    i = host_start
    while i < an and a[i] != 64 and a[i] != 59 and a[i] != 63 and a[i] != 62:   # @ ; ? >
        i += 1
    if i < an and a[i] == 64:
        host_start = i + 1
    host_end = host_start
    if host_end < an and a[host_end] == 91:                      # '[' IPv6 reference
        while host_end < an and a[host_end] != 93:
            host_end += 1
    while host_end < an and a[host_end] != 58 and a[host_end] != 59 and a[host_end] != 63 \
            and a[host_end] != 62:
        host_end += 1
    for i in range(an):
        if a[i] == b[i]:
            continue
        if (i < scheme_end or (i >= host_start and i < host_end)) and lower(a[i]) == lower(b[i]):
            continue
        return False
    return True

cdef inline uint64_t next_version(Tbl *t) noexcept nogil:
    return kx_atomic_add64(&t.hdr.version_counter, 1)

cdef void gen_ruid(Tbl *t, char *out) noexcept nogil:
    # mix64 is a bijection: distinct counter values give distinct ruids for this table.
    cdef uint64_t v = kx_mix64(t.hdr.ruid_salt + kx_atomic_add64(&t.hdr.ruid_counter, 1))
    cdef const char *hexd = b"0123456789abcdef"
    cdef int k
    for k in range(RUID_LEN):
        out[RUID_LEN - 1 - k] = hexd[v & 15]
        v >>= 4

cdef int buf_reserve(Buf *b, size_t extra) noexcept nogil:
    cdef size_t need = b.len + extra
    cdef size_t cap
    cdef char *p
    if need <= b.cap:
        return 0
    cap = b.cap * 2 if b.cap else 4096
    while cap < need:
        cap *= 2
    p = <char *>realloc(b.p, cap)
    if p == NULL:
        return -1
    b.p = p
    b.cap = cap
    return 0

cdef int copy_out(Tbl *t, uint32_t i, Buf *b, bint with_version=False) noexcept nogil:
    """Append slot i (the caller holds its stripe) to b as a Rec (the version only for the db
    writer: it is one more cache miss on the per-packet path)."""
    cdef Slot *sl = slot_at(t, i)
    cdef size_t used = slot_used(sl)
    cdef size_t size = (sizeof(Rec) + used + 7) & ~(<size_t>7)
    cdef Rec *r
    cdef bint bad = used > t.slot_size     # impossible for a published slot; never overrun
    if bad:
        used = SLOT_HDR
        size = (sizeof(Rec) + used + 7) & ~(<size_t>7)
    if buf_reserve(b, size) < 0:
        return -1
    r = <Rec *>(b.p + b.len)
    r.size = <uint32_t>size
    r.slot = i
    r.kind = kind_of(t.meta[i].state)
    r.pad = 0
    r.hash = t.meta[i].hash
    r.version = t.version[i] if with_version else 0
    r.expires = t.meta[i].expires
    memcpy((<char *>r) + sizeof(Rec), sl, used)
    if bad:
        memset((<Slot *>((<char *>r) + sizeof(Rec))).len, 0, sizeof(uint16_t) * NSTR)
    b.len += size
    return 0


# ---------------------------------------------------------------------------------------------
# Locks, allocation and recovery

cdef int lock_alloc(Tbl *t) noexcept nogil:
    cdef int rc = kx_mutex_lock(t.amx)
    cdef uint32_t i, top
    if rc == 1:
        # The owner died inside push/pop: rebuild the stack from the state words (a slot is in
        # the stack exactly when it is FREE; pop marks RESERVED before lowering top).
        top = 0
        for i in range(t.total):
            if kind_of(kx_atomic_load32(&t.meta[i].state)) == ST_FREE:
                t.stack[top] = i
                top += 1
        t.hdr.top = top
        kx_atomic_add64(&t.hdr.recoveries, 1)
        return 0
    return rc

cdef int alloc_slots(Tbl *t, uint32_t s, uint32_t n, uint32_t adds, uint32_t *out) noexcept nogil:
    """Reserve n slots for stripe s; `adds` of them grow the table and may not eat the spare.
    1 = done, 0 = full, LOCK_FAILED."""
    cdef uint32_t k, i, top
    if lock_alloc(t) < 0:
        return LOCK_FAILED
    top = t.hdr.top
    if top < n or (adds and top - adds < SPARE):
        kx_mutex_unlock(t.amx)
        return 0
    for k in range(n):
        i = t.stack[top - 1]
        kx_atomic_store32(&t.meta[i].state, mkstate(ST_RESERVED, s))
        kx_ul_fault_point()
        top -= 1
        t.hdr.top = top
        out[k] = i
    kx_mutex_unlock(t.amx)
    kx_ul_fault_point()
    return 1

cdef int free_slots(Tbl *t, const uint32_t *slots, uint32_t n) noexcept nogil:
    cdef uint32_t k, i
    if n == 0:
        return 0
    if lock_alloc(t) < 0:
        return LOCK_FAILED
    for k in range(n):
        i = slots[k]
        kx_atomic_store32(&t.meta[i].state, mkstate(ST_FREE, 0))
        kx_ul_fault_point()
        t.stack[t.hdr.top] = i
        t.hdr.top += 1
    kx_mutex_unlock(t.amx)
    return 0

cdef void recover_stripe(Tbl *t, uint32_t s) noexcept nogil:
    """The previous owner of stripe s died holding it: undo its uncommitted words, then give
    back the slots it had reserved (never published) or retired (unlinked by a committed
    change it did not finish freeing)."""
    cdef uint32_t i, st, k
    kx_ul_jundo(t.base, &t.jh[s], t.je + <size_t>s * JCAP, JCAP)
    for i in range(t.total):
        st = kx_atomic_load32(&t.meta[i].state)
        k = kind_of(st)
        if (k == ST_RESERVED or k == ST_RETIRED) and stripe_in(st) == s:
            free_slots(t, &i, 1)
    kx_atomic_add64(&t.hdr.recoveries, 1)

cdef int lock_stripe(Tbl *t, uint32_t s) noexcept nogil:
    cdef int rc = kx_mutex_lock(&t.smx[s])
    if rc == 1:
        recover_stripe(t, s)
        return 0
    return rc

cdef inline void unlock_stripe(Tbl *t, uint32_t s) noexcept nogil:
    kx_mutex_unlock(&t.smx[s])


# ---------------------------------------------------------------------------------------------
# Journaled changes (caller holds stripe x.s)

cdef inline void txn_init(Txn *x, Tbl *t, uint32_t s) noexcept nogil:
    x.t = t
    x.s = s
    x.nretired = 0

cdef inline uint32_t txn_room(Txn *x) noexcept nogil:
    return JCAP - x.t.jh[x.s].count

cdef inline void jw32(Txn *x, uint32_t *p, uint32_t v) noexcept nogil:
    kx_ul_jw32(x.t.base, &x.t.jh[x.s], x.t.je + <size_t>x.s * JCAP, p, v)

cdef inline void jw64(Txn *x, uint64_t *p, uint64_t v) noexcept nogil:
    kx_ul_jw64(x.t.base, &x.t.jh[x.s], x.t.je + <size_t>x.s * JCAP, p, v)

cdef int txn_commit(Txn *x) noexcept nogil:
    if x.t.jh[x.s].count == 0 and x.nretired == 0:
        return 0                    # nothing was written
    kx_ul_jcommit(&x.t.jh[x.s])
    cdef int rc = free_slots(x.t, x.retired, x.nretired)
    x.nretired = 0
    kx_ul_fault_point()
    return rc

cdef uint32_t *find_link(Tbl *t, uint32_t b, uint32_t target) noexcept nogil:
    """The word that points at `target` in bucket b's chain, or NULL."""
    cdef uint32_t *link = &t.buckets[b]
    cdef uint32_t steps = 0
    while link[0] != target:
        if link[0] == NIL or steps > t.total:
            return NULL
        link = &t.meta[link[0]].next
        steps += 1
    return link

cdef void txn_unlink(Txn *x, uint32_t *link, uint32_t i) noexcept nogil:
    """Remove slot i (pointed at by *link) from its chain: a tombstone when changes are tracked
    (the db writer must see the deletion), else straight back to the free stack."""
    cdef Tbl *t = x.t
    jw32(x, link, t.meta[i].next)
    if t.track:
        jw64(x, &t.version[i], next_version(t))
        jw32(x, &t.meta[i].state, mkstate(ST_TOMB, x.s))
    else:
        jw32(x, &t.meta[i].state, mkstate(ST_RETIRED, x.s))
        x.retired[x.nretired] = i
        x.nretired += 1

cdef void write_slot(Tbl *t, uint32_t i, const Op *op, const char *ruid, uint32_t ruid_n,
                     uint32_t ua_n, uint64_t h, double now) noexcept nogil:
    """Fill a RESERVED slot (invisible to everyone, so no journal needed)."""
    cdef Slot *sl = slot_at(t, i)
    cdef char *p = (<char *>sl) + SLOT_HDR
    cdef int k
    cdef uint32_t n
    sl.last_modified = now
    sl.cseq = op.cseq
    sl.q = op.q
    sl.reg_id = op.reg_id
    sl.flags = op.flags
    sl.pad = 0
    for k in range(NSTR):
        if k == S_RUID:
            n = ruid_n
            memcpy(p, ruid, n)
        else:
            n = ua_n if k == S_UA else op.n[k]
            if n:
                memcpy(p, op.s[k], n)
        sl.len[k] = <uint16_t>n
        p += n
    t.meta[i].hash = h
    t.meta[i].expires = op.expires
    t.meta[i].next = NIL
    if t.track:
        t.version[i] = next_version(t)
        t.persisted[i] = 0
    else:
        t.version[i] = 0
        t.persisted[i] = 0
    kx_ul_fault_point()

cdef uint32_t fixed_len(const Op *op, uint32_t ruid_n) noexcept nogil:
    cdef uint32_t n = ruid_n
    cdef int k
    for k in range(1, NSTR):
        if k != S_UA:
            n += op.n[k]
    return n

cdef uint32_t ua_fit(const Op *op, uint32_t room) noexcept nogil:
    """user_agent bytes that fit in `room`, cut on a UTF-8 character boundary."""
    cdef uint32_t n = op.n[S_UA]
    if n <= room:
        return n
    n = room
    while n > 0 and (<unsigned char>op.s[S_UA][n] & 0xC0) == 0x80:
        n -= 1
    return n


# ---------------------------------------------------------------------------------------------
# apply(): plan, check, then publish in one journaled critical section

cdef int ent_matches(Tbl *t, Ent *e, Op *ops, const Op *op, bint by_instance) noexcept nogil:
    cdef Slot *sl
    cdef const Op *o
    if e.op >= 0:
        o = &ops[e.op]
        if by_instance:
            return o.reg_id == op.reg_id and bytes_eq(o.s[S_INSTANCE], o.n[S_INSTANCE],
                                                      op.s[S_INSTANCE], op.n[S_INSTANCE])
        return uri_eq(o.s[S_CONTACT], o.n[S_CONTACT], op.s[S_CONTACT], op.n[S_CONTACT])
    sl = slot_at(t, e.slot)
    if by_instance:
        return sl.reg_id == op.reg_id and bytes_eq(slot_str(sl, S_INSTANCE), sl.len[S_INSTANCE],
                                                   op.s[S_INSTANCE], op.n[S_INSTANCE])
    return uri_eq(slot_str(sl, S_CONTACT), sl.len[S_CONTACT], op.s[S_CONTACT], op.n[S_CONTACT])

cdef int find_ent(Tbl *t, Ent *ents, int nents, Op *ops, const Op *op) noexcept nogil:
    """RFC 5626: a contact with +sip.instance and reg-id is the same binding as a stored one
    with that pair; otherwise (or when none has it) the Contact URI decides."""
    cdef int j
    if op.n[S_INSTANCE] > 0 and op.reg_id > 0:
        for j in range(nents):
            if ent_matches(t, &ents[j], ops, op, True):
                return j
    for j in range(nents):
        if ent_matches(t, &ents[j], ops, op, False):
            return j
    return -1

cdef inline bint ent_counts(Ent *e) noexcept nogil:
    if e.action == A_UPDATE or e.action == A_ADD:
        return True
    return e.action == A_KEEP and not e.expired

cdef int plan(Tbl *t, Ent *ents, int *pnents, Op *ops, int nops, double now,
              int max_contacts) noexcept nogil:
    """Decide every binding's fate; returns R_OK or an error status (nothing changed yet)."""
    cdef int nents = pnents[0]
    cdef int k, j, n, growth, victim
    cdef Ent *e
    cdef Slot *sl
    cdef Op *op
    cdef uint32_t fixed, ruid_n, jneed
    for k in range(nops):
        op = &ops[k]
        j = find_ent(t, ents, nents, ops, op)
        if j >= 0 and ents[j].slot != NIL and not ents[j].expired:
            # CSeq is checked against the stored binding, never against an earlier contact of
            # the same request.
            sl = slot_at(t, ents[j].slot)
            if bytes_eq(slot_str(sl, S_CALLID), sl.len[S_CALLID], op.s[S_CALLID], op.n[S_CALLID]) \
                    and op.cseq <= sl.cseq:
                return R_CSEQ
        if j < 0:
            if op.remove:
                continue
            j = nents
            nents += 1
            e = &ents[j]
            e.slot = NIL
            e.newslot = NIL
            e.expired = False
        e = &ents[j]
        e.op = k
        if op.remove:
            e.action = A_NONE if e.slot == NIL else A_REMOVE
        else:
            e.action = A_ADD if e.slot == NIL else A_UPDATE
            e.lm = now
            e.order = k
    pnents[0] = nents

    # max_contacts: > 0 overwrites the oldest, < 0 rejects growth beyond -max_contacts
    n = 0
    growth = 0
    for j in range(nents):
        if ent_counts(&ents[j]):
            n += 1
        if ents[j].action == A_ADD or (ents[j].action == A_UPDATE and ents[j].expired):
            growth += 1
    if max_contacts < 0 and n > -max_contacts and growth > 0:
        return R_TOO_MANY
    while max_contacts > 0 and n > max_contacts:
        victim = -1
        for j in range(nents):
            if not ent_counts(&ents[j]):
                continue
            if victim < 0 or ents[j].lm < ents[victim].lm or \
                    (ents[j].lm == ents[victim].lm and ents[j].order < ents[victim].order):
                victim = j
        ents[victim].action = A_NONE if ents[victim].slot == NIL else A_REMOVE
        n -= 1

    # sizes: every written binding must fit a slot (user_agent may be cut), and the journal
    # must hold every publishing word
    jneed = 0
    for j in range(nents):
        e = &ents[j]
        if e.action == A_ADD or e.action == A_UPDATE:
            ruid_n = RUID_LEN
            if e.action == A_UPDATE:
                sl = slot_at(t, e.slot)
                ruid_n = sl.len[S_RUID]
            fixed = fixed_len(&ops[e.op], ruid_n)
            if fixed > t.data_cap:
                return R_TOO_LARGE
            e.ua_n = ua_fit(&ops[e.op], t.data_cap - fixed)
        if e.action != A_KEEP and e.action != A_NONE:
            jneed += JNEED_PER_BINDING
    if jneed > JCAP:
        return R_TOO_LARGE
    return R_OK

cdef int collect_aor(Tbl *t, uint32_t b, uint64_t h, const char *aor, uint32_t aor_n,
                     double now, Ent *ents, int maxn) noexcept nogil:
    """The AOR's stored bindings (expired ones flagged); returns how many (or the count when
    ents is NULL)."""
    cdef uint32_t i = t.buckets[b]
    cdef int n = 0
    while i != NIL:
        if kind_of(t.meta[i].state) == ST_LIVE and slot_is_aor(t, i, h, aor, aor_n):
            if ents != NULL and n < maxn:
                ents[n].slot = i
                ents[n].newslot = NIL
                ents[n].op = -1
                ents[n].order = -1
                ents[n].action = A_KEEP
                ents[n].expired = t.meta[i].expires <= now
                ents[n].lm = slot_at(t, i).last_modified
            n += 1
        i = t.meta[i].next
    return n

cdef int copy_aor(Tbl *t, uint32_t b, uint64_t h, const char *aor, uint32_t aor_n, double now,
                  Buf *out) noexcept nogil:
    """Append the AOR's visible bindings (caller holds the stripe)."""
    cdef uint32_t i = t.buckets[b]
    while i != NIL:
        # the slot's header and first strings load while the meta line does
        kx_ul_prefetch(slot_at(t, i))
        kx_ul_prefetch((<char *>slot_at(t, i)) + LINE)
        if kind_of(t.meta[i].state) == ST_LIVE and t.meta[i].expires > now \
                and slot_is_aor(t, i, h, aor, aor_n):
            if copy_out(t, i, out) < 0:
                return -1
        i = t.meta[i].next
    return 0

cdef int apply_locked(Tbl *t, uint32_t s, uint32_t b, uint64_t h, const char *aor,
                      uint32_t aor_n, Op *ops, int nops, double now, int max_contacts,
                      Ent *ents, int nexist) noexcept nogil:
    cdef int nents = nexist
    cdef int status, j, rc
    cdef uint32_t nslots = 0, nadds = 0, k = 0
    cdef uint32_t newslots[256]
    cdef uint32_t *link
    cdef Ent *e
    cdef Op *op
    cdef Txn x
    collect_aor(t, b, h, aor, aor_n, now, ents, nexist)
    status = plan(t, ents, &nents, ops, nops, now, max_contacts)
    if status != R_OK:
        return status
    for j in range(nents):
        if ents[j].action == A_ADD:
            nadds += 1
            nslots += 1
        elif ents[j].action == A_UPDATE:
            nslots += 1
    if nslots > 256:
        return R_TOO_LARGE
    if nslots:
        rc = alloc_slots(t, s, nslots, nadds, newslots)
        if rc == LOCK_FAILED:
            return LOCK_FAILED
        if rc == 0:
            return R_FULL
    # write the new slots while they are invisible
    for j in range(nents):
        e = &ents[j]
        if e.action != A_ADD and e.action != A_UPDATE:
            continue
        e.newslot = newslots[k]
        k += 1
        op = &ops[e.op]
        if e.action == A_UPDATE:    # a refresh keeps the binding's ruid
            write_slot(t, e.newslot, op, slot_str(slot_at(t, e.slot), S_RUID),
                       slot_at(t, e.slot).len[S_RUID], e.ua_n, h, now)
        else:
            gen_ruid(t, e.ruid)
            write_slot(t, e.newslot, op, e.ruid, RUID_LEN, e.ua_n, h, now)
    # publish
    txn_init(&x, t, s)
    for j in range(nents):
        e = &ents[j]
        if e.action == A_UPDATE:
            link = find_link(t, b, e.slot)
            if link == NULL:            # cannot happen under the lock; do not leak the slot
                x.retired[x.nretired] = e.newslot
                x.nretired += 1
                continue
            t.meta[e.newslot].next = t.meta[e.slot].next
            jw32(&x, &t.meta[e.newslot].state, mkstate(ST_LIVE, s))
            jw32(&x, link, e.newslot)
            jw32(&x, &t.meta[e.slot].state, mkstate(ST_RETIRED, s))
            x.retired[x.nretired] = e.slot
            x.nretired += 1
        elif e.action == A_REMOVE:
            link = find_link(t, b, e.slot)
            if link != NULL:
                txn_unlink(&x, link, e.slot)
        elif e.action == A_ADD:
            t.meta[e.newslot].next = t.buckets[b]
            jw32(&x, &t.meta[e.newslot].state, mkstate(ST_LIVE, s))
            jw32(&x, &t.buckets[b], e.newslot)
    if txn_commit(&x) < 0:
        return LOCK_FAILED
    return R_OK

cdef int apply_core(Tbl *t, const char *aor, uint32_t aor_n, Op *ops, int nops, double now,
                    int max_contacts, Buf *out) noexcept nogil:
    """Status, or LOCK_FAILED / -1 (no memory). `out` gets the AOR's bindings afterwards."""
    cdef uint64_t h = kx_hash64(aor, aor_n, t.seed)
    cdef uint32_t b = bucket_of(t, h)
    cdef uint32_t s = stripe_of_bucket(b)
    cdef int nexist, status
    cdef Ent stack_ents[32]
    cdef Ent *ents = stack_ents
    if lock_stripe(t, s) < 0:
        return LOCK_FAILED
    nexist = collect_aor(t, b, h, aor, aor_n, now, NULL, 0)
    if nexist + nops > 32:
        ents = <Ent *>malloc((nexist + nops) * sizeof(Ent))
        if ents == NULL:
            unlock_stripe(t, s)
            return -1
    status = apply_locked(t, s, b, h, aor, aor_n, ops, nops, now, max_contacts, ents, nexist)
    if status != LOCK_FAILED and copy_aor(t, b, h, aor, aor_n, now, out) < 0:
        status = -1
    unlock_stripe(t, s)
    if ents != stack_ents:
        free(ents)
    return status


# ---------------------------------------------------------------------------------------------
# Other critical sections

cdef int insert_loaded(Tbl *t, const Op *op, const char *ruid, uint32_t ruid_n,
                       double last_modified) noexcept nogil:
    """One binding from the database: already persisted, so it starts clean."""
    cdef const char *aor = op.s[S_AOR]
    cdef uint64_t h = kx_hash64(aor, op.n[S_AOR], t.seed)
    cdef uint32_t b = bucket_of(t, h)
    cdef uint32_t s = stripe_of_bucket(b)
    cdef uint32_t i, fixed
    cdef int rc
    cdef Txn x
    fixed = fixed_len(op, ruid_n)
    if fixed > t.data_cap:
        return R_TOO_LARGE
    if lock_stripe(t, s) < 0:
        return LOCK_FAILED
    rc = alloc_slots(t, s, 1, 1, &i)
    if rc != 1:
        unlock_stripe(t, s)
        return LOCK_FAILED if rc == LOCK_FAILED else R_FULL
    write_slot(t, i, op, ruid, ruid_n, ua_fit(op, t.data_cap - fixed), h, last_modified)
    t.persisted[i] = t.version[i]
    txn_init(&x, t, s)
    t.meta[i].next = t.buckets[b]
    jw32(&x, &t.meta[i].state, mkstate(ST_LIVE, s))
    jw32(&x, &t.buckets[b], i)
    rc = txn_commit(&x)
    unlock_stripe(t, s)
    return LOCK_FAILED if rc < 0 else R_OK

cdef uint32_t find_ruid(Tbl *t, uint32_t b, uint64_t h, const char *aor, uint32_t aor_n,
                        const char *ruid, uint32_t ruid_n) noexcept nogil:
    """The live slot of the AOR with this ruid, or NIL (caller holds the stripe)."""
    cdef uint32_t i = t.buckets[b]
    cdef Slot *sl
    while i != NIL:
        if kind_of(t.meta[i].state) == ST_LIVE and slot_is_aor(t, i, h, aor, aor_n):
            sl = slot_at(t, i)
            if bytes_eq(slot_str(sl, S_RUID), sl.len[S_RUID], ruid, ruid_n):
                return i
        i = t.meta[i].next
    return NIL

cdef bint slot_holds(Tbl *t, uint32_t i, const Op *op, uint32_t ua_n, double lm) noexcept nogil:
    """Slot i holds exactly this binding (ruid and AOR already match)."""
    cdef Slot *sl = slot_at(t, i)
    cdef int k
    cdef uint32_t n
    if t.meta[i].expires != op.expires or sl.last_modified != lm or sl.cseq != op.cseq \
            or sl.q != op.q or sl.reg_id != op.reg_id or sl.flags != op.flags:
        return False
    for k in range(S_CONTACT, NSTR):
        n = ua_n if k == S_UA else op.n[k]
        if not bytes_eq(slot_str(sl, k), sl.len[k], op.s[k], n):
            return False
    return True

cdef int sync_put_core(Tbl *t, const Op *op, const char *ruid, uint32_t ruid_n,
                       double lm) noexcept nogil:
    """Another node's binding: replace ours with the same ruid, or add it, as persisted."""
    cdef const char *aor = op.s[S_AOR]
    cdef uint64_t h = kx_hash64(aor, op.n[S_AOR], t.seed)
    cdef uint32_t b = bucket_of(t, h)
    cdef uint32_t s = stripe_of_bucket(b)
    cdef uint32_t old, i, fixed, ua_n
    cdef uint32_t *link
    cdef int rc
    cdef Txn x
    fixed = fixed_len(op, ruid_n)
    if fixed > t.data_cap:
        return R_TOO_LARGE
    ua_n = ua_fit(op, t.data_cap - fixed)
    if lock_stripe(t, s) < 0:
        return LOCK_FAILED
    old = find_ruid(t, b, h, aor, op.n[S_AOR], ruid, ruid_n)
    if old != NIL:
        if t.track and t.version[old] != t.persisted[old]:
            unlock_stripe(t, s)
            return R_DIRTY
        if slot_holds(t, old, op, ua_n, lm):
            unlock_stripe(t, s)
            return R_SAME
    rc = alloc_slots(t, s, 1, 1 if old == NIL else 0, &i)
    if rc != 1:
        unlock_stripe(t, s)
        return LOCK_FAILED if rc == LOCK_FAILED else R_FULL
    write_slot(t, i, op, ruid, ruid_n, ua_n, h, lm)
    t.persisted[i] = t.version[i]
    txn_init(&x, t, s)
    link = find_link(t, b, old) if old != NIL else NULL
    if link != NULL:
        t.meta[i].next = t.meta[old].next
        jw32(&x, &t.meta[i].state, mkstate(ST_LIVE, s))
        jw32(&x, link, i)
        jw32(&x, &t.meta[old].state, mkstate(ST_RETIRED, s))
        x.retired[x.nretired] = old
        x.nretired += 1
    else:
        t.meta[i].next = t.buckets[b]
        jw32(&x, &t.meta[i].state, mkstate(ST_LIVE, s))
        jw32(&x, &t.buckets[b], i)
    rc = txn_commit(&x)
    unlock_stripe(t, s)
    return LOCK_FAILED if rc < 0 else R_OK

cdef int sync_drop_core(Tbl *t, const char *aor, uint32_t aor_n, const char *ruid,
                        uint32_t ruid_n) noexcept nogil:
    """Another node deleted this binding: unlink ours, no tombstone (the database has it)."""
    cdef uint64_t h = kx_hash64(aor, aor_n, t.seed)
    cdef uint32_t b = bucket_of(t, h)
    cdef uint32_t s = stripe_of_bucket(b)
    cdef uint32_t i
    cdef uint32_t *link
    cdef int rc
    cdef Txn x
    if lock_stripe(t, s) < 0:
        return LOCK_FAILED
    i = find_ruid(t, b, h, aor, aor_n, ruid, ruid_n)
    if i == NIL or (t.track and t.version[i] != t.persisted[i]):
        unlock_stripe(t, s)
        return R_ABSENT if i == NIL else R_DIRTY
    link = find_link(t, b, i)
    txn_init(&x, t, s)
    if link != NULL:
        jw32(&x, link, t.meta[i].next)
        jw32(&x, &t.meta[i].state, mkstate(ST_RETIRED, s))
        x.retired[0] = i
        x.nretired = 1
    rc = txn_commit(&x)
    unlock_stripe(t, s)
    return LOCK_FAILED if rc < 0 else R_OK

cdef int remove_aor(Tbl *t, const char *aor, uint32_t aor_n, const char *contact,
                    uint32_t contact_n, bint any_contact, const char *callid, uint32_t callid_n,
                    int64_t cseq, bint check_cseq, double now, int *removed) noexcept nogil:
    """Remove the AOR's bindings (all, or those of one contact). With check_cseq ("Contact: *"),
    refuse when a visible binding has the same Call-ID and a CSeq >= cseq."""
    cdef uint64_t h = kx_hash64(aor, aor_n, t.seed)
    cdef uint32_t b = bucket_of(t, h)
    cdef uint32_t s = stripe_of_bucket(b)
    cdef uint32_t i, nxt
    cdef uint32_t *link
    cdef Slot *sl
    cdef Txn x
    removed[0] = 0
    if lock_stripe(t, s) < 0:
        return LOCK_FAILED
    if check_cseq:
        i = t.buckets[b]
        while i != NIL:
            if kind_of(t.meta[i].state) == ST_LIVE and t.meta[i].expires > now \
                    and slot_is_aor(t, i, h, aor, aor_n):
                sl = slot_at(t, i)
                if bytes_eq(slot_str(sl, S_CALLID), sl.len[S_CALLID], callid, callid_n) \
                        and sl.cseq >= cseq:
                    unlock_stripe(t, s)
                    return R_CSEQ
            i = t.meta[i].next
    txn_init(&x, t, s)
    link = &t.buckets[b]
    i = link[0]
    while i != NIL:
        nxt = t.meta[i].next
        if kind_of(t.meta[i].state) == ST_LIVE and slot_is_aor(t, i, h, aor, aor_n):
            sl = slot_at(t, i)
            if any_contact or uri_eq(slot_str(sl, S_CONTACT), sl.len[S_CONTACT], contact, contact_n):
                if txn_room(&x) < JNEED_PER_BINDING and txn_commit(&x) < 0:
                    unlock_stripe(t, s)
                    return LOCK_FAILED
                txn_unlink(&x, link, i)
                removed[0] += 1
                i = nxt
                continue
        link = &t.meta[i].next
        i = nxt
    if txn_commit(&x) < 0:
        unlock_stripe(t, s)
        return LOCK_FAILED
    unlock_stripe(t, s)
    return R_OK

cdef int expire_bucket(Txn *x, uint32_t b, double now, int64_t *count) noexcept nogil:
    """Unlink bucket b's expired bindings (caller holds its stripe)."""
    cdef Tbl *t = x.t
    cdef uint32_t *link = &t.buckets[b]
    cdef uint32_t i = link[0]
    cdef uint32_t nxt
    while i != NIL:
        nxt = t.meta[i].next
        if kind_of(t.meta[i].state) == ST_LIVE and t.meta[i].expires <= now:
            if txn_room(x) < JNEED_PER_BINDING and txn_commit(x) < 0:
                return -1
            txn_unlink(x, link, i)
            count[0] += 1
        else:
            link = &t.meta[i].next
        i = nxt
    return 0

cdef int64_t expire_core(Tbl *t, double now) noexcept nogil:
    """Timer scan. A stripe is released every SCAN_CHUNK buckets, so a lookup waits for a
    few microseconds of the scan, not for the whole stripe."""
    cdef int64_t count = 0
    cdef uint32_t s, b, done
    cdef int rc
    cdef Txn x
    for s in range(<uint32_t>NSTRIPES):
        b = s
        while b < t.nbuckets:
            if lock_stripe(t, s) < 0:
                return -1
            txn_init(&x, t, s)
            rc = 0
            done = 0
            while rc == 0 and b < t.nbuckets and done < SCAN_CHUNK:
                rc = expire_bucket(&x, b, now, &count)
                b += NSTRIPES
                done += 1
            if rc < 0 or txn_commit(&x) < 0:
                unlock_stripe(t, s)
                return -1
            unlock_stripe(t, s)
    return count

cdef void stats_bucket(Tbl *t, uint32_t b, double now, int64_t *aors,
                       int64_t *contacts) noexcept nogil:
    """Count bucket b's visible bindings, and its AORs once each: at their first visible
    binding in the chain (caller holds the stripe)."""
    cdef uint32_t i = t.buckets[b]
    cdef uint32_t j
    cdef bint first
    cdef Slot *si
    cdef Slot *sj
    while i != NIL:
        if kind_of(t.meta[i].state) == ST_LIVE and t.meta[i].expires > now:
            contacts[0] += 1
            first = True
            si = slot_at(t, i)
            j = t.buckets[b]
            while j != i:
                if kind_of(t.meta[j].state) == ST_LIVE and t.meta[j].expires > now \
                        and t.meta[j].hash == t.meta[i].hash:
                    sj = slot_at(t, j)
                    if bytes_eq(slot_str(sj, S_AOR), sj.len[S_AOR], slot_str(si, S_AOR),
                                si.len[S_AOR]):
                        first = False
                        break
                j = t.meta[j].next
            if first:
                aors[0] += 1
        i = t.meta[i].next

cdef int stats_core(Tbl *t, double now, int64_t *aors, int64_t *contacts) noexcept nogil:
    cdef uint32_t s, b, done
    for s in range(<uint32_t>NSTRIPES):
        b = s
        while b < t.nbuckets:
            if lock_stripe(t, s) < 0:
                return -1
            done = 0
            while b < t.nbuckets and done < SCAN_CHUNK:
                stats_bucket(t, b, now, aors, contacts)
                b += NSTRIPES
                done += 1
            unlock_stripe(t, s)
    return 0

cdef int dump_bucket(Tbl *t, uint32_t b, double now, Buf *out) noexcept nogil:
    cdef uint32_t s = stripe_of_bucket(b)
    cdef uint32_t i
    if lock_stripe(t, s) < 0:
        return LOCK_FAILED
    i = t.buckets[b]
    while i != NIL:
        if kind_of(t.meta[i].state) == ST_LIVE and t.meta[i].expires > now:
            if copy_out(t, i, out) < 0:
                unlock_stripe(t, s)
                return -1
        i = t.meta[i].next
    unlock_stripe(t, s)
    return 0

cdef int pending_core(Tbl *t, uint32_t *cursor, uint32_t max_items, Buf *out) noexcept nogil:
    """Copy out up to max_items slots whose version the db writer has not acknowledged,
    scanning round from *cursor (so a small batch size cannot starve the table's far end)."""
    cdef uint32_t i, st, k, s, n, got = 0
    i = cursor[0] if cursor[0] < t.total else 0
    for n in range(t.total):
        if got >= max_items:
            break
        if n:
            i += 1
            if i == t.total:
                i = 0
        cursor[0] = i
        st = kx_atomic_load32(&t.meta[i].state)
        k = kind_of(st)
        if (k != ST_LIVE and k != ST_TOMB) or t.version[i] == t.persisted[i]:
            continue
        s = stripe_in(st)
        if lock_stripe(t, s) < 0:
            return LOCK_FAILED
        st = t.meta[i].state
        k = kind_of(st)
        if (k == ST_LIVE or k == ST_TOMB) and stripe_in(st) == s \
                and t.version[i] != t.persisted[i]:
            if copy_out(t, i, out, True) < 0:
                unlock_stripe(t, s)
                return -1
            got += 1
            cursor[0] = i + 1
        unlock_stripe(t, s)
    return 0

cdef int ack_core(Tbl *t, uint32_t i, uint64_t version) noexcept nogil:
    """The db writer committed slot i at `version`: mark it persisted, or free the tombstone.
    A token for an older version (the binding changed since) is ignored."""
    cdef uint32_t st = kx_atomic_load32(&t.meta[i].state)
    cdef uint32_t s = stripe_in(st)
    cdef int rc = 0
    cdef Txn x
    if kind_of(st) != ST_LIVE and kind_of(st) != ST_TOMB:
        return 0
    if lock_stripe(t, s) < 0:
        return LOCK_FAILED
    st = t.meta[i].state
    if stripe_in(st) == s and t.version[i] == version:
        if kind_of(st) == ST_LIVE:
            t.persisted[i] = version
        elif kind_of(st) == ST_TOMB:
            txn_init(&x, t, s)
            jw32(&x, &t.meta[i].state, mkstate(ST_RETIRED, s))
            x.retired[0] = i
            x.nretired = 1
            rc = txn_commit(&x)
    unlock_stripe(t, s)
    return rc


# ---------------------------------------------------------------------------------------------
# Python objects

cdef inline str dec(const char *p, Py_ssize_t n):
    if n == 0:
        return ""
    return PyUnicode_DecodeUTF8(p, n, "surrogatepass")


@cython.final
cdef class Binding:
    """One registered contact of an AOR; immutable. Fields as in kampx.db.base.LOCATION_FIELDS:
    q is q*1000 (-1: none given), expires/last_modified are epoch seconds, expires 0 = permanent."""
    cdef readonly str ruid, aor, contact, received, path, socket, user_agent, callid, instance
    cdef readonly long long reg_id, cseq, q, flags
    cdef readonly double expires, last_modified

    _fields = ("ruid", "aor", "contact", "received", "path", "socket", "user_agent", "callid",
               "instance", "reg_id", "cseq", "q", "expires", "last_modified", "flags")

    def __init__(self, str ruid not None, str aor not None, str contact not None,
                 str received not None="", str path not None="", str socket not None="",
                 str user_agent not None="", str callid not None="", str instance not None="",
                 long long reg_id=0, long long cseq=0, long long q=-1, double expires=0.0,
                 double last_modified=0.0, long long flags=0):
        if self.ruid is not None:
            raise AttributeError("Binding is immutable")
        self.ruid = ruid
        self.aor = aor
        self.contact = contact
        self.received = received
        self.path = path
        self.socket = socket
        self.user_agent = user_agent
        self.callid = callid
        self.instance = instance
        self.reg_id = reg_id
        self.cseq = cseq
        self.q = q
        self.expires = expires
        self.last_modified = last_modified
        self.flags = flags

    def as_tuple(self):
        return (self.ruid, self.aor, self.contact, self.received, self.path, self.socket,
                self.user_agent, self.callid, self.instance, self.reg_id, self.cseq, self.q,
                self.expires, self.last_modified, self.flags)

    def as_dict(self):
        return dict(zip(Binding._fields, self.as_tuple()))

    def __eq__(self, other):
        if not isinstance(other, Binding):
            return NotImplemented
        return self.as_tuple() == (<Binding>other).as_tuple()

    def __hash__(self):
        return hash(self.as_tuple())

    def __reduce__(self):
        return (Binding, self.as_tuple())

    def __repr__(self):
        return "Binding(" + ", ".join(f"{k}={v!r}" for k, v in zip(Binding._fields, self.as_tuple())) + ")"


@cython.final
cdef class Change:
    """One unacknowledged change from pending_changes(): unpacks as (ruid, binding), binding None
    for a deletion. Pass it (or its token) back to ack_changes() after the database commit."""
    cdef readonly str ruid
    cdef readonly object binding
    cdef readonly object token
    cdef readonly object removed    # for a deletion: the binding as it was (else None)

    def __iter__(self):
        return iter((self.ruid, self.binding))

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return (self.ruid, self.binding)[i]

    def __repr__(self):
        return f"Change({self.ruid!r}, {self.binding!r}, token={self.token!r})"


cdef Binding rec_binding(Rec *r, str aor):
    """A Binding from a copied-out record; `aor` reuses the caller's string when it is known."""
    cdef Slot *sl = <Slot *>((<char *>r) + sizeof(Rec))
    cdef char *p = (<char *>sl) + SLOT_HDR
    cdef Binding x = Binding.__new__(Binding)
    cdef uint16_t *n = sl.len
    x.ruid = dec(p, n[S_RUID]); p += n[S_RUID]
    x.aor = aor if aor is not None else dec(p, n[S_AOR]); p += n[S_AOR]
    x.contact = dec(p, n[S_CONTACT]); p += n[S_CONTACT]
    x.callid = dec(p, n[S_CALLID]); p += n[S_CALLID]
    x.received = dec(p, n[S_RECEIVED]); p += n[S_RECEIVED]
    x.path = dec(p, n[S_PATH]); p += n[S_PATH]
    x.socket = dec(p, n[S_SOCKET]); p += n[S_SOCKET]
    x.instance = dec(p, n[S_INSTANCE]); p += n[S_INSTANCE]
    x.user_agent = dec(p, n[S_UA])
    x.reg_id = sl.reg_id
    x.cseq = sl.cseq
    x.q = sl.q
    x.expires = 0.0 if r.expires == INFINITY else r.expires
    x.last_modified = sl.last_modified
    x.flags = sl.flags
    return x

cdef inline int rec_qkey(Rec *r) noexcept nogil:
    cdef int q = (<Slot *>((<char *>r) + sizeof(Rec))).q
    return 1000 if q < 0 else q

cdef inline bint rec_before(Rec *a, Rec *b) noexcept nogil:
    """lookup order: q descending (no q = 1.0), then most recently modified first."""
    cdef int qa = rec_qkey(a), qb = rec_qkey(b)
    if qa != qb:
        return qa > qb
    return (<Slot *>((<char *>a) + sizeof(Rec))).last_modified > \
        (<Slot *>((<char *>b) + sizeof(Rec))).last_modified

cdef list recs_to_bindings(Rec **recs, Py_ssize_t n, str aor):
    cdef Py_ssize_t i, j
    cdef Rec *r
    for i in range(1, n):       # insertion sort: an AOR has a handful of contacts
        r = recs[i]
        j = i
        while j > 0 and rec_before(r, recs[j - 1]):
            recs[j] = recs[j - 1]
            j -= 1
        recs[j] = r
    return [rec_binding(recs[i], aor) for i in range(n)]

cdef list buf_bindings(Buf *b, str aor):
    """Every record of b (one AOR) as sorted Bindings."""
    cdef Rec *stack_recs[16]
    cdef Rec **recs = stack_recs
    cdef Py_ssize_t n = 0, cap = 16
    cdef size_t off = 0
    cdef list result
    while off < b.len:
        if n == cap:
            cap *= 4
            if recs == stack_recs:
                recs = <Rec **>malloc(cap * sizeof(Rec *))
                if recs == NULL:
                    raise MemoryError()
                memcpy(recs, stack_recs, n * sizeof(Rec *))
            else:
                recs = <Rec **>realloc(recs, cap * sizeof(Rec *))
                if recs == NULL:
                    raise MemoryError()
        recs[n] = <Rec *>(b.p + off)
        off += recs[n].size
        n += 1
    try:
        result = recs_to_bindings(recs, n, aor)
    finally:
        if recs != stack_recs:
            free(recs)
    return result


cdef object get_str(object o, const char **p, uint32_t *n, str what):
    """Borrow the UTF-8 bytes of a str. Returns None, or the bytes object the caller must keep
    alive while it uses *p (only for strings with lone surrogates, which pass through so that
    any str round-trips)."""
    cdef Py_ssize_t ln
    cdef bytes enc = None
    if type(o) is not str:
        raise TypeError(f"{what} must be str, not {type(o).__name__}")
    try:
        p[0] = PyUnicode_AsUTF8AndSize(o, &ln)
    except UnicodeEncodeError:
        enc = (<str>o).encode("utf-8", "surrogatepass")
        p[0] = PyBytes_AS_STRING(enc)
        ln = PyBytes_GET_SIZE(enc)
    n[0] = <uint32_t>ln if ln < 0x10000 else 0x10000    # anything this long is too large anyway
    return enc


cdef inline void keep_if(list keep, object enc):
    if enc is not None:
        keep.append(enc)


cdef list binding_op(Binding bd, Op *op, const char **r, uint32_t *rn):
    """Borrow a Binding's strings into an Op (and its ruid into *r); returns what the caller
    keeps alive while it uses them."""
    cdef list keep = []
    op.s[S_RUID] = NULL
    op.n[S_RUID] = 0
    keep_if(keep, get_str(bd.ruid, r, rn, "ruid"))
    keep_if(keep, get_str(bd.aor, &op.s[S_AOR], &op.n[S_AOR], "aor"))
    keep_if(keep, get_str(bd.contact, &op.s[S_CONTACT], &op.n[S_CONTACT], "contact"))
    keep_if(keep, get_str(bd.callid, &op.s[S_CALLID], &op.n[S_CALLID], "callid"))
    keep_if(keep, get_str(bd.received, &op.s[S_RECEIVED], &op.n[S_RECEIVED], "received"))
    keep_if(keep, get_str(bd.path, &op.s[S_PATH], &op.n[S_PATH], "path"))
    keep_if(keep, get_str(bd.socket, &op.s[S_SOCKET], &op.n[S_SOCKET], "socket"))
    keep_if(keep, get_str(bd.instance, &op.s[S_INSTANCE], &op.n[S_INSTANCE], "instance"))
    keep_if(keep, get_str(bd.user_agent, &op.s[S_UA], &op.n[S_UA], "user_agent"))
    op.expires = INFINITY if bd.expires == 0.0 else bd.expires
    op.cseq = bd.cseq
    op.q = <int32_t>bd.q
    op.reg_id = <int32_t>bd.reg_id
    op.flags = <uint32_t>bd.flags
    op.remove = False
    return keep


class LockError(RuntimeError):
    """A shared mutex is unusable (memory corrupted); the table cannot be trusted."""


def _inject_fault(int countdown):
    """Test hook: this process SIGKILLs itself at the countdown-th fault point inside the
    store's critical sections (0 disables). Fault points sit after every journaled word, after
    slot allocation and writing, and after commit."""
    global kx_ul_fault_countdown
    kx_ul_fault_countdown = countdown


@cython.final
cdef class LocationStore:
    """The location table in shared memory. Build it before fork; every child uses it."""
    cdef Tbl t
    cdef size_t size
    cdef Buf buf            # private scratch for copied-out records (used with the GIL held)
    cdef uint32_t cap_
    cdef uint32_t pending_cursor    # this process's round-robin position in pending_changes()

    def __cinit__(self, *args, **kwargs):
        self.t.base = NULL
        self.size = 0
        self.buf.p = NULL
        self.buf.len = 0
        self.buf.cap = 0
        self.pending_cursor = 0

    def __init__(self, Py_ssize_t capacity, seed, *, int slot_size=DEFAULT_SLOT_SIZE,
                 bint track_changes=True):
        """capacity: bindings (the table is sized once); seed: the hash seed (random per start);
        slot_size: bytes per binding incl. strings; track_changes: keep tombstones and versions
        for the db writer (False when nothing persists the table)."""
        cdef size_t off, total, nb, o_smx, o_amx, o_jh, o_je, o_stack, o_buckets, o_meta
        cdef size_t o_version, o_persisted, o_slots
        cdef void *p
        cdef uint32_t i
        if self.t.base != NULL:
            raise RuntimeError("already initialised")
        if sizeof(Slot) != SLOT_HDR:
            raise AssertionError("slot header layout changed")
        if capacity < 1 or capacity > MAX_CAPACITY:     # buckets stay a 32-bit power of two
            raise ValueError(f"capacity must be between 1 and {MAX_CAPACITY}")
        if slot_size < MIN_SLOT or slot_size > MAX_SLOT or slot_size % 64:
            raise ValueError(f"slot_size must be a multiple of 64 between {MIN_SLOT} and {MAX_SLOT}")
        total = capacity + SPARE
        nb = NSTRIPES
        while nb < <size_t>capacity:
            nb <<= 1
        off = round_line(sizeof(Hdr))
        o_smx = off; off += NSTRIPES * LINE
        o_amx = off; off += LINE
        o_jh = off; off += round_line(NSTRIPES * sizeof(kx_ul_jhdr))
        o_je = off; off += round_line(<size_t>NSTRIPES * JCAP * sizeof(kx_ul_jent))
        o_stack = off; off += round_line(total * 4)
        o_buckets = off; off += round_line(nb * 4)
        o_meta = off; off += round_line(total * sizeof(Meta))
        o_version = off; off += round_line(total * 8)
        o_persisted = off; off += round_line(total * 8)
        o_slots = off; off += total * <size_t>slot_size
        p = mmap(NULL, off, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        if p == MAP_FAILED:
            raise OSError(errno, f"mmap of {off} shared bytes failed: {os.strerror(errno)}")
        # Random lookups over a GB are TLB-bound; huge pages help where the kernel allows them
        # for shared memory (transparent_hugepage/shmem_enabled = advise). Failure is harmless.
        madvise(p, off, MADV_HUGEPAGE)
        self.size = off
        self.t.base = <char *>p
        self.t.hdr = <Hdr *>p
        self.t.smx = <kx_mutex_t *>(self.t.base + o_smx)
        self.t.amx = <kx_mutex_t *>(self.t.base + o_amx)
        self.t.jh = <kx_ul_jhdr *>(self.t.base + o_jh)
        self.t.je = <kx_ul_jent *>(self.t.base + o_je)
        self.t.stack = <uint32_t *>(self.t.base + o_stack)
        self.t.buckets = <uint32_t *>(self.t.base + o_buckets)
        self.t.meta = <Meta *>(self.t.base + o_meta)
        self.t.version = <uint64_t *>(self.t.base + o_version)
        self.t.persisted = <uint64_t *>(self.t.base + o_persisted)
        self.t.slots = self.t.base + o_slots
        self.t.total = <uint32_t>total
        self.t.capacity = <uint32_t>capacity
        self.t.nbuckets = <uint32_t>nb
        self.t.slot_size = <uint32_t>slot_size
        self.t.data_cap = <uint32_t>(slot_size - SLOT_HDR)
        self.t.seed = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)
        self.t.track = track_changes
        self.cap_ = <uint32_t>capacity
        for i in range(<uint32_t>NSTRIPES):
            if kx_mutex_init(&self.t.smx[i]) != 0:
                raise OSError("pthread_mutex_init failed")
        if kx_mutex_init(self.t.amx) != 0:
            raise OSError("pthread_mutex_init failed")
        # fresh pages are zero: every slot FREE, every journal empty; chains start empty
        memset(self.t.buckets, 0xFF, nb * 4)
        for i in range(<uint32_t>total):
            self.t.stack[i] = <uint32_t>(total - 1 - i)     # low slots are handed out first
        self.t.hdr.top = <uint32_t>total
        self.t.hdr.total = <uint32_t>total
        self.t.hdr.ruid_salt = int.from_bytes(os.urandom(8), "little")
        self.t.hdr.magic = MAGIC

    def __dealloc__(self):
        # Unmaps this process's view only; the others keep theirs.
        if self.t.base != NULL:
            munmap(self.t.base, self.size)
            self.t.base = NULL
        free(self.buf.p)

    def __reduce__(self):
        raise TypeError("LocationStore is shared by fork, not by pickling")

    cdef inline int _ready(self) except -1:
        if self.t.base == NULL:
            raise RuntimeError("LocationStore is not initialised")
        return 0

    cdef inline Buf _take_buf(self):
        """Borrow the scratch buffer for one call. Detached while in use: building Python
        objects can run a finalizer that switches threads, and another thread's call then
        simply gets a buffer of its own."""
        cdef Buf b = self.buf
        self.buf.p = NULL
        self.buf.cap = 0
        self.buf.len = 0
        b.len = 0
        return b

    cdef inline void _give_buf(self, Buf *b):
        if self.buf.p == NULL:
            self.buf = b[0]
        else:
            free(b.p)
        b.p = NULL

    cdef int _fail(self, int rc) except -1:
        if rc == LOCK_FAILED:
            raise LockError("usrloc: a shared mutex is unusable")
        raise MemoryError()

    # -- properties ---------------------------------------------------------------------------

    @property
    def capacity(self):
        """Bindings the table holds (live ones plus deletions not yet acknowledged)."""
        return self.cap_

    @property
    def nbytes(self):
        """Size of the shared mapping in bytes."""
        return self.size

    @property
    def slot_size(self):
        """Bytes per binding slot, strings included."""
        return self.t.slot_size

    @property
    def max_string_bytes(self):
        """UTF-8 bytes of all strings of one binding (ruid included) a slot holds."""
        return self.t.data_cap

    @property
    def track_changes(self):
        return bool(self.t.track)

    @property
    def free_slots(self):
        """Slots on the free stack (read under the allocator's lock, so a stack left half-done by
        a dead process is rebuilt first)."""
        cdef uint32_t top
        self._ready()
        if lock_alloc(&self.t) < 0:
            self._fail(LOCK_FAILED)
        top = self.t.hdr.top
        kx_mutex_unlock(self.t.amx)
        return top

    @property
    def change_count(self):
        """A number that moves whenever any binding changes (the global version counter): a
        db writer reads it to learn, for one atomic load, whether there is anything to write."""
        return kx_atomic_add64(&self.t.hdr.version_counter, 0)

    @property
    def recoveries(self):
        """Times a stripe or the allocator was repaired after its owner died holding it."""
        return self.t.hdr.recoveries

    # -- per-packet and registrar calls -------------------------------------------------------

    def lookup(self, str aor, double now):
        """The AOR's bindings not expired at `now`: q descending (no q counts as 1.0), then the
        most recently modified first."""
        cdef const char *a
        cdef uint32_t an
        cdef uint64_t h
        cdef uint32_t b, s
        cdef int rc = 0
        cdef object held
        cdef Buf out
        self._ready()
        held = get_str(aor, &a, &an, "aor")
        h = kx_hash64(a, an, self.t.seed)
        b = bucket_of(&self.t, h)
        s = stripe_of_bucket(b)
        if lock_stripe(&self.t, s) < 0:
            self._fail(LOCK_FAILED)
        out = self._take_buf()
        if copy_aor(&self.t, b, h, a, an, now, &out) < 0:
            rc = -1
        unlock_stripe(&self.t, s)
        try:
            if rc < 0:
                self._fail(rc)
            return buf_bindings(&out, aor) if out.len else []
        finally:
            self._give_buf(&out)

    def apply(self, str aor, double now, ops, int max_contacts=0):
        """Apply one REGISTER's contacts to the AOR atomically -> (status, bindings after).

        ops: (contact, expires_at, q, callid, cseq, received, path, socket, user_agent,
        instance, reg_id, flags) tuples. expires_at is absolute; 0 (or any time <= now) removes
        the contact, math.inf makes it permanent. max_contacts > 0 removes the AOR's oldest
        bindings to stay within it; < 0 rejects (ERR_TOO_MANY) a request that would grow the AOR
        beyond -max_contacts. On any error nothing changes and the list is the AOR's bindings as
        they are."""
        cdef Py_ssize_t nops, k
        cdef Op *cops = NULL
        cdef Op *op
        cdef const char *a
        cdef uint32_t an
        cdef list keep = []
        cdef tuple tup
        cdef double exp
        cdef int status
        cdef Buf out
        self._ready()
        if isnan(now):
            raise ValueError("now is NaN")
        keep_if(keep, get_str(aor, &a, &an, "aor"))
        if not isinstance(ops, (list, tuple)):
            ops = list(ops)
        nops = len(ops)
        if an > self.t.data_cap or nops > 256:
            return ERR_TOO_LARGE, self.lookup(aor, now)
        cops = <Op *>malloc((nops if nops else 1) * sizeof(Op))
        if cops == NULL:
            raise MemoryError()
        try:
            for k in range(nops):
                tup = ops[k]
                if len(tup) != 12:
                    raise ValueError("an op is (contact, expires_at, q, callid, cseq, received, "
                                     "path, socket, user_agent, instance, reg_id, flags)")
                op = &cops[k]
                op.s[S_RUID] = NULL
                op.n[S_RUID] = 0
                op.s[S_AOR] = a
                op.n[S_AOR] = an
                keep_if(keep, get_str(tup[0], &op.s[S_CONTACT], &op.n[S_CONTACT], "contact"))
                if op.n[S_CONTACT] == 0:
                    raise ValueError("contact must not be empty")
                exp = tup[1]
                if isnan(exp):
                    raise ValueError("expires_at is NaN")
                op.remove = exp <= now
                op.expires = exp
                op.q = tup[2]
                if op.q < -1 or op.q > 1000:
                    raise ValueError("q must be -1 or 0..1000")
                keep_if(keep, get_str(tup[3], &op.s[S_CALLID], &op.n[S_CALLID], "callid"))
                op.cseq = tup[4]
                if op.cseq < 0 or op.cseq > 0xFFFFFFFF:
                    raise ValueError("cseq out of range")
                keep_if(keep, get_str(tup[5], &op.s[S_RECEIVED], &op.n[S_RECEIVED], "received"))
                keep_if(keep, get_str(tup[6], &op.s[S_PATH], &op.n[S_PATH], "path"))
                keep_if(keep, get_str(tup[7], &op.s[S_SOCKET], &op.n[S_SOCKET], "socket"))
                keep_if(keep, get_str(tup[8], &op.s[S_UA], &op.n[S_UA], "user_agent"))
                keep_if(keep, get_str(tup[9], &op.s[S_INSTANCE], &op.n[S_INSTANCE], "instance"))
                op.reg_id = tup[10]
                if op.reg_id < 0:
                    raise ValueError("reg_id must not be negative")
                op.flags = tup[11]
            out = self._take_buf()
            status = apply_core(&self.t, a, an, cops, <int>nops, now, max_contacts, &out)
        finally:
            free(cops)
        try:
            if status < 0:
                self._fail(status)
            return status, (buf_bindings(&out, aor) if out.len else [])
        finally:
            self._give_buf(&out)

    def remove_all(self, str aor, str callid, long long cseq, double now):
        """"Contact: *" with Expires: 0 -> (status, bindings after). ERR_CSEQ (nothing removed)
        when a binding has the same Call-ID and a CSeq >= cseq."""
        cdef const char *a
        cdef const char *c
        cdef uint32_t an, cn
        cdef int removed, rc
        cdef list keep = []
        self._ready()
        keep_if(keep, get_str(aor, &a, &an, "aor"))
        keep_if(keep, get_str(callid, &c, &cn, "callid"))
        rc = remove_aor(&self.t, a, an, NULL, 0, True, c, cn, cseq, True, now, &removed)
        if rc < 0:
            self._fail(rc)
        if rc == ERR_CSEQ:
            return ERR_CSEQ, self.lookup(aor, now)
        return OK, []

    def delete(self, str aor, contact=None):
        """Remove the AOR's bindings (expired ones too), or only those of one Contact URI
        (kampxctl ul rm). Returns how many were removed."""
        cdef const char *a
        cdef const char *c = NULL
        cdef uint32_t an, cn = 0
        cdef int removed, rc
        cdef list keep = []
        self._ready()
        keep_if(keep, get_str(aor, &a, &an, "aor"))
        if contact is not None:
            keep_if(keep, get_str(contact, &c, &cn, "contact"))
        rc = remove_aor(&self.t, a, an, c, cn, contact is None, NULL, 0, 0, False, 0.0, &removed)
        if rc < 0:
            self._fail(rc)
        return removed

    # -- helpers' calls (timer, ctl, db writer) -----------------------------------------------

    def expire(self, double now):
        """Remove every binding expired at `now` (they become deletions for the db writer).
        Returns how many."""
        cdef int64_t n
        self._ready()
        with nogil:
            n = expire_core(&self.t, now)
        if n < 0:
            self._fail(LOCK_FAILED)
        return n

    def stats(self, double now):
        """(AORs with a visible binding, visible bindings) at `now`."""
        cdef int64_t aors = 0, contacts = 0
        cdef int rc
        self._ready()
        with nogil:
            rc = stats_core(&self.t, now, &aors, &contacts)
        if rc < 0:
            self._fail(LOCK_FAILED)
        return aors, contacts

    def dump(self, Py_ssize_t cursor, Py_ssize_t limit, double now):
        """One page of the table -> (next_cursor, [(aor, [Binding, ...]), ...]).

        Start with cursor 0 and pass back next_cursor until it is -1. A page holds at least
        `limit` AORs (or what is left); an AOR is never split across pages."""
        cdef uint32_t b
        cdef int rc
        cdef list page = []
        cdef Buf bb
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._ready()
        if cursor < 0 or cursor >= self.t.nbuckets:
            return -1, page
        bb.p = NULL
        bb.len = 0
        bb.cap = 0
        b = <uint32_t>cursor
        try:
            while b < self.t.nbuckets and len(page) < limit:
                bb.len = 0
                rc = dump_bucket(&self.t, b, now, &bb)
                if rc < 0:
                    self._fail(rc)
                if bb.len:
                    page.extend(self._group(&bb))
                b += 1
        finally:
            free(bb.p)
        return (-1 if b >= self.t.nbuckets else <Py_ssize_t>b), page

    cdef list _group(self, Buf *bb):
        """Split one bucket's records by AOR into (aor, sorted bindings)."""
        cdef dict index = {}
        cdef size_t off = 0
        cdef Rec *r
        cdef Slot *sl
        cdef Rec **recs
        cdef Py_ssize_t k, n
        cdef list offs
        cdef list groups = []
        while off < bb.len:
            r = <Rec *>(bb.p + off)
            sl = <Slot *>((<char *>r) + sizeof(Rec))
            index.setdefault(dec(slot_str(sl, S_AOR), sl.len[S_AOR]), []).append(off)
            off += r.size
        for aor, offs in index.items():
            n = len(offs)
            recs = <Rec **>malloc(n * sizeof(Rec *))
            if recs == NULL:
                raise MemoryError()
            try:
                for k in range(n):
                    recs[k] = <Rec *>(bb.p + <size_t>offs[k])
                groups.append((aor, recs_to_bindings(recs, n, aor)))
            finally:
                free(recs)
        return groups

    def load(self, bindings, now=None):
        """Fill the table at start (before fork) from the database: the bindings are taken as
        already persisted. Expired ones are skipped, as are those that do not fit (table full,
        strings too large). Returns how many were loaded."""
        cdef Binding bd
        cdef Op op
        cdef const char *r
        cdef uint32_t rn
        cdef list keep
        cdef int rc
        cdef Py_ssize_t loaded = 0
        cdef double tnow
        self._ready()
        import time
        tnow = time.time() if now is None else now
        for item in bindings:
            if not isinstance(item, Binding):
                raise TypeError("load() takes Binding objects")
            bd = <Binding>item
            if bd.expires != 0.0 and bd.expires <= tnow:
                continue
            keep = binding_op(bd, &op, &r, &rn)
            rc = insert_loaded(&self.t, &op, r, rn, bd.last_modified)
            if rc == LOCK_FAILED:
                self._fail(rc)
            if rc == OK:
                loaded += 1
        return loaded

    def sync_put(self, Binding bd not None, double now):
        """Another node's binding, read back from the shared database (kampx/cluster.py):
        replace ours with the same ruid, or add it, as already persisted. Returns OK,
        SKIP_SAME (we hold exactly this), SKIP_DIRTY (ours has a change not yet written: it
        wins), ERR_FULL or ERR_TOO_LARGE. An expired binding is not added (SKIP_ABSENT)."""
        cdef Op op
        cdef const char *r
        cdef uint32_t rn
        cdef list keep
        cdef int rc
        self._ready()
        if bd.expires != 0.0 and bd.expires <= now:
            return self.sync_drop(bd.aor, bd.ruid)
        keep = binding_op(bd, &op, &r, &rn)
        rc = sync_put_core(&self.t, &op, r, rn, bd.last_modified)
        if rc == LOCK_FAILED:
            self._fail(rc)
        return rc

    def sync_drop(self, str aor not None, str ruid not None):
        """Another node deleted the binding `ruid` of `aor`: remove ours without a tombstone
        (the database has the deletion). Returns OK, SKIP_ABSENT, or SKIP_DIRTY (ours has a
        change not yet written: it wins)."""
        cdef const char *a
        cdef const char *r
        cdef uint32_t an, rn
        cdef list keep = []
        cdef int rc
        self._ready()
        keep_if(keep, get_str(aor, &a, &an, "aor"))
        keep_if(keep, get_str(ruid, &r, &rn, "ruid"))
        rc = sync_drop_core(&self.t, a, an, r, rn)
        if rc == LOCK_FAILED:
            self._fail(rc)
        return SKIP_ABSENT if rc == R_ABSENT else rc

    def pending_changes(self, Py_ssize_t max_items=1000):
        """Changes the db writer has not acknowledged, at most max_items: Change objects that
        unpack as (ruid, Binding) for an upsert or (ruid, None) for a deletion. The same ruid
        may appear twice in one batch (it changed during the scan); the later one is newer."""
        cdef Buf bb
        cdef int rc
        cdef size_t off = 0
        cdef Rec *r
        cdef Slot *sl
        cdef Change c
        cdef list out = []
        self._ready()
        if max_items < 1 or not self.t.track:
            return out
        cdef uint32_t want = <uint32_t>min(max_items, 0xFFFFFFFF)
        bb.p = NULL
        bb.len = 0
        bb.cap = 0
        try:
            with nogil:
                rc = pending_core(&self.t, &self.pending_cursor, want, &bb)
            if rc < 0:
                self._fail(rc)
            while off < bb.len:
                r = <Rec *>(bb.p + off)
                sl = <Slot *>((<char *>r) + sizeof(Rec))
                c = Change.__new__(Change)
                c.ruid = dec(slot_str(sl, S_RUID), sl.len[S_RUID])
                c.binding = rec_binding(r, None) if r.kind == ST_LIVE else None
                c.removed = rec_binding(r, None) if r.kind == ST_TOMB else None
                c.token = (<object>r.slot << 64) | r.version
                out.append(c)
                off += r.size
        finally:
            free(bb.p)
        return out

    def ack_changes(self, items):
        """Acknowledge changes after the database commit: Change objects from pending_changes()
        or their integer tokens. Only now is a deleted binding's slot reused. A token whose
        binding changed again since is ignored (the newer change stays pending)."""
        cdef object token
        cdef uint64_t slot, version
        cdef int rc
        self._ready()
        for item in items:
            token = (<Change>item).token if isinstance(item, Change) else item
            if not isinstance(token, int) or token < 0:
                raise TypeError("ack_changes() takes Change objects or their tokens")
            slot = <uint64_t>(token >> 64)
            version = <uint64_t>(token & 0xFFFFFFFFFFFFFFFF)
            if slot >= self.t.total:
                raise ValueError(f"token {token} does not name a slot")
            rc = ack_core(&self.t, <uint32_t>slot, version)
            if rc < 0:
                self._fail(rc)

    # -- diagnostics ----------------------------------------------------------------------------

    def check(self):
        """Verify the table's invariants under every lock; returns a list of problems (empty
        when consistent). For tests and post-mortems: it stops the world for a full scan."""
        cdef list problems
        self._ready()
        # Python objects are built while every lock is held: keep the collector (and the
        # finalizers it could run, which might call the store) out of the way.
        import gc
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            problems = self._check_locked()
        finally:
            if gc_was_enabled:
                gc.enable()
        return problems

    cdef list _check_locked(self):
        cdef uint32_t s, b, i, steps, st, k
        cdef list problems = []
        cdef uint64_t live = 0, reachable = 0, free_count = 0
        cdef char *seen
        for s in range(<uint32_t>NSTRIPES):
            if lock_stripe(&self.t, s) < 0:
                for k in range(s):
                    unlock_stripe(&self.t, k)
                self._fail(LOCK_FAILED)
        if lock_alloc(&self.t) < 0:
            for s in range(<uint32_t>NSTRIPES):
                unlock_stripe(&self.t, s)
            self._fail(LOCK_FAILED)
        seen = <char *>malloc(self.t.total)
        try:
            if seen == NULL:
                raise MemoryError()
            memset(seen, 0, self.t.total)
            for s in range(<uint32_t>NSTRIPES):
                if self.t.jh[s].count != 0:
                    problems.append(f"stripe {s}: journal holds {self.t.jh[s].count} records")
            for b in range(self.t.nbuckets):
                i = self.t.buckets[b]
                steps = 0
                while i != NIL:
                    if i >= self.t.total:
                        problems.append(f"bucket {b}: link to slot {i} out of range")
                        break
                    if seen[i]:
                        problems.append(f"bucket {b}: slot {i} linked twice (cycle or shared)")
                        break
                    seen[i] = 1
                    st = self.t.meta[i].state
                    if kind_of(st) != ST_LIVE:
                        problems.append(f"bucket {b}: slot {i} linked in state {kind_of(st)}")
                    if stripe_in(st) != stripe_of_bucket(b):
                        problems.append(f"bucket {b}: slot {i} tagged stripe {stripe_in(st)}")
                    if bucket_of(&self.t, self.t.meta[i].hash) != b:
                        problems.append(f"bucket {b}: slot {i} hashes elsewhere")
                    if slot_used(slot_at(&self.t, i)) > self.t.slot_size:
                        problems.append(f"slot {i}: string lengths overflow the slot")
                    elif kx_hash64(slot_str(slot_at(&self.t, i), S_AOR),
                                   slot_at(&self.t, i).len[S_AOR], self.t.seed) != self.t.meta[i].hash:
                        problems.append(f"slot {i}: AOR does not match its hash")
                    reachable += 1
                    i = self.t.meta[i].next
            for i in range(self.t.total):
                k = kind_of(self.t.meta[i].state)
                if k == ST_LIVE:
                    live += 1
                elif k == ST_FREE:
                    free_count += 1
                elif k == ST_TOMB:
                    if not self.t.track:
                        problems.append(f"slot {i}: tombstone without change tracking")
                    if seen[i]:
                        problems.append(f"slot {i}: tombstone still linked")
                else:
                    problems.append(f"slot {i}: left in state {k} (leaked)")
            if live != reachable:
                problems.append(f"{live} live slots but {reachable} reachable")
            if free_count != self.t.hdr.top:
                problems.append(f"{free_count} free slots but the free stack holds {self.t.hdr.top}")
            memset(seen, 0, self.t.total)
            for k in range(self.t.hdr.top):
                i = self.t.stack[k]
                if i >= self.t.total or seen[i] or kind_of(self.t.meta[i].state) != ST_FREE:
                    problems.append(f"free stack entry {k}: slot {i} is not a unique free slot")
                    break
                seen[i] = 1
        finally:
            free(seen)
            kx_mutex_unlock(self.t.amx)
            for s in range(<uint32_t>NSTRIPES):
                unlock_stripe(&self.t, s)
        return problems
