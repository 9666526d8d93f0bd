/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/kv_shm.h -- the libevkv store: a crash-safe hash table in shared memory.
 *
 * The data lives in one segment (a POSIX shm object or a mapped file) that outlives the
 * process: a crash or kill -9 loses nothing whose call had returned, and never leaves a
 * half-written value visible. Everything inside the segment is addressed by offsets, so it
 * maps at any address. One process owns a segment at a time (an advisory lock on its fd).
 *
 * Inside: a header (magic, layout version, fingerprint, size, generation, owner pid, clean
 * mark), striped process-shared rwlocks, a slab-like allocator in size classes, a
 * linear-hashing index of item offsets that grows one bucket at a time, and the items
 * {key, value, version, expiry, checksum}. A write is published by one atomic store of an
 * offset into the index after the item is complete; an item is reclaimed only after it has
 * been unlinked. Opening a segment that was not closed cleanly runs recovery, which rebuilds
 * everything but the items and the index from the items reachable through the index.
 *
 * Thread safety: every call but open/close/unlink may be made from any number of threads
 * at once on the same store. Readers of different keys never wait for each other, and
 * readers of the same key share a read lock. Values are copied out under the key's stripe
 * lock, so a concurrent overwrite or delete never hands out torn bytes.
 *
 * Every function returns 0 or a negative KV_E* code (kv_err.h); output parameters are
 * written only on success. The library never logs. */
#ifndef KV_SHM_H
#define KV_SHM_H

#include <stddef.h>
#include <stdint.h>

#include "kv_config.h"
#include "kv_err.h"

struct kv_shm_store; /* opaque; one per opened segment */

/* Databases (Redis's SELECT): every key belongs to one of KV_SHM_MAX_DB numbered databases,
 * the same key may exist in several, each independently. The kv_shm_db_* calls name the
 * (logical) database; the calls without _db are their database-0 forms. A bad database
 * number (>= KV_SHM_MAX_DB) is KV_EINVAL. */
#define KV_SHM_MAX_DB 256

/* Test-only knobs; the server passes NULL. */
struct kv_shm_open_opts {
    int attach;   /* 1: map a segment another handle of this process owns, without the
                   * lock, recovery or header writes (reads through a second address) */
    int crash_at;   /* >0: _exit(77) at the crash_at-th crash point of crash_site (fault
                     * injection in child processes) */
    int crash_site; /* KV_SHM_CRASH_*; KV_SHM_CRASH_ANY counts every site */
    int fixed_hash_key;  /* 1: a new segment gets the all-zero hash key, so a test can
                          * craft colliding keys as an attacker who knew the key could */
    unsigned chain_max;  /* >0: overflow lines a bucket's chain may have (default
                          * SHM_CHAIN_MAX), so a test can fill a chain */
    int sync_no_defer;   /* 1: with --sync, free chunks and clear split slots at once, as
                          * without it (shows what the deferral guards: test_shm_sync) */
    unsigned sync_interval_ms; /* >0: the sync thread's period instead of 1000 ms */
    void (*sync_flushed)(void *ctx); /* called after each sync's flush, before what waited
                                      * for it is freed: the disk as a power loss then
                                      * finds it at the earliest */
    void *sync_ctx;
};

enum kv_shm_crash_site {
    KV_SHM_CRASH_ANY,
    KV_SHM_CRASH_PUBLISH,       /* item written and checksummed, not yet published */
    KV_SHM_CRASH_SPLIT,         /* mid-split: an item is in both buckets */
    KV_SHM_CRASH_FREE,          /* mid free-list update */
    KV_SHM_CRASH_RECOVER,       /* recovery: items claimed, allocator not yet rebuilt */
    KV_SHM_CRASH_RECOVER_MOVE,  /* recovery: a misplaced item is in both buckets */
    KV_SHM_CRASH_BATCH,         /* a multi-key write: some of its keys published */
    KV_SHM_CRASH_UPGRADE,       /* upgrading a layout-1 segment (or resizing one): some
                                 * items copied */
};

