/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_ops.c -- what an operator sees, end to end, with the real
 * programs: a failed start leaves nothing behind, --port 0 needs a segment
 * name. Every server started here runs on a free loopback port with a
 * private segment and is stopped by pid; every segment is removed. */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <limits.h>
#include <regex.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kv_client.h"
#include "kv_test_util.h"

static char server_bin[PATH_MAX];
static char client_bin[PATH_MAX];
static char tmpdir[64];
static int seq;

static int suite_init(void)
{
    kv_test_bin_path("libevkv", server_bin, sizeof(server_bin));
    kv_test_bin_path("kvclient", client_bin, sizeof(client_bin));
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_ops.%d", (int)getpid());
    return mkdir(tmpdir, 0700) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A segment name private to this process and test. */
static void shm_name(char *buf, size_t cap)
{
    snprintf(buf, cap, "/libevkv-ops-%d-%d", (int)getpid(), seq++);
}

static int shm_exists(const char *name)
{
    char path[128];

    snprintf(path, sizeof(path), "/dev/shm%s", name);
    return access(path, F_OK) == 0;
}

static int file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* A socket bound and listening on a free loopback port: the port is busy. */
static int busy_port(uint16_t *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 4) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

static void test_ops_bad_bind_leaves_no_segment(void)
{
    char name[64], port[8], out[128];
    char *text;

    shm_name(name, sizeof(name));
    snprintf(port, sizeof(port), "%u", kv_test_free_port());
    snprintf(out, sizeof(out), "%s/badbind.out", tmpdir);
    const char *argv[] = {server_bin, "--bind", "not-an-address", "--port", port,
                          "--shm-name", name, "--memory", "8m", NULL};
    CU_ASSERT_EQUAL(kv_test_run(argv, out, 10000), 1);
    CU_ASSERT_FALSE(shm_exists(name));
    text = kv_test_slurp(out);
    CU_ASSERT_FATAL(text != NULL);
    CU_ASSERT(strstr(text, "not-an-address") != NULL);
    CU_ASSERT(strstr(text, "not an IPv4 address") != NULL);
    free(text);
    shm_unlink(name);
}

static void test_ops_busy_port_leaves_no_segment_nor_file(void)
{
    char name[64], port[8], out[128], data[128];
    uint16_t p = 0;
    int fd = busy_port(&p);
    char *text;

    CU_ASSERT_FATAL(fd >= 0);
    shm_name(name, sizeof(name));
    snprintf(port, sizeof(port), "%u", p);
    snprintf(out, sizeof(out), "%s/busy.out", tmpdir);
    const char *argv[] = {server_bin, "--port", port, "--shm-name", name, "--memory", "8m",
                          NULL};
    CU_ASSERT_EQUAL(kv_test_run(argv, out, 10000), 1);
    CU_ASSERT_FALSE(shm_exists(name));
    text = kv_test_slurp(out);
    CU_ASSERT_FATAL(text != NULL);
    CU_ASSERT(strstr(text, "Address already in use") != NULL);
    free(text);

    /* the same with a data file: the file is not created */
    snprintf(data, sizeof(data), "%s/busy.data", tmpdir);
    const char *argv2[] = {server_bin, "--port", port, "--data-file", data, "--memory", "8m",
                           NULL};
    CU_ASSERT_EQUAL(kv_test_run(argv2, out, 10000), 1);
    CU_ASSERT_FALSE(file_exists(data));
    close(fd);
    shm_unlink(name);
}

/* A log file that cannot be opened stops the start before the store. */
static void test_ops_bad_log_file_leaves_no_segment(void)
{
    char name[64], port[8], out[128];
    char *text;

    shm_name(name, sizeof(name));
    snprintf(port, sizeof(port), "%u", kv_test_free_port());
    snprintf(out, sizeof(out), "%s/badlog.out", tmpdir);
    const char *argv[] = {server_bin, "--port", port, "--shm-name", name, "--memory", "8m",
                          "--log-file", "/nonexistent-dir/x.log", NULL};
    CU_ASSERT_EQUAL(kv_test_run(argv, out, 10000), 1);
    CU_ASSERT_FALSE(shm_exists(name));
    text = kv_test_slurp(out);
    CU_ASSERT(text && strstr(text, "cannot open --log-file /nonexistent-dir/x.log: No such file") !=
                          NULL);
    free(text);
    shm_unlink(name);
}

static int every_line_stamped(const char *text, int *lines);

/* Lines written before the log is set up (a bad option, a --log-file that cannot be
 * opened) carry the timestamp and level of every other line. */
static void test_ops_early_errors_stamped(void)
{
    static const char *const bad[][2] = {
        {"--memory", "1x"}, {"--log-file", "/nonexistent-dir/x.log"}, {"--io-threads", "0"}};
    char name[64], port[8], out[128];
    char *text;
    int lines;

    shm_name(name, sizeof(name));
    snprintf(port, sizeof(port), "%u", kv_test_free_port());
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(out, sizeof(out), "%s/early%zu.out", tmpdir, i);
        const char *argv[] = {server_bin, "--port", port, "--shm-name", name, bad[i][0],
                              bad[i][1], NULL};
        CU_ASSERT(kv_test_run(argv, out, 10000) != 0);
        text = kv_test_slurp(out);
        CU_ASSERT_FATAL(text != NULL);
        CU_ASSERT(every_line_stamped(text, &lines));
        CU_ASSERT_EQUAL(lines, 1);
        CU_ASSERT(strstr(text, "Z error [server] ") != NULL);
        free(text);
        CU_ASSERT_FALSE(shm_exists(name));
    }
    shm_unlink(name);
}

