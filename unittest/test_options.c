/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_options.c -- libevkv's command line (src/server/options.c),
 * called directly: every option with a good value lands in its kv_config
 * field, every bad value is refused with a message naming the option, and
 * --help, --version, unknown options, missing values and stray arguments
 * are told apart. */
#include <CUnit/CUnit.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv_err.h"
#include "kv_test_util.h"
#include "options.h"

static char err[512];

/* Parses a NULL-terminated list of arguments (argv[0] added) into *cfg,
 * which starts from the defaults. */
static int parse(struct kv_config *cfg, const char *const *args)
{
    char *argv[64];
    int argc = 0;

    kv_config_defaults(cfg);
    argv[argc++] = "libevkv";
    for (int i = 0; args[i] && argc < 63; i++)
        argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    err[0] = '\0';
    return kv_options_parse(argc, argv, cfg, err, sizeof(err));
}

#define PARSE(cfg, ...) parse(cfg, (const char *const[]){__VA_ARGS__, NULL})

static void test_options_every_option_sets_its_field(void)
{
    struct kv_config c;

    CU_ASSERT_EQUAL_FATAL(
        PARSE(&c, "--bind", "127.0.0.2", "--port", "0", "--io-threads", "3", "--workers", "5",
              "--max-body", "2m", "--max-output", "256k", "--max-conns", "77", "--recv-buf", "8k",
              "--idle-timeout", "9", "--log-level", "debug", "--shutdown-grace", "4",
              "--shm-name", "/x", "--data-file", "/tmp/f", "--memory", "3m", "--eviction", "lru",
              "--reset-store", "--requirepass", "pw", "--frame-timeout", "11", "--no-resp",
              "--in-order", "--max-body-noauth", "128", "--output-hard-limit", "1m",
              "--huge-pages", "off", "--max-client-memory", "64m"),
        KV_OPT_RUN);
    CU_ASSERT_STRING_EQUAL(c.bind_addr, "127.0.0.2");
    CU_ASSERT_EQUAL(c.port, 0);
    CU_ASSERT_EQUAL(c.io_threads, 3);
    CU_ASSERT_EQUAL(c.workers, 5);
    CU_ASSERT_EQUAL(c.max_body, 2u << 20);
    CU_ASSERT_EQUAL(c.max_output, 256u << 10);
    CU_ASSERT_EQUAL(c.max_conns, 77);
    CU_ASSERT_EQUAL(c.recv_buf, 8192);
    CU_ASSERT_EQUAL(c.idle_timeout, 9);
    CU_ASSERT_EQUAL(c.log_level, 3);
    CU_ASSERT_EQUAL(c.shutdown_grace, 4.0);
    CU_ASSERT_STRING_EQUAL(c.shm_name, "/x");
    CU_ASSERT_STRING_EQUAL(c.data_file, "/tmp/f");
    CU_ASSERT_EQUAL(c.memory, 3u << 20);
    CU_ASSERT_EQUAL(c.eviction, KV_EVICT_LRU);
    CU_ASSERT_EQUAL(c.reset_store, 1);
    CU_ASSERT_STRING_EQUAL(c.requirepass, "pw");
    CU_ASSERT_EQUAL(c.frame_timeout, 11);
    CU_ASSERT_EQUAL(c.resp_disabled, 1);
    CU_ASSERT_EQUAL(c.in_order, 1);
    CU_ASSERT_EQUAL(c.max_body_noauth, 128);
    CU_ASSERT_EQUAL(c.output_hard_limit, 1u << 20);
    CU_ASSERT_EQUAL(c.huge_pages, KV_HUGE_OFF);
    CU_ASSERT_EQUAL(c.max_client_memory, 64u << 20);
    CU_ASSERT_EQUAL(PARSE(&c, "--log-level", "1", "--huge-pages", "require",
                          "--max-client-memory", "0", "--eviction", "none"),
                    KV_OPT_RUN);
    CU_ASSERT_EQUAL(c.log_level, 1);
    CU_ASSERT_EQUAL(c.huge_pages, KV_HUGE_REQUIRE);
    CU_ASSERT_EQUAL(c.max_client_memory, 0);
    CU_ASSERT_EQUAL(c.eviction, KV_EVICT_NONE);
}