/* Creates, or opens and (when it was not closed cleanly) recovers, the segment named by
 * cfg: cfg->data_file when set, else cfg->shm_name, else "/libevkv-<port>". Sized by
 * cfg->memory (>= 2 MiB), reserved up front with posix_fallocate.
 * Fails with KV_ELOCKED when another process owns it (errbuf names its pid), KV_ECORRUPT
 * on a wrong magic/version/fingerprint or a damaged header, KV_EINVAL on a size mismatch
 * or bad cfg, KV_ENOMEM when the reservation fails, KV_EIO on a failed system call.
 * With cfg->reset_store set, an unusable segment is renamed to <name>.bad-<unix time>
 * and a new empty one is created (errbuf then says so). errbuf (may be NULL) receives a
 * one-line text for the caller to log; it is "" when there is nothing to say. */
int kv_shm_store_open(const struct kv_config *cfg, char *errbuf, size_t errcap,
                      struct kv_shm_store **out);
int kv_shm_store_open_ex(const struct kv_config *cfg, const struct kv_shm_open_opts *opts,
                         char *errbuf, size_t errcap, struct kv_shm_store **out);

/* Redis's maxmemory for the store: data pages (items, large values) are refused once the
 * segment's pages in use (index and data) reach bytes, rounded down to whole pages (at
 * least one); the writer then makes room as when the segment is full -- evicts under
 * --eviction lru, else answers KV_ENOMEM. 0: the segment's size is the only limit. Any
 * thread, at any time; a limit below what is in use refuses new pages until enough are
 * emptied (by deletes, expiry, compaction or eviction), nothing is evicted at once. */
void kv_shm_set_maxmemory(struct kv_shm_store *s, uint64_t bytes);

/* Marks the clean shutdown, unmaps, unlocks and frees s. No call may be running on s. */
void kv_shm_store_close(struct kv_shm_store *s);

/* Removes the segment named by cfg (shm_unlink or unlink). KV_ENOTFOUND when absent. */
int kv_shm_store_unlink(const struct kv_config *cfg);

/* Copies the value of key out: dst = alloc(ctx, len) is called exactly once, with the exact
 * value length, while the item is protected, and the value is copied into dst (alloc may
 * return NULL only when len is 0, or to fail with KV_ENOMEM). Writes *vlen and *version
 * (each may be NULL). KV_ENOTFOUND when absent or expired; KV_ECORRUPT when the item fails
 * its checksum (it is then never returned); KV_EINVAL on a bad key length. */
int kv_shm_get(struct kv_shm_store *s, const void *key, size_t klen,
               void *(*alloc)(void *ctx, size_t len), void *ctx, size_t *vlen,
               uint64_t *version);

#define KV_SHM_NX      0x1u /* only if absent: KV_EEXISTS when the key exists */
#define KV_SHM_XX      0x2u /* only if present: KV_ENOTFOUND when absent */
#define KV_SHM_CAS     0x4u /* only if the version is cas_version: KV_ENOTFOUND / KV_EEXISTS */
#define KV_SHM_KEEPTTL 0x8u /* keep the existing expiry instead of ttl_ms */

struct kv_shm_set_opts {
    uint32_t flags;       /* KV_SHM_* */
    uint64_t cas_version; /* with KV_SHM_CAS */
    int64_t ttl_ms;       /* > 0: expire after that many ms; 0: no expiry */
};

/* Stores key = val (opts may be NULL). Writes the new version to *new_version (may be
 * NULL). KV_ENOMEM when the store is full and eviction is off (the old value stays);
 * KV_ETOOBIG when the item can never fit; the condition codes above. */
int kv_shm_set(struct kv_shm_store *s, const void *key, size_t klen, const void *val,
               size_t vlen, const struct kv_shm_set_opts *opts, uint64_t *new_version);

/* The store's hash of a key, for the _h calls and kv_shm_prefetch: a
 * caller that looks a key up more than once (hint, then the operation)
 * hashes it once. */
uint64_t kv_shm_key_hash(const struct kv_shm_store *s, const void *key, size_t klen);

/* kv_shm_get and kv_shm_set with the key's hash already computed: hash MUST
 * be kv_shm_key_hash(s, key, klen) (a different one files the key where
 * lookups do not find it; debug builds check). */
int kv_shm_get_h(struct kv_shm_store *s, const void *key, size_t klen, uint64_t hash,
                 void *(*alloc)(void *ctx, size_t len), void *ctx, size_t *vlen,
                 uint64_t *version);
int kv_shm_set_h(struct kv_shm_store *s, const void *key, size_t klen, uint64_t hash,
                 const void *val, size_t vlen, const struct kv_shm_set_opts *opts,
                 uint64_t *new_version);

