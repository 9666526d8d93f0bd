/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/client/client.c -- the blocking client over one connection (see
 * kv_client.h). Buffers are KV_MOD_CLIENT memory that grows to the largest
 * frame seen; each response frame is decoded in place, and its protobuf
 * body is unpacked with a bounded allocator counted under KV_MOD_CLIENT. */
#include "kv_client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <fcntl.h>

#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include "kv.pb-c.h"
#include "kv_err.h"
#include "kv_mem.h"
#include "ring.h"

#define KV_CLIENT_MAX_BODY (64u << 20)
#define KV_CLIENT_ERRMSG   512

struct kv_client {
    int fd;         /* owned */
    int timeout_ms; /* 0 = none */
    uint64_t next_id;
    uint8_t *out; /* owned: queued request frames */
    size_t out_len, out_cap;
    uint8_t *in; /* owned: received bytes */
    size_t in_len, in_off, in_cap;
    int last_status;                   /* KV_ST_* of the last answer, -1 = none */
    char last_error[KV_CLIENT_ERRMSG]; /* Error message of the last answer */
    /* attached (kv_client_attach): frames go through the rings, the socket only tells
     * the server's end */
    uint8_t *map;                      /* owned: the rings' mapping; NULL = socket */
    size_t map_size;
    int req_efd, resp_efd;             /* owned: wake the server / woken by it */
    struct kv_ring req, resp;          /* we produce req, consume resp */
    int held;                          /* the last answer is borrowed in place in resp */
    unsigned spin_ns;                  /* spin before sleeping on resp_efd */
    unsigned yield_ns;                 /* then sched_yield() between looks; 0 = never */
    int server_gone;                   /* the socket ended */
};

static int wait_fd(int fd, short ev, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = ev};
    int n;

    do
        n = poll(&p, 1, timeout_ms > 0 ? timeout_ms : -1);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        return KV_ETIMEDOUT;
    return n < 0 ? KV_EIO : 0;
}

/* Connects fd to sa within timeout_ms; 0, or KV_ETIMEDOUT / KV_EIO (errno). */
static int connect_within(int fd, const struct sockaddr *sa, socklen_t salen, int timeout_ms)
{
    int rc = connect(fd, sa, salen), soerr = 0;
    socklen_t sl = sizeof(soerr);

    if (rc == 0)
        return 0;
    if (errno != EINPROGRESS) /* a unix socket's full backlog (EAGAIN) fails at once */
        return KV_EIO;
    rc = wait_fd(fd, POLLOUT, timeout_ms);
    if (rc != 0)
        return rc;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
        if (soerr)
            errno = soerr;
        return KV_EIO;
    }
    return 0;
}

static int client_new(int fd, int timeout_ms, struct kv_client **out)
{
    struct kv_client *c = kv_mem_calloc(KV_MOD_CLIENT, sizeof(*c));

    if (!c) {
        close(fd);
        return KV_ENOMEM;
    }
    c->fd = fd;
    c->req_efd = c->resp_efd = -1;
    c->timeout_ms = timeout_ms;
    c->next_id = 1;
    c->last_status = -1;
    *out = c;
    return 0;
}

bool kv_client_host_is_path(const char *host)
{
    return host && strchr(host, '/') != NULL;
}

int kv_client_connect_unix(const char *path, int timeout_ms, struct kv_client **out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, rc;

    if (!path || !path[0] || strlen(path) >= sizeof(sa.sun_path))
        return KV_EINVAL;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return KV_EIO;
    rc = connect_within(fd, (struct sockaddr *)&sa, sizeof(sa), timeout_ms);
    if (rc != 0) {
        int e = errno;

        close(fd);
        errno = e;
        return rc;
    }
    return client_new(fd, timeout_ms, out);
}

int kv_client_connect(const char *host, uint16_t port, int timeout_ms, struct kv_client **out)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    char portstr[8];
    int fd, rc, one = 1;

    if (kv_client_host_is_path(host))
        return kv_client_connect_unix(host, timeout_ms, out);
    snprintf(portstr, sizeof(portstr), "%u", port);
    if (getaddrinfo(host, portstr, &hints, &ai) != 0 || !ai)
        return KV_EINVAL;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        return KV_EIO;
    }
    rc = connect_within(fd, ai->ai_addr, ai->ai_addrlen, timeout_ms);
    freeaddrinfo(ai);
    if (rc != 0) {
        int e = errno;

        close(fd);
        errno = e;
        return rc;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return client_new(fd, timeout_ms, out);
}

void kv_client_close(struct kv_client *c)
{
    if (!c)
        return;
    if (c->map) {
        munmap(c->map, c->map_size);
        close(c->req_efd);
        close(c->resp_efd);
    }
    close(c->fd);
    kv_mem_free(KV_MOD_CLIENT, c->out);
    kv_mem_free(KV_MOD_CLIENT, c->in);
    kv_mem_free(KV_MOD_CLIENT, c);
}

int kv_client_fd(const struct kv_client *c)
{
    return c->fd;
}

static int reserve(uint8_t **buf, size_t *cap, size_t need)
{
    size_t ncap = *cap ? *cap : 4096;
    uint8_t *n;

    if (need <= *cap)
        return 0;
    while (ncap < need)
        ncap *= 2;
    n = kv_mem_realloc(KV_MOD_CLIENT, *buf, ncap);
    if (!n)
        return KV_ENOMEM;
    *buf = n;
    *cap = ncap;
    return 0;
}

int kv_client_queue(struct kv_client *c, uint16_t opcode, uint64_t request_id, const void *body,
                    size_t body_len)
{
    struct kv_frame f = {.version = KV_FRAME_VERSION,
                         .opcode = opcode,
                         .request_id = request_id,
                         .body_len = (uint32_t)body_len};
    ssize_t n;

    if (body_len > KV_CLIENT_MAX_BODY)
        return KV_ETOOBIG;
    if (reserve(&c->out, &c->out_cap, c->out_len + KV_FRAME_OVERHEAD + body_len) != 0)
        return KV_ENOMEM;
    n = kv_frame_encode(&f, body, c->out + c->out_len, c->out_cap - c->out_len);
    if (n < 0)
        return (int)n;
    c->out_len += (size_t)n;
    return 0;
}

static int send_all(struct kv_client *c, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int rc = wait_fd(c->fd, POLLOUT, c->timeout_ms);

                if (rc != 0)
                    return rc;
                continue;
            }
            return errno == EPIPE || errno == ECONNRESET ? KV_ECLOSED : KV_EIO;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int ring_send(struct kv_client *c, const uint8_t *buf, size_t len);

