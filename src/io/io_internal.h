/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/io_internal.h -- structures shared by the files of src/io only. */
#ifndef KV_IO_INTERNAL_H
#define KV_IO_INTERNAL_H

#include <ev.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "frame.h"
#include "kv_call.h"
#include "ring.h"
#include "kv_config.h"
#include "kv_io.h"
#include "resp.h"

struct kv_io_thread;
struct kv_io_conn;

/* The rings of one attached client (ring_conn.c). The server consumes req and produces
 * resp; the client may write anything into the mapping, so every index read from it is
 * checked (ring.h) and a bad one closes this client only. */
struct kv_io_ring {
    struct kv_ring req, resp;        /* views into map */
    uint8_t *map;                    /* owned: munmap in kv_io_ring_free */
    size_t map_size;                 /* ro after attach */
    int req_efd;                     /* owned: the client writes it to wake this thread */
    int resp_efd;                    /* owned: written to wake the client */
    ev_io efd_w;                     /* req_efd readable */
    struct kv_io_conn *conn;         /* borrowed: owns this */
    struct kv_io_ring *prev, *next;  /* io-thread only: the thread's attached clients */
    struct kv_io_msg *spans;         /* owned: request-ring spans in ring order, oldest
                                      * first, not yet released */
    struct kv_io_msg *spans_tail;
    uint64_t published;              /* resp.pos at the last publish */
    uint64_t last_ns;                /* when frames last arrived (or the last wake) */
    uint64_t parked_ns;              /* when this ring was last parked */
    uint64_t window_ns;              /* adaptive spin window */
    uint64_t asm_need;               /* bytes of the frame being assembled (0 = unknown) */
    uint64_t stuck;                  /* bytes in the request ring the last poll left (part of
                                      * a frame): only more than these is news */
    uint8_t spinning;                /* polled by the thread's ev_idle */
    uint8_t can_read;                /* backpressure and the AUTH gate allow reading */
    uint8_t bad;                     /* the client broke the response ring's indices */
    uint8_t closed;                  /* eventfds closed; the mapping waits for conn_free */
    uint8_t found;                   /* frames arrived since the last wake */
    uint8_t assembling;              /* a frame is being copied into conn->cur */
    /* the answer room lent to one call (kv_io_ring_room): the body of the next frame, in
     * place at the producer's private head; nothing else is written to the ring until
     * that call's answer is laid out */
    struct kv_io_req *room_owner;    /* borrowed: NULL = no room lent */
    uint8_t *room;                   /* in resp: the frame's header goes just before it */
    size_t room_cap;
};

/* One receive buffer. Requests decoded from it point into buf, so it lives
 * until the last of them is freed and the connection has moved on to a
 * newer message. */
struct kv_io_msg {
    uint8_t *buf;        /* owned: pool buffer (KV_MOD_BUF) */
    struct kv_io_conn *conn; /* borrowed: charged for cap; outlives the message */
    size_t cap;          /* ro after create */
    size_t len;          /* bytes received */
    size_t parsed;       /* bytes consumed by whole frames */
    unsigned refs;       /* io-thread only: live requests + 1 while current */
    /* A span of a request ring (ring_conn.c): buf points into the mapping (not owned), the
     * span ends at ring index ring_end and is released, in order, once refs reach 0. */
    struct kv_io_ring *ring;     /* borrowed: NULL for a receive buffer */
    struct kv_io_msg *ring_next; /* io-thread only: the ring's list of spans */
    uint64_t ring_end;
    uint8_t released;
};

/* Answers up to this size are built in the request itself (call.scratch):
 * a binary GET of a value of up to ~200 bytes allocates no response packet
 * (over RESP the request body takes the front of it, so ~170 bytes). */
#define KV_IO_SCRATCH 232
/* An empty receive buffer that grew past --recv-buf is replaced by one of
 * --recv-buf bytes when the input since it was last empty was less than
 * 1/KV_IO_RBUF_SHRINK of it (growth doubles: a buffer holding what it grew
 * for is at most about twice that). */
#define KV_IO_RBUF_SHRINK 4

