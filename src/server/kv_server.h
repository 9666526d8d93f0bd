/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/kv_server.h -- the libevkv server: io + worker pool + store,
 * wired together, with the key-value handlers registered by opcode. */
#ifndef KV_SERVER_H
#define KV_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "kv_config.h"

struct kv_server;

/* Builds everything (binds the socket, opens the store) without starting
 * threads. On failure writes a one-line reason to err. */
int kv_server_create(const struct kv_config *cfg, char *err, size_t errcap,
                     struct kv_server **out);
int kv_server_start(struct kv_server *srv);
/* Graceful stop: see kv_io_stop(); then the worker pool drains and stops. */
void kv_server_stop(struct kv_server *srv);
void kv_server_destroy(struct kv_server *srv);
uint16_t kv_server_port(const struct kv_server *srv);

/* Writes the statistics table (memory per module, in-flight counts, event
 * counters, worker pool figures) as text. Safe from any thread at any time
 * between create and destroy. Returns the length written. */
size_t kv_server_format_stats(struct kv_server *srv, char *buf, size_t cap);

/* One line for the start-up log: where the store is (and whether it
 * survives a reboot), its size, and whether it was created empty, found
 * empty, kept from a clean stop or recovered. Returns the length written. */
size_t kv_server_store_summary(struct kv_server *srv, char *buf, size_t cap);

/* Sends state ("READY=1\nSTATUS=...") to systemd's $NOTIFY_SOCKET (see
 * sd_notify(3)); 0 when sent or when there is no NOTIFY_SOCKET, KV_EIO
 * with errno set when sending failed. */
int kv_server_notify(const char *state);

/* Periodic housekeeping (the incremental expiry sweep); main calls it from
 * a timer every KV_SERVER_TICK seconds. */
#define KV_SERVER_TICK 0.1
void kv_server_tick(struct kv_server *srv);

/* Handlers (handlers.c). */
struct kv_worker_registry;
int kv_server_handlers_register(struct kv_server *srv, struct kv_worker_registry *reg);

/* One log line on stderr with a [server] tag, if level <= cfg->log_level. */
void kv_server_log(const struct kv_config *cfg, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
