/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_server.c -- the key-value handlers, called directly through
 * the worker registry against a private segment (no sockets involved):
 * every opcode's semantics and status codes, AUTH, malformed bodies, and the
 * PROTO/PACKET accounting back to zero. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kv.pb-c.h"
#include "kv_call.h"
#include "kv_mem.h"
#include "kv_shm.h"
#include "kv_server.h"
#include "kv_test_util.h"
#include "kv_worker.h"
#include "pb.h"
#include "server_int.h"

static struct kv_config cfg;
static struct kv_server *srv;
static struct kv_session session;

static int suite_init(void)
{
    char err[256];

    kv_config_defaults(&cfg);
    cfg.port = 0;
    cfg.memory = 8u << 20;
    cfg.log_level = 0;
    snprintf(cfg.shm_name, sizeof(cfg.shm_name), "/libevkv-test-server-%d", (int)getpid());
    kv_shm_store_unlink(&cfg);
    return kv_server_create(&cfg, err, sizeof(err), &srv) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    kv_server_destroy(srv);
    kv_shm_store_unlink(&cfg);
    return 0;
}

struct result {
    uint16_t status;
    uint8_t *body;
    size_t len;
};

/* Runs opcode with a packed message body, as the workers do (prefetch hook
 * stages 0 and 1 first, when hooks is set); the result body is a copy. */
static struct result run_call(uint16_t op, const uint8_t *body, size_t len, int hooks)
{
    struct kv_call call = {.opcode = op, .body = body, .body_len = (uint32_t)len,
                           .session = &session};
    struct result r;

    if (hooks) {
        kv_worker_prefetch(srv->reg, &call, 0);
        kv_worker_prefetch(srv->reg, &call, 1);
    }
    kv_worker_run(srv->reg, &call);
    r.status = call.status;
    r.len = call.resp_len;
    r.body = malloc(r.len + 1);
    if (r.len)
        memcpy(r.body, call.resp, r.len);
    if (call.resp_owned)
        kv_mem_free(KV_MOD_PACKET, call.resp);
    return r;
}

static struct result run_raw(uint16_t op, const uint8_t *body, size_t len)
{
    return run_call(op, body, len, 1);
}

static struct result run(uint16_t op, const ProtobufCMessage *m)
{
    uint8_t buf[65536];
    size_t n = protobuf_c_message_pack(m, buf);

    return run_raw(op, buf, n);
}

static ProtobufCBinaryData bin(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};

    return b;
}

static uint16_t set_kv(const char *k, const char *v, uint64_t *version)
{
    Kv__SetRequest m = KV__SET_REQUEST__INIT;
    struct result r;

    m.key = bin(k);
    m.value = bin(v);
    r = run(2, &m.base);
    if (r.status == KV_ST_OK && version) {
        Kv__SetResponse *s = kv__set_response__unpack(NULL, r.len, r.body);
        *version = s ? s->version : 0;
        kv__set_response__free_unpacked(s, NULL);
    }
    free(r.body);
    return r.status;
}

/* Returns the status; on OK copies the value into out. */
static uint16_t get_kv(const char *k, char *out, size_t cap, uint64_t *version)
{
    Kv__GetRequest m = KV__GET_REQUEST__INIT;
    struct result r;

    m.key = bin(k);
    r = run(1, &m.base);
    if (r.status == KV_ST_OK) {
        Kv__GetResponse *g = kv__get_response__unpack(NULL, r.len, r.body);
        CU_ASSERT_FATAL(g != NULL);
        snprintf(out, cap, "%.*s", (int)g->value.len, (const char *)g->value.data);
        if (version)
            *version = g->version;
        kv__get_response__free_unpacked(g, NULL);
    }
    free(r.body);
    return r.status;
}

static void test_server_get_set_versions(void)
{
    char v[64];
    uint64_t v1 = 0, v2 = 0, gv = 0;

    CU_ASSERT_EQUAL(get_kv("hs:missing", v, sizeof(v), NULL), KV_ST_NOT_FOUND);
    CU_ASSERT_EQUAL(set_kv("hs:a", "one", &v1), KV_ST_OK);
    CU_ASSERT_EQUAL(get_kv("hs:a", v, sizeof(v), &gv), KV_ST_OK);
    CU_ASSERT_STRING_EQUAL(v, "one");
    CU_ASSERT_EQUAL(gv, v1);
    CU_ASSERT_EQUAL(set_kv("hs:a", "two", &v2), KV_ST_OK);
    CU_ASSERT_NOT_EQUAL(v1, v2);
    CU_ASSERT_EQUAL(get_kv("hs:a", v, sizeof(v), &gv), KV_ST_OK);
    CU_ASSERT_STRING_EQUAL(v, "two");
    CU_ASSERT_EQUAL(gv, v2);
    /* empty value is a value */
    CU_ASSERT_EQUAL(set_kv("hs:empty", "", NULL), KV_ST_OK);
    CU_ASSERT_EQUAL(get_kv("hs:empty", v, sizeof(v), NULL), KV_ST_OK);
    CU_ASSERT_STRING_EQUAL(v, "");
}

