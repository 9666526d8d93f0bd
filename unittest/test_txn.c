/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_txn.c -- transactions (issue 16): the store's transaction mode across a
 * kill -9 (all or nothing), no eviction inside one, the workers' gate (an exclusive
 * section runs alone), and through a real server with workers: MULTI/EXEC isolated from
 * other clients, WATCH, and pipelined commands of one connection run in order. */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv_call.h"
#include "kv_mem.h"
#include "kv_shm.h"
#include "kv_test_util.h"
#include "kv_worker.h"
#include "rdb.h"

static void cfg_make(struct kv_config *c, const char *tag, size_t mem)
{
    kv_config_defaults(c);
    snprintf(c->shm_name, sizeof(c->shm_name), "/kvtxn-%d-%s", (int)getpid(), tag);
    c->memory = mem;
    kv_shm_store_unlink(c);
}

struct vbuf {
    uint8_t *p; /* owned (KV_MOD_TEST) */
    size_t len;
};

static void *vbuf_alloc(void *ctx, size_t n)
{
    struct vbuf *v = ctx;

    v->p = kv_mem_alloc(KV_MOD_TEST, n ? n : 1);
    v->len = n;
    return v->p;
}

/* The 8-byte number at the front of key's value, 0 when absent. */
static uint64_t num_of(struct kv_shm_store *s, const char *k)
{
    struct vbuf got = {0};
    uint64_t v = 0;

    if (kv_shm_get(s, k, strlen(k), vbuf_alloc, &got, NULL, NULL) == 0 && got.len >= 8)
        memcpy(&v, got.p, 8);
    kv_mem_free(KV_MOD_TEST, got.p);
    return v;
}

/* Across a kill -9: a child runs transactions that write generation v into 8 keys (by SET,
 * one of them large, by MSET, and by DEL + SET), and dies at a crash point inside a
 * transaction or by SIGKILL at a random instant. After recovery the 8 keys always agree,
 * and are never older than the last transaction whose commit returned. */
static void test_txn_store_crash_all_or_nothing(void)
{
    struct kv_config c;
    volatile uint64_t *acked = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int problems = 0, mid = 0;

    cfg_make(&c, "crash", 16u << 20);
    CU_ASSERT_FATAL(acked != MAP_FAILED);
    *acked = 0;
    for (int round = 0; round < 24; round++) {
        pid_t pid = fork();

        if (pid == 0) {
            struct kv_shm_open_opts o = {.crash_at = round % 2 ? 0 : 2 + round * 7,
                                         .crash_site = KV_SHM_CRASH_BATCH};
            struct kv_shm_store *s;
            static uint8_t big[5000];
            char keys[8][8];

            if (kv_shm_store_open_ex(&c, &o, NULL, 0, &s))
                _exit(3);
            for (int i = 0; i < 8; i++)
                snprintf(keys[i], sizeof(keys[i]), "t%d", i);
            for (uint64_t v = *acked + 1;; v++) {
                struct kv_shm_pair p[3];
                uint8_t val[8];
                int rc = 0;

                memcpy(val, &v, 8);
                memcpy(big, &v, 8);
                if (kv_shm_txn_begin(s) != 0)
                    _exit(4);
                rc |= kv_shm_set(s, keys[0], 2, val, 8, NULL, NULL);
                rc |= kv_shm_set(s, keys[1], 2, big, sizeof(big), NULL, NULL);
                for (int i = 0; i < 3; i++)
                    p[i] = (struct kv_shm_pair){keys[2 + i], 2, val, 8};
                rc |= kv_shm_mset(s, p, 3, NULL, NULL);
                kv_shm_del(s, keys[5], 2);
                rc |= kv_shm_set(s, keys[5], 2, val, 8, NULL, NULL);
                rc |= kv_shm_set(s, keys[6], 2, "x", 1, NULL, NULL); /* replaced below */
                rc |= kv_shm_set(s, keys[6], 2, val, 8, NULL, NULL);
                rc |= kv_shm_set(s, keys[7], 2, val, 8, NULL, NULL);
                kv_shm_txn_commit(s);
                if (rc != 0)
                    _exit(5);
                *acked = v;
            }
        }
        usleep(round % 2 ? 3000 + (unsigned)(round * 7919) % 20000 : 200000);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        CU_ASSERT(!WIFEXITED(st) || WEXITSTATUS(st) == 77);
        mid += WIFEXITED(st) && WEXITSTATUS(st) == 77;
        struct kv_shm_store *s;
        CU_ASSERT_FATAL(kv_shm_store_open(&c, NULL, 0, &s) == 0);
        uint64_t v0 = num_of(s, "t0");
        for (int i = 1; i < 8; i++) {
            char k[8];

            snprintf(k, sizeof(k), "t%d", i);
            problems += num_of(s, k) != v0;
        }
        problems += v0 < *acked;
        if (v0 > *acked)
            *acked = v0;
        kv_shm_store_close(s);
    }
    fprintf(stderr, "(%d deaths inside a transaction, last %llu) ", mid,
            (unsigned long long)*acked);
    CU_ASSERT_EQUAL(problems, 0);
    CU_ASSERT(mid >= 6);
    CU_ASSERT(*acked > 24);
    munmap((void *)acked, 4096);
    kv_shm_store_unlink(&c);
}

