/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_shm_sync.c -- --sync: what a data file keeps through a power loss (issue 17,
 * part 6).
 *
 * A power loss leaves a torn image: each page of the file as it was at its own instant,
 * none older than the start of the last completed sync. Two ways to make such images:
 *
 *   - page flips (deterministic): A = the file right after a sync, B = the file after
 *     more writes (overwrites into the same and other classes, deletes, new keys that
 *     split the index, a large value). Every image "A with one page of B", "B with one
 *     page of A", and random per-page mixes of A and B, is recovered; every key must hold
 *     its synced value or a later one, whole; no deleted-before-the-sync key may return.
 *     With the deferral off (the sync_no_defer knob) the same images lose synced keys:
 *     test_sync_flips_without_deferral_lose_keys shows what it guards.
 *   - torn copies under writers: threads write and delete while the file is read() in
 *     random block order; a copy started after a sync that began after a snapshot of the
 *     acknowledged writes must hold every one of them. KV_SYNC_LONG=1 runs many more,
 *     KV_SYNC_COPIES=N runs N; KV_SYNC_KEEP=DIR keeps a copy that failed (before its
 *     recovery) in DIR, KV_SYNC_DEBUG=1 names the keys that failed.
 *
 * Recovery runs in this process on a copy (a private file name), as a server started on
 * the copy would; the copy is removed afterwards. */
#include <CUnit/Basic.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kv_client.h"
#include "kv_mem.h"
#include "kv_shm.h"
#include "kv_test_util.h"
#include "options.h"

#define PG 4096u

static int long_run(void)
{
    const char *e = getenv("KV_SYNC_LONG");
    return e && *e && strcmp(e, "0") != 0;
}

static void cfg_file(struct kv_config *c, const char *tag, size_t mem)
{
    kv_config_defaults(c);
    /* tmpfs when there is one: the images are many, and msync there is only slower on disk */
    const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(c->data_file, sizeof(c->data_file), "%s/kvsync-%d-%s.data", dir, (int)getpid(), tag);
    c->memory = mem;
    unlink(c->data_file);
}

/* ---- values: "key:gen:" then filler that depends on both, so a torn one is seen ---- */

static size_t val_len(unsigned k, unsigned gen)
{
    if (gen % 64 == 7)
        return 70000 + k % 1000; /* a large item (pages of its own) */
    return 8 + (k * 7 + gen * 131) % (gen % 2 ? 300 : 40);
}

static size_t val_make(char *buf, size_t cap, unsigned k, unsigned gen)
{
    size_t n = val_len(k, gen);
    int h = snprintf(buf, cap, "%u:%u:", k, gen);
    for (size_t i = (size_t)h; i < n && i < cap; i++)
        buf[i] = (char)('a' + (k + gen + i) % 26);
    return n < (size_t)h ? (size_t)h : n;
}

struct vbuf {
    char *p;
    size_t len;
};

static void *vb_alloc(void *ctx, size_t n)
{
    struct vbuf *v = ctx;
    v->p = kv_mem_alloc(KV_MOD_TEST, n + 1); /* NUL-terminated for sscanf */
    v->len = n;
    if (v->p)
        v->p[n] = 0;
    return v->p;
}

/* The generation key k holds in s: -1 absent, -2 a value that is not whole or not k's. */
static long held_gen(struct kv_shm_store *s, const char *key, size_t klen, unsigned k)
{
    struct vbuf v = {0};
    int rc = kv_shm_get(s, key, klen, vb_alloc, &v, NULL, NULL);
    if (rc == KV_ENOTFOUND)
        return -1;
    if (rc)
        return -2;
    unsigned kk, gen;
    long out = -2;
    char want[80000];
    if (sscanf(v.p, "%u:%u:", &kk, &gen) == 2 && kk == k && gen < 10000000) {
        size_t n = val_make(want, sizeof(want), k, gen);
        if (n == v.len && memcmp(want, v.p, n) == 0)
            out = gen;
    }
    kv_mem_free(KV_MOD_TEST, v.p);
    return out;
}

static void put(struct kv_shm_store *s, const char *pfx, unsigned k, unsigned gen)
{
    char key[32], val[80000];
    int kl = snprintf(key, sizeof(key), "%s%u", pfx, k);
    size_t n = val_make(val, sizeof(val), k, gen);
    CU_ASSERT_EQUAL(kv_shm_set(s, key, (size_t)kl, val, n, NULL, NULL), 0);
}

