/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/client/kvclient.c -- the command-line client of libevkv: one command
 * per opcode, the correctness run (`test`) and the load generator
 * (`bench`). See usage() for the syntax.
 *
 * Output: values are written raw to stdout (get adds a newline only when
 * stdout is a terminal); other commands print one result per line.
 * Exit codes: 0 OK; 1 "not found / condition false": NOT_FOUND, EXISTS (a
 * SET --nx on a taken key, a --cas mismatch), a false `exists`, an MGET
 * with a missing key; 2 any error (usage, connection, any other status),
 * with host:port, the status name and the server's message on stderr. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kv.pb-c.h"
#include "kv_bench.h"
#include "kv_client.h"
#include "kv_err.h"
#include "kv_mem.h"
#include "rdb_read.h"
#include "kv_selftest.h"

struct global {
    const char *host;
    uint16_t port;
    int timeout_ms;
    const char *password; /* -a */
    bool shm;             /* --shm: attach to shared-memory rings (with -s) */
};

static char where[300]; /* "HOST:PORT" for messages; set once in main */
static int timeout_ms_g; /* -t, for messages */

static void usage(FILE *f)
{
    fputs("usage: kvclient [-h HOST] [-p PORT | -s SOCKET [--shm]] [-a PASSWORD] [-t TIMEOUT_MS]\n"
          "                COMMAND [ARGS]\n"
          "       --shm: over the server's shared-memory rings (ATTACH on the unix socket)\n"
          "       kvclient --help | --version\n"
          "commands:\n"
          "  ping [PAYLOAD]                 round trip; prints the echo and the time\n"
          "  get KEY                        prints the value (raw bytes)\n"
          "  set KEY VALUE [--ttl MS] [--nx] [--xx] [--cas VERSION]\n"
          "                                 stores; prints the new version\n"
          "  del KEY...                     prints how many keys existed\n"
          "  exists KEY                     prints 1 (exit 0) or 0 (exit 1)\n"
          "  incr KEY [DELTA]               adds DELTA (default 1); prints the result\n"
          "  mget KEY...                    one line per key: the value quoted as redis-cli\n"
          "                                 does (\"...\", \\n \\\" \\xHH escapes), or (nil)\n"
          "  mset KEY VALUE [KEY VALUE]... [--ttl MS]\n"
          "                                 stores all; prints the versions, one per line\n"
          "  expire KEY MS                  expire in MS ms (-1 removes the expiry);\n"
          "                                 prints the remaining ms (-1: none)\n"
          "  ttl KEY                        prints the remaining ms (-1: no expiry)\n"
          "  scan [PREFIX] [--count N]      prints every key (under PREFIX), one per line\n"
          "  stats [--text]                 prints 'name value' lines, or the text dump\n"
          "  flush                          removes every key; prints how many\n"
          "  rename KEY NEWKEY [--nx]       renames (replacing NEWKEY unless --nx); prints 1,\n"
          "                                 or 0 (exit 1) when --nx kept an existing NEWKEY\n"
          "  copy KEY NEWKEY [--replace] [--db N]\n"
          "                                 copies value and expiry (into database N); prints\n"
          "                                 1, or 0 (exit 1) when NEWKEY exists (no --replace)\n"
          "  append KEY VALUE               appends; prints the new length\n"
          "  getrange KEY START END         prints the bytes START..END (inclusive, negative\n"
          "                                 from the end)\n"
          "  setrange KEY OFFSET VALUE      overwrites from OFFSET; prints the new length\n"
          "  exec [--watch KEY] OP [, OP]...  one atomic batch (opcode EXEC); an OP is\n"
          "                                 set KEY VALUE | get KEY | del KEY | incr KEY N;\n"
          "                                 prints one line per OP: its status and answer\n"
          "                                 (\"aborted\" and exit 1 when --watch KEY changed\n"
          "                                 while the batch waited: see --watch-pause)\n"
          "  restore FILE                   stores the string keys (with TTLs) of a Redis RDB\n"
          "                                 file; prints what it stored and skipped\n"
          "  save | bgsave [--wait] | lastsave   Redis RDB snapshot to the server's --rdb-file\n"
          "                                 (sent as RESP on the same port); bgsave --wait\n"
          "                                 returns when it has ended (exit 2 if it failed)\n"
          "  test [--allow-flush]           correctness run against the server; ends with\n"
          "                                 'N passed, N failed' (exit 1 if any failed)\n"
          "  bench -t get,set,mixed,mget,ping [-c CONNS] [-n REQUESTS | --seconds S]\n"
          "        [-P PIPELINE] [-d BYTES] [-r KEYSPACE] [--ratio SET:GET] [--threads N]\n"
          "        [--protocol binary|resp|memcache] [-s SOCKET [--shm]] [--no-populate] [--json]\n"
          "                                 load test: requests/s, latency percentiles;\n"
          "                                 resp drives Redis or libevkv's RESP side,\n"
          "                                 memcache drives memcached (mg/set/mn; an mget\n"
          "                                 is 10 pipelined mg, counted as one request)\n"
          "A VALUE of '-' is read from stdin (binary-safe); put '--' before a KEY or\n"
          "VALUE that begins with '--'. -a sends AUTH before the command.\n"
          "-s PATH connects to the server's unix-domain socket (--unix PATH) instead.\n"
          "defaults: -h 127.0.0.1 -p 7379 -t 5000 (PORT 1-65535, TIMEOUT_MS 1-3600000)\n"
          "exit codes: 0 OK; 1 not found or condition false (NOT_FOUND, EXISTS: set --nx\n"
          "on a taken key or a --cas mismatch; exists = 0; mget with a missing key);\n"
          "2 any error (usage, connection, timeout, any other status)\n",
          f);
}

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* What a transport-level code means, for a message. */
static const char *transport_text(int rc, char *buf, size_t cap)
{
    switch (rc) {
    case KV_ETIMEDOUT:
        snprintf(buf, cap, "no answer within %d ms (-t)", timeout_ms_g);
        break;
    case KV_ECLOSED:
        snprintf(buf, cap, "the server closed the connection");
        break;
    case KV_ETOOBIG:
        snprintf(buf, cap, "request above the client's limit of 64 MiB");
        break;
    case KV_EIO:
        snprintf(buf, cap, "%s", errno ? strerror(errno) : kv_strerror(rc));
        break;
    default:
        snprintf(buf, cap, "%s", kv_strerror(rc));
    }
    return buf;
}

/* Reports a failed call on stderr; returns the exit code: 1 for "not
 * found / condition false" (NOT_FOUND, EXISTS), 2 for everything else. */
static int fail(const char *what, int rc, const struct kv_client *c)
{
    int st = c ? kv_client_last_status(c) : -1;
    char buf[256];

    if (st > 0) {
        const char *msg = kv_client_last_error(c);

        if (st == KV_ST_NOT_FOUND || st == KV_ST_EXISTS) {
            fprintf(stderr, "kvclient: %s: %s%s%s\n", what, kv_status_name((unsigned)st),
                    *msg ? ": " : "", msg);
            return 1;
        }
        fprintf(stderr, "kvclient: %s (%s): %s%s%s\n", what, where,
                kv_status_name((unsigned)st), *msg ? ": " : "", msg);
        return 2;
    }
    fprintf(stderr, "kvclient: %s (%s): %s\n", what, where, transport_text(rc, buf, sizeof(buf)));
    return 2;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return KV_EINVAL;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    if (*s == '-')
        return KV_EINVAL;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end)
        return KV_EINVAL;
    *out = v;
    return 0;
}

static int bad_arg(const char *cmd, const char *why)
{
    fprintf(stderr, "kvclient: %s: %s (see --help)\n", cmd, why);
    return 2;
}

/* ---- arguments and stdin ----------------------------------------------------------- */
/* The whole of stdin, once (a second '-' gets the same bytes). */
static uint8_t *stdin_buf;
static size_t stdin_len;
static bool stdin_read;

