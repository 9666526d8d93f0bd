/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/mem/kv_config.c -- the options table of struct kv_config: one row per
 * option (name, CONFIG name, type, field, range, default, help), and the
 * parser and formatter every consumer shares (the command line and --help
 * in src/server/options.c, CONFIG GET / SET, the README check). The
 * defaults are the rows' own: kv_config_defaults parses each row's def. */
#include "kv_config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "kv_err.h"

#define F(field) offsetof(struct kv_config, field), sizeof(((struct kv_config *)0)->field)
#define NOFIELD 0, 0

static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const syncs[] = {[KV_SYNC_NO] = "no", [KV_SYNC_EVERYSEC] = "everysec",
                                    [KV_SYNC_ALWAYS] = "always", NULL};
static const char *const evictions[] = {[KV_EVICT_NONE] = "none", [KV_EVICT_LRU] = "lru", NULL};
static const char *const evictions_redis[] = {[KV_EVICT_NONE] = "noeviction",
                                              [KV_EVICT_LRU] = "allkeys-lru", NULL};
static const char *const huge_pages[] = {[KV_HUGE_TRY] = "try", [KV_HUGE_REQUIRE] = "require",
                                         [KV_HUGE_OFF] = "off", NULL};

#define RT KV_CF_RUNTIME
#define SZ_MAX ((unsigned long long)SIZE_MAX)

/* In --help order. A new option: its field in kv_config.h, one row here,
 * one line in README's option table (test_options checks both agree). */
