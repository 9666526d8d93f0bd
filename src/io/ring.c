/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/ring.c -- single-producer/single-consumer byte rings in a shared mapping (see
 * ring.h and docs/PROTOCOL.md section 5).
 *
 * Memory order: a producer writes bytes, then stores head with release; the consumer loads
 * head with acquire before reading the bytes. The consumer stores tail with release after
 * it is done with the bytes; the producer loads tail with acquire before overwriting them.
 * Sleeping is Dekker's handshake: the sleeper stores its flag, full fence, re-reads the
 * index; the waker stores the index, full fence, reads the flag. One of the two always
 * sees the other's store, so a wake-up cannot be lost. */
#include "ring.h"

#include <string.h>

#include "frame.h"
#include "kv_err.h"

static inline uint64_t ld_acq(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, 4);
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return v;
}

size_t kv_ring_map_size(uint32_t req_cap, uint32_t resp_cap)
{
    return (size_t)KV_RING_HDR + req_cap + resp_cap;
}

uint32_t kv_ring_cap_round(uint64_t n)
{
    uint64_t c = KV_RING_MIN;

    if (n > KV_RING_MAX)
        return KV_RING_MAX;
    while (c < n)
        c <<= 1;
    return (uint32_t)c;
}

void kv_ring_layout_init(uint8_t *map, size_t size, uint32_t req_cap, uint32_t resp_cap)
{
    uint32_t v32;
    uint64_t v64 = size;

    v32 = KV_RING_MAGIC;
    memcpy(map + KV_RING_OFF_MAGIC, &v32, 4);
    v32 = KV_RING_VERSION;
    memcpy(map + KV_RING_OFF_VERSION, &v32, 4);
    memcpy(map + KV_RING_OFF_SIZE, &v64, 8);
    memcpy(map + KV_RING_OFF_REQ_CAP, &req_cap, 4);
    memcpy(map + KV_RING_OFF_RESP_CAP, &resp_cap, 4);
    v32 = KV_RING_HDR;
    memcpy(map + KV_RING_OFF_REQ_DATA, &v32, 4);
    v32 = KV_RING_HDR + req_cap;
    memcpy(map + KV_RING_OFF_RESP_DATA, &v32, 4);
}

static int pow2_in_range(uint32_t c)
{
    return c >= KV_RING_MIN && c <= KV_RING_MAX && (c & (c - 1)) == 0;
}

int kv_ring_layout_check(const uint8_t *map, size_t size, uint32_t *req_cap, uint32_t *resp_cap)
{
    uint32_t rq, rs;

    if (size < KV_RING_HDR || get32(map + KV_RING_OFF_MAGIC) != KV_RING_MAGIC ||
        get32(map + KV_RING_OFF_VERSION) != KV_RING_VERSION)
        return KV_EPROTO;
    rq = get32(map + KV_RING_OFF_REQ_CAP);
    rs = get32(map + KV_RING_OFF_RESP_CAP);
    if (!pow2_in_range(rq) || !pow2_in_range(rs) || get64(map + KV_RING_OFF_SIZE) != size ||
        kv_ring_map_size(rq, rs) != size || get32(map + KV_RING_OFF_REQ_DATA) != KV_RING_HDR ||
        get32(map + KV_RING_OFF_RESP_DATA) != KV_RING_HDR + rq)
        return KV_EPROTO;
    *req_cap = rq;
    *resp_cap = rs;
    return 0;
}

static void view(struct kv_ring *r, uint8_t *map, uint32_t data_off, uint32_t cap, size_t head,
                 size_t tail, size_t parked, size_t want)
{
    r->data = map + data_off;
    r->cap = cap;
    r->mask = (uint64_t)cap - 1;
    r->head = (uint64_t *)(void *)(map + head);
    r->tail = (uint64_t *)(void *)(map + tail);
    r->parked = (uint32_t *)(void *)(map + parked);
    r->want = (uint32_t *)(void *)(map + want);
    r->pos = r->rd = 0;
}

void kv_ring_views(uint8_t *map, struct kv_ring *req, struct kv_ring *resp)
{
    uint32_t rq = get32(map + KV_RING_OFF_REQ_CAP), rs = get32(map + KV_RING_OFF_RESP_CAP);

    view(req, map, KV_RING_HDR, rq, KV_RING_OFF_REQ_HEAD, KV_RING_OFF_REQ_TAIL,
         KV_RING_OFF_REQ_PARKED, KV_RING_OFF_REQ_WANT);
    view(resp, map, KV_RING_HDR + rq, rs, KV_RING_OFF_RESP_HEAD, KV_RING_OFF_RESP_TAIL,
         KV_RING_OFF_RESP_PARKED, KV_RING_OFF_RESP_WANT);
}

