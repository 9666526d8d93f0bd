/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_config.c -- CONFIG SET of the parameters that act, end to end
 * against a real server: `port` (a new listener, or Redis's "Unable to listen
 * on this port" with nothing changed), `maxmemory` (the store's pages in use:
 * OOM under noeviction, eviction under allkeys-lru, room again when raised),
 * `maxmemory-clients` as a percentage, `client-query-buffer-limit` (a
 * connection past it is closed, the others are not), `key-load-delay` (the
 * hidden one: by its name only). */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kv_test_util.h"

/* Sends req (may be ""), then reads until want bytes came (want 0: until
 * 150 ms pass without data), the peer closed (*closed = 1) or 3 s passed.
 * Returns a malloc'd NUL-terminated reply. */
static char *xchg(int fd, const char *req, size_t want, int *closed)
{
    size_t cap = want + 262144, len = 0, reqlen = strlen(req);
    char *buf = malloc(cap + 1);
    int waited = 0;

    *closed = 0;
    if (reqlen && send(fd, req, reqlen, MSG_NOSIGNAL) != (ssize_t)reqlen)
        *closed = 1;
    while ((want == 0 || len < want) && waited < 3000) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int t = want == 0 ? 150 : 100;
        ssize_t n;

        if (poll(&p, 1, t) <= 0) {
            waited += t;
            if (want == 0 && len > 0)
                break;
            continue;
        }
        n = recv(fd, buf + len, cap - len, 0);
        if (n <= 0) {
            *closed = 1;
            break;
        }
        len += (size_t)n;
        if (len == cap)
            break;
    }
    buf[len] = '\0';
    return buf;
}

static void expect(int fd, const char *req, const char *reply)
{
    int closed;
    char *got = xchg(fd, req, strlen(reply), &closed);

    if (strcmp(got, reply) != 0)
        fprintf(stderr, "\n  sent %s\n  want %s\n  got  %s\n", req, reply, got);
    CU_ASSERT_STRING_EQUAL(got, reply);
    CU_ASSERT_EQUAL(closed, 0);
    free(got);
}

static char *ask(int fd, const char *req)
{
    int closed;

    return xchg(fd, req, 0, &closed);
}

/* A RESP SET of key (its number) with a value of vlen bytes; the reply's
 * first byte ('+' OK, '-' an error), or 0 when none came. */
static char set_value(int fd, int key, size_t vlen)
{
    static char val[64 * 1024];
    char hdr[96], k[32], r;
    char *got;
    int closed;

    memset(val, 'v', sizeof(val));
    snprintf(k, sizeof(k), "cfg:%d", key);
    snprintf(hdr, sizeof(hdr), "*3\r\n$3\r\nSET\r\n$%zu\r\n%s\r\n$%zu\r\n", strlen(k), k, vlen);
    send(fd, hdr, strlen(hdr), MSG_NOSIGNAL);
    send(fd, val, vlen, MSG_NOSIGNAL);
    got = xchg(fd, "\r\n", 5, &closed);
    r = got[0];
    if (r == '-')
        CU_ASSERT(strncmp(got, "-OOM command not allowed when used memory > 'maxmemory'.",
                          56) == 0);
    free(got);
    return r;
}

static long long info_field(int fd, const char *name)
{
    char *r = ask(fd, "INFO\r\n"), want[64], *p;
    long long v = -1;

    snprintf(want, sizeof(want), "\r\n%s:", name);
    p = strstr(r, want);
    if (p)
        v = atoll(p + strlen(want));
    free(r);
    return v;
}

/* CONFIG SET port: a port in use is Redis's error and changes nothing (the
 * other pairs with it neither); a free one is listened on, the old one
 * closes, and a connection open on the old one stays. */