/* A hint, no effect on the data, for the key of hash kv_shm_key_hash(): stage
 * 0 prefetches the key's bucket and stripe lock into the cache, stage 1
 * (after stage 0 of a whole batch has had time to land) the item the bucket
 * points to. Callers running a batch of lookups issue stage 0 for all, then
 * stage 1 for all, then the lookups, so the batch's cache misses overlap
 * instead of queueing. Reads without locks: it only ever computes an address
 * to prefetch, and any hash is harmless. */
void kv_shm_prefetch(struct kv_shm_store *s, uint64_t hash, int stage);

struct kv_shm_pair {
    const void *key;
    size_t klen;
    const void *val;
    size_t vlen;
};

/* Stores every pair, all or nothing: no other client sees some of them stored and others
 * not (every key's stripe is held while the batch is published), and a kill -9 at any
 * instant leaves all of them or none (an undo log in the segment, replayed by recovery).
 * opts: ttl_ms for every pair; KV_SHM_NX stores nothing (KV_EEXISTS) if any key exists.
 * KV_ENOMEM when the batch does not fit (nothing changed). A key given twice takes its
 * last value. versions[i] (may be NULL) gets pair i's new version. */
int kv_shm_mset(struct kv_shm_store *s, const struct kv_shm_pair *pairs, size_t n,
                const struct kv_shm_set_opts *opts, uint64_t *versions);

/* Multi-key reads that never see a multi-key write half done (MGET beside MSET): the
 * caller adds the hash of every key it will read to a set, takes the set's stripe locks
 * (shared, in ascending order: no deadlock with kv_shm_mset, which takes them exclusive in
 * the same order), reads each key with kv_shm_get_held, and drops the set. Writers of
 * those stripes wait meanwhile; readers do not. */
#define KV_SHM_STRIPES 1024
struct kv_shm_rset {
    uint64_t bits[KV_SHM_STRIPES / 64];
};
void kv_shm_rset_add(struct kv_shm_rset *r, uint64_t hash);
void kv_shm_rset_take(struct kv_shm_store *s, const struct kv_shm_rset *r);
void kv_shm_rset_drop(struct kv_shm_store *s, const struct kv_shm_rset *r);
/* kv_shm_get_h for a key whose stripe the caller holds through a taken set. An expired or
 * damaged item is reported absent (KV_ENOTFOUND / KV_ECORRUPT) and left for the sweep. */
int kv_shm_get_held(struct kv_shm_store *s, const void *key, size_t klen, uint64_t hash,
                    void *(*alloc)(void *ctx, size_t len), void *ctx, size_t *vlen,
                    uint64_t *version);

/* The same calls in database db. */
int kv_shm_db_get(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                  void *(*alloc)(void *ctx, size_t len), void *ctx, size_t *vlen,
                  uint64_t *version);
int kv_shm_db_get_h(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                    uint64_t hash, void *(*alloc)(void *ctx, size_t len), void *ctx,
                    size_t *vlen, uint64_t *version);
int kv_shm_db_get_held(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                       uint64_t hash, void *(*alloc)(void *ctx, size_t len), void *ctx,
                       size_t *vlen, uint64_t *version);
int kv_shm_db_set(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                  const void *val, size_t vlen, const struct kv_shm_set_opts *opts,
                  uint64_t *new_version);
int kv_shm_db_set_h(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                    uint64_t hash, const void *val, size_t vlen,
                    const struct kv_shm_set_opts *opts, uint64_t *new_version);
int kv_shm_db_mset(struct kv_shm_store *s, unsigned db, const struct kv_shm_pair *pairs,
                   size_t n, const struct kv_shm_set_opts *opts, uint64_t *versions);
int kv_shm_db_del(struct kv_shm_store *s, unsigned db, const void *key, size_t klen);
/* Compare-and-delete: removes key only if its live item has version (GETDEL: the value
 * answered and the removal are one step). 0, KV_ENOTFOUND (absent or expired: an expired
 * item is removed), KV_EEXISTS (another version: nothing changes). */
int kv_shm_db_del_version(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                          uint64_t version);
int kv_shm_db_exists(struct kv_shm_store *s, unsigned db, const void *key, size_t klen);
int kv_shm_db_incr(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                   int64_t delta, int64_t *result, uint64_t *version);
int kv_shm_db_expire(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                     int64_t ttl_ms);
/* Milliseconds since the key was last read or written (the item's LRU time, 4 ms units;
 * wraps after ~198 days), without touching it: Redis's OBJECT IDLETIME. KV_ENOTFOUND when
 * absent or expired. */
