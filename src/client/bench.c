/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/client/bench.c -- the load generator (see kv_bench.h): the request
 * encoders and answer parsers of the three protocols, the epoll engine, and
 * keyspace population. The encoders write into the caller's buffer and the
 * parsers read in place, so the per-request cost is a few hundred
 * instructions whichever protocol is measured. */
#include "kv_bench.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "kv_client.h"
#include "kv_err.h"
#include "kv_mem.h"

/* ---- crc32 ------------------------------------------------------------------ */

/* zlib's crc32, as the server computes it (kv_crc32: PCLMUL folding with
 * slicing-by-8 tails). zlib 1.2.13's crc32_z goes byte by byte below 47
 * bytes and was a third of the client's CPU time with binary frames; the
 * earlier slicing-by-8 of this file still cost ~1 cycle a byte, which on
 * the 1.2 KB answers of MGET of 10 made the client the ceiling. */
uint32_t kv_bench_crc32(uint32_t crc, const uint8_t *p, size_t n)
{
    return kv_crc32(crc, p, n);
}

static uint32_t frame_crc(const uint8_t *hdr, const uint8_t *body, size_t len)
{
    return kv_bench_crc32(kv_bench_crc32(0, hdr, KV_FRAME_HDR), body, len);
}

/* ---- encoding ------------------------------------------------------------ */

static void put_key(uint8_t *p, uint64_t n)
{
    memcpy(p, "key:", 4);
    for (int i = KV_BENCH_KEYLEN - 1; i >= 4; i--) {
        p[i] = (uint8_t)('0' + n % 10);
        n /= 10;
    }
}

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

