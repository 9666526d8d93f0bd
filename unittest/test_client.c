/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_client.c -- suite of the client library and kvclient.
 *
 * Starts the real libevkv on a free loopback port with a private segment
 * and checks every typed call of kv_client.h against it: results, the
 * mapping of statuses to KV_E* codes, last_status/last_error, and that
 * every returned buffer is given back (KV_MOD_CLIENT bytes held return to
 * their level). A fake server thread checks answers the client must refuse
 * (wrong id, wrong opcode, undecodable body). Then bin/kvclient runs as a
 * subprocess: `kvclient test` must end "N passed, 0 failed", and the
 * command line's exit codes and stdin values are checked. The servers are
 * always stopped in the suite cleanup (and by kv_test_util's hooks). */
#include <CUnit/CUnit.h>
#include <stdbool.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frame.h"
#include "kv_client.h"
#include "kv_err.h"
#include "kv_mem.h"
#include "kv_test_util.h"

static struct kv_test_server srv, srv_auth;
static char kvclient_path[PATH_MAX];
static char tmpdir[64];

static int suite_init(void)
{
    static const char *const auth_args[] = {"--requirepass", "s3cret", NULL};
    char self[PATH_MAX - 16];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

    if (n <= 0)
        return -1;
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    snprintf(kvclient_path, sizeof(kvclient_path), "%s/kvclient", self);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_client.%d", (int)getpid());
    if (mkdir(tmpdir, 0700) != 0)
        return -1;
    memset(&srv, 0, sizeof(srv));
    memset(&srv_auth, 0, sizeof(srv_auth));
    if (kv_test_server_start(&srv, NULL) != 0)
        return -1;
    if (kv_test_server_start(&srv_auth, auth_args) != 0)
        return -1;
    return 0;
}

static int suite_clean(void)
{
    char cmd[128];

    if (srv.pid > 0)
        kv_test_server_stop(&srv);
    if (srv_auth.pid > 0)
        kv_test_server_stop(&srv_auth);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (tmpdir[0] && system(cmd) != 0)
        return -1;
    return 0;
}

static struct kv_client *connect_port(uint16_t port)
{
    struct kv_client *c = NULL;

    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", port, 5000, &c) == 0);
    return c;
}

static struct kv_client *connect_srv(void)
{
    return connect_port(srv.port);
}

static int64_t client_bytes(void)
{
    struct kv_mem_snapshot s;

    kv_mem_snapshot(&s);
    return s.mod[KV_MOD_CLIENT].bytes;
}

#define K(s) (s), strlen(s)

/* ---- connection ---------------------------------------------------------------- */
static void test_client_connect_refused_is_an_error_code(void)
{
    struct kv_client *c = (struct kv_client *)0x1;
    uint16_t port = kv_test_free_port();

    CU_ASSERT_EQUAL(kv_client_connect("127.0.0.1", port, 1000, &c), KV_EIO);
    CU_ASSERT_PTR_EQUAL(c, (struct kv_client *)0x1); /* written only on success */
    CU_ASSERT_EQUAL(kv_client_connect("no.such.host.invalid", port, 1000, &c), KV_EINVAL);
}

static void test_client_last_status_starts_empty(void)
{
    struct kv_client *c = connect_srv();

    CU_ASSERT_EQUAL(kv_client_last_status(c), -1);
    CU_ASSERT_STRING_EQUAL(kv_client_last_error(c), "");
    CU_ASSERT_EQUAL(kv_client_ping(c, "x", 1), 0);
    CU_ASSERT_EQUAL(kv_client_last_status(c), KV_ST_OK);
    kv_client_close(c);
}

/* ---- typed calls --------------------------------------------------------------- */
static void test_client_get_set_roundtrip_with_versions(void)
{
    struct kv_client *c = connect_srv();
    struct kv_value v = {0};
    uint8_t bin[300];
    uint64_t v1 = 0, v2 = 0;

    for (size_t i = 0; i < sizeof(bin); i++)
        bin[i] = (uint8_t)(i * 7);
    CU_ASSERT_EQUAL(kv_client_set(c, K("gs:a"), bin, sizeof(bin), NULL, &v1), 0);
    CU_ASSERT(v1 != 0);
    CU_ASSERT_EQUAL_FATAL(kv_client_get(c, K("gs:a"), &v), 0);
    CU_ASSERT(v.found);
    CU_ASSERT_EQUAL(v.len, sizeof(bin));
    CU_ASSERT(memcmp(v.data, bin, sizeof(bin)) == 0);
    CU_ASSERT_EQUAL(v.data[v.len], 0); /* NUL after the bytes */
    CU_ASSERT_EQUAL(v.version, v1);
    kv_client_value_free(&v);
    CU_ASSERT_PTR_NULL(v.data);
    kv_client_value_free(&v); /* twice is harmless */
    CU_ASSERT_EQUAL(kv_client_set(c, K("gs:a"), "", 0, NULL, &v2), 0);
    CU_ASSERT(v2 != v1);
    CU_ASSERT_EQUAL_FATAL(kv_client_get(c, K("gs:a"), &v), 0);
    CU_ASSERT(v.found && v.len == 0 && v.data && v.version == v2);
    kv_client_value_free(&v);
    kv_client_close(c);
}

/* Answers of every size class of the output path: built in the request's
 * scratch room (small), in a shared 16 KiB output buffer, in a buffer of
 * their own (above 16 KiB), and larger than the socket buffer (written in
 * several sends): each comes back byte for byte, interleaved with small
 * ones on the same connection. */
static void test_client_answers_of_every_size_intact(void)
{
    static const size_t sizes[] = {0, 1, 150, 200, 231, 232, 233, 1000, 16300, 16384, 16500,
                                   100000, 3u << 20};
    enum { NSIZES = sizeof(sizes) / sizeof(sizes[0]) };
    struct kv_client *c = connect_srv();
    uint8_t *buf = malloc((3u << 20) + NSIZES); /* value k starts at buf + k */

    CU_ASSERT_FATAL(buf != NULL);
    for (size_t i = 0; i < (3u << 20) + NSIZES; i++)
        buf[i] = (uint8_t)(i * 131 + (i >> 12));
    for (size_t k = 0; k < NSIZES; k++) {
        char key[32];
        struct kv_value v = {0};

        snprintf(key, sizeof(key), "sz:%zu", sizes[k]);
        CU_ASSERT_EQUAL(kv_client_set(c, key, strlen(key), buf + k, sizes[k], NULL, NULL), 0);
        CU_ASSERT_EQUAL(kv_client_set(c, K("sz:small"), "s", 1, NULL, NULL), 0);
        CU_ASSERT_EQUAL_FATAL(kv_client_get(c, key, strlen(key), &v), 0);
        CU_ASSERT(v.found && v.len == sizes[k]);
        CU_ASSERT(v.len == sizes[k] && memcmp(v.data, buf + k, v.len) == 0);
        kv_client_value_free(&v);
        CU_ASSERT_EQUAL_FATAL(kv_client_get(c, K("sz:small"), &v), 0);
        CU_ASSERT(v.len == 1 && v.data[0] == 's');
        kv_client_value_free(&v);
    }
    free(buf);
    kv_client_close(c);
}

static void test_client_statuses_map_to_codes_and_last_error(void)
{
    struct kv_client *c = connect_srv();
    struct kv_set_opts nx = {.nx = true};
    struct kv_value v = {.data = NULL, .len = 77};
    int64_t n = 0;

    CU_ASSERT_EQUAL(kv_client_get(c, K("map:missing"), &v), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(kv_client_last_status(c), KV_ST_NOT_FOUND);
    CU_ASSERT_EQUAL(v.len, 77); /* untouched on failure */
    CU_ASSERT_EQUAL(kv_client_set(c, K("map:a"), "text", 4, NULL, NULL), 0);
    CU_ASSERT_EQUAL(kv_client_last_status(c), KV_ST_OK);
    CU_ASSERT_EQUAL(kv_client_set(c, K("map:a"), "x", 1, &nx, NULL), KV_EEXISTS);
    CU_ASSERT_EQUAL(kv_client_last_status(c), KV_ST_EXISTS);
    CU_ASSERT_EQUAL(kv_client_incr(c, K("map:a"), 1, &n, NULL), KV_ENOTNUM);
    CU_ASSERT_EQUAL(kv_client_last_status(c), KV_ST_NOT_A_NUMBER);
    CU_ASSERT(strlen(kv_client_last_error(c)) > 0); /* our server explains */
    CU_ASSERT_EQUAL(kv_client_get(c, "", 0, &v), KV_ESTATUS);
    CU_ASSERT_EQUAL(kv_client_last_status(c), KV_ST_BAD_REQUEST);
    CU_ASSERT(strlen(kv_client_last_error(c)) > 0);
    /* an OK answer clears the message */
    CU_ASSERT_EQUAL(kv_client_ping(c, "", 0), 0);
    CU_ASSERT_STRING_EQUAL(kv_client_last_error(c), "");
    /* bad arguments: nothing sent, no status */
    CU_ASSERT_EQUAL(kv_client_del(c, NULL, 0, NULL), KV_EINVAL);
    CU_ASSERT_EQUAL(kv_client_last_status(c), -1);
    CU_ASSERT_EQUAL(kv_client_mget(c, NULL, 0, NULL), KV_EINVAL);
    CU_ASSERT_EQUAL(kv_client_get(c, NULL, 3, &v), KV_EINVAL);
    /* the connection is still in step */
    CU_ASSERT_EQUAL(kv_client_ping(c, "sync", 4), 0);
    kv_client_close(c);
}

static void test_client_set_conditions_and_ttl(void)
{
    struct kv_client *c = connect_srv();
    struct kv_set_opts o = {0};
    uint64_t ver = 0, ver2 = 0;
    int64_t ttl = 0;
    bool ex = true;

    o.xx = true;
    CU_ASSERT_EQUAL(kv_client_set(c, K("cond:a"), "1", 1, &o, NULL), KV_ENOTFOUND);
    o = (struct kv_set_opts){.cas = true, .cas_version = 5};
    CU_ASSERT_EQUAL(kv_client_set(c, K("cond:a"), "1", 1, &o, NULL), KV_ENOTFOUND);
    o = (struct kv_set_opts){.nx = true};
    CU_ASSERT_EQUAL(kv_client_set(c, K("cond:a"), "1", 1, &o, &ver), 0);
    o = (struct kv_set_opts){.cas = true, .cas_version = ver + 1000};
    CU_ASSERT_EQUAL(kv_client_set(c, K("cond:a"), "2", 1, &o, NULL), KV_EEXISTS);
    o.cas_version = ver;
    CU_ASSERT_EQUAL(kv_client_set(c, K("cond:a"), "3", 1, &o, &ver2), 0);
    CU_ASSERT(ver2 != ver);
    o = (struct kv_set_opts){.xx = true, .ttl_ms = 150};
    CU_ASSERT_EQUAL(kv_client_set(c, K("cond:a"), "4", 1, &o, NULL), 0);
    CU_ASSERT_EQUAL(kv_client_ttl(c, K("cond:a"), &ttl), 0);
    CU_ASSERT(ttl > 0 && ttl <= 150);
    usleep(300000);
    CU_ASSERT_EQUAL(kv_client_exists(c, K("cond:a"), &ex), 0);
    CU_ASSERT_FALSE(ex);
    kv_client_close(c);
}

static void test_client_del_exists_incr(void)
{
    struct kv_client *c = connect_srv();
    struct kv_bytes keys[] = {{"dei:a", 5}, {"dei:b", 5}, {"dei:none", 8}};
    uint64_t deleted = 0, ver1 = 0, ver2 = 0;
    int64_t n = 0;
    bool ex = false;

    CU_ASSERT_EQUAL(kv_client_incr(c, K("dei:a"), 40, &n, &ver1), 0);
    CU_ASSERT_EQUAL(n, 40);
    CU_ASSERT_EQUAL(kv_client_incr(c, K("dei:a"), 2, &n, &ver2), 0);
    CU_ASSERT_EQUAL(n, 42);
    CU_ASSERT(ver1 != ver2);
    CU_ASSERT_EQUAL(kv_client_incr(c, K("dei:a"), INT64_MAX, &n, NULL), KV_ENOTNUM);
    CU_ASSERT_EQUAL(kv_client_incr(c, K("dei:a"), 0, &n, NULL), 0);
    CU_ASSERT_EQUAL(n, 42); /* intact */
    CU_ASSERT_EQUAL(kv_client_set(c, K("dei:b"), "b", 1, NULL, NULL), 0);
    CU_ASSERT_EQUAL(kv_client_exists(c, K("dei:b"), &ex), 0);
    CU_ASSERT_TRUE(ex);
    CU_ASSERT_EQUAL(kv_client_del(c, keys, 3, &deleted), 0);
    CU_ASSERT_EQUAL(deleted, 2);
    CU_ASSERT_EQUAL(kv_client_del1(c, K("dei:a"), &deleted), 0);
    CU_ASSERT_EQUAL(deleted, 0);
    CU_ASSERT_EQUAL(kv_client_exists(c, K("dei:b"), &ex), 0);
    CU_ASSERT_FALSE(ex);
    kv_client_close(c);
}

static void test_client_mget_mset(void)
{
    enum { N = 200 };
    struct kv_client *c = connect_srv();
    struct kv_bytes keys[N + 1], vals[N];
    struct kv_value out[N + 1];
    static char kb[N + 1][32], vb[N][32];
    uint64_t vers[N];

    for (int i = 0; i < N; i++) {
        snprintf(kb[i], sizeof(kb[i]), "mm:%d", i);
        snprintf(vb[i], sizeof(vb[i]), "v%d", i * 3);
        keys[i] = (struct kv_bytes){kb[i], strlen(kb[i])};
        vals[i] = (struct kv_bytes){vb[i], strlen(vb[i])};
    }
    snprintf(kb[N], sizeof(kb[N]), "mm:missing");
    keys[N] = (struct kv_bytes){kb[N], strlen(kb[N])};
    CU_ASSERT_EQUAL_FATAL(kv_client_mset(c, keys, vals, N, 0, vers), 0);
    memset(out, 0, sizeof(out));
    CU_ASSERT_EQUAL_FATAL(kv_client_mget(c, keys, N + 1, out), 0);
    for (int i = 0; i < N; i++) {
        CU_ASSERT(out[i].found && out[i].len == vals[i].len &&
                  memcmp(out[i].data, vals[i].data, out[i].len) == 0);
        CU_ASSERT_EQUAL(out[i].version, vers[i]);
    }
    CU_ASSERT_FALSE(out[N].found);
    CU_ASSERT_PTR_NULL(out[N].data);
    kv_client_values_free(out, N + 1);
    kv_client_close(c);
}

/* An MGET answer of many missing keys is tiny per key but large once
 * unpacked: it must fit the decoder's bound. */
static void test_client_mget_many_missing_keys_fits_the_bound(void)
{
    enum { N = 20000 };
    struct kv_client *c = connect_srv();
    struct kv_bytes *keys = calloc(N, sizeof(*keys));
    struct kv_value *out = calloc(N, sizeof(*out));
    char(*kb)[16] = calloc(N, 16);
    bool any = false;

    CU_ASSERT_FATAL(keys && out && kb);
    for (int i = 0; i < N; i++) {
        snprintf(kb[i], 16, "none:%d", i);
        keys[i] = (struct kv_bytes){kb[i], strlen(kb[i])};
    }
    CU_ASSERT_EQUAL(kv_client_mget(c, keys, N, out), 0);
    for (int i = 0; i < N; i++)
        any = any || out[i].found;
    CU_ASSERT_FALSE(any);
    kv_client_values_free(out, N);
    free(keys);
    free(out);
    free(kb);
    kv_client_close(c);
}

static void test_client_expire_actions(void)
{
    struct kv_client *c = connect_srv();
    int64_t ttl = 0;

    CU_ASSERT_EQUAL(kv_client_set(c, K("exp:a"), "a", 1, NULL, NULL), 0);
    CU_ASSERT_EQUAL(kv_client_ttl(c, K("exp:a"), &ttl), 0);
    CU_ASSERT_EQUAL(ttl, -1);
    CU_ASSERT_EQUAL(kv_client_expire(c, K("exp:a"), KV_EXPIRE_SET, 10000, &ttl), 0);
    CU_ASSERT(ttl > 9000 && ttl <= 10000);
    CU_ASSERT_EQUAL(kv_client_expire(c, K("exp:a"), KV_EXPIRE_CLEAR, 0, &ttl), 0);
    CU_ASSERT_EQUAL(ttl, -1);
    CU_ASSERT_EQUAL(kv_client_expire(c, K("exp:a"), KV_EXPIRE_SET, 0, &ttl), KV_ESTATUS);
    CU_ASSERT_EQUAL(kv_client_last_status(c), KV_ST_BAD_REQUEST);
    CU_ASSERT_EQUAL(kv_client_ttl(c, K("exp:none"), &ttl), KV_ENOTFOUND);
    kv_client_close(c);
}

static void test_client_scan_pages_cover_the_prefix(void)
{
    enum { N = 37 };
    struct kv_client *c = connect_srv();
    int seen[N] = {0};
    uint64_t cursor = 0;
    int pages = 0, others = 0;
    char k[32];

    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof(k), "scan:%02d", i);
        CU_ASSERT_EQUAL(kv_client_set(c, K(k), "s", 1, NULL, NULL), 0);
    }
    CU_ASSERT_EQUAL(kv_client_set(c, K("scam:x"), "s", 1, NULL, NULL), 0);
    do {
        struct kv_scan s;

        CU_ASSERT_EQUAL_FATAL(kv_client_scan(c, cursor, K("scan:"), 5, &s), 0);
        CU_ASSERT(s.nkeys <= 4 * 5 + 64); /* count is a hint: about 5 */
        for (size_t i = 0; i < s.nkeys; i++) {
            int n = -1;

            if (s.keys[i].len == 7 && memcmp(s.keys[i].data, "scan:", 5) == 0)
                n = atoi((const char *)s.keys[i].data + 5);
            if (n >= 0 && n < N)
                seen[n]++;
            else
                others++;
        }
        cursor = s.cursor;
        kv_client_scan_free(&s);
        CU_ASSERT_PTR_NULL(s.keys);
    } while (cursor != 0 && ++pages < 1000);
    CU_ASSERT_EQUAL(cursor, 0);
    CU_ASSERT_EQUAL(others, 0);
    for (int i = 0; i < N; i++)
        CU_ASSERT(seen[i] >= 1);
    kv_client_close(c);
}

