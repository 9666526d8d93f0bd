/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* fuzz/fuzz_frame.c -- libFuzzer harness for the frame codec (src/io/frame.c).
 *
 * Every input is decoded with several max_body limits, as a request (server
 * side) and as a response (client side), and the result is compared with a
 * reference decoder written here from PROTOCOL.md alone. On success the
 * frame is re-encoded and must give back exactly the bytes consumed; every
 * truncation of it must be "partial" (KV_EAGAIN), and decoding works on an
 * exact-size copy of the input so that any overread hits ASan. The codec
 * allocates nothing, so the per-module accounting must not move at all. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "frame.h"
#include "fuzz_common.h"
#include "kv_err.h"
#include "kv_mem.h"

static const size_t max_bodies[] = {0, 1, 3, 16, 100, 4096, 16u << 20, UINT32_MAX, SIZE_MAX};

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The decoder PROTOCOL.md describes, written without looking at frame.c:
 * returns what kv_frame_decode must return. */
static ssize_t reference_decode(const uint8_t *b, size_t len, size_t max_body, int resp)
{
    static const uint8_t magic[4] = {0xCB, 0x4B, 0x56, 0x31};
    uint32_t body_len;

    for (size_t i = 0; i < len && i < 4; i++)
        if (b[i] != magic[i])
            return KV_EMAGIC;
    if (len < KV_FRAME_HDR)
        return KV_EAGAIN;
    if (b[4] != 1 || (b[5] & 0xFE) != 0 || (b[5] & 1) != (resp ? 1 : 0) ||
        (b[22] | b[23]) != 0 || (!resp && (b[20] | b[21]) != 0))
        return KV_EPROTO;
    body_len = le32(b + 16);
    if (body_len > max_body)
        return KV_ETOOBIG;
    if (len - KV_FRAME_HDR < (uint64_t)body_len + KV_FRAME_CRC)
        return KV_EAGAIN;
    if ((uint32_t)crc32(0L, b, KV_FRAME_HDR + body_len) != le32(b + KV_FRAME_HDR + body_len))
        return KV_ECRC;
    return (ssize_t)(KV_FRAME_OVERHEAD + (size_t)body_len);
}

/* Whenever the header is in (and the magic matched), *f must hold it. */
static void check_header(const uint8_t *b, const struct kv_frame *f)
{
    uint8_t hdr[KV_FRAME_HDR];

    kv_frame_encode_header(f, hdr);
    FUZZ_CHECK(memcmp(hdr, b, KV_FRAME_HDR) == 0, "header not reproduced by encode_header");
}

static void check_one(const uint8_t *buf, size_t len, size_t max_body, int resp)
{
    struct kv_frame f;
    ssize_t want = reference_decode(buf, len, max_body, resp);
    ssize_t r;

    memset(&f, 0xA5, sizeof(f));
    r = kv_frame_decode(buf, len, max_body, resp, &f);
    if (r != want)
        fuzz_fail("kv_frame_decode(len %zu, max_body %zu, resp %d) = %zd, PROTOCOL.md says %zd",
                  len, max_body, resp, r, want);
    if (r == KV_EMAGIC || (r == KV_EAGAIN && len < KV_FRAME_HDR))
        return;
    check_header(buf, &f);
    if (r < 0)
        return;

    /* success: consumed is within the input and the body points into it */
    FUZZ_CHECK((size_t)r <= len);
    FUZZ_CHECK((size_t)r == KV_FRAME_OVERHEAD + (size_t)f.body_len);
    FUZZ_CHECK(f.body_len <= max_body);
    FUZZ_CHECK(f.body == buf + KV_FRAME_HDR);
    FUZZ_CHECK(f.body + f.body_len + KV_FRAME_CRC <= buf + len);
    FUZZ_CHECK(kv_status_name(f.status) != NULL);

    /* re-encode: the exact bytes come back */
    {
        uint8_t *out = malloc((size_t)r);
        ssize_t n;

        FUZZ_CHECK(out != NULL);
        FUZZ_CHECK(kv_frame_encode(&f, f.body, out, (size_t)r - 1) == KV_ETOOBIG,
                   "encode into a buffer one byte short must fail");
        n = kv_frame_encode(&f, f.body, out, (size_t)r);
        FUZZ_CHECK(n == r, "encode returned %zd, decode consumed %zd", n, r);
        FUZZ_CHECK(memcmp(out, buf, (size_t)r) == 0, "re-encoded frame differs");
        FUZZ_CHECK(kv_frame_crc(out, out + KV_FRAME_HDR, f.body_len) ==
                   le32(out + KV_FRAME_HDR + f.body_len));
        free(out);
    }
}

/* Every truncation of a whole frame is partial, never an error: a few of
 * them on exact-size copies (ASan sees a read past the cut), all of them on
 * the original buffer. */
static void check_truncations(const uint8_t *buf, size_t frame_len, size_t max_body)
{
    for (size_t k = 0; k < frame_len; k++) {
        struct kv_frame f;
        ssize_t r;

        if (k < 32 || k + 8 > frame_len || k == KV_FRAME_HDR + (frame_len - KV_FRAME_HDR) / 2) {
            uint8_t *cut = fuzz_exact_copy(buf, k);

            r = kv_frame_decode(cut, k, max_body, 0, &f);
            free(cut);
        } else {
            r = kv_frame_decode(buf, k, max_body, 0, &f);
        }
        if (r != KV_EAGAIN)
            fuzz_fail("truncation to %zu of a %zu-byte frame gave %zd, not KV_EAGAIN", k,
                      frame_len, r);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kv_mem_snapshot before;
    uint8_t *buf = fuzz_exact_copy(data, size);

    kv_mem_snapshot(&before);
    for (size_t i = 0; i < sizeof(max_bodies) / sizeof(max_bodies[0]); i++) {
        check_one(buf, size, max_bodies[i], 0);
        check_one(buf, size, max_bodies[i], 1);
    }
    /* a stream: frames back to back, as conn_parse walks them */
    for (size_t off = 0; off < size;) {
        struct kv_frame f;
        ssize_t r = kv_frame_decode(buf + off, size - off, 4096, 0, &f);

        if (r <= 0)
            break;
        check_truncations(buf + off, (size_t)r, 4096);
        off += (size_t)r;
        FUZZ_CHECK(off <= size);
    }
    free(buf);
    fuzz_mem_check(&before, FUZZ_MODS_ALL, "frame codec");
    return 0;
}
