/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_unix.c -- the unix-domain listener (--unix, --unix-perm,
 * --no-tcp), end to end against the real server: kvclient test (every
 * opcode) and redis-cli -s over the socket, both protocols on one path, the
 * peer's pid and uid in CLIENT LIST and STATS, unix-only mode, a stale
 * socket file replaced and a live one refused, the file's mode (checked by
 * connecting as another user when the suite runs as root), the file removed
 * at exit, and unix clients counted against --max-conns. */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frame.h"
#include "kv_client.h"
#include "kv_err.h"
#include "kv_test_util.h"

static char bindir[PATH_MAX];
static int seq;

static int suite_init(void)
{
    ssize_t n = readlink("/proc/self/exe", bindir, sizeof(bindir) - 1);

    if (n <= 0)
        return -1;
    bindir[n] = '\0';
    *strrchr(bindir, '/') = '\0';
    return 0;
}

/* A fresh socket path of this process, nothing there yet. */
static void sock_path(struct kv_test_server *s)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->unix_path, sizeof(s->unix_path), "/tmp/libevkv-test-%d-u%d.sock", (int)getpid(),
             seq++);
    unlink(s->unix_path);
}

static int unix_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int tcp_connect(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends req and reads for up to 2 s, until want bytes came or the peer
 * closed (*closed = 1). Returns the bytes read (NUL-terminated in buf). */
static size_t exchange(int fd, const void *req, size_t reqlen, char *buf, size_t cap, size_t want,
                       int *closed)
{
    size_t len = 0;

    *closed = 0;
    if (reqlen && send(fd, req, reqlen, MSG_NOSIGNAL) != (ssize_t)reqlen)
        *closed = 1;
    while (len < want && len + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (poll(&p, 1, 2000) <= 0)
            break;
        n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0) {
            *closed = 1;
            break;
        }
        len += (size_t)n;
    }
    buf[len] = '\0';
    return len;
}

/* Runs a shell command; its exit code, and its stdout in out (may be NULL). */
static int run(const char *cmd, char *out, size_t cap)
{
    FILE *f = popen(cmd, "r");
    size_t len = 0;
    int st;

    if (!f)
        return -1;
    if (out) {
        len = fread(out, 1, cap - 1, f);
        out[len] = '\0';
    } else {
        char sink[4096];

        while (fread(sink, 1, sizeof(sink), f) > 0)
            ;
    }
    st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int file_mode(const char *path)
{
    struct stat st;

    if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode))
        return -1;
    return (int)(st.st_mode & 07777);
}

/* ---- the tests ------------------------------------------------------------------ */

static void test_unix_kvclient_test_every_opcode(void)
{
    static const char *const args[] = {"--requirepass", "pw", NULL};
    struct kv_test_server s;
    char cmd[PATH_MAX + 256], out[65536], *last;
    unsigned passed = 0, failed = 1;

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    snprintf(cmd, sizeof(cmd), "%s/kvclient -a pw -s %s test --allow-flush 2>&1", bindir,
             s.unix_path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "against unix socket"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "ok   AUTH with the right password answers OK"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "ok   FLUSH answers"));
    last = strstr(out, " passed, ");
    while (last && last > out && last[-1] != '\n')
        last--;
    CU_ASSERT_FATAL(last != NULL);
    CU_ASSERT_EQUAL(sscanf(last, "%u passed, %u failed", &passed, &failed), 2);
    CU_ASSERT(passed >= 80);
    CU_ASSERT_EQUAL(failed, 0);
    if (failed)
        fprintf(stderr, "\n%s\n", out);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