static int has_key(struct kv_shm_store *s, unsigned db, const char *k)
{
    struct vbuf got = {0};
    int rc = kv_shm_db_get(s, db, k, strlen(k), vbuf_alloc, &got, NULL, NULL);

    kv_mem_free(KV_MOD_TEST, got.p);
    return rc == 0;
}

/* SWAPDB inside a transaction, twice (the second rewrites the map copy the first made
 * current), then a SET: killed before the commit, recovery puts the databases back as
 * they were; committed, both swaps stay. Before the map words were undo-logged, SWAPDB
 * was refused inside EXEC (KV_ELOCKED). */
static void test_txn_store_swapdb_crash(void)
{
    struct kv_config c;
    struct kv_shm_store *s;
    struct kv_shm_set_opts o = {0};

    cfg_make(&c, "swp", 16 << 20);
    CU_ASSERT_FATAL(kv_shm_store_open(&c, NULL, 0, &s) == 0);
    CU_ASSERT(kv_shm_db_set(s, 1, "x", 1, "one", 3, &o, NULL) == 0);
    CU_ASSERT(kv_shm_db_set(s, 2, "y", 1, "two", 3, &o, NULL) == 0);
    kv_shm_store_close(s);
    for (int commit = 0; commit < 2; commit++) {
        pid_t pid = fork();
        int st;

        if (pid == 0) {
            if (kv_shm_store_open(&c, NULL, 0, &s) != 0 || kv_shm_txn_begin(s) != 0 ||
                kv_shm_swapdb(s, 0, 1) != 0 || kv_shm_swapdb(s, 1, 2) != 0 ||
                kv_shm_db_set(s, 0, "z", 1, "new", 3, &o, NULL) != 0)
                _exit(3);
            if (!has_key(s, 0, "x") || !has_key(s, 1, "y") || has_key(s, 2, "y"))
                _exit(4); /* the swaps are seen inside the transaction */
            if (commit) {
                kv_shm_txn_commit(s);
                _exit(0);
            }
            raise(SIGKILL); /* after every change, before the commit */
            _exit(5);
        }
        CU_ASSERT_FATAL(pid > 0);
        waitpid(pid, &st, 0);
        CU_ASSERT(commit ? WIFEXITED(st) && WEXITSTATUS(st) == 0
                         : WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        CU_ASSERT_FATAL(kv_shm_store_open(&c, NULL, 0, &s) == 0);
        if (!commit) { /* as before the transaction */
            CU_ASSERT(has_key(s, 1, "x") && has_key(s, 2, "y"));
            CU_ASSERT(!has_key(s, 0, "x") && !has_key(s, 1, "y") && !has_key(s, 0, "z"));
        } else { /* x: 1 -> 0; y: 2 -> 1; z written into the new 0 */
            CU_ASSERT(has_key(s, 0, "x") && has_key(s, 1, "y") && has_key(s, 0, "z"));
            CU_ASSERT(!has_key(s, 1, "x") && !has_key(s, 2, "y"));
        }
        kv_shm_store_close(s);
    }
    kv_shm_store_unlink(&c);
}

/* Inside a transaction nothing is evicted (it would move items behind the undo log): a
 * write that needs room fails alone; outside, the same write evicts and succeeds. Frees
 * wait for the commit, then the memory comes back. */
static void test_txn_store_no_eviction_inside(void)
{
    struct kv_config c;
    struct kv_shm_store *s;
    static uint8_t val[1000];
    int filled = 0, rc;

    cfg_make(&c, "evict", 4u << 20);
    c.eviction = KV_EVICT_LRU;
    CU_ASSERT_FATAL(kv_shm_store_open(&c, NULL, 0, &s) == 0);
    for (int i = 0; i < 20000; i++) {
        char k[16];
        struct kv_shm_stats st;

        snprintf(k, sizeof(k), "f%d", i);
        CU_ASSERT_FATAL(kv_shm_set(s, k, strlen(k), val, sizeof(val), NULL, NULL) == 0);
        if (kv_shm_stats(s, &st) == 0 && st.evictions > 0) {
            filled = 1;
            break;
        }
    }
    CU_ASSERT_FATAL(filled);
    CU_ASSERT_FATAL(kv_shm_txn_begin(s) == 0);
    CU_ASSERT_EQUAL(kv_shm_txn_begin(s), KV_EINVAL); /* one at a time */
    rc = 0;
    for (int i = 0; i < 200 && rc == 0; i++) {
        char k[16];

        snprintf(k, sizeof(k), "n%d", i);
        rc = kv_shm_set(s, k, strlen(k), val, sizeof(val), NULL, NULL);
    }
    CU_ASSERT_EQUAL(rc, KV_ENOMEM);
    kv_shm_txn_commit(s);
    CU_ASSERT_EQUAL(kv_shm_set(s, "after", 5, val, sizeof(val), NULL, NULL), 0);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

/* WATCH's lookup: the version of a live key, absent for a missing or expired one. */
static void test_txn_store_version(void)
{
    struct kv_config c;
    struct kv_shm_store *s;
    struct kv_shm_set_opts ttl = {.ttl_ms = 30};
    uint64_t v = 0, nv = 0, v2 = 0;

    cfg_make(&c, "version", 4u << 20);
    CU_ASSERT_FATAL(kv_shm_store_open(&c, NULL, 0, &s) == 0);
    CU_ASSERT_EQUAL(kv_shm_version(s, "a", 1, &v), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(kv_shm_set(s, "a", 1, "1", 1, NULL, &nv), 0);
    CU_ASSERT_EQUAL(kv_shm_version(s, "a", 1, &v), 0);
    CU_ASSERT_EQUAL(v, nv);
    CU_ASSERT_EQUAL(kv_shm_expire(s, "a", 1, 10000), 0); /* a write: a new version */
    CU_ASSERT_EQUAL(kv_shm_version(s, "a", 1, &v2), 0);
    CU_ASSERT_NOT_EQUAL(v2, v);
    CU_ASSERT_EQUAL(kv_shm_set(s, "b", 1, "1", 1, &ttl, NULL), 0);
    usleep(60000);
    CU_ASSERT_EQUAL(kv_shm_version(s, "b", 1, &v), KV_ENOTFOUND);
    CU_ASSERT_EQUAL(kv_shm_version(s, "", 0, &v), KV_EINVAL);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

/* ---- the gate ----------------------------------------------------------------------- */
/* Handlers read a pair of words without any lock of their own; an exclusive section
 * writes both with a pause between. Inside the gate no handler ever sees them differ. */
struct pair {
    volatile uint64_t a, b;
    struct kv_worker_registry *reg;
    int stop;
    uint64_t mixed, reads, writes;
};

static void handle_read_pair(void *ctx, struct kv_call *call)
{
    struct pair *p = ctx;
    uint64_t a = p->a;

    for (volatile int i = 0; i < 50; i++)
        ;
    if (p->b != a)
        __atomic_add_fetch(&p->mixed, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&p->reads, 1, __ATOMIC_RELAXED);
}

static void write_pair(void *ctx)
{
    struct pair *p = ctx;

    p->a++;
    for (volatile int i = 0; i < 200; i++)
        ;
    p->b++;
}

static void *reader_main(void *arg)
{
    struct pair *p = arg;

    while (!__atomic_load_n(&p->stop, __ATOMIC_RELAXED)) {
        struct kv_call c = {.opcode = 1};

        kv_worker_run(p->reg, &c);
    }
    return NULL;
}

static void handle_exclusive(void *ctx, struct kv_call *call)
{
    struct pair *p = ctx;

    kv_worker_exclusive(p->reg, write_pair, p); /* from inside the gate, as EXEC does */
    p->writes++;
}

static void *writer_main(void *arg)
{
    struct pair *p = arg;

    while (!__atomic_load_n(&p->stop, __ATOMIC_RELAXED)) {
        struct kv_call c = {.opcode = 2};

        kv_worker_run(p->reg, &c);
    }
    return NULL;
}

static void test_txn_gate_exclusive_runs_alone(void)
{
    struct pair p = {0};
    pthread_t r[3], w;

    CU_ASSERT_FATAL(kv_worker_registry_create(&p.reg) == 0);
    CU_ASSERT_FATAL(kv_worker_register(p.reg, 1, handle_read_pair, &p) == 0);
    CU_ASSERT_FATAL(kv_worker_register(p.reg, 2, handle_exclusive, &p) == 0);
    for (int i = 0; i < 3; i++)
        pthread_create(&r[i], NULL, reader_main, &p);
    pthread_create(&w, NULL, writer_main, &p);
    for (int i = 0; i < 250 && (p.writes < 500 || p.reads < 20000); i++)
        usleep(20000); /* up to 5 s: a reader preempted inside a call holds a section up */
    __atomic_store_n(&p.stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 3; i++)
        pthread_join(r[i], NULL);
    pthread_join(w, NULL);
    fprintf(stderr, "(%llu reads, %llu exclusive sections) ", (unsigned long long)p.reads,
            (unsigned long long)p.writes);
    CU_ASSERT_EQUAL(p.mixed, 0);
    CU_ASSERT(p.writes > 20);
    CU_ASSERT(p.reads > 1000);
    kv_worker_registry_destroy(p.reg);
}

/* ---- through a real server ------------------------------------------------------------- */
static int resp_connect(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    {
        struct timeval tv = {10, 0}; /* a server that never answers fails the test, no hang */

        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);

        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads until the bytes received end with want (the last reply expected); returns the
 * malloc'd text, NUL-terminated. */
static char *recv_until(int fd, const char *want, size_t max)
{
    size_t len = 0, cap = 4096, wl = strlen(want);
    char *b = malloc(cap);

    while (len < max) {
        ssize_t n;

        if (len + 4096 > cap)
            b = realloc(b, cap *= 2);
        n = read(fd, b + len, cap - len - 1);
        if (n <= 0)
            break;
        len += (size_t)n;
        b[len] = '\0';
        if (len >= wl && memcmp(b + len - wl, want, wl) == 0)
            break;
    }
    b[len] = '\0';
    return b;
}

/* Reads until n lines ("\r\n") have arrived; returns the malloc'd text. */
static char *recv_lines(int fd, int n)
{
    size_t len = 0, cap = 4096;
    char *b = malloc(cap);
    int seen = 0;

    while (seen < n) {
        ssize_t r;

        if (len + 1024 > cap)
            b = realloc(b, cap *= 2);
        r = read(fd, b + len, cap - len - 1);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            seen += b[len + (size_t)i] == '\n';
        len += (size_t)r;
    }
    b[len] = '\0';
    return b;
}

static struct kv_test_server server;

/* RESP "*N $.. arg .." of argv into b at *len. */
static void resp_cmd(char *b, size_t cap, size_t *len, int argc, const char *const *argv)
{
    *len += (size_t)snprintf(b + *len, cap - *len, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        *len += (size_t)snprintf(b + *len, cap - *len, "$%zu\r\n%s\r\n", strlen(argv[i]),
                                 argv[i]);
}

/* One write of pipelined commands: 19 slow ones (KEYS over 20,000 keys), GET x, SET x NEW,
 * 19 fast ones. With several workers, the GET must still answer the value from before the
 * SET that follows it. Fails on the code before per-connection ordering: the pool split
 * the read's 40 calls over two workers, and the SET ran while the KEYS were still going
 * (20 of 20 rounds answered NEW). */
static void test_txn_pipeline_in_order_with_workers(void)
{
    int fd = resp_connect(server.port), bad = 0;
    size_t cap = 1u << 20, len = 0;
    char *req = malloc(cap), *got;
    static const char *const keys[] = {"KEYS", "*nomatch"}, *const get[] = {"GET", "ox"},
                             *const set_new[] = {"SET", "ox", "NEW"},
                             *const set_old[] = {"SET", "ox", "OLD"},
                             *const exists[] = {"EXISTS", "ox"};

    CU_ASSERT_FATAL(fd >= 0);
    len = (size_t)snprintf(req, cap, "*%d\r\n$4\r\nMSET\r\n", 1 + 2 * 20000);
    for (int i = 0; i < 20000; i++)
        len += (size_t)snprintf(req + len, cap - len, "$%d\r\nof%05d\r\n$1\r\nv\r\n", 7, i);
    CU_ASSERT_FATAL(send_all(fd, req, len) == 0);
    free(recv_lines(fd, 1));
    for (int round = 0; round < 10; round++) {
        len = 0;
        resp_cmd(req, cap, &len, 3, set_old);
        CU_ASSERT_FATAL(send_all(fd, req, len) == 0);
        free(recv_lines(fd, 1));
        len = 0;
        for (int i = 0; i < 19; i++)
            resp_cmd(req, cap, &len, 2, keys);
        resp_cmd(req, cap, &len, 2, get);
        resp_cmd(req, cap, &len, 3, set_new);
        for (int i = 0; i < 19; i++)
            resp_cmd(req, cap, &len, 2, exists);
        CU_ASSERT_FATAL(send_all(fd, req, len) == 0);
        got = recv_lines(fd, 19 + 2 + 1 + 19);
        bad += strstr(got, "$3\r\nOLD\r\n+OK\r\n") == NULL;
        free(got);
    }
    free(req);
    close(fd);
    CU_ASSERT_EQUAL(bad, 0);
}

/* MULTI/EXEC of INCR a, INCR b against other clients reading MGET a b, with several IO
 * and worker threads: the readers never see a and b differ. */
struct iso {
    uint16_t port;
    int stop;
    int mixed, reads;
};

static void *iso_reader(void *arg)
{
    struct iso *x = arg;
    int fd = resp_connect(x->port);
    const char *q = "*3\r\n$4\r\nMGET\r\n$3\r\nisa\r\n$3\r\nisb\r\n";

    while (fd >= 0 && !__atomic_load_n(&x->stop, __ATOMIC_RELAXED)) {
        char buf[256], a[32] = "", b[32] = "";
        ssize_t n;

        if (send_all(fd, q, strlen(q)) != 0)
            break;
        n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
            break;
        buf[n] = '\0';
        /* *2\r\n$L\r\nA\r\n$L\r\nB\r\n (or $-1 while absent) */
        if (sscanf(buf, "*2\r\n$%*d\r\n%31[0-9]\r\n$%*d\r\n%31[0-9]", a, b) == 2 &&
            strcmp(a, b) != 0)
            __atomic_add_fetch(&x->mixed, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&x->reads, 1, __ATOMIC_RELAXED);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void test_txn_exec_isolated_from_other_clients(void)
{
    struct iso x = {.port = server.port};
    pthread_t r[2];
    int fd = resp_connect(server.port), execs = 0;
    const char *tx = "*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$3\r\nisa\r\n"
                     "*3\r\n$6\r\nINCRBY\r\n$3\r\nisb\r\n$1\r\n0\r\n"
                     "*2\r\n$4\r\nINCR\r\n$3\r\nisb\r\n*1\r\n$4\r\nEXEC\r\n";

    CU_ASSERT_FATAL(fd >= 0);
    for (int i = 0; i < 2; i++)
        pthread_create(&r[i], NULL, iso_reader, &x);
    for (int i = 0; i < 2000; i++) {
        char *got;

        if (send_all(fd, tx, strlen(tx)) != 0)
            break;
        got = recv_lines(fd, 8); /* +OK +QUEUED x3, then *3 :a :b :b */
        execs += strstr(got, "EXEC") == NULL && strstr(got, "*3\r\n:") != NULL;
        free(got);
    }
    __atomic_store_n(&x.stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 2; i++)
        pthread_join(r[i], NULL);
    {
        const char *q = "*3\r\n$4\r\nMGET\r\n$3\r\nisa\r\n$3\r\nisb\r\n";
        char *got;

        char a[32] = "", b[32] = "";

        send_all(fd, q, strlen(q));
        got = recv_lines(fd, 5);
        CU_ASSERT(sscanf(got, "*2\r\n$%*d\r\n%31[0-9]\r\n$%*d\r\n%31[0-9]", a, b) == 2);
        CU_ASSERT_STRING_EQUAL(a, b);
        CU_ASSERT(atoi(a) >= execs);
        free(got);
    }
    close(fd);
    fprintf(stderr, "(%d EXECs, %d reads) ", execs, x.reads);
    CU_ASSERT(x.reads > 100);
    CU_ASSERT_EQUAL(x.mixed, 0);
}

/* WATCH through the server, with the commands pipelined: a write by another client between
 * WATCH and EXEC aborts (nil), none does not; EXEC forgets the watches. */
static void test_txn_watch_pipelined(void)
{
    int a = resp_connect(server.port), b = resp_connect(server.port);
    char *got;
    const char *w = "*2\r\n$5\r\nWATCH\r\n$2\r\nwk\r\n";
    const char *tx = "*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$2\r\nwk\r\n$1\r\nA\r\n"
                     "*1\r\n$4\r\nEXEC\r\n";

    CU_ASSERT_FATAL(a >= 0 && b >= 0);
    send_all(a, w, strlen(w));
    free(recv_until(a, "+OK\r\n", 64));
    send_all(b, "*3\r\n$3\r\nSET\r\n$2\r\nwk\r\n$1\r\nB\r\n", 29);
    free(recv_until(b, "+OK\r\n", 64));
    send_all(a, tx, strlen(tx));
    got = recv_until(a, "*-1\r\n", 256);
    CU_ASSERT_STRING_EQUAL(got, "+OK\r\n+QUEUED\r\n*-1\r\n");
    free(got);
    /* not watched any more: the same transaction runs */
    send_all(a, tx, strlen(tx));
    got = recv_until(a, "*1\r\n+OK\r\n", 256);
    CU_ASSERT_STRING_EQUAL(got, "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n");
    free(got);
    /* WATCH, MULTI, ..., EXEC pipelined in one write: nothing changed, it runs */
    {
        char buf[256];

        snprintf(buf, sizeof(buf), "%s%s", w, tx);
        send_all(a, buf, strlen(buf));
        got = recv_until(a, "*1\r\n+OK\r\n", 256);
        CU_ASSERT_STRING_EQUAL(got, "+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n");
        free(got);
    }
    close(a);
    close(b);
}

/* Sends inline commands (one write), expects exactly want back. */
static void expect_io(int fd, const char *send, const char *want)
{
    char *got;

    send_all(fd, send, strlen(send));
    got = recv_until(fd, want, strlen(want) + 4096);
    CU_ASSERT_STRING_EQUAL(got, want);
    if (strcmp(got, want) != 0)
        fprintf(stderr, "\n  sent %s  want %s  got  %s\n", send, want, got);
    free(got);
}

/* A key absent at WATCH that another client creates and deletes again before EXEC aborts
 * the EXEC, as in Redis (every write touches a watched key): by DEL, GETDEL, RENAME away,
 * MOVE away, FLUSHALL, expiry, and a key RENAMEd onto it and away; so do two SWAPDBs
 * that bring the database back as it was. A stale key at WATCH,
 * deleted since, and writes of other keys do not abort. Failed before kv_shm_db_watch:
 * the version check saw "absent, absent" and ran the EXEC. */
static void test_txn_watch_created_and_gone(void)
{
    int a = resp_connect(server.port), b = resp_connect(server.port);
    static const char *const gone[] = {
        "SET wg 1\r\nDEL wg\r\n",                    "SET wg 1\r\nGETDEL wg\r\n",
        "SET wg 1\r\nRENAME wg wg2\r\nDEL wg2\r\n", "SET wg 1\r\nMOVE wg 3\r\nFLUSHALL\r\n",
        "SET wg 1\r\nFLUSHALL\r\n",                 "SET wg 1 PX 1\r\n",
        "SET src 1\r\nRENAME src wg\r\nRENAME wg src\r\nDEL src\r\n",
        "SET wg 1\r\nFLUSHDB\r\n",
    };
    static const char *const want_b[] = {
        "+OK\r\n:1\r\n",       "+OK\r\n$1\r\n1\r\n", "+OK\r\n+OK\r\n:1\r\n", "+OK\r\n:1\r\n+OK\r\n",
        "+OK\r\n+OK\r\n",      "+OK\r\n",            "+OK\r\n+OK\r\n+OK\r\n:1\r\n",
        "+OK\r\n+OK\r\n",
    };
    const char *tx = "MULTI\r\nSET wg A\r\nEXEC\r\n";

    CU_ASSERT_FATAL(a >= 0 && b >= 0);
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++) {
        send_all(a, "DEL wg\r\nWATCH wg\r\n", 18);
        free(recv_until(a, "+OK\r\n", 64)); /* DEL's :0 or :1, WATCH's +OK */
        expect_io(b, gone[i], want_b[i]);
        if (strstr(gone[i], "PX 1"))
            usleep(20000); /* expired since: gone while absent at WATCH and at EXEC */
        expect_io(a, tx, "+OK\r\n+QUEUED\r\n*-1\r\n");
    }
    /* nothing happened to wg: the EXEC runs (other keys written and deleted meanwhile) */
    send_all(a, "DEL wg\r\nWATCH wg\r\n", 18);
    free(recv_until(a, "+OK\r\n", 64));
    expect_io(b, "SET other 1\r\nDEL other\r\n", "+OK\r\n:1\r\n");
    expect_io(a, tx, "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n");
    /* a stale key at WATCH, removed since (lazily, by EXISTS): no logical change */
    expect_io(b, "SET wg 1 PX 1\r\n", "+OK\r\n");
    usleep(20000);
    expect_io(a, "WATCH wg\r\n", "+OK\r\n");
    expect_io(b, "EXISTS wg\r\n", ":0\r\n");
    expect_io(a, tx, "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n");
    /* two SWAPDBs between WATCH and EXEC bring the same item (or none) back: Redis touches
     * the key at each swap, and so does the database's swap stamp here */
    expect_io(b, "SET sw 1\r\n", "+OK\r\n");
    expect_io(a, "WATCH sw\r\n", "+OK\r\n");
    expect_io(b, "SWAPDB 0 1\r\nSWAPDB 0 1\r\n", "+OK\r\n+OK\r\n");
    expect_io(a, "MULTI\r\nSET sw A\r\nEXEC\r\n", "+OK\r\n+QUEUED\r\n*-1\r\n");
    expect_io(b, "SELECT 1\r\nSET sw1 1\r\nSELECT 0\r\n", "+OK\r\n+OK\r\n+OK\r\n");
    expect_io(a, "WATCH sw1\r\n", "+OK\r\n"); /* absent in 0, present in 1 */
    expect_io(b, "SWAPDB 0 1\r\nSWAPDB 0 1\r\n", "+OK\r\n+OK\r\n");
    expect_io(a, "MULTI\r\nSET sw1 A\r\nEXEC\r\n", "+OK\r\n+QUEUED\r\n*-1\r\n");
    /* a key present at WATCH, DEL and SET again to the same value: aborts */
    expect_io(a, "WATCH wg\r\n", "+OK\r\n");
    expect_io(b, "DEL wg\r\nSET wg A\r\n", ":1\r\n+OK\r\n");
    expect_io(a, tx, "+OK\r\n+QUEUED\r\n*-1\r\n");
    close(a);
    close(b);
}

/* RESET forgets the watches (Redis's RESET unwatches); before the fix it kept them and
 * this EXEC answered nil. */
static void test_txn_reset_unwatches(void)
{
    int a = resp_connect(server.port), b = resp_connect(server.port);

    CU_ASSERT_FATAL(a >= 0 && b >= 0);
    expect_io(a, "WATCH rk\r\nRESET\r\n", "+OK\r\n+RESET\r\n");
    expect_io(b, "SET rk 1\r\n", "+OK\r\n");
    expect_io(a, "MULTI\r\nSET rk A\r\nEXEC\r\n", "+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n");
    /* and RESET inside MULTI discards it and unwatches */
    expect_io(a, "WATCH rk\r\nMULTI\r\nSET rk B\r\nRESET\r\n", "+OK\r\n+OK\r\n+QUEUED\r\n+RESET\r\n");
    expect_io(b, "SET rk 2\r\n", "+OK\r\n");
    expect_io(a, "GET rk\r\nMULTI\r\nSET rk C\r\nEXEC\r\n",
              "$1\r\n2\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n");
    close(a);
    close(b);
}

/* Connection commands queued in MULTI run at EXEC, in order, and never when the
 * transaction is DISCARDed or aborted (Redis). Before the fix CLIENT SETNAME and CONFIG SET
 * took effect when queued. A command pipelined after the EXEC sees their effect. */
static void test_txn_local_commands_run_at_exec(void)
{
    int a = resp_connect(server.port), b = resp_connect(server.port);

    CU_ASSERT_FATAL(a >= 0 && b >= 0);
    expect_io(a, "MULTI\r\nCLIENT SETNAME n1\r\nCONFIG SET timeout 77\r\nDISCARD\r\n"
                 "CLIENT GETNAME\r\nCONFIG GET timeout\r\n",
              "+OK\r\n+QUEUED\r\n+QUEUED\r\n+OK\r\n$-1\r\n"
              "*2\r\n$7\r\ntimeout\r\n$1\r\n0\r\n");
    /* run at EXEC, in order with the queued writes, seen by what follows in the pipeline */
    expect_io(a, "MULTI\r\nSET lk 1\r\nCLIENT SETNAME n2\r\nCLIENT GETNAME\r\nGET lk\r\nEXEC\r\n"
                 "CLIENT GETNAME\r\n",
              "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n"
              "*4\r\n+OK\r\n+OK\r\n$2\r\nn2\r\n$1\r\n1\r\n$2\r\nn2\r\n");
    /* a WATCH abort: nothing runs */
    expect_io(a, "WATCH lk\r\n", "+OK\r\n");
    expect_io(b, "SET lk 2\r\n", "+OK\r\n");
    expect_io(a, "MULTI\r\nCLIENT SETNAME n3\r\nEXEC\r\nCLIENT GETNAME\r\n",
              "+OK\r\n+QUEUED\r\n*-1\r\n$2\r\nn2\r\n");
    /* an EXECABORT: nothing runs */
    expect_io(a, "MULTI\r\nCLIENT SETNAME n4\r\nNOSUCHCMD\r\nEXEC\r\nCLIENT GETNAME\r\n",
              "+OK\r\n+QUEUED\r\n-ERR unknown command 'NOSUCHCMD', with args beginning with: \r\n"
              "-EXECABORT Transaction discarded because of previous errors.\r\n$2\r\nn2\r\n");
    /* HELLO 3 at EXEC: the protocol of what follows; MONITOR is refused inside EXEC */
    expect_io(a, "MULTI\r\nMONITOR\r\nEXEC\r\n",
              "+OK\r\n+QUEUED\r\n*1\r\n-ERR MONITOR isn't allowed for DENY BLOCKING client\r\n");
    close(a);
    close(b);
}

struct incr_arg {
    uint16_t port;
    int n;
};

/* n INCR gd, pipelined 100 at a time. */
static void *incr_main(void *arg)
{
    struct incr_arg *a = arg;
    int fd = resp_connect(a->port);
    char req[100 * 14 + 1];
    size_t len = 0;

    for (int i = 0; i < 100; i++)
        len += (size_t)snprintf(req + len, sizeof(req) - len, "INCR gd\r\n");
    for (int done = 0; fd >= 0 && done < a->n; done += 100) {
        send_all(fd, req, len);
        free(recv_lines(fd, 100));
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* One GETDEL's answer: the number, or -1 for nil. */
static long long getdel_one(int fd, const char *key)
{
    char req[64], b[256];
    size_t len = 0;

    snprintf(req, sizeof(req), "GETDEL %s\r\n", key);
    send_all(fd, req, strlen(req));
    for (;;) {
        ssize_t n = read(fd, b + len, sizeof(b) - 1 - len);
        char *nl;

        if (n <= 0)
            return -2;
        len += (size_t)n;
        b[len] = '\0';
        if (!(nl = strstr(b, "\r\n")))
            continue;
        if (b[1] == '-')
            return -1;
        if (strstr(nl + 2, "\r\n"))
            return atoll(nl + 2);
    }
}

/* GETDEL against a concurrent writer on another worker: the value answered and the
 * removal are one step, so the values GETDEL answers (plus what is left) add up to every
 * INCR. Before the compare-and-delete, an INCR landing between GETDEL's read and its
 * delete was removed unseen and the sum came out short. */
static void test_txn_getdel_atomic_with_writer(void)
{
    struct incr_arg ia = {server.port, 20000};
    int b = resp_connect(server.port);
    long long sum = 0, v;
    pthread_t th;
    int rounds = 0;

    CU_ASSERT_FATAL(b >= 0);
    getdel_one(b, "gd");
    pthread_create(&th, NULL, incr_main, &ia);
    for (;;) {
        v = getdel_one(b, "gd");
        CU_ASSERT(v >= -1);
        if (v < -1)
            break;
        if (v > 0)
            sum += v;
        if (++rounds % 64 == 0 && pthread_tryjoin_np(th, NULL) == 0)
            break;
    }
    v = getdel_one(b, "gd"); /* what is left, after the writer */
    if (v > 0)
        sum += v;
    fprintf(stderr, "(%d GETDELs, sum %lld) ", rounds, sum);
    CU_ASSERT_EQUAL(sum, ia.n);
    close(b);
}

struct exec_loop {
    uint16_t port;
    volatile int stop;
    int execs;
};

/* Transactions writing generation n into both ta and tb, 20 pipelined at a time. */
static void *exec_loop_main(void *arg)
{
    struct exec_loop *e = arg;
    int fd = resp_connect(e->port);
    char req[20 * 64];

    while (fd >= 0 && !e->stop) {
        size_t len = 0;

        for (int i = 0; i < 20; i++, e->execs++)
            len += (size_t)snprintf(req + len, sizeof(req) - len,
                                    "MULTI\r\nSET ta %d\r\nSET tb %d\r\nEXEC\r\n", e->execs,
                                    e->execs);
        send_all(fd, req, len);
        free(recv_lines(fd, 20 * 5));
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

/* The value of key in s, or "" */
static void value_of(struct kv_shm_store *s, const char *k, char *out, size_t cap)
{
    struct vbuf got = {0};

    out[0] = '\0';
    if (kv_shm_get(s, k, strlen(k), vbuf_alloc, &got, NULL, NULL) == 0)
        snprintf(out, cap, "%.*s", (int)got.len, (const char *)got.p);
    kv_mem_free(KV_MOD_TEST, got.p);
}

/* A BGSAVE while EXECs run never holds part of one: the file's ta and tb agree. Before
 * the gate (save.c: a scan an EXEC ran during is redone, the last try holds EXECs off)
 * the scan read ta and tb at two moments with EXECs in between, and they differed. */
static void test_txn_bgsave_never_half_an_exec(void)
{
    struct kv_test_server srv = {0};
    char rdb[128], arg_rdb[160];
    const char *args[] = {"--workers", "2", "--rdb-file", rdb, NULL};
    int fd, agree = 0, rounds = 0;

    (void)arg_rdb;
    snprintf(rdb, sizeof(rdb), "/tmp/kvtxn-%d.rdb", (int)getpid());
    unlink(rdb);
    CU_ASSERT_FATAL(kv_test_server_start(&srv, args) == 0);
    fd = resp_connect(srv.port);
    CU_ASSERT_FATAL(fd >= 0);
    /* 60,000 keys, so that a scan takes a while */
    for (int m = 0; m < 600; m++) {
        char req[100 * 40 + 16];
        size_t len = (size_t)snprintf(req, sizeof(req), "MSET");

        for (int i = 0; i < 100; i++)
            len += (size_t)snprintf(req + len, sizeof(req) - len, " fill:%d:%d v", m, i);
        len += (size_t)snprintf(req + len, sizeof(req) - len, "\r\n");
        send_all(fd, req, len);
        free(recv_until(fd, "+OK\r\n", 64));
    }
    for (rounds = 0; rounds < 3; rounds++) {
        struct exec_loop e = {srv.port, 0, 0};
        pthread_t th;
        char *got;

        pthread_create(&th, NULL, exec_loop_main, &e);
        while (e.execs < 200)
            usleep(1000);
        send_all(fd, "BGSAVE\r\n", 8);
        free(recv_lines(fd, 1));
        for (int w = 0; w < 3000; w++) { /* until it is written */
            send_all(fd, "INFO persistence\r\n", 18);
            got = recv_until(fd, "\r\n\r\n", 8192);
            int done = strstr(got, "rdb_bgsave_in_progress:0") != NULL;
            free(got);
            if (done)
                break;
            usleep(10000);
        }
        e.stop = 1;
        pthread_join(th, NULL);
        {
            struct kv_config c;
            struct kv_shm_store *s;
            struct kv_rdb_counts cnt;
            char err[256], a[32], b[32];

            cfg_make(&c, "rdb", 64 << 20);
            CU_ASSERT_FATAL(kv_shm_store_open(&c, NULL, 0, &s) == 0);
            CU_ASSERT_EQUAL(kv_rdb_load(s, &c, rdb, &cnt, err, sizeof(err)), 0);
            value_of(s, "ta", a, sizeof(a));
            value_of(s, "tb", b, sizeof(b));
            CU_ASSERT_STRING_EQUAL(a, b);
            agree += strcmp(a, b) == 0;
            fprintf(stderr, "(%d EXECs, %llu keys, ta %s tb %s) ", e.execs,
                    (unsigned long long)cnt.strings, a, b);
            kv_shm_store_close(s);
            kv_shm_store_unlink(&c);
        }
    }
    CU_ASSERT_EQUAL(agree, 3);
    close(fd);
    kv_test_server_stop(&srv);
    unlink(rdb);
}

static int server_init(void)
{
    static const char *const args[] = {"--workers", "2", "--io-threads", "2", NULL};

    return kv_test_server_start(&server, args) == 0 ? 0 : -1;
}

static int server_clean(void)
{
    if (server.pid > 0)
        kv_test_server_stop(&server);
    return 0;
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    s = CU_add_suite("txn", NULL, NULL);
    CU_add_test(s, "test_txn_store_crash_all_or_nothing", test_txn_store_crash_all_or_nothing);
    CU_add_test(s, "test_txn_store_no_eviction_inside", test_txn_store_no_eviction_inside);
    CU_add_test(s, "test_txn_store_version", test_txn_store_version);
    CU_add_test(s, "test_txn_store_swapdb_crash", test_txn_store_swapdb_crash);
    CU_add_test(s, "test_txn_gate_exclusive_runs_alone", test_txn_gate_exclusive_runs_alone);
    s = CU_add_suite("txn_server", server_init, server_clean);
    CU_add_test(s, "test_txn_pipeline_in_order_with_workers",
                test_txn_pipeline_in_order_with_workers);
    CU_add_test(s, "test_txn_exec_isolated_from_other_clients",
                test_txn_exec_isolated_from_other_clients);
    CU_add_test(s, "test_txn_watch_pipelined", test_txn_watch_pipelined);
    CU_add_test(s, "test_txn_watch_created_and_gone", test_txn_watch_created_and_gone);
    CU_add_test(s, "test_txn_reset_unwatches", test_txn_reset_unwatches);
    CU_add_test(s, "test_txn_local_commands_run_at_exec", test_txn_local_commands_run_at_exec);
    CU_add_test(s, "test_txn_getdel_atomic_with_writer", test_txn_getdel_atomic_with_writer);
    CU_add_test(s, "test_txn_bgsave_never_half_an_exec", test_txn_bgsave_never_half_an_exec);
    return kv_test_run_all();
}