static void test_config_set_port_relistens(void)
{
    static const char *const args[] = {NULL};
    struct kv_test_server ks = {0};
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int busy = socket(AF_INET, SOCK_STREAM, 0), c, c2;
    socklen_t sl = sizeof(sa);
    uint16_t busy_port, new_port;
    char req[160], want[64], pnum[8], *r;

    CU_ASSERT_FATAL(kv_test_server_start(&ks, args) == 0);
    CU_ASSERT_FATAL(busy >= 0);
    CU_ASSERT_FATAL(bind(busy, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(busy, 1) == 0);
    getsockname(busy, (struct sockaddr *)&sa, &sl);
    busy_port = ntohs(sa.sin_port);
    c = kv_test_connect(ks.port);
    CU_ASSERT_FATAL(c >= 0);
    snprintf(req, sizeof(req), "CONFIG SET maxclients 77 port %u\r\n", busy_port);
    r = ask(c, req);
    CU_ASSERT(strncmp(r, "-ERR CONFIG SET failed (possibly related to argument 'port') - Unable "
                         "to listen on this port: ", 91) == 0);
    free(r);
    snprintf(pnum, sizeof(pnum), "%u", ks.port);
    snprintf(want, sizeof(want), "*2\r\n$4\r\nport\r\n$%zu\r\n%s\r\n", strlen(pnum), pnum);
    expect(c, "CONFIG GET port\r\n", want);
    expect(c, "CONFIG GET maxclients\r\n", "*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n");
    close(busy);
    /* a free port */
    new_port = kv_test_free_port();
    snprintf(req, sizeof(req), "CONFIG SET port %u\r\n", new_port);
    expect(c, req, "+OK\r\n");
    CU_ASSERT_EQUAL(info_field(c, "tcp_port"), new_port);
    c2 = kv_test_connect(new_port);
    CU_ASSERT_FATAL(c2 >= 0);
    expect(c2, "PING\r\n", "+PONG\r\n");
    expect(c, "PING\r\n", "+PONG\r\n"); /* the connection made on the old port stays */
    usleep(100 * 1000);
    CU_ASSERT(kv_test_connect(ks.port) < 0); /* the old listener is gone */
    close(c);
    close(c2);
    ks.port = new_port; /* stop finds it there */
    CU_ASSERT_EQUAL(kv_test_server_stop(&ks), 0);
}

/* maxmemory limits the store's pages in use: under noeviction writes are
 * answered OOM past it, a raised limit (or 0) gives room again; under
 * allkeys-lru writes evict instead. The limit takes effect at once. */
static void test_config_maxmemory_limits_the_store(void)
{
    static const char *const none[] = {"--memory", "16m", NULL};
    static const char *const lru[] = {"--memory", "16m", "--eviction", "lru", NULL};
    struct kv_test_server ks = {0};
    int fd, ok = 0, oom = 0, i;

    CU_ASSERT_FATAL(kv_test_server_start(&ks, none) == 0);
    fd = kv_test_connect(ks.port);
    CU_ASSERT_FATAL(fd >= 0);
    expect(fd, "CONFIG GET maxmemory\r\n", "*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n");
    expect(fd, "CONFIG GET memory\r\n", "*2\r\n$6\r\nmemory\r\n$8\r\n16777216\r\n");
    expect(fd, "CONFIG SET maxmemory 2mb\r\n", "+OK\r\n");
    CU_ASSERT_EQUAL(info_field(fd, "maxmemory"), 2 << 20);
    CU_ASSERT_EQUAL(info_field(fd, "store_size"), 16 << 20);
    for (i = 0; i < 400 && oom < 5; i++) { /* 4 MB of values into a 2 MB limit */
        char r = set_value(fd, i, 10000);

        ok += r == '+';
        oom += r == '-';
    }
    CU_ASSERT(oom == 5);
    CU_ASSERT(ok > 50 && ok < 210); /* under 2 MB of 10 KB values, with the index */
    /* raised: room again, and the store holds more than the old limit */
    expect(fd, "CONFIG SET maxmemory 0\r\n", "+OK\r\n");
    for (int k = 0; k < 300; k++)
        CU_ASSERT(set_value(fd, 1000 + k, 10000) == '+');
    CU_ASSERT(info_field(fd, "used_memory_store") > 3 << 20);
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&ks), 0);

    /* allkeys-lru: a write past the limit evicts, the store stays near it */
    memset(&ks, 0, sizeof(ks));
    CU_ASSERT_FATAL(kv_test_server_start(&ks, lru) == 0);
    fd = kv_test_connect(ks.port);
    CU_ASSERT_FATAL(fd >= 0);
    expect(fd, "CONFIG SET maxmemory 2m\r\n", "+OK\r\n");
    for (i = 0; i < 600; i++)
        CU_ASSERT(set_value(fd, i, 10000) == '+');
    CU_ASSERT(info_field(fd, "evicted_keys") > 0);
    CU_ASSERT(info_field(fd, "used_memory_store") < 3 << 20);
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&ks), 0);
}

