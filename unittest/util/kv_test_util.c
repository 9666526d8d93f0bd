/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/util/kv_test_util.c -- see kv_test_util.h. */
#include "kv_test_util.h"

#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kv_client.h"

#define MAX_SERVERS 16

static pid_t live[MAX_SERVERS];
static int cleanup_installed;

static void kill_all(void)
{
    for (int i = 0; i < MAX_SERVERS; i++)
        if (live[i] > 0) {
            kill(live[i], SIGKILL);
            waitpid(live[i], NULL, 0);
            live[i] = 0;
        }
}

static void on_fatal(int sig)
{
    kill_all();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void track(pid_t pid, int add)
{
    for (int i = 0; i < MAX_SERVERS; i++)
        if (add ? live[i] == 0 : live[i] == pid) {
            live[i] = add ? pid : 0;
            return;
        }
}

int kv_test_run_all(void)
{
    unsigned failed;

    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failed = CU_get_number_of_tests_failed() + CU_get_number_of_failures();
    if (CU_get_number_of_tests_run() == 0)
        failed = 1;
    CU_cleanup_registry();
    return failed ? 1 : CU_get_error();
}

int kv_test_run_suite(const char *name, CU_InitializeFunc init, CU_CleanupFunc clean,
                      const struct kv_test_case *tests, size_t n)
{
    CU_pSuite suite;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    suite = CU_add_suite(name, init, clean);
    if (!suite)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (!CU_add_test(suite, tests[i].name, tests[i].fn))
            return 1;
    return kv_test_run_all();
}

uint16_t kv_test_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    uint16_t port = 0;

    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

void kv_test_bin_path(const char *name, char *buf, size_t cap)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

    if (n <= 0) {
        snprintf(buf, cap, "bin/%s", name);
        return;
    }
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    snprintf(buf, cap, "%s/%s", self, name);
}

static void server_path(char *buf, size_t cap)
{
    const char *env = getenv("LIBEVKV_BIN");

    if (env) {
        snprintf(buf, cap, "%s", env);
        return;
    }
    kv_test_bin_path("libevkv", buf, cap);
}

int kv_test_run(const char *const *argv, const char *out_path, int timeout_ms)
{
    pid_t pid = fork();
    int status = 0;

    if (pid < 0)
        return -1;
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int fd = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600);

        if (in >= 0)
            dup2(in, 0);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    for (int waited = 0;; waited += 10) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid)
            break;
        if (r < 0)
            return -1;
        if (waited >= timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        usleep(10000);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

char *kv_test_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)(n < 0 ? 0 : n) + 1);
    if (buf) {
        n = (long)fread(buf, 1, (size_t)(n < 0 ? 0 : n), f);
        buf[n] = '\0';
    }
    fclose(f);
    return buf;
}

int kv_test_server_start(struct kv_test_server *s, const char *const *extra)
{
    static int seq;
    char path[PATH_MAX], port[8];
    const char *argv[64];
    int argc = 0, fd;

    if (!cleanup_installed) {
        atexit(kill_all);
        signal(SIGABRT, on_fatal);
        signal(SIGSEGV, on_fatal);
        signal(SIGINT, on_fatal);
        signal(SIGTERM, on_fatal);
        cleanup_installed = 1;
    }
    if (s->port == 0)
        s->port = kv_test_free_port();
    if (s->shm_name[0] == '\0')
        snprintf(s->shm_name, sizeof(s->shm_name), "/libevkv-test-%d-%d", (int)getpid(), seq);
    snprintf(s->log_path, sizeof(s->log_path), "/tmp/libevkv-test-%d-%d.log", (int)getpid(),
             seq++);
    server_path(path, sizeof(path));
    snprintf(port, sizeof(port), "%u", s->port);
    argv[argc++] = path;
    argv[argc++] = "--port";
    argv[argc++] = port;
    argv[argc++] = "--shm-name";
    argv[argc++] = s->shm_name;
    argv[argc++] = "--memory";
    argv[argc++] = "32m";
    if (s->unix_path[0]) {
        argv[argc++] = "--unix";
        argv[argc++] = s->unix_path;
    }
    for (int i = 0; extra && extra[i] && argc < 62; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;

    s->pid = fork();
    if (s->pid < 0)
        return -1;
    if (s->pid == 0) {
        /* truncated: a file of the same name may be left by an earlier run
         * whose pid was the same (pids are reused), and its lines are not ours */
        fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(path, (char *const *)argv);
        _exit(127);
    }
    track(s->pid, 1);
    /* ready when it answers PING; give up after 10 s or if it died */
    for (int i = 0; i < 1000; i++) {
        struct kv_client *c;
        int status;

        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            track(s->pid, 0);
            s->pid = 0;
            return -1;
        }
        if ((s->unix_path[0] ? kv_client_connect_unix(s->unix_path, 1000, &c)
                             : kv_client_connect("127.0.0.1", s->port, 1000, &c)) == 0) {
            int rc = kv_client_ping(c, "ready", 5);

            kv_client_close(c);
            if (rc == 0)
                return 0;
        }
        usleep(10000);
    }
    kv_test_server_kill(s, SIGKILL);
    return -1;
}

static int reap(struct kv_test_server *s, int timeout_ms)
{
    int status = 0;

    for (int waited = 0; waited < timeout_ms; waited += 10) {
        pid_t r = waitpid(s->pid, &status, WNOHANG);

        if (r == s->pid)
            goto done;
        usleep(10000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
done:
    track(s->pid, 0);
    s->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int kv_test_server_kill(struct kv_test_server *s, int sig)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, sig);
    return reap(s, 10000);
}

int kv_test_server_stop(struct kv_test_server *s)
{
    int rc = kv_test_server_kill(s, SIGTERM);

    shm_unlink(s->shm_name);
    return rc;
}

char *kv_test_server_log(const struct kv_test_server *s)
{
    FILE *f = fopen(s->log_path, "r");
    char *buf;
    long n;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf) {
        n = (long)fread(buf, 1, (size_t)n, f);
        buf[n] = '\0';
    }
    fclose(f);
    return buf;
}

int kv_test_connect(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}