int kv_client_flush(struct kv_client *c)
{
    int rc = c->map ? ring_send(c, c->out, c->out_len) : send_all(c, c->out, c->out_len);

    c->out_len = 0;
    return rc;
}

int kv_client_send_raw(struct kv_client *c, const void *buf, size_t len)
{
    return c->map ? ring_send(c, buf, len) : send_all(c, buf, len);
}

static int ring_recv(struct kv_client *c, struct kv_response *r);

int kv_client_ready(struct kv_client *c)
{
    struct kv_frame f;
    uint8_t len[4];
    int64_t avail;
    uint64_t total;

    if (!c->map) {
        if (c->in_len <= c->in_off)
            return 0;
        return kv_frame_decode(c->in + c->in_off, c->in_len - c->in_off, KV_CLIENT_MAX_BODY, 1,
                               &f) != KV_EAGAIN;
    }
    /* the header's body length alone: recv checks the rest (and says what is wrong) */
    avail = kv_ring_avail(&c->resp);
    if (avail < KV_FRAME_HDR)
        return avail < 0 ? KV_EPROTO : 0;
    kv_ring_peek(&c->resp, 16, len, sizeof(len));
    total = KV_FRAME_OVERHEAD + (uint64_t)kv_get_le32(len);
    return (uint64_t)avail >= total || total > c->resp.cap; /* larger: recv copies it out */
}

int kv_client_recv(struct kv_client *c, struct kv_response *r)
{
    if (c->map)
        return ring_recv(c, r);
    for (;;) {
        struct kv_frame f;
        ssize_t n = 0;

        if (c->in_len > c->in_off)
            n = kv_frame_decode(c->in + c->in_off, c->in_len - c->in_off, KV_CLIENT_MAX_BODY, 1,
                                &f);
        if (n > 0) {
            r->opcode = f.opcode;
            r->status = f.status;
            r->request_id = f.request_id;
            r->body = f.body;
            r->body_len = f.body_len;
            c->in_off += (size_t)n;
            return 0;
        }
        if (c->in_len > c->in_off && n != KV_EAGAIN)
            return (int)n; /* the server sent a bad frame */
        /* compact, grow for the partial frame, read more */
        if (c->in_off) {
            memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
            c->in_len -= c->in_off;
            c->in_off = 0;
        }
        size_t need =
            c->in_len >= KV_FRAME_HDR ? KV_FRAME_OVERHEAD + (size_t)f.body_len : KV_FRAME_HDR;
        if (reserve(&c->in, &c->in_cap, need > 65536 ? need : 65536) != 0)
            return KV_ENOMEM;
        ssize_t got = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (got == 0)
            return KV_ECLOSED;
        if (got < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                int rc = wait_fd(c->fd, POLLIN, c->timeout_ms);

                if (rc != 0)
                    return rc;
                continue;
            }
            return errno == ECONNRESET ? KV_ECLOSED : KV_EIO;
        }
        c->in_len += (size_t)got;
    }
}

/* ---- bounded protobuf-c allocator ------------------------------------------ */
/* Unpacking an answer may allocate at most its budget: a hostile or broken
 * server cannot make the client allocate more than a fixed multiple of the
 * bytes it actually sent. The budget counts every allocation protobuf-c
 * makes, its temporary scan slabs included (frees are not credited back):
 * an MGET answer of N missing keys is 2N bytes and takes about 100N, hence
 * 64 x body + 1 MiB. Blocks are KV_MOD_CLIENT memory. */
struct pb_budget {
    size_t left;
    int exceeded;
};

static void *pb_alloc(void *data, size_t size)
{
    struct pb_budget *b = data;

    if (b) {
        if (size > b->left) {
            b->exceeded = 1;
            return NULL;
        }
        b->left -= size;
    }
    return kv_mem_alloc(KV_MOD_CLIENT, size ? size : 1);
}

static void pb_free(void *data, void *p)
{
    kv_mem_free(KV_MOD_CLIENT, p);
}

/* Frees unpacked messages (the budget is only consulted when allocating). */
static ProtobufCAllocator pb_freer = {.alloc = pb_alloc, .free = pb_free, .allocator_data = NULL};

static ProtobufCMessage *pb_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *body,
                                   size_t len, int *rc)
{
    struct pb_budget b = {.left = 64 * len + (1u << 20)};
    ProtobufCAllocator a = {.alloc = pb_alloc, .free = pb_free, .allocator_data = &b};
    ProtobufCMessage *m = protobuf_c_message_unpack(d, &a, len, body);

    if (!m)
        *rc = b.exceeded ? KV_ENOMEM : KV_EPROTO;
    return m;
}

static void pb_release(void *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, &pb_freer);
}

/* ---- answers and their statuses --------------------------------------------- */
int kv_client_last_status(const struct kv_client *c)
{
    return c->last_status;
}

const char *kv_client_last_error(const struct kv_client *c)
{
    return c->last_error;
}

static void no_answer(struct kv_client *c)
{
    c->last_status = -1;
    c->last_error[0] = '\0';
}

/* Records the status and the Error message of an answer. A body that is not
 * an Error message but printable text is taken as the message itself. */
static void record_answer(struct kv_client *c, const struct kv_response *r)
{
    c->last_status = r->status;
    c->last_error[0] = '\0';
    if (r->status == KV_ST_OK || r->body_len == 0)
        return;
    int rc = 0;
    Kv__Error *e = (Kv__Error *)pb_unpack(&kv__error__descriptor, r->body, r->body_len, &rc);

    if (e) {
        snprintf(c->last_error, sizeof(c->last_error), "%s", e->message ? e->message : "");
        pb_release(e);
        return;
    }
    size_t n = r->body_len < sizeof(c->last_error) - 1 ? r->body_len : sizeof(c->last_error) - 1;

    for (size_t i = 0; i < n; i++)
        if (r->body[i] < 0x20 || r->body[i] > 0x7e)
            return;
    memcpy(c->last_error, r->body, n);
    c->last_error[n] = '\0';
}

/* Maps a non-OK status to the result of a typed call. */
static int status_rc(uint16_t status)
{
    switch (status) {
    case KV_ST_OK: return 0;
    case KV_ST_NOT_FOUND: return KV_ENOTFOUND;
    case KV_ST_EXISTS: return KV_EEXISTS;
    case KV_ST_NOT_A_NUMBER: return KV_ENOTNUM;
    default: return KV_ESTATUS;
    }
}

