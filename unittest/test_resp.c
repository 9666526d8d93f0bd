/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_resp.c -- libevkv speaking RESP2 on its own port, end to
 * end: exact replies for raw multibulk and inline commands, in-order
 * pipelined answers, protocol errors (each closes the connection, costs
 * nothing), AUTH, --no-resp; then the real tools: redis-cli for each
 * command, redis-benchmark briefly with no errors, Debian's python3-redis
 * doing a mixed workload, and nutcracker (twemproxy) sharding over two
 * libevkv instances. .ci/run installs redis-tools, python3-redis and
 * nutcracker; a missing tool fails its test rather than passing silently. */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kv_err.h"
#include "kv_test_util.h"
#include "resp.h"

static struct kv_test_server srv;

static int suite_init(void)
{
    memset(&srv, 0, sizeof(srv));
    return kv_test_server_start(&srv, NULL) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    if (srv.pid > 0)
        kv_test_server_stop(&srv);
    return 0;
}

/* Sends req, then reads until want bytes came, the peer closed (*closed =
 * 1) or 2 s passed. Returns a malloc'd NUL-terminated reply. */
static char *exchange(int fd, const char *req, size_t reqlen, size_t want, int *closed)
{
    size_t cap = want + 65536, len = 0;
    char *buf = malloc(cap + 1);

    *closed = 0;
    if (reqlen && send(fd, req, reqlen, MSG_NOSIGNAL) != (ssize_t)reqlen)
        *closed = 1;
    while (len < want || want == 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ssize_t n;

        if (poll(&p, 1, 2000) <= 0)
            break;
        n = recv(fd, buf + len, cap - len, 0);
        if (n <= 0) {
            *closed = 1;
            break;
        }
        len += (size_t)n;
        if (len == cap)
            break;
    }
    buf[len] = '\0';
    return buf;
}

static void expect(int fd, const char *req, const char *reply)
{
    int closed;
    char *got = exchange(fd, req, strlen(req), strlen(reply), &closed);

    if (strcmp(got, reply) != 0)
        fprintf(stderr, "\n  sent %s\n  want %s\n  got  %s\n", req, reply, got);
    CU_ASSERT_STRING_EQUAL(got, reply);
    CU_ASSERT_EQUAL(closed, 0);
    free(got);
}

static void test_resp_multibulk_and_inline_exact_replies(void)
{
    int fd = kv_test_connect(srv.port);

    CU_ASSERT_FATAL(fd >= 0);
    expect(fd, "*1\r\n$4\r\nPING\r\n", "+PONG\r\n");
    expect(fd, "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", "$0\r\n\r\n"); /* empty bulk */
    expect(fd, "*3\r\n$3\r\nSET\r\n$5\r\nrk:a1\r\n$5\r\nhello\r\n", "+OK\r\n");
    expect(fd, "*2\r\n$3\r\nGET\r\n$5\r\nrk:a1\r\n", "$5\r\nhello\r\n");
    expect(fd, "*2\r\n$3\r\nGET\r\n$5\r\nrk:no\r\n", "$-1\r\n");
    expect(fd, "GET rk:a1\r\n", "$5\r\nhello\r\n");                    /* inline */
    expect(fd, "SET rk:q \"two words\"\r\n", "+OK\r\n");
    expect(fd, "GET rk:q\n", "$9\r\ntwo words\r\n");                    /* bare \n */
    expect(fd, "set rk:a1 x nx\r\n", "$-1\r\n");                        /* NX refused */
    expect(fd, "SET rk:a1 world GET\r\n", "$5\r\nhello\r\n");
    expect(fd, "GETSET rk:a1 third\r\n", "$5\r\nworld\r\n");
    expect(fd, "INCR rk:n\r\n", ":1\r\n");
    expect(fd, "INCRBY rk:n 41\r\n", ":42\r\n");
    expect(fd, "DECRBY rk:n 2\r\n", ":40\r\n");
    /* integer replies at the ends of int64 (formatted without printf) */
    expect(fd, "INCRBY rk:big -9223372036854775808\r\n", ":-9223372036854775808\r\n");
    expect(fd, "INCRBY rk:big 9223372036854775807\r\n", ":-1\r\n");
    expect(fd, "INCRBY rk:big2 9223372036854775807\r\n", ":9223372036854775807\r\n");
    expect(fd, "INCRBY rk:big3 0\r\n", ":0\r\n");
    expect(fd, "INCR rk:a1\r\n", "-ERR value is not an integer or out of range\r\n");
    expect(fd, "INCRBY rk:n x\r\n", "-ERR value is not an integer or out of range\r\n");
    expect(fd, "MSET rk:m1 a rk:m2 b\r\n", "+OK\r\n");
    expect(fd, "MGET rk:m1 rk:none rk:m2\r\n", "*3\r\n$1\r\na\r\n$-1\r\n$1\r\nb\r\n");
    expect(fd, "EXISTS rk:m1 rk:none rk:m2\r\n", ":2\r\n");
    expect(fd, "DEL rk:m1 rk:none\r\n", ":1\r\n");
    expect(fd, "UNLINK rk:m2\r\n", ":1\r\n");
    expect(fd, "TTL rk:a1\r\n", ":-1\r\n");
    expect(fd, "TTL rk:none\r\n", ":-2\r\n");
    expect(fd, "EXPIRE rk:a1 100\r\n", ":1\r\n");
    expect(fd, "TTL rk:a1\r\n", ":100\r\n");
    expect(fd, "PERSIST rk:a1\r\n", ":1\r\n");
    expect(fd, "PERSIST rk:a1\r\n", ":0\r\n");
    expect(fd, "EXPIRE rk:none 10\r\n", ":0\r\n");
    expect(fd, "ECHO hi\r\n", "$2\r\nhi\r\n");
    expect(fd, "SELECT 0\r\n", "+OK\r\n");
    expect(fd, "SELECT 16\r\n", "-ERR DB index is out of range\r\n");
    expect(fd, "GET\r\n", "-ERR wrong number of arguments for 'get' command\r\n");
    expect(fd, "NOSUCH a\r\n", "-ERR unknown command 'NOSUCH', with args beginning with: 'a' \r\n");
    expect(fd, "SCAN 0 MATCH rk:a? COUNT 1000\r\n", "*2\r\n$1\r\n0\r\n*1\r\n$5\r\nrk:a1\r\n");
    expect(fd, "SCAN 0 MATCH rk:a1* COUNT 1000\r\n", "*2\r\n$1\r\n0\r\n*1\r\n$5\r\nrk:a1\r\n");
    expect(fd, "QUIT\r\n", "+OK\r\n");
    close(fd);
}

/* The command table: names in any case, Redis's arity rule (N exact, -N at
 * least N) with its error string, unknown names, COMMAND COUNT from the rows. */
static void test_resp_command_table_arity_and_case(void)
{
    int fd = kv_test_connect(srv.port);
    int closed;
    char *got;

    CU_ASSERT_FATAL(fd >= 0);
    expect(fd, "gEt rk:t:none\r\n", "$-1\r\n");
    expect(fd, "get a b\r\n", "-ERR wrong number of arguments for 'get' command\r\n");
    expect(fd, "SET a\r\n", "-ERR wrong number of arguments for 'set' command\r\n");
    expect(fd, "INCRBY a\r\n", "-ERR wrong number of arguments for 'incrby' command\r\n");
    expect(fd, "Mget\r\n", "-ERR wrong number of arguments for 'mget' command\r\n");
    expect(fd, "MSET a\r\n", "-ERR wrong number of arguments for 'mset' command\r\n");
    expect(fd, "MSET a b c\r\n", "-ERR wrong number of arguments for 'mset' command\r\n");
    expect(fd, "PING a b\r\n", "-ERR wrong number of arguments for 'ping' command\r\n");
    expect(fd, "GETX a\r\n", "-ERR unknown command 'GETX', with args beginning with: 'a' \r\n");
    expect(fd, "GE a\r\n", "-ERR unknown command 'GE', with args beginning with: 'a' \r\n");
    expect(fd, "FUNCTION FLUSH\r\n", "+OK\r\n");
    got = exchange(fd, "COMMAND COUNT\r\n", 15, 3, &closed);
    CU_ASSERT(got[0] == ':' && atoi(got + 1) >= 30);
    free(got);
    close(fd);
}

