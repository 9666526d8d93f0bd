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

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "kv_err.h"
#include "kv_mem.h"

struct kv_worker_registry {
    struct {
        kv_handler_fn fn;
        kv_prefetch_fn prefetch; /* may be NULL */
        void *ctx;
    } h[KV_WORKER_MAX_OPCODE]; /* ro after start */
    int any_prefetch;          /* ro after start */
};

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
    *out = r;
    return 0;
}

void kv_worker_registry_destroy(struct kv_worker_registry *reg)
{
    kv_mem_free(KV_MOD_TASK, reg);
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

void kv_worker_run(const struct kv_worker_registry *reg, struct kv_call *call)
{
    call->status = KV_ST_OK;
    if (call->opcode >= KV_WORKER_MAX_OPCODE || !reg->h[call->opcode].fn) {
        call->status = KV_ST_UNKNOWN_OPCODE;
        return;
    }
    reg->h[call->opcode].fn(reg->h[call->opcode].ctx, call);
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
            kv_worker_run(reg, last);
            if (!last->next || last->next->origin != first->origin)
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