static int read_stdin(void)
{
    size_t cap = 65536;

    if (stdin_read)
        return 0;
    stdin_buf = kv_mem_alloc(KV_MOD_CLIENT, cap);
    if (!stdin_buf)
        return KV_ENOMEM;
    for (;;) {
        size_t n;

        if (stdin_len == cap) {
            uint8_t *b = kv_mem_realloc(KV_MOD_CLIENT, stdin_buf, cap * 2);

            if (!b)
                return KV_ENOMEM;
            stdin_buf = b;
            cap *= 2;
        }
        n = fread(stdin_buf + stdin_len, 1, cap - stdin_len, stdin);
        stdin_len += n;
        if (n == 0) {
            if (ferror(stdin))
                return KV_EIO;
            break;
        }
    }
    stdin_read = true;
    return 0;
}

/* A VALUE argument: the string itself, or stdin for "-". */
static int value_arg(const char *arg, struct kv_bytes *out)
{
    if (strcmp(arg, "-") == 0) {
        int rc = read_stdin();

        if (rc != 0)
            return rc;
        *out = (struct kv_bytes){stdin_buf, stdin_len};
        return 0;
    }
    *out = (struct kv_bytes){arg, strlen(arg)};
    return 0;
}

/* Splits a command's arguments into positionals and the options it knows
 * (opts: names with '=' suffix taking a value, e.g. "ttl=", "nx").
 * Returns the number of positionals written to pos, or -1 on a bad option. */
#define MAX_OPTS 4
struct parsed {
    int npos;
    char **pos; /* borrowed: points into argv (room for argc) */
    const char *val[MAX_OPTS];
    bool set[MAX_OPTS];
};

static int parse_args(const char *cmd, int argc, char **argv, const char *const *opts,
                      struct parsed *p)
{
    bool only_pos = false;

    p->npos = 0;
    p->pos = kv_mem_alloc(KV_MOD_CLIENT, (size_t)(argc + 1) * sizeof(char *));
    if (!p->pos)
        return -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int k;

        if (only_pos || strncmp(a, "--", 2) != 0) {
            p->pos[p->npos++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        for (k = 0; opts && opts[k]; k++) {
            size_t n = strcspn(opts[k], "=");

            if (strncmp(a + 2, opts[k], n) == 0 && a[2 + n] == '\0')
                break;
        }
        if (!opts || !opts[k]) {
            fprintf(stderr, "kvclient: %s: unknown option %s (see --help)\n", cmd, a);
            return -1;
        }
        p->set[k] = true;
        if (strchr(opts[k], '=')) {
            if (i + 1 >= argc) {
                fprintf(stderr, "kvclient: %s: %s needs a value\n", cmd, a);
                return -1;
            }
            p->val[k] = argv[++i];
        }
    }
    return p->npos;
}

/* The client library takes a host with a '/' for a unix socket path: -s
 * makes a bare file name one ("./kv.sock"); -h passes the host through. */
static const char *unix_path_arg(const char *opt, const char *v)
{
    static char buf[4][128];
    static int next;
    char *b;

    if (strcmp(opt, "-s") != 0 || strchr(v, '/') || strlen(v) + 3 > sizeof(buf[0]))
        return v;
    b = buf[next++ % 4];
    snprintf(b, sizeof(buf[0]), "./%s", v);
    return b;
}

/* A unix socket path that fits sockaddr_un (with the "./" -s may add); else the
 * message, and 0. Before: "-s ''" connected to "./", a long bare name was taken
 * for a TCP host name. */
static int unix_path_ok(const char *opt, const char *v)
{
    size_t n = strlen(v) + (strchr(v, '/') ? 0 : 2);

    if (*v && n < sizeof(((struct sockaddr_un *)0)->sun_path))
        return 1;
    fprintf(stderr, "kvclient: bad %s '%s': a unix socket path of 1-%zu bytes\n", opt, v,
            sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    return 0;
}

static int connect_cmd(const struct global *g, struct kv_client **c)
{
    int rc = kv_client_connect(g->host, g->port, g->timeout_ms, c);

    if (rc == KV_EINVAL) {
        fprintf(stderr, "kvclient: cannot connect to %s: '%s' is not an IPv4 address or a "
                "known host name\n", where, g->host);
        return 2;
    }
    if (rc == KV_ETIMEDOUT) {
        fprintf(stderr, "kvclient: cannot connect to %s: no connection within %d ms (-t)\n",
                where, g->timeout_ms);
        return 2;
    }
    if (rc != 0) {
        char buf[256];

        fprintf(stderr, "kvclient: cannot connect to %s: %s\n", where,
                transport_text(rc, buf, sizeof(buf)));
        return 2;
    }
    if (g->password) {
        rc = kv_client_auth(*c, g->password, strlen(g->password));
        if (rc != 0) {
            int ex = fail("auth", rc, *c);

            kv_client_close(*c);
            return ex == 1 ? 2 : ex;
        }
    }
    if (g->shm) {
        rc = kv_client_attach(*c, 0, 0);
        if (rc != 0) {
            int ex = fail("attach (--shm)", rc, *c);

            kv_client_close(*c);
            return ex == 1 ? 2 : ex;
        }
    }
    return 0;
}

/* ---- one function per command ------------------------------------------------------ */
typedef int (*cmd_fn)(struct kv_client *c, struct parsed *p, const char *cmd);

static int cmd_get(struct kv_client *c, struct parsed *p, const char *cmd)
{
    struct kv_value v = {0};
    int rc;

    if (p->npos != 1)
        return bad_arg(cmd, "usage: get KEY");
    rc = kv_client_get(c, p->pos[0], strlen(p->pos[0]), &v);
    if (rc != 0)
        return fail(cmd, rc, c);
    fwrite(v.data, 1, v.len, stdout);
    if (isatty(STDOUT_FILENO))
        fputc('\n', stdout);
    kv_client_value_free(&v);
    return 0;
}

static int cmd_set(struct kv_client *c, struct parsed *p, const char *cmd)
{
    struct kv_set_opts o = {0};
    struct kv_bytes v;
    uint64_t ver = 0;
    int rc;

    if (p->npos != 2)
        return bad_arg(cmd, "usage: set KEY VALUE [--ttl MS] [--nx] [--xx] [--cas VERSION]");
    if (p->set[0] && (parse_u64(p->val[0], &o.ttl_ms) != 0 || o.ttl_ms == 0))
        return bad_arg(cmd, "--ttl takes a number of milliseconds > 0");
    o.nx = p->set[1];
    o.xx = p->set[2];
    o.cas = p->set[3];
    if (o.cas && parse_u64(p->val[3], &o.cas_version) != 0)
        return bad_arg(cmd, "--cas takes a version number");
    rc = value_arg(p->pos[1], &v);
    if (rc == 0)
        rc = kv_client_set(c, p->pos[0], strlen(p->pos[0]), v.data, v.len, &o, &ver);
    if (rc != 0)
        return fail(cmd, rc, c);
    printf("%" PRIu64 "\n", ver);
    return 0;
}

static int cmd_del(struct kv_client *c, struct parsed *p, const char *cmd)
{
    struct kv_bytes *keys;
    uint64_t n = 0;
    int rc;

    if (p->npos < 1)
        return bad_arg(cmd, "usage: del KEY...");
    keys = kv_mem_alloc(KV_MOD_CLIENT, (size_t)p->npos * sizeof(*keys));
    if (!keys)
        return fail(cmd, KV_ENOMEM, NULL);
    for (int i = 0; i < p->npos; i++)
        keys[i] = (struct kv_bytes){p->pos[i], strlen(p->pos[i])};
    rc = kv_client_del(c, keys, (size_t)p->npos, &n);
    kv_mem_free(KV_MOD_CLIENT, keys);
    if (rc != 0)
        return fail(cmd, rc, c);
    printf("%" PRIu64 "\n", n);
    return 0;
}

static int cmd_exists(struct kv_client *c, struct parsed *p, const char *cmd)
{
    bool ex = false;
    int rc;

    if (p->npos != 1)
        return bad_arg(cmd, "usage: exists KEY");
    rc = kv_client_exists(c, p->pos[0], strlen(p->pos[0]), &ex);
    if (rc != 0)
        return fail(cmd, rc, c);
    printf("%d\n", ex ? 1 : 0);
    return ex ? 0 : 1;
}

static int cmd_incr(struct kv_client *c, struct parsed *p, const char *cmd)
{
    int64_t delta = 1, v = 0;
    int rc;

    if (p->npos < 1 || p->npos > 2 || (p->npos == 2 && parse_i64(p->pos[1], &delta) != 0))
        return bad_arg(cmd, "usage: incr KEY [DELTA]");
    rc = kv_client_incr(c, p->pos[0], strlen(p->pos[0]), delta, &v, NULL);
    if (rc != 0)
        return fail(cmd, rc, c);
    printf("%" PRId64 "\n", v);
    return 0;
}

/* bytes as redis-cli quotes them (sdscatrepr): "..." with \\ \" \n \r \t
 * \a \b escaped, printable ASCII as is, any other byte as \xHH. An empty
 * value is "", so nothing is ambiguous with the (nil) of a missing key. */
static void print_quoted(FILE *f, const uint8_t *p, size_t len)
{
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        switch (p[i]) {
        case '\\': fputs("\\\\", f); break;
        case '"': fputs("\\\"", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\a': fputs("\\a", f); break;
        case '\b': fputs("\\b", f); break;
        default:
            if (p[i] >= 0x20 && p[i] < 0x7f)
                fputc(p[i], f);
            else
                fprintf(f, "\\x%02x", p[i]);
        }
    }
    fputc('"', f);
}

static int cmd_mget(struct kv_client *c, struct parsed *p, const char *cmd)
{
    size_t n = (size_t)p->npos;
    struct kv_bytes *keys;
    struct kv_value *vals;
    int rc, missing = 0;

    if (n < 1)
        return bad_arg(cmd, "usage: mget KEY...");
    keys = kv_mem_alloc(KV_MOD_CLIENT, n * sizeof(*keys));
    vals = kv_mem_calloc(KV_MOD_CLIENT, n * sizeof(*vals));
    if (!keys || !vals) {
        kv_mem_free(KV_MOD_CLIENT, keys);
        kv_mem_free(KV_MOD_CLIENT, vals);
        return fail(cmd, KV_ENOMEM, NULL);
    }
    for (size_t i = 0; i < n; i++)
        keys[i] = (struct kv_bytes){p->pos[i], strlen(p->pos[i])};
    rc = kv_client_mget(c, keys, n, vals);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (vals[i].found)
            print_quoted(stdout, vals[i].data, vals[i].len);
        else {
            fputs("(nil)", stdout);
            missing = 1;
        }
        fputc('\n', stdout);
    }
    if (rc == 0)
        kv_client_values_free(vals, n);
    kv_mem_free(KV_MOD_CLIENT, keys);
    kv_mem_free(KV_MOD_CLIENT, vals);
    if (rc != 0)
        return fail(cmd, rc, c);
    return missing;
}

static int cmd_mset(struct kv_client *c, struct parsed *p, const char *cmd)
{
    size_t n = (size_t)p->npos / 2;
    struct kv_bytes *keys, *vals;
    uint64_t ttl = 0, *vers;
    int rc = 0;

    if (n < 1 || p->npos % 2)
        return bad_arg(cmd, "usage: mset KEY VALUE [KEY VALUE]... [--ttl MS]");
    if (p->set[0] && (parse_u64(p->val[0], &ttl) != 0 || ttl == 0))
        return bad_arg(cmd, "--ttl takes a number of milliseconds > 0");
    keys = kv_mem_alloc(KV_MOD_CLIENT, n * sizeof(*keys));
    vals = kv_mem_alloc(KV_MOD_CLIENT, n * sizeof(*vals));
    vers = kv_mem_alloc(KV_MOD_CLIENT, n * sizeof(*vers));
    if (!keys || !vals || !vers)
        rc = KV_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        keys[i] = (struct kv_bytes){p->pos[2 * i], strlen(p->pos[2 * i])};
        rc = value_arg(p->pos[2 * i + 1], &vals[i]);
    }
    if (rc == 0)
        rc = kv_client_mset(c, keys, vals, n, ttl, vers);
    for (size_t i = 0; rc == 0 && i < n; i++)
        printf("%" PRIu64 "\n", vers[i]);
    kv_mem_free(KV_MOD_CLIENT, keys);
    kv_mem_free(KV_MOD_CLIENT, vals);
    kv_mem_free(KV_MOD_CLIENT, vers);
    return rc == 0 ? 0 : fail(cmd, rc, c);
}

