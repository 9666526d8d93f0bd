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

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_options_every_option_sets_its_field", test_options_every_option_sets_its_field},
        {"test_options_bad_values_are_refused", test_options_bad_values_are_refused},
        {"test_options_help_version_and_mistakes", test_options_help_version_and_mistakes},
        {"test_options_sizes_and_password_file", test_options_sizes_and_password_file},
        {"test_options_binary_help_version_bad_option", test_options_binary_help_version_bad_option},
    };

    return kv_test_run_suite("options", NULL, NULL, tests, sizeof(tests) / sizeof(tests[0]));
}