/* The string family: Redis 7.0's replies and error strings, byte for byte. */
static void test_resp_string_family(void)
{
    int fd = kv_test_connect(srv.port);

    CU_ASSERT_FATAL(fd >= 0);
    expect(fd, "DEL s:a s:b s:n s:f s:bits s:lcs1 s:lcs2\r\n", ":0\r\n");
    /* SET options; KEEPTTL keeps the expiry (it used to be dropped) */
    expect(fd, "SET s:a v EX 100\r\n", "+OK\r\n");
    expect(fd, "SET s:a w KEEPTTL\r\n", "+OK\r\n");
    expect(fd, "TTL s:a\r\n", ":100\r\n");
    expect(fd, "SET s:a x KEEPTTL GET\r\n", "$1\r\nw\r\n");
    expect(fd, "TTL s:a\r\n", ":100\r\n");
    expect(fd, "SET s:a y\r\n", "+OK\r\n");
    expect(fd, "TTL s:a\r\n", ":-1\r\n");
    expect(fd, "SET s:a y EX 10 PX 100\r\n", "-ERR syntax error\r\n");
    expect(fd, "SET s:a y KEEPTTL EX 10\r\n", "-ERR syntax error\r\n");
    expect(fd, "SET s:a y NX XX\r\n", "-ERR syntax error\r\n");
    expect(fd, "SET s:a y EX 0\r\n", "-ERR invalid expire time in 'set' command\r\n");
    expect(fd, "SET s:a y EX x\r\n", "-ERR value is not an integer or out of range\r\n");
    expect(fd, "SET s:a y EXAT 99999999999\r\n", "+OK\r\n");
    expect(fd, "SET s:b y PXAT 1\r\n", "+OK\r\n"); /* already past: gone at once */
    usleep(5000);
    expect(fd, "GET s:b\r\n", "$-1\r\n");
    expect(fd, "SET s:a old NX GET\r\n", "$1\r\ny\r\n");
    /* SETNX, SETEX, PSETEX, MSETNX */
    expect(fd, "SETNX s:b 1\r\n", ":1\r\n");
    expect(fd, "SETNX s:b 2\r\n", ":0\r\n");
    expect(fd, "SETEX s:b 50 v\r\n", "+OK\r\n");
    expect(fd, "TTL s:b\r\n", ":50\r\n");
    expect(fd, "PSETEX s:b 0 v\r\n", "-ERR invalid expire time in 'psetex' command\r\n");
    expect(fd, "MSETNX s:m1 a s:m2 b\r\n", ":1\r\n");
    expect(fd, "MSETNX s:m2 c s:m3 d\r\n", ":0\r\n");
    expect(fd, "EXISTS s:m3\r\n", ":0\r\n");
    expect(fd, "MSETNX s:m1 a s:m2\r\n", "-ERR wrong number of arguments for 'msetnx' command\r\n");
    /* APPEND keeps the ttl; STRLEN; GETRANGE / SUBSTR */
    expect(fd, "SETEX s:n 70 Hello\r\n", "+OK\r\n");
    expect(fd, "APPEND s:n \" World\"\r\n", ":11\r\n");
    expect(fd, "TTL s:n\r\n", ":70\r\n");
    expect(fd, "APPEND s:new abc\r\n", ":3\r\n");
    expect(fd, "STRLEN s:n\r\n", ":11\r\n");
    expect(fd, "STRLEN s:none\r\n", ":0\r\n");
    expect(fd, "GETRANGE s:n 0 4\r\n", "$5\r\nHello\r\n");
    expect(fd, "GETRANGE s:n -5 -1\r\n", "$5\r\nWorld\r\n");
    expect(fd, "SUBSTR s:n 6 1000\r\n", "$5\r\nWorld\r\n");
    expect(fd, "GETRANGE s:n 5 2\r\n", "$0\r\n\r\n");
    expect(fd, "GETRANGE s:none 0 -1\r\n", "$0\r\n\r\n");
    expect(fd, "GETRANGE s:n a 1\r\n", "-ERR value is not an integer or out of range\r\n");
    /* SETRANGE pads with zero bytes */
    expect(fd, "SETRANGE s:n 6 Redis\r\n", ":11\r\n");
    expect(fd, "GET s:n\r\n", "$11\r\nHello Redis\r\n");
    expect(fd, "SETRANGE s:pad 3 x\r\n", ":4\r\n");
    {
        int closed;
        char *got = exchange(fd, "GET s:pad\r\n", 11, 10, &closed);

        CU_ASSERT(memcmp(got, "$4\r\n\0\0\0x\r\n", 10) == 0);
        free(got);
    }
    expect(fd, "SETRANGE s:none2 5 \"\"\r\n", ":0\r\n");
    expect(fd, "EXISTS s:none2\r\n", ":0\r\n");
    expect(fd, "SETRANGE s:n -1 x\r\n", "-ERR offset is out of range\r\n");
    expect(fd, "SETRANGE s:n 536870908 world\r\n",
           "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n");
    /* bits: SETBIT, GETBIT, BITCOUNT, BITPOS */
    expect(fd, "SETBIT s:bits 7 1\r\n", ":0\r\n");
    expect(fd, "SETBIT s:bits 7 1\r\n", ":1\r\n");
    expect(fd, "GETBIT s:bits 7\r\n", ":1\r\n");
    expect(fd, "GETBIT s:bits 100\r\n", ":0\r\n");
    expect(fd, "SETBIT s:bits 0 2\r\n", "-ERR bit is not an integer or out of range\r\n");
    expect(fd, "SETBIT s:bits -1 1\r\n", "-ERR bit offset is not an integer or out of range\r\n");
    expect(fd, "SETBIT s:bits 4294967296 1\r\n",
           "-ERR bit offset is not an integer or out of range\r\n");
    expect(fd, "SET s:f foobar\r\n", "+OK\r\n");
    expect(fd, "BITCOUNT s:f\r\n", ":26\r\n");
    expect(fd, "BITCOUNT s:f 0 0\r\n", ":4\r\n");
    expect(fd, "BITCOUNT s:f 1 1\r\n", ":6\r\n");
    expect(fd, "BITCOUNT s:f 1 1 BYTE\r\n", ":6\r\n");
    expect(fd, "BITCOUNT s:f 5 30 BIT\r\n", ":17\r\n");
    expect(fd, "BITCOUNT s:f 1\r\n", "-ERR syntax error\r\n");
    expect(fd, "BITCOUNT s:none\r\n", ":0\r\n");
    expect(fd, "SET s:p \xff\xf0\x01\r\n", "+OK\r\n");
    expect(fd, "BITPOS s:p 0\r\n", ":12\r\n");
    expect(fd, "DEL s:p\r\n", ":1\r\n");
    expect(fd, "SETRANGE s:p 1 \xff\xf0\r\n", ":3\r\n"); /* \0 \xff \xf0 */
    expect(fd, "BITPOS s:p 1 0\r\n", ":8\r\n");
    expect(fd, "BITPOS s:p 1 2\r\n", ":16\r\n");
    expect(fd, "BITPOS s:p 1 2 -1 BYTE\r\n", ":16\r\n");
    expect(fd, "BITPOS s:p 1 7 15 BIT\r\n", ":8\r\n");
    expect(fd, "BITPOS s:p 1 7 -3 BIT\r\n", ":8\r\n");
    expect(fd, "BITPOS s:none 1\r\n", ":-1\r\n");
    expect(fd, "BITPOS s:none 0\r\n", ":0\r\n");
    expect(fd, "BITPOS s:p 2\r\n", "-ERR The bit argument must be 1 or 0.\r\n");
    expect(fd, "SET s:p \xff\xff\r\n", "+OK\r\n");
    expect(fd, "BITPOS s:p 0\r\n", ":16\r\n");   /* padded with zeros: just past */
    expect(fd, "BITPOS s:p 0 0 -1\r\n", ":-1\r\n"); /* an end given: not found */
    /* INCRBYFLOAT: Redis's long double rule and formatting; keeps the ttl */
    expect(fd, "SETEX s:fl 80 10.50\r\n", "+OK\r\n");
    expect(fd, "INCRBYFLOAT s:fl 0.1\r\n", "$4\r\n10.6\r\n");
    expect(fd, "TTL s:fl\r\n", ":80\r\n");
    expect(fd, "SET s:fl3 5.0e3\r\n", "+OK\r\n");
    expect(fd, "INCRBYFLOAT s:fl3 2.0e2\r\n", "$4\r\n5200\r\n");
    expect(fd, "INCRBYFLOAT s:fl2 3\r\n", "$1\r\n3\r\n");
    expect(fd, "INCRBYFLOAT s:fl2 x\r\n", "-ERR value is not a valid float\r\n");
    expect(fd, "INCRBYFLOAT s:f 1\r\n", "-ERR value is not a valid float\r\n");
    expect(fd, "INCRBYFLOAT s:fl2 +inf\r\n", "-ERR increment would produce NaN or Infinity\r\n");
    /* GETDEL, GETEX */
    expect(fd, "GETDEL s:fl2\r\n", "$1\r\n3\r\n");
    expect(fd, "GETDEL s:fl2\r\n", "$-1\r\n");
    expect(fd, "SET s:g v\r\n", "+OK\r\n");
    expect(fd, "GETEX s:g EX 90\r\n", "$1\r\nv\r\n");
    expect(fd, "TTL s:g\r\n", ":90\r\n");
    expect(fd, "GETEX s:g\r\n", "$1\r\nv\r\n");
    expect(fd, "TTL s:g\r\n", ":90\r\n");
    expect(fd, "GETEX s:g PERSIST\r\n", "$1\r\nv\r\n");
    expect(fd, "TTL s:g\r\n", ":-1\r\n");
    expect(fd, "GETEX s:g PX 0\r\n", "-ERR invalid expire time in 'getex' command\r\n");
    expect(fd, "GETEX s:g NX\r\n", "-ERR syntax error\r\n");
    expect(fd, "GETEX s:none EX 10\r\n", "$-1\r\n");
    /* LCS, Redis's documentation example */
    expect(fd, "MSET s:lcs1 ohmytext s:lcs2 mynewtext\r\n", "+OK\r\n");
    expect(fd, "LCS s:lcs1 s:lcs2\r\n", "$6\r\nmytext\r\n");
    expect(fd, "LCS s:lcs1 s:lcs2 LEN\r\n", ":6\r\n");
    expect(fd, "LCS s:lcs1 s:lcs2 IDX\r\n",
           "*4\r\n$7\r\nmatches\r\n*2\r\n*2\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n"
           "*2\r\n*2\r\n:2\r\n:3\r\n*2\r\n:0\r\n:1\r\n$3\r\nlen\r\n:6\r\n");
    expect(fd, "LCS s:lcs1 s:lcs2 IDX MINMATCHLEN 4 WITHMATCHLEN\r\n",
           "*4\r\n$7\r\nmatches\r\n*1\r\n*3\r\n*2\r\n:4\r\n:7\r\n*2\r\n:5\r\n:8\r\n:4\r\n"
           "$3\r\nlen\r\n:6\r\n");
    expect(fd, "SETRANGE s:L1 4999 x\r\n", ":5000\r\n"); /* 25M cells: above the bound */
    expect(fd, "SETRANGE s:L2 4999 y\r\n", ":5000\r\n");
    expect(fd, "LCS s:L1 s:L2\r\n",
           "-ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len\r\n");
    expect(fd, "LCS s:lcs1 s:lcs2 LEN IDX\r\n",
           "-ERR If you want both the length and indexes, please just use IDX.\r\n");
    close(fd);
}