static void test_options_bad_values_are_refused(void)
{
    static const char *const bad[][2] = {
        {"--port", "65536"},          {"--port", "x"},           {"--io-threads", "0"},
        {"--io-threads", "65"},       {"--workers", "257"},       {"--max-body", "63"},
        {"--max-body", "2g"},         {"--max-output", "4095"},   {"--max-conns", "0"},
        {"--recv-buf", "1023"},       {"--recv-buf", "2m"},       {"--idle-timeout", "-1"},
        {"--log-level", "loud"},      {"--log-level", "4"},       {"--shutdown-grace", "3601"},
        {"--memory", "1023k"},        {"--eviction", "random"},   {"--huge-pages", "maybe"},
        {"--frame-timeout", "86401"}, {"--max-body-noauth", "63"}, {"--output-hard-limit", "1k"},
        {"--max-client-memory", "1k"}, {"--requirepass", ""},      {"--memory", "12q"},
        {"--memory", "99999999999g"}, {"--bind", ""},
    };
    struct kv_config c;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = PARSE(&c, bad[i][0], bad[i][1]);

        if (strcmp(bad[i][0], "--bind") == 0) /* checked when the socket is bound */
            continue;
        CU_ASSERT_EQUAL(rc, KV_EINVAL);
        if (rc != KV_EINVAL)
            fprintf(stderr, "  [accepted %s '%s'] ", bad[i][0], bad[i][1]);
        CU_ASSERT(strstr(err, bad[i][0] + 2) != NULL);
    }
    /* a hard limit below the soft one */
    CU_ASSERT_EQUAL(PARSE(&c, "--max-output", "2m", "--output-hard-limit", "1m"), KV_EINVAL);
    CU_ASSERT(strstr(err, "--output-hard-limit") != NULL);
}

static void test_options_help_version_and_mistakes(void)
{
    struct kv_config c;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    CU_ASSERT_EQUAL(PARSE(&c, "--help"), KV_OPT_HELP);
    CU_ASSERT_EQUAL(PARSE(&c, "--version"), KV_OPT_VERSION);
    CU_ASSERT_EQUAL(PARSE(&c, "--frobnicate"), KV_EINVAL);
    CU_ASSERT(strstr(err, "unknown option --frobnicate") != NULL);
    CU_ASSERT_EQUAL(PARSE(&c, "--port"), KV_EINVAL);
    CU_ASSERT(strstr(err, "needs a value") != NULL);
    CU_ASSERT_EQUAL(PARSE(&c, "stray"), KV_EINVAL);
    CU_ASSERT(strstr(err, "unexpected argument 'stray'") != NULL);
    CU_ASSERT_FATAL(f != NULL);
    kv_options_usage(f);
    fclose(f);
    CU_ASSERT(text && strstr(text, "--max-client-memory") && strstr(text, "--requirepass"));
    free(text);
}

