/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/ring_conn.c -- the server side of shared-memory rings (docs/PROTOCOL.md 5).
 *
 * A client connected on the unix socket sends ATTACH (opcode 13). The IO thread creates a
 * memfd for it alone (sized, then sealed against shrinking, growing and further seals),
 * lays out the header and two rings (ring.h), makes two eventfds and answers with the
 * three descriptors in SCM_RIGHTS. From then on the connection's frames flow through the
 * rings; the socket is only read for its end, which closes the connection and frees the
 * rings at once (the mapping itself as soon as no request still points into it).
 *
 * Everything here runs on the IO thread that owns the connection. Polling fits its libev
 * loop: the client's eventfd is an ev_io; while some attached client was active within
 * its spin window, an ev_idle keeps the loop from blocking and polls every such ring,
 * running the batch machinery itself (no system call while both sides are busy). A ring
 * quiet for longer than its window is parked (flag, fence, re-check) and costs nothing
 * until the client writes the eventfd. The window adapts: it doubles (up to 8x
 * --ring-spin-us) when a wake-up follows soon after a park, halves (down to 1/8) after a
 * wake-up that brought nothing. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "io_internal.h"
#include "kv_err.h"
#include "kv_mem.h"

#define KV_RING_SPIN_SLICE_NS 200000ull /* one ev_idle call polls at most this long */

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void wake_fd(int fd)
{
    uint64_t one = 1;
    ssize_t n;

    do
        n = write(fd, &one, sizeof(one));
    while (n < 0 && errno == EINTR);
    /* EAGAIN: the counter is at its maximum, the reader is awake anyway */
}

static void spin_start(struct kv_io_ring *g)
{
    struct kv_io_thread *thr = g->conn->thr;

    if (g->spinning || g->closed)
        return;
    g->spinning = 1;
    g->last_ns = now_ns();
    if (thr->rings_spinning++ == 0)
        ev_idle_start(thr->loop, &thr->ring_spin);
}

static void spin_stop(struct kv_io_ring *g)
{
    struct kv_io_thread *thr = g->conn->thr;

    if (!g->spinning)
        return;
    g->spinning = 0;
    if (--thr->rings_spinning == 0)
        ev_idle_stop(thr->loop, &thr->ring_spin);
}

/* Runs what the request ring has. The parser leaves in g->stuck the bytes it saw and could
 * not use (part of a frame): only more than these is news for try_park. They are the bytes
 * the parser saw, not those there now: bytes published after its last look, with the
 * parked flag down (so without a wake-up), taken for stuck ones, would have let the ring
 * park on a request it never read (a hang found under callgrind: head 736 bytes ahead,
 * both sides parked, nothing in flight). */
static void ring_poll(struct kv_io_ring *g, uint64_t now)
{
    uint64_t before = g->req.rd;

    kv_io_conn_parse_ring(g->conn);
    if (g->closed)
        return;
    if (g->req.rd != before) {
        g->last_ns = now;
        g->conn->thr->rings_found_ns = now;
        g->found = 1;
    }
}

/* The window has passed without a frame: sleep on the eventfd, unless the re-check after
 * the flag finds one. */
static void try_park(struct kv_io_ring *g, uint64_t now)
{
    const struct kv_config *cfg = g->conn->thr->io->cfg;
    uint64_t full = (uint64_t)cfg->ring_spin_us * 1000;
    int64_t a;

    if (!g->can_read) { /* backpressure or the AUTH gate: kicked when it lifts */
        spin_stop(g);
        return;
    }
    /* output waiting for response-ring space has its want flag up: the client's release
     * writes our eventfd. Bytes of a frame not yet whole are no reason to stay awake:
     * the client's publish of the rest wakes us. */
    a = kv_ring_park(&g->req);
    if (a < 0 || (uint64_t)a > g->stuck) {
        kv_ring_unpark(&g->req);
        if (a < 0)
            ring_poll(g, now); /* reports the bad index and closes */
        g->last_ns = now;
        return;
    }
    if (!g->found && g->window_ns > full / 8)
        g->window_ns /= 2; /* woken for nothing: spin less */
    g->parked_ns = now;
    g->found = 0;
    spin_stop(g);
}

