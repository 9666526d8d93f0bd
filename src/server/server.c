/* src/server/server.c -- builds, starts and stops the pieces of libevkv.
 *
 * The IO threads' dispatch callback is the worker pool's submit, and the
 * pool's done callback is kv_io_complete(): that is all the wiring the RPC
 * framework needs. Stop order matters: the IO side stops first (it waits for
 * every call with the workers), then the pool. */
#include "kv_server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kv_err.h"
#include "kv_io.h"
#include "kv_mem.h"
#include "kv_print.h"
#include "kv_shm.h"
#include "kv_worker.h"
#include "server_int.h"

#define KV_SWEEP_BUCKETS_PER_TICK 1024


void kv_server_log(const struct kv_config *cfg, int level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n;

    if (level > cfg->log_level)
        return;
    n = snprintf(line, sizeof(line), "[server] ");
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    kv_print_write(STDERR_FILENO, line, (size_t)n); /* never blocks; drops are counted */
}

static void dispatch(void *ctx, struct kv_call *calls)
{
    struct kv_server *srv = ctx;

    kv_worker_pool_submit(srv->pool, calls);
}

static void done(void *ctx, void *origin, struct kv_call *calls)
{
    kv_io_complete(origin, calls);
}

int kv_server_create(const struct kv_config *cfg, char *err, size_t errcap,
                     struct kv_server **out)
{
    struct kv_server *srv = kv_mem_calloc(KV_MOD_SERVER, sizeof(*srv));
    struct kv_io_textproto text;
    int rc;

    if (errcap)
        err[0] = '\0';
    if (!srv) {
        snprintf(err, errcap, "out of memory");
        return KV_ENOMEM;
    }
    srv->cfg = cfg;
    rc = kv_shm_store_open(cfg, err, errcap, &srv->store);
    if (rc != 0) {
        if (err[0] == '\0')
            snprintf(err, errcap, "cannot open the store: %s", kv_strerror(rc));
        goto err_destroy;
    }
    if (err[0])
        kv_server_log(cfg, 1, "store: %s", err);
    err[0] = '\0';
    if (cfg->huge_pages != KV_HUGE_OFF && kv_shm_huge_bytes(srv->store) == 0) {
        if (cfg->huge_pages == KV_HUGE_REQUIRE) {
            struct kv_shm_stats st;

            snprintf(err, errcap, "--huge-pages require: the store is not on huge pages; "
                     "put it on a tmpfs mounted with huge=always (README, \"Huge pages\")");
            /* a segment this very start created (first open, nothing in it) is
             * not left behind; unlinked while still locked, so that no other
             * server can open it in between. Any older segment is kept. */
            if (kv_shm_stats(srv->store, &st) == 0 && st.generation == 1 && st.keys == 0)
                kv_shm_store_unlink(cfg);
            kv_shm_store_close(srv->store);
            srv->store = NULL;
            rc = KV_EINVAL;
            goto err_destroy;
        }
        kv_server_log(cfg, 2, "store: the segment is not on huge pages; lookups run faster "
                      "when its tmpfs allows them (README, \"Huge pages\")");
    }
    rc = kv_worker_registry_create(&srv->reg);
    if (rc == 0)
        rc = kv_server_handlers_register(srv, srv->reg);
    if (rc != 0) {
        snprintf(err, errcap, "handler registry: %s", kv_strerror(rc));
        goto err_destroy;
    }
    kv_server_resp_adapter(srv, &text);
    rc = kv_io_create(cfg, dispatch, srv, &text, &srv->io);
    if (rc != 0) {
        snprintf(err, errcap, "cannot listen on %s:%u: %s", cfg->bind_addr, cfg->port,
                 rc == KV_EIO || rc == KV_EINVAL ? strerror(errno) : kv_strerror(rc));
        goto err_destroy;
    }
    *out = srv;
    return 0;

err_destroy:
    kv_server_destroy(srv);
    return rc;
}

int kv_server_start(struct kv_server *srv)
{
    int rc = kv_worker_pool_create(srv->cfg, srv->reg, done, srv, &srv->pool);

    if (rc != 0)
        return rc;
    return kv_io_start(srv->io);
}

void kv_server_stop(struct kv_server *srv)
{
    if (srv->io)
        kv_io_stop(srv->io);
    if (srv->pool)
        kv_worker_pool_stop(srv->pool);
}

void kv_server_destroy(struct kv_server *srv)
{
    if (!srv)
        return;
    kv_io_destroy(srv->io);
    kv_worker_pool_destroy(srv->pool);
    kv_worker_registry_destroy(srv->reg);
    if (srv->store)
        kv_shm_store_close(srv->store);
    kv_mem_free(KV_MOD_SERVER, srv);
}

uint16_t kv_server_port(const struct kv_server *srv)
{
    return kv_io_port(srv->io);
}

size_t kv_server_format_stats(struct kv_server *srv, char *buf, size_t cap)
{
    struct kv_mem_snapshot snap;
    struct kv_worker_stats ws = {0};
    struct kv_shm_stats st;
    size_t len;

    kv_mem_snapshot(&snap);
    len = kv_mem_format(&snap, buf, cap);
    if (srv->pool) {
        kv_worker_pool_stats(srv->pool, &ws);
        len = kv_mem_appendf(buf, cap, len,
                      "worker_batches %llu\nworker_calls %llu\nworker_wakeups %llu\n"
                      "worker_queued %zu\n",
                      (unsigned long long)ws.batches, (unsigned long long)ws.calls,
                      (unsigned long long)ws.wakeups, ws.queued);
    }
    if (srv->store && kv_shm_stats(srv->store, &st) == 0) {
        len = kv_mem_appendf(buf, cap, len,
                      "store keys %llu, bytes used %llu of %llu (free %llu), index buckets "
                      "%llu (%llu bytes)\n"
                      "store hits %llu, misses %llu, evictions %llu, expired %llu, corrupt %llu\n"
                      "store generation %llu, recovered %d (kept %llu, dropped %llu, %.1f ms)\n"
                      "store mapped on huge pages %llu bytes\n",
                      (unsigned long long)st.keys, (unsigned long long)st.bytes_used,
                      (unsigned long long)st.segment_size, (unsigned long long)st.bytes_free,
                      (unsigned long long)st.index_buckets, (unsigned long long)st.index_bytes,
                      (unsigned long long)st.hits, (unsigned long long)st.misses,
                      (unsigned long long)st.evictions, (unsigned long long)st.expired,
                      (unsigned long long)st.corrupt, (unsigned long long)st.generation,
                      st.recovered, (unsigned long long)st.recovered_items,
                      (unsigned long long)st.dropped_items, (double)st.recovery_ns / 1e6,
                      (unsigned long long)st.huge_bytes);
    }
    return len;
}

void kv_server_tick(struct kv_server *srv)
{
    if (srv->store)
        kv_shm_sweep(srv->store, KV_SWEEP_BUCKETS_PER_TICK);
}
