/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/worker/worker.c -- the worker pool and the opcode -> handler registry.
 *
 * Lock rules: pool->lock guards the queue (head, tail, queued), idle and
 * stopping; handlers run without it. The registry is written before the
 * pool starts and only read afterwards.
 *
 * A worker takes a share of the queue at once (queued / workers, at least
 * one), runs it, and returns the finished calls grouped by origin: one done
 * callback (and so one ev_async_send) per origin per share. */
#include "kv_worker.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kv_err.h"
#include "kv_mem.h"

/* The gate: a "big reader lock" over every handler run. Each thread that runs handlers
 * has a slot of its own, on a cache line of its own, that it marks busy around each call;
 * kv_worker_exclusive() closes the gate and waits until every slot is idle. A call costs
 * one atomic exchange on the thread's own line and a read of `closed`, which is written
 * only by exclusive sections: no shared line is written on the hot path. Threads past
 * KV_GATE_SLOTS - 1 share the last slot as a counter. */
#define KV_GATE_SLOTS 64
struct gate_slot {
    uint32_t busy;       /* atomic: calls running (0/1 for an owned slot) */
    char pad[124];       /* two busy words are never on one 64-byte line */
};

struct kv_worker_registry {
    struct {
        kv_handler_fn fn;
        kv_prefetch_fn prefetch; /* may be NULL */
        void *ctx;
    } h[KV_WORKER_MAX_OPCODE]; /* ro after start */
    int any_prefetch;          /* ro after start */
    int solo;                  /* ro after start: one thread runs every handler */
    char pad0[128];
    uint32_t closed;           /* atomic: an exclusive section runs or waits (futex word) */
    char pad1[124];
    unsigned nslots;           /* atomic: slots handed out */
    pthread_mutex_t excl;      /* one exclusive section at a time */
    struct gate_slot slots[KV_GATE_SLOTS];
};

/* This thread's slot in the gate of tl_reg, and whether it runs an exclusive section. */
static __thread const struct kv_worker_registry *tl_reg;
static __thread struct gate_slot *tl_slot;
static __thread const struct kv_worker_registry *tl_excl;
static __thread unsigned tl_depth; /* gated calls this thread is inside */

struct kv_worker_pool {
    const struct kv_worker_registry *reg; /* borrowed: outlives the pool */
    kv_worker_done_fn done;               /* ro after create */
    void *done_ctx;                       /* borrowed */
    unsigned nthreads;                    /* guarded by lock; 0 once stopped */
    pthread_t *threads;                   /* owned (KV_MOD_TASK) */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct kv_call *head, *tail;          /* guarded by lock */
    size_t queued;                        /* guarded by lock */
    unsigned idle;                        /* guarded by lock: workers waiting */
    int stopping;                         /* guarded by lock */
    uint64_t batches, calls, wakeups;     /* guarded by lock */
};

int kv_worker_registry_create(struct kv_worker_registry **out)
{
    struct kv_worker_registry *r = kv_mem_calloc(KV_MOD_TASK, sizeof(*r));

    if (!r)
        return KV_ENOMEM;
    pthread_mutex_init(&r->excl, NULL);
    *out = r;
    return 0;
}

void kv_worker_registry_destroy(struct kv_worker_registry *reg)
{
    if (!reg)
        return;
    pthread_mutex_destroy(&reg->excl);
    if (tl_reg == reg)
        tl_reg = NULL;
    kv_mem_free(KV_MOD_TASK, reg);
}

/* ---- the gate ------------------------------------------------------------------ */
static struct gate_slot *gate_slot(const struct kv_worker_registry *reg)
{
    struct kv_worker_registry *r = (struct kv_worker_registry *)reg;
    unsigned i;

    if (tl_reg == reg)
        return tl_slot;
    i = __atomic_fetch_add(&r->nslots, 1, __ATOMIC_RELAXED);
    tl_reg = reg;
    tl_slot = &r->slots[i < KV_GATE_SLOTS ? i : KV_GATE_SLOTS - 1];
    return tl_slot;
}

