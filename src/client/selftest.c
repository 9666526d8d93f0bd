/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/client/selftest.c -- the correctness run of `kvclient test` (see
 * kv_selftest.h). Each check states the PROTOCOL.md behaviour it expects;
 * a failing check says what came back instead. The run goes on after a
 * failure so that one bug does not hide the others. */
#include "kv_selftest.h"

#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kv_client.h"
#include "kv_err.h"
#include "kv_mem.h"

#define SCAN_KEYS 25
#define PIPE_N    100

struct st {
    const struct kv_selftest_opts *o;
    struct kv_client *c; /* owned: the main connection (authenticated) */
    char prefix[48];
    size_t plen;
    unsigned passed, failed, skipped;
    bool have_data;  /* the key-value opcodes can be used */
    bool needs_auth; /* the server answered NOAUTH */
    bool usable;     /* the main connection may send any opcode */
    char why[640];
    char keys[4][256]; /* rotating buffers of key() */
    unsigned next_key;
};

static void line(struct st *t, const char *tag, const char *name, const char *detail)
{
    fprintf(t->o->out, "%s %s%s%s\n", tag, name, detail && *detail ? ": " : "",
            detail ? detail : "");
    fflush(t->o->out);
}

/* Records one check. detail (printf format) explains a failure. */
static bool check(struct st *t, bool ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool check(struct st *t, bool ok, const char *name, const char *fmt, ...)
{
    char detail[768] = "";

    if (ok) {
        t->passed++;
        line(t, "ok  ", name, NULL);
        return true;
    }
    if (fmt) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(detail, sizeof(detail), fmt, ap);
        va_end(ap);
    }
    t->failed++;
    line(t, "FAIL", name, detail);
    return false;
}

static void skip(struct st *t, const char *name, const char *why)
{
    t->skipped++;
    line(t, "skip", name, why);
}

/* What a call returned, for failure lines. */
static const char *got(struct st *t, struct kv_client *c, int rc)
{
    int st = kv_client_last_status(c);

    if (st < 0)
        snprintf(t->why, sizeof(t->why), "got %s (no answer)", kv_strerror(rc));
    else
        snprintf(t->why, sizeof(t->why), "got %s, status %s%s%s", kv_strerror(rc),
                 kv_status_name((unsigned)st), *kv_client_last_error(c) ? ": " : "",
                 kv_client_last_error(c));
    return t->why;
}

/* The test key named name, under the run's prefix (NUL-terminated). */
static const char *key(struct st *t, const char *name)
{
    char *k = t->keys[t->next_key++ % 4];

    snprintf(k, sizeof(t->keys[0]), "%s%s", t->prefix, name);
    return k;
}

static int connect_to(struct st *t, bool auth, struct kv_client **out)
{
    int rc = kv_client_connect(t->o->host, t->o->port, t->o->timeout_ms, out);

    bool authed = false;

    /* over shm the password (when given) is sent first: ATTACH needs it */
    if (rc == 0 && auth && t->o->password && (t->needs_auth || t->o->shm)) {
        rc = kv_client_auth(*out, t->o->password, strlen(t->o->password));
        if (rc != 0)
            kv_client_close(*out);
        authed = rc == 0;
    }
    /* over shm: attached once AUTH allows it (a connection kept unauthenticated on
     * purpose stays on the socket) */
    if (rc == 0 && t->o->shm && (authed || (!t->o->password && !t->needs_auth))) {
        rc = kv_client_attach(*out, 0, 0);
        if (rc != 0)
            kv_client_close(*out);
    }
    return rc;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* ---- raw frames ---------------------------------------------------------------- */
static size_t make_frame(uint8_t *out, size_t cap, uint16_t opcode, uint64_t id, const void *body,
                         size_t len)
{
    struct kv_frame f = {
        .version = KV_FRAME_VERSION, .opcode = opcode, .request_id = id, .body_len = (uint32_t)len};
    ssize_t n = kv_frame_encode(&f, body, out, cap);

    return n > 0 ? (size_t)n : 0;
}

static void fix_crc(uint8_t *frame, size_t len)
{
    kv_put_le32(frame + len - KV_FRAME_CRC,
                kv_frame_crc(frame, frame + KV_FRAME_HDR, len - KV_FRAME_OVERHEAD));
}

/* Sends bytes on a fresh connection and expects an answer with status, the
 * request's opcode and id, then the connection closed by the server.
 * status < 0: no answer at all, only the close. */
static void expect_close(struct st *t, const char *name, const uint8_t *bytes, size_t len,
                         int status, uint16_t opcode, uint64_t id)
{
    struct kv_client *c;
    struct kv_response r;
    int rc = connect_to(t, true, &c);

    if (rc != 0) {
        check(t, false, name, "connect: %s", kv_strerror(rc));
        return;
    }
    rc = kv_client_send_raw(c, bytes, len);
    if (rc == 0)
        rc = kv_client_recv(c, &r);
    if (status < 0) {
        check(t, rc == KV_ECLOSED, name, "expected the connection closed without an answer, got %s",
              rc == 0 ? kv_status_name(r.status) : kv_strerror(rc));
    } else if (rc != 0) {
        check(t, false, name, "expected %s, got %s", kv_status_name((unsigned)status),
              kv_strerror(rc));
    } else if (r.status != status || r.opcode != opcode || r.request_id != id) {
        check(t, false, name,
              "expected %s for opcode %u id %" PRIu64 ", got %s opcode %u id %" PRIu64,
              kv_status_name((unsigned)status), opcode, id, kv_status_name(r.status), r.opcode,
              r.request_id);
    } else {
        rc = kv_client_recv(c, &r);
        check(t, rc == KV_ECLOSED, name, "answer right, but the connection stayed open (%s)",
              rc == 0 ? "another answer came" : kv_strerror(rc));
    }
    kv_client_close(c);
}

/* Sends one raw request on the main connection; expects status and the
 * connection still usable. */
static void expect_status_open(struct st *t, const char *name, uint16_t opcode, const void *body,
                               size_t len, uint16_t status)
{
    struct kv_response r;
    int rc = kv_client_call(t->c, opcode, body, len, &r);

    if (rc != 0 && rc != KV_ESTATUS) {
        check(t, false, name, "expected %s, %s", kv_status_name(status), got(t, t->c, rc));
        return;
    }
    if (!check(t, r.status == status, name, "expected %s, %s", kv_status_name(status),
               got(t, t->c, rc)))
        return;
    rc = kv_client_ping(t->c, "open", 4);
    check(t, rc == 0, "  ... and the connection stays open", "%s", kv_strerror(rc));
}

/* ---- the checks ------------------------------------------------------------------ */
static void test_ping(struct st *t)
{
    check(t, kv_client_ping(t->c, "", 0) == 0, "PING with an empty body is echoed", NULL);
}

/* After AUTH: a server may refuse large bodies before it (--max-body-noauth). */
static void test_ping_large(struct st *t)
{
    static uint8_t big[100 * 1024];
    struct kv_response r;
    int rc;

    if (!t->usable) {
        skip(t, "PING with a 100 KiB body", "the main connection is not authenticated");
        return;
    }
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 31 + 7);
    rc = kv_client_ping(t->c, big, sizeof(big));
    check(t, rc == 0, "PING with a 100 KiB binary body is echoed", "%s", got(t, t->c, rc));
    rc = kv_client_queue(t->c, KV_OP_PING, UINT64_MAX, "id", 2);
    if (rc == 0)
        rc = kv_client_flush(t->c);
    if (rc == 0)
        rc = kv_client_recv(t->c, &r);
    check(t, rc == 0 && r.request_id == UINT64_MAX && r.status == KV_ST_OK && r.opcode == 0,
          "a response repeats request_id 2^64-1 and the opcode", "%s", kv_strerror(rc));
}

