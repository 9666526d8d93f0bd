/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_int.h -- the segment layout and the internal calls shared by src/shm files.
 *
 * Segment layout (every position is an offset from the mapping's base; nothing in the
 * segment is a pointer):
 *
 *   0            struct shm_hdr (one 4 KiB page)
 *   stripes_off  SHM_STRIPES x struct shm_stripe   (rwlock + key count per stripe)
 *   classes_off  SHM_MAX_CLASSES x struct shm_class (allocator size classes)
 *   pmap_off     n_pages x u32: what each data page holds (derived state, rebuilt by recovery)
 *   pages_off    n_pages x struct shm_page: the allocator's bookkeeping of each page (derived)
 *   dir_off      n_dir x u64: index directory, entry i = page holding buckets [i*1024, +1024)
 *   dir2_off     n_dir x u64: a second copy of the directory (a damaged entry is read here)
 *   hdr2_off     4 KiB: a copy of the header's static fields and, as of the last clean
 *                close or open, its state word (a damaged header is restored from it)
 *   data_off     n_pages pages of SHM_PAGE bytes: slab pages, large-item runs, bucket pages
 *
 * The index is linear hashing: buckets [0, 2^L + p) are active; bucket b < p (or >= 2^L)
 * uses h mod 2^(L+1), the others h mod 2^L. Growing splits bucket p into p and p + 2^L,
 * one bucket at a time. A bucket is one cache line: 7 slot words and a link to an
 * overflow line (a 64-byte chunk of class 0, same shape). A slot word packs the item
 * offset / 8 (40 bits), its class (8 bits) and 16 tag bits of the key hash; 0 is empty.
 *
 * Lock rules (written once, here):
 *   - stripe[h & (SHM_STRIPES-1)].lock (process-shared rwlock) guards every bucket whose
 *     index is congruent to h mod SHM_STRIPES, their overflow lines, and the items those
 *     reference. SHM_STRIPES <= 2^L, so a key's stripe depends on its hash only, and a
 *     split of bucket p touches only stripe p's buckets. Readers take it shared, writers
 *     exclusive. Published items are immutable except atime (relaxed atomic).
 *   - hdr->state (L, p) changes only under split_lock + the exclusive stripe lock of p;
 *     it is read with an atomic load, and the mapping of a key is stable while its stripe
 *     lock is held.
 *   - class[c].lock guards the class's partial-page list, counters, and the shm_page
 *     entries (and free chunks) of the pages the class owns.
 *   - hdr->page_lock guards the free-page stack, pages_free, and the pmap and shm_page
 *     entries of free pages; a page changes owner only under both locks.
 *   - Order: split_lock -> stripe -> class -> page. The allocator never evicts and never
 *     takes a stripe; eviction and compaction (shm_evict.c) run with no lock held and
 *     take one stripe at a time.
 *   - Every lock is re-initialised by the owner at open: a process killed while holding
 *     one leaves nothing behind. */
#ifndef SHM_INT_H
#define SHM_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "kv_shm.h"

#define SHM_MAGIC          0x4D48535F564B5645ull /* "EVKV_SHM" little-endian */
#define SHM_LAYOUT_VERSION 3u /* 3: items carry a database; the header page holds shm_dbs */
#define SHM_LAYOUT_V2      2u /* upgraded in place at open: every item is in database 0 */
#define SHM_CLEAN          0x4E41454C43ull /* "CLEAN" */
#define SHM_HDR_SIZE       4096u
#define SHM_PAGE_SHIFT     16
#define SHM_PAGE           (1u << SHM_PAGE_SHIFT) /* 64 KiB */
#define SHM_STRIPES        1024u                  /* power of two, <= 2^SHM_INIT_LEVEL */
#define SHM_GONE_CELLS     16384u /* WATCH's removal stamps: SHM_STRIPES x 2^k */
#define SHM_INIT_LEVEL     10
#define SHM_SLOTS          7                     /* slot words per bucket / overflow line */
#define SHM_LINE           64u                   /* bytes per bucket / overflow line */
#define SHM_PAGE_BUCKETS   (SHM_PAGE / SHM_LINE) /* 1024 buckets per index page */
#define SHM_LOAD           5                     /* split when keys > buckets * SHM_LOAD */
#define SHM_MAX_CLASSES    KV_SHM_MAX_CLASSES
#define SHM_MIN_CHUNK      64u
#define SHM_MAX_CHUNK      32768u /* larger items take a run of whole pages */
#define SHM_CLASS_LARGE    0xFFu
#define SHM_ITEM_HDR       40u
#define SHM_ITEM_MAGIC     0x4D455449u /* "ITEM" */
#define SHM_FREE_MAGIC     0x45455246u /* "FREE" */
#define SHM_MIN_SIZE       (2u << 20)
#define SHM_BATCH_ROWS     64u      /* multi-key writes in progress at once */
#define SHM_LOG_MAGIC      0x474F4C42u /* "BLOG": a batch's undo log, never indexed */
#define SHM_CHAIN_MAX      100000u /* overflow lines a chain may have; more is taken for a cycle */
/* --sync (shm_sync.c): the atime of a removed item (DEAD) and of one that never was a
 * key's committed state (VOID: a rejected or undone write's new item) while its chunk
 * waits for the next sync (live items take neither value, kv_shm.c), and the class byte
 * of a slot word that a split moved to the new bucket and left in the old one until a
 * sync has completed (no item class has it, so every run-time walker sees an unsound slot
 * and passes over it) */