const struct kv_config_option kv_config_options[] = {
    {"bind", "bind", KV_CT_STR, F(bind_addr), 0, 0, NULL, NULL, "127.0.0.1", 0, "ADDR",
     "IPv4 address to listen on", NULL},
    {"port", "port", KV_CT_UINT, F(port), 0, 65535, NULL, NULL, "7379", RT, "N",
     "TCP port (0 = any free port, which needs\n--shm-name or --data-file)", NULL},
    {"unix", "unixsocket", KV_CT_STR, F(unix_path), 0, 0, NULL, NULL, NULL, KV_CF_NONEMPTY,
     "PATH", "also listen on a unix-domain socket at PATH (both\n"
             "protocols; a stale socket file is replaced)", NULL},
    {"unix-perm", "unixsocketperm", KV_CT_MODE, F(unix_perm), 0, 0777, NULL, NULL, "0700", 0,
     "MODE", "octal mode of the socket file", NULL},
    {"no-tcp", NULL, KV_CT_FLAG, F(no_tcp), 0, 1, NULL, NULL, NULL, 0, NULL,
     "serve the unix socket only (needs --unix)", NULL},
    {"io-threads", "io-threads", KV_CT_UINT, F(io_threads), 1, 64, NULL, NULL, NULL, 0, "N",
     "IO threads, one libev loop each", "1; cores/4 from 8 cores"},
    {"workers", NULL, KV_CT_UINT, F(workers), 0, 256, NULL, NULL, NULL, 0, "N",
     "worker threads; 0 runs handlers in the IO thread", "0 on 1-2 cores, else cores - io-threads"},
    {"max-body", NULL, KV_CT_SIZE, F(max_body), 64, 1ull << 30, NULL, NULL, "16m", RT, "SIZE",
     "largest request body accepted", NULL},
    {"max-output", NULL, KV_CT_SIZE, F(max_output), 4096, SZ_MAX, NULL, NULL, "1m", RT, "SIZE",
     "pending output per connection before reading stops", NULL},
    {"max-conns", "maxclients", KV_CT_UINT, F(max_conns), 1, 1000000, NULL, NULL, "10000", RT,
     "N", "simultaneous connections; more are answered BUSY", NULL},
    {"output-hard-limit", NULL, KV_CT_SIZE, F(output_hard_limit), 4096, SZ_MAX, NULL, NULL, "8m",
     RT, "SIZE", "pending output that closes the connection\n(one answer alone is always sent)",
     NULL},
    {"max-client-memory", "maxmemory-clients", KV_CT_SIZE, F(max_client_memory), 1u << 20,
     SZ_MAX - 128, NULL, NULL, "256m", RT | KV_CF_ZERO_OK | KV_CF_PERCENT, "SIZE",
     "budget over all connections' input, requests and output;\n"
     "above it the connection holding the most is closed; 0 = none;\n"
     "N% = N percent of --maxmemory (of --memory when it is 0)", NULL},
    {"client-query-buffer-limit", "client-query-buffer-limit", KV_CT_SIZE, F(query_buf_limit),
     1u << 20, SZ_MAX, NULL, NULL, "1g", RT, "SIZE",
     "unparsed input a connection may hold; past it the\nconnection is closed", NULL},
    {"idle-timeout", "timeout", KV_CT_UINT, F(idle_timeout), 0, 86400 * 365, NULL, NULL, "0", RT,
     "S", "close connections idle for S seconds (0 = never)", NULL},
    {"frame-timeout", NULL, KV_CT_UINT, F(frame_timeout), 0, 86400, NULL, NULL, "30", RT, "S",
     "close a connection whose started frame takes longer", NULL},
    {"recv-buf", NULL, KV_CT_SIZE, F(recv_buf), 1024, 1u << 20, NULL, NULL, "16k", 0, "SIZE",
     "receive buffer size", NULL},
    {"recv-buf-keep", NULL, KV_CT_UINT, F(recv_buf_keep), 0, 3600, NULL, NULL, "2", RT, "S",
     "an idle connection keeps its empty receive buffer S\n"
     "seconds for its next read (0 = give it back at once)", NULL},
    {"shutdown-grace", NULL, KV_CT_SECONDS, F(shutdown_grace), 0, 3600, NULL, NULL, "5", 0, "S",
     "seconds to flush output at shutdown", NULL},
    {"log-level", NULL, KV_CT_ENUM, F(log_level), 0, 3, log_levels, NULL, "info",
     RT | KV_CF_ENUM_NUM, "L", "error|warn|info|debug or 0..3", NULL},
    {"log-file", "logfile", KV_CT_STR, F(log_file), 0, 0, NULL, NULL, NULL, 0, "PATH",
     "log there instead of stderr; reopened on SIGHUP", NULL},
    {"shm-name", NULL, KV_CT_STR, F(shm_name), 0, 0, NULL, NULL, NULL, 0, "NAME",
     "shared-memory segment name", "/libevkv-PORT"},
    {"data-file", NULL, KV_CT_STR, F(data_file), 0, 0, NULL, NULL, NULL, 0, "PATH",
     "map the store from a file instead of shm", NULL},
    {"memory", NULL, KV_CT_SIZE, F(memory), 1u << 20, SZ_MAX, NULL, NULL, "256m", 0,
     "SIZE", "store size", NULL},
    {"maxmemory", "maxmemory", KV_CT_SIZE, F(maxmemory), 0, SZ_MAX, NULL, NULL, "0", RT, "SIZE",
     "keep the store's pages in use under SIZE: past it a write\n"
     "evicts (--eviction lru) or is refused; 0 = --memory", NULL},
    {"eviction", "maxmemory-policy", KV_CT_ENUM, F(eviction), 0, 1, evictions, evictions_redis,
     "none", 0, "none|lru", "when full: answer OUT_OF_MEMORY or evict (LRU)", NULL},
    {"sync", NULL, KV_CT_ENUM, F(sync), 0, 2, syncs, NULL, "everysec", 0, "always|everysec|no",
     "with --data-file: answer a write only once it is on\n"
     "disk, flush every second, or leave it to the kernel\n"
     "(README, \"Power loss\", says what each can lose)", NULL},
    {"reset-store", NULL, KV_CT_FLAG, F(reset_store), 0, 1, NULL, NULL, NULL, 0, NULL,
     "move an unusable segment aside and start empty", NULL},
    {"shrink-store", NULL, KV_CT_FLAG, F(shrink_store), 0, 1, NULL, NULL, NULL, 0, NULL,
     "allow a --memory below the segment's size: its keys are\n"
     "copied into a smaller one (refused if they do not fit)", NULL},
    {"rdb-file", NULL, KV_CT_STR, F(rdb_file), 0, 0, NULL, NULL, NULL, 0, "PATH",
     "where SAVE and BGSAVE write a Redis RDB file\n(none: SAVE is refused)", NULL},
    {"load-rdb", NULL, KV_CT_STR, F(load_rdb), 0, 0, NULL, NULL, NULL, 0, "FILE",
     "import the string keys of a Redis RDB file at start, into an\n"
     "empty store only (other types are skipped and counted)", NULL},
    {"huge-pages", NULL, KV_CT_ENUM, F(huge_pages), 0, 2, huge_pages, NULL, "try", 0,
     "try|require|off", "back the store with huge pages: ask and say\n"
     "when it did not get them, refuse to start\nwithout them, or do not ask", NULL},
    {"requirepass", "requirepass", KV_CT_STR, F(requirepass), 0, 0, NULL, NULL, NULL,
     KV_CF_NONEMPTY | KV_CF_SECRET, "PASS", "require AUTH before any opcode but PING", NULL},
    {"requirepass-file", NULL, KV_CT_PASSFILE, F(requirepass), 0, 0, NULL, NULL, NULL,
     KV_CF_NO_CONFIG | KV_CF_SECRET, "F", "the same, the password being the first line of file F",
     NULL},
    {"max-body-noauth", NULL, KV_CT_SIZE, F(max_body_noauth), 64, SZ_MAX, NULL, NULL, "64k", RT,
     "SIZE", "largest body accepted before AUTH", NULL},
    {"no-resp", NULL, KV_CT_FLAG, F(resp_disabled), 0, 1, NULL, NULL, NULL, 0, NULL,
     "binary frames only: no Redis protocol on the port", NULL},
    {"ring-size", NULL, KV_CT_SIZE, F(ring_size), 4096, 1u << 30, NULL, NULL, "256k", 0, "SIZE",
     "each shared-memory ring of an attached client, rounded up\n"
     "to a power of two (4k..--ring-max)", NULL},
    {"ring-max", NULL, KV_CT_SIZE, F(ring_max), 4096, 1u << 30, NULL, NULL, "64m", 0, "SIZE",
     "largest ring a client may ask for (at most 1g)", NULL},
    {"ring-spin-us", NULL, KV_CT_UINT, F(ring_spin_us), 0, 100000, NULL, NULL, "50", 0, "N",
     "how long the server spins on an empty request ring before\n"
     "it sleeps on the eventfd (0 = sleep at once)", NULL},
    {"ring-spin-yield-us", NULL, KV_CT_UINT, F(ring_spin_yield_us), 0, 100000, NULL, NULL, "10",
     0, "N", "after N us of spinning with every ring empty, the server\n"
     "calls sched_yield() between polls (0 = never)", NULL},
    {"databases", "databases", KV_CT_UINT, F(databases), 1, 256 /* KV_SHM_MAX_DB */, NULL, NULL,
     "16", 0, "N", "databases for SELECT, 0 .. N-1", NULL},
    {"in-order", NULL, KV_CT_FLAG, F(in_order), 0, 1, NULL, NULL, NULL, 0, NULL,
     "answer binary requests in request order on each connection", NULL},
    {"key-load-delay", "key-load-delay", KV_CT_UINT, F(key_load_delay), 0, 1000000, NULL, NULL,
     "0", RT | KV_CF_HIDDEN, "US", "microseconds slept per key --load-rdb imports (a test knob)",
     NULL},
    /* CONFIG only: Redis parameters tools read, with the one answer they have here */
    {NULL, "save", KV_CT_CONST, NOFIELD, 0, 0, NULL, NULL, "", 0, NULL, NULL, NULL},
    {NULL, "appendonly", KV_CT_CONST, NOFIELD, 0, 0, NULL, NULL, "no", 0, NULL, NULL, NULL},
    {NULL, "daemonize", KV_CT_CONST, NOFIELD, 0, 0, NULL, NULL, "no", 0, NULL, NULL, NULL},
};
const size_t kv_config_noptions = sizeof(kv_config_options) / sizeof(kv_config_options[0]);