static void test_client_stats_and_flush(void)
{
    struct kv_client *c = connect_srv();
    struct kv_stats s;
    uint64_t removed = 0;
    bool ex = true;

    CU_ASSERT_EQUAL_FATAL(kv_client_stats(c, &s), 0);
    CU_ASSERT(s.n > 0);
    CU_ASSERT(s.text != NULL && strlen(s.text) > 0);
    CU_ASSERT_TRUE(kv_client_stats_find(&s, s.entries[0].name, NULL));
    CU_ASSERT_FALSE(kv_client_stats_find(&s, "no such figure", NULL));
    kv_client_stats_free(&s);
    CU_ASSERT_EQUAL(kv_client_set(c, K("fl:a"), "a", 1, NULL, NULL), 0);
    CU_ASSERT_EQUAL(kv_client_flush_all(c, &removed), 0);
    CU_ASSERT(removed >= 1);
    CU_ASSERT_EQUAL(kv_client_exists(c, K("fl:a"), &ex), 0);
    CU_ASSERT_FALSE(ex);
    kv_client_close(c);
}

static void test_client_auth_with_requirepass(void)
{
    struct kv_client *c = connect_port(srv_auth.port);
    struct kv_value v = {0};

    CU_ASSERT_EQUAL(kv_client_get(c, K("auth:a"), &v), KV_ESTATUS);
    CU_ASSERT_EQUAL(kv_client_last_status(c), KV_ST_NOAUTH);
    CU_ASSERT_EQUAL(kv_client_ping(c, "p", 1), 0);
    CU_ASSERT_EQUAL(kv_client_auth(c, K("wrong")), KV_ESTATUS);
    CU_ASSERT_EQUAL(kv_client_last_status(c), KV_ST_NOAUTH);
    CU_ASSERT_EQUAL(kv_client_auth(c, K("s3cret")), 0);
    CU_ASSERT_EQUAL(kv_client_get(c, K("auth:a"), &v), KV_ENOTFOUND);
    kv_client_close(c);
}