#define SHM_ATIME_DEAD     0xFFFFFFFFu
#define SHM_ATIME_VOID     0xFFFFFFFEu
#define SHM_CLASS_MOVED    0xFEu

/* pmap entry: type in the top 4 bits */
#define PM_FREE       0u
#define PM_SLAB       1u /* arg = class */
#define PM_INDEX      2u
#define PM_LARGE      3u /* first page of a large item; arg = pages of the item */
#define PM_LCONT      4u /* another page of a large item; arg = its first page */
#define PM_TYPE(e)    ((e) >> 28)
#define PM_ARG(e)     ((e)&0x0FFFFFFFu)
#define PM_MAKE(t, a) (((uint32_t)(t) << 28) | ((uint32_t)(a)&0x0FFFFFFFu))

struct shm_hdr {
    /* static: written once at creation, covered by hdr_crc */
    uint64_t magic;
    uint32_t layout_version;
    uint32_t hdr_crc; /* crc32c of the static fields with hdr_crc = 0 */
    uint64_t fingerprint;
    uint64_t size;
    uint64_t created_ms; /* CLOCK_REALTIME at creation: base of item atime */
    uint64_t stripes_off, classes_off, pmap_off, pages_off, dir_off, dir2_off, hdr2_off;
    uint64_t data_off;
    uint64_t n_pages, n_dir;
    uint32_t n_classes, n_stripes;
    uint64_t hash_key[2]; /* random at creation: the SipHash key of every bucket choice */
    uint64_t static_end;  /* marker: static fields end here */

    /* dynamic */
    uint64_t generation; /* owner only: +1 per open */
    int32_t owner_pid;   /* owner only: pid of the owner, 0 when closed */
    uint32_t pad0;
    uint64_t clean;        /* owner only: SHM_CLEAN while closed cleanly, 0 while open */
    uint64_t state;        /* atomic: linear hashing (L, p) + check; see lock rules */
    uint64_t version_ctr;  /* atomic: last version handed out */
    uint64_t sweep_cursor; /* atomic: next bucket for kv_shm_sweep */
    uint64_t evictions, expired, corrupt; /* atomic counters */
    uint64_t pages_compacted, pages_evicted, items_moved; /* atomic: page drains (shm_evict.c) */
    uint64_t pages_free;                  /* guarded by page_lock */
    uint64_t free_top;    /* guarded by page_lock: page index + 1 atop the free stack */
    uint64_t index_pages; /* guarded by page_lock */
    uint64_t lines;       /* atomic: overflow lines linked into the index */
    uint64_t last_recovery_ns, last_recovered, last_dropped; /* owner only */
    uint64_t batch[SHM_BATCH_ROWS]; /* atomic: undo log of a multi-key write in progress */
    uint32_t meta_crc; /* owner only: checksum of the derived state at the last clean close */
    uint32_t pad1;
    pthread_mutex_t page_lock __attribute__((aligned(64)));  /* process-shared */
    pthread_mutex_t split_lock __attribute__((aligned(64))); /* process-shared */
};