/* Finds out whether the server wants AUTH and whether it serves the
 * key-value opcodes; authenticates the main connection. */
static void test_auth(struct st *t)
{
    const char *k = key(t, "auth");
    struct kv_value v = {0};
    struct kv_client *c2;
    int rc = kv_client_get(t->c, k, strlen(k), &v);
    int st = kv_client_last_status(t->c);
    bool protected = st == KV_ST_NOAUTH;

    kv_client_value_free(&v);
    t->usable = st >= 0 && !protected;
    if (st == KV_ST_UNKNOWN_OPCODE) {
        check(t, false, "GET is served",
              "the server answers UNKNOWN_OPCODE: no key-value handlers");
        return;
    }
    if (st < 0) {
        check(t, false, "GET is answered", "%s", got(t, t->c, rc));
        return;
    }
    if (!protected) {
        t->have_data = true;
        skip(t, "NOAUTH before AUTH", "the server has no password (--requirepass)");
        return;
    }
    t->needs_auth = true;
    check(t, true, "GET before AUTH answers NOAUTH (password-protected server)", NULL);
    check(t, kv_client_ping(t->c, "noauth", 6) == 0, "PING is allowed before AUTH", NULL);
    if (!t->o->password) {
        skip(t, "AUTH and every key-value check", "the server wants a password: give -a PASSWORD");
        return;
    }
    rc = kv_client_auth(t->c, "kvtest-wrong-password", 21);
    check(t, rc == KV_ESTATUS && kv_client_last_status(t->c) == KV_ST_NOAUTH,
          "AUTH with a wrong password answers NOAUTH", "%s", got(t, t->c, rc));
    rc = kv_client_auth(t->c, t->o->password, strlen(t->o->password));
    t->usable =
        check(t, rc == 0, "AUTH with the right password answers OK", "%s", got(t, t->c, rc));
    rc = kv_client_get(t->c, k, strlen(k), &v);
    kv_client_value_free(&v);
    t->have_data = check(t, rc == KV_ENOTFOUND, "GET after AUTH is served", "%s", got(t, t->c, rc));

    /* repeated failures close the connection */
    if (connect_to(t, false, &c2) == 0) {
        for (int i = 0; i < 3; i++)
            rc = kv_client_auth(c2, "kvtest-wrong-password", 21);
        rc = kv_client_ping(c2, "x", 1);
        check(t, rc == KV_ECLOSED || rc == KV_EIO,
              "the server closes the connection after 3 failed AUTHs", "PING then gave %s",
              kv_strerror(rc));
        kv_client_close(c2);
    }
}

