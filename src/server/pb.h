/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/pb.h -- a minimal protobuf wire reader and writer for the hot
 * opcodes (single-key requests and their small answers), so that they
 * decode without allocating: fields are read in place from the request
 * body. Wire-compatible with the protobuf-c code generated from
 * proto/kv.proto, which handles the messages with repeated fields. */
#ifndef KV_PB_H
#define KV_PB_H

#include <stddef.h>
#include <stdint.h>

struct pb_reader {
    const uint8_t *p, *end;
};

struct pb_field {
    uint32_t number;
    uint32_t wire;       /* 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
    uint64_t u64;        /* varint / fixed value */
    const uint8_t *data; /* wire 2: points into the body */
    size_t len;
};

/* The general reader; pb_next below calls it for anything but the common
 * case. */
int pb_next_slow(struct pb_reader *r, struct pb_field *f);

/* Returns 1 and fills *f with the next field, 0 at the end, -1 on a
 * malformed body (truncated varint or length past the end, bad wire type,
 * field number 0). Never reads outside [p, end).
 * Inline for the common case, a one-byte tag (fields 1..15) with a varint
 * of up to 9 bytes or a one-byte length: every field of the hot requests and
 * answers. The rest, and every malformed case, goes to pb_next_slow. */
static inline int pb_next(struct pb_reader *r, struct pb_field *f)
{
    const uint8_t *p = r->p;
    size_t avail = (size_t)(r->end - p);

    if (avail >= 2 && p[0] < 0x80 && (p[0] >> 3) != 0) {
        unsigned wire = p[0] & 7;

        if (wire == 2 && p[1] < 0x80 && p[1] <= avail - 2) {
            f->number = p[0] >> 3;
            f->wire = 2;
            f->u64 = p[1];
            f->data = p + 2;
            f->len = p[1];
            r->p = p + 2 + p[1];
            return 1;
        }
        if (wire == 0) {
            uint64_t v = 0;
            size_t lim = avail < 10 ? avail : 10;

            for (size_t k = 1, shift = 0; k < lim; k++, shift += 7) {
                v |= (uint64_t)(p[k] & 0x7f) << shift;
                if (!(p[k] & 0x80)) {
                    f->number = p[0] >> 3;
                    f->wire = 0;
                    f->u64 = v;
                    f->data = NULL;
                    f->len = 0;
                    r->p = p + k + 1;
                    return 1;
                }
            }
        }
    }
    return pb_next_slow(r, f);
}

static inline int64_t pb_zigzag_decode(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static inline uint64_t pb_zigzag_encode(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

/* Bytes a varint of v takes (1..10). */
size_t pb_varint_len(uint64_t v);
/* Writes a varint; returns the bytes written. */
size_t pb_put_varint(uint8_t *out, uint64_t v);
/* Writes a varint field (tag + value); returns bytes written (<= 11). */
size_t pb_put_uint_field(uint8_t *out, uint32_t number, uint64_t v);
/* Writes the tag and length of a length-delimited field; returns bytes written. */
size_t pb_put_len_prefix(uint8_t *out, uint32_t number, size_t len);

#endif
