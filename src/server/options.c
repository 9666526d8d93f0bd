/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/options.c -- libevkv's command line (see options.h). */
#include "options.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv_err.h"

enum {
    OPT_BIND = 256, OPT_PORT, OPT_IO_THREADS, OPT_WORKERS, OPT_MAX_BODY, OPT_MAX_CONNS,
    OPT_LOG_LEVEL, OPT_MAX_OUTPUT, OPT_RECV_BUF, OPT_IDLE, OPT_SHM_NAME, OPT_DATA_FILE,
    OPT_MEMORY, OPT_EVICTION, OPT_REQUIREPASS, OPT_RESET_STORE, OPT_SHRINK_STORE, OPT_GRACE, OPT_FRAME_TIMEOUT,
    OPT_MAX_BODY_NOAUTH, OPT_OUTPUT_HARD, OPT_REQUIREPASS_FILE, OPT_NO_RESP, OPT_IN_ORDER, OPT_HUGE_PAGES,
    OPT_UNIX, OPT_UNIX_PERM, OPT_NO_TCP,
    OPT_LOG_FILE, OPT_RDB_FILE, OPT_LOAD_RDB,
    OPT_MAX_CLIENT_MEMORY,
    OPT_RING_SIZE, OPT_RING_MAX, OPT_RING_SPIN,
};

static const struct option long_opts[] = {
    {"help", no_argument, NULL, 'H'},
    {"version", no_argument, NULL, 'V'},
    {"bind", required_argument, NULL, OPT_BIND},
    {"port", required_argument, NULL, OPT_PORT},
    {"io-threads", required_argument, NULL, OPT_IO_THREADS},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"max-body", required_argument, NULL, OPT_MAX_BODY},
    {"max-output", required_argument, NULL, OPT_MAX_OUTPUT},
    {"max-conns", required_argument, NULL, OPT_MAX_CONNS},
    {"recv-buf", required_argument, NULL, OPT_RECV_BUF},
    {"idle-timeout", required_argument, NULL, OPT_IDLE},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"shutdown-grace", required_argument, NULL, OPT_GRACE},
    {"shm-name", required_argument, NULL, OPT_SHM_NAME},
    {"data-file", required_argument, NULL, OPT_DATA_FILE},
    {"memory", required_argument, NULL, OPT_MEMORY},
    {"eviction", required_argument, NULL, OPT_EVICTION},
    {"reset-store", no_argument, NULL, OPT_RESET_STORE},
    {"shrink-store", no_argument, NULL, OPT_SHRINK_STORE},
    {"requirepass", required_argument, NULL, OPT_REQUIREPASS},
    {"requirepass-file", required_argument, NULL, OPT_REQUIREPASS_FILE},
    {"frame-timeout", required_argument, NULL, OPT_FRAME_TIMEOUT},
    {"no-resp", no_argument, NULL, OPT_NO_RESP},
    {"in-order", no_argument, NULL, OPT_IN_ORDER},
    {"max-body-noauth", required_argument, NULL, OPT_MAX_BODY_NOAUTH},
    {"output-hard-limit", required_argument, NULL, OPT_OUTPUT_HARD},
    {"huge-pages", required_argument, NULL, OPT_HUGE_PAGES},
    {"unix", required_argument, NULL, OPT_UNIX},
    {"unix-perm", required_argument, NULL, OPT_UNIX_PERM},
    {"no-tcp", no_argument, NULL, OPT_NO_TCP},
    {"log-file", required_argument, NULL, OPT_LOG_FILE},
    {"rdb-file", required_argument, NULL, OPT_RDB_FILE},
    {"load-rdb", required_argument, NULL, OPT_LOAD_RDB},
    {"max-client-memory", required_argument, NULL, OPT_MAX_CLIENT_MEMORY},
    {"ring-size", required_argument, NULL, OPT_RING_SIZE},
    {"ring-max", required_argument, NULL, OPT_RING_MAX},
    {"ring-spin-us", required_argument, NULL, OPT_RING_SPIN},
    {NULL, 0, NULL, 0},
};