static void test_get_set(struct st *t)
{
    static uint8_t big[256 * 1024];
    uint8_t bin[256];
    const char *k = key(t, "a");
    size_t kl = strlen(k);
    struct kv_value v = {0};
    uint64_t v1 = 0, v2 = 0;
    int rc;

    rc = kv_client_get(t->c, k, kl, &v);
    check(t, rc == KV_ENOTFOUND && kv_client_last_status(t->c) == KV_ST_NOT_FOUND,
          "GET of a missing key answers NOT_FOUND", "%s", got(t, t->c, rc));
    rc = kv_client_set(t->c, k, kl, "hello", 5, NULL, &v1);
    check(t, rc == 0 && v1 != 0, "SET answers OK with a version", "%s, version %" PRIu64,
          got(t, t->c, rc), v1);
    rc = kv_client_get(t->c, k, kl, &v);
    check(t, rc == 0 && v.len == 5 && memcmp(v.data, "hello", 5) == 0 && v.version == v1,
          "GET returns the value and the version SET answered", "%s, len %zu version %" PRIu64,
          got(t, t->c, rc), v.len, v.version);
    kv_client_value_free(&v);
    rc = kv_client_set(t->c, k, kl, "world", 5, NULL, &v2);
    check(t, rc == 0 && v2 != v1, "SET over an existing key answers a new version",
          "%s, versions %" PRIu64 " then %" PRIu64, got(t, t->c, rc), v1, v2);

    for (int i = 0; i < 256; i++)
        bin[i] = (uint8_t)i;
    k = key(t, "bin");
    kl = strlen(k);
    rc = kv_client_set(t->c, k, kl, bin, sizeof(bin), NULL, NULL);
    if (rc == 0)
        rc = kv_client_get(t->c, k, kl, &v);
    check(t, rc == 0 && v.len == 256 && memcmp(v.data, bin, 256) == 0,
          "a binary value (every byte 0..255) round-trips", "%s", got(t, t->c, rc));
    kv_client_value_free(&v);

    k = key(t, "empty");
    kl = strlen(k);
    rc = kv_client_set(t->c, k, kl, "", 0, NULL, NULL);
    if (rc == 0)
        rc = kv_client_get(t->c, k, kl, &v);
    check(t, rc == 0 && v.found && v.len == 0, "an empty value round-trips", "%s",
          got(t, t->c, rc));
    kv_client_value_free(&v);

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 131 + (i >> 9));
    k = key(t, "big");
    kl = strlen(k);
    rc = kv_client_set(t->c, k, kl, big, sizeof(big), NULL, NULL);
    if (rc == 0)
        rc = kv_client_get(t->c, k, kl, &v);
    check(t, rc == 0 && v.len == sizeof(big) && memcmp(v.data, big, sizeof(big)) == 0,
          "a 256 KiB value round-trips", "%s", got(t, t->c, rc));
    kv_client_value_free(&v);

    /* keys at the limits */
    char *kmax = kv_mem_alloc(KV_MOD_CLIENT, 4097);

    if (kmax) {
        memset(kmax, 'k', 4097);
        memcpy(kmax, t->prefix, t->plen);
        rc = kv_client_set(t->c, kmax, 4096, "max", 3, NULL, NULL);
        if (rc == 0)
            rc = kv_client_get(t->c, kmax, 4096, &v);
        check(t, rc == 0 && v.len == 3, "a 4096-byte key is accepted", "%s", got(t, t->c, rc));
        kv_client_value_free(&v);
        kv_client_del1(t->c, kmax, 4096, NULL);
        rc = kv_client_set(t->c, kmax, 4097, "max", 3, NULL, NULL);
        check(t, rc == KV_ESTATUS && kv_client_last_status(t->c) == KV_ST_BAD_REQUEST,
              "SET of a 4097-byte key answers BAD_REQUEST", "%s", got(t, t->c, rc));
        rc = kv_client_get(t->c, kmax, 4097, &v);
        check(t, rc == KV_ESTATUS && kv_client_last_status(t->c) == KV_ST_BAD_REQUEST,
              "GET of a 4097-byte key answers BAD_REQUEST", "%s", got(t, t->c, rc));
        kv_client_value_free(&v);
        kv_mem_free(KV_MOD_CLIENT, kmax);
    }
    rc = kv_client_set(t->c, "", 0, "x", 1, NULL, NULL);
    check(t, rc == KV_ESTATUS && kv_client_last_status(t->c) == KV_ST_BAD_REQUEST,
          "SET of an empty key answers BAD_REQUEST", "%s", got(t, t->c, rc));
    rc = kv_client_get(t->c, "", 0, &v);
    check(t, rc == KV_ESTATUS && kv_client_last_status(t->c) == KV_ST_BAD_REQUEST,
          "GET of an empty key answers BAD_REQUEST", "%s", got(t, t->c, rc));
    kv_client_value_free(&v);
}

static bool value_is(struct st *t, const char *k, const char *want)
{
    struct kv_value v = {0};
    int rc = kv_client_get(t->c, k, strlen(k), &v);
    bool ok = rc == 0 && v.len == strlen(want) && memcmp(v.data, want, v.len) == 0;

    kv_client_value_free(&v);
    return ok;
}

static void test_set_conditions(struct st *t)
{
    const char *k = key(t, "cond");
    size_t kl = strlen(k);
    struct kv_set_opts nx = {.nx = true}, xx = {.xx = true}, cas = {.cas = true};
    uint64_t ver = 0, ver2 = 0;
    int rc;

    rc = kv_client_set(t->c, k, kl, "xx", 2, &xx, NULL);
    check(t, rc == KV_ENOTFOUND, "SET only-if-present on a missing key answers NOT_FOUND", "%s",
          got(t, t->c, rc));
    check(t, !value_is(t, k, "xx"), "  ... and stores nothing", NULL);
    cas.cas_version = 1;
    rc = kv_client_set(t->c, k, kl, "cas", 3, &cas, NULL);
    check(t, rc == KV_ENOTFOUND, "SET compare-and-swap on a missing key answers NOT_FOUND", "%s",
          got(t, t->c, rc));
    rc = kv_client_set(t->c, k, kl, "nx1", 3, &nx, &ver);
    check(t, rc == 0, "SET only-if-absent on a missing key answers OK", "%s", got(t, t->c, rc));
    rc = kv_client_set(t->c, k, kl, "nx2", 3, &nx, NULL);
    check(t, rc == KV_EEXISTS && kv_client_last_status(t->c) == KV_ST_EXISTS,
          "SET only-if-absent on an existing key answers EXISTS", "%s", got(t, t->c, rc));
    check(t, value_is(t, k, "nx1"), "  ... and leaves the value intact", NULL);
    rc = kv_client_set(t->c, k, kl, "xx1", 3, &xx, &ver);
    check(t, rc == 0 && value_is(t, k, "xx1"),
          "SET only-if-present on an existing key answers OK and stores", "%s", got(t, t->c, rc));
    cas.cas_version = ver;
    rc = kv_client_set(t->c, k, kl, "cas1", 4, &cas, &ver2);
    check(t, rc == 0 && ver2 != ver && value_is(t, k, "cas1"),
          "SET compare-and-swap with the current version answers OK with a new version", "%s",
          got(t, t->c, rc));
    cas.cas_version = ver; /* stale now */
    rc = kv_client_set(t->c, k, kl, "cas2", 4, &cas, NULL);
    check(t, rc == KV_EEXISTS, "SET compare-and-swap with a stale version answers EXISTS", "%s",
          got(t, t->c, rc));
    check(t, value_is(t, k, "cas1"), "  ... and leaves the value intact", NULL);
}

