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

struct kv_io;

/* Receives a batch of calls (linked by ->next) decoded by an IO thread. It
 * must eventually hand every call to kv_io_complete(), from any thread. */
typedef void (*kv_io_dispatch_fn)(void *ctx, struct kv_call *calls);

/* Binds and listens on cfg->bind_addr:cfg->port (0 = any free port) and
 * prepares cfg->io_threads loops. Returns KV_EIO with errno set when the
 * socket cannot be bound. */
int kv_io_create(const struct kv_config *cfg, kv_io_dispatch_fn dispatch, void *dispatch_ctx,
                 struct kv_io **out);
/* Starts the IO threads and the listener thread. */
int kv_io_start(struct kv_io *io);
/* Graceful stop: stop accepting, stop reading, wait for every call with the
 * workers to come back, flush output for up to cfg->shutdown_grace seconds,
 * close every connection and join the threads. The dispatch target must keep
 * running until this returns. */
void kv_io_stop(struct kv_io *io);
void kv_io_destroy(struct kv_io *io);

/* Hands finished calls (linked by ->next, all with call->origin == origin)
 * back to their IO thread. Thread-safe; one wake-up per call of this. */
void kv_io_complete(void *origin, struct kv_call *calls);

/* The port actually bound (useful with port 0). */
uint16_t kv_io_port(const struct kv_io *io);

#endif