static void test_server_set_conditions(void)
{
    Kv__SetRequest m = KV__SET_REQUEST__INIT;
    struct result r;
    uint64_t ver = 0;
    char v[64];

    CU_ASSERT_EQUAL(set_kv("hs:c", "base", &ver), KV_ST_OK);
    m.key = bin("hs:c");
    m.value = bin("nx");
    m.only_if_absent = 1;
    r = run(2, &m.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_EXISTS);
    free(r.body);
    m.only_if_absent = 0;
    m.only_if_present = 1;
    m.key = bin("hs:c-missing");
    r = run(2, &m.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_NOT_FOUND);
    free(r.body);
    m.only_if_present = 0;
    m.has_cas = 1;
    m.cas_version = ver + 1000;
    r = run(2, &m.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_NOT_FOUND); /* CAS on a missing key */
    free(r.body);
    m.key = bin("hs:c");
    r = run(2, &m.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_EXISTS); /* version differs */
    free(r.body);
    CU_ASSERT_EQUAL(get_kv("hs:c", v, sizeof(v), NULL), KV_ST_OK);
    CU_ASSERT_STRING_EQUAL(v, "base");
    m.cas_version = ver;
    m.value = bin("swapped");
    r = run(2, &m.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_OK);
    free(r.body);
    CU_ASSERT_EQUAL(get_kv("hs:c", v, sizeof(v), NULL), KV_ST_OK);
    CU_ASSERT_STRING_EQUAL(v, "swapped");
    /* nx together with xx makes no sense */
    m.only_if_absent = 1;
    m.only_if_present = 1;
    r = run(2, &m.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    free(r.body);
}

static void test_server_del_exists(void)
{
    Kv__DelRequest d = KV__DEL_REQUEST__INIT;
    Kv__ExistsRequest e = KV__EXISTS_REQUEST__INIT;
    ProtobufCBinaryData keys[3] = {bin("hs:d1"), bin("hs:d2"), bin("hs:d-none")};
    struct result r;

    set_kv("hs:d1", "x", NULL);
    set_kv("hs:d2", "y", NULL);
    e.key = bin("hs:d1");
    r = run(4, &e.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_OK);
    Kv__ExistsResponse *er = kv__exists_response__unpack(NULL, r.len, r.body);
    CU_ASSERT(er && er->exists);
    kv__exists_response__free_unpacked(er, NULL);
    free(r.body);
    d.n_keys = 3;
    d.keys = keys;
    r = run(3, &d.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_OK);
    Kv__DelResponse *dr = kv__del_response__unpack(NULL, r.len, r.body);
    CU_ASSERT(dr && dr->deleted == 2);
    kv__del_response__free_unpacked(dr, NULL);
    free(r.body);
    r = run(4, &e.base);
    er = kv__exists_response__unpack(NULL, r.len, r.body);
    CU_ASSERT(er && !er->exists);
    kv__exists_response__free_unpacked(er, NULL);
    free(r.body);
}

static int64_t incr(const char *k, int64_t delta, uint16_t *status)
{
    Kv__IncrRequest m = KV__INCR_REQUEST__INIT;
    struct result r;
    int64_t v = 0;

    m.key = bin(k);
    m.delta = delta;
    r = run(5, &m.base);
    *status = r.status;
    if (r.status == KV_ST_OK) {
        Kv__IncrResponse *ir = kv__incr_response__unpack(NULL, r.len, r.body);
        v = ir ? ir->value : 0;
        kv__incr_response__free_unpacked(ir, NULL);
    }
    free(r.body);
    return v;
}

static void test_server_incr(void)
{
    uint16_t st;
    char v[64];

    CU_ASSERT_EQUAL(incr("hs:n", 5, &st), 5);
    CU_ASSERT_EQUAL(st, KV_ST_OK);
    CU_ASSERT_EQUAL(incr("hs:n", -7, &st), -2);
    CU_ASSERT_EQUAL(get_kv("hs:n", v, sizeof(v), NULL), KV_ST_OK);
    CU_ASSERT_STRING_EQUAL(v, "-2");
    set_kv("hs:text", "abc", NULL);
    incr("hs:text", 1, &st);
    CU_ASSERT_EQUAL(st, KV_ST_NOT_A_NUMBER);
    CU_ASSERT_EQUAL(get_kv("hs:text", v, sizeof(v), NULL), KV_ST_OK);
    CU_ASSERT_STRING_EQUAL(v, "abc");
    set_kv("hs:big", "9223372036854775807", NULL);
    incr("hs:big", 1, &st);
    CU_ASSERT_EQUAL(st, KV_ST_NOT_A_NUMBER);
    CU_ASSERT_EQUAL(get_kv("hs:big", v, sizeof(v), NULL), KV_ST_OK);
    CU_ASSERT_STRING_EQUAL(v, "9223372036854775807");
}

static void test_server_mget_mset(void)
{
    Kv__MSetRequest ms = KV__MSET_REQUEST__INIT;
    Kv__KeyValue kv[3] = {KV__KEY_VALUE__INIT, KV__KEY_VALUE__INIT, KV__KEY_VALUE__INIT};
    Kv__KeyValue *pkv[3] = {&kv[0], &kv[1], &kv[2]};
    Kv__MGetRequest mg = KV__MGET_REQUEST__INIT;
    ProtobufCBinaryData keys[4] = {bin("hs:m0"), bin("hs:m-none"), bin("hs:m1"), bin("hs:m2")};
    struct result r;
    const char *vals[3] = {"v0", "v1", "v2"};

    for (int i = 0; i < 3; i++) {
        kv[i].key = keys[i == 0 ? 0 : i + 1];
        kv[i].value = bin(vals[i]);
    }
    ms.n_pairs = 3;
    ms.pairs = pkv;
    r = run(7, &ms.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_OK);
    Kv__MSetResponse *msr = kv__mset_response__unpack(NULL, r.len, r.body);
    CU_ASSERT(msr && msr->n_versions == 3);
    kv__mset_response__free_unpacked(msr, NULL);
    free(r.body);

    mg.n_keys = 4;
    mg.keys = keys;
    r = run(6, &mg.base);
    CU_ASSERT_EQUAL_FATAL(r.status, KV_ST_OK);
    Kv__MGetResponse *g = kv__mget_response__unpack(NULL, r.len, r.body);
    CU_ASSERT_FATAL(g && g->n_entries == 4);
    CU_ASSERT(g->entries[0]->found && g->entries[0]->value.len == 2 &&
              memcmp(g->entries[0]->value.data, "v0", 2) == 0);
    CU_ASSERT(!g->entries[1]->found);
    CU_ASSERT(g->entries[3]->found && memcmp(g->entries[3]->value.data, "v2", 2) == 0);
    kv__mget_response__free_unpacked(g, NULL);
    free(r.body);
}

/* MGET of many keys (several lookup windows), present and absent, repeated,
 * with values of 0 to 20,000 bytes (one- to three-byte length prefixes,
 * answers growing from the request's scratch room into a packet): every
 * entry decodes with protobuf-c to exactly what GET answers. */
static void test_server_mget_many_keys_exact(void)
{
    enum { N = 70 };
    static char names[N][24];
    static uint8_t big[20000];
    ProtobufCBinaryData keys[N];
    Kv__MGetRequest mg = KV__MGET_REQUEST__INIT;
    uint64_t ver[N] = {0};
    struct result r;

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7 + 3);
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "mg:%d", i % 50); /* keys 50.. repeat */
        keys[i] = bin(names[i]);
    }
    for (int i = 0; i < 50; i += 2) { /* even keys exist, value size grows with i */
        Kv__SetRequest m = KV__SET_REQUEST__INIT;
        size_t vlen = i == 0 ? 0 : i == 48 ? sizeof(big) : (size_t)i * 13;

        m.key = keys[i];
        m.value.data = big;
        m.value.len = vlen;
        r = run(2, &m.base);
        CU_ASSERT_EQUAL(r.status, KV_ST_OK);
        Kv__SetResponse *sr = kv__set_response__unpack(NULL, r.len, r.body);
        ver[i] = sr ? sr->version : 0;
        kv__set_response__free_unpacked(sr, NULL);
        free(r.body);
    }
    for (int n = 1; n <= N; n += 23) {
        mg.n_keys = (size_t)n;
        mg.keys = keys;
        r = run(6, &mg.base);
        CU_ASSERT_EQUAL_FATAL(r.status, KV_ST_OK);
        Kv__MGetResponse *g = kv__mget_response__unpack(NULL, r.len, r.body);
        CU_ASSERT_FATAL(g != NULL);
        CU_ASSERT_EQUAL_FATAL(g->n_entries, (size_t)n);
        for (int i = 0; i < n; i++) {
            int k = i % 50;
            size_t vlen = k == 0 ? 0 : k == 48 ? sizeof(big) : (size_t)k * 13;

            if (k % 2) {
                CU_ASSERT(!g->entries[i]->found);
                continue;
            }
            CU_ASSERT(g->entries[i]->found);
            CU_ASSERT_EQUAL(g->entries[i]->version, ver[k]);
            CU_ASSERT_EQUAL(g->entries[i]->value.len, vlen);
            CU_ASSERT(vlen == 0 || memcmp(g->entries[i]->value.data, big, vlen) == 0);
        }
        kv__mget_response__free_unpacked(g, NULL);
        free(r.body);
    }
}