static void test_del_exists(struct st *t)
{
    char k1[256], k2[256], k3[256];
    struct kv_bytes keys[3];
    uint64_t deleted = 99;
    bool ex = false;
    int rc;

    snprintf(k1, sizeof(k1), "%s", key(t, "del1"));
    snprintf(k2, sizeof(k2), "%s", key(t, "del2"));
    snprintf(k3, sizeof(k3), "%s", key(t, "del3-missing"));
    kv_client_set(t->c, k1, strlen(k1), "1", 1, NULL, NULL);
    kv_client_set(t->c, k2, strlen(k2), "2", 1, NULL, NULL);
    rc = kv_client_exists(t->c, k1, strlen(k1), &ex);
    check(t, rc == 0 && ex, "EXISTS answers true for an existing key", "%s", got(t, t->c, rc));
    ex = true;
    rc = kv_client_exists(t->c, k3, strlen(k3), &ex);
    check(t, rc == 0 && !ex, "EXISTS answers OK with false for a missing key", "%s",
          got(t, t->c, rc));
    keys[0] = (struct kv_bytes){k1, strlen(k1)};
    keys[1] = (struct kv_bytes){k3, strlen(k3)};
    keys[2] = (struct kv_bytes){k2, strlen(k2)};
    rc = kv_client_del(t->c, keys, 3, &deleted);
    check(t, rc == 0 && deleted == 2, "DEL of 3 keys of which 2 exist answers deleted=2",
          "%s, deleted %" PRIu64, got(t, t->c, rc), deleted);
    rc = kv_client_exists(t->c, k2, strlen(k2), &ex);
    check(t, rc == 0 && !ex, "  ... and they are gone", "%s", got(t, t->c, rc));
    deleted = 99;
    rc = kv_client_del(t->c, keys, 3, &deleted);
    check(t, rc == 0 && deleted == 0, "DEL of missing keys answers OK with deleted=0",
          "%s, deleted %" PRIu64, got(t, t->c, rc), deleted);
}

static void test_incr(struct st *t)
{
    const char *k = key(t, "n");
    size_t kl = strlen(k);
    int64_t val = 0;
    uint64_t ver1 = 0, ver2 = 0;
    int rc;

    rc = kv_client_incr(t->c, k, kl, 5, &val, &ver1);
    check(t, rc == 0 && val == 5, "INCR of a missing key creates it at 0 + delta",
          "%s, value %" PRId64, got(t, t->c, rc), val);
    rc = kv_client_incr(t->c, k, kl, -7, &val, &ver2);
    check(t, rc == 0 && val == -2 && ver2 != ver1,
          "INCR with a negative delta answers the sum and a new version", "%s, value %" PRId64,
          got(t, t->c, rc), val);
    check(t, value_is(t, k, "-2"), "GET of an INCRed key gives its decimal text", NULL);

    kv_client_set(t->c, k, kl, "12abc", 5, NULL, NULL);
    rc = kv_client_incr(t->c, k, kl, 1, &val, NULL);
    check(t, rc == KV_ENOTNUM && kv_client_last_status(t->c) == KV_ST_NOT_A_NUMBER,
          "INCR of a non-integer value answers NOT_A_NUMBER", "%s", got(t, t->c, rc));
    check(t, value_is(t, k, "12abc"), "  ... and leaves the value intact", NULL);

    kv_client_set(t->c, k, kl, "9223372036854775806", 19, NULL, NULL);
    rc = kv_client_incr(t->c, k, kl, 1, &val, NULL);
    check(t, rc == 0 && val == INT64_MAX, "INCR reaches INT64_MAX", "%s", got(t, t->c, rc));
    rc = kv_client_incr(t->c, k, kl, 1, &val, NULL);
    check(t, rc == KV_ENOTNUM, "INCR past INT64_MAX answers NOT_A_NUMBER", "%s", got(t, t->c, rc));
    check(t, value_is(t, k, "9223372036854775807"), "  ... and leaves the value intact", NULL);
    kv_client_set(t->c, k, kl, "-9223372036854775808", 20, NULL, NULL);
    rc = kv_client_incr(t->c, k, kl, -1, &val, NULL);
    check(t, rc == KV_ENOTNUM, "INCR below INT64_MIN answers NOT_A_NUMBER", "%s", got(t, t->c, rc));
}

