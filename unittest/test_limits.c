/* unittest/test_limits.c -- the per-connection limits of a server under
 * hostile clients, end to end: --max-conns (BUSY, then close), a frame that
 * never completes (--frame-timeout), an idle connection (--idle-timeout),
 * the small body limit before AUTH (--max-body-noauth), and a client that
 * never reads its answers (--output-hard-limit). Each check ends with the
 * server still answering; the suite ends with its exit table at 0 bytes. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "kv_client.h"
#include "kv_err.h"
#include "kv_test_util.h"

static struct kv_test_server srv;

static int suite_init(void)
{
    static const char *const args[] = {
        "--max-conns", "4", "--idle-timeout", "2", "--frame-timeout", "1",
        "--requirepass", "pw", "--max-body-noauth", "1k", "--max-output", "64k",
        "--output-hard-limit", "64k", NULL};

    return kv_test_server_start(&srv, args) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    if (srv.pid > 0)
        kv_test_server_stop(&srv);
    return 0;
}

static struct kv_client *conn(int auth)
{
    struct kv_client *c = NULL;

    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", srv.port, 5000, &c) == 0);
    if (auth)
        CU_ASSERT_FATAL(kv_client_auth(c, "pw", 2) == 0);
    return c;
}

static void assert_alive(void)
{
    struct kv_client *c = conn(0);

    CU_ASSERT_EQUAL(kv_client_ping(c, "alive", 5), 0);
    kv_client_close(c);
}

static void test_limits_max_conns_answers_busy_then_closes(void)
{
    struct kv_client *c[4], *extra;
    struct kv_response r;

    /* the server is otherwise idle: 4 connections fill --max-conns */
    for (int i = 0; i < 4; i++) {
        c[i] = conn(0);
        CU_ASSERT_EQUAL(kv_client_ping(c[i], "x", 1), 0);
    }
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", srv.port, 5000, &extra) == 0);
    CU_ASSERT_EQUAL_FATAL(kv_client_recv(extra, &r), 0);
    CU_ASSERT_EQUAL(r.status, KV_ST_BUSY);
    CU_ASSERT_EQUAL(kv_client_recv(extra, &r), KV_ECLOSED);
    kv_client_close(extra);
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL(kv_client_ping(c[i], "y", 1), 0); /* the others are unaffected */
        kv_client_close(c[i]);
    }
    usleep(100000); /* the server notices the closes */
    assert_alive();
}

static void test_limits_unfinished_frame_is_dropped(void)
{
    struct kv_client *slow = conn(0), *other = conn(0);
    struct kv_frame f = {.version = 1, .opcode = 0, .request_id = 5, .body_len = 100};
    uint8_t hdr[KV_FRAME_HDR];
    struct kv_response r;

    kv_frame_encode_header(&f, hdr);
    CU_ASSERT_EQUAL_FATAL(kv_client_send_raw(slow, hdr, 10), 0); /* then nothing more */
    sleep(1);
    CU_ASSERT_EQUAL(kv_client_ping(other, "meanwhile", 9), 0);
    /* the deadline is 1 s, checked once a second: closed within 3 s */
    CU_ASSERT_EQUAL(kv_client_recv(slow, &r), KV_ECLOSED);
    kv_client_close(slow);
    kv_client_close(other);
    assert_alive();
}

static void test_limits_idle_connection_is_closed(void)
{
    struct kv_client *idle = conn(0);
    struct kv_response r;

    CU_ASSERT_EQUAL(kv_client_ping(idle, "once", 4), 0);
    CU_ASSERT_EQUAL(kv_client_recv(idle, &r), KV_ECLOSED); /* within the 5 s client timeout */
    kv_client_close(idle);
    assert_alive();
}

static void test_limits_small_body_before_auth(void)
{
    static uint8_t body[2048];
    struct kv_client *c = conn(0);
    struct kv_response r;

    CU_ASSERT_EQUAL(kv_client_ping(c, body, 1000), 0); /* PING is allowed before AUTH */
    CU_ASSERT_EQUAL(kv_client_call(c, 0, body, sizeof(body), &r), KV_ESTATUS);
    CU_ASSERT_EQUAL(r.status, KV_ST_TOO_LARGE);
    CU_ASSERT_EQUAL(kv_client_recv(c, &r), KV_ECLOSED);
    kv_client_close(c);
    c = conn(1); /* after AUTH the normal --max-body applies */
    CU_ASSERT_EQUAL(kv_client_ping(c, body, sizeof(body)), 0);
    kv_client_close(c);
}

/* Far more answers than the kernel's socket buffers hold (a few MiB on
 * loopback), never read: once they are full the server's pending output
 * passes --output-hard-limit and it drops the connection. */
static void test_limits_client_that_never_reads_is_dropped(void)
{
    enum { N = 1024 }; /* 16 MiB of answers */
    static uint8_t body[16384];
    struct kv_client *c = conn(1);
    struct kv_response r;
    int answered = 0, rc = 0;

    for (uint64_t i = 0; i < N && rc == 0; i++) {
        rc = kv_client_queue(c, 0, i, body, sizeof(body));
        if (rc == 0)
            rc = kv_client_flush(c); /* fails (closed, or times out) once dropped */
    }
    while ((rc = kv_client_recv(c, &r)) == 0)
        answered++;
    CU_ASSERT_EQUAL(rc, KV_ECLOSED);
    CU_ASSERT(answered < N);
    kv_client_close(c);
    assert_alive();
}

static void test_limits_exit_table_zero(void)
{
    char *log;

    CU_ASSERT_EQUAL(kv_test_server_stop(&srv), 0);
    log = kv_test_server_log(&srv);
    CU_ASSERT_FATAL(log != NULL);
    CU_ASSERT(strstr(log, "memory still held") == NULL);
    CU_ASSERT(strstr(log, "connections_rejected 1") != NULL);
    CU_ASSERT(strstr(log, "output_limit_closes 1") != NULL);
    free(log);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("limits", suite_init, suite_clean);
    CU_add_test(s, "test_limits_max_conns_answers_busy_then_closes",
                test_limits_max_conns_answers_busy_then_closes);
    CU_add_test(s, "test_limits_unfinished_frame_is_dropped",
                test_limits_unfinished_frame_is_dropped);
    CU_add_test(s, "test_limits_idle_connection_is_closed", test_limits_idle_connection_is_closed);
    CU_add_test(s, "test_limits_small_body_before_auth", test_limits_small_body_before_auth);
    CU_add_test(s, "test_limits_client_that_never_reads_is_dropped",
                test_limits_client_that_never_reads_is_dropped);
    CU_add_test(s, "test_limits_exit_table_zero", test_limits_exit_table_zero);
    return kv_test_run_all();
}
