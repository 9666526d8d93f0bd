/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_mem.c -- counted allocation, per-thread counters and the IO
 * buffer pool (src/mem/kv_mem.h).
 *
 * Counters are global to the process, so every check compares two snapshots
 * taken around the operation under test (deltas), never absolute values. All
 * allocations made here are counted against KV_MOD_TEST; the pool tests look
 * at KV_MOD_BUF and KV_MOD_POOL, which nothing else in this binary touches. */
#include <CUnit/CUnit.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv_err.h"
#include "kv_mem.h"
#include "kv_print.h"
#include "kv_test_util.h"

#define MIB (1u << 20)

static struct kv_mem_snapshot snap(void)
{
    struct kv_mem_snapshot s;

    memset(&s, 0xA5, sizeof(s));
    kv_mem_snapshot(&s);
    return s;
}

static int64_t d_bytes(const struct kv_mem_snapshot *a, const struct kv_mem_snapshot *b,
                       enum kv_mod m)
{
    return b->mod[m].bytes - a->mod[m].bytes;
}

static int64_t d_allocs(const struct kv_mem_snapshot *a, const struct kv_mem_snapshot *b,
                        enum kv_mod m)
{
    return (int64_t)(b->mod[m].allocs - a->mod[m].allocs);
}

static int64_t d_frees(const struct kv_mem_snapshot *a, const struct kv_mem_snapshot *b,
                       enum kv_mod m)
{
    return (int64_t)(b->mod[m].frees - a->mod[m].frees);
}

/* Asserts the delta of one module row. */
#define ASSERT_ROW(a, b, m, bytes, allocs, frees)                                                  \
    do {                                                                                           \
        CU_ASSERT_EQUAL(d_bytes(&(a), &(b), (m)), (int64_t)(bytes));                               \
        CU_ASSERT_EQUAL(d_allocs(&(a), &(b), (m)), (int64_t)(allocs));                             \
        CU_ASSERT_EQUAL(d_frees(&(a), &(b), (m)), (int64_t)(frees));                               \
    } while (0)

/* Every row but `except` unchanged (single-threaded tests only). */
static int others_unchanged(const struct kv_mem_snapshot *a, const struct kv_mem_snapshot *b,
                            enum kv_mod except)
{
    for (int m = 0; m < KV_MOD__COUNT; m++)
        if (m != (int)except && memcmp(&a->mod[m], &b->mod[m], sizeof(a->mod[m])) != 0)
            return 0;
    return 1;
}

/* ---- single-thread accounting -------------------------------------------- */

static void test_mem_alloc_free_exact(void)
{
    struct kv_mem_snapshot s0 = snap(), s1, s2;
    uint8_t *p = kv_mem_alloc(KV_MOD_TEST, 100);
    uint8_t *q;

    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    memset(p, 0x11, 100); /* the whole size is usable (ASan checks) */
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 100, 1, 0);
    CU_ASSERT(others_unchanged(&s0, &s1, KV_MOD_TEST));
    CU_ASSERT_EQUAL(kv_mem_held_total(&s1) - kv_mem_held_total(&s0), 100);

    q = kv_mem_alloc(KV_MOD_TEST, 7);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    CU_ASSERT(q != p);
    CU_ASSERT_EQUAL((uintptr_t)p % 16, 0); /* payload keeps malloc's alignment */
    CU_ASSERT_EQUAL((uintptr_t)q % 16, 0);
    kv_mem_free(KV_MOD_TEST, p);
    s2 = snap();
    ASSERT_ROW(s0, s2, KV_MOD_TEST, 7, 2, 1);
    kv_mem_free(KV_MOD_TEST, q);
    s2 = snap();
    ASSERT_ROW(s0, s2, KV_MOD_TEST, 0, 2, 2);
    CU_ASSERT(others_unchanged(&s0, &s2, KV_MOD_TEST));
}

static void test_mem_alloc_counts_per_module(void)
{
    struct kv_mem_snapshot s0 = snap(), s1, s2;
    void *a = kv_mem_alloc(KV_MOD_CLIENT, 33);
    void *b = kv_mem_alloc(KV_MOD_TEST, 44);

    CU_ASSERT_FATAL(a && b);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_CLIENT, 33, 1, 0);
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 44, 1, 0);
    kv_mem_free(KV_MOD_CLIENT, a);
    kv_mem_free(KV_MOD_TEST, b);
    s2 = snap();
    ASSERT_ROW(s0, s2, KV_MOD_CLIENT, 0, 1, 1);
    ASSERT_ROW(s0, s2, KV_MOD_TEST, 0, 1, 1);
}

static void test_mem_calloc_zeroes_and_counts(void)
{
    struct kv_mem_snapshot s0, s1;
    uint8_t *p;
    int nonzero = 0;

    /* dirty a block of the same size first, so a reused chunk would show */
    p = kv_mem_alloc(KV_MOD_TEST, 4000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    memset(p, 0xFF, 4000);
    kv_mem_free(KV_MOD_TEST, p);

    s0 = snap();
    p = kv_mem_calloc(KV_MOD_TEST, 4000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    for (int i = 0; i < 4000; i++)
        nonzero |= p[i];
    CU_ASSERT_EQUAL(nonzero, 0);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 4000, 1, 0);
    kv_mem_free(KV_MOD_TEST, p);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 0, 1, 1);
}

static void test_mem_realloc_counts(void)
{
    struct kv_mem_snapshot s0 = snap(), s1;
    uint8_t *p = kv_mem_realloc(KV_MOD_TEST, NULL, 50); /* = alloc */
    int same = 1;

    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 50, 1, 0);
    for (int i = 0; i < 50; i++)
        p[i] = (uint8_t)i;

    p = kv_mem_realloc(KV_MOD_TEST, p, 100000); /* grow: content kept */
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    for (int i = 0; i < 50; i++)
        same &= p[i] == (uint8_t)i;
    CU_ASSERT(same);
    memset(p + 50, 0x22, 100000 - 50);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 100000, 2, 1); /* one free + one alloc of the new size */

    p = kv_mem_realloc(KV_MOD_TEST, p, 10); /* shrink */
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    same = 1;
    for (int i = 0; i < 10; i++)
        same &= p[i] == (uint8_t)i;
    CU_ASSERT(same);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 10, 3, 2);

    kv_mem_free(KV_MOD_TEST, p);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 0, 3, 3);
    CU_ASSERT(others_unchanged(&s0, &s1, KV_MOD_TEST));
}

