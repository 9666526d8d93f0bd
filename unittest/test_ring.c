/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_ring.c -- shared-memory rings (src/io/ring.c, src/io/ring_conn.c,
 * docs/PROTOCOL.md section 5).
 *
 * The pure half: the layout and its check, wrap, full and empty, impossible indices
 * refused, frames found in place or across the wrap, and the lost-wake-up stress (two
 * threads that always park, KV_RING_STRESS=N cycles, default 200000). The end-to-end
 * half, against the real server: kvclient test over shm (every opcode, with AUTH first),
 * ATTACH refused where it must be, values larger than the rings both ways, kill -9 of one
 * attached client (the others served, its rings freed, the RING row 0 at exit), the server
 * killed under attached clients (errors within the timeout, attach again after a restart,
 * nothing acknowledged lost), a client scribbling on its rings closed alone, attached
 * clients counted against --max-conns, and 16 idle attached clients (with one that sent
 * half a frame and one that does not read its answers) costing the server under 1% of a
 * core (KV_RING_IDLE_SECS, default 3). */
#include <CUnit/CUnit.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "kv_client.h"
#include "kv_err.h"
#include "kv_test_util.h"
#include "ring.h"

static char bindir[PATH_MAX];
static int seq;

static int suite_init(void)
{
    ssize_t n = readlink("/proc/self/exe", bindir, sizeof(bindir) - 1);

    if (n <= 0)
        return -1;
    bindir[n] = '\0';
    *strrchr(bindir, '/') = '\0';
    return 0;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A fresh mapping-like buffer with both rings of cap bytes. */
static uint8_t *layout(uint32_t cap, struct kv_ring *req, struct kv_ring *resp)
{
    size_t size = kv_ring_map_size(cap, cap);
    uint8_t *map = aligned_alloc(4096, size);

    memset(map, 0, size);
    kv_ring_layout_init(map, size, cap, cap);
    kv_ring_views(map, req, resp);
    return map;
}

/* ---- pure ----------------------------------------------------------------------- */
static void test_ring_layout_checked(void)
{
    struct kv_ring a, b;
    uint8_t *map = layout(8192, &a, &b);
    size_t size = kv_ring_map_size(8192, 8192);
    uint32_t rq = 0, rs = 0;

    CU_ASSERT_EQUAL(kv_ring_layout_check(map, size, &rq, &rs), 0);
    CU_ASSERT_EQUAL(rq, 8192);
    CU_ASSERT_EQUAL(rs, 8192);
    CU_ASSERT_EQUAL(a.data, map + KV_RING_HDR);
    CU_ASSERT_EQUAL(b.data, map + KV_RING_HDR + 8192);
    CU_ASSERT_EQUAL(kv_ring_layout_check(map, size - 1, &rq, &rs), KV_EPROTO);
    map[KV_RING_OFF_REQ_CAP] = 1; /* 8193: not a power of two */
    CU_ASSERT_EQUAL(kv_ring_layout_check(map, size, &rq, &rs), KV_EPROTO);
    map[KV_RING_OFF_REQ_CAP] = 0;
    map[KV_RING_OFF_MAGIC] ^= 1;
    CU_ASSERT_EQUAL(kv_ring_layout_check(map, size, &rq, &rs), KV_EPROTO);
    CU_ASSERT_EQUAL(kv_ring_cap_round(0), KV_RING_MIN);
    CU_ASSERT_EQUAL(kv_ring_cap_round(5000), 8192);
    CU_ASSERT_EQUAL(kv_ring_cap_round(1ull << 40), KV_RING_MAX);
    free(map);
}

static void test_ring_wrap_full_empty(void)
{
    struct kv_ring prod, cons, other;
    uint8_t *map = layout(4096, &prod, &other), src[4096], dst[4096];
    const uint8_t *p;

    kv_ring_views(map, &cons, &other); /* a second view of the request ring: the consumer */
    for (size_t i = 0; i < sizeof(src); i++)
        src[i] = (uint8_t)(i * 7 + 3);
    CU_ASSERT_EQUAL(kv_ring_space(&prod), 4096);
    CU_ASSERT_EQUAL(kv_ring_avail(&cons), 0);
    kv_ring_write(&prod, src, 3000);
    CU_ASSERT_EQUAL(kv_ring_avail(&cons), 0); /* not published yet */
    kv_ring_publish(&prod);
    CU_ASSERT_EQUAL(kv_ring_avail(&cons), 3000);
    CU_ASSERT_EQUAL(kv_ring_space(&prod), 1096);
    kv_ring_read(&cons, 3000);
    CU_ASSERT_EQUAL(kv_ring_space(&prod), 1096); /* read, not released */
    kv_ring_release(&cons, cons.rd);
    CU_ASSERT_EQUAL(kv_ring_space(&prod), 4096);
    /* 2000 bytes from position 3000: they wrap */
    kv_ring_write(&prod, src, 2000);
    kv_ring_publish(&prod);
    CU_ASSERT_EQUAL(kv_ring_contig(&cons, 0, &p), 1096);
    kv_ring_peek(&cons, 0, dst, 2000);
    CU_ASSERT_EQUAL(memcmp(dst, src, 2000), 0);
    /* full: head - tail == cap */
    kv_ring_write(&prod, src, 2096);
    kv_ring_publish(&prod);
    CU_ASSERT_EQUAL(kv_ring_space(&prod), 0);
    CU_ASSERT_EQUAL(kv_ring_avail(&cons), 4096);
    kv_ring_read(&cons, 4096);
    kv_ring_release(&cons, cons.rd);
    CU_ASSERT_EQUAL(kv_ring_avail(&cons), 0);
    CU_ASSERT_EQUAL(kv_ring_space(&prod), 4096);
    free(map);
}

static void test_ring_impossible_indices_refused(void)
{
    struct kv_ring prod, cons, other;
    uint8_t *map = layout(4096, &prod, &other);

    kv_ring_views(map, &cons, &other);
    kv_ring_write(&prod, "abcdefgh", 8);
    kv_ring_publish(&prod);
    kv_ring_read(&cons, 4);
    /* the consumer's view of a head the producer could not have written */
    *cons.head = cons.rd - 1; /* behind what was read */
    CU_ASSERT_EQUAL(kv_ring_avail(&cons), KV_EPROTO);
    *cons.head = cons.pos + 4096 + 1; /* more than cap ahead of the released tail */
    CU_ASSERT_EQUAL(kv_ring_avail(&cons), KV_EPROTO);
    *cons.head = cons.pos + 4096; /* exactly full: fine */
    CU_ASSERT_EQUAL(kv_ring_avail(&cons), 4096 - 4);
    *cons.head = UINT64_MAX;
    CU_ASSERT_EQUAL(kv_ring_avail(&cons), KV_EPROTO);
    /* the producer's view of a tail the consumer could not have written */
    *prod.tail = prod.pos + 1; /* ahead of the head */
    CU_ASSERT_EQUAL(kv_ring_space(&prod), KV_EPROTO);
    *prod.tail = prod.pos - 4097; /* more than cap behind */
    CU_ASSERT_EQUAL(kv_ring_space(&prod), KV_EPROTO);
    *prod.tail = prod.pos - 4096;
    CU_ASSERT_EQUAL(kv_ring_space(&prod), 0);
    free(map);
}

static size_t put_frame(struct kv_ring *r, uint64_t id, const void *body, uint32_t len)
{
    uint8_t buf[8192];
    struct kv_frame f = {.version = KV_FRAME_VERSION, .opcode = 0, .request_id = id,
                         .body_len = len};
    ssize_t n = kv_frame_encode(&f, body, buf, sizeof(buf));

    kv_ring_write(r, buf, (size_t)n);
    kv_ring_publish(r);
    return (size_t)n;
}

static void test_ring_frames_in_place_and_across_the_wrap(void)
{
    struct kv_ring prod, cons, other;
    uint8_t *map = layout(4096, &prod, &other), hdr[24], body[3000], copy[4096];
    struct kv_ring_frame rf;
    struct kv_frame f;
    size_t n;

    kv_ring_views(map, &cons, &other);
    memset(body, 'x', sizeof(body));
    CU_ASSERT_EQUAL(kv_ring_frame_peek(&cons, 1 << 20, 0, &rf, hdr), 0);
    n = put_frame(&prod, 1, body, 3000);
    CU_ASSERT_EQUAL(kv_ring_frame_peek(&cons, 1 << 20, 0, &rf, hdr), 1);
    CU_ASSERT_EQUAL(rf.total, n);
    CU_ASSERT_PTR_NOT_NULL(rf.in_place);
    CU_ASSERT_EQUAL(rf.in_place, cons.data);
    CU_ASSERT_EQUAL(kv_frame_decode(rf.in_place, rf.total, 1 << 20, 0, &f), (ssize_t)n);
    CU_ASSERT_EQUAL(f.body, cons.data + KV_FRAME_HDR); /* the body where it lies */
    kv_ring_read(&cons, n);
    kv_ring_release(&cons, cons.rd);
    /* the next one wraps: whole, but not in place */
    n = put_frame(&prod, 2, body, 2000);
    CU_ASSERT_EQUAL(kv_ring_frame_peek(&cons, 1 << 20, 0, &rf, hdr), 1);
    CU_ASSERT_PTR_NULL(rf.in_place);
    kv_ring_peek(&cons, 0, copy, rf.total);
    CU_ASSERT_EQUAL(kv_frame_decode(copy, rf.total, 1 << 20, 0, &f), (ssize_t)n);
    CU_ASSERT_EQUAL(f.request_id, 2);
    /* a body above the limit is told from the header alone */
    CU_ASSERT_EQUAL(kv_ring_frame_peek(&cons, 100, 0, &rf, hdr), KV_ETOOBIG);
    kv_ring_read(&cons, n);
    kv_ring_release(&cons, cons.rd);
    /* a wrong first byte at once */
    kv_ring_write(&prod, "X", 1);
    kv_ring_publish(&prod);
    CU_ASSERT_EQUAL(kv_ring_frame_peek(&cons, 1 << 20, 0, &rf, hdr), KV_EMAGIC);
    free(map);
}

/* Lost-wake-up stress: a ping-pong of 8-byte messages in which both sides always park
 * (no spinning at all), so every message is a park/publish/wake race. A wake-up lost
 * shows as a side asleep for 5 s with a message waiting. */
struct pp {
    struct kv_ring send, recv; /* this side's producer and consumer views */
    int wake_peer, my_efd;
    uint64_t n, parks, lost;
};

static int pp_wait(struct pp *s)
{
    for (;;) {
        int64_t a = kv_ring_avail(&s->recv);
        struct pollfd p = {.fd = s->my_efd, .events = POLLIN};
        uint64_t v;

        if (a > 0)
            return 0;
        if (kv_ring_park(&s->recv) > 0) {
            kv_ring_unpark(&s->recv);
            return 0;
        }
        s->parks++;
        if (poll(&p, 1, 5000) == 0) {
            kv_ring_unpark(&s->recv);
            if (kv_ring_avail(&s->recv) > 0) {
                s->lost++;
                return 0;
            }
            return -1;
        }
        (void)!read(s->my_efd, &v, sizeof(v));
        kv_ring_unpark(&s->recv);
    }
}

static void *pp_main(void *arg)
{
    struct pp *s = arg;
    uint64_t one = 1, x;

    for (uint64_t i = 0; i < s->n; i++) {
        if (pp_wait(s) != 0)
            return (void *)1;
        kv_ring_peek(&s->recv, 0, &x, 8);
        if (x != i)
            return (void *)2;
        kv_ring_read(&s->recv, 8);
        kv_ring_release(&s->recv, s->recv.rd);
        kv_ring_write(&s->send, &x, 8);
        if (kv_ring_publish(&s->send))
            (void)!write(s->wake_peer, &one, 8);
    }
    return NULL;
}

static void test_ring_lost_wakeup_stress(void)
{
    const char *env = getenv("KV_RING_STRESS");
    uint64_t n = env ? strtoull(env, NULL, 10) : 200000, one = 1, t0 = mono_ms();
    struct kv_ring req, resp, req2, resp2;
    uint8_t *map = layout(4096, &req, &resp);
    int efd_a = eventfd(0, EFD_NONBLOCK), efd_b = eventfd(0, EFD_NONBLOCK);
    struct pp server = {.n = n, .wake_peer = efd_a, .my_efd = efd_b};
    struct pp client = {.n = n, .wake_peer = efd_b, .my_efd = efd_a};
    pthread_t tid;
    void *ret = (void *)9;
    uint64_t x;

    kv_ring_views(map, &req2, &resp2);
    server.recv = req;
    server.send = resp;
    client.send = req2;
    client.recv = resp2;
    CU_ASSERT_FATAL(pthread_create(&tid, NULL, pp_main, &server) == 0);
    for (uint64_t i = 0; i < n; i++) {
        kv_ring_write(&client.send, &i, 8);
        if (kv_ring_publish(&client.send))
            (void)!write(client.wake_peer, &one, 8);
        if (pp_wait(&client) != 0)
            break;
        kv_ring_peek(&client.recv, 0, &x, 8);
        CU_ASSERT_EQUAL_FATAL(x, i);
        kv_ring_read(&client.recv, 8);
        kv_ring_release(&client.recv, client.recv.rd);
    }
    pthread_join(tid, &ret);
    CU_ASSERT_PTR_NULL(ret);
    CU_ASSERT_EQUAL(server.lost + client.lost, 0);
    fprintf(stderr, "\n    %llu round trips, %llu parks, %llu lost wake-ups, %.1f s\n",
            (unsigned long long)n, (unsigned long long)(server.parks + client.parks),
            (unsigned long long)(server.lost + client.lost), (mono_ms() - t0) / 1000.0);
    close(efd_a);
    close(efd_b);
    free(map);
}

/* ---- end to end ---------------------------------------------------------------- */
static void sock_path(struct kv_test_server *s)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->unix_path, sizeof(s->unix_path), "/tmp/libevkv-test-%d-r%d.sock", (int)getpid(),
             seq++);
    unlink(s->unix_path);
}

