/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* fuzz/fuzz_handlers.c -- libFuzzer harness for the key-value handlers
 * (src/server/handlers.c, pb.c and the protobuf-c decoding behind them).
 *
 * A kv_server is built once on a private 4 MiB segment (not started: no
 * threads, no sockets used) and every input becomes one call run through
 * the worker registry, exactly as a worker runs it:
 *
 *   byte 0   low 4 bits: opcode 0..12, or (13, 14, 15) -> unknown opcodes 13, 256,
 *            0xFFFF; bit 4 set: opcode 32 (STR, Redis's string family) instead
 *   byte 1   bit 0: a password is configured ("fuzzpass")
 *            bit 1: the session is already authenticated
 *            bit 2: the session has already failed AUTH twice
 *            bit 3: start from an empty store (else a few known keys exist)
 *   rest     the request body, in a heap block of exactly its size
 *
 * After the call: the status is a KV_ST_* a handler may answer, every OK
 * answer decodes as its opcode's response message with protobuf-c (and GET
 * answers the seeded value of the key asked), every non-OK body decodes as
 * kv.Error, and once the response is freed every module's bytes are back
 * to the baseline. With FUZZ_STRICT=1 in the environment, a body that
 * protobuf-c refuses but the in-place reader (pb.c) accepts is a failure
 * too (by default it is only counted and reported at exit). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "kv.pb-c.h"
#include "kv_call.h"
#include "kv_config.h"
#include "kv_mem.h"
#include "kv_ops.h"
#include "kv_server.h"
#include "kv_shm.h"
#include "kv_worker.h"
#include "server_int.h"

#define FUZZ_PASS "fuzzpass"

static struct kv_config cfg;
static struct kv_server *srv;
static int strict;
static unsigned long lenient_count;

static const uint16_t opcodes[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, KV_OP__MAX, 0xFFFF};

/* Keys present at the start of an input (unless bit 3), with their values. */
static const struct {
    const char *key, *value;
} seeds[] = {
    {"a", "1"},           {"counter", "42"},     {"neg", "-9223372036854775808"},
    {"max", "9223372036854775807"},              {"text", "hello world"},
    {"k:1", "v1"},        {"k:2", "v2"},         {"k:3", ""},
};

/* By opcode; NULL for PING (it echoes raw bytes) and for numbers no opcode has. */
static const ProtobufCMessageDescriptor *const resp_desc[KV_OP__MAX] = {
    [KV_OP_GET] = &kv__get_response__descriptor,
    [KV_OP_SET] = &kv__set_response__descriptor,
    [KV_OP_DEL] = &kv__del_response__descriptor,
    [KV_OP_EXISTS] = &kv__exists_response__descriptor,
    [KV_OP_INCR] = &kv__incr_response__descriptor,
    [KV_OP_MGET] = &kv__mget_response__descriptor,
    [KV_OP_MSET] = &kv__mset_response__descriptor,
    [KV_OP_EXPIRE] = &kv__expire_response__descriptor,
    [KV_OP_SCAN] = &kv__scan_response__descriptor,
    [KV_OP_STATS] = &kv__stats_response__descriptor,
    [KV_OP_FLUSH] = &kv__flush_response__descriptor,
    [KV_OP_AUTH] = &kv__auth_response__descriptor,
    [KV_OP_STR] = &kv__str_response__descriptor,
    [KV_OP_RENAME] = &kv__rename_response__descriptor,
};

static const ProtobufCMessageDescriptor *const req_desc[KV_OP__MAX] = {
    [KV_OP_GET] = &kv__get_request__descriptor,
    [KV_OP_SET] = &kv__set_request__descriptor,
    [KV_OP_DEL] = &kv__del_request__descriptor,
    [KV_OP_EXISTS] = &kv__exists_request__descriptor,
    [KV_OP_INCR] = &kv__incr_request__descriptor,
    [KV_OP_MGET] = &kv__mget_request__descriptor,
    [KV_OP_MSET] = &kv__mset_request__descriptor,
    [KV_OP_EXPIRE] = &kv__expire_request__descriptor,
    [KV_OP_SCAN] = &kv__scan_request__descriptor,
    [KV_OP_STATS] = &kv__stats_request__descriptor,
    [KV_OP_FLUSH] = &kv__flush_request__descriptor,
    [KV_OP_AUTH] = &kv__auth_request__descriptor,
    [KV_OP_STR] = &kv__str_request__descriptor,
    [KV_OP_RENAME] = &kv__rename_request__descriptor,
    [KV_OP_SWAPDB] = &kv__swap_db_request__descriptor,
};