/* Databases (layout 3), in the header page after struct shm_hdr (whose size is part of
 * the layout fingerprint, so layout-2 segments keep theirs). All zero in a layout-2
 * segment, which reads as: identity map, no item outside database 0.
 *   - An item belongs to one physical database (shm_item.db, checksummed). A key's hash,
 *     bucket and stripe do not depend on its database: the same key in several databases
 *     shares one bucket chain, and lookups compare database and key.
 *   - map[sel] turns a logical database (the one clients SELECT) into a physical one:
 *     physical = logical ^ map[sel][logical]. SWAPDB writes the other copy, then flips sel
 *     with one atomic store, holding every stripe lock exclusively; everything else reads
 *     the map only while it holds the stripe lock of the key it works on, so each
 *     operation sees the map before or after a swap, never between.
 *   - keys[d] counts the items of physical database d > 0 (atomic; rebuilt by recovery).
 *     Database 0's count is the stripes' total less the others', so the writes of
 *     database 0 -- the binary protocol's, the common case -- touch no shared counter. */
#define SHM_MAX_DB  256u
#define SHM_DBS_OFF 1024u /* offset of struct shm_dbs in the header page */
struct shm_dbs {
    uint32_t sel; /* atomic: map[sel & 1] is current */
    uint32_t pad;
    uint8_t map[2][SHM_MAX_DB];
    int64_t keys[SHM_MAX_DB]; /* atomic relaxed; [0] unused */
};

struct shm_stripe {
    pthread_rwlock_t lock; /* process-shared; see lock rules */
    int64_t keys;          /* guarded by lock (exclusive): items in this stripe's buckets */
    uint64_t hits, misses; /* atomic relaxed */
} __attribute__((aligned(128)));

/* A size class. Its sizes live in the process (kv_shm_class_sizes), never read from here. */
struct shm_class {
    pthread_mutex_t lock; /* process-shared */
    uint64_t partial;     /* guarded by lock: page index + 1 of the first page with room */
    uint64_t pages;       /* guarded by lock: pages owned */
    uint64_t used;        /* guarded by lock: chunks handed out */
} __attribute__((aligned(128)));

/* The allocator's view of one data page. A slab page's free chunks are linked through the
 * chunks themselves by index within the page, so a page that empties returns to the free
 * stack at once, whatever class it served. */
#define PG_LISTED   0x1u /* on its class's partial list */
#define PG_DRAINING 0x2u /* being emptied (compaction, eviction): not listed, not freed */
struct shm_page {
    uint16_t used;      /* slab: chunks handed out (items, lines, chunks being built, spares) */
    uint16_t carved;    /* slab: chunks [0, carved) were handed out at least once */
    uint16_t free_head; /* slab: index + 1 of the page's first free chunk, 0 = none */
    uint16_t flags;     /* PG_* */
    uint32_t next;      /* page index + 1: next on the partial list or the free stack */
    uint32_t prev;      /* page index + 1: previous on the partial list */
};

struct shm_item {
    uint32_t crc;   /* crc32c of bytes [8, SHM_ITEM_HDR + klen + vlen) */
    uint32_t atime; /* atomic relaxed, not checksummed: last access, 4 ms units */
    uint32_t magic; /* SHM_ITEM_MAGIC */
    uint8_t cls;    /* size class, or SHM_CLASS_LARGE */
    uint8_t flags;
    uint16_t db; /* physical database (layout 3; 0 in every layout-2 item) */
    uint64_t version;
    int64_t expire_ms; /* absolute CLOCK_REALTIME ms; 0 = never */
    uint32_t klen, vlen;
    uint8_t data[]; /* key then value */
};

/* A free chunk: magic at the item's magic position, then the index + 1 of the next free
 * chunk of the same page (0 = none). */
struct shm_free_chunk {
    uint32_t zero, zero2;
    uint32_t magic; /* SHM_FREE_MAGIC */
    uint32_t next;
};

/* Items larger than SHM_MAX_CHUNK take whole pages that need not be contiguous: the item
 * header, key and the first part of the value fill the first page, whose last 4 * (n - 1)
 * bytes list the other n - 1 pages (u32 page indices, in order); those hold the rest of
 * the value, SHM_PAGE bytes each. The item checksum covers the page list too. */
#define SHM_LARGE_MAX_PAGES ((SHM_PAGE - SHM_ITEM_HDR - 4096) / 4) /* key + list in page 0 */

/* A thread's spare chunks, one per class: the chunk its last overwrite
 * replaced, kept for its next write of that class (no class mutex either
 * way). Only the owner puts one; the owner or a writer short of memory takes
 * one, by atomic exchange. Unreachable from the index, so recovery reclaims
 * them after a crash; kv_shm_store_close frees them before the clean mark. */
#define SHM_SPARE_ROWS 64
struct shm_spare {
    uint64_t off[SHM_MAX_CLASSES]; /* one thread only; 0 = none */
};

