/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_worker.c -- the handler registry and the worker pool
 * (src/worker/kv_worker.h).
 *
 * Calls are embedded in a test record (struct tcall) that counts how often
 * the call ran and how often it came back; the done callback checks that
 * every list it gets is of one origin. The pool runs with 0 (inline), 1, 2
 * and 4 workers. */
#include <CUnit/CUnit.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kv_err.h"
#include "kv_mem.h"
#include "kv_test_util.h"
#include "kv_worker.h"

#define OP_ECHO    1   /* status OK, resp = copy of the body (KV_MOD_PACKET) */
#define OP_MISS    2   /* status NOT_FOUND */
#define OP_SLOW    3   /* sleeps, then OK */
#define OP_UNKNOWN 200 /* never registered */

struct tcall {
    struct kv_call call; /* first: handlers and done cast back */
    uint32_t idx;
    uint32_t runs;    /* atomic */
    uint32_t returns; /* atomic */
    pthread_t ran_on;
};

struct harness {
    uint32_t handled;    /* atomic: handler invocations */
    uint32_t returned;   /* atomic: calls handed back */
    uint32_t dones;      /* atomic: done invocations */
    uint32_t bad_origin; /* atomic: a done list mixing origins */
    uint32_t bad_status; /* atomic */
    uint32_t not_run;    /* atomic: a call came back before (or without) running */
    pthread_t done_thread;
    unsigned slow_us;
    int record; /* single-threaded tests: record the done sequence */
    void *seq_origin[16];
    unsigned seq_len[16];
    unsigned nseq;
};

static unsigned expected_status(uint16_t opcode)
{
    switch (opcode) {
    case OP_ECHO:
    case OP_SLOW: return KV_ST_OK;
    case OP_MISS: return KV_ST_NOT_FOUND;
    default: return KV_ST_UNKNOWN_OPCODE;
    }
}

static void h_echo(void *ctx, struct kv_call *call)
{
    struct tcall *t = (struct tcall *)call;
    struct harness *h = ctx;

    __atomic_add_fetch(&t->runs, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&h->handled, 1, __ATOMIC_RELAXED);
    t->ran_on = pthread_self();
    call->status = KV_ST_OK;
    if (call->body_len) {
        call->resp = kv_mem_alloc(KV_MOD_PACKET, call->body_len);
        if (call->resp)
            memcpy(call->resp, call->body, call->body_len);
        call->resp_len = call->body_len;
        call->resp_owned = 1;
    }
}

static void h_miss(void *ctx, struct kv_call *call)
{
    struct tcall *t = (struct tcall *)call;
    struct harness *h = ctx;

    __atomic_add_fetch(&t->runs, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&h->handled, 1, __ATOMIC_RELAXED);
    t->ran_on = pthread_self();
    call->status = KV_ST_NOT_FOUND;
}

static void h_slow(void *ctx, struct kv_call *call)
{
    struct harness *h = ctx;

    usleep(h->slow_us);
    h_miss(ctx, call);
    call->status = KV_ST_OK;
}

static void on_done(void *done_ctx, void *origin, struct kv_call *calls)
{
    struct harness *h = done_ctx;

    __atomic_add_fetch(&h->dones, 1, __ATOMIC_RELAXED);
    if (h->record && h->nseq < 16) {
        h->done_thread = pthread_self();
        unsigned n = 0;
        for (struct kv_call *c = calls; c; c = c->next)
            n++;
        h->seq_origin[h->nseq] = origin;
        h->seq_len[h->nseq++] = n;
    }
    for (struct kv_call *c = calls, *next; c; c = next) {
        struct tcall *t = (struct tcall *)c;

        next = c->next; /* read before the call is marked returned */
        if (c->origin != origin)
            __atomic_add_fetch(&h->bad_origin, 1, __ATOMIC_RELAXED);
        if (c->status != expected_status(c->opcode))
            __atomic_add_fetch(&h->bad_status, 1, __ATOMIC_RELAXED);
        if (expected_status(c->opcode) != KV_ST_UNKNOWN_OPCODE &&
            __atomic_load_n(&t->runs, __ATOMIC_RELAXED) != 1)
            __atomic_add_fetch(&h->not_run, 1, __ATOMIC_RELAXED);
        if (c->resp_owned) {
            if (c->resp_len != c->body_len || memcmp(c->resp, c->body, c->body_len) != 0)
                __atomic_add_fetch(&h->bad_status, 1, __ATOMIC_RELAXED);
            kv_mem_free(KV_MOD_PACKET, c->resp);
            c->resp = NULL;
            c->resp_owned = 0;
        }
        __atomic_add_fetch(&t->returns, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&h->returned, 1, __ATOMIC_RELEASE);
    }
}

