/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_frame.c -- the frame codec (src/io/frame.h) against docs/PROTOCOL.md.
 *
 * Every decode input is placed at the very end of an mmap'd region followed
 * by a PROT_NONE guard page, so a read past the end of the input faults
 * (with or without ASan). The vectors of docs/frame-vectors.txt are embedded;
 * the file itself (docs/frame-vectors.txt from the repository root, where
 * autobuild.sh runs the suites, else ../shared/frame-vectors.txt) is read
 * and every vector in it checked as well. */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "frame.h"
#include "kv_err.h"
#include "kv_mem.h"
#include "kv_test_util.h"

/* ---- guard-page buffers ------------------------------------------------- */

struct guarded {
    uint8_t *map; /* owned: the whole mapping */
    size_t map_len;
    uint8_t *data; /* len bytes ending exactly at the guard page */
    size_t len;
};

/* Copies src[0..len) so that its last byte is the last readable byte. */
static uint8_t *guard_put(struct guarded *g, const void *src, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (len + page - 1) / page;

    if (data_pages == 0)
        data_pages = 1;
    g->map_len = (data_pages + 1) * page;
    g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CU_ASSERT_FATAL(g->map != MAP_FAILED);
    CU_ASSERT_FATAL(mprotect(g->map + data_pages * page, page, PROT_NONE) == 0);
    g->data = g->map + data_pages * page - len;
    g->len = len;
    if (len)
        memcpy(g->data, src, len);
    return g->data;
}

static void guard_free(struct guarded *g)
{
    munmap(g->map, g->map_len);
    g->map = NULL;
}

/* Decodes src[0..len) from the end of a guarded page. */
static ssize_t decode_guarded(const void *src, size_t len, size_t max_body, int expect_response,
                              struct kv_frame *f)
{
    struct guarded g;
    ssize_t r;

    guard_put(&g, src, len);
    r = kv_frame_decode(g.data, len, max_body, expect_response, f);
    /* body must point into the input, not past it */
    if (r > 0) {
        CU_ASSERT(f->body == g.data + KV_FRAME_HDR);
        CU_ASSERT(f->body + f->body_len + KV_FRAME_CRC == g.data + len || (size_t)r < len);
    }
    guard_free(&g);
    return r;
}

/* ---- vectors -------------------------------------------------------------- */

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;

    while (hex[0] && hex[1] && n < cap) {
        unsigned v;

        if (sscanf(hex, "%2x", &v) != 1)
            break;
        out[n++] = (uint8_t)v;
        hex += 2;
    }
    return n;
}

struct vector {
    const char *name;
    const char *hex;
    uint8_t flags;
    uint16_t opcode;
    uint64_t request_id;
    uint16_t status;
    const char *body; /* hex */
};

static const struct vector vectors[] = {
    {"ping-request id=1 body='abc'",
     "cb4b56310100000001000000000000000300000000000000616263ef5532a3", 0, 0, 1, 0, "616263"},
    {"ping-request id=0 empty body", "cb4b56310100000000000000000000000000000000000000a88ff806", 0,
     0, 0, 0, ""},
    {"ping-response id=1 body='abc' status=OK",
     "cb4b563101010000010000000000000003000000000000006162632f311ab4", 1, 0, 1, 0, "616263"},
    {"unknown-opcode-response opcode=0x7fff id=0x0102030405060708 status=UNKNOWN_OPCODE",
     "cb4b56310101ff7f080706050403020100000000040000005042a7e9", 1, 0x7fff, 0x0102030405060708ull,
     KV_ST_UNKNOWN_OPCODE, ""},
    {"get-request id=42 body=0a03666f6f",
     "cb4b5631010001002a0000000000000005000000000000000a03666f6fa17f5725", 0, 1, 42, 0,
     "0a03666f6f"},
};
#define NVEC         (sizeof(vectors) / sizeof(vectors[0]))
#define BIG_BODY_MAX (16u << 20)

static size_t vec_bytes(const struct vector *v, uint8_t *out, size_t cap)
{
    return unhex(v->hex, out, cap);
}

/* Decodes a whole frame, checks it is consumed whole, and re-encodes it. */
static void check_roundtrip(const uint8_t *wire, size_t len, int expect_response,
                            struct kv_frame *out)
{
    struct kv_frame f;
    uint8_t enc[512];
    ssize_t r;

    memset(&f, 0xA5, sizeof(f));
    r = decode_guarded(wire, len, BIG_BODY_MAX, expect_response, &f);
    CU_ASSERT_EQUAL_FATAL(r, (ssize_t)len);
    CU_ASSERT_EQUAL(f.version, KV_FRAME_VERSION);
    CU_ASSERT_EQUAL(f.reserved, 0);
    CU_ASSERT_EQUAL((size_t)f.body_len + KV_FRAME_OVERHEAD, len);

