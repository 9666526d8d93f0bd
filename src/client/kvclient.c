/* src/client/kvclient.c -- the command-line client of libevkv.
 *
 *   kvclient [-h HOST] [-p PORT] [-t TIMEOUT_MS] ping [PAYLOAD]
 *   kvclient [-h HOST] [-p PORT] bench -t ping [-c CONNS] [-n REQUESTS]
 *            [-P PIPELINE] [-d BYTES] [--threads N] [--json]
 *
 * Exit codes: 0 OK, 1 NOT_FOUND, 2 any other error (message on stderr). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_bench.h"
#include "kv_client.h"
#include "kv_err.h"
#include "kv_mem.h"

struct global {
    const char *host;
    uint16_t port;
    int timeout_ms;
};

static void usage(FILE *f)
{
    fputs("usage: kvclient [-h HOST] [-p PORT] [-t TIMEOUT_MS] COMMAND [ARGS]\n"
          "commands:\n"
          "  ping [PAYLOAD]        round trip; prints the echo and the time\n"
          "  bench -t ping [-c CONNS] [-n REQUESTS] [-P PIPELINE] [-d BYTES]\n"
          "        [--threads N] [--json]\n"
          "                        load test; prints requests/s and latency percentiles\n"
          "defaults: -h 127.0.0.1 -p 7379 -t 5000\n"
          "exit codes: 0 OK, 1 NOT_FOUND, 2 any other error\n",
          f);
}

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int fail(const char *what, int rc, const struct kv_response *r)
{
    if (rc == KV_ESTATUS && r) {
        fprintf(stderr, "kvclient: %s: %s", what, kv_status_name(r->status));
        if (r->body_len)
            fprintf(stderr, ": %.*s", (int)r->body_len, (const char *)r->body);
        fputc('\n', stderr);
        return r->status == KV_ST_NOT_FOUND ? 1 : 2;
    }
    fprintf(stderr, "kvclient: %s: %s\n", what, kv_strerror(rc));
    return 2;
}

static int cmd_ping(const struct global *g, int argc, char **argv)
{
    struct kv_client *c;
    const char *payload = argc > 1 ? argv[1] : "";
    size_t len = strlen(payload);
    double t0;
    int rc = kv_client_connect(g->host, g->port, g->timeout_ms, &c);

    if (rc != 0)
        return fail("connect", rc, NULL);
    t0 = now_us();
    rc = kv_client_ping(c, payload, len);
    if (rc == 0)
        printf("PONG %s (%.1f us)\n", payload, now_us() - t0);
    kv_client_close(c);
    return rc == 0 ? 0 : fail("ping", rc, NULL);
}

/* ---- bench ----------------------------------------------------------------- */
struct bench_ctx {
    size_t data;     /* -d */
};

static int encode_ping(void *ctx, uint64_t seq, uint16_t *opcode, uint8_t *buf, size_t cap)
{
    const struct bench_ctx *b = ctx;

    *opcode = 0;
    if (b->data > cap)
        return KV_ETOOBIG;
    memset(buf, 'x', b->data);
    return (int)b->data;
}

static int cmd_bench(const struct global *g, int argc, char **argv)
{
    static const struct option opts[] = {
        {"threads", required_argument, NULL, 'T'},
        {"json", no_argument, NULL, 'J'},
        {NULL, 0, NULL, 0},
    };
    struct bench_ctx ctx = {.data = 3};
    struct kv_bench_opts o = {.host = g->host, .port = g->port, .conns = 50,
                              .requests = 100000, .pipeline = 1, .threads = 1};
    struct kv_bench_result r;
    const char *tests = "ping";
    int json = 0, c, rc;

    optind = 1;
    while ((c = getopt_long(argc, argv, "t:c:n:P:d:", opts, NULL)) != -1) {
        switch (c) {
        case 't': tests = optarg; break;
        case 'c': o.conns = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'n': o.requests = strtoull(optarg, NULL, 10); break;
        case 'P': o.pipeline = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'd': ctx.data = strtoull(optarg, NULL, 10); break;
        case 'T': o.threads = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'J': json = 1; break;
        default: usage(stderr); return 2;
        }
    }
    if (strcmp(tests, "ping") != 0) {
        fprintf(stderr, "kvclient: bench: unknown test '%s' (available: ping)\n", tests);
        return 2;
    }
    if (o.conns == 0 || o.pipeline == 0 || o.requests == 0 || o.threads == 0 ||
        o.threads > o.conns || ctx.data > (16u << 20)) {
        fprintf(stderr, "kvclient: bench: bad -c/-n/-P/-d/--threads value\n");
        return 2;
    }
    o.max_body = ctx.data + 64;
    o.encode = encode_ping;
    o.ctx = &ctx;
    rc = kv_bench_run(&o, &r);
    if (rc != 0)
        return fail("bench", rc, NULL);
    if (json)
        printf("{\"test\":\"%s\",\"conns\":%u,\"pipeline\":%u,\"data\":%zu,\"requests\":%llu,"
               "\"errors\":%llu,\"seconds\":%.3f,\"rps\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
               "\"p999_us\":%.1f,\"max_us\":%.1f,\"failed\":%s}\n",
               tests, o.conns, o.pipeline, ctx.data, (unsigned long long)r.requests,
               (unsigned long long)r.errors, r.seconds, r.rps, r.p50_us, r.p99_us, r.p999_us,
               r.max_us, r.failed ? "true" : "false");
    else
        printf("%s: %llu requests in %.2f s, %.0f requests/s, p50 %.1f us, p99 %.1f us, "
               "p99.9 %.1f us, max %.1f us, errors %llu%s\n",
               tests, (unsigned long long)r.requests, r.seconds, r.rps, r.p50_us, r.p99_us,
               r.p999_us, r.max_us, (unsigned long long)r.errors,
               r.failed ? " (FAILED: a connection broke)" : "");
    return r.failed || r.errors ? 2 : 0;
}

int main(int argc, char **argv)
{
    struct global g = {.host = "127.0.0.1", .port = 7379, .timeout_ms = 5000};
    int i = 1;

    /* global options come before the command; parsed by hand so that the
     * command's own options (bench -t, -c ...) are left alone */
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        if (strcmp(argv[i], "-h") == 0)
            g.host = argv[++i];
        else if (strcmp(argv[i], "-p") == 0)
            g.port = (uint16_t)strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "-t") == 0)
            g.timeout_ms = (int)strtol(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "kvclient: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[i], "ping") == 0)
        return cmd_ping(&g, argc - i, argv + i);
    if (strcmp(argv[i], "bench") == 0)
        return cmd_bench(&g, argc - i, argv + i);
    fprintf(stderr, "kvclient: unknown command '%s' (see --help)\n", argv[i]);
    return 2;
}
