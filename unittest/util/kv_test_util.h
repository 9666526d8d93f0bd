/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/util/kv_test_util.h -- helpers shared by the test suites:
 * running a CUnit suite, and starting/stopping a real libevkv server on a
 * free loopback port with a private shm segment. */
#ifndef KV_TEST_UTIL_H
#define KV_TEST_UTIL_H

#include <CUnit/CUnit.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Runs every registered suite verbosely; returns the process exit code
 * (non-zero when any test failed or the registry could not be built). */
int kv_test_run_all(void);

struct kv_test_case {
    const char *name;
    CU_TestFunc fn;
};

/* Builds the registry with one suite of n tests and runs it, as
 * kv_test_run_all(); the usual main() of a suite. */
int kv_test_run_suite(const char *suite, CU_InitializeFunc init, CU_CleanupFunc clean,
                      const struct kv_test_case *tests, size_t n);

struct kv_test_server {
    pid_t pid;
    uint16_t port;
    char shm_name[64];
    char log_path[128];   /* the server's stdout+stderr */
    char unix_path[108];  /* set: started with --unix PATH, readiness checked there */
};

/* Finds a free loopback port. */
uint16_t kv_test_free_port(void);

/* A blocking TCP connection to 127.0.0.1:port, or -1. */
int kv_test_connect(uint16_t port);
/* Starts ./bin/libevkv (path from $LIBEVKV_BIN, else bin/libevkv next to the
 * test binary) with extra args (NULL-terminated) and waits until it answers
 * PING (on s->unix_path when set, which is passed as --unix). Registers it so that it is killed even if the test aborts. */
int kv_test_server_start(struct kv_test_server *s, const char *const *extra_args);
/* SIGTERM, waits (up to 10 s, then SIGKILL), removes the segment. Returns
 * the exit status (exit code, or 128+signal). */
int kv_test_server_stop(struct kv_test_server *s);
/* Sends a signal (e.g. SIGKILL) and reaps; the segment is kept. */
int kv_test_server_kill(struct kv_test_server *s, int sig);
/* The path of program name in the directory of the test binary (bin/). */
void kv_test_bin_path(const char *name, char *buf, size_t cap);
/* Runs argv (argv[0] a path) with stdout+stderr into out_path (may be NULL:
 * /dev/null) and stdin from /dev/null; waits up to timeout_ms, then
 * SIGKILL. Returns the exit code, or 128+signal, or -1. */
int kv_test_run(const char *const *argv, const char *out_path, int timeout_ms);
/* The whole file into a malloc'd NUL-terminated string (caller frees). */
char *kv_test_slurp(const char *path);
/* Reads the whole log into a malloc'd string (caller frees). */
char *kv_test_server_log(const struct kv_test_server *s);

#endif