static void test_mem_strdup_counts(void)
{
    static const char src[] = "libevkv strdup";
    struct kv_mem_snapshot s0 = snap(), s1;
    char *d = kv_mem_strdup(KV_MOD_TEST, src);
    char *e;

    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT(d != src);
    CU_ASSERT_STRING_EQUAL(d, src);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, sizeof(src), 1, 0); /* strlen + 1 */
    e = kv_mem_strdup(KV_MOD_TEST, "");
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_EQUAL(e[0], '\0');
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, sizeof(src) + 1, 2, 0);
    kv_mem_free(KV_MOD_TEST, d);
    kv_mem_free(KV_MOD_TEST, e);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 0, 2, 2);
}

static void test_mem_free_null_noop(void)
{
    struct kv_mem_snapshot s0 = snap(), s1;

    kv_mem_free(KV_MOD_TEST, NULL);
    kv_mem_free(KV_MOD_BUF, NULL);
    kv_mem_buf_put(NULL, 4096);
    s1 = snap();
    CU_ASSERT(memcmp(s0.mod, s1.mod, sizeof(s0.mod)) == 0);
}

/* Impossible sizes fail with NULL (no abort) and count nothing. Only sizes
 * the header overflow check catches are used: a real huge malloc would trip
 * ASan's allocation-size check. */
static void test_mem_alloc_overflow_fails(void)
{
    struct kv_mem_snapshot s0 = snap(), s1;
    uint8_t *p;

    CU_ASSERT_PTR_NULL(kv_mem_alloc(KV_MOD_TEST, SIZE_MAX));
    CU_ASSERT_PTR_NULL(kv_mem_alloc(KV_MOD_TEST, SIZE_MAX - 15));
    CU_ASSERT_PTR_NULL(kv_mem_calloc(KV_MOD_TEST, SIZE_MAX));
    p = kv_mem_alloc(KV_MOD_TEST, 8);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    memcpy(p, "1234567", 8);
    CU_ASSERT_PTR_NULL(kv_mem_realloc(KV_MOD_TEST, p, SIZE_MAX)); /* p stays valid */
    CU_ASSERT_STRING_EQUAL((char *)p, "1234567");
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 8, 1, 0);
    kv_mem_free(KV_MOD_TEST, p);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 0, 1, 1);
}