/* One request: the call the workers see, plus what the IO thread needs to
 * answer it. Freed as soon as its answer has been copied into the
 * connection's output buffers (or its peer is gone). */
struct kv_io_req {
    struct kv_call call;         /* first: kv_io_complete casts back */
    struct kv_io_conn *conn;     /* borrowed: the conn lives while requests do */
    struct kv_io_msg *msg;       /* borrowed: pinned (refs) until freed; NULL for errors */
    struct kv_io_req *out_next;  /* io-thread only: output queue link */
    uint64_t request_id;
    size_t out_len;              /* bytes of the answer on the wire, once done */
    size_t wire_len;             /* bytes the request took on the wire (backpressure) */
    size_t charged;              /* bytes of the client-memory budget it holds */
    uint8_t done;                /* answer ready: may be laid out */
    uint8_t queued;              /* on the conn's output queue */
    uint8_t body_owned;          /* call.body is KV_MOD_PACKET memory (text protocol) */
    uint8_t in_place;            /* text reply already written at the end of the output */
    uint8_t silent;              /* text: CLIENT REPLY OFF/SKIP, the reply is dropped */
    uint8_t ring_room;           /* owns its ring's answer room (kv_io_ring_room) */
    uint8_t scratch[KV_IO_SCRATCH] __attribute__((aligned(8))); /* call.scratch */
};

/* One output buffer (a pool buffer with this header in front): answers laid
 * out back to back, wire-ready, written in order. */
struct kv_io_obuf {
    struct kv_io_obuf *next;     /* owned: the next buffer of the chain */
    size_t cap;                  /* bytes of data[] */
    size_t len;                  /* bytes laid out */
    size_t off;                  /* bytes already written */
    size_t pool_cap;             /* what kv_mem_buf_get returned, for the put */
    uint8_t data[];
};

enum { KV_PROTO_UNKNOWN, KV_PROTO_BINARY, KV_PROTO_TEXT };

/* What the listener knows of an accepted connection; written whole (one
 * atomic pipe write, < PIPE_BUF) into an IO thread's pipe. */
struct kv_io_handoff {
    int32_t fd;
    int32_t pid;                     /* unix: SO_PEERCRED at connect time; else 0 */
    uint32_t uid;                    /* unix: SO_PEERCRED; else 0 */
    uint32_t addr;                   /* tcp: peer IPv4, network order */
    uint16_t port;                   /* tcp: peer port, host order */
    uint8_t transport;               /* KV_IO_TCP or KV_IO_UNIX */
};

/* One open connection in the registry behind CLIENT LIST and STATS.
 * Embedded in its kv_io_conn; every field is written before it is added
 * and not changed while it is listed. */
struct kv_io_peer {
    struct kv_io_handoff id;         /* ro while listed */
    uint64_t serial;                 /* ro while listed: CLIENT LIST id */
    int64_t since;                   /* ro while listed: CLOCK_MONOTONIC seconds */
    unsigned thread;                 /* ro while listed: IO thread index */
    struct kv_io_peer *prev, *next;  /* guarded by io->peers_lock */
    uint8_t listed;                  /* io-thread only: on the registry */
    /* what CLIENT LIST shows that changes while listed (issue 16) */
    char *text[KV_IO_TEXT__COUNT];   /* owned (KV_MOD_CONNECTION), NUL-terminated, NULL =
                                      * none: CLIENT SETNAME / SETINFO; written by the owning
                                      * thread under io->peers_lock, read by others under it */
    size_t text_len[KV_IO_TEXT__COUNT]; /* guarded as text */
    size_t qbuf, qbuf_free;          /* atomic, written by the owning thread: its receive
                                      * buffer (unparsed bytes, free room) at its last parse */
    int64_t active;                  /* atomic, written by the owning thread: ev_now
                                      * seconds of its last read (CLIENT LIST idle=) */
    size_t cmd_wire;                 /* io-thread only: wire bytes of the command being run */
    uint8_t kill;                    /* atomic: CLIENT KILL asks the owning thread to close it */
    /* attached to shared-memory rings (atomics: written by the IO thread once attached) */
    uint32_t ring_req, ring_resp;    /* ring capacities; 0 = not attached */
    uint64_t ring_in, ring_out;      /* bytes through the request / response ring */
    uint64_t ring_in_place;          /* answers built where they are sent (no copy) */
};

