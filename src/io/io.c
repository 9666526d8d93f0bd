/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/io.c -- IO threads and connections (see kv_io.h).
 *
 * Everything here runs on the thread that owns the connection, except
 * kv_io_complete() (any thread) and kv_io_create/start/stop/destroy (the
 * main thread). Lock rules: thr->lock guards only the completion queue and
 * stop_requested; everything else of a thread and its connections is
 * io-thread only.
 *
 * Per loop iteration an IO thread reads each readable connection once,
 * decodes every whole frame into a request and appends it to the thread's
 * batch; an ev_prepare watcher (run just before the loop blocks) then
 * dispatches the whole batch at once and flushes every connection that got
 * output, with one send each. Worker results arrive through ev_async.
 *
 * A finished answer is laid out wire-ready (header, body, crc) at the end of
 * its connection's chain of output buffers and its request is freed at
 * once: the bytes of a whole batch leave in one contiguous send, and the
 * receive buffer the request pointed into is free for the next read. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "io_internal.h"
#include "kv_err.h"
#include "kv_log.h"
#include "kv_mem.h"
#include "kv_ops.h"
#include "kv_print.h"

#define KV_IO_MAX_INFLIGHT 4096  /* requests per connection before reading pauses */
#define KV_IO_MIN_TAIL 512       /* a smaller free tail is not worth a read */
#define KV_IO_IOV_MAX 64         /* output buffers per sendmsg */
#define KV_IO_OBUF 16384u        /* output buffer size (larger answers get their own) */
#define KV_IO_TEXT_ROOM 64u      /* least free space a text reply is offered in place */
#define KV_IO_LINGER 5.0         /* seconds an error-closed connection drains its input */
#define KV_IO_TRIM_STEP (4u << 20)  /* client memory released before the heap is trimmed */
#define KV_IO_EVICT_BURST 64     /* budget closes per check at most */
#define KV_IO_ARGV_KEEP 4096     /* argv entries an IO thread keeps between requests */

static __thread struct kv_io_thread *current_thread;

void kv_io_log(const struct kv_io *io, int level, const char *fmt, ...)
{
    va_list ap;

    if (level > io->cfg->log_level)
        return;
    va_start(ap, fmt);
    kv_log_vwrite(level, "io", fmt, ap);
    va_end(ap);
}

/* "ADDR:PORT" of the peer of fd, for debug lines. */
static const char *peer_name(int fd, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char addr[INET6_ADDRSTRLEN];

    if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        snprintf(buf, cap, "?");
    else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *sa = (const struct sockaddr_in *)&ss;

        inet_ntop(AF_INET, &sa->sin_addr, addr, sizeof(addr));
        snprintf(buf, cap, "%s:%u", addr, ntohs(sa->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sa = (const struct sockaddr_in6 *)&ss;

        inet_ntop(AF_INET6, &sa->sin6_addr, addr, sizeof(addr));
        snprintf(buf, cap, "[%s]:%u", addr, ntohs(sa->sin6_port));
    } else
        snprintf(buf, cap, "local");
    return buf;
}

/* ---- the client-memory budget ---------------------------------------------
 * Every byte a connection makes the server hold (receive buffers, requests,
 * bodies and replies the IO thread owns, laid-out output) is charged to it;
 * the sum over the open connections of every thread is kept under
 * --max-client-memory by closing the connection holding the most (Redis's
 * maxmemory-clients). A closed connection leaves the thread's total at once:
 * what it still holds is being given back. */
/* inlined: called several times per request (LTO stopped doing it as io.c grew) */
static inline __attribute__((always_inline)) void conn_charge(struct kv_io_conn *c, int64_t d)
{
    struct kv_io_thread *thr = c->thr;

    __atomic_store_n(&c->mem, c->mem + (size_t)d, __ATOMIC_RELAXED); /* CLIENT LIST reads it */
    if (!c->closed)
        __atomic_store_n(&thr->client_mem, thr->client_mem + (size_t)d, __ATOMIC_RELAXED);
    kv_mem_stat_add(KV_STAT_CLIENT_MEMORY, (uint64_t)d); /* a gauge, modulo 2^64 */
}

static size_t io_client_mem(const struct kv_io *io)
{
    size_t total = 0;

    for (unsigned i = 0; i < io->nthreads; i++)
        total += __atomic_load_n(&io->threads[i].client_mem, __ATOMIC_RELAXED);
    return total;
}

/* ---- messages --------------------------------------------------------------- */
static struct kv_io_msg *msg_new(struct kv_io_conn *c, size_t size)
{
    struct kv_io_msg *m = kv_mem_obj_get(KV_MOD_MESSAGE, sizeof(*m));

    if (!m)
        return NULL;
    m->buf = kv_mem_buf_get(size, &m->cap);
    if (!m->buf) {
        kv_mem_obj_put(KV_MOD_MESSAGE, m, sizeof(*m));
        return NULL;
    }
    m->conn = c;
    m->len = m->parsed = 0;
    m->refs = 1;
    m->ring = NULL;
    m->ring_next = NULL;
    m->released = 0;
    conn_charge(c, (int64_t)m->cap);
    return m;
}

static void msg_last_ref(struct kv_io_msg *m)
{
    if (m->ring) { /* a span of a request ring: released in ring order */
        kv_io_ring_span_done(m);
        return;
    }
    conn_charge(m->conn, -(int64_t)m->cap);
    kv_mem_buf_put(m->buf, m->cap);
    kv_mem_obj_put(KV_MOD_MESSAGE, m, sizeof(*m));
}

static inline void msg_unref(struct kv_io_msg *m)
{
    if (m && --m->refs == 0)
        msg_last_ref(m);
}

/* ---- requests --------------------------------------------------------------- */
static struct kv_io_req *req_new(struct kv_io_conn *c, struct kv_io_msg *m)
{
    struct kv_io_req *r = kv_mem_obj_get(KV_MOD_REQUEST, sizeof(*r));

    if (!r)
        return NULL;
    memset(&r->call, 0, sizeof(r->call));
    r->call.origin = c->thr;
    r->call.session = &c->session;
    r->call.scratch = r->scratch;
    r->call.scratch_cap = sizeof(r->scratch);
    r->conn = c;
    r->msg = m;
    r->out_next = NULL;
    r->done = r->queued = r->body_owned = r->in_place = r->silent = r->ring_room = 0;
    r->charged = sizeof(*r);
    conn_charge(c, (int64_t)sizeof(*r));
    if (m)
        m->refs++;
    return r;
}

/* r now also holds n bytes of owned body or reply. */
static void req_charge(struct kv_io_req *r, size_t n)
{
    r->charged += n;
    conn_charge(r->conn, (int64_t)n);
}

static void req_free(struct kv_io_req *r)
{
    if (r->ring_room)
        kv_io_ring_room_drop(r);
    if (r->call.resp_owned)
        kv_mem_free(KV_MOD_PACKET, r->call.resp);
    if (r->body_owned)
        kv_mem_free(KV_MOD_PACKET, (void *)r->call.body);
    conn_charge(r->conn, -(int64_t)r->charged);
    msg_unref(r->msg);
    kv_mem_obj_put(KV_MOD_REQUEST, r, sizeof(*r));
}

/* ---- connections ---------------------------------------------------------- */
static void on_read(struct ev_loop *loop, ev_io *w, int revents);
static void on_write(struct ev_loop *loop, ev_io *w, int revents);

static void conn_free(struct kv_io_conn *c)
{
    struct kv_io_thread *thr = c->thr;

    if (thr->io->session_end)
        thr->io->session_end(thr->io->session_ctx, &c->session);

    if (c->prev)
        c->prev->next = c->next;
    else
        thr->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->ring)
        kv_io_ring_free(c);
    kv_mem_free(KV_MOD_CONNECTION, c);
}

static void conn_mark_flush(struct kv_io_conn *c);
static void conn_flush(struct kv_io_conn *c);
static void conn_parse_input(struct kv_io_conn *c);
static size_t rbuf_release(struct kv_io_thread *thr, ev_tstamp idle_before);

/* Closes the socket and drops everything queued. The conn itself lives on
 * (closed) until conn_settle() finds no request with the workers. */
static void conn_close(struct kv_io_conn *c)
{
    struct ev_loop *loop = c->thr->loop;

    if (c->closed)
        return;
    if (c->thr->io->cfg->log_level >= 3)
        kv_io_log(c->thr->io, 3, "fd %d: closed (peer %s)", c->fd, c->peer_text);
    ev_io_stop(loop, &c->rw);
    ev_io_stop(loop, &c->ww);
    kv_io_peer_remove(c->thr->io, &c->peer);
    kv_io_session_monitor(&c->session, 0);
    if (c->ring)
        kv_io_ring_close(c);
    close(c->fd);
    c->fd = -1;
    c->closed = 1;
    c->reading = 0;
    __atomic_store_n(&c->thr->client_mem, c->thr->client_mem - c->mem, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&c->thr->io->conns, 1, __ATOMIC_RELAXED);
    kv_mem_stat_add(KV_STAT_CONNS_CLOSED, 1);
    while (c->hold_head) { /* parsed, never dispatched: nobody will run them now */
        struct kv_io_req *r = (struct kv_io_req *)c->hold_head;

        c->hold_head = r->call.next;
        c->inflight--;
        c->inflight_bytes -= r->wire_len;
        if (r->queued)
            r->done = 1; /* freed with the output queue below */
        else
            req_free(r);
    }
    c->hold_tail = NULL;
    while (c->out_head) {
        struct kv_io_req *r = c->out_head;

        c->out_head = r->out_next;
        r->out_next = NULL;
        r->queued = 0;
        if (r->done) { /* not done: still with a worker, freed when it returns */
            kv_mem_stat_add(KV_STAT_DROPPED, 1);
            req_free(r);
        }
    }
    c->out_tail = NULL;
    while (c->ob_head) {
        struct kv_io_obuf *b = c->ob_head;

        c->ob_head = b->next;
        conn_charge(c, -(int64_t)b->pool_cap);
        kv_mem_buf_put(b, b->pool_cap);
    }
    c->ob_tail = NULL;
    c->out_bytes = 0;
    msg_unref(c->cur);
    c->cur = NULL;
    conn_mark_flush(c); /* conn_settle frees it once no request refers to it */
}