/* A --rdb-file in a directory that is not there (or a directory itself) is refused at
 * start, before the store is touched, instead of at the first SAVE. */
static void test_ops_bad_rdb_file_refused_at_start(void)
{
    char name[64], port[8], out[128], want[256];
    char *text;

    shm_name(name, sizeof(name));
    snprintf(port, sizeof(port), "%u", kv_test_free_port());
    snprintf(out, sizeof(out), "%s/badrdb.out", tmpdir);
    const char *argv[] = {server_bin, "--port", port, "--shm-name", name, "--memory", "8m",
                          "--rdb-file", "/nonexistent-dir/dump.rdb", NULL};
    CU_ASSERT_EQUAL(kv_test_run(argv, out, 10000), 1);
    CU_ASSERT_FALSE(shm_exists(name));
    text = kv_test_slurp(out);
    CU_ASSERT(text && strstr(text, "--rdb-file /nonexistent-dir/dump.rdb: directory "
                                   "/nonexistent-dir: No such file or directory") != NULL);
    free(text);
    const char *argv2[] = {server_bin, "--port", port, "--shm-name", name, "--memory", "8m",
                           "--rdb-file", tmpdir, NULL};
    CU_ASSERT_EQUAL(kv_test_run(argv2, out, 10000), 1);
    CU_ASSERT_FALSE(shm_exists(name));
    text = kv_test_slurp(out);
    snprintf(want, sizeof(want), "--rdb-file %s: it is a directory", tmpdir);
    CU_ASSERT(text && strstr(text, want) != NULL);
    free(text);
    shm_unlink(name);
}

static void test_ops_port0_needs_a_segment_name(void)
{
    char out[128];
    char *text;

    snprintf(out, sizeof(out), "%s/port0.out", tmpdir);
    const char *argv[] = {server_bin, "--port", "0", "--memory", "8m", NULL};
    CU_ASSERT_EQUAL(kv_test_run(argv, out, 10000), 2);
    CU_ASSERT_FALSE(shm_exists("/libevkv-0"));
    text = kv_test_slurp(out);
    CU_ASSERT_FATAL(text != NULL);
    CU_ASSERT(strstr(text, "--port 0 needs --shm-name or --data-file") != NULL);
    free(text);
}

/* With a name, --port 0 runs: the start-up line gives the port it got. */
static void test_ops_port0_with_name_runs(void)
{
    char name[64], out[128];
    struct kv_client *c;
    char *text = NULL;
    const char *at;
    pid_t pid;
    int status, port = 0;

    shm_name(name, sizeof(name));
    snprintf(out, sizeof(out), "%s/port0ok.out", tmpdir);
    pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        dup2(fd, 1);
        dup2(fd, 2);
        execl(server_bin, server_bin, "--port", "0", "--shm-name", name, "--memory", "8m",
              (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1000 && port == 0; i++) {
        usleep(10000);
        free(text);
        text = kv_test_slurp(out);
        at = text ? strstr(text, "listening on 127.0.0.1:") : NULL;
        if (at)
            port = atoi(at + strlen("listening on 127.0.0.1:"));
    }
    free(text);
    CU_ASSERT(port > 0);
    if (port > 0 && kv_client_connect("127.0.0.1", (uint16_t)port, 5000, &c) == 0) {
        CU_ASSERT_EQUAL(kv_client_ping(c, "p0", 2), 0);
        kv_client_close(c);
    } else {
        CU_FAIL("no server on the logged port");
    }
    CU_ASSERT(shm_exists(name));
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    shm_unlink(name);
}

/* ---- logs ---------------------------------------------------------------- */

/* 1 when every line of text starts with a UTC timestamp and a level. */
static int every_line_stamped(const char *text, int *lines)
{
    regex_t re;
    const char *p = text;
    int ok = 1;

    *lines = 0;
    if (regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
                     "(error|warn|info|debug) \\[[a-z]+\\] ",
                REG_EXTENDED | REG_NOSUB) != 0)
        return 0;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char line[2048];

        snprintf(line, sizeof(line), "%.*s", (int)(n < sizeof(line) ? n : sizeof(line) - 1), p);
        if (regexec(&re, line, 0, NULL, 0) != 0) {
            fprintf(stderr, "unstamped log line: %s\n", line);
            ok = 0;
        }
        (*lines)++;
        p += n + (nl ? 1 : 0);
    }
    regfree(&re);
    return ok;
}