static struct kv_client *attached(const struct kv_test_server *s, int timeout_ms)
{
    struct kv_client *c = NULL;

    if (kv_client_connect_unix(s->unix_path, timeout_ms, &c) != 0)
        return NULL;
    if (kv_client_attach(c, 0, 0) != 0) {
        kv_client_close(c);
        return NULL;
    }
    return c;
}

static int64_t stat_of(struct kv_client *c, const char *name)
{
    struct kv_stats st;
    int64_t v = -1;

    if (kv_client_stats(c, &st) != 0)
        return -1;
    if (!kv_client_stats_find(&st, name, &v))
        v = -1;
    kv_client_stats_free(&st);
    return v;
}

static int run(const char *cmd, char *out, size_t cap)
{
    FILE *f = popen(cmd, "r");
    size_t len = 0;

    if (!f)
        return -1;
    len = fread(out, 1, cap - 1, f);
    out[len] = '\0';
    return pclose(f);
}

/* The exit table's RING row says 0 bytes held. */
static int ring_row_zero(const struct kv_test_server *s)
{
    char *log = kv_test_server_log(s), *p;
    long long held = -1;

    p = log ? strstr(log, "\nRING ") : NULL;
    if (p)
        sscanf(p + 6, "%lld", &held);
    free(log);
    return held == 0;
}