static void futex_wait(uint32_t *w, uint32_t val)
{
    syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

void kv_worker_gate_enter(const struct kv_worker_registry *reg)
{
    struct kv_worker_registry *r = (struct kv_worker_registry *)reg;
    struct gate_slot *sl = gate_slot(reg);

    if (tl_excl == reg || tl_depth++ > 0)
        return; /* inside an exclusive section, or already inside the gate */
    for (;;) {
        __atomic_fetch_add(&sl->busy, 1, __ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&r->closed, __ATOMIC_SEQ_CST))
            return;
        __atomic_fetch_sub(&sl->busy, 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(&r->closed, __ATOMIC_ACQUIRE))
            futex_wait(&r->closed, 1);
    }
}

void kv_worker_gate_leave(const struct kv_worker_registry *reg)
{
    if (tl_excl == reg || --tl_depth > 0)
        return;
    __atomic_fetch_sub(&tl_slot->busy, 1, __ATOMIC_RELEASE);
}

void kv_worker_exclusive(const struct kv_worker_registry *reg, void (*fn)(void *ctx), void *ctx)
{
    struct kv_worker_registry *r = (struct kv_worker_registry *)reg;
    struct gate_slot *mine = gate_slot(reg);
    unsigned depth = tl_depth, n;

    if (tl_excl == reg) { /* nested: already alone */
        fn(ctx);
        return;
    }
    if (depth) { /* step out of the gate: the section waits for every slot to idle */
        tl_depth = 0;
        __atomic_fetch_sub(&mine->busy, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_lock(&r->excl);
    __atomic_store_n(&r->closed, 1, __ATOMIC_SEQ_CST);
    n = __atomic_load_n(&r->nslots, __ATOMIC_ACQUIRE);
    if (n > KV_GATE_SLOTS)
        n = KV_GATE_SLOTS;
    for (unsigned i = 0; i < n; i++)
        for (unsigned spin = 0; __atomic_load_n(&r->slots[i].busy, __ATOMIC_ACQUIRE); spin++)
            if (spin > 64)
                sched_yield();
    tl_excl = reg;
    fn(ctx);
    tl_excl = NULL;
    __atomic_store_n(&r->closed, 0, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &r->closed, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    pthread_mutex_unlock(&r->excl);
    if (depth) { /* back into the gate, as the caller was */
        kv_worker_gate_enter(reg);
        tl_depth = depth;
    }
}

int kv_worker_register(struct kv_worker_registry *reg, uint16_t opcode, kv_handler_fn fn,
                       void *ctx)
{
    if (opcode >= KV_WORKER_MAX_OPCODE || !fn)
        return KV_EINVAL;
    if (reg->h[opcode].fn)
        return KV_EEXISTS;
    reg->h[opcode].fn = fn;
    reg->h[opcode].ctx = ctx;
    return 0;
}

int kv_worker_register_prefetch(struct kv_worker_registry *reg, uint16_t opcode,
                                kv_prefetch_fn fn)
{
    if (opcode >= KV_WORKER_MAX_OPCODE || !reg->h[opcode].fn)
        return KV_EINVAL;
    reg->h[opcode].prefetch = fn;
    reg->any_prefetch = 1;
    return 0;
}

/* Cache hints run ahead of execution in a software pipeline: stage 0
 * (bucket) KV_HINT_AHEAD0 calls ahead, stage 1 (item, whose address needs
 * the bucket) KV_HINT_AHEAD1 calls ahead, so each miss has several calls'
 * worth of time to land. */
#define KV_HINT_AHEAD0 8
#define KV_HINT_AHEAD1 4

struct hinter {
    struct kv_call *at[2]; /* next call to hint, per stage */
};

void kv_worker_prefetch(const struct kv_worker_registry *reg, struct kv_call *call, int stage)
{
    if (call->opcode < KV_WORKER_MAX_OPCODE && reg->h[call->opcode].prefetch)
        reg->h[call->opcode].prefetch(reg->h[call->opcode].ctx, call, stage);
}

static void hint(const struct kv_worker_registry *reg, struct hinter *h, int stage)
{
    struct kv_call *c = h->at[stage];

    if (!c)
        return;
    kv_worker_prefetch(reg, c, stage);
    h->at[stage] = c->next;
}

/* kv_worker_run, inlined into run_batch (the hot loop) */
static inline __attribute__((always_inline)) void run_call(const struct kv_worker_registry *reg,
                                                           struct kv_call *call)
{
    call->status = KV_ST_OK;
    if (call->opcode >= KV_WORKER_MAX_OPCODE || !reg->h[call->opcode].fn) {
        call->status = KV_ST_UNKNOWN_OPCODE;
        return;
    }
    if (call->answer_room)
        call->answer_room(call);
    if (reg->solo) { /* no other handler can run meanwhile: the gate has nothing to hold */
        reg->h[call->opcode].fn(reg->h[call->opcode].ctx, call);
        return;
    }
    kv_worker_gate_enter(reg);
    reg->h[call->opcode].fn(reg->h[call->opcode].ctx, call);
    kv_worker_gate_leave(reg);
}

void kv_worker_run(const struct kv_worker_registry *reg, struct kv_call *call)
{
    run_call(reg, call);
}

void kv_worker_registry_set_solo(struct kv_worker_registry *reg, int solo)
{
    reg->solo = solo;
}

/* Runs a list and hands it back, one done() per run of equal origin. Calls
 * of one batch nearly always share their origin (one read of one
 * connection), so grouping consecutive runs is enough. */
static void run_batch(struct kv_worker_pool *pool, struct kv_call *calls)
{
    const struct kv_worker_registry *reg = pool->reg;
    struct hinter h = {{calls, calls}};
    int hints = reg->any_prefetch && calls->next;

    for (int i = 0; hints && i < KV_HINT_AHEAD0; i++) {
        hint(reg, &h, 0);
        if (i < KV_HINT_AHEAD1)
            hint(reg, &h, 1);
    }
    while (calls) {
        struct kv_call *first = calls, *last = calls;

        for (;;) {
            if (hints) {
                hint(reg, &h, 0);
                hint(reg, &h, 1);
            }
            run_call(reg, last);
            /* an answer built in its origin's room goes back before the next handler */
            if (!last->next || last->next->origin != first->origin || last->answer_room)
                break;
            last = last->next;
        }
        calls = last->next;
        last->next = NULL; /* the hinters are ahead of last: their chain is intact */
        pool->done(pool->done_ctx, first->origin, first);
    }
}

static void *worker_main(void *arg)
{
    struct kv_worker_pool *pool = arg;

    pthread_mutex_lock(&pool->lock);
    for (;;) {
        struct kv_call *take, *last;
        size_t share, n;

        while (!pool->head && !pool->stopping) {
            pool->idle++;
            pthread_cond_wait(&pool->cond, &pool->lock);
            pool->idle--;
        }
        if (!pool->head)
            break; /* stopping and drained */
        share = pool->queued / pool->nthreads;
        if (share == 0)
            share = 1;
        take = last = pool->head;
        for (n = 1; n < share && last->next; n++)
            last = last->next;
        /* never split the calls of one session (connection): they run in order, on
         * one worker (the IO side sends a session's next calls only when these are back) */
        while (last->next && last->next->session && last->next->session == last->session) {
            last = last->next;
            n++;
        }
        pool->head = last->next;
        if (!pool->head)
            pool->tail = NULL;
        pool->queued -= n;
        last->next = NULL;
        pool->batches++;
        pool->calls += n;
        /* more left and someone idle: pass the baton instead of waking all */
        if (pool->head && pool->idle) {
            pool->wakeups++;
            pthread_cond_signal(&pool->cond);
        }
        pthread_mutex_unlock(&pool->lock);
        run_batch(pool, take);
        pthread_mutex_lock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    kv_mem_pool_drain();
    return NULL;
}

int kv_worker_pool_create(const struct kv_config *cfg, const struct kv_worker_registry *reg,
                          kv_worker_done_fn done, void *done_ctx, struct kv_worker_pool **out)
{
    struct kv_worker_pool *pool = kv_mem_calloc(KV_MOD_TASK, sizeof(*pool));
    sigset_t all, old;
    unsigned i;

    if (!pool)
        return KV_ENOMEM;
    pool->reg = reg;
    pool->done = done;
    pool->done_ctx = done_ctx;
    pool->nthreads = cfg->workers;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->cond, NULL);
    if (pool->nthreads) {
        pool->threads = kv_mem_calloc(KV_MOD_TASK, pool->nthreads * sizeof(pthread_t));
        if (!pool->threads)
            goto err_free_pool;
    }
    /* workers take no signals: the main thread's loop handles them */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (i = 0; i < pool->nthreads; i++) {
        if (pthread_create(&pool->threads[i], NULL, worker_main, pool) != 0) {
            pool->nthreads = i;
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            kv_worker_pool_stop(pool);
            kv_worker_pool_destroy(pool);
            return KV_ENOMEM;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    *out = pool;
    return 0;

err_free_pool:
    pthread_cond_destroy(&pool->cond);
    pthread_mutex_destroy(&pool->lock);
    kv_mem_free(KV_MOD_TASK, pool);
    return KV_ENOMEM;
}

void kv_worker_pool_submit(struct kv_worker_pool *pool, struct kv_call *calls)
{
    struct kv_call *last;
    size_t n = 1;

    if (!calls)
        return;
    for (last = calls; last->next; last = last->next)
        n++;
    pthread_mutex_lock(&pool->lock);
    if (pool->nthreads == 0) {
        /* inline pool, or one already stopped: run in the caller */
        pool->batches++;
        pool->calls += n;
        pthread_mutex_unlock(&pool->lock);
        run_batch(pool, calls);
        return;
    }
    if (pool->tail)
        pool->tail->next = calls;
    else
        pool->head = calls;
    pool->tail = last;
    pool->queued += n;
    if (pool->idle) {
        pool->wakeups++;
        pthread_cond_signal(&pool->cond);
    }
    pthread_mutex_unlock(&pool->lock);
}

void kv_worker_pool_stop(struct kv_worker_pool *pool)
{
    struct kv_call *rest;
    unsigned n;

    pthread_mutex_lock(&pool->lock);
    pool->stopping = 1;
    n = pool->nthreads;
    pthread_cond_broadcast(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    for (unsigned i = 0; i < n; i++)
        pthread_join(pool->threads[i], NULL);
    /* from here on submit runs inline; take whatever was queued in between */
    pthread_mutex_lock(&pool->lock);
    pool->nthreads = 0;
    rest = pool->head;
    pool->head = pool->tail = NULL;
    pool->queued = 0;
    pthread_mutex_unlock(&pool->lock);
    if (rest)
        run_batch(pool, rest);
}

void kv_worker_pool_destroy(struct kv_worker_pool *pool)
{
    if (!pool)
        return;
    pthread_cond_destroy(&pool->cond);
    pthread_mutex_destroy(&pool->lock);
    kv_mem_free(KV_MOD_TASK, pool->threads);
    kv_mem_free(KV_MOD_TASK, pool);
}

void kv_worker_pool_stats(struct kv_worker_pool *pool, struct kv_worker_stats *out)
{
    pthread_mutex_lock(&pool->lock);
    out->batches = pool->batches;
    out->calls = pool->calls;
    out->wakeups = pool->wakeups;
    out->queued = pool->queued;
    pthread_mutex_unlock(&pool->lock);
}