static void cleanup(void)
{
    if (srv) {
        kv_server_destroy(srv);
        srv = NULL;
    }
    kv_shm_store_unlink(&cfg);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256];
    const char *s = getenv("FUZZ_STRICT");

    strict = s && *s == '1';
    kv_config_defaults(&cfg);
    cfg.port = 0;
    cfg.memory = 4u << 20;
    cfg.log_level = 0;
    snprintf(cfg.shm_name, sizeof(cfg.shm_name), "/libevkv-fuzz-handlers-%d", (int)getpid());
    kv_shm_store_unlink(&cfg);
    if (kv_server_create(&cfg, err, sizeof(err), &srv) != 0) {
        fprintf(stderr, "[fuzz] kv_server_create: %s\n", err);
        abort();
    }
    atexit(cleanup);
    return 0;
}

static void reset_store(int empty)
{
    FUZZ_CHECK(kv_shm_flush(srv->store) == 0);
    if (empty)
        return;
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
        struct kv_shm_set_opts o = {0};
        uint64_t ver;

        FUZZ_CHECK(kv_shm_set(srv->store, seeds[i].key, strlen(seeds[i].key), seeds[i].value,
                              strlen(seeds[i].value), &o, &ver) == 0);
    }
}

static const char *seed_value(const uint8_t *key, size_t klen)
{
    for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++)
        if (strlen(seeds[i].key) == klen && memcmp(seeds[i].key, key, klen) == 0)
            return seeds[i].value;
    return NULL;
}

/* A key a SET or MSET acknowledged (with no TTL, or a TTL far beyond the
 * time this check takes) must be in the store right after. */
static void check_one_stored(const ProtobufCBinaryData *key, uint64_t ttl_ms)
{
    if (ttl_ms != 0 && ttl_ms < 60000)
        return;
    FUZZ_CHECK(kv_shm_exists(srv->store, key->data, key->len) == 0,
               "a key acknowledged by SET/MSET (ttl_ms %llu) is not in the store",
               (unsigned long long)ttl_ms);
}

static void check_stored(uint16_t op, const uint8_t *body, size_t blen)
{
    if (op == 2) {
        Kv__SetRequest *m = kv__set_request__unpack(NULL, blen, body);

        if (!m)
            return; /* decoded leniently by pb.c; nothing to compare with */
        check_one_stored(&m->key, m->ttl_ms);
        kv__set_request__free_unpacked(m, NULL);
    } else {
        Kv__MSetRequest *m = kv__mset_request__unpack(NULL, blen, body);

        if (!m)
            return;
        for (size_t i = 0; i < m->n_pairs; i++)
            check_one_stored(&m->pairs[i]->key, m->ttl_ms);
        kv__mset_request__free_unpacked(m, NULL);
    }
}

/* Statuses only the IO layer answers (frame-level) must never come from a handler. */
static int handler_status_ok(uint16_t st)
{
    return st < KV_ST__COUNT && st != KV_ST_CRC_MISMATCH && st != KV_ST_BAD_FRAME &&
           st != KV_ST_TOO_LARGE;
}

static const ProtobufCMessageDescriptor *desc_of(uint16_t op, int response)
{
    if (op >= KV_OP__MAX)
        return NULL;
    return response ? resp_desc[op] : req_desc[op];
}

