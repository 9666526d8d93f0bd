/* unittest/test_ops.c -- what an operator sees, end to end, with the real
 * programs: a failed start leaves nothing behind, --port 0 needs a segment
 * name. Every server started here runs on a free loopback port with a
 * private segment and is stopped by pid; every segment is removed. */
#include <CUnit/CUnit.h>
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
#include <unistd.h>

#include "kv_client.h"
#include "kv_test_util.h"

static char server_bin[PATH_MAX];
static char client_bin[PATH_MAX];
static char tmpdir[64];
static int seq;

static int suite_init(void)
{
    kv_test_bin_path("libevkv", server_bin, sizeof(server_bin));
    kv_test_bin_path("kvclient", client_bin, sizeof(client_bin));
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_ops.%d", (int)getpid());
    return mkdir(tmpdir, 0700) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A segment name private to this process and test. */
static void shm_name(char *buf, size_t cap)
{
    snprintf(buf, cap, "/libevkv-ops-%d-%d", (int)getpid(), seq++);
}

static int shm_exists(const char *name)
{
    char path[128];

    snprintf(path, sizeof(path), "/dev/shm%s", name);
    return access(path, F_OK) == 0;
}

static int file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* A socket bound and listening on a free loopback port: the port is busy. */
static int busy_port(uint16_t *port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 4) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

static void test_ops_bad_bind_leaves_no_segment(void)
{
    char name[64], port[8], out[128];
    char *text;

    shm_name(name, sizeof(name));
    snprintf(port, sizeof(port), "%u", kv_test_free_port());
    snprintf(out, sizeof(out), "%s/badbind.out", tmpdir);
    const char *argv[] = {server_bin, "--bind", "not-an-address", "--port", port,
                          "--shm-name", name, "--memory", "8m", NULL};
    CU_ASSERT_EQUAL(kv_test_run(argv, out, 10000), 1);
    CU_ASSERT_FALSE(shm_exists(name));
    text = kv_test_slurp(out);
    CU_ASSERT_FATAL(text != NULL);
    CU_ASSERT(strstr(text, "not-an-address") != NULL);
    CU_ASSERT(strstr(text, "not an IPv4 address") != NULL);
    free(text);
    shm_unlink(name);
}

static void test_ops_busy_port_leaves_no_segment_nor_file(void)
{
    char name[64], port[8], out[128], data[128];
    uint16_t p = 0;
    int fd = busy_port(&p);
    char *text;

    CU_ASSERT_FATAL(fd >= 0);
    shm_name(name, sizeof(name));
    snprintf(port, sizeof(port), "%u", p);
    snprintf(out, sizeof(out), "%s/busy.out", tmpdir);
    const char *argv[] = {server_bin, "--port", port, "--shm-name", name, "--memory", "8m",
                          NULL};
    CU_ASSERT_EQUAL(kv_test_run(argv, out, 10000), 1);
    CU_ASSERT_FALSE(shm_exists(name));
    text = kv_test_slurp(out);
    CU_ASSERT_FATAL(text != NULL);
    CU_ASSERT(strstr(text, "Address already in use") != NULL);
    free(text);

    /* the same with a data file: the file is not created */
    snprintf(data, sizeof(data), "%s/busy.data", tmpdir);
    const char *argv2[] = {server_bin, "--port", port, "--data-file", data, "--memory", "8m",
                           NULL};
    CU_ASSERT_EQUAL(kv_test_run(argv2, out, 10000), 1);
    CU_ASSERT_FALSE(file_exists(data));
    close(fd);
    shm_unlink(name);
}

static void test_ops_port0_needs_a_segment_name(void)
{
    char out[128];
    char *text;

    snprintf(out, sizeof(out), "%s/port0.out", tmpdir);
    const char *argv[] = {server_bin, "--port", "0", "--memory", "8m", NULL};
    CU_ASSERT_EQUAL(kv_test_run(argv, out, 10000), 2);
    CU_ASSERT_FALSE(shm_exists("/libevkv-0"));
    text = kv_test_slurp(out);
    CU_ASSERT_FATAL(text != NULL);
    CU_ASSERT(strstr(text, "--port 0 needs --shm-name or --data-file") != NULL);
    free(text);
}

/* With a name, --port 0 runs: the start-up line gives the port it got. */
static void test_ops_port0_with_name_runs(void)
{
    char name[64], out[128];
    struct kv_client *c;
    char *text = NULL;
    const char *at;
    pid_t pid;
    int status, port = 0;

    shm_name(name, sizeof(name));
    snprintf(out, sizeof(out), "%s/port0ok.out", tmpdir);
    pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        dup2(fd, 1);
        dup2(fd, 2);
        execl(server_bin, server_bin, "--port", "0", "--shm-name", name, "--memory", "8m",
              (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1000 && port == 0; i++) {
        usleep(10000);
        free(text);
        text = kv_test_slurp(out);
        at = text ? strstr(text, "listening on 127.0.0.1:") : NULL;
        if (at)
            port = atoi(at + strlen("listening on 127.0.0.1:"));
    }
    free(text);
    CU_ASSERT(port > 0);
    if (port > 0 && kv_client_connect("127.0.0.1", (uint16_t)port, 5000, &c) == 0) {
        CU_ASSERT_EQUAL(kv_client_ping(c, "p0", 2), 0);
        kv_client_close(c);
    } else {
        CU_FAIL("no server on the logged port");
    }
    CU_ASSERT(shm_exists(name));
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    shm_unlink(name);
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_ops_bad_bind_leaves_no_segment", test_ops_bad_bind_leaves_no_segment},
        {"test_ops_busy_port_leaves_no_segment_nor_file",
         test_ops_busy_port_leaves_no_segment_nor_file},
        {"test_ops_port0_needs_a_segment_name", test_ops_port0_needs_a_segment_name},
        {"test_ops_port0_with_name_runs", test_ops_port0_with_name_runs},
    };

    return kv_test_run_suite("ops", suite_init, suite_clean, tests,
                             sizeof(tests) / sizeof(tests[0]));
}