static int64_t expire(const char *k, Kv__ExpireRequest__Action a, uint64_t ms, uint16_t *st)
{
    Kv__ExpireRequest m = KV__EXPIRE_REQUEST__INIT;
    struct result r;
    int64_t ttl = -99;

    m.key = bin(k);
    m.action = a;
    m.ttl_ms = ms;
    r = run(8, &m.base);
    *st = r.status;
    if (r.status == KV_ST_OK) {
        Kv__ExpireResponse *e = kv__expire_response__unpack(NULL, r.len, r.body);
        ttl = e ? e->ttl_ms : -99;
        kv__expire_response__free_unpacked(e, NULL);
    }
    free(r.body);
    return ttl;
}

static void test_server_expire_ttl(void)
{
    uint16_t st;
    int64_t ttl;
    char v[64];

    set_kv("hs:t", "x", NULL);
    CU_ASSERT_EQUAL(expire("hs:t", KV__EXPIRE_REQUEST__ACTION__QUERY, 0, &st), -1);
    ttl = expire("hs:t", KV__EXPIRE_REQUEST__ACTION__SET, 10000, &st);
    CU_ASSERT_EQUAL(st, KV_ST_OK);
    CU_ASSERT(ttl > 9000 && ttl <= 10000);
    CU_ASSERT_EQUAL(expire("hs:t", KV__EXPIRE_REQUEST__ACTION__CLEAR, 0, &st), -1);
    CU_ASSERT_EQUAL(st, KV_ST_OK);
    expire("hs:t-none", KV__EXPIRE_REQUEST__ACTION__SET, 100, &st);
    CU_ASSERT_EQUAL(st, KV_ST_NOT_FOUND);
    expire("hs:t", KV__EXPIRE_REQUEST__ACTION__SET, 0, &st);
    CU_ASSERT_EQUAL(st, KV_ST_BAD_REQUEST);
    expire("hs:t", KV__EXPIRE_REQUEST__ACTION__SET, 30, &st);
    CU_ASSERT_EQUAL(st, KV_ST_OK);
    usleep(80000);
    CU_ASSERT_EQUAL(get_kv("hs:t", v, sizeof(v), NULL), KV_ST_NOT_FOUND);
}

