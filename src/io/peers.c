/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/peers.c -- the registry of open connections.
 *
 * Every connection is listed from the moment its IO thread adopts it until
 * it is closed, with what the listener learnt at accept (peer address, or
 * for a unix-domain peer its pid and uid from SO_PEERCRED). CLIENT LIST and
 * STATS read it from any thread. Lock rule: io->peers_lock guards the list
 * links and next_serial only; a listed peer's other fields are written
 * before it is added and stay unchanged until it is removed. Adding and
 * removing take the lock once per connection, never per request. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "io_internal.h"

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
                         "shm_in=%llu shm_out=%llu\n",
                         (unsigned long long)p->serial, io->cfg->unix_path, io->cfg->unix_path,
                         p->id.fd, (long long)(now - p->since), p->id.pid, p->id.uid, rq,
                         __atomic_load_n(&p->ring_resp, __ATOMIC_RELAXED),
                         (unsigned long long)__atomic_load_n(&p->ring_in, __ATOMIC_RELAXED),
                         (unsigned long long)__atomic_load_n(&p->ring_out, __ATOMIC_RELAXED));
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