/* APPEND and INCRBYFLOAT from many clients at once, on a server whose
 * handlers run on two workers: every update lands exactly once (the
 * read-modify-write retries on compare-and-set instead of losing updates). */
static void test_resp_append_is_atomic(void)
{
    enum { CLIENTS = 4, EACH = 300 };
    static const char *const args[] = {"--io-threads", "2", "--workers", "2", NULL};
    struct kv_test_server ws = {0};
    pid_t kids[CLIENTS];
    int fd, closed;
    char *got;

    CU_ASSERT_FATAL(kv_test_server_start(&ws, args) == 0);
    fd = kv_test_connect(ws.port);
    CU_ASSERT_FATAL(fd >= 0);
    expect(fd, "DEL s:race s:racef\r\n", ":0\r\n");
    for (int c = 0; c < CLIENTS; c++) {
        kids[c] = fork();
        if (kids[c] == 0) {
            int cfd = kv_test_connect(ws.port), bad = cfd < 0;

            for (int i = 0; i < EACH && !bad; i++) {
                static const char req[] = "APPEND s:race x\r\nINCRBYFLOAT s:racef 0.5\r\n";
                char buf[256];
                size_t len = 0;
                int lines = 0;

                bad = send(cfd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)sizeof(req) - 1;
                while (!bad && lines < 3) { /* ":N", "$len", "value" */
                    ssize_t n = recv(cfd, buf + len, sizeof(buf) - len, 0);

                    bad = n <= 0;
                    for (ssize_t k = 0; k < n; k++)
                        lines += buf[len + (size_t)k] == '\n';
                    len += n > 0 ? (size_t)n : 0;
                    bad |= buf[0] == '-';
                }
            }
            _exit(bad);
        }
    }
    for (int c = 0; c < CLIENTS; c++) {
        int st = -1;

        waitpid(kids[c], &st, 0);
        CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    got = exchange(fd, "STRLEN s:race\r\nGET s:racef\r\n", 29, 16, &closed);
    CU_ASSERT_STRING_EQUAL(got, ":1200\r\n$3\r\n600\r\n");
    free(got);
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&ws), 0);
}

/* Keyspace commands: KEYS / SCAN with Redis's globs, TYPE, TOUCH, TIME,
 * RANDOMKEY, EXPIREAT / EXPIRETIME and EXPIRE's NX / XX / GT / LT. */
static void test_resp_keyspace(void)
{
    struct kv_test_server ks = {0};
    int fd, closed;
    char *got;
    long long t;

    CU_ASSERT_FATAL(kv_test_server_start(&ks, NULL) == 0);
    fd = kv_test_connect(ks.port);
    CU_ASSERT_FATAL(fd >= 0);
    expect(fd, "RANDOMKEY\r\n", "$-1\r\n");
    expect(fd, "MSET hello 1 hallo 2 hxllo 3 hillo 4 h*llo 5 other 6\r\n", "+OK\r\n");
    got = exchange(fd, "KEYS h[ae]llo\r\n", strlen("KEYS h[ae]llo\r\n"), 26, &closed);
    CU_ASSERT(strcmp(got, "*2\r\n$5\r\nhello\r\n$5\r\nhallo\r\n") == 0 ||
              strcmp(got, "*2\r\n$5\r\nhallo\r\n$5\r\nhello\r\n") == 0);
    free(got);
    expect(fd, "KEYS h\\*llo\r\n", "*1\r\n$5\r\nh*llo\r\n");
    expect(fd, "KEYS o*\r\n", "*1\r\n$5\r\nother\r\n");
    expect(fd, "KEYS nomatch*\r\n", "*0\r\n");
    got = exchange(fd, "KEYS *\r\n", strlen("KEYS *\r\n"), 4, &closed);
    CU_ASSERT(strncmp(got, "*6\r\n", 4) == 0);
    free(got);
    got = exchange(fd, "SCAN 0 MATCH h[^ae]llo COUNT 1000\r\n", 35, 48, &closed);
    CU_ASSERT(strncmp(got, "*2\r\n$1\r\n0\r\n*3\r\n", 15) == 0); /* hillo hxllo h*llo */
    CU_ASSERT(strstr(got, "hillo") && strstr(got, "hxllo") && strstr(got, "h*llo"));
    free(got);
    expect(fd, "SCAN 0 TYPE list\r\n", "*2\r\n$1\r\n0\r\n*0\r\n");
    expect(fd, "SCAN 0 COUNT 0\r\n", "-ERR syntax error\r\n");
    expect(fd, "SCAN x\r\n", "-ERR invalid cursor\r\n");
    got = exchange(fd, "RANDOMKEY\r\n", strlen("RANDOMKEY\r\n"), 4, &closed);
    CU_ASSERT(got[0] == '$' && got[1] == '5');
    free(got);
    expect(fd, "TYPE hello\r\n", "+string\r\n");
    expect(fd, "TYPE nokey\r\n", "+none\r\n");
    expect(fd, "TOUCH hello nokey hallo hello\r\n", ":3\r\n");
    expect(fd, "MEMORY USAGE hello\r\n", ":65\r\n");
    expect(fd, "MEMORY USAGE nokey\r\n", "$-1\r\n");
    expect(fd, "MEMORY DOCTOR\r\n", "-ERR unknown subcommand 'DOCTOR'. Try MEMORY HELP.\r\n");
    expect(fd, "EXISTS hello hello nokey\r\n", ":2\r\n");
    got = exchange(fd, "TIME\r\n", strlen("TIME\r\n"), 20, &closed);
    CU_ASSERT(sscanf(got, "*2\r\n$10\r\n%lld\r\n", &t) == 1 && t > 1700000000LL);
    free(got);
    /* EXPIREAT / PEXPIREAT / EXPIRETIME / PEXPIRETIME */
    expect(fd, "EXPIREAT hello 4102444800\r\n", ":1\r\n"); /* 2100-01-01 */
    /* Known difference (README "Redis protocol"): EXPIREAT travels as a TTL from the IO
     * thread's clock and the store adds it to its own, so under load the expiry can land
     * a few ms off (EXPIRETIME then says 4102444799). Within 50 ms is accepted. */
    got = exchange(fd, "PEXPIRETIME hello\r\n", strlen("PEXPIRETIME hello\r\n"), 16, &closed);
    long long pat = 0;
    CU_ASSERT(sscanf(got, ":%lld", &pat) == 1 && pat > 4102444800000LL - 50 &&
              pat < 4102444800000LL + 50);
    if (!(pat > 4102444800000LL - 50 && pat < 4102444800000LL + 50))
        fprintf(stderr, "\n  PEXPIRETIME hello: got %s\n", got);
    free(got);
    expect(fd, "EXPIRETIME hallo\r\n", ":-1\r\n");
    expect(fd, "EXPIRETIME nokey\r\n", ":-2\r\n");
    expect(fd, "PEXPIREAT hallo 1\r\n", ":1\r\n"); /* in the past: deleted */
    expect(fd, "EXISTS hallo\r\n", ":0\r\n");
    expect(fd, "EXPIREAT nokey 4102444800\r\n", ":0\r\n");
    /* EXPIRE NX / XX / GT / LT */
    expect(fd, "EXPIRE hxllo 100 XX\r\n", ":0\r\n");
    expect(fd, "EXPIRE hxllo 100 NX\r\n", ":1\r\n");
    expect(fd, "EXPIRE hxllo 200 NX\r\n", ":0\r\n");
    expect(fd, "EXPIRE hxllo 50 GT\r\n", ":0\r\n");
    expect(fd, "EXPIRE hxllo 200 GT\r\n", ":1\r\n");
    expect(fd, "TTL hxllo\r\n", ":200\r\n");
    expect(fd, "EXPIRE hxllo 300 LT\r\n", ":0\r\n");
    expect(fd, "EXPIRE hxllo 150 LT XX\r\n", ":1\r\n");
    expect(fd, "TTL hxllo\r\n", ":150\r\n");
    expect(fd, "GET hxllo\r\n", "$1\r\n3\r\n"); /* the value is kept */
    expect(fd, "EXPIRE hillo 100 GT\r\n", ":0\r\n"); /* no ttl is infinite */
    expect(fd, "EXPIRE hillo 100 LT\r\n", ":1\r\n");
    expect(fd, "EXPIRE hillo -1 LT\r\n", ":1\r\n"); /* past: deleted */
    expect(fd, "EXISTS hillo\r\n", ":0\r\n");
    expect(fd, "EXPIRE nokey 100 NX\r\n", ":0\r\n");
    expect(fd, "EXPIRE hxllo 200 LT GT\r\n",
           "-ERR GT and LT options at the same time are not compatible\r\n");
    expect(fd, "EXPIRE hxllo 200 NX XX\r\n",
           "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n");
    expect(fd, "EXPIRE hxllo 200 AB\r\n", "-ERR Unsupported option AB\r\n");
    expect(fd, "EXPIRE hxllo 9223372036854776\r\n",
           "-ERR invalid expire time in 'expire' command\r\n");
    expect(fd, "PEXPIRE hxllo 9223372036854770000\r\n",
           "-ERR invalid expire time in 'pexpire' command\r\n");
    expect(fd, "PEXPIREAT hxllo 9223372036854770000\r\n", ":1\r\n");
    expect(fd, "PEXPIREAT hxllo -9223372036854770000\r\n", ":1\r\n");
    expect(fd, "EXISTS hxllo\r\n", ":0\r\n");
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&ks), 0);
}

