/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/kv_shm.c -- the key-value operations of the store: get, set, del, exists, incr,
 * expire, ttl, scan, flush, sweep, stats.
 *
 * Every write builds a complete, checksummed item in a chunk nobody else can see, then
 * publishes it with one atomic store of its slot word (replacing the old word in place,
 * or filling an empty slot), under the key's stripe lock; the old item is freed only
 * after that store, once the lock is dropped. Readers copy values out under the shared
 * stripe lock and verify the checksum before handing anything out.
 *
 * Lock rules: see shm_int.h. Here: one stripe lock at a time, never held across a call
 * back into the caller (scan collects keys first), except get's alloc callback, which the
 * API documents runs under the lock. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kv_mem.h"
#include "shm_int.h"

static int key_bad(const struct kv_shm_store *s, const void *key, size_t klen)
{
    return !key || klen < 1 || klen > s->max_key || klen > UINT32_MAX;
}

_Static_assert(KV_SHM_MAX_DB == SHM_MAX_DB, "one database limit");
_Static_assert(sizeof(struct shm_hdr) <= SHM_DBS_OFF &&
                   SHM_DBS_OFF + sizeof(struct shm_dbs) <= SHM_HDR_SIZE,
               "the databases fit in the header page after the header");

static int item_expired(const struct shm_item *it, int64_t now)
{
    return it->expire_ms && it->expire_ms <= now;
}

static uint32_t atime_at(const struct kv_shm_store *s, int64_t now)
{
    uint32_t a = (uint32_t)((uint64_t)(now - (int64_t)s->hdr->created_ms) / 4);
    return a >= SHM_ATIME_VOID ? SHM_ATIME_VOID - 1 : a; /* those mark unlinked items (--sync) */
}

static void item_seal(const struct kv_shm_store *s, struct shm_item *it)
{
    it->crc = kv_shm_item_crc(s, it);
}

/* Builds a complete item at off (not yet reachable). The checksum is taken from the
 * header built on the stack and from the caller's key and value, which are in cache,
 * rather than by reading back the chunk just written: that chunk is usually cold, and a
 * read-back waits for its lines to arrive (perf: 8% of a SET -P16 server on the load
 * after the copy). The bytes summed are the bytes stored, so the seal is the same. */
#define COPY_PIECE 16384 /* bytes of a value copied from one item to another at a time */

struct shm_item *kv_shm_item_fill(struct kv_shm_store *s, uint64_t off, unsigned cls,
                                  unsigned pdb, const void *key, size_t klen, const void *val,
                                  const struct shm_item *from, size_t vlen, uint64_t version,
                                  int64_t expire_ms, int64_t now)
{
    _Static_assert(sizeof(struct shm_item) == SHM_ITEM_HDR, "item header layout");
    struct shm_item h = {
        .atime = atime_at(s, now),
        .magic = SHM_ITEM_MAGIC,
        .cls = (uint8_t)cls,
        .db = (uint16_t)pdb,
        .version = version,
        .expire_ms = expire_ms,
        .klen = (uint32_t)klen,
        .vlen = (uint32_t)vlen,
    };
    uint32_t crc = kv_shm_crc32c(0, (const uint8_t *)&h + 8, SHM_ITEM_HDR - 8);
    crc = kv_shm_crc32c(crc, key, klen);
    struct shm_item *it = shm_ptr(s, off);
    uint64_t pages = cls == SHM_CLASS_LARGE ? kv_shm_large_pages(SHM_ITEM_HDR + klen + vlen) : 1;
    if (pages > 1 || from) {
        /* a value over several pages, or copied from another item: piece by piece */
        kv_shm_item_write(s, off, pages, SHM_ITEM_HDR, key, klen);
        uint8_t buf[COPY_PIECE];
        for (size_t pos = 0; pos < vlen;) {
            size_t n = vlen - pos;
            const void *src = buf;
            if (from) {
                n = n < COPY_PIECE ? n : COPY_PIECE;
                kv_shm_item_read(s, from, SHM_ITEM_HDR + from->klen + pos, buf, n);
            } else {
                src = (const uint8_t *)val + pos;
            }
            crc = kv_shm_crc32c(crc, src, n);
            kv_shm_item_write(s, off, pages, SHM_ITEM_HDR + klen + pos, src, n);
            pos += n;
        }
        if (pages > 1)
            crc = kv_shm_crc32c(crc, kv_shm_large_list(s, off, pages), 4 * (pages - 1));
        h.crc = crc;
        memcpy(it, &h, SHM_ITEM_HDR);
        assert(it->crc == kv_shm_item_crc(s, it));
        return it;
    }
    if (vlen)
        crc = kv_shm_crc32c(crc, val, vlen);
    h.crc = crc;
    memcpy(it, &h, SHM_ITEM_HDR);
    memcpy(it->data, key, klen);
    if (vlen)
        memcpy(it->data + klen, val, vlen);
    assert(it->crc == kv_shm_item_crc(s, it));
    return it;
}

uint64_t kv_shm_version_next(struct kv_shm_store *s)
{
    kv_shm_wrote(s); /* every write but a removal takes a version: --sync counts them */
    return __atomic_add_fetch(&s->hdr->version_ctr, 1, __ATOMIC_RELAXED);
}

/* Empties a slot; in transaction mode logged first (KV_ENOMEM: left as it is).
 * it: the item the slot held, NULL when unsound (its database is not known). */
static int slot_clear(struct kv_shm_store *s, struct shm_stripe *st, uint64_t *slot,
                      const struct shm_item *it)
{
    if (s->txn && kv_shm_txn_log(s, slot, 0) != 0)
        return KV_ENOMEM;
    kv_shm_wrote(s);
    shm_gone_mark(s, (uint64_t)(st - s->stripes) | (*slot & 0xFFFF000000000000ull), it,
                  kv_shm_now_ms());
    __atomic_store_n(slot, 0, __ATOMIC_RELEASE);
    __atomic_sub_fetch(&st->keys, 1, __ATOMIC_RELAXED);
    if (it)
        shm_db_count(s, it->db, -1);
    return 0;
}

enum { RM_EXPIRED, RM_CORRUPT };

/* Removes the item a reader found expired or damaged, if that same item is still there
 * (the word could have been replaced between the shared and the exclusive lock). */
static void remove_found(struct kv_shm_store *s, uint64_t h, unsigned pdb, const void *key,
                         size_t klen, uint64_t word, int why)
{
    struct shm_stripe *st = shm_stripe_of(s, h);
    struct shm_item *it;
    uint64_t off = 0;
    pthread_rwlock_wrlock(&st->lock);
    uint64_t *slot = kv_shm_index_find(s, kv_shm_index_bucket(s, h), h, pdb, key, klen, &it);
    if (slot && *slot == word &&
        (why == RM_EXPIRED ? item_expired(it, kv_shm_now_ms())
                           : kv_shm_item_crc(s, it) != it->crc) &&
        slot_clear(s, st, slot, it) == 0) {
        off = SHM_WORD_OFF(word);
        if (why == RM_EXPIRED)
            __atomic_add_fetch(&s->hdr->expired, 1, __ATOMIC_RELAXED);
    }
    pthread_rwlock_unlock(&st->lock);
    if (off)
        kv_shm_free(s, off);
}

uint64_t kv_shm_key_hash(const struct kv_shm_store *s, const void *key, size_t klen)
{
    return kv_shm_hash(s, key, klen);
}

#define PREFETCH_ITEM_MAX 256 /* bytes of an item hinted: bigger ones stream anyway */

