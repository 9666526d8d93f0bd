/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_bench.c -- suite of the load engine behind `kvclient bench`:
 * the request encoders byte for byte (RESP, memcache) and through the frame
 * codec (binary); the answer parsers on canned answers of the three
 * protocols, with every truncation of each answer; then bin/kvclient bench
 * briefly with --protocol binary and resp against a real libevkv (no
 * errors, no misses after population; errors counted when the server
 * requires AUTH), and with all three protocols against bin/echo_server.
 * memcached itself is not started here (it is not a build dependency): the
 * memcache side is covered by the canned answers and by echo_server's
 * memcache answers; bench/compare.sh drives the real memcached. */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "frame.h"
#include "kv_bench.h"
#include "kv_call.h"
#include "kv_client.h"
#include "kv_err.h"
#include "kv_test_util.h"

static struct kv_test_server srv, srv_auth;
static char bindir[PATH_MAX - 32];
static pid_t echo_pid = -1;
static uint16_t echo_port;
static char echo_unix[108];

static int wait_port(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < 100; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), ok;

        ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (fd >= 0)
            close(fd);
        if (ok)
            return 0;
        usleep(50000);
    }
    return -1;
}

static int suite_init(void)
{
    static const char *const auth_args[] = {"--requirepass", "pw", NULL};
    ssize_t n = readlink("/proc/self/exe", bindir, sizeof(bindir) - 1);
    char path[PATH_MAX], port[16];

    if (n <= 0)
        return -1;
    bindir[n] = '\0';
    *strrchr(bindir, '/') = '\0';
    memset(&srv, 0, sizeof(srv));
    memset(&srv_auth, 0, sizeof(srv_auth));
    /* srv listens on a unix socket too, and srv_auth on one of its own */
    snprintf(srv.unix_path, sizeof(srv.unix_path), "/tmp/libevkv-test-%d-bench.sock",
             (int)getpid());
    snprintf(srv_auth.unix_path, sizeof(srv_auth.unix_path), "/tmp/libevkv-test-%d-bencha.sock",
             (int)getpid());
    snprintf(echo_unix, sizeof(echo_unix), "/tmp/libevkv-test-%d-echo.sock", (int)getpid());
    if (kv_test_server_start(&srv, NULL) != 0 || kv_test_server_start(&srv_auth, auth_args) != 0)
        return -1;
    echo_port = kv_test_free_port();
    snprintf(path, sizeof(path), "%s/echo_server", bindir);
    snprintf(port, sizeof(port), "%u", echo_port);
    echo_pid = fork();
    if (echo_pid == 0) {
        freopen("/dev/null", "w", stderr);
        execl(path, path, "-p", port, "-s", echo_unix, "-d", "100", (char *)NULL);
        _exit(127);
    }
    return echo_pid > 0 && wait_port(echo_port) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    if (srv.pid > 0)
        kv_test_server_stop(&srv);
    if (srv_auth.pid > 0)
        kv_test_server_stop(&srv_auth);
    if (echo_pid > 0) {
        kill(echo_pid, SIGTERM);
        waitpid(echo_pid, NULL, 0);
    }
    return 0;
}

static const uint8_t val3[] = "abc";

static struct kv_bench_opts opts(enum kv_bench_proto p)
{
    struct kv_bench_opts o = {.proto = p, .value = val3, .value_len = 3, .mget_keys = 10};

    return o;
}

/* ---- encoding ------------------------------------------------------------------------ */

static void expect_enc(enum kv_bench_proto p, enum kv_bench_op op, unsigned nkeys, const char *want,
                       unsigned want_units)
{
    struct kv_bench_opts o = opts(p);
    struct kv_bench_req q = {.op = op, .nkeys = nkeys, .keys = {42, 7}};
    uint8_t buf[1024];
    unsigned units = 0;
    size_t n;

    CU_ASSERT_FATAL(kv_bench_request_max(&o) <= sizeof(buf));
    n = kv_bench_encode(&o, &q, 1, buf, &units);
    CU_ASSERT_EQUAL(n, strlen(want));
    CU_ASSERT(n == strlen(want) && memcmp(buf, want, n) == 0);
    CU_ASSERT(n <= kv_bench_request_max(&o));
    CU_ASSERT_EQUAL(units, want_units);
}

