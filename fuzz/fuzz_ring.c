/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* fuzz/fuzz_ring.c -- libFuzzer harness for the ring reader and writer (src/io/ring.c) as
 * the server drives them against a hostile client (src/io/ring_conn.c, io.c
 * kv_io_conn_parse_ring).
 *
 * The input is the client's side of one mapping: byte 0 picks the capacities (4 or 8
 * KiB), bytes 1-2 where the indices start (so frames wrap anywhere), then events of 9
 * bytes (an op and a u64 the client writes): set the request head to any value, or to
 * the reader plus an offset; set the response tail to any value, or near the writer;
 * write bytes (from the rest of the input) into the request ring, as a client may,
 * valid frames or not; or let the server take a step (read frames: in place when whole
 * and contiguous, copied across the wrap, assembled piecewise above the capacity;
 * release; write an answer of any size into the response ring if it has room).
 *
 * Checked: no read or write outside the mapping (it is a heap block of exactly its size,
 * so ASan sees one byte past it); an index the client could not have written is always
 * refused (KV_EPROTO), never used; every frame handed on lies inside the ring or the
 * copy; avail and space never exceed the capacity; the private indices only move
 * forward and stay within cap of each other. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "kv_err.h"
#include "ring.h"

#define CHECK(x)                                                                           \
    do {                                                                                   \
        if (!(x))                                                                          \
            __builtin_trap();                                                              \
    } while (0)

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, 8);
    return v;
}

struct server {
    struct kv_ring req, resp;
    uint8_t *asm_buf;   /* a frame being assembled (exact size) */
    size_t asm_len, asm_total;
    int dead;           /* the server closed this client */
};

/* One read step of the server: as many frames as are whole, then release. */
static void server_read(struct server *s)
{
    for (int guard = 0; guard < 64 && !s->dead; guard++) {
        struct kv_ring_frame rf;
        uint8_t hdr[KV_FRAME_HDR];
        struct kv_frame f;
        int64_t avail = kv_ring_avail(&s->req);
        int rc;

        if (avail < 0) {
            s->dead = 1;
            return;
        }
        CHECK((uint64_t)avail <= s->req.cap);
        if (s->asm_buf) { /* piecewise, as ring_assemble */
            size_t take = (size_t)avail < s->asm_total - s->asm_len ? (size_t)avail
                                                                   : s->asm_total - s->asm_len;

            if (take == 0)
                return;
            kv_ring_peek(&s->req, 0, s->asm_buf + s->asm_len, take);
            kv_ring_read(&s->req, take);
            kv_ring_release(&s->req, s->req.rd);
            s->asm_len += take;
            if (s->asm_len == s->asm_total) {
                ssize_t n = kv_frame_decode(s->asm_buf, s->asm_total, 1 << 20, 0, &f);

                CHECK(n == KV_ECRC || n == (ssize_t)s->asm_total);
                if (n > 0)
                    CHECK(f.body >= s->asm_buf && f.body + f.body_len <= s->asm_buf + n);
                free(s->asm_buf);
                s->asm_buf = NULL;
                if (n < 0)
                    s->dead = 1;
            }
            continue;
        }
        rc = kv_ring_frame_peek(&s->req, 1 << 20, 0, &rf, hdr);
        if (rc < 0) {
            s->dead = 1; /* answered (or not) and closed */
            return;
        }
        if (rc == 0) {
            if (rf.total > s->req.cap) { /* never whole in the ring */
                s->asm_total = (size_t)rf.total;
                s->asm_len = 0;
                s->asm_buf = malloc(s->asm_total);
                continue;
            }
            return;
        }
        CHECK(rf.total >= KV_FRAME_OVERHEAD && rf.total <= (uint64_t)avail);
        if (rf.in_place) {
            ssize_t n = kv_frame_decode(rf.in_place, rf.total, 1 << 20, 0, &f);

            CHECK(rf.in_place >= s->req.data && rf.in_place + rf.total <= s->req.data + s->req.cap);
            CHECK(n == KV_ECRC || n == (ssize_t)rf.total);
            if (n < 0) {
                s->dead = 1;
                return;
            }
            CHECK(f.body + f.body_len <= s->req.data + s->req.cap);
        } else {
            uint8_t *copy = malloc(rf.total);
            ssize_t n;

            kv_ring_peek(&s->req, 0, copy, rf.total);
            n = kv_frame_decode(copy, rf.total, 1 << 20, 0, &f);
            free(copy);
            CHECK(n == KV_ECRC || n == (ssize_t)rf.total);
            if (n < 0) {
                s->dead = 1;
                return;
            }
        }
        kv_ring_read(&s->req, rf.total);
        kv_ring_release(&s->req, s->req.rd);
        CHECK(s->req.rd - s->req.pos <= s->req.cap);
    }
}