    /* body pointer was into the (now unmapped) guarded copy: decode in place again */
    memset(&f, 0xA5, sizeof(f));
    CU_ASSERT_EQUAL_FATAL(kv_frame_decode(wire, len, BIG_BODY_MAX, expect_response, &f),
                          (ssize_t)len);
    CU_ASSERT(f.body == wire + KV_FRAME_HDR);
    memset(enc, 0x5A, sizeof(enc));
    CU_ASSERT_EQUAL_FATAL(kv_frame_encode(&f, f.body, enc, sizeof(enc)), (ssize_t)len);
    CU_ASSERT(memcmp(enc, wire, len) == 0);
    CU_ASSERT_EQUAL(enc[len], 0x5A); /* nothing written past the frame */
    if (out)
        *out = f;
}

static void test_frame_vectors_decode_exact(void)
{
    for (size_t i = 0; i < NVEC; i++) {
        const struct vector *v = &vectors[i];
        uint8_t wire[256], body[64];
        size_t len = vec_bytes(v, wire, sizeof(wire));
        size_t blen = unhex(v->body, body, sizeof(body));
        struct kv_frame f;

        CU_ASSERT_FATAL(len >= KV_FRAME_OVERHEAD);
        check_roundtrip(wire, len, v->flags & 1, &f);
        CU_ASSERT_EQUAL(f.flags, v->flags);
        CU_ASSERT_EQUAL(f.opcode, v->opcode);
        CU_ASSERT_EQUAL(f.request_id, v->request_id);
        CU_ASSERT_EQUAL(f.status, v->status);
        CU_ASSERT_EQUAL(f.body_len, blen);
        CU_ASSERT(blen == 0 || memcmp(f.body, body, blen) == 0);
    }
}

/* Builds every vector from its fields with kv_frame_encode (not from its
 * bytes): the encoder alone must produce the published bytes. */
static void test_frame_vectors_encode_from_fields(void)
{
    for (size_t i = 0; i < NVEC; i++) {
        const struct vector *v = &vectors[i];
        uint8_t wire[256], body[64], enc[256];
        size_t len = vec_bytes(v, wire, sizeof(wire));
        size_t blen = unhex(v->body, body, sizeof(body));
        struct kv_frame f = {.version = KV_FRAME_VERSION,
                             .flags = v->flags,
                             .opcode = v->opcode,
                             .request_id = v->request_id,
                             .body_len = (uint32_t)blen,
                             .status = v->status,
                             .reserved = 0,
                             .body = NULL};

        CU_ASSERT_EQUAL(kv_frame_encode(&f, body, enc, sizeof(enc)), (ssize_t)len);
        CU_ASSERT(memcmp(enc, wire, len) == 0);
        CU_ASSERT_EQUAL(kv_frame_crc(enc, body, blen), kv_get_le32(wire + len - 4));
    }
}

/* Every vector of docs/frame-vectors.txt, if the file is reachable. */
static void test_frame_vectors_file(void)
{
    FILE *fp = fopen("docs/frame-vectors.txt", "r");
    char line[4096];
    int checked = 0;

    if (!fp)
        fp = fopen("../shared/frame-vectors.txt", "r");
    if (!fp) {
        fprintf(stderr, "\n  (docs/frame-vectors.txt not found; embedded vectors only) ");
        return;
    }
    while (fgets(line, sizeof(line), fp)) {
        uint8_t wire[2048];
        const char *p = line;
        size_t len, hexlen;

        if (line[0] != ' ' && line[0] != '\t')
            continue; /* comment or a name line */
        while (*p == ' ' || *p == '\t')
            p++;
        hexlen = strcspn(p, " \t\r\n");
        if (hexlen == 0)
            continue;
        CU_ASSERT_EQUAL(hexlen % 2, 0);
        len = unhex(p, wire, sizeof(wire));
        CU_ASSERT_EQUAL_FATAL(len * 2, hexlen);
        CU_ASSERT_FATAL(len >= KV_FRAME_OVERHEAD);
        check_roundtrip(wire, len, wire[5] & KV_FRAME_F_RESPONSE, NULL);
        checked++;
    }
    fclose(fp);
    CU_ASSERT(checked >= (int)NVEC);
}

/* Every prefix of every valid frame is "wait for more", read within bounds. */
static void test_frame_truncation_every_point(void)
{
    for (size_t i = 0; i < NVEC; i++) {
        uint8_t wire[256];
        size_t len = vec_bytes(&vectors[i], wire, sizeof(wire));
        int resp = vectors[i].flags & 1;

        for (size_t cut = 0; cut < len; cut++) {
            struct kv_frame f;

            memset(&f, 0xA5, sizeof(f));
            CU_ASSERT_EQUAL(decode_guarded(wire, cut, BIG_BODY_MAX, resp, &f), KV_EAGAIN);
            if (cut >= KV_FRAME_HDR) {
                /* header known: the caller can size its buffer from it */
                CU_ASSERT_EQUAL(f.body_len + KV_FRAME_OVERHEAD, len);
                CU_ASSERT_EQUAL(f.request_id, vectors[i].request_id);
                CU_ASSERT_EQUAL(f.opcode, vectors[i].opcode);
                CU_ASSERT_EQUAL(f.flags, vectors[i].flags);
            }
        }
        /* and the full length succeeds at the guard page too */
        {
            struct kv_frame f;
            CU_ASSERT_EQUAL(decode_guarded(wire, len, BIG_BODY_MAX, resp, &f), (ssize_t)len);
        }
    }
}

