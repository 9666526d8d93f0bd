/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_shm_db.c -- the store's databases and its multi-key keyspace writes
 * (issue 16): a key belongs to one database and the same name lives independently in
 * several; per-database counts are exact and survive recovery; SWAPDB is one atomic flip;
 * RENAME / RENAMENX / MOVE / COPY are all or nothing to other clients and across kill -9
 * (children killed at the crash point between the two publishes, or at random instants);
 * a layout-2 segment is upgraded in place, its keys in database 0. */
#include <CUnit/Basic.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv_mem.h"
#include "kv_shm.h"
#include "shm_int.h"

static void cfg_make(struct kv_config *c, const char *tag, size_t mem)
{
    kv_config_defaults(c);
    snprintf(c->shm_name, sizeof(c->shm_name), "/kvshm-db-%d-%s", (int)getpid(), tag);
    c->memory = mem;
    kv_shm_store_unlink(c);
}

static struct kv_shm_store *open_with(const struct kv_config *c, const struct kv_shm_open_opts *o,
                                      char *err, size_t cap)
{
    struct kv_shm_store *s = NULL;
    char local[512];
    if (!err) {
        err = local;
        cap = sizeof(local);
    }
    int rc = kv_shm_store_open_ex(c, o, err, cap, &s);
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

/* The value of key in db as a C string (owned by the caller, KV_MOD_TEST), NULL if absent. */
static char *get_str(struct kv_shm_store *s, unsigned db, const char *k)
{
    struct vbuf v = {0};
    if (kv_shm_db_get(s, db, k, strlen(k), vbuf_alloc, &v, NULL, NULL) != 0) {
        kv_mem_free(KV_MOD_TEST, v.p);
        return NULL;
    }
    char *out = kv_mem_alloc(KV_MOD_TEST, v.len + 1);
    memcpy(out, v.p, v.len);
    out[v.len] = 0;
    kv_mem_free(KV_MOD_TEST, v.p);
    return out;
}

static int value_is(struct kv_shm_store *s, unsigned db, const char *k, const char *want)
{
    char *v = get_str(s, db, k);
    int ok = want ? v && strcmp(v, want) == 0 : v == NULL;
    if (!ok)
        fprintf(stderr, "\n  db %u key %s: want %s got %s\n", db, k, want ? want : "(none)",
                v ? v : "(none)");
    kv_mem_free(KV_MOD_TEST, v);
    return ok;
}

static int set_str(struct kv_shm_store *s, unsigned db, const char *k, const char *v)
{
    return kv_shm_db_set(s, db, k, strlen(k), v, strlen(v), NULL, NULL);
}

static uint64_t dbsize(struct kv_shm_store *s, unsigned db)
{
    uint64_t n = ~0ull;
    CU_ASSERT_EQUAL(kv_shm_db_size(s, db, &n), 0);
    return n;
}

static void count_key(void *ctx, const void *key, size_t klen)
{
    (void)key;
    (void)klen;
    ++*(size_t *)ctx;
}

static size_t scan_count(struct kv_shm_store *s, unsigned db)
{
    size_t n = 0;
    uint64_t cur = 0;
    do {
        CU_ASSERT_EQUAL_FATAL(kv_shm_db_scan(s, db, cur, NULL, 0, 100, count_key, &n, &cur), 0);
    } while (cur);
    return n;
}

/* The same name in three databases: three independent keys, each read, written, expired,
 * counted, scanned and flushed on its own. */
static void test_shm_db_keys_are_per_database(void)
{
    struct kv_config c;
    cfg_make(&c, "iso", 8u << 20);
    struct kv_shm_store *s = open_with(&c, NULL, NULL, 0);
    CU_ASSERT_EQUAL(set_str(s, 0, "k", "zero"), 0);
    CU_ASSERT_EQUAL(set_str(s, 1, "k", "one"), 0);
    CU_ASSERT_EQUAL(set_str(s, 255, "k", "last"), 0);
    for (int i = 0; i < 300; i++) {
        char k[16];
        snprintf(k, sizeof(k), "m%d", i);
        CU_ASSERT_EQUAL(set_str(s, 1 + (unsigned)i % 2, k, "x"), 0);
    }
    CU_ASSERT(value_is(s, 0, "k", "zero"));
    CU_ASSERT(value_is(s, 1, "k", "one"));
    CU_ASSERT(value_is(s, 255, "k", "last"));
    CU_ASSERT(value_is(s, 7, "k", NULL));
    CU_ASSERT(value_is(s, 0, "m1", NULL));
    CU_ASSERT_EQUAL(kv_shm_exists(s, "k", 1), 0); /* the db-0 wrapper */
    CU_ASSERT_EQUAL(dbsize(s, 0), 1);
    CU_ASSERT_EQUAL(dbsize(s, 1), 151);
    CU_ASSERT_EQUAL(dbsize(s, 2), 150);
    CU_ASSERT_EQUAL(dbsize(s, 255), 1);
    CU_ASSERT_EQUAL(dbsize(s, 3), 0);
    CU_ASSERT_EQUAL(scan_count(s, 1), 151);
    CU_ASSERT_EQUAL(scan_count(s, 0), 1);
    CU_ASSERT_EQUAL(kv_shm_db_exists(s, 2, "k", 1), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(kv_shm_db_expire(s, 1, "k", 1, 100000), 0);
    int64_t ttl = 0;
    CU_ASSERT_EQUAL(kv_shm_db_ttl(s, 0, "k", 1, &ttl), 0);
    CU_ASSERT_EQUAL(ttl, -1);
    CU_ASSERT_EQUAL(kv_shm_db_ttl(s, 1, "k", 1, &ttl), 0);
    CU_ASSERT(ttl > 99000);
    int64_t n = 0;
    CU_ASSERT_EQUAL(kv_shm_db_incr(s, 3, "k", 1, 5, &n, NULL), 0);
    CU_ASSERT_EQUAL(n, 5);
    CU_ASSERT(value_is(s, 0, "k", "zero"));
    CU_ASSERT_EQUAL(kv_shm_db_del(s, 255, "k", 1), 0);
    CU_ASSERT_EQUAL(kv_shm_db_del(s, 255, "k", 1), KV_ENOTFOUND);
    CU_ASSERT(value_is(s, 1, "k", "one"));
    struct kv_shm_pair p[2] = {{"a", 1, "1", 1}, {"k", 1, "mk", 2}};
    CU_ASSERT_EQUAL(kv_shm_db_mset(s, 4, p, 2, NULL, NULL), 0);
    CU_ASSERT(value_is(s, 4, "k", "mk"));
    CU_ASSERT(value_is(s, 0, "k", "zero"));
    CU_ASSERT_EQUAL(dbsize(s, 4), 2);
    /* FLUSHDB of one database leaves the others */
    CU_ASSERT_EQUAL(kv_shm_db_flush(s, 1), 0);
    CU_ASSERT_EQUAL(dbsize(s, 1), 0);
    CU_ASSERT_EQUAL(scan_count(s, 1), 0);
    CU_ASSERT_EQUAL(dbsize(s, 2), 150);
    CU_ASSERT(value_is(s, 0, "k", "zero"));
    /* bad database numbers */
    CU_ASSERT_EQUAL(set_str(s, KV_SHM_MAX_DB, "k", "v"), KV_EINVAL);
    CU_ASSERT_EQUAL(kv_shm_db_size(s, KV_SHM_MAX_DB, &(uint64_t){0}), KV_EINVAL);
    CU_ASSERT_EQUAL(kv_shm_swapdb(s, 0, KV_SHM_MAX_DB), KV_EINVAL);
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "k", 1, KV_SHM_MAX_DB, "k", 1, 0, NULL), KV_EINVAL);
    /* FLUSHALL */
    CU_ASSERT_EQUAL(kv_shm_flush(s), 0);
    for (unsigned d = 0; d < 8; d++)
        CU_ASSERT_EQUAL(dbsize(s, d), 0);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

/* Counts and databases survive a clean reopen and a crash (recovery recounts). */
static void test_shm_db_counts_survive_recovery(void)
{
    struct kv_config c;
    cfg_make(&c, "rec", 8u << 20);
    for (int crash = 0; crash < 2; crash++) {
        pid_t pid = fork();
        if (pid == 0) {
            struct kv_shm_store *s;
            if (kv_shm_store_open_ex(&c, NULL, NULL, 0, &s))
                _exit(3);
            for (int i = 0; i < 500; i++) {
                char k[16];
                snprintf(k, sizeof(k), "r%d", i);
                if (set_str(s, (unsigned)i % 5, k, k))
                    _exit(4);
            }
            if (kv_shm_swapdb(s, 1, 4))
                _exit(5);
            if (!crash)
                kv_shm_store_close(s);
            _exit(0); /* crash: without the clean mark */
        }
        int st;
        waitpid(pid, &st, 0);
        CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        struct kv_shm_store *s = open_with(&c, NULL, NULL, 0);
        struct kv_shm_stats stats;
        kv_shm_stats(s, &stats);
        CU_ASSERT_EQUAL(stats.recovered, crash);
        for (unsigned d = 0; d < 5; d++)
            CU_ASSERT_EQUAL(dbsize(s, d), 100);
        CU_ASSERT(value_is(s, 4, "r1", "r1")); /* written to 1, swapped to 4 */
        CU_ASSERT(value_is(s, 1, "r4", "r4"));
        CU_ASSERT(value_is(s, 1, "r1", NULL));
        CU_ASSERT(value_is(s, 2, "r2", "r2"));
        CU_ASSERT_EQUAL(scan_count(s, 4), 100);
        CU_ASSERT_EQUAL(kv_shm_swapdb(s, 1, 4), 0); /* back, for the next round */
        kv_shm_flush(s);
        kv_shm_store_close(s);
    }
    kv_shm_store_unlink(&c);
}

/* SWAPDB: contents and counts trade places; a swap with itself is nothing; writes after
 * the swap go to the database as now numbered. */
static void test_shm_db_swapdb(void)
{
    struct kv_config c;
    cfg_make(&c, "swap", 8u << 20);
    struct kv_shm_store *s = open_with(&c, NULL, NULL, 0);
    CU_ASSERT_EQUAL(set_str(s, 0, "a", "in0"), 0);
    CU_ASSERT_EQUAL(set_str(s, 2, "a", "in2"), 0);
    CU_ASSERT_EQUAL(set_str(s, 2, "b", "in2"), 0);
    CU_ASSERT_EQUAL(kv_shm_swapdb(s, 0, 2), 0);
    CU_ASSERT(value_is(s, 0, "a", "in2"));
    CU_ASSERT(value_is(s, 0, "b", "in2"));
    CU_ASSERT(value_is(s, 2, "a", "in0"));
    CU_ASSERT(value_is(s, 2, "b", NULL));
    CU_ASSERT_EQUAL(dbsize(s, 0), 2);
    CU_ASSERT_EQUAL(dbsize(s, 2), 1);
    CU_ASSERT_EQUAL(kv_shm_swapdb(s, 2, 2), 0);
    CU_ASSERT_EQUAL(set_str(s, 0, "c", "new0"), 0);
    CU_ASSERT_EQUAL(kv_shm_swapdb(s, 2, 3), 0); /* three-way: 0 <- 2, 2 <- 3, 3 <- 0's old */
    CU_ASSERT(value_is(s, 3, "a", "in0"));
    CU_ASSERT(value_is(s, 2, "a", NULL));
    CU_ASSERT_EQUAL(kv_shm_swapdb(s, 0, 3), 0);
    CU_ASSERT(value_is(s, 0, "a", "in0"));
    CU_ASSERT(value_is(s, 3, "c", "new0"));
    CU_ASSERT_EQUAL(dbsize(s, 3), 3);
    CU_ASSERT_EQUAL(dbsize(s, 0), 1);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

/* Redis's RENAME / RENAMENX / MOVE / COPY outcomes, values and expiry, a large value. */
static void test_shm_db_rename_semantics(void)
{
    struct kv_config c;
    cfg_make(&c, "ren", 16u << 20);
    struct kv_shm_store *s = open_with(&c, NULL, NULL, 0);
    struct kv_shm_set_opts ttl = {.ttl_ms = 100000};
    CU_ASSERT_EQUAL(kv_shm_db_set(s, 0, "src", 3, "v1", 2, &ttl, NULL), 0);
    CU_ASSERT_EQUAL(set_str(s, 0, "dst", "old"), 0);
    uint64_t ver = 0;
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "src", 3, 0, "dst", 3, 0, &ver), 0);
    CU_ASSERT(ver != 0);
    CU_ASSERT(value_is(s, 0, "dst", "v1"));
    CU_ASSERT(value_is(s, 0, "src", NULL));
    int64_t t = 0;
    CU_ASSERT_EQUAL(kv_shm_db_ttl(s, 0, "dst", 3, &t), 0);
    CU_ASSERT(t > 99000); /* the source's expiry, not the destination's */
    CU_ASSERT_EQUAL(dbsize(s, 0), 1);
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "src", 3, 0, "x", 1, 0, NULL), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "dst", 3, 0, "dst", 3, 0, NULL), 0); /* itself */
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "dst", 3, 0, "dst", 3, KV_SHM_MV_NX, NULL), KV_EEXISTS);
    CU_ASSERT(value_is(s, 0, "dst", "v1"));
    /* RENAMENX */
    CU_ASSERT_EQUAL(set_str(s, 0, "other", "o"), 0);
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "dst", 3, 0, "other", 5, KV_SHM_MV_NX, NULL), KV_EEXISTS);
    CU_ASSERT(value_is(s, 0, "other", "o"));
    CU_ASSERT(value_is(s, 0, "dst", "v1"));
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "dst", 3, 0, "fresh", 5, KV_SHM_MV_NX, NULL), 0);
    CU_ASSERT(value_is(s, 0, "fresh", "v1"));
    /* MOVE: same name, another database, refused when there */
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "fresh", 5, 3, "fresh", 5, KV_SHM_MV_NX, NULL), 0);
    CU_ASSERT(value_is(s, 3, "fresh", "v1"));
    CU_ASSERT(value_is(s, 0, "fresh", NULL));
    CU_ASSERT_EQUAL(kv_shm_db_ttl(s, 3, "fresh", 5, &t), 0);
    CU_ASSERT(t > 99000);
    CU_ASSERT_EQUAL(set_str(s, 0, "fresh", "again"), 0);
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "fresh", 5, 3, "fresh", 5, KV_SHM_MV_NX, NULL), KV_EEXISTS);
    CU_ASSERT(value_is(s, 0, "fresh", "again"));
    CU_ASSERT_EQUAL(dbsize(s, 3), 1);
    /* COPY, COPY ... REPLACE, COPY ... DB; the copy is independent */
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "other", 5, 0, "fresh", 5, KV_SHM_MV_COPY | KV_SHM_MV_NX,
                                  NULL), KV_EEXISTS);
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "other", 5, 0, "fresh", 5, KV_SHM_MV_COPY, NULL), 0);
    CU_ASSERT(value_is(s, 0, "fresh", "o"));
    CU_ASSERT(value_is(s, 0, "other", "o"));
    CU_ASSERT_EQUAL(kv_shm_db_ttl(s, 0, "fresh", 5, &t), 0);
    CU_ASSERT_EQUAL(t, -1);
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "other", 5, 9, "c9", 2, KV_SHM_MV_COPY, NULL), 0);
    CU_ASSERT_EQUAL(set_str(s, 9, "c9", "changed"), 0);
    CU_ASSERT(value_is(s, 0, "other", "o"));
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "other", 5, 0, "other", 5, KV_SHM_MV_COPY, NULL),
                    KV_EEXISTS);
    /* a large value (pages of its own) renamed and copied whole */
    size_t big = 300000;
    uint8_t *val = kv_mem_alloc(KV_MOD_TEST, big);
    for (size_t i = 0; i < big; i++)
        val[i] = (uint8_t)(i * 31 + 7);
    CU_ASSERT_EQUAL(kv_shm_db_set(s, 0, "big", 3, val, big, NULL, NULL), 0);
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "big", 3, 1, "big2", 4, 0, NULL), 0);
    CU_ASSERT_EQUAL(kv_shm_rename(s, 1, "big2", 4, 1, "big3", 4, KV_SHM_MV_COPY, NULL), 0);
    for (int k = 0; k < 2; k++) {
        struct vbuf v = {0};
        CU_ASSERT_EQUAL(kv_shm_db_get(s, 1, k ? "big3" : "big2", 4, vbuf_alloc, &v, NULL, NULL), 0);
        CU_ASSERT(v.len == big && memcmp(v.p, val, big) == 0);
        kv_mem_free(KV_MOD_TEST, v.p);
    }
    CU_ASSERT_EQUAL(kv_shm_db_exists(s, 0, "big", 3), KV_ENOTFOUND);
    kv_mem_free(KV_MOD_TEST, val);
    /* an expired source is absent */
    struct kv_shm_set_opts short_ttl = {.ttl_ms = 1};
    CU_ASSERT_EQUAL(kv_shm_db_set(s, 0, "gone", 4, "g", 1, &short_ttl, NULL), 0);
    usleep(5000);
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "gone", 4, 0, "g2", 2, 0, NULL), KV_ENOTFOUND);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