static void test_bench_resp_requests_are_exact(void)
{
    expect_enc(KV_BENCH_RESP, KV_BENCH_GET, 1, "*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000042\r\n", 1);
    expect_enc(KV_BENCH_RESP, KV_BENCH_SET, 1,
               "*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000042\r\n$3\r\nabc\r\n", 1);
    expect_enc(KV_BENCH_RESP, KV_BENCH_MGET, 2,
               "*3\r\n$4\r\nMGET\r\n$16\r\nkey:000000000042\r\n$16\r\nkey:000000000007\r\n", 1);
    expect_enc(KV_BENCH_RESP, KV_BENCH_PING, 1, "*2\r\n$4\r\nPING\r\n$3\r\nabc\r\n", 1);
}

static void test_bench_memcache_requests_are_exact(void)
{
    expect_enc(KV_BENCH_MEMCACHE, KV_BENCH_GET, 1, "mg key:000000000042 v\r\n", 1);
    expect_enc(KV_BENCH_MEMCACHE, KV_BENCH_SET, 1, "set key:000000000042 0 0 3\r\nabc\r\n", 1);
    /* an MGET is N pipelined mg sent together: N answers, one request */
    expect_enc(KV_BENCH_MEMCACHE, KV_BENCH_MGET, 2,
               "mg key:000000000042 v\r\nmg key:000000000007 v\r\n", 2);
    expect_enc(KV_BENCH_MEMCACHE, KV_BENCH_PING, 1, "mn\r\n", 1);
}

static void test_bench_binary_requests_decode(void)
{
    struct kv_bench_opts o = opts(KV_BENCH_BINARY);
    struct kv_bench_req q = {.op = KV_BENCH_SET, .nkeys = 1, .keys = {42}};
    static const uint8_t body[] = "\x0A\x10key:000000000042\x12\x03"
                                  "abc";
    uint8_t buf[1024];
    struct kv_frame f;
    unsigned units;
    size_t n = kv_bench_encode(&o, &q, 77, buf, &units);

    CU_ASSERT_EQUAL(kv_frame_decode(buf, n, 1 << 20, 0, &f), (ssize_t)n);
    CU_ASSERT_EQUAL(f.opcode, KV_OP_SET);
    CU_ASSERT_EQUAL(f.request_id, 77);
    CU_ASSERT_EQUAL(f.body_len, sizeof(body) - 1);
    CU_ASSERT(memcmp(f.body, body, sizeof(body) - 1) == 0);
    CU_ASSERT_EQUAL(units, 1);
    q.op = KV_BENCH_MGET;
    q.nkeys = 10;
    n = kv_bench_encode(&o, &q, 78, buf, &units);
    CU_ASSERT_EQUAL(kv_frame_decode(buf, n, 1 << 20, 0, &f), (ssize_t)n);
    CU_ASSERT_EQUAL(f.opcode, KV_OP_MGET);
    CU_ASSERT_EQUAL(f.body_len, 10 * (2 + KV_BENCH_KEYLEN));
    CU_ASSERT_EQUAL(units, 1);
}

static void test_bench_crc32_matches_zlib(void)
{
    static uint8_t buf[700];

    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 131 + (i >> 3));
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n + off <= 600; n++) {
            uint32_t z = (uint32_t)crc32(crc32(0, buf + off, 24), buf + off + 24, (uInt)n);

            CU_ASSERT_EQUAL_FATAL(
                kv_bench_crc32(kv_bench_crc32(0, buf + off, 24), buf + off + 24, n), z);
        }
}

/* ---- parsing ------------------------------------------------------------------------- */

/* The whole answer parses to cls/misses consuming all of it, every strict
 * prefix is KV_EAGAIN, and a second answer after it is left alone. */
static void expect_reply(enum kv_bench_proto p, const uint8_t *a, size_t n, enum kv_bench_class cls,
                         unsigned misses)
{
    uint8_t buf[4096];
    struct kv_bench_reply r;

    CU_ASSERT_FATAL(2 * n <= sizeof(buf));
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL(kv_bench_parse_reply(p, a, i, &r), KV_EAGAIN);
    memcpy(buf, a, n);
    memcpy(buf + n, a, n);
    CU_ASSERT_EQUAL(kv_bench_parse_reply(p, buf, 2 * n, &r), (ssize_t)n);
    CU_ASSERT_EQUAL(r.cls, cls);
    CU_ASSERT_EQUAL(r.misses, misses);
}