static void test_ring_kvclient_test_over_shm(void)
{
    static const char *const args[] = {"--requirepass", "pw", NULL};
    struct kv_test_server s;
    char cmd[PATH_MAX + 256], out[65536], *last;
    unsigned passed = 0, failed = 1;

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    snprintf(cmd, sizeof(cmd), "%s/kvclient -a pw -s %s --shm test --allow-flush 2>&1", bindir,
             s.unix_path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "over shared-memory rings"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "ok   FLUSH answers"));
    last = strstr(out, " passed, ");
    while (last && last > out && last[-1] != '\n')
        last--;
    CU_ASSERT_FATAL(last != NULL);
    CU_ASSERT_EQUAL(sscanf(last, "%u passed, %u failed", &passed, &failed), 2);
    CU_ASSERT(passed >= 80);
    CU_ASSERT_EQUAL(failed, 0);
    if (failed)
        fprintf(stderr, "\n%s\n", out);
    /* every command of kvclient takes --shm */
    snprintf(cmd, sizeof(cmd), "%s/kvclient -a pw -s %s --shm set rk hello >/dev/null && "
             "%s/kvclient -a pw -s %s --shm get rk", bindir, s.unix_path, bindir, s.unix_path);
    CU_ASSERT_EQUAL(run(cmd, out, sizeof(out)), 0);
    CU_ASSERT_STRING_EQUAL(out, "hello");
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    CU_ASSERT(ring_row_zero(&s));
}