int kv_io_ratelog_take(struct kv_io_ratelog *r, double now, uint64_t *quiet)
{
    uint64_t sec = (uint64_t)now, last = __atomic_load_n(&r->sec, __ATOMIC_RELAXED);

    if (sec == last || !__atomic_compare_exchange_n(&r->sec, &last, sec, 0, __ATOMIC_RELAXED,
                                                    __ATOMIC_RELAXED)) {
        __atomic_fetch_add(&r->quiet, 1, __ATOMIC_RELAXED);
        return 0;
    }
    *quiet = __atomic_exchange_n(&r->quiet, 0, __ATOMIC_RELAXED);
    return 1;
}

/* "ADDR:PORT" of c's peer, for log lines. */
static const char *conn_peer(const struct kv_io_conn *c, char *buf, size_t cap)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    char ip[INET_ADDRSTRLEN];

    if (c->fd < 0 || getpeername(c->fd, (struct sockaddr *)&sa, &sl) != 0 ||
        sa.sin_family != AF_INET || !inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip)))
        snprintf(buf, cap, "fd %d", c->fd);
    else
        snprintf(buf, cap, "%s:%u", ip, ntohs(sa.sin_port));
    return buf;
}

/* Logs a budget close at most once a second (over every IO thread). */
static void budget_log(struct kv_io_thread *thr, const struct kv_io_conn *c, size_t total)
{
    uint64_t quiet;
    char peer[64];

    if (!kv_io_ratelog_take(&thr->io->evict_log, ev_now(thr->loop), &quiet))
        return;
    kv_io_log(thr->io, 1, "%s: holds %zu bytes, the most, and all clients %zu, above "
              "--max-client-memory %zu; closing (and %llu more since the last such line)",
              conn_peer(c, peer, sizeof(peer)), c->mem, total,
              kv_config_client_budget(thr->io->cfg), (unsigned long long)quiet);
}

/* Keeps the open connections of every thread under --max-client-memory by
 * closing the largest. With several IO threads, the thread that notices
 * closes its own largest unless another thread reported a larger one at its
 * last check: that thread is then asked (asked = 1: close without asking on). */
static void budget_check(struct kv_io_thread *thr, int asked)
{
    struct kv_io *io = thr->io;
    size_t budget = kv_config_client_budget(io->cfg), total;

    if (thr->client_mem > thr->trim_high)
        thr->trim_high = thr->client_mem;
    if (budget == 0)
        return;
    /* kept receive buffers go first: nobody is closed for memory that is only
     * there to save the next read a pool round trip */
    if (io_client_mem(io) > budget)
        rbuf_release(thr, 0);
    for (int n = 0; n < KV_IO_EVICT_BURST && (total = io_client_mem(io)) > budget; n++) {
        struct kv_io_conn *big = NULL;

        for (struct kv_io_conn *c = thr->conns; c; c = c->next)
            if (!c->closed && (!big || c->mem > big->mem) &&
                !__atomic_load_n(&c->session.no_evict, __ATOMIC_RELAXED)) /* CLIENT NO-EVICT */
                big = c;
        __atomic_store_n(&thr->largest, big ? big->mem : 0, __ATOMIC_RELAXED);
        if (!asked) {
            struct kv_io_thread *other = NULL;
            size_t best = big ? big->mem : 0;

            for (unsigned i = 0; i < io->nthreads; i++) {
                struct kv_io_thread *t = &io->threads[i];
                size_t l = __atomic_load_n(&t->largest, __ATOMIC_RELAXED);

                if (t != thr && l > best) {
                    best = l;
                    other = t;
                }
            }
            if (other) {
                pthread_mutex_lock(&other->lock);
                other->evict_asked = 1;
                pthread_mutex_unlock(&other->lock);
                ev_async_send(other->loop, &other->wake);
                return;
            }
        }
        if (!big)
            return;
        budget_log(thr, big, total);
        kv_mem_stat_add(KV_STAT_CLIENT_MEM_CLOSES, 1);
        conn_close(big);
    }
}

static void conn_new(struct kv_io_thread *thr, const struct kv_io_handoff *h)
{
    struct kv_io_conn *c = kv_mem_calloc(KV_MOD_CONNECTION, sizeof(*c));
    int fd = h->fd;

    if (!c) {
        kv_io_log(thr->io, 0, "out of memory for a connection; closing fd %d", fd);
        close(fd);
        __atomic_fetch_sub(&thr->io->conns, 1, __ATOMIC_RELAXED);
        return;
    }
    c->fd = fd;
    c->thr = thr;
    c->last_active = ev_now(thr->loop);
    ev_io_init(&c->rw, on_read, fd, EV_READ);
    ev_io_init(&c->ww, on_write, fd, EV_WRITE);
    c->rw.data = c->ww.data = c;
    c->next = thr->conns;
    if (thr->conns)
        thr->conns->prev = c;
    thr->conns = c;
    c->peer.id = *h;
    c->peer.thread = thr->index;
    c->peer.active = (int64_t)c->last_active;
    kv_io_peer_add(thr->io, &c->peer);
    ev_io_start(thr->loop, &c->rw);
    c->reading = 1;
    if (thr->io->cfg->log_level >= 3)
        kv_io_log(thr->io, 3, "fd %d: open (peer %s, IO thread %u)", fd,
                  peer_name(fd, c->peer_text, sizeof(c->peer_text)), thr->index);
}

static void conn_mark_flush(struct kv_io_conn *c)
{
    if (!c->on_flush) {
        c->on_flush = 1;
        c->flush_next = c->thr->flush_list;
        c->thr->flush_list = c;
    }
}

/* What CLIENT LIST shows of c's receive buffer, for other threads to read. */
static void peer_snapshot(struct kv_io_conn *c)
{
    const struct kv_io_msg *m = c->cur;

    __atomic_store_n(&c->peer.qbuf, m ? m->len - m->parsed : 0, __ATOMIC_RELAXED);
    __atomic_store_n(&c->peer.qbuf_free, m ? m->cap - m->len : 0, __ATOMIC_RELAXED);
}

/* c's receive buffer is empty (one reference, all parsed): keep it for the
 * next read, or give it back (--recv-buf-keep 0), or, when it grew past
 * --recv-buf for input more than KV_IO_RBUF_SHRINK times what has arrived
 * since it was last empty, put a --recv-buf one in its place (Redis's
 * query buffer shrinking to the recent peak). */
static void rbuf_settle(struct kv_io_conn *c)
{
    const struct kv_config *cfg = c->thr->io->cfg;
    struct kv_io_msg *m = c->cur, *n;
    size_t peak = c->rbuf_peak;

    c->rbuf_peak = 0;
    if (!__atomic_load_n(&cfg->recv_buf_keep, __ATOMIC_RELAXED)) {
        msg_unref(m);
        c->cur = NULL;
        return;
    }
    m->len = m->parsed = 0;
    if (m->cap > cfg->recv_buf && peak * KV_IO_RBUF_SHRINK < m->cap) {
        n = msg_new(c, cfg->recv_buf);
        msg_unref(m);
        c->cur = n; /* NULL when out of memory: the next read asks again */
    }
}

/* Gives back the empty receive buffers kept by thr's connections idle since
 * before idle_before (every one with idle_before 0). Returns the bytes. */
static size_t rbuf_release(struct kv_io_thread *thr, ev_tstamp idle_before)
{
    size_t freed = 0;

    for (struct kv_io_conn *c = thr->conns; c; c = c->next) {
        struct kv_io_msg *m = c->cur;

        if (c->closed || !m || m->refs != 1 || m->parsed != m->len || m->ring ||
            (c->ring && c->ring->assembling) || /* a ring frame is being assembled in it */
            (idle_before > 0 && c->last_active >= idle_before))
            continue;
        freed += m->cap;
        msg_unref(m);
        c->cur = NULL;
        c->rbuf_peak = 0;
        peer_snapshot(c);
    }
    return freed;
}

/* Appends a request to the output queue. Binary answers are queued when
 * they are done (any order: clients match request ids); text-protocol
 * requests are queued when parsed, so answers leave in request order. */
static void conn_enqueue(struct kv_io_conn *c, struct kv_io_req *r)
{
    r->out_next = NULL;
    r->queued = 1;
    if (c->out_tail)
        c->out_tail->out_next = r;
    else
        c->out_head = r;
    c->out_tail = r;
}

/* Returns room for n more bytes at the end of c's output, in the last
 * buffer or a new one; the caller lays them out and adds n to its len. */
static uint8_t *out_reserve(struct kv_io_conn *c, size_t n)
{
    struct kv_io_obuf *b = c->ob_tail;
    size_t want, cap;

    if (b && b->cap - b->len >= n)
        return b->data + b->len;
    want = sizeof(*b) + n > KV_IO_OBUF ? sizeof(*b) + n : KV_IO_OBUF;
    b = kv_mem_buf_get(want, &cap);
    if (!b)
        return NULL;
    b->next = NULL;
    b->cap = cap - sizeof(*b);
    b->len = b->off = 0;
    b->pool_cap = cap;
    conn_charge(c, (int64_t)cap);
    if (c->ob_tail)
        c->ob_tail->next = b;
    else
        c->ob_head = b;
    c->ob_tail = b;
    return b->data;
}

/* The free end of c's output for a text reply written in place: the last
 * buffer when it has KV_IO_TEXT_ROOM free, a new one when there is none,
 * else NULL (the reply is then allocated and copied, as any other). */
