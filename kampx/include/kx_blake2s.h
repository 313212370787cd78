/* Keyed BLAKE2s (RFC 7693) for the nonces' MAC (kampx/auth/_digest.pyx), header only.
 *
 * Written from the RFC's description (3.1 G, 3.2 F, 2.8 SIGMA, 2.6 the IV, 2.5 the
 * parameter block's first word). A keyed MAC hashes the key, zero-padded to a 64-byte block,
 * before the message: that block depends on the key alone, so kx_blake2s_keyed() compresses
 * it once (the state after it is what a worker keeps) and each MAC of a message of at most
 * 64 bytes is then a single compression of its last block (kx_blake2s_mac). hashlib needed
 * a copy of a keyed object, an update and a digest per MAC: three calls and two objects.
 * Checked against hashlib.blake2s(key=..., digest_size=...) in tests/auth/test_digest.py. */
#ifndef KX_BLAKE2S_H
#define KX_BLAKE2S_H

#include <stdint.h>
#include <string.h>

static const uint32_t KX_B2S_IV[8] = {
    0x6A09E667u, 0xBB67AE85u, 0x3C6EF372u, 0xA54FF53Au,
    0x510E527Fu, 0x9B05688Cu, 0x1F83D9ABu, 0x5BE0CD19u,
};

static const uint8_t KX_B2S_SIGMA[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

#define KX_B2S_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define KX_B2S_G(a, b, c, d, x, y) do { \
        v[a] = v[a] + v[b] + (x); v[d] = KX_B2S_ROTR(v[d] ^ v[a], 16); \
        v[c] = v[c] + v[d];       v[b] = KX_B2S_ROTR(v[b] ^ v[c], 12); \
        v[a] = v[a] + v[b] + (y); v[d] = KX_B2S_ROTR(v[d] ^ v[a], 8);  \
        v[c] = v[c] + v[d];       v[b] = KX_B2S_ROTR(v[b] ^ v[c], 7);  \
    } while (0)

/* F: compress one 64-byte block into h; t = bytes hashed so far including this block. */
static inline void kx_blake2s_compress(uint32_t h[8], const uint8_t block[64], uint64_t t,
                                       int last) {
    uint32_t v[16], m[16];
    int i;
    for (i = 0; i < 16; i++)
        m[i] = (uint32_t)block[4 * i] | ((uint32_t)block[4 * i + 1] << 8) |
               ((uint32_t)block[4 * i + 2] << 16) | ((uint32_t)block[4 * i + 3] << 24);
    for (i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = KX_B2S_IV[i];
    }
    v[12] ^= (uint32_t)t;
    v[13] ^= (uint32_t)(t >> 32);
    if (last)
        v[14] = ~v[14];
    for (i = 0; i < 10; i++) {
        const uint8_t *s = KX_B2S_SIGMA[i];
        KX_B2S_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        KX_B2S_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        KX_B2S_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        KX_B2S_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        KX_B2S_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        KX_B2S_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        KX_B2S_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        KX_B2S_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

/* The state after the key block, for MACs of outlen bytes: key 1..32 bytes, outlen 1..32.
 * Returns -1 for lengths outside those. */
static inline int kx_blake2s_keyed(uint32_t h[8], const uint8_t *key, size_t keylen,
                                   size_t outlen) {
    uint8_t block[64];
    int i;
    if (keylen < 1 || keylen > 32 || outlen < 1 || outlen > 32)
        return -1;
    for (i = 0; i < 8; i++)
        h[i] = KX_B2S_IV[i];
    h[0] ^= 0x01010000u ^ ((uint32_t)keylen << 8) ^ (uint32_t)outlen;
    memset(block, 0, sizeof block);
    memcpy(block, key, keylen);
    kx_blake2s_compress(h, block, 64, 0);
    return 0;
}

/* The MAC of msg (1..64 bytes) under a keyed state: outlen bytes into out. Returns -1 for a
 * message length outside 1..64 (an empty message would end on the key block itself). */
static inline int kx_blake2s_mac(const uint32_t keyed[8], const uint8_t *msg, size_t len,
                                 uint8_t *out, size_t outlen) {
    uint32_t h[8];
    uint8_t block[64];
    size_t i;
    if (len < 1 || len > 64 || outlen < 1 || outlen > 32)
        return -1;
    memcpy(h, keyed, sizeof h);
    memset(block, 0, sizeof block);
    memcpy(block, msg, len);
    kx_blake2s_compress(h, block, 64 + (uint64_t)len, 1);
    for (i = 0; i < outlen; i++)
        out[i] = (uint8_t)(h[i / 4] >> (8 * (i % 4)));
    return 0;
}

#endif