#ifndef NDEBUG
/* Runs fn in a child; returns the signal that ended it, or 0. */
static int child_signal(void (*fn)(void))
{
    pid_t pid = fork();
    int status;

    if (pid == 0) {
        int null = open("/dev/null", 1);
        if (null >= 0)
            dup2(null, 2); /* keep the assert message out of the report */
        signal(SIGABRT, SIG_DFL);
        fn();
        _exit(0);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void free_wrong_module(void)
{
    void *p = kv_mem_alloc(KV_MOD_TEST, 10);
    kv_mem_free(KV_MOD_CLIENT, p);
}

static void free_right_module(void)
{
    void *p = kv_mem_alloc(KV_MOD_TEST, 10);
    kv_mem_free(KV_MOD_TEST, p);
}

static void test_mem_free_wrong_module_aborts(void)
{
    CU_ASSERT_EQUAL(child_signal(free_wrong_module), SIGABRT);
    CU_ASSERT_EQUAL(child_signal(free_right_module), 0);
}
#endif

/* ---- threads ------------------------------------------------------------- */

#define NTHREADS 4
#define ITERS    20000
#define HOLD     16

struct churn_arg {
    unsigned seed;
    pthread_barrier_t *barrier; /* borrowed; NULL = no mid-run checkpoint */
    int64_t held_at_barrier;    /* out: bytes this thread held at the checkpoint */
    int failed;                 /* out */
};

/* Allocates and frees ITERS blocks of varied sizes, holding up to HOLD at
 * once; at the barrier (if any) it holds exactly HOLD blocks. */
static void *churn_main(void *arg)
{
    struct churn_arg *a = arg;
    void *held[HOLD] = {0};
    size_t sizes[HOLD] = {0};

    for (int i = 0; i < ITERS; i++) {
        int k = (int)(rand_r(&a->seed) % HOLD);

        if (held[k]) {
            kv_mem_free(KV_MOD_TEST, held[k]);
            held[k] = NULL;
        }
        sizes[k] = 1 + rand_r(&a->seed) % 3000;
        held[k] = kv_mem_alloc(KV_MOD_TEST, sizes[k]);
        if (!held[k]) {
            a->failed = 1;
            return NULL;
        }
        ((uint8_t *)held[k])[sizes[k] - 1] = 1;
    }
    if (a->barrier) {
        a->held_at_barrier = 0;
        for (int k = 0; k < HOLD; k++)
            a->held_at_barrier += held[k] ? (int64_t)sizes[k] : 0;
        pthread_barrier_wait(a->barrier); /* main snapshots now */
        pthread_barrier_wait(a->barrier);
    }
    for (int k = 0; k < HOLD; k++)
        kv_mem_free(KV_MOD_TEST, held[k]);
    return NULL;
}

static void test_mem_threads_concurrent_exact(void)
{
    pthread_t t[NTHREADS];
    struct churn_arg a[NTHREADS];
    pthread_barrier_t barrier;
    struct kv_mem_snapshot s0 = snap(), s1, s2;
    int64_t held = 0;

    pthread_barrier_init(&barrier, NULL, NTHREADS + 1);
    for (int i = 0; i < NTHREADS; i++) {
        a[i] = (struct churn_arg){.seed = 100u + (unsigned)i, .barrier = &barrier};
        CU_ASSERT_FATAL(pthread_create(&t[i], NULL, churn_main, &a[i]) == 0);
    }
    pthread_barrier_wait(&barrier);
    /* all threads alive, each holding HOLD blocks: their slots are summed */
    s1 = snap();
    for (int i = 0; i < NTHREADS; i++)
        held += a[i].held_at_barrier;
    ASSERT_ROW(s0, s1, KV_MOD_TEST, held, NTHREADS * ITERS, NTHREADS * (ITERS - HOLD));
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(a[i].failed, 0);
    }
    pthread_barrier_destroy(&barrier);
    /* threads gone: their counts were folded, none lost */
    s2 = snap();
    ASSERT_ROW(s0, s2, KV_MOD_TEST, 0, NTHREADS * ITERS, NTHREADS * ITERS);
}

/* ---- cross-thread free: a producer allocates, a consumer frees ---------- */

#define XFER_N 50000
#define RING   256

struct xfer {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    void *ring[RING];       /* guarded by lock */
    size_t head, tail;      /* guarded by lock */
    int64_t bytes_produced; /* producer only */
};

static void *producer_main(void *arg)
{
    struct xfer *x = arg;
    unsigned seed = 7;

    for (int i = 0; i < XFER_N; i++) {
        size_t n = 1 + rand_r(&seed) % 512;
        void *p = kv_mem_alloc(KV_MOD_TEST, n);

        x->bytes_produced += (int64_t)n;
        pthread_mutex_lock(&x->lock);
        while (x->tail - x->head == RING)
            pthread_cond_wait(&x->cond, &x->lock);
        x->ring[x->tail++ % RING] = p;
        pthread_cond_broadcast(&x->cond);
        pthread_mutex_unlock(&x->lock);
    }
    return NULL;
}

static void *consumer_main(void *arg)
{
    struct xfer *x = arg;

    for (int i = 0; i < XFER_N; i++) {
        void *p;

        pthread_mutex_lock(&x->lock);
        while (x->tail == x->head)
            pthread_cond_wait(&x->cond, &x->lock);
        p = x->ring[x->head++ % RING];
        pthread_cond_broadcast(&x->cond);
        pthread_mutex_unlock(&x->lock);
        kv_mem_free(KV_MOD_TEST, p);
    }
    return NULL;
}

static void *free_ten_main(void *arg)
{
    void **blocks = arg;

    for (int i = 0; i < 10; i++)
        kv_mem_free(KV_MOD_TEST, blocks[i]);
    return NULL;
}

static void test_mem_cross_thread_free_exact(void)
{
    struct xfer x;
    pthread_t prod, cons;
    struct kv_mem_snapshot s0 = snap(), s1;

    memset(&x, 0, sizeof(x));
    pthread_mutex_init(&x.lock, NULL);
    pthread_cond_init(&x.cond, NULL);
    CU_ASSERT_FATAL(pthread_create(&cons, NULL, consumer_main, &x) == 0);
    CU_ASSERT_FATAL(pthread_create(&prod, NULL, producer_main, &x) == 0);
    pthread_join(prod, NULL);
    pthread_join(cons, NULL);
    s1 = snap();
    CU_ASSERT(x.bytes_produced > 0);
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 0, XFER_N, XFER_N);
    pthread_cond_destroy(&x.cond);
    pthread_mutex_destroy(&x.lock);

    /* allocated in main, freed elsewhere */
    {
        void *blocks[10];
        struct kv_mem_snapshot a = snap(), b;

        for (int i = 0; i < 10; i++)
            blocks[i] = kv_mem_alloc(KV_MOD_TEST, 100 + (size_t)i);
        b = snap();
        ASSERT_ROW(a, b, KV_MOD_TEST, 1045, 10, 0);
        /* freed by a thread that then exits */
        {
            pthread_t th;
            CU_ASSERT_FATAL(pthread_create(&th, NULL, free_ten_main, blocks) == 0);
            pthread_join(th, NULL);
        }
        b = snap();
        ASSERT_ROW(a, b, KV_MOD_TEST, 0, 10, 10);
    }
}

/* ---- a thread that exits holding memory and stats ------------------------ */

struct exit_arg {
    void *blocks[8];
    size_t sizes[8];
};

static void *exit_main(void *arg)
{
    struct exit_arg *a = arg;

    for (int i = 0; i < 8; i++) {
        a->sizes[i] = 1000 * (size_t)(i + 1);
        a->blocks[i] = kv_mem_alloc(KV_MOD_TEST, a->sizes[i]);
    }
    kv_mem_free(KV_MOD_TEST, a->blocks[7]); /* one freed by its own thread */
    a->blocks[7] = NULL;
    kv_mem_stat_add(KV_STAT_DROPPED, 13);
    return NULL;
}

static void *free_list_main(void *arg)
{
    struct exit_arg *a = arg;

    for (int i = 0; i < 8; i++)
        kv_mem_free(KV_MOD_TEST, a->blocks[i]);
    return NULL;
}

static void test_mem_thread_exit_folds_counts(void)
{
    struct exit_arg a;
    pthread_t t;
    struct kv_mem_snapshot s0 = snap(), s1, s2;

    memset(&a, 0, sizeof(a));
    CU_ASSERT_FATAL(pthread_create(&t, NULL, exit_main, &a) == 0);
    pthread_join(t, NULL);
    s1 = snap();
    /* 1000+...+7000 still held; 8 allocs, 1 free; 13 dropped */
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 28000, 8, 1);
    CU_ASSERT_EQUAL(s1.stat[KV_STAT_DROPPED] - s0.stat[KV_STAT_DROPPED], 13);

    /* freed by another short-lived thread: also folded on its exit */
    CU_ASSERT_FATAL(pthread_create(&t, NULL, free_list_main, &a) == 0);
    pthread_join(t, NULL);
    s2 = snap();
    ASSERT_ROW(s0, s2, KV_MOD_TEST, 0, 8, 8);
    CU_ASSERT_EQUAL(s2.stat[KV_STAT_DROPPED] - s0.stat[KV_STAT_DROPPED], 13);
}