static void test_options_sizes_and_password_file(void)
{
    struct kv_config c;
    size_t sz = 0;
    char path[] = "/tmp/libevkv-test-pw-XXXXXX";
    int fd = mkstemp(path);

    CU_ASSERT_EQUAL(kv_options_parse_size("512", &sz), 0);
    CU_ASSERT_EQUAL(sz, 512);
    CU_ASSERT_EQUAL(kv_options_parse_size("3k", &sz), 0);
    CU_ASSERT_EQUAL(sz, 3072);
    CU_ASSERT_EQUAL(kv_options_parse_size("2MB", &sz), 0);
    CU_ASSERT_EQUAL(sz, 2u << 20);
    CU_ASSERT_EQUAL(kv_options_parse_size("1G", &sz), 0);
    CU_ASSERT_EQUAL(sz, 1u << 30);
    CU_ASSERT_EQUAL(kv_options_parse_size("", &sz), KV_EINVAL);
    CU_ASSERT_EQUAL(kv_options_parse_size("-1", &sz), KV_EINVAL);
    CU_ASSERT_EQUAL(kv_options_parse_size("1b", &sz), KV_EINVAL);
    CU_ASSERT_EQUAL(kv_options_parse_size("18446744073709551616", &sz), KV_EINVAL);
    CU_ASSERT_EQUAL(kv_options_parse_size(NULL, &sz), KV_EINVAL);

    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, "s3cret\nsecond line\n", 19), 19);
    close(fd);
    CU_ASSERT_EQUAL(PARSE(&c, "--requirepass-file", path), KV_OPT_RUN);
    CU_ASSERT_STRING_EQUAL(c.requirepass, "s3cret");
    fd = open(path, O_WRONLY | O_TRUNC);
    CU_ASSERT_EQUAL(write(fd, "\n", 1), 1);
    close(fd);
    CU_ASSERT_EQUAL(PARSE(&c, "--requirepass-file", path), KV_EINVAL); /* empty first line */
    CU_ASSERT(strstr(err, path) != NULL);
    unlink(path);
    CU_ASSERT_EQUAL(PARSE(&c, "--requirepass-file", path), KV_EINVAL); /* missing */
}

/* The server binary itself: --help and --version exit 0 with their text,
 * a bad option exits 2 with the reason on stderr. */
static void test_options_binary_help_version_bad_option(void)
{
    char self[512], cmd[1200];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 16);
    int st;

    CU_ASSERT_FATAL(n > 0);
    self[n] = '\0';
    strcpy(strrchr(self, '/') + 1, "libevkv");
    snprintf(cmd, sizeof(cmd), "%s --help | grep -q -- --max-client-memory", self);
    st = system(cmd);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    snprintf(cmd, sizeof(cmd), "%s --version | grep -q '^libevkv '", self);
    st = system(cmd);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    snprintf(cmd, sizeof(cmd), "%s --requirepass '' 2>&1 | grep -q 'bad value .. for --requirepass'",
             self);
    st = system(cmd);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    snprintf(cmd, sizeof(cmd), "%s --port x >/dev/null 2>&1", self);
    st = system(cmd);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 2);
}


/* ---- the options table -------------------------------------------------------------- */
/* Every row is sound: its default parses within its own range, names are
 * unique in both spellings, every command-line option has help; and the
 * defaults the rows give are the documented ones. */
static void test_options_table_rows_are_sound(void)
{
    struct kv_config c, d;
    char why[200];

    kv_config_defaults(&d);
    for (size_t i = 0; i < kv_config_noptions; i++) {
        const struct kv_config_option *o = &kv_config_options[i];

        c = d;
        if (o->def && o->type != KV_CT_CONST) {
            CU_ASSERT_EQUAL(kv_config_option_parse(o, o->def, &c, why, sizeof(why)), 0);
            CU_ASSERT_FALSE(kv_config_option_differs(o, &c, &d)); /* defaults() applied it */
        }
        if (o->name && o->type != KV_CT_CONST)
            CU_ASSERT(o->help && o->help[0]);
        CU_ASSERT(kv_config_option_config_name(o) != NULL);
        for (size_t j = 0; j < i; j++) {
            const struct kv_config_option *p = &kv_config_options[j];

            if (o->name && p->name)
                CU_ASSERT(strcmp(o->name, p->name) != 0);
            if (!(o->flags & KV_CF_NO_CONFIG) && !(p->flags & KV_CF_NO_CONFIG))
                CU_ASSERT(strcmp(kv_config_option_config_name(o),
                                 kv_config_option_config_name(p)) != 0);
        }
        CU_ASSERT_PTR_EQUAL(kv_config_option_find(kv_config_option_config_name(o),
                                                  strlen(kv_config_option_config_name(o))),
                            o);
    }
    CU_ASSERT_EQUAL(d.port, 7379);
    CU_ASSERT_STRING_EQUAL(d.bind_addr, "127.0.0.1");
    CU_ASSERT_EQUAL(d.unix_perm, 0700);
    CU_ASSERT_EQUAL(d.max_body, 16u << 20);
    CU_ASSERT_EQUAL(d.max_output, 1u << 20);
    CU_ASSERT_EQUAL(d.output_hard_limit, 8u << 20);
    CU_ASSERT_EQUAL(d.max_client_memory, 256u << 20);
    CU_ASSERT_EQUAL(d.max_conns, 10000);
    CU_ASSERT_EQUAL(d.frame_timeout, 30);
    CU_ASSERT_EQUAL(d.recv_buf, 16384);
    CU_ASSERT_EQUAL(d.log_level, 2);
    CU_ASSERT_EQUAL(d.shutdown_grace, 5.0);
    CU_ASSERT_EQUAL(d.memory, 256u << 20);
    CU_ASSERT_EQUAL(d.max_body_noauth, 64u << 10);
    CU_ASSERT_EQUAL(d.eviction, KV_EVICT_NONE);
    CU_ASSERT_EQUAL(d.huge_pages, KV_HUGE_TRY);
    CU_ASSERT_EQUAL(d.max_key, 4096);
    CU_ASSERT_EQUAL(d.resp_max_args, 1u << 20);
    CU_ASSERT(d.io_threads >= 1);
}