static int cmd_expire(struct kv_client *c, struct parsed *p, const char *cmd)
{
    int64_t ms, left = 0;
    int rc;

    if (p->npos != 2 || parse_i64(p->pos[1], &ms) != 0 || ms < -1)
        return bad_arg(cmd, "usage: expire KEY MS (MS > 0, or -1 to remove the expiry)");
    rc = kv_client_expire(c, p->pos[0], strlen(p->pos[0]),
                          ms == -1 ? KV_EXPIRE_CLEAR : KV_EXPIRE_SET, ms == -1 ? 0 : (uint64_t)ms,
                          &left);
    if (rc != 0)
        return fail(cmd, rc, c);
    printf("%" PRId64 "\n", left);
    return 0;
}

static int cmd_ttl(struct kv_client *c, struct parsed *p, const char *cmd)
{
    int64_t left = 0;
    int rc;

    if (p->npos != 1)
        return bad_arg(cmd, "usage: ttl KEY");
    rc = kv_client_ttl(c, p->pos[0], strlen(p->pos[0]), &left);
    if (rc != 0)
        return fail(cmd, rc, c);
    printf("%" PRId64 "\n", left);
    return 0;
}

static int cmd_scan(struct kv_client *c, struct parsed *p, const char *cmd)
{
    const char *prefix = p->npos ? p->pos[0] : "";
    uint64_t count = 100, cursor = 0;
    struct kv_scan s;
    int rc;

    if (p->npos > 1)
        return bad_arg(cmd, "usage: scan [PREFIX] [--count N]");
    if (p->set[0] && (parse_u64(p->val[0], &count) != 0 || count > UINT32_MAX))
        return bad_arg(cmd, "--count takes a number");
    do {
        rc = kv_client_scan(c, cursor, prefix, strlen(prefix), (uint32_t)count, &s);
        if (rc != 0)
            return fail(cmd, rc, c);
        for (size_t i = 0; i < s.nkeys; i++) {
            fwrite(s.keys[i].data, 1, s.keys[i].len, stdout);
            fputc('\n', stdout);
        }
        cursor = s.cursor;
        kv_client_scan_free(&s);
    } while (cursor != 0);
    return 0;
}

static int cmd_stats(struct kv_client *c, struct parsed *p, const char *cmd)
{
    struct kv_stats s;
    int rc;

    if (p->npos != 0)
        return bad_arg(cmd, "usage: stats [--text]");
    rc = kv_client_stats(c, &s);
    if (rc != 0)
        return fail(cmd, rc, c);
    if (p->set[0]) {
        fputs(s.text, stdout);
        if (*s.text && s.text[strlen(s.text) - 1] != '\n')
            fputc('\n', stdout);
    } else {
        for (size_t i = 0; i < s.n; i++)
            printf("%s %" PRId64 "\n", s.entries[i].name, s.entries[i].value);
    }
    kv_client_stats_free(&s);
    return 0;
}

static int cmd_flush(struct kv_client *c, struct parsed *p, const char *cmd)
{
    uint64_t removed = 0;
    int rc;

    if (p->npos != 0)
        return bad_arg(cmd, "usage: flush");
    rc = kv_client_flush_all(c, &removed);
    if (rc != 0)
        return fail(cmd, rc, c);
    printf("%" PRIu64 "\n", removed);
    return 0;
}