void kv_shm_prefetch(struct kv_shm_store *s, uint64_t h, int stage)
{
    uint64_t *line = kv_shm_index_line(s, kv_shm_index_bucket(s, h));
    if (!line)
        return;
    if (stage == 0) {
        __builtin_prefetch(line, 0, 3);
        __builtin_prefetch(&shm_stripe_of(s, h)->lock, 1, 3);
        return;
    }
    uint16_t tag = (uint16_t)(h >> 48);
    for (int i = 0; i < SHM_SLOTS; i++) {
        uint64_t w = __atomic_load_n(&line[i], __ATOMIC_RELAXED);
        uint64_t off = SHM_WORD_OFF(w);
        if (w && SHM_WORD_TAG(w) == tag && off >= s->data_off && off < s->data_end) {
            /* every line of a small item: the lookup checks its checksum and copies the
             * value, so all of them are read (a 100-byte value spans three lines) */
            unsigned c = SHM_WORD_CLS(w);
            uint64_t end = off + (c < s->n_classes ? s->csize[c] : 2 * SHM_LINE);
            end = end < off + PREFETCH_ITEM_MAX ? end : off + PREFETCH_ITEM_MAX;
            end = end < s->data_end ? end : s->data_end;
            for (uint64_t a = off & ~(uint64_t)(SHM_LINE - 1); a < end; a += SHM_LINE)
                __builtin_prefetch(shm_ptr(s, a), 0, 3);
            return;
        }
    }
}

int kv_shm_get(struct kv_shm_store *s, const void *key, size_t klen,
               void *(*alloc)(void *ctx, size_t len), void *ctx, size_t *vlen, uint64_t *version)
{
    return kv_shm_db_get(s, 0, key, klen, alloc, ctx, vlen, version);
}

int kv_shm_db_get(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                  void *(*alloc)(void *ctx, size_t len), void *ctx, size_t *vlen,
                  uint64_t *version)
{
    if (key_bad(s, key, klen))
        return KV_EINVAL;
    return kv_shm_db_get_h(s, db, key, klen, kv_shm_hash(s, key, klen), alloc, ctx, vlen,
                           version);
}

/* The lookup of get, its stripe lock held (shared). *word gets the item's slot word when
 * it is expired (KV_ENOTFOUND) or damaged (KV_ECORRUPT), for the caller to remove. */
static int get_locked(struct kv_shm_store *s, struct shm_stripe *st, unsigned pdb,
                      const void *key, size_t klen, uint64_t h,
                      void *(*alloc)(void *ctx, size_t len), void *ctx, size_t *vlen,
                      uint64_t *version, uint64_t *word, int *why)
{
    struct shm_item *it;
    uint64_t *slot = kv_shm_index_find(s, kv_shm_index_bucket(s, h), h, pdb, key, klen, &it);
    *why = -1;
    if (!slot) {
        __atomic_add_fetch(&st->misses, 1, __ATOMIC_RELAXED);
        return KV_ENOTFOUND;
    }
    int64_t now = kv_shm_now_ms();
    *why = item_expired(it, now)                    ? RM_EXPIRED
           : kv_shm_item_crc(s, it) != it->crc ? RM_CORRUPT
                                                    : -1;
    if (*why >= 0) {
        *word = *slot;
        if (*why == RM_CORRUPT)
            __atomic_add_fetch(&s->hdr->corrupt, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&st->misses, 1, __ATOMIC_RELAXED);
        return *why == RM_EXPIRED ? KV_ENOTFOUND : KV_ECORRUPT;
    }
    size_t n = it->vlen;
    void *dst = alloc(ctx, n);
    if (!dst && n)
        return KV_ENOMEM;
    if (n && it->cls == SHM_CLASS_LARGE)
        kv_shm_item_read(s, it, SHM_ITEM_HDR + it->klen, dst, n);
    else if (n)
        memcpy(dst, it->data + it->klen, n);
    uint64_t ver = it->version;
    uint32_t an = atime_at(s, now);
    if (__atomic_load_n(&it->atime, __ATOMIC_RELAXED) != an)
        __atomic_store_n(&it->atime, an, __ATOMIC_RELAXED);
    __atomic_add_fetch(&st->hits, 1, __ATOMIC_RELAXED);
    if (vlen)
        *vlen = n;
    if (version)
        *version = ver;
    return 0;
}

int kv_shm_get_h(struct kv_shm_store *s, const void *key, size_t klen, uint64_t h,
                 void *(*alloc)(void *ctx, size_t len), void *ctx, size_t *vlen,
                 uint64_t *version)
{
    return kv_shm_db_get_h(s, 0, key, klen, h, alloc, ctx, vlen, version);
}

int kv_shm_db_get_h(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                    uint64_t h, void *(*alloc)(void *ctx, size_t len), void *ctx, size_t *vlen,
                    uint64_t *version)
{
    if (key_bad(s, key, klen) || !alloc || db >= SHM_MAX_DB)
        return KV_EINVAL;
    assert(h == kv_shm_hash(s, key, klen));
    struct shm_stripe *st = shm_stripe_of(s, h);
    uint64_t word = 0;
    int why;
    pthread_rwlock_rdlock(&st->lock);
    unsigned pdb = shm_db_phys(s, db);
    int rc = get_locked(s, st, pdb, key, klen, h, alloc, ctx, vlen, version, &word, &why);
    pthread_rwlock_unlock(&st->lock);
    if (why >= 0)
        remove_found(s, h, pdb, key, klen, word, why);
    return rc;
}

int kv_shm_get_held(struct kv_shm_store *s, const void *key, size_t klen, uint64_t h,
                    void *(*alloc)(void *ctx, size_t len), void *ctx, size_t *vlen,
                    uint64_t *version)
{
    return kv_shm_db_get_held(s, 0, key, klen, h, alloc, ctx, vlen, version);
}

int kv_shm_db_get_held(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                       uint64_t h, void *(*alloc)(void *ctx, size_t len), void *ctx,
                       size_t *vlen, uint64_t *version)
{
    if (key_bad(s, key, klen) || !alloc || db >= SHM_MAX_DB)
        return KV_EINVAL;
    assert(h == kv_shm_hash(s, key, klen));
    uint64_t word;
    int why;
    return get_locked(s, shm_stripe_of(s, h), shm_db_phys(s, db), key, klen, h, alloc, ctx,
                      vlen, version, &word, &why);
}

_Static_assert(KV_SHM_STRIPES == SHM_STRIPES, "the read set covers every stripe");

void kv_shm_rset_add(struct kv_shm_rset *r, uint64_t h)
{
    unsigned i = (unsigned)(h & (SHM_STRIPES - 1));
    r->bits[i / 64] |= 1ull << (i % 64);
}

void kv_shm_rset_take(struct kv_shm_store *s, const struct kv_shm_rset *r)
{
    for (unsigned w = 0; w < SHM_STRIPES / 64; w++)
        for (uint64_t b = r->bits[w]; b; b &= b - 1)
            pthread_rwlock_rdlock(&s->stripes[w * 64 + (unsigned)__builtin_ctzll(b)].lock);
}

void kv_shm_rset_drop(struct kv_shm_store *s, const struct kv_shm_rset *r)
{
    for (unsigned w = 0; w < SHM_STRIPES / 64; w++)
        for (uint64_t b = r->bits[w]; b; b &= b - 1)
            pthread_rwlock_unlock(&s->stripes[w * 64 + (unsigned)__builtin_ctzll(b)].lock);
}