/* One write step: an answer of len bytes if the ring has room. */
static void server_write(struct server *s, size_t len)
{
    static uint8_t junk[9000];
    int64_t space = kv_ring_space(&s->resp);

    if (space < 0) {
        s->dead = 1;
        return;
    }
    CHECK((uint64_t)space <= s->resp.cap);
    if (len > sizeof(junk))
        len = sizeof(junk);
    if ((uint64_t)space >= len) {
        kv_ring_write(&s->resp, junk, len);
        kv_ring_publish(&s->resp);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t cap;
    size_t msize, at;
    uint8_t *map;
    struct server s = {0};
    struct kv_ring cli_req, cli_resp; /* the client's producer view (writes bytes) */
    uint64_t start;

    if (size < 3)
        return 0;
    cap = data[0] & 1 ? 8192 : 4096;
    msize = kv_ring_map_size(cap, cap);
    map = calloc(1, msize);
    kv_ring_layout_init(map, msize, cap, cap);
    kv_ring_views(map, &s.req, &s.resp);
    kv_ring_views(map, &cli_req, &cli_resp);
    /* start every index at the same arbitrary point: wraps fall anywhere */
    start = ((uint64_t)data[1] << 8 | data[2]) * 37 + (data[0] >> 1) * (1ull << 40);
    s.req.pos = s.req.rd = s.resp.pos = s.resp.rd = start;
    cli_req.pos = start;
    *s.req.head = *s.req.tail = *s.resp.head = *s.resp.tail = start;
    for (at = 3; at + 9 <= size && !s.dead; at += 9) {
        uint8_t op = data[at];
        uint64_t v = get64(data + at + 1);

        switch (op % 6) {
        case 0: /* any head at all */
            __atomic_store_n(s.req.head, v, __ATOMIC_RELEASE);
            break;
        case 1: /* a head near the reader, often valid */
            __atomic_store_n(s.req.head, s.req.rd + v % (2 * (uint64_t)cap + 1) - cap / 2,
                             __ATOMIC_RELEASE);
            break;
        case 2: /* any response tail */
            __atomic_store_n(s.resp.tail, v, __ATOMIC_RELEASE);
            break;
        case 3: /* a tail near the writer, often valid */
            __atomic_store_n(s.resp.tail, s.resp.pos - v % (2 * (uint64_t)cap + 1) + cap,
                             __ATOMIC_RELEASE);
            break;
        case 4: { /* the client writes bytes of the input at its own head, wrapping */
            size_t n = (size_t)(v % 4096), left = size - (at + 9);

            if (n > left)
                n = left;
            if (n > cap)
                n = cap;
            cli_req.pos = *s.req.head; /* wherever the client says it stands */
            kv_ring_write(&cli_req, data + at + 9, n);
            __atomic_store_n(s.req.head, cli_req.pos, __ATOMIC_RELEASE);
            at += n; /* those bytes were data, not events */
            break;
        }
        default:
            server_read(&s);
            if (!s.dead)
                server_write(&s, (size_t)(v % 9000));
            break;
        }
    }
    if (!s.dead)
        server_read(&s);
    free(s.asm_buf);
    free(map);
    return 0;
}