/* A large body: truncation at every point, and decode at the guard page. */
static void test_frame_truncation_large_body(void)
{
    size_t blen = 70000, len = blen + KV_FRAME_OVERHEAD;
    uint8_t *body = kv_mem_alloc(KV_MOD_TEST, blen);
    uint8_t *wire = kv_mem_alloc(KV_MOD_TEST, len);
    struct kv_frame f = {.version = 1, .opcode = 2, .request_id = 77, .body_len = (uint32_t)blen};
    struct guarded g;

    CU_ASSERT_FATAL(body && wire);
    for (size_t i = 0; i < blen; i++)
        body[i] = (uint8_t)(i * 131 + 7);
    CU_ASSERT_EQUAL_FATAL(kv_frame_encode(&f, body, wire, len), (ssize_t)len);
    guard_put(&g, wire, len);
    /* every cut near the ends and in the header, a stride in between */
    for (size_t cut = 0; cut < len; cut = (cut < 200 || cut > len - 200) ? cut + 1 : cut + 97) {
        struct kv_frame d;
        /* the prefix ends at the guard page */
        uint8_t *start = g.data + len - cut;

        memmove(start, wire, cut);
        if (kv_frame_decode(start, cut, BIG_BODY_MAX, 0, &d) != KV_EAGAIN) {
            CU_FAIL("a truncated large frame did not answer KV_EAGAIN");
            break;
        }
    }
    memcpy(g.data, wire, len);
    {
        struct kv_frame d;
        CU_ASSERT_EQUAL(kv_frame_decode(g.data, len, BIG_BODY_MAX, 0, &d), (ssize_t)len);
        CU_ASSERT_EQUAL(d.body_len, blen);
        CU_ASSERT(memcmp(d.body, body, blen) == 0);
        /* one byte less than the body needs: TOO_LARGE from the header */
        CU_ASSERT_EQUAL(kv_frame_decode(g.data, len, blen - 1, 0, &d), KV_ETOOBIG);
    }
    guard_free(&g);
    kv_mem_free(KV_MOD_TEST, wire);
    kv_mem_free(KV_MOD_TEST, body);
}

/* Each magic byte wrong, seen with as few bytes as reach it. */
static void test_frame_bad_magic_each_byte(void)
{
    uint8_t wire[64];
    size_t len = vec_bytes(&vectors[0], wire, sizeof(wire));

    for (int pos = 0; pos < 4; pos++) {
        uint8_t bad[64];

        memcpy(bad, wire, len);
        bad[pos] ^= 0x20;
        for (size_t cut = 0; cut <= len; cut++) {
            struct kv_frame f;
            ssize_t r = decode_guarded(bad, cut, BIG_BODY_MAX, 0, &f);

            if (cut <= (size_t)pos) {
                CU_ASSERT_EQUAL(r, KV_EAGAIN); /* the prefix seen so far is fine */
            } else {
                CU_ASSERT_EQUAL(r, KV_EMAGIC);
            }
        }
    }
}

/* A text protocol is told apart from its first byte. */
static void test_frame_bad_magic_text_protocol(void)
{
    static const char *const texts[] = {"GET / HTTP/1.1\r\n\r\n", "PING\r\n",
                                        "*1\r\n$4\r\nPING\r\n", "\x00\x00\x00\x00"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        size_t n = i == 3 ? 4 : strlen(texts[i]);
        struct kv_frame f;

        for (size_t cut = 1; cut <= n; cut++)
            CU_ASSERT_EQUAL(decode_guarded(texts[i], cut, BIG_BODY_MAX, 0, &f), KV_EMAGIC);
    }
    /* the first byte alone is enough, also in the response direction */
    {
        struct kv_frame f;
        uint8_t b = 0xCA;
        CU_ASSERT_EQUAL(decode_guarded(&b, 1, BIG_BODY_MAX, 1, &f), KV_EMAGIC);
        b = KV_FRAME_MAGIC0;
        CU_ASSERT_EQUAL(decode_guarded(&b, 1, BIG_BODY_MAX, 1, &f), KV_EAGAIN);
    }
}

/* Rewrites a valid request with a header change and a correct crc, so the
 * only fault is the one injected. Returns the length. */
static size_t make_frame(const struct kv_frame *hdr, const uint8_t *body, uint8_t *out, size_t cap)
{
    ssize_t r = kv_frame_encode(hdr, body, out, cap);

    CU_ASSERT_FATAL(r > 0);
    return (size_t)r;
}

/* Checks that a frame is refused with want both when whole and when only its
 * 24-byte header is in, and that *f then holds the header. */
