/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_shm.c -- CUnit suite of src/shm, the crash-safe store in shared memory.
 *
 * Every test works on a private segment named after the pid and the test, and unlinks it
 * at the end (also before, in case an earlier run died). Crash tests run a writer in a
 * child process that reports each completed write through a shared counter written only
 * after the call returned; the parent kills it (SIGKILL at a random moment, or an
 * injected _exit at a chosen crash point), reopens the segment, which runs recovery, and
 * checks every reported write byte for byte. Tests reach into the segment through
 * shm_int.h only to damage it on purpose. */
#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kv_mem.h"
#include "kv_shm.h"
#include "shm_int.h"

/* ---- helpers ------------------------------------------------------------------------ */

static void cfg_make(struct kv_config *c, const char *tag, size_t mem)
{
    kv_config_defaults(c);
    snprintf(c->shm_name, sizeof(c->shm_name), "/kvshm-test-%d-%s", (int)getpid(), tag);
    c->memory = mem;
    kv_shm_store_unlink(c);
}

static struct kv_shm_store *open_ok(const struct kv_config *c)
{
    struct kv_shm_store *s = NULL;
    char err[512];
    int rc = kv_shm_store_open(c, err, sizeof(err), &s);
    if (rc)
        fprintf(stderr, "open %s: %d %s\n", c->shm_name, rc, err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return s;
}

struct vbuf {
    uint8_t *p; /* owned (KV_MOD_TEST) */
    size_t len;
};

static void *vbuf_alloc(void *ctx, size_t n)
{
    struct vbuf *v = ctx;
    v->p = kv_mem_alloc(KV_MOD_TEST, n ? n : 1);
    v->len = n;
    return v->p;
}

/* 0 and the value in *v (free with vbuf_free), or the error. */
static int getv(struct kv_shm_store *s, const char *key, struct vbuf *v, uint64_t *ver)
{
    v->p = NULL;
    v->len = 0;
    size_t n = 0;
    int rc = kv_shm_get(s, key, strlen(key), vbuf_alloc, v, &n, ver);
    if (rc == 0)
        CU_ASSERT_EQUAL(n, v->len);
    if (rc && v->p) {
        kv_mem_free(KV_MOD_TEST, v->p);
        v->p = NULL;
    }
    return rc;
}

static void vbuf_free(struct vbuf *v)
{
    kv_mem_free(KV_MOD_TEST, v->p);
    v->p = NULL;
}

static int sets(struct kv_shm_store *s, const char *k, const char *v)
{
    return kv_shm_set(s, k, strlen(k), v, strlen(v), NULL, NULL);
}

static int value_is(struct kv_shm_store *s, const char *k, const void *want, size_t wlen)
{
    struct vbuf v;
    if (getv(s, k, &v, NULL))
        return 0;
    int ok = v.len == wlen && memcmp(v.p, want, wlen) == 0;
    vbuf_free(&v);
    return ok;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* deterministic value of length n for (seed): byte-exact checks need no stored copy */
static void fill_value(uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = (uint8_t)x;
    }
    if (n >= 8)
        memcpy(p, &seed, 8);
}

/* Marks a closed segment as not cleanly shut down, as a kill would leave it. */
static void mark_unclean(const struct kv_config *c)
{
    int fd = shm_open(c->shm_name, O_RDWR, 0);
    CU_ASSERT_FATAL(fd >= 0);
    struct shm_hdr *h = mmap(NULL, SHM_HDR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CU_ASSERT_FATAL(h != MAP_FAILED);
    h->clean = 0;
    munmap(h, SHM_HDR_SIZE);
    close(fd);
}

/* ---- operations and statuses -------------------------------------------------------- */

static void test_shm_set_get_del(void)
{
    struct kv_config c;
    cfg_make(&c, "basic", 8u << 20);
    struct kv_shm_store *s = open_ok(&c);
    struct vbuf v;
    uint64_t v1, v2, vg;
    CU_ASSERT_EQUAL(getv(s, "nope", &v, NULL), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(kv_shm_set(s, "k1", 2, "hello", 5, NULL, &v1), 0);
    CU_ASSERT_EQUAL(getv(s, "k1", &v, &vg), 0);
    CU_ASSERT(v.len == 5 && memcmp(v.p, "hello", 5) == 0);
    CU_ASSERT_EQUAL(vg, v1);
    vbuf_free(&v);
    CU_ASSERT_EQUAL(kv_shm_set(s, "k1", 2, "world!", 6, NULL, &v2), 0);
    CU_ASSERT_NOT_EQUAL(v1, v2); /* every write changes the version */
    CU_ASSERT(value_is(s, "k1", "world!", 6));
    CU_ASSERT_EQUAL(kv_shm_exists(s, "k1", 2), 0);
    CU_ASSERT_EQUAL(kv_shm_exists(s, "k2", 2), KV_ENOTFOUND);
    /* empty value */
    CU_ASSERT_EQUAL(kv_shm_set(s, "empty", 5, "", 0, NULL, NULL), 0);
    CU_ASSERT(value_is(s, "empty", "", 0));
    /* key bounds: 1 .. max_key */
    char big[5000];
    memset(big, 'k', sizeof(big));
    CU_ASSERT_EQUAL(kv_shm_set(s, big, 0, "x", 1, NULL, NULL), KV_EINVAL);
    CU_ASSERT_EQUAL(kv_shm_set(s, big, c.max_key + 1, "x", 1, NULL, NULL), KV_EINVAL);
    CU_ASSERT_EQUAL(kv_shm_set(s, big, c.max_key, "x", 1, NULL, NULL), 0);
    CU_ASSERT_EQUAL(kv_shm_exists(s, big, c.max_key), 0);
    CU_ASSERT_EQUAL(kv_shm_get(s, big, 0, vbuf_alloc, &v, NULL, NULL), KV_EINVAL);
    /* values of every size class and a large (multi-page) one */
    static uint8_t val[200000];
    for (size_t n = 1; n <= sizeof(val); n = n * 3 + 1) {
        char key[32];
        snprintf(key, sizeof(key), "size-%zu", n);
        fill_value(val, n, n);
        CU_ASSERT_EQUAL(kv_shm_set(s, key, strlen(key), val, n, NULL, NULL), 0);
    }
    for (size_t n = 1; n <= sizeof(val); n = n * 3 + 1) {
        char key[32];
        snprintf(key, sizeof(key), "size-%zu", n);
        fill_value(val, n, n);
        CU_ASSERT(value_is(s, key, val, n));
    }
    /* delete */
    CU_ASSERT_EQUAL(kv_shm_del(s, "k1", 2), 0);
    CU_ASSERT_EQUAL(kv_shm_del(s, "k1", 2), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(getv(s, "k1", &v, NULL), KV_ENOTFOUND);
    /* a value bigger than the segment can never fit */
    uint8_t *huge = kv_mem_calloc(KV_MOD_TEST, 9u << 20);
    CU_ASSERT_EQUAL(kv_shm_set(s, "huge", 4, huge, 9u << 20, NULL, NULL), KV_ETOOBIG);
    kv_mem_free(KV_MOD_TEST, huge);
    struct kv_shm_stats st;
    CU_ASSERT_EQUAL(kv_shm_stats(s, &st), 0);
    CU_ASSERT(st.keys >= 3);
    CU_ASSERT(st.hits > 0 && st.misses > 0);
    CU_ASSERT_EQUAL(st.recovered, 0);
    kv_shm_store_close(s);
    /* closed cleanly: reopened without recovery, data intact */
    s = open_ok(&c);
    CU_ASSERT_EQUAL(kv_shm_stats(s, &st), 0);
    CU_ASSERT_EQUAL(st.recovered, 0);
    CU_ASSERT_EQUAL(st.generation, 2);
    CU_ASSERT(value_is(s, "empty", "", 0));
    fill_value(val, 121, 121);
    CU_ASSERT(value_is(s, "size-121", val, 121));
    kv_shm_store_close(s);
    CU_ASSERT_EQUAL(kv_shm_store_unlink(&c), 0);
    CU_ASSERT_EQUAL(kv_shm_store_unlink(&c), KV_ENOTFOUND);
}

static void test_shm_set_conditions(void)
{
    struct kv_config c;
    cfg_make(&c, "cond", 4u << 20);
    struct kv_shm_store *s = open_ok(&c);
    struct kv_shm_set_opts nx = {KV_SHM_NX, 0, 0}, xx = {KV_SHM_XX, 0, 0};
    uint64_t ver, ver2;
    CU_ASSERT_EQUAL(kv_shm_set(s, "a", 1, "1", 1, &xx, NULL), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(kv_shm_exists(s, "a", 1), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(kv_shm_set(s, "a", 1, "1", 1, &nx, &ver), 0);
    CU_ASSERT_EQUAL(kv_shm_set(s, "a", 1, "2", 1, &nx, NULL), KV_EEXISTS);
    CU_ASSERT(value_is(s, "a", "1", 1));
    CU_ASSERT_EQUAL(kv_shm_set(s, "a", 1, "3", 1, &xx, &ver2), 0);
    CU_ASSERT(value_is(s, "a", "3", 1));
    struct kv_shm_set_opts cas = {KV_SHM_CAS, ver, 0};
    CU_ASSERT_EQUAL(kv_shm_set(s, "a", 1, "4", 1, &cas, NULL), KV_EEXISTS); /* stale */
    CU_ASSERT(value_is(s, "a", "3", 1));
    cas.cas_version = ver2;
    CU_ASSERT_EQUAL(kv_shm_set(s, "a", 1, "5", 1, &cas, NULL), 0);
    CU_ASSERT(value_is(s, "a", "5", 1));
    CU_ASSERT_EQUAL(kv_shm_set(s, "zz", 2, "5", 1, &cas, NULL), KV_ENOTFOUND);
    /* TTL and KEEPTTL */
    struct kv_shm_set_opts ttl = {0, 0, 100000}, keep = {KV_SHM_KEEPTTL, 0, 0};
    int64_t t;
    CU_ASSERT_EQUAL(kv_shm_set(s, "t", 1, "x", 1, &ttl, NULL), 0);
    CU_ASSERT_EQUAL(kv_shm_ttl(s, "t", 1, &t), 0);
    CU_ASSERT(t > 90000 && t <= 100000);
    CU_ASSERT_EQUAL(kv_shm_set(s, "t", 1, "y", 1, &keep, NULL), 0);
    CU_ASSERT_EQUAL(kv_shm_ttl(s, "t", 1, &t), 0);
    CU_ASSERT(t > 90000 && t <= 100000);
    CU_ASSERT_EQUAL(kv_shm_set(s, "t", 1, "z", 1, NULL, NULL), 0); /* plain set drops it */
    CU_ASSERT_EQUAL(kv_shm_ttl(s, "t", 1, &t), 0);
    CU_ASSERT_EQUAL(t, -1);
    CU_ASSERT_EQUAL(kv_shm_ttl(s, "none", 4, &t), KV_ENOTFOUND);
    struct kv_shm_set_opts neg = {0, 0, -5};
    CU_ASSERT_EQUAL(kv_shm_set(s, "t", 1, "z", 1, &neg, NULL), KV_EINVAL);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

static void test_shm_incr(void)
{
    struct kv_config c;
    cfg_make(&c, "incr", 4u << 20);
    struct kv_shm_store *s = open_ok(&c);
    int64_t r;
    uint64_t v1, v2;
    CU_ASSERT_EQUAL(kv_shm_incr(s, "n", 1, 5, &r, &v1), 0);
    CU_ASSERT_EQUAL(r, 5);
    CU_ASSERT_EQUAL(kv_shm_incr(s, "n", 1, -12, &r, &v2), 0);
    CU_ASSERT_EQUAL(r, -7);
    CU_ASSERT_NOT_EQUAL(v1, v2);
    CU_ASSERT(value_is(s, "n", "-7", 2));
    CU_ASSERT_EQUAL(sets(s, "big", "9223372036854775806"), 0);
    CU_ASSERT_EQUAL(kv_shm_incr(s, "big", 3, 1, &r, NULL), 0);
    CU_ASSERT_EQUAL(r, INT64_MAX);
    CU_ASSERT_EQUAL(kv_shm_incr(s, "big", 3, 1, &r, NULL), KV_ENOTNUM); /* overflow */
    CU_ASSERT(value_is(s, "big", "9223372036854775807", 19));
    CU_ASSERT_EQUAL(sets(s, "min", "-9223372036854775808"), 0);
    CU_ASSERT_EQUAL(kv_shm_incr(s, "min", 3, 0, &r, NULL), 0);
    CU_ASSERT_EQUAL(r, INT64_MIN);
    CU_ASSERT_EQUAL(kv_shm_incr(s, "min", 3, -1, &r, NULL), KV_ENOTNUM);
    CU_ASSERT_EQUAL(sets(s, "zero", "0"), 0);
    CU_ASSERT_EQUAL(kv_shm_incr(s, "zero", 4, -3, &r, NULL), 0);
    CU_ASSERT_EQUAL(r, -3);
    const char *bad[] = {"abc", "12a", " 1", "1 ", "", "-", "+1", "99999999999999999999",
                         "9223372036854775808", "007", "-0", "1.5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CU_ASSERT_EQUAL(sets(s, "s", bad[i]), 0);
        CU_ASSERT_EQUAL(kv_shm_incr(s, "s", 1, 1, &r, NULL), KV_ENOTNUM);
        CU_ASSERT(value_is(s, "s", bad[i], strlen(bad[i])));
    }
    /* INCR keeps the TTL */
    struct kv_shm_set_opts ttl = {0, 0, 100000};
    int64_t t;
    CU_ASSERT_EQUAL(kv_shm_set(s, "tt", 2, "1", 1, &ttl, NULL), 0);
    CU_ASSERT_EQUAL(kv_shm_incr(s, "tt", 2, 1, &r, NULL), 0);
    CU_ASSERT_EQUAL(kv_shm_ttl(s, "tt", 2, &t), 0);
    CU_ASSERT(t > 0);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

static void test_shm_expiry_lazy(void)
{
    struct kv_config c;
    cfg_make(&c, "lazy", 4u << 20);
    struct kv_shm_store *s = open_ok(&c);
    struct kv_shm_set_opts ttl = {0, 0, 40};
    struct vbuf v;
    int64_t t;
    CU_ASSERT_EQUAL(kv_shm_set(s, "e", 1, "v", 1, &ttl, NULL), 0);
    CU_ASSERT_EQUAL(sets(s, "p", "v"), 0);
    CU_ASSERT_EQUAL(kv_shm_expire(s, "p", 1, 40), 0);
    CU_ASSERT_EQUAL(sets(s, "q", "v"), 0);
    CU_ASSERT_EQUAL(kv_shm_expire(s, "q", 1, 40), 0);
    CU_ASSERT_EQUAL(kv_shm_expire(s, "q", 1, -1), 0); /* persist */
    CU_ASSERT_EQUAL(kv_shm_ttl(s, "q", 1, &t), 0);
    CU_ASSERT_EQUAL(t, -1);
    CU_ASSERT_EQUAL(kv_shm_ttl(s, "e", 1, &t), 0);
    CU_ASSERT(t >= 0 && t <= 40);
    CU_ASSERT(value_is(s, "e", "v", 1));
    sleep_ms(70);
    CU_ASSERT_EQUAL(getv(s, "e", &v, NULL), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(kv_shm_exists(s, "p", 1), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(kv_shm_ttl(s, "p", 1, &t), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(kv_shm_incr(s, "p", 1, 1, NULL, NULL), 0); /* expired: starts at 0 */
    CU_ASSERT(value_is(s, "p", "1", 1));
    CU_ASSERT(value_is(s, "q", "v", 1));
    CU_ASSERT_EQUAL(kv_shm_expire(s, "q", 1, 0), 0); /* 0 removes now */
    CU_ASSERT_EQUAL(kv_shm_exists(s, "q", 1), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(kv_shm_expire(s, "q", 1, 10), KV_ENOTFOUND);
    /* NX succeeds over an expired key */
    struct kv_shm_set_opts nx = {KV_SHM_NX, 0, 30};
    CU_ASSERT_EQUAL(kv_shm_set(s, "n", 1, "1", 1, &nx, NULL), 0);
    sleep_ms(50);
    CU_ASSERT_EQUAL(kv_shm_set(s, "n", 1, "2", 1, &nx, NULL), 0);
    CU_ASSERT(value_is(s, "n", "2", 1));
    struct kv_shm_stats st;
    kv_shm_stats(s, &st);
    CU_ASSERT(st.expired >= 3);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

static void test_shm_expiry_sweep(void)
{
    struct kv_config c;
    cfg_make(&c, "sweep", 8u << 20);
    struct kv_shm_store *s = open_ok(&c);
    struct kv_shm_set_opts ttl = {0, 0, 30};
    char k[32];
    for (int i = 0; i < 4000; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        CU_ASSERT_EQUAL(kv_shm_set(s, k, strlen(k), "value", 5, i % 2 ? &ttl : NULL, NULL), 0);
    }
    struct kv_shm_stats st;
    kv_shm_stats(s, &st);
    CU_ASSERT_EQUAL(st.keys, 4000);
    sleep_ms(60);
    int removed = 0;
    for (uint64_t i = 0; i < st.index_buckets / 64 + 2; i++)
        removed += kv_shm_sweep(s, 64);
    CU_ASSERT_EQUAL(removed, 2000);
    kv_shm_stats(s, &st);
    CU_ASSERT_EQUAL(st.keys, 2000);
    CU_ASSERT_EQUAL(st.expired, 2000);
    for (int i = 0; i < 4000; i++) {
        snprintf(k, sizeof(k), "key-%d", i);
        CU_ASSERT_EQUAL(kv_shm_exists(s, k, strlen(k)), i % 2 ? KV_ENOTFOUND : 0);
    }
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

static void test_shm_flush_stats(void)
{
    struct kv_config c;
    cfg_make(&c, "flush", 8u << 20);
    struct kv_shm_store *s = open_ok(&c);
    struct kv_shm_stats a, b;
    kv_shm_stats(s, &a);
    char k[32];
    uint8_t val[100];
    for (int i = 0; i < 10000; i++) {
        snprintf(k, sizeof(k), "flush-%d", i);
        CU_ASSERT_EQUAL_FATAL(kv_shm_set(s, k, strlen(k), val, sizeof(val), NULL, NULL), 0);
    }
    kv_shm_stats(s, &b);
    CU_ASSERT_EQUAL(b.keys, 10000);
    CU_ASSERT(b.index_buckets > a.index_buckets); /* the index grew */
    CU_ASSERT(b.bytes_used > a.bytes_used);
    CU_ASSERT(b.bytes_used + b.bytes_free <= b.segment_size);
    uint64_t used = 0;
    for (unsigned i = 0; i < b.nclasses; i++)
        used += b.cls[i].chunks_used;
    CU_ASSERT(used >= 10000);
    CU_ASSERT_EQUAL(kv_shm_flush(s), 0);
    kv_shm_stats(s, &b);
    CU_ASSERT_EQUAL(b.keys, 0);
    for (int i = 0; i < 10000; i += 97) {
        snprintf(k, sizeof(k), "flush-%d", i);
        CU_ASSERT_EQUAL(kv_shm_exists(s, k, strlen(k)), KV_ENOTFOUND);
    }
    CU_ASSERT_EQUAL(sets(s, "after", "flush"), 0);
    CU_ASSERT(value_is(s, "after", "flush", 5));
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

/* ---- segment: mappings, lock, header checks ------------------------------------------ */

static void test_shm_two_mappings(void)
{
    struct kv_config c;
    cfg_make(&c, "twomap", 4u << 20);
    struct kv_shm_store *a = open_ok(&c), *b = NULL;
    struct kv_shm_open_opts at = {.attach = 1};
    char err[256];
    CU_ASSERT_EQUAL_FATAL(kv_shm_store_open_ex(&c, &at, err, sizeof(err), &b), 0);
    CU_ASSERT_PTR_NOT_EQUAL(a->base, b->base); /* two different addresses */
    CU_ASSERT_EQUAL(sets(a, "via-a", "written through mapping A"), 0);
    CU_ASSERT(value_is(b, "via-a", "written through mapping A", 25));
    for (int i = 0; i < 3000; i++) { /* splits and lines, all offsets */
        char k[32];
        snprintf(k, sizeof(k), "b-%d", i);
        CU_ASSERT_EQUAL(kv_shm_set(b, k, strlen(k), k, strlen(k), NULL, NULL), 0);
    }
    for (int i = 0; i < 3000; i++) {
        char k[32];
        snprintf(k, sizeof(k), "b-%d", i);
        CU_ASSERT(value_is(a, k, k, strlen(k)));
    }
    CU_ASSERT_EQUAL(memcmp(a->base + a->data_off, b->base + b->data_off, 1u << 20), 0);
    kv_shm_store_close(b);
    kv_shm_store_close(a);
    kv_shm_store_unlink(&c);
}

static void test_shm_lock_second_opener(void)
{
    struct kv_config c;
    cfg_make(&c, "lock", 4u << 20);
    struct kv_shm_store *s = open_ok(&c);
    int pfd[2];
    CU_ASSERT_FATAL(pipe(pfd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        struct kv_shm_store *s2 = NULL;
        char err[512];
        int rc = kv_shm_store_open(&c, err, sizeof(err), &s2);
        if (write(pfd[1], err, strlen(err) + 1) < 0)
            _exit(100);
        _exit(-rc);
    }
    close(pfd[1]);
    char msg[512] = {0};
    ssize_t n = read(pfd[0], msg, sizeof(msg) - 1);
    close(pfd[0]);
    int st;
    waitpid(pid, &st, 0);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == -KV_ELOCKED);
    CU_ASSERT(n > 0);
    char pidtxt[32];
    snprintf(pidtxt, sizeof(pidtxt), "pid %d", (int)getpid());
    CU_ASSERT_PTR_NOT_NULL(strstr(msg, pidtxt));
    kv_shm_store_close(s);
    /* released at close: the next opener gets it */
    s = open_ok(&c);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

static void poke_hdr(const struct kv_config *c, size_t off, const void *bytes, size_t n)
{
    int fd = shm_open(c->shm_name, O_RDWR, 0);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(pwrite(fd, bytes, n, (off_t)off) == (ssize_t)n);
    close(fd);
}

static void poke_both(const struct kv_config *c, uint64_t copy_off, size_t off,
                      const void *bytes, size_t n)
{
    poke_hdr(c, off, bytes, n);
    poke_hdr(c, copy_off + off, bytes, n);
}

static void expect_refused(const struct kv_config *c, int want, const char *needle)
{
    struct kv_shm_store *s = NULL;
    char err[512];
    int rc = kv_shm_store_open(c, err, sizeof(err), &s);
    CU_ASSERT_EQUAL(rc, want);
    if (!strstr(err, needle))
        fprintf(stderr, "refusal text lacks \"%s\": %s\n", needle, err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, needle));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--reset-store"));
    if (rc == 0)
        kv_shm_store_close(s);
}

static void test_shm_bad_header(void)
{
    struct kv_config c;
    cfg_make(&c, "badhdr", 4u << 20);
    struct kv_shm_store *s = open_ok(&c);
    CU_ASSERT_EQUAL(sets(s, "keep", "me"), 0);
    kv_shm_store_close(s);
    struct shm_hdr h;
    int fd = shm_open(c.shm_name, O_RDONLY, 0);
    CU_ASSERT_FATAL(pread(fd, &h, sizeof(h), 0) == (ssize_t)sizeof(h));
    close(fd);

    /* the header has a copy (a damaged header alone is restored from it: see
     * test_shm_promises); damage to both is refused */
    uint64_t bad64 = 0x1234;
    uint32_t bad32 = 99;
    poke_both(&c, h.hdr2_off, offsetof(struct shm_hdr, magic), &bad64, 8);
    expect_refused(&c, KV_ECORRUPT, "does not hold a libevkv store");
    poke_both(&c, h.hdr2_off, offsetof(struct shm_hdr, magic), &h.magic, 8);
    poke_both(&c, h.hdr2_off, offsetof(struct shm_hdr, layout_version), &bad32, 4);
    expect_refused(&c, KV_ECORRUPT, "layout version 99");
    poke_both(&c, h.hdr2_off, offsetof(struct shm_hdr, layout_version), &h.layout_version, 4);
    poke_both(&c, h.hdr2_off, offsetof(struct shm_hdr, fingerprint), &bad64, 8);
    expect_refused(&c, KV_ECORRUPT, "incompatible build");
    poke_both(&c, h.hdr2_off, offsetof(struct shm_hdr, fingerprint), &h.fingerprint, 8);
    poke_both(&c, h.hdr2_off, offsetof(struct shm_hdr, n_dir), &bad64, 8);
    expect_refused(&c, KV_ECORRUPT, "damaged header");
    poke_both(&c, h.hdr2_off, offsetof(struct shm_hdr, n_dir), &h.n_dir, 8);
    /* a smaller --memory: never shrunk (unless asked: test_shm_promises) nor wiped */
    struct kv_config c2 = c;
    c2.memory = 2u << 20;
    expect_refused(&c2, KV_EINVAL, "--memory is 2097152");
    /* intact again: the data is still there */
    s = open_ok(&c);
    CU_ASSERT(value_is(s, "keep", "me", 2));
    kv_shm_store_close(s);

    /* reset_store moves it aside and starts empty */
    poke_both(&c, h.hdr2_off, offsetof(struct shm_hdr, magic), &bad64, 8);
    c.reset_store = 1;
    char err[512];
    CU_ASSERT_EQUAL(kv_shm_store_open(&c, err, sizeof(err), &s), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "moved the unusable segment aside"));
    char *moved = strstr(err, "/dev/shm");
    CU_ASSERT_PTR_NOT_NULL_FATAL(moved);
    char path[600];
    snprintf(path, sizeof(path), "%s", moved);
    *strchr(path, ' ') = 0;
    struct stat sb;
    CU_ASSERT_EQUAL(stat(path, &sb), 0); /* the old segment survives under its new name */
    CU_ASSERT_EQUAL(sb.st_mode & 0777, 0600);
    CU_ASSERT_EQUAL(unlink(path), 0);
    CU_ASSERT_EQUAL(kv_shm_exists(s, "keep", 4), KV_ENOTFOUND);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

static void test_shm_file_backed(void)
{
    struct kv_config c;
    cfg_make(&c, "file", 4u << 20);
    snprintf(c.data_file, sizeof(c.data_file), "/tmp/kvshm-test-%d.data", (int)getpid());
    unlink(c.data_file);
    struct kv_shm_store *s = open_ok(&c);
    CU_ASSERT_EQUAL(sets(s, "disk", "backed"), 0);
    kv_shm_store_close(s);
    struct stat sb;
    CU_ASSERT_EQUAL(stat(c.data_file, &sb), 0);
    CU_ASSERT_EQUAL(sb.st_size, 4 << 20);
    CU_ASSERT_EQUAL(sb.st_mode & 0777, 0600);
    s = open_ok(&c);
    CU_ASSERT(value_is(s, "disk", "backed", 6));
    kv_shm_store_close(s);
    CU_ASSERT_EQUAL(kv_shm_store_unlink(&c), 0);
    /* a reservation that cannot be met fails at open and leaves nothing behind */
    struct kv_config big;
    cfg_make(&big, "huge", 0);
    big.memory = 4ull << 40;
    char err[512];
    CU_ASSERT_EQUAL(kv_shm_store_open(&big, err, sizeof(err), &s), KV_ENOMEM);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "cannot reserve"));
    CU_ASSERT_EQUAL(kv_shm_store_unlink(&big), KV_ENOTFOUND);
}

/* ---- full store ---------------------------------------------------------------------- */

static void test_shm_full_no_eviction(void)
{
    struct kv_config c;
    cfg_make(&c, "full", 4u << 20);
    struct kv_shm_store *s = open_ok(&c);
    uint8_t val[300];
    char k[32];
    int n = 0, rc = 0;
    for (n = 0; n < 100000; n++) {
        snprintf(k, sizeof(k), "f-%d", n);
        fill_value(val, sizeof(val), (uint64_t)n);
        rc = kv_shm_set(s, k, strlen(k), val, sizeof(val), NULL, NULL);
        if (rc)
            break;
    }
    CU_ASSERT_EQUAL(rc, KV_ENOMEM);
    CU_ASSERT(n > 5000);
    /* an overwrite that needs a new chunk fails and leaves the old value */
    uint8_t bigger[2000];
    memset(bigger, 'x', sizeof(bigger));
    CU_ASSERT_EQUAL(kv_shm_set(s, "f-0", 3, bigger, sizeof(bigger), NULL, NULL), KV_ENOMEM);
    for (int i = 0; i < n; i++) {
        snprintf(k, sizeof(k), "f-%d", i);
        fill_value(val, sizeof(val), (uint64_t)i);
        CU_ASSERT(value_is(s, k, val, sizeof(val)));
    }
    struct kv_shm_stats st;
    kv_shm_stats(s, &st);
    CU_ASSERT_EQUAL(st.evictions, 0);
    CU_ASSERT_EQUAL(st.keys, (uint64_t)n);
    /* freeing makes room again */
    CU_ASSERT_EQUAL(kv_shm_del(s, "f-1", 3), 0);
    CU_ASSERT_EQUAL(kv_shm_set(s, "f-new", 5, val, sizeof(val), NULL, NULL), 0);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

static void test_shm_full_lru_eviction(void)
{
    struct kv_config c;
    cfg_make(&c, "lru", 4u << 20);
    c.eviction = KV_EVICT_LRU;
    struct kv_shm_store *s = open_ok(&c);
    uint8_t val[300];
    char k[32];
    /* 200 hot keys, read between every batch of writes; 60000 cold ones stream through */
    for (int i = 0; i < 200; i++) {
        snprintf(k, sizeof(k), "hot-%d", i);
        fill_value(val, sizeof(val), (uint64_t)i + 1000000);
        CU_ASSERT_EQUAL(kv_shm_set(s, k, strlen(k), val, sizeof(val), NULL, NULL), 0);
    }
    int fails = 0;
    for (int n = 0; n < 60000; n++) {
        snprintf(k, sizeof(k), "cold-%d", n);
        fill_value(val, sizeof(val), (uint64_t)n);
        int rc = kv_shm_set(s, k, strlen(k), val, sizeof(val), NULL, NULL);
        if (rc && fails++ < 3)
            fprintf(stderr, "lru set %d: %s\n", n, kv_strerror(rc));
        if (n % 2000 == 0) {
            sleep_ms(5); /* the LRU clock ticks in 4 ms */
            for (int i = 0; i < 200; i++) {
                snprintf(k, sizeof(k), "hot-%d", i);
                CU_ASSERT_EQUAL(kv_shm_exists(s, k, strlen(k)) == 0 ||
                                    kv_shm_exists(s, k, strlen(k)) == KV_ENOTFOUND, 1);
                struct vbuf v;
                if (getv(s, k, &v, NULL) == 0)
                    vbuf_free(&v);
            }
        }
    }
    CU_ASSERT_EQUAL(fails, 0); /* with LRU a set never fails for want of room */
    struct kv_shm_stats st;
    kv_shm_stats(s, &st);
    CU_ASSERT(st.evictions > 40000);
    int hot = 0, cold_old = 0;
    for (int i = 0; i < 200; i++) {
        snprintf(k, sizeof(k), "hot-%d", i);
        fill_value(val, sizeof(val), (uint64_t)i + 1000000);
        hot += value_is(s, k, val, sizeof(val));
    }
    for (int i = 0; i < 2000; i++) {
        snprintf(k, sizeof(k), "cold-%d", i);
        cold_old += kv_shm_exists(s, k, strlen(k)) == 0;
    }
    CU_ASSERT(hot >= 180);   /* recently used keys survive... */
    CU_ASSERT(cold_old < 200); /* ...old untouched ones go first */
    /* the newest writes are there, byte-exact */
    for (int i = 59900; i < 60000; i++) {
        snprintf(k, sizeof(k), "cold-%d", i);
        fill_value(val, sizeof(val), (uint64_t)i);
        CU_ASSERT(value_is(s, k, val, sizeof(val)));
    }
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

/* ---- scan ---------------------------------------------------------------------------- */

struct seen {
    uint8_t *mark; /* owned: one per key id */
    int n, other;
};

static void seen_fn(void *ctx, const void *key, size_t klen)
{
    struct seen *sn = ctx;
    char buf[64];
    int id;
    if (klen >= sizeof(buf))
        return;
    memcpy(buf, key, klen);
    buf[klen] = 0;
    if (sscanf(buf, "scan-%d", &id) == 1 && id >= 0 && id < sn->n)
        sn->mark[id] = 1;
    else
        sn->other++;
}

static void test_shm_scan_while_growing(void)
{
    struct kv_config c;
    cfg_make(&c, "scan", 16u << 20);
    struct kv_shm_store *s = open_ok(&c);
    enum { BASE = 3000, MORE = 40000 };
    struct seen sn = {kv_mem_calloc(KV_MOD_TEST, BASE), BASE, 0};
    char k[32];
    for (int i = 0; i < BASE; i++) {
        snprintf(k, sizeof(k), "scan-%d", i);
        CU_ASSERT_EQUAL(sets(s, k, "v"), 0);
    }
    struct kv_shm_stats a, b;
    kv_shm_stats(s, &a);
    uint64_t cur = 0;
    int steps = 0, added = 0;
    do {
        CU_ASSERT_EQUAL_FATAL(kv_shm_scan(s, cur, NULL, 0, 20, seen_fn, &sn, &cur), 0);
        for (int j = 0; j < 400 && added < MORE; j++, added++) { /* grow the index */
            snprintf(k, sizeof(k), "grow-%d", added);
            CU_ASSERT_EQUAL(sets(s, k, "g"), 0);
        }
        steps++;
    } while (cur != 0 && steps < 100000);
    kv_shm_stats(s, &b);
    CU_ASSERT(b.index_buckets >= 4 * a.index_buckets); /* it really grew during the scan */
    int missing = 0;
    for (int i = 0; i < BASE; i++)
        missing += !sn.mark[i];
    CU_ASSERT_EQUAL(missing, 0);
    /* prefix scan */
    memset(sn.mark, 0, BASE);
    sn.other = 0;
    cur = 0;
    do {
        CU_ASSERT_EQUAL(kv_shm_scan(s, cur, "scan-1", 6, 50, seen_fn, &sn, &cur), 0);
    } while (cur != 0);
    CU_ASSERT_EQUAL(sn.other, 0);
    int ones = 0;
    for (int i = 0; i < BASE; i++) {
        snprintf(k, sizeof(k), "%d", i);
        if (k[0] == '1')
            CU_ASSERT_EQUAL(sn.mark[i], 1);
        ones += sn.mark[i];
    }
    CU_ASSERT_EQUAL(ones, 1 + 10 + 100 + 1000);
    kv_mem_free(KV_MOD_TEST, sn.mark);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

/* ---- threads ------------------------------------------------------------------------- */

struct thr {
    struct kv_shm_store *s;
    int id, iters;
    int torn, errors;
};

/* Values are (len, byte) with all len bytes equal to byte: a torn copy shows. */
static void *thr_main(void *arg)
{
    struct thr *t = arg;
    uint8_t val[3000];
    char k[32];
    for (int i = 0; i < t->iters; i++) {
        int shared = i % 2;
        if (shared)
            snprintf(k, sizeof(k), "shared-%d", i % 4);
        else
            snprintf(k, sizeof(k), "own-%d-%d", t->id, i % 500);
        size_t n = 1 + (size_t)((i * 37 + t->id * 101) % (int)sizeof(val));
        uint8_t b = (uint8_t)(n * 7 + t->id);
        memset(val, b, n);
        if (i % 4 == 0) { /* unique keys: the index splits while the others read */
            char g[40];
            snprintf(g, sizeof(g), "grow-%d-%d", t->id, i);
            if (kv_shm_set(t->s, g, strlen(g), g, strlen(g), NULL, NULL))
                t->errors++;
        }
        int op = i % 5;
        if (op < 2) {
            if (kv_shm_set(t->s, k, strlen(k), val, n, NULL, NULL))
                t->errors++;
        } else if (op < 4) {
            struct vbuf v;
            int rc = getv(t->s, k, &v, NULL);
            if (rc == 0) {
                for (size_t j = 1; j < v.len; j++)
                    if (v.p[j] != v.p[0]) {
                        t->torn++;
                        break;
                    }
                vbuf_free(&v);
            } else if (rc != KV_ENOTFOUND) {
                t->errors++;
            }
        } else if (shared) {
            kv_shm_del(t->s, k, strlen(k));
        } else {
            int64_t r;
            snprintf(k, sizeof(k), "ctr-%d", i % 3);
            if (kv_shm_incr(t->s, k, strlen(k), 1, &r, NULL))
                t->errors++;
        }
    }
    return NULL;
}

static void test_shm_threads(void)
{
    struct kv_config c;
    cfg_make(&c, "threads", 32u << 20);
    struct kv_shm_store *s = open_ok(&c);
    enum { N = 4 };
    pthread_t th[N];
    struct thr t[N];
    for (int i = 0; i < N; i++) {
        t[i] = (struct thr){s, i, 40000, 0, 0};
        pthread_create(&th[i], NULL, thr_main, &t[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CU_ASSERT_EQUAL(t[i].torn, 0);
        CU_ASSERT_EQUAL(t[i].errors, 0);
    }
    /* every incr counted exactly once */
    int64_t total = 0;
    for (int i = 0; i < 3; i++) {
        char k[16];
        snprintf(k, sizeof(k), "ctr-%d", i);
        struct vbuf v;
        CU_ASSERT_EQUAL_FATAL(getv(s, k, &v, NULL), 0);
        char num[32] = {0};
        memcpy(num, v.p, v.len < 31 ? v.len : 31);
        total += strtoll(num, NULL, 10);
        vbuf_free(&v);
    }
    int64_t want = 0;
    for (int i = 0; i < 40000; i++)
        want += (i % 5 == 4 && i % 2 == 0);
    CU_ASSERT_EQUAL(total, want * N);
    int missing = 0;
    for (int id = 0; id < N; id++)
        for (int i = 0; i < 40000; i += 4) {
            char g[40];
            snprintf(g, sizeof(g), "grow-%d-%d", id, i);
            missing += !value_is(s, g, g, strlen(g));
        }
    CU_ASSERT_EQUAL(missing, 0);
    struct kv_shm_stats st;
    kv_shm_stats(s, &st);
    CU_ASSERT(st.index_buckets > 4 * 1024); /* splits ran concurrently with the readers */
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

/* ---- crash safety -------------------------------------------------------------------- */

/* The writer's workload: op seq is a set of a unique key (seq % 4 < 2), an overwrite of
 * one of 300 keys, sometimes with a multi-page value (seq % 4 == 2), or an incr. */
#define CR_OKEYS 300
static size_t cr_vlen(uint64_t seq)
{
    if (seq % 4 == 2 && (seq / 4) % 40 == 0)
        return 70000;
    return 8 + (size_t)((seq * 7919) % 400);
}

static void cr_key(uint64_t seq, char *k, size_t cap)
{
    if (seq % 4 < 2)
        snprintf(k, cap, "u-%" PRIu64, seq);
    else if (seq % 4 == 2)
        snprintf(k, cap, "o-%" PRIu64, (seq / 4) % CR_OKEYS);
    else
        snprintf(k, cap, "ctr");
}

/* Runs ops from seq = start on, publishing the last completed seq in *done. */
static void cr_child(const struct kv_config *c, const struct kv_shm_open_opts *o,
                     volatile uint64_t *done, uint64_t start, uint64_t stop)
{
    struct kv_shm_store *s = NULL;
    char err[256];
    if (kv_shm_store_open_ex(c, o, err, sizeof(err), &s))
        _exit(2);
    static uint8_t val[70000];
    for (uint64_t seq = start; seq < stop; seq++) {
        char k[32];
        cr_key(seq, k, sizeof(k));
        int rc;
        if (seq % 4 == 3) {
            rc = kv_shm_incr(s, k, strlen(k), 1, NULL, NULL);
        } else {
            size_t n = cr_vlen(seq);
            fill_value(val, n, seq);
            rc = kv_shm_set(s, k, strlen(k), val, n, NULL, NULL);
        }
        if (rc)
            _exit(3);
        __atomic_store_n(done, seq, __ATOMIC_RELEASE);
    }
    _exit(0); /* no close: the segment stays unclean, as after a crash */
}

struct cr_model {
    uint8_t *unique;  /* owned: per seq, 1 = must exist, 2 = may exist (was in flight) */
    int64_t *okey;    /* owned: seq of the value each o-key must hold, -1 none */
    int64_t ctr;      /* value of ctr */
    uint64_t cap;
};

/* Checks the reopened store against the model and what the child reported; updates the
 * model with the fate of the op that was in flight. Returns problems found. */
static int cr_verify(struct kv_shm_store *s, struct cr_model *m, uint64_t start, uint64_t done,
                     int any_done, int full)
{
    int bad = 0;
    static uint8_t want[70000];
    char k[32];
    uint64_t last = any_done ? done : start - 1; /* last completed */
    uint64_t fly = last + 1;                     /* possibly applied */
    /* ops of this round into the model */
    int64_t ctr_done = m->ctr;
    for (uint64_t q = start; any_done && q <= done; q++) {
        if (q % 4 < 2)
            m->unique[q] = 1;
        else if (q % 4 == 2)
            m->okey[(q / 4) % CR_OKEYS] = (int64_t)q;
        else
            ctr_done++;
    }
    /* unique keys: every completed one byte-exact (all, or this round + a sample) */
    for (uint64_t q = 0; q <= fly && q < m->cap; q++) {
        if (q % 4 >= 2 || (!full && q < start && q % 7))
            continue;
        cr_key(q, k, sizeof(k));
        struct vbuf v;
        int rc = getv(s, k, &v, NULL);
        if (rc == 0) {
            size_t n = cr_vlen(q);
            fill_value(want, n, q);
            if (v.len != n || memcmp(v.p, want, n) || (m->unique[q] == 0 && q != fly))
                bad++;
            vbuf_free(&v);
            if (q == fly)
                m->unique[q] = 1;
        } else if (m->unique[q] == 1 || rc != KV_ENOTFOUND) {
            bad++;
        }
    }
    /* overwritten keys: the last completed value, or the in-flight one */
    for (int j = 0; j < CR_OKEYS; j++) {
        snprintf(k, sizeof(k), "o-%d", j);
        struct vbuf v;
        int rc = getv(s, k, &v, NULL);
        int64_t allowed = m->okey[j];
        int fly_here = fly % 4 == 2 && (int)((fly / 4) % CR_OKEYS) == j;
        if (rc) {
            bad += allowed >= 0 || rc != KV_ENOTFOUND;
            continue;
        }
        uint64_t q = 0;
        if (v.len >= 8)
            memcpy(&q, v.p, 8);
        size_t n = cr_vlen(q);
        fill_value(want, n, q);
        if (!((int64_t)q == allowed || (fly_here && q == fly)) || v.len != n ||
            memcmp(v.p, want, n))
            bad++;
        else
            m->okey[j] = (int64_t)q;
        vbuf_free(&v);
    }
    /* the counter: completed incrs, or one more */
    struct vbuf v;
    int64_t got = 0;
    if (getv(s, "ctr", &v, NULL) == 0) {
        char num[32] = {0};
        memcpy(num, v.p, v.len < 31 ? v.len : 31);
        got = strtoll(num, NULL, 10);
        vbuf_free(&v);
    }
    if (!(got == ctr_done || (fly % 4 == 3 && got == ctr_done + 1)))
        bad++;
    m->ctr = got;
    /* the index agrees with itself */
    struct kv_shm_stats st;
    kv_shm_stats(s, &st);
    if (st.dropped_items != 0 || st.corrupt != 0)
        bad++;
    return bad;
}

static void cr_model_init(struct cr_model *m, uint64_t cap)
{
    m->cap = cap;
    m->unique = kv_mem_calloc(KV_MOD_TEST, cap);
    m->okey = kv_mem_alloc(KV_MOD_TEST, CR_OKEYS * sizeof(int64_t));
    for (int j = 0; j < CR_OKEYS; j++)
        m->okey[j] = -1;
    m->ctr = 0;
}

static void cr_model_fini(struct cr_model *m)
{
    kv_mem_free(KV_MOD_TEST, m->unique);
    kv_mem_free(KV_MOD_TEST, m->okey);
}

/* Runs one child round; kill_ms > 0: SIGKILL after that long, else it dies by crash_at. */
static int cr_round(const struct kv_config *c, const struct kv_shm_open_opts *o,
                    volatile uint64_t *done, uint64_t start, uint64_t stop, int kill_ms,
                    uint64_t *last, int *any)
{
    *done = UINT64_MAX;
    pid_t pid = fork();
    if (pid == 0)
        cr_child(c, o, done, start, stop);
    if (kill_ms > 0) {
        sleep_ms(kill_ms);
        kill(pid, SIGKILL);
    }
    int st;
    waitpid(pid, &st, 0);
    uint64_t d = __atomic_load_n(done, __ATOMIC_ACQUIRE);
    *any = d != UINT64_MAX;
    *last = d;
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)
        return 0;
    if (WIFEXITED(st) && (WEXITSTATUS(st) == 77 || WEXITSTATUS(st) == 0))
        return 0;
    fprintf(stderr, "writer child ended with status %x\n", st);
    return -1;
}

static void test_shm_crash_kill_loop(void)
{
    struct kv_config c;
    cfg_make(&c, "kill", 64u << 20);
    volatile uint64_t *done = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CU_ASSERT_FATAL(done != MAP_FAILED);
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    struct cr_model m;
    cr_model_init(&m, 400000);
    uint64_t start = 0;
    int rounds = 30, problems = 0, recovered = 0;
    for (int r = 0; r < rounds && start + 20000 < m.cap; r++) {
        struct kv_shm_open_opts o = {0};
        int kill_ms = 0;
        if (r % 3 == 2) { /* deterministic: die inside a chosen window */
            static const int sites[] = {KV_SHM_CRASH_SPLIT, KV_SHM_CRASH_FREE,
                                        KV_SHM_CRASH_PUBLISH};
            o.crash_site = sites[(r / 3) % 3];
            o.crash_at = 1 + rand() % 3000;
        } else {
            kill_ms = 5 + rand() % 40;
        }
        uint64_t last;
        int any;
        CU_ASSERT_EQUAL_FATAL(cr_round(&c, &o, done, start, m.cap, kill_ms, &last, &any), 0);
        struct kv_shm_store *s = open_ok(&c);
        struct kv_shm_stats st;
        kv_shm_stats(s, &st);
        recovered += st.recovered;
        int bad = cr_verify(s, &m, start, last, any, r == rounds - 1);
        if (bad)
            fprintf(stderr, "kill loop round %d (seed %u, site %d at %d, kill %d ms): %d "
                    "problems\n", r, seed, o.crash_site, o.crash_at, kill_ms, bad);
        problems += bad;
        kv_shm_store_close(s);
        start = (any ? last : start - 1) + 2; /* skip the in-flight op: the model knows it */
    }
    CU_ASSERT_EQUAL(problems, 0);
    /* a child killed before it opened the segment leaves it clean: no recovery then */
    CU_ASSERT(recovered >= rounds / 2);
    printf("(%d rounds, %d recoveries, %" PRIu64 " ops) ", rounds, recovered, start);
    cr_model_fini(&m);
    munmap((void *)done, 4096);
    kv_shm_store_unlink(&c);
}

/* A kill in the middle of a split, then in the middle of the recovery that repairs it. */
static void test_shm_crash_split_then_recovery(void)
{
    struct kv_config c;
    cfg_make(&c, "splitrec", 32u << 20);
    volatile uint64_t *done = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    struct cr_model m;
    cr_model_init(&m, 200000);
    uint64_t last, start = 0;
    int any, problems = 0;
    for (int r = 0; r < 6; r++) {
        struct kv_shm_open_opts o = {.crash_at = 20 + r * 150, .crash_site = KV_SHM_CRASH_SPLIT};
        CU_ASSERT_EQUAL_FATAL(cr_round(&c, &o, done, start, m.cap, 0, &last, &any), 0);
        /* the recovering opener dies while moving a misplaced item, or after claiming */
        pid_t pid = fork();
        if (pid == 0) {
            struct kv_shm_open_opts o2 = {
                .crash_at = 1,
                .crash_site = r % 2 ? KV_SHM_CRASH_RECOVER : KV_SHM_CRASH_RECOVER_MOVE};
            struct kv_shm_store *s2;
            _exit(kv_shm_store_open_ex(&c, &o2, NULL, 0, &s2) ? 1 : 0);
        }
        int st;
        waitpid(pid, &st, 0);
        CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 77);
        struct kv_shm_store *s = open_ok(&c);
        struct kv_shm_stats ss;
        kv_shm_stats(s, &ss);
        CU_ASSERT_EQUAL(ss.recovered, 1);
        problems += cr_verify(s, &m, start, last, any, 1);
        CU_ASSERT_EQUAL(ss.keys, ss.recovered_items);
        kv_shm_store_close(s);
        start = (any ? last : start - 1) + 2;
    }
    CU_ASSERT_EQUAL(problems, 0);
    cr_model_fini(&m);
    munmap((void *)done, 4096);
    kv_shm_store_unlink(&c);
}

/* Random byte flips in the pages in use: found by checksums at run time and at recovery,
 * never a crash, never wrong bytes, and every undamaged item stays readable. */
static void test_shm_byte_flips(void)
{
    struct kv_config c;
    cfg_make(&c, "flips", 16u << 20);
    struct kv_shm_store *s = open_ok(&c);
    enum { N = 6000, FLIPS = 60 };
    static uint8_t val[2000];
    char k[32];
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof(k), "flip-%d", i);
        size_t n = 20 + (size_t)(i * 13) % 600;
        if (i % 500 == 0)
            n = 1900;
        fill_value(val, n, (uint64_t)i);
        CU_ASSERT_EQUAL_FATAL(kv_shm_set(s, k, strlen(k), val, n, NULL, NULL), 0);
    }
    srand(12345);
    for (int round = 0; round < 2; round++) {
        /* flip bytes in pages holding something (items, buckets, lines) */
        for (int f = 0; f < FLIPS; f++) {
            uint64_t pi;
            do
                pi = (uint64_t)rand() % s->n_pages;
            while (PM_TYPE(s->pmap[pi]) == PM_FREE);
            uint64_t off = shm_page_base(s, pi) + (uint64_t)rand() % SHM_PAGE;
            s->base[off] ^= (uint8_t)(1 + rand() % 255);
        }
        int ok = 0, lost = 0, wrong = 0, corrupt = 0;
        for (int i = 0; i < N; i++) {
            snprintf(k, sizeof(k), "flip-%d", i);
            size_t n = 20 + (size_t)(i * 13) % 600;
            if (i % 500 == 0)
                n = 1900;
            fill_value(val, n, (uint64_t)i);
            struct vbuf v;
            int rc = getv(s, k, &v, NULL);
            if (rc == 0) {
                if (v.len == n && memcmp(v.p, val, n) == 0)
                    ok++;
                else
                    wrong++;
                vbuf_free(&v);
            } else if (rc == KV_ECORRUPT) {
                corrupt++;
            } else {
                lost++;
            }
        }
        CU_ASSERT_EQUAL(wrong, 0);
        /* a flip damages one item, or one slot word, or one chain link */
        CU_ASSERT(lost + corrupt <= FLIPS * 8);
        CU_ASSERT(ok >= N - FLIPS * 8);
        if (round == 0) {
            /* now as after a crash: recovery must find the damage by itself */
            kv_shm_store_close(s);
            mark_unclean(&c);
            s = open_ok(&c);
            struct kv_shm_stats st;
            kv_shm_stats(s, &st);
            CU_ASSERT_EQUAL(st.recovered, 1);
            CU_ASSERT_EQUAL(st.keys, st.recovered_items);
            int after = 0;
            for (int i = 0; i < N; i++) {
                snprintf(k, sizeof(k), "flip-%d", i);
                size_t n = 20 + (size_t)(i * 13) % 600;
                if (i % 500 == 0)
                    n = 1900;
                fill_value(val, n, (uint64_t)i);
                struct vbuf v;
                int rc = getv(s, k, &v, NULL);
                CU_ASSERT(rc == 0 || rc == KV_ENOTFOUND); /* recovery dropped the damaged */
                if (rc == 0) {
                    CU_ASSERT(v.len == n && memcmp(v.p, val, n) == 0);
                    vbuf_free(&v);
                    after++;
                }
            }
            CU_ASSERT(after >= ok);
            CU_ASSERT_EQUAL((uint64_t)after, st.recovered_items);
        }
    }
    /* the repaired allocator hands out only free space: new writes do not hurt survivors */
    kv_shm_store_close(s);
    mark_unclean(&c);
    s = open_ok(&c);
    int survivors = 0;
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof(k), "flip-%d", i);
        survivors += kv_shm_exists(s, k, strlen(k)) == 0;
    }
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof(k), "new-%d", i);
        fill_value(val, 300, (uint64_t)i + 77);
        CU_ASSERT_EQUAL(kv_shm_set(s, k, strlen(k), val, 300, NULL, NULL), 0);
    }
    int still = 0;
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof(k), "flip-%d", i);
        size_t n = 20 + (size_t)(i * 13) % 600;
        if (i % 500 == 0)
            n = 1900;
        fill_value(val, n, (uint64_t)i);
        still += value_is(s, k, val, n);
        snprintf(k, sizeof(k), "new-%d", i);
        fill_value(val, 300, (uint64_t)i + 77);
        CU_ASSERT(value_is(s, k, val, 300));
    }
    CU_ASSERT_EQUAL(still, survivors);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

/* Overwrites reuse the replaced chunk through the thread's spare (no class
 * mutex); the spares go back to the free lists at close: after 20 rounds of
 * overwrites in three size classes, a clean reopen shows the same chunks
 * in use as after the first round, and every value is the last one. */
static void test_shm_overwrite_spares_returned_at_close(void)
{
    struct kv_config c;
    struct kv_shm_store *s;
    struct kv_shm_stats st0, st1;
    struct vbuf v = {0};
    char key[16], val[600];

    cfg_make(&c, "spare", 8u << 20);
    s = open_ok(&c);
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 300; i++) {
            size_t vlen = (size_t)(i % 3) * 250 + 10; /* 10, 260, 510 bytes */

            snprintf(key, sizeof(key), "sp:%d", i);
            memset(val, 'a' + round, vlen);
            CU_ASSERT_EQUAL(kv_shm_set(s, key, strlen(key), val, vlen, NULL, NULL), 0);
        }
        if (round == 0)
            CU_ASSERT_EQUAL(kv_shm_stats(s, &st0), 0);
    }
    kv_shm_store_close(s);
    s = open_ok(&c);
    CU_ASSERT_EQUAL(kv_shm_stats(s, &st1), 0);
    CU_ASSERT_EQUAL(st1.recovered, 0);
    CU_ASSERT_EQUAL(st1.keys, 300);
    for (unsigned k = 0; k < st1.nclasses; k++)
        CU_ASSERT_EQUAL(st1.cls[k].chunks_used, st0.cls[k].chunks_used);
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "sp:%d", i);
        CU_ASSERT_EQUAL_FATAL(getv(s, key, &v, NULL), 0);
        CU_ASSERT(v.len == (size_t)(i % 3) * 250 + 10 && v.p[0] == 'a' + 19 &&
                  v.p[v.len - 1] == 'a' + 19);
        vbuf_free(&v);
    }
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

/* kv_shm_prefetch is a hint: any key, present or not, of any length, at
 * any stage, changes nothing and never faults. */
static void test_shm_prefetch_is_only_a_hint(void)
{
    struct kv_config c;
    struct kv_shm_store *s;
    struct vbuf v = {0};
    char big[5000];

    cfg_make(&c, "prefetch", 4u << 20);
    s = open_ok(&c);
    CU_ASSERT_EQUAL(kv_shm_set(s, "here", 4, "value", 5, NULL, NULL), 0);
    memset(big, 'k', sizeof(big));
    for (int stage = 0; stage < 2; stage++) {
        kv_shm_prefetch(s, kv_shm_key_hash(s, "here", 4), stage);
        kv_shm_prefetch(s, kv_shm_key_hash(s, "absent", 6), stage);
        kv_shm_prefetch(s, kv_shm_key_hash(s, "", 0), stage);
        kv_shm_prefetch(s, ~0ull, stage);
        kv_shm_prefetch(s, kv_shm_key_hash(s, big, sizeof(big)), stage);
    }
    CU_ASSERT_EQUAL(getv(s, "here", &v, NULL), 0);
    CU_ASSERT(v.len == 5 && memcmp(v.p, "value", 5) == 0);
    vbuf_free(&v);
    CU_ASSERT_EQUAL(getv(s, "absent", &v, NULL), KV_ENOTFOUND);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

/* ---- runner -------------------------------------------------------------------------- */

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite su = CU_add_suite("shm", NULL, NULL);
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"test_shm_set_get_del", test_shm_set_get_del},
        {"test_shm_overwrite_spares_returned_at_close", test_shm_overwrite_spares_returned_at_close},
        {"test_shm_prefetch_is_only_a_hint", test_shm_prefetch_is_only_a_hint},
        {"test_shm_set_conditions", test_shm_set_conditions},
        {"test_shm_incr", test_shm_incr},
        {"test_shm_expiry_lazy", test_shm_expiry_lazy},
        {"test_shm_expiry_sweep", test_shm_expiry_sweep},
        {"test_shm_flush_stats", test_shm_flush_stats},
        {"test_shm_two_mappings", test_shm_two_mappings},
        {"test_shm_lock_second_opener", test_shm_lock_second_opener},
        {"test_shm_bad_header", test_shm_bad_header},
        {"test_shm_file_backed", test_shm_file_backed},
        {"test_shm_full_no_eviction", test_shm_full_no_eviction},
        {"test_shm_full_lru_eviction", test_shm_full_lru_eviction},
        {"test_shm_scan_while_growing", test_shm_scan_while_growing},
        {"test_shm_threads", test_shm_threads},
        {"test_shm_crash_kill_loop", test_shm_crash_kill_loop},
        {"test_shm_crash_split_then_recovery", test_shm_crash_split_then_recovery},
        {"test_shm_byte_flips", test_shm_byte_flips},
    };
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
        if (!CU_add_test(su, tests[i].name, tests[i].fn))
            return 1;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned fails = CU_get_number_of_failures();
    CU_cleanup_registry();
    struct kv_mem_snapshot snap;
    kv_mem_snapshot(&snap);
    if (kv_mem_held_total(&snap) != 0) {
        fprintf(stderr, "test_shm: heap bytes still held at exit\n");
        return 1;
    }
    return fails ? 1 : 0;
}