static struct kv_worker_registry *make_registry(struct harness *h)
{
    struct kv_worker_registry *reg = NULL;

    CU_ASSERT_EQUAL_FATAL(kv_worker_registry_create(&reg), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(reg);
    CU_ASSERT_EQUAL(kv_worker_register(reg, OP_ECHO, h_echo, h), 0);
    CU_ASSERT_EQUAL(kv_worker_register(reg, OP_MISS, h_miss, h), 0);
    CU_ASSERT_EQUAL(kv_worker_register(reg, OP_SLOW, h_slow, h), 0);
    return reg;
}

static struct kv_worker_pool *make_pool(unsigned workers, struct kv_worker_registry *reg,
                                        struct harness *h)
{
    struct kv_config cfg;
    struct kv_worker_pool *pool = NULL;

    kv_config_defaults(&cfg);
    cfg.workers = workers;
    CU_ASSERT_EQUAL_FATAL(kv_worker_pool_create(&cfg, reg, on_done, h, &pool), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(pool);
    return pool;
}

static struct tcall *calls_new(size_t n)
{
    struct tcall *c = kv_mem_calloc(KV_MOD_TEST, n * sizeof(*c));

    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    for (size_t i = 0; i < n; i++)
        c[i].idx = (uint32_t)i;
    return c;
}

/* Waits until h->returned reaches n; 0 on success, -1 after timeout_ms. */
static int wait_returned(struct harness *h, uint32_t n, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited++) {
        if (__atomic_load_n(&h->returned, __ATOMIC_ACQUIRE) >= n)
            return 0;
        usleep(1000);
    }
    return -1;
}

/* ---- registry ---------------------------------------------------------------- */

static void h_mark(void *ctx, struct kv_call *call)
{
    *(void **)ctx = call;
    call->status = KV_ST_EXISTS;
}

static void h_other(void *ctx, struct kv_call *call)
{
    call->status = KV_ST_INTERNAL;
}

static void test_worker_register_rules(void)
{
    struct kv_worker_registry *reg = NULL;
    void *seen = NULL;
    struct kv_call c;

    CU_ASSERT_EQUAL_FATAL(kv_worker_registry_create(&reg), 0);
    CU_ASSERT_EQUAL(kv_worker_register(reg, 5, h_mark, &seen), 0);
    CU_ASSERT_EQUAL(kv_worker_register(reg, 5, h_other, NULL), KV_EEXISTS);
    CU_ASSERT_EQUAL(kv_worker_register(reg, 5, h_mark, &seen), KV_EEXISTS);
    CU_ASSERT_EQUAL(kv_worker_register(reg, 0, h_other, NULL), 0); /* lowest */
    CU_ASSERT_EQUAL(kv_worker_register(reg, KV_WORKER_MAX_OPCODE - 1, h_other, NULL), 0);
    CU_ASSERT_EQUAL(kv_worker_register(reg, KV_WORKER_MAX_OPCODE, h_other, NULL), KV_EINVAL);
    CU_ASSERT_EQUAL(kv_worker_register(reg, 0xFFFF, h_other, NULL), KV_EINVAL);
    CU_ASSERT_EQUAL(kv_worker_register(reg, 6, NULL, NULL), KV_EINVAL);

    /* the duplicate did not replace the first handler */
    memset(&c, 0, sizeof(c));
    c.opcode = 5;
    kv_worker_run(reg, &c);
    CU_ASSERT_PTR_EQUAL(seen, &c);
    CU_ASSERT_EQUAL(c.status, KV_ST_EXISTS);
    /* the refused NULL registration left 6 unregistered */
    memset(&c, 0, sizeof(c));
    c.opcode = 6;
    kv_worker_run(reg, &c);
    CU_ASSERT_EQUAL(c.status, KV_ST_UNKNOWN_OPCODE);
    c.opcode = KV_WORKER_MAX_OPCODE - 1;
    kv_worker_run(reg, &c);
    CU_ASSERT_EQUAL(c.status, KV_ST_INTERNAL);
    kv_worker_registry_destroy(reg);
}

static void test_worker_run_dispatch(void)
{
    struct kv_worker_registry *reg = NULL, *other = NULL;
    void *seen_a = NULL, *seen_b = NULL;
    struct kv_call c;

    CU_ASSERT_EQUAL_FATAL(kv_worker_registry_create(&reg), 0);
    CU_ASSERT_EQUAL_FATAL(kv_worker_registry_create(&other), 0);
    CU_ASSERT_EQUAL(kv_worker_register(reg, 10, h_mark, &seen_a), 0);
    CU_ASSERT_EQUAL(kv_worker_register(reg, 11, h_mark, &seen_b), 0);

    /* each handler gets its own ctx */
    memset(&c, 0, sizeof(c));
    c.opcode = 11;
    c.status = 0xEEEE;
    kv_worker_run(reg, &c);
    CU_ASSERT_PTR_EQUAL(seen_b, &c);
    CU_ASSERT_PTR_NULL(seen_a);
    CU_ASSERT_EQUAL(c.status, KV_ST_EXISTS);

    /* unregistered: UNKNOWN_OPCODE, no handler runs */
    seen_a = seen_b = NULL;
    c.opcode = 12;
    c.status = 0xEEEE;
    kv_worker_run(reg, &c);
    CU_ASSERT_EQUAL(c.status, KV_ST_UNKNOWN_OPCODE);
    CU_ASSERT(seen_a == NULL && seen_b == NULL);
    /* out of the table's range */
    c.opcode = KV_WORKER_MAX_OPCODE;
    c.status = 0xEEEE;
    kv_worker_run(reg, &c);
    CU_ASSERT_EQUAL(c.status, KV_ST_UNKNOWN_OPCODE);
    c.opcode = 0xFFFF;
    c.status = 0xEEEE;
    kv_worker_run(reg, &c);
    CU_ASSERT_EQUAL(c.status, KV_ST_UNKNOWN_OPCODE);
    /* registries are independent */
    c.opcode = 10;
    c.status = 0xEEEE;
    kv_worker_run(other, &c);
    CU_ASSERT_EQUAL(c.status, KV_ST_UNKNOWN_OPCODE);
    CU_ASSERT_PTR_NULL(seen_a);
    kv_worker_run(reg, &c);
    CU_ASSERT_PTR_EQUAL(seen_a, &c);
    kv_worker_registry_destroy(other);
    kv_worker_registry_destroy(reg);
}

/* ---- inline pool (0 workers) ------------------------------------------------- */

static void test_worker_pool_inline_synchronous(void)
{
    struct harness h;
    struct kv_worker_registry *reg;
    struct kv_worker_pool *pool;
    struct tcall *c = calls_new(5);
    int oa, ob; /* origins: any distinct addresses */
    void *orig[5] = {&oa, &oa, &ob, &ob, &oa};
    uint16_t ops[5] = {OP_ECHO, OP_MISS, OP_UNKNOWN, OP_ECHO, OP_MISS};
    struct kv_worker_stats st;

    memset(&h, 0, sizeof(h));
    h.record = 1;
    reg = make_registry(&h);
    pool = make_pool(0, reg, &h);
    for (int i = 0; i < 5; i++) {
        c[i].call.origin = orig[i];
        c[i].call.opcode = ops[i];
        c[i].call.body = (const uint8_t *)"hi";
        c[i].call.body_len = 2;
        c[i].call.next = i < 4 ? &c[i + 1].call : NULL;
    }
    kv_worker_pool_submit(pool, &c[0].call);
    /* everything ran and came back before submit returned, on this thread */
    CU_ASSERT_EQUAL(h.returned, 5);
    CU_ASSERT_EQUAL(h.handled, 4);
    CU_ASSERT(pthread_equal(h.done_thread, pthread_self()));
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(c[i].returns, 1);
        if (ops[i] != OP_UNKNOWN) {
            CU_ASSERT_EQUAL(c[i].runs, 1);
            CU_ASSERT(pthread_equal(c[i].ran_on, pthread_self()));
        }
    }
    CU_ASSERT_EQUAL(h.bad_origin, 0);
    CU_ASSERT_EQUAL(h.bad_status, 0);
    CU_ASSERT_EQUAL(h.not_run, 0);
    /* one done per run of equal origin, in order: A x2, B x2, A x1 */
    CU_ASSERT_EQUAL_FATAL(h.nseq, 3);
    CU_ASSERT(h.seq_origin[0] == &oa && h.seq_len[0] == 2);
    CU_ASSERT(h.seq_origin[1] == &ob && h.seq_len[1] == 2);
    CU_ASSERT(h.seq_origin[2] == &oa && h.seq_len[2] == 1);

