/* Shared-memory helpers for kampx's compiled structures (header only).
 *
 * Every structure lives in an anonymous MAP_SHARED mmap created by the supervisor before
 * fork. Locks are robust process-shared pthread mutexes: a process killed while holding one
 * does not block the others; the next locker gets EOWNERDEAD, marks the mutex consistent and
 * goes on (the structure's own state words tell a half-written record). */
#ifndef KX_SHM_H
#define KX_SHM_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* One mutex per cache line: neighbouring stripes must not false-share. */
#define KX_MUTEX_STRIDE 64

typedef union {
    pthread_mutex_t m;
    char pad[KX_MUTEX_STRIDE];
} kx_mutex_t;

static inline int kx_mutex_init(kx_mutex_t *mx) {
    pthread_mutexattr_t a;
    int rc;
    memset(mx, 0, sizeof(*mx));
    if ((rc = pthread_mutexattr_init(&a)) != 0) return rc;
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    rc = pthread_mutex_init(&mx->m, &a);
    pthread_mutexattr_destroy(&a);
    return rc;
}

/* Returns 0 when locked normally, 1 when the previous owner died holding it (the caller may
 * want to check the records it protects), -1 on an unrecoverable mutex. */
static inline int kx_mutex_lock(kx_mutex_t *mx) {
    int rc = pthread_mutex_lock(&mx->m);
    if (rc == 0) return 0;
    if (rc == EOWNERDEAD) {
        pthread_mutex_consistent(&mx->m);
        return 1;
    }
    return -1;
}

/* As kx_mutex_lock, without waiting: 2 when another thread or process holds it. */
static inline int kx_mutex_trylock(kx_mutex_t *mx) {
    int rc = pthread_mutex_trylock(&mx->m);
    if (rc == 0) return 0;
    if (rc == EBUSY) return 2;
    if (rc == EOWNERDEAD) {
        pthread_mutex_consistent(&mx->m);
        return 1;
    }
    return -1;
}

static inline void kx_mutex_unlock(kx_mutex_t *mx) {
    pthread_mutex_unlock(&mx->m);
}

/* Relaxed/acq-rel atomics for counters and state words. */
static inline uint64_t kx_atomic_add64(volatile uint64_t *p, uint64_t v) {
    return __atomic_add_fetch(p, v, __ATOMIC_RELAXED);
}
static inline uint64_t kx_atomic_load64(volatile uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void kx_atomic_store64(volatile uint64_t *p, uint64_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline int kx_atomic_cas64(volatile uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline uint32_t kx_atomic_add32(volatile uint32_t *p, uint32_t v) {
    return __atomic_add_fetch(p, v, __ATOMIC_RELAXED);
}
static inline uint32_t kx_atomic_load32(volatile uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
static inline void kx_atomic_store32(volatile uint32_t *p, uint32_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Seeded 64-bit hash for table keys. The seed is random per proxy start, so a sender cannot
 * pick keys that pile into one bucket. Word-at-a-time multiply/xor-shift mixing. */
static inline uint64_t kx_mix64(uint64_t x) {
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    return x;
}

static inline uint64_t kx_hash64(const void *data, size_t len, uint64_t seed) {
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(len + 1));
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = kx_mix64(h ^ w) + 0x9e3779b97f4a7c15ULL;
        p += 8;
        len -= 8;
    }
    if (len) {
        uint64_t w = 0;
        memcpy(&w, p, len);
        h = kx_mix64(h ^ w ^ ((uint64_t)len << 56));
    }
    h = kx_mix64(h);
    return h ? h : 1; /* 0 means "empty slot" in the tables */
}

#endif