static int run(const char *cmd, char **out);

/* Databases (SELECT, per-database DBSIZE / FLUSHDB / KEYS, INFO keyspace, SWAPDB) and the
 * multi-key keyspace commands with Redis 7.0's replies and errors; redis-py's db=. */
static void test_resp_databases_and_rename(void)
{
    struct kv_test_server ks = {0};
    int fd, closed;
    char *got, cmd[4096], *out;

    CU_ASSERT_FATAL(kv_test_server_start(&ks, NULL) == 0);
    fd = kv_test_connect(ks.port);
    CU_ASSERT_FATAL(fd >= 0);
    expect(fd, "CONFIG GET databases\r\n", "*2\r\n$9\r\ndatabases\r\n$2\r\n16\r\n");
    /* no password set: AUTH p is Redis 7.0's error, AUTH default p succeeds (nopass) */
    expect(fd, "AUTH foo\r\n", "-ERR AUTH <password> called without any password configured for "
                               "the default user. Are you sure your configuration is correct?\r\n");
    expect(fd, "AUTH default foo\r\n", "+OK\r\n");
    expect(fd, "SELECT 15\r\n", "+OK\r\n");
    expect(fd, "SELECT 16\r\n", "-ERR DB index is out of range\r\n");
    expect(fd, "SELECT -1\r\n", "-ERR DB index is out of range\r\n");
    expect(fd, "SELECT x\r\n", "-ERR value is not an integer or out of range\r\n");
    expect(fd, "SET k fifteen\r\n", "+OK\r\n");
    expect(fd, "SELECT 0\r\n", "+OK\r\n");
    expect(fd, "GET k\r\n", "$-1\r\n");
    expect(fd, "SET k zero\r\n", "+OK\r\n");
    expect(fd, "SET t v EX 100\r\n", "+OK\r\n");
    /* a pipeline: each call keeps the database it was built in */
    expect(fd, "SELECT 15\r\nGET k\r\nSELECT 0\r\nGET k\r\n",
           "+OK\r\n$7\r\nfifteen\r\n+OK\r\n$4\r\nzero\r\n");
    expect(fd, "DBSIZE\r\n", ":2\r\n");
    expect(fd, "RENAME t t2\r\n", "+OK\r\n");
    expect(fd, "TTL t2\r\n", ":100\r\n");
    expect(fd, "EXISTS t\r\n", ":0\r\n");
    expect(fd, "RENAME nokey x\r\n", "-ERR no such key\r\n");
    expect(fd, "RENAME k k\r\n", "+OK\r\n");
    expect(fd, "RENAMENX t2 k\r\n", ":0\r\n");
    expect(fd, "RENAMENX t2 t3\r\n", ":1\r\n");
    expect(fd, "RENAMENX nokey t3\r\n", "-ERR no such key\r\n");
    expect(fd, "COPY k kc\r\n", ":1\r\n");
    expect(fd, "COPY k kc\r\n", ":0\r\n");
    expect(fd, "COPY t3 kc REPLACE\r\n", ":1\r\n");
    expect(fd, "GET kc\r\n", "$1\r\nv\r\n");
    expect(fd, "COPY k k\r\n", "-ERR source and destination objects are the same\r\n");
    expect(fd, "COPY k k DB 3\r\n", ":1\r\n");
    expect(fd, "COPY k k DB 16\r\n", "-ERR DB index is out of range\r\n");
    expect(fd, "COPY k k DB x\r\n", "-ERR value is not an integer or out of range\r\n");
    expect(fd, "COPY k k BOGUS\r\n", "-ERR syntax error\r\n");
    expect(fd, "COPY nokey k2\r\n", ":0\r\n");
    expect(fd, "MOVE k 15\r\n", ":0\r\n"); /* there already */
    expect(fd, "MOVE kc 15\r\n", ":1\r\n");
    expect(fd, "MOVE kc 15\r\n", ":0\r\n");
    expect(fd, "MOVE k 0\r\n", "-ERR source and destination objects are the same\r\n");
    expect(fd, "MOVE k x\r\n", "-ERR value is not an integer or out of range\r\n");
    expect(fd, "MOVE k 99\r\n", "-ERR DB index is out of range\r\n");
    expect(fd, "RENAME\r\n", "-ERR wrong number of arguments for 'rename' command\r\n");
    expect(fd, "SELECT 15\r\n", "+OK\r\n");
    expect(fd, "DBSIZE\r\n", ":2\r\n");
    got = exchange(fd, "KEYS *\r\n", 8, 20, &closed);
    CU_ASSERT(strncmp(got, "*2\r\n", 4) == 0 && strstr(got, "kc") && strstr(got, "\r\nk\r\n"));
    free(got);
    expect(fd, "SWAPDB 15 3\r\n", "+OK\r\n");
    expect(fd, "DBSIZE\r\n", ":1\r\n"); /* this connection now sees what was 3 */
    expect(fd, "GET k\r\n", "$4\r\nzero\r\n");
    expect(fd, "SWAPDB x 1\r\n", "-ERR invalid first DB index\r\n");
    expect(fd, "SWAPDB 1 y\r\n", "-ERR invalid second DB index\r\n");
    expect(fd, "SWAPDB 1 16\r\n", "-ERR DB index is out of range\r\n");
    usleep(300000); /* expires / avg_ttl: the expiry sweep's pass (one 0.1 s tick here) */
    got = exchange(fd, "INFO\r\n", 6, 0, &closed);
    CU_ASSERT(strstr(got, "# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=9") != NULL); /* t3 */
    CU_ASSERT(strstr(got, "\r\ndb3:keys=2,expires=1,avg_ttl=9") != NULL); /* t3's copy */
    CU_ASSERT(strstr(got, "\r\ndb15:keys=1,expires=0,avg_ttl=0\r\n") != NULL);
    free(got);
    expect(fd, "SELECT 15\r\n", "+OK\r\n");
    expect(fd, "SET kt v EX 100\r\n", "+OK\r\n");
    usleep(400000);
    got = exchange(fd, "INFO keyspace\r\n", 15, 0, &closed);
    CU_ASSERT(strstr(got, "db15:keys=2,expires=1,avg_ttl=99") != NULL);
    free(got);
    expect(fd, "DEL kt\r\n", ":1\r\n");
    expect(fd, "FLUSHDB\r\n", "+OK\r\n");
    expect(fd, "DBSIZE\r\n", ":0\r\n");
    expect(fd, "SELECT 0\r\n", "+OK\r\n");
    expect(fd, "DBSIZE\r\n", ":2\r\n");
    expect(fd, "FLUSHDB BOGUS\r\n", "-ERR syntax error\r\n");
    /* redis-py with db=1 */
    snprintf(cmd, sizeof(cmd),
             "/usr/bin/python3 - <<'PY' 2>&1\n"
             "import redis\n"
             "r1 = redis.Redis(host='127.0.0.1', port=%u, db=1)\n"
             "r0 = redis.Redis(host='127.0.0.1', port=%u)\n"
             "assert r1.set('py:db', 'one') and r1.get('py:db') == b'one'\n"
             "assert r0.get('py:db') is None and r1.dbsize() == 1\n"
             "assert r1.rename('py:db', 'py:db2') and r1.move('py:db2', 0)\n"
             "assert r0.get('py:db2') == b'one' and r1.dbsize() == 0\n"
             "assert r0.copy('py:db2', 'py:c', destination_db=1) and r1.get('py:c') == b'one'\n"
             "assert r0.swapdb(0, 1) and r0.get('py:c') == b'one'\n"
             "print('OK')\n"
             "PY",
             ks.port, ks.port);
    CU_ASSERT_EQUAL(run(cmd, &out), 0);
    if (strcmp(out, "OK\n") != 0)
        fprintf(stderr, "\n%s\n", out);
    CU_ASSERT_STRING_EQUAL(out, "OK\n");
    free(out);
    expect(fd, "FLUSHALL\r\n", "+OK\r\n");
    for (int d = 0; d < 16; d += 5) {
        char sel[32];

        snprintf(sel, sizeof(sel), "SELECT %d\r\nDBSIZE\r\n", d);
        expect(fd, sel, "+OK\r\n:0\r\n");
    }
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&ks), 0);
}