    kv_worker_pool_submit(pool, NULL); /* nothing */
    CU_ASSERT_EQUAL(h.dones, 3);
    kv_worker_pool_stats(pool, &st);
    CU_ASSERT_EQUAL(st.queued, 0);
    CU_ASSERT_EQUAL(st.batches, 1); /* inline batches are counted too */
    CU_ASSERT_EQUAL(st.calls, 5);
    kv_worker_pool_stop(pool);
    kv_worker_pool_destroy(pool);
    kv_worker_registry_destroy(reg);
    kv_mem_free(KV_MOD_TEST, c);
}

/* ---- threaded pools: every call once, one origin per done ------------------- */

#define TOTAL_CALLS 100000
#define SUBMITTERS  4
#define ORIGINS     6

struct submitter {
    struct kv_worker_pool *pool; /* borrowed */
    struct tcall *calls;         /* borrowed: this submitter's slice */
    size_t n;
    void **origins; /* borrowed: ORIGINS tokens */
    unsigned seed;
};

static void *submit_main(void *arg)
{
    struct submitter *s = arg;
    size_t i = 0;

    while (i < s->n) {
        size_t batch = 1 + (size_t)rand_r(&s->seed) % 64;
        void *origin = s->origins[rand_r(&s->seed) % ORIGINS];

        if (batch > s->n - i)
            batch = s->n - i;
        for (size_t k = 0; k < batch; k++) {
            struct tcall *t = &s->calls[i + k];
            unsigned r = (unsigned)rand_r(&s->seed);

            /* runs of one origin, sometimes switching mid-batch */
            if (r % 16 == 0)
                origin = s->origins[(r >> 4) % ORIGINS];
            t->call.origin = origin;
            t->call.opcode = r % 29 == 0 ? OP_UNKNOWN : (r % 3 == 0 ? OP_MISS : OP_ECHO);
            t->call.body = (const uint8_t *)&t->idx;
            t->call.body_len = r % 5 == 0 ? sizeof(t->idx) : 0;
            t->call.next = k + 1 < batch ? &s->calls[i + k + 1].call : NULL;
        }
        kv_worker_pool_submit(s->pool, &s->calls[i].call);
        i += batch;
    }
    return NULL;
}

