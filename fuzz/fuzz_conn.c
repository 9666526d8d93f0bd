/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* fuzz/fuzz_conn.c -- libFuzzer harness for the whole request path: bytes on
 * a socket -> listener -> IO thread (conn_parse, conn_make_room, on_read) ->
 * worker -> handlers -> completion -> sendmsg.
 *
 * A real server runs in-process on 127.0.0.1, port 0, a private 4 MiB
 * segment, small receive buffers (so frames straddle messages) and one
 * worker thread (FUZZ_CONN_WORKERS=0 runs handlers inline instead). Each
 * input is the byte stream of one client connection. A hash of the input
 * chooses, deterministically:
 *   - up to three split points: each piece is written, then the harness
 *     waits until the server has read it, so the IO thread sees exactly
 *     those reads;
 *   - whether the server has a password ("fuzzpass");
 *   - the ending: half-close (shutdown(SHUT_WR)) and read until EOF, or an
 *     abortive close (RST) right after the last write.
 * After each input the harness waits until the connection is freed and no
 * message or request is alive, then checks that the bytes of BUF, MESSAGE,
 * REQUEST, PACKET, CONNECTION and PROTO are what they were before it. A
 * server that neither closes nor frees the connection within 10 s is a
 * failure (a stall). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "kv_config.h"
#include "kv_mem.h"
#include "kv_server.h"
#include "kv_shm.h"

#define FUZZ_PASS "fuzzpass"
#define STALL_MS 10000
#define READ_WAIT_MS 200 /* per piece: how long the server may take to read it */

static struct kv_config cfg;
static struct kv_server *srv;
static struct sockaddr_in addr;

#define CONN_MODS                                                                             \
    (FUZZ_MOD(KV_MOD_BUF) | FUZZ_MOD(KV_MOD_MESSAGE) | FUZZ_MOD(KV_MOD_REQUEST) |             \
     FUZZ_MOD(KV_MOD_PACKET) | FUZZ_MOD(KV_MOD_CONNECTION) | FUZZ_MOD(KV_MOD_PROTO))

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void cleanup(void)
{
    if (srv) {
        kv_server_stop(srv);
        kv_server_destroy(srv);
        srv = NULL;
    }
    kv_shm_store_unlink(&cfg);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    const char *w = getenv("FUZZ_CONN_WORKERS");

    signal(SIGPIPE, SIG_IGN);
    kv_config_defaults(&cfg);
    cfg.port = 0;
    cfg.memory = 4u << 20;
    cfg.log_level = 0;
    cfg.workers = w ? (unsigned)atoi(w) : 1;
    cfg.io_threads = 1;
    cfg.recv_buf = 4096;
    cfg.max_body = 1u << 20;
    cfg.shutdown_grace = 1.0;
    snprintf(cfg.shm_name, sizeof(cfg.shm_name), "/libevkv-fuzz-conn-%d", (int)getpid());
    kv_shm_store_unlink(&cfg);
    if (kv_server_create(&cfg, err, sizeof(err), &srv) != 0 || kv_server_start(srv) != 0) {
        fprintf(stderr, "[fuzz] cannot start the server: %s\n", err);
        abort();
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons(kv_server_port(srv));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    atexit(cleanup);
    return 0;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static int64_t live(const struct kv_mem_snapshot *s, enum kv_mod m)
{
    return (int64_t)(s->mod[m].allocs - s->mod[m].frees);
}

/* Reads and discards whatever the server has sent; returns 1 at EOF or error. */
static int drain(int fd)
{
    uint8_t buf[65536];

    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n < 0 && errno == EINTR)
            continue;
        return 1;
    }
}

/* Writes all of p, reading responses meanwhile so neither side blocks.
 * Returns -1 when the server has closed (EPIPE/ECONNRESET/EOF). */
static int write_all(int fd, const uint8_t *p, size_t n, int *eof)
{
    while (n > 0) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT | POLLIN};
        ssize_t w;

        int pr = poll(&pfd, 1, STALL_MS);

        if (pr < 0 && errno == EINTR) /* libFuzzer's SIGALRM for -timeout */
            continue;
        if (pr <= 0)
            fuzz_fail("server neither reads nor answers for %d ms", STALL_MS);
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
            if (drain(fd)) {
                *eof = 1;
                return -1;
            }
        if (!(pfd.revents & POLLOUT))
            continue;
        w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Waits until the server has read `target` bytes in total or closed the
 * connection (frees counted), for at most READ_WAIT_MS. */
static void wait_read(uint64_t in_target, uint64_t conn_frees)
{
    double end = now_ms() + READ_WAIT_MS;
    struct kv_mem_snapshot s;

    do {
        kv_mem_snapshot(&s);
        if (s.stat[KV_STAT_BYTES_IN] >= in_target || s.mod[KV_MOD_CONNECTION].frees > conn_frees)
            return;
        sched_yield();
    } while (now_ms() < end);
}