static uint8_t *file_read(const char *path, size_t size)
{
    uint8_t *p = kv_mem_alloc(KV_MOD_TEST, size);
    int fd = open(path, O_RDONLY);
    CU_ASSERT_FATAL(fd >= 0 && p);
    size_t got = 0;
    while (got < size) {
        ssize_t r = pread(fd, p + got, size - got, (off_t)got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    CU_ASSERT_EQUAL(got, size);
    return p;
}

static void file_write(const char *path, const uint8_t *p, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    size_t put_ = 0;
    while (put_ < size) {
        ssize_t w = write(fd, p + put_, size - put_);
        if (w <= 0)
            break;
        put_ += (size_t)w;
    }
    close(fd);
    CU_ASSERT_EQUAL(put_, size);
}

/* ---- page flips ------------------------------------------------------------------ */

#define NK    6000u /* > 1024 buckets x 5: the new keys below split the index */
#define NNEW  1500u

struct flips {
    size_t size;
    uint8_t *a, *b, *img;
    uint64_t images, bad_images, lost, torn, revived, restored;
};

/* Recovers img and checks it: 0 when it keeps every synced write. */
static int check_image(struct flips *f, const struct kv_config *base, int verbose)
{
    struct kv_config c = *base;
    snprintf(c.data_file, sizeof(c.data_file), "%.1000s.img", base->data_file);
    c.sync = KV_SYNC_NO;
    file_write(c.data_file, f->img, f->size);
    struct kv_shm_store *s = NULL;
    char err[512];
    int rc = kv_shm_store_open(&c, err, sizeof(err), &s);
    CU_ASSERT_EQUAL(rc, 0);
    f->images++;
    if (rc) {
        fprintf(stderr, "recovery refused an image: %s\n", err);
        unlink(c.data_file);
        f->bad_images++;
        return 1;
    }
    uint64_t lost = 0, torn = 0, revived = 0;
    char key[32];
    for (unsigned k = 0; k < NK; k++) {
        int kl = snprintf(key, sizeof(key), "k%u", k);
        long g = held_gen(s, key, (size_t)kl, k);
        if (g == -2)
            torn++;
        else if (k >= 200 && k < 300) /* deleted after the sync: 0 or gone */
            lost += g != -1 && g != 0;
        else if (k < 200) /* overwritten after the sync (gen 1, then 3 for k < 50) */
            lost += !(g == 0 || g == 1 || g == 3);
        else if (k >= 300 && k < 400) /* overwritten into other classes */
            lost += !(g == 0 || g == 5 || g == 7);
        else if (k >= 400 && k < 500) /* deleted before the sync: must stay gone */
            revived += g != -1;
        else
            lost += g != 0;
        if (getenv("KV_SYNC_DEBUG") && g != 0 && !(k >= 200 && k < 300 && g == -1) &&
            !(k < 200 && (g == 1 || g == 3)) && !(k >= 300 && k < 400 && (g == 5 || g == 7)) &&
            !(k >= 400 && k < 500 && g == -1))
            fprintf(stderr, "    k%u: %ld\n", k, g);
        if (getenv("KV_SYNC_DEBUG") && k >= 400 && k < 500 && g != -1)
            fprintf(stderr, "    revived k%u: %ld\n", k, g);
    }
    for (unsigned k = 0; k < NNEW; k++) { /* new after the sync: absent or whole */
        int kl = snprintf(key, sizeof(key), "n%u", k);
        long g = held_gen(s, key, (size_t)kl, k);
        torn += g == -2;
        lost += g != -1 && g != -2 && g != 2;
    }
    struct kv_shm_stats st;
    kv_shm_stats(s, &st);
    f->restored += st.restored_items;
    kv_shm_store_close(s);
    unlink(c.data_file);
    f->lost += lost;
    f->torn += torn;
    f->revived += revived;
    int bad = lost || torn || revived;
    f->bad_images += bad;
    if (bad && verbose)
        fprintf(stderr, "  image %llu: %llu synced keys lost, %llu torn values, %llu revived\n",
                (unsigned long long)f->images, (unsigned long long)lost,
                (unsigned long long)torn, (unsigned long long)revived);
    return bad;
}

/* The file as the flush of a sync left it, before what waited for it was freed. */
struct at_flush {
    const char *path;
    size_t size;
    uint8_t *img; /* owned */
};

static void take_at_flush(void *ctx)
{
    struct at_flush *a = ctx;
    kv_mem_free(KV_MOD_TEST, a->img);
    a->img = file_read(a->path, a->size);
}

static void run_flips(int no_defer, struct flips *f, unsigned mixes)
{
    struct kv_config c;
    cfg_file(&c, no_defer ? "flipnd" : "flip", 4u << 20);
    struct at_flush af = {c.data_file, c.memory, NULL};
    struct kv_shm_open_opts o = {.sync_no_defer = no_defer, .sync_interval_ms = 3600000,
                                 .fixed_hash_key = getenv("KV_SYNC_DEBUG") != NULL,
                                 .sync_flushed = take_at_flush, .sync_ctx = &af};
    struct kv_shm_store *s = NULL;
    char err[512];
    CU_ASSERT_EQUAL_FATAL(kv_shm_store_open_ex(&c, &o, err, sizeof(err), &s), 0);
    for (unsigned k = 0; k < NK; k++)
        put(s, "k", k, 0);
    for (unsigned k = 400; k < 500; k++) {
        char key[32];
        int kl = snprintf(key, sizeof(key), "k%u", k);
        CU_ASSERT_EQUAL(kv_shm_del(s, key, (size_t)kl), 0);
    }
    CU_ASSERT_EQUAL_FATAL(kv_shm_sync_now(s), 0);
    memset(f, 0, sizeof(*f));
    f->size = c.memory;
    f->a = af.img; /* the disk right after the sync's flush (moved slots not yet cleared,
                    * chunks that waited not yet freed) */
    af.img = NULL;
    CU_ASSERT_FATAL(f->a != NULL);

    /* after the sync: overwrites (same class: a freed chunk is what the next write of
     * the class wants), deletes, other classes, new keys (splits), large values */
    for (unsigned k = 0; k < 200; k++)
        put(s, "k", k, 1);
    for (unsigned k = 0; k < 50; k++)
        put(s, "k", k, 3);
    for (unsigned k = 200; k < 300; k++) {
        char key[32];
        int kl = snprintf(key, sizeof(key), "k%u", k);
        CU_ASSERT_EQUAL(kv_shm_del(s, key, (size_t)kl), 0);
    }
    for (unsigned k = 0; k < NNEW; k++)
        put(s, "n", k, 2);
    for (unsigned k = 300; k < 400; k++)
        put(s, "k", k, k < 310 ? 7 : 5);
    f->b = file_read(c.data_file, f->size);
    struct kv_shm_sync_stats y;
    kv_shm_sync_stats(s, &y);
    CU_ASSERT_EQUAL(y.completed, 1); /* B is still based on the sync of A */
    kv_shm_store_close(s);
    kv_mem_free(KV_MOD_TEST, af.img); /* the close's own sync */
    unlink(c.data_file);

    f->img = kv_mem_alloc(KV_MOD_TEST, f->size);
    CU_ASSERT_FATAL(f->img != NULL);
    if (getenv("KV_SYNC_DEBUG")) {
        fprintf(stderr, "A alone:\n");
        memcpy(f->img, f->a, f->size);
        check_image(f, &c, 1);
        fprintf(stderr, "B alone:\n");
        memcpy(f->img, f->b, f->size);
        check_image(f, &c, 1);
    }
    size_t npg = f->size / PG, diff = 0;
    for (size_t p = 0; p < npg; p++) {
        if (memcmp(f->a + p * PG, f->b + p * PG, PG) == 0)
            continue;
        diff++;
        if (getenv("KV_SYNC_MIXONLY"))
            continue;
        memcpy(f->img, f->a, f->size);
        memcpy(f->img + p * PG, f->b + p * PG, PG);
        check_image(f, &c, !no_defer);
        memcpy(f->img, f->b, f->size);
        memcpy(f->img + p * PG, f->a + p * PG, PG);
        check_image(f, &c, !no_defer);
    }
    srand(17);
    for (unsigned m = 0; m < mixes; m++) {
        for (size_t p = 0; p < npg; p++)
            memcpy(f->img + p * PG, (rand() & 1 ? f->a : f->b) + p * PG, PG);
        check_image(f, &c, !no_defer);
    }
    printf("\n  %s: %zu pages differ; %llu images, %llu bad: %llu synced keys lost, %llu torn "
           "values, %llu deleted keys revived; %llu slots restored from older copies\n",
           no_defer ? "deferral OFF" : "deferral on", diff, (unsigned long long)f->images,
           (unsigned long long)f->bad_images, (unsigned long long)f->lost,
           (unsigned long long)f->torn, (unsigned long long)f->revived,
           (unsigned long long)f->restored);
    kv_mem_free(KV_MOD_TEST, f->a);
    kv_mem_free(KV_MOD_TEST, f->b);
    kv_mem_free(KV_MOD_TEST, f->img);
}

static void test_sync_flips_keep_synced_writes(void)
{
    struct flips f;
    if (getenv("KV_SYNC_ONLY") && strcmp(getenv("KV_SYNC_ONLY"), "flips"))
        return;
    run_flips(0, &f, long_run() ? 400 : 24);
    CU_ASSERT(f.images > 20);
    CU_ASSERT_EQUAL(f.bad_images, 0);
    CU_ASSERT(f.restored > 0); /* the torn-slot path was taken, not just never needed */
}

static void test_sync_flips_without_deferral_lose_keys(void)
{
    struct flips f;
    if (getenv("KV_SYNC_ONLY") && strcmp(getenv("KV_SYNC_ONLY"), "flips"))
        return;
    run_flips(1, &f, long_run() ? 100 : 8);
    CU_ASSERT(f.bad_images > 0);
    CU_ASSERT(f.lost > 0);
}

/* ---- torn copies while writers run ------------------------------------------------- */

#define TK      4000u
#define WRITERS 2

struct torn {
    struct kv_shm_store *s;
    volatile int stop;
    int32_t acked[TK];   /* atomic: last acknowledged gen of key k, -gen when a delete */
    int32_t del_max[TK]; /* atomic: gen of the last delete of key k begun (stored before
                          * the call: a delete may take effect before it returns) */
    unsigned seed[WRITERS];
    uint64_t ops;
};

struct warg {
    struct torn *t;
    unsigned id;
};

static void *writer(void *arg)
{
    struct warg *w = arg;
    struct torn *t = w->t;
    unsigned seed = 1234u + w->id;
    unsigned gen[TK / WRITERS] = {0};
    char key[32], val[80000];
    while (!t->stop) {
        unsigned j = (unsigned)rand_r(&seed) % (TK / WRITERS), k = j * WRITERS + w->id;
        int kl = snprintf(key, sizeof(key), "t%u", k);
        unsigned g = ++gen[j]; /* one writer per key: its generations only grow */
        if (rand_r(&seed) % 8 == 0) {
            __atomic_store_n(&t->del_max[k], (int32_t)g, __ATOMIC_RELEASE);
            int rc = kv_shm_del(t->s, key, (size_t)kl);
            if (rc == 0 || rc == KV_ENOTFOUND)
                __atomic_store_n(&t->acked[k], -(int32_t)g, __ATOMIC_RELEASE);
        } else {
            if (g % 64 == 7 && rand_r(&seed) % 4)
                g = ++gen[j]; /* fewer large values: the store must not fill up */
            size_t n = val_make(val, sizeof(val), k, g);
            if (kv_shm_set(t->s, key, (size_t)kl, val, n, NULL, NULL) == 0)
                __atomic_store_n(&t->acked[k], (int32_t)g, __ATOMIC_RELEASE);
        }
        __atomic_add_fetch(&t->ops, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

/* Copies src to dst with read(), 16 KiB blocks in a random order, while writers run. */
static void torn_copy(const char *src, const char *dst, size_t size, unsigned *seed)
{
    size_t nb = size / 16384;
    uint32_t *order = kv_mem_alloc(KV_MOD_TEST, nb * sizeof(*order));
    uint8_t *buf = kv_mem_alloc(KV_MOD_TEST, 16384);
    CU_ASSERT_FATAL(order && buf);
    for (size_t i = 0; i < nb; i++)
        order[i] = (uint32_t)i;
    for (size_t i = nb; i-- > 1;) {
        size_t j = (size_t)rand_r(seed) % (i + 1);
        uint32_t x = order[i];
        order[i] = order[j];
        order[j] = x;
    }
    int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CU_ASSERT_FATAL(in >= 0 && out >= 0);
    CU_ASSERT_EQUAL(ftruncate(out, (off_t)size), 0);
    for (size_t i = 0; i < nb; i++) {
        off_t at = (off_t)order[i] * 16384;
        CU_ASSERT_EQUAL(pread(in, buf, 16384, at), 16384);
        CU_ASSERT_EQUAL(pwrite(out, buf, 16384, at), 16384);
        if (i % 64 == 0)
            usleep(200); /* let the writers move on: a more torn copy */
    }
    close(in);
    close(out);
    kv_mem_free(KV_MOD_TEST, order);
    kv_mem_free(KV_MOD_TEST, buf);
}

static void run_torn(int no_defer, unsigned copies, uint64_t *bad_out)
{
    struct kv_config c;
    cfg_file(&c, no_defer ? "tornnd" : "torn", 8u << 20); /* no eviction: nothing may go */
    struct kv_shm_open_opts o = {.sync_no_defer = no_defer, .sync_interval_ms = 50};
    static struct torn t;
    memset(&t, 0, sizeof(t));
    char err[512];
    CU_ASSERT_EQUAL_FATAL(kv_shm_store_open_ex(&c, &o, err, sizeof(err), &t.s), 0);
    pthread_t th[WRITERS];
    struct warg wa[WRITERS];
    for (unsigned i = 0; i < WRITERS; i++) {
        wa[i] = (struct warg){&t, i};
        pthread_create(&th[i], NULL, writer, &wa[i]);
    }
    static int32_t snap[TK];
    unsigned seed = 99;
    uint64_t bad = 0, checked = 0, lost = 0, torn = 0;
    char dst[1100], cmd[2400];
    snprintf(dst, sizeof(dst), "%s.copy", c.data_file);
    for (unsigned n = 0; n < copies; n++) {
        usleep(20000 + (unsigned)rand_r(&seed) % 80000);
        struct kv_shm_sync_stats y;
        kv_shm_sync_stats(t.s, &y);
        uint64_t started = y.started;
        for (unsigned k = 0; k < TK; k++) /* acknowledged before `started` was read... */
            snap[k] = __atomic_load_n(&t.acked[k], __ATOMIC_ACQUIRE);
        for (int i = 0; i < 400; i++) { /* ...then a sync begun after it completes */
            kv_shm_sync_stats(t.s, &y);
            if (y.last_ok > started)
                break;
            usleep(5000);
        }
        CU_ASSERT(y.last_ok > started);
        usleep((unsigned)rand_r(&seed) % 60000); /* a random instant, writers running */
        /* no sync may begin and complete during the copy: the disk at a power loss has
         * every page no older than the start of the last completed sync, and a copy read
         * across a later sync would hold pages older than that one (writers still run,
         * and a sync under way at the start may complete) */
        kv_shm_sync_hold(t.s, 1);
        kv_shm_sync_stats(t.s, &y);
        uint64_t before = y.started;
        torn_copy(c.data_file, dst, c.memory, &seed);
        kv_shm_sync_stats(t.s, &y);
        kv_shm_sync_hold(t.s, 0);
        CU_ASSERT_EQUAL(y.started, before);
        struct kv_config cc = c;
        snprintf(cc.data_file, sizeof(cc.data_file), "%.1000s", dst);
        cc.sync = KV_SYNC_NO;
        char keep[1200] = "";
        if (getenv("KV_SYNC_KEEP")) { /* the copy as taken: recovery rewrites it */
            snprintf(keep, sizeof(keep), "%.900s/kvsync-%d-%u.copy", getenv("KV_SYNC_KEEP"),
                     (int)getpid(), n);
            snprintf(cmd, sizeof(cmd), "cp %s %s", dst, keep);
            CU_ASSERT_EQUAL(system(cmd), 0);
        }
        struct kv_shm_store *r = NULL;
        int rc = kv_shm_store_open(&cc, err, sizeof(err), &r);
        CU_ASSERT_EQUAL(rc, 0);
        if (rc) {
            fprintf(stderr, "recovery refused a copy: %s\n", err);
            bad++;
            unlink(dst);
            continue;
        }
        uint64_t l = 0, tr = 0;
        char key[32];
        for (unsigned k = 0; k < TK; k++) {
            int kl = snprintf(key, sizeof(key), "t%u", k);
            long g = held_gen(r, key, (size_t)kl, k);
            if (g == -2) {
                tr++;
                continue;
            }
            /* what was acknowledged before the sync, or a later state of the key */
            int32_t want = snap[k], dmax = __atomic_load_n(&t.del_max[k], __ATOMIC_ACQUIRE);
            if (getenv("KV_SYNC_DEBUG") &&
                ((want > 0 && g >= 0 && g < want) || (want < 0 && g >= 0 && g <= -want)))
                fprintf(stderr, "    t%u: holds %ld; acked %d before the sync, now %d\n", k, g,
                        want, __atomic_load_n(&t.acked[k], __ATOMIC_ACQUIRE));
            if (want > 0 && g >= 0 && g < want)
                l++; /* an older value than the synced one */
            else if (want > 0 && g == -1 && dmax <= want) {
                l++; /* gone, and no delete after the synced set */
                if (getenv("KV_SYNC_DEBUG") && l < 5)
                    fprintf(stderr, "    t%u: absent; acked %d before the sync, now %d\n", k,
                            want, __atomic_load_n(&t.acked[k], __ATOMIC_ACQUIRE));
            }
            else if (want < 0 && g >= 0 && g <= -want)
                l++; /* deleted before the sync, back with an older value */
        }
        checked++;
        if (*keep && !l && !tr)
            unlink(keep);
        else if (*keep)
            fprintf(stderr, "    copy %u failed, kept as %s\n", n, keep);
        lost += l;
        torn += tr;
        bad += l || tr;
        kv_shm_store_close(r);
        unlink(dst);
    }
    t.stop = 1;
    for (unsigned i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    struct kv_shm_sync_stats y;
    kv_shm_sync_stats(t.s, &y);
    printf("\n  %s: %llu copies checked, %llu bad (%llu synced keys missing, %llu torn values); "
           "%llu writes; %llu syncs, longest %llu us\n",
           no_defer ? "deferral OFF" : "deferral on", (unsigned long long)checked,
           (unsigned long long)bad, (unsigned long long)lost, (unsigned long long)torn,
           (unsigned long long)t.ops, (unsigned long long)y.completed,
           (unsigned long long)y.max_us);
    kv_shm_store_close(t.s);
    unlink(c.data_file);
    *bad_out = bad;
}

static void test_sync_torn_copies_under_writers(void)
{
    uint64_t bad;
    if (getenv("KV_SYNC_ONLY") && strcmp(getenv("KV_SYNC_ONLY"), "torn"))
        return;
    /* before the fixes of 2026-12-02 (record.md) about 1 copy in 10 under load failed:
     * 16 copies find that in about 5 runs of 6 */
    const char *nc = getenv("KV_SYNC_COPIES");
    run_torn(0, nc && atoi(nc) > 0 ? (unsigned)atoi(nc) : long_run() ? 60 : 16, &bad);
    CU_ASSERT_EQUAL(bad, 0);
    if (long_run()) { /* the same without the deferral: reported, losses expected */
        run_torn(1, 30, &bad);
        printf("  (without the deferral: %llu of 30 copies bad)\n", (unsigned long long)bad);
    }
}

/* ---- policies ------------------------------------------------------------------------ */

static void test_sync_always_barrier(void)
{
    struct kv_config c;
    cfg_file(&c, "always", 4u << 20);
    c.sync = KV_SYNC_ALWAYS;
    struct kv_shm_store *s = NULL;
    char err[512];
    CU_ASSERT_EQUAL_FATAL(kv_shm_store_open(&c, err, sizeof(err), &s), 0);
    struct kv_shm_sync_stats y0, y1;
    kv_shm_sync_stats(s, &y0);
    CU_ASSERT_EQUAL(y0.policy, KV_SYNC_ALWAYS);
    CU_ASSERT_EQUAL(kv_shm_sync_barrier(s), 0); /* nothing written: no sync needed */
    put(s, "a", 1, 0);
    CU_ASSERT_EQUAL(kv_shm_sync_barrier(s), 0);
    kv_shm_sync_stats(s, &y1);
    CU_ASSERT(y1.last_ok > y0.started);
    CU_ASSERT(y1.completed >= 1);
    kv_shm_store_close(s);

    /* no: no thread, nothing deferred; a shm store has none either */
    c.sync = KV_SYNC_NO;
    CU_ASSERT_EQUAL_FATAL(kv_shm_store_open(&c, err, sizeof(err), &s), 0);
    kv_shm_sync_stats(s, &y0);
    CU_ASSERT_EQUAL(y0.policy, KV_SYNC_NO);
    CU_ASSERT_EQUAL(y0.deferring, 0);
    CU_ASSERT_EQUAL(kv_shm_sync_barrier(s), 0);
    CU_ASSERT_EQUAL(held_gen(s, "a1", 2, 1), 0);
    kv_shm_store_close(s);
    unlink(c.data_file);
}

/* A full store whose free space waits for a sync: the writer runs one, never fails. */
static void test_sync_full_store_reclaims(void)
{
    struct kv_config c;
    cfg_file(&c, "full", 2u << 20);
    struct kv_shm_open_opts o = {.sync_interval_ms = 3600000};
    struct kv_shm_store *s = NULL;
    char err[512];
    CU_ASSERT_EQUAL_FATAL(kv_shm_store_open_ex(&c, &o, err, sizeof(err), &s), 0);
    char val[20000];
    memset(val, 'x', sizeof(val));
    unsigned n = 0;
    while (n < 1000 && kv_shm_set(s, "big", 3, val, sizeof(val), NULL, NULL) == 0 &&
           kv_shm_set(s, &n, sizeof(n), val, sizeof(val), NULL, NULL) == 0)
        n++;
    CU_ASSERT(n > 10); /* filled up to KV_ENOMEM */
    for (unsigned i = 0; i < n; i++)
        CU_ASSERT_EQUAL(kv_shm_del(s, &i, sizeof(i)), 0);
    struct kv_shm_sync_stats y;
    kv_shm_sync_stats(s, &y);
    CU_ASSERT(y.chunks_waiting >= n); /* nothing reused yet */
    for (unsigned i = 0; i < n; i++) /* ...and yet every write finds room */
        CU_ASSERT_EQUAL(kv_shm_set(s, &i, sizeof(i), val, sizeof(val), NULL, NULL), 0);
    kv_shm_sync_stats(s, &y);
    CU_ASSERT(y.completed >= 1);
    kv_shm_store_close(s);
    unlink(c.data_file);
}


/* ---- the real server: copies with cp while a client writes ------------------------- */

#define SK 1000u

struct e2e {
    uint16_t port;
    volatile int stop;
    int32_t acked[SK], del_max[SK];
    uint64_t ops;
};

static void *e2e_writer(void *arg)
{
    struct e2e *e = arg;
    struct kv_client *c;
    if (kv_client_connect("127.0.0.1", e->port, 5000, &c) != 0)
        return NULL;
    unsigned seed = 7, gen[SK] = {0};
    char key[32], val[80000];
    while (!e->stop) {
        unsigned k = (unsigned)rand_r(&seed) % SK, g = ++gen[k];
        int kl = snprintf(key, sizeof(key), "s%u", k);
        if (g % 64 == 7)
            g = ++gen[k];
        if (rand_r(&seed) % 8 == 0) {
            /* before the request: the server may delete before the answer arrives */
            __atomic_store_n(&e->del_max[k], (int32_t)g, __ATOMIC_RELEASE);
            if (kv_client_del1(c, key, (size_t)kl, NULL) == 0)
                __atomic_store_n(&e->acked[k], -(int32_t)g, __ATOMIC_RELEASE);
        } else {
            size_t n = val_make(val, sizeof(val), k, g);
            if (kv_client_set(c, key, (size_t)kl, val, n, NULL, NULL) == 0)
                __atomic_store_n(&e->acked[k], (int32_t)g, __ATOMIC_RELEASE);
        }
        e->ops++;
    }
    kv_client_close(c);
    return NULL;
}

static int64_t stat_of(uint16_t port, const char *name)
{
    struct kv_client *c;
    struct kv_stats st;
    int64_t v = -1;
    if (kv_client_connect("127.0.0.1", port, 5000, &c) != 0)
        return -1;
    if (kv_client_stats(c, &st) == 0) {
        if (!kv_client_stats_find(&st, name, &v))
            v = -1;
        kv_client_stats_free(&st);
    }
    kv_client_close(c);
    return v;
}

/* libevkv --data-file F --sync SYNC; a server on a copy taken with cp (every page of it
 * no older than the last sync, when no sync began and ended during the cp) serves every
 * write acknowledged before that sync began. */
static void run_server_copies(const char *sync, unsigned copies)
{
    struct kv_test_server a = {0}, b = {0};
    char data[256], copy[300], cmd[700];
    snprintf(data, sizeof(data), "/dev/shm/kvsync-e2e-%d.data", (int)getpid());
    snprintf(copy, sizeof(copy), "%s.copy", data);
    unlink(data);
    const char *args[] = {"--data-file", data, "--sync", sync, NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&a, args) == 0);
    CU_ASSERT_EQUAL(stat_of(a.port, "sync_policy"),
                    strcmp(sync, "always") == 0 ? KV_SYNC_ALWAYS : KV_SYNC_EVERYSEC);
    static struct e2e e;
    memset(&e, 0, sizeof(e));
    e.port = a.port;
    pthread_t th;
    pthread_create(&th, NULL, e2e_writer, &e);
    static int32_t snap[SK];
    unsigned good = 0, tries = 0, seed = 5;
    uint64_t lost = 0, torn = 0;
    while (good < copies && tries++ < copies * 4) {
        usleep(100000 + (unsigned)rand_r(&seed) % 200000);
        int64_t started = stat_of(a.port, "syncs_started");
        for (unsigned k = 0; k < SK; k++)
            snap[k] = __atomic_load_n(&e.acked[k], __ATOMIC_ACQUIRE);
        for (int i = 0; i < 300 && stat_of(a.port, "sync_last_ok") <= started; i++)
            usleep(10000);
        int64_t before = stat_of(a.port, "syncs_started");
        snprintf(cmd, sizeof(cmd), "cp %s %s", data, copy);
        CU_ASSERT_EQUAL(system(cmd), 0);
        int64_t after_ok = stat_of(a.port, "sync_last_ok");
        if (after_ok > before) { /* a sync began and completed during the cp: not an
                                  * image a power loss leaves; take another */
            unlink(copy);
            continue;
        }
        const char *bargs[] = {"--data-file", copy, "--sync", "no", NULL};
        CU_ASSERT_FATAL(kv_test_server_start(&b, bargs) == 0);
        struct kv_client *c;
        CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", b.port, 5000, &c) == 0);
        char key[32], want_v[80000];
        for (unsigned k = 0; k < SK; k++) {
            int kl = snprintf(key, sizeof(key), "s%u", k);
            struct kv_value v = {0};
            long g = -1;
            int rc = kv_client_get(c, key, (size_t)kl, &v);
            if (rc == 0) {
                unsigned kk, gg;
                g = -2;
                if (sscanf((char *)v.data, "%u:%u:", &kk, &gg) == 2 && kk == k &&
                    val_make(want_v, sizeof(want_v), k, gg) == v.len &&
                    memcmp(want_v, v.data, v.len) == 0)
                    g = gg;
            } else {
                CU_ASSERT_EQUAL(rc, KV_ENOTFOUND);
            }
            kv_client_value_free(&v);
            int32_t want = snap[k], dmax = __atomic_load_n(&e.del_max[k], __ATOMIC_ACQUIRE);
            torn += g == -2;
            lost += (want > 0 && g >= 0 && g < want) || (want > 0 && g == -1 && dmax <= want) ||
                    (want < 0 && g >= 0 && g <= -want);
        }
        kv_client_close(c);
        CU_ASSERT_EQUAL(kv_test_server_stop(&b), 0);
        unlink(copy);
        good++;
    }
    e.stop = 1;
    pthread_join(th, NULL);
    printf("\n  --sync %s: %u server copies checked (%u taken), %llu writes: %llu synced writes "
           "missing, %llu torn values; %lld syncs\n",
           sync, good, tries, (unsigned long long)e.ops, (unsigned long long)lost,
           (unsigned long long)torn, (long long)stat_of(a.port, "syncs_completed"));
    CU_ASSERT(good >= 1);
    CU_ASSERT_EQUAL(lost, 0);
    CU_ASSERT_EQUAL(torn, 0);
    CU_ASSERT_EQUAL(kv_test_server_stop(&a), 0);
    unlink(data);
}

static void test_sync_server_copies(void)
{
    if (getenv("KV_SYNC_ONLY") && strcmp(getenv("KV_SYNC_ONLY"), "server"))
        return;
    run_server_copies("everysec", long_run() ? 20 : 2);

    /* always: an answer leaves only after a sync begun after the write completed (a copy
     * taken with cp cannot show it: a sync completes during any cp while writes run) */
    struct kv_test_server a = {0};
    char data[256];
    snprintf(data, sizeof(data), "/dev/shm/kvsync-e2e-%d.always", (int)getpid());
    unlink(data);
    const char *args[] = {"--data-file", data, "--sync", "always", NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&a, args) == 0);
    CU_ASSERT_EQUAL(stat_of(a.port, "sync_policy"), KV_SYNC_ALWAYS);
    struct kv_client *c;
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", a.port, 5000, &c) == 0);
    for (int i = 0; i < 20; i++) {
        int64_t started = stat_of(a.port, "syncs_started");
        CU_ASSERT_EQUAL(kv_client_set(c, "k", 1, &i, sizeof(i), NULL, NULL), 0);
        CU_ASSERT(stat_of(a.port, "sync_last_ok") > started);
    }
    kv_client_close(c);
    CU_ASSERT_EQUAL(stat_of(a.port, "sync_errors"), 0);
    CU_ASSERT_EQUAL(kv_test_server_stop(&a), 0);
    unlink(data);
}

/* ---- a failing disk: msync fails while a flag file exists (LD_PRELOAD shim) -------- */

/* Starts a server whose msync fails while flag exists (bin/kvtest_failmsync.so). */
static int start_failing(struct kv_test_server *a, const char *const *args, const char *flag)
{
    char shim[1024], asan[1200];
    const char *old = getenv("ASAN_OPTIONS");
    kv_test_bin_path("kvtest_failmsync.so", shim, sizeof(shim));
    snprintf(asan, sizeof(asan), "%s%sverify_asan_link_order=0", old ? old : "",
             old && *old ? ":" : "");
    char *keep = old ? strdup(old) : NULL;
    setenv("LD_PRELOAD", shim, 1);
    setenv("KV_TEST_MSYNC_FAIL", flag, 1);
    setenv("ASAN_OPTIONS", asan, 1);
    int rc = kv_test_server_start(a, args);
    unsetenv("LD_PRELOAD");
    unsetenv("KV_TEST_MSYNC_FAIL");
    if (keep)
        setenv("ASAN_OPTIONS", keep, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(keep);
    return rc;
}

static void flag_set(const char *flag, int on)
{
    if (on) {
        int fd = open(flag, O_CREAT | O_WRONLY, 0600);
        CU_ASSERT_FATAL(fd >= 0);
        close(fd);
    } else {
        unlink(flag);
    }
}

/* RESP requests on a fresh connection; the replies into buf until stop appears (or the
 * server stops sending). */
static void resp_until(uint16_t port, const char *req, const char *stop, char *buf, size_t cap)
{
    int fd = kv_test_connect(port);
    size_t n = 0;
    buf[0] = '\0';
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    while (n < cap - 1 && !strstr(buf, stop)) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        buf[n] = '\0';
    }
    close(fd);
}

/* A server on data file args holds key = want: the acknowledged write survived. */
static void restart_holds(struct kv_test_server *a, const char *const *args, const char *key,
                          const char *want)
{
    struct kv_client *c;
    struct kv_value v = {0};
    CU_ASSERT_FATAL(kv_test_server_start(a, args) == 0);
    CU_ASSERT(stat_of(a->port, "recovered_items") >= 1); /* not marked clean */
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", a->port, 5000, &c) == 0);
    CU_ASSERT_EQUAL(kv_client_get(c, key, strlen(key), &v), 0);
    CU_ASSERT(v.len == strlen(want) && memcmp(v.data, want, v.len) == 0);
    kv_client_value_free(&v);
    kv_client_close(c);
    CU_ASSERT_EQUAL(kv_test_server_stop(a), 0);
}

/* One RESP command on a fresh connection; the first line of the reply into line. */
static void resp_line(uint16_t port, const char *cmd, char *line, size_t cap)
{
    int fd = kv_test_connect(port);
    line[0] = '\0';
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(write(fd, cmd, strlen(cmd)) == (ssize_t)strlen(cmd));
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, line + n, 1);
        if (r <= 0 || line[n] == '\n')
            break;
        n++;
    }
    line[n] = '\0';
    close(fd);
}

/* --sync everysec: from a failed sync until one succeeds, every write is refused
 * (DISK_ERROR; RESP -MISCONF, as Redis after an AOF fsync error), reads are served; the
 * first successful sync lets writes in again. */
static void test_sync_failed_msync_refuses_writes(void)
{
    struct kv_test_server a = {0};
    char data[256], flag[300], line[300];
    snprintf(data, sizeof(data), "/dev/shm/kvsync-fail-%d.data", (int)getpid());
    snprintf(flag, sizeof(flag), "%s.fail", data);
    unlink(data);
    unlink(flag);
    const char *args[] = {"--data-file", data, "--sync", "everysec", NULL};
    CU_ASSERT_FATAL(start_failing(&a, args, flag) == 0);
    struct kv_client *c;
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", a.port, 5000, &c) == 0);
    CU_ASSERT_EQUAL(kv_client_set(c, "old", 3, "v1", 2, NULL, NULL), 0);

    flag_set(flag, 1);
    int rc = 0, i;
    for (i = 0; i < 400 && rc == 0; i++) { /* the next sync (within a second) fails */
        rc = kv_client_set(c, "new", 3, "v2", 2, NULL, NULL);
        if (rc == 0)
            usleep(10000);
    }
    CU_ASSERT_EQUAL(rc, KV_ESTATUS);
    CU_ASSERT_EQUAL(kv_client_last_status(c), KV_ST_DISK_ERROR);
    CU_ASSERT(stat_of(a.port, "sync_errors") >= 1);
    CU_ASSERT_EQUAL(kv_client_del1(c, "old", 3, NULL), KV_ESTATUS); /* removals too */
    struct kv_value v = {0};
    CU_ASSERT_EQUAL(kv_client_get(c, "old", 3, &v), 0); /* reads are served */
    CU_ASSERT(v.len == 2 && memcmp(v.data, "v1", 2) == 0);
    kv_client_value_free(&v);
    resp_line(a.port, "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\n1\r\n", line, sizeof(line));
    CU_ASSERT_PTR_NOT_NULL(strstr(line, "-MISCONF Errors writing to the data file: "
                                        "Input/output error") == line ? line : NULL);
    resp_line(a.port, "*2\r\n$6\r\nAPPEND\r\n$1\r\nx\r\n", line, sizeof(line));
    CU_ASSERT(strncmp(line, "-ERR", 4) == 0); /* arity first, as Redis */
    resp_line(a.port, "*2\r\n$6\r\nSTRLEN\r\n$3\r\nold\r\n", line, sizeof(line));
    CU_ASSERT_STRING_EQUAL(line, ":2\r");
    resp_line(a.port, "*2\r\n$3\r\nTTL\r\n$3\r\nold\r\n", line, sizeof(line));
    CU_ASSERT_STRING_EQUAL(line, ":-1\r"); /* a read through the EXPIRE opcode */
    char buf[512];
    /* an EXEC of reads runs */
    resp_until(a.port, "MULTI\r\nTTL old\r\nSTRLEN old\r\nGET old\r\nEXEC\r\n",
               "$2\r\nv1\r\n", buf, sizeof(buf));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "*3\r\n:-1\r\n:2\r\n$2\r\nv1\r\n"));
    /* a write queued in MULTI is refused, and EXEC aborts, as Redis */
    resp_until(a.port, "MULTI\r\nSET y 1\r\nEXEC\r\n", "EXECABORT", buf, sizeof(buf));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "+OK\r\n-MISCONF Errors writing to the data file"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "\r\n-EXECABORT "));

    flag_set(flag, 0);
    for (i = 0, rc = -1; i < 400 && rc != 0; i++) { /* the next sync succeeds */
        rc = kv_client_set(c, "new", 3, "v3", 2, NULL, NULL);
        if (rc != 0)
            usleep(10000);
    }
    CU_ASSERT_EQUAL(rc, 0);
    kv_client_close(c);
    char *log = kv_test_server_log(&a);
    CU_ASSERT_EQUAL(kv_test_server_stop(&a), 0);
    free(log);

    /* what was acknowledged is there after the restart; a file that had a failed sync is
     * not marked clean at the stop, so the start recovers it */
    restart_holds(&a, args, "new", "v3");
    unlink(data);
}

