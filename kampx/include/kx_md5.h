/* MD5 (RFC 1321) for the digest check (kampx/auth/_digest.pyx), header only.
 *
 * Written from the RFC's description: four rounds of sixteen steps over each 64-byte
 * block, T[i] = floor(2^32 * |sin(i + 1)|) (generated into the steps below), the message
 * padded with 0x80, zeros and its length in bits (little-endian). The steps are unrolled
 * so that T and the rotations are immediates: a per-step loop with a branch per round ran
 * 1.45x OpenSSL's time per block. Checked against hashlib in tests/auth/test_digest.py. */
#ifndef KX_MD5_INCLUDED
#define KX_MD5_INCLUDED

#include <stdint.h>
#include <string.h>

typedef struct {
    uint32_t h[4];
    uint64_t size;     /* bytes hashed so far */
    uint8_t buf[64];
    size_t used;       /* bytes waiting in buf */
} kx_md5_t;

#define KX_MD5_F(x, y, z) (((x) & (y)) | (~(x) & (z)))
#define KX_MD5_G(x, y, z) (((x) & (z)) | ((y) & ~(z)))
#define KX_MD5_H(x, y, z) ((x) ^ (y) ^ (z))
#define KX_MD5_I(x, y, z) ((y) ^ ((x) | ~(z)))
#define KX_MD5_STEP(f, a, b, c, d, x, t, s) \
    do { (a) += KX_MD5_##f((b), (c), (d)) + (x) + (t); \
         (a) = ((a) << (s)) | ((a) >> (32 - (s))); (a) += (b); } while (0)

static inline void kx_md5_block(uint32_t *h, const uint8_t *p) {
    uint32_t m[16];
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3];
    int i;
    for (i = 0; i < 16; i++)
        m[i] = (uint32_t)p[4 * i] | ((uint32_t)p[4 * i + 1] << 8) |
               ((uint32_t)p[4 * i + 2] << 16) | ((uint32_t)p[4 * i + 3] << 24);
    KX_MD5_STEP(F, a, b, c, d, m[0], 0xd76aa478u, 7);
    KX_MD5_STEP(F, d, a, b, c, m[1], 0xe8c7b756u, 12);
    KX_MD5_STEP(F, c, d, a, b, m[2], 0x242070dbu, 17);
    KX_MD5_STEP(F, b, c, d, a, m[3], 0xc1bdceeeu, 22);
    KX_MD5_STEP(F, a, b, c, d, m[4], 0xf57c0fafu, 7);
    KX_MD5_STEP(F, d, a, b, c, m[5], 0x4787c62au, 12);
    KX_MD5_STEP(F, c, d, a, b, m[6], 0xa8304613u, 17);
    KX_MD5_STEP(F, b, c, d, a, m[7], 0xfd469501u, 22);
    KX_MD5_STEP(F, a, b, c, d, m[8], 0x698098d8u, 7);
    KX_MD5_STEP(F, d, a, b, c, m[9], 0x8b44f7afu, 12);
    KX_MD5_STEP(F, c, d, a, b, m[10], 0xffff5bb1u, 17);
    KX_MD5_STEP(F, b, c, d, a, m[11], 0x895cd7beu, 22);
    KX_MD5_STEP(F, a, b, c, d, m[12], 0x6b901122u, 7);
    KX_MD5_STEP(F, d, a, b, c, m[13], 0xfd987193u, 12);
    KX_MD5_STEP(F, c, d, a, b, m[14], 0xa679438eu, 17);
    KX_MD5_STEP(F, b, c, d, a, m[15], 0x49b40821u, 22);
    KX_MD5_STEP(G, a, b, c, d, m[1], 0xf61e2562u, 5);
    KX_MD5_STEP(G, d, a, b, c, m[6], 0xc040b340u, 9);
    KX_MD5_STEP(G, c, d, a, b, m[11], 0x265e5a51u, 14);
    KX_MD5_STEP(G, b, c, d, a, m[0], 0xe9b6c7aau, 20);
    KX_MD5_STEP(G, a, b, c, d, m[5], 0xd62f105du, 5);
    KX_MD5_STEP(G, d, a, b, c, m[10], 0x02441453u, 9);
    KX_MD5_STEP(G, c, d, a, b, m[15], 0xd8a1e681u, 14);
    KX_MD5_STEP(G, b, c, d, a, m[4], 0xe7d3fbc8u, 20);
    KX_MD5_STEP(G, a, b, c, d, m[9], 0x21e1cde6u, 5);
    KX_MD5_STEP(G, d, a, b, c, m[14], 0xc33707d6u, 9);
    KX_MD5_STEP(G, c, d, a, b, m[3], 0xf4d50d87u, 14);
    KX_MD5_STEP(G, b, c, d, a, m[8], 0x455a14edu, 20);
    KX_MD5_STEP(G, a, b, c, d, m[13], 0xa9e3e905u, 5);
    KX_MD5_STEP(G, d, a, b, c, m[2], 0xfcefa3f8u, 9);
    KX_MD5_STEP(G, c, d, a, b, m[7], 0x676f02d9u, 14);
    KX_MD5_STEP(G, b, c, d, a, m[12], 0x8d2a4c8au, 20);
    KX_MD5_STEP(H, a, b, c, d, m[5], 0xfffa3942u, 4);
    KX_MD5_STEP(H, d, a, b, c, m[8], 0x8771f681u, 11);
    KX_MD5_STEP(H, c, d, a, b, m[11], 0x6d9d6122u, 16);
    KX_MD5_STEP(H, b, c, d, a, m[14], 0xfde5380cu, 23);
    KX_MD5_STEP(H, a, b, c, d, m[1], 0xa4beea44u, 4);
    KX_MD5_STEP(H, d, a, b, c, m[4], 0x4bdecfa9u, 11);
    KX_MD5_STEP(H, c, d, a, b, m[7], 0xf6bb4b60u, 16);
    KX_MD5_STEP(H, b, c, d, a, m[10], 0xbebfbc70u, 23);
    KX_MD5_STEP(H, a, b, c, d, m[13], 0x289b7ec6u, 4);
    KX_MD5_STEP(H, d, a, b, c, m[0], 0xeaa127fau, 11);
    KX_MD5_STEP(H, c, d, a, b, m[3], 0xd4ef3085u, 16);
    KX_MD5_STEP(H, b, c, d, a, m[6], 0x04881d05u, 23);
    KX_MD5_STEP(H, a, b, c, d, m[9], 0xd9d4d039u, 4);
    KX_MD5_STEP(H, d, a, b, c, m[12], 0xe6db99e5u, 11);
    KX_MD5_STEP(H, c, d, a, b, m[15], 0x1fa27cf8u, 16);
    KX_MD5_STEP(H, b, c, d, a, m[2], 0xc4ac5665u, 23);
    KX_MD5_STEP(I, a, b, c, d, m[0], 0xf4292244u, 6);
    KX_MD5_STEP(I, d, a, b, c, m[7], 0x432aff97u, 10);
    KX_MD5_STEP(I, c, d, a, b, m[14], 0xab9423a7u, 15);
    KX_MD5_STEP(I, b, c, d, a, m[5], 0xfc93a039u, 21);
    KX_MD5_STEP(I, a, b, c, d, m[12], 0x655b59c3u, 6);
    KX_MD5_STEP(I, d, a, b, c, m[3], 0x8f0ccc92u, 10);
    KX_MD5_STEP(I, c, d, a, b, m[10], 0xffeff47du, 15);
    KX_MD5_STEP(I, b, c, d, a, m[1], 0x85845dd1u, 21);
    KX_MD5_STEP(I, a, b, c, d, m[8], 0x6fa87e4fu, 6);
    KX_MD5_STEP(I, d, a, b, c, m[15], 0xfe2ce6e0u, 10);
    KX_MD5_STEP(I, c, d, a, b, m[6], 0xa3014314u, 15);
    KX_MD5_STEP(I, b, c, d, a, m[13], 0x4e0811a1u, 21);
    KX_MD5_STEP(I, a, b, c, d, m[4], 0xf7537e82u, 6);
    KX_MD5_STEP(I, d, a, b, c, m[11], 0xbd3af235u, 10);
    KX_MD5_STEP(I, c, d, a, b, m[2], 0x2ad7d2bbu, 15);
    KX_MD5_STEP(I, b, c, d, a, m[9], 0xeb86d391u, 21);
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
}

