/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_limits.c -- the per-connection limits of a server under
 * hostile clients, end to end: --max-conns (BUSY, then close), a frame that
 * never completes (--frame-timeout), an idle connection (--idle-timeout),
 * the small body limit before AUTH (--max-body-noauth), and a client that
 * never reads its answers (--output-hard-limit). Then the client-memory
 * budget (--max-client-memory) and what clients cost under the defaults,
 * measured on a second server: the RSS of one that never reads, idle
 * connections, a partial frame. Each check ends with the server still
 * answering; the suite ends with both exit tables at 0 bytes. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "kv_client.h"
#include "kv_err.h"
#include "kv_test_util.h"

/* Under ASan freed memory waits in a quarantine and every block has red
 * zones: the server's RSS says nothing about what it holds, so the RSS
 * bounds are checked only in builds without it (the servers' own
 * client_memory_bytes is checked in every build). */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_BOUND(cond) ((void)0)
#else
#define RSS_BOUND(cond) CU_ASSERT(cond)
#endif

static struct kv_test_server srv;
static struct kv_test_server dflt; /* default options (but a small store) */

static int suite_init(void)
{
    static const char *const args[] = {
        "--max-conns", "4", "--idle-timeout", "2", "--frame-timeout", "1",
        "--requirepass", "pw", "--max-body-noauth", "1k", "--max-output", "64k",
        "--output-hard-limit", "64k", NULL};

    return kv_test_server_start(&srv, args) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    if (srv.pid > 0)
        kv_test_server_stop(&srv);
    if (dflt.pid > 0)
        kv_test_server_stop(&dflt);
    return 0;
}

/* ---- helpers for the memory checks ---------------------------------------- */
static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* RssAnon of pid in KiB: the heap, without the store's shared pages. */
static long rss_anon_kib(pid_t pid)
{
    char path[64], line[256];
    long v = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "RssAnon: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

/* A STATS entry of the server on port; -1 when it cannot be had. */
static int64_t stat_of(uint16_t port, const char *name)
{
    struct kv_client *c = NULL;
    struct kv_stats st;
    int64_t v = -1;

    if (kv_client_connect("127.0.0.1", port, 5000, &c) != 0)
        return -1;
    if (port == srv.port && kv_client_auth(c, "pw", 2) != 0) { /* srv has a password */
        kv_client_close(c);
        return -1;
    }
    if (kv_client_stats(c, &st) == 0) {
        if (!kv_client_stats_find(&st, name, &v))
            v = -1;
        kv_client_stats_free(&st);
    }
    kv_client_close(c);
    return v;
}

static int raw_connect(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    return fd;
}

/* n clients that pipeline RESP `ECHO <64 KiB>` as fast as the server takes
 * them and never read, for up to `seconds` (or until every one is closed).
 * fds[] gets the sockets (-1 once the server closed one); returns how many
 * the server closed. *peak_kib: the server's highest RssAnon meanwhile. */
static int never_read(uint16_t port, pid_t pid, int n, double seconds, int *fds, long *peak_kib)
{
    static char req[65536 + 64];
    size_t len, off[64] = {0};
    int closed = 0;
    double end = now_s() + seconds, next_sample = 0;

    len = (size_t)snprintf(req, sizeof(req), "*2\r\n$4\r\nECHO\r\n$65536\r\n");
    memset(req + len, 'x', 65536);
    len += 65536;
    memcpy(req + len, "\r\n", 2);
    len += 2;
    CU_ASSERT_FATAL(n <= 64);
    for (int i = 0; i < n; i++)
        fds[i] = raw_connect(port);
    *peak_kib = rss_anon_kib(pid);
    while (closed < n && now_s() < end) {
        int progress = 0;

        for (int i = 0; i < n; i++) {
            ssize_t k;

            if (fds[i] < 0)
                continue;
            k = send(fds[i], req + off[i], len - off[i], MSG_DONTWAIT | MSG_NOSIGNAL);
            if (k > 0) {
                off[i] = (off[i] + (size_t)k) % len; /* the next send goes on from there */
                progress = 1;
            } else if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                close(fds[i]); /* EPIPE, ECONNRESET: the server dropped it */
                fds[i] = -1;
                closed++;
            }
        }
        if (now_s() >= next_sample) {
            long r = rss_anon_kib(pid);

            if (r > *peak_kib)
                *peak_kib = r;
            next_sample = now_s() + 0.02;
        }
        if (!progress)
            usleep(2000);
    }
    return closed;
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

static struct kv_client *conn(int auth)
{
    struct kv_client *c = NULL;

    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", srv.port, 5000, &c) == 0);
    if (auth)
        CU_ASSERT_FATAL(kv_client_auth(c, "pw", 2) == 0);
    return c;
}

static void assert_alive(void)
{
    struct kv_client *c = conn(0);

    CU_ASSERT_EQUAL(kv_client_ping(c, "alive", 5), 0);
    kv_client_close(c);
}

static void test_limits_max_conns_answers_busy_then_closes(void)
{
    struct kv_client *c[4], *extra;
    struct kv_response r;

    /* the server is otherwise idle: 4 connections fill --max-conns */
    for (int i = 0; i < 4; i++) {
        c[i] = conn(0);
        CU_ASSERT_EQUAL(kv_client_ping(c[i], "x", 1), 0);
    }
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", srv.port, 5000, &extra) == 0);
    CU_ASSERT_EQUAL_FATAL(kv_client_recv(extra, &r), 0);
    CU_ASSERT_EQUAL(r.status, KV_ST_BUSY);
    CU_ASSERT_EQUAL(kv_client_recv(extra, &r), KV_ECLOSED);
    kv_client_close(extra);
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(kv_client_ping(c[i], "y", 1), 0); /* the others are unaffected */
        kv_client_close(c[i]);
    }
    usleep(100000); /* the server notices the closes */
    assert_alive();
}