/* ---- producer ---------------------------------------------------------------------- */
int64_t kv_ring_space(struct kv_ring *r)
{
    uint64_t tail = ld_acq(r->tail), used = r->pos - tail;

    if (used > r->cap) /* the tail is ahead of the head, or too far behind: wraps huge */
        return KV_EPROTO;
    return (int64_t)(r->cap - used);
}

void kv_ring_write(struct kv_ring *r, const void *src, size_t n)
{
    size_t at = (size_t)(r->pos & r->mask), first = r->cap - at < n ? r->cap - at : n;

    memcpy(r->data + at, src, first);
    if (n > first)
        memcpy(r->data, (const uint8_t *)src + first, n - first);
    r->pos += n;
}

int kv_ring_publish(struct kv_ring *r)
{
    __atomic_store_n(r->head, r->pos, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return __atomic_load_n(r->parked, __ATOMIC_RELAXED) != 0;
}

int64_t kv_ring_want_space(struct kv_ring *r)
{
    __atomic_store_n(r->want, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return kv_ring_space(r);
}

void kv_ring_unwant(struct kv_ring *r)
{
    __atomic_store_n(r->want, 0, __ATOMIC_RELAXED);
}

/* ---- consumer ---------------------------------------------------------------------- */
int64_t kv_ring_avail(struct kv_ring *r)
{
    uint64_t head = ld_acq(r->head), ahead = head - r->rd;

    /* rd - pos <= cap always holds (private); head must lie in [rd, pos + cap] */
    if (ahead > r->cap - (r->rd - r->pos))
        return KV_EPROTO;
    return (int64_t)ahead;
}

size_t kv_ring_contig(const struct kv_ring *r, uint64_t off, const uint8_t **p)
{
    size_t at = (size_t)((r->rd + off) & r->mask);

    *p = r->data + at;
    return (size_t)(r->cap - at);
}

void kv_ring_peek(const struct kv_ring *r, uint64_t off, void *dst, size_t n)
{
    size_t at = (size_t)((r->rd + off) & r->mask), first = r->cap - at < n ? r->cap - at : n;

    memcpy(dst, r->data + at, first);
    if (n > first)
        memcpy((uint8_t *)dst + first, r->data, n - first);
}

int kv_ring_release(struct kv_ring *r, uint64_t upto)
{
    r->pos = upto;
    __atomic_store_n(r->tail, upto, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return __atomic_load_n(r->want, __ATOMIC_RELAXED) != 0;
}

int64_t kv_ring_park(struct kv_ring *r)
{
    __atomic_store_n(r->parked, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return kv_ring_avail(r);
}

void kv_ring_unpark(struct kv_ring *r)
{
    __atomic_store_n(r->parked, 0, __ATOMIC_RELAXED);
}

/* ---- frames ------------------------------------------------------------------------- */
int kv_ring_frame_peek(struct kv_ring *r, size_t max_body, int expect_response,
                       struct kv_ring_frame *f, uint8_t hdr[24])
{
    int64_t avail = kv_ring_avail(r);
    struct kv_frame fr;
    const uint8_t *p;
    ssize_t rc;

    f->total = 0;
    f->in_place = NULL;
    if (avail < 0)
        return (int)avail;
    if (avail < KV_FRAME_HDR) {
        /* a wrong first byte is told at once, as on a socket */
        if (avail > 0) {
            kv_ring_peek(r, 0, hdr, (size_t)avail);
            if (kv_frame_decode(hdr, (size_t)avail, max_body, expect_response, &fr) == KV_EMAGIC)
                return KV_EMAGIC;
        }
        return 0;
    }
    kv_ring_peek(r, 0, hdr, KV_FRAME_HDR);
    rc = kv_frame_decode(hdr, KV_FRAME_HDR, max_body, expect_response, &fr);
    if (rc != KV_EAGAIN && rc <= 0)
        return (int)rc;
    if (rc > 0) /* a header alone cannot be a whole frame (the crc is missing) */
        return KV_EPROTO;
    f->total = KV_FRAME_OVERHEAD + (uint64_t)fr.body_len;
    if ((uint64_t)avail < f->total)
        return 0;
    if (kv_ring_contig(r, 0, &p) >= f->total)
        f->in_place = p;
    return 1;
}