static void run_stress(unsigned workers)
{
    struct kv_mem_snapshot s0, s1;
    struct harness h;
    struct kv_worker_registry *reg;
    struct kv_worker_pool *pool;
    struct tcall *c;
    struct submitter sub[SUBMITTERS];
    pthread_t th[SUBMITTERS];
    int tokens[ORIGINS];
    void *origins[ORIGINS];
    struct kv_worker_stats st;
    uint32_t bad_runs = 0, bad_returns = 0, inline_runs = 0;
    size_t per = TOTAL_CALLS / SUBMITTERS;

    kv_mem_snapshot(&s0);
    memset(&h, 0, sizeof(h));
    for (int i = 0; i < ORIGINS; i++)
        origins[i] = &tokens[i];
    c = calls_new(TOTAL_CALLS);
    reg = make_registry(&h);
    pool = make_pool(workers, reg, &h);

    for (int i = 0; i < SUBMITTERS; i++) {
        sub[i] = (struct submitter){.pool = pool,
                                    .calls = c + (size_t)i * per,
                                    .n = per,
                                    .origins = origins,
                                    .seed = 31u * workers + (unsigned)i};
        CU_ASSERT_FATAL(pthread_create(&th[i], NULL, submit_main, &sub[i]) == 0);
    }
    for (int i = 0; i < SUBMITTERS; i++)
        pthread_join(th[i], NULL);
    /* everything comes back without stop() */
    CU_ASSERT_EQUAL(wait_returned(&h, TOTAL_CALLS, 10000), 0);

    for (size_t i = 0; i < TOTAL_CALLS; i++) {
        int known = expected_status(c[i].call.opcode) != KV_ST_UNKNOWN_OPCODE;

        bad_runs += c[i].runs != (known ? 1u : 0u);
        bad_returns += c[i].returns != 1;
        if (known && c[i].runs == 1)
            for (int k = 0; k < SUBMITTERS; k++)
                inline_runs += pthread_equal(c[i].ran_on, th[k]) != 0;
    }
    CU_ASSERT_EQUAL(bad_runs, 0);
    CU_ASSERT_EQUAL(bad_returns, 0);
    CU_ASSERT_EQUAL(inline_runs, 0); /* handlers ran on the workers */
    CU_ASSERT_EQUAL(h.bad_origin, 0);
    CU_ASSERT_EQUAL(h.bad_status, 0);
    CU_ASSERT_EQUAL(h.not_run, 0);
    CU_ASSERT_EQUAL(h.returned, TOTAL_CALLS);
    CU_ASSERT(h.dones > 0 && h.dones <= TOTAL_CALLS);

    kv_worker_pool_stats(pool, &st);
    CU_ASSERT_EQUAL(st.calls, TOTAL_CALLS);
    CU_ASSERT_EQUAL(st.queued, 0);
    CU_ASSERT(st.batches > 0 && st.batches <= TOTAL_CALLS);

    kv_worker_pool_stop(pool);
    kv_worker_pool_destroy(pool);
    kv_worker_registry_destroy(reg);
    /* the done callback ran nothing twice after the join either */
    CU_ASSERT_EQUAL(h.returned, TOTAL_CALLS);
    kv_mem_free(KV_MOD_TEST, c);
    kv_mem_snapshot(&s1);
    CU_ASSERT_EQUAL(s1.mod[KV_MOD_TASK].bytes, s0.mod[KV_MOD_TASK].bytes);
    CU_ASSERT_EQUAL(s1.mod[KV_MOD_PACKET].bytes, s0.mod[KV_MOD_PACKET].bytes);
    CU_ASSERT_EQUAL(s1.mod[KV_MOD_TEST].bytes, s0.mod[KV_MOD_TEST].bytes);
}