/* Publishes word for key in bucket b under the exclusive stripe lock: replaces *slot when
 * the key had one, else fills an empty slot. */
static int publish(struct kv_shm_store *s, struct shm_stripe *st, uint64_t b, uint64_t *slot,
                   uint64_t word, unsigned pdb)
{
    kv_shm_wrote(s);
    if (s->txn) { /* logged first: the slot's address is needed before the store */
        int inserted = !slot, rc = slot ? 0 : kv_shm_index_reserve(s, b, &slot);

        if (rc == 0)
            rc = kv_shm_txn_log(s, slot, word);
        if (rc)
            return rc;
        __atomic_store_n(slot, word, __ATOMIC_RELEASE);
        if (inserted) {
            __atomic_add_fetch(&st->keys, 1, __ATOMIC_RELAXED);
            shm_db_count(s, pdb, 1);
        }
        return 0;
    }
    if (slot) {
        __atomic_store_n(slot, word, __ATOMIC_RELEASE);
        return 0;
    }
    int rc = kv_shm_index_insert(s, b, word);
    if (rc == 0) {
        __atomic_add_fetch(&st->keys, 1, __ATOMIC_RELAXED);
        shm_db_count(s, pdb, 1);
    }
    return rc;
}

/* now + ttl_ms, saturating: a ttl too long to represent never expires in
 * practice, and must not overflow into the past. */
static int64_t expiry_at(int64_t now, int64_t ttl_ms)
{
    return ttl_ms > INT64_MAX - now ? INT64_MAX : now + ttl_ms;
}

int kv_shm_set(struct kv_shm_store *s, const void *key, size_t klen, const void *val, size_t vlen,
               const struct kv_shm_set_opts *o, uint64_t *new_version)
{
    return kv_shm_db_set(s, 0, key, klen, val, vlen, o, new_version);
}

int kv_shm_db_set(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                  const void *val, size_t vlen, const struct kv_shm_set_opts *o,
                  uint64_t *new_version)
{
    if (key_bad(s, key, klen))
        return KV_EINVAL;
    return kv_shm_db_set_h(s, db, key, klen, kv_shm_hash(s, key, klen), val, vlen, o,
                           new_version);
}

/* This thread's row of spare chunks for s (NULL: none to be had). */
static struct shm_spare *spare_row(struct kv_shm_store *s)
{
    static __thread uint64_t open_id;
    static __thread struct shm_spare *row;
    if (open_id == s->open_id)
        return row;
    if (s->attach || kv_shm_deferring(s))
        return NULL; /* --sync: a replaced chunk waits for a sync, never reused at once */
    unsigned i = __atomic_load_n(&s->spare_rows, __ATOMIC_RELAXED);
    do {
        if (i >= SHM_SPARE_ROWS)
            return NULL; /* more writer threads than rows: they use the free lists */
    } while (!__atomic_compare_exchange_n(&s->spare_rows, &i, i + 1, 0, __ATOMIC_ACQ_REL,
                                          __ATOMIC_RELAXED));
    open_id = s->open_id;
    row = &s->spares[i];
    return row;
}

int kv_shm_put_versioned(struct kv_shm_store *s, unsigned pdb, const void *key, size_t klen,
                         const void *val, size_t vlen, uint64_t version, int64_t expire_ms)
{
    if (key_bad(s, key, klen) || (!val && vlen) || vlen > UINT32_MAX || pdb >= SHM_MAX_DB)
        return KV_EINVAL;
    uint64_t h = kv_shm_hash(s, key, klen);
    struct shm_stripe *st = shm_stripe_of(s, h);
    for (int attempt = 0;; attempt++) {
        uint64_t off, old = 0;
        unsigned cls;
        int rc = kv_shm_alloc_room(s, SHM_ITEM_HDR + klen + vlen, &off, &cls);
        if (rc)
            return rc;
        kv_shm_item_fill(s, off, cls, pdb, key, klen, val, NULL, vlen, version, expire_ms,
                         kv_shm_now_ms());
        struct shm_item *it;
        pthread_rwlock_wrlock(&st->lock);
        uint64_t b = kv_shm_index_bucket(s, h);
        uint64_t *slot = kv_shm_index_find(s, b, h, pdb, key, klen, &it);
        if (slot && it->version >= version) {
            old = off; /* a newer copy of the key is there already: keep it */
        } else {
            old = slot ? SHM_WORD_OFF(*slot) : 0;
            rc = publish(s, st, b, slot, shm_word(off, cls, h), pdb);
        }
        pthread_rwlock_unlock(&st->lock);
        if (rc) {
            kv_shm_free_unpublished(s, off);
            if (rc == KV_ENOMEM && attempt < ROOM_TRIES && kv_shm_line_room(s, attempt) == 0)
                continue;
            return rc;
        }
        if (old == off)
            kv_shm_free_unpublished(s, old);
        else if (old)
            kv_shm_free_replaced(s, old);
        else
            kv_shm_index_grow(s, h);
        uint64_t cur = __atomic_load_n(&s->hdr->version_ctr, __ATOMIC_RELAXED);
        while (cur < version && !__atomic_compare_exchange_n(&s->hdr->version_ctr, &cur, version,
                                                             0, __ATOMIC_RELAXED,
                                                             __ATOMIC_RELAXED)) {
        }
        return 0;
    }
}

/* Frees every thread's spare chunks: under memory pressure each pins a page. A spare is
 * taken by its owner, or by this, with an atomic exchange, so it is used once. */
static int spares_release(struct kv_shm_store *s)
{
    int freed = 0;
    unsigned rows = __atomic_load_n(&s->spare_rows, __ATOMIC_ACQUIRE);
    for (unsigned r = 0; r < rows && r < SHM_SPARE_ROWS; r++) {
        for (unsigned c = 0; c < SHM_MAX_CLASSES; c++) {
            uint64_t *p = &s->spares[r].off[c];
            uint64_t off = __atomic_load_n(p, __ATOMIC_RELAXED)
                               ? __atomic_exchange_n(p, 0, __ATOMIC_ACQ_REL)
                               : 0;
            if (off)
                kv_shm_free(s, off);
            freed += off != 0;
        }
    }
    return freed;
}


/* kv_shm_alloc, making room (shm_evict.c) while it says KV_ENOMEM; no lock may be held.
 * A large item may need one round per page it takes. */
int kv_shm_alloc_room(struct kv_shm_store *s, size_t total, uint64_t *off, unsigned *cls)
{
    int rc = kv_shm_alloc(s, total, off, cls);
    if (rc == KV_ENOMEM && spares_release(s))
        rc = kv_shm_alloc(s, total, off, cls);
    uint64_t tries = ROOM_TRIES + 4 * (total > SHM_MAX_CHUNK ? kv_shm_large_pages(total) : 0);
    for (uint64_t n = 0; rc == KV_ENOMEM && n < tries; n++) {
        /* --sync: chunks freed since the last sync come back after the next one; this
         * writer runs it rather than evict more (or fail) meanwhile */
        if (kv_shm_sync_reclaim(s) && (rc = kv_shm_alloc(s, total, off, cls)) != KV_ENOMEM)
            break;
        if (kv_shm_make_room(s, total, 0))
            break;
        rc = kv_shm_alloc(s, total, off, cls);
    }
    return rc;
}

static int rewrite_room(struct kv_shm_store *s, int attempt, size_t need, int line);
int kv_shm_room(struct kv_shm_store *s, int attempt, size_t need, int line)
{
    return rewrite_room(s, attempt, need, line);
}