/* Many short-lived threads, one after another and overlapping. */
static void *short_main(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;

    for (int i = 0; i < 200; i++) {
        void *p = kv_mem_alloc(KV_MOD_TEST, 1 + rand_r(&seed) % 100);
        kv_mem_free(KV_MOD_TEST, p);
    }
    kv_mem_stat_add(KV_STAT_CONNS_CLOSED, 1);
    return NULL;
}

static void test_mem_short_lived_threads_exact(void)
{
    struct kv_mem_snapshot s0 = snap(), s1;
    pthread_t t[8];

    for (int round = 0; round < 25; round++) {
        for (int i = 0; i < 8; i++)
            CU_ASSERT_FATAL(
                pthread_create(&t[i], NULL, short_main, (void *)(uintptr_t)(round * 8 + i)) == 0);
        for (int i = 0; i < 8; i++)
            pthread_join(t[i], NULL);
    }
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 0, 200 * 200, 200 * 200);
    CU_ASSERT_EQUAL(s1.stat[KV_STAT_CONNS_CLOSED] - s0.stat[KV_STAT_CONNS_CLOSED], 200);
}

/* ---- snapshots while others run ------------------------------------------ */

struct watch_arg {
    volatile int stop;
    const struct kv_mem_snapshot *base;
    long snapshots;
    int regressed; /* a monotonic counter went backwards */
};

static void *watch_main(void *arg)
{
    struct watch_arg *w = arg;
    struct kv_mem_snapshot prev = *w->base, cur;

    while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE)) {
        char text[4096];

        kv_mem_snapshot(&cur);
        /* allocs, frees and event counters only grow, also across thread exits */
        if (cur.mod[KV_MOD_TEST].allocs < prev.mod[KV_MOD_TEST].allocs ||
            cur.mod[KV_MOD_TEST].frees < prev.mod[KV_MOD_TEST].frees ||
            cur.stat[KV_STAT_REQUESTS] < prev.stat[KV_STAT_REQUESTS])
            w->regressed = 1;
        kv_mem_format(&cur, text, sizeof(text));
        prev = cur;
        w->snapshots++;
    }
    return NULL;
}

static void *churn_exit_main(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;

    for (int i = 0; i < 2000; i++) {
        void *p = kv_mem_alloc(KV_MOD_TEST, 1 + rand_r(&seed) % 256);
        kv_mem_stat_add(KV_STAT_REQUESTS, 1);
        kv_mem_free(KV_MOD_TEST, p);
    }
    return NULL;
}

static void test_mem_snapshot_under_load(void)
{
    struct kv_mem_snapshot s0 = snap(), s1;
    struct watch_arg w = {.base = &s0};
    struct churn_arg a[NTHREADS];
    pthread_t watcher, t[NTHREADS], shorts[4];

    CU_ASSERT_FATAL(pthread_create(&watcher, NULL, watch_main, &w) == 0);
    for (int i = 0; i < NTHREADS; i++) {
        a[i] = (struct churn_arg){.seed = 900u + (unsigned)i};
        CU_ASSERT_FATAL(pthread_create(&t[i], NULL, churn_main, &a[i]) == 0);
    }
    /* threads starting and ending while snapshots run */
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 4; i++)
            CU_ASSERT_FATAL(pthread_create(&shorts[i], NULL, churn_exit_main,
                                           (void *)(uintptr_t)(round * 4 + i)) == 0);
        for (int i = 0; i < 4; i++)
            pthread_join(shorts[i], NULL);
    }
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(t[i], NULL);
        CU_ASSERT_EQUAL(a[i].failed, 0);
    }
    __atomic_store_n(&w.stop, 1, __ATOMIC_RELEASE);
    pthread_join(watcher, NULL);
    CU_ASSERT(w.snapshots > 0);
    CU_ASSERT_EQUAL(w.regressed, 0);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_TEST, 0, NTHREADS * ITERS + 40 * 2000, NTHREADS * ITERS + 40 * 2000);
    CU_ASSERT_EQUAL(s1.stat[KV_STAT_REQUESTS] - s0.stat[KV_STAT_REQUESTS], 40 * 2000);
}

/* ---- event counters ---------------------------------------------------------- */

struct stat_arg {
    int idx;
    pthread_barrier_t *barrier; /* borrowed */
};

static void *stat_main(void *arg)
{
    struct stat_arg *a = arg;

    for (int i = 0; i < 10000; i++) {
        kv_mem_stat_add(KV_STAT_BYTES_IN, (uint64_t)(a->idx + 1));
        kv_mem_stat_add(KV_STAT_RESPONSES, 1);
    }
    kv_mem_stat_add(KV_STAT_BYTES_OUT, 1ull << 40); /* large values are not truncated */
    pthread_barrier_wait(a->barrier);
    pthread_barrier_wait(a->barrier);
    return NULL;
}