static void test_worker_pool_1_every_call_once(void)
{
    run_stress(1);
}

static void test_worker_pool_2_every_call_once(void)
{
    run_stress(2);
}

static void test_worker_pool_4_every_call_once(void)
{
    run_stress(4);
}

/* A burst submitted at once is taken in shares, not call by call. */
static void test_worker_pool_batches_burst(void)
{
    enum { N = 20000 };
    struct harness h;
    struct kv_worker_registry *reg;
    struct kv_worker_pool *pool;
    struct tcall *c = calls_new(N);
    struct kv_worker_stats st;
    int origin;

    memset(&h, 0, sizeof(h));
    reg = make_registry(&h);
    pool = make_pool(4, reg, &h);
    for (int i = 0; i < N; i++) {
        c[i].call.origin = &origin;
        c[i].call.opcode = OP_MISS;
        c[i].call.next = i + 1 < N ? &c[i + 1].call : NULL;
    }
    kv_worker_pool_submit(pool, &c[0].call);
    CU_ASSERT_EQUAL(wait_returned(&h, N, 10000), 0);
    kv_worker_pool_stats(pool, &st);
    CU_ASSERT_EQUAL(st.calls, N);
    CU_ASSERT(st.batches >= 1);
    CU_ASSERT(st.batches * 20 < N);   /* shares of many calls */
    CU_ASSERT(st.wakeups * 20 < N);   /* one wake-up per share, not per call */
    CU_ASSERT(h.dones <= st.batches); /* one origin: one done per share */
    CU_ASSERT_EQUAL(h.bad_origin, 0);
    CU_ASSERT_EQUAL(h.not_run, 0);
    kv_worker_pool_stop(pool);
    kv_worker_pool_destroy(pool);
    kv_worker_registry_destroy(reg);
    kv_mem_free(KV_MOD_TEST, c);
}

