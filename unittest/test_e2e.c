/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_e2e.c -- end-to-end suite of the RPC core: starts the real
 * libevkv on a free loopback port with a private segment, speaks raw
 * frames, and checks every error row of PROTOCOL.md that applies to the
 * framework: the status, the connection afterwards, other connections
 * unaffected, and 0 bytes held in the exit table. The server is always
 * stopped (suite cleanup, atexit and fatal-signal hooks in kv_test_util). */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

#include "frame.h"
#include "kv_client.h"
#include "kv_err.h"
#include "kv_test_util.h"

static struct kv_test_server srv;

static int suite_init(void)
{
    /* two workers: this suite covers the thread hand-offs, whatever the
     * default for this machine's core count */
    static const char *const args[] = {"--max-body", "1m", "--max-output", "256k",
                                       "--log-level", "debug", "--workers", "2", NULL};

    memset(&srv, 0, sizeof(srv));
    return kv_test_server_start(&srv, args) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    if (srv.pid > 0)
        kv_test_server_stop(&srv);
    return 0;
}

static struct kv_client *connect_srv(void)
{
    struct kv_client *c = NULL;

    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", srv.port, 5000, &c) == 0);
    return c;
}

/* A valid request frame with a body, to be corrupted by the caller. */
static size_t make_frame(uint8_t *out, uint16_t opcode, uint64_t id, const char *body)
{
    struct kv_frame f = {.version = 1, .opcode = opcode, .request_id = id,
                         .body_len = (uint32_t)strlen(body)};

    return (size_t)kv_frame_encode(&f, (const uint8_t *)body, out, 256);
}

/* Re-computes the crc after a header change, so only the intended field is bad. */
static void fix_crc(uint8_t *frame, size_t len)
{
    uint32_t body_len = kv_get_le32(frame + 16);

    kv_put_le32(frame + len - 4, kv_frame_crc(frame, frame + KV_FRAME_HDR, body_len));
}

static void assert_alive(void)
{
    struct kv_client *c = connect_srv();

    CU_ASSERT_EQUAL(kv_client_ping(c, "alive", 5), 0);
    kv_client_close(c);
}

/* Sends frame, expects one response with status and id, then EOF. */
static void expect_error_then_close(const uint8_t *frame, size_t len, uint16_t status,
                                    uint64_t id)
{
    struct kv_client *c = connect_srv(), *other = connect_srv();
    struct kv_response r;

    /* another connection with a request in progress must be unaffected */
    CU_ASSERT_EQUAL(kv_client_ping(other, "before", 6), 0);
    CU_ASSERT_EQUAL_FATAL(kv_client_send_raw(c, frame, len), 0);
    CU_ASSERT_EQUAL_FATAL(kv_client_recv(c, &r), 0);
    CU_ASSERT_EQUAL(r.status, status);
    CU_ASSERT_EQUAL(r.request_id, id);
    CU_ASSERT_EQUAL(kv_client_recv(c, &r), KV_ECLOSED);
    CU_ASSERT_EQUAL(kv_client_ping(other, "after", 5), 0);
    kv_client_close(c);
    kv_client_close(other);
}

static void test_e2e_ping_echoes_bodies_of_every_size(void)
{
    static const size_t sizes[] = {0, 1, 100, 4096, 16384, 16385, 65536, 1000000};
    struct kv_client *c = connect_srv();
    uint8_t *buf = malloc(1000000);

    CU_ASSERT_FATAL(buf != NULL);
    for (size_t i = 0; i < 1000000; i++)
        buf[i] = (uint8_t)(i * 7 + 3);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        CU_ASSERT_EQUAL(kv_client_ping(c, buf, sizes[i]), 0);
    free(buf);
    kv_client_close(c);
}

