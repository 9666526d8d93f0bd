/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_v1.c -- reads layout-1 segments for upgrade (shm_v1.h says what and why).
 *
 * The walk mirrors what recovery of layout 1 trusted, without writing anything: a claim
 * per page (free, slab of class c, large run, bucket page) and two bitmaps of 64-byte
 * granules (item starts reported, overflow lines walked). An item is reported only where
 * its page's claim agrees with its class, so two reported items never overlap, and the
 * chunk alignment of a class makes its granule name one offset exactly: the bitmap is
 * exact deduplication at 1 bit per 64 bytes. A line is followed once; a second link to it
 * (a cycle, or two chains sharing it) is cut there. */
#include <stdlib.h>
#include <string.h>

#include "kv_err.h"
#include "shm_v1.h"

/* The one function of the store this file uses (src/shm/shm_util.c): CRC32C. */
uint32_t kv_shm_crc32c(uint32_t crc, const void *buf, size_t len);

/* ---- layout 1, frozen ----------------------------------------------------------------
 * Everything below describes layout 1 as commit 7db7ef5 writes it (src/shm/shm_int.h,
 * shm_segment.c, shm_index.c, shm_alloc.c of that commit) and must never change: it is
 * the format of segments that exist. A new layout gets a reader of its own. */

#define V1_MAGIC       0x4D48535F564B5645ull /* "EVKV_SHM" little-endian */
#define V1_VERSION     1u
#define V1_CLEAN       0x4E41454C43ull /* hdr.clean after a clean close */
#define V1_HDR_SIZE    4096u
#define V1_HDR_STATIC  104u /* the header checksum covers bytes [0, 104), hdr_crc = 0 */
#define V1_PAGE_SHIFT  16
#define V1_PAGE        (1u << V1_PAGE_SHIFT)
#define V1_GRANULE     64u /* smallest chunk; an overflow line is one class-0 chunk */
#define V1_GRANULES    (V1_PAGE / V1_GRANULE) /* per page */
#define V1_SLOTS       7                      /* slot words per bucket / line; word 7 is the link */
#define V1_LINE        64u
#define V1_PAGE_BKTS   (V1_PAGE / V1_LINE) /* buckets per bucket page */
#define V1_INIT_LEVEL  10
#define V1_STRIPES     1024u
#define V1_NCLASSES    29u
#define V1_MAX_CHUNK   32768u /* larger items take a run of whole pages */
#define V1_CLASS_LARGE 0xFFu
#define V1_ITEM_HDR    40u
#define V1_ITEM_MAGIC  0x4D455449u /* "ITEM"; a freed chunk has "FREE" 0x45455246 there */
#define V1_MIN_SIZE    (2u << 20)
#define V1_PM_INDEX    0x20000000u /* page map entry of a bucket page: type 2 << 28 */

/* The segment header (page 0), as far as the reader uses it. The fields after the static
 * part sit behind it at the offsets asserted below on every platform (all are 8 bytes
 * wide or paired into 8); the process-shared mutexes that follow are not read. */
struct v1_hdr {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t hdr_crc;
    uint64_t fingerprint; /* of the writing build (struct sizes, pthread sizes): not read */
    uint64_t size;
    uint64_t created_ms;
    uint64_t stripes_off, classes_off, pmap_off, dir_off, data_off;
    uint64_t n_pages, n_dir;
    uint32_t n_classes, n_stripes;
    uint64_t static_end;
    uint64_t generation;
    int32_t owner_pid;
    uint32_t pad0;
    uint64_t clean;
    uint64_t state; /* L (6 bits) | p (40 bits) << 6 | check (16 bits) << 48 */
    uint64_t version_ctr;
};
_Static_assert(offsetof(struct v1_hdr, n_stripes) == 100, "layout 1 header");
_Static_assert(offsetof(struct v1_hdr, static_end) == V1_HDR_STATIC, "layout 1 header");
_Static_assert(offsetof(struct v1_hdr, clean) == 128, "layout 1 header");
_Static_assert(offsetof(struct v1_hdr, state) == 136, "layout 1 header");
_Static_assert(offsetof(struct v1_hdr, version_ctr) == 144, "layout 1 header");

/* An item: 40-byte header, then key, then value. Small items sit at a chunk start of
 * their class's slab page, large ones (header + key + value > V1_MAX_CHUNK) at the start
 * of a run of ceil(size / V1_PAGE) whole pages. */
