/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_rdb.c -- Redis RDB files both ways, with the real Redis 7.0
 * tools: a file libevkv writes (SAVE, and BGSAVE while writers run) passes
 * redis-check-rdb and redis-server loads it with every key, value and TTL;
 * a file redis-server writes (strings of every encoding, TTLs, and keys of
 * every other type, a stream with a consumer group, a function) is imported
 * by --load-rdb, other types skipped and counted; a damaged file is refused
 * and changes nothing. redis-server and redis-check-rdb must be installed
 * (a missing tool fails the test). */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
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
#include "kv_err.h"
#include "kv_test_util.h"
#include "rdb.h"

static char tmp[64];
static char server_bin[PATH_MAX];

static int suite_init(void)
{
    kv_test_bin_path("libevkv", server_bin, sizeof(server_bin));
    snprintf(tmp, sizeof(tmp), "/tmp/test_rdb.%d", (int)getpid());
    return mkdir(tmp, 0700) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static int sh(const char *cmd)
{
    int st = system(cmd);

    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* ---- a minimal RESP client (binary-safe) ------------------------------------ */
static int resp_connect(uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct timeval tv = {.tv_sec = 10};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    return fd;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n) {
        ssize_t k = write(fd, c, n);

        if (k <= 0)
            return -1;
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Sends argv (lens may be NULL: strlen) as one command, in one write (small
 * writes would wait for delayed ACKs). */
static int resp_send(int fd, int argc, const char *const *argv, const size_t *lens)
{
    size_t cap = 64, len;
    char *buf;
    int rc;

    for (int i = 0; i < argc; i++)
        cap += (lens ? lens[i] : strlen(argv[i])) + 32;
    buf = malloc(cap);
    if (!buf)
        return -1;
    len = (size_t)snprintf(buf, cap, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        size_t n = lens ? lens[i] : strlen(argv[i]);

        len += (size_t)snprintf(buf + len, cap - len, "$%zu\r\n", n);
        memcpy(buf + len, argv[i], n);
        len += n;
        memcpy(buf + len, "\r\n", 2);
        len += 2;
    }
    rc = write_all(fd, buf, len);
    free(buf);
    return rc;
}

static int read_byte(int fd, char *c)
{
    return read(fd, c, 1) == 1 ? 0 : -1;
}

static int read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    char c;

    while (read_byte(fd, &c) == 0) {
        if (c == '\n') {
            if (n && buf[n - 1] == '\r')
                n--;
            buf[n] = '\0';
            return 0;
        }
        if (n + 1 < cap)
            buf[n++] = c;
    }
    return -1;
}

/* Reads one reply. A bulk string comes back malloc'd in *bulk (NULL for
 * nil) with *blen; other replies as their first line in line. Returns the
 * type byte, or -1. Arrays are not read (not needed here). */
static int resp_read(int fd, char *line, size_t cap, char **bulk, size_t *blen)
{
    long long n;

    *bulk = NULL;
    *blen = 0;
    if (read_line(fd, line, cap) != 0 || !line[0])
        return -1;
    if (line[0] != '$')
        return line[0];
    n = atoll(line + 1);
    if (n < 0)
        return '$';
    *bulk = malloc((size_t)n + 2);
    for (size_t got = 0; got < (size_t)n + 2;) {
        ssize_t k = read(fd, *bulk + got, (size_t)n + 2 - got);

        if (k <= 0) {
            free(*bulk);
            *bulk = NULL;
            return -1;
        }
        got += (size_t)k;
    }
    *blen = (size_t)n;
    return '$';
}

/* One command, its reply's first line into line (bulk: freed). */
static int resp_simple(uint16_t port, const char *cmd, char *line, size_t cap)
{
    const char *argv[4];
    char copy[256], *save = NULL;
    int argc = 0, fd = resp_connect(port), t;
    char *bulk;
    size_t blen;

    if (fd < 0)
        return -1;
    snprintf(copy, sizeof(copy), "%s", cmd);
    for (char *w = strtok_r(copy, " ", &save); w && argc < 4; w = strtok_r(NULL, " ", &save))
        argv[argc++] = w;
    t = resp_send(fd, argc, argv, NULL) == 0 ? resp_read(fd, line, cap, &bulk, &blen) : -1;
    if (t == '$' && bulk) {
        snprintf(line, cap, "%.*s", (int)(blen < cap - 1 ? blen : cap - 1), bulk);
        free(bulk);
    }
    close(fd);
    return t;
}

/* ---- redis-server -------------------------------------------------------------- */
static pid_t redis_start(uint16_t port, const char *dir, const char *file)
{
    char portstr[8], log[256], line[64];
    pid_t pid;

    snprintf(portstr, sizeof(portstr), "%u", port);
    snprintf(log, sizeof(log), "%s/redis-%u.log", tmp, port);
    pid = fork();
    if (pid == 0) {
        execlp("redis-server", "redis-server", "--port", portstr, "--bind", "127.0.0.1",
               "--dir", dir, "--dbfilename", file, "--save", "", "--appendonly", "no",
               "--logfile", log, "--daemonize", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        int st;

        if (waitpid(pid, &st, WNOHANG) == pid)
            return -1;
        if (resp_simple(port, "PING", line, sizeof(line)) == '+')
            return pid;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static void redis_stop(pid_t pid)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
}

/* ---- the data ------------------------------------------------------------------ */
#define NKEYS 2000

/* Key i's value: varied sizes (empty, small, integers, compressible, large,
 * binary with NULs), deterministic. */
static size_t value_of(int i, uint8_t *buf, size_t cap)
{
    size_t n;

    switch (i % 7) {
    case 0: return 0;
    case 1: return (size_t)snprintf((char *)buf, cap, "%d", i * 37 - 5000); /* int-encoded */
    case 2: n = (size_t)(i % 300); for (size_t k = 0; k < n; k++) buf[k] = 'z'; return n;
    case 3: n = 70000 + (size_t)i; /* large, LZF in Redis */
        for (size_t k = 0; k < n; k++) buf[k] = (uint8_t)('a' + (k / 7) % 26);
        return n;
    case 4: n = 64; for (size_t k = 0; k < n; k++) buf[k] = (uint8_t)(k * 31 + (size_t)i);
        return n; /* binary, NULs */
    default: return (size_t)snprintf((char *)buf, cap, "value of key %d", i);
    }
}

static size_t key_of(int i, char *buf, size_t cap)
{
    return (size_t)snprintf(buf, cap, "%s:%d", i % 5 == 0 ? "ttl" : "k", i);
}

/* Writes keys 0..n through the binary client (every fifth with a TTL). */
static void fill_libevkv(uint16_t port, int n)
{
    static uint8_t v[80000];
    struct kv_client *c;
    char k[32];

    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", port, 10000, &c) == 0);
    for (int i = 0; i < n; i++) {
        size_t kl = key_of(i, k, sizeof(k)), vl = value_of(i, v, sizeof(v));
        struct kv_set_opts o = {.ttl_ms = i % 5 == 0 ? 3600000 + (uint64_t)i * 1000 : 0};

        CU_ASSERT(kv_client_set(c, k, kl, v, vl, &o, NULL) == 0);
    }
    kv_client_close(c);
}

/* Checks keys 0..n on a RESP server (redis-server): values byte-exact,
 * TTLs where set. Returns the number that matched. */
static int check_resp(uint16_t port, int n)
{
    static uint8_t v[80000];
    char k[32], line[128];
    int fd = resp_connect(port), ok = 0;

    if (fd < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        size_t kl = key_of(i, k, sizeof(k)), vl = value_of(i, v, sizeof(v)), blen;
        const char *get[2] = {"GET", k}, *pttl[2] = {"PTTL", k};
        size_t gl[2] = {3, kl}, pl[2] = {4, kl};
        char *bulk;
        long long ttl;
        int good;

        if (resp_send(fd, 2, get, gl) != 0 ||
            resp_read(fd, line, sizeof(line), &bulk, &blen) != '$')
            break;
        good = bulk && blen == vl && memcmp(bulk, v, vl) == 0;
        free(bulk);
        if (resp_send(fd, 2, pttl, pl) != 0 ||
            resp_read(fd, line, sizeof(line), &bulk, &blen) != ':')
            break;
        ttl = atoll(line + 1);
        if (i % 5 == 0)
            good = good && ttl > 3600000 + (long long)i * 1000 - 120000 &&
                   ttl <= 3600000 + (long long)i * 1000;
        else
            good = good && ttl == -1;
        if (!good)
            fprintf(stderr, "key %s: value or ttl (%lld) differs\n", k, ttl);
        ok += good;
    }
    close(fd);
    return ok;
}

/* ---- tests --------------------------------------------------------------------- */
static void test_rdb_crc64_check_value(void)
{
    CU_ASSERT_EQUAL(kv_rdb_crc64(0, "123456789", 9), 0xe9c6d914c4b8d9caull);
    CU_ASSERT_EQUAL(kv_rdb_crc64(kv_rdb_crc64(0, "1234", 4), "56789", 5), 0xe9c6d914c4b8d9caull);
}

static int wait_bgsave(uint16_t port, long long before)
{
    char line[64];

    for (int i = 0; i < 1000; i++) {
        if (resp_simple(port, "LASTSAVE", line, sizeof(line)) == ':' &&
            atoll(line + 1) > before)
            return 0;
        usleep(10000);
    }
    return -1;
}

/* SAVE: redis-check-rdb accepts the file, redis-server loads every key. */
static void test_rdb_save_loads_in_redis(void)
{
    struct kv_test_server s = {0};
    char rdb[128], cmd[512], line[256], log[128];
    uint16_t rport = kv_test_free_port();
    pid_t redis;

    CU_ASSERT_FATAL(sh("command -v redis-server >/dev/null && command -v redis-check-rdb "
                       ">/dev/null") == 0);
    snprintf(rdb, sizeof(rdb), "%s/save.rdb", tmp);
    const char *args[] = {"--rdb-file", rdb, "--memory", "256m", NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    fill_libevkv(s.port, NKEYS);
    CU_ASSERT_EQUAL(resp_simple(s.port, "LASTSAVE", line, sizeof(line)), ':');
    CU_ASSERT_STRING_EQUAL(line, ":0");
    CU_ASSERT_EQUAL(resp_simple(s.port, "SAVE", line, sizeof(line)), '+');
    CU_ASSERT_STRING_EQUAL(line, "+OK");
    CU_ASSERT_EQUAL(resp_simple(s.port, "LASTSAVE", line, sizeof(line)), ':');
    CU_ASSERT(atoll(line + 1) >= (long long)time(NULL) - 60);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);

    snprintf(log, sizeof(log), "%s/check.log", tmp);
    snprintf(cmd, sizeof(cmd), "redis-check-rdb %s > %s 2>&1", rdb, log);
    CU_ASSERT_EQUAL(sh(cmd), 0);
    {
        char *text = kv_test_slurp(log), want[64];

        CU_ASSERT_FATAL(text != NULL);
        CU_ASSERT(strstr(text, "RDB looks OK") != NULL);
        snprintf(want, sizeof(want), "[info] %d keys read", NKEYS);
        CU_ASSERT(strstr(text, want) != NULL);
        snprintf(want, sizeof(want), "[info] %d expires", NKEYS / 5);
        CU_ASSERT(strstr(text, want) != NULL);
        free(text);
    }
    redis = redis_start(rport, tmp, "save.rdb");
    CU_ASSERT_FATAL(redis > 0);
    CU_ASSERT_EQUAL(resp_simple(rport, "DBSIZE", line, sizeof(line)), ':');
    CU_ASSERT_EQUAL(atoll(line + 1), NKEYS);
    CU_ASSERT_EQUAL(check_resp(rport, NKEYS), NKEYS);
    redis_stop(redis);
}

/* Databases: SAVE writes every non-empty database under its SELECTDB (redis-server loads
 * each key into its database), and --load-rdb puts each back into its own. */
static void test_rdb_databases_round_trip(void)
{
    struct kv_test_server s = {0}, s2 = {0};
    char rdb[128], cmd[1024];
    uint16_t rport = kv_test_free_port();
    pid_t redis;

    snprintf(rdb, sizeof(rdb), "%s/dbs.rdb", tmp);
    const char *args[] = {"--rdb-file", rdb, NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    snprintf(cmd, sizeof(cmd),
             "redis-cli -p %u SET k zero >/dev/null && redis-cli -p %u -n 3 SET k three "
             ">/dev/null && redis-cli -p %u -n 3 SET t v EX 1000 >/dev/null && "
             "redis-cli -p %u -n 15 SET only15 x >/dev/null && redis-cli -p %u SAVE | grep -qx OK",
             s.port, s.port, s.port, s.port, s.port);
    CU_ASSERT_EQUAL(sh(cmd), 0);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    snprintf(cmd, sizeof(cmd), "redis-check-rdb %s 2>&1 | grep -q 'RDB looks OK'", rdb);
    CU_ASSERT_EQUAL(sh(cmd), 0);
    redis = redis_start(rport, tmp, "dbs.rdb");
    CU_ASSERT_FATAL(redis > 0);
    snprintf(cmd, sizeof(cmd),
             "redis-cli -p %u GET k | grep -qx zero && redis-cli -p %u -n 3 GET k | grep -qx three "
             "&& redis-cli -p %u -n 15 GET only15 | grep -qx x && "
             "redis-cli -p %u -n 3 DBSIZE | grep -qx 2 && redis-cli -p %u DBSIZE | grep -qx 1",
             rport, rport, rport, rport, rport);
    CU_ASSERT_EQUAL(sh(cmd), 0);
    redis_stop(redis);
    const char *args2[] = {"--load-rdb", rdb, NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s2, args2) == 0);
    snprintf(cmd, sizeof(cmd),
             "redis-cli -p %u GET k | grep -qx zero && redis-cli -p %u -n 3 GET k | grep -qx three "
             "&& redis-cli -p %u -n 15 GET only15 | grep -qx x && "
             "redis-cli -p %u -n 3 TTL t | grep -qxE '9[0-9][0-9]|1000' && " /* rounded, as Redis */
             "redis-cli -p %u DBSIZE | grep -qx 1",
             s2.port, s2.port, s2.port, s2.port, s2.port);
    CU_ASSERT_EQUAL(sh(cmd), 0);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s2), 0);
}

/* SAVE needs --rdb-file; SAVE during a BGSAVE is refused. */
static void test_rdb_save_without_file_refused(void)
{
    struct kv_test_server s = {0};
    char line[256];

    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    CU_ASSERT_EQUAL(resp_simple(s.port, "SAVE", line, sizeof(line)), '-');
    CU_ASSERT(strstr(line, "no --rdb-file") != NULL);
    CU_ASSERT_EQUAL(resp_simple(s.port, "BGSAVE", line, sizeof(line)), '-');
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

/* BGSAVE while writers run: the file is valid, has no duplicate key
 * (redis-server refuses one), every key untouched during the save is there
 * exactly, and every written key holds a value it was given. */
struct writer_arg {
    uint16_t port;
    volatile int *stop;
    int id;
    unsigned long writes;
};

static void *writer(void *p)
{
    struct writer_arg *a = p;
    struct kv_client *c;
    char k[32], v[64];

    if (kv_client_connect("127.0.0.1", a->port, 10000, &c) != 0)
        return NULL;
    while (!*a->stop && a->id == 3) { /* new keys only: the index grows during the saves */
        size_t kl = (size_t)snprintf(k, sizeof(k), "grow:%lu", a->writes);
        size_t vl = (size_t)snprintf(v, sizeof(v), "grow:%lu=%lu", a->writes, a->writes);

        if (kv_client_set(c, k, kl, v, vl, NULL, NULL) != 0)
            break;
        a->writes++;
    }
    while (!*a->stop) {
        int i = (int)(a->writes % 3000);
        size_t kl = (size_t)snprintf(k, sizeof(k), "hot:%d:%d", a->id, i);
        size_t vl = (size_t)snprintf(v, sizeof(v), "hot:%d:%d=%lu", a->id, i, a->writes);

        if (kv_client_set(c, k, kl, v, vl, NULL, NULL) != 0)
            break;
        if (a->writes % 7 == 0)
            kv_client_del1(c, k, kl, NULL);
        a->writes++;
    }
    kv_client_close(c);
    return NULL;
}

static void test_rdb_bgsave_while_writers_run(void)
{
    struct kv_test_server s = {0};
    struct writer_arg wa[4];
    pthread_t th[4];
    volatile int stop = 0;
    char rdb[128], cmd[512], line[256];
    uint16_t rport = kv_test_free_port();
    long long before, keys;
    pid_t redis;

    snprintf(rdb, sizeof(rdb), "%s/bg.rdb", tmp);
    const char *args[] = {"--rdb-file", rdb, "--memory", "256m", NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    fill_libevkv(s.port, NKEYS); /* the cold keys: not written during the save */
    for (int i = 0; i < 4; i++) {
        wa[i] = (struct writer_arg){.port = s.port, .stop = &stop, .id = i};
        pthread_create(&th[i], NULL, writer, &wa[i]);
    }
    usleep(300000); /* the index grows while the hot keys are created */
    before = 0;
    for (int round = 0; round < 3; round++) {
        CU_ASSERT_EQUAL(resp_simple(s.port, "BGSAVE", line, sizeof(line)), '+');
        CU_ASSERT_STRING_EQUAL(line, "+Background saving started");
        /* a second one while it runs is refused, or it has already ended */
        CU_ASSERT_EQUAL(wait_bgsave(s.port, before), 0);
        resp_simple(s.port, "LASTSAVE", line, sizeof(line));
        before = atoll(line + 1);
        if (round < 2)
            sleep(1); /* LASTSAVE has a one-second resolution */
    }
    stop = 1;
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    fprintf(stderr, "writers: %lu + %lu + %lu writes, %lu new keys during the saves\n",
            wa[0].writes, wa[1].writes, wa[2].writes, wa[3].writes);
    CU_ASSERT(wa[0].writes > 100);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);

    snprintf(cmd, sizeof(cmd), "redis-check-rdb %s > %s/bgcheck.log 2>&1", rdb, tmp);
    CU_ASSERT_EQUAL(sh(cmd), 0);
    redis = redis_start(rport, tmp, "bg.rdb"); /* refuses a duplicated key */
    CU_ASSERT_FATAL(redis > 0);
    CU_ASSERT_EQUAL(check_resp(rport, NKEYS), NKEYS);
    CU_ASSERT_EQUAL(resp_simple(rport, "DBSIZE", line, sizeof(line)), ':');
    keys = atoll(line + 1);
    CU_ASSERT(keys > NKEYS && keys <= NKEYS + 9000 + (long long)wa[3].writes);
    /* every hot key holds a value of its own (key=seq), never torn */
    {
        int fd = resp_connect(rport), bad = 0, seen = 0;

        for (int w = 0; w < 3 && fd >= 0; w++)
            for (int i = 0; i < 3000; i++) {
                char k[32], *bulk;
                size_t kl = (size_t)snprintf(k, sizeof(k), "hot:%d:%d", w, i), blen;
                const char *get[2] = {"GET", k};
                size_t gl[2] = {3, kl};

                if (resp_send(fd, 2, get, gl) != 0 ||
                    resp_read(fd, line, sizeof(line), &bulk, &blen) != '$') {
                    bad++;
                    break;
                }
                if (bulk) {
                    seen++;
                    if (blen <= kl + 1 || memcmp(bulk, k, kl) != 0 || bulk[kl] != '=')
                        bad++;
                    free(bulk);
                }
            }
        for (unsigned long i = 0; i < wa[3].writes && fd >= 0 && !bad; i++) {
            char k[32], want[64], *bulk;
            size_t kl = (size_t)snprintf(k, sizeof(k), "grow:%lu", i), blen;
            size_t wl = (size_t)snprintf(want, sizeof(want), "grow:%lu=%lu", i, i);
            const char *get[2] = {"GET", k};
            size_t gl[2] = {3, kl};

            if (resp_send(fd, 2, get, gl) != 0 ||
                resp_read(fd, line, sizeof(line), &bulk, &blen) != '$') {
                bad++;
                break;
            }
            if (bulk) { /* a new key: in the file if it was there in time */
                seen++;
                if (blen != wl || memcmp(bulk, want, wl) != 0)
                    bad++;
                free(bulk);
            }
        }
        if (fd >= 0)
            close(fd);
        CU_ASSERT_EQUAL(bad, 0);
        CU_ASSERT_EQUAL(seen, keys - NKEYS);
    }
    redis_stop(redis);
}

/* A file redis-server writes: every string imported, every other type
 * skipped and counted. */
static void test_rdb_load_file_written_by_redis(void)
{
    static uint8_t v[80000];
    struct kv_test_server s = {0};
    uint16_t rport = kv_test_free_port();
    char cmd[2048], line[256], rdb[128];
    struct kv_client *c;
    char *log;
    pid_t redis;
    int fd;

    redis = redis_start(rport, tmp, "from-redis.rdb");
    CU_ASSERT_FATAL(redis > 0);
    fd = resp_connect(rport);
    CU_ASSERT_FATAL(fd >= 0);
    for (int i = 0; i < NKEYS; i++) { /* the same strings and TTLs, through RESP */
        char k[32], ms[32], *bulk;
        size_t kl = key_of(i, k, sizeof(k)), vl = value_of(i, v, sizeof(v)), blen;
        const char *set[5] = {"SET", k, (const char *)v, "PX", ms};
        size_t sl[5] = {3, kl, vl, 2, 0};

        sl[4] = (size_t)snprintf(ms, sizeof(ms), "%llu", 3600000ull + (unsigned long long)i * 1000);
        CU_ASSERT(resp_send(fd, i % 5 == 0 ? 5 : 3, set, sl) == 0);
        CU_ASSERT(resp_read(fd, line, sizeof(line), &bulk, &blen) == '+');
    }
    close(fd);
    /* every other type, small (listpack) and large (real structures) */
    snprintf(cmd, sizeof(cmd),
             "cd %s && redis-cli -p %u RPUSH l1 a b c >/dev/null && "
             "redis-cli -p %u SADD s1 1 2 3 >/dev/null && "
             "redis-cli -p %u SADD s2 a b >/dev/null && "
             "redis-cli -p %u HSET h1 f v >/dev/null && redis-cli -p %u ZADD z1 1 a >/dev/null && "
             "for i in $(seq 1 600); do echo \"RPUSH l2 item$i\"; echo \"SADD s3 m$i\"; "
             "echo \"HSET h2 f$i v$i\"; echo \"ZADD z2 $i m$i\"; done | "
             "redis-cli -p %u >/dev/null && "
             "redis-cli -p %u XADD st '*' f v >/dev/null && "
             "redis-cli -p %u XGROUP CREATE st g 0 >/dev/null && "
             "redis-cli -p %u XREADGROUP GROUP g c1 COUNT 1 STREAMS st '>' >/dev/null && "
             "redis-cli -p %u FUNCTION LOAD \"$(printf '#!lua name=lib1\\n"
             "redis.register_function(\\047f1\\047, function() return 1 end)')\" >/dev/null && "
             "redis-cli -p %u SAVE >/dev/null",
             tmp, rport, rport, rport, rport, rport, rport, rport, rport, rport, rport, rport);
    CU_ASSERT_EQUAL(sh(cmd), 0);
    redis_stop(redis);

    snprintf(rdb, sizeof(rdb), "%s/from-redis.rdb", tmp);
    const char *args[] = {"--load-rdb", rdb, "--memory", "256m", NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    CU_ASSERT_EQUAL(check_resp(s.port, NKEYS), NKEYS);
    CU_ASSERT_EQUAL(resp_simple(s.port, "DBSIZE", line, sizeof(line)), ':');
    CU_ASSERT_EQUAL(atoll(line + 1), NKEYS);
    CU_ASSERT_FATAL(kv_client_connect("127.0.0.1", s.port, 5000, &c) == 0);
    {
        struct kv_value val = {0};

        CU_ASSERT_EQUAL(kv_client_get(c, "l1", 2, &val), KV_ENOTFOUND);
    }
    kv_client_close(c);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    log = kv_test_server_log(&s);
    CU_ASSERT_FATAL(log != NULL);
    snprintf(cmd, sizeof(cmd), "(RDB version 10, ");
    CU_ASSERT(strstr(log, cmd) != NULL);
    snprintf(cmd, sizeof(cmd), "%d string keys imported", NKEYS);
    CU_ASSERT(strstr(log, cmd) != NULL);
    CU_ASSERT(strstr(log, "skipped: 10 keys of other types, 0 expired, 0 too large, 0 in other "
                          "dbs, 1 functions/module aux") != NULL);
    snprintf(cmd, sizeof(cmd), "created empty; then %d keys imported by --load-rdb", NKEYS);
    CU_ASSERT(strstr(log, cmd) != NULL);
    free(log);
}

/* A damaged or truncated file: the start fails with the reason, and no
 * segment is left behind. A store that holds keys is not imported into. */
static void test_rdb_load_damaged_changes_nothing(void)
{
    char good[128], bad[128], out[128], name[64], port[8];
    struct kv_test_server s = {0};
    struct stat st;
    char *text;
    int fd;

    snprintf(good, sizeof(good), "%s/save.rdb", tmp); /* from the first test */
    CU_ASSERT_FATAL(stat(good, &st) == 0 && st.st_size > 1000);
    snprintf(bad, sizeof(bad), "%s/damaged.rdb", tmp);
    snprintf(out, sizeof(out), "%s/damaged.out", tmp);
    snprintf(name, sizeof(name), "/libevkv-rdbtest-%d", (int)getpid());
    snprintf(port, sizeof(port), "%u", kv_test_free_port());
    for (int kind = 0; kind < 2; kind++) {
        char cmd[512];

        if (kind == 0) /* one byte flipped in the middle: the CRC64 catches it */
            snprintf(cmd, sizeof(cmd), "cp %s %s && printf '\\377' | dd of=%s bs=1 seek=%lld "
                     "conv=notrunc 2>/dev/null", good, bad, bad, (long long)st.st_size / 2);
        else /* cut short */
            snprintf(cmd, sizeof(cmd), "head -c %lld %s > %s", (long long)st.st_size / 3, good,
                     bad);
        CU_ASSERT_EQUAL_FATAL(sh(cmd), 0);
        const char *argv[] = {server_bin, "--port", port, "--shm-name", name, "--memory", "64m",
                              "--load-rdb", bad, NULL};
        CU_ASSERT_EQUAL(kv_test_run(argv, out, 20000), 1);
        text = kv_test_slurp(out);
        CU_ASSERT(text && strstr(text, "--load-rdb ") != NULL);
        if (text && kind == 1)
            CU_ASSERT(strstr(text, "truncated") != NULL);
        free(text);
        fd = shm_open(name, O_RDONLY, 0);
        CU_ASSERT(fd < 0); /* the segment this start created is gone */
        if (fd >= 0)
            close(fd);
        shm_unlink(name);
    }

    /* a store too small for the file: refused, and the segment it created
     * (holding part of the file) is not left behind */
    {
        const char *argv[] = {server_bin, "--port", port, "--shm-name", name, "--memory", "4m",
                              "--load-rdb", good, NULL};

        CU_ASSERT_EQUAL(kv_test_run(argv, out, 20000), 1);
        text = kv_test_slurp(out);
        CU_ASSERT(text && strstr(text, "the store is full: start with a larger --memory") != NULL);
        free(text);
        fd = shm_open(name, O_RDONLY, 0);
        CU_ASSERT(fd < 0);
        if (fd >= 0)
            close(fd);
        shm_unlink(name);
    }

    /* a store that holds keys: not imported, said so, keys untouched */
    CU_ASSERT_FATAL(kv_test_server_start(&s, NULL) == 0);
    fill_libevkv(s.port, 10);
    CU_ASSERT_EQUAL(kv_test_server_kill(&s, SIGTERM), 0);
    s.port = 0;
    const char *args[] = {"--load-rdb", good, NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    text = kv_test_server_log(&s);
    CU_ASSERT(text && strstr(text, "the store already holds 10 keys; not imported") != NULL);
    free(text);
}

/* kvclient save / bgsave --wait / lastsave (RESP on the same port, AUTH
 * included), and their exit codes when the save fails. */
static int kvclient_out(const char *args, char *out, size_t cap)
{
    char cmd[PATH_MAX + 512], bin[PATH_MAX];
    FILE *p;
    size_t n;
    int st;

    kv_test_bin_path("kvclient", bin, sizeof(bin));
    snprintf(cmd, sizeof(cmd), "%s %s 2>&1", bin, args);
    p = popen(cmd, "r");
    if (!p)
        return -1;
    n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void test_rdb_kvclient_save_commands(void)
{
    struct kv_test_server s = {0}, bad = {0};
    char rdb[128], args[256], out[512], nodir[128];
    struct stat st;

    snprintf(rdb, sizeof(rdb), "%s/kvclient.rdb", tmp);
    const char *sargs[] = {"--rdb-file", rdb, "--requirepass", "pw", NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, sargs) == 0);
    snprintf(args, sizeof(args), "-p %u -a pw set k v", s.port);
    CU_ASSERT_EQUAL(kvclient_out(args, out, sizeof(out)), 0);
    snprintf(args, sizeof(args), "-p %u -a pw save", s.port);
    CU_ASSERT_EQUAL(kvclient_out(args, out, sizeof(out)), 0);
    CU_ASSERT_STRING_EQUAL(out, "OK\n");
    CU_ASSERT(stat(rdb, &st) == 0 && st.st_size > 20);
    unlink(rdb);
    snprintf(args, sizeof(args), "-p %u -a pw bgsave --wait", s.port);
    CU_ASSERT_EQUAL(kvclient_out(args, out, sizeof(out)), 0);
    CU_ASSERT_STRING_EQUAL(out, "Background saving done\n");
    CU_ASSERT(stat(rdb, &st) == 0 && st.st_size > 20); /* written when --wait returns */
    snprintf(args, sizeof(args), "-p %u -a pw lastsave", s.port);
    CU_ASSERT_EQUAL(kvclient_out(args, out, sizeof(out)), 0);
    CU_ASSERT(atoll(out) >= (long long)time(NULL) - 60);
    snprintf(args, sizeof(args), "-p %u save", s.port); /* no password */
    CU_ASSERT_EQUAL(kvclient_out(args, out, sizeof(out)), 2);
    CU_ASSERT(strstr(out, "NOAUTH") != NULL);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);

    /* a save that cannot be written: exit 2, the reason named (a directory missing at
     * start is refused then, so this one goes away after the start) */
    snprintf(nodir, sizeof(nodir), "%s/gone", tmp);
    CU_ASSERT_FATAL(mkdir(nodir, 0700) == 0);
    snprintf(nodir, sizeof(nodir), "%s/gone/x.rdb", tmp);
    const char *bargs[] = {"--rdb-file", nodir, NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&bad, bargs) == 0);
    *strrchr(nodir, '/') = '\0';
    CU_ASSERT(rmdir(nodir) == 0);
    snprintf(args, sizeof(args), "-p %u save", bad.port);
    CU_ASSERT_EQUAL(kvclient_out(args, out, sizeof(out)), 2);
    CU_ASSERT(strstr(out, "cannot create") != NULL && strstr(out, "No such file") != NULL);
    snprintf(args, sizeof(args), "-p %u bgsave --wait", bad.port);
    CU_ASSERT_EQUAL(kvclient_out(args, out, sizeof(out)), 2);
    CU_ASSERT(strstr(out, "Background saving failed") != NULL);
    CU_ASSERT_EQUAL(kv_test_server_stop(&bad), 0);
}

/* kvclient restore: the same Redis file into a running server, checked
 * first (a damaged file sends nothing). */
static void test_rdb_kvclient_restore(void)
{
    struct kv_test_server s = {0};
    char args[512], out[1024], rdb[128], bad[128], want[512], line[64];

    snprintf(rdb, sizeof(rdb), "%s/from-redis.rdb", tmp); /* test_rdb_load_file_written_by_redis */
    snprintf(bad, sizeof(bad), "%s/damaged.rdb", tmp);    /* test_rdb_load_damaged_... */
    CU_ASSERT_FATAL(access(rdb, R_OK) == 0 && access(bad, R_OK) == 0);
    const char *sargs[] = {"--memory", "256m", NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, sargs) == 0);
    snprintf(args, sizeof(args), "-p %u restore %s", s.port, bad);
    CU_ASSERT_EQUAL(kvclient_out(args, out, sizeof(out)), 2);
    CU_ASSERT(strstr(out, "kvclient: restore: ") != NULL);
    CU_ASSERT_EQUAL(resp_simple(s.port, "DBSIZE", line, sizeof(line)), ':');
    CU_ASSERT_STRING_EQUAL(line, ":0");
    snprintf(args, sizeof(args), "-p %u restore %s", s.port, rdb);
    CU_ASSERT_EQUAL(kvclient_out(args, out, sizeof(out)), 0);
    snprintf(want, sizeof(want), "%d string keys restored from %s (RDB version 10); skipped: "
             "10 keys of other types, 0 expired, 0 too large, 0 in other dbs, 1 functions/"
             "module aux\n", NKEYS, rdb);
    CU_ASSERT_STRING_EQUAL(out, want);
    CU_ASSERT_EQUAL(check_resp(s.port, NKEYS), NKEYS);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

/* One command on an open RESP connection; a bulk reply compared with want (wl bytes). */
static int resp_expect(int fd, int argc, const char *const *argv, const size_t *lens,
                       const char *want, size_t wl)
{
    char line[256], *bulk;
    size_t blen;
    int t = resp_send(fd, argc, argv, lens) == 0 ? resp_read(fd, line, sizeof(line), &bulk, &blen)
                                                 : -1;
    int ok = t == '$' && bulk && blen == wl && memcmp(bulk, want, wl) == 0;

    if (!ok)
        fprintf(stderr, "%s %s: got type %c, %.*s\n", argv[0], argc > 1 ? argv[1] : "", t,
                bulk ? (int)blen : (int)strlen(line), bulk ? bulk : line);
    free(bulk);
    return ok ? 0 : -1;
}

/* kvclient restore of a Redis file with keys in several databases puts each in its own
 * database (binary-safe, with its TTL), as --load-rdb does; a database the server does
 * not have (--databases) is skipped and counted. It used to skip every db but 0. */
static void test_rdb_kvclient_restore_databases(void)
{
    static const char bin[] = "a\0b\r\nc";
    struct kv_test_server s = {0};
    uint16_t rport = kv_test_free_port();
    char args[512], out[1024], rdb[128], line[64], *bulk;
    size_t blen;
    pid_t redis;
    int fd;

    redis = redis_start(rport, tmp, "restore-dbs.rdb");
    CU_ASSERT_FATAL(redis > 0);
    fd = resp_connect(rport);
    CU_ASSERT_FATAL(fd >= 0);
    {
        const char *c0[] = {"SET", "k", "zero"}, *s1[] = {"SELECT", "1"},
                   *c1[] = {"SET", "k", "one", "PX", "3600000"}, *b1[] = {"SET", "bin", bin},
                   *s3[] = {"SELECT", "3"}, *c3[] = {"SET", "k3", "three"},
                   *s9[] = {"SELECT", "9"}, *c9[] = {"SET", "k9", "nine"}, *sv[] = {"SAVE"};
        const size_t bl[] = {3, 3, sizeof(bin) - 1};
        const char *const *cmds[] = {c0, s1, c1, b1, s3, c3, s9, c9, sv};
        const int argc[] = {3, 2, 5, 3, 2, 3, 2, 3, 1};

        for (int i = 0; i < 9; i++) {
            CU_ASSERT(resp_send(fd, argc[i], cmds[i], cmds[i] == b1 ? bl : NULL) == 0);
            CU_ASSERT(resp_read(fd, line, sizeof(line), &bulk, &blen) == '+');
        }
    }
    close(fd);
    redis_stop(redis);
    snprintf(rdb, sizeof(rdb), "%s/restore-dbs.rdb", tmp);
    const char *sargs[] = {"--databases", "4", NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, sargs) == 0);
    snprintf(args, sizeof(args), "-p %u restore %s", s.port, rdb);
    CU_ASSERT_EQUAL(kvclient_out(args, out, sizeof(out)), 0);
    CU_ASSERT(strstr(out, "4 string keys restored from ") != NULL);
    CU_ASSERT(strstr(out, " 1 in other dbs,") != NULL);
    fd = resp_connect(s.port);
    CU_ASSERT_FATAL(fd >= 0);
    {
        const char *g[] = {"GET", "k"}, *s1[] = {"SELECT", "1"}, *gb[] = {"GET", "bin"},
                   *s3[] = {"SELECT", "3"}, *g3[] = {"GET", "k3"}, *t[] = {"PTTL", "k"};

        CU_ASSERT(resp_expect(fd, 2, g, NULL, "zero", 4) == 0);
        CU_ASSERT(resp_send(fd, 2, s1, NULL) == 0 &&
                  resp_read(fd, line, sizeof(line), &bulk, &blen) == '+');
        CU_ASSERT(resp_expect(fd, 2, g, NULL, "one", 3) == 0);
        CU_ASSERT(resp_expect(fd, 2, gb, NULL, bin, sizeof(bin) - 1) == 0);
        CU_ASSERT(resp_send(fd, 2, t, NULL) == 0 &&
                  resp_read(fd, line, sizeof(line), &bulk, &blen) == ':');
        CU_ASSERT(atoll(line + 1) > 3500000 && atoll(line + 1) <= 3600000);
        CU_ASSERT(resp_send(fd, 2, s3, NULL) == 0 &&
                  resp_read(fd, line, sizeof(line), &bulk, &blen) == '+');
        CU_ASSERT(resp_expect(fd, 2, g3, NULL, "three", 5) == 0);
    }
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

/* README: a BGSAVE under writers saves each value with "the TTL that went with that
 * value". Writers flip keys between a value written with PX and one written without;
 * in the saved file (read back by redis-server), a "px" value has a TTL and a "no"
 * value none, for every key of every save. */
struct ttl_writer {
    uint16_t port;
    volatile int *stop;
    unsigned long writes;
};

static void *ttl_writer(void *arg)
{
    struct ttl_writer *w = arg;
    int fd = resp_connect(w->port);
    char line[64], *bulk;
    size_t blen;

    for (unsigned long n = 0; fd >= 0 && !*w->stop; n++) {
        char k[32], v[48];
        int with = (int)(n / 300) % 2;
        const char *set[5] = {"SET", k, v, "PX", "3600000"};

        snprintf(k, sizeof(k), "ttl:%lu", n % 300);
        snprintf(v, sizeof(v), "%s:%lu", with ? "px" : "no", n);
        if (resp_send(fd, with ? 5 : 3, set, NULL) != 0 ||
            resp_read(fd, line, sizeof(line), &bulk, &blen) != '+')
            break;
        w->writes++;
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static void test_rdb_bgsave_ttl_goes_with_its_value(void)
{
    struct kv_test_server s = {0};
    struct ttl_writer wa[2];
    pthread_t th[2];
    volatile int stop = 0;
    char rdb[128], line[256], cmd[512], *bulk;
    uint16_t rport = kv_test_free_port();
    long long before = 0;
    int fd, bad = 0, seen = 0;
    size_t blen;
    pid_t redis;

    snprintf(rdb, sizeof(rdb), "%s/ttl.rdb", tmp);
    const char *args[] = {"--rdb-file", rdb, "--memory", "64m", NULL};
    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    for (int i = 0; i < 2; i++) {
        wa[i] = (struct ttl_writer){.port = s.port, .stop = &stop};
        pthread_create(&th[i], NULL, ttl_writer, &wa[i]);
    }
    usleep(200000);
    for (int round = 0; round < 3; round++) {
        CU_ASSERT_EQUAL(resp_simple(s.port, "BGSAVE", line, sizeof(line)), '+');
        CU_ASSERT_EQUAL(wait_bgsave(s.port, before), 0);
        resp_simple(s.port, "LASTSAVE", line, sizeof(line));
        before = atoll(line + 1);
        snprintf(cmd, sizeof(cmd), "cp %s %s/ttl-%d.rdb", rdb, tmp, round); /* each save */
        CU_ASSERT_EQUAL(sh(cmd), 0);
        if (round < 2)
            sleep(1); /* LASTSAVE has a one-second resolution */
    }
    stop = 1;
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CU_ASSERT(wa[0].writes > 300 && wa[1].writes > 300);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
    for (int round = 0; round < 3; round++) {
        char file[32];

        snprintf(file, sizeof(file), "ttl-%d.rdb", round);
        redis = redis_start(rport, tmp, file);
        CU_ASSERT_FATAL(redis > 0);
        fd = resp_connect(rport);
        CU_ASSERT_FATAL(fd >= 0);
        for (int i = 0; i < 300; i++) {
            char k[32];
            const char *get[2] = {"GET", k}, *pttl[2] = {"PTTL", k};
            long long t;

            snprintf(k, sizeof(k), "ttl:%d", i);
            if (resp_send(fd, 2, get, NULL) != 0 ||
                resp_read(fd, line, sizeof(line), &bulk, &blen) != '$' || !bulk) {
                bad++;
                continue;
            }
            seen++;
            {
                char *b2;
                size_t l2;

                CU_ASSERT(resp_send(fd, 2, pttl, NULL) == 0 &&
                          resp_read(fd, line, sizeof(line), &b2, &l2) == ':');
            }
            t = atoll(line + 1);
            if ((blen > 3 && memcmp(bulk, "px:", 3) == 0) ? t <= 0 : t != -1) {
                if (bad++ < 5)
                    fprintf(stderr, "%s = %.*s with PTTL %lld\n", k, (int)blen, bulk, t);
            }
            free(bulk);
        }
        close(fd);
        redis_stop(redis);
    }
    CU_ASSERT_EQUAL(seen, 3 * 300);
    CU_ASSERT_EQUAL(bad, 0);
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_rdb_crc64_check_value", test_rdb_crc64_check_value},
        {"test_rdb_save_loads_in_redis", test_rdb_save_loads_in_redis},
        {"test_rdb_databases_round_trip", test_rdb_databases_round_trip},
        {"test_rdb_save_without_file_refused", test_rdb_save_without_file_refused},
        {"test_rdb_bgsave_while_writers_run", test_rdb_bgsave_while_writers_run},
        {"test_rdb_bgsave_ttl_goes_with_its_value", test_rdb_bgsave_ttl_goes_with_its_value},
        {"test_rdb_load_file_written_by_redis", test_rdb_load_file_written_by_redis},
        {"test_rdb_load_damaged_changes_nothing", test_rdb_load_damaged_changes_nothing},
        {"test_rdb_kvclient_save_commands", test_rdb_kvclient_save_commands},
        {"test_rdb_kvclient_restore", test_rdb_kvclient_restore},
        {"test_rdb_kvclient_restore_databases", test_rdb_kvclient_restore_databases},
    };

    return kv_test_run_suite("rdb", suite_init, suite_clean, tests,
                             sizeof(tests) / sizeof(tests[0]));
}