static uint8_t *out_room(struct kv_io_conn *c, size_t *cap)
{
    struct kv_io_obuf *b = c->ob_tail;
    uint8_t *p = NULL;

    if (!b || b->cap - b->len >= KV_IO_TEXT_ROOM)
        p = out_reserve(c, KV_IO_TEXT_ROOM);
    *cap = p ? c->ob_tail->cap - c->ob_tail->len : 0;
    return p;
}

/* Lays out the answer of r at the end of c's output. */
static int out_append(struct kv_io_conn *c, const struct kv_io_req *r)
{
    uint8_t *p;

    /* attached: straight into the response ring, unless earlier output waits there */
    if (c->ring && !c->ob_head && kv_io_ring_put(c, r) == 0)
        return 0;
    if (r->out_len == 0)
        return 0; /* an empty text reply: an empty buffer would never be retired by flush */
    p = out_reserve(c, r->out_len);

    if (!p)
        return KV_ENOMEM;
    if (c->proto == KV_PROTO_TEXT) {
        if (!r->in_place)
            memcpy(p, r->call.resp, r->call.resp_len);
        /* in place: written at p by the adapter, nothing laid out since */
        assert(!r->in_place || p == c->ob_tail->data + c->ob_tail->len);
    } else {
        struct kv_frame f = {
            .version = KV_FRAME_VERSION,
            .flags = KV_FRAME_F_RESPONSE,
            .opcode = r->call.opcode,
            .request_id = r->request_id,
            .body_len = r->call.resp_len,
            .status = r->call.status,
        };

        kv_frame_encode_header(&f, p);
        if (r->call.resp_len)
            memcpy(p + KV_FRAME_HDR, r->call.resp, r->call.resp_len);
        kv_put_le32(p + KV_FRAME_HDR + r->call.resp_len,
                    kv_crc32(0, p, KV_FRAME_HDR + r->call.resp_len));
    }
    c->ob_tail->len += r->out_len;
    return 0;
}

/* Lays out every finished answer at the head of the queue (the rest wait
 * for an earlier answer) and frees their requests. */
static int conn_drain(struct kv_io_conn *c)
{
    while (c->out_head && c->out_head->done) {
        struct kv_io_req *r = c->out_head;

        if (r->out_len && out_append(c, r) != 0) /* 0: a silenced reply (CLIENT REPLY) */
            return KV_ENOMEM;
        c->out_head = r->out_next;
        if (!c->out_head)
            c->out_tail = NULL;
        kv_mem_stat_add(KV_STAT_RESPONSES, 1);
        req_free(r);
    }
    return 0;
}

/* Turns r's finished call into its text reply (the adapter's). First in
 * line (every answer before it laid out), the reply may be written straight
 * into the output, where conn_drain commits it. 0 or KV_ENOMEM. */
static int text_reply(struct kv_io_conn *c, struct kv_io_req *r)
{
    const struct kv_io_textproto *text = &c->thr->io->text;
    uint8_t *out = NULL, *room = NULL;
    size_t len = 0, room_cap = 0;

    if (c->out_head == r)
        room = out_room(c, &room_cap);
    if (text->reply(text->ctx, &r->call, room, room_cap, &out, &len) != 0)
        return KV_ENOMEM;
    if (r->call.resp_owned)
        kv_mem_free(KV_MOD_PACKET, r->call.resp);
    r->in_place = room && out == room;
    r->call.resp = r->in_place ? NULL : out;
    r->call.resp_len = (uint32_t)len;
    r->call.resp_owned = !r->in_place;
    return 0;
}

/* The answer of r is ready: lay it out (now, or once the answers before it
 * are) and let flush write it. */
static void req_finish(struct kv_io_conn *c, struct kv_io_req *r)
{
    if (c->proto == KV_PROTO_TEXT) {
        /* tag UINT32_MAX: the reply is in resp already */
        if (r->call.tag != UINT32_MAX && text_reply(c, r) != 0) {
            kv_io_log(c->thr->io, 0, "out of memory for a reply; closing connection");
            r->done = 1; /* queued since it was parsed: conn_close frees it */
            conn_close(c);
            return;
        }
        if (r->silent) { /* CLIENT REPLY OFF / SKIP: the command ran, its reply is dropped */
            if (r->call.resp_owned)
                kv_mem_free(KV_MOD_PACKET, r->call.resp);
            r->call.resp = NULL;
            r->call.resp_len = 0;
            r->call.resp_owned = 0;
            r->in_place = 0; /* written at the free end, never committed */
        }
        r->out_len = r->call.resp_len;
    } else {
        r->out_len = KV_FRAME_OVERHEAD + r->call.resp_len;
    }
    if (r->call.resp_owned && r->call.resp_len)
        req_charge(r, r->call.resp_len);
    if (!r->queued) /* binary: queued when done; text and --in-order: when parsed */
        conn_enqueue(c, r);
    r->done = 1;
    c->out_bytes += r->out_len;
    conn_mark_flush(c);
    if (c->out_bytes > c->thr->io->cfg->output_hard_limit && c->out_bytes > r->out_len) {
        /* a client that does not read its answers: like Redis's
         * client-output-buffer-limit, drop it rather than grow without end
         * (one answer alone, however large, is always sent) */
        kv_io_log(c->thr->io, 1, "fd %d: %zu bytes of output pending, above "
                  "--output-hard-limit; closing", c->fd, c->out_bytes);
        kv_mem_stat_add(KV_STAT_OUTPUT_LIMIT, 1);
        conn_close(c);
        return;
    }
    if (conn_drain(c) != 0) {
        kv_io_log(c->thr->io, 0, "out of memory for output; closing connection");
        conn_close(c);
        return;
    }
    /* a batch of large answers: hand what is laid out to the socket now,
     * so that a client that reads is not taken for one that does not */
    if (c->out_bytes >= c->thr->io->cfg->max_output)
        conn_flush(c);
    budget_check(c->thr, 0);
}

/* Answers an error the IO thread detects itself (no worker involved), with
 * msg as the body's Error.message (proto/kv.proto: field 1, a string;
 * encoded here by hand: tag 0x0A, a one-byte length, the bytes). */
static int conn_answer_error(struct kv_io_conn *c, const struct kv_frame *f, uint16_t status,
                             const char *msg)
{
    struct kv_io_req *r = req_new(c, NULL);
    size_t n = msg ? strlen(msg) : 0;

    if (!r)
        return KV_ENOMEM;
    if (n > 127)
        n = 127;
    if (n && n + 2 <= r->call.scratch_cap) {
        r->call.scratch[0] = 0x0A;
        r->call.scratch[1] = (uint8_t)n;
        memcpy(r->call.scratch + 2, msg, n);
        r->call.resp = r->call.scratch;
        r->call.resp_len = (uint32_t)(n + 2);
    }
    r->call.opcode = f->opcode;
    r->call.status = status;
    r->request_id = f->request_id;
    req_finish(c, r);
    return 0;
}

/* Reading stays on unless output or in-flight work is above its limit
 * (backpressure), with hysteresis so it does not flap. */
static void conn_update_reading(struct kv_io_conn *c)
{
    const struct kv_config *cfg = c->thr->io->cfg;
    int want;

    if (c->closed)
        return;
    if (c->closing || c->thr->stopping || c->gated || c->waiting)
        want = 0;
    else if (c->ring) /* the socket stays read (liveness); the ring is what pauses */
        want = c->ring->can_read
                   ? c->out_bytes < cfg->max_output && c->inflight < KV_IO_MAX_INFLIGHT
                   : c->out_bytes <= cfg->max_output / 2 && c->inflight <= KV_IO_MAX_INFLIGHT / 2;
    else if (c->reading)
        want = c->out_bytes < cfg->max_output && c->inflight < KV_IO_MAX_INFLIGHT &&
               c->inflight_bytes < cfg->max_output;
    else
        want = c->out_bytes <= cfg->max_output / 2 && c->inflight <= KV_IO_MAX_INFLIGHT / 2 &&
               c->inflight_bytes <= cfg->max_output / 2;
    if (c->ring) {
        int was = c->ring->can_read;

        c->ring->can_read = (uint8_t)want;
        if (want && !was)
            kv_io_ring_kick(c);
        return;
    }
    if (want && !c->reading)
        ev_io_start(c->thr->loop, &c->rw);
    else if (!want && c->reading)
        ev_io_stop(c->thr->loop, &c->rw);
    c->reading = (uint8_t)want;
}

/* Attached: moves output that did not fit in the response ring when it was laid out into
 * the ring, as far as it has room, then publishes. */
static void conn_flush_ring(struct kv_io_conn *c)
{
    struct kv_ring *q = &c->ring->resp;

    while (c->ob_head && !c->ring->bad) {
        struct kv_io_obuf *b = c->ob_head;
        int64_t space = kv_ring_space(q);
        size_t take;

        if (space == 0)
            space = kv_ring_want_space(q); /* the client writes our eventfd once it reads */
        if (space < 0) {
            c->ring->bad = 1;
            break;
        }
        if (space == 0)
            break;
        kv_ring_unwant(q);
        take = b->len - b->off < (size_t)space ? b->len - b->off : (size_t)space;
        kv_ring_write(q, b->data + b->off, take);
        b->off += take;
        c->out_bytes -= take;
        __atomic_store_n(&c->peer.ring_out, c->peer.ring_out + take, __ATOMIC_RELAXED);
        kv_mem_stat_add(KV_STAT_BYTES_OUT, take);
        if (b->off == b->len) {
            c->ob_head = b->next;
            conn_charge(c, -(int64_t)b->pool_cap);
            kv_mem_buf_put(b, b->pool_cap);
        }
    }
    if (!c->ob_head)
        c->ob_tail = NULL;
    kv_io_ring_flush(c);
}