/* Room for an index line after an insert said KV_ENOMEM. */
int kv_shm_line_room(struct kv_shm_store *s, int attempt)
{
    if (attempt == 0 && spares_release(s))
        return 0;
    if (kv_shm_sync_reclaim(s)) /* --sync: see kv_shm_alloc_room */
        return 0;
    return kv_shm_make_room(s, SHM_LINE, 1);
}

int kv_shm_set_h(struct kv_shm_store *s, const void *key, size_t klen, uint64_t h, const void *val,
                 size_t vlen, const struct kv_shm_set_opts *o, uint64_t *new_version)
{
    return kv_shm_db_set_h(s, 0, key, klen, h, val, vlen, o, new_version);
}

int kv_shm_db_set_h(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                    uint64_t h, const void *val, size_t vlen, const struct kv_shm_set_opts *o,
                    uint64_t *new_version)
{
    static const struct kv_shm_set_opts none;
    if (!o)
        o = &none;
    if (key_bad(s, key, klen) || (!val && vlen) || vlen > UINT32_MAX || o->ttl_ms < 0 ||
        db >= SHM_MAX_DB)
        return KV_EINVAL;
    assert(h == kv_shm_hash(s, key, klen));
    int64_t now = kv_shm_now_ms();
    size_t total = SHM_ITEM_HDR + klen + vlen;
    unsigned cls = kv_shm_class_for(s, total);
    struct shm_spare *spare = s->txn ? NULL : spare_row(s); /* none in a transaction */
    int rc;
    for (int attempt = 0;; attempt++) {
        uint64_t off = 0;
        rc = 0;
        /* the chunk this thread's last overwrite of the class freed, unless taken */
        if (spare && cls < s->n_classes && __atomic_load_n(&spare->off[cls], __ATOMIC_RELAXED))
            off = __atomic_exchange_n(&spare->off[cls], 0, __ATOMIC_ACQ_REL);
        if (!off)
            rc = kv_shm_alloc_room(s, total, &off, &cls);
        if (rc)
            return rc;
        uint64_t ver = kv_shm_version_next(s);
        /* the database as of now; checked again under the lock (a SWAPDB in between) */
        unsigned pdb = shm_db_phys(s, db);
        struct shm_item *nit = kv_shm_item_fill(s, off, cls, pdb, key, klen, val, NULL, vlen, ver,
                                         o->ttl_ms > 0 ? expiry_at(now, o->ttl_ms) : 0, now);
        kv_shm_crash_point(s, KV_SHM_CRASH_PUBLISH);
        uint64_t word = shm_word(off, cls, h), old = 0;
        unsigned old_cls = SHM_CLASS_LARGE;

        struct shm_stripe *st = shm_stripe_of(s, h);
        struct shm_item *it;
        pthread_rwlock_wrlock(&st->lock);
        if (__builtin_expect(shm_db_phys(s, db) != pdb, 0)) {
            pdb = shm_db_phys(s, db);
            nit->db = (uint16_t)pdb; /* not published yet: reseal */
            item_seal(s, nit);
        }
        uint64_t b = kv_shm_index_bucket(s, h);
        uint64_t *slot = kv_shm_index_find(s, b, h, pdb, key, klen, &it);
        int exists = slot && !item_expired(it, now);
        if ((o->flags & KV_SHM_NX) && exists)
            rc = KV_EEXISTS;
        else if ((o->flags & (KV_SHM_XX | KV_SHM_CAS)) && !exists)
            rc = KV_ENOTFOUND;
        else if ((o->flags & KV_SHM_CAS) && it->version != o->cas_version)
            rc = KV_EEXISTS;
        if (rc == 0) {
            if ((o->flags & KV_SHM_KEEPTTL) && exists && it->expire_ms != nit->expire_ms) {
                nit->expire_ms = it->expire_ms;
                item_seal(s, nit);
            }
            if (slot) {
                old = SHM_WORD_OFF(*slot);
                old_cls = SHM_WORD_CLS(*slot);
                if (!exists)
                    __atomic_add_fetch(&s->hdr->expired, 1, __ATOMIC_RELAXED);
            }
            rc = publish(s, st, b, slot, word, pdb);
        }
        pthread_rwlock_unlock(&st->lock);
        if (rc) {
            kv_shm_free_unpublished(s, off);
            /* no index line for a new key: make room for one, then start again */
            if (rc == KV_ENOMEM && attempt < ROOM_TRIES && kv_shm_line_room(s, attempt) == 0)
                continue;
            return rc;
        }
        /* no reader can hold the replaced item now (they hold the stripe lock while
         * they use one): it becomes this thread's spare of its class, or is freed */
        /* ...but not when it is the last chunk in use of its page: that page would stay
         * pinned by a spare alone (a hint, read without the class lock) */
        if (old && spare && old_cls < s->n_classes &&
            !__atomic_load_n(&spare->off[old_cls], __ATOMIC_RELAXED) &&
            __atomic_load_n(&s->pg[(old - s->data_off) >> SHM_PAGE_SHIFT].used,
                            __ATOMIC_RELAXED) > 1)
            __atomic_store_n(&spare->off[old_cls], old, __ATOMIC_RELEASE); /* only we put */
        else if (old)
            kv_shm_free_replaced(s, old);
        else
            kv_shm_index_grow(s, h);
        if (new_version)
            *new_version = ver;
        return 0;
    }
}

int kv_shm_del(struct kv_shm_store *s, const void *key, size_t klen)
{
    return kv_shm_db_del(s, 0, key, klen);
}

int kv_shm_db_del(struct kv_shm_store *s, unsigned db, const void *key, size_t klen)
{
    if (key_bad(s, key, klen) || db >= SHM_MAX_DB)
        return KV_EINVAL;
    uint64_t h = kv_shm_hash(s, key, klen), off = 0;
    struct shm_stripe *st = shm_stripe_of(s, h);
    struct shm_item *it;
    int rc = KV_ENOTFOUND;
    pthread_rwlock_wrlock(&st->lock);
    uint64_t *slot = kv_shm_index_find(s, kv_shm_index_bucket(s, h), h, shm_db_phys(s, db), key,
                                       klen, &it);
    if (slot) {
        if (item_expired(it, kv_shm_now_ms()))
            __atomic_add_fetch(&s->hdr->expired, 1, __ATOMIC_RELAXED);
        else
            rc = 0;
        off = SHM_WORD_OFF(*slot);
        if (slot_clear(s, st, slot, it) != 0) {
            off = 0;
            rc = KV_ENOMEM;
        }
    }
    pthread_rwlock_unlock(&st->lock);
    if (off)
        kv_shm_free(s, off);
    return rc;
}

int kv_shm_db_del_version(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                          uint64_t version)
{
    if (key_bad(s, key, klen) || db >= SHM_MAX_DB)
        return KV_EINVAL;
    uint64_t h = kv_shm_hash(s, key, klen), off = 0;
    struct shm_stripe *st = shm_stripe_of(s, h);
    struct shm_item *it;
    int rc = KV_ENOTFOUND;
    pthread_rwlock_wrlock(&st->lock);
    uint64_t *slot = kv_shm_index_find(s, kv_shm_index_bucket(s, h), h, shm_db_phys(s, db), key,
                                       klen, &it);
    if (slot) {
        int expired = item_expired(it, kv_shm_now_ms());

        if (!expired && it->version != version) {
            rc = KV_EEXISTS; /* another write came in between: nothing changes */
        } else {
            if (expired)
                __atomic_add_fetch(&s->hdr->expired, 1, __ATOMIC_RELAXED);
            else
                rc = 0;
            off = SHM_WORD_OFF(*slot);
            if (slot_clear(s, st, slot, it) != 0) {
                off = 0;
                rc = KV_ENOMEM;
            }
        }
    }
    pthread_rwlock_unlock(&st->lock);
    if (off)
        kv_shm_free(s, off);
    return rc;
}