static void test_limits_unfinished_frame_is_dropped(void)
{
    struct kv_client *slow = conn(0), *other = conn(0);
    struct kv_frame f = {.version = 1, .opcode = 0, .request_id = 5, .body_len = 100};
    uint8_t hdr[KV_FRAME_HDR];
    struct kv_response r;

    kv_frame_encode_header(&f, hdr);
    CU_ASSERT_EQUAL_FATAL(kv_client_send_raw(slow, hdr, 10), 0); /* then nothing more */
    sleep(1);
    CU_ASSERT_EQUAL(kv_client_ping(other, "meanwhile", 9), 0);
    /* the deadline is 1 s, checked once a second: closed within 3 s */
    CU_ASSERT_EQUAL(kv_client_recv(slow, &r), KV_ECLOSED);
    kv_client_close(slow);
    kv_client_close(other);
    assert_alive();
}

static void test_limits_idle_connection_is_closed(void)
{
    struct kv_client *idle = conn(0);
    struct kv_response r;

    CU_ASSERT_EQUAL(kv_client_ping(idle, "once", 4), 0);
    CU_ASSERT_EQUAL(kv_client_recv(idle, &r), KV_ECLOSED); /* within the 5 s client timeout */
    kv_client_close(idle);
    assert_alive();
}

static void test_limits_small_body_before_auth(void)
{
    static uint8_t body[2048];
    struct kv_client *c = conn(0);
    struct kv_response r;

    CU_ASSERT_EQUAL(kv_client_ping(c, body, 1000), 0); /* PING is allowed before AUTH */
    CU_ASSERT_EQUAL(kv_client_call(c, 0, body, sizeof(body), &r), KV_ESTATUS);
    CU_ASSERT_EQUAL(r.status, KV_ST_TOO_LARGE);
    CU_ASSERT_EQUAL(kv_client_recv(c, &r), KV_ECLOSED);
    kv_client_close(c);
    c = conn(1); /* after AUTH the normal --max-body applies */
    CU_ASSERT_EQUAL(kv_client_ping(c, body, sizeof(body)), 0);
    kv_client_close(c);
}

/* Far more answers than the kernel's socket buffers hold (a few MiB on
 * loopback), never read: once they are full the server's pending output
 * passes --output-hard-limit and it drops the connection. */
static void test_limits_client_that_never_reads_is_dropped(void)
{
    enum { N = 1024 }; /* 16 MiB of answers */
    static uint8_t body[16384];
    struct kv_client *c = conn(1);
    struct kv_response r;
    int answered = 0, rc = 0;

    for (uint64_t i = 0; i < N && rc == 0; i++) {
        rc = kv_client_queue(c, 0, i, body, sizeof(body));
        if (rc == 0)
            rc = kv_client_flush(c); /* fails (closed, or times out) once dropped */
    }
    while ((rc = kv_client_recv(c, &r)) == 0)
        answered++;
    CU_ASSERT_EQUAL(rc, KV_ECLOSED);
    CU_ASSERT(answered < N);
    kv_client_close(c);
    assert_alive();
}