void kv_options_usage(FILE *f)
{
    fputs("usage: libevkv [options]\n"
          "  --bind ADDR          IPv4 address to listen on (default 127.0.0.1)\n"
          "  --port N             TCP port (default 7379; 0 = any free port, which needs\n"
          "                       --shm-name or --data-file)\n"
          "  --unix PATH          also listen on a unix-domain socket at PATH (both\n"
          "                       protocols; a stale socket file is replaced)\n"
          "  --unix-perm MODE     octal mode of the socket file (default 0700)\n"
          "  --no-tcp             serve the unix socket only (needs --unix)\n"
          "  --ring-size SIZE     each shared-memory ring of an attached client, rounded up to\n"
          "                       a power of two (default 256k; 4k..--ring-max)\n"
          "  --ring-max SIZE      largest ring a client may ask for (default 64m, at most 1g)\n"
          "  --ring-spin-us N     how long the server spins on an empty request ring before it\n"
          "                       sleeps on the eventfd (default 50; 0 = sleep at once)\n"
          "  --io-threads N       IO threads, one libev loop each (default 1; cores/4 from 8 cores)\n"
          "  --workers N          worker threads; 0 runs handlers in the IO thread\n"
          "                       (default 0 on 1-2 cores, else cores - io-threads)\n"
          "  --max-body SIZE      largest request body accepted (default 16m)\n"
          "  --max-output SIZE    pending output per connection before reading stops (default 1m)\n"
          "  --max-conns N        simultaneous connections; more are answered BUSY (default 10000)\n"
          "  --output-hard-limit SIZE  pending output that closes the connection (default 8m;\n"
          "                       one answer alone is always sent)\n"
          "  --max-client-memory SIZE  budget over all connections' input, requests and output;\n"
          "                       above it the connection holding the most is closed\n"
          "                       (default 256m, 0 = none)\n"
          "  --idle-timeout S     close connections idle for S seconds (default 0 = never)\n"
          "  --frame-timeout S    close a connection whose started frame takes longer (default 30)\n"
          "  --recv-buf SIZE      receive buffer size (default 16k)\n"
          "  --shutdown-grace S   seconds to flush output at shutdown (default 5)\n"
          "  --log-level L        error|warn|info|debug or 0..3 (default info)\n"
          "  --log-file PATH      log there instead of stderr; reopened on SIGHUP\n"
          "  --shm-name NAME      shared-memory segment name (default /libevkv-PORT)\n"
          "  --data-file PATH     map the store from a file instead of shm\n"
          "  --memory SIZE        store size (default 256m)\n"
          "  --eviction none|lru  when full: answer OUT_OF_MEMORY (default) or evict\n"
          "  --reset-store        move an unusable segment aside and start empty\n"
          "  --shrink-store       allow a --memory below the segment's size: its keys are\n"
          "                       copied into a smaller one (refused if they do not fit)\n"
          "  --rdb-file PATH      where SAVE and BGSAVE write a Redis RDB file (default: none,\n"
          "                       SAVE is refused)\n"
          "  --load-rdb FILE      import the string keys of a Redis RDB file at start, into an\n"
          "                       empty store only (other types are skipped and counted)\n"
          "  --huge-pages try|require|off  back the store with huge pages: ask and say\n"
          "                       when it did not get them (default), refuse to start\n"
          "                       without them, or do not ask\n"
          "  --requirepass PASS   require AUTH before any opcode but PING\n"
          "  --requirepass-file F the same, the password being the first line of file F\n"
          "  --max-body-noauth SIZE  largest body accepted before AUTH (default 64k)\n"
          "  --no-resp            binary frames only: no Redis protocol on the port\n"
          "  --in-order           answer binary requests in request order on each connection\n"
          "  --help, --version\n"
          "SIZE takes a k, m or g suffix (binary units). Signal 41 (SIGRTMIN+7) prints the\n"
          "memory and request statistics; SIGINT/SIGTERM stop gracefully; SIGHUP reopens\n"
          "the --log-file.\n",
          f);
}

int kv_options_parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v;
    unsigned shift = 0;

    if (!s || !isdigit((unsigned char)*s))
        return KV_EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno)
        return KV_EINVAL;
    switch (tolower((unsigned char)*end)) {
    case '\0': break;
    case 'k': shift = 10; end++; break;
    case 'm': shift = 20; end++; break;
    case 'g': shift = 30; end++; break;
    default: return KV_EINVAL;
    }
    if ((*end == 'b' || *end == 'B') && shift)
        end++;
    if (*end != '\0' || v > (SIZE_MAX >> shift))
        return KV_EINVAL;
    *out = (size_t)(v << shift);
    return 0;
}

static int parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
    char *end;
    unsigned long v;

    if (!s || !isdigit((unsigned char)*s))
        return KV_EINVAL;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return KV_EINVAL;
    *out = v;
    return 0;
}

/* *out = the index of s in names[0..n), which the callers index by their
 * enum values; KV_EINVAL when s is none of them. */