/* decimal, no terminator; returns the length */
static size_t put_dec(uint8_t *p, uint64_t v)
{
    uint8_t tmp[20];
    size_t n = 0, i;

    do {
        tmp[n++] = (uint8_t)('0' + v % 10);
        v /= 10;
    } while (v);
    for (i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

static size_t put_str(uint8_t *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return n;
}

#define PUT_LIT(p, s) put_str((p), (s), sizeof(s) - 1)

/* protobuf field 1 (bytes) = key n */
static size_t pb_key(uint8_t *p, uint64_t n)
{
    p[0] = 0x0A;
    p[1] = KV_BENCH_KEYLEN;
    put_key(p + 2, n);
    return 2 + KV_BENCH_KEYLEN;
}

/* field 1 = key, field 2 = value (SetRequest, KeyValue) */
static size_t pb_key_value(uint8_t *p, uint64_t n, const uint8_t *v, size_t vlen)
{
    size_t len = pb_key(p, n);

    p[len++] = 0x12;
    len += put_varint(p + len, vlen);
    memcpy(p + len, v, vlen);
    return len + vlen;
}

/* $<len>\r\n<bytes>\r\n */
static size_t resp_bulk(uint8_t *p, const uint8_t *s, size_t n)
{
    size_t len = 0;

    p[len++] = '$';
    len += put_dec(p + len, n);
    len += PUT_LIT(p + len, "\r\n");
    memcpy(p + len, s, n);
    len += n;
    len += PUT_LIT(p + len, "\r\n");
    return len;
}

static size_t resp_key(uint8_t *p, uint64_t n)
{
    size_t len = PUT_LIT(p, "$16\r\n");

    put_key(p + len, n);
    len += KV_BENCH_KEYLEN;
    return len + PUT_LIT(p + len, "\r\n");
}

static size_t resp_array(uint8_t *p, uint64_t n)
{
    size_t len = PUT_LIT(p, "*");

    len += put_dec(p + len, n);
    return len + PUT_LIT(p + len, "\r\n");
}

/* set key 0 0 <n>\r\n<value>\r\n */
static size_t mc_set(uint8_t *p, uint64_t key, const uint8_t *v, size_t vlen)
{
    size_t len = PUT_LIT(p, "set ");

    put_key(p + len, key);
    len += KV_BENCH_KEYLEN;
    len += PUT_LIT(p + len, " 0 0 ");
    len += put_dec(p + len, vlen);
    len += PUT_LIT(p + len, "\r\n");
    memcpy(p + len, v, vlen);
    len += vlen;
    return len + PUT_LIT(p + len, "\r\n");
}

/* mg key v\r\n */
static size_t mc_mg(uint8_t *p, uint64_t key)
{
    size_t len = PUT_LIT(p, "mg ");

    put_key(p + len, key);
    len += KV_BENCH_KEYLEN;
    return len + PUT_LIT(p + len, " v\r\n");
}

size_t kv_bench_request_max(const struct kv_bench_opts *o)
{
    /* the widest of the three encodings, rounded up generously */
    return 128 + o->value_len + (size_t)o->mget_keys * (KV_BENCH_KEYLEN + 32);
}

size_t kv_bench_reply_max(const struct kv_bench_opts *o)
{
    size_t keys = o->mget_keys ? o->mget_keys : 1;

    return 256 + keys * (o->value_len + 64);
}

static size_t encode_binary(const struct kv_bench_opts *o, const struct kv_bench_req *q,
                            uint64_t id, uint8_t *buf)
{
    uint8_t *body = buf + KV_FRAME_HDR;
    struct kv_frame f = {.version = KV_FRAME_VERSION, .request_id = id};
    size_t len = 0;

    switch (q->op) {
    case KV_BENCH_PING:
        f.opcode = KV_OP_PING;
        memcpy(body, o->value, o->value_len);
        len = o->value_len;
        break;
    case KV_BENCH_GET:
        f.opcode = KV_OP_GET;
        len = pb_key(body, q->keys[0]);
        break;
    case KV_BENCH_SET:
        f.opcode = KV_OP_SET;
        len = pb_key_value(body, q->keys[0], o->value, o->value_len);
        break;
    case KV_BENCH_MGET:
        f.opcode = KV_OP_MGET;
        for (unsigned i = 0; i < q->nkeys; i++)
            len += pb_key(body + len, q->keys[i]);
        break;
    }
    f.body_len = (uint32_t)len;
    kv_frame_encode_header(&f, buf);
    kv_put_le32(body + len, frame_crc(buf, body, len));
    return KV_FRAME_OVERHEAD + len;
}

static size_t encode_resp(const struct kv_bench_opts *o, const struct kv_bench_req *q, uint8_t *p)
{
    size_t len = 0;

    switch (q->op) {
    case KV_BENCH_PING:
        if (o->value_len == 0)
            return PUT_LIT(p, "*1\r\n$4\r\nPING\r\n");
        len = PUT_LIT(p, "*2\r\n$4\r\nPING\r\n");
        return len + resp_bulk(p + len, o->value, o->value_len);
    case KV_BENCH_GET:
        len = PUT_LIT(p, "*2\r\n$3\r\nGET\r\n");
        return len + resp_key(p + len, q->keys[0]);
    case KV_BENCH_SET:
        len = PUT_LIT(p, "*3\r\n$3\r\nSET\r\n");
        len += resp_key(p + len, q->keys[0]);
        return len + resp_bulk(p + len, o->value, o->value_len);
    case KV_BENCH_MGET:
        len = resp_array(p, 1 + (uint64_t)q->nkeys);
        len += PUT_LIT(p + len, "$4\r\nMGET\r\n");
        for (unsigned i = 0; i < q->nkeys; i++)
            len += resp_key(p + len, q->keys[i]);
        return len;
    }
    return 0;
}

static size_t encode_memcache(const struct kv_bench_opts *o, const struct kv_bench_req *q,
                              uint8_t *p, unsigned *units)
{
    size_t len = 0;

    *units = 1;
    switch (q->op) {
    case KV_BENCH_PING: return PUT_LIT(p, "mn\r\n");
    case KV_BENCH_GET: return mc_mg(p, q->keys[0]);
    case KV_BENCH_SET: return mc_set(p, q->keys[0], o->value, o->value_len);
    case KV_BENCH_MGET:
        for (unsigned i = 0; i < q->nkeys; i++)
            len += mc_mg(p + len, q->keys[i]);
        *units = q->nkeys;
        return len;
    }
    return 0;
}

size_t kv_bench_encode(const struct kv_bench_opts *o, const struct kv_bench_req *q, uint64_t id,
                       uint8_t *buf, unsigned *units)
{
    *units = 1;
    switch (o->proto) {
    case KV_BENCH_BINARY: return encode_binary(o, q, id, buf);
    case KV_BENCH_RESP: return encode_resp(o, q, buf);
    case KV_BENCH_MEMCACHE: return encode_memcache(o, q, buf, units);
    }
    return 0;
}

/* ---- parsing answers --------------------------------------------------------- */

/* Walks a protobuf message; returns 0 or KV_EPROTO. For each length-delimited
 * field 1 (MGetResponse.entries) counts the entries without found = 1. */
static int pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
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
    return KV_EPROTO;
}

static int pb_skip(const uint8_t **p, const uint8_t *end, unsigned wire)
{
    uint64_t v;

    switch (wire) {
    case 0: return pb_varint(p, end, &v);
    case 1: v = 8; break;
    case 2:
        if (pb_varint(p, end, &v) != 0)
            return KV_EPROTO;
        break;
    case 5: v = 4; break;
    default: return KV_EPROTO;
    }
    if ((uint64_t)(end - *p) < v)
        return KV_EPROTO;
    *p += v;
    return 0;
}

static int mget_misses(const uint8_t *p, const uint8_t *end, unsigned *misses)
{
    while (p < end) {
        uint64_t tag, len, v;

        if (pb_varint(&p, end, &tag) != 0)
            return KV_EPROTO;
        if (tag != 0x0A) {
            if (pb_skip(&p, end, (unsigned)(tag & 7)) != 0)
                return KV_EPROTO;
            continue;
        }
        if (pb_varint(&p, end, &len) != 0 || (uint64_t)(end - p) < len)
            return KV_EPROTO;
        const uint8_t *e = p + len;
        int found = 0;

        while (p < e) {
            if (pb_varint(&p, e, &tag) != 0)
                return KV_EPROTO;
            if (tag == 0x08) {
                if (pb_varint(&p, e, &v) != 0)
                    return KV_EPROTO;
                found = v != 0;
            } else if (pb_skip(&p, e, (unsigned)(tag & 7)) != 0) {
                return KV_EPROTO;
            }
        }
        *misses += !found;
    }
    return 0;
}

/* A response frame (PROTOCOL.md), checked like kv_frame_decode checks it,
 * with the crc above. */
static ssize_t parse_binary(const uint8_t *buf, size_t len, struct kv_bench_reply *r)
{
    uint32_t body_len;
    uint16_t opcode, status;

    if (len < KV_FRAME_HDR)
        return KV_EAGAIN;
    body_len = kv_get_le32(buf + 16);
    opcode = (uint16_t)(buf[6] | buf[7] << 8);
    status = (uint16_t)(buf[20] | buf[21] << 8);
    if (kv_get_le32(buf) != KV_FRAME_MAGIC || buf[4] != KV_FRAME_VERSION ||
        buf[5] != KV_FRAME_F_RESPONSE || buf[22] || buf[23] || body_len > (1u << 30))
        return KV_EPROTO;
    if (len - KV_FRAME_HDR < (size_t)body_len + KV_FRAME_CRC)
        return KV_EAGAIN;
    if (frame_crc(buf, buf + KV_FRAME_HDR, body_len) != kv_get_le32(buf + KV_FRAME_HDR + body_len))
        return KV_ECRC;
    r->cls = KV_BENCH_OK;
    r->misses = 0;
    if (status == KV_ST_NOT_FOUND) {
        r->cls = KV_BENCH_MISS;
        r->misses = 1;
    } else if (status != KV_ST_OK) {
        r->cls = KV_BENCH_ERR;
    } else if (opcode == KV_OP_MGET &&
               mget_misses(buf + KV_FRAME_HDR, buf + KV_FRAME_HDR + body_len, &r->misses) != 0) {
        return KV_EPROTO;
    }
    return (ssize_t)(KV_FRAME_OVERHEAD + body_len);
}

/* Finds the end of the line at buf[off..len): returns the offset just past
 * its "\r\n", 0 when it is not complete yet, or -1 for a bare "\n". */
static ssize_t line_end(const uint8_t *buf, size_t len, size_t off)
{
    const uint8_t *nl = memchr(buf + off, '\n', len - off);

    if (!nl)
        return 0;
    if (nl == buf + off || nl[-1] != '\r')
        return -1;
    return nl + 1 - buf;
}

/* A signed decimal between buf[off] and the "\r\n" ending at end. */
static int parse_num(const uint8_t *buf, size_t off, size_t end, int64_t *v)
{
    int neg = 0;
    int64_t x = 0;

    if (off < end - 2 && buf[off] == '-') {
        neg = 1;
        off++;
    }
    if (off >= end - 2 || end - 2 - off > 18)
        return KV_EPROTO;
    for (; off < end - 2; off++) {
        if (buf[off] < '0' || buf[off] > '9')
            return KV_EPROTO;
        x = x * 10 + (buf[off] - '0');
    }
    *v = neg ? -x : x;
    return 0;
}

/* One RESP value at buf[*off]: simple types, bulks, and arrays of them. */
static int resp_value(const uint8_t *buf, size_t len, size_t *off, struct kv_bench_reply *r,
                      int depth)
{
    ssize_t e;
    int64_t n;

    if (*off >= len)
        return KV_EAGAIN;
    e = line_end(buf, len, *off);
    if (e == 0)
        return KV_EAGAIN;
    if (e < 0)
        return KV_EPROTO;
    switch (buf[*off]) {
    case '+':
    case ':': *off = (size_t)e; return 0;
    case '-':
        r->cls = KV_BENCH_ERR;
        *off = (size_t)e;
        return 0;
    case '$':
        if (parse_num(buf, *off + 1, (size_t)e, &n) != 0 || n < -1)
            return KV_EPROTO;
        if (n == -1) {
            r->misses++;
            if (depth == 0)
                r->cls = KV_BENCH_MISS;
            *off = (size_t)e;
            return 0;
        }
        if (len - (size_t)e < (size_t)n + 2)
            return KV_EAGAIN;
        if (buf[e + n] != '\r' || buf[e + n + 1] != '\n')
            return KV_EPROTO;
        *off = (size_t)e + (size_t)n + 2;
        return 0;
    case '*':
        if (depth > 0 || parse_num(buf, *off + 1, (size_t)e, &n) != 0 || n < -1)
            return KV_EPROTO;
        *off = (size_t)e;
        if (n == -1) {
            r->cls = KV_BENCH_MISS;
            r->misses++;
            return 0;
        }
        for (int64_t i = 0; i < n; i++) {
            int rc = resp_value(buf, len, off, r, depth + 1);

            if (rc != 0)
                return rc;
        }
        return 0;
    }
    return KV_EPROTO;
}

static ssize_t parse_resp(const uint8_t *buf, size_t len, struct kv_bench_reply *r)
{
    size_t off = 0;
    int rc;

    r->cls = KV_BENCH_OK;
    r->misses = 0;
    rc = resp_value(buf, len, &off, r, 0);
    return rc == 0 ? (ssize_t)off : rc;
}

static int starts(const uint8_t *buf, size_t end, const char *word)
{
    size_t n = strlen(word);

    /* the word, then a space or the line's "\r\n" */
    return end >= n + 2 && memcmp(buf, word, n) == 0 && (buf[n] == ' ' || buf[n] == '\r');
}

static ssize_t parse_memcache(const uint8_t *buf, size_t len, struct kv_bench_reply *r)
{
    ssize_t e = line_end(buf, len, 0);
    int64_t n;
    size_t s;

    if (e == 0)
        return KV_EAGAIN;
    if (e < 0)
        return KV_EPROTO;
    r->cls = KV_BENCH_OK;
    r->misses = 0;
    if (starts(buf, (size_t)e, "VA")) {
        /* VA <size> <flags>*\r\n<data>\r\n */
        for (s = 3; s < (size_t)e - 2 && buf[s] != ' '; s++)
            ;
        if (parse_num(buf, 3, s + 2, &n) != 0 || n < 0)
            return KV_EPROTO;
        if (len - (size_t)e < (size_t)n + 2)
            return KV_EAGAIN;
        if (buf[e + n] != '\r' || buf[e + n + 1] != '\n')
            return KV_EPROTO;
        return e + n + 2;
    }
    if (starts(buf, (size_t)e, "EN")) {
        r->cls = KV_BENCH_MISS;
        r->misses = 1;
        return e;
    }
    if (starts(buf, (size_t)e, "HD") || starts(buf, (size_t)e, "MN") ||
        starts(buf, (size_t)e, "STORED"))
        return e;
    if (starts(buf, (size_t)e, "ERROR") || starts(buf, (size_t)e, "CLIENT_ERROR") ||
        starts(buf, (size_t)e, "SERVER_ERROR") || starts(buf, (size_t)e, "NOT_STORED") ||
        starts(buf, (size_t)e, "EXISTS") || starts(buf, (size_t)e, "NOT_FOUND") ||
        starts(buf, (size_t)e, "NS") || starts(buf, (size_t)e, "EX") ||
        starts(buf, (size_t)e, "NF")) {
        r->cls = KV_BENCH_ERR;
        return e;
    }
    return KV_EPROTO;
}

ssize_t kv_bench_parse_reply(enum kv_bench_proto p, const uint8_t *buf, size_t len,
                             struct kv_bench_reply *r)
{
    switch (p) {
    case KV_BENCH_BINARY: return parse_binary(buf, len, r);
    case KV_BENCH_RESP: return parse_resp(buf, len, r);
    case KV_BENCH_MEMCACHE: return parse_memcache(buf, len, r);
    }
    return KV_EPROTO;
}

/* ---- connections --------------------------------------------------------------- */

static int send_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return KV_EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads (blocking) until `units` answers have been parsed; counts the ones
 * that are errors into *errors. */
static int recv_units(int fd, enum kv_bench_proto proto, uint8_t *in, size_t cap, uint64_t units,
                      uint64_t *errors)
{
    size_t got = 0, off = 0;

    while (units > 0) {
        struct kv_bench_reply r;
        ssize_t n = kv_bench_parse_reply(proto, in + off, got - off, &r);

        if (n > 0) {
            off += (size_t)n;
            units--;
            *errors += r.cls == KV_BENCH_ERR;
            continue;
        }
        if (n != KV_EAGAIN)
            return (int)n;
        memmove(in, in + off, got - off);
        got -= off;
        off = 0;
        if (got == cap)
            return KV_ETOOBIG;
        n = recv(fd, in + got, cap - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n == 0 ? KV_ECLOSED : KV_EIO;
        got += (size_t)n;
    }
    return 0;
}

/* AUTH on the still-blocking socket, before the run starts. */
static int sock_auth(int fd, const struct kv_bench_opts *o)
{
    size_t plen = strlen(o->password), len = 0;
    uint8_t out[KV_FRAME_OVERHEAD + 16 + 1024], in[4096];
    uint64_t errors = 0;
    int rc;

    if (plen > 1024)
        return KV_EINVAL;
    if (o->proto == KV_BENCH_BINARY) {
        struct kv_frame f = {.version = KV_FRAME_VERSION, .opcode = KV_OP_AUTH, .request_id = 1};
        uint8_t *body = out + KV_FRAME_HDR;
        size_t n = 0;

        /* AuthRequest{password}: tag 0x0A, varint length, bytes */
        body[n++] = 0x0A;
        n += put_varint(body + n, plen);
        memcpy(body + n, o->password, plen);
        n += plen;
        f.body_len = (uint32_t)n;
        kv_frame_encode_header(&f, out);
        kv_put_le32(body + n, frame_crc(out, body, n));
        len = KV_FRAME_OVERHEAD + n;
    } else if (o->proto == KV_BENCH_RESP) {
        len = PUT_LIT(out, "*2\r\n$4\r\nAUTH\r\n");
        len += resp_bulk(out + len, (const uint8_t *)o->password, plen);
    } else {
        return KV_EINVAL; /* memcached's text protocol has no AUTH */
    }
    rc = send_all(fd, out, len);
    if (rc == 0)
        rc = recv_units(fd, o->proto, in, sizeof(in), 1, &errors);
    return rc != 0 ? rc : errors ? KV_ESTATUS : 0;
}

/* A blocking, connected unix-domain socket (o->host is its path). */
static int sock_open_unix(const struct kv_bench_opts *o, int *out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd;

    if (strlen(o->host) >= sizeof(sa.sun_path))
        return KV_EINVAL;
    memcpy(sa.sun_path, o->host, strlen(o->host) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return KV_EIO;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return KV_EIO;
    }
    *out = fd;
    return 0;
}

/* A blocking, connected TCP_NODELAY socket (or unix-domain, when o->host is
 * a path), authenticated when asked. */
static int sock_open(const struct kv_bench_opts *o, int *out)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char port[8];
    int one = 1, fd, rc;

    if (kv_client_host_is_path(o->host)) {
        rc = sock_open_unix(o, &fd);
        if (rc == 0 && o->password && (rc = sock_auth(fd, o)) != 0)
            close(fd);
        if (rc == 0)
            *out = fd;
        return rc;
    }
    snprintf(port, sizeof(port), "%u", o->port);
    if (getaddrinfo(o->host, port, &hints, &ai) != 0 || !ai)
        return KV_EINVAL;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        return KV_EIO;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        freeaddrinfo(ai);
        close(fd);
        return KV_EIO;
    }
    freeaddrinfo(ai);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (o->password && (rc = sock_auth(fd, o)) != 0) {
        close(fd);
        return rc;
    }
    *out = fd;
    return 0;
}

