/* src/client/bench.c -- the load generator (see kv_bench.h). */
#include "kv_bench.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "kv_err.h"
#include "kv_mem.h"

/* Log-linear histogram of nanoseconds: 32 sub-buckets per power of two. */
#define HIST_SUB     32
#define HIST_BUCKETS (64 * HIST_SUB)

struct hist {
    uint64_t n[HIST_BUCKETS];
    uint64_t max;
};

static unsigned hist_index(uint64_t v)
{
    unsigned msb, sub;

    if (v < HIST_SUB)
        return (unsigned)v;
    msb = 63u - (unsigned)__builtin_clzll(v);
    sub = (unsigned)(v >> (msb - 5)) & (HIST_SUB - 1);
    return (msb - 4) * HIST_SUB + sub;
}

static uint64_t hist_value(unsigned idx)
{
    unsigned msb, sub;

    if (idx < HIST_SUB)
        return idx;
    msb = idx / HIST_SUB + 4;
    sub = idx % HIST_SUB;
    /* middle of the bucket */
    return ((uint64_t)(HIST_SUB + sub) << (msb - 5)) + ((uint64_t)1 << (msb - 5)) / 2;
}

static double hist_pct(const struct hist *h, uint64_t total, double pct)
{
    uint64_t want = (uint64_t)ceil(total * pct / 100.0), seen = 0;

    if (total == 0)
        return 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->n[i];
        if (seen >= want)
            return (double)hist_value(i);
    }
    return (double)h->max;
}

struct bconn {
    int fd;
    uint8_t *out; /* owned: one pipeline of request frames */
    size_t out_len, out_off;
    uint8_t *in; /* owned */
    size_t in_len, in_cap;
    unsigned waiting; /* answers outstanding in this pipeline */
    uint64_t sent_at; /* ns, send time of the pipeline */
    int dead;
};

struct bthread {
    const struct kv_bench_opts *o;
    pthread_t tid;
    unsigned nconns;
    uint64_t quota; /* requests this thread sends */
    uint64_t sent, done, errors, not_found, seq;
    struct hist h;
    int failed;
    unsigned index;
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* AUTH on the still-blocking socket, before the run starts. */
static int bconn_auth(int fd, const char *password)
{
    size_t plen = strlen(password);
    uint8_t frame[KV_FRAME_OVERHEAD + 16 + 1024], *body = frame + KV_FRAME_HDR;
    struct kv_frame f = {.version = KV_FRAME_VERSION, .opcode = 12, .request_id = 1};
    uint8_t in[4096];
    size_t n = 0, got = 0;
    ssize_t r;

    if (plen > 1024)
        return KV_EINVAL;
    /* AuthRequest{password}: tag 0x0A, varint length, bytes */
    body[n++] = 0x0A;
    if (plen >= 128) {
        body[n++] = (uint8_t)(plen | 0x80);
        body[n++] = (uint8_t)(plen >> 7);
    } else {
        body[n++] = (uint8_t)plen;
    }
    memcpy(body + n, password, plen);
    n += plen;
    f.body_len = (uint32_t)n;
    kv_frame_encode_header(&f, frame);
    kv_put_le32(body + n, kv_frame_crc(frame, body, n));
    if (send(fd, frame, KV_FRAME_OVERHEAD + n, MSG_NOSIGNAL) != (ssize_t)(KV_FRAME_OVERHEAD + n))
        return KV_EIO;
    for (;;) {
        struct kv_frame rf;
        ssize_t d = kv_frame_decode(in, got, sizeof(in), 1, &rf);

        if (d > 0)
            return rf.status == KV_ST_OK ? 0 : KV_ESTATUS;
        if (d != KV_EAGAIN || got == sizeof(in))
            return KV_EPROTO;
        r = recv(fd, in + got, sizeof(in) - got, 0);
        if (r <= 0)
            return KV_EIO;
        got += (size_t)r;
    }
}

static int bconn_open(const struct kv_bench_opts *o, struct bconn *c)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char port[8];
    int one = 1;

    snprintf(port, sizeof(port), "%u", o->port);
    if (getaddrinfo(o->host, port, &hints, &ai) != 0 || !ai)
        return KV_EINVAL;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        freeaddrinfo(ai);
        return KV_EIO;
    }
    freeaddrinfo(ai);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (o->password && bconn_auth(c->fd, o->password) != 0)
        return KV_EIO;
    c->in_cap = o->pipeline * (o->max_body + KV_FRAME_OVERHEAD) + 65536;
    c->out = kv_mem_alloc(KV_MOD_CLIENT, o->pipeline * (o->max_body + KV_FRAME_OVERHEAD));
    c->in = kv_mem_alloc(KV_MOD_CLIENT, c->in_cap);
    return c->out && c->in ? 0 : KV_ENOMEM;
}

/* Encodes the next pipeline of this connection; returns how many. */
static unsigned fill(struct bthread *t, struct bconn *c)
{
    const struct kv_bench_opts *o = t->o;
    unsigned k = 0;

    c->out_len = c->out_off = 0;
    while (k < o->pipeline && t->sent < t->quota) {
        uint8_t *p = c->out + c->out_len;
        uint16_t opcode = 0;
        int len =
            o->encode(o->ctx, t->seq++ * 1000 + t->index, &opcode, p + KV_FRAME_HDR, o->max_body);
        struct kv_frame f = {.version = KV_FRAME_VERSION,
                             .opcode = opcode,
                             .request_id = t->sent,
                             .body_len = (uint32_t)(len < 0 ? 0 : len)};

        if (len < 0)
            len = 0;
        kv_frame_encode_header(&f, p);
        kv_put_le32(p + KV_FRAME_HDR + len, kv_frame_crc(p, p + KV_FRAME_HDR, (size_t)len));
        c->out_len += KV_FRAME_OVERHEAD + (size_t)len;
        t->sent++;
        k++;
    }
    c->waiting = k;
    c->sent_at = now_ns();
    return k;
}

