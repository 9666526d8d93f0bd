/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/client/kv_client.h -- the libevkv C client library.
 *
 * A blocking client over one TCP or unix-domain connection speaking the
 * frames of docs/PROTOCOL.md: connect with a timeout, synchronous calls for
 * every opcode, and a pipelined interface (queue many requests, flush
 * once, receive responses by request_id). It never aborts the caller: every action returns 0 or a
 * negative KV_E* code (kv_err.h). Not thread-safe: one client per thread.
 *
 * Results of the typed calls:
 *   0             the server answered OK; output parameters are written
 *   KV_ENOTFOUND  the server answered NOT_FOUND
 *   KV_EEXISTS    the server answered EXISTS (NX on an existing key, or a
 *                 CAS version that differs)
 *   KV_ENOTNUM    the server answered NOT_A_NUMBER (INCR)
 *   KV_ESTATUS    the server answered any other non-OK status: see
 *                 kv_client_last_status() and kv_client_last_error()
 *   KV_ETIMEDOUT, KV_ECLOSED, KV_EIO   transport failures (the connection
 *                 should be closed: a late answer would be taken for the
 *                 next call's)
 *   KV_EPROTO     the answer did not decode (bad frame, wrong request_id,
 *                 wrong opcode, or a body that is not the expected message)
 *   KV_EINVAL     a bad argument (NULL, empty key list, ...), nothing sent
 *   KV_ETOOBIG    the request body would exceed the client's 64 MiB limit
 *   KV_ENOMEM     a local allocation failed, or an answer needed more
 *                 memory to decode than its bound (64 x body + 1 MiB)
 * Output parameters are written only on success (0).
 *
 * Memory: everything returned to the caller (values, key lists, stats) is
 * kv_mem memory counted under KV_MOD_CLIENT, released by the matching
 * kv_client_*_free() function. Protobuf answers are decoded with a bounded
 * allocator counted under KV_MOD_CLIENT as well. */
#ifndef KV_CLIENT_H
#define KV_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "kv_ops.h"

struct kv_client;

/* Opcodes (KV_OP_GET, ...) and kv_opcode_name(): kv_ops.h. */

/* A response as received. body points into the client's receive buffer and
 * stays valid until the next receive call on the same client. */
struct kv_response {
    uint16_t opcode;
    uint16_t status; /* KV_ST_* */
    uint64_t request_id;
    const uint8_t *body;
    uint32_t body_len;
};

/* Connects to host:port (IPv4 address or name) within timeout_ms, which
 * also becomes the timeout of every later send and receive (0 = none). A
 * host containing '/' is the path of a unix-domain socket (--unix) and
 * port is ignored: kv_client_connect_unix(). */
int kv_client_connect(const char *host, uint16_t port, int timeout_ms, struct kv_client **out);
/* Connects to the server's unix-domain socket at path (at most 107 bytes). */
int kv_client_connect_unix(const char *path, int timeout_ms, struct kv_client **out);
/* true when host names a unix socket path (contains '/'). */
bool kv_client_host_is_path(const char *host);
void kv_client_close(struct kv_client *c);
int kv_client_fd(const struct kv_client *c);

/* Status of the last answer a call received (KV_ST_*), or -1 when the last
 * call got no answer (transport error, bad argument) or none was made. */
int kv_client_last_status(const struct kv_client *c);
/* Message of the Error body of the last non-OK answer; "" when the last
 * answer was OK or carried no message, or when the last call got no
 * answer. Owned by the client; valid until the next call. Truncated to
 * 511 bytes. */
const char *kv_client_last_error(const struct kv_client *c);

/* ---- shared-memory rings (docs/PROTOCOL.md section 5) -------------------------- */
/* Attaches a connection made with kv_client_connect_unix() to shared-memory rings of
 * req_size and resp_size bytes (0 = the server's --ring-size; rounded up to a power of
 * two, at most --ring-max). Send it first (after AUTH), with nothing outstanding. From
 * then on every call of this client goes through the rings; the socket stays open as the
 * liveness channel: when the server goes away the calls fail with KV_ECLOSED (answers it
 * wrote before are still read), KV_ETIMEDOUT past the client's timeout. A waiting call
 * spins KV_CLIENT_SPIN_US microseconds (environment, default 50) before it sleeps.
 * KV_ESTATUS when the server refused (kv_client_last_error() says why). */
int kv_client_attach(struct kv_client *c, uint32_t req_size, uint32_t resp_size);
bool kv_client_attached(const struct kv_client *c);
/* The rings' mapping and the eventfd that wakes the server (tests of a hostile client);
 * NULL when not attached. */
void *kv_client_ring_map(const struct kv_client *c, size_t *size, int *wake_fd);

/* ---- pipelined interface ---------------------------------------------------- */
/* Appends a request frame to the send buffer; nothing is sent until
 * kv_client_flush(). Returns KV_ETOOBIG above the client's max body. */
int kv_client_queue(struct kv_client *c, uint16_t opcode, uint64_t request_id, const void *body,
                    size_t body_len);
/* Sends everything queued. */
int kv_client_flush(struct kv_client *c);
/* Receives the next response frame, whatever its request_id. */
int kv_client_recv(struct kv_client *c, struct kv_response *r);
/* Sends raw bytes as they are (tests of malformed input). */
int kv_client_send_raw(struct kv_client *c, const void *buf, size_t len);
/* Whether kv_client_recv() would return without waiting: 1 when a whole answer is there
 * (attached: in the response ring; else: in the receive buffer, the socket is not read),
 * 0 when not yet, KV_EPROTO for an impossible ring. No system call, nothing consumed: a
 * value borrowed from the last answer stays valid. For one thread serving many attached
 * connections without waiting on any one of them. */
int kv_client_ready(struct kv_client *c);

/* ---- synchronous calls ----------------------------------------------------- */
/* Sends one request and waits for its response (other responses arriving in
 * between are an error: use the pipelined interface for those). Returns 0
 * when the status is OK, KV_ESTATUS when not (r filled either way; the last
 * status and error are recorded). */
int kv_client_call(struct kv_client *c, uint16_t opcode, const void *body, size_t body_len,
                   struct kv_response *r);
/* PING with a payload; the echo must match (KV_EPROTO if not). */
int kv_client_ping(struct kv_client *c, const void *payload, size_t len);

/* A borrowed byte string: a key or a value passed to a call. */
struct kv_bytes {
    const void *data;
    size_t len;
};

/* A value returned by the library. */
struct kv_value {
    uint8_t *data; /* owned: KV_MOD_CLIENT, len bytes followed by a NUL
                    * (so text values can be used as C strings); NULL
                    * when !found */
    size_t len;
    uint64_t version; /* version of the value (0 for SCAN keys) */
    bool found;
};
/* Frees v->data and zeroes *v. Accepts a zeroed or already freed value. */
void kv_client_value_free(struct kv_value *v);

/* GET: the value and version of key. KV_ENOTFOUND when missing. */
int kv_client_get(struct kv_client *c, const void *key, size_t klen, struct kv_value *out);

/* Conditions and expiry of a SET; a NULL opts pointer means all zero. */
struct kv_set_opts {
    uint64_t ttl_ms; /* 0 = no expiry */
    bool nx;         /* only if absent: KV_EEXISTS when the key exists */
    bool xx;         /* only if present: KV_ENOTFOUND when missing */
    bool cas;        /* only if the version is cas_version: KV_EEXISTS
                      * when it differs, KV_ENOTFOUND when missing */
    uint64_t cas_version;
};
/* GET without a copy: *value points at the value where the answer lies (in the response
 * ring when attached, else in the receive buffer), borrowed until the next call on c. */
int kv_client_get_ref(struct kv_client *c, const void *key, size_t klen, const uint8_t **value,
                      size_t *vlen, uint64_t *version);

/* SET: stores the value; *version (may be NULL) gets the new version. */
int kv_client_set(struct kv_client *c, const void *key, size_t klen, const void *value, size_t vlen,
                  const struct kv_set_opts *opts, uint64_t *version);

/* DEL of n >= 1 keys; *deleted (may be NULL) gets how many existed. */
int kv_client_del(struct kv_client *c, const struct kv_bytes *keys, size_t n, uint64_t *deleted);
/* DEL of one key. */
int kv_client_del1(struct kv_client *c, const void *key, size_t klen, uint64_t *deleted);

/* EXISTS: *exists says whether the key exists (the call itself returns 0). */
int kv_client_exists(struct kv_client *c, const void *key, size_t klen, bool *exists);

/* INCR: adds delta to the decimal integer stored at key (created at 0);
 * *value and *version (each may be NULL) get the result. KV_ENOTNUM when
 * the value is not a decimal int64 or the sum overflows (value intact). */
int kv_client_incr(struct kv_client *c, const void *key, size_t klen, int64_t delta, int64_t *value,
                   uint64_t *version);

/* MGET of n >= 1 keys; out[0..n) (caller's array) gets one kv_value per
 * key, in key order, found or not. Free with kv_client_values_free(). */
int kv_client_mget(struct kv_client *c, const struct kv_bytes *keys, size_t n,
                   struct kv_value *out);
/* kv_client_value_free() on each of v[0..n). */
void kv_client_values_free(struct kv_value *v, size_t n);

/* MSET of n >= 1 pairs with one TTL (0 = none); versions[0..n) (may be
 * NULL) gets the new versions. All or nothing: a KV_ESTATUS with last status
 * OUT_OF_MEMORY means the batch did not fit and no pair was stored. */
int kv_client_mset(struct kv_client *c, const struct kv_bytes *keys, const struct kv_bytes *values,
                   size_t n, uint64_t ttl_ms, uint64_t *versions);

enum kv_expire_action {
    KV_EXPIRE_SET = 0,   /* expire in ttl_ms (> 0) */
    KV_EXPIRE_CLEAR = 1, /* remove the expiry */
    KV_EXPIRE_QUERY = 2, /* only report */
};
/* EXPIRE: *ttl_ms_out (may be NULL) gets the remaining ms afterwards, or
 * -1 for no expiry. KV_ENOTFOUND when the key is missing. */
int kv_client_expire(struct kv_client *c, const void *key, size_t klen,
                     enum kv_expire_action action, uint64_t ttl_ms, int64_t *ttl_ms_out);
/* EXPIRE QUERY: remaining ms, or -1 for no expiry. */
int kv_client_ttl(struct kv_client *c, const void *key, size_t klen, int64_t *ttl_ms);

/* One page of a SCAN. */
struct kv_scan {
    uint64_t cursor; /* pass to the next call; 0 = the scan is done */
    size_t nkeys;
    struct kv_value *keys; /* owned: KV_MOD_CLIENT array of nkeys (found, version 0) */
};
/* SCAN from cursor (0 to start) over keys beginning with prefix (plen 0 =
 * every key), at most count keys (0 = the server's default, 10). */
int kv_client_scan(struct kv_client *c, uint64_t cursor, const void *prefix, size_t plen,
                   uint32_t count, struct kv_scan *out);
void kv_client_scan_free(struct kv_scan *s);

/* STATS. */
struct kv_stat_entry {
    char *name; /* owned: NUL-terminated */
    int64_t value;
};
struct kv_stats {
    size_t n;
    struct kv_stat_entry *entries; /* owned: KV_MOD_CLIENT array of n */
    char *text;                    /* owned: the signal-41 dump as text ("" if none) */
};
int kv_client_stats(struct kv_client *c, struct kv_stats *out);
void kv_client_stats_free(struct kv_stats *s);
/* Value of the named entry in *s; false when there is no such entry. */
bool kv_client_stats_find(const struct kv_stats *s, const char *name, int64_t *value);

/* FLUSH: removes every key of the server; *removed (may be NULL) gets how
 * many. (Named flush_all: kv_client_flush() sends queued requests.) */
int kv_client_flush_all(struct kv_client *c, uint64_t *removed);

/* RENAME (opcode 14): RENAME, RENAMENX, MOVE, COPY in one call, all or nothing on the
 * server (and after a kill -9 of it). Without flags: key is renamed new_key, replacing
 * it. *done (may be NULL) is false when KV_RENAME_NX kept an existing destination.
 * KV_ENOTFOUND when key is missing. The binary protocol works in database 0 unless
 * KV_RENAME_DST_DB names the destination's (MOVE, COPY ... DB). */
#define KV_RENAME_NX 0x1u     /* keep an existing destination */
#define KV_RENAME_COPY 0x2u   /* keep the source (COPY) */
#define KV_RENAME_DST_DB 0x8u /* dst_db is the destination's database */
int kv_client_rename(struct kv_client *c, const void *key, size_t klen, const void *new_key,
                     size_t nklen, uint32_t flags, uint32_t dst_db, bool *done);

/* The string edits of opcode 32 (STR), as Redis's APPEND, GETRANGE and SETRANGE, each
 * atomic to other clients and one crash-safe write: *new_len (may be NULL) gets the
 * value's length afterwards; GETRANGE's start/end are inclusive, negative from the end,
 * and *out gets the bytes (found false and empty when the key is missing). */
int kv_client_append(struct kv_client *c, const void *key, size_t klen, const void *value,
                     size_t vlen, int64_t *new_len);
int kv_client_getrange(struct kv_client *c, const void *key, size_t klen, int64_t start,
                       int64_t end, struct kv_value *out);
int kv_client_setrange(struct kv_client *c, const void *key, size_t klen, int64_t offset,
                       const void *value, size_t vlen, int64_t *new_len);

/* AUTH with the server's shared secret: KV_ESTATUS with last status NOAUTH
 * when refused (the server closes the connection after repeated failures). */
int kv_client_auth(struct kv_client *c, const void *password, size_t len);

/* ---- transactions (opcodes EXEC, WATCH) ------------------------------------------------ */
/* One sub-request of an EXEC: an opcode and its request body (kv.proto), as if sent alone. */
struct kv_exec_op {
    uint16_t opcode;
    const void *body;
    size_t body_len;
};
/* Its answer: status (KV_ST_*) and body (owned, KV_MOD_CLIENT; kv_client_exec_free). */
struct kv_exec_result {
    uint16_t status;
    uint8_t *body;
    size_t body_len;
};
/* Runs ops[0..n) as one atomic batch: no other client's request runs in between, and
 * after a crash all of them or none are there (all of them once this returned 0). When a
 * key this connection WATCHed changed, nothing ran: *aborted (may be NULL) is true and
 * results are left empty. results has n entries. The watches are dropped either way. */
int kv_client_exec(struct kv_client *c, const struct kv_exec_op *ops, size_t n,
                   struct kv_exec_result *results, bool *aborted);
void kv_client_exec_free(struct kv_exec_result *results, size_t n);
/* Watches keys for the next EXEC of this connection (unwatch: forget every watched key
 * first; with n == 0 that is UNWATCH). *watched (may be NULL): keys watched now. */
int kv_client_watch(struct kv_client *c, const struct kv_bytes *keys, size_t n, bool unwatch,
                    uint64_t *watched);

#endif