/* Sends one request frame whose body is already queued and waits for the
 * answer carrying id and opcode. */
static int roundtrip(struct kv_client *c, uint16_t opcode, uint64_t id, struct kv_response *r)
{
    int rc = kv_client_flush(c);

    if (rc == 0)
        rc = kv_client_recv(c, r);
    if (rc == 0 && (r->request_id != id || r->opcode != opcode))
        rc = KV_EPROTO;
    if (rc != 0) {
        no_answer(c);
        return rc;
    }
    record_answer(c, r);
    return 0;
}

int kv_client_call(struct kv_client *c, uint16_t opcode, const void *body, size_t body_len,
                   struct kv_response *r)
{
    uint64_t id = c->next_id++;
    int rc = kv_client_queue(c, opcode, id, body, body_len);

    if (rc == 0)
        rc = roundtrip(c, opcode, id, r);
    else
        no_answer(c);
    if (rc != 0)
        return rc;
    return r->status == KV_ST_OK ? 0 : KV_ESTATUS;
}

int kv_client_ping(struct kv_client *c, const void *payload, size_t len)
{
    struct kv_response r;
    int rc = kv_client_call(c, KV_OP_PING, payload, len, &r);

    if (rc != 0)
        return rc;
    if (r.body_len != len || (len && memcmp(r.body, payload, len) != 0))
        return KV_EPROTO;
    return 0;
}

/* Packs req straight into the send buffer as one frame. */
static int queue_msg(struct kv_client *c, uint16_t opcode, uint64_t id, const ProtobufCMessage *req)
{
    size_t len = protobuf_c_message_get_packed_size(req);
    struct kv_frame f = {
        .version = KV_FRAME_VERSION, .opcode = opcode, .request_id = id, .body_len = (uint32_t)len};
    uint8_t *p;

    if (len > KV_CLIENT_MAX_BODY)
        return KV_ETOOBIG;
    if (reserve(&c->out, &c->out_cap, c->out_len + KV_FRAME_OVERHEAD + len) != 0)
        return KV_ENOMEM;
    p = c->out + c->out_len;
    protobuf_c_message_pack(req, p + KV_FRAME_HDR);
    kv_frame_encode_header(&f, p);
    kv_put_le32(p + KV_FRAME_HDR + len, kv_frame_crc(p, p + KV_FRAME_HDR, len));
    c->out_len += KV_FRAME_OVERHEAD + len;
    return 0;
}

/* One typed call: sends req, waits, maps the status, and on OK unpacks the
 * answer as resp_desc into *resp (the caller releases it with pb_release). */
static int typed_call(struct kv_client *c, uint16_t opcode, const void *req,
                      const ProtobufCMessageDescriptor *resp_desc, void **resp)
{
    uint64_t id = c->next_id++;
    struct kv_response r;
    int rc = queue_msg(c, opcode, id, req);

    if (rc != 0) {
        no_answer(c);
        return rc;
    }
    rc = roundtrip(c, opcode, id, &r);
    if (rc != 0)
        return rc;
    if (r.status != KV_ST_OK)
        return status_rc(r.status);
    if (!resp_desc)
        return 0;
    rc = 0;
    *resp = pb_unpack(resp_desc, r.body, r.body_len, &rc);
    return rc;
}

static ProtobufCBinaryData bin(const void *p, size_t n)
{
    return (ProtobufCBinaryData){.len = n, .data = (uint8_t *)(uintptr_t)p};
}