/* The pipelined interface: everything queued goes in one write, answers
 * are matched by request_id. */
static void test_client_pipelined_answers_by_id(void)
{
    enum { N = 500 };
    struct kv_client *c = connect_srv();
    static uint8_t seen[N];
    struct kv_response r;

    memset(seen, 0, sizeof(seen));
    for (uint64_t i = 0; i < N; i++) {
        /* GetRequest{key="pl"} by hand: 0x0A, 2, 'p', 'l' */
        CU_ASSERT_EQUAL_FATAL(kv_client_queue(c, KV_OP_GET, 100 + i, "\x0a\x02pl", 4), 0);
    }
    CU_ASSERT_EQUAL_FATAL(kv_client_flush(c), 0);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL_FATAL(kv_client_recv(c, &r), 0);
        CU_ASSERT_EQUAL(r.status, KV_ST_NOT_FOUND);
        CU_ASSERT_FATAL(r.request_id >= 100 && r.request_id < 100 + N);
        CU_ASSERT_EQUAL(seen[r.request_id - 100], 0);
        seen[r.request_id - 100] = 1;
    }
    kv_client_close(c);
}

/* Everything the calls return is given back by the free functions. */
static void test_client_returned_buffers_all_freed(void)
{
    struct kv_client *c = connect_srv();
    struct kv_bytes keys[] = {{"fr:a", 4}, {"fr:b", 4}};
    struct kv_value v = {0}, mv[2];
    struct kv_scan s;
    struct kv_stats st;
    int64_t before;

    CU_ASSERT_EQUAL(kv_client_set(c, K("fr:a"), "aaaa", 4, NULL, NULL), 0);
    CU_ASSERT_EQUAL(kv_client_get(c, K("fr:a"), &v), 0); /* grows the buffers once */
    kv_client_value_free(&v);
    before = client_bytes();
    CU_ASSERT_EQUAL(kv_client_get(c, K("fr:a"), &v), 0);
    CU_ASSERT(client_bytes() > before);
    kv_client_value_free(&v);
    CU_ASSERT_EQUAL(kv_client_mget(c, keys, 2, mv), 0);
    kv_client_values_free(mv, 2);
    CU_ASSERT_EQUAL(kv_client_scan(c, 0, K("fr:"), 10, &s), 0);
    kv_client_scan_free(&s);
    CU_ASSERT_EQUAL(kv_client_stats(c, &st), 0);
    kv_client_stats_free(&st);
    CU_ASSERT_EQUAL(kv_client_incr(c, K("fr:a"), 1, NULL, NULL), KV_ENOTNUM);
    CU_ASSERT_EQUAL(client_bytes(), before);
    kv_client_close(c);
}