static void test_mem_stat_add_summed_across_threads(void)
{
    struct kv_mem_snapshot s0 = snap(), s1, s2;
    pthread_barrier_t barrier;
    struct stat_arg a[NTHREADS];
    pthread_t t[NTHREADS];
    uint64_t want_in = 0;

    pthread_barrier_init(&barrier, NULL, NTHREADS + 1);
    for (int i = 0; i < NTHREADS; i++) {
        a[i] = (struct stat_arg){.idx = i, .barrier = &barrier};
        want_in += 10000ull * (uint64_t)(i + 1);
        CU_ASSERT_FATAL(pthread_create(&t[i], NULL, stat_main, &a[i]) == 0);
    }
    kv_mem_stat_add(KV_STAT_CONNS_REJECTED, 3); /* main thread too */
    pthread_barrier_wait(&barrier);
    s1 = snap(); /* threads alive */
    CU_ASSERT_EQUAL(s1.stat[KV_STAT_BYTES_IN] - s0.stat[KV_STAT_BYTES_IN], want_in);
    CU_ASSERT_EQUAL(s1.stat[KV_STAT_RESPONSES] - s0.stat[KV_STAT_RESPONSES], NTHREADS * 10000);
    CU_ASSERT_EQUAL(s1.stat[KV_STAT_BYTES_OUT] - s0.stat[KV_STAT_BYTES_OUT],
                    (uint64_t)NTHREADS << 40);
    CU_ASSERT_EQUAL(s1.stat[KV_STAT_CONNS_REJECTED] - s0.stat[KV_STAT_CONNS_REJECTED], 3);
    CU_ASSERT_EQUAL(s1.stat[KV_STAT_PROTO_ERRORS], s0.stat[KV_STAT_PROTO_ERRORS]);
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&barrier);
    s2 = snap(); /* threads gone: same sums */
    CU_ASSERT(memcmp(s1.stat, s2.stat, sizeof(s1.stat)) == 0);
}

/* ---- buffer pool --------------------------------------------------------------- */

static void test_mem_buf_capacity_classes(void)
{
    static const struct {
        size_t size, cap;
    } cases[] = {
        {1, 4096},
        {4095, 4096},
        {4096, 4096},
        {4097, 8192},
        {8192, 8192},
        {8193, 16384},
        {65535, 65536},
        {65537, 131072},
        {MIB - 1, MIB},
        {MIB, MIB},
        {MIB + 1, MIB + 1}, /* above the classes: straight to the heap, exact */
        {3 * MIB + 5, 3 * MIB + 5},
    };

    kv_mem_pool_drain();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct kv_mem_snapshot s0 = snap(), s1, s2;
        size_t cap = 0;
        uint8_t *b = kv_mem_buf_get(cases[i].size, &cap);

        CU_ASSERT_PTR_NOT_NULL_FATAL(b);
        CU_ASSERT_EQUAL(cap, cases[i].cap);
        memset(b, 0x33, cap); /* the whole capacity is usable (ASan checks) */
        s1 = snap();
        ASSERT_ROW(s0, s1, KV_MOD_BUF, cases[i].cap, 1, 0);
        ASSERT_ROW(s0, s1, KV_MOD_POOL, 0, 0, 0); /* the cache was empty */
        kv_mem_buf_put(b, cap);
        s2 = snap();
        ASSERT_ROW(s0, s2, KV_MOD_BUF, 0, 1, 1);
        if (cases[i].cap > KV_POOL_MAX) {
            ASSERT_ROW(s0, s2, KV_MOD_POOL, 0, 0, 0); /* heap buffers are not parked */
        } else {
            ASSERT_ROW(s0, s2, KV_MOD_POOL, cases[i].cap, 1, 0);
        }
        kv_mem_pool_drain();
    }
}

static void test_mem_buf_reuse_from_cache(void)
{
    struct kv_mem_snapshot s0, s1;
    size_t cap1 = 0, cap2 = 0, cap3 = 0;
    uint8_t *a, *b, *c;

    kv_mem_pool_drain();
    s0 = snap();
    a = kv_mem_buf_get(5000, &cap1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_EQUAL(cap1, 8192);
    kv_mem_buf_put(a, cap1);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_BUF, 0, 1, 1);
    ASSERT_ROW(s0, s1, KV_MOD_POOL, 8192, 1, 0); /* parked, counted as POOL */

    /* a buffer of another class does not take it */
    c = kv_mem_buf_get(100, &cap3);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(cap3, 4096);
    CU_ASSERT(c != a);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_POOL, 8192, 1, 0);

    /* the same class does: same buffer back, out of POOL into BUF */
    b = kv_mem_buf_get(8000, &cap2);
    CU_ASSERT(b == a);
    CU_ASSERT_EQUAL(cap2, 8192);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_POOL, 0, 1, 1);
    ASSERT_ROW(s0, s1, KV_MOD_BUF, 8192 + 4096, 3, 1);
    memset(b, 0x44, cap2);

    kv_mem_buf_put(b, cap2);
    kv_mem_buf_put(c, cap3);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_BUF, 0, 3, 3);
    ASSERT_ROW(s0, s1, KV_MOD_POOL, 8192 + 4096, 3, 1);
    kv_mem_pool_drain();
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_POOL, 0, 3, 3);
    ASSERT_ROW(s0, s1, KV_MOD_BUF, 0, 3, 3);
}

static void test_mem_pool_drain_returns_pool_to_zero(void)
{
    void *bufs[20];
    size_t caps[20];
    int64_t parked = 0;
    struct kv_mem_snapshot s0, s1;

    kv_mem_pool_drain();
    s0 = snap();
    for (int i = 0; i < 20; i++) {
        bufs[i] = kv_mem_buf_get((size_t)KV_POOL_MIN << (i % 6), &caps[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bufs[i]);
    }
    for (int i = 0; i < 20; i++) {
        kv_mem_buf_put(bufs[i], caps[i]);
        parked += (int64_t)caps[i];
    }
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_POOL, parked, 20, 0);
    kv_mem_pool_drain();
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_POOL, 0, 20, 20);
    ASSERT_ROW(s0, s1, KV_MOD_BUF, 0, 20, 20);
    kv_mem_pool_drain(); /* draining an empty cache changes nothing */
    s0 = snap();
    ASSERT_ROW(s1, s0, KV_MOD_POOL, 0, 0, 0);
}