/* Shared lookup of exists/ttl: *expire_ms of the live item. */
static int peek(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                int64_t *expire_ms)
{
    if (key_bad(s, key, klen) || db >= SHM_MAX_DB)
        return KV_EINVAL;
    uint64_t h = kv_shm_hash(s, key, klen);
    struct shm_stripe *st = shm_stripe_of(s, h);
    struct shm_item *it;
    int rc = KV_ENOTFOUND;
    pthread_rwlock_rdlock(&st->lock);
    uint64_t *slot = kv_shm_index_find(s, kv_shm_index_bucket(s, h), h, shm_db_phys(s, db), key,
                                       klen, &it);
    if (slot && !item_expired(it, kv_shm_now_ms())) {
        *expire_ms = it->expire_ms;
        rc = 0;
    }
    pthread_rwlock_unlock(&st->lock);
    __atomic_add_fetch(rc ? &st->misses : &st->hits, 1, __ATOMIC_RELAXED);
    return rc;
}

int kv_shm_exists(struct kv_shm_store *s, const void *key, size_t klen)
{
    return kv_shm_db_exists(s, 0, key, klen);
}

int kv_shm_db_exists(struct kv_shm_store *s, unsigned db, const void *key, size_t klen)
{
    int64_t e;
    return peek(s, db, key, klen, &e);
}

int kv_shm_ttl(struct kv_shm_store *s, const void *key, size_t klen, int64_t *ttl_ms)
{
    return kv_shm_db_ttl(s, 0, key, klen, ttl_ms);
}

int kv_shm_db_idle(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                   int64_t *idle_ms)
{
    if (key_bad(s, key, klen) || db >= SHM_MAX_DB)
        return KV_EINVAL;
    uint64_t h = kv_shm_hash(s, key, klen);
    struct shm_stripe *st = shm_stripe_of(s, h);
    struct shm_item *it;
    int64_t now = kv_shm_now_ms();
    int rc = KV_ENOTFOUND;
    pthread_rwlock_rdlock(&st->lock);
    uint64_t *slot = kv_shm_index_find(s, kv_shm_index_bucket(s, h), h, shm_db_phys(s, db), key,
                                       klen, &it);
    if (slot && !item_expired(it, now)) {
        uint32_t a = __atomic_load_n(&it->atime, __ATOMIC_RELAXED);
        *idle_ms = (int64_t)(uint32_t)(atime_at(s, now) - a) * 4;
        rc = 0;
    }
    pthread_rwlock_unlock(&st->lock);
    return rc;
}

int kv_shm_db_ttl(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                  int64_t *ttl_ms)
{
    int64_t e;
    int rc = peek(s, db, key, klen, &e);
    if (rc)
        return rc;
    if (!e) {
        *ttl_ms = -1;
    } else {
        int64_t left = e - kv_shm_now_ms();
        *ttl_ms = left > 0 ? left : 0;
    }
    return 0;
}

/* Strict decimal int64 as Redis reads it: optional '-', 1..19 digits, no leading zero
 * (but "0"), no "-0", nothing else. */
static int parse_i64(const uint8_t *p, size_t n, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (n && p[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == n || n - i > 19 || (p[i] == '0' && (n - i > 1 || neg)))
        return KV_ENOTNUM;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return KV_ENOTNUM;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return KV_ENOTNUM;
        *out = (int64_t)(0 - v);
    } else {
        if (v > (uint64_t)INT64_MAX)
            return KV_ENOTNUM;
        *out = (int64_t)v;
    }
    return 0;
}

/* Replaces (or creates) key's item with a new one built from value/expiry (val, or the
 * value of item `from`), under the exclusive stripe lock the caller holds. *old gets the
 * offset to free after unlocking. On KV_ENOMEM nothing changed; *need says what to make
 * room for (an item of that many bytes, or SHM_LINE with *line set) before trying again
 * with no lock held. */
static int rewrite_locked(struct kv_shm_store *s, struct shm_stripe *st, uint64_t b, uint64_t *slot,
                          uint64_t h, unsigned pdb, const void *key, size_t klen, const void *val,
                          const struct shm_item *from, size_t vlen, int64_t expire_ms,
                          uint64_t *ver, uint64_t *old, size_t *need, int *line)
{
    uint64_t off;
    unsigned cls;
    *need = SHM_ITEM_HDR + klen + vlen;
    *line = 0;
    int rc = kv_shm_alloc(s, *need, &off, &cls);
    if (rc)
        return rc;
    *ver = kv_shm_version_next(s);
    kv_shm_item_fill(s, off, cls, pdb, key, klen, val, from, vlen, *ver, expire_ms,
                     kv_shm_now_ms());
    kv_shm_crash_point(s, KV_SHM_CRASH_PUBLISH);
    uint64_t prev = slot ? *slot : 0;
    rc = publish(s, st, b, slot, shm_word(off, cls, h), pdb);
    if (rc) {
        kv_shm_free_unpublished(s, off);
        *line = 1;
        return rc;
    }
    *old = prev ? SHM_WORD_OFF(prev) : 0;
    return 0;
}

/* After rewrite_locked said KV_ENOMEM (lock dropped): 0 when room was made, try again. */
static int rewrite_room(struct kv_shm_store *s, int attempt, size_t need, int line)
{
    /* as many rounds as kv_shm_alloc_room gives an item of that size */
    uint64_t tries = ROOM_TRIES + 4 * (need > SHM_MAX_CHUNK ? kv_shm_large_pages(need) : 0);
    if ((uint64_t)attempt >= tries)
        return KV_ENOMEM;
    if (attempt == 0 && spares_release(s))
        return 0;
    if (kv_shm_sync_reclaim(s)) /* --sync: see kv_shm_alloc_room */
        return 0;
    return kv_shm_make_room(s, line ? SHM_LINE : need, line);
}

int kv_shm_incr(struct kv_shm_store *s, const void *key, size_t klen, int64_t delta,
                int64_t *result, uint64_t *version)
{
    return kv_shm_db_incr(s, 0, key, klen, delta, result, version);
}