static void test_unix_redis_cli_and_client_list(void)
{
    struct kv_test_server s;
    char cmd[PATH_MAX + 512], out[8192], want[128];
    int fd, closed;

    CU_ASSERT_FATAL(system("command -v redis-cli >/dev/null") == 0);
    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    snprintf(cmd, sizeof(cmd), "redis-cli -s %s SET ux:k hello 2>&1", s.unix_path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_STRING_EQUAL(out, "OK\n");
    snprintf(cmd, sizeof(cmd), "redis-cli -s %s GET ux:k 2>&1", s.unix_path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_STRING_EQUAL(out, "hello\n");
    snprintf(cmd, sizeof(cmd), "redis-cli -s %s INCRBY ux:n 41 2>&1", s.unix_path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_STRING_EQUAL(out, "41\n");
    /* the binary client sees what RESP stored: one store, both protocols */
    snprintf(cmd, sizeof(cmd), "%s/kvclient -s %s get ux:k", bindir, s.unix_path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_STRING_EQUAL(out, "hello");

    /* CLIENT LIST on a connection of ours: our pid and uid, from SO_PEERCRED */
    fd = unix_connect(s.unix_path);
    CU_ASSERT_FATAL(fd >= 0);
    exchange(fd, "CLIENT LIST\r\n", 13, out, sizeof(out), 1, &closed);
    for (int i = 0; i < 20 && !strstr(out, "\r\n"); i++) {
        size_t have = strlen(out);
        exchange(fd, NULL, 0, out + have, sizeof(out) - have, 1, &closed);
    }
    snprintf(want, sizeof(want), "transport=unix pid=%d uid=%u\n", (int)getpid(),
             (unsigned)getuid());
    CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
    CU_ASSERT(out[0] == '$');
    if (!strstr(out, want))
        fprintf(stderr, "\n  want %s  got %s\n", want, out);
    close(fd);

    /* a TCP peer is listed with its address, and STATS counts both */
    fd = tcp_connect(s.port);
    CU_ASSERT_FATAL(fd >= 0);
    snprintf(cmd, sizeof(cmd), "redis-cli -s %s CLIENT LIST 2>&1", s.unix_path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "addr=127.0.0.1:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "transport=tcp"));
    snprintf(cmd, sizeof(cmd), "%s/kvclient -s %s stats", bindir, s.unix_path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "clients_tcp 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "clients_unix 1\n")); /* kvclient itself */
    snprintf(cmd, sizeof(cmd), "%s/kvclient -s %s stats --text", bindir, s.unix_path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "clients tcp 1, unix 1\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "transport=unix pid="));
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

/* A binary frame and a RESP command on two connections of the same path:
 * the first byte picks the protocol, as on TCP. */
static void test_unix_both_protocols_detected(void)
{
    static const char *const no_resp[] = {"--no-resp", NULL};
    struct kv_frame f = {.version = KV_FRAME_VERSION, .opcode = 0, .request_id = 77, .body_len = 4};
    struct kv_frame r;
    struct kv_test_server s;
    uint8_t req[KV_FRAME_OVERHEAD + 4];
    char out[4096];
    int fd, closed;
    size_t n;

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    CU_ASSERT_FATAL(kv_frame_encode(&f, (const uint8_t *)"abcd", req, sizeof(req)) ==
                    (ssize_t)sizeof(req));
    fd = unix_connect(s.unix_path);
    CU_ASSERT_FATAL(fd >= 0);
    n = exchange(fd, req, sizeof(req), out, sizeof(out), sizeof(req), &closed);
    CU_ASSERT_EQUAL(n, sizeof(req));
    CU_ASSERT_EQUAL(kv_frame_decode((const uint8_t *)out, n, 1024, 1, &r), (ssize_t)sizeof(req));
    CU_ASSERT_EQUAL(r.request_id, 77);
    CU_ASSERT_EQUAL(r.status, KV_ST_OK);
    CU_ASSERT(memcmp(out + KV_FRAME_HDR, "abcd", 4) == 0);
    close(fd);
    fd = unix_connect(s.unix_path);
    CU_ASSERT_FATAL(fd >= 0);
    exchange(fd, "PING\r\n", 6, out, sizeof(out), 7, &closed);
    CU_ASSERT_STRING_EQUAL(out, "+PONG\r\n");
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);

    /* --no-resp holds on the unix socket too: RESP is a bad frame, closed */
    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, no_resp) == 0);
    fd = unix_connect(s.unix_path);
    CU_ASSERT_FATAL(fd >= 0);
    exchange(fd, "PING\r\n", 6, out, sizeof(out), sizeof(out), &closed);
    CU_ASSERT_EQUAL(closed, 1);
    CU_ASSERT(strstr(out, "PONG") == NULL);
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

static void test_unix_only_mode(void)
{
    static const char *const args[] = {"--no-tcp", NULL};
    struct kv_test_server s;
    struct kv_client *c;
    char *log;
    int fd;

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    fd = tcp_connect(s.port); /* --port was passed, but nothing listens there */
    CU_ASSERT(fd < 0);
    if (fd >= 0)
        close(fd);
    CU_ASSERT_EQUAL(kv_client_connect(s.unix_path, 0, 2000, &c), 0);
    CU_ASSERT_EQUAL(kv_client_set(c, "uo:k", 4, "v", 1, NULL, NULL), 0);
    kv_client_close(c);
    log = kv_test_server_log(&s);
    CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "(no TCP)"));
    free(log);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    CU_ASSERT_EQUAL(access(s.unix_path, F_OK), -1); /* removed at exit */
}

static void test_unix_stale_socket_replaced_live_refused(void)
{
    struct kv_test_server a, b;
    struct kv_client *c;
    char cmd[PATH_MAX + 512], out[4096], *log;
    int fd;

    sock_path(&a);
    CU_ASSERT_FATAL(kv_test_server_start(&a, NULL) == 0);
    CU_ASSERT_EQUAL(file_mode(a.unix_path), 0700);

    /* a live server's socket is refused, with a message, and left alone */
    snprintf(cmd, sizeof(cmd),
             "%s/libevkv --port 0 --shm-name /libevkv-test-%d-uxb --memory 8m --unix %s 2>&1",
             bindir, (int)getpid(), a.unix_path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "another server is listening on it"));
    snprintf(cmd, sizeof(cmd), "/dev/shm/libevkv-test-%d-uxb", (int)getpid());
    unlink(cmd);
    CU_ASSERT_EQUAL(kv_client_connect(a.unix_path, 0, 2000, &c), 0);
    CU_ASSERT_EQUAL(kv_client_ping(c, "x", 1), 0);
    kv_client_close(c);

    /* kill -9 leaves the file behind; the next server replaces it */
    CU_ASSERT_EQUAL(kv_test_server_kill(&a, SIGKILL), 128 + SIGKILL);
    CU_ASSERT_EQUAL(file_mode(a.unix_path), 0700);
    fd = unix_connect(a.unix_path);
    CU_ASSERT(fd < 0 && errno == ECONNREFUSED);
    if (fd >= 0)
        close(fd);
    memset(&b, 0, sizeof(b));
    snprintf(b.unix_path, sizeof(b.unix_path), "%s", a.unix_path);
    snprintf(b.shm_name, sizeof(b.shm_name), "%s", a.shm_name); /* and the same store */
    CU_ASSERT_FATAL(kv_test_server_start(&b, NULL) == 0);
    log = kv_test_server_log(&b);
    CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "replaced the stale socket file"));
    free(log);
    CU_ASSERT_EQUAL(kv_client_connect(b.unix_path, 0, 2000, &c), 0);
    CU_ASSERT_EQUAL(kv_client_ping(c, "y", 1), 0);
    kv_client_close(c);
    CU_ASSERT_EQUAL(kv_test_server_stop(&b), 0);
    CU_ASSERT_EQUAL(access(b.unix_path, F_OK), -1);
}

static void test_unix_not_a_socket_untouched(void)
{
    char path[108], cmd[PATH_MAX + 512], out[4096];
    struct stat st;
    int fd;

    snprintf(path, sizeof(path), "/tmp/libevkv-test-%d-plain", (int)getpid());
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, "keep", 4), 4);
    close(fd);
    snprintf(cmd, sizeof(cmd),
             "%s/libevkv --port 0 --shm-name /libevkv-test-%d-uxp --memory 8m --unix %s 2>&1",
             bindir, (int)getpid(), path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "exists and is not a socket"));
    CU_ASSERT(stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 4);
    unlink(path);
    snprintf(cmd, sizeof(cmd), "/dev/shm/libevkv-test-%d-uxp", (int)getpid());
    unlink(cmd);
}