struct kv_shm_store {
    uint8_t *base;       /* owned: the mapping, size bytes */
    size_t size;         /* ro after open */
    int fd;              /* owned: holds the flock while open (owner) */
    int attach;          /* ro after open: second mapping, no ownership */
    int lru;             /* ro after open: cfg->eviction == KV_EVICT_LRU */
    uint64_t page_limit; /* atomic: --maxmemory in pages (0 = the whole segment); data
                          * pages are refused past it (kv_shm_set_maxmemory) */
    int is_file;         /* ro after open */
    size_t max_key;      /* ro after open */
    uint64_t hkey[2];    /* ro after open: hdr->hash_key */
    uint32_t chain_max;  /* ro after open: overflow lines a chain may have */
    int fixed_key;       /* ro after open: test knob, a zero hash key at creation */
    struct shm_hdr *hdr; /* = base */
    struct shm_dbs *dbs; /* = base + SHM_DBS_OFF */
    struct shm_stripe *stripes;
    struct shm_class *cls;
    uint32_t *pmap;
    struct shm_page *pg;
    uint64_t *dir, *dir2;
    struct shm_hdr *hdr2; /* the header's copy (static fields and state word only) */
    uint64_t data_off, n_pages, n_dir, data_end; /* ro after open */
    unsigned n_classes;                          /* ro after open: item classes */
    unsigned line_cls;                           /* ro after open: = n_classes, index lines */
    uint8_t class_of[SHM_MAX_CHUNK / 8 + 1];     /* ro after open: size/8 (rounded up) -> class */
    /* ro after open, process-local copies of the class table: chunk size,
     * chunks per page, and ceil(2^32 / size), so that checking an item's
     * offset divides by multiplying (exact for offsets within a page) */
    uint32_t csize[SHM_MAX_CLASSES], cper[SHM_MAX_CLASSES];
    uint64_t crecip[SHM_MAX_CLASSES];
    int crash_at, crash_site;                             /* ro after open: test fault injection */
    int crash_n;                                          /* atomic: crash points passed */
    int recovered;                                        /* ro after open */
    uint64_t recovered_items, dropped_items, recovery_ns; /* ro after open */
    uint64_t dropped_why[KV_SHM_DROP_REASONS];           /* ro after open */
    uint64_t batches_undone;                             /* ro after open */
    /* kv_shm_stats's huge_bytes: /proc/self/smaps is read at most once per
     * KV_SHM_HUGE_CACHE_NS (the file is a walk of every mapping); any thread,
     * relaxed atomics (two racing refreshes store the same kind of figure) */
    uint64_t huge_cached, huge_cached_at_ns;
    uint64_t corrupt_at_open;                            /* ro after open: hdr->corrupt */
    uint64_t open_id;                                     /* ro after open: unique per open */
    unsigned spare_rows;                                  /* atomic: rows of spares claimed */
    struct shm_spare spares[SHM_SPARE_ROWS];              /* row i: one thread's */
    char name[1100];                                      /* ro after open: shm name or file path */
    /* --sync (shm_sync.c); NULL for shm stores, attach handles and --sync no without
     * a thread. wseq counts writes (atomic), so that a sync knows what it covers. */
    struct shm_sync *sync;
    int defer;     /* ro while the store is in use: frees wait for a sync */
    /* written by every write: padded to a cache line of its own (padding, not alignment:
     * the struct comes from kv_mem_calloc, 16-byte aligned) */
    uint8_t wseq_pad0[64];
    uint64_t wseq;
    uint8_t wseq_pad1[64];
    uint64_t restored_items; /* ro after open: recovery took an older copy for a torn slot */
    int sync_failed;         /* atomic: an msync of the data file failed since the open: the
                              * close does not mark the file clean (Linux may have dropped
                              * the failed pages' dirty state, so a later flush proves nothing) */
    /* INFO keyspace's expires / avg_ttl per physical database, counted by the expiry
     * sweep as it walks the index (kv_shm_sweep): the pass under way (owned by the sweep
     * that holds ttl_busy), and what the last complete pass counted, or until one has,
     * the pass under way scaled to the whole index (relaxed atomics for the readers) */
    struct {
        int busy; /* atomic: a sweep is counting */
        uint64_t visited, passes;
        uint64_t n[SHM_MAX_DB];
        double ms[SHM_MAX_DB];
        uint64_t pub_n[SHM_MAX_DB], pub_avg_ms[SHM_MAX_DB];
    } ttl;
    struct shm_txn *txn; /* owned: transaction mode (shm_txn.c), NULL = off; set and read
                          * only while the caller runs alone (kv_shm_txn_begin) */
    /* WATCH of an absent key (shm_txn.c, kv_shm_db_watch): per cell of key hashes, the
     * newest "a key of this cell written after version V was removed" stamp. A cell is
     * the stripe and 4 bits of the slot tag, so it is written only under its stripe's
     * exclusive lock; relaxed atomics for the reader (EXEC, under the server's gate).
     * Process-local: WATCH sessions do not outlive the process. */
    uint64_t gone[SHM_GONE_CELLS];
    /* per logical database, the version at its last SWAPDB (written while every stripe is
     * held): a WATCHed key of a database swapped since reads as changed (kv_shm_db_watch) */
    uint64_t swapped[SHM_MAX_DB];
};