/* Copies n bytes into a new NUL-terminated KV_MOD_CLIENT buffer. */
static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
    uint8_t *d = kv_mem_alloc(KV_MOD_CLIENT, n + 1);

    if (d) {
        if (n)
            memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

void kv_client_value_free(struct kv_value *v)
{
    if (!v)
        return;
    kv_mem_free(KV_MOD_CLIENT, v->data);
    memset(v, 0, sizeof(*v));
}

void kv_client_values_free(struct kv_value *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        kv_client_value_free(&v[i]);
}

static int check_key(struct kv_client *c, const void *key, size_t klen)
{
    if (!key && klen) {
        no_answer(c);
        return KV_EINVAL;
    }
    return 0;
}

int kv_client_get(struct kv_client *c, const void *key, size_t klen, struct kv_value *out)
{
    Kv__GetRequest req = KV__GET_REQUEST__INIT;
    Kv__GetResponse *resp = NULL;
    int rc = check_key(c, key, klen);

    if (rc != 0)
        return rc;
    req.key = bin(key, klen);
    rc = typed_call(c, KV_OP_GET, &req, &kv__get_response__descriptor, (void **)&resp);
    if (rc != 0)
        return rc;
    uint8_t *d = dup_bytes(resp->value.data, resp->value.len);

    if (d) {
        out->data = d;
        out->len = resp->value.len;
        out->version = resp->version;
        out->found = true;
    }
    pb_release(resp);
    return d ? 0 : KV_ENOMEM;
}

int kv_client_set(struct kv_client *c, const void *key, size_t klen, const void *value, size_t vlen,
                  const struct kv_set_opts *opts, uint64_t *version)
{
    Kv__SetRequest req = KV__SET_REQUEST__INIT;
    Kv__SetResponse *resp = NULL;
    int rc = check_key(c, key, klen);

    if (rc != 0)
        return rc;
    if (!value && vlen) {
        no_answer(c);
        return KV_EINVAL;
    }
    req.key = bin(key, klen);
    req.value = bin(value, vlen);
    if (opts) {
        req.ttl_ms = opts->ttl_ms;
        req.only_if_absent = opts->nx;
        req.only_if_present = opts->xx;
        req.has_cas = opts->cas;
        req.cas_version = opts->cas_version;
    }
    rc = typed_call(c, KV_OP_SET, &req, &kv__set_response__descriptor, (void **)&resp);
    if (rc != 0)
        return rc;
    if (version)
        *version = resp->version;
    pb_release(resp);
    return 0;
}

/* A temporary array of n binary fields pointing at the caller's bytes. */
static ProtobufCBinaryData *bin_array(const struct kv_bytes *v, size_t n)
{
    ProtobufCBinaryData *a = kv_mem_alloc(KV_MOD_CLIENT, n * sizeof(*a));

    for (size_t i = 0; a && i < n; i++)
        a[i] = bin(v[i].data, v[i].len);
    return a;
}

int kv_client_del(struct kv_client *c, const struct kv_bytes *keys, size_t n, uint64_t *deleted)
{
    Kv__DelRequest req = KV__DEL_REQUEST__INIT;
    Kv__DelResponse *resp = NULL;
    int rc;

    no_answer(c);
    if (!keys || n == 0)
        return KV_EINVAL;
    req.n_keys = n;
    req.keys = bin_array(keys, n);
    if (!req.keys)
        return KV_ENOMEM;
    rc = typed_call(c, KV_OP_DEL, &req, &kv__del_response__descriptor, (void **)&resp);
    kv_mem_free(KV_MOD_CLIENT, req.keys);
    if (rc != 0)
        return rc;
    if (deleted)
        *deleted = resp->deleted;
    pb_release(resp);
    return 0;
}

int kv_client_del1(struct kv_client *c, const void *key, size_t klen, uint64_t *deleted)
{
    struct kv_bytes k = {.data = key, .len = klen};

    return kv_client_del(c, &k, 1, deleted);
}

int kv_client_exists(struct kv_client *c, const void *key, size_t klen, bool *exists)
{
    Kv__ExistsRequest req = KV__EXISTS_REQUEST__INIT;
    Kv__ExistsResponse *resp = NULL;
    int rc = check_key(c, key, klen);

    if (rc != 0)
        return rc;
    req.key = bin(key, klen);
    rc = typed_call(c, KV_OP_EXISTS, &req, &kv__exists_response__descriptor, (void **)&resp);
    if (rc != 0)
        return rc;
    if (exists)
        *exists = resp->exists != 0;
    pb_release(resp);
    return 0;
}

int kv_client_incr(struct kv_client *c, const void *key, size_t klen, int64_t delta, int64_t *value,
                   uint64_t *version)
{
    Kv__IncrRequest req = KV__INCR_REQUEST__INIT;
    Kv__IncrResponse *resp = NULL;
    int rc = check_key(c, key, klen);

    if (rc != 0)
        return rc;
    req.key = bin(key, klen);
    req.delta = delta;
    rc = typed_call(c, KV_OP_INCR, &req, &kv__incr_response__descriptor, (void **)&resp);
    if (rc != 0)
        return rc;
    if (value)
        *value = resp->value;
    if (version)
        *version = resp->version;
    pb_release(resp);
    return 0;
}

int kv_client_mget(struct kv_client *c, const struct kv_bytes *keys, size_t n, struct kv_value *out)
{
    Kv__MGetRequest req = KV__MGET_REQUEST__INIT;
    Kv__MGetResponse *resp = NULL;
    int rc;

    no_answer(c);
    if (!keys || !out || n == 0)
        return KV_EINVAL;
    req.n_keys = n;
    req.keys = bin_array(keys, n);
    if (!req.keys)
        return KV_ENOMEM;
    rc = typed_call(c, KV_OP_MGET, &req, &kv__mget_response__descriptor, (void **)&resp);
    kv_mem_free(KV_MOD_CLIENT, req.keys);
    if (rc != 0)
        return rc;
    if (resp->n_entries != n) {
        pb_release(resp);
        return KV_EPROTO;
    }
    struct kv_value *tmp = kv_mem_calloc(KV_MOD_CLIENT, n * sizeof(*tmp));

    for (size_t i = 0; tmp && i < n; i++) {
        const Kv__MGetEntry *e = resp->entries[i];

        if (!e->found)
            continue;
        tmp[i].data = dup_bytes(e->value.data, e->value.len);
        if (!tmp[i].data) {
            kv_client_values_free(tmp, n);
            kv_mem_free(KV_MOD_CLIENT, tmp);
            tmp = NULL;
            break;
        }
        tmp[i].len = e->value.len;
        tmp[i].version = e->version;
        tmp[i].found = true;
    }
    pb_release(resp);
    if (!tmp)
        return KV_ENOMEM;
    memcpy(out, tmp, n * sizeof(*tmp));
    kv_mem_free(KV_MOD_CLIENT, tmp);
    return 0;
}

int kv_client_mset(struct kv_client *c, const struct kv_bytes *keys, const struct kv_bytes *values,
                   size_t n, uint64_t ttl_ms, uint64_t *versions)
{
    Kv__MSetRequest req = KV__MSET_REQUEST__INIT;
    Kv__MSetResponse *resp = NULL;
    Kv__KeyValue *kvs, **ptrs;
    int rc;

    no_answer(c);
    if (!keys || !values || n == 0)
        return KV_EINVAL;
    kvs = kv_mem_alloc(KV_MOD_CLIENT, n * sizeof(*kvs));
    ptrs = kv_mem_alloc(KV_MOD_CLIENT, n * sizeof(*ptrs));
    if (!kvs || !ptrs) {
        kv_mem_free(KV_MOD_CLIENT, kvs);
        kv_mem_free(KV_MOD_CLIENT, ptrs);
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        kv__key_value__init(&kvs[i]);
        kvs[i].key = bin(keys[i].data, keys[i].len);
        kvs[i].value = bin(values[i].data, values[i].len);
        ptrs[i] = &kvs[i];
    }
    req.n_pairs = n;
    req.pairs = ptrs;
    req.ttl_ms = ttl_ms;
    rc = typed_call(c, KV_OP_MSET, &req, &kv__mset_response__descriptor, (void **)&resp);
    kv_mem_free(KV_MOD_CLIENT, kvs);
    kv_mem_free(KV_MOD_CLIENT, ptrs);
    if (rc != 0)
        return rc;
    if (resp->n_versions != n) {
        pb_release(resp);
        return KV_EPROTO;
    }
    if (versions)
        memcpy(versions, resp->versions, n * sizeof(*versions));
    pb_release(resp);
    return 0;
}

int kv_client_expire(struct kv_client *c, const void *key, size_t klen,
                     enum kv_expire_action action, uint64_t ttl_ms, int64_t *ttl_ms_out)
{
    Kv__ExpireRequest req = KV__EXPIRE_REQUEST__INIT;
    Kv__ExpireResponse *resp = NULL;
    int rc = check_key(c, key, klen);

    if (rc != 0)
        return rc;
    req.key = bin(key, klen);
    req.action = (Kv__ExpireRequest__Action)action;
    req.ttl_ms = ttl_ms;
    rc = typed_call(c, KV_OP_EXPIRE, &req, &kv__expire_response__descriptor, (void **)&resp);
    if (rc != 0)
        return rc;
    if (ttl_ms_out)
        *ttl_ms_out = resp->ttl_ms;
    pb_release(resp);
    return 0;
}

int kv_client_ttl(struct kv_client *c, const void *key, size_t klen, int64_t *ttl_ms)
{
    return kv_client_expire(c, key, klen, KV_EXPIRE_QUERY, 0, ttl_ms);
}

void kv_client_scan_free(struct kv_scan *s)
{
    if (!s)
        return;
    kv_client_values_free(s->keys, s->nkeys);
    kv_mem_free(KV_MOD_CLIENT, s->keys);
    memset(s, 0, sizeof(*s));
}

int kv_client_scan(struct kv_client *c, uint64_t cursor, const void *prefix, size_t plen,
                   uint32_t count, struct kv_scan *out)
{
    Kv__ScanRequest req = KV__SCAN_REQUEST__INIT;
    Kv__ScanResponse *resp = NULL;
    struct kv_scan s = {0};
    int rc = check_key(c, prefix, plen);

    if (rc != 0)
        return rc;
    req.cursor = cursor;
    req.prefix = bin(prefix, plen);
    req.count = count;
    rc = typed_call(c, KV_OP_SCAN, &req, &kv__scan_response__descriptor, (void **)&resp);
    if (rc != 0)
        return rc;
    s.cursor = resp->cursor;
    if (resp->n_keys) {
        s.keys = kv_mem_calloc(KV_MOD_CLIENT, resp->n_keys * sizeof(*s.keys));
        rc = s.keys ? 0 : KV_ENOMEM;
    }
    for (size_t i = 0; rc == 0 && i < resp->n_keys; i++) {
        s.keys[i].data = dup_bytes(resp->keys[i].data, resp->keys[i].len);
        if (!s.keys[i].data) {
            rc = KV_ENOMEM;
            break;
        }
        s.keys[i].len = resp->keys[i].len;
        s.keys[i].found = true;
        s.nkeys = i + 1;
    }
    pb_release(resp);
    if (rc != 0) {
        kv_client_scan_free(&s);
        return rc;
    }
    *out = s;
    return 0;
}

void kv_client_stats_free(struct kv_stats *s)
{
    if (!s)
        return;
    for (size_t i = 0; s->entries && i < s->n; i++)
        kv_mem_free(KV_MOD_CLIENT, s->entries[i].name);
    kv_mem_free(KV_MOD_CLIENT, s->entries);
    kv_mem_free(KV_MOD_CLIENT, s->text);
    memset(s, 0, sizeof(*s));
}

int kv_client_stats(struct kv_client *c, struct kv_stats *out)
{
    Kv__StatsRequest req = KV__STATS_REQUEST__INIT;
    Kv__StatsResponse *resp = NULL;
    struct kv_stats s = {0};
    int rc = typed_call(c, KV_OP_STATS, &req, &kv__stats_response__descriptor, (void **)&resp);

    if (rc != 0)
        return rc;
    const char *text = resp->text ? resp->text : "";

    s.text = (char *)dup_bytes((const uint8_t *)text, strlen(text));
    if (resp->n_entries)
        s.entries = kv_mem_calloc(KV_MOD_CLIENT, resp->n_entries * sizeof(*s.entries));
    if (!s.text || (resp->n_entries && !s.entries))
        rc = KV_ENOMEM;
    for (size_t i = 0; rc == 0 && i < resp->n_entries; i++) {
        const char *name = resp->entries[i]->name ? resp->entries[i]->name : "";

        s.entries[i].name = (char *)dup_bytes((const uint8_t *)name, strlen(name));
        s.entries[i].value = resp->entries[i]->value;
        s.n = i + 1;
        if (!s.entries[i].name)
            rc = KV_ENOMEM;
    }
    pb_release(resp);
    if (rc != 0) {
        kv_client_stats_free(&s);
        return rc;
    }
    *out = s;
    return 0;
}

bool kv_client_stats_find(const struct kv_stats *s, const char *name, int64_t *value)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->entries[i].name, name) == 0) {
            if (value)
                *value = s->entries[i].value;
            return true;
        }
    return false;
}