/* ---- a fake server for answers the client must refuse ------------------------------ */
enum fake_mode { FAKE_WRONG_ID, FAKE_WRONG_OPCODE, FAKE_BAD_BODY, FAKE_CLOSE };

struct fake {
    int lfd;
    enum fake_mode mode;
};

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    int fd = accept(f->lfd, NULL, NULL);
    uint8_t in[4096], out[256];
    static const uint8_t bad_body[] = {0x0A, 0x7F, 'x'}; /* value longer than the body */
    size_t got = 0;
    struct kv_frame rq;

    if (fd < 0)
        return NULL;
    for (;;) {
        ssize_t n = recv(fd, in + got, sizeof(in) - got, 0);

        if (n <= 0)
            goto out;
        got += (size_t)n;
        if (kv_frame_decode(in, got, sizeof(in), 0, &rq) > 0)
            break;
    }
    if (f->mode != FAKE_CLOSE) {
        struct kv_frame rs = {.version = 1,
                              .flags = KV_FRAME_F_RESPONSE,
                              .opcode = rq.opcode,
                              .request_id = rq.request_id};
        const uint8_t *body = NULL;
        ssize_t len;

        if (f->mode == FAKE_WRONG_ID)
            rs.request_id++;
        if (f->mode == FAKE_WRONG_OPCODE)
            rs.opcode++;
        if (f->mode == FAKE_BAD_BODY) {
            body = bad_body;
            rs.body_len = sizeof(bad_body);
        }
        len = kv_frame_encode(&rs, body, out, sizeof(out));
        if (len > 0 && send(fd, out, (size_t)len, MSG_NOSIGNAL) < 0)
            goto out;
        usleep(100000);
    }
