/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_util.c -- small pure helpers of the store: checksums, key hash, clocks,
 * the layout fingerprint, the size-class table and test fault injection.
 *
 * Items are checksummed with CRC32C (hardware instruction when the CPU has SSE4.2,
 * a table otherwise): it detects every single-bit error and every burst up to 32 bits,
 * which is what a flipped byte in the segment looks like. */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "shm_int.h"

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_hw;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw_run(uint32_t c, const uint8_t *p,
                                                            size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = __builtin_ia32_crc32di(c64, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = __builtin_ia32_crc32qi(c, *p++);
    return c;
}
#endif

uint32_t kv_shm_crc32c(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    uint32_t c = ~crc;
    pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
    if (crc_hw)
        return ~crc_hw_run(c, p, len);
#endif
    while (len--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return ~c;
}

uint64_t kv_shm_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* SipHash-1-3 (Aumasson and Bernstein): a keyed 64-bit PRF. The store keys it with 128
 * random bits per segment, so a client cannot choose keys that land in one bucket (the
 * hash-flooding attack) without knowing the key, which never leaves the segment. One
 * compression round per 8 bytes and three finalisation rounds, as Rust's and Python's
 * hash tables use: a few ns more per short key than an unkeyed mixer. */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                          \
    do {                                                                                  \
        v0 += v1;                                                                         \
        v1 = ROTL(v1, 13);                                                                \
        v1 ^= v0;                                                                         \
        v0 = ROTL(v0, 32);                                                                \
        v2 += v3;                                                                         \
        v3 = ROTL(v3, 16);                                                                \
        v3 ^= v2;                                                                         \
        v0 += v3;                                                                         \
        v3 = ROTL(v3, 21);                                                                \
        v3 ^= v0;                                                                         \
        v2 += v1;                                                                         \
        v1 = ROTL(v1, 17);                                                                \
        v1 ^= v2;                                                                         \
        v2 = ROTL(v2, 32);                                                                \
    } while (0)

uint64_t kv_shm_siphash13(const uint64_t k[2], const void *key, size_t len)
{
    const uint8_t *p = key;
    uint64_t v0 = 0x736f6d6570736575ull ^ k[0], v1 = 0x646f72616e646f6dull ^ k[1];
    uint64_t v2 = 0x6c7967656e657261ull ^ k[0], v3 = 0x7465646279746573ull ^ k[1];
    uint64_t b = (uint64_t)len << 56, m;
    for (; len >= 8; p += 8, len -= 8) {
        memcpy(&m, p, 8);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    m = 0;
    memcpy(&m, p, len); /* little-endian tail, as the reference reads it */
    b |= m;
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t kv_shm_hash(const struct kv_shm_store *s, const void *key, size_t len)
{
    return kv_shm_siphash13(s->hkey, key, len);
}

/* 128 bits from the kernel's CSPRNG; the clock and pid only if it is unavailable. */
void kv_shm_random_key(uint64_t k[2])
{
    if (getrandom(k, 16, 0) == 16)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    k[0] = kv_shm_mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32));
    k[1] = kv_shm_mix64((uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)k);
}

int64_t kv_shm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t kv_shm_rand(void)
{
    static __thread uint64_t st;
    if (!st) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        st = kv_shm_mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^
                          (uint64_t)(uintptr_t)&st) | 1;
    }
    st ^= st << 13;
    st ^= st >> 7;
    st ^= st << 17;
    return st;
}

unsigned kv_shm_class_sizes(uint32_t *sizes, unsigned cap)
{
    unsigned n = 0;
    uint32_t sz = SHM_MIN_CHUNK;
    while (sz < SHM_MAX_CHUNK && n + 1 < cap) {
        sizes[n++] = sz;
        sz = (uint32_t)(((uint64_t)sz * 5 / 4 + 7) & ~7ull);
    }
    sizes[n++] = SHM_MAX_CHUNK;
    return n;
}

/* Everything whose change makes an old segment unreadable by this build. */
uint64_t kv_shm_fingerprint(void)
{
    uint32_t sizes[SHM_MAX_CLASSES];
    unsigned n = kv_shm_class_sizes(sizes, SHM_MAX_CLASSES - 1);
    uint64_t v[] = {sizeof(struct shm_hdr),      sizeof(struct shm_stripe),
                    sizeof(struct shm_class),    sizeof(struct shm_item),
                    sizeof(struct shm_page),     SHM_MAX_CHUNK,
                    sizeof(pthread_rwlock_t),    sizeof(pthread_mutex_t),
                    SHM_PAGE_SHIFT,              SHM_STRIPES,
                    SHM_SLOTS,                   SHM_LINE,
                    SHM_INIT_LEVEL,              sizeof(void *),
                    offsetof(struct shm_hdr, state), 0x0102030405060708ull /* byte order */};
    uint32_t c = kv_shm_crc32c(0, v, sizeof(v));
    uint32_t c2 = kv_shm_crc32c(c ^ 0x5bd1e995u, sizes, n * sizeof(sizes[0]));
    return ((uint64_t)c << 32) | c2;
}

void kv_shm_crash_point(struct kv_shm_store *s, int site)
{
    if (!s->crash_at || (s->crash_site && s->crash_site != site))
        return;
    if (__atomic_add_fetch(&s->crash_n, 1, __ATOMIC_RELAXED) == s->crash_at)
        _exit(77);
}