/* ---- authentication through a pipeline --------------------------------------- */
/* Reads everything until EOF (or 5 s) from fd into buf; returns the length. */
static size_t read_to_eof(int fd, char *buf, size_t cap)
{
    struct timeval tv = {.tv_sec = 5};
    size_t len = 0;
    ssize_t n;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (len < cap - 1 && (n = recv(fd, buf + len, cap - 1 - len, 0)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    return len;
}

static size_t count_of(const char *hay, const char *needle)
{
    size_t n = 0;

    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static int key_exists(const char *key)
{
    struct kv_client *c = conn(1);
    bool e = true;

    CU_ASSERT_EQUAL(kv_client_exists(c, key, strlen(key), &e), 0);
    kv_client_close(c);
    return e;
}

/* 398 wrong AUTH frames, the right one and a SET in one write: three wrong
 * answers, then the close; the SET never runs (before: AUTH OK and the SET
 * stored, ~400 guesses per connection). */
static void test_limits_binary_auth_pipeline_gets_three_guesses(void)
{
    enum { WRONG = 398 };
    static uint8_t out[(WRONG + 2) * 64];
    struct kv_client *c = conn(0);
    uint8_t body[32];
    size_t len = 0;
    int noauth = 0, ok = 0, rc;
    struct kv_response r;
    int64_t before = stat_of(srv.port, "auth_failures");

    (void)out;
    for (uint64_t i = 0; i < WRONG; i++) {
        body[0] = 0x0a, body[1] = 5;
        snprintf((char *)body + 2, 6, "g%04u", (unsigned)i);
        CU_ASSERT_EQUAL_FATAL(kv_client_queue(c, KV_OP_AUTH, i, body, 7), 0);
    }
    body[0] = 0x0a, body[1] = 2, body[2] = 'p', body[3] = 'w';
    CU_ASSERT_EQUAL_FATAL(kv_client_queue(c, KV_OP_AUTH, WRONG, body, 4), 0);
    memcpy(body, "\x0a\x05" "bpkey\x12\x01v", 10);
    CU_ASSERT_EQUAL_FATAL(kv_client_queue(c, KV_OP_SET, WRONG + 1, body, 10), 0);
    CU_ASSERT_EQUAL_FATAL(kv_client_flush(c), 0);
    (void)len;
    while ((rc = kv_client_recv(c, &r)) == 0) {
        if (r.status == KV_ST_NOAUTH)
            noauth++;
        else if (r.status == KV_ST_OK)
            ok++;
    }
    CU_ASSERT_EQUAL(rc, KV_ECLOSED);
    CU_ASSERT_EQUAL(noauth, 3);
    CU_ASSERT_EQUAL(ok, 0);
    kv_client_close(c);
    CU_ASSERT_FALSE(key_exists("bpkey"));
    CU_ASSERT(stat_of(srv.port, "auth_failures") - before == 3);
}

/* The same over RESP: at most three -WRONGPASS, then the close (before:
 * ~1,000 answers); the SET after the right password never runs. */
static void test_limits_resp_auth_pipeline_gets_three_guesses(void)
{
    static char out[600 * 24], in[65536];
    size_t len = 0;
    int fd = raw_connect(srv.port);

    for (int i = 0; i < 500; i++)
        len += (size_t)snprintf(out + len, sizeof(out) - len, "AUTH g%04d\r\n", i);
    len += (size_t)snprintf(out + len, sizeof(out) - len, "AUTH pw\r\nSET rpkey v\r\n");
    CU_ASSERT_EQUAL_FATAL(send(fd, out, len, MSG_NOSIGNAL), (ssize_t)len);
    read_to_eof(fd, in, sizeof(in));
    close(fd);
    CU_ASSERT_EQUAL(count_of(in, "-WRONGPASS"), 3);
    CU_ASSERT_EQUAL(count_of(in, "+OK"), 0);
    CU_ASSERT_FALSE(key_exists("rpkey"));
}

/* A command pipelined right after the right password is served, as Redis
 * does (before: +OK, then -NOAUTH: the state was checked at parse time). */
static void test_limits_command_right_after_auth_is_served(void)
{
    static const char req[] = "AUTH pw\r\nSET apkey v1\r\nGET apkey\r\nQUIT\r\n";
    char in[256];
    int fd = raw_connect(srv.port);
    struct kv_client *c = conn(0);
    struct kv_response r;
    uint8_t body[16];

    CU_ASSERT_EQUAL_FATAL(send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL), (ssize_t)sizeof(req) - 1);
    read_to_eof(fd, in, sizeof(in));
    close(fd);
    CU_ASSERT_STRING_EQUAL(in, "+OK\r\n+OK\r\n$2\r\nv1\r\n+OK\r\n");
    /* binary: AUTH and a SET in one write */
    body[0] = 0x0a, body[1] = 2, body[2] = 'p', body[3] = 'w';
    CU_ASSERT_EQUAL_FATAL(kv_client_queue(c, KV_OP_AUTH, 1, body, 4), 0);
    memcpy(body, "\x0a\x05" "bakey\x12\x01v", 10);
    CU_ASSERT_EQUAL_FATAL(kv_client_queue(c, KV_OP_SET, 2, body, 10), 0);
    CU_ASSERT_EQUAL_FATAL(kv_client_flush(c), 0);
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL_FATAL(kv_client_recv(c, &r), 0);
        CU_ASSERT_EQUAL(r.status, KV_ST_OK);
    }
    kv_client_close(c);
    CU_ASSERT_TRUE(key_exists("bakey"));
}

/* An empty password is refused as an option value (before: it silently
 * meant no authentication). */
static void test_limits_empty_password_is_refused(void)
{
    static const char *const args[] = {"--requirepass", "", NULL};
    struct kv_test_server e = {0};
    char *log;

    CU_ASSERT_NOT_EQUAL(kv_test_server_start(&e, args), 0);
    log = kv_test_server_log(&e);
    CU_ASSERT_FATAL(log != NULL);
    CU_ASSERT(strstr(log, "--requirepass") != NULL);
    free(log);
    unlink(e.log_path);
}

/* ---- printing never blocks ------------------------------------------------------- */
/* The server's stdout is a pipe nobody reads. Two hundred statistics tables
 * fill it many times over; the server drops what does not fit (counted),
 * keeps expiring keys, answers, and stops on SIGTERM (before: the main
 * thread blocked in write after ~100 tables, SIGTERM was ignored and the
 * expiry sweep stopped). */
static void test_limits_unread_stdout_blocks_nothing(void)
{
    char path[512], port[8], shm[64], logp[128];
    struct kv_set_opts ttl = {.ttl_ms = 200};
    struct kv_client *c = NULL;
    int out[2], logfd, status = 0, exited = 0;
    int64_t keys = -1, dropped;
    ssize_t n;
    uint16_t p = kv_test_free_port();
    pid_t pid;

    n = readlink("/proc/self/exe", path, sizeof(path) - 16);
    CU_ASSERT_FATAL(n > 0);
    path[n] = '\0';
    strcpy(strrchr(path, '/') + 1, "libevkv");
    snprintf(port, sizeof(port), "%u", p);
    snprintf(shm, sizeof(shm), "/libevkv-test-print-%d", (int)getpid());
    snprintf(logp, sizeof(logp), "/tmp/libevkv-test-print-%d.log", (int)getpid());
    CU_ASSERT_FATAL(pipe(out) == 0);
    pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        logfd = open(logp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(out[1], 1);
        dup2(logfd, 2);
        close(out[0]);
        execl(path, path, "--port", port, "--shm-name", shm, "--memory", "32m", (char *)NULL);
        _exit(127);
    }
    close(out[1]); /* out[0] stays open and is never read */
    for (int i = 0; i < 500 && kv_client_connect("127.0.0.1", p, 1000, &c) != 0; i++)
        usleep(10000);
    CU_ASSERT_PTR_NOT_NULL(c);
    for (int i = 0; i < 200; i++) {
        kill(pid, SIGRTMIN + 7);
        usleep(2000);
    }
    if (c) {
        char key[16];

        for (int i = 0; i < 2000; i++) {
            snprintf(key, sizeof(key), "ttl%d", i);
            CU_ASSERT_EQUAL(kv_client_set(c, key, strlen(key), "v", 1, &ttl, NULL), 0);
        }
        kv_client_close(c);
    }
    for (int i = 0; i < 50 && keys != 0; i++) { /* the sweep empties it within ~1 s */
        usleep(100000);
        keys = stat_of(p, "keys");
    }
    CU_ASSERT_EQUAL(keys, 0);
    dropped = stat_of(p, "print_dropped_bytes");
    CU_ASSERT(dropped > 0);
    kill(pid, SIGTERM);
    for (int i = 0; i < 500 && !exited; i++) {
        exited = waitpid(pid, &status, WNOHANG) == pid;
        if (!exited)
            usleep(10000);
    }
    CU_ASSERT(exited);
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    } else {
        CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    close(out[0]);
    shm_unlink(shm);
    unlink(logp);
}

/* ---- file descriptors ----------------------------------------------------------- */
struct spawned {
    pid_t pid;
    uint16_t port;
    char shm[64], log[128];
};

/* Starts bin/libevkv with RLIMIT_NOFILE soft/hard (0: unchanged) and extra
 * args; waits until it accepts. */
static void spawn(struct spawned *sp, rlim_t soft, rlim_t hard, const char *const *extra)
{
    static int seq;
    char path[512], port[8];
    const char *argv[32];
    int argc = 0;
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 16);

    CU_ASSERT_FATAL(n > 0);
    path[n] = '\0';
    strcpy(strrchr(path, '/') + 1, "libevkv");
    sp->port = kv_test_free_port();
    snprintf(port, sizeof(port), "%u", sp->port);
    snprintf(sp->shm, sizeof(sp->shm), "/libevkv-test-fd-%d-%d", (int)getpid(), seq);
    snprintf(sp->log, sizeof(sp->log), "/tmp/libevkv-test-fd-%d-%d.log", (int)getpid(), seq++);
    argv[argc++] = path;
    argv[argc++] = "--port";
    argv[argc++] = port;
    argv[argc++] = "--shm-name";
    argv[argc++] = sp->shm;
    argv[argc++] = "--memory";
    argv[argc++] = "32m";
    for (int i = 0; extra && extra[i] && argc < 30; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;
    sp->pid = fork();
    CU_ASSERT_FATAL(sp->pid >= 0);
    if (sp->pid == 0) {
        int fd = open(sp->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        if (soft) {
            struct rlimit rl = {.rlim_cur = soft, .rlim_max = hard};

            if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                _exit(126);
        }
        dup2(fd, 1);
        dup2(fd, 2);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        struct kv_client *c;

        if (kv_client_connect("127.0.0.1", sp->port, 1000, &c) == 0) {
            kv_client_close(c);
            return;
        }
        usleep(10000);
    }
    CU_FAIL("server did not start");
}

/* SIGTERM, reap, remove segment and log; returns the exit code. */
static int unspawn(struct spawned *sp, char **log)
{
    int status = 0;

    kill(sp->pid, SIGTERM);
    for (int i = 0; i < 1000 && waitpid(sp->pid, &status, WNOHANG) != sp->pid; i++)
        usleep(10000);
    if (kill(sp->pid, 0) == 0) {
        kill(sp->pid, SIGKILL);
        waitpid(sp->pid, &status, 0);
    }
    shm_unlink(sp->shm);
    if (log) {
        struct kv_test_server t = {0};

        snprintf(t.log_path, sizeof(t.log_path), "%s", sp->log);
        *log = kv_test_server_log(&t);
    }
    unlink(sp->log);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The lowest descriptor number pid has free: with the soft limit there,
 * its next accept fails with EMFILE. */
static long lowest_free_fd(pid_t pid)
{
    static unsigned char used[65536];
    char path[64];
    long i = 0;
    DIR *d;

    memset(used, 0, sizeof(used));
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    d = opendir(path);
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));) {
        long fd = atol(e->d_name);

        if (e->d_name[0] != '.' && fd >= 0 && fd < (long)sizeof(used))
            used[fd] = 1;
    }
    closedir(d);
    while (i < (long)sizeof(used) && used[i])
        i++;
    return i;
}