#define REPLY(p, s, cls, m) expect_reply((p), (const uint8_t *)(s), sizeof(s) - 1, (cls), (m))
#define BAD(p, s)                                                                                  \
    do {                                                                                           \
        struct kv_bench_reply r_;                                                                  \
        CU_ASSERT(kv_bench_parse_reply((p), (const uint8_t *)(s), sizeof(s) - 1, &r_) < 0 &&       \
                  kv_bench_parse_reply((p), (const uint8_t *)(s), sizeof(s) - 1, &r_) !=           \
                      KV_EAGAIN);                                                                  \
    } while (0)

static void test_bench_resp_answers_parse(void)
{
    REPLY(KV_BENCH_RESP, "+OK\r\n", KV_BENCH_OK, 0);
    REPLY(KV_BENCH_RESP, "+PONG\r\n", KV_BENCH_OK, 0);
    REPLY(KV_BENCH_RESP, ":12\r\n", KV_BENCH_OK, 0);
    REPLY(KV_BENCH_RESP, "$3\r\nabc\r\n", KV_BENCH_OK, 0);
    REPLY(KV_BENCH_RESP, "$0\r\n\r\n", KV_BENCH_OK, 0);
    REPLY(KV_BENCH_RESP, "$-1\r\n", KV_BENCH_MISS, 1);
    REPLY(KV_BENCH_RESP, "-ERR wrong number of arguments\r\n", KV_BENCH_ERR, 0);
    REPLY(KV_BENCH_RESP, "-NOAUTH Authentication required.\r\n", KV_BENCH_ERR, 0);
    REPLY(KV_BENCH_RESP, "*3\r\n$1\r\na\r\n$-1\r\n$2\r\nbc\r\n", KV_BENCH_OK, 1);
    REPLY(KV_BENCH_RESP, "*0\r\n", KV_BENCH_OK, 0);
    BAD(KV_BENCH_RESP, "?what\r\n");
    BAD(KV_BENCH_RESP, "$3\r\nabcd\r\n");
    BAD(KV_BENCH_RESP, "$x\r\n");
    BAD(KV_BENCH_RESP, "+OK\n");
    BAD(KV_BENCH_RESP, "*1\r\n*1\r\n:1\r\n");
}

static void test_bench_memcache_answers_parse(void)
{
    REPLY(KV_BENCH_MEMCACHE, "VA 3\r\nabc\r\n", KV_BENCH_OK, 0);
    REPLY(KV_BENCH_MEMCACHE, "VA 3 f0 t-1\r\nabc\r\n", KV_BENCH_OK, 0);
    REPLY(KV_BENCH_MEMCACHE, "EN\r\n", KV_BENCH_MISS, 1);
    REPLY(KV_BENCH_MEMCACHE, "STORED\r\n", KV_BENCH_OK, 0);
    REPLY(KV_BENCH_MEMCACHE, "HD\r\n", KV_BENCH_OK, 0);
    REPLY(KV_BENCH_MEMCACHE, "MN\r\n", KV_BENCH_OK, 0);
    REPLY(KV_BENCH_MEMCACHE, "ERROR\r\n", KV_BENCH_ERR, 0);
    REPLY(KV_BENCH_MEMCACHE, "CLIENT_ERROR bad data chunk\r\n", KV_BENCH_ERR, 0);
    REPLY(KV_BENCH_MEMCACHE, "SERVER_ERROR out of memory storing object\r\n", KV_BENCH_ERR, 0);
    REPLY(KV_BENCH_MEMCACHE, "NOT_STORED\r\n", KV_BENCH_ERR, 0);
    BAD(KV_BENCH_MEMCACHE, "BOGUS\r\n");
    BAD(KV_BENCH_MEMCACHE, "VA x\r\nabc\r\n");
    BAD(KV_BENCH_MEMCACHE, "VA 3\r\nabcd\r\n");
    BAD(KV_BENCH_MEMCACHE, "STORED\n");
}