/* client-query-buffer-limit: a connection with more unparsed input than the
 * limit is closed (and logged); another connection is served; the limit and
 * maxmemory-clients read back as set (a percentage as Redis shows it). */
static void test_config_query_buffer_limit_closes(void)
{
    static const char *const args[] = {"--max-body", "16m", NULL};
    static char part[512 * 1024];
    struct kv_test_server ks = {0};
    int a, b, closed;
    char *r, *log;
    const char *hdr = "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$3000000\r\n";

    CU_ASSERT_FATAL(kv_test_server_start(&ks, args) == 0);
    a = kv_test_connect(ks.port);
    b = kv_test_connect(ks.port);
    CU_ASSERT_FATAL(a >= 0 && b >= 0);
    expect(a, "CONFIG GET client-query-buffer-limit\r\n",
           "*2\r\n$25\r\nclient-query-buffer-limit\r\n$10\r\n1073741824\r\n");
    expect(a, "CONFIG SET client-query-buffer-limit 1mb maxmemory-clients 50%\r\n", "+OK\r\n");
    expect(a, "CONFIG GET maxmemory-clients\r\n",
           "*2\r\n$17\r\nmaxmemory-clients\r\n$3\r\n50%\r\n");
    CU_ASSERT_EQUAL(info_field(a, "maxmemory_clients"), info_field(a, "store_size") / 2);
    /* under the limit: a 900 KB value is fine */
    expect(b, "PING\r\n", "+PONG\r\n");
    memset(part, 'q', sizeof(part));
    send(a, hdr, strlen(hdr), MSG_NOSIGNAL);
    for (int i = 0; i < 3; i++)
        send(a, part, sizeof(part), MSG_NOSIGNAL);
    r = xchg(a, "", 0, &closed);
    for (int t = 0; !closed && t < 20; t++) { /* until the server closes it */
        free(r);
        r = xchg(a, "", 0, &closed);
    }
    CU_ASSERT(closed);
    free(r);
    expect(b, "PING\r\n", "+PONG\r\n");
    expect(b, "EXISTS big\r\n", ":0\r\n");
    close(a);
    close(b);
    CU_ASSERT_EQUAL(kv_test_server_stop(&ks), 0);
    log = kv_test_server_log(&ks);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    CU_ASSERT(strstr(log, "above --client-query-buffer-limit 1048576; closing") != NULL);
    free(log);
}

/* qbuf + qbuf-free of a connection in CLIENT LIST, as another sees it. */
static long long qbuf_of(int fd, const char *name)
{
    char *r = ask(fd, "CLIENT LIST\r\n"), want[64], *p, *q;
    long long v = -1;

    snprintf(want, sizeof(want), "name=%s ", name);
    p = strstr(r, want);
    if (p && (q = strstr(p, " qbuf=")) != NULL) {
        v = atoll(q + 6);
        q = strstr(q, " qbuf-free=");
        v = q ? v + atoll(q + 11) : -1;
    }
    free(r);
    return v;
}

/* The receive buffer as Redis's query buffer (its querybuf unit): kept
 * empty between requests (16 KiB), grown for a large request and kept after
 * it, back to 16 KiB after a small one, given back after --recv-buf-keep
 * seconds of idleness; CLIENT LIST says so. */