/* --max-conns above the descriptor limit: the soft limit is raised when
 * the hard one allows, else max-conns is lowered (and said), so the extra
 * connection is answered BUSY instead of hanging in the backlog. */
static void test_limits_max_conns_fits_the_descriptor_limit(void)
{
    static const char *const args[] = {"--max-conns", "1000", NULL};
    struct spawned sp;
    struct rlimit rl;
    char *log = NULL;
    int fds[300], n = 0, busy = 0;

    spawn(&sp, 256, 4096, args); /* raised: 256 -> what 1000 connections need */
    CU_ASSERT_EQUAL(prlimit(sp.pid, RLIMIT_NOFILE, NULL, &rl), 0);
    CU_ASSERT(rl.rlim_cur >= 1000 + 32 && rl.rlim_cur <= 4096);
    CU_ASSERT_EQUAL(unspawn(&sp, &log), 0);
    CU_ASSERT(log && strstr(log, "descriptor limit raised") != NULL);
    free(log);

    spawn(&sp, 256, 256, args); /* not allowed: lowered */
    for (n = 0; n < 300 && !busy; n++) {
        struct kv_frame f = {.version = 1, .opcode = 0, .request_id = 1};
        uint8_t frame[KV_FRAME_OVERHEAD], in[KV_FRAME_OVERHEAD];
        struct timeval tv = {.tv_sec = 2};
        struct kv_frame a;

        fds[n] = raw_connect(sp.port);
        setsockopt(fds[n], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        CU_ASSERT_FATAL(kv_frame_encode(&f, NULL, frame, sizeof(frame)) > 0);
        CU_ASSERT_FATAL(send(fds[n], frame, sizeof(frame), MSG_NOSIGNAL) == sizeof(frame));
        if (recv(fds[n], in, sizeof(in), MSG_WAITALL) != (ssize_t)sizeof(in)) {
            CU_FAIL("no answer: the connection hangs");
            n++;
            break;
        }
        busy = kv_frame_decode(in, sizeof(in), 0, 1, &a) > 0 && a.status == KV_ST_BUSY;
    }
    CU_ASSERT(busy);
    CU_ASSERT(n > 150 && n < 256); /* lowered to about 256 - what the server keeps */
    close_all(fds, n);
    CU_ASSERT_EQUAL(unspawn(&sp, &log), 0);
    CU_ASSERT(log && strstr(log, "needs") && strstr(log, "lowered to") != NULL);
    free(log);
}

/* Out of descriptors at run time (the limit lowered under the running
 * server): accept pauses and retries instead of spinning, the connections
 * wait in the backlog, and once descriptors are back they are all served. */
static void test_limits_out_of_descriptors_backs_off_then_serves(void)
{
    enum { N = 6 };
    struct spawned sp;
    struct kv_client *c0 = NULL;
    struct rlimit tight, old;
    struct kv_stats st;
    int64_t pauses = 0;
    int fds[N], answered = 0;
    char *log = NULL, in[64];

    spawn(&sp, 0, 0, NULL);
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", sp.port, 5000, &c0) == 0);
    CU_ASSERT_EQUAL(kv_client_ping(c0, "a", 1), 0);
    CU_ASSERT_EQUAL_FATAL(prlimit(sp.pid, RLIMIT_NOFILE, NULL, &old), 0);
    usleep(300000); /* spawn's readiness probe has been closed on the server's side too */
    tight = old;
    tight.rlim_cur = (rlim_t)lowest_free_fd(sp.pid); /* not one more */
    CU_ASSERT_EQUAL_FATAL(prlimit(sp.pid, RLIMIT_NOFILE, &tight, NULL), 0);
    for (int i = 0; i < N; i++) {
        fds[i] = raw_connect(sp.port); /* completes in the kernel's backlog */
        CU_ASSERT(send(fds[i], "PING\r\n", 6, MSG_NOSIGNAL) == 6);
    }
    usleep(500000);
    for (int i = 0; i < N; i++)
        answered += recv(fds[i], in, sizeof(in), MSG_DONTWAIT) > 0;
    CU_ASSERT_EQUAL(answered, 0);
    CU_ASSERT_EQUAL(kv_client_ping(c0, "still", 5), 0); /* the others are served */
    CU_ASSERT_EQUAL(kv_client_stats(c0, &st), 0);
    CU_ASSERT(kv_client_stats_find(&st, "accept_pauses", &pauses));
    kv_client_stats_free(&st);
    CU_ASSERT(pauses >= 2 && pauses <= 20); /* every 100 ms, not a spin */
    CU_ASSERT_EQUAL_FATAL(prlimit(sp.pid, RLIMIT_NOFILE, &old, NULL), 0);
    for (int i = 0; i < N; i++) {
        struct timeval tv = {.tv_sec = 2};
        ssize_t k;

        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        k = recv(fds[i], in, sizeof(in) - 1, 0);
        CU_ASSERT(k == 7 && memcmp(in, "+PONG\r\n", 7) == 0);
        close(fds[i]);
    }
    kv_client_close(c0);
    CU_ASSERT_EQUAL(unspawn(&sp, &log), 0);
    CU_ASSERT(log && strstr(log, "pausing accepts") != NULL);
    CU_ASSERT(log && strstr(log, "memory still held") == NULL);
    free(log);
}

/* ---- work bounded by the bytes received ------------------------------------------ */
static long status_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    long v = -1;
    size_t n = strlen(field);
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            v = atol(line + n + 1);
    fclose(f);
    return v;
}

