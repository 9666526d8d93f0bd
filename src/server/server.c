/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
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
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "kv_err.h"
#include "kv_io.h"
#include "kv_log.h"
#include "kv_mem.h"
#include "kv_print.h"
#include "kv_shm.h"
#include "kv_worker.h"
#include "server_int.h"

#define KV_SWEEP_BUCKETS_PER_TICK 1024


void kv_server_log(const struct kv_config *cfg, int level, const char *fmt, ...)
{
    va_list ap;

    if (level > cfg->log_level)
        return;
    va_start(ap, fmt);
    kv_log_vwrite(level, "server", fmt, ap);
    va_end(ap);
}

static size_t store_state(struct kv_server *srv, char *buf, size_t cap);

static void dispatch(void *ctx, struct kv_call *calls)
{
    struct kv_server *srv = ctx;

    kv_worker_pool_submit(srv->pool, calls);
}

/* --sync always and a failed msync: what the waiting answers acknowledge is in memory
 * only, and Linux may have dropped the dirty pages' error state, so retrying proves
 * nothing. As Redis does for an AOF fsync error under appendfsync always: log and exit at
 * once -- no answer leaves, no clean mark is written, and the next start recovers the
 * file. */
static void sync_failed_exit(struct kv_server *srv)
{
    struct kv_shm_sync_stats st;

    kv_shm_sync_stats(srv->store, &st);
    kv_server_log(srv->cfg, KV_LOG_ERROR,
                  "msync of the data file failed under --sync always (%s): exiting without "
                  "answering the writes it covered; the next start recovers the file",
                  strerror(st.last_errno));
    _exit(EXIT_FAILURE);
}

static void done(void *ctx, void *origin, struct kv_call *calls)
{
    struct kv_server *srv = ctx;

    /* --sync always: no answer of this batch leaves before a sync that began after its
     * writes has completed; workers finishing meanwhile share that sync (group commit). */
    if (srv->cfg->sync == KV_SYNC_ALWAYS && srv->store &&
        kv_shm_sync_barrier(srv->store) == KV_EIO)
        sync_failed_exit(srv);
    kv_io_complete(origin, calls);
}

/* SAVE writes PATH.tmp-PID beside PATH and renames it: the directory must exist and be
 * writable, and PATH must not be a directory. */
static int rdb_dir_check(const char *path, char *err, size_t errcap)
{
    char dir[1024], what[1100];
    const char *slash = strrchr(path, '/');
    struct stat st;

    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else
        snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(what, sizeof(what), "it is a directory");
    else if (stat(dir, &st) != 0 || (!S_ISDIR(st.st_mode) && (errno = ENOTDIR)) ||
             access(dir, W_OK | X_OK) != 0)
        snprintf(what, sizeof(what), "directory %s: %s", dir, strerror(errno));
    else
        return 0;
    snprintf(err, errcap, "--rdb-file %s: %s (SAVE and BGSAVE write there); the store was not "
             "touched", path, what);
    return KV_EINVAL;
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
    /* the caller's struct is writable (main's, a test's); CONFIG SET changes
     * only the fields whose readers read them on each use (KV_CF_RUNTIME) */
    srv->cfg_rw = (struct kv_config *)cfg;
    kv_server_save_init(srv);
    kv_server_stats_init(srv);
    /* the socket first: a bad --bind or a busy port must not create (or
     * recover, or mark) a store it will never serve. No thread runs yet, so
     * nothing is accepted before the store is open. */
    kv_server_resp_adapter(srv, &text);
    rc = kv_io_create(cfg, dispatch, srv, &text, err, errcap, &srv->io);
    if (rc == 0)
        srv->monitors = kv_io_monitor_count(srv->io);
    if (rc != 0) {
        size_t n = strlen(err);
        if (n == 0)
            snprintf(err, errcap, "cannot listen on %s:%u: %s", cfg->bind_addr, cfg->port,
                     rc == KV_EINVAL ? "not an IPv4 address"
                     : rc == KV_EIO  ? strerror(errno)
                                     : kv_strerror(rc));
        n = strlen(err);
        snprintf(err + n, errcap > n ? errcap - n : 0, "; the store was not touched");
        goto err_destroy;
    }
    /* a --rdb-file nobody can write is refused now, not at the first SAVE hours later */
    if (cfg->rdb_file[0] && (rc = rdb_dir_check(cfg->rdb_file, err, errcap)) != 0)
        goto err_destroy;
    /* the unit passes --data-file: an --shm-name added in /etc/default/libevkv would
     * otherwise be dropped without a word */
    if (cfg->data_file[0] && cfg->shm_name[0])
        kv_server_log(cfg, 1, "--shm-name %s is not used: the store is --data-file %s",
                      cfg->shm_name, cfg->data_file);
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
    store_state(srv, srv->store_state, sizeof(srv->store_state));
    if (cfg->load_rdb[0]) {
        rc = kv_server_load_rdb(srv, err, errcap);
        if (rc != 0) {
            struct kv_shm_stats st;

            /* a segment this very start created holds nothing but part of
             * the file: not left behind (unlinked while still locked) */
            if (kv_shm_stats(srv->store, &st) == 0 && st.generation == 1)
                kv_shm_store_unlink(cfg);
            goto err_destroy;
        }
    }
    rc = kv_worker_registry_create(&srv->reg);
    if (rc == 0)
        rc = kv_server_handlers_register(srv, srv->reg);
    if (rc == 0)
        rc = kv_server_txn_register(srv, srv->reg);
    kv_io_set_session_end(srv->io, kv_server_session_end, srv);
    if (rc != 0) {
        snprintf(err, errcap, "handler registry: %s", kv_strerror(rc));
        goto err_destroy;
    }
    kv_server_stats_reset(srv); /* INFO counts from this start, as Redis's does */
    *out = srv;
    return 0;

err_destroy:
    kv_server_destroy(srv);
    return rc;
}