/* ---- the engine ---------------------------------------------------------------- */

/* Log-linear histogram of nanoseconds: 32 sub-buckets per power of two. */
#define HIST_SUB     32
#define HIST_BUCKETS (64 * HIST_SUB)

struct hist {
    uint64_t n[HIST_BUCKETS];
    uint64_t max;
};

static unsigned hist_index(uint64_t v)
{
    unsigned msb, sub;

    if (v < HIST_SUB)
        return (unsigned)v;
    msb = 63u - (unsigned)__builtin_clzll(v);
    sub = (unsigned)(v >> (msb - 5)) & (HIST_SUB - 1);
    return (msb - 4) * HIST_SUB + sub;
}

static uint64_t hist_value(unsigned idx)
{
    unsigned msb, sub;

    if (idx < HIST_SUB)
        return idx;
    msb = idx / HIST_SUB + 4;
    sub = idx % HIST_SUB;
    /* middle of the bucket */
    return ((uint64_t)(HIST_SUB + sub) << (msb - 5)) + ((uint64_t)1 << (msb - 5)) / 2;
}

static double hist_pct(const struct hist *h, uint64_t total, double pct)
{
    uint64_t want = (uint64_t)ceil(total * pct / 100.0), seen = 0;

    if (total == 0)
        return 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->n[i];
        if (seen >= want)
            return (double)hist_value(i);
    }
    return (double)h->max;
}