/* In a child running as uid 65534: 0 when it could connect, else errno. */
static int connect_as_nobody(const char *path)
{
    pid_t pid = fork();
    int st;

    if (pid == 0) {
        int fd;

        if (setgid(65534) != 0 || setuid(65534) != 0)
            _exit(250);
        fd = unix_connect(path);
        _exit(fd >= 0 ? 0 : errno);
    }
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

static void test_unix_permissions(void)
{
    static const char *const open_args[] = {"--unix-perm", "0777", NULL};
    struct kv_test_server s;

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    CU_ASSERT_EQUAL(file_mode(s.unix_path), 0700);
    if (getuid() == 0) /* another user may not connect to a 0700 socket */
        CU_ASSERT_EQUAL(connect_as_nobody(s.unix_path), EACCES);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, open_args) == 0);
    CU_ASSERT_EQUAL(file_mode(s.unix_path), 0777);
    if (getuid() == 0)
        CU_ASSERT_EQUAL(connect_as_nobody(s.unix_path), 0);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    if (getuid() != 0)
        fprintf(stderr, "(not root: connecting as another user not tried) ");
}

static void test_unix_counts_against_max_conns(void)
{
    static const char *const args[] = {"--max-conns", "2", NULL};
    struct kv_test_server s;
    struct kv_client *a, *b;
    struct kv_frame r;
    char out[256];
    int fd, closed;
    size_t n;

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    /* the start-up readiness probe holds a slot until the server has seen it close: under
     * load that can be after the first connect, which is then answered BUSY */
    for (int i = 0; i < 200; i++) {
        CU_ASSERT_FATAL(kv_client_connect(s.unix_path, 0, 2000, &a) == 0);
        if (kv_client_ping(a, "a", 1) == 0)
            break;
        kv_client_close(a);
        a = NULL;
        usleep(10000);
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", s.port, 2000, &b) == 0);
    CU_ASSERT_EQUAL(kv_client_ping(b, "b", 1), 0);
    /* one unix and one TCP connection: a third of either kind is BUSY */
    fd = unix_connect(s.unix_path);
    CU_ASSERT_FATAL(fd >= 0);
    n = exchange(fd, NULL, 0, out, sizeof(out), sizeof(out), &closed);
    CU_ASSERT_EQUAL(closed, 1);
    CU_ASSERT_EQUAL(kv_frame_decode((const uint8_t *)out, n, 64, 1, &r),
                    (ssize_t)KV_FRAME_OVERHEAD);
    CU_ASSERT_EQUAL(r.status, KV_ST_BUSY);
    close(fd);
    kv_client_close(b);
    /* the TCP slot freed: a unix client gets it */
    for (int i = 0; i < 100; i++) {
        CU_ASSERT_FATAL(kv_client_connect(s.unix_path, 0, 2000, &b) == 0);
        if (kv_client_ping(b, "c", 1) == 0)
            break;
        kv_client_close(b);
        b = NULL;
        usleep(10000);
    }
    CU_ASSERT_PTR_NOT_NULL(b);
    kv_client_close(b);
    kv_client_close(a);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

static void test_unix_bad_options(void)
{
    char cmd[PATH_MAX + 512], out[2048];
    static const char *const bad[] = {
        "--no-tcp",
        "--unix /tmp/x.sock --unix-perm 0999",
        "--unix /tmp/x.sock --unix-perm rw",
        "--unix ''",
        "--unix "
        "/tmp/"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaa",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(cmd, sizeof(cmd), "%s/libevkv --port 0 %s 2>&1", bindir, bad[i]);
        CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "Z error [server] ")); /* stamped, with a level */
    }
    snprintf(cmd, sizeof(cmd), "%s/libevkv --port 0 --no-tcp 2>&1", bindir);
    run(cmd, out, sizeof(out));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "--no-tcp needs --unix"));
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_unix_kvclient_test_every_opcode", test_unix_kvclient_test_every_opcode},
        {"test_unix_redis_cli_and_client_list", test_unix_redis_cli_and_client_list},
        {"test_unix_both_protocols_detected", test_unix_both_protocols_detected},
        {"test_unix_only_mode", test_unix_only_mode},
        {"test_unix_stale_socket_replaced_live_refused",
         test_unix_stale_socket_replaced_live_refused},
        {"test_unix_not_a_socket_untouched", test_unix_not_a_socket_untouched},
        {"test_unix_permissions", test_unix_permissions},
        {"test_unix_counts_against_max_conns", test_unix_counts_against_max_conns},
        {"test_unix_bad_options", test_unix_bad_options},
    };

    return kv_test_run_suite("unix", suite_init, NULL, tests, sizeof(tests) / sizeof(tests[0]));
}