static int cmd_rename(struct kv_client *c, struct parsed *p, const char *cmd)
{
    bool done = false;
    int rc;

    if (p->npos != 2)
        return bad_arg(cmd, "usage: rename KEY NEWKEY [--nx]");
    rc = kv_client_rename(c, p->pos[0], strlen(p->pos[0]), p->pos[1], strlen(p->pos[1]),
                          p->set[0] ? KV_RENAME_NX : 0, 0, &done);
    if (rc != 0)
        return fail(cmd, rc, c);
    printf("%d\n", done ? 1 : 0);
    return done ? 0 : 1;
}

static int cmd_copy(struct kv_client *c, struct parsed *p, const char *cmd)
{
    uint32_t flags = KV_RENAME_COPY;
    uint64_t db = 0;
    bool done = false;
    int rc;

    if (p->npos != 2)
        return bad_arg(cmd, "usage: copy KEY NEWKEY [--replace] [--db N]");
    if (!p->set[0])
        flags |= KV_RENAME_NX;
    if (p->set[1]) {
        if (parse_u64(p->val[1], &db) != 0 || db > UINT32_MAX)
            return bad_arg(cmd, "--db takes a database number");
        flags |= KV_RENAME_DST_DB;
    }
    rc = kv_client_rename(c, p->pos[0], strlen(p->pos[0]), p->pos[1], strlen(p->pos[1]), flags,
                          (uint32_t)db, &done);
    if (rc != 0)
        return fail(cmd, rc, c);
    printf("%d\n", done ? 1 : 0);
    return done ? 0 : 1;
}

static int cmd_append(struct kv_client *c, struct parsed *p, const char *cmd)
{
    struct kv_bytes v;
    int64_t n = 0;
    int rc;

    if (p->npos != 2)
        return bad_arg(cmd, "usage: append KEY VALUE");
    rc = value_arg(p->pos[1], &v);
    if (rc == 0)
        rc = kv_client_append(c, p->pos[0], strlen(p->pos[0]), v.data, v.len, &n);
    if (rc != 0)
        return fail(cmd, rc, c);
    printf("%" PRId64 "\n", n);
    return 0;
}

static int cmd_getrange(struct kv_client *c, struct parsed *p, const char *cmd)
{
    struct kv_value v = {0};
    int64_t s, e;
    int rc;

    if (p->npos != 3 || parse_i64(p->pos[1], &s) != 0 || parse_i64(p->pos[2], &e) != 0)
        return bad_arg(cmd, "usage: getrange KEY START END");
    rc = kv_client_getrange(c, p->pos[0], strlen(p->pos[0]), s, e, &v);
    if (rc != 0)
        return fail(cmd, rc, c);
    fwrite(v.data, 1, v.len, stdout);
    if (isatty(STDOUT_FILENO))
        fputc('\n', stdout);
    kv_client_value_free(&v);
    return 0;
}

static int cmd_setrange(struct kv_client *c, struct parsed *p, const char *cmd)
{
    struct kv_bytes v;
    int64_t off, n = 0;
    int rc;

    if (p->npos != 3 || parse_i64(p->pos[1], &off) != 0 || off < 0)
        return bad_arg(cmd, "usage: setrange KEY OFFSET VALUE (OFFSET >= 0)");
    rc = value_arg(p->pos[2], &v);
    if (rc == 0)
        rc = kv_client_setrange(c, p->pos[0], strlen(p->pos[0]), off, v.data, v.len, &n);
    if (rc != 0)
        return fail(cmd, rc, c);
    printf("%" PRId64 "\n", n);
    return 0;
}

/* exec: the OPs between commas, each packed as the request of its opcode. */
#define EXEC_MAX_OPS 1024
static int cmd_exec(struct kv_client *c, struct parsed *p, const char *cmd)
{
    static const char *const use =
        "usage: exec [--watch KEY] [--watch-pause MS] OP [, OP]... where OP is "
        "set KEY VALUE | get KEY | del KEY | incr KEY N";
    struct kv_exec_op *ops = kv_mem_calloc(KV_MOD_CLIENT, EXEC_MAX_OPS * sizeof(*ops));
    struct kv_exec_result *res = kv_mem_calloc(KV_MOD_CLIENT, EXEC_MAX_OPS * sizeof(*res));
    uint8_t **bodies = kv_mem_calloc(KV_MOD_CLIENT, EXEC_MAX_OPS * sizeof(*bodies));
    size_t n = 0;
    int rc = 0, ex = 0, i = 0;
    bool aborted = false;

    if (!ops || !res || !bodies) {
        rc = KV_ENOMEM;
        goto out;
    }
    while (i < p->npos && rc == 0) {
        char **a = &p->pos[i];
        int k = 0;
        size_t len;
        uint8_t *b = NULL;

        while (i + k < p->npos && strcmp(a[k], ",") != 0)
            k++;
        i += k + 1;
        if (n == EXEC_MAX_OPS) {
            ex = bad_arg(cmd, "at most 1024 OPs");
            goto out;
        }
        if (k == 3 && strcmp(a[0], "set") == 0) {
            Kv__SetRequest m = KV__SET_REQUEST__INIT;
            struct kv_bytes v;

            if (value_arg(a[2], &v) != 0) {
                ex = bad_arg(cmd, "cannot read the value");
                goto out;
            }
            m.key = (ProtobufCBinaryData){strlen(a[1]), (uint8_t *)a[1]};
            m.value = (ProtobufCBinaryData){v.len, (uint8_t *)(uintptr_t)v.data};
            len = kv__set_request__get_packed_size(&m);
            b = kv_mem_alloc(KV_MOD_CLIENT, len + 1);
            if (b)
                kv__set_request__pack(&m, b);
            ops[n].opcode = KV_OP_SET;
        } else if (k == 2 && strcmp(a[0], "get") == 0) {
            Kv__GetRequest m = KV__GET_REQUEST__INIT;

            m.key = (ProtobufCBinaryData){strlen(a[1]), (uint8_t *)a[1]};
            len = kv__get_request__get_packed_size(&m);
            b = kv_mem_alloc(KV_MOD_CLIENT, len + 1);
            if (b)
                kv__get_request__pack(&m, b);
            ops[n].opcode = KV_OP_GET;
        } else if (k == 2 && strcmp(a[0], "del") == 0) {
            Kv__DelRequest m = KV__DEL_REQUEST__INIT;
            ProtobufCBinaryData key = {strlen(a[1]), (uint8_t *)a[1]};

            m.n_keys = 1;
            m.keys = &key;
            len = kv__del_request__get_packed_size(&m);
            b = kv_mem_alloc(KV_MOD_CLIENT, len + 1);
            if (b)
                kv__del_request__pack(&m, b);
            ops[n].opcode = KV_OP_DEL;
        } else if (k == 3 && strcmp(a[0], "incr") == 0) {
            Kv__IncrRequest m = KV__INCR_REQUEST__INIT;
            int64_t d;

            if (parse_i64(a[2], &d) != 0) {
                ex = bad_arg(cmd, "incr KEY N takes a number");
                goto out;
            }
            m.key = (ProtobufCBinaryData){strlen(a[1]), (uint8_t *)a[1]};
            m.delta = d;
            len = kv__incr_request__get_packed_size(&m);
            b = kv_mem_alloc(KV_MOD_CLIENT, len + 1);
            if (b)
                kv__incr_request__pack(&m, b);
            ops[n].opcode = KV_OP_INCR;
        } else {
            ex = bad_arg(cmd, use);
            goto out;
        }
        if (!b) {
            rc = KV_ENOMEM;
            break;
        }
        bodies[n] = b;
        ops[n].body = b;
        ops[n].body_len = len;
        n++;
    }
    if (rc == 0 && n == 0) {
        ex = bad_arg(cmd, use);
        goto out;
    }
    if (rc == 0 && p->set[0]) {
        struct kv_bytes w = {p->val[0], strlen(p->val[0])};
        uint64_t pause = 0;

        rc = kv_client_watch(c, &w, 1, false, NULL);
        if (rc == 0 && p->set[1] && parse_u64(p->val[1], &pause) == 0)
            usleep((useconds_t)(pause * 1000)); /* room for another client to change it */
    }
    if (rc == 0)
        rc = kv_client_exec(c, ops, n, res, &aborted);
    if (rc == 0 && aborted) {
        puts("aborted");
        ex = 1;
    }
    for (size_t j = 0; rc == 0 && !aborted && j < n; j++) {
        const struct kv_exec_result *r = &res[j];

        printf("%s", kv_status_name(r->status));
        if (r->status == KV_ST_OK && ops[j].opcode == KV_OP_GET) {
            Kv__GetResponse *g = kv__get_response__unpack(NULL, r->body_len, r->body);

            if (g) {
                putchar(' ');
                print_quoted(stdout, g->value.data, g->value.len);
                kv__get_response__free_unpacked(g, NULL);
            }
        } else if (r->status == KV_ST_OK && ops[j].opcode == KV_OP_INCR) {
            Kv__IncrResponse *g = kv__incr_response__unpack(NULL, r->body_len, r->body);

            if (g) {
                printf(" %" PRId64, g->value);
                kv__incr_response__free_unpacked(g, NULL);
            }
        } else if (r->status == KV_ST_OK && ops[j].opcode == KV_OP_DEL) {
            Kv__DelResponse *g = kv__del_response__unpack(NULL, r->body_len, r->body);

            if (g) {
                printf(" %" PRIu64, g->deleted);
                kv__del_response__free_unpacked(g, NULL);
            }
        } else if (r->status == KV_ST_OK && ops[j].opcode == KV_OP_SET) {
            Kv__SetResponse *g = kv__set_response__unpack(NULL, r->body_len, r->body);

            if (g) {
                printf(" %" PRIu64, g->version);
                kv__set_response__free_unpacked(g, NULL);
            }
        }
        putchar('\n');
    }
    if (rc == 0)
        kv_client_exec_free(res, n);
out:
    for (size_t j = 0; bodies && j < n; j++)
        kv_mem_free(KV_MOD_CLIENT, bodies[j]);
    kv_mem_free(KV_MOD_CLIENT, bodies);
    kv_mem_free(KV_MOD_CLIENT, ops);
    kv_mem_free(KV_MOD_CLIENT, res);
    if (rc != 0)
        return fail(cmd, rc, c);
    return ex;
}