static void expect_refused(const uint8_t *wire, size_t len, int expect_response, ssize_t want,
                           const struct kv_frame *hdr)
{
    struct kv_frame f;

    memset(&f, 0xA5, sizeof(f));
    CU_ASSERT_EQUAL(decode_guarded(wire, len, BIG_BODY_MAX, expect_response, &f), want);
    CU_ASSERT_EQUAL(f.opcode, hdr->opcode);
    CU_ASSERT_EQUAL(f.request_id, hdr->request_id);
    memset(&f, 0xA5, sizeof(f));
    CU_ASSERT_EQUAL(decode_guarded(wire, KV_FRAME_HDR, BIG_BODY_MAX, expect_response, &f), want);
    CU_ASSERT_EQUAL(f.opcode, hdr->opcode);
    CU_ASSERT_EQUAL(f.request_id, hdr->request_id);
    CU_ASSERT_EQUAL(f.version, hdr->version);
    CU_ASSERT_EQUAL(f.flags, hdr->flags);
    CU_ASSERT_EQUAL(f.status, hdr->status);
    CU_ASSERT_EQUAL(f.reserved, hdr->reserved);
    /* still too short for the header: no verdict yet */
    CU_ASSERT_EQUAL(decode_guarded(wire, KV_FRAME_HDR - 1, BIG_BODY_MAX, expect_response, &f),
                    KV_EAGAIN);
}

static const uint8_t abc[3] = {'a', 'b', 'c'};

static void test_frame_wrong_version(void)
{
    static const uint8_t versions[] = {0, 2, 3, 0x81, 0xFF};

    for (size_t i = 0; i < sizeof(versions); i++)
        for (int resp = 0; resp < 2; resp++) {
            struct kv_frame h = {.version = versions[i],
                                 .flags = (uint8_t)resp,
                                 .opcode = 9,
                                 .request_id = 0x1234 + i,
                                 .body_len = 3};
            uint8_t wire[64];
            size_t len = make_frame(&h, abc, wire, sizeof(wire));

            expect_refused(wire, len, resp, KV_EPROTO, &h);
        }
}

static void test_frame_reserved_flag_bits(void)
{
    for (int bit = 1; bit < 8; bit++)
        for (int resp = 0; resp < 2; resp++) {
            struct kv_frame h = {.version = 1,
                                 .flags = (uint8_t)((1u << bit) | resp),
                                 .opcode = 3,
                                 .request_id = 500 + bit,
                                 .body_len = 3};
            uint8_t wire[64];
            size_t len = make_frame(&h, abc, wire, sizeof(wire));

            expect_refused(wire, len, resp, KV_EPROTO, &h);
        }
}

static void test_frame_direction_flag(void)
{
    uint8_t wire[64];
    size_t len;
    struct kv_frame resp = {
        .version = 1, .flags = KV_FRAME_F_RESPONSE, .opcode = 1, .request_id = 99, .body_len = 3};
    struct kv_frame req = {.version = 1, .flags = 0, .opcode = 1, .request_id = 98, .body_len = 3};
    struct kv_frame f;

    /* a response flag on a request (server side) */
    len = make_frame(&resp, abc, wire, sizeof(wire));
    expect_refused(wire, len, 0, KV_EPROTO, &resp);
    CU_ASSERT_EQUAL(decode_guarded(wire, len, BIG_BODY_MAX, 1, &f), (ssize_t)len);
    /* a request flag on a response (client side) */
    len = make_frame(&req, abc, wire, sizeof(wire));
    expect_refused(wire, len, 1, KV_EPROTO, &req);
    CU_ASSERT_EQUAL(decode_guarded(wire, len, BIG_BODY_MAX, 0, &f), (ssize_t)len);
}

static void test_frame_reserved_field_nonzero(void)
{
    static const uint16_t vals[] = {1, 0x0100, 0x8000, 0xFFFF};

    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
        for (int resp = 0; resp < 2; resp++) {
            struct kv_frame h = {.version = 1,
                                 .flags = (uint8_t)resp,
                                 .opcode = 4,
                                 .request_id = 7,
                                 .body_len = 3,
                                 .reserved = vals[i]};
            uint8_t wire[64];
            size_t len = make_frame(&h, abc, wire, sizeof(wire));

            expect_refused(wire, len, resp, KV_EPROTO, &h);
        }
}

static void test_frame_status_in_request(void)
{
    static const uint16_t vals[] = {1, 4, 0x0100, 0xFFFF};

    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        struct kv_frame h = {.version = 1,
                             .flags = 0,
                             .opcode = 4,
                             .request_id = 8,
                             .body_len = 3,
                             .status = vals[i]};
        struct kv_frame r = h, f;
        uint8_t wire[64];
        size_t len = make_frame(&h, abc, wire, sizeof(wire));

        expect_refused(wire, len, 0, KV_EPROTO, &h);
        /* the same status is legal in a response */
        r.flags = KV_FRAME_F_RESPONSE;
        len = make_frame(&r, abc, wire, sizeof(wire));
        CU_ASSERT_EQUAL(decode_guarded(wire, len, BIG_BODY_MAX, 1, &f), (ssize_t)len);
        CU_ASSERT_EQUAL(f.status, vals[i]);
    }
}

/* Every single-bit change of body, crc, or the unvalidated header fields is
 * caught by the crc, and *f holds the header for the answer. */