int kv_shm_db_incr(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                   int64_t delta, int64_t *result, uint64_t *version)
{
    if (key_bad(s, key, klen) || db >= SHM_MAX_DB)
        return KV_EINVAL;
    uint64_t h = kv_shm_hash(s, key, klen), old = 0, ver = 0;
    struct shm_stripe *st = shm_stripe_of(s, h);
    struct shm_item *it;
    int64_t cur, expire, sum = 0;
    int rc, line = 0;
    size_t need = 0;
    for (int attempt = 0;; attempt++) {
        int64_t now = kv_shm_now_ms();
        cur = expire = 0;
        rc = 0;
        pthread_rwlock_wrlock(&st->lock);
        unsigned pdb = shm_db_phys(s, db);
        uint64_t b = kv_shm_index_bucket(s, h);
        uint64_t *slot = kv_shm_index_find(s, b, h, pdb, key, klen, &it);
        if (slot && !item_expired(it, now)) {
            char num[20];
            rc = KV_ENOTNUM;
            if (it->vlen <= sizeof(num)) {
                kv_shm_item_read(s, it, SHM_ITEM_HDR + it->klen, num, it->vlen);
                rc = parse_i64((const uint8_t *)num, it->vlen, &cur);
            }
            expire = it->expire_ms;
        } else if (slot && attempt == 0) {
            __atomic_add_fetch(&s->hdr->expired, 1, __ATOMIC_RELAXED);
        }
        if (rc == 0 && __builtin_add_overflow(cur, delta, &sum))
            rc = KV_ENOTNUM;
        if (rc == 0) {
            char buf[24];
            int n = snprintf(buf, sizeof(buf), "%" PRId64, sum);
            rc = rewrite_locked(s, st, b, slot, h, pdb, key, klen, buf, NULL, (size_t)n, expire,
                                &ver, &old, &need, &line);
        }
        pthread_rwlock_unlock(&st->lock);
        if (rc == KV_ENOMEM && rewrite_room(s, attempt, need, line) == 0)
            continue;
        break;
    }
    if (rc)
        return rc;
    if (old)
        kv_shm_free_replaced(s, old);
    else
        kv_shm_index_grow(s, h);
    if (result)
        *result = sum;
    if (version)
        *version = ver;
    return 0;
}

int kv_shm_expire(struct kv_shm_store *s, const void *key, size_t klen, int64_t ttl_ms)
{
    return kv_shm_db_expire(s, 0, key, klen, ttl_ms);
}

int kv_shm_db_expire(struct kv_shm_store *s, unsigned db, const void *key, size_t klen,
                     int64_t ttl_ms)
{
    if (key_bad(s, key, klen) || db >= SHM_MAX_DB)
        return KV_EINVAL;
    uint64_t h = kv_shm_hash(s, key, klen), old = 0, ver;
    struct shm_stripe *st = shm_stripe_of(s, h);
    struct shm_item *it;
    int rc, line = 0, removed = 0;
    size_t need = 0;
    for (int attempt = 0;; attempt++) {
        int64_t now = kv_shm_now_ms();
        rc = KV_ENOTFOUND;
        removed = 1;
        pthread_rwlock_wrlock(&st->lock);
        unsigned pdb = shm_db_phys(s, db);
        uint64_t b = kv_shm_index_bucket(s, h);
        uint64_t *slot = kv_shm_index_find(s, b, h, pdb, key, klen, &it);
        if (slot && item_expired(it, now)) {
            old = SHM_WORD_OFF(*slot);
            if (slot_clear(s, st, slot, it) != 0)
                old = 0; /* in a transaction without room for the log: left for later */
            else
                __atomic_add_fetch(&s->hdr->expired, 1, __ATOMIC_RELAXED);
        } else if (slot && ttl_ms == 0) {
            old = SHM_WORD_OFF(*slot);
            rc = slot_clear(s, st, slot, it);
            if (rc)
                old = 0;
        } else if (slot) {
            /* copy-on-write: the expiry is checksummed, so it is never patched in place */
            rc = rewrite_locked(s, st, b, slot, h, pdb, key, klen, NULL, it, it->vlen,
                                ttl_ms > 0 ? expiry_at(now, ttl_ms) : 0, &ver, &old, &need, &line);
            removed = 0;
        }
        pthread_rwlock_unlock(&st->lock);
        if (rc == KV_ENOMEM && rewrite_room(s, attempt, need, line) == 0)
            continue;
        break;
    }
    if (old && removed)
        kv_shm_free(s, old);
    else if (old)
        kv_shm_free_replaced(s, old);
    return rc;
}

/* ---- scan ------------------------------------------------------------------------- */

struct keybuf {
    uint8_t *p; /* owned (KV_MOD_SHM): [u32 len][key] records */
    size_t len, cap;
    size_t n;
};

static int keybuf_add(struct keybuf *kb, const void *key, uint32_t klen)
{
    size_t need = kb->len + 4 + klen;
    if (need > kb->cap) {
        size_t cap = kb->cap ? kb->cap * 2 : 4096;
        while (cap < need)
            cap *= 2;
        uint8_t *np = kv_mem_realloc(KV_MOD_SHM, kb->p, cap);
        if (!np)
            return KV_ENOMEM;
        kb->p = np;
        kb->cap = cap;
    }
    memcpy(kb->p + kb->len, &klen, 4);
    memcpy(kb->p + kb->len + 4, key, klen);
    kb->len = need;
    kb->n++;
    return 0;
}

static int collect_bucket(struct kv_shm_store *s, uint64_t b, unsigned pdb, const void *prefix,
                          size_t plen, int64_t now, struct keybuf *kb)
{
    uint64_t *line = kv_shm_index_line(s, b);
    for (int k = 0; line && k < 100000; k++) {
        for (int i = 0; i < SHM_SLOTS; i++) {
            uint64_t w = __atomic_load_n(&line[i], __ATOMIC_ACQUIRE);
            struct shm_item *it = w ? kv_shm_item_check(s, w) : NULL;
            if (!it || it->db != pdb || item_expired(it, now) || it->klen < plen ||
                (plen && memcmp(it->data, prefix, plen)))
                continue;
            if (keybuf_add(kb, it->data, it->klen))
                return KV_ENOMEM;
        }
        uint64_t nx = kv_shm_link_parse(s, line[SHM_SLOTS]);
        line = nx ? shm_ptr(s, nx) : NULL;
    }
    return 0;
}

static uint64_t rev64(uint64_t v)
{
    v = ((v >> 1) & 0x5555555555555555ull) | ((v & 0x5555555555555555ull) << 1);
    v = ((v >> 2) & 0x3333333333333333ull) | ((v & 0x3333333333333333ull) << 2);
    v = ((v >> 4) & 0x0F0F0F0F0F0F0F0Full) | ((v & 0x0F0F0F0F0F0F0F0Full) << 4);
    return __builtin_bswap64(v);
}

/* Redis's reverse-binary cursor: visiting buckets in this order keeps every low-bit
 * pattern already visited visited when the table doubles. Linear hashing always has the
 * keys of residue b mod 2^L in bucket b, or in b and b + 2^L once b is split, and we
 * visit both: a step covers one residue class mod 2^L whatever the split pointer does. */
int kv_shm_scan(struct kv_shm_store *s, uint64_t cursor, const void *prefix, size_t plen,
                size_t count, kv_shm_scan_fn fn, void *ctx, uint64_t *next_cursor)
{
    return kv_shm_db_scan(s, 0, cursor, prefix, plen, count, fn, ctx, next_cursor);
}

int kv_shm_db_scan(struct kv_shm_store *s, unsigned db, uint64_t cursor, const void *prefix,
                   size_t plen, size_t count, kv_shm_scan_fn fn, void *ctx,
                   uint64_t *next_cursor)
{
    if (!fn || (plen && !prefix) || db >= SHM_MAX_DB)
        return KV_EINVAL;
    if (count == 0)
        count = 1;
    struct keybuf kb = {0};
    int64_t now = kv_shm_now_ms();
    uint64_t c = cursor;
    size_t visited = 0, max_visit = count * 8 < 64 ? 64 : count * 8;
    int rc = 0;
    do {
        struct shm_stripe *st = &s->stripes[c & (SHM_STRIPES - 1)];
        unsigned L;
        uint64_t p;
        pthread_rwlock_rdlock(&st->lock);
        kv_shm_state_parse(__atomic_load_n(&s->hdr->state, __ATOMIC_ACQUIRE), &L, &p);
        uint64_t m = (1ull << L) - 1, b = c & m;
        unsigned pdb = shm_db_phys(s, db);
        rc = collect_bucket(s, b, pdb, prefix, plen, now, &kb);
        if (rc == 0 && b < p)
            rc = collect_bucket(s, b + (1ull << L), pdb, prefix, plen, now, &kb);
        pthread_rwlock_unlock(&st->lock);
        if (rc)
            break;
        c |= ~m;
        c = rev64(rev64(c) + 1);
        visited++;
    } while (c != 0 && kb.n < count && visited < max_visit);
    if (rc == 0) {
        for (size_t at = 0; at < kb.len;) {
            uint32_t klen;
            memcpy(&klen, kb.p + at, 4);
            fn(ctx, kb.p + at + 4, klen);
            at += 4 + klen;
        }
        *next_cursor = c;
    }
    kv_mem_free(KV_MOD_SHM, kb.p);
    return rc;
}