static int cmd_ping(struct kv_client *c, struct parsed *p, const char *cmd)
{
    const char *payload = p->npos ? p->pos[0] : "";
    double t0 = now_us();
    int rc = kv_client_ping(c, payload, strlen(payload));

    if (rc != 0)
        return fail(cmd, rc, c);
    printf("PONG %s (%.1f us)\n", payload, now_us() - t0);
    return 0;
}

static const struct {
    const char *name;
    cmd_fn fn;
    const char *opts[MAX_OPTS + 1];
} commands[] = {
    {"ping", cmd_ping, {NULL}},
    {"get", cmd_get, {NULL}},
    {"set", cmd_set, {"ttl=", "nx", "xx", "cas=", NULL}},
    {"del", cmd_del, {NULL}},
    {"exists", cmd_exists, {NULL}},
    {"incr", cmd_incr, {NULL}},
    {"mget", cmd_mget, {NULL}},
    {"mset", cmd_mset, {"ttl=", NULL}},
    {"expire", cmd_expire, {NULL}},
    {"ttl", cmd_ttl, {NULL}},
    {"scan", cmd_scan, {"count=", NULL}},
    {"stats", cmd_stats, {"text", NULL}},
    {"flush", cmd_flush, {NULL}},
    {"rename", cmd_rename, {"nx", NULL}},
    {"copy", cmd_copy, {"replace", "db=", NULL}},
    {"append", cmd_append, {NULL}},
    {"getrange", cmd_getrange, {NULL}},
    {"setrange", cmd_setrange, {NULL}},
    {"exec", cmd_exec, {"watch=", "watch-pause=", NULL}},
};

static int run_command(const struct global *g, int k, int argc, char **argv)
{
    struct parsed p = {0};
    struct kv_client *c = NULL;
    int ex;

    /* incr and expire take negative numbers: "-5" is a positional there */
    if (parse_args(commands[k].name, argc, argv, commands[k].opts, &p) < 0) {
        kv_mem_free(KV_MOD_CLIENT, p.pos);
        return 2;
    }
    ex = connect_cmd(g, &c);
    if (ex == 0) {
        ex = commands[k].fn(c, &p, commands[k].name);
        kv_client_close(c);
    }
    if (fflush(stdout) != 0 && ex == 0)
        ex = 2;
    kv_mem_free(KV_MOD_CLIENT, p.pos);
    return ex;
}

/* ---- restore: a Redis RDB file into a running server ------------------------------ */
struct restore_ctx {
    struct kv_client *c; /* NULL: the checking pass */
    const struct global *g;
    struct kv_client *resp; /* for keys of other dbs (the binary protocol works in db 0): a
                             * second connection, RESP, opened at the first such key */
    uint64_t resp_db;       /* the database resp has SELECTed */
    int64_t now;
    uint64_t stored, expired, too_large, other_dbs;
    int failed; /* exit code of a failed SET */
};