static void test_frame_crc_mismatch(void)
{
    uint8_t wire[64];
    size_t len = vec_bytes(&vectors[4], wire, sizeof(wire)); /* get-request, 5-byte body */
    /* header bytes the decoder does not otherwise validate: opcode, id, */
    static const size_t hdr_pos[] = {6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

    for (size_t pos = KV_FRAME_HDR; pos < len; pos++)
        for (int bit = 0; bit < 8; bit++) {
            uint8_t bad[64];
            struct kv_frame f;

            memcpy(bad, wire, len);
            bad[pos] ^= (uint8_t)(1u << bit);
            memset(&f, 0xA5, sizeof(f));
            CU_ASSERT_EQUAL(decode_guarded(bad, len, BIG_BODY_MAX, 0, &f), KV_ECRC);
            CU_ASSERT_EQUAL(f.request_id, 42);
            CU_ASSERT_EQUAL(f.opcode, 1);
            CU_ASSERT_EQUAL(f.body_len, 5);
        }
    for (size_t i = 0; i < sizeof(hdr_pos) / sizeof(hdr_pos[0]); i++) {
        uint8_t bad[64];
        struct kv_frame f;

        memcpy(bad, wire, len);
        bad[hdr_pos[i]] ^= 0x01;
        CU_ASSERT_EQUAL(decode_guarded(bad, len, BIG_BODY_MAX, 0, &f), KV_ECRC);
    }
    /* an empty body: the crc still covers the header */
    len = vec_bytes(&vectors[1], wire, sizeof(wire));
    for (size_t pos = KV_FRAME_HDR; pos < len; pos++) {
        uint8_t bad[64];
        struct kv_frame f;

        memcpy(bad, wire, len);
        bad[pos] ^= 0x80;
        CU_ASSERT_EQUAL(decode_guarded(bad, len, BIG_BODY_MAX, 0, &f), KV_ECRC);
    }
}

static void test_frame_body_too_big_from_header(void)
{
    struct kv_frame h = {.version = 1, .opcode = 2, .request_id = 0xABCDEF, .body_len = 1000};
    uint8_t hdr[KV_FRAME_HDR];
    struct kv_frame f;

    kv_frame_encode_header(&h, hdr);
    /* only the header is in: refused now, not after waiting for 1000 bytes */
    memset(&f, 0xA5, sizeof(f));
    CU_ASSERT_EQUAL(decode_guarded(hdr, sizeof(hdr), 999, 0, &f), KV_ETOOBIG);
    CU_ASSERT_EQUAL(f.body_len, 1000);
    CU_ASSERT_EQUAL(f.request_id, 0xABCDEF);
    CU_ASSERT_EQUAL(f.opcode, 2);
    /* limit exactly the body length: fine, wait for the rest */
    CU_ASSERT_EQUAL(decode_guarded(hdr, sizeof(hdr), 1000, 0, &f), KV_EAGAIN);
    CU_ASSERT_EQUAL(decode_guarded(hdr, sizeof(hdr), 0, 0, &f), KV_ETOOBIG);
    /* a response too */
    h.flags = KV_FRAME_F_RESPONSE;
    kv_frame_encode_header(&h, hdr);
    CU_ASSERT_EQUAL(decode_guarded(hdr, sizeof(hdr), 999, 1, &f), KV_ETOOBIG);
    /* empty body with max_body 0 is fine */
    {
        uint8_t wire[64];
        size_t len = vec_bytes(&vectors[1], wire, sizeof(wire));
        CU_ASSERT_EQUAL(decode_guarded(wire, len, 0, 0, &f), (ssize_t)len);
        len = vec_bytes(&vectors[0], wire, sizeof(wire));
        CU_ASSERT_EQUAL(decode_guarded(wire, len, 2, 0, &f), KV_ETOOBIG);
        CU_ASSERT_EQUAL(decode_guarded(wire, len, 3, 0, &f), (ssize_t)len);
    }
}

static void test_frame_body_len_max_no_overflow(void)
{
    struct kv_frame h = {.version = 1, .opcode = 0, .request_id = 5, .body_len = 0xFFFFFFFFu};
    uint8_t buf[KV_FRAME_HDR + 100];
    struct kv_frame f;

    memset(buf, 0x11, sizeof(buf));
    kv_frame_encode_header(&h, buf);
    if (sizeof(size_t) > 4) {
        CU_ASSERT_EQUAL(decode_guarded(buf, KV_FRAME_HDR, SIZE_MAX, 0, &f), KV_EAGAIN);
        CU_ASSERT_EQUAL(f.body_len, 0xFFFFFFFFu);
        CU_ASSERT_EQUAL(decode_guarded(buf, sizeof(buf), SIZE_MAX, 0, &f), KV_EAGAIN);
        CU_ASSERT_EQUAL(decode_guarded(buf, sizeof(buf), SIZE_MAX - 1, 0, &f), KV_EAGAIN);
        CU_ASSERT_EQUAL(decode_guarded(buf, sizeof(buf), 0xFFFFFFFFu, 0, &f), KV_EAGAIN);
    } else {
        /* 32-bit: the total cannot be represented; it must not wrap to "complete" */
        ssize_t r = decode_guarded(buf, sizeof(buf), SIZE_MAX, 0, &f);
        CU_ASSERT(r == KV_EAGAIN || r == KV_ETOOBIG);
    }
    CU_ASSERT_EQUAL(decode_guarded(buf, sizeof(buf), 0xFFFFFFFEu, 0, &f), KV_ETOOBIG);
}

static void test_frame_back_to_back(void)
{
    uint8_t a[64], b[64], both[128];
    size_t la = vec_bytes(&vectors[0], a, sizeof(a));
    size_t lb = vec_bytes(&vectors[4], b, sizeof(b));
    struct guarded g;
    struct kv_frame f;
    uint8_t *p;

    memcpy(both, a, la);
    memcpy(both + la, b, lb);
    p = guard_put(&g, both, la + lb);
    CU_ASSERT_EQUAL(kv_frame_decode(p, la + lb, BIG_BODY_MAX, 0, &f), (ssize_t)la);
    CU_ASSERT_EQUAL(f.request_id, 1);
    CU_ASSERT(f.body == p + KV_FRAME_HDR && memcmp(f.body, "abc", 3) == 0);
    CU_ASSERT_EQUAL(kv_frame_decode(p + la, lb, BIG_BODY_MAX, 0, &f), (ssize_t)lb);
    CU_ASSERT_EQUAL(f.request_id, 42);
    CU_ASSERT_EQUAL(f.opcode, 1);
    CU_ASSERT(f.body == p + la + KV_FRAME_HDR);
    guard_free(&g);

    /* the first frame whole, the second cut anywhere: one frame, then wait */
    for (size_t cut = 0; cut < lb; cut++) {
        p = guard_put(&g, both, la + cut);
        CU_ASSERT_EQUAL(kv_frame_decode(p, la + cut, BIG_BODY_MAX, 0, &f), (ssize_t)la);
        CU_ASSERT_EQUAL(kv_frame_decode(p + la, cut, BIG_BODY_MAX, 0, &f), KV_EAGAIN);
        guard_free(&g);
    }
}

static void test_frame_encode_small_cap(void)
{
    struct kv_frame h = {.version = 1, .opcode = 1, .request_id = 42, .body_len = 5};
    static const uint8_t body[5] = {0x0a, 0x03, 'f', 'o', 'o'};
    size_t total = KV_FRAME_OVERHEAD + 5;
    struct guarded g;

    /* too small by one, by a lot, zero: refused; the buffer ends at a guard page */
    for (size_t cap = 0; cap < total; cap++) {
        uint8_t zeros[64] = {0};
        uint8_t *out = guard_put(&g, zeros, cap);

        CU_ASSERT_EQUAL(kv_frame_encode(&h, body, out, cap), KV_ETOOBIG);
        guard_free(&g);
    }
    /* exactly enough: written, ending at the guard page */
    {
        uint8_t zeros[64] = {0}, want[64];
        uint8_t *out = guard_put(&g, zeros, total);
        size_t wl = vec_bytes(&vectors[4], want, sizeof(want));

        CU_ASSERT_EQUAL(kv_frame_encode(&h, body, out, total), (ssize_t)total);
        CU_ASSERT_EQUAL(wl, total);
        CU_ASSERT(memcmp(out, want, total) == 0);
        guard_free(&g);
    }
    /* empty body: 28 bytes needed, 27 refused */
    {
        struct kv_frame e = {.version = 1};
        uint8_t out[KV_FRAME_OVERHEAD];
        CU_ASSERT_EQUAL(kv_frame_encode(&e, NULL, out, KV_FRAME_OVERHEAD - 1), KV_ETOOBIG);
        CU_ASSERT_EQUAL(kv_frame_encode(&e, NULL, out, KV_FRAME_OVERHEAD), KV_FRAME_OVERHEAD);
    }
}

static void test_frame_header_little_endian(void)
{
    struct kv_frame h = {.version = 0x77,
                         .flags = 0x5A,
                         .opcode = 0x0102,
                         .request_id = 0x1122334455667788ull,
                         .body_len = 0xA1B2C3D4u,
                         .status = 0xBEEF,
                         .reserved = 0xCAFE};
    static const uint8_t want[KV_FRAME_HDR] = {
        0xCB, 0x4B, 0x56, 0x31,                         /* magic */
        0x77,                                           /* version */
        0x5A,                                           /* flags */
        0x02, 0x01,                                     /* opcode */
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, /* request_id */
        0xD4, 0xC3, 0xB2, 0xA1,                         /* body_len */
        0xEF, 0xBE,                                     /* status */
        0xFE, 0xCA,                                     /* reserved */
    };
    uint8_t out[KV_FRAME_HDR + 1];
    uint8_t le[4];

    memset(out, 0xEE, sizeof(out));
    kv_frame_encode_header(&h, out);
    for (int i = 0; i < KV_FRAME_HDR; i++)
        CU_ASSERT_EQUAL(out[i], want[i]);
    CU_ASSERT_EQUAL(out[KV_FRAME_HDR], 0xEE); /* 24 bytes, no more */
    CU_ASSERT_EQUAL(kv_get_le32(out), KV_FRAME_MAGIC);
    CU_ASSERT_EQUAL(out[0], KV_FRAME_MAGIC0);

    kv_put_le32(le, 0x01020304u);
    CU_ASSERT(le[0] == 4 && le[1] == 3 && le[2] == 2 && le[3] == 1);
    CU_ASSERT_EQUAL(kv_get_le32(le), 0x01020304u);

    /* the crc goes after the body, little-endian */
    {
        struct kv_frame e = {.version = 1, .request_id = 3, .body_len = 2};
        static const uint8_t body[2] = {0xAA, 0x55};
        uint8_t wire[KV_FRAME_OVERHEAD + 2];
        uint32_t crc;

        CU_ASSERT_EQUAL(kv_frame_encode(&e, body, wire, sizeof(wire)), (ssize_t)sizeof(wire));
        crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), wire, KV_FRAME_HDR + 2);
        CU_ASSERT_EQUAL(wire[26], (uint8_t)crc);
        CU_ASSERT_EQUAL(wire[27], (uint8_t)(crc >> 8));
        CU_ASSERT_EQUAL(wire[28], (uint8_t)(crc >> 16));
        CU_ASSERT_EQUAL(wire[29], (uint8_t)(crc >> 24));
        CU_ASSERT_EQUAL(wire[24], 0xAA);
        CU_ASSERT_EQUAL(wire[25], 0x55);
    }
}