static void test_mget_mset(struct st *t)
{
    enum { N = 50 };
    char kbuf[N][64], vbuf[N][64];
    struct kv_bytes keys[N], vals[N], mk[4];
    struct kv_value out[4];
    uint64_t versions[N], va = 0, vb = 0;
    char ka[256], kb[256], kmiss[256];
    bool all = true;
    int rc;

    snprintf(ka, sizeof(ka), "%s", key(t, "mg-a"));
    snprintf(kb, sizeof(kb), "%s", key(t, "mg-b"));
    snprintf(kmiss, sizeof(kmiss), "%s", key(t, "mg-missing"));
    kv_client_set(t->c, ka, strlen(ka), "A", 1, NULL, &va);
    kv_client_set(t->c, kb, strlen(kb), "BB", 2, NULL, &vb);
    mk[0] = (struct kv_bytes){kb, strlen(kb)};
    mk[1] = (struct kv_bytes){kmiss, strlen(kmiss)};
    mk[2] = (struct kv_bytes){ka, strlen(ka)};
    mk[3] = (struct kv_bytes){kb, strlen(kb)};
    memset(out, 0, sizeof(out));
    rc = kv_client_mget(t->c, mk, 4, out);
    check(t,
          rc == 0 && out[0].found && out[0].len == 2 && memcmp(out[0].data, "BB", 2) == 0 &&
              out[0].version == vb && !out[1].found && out[2].found && out[2].len == 1 &&
              out[2].data[0] == 'A' && out[2].version == va && out[3].found && out[3].len == 2,
          "MGET answers every key in request order: found, value, version", "%s", got(t, t->c, rc));
    kv_client_values_free(out, 4);

    for (int i = 0; i < N; i++) {
        snprintf(kbuf[i], sizeof(kbuf[i]), "%sms%d", t->prefix, i);
        snprintf(vbuf[i], sizeof(vbuf[i]), "value-%d", i * i);
        keys[i] = (struct kv_bytes){kbuf[i], strlen(kbuf[i])};
        vals[i] = (struct kv_bytes){vbuf[i], strlen(vbuf[i])};
        versions[i] = 0;
    }
    rc = kv_client_mset(t->c, keys, vals, N, 0, versions);
    for (int i = 0; i < N; i++)
        all = all && versions[i] != 0;
    check(t, rc == 0 && all, "MSET of 50 pairs answers 50 versions", "%s", got(t, t->c, rc));
    all = true;
    for (int i = 0; i < N; i++) {
        struct kv_value v = {0};

        rc = kv_client_get(t->c, kbuf[i], strlen(kbuf[i]), &v);
        all = all && rc == 0 && v.len == strlen(vbuf[i]) && memcmp(v.data, vbuf[i], v.len) == 0 &&
              v.version == versions[i];
        kv_client_value_free(&v);
    }
    check(t, all, "  ... and GET returns each value with its version", NULL);
}

/* TTLs: SET --ttl, MSET ttl, EXPIRE SET/CLEAR/QUERY, then one wait. */
static void test_expiry(struct st *t)
{
    char ks[256], km[256], ke[256], kc[256], kmiss[256];
    struct kv_set_opts ttl = {.ttl_ms = 400};
    struct kv_bytes mk, mv = {"m", 1};
    struct kv_value v = {0};
    int64_t rem = 0;
    bool ex = true;
    int rc;

    snprintf(ks, sizeof(ks), "%s", key(t, "ttl-set"));
    snprintf(km, sizeof(km), "%s", key(t, "ttl-mset"));
    snprintf(ke, sizeof(ke), "%s", key(t, "ttl-expire"));
    snprintf(kc, sizeof(kc), "%s", key(t, "ttl-clear"));
    snprintf(kmiss, sizeof(kmiss), "%s", key(t, "ttl-missing"));

    rc = kv_client_set(t->c, ks, strlen(ks), "s", 1, &ttl, NULL);
    if (rc == 0)
        rc = kv_client_ttl(t->c, ks, strlen(ks), &rem);
    check(t, rc == 0 && rem > 0 && rem <= 400, "SET with a TTL: EXPIRE QUERY answers 0 < ms <= ttl",
          "%s, ttl %" PRId64, got(t, t->c, rc), rem);
    mk = (struct kv_bytes){km, strlen(km)};
    rc = kv_client_mset(t->c, &mk, &mv, 1, 400, NULL);
    if (rc == 0)
        rc = kv_client_ttl(t->c, km, strlen(km), &rem);
    check(t, rc == 0 && rem > 0 && rem <= 400, "MSET with a TTL: the pairs carry it",
          "%s, ttl %" PRId64, got(t, t->c, rc), rem);

    kv_client_set(t->c, ke, strlen(ke), "e", 1, NULL, NULL);
    rc = kv_client_ttl(t->c, ke, strlen(ke), &rem);
    check(t, rc == 0 && rem == -1, "EXPIRE QUERY of a key without expiry answers -1",
          "%s, ttl %" PRId64, got(t, t->c, rc), rem);
    rc = kv_client_expire(t->c, ke, strlen(ke), KV_EXPIRE_SET, 400, &rem);
    check(t, rc == 0 && rem > 0 && rem <= 400, "EXPIRE SET answers the remaining ms",
          "%s, ttl %" PRId64, got(t, t->c, rc), rem);

    kv_client_set(t->c, kc, strlen(kc), "c", 1, &ttl, NULL);
    rc = kv_client_expire(t->c, kc, strlen(kc), KV_EXPIRE_CLEAR, 0, &rem);
    check(t, rc == 0 && rem == -1, "EXPIRE CLEAR removes the expiry (answers -1)",
          "%s, ttl %" PRId64, got(t, t->c, rc), rem);

    rc = kv_client_expire(t->c, ke, strlen(ke), KV_EXPIRE_SET, 0, &rem);
    check(t, rc == KV_ESTATUS && kv_client_last_status(t->c) == KV_ST_BAD_REQUEST,
          "EXPIRE SET with ttl 0 answers BAD_REQUEST", "%s", got(t, t->c, rc));
    rc = kv_client_expire(t->c, kmiss, strlen(kmiss), KV_EXPIRE_SET, 1000, &rem);
    check(t, rc == KV_ENOTFOUND, "EXPIRE SET of a missing key answers NOT_FOUND", "%s",
          got(t, t->c, rc));
    rc = kv_client_ttl(t->c, kmiss, strlen(kmiss), &rem);
    check(t, rc == KV_ENOTFOUND, "EXPIRE QUERY of a missing key answers NOT_FOUND", "%s",
          got(t, t->c, rc));

    sleep_ms(600);
    rc = kv_client_get(t->c, ks, strlen(ks), &v);
    kv_client_value_free(&v);
    check(t, rc == KV_ENOTFOUND, "a key SET with a TTL is gone after it", "%s", got(t, t->c, rc));
    rc = kv_client_exists(t->c, km, strlen(km), &ex);
    check(t, rc == 0 && !ex, "a key MSET with a TTL is gone after it", "%s", got(t, t->c, rc));
    rc = kv_client_get(t->c, ke, strlen(ke), &v);
    kv_client_value_free(&v);
    check(t, rc == KV_ENOTFOUND, "a key given a TTL by EXPIRE is gone after it", "%s",
          got(t, t->c, rc));
    check(t, value_is(t, kc, "c"), "a key whose TTL was cleared is still there", NULL);
}