/* Server CPU time (user + system), seconds. */
static double cpu_s(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* A 4 MiB DEL of 1-byte keys peaks at a few MiB more than its size (before:
 * protobuf-c copied every key: ~25x, 100+ MB). */
static void test_limits_del_of_tiny_keys_allocates_little(void)
{
    enum { N = (4 << 20) / 3 };
    struct kv_bytes *keys = malloc(N * sizeof(*keys));
    static const char alpha[] = "abcdefghijklmnopqrstuvwxyz";
    struct kv_client *c = NULL;
    struct spawned sp;
    uint64_t deleted = 99;
    long hwm0, hwm1;

    CU_ASSERT_FATAL(keys != NULL);
    for (size_t i = 0; i < N; i++) {
        keys[i].data = alpha + i % 26;
        keys[i].len = 1;
    }
    spawn(&sp, 0, 0, NULL);
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", sp.port, 20000, &c) == 0);
    CU_ASSERT_EQUAL(kv_client_set(c, "q", 1, "v", 1, NULL, NULL), 0);
    hwm0 = status_kib(sp.pid, "VmHWM");
    CU_ASSERT_EQUAL(kv_client_del(c, keys, N, &deleted), 0);
    CU_ASSERT_EQUAL(deleted, 1); /* "q"; the other letters are not there */
    hwm1 = status_kib(sp.pid, "VmHWM");
    fprintf(stderr, "  [VmHWM %ld -> %ld KiB] ", hwm0, hwm1);
    RSS_BOUND(hwm1 - hwm0 < 24 * 1024);
    kv_client_close(c);
    free(keys);
    CU_ASSERT_EQUAL(unspawn(&sp, NULL), 0);
}

/* A 4 MB RESP MGET trickled in 4 KiB pieces costs about what it costs sent
 * at once: the parser resumes where it stopped (before: every read parsed
 * the request from its start, 0.7 s against 0.1 s in a release build). */
static void test_limits_trickled_resp_request_costs_its_size(void)
{
    enum { KEYS = 4000000 / 7 };
    size_t len = 0, cap = KEYS * 7 + 64, got;
    char *req = malloc(cap), *in = malloc(KEYS * 8 + 64);
    double cpu[2];
    struct spawned sp;

    CU_ASSERT_FATAL(req && in);
    len = (size_t)snprintf(req, cap, "*%d\r\n$4\r\nMGET\r\n", KEYS + 1);
    for (int i = 0; i < KEYS; i++, len += 7)
        memcpy(req + len, "$1\r\nk\r\n", 7);
    spawn(&sp, 0, 0, NULL);
    for (int t = 0; t < 2; t++) {
        int fd = raw_connect(sp.port);
        size_t piece = t == 0 ? len : 4096;
        double c0 = cpu_s(sp.pid);
        struct timeval tv = {.tv_sec = 20};

        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        for (size_t off = 0; off < len; off += piece) {
            size_t n = len - off < piece ? len - off : piece;

            CU_ASSERT_EQUAL_FATAL(send(fd, req + off, n, MSG_NOSIGNAL), (ssize_t)n);
            if (piece < len)
                usleep(500); /* one read each */
        }
        /* every key is missing: "*N\r\n" then N x "$-1\r\n" */
        for (got = 0; got < (size_t)KEYS * 5;) {
            ssize_t k = recv(fd, in, KEYS * 8, 0);

            if (k <= 0)
                break;
            got += (size_t)k;
        }
        CU_ASSERT(got >= (size_t)KEYS * 5);
        cpu[t] = cpu_s(sp.pid) - c0;
        close(fd);
    }
    fprintf(stderr, "  [server CPU: at once %.2f s, in 4 KiB pieces %.2f s] ", cpu[0], cpu[1]);
    CU_ASSERT(cpu[1] < 1.5 * cpu[0] + 0.15);
    CU_ASSERT_EQUAL(unspawn(&sp, NULL), 0);
    free(req);
    free(in);
}

/* Eight clients that never read, against a 4 MiB budget whose per-connection
 * limits would let each hold 64 MiB: the server closes the largest ones and
 * keeps its memory near the budget, while a client that reads is served
 * throughout and never closed. */
static void test_limits_client_memory_budget_closes_the_largest(void)
{
    static const char *const args[] = {"--max-client-memory", "4m", "--max-output", "32m",
                                       "--output-hard-limit", "64m", NULL};
    struct kv_test_server b = {0};
    struct kv_client *healthy = NULL;
    struct kv_value v;
    int fds[8], closed, served = 0;
    long base, peak;
    double end;

    CU_ASSERT_FATAL(kv_test_server_start(&b, args) == 0);
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", b.port, 5000, &healthy) == 0);
    CU_ASSERT_EQUAL_FATAL(kv_client_set(healthy, "k", 1, "v", 1, NULL, NULL), 0);
    base = rss_anon_kib(b.pid);
    closed = never_read(b.port, b.pid, 8, 3.0, fds, &peak);
    CU_ASSERT(closed >= 1);
    /* the healthy client: served between the bursts, still connected */
    for (end = now_s() + 0.5; now_s() < end; served++) {
        CU_ASSERT_EQUAL_FATAL(kv_client_get(healthy, "k", 1, &v), 0);
        CU_ASSERT(v.len == 1 && memcmp(v.data, "v", 1) == 0);
        kv_client_value_free(&v);
    }
    CU_ASSERT(served > 10);
    CU_ASSERT(stat_of(b.port, "client_memory_closes") >= closed);
    CU_ASSERT(stat_of(b.port, "client_memory_bytes") <= 4 << 20);
    /* 4 MiB of budget, 4 MiB of buffer pool, some slack; unbounded, the eight
     * hold 8 x 64 MiB */
    fprintf(stderr, "  [budget: %d of 8 closed, RssAnon %ld -> peak %ld KiB] ", closed, base,
            peak);
    RSS_BOUND(peak - base < 24 * 1024);
    close_all(fds, 8);
    CU_ASSERT_EQUAL(kv_client_get(healthy, "k", 1, &v), 0);
    kv_client_value_free(&v);
    kv_client_close(healthy);
    CU_ASSERT_EQUAL(kv_test_server_stop(&b), 0);
}

static void start_dflt(void)
{
    if (dflt.pid <= 0)
        CU_ASSERT_FATAL(kv_test_server_start(&dflt, NULL) == 0);
}

/* Under the default options a client that never reads costs a few MiB
 * (before: up to 64 MiB of output plus 64 MiB in flight), and the memory
 * goes back to the system once it has gone. */
static void test_limits_client_that_never_reads_costs_little(void)
{
    int fd;
    long base, peak, after;

    start_dflt();
    base = rss_anon_kib(dflt.pid);
    CU_ASSERT_FATAL(base > 0);
    never_read(dflt.port, dflt.pid, 1, 2.0, &fd, &peak);
    close_all(&fd, 1);
    usleep(2500000); /* the server notices, frees, trims within a second */
    after = rss_anon_kib(dflt.pid);
    fprintf(stderr, "  [RssAnon %ld -> peak %ld -> %ld KiB] ", base, peak, after);
    RSS_BOUND(peak - base < 12 * 1024); /* the buffer pool keeps up to 4 MiB */
    RSS_BOUND(after - base < 6 * 1024);
    CU_ASSERT_EQUAL(stat_of(dflt.port, "client_memory_bytes") < 64 * 1024, 1);
}

/* Quiet connections hold no receive buffer: 200 of them cost less than one
 * 16 KiB buffer each would, once --recv-buf-keep (2 s) has passed since
 * their last request (before it, each keeps its empty buffer for the next
 * read, as Redis's query buffer); with --recv-buf-keep 0 at once. */
static void test_limits_idle_connections_hold_no_buffer(void)
{
    enum { N = 200 };
    static const char *const now_args[] = {"--recv-buf-keep", "0", NULL};
    struct kv_test_server now = {0};
    struct kv_client *c[N];
    int64_t mem;

    start_dflt();
    for (int i = 0; i < N; i++) {
        CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", dflt.port, 5000, &c[i]) == 0);
        CU_ASSERT_EQUAL(kv_client_ping(c[i], "x", 1), 0);
    }
    mem = stat_of(dflt.port, "client_memory_bytes");
    CU_ASSERT(mem >= N * 16 * 1024 && mem < N * 40 * 1024); /* kept for the next read */
    usleep(3500 * 1000); /* keep 2 s, swept every second */
    mem = stat_of(dflt.port, "client_memory_bytes");
    fprintf(stderr, "  [%d idle connections hold %lld bytes] ", N, (long long)mem);
    CU_ASSERT(mem >= 0 && mem < N * 1024 + 64 * 1024);
    for (int i = 0; i < N; i++)
        kv_client_close(c[i]);

    CU_ASSERT_FATAL(kv_test_server_start(&now, now_args) == 0);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", now.port, 5000, &c[i]) == 0);
        CU_ASSERT_EQUAL(kv_client_ping(c[i], "x", 1), 0);
    }
    mem = stat_of(now.port, "client_memory_bytes");
    CU_ASSERT(mem >= 0 && mem < N * 1024 + 64 * 1024);
    for (int i = 0; i < N; i++)
        kv_client_close(c[i]);
    CU_ASSERT_EQUAL(kv_test_server_stop(&now), 0);
}

