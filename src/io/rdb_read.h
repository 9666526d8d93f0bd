/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/rdb_read.h -- a reader of Redis RDB files (the codec of a file
 * format: shared by the server's --load-rdb and kvclient restore).
 *
 * Allocates only the buffer of one decoded string, logs nothing, and reads
 * nothing outside buf[0..len). Versions 1 to 11 (Redis 7.2): every string
 * key is handed to a callback; keys of every other type (lists, sets,
 * hashes, sorted sets, streams, module types with a self-delimiting
 * encoding), function libraries and module aux data are skipped and
 * counted. The CRC64 at the end is checked when it is not 0. */
#ifndef KV_RDB_READ_H
#define KV_RDB_READ_H

#include <stddef.h>
#include <stdint.h>

#include "kv_mem.h"

/* One string key of the file; pointers valid during the callback only. */
struct kv_rdb_string {
    const uint8_t *key, *val;
    size_t klen, vlen;
    int64_t expire_ms; /* absolute unix time in ms, -1 = none */
    uint64_t db;       /* the SELECTDB it is under */
};

/* Returns 0 to go on, or a negative KV_E* code that stops the read (and is
 * returned; the callback may write its reason to err first). */
typedef int (*kv_rdb_string_fn)(void *ctx, const struct kv_rdb_string *s);

struct kv_rdb_read_counts {
    uint64_t strings;     /* string keys handed over (or, without fn, found) */
    uint64_t other_types; /* keys of other types, skipped */
    uint64_t functions;   /* function libraries and module aux records, skipped */
    unsigned version;     /* the file's RDB version */
};

/* Reads buf[0..len); fn (may be NULL: only check the file) gets every string
 * key in file order. Returns 0; KV_ECORRUPT (not an RDB file, a damaged or
 * truncated one, a version or type that cannot be read) with the reason and
 * offset in err; KV_ENOMEM; or fn's code. *cnt is written either way. The
 * decode buffer is counted under mod. */
int kv_rdb_read(const void *buf, size_t len, enum kv_mod mod, kv_rdb_string_fn fn, void *ctx,
                struct kv_rdb_read_counts *cnt, char *err, size_t errcap);

/* Redis's CRC64 (Jones polynomial, reflected, init 0) of buf, continued
 * from crc. crc64("123456789") == 0xe9c6d914c4b8d9ca. */
uint64_t kv_rdb_crc64(uint64_t crc, const void *buf, size_t len);

#endif