/* Cell of gone[] for a key hash, or for the slot word of a key of stripe st. */
static inline unsigned shm_gone_cell(uint64_t h)
{
    return (unsigned)(h & (SHM_STRIPES - 1)) |
           (unsigned)(((h >> 48) & (SHM_GONE_CELLS / SHM_STRIPES - 1)) * SHM_STRIPES);
}

/* A slot that held item it (of a key with hash bits h: the slot word carries the tag bits
 * and the stripe gives the low ones) was emptied, under the stripe's exclusive lock. A
 * live item's removal is a change now (a fresh version); an expired one's is no logical
 * change, and counts as of its own write (a stale key at WATCH stays unchanged, as in
 * Redis; one written after the WATCH and expired since still reads as changed). */
static inline void shm_gone_mark(struct kv_shm_store *s, uint64_t h, const struct shm_item *it,
                                 int64_t now_ms)
{
    uint64_t *c = &s->gone[shm_gone_cell(h)];
    uint64_t v = it && it->expire_ms && it->expire_ms <= now_ms
                     ? it->version
                     : __atomic_add_fetch(&s->hdr->version_ctr, 1, __ATOMIC_RELAXED);

    if (v > __atomic_load_n(c, __ATOMIC_RELAXED))
        __atomic_store_n(c, v, __ATOMIC_RELAXED);
}

/* ---- shm_util.c ---- */
uint32_t kv_shm_crc32c(uint32_t crc, const void *buf, size_t len);
uint64_t kv_shm_siphash13(const uint64_t k[2], const void *key, size_t len);
/* The keyed hash of a key in store s (SipHash-1-3 under the segment's key). */
uint64_t kv_shm_hash(const struct kv_shm_store *s, const void *key, size_t len);
void kv_shm_random_key(uint64_t k[2]);
uint64_t kv_shm_mix64(uint64_t x);
int64_t kv_shm_now_ms(void);
uint64_t kv_shm_rand(void);
uint64_t kv_shm_fingerprint(void);
/* Fills chunk sizes of the classes; returns their count. */
unsigned kv_shm_class_sizes(uint32_t *sizes, unsigned cap);
void kv_shm_crash_point(struct kv_shm_store *s, int site);

/* ---- shm_sync.c ---- */
/* Starts --sync for a data-file store after it is open and recovered (0 when there is
 * nothing to start); no_defer is the test knob that frees at once as without --sync. */
int kv_shm_sync_start(struct kv_shm_store *s, int policy, const struct kv_shm_open_opts *o);
/* Stops the thread and frees whatever waits (the store is being closed cleanly). */
void kv_shm_sync_stop(struct kv_shm_store *s);
/* 1 when frees wait for a sync (chunks, pages and moved slots are not reused). */
static inline int kv_shm_deferring(const struct kv_shm_store *s)
{
    return s->defer;
}
/* Records a slot word a split left in the old bucket (as SHM_CLASS_MOVED): cleared under
 * the stripe lock once a sync begun after the move has completed. n words; 0, or
 * KV_ENOMEM when they could not be recorded (the caller then clears them itself). */
int kv_shm_sync_moved(struct kv_shm_store *s, uint64_t *const *slots, const uint64_t *words,
                      size_t n, unsigned stripe);
/* Makes the pages in [off, off + len) durable now (a new index page before it is
 * linked). No-op (0) without --sync; KV_EIO when msync failed. */
int kv_shm_sync_range(struct kv_shm_store *s, uint64_t off, uint64_t len);
/* Runs a sync now (a writer short of memory while frees wait for one): 1 when something
 * was released. */
int kv_shm_sync_reclaim(struct kv_shm_store *s);
/* This thread's last write (wseq value and the store's open_id): --sync always waits
 * for a sync covering it, not for other threads' writes. */