static void test_config_receive_buffer_kept_and_shrunk(void)
{
    static const char *const args[] = {"--recv-buf-keep", "1", NULL};
    static char val[400000];
    struct kv_test_server ks = {0};
    int a, b, closed;
    long long q;
    char hdr[64], *r;

    CU_ASSERT_FATAL(kv_test_server_start(&ks, args) == 0);
    a = kv_test_connect(ks.port);
    b = kv_test_connect(ks.port);
    CU_ASSERT_FATAL(a >= 0 && b >= 0);
    expect(a, "CLIENT SETNAME qb\r\n", "+OK\r\n");
    q = qbuf_of(b, "qb");
    CU_ASSERT(q >= 16384 && q < 32768);
    memset(val, 'A', sizeof(val));
    snprintf(hdr, sizeof(hdr), "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$%zu\r\n", sizeof(val));
    send(a, hdr, strlen(hdr), MSG_NOSIGNAL);
    send(a, val, sizeof(val), MSG_NOSIGNAL);
    r = xchg(a, "\r\n", 5, &closed);
    CU_ASSERT_STRING_EQUAL(r, "+OK\r\n");
    free(r);
    q = qbuf_of(b, "qb");
    CU_ASSERT(q > 32768);
    expect(a, "SET x small\r\n", "+OK\r\n");
    CU_ASSERT(qbuf_of(b, "qb") > 0 && qbuf_of(b, "qb") < q);
    CU_ASSERT(qbuf_of(b, "qb") < 32768);
    usleep(2600 * 1000); /* keep 1 s, swept every second */
    CU_ASSERT_EQUAL(qbuf_of(b, "qb"), 0);
    expect(a, "PING\r\n", "+PONG\r\n"); /* and it reads again */
    close(a);
    close(b);
    CU_ASSERT_EQUAL(kv_test_server_stop(&ks), 0);
}

/* The fields " flags=... multi=..." of the CLIENT LIST line named name. */
static void client_flags(int fd, const char *name, char *flags, size_t fcap, long long *multi)
{
    char *r = ask(fd, "CLIENT LIST\r\n"), want[64], *p, *q;

    snprintf(want, sizeof(want), "name=%s ", name);
    flags[0] = '\0';
    *multi = -99;
    p = strstr(r, want);
    if (p && (q = strstr(p, " flags=")) != NULL)
        sscanf(q + 7, "%7[^ ]", flags);
    if (p && (q = strstr(p, " multi=")) != NULL)
        *multi = atoll(q + 7);
    free(r);
    (void)fcap;
}

/* CLIENT LIST shows MULTI as Redis: flag x and the commands queued, from
 * MULTI to EXEC or DISCARD (multi=-1 outside). */
static void test_config_client_list_shows_multi(void)
{
    struct kv_test_server ks = {0};
    int a, b;
    char flags[8];
    long long multi;

    CU_ASSERT_FATAL(kv_test_server_start(&ks, NULL) == 0);
    a = kv_test_connect(ks.port);
    b = kv_test_connect(ks.port);
    CU_ASSERT_FATAL(a >= 0 && b >= 0);
    expect(a, "CLIENT SETNAME tx\r\n", "+OK\r\n");
    client_flags(b, "tx", flags, sizeof(flags), &multi);
    CU_ASSERT_STRING_EQUAL(flags, "N");
    CU_ASSERT_EQUAL(multi, -1);
    expect(a, "MULTI\r\n", "+OK\r\n");
    client_flags(b, "tx", flags, sizeof(flags), &multi);
    CU_ASSERT_STRING_EQUAL(flags, "x");
    CU_ASSERT_EQUAL(multi, 0);
    expect(a, "SET k 1\r\nINCR k\r\n", "+QUEUED\r\n+QUEUED\r\n");
    client_flags(b, "tx", flags, sizeof(flags), &multi);
    CU_ASSERT_EQUAL(multi, 2);
    expect(a, "EXEC\r\n", "*2\r\n+OK\r\n:2\r\n");
    client_flags(b, "tx", flags, sizeof(flags), &multi);
    CU_ASSERT_STRING_EQUAL(flags, "N");
    CU_ASSERT_EQUAL(multi, -1);
    expect(a, "CLIENT NO-EVICT ON\r\nMULTI\r\n", "+OK\r\n+OK\r\n");
    client_flags(b, "tx", flags, sizeof(flags), &multi);
    CU_ASSERT_STRING_EQUAL(flags, "xe"); /* Redis's letters in Redis's order */
    expect(a, "DISCARD\r\n", "+OK\r\n");
    expect(a, "MULTI\r\nSET k 2\r\n", "+OK\r\n+QUEUED\r\n");
    client_flags(b, "tx", flags, sizeof(flags), &multi);
    CU_ASSERT_EQUAL(multi, 1);
    expect(a, "DISCARD\r\n", "+OK\r\n");
    client_flags(b, "tx", flags, sizeof(flags), &multi);
    CU_ASSERT_EQUAL(multi, -1);
    close(a);
    close(b);
    CU_ASSERT_EQUAL(kv_test_server_stop(&ks), 0);
}