/* CONFIG GET's answer, flattened to "name=value;" */
struct got {
    char text[8192];
    size_t len;
};

static void got_emit(void *ctx, const char *name, size_t nlen, const char *value, size_t vlen)
{
    struct got *g = ctx;

    g->len += (size_t)snprintf(g->text + g->len, sizeof(g->text) - g->len, "%.*s=%.*s;",
                               (int)nlen, name, (int)vlen, value);
}

static size_t config_get(const struct kv_config *c, struct got *g, const char *const *pats)
{
    struct kv_options_arg a[8];
    size_t n = 0;

    for (; pats[n] && n < 8; n++)
        a[n] = (struct kv_options_arg){pats[n], strlen(pats[n])};
    g->len = 0;
    g->text[0] = '\0';
    return kv_options_config_get(c, a, n, got_emit, g);
}

#define GET(c, g, ...) config_get(c, g, (const char *const[]){__VA_ARGS__, NULL})

static void test_options_config_get_patterns(void)
{
    struct kv_config c;
    struct got g;

    CU_ASSERT_EQUAL_FATAL(PARSE(&c, "--max-conns", "77", "--eviction", "lru", "--requirepass",
                                "pw", "--unix-perm", "0750"),
                          KV_OPT_RUN);
    CU_ASSERT_EQUAL(GET(&c, &g, "maxclients"), 1);
    CU_ASSERT_STRING_EQUAL(g.text, "maxclients=77;");
    CU_ASSERT_EQUAL(GET(&c, &g, "MAX-CONNS"), 1); /* the command-line spelling, as asked */
    CU_ASSERT_STRING_EQUAL(g.text, "MAX-CONNS=77;");
    CU_ASSERT_EQUAL(GET(&c, &g, "maxmemory*"), 3);
    CU_ASSERT_STRING_EQUAL(g.text, "maxmemory-clients=268435456;maxmemory=0;"
                                   "maxmemory-policy=allkeys-lru;");
    /* several patterns; a parameter matched twice is answered once */
    CU_ASSERT_EQUAL(GET(&c, &g, "maxclients", "max?lients", "UNIXSOCKETPERM", "nosuch"), 2);
    CU_ASSERT_STRING_EQUAL(g.text, "maxclients=77;UNIXSOCKETPERM=750;");
    CU_ASSERT_EQUAL(GET(&c, &g, "save", "appendonly", "requirepass"), 3);
    CU_ASSERT_STRING_EQUAL(g.text, "save=;appendonly=no;requirepass=pw;");
    CU_ASSERT_EQUAL(GET(&c, &g, "requirepass-file"), 0); /* an action, not a parameter */
    CU_ASSERT_EQUAL(GET(&c, &g, "[mt]*out"), 1);
    CU_ASSERT_STRING_EQUAL(g.text, "timeout=0;");
    /* '*' answers every parameter exactly once */
    size_t every = 0;
    for (size_t i = 0; i < kv_config_noptions; i++)
        every += !(kv_config_options[i].flags & (KV_CF_NO_CONFIG | KV_CF_HIDDEN));
    CU_ASSERT_EQUAL(GET(&c, &g, "*", "*"), every);
    CU_ASSERT(strstr(g.text, "no-resp=no;") && strstr(g.text, "log-level=info;"));
    /* a hidden parameter (Redis's key-load-delay) by its name only, never by a pattern */
    CU_ASSERT(strstr(g.text, "key-load-delay") == NULL);
    CU_ASSERT_EQUAL(GET(&c, &g, "key-load-*", "*delay"), 0);
    CU_ASSERT_EQUAL(GET(&c, &g, "key-load-delay"), 1);
    CU_ASSERT_STRING_EQUAL(g.text, "key-load-delay=0;");
    CU_ASSERT_EQUAL(GET(&c, &g, "daemonize"), 1);
    CU_ASSERT_STRING_EQUAL(g.text, "daemonize=no;");
}

