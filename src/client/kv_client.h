/* src/client/kv_client.h -- the libevkv C client library.
 *
 * A blocking client over one TCP connection speaking PROTOCOL.md frames:
 * connect with a timeout, synchronous calls, and a pipelined interface
 * (queue many requests, flush once, receive responses by request_id). It
 * never aborts the caller: every function returns 0 or a negative KV_E*
 * code, and a server answer that is not OK comes back as KV_ESTATUS with
 * the status in the response. Not thread-safe: one client per thread. */
#ifndef KV_CLIENT_H
#define KV_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"

struct kv_client;

/* A response as received. body points into the client's receive buffer and
 * stays valid until the next receive call on the same client. */
struct kv_response {
    uint16_t opcode;
    uint16_t status;        /* KV_ST_* */
    uint64_t request_id;
    const uint8_t *body;
    uint32_t body_len;
};

/* Connects to host:port (IPv4 address or name) within timeout_ms, which
 * also becomes the timeout of every later send and receive (0 = none). */
int kv_client_connect(const char *host, uint16_t port, int timeout_ms, struct kv_client **out);
void kv_client_close(struct kv_client *c);
int kv_client_fd(const struct kv_client *c);

/* ---- pipelined interface ---------------------------------------------------- */
/* Appends a request frame to the send buffer; nothing is sent until
 * kv_client_flush(). Returns KV_ETOOBIG above the client's max body. */
int kv_client_queue(struct kv_client *c, uint16_t opcode, uint64_t request_id,
                    const void *body, size_t body_len);
/* Sends everything queued. */
int kv_client_flush(struct kv_client *c);
/* Receives the next response frame, whatever its request_id. */
int kv_client_recv(struct kv_client *c, struct kv_response *r);
/* Sends raw bytes as they are (tests of malformed input). */
int kv_client_send_raw(struct kv_client *c, const void *buf, size_t len);

/* ---- synchronous calls ----------------------------------------------------- */
/* Sends one request and waits for its response (other responses arriving in
 * between are an error: use the pipelined interface for those). Returns 0
 * when the status is OK, KV_ESTATUS when not (r filled either way). */
int kv_client_call(struct kv_client *c, uint16_t opcode, const void *body, size_t body_len,
                   struct kv_response *r);
/* PING with a payload; the echo must match. */
int kv_client_ping(struct kv_client *c, const void *payload, size_t len);

#endif