static int parse_name(const char *s, const char *const *names, int n, int *out)
{
    for (int i = 0; i < n; i++)
        if (names[i] && strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    return KV_EINVAL;
}

static int parse_log_level(const char *s, int *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    unsigned long v;

    if (parse_name(s, names, 4, out) == 0)
        return 0;
    if (parse_uint(s, 0, 3, &v) != 0)
        return KV_EINVAL;
    *out = (int)v;
    return 0;
}

/* The first line of path, without its newline; empty is an error. */
static int read_password(const char *path, char *dst, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f)
        return KV_EINVAL;
    if (!fgets(dst, (int)cap, f)) {
        fclose(f);
        return KV_EINVAL;
    }
    fclose(f);
    n = strcspn(dst, "\r\n");
    dst[n] = '\0';
    return n ? 0 : KV_EINVAL;
}

/* An octal file mode, 0 .. 0777 (a leading 0 optional). */
static int parse_mode(const char *s, unsigned *out)
{
    char *end;
    unsigned long v;

    if (!s || *s < '0' || *s > '7')
        return KV_EINVAL;
    errno = 0;
    v = strtoul(s, &end, 8);
    if (errno || *end || v > 0777)
        return KV_EINVAL;
    *out = (unsigned)v;
    return 0;
}

static int copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);

    if (n >= cap)
        return KV_EINVAL;
    memcpy(dst, src, n + 1);
    return 0;
}

