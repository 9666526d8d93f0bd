/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_batch.c -- multi-key writes that are all or nothing (MSET, MSETNX, and
 * RENAME / RENAMENX / MOVE / COPY: kv_shm_rename, at the end).
 *
 * To other clients: every stripe the batch's keys fall in is taken exclusively, in
 * ascending stripe order (so two batches never wait for each other in a cycle, and single
 * stripe holders -- readers, writers, splits, eviction -- never hold a second), before the
 * first key is published and until the last one is; a reader of any of the keys sees the
 * batch wholly before or wholly after.
 *
 * Across a kill -9: every item is complete before anything is published. The batch then
 * claims a row of hdr->batch with the offset of its undo log, an unindexed blob in the
 * segment, and for each key appends {slot, new word, old word} to the log before it stores
 * the new word into the slot. Clearing the row is the commit: one atomic store. The old
 * items are freed only after it. Recovery's first step (kv_shm_batch_undo) puts back the
 * old word of every logged slot that still holds the new one, for every row still set: a
 * batch whose commit was not reached vanishes whole, and the items of either side that end
 * up unreachable are reclaimed like any others. Undo is idempotent, so a kill during
 * recovery repeats it harmlessly.
 *
 * The log blob is laid out as an item (so large logs use the same page lists): magic
 * SHM_LOG_MAGIC, klen 0, vlen 24 * capacity, `version` = entries written so far. */
#include <sched.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

#include "kv_mem.h"
#include "shm_int.h"

struct entry {
    uint64_t slot;   /* segment offset of the slot word, with check bits at 48.. */
    uint64_t nw, ow; /* the word stored, the word it replaced (0: the slot was empty) */
};

static uint64_t entry_check(uint64_t slot, uint64_t nw, uint64_t ow)
{
    return (kv_shm_mix64(slot ^ kv_shm_mix64(nw ^ 0xB47Cull) ^ (ow * 3)) >> 48) << 48;
}

struct bkey {
    uint64_t h, off, ow;
    uint64_t *slot;
    unsigned cls;
    int inserted;
};

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The stripes of the batch, ascending and distinct; returns their count. */
static size_t stripes_of(const struct bkey *k, size_t n, uint32_t *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (uint32_t)(k[i].h & (SHM_STRIPES - 1));
    qsort(out, n, sizeof(*out), cmp_u32);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || out[m - 1] != out[i])
            out[m++] = out[i];
    return m;
}

static void lock_all(struct kv_shm_store *s, const uint32_t *st, size_t m)
{
    for (size_t i = 0; i < m; i++)
        pthread_rwlock_wrlock(&s->stripes[st[i]].lock);
}

static void unlock_all(struct kv_shm_store *s, const uint32_t *st, size_t m)
{
    for (size_t i = m; i-- > 0;)
        pthread_rwlock_unlock(&s->stripes[st[i]].lock);
}

/* A log blob that can be read without leaving the data area, or NULL. */
static struct shm_item *log_check(const struct kv_shm_store *s, uint64_t off)
{
    if (off < s->data_off || off + SHM_ITEM_HDR > s->data_end || off % 8)
        return NULL;
    struct shm_item *log = shm_ptr(s, off);
    uint64_t size = SHM_ITEM_HDR + (uint64_t)log->vlen;
    if (log->magic != SHM_LOG_MAGIC || log->klen != 0 ||
        log->version > log->vlen / sizeof(struct entry))
        return NULL;
    if (log->cls == SHM_CLASS_LARGE) /* its page list is bounds-checked as it is read */
        return ((off - s->data_off) % SHM_PAGE == 0 && kv_shm_large_pages(size)) ? log : NULL;
    return log->cls < s->n_classes && size <= s->csize[log->cls] && off + size <= s->data_end
               ? log
               : NULL;
}