int kv_server_start(struct kv_server *srv)
{
    int rc;

    kv_worker_registry_set_solo(srv->reg, srv->cfg->workers == 0 && srv->cfg->io_threads == 1);
    rc = kv_worker_pool_create(srv->cfg, srv->reg, done, srv, &srv->pool);
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
    kv_server_save_fini(srv); /* a BGSAVE still reads the store */
    if (srv->store)
        kv_shm_store_close(srv->store);
    pthread_mutex_destroy(&srv->save.lock);
    pthread_cond_destroy(&srv->save.idle);
    kv_server_stats_fini(srv);
    kv_mem_free(KV_MOD_SERVER, srv);
}

uint16_t kv_server_port(const struct kv_server *srv)
{
    return kv_io_port(srv->io);
}

/* Open connections per transport, then each unix peer (pid, uid), at most
 * KV_STATS_UNIX_PEERS of them: the table stays bounded however many
 * clients there are (CLIENT LIST lists every connection). */
#define KV_STATS_UNIX_PEERS 16
static size_t format_peers(struct kv_io *io, char *buf, size_t cap, size_t len)
{
    unsigned tcp, unx, listed = 0;

    kv_io_peer_counts(io, &tcp, &unx);
    {
        unsigned shm;
        uint64_t in, out;

        kv_io_ring_counts(io, &shm, &in, &out);
        len = kv_mem_appendf(buf, cap, len, "clients tcp %u, unix %u\n", tcp, unx);
        if (shm)
            len = kv_mem_appendf(buf, cap, len, "clients attached to shm rings %u: %llu bytes "
                                 "in, %llu out\n", shm, (unsigned long long)in,
                                 (unsigned long long)out);
    }
    if (unx && len < cap)
        len += kv_io_peers_format(io, 1, KV_STATS_UNIX_PEERS, buf + len, cap - len, &listed);
    if (listed < unx)
        len = kv_mem_appendf(buf, cap, len, "... %u more unix clients (CLIENT LIST lists all)\n",
                             unx - listed);
    return len;
}

size_t kv_server_format_stats(struct kv_server *srv, char *buf, size_t cap)
{
    struct kv_server_stats *st = kv_mem_alloc(KV_MOD_SERVER, sizeof(*st));
    size_t len;

    if (!st)
        return kv_mem_appendf(buf, cap, 0, "statistics: out of memory\n");
    kv_server_stats_collect(srv, st);
    len = kv_server_stats_table(srv, st, buf, cap);
    kv_mem_free(KV_MOD_SERVER, st);
    return len;
}

