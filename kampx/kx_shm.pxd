# Cython view of include/kx_shm.h: robust process-shared mutexes, atomics and the seeded hash
# shared by every compiled structure in shared memory.
from libc.stdint cimport uint32_t, uint64_t

cdef extern from "kx_shm.h" nogil:
    ctypedef struct kx_mutex_t:
        pass
    int KX_MUTEX_STRIDE
    int kx_mutex_init(kx_mutex_t *mx)
    int kx_mutex_lock(kx_mutex_t *mx)
    int kx_mutex_trylock(kx_mutex_t *mx)
    void kx_mutex_unlock(kx_mutex_t *mx)
    uint64_t kx_atomic_add64(uint64_t *p, uint64_t v)
    uint64_t kx_atomic_load64(uint64_t *p)
    void kx_atomic_store64(uint64_t *p, uint64_t v)
    int kx_atomic_cas64(uint64_t *p, uint64_t expected, uint64_t desired)
    uint32_t kx_atomic_add32(uint32_t *p, uint32_t v)
    uint32_t kx_atomic_load32(uint32_t *p)
    void kx_atomic_store32(uint32_t *p, uint32_t v)
    uint64_t kx_mix64(uint64_t x)
    uint64_t kx_hash64(const void *data, size_t length, uint64_t seed)