/* --sync always: a failed msync never lets the answers it covered leave as successes --
 * the server exits (status 1) without the clean mark, as Redis exits on an AOF fsync error
 * under appendfsync always; the next start recovers the file with every acknowledged
 * write. */
static void test_sync_failed_msync_always_exits(void)
{
    struct kv_test_server a = {0};
    char data[256], flag[300];
    snprintf(data, sizeof(data), "/dev/shm/kvsync-failx-%d.data", (int)getpid());
    snprintf(flag, sizeof(flag), "%s.fail", data);
    unlink(data);
    unlink(flag);
    const char *args[] = {"--data-file", data, "--sync", "always", NULL};
    CU_ASSERT_FATAL(start_failing(&a, args, flag) == 0);
    struct kv_client *c;
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", a.port, 5000, &c) == 0);
    CU_ASSERT_EQUAL(kv_client_set(c, "acked", 5, "v1", 2, NULL, NULL), 0);
    flag_set(flag, 1);
    int rc = kv_client_set(c, "lost", 4, "v2", 2, NULL, NULL);
    CU_ASSERT_NOT_EQUAL(rc, 0); /* never an OK */
    CU_ASSERT_NOT_EQUAL(rc, KV_ESTATUS);
    kv_client_close(c);
    flag_set(flag, 0);
    char *log = kv_test_server_log(&a);
    CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "msync of the data file failed under --sync always"));
    free(log);
    CU_ASSERT_EQUAL(kv_test_server_stop(&a), 1);

    const char *args2[] = {"--data-file", data, "--sync", "everysec", NULL};
    restart_holds(&a, args2, "acked", "v1");
    unlink(data);
}