static size_t frame(uint16_t op, uint16_t status, const void *body, size_t len, uint8_t *out)
{
    struct kv_frame f = {.version = KV_FRAME_VERSION,
                         .flags = KV_FRAME_F_RESPONSE,
                         .opcode = op,
                         .request_id = 9,
                         .body_len = (uint32_t)len,
                         .status = status};

    return (size_t)kv_frame_encode(&f, body, out, 1024);
}

static void test_bench_binary_answers_parse(void)
{
    /* MGetResponse: found "ab" v5; missing; found "c" v6 */
    static const uint8_t mget[] = {0x0A, 0x08, 0x08, 0x01, 0x12, 0x02, 'a',  'b', 0x18, 0x05, 0x0A,
                                   0x00, 0x0A, 0x07, 0x08, 0x01, 0x12, 0x01, 'c', 0x18, 0x06};
    static const uint8_t get[] = {0x0A, 0x02, 'a', 'b', 0x10, 0x05};
    uint8_t buf[1024];
    struct kv_bench_reply r;
    size_t n;

    n = frame(KV_OP_GET, KV_ST_OK, get, sizeof(get), buf);
    expect_reply(KV_BENCH_BINARY, buf, n, KV_BENCH_OK, 0);
    n = frame(KV_OP_GET, KV_ST_NOT_FOUND, NULL, 0, buf);
    expect_reply(KV_BENCH_BINARY, buf, n, KV_BENCH_MISS, 1);
    n = frame(KV_OP_MGET, KV_ST_OK, mget, sizeof(mget), buf);
    expect_reply(KV_BENCH_BINARY, buf, n, KV_BENCH_OK, 1);
    n = frame(KV_OP_SET, KV_ST_OUT_OF_MEMORY, NULL, 0, buf);
    expect_reply(KV_BENCH_BINARY, buf, n, KV_BENCH_ERR, 0);
    n = frame(KV_OP_GET, KV_ST_NOAUTH, NULL, 0, buf);
    expect_reply(KV_BENCH_BINARY, buf, n, KV_BENCH_ERR, 0);
    n = frame(KV_OP_GET, KV_ST_OK, get, sizeof(get), buf);
    buf[n - 1] ^= 1;
    CU_ASSERT_EQUAL(kv_bench_parse_reply(KV_BENCH_BINARY, buf, n, &r), KV_ECRC);
    n = frame(KV_OP_MGET, KV_ST_OK, mget, sizeof(mget) - 1, buf); /* a torn entry */
    CU_ASSERT_EQUAL(kv_bench_parse_reply(KV_BENCH_BINARY, buf, n, &r), KV_EPROTO);
}

/* ---- kvclient bench against real servers ------------------------------------------- */

static uint64_t json_u64(const char *line, const char *key)
{
    char pat[64];
    const char *p;

    snprintf(pat, sizeof(pat), "\"%s\":", key);
    p = strstr(line, pat);
    return p ? strtoull(p + strlen(pat), NULL, 10) : UINT64_MAX;
}

