/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/server_int.h -- the server struct, shared by the files of
 * src/server only (wiring in server.c, handlers in handlers.c). */
#ifndef KV_SERVER_INT_H
#define KV_SERVER_INT_H

#include "kv_config.h"
#include "kv_server.h"

struct kv_worker_registry;
struct kv_worker_pool;
struct kv_io;
struct kv_shm_store;

#include <pthread.h>
#include <stdint.h>

/* SAVE / BGSAVE (save.c). The lock guards every field. */
struct kv_server_save {
    pthread_mutex_t lock;
    pthread_cond_t idle;               /* signalled when a BGSAVE ends */
    int running;                       /* a SAVE or BGSAVE is writing */
    int joinable;                      /* a finished BGSAVE thread not yet joined */
    pthread_t tid;
    int64_t last_save;                 /* unix time of the last good save (start time) */
    int last_ok;                       /* the last save succeeded */
};

struct kv_server {
    const struct kv_config *cfg;       /* borrowed: outlives the server */
    struct kv_server_save save;
    char store_state[1300];            /* ro after create: the store as found at open */
    uint64_t rdb_imported;             /* ro after create: keys --load-rdb imported */
    struct kv_worker_registry *reg;    /* owned */
    struct kv_worker_pool *pool;       /* owned */
    struct kv_io *io;                  /* owned */
    struct kv_shm_store *store;        /* owned: closed (clean mark) in destroy */
};

struct kv_io_textproto;
/* Fills the RESP adapter of the server (resp_cmds.c). */
void kv_server_resp_adapter(struct kv_server *srv, struct kv_io_textproto *out);

/* txn.c: the EXEC and WATCH handlers (opcodes 16, 17), and what a session keeps. */
int kv_server_txn_register(struct kv_server *srv, struct kv_worker_registry *reg);
struct kv_session;
/* The IO side's session-end hook: frees the session's watch list and MULTI queue. */
void kv_server_session_end(void *ctx, struct kv_session *s);
/* resp_cmds.c: frees the MULTI queue of a session (io thread). */
void kv_server_resp_session_end(struct kv_session *s);

/* SAVE (background 0: in the caller's thread) or BGSAVE (a thread of its
 * own) to cfg->rdb_file. 0 when written (SAVE) or started (BGSAVE);
 * KV_EAGAIN when a save is already running; KV_EINVAL without --rdb-file;
 * else the failure, with a reason in err. */
int kv_server_save(struct kv_server *srv, int background, char *err, size_t errcap);
/* Unix time of the last good save (0: none) and whether a BGSAVE runs. */
int64_t kv_server_last_save(struct kv_server *srv, int *running, int *last_ok);
void kv_server_save_init(struct kv_server *srv);
/* Waits for a running BGSAVE (the store must outlive it). */
void kv_server_save_fini(struct kv_server *srv);
/* --load-rdb: imports cfg->load_rdb into an empty store; logs what it did. */
int kv_server_load_rdb(struct kv_server *srv, char *err, size_t errcap);

#endif