static void check_response(uint16_t op, unsigned flags, int empty_store, const uint8_t *body,
                           size_t blen, const struct kv_call *call)
{
    int known = kv_opcode_name(op) != NULL;
    int gated = (flags & 1) && !(flags & 2) && op != KV_OP_PING && op != KV_OP_AUTH;

    FUZZ_CHECK(handler_status_ok(call->status), "opcode %u answered status %u", op,
               call->status);
    FUZZ_CHECK(call->resp_len == 0 || call->resp != NULL);
    if (!known) {
        FUZZ_CHECK(call->status == KV_ST_UNKNOWN_OPCODE);
        FUZZ_CHECK(call->resp_len == 0);
        return;
    }
    FUZZ_CHECK(call->status != KV_ST_UNKNOWN_OPCODE, "opcode %u is in PROTOCOL.md", op);
    if (gated)
        FUZZ_CHECK(call->status == KV_ST_NOAUTH, "opcode %u without AUTH answered %u", op,
                   call->status);
    if (op == 0) { /* PING: echo */
        FUZZ_CHECK(call->status == KV_ST_OK);
        FUZZ_CHECK(call->resp_len == blen);
        FUZZ_CHECK(blen == 0 || memcmp(call->resp, body, blen) == 0);
        return;
    }
    if (call->status == KV_ST_OK) {
        ProtobufCMessage *m = protobuf_c_message_unpack(desc_of(op, 1), NULL, call->resp_len,
                                                        call->resp);

        FUZZ_CHECK(m != NULL, "OK answer of opcode %u does not decode as %s", op,
                   desc_of(op, 1)->name);
        if (op == 1) {
            Kv__GetRequest *rq = kv__get_request__unpack(NULL, blen, body);
            const Kv__GetResponse *g = (const Kv__GetResponse *)m;

            /* the in-place reader may accept what protobuf-c refuses; then skip */
            if (rq) {
                const char *v = seed_value(rq->key.data, rq->key.len);

                FUZZ_CHECK(!empty_store && v != NULL, "GET found a key that was never set");
                FUZZ_CHECK(g->value.len == strlen(v) &&
                               (v[0] == '\0' || memcmp(g->value.data, v, g->value.len) == 0),
                           "GET answered a value that differs from the stored one");
                FUZZ_CHECK(g->version != 0);
                kv__get_request__free_unpacked(rq, NULL);
            }
        }
        protobuf_c_message_free_unpacked(m, NULL);
        if (op == 2 || op == 7)
            check_stored(op, body, blen);
    } else if (call->resp_len) {
        Kv__Error *e = kv__error__unpack(NULL, call->resp_len, call->resp);

        FUZZ_CHECK(e != NULL, "error body of opcode %u does not decode as kv.Error", op);
        kv__error__free_unpacked(e, NULL);
    }
    if (op == 12 && (flags & 1) == 0)
        FUZZ_CHECK(call->status == KV_ST_OK || call->status == KV_ST_BAD_REQUEST,
                   "AUTH with no password configured answered %u", call->status);
}

/* Single-key opcodes read their body in place (pb.c); protobuf-c is the
 * reference for what a body means. A body that protobuf-c refuses must be
 * answered BAD_REQUEST. */
static void check_vs_protobuf_c(uint16_t op, unsigned flags, const uint8_t *body, size_t blen,
                                const struct kv_call *call)
{
    ProtobufCMessage *m;

    if (kv_opcode_name(op) == NULL || op == KV_OP_PING || call->status == KV_ST_NOAUTH)
        return;
    m = protobuf_c_message_unpack(desc_of(op, 0), NULL, blen, body);
    if (m) {
        protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    if (call->status == KV_ST_BAD_REQUEST)
        return;
    if (op == KV_OP_STATS || op == KV_OP_FLUSH) /* they ignore their (empty) body */
        return;
    lenient_count++;
    if (strict)
        fuzz_fail("opcode %u: protobuf-c refuses the body, the handler answered status %u "
                  "(not BAD_REQUEST)", op, call->status);
}

static void report(void)
{
    if (lenient_count)
        fprintf(stderr,
                "[fuzz] %lu bodies refused by protobuf-c were not answered BAD_REQUEST "
                "(FUZZ_STRICT=1 makes this a failure)\n",
                lenient_count);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int reported;
    struct kv_session session = {0};
    struct kv_mem_snapshot before;
    struct kv_call call = {0};
    uint16_t op = size > 0 ? ((data[0] & 16) ? KV_OP_STR : opcodes[data[0] & 15]) : 0;
    unsigned flags = size > 1 ? data[1] : 0;
    size_t blen = size > 2 ? size - 2 : 0;
    uint8_t *body = fuzz_exact_copy(data + (size > 2 ? 2 : size), blen);

    if (!reported) {
        reported = 1;
        atexit(report);
    }
    snprintf(cfg.requirepass, sizeof(cfg.requirepass), "%s", (flags & 1) ? FUZZ_PASS : "");
    if (flags & 2)
        session.flags = KV_SESSION_AUTHED;
    if (flags & 4)
        session.auth_failures = 2;
    reset_store(flags & 8);

    kv_mem_pool_drain();
    kv_mem_snapshot(&before);
    call.opcode = op;
    call.body = body;
    call.body_len = (uint32_t)blen;
    call.session = &session;
    kv_worker_run(srv->reg, &call);

    check_response(op, flags, flags & 8, body, blen, &call);
    check_vs_protobuf_c(op, flags, body, blen, &call);
    if (op == 12 && call.status == KV_ST_NOAUTH && (flags & 4))
        FUZZ_CHECK(session.flags & KV_SESSION_CLOSE, "third wrong password must close");
    if (call.resp_owned)
        kv_mem_free(KV_MOD_PACKET, call.resp);
    free(body);
    fuzz_mem_check(&before, FUZZ_MODS_ALL, "handler");
    return 0;
}
