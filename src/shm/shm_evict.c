/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_evict.c -- making room when the allocator says KV_ENOMEM: expired items,
 * compaction, and (under --eviction lru) sampled-LRU eviction across classes.
 *
 * This is policy above the allocator, in memcached's shape: the allocator only allocates,
 * and a writer that got KV_ENOMEM drops every lock, calls kv_shm_make_room, and allocates
 * again. The steps, cheapest loss first:
 *
 *   1. an expired item found by sampling is removed;
 *   2. compaction: a class whose free chunks add up to a page has its emptiest page's live
 *      items moved into its other pages, and the emptied page goes back to the free stack
 *      (no data is lost, so --eviction none uses it too);
 *   3. under LRU, the oldest of a sample of items is evicted. When it is of the class the
 *      writer needs, or a large item, that frees what is needed; otherwise its whole page
 *      is emptied (every item in it evicted) so the page can serve any class -- memcached's
 *      slab page reassignment, chosen by item age.
 *
 * Moving an item is a write like any other: the copy is complete before one atomic store
 * of its slot word publishes it, under the key's exclusive stripe lock, and the old chunk
 * is freed after. A kill at any instant leaves the old or the new copy reachable, never
 * both and never neither. Every step takes one stripe at a time and holds nothing else
 * while it waits for one. */
#include <string.h>

#include "shm_int.h"

static int item_expired(const struct shm_item *it, int64_t now)
{
    return it->expire_ms && it->expire_ms <= now;
}

static uint32_t atime_now(const struct kv_shm_store *s)
{
    return (uint32_t)((uint64_t)(kv_shm_now_ms() - (int64_t)s->hdr->created_ms) / 4);
}

/* Unlinks the item sampled as (slot word w, version ver) if the index still holds that very
 * item -- the same chunk may hold a newer write of the same key by now, which the version
 * tells apart -- and, with expired_only, if it is expired. 0 when it did. */
static int unlink_word(struct kv_shm_store *s, uint64_t w, uint64_t ver, int expired_only,
                       int64_t now)
{
    struct shm_item *it = kv_shm_item_check(s, w);
    if (!it)
        return KV_EAGAIN;
    /* no lock is held yet: the chunk may have been reused since it was sampled (even as
     * another page's bytes), so its key length is read once and bounded before use */
    uint32_t klen = __atomic_load_n(&it->klen, __ATOMIC_RELAXED);
    if (klen == 0 || klen > s->max_key ||
        (uint64_t)(it->data - s->base) + klen > s->data_end)
        return KV_EAGAIN;
    uint64_t h = kv_shm_hash(s, it->data, klen);
    unsigned pdb = __atomic_load_n(&it->db, __ATOMIC_RELAXED); /* a guess too, like klen */
    struct shm_stripe *st = shm_stripe_of(s, h);
    int rc = KV_EAGAIN;
    pthread_rwlock_wrlock(&st->lock);
    struct shm_item *found;
    /* a split may have moved it since it was sampled: look where its hash says now */
    uint64_t *slot =
        kv_shm_index_find(s, kv_shm_index_bucket(s, h), h, pdb, it->data, klen, &found);
    if (slot && *slot == w && found->version == ver &&
        (!expired_only || item_expired(found, now))) {
        int expired = item_expired(found, now);
        shm_gone_mark(s, h, found, kv_shm_now_ms());
        __atomic_store_n(slot, 0, __ATOMIC_RELEASE);
        __atomic_sub_fetch(&st->keys, 1, __ATOMIC_RELAXED);
        shm_db_count(s, found->db, -1);
        __atomic_add_fetch(expired ? &s->hdr->expired : &s->hdr->evictions, 1, __ATOMIC_RELAXED);
        rc = 0;
    }
    pthread_rwlock_unlock(&st->lock);
    if (rc == 0)
        kv_shm_free(s, SHM_WORD_OFF(w));
    return rc;
}

enum drain_mode { DRAIN_MOVE, DRAIN_EVICT };

/* Empties slab page pi: every live item is moved to another page of its class (MOVE; stops
 * at the first that finds no room) or evicted (EVICT). 0 when the page went back to the
 * free stack; KV_EAGAIN when something still holds a chunk of it (a chunk being written,
 * a writer's spare) or the page could not be drained. */