/* ---- flush, sweep ------------------------------------------------------------------ */

/* Unlinks the items of bucket b that are expired (every one when now == 0), of physical
 * database pdb only when pdb >= 0, under the exclusive stripe lock, then frees them.
 * Returns how many. */
static int bucket_drop(struct kv_shm_store *s, uint64_t b, int64_t now, int pdb, int *fullp,
                       int count_ttl)
{
    struct shm_stripe *st = &s->stripes[b & (SHM_STRIPES - 1)];
    uint64_t offs[128];
    int n = 0;
    pthread_rwlock_wrlock(&st->lock);
    uint64_t *line = b < kv_shm_index_active(s) ? kv_shm_index_line(s, b) : NULL;
    int full = 0; /* a transaction's log cannot grow: the rest stays */
    for (int k = 0; line && !full && k < 100000 && n < 128 - SHM_SLOTS; k++) {
        for (int i = 0; i < SHM_SLOTS; i++) {
            uint64_t w = line[i];
            if (!w || SHM_WORD_CLS(w) == SHM_CLASS_MOVED) /* --sync: cleared after a sync */
                continue;
            struct shm_item *it = kv_shm_item_check(s, w);
            if (now && (!it || !item_expired(it, now))) {
                if (count_ttl && it && it->expire_ms && it->db < SHM_MAX_DB) {
                    s->ttl.n[it->db]++;
                    s->ttl.ms[it->db] += (double)(it->expire_ms - now);
                }
                continue;
            }
            if (pdb >= 0 && (!it || it->db != (unsigned)pdb))
                continue;
            if (slot_clear(s, st, &line[i], it) != 0) {
                full = 1;
                break;
            }
            if (it)
                offs[n++] = SHM_WORD_OFF(w);
        }
        uint64_t nx = kv_shm_link_parse(s, line[SHM_SLOTS]);
        line = nx ? shm_ptr(s, nx) : NULL;
    }
    pthread_rwlock_unlock(&st->lock);
    for (int i = 0; i < n; i++)
        kv_shm_free(s, offs[i]);
    if (fullp)
        *fullp = full;
    return n;
}

/* 0, or KV_ENOMEM when a transaction's log could not grow: some keys are left. */
static int flush_where(struct kv_shm_store *s, int pdb)
{
    int full = 0;
    for (uint64_t b = 0; b < kv_shm_index_active(s) && !full; b++) {
        while (bucket_drop(s, b, 0, pdb, &full, 0) >= 128 - SHM_SLOTS && !full) {
        }
    }
    spares_release(s); /* memory comes back at once, spares included */
    return full ? KV_ENOMEM : 0;
}

int kv_shm_flush(struct kv_shm_store *s)
{
    return flush_where(s, -1);
}

int kv_shm_db_flush(struct kv_shm_store *s, unsigned db)
{
    if (db >= SHM_MAX_DB)
        return KV_EINVAL;
    return flush_where(s, (int)shm_db_phys(s, db));
}

/* Stripes' total less the other databases': see shm_dbs. Read without locks: each counter
 * exact, the difference momentary. */
int kv_shm_db_size(struct kv_shm_store *s, unsigned db, uint64_t *keys)
{
    if (db >= SHM_MAX_DB || !keys)
        return KV_EINVAL;
    unsigned pdb = shm_db_phys(s, db);
    int64_t n = 0;
    if (pdb) {
        n = __atomic_load_n(&s->dbs->keys[pdb], __ATOMIC_RELAXED);
    } else {
        for (unsigned i = 0; i < SHM_STRIPES; i++)
            n += __atomic_load_n(&s->stripes[i].keys, __ATOMIC_RELAXED);
        for (unsigned d = 1; d < SHM_MAX_DB; d++)
            n -= __atomic_load_n(&s->dbs->keys[d], __ATOMIC_RELAXED);
    }
    *keys = n > 0 ? (uint64_t)n : 0;
    return 0;
}

int kv_shm_swapdb(struct kv_shm_store *s, unsigned a, unsigned b)
{
    if (a >= SHM_MAX_DB || b >= SHM_MAX_DB)
        return KV_EINVAL;
    if (a == b)
        return 0;
    for (unsigned i = 0; i < SHM_STRIPES; i++) /* ascending, as every multi-stripe holder */
        pthread_rwlock_wrlock(&s->stripes[i].lock);
    struct shm_dbs *d = s->dbs;
    unsigned cur = __atomic_load_n(&d->sel, __ATOMIC_ACQUIRE) & 1, nxt = cur ^ 1;
    unsigned pa = shm_db_phys(s, a), pb = shm_db_phys(s, b);
    uint8_t map[SHM_MAX_DB] __attribute__((aligned(8)));
    int rc = 0;

    memcpy(map, d->map[cur], sizeof(map));
    map[a] = (uint8_t)(a ^ pb);
    map[b] = (uint8_t)(b ^ pa);
    if (!s->txn) {
        memcpy(d->map[nxt], map, sizeof(map));
    } else {
        /* inside a transaction the map is undone like slots: each 8-byte word of the
         * spare copy that changes, then the selector word, is logged before it is
         * stored, so a second swap in the same EXEC (which rewrites the copy the first
         * made current) is undone too, newest first (DESIGN.md, "Where the two meet") */
        uint64_t *w = (uint64_t *)(void *)d->map[nxt];
        const uint64_t *nw = (const uint64_t *)(const void *)map;

        for (unsigned i = 0; i < SHM_MAX_DB / 8 && rc == 0; i++)
            if (w[i] != nw[i] && (rc = kv_shm_txn_log(s, &w[i], nw[i])) == 0)
                __atomic_store_n(&w[i], nw[i], __ATOMIC_RELEASE);
        if (rc == 0) {
            uint64_t *selw = (uint64_t *)(void *)d; /* sel and pad: one aligned word */
            uint64_t nsel = (__atomic_load_n(selw, __ATOMIC_ACQUIRE) & ~(uint64_t)UINT32_MAX) |
                            nxt; /* the word once sel = nxt is stored below (little end) */

            rc = kv_shm_txn_log(s, selw, nsel);
        }
    }
    kv_shm_crash_point(s, KV_SHM_CRASH_BATCH); /* the new map written, not yet current */
    if (rc == 0) {
        __atomic_store_n(&d->sel, nxt, __ATOMIC_RELEASE); /* the swap: one store */
        uint64_t v = __atomic_add_fetch(&s->hdr->version_ctr, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&s->swapped[a], v, __ATOMIC_RELAXED);
        __atomic_store_n(&s->swapped[b], v, __ATOMIC_RELAXED);
    }
    for (unsigned i = SHM_STRIPES; i-- > 0;)
        pthread_rwlock_unlock(&s->stripes[i].lock);
    return rc; /* KV_ENOMEM: the log could not grow; the spare copy may differ, unused */
}