/* The per-thread cache has a byte cap: the excess goes back to the heap. */
static void test_mem_pool_cache_bounded(void)
{
    void *bufs[12];
    size_t caps[12];
    struct kv_mem_snapshot s0, s1;

    kv_mem_pool_drain();
    s0 = snap();
    for (int i = 0; i < 12; i++) {
        bufs[i] = kv_mem_buf_get(KV_POOL_MAX, &caps[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(bufs[i]);
    }
    for (int i = 0; i < 12; i++)
        kv_mem_buf_put(bufs[i], caps[i]);
    s1 = snap();
    ASSERT_ROW(s0, s1, KV_MOD_BUF, 0, 12, 12);
    CU_ASSERT(d_bytes(&s0, &s1, KV_MOD_POOL) > 0);
    CU_ASSERT(d_bytes(&s0, &s1, KV_MOD_POOL) < 12 * (int64_t)KV_POOL_MAX);
    CU_ASSERT_EQUAL(d_bytes(&s0, &s1, KV_MOD_POOL), d_allocs(&s0, &s1, KV_MOD_POOL) * KV_POOL_MAX);
    kv_mem_pool_drain();
    s1 = snap();
    CU_ASSERT_EQUAL(d_bytes(&s0, &s1, KV_MOD_POOL), 0);
}

struct pool_thread_arg {
    void *keep; /* out: a buffer taken in the thread, put back by main */
    size_t keep_cap;
};

static void *pool_thread_main(void *arg)
{
    struct pool_thread_arg *a = arg;

    for (int i = 0; i < 100; i++) {
        size_t cap;
        void *b = kv_mem_buf_get(1000u * (size_t)(i % 40 + 1), &cap);
        kv_mem_buf_put(b, cap);
    }
    a->keep = kv_mem_buf_get(20000, &a->keep_cap);
    return NULL; /* exits with buffers in its cache */
}

/* A thread's cache is drained when it exits; a buffer may be put back by
 * another thread than the one that got it. */
static void test_mem_pool_thread_exit_drains(void)
{
    struct pool_thread_arg a = {0};
    struct kv_mem_snapshot s0, s1;
    pthread_t t;

    kv_mem_pool_drain();
    s0 = snap();
    CU_ASSERT_FATAL(pthread_create(&t, NULL, pool_thread_main, &a) == 0);
    pthread_join(t, NULL);
    s1 = snap();
    CU_ASSERT(d_allocs(&s0, &s1, KV_MOD_POOL) > 0); /* the cache was used */
    CU_ASSERT_EQUAL(d_bytes(&s0, &s1, KV_MOD_POOL), 0);
    CU_ASSERT_EQUAL(d_allocs(&s0, &s1, KV_MOD_POOL), d_frees(&s0, &s1, KV_MOD_POOL));
    CU_ASSERT_PTR_NOT_NULL_FATAL(a.keep);
    CU_ASSERT_EQUAL(a.keep_cap, 32768);
    CU_ASSERT_EQUAL(d_bytes(&s0, &s1, KV_MOD_BUF), 32768);
    kv_mem_buf_put(a.keep, a.keep_cap); /* cross-thread put */
    s1 = snap();
    CU_ASSERT_EQUAL(d_bytes(&s0, &s1, KV_MOD_BUF), 0);
    CU_ASSERT_EQUAL(d_allocs(&s0, &s1, KV_MOD_BUF), d_frees(&s0, &s1, KV_MOD_BUF));
    kv_mem_pool_drain();
    s1 = snap();
    CU_ASSERT_EQUAL(d_bytes(&s0, &s1, KV_MOD_POOL), 0);
}

/* ---- names, totals, text ------------------------------------------------------- */

static void test_mem_names(void)
{
    static const char *const mods[KV_MOD__COUNT] = {
        "BUF",  "POOL",   "MESSAGE", "REQUEST", "PACKET", "CONNECTION", "QUEUE",
        "TASK", "THREAD", "PROTO",   "SHM",     "CLIENT", "SERVER",     "TEST",   "RING",
    };

    for (int i = 0; i < KV_MOD__COUNT; i++) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(kv_mem_mod_name((enum kv_mod)i));
        CU_ASSERT_STRING_EQUAL(kv_mem_mod_name((enum kv_mod)i), mods[i]);
    }
    CU_ASSERT_STRING_EQUAL(kv_mem_mod_name(KV_MOD__COUNT), "?");
    CU_ASSERT_STRING_EQUAL(kv_mem_mod_name((enum kv_mod) - 1), "?");
    for (int i = 0; i < KV_STAT__COUNT; i++) {
        const char *n = kv_mem_stat_name((enum kv_stat)i);

        CU_ASSERT_PTR_NOT_NULL_FATAL(n);
        CU_ASSERT(n[0] != '\0' && strcmp(n, "?") != 0);
        for (int j = 0; j < i; j++)
            CU_ASSERT(strcmp(n, kv_mem_stat_name((enum kv_stat)j)) != 0);
    }
    CU_ASSERT_STRING_EQUAL(kv_mem_stat_name(KV_STAT__COUNT), "?");
}

static void test_mem_held_total(void)
{
    struct kv_mem_snapshot s, s0, s1;
    void *p;

    memset(&s, 0, sizeof(s));
    CU_ASSERT_EQUAL(kv_mem_held_total(&s), 0);
    for (int i = 0; i < KV_MOD__COUNT; i++)
        s.mod[i].bytes = (int64_t)(i + 1) * 1000;
    s.mod[KV_MOD_POOL].bytes = -500; /* rows may be negative mid-transfer */
    s.mod[KV_MOD_TEST].allocs = 99;  /* counts do not enter the total */
    CU_ASSERT_EQUAL(kv_mem_held_total(&s),
                    (int64_t)KV_MOD__COUNT * (KV_MOD__COUNT + 1) / 2 * 1000 - 2000 - 500);

    s0 = snap();
    p = kv_mem_alloc(KV_MOD_TEST, 12345);
    s1 = snap();
    CU_ASSERT_EQUAL(kv_mem_held_total(&s1) - kv_mem_held_total(&s0), 12345);
    kv_mem_free(KV_MOD_TEST, p);
    s1 = snap();
    CU_ASSERT_EQUAL(kv_mem_held_total(&s1), kv_mem_held_total(&s0));
}

/* Finds the line starting with `name` followed by a blank. */
static const char *find_row(const char *text, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, n) == 0 && p[n] == ' ')
            return p;
    return NULL;
}