/* A rename into a full store changes nothing and says KV_ENOMEM; once there is room it
 * succeeds. */
static void test_shm_db_rename_when_full(void)
{
    struct kv_config c;
    cfg_make(&c, "full", 4u << 20);
    struct kv_shm_store *s = open_with(&c, NULL, NULL, 0);
    static uint8_t v[20000];
    int n = 0;
    char k[32];
    for (;; n++) {
        snprintf(k, sizeof(k), "f%d", n);
        if (kv_shm_db_set(s, 0, k, strlen(k), v, sizeof(v), NULL, NULL))
            break;
    }
    CU_ASSERT(n > 50);
    uint64_t before = dbsize(s, 0);
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "f0", 2, 0, "copy", 4, KV_SHM_MV_COPY, NULL), KV_ENOMEM);
    CU_ASSERT_EQUAL(dbsize(s, 0), before);
    CU_ASSERT_EQUAL(kv_shm_db_exists(s, 0, "copy", 4), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(kv_shm_db_exists(s, 0, "f0", 2), 0);
    for (int i = 1; i <= 8; i++) { /* a whole page back (the undo log needs a chunk too) */
        snprintf(k, sizeof(k), "f%d", i);
        CU_ASSERT_EQUAL(kv_shm_db_del(s, 0, k, strlen(k)), 0);
    }
    CU_ASSERT_EQUAL(kv_shm_rename(s, 0, "f0", 2, 0, "copy", 4, KV_SHM_MV_COPY, NULL), 0);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

/* To other clients: while a thread renames a key back and forth between two names (and
 * moves it between two databases), readers that take both names' stripes find it under
 * exactly one name every time. */
struct iso {
    struct kv_shm_store *s;
    volatile int stop;
    uint64_t renames, reads, bad;
};

static void *iso_writer(void *arg)
{
    struct iso *x = arg;
    for (uint64_t i = 0; !x->stop; i++) {
        int rc = i % 2 ? kv_shm_rename(x->s, 0, "ib", 2, 0, "ia", 2, 0, NULL)
                       : kv_shm_rename(x->s, 0, "ia", 2, 0, "ib", 2, 0, NULL);
        __atomic_add_fetch(&x->renames, rc == 0, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void test_shm_db_rename_isolated(void)
{
    struct kv_config c;
    cfg_make(&c, "riso", 8u << 20);
    struct iso x = {.s = open_with(&c, NULL, NULL, 0)};
    CU_ASSERT_EQUAL(set_str(x.s, 0, "ia", "value"), 0);
    uint64_t ha = kv_shm_key_hash(x.s, "ia", 2), hb = kv_shm_key_hash(x.s, "ib", 2);
    pthread_t t;
    pthread_create(&t, NULL, iso_writer, &x);
    /* 20000 reads at least, and on until the renamer has run (on a loaded machine it may
     * not be scheduled before 20000 reads end); bounded */
    for (int i = 0; i < 20000 || (__atomic_load_n(&x.renames, __ATOMIC_RELAXED) <= 200 &&
                                  i < 20000000);
         i++) {
        struct kv_shm_rset r = {{0}};
        kv_shm_rset_add(&r, ha);
        kv_shm_rset_add(&r, hb);
        kv_shm_rset_take(x.s, &r);
        struct vbuf va = {0}, vb = {0};
        int fa = kv_shm_db_get_held(x.s, 0, "ia", 2, ha, vbuf_alloc, &va, NULL, NULL) == 0;
        int fb = kv_shm_db_get_held(x.s, 0, "ib", 2, hb, vbuf_alloc, &vb, NULL, NULL) == 0;
        kv_shm_rset_drop(x.s, &r);
        x.bad += fa + fb != 1;
        x.bad += fa && (va.len != 5 || memcmp(va.p, "value", 5));
        x.bad += fb && (vb.len != 5 || memcmp(vb.p, "value", 5));
        kv_mem_free(KV_MOD_TEST, va.p);
        kv_mem_free(KV_MOD_TEST, vb.p);
        x.reads++;
    }
    x.stop = 1;
    pthread_join(t, NULL);
    fprintf(stderr, "(%llu renames, %llu reads) ", (unsigned long long)x.renames,
            (unsigned long long)x.reads);
    CU_ASSERT_EQUAL(x.bad, 0);
    CU_ASSERT(x.renames > 100);
    kv_shm_store_close(x.s);
    kv_shm_store_unlink(&c);
}

/* Across a kill -9: a child renames "ca" <-> "cb" in database 0 and moves "mv" between
 * databases 1 and 2 (each value holding a counter), and dies at the crash point between
 * the two publishes of an operation, or by SIGKILL at a random instant. After recovery the
 * renamed key exists under exactly one of its names and the moved key in exactly one of
 * its databases, each with a whole value, and the per-database counts agree. */
static void test_shm_db_rename_crash_all_or_nothing(void)
{
    struct kv_config c;
    cfg_make(&c, "rcrash", 16u << 20);
    {
        struct kv_shm_store *s = open_with(&c, NULL, NULL, 0);
        static uint8_t v[3000];
        memset(v, 'r', sizeof(v));
        CU_ASSERT_EQUAL(kv_shm_db_set(s, 0, "ca", 2, v, sizeof(v), NULL, NULL), 0);
        CU_ASSERT_EQUAL(kv_shm_db_set(s, 1, "mv", 2, v, 100, NULL, NULL), 0);
        kv_shm_store_close(s);
    }
    int problems = 0, crashed_mid = 0, undone = 0;
    for (int round = 0; round < 24; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            struct kv_shm_open_opts o = {.crash_at = round % 2 ? 0 : 2 + round * 3,
                                         .crash_site = KV_SHM_CRASH_BATCH};
            struct kv_shm_store *s;
            if (kv_shm_store_open_ex(&c, &o, NULL, 0, &s))
                _exit(3);
            for (uint64_t i = 0;; i++) {
                int a = kv_shm_db_exists(s, 0, "ca", 2) == 0;
                kv_shm_rename(s, 0, a ? "ca" : "cb", 2, 0, a ? "cb" : "ca", 2, 0, NULL);
                int one = kv_shm_db_exists(s, 1, "mv", 2) == 0;
                kv_shm_rename(s, one ? 1 : 2, "mv", 2, one ? 2 : 1, "mv", 2, KV_SHM_MV_NX, NULL);
                if (i % 7 == 0) /* a copy beside, so that copies are crashed into too */
                    kv_shm_rename(s, 0, a ? "cb" : "ca", 2, 5, "cp", 2, KV_SHM_MV_COPY, NULL);
            }
        }
        if (round % 2)
            usleep(3000 + (unsigned)(round * 7919) % 20000);
        else
            usleep(200000); /* the crash point ends it */
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        crashed_mid += WIFEXITED(st) && WEXITSTATUS(st) == 77;
        struct kv_shm_store *s = open_with(&c, NULL, NULL, 0);
        struct kv_shm_stats stats;
        kv_shm_stats(s, &stats);
        undone += (int)stats.batches_undone;
        char *a = get_str(s, 0, "ca"), *b = get_str(s, 0, "cb");
        char *m1 = get_str(s, 1, "mv"), *m2 = get_str(s, 2, "mv");
        problems += (a != NULL) + (b != NULL) != 1;
        problems += (m1 != NULL) + (m2 != NULL) != 1;
        const char *v = a ? a : b;
        for (size_t i = 0; v && i < 3000; i++)
            problems += v[i] != 'r';
        problems += v && strlen(v) != 3000;
        const char *m = m1 ? m1 : m2;
        problems += m && strlen(m) != 100;
        problems += dbsize(s, 0) != 1 || dbsize(s, 1) + dbsize(s, 2) != 1;
        problems += dbsize(s, 5) > 1;
        kv_mem_free(KV_MOD_TEST, a);
        kv_mem_free(KV_MOD_TEST, b);
        kv_mem_free(KV_MOD_TEST, m1);
        kv_mem_free(KV_MOD_TEST, m2);
        kv_shm_store_close(s);
    }
    fprintf(stderr, "(%d deaths between the publishes, %d operations undone) ", crashed_mid,
            undone);
    CU_ASSERT_EQUAL(problems, 0);
    CU_ASSERT(crashed_mid >= 6);
    CU_ASSERT(undone >= crashed_mid);
    kv_shm_store_unlink(&c);
}

/* A kill between writing the new map and flipping it leaves the swap not done; after the
 * flip, done. */
static void test_shm_db_swapdb_crash(void)
{
    struct kv_config c;
    cfg_make(&c, "swcrash", 8u << 20);
    {
        struct kv_shm_store *s = open_with(&c, NULL, NULL, 0);
        CU_ASSERT_EQUAL(set_str(s, 0, "w", "zero"), 0);
        kv_shm_store_close(s);
    }
    for (int done = 0; done < 2; done++) {
        pid_t pid = fork();
        if (pid == 0) {
            struct kv_shm_open_opts o = {.crash_at = done ? 0 : 1,
                                         .crash_site = KV_SHM_CRASH_BATCH};
            struct kv_shm_store *s;
            if (kv_shm_store_open_ex(&c, &o, NULL, 0, &s))
                _exit(3);
            kv_shm_swapdb(s, 0, 6);
            _exit(0); /* no clean close either way */
        }
        int st;
        waitpid(pid, &st, 0);
        CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == (done ? 0 : 77));
        struct kv_shm_store *s = open_with(&c, NULL, NULL, 0);
        CU_ASSERT(value_is(s, done ? 6 : 0, "w", "zero"));
        CU_ASSERT(value_is(s, done ? 0 : 6, "w", NULL));
        CU_ASSERT_EQUAL(dbsize(s, done ? 6 : 0), 1);
        kv_shm_store_close(s);
    }
    kv_shm_store_unlink(&c);
}

/* A layout-2 segment (this layout without databases: version 2, the item's db was padding,
 * the bytes after the header unused) opens as layout 3 with every key in database 0, its
 * leftover bytes after the header ignored; a second open finds layout 3. */
static uint32_t static_crc(const struct shm_hdr *h)
{
    struct shm_hdr tmp;
    memcpy(&tmp, h, offsetof(struct shm_hdr, static_end));
    tmp.hdr_crc = 0;
    return kv_shm_crc32c(0, &tmp, offsetof(struct shm_hdr, static_end));
}

static void test_shm_db_layout2_upgraded_in_place(void)
{
    struct kv_config c;
    cfg_make(&c, "v2", 8u << 20);
    for (int crashed = 0; crashed < 2; crashed++) {
        struct kv_shm_store *s = open_with(&c, NULL, NULL, 0);
        for (int i = 0; i < 400; i++) {
            char k[16];
            snprintf(k, sizeof(k), "v2-%d", i);
            CU_ASSERT_EQUAL(set_str(s, 0, k, k), 0);
        }
        kv_shm_store_close(s);
        /* make it layout 2, as a build before databases left it */
        int fd = shm_open(c.shm_name, O_RDWR, 0);
        CU_ASSERT_FATAL(fd >= 0);
        uint8_t *m = mmap(NULL, c.memory, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        CU_ASSERT_FATAL(m != MAP_FAILED);
        struct shm_hdr *h = (struct shm_hdr *)m, *h2 = (struct shm_hdr *)(m + h->hdr2_off);
        h->layout_version = 2;
        h->hdr_crc = static_crc(h);
        memcpy(h2, h, offsetof(struct shm_hdr, static_end));
        memset(m + SHM_DBS_OFF, 0x5A, sizeof(struct shm_dbs)); /* junk: never read */
        if (crashed)
            h->clean = 0;
        munmap(m, c.memory);
        close(fd);
        char err[1024] = "";
        s = open_with(&c, NULL, err, sizeof(err));
        CU_ASSERT(strstr(err, "upgraded in place from layout 2") != NULL);
        CU_ASSERT_EQUAL(s->hdr->layout_version, SHM_LAYOUT_VERSION);
        CU_ASSERT_EQUAL(dbsize(s, 0), 400);
        CU_ASSERT_EQUAL(dbsize(s, 1), 0);
        CU_ASSERT(value_is(s, 0, "v2-7", "v2-7"));
        CU_ASSERT(value_is(s, 1, "v2-7", NULL));
        CU_ASSERT_EQUAL(set_str(s, 3, "v2-7", "three"), 0);
        kv_shm_store_close(s);
        s = open_with(&c, NULL, err, sizeof(err));
        CU_ASSERT(strstr(err, "upgraded") == NULL);
        CU_ASSERT(value_is(s, 3, "v2-7", "three"));
        CU_ASSERT(value_is(s, 0, "v2-7", "v2-7"));
        kv_shm_flush(s);
        kv_shm_store_close(s);
    }
    kv_shm_store_unlink(&c);
}

/* INFO keyspace's expires / avg_ttl: the expiry sweep counts the keys with a TTL per
 * database as it walks the index; after one complete pass the figures are exact for keys
 * that did not change meanwhile, they follow SWAPDB (logical databases), and expired keys
 * are not counted. */
static void test_shm_db_ttl_stats_by_sweep(void)
{
    struct kv_config c;
    cfg_make(&c, "ttl", 16u << 20);
    struct kv_shm_store *s = open_with(&c, NULL, NULL, 0);
    char k[32];
    for (int i = 0; i < 3000; i++) {
        struct kv_shm_set_opts o = {.ttl_ms = i % 3 == 0 ? 0 : (i % 3 == 1 ? 100000 : 300000)};
        snprintf(k, sizeof(k), "t%d", i);
        CU_ASSERT_EQUAL_FATAL(kv_shm_db_set(s, 0, k, strlen(k), "v", 1, &o, NULL), 0);
        if (i < 500) {
            struct kv_shm_set_opts o3 = {.ttl_ms = 50000};
            CU_ASSERT_EQUAL_FATAL(kv_shm_db_set(s, 3, k, strlen(k), "w", 1, &o3, NULL), 0);
        }
    }
    struct kv_shm_set_opts brief = {.ttl_ms = 1};
    CU_ASSERT_EQUAL(kv_shm_db_set(s, 3, "gone", 4, "x", 1, &brief, NULL), 0);
    usleep(5000);
    uint64_t n = 0, avg = 0;
    struct kv_shm_stats st;
    kv_shm_stats(s, &st);
    /* a pass in steps, as the server's tick runs it */
    for (uint64_t b = 0; b < st.index_buckets * 2; b += 100)
        kv_shm_sweep(s, 100);
    CU_ASSERT_EQUAL(kv_shm_db_ttl_stats(s, 0, &n, &avg), 0);
    CU_ASSERT_EQUAL(n, 2000); /* the keys with a TTL, not the 1000 without */
    CU_ASSERT(avg > 190000 && avg <= 200000); /* half 100 s, half 300 s */
    CU_ASSERT_EQUAL(kv_shm_db_ttl_stats(s, 3, &n, &avg), 0);
    CU_ASSERT_EQUAL(n, 500); /* "gone" expired: removed, not counted */
    CU_ASSERT(avg > 45000 && avg <= 50000);
    CU_ASSERT_EQUAL(kv_shm_db_ttl_stats(s, 5, &n, &avg), 0);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(avg, 0);
    CU_ASSERT_EQUAL(kv_shm_swapdb(s, 3, 5), 0);
    CU_ASSERT_EQUAL(kv_shm_db_ttl_stats(s, 5, &n, &avg), 0);
    CU_ASSERT_EQUAL(n, 500);
    CU_ASSERT_EQUAL(kv_shm_db_ttl_stats(s, 3, &n, &avg), 0);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_NOT_EQUAL(kv_shm_db_ttl_stats(s, 256, &n, &avg), 0);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite su = CU_add_suite("shm_db", NULL, NULL);
    if (!su)
        return 1;
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"test_shm_db_keys_are_per_database", test_shm_db_keys_are_per_database},
        {"test_shm_db_counts_survive_recovery", test_shm_db_counts_survive_recovery},
        {"test_shm_db_swapdb", test_shm_db_swapdb},
        {"test_shm_db_rename_semantics", test_shm_db_rename_semantics},
        {"test_shm_db_rename_when_full", test_shm_db_rename_when_full},
        {"test_shm_db_rename_isolated", test_shm_db_rename_isolated},
        {"test_shm_db_rename_crash_all_or_nothing", test_shm_db_rename_crash_all_or_nothing},
        {"test_shm_db_swapdb_crash", test_shm_db_swapdb_crash},
        {"test_shm_db_layout2_upgraded_in_place", test_shm_db_layout2_upgraded_in_place},
        {"test_shm_db_ttl_stats_by_sweep", test_shm_db_ttl_stats_by_sweep},
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
        fprintf(stderr, "test_shm_db: heap bytes still held at exit\n");
        return 1;
    }
    return fails ? 1 : 0;
}