/* The thread's rings park together: once no ring of the thread has had a frame for the
 * longest window among them. While the thread polls anyway (some client is busy), looking
 * at a quiet ring costs a load, and parking it alone would make its client's next request
 * a system call on both sides (an eventfd write there, a read here) and wait for this loop
 * to let libev look at the eventfd. */
void kv_io_ring_spin_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
    struct kv_io_thread *thr = w->data;
    uint64_t start = now_ns(), now = start;
    uint64_t yield_ns = (uint64_t)thr->io->cfg->ring_spin_yield_us * 1000;

    for (;;) {
        uint64_t wmax = 0;

        for (struct kv_io_ring *g = thr->rings, *next; g; g = next) {
            next = g->next;
            if (!g->spinning) {
                /* parked (or held back): a load tells whether its client published since;
                 * then serve it now rather than after this slice, when libev reads the
                 * eventfd the client wrote (on_efd then finds it served) */
                if (g->closed || !g->can_read || kv_ring_avail(&g->req) <= (int64_t)g->stuck)
                    continue;
                kv_ring_unpark(&g->req);
                spin_start(g);
            }
            ring_poll(g, now);
            if (g->window_ns > wmax)
                wmax = g->window_ns;
        }
        if (now > thr->rings_found_ns && now - thr->rings_found_ns > wmax)
            for (struct kv_io_ring *g = thr->rings, *next; g; g = next) {
                next = g->next;
                if (!g->closed && g->spinning && now > g->last_ns &&
                    now - g->last_ns > g->window_ns)
                    try_park(g, now);
            }
        kv_io_thread_pump(thr); /* dispatch, completions, publish answers */
        if (!thr->rings_spinning)
            return;
        now = now_ns();
        if (now - start > KV_RING_SPIN_SLICE_NS)
            return; /* let the loop look at its other watchers */
        /* every ring empty for a while: the peer may be waiting for this very core */
        if (yield_ns && now > thr->rings_found_ns && now - thr->rings_found_ns > yield_ns)
            sched_yield();
        else
            __builtin_ia32_pause();
    }
}