static void test_resp_pipelined_replies_in_request_order(void)
{
    enum { N = 300 };
    char *req = malloc(N * 64), want[N * 16], *got;
    size_t len = 0, wl = 0;
    int fd = kv_test_connect(srv.port), closed;

    CU_ASSERT_FATAL(fd >= 0);
    for (int i = 1; i <= N; i++) {
        len += (size_t)sprintf(req + len, i % 3 ? "INCR rk:pipe\r\n" : "PING\r\n");
        wl += (size_t)sprintf(want + wl, i % 3 ? ":%d\r\n" : "+PONG\r\n", i - i / 3);
    }
    got = exchange(fd, req, len, wl, &closed);
    CU_ASSERT_STRING_EQUAL(got, want);
    free(got);
    free(req);
    close(fd);
}

/* want: Redis's text after "-ERR Protocol error: " (NULL: any). */
static void expect_protocol_error_is(const char *req, size_t len, const char *want)
{
    int fd = kv_test_connect(srv.port), closed;
    char *got;

    CU_ASSERT_FATAL(fd >= 0);
    got = exchange(fd, req, len ? len : strlen(req), 0, &closed);
    CU_ASSERT(strncmp(got, "-ERR Protocol error: ", 21) == 0);
    /* Redis's text, then, on a limit (issue 17), the limits named in brackets */
    const char *rest = want && strlen(got) >= 21 + strlen(want) ? got + 21 + strlen(want) : "";
    if (want && (strlen(got) < 23 || strncmp(got + 21, want, strlen(want)) != 0 ||
                 (strcmp(rest, "\r\n") != 0 &&
                  strncmp(rest, " (the server's limits: ", 23) != 0))) {
        fprintf(stderr, "\n  want %s\n  got  %s\n", want, got);
        CU_FAIL("protocol error text");
    }
    CU_ASSERT_EQUAL(closed, 1);
    free(got);
    close(fd);
}

static void expect_protocol_error(const char *req, size_t len)
{
    expect_protocol_error_is(req, len, NULL);
}

static void test_resp_protocol_errors_close_the_connection(void)
{
    static char big[70000];

    /* Redis's own strings (its unit/protocol tests match them) */
    expect_protocol_error_is("*3000000000\r\n", 0, "invalid multibulk length");
    expect_protocol_error_is("*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n", 0, "expected '$', got 'f'");
    expect_protocol_error_is("*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$-10\r\n", 0, "invalid bulk length");
    expect_protocol_error_is("*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$blabla\r\n", 0, "invalid bulk length");
    expect_protocol_error_is("*1\r\nfoo\r\n", 0, "expected '$', got 'f'");
    expect_protocol_error_is("set \"\"\"k\"\"\" v\r\n", 0, "unbalanced quotes in request");

    expect_protocol_error("*1\r\n$99999999999999\r\n", 22);         /* bulk above --max-body */
    expect_protocol_error("*99999999999\r\n", 15);                  /* count above the limit */
    expect_protocol_error("*2\r\n+PING\r\n", 11);                   /* not a bulk string */
    expect_protocol_error("*1\r\n$4\r\nPINGxx", 14);                /* no \r\n after the bulk */
    expect_protocol_error("*1x\r\n", 5);                            /* bad count */
    expect_protocol_error("SET a \"unbalanced\r\n", 19);
    memset(big, 'a', sizeof(big)); /* an inline line without end, over 64 KiB */
    expect_protocol_error(big, sizeof(big));
    /* nothing of it touched the others */
    int fd = kv_test_connect(srv.port);
    expect(fd, "PING\r\n", "+PONG\r\n");
    close(fd);
}