struct kv_io_conn {                  /* io-thread only */
    ev_io rw;                        /* first: read watcher, always on while reading */
    ev_io ww;                        /* write watcher, on only while output is pending */
    int fd;                          /* owned: closed in conn_close */
    struct kv_io_thread *thr;        /* borrowed: outlives the conn */
    struct kv_io_msg *cur;           /* owned ref: message being filled; kept empty
                                      * between requests for --recv-buf-keep seconds */
    size_t rbuf_peak;                /* most unparsed input held since the receive
                                      * buffer was last found empty (its shrink rule) */
    struct kv_io_req *out_head;      /* owned: requests whose answers wait for
                                      * an earlier one (text, --in-order) */
    struct kv_io_req *out_tail;
    struct kv_io_obuf *ob_head;      /* owned: laid-out answers not yet written */
    struct kv_io_obuf *ob_tail;
    size_t out_bytes;                /* pending output bytes (queued + laid out) */
    unsigned inflight;               /* requests with the workers */
    struct kv_session session;       /* shared with handlers (atomics) */
    struct kv_io_conn *prev, *next;  /* thread's connection list */
    struct kv_io_conn *flush_next;   /* io-thread only: on the to-flush list */
    uint8_t reading;                 /* read watcher active */
    uint8_t closing;                 /* answer what is queued, then close */
    uint8_t closed;                  /* fd closed; freed when inflight reaches 0 */
    uint8_t on_flush;                /* on the to-flush list */
    uint8_t proto;                   /* KV_PROTO_*, set by the first byte */
    size_t partial_need;             /* bytes the partial request needs at least */
    struct kv_resp_resume resume;    /* where parsing the partial RESP request stopped */
    size_t inflight_bytes;           /* frame bytes of the requests with the workers */
    ev_tstamp last_active;           /* last read or write progress (--idle-timeout) */
    ev_tstamp partial_since;         /* a frame began arriving; 0 = none (--frame-timeout) */
    uint8_t linger;                  /* closing after an error answer: drain the
                                      * input first, so the answer is not lost */
    uint8_t lingering;               /* answer out, write side shut, input discarded */
    ev_tstamp linger_since;          /* when lingering began (KV_IO_LINGER) */
    char peer_text[48];              /* "ADDR:PORT", filled at --log-level debug only */
    struct kv_io_peer peer;          /* last (cold): listed from conn_new to conn_close */
    size_t mem;                      /* bytes held in the client-memory budget: receive
                                      * buffers, requests, owned bodies and replies, output;
                                      * written by this thread, atomic store (CLIENT LIST) */
    uint8_t waiting;                 /* a parsed local command waits for the calls before it
                                      * (KV_TEXT_WAIT): not read, reparsed at inflight 0 */
    uint8_t gated;                   /* before AUTH (or after a barrier: kv_text_result):
                                      * the next request is parsed only once this one's
                                      * answer is written */
    uint8_t monitor;                 /* MONITOR: gets a line per command; written by this
                                      * thread, atomic (CLIENT LIST reads it) */
    struct kv_io_ring *ring;         /* owned: the shared-memory rings once attached (the
                                      * socket is then the liveness channel only) */
    /* per-connection order: the calls of a connection run one after another, in order.
     * At most one run of its calls is with the workers; calls parsed meanwhile wait in
     * hold and go out when the run is back (io-thread only) */
    unsigned in_pool;                /* calls dispatched (or in the thread's batch) */
    uint64_t batch_gen;              /* thr->batch_gen when it last added to the batch */
    struct kv_call *hold_head;       /* owned: parsed, waiting for the run in the pool */
    struct kv_call *hold_tail;
};

/* One MONITOR line on its way to an IO thread's monitors. */
struct kv_io_mline {
    struct kv_io_mline *next;        /* owned: the next line */
    size_t len;
    uint8_t data[];
};