extern __thread uint64_t kv_shm_tl_wseq, kv_shm_tl_open;
static inline void kv_shm_wrote(struct kv_shm_store *s)
{
    if (!s->sync)
        return; /* nothing counts writes without --sync */
    kv_shm_tl_wseq = __atomic_add_fetch(&s->wseq, 1, __ATOMIC_RELEASE);
    kv_shm_tl_open = s->open_id;
}

/* ---- shm_alloc.c ---- */
/* Allocates a chunk, or the pages of a large item, for an item of total bytes; *cls gets
 * its class (SHM_CLASS_LARGE for pages). Never evicts, takes no stripe: KV_ENOMEM when
 * there is no room (the caller may make room, shm_evict.c, and call again), KV_ETOOBIG
 * when it can never fit. A large item's pages are marked and listed in its first page. */
int kv_shm_alloc(struct kv_shm_store *s, size_t total, uint64_t *off, unsigned *cls);
/* Returns an unlinked item's chunk, or all of a large item's pages. With --sync the chunk
 * waits for the next completed sync first (shm_sync.c), then kv_shm_free_now runs. */
void kv_shm_free(struct kv_shm_store *s, uint64_t off);
void kv_shm_free_now(struct kv_shm_store *s, uint64_t off);
/* kv_shm_free of an item a newer version of the same key (or its moved copy) replaced:
 * with --sync it is not marked dead, so that recovery may still take it for the key's
 * previous copy when the newer one is torn (shm_sync.c). Every other free marks it. */
void kv_shm_free_replaced(struct kv_shm_store *s, uint64_t off);
/* kv_shm_free of a write's new item that never became the key's state (refused, or
 * undone): with --sync marked VOID, which recovery ignores altogether -- neither a
 * removal (DEAD: the key's copies older than it are stale) nor a previous copy. */
void kv_shm_free_unpublished(struct kv_shm_store *s, uint64_t off);
/* One free page, marked with pmap entry e. KV_ENOMEM when none. */
int kv_shm_page_alloc(struct kv_shm_store *s, uint32_t e, uint64_t *pi);
/* Gives back a page kv_shm_page_alloc handed out that nothing ever named. */
void kv_shm_page_unused(struct kv_shm_store *s, uint64_t pi);
/* Allocates a zeroed overflow line (a chunk of the line class). */
int kv_shm_line_alloc(struct kv_shm_store *s, uint64_t *off);
/* Rebuilds the allocator from a recovery claim map (pmap entries + used bitmaps). */
void kv_shm_alloc_rebuild(struct kv_shm_store *s, const uint32_t *pm, const uint64_t *used);
unsigned kv_shm_class_for(const struct kv_shm_store *s, size_t total);
/* Pages a large item of total bytes takes (0 when it is too large for any). */
uint64_t kv_shm_large_pages(size_t total);
/* Page indices of a large item's pages after the first: a pointer into its first page. */
uint32_t *kv_shm_large_list(const struct kv_shm_store *s, uint64_t off, uint64_t n);
/* Page drain support for shm_evict.c: takes slab page pi off its class's list and marks it
 * draining (0), or KV_EAGAIN when it is not a slab page or is being drained already. */
int kv_shm_page_drain_begin(struct kv_shm_store *s, uint64_t pi, unsigned *cls, unsigned *carved);
/* Ends a drain: the page returns to the free stack when empty (1), else to its list (0). */
int kv_shm_page_drain_end(struct kv_shm_store *s, uint64_t pi);
/* A chunk of class c from a page the class already owns (never a new page): compaction's
 * destination. KV_ENOMEM when its listed pages are full. */
int kv_shm_chunk_alloc_listed(struct kv_shm_store *s, unsigned c, uint64_t *off);
/* Class c's chunks free now, and its emptiest page among the first few listed. */
void kv_shm_class_room(struct kv_shm_store *s, unsigned c, uint64_t *free_chunks,
                       uint64_t *emptiest);

static inline void *shm_ptr(const struct kv_shm_store *s, uint64_t off)
{
    return s->base + off;
}

static inline uint64_t shm_page_base(const struct kv_shm_store *s, uint64_t pi)
{
    return s->data_off + (pi << SHM_PAGE_SHIFT);
}

static inline size_t shm_item_size(const struct shm_item *it)
{
    return SHM_ITEM_HDR + (size_t)it->klen + it->vlen;
}

/* ---- shm_item.c ---- */
/* An item's bytes as one stream [0, size), wherever its pages are: copies n bytes from
 * stream position pos to dst. */
