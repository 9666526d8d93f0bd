/* src/io/listener.c -- the listener thread: accept, configure, hand over.
 *
 * One libev loop with the listening socket. Each accepted fd is made
 * non-blocking with TCP_NODELAY and written into the pipe of the next IO
 * thread, round-robin. Above --max-conns a connection is answered BUSY and
 * closed. When accept fails for lack of descriptors (EMFILE/ENFILE) the
 * watcher is paused for a moment instead of spinning on a level-triggered
 * socket that stays readable. */
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

    ev_io_start(loop, &io->accept_w);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    struct kv_io *io = w->data;

    for (int i = 0; i < ACCEPT_BURST; i++) {
        int fd = accept4(io->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
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
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        __atomic_fetch_add(&io->conns, 1, __ATOMIC_RELAXED);
        kv_mem_stat_add(KV_STAT_CONNS_ACCEPTED, 1);
        kv_io_thread_adopt(&io->threads[io->next_thread], fd);
        io->next_thread = (io->next_thread + 1) % io->nthreads;
    }
}

static void on_lstop(struct ev_loop *loop, ev_async *w, int revents)
{
    ev_break(loop, EVBREAK_ALL);
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
    ev_timer_init(&io->backoff, on_backoff, ACCEPT_BACKOFF, 0.);
    io->backoff.data = io;
    ev_async_init(&io->lstop, on_lstop);
    ev_io_start(io->lloop, &io->accept_w);
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
    close(io->listen_fd);
    io->listen_fd = -1;
}