/* Writes as much laid-out output as the socket takes. */
static void conn_flush(struct kv_io_conn *c)
{
    if (c->ring) {
        if (!c->closed)
            conn_flush_ring(c);
        return;
    }
    while (c->ob_head && !c->closed) {
        struct iovec iov[KV_IO_IOV_MAX];
        struct kv_io_obuf *b;
        size_t total = 0, left;
        ssize_t n;
        int k = 0;

        b = c->ob_head;
        if (b->off == b->len) { /* an empty buffer (nothing laid out in it): retired, never
                                 * sent -- a send of 0 bytes would make no progress */
            c->ob_head = b->next;
            if (!c->ob_head)
                c->ob_tail = NULL;
            conn_charge(c, -(int64_t)b->pool_cap);
            kv_mem_buf_put(b, b->pool_cap);
            continue;
        }
        for (b = c->ob_head; b && k < KV_IO_IOV_MAX; b = b->next, k++) {
            iov[k].iov_base = b->data + b->off;
            iov[k].iov_len = b->len - b->off;
            total += b->len - b->off;
        }
        if (k == 1) {
            n = send(c->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)k};

            n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_close(c); /* peer gone: EPIPE, ECONNRESET */
            return;
        }
        kv_mem_stat_add(KV_STAT_BYTES_OUT, (uint64_t)n);
        c->out_bytes -= (size_t)n;
        c->last_active = ev_now(c->thr->loop);
        /* retire every buffer now fully written */
        for (left = (size_t)n; left;) {
            size_t take;

            b = c->ob_head;
            take = b->len - b->off < left ? b->len - b->off : left;
            b->off += take;
            left -= take;
            if (b->off == b->len) {
                c->ob_head = b->next;
                conn_charge(c, -(int64_t)b->pool_cap);
                kv_mem_buf_put(b, b->pool_cap);
            }
        }
        if (!c->ob_head)
            c->ob_tail = NULL;
        if ((size_t)n < total)
            break; /* the socket is full: wait until it is writable */
    }
    if (c->closed)
        return;
    if (c->ob_head)
        ev_io_start(c->thr->loop, &c->ww);
    else
        ev_io_stop(c->thr->loop, &c->ww);
}

/* Reads and drops input until the peer closes (or KV_IO_LINGER): closing a
 * socket with unread input sends a reset, which can destroy the answer in
 * the client's receive buffer before it reads it (Apache's "lingering
 * close"). */