static int resp_line(int fd, int timeout_ms, char *line, size_t cap);
static int resp_call(struct kv_client *c, int timeout_ms, const char *const *argv, int argc,
                     char *line, size_t cap);

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len) {
        ssize_t k = write(fd, p, len);

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return KV_EIO;
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

/* A key of database N > 0: SELECT N (once per run of keys of one db), then SET KEY VALUE
 * [PX MS] over RESP, binary-safe. A db the server does not have (SELECT refused) is
 * skipped and counted, as --load-rdb counts it. */
static int restore_other_db(struct restore_ctx *r, const struct kv_rdb_string *s)
{
    char line[512], num[32], hdr[128];
    int rc = 0, fd;

    if (!r->resp) {
        struct global anon = *r->g;

        anon.password = NULL; /* AUTH goes over RESP too */
        rc = connect_cmd(&anon, &r->resp);
        if (rc != 0) {
            r->resp = NULL;
            r->failed = rc;
            return KV_EIO;
        }
        r->resp_db = 0;
        if (r->g->password) {
            const char *auth[] = {"AUTH", r->g->password};

            rc = resp_call(r->resp, r->g->timeout_ms, auth, 2, line, sizeof(line));
            if (rc == 0 && line[0] == '-') {
                fprintf(stderr, "kvclient: restore: auth (%s): %s\n", where, line + 1);
                r->failed = 2;
                return KV_EIO;
            }
        }
    }
    if (rc == 0 && s->db != r->resp_db) {
        const char *sel[] = {"SELECT", num};

        snprintf(num, sizeof(num), "%u", (unsigned)s->db);
        rc = resp_call(r->resp, r->g->timeout_ms, sel, 2, line, sizeof(line));
        if (rc == 0 && line[0] == '-' && strncmp(line, "-NOAUTH", 7) == 0) {
            fprintf(stderr, "kvclient: restore: select (%s): %s\n", where, line + 1);
            r->failed = 2;
            return KV_EIO;
        }
        if (rc == 0 && line[0] == '-') { /* a database this server does not have */
            r->other_dbs++;
            return 0;
        }
        if (rc == 0)
            r->resp_db = s->db;
    }
    fd = kv_client_fd(r->resp);
    if (rc == 0) {
        int n = snprintf(hdr, sizeof(hdr), "*%d\r\n$3\r\nSET\r\n$%zu\r\n",
                         s->expire_ms >= 0 ? 5 : 3, s->klen);

        rc = write_all(fd, hdr, (size_t)n);
    }
    if (rc == 0)
        rc = write_all(fd, s->key, s->klen);
    if (rc == 0) {
        int n = snprintf(hdr, sizeof(hdr), "\r\n$%zu\r\n", s->vlen);

        rc = write_all(fd, hdr, (size_t)n);
    }
    if (rc == 0)
        rc = write_all(fd, s->val, s->vlen);
    if (rc == 0) {
        char ms[24];
        int n;

        if (s->expire_ms >= 0) {
            int ml = snprintf(ms, sizeof(ms), "%lld", (long long)(s->expire_ms - r->now));

            n = snprintf(hdr, sizeof(hdr), "\r\n$2\r\nPX\r\n$%d\r\n%s\r\n", ml, ms);
        } else {
            n = snprintf(hdr, sizeof(hdr), "\r\n");
        }
        rc = write_all(fd, hdr, (size_t)n);
    }
    if (rc == 0)
        rc = resp_line(fd, r->g->timeout_ms, line, sizeof(line));
    if (rc != 0) {
        fprintf(stderr, "kvclient: restore: set (%s, db %u): %s\n", where, (unsigned)s->db,
                rc == KV_ETIMEDOUT ? "no answer within -t" : kv_strerror(rc));
        r->failed = 2;
        return rc;
    }
    if (line[0] == '+') {
        r->stored++;
        return 0;
    }
    fprintf(stderr, "kvclient: restore: set (%s, db %u): %s\n", where, (unsigned)s->db,
            line[0] == '-' ? line + 1 : line);
    r->failed = 2;
    return KV_EIO;
}

static int restore_string(void *ctx, const struct kv_rdb_string *s)
{
    struct restore_ctx *r = ctx;
    struct kv_set_opts o = {0};
    int rc, st;

    if (s->expire_ms >= 0 && s->expire_ms <= r->now) {
        r->expired++;
        return 0;
    }
    if (s->klen == 0 || s->klen > 4096) { /* the store's key limit */
        r->too_large++;
        return 0;
    }
    if (!r->c)
        return 0;
    if (s->db != 0)
        return restore_other_db(r, s);
    o.ttl_ms = s->expire_ms >= 0 ? (uint64_t)(s->expire_ms - r->now) : 0;
    rc = kv_client_set(r->c, s->key, s->klen, s->val, s->vlen, &o, NULL);
    st = kv_client_last_status(r->c);
    if (rc == KV_ESTATUS && (st == KV_ST_TOO_LARGE || st == KV_ST_BAD_REQUEST)) {
        r->too_large++;
        return 0;
    }
    if (rc != 0) {
        r->failed = fail("restore: set", rc, r->c);
        return rc;
    }
    r->stored++;
    return 0;
}

static int cmd_restore(const struct global *g, int argc, char **argv)
{
    struct kv_rdb_read_counts cnt;
    struct restore_ctx r = {0};
    struct kv_client *c = NULL;
    struct stat st;
    char err[512] = "";
    void *map;
    int fd, rc, ex;

    if (argc != 2)
        return bad_arg("restore", "usage: restore FILE");
    fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) {
        fprintf(stderr, "kvclient: restore: cannot read %s: %s\n", argv[1],
                fd < 0 ? strerror(errno) : "empty file");
        if (fd >= 0)
            close(fd);
        return 2;
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        fprintf(stderr, "kvclient: restore: cannot map %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    /* the whole file is checked before anything is sent */
    r.now = (int64_t)time(NULL) * 1000;
    rc = kv_rdb_read(map, (size_t)st.st_size, KV_MOD_CLIENT, restore_string, &r, &cnt, err,
                     sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "kvclient: restore: %s: %s\n", argv[1], err);
        munmap(map, (size_t)st.st_size);
        return 2;
    }
    ex = connect_cmd(g, &c);
    if (ex == 0) {
        struct timespec ts;

        memset(&r, 0, sizeof(r));
        r.c = c;
        r.g = g;
        clock_gettime(CLOCK_REALTIME, &ts);
        r.now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        rc = kv_rdb_read(map, (size_t)st.st_size, KV_MOD_CLIENT, restore_string, &r, &cnt, err,
                         sizeof(err));
        kv_client_close(c);
        if (r.resp)
            kv_client_close(r.resp);
        if (rc != 0)
            ex = r.failed ? r.failed : 2;
        if (rc != 0 && !r.failed)
            fprintf(stderr, "kvclient: restore: %s: %s\n", argv[1], err);
        printf("%" PRIu64 " string keys restored from %s (RDB version %u); skipped: %" PRIu64
               " keys of other types, %" PRIu64 " expired, %" PRIu64 " too large, %" PRIu64
               " in other dbs, %" PRIu64 " functions/module aux%s\n",
               r.stored, argv[1], cnt.version, cnt.other_types, r.expired, r.too_large,
               r.other_dbs, cnt.functions, rc != 0 ? " (stopped by an error)" : "");
        if (ex == 1)
            ex = 2; /* a refused SET is an error here */
    }
    munmap(map, (size_t)st.st_size);
    return ex;
}

/* ---- save, bgsave, lastsave: RESP on the same port ------------------------------- */
/* PROTOCOL.md has no opcode for them; the port also speaks RESP, chosen by
 * a connection's first byte, so these go as Redis commands. */
static int resp_line(int fd, int timeout_ms, char *line, size_t cap)
{
    size_t n = 0;

    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        char ch;
        ssize_t k;

        if (poll(&pfd, 1, timeout_ms) <= 0)
            return KV_ETIMEDOUT;
        k = read(fd, &ch, 1);
        if (k == 0)
            return KV_ECLOSED;
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return KV_EIO;
        }
        if (ch == '\n') {
            if (n && line[n - 1] == '\r')
                n--;
            line[n] = '\0';
            return 0;
        }
        if (n + 1 < cap)
            line[n++] = ch;
    }
}

/* Sends one command of up to 3 words and reads the reply's first line (a
 * bulk reply's payload is skipped to its end when it fits in cap). */
static int resp_call(struct kv_client *c, int timeout_ms, const char *const *argv, int argc,
                     char *line, size_t cap)
{
    char buf[512];
    size_t len = (size_t)snprintf(buf, sizeof(buf), "*%d\r\n", argc);
    int fd = kv_client_fd(c), rc;

    for (int i = 0; i < argc; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "$%zu\r\n%s\r\n", strlen(argv[i]),
                                argv[i]);
    for (size_t off = 0; off < len;) {
        ssize_t k = write(fd, buf + off, len - off);

        if (k <= 0)
            return KV_EIO;
        off += (size_t)k;
    }
    rc = resp_line(fd, timeout_ms, line, cap);
    if (rc == 0 && line[0] == '$' && atol(line + 1) >= 0) {
        long n = atol(line + 1);
        size_t got = 0, w = 0; /* wire bytes read; text kept (lines joined by \n) */
        char *body = kv_mem_alloc(KV_MOD_CLIENT, (size_t)n + 3);

        if (!body)
            return KV_ENOMEM;
        while (rc == 0 && got < (size_t)n + 2) { /* payload and its \r\n */
            char l2[4096];

            rc = resp_line(fd, timeout_ms, l2, sizeof(l2));
            if (rc == 0) {
                size_t k = strlen(l2);

                if (w + k + 1 <= (size_t)n + 2) {
                    memcpy(body + w, l2, k);
                    body[w + k] = '\n';
                    w += k + 1;
                }
                got += k + 2;
            }
        }
        body[w < (size_t)n + 2 ? w : (size_t)n + 2] = '\0';
        snprintf(line, cap, "%s", body);
        kv_mem_free(KV_MOD_CLIENT, body);
    }
    return rc;
}

