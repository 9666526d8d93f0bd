/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/client/kv_bench.h -- the load generator behind `kvclient bench`.
 *
 * One engine for every system in a comparison: it speaks libevkv's binary
 * frames, RESP2 (Redis, and libevkv's RESP port) and memcached's text/meta
 * protocol, so that the client's own cost is the same whichever server it
 * measures.
 *
 * T threads, each with one epoll loop over its share of C non-blocking
 * connections. Each connection keeps a pipeline of P requests: it sends P,
 * waits for all P answers, sends the next P (the meaning of -P in
 * redis-benchmark). Latency is measured per request from the send of its
 * batch to the arrival of its (last) answer, into a log-bucketed histogram
 * (about 3% resolution). The clock starts once every connection is open.
 *
 * Nothing is allocated per request: each connection has one preallocated
 * pipeline buffer that requests are encoded into, and one input buffer that
 * answers are parsed in place from.
 *
 * Requests per protocol (keys are KV_BENCH_KEYLEN bytes, "key:%012u"):
 *   op     binary            RESP2                  memcache
 *   PING   PING(body=value)  PING [value] -> +PONG  mn -> MN
 *                            or the bulk echo
 *   GET    GET               GET k                  mg k v -> VA n / EN
 *   SET    SET k value       SET k value -> +OK     set k 0 0 n -> STORED
 *   MGET   MGET k1..kN       MGET k1..kN            N pipelined `mg k v` sent
 *                                                   together, counted as ONE
 *                                                   request of N keys */
#ifndef KV_BENCH_H
#define KV_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KV_BENCH_KEYLEN   16 /* "key:" + 12 digits */
#define KV_BENCH_MAX_KEYS 64 /* keys of one MGET */

enum kv_bench_proto { KV_BENCH_BINARY, KV_BENCH_RESP, KV_BENCH_MEMCACHE };
enum kv_bench_op { KV_BENCH_PING, KV_BENCH_GET, KV_BENCH_SET, KV_BENCH_MGET };

/* One request, as chosen by the caller's pick function. */
struct kv_bench_req {
    enum kv_bench_op op;
    unsigned nkeys; /* 1, or the keys of an MGET (<= opts.mget_keys) */
    uint64_t keys[KV_BENCH_MAX_KEYS];
};

/* Chooses request number seq (unique over the run); must be thread-safe. */
typedef void (*kv_bench_pick_fn)(void *ctx, uint64_t seq, struct kv_bench_req *req);

struct kv_bench_opts {
    const char *host;     /* IPv4 address or name; a path (contains '/'):
                             the unix-domain socket there, port ignored */
    uint16_t port;
    enum kv_bench_proto proto;
    const char *password; /* borrowed; non-NULL: each connection sends AUTH first
                             (binary and RESP only) */
    unsigned conns;       /* -c */
    uint64_t requests;    /* -n, total over all connections (with seconds == 0) */
    double seconds;       /* > 0: run this long instead of -n requests */
    unsigned pipeline;    /* -P */
    unsigned threads;     /* --threads */
    const uint8_t *value; /* borrowed: SET's value and PING's payload */
    size_t value_len;     /* -d */
    unsigned mget_keys;   /* most keys an MGET may carry (1..KV_BENCH_MAX_KEYS) */
    kv_bench_pick_fn pick;
    void *ctx; /* borrowed: passed to pick */
    int shm;   /* binary over shared-memory rings (host a unix socket path): each
                  connection attaches; the thread goes round its connections, each
                  waiting call spinning then sleeping as kv_client_recv does */
};

struct kv_bench_result {
    uint64_t requests;  /* answered */
    uint64_t errors;    /* answered with an error (binary: a status other than
                           OK / NOT_FOUND; RESP: -ERR...; memcache: ERROR,
                           CLIENT_ERROR, SERVER_ERROR, NOT_STORED...) */
    uint64_t not_found; /* keys answered missing (GET, and each key of an MGET) */
    double seconds;
    double rps;
    double p50_us, p99_us, p999_us, max_us;
    int failed; /* a connection failed: the run is not valid */
};

/* Runs the load; returns 0 (r filled, r->failed telling whether the run is
 * valid) or KV_EINVAL / KV_ENOMEM. */
int kv_bench_run(const struct kv_bench_opts *o, struct kv_bench_result *r);

/* Stores keys 0..keyspace-1 with o->value over one connection: binary MSET
 * batches, RESP MSET batches, or pipelined memcache `set`s. Returns 0, or a
 * negative KV_E* code (KV_ESTATUS when the server refused a write). */
int kv_bench_populate(const struct kv_bench_opts *o, uint64_t keyspace);

/* ---- the codec, exposed for tests ---------------------------------------- */

/* Largest request kv_bench_encode writes for these options. */
size_t kv_bench_request_max(const struct kv_bench_opts *o);
/* Largest answer to one request for these options. */
size_t kv_bench_reply_max(const struct kv_bench_opts *o);

/* Encodes one request (binary frames carry request id `id`) into buf, which
 * holds at least kv_bench_request_max() bytes. Returns the length and sets
 * *units to the answers it will get (N for a memcache MGET, else 1). */
size_t kv_bench_encode(const struct kv_bench_opts *o, const struct kv_bench_req *q, uint64_t id,
                       uint8_t *buf, unsigned *units);

enum kv_bench_class { KV_BENCH_OK, KV_BENCH_MISS, KV_BENCH_ERR };

/* One answer unit, parsed in place. */
struct kv_bench_reply {
    enum kv_bench_class cls; /* MISS: GET of a missing key */
    unsigned misses;         /* keys answered missing (nil entries of an MGET too) */
};

/* Parses one answer unit from buf[0..len) (a frame, a RESP reply with the
 * elements of an array, or one memcache reply line with its data block).
 * Returns the bytes consumed (> 0), KV_EAGAIN when buf holds only part of
 * it, or KV_EPROTO / KV_ECRC when the stream is not an answer. */
ssize_t kv_bench_parse_reply(enum kv_bench_proto p, const uint8_t *buf, size_t len,
                             struct kv_bench_reply *r);

/* zlib's crc32() (the frame crc of PROTOCOL.md), table-driven, slicing by 8. */
uint32_t kv_bench_crc32(uint32_t crc, const uint8_t *p, size_t n);

#endif
