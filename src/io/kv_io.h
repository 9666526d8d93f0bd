/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/kv_io.h -- listener, IO threads, connections: the network half of
 * libevkv's RPC framework.
 *
 * A listener thread accepts connections and hands them round-robin to N IO
 * threads over each thread's pipe. An IO thread (one libev loop) reads into
 * messages (receive buffers), decodes frames into kv_calls that point into
 * them, passes everything decoded from one read to the dispatch callback as
 * one batch, and writes the responses that come back through
 * kv_io_complete() with one sendmsg per connection. The framework knows
 * nothing of what an opcode means. */
#ifndef KV_IO_H
#define KV_IO_H

#include <stdint.h>

#include "kv_call.h"
#include "kv_config.h"
#include "resp.h"

struct kv_io;

/* A text protocol (RESP) spoken on the same port: a connection whose first
 * byte is not the binary magic is parsed by src/io/resp.c into argv, and
 * this adapter (the service's) turns each command into a call or an
 * immediate reply, then each finished call into reply bytes. Answers go
 * back in request order on such connections. */
enum { KV_TEXT_DISPATCH = 1, KV_TEXT_REPLY = 2 };

struct kv_text_result {
    uint8_t *body;      /* DISPATCH: request body, owned (KV_MOD_PACKET), may be NULL */
    size_t body_len;
    int body_in_scratch; /* DISPATCH: body lies at the start of call->scratch (not
                          * owned), and the adapter moved call->scratch past it */
    uint8_t *reply;     /* REPLY: reply bytes, owned (KV_MOD_PACKET) */
    size_t reply_len;
    int close;          /* close the connection after this reply */
};

struct kv_io_textproto {
    /* Sets call->opcode (and call->tag) and res->body for DISPATCH, or
     * res->reply for REPLY; returns which, or KV_ENOMEM. */
    int (*command)(void *ctx, struct kv_session *s, size_t argc, const struct kv_slice *argv,
                   struct kv_call *call, struct kv_text_result *res);
    /* Turns a finished call into reply bytes; 0 or KV_ENOMEM. When room is
     * not NULL the reply may be written there (the free end of the
     * connection's output, room_cap bytes): *out = room says it was. Else
     * *out is KV_MOD_PACKET memory, handed over. */
    int (*reply)(void *ctx, const struct kv_call *call, uint8_t *room, size_t room_cap,
                 uint8_t **out, size_t *len);
    void *ctx;
};

/* Receives a batch of calls (linked by ->next) decoded by an IO thread. It
 * must eventually hand every call to kv_io_complete(), from any thread. */
typedef void (*kv_io_dispatch_fn)(void *ctx, struct kv_call *calls);

/* Binds and listens on cfg->bind_addr:cfg->port (0 = any free port; none
 * with cfg->no_tcp) and on the unix-domain socket cfg->unix_path (if set),
 * and prepares cfg->io_threads loops. text (copied; NULL = binary only) is
 * the text-protocol adapter, used unless cfg->resp_disabled. On failure err
 * says which socket and why: KV_EIO (errno set) when a socket cannot be
 * bound, KV_ELOCKED when a live server already listens on unix_path,
 * KV_EEXISTS when unix_path exists and is not a socket. A stale socket file
 * (nobody listening) is replaced; the file is removed at destroy. */
int kv_io_create(const struct kv_config *cfg, kv_io_dispatch_fn dispatch, void *dispatch_ctx,
                 const struct kv_io_textproto *text, char *err, size_t errcap,
                 struct kv_io **out);
/* Starts the IO threads and the listener thread. */
int kv_io_start(struct kv_io *io);
/* Graceful stop: stop accepting, stop reading, wait for every call with the
 * workers to come back, flush output for up to cfg->shutdown_grace seconds,
 * close every connection and join the threads. The dispatch target must keep
 * running until this returns. */
void kv_io_stop(struct kv_io *io);
void kv_io_destroy(struct kv_io *io);

/* Called on the connection's IO thread when a connection is freed (no call of it is
 * left anywhere), so that the service frees what it keeps in the session (watch, multi).
 * Set before kv_io_start. */
void kv_io_set_session_end(struct kv_io *io, void (*fn)(void *ctx, struct kv_session *s),
                           void *ctx);

/* Hands finished calls (linked by ->next, all with call->origin == origin)
 * back to their IO thread. Thread-safe; one wake-up per call of this. */
void kv_io_complete(void *origin, struct kv_call *calls);

/* The port actually bound (useful with port 0); 0 with cfg->no_tcp. */
uint16_t kv_io_port(const struct kv_io *io);

/* Transports of a connection. */
enum { KV_IO_TCP = 0, KV_IO_UNIX = 1 };

/* Open connections per transport, from the registry. Any thread. */
void kv_io_peer_counts(struct kv_io *io, unsigned *tcp, unsigned *unx);
/* Writes one line per open connection (newest first), Redis CLIENT LIST
 * style: "id=N addr=A laddr=L fd=N name= age=S db=0 transport=tcp|unix"
 * plus " pid=N uid=N" for a unix peer (SO_PEERCRED), "\n"-terminated.
 * Only unix peers when unix_only; at most max lines, only whole lines that
 * fit in cap (buf stays NUL-terminated when cap > 0). Returns the bytes
 * written; *listed (may be NULL) gets the number of lines. Any thread. */
size_t kv_io_peers_format(struct kv_io *io, int unix_only, unsigned max, char *buf, size_t cap,
                          unsigned *listed);

#endif