out:
    close(fd);
    return NULL;
}

static int fake_call(enum fake_mode mode)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    struct fake f = {.mode = mode};
    struct kv_client *c;
    struct kv_value v = {0};
    pthread_t tid;
    int rc;

    f.lfd = socket(AF_INET, SOCK_STREAM, 0);
    CU_ASSERT_FATAL(f.lfd >= 0);
    CU_ASSERT_FATAL(bind(f.lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CU_ASSERT_FATAL(listen(f.lfd, 1) == 0);
    CU_ASSERT_FATAL(getsockname(f.lfd, (struct sockaddr *)&sa, &sl) == 0);
    CU_ASSERT_FATAL(pthread_create(&tid, NULL, fake_main, &f) == 0);
    c = connect_port(ntohs(sa.sin_port));
    rc = kv_client_get(c, K("fake"), &v);
    kv_client_value_free(&v);
    kv_client_close(c);
    pthread_join(tid, NULL);
    close(f.lfd);
    return rc;
}

static void test_client_refuses_mismatched_or_broken_answers(void)
{
    CU_ASSERT_EQUAL(fake_call(FAKE_WRONG_ID), KV_EPROTO);
    CU_ASSERT_EQUAL(fake_call(FAKE_WRONG_OPCODE), KV_EPROTO);
    CU_ASSERT_EQUAL(fake_call(FAKE_BAD_BODY), KV_EPROTO);
    CU_ASSERT_EQUAL(fake_call(FAKE_CLOSE), KV_ECLOSED);
}

/* ---- kvclient as a subprocess ---------------------------------------------------------- */
/* Runs "kvclient -p PORT args" through sh; returns the exit code. */
static int kvclient(uint16_t port, const char *args)
{
    char cmd[PATH_MAX + 2048];
    int st;

    snprintf(cmd, sizeof(cmd), "%s -p %u %s", kvclient_path, port, args);
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf) {
        *len = fread(buf, 1, (size_t)n, f);
        buf[*len] = '\0';
    }
    fclose(f);
    return buf;
}