struct kv_io_thread {
    struct kv_io *io;                /* borrowed: owns the thread */
    struct ev_loop *loop;            /* owned */
    pthread_t tid;
    unsigned index;
    int pipe_rd, pipe_wr;            /* owned: new fds from the listener */
    ev_io pipe_w;
    ev_async wake;                   /* completions and stop */
    ev_timer stop_timer;             /* shutdown deadline */
    ev_timer sweep;                  /* idle and frame deadlines, once a second */
    pthread_mutex_t lock;
    struct kv_call *done_head;       /* guarded by lock: finished calls */
    struct kv_call *done_tail;       /* guarded by lock */
    int stop_requested;              /* guarded by lock */
    struct kv_io_conn *conns;        /* io-thread only */
    struct kv_io_conn *flush_list;   /* io-thread only: conns with new output */
    struct kv_call *batch_head;      /* io-thread only: decoded, not yet dispatched */
    struct kv_call *batch_tail;
    uint64_t batch_gen;              /* io-thread only: batches dispatched so far */
    struct kv_resp_argv argv;        /* io-thread only: text-protocol argv scratch */
    int stopping;                    /* io-thread only */
    int started;
    size_t client_mem;               /* atomic, written by this thread only: the budget
                                      * bytes of its open connections */
    size_t largest;                  /* atomic, written by this thread only: its
                                      * largest connection at its last budget check */
    size_t trim_high;                /* io-thread only: client_mem peak since the last trim */
    int evict_asked;                 /* guarded by lock: another thread found the budget
                                      * exceeded and this thread's connection the largest */
    int kill_asked;                  /* guarded by lock: CLIENT KILL marked connections of
                                      * this thread (peer.kill) */
    unsigned monitors;               /* atomic, written by this thread: its MONITOR conns */
    struct kv_io_mline *mon_head;    /* guarded by lock: MONITOR lines for them, oldest */
    struct kv_io_mline *mon_tail;    /* guarded by lock */
    ev_idle ring_spin;               /* on while an attached client's ring is polled */
    struct kv_io_ring *rings;        /* io-thread only: attached clients of this thread */
    unsigned rings_spinning;         /* io-thread only: of those, how many are polled */
    uint64_t rings_found_ns;         /* io-thread only: when a polled ring last had frames */
};

/* A log line of one kind at most once a second, over every thread. */
struct kv_io_ratelog {
    uint64_t sec;                    /* atomic: second of the last line */
    uint64_t quiet;                  /* atomic: events since that line, not logged */
};

struct kv_io {
    const struct kv_config *cfg;     /* borrowed: outlives io */
    kv_io_dispatch_fn dispatch;      /* ro after create */
    void *dispatch_ctx;              /* borrowed */
    struct kv_io_textproto text;     /* ro after create; text.command NULL = binary only */
    void (*session_end)(void *ctx, struct kv_session *s); /* ro after start; may be NULL */
    void *session_ctx;               /* borrowed */
    int listen_fd;                   /* owned: TCP; -1 with --no-tcp */
    uint16_t port;                   /* atomic (CONFIG SET port); 0 with --no-tcp */
    int relisten_fd;                 /* atomic: a new TCP listener for the listener
                                      * thread to take over (kv_io_relisten), or -1 */
    pthread_mutex_t relisten_lock;   /* one kv_io_relisten at a time */
    int unix_fd;                     /* owned: unix-domain listener; -1 = none */
    dev_t unix_dev;                  /* ro after create: the socket file we bound, */
    ino_t unix_ino;                  /* removed at close only if still ours */
    pthread_mutex_t peers_lock;      /* guards peers and next_serial */
    struct kv_io_peer *peers;        /* guarded by peers_lock: open connections */
    uint64_t next_serial;            /* guarded by peers_lock */
    int peers_lock_ok;               /* peers_lock initialised */
    unsigned nthreads;               /* ro after create */
    struct kv_io_thread *threads;    /* owned (KV_MOD_THREAD) */
    unsigned next_thread;            /* listener thread only */
    unsigned conns;                  /* atomic: open connections */
    unsigned monitors;               /* atomic: connections in MONITOR mode, every thread */
    struct kv_io_ratelog evict_log;  /* budget closes */
    struct kv_io_ratelog qbuf_log;   /* --client-query-buffer-limit closes */
    struct kv_io_ratelog auth_log;   /* wrong passwords */
    struct kv_io_ratelog accept_log; /* accepts paused for lack of descriptors */
    /* listener */
    struct ev_loop *lloop;           /* owned */
    pthread_t ltid;
    ev_io accept_w;                  /* TCP listener, when there is one */
    ev_io accept_unix_w;             /* unix listener, when there is one */
    ev_timer backoff;                /* accept paused after EMFILE/ENFILE */
    ev_async lstop;
    ev_async lrelisten;              /* relisten_fd is set */
    int listener_started;
};

