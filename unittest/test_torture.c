/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_torture.c -- the crash torture (tests/torture.c, bin/torture) as a CUnit
 * suite: a short run -- SIGKILL under load, SIGKILL during recovery, SIGTERM then SIGKILL
 * during a graceful shutdown -- must come back with nothing lost and nothing torn; so must
 * short runs with pages moving between size classes (--pressure), with --eviction lru
 * (where the server must really have evicted) and with --eviction none (where MSETs are
 * refused for want of room and must change nothing). The tool's check must catch a lost
 * write, a torn value, a stale value under LRU and a split MSET injected behind its back,
 * so that a pass means something. Real processes, loopback. Scaled down under ASan. */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kv_test_util.h"

enum { RUN_LIMIT_S = 120, OUT_MAX = 1 << 20 };

static pid_t child;

static void kill_child(void)
{
    if (child > 0) {
        kill(child, SIGTERM); /* the tool kills its server and unlinks its segment */
        waitpid(child, NULL, 0);
        child = 0;
    }
}

static void tool_path(char *buf, size_t cap)
{
    const char *env = getenv("TORTURE_BIN");
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

    if (env) {
        snprintf(buf, cap, "%s", env);
    } else if (n > 0) {
        self[n] = '\0';
        *strrchr(self, '/') = '\0';
        snprintf(buf, cap, "%.*s/torture", (int)cap - 10, self);
    } else {
        snprintf(buf, cap, "bin/torture");
    }
}

/* Runs bin/torture with args (NULL-terminated) and the common options; *out gets its
 * output (malloc'd). Returns the exit code, 128 + signal, or -1. */
static int run_torture(const char *const *args, char **out)
{
    static int installed;
    char path[PATH_MAX], seed[32];
    const char *argv[48];
    int argc = 0, fds[2], st = 0;
    size_t len = 0;
    char *buf = malloc(OUT_MAX + 1);
    time_t deadline = time(NULL) + RUN_LIMIT_S;

    *out = buf;
    if (!buf)
        return -1;
    buf[0] = '\0';
    if (!installed) {
        atexit(kill_child);
        installed = 1;
    }
    tool_path(path, sizeof(path));
    snprintf(seed, sizeof(seed), "%ld", (long)time(NULL) % 1000000 * 1000 + getpid() % 1000);
    argv[argc++] = path;
    argv[argc++] = "--seed";
    argv[argc++] = seed;
    argv[argc++] = "--max-time";
    argv[argc++] = "110";
    if (getenv("LIBEVKV_BIN")) {
        argv[argc++] = "--server";
        argv[argc++] = getenv("LIBEVKV_BIN");
    }
    for (int i = 0; args[i] && argc < 46; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    if (pipe(fds) != 0)
        return -1;
    fflush(stdout);
    child = fork();
    if (child < 0)
        return -1;
    if (child == 0) {
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv(path, (char *const *)argv);
        fprintf(stderr, "cannot run %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    for (;;) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        ssize_t n;

        if (time(NULL) > deadline) {
            printf("\n[test_torture] %s ran over %d s: stopping it\n", path, RUN_LIMIT_S);
            break;
        }
        if (poll(&p, 1, 1000) <= 0)
            continue;
        n = read(fds[0], buf + len, OUT_MAX - len);
        if (n <= 0)
            break;
        fwrite(buf + len, 1, (size_t)n, stdout); /* the cycle lines go to the test log */
        len += (size_t)n;
        buf[len] = '\0';
        if (len == OUT_MAX)
            len = 0; /* keep the tail: the summary comes last */
    }
    close(fds[0]);
    if (time(NULL) > deadline)
        kill(child, SIGTERM);
    waitpid(child, &st, 0);
    child = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int asan(void)
{
    return getenv("ASAN_OPTIONS") != NULL;
}

static void test_torture_short_run_loses_nothing(void)
{
    /* 4 kills under load, 1 kill during recovery, 1 SIGTERM+SIGKILL, on a 64m segment */
    const char *const normal[] = {"--cycles", "6",   "--kinds",   "kkrskk", "--seconds", "1.5",
                                  "--memory", "64m", "--writers", "4",      NULL};
    const char *const slow[] = {"--cycles",    "6",        "--kinds",   "kkrskk",    "--seconds",
                                "1",           "--memory", "64m",       "--writers", "4",
                                "--max-value", "512k",     "--prefill", "10",        NULL};
    char *out;
    int rc = run_torture(asan() ? slow : normal, &out);

    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "torture summary: cycles 6,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, ", lost 0, stale 0, torn 0, split MSETs 0, live mismatches "
                                       "0, server failures 0"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "recovery killed after"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "term+kill"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "RESULT: PASS"));
    free(out);
}

static void test_torture_check_catches_injected_loss(void)
{
    const char *const args[] = {"--cycles", "1",         "--seconds", "0.3",       "--memory",
                                "32m",      "--writers", "2",         "--prefill", "0",
                                "--inject", "loss",      NULL};
    char *out;
    int rc = run_torture(args, &out);

    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "injected a lost write"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, ", lost 1, stale 0, torn 0, split MSETs 0,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "RESULT: FAIL"));
    free(out);
}

static void test_torture_check_catches_injected_tear(void)
{
    const char *const args[] = {"--cycles", "1",         "--seconds", "0.3",       "--memory",
                                "32m",      "--writers", "2",         "--prefill", "0",
                                "--inject", "tear",      NULL};
    char *out;
    int rc = run_torture(args, &out);

    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "injected a torn value"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, ", lost 0, stale 0, torn 1, split MSETs 0,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "RESULT: FAIL"));
    free(out);
}

/* The number after the first occurrence of label in out, or -1. */
static long long figure(const char *out, const char *label)
{
    const char *p = strstr(out, label);

    return p ? strtoll(p + strlen(label), NULL, 10) : -1;
}

/* A short --pressure run with the given --eviction and cycle kinds; must pass. */
static char *pressure_run(const char *eviction, const char *kinds)
{
    const char *const normal[] = {"--eviction", eviction,    "--pressure", "--cycles",
                                  "4",          "--kinds",   kinds,        "--seconds",
                                  "1",          "--writers", "4",          NULL};
    const char *const slow[] = {"--eviction", eviction,      "--pressure", "--cycles", "4",
                                "--kinds",    kinds,         "--seconds",  "0.7",      "--writers",
                                "3",          "--max-value", "256k",       NULL};
    char *out;
    int rc = run_torture(asan() ? slow : normal, &out);

    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "torture summary: cycles 4,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, ", lost 0, stale 0, torn 0, split MSETs 0, live mismatches "
                                       "0, server failures 0"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "RESULT: PASS"));
    return out;
}