static void on_linger_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kv_io_conn *c = w->data;
    uint8_t sink[16384];

    for (int i = 0; i < 64; i++) {
        ssize_t n = read(c->fd, sink, sizeof(sink));

        if (n > 0) {
            kv_mem_stat_add(KV_STAT_BYTES_IN, (uint64_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        conn_close(c); /* EOF or reset: the client has what it needs */
        conn_mark_flush(c);
        return;
    }
}

/* The answer is out: shut the write side (the client sees the answer, then
 * EOF) and drain the input. */
static void conn_linger(struct kv_io_conn *c)
{
    struct kv_io_thread *thr = c->thr;

    shutdown(c->fd, SHUT_WR);
    c->lingering = 1;
    c->linger_since = ev_now(thr->loop);
    ev_io_stop(thr->loop, &c->rw);
    ev_set_cb(&c->rw, on_linger_read);
    ev_io_start(thr->loop, &c->rw);
    c->reading = 1;
    if (!ev_is_active(&thr->sweep))
        ev_timer_start(thr->loop, &thr->sweep);
}

/* Frees a closed connection once nothing refers to it, closes one that was
 * asked to close once its answers are out, and applies backpressure. The
 * one place where connections are freed (from the prepare watcher). */
static void conn_settle(struct kv_io_conn *c)
{
    if (!c->closed && c->lingering) {
        if (c->thr->stopping)
            conn_close(c);
        else
            return; /* on_linger_read or the sweep closes it */
    }
    if (!c->closed && c->closing && c->inflight == 0 && !c->out_head && !c->ob_head) {
        /* attached: the answer is in the ring, which the client drains before it
         * reports the closed socket; nothing to linger for */
        if (c->linger && !c->thr->stopping && !c->ring) {
            conn_linger(c);
            return;
        }
        conn_close(c);
    }
    if (c->closed) {
        if (c->inflight == 0 && !c->on_flush)
            conn_free(c);
        return;
    }
    /* before AUTH a connection is served one request at a time: the next is
     * parsed only once this answer is written, so a pipeline of guesses gets
     * no further than the third wrong one (KV_SESSION_CLOSE) */
    if (c->waiting && c->inflight == 0) {
        c->waiting = 0;
        if (!c->closing && !c->thr->stopping && c->cur && c->cur->parsed < c->cur->len) {
            conn_parse_input(c);
            if (c->closed)
                return;
        }
        conn_update_reading(c);
    }
    if (c->gated && c->inflight == 0 && !c->out_head && !c->ob_head) {
        c->gated = 0;
        if (!c->closing && !c->thr->stopping && c->cur && c->cur->parsed < c->cur->len) {
            conn_parse_input(c);
            if (c->closed)
                return; /* marked for flush: settled again */
        }
    }
    /* the receive buffer, empty: kept for the next read (no pool round
     * trip per request), shrunk when it grew for a request much larger than
     * the latest ones, given back at once with --recv-buf-keep 0; on_sweep
     * gives back the buffers of connections idle for --recv-buf-keep */
    if (c->cur && c->cur->refs == 1 && c->cur->parsed == c->cur->len && !c->cur->ring)
        rbuf_settle(c);
    peer_snapshot(c);
    conn_update_reading(c);
}

static void flush_all(struct kv_io_thread *thr)
{
    struct kv_io_conn *c;

    while ((c = thr->flush_list)) {
        thr->flush_list = c->flush_next;
        c->on_flush = 0;
        conn_flush(c);
        conn_settle(c);
    }
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_mark_flush(w->data);
}

/* Appends calls first..last (linked, n of them, all of c) to the thread's batch. */
static void batch_append(struct kv_io_thread *thr, struct kv_io_conn *c, struct kv_call *first,
                         struct kv_call *last, unsigned n)
{
    last->next = NULL;
    if (thr->batch_tail)
        thr->batch_tail->next = first;
    else
        thr->batch_head = first;
    thr->batch_tail = last;
    c->in_pool += n;
    c->batch_gen = thr->batch_gen;
}

/* A call of c is ready to run. Calls of one connection run in order, one after another:
 * it joins the thread's batch when nothing of c is with the workers, or when c's calls
 * are the tail of the batch not yet dispatched (one run, never split by the pool); else
 * it waits in c's hold until c's run is back (process_done). */
static inline __attribute__((always_inline)) void batch_add(struct kv_io_thread *thr,
                                                           struct kv_io_conn *c,
                                                           struct kv_io_req *req, size_t wire_len)
{
    req->wire_len = wire_len;
    c->inflight++;
    c->inflight_bytes += wire_len;
    if (!c->hold_head &&
        (c->in_pool == 0 ||
         (c->batch_gen == thr->batch_gen && thr->batch_tail &&
          ((struct kv_io_req *)thr->batch_tail)->conn == c))) {
        batch_append(thr, c, &req->call, &req->call, 1);
        return;
    }
    req->call.next = NULL;
    if (c->hold_tail)
        c->hold_tail->next = &req->call;
    else
        c->hold_head = &req->call;
    c->hold_tail = &req->call;
}

/* c's run is back: its held calls become the next run. */
static void hold_release(struct kv_io_thread *thr, struct kv_io_conn *c)
{
    struct kv_call *first = c->hold_head, *last = first;
    unsigned n = 1;

    while (last->next) {
        last = last->next;
        n++;
    }
    c->hold_head = c->hold_tail = NULL;
    batch_append(thr, c, first, last, n);
}

/* A request read in a client's ring is handed to its handler where it lies, so the
 * client could rewrite it while the handler reads. Handlers that read their body once
 * (each length bounded by body_len, which the server holds) only see a different
 * request of that client's; those that walk it twice (DEL, MGET, MSET count, then
 * act) and any opcode not listed here get a private copy. */
static int ring_in_place_ok(uint16_t opcode)
{
    switch (opcode) {
    case KV_OP_PING:
    case KV_OP_GET:
    case KV_OP_SET:
    case KV_OP_EXISTS:
    case KV_OP_INCR:
    case KV_OP_EXPIRE:
    case KV_OP_AUTH:
    case KV_OP_STATS:
    case KV_OP_FLUSH:
        return 1;
    default:
        return 0;
    }
}

/* kv_call.answer_room of an attached client's requests: on the connection's own IO
 * thread, the handler may build its answer in the response ring (no copy at layout). */
static void ring_answer_room(struct kv_call *call)
{
    struct kv_io_req *r = (struct kv_io_req *)call;

    if (r->conn->thr != current_thread || !kv_io_ring_room(r->conn, r))
        call->answer_room = NULL; /* a worker thread, or no room: scratch as usual */
}

static int ring_copy_body(struct kv_io_req *r)
{
    uint8_t *b = kv_mem_alloc(KV_MOD_PACKET, r->call.body_len);

    if (!b)
        return KV_ENOMEM;
    memcpy(b, r->call.body, r->call.body_len);
    r->call.body = b;
    r->body_owned = 1;
    req_charge(r, r->call.body_len);
    return 0;
}

/* Decodes every whole frame in the current message into the thread's
 * batch. Returns through *need the size of a trailing partial frame when
 * its header is in (else 0). */
static void conn_parse_binary(struct kv_io_conn *c, size_t *need)
{
    struct kv_io_thread *thr = c->thr;
    const struct kv_config *cfg = thr->io->cfg;
    struct kv_io_msg *m = c->cur;
    size_t max_body = cfg->max_body;
    int authed = !cfg->requirepass[0] ||
                 (__atomic_load_n(&c->session.flags, __ATOMIC_ACQUIRE) & KV_SESSION_AUTHED);

    /* before AUTH, only small frames (PING, AUTH) are worth buffering */
    if (!authed && cfg->max_body_noauth < max_body)
        max_body = cfg->max_body_noauth;
    while (m->parsed < m->len) {
        struct kv_frame f;
        ssize_t r = kv_frame_decode(m->buf + m->parsed, m->len - m->parsed, max_body, 0, &f);
        struct kv_io_req *req;
        uint16_t status;
        char why[128];

        if (r > 0 && f.opcode == KV_OP_ATTACH) { /* a transport request: the IO thread's */
            m->parsed += (size_t)r;
            kv_io_ring_attach(c, &f, (size_t)r);
            if (c->closed || c->closing || c->ring)
                return;
            continue;
        }
        if (r > 0) {
            req = req_new(c, m);
            if (!req) {
                kv_io_log(thr->io, 0, "out of memory for a request; closing connection");
                conn_close(c);
                return;
            }
            req->call.opcode = f.opcode;
            req->call.body = f.body;
            req->call.body_len = f.body_len;
            req->request_id = f.request_id;
            if (c->ring)
                req->call.answer_room = ring_answer_room;
            if (m->ring && f.body_len && !ring_in_place_ok(f.opcode) && ring_copy_body(req) != 0) {
                kv_io_log(thr->io, 0, "out of memory for a request; closing connection");
                req_free(req);
                conn_close(c);
                return;
            }
            if (cfg->in_order)
                conn_enqueue(c, req); /* answers leave in request order */
            batch_add(thr, c, req, (size_t)r);
            m->parsed += (size_t)r;
            if (!authed) { /* one at a time until AUTH succeeds (conn_settle) */
                c->gated = 1;
                conn_mark_flush(c);
                return;
            }
            continue;
        }
        if (r == KV_EAGAIN) {
            if (m->len - m->parsed >= KV_FRAME_HDR)
                *need = KV_FRAME_OVERHEAD + (size_t)f.body_len;
            return;
        }
        kv_mem_stat_add(KV_STAT_PROTO_ERRORS, 1);
        if (r == KV_EMAGIC) {
            kv_io_log(thr->io, 3, "fd %d: not a libevkv frame; closing", c->fd);
            conn_close(c);
            return;
        }
        status = r == KV_ECRC ? KV_ST_CRC_MISMATCH
               : r == KV_ETOOBIG ? KV_ST_TOO_LARGE : KV_ST_BAD_FRAME;
        if (r == KV_ETOOBIG)
            snprintf(why, sizeof(why), "request body of %u bytes is above the server's %s of "
                     "%zu bytes", f.body_len,
                     max_body < cfg->max_body ? "--max-body-noauth (before AUTH)" : "--max-body",
                     max_body);
        else
            snprintf(why, sizeof(why), "%s", r == KV_ECRC ? "crc32 mismatch"
                     : "bad frame header (version, flags, status or reserved field)");
        kv_io_log(thr->io, 3, "fd %d: %s; answering and closing", c->fd, why);
        /* the stream can no longer be trusted: answer, then close (after
         * draining what the client is still sending, so that it reads the
         * answer instead of a reset) */
        c->closing = 1;
        c->linger = 1;
        conn_mark_flush(c);
        if (conn_answer_error(c, &f, status, why) != 0)
            conn_close(c);
        return;
    }
}

/* Queues an answer the IO thread has already (text protocol): bytes owned
 * (KV_MOD_PACKET), or a static string when owned is 0. */
static int conn_text_reply(struct kv_io_conn *c, uint8_t *bytes, size_t len, int owned)
{
    struct kv_io_req *r = req_new(c, NULL);

    if (!r) {
        if (owned)
            kv_mem_free(KV_MOD_PACKET, bytes);
        return KV_ENOMEM;
    }
    r->call.resp = bytes;
    r->call.resp_len = (uint32_t)len;
    r->call.resp_owned = (uint8_t)owned;
    r->call.tag = UINT32_MAX; /* the reply is in resp already */
    conn_enqueue(c, r);
    req_finish(c, r);
    return 0;
}

/* Parses every whole text-protocol (RESP) request of the current message:
 * each becomes a call for the workers or an immediate reply, queued in
 * request order. */
static void conn_parse_text(struct kv_io_conn *c, size_t *need)
{
    struct kv_io_thread *thr = c->thr;
    const struct kv_io_textproto *text = &thr->io->text;
    const struct kv_config *cfg = thr->io->cfg;
    struct kv_io_msg *m = c->cur;
    int authed = !cfg->requirepass[0] ||
                 (__atomic_load_n(&c->session.flags, __ATOMIC_ACQUIRE) & KV_SESSION_AUTHED);
    /* before AUTH, requests are kept small (Redis does the same) */
    struct kv_resp_limits lim = {
        .max_args = authed ? cfg->resp_max_args : 16,
        .max_bulk = authed ? cfg->max_body : cfg->max_body_noauth,
        .max_request = authed ? cfg->max_body : cfg->max_body_noauth,
        .max_inline = 64 * 1024, /* Redis's PROTO_INLINE_MAX_SIZE, and never above the above */
    };
    if (lim.max_inline > lim.max_request)
        lim.max_inline = lim.max_request;

    /* a partial request whose known size has not arrived: nothing to do */
    if (c->partial_need && m->len - m->parsed < c->partial_need) {
        *need = c->partial_need;
        return;
    }
    c->partial_need = 0;
    while (m->parsed < m->len && !c->closing) {
        const char *err = NULL;
        struct kv_text_result res = {0};
        struct kv_io_req *req;
        ssize_t r = kv_resp_parse(m->buf + m->parsed, m->len - m->parsed, &lim, &thr->argv, need,
                                  &err, &c->resume);
        int rc;

        if (r == KV_EAGAIN) {
            c->partial_need = *need;
            return;
        }
        if (r < 0) {
            static const char prefix[] = "-ERR Protocol error: ";
            char why[192];
            size_t n;
            uint8_t *msg;

            if (r == KV_ETOOBIG) /* name the limit, so that the client can say it */
                snprintf(why, sizeof(why), "%s (the server's limits: %zu bytes per request "
                         "(%s), %zu per inline request, %zu arguments)",
                         err ? err : "too large", lim.max_request,
                         authed ? "--max-body" : "--max-body-noauth, before AUTH",
                         lim.max_inline, lim.max_args);
            else
                snprintf(why, sizeof(why), "%s", err ? err : kv_strerror((int)r));
            n = sizeof(prefix) - 1 + strlen(why) + 2;
            msg = kv_mem_alloc(KV_MOD_PACKET, n + 1);
            kv_mem_stat_add(KV_STAT_PROTO_ERRORS, 1);
            kv_io_log(thr->io, 3, "fd %d: RESP protocol error: %s; answering and closing",
                      c->fd, why);
            c->closing = 1;
            c->linger = 1;
            conn_mark_flush(c);
            if (r == KV_ENOMEM || !msg) {
                kv_mem_free(KV_MOD_PACKET, msg);
                conn_close(c);
                return;
            }
            snprintf((char *)msg, n + 1, "%s%s\r\n", prefix, why);
            if (conn_text_reply(c, msg, n, 1) != 0)
                conn_close(c);
            return;
        }
        m->parsed += (size_t)r;
        if (thr->argv.argc == 0)
            continue; /* an empty line */
        req = req_new(c, NULL);
        if (!req) {
            conn_close(c);
            return;
        }
        c->peer.cmd_wire = (size_t)r; /* CLIENT LIST qbuf= of the command being run */
        res.busy = c->inflight > 0;
        rc = text->command(text->ctx, &c->session, thr->argv.argc, thr->argv.v, &req->call, &res);
        c->peer.cmd_wire = 0;
        if (rc == KV_TEXT_WAIT) { /* parsed again once the calls before it have run (their
                                   * answers need not be written: order is the queue's) */
            m->parsed -= (size_t)r;
            req_free(req);
            c->waiting = 1;
            conn_mark_flush(c);
            return;
        }
        req->silent = (uint8_t)(res.silent != 0);
        if (thr->argv.cap > KV_IO_ARGV_KEEP)
            kv_resp_argv_fini(&thr->argv); /* a huge request's argv is not kept for ever */
        if (rc == KV_TEXT_DISPATCH) {
            req->call.body = res.body;
            req->call.body_len = (uint32_t)res.body_len;
            req->body_owned = res.body != NULL && !res.body_in_scratch;
            if (req->body_owned)
                req_charge(req, res.body_len);
            conn_enqueue(c, req);
            batch_add(thr, c, req, (size_t)r);
        } else if (rc == KV_TEXT_REPLY) {
            req->call.resp = res.reply;
            req->call.resp_len = (uint32_t)res.reply_len;
            req->call.resp_owned = 1;
            req->call.tag = UINT32_MAX;
            conn_enqueue(c, req);
            req_finish(c, req);
            if (res.close) {
                c->closing = 1;
                conn_mark_flush(c);
            }
        } else {
            req_free(req);
            conn_close(c);
            return;
        }
        if (c->closed)
            return;
        /* one at a time until AUTH succeeds; after a barrier (an EXEC whose queued
         * connection commands run as its reply is laid out), the next command is parsed
         * once that reply is written, so it sees their effect (conn_settle) */
        if (!authed || res.barrier) {
            c->gated = 1;
            conn_mark_flush(c);
            return;
        }
    }
}

/* Makes room for the next read: reuse the buffer when nothing points into
 * it, else continue in a new message big enough for the partial request
 * (need = its size when known, else 0). */
static int conn_make_room(struct kv_io_conn *c, size_t need)
{
    const struct kv_config *cfg = c->thr->io->cfg;
    struct kv_io_msg *m = c->cur, *n;
    size_t rest = m->len - m->parsed, newcap;
    size_t tail_want;

    if (need < rest + 1)
        need = rest + (rest < KV_FRAME_HDR ? KV_FRAME_HDR - rest : KV_IO_MIN_TAIL);
    /* grow with what has arrived, not with what a header announces: a
     * partial frame holds at most about twice its received bytes */
    if (need > rest + KV_IO_MIN_TAIL && need > cfg->recv_buf && need > 2 * rest)
        need = 2 * rest > cfg->recv_buf ? 2 * rest : cfg->recv_buf;
    tail_want = need - rest < KV_IO_MIN_TAIL ? need - rest : KV_IO_MIN_TAIL;
    if (rest == 0 && m->refs == 1) {
        m->len = m->parsed = 0;
        if (m->cap >= cfg->recv_buf)
            return 0;
    }
    if (m->cap - m->parsed >= need && m->cap - m->len >= tail_want)
        return 0;
    if (m->refs == 1 && m->cap >= need) {
        memmove(m->buf, m->buf + m->parsed, rest);
        m->len = rest;
        m->parsed = 0;
        return 0;
    }
    /* grow at least geometrically, so a request arriving in many reads
     * whose size is learnt piece by piece (RESP) is not copied over and over */
    newcap = need > cfg->recv_buf ? need : cfg->recv_buf;
    if (newcap < 2 * rest)
        newcap = 2 * rest;
    n = msg_new(c, newcap);
    if (!n)
        return KV_ENOMEM;
    memcpy(n->buf, m->buf + m->parsed, rest);
    n->len = rest;
    m->parsed = m->len;
    c->cur = n;
    msg_unref(m);
    return 0;
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kv_io_conn *c = w->data;
    struct kv_io_msg *m = c->cur;
    ssize_t n;

    if (!m) {
        m = c->cur = msg_new(c, c->thr->io->cfg->recv_buf);
        if (!m) {
            kv_io_log(c->thr->io, 0, "out of memory for a receive buffer; closing connection");
            conn_close(c);
            return;
        }
    }
    n = read(c->fd, m->buf + m->len, m->cap - m->len);
    if (n == 0) {
        /* EOF: the peer may only have shut down its sending side (nc -N,
         * printf | socat): every request is still answered, then closed */
        c->closing = 1;
        conn_mark_flush(c);
        return;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_close(c); /* reset: nobody left to answer */
        return;
    }
    kv_mem_stat_add(KV_STAT_BYTES_IN, (uint64_t)n);
    m->len += (size_t)n;
    if (m->len - m->parsed > c->rbuf_peak)
        c->rbuf_peak = m->len - m->parsed;
    c->last_active = ev_now(loop);
    __atomic_store_n(&c->peer.active, (int64_t)c->last_active, __ATOMIC_RELAXED);
    if (c->proto == KV_PROTO_UNKNOWN) /* the first byte picks the protocol */
        c->proto = m->buf[0] == KV_FRAME_MAGIC0 || !c->thr->io->text.command ? KV_PROTO_BINARY
                                                                             : KV_PROTO_TEXT;
    conn_parse_input(c);
}

/* A connection passed --client-query-buffer-limit: logged at most once a second. */
static void query_limit_log(struct kv_io_conn *c, size_t held)
{
    uint64_t quiet;
    char peer[64];

    if (!kv_io_ratelog_take(&c->thr->io->qbuf_log, ev_now(c->thr->loop), &quiet))
        return;
    kv_io_log(c->thr->io, 1, "%s: %zu bytes of unparsed input, above "
              "--client-query-buffer-limit %zu; closing (and %llu more since the last such "
              "line)", conn_peer(c, peer, sizeof(peer)), held,
              __atomic_load_n(&c->thr->io->cfg->query_buf_limit, __ATOMIC_RELAXED),
              (unsigned long long)quiet);
}

/* Parses what the current message holds into requests, then makes room for
 * the next read. From on_read, and from conn_settle when an unauthenticated
 * connection's answer has been written (the gate opens). */
static void conn_parse_input(struct kv_io_conn *c)
{
    struct ev_loop *loop = c->thr->loop;
    struct kv_io_msg *m = c->cur;
    size_t need = 0;

    if (c->proto == KV_PROTO_TEXT)
        conn_parse_text(c, &need);
    else
        conn_parse_binary(c, &need);
    if (c->closed || c->closing)
        return;
    if (m->parsed == m->len || c->waiting) /* waiting: a whole request, not a slow one */
        c->partial_since = 0;
    else if (c->partial_since == 0)
        c->partial_since = ev_now(loop); /* a request started: its deadline runs */
    if (m->len - m->parsed >
        __atomic_load_n(&c->thr->io->cfg->query_buf_limit, __ATOMIC_RELAXED)) {
        query_limit_log(c, m->len - m->parsed); /* Redis's client-query-buffer-limit */
        conn_close(c);
        return;
    }
    if (conn_make_room(c, need) != 0) {
        kv_io_log(c->thr->io, 0, "out of memory for a receive buffer; closing connection");
        conn_close(c);
        return;
    }
    if (c->inflight >= KV_IO_MAX_INFLIGHT)
        conn_mark_flush(c); /* settle applies backpressure */
    peer_snapshot(c);
    budget_check(c->thr, 0);
}

/* ---- completions ---------------------------------------------------------- */
/* A handler reported a wrong password: say from where, at most once a second. */
static void auth_failed_log(struct kv_io_conn *c)
{
    uint64_t quiet;
    char peer[64];

    __atomic_fetch_and(&c->session.flags, ~KV_SESSION_AUTH_FAILED, __ATOMIC_RELAXED);
    if (!kv_io_ratelog_take(&c->thr->io->auth_log, ev_now(c->thr->loop), &quiet))
        return;
    kv_io_log(c->thr->io, 1, "%s: wrong password (%u on this connection; %llu more on any "
              "since the last such line)", conn_peer(c, peer, sizeof(peer)),
              __atomic_load_n(&c->session.auth_failures, __ATOMIC_RELAXED),
              (unsigned long long)quiet);
}

static void process_done(struct kv_io_thread *thr, struct kv_call *calls)
{
    while (calls) {
        struct kv_io_req *r = (struct kv_io_req *)calls;
        struct kv_io_conn *c = r->conn;
        uint32_t flags;

        calls = calls->next;
        c->inflight--;
        c->inflight_bytes -= r->wire_len;
        if (--c->in_pool == 0 && c->hold_head)
            hold_release(thr, c);
        kv_mem_stat_add(KV_STAT_REQUESTS, 1);
        if (c->closed) {
            kv_mem_stat_add(KV_STAT_DROPPED, 1);
            req_free(r);
            conn_mark_flush(c); /* settle frees it when this was the last */
            continue;
        }
        flags = __atomic_load_n(&c->session.flags, __ATOMIC_ACQUIRE);
        if (flags & KV_SESSION_AUTH_FAILED)
            auth_failed_log(c);
        if (flags & KV_SESSION_CLOSE)
            c->closing = 1;
        req_finish(c, r);
    }
}

void kv_io_complete(void *origin, struct kv_call *calls)
{
    struct kv_io_thread *thr = origin;
    struct kv_call *last;

    if (!calls)
        return;
    if (thr == current_thread) {
        process_done(thr, calls); /* inline dispatch: no hand-off needed */
        return;
    }
    for (last = calls; last->next; last = last->next)
        ;
    pthread_mutex_lock(&thr->lock);
    if (thr->done_tail)
        thr->done_tail->next = calls;
    else
        thr->done_head = calls;
    thr->done_tail = last;
    pthread_mutex_unlock(&thr->lock);
    ev_async_send(thr->loop, &thr->wake);
}

/* ---- the IO thread ------------------------------------------------------- */
/* Once a second: close connections idle past --idle-timeout, and those
 * whose started frame has not completed within --frame-timeout (a slowloris
 * cannot hold a receive buffer for ever). */
static void on_sweep(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kv_io_thread *thr = w->data;
    const struct kv_config *cfg = thr->io->cfg;
    ev_tstamp now = ev_now(loop);

    /* much client memory given back (clients that held a lot have gone):
     * return the freed heap pages to the system */
    /* --recv-buf-keep: idle connections give their empty receive buffers back */
    rbuf_release(thr, now - __atomic_load_n(&cfg->recv_buf_keep, __ATOMIC_RELAXED));
    if (thr->trim_high > thr->client_mem + KV_IO_TRIM_STEP) {
        malloc_trim(0);
        thr->trim_high = thr->client_mem;
    }
    for (struct kv_io_conn *c = thr->conns; c; c = c->next) {
        const char *why = NULL;

        if (c->closed)
            continue;
        if (c->lingering) {
            if (now - c->linger_since > KV_IO_LINGER) {
                kv_io_log(thr->io, 3, "fd %d: still sending %.0f s after an error answer; "
                          "closing", c->fd, KV_IO_LINGER);
                conn_close(c);
                conn_mark_flush(c);
            }
            continue;
        }
        if (cfg->frame_timeout && c->partial_since &&
            now - c->partial_since > cfg->frame_timeout)
            why = "frame not completed within --frame-timeout";
        else if (cfg->idle_timeout && c->inflight == 0 && !c->out_head &&
                 now - c->last_active > cfg->idle_timeout)
            why = "idle past --idle-timeout";
        if (why) {
            kv_io_log(thr->io, 3, "fd %d: %s; closing", c->fd, why);
            kv_mem_stat_add(KV_STAT_TIMEOUTS, 1);
            conn_close(c);
        }
    }
}

static void on_stop_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kv_io_thread *thr = w->data;

    for (struct kv_io_conn *c = thr->conns; c; c = c->next) {
        if (!c->closed)
            kv_io_log(thr->io, 1, "shutdown: dropping %zu bytes of output on fd %d",
                      c->out_bytes, c->fd);
        conn_close(c);
    }
}

static void begin_stop(struct kv_io_thread *thr)
{
    thr->stopping = 1;
    for (struct kv_io_conn *c = thr->conns; c; c = c->next) {
        c->closing = 1;
        conn_mark_flush(c);
    }
    ev_timer_set(&thr->stop_timer, thr->io->cfg->shutdown_grace, 0.);
    ev_timer_start(thr->loop, &thr->stop_timer);
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    struct kv_io_thread *thr = w->data;
    struct kv_call *calls;
    int stop, evict, kill;
    struct kv_io_mline *mon;

    pthread_mutex_lock(&thr->lock);
    calls = thr->done_head;
    thr->done_head = thr->done_tail = NULL;
    stop = thr->stop_requested;
    evict = thr->evict_asked;
    thr->evict_asked = 0;
    kill = thr->kill_asked;
    thr->kill_asked = 0;
    mon = thr->mon_head;
    thr->mon_head = thr->mon_tail = NULL;
    pthread_mutex_unlock(&thr->lock);
    process_done(thr, calls);
    if (kill)
        kv_io_thread_kill_marked(thr);
    if (mon)
        kv_io_thread_monitor_deliver(thr, mon);
    if (evict)
        budget_check(thr, 1);
    if (stop && !thr->stopping)
        begin_stop(thr);
}

void kv_io_thread_monitor_deliver(struct kv_io_thread *thr, struct kv_io_mline *lines)
{
    while (lines) {
        struct kv_io_mline *l = lines;

        lines = l->next;
        for (struct kv_io_conn *c = thr->conns; c; c = c->next) {
            uint8_t *copy;

            if (c->closed || c->closing || !c->monitor)
                continue;
            copy = kv_mem_alloc(KV_MOD_PACKET, l->len);
            if (!copy) {
                kv_io_log(thr->io, 0, "out of memory for a MONITOR line; closing fd %d", c->fd);
                conn_close(c);
                continue;
            }
            memcpy(copy, l->data, l->len);
            if (conn_text_reply(c, copy, l->len, 1) != 0)
                conn_close(c);
        }
        kv_mem_free(KV_MOD_PACKET, l);
    }
}

void kv_io_thread_kill_marked(struct kv_io_thread *thr)
{
    for (struct kv_io_conn *c = thr->conns; c; c = c->next)
        if (!c->closed && __atomic_load_n(&c->peer.kill, __ATOMIC_RELAXED)) {
            kv_io_log(thr->io, 3, "fd %d: CLIENT KILL; closing", c->fd);
            conn_close(c);
        }
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct kv_io_thread *thr = w->data;
    struct kv_call *batch;

    /* settling a connection may parse more of its input (an opened AUTH
     * gate): dispatch that too before the loop blocks */
    do {
        batch = thr->batch_head;
        if (batch) {
            thr->batch_head = thr->batch_tail = NULL;
            thr->batch_gen++;
            thr->io->dispatch(thr->io->dispatch_ctx, batch);
        }
        flush_all(thr);
    } while (thr->batch_head);
    if (thr->stopping && !thr->conns)
        ev_break(loop, EVBREAK_ALL);
}

static void on_pipe(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kv_io_thread *thr = w->data;
    struct kv_io_handoff hs[64];
    ssize_t n = read(thr->pipe_rd, hs, sizeof(hs));

    /* every write is one whole handoff (< PIPE_BUF, atomic), so a read
     * returns whole ones */
    for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof(hs[0]); i++) {
        if (thr->stopping) {
            close(hs[i].fd);
            __atomic_fetch_sub(&thr->io->conns, 1, __ATOMIC_RELAXED);
            continue;
        }
        conn_new(thr, &hs[i]);
    }
}