struct bconn {
    int fd;       /* owned */
    uint8_t *out; /* owned: one pipeline of requests */
    size_t out_len, out_off;
    uint8_t *in; /* owned: answers, parsed in place */
    size_t in_len, in_cap;
    uint8_t *units;   /* owned: answers owed per request of the pipeline */
    unsigned head;    /* the oldest request still waiting */
    unsigned part;    /* answers of request `head` received so far */
    int part_err;     /* one of them was an error */
    unsigned waiting; /* requests outstanding in this pipeline */
    int pollout;      /* EPOLLOUT is armed */
    uint64_t sent_at; /* ns, send time of the pipeline */
};

struct bthread {
    const struct kv_bench_opts *o; /* borrowed */
    pthread_barrier_t *start;      /* borrowed: every connection open */
    pthread_t tid;
    unsigned nconns, index, nthreads;
    uint64_t quota; /* requests this thread sends */
    uint64_t deadline;
    uint64_t sent, done, errors, not_found, seq;
    struct hist h;
    int failed;
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int bconn_open(const struct kv_bench_opts *o, struct bconn *c)
{
    size_t req = kv_bench_request_max(o);
    int rc = sock_open(o, &c->fd);

    if (rc != 0)
        return rc;
    c->in_cap = o->pipeline * kv_bench_reply_max(o) + 65536;
    c->out = kv_mem_alloc(KV_MOD_CLIENT, o->pipeline * req);
    c->in = kv_mem_alloc(KV_MOD_CLIENT, c->in_cap);
    c->units = kv_mem_alloc(KV_MOD_CLIENT, o->pipeline);
    return c->out && c->in && c->units ? 0 : KV_ENOMEM;
}

/* Encodes the next pipeline of this connection; returns how many. */
static unsigned fill(struct bthread *t, struct bconn *c)
{
    const struct kv_bench_opts *o = t->o;
    uint64_t now = now_ns();
    unsigned k = 0;

    c->out_len = c->out_off = 0;
    c->head = c->part = 0;
    c->part_err = 0;
    if (t->deadline && now >= t->deadline)
        t->quota = t->sent; /* time is up: no more pipelines anywhere */
    while (k < o->pipeline && t->sent < t->quota) {
        struct kv_bench_req q;
        unsigned units;

        o->pick(o->ctx, t->seq++ * t->nthreads + t->index, &q);
        c->out_len += kv_bench_encode(o, &q, t->sent, c->out + c->out_len, &units);
        c->units[k++] = (uint8_t)units;
        t->sent++;
    }
    c->waiting = k;
    c->sent_at = now;
    return k;
}

static int bconn_write(struct bconn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n =
            send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return KV_EIO;
        }
        c->out_off += (size_t)n;
    }
    return 0;
}

