/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_index.c -- the hash index: linear hashing over buckets of slot words, the
 * incremental split, lookups and sampled-LRU eviction.
 *
 * Why linear hashing: the index grows one bucket at a time (bounded work per insert, no
 * stop-the-world rehash, no second table), its pages are allocated one at a time from the
 * segment, and a split of bucket p only touches buckets p and p + 2^L, both guarded by
 * the same stripe lock.
 *
 * Crash safety of a split: each moving slot word is first stored into the new bucket,
 * then cleared from the old one, and the state (L, p) advances only after the last move.
 * A kill in between leaves an item referenced twice or from a not-yet-active bucket,
 * never not at all; recovery puts every reachable item back into the bucket the state
 * says, dropping the duplicates. Links and directory entries carry check bits so that a
 * damaged one is refused instead of followed.
 *
 * Lock rules: see shm_int.h. */
#include <string.h>
#include <sys/mman.h>

#include "kv_mem.h"
#include "shm_int.h"

uint64_t kv_shm_state_make(unsigned L, uint64_t p)
{
    uint64_t v = (uint64_t)L | (p << 6);
    return v | ((kv_shm_mix64(v ^ 0x57A7E5ull) >> 48) << 48);
}

int kv_shm_state_parse(uint64_t w, unsigned *L, uint64_t *p)
{
    uint64_t v = w & 0xFFFFFFFFFFFFull;
    if ((w >> 48) != (kv_shm_mix64(v ^ 0x57A7E5ull) >> 48))
        return KV_ECORRUPT;
    unsigned l = v & 63;
    uint64_t q = v >> 6;
    if (l < SHM_INIT_LEVEL || l > 38 || q >= (1ull << l))
        return KV_ECORRUPT;
    *L = l;
    *p = q;
    return 0;
}

uint64_t kv_shm_dir_make(uint64_t pi)
{
    return (pi + 1) | ((uint64_t)(uint32_t)kv_shm_mix64(pi ^ 0xD1D1ull) << 32);
}

int kv_shm_dir_parse(const struct kv_shm_store *s, uint64_t e, uint64_t *pi)
{
    uint64_t v = e & 0xFFFFFFFFull;
    if (v == 0 || v > s->n_pages)
        return KV_ECORRUPT;
    if ((e >> 32) != (uint32_t)kv_shm_mix64((v - 1) ^ 0xD1D1ull))
        return KV_ECORRUPT;
    *pi = v - 1;
    return 0;
}

uint64_t kv_shm_link_make(uint64_t off)
{
    return off | ((kv_shm_mix64(off ^ 0x11AEull) >> 48) << 48);
}

/* Returns the line offset a link word names, 0 when empty or damaged. */
uint64_t kv_shm_link_parse(const struct kv_shm_store *s, uint64_t w)
{
    uint64_t off = w & 0xFFFFFFFFFFFFull;
    if (w == 0 || off < s->data_off || off + SHM_LINE > s->data_end || off % SHM_LINE)
        return 0;
    if ((w >> 48) != (kv_shm_mix64(off ^ 0x11AEull) >> 48))
        return 0;
    return off;
}

/* The next overflow line of a chain at run time: also checked against the page map. */
static uint64_t *line_next(const struct kv_shm_store *s, const uint64_t *line)
{
    uint64_t off = kv_shm_link_parse(s, __atomic_load_n(&line[SHM_SLOTS], __ATOMIC_ACQUIRE));
    if (!off)
        return NULL;
    uint64_t pi = (off - s->data_off) >> SHM_PAGE_SHIFT;
    if (__atomic_load_n(&s->pmap[pi], __ATOMIC_RELAXED) != PM_MAKE(PM_SLAB, s->line_cls))
        return NULL;
    return shm_ptr(s, off);
}

uint64_t kv_shm_index_active(const struct kv_shm_store *s)
{
    unsigned L;
    uint64_t p;
    if (kv_shm_state_parse(__atomic_load_n(&s->hdr->state, __ATOMIC_ACQUIRE), &L, &p))
        return 1ull << SHM_INIT_LEVEL; /* validated at open; cannot happen */
    return (1ull << L) + p;
}

