/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_v1.h -- a reader of layout-1 store segments (the layout of every release up
 * to commit 7db7ef5), for upgrading one in place: the new release walks the old segment
 * with kv_shm_v1_read and copies every item into a segment of its own layout.
 *
 * Self-contained on purpose: it carries frozen copies of everything it reads of layout 1
 * and depends on nothing of the current store but kv_shm_crc32c(), so it keeps reading
 * layout 1 whatever the store's own layout becomes. It reads only, allocates only its
 * bookkeeping (libc malloc, freed before it returns) and needs neither the key hash nor
 * the index state.
 *
 * Nothing in the segment is trusted: every offset, length, link and directory entry is
 * bounds-checked before it is used, every item's checksum is verified before it is
 * reported, chains are cut where they revisit a line. Damage is counted, never followed;
 * a damaged segment yields fewer items, never a wrong one and never a crash. */
#ifndef SHM_V1_H
#define SHM_V1_H

#include <stddef.h>
#include <stdint.h>

/* One item as the segment holds it. key and val point into the mapping (valid while it
 * is mapped and unchanged); the item's checksum covered every byte of them. */
struct kv_shm_v1_item {
    const void *key; /* borrowed: klen >= 1 bytes in the mapping */
    size_t klen;
    const void *val; /* borrowed: vlen bytes in the mapping (vlen may be 0) */
    size_t vlen;
    uint64_t version;  /* as the store handed it out: unique and increasing per segment */
    int64_t expire_ms; /* absolute CLOCK_REALTIME ms; 0 = never. Expired items are reported
                        * too: dropping them is the caller's choice */
};

/* What a walk saw. The bad_* counts are slot words, links or directory entries refused. */
struct kv_shm_v1_counts {
    uint64_t items;        /* reported to fn (fn's calls, including one that stopped the walk) */
    uint64_t bad_offset;   /* slot names no item start: out of the data area, not a chunk start
                            * of the item's class, item larger than its chunk or run, or in a
                            * page already claimed by another class, a large run, the index
                            * or an overflow line */
    uint64_t bad_magic;    /* no item header there: wrong magic (e.g. a freed chunk), class
                            * out of range or an empty key */
    uint64_t bad_crc;      /* item checksum mismatch */
    uint64_t bad_link;     /* damaged or repeated overflow link (a cycle is cut there),
                            * damaged or repeated directory entry, or a bucket page the index
                            * state needs that the directory does not name */
    uint64_t duplicates;   /* slot words naming an item already reported (a split or a
                            * recovery was killed midway): not reported again, not damage */
    uint64_t last_version; /* the larger of the segment's version counter and the highest
                            * version reported: the new segment's counter starts above it */
    int clean;             /* 1: the segment was closed cleanly; 0: its server died */
};

/* 1 when base[0..size) starts with a layout-1 header: magic, layout version 1, header
 * checksum, size equal to the header's, and a geometry (directory, page map and data area
 * inside the segment) that can be walked safely; 0 otherwise. Reads only the header. */
int kv_shm_v1_probe(const void *base, size_t size);

/* Calls fn(ctx, it) once per sound item reachable from the index of the layout-1
 * segment mapped at base[0..size), clean or crashed: every bucket of every bucket page
 * the directory names (active or not), their overflow chains, items in slab chunks and
 * large page runs. When the directory is damaged (a bad or repeated entry, or none for a
 * page the index state needs), the pages the page map still marks as bucket pages are
 * walked too, after the others and unless those reached an item or line in them. Each item offset
 * is reported at most once; two different items may carry the same key after damage: both are
 * reported, the caller keeps the higher version. Order: by bucket page, then bucket, then chain.
 *
 * Returns 0 when the walk is complete, fn's return value as soon as fn returns non-zero
 * (the walk stops there), KV_EINVAL when kv_shm_v1_probe(base, size) is 0, KV_ENOMEM
 * when its bookkeeping (size / 256 bytes plus one byte per page) cannot be allocated.
 * *counts (may be NULL) is written in every case but KV_EINVAL and KV_ENOMEM. */
int kv_shm_v1_read(const void *base, size_t size,
                   int (*fn)(void *ctx, const struct kv_shm_v1_item *it), void *ctx,
                   struct kv_shm_v1_counts *counts);

#endif
