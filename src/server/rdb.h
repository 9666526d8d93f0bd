/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/rdb.h -- Redis RDB files in and out of the store: SAVE/BGSAVE
 * write one, --load-rdb imports one. Uses only the store's public API
 * (kv_shm_scan, kv_shm_get, kv_shm_ttl, kv_shm_set); logs nothing.
 *
 * Written files are RDB version 9 (Redis 5.0 and later load them): string
 * keys with their absolute expiry in ms, db 0, a CRC64 at the end, written
 * to PATH.tmp-PID, fsync'd and renamed over PATH. Read files may be any
 * version up to 11 (Redis 7.2): string keys are imported with their TTLs;
 * keys of every other type (lists, sets, hashes, sorted sets, streams,
 * module types with a self-delimiting encoding), functions and module aux
 * data are skipped and counted. */
#ifndef KV_RDB_H
#define KV_RDB_H

#include <stddef.h>
#include <stdint.h>

#include "kv_config.h"
#include "rdb_read.h" /* kv_rdb_crc64 */

struct kv_shm_store;

struct kv_rdb_counts {
    uint64_t strings;     /* string keys written (save) or imported (load) */
    uint64_t other_types; /* load: keys of other types, skipped */
    uint64_t expired;     /* load: string keys whose expiry had passed, skipped */
    uint64_t too_large;   /* load: keys longer than --max-key or items the store can never
                           * hold, skipped */
    uint64_t functions;   /* load: function libraries and module aux records, skipped */
    uint64_t other_dbs;   /* load: string keys of a db beyond --databases, skipped */
    uint64_t repeats;     /* save: keys the scan reported again (written once) */
    uint64_t bytes;       /* size of the file */
    unsigned version;     /* the file's RDB version */
};

/* Writes every key of store to path (atomically replaced). Keys are read one
 * at a time while writers run: see README, "Backup and migration", for what
 * that guarantees. Returns 0, or KV_EIO / KV_ENOMEM with a reason in err. */
int kv_rdb_save(struct kv_shm_store *store, const char *path, struct kv_rdb_counts *out,
                char *err, size_t errcap);
/* kv_rdb_save that asks still_ok(ctx) once every key is written, before the file
 * replaces path: 0 there throws the file away and returns KV_EAGAIN (BGSAVE: an EXEC ran
 * during the scan). still_ok NULL: kv_rdb_save. */
int kv_rdb_save_checked(struct kv_shm_store *store, const char *path, struct kv_rdb_counts *out,
                        char *err, size_t errcap, int (*still_ok)(void *ctx), void *ctx);

/* Checks the whole of path (structure and CRC64), then imports its string
 * keys into store (overwriting keys of the same name). A malformed file
 * changes nothing. Returns 0, or KV_EIO (cannot read), KV_ECORRUPT (not a
 * valid RDB file, or a type that cannot be skipped) or KV_ENOMEM (the store
 * filled up: the keys before stay) with a reason in err. */
int kv_rdb_load(struct kv_shm_store *store, const struct kv_config *cfg, const char *path,
                struct kv_rdb_counts *out, char *err, size_t errcap);

/* kv_rdb_load of the bytes buf[0..len) (borrowed) instead of a file. */
int kv_rdb_load_mem(struct kv_shm_store *store, const struct kv_config *cfg, const void *buf,
                    size_t len, struct kv_rdb_counts *out, char *err, size_t errcap);

#endif