static void test_ring_attach_refused(void)
{
    static const char *const args[] = {"--requirepass", "pw", NULL};
    struct kv_test_server s;
    struct kv_client *c = NULL;

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    /* over TCP: BAD_REQUEST, and the connection goes on */
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", s.port, 2000, &c) == 0);
    CU_ASSERT_EQUAL(kv_client_auth(c, "pw", 2), 0);
    CU_ASSERT_EQUAL(kv_client_attach(c, 0, 0), KV_ESTATUS);
    CU_ASSERT_EQUAL(kv_client_last_status(c), KV_ST_BAD_REQUEST);
    CU_ASSERT_PTR_NOT_NULL(strstr(kv_client_last_error(c), "unix socket"));
    CU_ASSERT_EQUAL(kv_client_ping(c, "x", 1), 0);
    kv_client_close(c);
    /* before AUTH: NOAUTH; after it, attached */
    CU_ASSERT_FATAL(kv_client_connect_unix(s.unix_path, 2000, &c) == 0);
    CU_ASSERT_EQUAL(kv_client_attach(c, 0, 0), KV_ESTATUS);
    CU_ASSERT_EQUAL(kv_client_last_status(c), KV_ST_NOAUTH);
    CU_ASSERT_EQUAL(kv_client_auth(c, "pw", 2), 0);
    CU_ASSERT_EQUAL(kv_client_attach(c, 8192, 16384), 0);
    CU_ASSERT(kv_client_attached(c));
    CU_ASSERT_EQUAL(kv_client_ping(c, "y", 1), 0);
    /* an ATTACH inside the rings: refused there, the rings go on */
    {
        struct kv_response r;

        CU_ASSERT_EQUAL(kv_client_call(c, KV_OP_ATTACH, NULL, 0, &r), KV_ESTATUS);
        CU_ASSERT_EQUAL(r.status, KV_ST_BAD_REQUEST);
    }
    CU_ASSERT_EQUAL(kv_client_ping(c, "z", 1), 0);
    kv_client_close(c);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    CU_ASSERT(ring_row_zero(&s));
}

