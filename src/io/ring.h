/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/ring.h -- the shared-memory rings of an attached client (docs/PROTOCOL.md,
 * section 5): layout, single-producer/single-consumer byte streams, bounds checks and the
 * park/wake handshake. Pure: no system call, no allocation, so it is fuzzed as it is
 * (fuzz/fuzz_ring.c) and shared by the server and the client library.
 *
 * One mapping (a memfd) holds a 4 KiB header and two rings: the request ring (the client
 * produces, the server consumes) and the response ring (the server produces, the client
 * consumes). Indices are free-running u64 byte counts; the position of index i is
 * i & (cap - 1); a ring is empty when head == tail and full when head - tail == cap.
 *
 * Each side keeps its own indices in private memory and only publishes them to the
 * mapping: an index is never read back from shared memory by the side that owns it. The
 * other side's index is read once per look, with acquire order, and checked against the
 * private ones: a value the peer could not legitimately have written is KV_EPROTO. */
#ifndef KV_RING_H
#define KV_RING_H

#include <stddef.h>
#include <stdint.h>

#define KV_RING_MAGIC 0x474e5252u /* "RRNG" little-endian */
#define KV_RING_VERSION 1
#define KV_RING_HDR 4096u         /* header bytes; the request ring follows it */
#define KV_RING_MIN (4u << 10)    /* smallest ring capacity */
#define KV_RING_MAX (1u << 30)    /* largest ring capacity */

/* Offsets in the header (all little-endian; every field below 64 is written once by the
 * server before the memfd is passed, then only read). */
#define KV_RING_OFF_MAGIC 0       /* u32 */
#define KV_RING_OFF_VERSION 4     /* u32 */
#define KV_RING_OFF_SIZE 8        /* u64: bytes of the whole mapping */
#define KV_RING_OFF_REQ_CAP 16    /* u32: request ring capacity (power of two) */
#define KV_RING_OFF_RESP_CAP 20   /* u32: response ring capacity (power of two) */
#define KV_RING_OFF_REQ_DATA 24   /* u32: offset of the request ring's bytes (4096) */
#define KV_RING_OFF_RESP_DATA 28  /* u32: offset of the response ring's bytes */
/* Control words, each alone on a 64-byte cache line. */
#define KV_RING_OFF_REQ_HEAD 128   /* u64, client writes */
#define KV_RING_OFF_REQ_TAIL 192   /* u64, server writes */
#define KV_RING_OFF_REQ_PARKED 256 /* u32, server writes: the server sleeps on req eventfd */
#define KV_RING_OFF_REQ_WANT 320   /* u32, client writes: the client waits for space */
#define KV_RING_OFF_RESP_HEAD 384  /* u64, server writes */
#define KV_RING_OFF_RESP_TAIL 448  /* u64, client writes */
#define KV_RING_OFF_RESP_PARKED 512 /* u32, client writes: the client sleeps on resp eventfd */
#define KV_RING_OFF_RESP_WANT 576  /* u32, server writes: the server waits for space */

/* One side's view of one ring. */
struct kv_ring {
    uint8_t *data;          /* borrowed: the ring's cap bytes in the mapping */
    uint64_t cap, mask;
    uint64_t *head;         /* borrowed: in the mapping */
    uint64_t *tail;         /* borrowed: in the mapping */
    uint32_t *parked;       /* borrowed: the consumer's parked flag */
    uint32_t *want;         /* borrowed: the producer's waiting-for-space flag */
    /* private: */
    uint64_t pos;           /* producer: head written so far (published or not);
                             * consumer: tail released so far */
    uint64_t rd;            /* consumer: bytes read so far (rd - pos are read, not released) */
};