struct seen {
    int n;
};

static void test_server_scan_prefix(void)
{
    Kv__ScanRequest m = KV__SCAN_REQUEST__INIT;
    char k[32];
    int found[50] = {0}, steps = 0;
    uint64_t cursor = 0;

    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof(k), "hs:scan:%02d", i);
        set_kv(k, "v", NULL);
    }
    m.prefix = bin("hs:scan:");
    m.count = 7;
    do {
        struct result r;

        m.cursor = cursor;
        r = run(9, &m.base);
        CU_ASSERT_EQUAL_FATAL(r.status, KV_ST_OK);
        Kv__ScanResponse *s = kv__scan_response__unpack(NULL, r.len, r.body);
        CU_ASSERT_FATAL(s != NULL);
        for (size_t i = 0; i < s->n_keys; i++) {
            int idx;
            CU_ASSERT(s->keys[i].len == 10 && memcmp(s->keys[i].data, "hs:scan:", 8) == 0);
            if (sscanf((const char *)s->keys[i].data + 8, "%2d", &idx) == 1 && idx >= 0 &&
                idx < 50)
                found[idx] = 1;
        }
        cursor = s->cursor;
        kv__scan_response__free_unpacked(s, NULL);
        free(r.body);
    } while (cursor != 0 && ++steps < 100000);
    for (int i = 0; i < 50; i++)
        CU_ASSERT_EQUAL(found[i], 1);
}

