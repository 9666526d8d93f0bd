/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/save.c -- SAVE, BGSAVE and --load-rdb of the server: the RDB
 * code (rdb.c) driven with the server's store, configuration and log.
 *
 * One save runs at a time (SAVE or BGSAVE). BGSAVE scans the store from a
 * thread of its own while every other thread goes on serving; the server
 * waits for it before the store is closed. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kv_err.h"
#include "kv_shm.h"
#include "rdb.h"
#include "server_int.h"

static double mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void kv_server_save_init(struct kv_server *srv)
{
    pthread_rwlockattr_t a;

    pthread_rwlockattr_init(&a);
    /* the save's last try must get in between back-to-back EXECs */
    pthread_rwlockattr_setkind_np(&a, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&srv->save.exec_hold, &a);
    pthread_rwlockattr_destroy(&a);
    pthread_mutex_init(&srv->save.lock, NULL);
    pthread_cond_init(&srv->save.idle, NULL);
    srv->save.last_ok = 1;
}

/* Writes the file and records the outcome; the caller set running. A
 * BGSAVE thread touches nothing of srv after the lock is released here. */
struct exec_check {
    struct kv_server *srv;
    uint64_t seq; /* exec_seq when the scan began */
};

/* No EXEC was changing the store when the scan began, and none has since. */
static int exec_unchanged(void *arg)
{
    struct exec_check *c = arg;

    return !(c->seq & 1) && __atomic_load_n(&c->srv->save.exec_seq, __ATOMIC_ACQUIRE) == c->seq;
}

#define SAVE_EXEC_TRIES 2 /* scans redone because an EXEC ran, before EXECs are held */

/* The RDB file, never with part of an EXEC: the scan reads key by key while the others
 * serve (as any write, an EXEC may land in the middle of it). A scan an EXEC ran during is
 * redone; the last try holds EXECs off (they wait outside the workers' gate, so only
 * connections running EXEC wait, for at most one scan). */
static int save_exec_consistent(struct kv_server *srv, struct kv_rdb_counts *cnt, char *err,
                                size_t errcap, int *tries)
{
    int rc = KV_EAGAIN;

    for (*tries = 0; rc == KV_EAGAIN && *tries <= SAVE_EXEC_TRIES; (*tries)++) {
        struct exec_check c = {srv, 0};
        int hold = *tries == SAVE_EXEC_TRIES;

        if (hold)
            pthread_rwlock_wrlock(&srv->save.exec_hold);
        c.seq = __atomic_load_n(&srv->save.exec_seq, __ATOMIC_ACQUIRE);
        rc = kv_rdb_save_checked(srv->store, srv->cfg->rdb_file, cnt, err, errcap,
                                 hold ? NULL : exec_unchanged, &c);
        if (hold)
            pthread_rwlock_unlock(&srv->save.exec_hold);
    }
    return rc;
}

static int do_save(struct kv_server *srv, int background, char *err, size_t errcap)
{
    struct kv_rdb_counts cnt;
    time_t started = time(NULL);
    double t0 = mono_ms();
    const char *what = background ? "BGSAVE" : "SAVE";
    int tries;
    int rc = save_exec_consistent(srv, &cnt, err, errcap, &tries);

    if (rc == 0)
        kv_server_log(srv->cfg, 2, "%s: %llu keys, %llu bytes written to %s in %.1f ms "
                      "(%llu keys reported twice by the scan, written once; %d scans: "
                      "one is redone when an EXEC ran during it)", what,
                      (unsigned long long)cnt.strings, (unsigned long long)cnt.bytes,
                      srv->cfg->rdb_file, mono_ms() - t0, (unsigned long long)cnt.repeats, tries);
    else
        kv_server_log(srv->cfg, 0, "%s to %s failed: %s", what, srv->cfg->rdb_file, err);
    pthread_mutex_lock(&srv->save.lock);
    srv->save.running = 0;
    srv->save.joinable = background;
    srv->save.last_ok = rc == 0;
    if (rc == 0)
        srv->save.last_save = (int64_t)started;
    pthread_cond_broadcast(&srv->save.idle);
    pthread_mutex_unlock(&srv->save.lock);
    return rc;
}

static void *bgsave_main(void *arg)
{
    struct kv_server *srv = arg;
    char err[512];

    do_save(srv, 1, err, sizeof(err));
    return NULL;
}

