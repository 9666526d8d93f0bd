/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/pb.c -- minimal protobuf wire reader/writer (see pb.h). */
#include "pb.h"

static int get_varint_slow(struct pb_reader *r, uint64_t *out)
{
    uint64_t v = 0;

    for (unsigned shift = 0; shift < 64; shift += 7) {
        uint8_t b;

        if (r->p >= r->end)
            return -1;
        b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1; /* more than 10 bytes */
}

/* Tags, short lengths and small numbers take one byte: read those inline. */
static inline int get_varint(struct pb_reader *r, uint64_t *out)
{
    if (r->p < r->end && *r->p < 0x80) {
        *out = *r->p++;
        return 0;
    }
    return get_varint_slow(r, out);
}

int pb_next_slow(struct pb_reader *r, struct pb_field *f)
{
    uint64_t key;

    if (r->p >= r->end)
        return 0;
    if (get_varint(r, &key) != 0 || (key >> 3) == 0 || (key >> 3) > 0x1fffffff)
        return -1;
    f->number = (uint32_t)(key >> 3);
    f->wire = (uint32_t)(key & 7);
    f->data = NULL;
    f->len = 0;
    switch (f->wire) {
    case 0:
        return get_varint(r, &f->u64) == 0 ? 1 : -1;
    case 1:
    case 5: {
        size_t n = f->wire == 1 ? 8 : 4;

        if ((size_t)(r->end - r->p) < n)
            return -1;
        f->u64 = 0;
        for (size_t i = 0; i < n; i++)
            f->u64 |= (uint64_t)r->p[i] << (8 * i);
        r->p += n;
        return 1;
    }
    case 2:
        if (get_varint(r, &f->u64) != 0 || f->u64 > (uint64_t)(r->end - r->p))
            return -1;
        f->data = r->p;
        f->len = (size_t)f->u64;
        r->p += f->len;
        return 1;
    default:
        return -1;
    }
}

size_t pb_varint_len(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

size_t pb_put_varint(uint8_t *out, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

size_t pb_put_uint_field(uint8_t *out, uint32_t number, uint64_t v)
{
    size_t n = pb_put_varint(out, (uint64_t)number << 3);

    return n + pb_put_varint(out + n, v);
}

size_t pb_put_len_prefix(uint8_t *out, uint32_t number, size_t len)
{
    size_t n = pb_put_varint(out, (uint64_t)number << 3 | 2);

    return n + pb_put_varint(out + n, len);
}
