/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/resp.h -- the RESP2 request parser (Redis protocol); allocates
 * nothing but the caller's argv vector, points into the input.
 *
 * A request is either a multibulk array of bulk strings
 * ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") or an inline command ("GET k\r\n", as
 * typed in telnet). Every count and length is checked against its limit as
 * soon as its digits are in, before anything waits for or stores it. */
#ifndef KV_RESP_H
#define KV_RESP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct kv_slice {
    const uint8_t *p;
    size_t len;
};

struct kv_resp_limits {
    size_t max_args;    /* elements of a multibulk */
    size_t max_bulk;    /* bytes of one bulk string */
    size_t max_request; /* bytes of the whole request */
    size_t max_inline;  /* bytes of an inline request line */
};

/* A growable argv owned by the caller (one per IO thread). */
struct kv_resp_argv {
    struct kv_slice *v; /* owned (KV_MOD_THREAD) */
    size_t cap;
    size_t argc;
};

void kv_resp_argv_fini(struct kv_resp_argv *a);

/* Where the parse of a request that has arrived in part stopped, so that
 * the next call checks only what is new: a request trickled in k pieces
 * costs O(its size) in all, not O(k x its size). Offsets count from the
 * request's first byte, so the caller may move the bytes between calls.
 * Zeroed: nothing pending. One per connection. */
struct kv_resp_resume {
    size_t off;      /* bytes already checked: whole elements of a multibulk, or
                      * an inline line without its newline; 0 = none */
    long long nargs; /* multibulk: elements announced; -1: an inline line */
    long long done;  /* multibulk: elements checked */
};

/* Parses one request from buf[0..len). With st (may be NULL) the parse
 * resumes where the last KV_EAGAIN for the same request stopped; st is
 * zeroed whenever a request completes or the stream is bad. A resumed
 * request is gone over once more from its start when it completes, to fill
 * argv: twice its size in all.
 * Returns the bytes consumed (> 0) with a->argc/a->v filled (pointing into
 * buf; argc may be 0 for an empty inline line, which the caller skips);
 * KV_EAGAIN when the request is not complete, with *need set to a lower
 * bound of its total size when known (else 0); KV_EPROTO or KV_ETOOBIG for
 * a bad stream, with *err set to the reason (static text; the reply is
 * "-ERR Protocol error: <err>" and the connection closes); KV_ENOMEM when
 * argv cannot grow. */
ssize_t kv_resp_parse(const uint8_t *buf, size_t len, const struct kv_resp_limits *lim,
                      struct kv_resp_argv *a, size_t *need, const char **err,
                      struct kv_resp_resume *st);

#endif