int kv_client_flush_all(struct kv_client *c, uint64_t *removed)
{
    Kv__FlushRequest req = KV__FLUSH_REQUEST__INIT;
    Kv__FlushResponse *resp = NULL;
    int rc = typed_call(c, KV_OP_FLUSH, &req, &kv__flush_response__descriptor, (void **)&resp);

    if (rc != 0)
        return rc;
    if (removed)
        *removed = resp->removed;
    pb_release(resp);
    return 0;
}

int kv_client_auth(struct kv_client *c, const void *password, size_t len)
{
    Kv__AuthRequest req = KV__AUTH_REQUEST__INIT;
    int rc = check_key(c, password, len);

    if (rc != 0)
        return rc;
    req.password = bin(password, len);
    return typed_call(c, KV_OP_AUTH, &req, NULL, NULL);
}

int kv_client_rename(struct kv_client *c, const void *key, size_t klen, const void *new_key,
                     size_t nklen, uint32_t flags, uint32_t dst_db, bool *done)
{
    Kv__RenameRequest req = KV__RENAME_REQUEST__INIT;
    Kv__RenameResponse *resp = NULL;
    int rc = check_key(c, key, klen);

    if (rc == 0)
        rc = check_key(c, new_key, nklen);
    if (rc != 0)
        return rc;
    req.key = bin(key, klen);
    req.new_key = bin(new_key, nklen);
    req.flags = flags;
    req.dst_db = dst_db;
    rc = typed_call(c, KV_OP_RENAME, &req, &kv__rename_response__descriptor, (void **)&resp);
    if (rc != 0)
        return rc;
    if (done)
        *done = resp->done;
    pb_release(resp);
    return 0;
}

/* One STR call: *resp (released by the caller) on OK. */
static int str_call(struct kv_client *c, Kv__StrRequest *req, Kv__StrResponse **resp)
{
    return typed_call(c, KV_OP_STR, req, &kv__str_response__descriptor, (void **)resp);
}