static int config_set(struct kv_config *c, const char *const *args, char *e, size_t cap)
{
    struct kv_options_arg a[16];
    size_t n = 0;

    for (; args[n] && n < 16; n++)
        a[n] = (struct kv_options_arg){args[n], strlen(args[n])};
    return kv_options_config_set(c, a, n / 2, e, cap);
}

#define SET(c, ...) config_set(c, (const char *const[]){__VA_ARGS__, NULL}, err, sizeof(err))

/* CONFIG SET is all or none: any refused pair leaves every field as it was. */
static void test_options_config_set_is_all_or_none(void)
{
    struct kv_config c, before;

    kv_config_defaults(&c);
    before = c;
    CU_ASSERT_EQUAL(SET(&c, "maxclients", "50", "timeout", "x"), KV_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "ERR CONFIG SET failed (possibly related to argument 'timeout') "
                                "- argument couldn't be parsed into an integer");
    CU_ASSERT_EQUAL(memcmp(&c, &before, sizeof(c)), 0);
    CU_ASSERT_EQUAL(SET(&c, "maxclients", "50", "databases", "1"), KV_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "ERR CONFIG SET failed (possibly related to argument "
                                "'databases') - can't set immutable config");
    CU_ASSERT_EQUAL(SET(&c, "daemonize", "yes"), KV_EINVAL);
    CU_ASSERT(strstr(err, "'daemonize') - can't set immutable config") != NULL);
    /* the value a fixed parameter already has is accepted, and changes nothing */
    CU_ASSERT_EQUAL(SET(&c, "databases", "16", "save", "", "appendonly", "NO", "memory", "256m",
                        "daemonize", "no"),
                    0);
    CU_ASSERT_EQUAL(SET(&c, "maxclients", "50", "save", "900 1"), KV_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "ERR CONFIG SET failed (possibly related to argument 'save') - "
                                "can't set immutable config");
    CU_ASSERT_EQUAL(memcmp(&c, &before, sizeof(c)), 0);
    CU_ASSERT_EQUAL(SET(&c, "maxclients", "50", "nosuch", "1"), KV_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "ERR Unknown option or number of arguments for CONFIG SET - "
                                "'nosuch'");
    CU_ASSERT_EQUAL(SET(&c, "maxclients", "50", "max-conns", "60"), KV_EINVAL);
    CU_ASSERT(strstr(err, "duplicate parameter") != NULL);
    CU_ASSERT_EQUAL(SET(&c, "maxclients", "0"), KV_EINVAL);
    CU_ASSERT(strstr(err, "argument must be between 1 and 1000000 inclusive") != NULL);
    CU_ASSERT_EQUAL(SET(&c, "maxmemory-clients", "12q"), KV_EINVAL);
    CU_ASSERT(strstr(err, "argument must be a memory value") != NULL);
    CU_ASSERT_EQUAL(SET(&c, "log-level", "loud"), KV_EINVAL);
    CU_ASSERT(strstr(err, "must be one of the following: error, warn, info, debug") != NULL);
    /* each value alone is fine; together they break the rule between them */
    CU_ASSERT_EQUAL(SET(&c, "max-output", "4m", "output-hard-limit", "2m"), KV_EINVAL);
    CU_ASSERT(strstr(err, "--output-hard-limit must be at least --max-output") != NULL);
    CU_ASSERT_EQUAL(memcmp(&c, &before, sizeof(c)), 0);
    /* more pairs than there are parameters: a duplicate, found in one pass */
    {
        static struct kv_options_arg many[2 * 5000];

        for (size_t i = 0; i < 5000; i++) {
            many[2 * i] = (struct kv_options_arg){i % 2 ? "timeout" : "maxclients", i % 2 ? 7 : 10};
            many[2 * i + 1] = (struct kv_options_arg){"5", 1};
        }
        CU_ASSERT_EQUAL(kv_options_config_set(&c, many, 5000, err, sizeof(err)), KV_EINVAL);
        CU_ASSERT_STRING_EQUAL(err, "ERR CONFIG SET failed (possibly related to argument "
                                    "'maxclients') - duplicate parameter");
        CU_ASSERT_EQUAL(kv_options_config_set(&c, many, 0, err, sizeof(err)), 0);
        CU_ASSERT_EQUAL(memcmp(&c, &before, sizeof(c)), 0);
    }
    /* the whole set */
    CU_ASSERT_EQUAL(SET(&c, "maxclients", "50", "TIMEOUT", "9", "max-output", "16m",
                        "output-hard-limit", "32m", "log-level", "debug", "maxmemory-clients", "0"),
                    0);
    CU_ASSERT_EQUAL(c.max_conns, 50);
    CU_ASSERT_EQUAL(c.idle_timeout, 9);
    CU_ASSERT_EQUAL(c.max_output, 16u << 20);
    CU_ASSERT_EQUAL(c.output_hard_limit, 32u << 20);
    CU_ASSERT_EQUAL(c.log_level, 3);
    CU_ASSERT_EQUAL(c.max_client_memory, 0);
    c.max_conns = before.max_conns;
    c.idle_timeout = before.idle_timeout;
    c.max_output = before.max_output;
    c.output_hard_limit = before.output_hard_limit;
    c.log_level = before.log_level;
    c.max_client_memory = before.max_client_memory;
    CU_ASSERT_EQUAL(memcmp(&c, &before, sizeof(c)), 0); /* nothing else moved */
}