/* OBJECT IDLETIME from the item's LRU time, not touched by asking; GET and
 * SET reset it; FREQ is Redis's no-LFU error; nil for a missing key. */
static void test_config_object_idletime_and_freq(void)
{
    struct kv_test_server ks = {0};
    int fd;
    char *r;

    CU_ASSERT_FATAL(kv_test_server_start(&ks, NULL) == 0);
    fd = kv_test_connect(ks.port);
    CU_ASSERT_FATAL(fd >= 0);
    expect(fd, "SET ok v\r\nSELECT 3\r\nSET ok3 v\r\n", "+OK\r\n+OK\r\n+OK\r\n");
    expect(fd, "OBJECT IDLETIME ok3\r\nOBJECT IDLETIME ok\r\n", ":0\r\n$-1\r\n"); /* per db */
    expect(fd, "SELECT 0\r\n", "+OK\r\n");
    usleep(2200 * 1000);
    expect(fd, "OBJECT IDLETIME ok\r\n", ":2\r\n");
    expect(fd, "OBJECT IDLETIME ok\r\n", ":2\r\n"); /* asking does not touch it */
    expect(fd, "GET ok\r\nOBJECT IDLETIME ok\r\n", "$1\r\nv\r\n:0\r\n");
    expect(fd, "OBJECT IDLETIME nosuch\r\nOBJECT FREQ nosuch\r\n", "$-1\r\n$-1\r\n");
    r = ask(fd, "OBJECT FREQ ok\r\n");
    CU_ASSERT(strncmp(r, "-ERR An LFU maxmemory policy is not selected, access frequency not "
                         "tracked.", 75) == 0);
    free(r);
    expect(fd, "OBJECT ENCODING ok\r\n",
           "-ERR unknown subcommand 'ENCODING'. Try OBJECT HELP.\r\n");
    expect(fd, "OBJECT IDLETIME\r\n",
           "-ERR wrong number of arguments for 'object|idletime' command\r\n");
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&ks), 0);
}

/* key-load-delay: hidden (Redis's HIDDEN_CONFIG), answered by name. */
static void test_config_hidden_key_load_delay(void)
{
    static const char *const args[] = {"--key-load-delay", "5", NULL};
    struct kv_test_server ks = {0};
    int fd;
    char *r;

    CU_ASSERT_FATAL(kv_test_server_start(&ks, args) == 0);
    fd = kv_test_connect(ks.port);
    CU_ASSERT_FATAL(fd >= 0);
    r = ask(fd, "CONFIG GET *\r\n");
    CU_ASSERT(strstr(r, "key-load-delay") == NULL && strstr(r, "$9\r\nmaxmemory\r\n") != NULL);
    free(r);
    expect(fd, "CONFIG GET key-load-delay\r\n", "*2\r\n$14\r\nkey-load-delay\r\n$1\r\n5\r\n");
    expect(fd, "CONFIG SET daemonize yes\r\n",
           "-ERR CONFIG SET failed (possibly related to argument 'daemonize') - can't set "
           "immutable config\r\n");
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&ks), 0);
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_config_set_port_relistens", test_config_set_port_relistens},
        {"test_config_maxmemory_limits_the_store", test_config_maxmemory_limits_the_store},
        {"test_config_query_buffer_limit_closes", test_config_query_buffer_limit_closes},
        {"test_config_hidden_key_load_delay", test_config_hidden_key_load_delay},
        {"test_config_receive_buffer_kept_and_shrunk", test_config_receive_buffer_kept_and_shrunk},
        {"test_config_client_list_shows_multi", test_config_client_list_shows_multi},
        {"test_config_object_idletime_and_freq", test_config_object_idletime_and_freq},
    };

    return kv_test_run_suite("config", NULL, NULL, tests, sizeof(tests) / sizeof(tests[0]));
}
