/* src/client/client.c -- the blocking client over one connection (see
 * kv_client.h). Buffers are KV_MOD_CLIENT memory that grows to the largest
 * frame seen; each response is decoded in place. */
#include "kv_client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fcntl.h>

#include "kv_err.h"
#include "kv_mem.h"

#define KV_CLIENT_MAX_BODY (64u << 20)

struct kv_client {
    int fd;                /* owned */
    int timeout_ms;        /* 0 = none */
    uint64_t next_id;
    uint8_t *out;          /* owned: queued request frames */
    size_t out_len, out_cap;
    uint8_t *in;           /* owned: received bytes */
    size_t in_len, in_off, in_cap;
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

int kv_client_connect(const char *host, uint16_t port, int timeout_ms, struct kv_client **out)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    struct kv_client *c;
    char portstr[8];
    int fd, rc, one = 1, soerr = 0;
    socklen_t sl = sizeof(soerr);

    snprintf(portstr, sizeof(portstr), "%u", port);
    if (getaddrinfo(host, portstr, &hints, &ai) != 0 || !ai)
        return KV_EINVAL;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        return KV_EIO;
    }
    rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (rc != 0 && errno != EINPROGRESS)
        goto err_close;
    if (rc != 0) {
        rc = wait_fd(fd, POLLOUT, timeout_ms);
        if (rc != 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
            if (soerr)
                errno = soerr;
            goto err_close;
        }
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c = kv_mem_calloc(KV_MOD_CLIENT, sizeof(*c));
    if (!c) {
        close(fd);
        return KV_ENOMEM;
    }
    c->fd = fd;
    c->timeout_ms = timeout_ms;
    c->next_id = 1;
    *out = c;
    return 0;

err_close:
    close(fd);
    return rc == KV_ETIMEDOUT ? KV_ETIMEDOUT : KV_EIO;
}

void kv_client_close(struct kv_client *c)
{
    if (!c)
        return;
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

int kv_client_queue(struct kv_client *c, uint16_t opcode, uint64_t request_id,
                    const void *body, size_t body_len)
{
    struct kv_frame f = {.version = KV_FRAME_VERSION, .opcode = opcode,
                         .request_id = request_id, .body_len = (uint32_t)body_len};
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

int kv_client_flush(struct kv_client *c)
{
    int rc = send_all(c, c->out, c->out_len);

    c->out_len = 0;
    return rc;
}

int kv_client_send_raw(struct kv_client *c, const void *buf, size_t len)
{
    return send_all(c, buf, len);
}

int kv_client_recv(struct kv_client *c, struct kv_response *r)
{
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
        size_t need = c->in_len >= KV_FRAME_HDR ? KV_FRAME_OVERHEAD + (size_t)f.body_len
                                                : KV_FRAME_HDR;
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

int kv_client_call(struct kv_client *c, uint16_t opcode, const void *body, size_t body_len,
                   struct kv_response *r)
{
    uint64_t id = c->next_id++;
    int rc = kv_client_queue(c, opcode, id, body, body_len);

    if (rc == 0)
        rc = kv_client_flush(c);
    if (rc == 0)
        rc = kv_client_recv(c, r);
    if (rc != 0)
        return rc;
    if (r->request_id != id)
        return KV_EPROTO;
    return r->status == KV_ST_OK ? 0 : KV_ESTATUS;
}

int kv_client_ping(struct kv_client *c, const void *payload, size_t len)
{
    struct kv_response r;
    int rc = kv_client_call(c, 0, payload, len, &r);

    if (rc != 0)
        return rc;
    if (r.body_len != len || (len && memcmp(r.body, payload, len) != 0))
        return KV_EPROTO;
    return 0;
}