/* Reads and accounts answers. Returns 1 when the pipeline is complete. */
static int bconn_read(struct bthread *t, struct bconn *c)
{
    enum kv_bench_proto proto = t->o->proto;
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
    size_t off = 0;
    uint64_t now, lat;

    if (n == 0)
        return KV_ECLOSED;
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : KV_EIO;
    c->in_len += (size_t)n;
    now = now_ns();
    lat = now - c->sent_at;
    while (c->waiting > 0) {
        struct kv_bench_reply r;
        ssize_t used = kv_bench_parse_reply(proto, c->in + off, c->in_len - off, &r);

        if (used == KV_EAGAIN)
            break;
        if (used < 0)
            return (int)used;
        off += (size_t)used;
        t->not_found += r.misses;
        c->part_err |= r.cls == KV_BENCH_ERR;
        if (++c->part < c->units[c->head])
            continue;
        t->errors += c->part_err != 0;
        t->done++;
        t->h.n[hist_index(lat)]++;
        c->head++;
        c->part = 0;
        c->part_err = 0;
        c->waiting--;
    }
    if (off < c->in_len && c->waiting == 0)
        return KV_EPROTO; /* an answer nobody asked for */
    if (off > 0) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    } else if (c->in_len == c->in_cap) {
        return KV_ETOOBIG; /* one answer larger than the buffer */
    }
    if (lat > t->h.max && off > 0)
        t->h.max = lat;
    return c->waiting == 0;
}