/* Runs kvclient bench with --json; returns its exit code and the lines. */
static int run_bench(uint16_t port, const char *args, char lines[][1024], int max, int *nlines)
{
    char cmd[PATH_MAX + 1024];
    FILE *f;
    int st;

    snprintf(cmd, sizeof(cmd), "%s/kvclient -p %u bench %s --json 2>/dev/null", bindir, port, args);
    f = popen(cmd, "r");
    *nlines = 0;
    if (!f)
        return -1;
    while (*nlines < max && fgets(lines[*nlines], 1024, f))
        (*nlines)++;
    st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* Every test of the list ran clean with this protocol. */
static void expect_clean(uint16_t port, const char *proto, const char *extra, int ntests,
                         int expect_misses)
{
    char args[512], lines[8][1024], want[64];
    int n = 0;

    snprintf(args, sizeof(args), "--protocol %s -c 4 -P 4 -d 100 -r 500 %s", proto, extra);
    CU_ASSERT_EQUAL(run_bench(port, args, lines, 8, &n), 0);
    CU_ASSERT_EQUAL(n, ntests);
    snprintf(want, sizeof(want), "\"protocol\":\"%s\"", proto);
    for (int i = 0; i < n; i++) {
        CU_ASSERT_PTR_NOT_NULL(strstr(lines[i], want));
        CU_ASSERT_PTR_NOT_NULL(strstr(lines[i], "\"failed\":false"));
        CU_ASSERT_EQUAL(json_u64(lines[i], "errors"), 0);
        if (!expect_misses)
            CU_ASSERT_EQUAL(json_u64(lines[i], "not_found"), 0);
        CU_ASSERT(json_u64(lines[i], "requests") > 0 &&
                  json_u64(lines[i], "requests") != UINT64_MAX);
    }
}

static void test_bench_kvclient_binary_against_libevkv(void)
{
    char lines[8][1024];
    int n = 0;

    /* populated first, so no GET or MGET key is missing */
    expect_clean(srv.port, "binary", "-t ping,set,get,mget,mixed -n 2000", 5, 0);
    /* -n is exact */
    CU_ASSERT_EQUAL(run_bench(srv.port, "-t get -c 3 -P 7 -n 1001 -r 50", lines, 8, &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(json_u64(lines[0], "requests"), 1001);
}

static void test_bench_kvclient_resp_against_libevkv(void)
{
    expect_clean(srv.port, "resp", "-t ping,set,get,mget,mixed -n 2000", 5, 0);
}

/* -s PATH: the same engine over the unix socket, and the JSON says so */
static void test_bench_kvclient_over_unix_socket(void)
{
    char extra[256], lines[8][1024];
    int n = 0;

    snprintf(extra, sizeof(extra), "-s %s -t ping,set,get,mget,mixed -n 2000", srv.unix_path);
    expect_clean(srv.port, "binary", extra, 5, 0);
    expect_clean(srv.port, "resp", extra, 5, 0);
    snprintf(extra, sizeof(extra), "-s %s -t ping,set,get,mget -n 2000", echo_unix);
    expect_clean(echo_port, "binary", extra, 4, 0);
    expect_clean(echo_port, "resp", extra, 4, 0);
    snprintf(extra, sizeof(extra), "-s %s -t get -c 2 -n 100", srv.unix_path);
    CU_ASSERT_EQUAL(run_bench(srv.port, extra, lines, 8, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(lines[0], "\"transport\":\"unix\""));
    CU_ASSERT_EQUAL(run_bench(srv.port, "-t get -c 2 -n 100", lines, 8, &n), 0);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(lines[0], "\"transport\":\"tcp\""));
    /* AUTH over the unix socket: without -a every GET is an error, with it clean */
    snprintf(extra, sizeof(extra), "-s %s -t get -c 2 -n 100 --no-populate", srv_auth.unix_path);
    CU_ASSERT_EQUAL(run_bench(srv_auth.port, extra, lines, 8, &n), 2);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(json_u64(lines[0], "errors"), 100);
    {
        char cmd[PATH_MAX + 512];

        snprintf(cmd, sizeof(cmd),
                 "%s/kvclient -a pw -s %s bench -t set,get -c 2 -n 100 --json >/dev/null 2>&1",
                 bindir, srv_auth.unix_path);
        CU_ASSERT_EQUAL(system(cmd), 0);
    }
    /* a path nobody listens on fails, exit 2 */
    CU_ASSERT_EQUAL(run_bench(srv.port, "-s /tmp/libevkv-no-such.sock -t get -n 10", lines, 8, &n),
                    2);
}

static void test_bench_kvclient_seconds_bounds_the_run(void)
{
    char lines[8][1024];
    int n = 0;
    double secs;

    /* -n alone would take hours; --seconds must end it. The upper bound is
     * loose on purpose: coverage and ASan builds are many times slower */
    CU_ASSERT_EQUAL(run_bench(srv.port, "-t set -c 2 -n 1000000000 --seconds 0.3", lines, 8, &n),
                    0);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    secs = strtod(strstr(lines[0], "\"seconds\":") + 10, NULL);
    /* the clock starts once every connection is up; allow a scheduling tick */
    CU_ASSERT(secs >= 0.25 && secs < 15.0);
    if (!(secs >= 0.25 && secs < 15.0))
        fprintf(stderr, "\n  bench line: %s\n", lines[0]);
    CU_ASSERT(json_u64(lines[0], "requests") > 0);
}

static void test_bench_kvclient_counts_errors(void)
{
    char lines[8][1024];
    int n = 0;

    /* no -a against --requirepass: every GET is answered NOAUTH / -NOAUTH */
    CU_ASSERT_EQUAL(run_bench(srv_auth.port, "--protocol binary -t get -c 2 -n 100 --no-populate",
                              lines, 8, &n),
                    2);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(json_u64(lines[0], "errors"), 100);
    CU_ASSERT_PTR_NOT_NULL(strstr(lines[0], "\"failed\":false"));
    CU_ASSERT_EQUAL(
        run_bench(srv_auth.port, "--protocol resp -t get -c 2 -n 100 --no-populate", lines, 8, &n),
        2);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(json_u64(lines[0], "errors"), 100);
    /* with the password: clean, both protocols */
    CU_ASSERT_EQUAL(run_bench(srv_auth.port, "--protocol binary -t set -c 2 -n 100", lines, 8, &n),
                    2);
    {
        char cmd[2 * PATH_MAX + 256];

        snprintf(cmd, sizeof(cmd),
                 "%s/kvclient -a pw -p %u bench --protocol binary -t set,get -c 2 -n 100 "
                 "--json >/dev/null 2>&1 && %s/kvclient -a pw -p %u bench --protocol resp "
                 "-t set,get -c 2 -n 100 --json >/dev/null 2>&1",
                 bindir, srv_auth.port, bindir, srv_auth.port);
        CU_ASSERT_EQUAL(system(cmd), 0);
    }
}

static void test_bench_kvclient_all_protocols_against_echo_server(void)
{
    expect_clean(echo_port, "binary", "-t ping,set,get,mget -n 2000", 4, 0);
    expect_clean(echo_port, "resp", "-t ping,set,get,mget -n 2000", 4, 0);
    expect_clean(echo_port, "memcache", "-t ping,set,get,mget,mixed -n 2000", 5, 0);
}

static void test_bench_kvclient_rejects_bad_options(void)
{
    char lines[8][1024];
    int n = 0;

    CU_ASSERT_EQUAL(run_bench(srv.port, "--protocol http -t get", lines, 8, &n), 2);
    CU_ASSERT_EQUAL(run_bench(srv.port, "--seconds 0 -t get", lines, 8, &n), 2);
    {
        char cmd[PATH_MAX + 128];

        snprintf(cmd, sizeof(cmd),
                 "%s/kvclient -a x -p %u bench --protocol memcache -t get >/dev/null 2>&1", bindir,
                 srv.port);
        CU_ASSERT_EQUAL(WEXITSTATUS(system(cmd)), 2);
    }
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("bench", suite_init, suite_clean);
    if (!s)
        return 1;
    CU_add_test(s, "test_bench_resp_requests_are_exact", test_bench_resp_requests_are_exact);
    CU_add_test(s, "test_bench_memcache_requests_are_exact",
                test_bench_memcache_requests_are_exact);
    CU_add_test(s, "test_bench_binary_requests_decode", test_bench_binary_requests_decode);
    CU_add_test(s, "test_bench_crc32_matches_zlib", test_bench_crc32_matches_zlib);
    CU_add_test(s, "test_bench_resp_answers_parse", test_bench_resp_answers_parse);
    CU_add_test(s, "test_bench_memcache_answers_parse", test_bench_memcache_answers_parse);
    CU_add_test(s, "test_bench_binary_answers_parse", test_bench_binary_answers_parse);
    CU_add_test(s, "test_bench_kvclient_binary_against_libevkv",
                test_bench_kvclient_binary_against_libevkv);
    CU_add_test(s, "test_bench_kvclient_resp_against_libevkv",
                test_bench_kvclient_resp_against_libevkv);
    CU_add_test(s, "test_bench_kvclient_over_unix_socket", test_bench_kvclient_over_unix_socket);
    CU_add_test(s, "test_bench_kvclient_seconds_bounds_the_run",
                test_bench_kvclient_seconds_bounds_the_run);
    CU_add_test(s, "test_bench_kvclient_counts_errors", test_bench_kvclient_counts_errors);
    CU_add_test(s, "test_bench_kvclient_all_protocols_against_echo_server",
                test_bench_kvclient_all_protocols_against_echo_server);
    CU_add_test(s, "test_bench_kvclient_rejects_bad_options",
                test_bench_kvclient_rejects_bad_options);
    return kv_test_run_all();
}