int kv_shm_db_idle(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                   int64_t *idle_ms);
int kv_shm_db_ttl(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                  int64_t *ttl_ms);

/* Keys in database db (expired ones not yet removed included), in O(databases + stripes)
 * whatever the number of keys. */
int kv_shm_db_size(struct kv_shm_store *s, unsigned db, uint64_t *keys);

/* INFO keyspace's expires and avg_ttl of database db: the keys with an expiry and their
 * mean time to live in ms, as the expiry sweep (kv_shm_sweep) counted them in its last
 * complete pass over the index -- an estimate as old as one pass (a pass visits every
 * bucket once) -- and before the first pass has completed, the pass under way scaled to
 * the whole index. */
int kv_shm_db_ttl_stats(struct kv_shm_store *s, unsigned db, uint64_t *expires,
                        uint64_t *avg_ttl_ms);

/* Removes every key of database db (Redis's FLUSHDB; kv_shm_flush is FLUSHALL). Keys written
 * concurrently may survive; db names the database that was db when the flush began. */
int kv_shm_db_flush(struct kv_shm_store *s, unsigned db);

/* Exchanges databases a and b (Redis's SWAPDB) atomically: every operation on a key sees
 * both before or both after (every stripe lock is held while the map flips), and a kill
 * -9 at any instant leaves the swap done or not done (one atomic store). */
int kv_shm_swapdb(struct kv_shm_store *s, unsigned a, unsigned b);

#define KV_SHM_MV_NX   0x1u /* keep an existing destination: KV_EEXISTS, nothing changes */
#define KV_SHM_MV_COPY 0x2u /* keep the source (COPY); without it the source goes (RENAME) */

/* Gives key skey of database sdb the name dkey in database ddb (RENAME, RENAMENX, MOVE), or
 * copies it there (KV_SHM_MV_COPY: COPY), value and expiry, replacing a destination that
 * exists unless KV_SHM_MV_NX. All or nothing, to other clients (both keys' stripes held) and
 * across kill -9 (an undo log, as kv_shm_mset's): the key is found under exactly one of its
 * names, wholly old or wholly new. KV_ENOTFOUND when the source is absent; KV_EEXISTS when
 * NX and the destination exists, or when source and destination are the same key and NX or
 * COPY is asked (a plain rename of a key to itself is 0, unchanged). *version (may be NULL)
 * gets the destination's new version. */
int kv_shm_rename(struct kv_shm_store *s, unsigned sdb, const void *skey, size_t sklen,
                  unsigned ddb, const void *dkey, size_t dklen, uint32_t flags,
                  uint64_t *version);
/* Transaction mode: every change made between begin and commit is one crash-atomic unit.
 * After a kill -9 before the commit returned, recovery undoes all of it; once commit has
 * returned, all of it is there. The caller guarantees that no other thread calls into s
 * meanwhile (but for reads that change nothing). Inside, eviction and compaction are off:
 * a call that needs room they would make fails with KV_ENOMEM (that call alone).
 * begin: KV_EINVAL when a transaction is open already, KV_ENOMEM when the log does not fit. */
int kv_shm_txn_begin(struct kv_shm_store *s);
void kv_shm_txn_commit(struct kv_shm_store *s);

/* The version of key's item (WATCH): KV_ENOTFOUND when absent or expired. */
int kv_shm_version(struct kv_shm_store *s, const void *key, size_t klen, uint64_t *version);
int kv_shm_db_version(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                      uint64_t *version);
/* WATCH: 0 and *version when key is there (and live), else KV_ENOTFOUND. *now is the
 * store's version counter (a WATCH records it, C). *mark: the version of db's last SWAPDB,
 * and for an absent or expired key also the newest version at which this key -- or,
 * rarely, another key of its cell of hashes (1 in 16384) -- was written and is gone since
 * (removed, or expired but still there). A key WATCHed at C changed iff it is there with
 * another version (or was absent and is there), or mark > C. Removals of keys that were
 * expired when removed count as of their write (no logical change). */
int kv_shm_db_watch(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                    uint64_t *version, uint64_t *mark, uint64_t *now);

/* Removes key: 0 when it existed, KV_ENOTFOUND when not. */
int kv_shm_del(struct kv_shm_store *s, const void *key, size_t klen);

/* 0 when key exists (and has not expired), KV_ENOTFOUND when not. */
int kv_shm_exists(struct kv_shm_store *s, const void *key, size_t klen);