/* Publishes the TTL counts of the pass under way, scaled by scale (1: a complete pass). */
static void ttl_publish(struct kv_shm_store *s, double scale)
{
    for (unsigned d = 0; d < SHM_MAX_DB; d++) {
        uint64_t n = s->ttl.n[d];
        __atomic_store_n(&s->ttl.pub_n[d], (uint64_t)((double)n * scale + 0.5), __ATOMIC_RELAXED);
        __atomic_store_n(&s->ttl.pub_avg_ms[d], n ? (uint64_t)(s->ttl.ms[d] / (double)n) : 0,
                         __ATOMIC_RELAXED);
    }
}

int kv_shm_sweep(struct kv_shm_store *s, size_t max_work)
{
    int64_t now = kv_shm_now_ms();
    int total = 0;
    /* one sweep at a time counts (another one meanwhile only removes) */
    int count = !__atomic_exchange_n(&s->ttl.busy, 1, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < max_work; i++) {
        uint64_t active = kv_shm_index_active(s);
        uint64_t c = __atomic_fetch_add(&s->hdr->sweep_cursor, 1, __ATOMIC_RELAXED);
        total += bucket_drop(s, c % active, now, -1, NULL, count);
        if (count && ++s->ttl.visited >= active) { /* every bucket seen once: a pass */
            ttl_publish(s, 1.0);
            __atomic_store_n(&s->ttl.passes, s->ttl.passes + 1, __ATOMIC_RELAXED);
            s->ttl.visited = 0;
            memset(s->ttl.n, 0, sizeof(s->ttl.n));
            memset(s->ttl.ms, 0, sizeof(s->ttl.ms));
        }
    }
    if (count) {
        if (!s->ttl.passes && s->ttl.visited) /* the first pass: scaled to the whole index */
            ttl_publish(s, (double)kv_shm_index_active(s) / (double)s->ttl.visited);
        __atomic_store_n(&s->ttl.busy, 0, __ATOMIC_RELEASE);
    }
    __atomic_add_fetch(&s->hdr->expired, (uint64_t)total, __ATOMIC_RELAXED);
    return total;
}

int kv_shm_db_ttl_stats(struct kv_shm_store *s, unsigned db, uint64_t *expires,
                        uint64_t *avg_ttl_ms)
{
    if (db >= SHM_MAX_DB || !expires || !avg_ttl_ms)
        return KV_EINVAL;
    unsigned pdb = shm_db_phys(s, db);
    *expires = __atomic_load_n(&s->ttl.pub_n[pdb], __ATOMIC_RELAXED);
    *avg_ttl_ms = __atomic_load_n(&s->ttl.pub_avg_ms[pdb], __ATOMIC_RELAXED);
    return 0;
}

/* ---- stats ------------------------------------------------------------------------- */

int kv_shm_stats(struct kv_shm_store *s, struct kv_shm_stats *out)
{
    struct shm_hdr *h = s->hdr;
    struct kv_shm_stats o;
    memset(&o, 0, sizeof(o));
    int64_t keys = 0;
    for (unsigned i = 0; i < SHM_STRIPES; i++) {
        keys += __atomic_load_n(&s->stripes[i].keys, __ATOMIC_RELAXED);
        o.hits += __atomic_load_n(&s->stripes[i].hits, __ATOMIC_RELAXED);
        o.misses += __atomic_load_n(&s->stripes[i].misses, __ATOMIC_RELAXED);
    }
    o.keys = keys > 0 ? (uint64_t)keys : 0;
    o.segment_size = s->size;
    o.page_size = SHM_PAGE;
    o.pages_total = s->n_pages;
    o.index_buckets = kv_shm_index_active(s);
    o.evictions = __atomic_load_n(&h->evictions, __ATOMIC_RELAXED);
    o.expired = __atomic_load_n(&h->expired, __ATOMIC_RELAXED);
    o.corrupt = __atomic_load_n(&h->corrupt, __ATOMIC_RELAXED);
    o.pages_compacted = __atomic_load_n(&h->pages_compacted, __ATOMIC_RELAXED);
    o.pages_evicted = __atomic_load_n(&h->pages_evicted, __ATOMIC_RELAXED);
    o.items_moved = __atomic_load_n(&h->items_moved, __ATOMIC_RELAXED);
    o.generation = h->generation;
    o.recovered = s->recovered;
    o.recovered_items = s->recovered_items;
    o.dropped_items = s->dropped_items;
    memcpy(o.dropped_why, s->dropped_why, sizeof(o.dropped_why));
    o.batches_undone = s->batches_undone;
    o.recovery_ns = s->recovery_ns;
    o.restored_items = s->restored_items;
    uint64_t used = s->data_off, fr = 0, large = 0, large_items = 0;
    o.nclasses = s->n_classes + 1;
    for (unsigned c = 0; c < s->n_classes; c++) {
        struct shm_class *k = &s->cls[c];
        struct kv_shm_class_stats *r = &o.cls[c];
        pthread_mutex_lock(&k->lock);
        r->chunk_size = s->csize[c];
        r->pages = k->pages;
        r->chunks_used = k->used;
        r->chunks_free = k->pages * s->cper[c] - k->used;
        pthread_mutex_unlock(&k->lock);
        r->bytes_used = r->chunks_used * r->chunk_size;
        used += r->bytes_used;
        fr += r->chunks_free * r->chunk_size;
    }
    struct shm_class *lk = &s->cls[s->line_cls];
    pthread_mutex_lock(&lk->lock);
    used += lk->used * SHM_LINE; /* index lines: counted in index_bytes below */
    fr += (lk->pages * s->cper[s->line_cls] - lk->used) * SHM_LINE;
    pthread_mutex_unlock(&lk->lock);
    pthread_mutex_lock(&h->page_lock);
    o.pages_free = h->pages_free;
    uint64_t ipages = h->index_pages;
    for (uint64_t pi = 0; pi < s->n_pages; pi++) {
        unsigned t = PM_TYPE(s->pmap[pi]);
        large += t == PM_LARGE || t == PM_LCONT;
        large_items += t == PM_LARGE;
    }
    pthread_mutex_unlock(&h->page_lock);
    struct kv_shm_class_stats *r = &o.cls[s->n_classes];
    r->pages = large;
    r->chunks_used = large_items;
    r->bytes_used = large << SHM_PAGE_SHIFT;
    used += r->bytes_used + (ipages << SHM_PAGE_SHIFT);
    fr += o.pages_free << SHM_PAGE_SHIFT;
    o.index_bytes =
        (ipages << SHM_PAGE_SHIFT) + __atomic_load_n(&h->lines, __ATOMIC_RELAXED) * SHM_LINE;
    o.bytes_used = used;
    o.bytes_free = fr;
    {
        struct timespec ts;
        uint64_t now, at = __atomic_load_n(&s->huge_cached_at_ns, __ATOMIC_RELAXED);

        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + 1; /* never 0 */
        if (!at || now - at >= KV_SHM_HUGE_CACHE_NS) {
            __atomic_store_n(&s->huge_cached, kv_shm_huge_bytes(s), __ATOMIC_RELAXED);
            __atomic_store_n(&s->huge_cached_at_ns, now, __ATOMIC_RELAXED);
        }
        o.huge_bytes = __atomic_load_n(&s->huge_cached, __ATOMIC_RELAXED);
    }
    *out = o;
    return 0;
}