void kv_shm_item_read(const struct kv_shm_store *s, const struct shm_item *it, size_t pos,
                      void *dst, size_t n);
/* Writes n bytes at stream position pos of the item being built at off, which takes
 * `pages` pages (1 for a chunk; kv_shm_large_pages for a large item). */
void kv_shm_item_write(struct kv_shm_store *s, uint64_t off, uint64_t pages, size_t pos,
                       const void *src, size_t n);
/* The checksum an item should carry: bytes [8, size) of its stream, then a large item's
 * page list. */
uint32_t kv_shm_item_crc(const struct kv_shm_store *s, const struct shm_item *it);

/* ---- shm_index.c ---- */
#define SHM_WORD_OFF(w) (((w)&0xFFFFFFFFFFull) << 3)
#define SHM_WORD_CLS(w) ((unsigned)(((w) >> 40) & 0xFF))
#define SHM_WORD_TAG(w) ((uint16_t)((w) >> 48))
static inline uint64_t shm_word(uint64_t off, unsigned cls, uint64_t h)
{
    return (off >> 3) | ((uint64_t)(cls & 0xFF) << 40) | (h & 0xFFFF000000000000ull);
}

/* state word: L (6 bits) | p (40 bits) << 6 | check (16 bits) << 48 */
uint64_t kv_shm_state_make(unsigned L, uint64_t p);
int kv_shm_state_parse(uint64_t w, unsigned *L, uint64_t *p);
uint64_t kv_shm_dir_make(uint64_t pi);
int kv_shm_dir_parse(const struct kv_shm_store *s, uint64_t e, uint64_t *pi);
uint64_t kv_shm_link_make(uint64_t off);
uint64_t kv_shm_link_parse(const struct kv_shm_store *s, uint64_t w);

/* Bucket count and the bucket of hash h under the current state. */
uint64_t kv_shm_index_active(const struct kv_shm_store *s);
uint64_t kv_shm_index_bucket(const struct kv_shm_store *s, uint64_t h);
uint64_t *kv_shm_index_line(const struct kv_shm_store *s, uint64_t b); /* NULL if no page */
/* Validates the item a slot refers to against the live pmap; NULL when it is unsound. */
struct shm_item *kv_shm_item_check(const struct kv_shm_store *s, uint64_t w);
/* Stripe lock helpers. */
static inline struct shm_stripe *shm_stripe_of(const struct kv_shm_store *s, uint64_t h)
{
    return &s->stripes[h & (SHM_STRIPES - 1)];
}
/* Finds key of physical database pdb in bucket b (stripe held): returns its slot or NULL. */
uint64_t *kv_shm_index_find(struct kv_shm_store *s, uint64_t b, uint64_t h, unsigned pdb,
                            const void *key, size_t klen, struct shm_item **itp);

/* The physical database of logical database db (< SHM_MAX_DB); see shm_dbs. Stable while
 * the caller holds any stripe lock. */
static inline unsigned shm_db_phys(const struct kv_shm_store *s, unsigned db)
{
    unsigned sel = __atomic_load_n(&s->dbs->sel, __ATOMIC_ACQUIRE) & 1;
    return db ^ __atomic_load_n(&s->dbs->map[sel][db], __ATOMIC_RELAXED);
}
/* An item of physical database pdb was added (d = 1) or removed (d = -1). */
static inline void shm_db_count(struct kv_shm_store *s, unsigned pdb, int64_t d)
{
    if (pdb && pdb < SHM_MAX_DB)
        __atomic_add_fetch(&s->dbs->keys[pdb], d, __ATOMIC_RELAXED);
}
/* Puts word into an empty slot of bucket b (exclusive stripe held); may add a line.
 * KV_ENOMEM when no line can be had (the caller unlocks, makes room, tries again). */
int kv_shm_index_insert(struct kv_shm_store *s, uint64_t b, uint64_t word);
/* An empty slot of bucket b (exclusive stripe held), adding a line when the chain is full:
 * what kv_shm_index_insert would fill, for a caller that must note where before it does.
 * It stays empty, and so reserved, only until the stripe lock is dropped. */
int kv_shm_index_reserve(struct kv_shm_store *s, uint64_t b, uint64_t **slot);
/* Splits one bucket if the load asks for it; call with no stripe held. */
void kv_shm_index_grow(struct kv_shm_store *s, uint64_t h);
/* Allocates and publishes the index page for buckets [chunk*1024, +1024). */
int kv_shm_index_page_add(struct kv_shm_store *s, uint64_t chunk);