static void test_mem_format_contents(void)
{
    struct kv_mem_snapshot s;
    char text[8192];
    size_t len;
    const char *row;
    long long b;
    unsigned long long a, f;

    memset(&s, 0, sizeof(s));
    for (int i = 0; i < KV_MOD__COUNT; i++) {
        s.mod[i].bytes = 1000 + i;
        s.mod[i].allocs = 50 + (uint64_t)i;
        s.mod[i].frees = 20 + (uint64_t)i;
    }
    s.mod[KV_MOD_TEST].bytes = 987654321;
    s.mod[KV_MOD_TEST].allocs = 4242;
    s.mod[KV_MOD_TEST].frees = 4141;
    s.mod[KV_MOD_CONNECTION].allocs = 10;
    s.mod[KV_MOD_CONNECTION].frees = 7;
    s.mod[KV_MOD_MESSAGE].allocs = 100;
    s.mod[KV_MOD_MESSAGE].frees = 100;
    s.mod[KV_MOD_REQUEST].allocs = 9;
    s.mod[KV_MOD_REQUEST].frees = 4;
    for (int i = 0; i < KV_STAT__COUNT; i++)
        s.stat[i] = 7000 + (uint64_t)i;

    memset(text, 'X', sizeof(text));
    len = kv_mem_format(&s, text, sizeof(text));
    CU_ASSERT_FATAL(len > 0 && len < sizeof(text));
    CU_ASSERT_EQUAL(text[len], '\0');
    CU_ASSERT_EQUAL(strlen(text), len);

    for (int i = 0; i < KV_MOD__COUNT; i++)
        CU_ASSERT_PTR_NOT_NULL(find_row(text, kv_mem_mod_name((enum kv_mod)i)));
    row = find_row(text, "TEST");
    CU_ASSERT_PTR_NOT_NULL_FATAL(row);
    CU_ASSERT_EQUAL(sscanf(row, "TEST %lld %llu %llu", &b, &a, &f), 3);
    CU_ASSERT_EQUAL(b, 987654321);
    CU_ASSERT_EQUAL(a, 4242);
    CU_ASSERT_EQUAL(f, 4141);
    row = find_row(text, "TOTAL");
    CU_ASSERT_PTR_NOT_NULL_FATAL(row);
    CU_ASSERT_EQUAL(sscanf(row, "TOTAL %lld", &b), 1);
    CU_ASSERT_EQUAL(b, kv_mem_held_total(&s));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "connections 3,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "messages 0,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "requests 5\n"));
    for (int i = 0; i < KV_STAT__COUNT; i++) {
        char want[64];

        row = find_row(text, kv_mem_stat_name((enum kv_stat)i));
        CU_ASSERT_PTR_NOT_NULL_FATAL(row);
        snprintf(want, sizeof(want), "%s %llu\n", kv_mem_stat_name((enum kv_stat)i),
                 7000ull + (unsigned long long)i);
        CU_ASSERT(strncmp(row, want, strlen(want)) == 0);
    }
    /* a live snapshot formats too, with every module and the total */
    kv_mem_snapshot(&s);
    len = kv_mem_format(&s, text, sizeof(text));
    CU_ASSERT(len > 0 && len < sizeof(text) - 1);
    CU_ASSERT_PTR_NOT_NULL(find_row(text, "TOTAL"));
    CU_ASSERT_PTR_NOT_NULL(find_row(text, "POOL"));
}

static void test_mem_format_truncates(void)
{
    struct kv_mem_snapshot s;
    char full[8192], small[64];
    size_t len, n;

    kv_mem_snapshot(&s);
    len = kv_mem_format(&s, full, sizeof(full));
    CU_ASSERT_FATAL(len > 100 && len < sizeof(full) - 1);

    memset(small, 'X', sizeof(small));
    CU_ASSERT_EQUAL(kv_mem_format(&s, small, 0), 0);
    CU_ASSERT_EQUAL(small[0], 'X'); /* cap 0: nothing written */
    CU_ASSERT_EQUAL(kv_mem_format(&s, small, 1), 0);
    CU_ASSERT_EQUAL(small[0], '\0');
    CU_ASSERT_EQUAL(small[1], 'X');
    for (size_t cap = 2; cap <= 40; cap += 7) {
        memset(small, 'X', sizeof(small));
        n = kv_mem_format(&s, small, cap);
        CU_ASSERT_EQUAL(n, cap - 1);
        CU_ASSERT_EQUAL(strlen(small), cap - 1);
        CU_ASSERT(strncmp(small, full, cap - 1) == 0);
        CU_ASSERT_EQUAL(small[cap], 'X'); /* nothing past cap */
    }
    /* exactly enough, and one short */
    {
        char *buf = kv_mem_alloc(KV_MOD_TEST, len + 1);

        CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
        CU_ASSERT_EQUAL(kv_mem_format(&s, buf, len + 1), len);
        CU_ASSERT_STRING_EQUAL(buf, full);
        CU_ASSERT_EQUAL(kv_mem_format(&s, buf, len), len - 1);
        CU_ASSERT(strncmp(buf, full, len - 1) == 0 && buf[len - 1] == '\0');
        kv_mem_free(KV_MOD_TEST, buf);
    }
}

/* The small-object cache: in use counts under the module, cached under
 * POOL, reused without malloc, drained to zero. */