static void test_client_kvclient_test_run_passes(void)
{
    char args[256], *out, *last;
    size_t len = 0;
    unsigned passed = 0, failed = 1;

    snprintf(args, sizeof(args), "test > %s/selftest.out 2>&1", tmpdir);
    CU_ASSERT_EQUAL(kvclient(srv.port, args), 0);
    snprintf(args, sizeof(args), "%s/selftest.out", tmpdir);
    out = slurp(args, &len);
    CU_ASSERT_FATAL(out != NULL && len > 0);
    while (len > 0 && out[len - 1] == '\n')
        out[--len] = '\0';
    last = strrchr(out, '\n');
    last = last ? last + 1 : out;
    CU_ASSERT_EQUAL(sscanf(last, "%u passed, %u failed", &passed, &failed), 2);
    CU_ASSERT(passed >= 80);
    CU_ASSERT_EQUAL(failed, 0);
    if (failed || !strstr(out, "ok "))
        fprintf(stderr, "\n%s\n", out);
    free(out);
}

static void test_client_kvclient_test_run_with_password(void)
{
    char args[256], *out;
    size_t len = 0;

    snprintf(args, sizeof(args), "-a s3cret test --allow-flush > %s/selftest-auth.out 2>&1",
             tmpdir);
    CU_ASSERT_EQUAL(kvclient(srv_auth.port, args), 0);
    snprintf(args, sizeof(args), "%s/selftest-auth.out", tmpdir);
    out = slurp(args, &len);
    CU_ASSERT_FATAL(out != NULL);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "ok   AUTH with the right password answers OK"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "ok   FLUSH answers"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, " passed, 0 failed\n"));
    free(out);
}

