/* src/client/kv_bench.h -- the load generator behind `kvclient bench`.
 *
 * T threads, each with one epoll loop over its share of C non-blocking
 * connections. Each connection keeps a pipeline of P requests: it sends P,
 * waits for all P answers, sends the next P (the meaning of -P in
 * redis-benchmark). Latency is measured per request from the send of its
 * batch to the arrival of its answer, into a log-bucketed histogram (about
 * 3% resolution). Nothing is allocated per request: each connection has
 * one preallocated pipeline buffer that encode() writes bodies into. */
#ifndef KV_BENCH_H
#define KV_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* Writes the body of request number seq into buf (cap bytes) and sets
 * *opcode; returns the body length or a negative KV_E* code. */
typedef int (*kv_bench_encode_fn)(void *ctx, uint64_t seq, uint16_t *opcode, uint8_t *buf,
                                  size_t cap);

struct kv_bench_opts {
    const char *host;
    uint16_t port;
    const char *password; /* borrowed; non-NULL: each connection sends AUTH first */
    unsigned conns;       /* -c */
    uint64_t requests;    /* -n, total over all connections */
    unsigned pipeline;    /* -P */
    unsigned threads;     /* --threads */
    size_t max_body;      /* largest body encode may produce */
    kv_bench_encode_fn encode;
    void *ctx; /* borrowed: passed to encode (must be thread-safe) */
};

struct kv_bench_result {
    uint64_t requests; /* answered */
    uint64_t errors;   /* answered with a status other than OK / NOT_FOUND */
    uint64_t not_found;
    double seconds;
    double rps;
    double p50_us, p99_us, p999_us, max_us;
    int failed; /* a connection failed: the run is not valid */
};

int kv_bench_run(const struct kv_bench_opts *o, struct kv_bench_result *r);

#endif