/* Kept receive buffers never cost a connection its life: over
 * --max-client-memory they are given back before anyone is closed. 100
 * connections keep 1.6 MiB of empty buffers under a 1 MiB budget, and
 * every one is still served. */
static void test_limits_kept_buffers_go_before_closes(void)
{
    enum { N = 100 };
    static const char *const args[] = {"--max-client-memory", "1m", NULL};
    struct kv_test_server ks = {0};
    struct kv_client *c[N];

    CU_ASSERT_FATAL(kv_test_server_start(&ks, args) == 0);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", ks.port, 5000, &c[i]) == 0);
        CU_ASSERT_EQUAL(kv_client_ping(c[i], "x", 1), 0);
    }
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(kv_client_ping(c[i], "y", 1), 0);
    CU_ASSERT_EQUAL(stat_of(ks.port, "client_memory_closes"), 0);
    CU_ASSERT(stat_of(ks.port, "client_memory_bytes") <= 1 << 20);
    for (int i = 0; i < N; i++)
        kv_client_close(c[i]);
    CU_ASSERT_EQUAL(kv_test_server_stop(&ks), 0);
}

/* A header announcing a large body holds about what has arrived, not the
 * announced size (before: the whole 8 MiB at once, for --frame-timeout). */
static void test_limits_partial_frame_holds_what_arrived(void)
{
    static uint8_t junk[1000];
    struct kv_frame f = {.version = 1, .opcode = 0, .request_id = 9, .body_len = 8u << 20};
    uint8_t hdr[KV_FRAME_HDR];
    struct kv_client *c = NULL;
    int64_t mem;

    start_dflt();
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", dflt.port, 5000, &c) == 0);
    kv_frame_encode_header(&f, hdr);
    CU_ASSERT_EQUAL_FATAL(kv_client_send_raw(c, hdr, sizeof(hdr)), 0);
    CU_ASSERT_EQUAL_FATAL(kv_client_send_raw(c, junk, sizeof(junk)), 0);
    usleep(100000);
    mem = stat_of(dflt.port, "client_memory_bytes");
    CU_ASSERT(mem > 0 && mem < 256 * 1024);
    kv_client_close(c);
}