void kv_io_thread_adopt(struct kv_io_thread *thr, const struct kv_io_handoff *h)
{
    ssize_t n;

    do
        n = write(thr->pipe_wr, h, sizeof(*h));
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof(*h)) {
        kv_io_log(thr->io, 0, "cannot hand fd %d to IO thread %u: %s", h->fd, thr->index,
                  strerror(errno));
        close(h->fd);
        __atomic_fetch_sub(&thr->io->conns, 1, __ATOMIC_RELAXED);
    }
}

static void *thread_main(void *arg)
{
    struct kv_io_thread *thr = arg;
    ev_prepare prep;
    struct kv_io_handoff h;

    current_thread = thr;
    ev_prepare_init(&prep, on_prepare);
    prep.data = thr;
    ev_prepare_start(thr->loop, &prep);
    ev_run(thr->loop, 0);
    ev_prepare_stop(thr->loop, &prep);
    /* fds handed over after the last look at the pipe */
    while (read(thr->pipe_rd, &h, sizeof(h)) == (ssize_t)sizeof(h)) {
        close(h.fd);
        __atomic_fetch_sub(&thr->io->conns, 1, __ATOMIC_RELAXED);
    }
    kv_resp_argv_fini(&thr->argv);
    pthread_mutex_lock(&thr->lock);
    while (thr->mon_head) { /* MONITOR lines nobody is left to read */
        struct kv_io_mline *l = thr->mon_head;

        thr->mon_head = l->next;
        kv_mem_free(KV_MOD_PACKET, l);
    }
    thr->mon_tail = NULL;
    pthread_mutex_unlock(&thr->lock);
    kv_mem_pool_drain();
    current_thread = NULL;
    return NULL;
}