int kv_server_save(struct kv_server *srv, int background, char *err, size_t errcap)
{
    pthread_t old = 0;
    int join = 0, rc;

    if (!srv->cfg->rdb_file[0]) {
        snprintf(err, errcap, "no --rdb-file: the server was not told where to save");
        return KV_EINVAL;
    }
    pthread_mutex_lock(&srv->save.lock);
    if (srv->save.running) {
        pthread_mutex_unlock(&srv->save.lock);
        snprintf(err, errcap, "a save is already in progress");
        return KV_EAGAIN;
    }
    if (srv->save.joinable) { /* the last BGSAVE's thread has ended: reap it */
        old = srv->save.tid;
        srv->save.joinable = 0;
        join = 1;
    }
    srv->save.running = 1;
    pthread_mutex_unlock(&srv->save.lock);
    if (join)
        pthread_join(old, NULL);
    if (!background)
        return do_save(srv, 0, err, errcap);
    {
        sigset_t all, prev;

        sigfillset(&all); /* signals stay with the main thread */
        pthread_sigmask(SIG_BLOCK, &all, &prev);
        pthread_mutex_lock(&srv->save.lock);
        rc = pthread_create(&srv->save.tid, NULL, bgsave_main, srv);
        if (rc != 0)
            srv->save.running = 0;
        pthread_mutex_unlock(&srv->save.lock);
        pthread_sigmask(SIG_SETMASK, &prev, NULL);
    }
    if (rc != 0) {
        snprintf(err, errcap, "cannot start the BGSAVE thread: %s", strerror(rc));
        return KV_ENOMEM;
    }
    return 0;
}

int64_t kv_server_last_save(struct kv_server *srv, int *running, int *last_ok)
{
    int64_t t;

    pthread_mutex_lock(&srv->save.lock);
    t = srv->save.last_save;
    if (running)
        *running = srv->save.running;
    if (last_ok)
        *last_ok = srv->save.last_ok;
    pthread_mutex_unlock(&srv->save.lock);
    return t;
}

void kv_server_save_fini(struct kv_server *srv)
{
    pthread_t tid = 0;
    int join = 0;

    pthread_mutex_lock(&srv->save.lock);
    while (srv->save.running)
        pthread_cond_wait(&srv->save.idle, &srv->save.lock);
    if (srv->save.joinable) {
        tid = srv->save.tid;
        srv->save.joinable = 0;
        join = 1;
    }
    pthread_mutex_unlock(&srv->save.lock);
    if (join)
        pthread_join(tid, NULL);
}

int kv_server_load_rdb(struct kv_server *srv, char *err, size_t errcap)
{
    const struct kv_config *cfg = srv->cfg;
    struct kv_rdb_counts cnt;
    struct kv_shm_stats st;
    double t0 = mono_ms();
    int rc;

    if (kv_shm_stats(srv->store, &st) == 0 && st.keys > 0) {
        kv_server_log(cfg, 1, "--load-rdb %s: the store already holds %llu keys; not "
                      "imported (it imports into an empty store only: FLUSHALL, or remove "
                      "the store, to import again)", cfg->load_rdb,
                      (unsigned long long)st.keys);
        return 0;
    }
    rc = kv_rdb_load(srv->store, cfg, cfg->load_rdb, &cnt, err, errcap);
    if (rc != 0) {
        char why[512];

        snprintf(why, sizeof(why), "%s", err);
        snprintf(err, errcap, "--load-rdb %s: %s", cfg->load_rdb, why);
        return rc;
    }
    srv->rdb_imported = cnt.strings;
    kv_server_log(cfg, 2, "--load-rdb %s (RDB version %u, %llu bytes): %llu string keys "
                  "imported in %.1f ms; skipped: %llu keys of other types, %llu expired, "
                  "%llu too large, %llu in other dbs, %llu functions/module aux",
                  cfg->load_rdb, cnt.version, (unsigned long long)cnt.bytes,
                  (unsigned long long)cnt.strings, mono_ms() - t0,
                  (unsigned long long)cnt.other_types, (unsigned long long)cnt.expired,
                  (unsigned long long)cnt.too_large, (unsigned long long)cnt.other_dbs,
                  (unsigned long long)cnt.functions);
    return 0;
}