int kv_client_append(struct kv_client *c, const void *key, size_t klen, const void *value,
                     size_t vlen, int64_t *new_len)
{
    Kv__StrRequest req = KV__STR_REQUEST__INIT;
    Kv__StrResponse *resp = NULL;
    int rc = check_key(c, key, klen);

    if (rc == 0)
        rc = check_key(c, value, vlen);
    if (rc != 0)
        return rc;
    req.op = KV__STR_REQUEST__OP__APPEND;
    req.key = bin(key, klen);
    req.value = bin(value, vlen);
    if ((rc = str_call(c, &req, &resp)) != 0)
        return rc;
    if (new_len)
        *new_len = resp->number;
    pb_release(resp);
    return 0;
}

int kv_client_getrange(struct kv_client *c, const void *key, size_t klen, int64_t start,
                       int64_t end, struct kv_value *out)
{
    Kv__StrRequest req = KV__STR_REQUEST__INIT;
    Kv__StrResponse *resp = NULL;
    int rc = check_key(c, key, klen);

    if (rc != 0)
        return rc;
    req.op = KV__STR_REQUEST__OP__GETRANGE;
    req.key = bin(key, klen);
    req.start = start;
    req.end = end;
    if ((rc = str_call(c, &req, &resp)) != 0)
        return rc;
    uint8_t *d = dup_bytes(resp->value.data, resp->value.len);

    if (d) {
        out->data = d;
        out->len = resp->value.len;
        out->version = resp->version;
        out->found = resp->found;
    }
    pb_release(resp);
    return d ? 0 : KV_ENOMEM;
}

int kv_client_setrange(struct kv_client *c, const void *key, size_t klen, int64_t offset,
                       const void *value, size_t vlen, int64_t *new_len)
{
    Kv__StrRequest req = KV__STR_REQUEST__INIT;
    Kv__StrResponse *resp = NULL;
    int rc = check_key(c, key, klen);

    if (rc == 0)
        rc = check_key(c, value, vlen);
    if (rc != 0)
        return rc;
    req.op = KV__STR_REQUEST__OP__SETRANGE;
    req.key = bin(key, klen);
    req.value = bin(value, vlen);
    req.start = offset;
    if ((rc = str_call(c, &req, &resp)) != 0)
        return rc;
    if (new_len)
        *new_len = resp->number;
    pb_release(resp);
    return 0;
}

/* ---- shared-memory rings (docs/PROTOCOL.md section 5) ------------------------------ */
static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void efd_write(int fd)
{
    uint64_t one = 1;

    while (write(fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

/* Sleeps until the server writes our eventfd or its socket ends, within the time left
 * before deadline (ns; 0 = none). 0, KV_ETIMEDOUT, or KV_ECLOSED. */
static int ring_sleep(struct kv_client *c, uint64_t deadline)
{
    struct pollfd p[2] = {{.fd = c->resp_efd, .events = POLLIN}, {.fd = c->fd, .events = POLLIN}};
    int ms = -1, n;
    uint64_t v;

    if (deadline) {
        uint64_t now = mono_ns();

        if (now >= deadline)
            return KV_ETIMEDOUT;
        ms = (int)((deadline - now + 999999) / 1000000);
    }
    do
        n = poll(p, 2, ms);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return KV_EIO;
    if (n == 0)
        return KV_ETIMEDOUT;
    if (p[1].revents) {
        uint8_t b[16];

        if (recv(c->fd, b, sizeof(b), MSG_DONTWAIT) <= 0 || !(p[0].revents & POLLIN)) {
            c->server_gone = 1;
            return KV_ECLOSED;
        }
    }
    if (p[0].revents & POLLIN)
        (void)!read(c->resp_efd, &v, sizeof(v));
    return 0;
}

static uint64_t deadline_of(const struct kv_client *c)
{
    return c->timeout_ms > 0 ? mono_ns() + (uint64_t)c->timeout_ms * 1000000ull : 0;
}

/* Gives the borrowed answer's ring space back. */
static void ring_unhold(struct kv_client *c)
{
    if (c->held) {
        c->held = 0;
        if (kv_ring_release(&c->resp, c->resp.rd))
            efd_write(c->req_efd); /* the server waits for room to answer */
    }
}

static int ring_send(struct kv_client *c, const uint8_t *buf, size_t len)
{
    uint64_t deadline = 0;

    ring_unhold(c);
    while (len > 0) {
        int64_t space = kv_ring_space(&c->req);
        size_t n;

        if (space < 0)
            return KV_EPROTO;
        if (space == 0) {
            int rc;

            if (c->server_gone)
                return KV_ECLOSED;
            if (kv_ring_publish(&c->req))
                efd_write(c->req_efd);
            space = kv_ring_want_space(&c->req);
            if (space == 0) {
                if (!deadline)
                    deadline = deadline_of(c);
                rc = ring_sleep(c, deadline);
                kv_ring_unwant(&c->req);
                if (rc != 0)
                    return rc;
                continue;
            }
            kv_ring_unwant(&c->req);
            if (space < 0)
                return KV_EPROTO;
        }
        n = (size_t)space < len ? (size_t)space : len;
        kv_ring_write(&c->req, buf, n);
        buf += n;
        len -= n;
    }
    if (kv_ring_publish(&c->req))
        efd_write(c->req_efd);
    return 0;
}

static void fill_response(struct kv_response *r, const struct kv_frame *f)
{
    r->opcode = f->opcode;
    r->status = f->status;
    r->request_id = f->request_id;
    r->body = f->body;
    r->body_len = f->body_len;
}

static int ring_recv(struct kv_client *c, struct kv_response *r)
{
    uint64_t deadline = 0, spin_until = 0;
    size_t asm_len = 0; /* bytes of a frame larger than the ring copied into c->in */

    ring_unhold(c);
    for (;;) {
        struct kv_ring_frame rf;
        struct kv_frame f;
        uint8_t hdr[KV_FRAME_HDR];
        int rc = asm_len ? 0 : kv_ring_frame_peek(&c->resp, KV_CLIENT_MAX_BODY, 1, &rf, hdr);
        int64_t avail;

        if (rc < 0)
            return rc == KV_EMAGIC ? KV_EPROTO : rc;
        if (rc == 1) {
            ssize_t n;

            if (rf.in_place) { /* the answer is handed over in place until the next call */
                n = kv_frame_decode(rf.in_place, rf.total, KV_CLIENT_MAX_BODY, 1, &f);
                if (n < 0)
                    return (int)n;
                kv_ring_read(&c->resp, (size_t)n);
                c->held = 1;
                fill_response(r, &f);
                return 0;
            }
            if (reserve(&c->in, &c->in_cap, rf.total) != 0)
                return KV_ENOMEM;
            kv_ring_peek(&c->resp, 0, c->in, rf.total);
            kv_ring_read(&c->resp, rf.total);
            c->held = 1; /* release with the next call, as in place */
            n = kv_frame_decode(c->in, rf.total, KV_CLIENT_MAX_BODY, 1, &f);
            if (n < 0)
                return (int)n;
            fill_response(r, &f);
            return 0;
        }
        /* a frame larger than the ring: copy it out piece by piece */
        if (asm_len || (rf.total && rf.total > c->resp.cap)) {
            size_t total = asm_len ? (size_t)KV_FRAME_OVERHEAD + kv_get_le32(c->in + 16)
                                   : (size_t)rf.total;

            avail = kv_ring_avail(&c->resp);
            if (avail < 0)
                return KV_EPROTO;
            if (reserve(&c->in, &c->in_cap, total) != 0)
                return KV_ENOMEM;
            if (avail > 0) {
                size_t take = (size_t)avail < total - asm_len ? (size_t)avail : total - asm_len;

                kv_ring_peek(&c->resp, 0, c->in + asm_len, take);
                kv_ring_read(&c->resp, take);
                asm_len += take;
                if (kv_ring_release(&c->resp, c->resp.rd))
                    efd_write(c->req_efd);
                if (asm_len == total) {
                    ssize_t n = kv_frame_decode(c->in, total, KV_CLIENT_MAX_BODY, 1, &f);

                    if (n < 0)
                        return (int)n;
                    fill_response(r, &f);
                    return 0;
                }
                spin_until = 0;
                continue;
            }
        }
        /* nothing (whole) yet: spin a while, then sleep */
        if (c->server_gone)
            return KV_ECLOSED;
        {
            uint64_t now = mono_ns();

            if (!spin_until)
                spin_until = now + c->spin_ns;
            if (now < spin_until) {
                if (c->yield_ns && now + c->spin_ns - spin_until > c->yield_ns)
                    sched_yield(); /* the server may be waiting for this very core */
                else
                    __builtin_ia32_pause();
                continue;
            }
        }
        avail = kv_ring_park(&c->resp);
        if (avail < 0)
            return KV_EPROTO;
        if ((uint64_t)avail >= (rf.total ? rf.total : 1) && !asm_len) {
            kv_ring_unpark(&c->resp);
            continue;
        }
        if (asm_len && avail > 0) {
            kv_ring_unpark(&c->resp);
            continue;
        }
        if (!deadline)
            deadline = deadline_of(c);
        rc = ring_sleep(c, deadline);
        kv_ring_unpark(&c->resp);
        if (rc == KV_ECLOSED) {
            /* answers written before the end are still read; then the end */
            avail = kv_ring_avail(&c->resp);
            if (avail > 0)
                continue;
            return rc;
        }
        if (rc != 0)
            return rc;
        spin_until = 0;
    }
}

/* Receives exactly one frame on the socket with the descriptors passed along with it. */
static int recv_attach_answer(struct kv_client *c, uint8_t *buf, size_t cap, size_t *len,
                              int fds[3], int *nfds)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(4 * sizeof(int))];
    } u;
    size_t got = 0, want = KV_FRAME_HDR;

    *nfds = 0;
    while (got < want) {
        struct iovec iov = {.iov_base = buf + got, .iov_len = want - got};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                            .msg_controllen = sizeof(u.b)};
        ssize_t n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);

        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            int rc = wait_fd(c->fd, POLLIN, c->timeout_ms);

            if (rc != 0)
                return rc;
            continue;
        }
        if (n <= 0)
            return n == 0 ? KV_ECLOSED : KV_EIO;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                continue;
            size_t k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int tmp[4];

            memcpy(tmp, CMSG_DATA(cm), (k > 4 ? 4 : k) * sizeof(int));
            for (size_t i = 0; i < k && i < 4; i++) {
                if (*nfds < 3)
                    fds[(*nfds)++] = tmp[i];
                else
                    close(tmp[i]);
            }
        }
        got += (size_t)n;
        if (got >= KV_FRAME_HDR && want == KV_FRAME_HDR) {
            want = KV_FRAME_OVERHEAD + (size_t)kv_get_le32(buf + 16);
            if (want > cap)
                return KV_EPROTO;
        }
    }
    *len = got;
    return 0;
}

