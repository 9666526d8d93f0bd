/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_conn.c -- the connection commands of the RESP protocol, end
 * to end against a real server with two IO threads (so that CLIENT KILL and
 * MONITOR cross threads): HELLO 2/3 and the RESP3 forms of the replies,
 * HELLO AUTH/SETNAME before AUTH, CLIENT ID/SETNAME/GETNAME/LIST/INFO/KILL/
 * REPLY/NO-EVICT/SETINFO in Redis 7.0's layout, RESET, COMMAND, MONITOR, and
 * the protocol errors under RESP3. Exact bytes wherever Redis's are fixed. */
#include <CUnit/CUnit.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "kv_test_util.h"

static struct kv_test_server srv;

static int suite_init(void)
{
    static const char *const args[] = {"--io-threads", "2", NULL};

    memset(&srv, 0, sizeof(srv));
    return kv_test_server_start(&srv, args) == 0 ? 0 : -1;
}

static int suite_clean(void)
{
    if (srv.pid > 0)
        kv_test_server_stop(&srv);
    return 0;
}

/* Sends req (may be ""), then reads until want bytes came (want 0: until
 * quiet_ms pass without data), the peer closed (*closed = 1) or 3 s passed.
 * Returns a malloc'd NUL-terminated reply. */
static char *xchg(int fd, const char *req, size_t want, int quiet_ms, int *closed)
{
    size_t cap = want + 262144, len = 0, reqlen = strlen(req);
    char *buf = malloc(cap + 1);
    int waited = 0;

    *closed = 0;
    if (want == 0 && quiet_ms <= 0)
        quiet_ms = 150;
    if (reqlen && send(fd, req, reqlen, MSG_NOSIGNAL) != (ssize_t)reqlen)
        *closed = 1;
    while ((want == 0 || len < want) && waited < 3000) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int t = want == 0 ? quiet_ms : 100;
        ssize_t n;

        if (poll(&p, 1, t) <= 0) {
            waited += t;
            if (want == 0 && len > 0)
                break;
            continue;
        }
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
    char *got = xchg(fd, req, strlen(reply), 0, &closed);

    if (strcmp(got, reply) != 0)
        fprintf(stderr, "\n  sent %s\n  want %s\n  got  %s\n", req, reply, got);
    CU_ASSERT_STRING_EQUAL(got, reply);
    CU_ASSERT_EQUAL(closed, 0);
    free(got);
}

/* The reply to req, whatever its length (read until 150 ms of quiet). */
static char *ask(int fd, const char *req)
{
    int closed;

    return xchg(fd, req, 0, 150, &closed);
}

static int matches(const char *text, const char *pattern)
{
    regex_t re;
    int ok;

    if (regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) != 0)
        return 0;
    ok = regexec(&re, text, 0, NULL, 0) == 0;
    regfree(&re);
    if (!ok)
        fprintf(stderr, "\n  pattern %s\n  text    %s\n", pattern, text);
    return ok;
}

/* Our own id, from CLIENT ID. */
static long long my_id(int fd)
{
    char *r = ask(fd, "CLIENT ID\r\n");
    long long id = r[0] == ':' ? atoll(r + 1) : -1;

    free(r);
    return id;
}