static void test_client_kvclient_exit_codes(void)
{
    char args[512], *err;
    size_t len = 0;

    CU_ASSERT_EQUAL(kvclient(srv.port, "set cli:a hello > /dev/null"), 0);
    CU_ASSERT_EQUAL(kvclient(srv.port, "get cli:a > /dev/null"), 0);
    CU_ASSERT_EQUAL(kvclient(srv.port, "get cli:missing > /dev/null 2>&1"), 1);
    CU_ASSERT_EQUAL(kvclient(srv.port, "exists cli:a > /dev/null"), 0);
    CU_ASSERT_EQUAL(kvclient(srv.port, "exists cli:missing > /dev/null"), 1);
    /* NX on a taken key: "condition false", 1, not an error */
    CU_ASSERT_EQUAL(kvclient(srv.port, "set cli:a x --nx > /dev/null 2>&1"), 1);
    CU_ASSERT_EQUAL(kvclient(srv.port, "set cli:missing x --xx > /dev/null 2>&1"), 1);
    CU_ASSERT_EQUAL(kvclient(srv.port, "expire cli:a 0 > /dev/null 2>&1"), 2);
    CU_ASSERT_EQUAL(kvclient(srv.port, "bogus > /dev/null 2>&1"), 2);
    CU_ASSERT_EQUAL(kvclient(srv_auth.port, "get cli:a > /dev/null 2>&1"), 2);
    CU_ASSERT_EQUAL(kvclient(srv_auth.port, "-a s3cret get cli:a > /dev/null 2>&1"), 1);
    snprintf(args, sizeof(args), "incr cli:a > /dev/null 2> %s/incr.err", tmpdir);
    CU_ASSERT_EQUAL(kvclient(srv.port, args), 2);
    snprintf(args, sizeof(args), "%s/incr.err", tmpdir);
    err = slurp(args, &len);
    CU_ASSERT_PTR_NOT_NULL(err);
    CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, "NOT_A_NUMBER") : NULL);
    free(err);
    snprintf(args, sizeof(args), "incr cli:n -5 > %s/incr.out", tmpdir);
    CU_ASSERT_EQUAL(kvclient(srv.port, args), 0);
    snprintf(args, sizeof(args), "%s/incr.out", tmpdir);
    err = slurp(args, &len);
    CU_ASSERT(err && strcmp(err, "-5\n") == 0);
    free(err);
}