/* kv_frame_crc is zlib's crc32 over header then body. */
static void test_frame_crc_is_zlib(void)
{
    uint8_t hdr[KV_FRAME_HDR], joined[KV_FRAME_HDR + 300];
    uint8_t body[300];

    for (int i = 0; i < KV_FRAME_HDR; i++)
        hdr[i] = (uint8_t)(i * 37 + 1);
    for (int i = 0; i < 300; i++)
        body[i] = (uint8_t)(i ^ 0x5C);
    memcpy(joined, hdr, KV_FRAME_HDR);
    memcpy(joined + KV_FRAME_HDR, body, sizeof(body));
    for (size_t blen = 0; blen <= sizeof(body); blen += 37) {
        uint32_t want = (uint32_t)crc32(0L, joined, (uInt)(KV_FRAME_HDR + blen));
        CU_ASSERT_EQUAL(kv_frame_crc(hdr, body, blen), want);
    }
    CU_ASSERT_EQUAL(kv_frame_crc(hdr, NULL, 0), (uint32_t)crc32(0L, hdr, KV_FRAME_HDR));
    /* the published empty ping request */
    {
        uint8_t wire[64];
        size_t len = vec_bytes(&vectors[1], wire, sizeof(wire));
        CU_ASSERT_EQUAL(kv_frame_crc(wire, NULL, 0), 0x06F88FA8u);
        CU_ASSERT_EQUAL(kv_get_le32(wire + len - 4), 0x06F88FA8u);
    }
}