/* connect(), which a signal (libFuzzer's SIGALRM) may interrupt: the
 * connection then completes asynchronously. */
static void connect_to_server(int fd)
{
    struct pollfd pfd = {.fd = fd, .events = POLLOUT};
    socklen_t sl = sizeof(int);
    int err = 0;

    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
        return;
    if (errno != EINTR && errno != EINPROGRESS)
        fuzz_fail("connect: %s", strerror(errno));
    while (poll(&pfd, 1, STALL_MS) < 0)
        if (errno != EINTR)
            fuzz_fail("poll: %s", strerror(errno));
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) != 0 || err != 0)
        fuzz_fail("connect: %s", strerror(err));
}

/* Waits until an IO thread has adopted the new connection, so that what
 * follows (even an immediate RST) happens to a connection the server owns. */
static void wait_adopted(const struct kv_mem_snapshot *base)
{
    double end = now_ms() + STALL_MS;
    struct kv_mem_snapshot s;

    do {
        kv_mem_snapshot(&s);
        if (s.mod[KV_MOD_CONNECTION].allocs > base->mod[KV_MOD_CONNECTION].allocs)
            return;
        sched_yield();
    } while (now_ms() < end);
    fuzz_fail("the server did not adopt a connection within %d ms", STALL_MS);
}

/* Waits until the connection of this input is freed and the in-flight
 * counts and bytes are back to *base. */
static void wait_settled(const struct kv_mem_snapshot *base)
{
    double end = now_ms() + STALL_MS;
    struct kv_mem_snapshot s;

    for (;;) {
        kv_mem_snapshot(&s);
        if (s.mod[KV_MOD_CONNECTION].frees > base->mod[KV_MOD_CONNECTION].frees &&
            live(&s, KV_MOD_CONNECTION) == live(base, KV_MOD_CONNECTION) &&
            live(&s, KV_MOD_MESSAGE) == live(base, KV_MOD_MESSAGE) &&
            live(&s, KV_MOD_REQUEST) == live(base, KV_MOD_REQUEST) &&
            fuzz_mem_diff(base, &s, CONN_MODS) < 0)
            return;
        if (now_ms() > end)
            break;
        sched_yield();
    }
    fuzz_print_snapshots(base, &s);
    {
        char text[4096];

        kv_server_format_stats(srv, text, sizeof(text));
        fprintf(stderr, "%s", text);
    }
    fuzz_fail("connection not freed or accounting not back to baseline after %d ms", STALL_MS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kv_mem_snapshot base;
    uint64_t h = fnv1a(data, size);
    size_t cuts[5];
    int ncuts = 0, fd, eof = 0, one = 1;
    int abortive = (h >> 60) == 0xF; /* 1 in 16 */
    struct linger lg = {1, 0};

    /* no connection of ours is alive here (the previous input settled) */
    snprintf(cfg.requirepass, sizeof(cfg.requirepass), "%s", (h >> 59) & 1 ? FUZZ_PASS : "");
    kv_mem_snapshot(&base);

    cuts[ncuts++] = 0;
    for (int i = 0; i < 3 && size > 1; i++) {
        size_t c = (size_t)((h >> (16 * i)) & 0xFFFF) % size;

        if ((h >> (48 + i)) & 1)
            cuts[ncuts++] = c;
    }
    cuts[ncuts++] = size;
    /* sort the few cut points */
    for (int i = 1; i < ncuts; i++)
        for (int j = i; j > 0 && cuts[j] < cuts[j - 1]; j--) {
            size_t t = cuts[j];

            cuts[j] = cuts[j - 1];
            cuts[j - 1] = t;
        }

    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* RST on close: no TIME_WAIT, so millions of inputs do not exhaust ports */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    connect_to_server(fd);
    wait_adopted(&base);

    for (int i = 0; i + 1 < ncuts && !eof; i++) {
        size_t len = cuts[i + 1] - cuts[i];

        if (len == 0)
            continue;
        if (write_all(fd, data + cuts[i], len, &eof) != 0)
            break;
        if (i + 2 < ncuts)
            wait_read(base.stat[KV_STAT_BYTES_IN] + cuts[i + 1],
                      base.mod[KV_MOD_CONNECTION].frees);
    }
    if (!abortive && !eof) {
        double end = now_ms() + STALL_MS;

        shutdown(fd, SHUT_WR);
        while (!eof) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};

            if (now_ms() > end)
                fuzz_fail("server did not close a half-closed connection in %d ms", STALL_MS);
            if (poll(&pfd, 1, 100) > 0)
                eof = drain(fd);
        }
    }
    close(fd);
    wait_settled(&base);
    return 0;
}