int kv_client_attach(struct kv_client *c, uint32_t req_size, uint32_t resp_size)
{
    uint8_t body[8], in[KV_FRAME_OVERHEAD + 512];
    int fds[3] = {-1, -1, -1}, nfds = 0, rc;
    uint64_t id = c->next_id++;
    struct kv_frame f;
    size_t len = 0;
    uint32_t rq, rs;
    uint8_t *map = MAP_FAILED;
    uint64_t size = 0;
    const char *spin = getenv("KV_CLIENT_SPIN_US");

    if (c->map)
        return KV_EINVAL;
    kv_put_le32(body, req_size);
    kv_put_le32(body + 4, resp_size);
    rc = kv_client_queue(c, KV_OP_ATTACH, id, body, req_size || resp_size ? 8 : 0);
    if (rc == 0)
        rc = kv_client_flush(c);
    if (rc == 0)
        rc = recv_attach_answer(c, in, sizeof(in), &len, fds, &nfds);
    if (rc != 0)
        goto err;
    if (kv_frame_decode(in, len, sizeof(in), 1, &f) != (ssize_t)len || f.request_id != id ||
        f.opcode != KV_OP_ATTACH) {
        rc = KV_EPROTO;
        goto err;
    }
    {
        struct kv_response r;

        fill_response(&r, &f);
        record_answer(c, &r);
    }
    if (f.status != KV_ST_OK) {
        rc = KV_ESTATUS;
        goto err;
    }
    for (int i = 0; i < 8 && f.body_len == 8; i++)
        size |= (uint64_t)f.body[i] << (8 * i);
    if (nfds != 3 || f.body_len != 8 || size < KV_RING_HDR || size > (3ull << 30) ||
        !(fcntl(fds[0], F_GET_SEALS) & F_SEAL_SHRINK)) {
        rc = KV_EPROTO;
        goto err;
    }
    map = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
    if (map == MAP_FAILED) {
        rc = KV_ENOMEM;
        goto err;
    }
    if (kv_ring_layout_check(map, (size_t)size, &rq, &rs) != 0) {
        rc = KV_EPROTO;
        goto err;
    }
    close(fds[0]);
    c->map = map;
    c->map_size = (size_t)size;
    c->req_efd = fds[1];
    c->resp_efd = fds[2];
    fcntl(c->req_efd, F_SETFL, O_NONBLOCK);
    fcntl(c->resp_efd, F_SETFL, O_NONBLOCK);
    kv_ring_views(map, &c->req, &c->resp);
    c->spin_ns = (spin ? (unsigned)atoi(spin) : 50) * 1000u;
    spin = getenv("KV_CLIENT_SPIN_YIELD_US");
    c->yield_ns = (spin ? (unsigned)atoi(spin) : 10) * 1000u;
    return 0;

err:
    if (map != MAP_FAILED)
        munmap(map, (size_t)size);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    return rc;
}

