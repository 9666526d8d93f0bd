/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_kvclient.c -- kvclient, the command-line tool, end to end:
 * every command run as a subprocess against a real server, its output and
 * exit code checked (0 OK, 1 NOT_FOUND / false, 2 other errors), a value
 * read from stdin, -a with a password, --help. The server is stopped at
 * the end and its exit table must read 0. */
#include <CUnit/CUnit.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv_test_util.h"

static struct kv_test_server srv;
static char kvclient[PATH_MAX];
static char out[65536];

static int suite_init(void)
{
    static const char *const args[] = {"--requirepass", "pw", NULL};
    ssize_t n = readlink("/proc/self/exe", kvclient, sizeof(kvclient) - 16);

    if (n <= 0)
        return -1;
    kvclient[n] = '\0';
    strcpy(strrchr(kvclient, '/') + 1, "kvclient");
    memset(&srv, 0, sizeof(srv));
    return kv_test_server_start(&srv, args) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    if (srv.pid > 0)
        kv_test_server_stop(&srv);
    return 0;
}

/* Runs "kvclient -p PORT -a pw ARGS" through sh, stdout into out[];
 * returns the exit code. */
static int run(const char *args)
{
    char cmd[4096];
    FILE *p;
    size_t n;
    int st;

    snprintf(cmd, sizeof(cmd), "%s -p %u -a pw %s 2>/dev/null", kvclient, srv.port, args);
    p = popen(cmd, "r");
    CU_ASSERT_FATAL(p != NULL);
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void test_kvclient_key_commands(void)
{
    CU_ASSERT_EQUAL(run("set k1 hello"), 0);
    CU_ASSERT(atoll(out) > 0); /* the version */
    CU_ASSERT_EQUAL(run("get k1"), 0);
    CU_ASSERT_STRING_EQUAL(out, "hello"); /* raw bytes, as stored */
    CU_ASSERT_EQUAL(run("get nosuch"), 1);
    CU_ASSERT_EQUAL(run("exists k1"), 0);
    CU_ASSERT_STRING_EQUAL(out, "1\n");
    CU_ASSERT_EQUAL(run("exists nosuch"), 1);
    CU_ASSERT_STRING_EQUAL(out, "0\n");
    CU_ASSERT_EQUAL(run("set k1 again --nx"), 1); /* condition false, not an error */ /* EXISTS: not stored */
    CU_ASSERT_EQUAL(run("set nosuch v --xx"), 1);
    CU_ASSERT_EQUAL(run("incr n 5"), 0);
    CU_ASSERT_STRING_EQUAL(out, "5\n");
    CU_ASSERT_EQUAL(run("incr n -- -7"), 0);
    CU_ASSERT_STRING_EQUAL(out, "-2\n");
    CU_ASSERT_EQUAL(run("incr k1"), 2); /* not a number */
    CU_ASSERT_EQUAL(run("del k1 n nosuch"), 0);
    CU_ASSERT_STRING_EQUAL(out, "2\n");
    CU_ASSERT_EQUAL(run("get k1"), 1);
}

/* rename / copy (opcode 14) and append / getrange / setrange (opcode 32) over the binary
 * protocol: the store operations of their RESP forms. */
static void test_kvclient_rename_copy_and_string_edits(void)
{
    CU_ASSERT_EQUAL(run("set rk hello"), 0);
    CU_ASSERT_EQUAL(run("append rk ' world'"), 0);
    CU_ASSERT_STRING_EQUAL(out, "11\n");
    CU_ASSERT_EQUAL(run("getrange rk 0 4"), 0);
    CU_ASSERT_STRING_EQUAL(out, "hello");
    CU_ASSERT_EQUAL(run("getrange rk -5 -1"), 0);
    CU_ASSERT_STRING_EQUAL(out, "world");
    CU_ASSERT_EQUAL(run("setrange rk 6 WORLD"), 0);
    CU_ASSERT_STRING_EQUAL(out, "11\n");
    CU_ASSERT_EQUAL(run("setrange rk -1 x"), 2);
    CU_ASSERT_EQUAL(run("rename rk rk2"), 0);
    CU_ASSERT_STRING_EQUAL(out, "1\n");
    CU_ASSERT_EQUAL(run("get rk"), 1);
    CU_ASSERT_EQUAL(run("get rk2"), 0);
    CU_ASSERT_STRING_EQUAL(out, "hello WORLD");
    CU_ASSERT_EQUAL(run("rename nosuch x"), 1);
    CU_ASSERT_EQUAL(run("set rk3 other"), 0);
    CU_ASSERT_EQUAL(run("rename rk2 rk3 --nx"), 1);
    CU_ASSERT_STRING_EQUAL(out, "0\n");
    CU_ASSERT_EQUAL(run("copy rk2 rk3"), 1);
    CU_ASSERT_EQUAL(run("copy rk2 rk3 --replace"), 0);
    CU_ASSERT_EQUAL(run("get rk3"), 0);
    CU_ASSERT_STRING_EQUAL(out, "hello WORLD");
    CU_ASSERT_EQUAL(run("copy rk2 rk3 --db 5"), 0); /* another database: not seen in 0 */
    CU_ASSERT_EQUAL(run("copy rk2 rk3 --db 16"), 2); /* --databases 16 */
    CU_ASSERT_EQUAL(run("del rk2 rk3"), 0);
    CU_ASSERT_STRING_EQUAL(out, "2\n");
}

static void test_kvclient_multi_key_commands(void)
{
    CU_ASSERT_EQUAL(run("mset a 1 b 22 c 333"), 0);
    CU_ASSERT_EQUAL(strlen(out) > 5 && out[strlen(out) - 1] == '\n', 1);
    CU_ASSERT_EQUAL(run("mget a b zz c"), 1); /* one missing */
    /* quoted as redis-cli does: a missing key is (nil), never an empty line */
    CU_ASSERT_STRING_EQUAL(out, "\"1\"\n\"22\"\n(nil)\n\"333\"\n");
    CU_ASSERT_EQUAL(run("mget a b"), 0);
    CU_ASSERT_STRING_EQUAL(out, "\"1\"\n\"22\"\n");
    CU_ASSERT_EQUAL(run("mset x 1 y"), 2); /* a key without its value */
    CU_ASSERT_EQUAL(run("mset t1 v --ttl 60000"), 0);
    CU_ASSERT_EQUAL(run("ttl t1"), 0);
    CU_ASSERT(atoll(out) > 50000 && atoll(out) <= 60000);
}

static void test_kvclient_expiry(void)
{
    CU_ASSERT_EQUAL(run("set e v"), 0);
    CU_ASSERT_EQUAL(run("ttl e"), 0);
    CU_ASSERT_STRING_EQUAL(out, "-1\n");
    CU_ASSERT_EQUAL(run("expire e 100000"), 0);
    CU_ASSERT(atoll(out) > 90000);
    CU_ASSERT_EQUAL(run("expire e -1"), 0);
    CU_ASSERT_EQUAL(run("ttl e"), 0);
    CU_ASSERT_STRING_EQUAL(out, "-1\n");
    CU_ASSERT_EQUAL(run("expire nosuch 1000"), 1);
    CU_ASSERT_EQUAL(run("ttl nosuch"), 1);
    CU_ASSERT_EQUAL(run("set short v --ttl 50"), 0);
    usleep(150000);
    CU_ASSERT_EQUAL(run("get short"), 1);
}

static void test_kvclient_scan_stats_flush(void)
{
    CU_ASSERT_EQUAL(run("flush"), 0);
    CU_ASSERT_EQUAL(run("mset sc:1 a sc:2 b other c"), 0);
    CU_ASSERT_EQUAL(run("scan sc: --count 1"), 0);
    CU_ASSERT(strstr(out, "sc:1\n") && strstr(out, "sc:2\n") && !strstr(out, "other"));
    CU_ASSERT_EQUAL(run("scan"), 0);
    CU_ASSERT(strstr(out, "other\n") != NULL);
    CU_ASSERT_EQUAL(run("stats"), 0);
    CU_ASSERT(strstr(out, "keys 3\n") != NULL);
    CU_ASSERT(strstr(out, "client_memory_bytes ") != NULL);
    CU_ASSERT_EQUAL(run("stats --text"), 0);
    CU_ASSERT(strstr(out, "TOTAL") != NULL);
    CU_ASSERT_EQUAL(run("flush"), 0);
    CU_ASSERT_STRING_EQUAL(out, "3\n");
}

static void test_kvclient_stdin_value_and_ping(void)
{
    char cmd[256];

    CU_ASSERT_EQUAL(run("ping hi"), 0);
    CU_ASSERT(strncmp(out, "PONG hi", 7) == 0);
    snprintf(cmd, sizeof(cmd), "set bin - < /proc/self/cmdline");
    CU_ASSERT_EQUAL(run(cmd), 0);
    CU_ASSERT_EQUAL(run("exists bin"), 0);
    CU_ASSERT_EQUAL(run("set -- --dash v"), 0);
    CU_ASSERT_EQUAL(run("get -- --dash"), 0);
    CU_ASSERT_STRING_EQUAL(out, "v");
}

static void test_kvclient_errors_and_help(void)
{
    char cmd[PATH_MAX + 64];
    int st;

    CU_ASSERT_EQUAL(run("nosuchcommand"), 2);
    CU_ASSERT_EQUAL(run("get"), 2);
    snprintf(cmd, sizeof(cmd), "%s --help >/dev/null 2>&1", kvclient);
    st = system(cmd);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* a wrong password: an error, not a silent success */
    snprintf(cmd, sizeof(cmd), "%s -p %u -a wrong get k >/dev/null 2>&1", kvclient, srv.port);
    st = system(cmd);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    /* nobody listening */
    snprintf(cmd, sizeof(cmd), "%s -p 1 -t 500 ping >/dev/null 2>&1", kvclient);
    st = system(cmd);
    CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 2);
}

static void test_kvclient_exit_table_zero(void)
{
    char *log;

    CU_ASSERT_EQUAL(kv_test_server_stop(&srv), 0);
    log = kv_test_server_log(&srv);
    CU_ASSERT_FATAL(log != NULL);
    CU_ASSERT(strstr(log, "memory still held") == NULL);
    free(log);
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_kvclient_key_commands", test_kvclient_key_commands},
        {"test_kvclient_rename_copy_and_string_edits", test_kvclient_rename_copy_and_string_edits},
        {"test_kvclient_multi_key_commands", test_kvclient_multi_key_commands},
        {"test_kvclient_expiry", test_kvclient_expiry},
        {"test_kvclient_scan_stats_flush", test_kvclient_scan_stats_flush},
        {"test_kvclient_stdin_value_and_ping", test_kvclient_stdin_value_and_ping},
        {"test_kvclient_errors_and_help", test_kvclient_errors_and_help},
        {"test_kvclient_exit_table_zero", test_kvclient_exit_table_zero},
    };

    return kv_test_run_suite("kvclient", suite_init, suite_clean, tests,
                             sizeof(tests) / sizeof(tests[0]));
}