int kv_io_listener_start(struct kv_io *io);
void kv_io_listener_stop(struct kv_io *io);
void kv_io_thread_adopt(struct kv_io_thread *thr, const struct kv_io_handoff *h);
/* peers.c: the registry (any thread) */
void kv_io_peer_add(struct kv_io *io, struct kv_io_peer *p);
void kv_io_peer_remove(struct kv_io *io, struct kv_io_peer *p);
/* on_wake, when asked: closes this thread's connections CLIENT KILL marked */
void kv_io_thread_kill_marked(struct kv_io_thread *thr);
/* on_wake: hands the MONITOR lines queued for this thread to its monitors */
void kv_io_thread_monitor_deliver(struct kv_io_thread *thr, struct kv_io_mline *lines);
/* unix.c: the unix-domain listening socket */
int kv_io_unix_open(struct kv_io *io, char *err, size_t errcap);
void kv_io_unix_close(struct kv_io *io);
/* 1: log an event of r's kind now (*quiet: how many went unlogged since
 * the last line); 0: one went out this second already. Any thread. */
/* ring_conn.c: shared-memory rings of attached clients (io-thread only) */
struct kv_io_req;
/* ATTACH (opcode 13) decoded from the socket stream at m->parsed (frame of len bytes, not
 * yet consumed): answers it, and on success switches c to its rings. */
void kv_io_ring_attach(struct kv_io_conn *c, const struct kv_frame *f, size_t len);
void kv_io_ring_close(struct kv_io_conn *c);  /* from conn_close: eventfds, lists */
void kv_io_ring_free(struct kv_io_conn *c);   /* from conn_free: the mapping */
/* Lays the answer of r straight into the response ring: 0, or KV_EAGAIN when it does not
 * fit now (the caller queues it in the output buffers). */
int kv_io_ring_put(struct kv_io_conn *c, const struct kv_io_req *r);
void kv_io_ring_flush(struct kv_io_conn *c);  /* output buffers into the ring; publish, wake */
/* Lends r's handler room for its answer body in the response ring (call.scratch), when
 * the ring has contiguous space beyond the request's own scratch and nothing else waits
 * to be written there: 1 when lent. Its answer is then laid out by kv_io_ring_put with no
 * copy. */
int kv_io_ring_room(struct kv_io_conn *c, struct kv_io_req *r);
void kv_io_ring_room_drop(struct kv_io_req *r); /* r is freed before its answer went out */
void kv_io_ring_span_done(struct kv_io_msg *m); /* a span's last request is freed */
void kv_io_ring_kick(struct kv_io_conn *c);   /* reading may go on: poll the ring again */
/* io.c, for ring_conn.c */
void kv_io_conn_parse_ring(struct kv_io_conn *c); /* frames of the request ring */
void kv_io_conn_close(struct kv_io_conn *c);
void kv_io_conn_mark_flush(struct kv_io_conn *c);
int kv_io_conn_answer_error(struct kv_io_conn *c, const struct kv_frame *f, uint16_t status,
                            const char *msg);
void kv_io_thread_pump(struct kv_io_thread *thr); /* completions, dispatch, flush */
void kv_io_ring_spin_cb(struct ev_loop *loop, ev_idle *w, int revents);
int kv_io_ratelog_take(struct kv_io_ratelog *r, double now, uint64_t *quiet);
void kv_io_log(const struct kv_io *io, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