static void test_conn_hello_switches_to_resp3_and_back(void)
{
    int fd = kv_test_connect(srv.port);
    char want[512], *got;
    long long id;

    CU_ASSERT_FATAL(fd >= 0);
    id = my_id(fd);
    CU_ASSERT(id > 0);
    /* HELLO 3: the map Redis 7.0 answers, with our id */
    snprintf(want, sizeof(want),
             "%%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n"
             "$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:%lld\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n"
             "$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
             id);
    expect(fd, "HELLO 3\r\n", want);
    expect(fd, "DEL cn:k cn:f\r\n", ":0\r\n");
    expect(fd, "GET cn:k\r\n", "_\r\n");                         /* null */
    expect(fd, "SET cn:k v\r\n", "+OK\r\n");
    expect(fd, "SET cn:k v NX\r\n", "_\r\n");                    /* refused: null */
    expect(fd, "MGET cn:k cn:none\r\n", "*2\r\n$1\r\nv\r\n_\r\n");
    expect(fd, "CLIENT GETNAME\r\n", "_\r\n");
    expect(fd, "INCRBYFLOAT cn:f 1.5\r\n", "$3\r\n1.5\r\n");     /* stays a bulk */
    expect(fd, "TTL cn:k\r\n", ":-1\r\n");                       /* ints unchanged */
    expect(fd, "PING\r\n", "+PONG\r\n");
    expect(fd, "PING hi\r\n", "$2\r\nhi\r\n");
    expect(fd, "ECHO hi\r\n", "$2\r\nhi\r\n");
    expect(fd, "CONFIG GET maxmemory-policy\r\n",
           "%1\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n"); /* a map */
    got = ask(fd, "INFO\r\n");                                  /* verbatim text */
    CU_ASSERT(matches(got, "^=[0-9]+\r\ntxt:# Server\r\n"));
    free(got);
    got = ask(fd, "CLIENT INFO\r\n");
    CU_ASSERT(matches(got, "^=[0-9]+\r\ntxt:id=[0-9]+ .* resp=3 "));
    free(got);
    /* HELLO 2: RESP2 again, the map a flat array */
    snprintf(want, sizeof(want),
             "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.0.0\r\n"
             "$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:%lld\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n"
             "$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
             id);
    expect(fd, "HELLO 2\r\n", want);
    expect(fd, "GET cn:none\r\n", "$-1\r\n");
    /* HELLO without a version: the map, protocol unchanged */
    got = ask(fd, "HELLO\r\n");
    CU_ASSERT(matches(got, "^\\*14\r\n.*\\$5\r\nproto\r\n:2\r\n"));
    free(got);
    /* Redis's errors */
    expect(fd, "HELLO 4\r\n", "-NOPROTO unsupported protocol version\r\n");
    expect(fd, "HELLO 1\r\n", "-NOPROTO unsupported protocol version\r\n");
    expect(fd, "HELLO x\r\n", "-ERR Protocol version is not an integer or out of range\r\n");
    expect(fd, "HELLO 3 FOO\r\n", "-ERR Syntax error in HELLO option 'FOO'\r\n");
    expect(fd, "HELLO 3 AUTH default\r\n", "-ERR Syntax error in HELLO option 'AUTH'\r\n");
    expect(fd, "GET cn:none\r\n", "$-1\r\n"); /* none of those switched */
    /* SETNAME inside HELLO, checked as CLIENT SETNAME is */
    got = ask(fd, "HELLO 3 SETNAME cn-hello\r\n");
    CU_ASSERT(strncmp(got, "%7\r\n", 4) == 0);
    free(got);
    expect(fd, "CLIENT GETNAME\r\n", "$8\r\ncn-hello\r\n");
    expect(fd, "HELLO 2 SETNAME \"a b\"\r\n",
           "-ERR Client names cannot contain spaces, newlines or special characters.\r\n");
    expect(fd, "GET cn:none\r\n", "_\r\n"); /* the failed HELLO 2 left RESP3 on */
    /* protocol errors are the same in RESP3: the error, then the close */
    {
        int closed;
        char *e = xchg(fd, "*1\r\n$x\r\n", 0, 300, &closed);

        CU_ASSERT_STRING_EQUAL(e, "-ERR Protocol error: invalid bulk length\r\n");
        CU_ASSERT_EQUAL(closed, 1);
        free(e);
    }
    close(fd);
}