/* Adds delta to the decimal signed 64-bit integer stored at key (created at 0 when absent;
 * the expiry is kept). KV_ENOTNUM when the value is not such an integer or the sum
 * overflows; the value is then left unchanged. Writes *result and *version (may be NULL). */
int kv_shm_incr(struct kv_shm_store *s, const void *key, size_t klen, int64_t delta,
                int64_t *result, uint64_t *version);

/* Sets key's expiry to ttl_ms from now (> 0), removes the key (== 0), or clears the expiry
 * (< 0). A write: the version changes. KV_ENOTFOUND when absent. */
int kv_shm_expire(struct kv_shm_store *s, const void *key, size_t klen, int64_t ttl_ms);

/* Writes the remaining time to live in ms to *ttl_ms, -1 when the key has no expiry.
 * KV_ENOTFOUND when absent. */
int kv_shm_ttl(struct kv_shm_store *s, const void *key, size_t klen, int64_t *ttl_ms);

/* Called once per key found by kv_shm_scan, outside every store lock (the key may be gone
 * by then; it may call the store). */
typedef void (*kv_shm_scan_fn)(void *ctx, const void *key, size_t klen);

/* One step of a cursor scan. Start with cursor 0; continue with *next_cursor until it is
 * 0. Every key that exists for the whole scan is reported at least once, even while the
 * index grows; a key may be reported more than once. Only keys beginning with prefix
 * (plen bytes, may be 0) are reported. count bounds the work of a step (about count keys,
 * or count * 8 empty buckets). */
int kv_shm_scan(struct kv_shm_store *s, uint64_t cursor, const void *prefix, size_t plen,
                size_t count, kv_shm_scan_fn fn, void *ctx, uint64_t *next_cursor);
/* The same, over the keys of database db only. */
int kv_shm_db_scan(struct kv_shm_store *s, unsigned db, uint64_t cursor, const void *prefix,
                   size_t plen, size_t count, kv_shm_scan_fn fn, void *ctx,
                   uint64_t *next_cursor);

/* Removes every key of every database. Keys written concurrently with the flush may
 * survive it. */
int kv_shm_flush(struct kv_shm_store *s);

/* One step of the incremental expiry sweep: looks at up to max_work buckets and removes
 * their expired items. Returns the number removed (>= 0). Called from a timer. */
int kv_shm_sweep(struct kv_shm_store *s, size_t max_work);

#define KV_SHM_MAX_CLASSES 48

struct kv_shm_class_stats {
    uint32_t chunk_size;  /* bytes per chunk; 0 for the large-item row */
    uint64_t pages;       /* pages owned by the class */
    uint64_t chunks_used; /* items (and index overflow lines, class 0) */
    uint64_t chunks_free; /* on the free list or not yet carved */
    uint64_t bytes_used;  /* chunks_used * chunk_size (pages * page size for large) */
};

/* Why recovery dropped an item (kv_shm_stats.dropped_why). */
enum kv_shm_drop_reason {
    KV_SHM_DROP_BOUNDS,    /* slot names a place outside the data, or misaligned */
    KV_SHM_DROP_HEADER,    /* no item header there, or one that cannot be this item's */
    KV_SHM_DROP_OVERLAP,   /* its chunk or pages are claimed by another item already */
    KV_SHM_DROP_CHECKSUM,  /* header sound, bytes damaged */
    KV_SHM_DROP_DUPLICATE, /* a second item of the same key: the newer version is kept */
    KV_SHM_DROP_NOROOM,    /* misplaced, and no index line to move it to */
    KV_SHM_DROP_LINK,      /* in lines a damaged overflow link cut off the index */
    KV_SHM_DROP_REASONS
};