/* ---- the whole ------------------------------------------------------------- */
static int listen_socket(const struct kv_config *cfg, uint16_t *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(cfg->port)};
    socklen_t sl = sizeof(sa);
    int fd, one = 1;

    if (inet_pton(AF_INET, cfg->bind_addr, &sa.sin_addr) != 1) {
        errno = EINVAL;
        return KV_EINVAL;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return KV_EIO;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 1024) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        int e = errno;

        close(fd);
        errno = e;
        return KV_EIO;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

static int thread_init(struct kv_io *io, struct kv_io_thread *thr, unsigned index)
{
    int p[2];

    thr->io = io;
    thr->index = index;
    thr->pipe_rd = thr->pipe_wr = -1;
    if (pipe2(p, O_CLOEXEC) != 0)
        return KV_EIO;
    thr->pipe_rd = p[0];
    thr->pipe_wr = p[1];
    fcntl(thr->pipe_rd, F_SETFL, O_NONBLOCK);
    thr->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!thr->loop)
        return KV_ENOMEM;
    pthread_mutex_init(&thr->lock, NULL);
    ev_io_init(&thr->pipe_w, on_pipe, thr->pipe_rd, EV_READ);
    thr->pipe_w.data = thr;
    ev_io_start(thr->loop, &thr->pipe_w);
    ev_async_init(&thr->wake, on_wake);
    thr->wake.data = thr;
    ev_async_start(thr->loop, &thr->wake);
    ev_timer_init(&thr->stop_timer, on_stop_timer, 1., 0.);
    thr->stop_timer.data = thr;
    ev_idle_init(&thr->ring_spin, kv_io_ring_spin_cb);
    thr->ring_spin.data = thr;
    ev_timer_init(&thr->sweep, on_sweep, 1., 1.);
    thr->sweep.data = thr;
    ev_timer_start(thr->loop, &thr->sweep);
    return 0;
}

int kv_io_create(const struct kv_config *cfg, kv_io_dispatch_fn dispatch, void *dispatch_ctx,
                 const struct kv_io_textproto *text, char *err, size_t errcap,
                 struct kv_io **out)
{
    struct kv_io *io = kv_mem_calloc(KV_MOD_THREAD, sizeof(*io));
    int rc;

    if (errcap)
        err[0] = '\0';
    if (!io) {
        snprintf(err, errcap, "out of memory");
        return KV_ENOMEM;
    }
    io->cfg = cfg;
    io->listen_fd = io->unix_fd = io->relisten_fd = -1;
    pthread_mutex_init(&io->relisten_lock, NULL);
    pthread_mutex_init(&io->peers_lock, NULL);
    io->peers_lock_ok = 1;
    io->dispatch = dispatch;
    io->dispatch_ctx = dispatch_ctx;
    if (text && !cfg->resp_disabled)
        io->text = *text;
    io->nthreads = cfg->io_threads ? cfg->io_threads : 1;
    if (!cfg->no_tcp) {
        io->listen_fd = listen_socket(cfg, &io->port);
        if (io->listen_fd < 0) {
            rc = io->listen_fd;
            io->listen_fd = -1;
            snprintf(err, errcap, "cannot listen on %s:%u: %s", cfg->bind_addr, cfg->port,
                     rc == KV_EINVAL ? "not an IPv4 address" : strerror(errno));
            goto err_destroy;
        }
    }
    if (cfg->unix_path[0] && (rc = kv_io_unix_open(io, err, errcap)) != 0)
        goto err_destroy;
    io->threads = kv_mem_calloc(KV_MOD_THREAD, io->nthreads * sizeof(*io->threads));
    if (!io->threads) {
        rc = KV_ENOMEM;
        snprintf(err, errcap, "out of memory");
        goto err_destroy;
    }
    for (unsigned i = 0; i < io->nthreads; i++) {
        rc = thread_init(io, &io->threads[i], i);
        if (rc != 0) {
            snprintf(err, errcap, "cannot prepare IO thread %u: %s", i, kv_strerror(rc));
            goto err_destroy;
        }
    }
    *out = io;
    return 0;

err_destroy:
    kv_io_destroy(io);
    return rc;
}

int kv_io_start(struct kv_io *io)
{
    sigset_t all, old;
    int rc = 0;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (unsigned i = 0; i < io->nthreads && rc == 0; i++) {
        if (pthread_create(&io->threads[i].tid, NULL, thread_main, &io->threads[i]) != 0)
            rc = KV_ENOMEM;
        else
            io->threads[i].started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0)
        rc = kv_io_listener_start(io);
    return rc;
}

void kv_io_stop(struct kv_io *io)
{
    kv_io_listener_stop(io);
    for (unsigned i = 0; i < io->nthreads; i++) {
        struct kv_io_thread *thr = &io->threads[i];

        if (!thr->started)
            continue;
        pthread_mutex_lock(&thr->lock);
        thr->stop_requested = 1;
        pthread_mutex_unlock(&thr->lock);
        ev_async_send(thr->loop, &thr->wake);
    }
    for (unsigned i = 0; i < io->nthreads; i++) {
        if (io->threads[i].started)
            pthread_join(io->threads[i].tid, NULL);
        io->threads[i].started = 0;
    }
}

