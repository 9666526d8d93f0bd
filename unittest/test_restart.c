/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_restart.c -- data survives the server: SIGTERM then a new
 * server on the same segment serves every key; SIGKILL then a new server
 * serves every acknowledged write; a second server on a segment that is in
 * use refuses to start and names the owner. Real processes, loopback. */
#include <CUnit/CUnit.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kv.pb-c.h"
#include "kv_client.h"
#include "kv_err.h"
#include "kv_test_util.h"

enum { NKEYS = 2000 };

static int put(struct kv_client *c, const char *k, const char *v)
{
    Kv__SetRequest m = KV__SET_REQUEST__INIT;
    uint8_t buf[4096];
    struct kv_response r;

    m.key.data = (uint8_t *)k;
    m.key.len = strlen(k);
    m.value.data = (uint8_t *)v;
    m.value.len = strlen(v);
    return kv_client_call(c, 2, buf, kv__set_request__pack(&m, buf), &r);
}

/* 0 when k holds exactly v. */
static int check(struct kv_client *c, const char *k, const char *v)
{
    Kv__GetRequest m = KV__GET_REQUEST__INIT;
    uint8_t buf[4096];
    struct kv_response r;
    int rc;

    m.key.data = (uint8_t *)k;
    m.key.len = strlen(k);
    rc = kv_client_call(c, 1, buf, kv__get_request__pack(&m, buf), &r);
    if (rc != 0)
        return rc;
    Kv__GetResponse *g = kv__get_response__unpack(NULL, r.body_len, r.body);
    rc = g && g->value.len == strlen(v) && memcmp(g->value.data, v, g->value.len) == 0 ? 0 : -1;
    kv__get_response__free_unpacked(g, NULL);
    return rc;
}

static void fill(struct kv_test_server *s, int round)
{
    struct kv_client *c;
    char k[64], v[128];

    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", s->port, 5000, &c) == 0);
    for (int i = 0; i < NKEYS; i++) {
        snprintf(k, sizeof(k), "restart:%d", i);
        snprintf(v, sizeof(v), "value-%d-round-%d-%0*d", i, round, i % 50, 0);
        CU_ASSERT_EQUAL(put(c, k, v), 0);
    }
    kv_client_close(c);
}

static int verify(struct kv_test_server *s, int round)
{
    struct kv_client *c;
    char k[64], v[128];
    int bad = 0;

    if (kv_client_connect("127.0.0.1", s->port, 5000, &c) != 0)
        return -1;
    for (int i = 0; i < NKEYS; i++) {
        snprintf(k, sizeof(k), "restart:%d", i);
        snprintf(v, sizeof(v), "value-%d-round-%d-%0*d", i, round, i % 50, 0);
        if (check(c, k, v) != 0)
            bad++;
    }
    kv_client_close(c);
    return bad;
}