static void test_server_stats_and_flush(void)
{
    Kv__StatsRequest sm = KV__STATS_REQUEST__INIT;
    Kv__FlushRequest fm = KV__FLUSH_REQUEST__INIT;
    struct result r;
    int64_t keys = -1, huge = -1;
    char v[8];

    set_kv("hs:f", "x", NULL);
    r = run(10, &sm.base);
    CU_ASSERT_EQUAL_FATAL(r.status, KV_ST_OK);
    Kv__StatsResponse *s = kv__stats_response__unpack(NULL, r.len, r.body);
    CU_ASSERT_FATAL(s != NULL);
    for (size_t i = 0; i < s->n_entries; i++)
        if (strcmp(s->entries[i]->name, "keys") == 0)
            keys = s->entries[i]->value;
        else if (strcmp(s->entries[i]->name, "store_huge_page_bytes") == 0)
            huge = s->entries[i]->value;
    CU_ASSERT(keys >= 1);
    /* huge pages depend on the machine's tmpfs: reported, within the segment */
    CU_ASSERT(huge >= 0 && huge <= 8 * 1024 * 1024);
    CU_ASSERT(strstr(s->text, "REQUEST") != NULL);
    CU_ASSERT(strstr(s->text, "store mapped on huge pages") != NULL);
    kv__stats_response__free_unpacked(s, NULL);
    free(r.body);
    r = run(11, &fm.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_OK);
    free(r.body);
    CU_ASSERT_EQUAL(get_kv("hs:f", v, sizeof(v), NULL), KV_ST_NOT_FOUND);
}

static void test_server_bad_bodies(void)
{
    static const uint8_t garbage[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}; /* length past end */
    static const uint8_t bad_wire[] = {0x0f};
    Kv__GetRequest g = KV__GET_REQUEST__INIT;
    char longkey[5000];
    struct result r;

    for (int op = 1; op <= 12; op++) {
        if (op == 10 || op == 11)
            continue; /* StatsRequest/FlushRequest have no fields: anything skips */
        r = run_raw((uint16_t)op, garbage, sizeof(garbage));
        CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
        free(r.body);
        r = run_raw((uint16_t)op, bad_wire, sizeof(bad_wire));
        CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
        free(r.body);
    }
    r = run(1, &g.base); /* empty key */
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    CU_ASSERT(r.len > 0); /* carries an Error message */
    free(r.body);
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = '\0';
    g.key = bin(longkey);
    r = run(1, &g.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    free(r.body);
    r = run_raw(200, NULL, 0);
    CU_ASSERT_EQUAL(r.status, KV_ST_UNKNOWN_OPCODE);
    free(r.body);
}

/* A body may carry the key field twice: the last one counts (protobuf's
 * rule), although the prefetch hook hashed the first; with and without the
 * hooks, SET files the value under the last key and GET finds it there. */
static void test_server_repeated_key_field_last_wins(void)
{
    /* SetRequest{key:"rk:first", value:"v1", key:"rk:last"} */
    static const uint8_t set_two_keys[] = {0x0a, 8, 'r', 'k', ':', 'f', 'i', 'r', 's', 't',
                                           0x12, 2, 'v', '1',
                                           0x0a, 7, 'r', 'k', ':', 'l', 'a', 's', 't'};
    /* GetRequest{key:"rk:first", key:"rk:last"} */
    static const uint8_t get_two_keys[] = {0x0a, 8, 'r', 'k', ':', 'f', 'i', 'r', 's', 't',
                                           0x0a, 7, 'r', 'k', ':', 'l', 'a', 's', 't'};
    char v[16];
    struct result r;

    for (int hooks = 1; hooks >= 0; hooks--) {
        r = run_call(2, set_two_keys, sizeof(set_two_keys), hooks);
        CU_ASSERT_EQUAL(r.status, KV_ST_OK);
        free(r.body);
        CU_ASSERT_EQUAL(get_kv("rk:last", v, sizeof(v), NULL), KV_ST_OK);
        CU_ASSERT_STRING_EQUAL(v, "v1");
        CU_ASSERT_EQUAL(get_kv("rk:first", v, sizeof(v), NULL), KV_ST_NOT_FOUND);
        r = run_call(1, get_two_keys, sizeof(get_two_keys), hooks);
        CU_ASSERT_EQUAL(r.status, KV_ST_OK);
        CU_ASSERT(r.len >= 4 && memcmp(r.body + 2, "v1", 2) == 0);
        free(r.body);
        {
            Kv__DelRequest d = KV__DEL_REQUEST__INIT;
            ProtobufCBinaryData key = bin("rk:last");

            d.n_keys = 1;
            d.keys = &key;
            r = run(3, &d.base);
            CU_ASSERT_EQUAL(r.status, KV_ST_OK);
            free(r.body);
        }
    }
}

static void test_server_wire_types_checked_like_protobuf(void)
{
    static const uint8_t set_value_as_varint[] = {0x0a, 0x01, 'a', 0x10, 0x05};
    static const uint8_t set_ttl_as_bytes[] = {0x0a, 0x01, 'a', 0x12, 0x01, 'b', 0x1a, 0x02, 0, 0};
    static const uint8_t incr_delta_as_bytes[] = {0x0a, 0x01, 'n', 0x12, 0x01, 0x02};
    struct result r;

    r = run_raw(2, set_value_as_varint, sizeof(set_value_as_varint));
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    free(r.body);
    r = run_raw(2, set_ttl_as_bytes, sizeof(set_ttl_as_bytes));
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    free(r.body);
    r = run_raw(5, incr_delta_as_bytes, sizeof(incr_delta_as_bytes));
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    free(r.body);
}

/* A small MGET naming one big value many times must not make the server
 * build an answer larger than --max-body. */
static void test_server_mget_answer_bounded_by_max_body(void)
{
    Kv__MGetRequest mg = KV__MGET_REQUEST__INIT;
    ProtobufCBinaryData keys[3];
    struct kv_mem_snapshot before, after;
    char big[700];
    struct result r;
    size_t saved = cfg.max_body;

    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    CU_ASSERT_EQUAL(set_kv("hs:big-value", big, NULL), KV_ST_OK);
    for (int i = 0; i < 3; i++)
        keys[i] = bin("hs:big-value");
    mg.keys = keys;
    cfg.max_body = 1500; /* two copies fit, three do not */
    kv_mem_snapshot(&before);
    mg.n_keys = 2;
    r = run(6, &mg.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_OK);
    free(r.body);
    mg.n_keys = 3;
    r = run(6, &mg.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_TOO_LARGE);
    free(r.body);
    kv_mem_snapshot(&after);
    CU_ASSERT_EQUAL(after.mod[KV_MOD_PROTO].bytes, before.mod[KV_MOD_PROTO].bytes);
    cfg.max_body = saved;
}

static void test_server_auth_gate(void)
{
    Kv__AuthRequest a = KV__AUTH_REQUEST__INIT;
    char v[8];
    struct result r;

    strcpy(cfg.requirepass, "s3cret");
    memset(&session, 0, sizeof(session));
    CU_ASSERT_EQUAL(get_kv("hs:a", v, sizeof(v), NULL), KV_ST_NOAUTH);
    r = run_raw(0, (const uint8_t *)"p", 1);
    CU_ASSERT_EQUAL(r.status, KV_ST_OK); /* PING needs no AUTH */
    free(r.body);
    a.password = bin("wrong");
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(session.flags & KV_SESSION_CLOSE, 0);
        r = run(12, &a.base);
        CU_ASSERT_EQUAL(r.status, KV_ST_NOAUTH);
        free(r.body);
    }
    CU_ASSERT(session.flags & KV_SESSION_CLOSE); /* third failure closes */
    memset(&session, 0, sizeof(session));
    a.password = bin("s3cret");
    r = run(12, &a.base);
    CU_ASSERT_EQUAL(r.status, KV_ST_OK);
    free(r.body);
    CU_ASSERT_NOT_EQUAL(get_kv("hs:a", v, sizeof(v), NULL), KV_ST_NOAUTH);
    cfg.requirepass[0] = '\0';
    memset(&session, 0, sizeof(session));
}