void kv_io_destroy(struct kv_io *io)
{
    if (!io)
        return;
    for (unsigned i = 0; io->threads && i < io->nthreads; i++) {
        struct kv_io_thread *thr = &io->threads[i];

        while (thr->mon_head) { /* fed by a thread still running after this one stopped */
            struct kv_io_mline *l = thr->mon_head;

            thr->mon_head = l->next;
            kv_mem_free(KV_MOD_PACKET, l);
        }
        if (thr->loop) {
            ev_loop_destroy(thr->loop);
            pthread_mutex_destroy(&thr->lock);
        }
        if (thr->pipe_rd >= 0)
            close(thr->pipe_rd);
        if (thr->pipe_wr >= 0)
            close(thr->pipe_wr);
    }
    kv_mem_free(KV_MOD_THREAD, io->threads);
    if (io->listen_fd >= 0)
        close(io->listen_fd);
    kv_io_unix_close(io);
    if (io->peers_lock_ok)
        pthread_mutex_destroy(&io->peers_lock);
    kv_mem_free(KV_MOD_THREAD, io);
}

void kv_io_set_session_end(struct kv_io *io, void (*fn)(void *ctx, struct kv_session *s),
                           void *ctx)
{
    io->session_end = fn;
    io->session_ctx = ctx;
}

uint16_t kv_io_port(const struct kv_io *io)
{
    return __atomic_load_n(&io->port, __ATOMIC_RELAXED);
}

int kv_io_relisten(struct kv_io *io, uint16_t port, char *why, size_t cap)
{
    struct kv_config c;
    uint16_t bound;
    int fd, old;

    if (io->cfg->no_tcp || !io->listener_started) {
        snprintf(why, cap, "%s", io->cfg->no_tcp ? "TCP is off (--no-tcp)" : "not running");
        return KV_EINVAL;
    }
    memcpy(c.bind_addr, io->cfg->bind_addr, sizeof(c.bind_addr));
    c.port = port;
    pthread_mutex_lock(&io->relisten_lock);
    fd = listen_socket(&c, &bound);
    if (fd < 0) {
        snprintf(why, cap, "%s", fd == KV_EINVAL ? "not an IPv4 address" : strerror(errno));
        pthread_mutex_unlock(&io->relisten_lock);
        return fd == KV_EINVAL ? KV_EINVAL : KV_EIO;
    }
    /* the listener thread swaps its watcher to fd and closes the old socket;
     * a socket handed over before that one was taken is closed here */
    old = __atomic_exchange_n(&io->relisten_fd, fd, __ATOMIC_ACQ_REL);
    if (old >= 0)
        close(old);
    __atomic_store_n(&io->port, bound, __ATOMIC_RELAXED);
    ev_async_send(io->lloop, &io->lrelisten);
    pthread_mutex_unlock(&io->relisten_lock);
    return 0;
}

/* ---- attached clients: the request ring ------------------------------------------ */
/* A span of the request ring: the bytes [rd, rd + n) seen in place at p. */
static struct kv_io_msg *span_new(struct kv_io_ring *g, const uint8_t *p, size_t n)
{
    struct kv_io_msg *s = kv_mem_obj_get(KV_MOD_MESSAGE, sizeof(*s));

    if (!s)
        return NULL;
    memset(s, 0, sizeof(*s));
    s->buf = (uint8_t *)p;
    s->conn = g->conn;
    s->cap = s->len = n;
    s->refs = 1;
    s->ring = g;
    return s;
}

/* The span ends where the reader stands now: queue it behind the older ones and drop the
 * parser's reference (released at once when no request points into it). */
static void span_commit(struct kv_io_ring *g, struct kv_io_msg *s)
{
    s->ring_end = g->req.rd;
    if (g->spans_tail)
        g->spans_tail->ring_next = s;
    else
        g->spans = s;
    g->spans_tail = s;
    msg_unref(s);
}

/* Copies what the ring has of the frame being assembled (one that wraps, or is larger
 * than the ring) into c->cur, and parses it once whole. Returns 1 when it made progress. */
static int ring_assemble(struct kv_io_conn *c, int64_t avail)
{
    struct kv_io_ring *g = c->ring;
    struct kv_io_msg *m = c->cur, *s;
    size_t have = m->len - m->parsed, want, take, need = 0;

    want = g->asm_need ? (size_t)g->asm_need - have : KV_FRAME_HDR - have;
    take = (size_t)avail < want ? (size_t)avail : want;
    if (take > m->cap - m->len)
        take = m->cap - m->len;
    if (take == 0)
        return 0;
    s = span_new(g, NULL, 0);
    if (!s)
        goto err_nomem;
    kv_ring_peek(&g->req, 0, m->buf + m->len, take);
    kv_ring_read(&g->req, take);
    span_commit(g, s);
    m->len += take;
    __atomic_store_n(&c->peer.ring_in, c->peer.ring_in + take, __ATOMIC_RELAXED);
    kv_mem_stat_add(KV_STAT_BYTES_IN, take);
    conn_parse_binary(c, &need);
    if (c->closed || c->closing)
        return 1;
    if (m->parsed == m->len) { /* whole, and handed on */
        g->asm_need = 0;
        g->assembling = 0;
        return 1;
    }
    g->asm_need = need;
    if (conn_make_room(c, need ? need : KV_FRAME_HDR) != 0)
        goto err_nomem;
    return 1;

err_nomem:
    kv_io_log(c->thr->io, 0, "out of memory for a ring request; closing connection");
    conn_close(c);
    return 1;
}

void kv_io_conn_parse_ring(struct kv_io_conn *c)
{
    struct kv_io_ring *g = c->ring;
    struct kv_ring *q = &g->req;
    const struct kv_config *cfg = c->thr->io->cfg;

    for (int guard = 0; guard < 64; guard++) {
        int64_t avail;
        const uint8_t *p;
        size_t n, consumed, room, need = 0;
        struct kv_io_msg *s, *saved;

        if (c->closed || c->closing || c->gated || !g->can_read ||
            c->inflight >= KV_IO_MAX_INFLIGHT) {
            avail = kv_ring_avail(q);
            g->stuck = avail > 0 ? (uint64_t)avail : 0; /* read again once kicked */
            return;
        }
        avail = kv_ring_avail(q);
        g->stuck = 0;
        if (avail < 0) {
            kv_io_log(c->thr->io, 1, "fd %d: attached client (pid %d) wrote an impossible "
                      "request-ring head; closing it", c->fd, c->peer.id.pid);
            kv_mem_stat_add(KV_STAT_PROTO_ERRORS, 1);
            conn_close(c);
            return;
        }
        if (avail == 0)
            return;
        c->last_active = ev_now(c->thr->loop);
        if (g->assembling) {
            if (!ring_assemble(c, avail)) {
                g->stuck = (uint64_t)avail; /* seen, and not usable until more comes */
                return;
            }
            continue;
        }
        n = kv_ring_contig(q, 0, &p);
        room = n;
        if (n > (size_t)avail)
            n = (size_t)avail;
        s = span_new(g, p, n);
        if (!s) {
            kv_io_log(c->thr->io, 0, "out of memory for a ring request; closing connection");
            conn_close(c);
            return;
        }
        s->refs++; /* a close while parsing drops the current message's reference */
        saved = c->cur;
        c->cur = s;
        conn_parse_binary(c, &need);
        if (c->cur == s) {
            c->cur = saved;
            s->refs--;
        } else {
            msg_unref(saved); /* closed: its reference was the one to drop */
        }
        consumed = s->parsed;
        kv_ring_read(q, consumed);
        span_commit(g, s);
        __atomic_store_n(&c->peer.ring_in, c->peer.ring_in + consumed, __ATOMIC_RELAXED);
        kv_mem_stat_add(KV_STAT_BYTES_IN, consumed);
        if (consumed > 0 || c->closed || c->closing || c->gated)
            continue;
        /* a partial frame at the reader: wait for it where it will lie whole, else
         * assemble it in a receive buffer (it wraps, or is larger than the ring) */
        if (need ? need <= room : room >= KV_FRAME_HDR) {
            g->stuck = (uint64_t)avail; /* part of a frame: its rest wakes us */
            return;
        }
        if (!c->cur && !(c->cur = msg_new(c, cfg->recv_buf))) {
            kv_io_log(c->thr->io, 0, "out of memory for a ring request; closing connection");
            conn_close(c);
            return;
        }
        g->assembling = 1;
        g->asm_need = need;
        if (conn_make_room(c, need ? need : KV_FRAME_HDR) != 0) {
            kv_io_log(c->thr->io, 0, "out of memory for a ring request; closing connection");
            conn_close(c);
            return;
        }
    }
    kv_io_ring_kick(c); /* more may be there: poll again from the loop */
}

void kv_io_conn_close(struct kv_io_conn *c)
{
    conn_close(c);
}

void kv_io_conn_mark_flush(struct kv_io_conn *c)
{
    conn_mark_flush(c);
}

int kv_io_conn_answer_error(struct kv_io_conn *c, const struct kv_frame *f, uint16_t status,
                            const char *msg)
{
    return conn_answer_error(c, f, status, msg);
}

void kv_io_thread_pump(struct kv_io_thread *thr)
{
    if (__atomic_load_n(&thr->done_head, __ATOMIC_RELAXED))
        on_wake(thr->loop, &thr->wake, 0);
    do {
        struct kv_call *batch = thr->batch_head;

        if (batch) {
            thr->batch_head = thr->batch_tail = NULL;
            thr->io->dispatch(thr->io->dispatch_ctx, batch);
        }
        flush_all(thr);
    } while (thr->batch_head);
}