static void test_torture_lru_with_page_moves_loses_nothing(void)
{
    char *out = pressure_run("lru", "kkrs");

    /* the server really evicted (its STATS), and the checks really saw evicted keys */
    CU_ASSERT(figure(out, "evictions: server counted ") > 0);
    CU_ASSERT(figure(out, "the checks found ") > 0);
    CU_ASSERT(figure(out, "ops acknowledged ") > 1000);
    free(out);
}

static void test_torture_full_store_refused_mset_changes_nothing(void)
{
    char *out = pressure_run("none", "kkks");
    const char *p = strstr(out, "MSET: ");

    /* a store that is full most of the time refuses MSETs: each was checked, none changed */
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT(figure(p, "); ") > 0);
    CU_ASSERT_EQUAL(figure(p, "keys they changed "), 0);
    CU_ASSERT(figure(out, "refused (full) ") > 0);
    free(out);
}

/* A one-cycle run with --inject; must fail, and say why. */
static char *inject_run(const char *eviction, const char *what)
{
    const char *const args[] = {
        "--eviction", eviction,    "--pressure", "--cycles", "1",  "--seconds", "0.5", "--writers",
        "2",          "--prefill", "0",          "--memory", "8m", "--inject",  what,  NULL};
    char *out;
    int rc = run_torture(args, &out);

    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "RESULT: FAIL"));
    return out;
}

static void test_torture_lru_check_catches_injected_stale(void)
{
    /* under LRU a DEL would pass for an eviction: loss rolls the key back instead */
    char *out = inject_run("lru", "loss");

    CU_ASSERT_PTR_NOT_NULL(strstr(out, "injected a stale value"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, ", lost 0, stale 1, torn 0, split MSETs 0,"));
    free(out);
}

static void test_torture_lru_check_catches_injected_tear(void)
{
    char *out = inject_run("lru", "tear");

    CU_ASSERT_PTR_NOT_NULL(strstr(out, "injected a torn value"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, ", lost 0, stale 0, torn 1, split MSETs 0,"));
    free(out);
}

static void test_torture_lru_check_catches_keys_vanished_without_eviction(void)
{
    /* a 32m store with no --pressure evicts nothing: 9 absent keys cannot be evictions */
    const char *const args[] = {"--eviction", "lru",      "--cycles", "1",         "--seconds",
                                "0.3",        "--memory", "32m",      "--writers", "2",
                                "--prefill",  "0",        "--inject", "vanish",    NULL};
    char *out;
    int rc = run_torture(args, &out);

    CU_ASSERT_EQUAL(rc, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "injected 9 vanished keys"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "some vanished without eviction"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, ", lost 1, stale 0, torn 0, split MSETs 0,"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "RESULT: FAIL"));
    free(out);
}

static void test_torture_check_catches_split_mset(void)
{
    static const char *const ev[] = {"none", "lru"};

    for (unsigned i = 0; i < 2; i++) {
        char *out = inject_run(ev[i], "split-mset");

        CU_ASSERT_PTR_NOT_NULL(strstr(out, "injected a split MSET"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, "SPLIT MSET of writer 0"));
        CU_ASSERT_PTR_NOT_NULL(strstr(out, ", lost 0, stale 0, torn 0, split MSETs 1,"));
        free(out);
    }
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("torture", NULL, NULL);
    CU_add_test(s, "test_torture_short_run_loses_nothing", test_torture_short_run_loses_nothing);
    CU_add_test(s, "test_torture_check_catches_injected_loss",
                test_torture_check_catches_injected_loss);
    CU_add_test(s, "test_torture_check_catches_injected_tear",
                test_torture_check_catches_injected_tear);
    CU_add_test(s, "test_torture_lru_with_page_moves_loses_nothing",
                test_torture_lru_with_page_moves_loses_nothing);
    CU_add_test(s, "test_torture_full_store_refused_mset_changes_nothing",
                test_torture_full_store_refused_mset_changes_nothing);
    CU_add_test(s, "test_torture_lru_check_catches_injected_stale",
                test_torture_lru_check_catches_injected_stale);
    CU_add_test(s, "test_torture_lru_check_catches_injected_tear",
                test_torture_lru_check_catches_injected_tear);
    CU_add_test(s, "test_torture_lru_check_catches_keys_vanished_without_eviction",
                test_torture_lru_check_catches_keys_vanished_without_eviction);
    CU_add_test(s, "test_torture_check_catches_split_mset", test_torture_check_catches_split_mset);
    return kv_test_run_all();
}
