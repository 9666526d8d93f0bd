/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/resp.c -- the RESP2 request parser (see resp.h). */
#include "resp.h"

#include <string.h>

#include "kv_err.h"
#include "kv_mem.h"

void kv_resp_argv_fini(struct kv_resp_argv *a)
{
    kv_mem_free(KV_MOD_THREAD, a->v);
    a->v = NULL;
    a->cap = a->argc = 0;
}

static int push(struct kv_resp_argv *a, const uint8_t *p, size_t len)
{
    if (a->argc == a->cap) {
        size_t ncap = a->cap ? a->cap * 2 : 16;
        struct kv_slice *v = kv_mem_realloc(KV_MOD_THREAD, a->v, ncap * sizeof(*v));

        if (!v)
            return KV_ENOMEM;
        a->v = v;
        a->cap = ncap;
    }
    a->v[a->argc].p = p;
    a->v[a->argc].len = len;
    a->argc++;
    return 0;
}

/* Reads "<prefix><digits>\r\n" at buf[*off]. Returns 0 with *val, KV_EAGAIN,
 * or KV_EPROTO / KV_ETOOBIG with *err = bad (Redis's text for the field:
 * "invalid multibulk length", "invalid bulk length"). The value is checked
 * against max digit by digit, so it never overflows. */
static inline __attribute__((always_inline)) int read_count(const uint8_t *buf, size_t len,
                                                             size_t *off, size_t max, long long *val,
                      int allow_negative, const char *bad, const char **err)
{
    size_t i = *off + 1;
    long long v = 0;
    int neg = 0, digits = 0;

    if (i < len && buf[i] == '-' && allow_negative) {
        neg = 1;
        i++;
    }
    for (; i < len && buf[i] >= '0' && buf[i] <= '9'; i++) {
        v = v * 10 + (buf[i] - '0');
        digits++;
        if ((unsigned long long)v > max || digits > 18) {
            *err = bad;
            return KV_ETOOBIG;
        }
    }
    if (i >= len)
        return KV_EAGAIN;
    if (buf[i] != '\r' || digits == 0) {
        *err = bad;
        return KV_EPROTO;
    }
    if (i + 1 >= len)
        return KV_EAGAIN;
    if (buf[i + 1] != '\n') {
        *err = "expected \\r\\n";
        return KV_EPROTO;
    }
    *off = i + 2;
    *val = neg ? -v : v;
    return 0;
}

/* With st active (st->off != 0) the elements before st->off were checked by
 * an earlier call: go on from there without filling argv. st: may be NULL. */
static ssize_t parse_multibulk(const uint8_t *buf, size_t len, const struct kv_resp_limits *lim,
                               struct kv_resp_argv *a, size_t *need, const char **err,
                               struct kv_resp_resume *st)
{
    size_t off = 0, elem = 0;
    long long n, blen, i = 0;
    int rc, fill = !st || st->off == 0;

