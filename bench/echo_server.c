/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* bench/echo_server.c -- the loopback ceiling of issue 8: a one-thread epoll
 * server that stores nothing and answers every complete request with the
 * answer a key-value server would send, of the same size, so that a
 * comparison measures what no key-value server over TCP can pass on this
 * machine with the same message sizes.
 *
 *   echo_server [-b ADDR] [-p PORT] [-s PATH] [-d BYTES]
 *
 * -s also listens on a unix-domain socket at PATH (removed first, and at
 * SIGTERM/SIGINT): the ceiling of the unix rows.
 * -d is the value size of its GET answers (default 100: what `kvclient
 * bench -d 100` stores). The first byte of a connection picks the protocol,
 * as libevkv does:
 *
 *   binary (0xCB)  frames are read by their header (the request crc is not
 *                  checked); the answer carries the request's opcode and id,
 *                  status OK, and the frame crc32 (computed with the client's
 *                  kv_bench_crc32 = the server's kv_crc32, 3-4x faster than zlib's on
 *                  small frames, so the ceiling stays a ceiling): PING echoes
 *                  its body; GET answers GetResponse{value: d bytes,
 *                  version: 1}; SET SetResponse{version: 1}; MGET one found
 *                  entry of d bytes per key of the request; others an empty
 *                  body.
 *   RESP ('*')     multibulk commands: GET -> $d bulk; MGET k1..kN -> an
 *                  array of N $d bulks; PING -> +PONG, or the bulk echo of
 *                  its argument; anything else (SET, MSET, AUTH...) -> +OK.
 *   memcache text  mg -> VA d + d bytes; get k.. -> VALUE blocks + END;
 *                  set/add/replace (data block skipped) -> STORED; ms -> HD;
 *                  mn -> MN; anything else -> ERROR.
 *
 * Per readable event: one read(2) of everything available (up to the free
 * buffer), every complete request in it answered into one output buffer,
 * one write(2). Level-triggered; EPOLLOUT only while output is pending;
 * reading pauses while more than 4 MiB of output is pending. Stop it with
 * SIGTERM or SIGINT. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "frame.h"
#include "kv_bench.h"
#include "kv_mem.h"

#define READ_MIN  16384       /* free input space before each read */
#define IN_MAX    (64u << 20) /* a larger request closes the connection */
#define OUT_PAUSE (4u << 20)  /* pending output that pauses reading */

enum proto { P_UNKNOWN, P_BINARY, P_RESP, P_TEXT };

struct econn {
    int fd; /* owned */
    enum proto proto;
    uint8_t *in; /* owned */
    size_t in_len, in_cap;
    uint8_t *out; /* owned */
    size_t out_len, out_off, out_cap;
    uint32_t events; /* armed epoll events */
};

static uint8_t *value; /* owned: d bytes of 'x' */
static size_t vlen = 100;

/* ---- output --------------------------------------------------------------- */

/* Room for n more bytes; returns the write position or NULL. */
static uint8_t *out_room(struct econn *c, size_t n)
{
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 65536;
        uint8_t *p;

        while (cap < c->out_len + n)
            cap *= 2;
        p = kv_mem_realloc(KV_MOD_BUF, c->out, cap);
        if (!p)
            return NULL;
        c->out = p;
        c->out_cap = cap;
    }
    return c->out + c->out_len;
}

static int out_put(struct econn *c, const void *s, size_t n)
{
    uint8_t *p = out_room(c, n);

    if (!p)
        return -1;
    memcpy(p, s, n);
    c->out_len += n;
    return 0;
}

#define OUT_LIT(c, s) out_put((c), (s), sizeof(s) - 1)

static int out_fmt_bulk(struct econn *c, const uint8_t *s, size_t n, const char *prefix)
{
    char hdr[48];
    int h = snprintf(hdr, sizeof(hdr), "%s%zu\r\n", prefix, n);

    return out_put(c, hdr, (size_t)h) || out_put(c, s, n) || OUT_LIT(c, "\r\n") ? -1 : 0;
}