/* The state word changes once per bucket split and a directory word once
 * per index page, while every lookup reads both: each thread keeps the words
 * it validated last, with what they decoded to (a pure function of the word),
 * and checks a word again only when it differs. The check is unchanged; it is
 * just not repeated for the same bits. */
static __thread struct {
    uint64_t w, p;
    unsigned L;
    int valid;
} state_seen;

/* Directory words whose check bits passed, by chunk: 256 chunks = 256k buckets,
 * ~1.5M keys, in 2 KiB. The page range check depends on the store and is cheap,
 * so it is done every time; only the hash of the check bits is remembered. */
#define DIR_SEEN 256
static __thread uint64_t dir_seen[DIR_SEEN]; /* 0 = none (a valid word is never 0) */

uint64_t kv_shm_index_bucket(const struct kv_shm_store *s, uint64_t h)
{
    unsigned L = SHM_INIT_LEVEL;
    uint64_t p = 0;
    uint64_t w = __atomic_load_n(&s->hdr->state, __ATOMIC_ACQUIRE);
    if (state_seen.valid && state_seen.w == w) {
        L = state_seen.L;
        p = state_seen.p;
    } else if (kv_shm_state_parse(w, &L, &p) == 0) {
        state_seen.w = w;
        state_seen.L = L;
        state_seen.p = p;
        state_seen.valid = 1;
    }
    uint64_t b = h & ((1ull << L) - 1);
    if (b < p)
        b = h & ((2ull << L) - 1);
    return b;
}

uint64_t *kv_shm_index_line(const struct kv_shm_store *s, uint64_t b)
{
    uint64_t chunk = b / SHM_PAGE_BUCKETS, pi;
    if (chunk >= s->n_dir)
        return NULL;
    uint64_t e = __atomic_load_n(&s->dir[chunk], __ATOMIC_ACQUIRE);
    unsigned k = (unsigned)(chunk % DIR_SEEN);
    if (e && dir_seen[k] == e) {
        pi = (e & 0xFFFFFFFFull) - 1; /* as kv_shm_dir_parse decodes it */
        if (pi >= s->n_pages)
            return NULL;
    } else {
        if (kv_shm_dir_parse(s, e, &pi))
            return NULL;
        dir_seen[k] = e;
    }
    return shm_ptr(s, shm_page_base(s, pi) + (b % SHM_PAGE_BUCKETS) * SHM_LINE);
}

struct shm_item *kv_shm_item_check(const struct kv_shm_store *s, uint64_t w)
{
    uint64_t off = SHM_WORD_OFF(w), cap;
    unsigned c = SHM_WORD_CLS(w);
    if (off < s->data_off || off + SHM_ITEM_HDR > s->data_end)
        return NULL;
    uint64_t pi = (off - s->data_off) >> SHM_PAGE_SHIFT;
    uint64_t in = (off - s->data_off) & (SHM_PAGE - 1);
    uint32_t e = __atomic_load_n(&s->pmap[pi], __ATOMIC_RELAXED);
    if (c == SHM_CLASS_LARGE) {
        if (PM_TYPE(e) != PM_LARGE || in != 0)
            return NULL;
        struct shm_item *it = shm_ptr(s, off);
        uint64_t n = PM_ARG(e), size = SHM_ITEM_HDR + (uint64_t)it->klen + it->vlen;
        /* the key must lie in the first page, before the page list */
        if (it->magic != SHM_ITEM_MAGIC || it->cls != c || size <= SHM_MAX_CHUNK ||
            kv_shm_large_pages(size) != n ||
            SHM_ITEM_HDR + (uint64_t)it->klen > SHM_PAGE - 4 * (n - 1))
            return NULL;
        return it;
    } else {
        if (c >= s->n_classes || e != PM_MAKE(PM_SLAB, c))
            return NULL;
        /* in / size by a multiply: in < 2^16 and size < 2^16 keep it exact */
        _Static_assert(SHM_PAGE <= 65536 && SHM_MAX_CHUNK < 65536, "reciprocal division");
        uint64_t q = (in * s->crecip[c]) >> 32;
        if (in != q * s->csize[c] || q >= s->cper[c])
            return NULL;
        cap = s->csize[c];
    }
    struct shm_item *it = shm_ptr(s, off);
    if (it->magic != SHM_ITEM_MAGIC || it->cls != c ||
        SHM_ITEM_HDR + (uint64_t)it->klen + it->vlen > cap)
        return NULL;
    return it;
}