struct v1_item {
    uint32_t crc;   /* crc32c of bytes [8, V1_ITEM_HDR + klen + vlen) */
    uint32_t atime; /* not checksummed */
    uint32_t magic; /* V1_ITEM_MAGIC */
    uint8_t cls;    /* size class, or V1_CLASS_LARGE */
    uint8_t flags;
    uint16_t pad;
    uint64_t version;
    int64_t expire_ms;
    uint32_t klen, vlen;
};
_Static_assert(sizeof(struct v1_item) == V1_ITEM_HDR, "layout 1 item");

/* Chunk sizes of classes 0..28 (64, then x1.25 rounded up to 8, capped at 32768). */
static const uint32_t v1_chunk[V1_NCLASSES] = {
    64,   80,   104,  136,  176,  224,  280,  352,   440,   552,   696,   872,   1096,  1376,  1720,
    2152, 2696, 3376, 4224, 5280, 6600, 8256, 10320, 12904, 16136, 20176, 25224, 31536, 32768,
};

/* The mixer behind the check bits of links, directory entries and the state word. */
static uint64_t v1_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* slot word: offset / 8 (40 bits) | class (8 bits) << 40 | key-hash tag (16 bits) << 48;
 * 0 = empty. Only the offset is used: the class is taken from the item itself. */
static uint64_t v1_word_off(uint64_t w)
{
    return (w & 0xFFFFFFFFFFull) << 3;
}

/* link word: line offset (48 bits) | (mix64(off ^ 0x11AE) >> 48) << 48; 0 = end */
static int v1_link_ok(uint64_t w, uint64_t *off)
{
    *off = w & 0xFFFFFFFFFFFFull;
    return (w >> 48) == (v1_mix64(*off ^ 0x11AEull) >> 48);
}

/* directory entry i (bucket page of buckets [i * 1024, +1024)):
 * (page + 1) (32 bits) | (uint32_t)mix64(page ^ 0xD1D1) << 32; 0 = none */
static int v1_dir_ok(uint64_t e, uint64_t n_pages, uint64_t *pi)
{
    uint64_t v = e & 0xFFFFFFFFull;
    if (v == 0 || v > n_pages || (e >> 32) != (uint32_t)v1_mix64((v - 1) ^ 0xD1D1ull))
        return 0;
    *pi = v - 1;
    return 1;
}

/* state word -> active bucket count 2^L + p; 0 when the word is damaged */
static uint64_t v1_state_active(uint64_t w)
{
    uint64_t v = w & 0xFFFFFFFFFFFFull;
    unsigned l = (unsigned)(v & 63);
    uint64_t p = v >> 6;
    if ((w >> 48) != (v1_mix64(v ^ 0x57A7E5ull) >> 48) || l < V1_INIT_LEVEL || l > 38 ||
        p >= (1ull << l))
        return 0;
    return (1ull << l) + p;
}

/* ---- the walk ------------------------------------------------------------------------- */

enum { CL_FREE = 0, /* 1 + c: slab of class c */ CL_LARGE = 0xFC, CL_LCONT, CL_INDEX };

struct v1_walk {
    const uint8_t *base; /* borrowed: the mapping */
    uint64_t data_off, data_end, n_pages;
    uint8_t *claim;  /* owned: n_pages claims, CL_* */
    uint64_t *used;  /* owned: granules where a reported item starts */
    uint64_t *lines; /* owned: granules of overflow lines walked */
    int (*fn)(void *ctx, const struct kv_shm_v1_item *it);
    void *ctx;
    struct kv_shm_v1_counts c;
};

static uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static int bit_get(const uint64_t *bm, uint64_t g)
{
    return (bm[g / 64] >> (g % 64)) & 1;
}

static void bit_set(uint64_t *bm, uint64_t g)
{
    bm[g / 64] |= 1ull << (g % 64);
}