/* ---- binary frames ------------------------------------------------------------- */

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;

    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;

    for (unsigned shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;

        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* keys (length-delimited field 1) in an MGetRequest body */
static size_t count_keys(const uint8_t *p, const uint8_t *end)
{
    size_t n = 0;
    uint64_t tag, len;

    while (p < end && get_varint(&p, end, &tag) == 0 && (tag & 7) == 2 &&
           get_varint(&p, end, &len) == 0 && (uint64_t)(end - p) >= len) {
        p += len;
        n += tag == 0x0A;
    }
    return n;
}

/* Returns the bytes consumed, 0 when incomplete, -1 to close. */
static ssize_t binary_one(struct econn *c, const uint8_t *b, size_t len)
{
    struct kv_frame f = {.version = KV_FRAME_VERSION, .flags = KV_FRAME_F_RESPONSE};
    size_t blen, vl = put_varint((uint8_t[10]){0}, vlen), n = 0, keys;
    uint8_t *p, *body;

    if (len < KV_FRAME_HDR)
        return 0;
    if (kv_get_le32(b) != KV_FRAME_MAGIC)
        return -1;
    blen = kv_get_le32(b + 16);
    if (blen > IN_MAX)
        return -1;
    if (len < KV_FRAME_OVERHEAD + blen)
        return 0;
    f.opcode = (uint16_t)(b[6] | b[7] << 8);
    f.request_id = (uint64_t)kv_get_le32(b + 8) | (uint64_t)kv_get_le32(b + 12) << 32;
    keys = f.opcode == 6 ? count_keys(b + KV_FRAME_HDR, b + KV_FRAME_HDR + blen) : 0;
    /* the largest answer: an MGET entry per key */
    p = out_room(c, KV_FRAME_OVERHEAD + blen + 32 + (keys + 1) * (vlen + 32));
    if (!p)
        return -1;
    body = p + KV_FRAME_HDR;
    switch (f.opcode) {
    case 0: /* PING: echo */
        memcpy(body, b + KV_FRAME_HDR, blen);
        n = blen;
        break;
    case 1: /* GetResponse{value, version} */
        body[n++] = 0x0A;
        n += put_varint(body + n, vlen);
        memcpy(body + n, value, vlen);
        n += vlen;
        body[n++] = 0x10;
        body[n++] = 1;
        break;
    case 2: /* SetResponse{version} */
        body[n++] = 0x08;
        body[n++] = 1;
        break;
    case 6: /* MGetResponse{entries: {found, value, version}} */
        for (size_t i = 0; i < keys; i++) {
            body[n++] = 0x0A;
            n += put_varint(body + n, 2 + 1 + vl + vlen + 2);
            body[n++] = 0x08;
            body[n++] = 1;
            body[n++] = 0x12;
            n += put_varint(body + n, vlen);
            memcpy(body + n, value, vlen);
            n += vlen;
            body[n++] = 0x18;
            body[n++] = 1;
        }
        break;
    default: break; /* OK, empty body */
    }
    f.body_len = (uint32_t)n;
    kv_frame_encode_header(&f, p);
    kv_put_le32(body + n, kv_bench_crc32(kv_bench_crc32(0, p, KV_FRAME_HDR), body, n));
    c->out_len += KV_FRAME_OVERHEAD + n;
    return (ssize_t)(KV_FRAME_OVERHEAD + blen);
}

/* ---- RESP ---------------------------------------------------------------------- */

/* A decimal after buf[off] (the type byte) up to "\r\n"; returns the offset
 * past the line, 0 when incomplete, -1 when malformed. */
static ssize_t resp_num(const uint8_t *b, size_t len, size_t off, long *v)
{
    const uint8_t *nl = memchr(b + off, '\n', len - off);
    long x = 0;
    size_t i;

    if (!nl)
        return len - off > 32 ? -1 : 0;
    if ((size_t)(nl - b) < off + 3 || nl[-1] != '\r' || (size_t)(nl - b) - off > 20)
        return -1;
    for (i = off + 1; b + i < nl - 1; i++) {
        if (b[i] < '0' || b[i] > '9')
            return -1;
        x = x * 10 + (b[i] - '0');
    }
    *v = x;
    return nl + 1 - b;
}

static int is_cmd(const uint8_t *p, size_t n, const char *name)
{
    return strlen(name) == n && strncasecmp((const char *)p, name, n) == 0;
}

static ssize_t resp_one(struct econn *c, const uint8_t *b, size_t len)
{
    const uint8_t *cmd = NULL, *arg1 = NULL;
    size_t cmdlen = 0, arg1len = 0;
    long argc, alen;
    ssize_t off;

    if (b[0] != '*')
        return -1; /* inline commands are not part of the ceiling */
    off = resp_num(b, len, 0, &argc);
    if (off <= 0)
        return off;
    if (argc < 1 || argc > 1000000)
        return -1;
    for (long i = 0; i < argc; i++) {
        if ((size_t)off >= len)
            return 0;
        if (b[off] != '$')
            return -1;
        off = resp_num(b, len, (size_t)off, &alen);
        if (off <= 0)
            return off;
        if (alen > (long)IN_MAX)
            return -1;
        if (len - (size_t)off < (size_t)alen + 2)
            return 0;
        if (i == 0) {
            cmd = b + off;
            cmdlen = (size_t)alen;
        } else if (i == 1) {
            arg1 = b + off;
            arg1len = (size_t)alen;
        }
        off += alen + 2;
    }
    if (is_cmd(cmd, cmdlen, "GET")) {
        if (out_fmt_bulk(c, value, vlen, "$"))
            return -1;
    } else if (is_cmd(cmd, cmdlen, "MGET")) {
        char hdr[32];
        int h = snprintf(hdr, sizeof(hdr), "*%ld\r\n", argc - 1);

        if (out_put(c, hdr, (size_t)h))
            return -1;
        for (long i = 1; i < argc; i++)
            if (out_fmt_bulk(c, value, vlen, "$"))
                return -1;
    } else if (is_cmd(cmd, cmdlen, "PING")) {
        if (argc == 1 ? OUT_LIT(c, "+PONG\r\n") : out_fmt_bulk(c, arg1, arg1len, "$"))
            return -1;
    } else if (OUT_LIT(c, "+OK\r\n")) {
        return -1;
    }
    return off;
}

/* ---- memcache text --------------------------------------------------------------- */

/* The n-th space-separated token of the line [b, e); returns its length. */
static size_t token(const uint8_t *b, const uint8_t *e, unsigned n, const uint8_t **tok)
{
    const uint8_t *p = b;

    for (;;) {
        const uint8_t *s;

        while (p < e && *p == ' ')
            p++;
        s = p;
        while (p < e && *p != ' ')
            p++;
        if (s == p)
            return 0;
        if (n-- == 0) {
            *tok = s;
            return (size_t)(p - s);
        }
    }
}

static long tok_num(const uint8_t *b, const uint8_t *e, unsigned n)
{
    const uint8_t *t;
    size_t l = token(b, e, n, &t);
    long x = 0;

    if (l == 0 || l > 18)
        return -1;
    for (size_t i = 0; i < l; i++) {
        if (t[i] < '0' || t[i] > '9')
            return -1;
        x = x * 10 + (t[i] - '0');
    }
    return x;
}

static ssize_t text_one(struct econn *c, const uint8_t *b, size_t len)
{
    const uint8_t *nl = memchr(b, '\n', len), *e, *cmd, *k;
    size_t line, cl, kl;
    long n;

    if (!nl)
        return len > 2048 ? -1 : 0;
    line = (size_t)(nl + 1 - b);
    e = nl > b && nl[-1] == '\r' ? nl - 1 : nl;
    cl = token(b, e, 0, &cmd);
    if (cl == 2 && memcmp(cmd, "mg", 2) == 0) {
        char hdr[32];
        int h = snprintf(hdr, sizeof(hdr), "VA %zu\r\n", vlen);

        if (out_put(c, hdr, (size_t)h) || out_put(c, value, vlen) || OUT_LIT(c, "\r\n"))
            return -1;
        return (ssize_t)line;
    }
    if ((cl == 3 && memcmp(cmd, "set", 3) == 0) || (cl == 3 && memcmp(cmd, "add", 3) == 0) ||
        (cl == 7 && memcmp(cmd, "replace", 7) == 0) || (cl == 2 && memcmp(cmd, "ms", 2) == 0)) {
        int meta = cl == 2;

        n = tok_num(b, e, meta ? 2 : 4);
        if (n < 0 || n > (long)IN_MAX)
            return -1;
        if (len - line < (size_t)n + 2)
            return 0;
        if (meta ? OUT_LIT(c, "HD\r\n") : OUT_LIT(c, "STORED\r\n"))
            return -1;
        return (ssize_t)(line + (size_t)n + 2);
    }
    if (cl == 2 && memcmp(cmd, "mn", 2) == 0)
        return OUT_LIT(c, "MN\r\n") ? -1 : (ssize_t)line;
    if ((cl == 3 && memcmp(cmd, "get", 3) == 0) || (cl == 4 && memcmp(cmd, "gets", 4) == 0)) {
        for (unsigned i = 1; (kl = token(b, e, i, &k)) > 0; i++) {
            char hdr[48];
            int h = snprintf(hdr, sizeof(hdr), " 0 %zu\r\n", vlen);

            if (OUT_LIT(c, "VALUE ") || out_put(c, k, kl) || out_put(c, hdr, (size_t)h) ||
                out_put(c, value, vlen) || OUT_LIT(c, "\r\n"))
                return -1;
        }
        return OUT_LIT(c, "END\r\n") ? -1 : (ssize_t)line;
    }
    return OUT_LIT(c, "ERROR\r\n") ? -1 : (ssize_t)line;
}

/* ---- connections --------------------------------------------------------------- */

static void conn_close(int ep, struct econn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    kv_mem_free(KV_MOD_BUF, c->in);
    kv_mem_free(KV_MOD_BUF, c->out);
    kv_mem_free(KV_MOD_CONNECTION, c);
}

static int conn_arm(int ep, struct econn *c)
{
    size_t pending = c->out_len - c->out_off;
    uint32_t ev = (pending ? EPOLLOUT : 0) | (pending < OUT_PAUSE ? EPOLLIN : 0);
    struct epoll_event e = {.events = ev, .data.ptr = c};

    if (ev == c->events)
        return 0;
    c->events = ev;
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

static int conn_write(struct econn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

/* One read, every complete request answered; returns -1 to close. */
static int conn_read(struct econn *c)
{
    size_t off = 0;
    ssize_t n;

    if (c->in_cap - c->in_len < READ_MIN) {
        size_t cap = c->in_cap ? c->in_cap * 2 : 65536;
        uint8_t *p;

        if (cap > IN_MAX)
            return -1;
        p = kv_mem_realloc(KV_MOD_BUF, c->in, cap);
        if (!p)
            return -1;
        c->in = p;
        c->in_cap = cap;
    }
    n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n == 0)
        return -1;
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    c->in_len += (size_t)n;
    if (c->proto == P_UNKNOWN)
        c->proto = c->in[0] == KV_FRAME_MAGIC0 ? P_BINARY : c->in[0] == '*' ? P_RESP : P_TEXT;
    while (off < c->in_len) {
        const uint8_t *b = c->in + off;
        size_t len = c->in_len - off;
        ssize_t used = c->proto == P_BINARY ? binary_one(c, b, len)
                       : c->proto == P_RESP ? resp_one(c, b, len)
                                            : text_one(c, b, len);

        if (used < 0)
            return -1;
        if (used == 0)
            break;
        off += (size_t)used;
    }
    if (off > 0) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    return 0;
}

static void usage(FILE *f)
{
    fputs("usage: echo_server [-b ADDR] [-p PORT] [-s UNIX_PATH] [-d BYTES]\n"
          "  a storage-free server answering binary, RESP and memcache requests with\n"
          "  answers of the real size (GET values of BYTES, default 100); see the source\n",
          f);
}

static const char *unix_path;

static void on_stop(int sig)
{
    if (unix_path)
        unlink(unix_path);
    _exit(0);
}

/* The listening sockets: TCP, and the unix one of -s (-1 = none). Their
 * epoll data points at their slot, a connection's at its struct econn. */
static int listeners[2] = {-1, -1};

static int unix_listen(const char *path)
{
    struct sockaddr_un su = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(path) >= sizeof(su.sun_path))
        return -1;
    memcpy(su.sun_path, path, strlen(path) + 1);
    unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&su, sizeof(su)) != 0 || listen(fd, 1024) != 0)
        return -1;
    return fd;
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(17400)};
    const char *bind_addr = "127.0.0.1";
    struct epoll_event evs[256], lev = {.events = EPOLLIN, .data.ptr = &listeners[0]};
    int one = 1, lfd, ep, opt;

    while ((opt = getopt(argc, argv, "b:p:s:d:h")) != -1) {
        switch (opt) {
        case 'b': bind_addr = optarg; break;
        case 's': unix_path = optarg; break;
        case 'p': sa.sin_port = htons((uint16_t)atoi(optarg)); break;
        case 'd': vlen = (size_t)strtoul(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (vlen > (16u << 20) || inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) {
        usage(stderr);
        return 2;
    }
    value = kv_mem_alloc(KV_MOD_BUF, vlen + 1);
    if (!value)
        return 1;
    memset(value, 'x', vlen);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 1024) != 0) {
        perror("echo_server: listen");
        return 1;
    }
    listeners[0] = lfd;
    if (unix_path && (listeners[1] = unix_listen(unix_path)) < 0) {
        perror("echo_server: listen on the unix socket");
        return 1;
    }
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) != 0) {
        perror("echo_server: epoll");
        return 1;
    }
    lev.data.ptr = &listeners[1];
    if (unix_path && epoll_ctl(ep, EPOLL_CTL_ADD, listeners[1], &lev) != 0) {
        perror("echo_server: epoll");
        return 1;
    }
    fprintf(stderr, "echo_server: listening on %s:%u, values of %zu bytes\n", bind_addr,
            ntohs(sa.sin_port), vlen);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);

        if (n < 0 && errno != EINTR) {
            perror("echo_server: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct econn *c = evs[i].data.ptr;
            int *lp = evs[i].data.ptr;

            if (lp == &listeners[0] || lp == &listeners[1]) {
                int fd = accept4(*lp, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                struct epoll_event e = {.events = EPOLLIN};

                if (fd < 0)
                    continue;
                c = kv_mem_calloc(KV_MOD_CONNECTION, sizeof(*c));
                if (!c) {
                    close(fd);
                    continue;
                }
                if (lp == &listeners[0])
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                c->fd = fd;
                c->events = EPOLLIN;
                e.data.ptr = c;
                if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) != 0)
                    conn_close(ep, c);
                continue;
            }
            if (((evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && conn_read(c) != 0) ||
                conn_write(c) != 0 || conn_arm(ep, c) != 0)
                conn_close(ep, c);
        }
    }
}