/* ---- shm_evict.c ---- */
/* Makes room after kv_shm_alloc (or a line allocation) said KV_ENOMEM for an item of
 * total bytes (SHM_LINE for a line): reclaims expired items, compacts a class whose free
 * chunks fill a page, and under LRU evicts (whole pages of other classes when the oldest
 * item sampled is not of the class wanted). Call with no lock held. 0 when it freed
 * something (allocate again), KV_ENOMEM when nothing more can be freed. */
int kv_shm_make_room(struct kv_shm_store *s, size_t total, int line);

/* ---- kv_shm.c, for shm_batch.c ---- */
#define ROOM_TRIES 64 /* rounds of making room for one small allocation before KV_ENOMEM */
/* Builds a complete, checksummed item at off (not yet reachable), its value from val or,
 * when from is set, from that item's value. */
struct shm_item *kv_shm_item_fill(struct kv_shm_store *s, uint64_t off, unsigned cls,
                                  unsigned pdb, const void *key, size_t klen, const void *val,
                                  const struct shm_item *from, size_t vlen, uint64_t version,
                                  int64_t expire_ms, int64_t now);
/* kv_shm_alloc, making room as needed; no lock may be held. */
int kv_shm_alloc_room(struct kv_shm_store *s, size_t total, uint64_t *off, unsigned *cls);
/* Room for an index line after an insert said KV_ENOMEM (no lock held): 0 to try again. */
int kv_shm_line_room(struct kv_shm_store *s, int attempt);
/* Room after a kv_shm_alloc under a stripe lock said KV_ENOMEM (lock dropped): for an item
 * of need bytes, or an index line (line set). 0 when room was made: try again. */
int kv_shm_room(struct kv_shm_store *s, int attempt, size_t need, int line);
uint64_t kv_shm_version_next(struct kv_shm_store *s);
/* Stores key with the given version and absolute expiry, unless the store holds a version
 * at least as new (then 0, unchanged); the version counter is raised to it. For upgrades. */
int kv_shm_put_versioned(struct kv_shm_store *s, unsigned pdb, const void *key, size_t klen,
                         const void *val, size_t vlen, uint64_t version, int64_t expire_ms);

/* ---- shm_upgrade.c ---- */
#define SHM_REOPEN 1 /* seg_open: the segment was upgraded, open it again */
/* s is mapped and locked but not checked, and holds a layout-1 segment: copies every live
 * item into a new segment of this layout under <name>.upgrade, then renames it over the
 * old one. 0 when done (the caller reopens the name); the old segment is untouched on any
 * failure and after a kill at any instant. */
int kv_shm_upgrade_v1(struct kv_shm_store *s, const struct kv_config *cfg, char *eb, size_t ec);
/* The segment named by cfg has this layout but old_size bytes, not cfg->memory (nothing of
 * it is mapped or locked by the caller): copies every live item into a segment of
 * cfg->memory bytes beside it and renames that over it, as the upgrade does. 0 when done
 * (reopen); KV_ENOMEM, unchanged, when the items do not fit. */
int kv_shm_resize(const struct kv_shm_store *s, const struct kv_config *cfg, size_t old_size,
                  char *eb, size_t ec);

/* ---- shm_batch.c ---- */
/* Undoes the multi-key writes a kill interrupted (their logs in hdr->batch); recovery's
 * first step. Returns the number of batches rolled back. */
uint64_t kv_shm_batch_undo(struct kv_shm_store *s);

/* ---- shm_txn.c: transaction mode (s->txn set) ---- */
/* Appends {slot, nw, *slot} to the transaction's undo log; call before storing nw into
 * *slot. KV_ENOMEM when the log cannot grow: the slot must then be left as it is. */
int kv_shm_txn_log(struct kv_shm_store *s, uint64_t *slot, uint64_t nw);
/* Keeps off for the commit: kv_shm_free when dead, else kv_shm_free_replaced (--sync: a
 * replaced item stays a key's previous copy for recovery); returns 1 (taken care of). */
int kv_shm_txn_defer_free(struct kv_shm_store *s, uint64_t off, int dead);
/* Remembers a key inserted, for kv_shm_index_grow at the commit. */
void kv_shm_txn_defer_grow(struct kv_shm_store *s, uint64_t h);

/* ---- shm_recover.c ---- */
/* Rebuilds a segment that was not closed cleanly. KV_ECORRUPT (with errbuf) if it can't. */
int kv_shm_recover(struct kv_shm_store *s, char *errbuf, size_t errcap);

#endif