static void test_server_no_heap_left_behind(void)
{
    struct kv_mem_snapshot before, after;

    kv_mem_snapshot(&before);
    test_server_mget_mset();
    test_server_bad_bodies();
    test_server_scan_prefix();
    test_server_stats_and_flush();
    kv_mem_snapshot(&after);
    CU_ASSERT_EQUAL(after.mod[KV_MOD_PROTO].bytes, before.mod[KV_MOD_PROTO].bytes);
    CU_ASSERT_EQUAL(after.mod[KV_MOD_PACKET].bytes, before.mod[KV_MOD_PACKET].bytes);
    CU_ASSERT(after.mod[KV_MOD_PROTO].allocs > before.mod[KV_MOD_PROTO].allocs);
}

/* The inline reader (one-byte tags, short varints and lengths) must agree
 * with the general one on every input: result, field and position. Edge
 * cases first (varints of 1..11 bytes, truncated at every byte, lengths at
 * the end of the buffer), then random bytes biased towards tags. */
static void pb_check_same(const uint8_t *buf, size_t len)
{
    struct pb_reader a = {buf, buf + len}, b = {buf, buf + len};

    for (int n = 0; n < 64; n++) {
        struct pb_field fa, fb;
        int ra, rb;

        memset(&fa, 0xAB, sizeof(fa));
        memset(&fb, 0xAB, sizeof(fb));
        ra = pb_next(&a, &fa);
        rb = pb_next_slow(&b, &fb);
        CU_ASSERT_EQUAL_FATAL(ra, rb);
        if (ra != 1)
            return;
        CU_ASSERT_PTR_EQUAL_FATAL(a.p, b.p);
        CU_ASSERT_EQUAL_FATAL(fa.number, fb.number);
        CU_ASSERT_EQUAL_FATAL(fa.wire, fb.wire);
        CU_ASSERT_EQUAL_FATAL(fa.u64, fb.u64);
        CU_ASSERT_PTR_EQUAL_FATAL(fa.data, fb.data);
        CU_ASSERT_EQUAL_FATAL(fa.len, fb.len);
    }
}