static int ping_port(uint16_t port)
{
    struct kv_client *c;
    int rc;

    if (kv_client_connect("127.0.0.1", port, 5000, &c) != 0)
        return -1;
    rc = kv_client_ping(c, "hi", 2);
    kv_client_close(c);
    return rc;
}

static int count(const char *text, const char *needle)
{
    int n = 0;

    for (const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static void test_ops_sighup_reopens_log_file_and_never_stops(void)
{
    struct kv_test_server s = {0};
    char logf[128], rotated[128];
    char *text;
    int lines;

    snprintf(logf, sizeof(logf), "%s/hup.log", tmpdir);
    snprintf(rotated, sizeof(rotated), "%s/hup.log.1", tmpdir);
    const char *args[] = {"--log-file", logf, NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    for (int i = 0; i < 3; i++) { /* a terminal closing, logrotate: never a stop */
        CU_ASSERT_EQUAL(kill(s.pid, SIGHUP), 0);
        usleep(50000);
        CU_ASSERT_EQUAL(ping_port(s.port), 0);
    }
    /* logrotate: rename, then SIGHUP; the next lines go to a new file */
    CU_ASSERT_EQUAL_FATAL(rename(logf, rotated), 0);
    CU_ASSERT_EQUAL(kill(s.pid, SIGHUP), 0);
    for (int i = 0; i < 200 && access(logf, F_OK) != 0; i++)
        usleep(10000);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);

    text = kv_test_slurp(rotated);
    CU_ASSERT_FATAL(text != NULL);
    CU_ASSERT(strstr(text, "listening on 127.0.0.1:") != NULL);
    CU_ASSERT_EQUAL(count(text, "SIGHUP: log file"), 3);
    CU_ASSERT(every_line_stamped(text, &lines));
    CU_ASSERT(lines >= 5);
    free(text);
    text = kv_test_slurp(logf);
    CU_ASSERT_FATAL(text != NULL);
    CU_ASSERT(strstr(text, "reopened") != NULL);
    CU_ASSERT(strstr(text, "stopping gracefully") != NULL);
    CU_ASSERT(strstr(text, "listening on") == NULL);
    CU_ASSERT(every_line_stamped(text, &lines));
    free(text);
    /* the statistics tables stay on stdout, not in the log file */
    text = kv_test_server_log(&s);
    CU_ASSERT_FATAL(text != NULL);
    CU_ASSERT(strstr(text, "exit table") != NULL);
    CU_ASSERT(strstr(text, "memory still held") == NULL);
    free(text);
}

/* Without --log-file the lines go to stderr, stamped all the same; SIGHUP
 * says it has nothing to reopen and the server carries on. */
static void test_ops_stderr_lines_stamped_sighup_harmless(void)
{
    struct kv_test_server s = {0};
    char *text, *p;
    int lines;

    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    CU_ASSERT_EQUAL(kill(s.pid, SIGHUP), 0);
    usleep(100000);
    CU_ASSERT_EQUAL(ping_port(s.port), 0);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    text = kv_test_server_log(&s);
    CU_ASSERT_FATAL(text != NULL);
    CU_ASSERT(strstr(text, "no --log-file to reopen; still running") != NULL);
    /* keep only the log lines (the tables are not log lines) */
    p = text;
    {
        char *out = text;

        while (*p) {
            char *nl = strchr(p, '\n');
            size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);

            if (p[0] >= '0' && p[0] <= '9' && n > 4 && p[4] == '-') {
                memmove(out, p, n);
                out += n;
            } else if (strstr(p, "[server]") && strstr(p, "[server]") < p + n) {
                memmove(out, p, n); /* an unstamped [server] line: must fail below */
                out += n;
            }
            p += n;
        }
        *out = '\0';
    }
    CU_ASSERT(every_line_stamped(text, &lines));
    CU_ASSERT(lines >= 3);
    free(text);
}

static int raw_connect(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads until the peer closes (or 5 s); returns the bytes read. */
static size_t read_to_close(int fd, char *buf, size_t cap)
{
    struct timeval tv = {.tv_sec = 5};
    size_t len = 0;
    ssize_t n;

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (len + 1 < cap && (n = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    return len;
}

static void test_ops_debug_logs_connections_and_protocol_errors(void)
{
    struct kv_test_server s = {0};
    char logf[128], buf[512], peer[64];
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    char *text;
    int fd, lines;

    snprintf(logf, sizeof(logf), "%s/debug.log", tmpdir);
    const char *args[] = {"--log-file", logf, "--log-level", "debug", NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    sleep(1); /* a fresh second of the rate limit */

    /* a RESP protocol error: the reason is logged, with the peer of the fd */
    fd = raw_connect(s.port);
    CU_ASSERT_FATAL(fd >= 0);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    snprintf(peer, sizeof(peer), "peer 127.0.0.1:%u", ntohs(sa.sin_port));
    CU_ASSERT(write(fd, "*1\r\n$abc\r\n", 11) == 11);
    read_to_close(fd, buf, sizeof(buf));
    CU_ASSERT(strstr(buf, "-ERR Protocol error") != NULL);
    close(fd);
    /* a binary frame with a bad crc */
    fd = raw_connect(s.port);
    CU_ASSERT_FATAL(fd >= 0);
    {
        /* magic, version 1, PING, id 7, no body, then a crc of 0 */
        unsigned char frame[28] = {0xCB, 0x4B, 0x56, 0x31, 1, 0, 1, 0, 7};

        CU_ASSERT(write(fd, frame, sizeof(frame)) == (ssize_t)sizeof(frame));
    }
    read_to_close(fd, buf, sizeof(buf));
    close(fd);
    usleep(100000);
    text = kv_test_slurp(logf);
    CU_ASSERT_FATAL(text != NULL);
    CU_ASSERT(strstr(text, peer) != NULL);
    CU_ASSERT(count(text, peer) == 2); /* open and close */
    CU_ASSERT(strstr(text, "RESP protocol error: ") != NULL);
    CU_ASSERT(strstr(text, "crc32 mismatch; answering and closing") != NULL);
    free(text);

    /* a burst of connections is rate-limited, and the drop is said */
    for (int i = 0; i < 300; i++) {
        fd = raw_connect(s.port);
        if (fd >= 0)
            close(fd);
    }
    usleep(1100000);
    CU_ASSERT_EQUAL(ping_port(s.port), 0); /* a debug line in a later second */
    usleep(100000);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    text = kv_test_slurp(logf);
    CU_ASSERT_FATAL(text != NULL);
    CU_ASSERT(strstr(text, "debug lines dropped (more than 100 a second)") != NULL);
    CU_ASSERT(count(text, "open (peer") < 300 + 3);
    CU_ASSERT(every_line_stamped(text, &lines));
    free(text);
}

/* The server's log once it holds needle (the start-up line is written just
 * after the threads start, so a first PING may be answered before it). */
static char *log_with(const struct kv_test_server *s, const char *needle)
{
    char *text = NULL;

    for (int i = 0; i < 300; i++) {
        free(text);
        text = kv_test_server_log(s);
        if (text && strstr(text, needle))
            break;
        usleep(10000);
    }
    return text;
}

/* The start-up line: where the store is, what was found, which options. */
/* --data-file and --shm-name both given (an --shm-name added to the unit's options):
 * the data file is the store, and the log says the name is not used. */
static void test_ops_shm_name_beside_data_file_warned(void)
{
    struct kv_test_server s = {0};
    char data[128], want[256];
    char *text;

    shm_name(s.shm_name, sizeof(s.shm_name));
    snprintf(data, sizeof(data), "%s/both.store", tmpdir);
    const char *args[] = {"--data-file", data, NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    text = log_with(&s, "listening on");
    CU_ASSERT_FATAL(text != NULL);
    snprintf(want, sizeof(want), "warn [server] --shm-name %s is not used: the store is "
             "--data-file %s", s.shm_name, data);
    CU_ASSERT(strstr(text, want) != NULL);
    free(text);
    CU_ASSERT_FALSE(shm_exists(s.shm_name));
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    unlink(data);
}

static void test_ops_startup_line_says_store_state_and_options(void)
{
    struct kv_test_server s = {0};
    struct kv_client *c;
    char want[256];
    char *text;

    shm_name(s.shm_name, sizeof(s.shm_name));
    const char *args[] = {"--eviction", "lru", "--max-conns", "77", NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    text = log_with(&s, "listening on");
    CU_ASSERT_FATAL(text != NULL);
    snprintf(want, sizeof(want), "store /dev/shm%s (shared memory, lost at reboot, 32 MiB): "
             "created empty", s.shm_name);
    CU_ASSERT(strstr(text, want) != NULL);
    CU_ASSERT(strstr(text, "--memory 32m") != NULL);
    CU_ASSERT(strstr(text, "--eviction lru") != NULL);
    CU_ASSERT(strstr(text, "--max-conns 77") != NULL);
    CU_ASSERT(strstr(text, "--max-body") == NULL); /* a default is not listed */
    free(text);
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", s.port, 5000, &c) == 0);
    for (int i = 0; i < 5; i++) {
        char k[8];

        snprintf(k, sizeof(k), "k%d", i);
        CU_ASSERT(kv_client_set(c, k, strlen(k), "v", 1, NULL, NULL) == 0);
    }
    kv_client_close(c);
    /* a clean stop, then a start on the same segment: kept */
    CU_ASSERT_EQUAL(kv_test_server_kill(&s, SIGTERM), 0);
    s.port = 0;
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    text = log_with(&s, "listening on");
    CU_ASSERT(text && strstr(text, "kept 5 keys from a clean stop") != NULL);
    free(text);
    /* kill -9, then a start: recovered */
    kv_test_server_kill(&s, SIGKILL);
    s.port = 0;
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    text = log_with(&s, "listening on");
    CU_ASSERT(text && strstr(text, "recovered after an unclean stop, 5 keys kept") != NULL);
    free(text);
    /* flushed, stopped, started: found empty */
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", s.port, 5000, &c) == 0);
    CU_ASSERT(kv_client_flush_all(c, NULL) == 0);
    kv_client_close(c);
    CU_ASSERT_EQUAL(kv_test_server_kill(&s, SIGTERM), 0);
    s.port = 0;
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    text = log_with(&s, "listening on");
    CU_ASSERT(text && strstr(text, "): found empty") != NULL);
    free(text);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

/* ---- kvclient ---------------------------------------------------------------- */

/* Runs kvclient with a shell command line; stdout+stderr into out (may be
 * NULL). Returns the exit code. */
static int kvclient(const char *args, const char *out)
{
    char cmd[PATH_MAX + 1024];
    int st;

    snprintf(cmd, sizeof(cmd), "%s %s > %s 2>&1", client_bin, args, out ? out : "/dev/null");
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* kvclient's exit code, and its output must contain want. */
static void expect_kvclient(const char *args, int code, const char *want)
{
    char out[128];
    char *text;
    int rc;

    snprintf(out, sizeof(out), "%s/kvclient.out", tmpdir);
    rc = kvclient(args, out);
    text = kv_test_slurp(out);
    if (rc != code || !text || (want && !strstr(text, want)))
        fprintf(stderr, "kvclient %s: exit %d (want %d), output: %s\n", args, rc, code,
                text ? text : "(none)");
    CU_ASSERT_EQUAL(rc, code);
    CU_ASSERT(text && (!want || strstr(text, want)));
    free(text);
}

static void test_ops_kvclient_validates_its_arguments(void)
{
    char args[128], want[128];
    uint16_t closed = kv_test_free_port();

    expect_kvclient("-p 99999 ping", 2, "bad -p '99999': a port number 1-65535");
    expect_kvclient("-p abc ping", 2, "bad -p 'abc'");
    expect_kvclient("-p 0 ping", 2, "bad -p '0'");
    expect_kvclient("-p -5 ping", 2, "bad -p '-5'");
    expect_kvclient("-t 0 ping", 2, "bad -t '0': a timeout in ms");
    expect_kvclient("-t 10x ping", 2, "bad -t '10x'");
    expect_kvclient("-h '' ping", 2, "bad -h ''");
    /* an empty or over-long unix path: refused, not "./" nor a TCP host name */
    expect_kvclient("-s '' ping", 2, "bad -s '': a unix socket path of 1-107 bytes");
    expect_kvclient("-s aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ping", 2,
                    "a unix socket path of 1-107 bytes");
    expect_kvclient("-p", 2, "-p needs a value");
    expect_kvclient("--version", 0, "kvclient " KV_VERSION);
    snprintf(args, sizeof(args), "-p %u ping", closed);
    snprintf(want, sizeof(want), "cannot connect to 127.0.0.1:%u: Connection refused", closed);
    expect_kvclient(args, 2, want);
    snprintf(args, sizeof(args), "-h nosuch.invalid -p %u ping", closed);
    snprintf(want, sizeof(want), "cannot connect to nosuch.invalid:%u: 'nosuch.invalid' is not",
             closed);
    expect_kvclient(args, 2, want);
}

/* A listening socket that never answers: -t bounds the wait, and the
 * message names host:port and the timeout. */
static void test_ops_kvclient_timeout_names_server(void)
{
    char args[128], want[128];
    uint16_t p = 0;
    int fd = busy_port(&p);
    struct timespec t0, t1;

    CU_ASSERT_FATAL(fd >= 0);
    snprintf(args, sizeof(args), "-p %u -t 300 get k", p);
    snprintf(want, sizeof(want), "get (127.0.0.1:%u): no answer within 300 ms (-t)", p);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    expect_kvclient(args, 2, want);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CU_ASSERT((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 3000);
    close(fd);
}

static void test_ops_kvclient_exit_codes_and_mget_quoting(void)
{
    struct kv_test_server s = {0};
    char args[256], want[128], out[128];
    char *text;

    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    snprintf(args, sizeof(args), "-p %u set k v", s.port);
    expect_kvclient(args, 0, "1");
    /* condition false: 1, like NOT_FOUND */
    snprintf(args, sizeof(args), "-p %u set k w --nx", s.port);
    expect_kvclient(args, 1, "EXISTS");
    snprintf(args, sizeof(args), "-p %u set k w --cas 999", s.port);
    expect_kvclient(args, 1, "EXISTS");
    snprintf(args, sizeof(args), "-p %u set nokey w --cas 1", s.port);
    expect_kvclient(args, 1, "NOT_FOUND");
    snprintf(args, sizeof(args), "-p %u get nokey", s.port);
    expect_kvclient(args, 1, "NOT_FOUND");
    /* an error: 2, naming the server */
    snprintf(args, sizeof(args), "-p %u incr k", s.port);
    snprintf(want, sizeof(want), "incr (127.0.0.1:%u): NOT_A_NUMBER", s.port);
    expect_kvclient(args, 2, want);

    /* mget: quoted values, (nil) for a missing key, "" for an empty one */
    snprintf(args, sizeof(args), "-p %u set e ''", s.port);
    expect_kvclient(args, 0, NULL);
    snprintf(args, sizeof(args), "-p %u set q \"$(printf 'a\\nb\"c\\\\d')\"", s.port);
    expect_kvclient(args, 0, NULL);
    snprintf(args, sizeof(args), "-p %u set b \"$(printf 'x\\001\\377y')\"", s.port);
    expect_kvclient(args, 0, NULL);
    snprintf(out, sizeof(out), "%s/mget.out", tmpdir);
    snprintf(args, sizeof(args), "-p %u mget e q missing b k", s.port);
    CU_ASSERT_EQUAL(kvclient(args, out), 1); /* a key was missing */
    text = kv_test_slurp(out);
    CU_ASSERT_FATAL(text != NULL);
    CU_ASSERT_STRING_EQUAL(text, "\"\"\n\"a\\nb\\\"c\\\\d\"\n(nil)\n\"x\\x01\\xffy\"\n\"v\"\n");
    free(text);
    snprintf(args, sizeof(args), "-p %u mget e k", s.port);
    expect_kvclient(args, 0, "\"\"\n\"v\"\n");
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

/* A request above --max-body gets an answer naming the limit, on both
 * protocols, before the connection closes; kvclient prints it. */
static void test_ops_request_over_max_body_gets_the_limit(void)
{
    struct kv_test_server s = {0};
    char args[256], path[128], buf[1024];
    static char big[200000];
    FILE *f;
    int fd;
    size_t off = 0;

    const char *sargs[] = {"--max-body", "64k", NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, sargs) == 0);
    memset(big, 'x', sizeof(big));
    snprintf(path, sizeof(path), "%s/big.bin", tmpdir);
    f = fopen(path, "wb");
    CU_ASSERT_FATAL(f != NULL);
    fwrite(big, 1, sizeof(big), f);
    fclose(f);
    for (int i = 0; i < 3; i++) { /* never a reset instead of the answer */
        snprintf(args, sizeof(args), "-p %u set big - < %s", s.port, path);
        expect_kvclient(args, 2, "TOO_LARGE: request body of 200");
        expect_kvclient(args, 2, "above the server's --max-body of 65536 bytes");
    }
    /* RESP: the whole request is sent, then the error is read */
    fd = raw_connect(s.port);
    CU_ASSERT_FATAL(fd >= 0);
    snprintf(buf, sizeof(buf), "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%zu\r\n", sizeof(big));
    CU_ASSERT(write(fd, buf, strlen(buf)) == (ssize_t)strlen(buf));
    while (off < sizeof(big)) {
        ssize_t n = write(fd, big + off, sizeof(big) - off);

        if (n <= 0)
            break;
        off += (size_t)n;
    }
    CU_ASSERT_EQUAL(off, sizeof(big)); /* the server drained it: no reset */
    read_to_close(fd, buf, sizeof(buf));
    close(fd);
    CU_ASSERT(strstr(buf, "-ERR Protocol error: ") == buf);
    CU_ASSERT(strstr(buf, "65536 bytes per request (--max-body)") != NULL);
    CU_ASSERT_EQUAL(ping_port(s.port), 0);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

/* ---- systemd readiness ------------------------------------------------------- */

/* A datagram socket at path (or, with a leading '@', in the abstract
 * namespace), as systemd's NOTIFY_SOCKET. */
static int notify_socket(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    struct timeval tv = {.tv_sec = 20};
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);

    memcpy(sa.sun_path, path, n);
    if (path[0] == '@')
        sa.sun_path[0] = '\0';
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

static pid_t start_notified(const char *sock, const char *name, uint16_t port, const char *out)
{
    char portstr[8];
    pid_t pid;

    snprintf(portstr, sizeof(portstr), "%u", port);
    pid = fork();
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0600);

        dup2(fd, 1);
        dup2(fd, 2);
        setenv("NOTIFY_SOCKET", sock, 1);
        execl(server_bin, server_bin, "--port", portstr, "--shm-name", name, "--memory", "8m",
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* READY=1 comes once the store is recovered and the port listens: at the
 * moment it arrives (nothing polled the server before), a GET of a key
 * written before a kill -9 answers. Both socket kinds systemd uses. */
static void test_ops_sd_notify_ready_after_recovery_and_listen(void)
{
    static const char *const kinds[] = {"path", "abstract"};

    for (int k = 0; k < 2; k++) {
        char sock[128], name[64], out[128], msg[512], want[64];
        uint16_t port = kv_test_free_port();
        struct kv_client *c;
        struct kv_value v = {0};
        pid_t pid;
        ssize_t n;
        int fd, status;

        if (k == 0)
            snprintf(sock, sizeof(sock), "%s/notify.sock", tmpdir);
        else
            snprintf(sock, sizeof(sock), "@libevkv-test-notify-%d", (int)getpid());
        fd = notify_socket(sock);
        CU_ASSERT_FATAL(fd >= 0);
        shm_name(name, sizeof(name));
        snprintf(out, sizeof(out), "%s/notify.out", tmpdir);
        /* a first server writes a key and is killed */
        pid = start_notified(sock, name, port, out);
        n = recv(fd, msg, sizeof(msg) - 1, 0);
        CU_ASSERT_FATAL(n > 0);
        CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", port, 5000, &c) == 0);
        CU_ASSERT(kv_client_set(c, "durable", 7, kinds[k], strlen(kinds[k]), NULL, NULL) == 0);
        kv_client_close(c);
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);

        /* the second one recovers it; READY says so only when it can serve */
        pid = start_notified(sock, name, port, out);
        n = recv(fd, msg, sizeof(msg) - 1, 0);
        CU_ASSERT_FATAL(n > 0);
        msg[n] = '\0';
        CU_ASSERT(strstr(msg, "READY=1\n") == msg);
        snprintf(want, sizeof(want), "MAINPID=%d\n", (int)pid);
        CU_ASSERT(strstr(msg, want) != NULL);
        CU_ASSERT(strstr(msg, "STATUS=listening on 127.0.0.1:") != NULL);
        CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", port, 5000, &c) == 0);
        CU_ASSERT(kv_client_get(c, "durable", 7, &v) == 0);
        CU_ASSERT(v.found && strcmp((char *)v.data, kinds[k]) == 0);
        kv_client_value_free(&v);
        kv_client_close(c);
        /* and STOPPING=1 at a graceful stop */
        kill(pid, SIGTERM);
        n = recv(fd, msg, sizeof(msg) - 1, 0);
        CU_ASSERT(n > 0);
        if (n > 0) {
            msg[n] = '\0';
            CU_ASSERT(strstr(msg, "STOPPING=1") == msg);
        }
        waitpid(pid, &status, 0);
        CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        close(fd);
        if (k == 0)
            unlink(sock);
        shm_unlink(name);
    }
}

/* ---- README's twemproxy example ---------------------------------------------- */

/* Replaces the first "from" in *text by "to" (realloc'd); 0 when found. */
static int replace(char **text, const char *from, const char *to)
{
    char *at = strstr(*text, from), *out;
    size_t head, n;

    if (!at)
        return -1;
    head = (size_t)(at - *text);
    n = strlen(*text) - strlen(from) + strlen(to);
    out = malloc(n + 1);
    if (!out)
        return -1;
    memcpy(out, *text, head);
    strcpy(out + head, to);
    strcat(out, at + strlen(from));
    free(*text);
    *text = out;
    return 0;
}

static long long dbsize(uint16_t port)
{
    char cmd[128];
    FILE *p;
    long long n = -1;

    snprintf(cmd, sizeof(cmd), "redis-cli -p %u DBSIZE", port);
    p = popen(cmd, "r");
    if (p) {
        if (fscanf(p, "%lld", &n) != 1)
            n = -1;
        pclose(p);
    }
    return n;
}

/* The kv.yml block of README, run as it is (only its three port numbers
 * changed to free ones): 100 keys spread over both instances. */
static void test_ops_readme_twemproxy_example_shards(void)
{
    struct kv_test_server a = {0}, b = {0};
    char *readme = kv_test_slurp(KV_SOURCE_DIR "/README.md"), *yml, *start, *end;
    char conf[128], to[32], cmd[512], sport[8];
    uint16_t pport = kv_test_free_port(), stport = kv_test_free_port();
    long long na, nb;
    pid_t proxy;
    FILE *f;
    int up = 0;

    CU_ASSERT_FATAL(system("command -v nutcracker >/dev/null && command -v redis-cli "
                           ">/dev/null") == 0);
    CU_ASSERT_FATAL(readme != NULL);
    start = strstr(readme, "```yaml\n# kv.yml\n");
    CU_ASSERT_FATAL(start != NULL);
    start += strlen("```yaml\n");
    end = strstr(start, "```");
    CU_ASSERT_FATAL(end != NULL);
    yml = strndup(start, (size_t)(end - start));
    free(readme);
    CU_ASSERT_FATAL(kv_test_server_start(&a, NULL) == 0);
    CU_ASSERT_FATAL(kv_test_server_start(&b, NULL) == 0);
    snprintf(to, sizeof(to), "127.0.0.1:%u", pport);
    CU_ASSERT_FATAL(replace(&yml, "127.0.0.1:22121", to) == 0);
    snprintf(to, sizeof(to), "127.0.0.1:%u:1", a.port);
    CU_ASSERT_FATAL(replace(&yml, "127.0.0.1:7379:1", to) == 0);
    snprintf(to, sizeof(to), "127.0.0.1:%u:1", b.port);
    CU_ASSERT_FATAL(replace(&yml, "127.0.0.1:7380:1", to) == 0);
    /* nothing else in it may point at a default port */
    CU_ASSERT(strstr(yml, ":7379") == NULL && strstr(yml, ":7380") == NULL);
    snprintf(conf, sizeof(conf), "%s/kv.yml", tmpdir);
    f = fopen(conf, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(yml, f);
    fclose(f);
    free(yml);
    snprintf(sport, sizeof(sport), "%u", stport);
    proxy = fork();
    if (proxy == 0) {
        int fd = open("/dev/null", O_WRONLY);

        dup2(fd, 1);
        dup2(fd, 2);
        execlp("nutcracker", "nutcracker", "-c", conf, "-s", sport, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500 && !up; i++) {
        int fd = raw_connect(pport);

        up = fd >= 0;
        if (fd >= 0)
            close(fd);
        else
            usleep(10000);
    }
    CU_ASSERT(up);
    snprintf(cmd, sizeof(cmd),
             "for i in $(seq 1 100); do echo \"SET key:$i v$i\"; done | redis-cli -p %u | "
             "grep -c '^OK$' | grep -qx 100 && redis-cli -p %u GET key:77 | grep -qx v77",
             pport, pport);
    CU_ASSERT_EQUAL(system(cmd), 0);
    na = dbsize(a.port);
    nb = dbsize(b.port);
    fprintf(stderr, "README twemproxy example: %lld / %lld keys\n", na, nb);
    CU_ASSERT_EQUAL(na + nb, 100);
    CU_ASSERT(na >= 20 && nb >= 20); /* both instances hold a real share */
    kill(proxy, SIGTERM);
    waitpid(proxy, NULL, 0);
    CU_ASSERT_EQUAL(kv_test_server_stop(&a), 0);
    CU_ASSERT_EQUAL(kv_test_server_stop(&b), 0);
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_ops_bad_bind_leaves_no_segment", test_ops_bad_bind_leaves_no_segment},
        {"test_ops_busy_port_leaves_no_segment_nor_file",
         test_ops_busy_port_leaves_no_segment_nor_file},
        {"test_ops_bad_log_file_leaves_no_segment", test_ops_bad_log_file_leaves_no_segment},
        {"test_ops_early_errors_stamped", test_ops_early_errors_stamped},
        {"test_ops_bad_rdb_file_refused_at_start", test_ops_bad_rdb_file_refused_at_start},
        {"test_ops_port0_needs_a_segment_name", test_ops_port0_needs_a_segment_name},
        {"test_ops_port0_with_name_runs", test_ops_port0_with_name_runs},
        {"test_ops_sighup_reopens_log_file_and_never_stops",
         test_ops_sighup_reopens_log_file_and_never_stops},
        {"test_ops_stderr_lines_stamped_sighup_harmless",
         test_ops_stderr_lines_stamped_sighup_harmless},
        {"test_ops_debug_logs_connections_and_protocol_errors",
         test_ops_debug_logs_connections_and_protocol_errors},
        {"test_ops_startup_line_says_store_state_and_options",
         test_ops_startup_line_says_store_state_and_options},
        {"test_ops_shm_name_beside_data_file_warned", test_ops_shm_name_beside_data_file_warned},
        {"test_ops_kvclient_validates_its_arguments", test_ops_kvclient_validates_its_arguments},
        {"test_ops_kvclient_timeout_names_server", test_ops_kvclient_timeout_names_server},
        {"test_ops_kvclient_exit_codes_and_mget_quoting",
         test_ops_kvclient_exit_codes_and_mget_quoting},
        {"test_ops_request_over_max_body_gets_the_limit",
         test_ops_request_over_max_body_gets_the_limit},
        {"test_ops_sd_notify_ready_after_recovery_and_listen",
         test_ops_sd_notify_ready_after_recovery_and_listen},
        {"test_ops_readme_twemproxy_example_shards", test_ops_readme_twemproxy_example_shards},
    };

    return kv_test_run_suite("ops", suite_init, suite_clean, tests,
                             sizeof(tests) / sizeof(tests[0]));
}