/* Values larger than the rings, and many frames across the wrap, both ways. */
static void test_ring_large_values_and_wraps(void)
{
    struct kv_test_server s;
    struct kv_client *c = NULL;
    static uint8_t big[1 << 20];
    struct kv_value v = {0};
    const uint8_t *ref;
    size_t rlen;

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    CU_ASSERT_FATAL(kv_client_connect_unix(s.unix_path, 5000, &c) == 0);
    CU_ASSERT_FATAL(kv_client_attach(c, 4096, 4096) == 0);
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 31 + (i >> 9));
    CU_ASSERT_EQUAL(kv_client_set(c, "big", 3, big, sizeof(big), NULL, NULL), 0);
    CU_ASSERT_EQUAL(kv_client_get(c, "big", 3, &v), 0);
    CU_ASSERT_EQUAL(v.len, sizeof(big));
    CU_ASSERT(v.data && memcmp(v.data, big, sizeof(big)) == 0);
    kv_client_value_free(&v);
    /* odd sizes, so frames start everywhere in the 4 KiB rings */
    for (unsigned i = 0; i < 400; i++) {
        char k[32];
        size_t n = 1 + (i * 37) % 3000;

        snprintf(k, sizeof(k), "w%u", i);
        CU_ASSERT_EQUAL_FATAL(kv_client_set(c, k, strlen(k), big + i, n, NULL, NULL), 0);
        CU_ASSERT_EQUAL_FATAL(kv_client_get_ref(c, k, strlen(k), &ref, &rlen, NULL), 0);
        CU_ASSERT_EQUAL_FATAL(rlen, n);
        CU_ASSERT_FATAL(memcmp(ref, big + i, n) == 0);
    }
    /* a pipeline deeper than the rings hold */
    for (unsigned i = 0; i < 64; i++)
        CU_ASSERT_EQUAL(kv_client_queue(c, KV_OP_PING, 1000 + i, big, 1500), 0);
    CU_ASSERT_EQUAL(kv_client_flush(c), 0);
    for (unsigned i = 0; i < 64; i++) {
        struct kv_response r;

        CU_ASSERT_EQUAL_FATAL(kv_client_recv(c, &r), 0);
        CU_ASSERT_EQUAL(r.request_id, 1000 + i);
        CU_ASSERT(r.body_len == 1500 && memcmp(r.body, big, 1500) == 0);
    }
    kv_client_close(c);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    CU_ASSERT(ring_row_zero(&s));
}

/* CLIENT LIST over RESP on TCP: the shm_in_place= of the first attached client, or -1. */
static long long in_place_of(const struct kv_test_server *s)
{
    char buf[8192], *p;
    size_t len = 0;
    long long v = -1;
    int fd = kv_test_connect(s->port);

    if (fd < 0)
        return -1;
    if (write(fd, "CLIENT LIST\r\n", 13) == 13) {
        while (len < sizeof(buf) - 1) {
            ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);

            if (n <= 0)
                break;
            len += (size_t)n;
            buf[len] = '\0';
            p = strstr(buf, "\r\n"); /* "$N\r\n" N bytes "\r\n" */
            if (buf[0] != '$' || (p && len >= (size_t)(p + 2 - buf) + (size_t)atoi(buf + 1) + 2))
                break;
        }
    }
    close(fd);
    buf[len] = '\0';
    p = strstr(buf, "shm_in_place=");
    if (p)
        sscanf(p + 13, "%lld", &v);
    return v;
}

/* Answers built in the response ring where they are sent (issue 15: a GET's value copied
 * once, from the store into the ring): with the handlers on the IO thread (--workers 0)
 * every GET, MGET and SET answer over shm is laid out in place, pipelined or not, and
 * reads back right; with workers the answers are copied as before, and equally right. */
