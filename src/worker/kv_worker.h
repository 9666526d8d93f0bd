/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/worker/kv_worker.h -- the worker pool and the handler registry.
 *
 * Half of libevkv's small RPC framework (the other half is src/io). It knows
 * nothing of keys and values: a handler is a function registered for an
 * opcode, and the pool runs batches of kv_calls through the registry on M
 * threads. Calls go in as one batch with one wake-up, and a worker returns
 * everything it finished for one origin (IO thread) with one call of the
 * done callback.
 *
 * With 0 workers the pool runs each batch inline in the submitting thread;
 * that saves two thread hand-offs per round trip on a machine with few
 * cores. */
#ifndef KV_WORKER_H
#define KV_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "kv_call.h"
#include "kv_config.h"

/* A handler fills call->status and, if it answers a body, call->resp /
 * resp_len / resp_owned; an answer of up to call->scratch_cap bytes may be
 * written at call->scratch instead of a packet (resp = scratch, resp_owned
 * 0). It must not block for long and must not keep call->body after it
 * returns. */
typedef void (*kv_handler_fn)(void *ctx, struct kv_call *call);

/* Receives finished calls, linked by ->next, all of the same origin. */
typedef void (*kv_worker_done_fn)(void *done_ctx, void *origin, struct kv_call *calls);

#define KV_WORKER_MAX_OPCODE 256

struct kv_worker_registry;
struct kv_worker_pool;

int kv_worker_registry_create(struct kv_worker_registry **out);
void kv_worker_registry_destroy(struct kv_worker_registry *reg);
/* Registers fn for opcode (< KV_WORKER_MAX_OPCODE). Returns KV_EINVAL for an
 * opcode out of range, KV_EEXISTS when one is registered already. */
int kv_worker_register(struct kv_worker_registry *reg, uint16_t opcode, kv_handler_fn fn,
                       void *ctx);
/* An optional cache hint for an opcode's handler: called with stage 0, then
 * 1, for every call of a window of a batch before the handlers run, so the
 * window's memory misses overlap (see kv_shm_prefetch). */
typedef void (*kv_prefetch_fn)(void *ctx, struct kv_call *call, int stage);
int kv_worker_register_prefetch(struct kv_worker_registry *reg, uint16_t opcode,
                                kv_prefetch_fn fn);

/* Runs the prefetch hook of call->opcode for stage, if it has one. */
void kv_worker_prefetch(const struct kv_worker_registry *reg, struct kv_call *call, int stage);

/* Runs the handler of call->opcode, or answers UNKNOWN_OPCODE. The handler runs inside
 * reg's gate (see kv_worker_exclusive). */
void kv_worker_run(const struct kv_worker_registry *reg, struct kv_call *call);
/* Before start: solo = only one thread will ever run handlers (one IO thread, no workers).
 * kv_worker_run then skips the gate: exclusive sections are opened by handlers only, so
 * that thread is the only one they could exclude, and it is the one running them. Other
 * users of the gate (the expiry sweep) still enter it and are still excluded. */
void kv_worker_registry_set_solo(struct kv_worker_registry *reg, int solo);

/* The gate of reg: every handler run is inside it (shared, on a slot of the calling
 * thread's own), and an exclusive section runs alone. A thread that changes what the
 * handlers share outside a call (a background sweep) brackets that work with enter and
 * leave. Nestable; any thread. */
void kv_worker_gate_enter(const struct kv_worker_registry *reg);
void kv_worker_gate_leave(const struct kv_worker_registry *reg);
/* Runs fn(ctx) while no handler runs on any other thread and no thread is inside the
 * gate (the caller may be inside it: it steps out while it waits). Calls of
 * kv_worker_run made from fn run at once, without the gate: EXEC's sub-requests. One
 * section at a time; others wait. */
void kv_worker_exclusive(const struct kv_worker_registry *reg, void (*fn)(void *ctx), void *ctx);

/* Creates a pool of cfg->workers threads (0 = inline) and starts them. reg
 * must outlive the pool. */
int kv_worker_pool_create(const struct kv_config *cfg, const struct kv_worker_registry *reg,
                          kv_worker_done_fn done, void *done_ctx, struct kv_worker_pool **out);
/* Queues a batch (linked by ->next, any origins). Thread-safe. */
void kv_worker_pool_submit(struct kv_worker_pool *pool, struct kv_call *calls);
/* Runs everything queued, then stops and joins the threads. */
void kv_worker_pool_stop(struct kv_worker_pool *pool);
void kv_worker_pool_destroy(struct kv_worker_pool *pool);

struct kv_worker_stats {
    uint64_t batches;   /* batches taken by workers */
    uint64_t calls;     /* calls run */
    uint64_t wakeups;   /* condition signals sent */
    size_t queued;      /* calls waiting now */
};
void kv_worker_pool_stats(struct kv_worker_pool *pool, struct kv_worker_stats *out);

#endif