static int bconn_arm(int ep, struct bconn *c)
{
    int want = c->out_off < c->out_len;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};

    if (want == c->pollout)
        return 0;
    c->pollout = want;
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) == 0 ? 0 : KV_EIO;
}

/* Answers of one pipeline of an attached connection, then the next pipeline. */
static int shm_round(struct bthread *t, struct bconn *c, struct kv_client *kc, unsigned *live)
{
    while (c->waiting > 0) {
        struct kv_response r;
        struct kv_bench_reply rep;
        int rc = kv_client_recv(kc, &r);
        uint64_t lat;

        if (rc != 0)
            return rc;
        lat = now_ns() - c->sent_at;
        /* the frame lies whole before its body (in the ring, or copied out) */
        if (kv_bench_parse_reply(KV_BENCH_BINARY, r.body - KV_FRAME_HDR,
                                 KV_FRAME_OVERHEAD + (size_t)r.body_len, &rep) < 0)
            return KV_EPROTO;
        t->not_found += rep.misses;
        t->errors += rep.cls == KV_BENCH_ERR;
        t->done++;
        t->h.n[hist_index(lat)]++;
        if (lat > t->h.max)
            t->h.max = lat;
        c->waiting--;
    }
    if (fill(t, c) == 0) {
        (*live)--;
        return 0;
    }
    return kv_client_send_raw(kc, c->out, c->out_len);
}

static void *bthread_shm(struct bthread *t)
{
    const struct kv_bench_opts *o = t->o;
    struct bconn *conns = kv_mem_calloc(KV_MOD_CLIENT, t->nconns * sizeof(*conns));
    struct kv_client **kc = kv_mem_calloc(KV_MOD_CLIENT, t->nconns * sizeof(*kc));
    size_t req = kv_bench_request_max(o);
    unsigned live = 0, next = 0;
    const char *spin = getenv("KV_CLIENT_SPIN_US");
    uint64_t spin_ns = (spin ? (uint64_t)atoi(spin) : 50) * 1000u, idle_since = 0, now;
    const char *yield = getenv("KV_CLIENT_SPIN_YIELD_US");
    uint64_t yield_ns = (yield ? (uint64_t)atoi(yield) : 10) * 1000u;

    if (!conns || !kc)
        t->failed = 1;
    for (unsigned i = 0; !t->failed && i < t->nconns; i++) {
        conns[i].fd = -1;
        conns[i].out = kv_mem_alloc(KV_MOD_CLIENT, o->pipeline * req);
        conns[i].units = kv_mem_alloc(KV_MOD_CLIENT, o->pipeline);
        if (!conns[i].out || !conns[i].units ||
            kv_client_connect_unix(o->host, 10000, &kc[i]) != 0 ||
            (o->password && kv_client_auth(kc[i], o->password, strlen(o->password)) != 0) ||
            kv_client_attach(kc[i], 0, 0) != 0)
            t->failed = 1;
    }
    pthread_barrier_wait(t->start);
    if (t->failed)
        goto out;
    if (o->seconds > 0)
        t->deadline = now_ns() + (uint64_t)(o->seconds * 1e9);
    for (unsigned i = 0; i < t->nconns; i++) {
        if (fill(t, &conns[i]) == 0)
            continue;
        live++;
        if (kv_client_send_raw(kc[i], conns[i].out, conns[i].out_len) != 0) {
            t->failed = 1;
            goto out;
        }
    }
    /* serve whichever rings have answers; only when none had any for the spin window,
     * wait (spin, then sleep) on the oldest connection still waiting */
    while (live > 0) {
        int any = 0;

        for (unsigned i = 0; i < t->nconns; i++) {
            int rdy;

            if (conns[i].waiting == 0)
                continue;
            rdy = kv_client_ready(kc[i]);
            if (rdy != 0 && shm_round(t, &conns[i], kc[i], &live) != 0) {
                t->failed = 1;
                goto out;
            }
            if (rdy != 0) {
                any = 1;
                next = i + 1 < t->nconns ? i + 1 : 0;
            }
        }
        if (any) {
            idle_since = 0;
            continue;
        }
        now = now_ns();
        if (!idle_since)
            idle_since = now;
        if (now - idle_since < spin_ns) {
            if (yield_ns && now - idle_since > yield_ns)
                sched_yield(); /* the server may be waiting for this very core */
            else
                __builtin_ia32_pause();
            continue;
        }
        idle_since = 0;
        for (unsigned k = 0; k < t->nconns; k++, next = next + 1 < t->nconns ? next + 1 : 0)
            if (conns[next].waiting > 0) {
                if (shm_round(t, &conns[next], kc[next], &live) != 0) {
                    t->failed = 1;
                    goto out;
                }
                break;
            }
    }
out:
    for (unsigned i = 0; conns && i < t->nconns; i++) {
        if (kc && kc[i])
            kv_client_close(kc[i]);
        kv_mem_free(KV_MOD_CLIENT, conns[i].out);
        kv_mem_free(KV_MOD_CLIENT, conns[i].units);
    }
    kv_mem_free(KV_MOD_CLIENT, conns);
    kv_mem_free(KV_MOD_CLIENT, kc);
    return NULL;
}