/* The mapping's total size for these capacities. */
size_t kv_ring_map_size(uint32_t req_cap, uint32_t resp_cap);
/* Rounds n up to a power of two within [KV_RING_MIN, KV_RING_MAX] (0 = KV_RING_MIN). */
uint32_t kv_ring_cap_round(uint64_t n);
/* Server: writes a fresh header into map (size bytes, zeroed by the caller). */
void kv_ring_layout_init(uint8_t *map, size_t size, uint32_t req_cap, uint32_t resp_cap);
/* Client: checks a received header against the mapping's actual size; 0 and the two
 * capacities, or KV_EPROTO. */
int kv_ring_layout_check(const uint8_t *map, size_t size, uint32_t *req_cap, uint32_t *resp_cap);
/* Fills the views of both rings of a fresh mapping (every index 0); each side then uses
 * the producer half of one view and the consumer half of the other. */
void kv_ring_views(uint8_t *map, struct kv_ring *req, struct kv_ring *resp);

/* ---- producer ---------------------------------------------------------------------- */
/* Free bytes, or KV_EPROTO when the consumer's tail is impossible (ahead of the head, or
 * more than cap behind it). */
int64_t kv_ring_space(struct kv_ring *r);
/* Copies n bytes (n <= space) at the private head, wrapping; not yet visible. */
void kv_ring_write(struct kv_ring *r, const void *src, size_t n);
/* Makes everything written visible (release store of head), then a full fence; returns 1
 * when the consumer is parked and must be woken (its eventfd written). */
int kv_ring_publish(struct kv_ring *r);
/* Marks the producer as waiting for space (then fence); returns the space seen after the
 * mark (> 0: do not sleep, call kv_ring_unwant), or KV_EPROTO. */
int64_t kv_ring_want_space(struct kv_ring *r);
void kv_ring_unwant(struct kv_ring *r);

/* ---- consumer ---------------------------------------------------------------------- */
/* Bytes published and not yet read, or KV_EPROTO when the producer's head is impossible
 * (behind what was read, or more than cap ahead of the released tail). */
int64_t kv_ring_avail(struct kv_ring *r);
/* The contiguous bytes at read offset off (from rd) up to the wrap: *p, and their count. */
size_t kv_ring_contig(const struct kv_ring *r, uint64_t off, const uint8_t **p);
/* Copies n bytes at read offset off into dst, wrapping (the caller checked avail). */
void kv_ring_peek(const struct kv_ring *r, uint64_t off, void *dst, size_t n);
/* Advances the read cursor by n (<= avail). */
static inline void kv_ring_read(struct kv_ring *r, size_t n)
{
    r->rd += n;
}
/* Releases the space up to index upto (pos <= upto <= rd) to the producer (release store
 * of tail, then a full fence); returns 1 when the producer waits for space and must be
 * woken. */
int kv_ring_release(struct kv_ring *r, uint64_t upto);
/* Sets the parked flag, full fence, and re-checks: returns the bytes available after the
 * flag is visible (> 0: do not sleep, call kv_ring_unpark), or KV_EPROTO. */
int64_t kv_ring_park(struct kv_ring *r);
void kv_ring_unpark(struct kv_ring *r);

/* ---- frames in a ring ------------------------------------------------------------------ */
/* Where the next frame of a consumer's stream stands. */
struct kv_ring_frame {
    uint64_t total;         /* bytes of the whole frame (header + body + crc), once known */
    const uint8_t *in_place;/* whole and contiguous: the frame in the ring, else NULL */
};

/* Looks at the frame at the read cursor without consuming anything:
 *   1         whole: f->total bytes are available; f->in_place set when they do not wrap
 *   0         not whole yet (f->total is 0 until the 24 header bytes are in)
 *   negative  the header is bad: the KV_E* of kv_frame_decode (EMAGIC, EPROTO, ETOOBIG),
 *             with *hdr filled for an answer when it is not EMAGIC; or KV_EPROTO for
 *             impossible indices.
 * hdr receives the 24 header bytes whenever they are in. */
int kv_ring_frame_peek(struct kv_ring *r, size_t max_body, int expect_response,
                       struct kv_ring_frame *f, uint8_t hdr[24]);

#endif