static void test_scan(struct st *t)
{
    char pfx[128], k[160];
    bool seen[SCAN_KEYS] = {false};
    size_t plen, pages = 0, total = 0, biggest = 0;
    uint64_t cursor = 0;
    bool foreign = false, ok = true;
    struct kv_scan s;
    int rc = 0;

    snprintf(pfx, sizeof(pfx), "%sscan:", t->prefix);
    plen = strlen(pfx);
    for (int i = 0; i < SCAN_KEYS; i++) {
        snprintf(k, sizeof(k), "%s%02d", pfx, i);
        kv_client_set(t->c, k, strlen(k), "s", 1, NULL, NULL);
    }
    /* a key that shares the run's prefix but not the scan's */
    snprintf(k, sizeof(k), "%sscan", t->prefix);
    kv_client_set(t->c, k, strlen(k), "not-under-scan:", 15, NULL, NULL);
    do {
        rc = kv_client_scan(t->c, cursor, pfx, plen, 7, &s);
        if (rc != 0)
            break;
        for (size_t i = 0; i < s.nkeys; i++) {
            int n;

            if (s.keys[i].len != plen + 2 || memcmp(s.keys[i].data, pfx, plen) != 0) {
                foreign = true;
                continue;
            }
            n = (s.keys[i].data[plen] - '0') * 10 + (s.keys[i].data[plen + 1] - '0');
            if (n >= 0 && n < SCAN_KEYS)
                seen[n] = true;
            else
                foreign = true;
        }
        total += s.nkeys;
        biggest = s.nkeys > biggest ? s.nkeys : biggest;
        cursor = s.cursor;
        kv_client_scan_free(&s);
    } while (cursor != 0 && ++pages < 10000);
    for (int i = 0; i < SCAN_KEYS; i++)
        ok = ok && seen[i];
    check(t, rc == 0 && ok, "SCAN with a prefix returns every key under it, ending at cursor 0",
          "%s, %zu keys seen", got(t, t->c, rc), total);
    check(t, rc == 0 && !foreign, "SCAN returns only keys under the prefix", NULL);
    /* count is a hint (see below): a page holds about count keys */
    check(t, rc == 0 && biggest <= 4 * 7 + 64, "SCAN count bounds each page", "a page of %zu keys",
          biggest);
    /* count 0: the server's default; pages may be empty before the end */
    cursor = 0;
    total = biggest = pages = 0;
    do {
        rc = kv_client_scan(t->c, cursor, pfx, plen, 0, &s);
        if (rc != 0)
            break;
        total += s.nkeys;
        biggest = s.nkeys > biggest ? s.nkeys : biggest;
        cursor = s.cursor;
        kv_client_scan_free(&s);
    } while (cursor != 0 && ++pages < 10000);
    /* count is a hint, as in Redis: a step finishes the buckets it started,
     * so a page holds about count keys (the test allows 4 * count + 64) */
    check(t, rc == 0 && biggest <= 4 * 10 + 64 && total >= SCAN_KEYS,
          "SCAN count 0 means pages of about 10 keys", "%s, biggest page %zu, %zu keys",
          got(t, t->c, rc), biggest, total);
    rc = kv_client_scan(t->c, 0, NULL, 0, 5, &s);
    check(t, rc == 0 && s.nkeys <= 4 * 5 + 64, "SCAN without a prefix answers OK", "%s",
          got(t, t->c, rc));
    if (rc == 0)
        kv_client_scan_free(&s);
}

static void test_stats(struct st *t)
{
    struct kv_stats s;
    int rc = kv_client_stats(t->c, &s);

    check(t, rc == 0 && s.n > 0, "STATS answers named figures", "%s", got(t, t->c, rc));
    if (rc == 0) {
        check(t, s.text[0] != '\0', "STATS answers the text dump", NULL);
        kv_client_stats_free(&s);
    }
}