/* stop() runs everything queued before it returns. */
static void test_worker_pool_stop_drains(void)
{
    enum { N = 1000 };
    struct harness h;
    struct kv_worker_registry *reg;
    struct kv_worker_pool *pool;
    struct tcall *c = calls_new(N);
    struct kv_worker_stats st;
    int oa, ob;
    uint32_t before_stop, bad = 0;

    memset(&h, 0, sizeof(h));
    h.slow_us = 500; /* N * 500 us / 2 workers = 250 ms of work */
    reg = make_registry(&h);
    pool = make_pool(2, reg, &h);
    for (int i = 0; i < N; i++) {
        c[i].call.origin = (i / 100) % 2 ? &oa : &ob;
        c[i].call.opcode = OP_SLOW;
        c[i].call.next = i + 1 < N ? &c[i + 1].call : NULL;
    }
    kv_worker_pool_submit(pool, &c[0].call);
    before_stop = __atomic_load_n(&h.returned, __ATOMIC_ACQUIRE);
    kv_worker_pool_stop(pool);
    /* the test means something only if work was still pending at stop() */
    CU_ASSERT(before_stop < N);
    CU_ASSERT_EQUAL(h.returned, N);
    CU_ASSERT_EQUAL(h.handled, N);
    for (int i = 0; i < N; i++)
        bad += c[i].runs != 1 || c[i].returns != 1;
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(h.bad_origin, 0);
    kv_worker_pool_stats(pool, &st);
    CU_ASSERT_EQUAL(st.queued, 0);
    CU_ASSERT_EQUAL(st.calls, N);
    kv_worker_pool_destroy(pool);
    kv_worker_registry_destroy(reg);
    kv_mem_free(KV_MOD_TEST, c);
}

/* stop() of an idle pool returns promptly; a second stop() and a destroy of
 * NULL are harmless. */
