/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* fuzz/fuzz_segment.c -- open store segments with random damage in every region.
 *
 * One input is a list of damage records applied to a copy of a template segment (a 2 MiB
 * store holding keys whose values are a function of the key, one of them large), cleanly
 * closed or, by the first byte, marked as crashed. The store is then opened. It must either
 * refuse (with a message) or give a usable store: every key it returns holds exactly its
 * value (never a wrong value), new writes read back, and after a clean close and reopen the
 * new writes are still there. No crash, no sanitizer report, no heap byte kept.
 *
 * Input: byte 0 bit 0 = crashed, bit 1 = LRU. Then records: u32 offset (little-endian, taken
 * modulo the segment size), u8 n; n == 0 zeroes the 4 KiB page holding the offset, else the
 * next n bytes are written there. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "kv_config.h"
#include "kv_shm.h"
#include "shm_int.h" /* the header layout, to mark a segment crashed */

#define SEG_SIZE (2u << 20)
#define NKEYS    300
#define BIG_KEY  17 /* its value spans two pages */

static uint8_t *tpl; /* owned: the template segment's bytes, cleanly closed */
static char work[128];

static size_t vlen_of(int i)
{
    return i == BIG_KEY ? 100000 : (size_t)(i * 37) % 3000;
}

static void value_of(int i, uint8_t *out, size_t n)
{
    uint32_t x = 2166136261u ^ (uint32_t)i;
    for (size_t k = 0; k < n; k++) {
        x = (x ^ (uint32_t)k) * 16777619u;
        out[k] = (uint8_t)(x >> 24);
    }
}

static void cfg_for(struct kv_config *c, int lru)
{
    kv_config_defaults(c);
    snprintf(c->data_file, sizeof(c->data_file), "%s", work);
    c->memory = SEG_SIZE;
    c->eviction = lru ? KV_EVICT_LRU : KV_EVICT_NONE;
}

static void template_build(void)
{
    struct kv_config c;
    snprintf(work, sizeof(work), "/dev/shm/libevkv-fuzz-segment-%d", (int)getpid());
    cfg_for(&c, 0);
    unlink(work);
    struct kv_shm_store *s;
    char err[512];
    if (kv_shm_store_open(&c, err, sizeof(err), &s))
        fuzz_fail("template: %s", err);
    static uint8_t v[100000];
    for (int i = 0; i < NKEYS; i++) {
        char k[16];
        int kl = snprintf(k, sizeof(k), "fz-%d", i);
        value_of(i, v, vlen_of(i));
        if (kv_shm_set(s, k, (size_t)kl, v, vlen_of(i), NULL, NULL))
            fuzz_fail("template: set %d", i);
    }
    kv_shm_store_close(s);
    int fd = open(work, O_RDONLY);
    tpl = malloc(SEG_SIZE);
    if (fd < 0 || !tpl || pread(fd, tpl, SEG_SIZE, 0) != SEG_SIZE)
        fuzz_fail("template: read back");
    close(fd);
}

static void *get_alloc(void *ctx, size_t len)
{
    uint8_t **pp = ctx;
    *pp = kv_mem_alloc(KV_MOD_TEST, len ? len : 1);
    return *pp;
}

/* A key the store returns holds exactly its value; absent or refused as damaged is fine. */
static void check_keys(struct kv_shm_store *s)
{
    static uint8_t want[100000];
    for (int i = 0; i < NKEYS; i++) {
        char k[16];
        int kl = snprintf(k, sizeof(k), "fz-%d", i);
        uint8_t *got = NULL;
        size_t n = 0;
        int rc = kv_shm_get(s, k, (size_t)kl, get_alloc, &got, &n, NULL);
        FUZZ_CHECK(rc == 0 || rc == KV_ENOTFOUND || rc == KV_ECORRUPT, "get %s: %d", k, rc);
        if (rc == 0) {
            value_of(i, want, vlen_of(i));
            FUZZ_CHECK(n == vlen_of(i) && memcmp(got, want, n) == 0,
                       "key %s served a wrong value (%zu bytes)", k, n);
        }
        kv_mem_free(KV_MOD_TEST, got);
    }
}