/* KV_SYNC_BIG=1 (a figure for README, release build): what the torn-slot search costs a
 * recovery of a large store, against the recovery of the same store after a kill. */
static void test_sync_recovery_cost(void)
{
    if (!getenv("KV_SYNC_BIG"))
        return;
    struct kv_config c;
    cfg_file(&c, "big", 256u << 20);
    struct kv_shm_open_opts o = {.sync_interval_ms = 3600000};
    struct kv_shm_store *s = NULL;
    char err[512];
    CU_ASSERT_EQUAL_FATAL(kv_shm_store_open_ex(&c, &o, err, sizeof(err), &s), 0);
    const unsigned n = 1000000;
    for (unsigned k = 0; k < n; k++)
        put(s, "b", k, 0);
    CU_ASSERT_EQUAL_FATAL(kv_shm_sync_now(s), 0);
    uint8_t *a = file_read(c.data_file, c.memory);
    for (unsigned k = 0; k < n; k += 50)
        put(s, "b", k, 1);
    uint8_t *b = file_read(c.data_file, c.memory);
    kv_shm_store_close(s);
    srand(3);
    for (size_t p = 0; p < c.memory / PG; p++)
        if (rand() & 1)
            memcpy(b + p * PG, a + p * PG, PG);
    struct kv_config cc = c;
    cc.sync = KV_SYNC_NO;
    snprintf(cc.data_file, sizeof(cc.data_file), "%.1000s.img", c.data_file);
    file_write(cc.data_file, b, c.memory);
    CU_ASSERT_EQUAL_FATAL(kv_shm_store_open(&cc, err, sizeof(err), &s), 0);
    struct kv_shm_stats st;
    kv_shm_stats(s, &st);
    printf("\n  256 MiB, %u keys, 1 in 50 overwritten after the sync, pages mixed: recovery "
           "%.1f ms, %llu kept, %llu dropped, %llu restored\n", n, st.recovery_ns / 1e6,
           (unsigned long long)st.recovered_items, (unsigned long long)st.dropped_items,
           (unsigned long long)st.restored_items);
    unsigned bad = 0;
    char key[32];
    for (unsigned k = 0; k < n; k++) {
        int kl = snprintf(key, sizeof(key), "b%u", k);
        long g = held_gen(s, key, (size_t)kl, k);
        bad += !(g == 0 || (g == 1 && k % 50 == 0));
    }
    CU_ASSERT_EQUAL(bad, 0);
    kv_shm_store_close(s);
    /* the same store after a kill: recovery with nothing torn */
    file_write(cc.data_file, a, c.memory);
    CU_ASSERT_EQUAL_FATAL(kv_shm_store_open(&cc, err, sizeof(err), &s), 0);
    kv_shm_stats(s, &st);
    printf("  the synced image alone (what a kill leaves): recovery %.1f ms, %llu kept\n",
           st.recovery_ns / 1e6, (unsigned long long)st.recovered_items);
    kv_shm_store_close(s);
    unlink(cc.data_file);
    unlink(c.data_file);
    kv_mem_free(KV_MOD_TEST, a);
    kv_mem_free(KV_MOD_TEST, b);
}