static void test_worker_pool_stop_idle_and_twice(void)
{
    struct harness h;
    struct kv_worker_registry *reg;
    struct kv_worker_pool *pool;
    struct timespec t0, t1;

    memset(&h, 0, sizeof(h));
    reg = make_registry(&h);
    pool = make_pool(4, reg, &h);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kv_worker_pool_stop(pool); /* idle workers wake up and leave */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CU_ASSERT((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 2000);
    CU_ASSERT_EQUAL(h.dones, 0);
    kv_worker_pool_stop(pool); /* harmless the second time */
    kv_worker_pool_destroy(pool);
    kv_worker_pool_destroy(NULL);
    kv_worker_registry_destroy(reg);
}

/* Creating and destroying pools leaves KV_MOD_TASK where it was. */
static void test_worker_pool_memory_accounting(void)
{
    static const unsigned sizes[] = {0, 1, 2, 4, 8};
    struct kv_mem_snapshot s0, s1, s2;
    struct harness h;
    struct kv_worker_registry *reg;

    memset(&h, 0, sizeof(h));
    kv_mem_snapshot(&s0);
    reg = make_registry(&h);
    kv_mem_snapshot(&s1);
    CU_ASSERT(s1.mod[KV_MOD_TASK].bytes > s0.mod[KV_MOD_TASK].bytes); /* counted as TASK */
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        struct kv_mem_snapshot a, b;
        struct kv_worker_pool *pool = make_pool(sizes[i], reg, &h);
        struct tcall *c = calls_new(10);

        kv_mem_snapshot(&a);
        CU_ASSERT(a.mod[KV_MOD_TASK].bytes > s1.mod[KV_MOD_TASK].bytes);
        for (int k = 0; k < 10; k++) {
            c[k].call.origin = &h;
            c[k].call.opcode = OP_ECHO;
            c[k].call.body = (const uint8_t *)"xyz";
            c[k].call.body_len = 3;
            c[k].call.next = k + 1 < 10 ? &c[k + 1].call : NULL;
        }
        h.returned = 0;
        kv_worker_pool_submit(pool, &c[0].call);
        kv_worker_pool_stop(pool);
        CU_ASSERT_EQUAL(h.returned, 10);
        kv_worker_pool_destroy(pool);
        kv_mem_free(KV_MOD_TEST, c);
        kv_mem_snapshot(&b);
        CU_ASSERT_EQUAL(b.mod[KV_MOD_TASK].bytes, s1.mod[KV_MOD_TASK].bytes);
        CU_ASSERT_EQUAL(b.mod[KV_MOD_TASK].allocs - s1.mod[KV_MOD_TASK].allocs,
                        b.mod[KV_MOD_TASK].frees - s1.mod[KV_MOD_TASK].frees);
        CU_ASSERT_EQUAL(b.mod[KV_MOD_PACKET].bytes, s0.mod[KV_MOD_PACKET].bytes);
    }
    kv_worker_registry_destroy(reg);
    kv_mem_snapshot(&s2);
    CU_ASSERT_EQUAL(s2.mod[KV_MOD_TASK].bytes, s0.mod[KV_MOD_TASK].bytes);
    CU_ASSERT_EQUAL(s2.mod[KV_MOD_TASK].allocs - s0.mod[KV_MOD_TASK].allocs,
                    s2.mod[KV_MOD_TASK].frees - s0.mod[KV_MOD_TASK].frees);
    CU_ASSERT_EQUAL(s2.mod[KV_MOD_TEST].bytes, s0.mod[KV_MOD_TEST].bytes);
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_worker_register_rules", test_worker_register_rules},
        {"test_worker_run_dispatch", test_worker_run_dispatch},
        {"test_worker_pool_inline_synchronous", test_worker_pool_inline_synchronous},
        {"test_worker_pool_1_every_call_once", test_worker_pool_1_every_call_once},
        {"test_worker_pool_2_every_call_once", test_worker_pool_2_every_call_once},
        {"test_worker_pool_4_every_call_once", test_worker_pool_4_every_call_once},
        {"test_worker_pool_batches_burst", test_worker_pool_batches_burst},
        {"test_worker_pool_stop_drains", test_worker_pool_stop_drains},
        {"test_worker_pool_stop_idle_and_twice", test_worker_pool_stop_idle_and_twice},
        {"test_worker_pool_memory_accounting", test_worker_pool_memory_accounting},
    };

    return kv_test_run_suite("worker", NULL, NULL, tests, sizeof(tests) / sizeof(tests[0]));
}