int kv_options_parse(int argc, char **argv, struct kv_config *cfg, char *err, size_t errcap)
{
    int c, rc, idx = 0;
    unsigned long v;
    size_t sz;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", long_opts, &idx)) != -1) {
        const char *name = optind > 0 && optind <= argc ? argv[optind - 1] : "?";

        rc = 0;
        switch (c) {
        case 'H': return KV_OPT_HELP;
        case 'V': return KV_OPT_VERSION;
        case OPT_BIND:
            rc = copy_str(cfg->bind_addr, sizeof(cfg->bind_addr), optarg);
            break;
        case OPT_PORT:
            rc = parse_uint(optarg, 0, 65535, &v);
            cfg->port = (uint16_t)v;
            break;
        case OPT_IO_THREADS:
            rc = parse_uint(optarg, 1, 64, &v);
            cfg->io_threads = (unsigned)v;
            break;
        case OPT_WORKERS:
            rc = parse_uint(optarg, 0, 256, &v);
            cfg->workers = (unsigned)v;
            break;
        case OPT_MAX_BODY:
            rc = kv_options_parse_size(optarg, &sz);
            if (rc == 0 && (sz < 64 || sz > (1u << 30)))
                rc = KV_EINVAL;
            cfg->max_body = sz;
            break;
        case OPT_MAX_OUTPUT:
            rc = kv_options_parse_size(optarg, &sz);
            if (rc == 0 && sz < 4096)
                rc = KV_EINVAL;
            cfg->max_output = sz;
            break;
        case OPT_MAX_CONNS:
            rc = parse_uint(optarg, 1, 1000000, &v);
            cfg->max_conns = (unsigned)v;
            break;
        case OPT_RING_SIZE:
        case OPT_RING_MAX:
            rc = kv_options_parse_size(optarg, &sz);
            if (rc == 0 && (sz < 4096 || sz > (1u << 30)))
                rc = KV_EINVAL;
            if (c == OPT_RING_SIZE)
                cfg->ring_size = sz;
            else
                cfg->ring_max = sz;
            break;
        case OPT_RING_SPIN:
            rc = parse_uint(optarg, 0, 100000, &v);
            cfg->ring_spin_us = (unsigned)v;
            break;
        case OPT_RECV_BUF:
            rc = kv_options_parse_size(optarg, &sz);
            if (rc == 0 && (sz < 1024 || sz > (1u << 20)))
                rc = KV_EINVAL;
            cfg->recv_buf = sz;
            break;
        case OPT_IDLE:
            rc = parse_uint(optarg, 0, 86400 * 365, &v);
            cfg->idle_timeout = (unsigned)v;
            break;
        case OPT_GRACE:
            rc = parse_uint(optarg, 0, 3600, &v);
            cfg->shutdown_grace = (double)v;
            break;
        case OPT_LOG_LEVEL:
            rc = parse_log_level(optarg, &cfg->log_level);
            break;
        case OPT_LOG_FILE:
            rc = copy_str(cfg->log_file, sizeof(cfg->log_file), optarg);
            break;
        case OPT_RDB_FILE:
            rc = copy_str(cfg->rdb_file, sizeof(cfg->rdb_file), optarg);
            break;
        case OPT_LOAD_RDB:
            rc = copy_str(cfg->load_rdb, sizeof(cfg->load_rdb), optarg);
            break;
        case OPT_SHM_NAME:
            rc = copy_str(cfg->shm_name, sizeof(cfg->shm_name), optarg);
            break;
        case OPT_DATA_FILE:
            rc = copy_str(cfg->data_file, sizeof(cfg->data_file), optarg);
            break;
        case OPT_MEMORY:
            rc = kv_options_parse_size(optarg, &sz);
            if (rc == 0 && sz < (1u << 20))
                rc = KV_EINVAL;
            cfg->memory = sz;
            break;
        case OPT_EVICTION: {
            static const char *const names[] = {[KV_EVICT_NONE] = "none",
                                                [KV_EVICT_LRU] = "lru"};
            int i;

            rc = parse_name(optarg, names, 2, &i);
            if (rc == 0)
                cfg->eviction = (enum kv_eviction)i;
            break;
        }
        case OPT_HUGE_PAGES: {
            static const char *const names[] = {[KV_HUGE_TRY] = "try",
                                                [KV_HUGE_REQUIRE] = "require",
                                                [KV_HUGE_OFF] = "off"};
            int i;

            rc = parse_name(optarg, names, 3, &i);
            if (rc == 0)
                cfg->huge_pages = (enum kv_huge_pages)i;
            break;
        }
        case OPT_UNIX:
            rc = optarg[0] ? copy_str(cfg->unix_path, sizeof(cfg->unix_path), optarg) : KV_EINVAL;
            break;
        case OPT_UNIX_PERM:
            rc = parse_mode(optarg, &cfg->unix_perm);
            break;
        case OPT_NO_TCP:
            cfg->no_tcp = 1;
            break;
        case OPT_RESET_STORE:
            cfg->reset_store = 1;
            break;
        case OPT_SHRINK_STORE:
            cfg->shrink_store = 1;
            break;
        case OPT_REQUIREPASS:
            /* an empty password would silently mean "no authentication" */
            rc = optarg[0] ? copy_str(cfg->requirepass, sizeof(cfg->requirepass), optarg)
                           : KV_EINVAL;
            break;
        case OPT_REQUIREPASS_FILE:
            rc = read_password(optarg, cfg->requirepass, sizeof(cfg->requirepass));
            if (rc != 0) {
                snprintf(err, errcap, "cannot read a password from '%s'", optarg);
                return KV_EINVAL;
            }
            break;
        case OPT_IN_ORDER:
            cfg->in_order = 1;
            break;
        case OPT_NO_RESP:
            cfg->resp_disabled = 1;
            break;
        case OPT_FRAME_TIMEOUT:
            rc = parse_uint(optarg, 0, 86400, &v);
            cfg->frame_timeout = (unsigned)v;
            break;
        case OPT_MAX_BODY_NOAUTH:
            rc = kv_options_parse_size(optarg, &sz);
            if (rc == 0 && sz < 64)
                rc = KV_EINVAL;
            cfg->max_body_noauth = sz;
            break;
        case OPT_MAX_CLIENT_MEMORY:
            rc = kv_options_parse_size(optarg, &sz);
            if (rc == 0 && sz != 0 && sz < (1u << 20))
                rc = KV_EINVAL;
            cfg->max_client_memory = sz;
            break;
        case OPT_OUTPUT_HARD:
            rc = kv_options_parse_size(optarg, &sz);
            if (rc == 0 && sz < 4096)
                rc = KV_EINVAL;
            cfg->output_hard_limit = sz;
            break;
        case ':':
            snprintf(err, errcap, "option %s needs a value", name);
            return KV_EINVAL;
        default:
            snprintf(err, errcap, "unknown option %s (see --help)", name);
            return KV_EINVAL;
        }
        if (rc != 0) {
            snprintf(err, errcap, "bad value '%s' for --%s (see --help)", optarg,
                     long_opts[idx].name);
            return KV_EINVAL;
        }
    }
    if (cfg->output_hard_limit < cfg->max_output) {
        snprintf(err, errcap, "--output-hard-limit must be at least --max-output");
        return KV_EINVAL;
    }
    if (cfg->ring_size > cfg->ring_max) {
        snprintf(err, errcap, "--ring-size must be at most --ring-max");
        return KV_EINVAL;
    }
    if (cfg->no_tcp && !cfg->unix_path[0]) {
        snprintf(err, errcap, "--no-tcp needs --unix PATH (nothing to listen on)");
        return KV_EINVAL;
    }
    /* the default segment is named after the port: with any free port it
     * would be shared by every such server (README, "Running the server") */
    if (cfg->port == 0 && !cfg->shm_name[0] && !cfg->data_file[0]) {
        snprintf(err, errcap, "--port 0 needs --shm-name or --data-file (the default "
                 "segment is named after the port)");
        return KV_EINVAL;
    }
    if (optind < argc) {
        snprintf(err, errcap, "unexpected argument '%s' (see --help)", argv[optind]);
        return KV_EINVAL;
    }
    return KV_OPT_RUN;
}