size_t kv_server_stats_table(struct kv_server *srv, const struct kv_server_stats *st, char *buf,
                             size_t cap)
{
    size_t len = kv_mem_format(&st->mem, buf, cap);

    if (st->have_io)
        len = format_peers(srv->io, buf, cap, len);
    if (st->have_pool) {
        const struct kv_worker_stats *ws = &st->pool;

        len = kv_mem_appendf(buf, cap, len,
                      "worker_batches %llu\nworker_calls %llu\nworker_wakeups %llu\n"
                      "worker_queued %zu\n",
                      (unsigned long long)ws->batches, (unsigned long long)ws->calls,
                      (unsigned long long)ws->wakeups, ws->queued);
    }
    if (st->have_store) {
        const struct kv_shm_stats *ss = &st->store;

        len = kv_mem_appendf(buf, cap, len,
                      "store keys %llu, bytes used %llu of %llu (free %llu), index buckets "
                      "%llu (%llu bytes)\n"
                      "store hits %llu, misses %llu, evictions %llu, expired %llu, corrupt %llu\n"
                      "store pages compacted %llu (items moved %llu), pages evicted %llu\n"
                      "store generation %llu, recovered %d (kept %llu, dropped %llu, %.1f ms)\n"
                      "store mapped on huge pages %llu bytes\n",
                      (unsigned long long)ss->keys, (unsigned long long)ss->bytes_used,
                      (unsigned long long)ss->segment_size, (unsigned long long)ss->bytes_free,
                      (unsigned long long)ss->index_buckets, (unsigned long long)ss->index_bytes,
                      (unsigned long long)ss->hits, (unsigned long long)ss->misses,
                      (unsigned long long)ss->evictions, (unsigned long long)ss->expired,
                      (unsigned long long)ss->corrupt, (unsigned long long)ss->pages_compacted,
                      (unsigned long long)ss->items_moved, (unsigned long long)ss->pages_evicted,
                      (unsigned long long)ss->generation,
                      ss->recovered, (unsigned long long)ss->recovered_items,
                      (unsigned long long)ss->dropped_items, (double)ss->recovery_ns / 1e6,
                      (unsigned long long)ss->huge_bytes);
    }
    return len;
}

void kv_server_tick(struct kv_server *srv)
{
    if (srv->store && srv->reg) {
        /* inside the workers' gate: an EXEC never sees a key expire under it */
        kv_worker_gate_enter(srv->reg);
        kv_shm_sweep(srv->store, KV_SWEEP_BUCKETS_PER_TICK);
        kv_worker_gate_leave(srv->reg);
    }
}

size_t kv_server_store_summary(struct kv_server *srv, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s", srv->store_state);

    if (srv->rdb_imported && n >= 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n, "; then %llu keys imported by --load-rdb",
                      (unsigned long long)srv->rdb_imported);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* The store as found at open, for the start-up line. */
static size_t store_state(struct kv_server *srv, char *buf, size_t cap)
{
    const struct kv_config *cfg = srv->cfg;
    struct kv_shm_stats st;
    struct statfs fs;
    char where[1100];
    const char *kind;
    int n;

    if (cfg->data_file[0]) {
        snprintf(where, sizeof(where), "%s", cfg->data_file);
        kind = statfs(cfg->data_file, &fs) == 0 && fs.f_type == 0x01021994 /* TMPFS_MAGIC */
                   ? "file on tmpfs, lost at reboot"
                   : "file";
    } else {
        snprintf(where, sizeof(where), "/dev/shm%s%s", cfg->shm_name[0] == '/' ? "" : "/",
                 cfg->shm_name[0] ? cfg->shm_name : "");
        if (!cfg->shm_name[0])
            snprintf(where, sizeof(where), "/dev/shm/libevkv-%u", (unsigned)cfg->port);
        kind = "shared memory, lost at reboot";
    }
    if (!srv->store || kv_shm_stats(srv->store, &st) != 0)
        return (size_t)snprintf(buf, cap, "store %s (%s)", where, kind);
    n = snprintf(buf, cap, "store %s (%s, %llu MiB): ", where, kind,
                 (unsigned long long)(st.segment_size >> 20));
    if (n < 0 || (size_t)n >= cap)
        return cap ? strlen(buf) : 0;
    if (st.recovered)
        n += snprintf(buf + n, cap - (size_t)n,
                      "recovered after an unclean stop, %llu keys kept, %llu items dropped, "
                      "%.1f ms",
                      (unsigned long long)st.recovered_items,
                      (unsigned long long)st.dropped_items, (double)st.recovery_ns / 1e6);
    else if (st.generation <= 1)
        n += snprintf(buf + n, cap - (size_t)n, "created empty");
    else if (st.keys == 0)
        n += snprintf(buf + n, cap - (size_t)n, "found empty");
    else
        n += snprintf(buf + n, cap - (size_t)n, "kept %llu keys from a clean stop",
                      (unsigned long long)st.keys);
    return (size_t)n < cap ? (size_t)n : cap - 1;
}
