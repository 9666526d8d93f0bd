/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* fuzz/gen_seeds.c -- writes the seed corpora of the fuzz harnesses:
 * valid request bodies for every opcode (fuzz_handlers), and whole frames,
 * pipelines and bad frames (fuzz_frame, fuzz_conn). The committed seeds in
 * fuzz/corpus/ were made with it; run it again after a change to
 * proto/kv.proto:
 *     ./autobuild.sh fuzz 0 && build-fuzz/gen_seeds fuzz/corpus
 * (autobuild builds it; 0 seconds builds and runs only the regressions). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "frame.h"
#include "kv.pb-c.h"

static const char *root;
static int nfiles;

static void put_file(const char *harness, const char *name, const uint8_t *p, size_t n)
{
    char path[1024];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", root, harness);
    mkdir(path, 0755);
    snprintf(path, sizeof(path), "%s/%s/%s", root, harness, name);
    f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "gen_seeds: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    nfiles++;
}

static ProtobufCBinaryData bin(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};

    return b;
}

/* ---- request bodies ---------------------------------------------------------- */
struct body {
    const char *name;
    uint16_t op;
    uint8_t buf[512];
    size_t len;
};

static struct body bodies[64];
static size_t nbodies;

static void add_body(const char *name, uint16_t op, const ProtobufCMessage *m, const void *raw,
                     size_t rawlen)
{
    struct body *b = &bodies[nbodies++];

    b->name = name;
    b->op = op;
    if (m) {
        b->len = protobuf_c_message_pack(m, b->buf);
    } else {
        memcpy(b->buf, raw, rawlen);
        b->len = rawlen;
    }
}

static void make_bodies(void)
{
    add_body("ping", 0, NULL, "hello", 5);
    add_body("ping-empty", 0, NULL, "", 0);
    {
        Kv__GetRequest m = KV__GET_REQUEST__INIT;

        m.key = bin("a");
        add_body("get-a", 1, &m.base, NULL, 0);
        m.key = bin("missing");
        add_body("get-missing", 1, &m.base, NULL, 0);
    }
    {
        Kv__SetRequest m = KV__SET_REQUEST__INIT;

        m.key = bin("a");
        m.value = bin("value");
        add_body("set", 2, &m.base, NULL, 0);
        m.ttl_ms = 60000;
        m.only_if_absent = 1;
        add_body("set-nx-ttl", 2, &m.base, NULL, 0);
        m.ttl_ms = 0;
        m.only_if_absent = 0;
        m.has_cas = 1;
        m.cas_version = 1;
        add_body("set-cas", 2, &m.base, NULL, 0);
        m.has_cas = 0;
        m.only_if_present = 1;
        add_body("set-xx", 2, &m.base, NULL, 0);
    }
    {
        Kv__DelRequest m = KV__DEL_REQUEST__INIT;
        ProtobufCBinaryData keys[3] = {bin("a"), bin("k:1"), bin("missing")};

        m.n_keys = 3;
        m.keys = keys;
        add_body("del", 3, &m.base, NULL, 0);
    }
    {
        Kv__ExistsRequest m = KV__EXISTS_REQUEST__INIT;

        m.key = bin("counter");
        add_body("exists", 4, &m.base, NULL, 0);
    }
    {
        Kv__IncrRequest m = KV__INCR_REQUEST__INIT;

        m.key = bin("counter");
        m.delta = -5;
        add_body("incr", 5, &m.base, NULL, 0);
        m.key = bin("max");
        m.delta = 1;
        add_body("incr-overflow", 5, &m.base, NULL, 0);
        m.key = bin("text");
        add_body("incr-nan", 5, &m.base, NULL, 0);
    }
    {
        Kv__MGetRequest m = KV__MGET_REQUEST__INIT;
        ProtobufCBinaryData keys[4] = {bin("a"), bin("counter"), bin("nope"), bin("k:3")};

        m.n_keys = 4;
        m.keys = keys;
        add_body("mget", 6, &m.base, NULL, 0);
    }
    {
        Kv__MSetRequest m = KV__MSET_REQUEST__INIT;
        Kv__KeyValue kv[2] = {KV__KEY_VALUE__INIT, KV__KEY_VALUE__INIT};
        Kv__KeyValue *pk[2] = {&kv[0], &kv[1]};

        kv[0].key = bin("m:1");
        kv[0].value = bin("one");
        kv[1].key = bin("m:2");
        kv[1].value = bin("two");
        m.n_pairs = 2;
        m.pairs = pk;
        m.ttl_ms = 1000;
        add_body("mset", 7, &m.base, NULL, 0);
    }
    {
        Kv__ExpireRequest m = KV__EXPIRE_REQUEST__INIT;

        m.key = bin("a");
        m.action = KV__EXPIRE_REQUEST__ACTION__SET;
        m.ttl_ms = 5000;
        add_body("expire-set", 8, &m.base, NULL, 0);
        m.action = KV__EXPIRE_REQUEST__ACTION__CLEAR;
        m.ttl_ms = 0;
        add_body("expire-clear", 8, &m.base, NULL, 0);
        m.action = KV__EXPIRE_REQUEST__ACTION__QUERY;
        add_body("expire-query", 8, &m.base, NULL, 0);
    }
    {
        Kv__ScanRequest m = KV__SCAN_REQUEST__INIT;

        m.count = 100;
        add_body("scan", 9, &m.base, NULL, 0);
        m.prefix = bin("k:");
        m.count = 1;
        add_body("scan-prefix", 9, &m.base, NULL, 0);
    }
    {
        Kv__StatsRequest m = KV__STATS_REQUEST__INIT;

        add_body("stats", 10, &m.base, NULL, 0);
    }
    {
        Kv__FlushRequest m = KV__FLUSH_REQUEST__INIT;

        add_body("flush", 11, &m.base, NULL, 0);
    }
    {
        Kv__AuthRequest m = KV__AUTH_REQUEST__INIT;

        m.password = bin("fuzzpass");
        add_body("auth", 12, &m.base, NULL, 0);
        m.password = bin("wrong");
        add_body("auth-wrong", 12, &m.base, NULL, 0);
    }
    add_body("unknown-13", 13, NULL, "\x0a\x01x", 3);
}