#undef RT
#undef F
#undef NOFIELD

void kv_config_defaults(struct kv_config *c)
{
    char why[128];

    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < kv_config_noptions; i++) {
        const struct kv_config_option *o = &kv_config_options[i];

        if (o->def && o->type != KV_CT_CONST && o->size) {
            int rc = kv_config_option_parse(o, o->def, c, why, sizeof(why));

            (void)rc;
            /* a row's default outside its own range is a bug of the table
             * (test_options parses every row's default) */
        }
    }
    /* measured on 2 shared cores: every hand-off to a worker thread costs a
     * wake-up, and a third runnable thread only competes with the IO thread
     * and the clients, so small machines run handlers inline (record.md) */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    c->io_threads = cores >= 8 ? (unsigned)(cores / 4) : 1;
    c->workers = cores <= 2 ? 0 : (unsigned)(cores - c->io_threads);
    /* not options */
    c->resp_max_args = 1u << 20;
    c->max_key = 4096;
}

const char *kv_config_option_config_name(const struct kv_config_option *o)
{
    return o->config ? o->config : o->name;
}

const struct kv_config_option *kv_config_option_find(const char *name, size_t len)
{
    for (size_t i = 0; i < kv_config_noptions; i++) {
        const struct kv_config_option *o = &kv_config_options[i];
        const char *a = o->name, *b = o->config;

        if ((a && strlen(a) == len && strncasecmp(a, name, len) == 0) ||
            (b && strlen(b) == len && strncasecmp(b, name, len) == 0))
            return o;
    }
    return NULL;
}