/* maxmemory-clients takes Redis's percentages (of maxmemory, else of the
 * store's size); above 100% is Redis's error; the budget follows maxmemory. */
static void test_options_client_memory_percent(void)
{
    struct kv_config c, before;
    struct got g;

    kv_config_defaults(&c);
    before = c;
    CU_ASSERT_EQUAL(kv_config_client_budget(&c), 256u << 20);
    CU_ASSERT_EQUAL(SET(&c, "maxmemory", "10000001", "maxmemory-clients", "200%",
                        "client-query-buffer-limit", "invalid"),
                    KV_EINVAL);
    CU_ASSERT_STRING_EQUAL(err, "ERR CONFIG SET failed (possibly related to argument "
                                "'maxmemory-clients') - percentage argument must be less or "
                                "equal to 100");
    CU_ASSERT_EQUAL(memcmp(&c, &before, sizeof(c)), 0);
    CU_ASSERT_EQUAL(SET(&c, "maxmemory-clients", "%"), KV_EINVAL);
    CU_ASSERT_EQUAL(SET(&c, "maxmemory-clients", "x%"), KV_EINVAL);
    CU_ASSERT_EQUAL(SET(&c, "client-query-buffer-limit", "invalid"), KV_EINVAL);
    CU_ASSERT(strstr(err, "argument must be a memory value") != NULL);
    CU_ASSERT_EQUAL(SET(&c, "maxmemory", "-1"), KV_EINVAL);
    CU_ASSERT_EQUAL(memcmp(&c, &before, sizeof(c)), 0);
    /* a percentage of the store's size while maxmemory is 0 */
    CU_ASSERT_EQUAL(SET(&c, "maxmemory-clients", "10%"), 0);
    CU_ASSERT_EQUAL(GET(&c, &g, "maxmemory-clients"), 1);
    CU_ASSERT_STRING_EQUAL(g.text, "maxmemory-clients=10%;");
    CU_ASSERT_EQUAL(kv_config_client_budget(&c), c.memory / 10);
    CU_ASSERT_EQUAL(SET(&c, "maxmemory", "10000000"), 0);
    CU_ASSERT_EQUAL(kv_config_client_budget(&c), 1000000);
    CU_ASSERT_EQUAL(SET(&c, "maxmemory-clients", "100%"), 0);
    CU_ASSERT_EQUAL(kv_config_client_budget(&c), 10000000);
    CU_ASSERT_EQUAL(SET(&c, "maxmemory-clients", "0%"), 0); /* 0% = 0 = none, as Redis */
    CU_ASSERT_EQUAL(kv_config_client_budget(&c), 0);
    CU_ASSERT_EQUAL(SET(&c, "maxmemory-clients", "5m"), 0);
    CU_ASSERT_EQUAL(GET(&c, &g, "maxmemory-clients", "maxmemory"), 2);
    CU_ASSERT_STRING_EQUAL(g.text, "maxmemory-clients=5242880;maxmemory=10000000;");
    CU_ASSERT_EQUAL(kv_config_client_budget(&c), 5u << 20);
}