static void test_e2e_pipelined_requests_all_answered_by_id(void)
{
    enum { N = 5000 };
    struct kv_client *c = connect_srv();
    static uint8_t seen[N];
    struct kv_response r;
    char body[32];

    memset(seen, 0, sizeof(seen));
    for (uint64_t i = 0; i < N; i++) {
        int n = snprintf(body, sizeof(body), "req-%llu", (unsigned long long)i);

        CU_ASSERT_EQUAL_FATAL(kv_client_queue(c, 0, i, body, (size_t)n), 0);
    }
    CU_ASSERT_EQUAL_FATAL(kv_client_flush(c), 0);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL_FATAL(kv_client_recv(c, &r), 0);
        CU_ASSERT_EQUAL(r.status, KV_ST_OK);
        CU_ASSERT_FATAL(r.request_id < N);
        int n = snprintf(body, sizeof(body), "req-%llu", (unsigned long long)r.request_id);
        CU_ASSERT(r.body_len == (uint32_t)n && memcmp(r.body, body, (size_t)n) == 0);
        CU_ASSERT_EQUAL(seen[r.request_id], 0);
        seen[r.request_id] = 1;
    }
    kv_client_close(c);
}

static void test_e2e_frame_split_into_single_bytes(void)
{
    struct kv_client *c = connect_srv();
    uint8_t frame[256];
    size_t len = make_frame(frame, 0, 77, "split");
    struct kv_response r;

    for (size_t i = 0; i < len; i++) {
        CU_ASSERT_EQUAL_FATAL(kv_client_send_raw(c, frame + i, 1), 0);
        usleep(1000);
    }
    CU_ASSERT_EQUAL_FATAL(kv_client_recv(c, &r), 0);
    CU_ASSERT_EQUAL(r.request_id, 77);
    CU_ASSERT(r.body_len == 5 && memcmp(r.body, "split", 5) == 0);
    kv_client_close(c);
}

static void test_e2e_unknown_opcode_keeps_connection(void)
{
    struct kv_client *c = connect_srv();
    struct kv_response r;

    CU_ASSERT_EQUAL(kv_client_call(c, 0x7fff, "x", 1, &r), KV_ESTATUS);
    CU_ASSERT_EQUAL(r.status, KV_ST_UNKNOWN_OPCODE);
    CU_ASSERT_EQUAL(r.opcode, 0x7fff);
    CU_ASSERT_EQUAL(kv_client_ping(c, "still", 5), 0);
    kv_client_close(c);
}

static void test_e2e_bad_magic_closes_without_answer(void)
{
    struct kv_client *c = connect_srv();
    struct kv_response r;
    uint8_t frame[256];
    size_t len = make_frame(frame, 0, 1, "abc");

    frame[1] ^= 0xff;
    CU_ASSERT_EQUAL_FATAL(kv_client_send_raw(c, frame, len), 0);
    CU_ASSERT_EQUAL(kv_client_recv(c, &r), KV_ECLOSED);
    kv_client_close(c);
    assert_alive();
}

/* A text first byte selects RESP (see test_resp.c): an HTTP request line is
 * answered as a Redis command would be, and binary clients are unaffected. */
