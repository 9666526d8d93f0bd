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
/* KV_TEXT_WAIT: the command must not run while calls of its connection sent before it
 * are unfinished (res->busy said so); nothing was done, and the IO thread parses the
 * same request again once they have finished. */
enum { KV_TEXT_DISPATCH = 1, KV_TEXT_REPLY = 2, KV_TEXT_WAIT = 3 };

struct kv_text_result {
    uint8_t *body;      /* DISPATCH: request body, owned (KV_MOD_PACKET), may be NULL */
    size_t body_len;
    int body_in_scratch; /* DISPATCH: body lies at the start of call->scratch (not
                          * owned), and the adapter moved call->scratch past it */
    uint8_t *reply;     /* REPLY: reply bytes, owned (KV_MOD_PACKET) */
    size_t reply_len;
    int close;          /* close the connection after this reply */
    int silent;         /* CLIENT REPLY OFF / SKIP: run the command, send no reply */
    int barrier;        /* parse nothing more of this connection until this answer is
                         * written (EXEC running queued connection commands at reply time) */
    int busy;           /* input: calls of this connection sent earlier are unfinished */
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

/* CONFIG SET port: listens on cfg->bind_addr:port (0 = any free port) with a
 * new socket, then has the listener thread accept there and close the old
 * one (connections open on the old port stay). Returns 0, or an error with
 * the reason in why (the old listener is untouched): KV_EIO (bind/listen,
 * e.g. the port is in use), KV_EINVAL (--no-tcp, or not running). Any
 * thread but the listener's; serialised. */
int kv_io_relisten(struct kv_io *io, uint16_t port, char *why, size_t cap);

/* Transports of a connection. */
enum { KV_IO_TCP = 0, KV_IO_UNIX = 1 };

/* Open connections per transport, from the registry. Any thread. */
void kv_io_peer_counts(struct kv_io *io, unsigned *tcp, unsigned *unx);
/* Clients attached to shared-memory rings now, and the bytes through their request and
 * response rings (open connections only). Any thread. */
void kv_io_ring_counts(struct kv_io *io, unsigned *attached, uint64_t *in, uint64_t *out);
/* Writes one line per open connection (newest first), Redis CLIENT LIST
 * style: "id=N addr=A laddr=L fd=N name= age=S db=0 transport=tcp|unix"
 * plus " pid=N uid=N" for a unix peer (SO_PEERCRED), "\n"-terminated; an attached
 * client says transport=shm and adds " ring_req=B ring_resp=B shm_in=B shm_out=B".
 * Only unix peers when unix_only; at most max lines, only whole lines that
 * fit in cap (buf stays NUL-terminated when cap > 0). Returns the bytes
 * written; *listed (may be NULL) gets the number of lines. Any thread. */
size_t kv_io_peers_format(struct kv_io *io, int unix_only, unsigned max, char *buf, size_t cap,
                          unsigned *listed);

/* ---- the connection a RESP command came on (CLIENT, HELLO, RESET) --------------
 * s is the session the text adapter's command callback was given; these are
 * called only from that callback, on the connection's own IO thread. */
/* CLIENT ID: the connection's id, as listed (1, 2, ...; never reused). */
uint64_t kv_io_session_id(const struct kv_session *s);
/* The texts a client gives its connection: CLIENT SETNAME, CLIENT SETINFO. */
enum { KV_IO_TEXT_NAME, KV_IO_TEXT_LIB_NAME, KV_IO_TEXT_LIB_VER, KV_IO_TEXT__COUNT };
/* Copies p[0..len) as the text which (len 0: none). 0 or KV_ENOMEM. */
int kv_io_session_set_text(struct kv_session *s, int which, const uint8_t *p, size_t len);
/* The text which (NUL-terminated, valid until the next set), or NULL. */
const char *kv_io_session_text(const struct kv_session *s, int which, size_t *len);

/* CLIENT LIST and CLIENT INFO: one line per connection in Redis 7.0's layout
 * ("id= addr= laddr= fd= name= age= idle= flags= db= sub= psub= ssub= multi=
 * qbuf= qbuf-free= argv-mem= multi-mem= rbs= rbp= obl= oll= omem= tot-mem=
 * events= cmd= user= redir= resp=", and lib-name= lib-ver= as 7.2's), then ours: "transport=tcp|unix" and,
 * for a unix peer, "pid= uid=" (SO_PEERCRED); "\n"-terminated, newest
 * first. Lists every open connection (ids NULL, self_only 0), those whose id
 * is in ids[0..nids), or self's alone (self_only). qbuf= of self counts the
 * command being run, as Redis's does. Returns KV_MOD_PACKET memory (the
 * caller frees) with *len, or NULL when out of memory. Any IO thread. */
char *kv_io_clients_format(struct kv_io *io, const struct kv_session *self, int self_only,
                           const uint64_t *ids, size_t nids, size_t *len);

/* MONITOR: s's connection gets, from now on (on: 1) or no longer (0), a line
 * per command run by any connection (kv_io_monitor_feed). */
void kv_io_session_monitor(struct kv_session *s, int on);
int kv_io_session_is_monitor(const struct kv_session *s);
/* The number of connections in MONITOR mode, to be read with a relaxed
 * atomic load before each feed: the only cost MONITOR puts on a command
 * while nobody monitors. */
const unsigned *kv_io_monitor_count(const struct kv_io *io);
/* Sends Redis's MONITOR line for argv, run by s's connection in database
 * db, to every connection in MONITOR mode: each IO thread with monitors
 * gets a copy and appends it to its own connections at its next wake-up
 * (no thread writes to another's connection). Arguments whose bit is set in
 * redact (argv index < 64) show as "(redacted)". Any IO thread. */
void kv_io_monitor_feed(struct kv_io *io, const struct kv_session *s, unsigned db, size_t argc,
                        const struct kv_slice *argv, uint64_t redact);

/* CLIENT KILL's filters; every given one must match. */
struct kv_io_kill {
    uint64_t id;                 /* 0: any */
    const struct kv_slice *addr; /* "ip:port" (unix: "path:0"); NULL: any */
    const struct kv_slice *laddr;
    int skipme;                  /* leave self alone */
    int none;                    /* a filter no connection here can match (TYPE master) */
};
/* Closes every open connection that matches f. One of another IO thread is
 * closed by that thread, at its next wake-up (ev_async): never touched from
 * here beyond a flag. Self is not closed but reported in *self_matched, for
 * the caller to close after its reply. Returns the number matched (self
 * included). Any IO thread. */
unsigned kv_io_clients_kill(struct kv_io *io, const struct kv_session *self,
                            const struct kv_io_kill *f, int *self_matched);

#endif