/* ---- fields ------------------------------------------------------------------------ */
static void *field(const struct kv_config_option *o, struct kv_config *c)
{
    return (char *)c + o->offset;
}

static const void *cfield(const struct kv_config_option *o, const struct kv_config *c)
{
    return (const char *)c + o->offset;
}

static unsigned long long get_uint(const struct kv_config_option *o, const struct kv_config *c)
{
    const void *p = cfield(o, c);

    switch (o->size) {
    case 1: return *(const uint8_t *)p;
    case 2: return *(const uint16_t *)p;
    case 4: return *(const uint32_t *)p;
    default: return *(const uint64_t *)p;
    }
}

static void set_uint(const struct kv_config_option *o, struct kv_config *c, unsigned long long v)
{
    void *p = field(o, c);

    switch (o->size) {
    case 1: *(uint8_t *)p = (uint8_t)v; break;
    case 2: *(uint16_t *)p = (uint16_t)v; break;
    case 4: *(uint32_t *)p = (uint32_t)v; break;
    default: *(uint64_t *)p = (uint64_t)v; break;
    }
}

/* ---- parsing ------------------------------------------------------------------------ */
/* "123", "64k", "16m", "2g" (binary units, an optional b after the unit). */
static int parse_size(const char *s, unsigned long long *out)
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
    *out = v << shift;
    return 0;
}

int kv_config_parse_size(const char *s, size_t *out)
{
    unsigned long long v;

    if (parse_size(s, &v) != 0)
        return KV_EINVAL;
    *out = (size_t)v;
    return 0;
}

static int parse_dec(const char *s, unsigned long long *out)
{
    char *end;

    if (!s || !isdigit((unsigned char)*s))
        return KV_EINVAL;
    errno = 0;
    *out = strtoull(s, &end, 10);
    return errno || *end ? KV_EINVAL : 0;
}