static void on_efd(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kv_io_ring *g = w->data;
    const struct kv_config *cfg = g->conn->thr->io->cfg;
    uint64_t v, now = now_ns(), full = (uint64_t)cfg->ring_spin_us * 1000;

    if (read(g->req_efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        return;
    kv_ring_unpark(&g->req);
    if (!g->spinning && g->parked_ns && now - g->parked_ns < 2 * g->window_ns &&
        g->window_ns < 8 * full)
        g->window_ns = g->window_ns ? g->window_ns * 2 : 1000; /* parked too early */
    if (g->conn->ob_head)
        kv_io_conn_mark_flush(g->conn); /* the client made room in the response ring */
    spin_start(g);
    ring_poll(g, now);
    /* the thread was asleep: when one client is back, the others usually are too (one
     * process serving many rings, or a peer that lost its core for a while). Polling
     * them all again now spares each of them the eventfd write of its next request
     * (and this thread the read); those that stay quiet park again after their window. */
    for (struct kv_io_ring *h = g->conn->thr->rings; h; h = h->next)
        if (h != g && !h->spinning && h->can_read && h->parked_ns) {
            kv_ring_unpark(&h->req);
            spin_start(h);
        }
}

void kv_io_ring_kick(struct kv_io_conn *c)
{
    if (c->ring && !c->closed) {
        kv_ring_unpark(&c->ring->req);
        spin_start(c->ring);
    }
}

/* The socket of an attached client carries nothing more: its end is the death notice. */
static void on_sock(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kv_io_conn *c = w->data;
    uint8_t b[64];
    ssize_t n = read(c->fd, b, sizeof(b));

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0)
        kv_io_log(c->thr->io, 1, "fd %d: attached client (pid %d) wrote on its socket, "
                  "which carries nothing after ATTACH; closing it", c->fd, c->peer.id.pid);
    else if (c->thr->io->cfg->log_level >= 3)
        kv_io_log(c->thr->io, 3, "fd %d: attached client (pid %d) gone; rings freed", c->fd,
                  c->peer.id.pid);
    kv_io_conn_close(c);
}

/* ---- attach ---------------------------------------------------------------------- */
static uint32_t ring_cap(uint32_t asked, const struct kv_config *cfg)
{
    uint64_t n = asked ? asked : cfg->ring_size;

    if (n > cfg->ring_max)
        n = cfg->ring_max;
    return kv_ring_cap_round(n);
}

/* Sends the OK answer of f with the three descriptors. */
static int send_attach_answer(struct kv_io_conn *c, const struct kv_frame *f, int fds[3],
                              uint64_t size)
{
    uint8_t frame[KV_FRAME_OVERHEAD + 8];
    struct kv_frame a = {.version = KV_FRAME_VERSION,
                         .flags = KV_FRAME_F_RESPONSE,
                         .opcode = f->opcode,
                         .request_id = f->request_id,
                         .body_len = 8};
    uint8_t body[8];
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(3 * sizeof(int))];
    } u;
    struct iovec iov = {.iov_base = frame, .iov_len = sizeof(frame)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                        .msg_controllen = sizeof(u.buf)};
    struct cmsghdr *cm;
    ssize_t n;

    for (int i = 0; i < 8; i++)
        body[i] = (uint8_t)(size >> (8 * i));
    if (kv_frame_encode(&a, body, frame, sizeof(frame)) != (ssize_t)sizeof(frame))
        return KV_EINVAL;
    memset(&u, 0, sizeof(u));
    cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(3 * sizeof(int));
    memcpy(CMSG_DATA(cm), fds, 3 * sizeof(int));
    do
        n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof(frame))
        return KV_EIO; /* nothing else is queued: a short or refused send means the peer
                        * is gone or does not read */
    kv_mem_stat_add(KV_STAT_BYTES_OUT, (uint64_t)n);
    kv_mem_stat_add(KV_STAT_RESPONSES, 1);
    return 0;
}