static void test_pb_inline_reader_matches_general(void)
{
    uint8_t buf[64];
    unsigned seed = 12345;

    for (int vbytes = 1; vbytes <= 11; vbytes++) {
        for (int cut = 0; cut <= vbytes + 1; cut++) {
            buf[0] = 0x18; /* field 3, varint */
            for (int k = 1; k <= vbytes; k++)
                buf[k] = (uint8_t)(k < vbytes ? 0x80 | (k * 37) : k * 5);
            pb_check_same(buf, (size_t)cut);
        }
    }
    for (int l = 0; l < 130; l++) { /* length field 2 at and past the end */
        buf[0] = 0x12;
        buf[1] = (uint8_t)l;
        memset(buf + 2, 'v', sizeof(buf) - 2);
        for (size_t cut = 0; cut <= sizeof(buf); cut += 7)
            pb_check_same(buf, cut);
    }
    for (int round = 0; round < 200000; round++) {
        size_t len = (size_t)(rand_r(&seed) % sizeof(buf));

        for (size_t i = 0; i < len; i++) {
            unsigned r = (unsigned)rand_r(&seed);
            /* tags of fields 0..16 with each wire type, small and continued bytes */
            buf[i] = (uint8_t)(r % 3 == 0 ? ((r >> 4) % 17) << 3 | ((r >> 9) % 8)
                               : r % 3 == 1 ? (r >> 4) % 20 : 0x80 | (r >> 4));
        }
        pb_check_same(buf, len);
    }
}

/* DEL and MSET are read in place: unknown fields are skipped and a known
 * field of the wrong wire type refuses the body, as protobuf-c does; the
 * last key/value of a pair wins; a key too long refuses the whole request
 * before anything is written; a full store answers OUT_OF_MEMORY. */
static void test_server_del_mset_in_place_decoding(void)
{
    /* DEL: an unknown varint field 2 around the key */
    static const uint8_t del_unknown[] = {0x10, 0x05, 0x0a, 0x05, 'h', 's', ':', 'i', '1', 0x18, 0x01};
    static const uint8_t del_bad_wire[] = {0x08, 0x05};           /* keys as a varint */
    static const uint8_t del_truncated[] = {0x0a, 0x09, 'h', 's'}; /* length past the end */
    /* MSET: pair {unknown 3, key, value, value again}, unknown top-level 5, ttl */
    static const uint8_t mset_ok[] = {0x0a, 0x0f, 0x18, 0x01, 0x0a, 0x05, 'h', 's', ':', 'i',
                                      '2', 0x12, 0x01, 'a', 0x12, 0x01, 'b', 0x28, 0x07,
                                      0x10, 0x00};
    static const uint8_t mset_ttl_wire[] = {0x12, 0x01, 'x'};             /* ttl as bytes */
    static const uint8_t mset_pair_wire[] = {0x08, 0x01};                 /* pair as a varint */
    static const uint8_t mset_key_wire[] = {0x0a, 0x02, 0x08, 0x01};      /* key as a varint */
    static const uint8_t mset_sub_bad[] = {0x0a, 0x02, 0x0a, 0x09};       /* key past the pair */
    static const uint8_t mset_ttl_big[] = {0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                           0xff, 0xff, 0x01};             /* 2^64 - 1 */
    uint8_t big[5000 + 16];
    char value[8];
    struct result r;

    set_kv("hs:i1", "x", NULL);
    r = run_raw(3, del_unknown, sizeof(del_unknown));
    CU_ASSERT_EQUAL(r.status, KV_ST_OK);
    free(r.body);
    CU_ASSERT_EQUAL(get_kv("hs:i1", value, sizeof(value), NULL), KV_ST_NOT_FOUND);
    r = run_raw(3, del_bad_wire, sizeof(del_bad_wire));
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    free(r.body);
    r = run_raw(3, del_truncated, sizeof(del_truncated));
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    free(r.body);

    r = run_raw(7, mset_ok, sizeof(mset_ok));
    CU_ASSERT_EQUAL(r.status, KV_ST_OK);
    free(r.body);
    CU_ASSERT_EQUAL(get_kv("hs:i2", value, sizeof(value), NULL), KV_ST_OK);
    CU_ASSERT_STRING_EQUAL(value, "b"); /* the last value field wins */
    r = run_raw(7, mset_ttl_wire, sizeof(mset_ttl_wire));
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    free(r.body);
    r = run_raw(7, mset_pair_wire, sizeof(mset_pair_wire));
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    free(r.body);
    r = run_raw(7, mset_key_wire, sizeof(mset_key_wire));
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    free(r.body);
    r = run_raw(7, mset_sub_bad, sizeof(mset_sub_bad));
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    free(r.body);
    r = run_raw(7, mset_ttl_big, sizeof(mset_ttl_big));
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    free(r.body);
    /* a key above --max-key (4096) in the second pair: nothing written */
    memset(big, 'k', sizeof(big));
    big[0] = 0x0a, big[1] = 0x05, big[2] = 0x0a, big[3] = 0x03, big[4] = 'h', big[5] = 's',
    big[6] = '3';
    big[7] = 0x0a, big[8] = 0x83, big[9] = 0x28; /* pair of 5123 bytes */
    big[10] = 0x0a, big[11] = 0x80, big[12] = 0x28; /* key of 5120 bytes */
    r = run_raw(7, big, 13 + 5120);
    CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    free(r.body);
    CU_ASSERT_EQUAL(get_kv("hs3", value, sizeof(value), NULL), KV_ST_NOT_FOUND);
}