static int page_drain(struct kv_shm_store *s, uint64_t pi, enum drain_mode mode)
{
    unsigned c, carved;
    if (kv_shm_page_drain_begin(s, pi, &c, &carved))
        return KV_EAGAIN;
    int64_t now = kv_shm_now_ms();
    uint64_t base = shm_page_base(s, pi);
    for (unsigned i = 0; i < carved; i++) {
        uint64_t off = base + (uint64_t)i * s->csize[c];
        struct shm_item *it = shm_ptr(s, off);
        /* Read without a lock: a chunk being written or freed may show anything, so it is
         * only a guess at a key, acted on only if the index really points at this chunk. */
        uint32_t klen = __atomic_load_n(&it->klen, __ATOMIC_RELAXED);
        uint32_t vlen = __atomic_load_n(&it->vlen, __ATOMIC_RELAXED);
        if (__atomic_load_n(&it->magic, __ATOMIC_RELAXED) != SHM_ITEM_MAGIC || klen == 0 ||
            klen > s->max_key || SHM_ITEM_HDR + (uint64_t)klen + vlen > s->csize[c])
            continue;
        uint64_t h = kv_shm_hash(s, it->data, klen);
        unsigned pdb = __atomic_load_n(&it->db, __ATOMIC_RELAXED);
        struct shm_stripe *st = shm_stripe_of(s, h);
        struct shm_item *found;
        uint64_t old = 0;
        int stop = 0;
        pthread_rwlock_wrlock(&st->lock);
        uint64_t *slot =
            kv_shm_index_find(s, kv_shm_index_bucket(s, h), h, pdb, it->data, klen, &found);
        if (slot && SHM_WORD_OFF(*slot) == off && found == it) {
            if (mode == DRAIN_EVICT) {
                shm_gone_mark(s, h, found, kv_shm_now_ms());
                __atomic_store_n(slot, 0, __ATOMIC_RELEASE);
                __atomic_sub_fetch(&st->keys, 1, __ATOMIC_RELAXED);
                shm_db_count(s, found->db, -1);
                __atomic_add_fetch(item_expired(it, now) ? &s->hdr->expired : &s->hdr->evictions, 1,
                                   __ATOMIC_RELAXED);
                old = off;
            } else {
                uint64_t noff;
                if (kv_shm_chunk_alloc_listed(s, c, &noff) == 0) {
                    memcpy(shm_ptr(s, noff), it, shm_item_size(it));
                    kv_shm_crash_point(s, KV_SHM_CRASH_PUBLISH);
                    __atomic_store_n(slot, shm_word(noff, c, h), __ATOMIC_RELEASE);
                    old = off;
                } else {
                    stop = 1; /* the class's other pages are full after all */
                }
            }
        }
        pthread_rwlock_unlock(&st->lock);
        if (old && mode == DRAIN_MOVE)
            __atomic_add_fetch(&s->hdr->items_moved, 1, __ATOMIC_RELAXED);
        if (old && mode == DRAIN_MOVE)
            kv_shm_free_replaced(s, old); /* --sync: the copy's twin, not a removal */
        else if (old)
            kv_shm_free(s, old);
        if (stop)
            break;
    }
    if (!kv_shm_page_drain_end(s, pi))
        return KV_EAGAIN;
    __atomic_add_fetch(mode == DRAIN_MOVE ? &s->hdr->pages_compacted : &s->hdr->pages_evicted, 1,
                       __ATOMIC_RELAXED);
    return 0;
}

/* Step 2: an item class whose free chunks fill a page gives its emptiest page back; the
 * classes with the most free bytes are tried first, and a page that cannot be emptied
 * (a chunk of it is being written) does not stop the next class from being tried. */
static int compact_one(struct kv_shm_store *s)
{
    uint64_t tried = 0; /* bit c: class c tried (n_classes < 64) */
    _Static_assert(SHM_MAX_CLASSES <= 64, "one bit per class");
    for (int round = 0; round < 4; round++) {
        uint64_t best_free = 0, best_page = 0;
        unsigned best = 0;
        for (unsigned c = 0; c < s->n_classes; c++) {
            uint64_t fr, page;
            if (tried >> c & 1)
                continue;
            kv_shm_class_room(s, c, &fr, &page);
            /* free chunks outside the emptiest page >= its live items, once they fill a page */
            if (page && fr >= s->cper[c] && fr * s->csize[c] > best_free) {
                best_free = fr * s->csize[c];
                best_page = page;
                best = c;
            }
        }
        if (!best_page)
            return KV_ENOMEM;
        if (page_drain(s, best_page - 1, DRAIN_MOVE) == 0)
            return 0;
        tried |= 1ull << best;
    }
    return KV_ENOMEM;
}