static void test_ring_answers_built_in_place(void)
{
    for (int workers = 0; workers <= 2; workers += 2) {
        const char *args[] = {"--workers", workers ? "2" : "0", NULL};
        struct kv_test_server s;
        struct kv_client *c;
        struct kv_bytes keys[10];
        struct kv_value vals[10];
        char kn[10][8];
        uint8_t val[10][100];
        const uint8_t *ref;
        size_t rlen;
        long long expect = 0;

        sock_path(&s);
        CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
        c = attached(&s, 5000);
        CU_ASSERT_FATAL(c != NULL);
        for (int i = 0; i < 10; i++) {
            snprintf(kn[i], sizeof(kn[i]), "k%d", i);
            memset(val[i], 'a' + i, sizeof(val[i]));
            keys[i].data = kn[i];
            keys[i].len = strlen(kn[i]);
            CU_ASSERT_EQUAL(kv_client_set(c, kn[i], keys[i].len, val[i], 100, NULL, NULL), 0);
            expect++;
        }
        for (int i = 0; i < 50; i++, expect++) {
            CU_ASSERT_EQUAL_FATAL(kv_client_get_ref(c, kn[i % 10], 2, &ref, &rlen, NULL), 0);
            CU_ASSERT_FATAL(rlen == 100 && memcmp(ref, val[i % 10], 100) == 0);
        }
        CU_ASSERT_EQUAL(kv_client_get_ref(c, "nope", 4, &ref, &rlen, NULL), KV_ENOTFOUND);
        for (int i = 0; i < 10; i++, expect++) {
            CU_ASSERT_EQUAL_FATAL(kv_client_mget(c, keys, 10, vals), 0);
            for (int j = 0; j < 10; j++)
                CU_ASSERT(vals[j].found && vals[j].len == 100 &&
                          memcmp(vals[j].data, val[j], 100) == 0);
            kv_client_values_free(vals, 10);
        }
        /* a pipeline of 16 GETs: each answer in place, behind the one before */
        for (unsigned i = 0; i < 16; i++) {
            uint8_t body[8] = {0x0a, 2, 'k', (uint8_t)('0' + i % 10)};

            CU_ASSERT_EQUAL(kv_client_queue(c, KV_OP_GET, 500 + i, body, 4), 0);
        }
        CU_ASSERT_EQUAL(kv_client_flush(c), 0);
        for (unsigned i = 0; i < 16; i++, expect++) {
            struct kv_response r;

            CU_ASSERT_EQUAL_FATAL(kv_client_recv(c, &r), 0);
            CU_ASSERT_EQUAL(r.status, KV_ST_OK);
            /* GetResponse: field 1 the value (0x0a, 100), then the version */
            CU_ASSERT(r.body_len > 102 && r.body[0] == 0x0a && r.body[1] == 100 &&
                      memcmp(r.body + 2, val[(r.request_id - 500) % 10], 100) == 0);
        }
        fprintf(stderr, "\n    --workers %d: %lld answers in place of %lld\n", workers,
                in_place_of(&s), expect);
        CU_ASSERT_EQUAL(in_place_of(&s), workers ? 0 : expect);
        kv_client_close(c);
        CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
        CU_ASSERT(ring_row_zero(&s));
    }
}

static void test_ring_kill9_of_one_client(void)
{
    struct kv_test_server s;
    struct kv_client *c;
    int p[2];
    pid_t child;
    char b;
    int64_t n = -1;

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    CU_ASSERT_FATAL(pipe(p) == 0);
    child = fork();
    CU_ASSERT_FATAL(child >= 0);
    if (child == 0) {
        struct kv_client *k = attached(&s, 5000);

        if (!k || kv_client_set(k, "kid", 3, "1", 1, NULL, NULL) != 0)
            _exit(1);
        (void)!write(p[1], "r", 1);
        for (;;)
            pause();
    }
    close(p[1]);
    CU_ASSERT_FATAL(read(p[0], &b, 1) == 1);
    close(p[0]);
    c = attached(&s, 5000);
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_EQUAL(stat_of(c, "clients_shm"), 2);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    for (int i = 0; i < 200 && (n = stat_of(c, "clients_shm")) != 1; i++)
        usleep(10000);
    CU_ASSERT_EQUAL(n, 1); /* its rings are gone at once */
    CU_ASSERT_EQUAL(kv_client_set(c, "other", 5, "2", 1, NULL, NULL), 0);
    CU_ASSERT_EQUAL(kv_client_ping(c, "still", 5), 0);
    kv_client_close(c);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    CU_ASSERT(ring_row_zero(&s));
}

