/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/listener.c -- the listener thread: accept, configure, hand over.
 *
 * One libev loop with the listening sockets: TCP, and the unix-domain one
 * of --unix (either may be absent). Each accepted fd is made non-blocking
 * (TCP: with TCP_NODELAY; unix: its peer's pid and uid read with
 * SO_PEERCRED) and written into the pipe of the next IO thread,
 * round-robin. Both transports count against --max-conns: above it a
 * connection is answered BUSY and closed. When accept fails for lack of
 * descriptors (EMFILE/ENFILE) the watchers are paused for a moment instead
 * of spinning on a level-triggered socket that stays readable. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io_internal.h"
#include "kv_err.h"
#include "kv_mem.h"

#define ACCEPT_BURST 64
#define ACCEPT_BACKOFF 0.1 /* seconds */

/* Best effort: one BUSY frame on a fresh socket, whose buffer is empty. */
static void reject_busy(int fd)
{
    struct kv_frame f = {.version = KV_FRAME_VERSION, .flags = KV_FRAME_F_RESPONSE,
                         .status = KV_ST_BUSY};
    uint8_t out[KV_FRAME_OVERHEAD];

    if (kv_frame_encode(&f, NULL, out, sizeof(out)) > 0) {
        ssize_t n = send(fd, out, sizeof(out), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)n;
    }
    close(fd);
}

static void on_backoff(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct kv_io *io = w->data;

    if (io->listen_fd >= 0)
        ev_io_start(loop, &io->accept_w);
    if (io->unix_fd >= 0)
        ev_io_start(loop, &io->accept_unix_w);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kv_io *io = w->data;
    int is_unix = w == &io->accept_unix_w;

    for (int i = 0; i < ACCEPT_BURST; i++) {
        struct sockaddr_in sa;
        socklen_t sl = sizeof(sa);
        int fd = accept4(w->fd, is_unix ? NULL : (struct sockaddr *)&sa, is_unix ? NULL : &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct kv_io_handoff h = {.fd = fd, .transport = is_unix ? KV_IO_UNIX : KV_IO_TCP};
        int one = 1;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                uint64_t quiet;

                kv_mem_stat_add(KV_STAT_ACCEPT_PAUSES, 1);
                if (kv_io_ratelog_take(&io->accept_log, ev_now(loop), &quiet))
                    kv_io_log(io, 1, "accept: %s; pausing accepts for %.0f ms (%llu more "
                              "pauses since the last such line)", strerror(errno),
                              ACCEPT_BACKOFF * 1000, (unsigned long long)quiet);
                ev_io_stop(loop, &io->accept_w);
                ev_io_stop(loop, &io->accept_unix_w);
                ev_timer_set(&io->backoff, ACCEPT_BACKOFF, 0.);
                ev_timer_start(loop, &io->backoff);
            }
            return; /* EAGAIN or paused */
        }
        if (__atomic_load_n(&io->conns, __ATOMIC_RELAXED) >= io->cfg->max_conns) {
            kv_mem_stat_add(KV_STAT_CONNS_REJECTED, 1);
            reject_busy(fd);
            continue;
        }
        if (is_unix) {
            struct ucred cr;
            socklen_t cl = sizeof(cr);

            if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) == 0) {
                h.pid = cr.pid;
                h.uid = cr.uid;
            }
        } else {
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            if (sl >= sizeof(sa) && sa.sin_family == AF_INET) {
                h.addr = sa.sin_addr.s_addr;
                h.port = ntohs(sa.sin_port);
            }
        }
        __atomic_fetch_add(&io->conns, 1, __ATOMIC_RELAXED);
        kv_mem_stat_add(KV_STAT_CONNS_ACCEPTED, 1);
        kv_io_thread_adopt(&io->threads[io->next_thread], &h);
        io->next_thread = (io->next_thread + 1) % io->nthreads;
    }
}

static void on_lstop(struct ev_loop *loop, ev_async *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
}

/* CONFIG SET port (kv_io_relisten): accept on the new socket from now on. */
static void on_lrelisten(struct ev_loop *loop, ev_async *w, int revents)
{
    struct kv_io *io = w->data;
    int fd = __atomic_exchange_n(&io->relisten_fd, -1, __ATOMIC_ACQ_REL);

    if (fd < 0)
        return;
    ev_io_stop(loop, &io->accept_w);
    close(io->listen_fd);
    io->listen_fd = fd;
    ev_io_set(&io->accept_w, fd, EV_READ);
    if (!ev_is_active(&io->backoff)) /* else on_backoff starts it */
        ev_io_start(loop, &io->accept_w);
}

static void *listener_main(void *arg)
{
    struct kv_io *io = arg;

    ev_run(io->lloop, 0);
    kv_mem_pool_drain();
    return NULL;
}

int kv_io_listener_start(struct kv_io *io)
{
    sigset_t all, old;
    int rc;

    io->lloop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!io->lloop)
        return KV_ENOMEM;
    ev_io_init(&io->accept_w, on_accept, io->listen_fd, EV_READ);
    io->accept_w.data = io;
    ev_io_init(&io->accept_unix_w, on_accept, io->unix_fd, EV_READ);
    io->accept_unix_w.data = io;
    ev_timer_init(&io->backoff, on_backoff, ACCEPT_BACKOFF, 0.);
    io->backoff.data = io;
    ev_async_init(&io->lstop, on_lstop);
    ev_async_init(&io->lrelisten, on_lrelisten);
    io->lrelisten.data = io;
    ev_async_start(io->lloop, &io->lrelisten);
    if (io->listen_fd >= 0)
        ev_io_start(io->lloop, &io->accept_w);
    if (io->unix_fd >= 0)
        ev_io_start(io->lloop, &io->accept_unix_w);
    ev_async_start(io->lloop, &io->lstop);

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rc = pthread_create(&io->ltid, NULL, listener_main, io);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        ev_loop_destroy(io->lloop);
        io->lloop = NULL;
        return KV_ENOMEM;
    }
    io->listener_started = 1;
    return 0;
}

void kv_io_listener_stop(struct kv_io *io)
{
    if (!io->listener_started)
        return;
    ev_async_send(io->lloop, &io->lstop);
    pthread_join(io->ltid, NULL);
    io->listener_started = 0;
    ev_loop_destroy(io->lloop);
    io->lloop = NULL;
    if (io->listen_fd >= 0)
        close(io->listen_fd);
    io->listen_fd = -1;
    if (io->relisten_fd >= 0) /* handed over after the listener's last turn */
        close(io->relisten_fd);
    io->relisten_fd = -1;
    kv_io_unix_close(io);
}