bool kv_client_attached(const struct kv_client *c)
{
    return c->map != NULL;
}

void *kv_client_ring_map(const struct kv_client *c, size_t *size, int *wake_fd)
{
    if (size)
        *size = c->map_size;
    if (wake_fd)
        *wake_fd = c->req_efd;
    return c->map;
}

int kv_client_get_ref(struct kv_client *c, const void *key, size_t klen, const uint8_t **value,
                      size_t *vlen, uint64_t *version)
{
    Kv__GetRequest req = KV__GET_REQUEST__INIT;
    uint64_t id = c->next_id++, ver = 0;
    struct kv_response r;
    const uint8_t *val = NULL, *p, *end;
    size_t len = 0;
    int rc = check_key(c, key, klen);

    if (rc != 0)
        return rc;
    req.key = bin(key, klen);
    rc = queue_msg(c, KV_OP_GET, id, &req.base);
    if (rc == 0)
        rc = roundtrip(c, KV_OP_GET, id, &r);
    else
        no_answer(c);
    if (rc != 0)
        return rc;
    if (r.status != KV_ST_OK)
        return status_rc(r.status);
    /* GetResponse{bytes value = 1; uint64 version = 2}, read where it lies */
    for (p = r.body, end = r.body + r.body_len; p < end;) {
        uint64_t tag = 0, v = 0;
        unsigned s;

        for (s = 0; p < end && s < 64; s += 7) {
            tag |= (uint64_t)(*p & 0x7f) << s;
            if (!(*p++ & 0x80))
                break;
        }
        for (s = 0; p < end && s < 64; s += 7) {
            v |= (uint64_t)(*p & 0x7f) << s;
            if (!(*p++ & 0x80))
                break;
        }
        if (tag == ((1 << 3) | 2) && v <= (uint64_t)(end - p)) {
            val = p;
            len = (size_t)v;
            p += v;
        } else if (tag == ((2 << 3) | 0)) {
            ver = v;
        } else {
            return KV_EPROTO; /* the server sends nothing else */
        }
    }
    *value = val ? val : (const uint8_t *)"";
    *vlen = len;
    if (version)
        *version = ver;
    return 0;
}

int kv_client_exec(struct kv_client *c, const struct kv_exec_op *ops, size_t n,
                   struct kv_exec_result *results, bool *aborted)
{
    Kv__ExecRequest req = KV__EXEC_REQUEST__INIT;
    Kv__ExecResponse *resp = NULL;
    Kv__ExecSub *subs, **ptrs;
    int rc;

    no_answer(c);
    if ((!ops && n) || (!results && n))
        return KV_EINVAL;
    subs = kv_mem_alloc(KV_MOD_CLIENT, (n ? n : 1) * sizeof(*subs));
    ptrs = kv_mem_alloc(KV_MOD_CLIENT, (n ? n : 1) * sizeof(*ptrs));
    if (!subs || !ptrs) {
        kv_mem_free(KV_MOD_CLIENT, subs);
        kv_mem_free(KV_MOD_CLIENT, ptrs);
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        kv__exec_sub__init(&subs[i]);
        subs[i].opcode = ops[i].opcode;
        subs[i].body = bin(ops[i].body, ops[i].body_len);
        ptrs[i] = &subs[i];
    }
    req.n_subs = n;
    req.subs = ptrs;
    rc = typed_call(c, KV_OP_EXEC, &req, &kv__exec_response__descriptor, (void **)&resp);
    kv_mem_free(KV_MOD_CLIENT, subs);
    kv_mem_free(KV_MOD_CLIENT, ptrs);
    if (rc != 0)
        return rc;
    if (aborted)
        *aborted = resp->aborted;
    if (!resp->aborted && resp->n_results != n) {
        pb_release(resp);
        return KV_EPROTO;
    }
    for (size_t i = 0; i < n; i++) {
        results[i].status = 0;
        results[i].body = NULL;
        results[i].body_len = 0;
    }
    for (size_t i = 0; !resp->aborted && i < n; i++) {
        results[i].status = (uint16_t)resp->results[i]->status;
        results[i].body = dup_bytes(resp->results[i]->body.data, resp->results[i]->body.len);
        results[i].body_len = resp->results[i]->body.len;
        if (!results[i].body) {
            kv_client_exec_free(results, i);
            pb_release(resp);
            return KV_ENOMEM;
        }
    }
    pb_release(resp);
    return 0;
}

void kv_client_exec_free(struct kv_exec_result *results, size_t n)
{
    for (size_t i = 0; results && i < n; i++) {
        kv_mem_free(KV_MOD_CLIENT, results[i].body);
        results[i].body = NULL;
    }
}

int kv_client_watch(struct kv_client *c, const struct kv_bytes *keys, size_t n, bool unwatch,
                    uint64_t *watched)
{
    Kv__WatchRequest req = KV__WATCH_REQUEST__INIT;
    Kv__WatchResponse *resp = NULL;
    ProtobufCBinaryData *k;
    int rc;

    no_answer(c);
    if (!keys && n)
        return KV_EINVAL;
    k = kv_mem_alloc(KV_MOD_CLIENT, (n ? n : 1) * sizeof(*k));
    if (!k)
        return KV_ENOMEM;
    for (size_t i = 0; i < n; i++)
        k[i] = bin(keys[i].data, keys[i].len);
    req.n_keys = n;
    req.keys = k;
    req.unwatch = unwatch;
    rc = typed_call(c, KV_OP_WATCH, &req, &kv__watch_response__descriptor, (void **)&resp);
    kv_mem_free(KV_MOD_CLIENT, k);
    if (rc != 0)
        return rc;
    if (watched)
        *watched = resp->watched;
    pb_release(resp);
    return 0;
}