static void test_client_kvclient_stdin_value_is_byte_exact(void)
{
    char in[256], out[256], args[768];
    uint8_t data[70000];
    size_t len = 0;
    char *got;
    FILE *f;

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)((i * 2654435761u) >> 13); /* NULs, newlines, high bytes */
    data[0] = 0;
    data[sizeof(data) - 1] = '\n';
    snprintf(in, sizeof(in), "%s/value.in", tmpdir);
    snprintf(out, sizeof(out), "%s/value.out", tmpdir);
    f = fopen(in, "wb");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_FATAL(fwrite(data, 1, sizeof(data), f) == sizeof(data));
    fclose(f);
    snprintf(args, sizeof(args), "set cli:bin - < %s > /dev/null", in);
    CU_ASSERT_EQUAL(kvclient(srv.port, args), 0);
    snprintf(args, sizeof(args), "get cli:bin > %s", out);
    CU_ASSERT_EQUAL(kvclient(srv.port, args), 0);
    got = slurp(out, &len);
    CU_ASSERT_FATAL(got != NULL);
    CU_ASSERT_EQUAL(len, sizeof(data));
    CU_ASSERT(len == sizeof(data) && memcmp(got, data, len) == 0);
    free(got);
    /* mset takes '-' too */
    snprintf(args, sizeof(args), "mset cli:m1 one cli:m2 - < %s > /dev/null", in);
    CU_ASSERT_EQUAL(kvclient(srv.port, args), 0);
    snprintf(args, sizeof(args), "get cli:m2 > %s", out);
    CU_ASSERT_EQUAL(kvclient(srv.port, args), 0);
    got = slurp(out, &len);
    CU_ASSERT(got && len == sizeof(data) && memcmp(got, data, len) == 0);
    free(got);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("client", suite_init, suite_clean);
    if (!s)
        return 1;
    CU_add_test(s, "test_client_connect_refused_is_an_error_code",
                test_client_connect_refused_is_an_error_code);
    CU_add_test(s, "test_client_last_status_starts_empty", test_client_last_status_starts_empty);
    CU_add_test(s, "test_client_get_set_roundtrip_with_versions",
                test_client_get_set_roundtrip_with_versions);
    CU_add_test(s, "test_client_answers_of_every_size_intact",
                test_client_answers_of_every_size_intact);
    CU_add_test(s, "test_client_statuses_map_to_codes_and_last_error",
                test_client_statuses_map_to_codes_and_last_error);
    CU_add_test(s, "test_client_set_conditions_and_ttl", test_client_set_conditions_and_ttl);
    CU_add_test(s, "test_client_del_exists_incr", test_client_del_exists_incr);
    CU_add_test(s, "test_client_mget_mset", test_client_mget_mset);
    CU_add_test(s, "test_client_mget_many_missing_keys_fits_the_bound",
                test_client_mget_many_missing_keys_fits_the_bound);
    CU_add_test(s, "test_client_expire_actions", test_client_expire_actions);
    CU_add_test(s, "test_client_scan_pages_cover_the_prefix",
                test_client_scan_pages_cover_the_prefix);
    CU_add_test(s, "test_client_auth_with_requirepass", test_client_auth_with_requirepass);
    CU_add_test(s, "test_client_pipelined_answers_by_id", test_client_pipelined_answers_by_id);
    CU_add_test(s, "test_client_returned_buffers_all_freed",
                test_client_returned_buffers_all_freed);
    CU_add_test(s, "test_client_refuses_mismatched_or_broken_answers",
                test_client_refuses_mismatched_or_broken_answers);
    CU_add_test(s, "test_client_kvclient_test_run_passes", test_client_kvclient_test_run_passes);
    CU_add_test(s, "test_client_kvclient_test_run_with_password",
                test_client_kvclient_test_run_with_password);
    CU_add_test(s, "test_client_kvclient_exit_codes", test_client_kvclient_exit_codes);
    CU_add_test(s, "test_client_kvclient_stdin_value_is_byte_exact",
                test_client_kvclient_stdin_value_is_byte_exact);
    /* last: it removes every key */
    CU_add_test(s, "test_client_stats_and_flush", test_client_stats_and_flush);
    return kv_test_run_all();
}