/* A free row of hdr->batch, holding log_off (spins only while 64 batches run at once). */
static unsigned row_claim(struct kv_shm_store *s, uint64_t log_off)
{
    for (unsigned r = 0;; r = (r + 1) % SHM_BATCH_ROWS) {
        uint64_t zero = 0;
        if (__atomic_compare_exchange_n(&s->hdr->batch[r], &zero, log_off, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            return r;
        if (r == SHM_BATCH_ROWS - 1)
            sched_yield();
    }
}

/* Puts back what the first n keys of a batch replaced (locks held, not committed). */
static void undo_in_memory(struct kv_shm_store *s, struct bkey *k, size_t n, unsigned pdb)
{
    for (size_t i = n; i-- > 0;) {
        __atomic_store_n(k[i].slot, k[i].ow, __ATOMIC_RELEASE);
        if (k[i].inserted) {
            __atomic_sub_fetch(&shm_stripe_of(s, k[i].h)->keys, 1, __ATOMIC_RELAXED);
            shm_db_count(s, pdb, -1);
        }
        k[i].inserted = 0;
    }
}

static void free_items(struct kv_shm_store *s, struct bkey *k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        kv_shm_free_unpublished(s, k[i].off); /* never, or no longer, any key's state */
}

static int key_ok(const struct kv_shm_store *s, const struct kv_shm_pair *p)
{
    return p->key && p->klen >= 1 && p->klen <= s->max_key && (p->val || !p->vlen) &&
           p->vlen <= UINT32_MAX;
}

/* One attempt: KV_EAGAIN when an index line could not be had (nothing changed; the
 * caller makes room and tries again). */
static int mset_once(struct kv_shm_store *s, unsigned db, const struct kv_shm_pair *p, size_t n,
                     const struct kv_shm_set_opts *o, struct bkey *k, const uint32_t *st, size_t m,
                     uint64_t *versions)
{
    unsigned pdb = shm_db_phys(s, db); /* checked again under the locks (SWAPDB) */
    int64_t now = kv_shm_now_ms();
    int64_t expire = o->ttl_ms <= 0 ? 0 : o->ttl_ms > INT64_MAX - now ? INT64_MAX : now + o->ttl_ms;
    size_t got = 0;
    int rc = 0;
    for (; got < n && rc == 0; got++) {
        rc = kv_shm_alloc_room(s, SHM_ITEM_HDR + p[got].klen + p[got].vlen, &k[got].off,
                               &k[got].cls);
        if (rc)
            break;
        uint64_t ver = kv_shm_version_next(s);
        kv_shm_item_fill(s, k[got].off, k[got].cls, pdb, p[got].key, p[got].klen, p[got].val,
                         NULL, p[got].vlen, ver, expire, now);
        if (versions)
            versions[got] = ver;
    }
    uint64_t log_off = 0;
    unsigned log_cls = 0;
    size_t log_bytes = SHM_ITEM_HDR + n * sizeof(struct entry);
    /* in a transaction (shm_txn.c) its log takes the entries, and its commit is ours */
    if (rc == 0 && !s->txn &&
        (log_bytes > UINT32_MAX || (rc = kv_shm_alloc_room(s, log_bytes, &log_off, &log_cls))))
        rc = rc ? rc : KV_ETOOBIG;
    if (rc) {
        free_items(s, k, got);
        return rc;
    }
    struct shm_item *log = log_off ? shm_ptr(s, log_off) : NULL;
    if (log) {
        memset(log, 0, SHM_ITEM_HDR);
        log->magic = SHM_LOG_MAGIC;
        log->cls = (uint8_t)log_cls;
        log->vlen = (uint32_t)(log_bytes - SHM_ITEM_HDR);
    }
    uint64_t log_pages = log_cls == SHM_CLASS_LARGE ? kv_shm_large_pages(log_bytes) : 1;

    lock_all(s, st, m);
    if (shm_db_phys(s, db) != pdb) { /* a SWAPDB came in between: not published, reseal */
        pdb = shm_db_phys(s, db);
        for (size_t i = 0; i < n; i++) {
            struct shm_item *it = shm_ptr(s, k[i].off);
            it->db = (uint16_t)pdb;
            it->crc = kv_shm_item_crc(s, it);
        }
    }
    if (o->flags & KV_SHM_NX) {
        for (size_t i = 0; i < n && rc == 0; i++) {
            struct shm_item *it;
            if (kv_shm_index_find(s, kv_shm_index_bucket(s, k[i].h), k[i].h, pdb, p[i].key,
                                  p[i].klen, &it) &&
                !(it->expire_ms && it->expire_ms <= now))
                rc = KV_EEXISTS;
        }
    }
    unsigned row = 0;
    size_t done = 0;
    if (rc == 0) {
        if (log)
            row = row_claim(s, log_off);
        for (; done < n; done++) {
            struct bkey *e = &k[done];
            struct shm_item *it;
            uint64_t b = kv_shm_index_bucket(s, e->h);
            e->slot = kv_shm_index_find(s, b, e->h, pdb, p[done].key, p[done].klen, &it);
            e->inserted = !e->slot;
            if (!e->slot && kv_shm_index_reserve(s, b, &e->slot)) {
                rc = KV_EAGAIN;
                break;
            }
            e->ow = *e->slot;
            uint64_t nw = shm_word(e->off, e->cls, e->h);
            if (!log) {
                if (kv_shm_txn_log(s, e->slot, nw) != 0) {
                    rc = KV_ENOMEM; /* the transaction's log cannot grow */
                    break;
                }
            } else {
                uint64_t so = (uint64_t)((uint8_t *)e->slot - s->base);
                struct entry ent = {so | entry_check(so, nw, e->ow), nw, e->ow};
                kv_shm_item_write(s, log_off, log_pages, SHM_ITEM_HDR + done * sizeof(ent),
                                  &ent, sizeof(ent));
                __atomic_store_n(&log->version, done + 1, __ATOMIC_RELEASE); /* entries written */
                if (done)
                    kv_shm_crash_point(s, KV_SHM_CRASH_BATCH);
            }
            __atomic_store_n(e->slot, nw, __ATOMIC_RELEASE);
            if (e->inserted) {
                __atomic_add_fetch(&shm_stripe_of(s, e->h)->keys, 1, __ATOMIC_RELAXED);
                shm_db_count(s, pdb, 1);
            }
        }
        if (rc)
            undo_in_memory(s, k, done, pdb);
        if (log)
            __atomic_store_n(&s->hdr->batch[row], 0, __ATOMIC_RELEASE); /* the commit */
    }
    unlock_all(s, st, m);
    if (log_off)
        kv_shm_free(s, log_off);
    if (rc) {
        free_items(s, k, n);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if (k[i].ow && !k[i].inserted)
            kv_shm_free_replaced(s, SHM_WORD_OFF(k[i].ow)); /* --sync: see shm_int.h */
        else if (k[i].inserted)
            kv_shm_index_grow(s, k[i].h);
    }
    return 0;
}

int kv_shm_mset(struct kv_shm_store *s, const struct kv_shm_pair *pairs, size_t n,
                const struct kv_shm_set_opts *opts, uint64_t *versions)
{
    return kv_shm_db_mset(s, 0, pairs, n, opts, versions);
}

int kv_shm_db_mset(struct kv_shm_store *s, unsigned db, const struct kv_shm_pair *pairs,
                   size_t n, const struct kv_shm_set_opts *opts, uint64_t *versions)
{
    static const struct kv_shm_set_opts none;
    const struct kv_shm_set_opts *o = opts ? opts : &none;
    if ((!pairs && n) || o->ttl_ms < 0 || (o->flags & ~KV_SHM_NX) || db >= SHM_MAX_DB)
        return KV_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!key_ok(s, &pairs[i]))
            return KV_EINVAL;
    if (n == 0)
        return 0;
    struct bkey *k = kv_mem_calloc(KV_MOD_SHM, n * sizeof(*k));
    uint32_t *st = kv_mem_alloc(KV_MOD_SHM, n * sizeof(*st));
    int rc = KV_ENOMEM;
    if (k && st) {
        for (size_t i = 0; i < n; i++)
            k[i].h = kv_shm_hash(s, pairs[i].key, pairs[i].klen);
        size_t m = stripes_of(k, n, st);
        for (int attempt = 0;; attempt++) {
            rc = mset_once(s, db, pairs, n, o, k, st, m, versions);
            if (rc != KV_EAGAIN)
                break;
            if (attempt >= ROOM_TRIES || kv_shm_line_room(s, attempt)) {
                rc = KV_ENOMEM;
                break;
            }
        }
    }
    kv_mem_free(KV_MOD_SHM, k);
    kv_mem_free(KV_MOD_SHM, st);
    return rc;
}

/* ---- RENAME, RENAMENX, MOVE, COPY -------------------------------------------------------
 * The same undo log with at most two entries: {destination slot, new item, what the slot
 * held} and, unless copying, {source slot, 0, the source}. Both keys' stripes are held, in
 * ascending order, from the lookups to the commit, so no other client sees the key under
 * both names or under neither. The destination item is built from the source item under
 * the locks (the allocator takes no stripe); when there is no room the locks are dropped,
 * room is made, and everything starts again from the lookups. A kill before the commit is
 * undone by recovery (the source is back, the destination as it was); after it, both
 * entries are done. */
static void log_put(struct kv_shm_store *s, struct shm_item *log, uint64_t log_off, size_t i,
                    const uint64_t *slot, uint64_t nw, uint64_t ow)
{
    uint64_t so = (uint64_t)((const uint8_t *)slot - s->base);
    struct entry ent = {so | entry_check(so, nw, ow), nw, ow};
    kv_shm_item_write(s, log_off, 1, SHM_ITEM_HDR + i * sizeof(ent), &ent, sizeof(ent));
    __atomic_store_n(&log->version, i + 1, __ATOMIC_RELEASE); /* entries written */
}

int kv_shm_rename(struct kv_shm_store *s, unsigned sdb, const void *skey, size_t sklen,
                  unsigned ddb, const void *dkey, size_t dklen, uint32_t flags,
                  uint64_t *version)
{
    if (!skey || !dkey || sklen < 1 || sklen > s->max_key || dklen < 1 || dklen > s->max_key ||
        sdb >= SHM_MAX_DB || ddb >= SHM_MAX_DB || (flags & ~(KV_SHM_MV_NX | KV_SHM_MV_COPY)))
        return KV_EINVAL;
    int same = sdb == ddb && sklen == dklen && memcmp(skey, dkey, sklen) == 0;
    uint64_t hs = kv_shm_hash(s, skey, sklen), hd = same ? hs : kv_shm_hash(s, dkey, dklen);
    uint32_t st[2] = {(uint32_t)(hs & (SHM_STRIPES - 1)), (uint32_t)(hd & (SHM_STRIPES - 1))};
    size_t m = st[0] == st[1] ? 1 : 2;
    if (m == 2 && st[0] > st[1]) {
        uint32_t t = st[0];
        st[0] = st[1];
        st[1] = t;
    }
    const size_t log_bytes = SHM_ITEM_HDR + 2 * sizeof(struct entry);
    for (int attempt = 0;; attempt++) {
        int64_t now = kv_shm_now_ms();
        uint64_t off = 0, log_off = 0, ver = 0, dold = 0, sold = 0, bd = 0, *dslot = NULL;
        unsigned cls = 0, log_cls = 0;
        size_t need = 0;
        int rc = 0, inserted = 0, line = 0, txn_full = 0;
        struct shm_item *sit, *dit = NULL;
        lock_all(s, st, m);
        unsigned ps = shm_db_phys(s, sdb), pd = shm_db_phys(s, ddb);
        uint64_t *sslot =
            kv_shm_index_find(s, kv_shm_index_bucket(s, hs), hs, ps, skey, sklen, &sit);
        if (!sslot || (sit->expire_ms && sit->expire_ms <= now))
            rc = KV_ENOTFOUND;
        else if (same)
            rc = flags ? KV_EEXISTS : 0;
        if (rc == 0 && !same) {
            bd = kv_shm_index_bucket(s, hd);
            dslot = kv_shm_index_find(s, bd, hd, pd, dkey, dklen, &dit);
            if ((flags & KV_SHM_MV_NX) && dslot && !(dit->expire_ms && dit->expire_ms <= now))
                rc = KV_EEXISTS;
        }
        if (rc == 0 && !same) {
            need = SHM_ITEM_HDR + dklen + sit->vlen;
            rc = kv_shm_alloc(s, need, &off, &cls);
            /* in a transaction (shm_txn.c) its log takes the entries, and its commit is ours */
            if (rc == 0 && !s->txn && (rc = kv_shm_alloc(s, log_bytes, &log_off, &log_cls)) != 0)
                need = log_bytes;
            if (rc == 0 && !dslot) {
                inserted = 1;
                if (kv_shm_index_reserve(s, bd, &dslot)) {
                    rc = KV_ENOMEM;
                    line = 1;
                }
            }
            if (rc) {
                if (off)
                    kv_shm_free_unpublished(s, off);
                if (log_off)
                    kv_shm_free(s, log_off);
                off = log_off = 0;
                inserted = 0;
            }
        }
        if (rc == 0 && !same) {
            ver = kv_shm_version_next(s);
            kv_shm_item_fill(s, off, cls, pd, dkey, dklen, NULL, sit, sit->vlen, ver,
                             sit->expire_ms, now);
            struct shm_item *log = log_off ? shm_ptr(s, log_off) : NULL;
            unsigned row = 0;
            if (log) {
                memset(log, 0, SHM_ITEM_HDR);
                log->magic = SHM_LOG_MAGIC;
                log->cls = (uint8_t)log_cls;
                log->vlen = (uint32_t)(log_bytes - SHM_ITEM_HDR);
                row = row_claim(s, log_off);
            }
            uint64_t nw = shm_word(off, cls, hd), ow = *dslot;
            if (log)
                log_put(s, log, log_off, 0, dslot, nw, ow);
            else if (kv_shm_txn_log(s, dslot, nw) != 0)
                rc = KV_ENOMEM; /* the transaction's log cannot grow: nothing changed */
            if (rc == 0) {
                __atomic_store_n(dslot, nw, __ATOMIC_RELEASE);
                if (inserted) {
                    __atomic_add_fetch(&shm_stripe_of(s, hd)->keys, 1, __ATOMIC_RELAXED);
                    shm_db_count(s, pd, 1);
                }
                dold = ow ? SHM_WORD_OFF(ow) : 0;
            }
            if (rc == 0 && !(flags & KV_SHM_MV_COPY)) {
                kv_shm_crash_point(s, KV_SHM_CRASH_BATCH); /* under both names */
                uint64_t sw = *sslot;
                if (log) {
                    log_put(s, log, log_off, 1, sslot, 0, sw);
                } else if (kv_shm_txn_log(s, sslot, 0) != 0) {
                    /* the destination goes back as it was (the transaction's log holds
                     * its old word too, so recovery agrees) */
                    __atomic_store_n(dslot, ow, __ATOMIC_RELEASE);
                    if (inserted) {
                        __atomic_sub_fetch(&shm_stripe_of(s, hd)->keys, 1, __ATOMIC_RELAXED);
                        shm_db_count(s, pd, -1);
                    }
                    dold = 0;
                    rc = KV_ENOMEM;
                }
                if (rc == 0) {
                    shm_gone_mark(s, hs, NULL, 0); /* a live key left this name */
                    __atomic_store_n(sslot, 0, __ATOMIC_RELEASE);
                    __atomic_sub_fetch(&shm_stripe_of(s, hs)->keys, 1, __ATOMIC_RELAXED);
                    shm_db_count(s, ps, -1);
                    sold = SHM_WORD_OFF(sw);
                }
            }
            if (log)
                __atomic_store_n(&s->hdr->batch[row], 0, __ATOMIC_RELEASE); /* the commit */
            if (rc) { /* only in a transaction: the new item was never reachable */
                kv_shm_free_unpublished(s, off);
                off = 0;
                inserted = 0;
                txn_full = 1;
            }
        }
        unlock_all(s, st, m);
        if (rc == KV_ENOMEM && !txn_full && kv_shm_room(s, attempt, need, line) == 0)
            continue;
        if (rc)
            return rc;
        if (log_off)
            kv_shm_free(s, log_off);
        if (dold)
            kv_shm_free_replaced(s, dold); /* --sync: the key lives on (shm_int.h) */
        if (sold)
            kv_shm_free(s, sold);
        if (inserted)
            kv_shm_index_grow(s, hd);
        if (version)
            *version = ver;
        return 0;
    }
}

uint64_t kv_shm_batch_undo(struct kv_shm_store *s)
{
    uint64_t undone = 0;
    for (unsigned r = 0; r < SHM_BATCH_ROWS; r++) {
        uint64_t off = s->hdr->batch[r];
        /* nothing here is trusted: bounds, magic and each entry's check bits */
        struct shm_item *log = off ? log_check(s, off) : NULL;
        for (uint64_t i = log ? log->version : 0; i-- > 0;) {
            struct entry e;
            kv_shm_item_read(s, log, SHM_ITEM_HDR + i * sizeof(e), &e, sizeof(e));
            uint64_t so = e.slot & 0xFFFFFFFFFFFFull;
            /* a slot, or (SWAPDB inside a transaction) a word of the database maps and
             * their selector in the header page */
            int in_dbs = so >= SHM_DBS_OFF && so + 8 <= SHM_DBS_OFF + offsetof(struct shm_dbs, keys);
            if ((e.slot & ~0xFFFFFFFFFFFFull) != entry_check(so, e.nw, e.ow) ||
                (!in_dbs && (so < s->data_off || so + 8 > s->data_end)) || so % 8)
                continue;
            uint64_t *slot = shm_ptr(s, so);
            if (*slot == e.nw)
                *slot = e.ow;
        }
        undone += log != NULL;
        s->hdr->batch[r] = 0;
    }
    return undone;
}