struct kv_shm_stats {
    uint64_t keys;          /* items in the index (expired ones not yet removed included) */
    uint64_t segment_size;  /* bytes */
    uint64_t bytes_used;    /* metadata + index + chunks and pages holding items */
    uint64_t bytes_free;    /* free chunks + free pages */
    uint64_t page_size;
    uint64_t pages_total, pages_free;
    uint64_t index_buckets; /* active buckets */
    uint64_t index_bytes;   /* bucket pages + overflow lines */
    uint64_t hits, misses;  /* get / exists / ttl lookups, since the segment was created */
    uint64_t evictions;     /* items evicted by LRU */
    uint64_t expired;       /* items removed because they expired (lazy + sweep) */
    uint64_t corrupt;       /* items that failed their checksum at run time */
    uint64_t pages_compacted; /* pages emptied by moving their items into their class's others */
    uint64_t pages_evicted;   /* pages emptied by evicting every item in them (LRU) */
    uint64_t items_moved;     /* items moved by compaction */
    uint64_t generation;    /* number of opens of the segment */
    uint64_t huge_bytes;    /* bytes of this process's mapping on huge pages (README) */
    int recovered;          /* 1 when this open ran recovery */
    uint64_t recovered_items, dropped_items; /* at this open: kept / dropped by recovery */
    uint64_t dropped_why[KV_SHM_DROP_REASONS];
    uint64_t batches_undone; /* multi-key writes a kill interrupted, undone at this open */
    uint64_t recovery_ns;   /* time recovery took at this open */
    uint64_t restored_items; /* at this open: slots whose item was torn (a power loss), for
                              * which recovery found the key's previous copy */
    unsigned nclasses;      /* rows in cls[]; the last row is the large-item pages */
    struct kv_shm_class_stats cls[KV_SHM_MAX_CLASSES + 1];
};

/* Bytes of this process's mapping of the segment that huge (PMD) pages map
 * now, read from /proc/self/smaps (0 when none or unknown). Lookups of a
 * store larger than the TLB's reach run ~20% faster on huge pages: see
 * README, "Huge pages". */
uint64_t kv_shm_huge_bytes(const struct kv_shm_store *s);

/* Fills *out. Counts are summed without stopping writers: each exact, not mutually atomic.
 * huge_bytes is kv_shm_huge_bytes() read at most once per KV_SHM_HUGE_CACHE_NS (the
 * smaps walk costs more than everything else here together); the first call reads it. */
#define KV_SHM_HUGE_CACHE_NS 1000000000ull
int kv_shm_stats(struct kv_shm_store *s, struct kv_shm_stats *out);

/* --sync (cfg->sync) of a --data-file store: a thread flushes the mapping (msync
 * MS_SYNC), and frees wait for the next completed flush so that a torn image (a power
 * loss) never has an index naming reused bytes; README, "Power loss". A shm store, an
 * attach handle and --sync no have none of it (policy KV_SYNC_NO, all counts 0). */
struct kv_shm_sync_stats {
    int policy;             /* enum kv_sync in effect */
    int deferring;          /* frees wait for a sync */
    uint64_t started;       /* syncs begun; a write counted before `started` was read is
                             * covered by every sync numbered above it */
    uint64_t completed;     /* syncs that succeeded */
    uint64_t last_ok;       /* the number of the last one that succeeded (0 = none) */
    uint64_t errors;        /* syncs that failed (msync said last_errno) */
    int last_errno;
    int64_t last_start_ms, last_done_ms; /* CLOCK_REALTIME: the last begun; the last done well */
    uint64_t last_us, max_us, total_us;  /* time msync took */
    uint64_t chunks_waiting; /* freed chunks waiting for a sync now */
    uint64_t moved_waiting;  /* split slots waiting for a sync now */
    uint64_t released;       /* chunks freed after a sync, in all */
};
void kv_shm_sync_stats(struct kv_shm_store *s, struct kv_shm_sync_stats *out);

/* With --sync always: returns once a sync that began after every write this thread has
 * made (every write call that returned before) has completed; one sync serves every
 * thread waiting at once. 0 at once for the other policies and stores; KV_EIO when that
 * sync failed (the write is in memory, not known to be on disk); KV_ECLOSED when the
 * store began to close first. */
int kv_shm_sync_barrier(struct kv_shm_store *s);

/* The errno of the last sync when it failed; 0 when it succeeded, when none has run yet,
 * and without --sync. Writes are refused meanwhile (the server's policy, README "Power
 * loss"): what they would acknowledge could not be made durable. */
int kv_shm_sync_failing(const struct kv_shm_store *s);

/* Runs a sync now and waits for it (a plain msync for a data file without --sync): what
 * was written before the call is on disk when it returns 0; KV_EIO when msync failed. */
int kv_shm_sync_now(struct kv_shm_store *s);

/* Test knob: while hold is 1 no sync begins (the thread waits; a writer short of memory
 * does not run one), so that a copy of the file read meanwhile is an image a power loss
 * could leave: every page of it no older than the start of the last completed sync. */
void kv_shm_sync_hold(struct kv_shm_store *s, int hold);

#endif