/* CONFIG SET's apply step: its failure changes nothing and is the answer;
 * it sees the new values before they are stored. */
struct apply_probe {
    int calls, fail;
    uint16_t port_seen, port_before;
};

static int probe_apply(void *ctx, const struct kv_config *cur, const struct kv_config *next,
                       char *e, size_t cap)
{
    struct apply_probe *p = ctx;

    p->calls++;
    p->port_before = cur->port;
    p->port_seen = next->port;
    if (p->fail) {
        snprintf(e, cap, "ERR CONFIG SET failed (possibly related to argument 'port') - "
                 "Unable to listen on this port: test");
        return KV_EIO;
    }
    return 0;
}

static void test_options_config_set_apply_rolls_back(void)
{
    struct kv_config c, before;
    struct apply_probe p = {0, 1, 0, 0};
    struct kv_options_arg a[6] = {{"maxmemory", 9}, {"10000001", 8}, {"port", 4},
                                  {"7380", 4},      {"maxclients", 10}, {"10", 2}};

    kv_config_defaults(&c);
    before = c;
    CU_ASSERT_EQUAL(kv_options_config_set_ex(&c, a, 3, probe_apply, &p, err, sizeof(err)), KV_EIO);
    CU_ASSERT_EQUAL(p.calls, 1);
    CU_ASSERT_EQUAL(p.port_seen, 7380);
    CU_ASSERT_EQUAL(p.port_before, 7379);
    CU_ASSERT(strstr(err, "Unable to listen on this port") != NULL);
    CU_ASSERT_EQUAL(memcmp(&c, &before, sizeof(c)), 0);
    /* a bad value is found before apply runs */
    a[5] = (struct kv_options_arg){"0", 1};
    CU_ASSERT_EQUAL(kv_options_config_set_ex(&c, a, 3, probe_apply, &p, err, sizeof(err)),
                    KV_EINVAL);
    CU_ASSERT_EQUAL(p.calls, 1);
    a[5] = (struct kv_options_arg){"10", 2};
    p.fail = 0;
    CU_ASSERT_EQUAL(kv_options_config_set_ex(&c, a, 3, probe_apply, &p, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(c.port, 7380);
    CU_ASSERT_EQUAL(c.maxmemory, 10000001);
    CU_ASSERT_EQUAL(c.max_conns, 10);
}

/* The text of README's section that starts with the line head, up to the
 * next "## " heading (malloc'd). */
static char *readme_section(const char *head)
{
    FILE *f = fopen(KV_SOURCE_DIR "/README.md", "r");
    char line[4096], *text = NULL;
    size_t len = 0;
    int in = 0;
    FILE *m = open_memstream(&text, &len);

    if (!f || !m)
        return NULL;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "## ", 3) == 0)
            in = strncmp(line, head, strlen(head)) == 0;
        if (in)
            fputs(line, m);
    }
    fclose(f);
    fclose(m);
    return text;
}