/* Runs a shell command; returns its exit code and its stdout in *out. */
static int run(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    size_t cap = 1 << 20, len = 0, n;
    char *buf = malloc(cap + 1);
    int st;

    while (p && (n = fread(buf + len, 1, cap - len, p)) > 0)
        len += n;
    buf[len] = '\0';
    st = p ? pclose(p) : -1;
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void cli(const char *args, const char *want)
{
    char cmd[512], *out;

    snprintf(cmd, sizeof(cmd), "redis-cli -p %u %s 2>&1", srv.port, args);
    CU_ASSERT_EQUAL(run(cmd, &out), 0);
    if (strcmp(out, want) != 0)
        fprintf(stderr, "\n  redis-cli %s\n  want %s  got  %s", args, want, out);
    CU_ASSERT_STRING_EQUAL(out, want);
    free(out);
}

static void test_resp_redis_cli_every_command(void)
{
    CU_ASSERT_FATAL(system("command -v redis-cli >/dev/null") == 0);
    cli("PING", "PONG\n");
    cli("ECHO hello", "hello\n");
    cli("SET cli:k v1", "OK\n");
    cli("SET cli:k v2 GET", "v1\n");
    cli("SET cli:k v3 XX PX 100000", "OK\n");
    cli("SET cli:new x XX", "\n");
    cli("SET cli:t v EX 100 NX", "OK\n");
    cli("GETSET cli:k v4", "v3\n");
    cli("GET cli:k", "v4\n");
    cli("INCR cli:n", "1\n");
    cli("INCRBY cli:n 9", "10\n");
    cli("DECR cli:n", "9\n");
    cli("DECRBY cli:n 10", "-1\n");
    cli("MSET cli:a 1 cli:b 2", "OK\n");
    cli("MGET cli:a cli:b cli:c", "1\n2\n\n");
    cli("EXISTS cli:a cli:c", "1\n");
    cli("PEXPIRE cli:a 100000", "1\n");
    cli("TTL cli:a", "100\n");
    cli("PERSIST cli:a", "1\n");
    cli("PTTL cli:a", "-1\n");
    cli("EXPIRE cli:a 50", "1\n");
    cli("DEL cli:a cli:c", "1\n");
    cli("UNLINK cli:b", "1\n");
    cli("--scan --pattern 'cli:n*'", "cli:n\n"); /* iterates the cursor */
    cli("SELECT 0", "OK\n");
    cli("CONFIG GET save", "save\n\n");
    cli("FLUSHDB", "OK\n");
    cli("DBSIZE", "0\n");
    cli("FLUSHALL", "OK\n");
    cli("GET cli:k", "\n");
    cli("FOO bar", "ERR unknown command 'FOO', with args beginning with: 'bar' \n\n"); /* as Redis */

    char cmd[256], *out;
    snprintf(cmd, sizeof(cmd), "redis-cli -p %u INFO", srv.port);
    CU_ASSERT_EQUAL(run(cmd, &out), 0);
    CU_ASSERT(strstr(out, "# Server") && strstr(out, "# Clients") && strstr(out, "# Memory") &&
              strstr(out, "# Stats") && strstr(out, "# Keyspace") &&
              strstr(out, "used_memory:") && strstr(out, "connected_clients:"));
    free(out);
}

static void test_resp_redis_benchmark_runs_without_errors(void)
{
    char cmd[512], *out;

    CU_ASSERT_FATAL(system("command -v redis-benchmark >/dev/null") == 0);
    snprintf(cmd, sizeof(cmd),
             "redis-benchmark -p %u -t ping,set,get,incr,mset -n 20000 -c 20 -P 4 -q 2>&1",
             srv.port);
    CU_ASSERT_EQUAL(run(cmd, &out), 0);
    CU_ASSERT(strstr(out, "SET: ") != NULL && strstr(out, "GET: ") != NULL &&
              strstr(out, "MSET (10 keys): ") != NULL);
    CU_ASSERT(strstr(out, "rror") == NULL); /* "Error from server" on any error reply */
    if (strstr(out, "rror"))
        fprintf(stderr, "\n%s\n", out);
    free(out);
}

static void test_resp_python_redis_client_mixed_workload(void)
{
    char cmd[4096], *out;

    CU_ASSERT_FATAL(system("/usr/bin/python3 -c 'import redis' 2>/dev/null") == 0);
    snprintf(cmd, sizeof(cmd),
             "/usr/bin/python3 - <<'PY' 2>&1\n"
             "import redis\n"
             "r = redis.Redis(host='127.0.0.1', port=%u)\n"
             "assert r.ping()\n"
             "for i in range(500):\n"
             "    r.set(f'py:{i}', f'value-{i}'.encode() * (i %% 7 + 1))\n"
             "for i in range(500):\n"
             "    assert r.get(f'py:{i}') == f'value-{i}'.encode() * (i %% 7 + 1)\n"
             "assert r.incr('py:n', 5) == 5 and r.decr('py:n') == 4\n"
             "assert r.mget(['py:1', 'py:none']) == [b'value-1' * 2, None]\n"
             "assert r.set('py:x', 'y', nx=True, ex=100) and r.ttl('py:x') == 100\n"
             "assert r.set('py:x', 'z', nx=True) is None\n"
             "assert r.exists('py:1', 'py:none') == 1\n"
             "p = r.pipeline(transaction=False)\n"
             "for i in range(200): p.incr('py:p')\n"
             "assert p.execute() == list(range(1, 201))\n"
             "keys = set(r.scan_iter(match='py:*', count=50))\n"
             "assert len(keys) == 503, len(keys)\n"
             "try:\n"
             "    r.incr('py:1')\n"
             "    raise SystemExit('no error')\n"
             "except redis.ResponseError as e:\n"
             "    assert 'not an integer' in str(e)\n"
             "assert r.delete(*[f'py:{i}' for i in range(500)]) == 500\n"
             "print('OK')\n"
             "PY",
             srv.port);
    CU_ASSERT_EQUAL(run(cmd, &out), 0);
    if (strcmp(out, "OK\n") != 0)
        fprintf(stderr, "\n%s\n", out);
    CU_ASSERT_STRING_EQUAL(out, "OK\n");
    free(out);
}

static void test_resp_twemproxy_shards_over_two_instances(void)
{
    struct kv_test_server a = {0}, b = {0};
    char conf[256], cmd[1024], *out;
    uint16_t pport = kv_test_free_port(), sport = kv_test_free_port();
    long long na = -1, nb = -1;
    FILE *f;
    pid_t proxy;

    CU_ASSERT_FATAL(system("command -v nutcracker >/dev/null") == 0);
    CU_ASSERT_FATAL(kv_test_server_start(&a, NULL) == 0);
    CU_ASSERT_FATAL(kv_test_server_start(&b, NULL) == 0);
    snprintf(conf, sizeof(conf), "/tmp/libevkv-twem-%d.yml", (int)getpid());
    f = fopen(conf, "w");
    CU_ASSERT_FATAL(f != NULL);
    fprintf(f, "kv:\n  listen: 127.0.0.1:%u\n  hash: fnv1a_64\n  distribution: modula\n"
               "  redis: true\n  server_retry_timeout: 2000\n  server_failure_limit: 3\n"
               "  servers:\n   - 127.0.0.1:%u:1\n   - 127.0.0.1:%u:1\n",
            pport, a.port, b.port);
    fclose(f);
    proxy = fork();
    if (proxy == 0) {
        char sp[16];
        snprintf(sp, sizeof(sp), "%u", sport);
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execlp("nutcracker", "nutcracker", "-c", conf, "-s", sp, (char *)NULL);
        _exit(127);
    }
    usleep(500000);
    snprintf(cmd, sizeof(cmd),
             "for i in $(seq 1 200); do echo \"SET tw:$i v$i\"; done | redis-cli -p %u >/dev/null"
             " && for i in $(seq 1 200); do echo \"GET tw:$i\"; done | redis-cli -p %u",
             pport, pport);
    CU_ASSERT_EQUAL(run(cmd, &out), 0);
    int ok = 1;
    char *line = out;
    for (int i = 1; i <= 200 && line; i++) {
        char want[32];
        snprintf(want, sizeof(want), "v%d\n", i);
        if (strncmp(line, want, strlen(want)) != 0)
            ok = 0;
        line = strchr(line, '\n');
        line = line ? line + 1 : NULL;
    }
    CU_ASSERT(ok); /* every key read back through the proxy */
    free(out);
    snprintf(cmd, sizeof(cmd), "redis-cli -p %u DBSIZE", a.port);
    run(cmd, &out);
    na = atoll(out);
    free(out);
    snprintf(cmd, sizeof(cmd), "redis-cli -p %u DBSIZE", b.port);
    run(cmd, &out);
    nb = atoll(out);
    free(out);
    CU_ASSERT(na > 50 && nb > 50); /* spread over both (modula: about half each) */
    CU_ASSERT_EQUAL(na + nb, 200);
    kill(proxy, SIGTERM);
    waitpid(proxy, NULL, 0);
    unlink(conf);
    CU_ASSERT_EQUAL(kv_test_server_stop(&a), 0);
    CU_ASSERT_EQUAL(kv_test_server_stop(&b), 0);
}

static void test_resp_auth_and_no_resp_option(void)
{
    static const char *const pw[] = {"--requirepass", "sesame", NULL};
    static const char *const nr[] = {"--no-resp", NULL};
    struct kv_test_server s = {0};
    int fd, closed;
    char *got;

    CU_ASSERT_FATAL(kv_test_server_start(&s, pw) == 0);
    fd = kv_test_connect(s.port);
    expect(fd, "GET x\r\n", "-NOAUTH Authentication required.\r\n");
    expect(fd, "AUTH nope\r\n", "-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    expect(fd, "GET\r\n", "-ERR wrong number of arguments for 'get' command\r\n"); /* arity first */
    expect(fd, "AUTH sesame\r\n", "+OK\r\n");
    expect(fd, "GET x\r\n", "$-1\r\n");
    /* a RESET pipelined after calls takes AUTH away only after they have run */
    expect(fd, "SET pa 1\r\nGET pa\r\nRESET\r\nGET pa\r\n",
           "+OK\r\n$1\r\n1\r\n+RESET\r\n-NOAUTH Authentication required.\r\n");
    expect(fd, "AUTH sesame\r\n", "+OK\r\n");
    /* INFO and DBSIZE pipelined after writes see them */
    expect(fd, "FLUSHALL\r\n", "+OK\r\n");
    got = exchange(fd, "SET pb 1\r\nSET pc 2\r\nINFO keyspace\r\n", 36, 0, &closed);
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "+OK\r\n+OK\r\n$"));
    CU_ASSERT_PTR_NOT_NULL(strstr(got, "db0:keys=2,"));
    free(got);
    close(fd);
    /* before AUTH, an inline request is bounded by --max-body-noauth (64 KiB here) too,
     * and quoted words count against the 16 arguments */
    fd = kv_test_connect(s.port);
    {
        char line[256] = "PING";
        for (int i = 0; i < 20; i++)
            strcat(line, " \"w\"");
        strcat(line, "\r\n");
        got = exchange(fd, line, strlen(line), 0, &closed);
        CU_ASSERT(strncmp(got, "-ERR Protocol error: too many arguments", 39) == 0);
        free(got);
    }
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);

    static const char *const small[] = {"--requirepass", "sesame", "--max-body-noauth", "1k",
                                        NULL};
    memset(&s, 0, sizeof(s));
    CU_ASSERT_FATAL(kv_test_server_start(&s, small) == 0);
    fd = kv_test_connect(s.port);
    {
        char line[3000] = "AUTH ";
        memset(line + 5, 'x', 2000);
        strcpy(line + 2005, "\r\n");
        got = exchange(fd, line, strlen(line), 0, &closed);
        CU_ASSERT(strncmp(got, "-ERR Protocol error: too big inline request", 43) == 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(got, "1024 per inline request"));
        free(got);
    }
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);

    memset(&s, 0, sizeof(s));
    CU_ASSERT_FATAL(kv_test_server_start(&s, nr) == 0);
    fd = kv_test_connect(s.port);
    got = exchange(fd, "PING\r\n", 6, 0, &closed);
    CU_ASSERT_STRING_EQUAL(got, ""); /* not our protocol: closed without an answer */
    CU_ASSERT_EQUAL(closed, 1);
    free(got);
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&s), 0);
}

static void test_resp_exit_table_zero(void)
{
    char *log;

    CU_ASSERT_EQUAL(kv_test_server_stop(&srv), 0);
    log = kv_test_server_log(&srv);
    CU_ASSERT_FATAL(log != NULL);
    CU_ASSERT(strstr(log, "memory still held") == NULL);
    free(log);
}

/* Bodies of small commands are built in the request's own scratch room and
 * their answers in what is left of it; bigger ones on the heap. Values of
 * every size across that boundary (0..400 bytes, keys 1..60 bytes) must
 * come back byte for byte through SET, GETSET, GET, INCR and EXPIRE. */
static void test_resp_bodies_across_the_scratch_room(void)
{
    int fd = kv_test_connect(srv.port);
    char key[64], val[512], req[1024], want[1024];

    CU_ASSERT_FATAL(fd >= 0);
    for (int n = 0; n <= 400; n += 3) {
        int kl = 1 + n % 60;

        memset(key, 'k', (size_t)kl);
        key[kl] = '\0';
        key[0] = (char)('a' + n % 26);
        for (int i = 0; i < n; i++)
            val[i] = (char)('A' + (i * 7 + n) % 26);
        val[n] = '\0';
        snprintf(req, sizeof(req), "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", kl, key, n,
                 val);
        expect(fd, req, "+OK\r\n");
        snprintf(req, sizeof(req), "*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n", kl, key);
        snprintf(want, sizeof(want), "$%d\r\n%s\r\n", n, val);
        expect(fd, req, want);
        snprintf(req, sizeof(req), "*3\r\n$6\r\nGETSET\r\n$%d\r\n%s\r\n$1\r\n7\r\n", kl, key);
        expect(fd, req, want);
        snprintf(req, sizeof(req), "*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n", kl, key);
        expect(fd, req, ":8\r\n");
        snprintf(req, sizeof(req), "*3\r\n$6\r\nEXPIRE\r\n$%d\r\n%s\r\n$3\r\n100\r\n", kl, key);
        expect(fd, req, ":1\r\n");
        snprintf(req, sizeof(req), "*2\r\n$3\r\nDEL\r\n$%d\r\n%s\r\n", kl, key);
        expect(fd, req, ":1\r\n");
    }
    close(fd);
}