static void restart_case(int sig)
{
    struct kv_test_server s = {0};
    uint16_t port;

    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    fill(&s, 1);
    port = s.port;
    if (sig == SIGTERM) {
        CU_ASSERT_EQUAL(kv_test_server_kill(&s, SIGTERM), 0); /* clean exit, table 0 */
    } else {
        kv_test_server_kill(&s, SIGKILL);
    }
    s.port = port; /* same port, same segment name */
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    CU_ASSERT_EQUAL(verify(&s, 1), 0);
    fill(&s, 2); /* and it keeps working */
    CU_ASSERT_EQUAL(verify(&s, 2), 0);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

static void test_restart_after_sigterm_serves_every_key(void)
{
    restart_case(SIGTERM);
}

static void test_restart_after_sigkill_serves_every_acknowledged_write(void)
{
    restart_case(SIGKILL);
}

static void test_restart_second_server_on_segment_refused(void)
{
    struct kv_test_server a = {0}, b = {0};
    char pid[32];
    char *log;

    CU_ASSERT_FATAL(kv_test_server_start(&a, NULL) == 0);
    memcpy(b.shm_name, a.shm_name, sizeof(b.shm_name));
    CU_ASSERT_NOT_EQUAL(kv_test_server_start(&b, NULL), 0); /* exits: segment owned */
    log = kv_test_server_log(&b);
    CU_ASSERT_FATAL(log != NULL);
    snprintf(pid, sizeof(pid), "%d", (int)a.pid);
    CU_ASSERT(strstr(log, pid) != NULL); /* names the owner */
    free(log);
    CU_ASSERT_EQUAL(kv_test_server_stop(&a), 0);
}

/* --huge-pages: whether /dev/shm gives huge pages depends on the machine,
 * so the default start tells (its info line), and require must agree with
 * it: refuse, say why and leave no segment behind when there are none;
 * start when there are. off never asks and never says. */
static void test_restart_huge_pages_option(void)
{
    const char *req[] = {"--huge-pages", "require", NULL};
    const char *off[] = {"--huge-pages", "off", NULL};
    struct kv_test_server a = {0}, b = {0}, c = {0};
    char path[128];
    char *log;
    int none;

    CU_ASSERT_FATAL(kv_test_server_start(&a, NULL) == 0);
    log = kv_test_server_log(&a);
    CU_ASSERT_FATAL(log != NULL);
    none = strstr(log, "not on huge pages") != NULL;
    free(log);
    CU_ASSERT_EQUAL(kv_test_server_stop(&a), 0);

    if (none) {
        CU_ASSERT_NOT_EQUAL(kv_test_server_start(&b, req), 0);
        log = kv_test_server_log(&b);
        CU_ASSERT_FATAL(log != NULL);
        CU_ASSERT(strstr(log, "--huge-pages require") != NULL);
        free(log);
        snprintf(path, sizeof(path), "/dev/shm%s", b.shm_name);
        CU_ASSERT_EQUAL(access(path, F_OK), -1); /* the segment it created was removed */

        /* a segment that existed before is kept, even one holding no keys */
        struct kv_test_server d = {0};
        uint16_t port;

        CU_ASSERT_FATAL(kv_test_server_start(&d, NULL) == 0); /* created, left empty */
        port = d.port;
        CU_ASSERT_EQUAL(kv_test_server_kill(&d, SIGTERM), 0);
        d.port = port;
        CU_ASSERT_NOT_EQUAL(kv_test_server_start(&d, req), 0);
        snprintf(path, sizeof(path), "/dev/shm%s", d.shm_name);
        CU_ASSERT_EQUAL(access(path, F_OK), 0);
        d.port = port;
        CU_ASSERT_FATAL(kv_test_server_start(&d, NULL) == 0); /* and it still opens */
        fill(&d, 1);
        CU_ASSERT_EQUAL(verify(&d, 1), 0);
        CU_ASSERT_EQUAL(kv_test_server_stop(&d), 0);
    } else {
        CU_ASSERT_EQUAL_FATAL(kv_test_server_start(&b, req), 0);
        CU_ASSERT_EQUAL(kv_test_server_stop(&b), 0);
    }

    CU_ASSERT_EQUAL_FATAL(kv_test_server_start(&c, off), 0);
    log = kv_test_server_log(&c);
    CU_ASSERT_FATAL(log != NULL);
    CU_ASSERT(strstr(log, "not on huge pages") == NULL);
    free(log);
    CU_ASSERT_EQUAL(kv_test_server_stop(&c), 0);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("restart", NULL, NULL);
    CU_add_test(s, "test_restart_after_sigterm_serves_every_key",
                test_restart_after_sigterm_serves_every_key);
    CU_add_test(s, "test_restart_after_sigkill_serves_every_acknowledged_write",
                test_restart_after_sigkill_serves_every_acknowledged_write);
    CU_add_test(s, "test_restart_second_server_on_segment_refused",
                test_restart_second_server_on_segment_refused);
    CU_add_test(s, "test_restart_huge_pages_option", test_restart_huge_pages_option);
    return kv_test_run_all();
}