    if (!fill) {
        off = st->off;
        n = st->nargs;
        i = st->done;
    } else {
        rc = read_count(buf, len, &off, lim->max_args, &n, 1, "invalid multibulk length", err);
        if (rc != 0)
            return rc;
        if (n <= 0)
            return (ssize_t)off; /* "*0" and "*-1": an empty request, skipped */
    }
    for (; i < n; i++) {
        elem = off;
        if (off >= len)
            goto partial;
        if (buf[off] != '$') {
            /* Redis's text with the byte found, in a thread's own buffer (no allocation) */
            static const char expected[] = "expected '$', got '?'";
            static __thread char got[sizeof(expected)];

            memcpy(got, expected, sizeof(expected));
            got[sizeof(expected) - 3] = buf[off] >= 0x20 && buf[off] < 0x7f ? (char)buf[off] : '?';
            *err = got;
            return KV_EPROTO;
        }
        rc = read_count(buf, len, &off, lim->max_bulk, &blen, 0, "invalid bulk length", err);
        if (rc == KV_EAGAIN)
            goto partial;
        if (rc != 0)
            return rc;
        /* compare before adding: off and blen are both bounded here */
        if ((size_t)blen + 2 > lim->max_request || off > lim->max_request - (size_t)blen - 2) {
            *err = "request larger than --max-body";
            return KV_ETOOBIG;
        }
        if (len - off < (size_t)blen + 2) {
            *need = off + (size_t)blen + 2;
            goto partial;
        }
        if (buf[off + blen] != '\r' || buf[off + blen + 1] != '\n') {
            *err = "bulk string not followed by \\r\\n";
            return KV_EPROTO;
        }
        if (fill && push(a, buf + off, (size_t)blen) != 0)
            return KV_ENOMEM;
        off += (size_t)blen + 2;
    }
    if (!fill) { /* complete: once more from the start, filling argv */
        st->off = 0;
        return parse_multibulk(buf, len, lim, a, need, err, NULL);
    }
    return (ssize_t)off;

partial: /* the next call starts at this element */
    if (st) {
        st->off = elem;
        st->nargs = n;
        st->done = i;
    }
    return KV_EAGAIN;
}

/* An inline command: words split by spaces and tabs; "double quoted"
 * words may hold spaces. */
static ssize_t parse_inline(const uint8_t *buf, size_t len, const struct kv_resp_limits *lim,
                            struct kv_resp_argv *a, const char **err, struct kv_resp_resume *st)
{
    size_t from = st && st->nargs == -1 ? st->off : 0, scan = len < lim->max_inline ? len
                                                                                  : lim->max_inline;
    const uint8_t *nl = from < scan ? memchr(buf + from, '\n', scan - from) : NULL;
    size_t end, i = 0;

    if (!nl) {
        if (len >= lim->max_inline) {
            *err = "too big inline request";
            return KV_ETOOBIG;
        }
        if (st) { /* no newline in buf[0..len): the next call looks past it */
            st->off = len;
            st->nargs = -1;
        }
        return KV_EAGAIN;
    }
    if (st)
        st->off = 0;
    end = (size_t)(nl - buf);
    if (end > 0 && buf[end - 1] == '\r')
        end--;
    while (i < end) {
        size_t start;

        while (i < end && (buf[i] == ' ' || buf[i] == '\t'))
            i++;
        if (i >= end)
            break;
        if (buf[i] == '"') {
            start = ++i;
            while (i < end && buf[i] != '"')
                i++;
            if (i >= end) {
                *err = "unbalanced quotes in request";
                return KV_EPROTO;
            }
            if (i + 1 < end && buf[i + 1] != ' ' && buf[i + 1] != '\t') {
                *err = "unbalanced quotes in request"; /* a closing quote ends a word */
                return KV_EPROTO;
            }
            if (a->argc >= lim->max_args) {
                *err = "too many arguments";
                return KV_ETOOBIG;
            }
            if (push(a, buf + start, i - start) != 0)
                return KV_ENOMEM;
            i++;
            continue;
        }
        start = i;
        while (i < end && buf[i] != ' ' && buf[i] != '\t')
            i++;
        if (a->argc >= lim->max_args) {
            *err = "too many arguments";
            return KV_ETOOBIG;
        }
        if (push(a, buf + start, i - start) != 0)
            return KV_ENOMEM;
    }
    return (ssize_t)(nl - buf) + 1;
}

ssize_t kv_resp_parse(const uint8_t *buf, size_t len, const struct kv_resp_limits *lim,
                      struct kv_resp_argv *a, size_t *need, const char **err,
                      struct kv_resp_resume *st)
{
    ssize_t r;

    *need = 0;
    a->argc = 0;
    if (len == 0)
        return KV_EAGAIN;
    r = buf[0] == '*' ? parse_multibulk(buf, len, lim, a, need, err, st)
                      : parse_inline(buf, len, lim, a, err, st);
    if (st && r != KV_EAGAIN)
        st->off = 0; /* complete, or a bad stream: nothing pending */
    return r;
}
