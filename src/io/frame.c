/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/frame.c -- the PROTOCOL.md frame codec (see frame.h). */
#include "frame.h"
#include "kv_ops.h"

#include <string.h>
#include <zlib.h>

#include "kv_err.h"

static const char *const status_names[KV_ST__COUNT] = {
    "OK",          "NOT_FOUND",     "EXISTS",        "BAD_REQUEST", "UNKNOWN_OPCODE",
    "CRC_MISMATCH", "TOO_LARGE",    "BAD_FRAME",     "OUT_OF_MEMORY", "NOT_A_NUMBER",
    "BUSY",        "INTERNAL",      "NOAUTH",      "DISK_ERROR",
};

const char *kv_status_name(unsigned status)
{
    return status < KV_ST__COUNT ? status_names[status] : "UNKNOWN_STATUS";
}

static uint16_t get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint64_t get_le64(const uint8_t *p)
{
    return (uint64_t)kv_get_le32(p) | (uint64_t)kv_get_le32(p + 4) << 32;
}

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_le64(uint8_t *p, uint64_t v)
{
    kv_put_le32(p, (uint32_t)v);
    kv_put_le32(p + 4, (uint32_t)(v >> 32));
}

uint32_t kv_frame_crc(const uint8_t hdr[KV_FRAME_HDR], const uint8_t *body, size_t body_len)
{
    if (body == hdr + KV_FRAME_HDR) /* contiguous, as received: one pass */
        return kv_crc32(0, hdr, KV_FRAME_HDR + body_len);
    return kv_crc32(kv_crc32(0, hdr, KV_FRAME_HDR), body, body_len);
}

ssize_t kv_frame_decode(const uint8_t *buf, size_t len, size_t max_body, int expect_response,
                        struct kv_frame *f)
{
    static const uint8_t magic[4] = {0xCB, 0x4B, 0x56, 0x31};
    size_t n = len < 4 ? len : 4;
    size_t total;

    /* the magic is checked byte by byte as it arrives, so a text protocol is
     * told apart from the very first byte */
    if (memcmp(buf, magic, n) != 0)
        return KV_EMAGIC;
    if (len < KV_FRAME_HDR)
        return KV_EAGAIN;

    f->version = buf[4];
    f->flags = buf[5];
    f->opcode = get_le16(buf + 6);
    f->request_id = get_le64(buf + 8);
    f->body_len = kv_get_le32(buf + 16);
    f->status = get_le16(buf + 20);
    f->reserved = get_le16(buf + 22);
    f->body = NULL;

    if (f->version != KV_FRAME_VERSION || (f->flags & ~KV_FRAME_F_RESPONSE) != 0 ||
        (f->flags & KV_FRAME_F_RESPONSE) != (expect_response ? KV_FRAME_F_RESPONSE : 0) ||
        f->reserved != 0 || (!expect_response && f->status != 0))
        return KV_EPROTO;
    /* compare before any arithmetic: body_len is attacker-controlled */
    if (f->body_len > max_body)
        return KV_ETOOBIG;
    total = KV_FRAME_OVERHEAD + (size_t)f->body_len;
    if (len < total)
        return KV_EAGAIN;
    f->body = buf + KV_FRAME_HDR;
    if (kv_frame_crc(buf, f->body, f->body_len) != kv_get_le32(buf + KV_FRAME_HDR + f->body_len))
        return KV_ECRC;
    return (ssize_t)total;
}

void kv_frame_encode_header(const struct kv_frame *f, uint8_t out[KV_FRAME_HDR])
{
    kv_put_le32(out, KV_FRAME_MAGIC);
    out[4] = f->version;
    out[5] = f->flags;
    put_le16(out + 6, f->opcode);
    put_le64(out + 8, f->request_id);
    kv_put_le32(out + 16, f->body_len);
    put_le16(out + 20, f->status);
    put_le16(out + 22, f->reserved);
}

ssize_t kv_frame_encode(const struct kv_frame *f, const uint8_t *body, uint8_t *out, size_t cap)
{
    size_t total = KV_FRAME_OVERHEAD + (size_t)f->body_len;

    if (cap < total)
        return KV_ETOOBIG;
    kv_frame_encode_header(f, out);
    if (f->body_len)
        memcpy(out + KV_FRAME_HDR, body, f->body_len);
    kv_put_le32(out + KV_FRAME_HDR + f->body_len, kv_frame_crc(out, body, f->body_len));
    return (ssize_t)total;
}

const char *kv_opcode_name(unsigned opcode)
{
    switch (opcode) {
#define KV_OP_CASE_(name, num, text)                                                        \
    case num: return text;
        KV_OPCODES(KV_OP_CASE_)
#undef KV_OP_CASE_
    }
    return NULL;
}