uint64_t *kv_shm_index_find(struct kv_shm_store *s, uint64_t b, uint64_t h, unsigned pdb,
                            const void *key, size_t klen, struct shm_item **itp)
{
    uint64_t *line = kv_shm_index_line(s, b);
    uint16_t tag = (uint16_t)(h >> 48);
    for (int n = 0; line && n < (int)s->chain_max; n++, line = line_next(s, line)) {
        for (int i = 0; i < SHM_SLOTS; i++) {
            uint64_t w = __atomic_load_n(&line[i], __ATOMIC_ACQUIRE);
            if (!w || SHM_WORD_TAG(w) != tag)
                continue;
            struct shm_item *it = kv_shm_item_check(s, w);
            if (it && it->klen == klen && it->db == pdb && memcmp(it->data, key, klen) == 0) {
                *itp = it;
                return &line[i];
            }
        }
    }
    return NULL;
}

/* The first empty slot of bucket b, taking a line from spare[] (filled by the caller) or
 * allocating one when the chain is full (KV_ENOMEM when none). */
static int chain_slot(struct kv_shm_store *s, uint64_t b, uint64_t *spare, unsigned *nspare,
                      uint64_t **slotp)
{
    uint64_t *line = kv_shm_index_line(s, b), *last = line;
    if (!line)
        return KV_ECORRUPT;
    int n = 0;
    for (; line && n < (int)s->chain_max; n++, line = line_next(s, line)) {
        last = line;
        for (int i = 0; i < SHM_SLOTS; i++) {
            if (__atomic_load_n(&line[i], __ATOMIC_RELAXED) == 0) {
                *slotp = &line[i];
                return 0;
            }
        }
    }
    /* A chain at its limit is never extended (linking past the limit would cut off the
     * lines beyond it): the write is refused, not acknowledged and then lost. With the
     * keyed hash only a bucket the index could not split for want of pages gets here. */
    if (line || n >= (int)s->chain_max)
        return KV_ENOMEM;
    uint64_t off;
    if (spare && *nspare) {
        off = spare[--*nspare];
    } else {
        int rc = kv_shm_line_alloc(s, &off);
        if (rc)
            return rc;
    }
    /* an empty line is complete: it is linked first, and the caller fills its slot */
    __atomic_store_n(&last[SHM_SLOTS], kv_shm_link_make(off), __ATOMIC_RELEASE);
    __atomic_add_fetch(&s->hdr->lines, 1, __ATOMIC_RELAXED);
    *slotp = shm_ptr(s, off);
    return 0;
}

static int chain_insert(struct kv_shm_store *s, uint64_t b, uint64_t word, uint64_t *spare,
                        unsigned *nspare)
{
    uint64_t *slot;
    int rc = chain_slot(s, b, spare, nspare, &slot);
    if (rc == 0)
        __atomic_store_n(slot, word, __ATOMIC_RELEASE);
    return rc;
}

int kv_shm_index_reserve(struct kv_shm_store *s, uint64_t b, uint64_t **slot)
{
    return chain_slot(s, b, NULL, NULL, slot);
}

int kv_shm_index_insert(struct kv_shm_store *s, uint64_t b, uint64_t word)
{
    return chain_insert(s, b, word, NULL, NULL);
}