static int why_range(const struct kv_config_option *o, char *why, size_t cap)
{
    snprintf(why, cap, "argument must be between %llu and %llu inclusive", o->min, o->max);
    return KV_EINVAL;
}

static int why_is(char *why, size_t cap, const char *text)
{
    snprintf(why, cap, "%s", text);
    return KV_EINVAL;
}

/* The first line of path, without its newline, into dst; empty is an error. */
static int read_first_line(const char *path, char *dst, size_t cap)
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

int kv_config_option_parse(const struct kv_config_option *o, const char *text,
                           struct kv_config *c, char *why, size_t cap)
{
    unsigned long long v;

    switch (o->type) {
    case KV_CT_UINT:
    case KV_CT_SECONDS:
        if (parse_dec(text, &v) != 0)
            return why_is(why, cap, "argument couldn't be parsed into an integer");
        if (v < o->min || v > o->max)
            return why_range(o, why, cap);
        if (o->type == KV_CT_SECONDS)
            *(double *)field(o, c) = (double)v;
        else
            set_uint(o, c, v);
        return 0;
    case KV_CT_SIZE:
        if ((o->flags & KV_CF_PERCENT) && text && *text && text[strlen(text) - 1] == '%') {
            char num[24];
            size_t l = strlen(text) - 1;

            if (l == 0 || l >= sizeof(num))
                return why_is(why, cap, "argument must be a memory or percent value");
            memcpy(num, text, l);
            num[l] = '\0';
            if (parse_dec(num, &v) != 0)
                return why_is(why, cap, "argument must be a memory or percent value");
            if (v > 100)
                return why_is(why, cap, "percentage argument must be less or equal to 100");
            set_uint(o, c, v ? KV_CONFIG_PCT(v) : 0); /* 0% = none, as Redis's 0 */
            return 0;
        }
        if (parse_size(text, &v) != 0)
            return why_is(why, cap, "argument must be a memory value");
        if ((v < o->min && !(v == 0 && (o->flags & KV_CF_ZERO_OK))) || v > o->max)
            return why_range(o, why, cap);
        set_uint(o, c, v);
        return 0;
    case KV_CT_STR:
        if (!text || strlen(text) >= o->size)
            return why_is(why, cap, "argument is too long");
        if (!text[0] && (o->flags & KV_CF_NONEMPTY))
            return why_is(why, cap, "argument must not be empty");
        memcpy(field(o, c), text, strlen(text) + 1);
        return 0;
    case KV_CT_FLAG:
        if (!text || strcasecmp(text, "yes") == 0)
            v = 1;
        else if (strcasecmp(text, "no") == 0)
            v = 0;
        else
            return why_is(why, cap, "argument must be 'yes' or 'no'");
        *(int *)field(o, c) = (int)v;
        return 0;
    case KV_CT_ENUM: {
        const char *const *names[2] = {o->names, o->config_names};
        size_t n = 0;

        for (int k = 0; k < 2; k++)
            for (int i = 0; text && names[k] && names[k][i]; i++)
                if (strcasecmp(text, names[k][i]) == 0) {
                    *(int *)field(o, c) = i;
                    return 0;
                }
        if ((o->flags & KV_CF_ENUM_NUM) && parse_dec(text, &v) == 0 && v >= o->min &&
            v <= o->max) {
            *(int *)field(o, c) = (int)v;
            return 0;
        }
        n = (size_t)snprintf(why, cap, "argument(s) must be one of the following: ");
        for (int i = 0; o->names[i] && n < cap; i++)
            n += (size_t)snprintf(why + n, cap - n, "%s%s", i ? ", " : "",
                                  (o->config_names ? o->config_names : o->names)[i]);
        return KV_EINVAL;
    }
    case KV_CT_MODE: {
        char *end;

        if (!text || *text < '0' || *text > '7')
            return why_is(why, cap, "argument must be an octal file mode");
        errno = 0;
        v = strtoull(text, &end, 8);
        if (errno || *end || v > 0777)
            return why_is(why, cap, "argument must be an octal file mode");
        *(unsigned *)field(o, c) = (unsigned)v;
        return 0;
    }
    case KV_CT_PASSFILE: {
        char tmp[sizeof(c->requirepass)];

        if (!text || read_first_line(text, tmp, sizeof(tmp)) != 0)
            return why_is(why, cap, "cannot read a password from the file");
        memcpy(field(o, c), tmp, strlen(tmp) + 1);
        return 0;
    }
    case KV_CT_CONST:
        return why_is(why, cap, "can't set immutable config");
    }
    return why_is(why, cap, "unknown option type");
}