struct sample {
    int64_t now;
    uint32_t an;
    int expired_only;
    int found;
    uint64_t best_w, best_score, best_ver;
};

/* Looks at every item of bucket b, keeping the best candidate in *sm. */
static void sample_bucket(struct kv_shm_store *s, uint64_t b, struct sample *sm)
{
    struct shm_stripe *st = &s->stripes[b & (SHM_STRIPES - 1)];
    pthread_rwlock_rdlock(&st->lock);
    uint64_t *line = kv_shm_index_line(s, b);
    for (int k = 0; line && k < (int)s->chain_max; k++) {
        for (int i = 0; i < SHM_SLOTS; i++) {
            uint64_t w = __atomic_load_n(&line[i], __ATOMIC_ACQUIRE);
            struct shm_item *it = w ? kv_shm_item_check(s, w) : NULL;
            if (!it)
                continue;
            int expired = item_expired(it, sm->now);
            if (sm->expired_only && !expired)
                continue;
            uint32_t at = __atomic_load_n(&it->atime, __ATOMIC_RELAXED);
            uint64_t score = expired ? UINT64_MAX : (uint64_t)(int64_t)(int32_t)(sm->an - at);
            if (!sm->found || score > sm->best_score) {
                sm->best_w = w;
                sm->best_score = score;
                sm->best_ver = it->version;
            }
            sm->found++;
        }
        uint64_t nx = kv_shm_link_parse(s, __atomic_load_n(&line[SHM_SLOTS], __ATOMIC_ACQUIRE));
        line = nx ? shm_ptr(s, nx) : NULL;
    }
    pthread_rwlock_unlock(&st->lock);
}

/* Steps 1 and 3: samples items in random buckets; removes the oldest (an expired one
 * first). With expired_only, only an expired item is taken. A sparse index (few keys left
 * in many buckets) is walked from a random bucket until something is found, so the last
 * items of a store can always be evicted. */
static int evict_sampled(struct kv_shm_store *s, unsigned want, int expired_only)
{
    struct sample sm = {.now = kv_shm_now_ms(), .an = atime_now(s), .expired_only = expired_only};
    uint64_t active = kv_shm_index_active(s);
    for (int tries = 0; tries < 64 && (sm.found < 5 || tries < 8); tries++)
        sample_bucket(s, kv_shm_rand() % active, &sm);
    if (!sm.found && !expired_only) {
        uint64_t start = kv_shm_rand() % active;
        for (uint64_t k = 0; k < active && !sm.found; k++)
            sample_bucket(s, (start + k) % active, &sm);
    }
    int found = sm.found;
    uint64_t best_w = sm.best_w, best_score = sm.best_score;
    int64_t now = sm.now;
    if (!found)
        return KV_ENOMEM;
    unsigned c = SHM_WORD_CLS(best_w);
    if (best_score == UINT64_MAX || c == want || c == SHM_CLASS_LARGE) {
        unlink_word(s, best_w, sm.best_ver, expired_only, now);
        return 0; /* freed, or gone already: either way allocate again */
    }
    /* the oldest item is of another class: its page makes room for any class */
    uint64_t pi = (SHM_WORD_OFF(best_w) - s->data_off) >> SHM_PAGE_SHIFT;
    if (page_drain(s, pi, DRAIN_EVICT) == 0)
        return 0;
    unlink_word(s, best_w, sm.best_ver, 0, now); /* the page stays pinned: the item goes */
    return 0;
}

int kv_shm_make_room(struct kv_shm_store *s, size_t total, int line)
{
    if (s->txn)
        return KV_ENOMEM; /* eviction and compaction move items behind the undo log */
    unsigned want = line ? s->line_cls : kv_shm_class_for(s, total);
    if (evict_sampled(s, want, 1) == 0)
        return 0;
    if (compact_one(s) == 0)
        return 0;
    if (!s->lru)
        return KV_ENOMEM;
    return evict_sampled(s, want, 0);
}