static void test_pipeline(struct st *t)
{
    bool seen[2 * PIPE_N] = {false};
    struct kv_bytes keys[PIPE_N];
    struct kv_value *vals;
    char(*kbuf)[64] = kv_mem_alloc(KV_MOD_CLIENT, PIPE_N * 64);
    uint8_t body[128];
    bool ok = true;
    int rc = 0;

    vals = kv_mem_calloc(KV_MOD_CLIENT, PIPE_N * sizeof(*vals));
    if (!kbuf || !vals) {
        check(t, false, "pipelining", "out of memory");
        goto out;
    }
    for (int i = 0; i < PIPE_N && rc == 0; i++) {
        size_t kl, n = 0;

        snprintf(kbuf[i], 64, "%spipe%d", t->prefix, i);
        kl = strlen(kbuf[i]);
        keys[i] = (struct kv_bytes){kbuf[i], kl};
        /* SetRequest{key, value = key} encoded by hand */
        body[n++] = 0x0A;
        body[n++] = (uint8_t)kl;
        memcpy(body + n, kbuf[i], kl);
        n += kl;
        body[n++] = 0x12;
        body[n++] = (uint8_t)kl;
        memcpy(body + n, kbuf[i], kl);
        n += kl;
        rc = kv_client_queue(t->c, KV_OP_SET, 1000000 + (uint64_t)i, body, n);
        if (rc == 0)
            rc = kv_client_queue(t->c, KV_OP_PING, 2000000 + (uint64_t)i, "p", 1);
    }
    if (rc == 0)
        rc = kv_client_flush(t->c);
    for (int i = 0; i < 2 * PIPE_N && rc == 0; i++) {
        struct kv_response r;
        uint64_t idx;

        rc = kv_client_recv(t->c, &r);
        if (rc != 0)
            break;
        idx = r.request_id >= 2000000 ? r.request_id - 2000000 + PIPE_N : r.request_id - 1000000;
        if (idx >= 2 * PIPE_N || seen[idx] || r.status != KV_ST_OK ||
            r.opcode != (idx < PIPE_N ? KV_OP_SET : KV_OP_PING))
            ok = false;
        else
            seen[idx] = true;
    }
    check(t, rc == 0 && ok,
          "200 pipelined SET/PING requests in one write: each id answered once, OK", "%s",
          kv_strerror(rc));
    rc = kv_client_mget(t->c, keys, PIPE_N, vals);
    ok = rc == 0;
    for (int i = 0; ok && i < PIPE_N; i++)
        ok = vals[i].found && vals[i].len == keys[i].len &&
             memcmp(vals[i].data, keys[i].data, vals[i].len) == 0;
    check(t, ok, "  ... and MGET of the 100 keys returns every pipelined value", "%s",
          got(t, t->c, rc));
    kv_client_values_free(vals, PIPE_N);
out:
    kv_mem_free(KV_MOD_CLIENT, vals);
    kv_mem_free(KV_MOD_CLIENT, kbuf);
}

static void test_bad_requests(struct st *t)
{
    static const uint8_t garbage[] = {0xFF, 0xFF, 0xFF, 0xFF};
    static const uint8_t truncated[] = {0x0A, 0x10, 'a', 'b'};
    static const uint8_t empty_key_del[] = {0x0A, 0x00};

    if (!t->usable) {
        skip(t, "UNKNOWN_OPCODE and BAD_REQUEST", "the main connection is not authenticated");
        return;
    }
    expect_status_open(t, "opcode 999 answers UNKNOWN_OPCODE", 999, "x", 1, KV_ST_UNKNOWN_OPCODE);
    if (!t->have_data)
        return;
    expect_status_open(t, "a GET body that does not decode answers BAD_REQUEST", KV_OP_GET, garbage,
                       sizeof(garbage), KV_ST_BAD_REQUEST);
    expect_status_open(t, "a SET body with a truncated field answers BAD_REQUEST", KV_OP_SET,
                       truncated, sizeof(truncated), KV_ST_BAD_REQUEST);
    expect_status_open(t, "DEL of an empty key answers BAD_REQUEST", KV_OP_DEL, empty_key_del,
                       sizeof(empty_key_del), KV_ST_BAD_REQUEST);
    expect_status_open(t, "GET with an empty body (empty key) answers BAD_REQUEST", KV_OP_GET, NULL,
                       0, KV_ST_BAD_REQUEST);
}

static void test_bad_frames(struct st *t)
{
    uint8_t f[256];
    size_t n;
    struct kv_value v = {0};
    const char *k = key(t, "crc");
    uint8_t body[128];
    size_t bl = 0;
    int rc;

    n = make_frame(f, sizeof(f), KV_OP_PING, 11, "", 0);
    f[1] ^= 0xFF;
    expect_close(t, "a wrong magic: closed without an answer", f, n, -1, 0, 0);

    n = make_frame(f, sizeof(f), KV_OP_PING, 12, "", 0);
    f[4] = 2;
    fix_crc(f, n);
    expect_close(t, "version 2: BAD_FRAME, then closed", f, n, KV_ST_BAD_FRAME, KV_OP_PING, 12);

    n = make_frame(f, sizeof(f), KV_OP_PING, 13, "", 0);
    f[5] = 0x02;
    fix_crc(f, n);
    expect_close(t, "a reserved flag bit: BAD_FRAME, then closed", f, n, KV_ST_BAD_FRAME,
                 KV_OP_PING, 13);

    n = make_frame(f, sizeof(f), KV_OP_PING, 14, "", 0);
    f[5] = KV_FRAME_F_RESPONSE;
    fix_crc(f, n);
    expect_close(t, "the response flag on a request: BAD_FRAME, then closed", f, n, KV_ST_BAD_FRAME,
                 KV_OP_PING, 14);

    n = make_frame(f, sizeof(f), KV_OP_PING, 15, "", 0);
    f[22] = 1;
    fix_crc(f, n);
    expect_close(t, "a non-zero reserved field: BAD_FRAME, then closed", f, n, KV_ST_BAD_FRAME,
                 KV_OP_PING, 15);

    n = make_frame(f, sizeof(f), KV_OP_PING, 16, "", 0);
    f[20] = 3;
    fix_crc(f, n);
    expect_close(t, "a non-zero status in a request: BAD_FRAME, then closed", f, n, KV_ST_BAD_FRAME,
                 KV_OP_PING, 16);

    /* a SET with a bad crc must not be executed */
    if (t->have_data) {
        size_t kl = strlen(k);

        body[bl++] = 0x0A;
        body[bl++] = (uint8_t)kl;
        memcpy(body + bl, k, kl);
        bl += kl;
        body[bl++] = 0x12;
        body[bl++] = 3;
        memcpy(body + bl, "crc", 3);
        bl += 3;
        n = make_frame(f, sizeof(f), KV_OP_SET, 17, body, bl);
    } else {
        n = make_frame(f, sizeof(f), KV_OP_PING, 17, "crc", 3);
    }
    f[n - 1] ^= 0x5A;
    expect_close(t, "a crc mismatch: CRC_MISMATCH, then closed", f, n, KV_ST_CRC_MISMATCH,
                 t->have_data ? KV_OP_SET : KV_OP_PING, 17);
    if (t->have_data) {
        rc = kv_client_get(t->c, k, strlen(k), &v);
        kv_client_value_free(&v);
        check(t, rc == KV_ENOTFOUND, "  ... and the request was not executed", "%s",
              got(t, t->c, rc));
    }

    /* a header announcing 1 GiB of body: refused before any body is sent */
    n = make_frame(f, sizeof(f), KV_OP_PING, 18, "", 0);
    kv_put_le32(f + 16, 1u << 30);
    expect_close(t, "body_len 1 GiB: TOO_LARGE, then closed", f, KV_FRAME_HDR, KV_ST_TOO_LARGE,
                 KV_OP_PING, 18);

    rc = kv_client_ping(t->c, "after", 5);
    check(t, rc == 0, "another connection is unaffected by the bad frames", "%s", kv_strerror(rc));
}