/* README's option table lists every command-line option and no other, and
 * its CONFIG table every parameter with its command-line option and
 * whether CONFIG SET may change it. */
static void test_options_readme_tables_agree(void)
{
    char *text = readme_section("## Running the server");
    char want[256];

    CU_ASSERT_FATAL(text != NULL);
    /* every `--name` in a first column is a row */
    for (char *l = text; (l = strstr(l, "\n| `--")) != NULL; l++) {
        char *end = strchr(l + 3, '|');

        for (char *p = l + 3; end && (p = strstr(p, "`--")) != NULL && p < end; p++) {
            size_t n = strcspn(p + 3, " `");
            const struct kv_config_option *o = kv_config_option_find(p + 3, n);

            CU_ASSERT(o != NULL && o->name && strlen(o->name) == n);
            if (!o)
                fprintf(stderr, "  [README lists --%.*s, the table does not] ", (int)n, p + 3);
        }
    }
    for (size_t i = 0; i < kv_config_noptions; i++) {
        const struct kv_config_option *o = &kv_config_options[i];

        if (o->name && o->type != KV_CT_CONST) {
            snprintf(want, sizeof(want), "`--%s%s", o->name, o->arg ? " " : "`");
            CU_ASSERT(strstr(text, want) != NULL);
            if (!strstr(text, want))
                fprintf(stderr, "  [README's option table lacks --%s] ", o->name);
        }
        if (!(o->flags & KV_CF_NO_CONFIG)) {
            snprintf(want, sizeof(want), "| `%s` | %s%s%s | %s |", kv_config_option_config_name(o),
                     o->name && o->type != KV_CT_CONST ? "`--" : "-",
                     o->name && o->type != KV_CT_CONST ? o->name : "",
                     o->name && o->type != KV_CT_CONST ? "`" : "",
                     (o->flags & KV_CF_RUNTIME) ? "yes" : "no");
            CU_ASSERT(strstr(text, want) != NULL);
            if (!strstr(text, want))
                fprintf(stderr, "  [README's CONFIG table lacks the row '%s'] ", want);
        }
    }
    free(text);
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_options_every_option_sets_its_field", test_options_every_option_sets_its_field},
        {"test_options_bad_values_are_refused", test_options_bad_values_are_refused},
        {"test_options_help_version_and_mistakes", test_options_help_version_and_mistakes},
        {"test_options_sizes_and_password_file", test_options_sizes_and_password_file},
        {"test_options_binary_help_version_bad_option", test_options_binary_help_version_bad_option},
        {"test_options_table_rows_are_sound", test_options_table_rows_are_sound},
        {"test_options_config_get_patterns", test_options_config_get_patterns},
        {"test_options_config_set_is_all_or_none", test_options_config_set_is_all_or_none},
        {"test_options_readme_tables_agree", test_options_readme_tables_agree},
        {"test_options_client_memory_percent", test_options_client_memory_percent},
        {"test_options_config_set_apply_rolls_back", test_options_config_set_apply_rolls_back},
    };

    return kv_test_run_suite("options", NULL, NULL, tests, sizeof(tests) / sizeof(tests[0]));
}