size_t kv_config_option_format(const struct kv_config_option *o, const struct kv_config *c,
                               char *buf, size_t cap)
{
    int n = 0;

    if (!cap)
        return 0;
    switch (o->type) {
    case KV_CT_UINT:
    case KV_CT_SIZE:
        if ((o->flags & KV_CF_PERCENT) && KV_CONFIG_IS_PCT(get_uint(o, c)))
            n = snprintf(buf, cap, "%u%%", KV_CONFIG_PCT_OF(get_uint(o, c)));
        else
            n = snprintf(buf, cap, "%llu", get_uint(o, c));
        break;
    case KV_CT_SECONDS:
        n = snprintf(buf, cap, "%.0f", *(const double *)cfield(o, c));
        break;
    case KV_CT_STR:
    case KV_CT_PASSFILE:
        n = snprintf(buf, cap, "%s", (const char *)cfield(o, c));
        break;
    case KV_CT_FLAG:
        n = snprintf(buf, cap, "%s", *(const int *)cfield(o, c) ? "yes" : "no");
        break;
    case KV_CT_ENUM: {
        int v = *(const int *)cfield(o, c);
        const char *const *names = o->config_names ? o->config_names : o->names;

        n = v >= 0 && (unsigned long long)v <= o->max ? snprintf(buf, cap, "%s", names[v])
                                                      : snprintf(buf, cap, "%d", v);
        break;
    }
    case KV_CT_MODE:
        n = snprintf(buf, cap, "%o", *(const unsigned *)cfield(o, c));
        break;
    case KV_CT_CONST:
        n = snprintf(buf, cap, "%s", o->def ? o->def : "");
        break;
    }
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

size_t kv_config_client_budget(const struct kv_config *c)
{
    size_t v = __atomic_load_n(&c->max_client_memory, __ATOMIC_RELAXED), of;

    if (!KV_CONFIG_IS_PCT(v))
        return v;
    of = __atomic_load_n(&c->maxmemory, __ATOMIC_RELAXED);
    if (!of)
        of = c->memory;
    return of / 100 * KV_CONFIG_PCT_OF(v) + of % 100 * KV_CONFIG_PCT_OF(v) / 100;
}

int kv_config_option_differs(const struct kv_config_option *o, const struct kv_config *a,
                             const struct kv_config *b)
{
    return o->size && memcmp(cfield(o, a), cfield(o, b), o->size) != 0;
}

void kv_config_option_copy(const struct kv_config_option *o, struct kv_config *dst,
                           const struct kv_config *src)
{
    const void *s = cfield(o, src);
    void *d = field(o, dst);

    switch (o->size) {
    case 2: __atomic_store_n((uint16_t *)d, *(const uint16_t *)s, __ATOMIC_RELAXED); break;
    case 4: __atomic_store_n((uint32_t *)d, *(const uint32_t *)s, __ATOMIC_RELAXED); break;
    case 8: __atomic_store_n((uint64_t *)d, *(const uint64_t *)s, __ATOMIC_RELAXED); break;
    default: memcpy(d, s, o->size); break; /* strings: only ever copied before start */
    }
}