static int cmd_save(const struct global *g, int argc, char **argv)
{
    const char *cmd = argv[0];
    bool wait = argc == 2 && strcmp(argv[1], "--wait") == 0 && strcmp(cmd, "bgsave") == 0;
    const char *word = strcmp(cmd, "save") == 0 ? "SAVE" : strcmp(cmd, "bgsave") == 0
                                                               ? "BGSAVE" : "LASTSAVE";
    struct global anon = *g;
    struct kv_client *c;
    char line[4096], buf[256];
    int ex, rc;

    if (argc > 2 || (argc == 2 && !wait))
        return bad_arg(cmd, "usage: save | bgsave [--wait] | lastsave");
    anon.password = NULL; /* AUTH goes over RESP too */
    ex = connect_cmd(&anon, &c);
    if (ex != 0)
        return ex;
    if (g->password) {
        const char *auth[] = {"AUTH", g->password};

        rc = resp_call(c, g->timeout_ms, auth, 2, line, sizeof(line));
        if (rc == 0 && line[0] == '-') {
            fprintf(stderr, "kvclient: auth (%s): %s\n", where, line + 1);
            kv_client_close(c);
            return 2;
        }
    } else {
        rc = 0;
    }
    if (rc == 0)
        rc = resp_call(c, g->timeout_ms, &word, 1, line, sizeof(line));
    while (rc == 0 && wait && line[0] == '+') {
        const char *info[] = {"INFO", "persistence"};
        char *p;

        usleep(50000);
        rc = resp_call(c, g->timeout_ms, info, 2, line, sizeof(line));
        if (rc != 0 || !(p = strstr(line, "rdb_bgsave_in_progress:")))
            break;
        if (p[strlen("rdb_bgsave_in_progress:")] == '0') {
            int ok = strstr(line, "rdb_last_bgsave_status:ok") != NULL;

            kv_client_close(c);
            printf("%s\n", ok ? "Background saving done" : "Background saving failed");
            if (!ok)
                fprintf(stderr, "kvclient: bgsave (%s): failed (see the server's log)\n",
                        where);
            return ok ? 0 : 2;
        }
        snprintf(line, sizeof(line), "+");
    }
    kv_client_close(c);
    if (rc != 0) {
        fprintf(stderr, "kvclient: %s (%s): %s\n", cmd, where,
                transport_text(rc, buf, sizeof(buf)));
        return 2;
    }
    if (line[0] == '-') {
        fprintf(stderr, "kvclient: %s (%s): %s\n", cmd, where, line + 1);
        return 2;
    }
    printf("%s\n", line + 1);
    return 0;
}

/* ---- test -------------------------------------------------------------------------- */
static int cmd_test(const struct global *g, int argc, char **argv)
{
    struct kv_selftest_opts o = {.host = g->host,
                                 .port = g->port,
                                 .timeout_ms = g->timeout_ms,
                                 .password = g->password,
                                 .shm = g->shm,
                                 .out = stdout};
    unsigned passed = 0, failed = 0;
    int rc;

    /* test's own options may repeat the global ones: kvclient test -p PORT */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--allow-flush") == 0)
            o.allow_flush = true;
        else if (i + 1 < argc && (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "-s") == 0))
            o.host = unix_path_arg(argv[i], argv[i + 1]), i++;
        else if (i + 1 < argc && strcmp(argv[i], "-p") == 0) {
            uint64_t p;

            if (parse_u64(argv[++i], &p) != 0 || p == 0 || p > 65535)
                return bad_arg("test", "-p takes a port number 1-65535");
            o.port = (uint16_t)p;
        }
        else if (i + 1 < argc && strcmp(argv[i], "-a") == 0)
            o.password = argv[++i];
        else
            return bad_arg("test", "usage: test [-h HOST] [-p PORT | -s SOCKET] [-a PASSWORD] "
                                   "[--allow-flush]");
    }
    rc = kv_selftest_run(&o, &passed, &failed);
    if (rc != 0)
        return fail("test: connect", rc, NULL);
    return failed ? 1 : 0;
}

/* ---- bench ------------------------------------------------------------------------- */
enum bench_kind { B_PING, B_GET, B_SET, B_MIXED, B_MGET };
#define MGET_KEYS 10

struct bench_ctx { /* read-only during a run: shared by the threads */
    enum bench_kind kind;
    uint64_t keyspace;     /* -r */
    unsigned set_w, get_w; /* --ratio SET:GET */
};

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Uniform random keys over the keyspace, a pure function of seq. */
static void bench_pick(void *ctx, uint64_t seq, struct kv_bench_req *q)
{
    const struct bench_ctx *b = ctx;
    uint64_t r = mix64(seq);

    q->nkeys = 1;
    q->keys[0] = r % b->keyspace;
    switch (b->kind) {
    case B_PING: q->op = KV_BENCH_PING; break;
    case B_GET: q->op = KV_BENCH_GET; break;
    case B_SET: q->op = KV_BENCH_SET; break;
    case B_MIXED:
        q->op = (r >> 40) % (b->set_w + b->get_w) < b->set_w ? KV_BENCH_SET : KV_BENCH_GET;
        break;
    case B_MGET:
        q->op = KV_BENCH_MGET;
        q->nkeys = MGET_KEYS;
        for (unsigned i = 0; i < MGET_KEYS; i++)
            q->keys[i] = mix64(r + i) % b->keyspace;
        break;
    }
}