/* Random frames encode and decode to the same fields and body. */
static void test_frame_roundtrip_random(void)
{
    uint8_t body[600], wire[700];
    unsigned seed = 12345;

    for (int iter = 0; iter < 2000; iter++) {
        struct kv_frame h, d;
        size_t blen;
        ssize_t len;
        int resp;

        seed = seed * 1103515245u + 12345u;
        blen = (seed >> 8) % sizeof(body);
        resp = (seed >> 4) & 1;
        for (size_t i = 0; i < blen; i++)
            body[i] = (uint8_t)(rand_r(&seed));
        h = (struct kv_frame){.version = 1,
                              .flags = (uint8_t)resp,
                              .opcode = (uint16_t)rand_r(&seed),
                              .request_id = (uint64_t)rand_r(&seed) << 33 ^ (uint64_t)rand_r(&seed),
                              .body_len = (uint32_t)blen,
                              .status = resp ? (uint16_t)rand_r(&seed) : 0};
        len = kv_frame_encode(&h, body, wire, sizeof(wire));
        CU_ASSERT_EQUAL_FATAL(len, (ssize_t)(blen + KV_FRAME_OVERHEAD));
        CU_ASSERT_EQUAL_FATAL(decode_guarded(wire, (size_t)len, sizeof(body), resp, &d), len);
        CU_ASSERT_EQUAL(d.opcode, h.opcode);
        CU_ASSERT_EQUAL(d.request_id, h.request_id);
        CU_ASSERT_EQUAL(d.status, h.status);
        CU_ASSERT_EQUAL(d.flags, h.flags);
        CU_ASSERT_EQUAL(d.body_len, h.body_len);
        CU_ASSERT_EQUAL(kv_frame_decode(wire, (size_t)len, sizeof(body), resp, &d), len);
        CU_ASSERT(blen == 0 || memcmp(d.body, body, blen) == 0);
    }
}

/* Garbage after a valid magic never crashes nor reads out of bounds, and
 * every answer is one the header documents. */
