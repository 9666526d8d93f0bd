/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/frame.h -- encode and decode PROTOCOL.md frames; allocates nothing.
 *
 * A frame is a 24-byte little-endian header, body_len bytes of body, and a
 * little-endian zlib crc32 over header and body. The decoder validates the
 * header as soon as its bytes are in (so an oversized body_len is refused
 * before anything waits for or allocates it), points the body into the
 * caller's buffer, and checks the crc once the whole frame is present. */
#ifndef KV_FRAME_H
#define KV_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kv_call.h"

#define KV_FRAME_MAGIC 0x31564BCBu /* bytes CB 4B 56 31 */
#define KV_FRAME_MAGIC0 0xCB       /* first byte of every binary connection */
#define KV_FRAME_VERSION 1
#define KV_FRAME_HDR 24
#define KV_FRAME_CRC 4
#define KV_FRAME_OVERHEAD (KV_FRAME_HDR + KV_FRAME_CRC)
#define KV_FRAME_F_RESPONSE 0x01

/* Returns "OK", "NOT_FOUND", ... or "UNKNOWN_STATUS". */
const char *kv_status_name(unsigned status);

struct kv_frame {
    uint8_t version;
    uint8_t flags;
    uint16_t opcode;
    uint64_t request_id;
    uint32_t body_len;
    uint16_t status;
    uint16_t reserved;
    const uint8_t *body; /* borrowed: points into the decoded buffer */
};

/* Decodes one frame from buf[0..len).
 * Returns the bytes consumed (> 0) and fills *f, whose body points into buf;
 * KV_EAGAIN when buf holds only part of a frame (after the header is in,
 * *f holds the header, so the caller can size its buffer: the whole frame is
 * KV_FRAME_OVERHEAD + f->body_len bytes); and for a bad stream:
 *   KV_EMAGIC  the first bytes are not the magic (no answer is owed);
 *   KV_EPROTO  wrong version, a reserved flag bit, a response flag, or a
 *              non-zero status/reserved field (answer BAD_FRAME);
 *   KV_ETOOBIG body_len > max_body (answer TOO_LARGE);
 *   KV_ECRC    the crc does not match (answer CRC_MISMATCH).
 * For the last three *f holds the header, so the answer can carry the
 * request's opcode and id. expect_response selects which direction is valid
 * (0 on a server, 1 on a client). */
ssize_t kv_frame_decode(const uint8_t *buf, size_t len, size_t max_body, int expect_response,
                        struct kv_frame *f);

/* Writes the 24-byte header of f (body pointer ignored) to out. */
void kv_frame_encode_header(const struct kv_frame *f, uint8_t out[KV_FRAME_HDR]);

/* zlib's crc32(crc, buf, len), computed faster where the CPU allows
 * (crc32.c); start with crc 0. */
uint32_t kv_crc32(uint32_t crc, const void *buf, size_t len);

/* crc32 of a header followed by a body, as written after the body. */
uint32_t kv_frame_crc(const uint8_t hdr[KV_FRAME_HDR], const uint8_t *body, size_t body_len);

/* Little-endian helpers shared by the codec's users. */
static inline void kv_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t kv_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Encodes a whole frame (header, body, crc) into out[0..cap).
 * Returns the length written, or KV_ETOOBIG when it does not fit. */
ssize_t kv_frame_encode(const struct kv_frame *f, const uint8_t *body, uint8_t *out, size_t cap);

#endif