static void test_mem_obj_cache_counts_and_reuse(void)
{
    struct kv_mem_snapshot a, b, c;
    void *p, *q;

    kv_mem_pool_drain();
    kv_mem_snapshot(&a);
    p = kv_mem_obj_get(KV_MOD_TEST, 200); /* class of 256 bytes */
    CU_ASSERT_FATAL(p != NULL);
    memset(p, 0xab, 200);
    kv_mem_snapshot(&b);
    CU_ASSERT_EQUAL(b.mod[KV_MOD_TEST].bytes - a.mod[KV_MOD_TEST].bytes, 256);
    CU_ASSERT_EQUAL(b.mod[KV_MOD_TEST].allocs - a.mod[KV_MOD_TEST].allocs, 1);
    kv_mem_obj_put(KV_MOD_TEST, p, 200);
    kv_mem_snapshot(&c);
    CU_ASSERT_EQUAL(c.mod[KV_MOD_TEST].bytes, a.mod[KV_MOD_TEST].bytes);
    CU_ASSERT_EQUAL(c.mod[KV_MOD_TEST].frees - a.mod[KV_MOD_TEST].frees, 1);
    CU_ASSERT_EQUAL(c.mod[KV_MOD_POOL].bytes - a.mod[KV_MOD_POOL].bytes, 256);
    q = kv_mem_obj_get(KV_MOD_TEST, 250); /* same class: the cached one */
    CU_ASSERT_PTR_EQUAL(q, p);
    kv_mem_obj_put(KV_MOD_TEST, q, 250);
    q = kv_mem_obj_get(KV_MOD_TEST, 5000); /* above KV_OBJ_MAX: plain allocation */
    CU_ASSERT_FATAL(q != NULL);
    kv_mem_obj_put(KV_MOD_TEST, q, 5000);
    kv_mem_pool_drain();
    kv_mem_snapshot(&c);
    CU_ASSERT_EQUAL(c.mod[KV_MOD_POOL].bytes, a.mod[KV_MOD_POOL].bytes);
    CU_ASSERT_EQUAL(c.mod[KV_MOD_TEST].bytes, a.mod[KV_MOD_TEST].bytes);
}

/* Every KV_E* code has its own name; others are "unknown error". */
static void test_mem_error_names(void)
{
    for (int e = KV_EAGAIN; e >= KV_ESTATUS; e--) {
        const char *n = kv_strerror(e);

        CU_ASSERT_PTR_NOT_NULL_FATAL(n);
        CU_ASSERT(strcmp(n, "unknown error") != 0);
        for (int f = KV_EAGAIN; f > e; f--)
            CU_ASSERT(strcmp(n, kv_strerror(f)) != 0);
    }
    CU_ASSERT_STRING_EQUAL(kv_strerror(-999), "unknown error");
    CU_ASSERT_STRING_EQUAL(kv_strerror(1), "unknown error");
}

/* kv_print_write on a full non-blocking pipe returns at once, writes what
 * fits and counts the rest as dropped. */
static void test_mem_print_write_drops_when_full(void)
{
    static char chunk[4096];
    struct kv_mem_snapshot a, b;
    size_t wrote = 0, n;
    int p[2];

    CU_ASSERT_FATAL(pipe(p) == 0);
    CU_ASSERT_FATAL(fcntl(p[1], F_SETFL, O_NONBLOCK) == 0);
    memset(chunk, 'x', sizeof(chunk));
    kv_mem_snapshot(&a);
    for (int i = 0; i < 1024; i++) /* 4 MiB into a 64 KiB pipe */
        wrote += kv_print_write(p[1], chunk, sizeof(chunk));
    kv_mem_snapshot(&b);
    CU_ASSERT(wrote > 0 && wrote < 1024 * sizeof(chunk));
    CU_ASSERT_EQUAL(b.stat[KV_STAT_PRINT_DROPPED] - a.stat[KV_STAT_PRINT_DROPPED],
                    1024 * sizeof(chunk) - wrote);
    n = kv_print_write(p[1], "", 0);
    CU_ASSERT_EQUAL(n, 0);
    close(p[0]); /* the reader gone: EPIPE (SIGPIPE ignored below), dropped too */
    signal(SIGPIPE, SIG_IGN);
    CU_ASSERT_EQUAL(kv_print_write(p[1], "x", 1), 0);
    close(p[1]);
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_mem_error_names", test_mem_error_names},
        {"test_mem_print_write_drops_when_full", test_mem_print_write_drops_when_full},
        {"test_mem_obj_cache_counts_and_reuse", test_mem_obj_cache_counts_and_reuse},
        {"test_mem_alloc_free_exact", test_mem_alloc_free_exact},
        {"test_mem_alloc_counts_per_module", test_mem_alloc_counts_per_module},
        {"test_mem_calloc_zeroes_and_counts", test_mem_calloc_zeroes_and_counts},
        {"test_mem_realloc_counts", test_mem_realloc_counts},
        {"test_mem_strdup_counts", test_mem_strdup_counts},
        {"test_mem_free_null_noop", test_mem_free_null_noop},
        {"test_mem_alloc_overflow_fails", test_mem_alloc_overflow_fails},
#ifndef NDEBUG
        {"test_mem_free_wrong_module_aborts", test_mem_free_wrong_module_aborts},
#endif
        {"test_mem_threads_concurrent_exact", test_mem_threads_concurrent_exact},
        {"test_mem_cross_thread_free_exact", test_mem_cross_thread_free_exact},
        {"test_mem_thread_exit_folds_counts", test_mem_thread_exit_folds_counts},
        {"test_mem_short_lived_threads_exact", test_mem_short_lived_threads_exact},
        {"test_mem_snapshot_under_load", test_mem_snapshot_under_load},
        {"test_mem_stat_add_summed_across_threads", test_mem_stat_add_summed_across_threads},
        {"test_mem_buf_capacity_classes", test_mem_buf_capacity_classes},
        {"test_mem_buf_reuse_from_cache", test_mem_buf_reuse_from_cache},
        {"test_mem_pool_drain_returns_pool_to_zero", test_mem_pool_drain_returns_pool_to_zero},
        {"test_mem_pool_cache_bounded", test_mem_pool_cache_bounded},
        {"test_mem_pool_thread_exit_drains", test_mem_pool_thread_exit_drains},
        {"test_mem_names", test_mem_names},
        {"test_mem_held_total", test_mem_held_total},
        {"test_mem_format_contents", test_mem_format_contents},
        {"test_mem_format_truncates", test_mem_format_truncates},
    };

    return kv_test_run_suite("mem", NULL, NULL, tests, sizeof(tests) / sizeof(tests[0]));
}