static int bconn_write(struct bconn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n =
            send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return KV_EIO;
        }
        c->out_off += (size_t)n;
    }
    return 0;
}

/* Reads and accounts answers. Returns 1 when the pipeline is complete. */
static int bconn_read(struct bthread *t, struct bconn *c)
{
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
    size_t off = 0;
    uint64_t now;

    if (n == 0)
        return KV_ECLOSED;
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : KV_EIO;
    c->in_len += (size_t)n;
    now = now_ns();
    for (;;) {
        struct kv_frame f;
        ssize_t r =
            kv_frame_decode(c->in + off, c->in_len - off, t->o->max_body * 2 + 65536, 1, &f);

        if (r == KV_EAGAIN)
            break;
        if (r < 0)
            return (int)r;
        off += (size_t)r;
        if (f.status == KV_ST_NOT_FOUND)
            t->not_found++;
        else if (f.status != KV_ST_OK)
            t->errors++;
        t->done++;
        t->h.n[hist_index(now - c->sent_at)]++;
        if (now - c->sent_at > t->h.max)
            t->h.max = now - c->sent_at;
        c->waiting--;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    return c->waiting == 0;
}

static void *bthread_main(void *arg)
{
    struct bthread *t = arg;
    const struct kv_bench_opts *o = t->o;
    struct bconn *conns = kv_mem_calloc(KV_MOD_CLIENT, t->nconns * sizeof(*conns));
    struct epoll_event evs[256];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    unsigned live = 0;

    if (!conns || ep < 0) {
        t->failed = 1;
        goto out;
    }
    for (unsigned i = 0; i < t->nconns; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};

        conns[i].fd = -1;
        if (bconn_open(o, &conns[i]) != 0) {
            t->failed = 1;
            goto out;
        }
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }
    for (unsigned i = 0; i < t->nconns; i++) {
        if (fill(t, &conns[i]) == 0)
            continue;
        live++;
        if (bconn_write(&conns[i]) != 0) {
            t->failed = 1;
            goto out;
        }
    }
    while (live > 0) {
        int n = epoll_wait(ep, evs, 256, 10000);

        if (n == 0) {
            t->failed = 1; /* 10 s without an answer */
            break;
        }
        for (int i = 0; i < n; i++) {
            struct bconn *c = evs[i].data.ptr;
            int rc;

            if (c->out_off < c->out_len && bconn_write(c) != 0) {
                t->failed = 1;
                goto out;
            }
            rc = bconn_read(t, c);
            if (rc < 0) {
                t->failed = 1;
                goto out;
            }
            if (rc == 1) {
                if (fill(t, c) == 0)
                    live--;
                else if (bconn_write(c) != 0) {
                    t->failed = 1;
                    goto out;
                }
            }
            if (c->out_off < c->out_len) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};

                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
        }
    }
out:
    for (unsigned i = 0; conns && i < t->nconns; i++) {
        if (conns[i].fd >= 0)
            close(conns[i].fd);
        kv_mem_free(KV_MOD_CLIENT, conns[i].out);
        kv_mem_free(KV_MOD_CLIENT, conns[i].in);
    }
    kv_mem_free(KV_MOD_CLIENT, conns);
    if (ep >= 0)
        close(ep);
    return NULL;
}

int kv_bench_run(const struct kv_bench_opts *o, struct kv_bench_result *r)
{
    unsigned nt = o->threads ? o->threads : 1;
    struct bthread *ts;
    struct hist *h;
    uint64_t t0, t1, total = 0;

    if (o->conns == 0 || o->pipeline == 0 || nt > o->conns)
        return KV_EINVAL;
    ts = kv_mem_calloc(KV_MOD_CLIENT, nt * sizeof(*ts));
    h = kv_mem_calloc(KV_MOD_CLIENT, sizeof(*h));
    if (!ts || !h) {
        kv_mem_free(KV_MOD_CLIENT, ts);
        kv_mem_free(KV_MOD_CLIENT, h);
        return KV_ENOMEM;
    }
    memset(r, 0, sizeof(*r));
    t0 = now_ns();
    for (unsigned i = 0; i < nt; i++) {
        ts[i].o = o;
        ts[i].index = i;
        ts[i].nconns = o->conns / nt + (i < o->conns % nt);
        ts[i].quota = o->requests / nt + (i < o->requests % nt);
        pthread_create(&ts[i].tid, NULL, bthread_main, &ts[i]);
    }
    for (unsigned i = 0; i < nt; i++) {
        pthread_join(ts[i].tid, NULL);
        r->requests += ts[i].done;
        r->errors += ts[i].errors;
        r->not_found += ts[i].not_found;
        r->failed |= ts[i].failed;
        for (unsigned b = 0; b < HIST_BUCKETS; b++)
            h->n[b] += ts[i].h.n[b];
        if (ts[i].h.max > h->max)
            h->max = ts[i].h.max;
    }
    t1 = now_ns();
    total = r->requests;
    r->seconds = (double)(t1 - t0) / 1e9;
    r->rps = r->seconds > 0 ? (double)total / r->seconds : 0;
    r->p50_us = hist_pct(h, total, 50) / 1000.0;
    r->p99_us = hist_pct(h, total, 99) / 1000.0;
    r->p999_us = hist_pct(h, total, 99.9) / 1000.0;
    r->max_us = (double)h->max / 1000.0;
    kv_mem_free(KV_MOD_CLIENT, ts);
    kv_mem_free(KV_MOD_CLIENT, h);
    return 0;
}