static void *bthread_main(void *arg)
{
    struct bthread *t = arg;
    const struct kv_bench_opts *o = t->o;
    struct bconn *conns = kv_mem_calloc(KV_MOD_CLIENT, t->nconns * sizeof(*conns));
    struct epoll_event evs[256];
    int ep;
    unsigned live = 0;

    if (o->shm) {
        kv_mem_free(KV_MOD_CLIENT, conns);
        return bthread_shm(t);
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    for (unsigned i = 0; conns && i < t->nconns; i++)
        conns[i].fd = -1;
    if (!conns || ep < 0)
        t->failed = 1;
    for (unsigned i = 0; !t->failed && i < t->nconns; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};

        if (bconn_open(o, &conns[i]) != 0 || epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) != 0)
            t->failed = 1;
    }
    pthread_barrier_wait(t->start);
    if (t->failed)
        goto out;
    if (o->seconds > 0)
        t->deadline = now_ns() + (uint64_t)(o->seconds * 1e9);
    for (unsigned i = 0; i < t->nconns; i++) {
        if (fill(t, &conns[i]) == 0)
            continue;
        live++;
        if (bconn_write(&conns[i]) != 0 || bconn_arm(ep, &conns[i]) != 0) {
            t->failed = 1;
            goto out;
        }
    }
    while (live > 0) {
        int n = epoll_wait(ep, evs, 256, 10000);

        if (n == 0 || (n < 0 && errno != EINTR)) {
            t->failed = 1; /* 10 s without an answer */
            break;
        }
        for (int i = 0; i < n; i++) {
            struct bconn *c = evs[i].data.ptr;
            int rc;

            if (c->out_off < c->out_len && bconn_write(c) != 0) {
                t->failed = 1;
                goto out;
            }
            rc = (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ? bconn_read(t, c) : 0;
            if (rc < 0) {
                t->failed = 1;
                goto out;
            }
            if (rc == 1) {
                if (fill(t, c) == 0)
                    live--;
                else if (bconn_write(c) != 0) {
                    t->failed = 1;
                    goto out;
                }
            }
            if (bconn_arm(ep, c) != 0) {
                t->failed = 1;
                goto out;
            }
        }
    }
out:
    for (unsigned i = 0; conns && i < t->nconns; i++) {
        if (conns[i].fd >= 0)
            close(conns[i].fd);
        kv_mem_free(KV_MOD_CLIENT, conns[i].out);
        kv_mem_free(KV_MOD_CLIENT, conns[i].in);
        kv_mem_free(KV_MOD_CLIENT, conns[i].units);
    }
    kv_mem_free(KV_MOD_CLIENT, conns);
    if (ep >= 0)
        close(ep);
    return NULL;
}

static int opts_valid(const struct kv_bench_opts *o)
{
    unsigned nt = o->threads ? o->threads : 1;

    return o->conns > 0 && o->pipeline > 0 && nt <= o->conns && o->pick &&
           (!o->shm || (o->proto == KV_BENCH_BINARY && kv_client_host_is_path(o->host))) &&
           o->mget_keys <= KV_BENCH_MAX_KEYS && (o->value || o->value_len == 0) &&
           (o->requests > 0 || o->seconds > 0);
}