/* The commands tools send on connecting (COMMAND, CLIENT, HELLO, CONFIG GET)
 * and the argument errors of every command family: Redis's exact replies. */
static void test_resp_tool_commands_and_argument_errors(void)
{
    static const char *const pairs[][2] = {
        {"CLIENT GETNAME\r\n", "$-1\r\n"},
        {"CLIENT SETNAME x\r\n", "+OK\r\n"},
        {"CLIENT GETNAME\r\n", "$1\r\nx\r\n"},
        {"HELLO 4\r\n", "-NOPROTO unsupported protocol version\r\n"},
        {"SET a b EX x\r\n", "-ERR value is not an integer or out of range\r\n"},
        {"SET a b EX 0\r\n", "-ERR invalid expire time in 'set' command\r\n"},
        {"SET a b FOO\r\n", "-ERR syntax error\r\n"},
        {"SET a b NX XX\r\n", "-ERR syntax error\r\n"},
        {"SCAN x\r\n", "-ERR invalid cursor\r\n"},
        {"SCAN 0 COUNT x\r\n", "-ERR value is not an integer or out of range\r\n"},
        {"SCAN 0 FOO\r\n", "-ERR syntax error\r\n"},
        {"CONFIG GET maxmemory-policy\r\n",
         "*2\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n"},
        {"CONFIG SET a b\r\n",
         "-ERR Unknown option or number of arguments for CONFIG SET - 'a'\r\n"},
        {"AUTH a b c\r\n", "-ERR syntax error\r\n"},
        {"EXISTS rk:none1 rk:none2 rk:none3\r\n", ":0\r\n"},
        {"DEL\r\n", "-ERR wrong number of arguments for 'del' command\r\n"},
        {"INCRBY a x\r\n", "-ERR value is not an integer or out of range\r\n"},
        {"EXPIRE a x\r\n", "-ERR value is not an integer or out of range\r\n"},
        {"PING a b\r\n", "-ERR wrong number of arguments for 'ping' command\r\n"},
    };
    int fd = kv_test_connect(srv.port), closed;
    char *got;

    CU_ASSERT_FATAL(fd >= 0);
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
        expect(fd, pairs[i][0], pairs[i][1]);
    /* SCAN with TYPE and MATCH: a cursor and a (here empty or not) page */
    got = exchange(fd, "SCAN 0 TYPE string MATCH rk:none*\r\n", 35, 4, &closed);
    CU_ASSERT(strncmp(got, "*2\r\n", 4) == 0);
    free(got);
    close(fd);
}

/* A key above --max-key in every command that takes keys: the handler's
 * BAD_REQUEST comes back as one -ERR line in each reply style. */
static void test_resp_key_too_long_in_every_command(void)
{
    static const char *const cmds[] = {"GET %s", "SET %s v", "INCR %s", "INCRBY %s 3",
                                       "DECR %s", "MGET a %s", "MSET a 1 %s 2", "EXPIRE %s 100",
                                       "PEXPIRE %s 100", "TTL %s", "PTTL %s", "PERSIST %s",
                                       "DEL %s", "EXISTS %s", "GETSET %s v"};
    static char key[5001], req[5100];
    int fd = kv_test_connect(srv.port);

    CU_ASSERT_FATAL(fd >= 0);
    memset(key, 'k', sizeof(key) - 1);
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        snprintf(req, sizeof(req) - 2, cmds[i], key);
        strcat(req, "\r\n");
        expect(fd, req, "-ERR BAD_REQUEST: key must be 1..max-key bytes\r\n");
    }
    close(fd);
}

/* ---- the parser itself --------------------------------------------------------- */
static uint8_t *guard_base;
static long page;

/* Copies in[0..len) so that it ends right at a PROT_NONE page: a read past
 * the end faults. */
static const uint8_t *at_guard(const char *in, size_t len)
{
    uint8_t *end = guard_base + 16 * page;

    memcpy(end - len, in, len);
    return end - len;
}

/* Every input, cut at every length, parsed (a) from scratch and (b)
 * resumed, one more byte each call, each time ending at a guard page and
 * at a new address: before the end only KV_EAGAIN, at the end the same
 * result and argv as one parse of the whole. */