/* --sync on the command line: the three names, the default, a bad one named. */
static void test_sync_option(void)
{
    struct kv_config c;
    char err[512];
    char *argv[4] = {"libevkv", "--sync", NULL, NULL};
    const char *names[] = {"no", "everysec", "always"};
    for (int i = 0; i < 3; i++) {
        argv[2] = (char *)names[i];
        kv_config_defaults(&c);
        CU_ASSERT_EQUAL(kv_options_parse(3, argv, &c, err, sizeof(err)), 0);
        CU_ASSERT_EQUAL(c.sync, (enum kv_sync)i);
    }
    kv_config_defaults(&c);
    CU_ASSERT_EQUAL(c.sync, KV_SYNC_EVERYSEC);
    argv[2] = "sometimes";
    CU_ASSERT_NOT_EQUAL(kv_options_parse(3, argv, &c, err, sizeof(err)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "--sync"));
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite su = CU_add_suite("shm_sync", NULL, NULL);
    if (!su)
        return 1;
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"test_sync_flips_keep_synced_writes", test_sync_flips_keep_synced_writes},
        {"test_sync_flips_without_deferral_lose_keys", test_sync_flips_without_deferral_lose_keys},
        {"test_sync_torn_copies_under_writers", test_sync_torn_copies_under_writers},
        {"test_sync_always_barrier", test_sync_always_barrier},
        {"test_sync_full_store_reclaims", test_sync_full_store_reclaims},
        {"test_sync_server_copies", test_sync_server_copies},
        {"test_sync_failed_msync_refuses_writes", test_sync_failed_msync_refuses_writes},
        {"test_sync_failed_msync_always_exits", test_sync_failed_msync_always_exits},
        {"test_sync_recovery_cost", test_sync_recovery_cost},
        {"test_sync_option", test_sync_option},
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
        fprintf(stderr, "test_shm_sync: heap bytes still held at exit\n");
        return 1;
    }
    return fails ? 1 : 0;
}
