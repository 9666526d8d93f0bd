/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/mem/kv_mem.h -- counted heap allocation, IO buffer pool, statistics.
 *
 * Every heap allocation in libevkv names the module it belongs to, so that
 * the signal-41 dump can say where every byte went and the exit table can
 * prove that nothing leaked. Counters are per thread (one cache-line-padded
 * slot each, written only by its thread) and summed on demand, so the hot
 * path takes no lock and shares no atomic cache line.
 *
 * Also here: a pool of IO buffers in size classes (per-thread caches, so a
 * busy connection does not malloc/free per read) and a few global event
 * counters (requests served, connections accepted, ...) kept the same way.
 *
 * Thread safety: every function may be called from any thread. */
#ifndef KV_MEM_H
#define KV_MEM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum kv_mod {
    KV_MOD_BUF,        /* IO receive buffers (messages' storage) */
    KV_MOD_POOL,       /* idle buffers parked in the pool caches */
    KV_MOD_MESSAGE,    /* message headers */
    KV_MOD_REQUEST,    /* in-flight requests */
    KV_MOD_PACKET,     /* response bodies */
    KV_MOD_CONNECTION, /* connections */
    KV_MOD_QUEUE,      /* hand-off queues between threads */
    KV_MOD_TASK,       /* worker pool and registry */
    KV_MOD_THREAD,     /* IO/listener thread state */
    KV_MOD_PROTO,      /* protobuf-c decode/encode scratch */
    KV_MOD_SHM,        /* process-local state of the shared-memory store */
    KV_MOD_CLIENT,     /* client library */
    KV_MOD_SERVER,     /* server wiring, options */
    KV_MOD_TEST,       /* unit tests */
    KV_MOD_RING,       /* shared-memory rings of attached clients: the mappings and their state */
    KV_MOD__COUNT
};

/* Event counters (monotonic), kept per thread like the memory counters. */
enum kv_stat {
    KV_STAT_CONNS_ACCEPTED,
    KV_STAT_CONNS_CLOSED,
    KV_STAT_CONNS_REJECTED,   /* refused by --max-conns */
    KV_STAT_REQUESTS,         /* requests executed */
    KV_STAT_RESPONSES,        /* responses fully written */
    KV_STAT_DROPPED,          /* responses whose peer had gone */
    KV_STAT_PROTO_ERRORS,     /* bad frames (magic, version, crc, size) */
    KV_STAT_TIMEOUTS,         /* closed by --idle-timeout or --frame-timeout */
    KV_STAT_OUTPUT_LIMIT,     /* closed by --output-hard-limit */
    KV_STAT_BYTES_IN,
    KV_STAT_BYTES_OUT,
    KV_STAT_CLIENT_MEMORY,    /* gauge, not monotonic: bytes in the --max-client-memory
                               * budget now (added and subtracted modulo 2^64, so the
                               * sum over threads is exact) */
    KV_STAT_CLIENT_MEM_CLOSES,/* connections closed by --max-client-memory */
    KV_STAT_AUTH_FAILURES,    /* wrong passwords */
    KV_STAT_PRINT_DROPPED,    /* bytes of log or statistics output dropped: stdout/stderr full */
    KV_STAT_ACCEPT_PAUSES,    /* accepts paused for lack of descriptors (EMFILE, ENFILE) */
    KV_STAT__COUNT
};

/* Returns the static name of a module ("BUF", "MESSAGE", ...). */
const char *kv_mem_mod_name(enum kv_mod mod);
const char *kv_mem_stat_name(enum kv_stat stat);

/* malloc/calloc/realloc/free counted against a module. Blocks carry a small
 * header recording their size and module; freeing against the wrong module
 * aborts in debug builds. Return NULL on allocation failure (never abort). */
void *kv_mem_alloc(enum kv_mod mod, size_t size);
void *kv_mem_calloc(enum kv_mod mod, size_t size);
void *kv_mem_realloc(enum kv_mod mod, void *p, size_t size);
void kv_mem_free(enum kv_mod mod, void *p);
char *kv_mem_strdup(enum kv_mod mod, const char *s);

/* Counts bytes held by mod that are not heap blocks (a mapping): > 0 as one allocation,
 * < 0 as one free. */
void kv_mem_account(enum kv_mod mod, int64_t bytes);

/* Adds n to an event counter of the calling thread. */
void kv_mem_stat_add(enum kv_stat stat, uint64_t n);

/* ---- IO buffer pool ----------------------------------------------------
 * Buffers come in power-of-two classes from KV_POOL_MIN to KV_POOL_MAX;
 * larger ones go straight to the heap. A freed buffer goes to the calling
 * thread's cache (up to a byte cap); the cache is drained when the thread
 * exits or at kv_mem_pool_drain(). Buffers in use count under KV_MOD_BUF;
 * idle cached ones under KV_MOD_POOL. */
#define KV_POOL_MIN 4096u
#define KV_POOL_MAX (1u << 20)

/* Returns a buffer of at least size bytes and writes its real capacity to
 * *cap, or NULL on allocation failure. */
void *kv_mem_buf_get(size_t size, size_t *cap);
/* Returns a buffer obtained from kv_mem_buf_get (cap as returned there). */
void kv_mem_buf_put(void *buf, size_t cap);
/* Frees the calling thread's cached buffers. */
void kv_mem_pool_drain(void);

/* ---- small-object cache -------------------------------------------------
 * For objects made and freed at a high rate on one thread (requests): a
 * per-thread free list per 64-byte size class up to KV_OBJ_MAX, so the hot
 * path does not go to malloc. The object counts under mod while in use (so
 * in-flight counts stay exact), under KV_MOD_POOL while cached. Objects may
 * be returned on another thread; kv_mem_pool_drain() empties the cache. */
#define KV_OBJ_MAX 1024u
void *kv_mem_obj_get(enum kv_mod mod, size_t size);
void kv_mem_obj_put(enum kv_mod mod, void *p, size_t size);

/* ---- snapshots ---------------------------------------------------------- */
struct kv_mem_row {
    int64_t bytes;  /* bytes held now */
    uint64_t allocs;
    uint64_t frees;
};

struct kv_mem_snapshot {
    struct kv_mem_row mod[KV_MOD__COUNT];
    uint64_t stat[KV_STAT__COUNT];
};

/* Sums every thread's counters into *out. Safe at any moment, from any
 * thread, under load: counters are read with relaxed atomic loads, so a
 * snapshot taken while others run is a consistent-enough sample (each
 * counter exact, rows not mutually atomic). */
void kv_mem_snapshot(struct kv_mem_snapshot *out);

/* Writes the table (module, bytes held, allocs, frees; then counts of
 * connections, messages and requests in flight and the event counters) to
 * buf as text. Returns the length written (truncated to cap-1). */
size_t kv_mem_format(const struct kv_mem_snapshot *s, char *buf, size_t cap);

/* Appends printf output to buf[len..cap) for tables like the one above:
 * returns the new length, truncated to cap - 1 (buf stays terminated). */
size_t kv_mem_appendf(char *buf, size_t cap, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Bytes held by the modules of *s, summed; 0 means nothing leaked. */
int64_t kv_mem_held_total(const struct kv_mem_snapshot *s);

#endif
