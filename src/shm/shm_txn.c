/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_txn.c -- transaction mode: any number of store calls as one crash-atomic
 * unit (EXEC), and the version lookup behind WATCH.
 *
 * The caller guarantees that nothing else changes the store between kv_shm_txn_begin and
 * kv_shm_txn_commit (the server's gate: no other handler and no sweep runs). Meanwhile:
 *
 * - every change of an index slot is first appended to an undo log {slot, new word, old
 *   word} in the segment -- the very format of a multi-key write's log (shm_batch.c), in
 *   a row of hdr->batch -- so recovery's kv_shm_batch_undo puts back every slot a
 *   transaction killed before its commit changed, newest first;
 * - frees are deferred to the commit (an undone slot points at the old item again, so it
 *   must still be there), and so are index splits (they move slots);
 * - eviction and compaction are off (they move or drop items behind the log's back): an
 *   allocation that needs them fails with KV_ENOMEM, an error of that one call;
 * - the per-thread spare chunks are not used.
 *
 * Clearing the row is the commit: one atomic store, made before the caller answers. The
 * log grows by copying into a larger blob and switching the row to it (one atomic store;
 * either blob is whole at every instant). */
#include <stddef.h>
#include <string.h>

#include "kv_mem.h"
#include "shm_int.h"

struct txn_entry { /* as shm_batch.c's struct entry */
    uint64_t slot;
    uint64_t nw, ow;
};

#define TXN_LOG_FIRST 64    /* entries of the first log */
#define TXN_GROW_MAX 4096   /* index splits remembered for the commit */

struct shm_txn {
    unsigned row;            /* our row of hdr->batch */
    uint64_t log_off;        /* the log blob (row's value) */
    unsigned log_cls;
    uint64_t cap, n;         /* entries the log holds / has */
    uint64_t *frees;         /* owned (KV_MOD_SHM): offsets to free at the commit, bit 0
                              * set for a replaced item (kv_shm_free_replaced) */
    size_t nfrees, capfrees;
    uint64_t grows[TXN_GROW_MAX]; /* hashes of keys inserted: kv_shm_index_grow at commit */
    size_t ngrows;
};

/* Same check bits as shm_batch.c's entries, so that recovery reads ours alike. */
static uint64_t entry_check(uint64_t slot, uint64_t nw, uint64_t ow)
{
    return (kv_shm_mix64(slot ^ kv_shm_mix64(nw ^ 0xB47Cull) ^ (ow * 3)) >> 48) << 48;
}

static int log_new(struct kv_shm_store *s, uint64_t cap, uint64_t *off, unsigned *cls)
{
    size_t bytes = SHM_ITEM_HDR + cap * sizeof(struct txn_entry);
    int rc;

    if (bytes > UINT32_MAX)
        return KV_ENOMEM;
    rc = kv_shm_alloc(s, bytes, off, cls); /* never evicts */
    if (rc)
        return rc;
    struct shm_item *log = shm_ptr(s, *off);
    memset(log, 0, SHM_ITEM_HDR);
    log->magic = SHM_LOG_MAGIC;
    log->cls = (uint8_t)*cls;
    log->vlen = (uint32_t)(bytes - SHM_ITEM_HDR);
    return 0;
}

static uint64_t log_pages(uint64_t cap, unsigned cls)
{
    return cls == SHM_CLASS_LARGE ? kv_shm_large_pages(SHM_ITEM_HDR + cap * sizeof(struct txn_entry))
                                  : 1;
}

/* Makes t's log the one of its row (a row claimed now). */
static void row_take(struct kv_shm_store *s, struct shm_txn *t)
{
    for (unsigned r = 0;; r = (r + 1) % SHM_BATCH_ROWS) { /* as shm_batch.c's row_claim */
        uint64_t zero = 0;

        if (__atomic_compare_exchange_n(&s->hdr->batch[r], &zero, t->log_off, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            t->row = r;
            return;
        }
    }
}

/* The first log, when the begin found no room for it (a full store without eviction):
 * as small as it takes, so that a transaction that changes a few slots (a DEL that makes
 * room) still runs. KV_ENOMEM: not even that. */
static int log_first(struct kv_shm_store *s, struct shm_txn *t)
{
    int rc = KV_ENOMEM;

    for (uint64_t cap = TXN_LOG_FIRST; cap >= 2 && rc == KV_ENOMEM; cap /= 4)
        if ((rc = log_new(s, cap, &t->log_off, &t->log_cls)) == 0)
            t->cap = cap;
    if (rc == 0)
        row_take(s, t);
    return rc;
}

int kv_shm_txn_begin(struct kv_shm_store *s)
{
    struct shm_txn *t;
    int rc;

    if (s->txn)
        return KV_EINVAL;
    /* the grows[] array (32 KiB) is not zeroed: only its first ngrows are ever read (a
     * calloc of it was a third of an EXEC of 10 SETs' instructions) */
    t = kv_mem_alloc(KV_MOD_SHM, sizeof(*t));
    if (!t)
        return KV_ENOMEM;
    memset(t, 0, offsetof(struct shm_txn, grows));
    t->ngrows = 0;
    rc = log_new(s, TXN_LOG_FIRST, &t->log_off, &t->log_cls);
    if (rc == KV_ENOMEM && kv_shm_make_room(s, SHM_ITEM_HDR + TXN_LOG_FIRST * 24, 0) == 0)
        rc = log_new(s, TXN_LOG_FIRST, &t->log_off, &t->log_cls);
    if (rc == KV_ENOMEM) {
        /* no room (and none to be made): the log comes with the first change
         * (log_first), so that reads, and changes that fit, still run */
        t->log_off = 0;
        s->txn = t;
        return 0;
    }
    if (rc) {
        kv_mem_free(KV_MOD_SHM, t);
        return rc;
    }
    t->cap = TXN_LOG_FIRST;
    row_take(s, t);
    s->txn = t;
    return 0;
}

/* A log of twice the room holding every entry so far; the row switches to it. */
static int log_grow(struct kv_shm_store *s, struct shm_txn *t)
{
    uint64_t ncap = t->cap * 2, off;
    unsigned cls;
    struct shm_item *old = shm_ptr(s, t->log_off);
    struct txn_entry e;
    int rc = log_new(s, ncap, &off, &cls);

    if (rc)
        return rc;
    for (uint64_t i = 0; i < t->n; i++) {
        kv_shm_item_read(s, old, SHM_ITEM_HDR + i * sizeof(e), &e, sizeof(e));
        kv_shm_item_write(s, off, log_pages(ncap, cls), SHM_ITEM_HDR + i * sizeof(e), &e,
                          sizeof(e));
    }
    __atomic_store_n(&((struct shm_item *)shm_ptr(s, off))->version, t->n, __ATOMIC_RELEASE);
    __atomic_store_n(&s->hdr->batch[t->row], off, __ATOMIC_RELEASE); /* the new log is whole */
    kv_shm_txn_defer_free(s, t->log_off, 1);
    t->log_off = off;
    t->log_cls = cls;
    t->cap = ncap;
    return 0;
}

int kv_shm_txn_log(struct kv_shm_store *s, uint64_t *slot, uint64_t nw)
{
    struct shm_txn *t = s->txn;
    uint64_t ow = __atomic_load_n(slot, __ATOMIC_RELAXED);
    uint64_t so = (uint64_t)((uint8_t *)slot - s->base);
    struct txn_entry e = {so | entry_check(so, nw, ow), nw, ow};
    int rc;

    if (t->n == t->cap && (rc = t->log_off ? log_grow(s, t) : log_first(s, t)) != 0)
        return rc;
    kv_shm_item_write(s, t->log_off, log_pages(t->cap, t->log_cls),
                      SHM_ITEM_HDR + t->n * sizeof(e), &e, sizeof(e));
    t->n++;
    __atomic_store_n(&((struct shm_item *)shm_ptr(s, t->log_off))->version, t->n,
                     __ATOMIC_RELEASE); /* entries written: before the slot changes */
    if (t->n > 1)
        kv_shm_crash_point(s, KV_SHM_CRASH_BATCH);
    return 0;
}

int kv_shm_txn_defer_free(struct kv_shm_store *s, uint64_t off, int dead)
{
    struct shm_txn *t = s->txn;

    if (t->nfrees == t->capfrees) {
        size_t ncap = t->capfrees ? t->capfrees * 2 : 64;
        uint64_t *n = kv_mem_realloc(KV_MOD_SHM, t->frees, ncap * sizeof(*n));

        if (!n)
            return 1; /* leaked until the next recovery: never freed under a live undo */
        t->frees = n;
        t->capfrees = ncap;
    }
    t->frees[t->nfrees++] = off | (dead ? 0 : 1); /* chunk offsets are 8-aligned */
    return 1;
}

void kv_shm_txn_defer_grow(struct kv_shm_store *s, uint64_t h)
{
    struct shm_txn *t = s->txn;

    if (t->ngrows < TXN_GROW_MAX)
        t->grows[t->ngrows++] = h;
}

void kv_shm_txn_commit(struct kv_shm_store *s)
{
    struct shm_txn *t = s->txn;

    if (!t)
        return;
    kv_shm_crash_point(s, KV_SHM_CRASH_BATCH);
    if (t->log_off) /* none: nothing was changed */
        __atomic_store_n(&s->hdr->batch[t->row], 0, __ATOMIC_RELEASE); /* the commit */
    s->txn = NULL;
    if (t->log_off)
        kv_shm_free(s, t->log_off);
    for (size_t i = 0; i < t->nfrees; i++) {
        if (t->frees[i] & 1)
            kv_shm_free_replaced(s, t->frees[i] & ~(uint64_t)1);
        else
            kv_shm_free(s, t->frees[i]);
    }
    for (size_t i = 0; i < t->ngrows; i++)
        kv_shm_index_grow(s, t->grows[i]);
    kv_mem_free(KV_MOD_SHM, t->frees);
    kv_mem_free(KV_MOD_SHM, t);
}

int kv_shm_db_version(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                      uint64_t *version)
{
    if (!key || klen < 1 || klen > s->max_key || db >= SHM_MAX_DB)
        return KV_EINVAL;
    uint64_t h = kv_shm_hash(s, key, klen);
    struct shm_stripe *st = shm_stripe_of(s, h);
    struct shm_item *it;
    int rc = KV_ENOTFOUND;

    pthread_rwlock_rdlock(&st->lock);
    unsigned pdb = shm_db_phys(s, db); /* under a stripe lock: SWAPDB holds them all */
    if (kv_shm_index_find(s, kv_shm_index_bucket(s, h), h, pdb, key, klen, &it) &&
        !(it->expire_ms && it->expire_ms <= kv_shm_now_ms())) {
        *version = it->version;
        rc = 0;
    }
    pthread_rwlock_unlock(&st->lock);
    return rc;
}

int kv_shm_version(struct kv_shm_store *s, const void *key, size_t klen, uint64_t *version)
{
    return kv_shm_db_version(s, 0, key, klen, version);
}

int kv_shm_db_watch(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                    uint64_t *version, uint64_t *mark, uint64_t *now)
{
    if (!key || klen < 1 || klen > s->max_key || db >= SHM_MAX_DB)
        return KV_EINVAL;
    uint64_t h = kv_shm_hash(s, key, klen);
    struct shm_stripe *st = shm_stripe_of(s, h);
    struct shm_item *it;
    int rc = KV_ENOTFOUND;

    *version = *mark = 0;
    pthread_rwlock_rdlock(&st->lock);
    *now = __atomic_load_n(&s->hdr->version_ctr, __ATOMIC_RELAXED);
    unsigned pdb = shm_db_phys(s, db); /* under a stripe lock: SWAPDB holds them all */
    if (kv_shm_index_find(s, kv_shm_index_bucket(s, h), h, pdb, key, klen, &it)) {
        if (!(it->expire_ms && it->expire_ms <= kv_shm_now_ms())) {
            *version = it->version;
            rc = 0;
        } else {
            *mark = it->version; /* a stale key: changed when written after the WATCH */
        }
    }
    if (rc) {
        uint64_t g = __atomic_load_n(&s->gone[shm_gone_cell(h)], __ATOMIC_RELAXED);

        if (g > *mark)
            *mark = g;
    } else {
        *mark = 0;
    }
    uint64_t sw = __atomic_load_n(&s->swapped[db], __ATOMIC_RELAXED); /* SWAPDB holds all */
    if (sw > *mark)
        *mark = sw;
    pthread_rwlock_unlock(&st->lock);
    return rc;
}
