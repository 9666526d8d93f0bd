/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/peers.c -- the registry of open connections.
 *
 * Every connection is listed from the moment its IO thread adopts it until
 * it is closed, with what the listener learnt at accept (peer address, or
 * for a unix-domain peer its pid and uid from SO_PEERCRED). CLIENT LIST and
 * STATS read it from any thread. Lock rule: io->peers_lock guards the list
 * links and next_serial only; a listed peer's other fields are written
 * before it is added and stay unchanged until it is removed. Adding and
 * removing take the lock once per connection, never per request.
 *
 * CLIENT LIST, CLIENT KILL and CLIENT SETNAME (issue 16) use it too: a
 * peer's name is written by its own thread under the lock; what changes per
 * read (receive buffer, last activity) is kept in relaxed atomics its own
 * thread stores, so a list from another thread reads a recent, whole value
 * and never the owning thread's private state. A kill only sets the peer's
 * flag under the lock and wakes the owning thread, which closes it: no
 * thread closes another's connection. */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "io_internal.h"
#include "kv_err.h"
#include "kv_mem.h"

static int64_t mono_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec;
}

void kv_io_peer_add(struct kv_io *io, struct kv_io_peer *p)
{
    p->since = mono_seconds();
    pthread_mutex_lock(&io->peers_lock);
    p->serial = ++io->next_serial;
    p->prev = NULL;
    p->next = io->peers;
    if (io->peers)
        io->peers->prev = p;
    io->peers = p;
    pthread_mutex_unlock(&io->peers_lock);
    p->listed = 1;
}

void kv_io_peer_remove(struct kv_io *io, struct kv_io_peer *p)
{
    if (!p->listed)
        return;
    pthread_mutex_lock(&io->peers_lock);
    if (p->prev)
        p->prev->next = p->next;
    else
        io->peers = p->next;
    if (p->next)
        p->next->prev = p->prev;
    for (int i = 0; i < KV_IO_TEXT__COUNT; i++) {
        kv_mem_free(KV_MOD_CONNECTION, p->text[i]);
        p->text[i] = NULL;
        p->text_len[i] = 0;
    }
    pthread_mutex_unlock(&io->peers_lock);
    p->prev = p->next = NULL;
    p->listed = 0;
}

void kv_io_peer_counts(struct kv_io *io, unsigned *tcp, unsigned *unx)
{
    unsigned n[2] = {0, 0};

    pthread_mutex_lock(&io->peers_lock);
    for (const struct kv_io_peer *p = io->peers; p; p = p->next)
        n[p->id.transport == KV_IO_UNIX]++;
    pthread_mutex_unlock(&io->peers_lock);
    *tcp = n[0];
    *unx = n[1];
}