static void test_frame_garbage_answers_documented(void)
{
    uint8_t buf[200];
    unsigned seed = 777;
    int ok = 1;

    for (int iter = 0; iter < 20000 && ok; iter++) {
        size_t len = (size_t)rand_r(&seed) % sizeof(buf);
        struct kv_frame f;
        ssize_t r;

        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rand_r(&seed);
        if (len >= 4 && (iter & 1))
            kv_put_le32(buf, KV_FRAME_MAGIC);
        if (len >= 6 && (iter & 2)) {
            buf[4] = 1;
            buf[5] &= 1;
        }
        if (len >= 24 && (iter & 4)) {
            buf[16] = (uint8_t)(rand_r(&seed) % 200);
            buf[17] = buf[18] = buf[19] = 0;
            buf[22] = buf[23] = 0;
        }
        r = decode_guarded(buf, len, 150, rand_r(&seed) & 1, &f);
        if (!(r == KV_EAGAIN || r == KV_EMAGIC || r == KV_EPROTO || r == KV_ETOOBIG ||
              r == KV_ECRC || (r >= KV_FRAME_OVERHEAD && (size_t)r <= len)))
            ok = 0;
    }
    CU_ASSERT(ok);
}

static void test_frame_status_names(void)
{
    static const char *const names[] = {
        "OK",           "NOT_FOUND", "EXISTS",    "BAD_REQUEST",   "UNKNOWN_OPCODE",
        "CRC_MISMATCH", "TOO_LARGE", "BAD_FRAME", "OUT_OF_MEMORY", "NOT_A_NUMBER",
        "BUSY",         "INTERNAL",  "NOAUTH",    "DISK_ERROR",
    };

    CU_ASSERT_EQUAL_FATAL(sizeof(names) / sizeof(names[0]), KV_ST__COUNT);
    for (unsigned i = 0; i < KV_ST__COUNT; i++) {
        CU_ASSERT_PTR_NOT_NULL_FATAL(kv_status_name(i));
        CU_ASSERT_STRING_EQUAL(kv_status_name(i), names[i]);
    }
    CU_ASSERT_STRING_EQUAL(kv_status_name(KV_ST_UNKNOWN_OPCODE), "UNKNOWN_OPCODE");
    CU_ASSERT_STRING_EQUAL(kv_status_name(KV_ST__COUNT), "UNKNOWN_STATUS");
    CU_ASSERT_STRING_EQUAL(kv_status_name(0xFFFF), "UNKNOWN_STATUS");
    CU_ASSERT_STRING_EQUAL(kv_status_name(~0u), "UNKNOWN_STATUS");
}

/* kv_crc32 (PCLMUL folding where the CPU has it) is exactly zlib's crc32,
 * for every length around the 16-byte blocks, any alignment, any seed. */
static void test_frame_crc32_equals_zlib_every_length(void)
{
    static uint8_t buf[4200];
    unsigned bad = 0;

    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 131 + (i >> 7) * 17 + 5);
    for (size_t len = 0; len < 600; len++)
        for (size_t off = 0; off < 4; off++) {
            uLong seed = len % 3 ? 0 : crc32(0, buf + 4000, 9);
            if (kv_crc32((uint32_t)seed, buf + off, len) !=
                (uint32_t)crc32(seed, buf + off, (uInt)len))
                bad++;
        }
    for (size_t len = 600; len <= 4096; len += 97)
        if (kv_crc32(0, buf + 1, len) != (uint32_t)crc32(0, buf + 1, (uInt)len))
            bad++;
    CU_ASSERT_EQUAL(bad, 0);
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_frame_vectors_decode_exact", test_frame_vectors_decode_exact},
        {"test_frame_vectors_encode_from_fields", test_frame_vectors_encode_from_fields},
        {"test_frame_vectors_file", test_frame_vectors_file},
        {"test_frame_truncation_every_point", test_frame_truncation_every_point},
        {"test_frame_truncation_large_body", test_frame_truncation_large_body},
        {"test_frame_bad_magic_each_byte", test_frame_bad_magic_each_byte},
        {"test_frame_bad_magic_text_protocol", test_frame_bad_magic_text_protocol},
        {"test_frame_wrong_version", test_frame_wrong_version},
        {"test_frame_reserved_flag_bits", test_frame_reserved_flag_bits},
        {"test_frame_direction_flag", test_frame_direction_flag},
        {"test_frame_reserved_field_nonzero", test_frame_reserved_field_nonzero},
        {"test_frame_status_in_request", test_frame_status_in_request},
        {"test_frame_crc_mismatch", test_frame_crc_mismatch},
        {"test_frame_body_too_big_from_header", test_frame_body_too_big_from_header},
        {"test_frame_body_len_max_no_overflow", test_frame_body_len_max_no_overflow},
        {"test_frame_back_to_back", test_frame_back_to_back},
        {"test_frame_encode_small_cap", test_frame_encode_small_cap},
        {"test_frame_header_little_endian", test_frame_header_little_endian},
        {"test_frame_crc_is_zlib", test_frame_crc_is_zlib},
        {"test_frame_crc32_equals_zlib_every_length", test_frame_crc32_equals_zlib_every_length},
        {"test_frame_roundtrip_random", test_frame_roundtrip_random},
        {"test_frame_garbage_answers_documented", test_frame_garbage_answers_documented},
        {"test_frame_status_names", test_frame_status_names},
    };

    return kv_test_run_suite("frame", NULL, NULL, tests, sizeof(tests) / sizeof(tests[0]));
}