static void test_conn_hello_auth_before_authentication(void)
{
    static const char *const args[] = {"--requirepass", "s3cret", NULL};
    struct kv_test_server ks = {0};
    int fd;
    char *got;

    CU_ASSERT_FATAL(kv_test_server_start(&ks, args) == 0);
    fd = kv_test_connect(ks.port);
    CU_ASSERT_FATAL(fd >= 0);
    expect(fd, "GET a\r\n", "-NOAUTH Authentication required.\r\n");
    expect(fd, "HELLO 3\r\n",
           "-NOAUTH HELLO must be called with the client already authenticated, otherwise the "
           "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
           "select the RESP protocol version at the same time\r\n");
    expect(fd, "HELLO 3 AUTH default wrong\r\n",
           "-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    expect(fd, "HELLO 3 AUTH other s3cret\r\n",
           "-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    got = ask(fd, "HELLO 3 AUTH default s3cret SETNAME cn-auth\r\n");
    CU_ASSERT(matches(got, "^%7\r\n.*\\$5\r\nproto\r\n:3\r\n"));
    free(got);
    expect(fd, "GET a\r\n", "_\r\n");
    expect(fd, "CLIENT GETNAME\r\n", "$7\r\ncn-auth\r\n");
    /* RESET: RESP2, no name, and not authenticated any more */
    expect(fd, "RESET\r\n", "+RESET\r\n");
    expect(fd, "GET a\r\n", "-NOAUTH Authentication required.\r\n");
    expect(fd, "AUTH s3cret\r\n", "+OK\r\n");
    expect(fd, "GET a\r\n", "$-1\r\n");
    expect(fd, "CLIENT GETNAME\r\n", "$-1\r\n");
    close(fd);
    /* the third wrong password through HELLO closes, as through AUTH */
    fd = kv_test_connect(ks.port);
    CU_ASSERT_FATAL(fd >= 0);
    for (int i = 0; i < 3; i++) {
        int closed;
        char *e = xchg(fd, "HELLO 2 AUTH default nope\r\n", 66, 0, &closed);

        CU_ASSERT_STRING_EQUAL(e, "-WRONGPASS invalid username-password pair or user is "
                                  "disabled.\r\n");
        free(e);
    }
    {
        int closed;
        char *e = xchg(fd, "PING\r\n", 0, 300, &closed);

        CU_ASSERT_EQUAL(closed, 1);
        free(e);
    }
    close(fd);
    CU_ASSERT_EQUAL(kv_test_server_stop(&ks), 0);
}

/* Redis 7.0's field layout, in order (introspection.tcl's pattern, with
 * qbuf=26 for "client list" itself), then ours. */
static const char client_line_re[] =
    "id=[0-9]+ addr=127\\.0\\.0\\.1:[0-9]+ laddr=127\\.0\\.0\\.1:[0-9]+ fd=[0-9]+ name=[^ ]* "
    "age=[0-9]+ idle=[0-9]+ flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=[0-9]+ "
    "qbuf-free=[0-9]+ argv-mem=[0-9]+ multi-mem=0 rbs=[0-9]+ rbp=[0-9]+ obl=0 oll=0 omem=0 "
    "tot-mem=[0-9]+ events=r cmd=[^ ]+ user=default redir=-1 resp=[23] lib-name=[^ ]* "
    "lib-ver=[^ ]* transport=tcp\n";

static void test_conn_client_list_info_and_names(void)
{
    int a = kv_test_connect(srv.port), b = kv_test_connect(srv.port);
    char re[1024], req[128], *got;
    long long ida, idb;

    CU_ASSERT_FATAL(a >= 0 && b >= 0);
    ida = my_id(a);
    idb = my_id(b);
    CU_ASSERT(ida > 0 && idb > 0 && ida != idb);
    expect(a, "CLIENT SETNAME cn-a\r\n", "+OK\r\n");
    expect(b, "CLIENT SETINFO LIB-NAME cn-lib\r\n", "+OK\r\n");
    expect(b, "CLIENT SETINFO LIB-VER 1.2\r\n", "+OK\r\n");
    expect(b, "CLIENT SETINFO LIB-NAME \"a b\"\r\n",
           "-ERR lib-name cannot contain spaces, newlines or special characters.\r\n");
    expect(b, "CLIENT SETINFO FOO x\r\n", "-ERR Unrecognized option 'FOO'\r\n");
    /* CLIENT INFO: this connection only, qbuf= counts the command itself */
    got = ask(a, "*2\r\n$6\r\nclient\r\n$4\r\ninfo\r\n");
    snprintf(re, sizeof(re), "^\\$[0-9]+\r\nid=%lld .* name=cn-a .* qbuf=26 .* cmd=client\\|info ",
             ida);
    CU_ASSERT(matches(got, re));
    CU_ASSERT(matches(got, "^\\$[0-9]+\r\n[^\n]*\n\r\n$")); /* one line */
    free(got);
    /* CLIENT LIST: both, each line in Redis's layout, b's last command shown */
    got = ask(a, "*2\r\n$6\r\nclient\r\n$4\r\nlist\r\n");
    snprintf(re, sizeof(re), "id=%lld [^\n]* name=cn-a [^\n]* qbuf=26 [^\n]* cmd=client\\|list ",
             ida);
    CU_ASSERT(matches(got, re));
    snprintf(re, sizeof(re), "id=%lld [^\n]* cmd=client\\|setinfo [^\n]* lib-name=cn-lib "
             "lib-ver=1\\.2 ", idb);
    CU_ASSERT(matches(got, re));
    {
        char *line = strstr(got, "\r\n") + 2, *nl;

        for (; (nl = strchr(line, '\n')) && nl[1]; line = nl + 1) {
            char one[2048];
            size_t n = (size_t)(nl - line) + 1;

            if (n >= sizeof(one))
                break;
            memcpy(one, line, n);
            one[n] = '\0';
            snprintf(re, sizeof(re), "^%s$", client_line_re);
            CU_ASSERT(matches(one, re));
        }
    }
    free(got);
    /* CLIENT LIST ID: those only; a bad id is Redis's error */
    snprintf(req, sizeof(req), "CLIENT LIST ID %lld 999999\r\n", idb);
    got = ask(a, req);
    snprintf(re, sizeof(re), "^\\$[0-9]+\r\nid=%lld [^\n]*\n\r\n$", idb);
    CU_ASSERT(matches(got, re));
    free(got);
    expect(a, "CLIENT LIST ID x\r\n", "-ERR Invalid client ID\r\n");
    expect(a, "CLIENT LIST TYPE master\r\n", "$0\r\n\r\n");
    expect(a, "CLIENT LIST TYPE bogus\r\n", "-ERR Unknown client type 'bogus'\r\n");
    expect(a, "CLIENT LIST FOO\r\n", "-ERR syntax error\r\n");
    got = ask(a, "CLIENT LIST TYPE normal\r\n");
    CU_ASSERT(strstr(got, "name=cn-a ") != NULL);
    free(got);
    /* names: Redis's rule, cleared by an empty one */
    expect(a, "CLIENT GETNAME\r\n", "$4\r\ncn-a\r\n");
    expect(a, "CLIENT SETNAME \"x\ty\"\r\n",
           "-ERR Client names cannot contain spaces, newlines or special characters.\r\n");
    expect(a, "CLIENT SETNAME \"\"\r\n", "+OK\r\n");
    expect(a, "CLIENT GETNAME\r\n", "$-1\r\n");
    /* subcommand errors */
    expect(a, "CLIENT\r\n", "-ERR wrong number of arguments for 'client' command\r\n");
    expect(a, "CLIENT GETNAME x\r\n",
           "-ERR wrong number of arguments for 'client|getname' command\r\n");
    expect(a, "CLIENT NOPE\r\n", "-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n");
    close(b);
    /* a closed connection leaves the list */
    usleep(100 * 1000);
    got = ask(a, "CLIENT LIST\r\n");
    snprintf(re, sizeof(re), "id=%lld ", idb);
    CU_ASSERT(strstr(got, re) == NULL);
    free(got);
    close(a);
}

/* 1: the peer closed fd within 2 s. */
static int closed_by_peer(int fd)
{
    int closed;
    char *r = xchg(fd, "", 0, 2000, &closed);

    free(r);
    return closed;
}

static void test_conn_client_kill_across_io_threads(void)
{
    enum { N = 6 };
    int me = kv_test_connect(srv.port), fds[N], closed;
    long long ids[N];
    char req[160], *got;

    CU_ASSERT_FATAL(me >= 0);
    /* the listener deals connections round-robin over the 2 IO threads */
    for (int i = 0; i < N; i++) {
        fds[i] = kv_test_connect(srv.port);
        CU_ASSERT_FATAL(fds[i] >= 0);
        ids[i] = my_id(fds[i]);
    }
    /* by ID: one on each thread */
    for (int i = 0; i < 2; i++) {
        snprintf(req, sizeof(req), "CLIENT KILL ID %lld\r\n", ids[i]);
        expect(me, req, ":1\r\n");
        CU_ASSERT(closed_by_peer(fds[i]));
    }
    snprintf(req, sizeof(req), "CLIENT KILL ID %lld\r\n", ids[0]);
    expect(me, req, ":0\r\n"); /* gone already */
    /* the old form, by address */
    {
        struct sockaddr_in sa;
        socklen_t sl = sizeof(sa);

        getsockname(fds[2], (struct sockaddr *)&sa, &sl);
        snprintf(req, sizeof(req), "CLIENT KILL 127.0.0.1:%u\r\n", ntohs(sa.sin_port));
        expect(me, req, "+OK\r\n");
        CU_ASSERT(closed_by_peer(fds[2]));
        expect(me, req, "-ERR No such client\r\n");
        snprintf(req, sizeof(req), "CLIENT KILL ADDR 127.0.0.1:%u ID %lld\r\n",
                 ntohs(sa.sin_port), ids[3]);
        expect(me, req, ":0\r\n"); /* both filters must match */
    }
    /* filters that match nobody here */
    expect(me, "CLIENT KILL TYPE master\r\n", ":0\r\n");
    expect(me, "CLIENT KILL LADDR 127.0.0.2:1\r\n", ":0\r\n");
    /* Redis's argument errors */
    expect(me, "CLIENT KILL\r\n", "-ERR wrong number of arguments for 'client|kill' command\r\n");
    expect(me, "CLIENT KILL id 10 wrong_arg\r\n", "-ERR syntax error\r\n");
    expect(me, "CLIENT KILL id str\r\n", "-ERR client-id should be greater than 0\r\n");
    expect(me, "CLIENT KILL id -1\r\n", "-ERR client-id should be greater than 0\r\n");
    expect(me, "CLIENT KILL id 0\r\n", "-ERR client-id should be greater than 0\r\n");
    expect(me, "CLIENT KILL type wrong_type\r\n", "-ERR Unknown client type 'wrong_type'\r\n");
    expect(me, "CLIENT KILL user wrong_user\r\n", "-ERR No such user 'wrong_user'\r\n");
    expect(me, "CLIENT KILL skipme yes_or_no\r\n", "-ERR syntax error\r\n");
    /* SKIPME yes (the default): all the others of user default, not me */
    got = ask(me, "CLIENT KILL USER default SKIPME yes\r\n");
    CU_ASSERT(atoi(got + 1) >= 3);
    free(got);
    for (int i = 3; i < N; i++)
        CU_ASSERT(closed_by_peer(fds[i]));
    expect(me, "PING\r\n", "+PONG\r\n");
    /* SKIPME no: me too, after the reply */
    snprintf(req, sizeof(req), "CLIENT KILL ID %lld SKIPME no\r\n", my_id(me));
    got = xchg(me, req, 0, 2000, &closed);
    CU_ASSERT_STRING_EQUAL(got, ":1\r\n");
    CU_ASSERT_EQUAL(closed, 1);
    free(got);
    for (int i = 0; i < N; i++)
        close(fds[i]);
    close(me);
    /* the server is fine */
    me = kv_test_connect(srv.port);
    expect(me, "PING\r\n", "+PONG\r\n");
    close(me);
}

static void test_conn_client_reply_off_on_skip(void)
{
    int fd = kv_test_connect(srv.port);

    CU_ASSERT_FATAL(fd >= 0);
    /* OFF: nothing, errors included, until ON (whose OK is sent); the
     * commands still run */
    expect(fd, "CLIENT REPLY OFF\r\nSET cn:r 1\r\nPING a\r\nNOSUCH\r\nINCR cn:r\r\n"
               "CLIENT REPLY ON\r\nGET cn:r\r\n",
           "+OK\r\n$1\r\n2\r\n");
    /* SKIP: the next reply only */
    expect(fd, "CLIENT REPLY SKIP\r\nPING a\r\nPING b\r\n", "$1\r\nb\r\n");
    /* SKIP then ON: ON is answered */
    expect(fd, "CLIENT REPLY SKIP\r\nCLIENT REPLY ON\r\nPING\r\n", "+OK\r\n+PONG\r\n");
    /* SKIP while OFF changes nothing; RESET turns replies on */
    expect(fd, "CLIENT REPLY OFF\r\nCLIENT REPLY SKIP\r\nPING a\r\nRESET\r\nPING b\r\n",
           "+RESET\r\n$1\r\nb\r\n");
    expect(fd, "CLIENT REPLY MAYBE\r\n", "-ERR syntax error\r\n");
    close(fd);
}

static void test_conn_reset_and_no_evict(void)
{
    int fd = kv_test_connect(srv.port);
    char *got;

    CU_ASSERT_FATAL(fd >= 0);
    expect(fd, "CLIENT SETNAME cn-reset\r\n", "+OK\r\n");
    expect(fd, "CLIENT NO-EVICT ON\r\n", "+OK\r\n");
    got = ask(fd, "CLIENT INFO\r\n");
    CU_ASSERT(strstr(got, " name=cn-reset ") && strstr(got, " flags=e "));
    free(got);
    expect(fd, "CLIENT NO-EVICT MAYBE\r\n", "-ERR syntax error\r\n");
    got = ask(fd, "HELLO 3\r\n");
    free(got);
    expect(fd, "RESET\r\n", "+RESET\r\n");
    got = ask(fd, "CLIENT INFO\r\n");
    /* Redis's RESET test: name= and resp=2 again (NO-EVICT stays, as in Redis) */
    CU_ASSERT(strstr(got, " name= ") && strstr(got, " resp=2 ") && strstr(got, " flags=e "));
    free(got);
    expect(fd, "CLIENT NO-EVICT OFF\r\n", "+OK\r\n");
    got = ask(fd, "CLIENT INFO\r\n");
    CU_ASSERT(strstr(got, " flags=N ") != NULL);
    free(got);
    expect(fd, "RESET x\r\n", "-ERR wrong number of arguments for 'reset' command\r\n");
    close(fd);
}

/* --max-client-memory closes the connection holding the most, unless it
 * said CLIENT NO-EVICT ON: then the next largest goes. Both halves, so the
 * test fails if NO-EVICT is ignored. */
static void test_conn_no_evict_survives_the_client_memory_budget(void)
{
    static const char *const args[] = {"--max-client-memory", "1m", NULL};
    static char part[700 * 1024];
    struct kv_test_server ks = {0};

    CU_ASSERT_FATAL(kv_test_server_start(&ks, args) == 0);
    memset(part, 'v', sizeof(part));
    for (int protect = 0; protect < 2; protect++) {
        int big = kv_test_connect(ks.port), small = kv_test_connect(ks.port);
        char hdr[64];
        size_t half = 400 * 1024;

        CU_ASSERT_FATAL(big >= 0 && small >= 0);
        if (protect)
            expect(big, "CLIENT NO-EVICT ON\r\n", "+OK\r\n");
        else
            expect(big, "PING\r\n", "+PONG\r\n");
        expect(small, "PING\r\n", "+PONG\r\n");
        /* big holds 700 KB of a 900 KB value; small then 400 KB of another */
        snprintf(hdr, sizeof(hdr), "*3\r\n$3\r\nSET\r\n$4\r\ncn:b\r\n$%d\r\n", 900 * 1024);
        send(big, hdr, strlen(hdr), MSG_NOSIGNAL);
        send(big, part, sizeof(part), MSG_NOSIGNAL);
        usleep(300 * 1000);
        snprintf(hdr, sizeof(hdr), "*3\r\n$3\r\nSET\r\n$4\r\ncn:s\r\n$%d\r\n", 900 * 1024);
        send(small, hdr, strlen(hdr), MSG_NOSIGNAL);
        send(small, part, half, MSG_NOSIGNAL);
        usleep(300 * 1000);
        if (protect) {
            CU_ASSERT(closed_by_peer(small));
            /* big finishes its value and is answered */
            send(big, part, 900 * 1024 - sizeof(part), MSG_NOSIGNAL);
            expect(big, "\r\n", "+OK\r\n");
        } else {
            CU_ASSERT(closed_by_peer(big)); /* without NO-EVICT, the largest goes */
        }
        close(big);
        close(small);
    }
    CU_ASSERT_EQUAL(kv_test_server_stop(&ks), 0);
}

static void test_conn_command_count_list_info_docs(void)
{
    int fd = kv_test_connect(srv.port);
    char *got, *p;
    long count, listed = 0;

    CU_ASSERT_FATAL(fd >= 0);
    got = ask(fd, "COMMAND COUNT\r\n");
    CU_ASSERT_FATAL(got[0] == ':');
    count = atol(got + 1);
    CU_ASSERT(count > 40);
    free(got);
    /* COMMAND LIST: that many names, lower case */
    got = ask(fd, "COMMAND LIST\r\n");
    CU_ASSERT(got[0] == '*' && atol(got + 1) == count);
    for (p = strstr(got, "\r\n$"); p; p = strstr(p + 3, "\r\n$"))
        listed++;
    CU_ASSERT_EQUAL(listed, count);
    CU_ASSERT(strstr(got, "\r\nget\r\n") && strstr(got, "\r\nclient\r\n") &&
              strstr(got, "\r\nhello\r\n") && !strstr(got, "\r\nGET\r\n"));
    free(got);
    expect(fd, "COMMAND LIST FILTERBY PATTERN mge*\r\n", "*1\r\n$4\r\nmget\r\n");
    expect(fd, "COMMAND LIST FILTERBY MODULE x\r\n", "*0\r\n");
    got = ask(fd, "COMMAND LIST FILTERBY ACLCAT write\r\n");
    CU_ASSERT(strstr(got, "\r\nset\r\n") && !strstr(got, "\r\nget\r\n"));
    free(got);
    /* COMMAND INFO: Redis 7.0's ten fields; nil for an unknown name */
    expect(fd, "COMMAND INFO get nosuch\r\n",
           "*2\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n"
           "*2\r\n+@read\r\n+@fast\r\n*0\r\n*0\r\n*0\r\n$-1\r\n");
    expect(fd, "COMMAND INFO mset\r\n",
           "*1\r\n*10\r\n$4\r\nmset\r\n:-3\r\n*1\r\n+write\r\n:1\r\n:-1\r\n:2\r\n"
           "*2\r\n+@write\r\n+@slow\r\n*0\r\n*0\r\n*0\r\n");
    got = ask(fd, "COMMAND INFO\r\n"); /* no name: all */
    CU_ASSERT(got[0] == '*' && atol(got + 1) == count);
    free(got);
    got = ask(fd, "COMMAND\r\n");
    CU_ASSERT(got[0] == '*' && atol(got + 1) == count);
    free(got);
    /* COMMAND DOCS: a map; RESP3's form after HELLO 3 */
    expect(fd, "COMMAND DOCS get nosuch\r\n", "*2\r\n$3\r\nget\r\n*0\r\n");
    got = ask(fd, "HELLO 3\r\n");
    free(got);
    expect(fd, "COMMAND DOCS get\r\n", "%1\r\n$3\r\nget\r\n%0\r\n");
    expect(fd, "COMMAND INFO nosuch\r\n", "*1\r\n_\r\n");
    got = ask(fd, "COMMAND INFO get\r\n");
    CU_ASSERT(strstr(got, "~2\r\n+readonly\r\n+fast\r\n") != NULL); /* flags: a set */
    free(got);
    expect(fd, "COMMAND NOPE\r\n", "-ERR unknown subcommand 'NOPE'. Try COMMAND HELP.\r\n");
    expect(fd, "COMMAND COUNT x\r\n",
           "-ERR wrong number of arguments for 'command|count' command\r\n");
    close(fd);
}

static void test_conn_monitor_sees_every_thread(void)
{
    int mon = kv_test_connect(srv.port), a = kv_test_connect(srv.port), b = kv_test_connect(srv.port);
    char *got;

    CU_ASSERT_FATAL(mon >= 0 && a >= 0 && b >= 0);
    expect(mon, "MONITOR\r\n", "+OK\r\n");
    expect(mon, "MONITOR\r\n", ""); /* a second one is not answered */
    /* a and b are on different IO threads (round-robin), one of them not mon's */
    expect(a, "*3\r\n$3\r\nset\r\n$5\r\ncn:mo\r\n$4\r\na\"b\n\r\n", "+OK\r\n");
    expect(b, "get cn:mo\r\n", "$4\r\na\"b\n\r\n");
    expect(a, "AUTH secret\r\n", "-ERR AUTH <password> called without any password configured "
                                 "for the default user. Are you sure your configuration is "
                                 "correct?\r\n"); /* no password set: Redis 7.0's error */
    expect(b, "CONFIG GET maxmemory-policy\r\n",
           "*2\r\n$16\r\nmaxmemory-policy\r\n$10\r\nnoeviction\r\n"); /* admin: not shown */
    expect(b, "PING\r\n", "+PONG\r\n");
    expect(b, "SELECT 3\r\n", "+OK\r\n"); /* the line names the connection's database */
    expect(b, "GET cn:mo3\r\n", "$-1\r\n");
    expect(b, "SELECT 0\r\n", "+OK\r\n");
    got = ask(mon, "");
    CU_ASSERT(matches(got, "^\\+[0-9]+\\.[0-9]{6} \\[0 127\\.0\\.0\\.1:[0-9]+\\] \"set\" \"cn:mo\" "
                           "\"a\\\\\"b\\\\n\"\r\n"
                           "\\+[0-9.]+ \\[0 127\\.0\\.0\\.1:[0-9]+\\] \"get\" \"cn:mo\"\r\n"
                           "\\+[0-9.]+ \\[0 [0-9.:]+\\] \"AUTH\" \"\\(redacted\\)\"\r\n"
                           "\\+[0-9.]+ \\[0 [0-9.:]+\\] \"PING\"\r\n"
                           "\\+[0-9.]+ \\[3 [0-9.:]+\\] \"SELECT\" \"3\"\r\n" /* 7.0: after */
                           "\\+[0-9.]+ \\[3 [0-9.:]+\\] \"GET\" \"cn:mo3\"\r\n"
                           "\\+[0-9.]+ \\[0 [0-9.:]+\\] \"SELECT\" \"0\"\r\n$"));
    free(got);
    got = ask(a, "CLIENT LIST\r\n");
    CU_ASSERT(strstr(got, " flags=O ") != NULL);
    free(got);
    got = ask(mon, "");
    CU_ASSERT(matches(got, "^\\+[0-9.]+ \\[0 [0-9.:]+\\] \"CLIENT\" \"LIST\"\r\n$"));
    free(got);
    /* RESET leaves MONITOR mode */
    expect(mon, "RESET\r\n", "+RESET\r\n");
    expect(a, "PING\r\n", "+PONG\r\n");
    got = ask(mon, "");
    CU_ASSERT_STRING_EQUAL(got, "");
    free(got);
    got = ask(a, "CLIENT LIST\r\n");
    CU_ASSERT(strstr(got, " flags=O ") == NULL);
    free(got);
    /* a monitor that goes away costs nothing */
    expect(mon, "MONITOR\r\n", "+OK\r\n");
    close(mon);
    usleep(100 * 1000);
    expect(a, "PING\r\n", "+PONG\r\n");
    close(a);
    close(b);
}

static void test_conn_exit_table_zero(void)
{
    char *log;

    CU_ASSERT_EQUAL(kv_test_server_stop(&srv), 0);
    log = kv_test_server_log(&srv);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    CU_ASSERT(strstr(log, "memory still held") == NULL);
    free(log);
    srv.pid = 0;
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_conn_hello_switches_to_resp3_and_back", test_conn_hello_switches_to_resp3_and_back},
        {"test_conn_hello_auth_before_authentication", test_conn_hello_auth_before_authentication},
        {"test_conn_client_list_info_and_names", test_conn_client_list_info_and_names},
        {"test_conn_client_kill_across_io_threads", test_conn_client_kill_across_io_threads},
        {"test_conn_client_reply_off_on_skip", test_conn_client_reply_off_on_skip},
        {"test_conn_reset_and_no_evict", test_conn_reset_and_no_evict},
        {"test_conn_no_evict_survives_the_client_memory_budget",
         test_conn_no_evict_survives_the_client_memory_budget},
        {"test_conn_command_count_list_info_docs", test_conn_command_count_list_info_docs},
        {"test_conn_monitor_sees_every_thread", test_conn_monitor_sees_every_thread},
        {"test_conn_exit_table_zero", test_conn_exit_table_zero},
    };

    return kv_test_run_suite("conn", suite_init, suite_clean, tests,
                             sizeof(tests) / sizeof(tests[0]));
}