/* "16m" for a size that is a whole number of k/m/g, else the bytes. */
static const char *size_text(size_t v, char *buf, size_t cap)
{
    static const char units[] = "gmk";

    for (int i = 0; i < 3; i++) {
        unsigned shift = (unsigned)(30 - 10 * i);

        if (v && (v & ((1ull << shift) - 1)) == 0) {
            snprintf(buf, cap, "%zu%c", v >> shift, units[i]);
            return buf;
        }
    }
    snprintf(buf, cap, "%zu", v);
    return buf;
}

size_t kv_options_describe(const struct kv_config *cfg, char *buf, size_t cap)
{
    static const char *const evict[] = {"none", "lru"};
    static const char *const huge[] = {"try", "require", "off"};
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    struct kv_config d;
    char a[32];
    size_t n = 0;

#define ADD(...)                                                                        \
    do {                                                                                \
        if (n < cap)                                                                    \
            n += (size_t)snprintf(buf + n, cap - n, "%s", n ? " " : "");               \
        if (n < cap)                                                                    \
            n += (size_t)snprintf(buf + n, cap - n, __VA_ARGS__);                      \
    } while (0)
#define SIZE(field, opt)                                                                \
    if (cfg->field != d.field)                                                          \
    ADD("--" opt " %s", size_text(cfg->field, a, sizeof(a)))
#define NUM(field, opt)                                                                 \
    if (cfg->field != d.field)                                                          \
    ADD("--" opt " %lu", (unsigned long)cfg->field)
#define STR(field, opt)                                                                 \
    if (strcmp(cfg->field, d.field) != 0)                                               \
    ADD("--" opt " %s", cfg->field)
#define FLAG(field, opt)                                                                \
    if (cfg->field != d.field)                                                          \
    ADD("--" opt)

    kv_config_defaults(&d);
    if (cap)
        buf[0] = '\0';
    STR(bind_addr, "bind");
    NUM(port, "port");
    NUM(io_threads, "io-threads");
    NUM(workers, "workers");
    SIZE(max_body, "max-body");
    SIZE(max_output, "max-output");
    SIZE(output_hard_limit, "output-hard-limit");
    NUM(max_conns, "max-conns");
    NUM(idle_timeout, "idle-timeout");
    NUM(frame_timeout, "frame-timeout");
    SIZE(recv_buf, "recv-buf");
    SIZE(ring_size, "ring-size");
    SIZE(ring_max, "ring-max");
    NUM(ring_spin_us, "ring-spin-us");
    if (cfg->shutdown_grace != d.shutdown_grace)
        ADD("--shutdown-grace %.0f", cfg->shutdown_grace);
    if (cfg->log_level != d.log_level && cfg->log_level >= 0 && cfg->log_level <= 3)
        ADD("--log-level %s", levels[cfg->log_level]);
    STR(log_file, "log-file");
    STR(shm_name, "shm-name");
    STR(data_file, "data-file");
    SIZE(memory, "memory");
    if (cfg->eviction != d.eviction && (unsigned)cfg->eviction < 2)
        ADD("--eviction %s", evict[cfg->eviction]);
    if (cfg->huge_pages != d.huge_pages && (unsigned)cfg->huge_pages < 3)
        ADD("--huge-pages %s", huge[cfg->huge_pages]);
    FLAG(reset_store, "reset-store");
    STR(rdb_file, "rdb-file");
    STR(load_rdb, "load-rdb");
    if (cfg->requirepass[0])
        ADD("--requirepass (set)");
    SIZE(max_body_noauth, "max-body-noauth");
    FLAG(resp_disabled, "no-resp");
    FLAG(in_order, "in-order");
    if (n == 0)
        ADD("none");
#undef ADD
#undef SIZE
#undef NUM
#undef STR
#undef FLAG
    return n < cap ? n : (cap ? cap - 1 : 0);
}