/* Validates, claims and reports the item slot word w names. Returns fn's value or 0. */
static int walk_item(struct v1_walk *wk, uint64_t w)
{
    uint64_t off = v1_word_off(w);
    struct v1_item it;
    if (off < wk->data_off || off + V1_ITEM_HDR > wk->data_end) {
        wk->c.bad_offset++;
        return 0;
    }
    memcpy(&it, wk->base + off, sizeof(it));
    uint64_t pi = (off - wk->data_off) >> V1_PAGE_SHIFT;
    uint64_t in = (off - wk->data_off) & (V1_PAGE - 1);
    uint64_t g = (off - wk->data_off) / V1_GRANULE;
    uint64_t size = V1_ITEM_HDR + (uint64_t)it.klen + it.vlen;
    if (it.magic != V1_ITEM_MAGIC || it.klen == 0 ||
        (it.cls != V1_CLASS_LARGE && it.cls >= V1_NCLASSES)) {
        wk->c.bad_magic++;
        return 0;
    }
    if (it.cls == V1_CLASS_LARGE) {
        uint64_t n = (size + V1_PAGE - 1) >> V1_PAGE_SHIFT;
        if (in || size <= V1_MAX_CHUNK || n > wk->n_pages - pi) {
            wk->c.bad_offset++;
            return 0;
        }
        if (wk->claim[pi] == CL_LARGE && bit_get(wk->used, g)) {
            wk->c.duplicates++; /* same start, same header: the same run */
            return 0;
        }
        for (uint64_t k = 0; k < n; k++) {
            if (wk->claim[pi + k] != CL_FREE) {
                wk->c.bad_offset++;
                return 0;
            }
        }
    } else {
        uint32_t cs = v1_chunk[it.cls];
        if (in % cs || in / cs >= V1_PAGE / cs || size > cs || bit_get(wk->lines, g) ||
            (wk->claim[pi] != CL_FREE && wk->claim[pi] != 1 + it.cls)) {
            wk->c.bad_offset++;
            return 0;
        }
        if (bit_get(wk->used, g)) {
            wk->c.duplicates++; /* chunks of >= 64 bytes: one start per granule */
            return 0;
        }
    }
    if (kv_shm_crc32c(0, wk->base + off + 8, size - 8) != it.crc) {
        wk->c.bad_crc++;
        return 0;
    }
    if (it.cls == V1_CLASS_LARGE) {
        uint64_t n = (size + V1_PAGE - 1) >> V1_PAGE_SHIFT;
        wk->claim[pi] = CL_LARGE;
        for (uint64_t k = 1; k < n; k++)
            wk->claim[pi + k] = CL_LCONT;
    } else {
        wk->claim[pi] = (uint8_t)(1 + it.cls);
    }
    bit_set(wk->used, g);
    const uint8_t *key = wk->base + off + V1_ITEM_HDR;
    struct kv_shm_v1_item out = {
        .key = key,
        .klen = it.klen,
        .val = key + it.klen,
        .vlen = it.vlen,
        .version = it.version,
        .expire_ms = it.expire_ms,
    };
    wk->c.items++;
    if (it.version > wk->c.last_version)
        wk->c.last_version = it.version;
    return wk->fn(wk->ctx, &out);
}

/* The bucket at line_off and its overflow chain. Returns fn's value or 0. */
static int walk_bucket(struct v1_walk *wk, uint64_t line_off)
{
    for (;;) {
        const uint8_t *line = wk->base + line_off;
        for (int i = 0; i < V1_SLOTS; i++) {
            uint64_t w = load64(line + 8 * i);
            int rc = w ? walk_item(wk, w) : 0;
            if (rc)
                return rc;
        }
        uint64_t lw = load64(line + 8 * V1_SLOTS), off;
        if (!lw)
            return 0;
        if (!v1_link_ok(lw, &off) || off < wk->data_off || off % V1_LINE ||
            off + V1_LINE > wk->data_end) {
            wk->c.bad_link++;
            return 0;
        }
        uint64_t pi = (off - wk->data_off) >> V1_PAGE_SHIFT;
        uint64_t g = (off - wk->data_off) / V1_GRANULE;
        if ((wk->claim[pi] != CL_FREE && wk->claim[pi] != 1 + 0) || bit_get(wk->lines, g) ||
            bit_get(wk->used, g)) {
            wk->c.bad_link++; /* not a class-0 chunk, or reached before: cut */
            return 0;
        }
        wk->claim[pi] = 1 + 0;
        bit_set(wk->lines, g);
        line_off = off;
    }
}

/* Every bucket of bucket page pi. Returns fn's value or 0. */
static int walk_page(struct v1_walk *wk, uint64_t pi)
{
    uint64_t page = wk->data_off + (pi << V1_PAGE_SHIFT);
    int rc = 0;
    for (uint64_t b = 0; b < V1_PAGE_BKTS && rc == 0; b++)
        rc = walk_bucket(wk, page + b * V1_LINE);
    return rc;
}