static void test_e2e_text_protocol_first_byte_selects_resp(void)
{
    struct kv_client *c = connect_srv();
    uint8_t buf[256];
    ssize_t n;

    CU_ASSERT_EQUAL_FATAL(kv_client_send_raw(c, "GET / HTTP/1.0\r\n\r\n", 18), 0);
    struct pollfd p = {.fd = kv_client_fd(c), .events = POLLIN};
    size_t got = 0;

    /* the client's socket is non-blocking: wait for the whole error line */
    while (got < sizeof(buf) - 1 && !memchr(buf, '\n', got) && poll(&p, 1, 2000) == 1) {
        n = recv(kv_client_fd(c), buf + got, sizeof(buf) - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    CU_ASSERT_FATAL(got > 0);
    buf[got] = '\0';
    CU_ASSERT(strncmp((char *)buf, "-ERR wrong number of arguments for 'get'", 40) == 0);
    kv_client_close(c);
    assert_alive();
}

static void test_e2e_wrong_version_bad_frame(void)
{
    uint8_t frame[256];
    size_t len = make_frame(frame, 0, 11, "abc");

    frame[4] = 2;
    fix_crc(frame, len);
    expect_error_then_close(frame, len, KV_ST_BAD_FRAME, 11);
}

static void test_e2e_reserved_flag_bad_frame(void)
{
    uint8_t frame[256];
    size_t len = make_frame(frame, 0, 12, "abc");

    frame[5] = 0x80;
    fix_crc(frame, len);
    expect_error_then_close(frame, len, KV_ST_BAD_FRAME, 12);
}

static void test_e2e_response_flag_on_request_bad_frame(void)
{
    uint8_t frame[256];
    size_t len = make_frame(frame, 0, 13, "abc");

    frame[5] = KV_FRAME_F_RESPONSE;
    fix_crc(frame, len);
    expect_error_then_close(frame, len, KV_ST_BAD_FRAME, 13);
}

static void test_e2e_reserved_field_bad_frame(void)
{
    uint8_t frame[256];
    size_t len = make_frame(frame, 0, 14, "abc");

    frame[22] = 1;
    fix_crc(frame, len);
    expect_error_then_close(frame, len, KV_ST_BAD_FRAME, 14);
}

static void test_e2e_crc_mismatch_answered_and_closed(void)
{
    uint8_t frame[256];
    size_t len = make_frame(frame, 0, 15, "abc");

    frame[KV_FRAME_HDR] ^= 0x01; /* body byte: crc no longer matches */
    expect_error_then_close(frame, len, KV_ST_CRC_MISMATCH, 15);
}

static void test_e2e_too_large_answered_from_header_alone(void)
{
    uint8_t frame[256];

    make_frame(frame, 0, 16, "abc");
    kv_put_le32(frame + 16, (1u << 20) + 1); /* --max-body 1m */
    /* only the header is sent: the answer must not wait for the body */
    expect_error_then_close(frame, KV_FRAME_HDR, KV_ST_TOO_LARGE, 16);
}

static void test_e2e_good_requests_before_bad_frame_answered(void)
{
    struct kv_client *c = connect_srv();
    uint8_t buf[1024];
    size_t len = 0;
    struct kv_response r;
    int ok = 0, bad = 0;

    for (int i = 0; i < 3; i++)
        len += make_frame(buf + len, 0, (uint64_t)i, "ok");
    size_t flen = make_frame(buf + len, 0, 99, "bad");
    buf[len + KV_FRAME_HDR] ^= 0xff;
    len += flen;
    CU_ASSERT_EQUAL_FATAL(kv_client_send_raw(c, buf, len), 0);
    for (int i = 0; i < 4; i++) {
        CU_ASSERT_EQUAL_FATAL(kv_client_recv(c, &r), 0);
        if (r.status == KV_ST_OK && r.request_id < 3)
            ok++;
        else if (r.status == KV_ST_CRC_MISMATCH && r.request_id == 99)
            bad++;
    }
    CU_ASSERT_EQUAL(ok, 3);
    CU_ASSERT_EQUAL(bad, 1);
    CU_ASSERT_EQUAL(kv_client_recv(c, &r), KV_ECLOSED);
    kv_client_close(c);
}

struct pinger {
    int failures;
    int rounds;
};

static void *pinger_main(void *arg)
{
    struct pinger *p = arg;
    struct kv_client *c;

    if (kv_client_connect("127.0.0.1", srv.port, 5000, &c) != 0) {
        p->failures++;
        return NULL;
    }
    for (int i = 0; i < p->rounds; i++)
        if (kv_client_ping(c, "concurrent", 10) != 0)
            p->failures++;
    kv_client_close(c);
    return NULL;
}

static void test_e2e_concurrent_connections_and_stats_signal(void)
{
    enum { T = 20 };
    pthread_t tids[T];
    struct pinger p[T];
    char *log;

    for (int i = 0; i < T; i++) {
        p[i].failures = 0;
        p[i].rounds = 500;
        pthread_create(&tids[i], NULL, pinger_main, &p[i]);
    }
    /* the dump is safe at any moment, under load, as often as it is sent */
    for (int i = 0; i < 5; i++) {
        kill(srv.pid, SIGRTMIN + 7);
        usleep(20000);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(tids[i], NULL);
        CU_ASSERT_EQUAL(p[i].failures, 0);
    }
    usleep(100000);
    log = kv_test_server_log(&srv);
    CU_ASSERT_FATAL(log != NULL);
    CU_ASSERT(strstr(log, "==== libevkv statistics") != NULL);
    CU_ASSERT(strstr(log, "REQUEST") != NULL);
    CU_ASSERT(strstr(log, "in flight: connections") != NULL);
    free(log);
}

/* A client that writes far more than --max-output without reading: the
 * server stops reading from it, then everything is answered once the client
 * reads. */
static void *flood_writer(void *arg)
{
    struct kv_client *c = arg;
    static uint8_t body[16384];
    int rc = 0;

    memset(body, 'f', sizeof(body));
    for (uint64_t i = 0; i < 1000 && rc == 0; i++) {
        rc = kv_client_queue(c, 0, i, body, sizeof(body));
        if (rc == 0)
            rc = kv_client_flush(c);
    }
    return (void *)(intptr_t)rc;
}

static void test_e2e_backpressure_on_client_that_does_not_read(void)
{
    struct kv_client *c = NULL;
    struct kv_response r;
    pthread_t tid;
    void *rc;
    int answered = 0;

    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", srv.port, 20000, &c) == 0);
    pthread_create(&tid, NULL, flood_writer, c);
    sleep(1); /* the writer blocks once the server stops reading */
    assert_alive(); /* other connections are served meanwhile */
    for (int i = 0; i < 1000; i++) {
        if (kv_client_recv(c, &r) != 0)
            break;
        if (r.status == KV_ST_OK && r.body_len == 16384)
            answered++;
    }
    pthread_join(tid, &rc);
    CU_ASSERT_EQUAL((intptr_t)rc, 0);
    CU_ASSERT_EQUAL(answered, 1000);
    kv_client_close(c);
}

/* A peer that only shuts down its sending side (nc -N, printf | socat)
 * still gets every answer, then EOF. */
static void test_e2e_half_close_still_answered(void)
{
    struct kv_client *c = connect_srv();
    struct kv_response r;
    int answered = 0;

    for (uint64_t i = 0; i < 10; i++)
        kv_client_queue(c, 0, i, "half", 4);
    CU_ASSERT_EQUAL_FATAL(kv_client_flush(c), 0);
    shutdown(kv_client_fd(c), SHUT_WR);
    while (kv_client_recv(c, &r) == 0)
        answered += r.status == KV_ST_OK;
    CU_ASSERT_EQUAL(answered, 10);
    kv_client_close(c);
}

static void test_e2e_peer_vanishes_with_answers_pending(void)
{
    for (int k = 0; k < 20; k++) {
        struct kv_client *c = connect_srv();

        for (uint64_t i = 0; i < 200; i++)
            kv_client_queue(c, 0, i, "gone", 4);
        kv_client_flush(c);
        kv_client_close(c); /* close without reading: answers have no peer */
    }
    assert_alive();
}

static void test_e2e_in_order_option_keeps_request_order(void)
{
    static const char *const args[] = {"--in-order", "--workers", "4", NULL};
    struct kv_test_server s = {0};
    struct kv_client *c;
    struct kv_response r;
    int in_order = 1;

    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", s.port, 5000, &c) == 0);
    for (uint64_t i = 0; i < 3000; i++)
        CU_ASSERT_EQUAL_FATAL(kv_client_queue(c, 0, i, "order", 5), 0);
    CU_ASSERT_EQUAL_FATAL(kv_client_flush(c), 0);
    for (uint64_t i = 0; i < 3000; i++) {
        CU_ASSERT_EQUAL_FATAL(kv_client_recv(c, &r), 0);
        if (r.request_id != i)
            in_order = 0;
    }
    CU_ASSERT(in_order);
    kv_client_close(c);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

/* Must run last: stops the server and checks its exit table. */
static void test_e2e_graceful_stop_exit_table_zero(void)
{
    struct kv_client *c = connect_srv();
    char *log;
    int rc;

    for (uint64_t i = 0; i < 1000; i++)
        kv_client_queue(c, 0, i, "inflight", 8);
    kv_client_flush(c);
    rc = kv_test_server_stop(&srv);
    CU_ASSERT_EQUAL(rc, 0);
    kv_client_close(c);
    log = kv_test_server_log(&srv);
    CU_ASSERT_FATAL(log != NULL);
    char *exit_table = strstr(log, "==== libevkv exit table");
    CU_ASSERT_FATAL(exit_table != NULL);
    char *total = strstr(exit_table, "\nTOTAL");
    CU_ASSERT_FATAL(total != NULL);
    long long held = -1;
    sscanf(total + 6, "%lld", &held);
    CU_ASSERT_EQUAL(held, 0);
    CU_ASSERT(strstr(log, "memory still held") == NULL);
    if (rc != 0 || held != 0)
        fprintf(stderr, "\n---- server log ----\n%s\n", log);
    free(log);
}

static void test_e2e_bad_option_exits_2(void)
{
    static const char *const cases[][3] = {
        {"--port", "abc", NULL}, {"--max-body", "12q", NULL}, {"--bogus", NULL, NULL},
        {"--workers", "-1", NULL}, {"--eviction", "fifo", NULL},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct kv_test_server s = {0};
        int rc = kv_test_server_start(&s, cases[i]);

        CU_ASSERT_NOT_EQUAL(rc, 0); /* never became ready */
        /* kv_test_server_start reaps a child that exits; run it directly to
         * read the code */
        pid_t pid = fork();
        if (pid == 0) {
            int devnull = open("/dev/null", 1);
            dup2(devnull, 2);
            char path[4096];
            ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 16);
            path[n > 0 ? n : 0] = '\0';
            strcpy(strrchr(path, '/') + 1, "libevkv");
            execl(path, path, cases[i][0], cases[i][1], (char *)NULL);
            _exit(127);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 2);
    }
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("e2e", suite_init, suite_clean);
    CU_add_test(s, "test_e2e_ping_echoes_bodies_of_every_size",
                test_e2e_ping_echoes_bodies_of_every_size);
    CU_add_test(s, "test_e2e_pipelined_requests_all_answered_by_id",
                test_e2e_pipelined_requests_all_answered_by_id);
    CU_add_test(s, "test_e2e_frame_split_into_single_bytes", test_e2e_frame_split_into_single_bytes);
    CU_add_test(s, "test_e2e_unknown_opcode_keeps_connection",
                test_e2e_unknown_opcode_keeps_connection);
    CU_add_test(s, "test_e2e_bad_magic_closes_without_answer",
                test_e2e_bad_magic_closes_without_answer);
    CU_add_test(s, "test_e2e_text_protocol_first_byte_selects_resp",
                test_e2e_text_protocol_first_byte_selects_resp);
    CU_add_test(s, "test_e2e_wrong_version_bad_frame", test_e2e_wrong_version_bad_frame);
    CU_add_test(s, "test_e2e_reserved_flag_bad_frame", test_e2e_reserved_flag_bad_frame);
    CU_add_test(s, "test_e2e_response_flag_on_request_bad_frame",
                test_e2e_response_flag_on_request_bad_frame);
    CU_add_test(s, "test_e2e_reserved_field_bad_frame", test_e2e_reserved_field_bad_frame);
    CU_add_test(s, "test_e2e_crc_mismatch_answered_and_closed",
                test_e2e_crc_mismatch_answered_and_closed);
    CU_add_test(s, "test_e2e_too_large_answered_from_header_alone",
                test_e2e_too_large_answered_from_header_alone);
    CU_add_test(s, "test_e2e_good_requests_before_bad_frame_answered",
                test_e2e_good_requests_before_bad_frame_answered);
    CU_add_test(s, "test_e2e_concurrent_connections_and_stats_signal",
                test_e2e_concurrent_connections_and_stats_signal);
    CU_add_test(s, "test_e2e_backpressure_on_client_that_does_not_read",
                test_e2e_backpressure_on_client_that_does_not_read);
    CU_add_test(s, "test_e2e_half_close_still_answered", test_e2e_half_close_still_answered);
    CU_add_test(s, "test_e2e_peer_vanishes_with_answers_pending",
                test_e2e_peer_vanishes_with_answers_pending);
    CU_add_test(s, "test_e2e_bad_option_exits_2", test_e2e_bad_option_exits_2);
    CU_add_test(s, "test_e2e_in_order_option_keeps_request_order",
                test_e2e_in_order_option_keeps_request_order);
    CU_add_test(s, "test_e2e_graceful_stop_exit_table_zero", test_e2e_graceful_stop_exit_table_zero);
    return kv_test_run_all();
}