int kv_bench_run(const struct kv_bench_opts *o, struct kv_bench_result *r)
{
    unsigned nt = o->threads ? o->threads : 1;
    pthread_barrier_t start;
    struct bthread *ts;
    struct hist *h;
    uint64_t t0, t1, total = 0;

    if (!opts_valid(o))
        return KV_EINVAL;
    ts = kv_mem_calloc(KV_MOD_CLIENT, nt * sizeof(*ts));
    h = kv_mem_calloc(KV_MOD_CLIENT, sizeof(*h));
    if (!ts || !h || pthread_barrier_init(&start, NULL, nt + 1) != 0) {
        kv_mem_free(KV_MOD_CLIENT, ts);
        kv_mem_free(KV_MOD_CLIENT, h);
        return KV_ENOMEM;
    }
    memset(r, 0, sizeof(*r));
    for (unsigned i = 0; i < nt; i++) {
        ts[i].o = o;
        ts[i].start = &start;
        ts[i].index = i;
        ts[i].nthreads = nt;
        ts[i].nconns = o->conns / nt + (i < o->conns % nt);
        ts[i].quota = o->seconds > 0 ? UINT64_MAX : o->requests / nt + (i < o->requests % nt);
        pthread_create(&ts[i].tid, NULL, bthread_main, &ts[i]);
    }
    pthread_barrier_wait(&start);
    t0 = now_ns();
    for (unsigned i = 0; i < nt; i++) {
        pthread_join(ts[i].tid, NULL);
        r->requests += ts[i].done;
        r->errors += ts[i].errors;
        r->not_found += ts[i].not_found;
        r->failed |= ts[i].failed;
        for (unsigned b = 0; b < HIST_BUCKETS; b++)
            h->n[b] += ts[i].h.n[b];
        if (ts[i].h.max > h->max)
            h->max = ts[i].h.max;
    }
    t1 = now_ns();
    pthread_barrier_destroy(&start);
    total = r->requests;
    r->seconds = (double)(t1 - t0) / 1e9;
    r->rps = r->seconds > 0 ? (double)total / r->seconds : 0;
    r->p50_us = hist_pct(h, total, 50) / 1000.0;
    r->p99_us = hist_pct(h, total, 99) / 1000.0;
    r->p999_us = hist_pct(h, total, 99.9) / 1000.0;
    r->max_us = (double)h->max / 1000.0;
    kv_mem_free(KV_MOD_CLIENT, ts);
    kv_mem_free(KV_MOD_CLIENT, h);
    return 0;
}

/* ---- population ---------------------------------------------------------------- */

/* Encodes keys [first, first + n) as one batch; returns its length and sets
 * *units to the answers it gets. */
static size_t populate_batch(const struct kv_bench_opts *o, uint64_t first, size_t n, uint64_t id,
                             uint8_t *buf, uint64_t *units)
{
    size_t len = 0;

    *units = 1;
    switch (o->proto) {
    case KV_BENCH_BINARY: {
        /* MSetRequest.pairs (field 1): KeyValue{key, value} */
        uint8_t *body = buf + KV_FRAME_HDR;
        size_t kvlen = 2 + KV_BENCH_KEYLEN + 1 + put_varint(buf, o->value_len) + o->value_len;
        struct kv_frame f = {.version = KV_FRAME_VERSION, .opcode = KV_OP_MSET, .request_id = id};

        for (size_t i = 0; i < n; i++) {
            body[len++] = 0x0A;
            len += put_varint(body + len, kvlen);
            len += pb_key_value(body + len, first + i, o->value, o->value_len);
        }
        f.body_len = (uint32_t)len;
        kv_frame_encode_header(&f, buf);
        kv_put_le32(body + len, frame_crc(buf, body, len));
        return KV_FRAME_OVERHEAD + len;
    }
    case KV_BENCH_RESP:
        len = resp_array(buf, 1 + 2 * (uint64_t)n);
        len += PUT_LIT(buf + len, "$4\r\nMSET\r\n");
        for (size_t i = 0; i < n; i++) {
            len += resp_key(buf + len, first + i);
            len += resp_bulk(buf + len, o->value, o->value_len);
        }
        return len;
    case KV_BENCH_MEMCACHE:
        for (size_t i = 0; i < n; i++)
            len += mc_set(buf + len, first + i, o->value, o->value_len);
        *units = n;
        return len;
    }
    return 0;
}

int kv_bench_populate(const struct kv_bench_opts *o, uint64_t keyspace)
{
    size_t per = o->value_len + 3 * KV_BENCH_KEYLEN + 64;
    size_t batch = ((size_t)1 << 20) / per, in_cap;
    uint64_t next = 0, id = 0, errors = 0;
    struct timeval tv = {.tv_sec = 30};
    uint8_t *out, *in;
    int fd = -1, rc;

    if (batch > 1000)
        batch = 1000;
    if (batch == 0)
        batch = 1;
    in_cap = 65536 + batch * 64;
    out = kv_mem_alloc(KV_MOD_CLIENT, batch * per + 256);
    in = kv_mem_alloc(KV_MOD_CLIENT, in_cap);
    rc = out && in ? sock_open(o, &fd) : KV_ENOMEM;
    if (rc == 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (rc == 0 && next < keyspace) {
        size_t n = keyspace - next < batch ? (size_t)(keyspace - next) : batch;
        uint64_t units;
        size_t len = populate_batch(o, next, n, ++id, out, &units);

        /* memcache: n answers of 8 bytes fit in the socket buffers while the
         * batch is still being sent, so one batch in flight cannot block */
        rc = send_all(fd, out, len);
        if (rc == 0)
            rc = recv_units(fd, o->proto, in, in_cap, units, &errors);
        if (rc == 0 && errors)
            rc = KV_ESTATUS;
        next += n;
    }
    if (fd >= 0)
        close(fd);
    kv_mem_free(KV_MOD_CLIENT, out);
    kv_mem_free(KV_MOD_CLIENT, in);
    return rc;
}