/* ---- frames --------------------------------------------------------------------- */
static size_t frame(uint8_t *out, uint16_t op, uint64_t id, const uint8_t *body, size_t len)
{
    struct kv_frame f = {.version = KV_FRAME_VERSION, .opcode = op, .request_id = id,
                         .body_len = (uint32_t)len};
    ssize_t n = kv_frame_encode(&f, body, out, 4096);

    if (n < 0)
        abort();
    return (size_t)n;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The vectors of docs/frame-vectors.txt (docs/PROTOCOL.md's test vectors). */
static const char *const vectors[] = {
    "cb4b56310100000001000000000000000300000000000000616263ef5532a3",
    "cb4b56310100000000000000000000000000000000000000a88ff806",
    "cb4b563101010000010000000000000003000000000000006162632f311ab4",
    "cb4b56310101ff7f080706050403020100000000040000005042a7e9",
    "cb4b5631010001002a0000000000000005000000000000000a03666f6fa17f5725",
};

static size_t unhex(const char *h, uint8_t *out)
{
    size_t n = 0;

    for (; h[0] && h[1]; h += 2)
        out[n++] = (uint8_t)(hexval(h[0]) << 4 | hexval(h[1]));
    return n;
}

int main(int argc, char **argv)
{
    static uint8_t buf[65536], one[4096];
    size_t n, all = 0, k;
    char name[128];

    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR (e.g. fuzz/corpus)\n", argv[0]);
        return 2;
    }
    root = argv[1];
    make_bodies();

    /* fuzz_handlers: opcode byte, flags byte, body */
    for (size_t i = 0; i < nbodies; i++) {
        static const uint8_t flag_sets[] = {0x00, 0x03, 0x01, 0x08};
        int op_byte = bodies[i].op == 13 ? 13 : bodies[i].op;

        for (size_t f = 0; f < sizeof(flag_sets); f++) {
            if (f > 0 && bodies[i].op != 12 && bodies[i].op != 1 && f != 2)
                continue; /* a few variants are enough */
            buf[0] = (uint8_t)op_byte;
            buf[1] = flag_sets[f];
            memcpy(buf + 2, bodies[i].buf, bodies[i].len);
            snprintf(name, sizeof(name), "%s-f%02x", bodies[i].name, flag_sets[f]);
            put_file("fuzz_handlers", name, buf, 2 + bodies[i].len);
        }
    }
    buf[0] = 12;
    buf[1] = 0x05; /* password set, two failures already */
    memcpy(buf + 2, bodies[nbodies - 2].buf, bodies[nbodies - 2].len);
    put_file("fuzz_handlers", "auth-wrong-third", buf, 2 + bodies[nbodies - 2].len);

    /* fuzz_frame and fuzz_conn: one frame per body, then a pipeline of all */
    for (size_t i = 0; i < nbodies; i++) {
        n = frame(one, bodies[i].op, 100 + i, bodies[i].buf, bodies[i].len);
        snprintf(name, sizeof(name), "frame-%s", bodies[i].name);
        put_file("fuzz_conn", name, one, n);
        if (i % 4 == 0)
            put_file("fuzz_frame", name, one, n);
        memcpy(buf + all, one, n);
        all += n;
    }
    put_file("fuzz_conn", "pipeline-all", buf, all);
    put_file("fuzz_frame", "pipeline-all", buf, all);

    /* AUTH first, then work (the server may have a password) */
    k = frame(buf, 12, 1, bodies[nbodies - 3].buf, bodies[nbodies - 3].len);
    k += frame(buf + k, 2, 2, bodies[4].buf, bodies[4].len);
    k += frame(buf + k, 1, 3, bodies[2].buf, bodies[2].len);
    put_file("fuzz_conn", "auth-set-get", buf, k);
    /* three wrong passwords, then a PING that must not be answered */
    k = 0;
    for (int i = 0; i < 3; i++)
        k += frame(buf + k, 12, 10 + i, bodies[nbodies - 2].buf, bodies[nbodies - 2].len);
    k += frame(buf + k, 0, 20, (const uint8_t *)"x", 1);
    put_file("fuzz_conn", "auth-wrong-x3", buf, k);

    /* the protocol's test vectors */
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        n = unhex(vectors[i], one);
        snprintf(name, sizeof(name), "vector-%zu", i);
        put_file("fuzz_frame", name, one, n);
        put_file("fuzz_conn", name, one, n);
    }

    /* bad frames: each after a good PING, so the good answer races the close */
    {
        static const struct {
            const char *name;
            size_t off;
            uint8_t val;
        } bad[] = {
            {"bad-crc", 28 + 5, 0x00},     /* last byte of the PING crc */
            {"bad-version", 4, 2},         {"bad-flags", 5, 0x02},
            {"bad-response-flag", 5, 1},   {"bad-reserved", 22, 1},
            {"bad-status", 20, 3},         {"bad-magic", 0, 'G'},
            {"too-large", 19, 0x7f},       /* body_len 0x7f000001 */
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            size_t first = frame(buf, 0, 1, (const uint8_t *)"ok", 2);

            n = frame(buf + first, 0, 2, (const uint8_t *)"x", 1);
            if (strcmp(bad[i].name, "bad-crc") == 0)
                buf[first + 28] ^= 0xFF;
            else
                buf[first + bad[i].off] = bad[i].val;
            put_file("fuzz_conn", bad[i].name, buf, first + n);
            put_file("fuzz_frame", bad[i].name, buf + first, n);
        }
    }
    /* a partial frame: header announcing 100000 bytes, then a few */
    {
        struct kv_frame f = {.version = 1, .opcode = 0, .request_id = 9, .body_len = 100000};

        kv_frame_encode_header(&f, buf);
        memset(buf + KV_FRAME_HDR, 'p', 200);
        put_file("fuzz_conn", "partial-big", buf, KV_FRAME_HDR + 200);
    }
    /* the text protocol (RESP2), picked by a first byte other than 0xCB */
    {
        static const struct {
            const char *name, *text;
        } resp[] = {
            {"text", "*1\r\n$4\r\nPING\r\n"},
            {"resp-set-get", "*3\r\n$3\r\nSET\r\n$1\r\na\r\n$3\r\none\r\n"
                             "*2\r\n$3\r\nGET\r\n$1\r\na\r\n"},
            {"resp-set-ex-incr", "*5\r\n$3\r\nSET\r\n$1\r\nn\r\n$2\r\n10\r\n$2\r\nEX\r\n"
                                 "$2\r\n60\r\n*3\r\n$6\r\nINCRBY\r\n$1\r\nn\r\n$2\r\n-5\r\n"},
            {"resp-auth-mget", "*2\r\n$4\r\nAUTH\r\n$8\r\nfuzzpass\r\n"
                               "*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n"},
            {"resp-inline", "PING\r\nEXISTS a\r\nSCAN 0 MATCH k* COUNT 5\r\nTTL a\r\n"},
            {"resp-big-bulk", "*2\r\n$3\r\nGET\r\n$2147483647\r\nab"},
            {"resp-big-count", "*1048576\r\n$3\r\nGET\r\n"},
        };
        for (size_t i = 0; i < sizeof(resp) / sizeof(resp[0]); i++)
            put_file("fuzz_conn", resp[i].name, (const uint8_t *)resp[i].text,
                     strlen(resp[i].text));
    }
    printf("gen_seeds: %d files under %s\n", nfiles, root);
    return 0;
}
