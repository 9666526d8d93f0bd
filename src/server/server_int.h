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

struct kv_server {
    const struct kv_config *cfg;       /* borrowed: outlives the server */
    struct kv_worker_registry *reg;    /* owned */
    struct kv_worker_pool *pool;       /* owned */
    struct kv_io *io;                  /* owned */
    struct kv_shm_store *store;        /* owned: closed (clean mark) in destroy */
};

struct kv_io_textproto;
/* Fills the RESP adapter of the server (resp_cmds.c). */
void kv_server_resp_adapter(struct kv_server *srv, struct kv_io_textproto *out);

#endif