int kv_shm_v1_probe(const void *base, size_t size)
{
    struct v1_hdr h;
    uint8_t tmp[V1_HDR_STATIC];
    if (!base || size < V1_MIN_SIZE)
        return 0;
    memcpy(&h, base, sizeof(h));
    if (h.magic != V1_MAGIC || h.layout_version != V1_VERSION || h.size != size)
        return 0;
    memcpy(tmp, base, sizeof(tmp));
    memset(tmp + offsetof(struct v1_hdr, hdr_crc), 0, sizeof(h.hdr_crc));
    if (kv_shm_crc32c(0, tmp, sizeof(tmp)) != h.hdr_crc)
        return 0;
    /* geometry: what the walk reads must lie inside the segment, whatever the platform
     * that wrote it (the offsets before pmap depend on its pthread sizes) */
    if (h.n_classes != V1_NCLASSES || h.n_stripes != V1_STRIPES || h.data_off % V1_PAGE ||
        h.data_off < V1_HDR_SIZE || h.data_off >= size || h.n_pages == 0 ||
        h.n_pages > (size - h.data_off) >> V1_PAGE_SHIFT || h.dir_off % 8 ||
        h.dir_off < V1_HDR_SIZE || h.dir_off > h.data_off ||
        h.n_dir > (h.data_off - h.dir_off) / 8 || h.pmap_off % 4 || h.pmap_off < V1_HDR_SIZE ||
        h.pmap_off > h.data_off || h.n_pages > (h.data_off - h.pmap_off) / 4)
        return 0;
    return 1;
}

int kv_shm_v1_read(const void *base, size_t size,
                   int (*fn)(void *ctx, const struct kv_shm_v1_item *it), void *ctx,
                   struct kv_shm_v1_counts *counts)
{
    if (!fn || !kv_shm_v1_probe(base, size))
        return KV_EINVAL;
    struct v1_hdr h;
    memcpy(&h, base, sizeof(h));
    struct v1_walk wk = {
        .base = base,
        .data_off = h.data_off,
        .data_end = h.data_off + (h.n_pages << V1_PAGE_SHIFT),
        .n_pages = h.n_pages,
        .fn = fn,
        .ctx = ctx,
    };
    size_t bm_words = (size_t)h.n_pages * V1_GRANULES / 64;
    wk.claim = calloc(h.n_pages, 1);
    wk.used = calloc(bm_words, 8);
    wk.lines = calloc(bm_words, 8);
    int rc = KV_ENOMEM;
    if (!wk.claim || !wk.used || !wk.lines)
        goto out_free;
    wk.c.clean = h.clean == V1_CLEAN;
    wk.c.last_version = h.version_ctr;

    /* bucket pages: the ones the directory names, once each */
    const uint8_t *dir = wk.base + h.dir_off;
    int dir_damaged = 0;
    for (uint64_t i = 0; i < h.n_dir; i++) {
        uint64_t e = load64(dir + 8 * i), pi;
        if (!e)
            continue;
        if (!v1_dir_ok(e, h.n_pages, &pi) || wk.claim[pi] == CL_INDEX) {
            wk.c.bad_link++;
            dir_damaged = 1;
            continue;
        }
        wk.claim[pi] = CL_INDEX;
    }
    /* every active bucket has a page; a missing one means a lost directory entry */
    uint64_t active = v1_state_active(h.state);
    if (!active)
        dir_damaged = 1;
    for (uint64_t i = 0; active && i * V1_PAGE_BKTS < active && i < h.n_dir; i++) {
        uint64_t pi;
        if (!v1_dir_ok(load64(dir + 8 * i), h.n_pages, &pi)) {
            if (!load64(dir + 8 * i))
                wk.c.bad_link++; /* a damaged one was counted above */
            dir_damaged = 1;
        }
    }
    rc = 0;
    for (uint64_t pi = 0; pi < h.n_pages && rc == 0; pi++)
        if (wk.claim[pi] == CL_INDEX)
            rc = walk_page(&wk, pi);
    /* then, if the directory lost some, the pages the page map still marks as bucket
     * pages and the walk above found nothing else in: their slots are checked like any
     * other, so a wrong guess costs only counts */
    const uint8_t *pmap = wk.base + h.pmap_off;
    for (uint64_t pi = 0; dir_damaged && pi < h.n_pages && rc == 0; pi++) {
        uint32_t e;
        memcpy(&e, pmap + 4 * pi, 4);
        if (e == V1_PM_INDEX && wk.claim[pi] == CL_FREE) {
            wk.claim[pi] = CL_INDEX;
            rc = walk_page(&wk, pi);
        }
    }
    if (counts)
        *counts = wk.c;
out_free:
    free(wk.claim);
    free(wk.used);
    free(wk.lines);
    return rc;
}