int kv_shm_index_page_add(struct kv_shm_store *s, uint64_t chunk)
{
    uint64_t pi;
    int rc = kv_shm_page_alloc(s, PM_MAKE(PM_INDEX, 0), &pi);
    if (rc)
        return rc;
    memset(shm_ptr(s, shm_page_base(s, pi)), 0, SHM_PAGE);
    /* --sync: the zeroed page is on disk before the directory can name it there, so a torn
     * image never reads the page's older bytes as slots (no-op otherwise); when that
     * flush fails the page is never named and goes back (the failure is recorded) */
    if (kv_shm_sync_range(s, shm_page_base(s, pi), SHM_PAGE) != 0) {
        kv_shm_page_unused(s, pi);
        return KV_EIO;
    }
    __atomic_store_n(&s->dir2[chunk], kv_shm_dir_make(pi), __ATOMIC_RELEASE);
    __atomic_store_n(&s->dir[chunk], kv_shm_dir_make(pi), __ATOMIC_RELEASE);
    __atomic_add_fetch(&s->hdr->index_pages, 1, __ATOMIC_RELAXED);
    return 0;
}

struct move {
    uint64_t *slot;
    uint64_t word;
};

/* Splits bucket p into p and p + 2^L. Holds split_lock (so splits run one at a time and in
 * order) and the exclusive lock of p's stripe, which also guards p + 2^L. */
