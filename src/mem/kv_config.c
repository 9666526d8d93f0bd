/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/mem/kv_config.c -- documented defaults of struct kv_config. */
#include "kv_config.h"

#include <string.h>
#include <unistd.h>

void kv_config_defaults(struct kv_config *c)
{
    memset(c, 0, sizeof(*c));
    strcpy(c->bind_addr, "127.0.0.1");
    c->port = 7379;
    c->unix_perm = 0700;
    /* measured on 2 shared cores: every hand-off to a worker thread costs a
     * wake-up, and a third runnable thread only competes with the IO thread
     * and the clients, so small machines run handlers inline (record.md) */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    c->io_threads = cores >= 8 ? (unsigned)(cores / 4) : 1;
    c->workers = cores <= 2 ? 0 : (unsigned)(cores - c->io_threads);
    c->max_body = 16u << 20;
    /* a healthy client pipelining 64 deep holds a few KiB of output (record.md,
     * "Client memory"): 1 MiB before reading pauses, 8 MiB before a close */
    c->max_output = 1u << 20;
    c->max_conns = 10000;
    c->idle_timeout = 0;
    c->frame_timeout = 30;
    c->max_body_noauth = 64u << 10;
    c->output_hard_limit = 8u << 20;
    c->max_client_memory = 256u << 20;
    c->recv_buf = 16384;
    c->log_level = 2;
    c->shutdown_grace = 5.0;
    c->resp_max_args = 1u << 20;
    c->memory = 256u << 20;
    c->eviction = KV_EVICT_NONE;
    c->huge_pages = KV_HUGE_TRY;
    c->max_key = 4096;
    c->ring_size = 256u << 10;
    c->ring_max = 64u << 20;
    c->ring_spin_us = 50;
}