static uint16_t set_big(const char *k, size_t n)
{
    Kv__SetRequest m = KV__SET_REQUEST__INIT;
    uint8_t *v = calloc(1, n), *buf = malloc(n + 64);
    struct result r;

    CU_ASSERT_FATAL(v && buf);
    m.key = bin(k);
    m.value.data = v;
    m.value.len = n;
    r = run_raw(2, buf, protobuf_c_message_pack(&m.base, buf));
    free(r.body);
    free(v);
    free(buf);
    return r.status;
}

/* A value larger than the whole store, then the store filled up: both
 * OUT_OF_MEMORY (with --eviction none), and FLUSH gives the room back. */
static void test_server_store_full_answers_out_of_memory(void)
{
    uint16_t st = KV_ST_OK;
    char k[32];
    struct result r;

    CU_ASSERT_EQUAL(set_big("hs:huge", 9u << 20), KV_ST_OUT_OF_MEMORY);
    for (int i = 0; i < 64 && st == KV_ST_OK; i++) {
        snprintf(k, sizeof(k), "hs:fill%d", i);
        st = set_big(k, 512u << 10);
    }
    CU_ASSERT_EQUAL(st, KV_ST_OUT_OF_MEMORY);
    r = run_raw(11, NULL, 0);
    CU_ASSERT_EQUAL(r.status, KV_ST_OK);
    free(r.body);
    CU_ASSERT_EQUAL(set_big("hs:fill0", 512u << 10), KV_ST_OK);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("server", suite_init, suite_clean);
    CU_add_test(s, "test_server_del_mset_in_place_decoding", test_server_del_mset_in_place_decoding);
    CU_add_test(s, "test_server_store_full_answers_out_of_memory",
                test_server_store_full_answers_out_of_memory);
    CU_add_test(s, "test_server_get_set_versions", test_server_get_set_versions);
    CU_add_test(s, "test_server_set_conditions", test_server_set_conditions);
    CU_add_test(s, "test_server_del_exists", test_server_del_exists);
    CU_add_test(s, "test_server_incr", test_server_incr);
    CU_add_test(s, "test_server_mget_mset", test_server_mget_mset);
    CU_add_test(s, "test_server_expire_ttl", test_server_expire_ttl);
    CU_add_test(s, "test_server_scan_prefix", test_server_scan_prefix);
    CU_add_test(s, "test_server_stats_and_flush", test_server_stats_and_flush);
    CU_add_test(s, "test_server_bad_bodies", test_server_bad_bodies);
    CU_add_test(s, "test_server_auth_gate", test_server_auth_gate);
    CU_add_test(s, "test_server_wire_types_checked_like_protobuf",
                test_server_wire_types_checked_like_protobuf);
    CU_add_test(s, "test_server_mget_answer_bounded_by_max_body",
                test_server_mget_answer_bounded_by_max_body);
    CU_add_test(s, "test_server_mget_many_keys_exact", test_server_mget_many_keys_exact);
    CU_add_test(s, "test_server_repeated_key_field_last_wins",
                test_server_repeated_key_field_last_wins);
    CU_add_test(s, "test_server_no_heap_left_behind", test_server_no_heap_left_behind);
    CU_add_test(s, "test_pb_inline_reader_matches_general", test_pb_inline_reader_matches_general);
    return kv_test_run_all();
}