static void split_one(struct kv_shm_store *s)
{
    struct shm_hdr *hd = s->hdr;
    unsigned L;
    uint64_t p;
    if (kv_shm_state_parse(__atomic_load_n(&hd->state, __ATOMIC_ACQUIRE), &L, &p))
        return;
    uint64_t t = (1ull << L) + p;
    if (t / SHM_PAGE_BUCKETS >= s->n_dir)
        return; /* the index is at its largest for this segment */
    if (!kv_shm_index_line(s, t) && kv_shm_index_page_add(s, t / SHM_PAGE_BUCKETS))
        return; /* no free page: chains grow with overflow lines instead */

    struct shm_stripe *st = &s->stripes[p & (SHM_STRIPES - 1)];
    struct move local[64], *mv = local;
    size_t cap = 64, n = 0;
    uint64_t spare_local[16], *spare = spare_local;
    unsigned nspare = 0;
    pthread_rwlock_wrlock(&st->lock);
    uint64_t *line = kv_shm_index_line(s, p);
    for (int i = 0; line && i < SHM_SLOTS; i++) /* the keys are about to be rehashed */
        if (line[i] && SHM_WORD_OFF(line[i]) + SHM_ITEM_HDR <= s->data_end)
            __builtin_prefetch(s->base + SHM_WORD_OFF(line[i]) + SHM_ITEM_HDR - 8);
    for (int k = 0; line && k < (int)s->chain_max; k++, line = line_next(s, line)) {
        for (int i = 0; i < SHM_SLOTS; i++) {
            uint64_t w = line[i];
            if (!w || SHM_WORD_CLS(w) == SHM_CLASS_MOVED) /* --sync: moved by a past split */
                continue;
            struct shm_item *it = kv_shm_item_check(s, w);
            if (!it) { /* unsound slot: no lookup can use it; recovery reclaims its chunk */
                __atomic_store_n(&line[i], 0, __ATOMIC_RELEASE);
                __atomic_add_fetch(&hd->corrupt, 1, __ATOMIC_RELAXED);
                __atomic_sub_fetch(&st->keys, 1, __ATOMIC_RELAXED);
                continue;
            }
            if (!((kv_shm_hash(s, it->data, it->klen) >> L) & 1))
                continue;
            if (n == cap) {
                struct move *m2 = kv_mem_alloc(KV_MOD_SHM, cap * 2 * sizeof(*m2));
                if (!m2)
                    goto out;
                memcpy(m2, mv, n * sizeof(*mv));
                if (mv != local)
                    kv_mem_free(KV_MOD_SHM, mv);
                mv = m2;
                cap *= 2;
            }
            mv[n].slot = &line[i];
            mv[n++].word = w;
        }
    }
    /* Every line the new bucket needs is taken before the first move: a split either
     * happens whole or not at all. */
    size_t need = n > SHM_SLOTS ? (n - SHM_SLOTS + SHM_SLOTS - 1) / SHM_SLOTS : 0;
    if (need > 16) { /* a big bucket (a flood, or a store that could not split for long) */
        spare = kv_mem_alloc(KV_MOD_SHM, need * sizeof(*spare));
        if (!spare) {
            spare = spare_local;
            goto out;
        }
    }
    while (nspare < need) {
        if (kv_shm_line_alloc(s, &spare[nspare]))
            goto out;
        nspare++;
    }
    /* --sync: a moved word stays in the old bucket, marked, until a sync begun after the
     * move has completed (shm_sync.c): on disk the new bucket may still be older than the
     * old one, and then only the old word names the item */
    int keep = kv_shm_deferring(s);
    for (size_t i = 0; i < n; i++) {
        if (chain_insert(s, t, mv[i].word, spare, &nspare))
            goto out; /* cannot happen: lines are reserved; state stays, recovery-safe */
        kv_shm_crash_point(s, KV_SHM_CRASH_SPLIT); /* the item is in both buckets */
        uint64_t left = keep ? (mv[i].word & ~(0xFFull << 40)) | ((uint64_t)SHM_CLASS_MOVED << 40)
                             : 0;
        __atomic_store_n(mv[i].slot, left, __ATOMIC_RELEASE);
        mv[i].word = left;
    }
    if (keep && n) {
        uint64_t *slots_local[64], **slots = n <= 64 ? slots_local : NULL;
        uint64_t words_local[64], *words = n <= 64 ? words_local : NULL;
        if (!slots) {
            slots = kv_mem_alloc(KV_MOD_SHM, n * sizeof(*slots));
            words = kv_mem_alloc(KV_MOD_SHM, n * sizeof(*words));
        }
        int rc = slots && words ? 0 : KV_ENOMEM;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            slots[i] = mv[i].slot;
            words[i] = mv[i].word;
        }
        if (rc == 0)
            rc = kv_shm_sync_moved(s, slots, words, n, (unsigned)(p & (SHM_STRIPES - 1)));
        if (rc) {
            /* not recorded: flush now (the new bucket reaches the disk), then clear */
            msync(s->base, s->size, MS_SYNC);
            for (size_t i = 0; i < n; i++)
                __atomic_store_n(mv[i].slot, 0, __ATOMIC_RELEASE);
        }
        if (slots != slots_local) {
            kv_mem_free(KV_MOD_SHM, slots);
            kv_mem_free(KV_MOD_SHM, words);
        }
    }
    p++;
    if (p == (1ull << L)) {
        L++;
        p = 0;
    }
    __atomic_store_n(&hd->state, kv_shm_state_make(L, p), __ATOMIC_RELEASE);
out:
    pthread_rwlock_unlock(&st->lock);
    while (nspare)
        kv_shm_free(s, spare[--nspare]);
    if (spare != spare_local)
        kv_mem_free(KV_MOD_SHM, spare);
    if (mv != local)
        kv_mem_free(KV_MOD_SHM, mv);
}

void kv_shm_index_grow(struct kv_shm_store *s, uint64_t h)
{
    if (s->txn) { /* a split moves slots under the undo log: after the commit */
        kv_shm_txn_defer_grow(s, h);
        return;
    }
    /* keys of one stripe x stripes estimates the total without a shared counter */
    int64_t k = __atomic_load_n(&shm_stripe_of(s, h)->keys, __ATOMIC_RELAXED);
    if ((uint64_t)(k > 0 ? k : 0) * SHM_STRIPES <= kv_shm_index_active(s) * SHM_LOAD)
        return;
    if (pthread_mutex_trylock(&s->hdr->split_lock))
        return; /* someone else is splitting: the work gets done either way */
    split_one(s);
    pthread_mutex_unlock(&s->hdr->split_lock);
}