void kv_io_ring_attach(struct kv_io_conn *c, const struct kv_frame *f, size_t len)
{
    struct kv_io_thread *thr = c->thr;
    const struct kv_config *cfg = thr->io->cfg;
    const char *why = NULL;
    uint16_t status = KV_ST_BAD_REQUEST;
    int close_after = 0, mfd = -1, fds[3];
    uint32_t rq = 0, rs = 0;
    struct kv_io_ring *g = NULL;
    size_t size;
    uint8_t *map = MAP_FAILED;
    char msg[160];

    if (c->ring)
        why = "ATTACH inside the rings: this client is attached already";
    else if (c->peer.id.transport != KV_IO_UNIX)
        why = "ATTACH needs a connection on the unix socket (--unix)";
    else if (cfg->requirepass[0] &&
             !(__atomic_load_n(&c->session.flags, __ATOMIC_ACQUIRE) & KV_SESSION_AUTHED)) {
        status = KV_ST_NOAUTH;
        why = "AUTH first";
    } else if (f->body_len != 0 && f->body_len != 8)
        why = "ATTACH body: empty, or u32 request-ring and u32 response-ring bytes";
    else if (c->inflight || c->out_head || c->ob_head)
        why = "ATTACH with requests outstanding: wait for their answers first";
    else if (c->cur && c->cur->parsed != c->cur->len) {
        why = "bytes after ATTACH on the socket: it must be the last request sent there";
        close_after = 1;
    }
    if (why) {
        kv_mem_stat_add(KV_STAT_PROTO_ERRORS, 1);
        if (close_after) {
            c->closing = 1;
            c->linger = 1;
            kv_io_conn_mark_flush(c);
        }
        if (kv_io_conn_answer_error(c, f, status, why) != 0)
            kv_io_conn_close(c);
        return;
    }
    if (f->body_len == 8) {
        rq = kv_get_le32(f->body);
        rs = kv_get_le32(f->body + 4);
    }
    rq = ring_cap(rq, cfg);
    rs = ring_cap(rs, cfg);
    size = kv_ring_map_size(rq, rs);
    fds[1] = fds[2] = -1;
    g = kv_mem_calloc(KV_MOD_RING, sizeof(*g));
    mfd = memfd_create("libevkv-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (!g || mfd < 0 || ftruncate(mfd, (off_t)size) != 0 ||
        fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
        goto err;
    map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    fds[1] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    fds[2] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (map == MAP_FAILED || fds[1] < 0 || fds[2] < 0)
        goto err;
    kv_ring_layout_init(map, size, rq, rs);
    fds[0] = mfd;
    if (send_attach_answer(c, f, fds, size) != 0) {
        kv_io_log(thr->io, 1, "fd %d: cannot send the ATTACH answer: %s; closing", c->fd,
                  strerror(errno));
        munmap(map, size);
        close(mfd);
        close(fds[1]);
        close(fds[2]);
        kv_mem_free(KV_MOD_RING, g);
        kv_io_conn_close(c);
        return;
    }
    close(mfd); /* the mapping keeps the memory; the client has its own descriptor */
    kv_mem_account(KV_MOD_RING, (int64_t)size);
    g->map = map;
    g->map_size = size;
    g->req_efd = fds[1];
    g->resp_efd = fds[2];
    g->conn = c;
    g->can_read = 1;
    g->window_ns = (uint64_t)cfg->ring_spin_us * 1000;
    kv_ring_views(map, &g->req, &g->resp);
    ev_io_init(&g->efd_w, on_efd, g->req_efd, EV_READ);
    g->efd_w.data = g;
    ev_io_start(thr->loop, &g->efd_w);
    g->next = thr->rings;
    if (thr->rings)
        thr->rings->prev = g;
    thr->rings = g;
    c->ring = g;
    __atomic_store_n(&c->peer.ring_req, rq, __ATOMIC_RELAXED);
    __atomic_store_n(&c->peer.ring_resp, rs, __ATOMIC_RELAXED);
    /* the socket now only tells the client's end */
    ev_io_stop(thr->loop, &c->rw);
    ev_set_cb(&c->rw, on_sock);
    ev_io_start(thr->loop, &c->rw);
    c->reading = 1;
    c->partial_since = 0;
    if (cfg->log_level >= 3)
        kv_io_log(thr->io, 3, "fd %d: attached (pid %d uid %u), rings %u + %u bytes", c->fd,
                  c->peer.id.pid, c->peer.id.uid, rq, rs);
    spin_start(g);
    return;

err:
    snprintf(msg, sizeof(msg), "cannot create the rings: %s", strerror(errno));
    kv_io_log(thr->io, 1, "fd %d: ATTACH: %s", c->fd, msg);
    if (map != MAP_FAILED)
        munmap(map, size);
    if (mfd >= 0)
        close(mfd);
    if (fds[1] >= 0)
        close(fds[1]);
    if (fds[2] >= 0)
        close(fds[2]);
    kv_mem_free(KV_MOD_RING, g);
    if (kv_io_conn_answer_error(c, f, KV_ST_OUT_OF_MEMORY, msg) != 0)
        kv_io_conn_close(c);
}

/* ---- output ----------------------------------------------------------------------- */
int kv_io_ring_room(struct kv_io_conn *c, struct kv_io_req *r)
{
    struct kv_io_ring *g = c->ring;
    struct kv_ring *q;
    int64_t space;
    size_t at, contig;

    /* the room is the next frame's place: only when nothing is to be written before it
     * (no output waiting for ring space, no other room lent, in order: the first answer) */
    if (!g || g->closed || g->bad || c->closed || c->ob_head || g->room_owner ||
        (r->queued && c->out_head != r))
        return 0;
    q = &g->resp;
    space = kv_ring_space(q);
    if (space <= 0)
        return 0; /* an impossible tail is told by the next put */
    at = (size_t)(q->pos & q->mask);
    contig = (size_t)(q->cap - at);
    if ((uint64_t)space < contig)
        contig = (size_t)space;
    if (contig <= KV_FRAME_OVERHEAD + r->call.scratch_cap)
        return 0; /* no more room than the request's own scratch */
    g->room_owner = r;
    g->room = q->data + at + KV_FRAME_HDR;
    g->room_cap = contig - KV_FRAME_OVERHEAD;
    r->ring_room = 1;
    r->call.scratch = g->room;
    r->call.scratch_cap = (uint32_t)(g->room_cap < UINT32_MAX ? g->room_cap : UINT32_MAX);
    return 1;
}

void kv_io_ring_room_drop(struct kv_io_req *r)
{
    struct kv_io_ring *g = r->conn->ring;

    r->ring_room = 0;
    if (g && g->room_owner == r)
        g->room_owner = NULL;
}

/* Another answer is to be written where the room lent to owner lies (it never should: a
 * call with a room is handed back alone, at once): the owner's answer moves to a packet
 * of its own first. */
static void room_evict(struct kv_io_ring *g)
{
    struct kv_io_req *o = g->room_owner;
    uint8_t *p;

    g->room_owner = NULL;
    o->ring_room = 0;
    o->call.scratch = o->scratch;
    o->call.scratch_cap = sizeof(o->scratch);
    if (o->call.resp != g->room || o->call.resp_owned)
        return;
    p = o->call.resp_len ? kv_mem_alloc(KV_MOD_PACKET, o->call.resp_len) : NULL;
    if (p)
        memcpy(p, g->room, o->call.resp_len);
    else /* nothing to copy, or no memory: the status alone answers */
        o->call.resp_len = 0;
    o->call.resp = p;
    o->call.resp_owned = p != NULL;
}

/* The answer of r was built in its room: header before it and crc after it, in place. */
static void room_commit(struct kv_io_conn *c, const struct kv_io_req *r, uint8_t *frame)
{
    struct kv_ring *q = &c->ring->resp;
    struct kv_frame f = {
        .version = KV_FRAME_VERSION,
        .flags = KV_FRAME_F_RESPONSE,
        .opcode = r->call.opcode,
        .request_id = r->request_id,
        .body_len = r->call.resp_len,
        .status = r->call.status,
    };

    kv_frame_encode_header(&f, frame);
    kv_put_le32(frame + KV_FRAME_HDR + r->call.resp_len,
                kv_crc32(0, frame, KV_FRAME_HDR + r->call.resp_len));
    q->pos += r->out_len;
    __atomic_store_n(&c->peer.ring_in_place, c->peer.ring_in_place + 1, __ATOMIC_RELAXED);
}

int kv_io_ring_put(struct kv_io_conn *c, const struct kv_io_req *r)
{
    struct kv_io_ring *g = c->ring;
    struct kv_ring *q = &g->resp;
    int64_t space = kv_ring_space(q);
    uint8_t hdr[KV_FRAME_HDR], crc[4];
    struct kv_frame f = {
        .version = KV_FRAME_VERSION,
        .flags = KV_FRAME_F_RESPONSE,
        .opcode = r->call.opcode,
        .request_id = r->request_id,
        .body_len = r->call.resp_len,
        .status = r->call.status,
    };

    if (space < 0) {
        g->bad = 1; /* conn_flush closes it */
        return KV_EAGAIN;
    }
    if (g->room_owner) {
        if (g->room_owner == r) {
            /* the space seen when the room was lent can only have grown */
            g->room_owner = NULL;
            if (r->call.resp == g->room && r->call.resp_len <= g->room_cap &&
                (uint64_t)space >= r->out_len) {
                room_commit(c, r, g->room - KV_FRAME_HDR); /* the value's one copy: done */
                goto laid;
            }
        } else {
            room_evict(g);
        }
    }
    if ((uint64_t)space < r->out_len)
        return KV_EAGAIN;
    kv_frame_encode_header(&f, hdr);
    kv_put_le32(crc, kv_frame_crc(hdr, r->call.resp, r->call.resp_len));
    kv_ring_write(q, hdr, sizeof(hdr));
    if (r->call.resp_len)
        kv_ring_write(q, r->call.resp, r->call.resp_len); /* the value's one copy here */
    kv_ring_write(q, crc, sizeof(crc));
laid:
    c->out_bytes -= r->out_len;
    __atomic_store_n(&c->peer.ring_out, c->peer.ring_out + r->out_len, __ATOMIC_RELAXED);
    kv_mem_stat_add(KV_STAT_BYTES_OUT, r->out_len);
    return 0;
}

void kv_io_ring_flush(struct kv_io_conn *c)
{
    struct kv_io_ring *g = c->ring;

    if (g->bad) {
        kv_io_log(c->thr->io, 1, "fd %d: attached client (pid %d) wrote an impossible "
                  "response-ring tail; closing it", c->fd, c->peer.id.pid);
        kv_mem_stat_add(KV_STAT_PROTO_ERRORS, 1);
        kv_io_conn_close(c);
        return;
    }
    if (g->resp.pos != g->published) {
        g->published = g->resp.pos;
        if (kv_ring_publish(&g->resp))
            wake_fd(g->resp_efd);
    }
    c->last_active = ev_now(c->thr->loop);
}

/* ---- release and teardown -------------------------------------------------------- */
void kv_io_ring_span_done(struct kv_io_msg *m)
{
    struct kv_io_ring *g = m->ring;
    uint64_t upto = 0;
    int any = 0;

    m->released = 1;
    while (g->spans && g->spans->released) {
        struct kv_io_msg *s = g->spans;

        upto = s->ring_end;
        any = 1;
        g->spans = s->ring_next;
        if (!g->spans)
            g->spans_tail = NULL;
        kv_mem_obj_put(KV_MOD_MESSAGE, s, sizeof(*s));
    }
    /* a span not yet committed (being parsed) is not on the list: it is released when
     * committed, behind every older one */
    if (any && kv_ring_release(&g->req, upto) && !g->closed)
        wake_fd(g->resp_efd); /* the client waits for request-ring space */
}

void kv_io_ring_close(struct kv_io_conn *c)
{
    struct kv_io_ring *g = c->ring;
    struct kv_io_thread *thr = c->thr;

    if (g->closed)
        return;
    spin_stop(g);
    ev_io_stop(thr->loop, &g->efd_w);
    close(g->req_efd);
    close(g->resp_efd);
    g->req_efd = g->resp_efd = -1;
    /* unlinked, but g->next kept: a poll loop standing on g goes on from there */
    if (g->prev)
        g->prev->next = g->next;
    else
        thr->rings = g->next;
    if (g->next)
        g->next->prev = g->prev;
    g->closed = 1;
}

void kv_io_ring_free(struct kv_io_conn *c)
{
    struct kv_io_ring *g = c->ring;

    kv_io_ring_close(c);
    /* every request is back (the conn is freed only then), so every span is released */
    while (g->spans) {
        struct kv_io_msg *s = g->spans;

        g->spans = s->ring_next;
        kv_mem_obj_put(KV_MOD_MESSAGE, s, sizeof(*s));
    }
    munmap(g->map, g->map_size);
    kv_mem_account(KV_MOD_RING, -(int64_t)g->map_size);
    kv_mem_free(KV_MOD_RING, g);
    c->ring = NULL;
}