static void test_resp_parser_every_truncation_resumed(void)
{
    static const char *const inputs[] = {
        "*1\r\n$4\r\nPING\r\n",
        "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$11\r\nhello\r\nworld\r\n",
        "*2\r\n$0\r\n\r\n$12\r\n123456789012\r\n",
        "*0\r\n",
        "*-1\r\n",
        "GET key\r\n",
        "SET \"a b\" c\n",
        "\r\n",
        "*2\r\n$3\r\nGET\r\n+x\r\n",           /* not a bulk */
        "*2\r\n$3\r\nGETX\r\n$1\r\nk\r\n",     /* bulk without its \\r\\n */
        "*2\r\n$99999999999\r\n",                /* above the limit */
        "*x\r\n",
        "SET \"a b c\n",                            /* unbalanced quote */
    };
    struct kv_resp_limits lim = {.max_args = 64, .max_bulk = 1 << 20, .max_request = 1 << 20,
                                 .max_inline = 4096};
    struct kv_resp_argv whole = {0}, part = {0};

    page = sysconf(_SC_PAGESIZE);
    guard_base = mmap(NULL, 17 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CU_ASSERT_FATAL(guard_base != MAP_FAILED);
    CU_ASSERT_FATAL(mprotect(guard_base + 16 * page, page, PROT_NONE) == 0);
    for (size_t k = 0; k < sizeof(inputs) / sizeof(inputs[0]); k++) {
        const char *in = inputs[k];
        size_t len = strlen(in), need;
        const char *err = NULL;
        struct kv_resp_resume st = {0};
        ssize_t r1 = kv_resp_parse(at_guard(in, len), len, &lim, &whole, &need, &err, NULL);
        size_t argc1 = whole.argc;
        char args1[256] = "";

        for (size_t i = 0; r1 > 0 && i < argc1; i++)
            snprintf(args1 + strlen(args1), sizeof(args1) - strlen(args1), "[%.*s]",
                     (int)whole.v[i].len, (const char *)whole.v[i].p);
        CU_ASSERT(r1 == (ssize_t)len || r1 < 0); /* one request each */
        for (size_t t = 1; t <= len; t++) {
            char args2[256] = "";
            ssize_t fresh = kv_resp_parse(at_guard(in, t), t, &lim, &part, &need, &err, NULL);
            ssize_t r2 = kv_resp_parse(at_guard(in, t), t, &lim, &part, &need, &err, &st);

            if (t < len && r1 > 0) {
                CU_ASSERT_EQUAL(fresh, KV_EAGAIN);
                CU_ASSERT_EQUAL(r2, KV_EAGAIN);
                continue;
            }
            if (r2 == KV_EAGAIN && t < len)
                continue;
            CU_ASSERT_EQUAL(r2, r1); /* an error is found as soon as its bytes are in */
            CU_ASSERT_EQUAL(fresh, r1);
            if (r1 > 0) {
                CU_ASSERT_EQUAL(part.argc, argc1);
                for (size_t i = 0; i < part.argc && i < argc1; i++)
                    snprintf(args2 + strlen(args2), sizeof(args2) - strlen(args2), "[%.*s]",
                             (int)part.v[i].len, (const char *)part.v[i].p);
                CU_ASSERT_STRING_EQUAL(args2, args1);
            }
            CU_ASSERT_EQUAL(st.off, 0); /* nothing pending after a result */
            break;
        }
    }
    kv_resp_argv_fini(&whole);
    kv_resp_argv_fini(&part);
    munmap(guard_base, 17 * page);
}

/* Resumed, a request fed in pieces costs linear work: 200,000 elements fed
 * one element (7 bytes) per call finish in well under 2 s even in a debug
 * or ASan build; parsing from the start on every call would be 2 x 10^10
 * element checks, minutes. */
static void test_resp_parser_resume_is_linear(void)
{
    enum { N = 200000 };
    size_t cap = N * 7 + 64, len, need;
    char *in = malloc(cap);
    struct kv_resp_limits lim = {.max_args = N + 1, .max_bulk = 64, .max_request = cap,
                                 .max_inline = 4096};
    struct kv_resp_argv a = {0};
    struct kv_resp_resume st = {0};
    const char *err = NULL;
    ssize_t r = KV_EAGAIN;
    struct timespec t0, t1;

    CU_ASSERT_FATAL(in != NULL);
    len = (size_t)snprintf(in, cap, "*%d\r\n$4\r\nMGET\r\n", N + 1);
    for (int i = 0; i < N; i++, len += 7)
        memcpy(in + len, "$1\r\nk\r\n", 7);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t t = 7; t <= len + 7 && r == KV_EAGAIN; t += 7)
        r = kv_resp_parse((const uint8_t *)in, t < len ? t : len, &lim, &a, &need, &err, &st);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CU_ASSERT_EQUAL(r, (ssize_t)len);
    CU_ASSERT_EQUAL(a.argc, N + 1);
    CU_ASSERT((double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9 < 2.0);
    kv_resp_argv_fini(&a);
    free(in);
}


/* Reads one bulk reply (INFO) whole: "$N\r\n" then N bytes and CRLF. */
static char *bulk_reply(int fd, const char *req)
{
    int closed;
    char *head = exchange(fd, req, strlen(req), 0, &closed), *nl;
    long n;

    if (head[0] != '$' || !(nl = strstr(head, "\r\n")))
        return head;
    n = strtol(head + 1, NULL, 10);
    while ((long)strlen(nl + 2) < n + 2 && !closed) {
        char *more = exchange(fd, "", 0, 0, &closed);
        char *both = malloc(strlen(head) + strlen(more) + 1);

        if (!more[0]) {
            free(more);
            free(both);
            break;
        }
        strcpy(both, head);
        strcat(both, more);
        free(head);
        free(more);
        head = both;
        nl = strstr(head, "\r\n");
    }
    return head;
}

/* CONFIG GET / SET / RESETSTAT and INFO over RESP: Redis 7.0's replies and
 * errors, SET all or none, a runtime setting taking effect (maxclients
 * refuses the next connection), INFO's sections as info-command.tcl asks. */
static void test_resp_config_and_info(void)
{
    static const char *const pairs[][2] = {
        {"CONFIG GET maxclients\r\n", "*2\r\n$10\r\nmaxclients\r\n$3\r\n100\r\n"},
        {"CONFIG GET max-conns timeout nosuch\r\n",
         "*4\r\n$9\r\nmax-conns\r\n$3\r\n100\r\n$7\r\ntimeout\r\n$1\r\n0\r\n"},
        {"CONFIG GET maxmemory-p*\r\n",
         "*2\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n"},
        {"CONFIG GET\r\n", "-ERR wrong number of arguments for 'config|get' command\r\n"},
        {"CONFIG SET maxclients\r\n",
         "-ERR wrong number of arguments for 'config|set' command\r\n"},
        {"CONFIG SET maxclients 5 timeout\r\n", "-ERR syntax error\r\n"},
        {"CONFIG SET maxclients 50 timeout x\r\n",
         "-ERR CONFIG SET failed (possibly related to argument 'timeout') - argument couldn't be "
         "parsed into an integer\r\n"},
        {"CONFIG GET maxclients\r\n", "*2\r\n$10\r\nmaxclients\r\n$3\r\n100\r\n"}, /* unchanged */
        {"CONFIG SET databases 2\r\n", "-ERR CONFIG SET failed (possibly related to argument "
                                       "'databases') - can't set immutable config\r\n"},
        {"CONFIG SET nosuch 1\r\n",
         "-ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'\r\n"},
        {"CONFIG SET maxclients 50 timeout 7\r\n", "+OK\r\n"},
        {"CONFIG GET maxclients timeout\r\n",
         "*4\r\n$10\r\nmaxclients\r\n$2\r\n50\r\n$7\r\ntimeout\r\n$1\r\n7\r\n"},
        {"CONFIG FOO\r\n", "-ERR unknown subcommand 'FOO'. Try CONFIG HELP.\r\n"},
        {"CONFIG RESETSTAT x\r\n",
         "-ERR wrong number of arguments for 'config|resetstat' command\r\n"},
        {"CONFIG RESETSTAT\r\n", "+OK\r\n"},
    };
    struct kv_test_server s = {0};
    const char *args[] = {"--max-conns", "100", NULL};
    int fd, fd2, closed;
    char *got;

    CU_ASSERT_FATAL(kv_test_server_start(&s, args) == 0);
    fd = kv_test_connect(s.port);
    CU_ASSERT_FATAL(fd >= 0);
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++)
        expect(fd, pairs[i][0], pairs[i][1]);
    /* CONFIG GET * lists every parameter, each a name and a value */
    got = exchange(fd, "CONFIG GET *\r\n", 14, 0, &closed);
    CU_ASSERT(strstr(got, "$10\r\nmaxclients\r\n$2\r\n50\r\n") && strstr(got, "$4\r\nsave\r\n") &&
              strstr(got, "$9\r\nmaxmemory\r\n"));
    free(got);
    /* a runtime setting takes effect: with maxclients 1 the next
     * connection is refused */
    expect(fd, "CONFIG SET maxclients 1\r\n", "+OK\r\n");
    fd2 = kv_test_connect(s.port);
    CU_ASSERT_FATAL(fd2 >= 0);
    got = exchange(fd2, "PING\r\n", 6, 7, &closed);
    CU_ASSERT(strcmp(got, "+PONG\r\n") != 0);
    free(got);
    close(fd2);
    expect(fd, "CONFIG SET maxclients 100\r\n", "+OK\r\n");

    /* INFO: sections as Redis names them, alone or together */
    expect(fd, "SET info:k v\r\n", "+OK\r\n");
    got = bulk_reply(fd, "INFO\r\n");
    CU_ASSERT(strstr(got, "# Server\r\nredis_version:") && strstr(got, "\r\n# Clients\r\n") &&
              strstr(got, "\r\n# Memory\r\nused_memory:") && strstr(got, "# Persistence\r\n") &&
              strstr(got, "# Stats\r\n") && strstr(got, "# Replication\r\nrole:master\r\n") &&
              strstr(got, "# CPU\r\nused_cpu_sys:") && strstr(got, "# Keyspace\r\ndb0:keys=1,"));
    CU_ASSERT(strstr(got, "rejected_calls") == NULL); /* commandstats only in all */
    CU_ASSERT(strstr(got, "maxclients:100\r\n") != NULL);
    {   /* since RESETSTAT: the refused connection only (the kernel may count it accepted) */
        const char *t = strstr(got, "total_connections_received:");
        const char *r = strstr(got, "rejected_connections:");

        CU_ASSERT(t && strtol(t + 27, NULL, 10) <= 1);
        CU_ASSERT(r && strtol(r + 21, NULL, 10) == 1);
    }
    free(got);
    got = bulk_reply(fd, "INFO cpu\r\n");
    CU_ASSERT(strstr(got, "used_cpu_user:") && !strstr(got, "used_memory"));
    free(got);
    got = bulk_reply(fd, "info CPU keyspace nosuch\r\n");
    CU_ASSERT(strstr(got, "used_cpu_user:") && strstr(got, "db0:keys=1") &&
              !strstr(got, "used_memory"));
    free(got);
    got = bulk_reply(fd, "INFO all\r\n");
    CU_ASSERT(strstr(got, "# Commandstats\r\ncmdstat_") && strstr(got, "rejected_calls=") &&
              strstr(got, "cmdstat_set:calls=1,") && strstr(got, "used_memory:"));
    free(got);
    got = bulk_reply(fd, "INFO sentinel\r\n");
    CU_ASSERT_STRING_EQUAL(got, "$0\r\n\r\n");
    free(got);
    close(fd);
    kv_test_server_stop(&s);
}

int main(void)
{
    CU_pSuite s;

    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    s = CU_add_suite("resp", suite_init, suite_clean);
    CU_add_test(s, "test_resp_parser_every_truncation_resumed",
                test_resp_parser_every_truncation_resumed);
    CU_add_test(s, "test_resp_parser_resume_is_linear", test_resp_parser_resume_is_linear);
    CU_add_test(s, "test_resp_key_too_long_in_every_command",
                test_resp_key_too_long_in_every_command);
    CU_add_test(s, "test_resp_tool_commands_and_argument_errors",
                test_resp_tool_commands_and_argument_errors);
    CU_add_test(s, "test_resp_multibulk_and_inline_exact_replies",
                test_resp_multibulk_and_inline_exact_replies);
    CU_add_test(s, "test_resp_command_table_arity_and_case", test_resp_command_table_arity_and_case);
    CU_add_test(s, "test_resp_string_family", test_resp_string_family);
    CU_add_test(s, "test_resp_append_is_atomic", test_resp_append_is_atomic);
    CU_add_test(s, "test_resp_keyspace", test_resp_keyspace);
    CU_add_test(s, "test_resp_databases_and_rename", test_resp_databases_and_rename);
    CU_add_test(s, "test_resp_pipelined_replies_in_request_order",
                test_resp_pipelined_replies_in_request_order);
    CU_add_test(s, "test_resp_bodies_across_the_scratch_room",
                test_resp_bodies_across_the_scratch_room);
    CU_add_test(s, "test_resp_protocol_errors_close_the_connection",
                test_resp_protocol_errors_close_the_connection);
    CU_add_test(s, "test_resp_redis_cli_every_command", test_resp_redis_cli_every_command);
    CU_add_test(s, "test_resp_redis_benchmark_runs_without_errors",
                test_resp_redis_benchmark_runs_without_errors);
    CU_add_test(s, "test_resp_python_redis_client_mixed_workload",
                test_resp_python_redis_client_mixed_workload);
    CU_add_test(s, "test_resp_twemproxy_shards_over_two_instances",
                test_resp_twemproxy_shards_over_two_instances);
    CU_add_test(s, "test_resp_auth_and_no_resp_option", test_resp_auth_and_no_resp_option);
    CU_add_test(s, "test_resp_config_and_info", test_resp_config_and_info);
    CU_add_test(s, "test_resp_exit_table_zero", test_resp_exit_table_zero);
    return kv_test_run_all();
}