static void test_ring_server_killed_while_attached(void)
{
    struct kv_test_server s;
    struct kv_client *c[3];
    uint64_t t0;
    int rc;

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    for (int i = 0; i < 3; i++) {
        c[i] = attached(&s, 2000);
        CU_ASSERT_FATAL(c[i] != NULL);
    }
    for (unsigned i = 0; i < 300; i++) {
        char k[32];

        snprintf(k, sizeof(k), "acked:%u", i);
        CU_ASSERT_EQUAL_FATAL(kv_client_set(c[i % 3], k, strlen(k), k, strlen(k), NULL, NULL),
                              0);
    }
    CU_ASSERT_FATAL(kv_test_server_kill(&s, SIGKILL) >= 0);
    for (int i = 0; i < 3; i++) {
        t0 = mono_ms();
        rc = kv_client_ping(c[i], "gone?", 5);
        CU_ASSERT(rc == KV_ECLOSED || rc == KV_ETIMEDOUT);
        CU_ASSERT(mono_ms() - t0 < 2500); /* within the client's timeout */
        kv_client_close(c[i]);
    }
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0); /* same segment, same socket */
    c[0] = attached(&s, 2000);
    CU_ASSERT_FATAL(c[0] != NULL);
    for (unsigned i = 0; i < 300; i++) {
        char k[32];
        struct kv_value v = {0};

        snprintf(k, sizeof(k), "acked:%u", i);
        CU_ASSERT_EQUAL_FATAL(kv_client_get(c[0], k, strlen(k), &v), 0);
        CU_ASSERT(v.len == strlen(k) && memcmp(v.data, k, v.len) == 0);
        kv_client_value_free(&v);
    }
    kv_client_close(c[0]);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

static void test_ring_scribbler_closed_alone(void)
{
    struct kv_test_server s;
    struct kv_client *good, *bad;
    uint8_t *map;
    size_t size;
    char *log;
    int wake = -1;
    uint64_t one = 1;

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    good = attached(&s, 2000);
    CU_ASSERT_FATAL(good != NULL);
    /* an impossible request-ring head */
    bad = attached(&s, 2000);
    CU_ASSERT_FATAL(bad != NULL);
    CU_ASSERT_EQUAL(kv_client_ping(bad, "a", 1), 0);
    map = kv_client_ring_map(bad, &size, &wake);
    CU_ASSERT_FATAL(map != NULL);
    __atomic_store_n((uint64_t *)(void *)(map + KV_RING_OFF_REQ_HEAD), UINT64_MAX / 3,
                     __ATOMIC_RELEASE);
    CU_ASSERT(write(wake, &one, 8) == 8); /* the server may be parked: wake it */
    usleep(100000);
    CU_ASSERT_NOT_EQUAL(kv_client_ping(bad, "b", 1), 0);
    kv_client_close(bad);
    CU_ASSERT_EQUAL(kv_client_ping(good, "c", 1), 0);
    /* garbage that is not a frame */
    bad = attached(&s, 2000);
    CU_ASSERT_FATAL(bad != NULL);
    CU_ASSERT_EQUAL(kv_client_send_raw(bad, "GARBAGE!GARBAGE!GARBAGE!GARBAGE!", 32), 0);
    CU_ASSERT_NOT_EQUAL(kv_client_ping(bad, "d", 1), 0);
    kv_client_close(bad);
    /* an impossible response-ring tail */
    bad = attached(&s, 2000);
    CU_ASSERT_FATAL(bad != NULL);
    map = kv_client_ring_map(bad, &size, NULL);
    __atomic_store_n((uint64_t *)(void *)(map + KV_RING_OFF_RESP_TAIL), 12345,
                     __ATOMIC_RELEASE);
    CU_ASSERT_NOT_EQUAL(kv_client_ping(bad, "e", 1), 0);
    kv_client_close(bad);
    CU_ASSERT_EQUAL(kv_client_ping(good, "f", 1), 0);
    CU_ASSERT_EQUAL(kv_client_set(good, "g", 1, "1", 1, NULL, NULL), 0);
    kv_client_close(good);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    log = kv_test_server_log(&s);
    CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "impossible request-ring head"));
    CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "impossible response-ring tail"));
    free(log);
    CU_ASSERT(ring_row_zero(&s));
}