static int cmd_bench(const struct global *g, int argc, char **argv)
{
    static const char *const names[] = {"ping", "get", "set", "mixed", "mget"};
    static const char *const protos[] = {"binary", "resp", "memcache"};
    struct bench_ctx ctx = {.keyspace = 100000, .set_w = 1, .get_w = 10};
    struct kv_bench_opts o = {.host = g->host,
                              .port = g->port,
                              .proto = KV_BENCH_BINARY,
                              .password = g->password,
                              .conns = 50,
                              .requests = 100000,
                              .pipeline = 1,
                              .threads = 1,
                              .value_len = 3,
                              .mget_keys = MGET_KEYS,
                              .shm = g->shm};
    const char *tests = "ping";
    char list[256], *save = NULL, *tok;
    bool json = false, populated = false, no_populate = false;
    uint8_t *value;
    int ex = 0, rc;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n = 0;

        if (strcmp(a, "--json") == 0) {
            json = true;
            continue;
        }
        if (strcmp(a, "--shm") == 0) {
            o.shm = 1;
            continue;
        }
        if (strcmp(a, "--no-populate") == 0) {
            no_populate = true;
            continue;
        }
        if (!v)
            return bad_arg("bench", "an option needs a value");
        i++;
        if (strcmp(a, "-t") == 0) {
            tests = v;
            continue;
        }
        if (strcmp(a, "-s") == 0) {
            if (!unix_path_ok(a, v))
                return 2;
            o.host = unix_path_arg(a, v);
            continue;
        }
        if (strcmp(a, "--protocol") == 0) {
            size_t k = 0;

            while (k < 3 && strcmp(v, protos[k]) != 0)
                k++;
            if (k == 3)
                return bad_arg("bench", "--protocol is binary, resp or memcache");
            o.proto = (enum kv_bench_proto)k;
            continue;
        }
        if (strcmp(a, "--ratio") == 0) {
            unsigned s, gw;

            if (sscanf(v, "%u:%u", &s, &gw) != 2 || s + gw == 0 || s + gw > 1000000)
                return bad_arg("bench", "--ratio takes SET:GET, e.g. 1:10");
            ctx.set_w = s;
            ctx.get_w = gw;
            continue;
        }
        if (strcmp(a, "--seconds") == 0) {
            char *end;

            o.seconds = strtod(v, &end);
            if (*end || !(o.seconds > 0 && o.seconds <= 3600))
                return bad_arg("bench", "--seconds takes a duration in (0, 3600]");
            continue;
        }
        if (parse_u64(v, &n) != 0)
            return bad_arg("bench", "option values are numbers");
        if (strcmp(a, "-c") == 0)
            o.conns = (unsigned)n;
        else if (strcmp(a, "-n") == 0)
            o.requests = n;
        else if (strcmp(a, "-P") == 0)
            o.pipeline = (unsigned)n;
        else if (strcmp(a, "-d") == 0)
            o.value_len = n;
        else if (strcmp(a, "-r") == 0)
            ctx.keyspace = n;
        else if (strcmp(a, "--threads") == 0)
            o.threads = (unsigned)n;
        else
            return bad_arg("bench", "unknown option");
    }
    if (o.conns == 0 || o.conns > 10000 || o.pipeline == 0 || o.pipeline > 10000 ||
        o.requests == 0 || o.threads == 0 || o.threads > o.conns || o.threads > 1000 ||
        o.value_len > (1u << 20) || ctx.keyspace == 0 || ctx.keyspace > 999999999999ull)
        return bad_arg("bench", "bad -c/-n/-P/-d/-r/--threads value");
    if (o.proto == KV_BENCH_MEMCACHE && g->password)
        return bad_arg("bench", "the memcache protocol has no AUTH (-a)");
    if (strlen(tests) >= sizeof(list))
        return bad_arg("bench", "-t list too long");
    /* validate the whole list before running anything */
    snprintf(list, sizeof(list), "%s", tests);
    for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        size_t k = 0;

        while (k < 5 && strcmp(tok, names[k]) != 0)
            k++;
        if (k == 5) {
            fprintf(stderr, "kvclient: bench: unknown test '%s' (get,set,mixed,mget,ping)\n", tok);
            return 2;
        }
    }
    value = kv_mem_alloc(KV_MOD_CLIENT, o.value_len + 1);
    if (!value)
        return fail("bench", KV_ENOMEM, NULL);
    for (size_t i = 0; i < o.value_len; i++)
        value[i] = (uint8_t)('a' + i % 26);
    o.value = value;
    o.pick = bench_pick;
    o.ctx = &ctx;

    snprintf(list, sizeof(list), "%s", tests);
    for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        struct kv_bench_result r;
        size_t k = 0;

        while (strcmp(tok, names[k]) != 0)
            k++;
        ctx.kind = (enum bench_kind)k;
        if (!populated && !no_populate &&
            (ctx.kind == B_GET || ctx.kind == B_MGET || ctx.kind == B_MIXED)) {
            double t0 = now_us();

            rc = kv_bench_populate(&o, ctx.keyspace);
            if (rc != 0) {
                ex = fail("bench: populate", rc, NULL);
                break;
            }
            populated = true;
            if (!json)
                printf("populated %" PRIu64 " keys of %zu bytes in %.2f s (%s)\n", ctx.keyspace,
                       o.value_len, (now_us() - t0) / 1e6, protos[o.proto]);
        }
        rc = kv_bench_run(&o, &r);
        if (rc != 0) {
            ex = fail("bench", rc, NULL);
            break;
        }
        if (json) {
            printf("{\"test\":\"%s\",\"protocol\":\"%s\",\"transport\":\"%s\",\"conns\":%u,"
                   "\"pipeline\":%u,\"data\":%zu,\"keyspace\":%" PRIu64 ",\"threads\":%u,"
                   "\"requests\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"not_found\":%" PRIu64
                   ",\"seconds\":%.3f,\"rps\":%.0f",
                   tok, protos[o.proto],
                   o.shm ? "shm" : kv_client_host_is_path(o.host) ? "unix" : "tcp", o.conns,
                   o.pipeline, o.value_len, ctx.keyspace, o.threads, r.requests, r.errors,
                   r.not_found, r.seconds, r.rps);
            if (ctx.kind == B_MGET)
                printf(",\"keys_per_s\":%.0f", r.rps * MGET_KEYS);
            printf(",\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,"
                   "\"failed\":%s}\n",
                   r.p50_us, r.p99_us, r.p999_us, r.max_us, r.failed ? "true" : "false");
        } else {
            printf("%-5s: %" PRIu64 " requests in %.2f s, %.0f requests/s", tok, r.requests,
                   r.seconds, r.rps);
            if (ctx.kind == B_MGET)
                printf(" (%.0f keys/s)", r.rps * MGET_KEYS);
            printf(", p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us, errors %" PRIu64,
                   r.p50_us, r.p99_us, r.p999_us, r.max_us, r.errors);
            if (r.not_found)
                printf(", not found %" PRIu64, r.not_found);
            printf("%s\n", r.failed ? " (FAILED: a connection broke)" : "");
        }
        fflush(stdout);
        if (r.failed || r.errors)
            ex = 2;
    }
    kv_mem_free(KV_MOD_CLIENT, value);
    return ex;
}

int main(int argc, char **argv)
{
    struct global g = {.host = "127.0.0.1", .port = 7379, .timeout_ms = 5000};
    int i = 1, ex;

    /* global options come before the command; parsed by hand so that the
     * command's own options (bench -t, -c ...) are left alone */
    for (; i < argc && argv[i][0] == '-'; i++) {
        uint64_t v;

        if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--shm") == 0) {
            g.shm = true;
            continue;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("kvclient %s (protocol 1)\n", KV_VERSION);
            return 0;
        }
        if (strcmp(argv[i], "-h") && strcmp(argv[i], "-s") && strcmp(argv[i], "-p") &&
            strcmp(argv[i], "-a") && strcmp(argv[i], "-t")) {
            fprintf(stderr, "kvclient: unknown option %s (see --help)\n", argv[i]);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kvclient: %s needs a value (see --help)\n", argv[i]);
            return 2;
        }
        if (strcmp(argv[i], "-s") == 0 || (strcmp(argv[i], "-h") == 0 && strchr(argv[i + 1], '/'))) {
            if (!unix_path_ok(argv[i], argv[i + 1]))
                return 2;
            g.host = unix_path_arg(argv[i], argv[i + 1]); /* a unix socket path */
            i++;
        } else if (strcmp(argv[i], "-h") == 0) {
            g.host = argv[++i];
            if (!*g.host || strlen(g.host) > 253 || strpbrk(g.host, " \t/:")) {
                fprintf(stderr, "kvclient: bad -h '%s': an IPv4 address or a host name\n",
                        g.host);
                return 2;
            }
        } else if (strcmp(argv[i], "-p") == 0) {
            if (parse_u64(argv[++i], &v) != 0 || v == 0 || v > 65535) {
                fprintf(stderr, "kvclient: bad -p '%s': a port number 1-65535\n", argv[i]);
                return 2;
            }
            g.port = (uint16_t)v;
        } else if (strcmp(argv[i], "-a") == 0) {
            g.password = argv[++i];
        } else {
            if (parse_u64(argv[++i], &v) != 0 || v == 0 || v > 3600000) {
                fprintf(stderr, "kvclient: bad -t '%s': a timeout in ms, 1-3600000\n",
                        argv[i]);
                return 2;
            }
            g.timeout_ms = (int)v;
        }
    }
    if (g.shm && !strchr(g.host, '/')) {
        fprintf(stderr, "kvclient: --shm needs -s SOCKET (rings are set up over the unix "
                "socket)\n");
        return 2;
    }
    if (strchr(g.host, '/'))
        snprintf(where, sizeof(where), "%s%s", g.host, g.shm ? " (shm)" : ""); /* unix */
    else
        snprintf(where, sizeof(where), "%s:%u", g.host, g.port);
    timeout_ms_g = g.timeout_ms;
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[i], "test") == 0)
        return cmd_test(&g, argc - i, argv + i);
    if (strcmp(argv[i], "bench") == 0)
        return cmd_bench(&g, argc - i, argv + i);
    if (strcmp(argv[i], "restore") == 0)
        return cmd_restore(&g, argc - i, argv + i);
    if (strcmp(argv[i], "save") == 0 || strcmp(argv[i], "bgsave") == 0 ||
        strcmp(argv[i], "lastsave") == 0)
        return cmd_save(&g, argc - i, argv + i);
    for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
        if (strcmp(argv[i], commands[k].name) == 0) {
            ex = run_command(&g, (int)k, argc - i, argv + i);
            kv_mem_free(KV_MOD_CLIENT, stdin_buf);
            return ex;
        }
    fprintf(stderr, "kvclient: unknown command '%s' (see --help)\n", argv[i]);
    return 2;
}