static void test_limits_exit_table_zero(void)
{
    char *log;

    if (dflt.pid > 0) {
        CU_ASSERT_EQUAL(kv_test_server_stop(&dflt), 0);
        log = kv_test_server_log(&dflt);
        CU_ASSERT_FATAL(log != NULL);
        CU_ASSERT(strstr(log, "memory still held") == NULL);
        CU_ASSERT(strstr(log, "client_memory_bytes 0\n") != NULL);
        free(log);
    }
    CU_ASSERT_EQUAL(kv_test_server_stop(&srv), 0);
    log = kv_test_server_log(&srv);
    CU_ASSERT_FATAL(log != NULL);
    CU_ASSERT(strstr(log, "memory still held") == NULL);
    CU_ASSERT(strstr(log, "connections_rejected 1") != NULL);
    CU_ASSERT(strstr(log, "output_limit_closes 1") != NULL);
    /* wrong passwords are logged with the peer, rate-limited */
    CU_ASSERT(strstr(log, "127.0.0.1:") != NULL && strstr(log, "wrong password") != NULL);
    CU_ASSERT(count_of(log, "wrong password") < 6);
    free(log);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("limits", suite_init, suite_clean);
    CU_add_test(s, "test_limits_max_conns_answers_busy_then_closes",
                test_limits_max_conns_answers_busy_then_closes);
    CU_add_test(s, "test_limits_unfinished_frame_is_dropped",
                test_limits_unfinished_frame_is_dropped);
    CU_add_test(s, "test_limits_idle_connection_is_closed", test_limits_idle_connection_is_closed);
    CU_add_test(s, "test_limits_small_body_before_auth", test_limits_small_body_before_auth);
    CU_add_test(s, "test_limits_client_that_never_reads_is_dropped",
                test_limits_client_that_never_reads_is_dropped);
    CU_add_test(s, "test_limits_binary_auth_pipeline_gets_three_guesses",
                test_limits_binary_auth_pipeline_gets_three_guesses);
    CU_add_test(s, "test_limits_resp_auth_pipeline_gets_three_guesses",
                test_limits_resp_auth_pipeline_gets_three_guesses);
    CU_add_test(s, "test_limits_command_right_after_auth_is_served",
                test_limits_command_right_after_auth_is_served);
    CU_add_test(s, "test_limits_empty_password_is_refused", test_limits_empty_password_is_refused);
    CU_add_test(s, "test_limits_unread_stdout_blocks_nothing",
                test_limits_unread_stdout_blocks_nothing);
    CU_add_test(s, "test_limits_max_conns_fits_the_descriptor_limit",
                test_limits_max_conns_fits_the_descriptor_limit);
    CU_add_test(s, "test_limits_out_of_descriptors_backs_off_then_serves",
                test_limits_out_of_descriptors_backs_off_then_serves);
    CU_add_test(s, "test_limits_del_of_tiny_keys_allocates_little",
                test_limits_del_of_tiny_keys_allocates_little);
    CU_add_test(s, "test_limits_trickled_resp_request_costs_its_size",
                test_limits_trickled_resp_request_costs_its_size);
    CU_add_test(s, "test_limits_client_memory_budget_closes_the_largest",
                test_limits_client_memory_budget_closes_the_largest);
    CU_add_test(s, "test_limits_client_that_never_reads_costs_little",
                test_limits_client_that_never_reads_costs_little);
    CU_add_test(s, "test_limits_idle_connections_hold_no_buffer",
                test_limits_idle_connections_hold_no_buffer);
    CU_add_test(s, "test_limits_kept_buffers_go_before_closes",
                test_limits_kept_buffers_go_before_closes);
    CU_add_test(s, "test_limits_partial_frame_holds_what_arrived",
                test_limits_partial_frame_holds_what_arrived);
    CU_add_test(s, "test_limits_exit_table_zero", test_limits_exit_table_zero);
    return kv_test_run_all();
}