static void test_ring_counts_against_max_conns(void)
{
    static const char *const args[] = {"--max-conns", "2", NULL};
    struct kv_test_server s;
    struct kv_client *a, *b, *c = NULL;

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    a = attached(&s, 2000);
    b = attached(&s, 2000);
    CU_ASSERT_FATAL(a && b);
    CU_ASSERT_FATAL(kv_client_connect_unix(s.unix_path, 2000, &c) == 0);
    CU_ASSERT_NOT_EQUAL(kv_client_attach(c, 0, 0), 0); /* BUSY, then closed */
    kv_client_close(c);
    CU_ASSERT_EQUAL(kv_client_ping(a, "a", 1), 0);
    CU_ASSERT_EQUAL(kv_client_ping(b, "b", 1), 0);
    kv_client_close(a);
    kv_client_close(b);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

/* utime + stime of pid, in clock ticks. */
static long long cpu_ticks(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long long ut = 0, st = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    p = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
    fclose(f);
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

static void test_ring_idle_clients_cost_nothing(void)
{
    const char *env = getenv("KV_RING_IDLE_SECS");
    unsigned secs = env ? (unsigned)atoi(env) : 3;
    struct kv_test_server s;
    struct kv_client *c[16];
    long long t0, t1, hz = sysconf(_SC_CLK_TCK);
    double share;

    sock_path(&s);
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    static uint8_t body[4000];
    struct kv_client *half, *deaf;
    uint8_t frame[64];
    struct kv_frame f = {.version = KV_FRAME_VERSION, .opcode = 0, .request_id = 5,
                         .body_len = 10};

    for (int i = 0; i < 16; i++) {
        c[i] = attached(&s, 2000);
        CU_ASSERT_FATAL(c[i] != NULL);
        CU_ASSERT_EQUAL(kv_client_ping(c[i], "x", 1), 0);
    }
    /* nor does one that sent half a frame, or one that does not read its answers */
    half = attached(&s, 2000);
    deaf = attached(&s, 2000);
    CU_ASSERT_FATAL(half && deaf);
    CU_ASSERT_EQUAL(kv_frame_encode(&f, (const uint8_t *)"0123456789", frame, sizeof(frame)), 38);
    CU_ASSERT_EQUAL(kv_client_send_raw(half, frame, 20), 0);
    for (unsigned i = 0; i < 200; i++)
        CU_ASSERT_EQUAL(kv_client_queue(deaf, KV_OP_PING, i, body, sizeof(body)), 0);
    CU_ASSERT_EQUAL(kv_client_flush(deaf), 0); /* 800 KB of answers for a 256 KB ring */
    usleep(300000); /* past every spin window */
    t0 = cpu_ticks(s.pid);
    sleep(secs);
    t1 = cpu_ticks(s.pid);
    share = (double)(t1 - t0) / (double)hz / secs;
    fprintf(stderr, "\n    16 idle attached clients for %u s: server CPU %.2f%% of a core\n",
            secs, share * 100);
    CU_ASSERT(t0 >= 0 && share <= 0.01);
    for (int i = 0; i < 16; i++) {
        CU_ASSERT_EQUAL(kv_client_ping(c[i], "y", 1), 0); /* and they wake up */
        kv_client_close(c[i]);
    }
    /* the rest of the half frame is served; the deaf client's answers all come */
    CU_ASSERT_EQUAL(kv_client_send_raw(half, frame + 20, 18), 0);
    {
        struct kv_response r;

        CU_ASSERT_EQUAL(kv_client_recv(half, &r), 0);
        CU_ASSERT(r.request_id == 5 && r.body_len == 10);
        for (unsigned i = 0; i < 200; i++) {
            CU_ASSERT_EQUAL_FATAL(kv_client_recv(deaf, &r), 0);
            CU_ASSERT_EQUAL(r.body_len, sizeof(body));
        }
    }
    kv_client_close(half);
    kv_client_close(deaf);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_ring_layout_checked", test_ring_layout_checked},
        {"test_ring_wrap_full_empty", test_ring_wrap_full_empty},
        {"test_ring_impossible_indices_refused", test_ring_impossible_indices_refused},
        {"test_ring_frames_in_place_and_across_the_wrap",
         test_ring_frames_in_place_and_across_the_wrap},
        {"test_ring_lost_wakeup_stress", test_ring_lost_wakeup_stress},
        {"test_ring_kvclient_test_over_shm", test_ring_kvclient_test_over_shm},
        {"test_ring_attach_refused", test_ring_attach_refused},
        {"test_ring_large_values_and_wraps", test_ring_large_values_and_wraps},
        {"test_ring_answers_built_in_place", test_ring_answers_built_in_place},
        {"test_ring_kill9_of_one_client", test_ring_kill9_of_one_client},
        {"test_ring_server_killed_while_attached", test_ring_server_killed_while_attached},
        {"test_ring_scribbler_closed_alone", test_ring_scribbler_closed_alone},
        {"test_ring_counts_against_max_conns", test_ring_counts_against_max_conns},
        {"test_ring_idle_clients_cost_nothing", test_ring_idle_clients_cost_nothing},
    };

    return kv_test_run_suite("ring", suite_init, NULL, tests, sizeof(tests) / sizeof(tests[0]));
}