static inline void kx_md5_init(kx_md5_t *x) {
    x->h[0] = 0x67452301u;
    x->h[1] = 0xefcdab89u;
    x->h[2] = 0x98badcfeu;
    x->h[3] = 0x10325476u;
    x->size = 0;
    x->used = 0;
}

static inline void kx_md5_update(kx_md5_t *x, const void *data, size_t n) {
    const uint8_t *p = (const uint8_t *)data;
    x->size += n;
    if (x->used) {
        size_t take = 64 - x->used;
        if (take > n) take = n;
        memcpy(x->buf + x->used, p, take);
        x->used += take;
        p += take;
        n -= take;
        if (x->used < 64) return;
        kx_md5_block(x->h, x->buf);
        x->used = 0;
    }
    for (; n >= 64; p += 64, n -= 64) kx_md5_block(x->h, p);
    if (n) {
        memcpy(x->buf, p, n);
        x->used = n;
    }
}

/* Finish: the 32 lower-case hex digits into out (not NUL-terminated). */
static inline void kx_md5_hex(kx_md5_t *x, char *out) {
    static const char hex[] = "0123456789abcdef";
    uint8_t pad[72] = {0x80};
    uint64_t bits = x->size * 8;
    size_t n = x->used < 56 ? 56 - x->used : 120 - x->used;
    int i;
    for (i = 0; i < 8; i++) pad[n + i] = (uint8_t)(bits >> (8 * i));
    kx_md5_update(x, pad, n + 8);
    for (i = 0; i < 16; i++) {
        uint32_t w = x->h[i / 4] >> (8 * (i % 4));
        out[2 * i] = hex[(w >> 4) & 15];
        out[2 * i + 1] = hex[w & 15];
    }
}

#endif