static void test_flush(struct st *t)
{
    const char *k = key(t, "flush");
    uint64_t removed = 0;
    bool ex = true;
    int rc;

    if (!t->o->allow_flush) {
        skip(t, "FLUSH", "would remove every key of the server: give --allow-flush");
        return;
    }
    kv_client_set(t->c, k, strlen(k), "f", 1, NULL, NULL);
    rc = kv_client_flush_all(t->c, &removed);
    check(t, rc == 0 && removed >= 1, "FLUSH answers how many keys it removed",
          "%s, removed %" PRIu64, got(t, t->c, rc), removed);
    rc = kv_client_exists(t->c, k, strlen(k), &ex);
    check(t, rc == 0 && !ex, "  ... and the keys are gone", "%s", got(t, t->c, rc));
}

/* Deletes every key under the run's prefix (SCAN + DEL), then checks. */
static void cleanup(struct st *t)
{
    uint64_t cursor = 0;
    size_t left = 0, rounds = 0;
    struct kv_scan s;
    int rc;

    do {
        rc = kv_client_scan(t->c, cursor, t->prefix, t->plen, 100, &s);
        if (rc != 0)
            break;
        if (s.nkeys) {
            struct kv_bytes *keys = kv_mem_alloc(KV_MOD_CLIENT, s.nkeys * sizeof(*keys));

            for (size_t i = 0; keys && i < s.nkeys; i++)
                keys[i] = (struct kv_bytes){s.keys[i].data, s.keys[i].len};
            if (keys)
                kv_client_del(t->c, keys, s.nkeys, NULL);
            kv_mem_free(KV_MOD_CLIENT, keys);
        }
        cursor = s.cursor;
        kv_client_scan_free(&s);
    } while (cursor != 0 && ++rounds < 100000);
    cursor = 0;
    do {
        rc = kv_client_scan(t->c, cursor, t->prefix, t->plen, 100, &s);
        if (rc != 0)
            break;
        left += s.nkeys;
        cursor = s.cursor;
        kv_client_scan_free(&s);
    } while (cursor != 0 && ++rounds < 200000);
    check(t, rc == 0 && left == 0, "cleanup: no key left under the run's prefix", "%s, %zu left",
          got(t, t->c, rc), left);
}

int kv_selftest_run(const struct kv_selftest_opts *o, unsigned *passed, unsigned *failed)
{
    struct st t = {.o = o};
    int rc = kv_client_connect(o->host, o->port, o->timeout_ms, &t.c);

    if (rc == 0 && o->shm && o->password)
        rc = kv_client_auth(t.c, o->password, strlen(o->password));
    if (rc == 0 && o->shm)
        rc = kv_client_attach(t.c, 0, 0);
    if (rc != 0) {
        if (t.c)
            kv_client_close(t.c);
        return rc;
    }
    snprintf(t.prefix, sizeof(t.prefix), "kvtest:%d:", (int)getpid());
    t.plen = strlen(t.prefix);
    if (o->shm)
        fprintf(o->out, "kvclient test over shared-memory rings of %s, keys under \"%s\"\n",
                o->host, t.prefix);
    else if (kv_client_host_is_path(o->host))
        fprintf(o->out, "kvclient test against unix socket %s, keys under \"%s\"\n", o->host,
                t.prefix);
    else
        fprintf(o->out, "kvclient test against %s:%u, keys under \"%s\"\n", o->host, o->port,
                t.prefix);

    test_ping(&t);
    test_auth(&t);
    test_ping_large(&t);
    if (t.have_data) {
        test_get_set(&t);
        test_set_conditions(&t);
        test_del_exists(&t);
        test_incr(&t);
        test_mget_mset(&t);
        test_expiry(&t);
        test_scan(&t);
        test_stats(&t);
        test_pipeline(&t);
    }
    test_bad_requests(&t);
    test_bad_frames(&t);
    skip(&t, "OUT_OF_MEMORY", "would need to fill the live server's store");
    skip(&t, "TOO_LARGE for a value", "depends on the server's --max-body");
    skip(&t, "BUSY, INTERNAL", "cannot be provoked from a client");
    if (t.have_data) {
        cleanup(&t);
        test_flush(&t);
    }
    kv_client_close(t.c);
    if (t.skipped)
        fprintf(o->out, "%u skipped\n", t.skipped);
    fprintf(o->out, "%u passed, %u failed\n", t.passed, t.failed);
    *passed = t.passed;
    *failed = t.failed;
    return 0;
}