void kv_io_ring_counts(struct kv_io *io, unsigned *attached, uint64_t *in, uint64_t *out)
{
    unsigned n = 0;
    uint64_t bi = 0, bo = 0;

    pthread_mutex_lock(&io->peers_lock);
    for (const struct kv_io_peer *p = io->peers; p; p = p->next) {
        if (!__atomic_load_n(&p->ring_req, __ATOMIC_RELAXED))
            continue;
        n++;
        bi += __atomic_load_n(&p->ring_in, __ATOMIC_RELAXED);
        bo += __atomic_load_n(&p->ring_out, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&io->peers_lock);
    *attached = n;
    *in = bi;
    *out = bo;
}

size_t kv_io_peers_format(struct kv_io *io, int unix_only, unsigned max, char *buf, size_t cap,
                          unsigned *listed)
{
    int64_t now = mono_seconds();
    size_t len = 0;
    unsigned lines = 0;

    if (cap)
        buf[0] = '\0';
    pthread_mutex_lock(&io->peers_lock);
    for (const struct kv_io_peer *p = io->peers; p && lines < max; p = p->next) {
        char line[512], addr[INET_ADDRSTRLEN] = "?";
        struct in_addr ia = {.s_addr = p->id.addr};
        int n;

        if (unix_only && p->id.transport != KV_IO_UNIX)
            continue;
        uint32_t rq = __atomic_load_n(&p->ring_req, __ATOMIC_RELAXED);

        if (p->id.transport == KV_IO_UNIX && rq) {
            n = snprintf(line, sizeof(line),
                         "id=%llu addr=%s:0 laddr=%s:0 fd=%d name= age=%lld db=0 "
                         "transport=shm pid=%d uid=%u ring_req=%u ring_resp=%u "
                         "shm_in=%llu shm_out=%llu shm_in_place=%llu\n",
                         (unsigned long long)p->serial, io->cfg->unix_path, io->cfg->unix_path,
                         p->id.fd, (long long)(now - p->since), p->id.pid, p->id.uid, rq,
                         __atomic_load_n(&p->ring_resp, __ATOMIC_RELAXED),
                         (unsigned long long)__atomic_load_n(&p->ring_in, __ATOMIC_RELAXED),
                         (unsigned long long)__atomic_load_n(&p->ring_out, __ATOMIC_RELAXED),
                         (unsigned long long)__atomic_load_n(&p->ring_in_place,
                                                             __ATOMIC_RELAXED));
        } else if (p->id.transport == KV_IO_UNIX) {
            n = snprintf(line, sizeof(line),
                         "id=%llu addr=%s:0 laddr=%s:0 fd=%d name= age=%lld db=0 "
                         "transport=unix pid=%d uid=%u\n",
                         (unsigned long long)p->serial, io->cfg->unix_path, io->cfg->unix_path,
                         p->id.fd, (long long)(now - p->since), p->id.pid, p->id.uid);
        } else {
            inet_ntop(AF_INET, &ia, addr, sizeof(addr));
            n = snprintf(line, sizeof(line),
                         "id=%llu addr=%s:%u laddr=%s:%u fd=%d name= age=%lld db=0 "
                         "transport=tcp\n",
                         (unsigned long long)p->serial, addr, p->id.port, io->cfg->bind_addr,
                         io->port, p->id.fd, (long long)(now - p->since));
        }
        if (n <= 0 || (size_t)n >= sizeof(line) || len + (size_t)n >= cap)
            break;
        memcpy(buf + len, line, (size_t)n + 1);
        len += (size_t)n;
        lines++;
    }
    pthread_mutex_unlock(&io->peers_lock);
    if (listed)
        *listed = lines;
    return len;
}

/* ---- CLIENT ------------------------------------------------------------------ */
#define conn_of_session(s) \
    ((struct kv_io_conn *)((char *)(s) - offsetof(struct kv_io_conn, session)))
#define conn_of_peer(p) ((struct kv_io_conn *)((char *)(p) - offsetof(struct kv_io_conn, peer)))

uint64_t kv_io_session_id(const struct kv_session *s)
{
    return conn_of_session(s)->peer.serial;
}

int kv_io_session_set_text(struct kv_session *s, int which, const uint8_t *p, size_t len)
{
    struct kv_io_conn *c = conn_of_session(s);
    char *n = NULL, *old;

    if (which < 0 || which >= KV_IO_TEXT__COUNT)
        return KV_EINVAL;
    if (len) {
        n = kv_mem_alloc(KV_MOD_CONNECTION, len + 1);
        if (!n)
            return KV_ENOMEM;
        memcpy(n, p, len);
        n[len] = '\0';
    }
    pthread_mutex_lock(&c->thr->io->peers_lock);
    old = c->peer.text[which];
    c->peer.text[which] = n;
    c->peer.text_len[which] = len;
    pthread_mutex_unlock(&c->thr->io->peers_lock);
    kv_mem_free(KV_MOD_CONNECTION, old);
    return 0;
}

const char *kv_io_session_text(const struct kv_session *s, int which, size_t *len)
{
    const struct kv_io_conn *c = conn_of_session(s);

    *len = c->peer.text_len[which]; /* written by this thread only */
    return c->peer.text[which];
}

/* "ip:port" of a peer and of its local end (unix: "path:0"). */
static void peer_addrs(const struct kv_io *io, const struct kv_io_peer *p, char *addr,
                       size_t acap, char *laddr, size_t lcap)
{
    if (p->id.transport == KV_IO_UNIX) {
        snprintf(addr, acap, "%s:0", io->cfg->unix_path);
        snprintf(laddr, lcap, "%s:0", io->cfg->unix_path);
    } else {
        char ip[INET_ADDRSTRLEN] = "?";
        struct in_addr ia = {.s_addr = p->id.addr};

        inet_ntop(AF_INET, &ia, ip, sizeof(ip));
        snprintf(addr, acap, "%s:%u", ip, p->id.port);
        snprintf(laddr, lcap, "%s:%u", io->cfg->bind_addr, io->port);
    }
}

/* One line of CLIENT LIST into buf (cap >= 800 + its texts): its length. */
static size_t peer_line(const struct kv_io *io, const struct kv_io_peer *p,
                        const struct kv_io_conn *self, int64_t now_mono, int64_t now_wall,
                        char *buf, size_t cap)
{
    const struct kv_io_conn *c = conn_of_peer(p);
    char addr[160], laddr[160];
    const char *cmd = __atomic_load_n(&c->session.cmd, __ATOMIC_RELAXED);
    size_t qbuf = __atomic_load_n(&p->qbuf, __ATOMIC_RELAXED);
    size_t qfree = __atomic_load_n(&p->qbuf_free, __ATOMIC_RELAXED);
    int64_t active = __atomic_load_n(&p->active, __ATOMIC_RELAXED);
    uint8_t resp = __atomic_load_n(&c->session.resp, __ATOMIC_RELAXED);
    unsigned db = __atomic_load_n(&c->session.db, __ATOMIC_RELAXED);
    uint32_t multi_n = __atomic_load_n(&c->session.multi_n, __ATOMIC_RELAXED);
    char flags[8], *f = flags;
    int n, extra;

    /* Redis's letters, in its order, of those that exist here */
    if (__atomic_load_n(&c->monitor, __ATOMIC_RELAXED))
        *f++ = 'O';
    if (multi_n)
        *f++ = 'x';
    if (p->id.transport == KV_IO_UNIX)
        *f++ = 'U';
    if (__atomic_load_n(&c->session.no_evict, __ATOMIC_RELAXED))
        *f++ = 'e';
    if (f == flags)
        *f++ = 'N';
    *f = '\0';

    if (c == self) { /* our own state: exact, and the command being run counts */
        qbuf = p->cmd_wire + (c->cur ? c->cur->len - c->cur->parsed : 0);
        qfree = c->cur ? c->cur->cap - c->cur->len : 0;
    }
    peer_addrs(io, p, addr, sizeof(addr), laddr, sizeof(laddr));
#define T(i) (p->text[i] ? p->text[i] : "")
    n = snprintf(buf, cap,
                 "id=%llu addr=%s laddr=%s fd=%d name=%s age=%lld idle=%lld flags=%s db=%u sub=0 "
                 "psub=0 ssub=0 multi=%lld qbuf=%zu qbuf-free=%zu argv-mem=0 multi-mem=0 rbs=%zu "
                 "rbp=%zu obl=0 oll=0 omem=0 tot-mem=%zu events=r cmd=%s user=default "
                 "redir=-1 resp=%u lib-name=%s lib-ver=%s transport=%s",
                 (unsigned long long)p->serial, addr, laddr, p->id.fd, T(KV_IO_TEXT_NAME),
                 (long long)(now_mono - p->since),
                 (long long)(active && now_wall > active ? now_wall - active : 0),
                 flags, db, (long long)multi_n - 1, qbuf,
                 qfree, qbuf + qfree, qbuf + qfree,
                 __atomic_load_n(&c->mem, __ATOMIC_RELAXED), cmd ? cmd : "NULL",
                 resp == 3 ? 3u : 2u, T(KV_IO_TEXT_LIB_NAME), T(KV_IO_TEXT_LIB_VER),
                 p->id.transport != KV_IO_UNIX ? "tcp"
                 : __atomic_load_n(&p->ring_req, __ATOMIC_RELAXED) ? "shm"
                                                                    : "unix");
#undef T
    if (n < 0 || (size_t)n >= cap)
        return 0;
    if (p->id.transport == KV_IO_UNIX && __atomic_load_n(&p->ring_req, __ATOMIC_RELAXED))
        extra = snprintf(buf + n, cap - (size_t)n,
                         " pid=%d uid=%u ring_req=%u ring_resp=%u shm_in=%llu shm_out=%llu "
                         "shm_in_place=%llu\n", p->id.pid, p->id.uid,
                         __atomic_load_n(&p->ring_req, __ATOMIC_RELAXED),
                         __atomic_load_n(&p->ring_resp, __ATOMIC_RELAXED),
                         (unsigned long long)__atomic_load_n(&p->ring_in, __ATOMIC_RELAXED),
                         (unsigned long long)__atomic_load_n(&p->ring_out, __ATOMIC_RELAXED),
                         (unsigned long long)__atomic_load_n(&p->ring_in_place,
                                                             __ATOMIC_RELAXED));
    else if (p->id.transport == KV_IO_UNIX)
        extra = snprintf(buf + n, cap - (size_t)n, " pid=%d uid=%u\n", p->id.pid, p->id.uid);
    else
        extra = snprintf(buf + n, cap - (size_t)n, "\n");
    if (extra < 0 || (size_t)(n + extra) >= cap)
        return 0;
    return (size_t)(n + extra);
}

static int64_t wall_seconds(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

char *kv_io_clients_format(struct kv_io *io, const struct kv_session *self, int self_only,
                           const uint64_t *ids, size_t nids, size_t *lenp)
{
    const struct kv_io_conn *me = self ? conn_of_session(self) : NULL;
    int64_t now = mono_seconds(), wall = wall_seconds();
    size_t cap = 1, len = 0;
    char *buf;

    pthread_mutex_lock(&io->peers_lock);
    for (const struct kv_io_peer *p = io->peers; p; p = p->next)
        cap += 800 + p->text_len[0] + p->text_len[1] + p->text_len[2];
    buf = kv_mem_alloc(KV_MOD_PACKET, cap);
    for (const struct kv_io_peer *p = io->peers; buf && p; p = p->next) {
        int want = !ids && (!self_only || conn_of_peer(p) == me);

        for (size_t i = 0; ids && i < nids && !want; i++)
            want = ids[i] == p->serial;
        if (want)
            len += peer_line(io, p, me, now, wall, buf + len, cap - len);
    }
    pthread_mutex_unlock(&io->peers_lock);
    if (buf) {
        buf[len] = '\0';
        *lenp = len;
    }
    return buf;
}

static int slice_eq(const struct kv_slice *a, const char *s)
{
    return a->len == strlen(s) && memcmp(a->p, s, a->len) == 0;
}

unsigned kv_io_clients_kill(struct kv_io *io, const struct kv_session *self,
                            const struct kv_io_kill *f, int *self_matched)
{
    const struct kv_io_conn *me = self ? conn_of_session(self) : NULL;
    unsigned killed = 0;
    uint8_t *wake = NULL;

    *self_matched = 0;
    if (f->none)
        return 0;
    wake = kv_mem_calloc(KV_MOD_THREAD, io->nthreads ? io->nthreads : 1);
    if (!wake)
        return 0;
    pthread_mutex_lock(&io->peers_lock);
    for (struct kv_io_peer *p = io->peers; p; p = p->next) {
        char addr[160], laddr[160];

        if (f->id && p->serial != f->id)
            continue;
        peer_addrs(io, p, addr, sizeof(addr), laddr, sizeof(laddr));
        if ((f->addr && !slice_eq(f->addr, addr)) || (f->laddr && !slice_eq(f->laddr, laddr)))
            continue;
        if (conn_of_peer(p) == me) {
            if (f->skipme)
                continue;
            *self_matched = 1;
        } else {
            __atomic_store_n(&p->kill, 1, __ATOMIC_RELAXED);
            if (p->thread < io->nthreads)
                wake[p->thread] = 1;
        }
        killed++;
    }
    pthread_mutex_unlock(&io->peers_lock);
    for (unsigned i = 0; i < io->nthreads; i++) {
        struct kv_io_thread *thr = &io->threads[i];

        if (!wake[i])
            continue;
        pthread_mutex_lock(&thr->lock);
        thr->kill_asked = 1;
        pthread_mutex_unlock(&thr->lock);
        ev_async_send(thr->loop, &thr->wake);
    }
    kv_mem_free(KV_MOD_THREAD, wake);
    return killed;
}

/* ---- MONITOR ------------------------------------------------------------------ */
void kv_io_session_monitor(struct kv_session *s, int on)
{
    struct kv_io_conn *c = conn_of_session(s);

    if (!c->monitor == !on)
        return;
    __atomic_store_n(&c->monitor, (uint8_t)(on != 0), __ATOMIC_RELAXED);
    __atomic_store_n(&c->thr->monitors, c->thr->monitors + (on ? 1u : -1u), __ATOMIC_RELAXED);
    __atomic_fetch_add(&c->thr->io->monitors, on ? 1u : -1u, __ATOMIC_RELAXED);
}

int kv_io_session_is_monitor(const struct kv_session *s)
{
    return conn_of_session(s)->monitor;
}

const unsigned *kv_io_monitor_count(const struct kv_io *io)
{
    return &io->monitors;
}

/* Redis's sdscatrepr: a quoted, escaped argument. */
static size_t repr(uint8_t *o, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;

    o[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = p[i];
        const char *esc = ch == '\n' ? "\\n" : ch == '\r' ? "\\r" : ch == '\t' ? "\\t"
                        : ch == '\a' ? "\\a" : ch == '\b' ? "\\b" : NULL;

        if (ch == '\\' || ch == '"') {
            o[k++] = '\\';
            o[k++] = ch;
        } else if (esc) {
            o[k++] = (uint8_t)esc[0];
            o[k++] = (uint8_t)esc[1];
        } else if (ch >= 0x20 && ch < 0x7f) {
            o[k++] = ch;
        } else {
            o[k++] = '\\';
            o[k++] = 'x';
            o[k++] = (uint8_t)hex[ch >> 4];
            o[k++] = (uint8_t)hex[ch & 15];
        }
    }
    o[k++] = '"';
    return k;
}

void kv_io_monitor_feed(struct kv_io *io, const struct kv_session *s, unsigned db, size_t argc,
                        const struct kv_slice *argv, uint64_t redact)
{
    const struct kv_io_conn *c = conn_of_session(s);
    static const char redacted[] = "(redacted)";
    char addr[160], laddr[160], head[256];
    struct timespec ts;
    size_t cap, len;
    int hn;
    struct kv_io_mline *line;

    clock_gettime(CLOCK_REALTIME, &ts);
    peer_addrs(io, &c->peer, addr, sizeof(addr), laddr, sizeof(laddr));
    if (c->peer.id.transport == KV_IO_UNIX)
        hn = snprintf(head, sizeof(head), "+%lld.%06ld [%u unix:%s] ", (long long)ts.tv_sec,
                      ts.tv_nsec / 1000, db, io->cfg->unix_path);
    else
        hn = snprintf(head, sizeof(head), "+%lld.%06ld [%u %s] ", (long long)ts.tv_sec,
                      ts.tv_nsec / 1000, db, addr);
    if (hn <= 0 || (size_t)hn >= sizeof(head))
        return;
    cap = (size_t)hn + 2;
    for (size_t i = 0; i < argc; i++)
        cap += 4 * (argv[i].len > sizeof(redacted) ? argv[i].len : sizeof(redacted)) + 3;
    line = kv_mem_alloc(KV_MOD_PACKET, sizeof(*line) + cap);
    if (!line)
        return; /* a monitor misses a line; nothing else is affected */
    memcpy(line->data, head, (size_t)hn);
    len = (size_t)hn;
    for (size_t i = 0; i < argc; i++) {
        if (i < 64 && (redact >> i & 1))
            len += repr(line->data + len, (const uint8_t *)redacted, sizeof(redacted) - 1);
        else
            len += repr(line->data + len, argv[i].p, argv[i].len);
        if (i + 1 < argc)
            line->data[len++] = ' ';
    }
    line->data[len++] = '\r';
    line->data[len++] = '\n';
    line->len = len;
    for (unsigned t = 0; t < io->nthreads; t++) {
        struct kv_io_thread *thr = &io->threads[t];
        struct kv_io_mline *copy;

        if (!__atomic_load_n(&thr->monitors, __ATOMIC_RELAXED))
            continue;
        copy = kv_mem_alloc(KV_MOD_PACKET, sizeof(*copy) + len);
        if (!copy)
            continue;
        memcpy(copy->data, line->data, len);
        copy->len = len;
        copy->next = NULL;
        pthread_mutex_lock(&thr->lock);
        if (thr->mon_tail)
            thr->mon_tail->next = copy;
        else
            thr->mon_head = copy;
        thr->mon_tail = copy;
        pthread_mutex_unlock(&thr->lock);
        ev_async_send(thr->loop, &thr->wake);
    }
    kv_mem_free(KV_MOD_PACKET, line);
}