/* New writes into the opened store; returns a bit mask of those acknowledged. */
static uint64_t write_new(struct kv_shm_store *s)
{
    uint64_t acked = 0;
    static uint8_t v[5000];
    for (int i = 0; i < 40; i++) {
        char k[16];
        int kl = snprintf(k, sizeof(k), "new-%d", i);
        value_of(1000 + i, v, (size_t)i * 120);
        int rc = kv_shm_set(s, k, (size_t)kl, v, (size_t)i * 120, NULL, NULL);
        FUZZ_CHECK(rc == 0 || rc == KV_ENOMEM, "set %s: %d", k, rc);
        if (rc == 0)
            acked |= 1ull << i;
    }
    struct kv_shm_pair p[3] = {{"m-a", 3, "1", 1}, {"m-b", 3, "22", 2}, {"m-c", 3, "333", 3}};
    int rc = kv_shm_mset(s, p, 3, NULL, NULL);
    FUZZ_CHECK(rc == 0 || rc == KV_ENOMEM, "mset: %d", rc);
    kv_shm_del(s, "fz-5", 4);
    kv_shm_incr(s, "ctr", 3, 5, NULL, NULL);
    kv_shm_expire(s, "fz-9", 4, 100000);
    return acked;
}

static void check_new(struct kv_shm_store *s, uint64_t acked)
{
    static uint8_t want[5000];
    for (int i = 0; i < 40; i++) {
        if (!(acked >> i & 1))
            continue;
        char k[16];
        int kl = snprintf(k, sizeof(k), "new-%d", i);
        uint8_t *got = NULL;
        size_t n = 0;
        int rc = kv_shm_get(s, k, (size_t)kl, get_alloc, &got, &n, NULL);
        value_of(1000 + i, want, (size_t)i * 120);
        FUZZ_CHECK(rc == 0 && n == (size_t)i * 120 && memcmp(got, want, n) == 0,
                   "acknowledged %s lost or wrong (rc %d)", k, rc);
        kv_mem_free(KV_MOD_TEST, got);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tpl)
        template_build();
    if (size < 1)
        return 0;
    struct kv_mem_snapshot before, after;
    kv_mem_snapshot(&before);
    uint8_t *seg = malloc(SEG_SIZE);
    FUZZ_CHECK(seg != NULL);
    memcpy(seg, tpl, SEG_SIZE);
    int crashed = data[0] & 1, lru = data[0] >> 1 & 1;
    if (crashed) /* its server died: the clean mark is not there */
        memset(seg + offsetof(struct shm_hdr, clean), 0, sizeof(uint64_t));
    for (size_t at = 1; at + 5 <= size;) {
        uint32_t off;
        memcpy(&off, data + at, 4);
        unsigned n = data[at + 4];
        at += 5;
        off %= SEG_SIZE;
        if (n == 0) {
            memset(seg + (off & ~4095u), 0, 4096);
            continue;
        }
        if (at + n > size)
            n = (unsigned)(size - at);
        if (off + n > SEG_SIZE)
            n = SEG_SIZE - off;
        memcpy(seg + off, data + at, n);
        at += n;
    }
    int fd = open(work, O_RDWR | O_CREAT | O_TRUNC, 0600);
    FUZZ_CHECK(fd >= 0 && pwrite(fd, seg, SEG_SIZE, 0) == SEG_SIZE);
    close(fd);
    free(seg);
    struct kv_config c;
    cfg_for(&c, lru);
    struct kv_shm_store *s = NULL;
    char err[2048];
    int rc = kv_shm_store_open(&c, err, sizeof(err), &s);
    if (rc) {
        FUZZ_CHECK(err[0] != 0, "refused (%d) without saying why", rc);
    } else {
        check_keys(s);
        uint64_t acked = write_new(s);
        check_new(s, acked);
        check_keys(s);
        kv_shm_store_close(s);
        rc = kv_shm_store_open(&c, err, sizeof(err), &s);
        FUZZ_CHECK(rc == 0, "a store closed cleanly after repair does not reopen: %s", err);
        check_new(s, acked);
        kv_shm_store_close(s);
    }
    unlink(work);
    kv_mem_snapshot(&after);
    int bad = fuzz_mem_diff(&before, &after, FUZZ_MODS_ALL);
    if (bad >= 0) {
        fuzz_print_snapshots(&before, &after);
        fuzz_fail("module %s kept heap bytes", kv_mem_mod_name((enum kv_mod)bad));
    }
    return 0;
}
