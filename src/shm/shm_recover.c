/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_recover.c -- repair of a segment that was not closed cleanly.
 *
 * The only things trusted are the items reachable from the index, and only after each
 * has been bounds-checked and its checksum verified. Everything else (page map, free
 * lists, carve pointers, per-class and per-stripe counters, the version counter's lower
 * bound) is derived from them and rewritten. The steps:
 *
 *   0. multi-key writes a kill interrupted are undone (shm_batch.c);
 *   1. directory: keep entries that name a distinct in-range page (check bits valid);
 *   2. overflow lines: follow each bucket's links, cutting damaged ones and cycles;
 *   3. items: every slot of every bucket page (active or not) is validated and claimed
 *      (page class, chunk alignment, size, checksum); unsound slots are cleared and
 *      counted as dropped; slot words are rewritten from the item (tag, class);
 *   4. the allocator is rebuilt from the claims, missing bucket pages are re-added;
 *   5. items sitting outside the bucket the index state assigns them (a split or a
 *      previous recovery was killed midway) are inserted where they belong, then cleared
 *      where they were;
 *   6. per bucket: duplicate references are cleared, and of two items with the same key
 *      the newer version wins; per-stripe key counts are recomputed.
 *
 * Idempotent: steps 1-3 only clear garbage or rewrite derived bits, step 4 rewrites
 * derived state, step 5 inserts before it clears and step 6 keeps one copy; a kill at any
 * point leaves an index from which the next run reaches every item this one would have.
 *
 * Runs single-threaded, before the store is handed to anyone; takes no locks. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv_mem.h"
#include "shm_int.h"

#define BM_WORDS (SHM_PAGE / SHM_MIN_CHUNK / 64) /* bitmap words per page */

struct misplaced {
    uint64_t *slot;
    uint64_t word, bucket;
};

/* A copy of a key found for a lost slot (below). */
struct cand {
    uint64_t off, ver, h; /* off 0 = none */
    unsigned cls;
    unsigned bits; /* low bits of h that agree with the slot's bucket, up to the level */
    int dead;      /* the copy is marked removed */
};

/* A slot of a data file whose item did not verify: after a power loss, possibly a key
 * overwritten after the last sync whose new item is older on disk than the slot. */
struct lost {
    uint64_t *slot;
    uint64_t word; /* what the slot held */
    uint64_t bucket;
    uint16_t tag;
    struct cand best; /* the newest copy found of the first key of that tag and bucket */
    struct cand alt;  /* the newest of another key (rare: 26+ bits of the hash agree) */
};

struct rec {
    struct kv_shm_store *s;
    unsigned L;
    uint64_t p, active;
    uint32_t *pm;          /* owned: claimed page map */
    uint64_t *used;        /* owned: claimed chunk starts, BM_WORDS per page */
    uint64_t *lines;       /* owned: chunk starts claimed by overflow lines */
    struct misplaced *mis; /* owned */
    size_t nmis, capmis;
    struct lost *lost;     /* owned */
    size_t nlost, caplost;
    uint64_t restored;
    uint64_t kept, dropped, maxver, nlines, batches;
    int why;                                /* reason of claim_item's last refusal */
    uint64_t why_n[KV_SHM_DROP_REASONS];    /* dropped items by reason */
};

static int bm_get(const uint64_t *bm, uint64_t pi, unsigned i)
{
    return (bm[pi * BM_WORDS + i / 64] >> (i % 64)) & 1;
}

static void bm_set(uint64_t *bm, uint64_t pi, unsigned i)
{
    bm[pi * BM_WORDS + i / 64] |= 1ull << (i % 64);
}

static uint64_t bucket_for(const struct rec *r, uint64_t h)
{
    uint64_t b = h & ((1ull << r->L) - 1);
    return b < r->p ? h & ((2ull << r->L) - 1) : b;
}

static uint64_t *bucket_ptr(const struct rec *r, uint64_t b)
{
    return kv_shm_index_line(r->s, b);
}

/* Whether a word of bucket b may name an item of keyed hash h: a word sits in a bucket b
 * that is h mod 2^l for a level l at least b's bit length (a split's old bucket too), so h
 * agrees with b in those bits. 16 + 10 or more bits of a hash no client can compute. */
static int hash_fits(uint64_t b, uint64_t h)
{
    unsigned bits = b ? 64u - (unsigned)__builtin_clzll(b) : 0;
    uint64_t mask = (1ull << (bits > SHM_INIT_LEVEL ? bits : SHM_INIT_LEVEL)) - 1;
    return (h & mask) == b;
}

/* Validates and claims the item that word w of bucket b names; NULL when unsound. A second
 * reference to an item already claimed is returned as is (duplicates are resolved in step
 * 6). *hp: the item's keyed hash, when it was needed (data files), else left alone. */
static struct shm_item *claim_item(struct rec *r, uint64_t w, uint64_t b, uint64_t *hp)
{
    struct kv_shm_store *s = r->s;
    uint64_t off = SHM_WORD_OFF(w);
    r->why = KV_SHM_DROP_BOUNDS;
    if (off < s->data_off || off + SHM_ITEM_HDR > s->data_end || off % 8)
        return NULL;
    struct shm_item *it = shm_ptr(s, off);
    uint64_t size = SHM_ITEM_HDR + (uint64_t)it->klen + it->vlen;
    uint64_t pi = (off - s->data_off) >> SHM_PAGE_SHIFT;
    uint64_t in = (off - s->data_off) & (SHM_PAGE - 1);
    unsigned c = it->cls;
    r->why = KV_SHM_DROP_HEADER;
    if (it->magic != SHM_ITEM_MAGIC || it->klen == 0 || it->db >= SHM_MAX_DB)
        return NULL;
    /* A data file after a power loss (--sync): the slot's page may be newer than its
     * item's, and the chunk it names may then still hold an item it held before (freed,
     * reused since): another key's, or of another class. Only an item of the word's own
     * tag, bucket and class is the one the word was written for; anything else is a torn
     * slot, and recovery looks for the key's previous copy (restore_lost). Checked before
     * anything is claimed: a stale item's claim would take its page (class, or a large
     * item's pages) from the items that do live there. After a kill (shm, or a file
     * without a power loss) the word always matches its item. */
    if (s->is_file) {
        if (it->klen > s->max_key || off + SHM_ITEM_HDR + it->klen > s->data_end)
            return NULL;
        uint64_t h = kv_shm_hash(s, it->data, it->klen);
        if (SHM_WORD_TAG(w) != (uint16_t)(h >> 48) || !hash_fits(b, h) ||
            (SHM_WORD_CLS(w) != c && SHM_WORD_CLS(w) != SHM_CLASS_MOVED))
            return NULL;
        *hp = h;
    }
    /* --sync: removed, or never committed (shm_sync.c). On a torn image a slot may name a
     * chunk that was freed and reused after the last sync while the disk still has its
     * removed item: taking it would bring back a key deleted before that sync. A key
     * removed after the sync may be absent, so no reference to a removed item is ever
     * needed; none to a refused write's item ever existed. */
    if (it->atime >= SHM_ATIME_VOID)
        return NULL;
    if (c == SHM_CLASS_LARGE) {
        uint64_t n = kv_shm_large_pages(size);
        if (in || size <= SHM_MAX_CHUNK || n == 0 ||
            SHM_ITEM_HDR + (uint64_t)it->klen > SHM_PAGE - 4 * (n - 1))
            return NULL;
        if (r->pm[pi] == PM_MAKE(PM_LARGE, n) && bm_get(r->used, pi, 0))
            return it;
        r->why = KV_SHM_DROP_OVERLAP;
        if (r->pm[pi] != PM_MAKE(PM_FREE, 0))
            return NULL;
        /* every listed page in range, distinct and unclaimed; marked as they are checked
         * so that a page listed twice is caught, unmarked again if the item is refused */
        const uint32_t *list = kv_shm_large_list(s, off, n);
        uint64_t k = 0;
        r->pm[pi] = PM_MAKE(PM_LARGE, n);
        for (; k + 1 < n; k++) {
            uint64_t q = list[k];
            if (q >= s->n_pages || r->pm[q] != PM_MAKE(PM_FREE, 0)) {
                r->why = q >= s->n_pages ? KV_SHM_DROP_BOUNDS : KV_SHM_DROP_OVERLAP;
                break;
            }
            r->pm[q] = PM_MAKE(PM_LCONT, pi);
        }
        if (k + 1 == n && kv_shm_item_crc(s, it) != it->crc)
            r->why = KV_SHM_DROP_CHECKSUM;
        else if (k + 1 == n) {
            bm_set(r->used, pi, 0);
            return it;
        }
        for (uint64_t j = 0; j < k; j++)
            r->pm[list[j]] = PM_MAKE(PM_FREE, 0);
        r->pm[pi] = PM_MAKE(PM_FREE, 0);
        return NULL;
    }
    if (c >= s->n_classes || in % s->csize[c] || in / s->csize[c] >= s->cper[c] ||
        size > s->csize[c])
        return NULL;
    r->why = KV_SHM_DROP_OVERLAP;
    if (r->pm[pi] != PM_MAKE(PM_FREE, 0) && r->pm[pi] != PM_MAKE(PM_SLAB, c))
        return NULL;
    unsigned idx = (unsigned)(in / SHM_MIN_CHUNK);
    if (bm_get(r->lines, pi, idx))
        return NULL;
    if (bm_get(r->used, pi, idx))
        return it;
    r->why = KV_SHM_DROP_CHECKSUM;
    if (kv_shm_item_crc(s, it) != it->crc)
        return NULL;
    r->pm[pi] = PM_MAKE(PM_SLAB, c);
    bm_set(r->used, pi, idx);
    return it;
}

/* Step 2 for one bucket: claims its overflow lines, cutting the chain at a bad link. */
/* A link that fails its check cuts the chain there: the items of the lines it named are
 * lost. They are not taken back (the link cannot be trusted to name lines of this bucket),
 * but they are counted, as far as the raw offset still leads to lines whose items are
 * sound and belong to bucket b, so that recovery says what it dropped. */
static void count_cut(struct rec *r, uint64_t raw, uint64_t b)
{
    struct kv_shm_store *s = r->s;
    for (unsigned n = 0; n < s->chain_max; n++) {
        if (raw < s->data_off || raw + SHM_LINE > s->data_end || raw % SHM_LINE)
            return;
        const uint64_t *line = shm_ptr(s, raw);
        for (int i = 0; i < SHM_SLOTS; i++) {
            uint64_t off = SHM_WORD_OFF(line[i]);
            if (!line[i] || off < s->data_off || off + SHM_ITEM_HDR > s->data_end)
                continue;
            const struct shm_item *it = shm_ptr(s, off);
            if (it->magic != SHM_ITEM_MAGIC || it->klen == 0 || it->klen > s->max_key ||
                off + SHM_ITEM_HDR + it->klen > s->data_end ||
                (it->cls != SHM_CLASS_LARGE &&
                 (it->cls >= s->n_classes || off + shm_item_size(it) > s->data_end)))
                continue;
            if (bucket_for(r, kv_shm_hash(s, it->data, it->klen)) != b ||
                kv_shm_item_crc(s, it) != it->crc)
                continue;
            r->dropped++;
            r->why_n[KV_SHM_DROP_LINK]++;
        }
        raw = kv_shm_link_parse(s, line[SHM_SLOTS]);
    }
}

static void claim_lines(struct rec *r, uint64_t *line, uint64_t b)
{
    struct kv_shm_store *s = r->s;
    for (;;) {
        uint64_t w = line[SHM_SLOTS];
        if (!w)
            return;
        uint64_t off = kv_shm_link_parse(s, w);
        if (!off)
            count_cut(r, w & 0xFFFFFFFFFFFFull, b);
        uint64_t pi = off ? (off - s->data_off) >> SHM_PAGE_SHIFT : 0;
        unsigned idx = off ? (unsigned)(((off - s->data_off) & (SHM_PAGE - 1)) / SHM_LINE) : 0;
        if (!off ||
            (r->pm[pi] != PM_MAKE(PM_FREE, 0) && r->pm[pi] != PM_MAKE(PM_SLAB, s->line_cls)) ||
            bm_get(r->used, pi, idx)) {
            line[SHM_SLOTS] = 0; /* damaged link, or a line reached twice */
            return;
        }
        r->pm[pi] = PM_MAKE(PM_SLAB, s->line_cls);
        bm_set(r->used, pi, idx);
        bm_set(r->lines, pi, idx);
        r->nlines++;
        line = shm_ptr(s, off);
    }
}

static int mis_add(struct rec *r, uint64_t *slot, uint64_t word, uint64_t bucket)
{
    if (r->nmis == r->capmis) {
        size_t cap = r->capmis ? r->capmis * 2 : 256;
        struct misplaced *m = kv_mem_realloc(KV_MOD_SHM, r->mis, cap * sizeof(*m));
        if (!m)
            return KV_ENOMEM;
        r->mis = m;
        r->capmis = cap;
    }
    r->mis[r->nmis++] = (struct misplaced){slot, word, bucket};
    return 0;
}

static uint64_t *next_line(const struct kv_shm_store *s, const uint64_t *line)
{
    uint64_t off = kv_shm_link_parse(s, line[SHM_SLOTS]);
    return off ? shm_ptr(s, off) : NULL;
}

/* Recovery is bound by the first touch of each item (slots are in hash order, items in
 * allocation order): ask for the items of a bucket a few steps ahead. Only in-range
 * addresses are prefetched; a prefetch never faults anyway. */
static void prefetch_bucket(const struct rec *r, uint64_t b)
{
    const struct kv_shm_store *s = r->s;
    const uint64_t *line = b < s->n_dir * SHM_PAGE_BUCKETS ? bucket_ptr(r, b) : NULL;
    for (int i = 0; line && i < SHM_SLOTS; i++) {
        uint64_t off = SHM_WORD_OFF(line[i]);
        if (line[i] && off >= s->data_off && off + SHM_ITEM_HDR <= s->data_end) {
            __builtin_prefetch(s->base + off);
            __builtin_prefetch(s->base + off + SHM_ITEM_HDR - 1);
        }
    }
}

/* Step 3 for bucket b. */
static int claim_bucket(struct rec *r, uint64_t b)
{
    struct kv_shm_store *s = r->s;
    for (uint64_t *line = bucket_ptr(r, b); line; line = next_line(s, line)) {
        for (int i = 0; i < SHM_SLOTS; i++) {
            if (!line[i])
                continue;
            /* a word a split left behind under --sync (SHM_CLASS_MOVED): an ordinary
             * reference here, filed where the state says below like any other -- unless
             * its item was removed since (marked dead): the word is only a spare copy of
             * a reference, and the removal may predate the last sync */
            int spare_ref = 0;
            if (SHM_WORD_CLS(line[i]) == SHM_CLASS_MOVED) {
                uint64_t mo = SHM_WORD_OFF(line[i]);
                spare_ref = mo >= s->data_off && mo + SHM_ITEM_HDR <= s->data_end &&
                            ((const struct shm_item *)shm_ptr(s, mo))->atime == SHM_ATIME_DEAD;
            }
            uint64_t h = 0;
            struct shm_item *it = spare_ref ? NULL : claim_item(r, line[i], b, &h);
            /* (a torn slot, or a moved word whose chunk holds a removed item: the key's
             * previous copy is still looked for, below) */
            if (!it && s->is_file && r->nlost < (1u << 20)) {
                if (r->nlost == r->caplost) {
                    size_t cap = r->caplost ? r->caplost * 2 : 64;
                    struct lost *l = kv_mem_realloc(KV_MOD_SHM, r->lost, cap * sizeof(*l));
                    if (!l)
                        return KV_ENOMEM;
                    r->lost = l;
                    r->caplost = cap;
                }
                r->lost[r->nlost++] =
                    (struct lost){.slot = &line[i], .word = line[i], .bucket = b,
                                  .tag = SHM_WORD_TAG(line[i])};
            }
            if (!it) {
                line[i] = 0;
                if (!spare_ref) { /* a spare copy of a reference is not an item dropped */
                    r->dropped++;
                    r->why_n[r->why]++;
                }
                continue;
            }
            if (!s->is_file) /* (a data file's claim has hashed it) */
                h = kv_shm_hash(s, it->data, it->klen);
            uint64_t w = shm_word(SHM_WORD_OFF(line[i]), it->cls, h);
            if (line[i] != w)
                line[i] = w; /* tag or class bits were damaged */
            if (it->version > r->maxver)
                r->maxver = it->version;
            uint64_t want = bucket_for(r, h);
            if (want != b && mis_add(r, &line[i], w, want))
                return KV_ENOMEM;
        }
    }
    return 0;
}

static int lost_cmp(const void *a, const void *b)
{
    const struct lost *x = a, *y = b;
    return (x->tag > y->tag) - (x->tag < y->tag);
}

static int same_key(const struct kv_shm_store *s, uint64_t off, const struct shm_item *b)
{
    const struct shm_item *a = shm_ptr(s, off);
    return a->klen == b->klen && a->db == b->db && memcmp(a->data, b->data, a->klen) == 0;
}

/* Offers the chunk at off, read as an item of class c, to the lost slots of its key.
 * Copies marked removed take part (the newest copy of a key decides: removed, the key
 * stays removed); a never-committed write's item (VOID) does not. */
static void offer(struct rec *r, uint64_t off, unsigned c)
{
    struct kv_shm_store *s = r->s;
    const struct shm_item *it = shm_ptr(s, off);
    if (it->magic != SHM_ITEM_MAGIC || it->cls != c || it->atime == SHM_ATIME_VOID ||
        it->klen == 0 || it->klen > s->max_key || off + SHM_ITEM_HDR + it->klen > s->data_end)
        return;
    uint64_t size = SHM_ITEM_HDR + (uint64_t)it->klen + it->vlen;
    if (c == SHM_CLASS_LARGE) {
        uint64_t n = kv_shm_large_pages(size);
        if (size <= SHM_MAX_CHUNK || n == 0 || SHM_ITEM_HDR + (uint64_t)it->klen > SHM_PAGE - 4 * (n - 1))
            return;
        const uint32_t *list = kv_shm_large_list(s, off, n);
        for (uint64_t k = 0; k + 1 < n; k++)
            if (list[k] >= s->n_pages)
                return;
    } else if (size > s->csize[c]) {
        return;
    }
    uint64_t h = kv_shm_hash(s, it->data, it->klen);
    struct lost key = {.tag = (uint16_t)(h >> 48)};
    struct lost *l = bsearch(&key, r->lost, r->nlost, sizeof(*l), lost_cmp);
    if (!l)
        return;
    while (l > r->lost && l[-1].tag == key.tag)
        l--;
    int checked = 0;
    for (; l < r->lost + r->nlost && l->tag == key.tag; l++) {
        /* the slot's bucket and tag: no value a client stored can pose as an item here
         * (it cannot know the hash key) */
        if (!hash_fits(l->bucket, h))
            continue;
        struct cand *cd = !l->best.off || same_key(s, l->best.off, it) ? &l->best : &l->alt;
        /* newer wins; of two copies of one version (a compaction's move), the unmarked:
         * the one moved away is marked after the sync that follows the move */
        int dead = it->atime == SHM_ATIME_DEAD;
        if (cd->off && (it->version < cd->ver || (it->version == cd->ver && dead >= cd->dead)))
            continue;
        if (!checked && kv_shm_item_crc(s, it) != it->crc)
            return;
        checked = 1;
        /* up to the bits that place a key in that bucket at the image's state: L + 1 in
         * a bucket split at this level, L in one not yet split (or for a word a split
         * left in its old bucket) */
        unsigned lv = r->L + (SHM_WORD_CLS(l->word) != SHM_CLASS_MOVED &&
                              (l->bucket < r->p || l->bucket >> r->L));
        uint64_t x = (h ^ l->bucket) & ((1ull << lv) - 1);
        unsigned bits = x ? (unsigned)__builtin_ctzll(x) : lv;
        *cd = (struct cand){off, it->version, h, c, bits, dead};
    }
}

/* Whether the index (as claimed so far) names an item with the key of cd's copy: in any
 * bucket the key may sit in at some level (a torn split may leave it in an older one). */
static int key_present(struct rec *r, const struct cand *cd)
{
    struct kv_shm_store *s = r->s;
    const struct shm_item *it = shm_ptr(s, cd->off);
    for (unsigned lv = SHM_INIT_LEVEL; lv <= r->L + 1 && lv < 40; lv++) {
        uint64_t b = cd->h & ((1ull << lv) - 1);
        if (lv > SHM_INIT_LEVEL && b == (cd->h & ((1ull << (lv - 1)) - 1)))
            continue; /* the same bucket as one level down */
        if (b >= s->n_dir * SHM_PAGE_BUCKETS)
            break;
        for (uint64_t *line = bucket_ptr(r, b); line; line = next_line(s, line))
            for (int i = 0; i < SHM_SLOTS; i++)
                if (line[i] && SHM_WORD_TAG(line[i]) == (uint16_t)(cd->h >> 48) &&
                    same_key(s, SHM_WORD_OFF(line[i]), it))
                    return 1;
    }
    return 0;
}

/* Step 3b, data files only: for each slot whose item did not verify, the newest intact
 * copy of a key of that bucket and tag (shm_sync.c keeps a replaced item intact until a
 * sync has completed after its slot changed), looked for at every chunk position of every
 * page that is not an index page, a line page or claimed by a large item already; none
 * when that newest copy is marked removed (then the copies older than it are stale: the
 * key was removed after them). Two keys that agree in tag and bucket bits (about 2^-26 a
 * pair): the copy the slot itself names, if one does (refused as removed); else the key
 * whose hash agrees with the bucket in more bits (up to those that place a key there at
 * the image's state); else one not marked removed (the newest copy of a key, when intact
 * and not removed, is that key's synced state or a later one); else the one the index
 * does not name elsewhere (the slot was its one reference); else the newer. */
static int restore_lost(struct rec *r)
{
    struct kv_shm_store *s = r->s;
    if (!r->nlost)
        return 0;
    qsort(r->lost, r->nlost, sizeof(*r->lost), lost_cmp);
    for (uint64_t pi = 0; pi < s->n_pages; pi++) {
        uint32_t e = r->pm[pi];
        if (PM_TYPE(e) != PM_FREE && PM_TYPE(e) != PM_SLAB)
            continue;
        if (PM_TYPE(e) == PM_SLAB && PM_ARG(e) >= s->n_classes)
            continue; /* index lines */
        uint64_t base = shm_page_base(s, pi);
        unsigned c0 = PM_TYPE(e) == PM_SLAB ? PM_ARG(e) : 0;
        unsigned c1 = PM_TYPE(e) == PM_SLAB ? c0 + 1 : s->n_classes;
        if (PM_TYPE(e) == PM_FREE)
            offer(r, base, SHM_CLASS_LARGE);
        for (unsigned c = c0; c < c1; c++)
            for (unsigned i = 0; i < s->cper[c]; i++) {
                uint64_t in = (uint64_t)i * s->csize[c];
                if (!bm_get(r->used, pi, (unsigned)(in / SHM_MIN_CHUNK)))
                    offer(r, base + in, c);
            }
    }
    for (size_t k = 0; k < r->nlost; k++) {
        struct lost *l = &r->lost[k];
        if (!l->best.off || *l->slot)
            continue;
        const struct cand *cd = &l->best;
        if (l->alt.off) {
            const struct cand *a = &l->alt, *b = &l->best;
            uint64_t o = SHM_WORD_OFF(l->word);
            int take_alt;
            if ((a->off == o) != (b->off == o))
                take_alt = a->off == o;
            else if (a->bits != b->bits)
                take_alt = a->bits > b->bits;
            else if (a->dead != b->dead)
                take_alt = b->dead;
            else {
                int pb = key_present(r, b), pa = key_present(r, a);
                take_alt = pa != pb ? pb : a->ver > b->ver;
            }
            if (take_alt)
                cd = a;
        }
        if (cd->dead)
            continue; /* removed after its older copies: stays removed */
        uint64_t w = shm_word(cd->off, cd->cls, cd->h);
        uint64_t hh;
        struct shm_item *it = claim_item(r, w, l->bucket, &hh); /* claims, checks once more */
        if (!it)
            continue;
        *l->slot = w;
        r->restored++;
        if (it->version > r->maxver)
            r->maxver = it->version;
        uint64_t want = bucket_for(r, cd->h);
        if (want != l->bucket && mis_add(r, l->slot, w, want))
            return KV_ENOMEM;
    }
    return 0;
}

static int chain_has(const struct kv_shm_store *s, uint64_t *line, uint64_t w)
{
    for (; line; line = next_line(s, line))
        for (int i = 0; i < SHM_SLOTS; i++)
            if (line[i] == w)
                return 1;
    return 0;
}

/* Step 6 for bucket b: one reference per item, one item per key; returns items kept. */
static uint64_t dedupe_bucket(struct rec *r, uint64_t b)
{
    struct kv_shm_store *s = r->s;
    uint64_t *slots[256];
    unsigned n = 0;
    uint64_t kept = 0;
    for (uint64_t *line = bucket_ptr(r, b); line; line = next_line(s, line)) {
        for (int i = 0; i < SHM_SLOTS; i++) {
            uint64_t w = line[i];
            if (!w)
                continue;
            int drop = 0;
            for (unsigned j = 0; j < n && !drop; j++) {
                uint64_t v = *slots[j];
                if (v == w) {
                    drop = 1; /* second reference to the same item */
                    continue;
                }
                if (SHM_WORD_TAG(v) != SHM_WORD_TAG(w))
                    continue;
                struct shm_item *a = shm_ptr(s, SHM_WORD_OFF(v));
                struct shm_item *c = shm_ptr(s, SHM_WORD_OFF(w));
                if (a->klen != c->klen || a->db != c->db || memcmp(a->data, c->data, a->klen))
                    continue;
                /* two items, one key: cannot come from a crash, only from damage */
                if (c->version > a->version) {
                    *slots[j] = w;
                    kv_shm_free(s, SHM_WORD_OFF(v));
                } else {
                    kv_shm_free(s, SHM_WORD_OFF(w));
                }
                r->dropped++;
                r->why_n[KV_SHM_DROP_DUPLICATE]++;
                drop = 1;
            }
            if (drop) {
                line[i] = 0;
                continue;
            }
            if (n < 256)
                slots[n++] = &line[i];
            kept++;
            struct shm_item *kit = shm_ptr(s, SHM_WORD_OFF(w));
            if (kit->db) /* claimed: db < SHM_MAX_DB */
                s->dbs->keys[kit->db]++;
        }
    }
    return kept;
}

int kv_shm_recover(struct kv_shm_store *s, char *errbuf, size_t errcap)
{
    struct shm_hdr *h = s->hdr;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct rec r;
    memset(&r, 0, sizeof(r));
    r.s = s;
    int rc = kv_shm_state_parse(h->state, &r.L, &r.p);
    if (rc)
        return rc; /* checked by the caller, which has said so */
    r.active = (1ull << r.L) + r.p;
    /* 0. multi-key writes a kill interrupted vanish whole (shm_batch.c) */
    r.batches = kv_shm_batch_undo(s);
    r.pm = kv_mem_calloc(KV_MOD_SHM, s->n_pages * sizeof(*r.pm));
    r.used = kv_mem_calloc(KV_MOD_SHM, s->n_pages * BM_WORDS * 8);
    r.lines = kv_mem_calloc(KV_MOD_SHM, s->n_pages * BM_WORDS * 8);
    if (!r.pm || !r.used || !r.lines) {
        rc = KV_ENOMEM;
        goto out;
    }

    /* 1. directory: an entry that fails its check is read from the second copy */
    for (uint64_t i = 0; i < s->n_dir; i++) {
        uint64_t pi, e = s->dir[i];
        if (kv_shm_dir_parse(s, e, &pi))
            e = s->dir2[i];
        if (!e || kv_shm_dir_parse(s, e, &pi) || r.pm[pi] != PM_MAKE(PM_FREE, 0)) {
            s->dir[i] = s->dir2[i] = 0;
            continue;
        }
        s->dir[i] = s->dir2[i] = e;
        r.pm[pi] = PM_MAKE(PM_INDEX, 0);
    }
    /* 2. overflow lines, 3. items; every bucket of every index page */
    uint64_t nb = s->n_dir * SHM_PAGE_BUCKETS;
    for (uint64_t b = 0; b < nb; b++) {
        uint64_t *line = bucket_ptr(&r, b);
        if (line)
            claim_lines(&r, line, b);
        else
            b |= SHM_PAGE_BUCKETS - 1; /* no page: skip its buckets */
    }
    for (uint64_t b = 0; b < nb; b++) {
        if (!bucket_ptr(&r, b)) {
            b |= SHM_PAGE_BUCKETS - 1;
            continue;
        }
        prefetch_bucket(&r, b + 8);
        if ((rc = claim_bucket(&r, b)))
            goto out;
    }
    if ((rc = restore_lost(&r)))
        goto out;
    kv_shm_crash_point(s, KV_SHM_CRASH_RECOVER);

    /* 4. allocator, and a page for every active bucket */
    kv_shm_alloc_rebuild(s, r.pm, r.used);
    h->lines = r.nlines;
    if (h->version_ctr < r.maxver)
        h->version_ctr = r.maxver;
    for (uint64_t c = 0; c * SHM_PAGE_BUCKETS < r.active; c++) {
        if (!kv_shm_index_line(s, c * SHM_PAGE_BUCKETS) && kv_shm_index_page_add(s, c)) {
            snprintf(errbuf, errbuf ? errcap : 0,
                     "segment %s: recovery cannot rebuild the "
                     "index (no free page); start with --reset-store",
                     s->name);
            rc = KV_ECORRUPT;
            goto out;
        }
    }

    /* 5. misplaced items */
    for (size_t i = 0; i < r.nmis; i++) {
        struct misplaced *m = &r.mis[i];
        if (*m->slot != m->word)
            continue;
        if (!chain_has(s, bucket_ptr(&r, m->bucket), m->word) &&
            kv_shm_index_insert(s, m->bucket, m->word)) {
            r.dropped++;
            r.why_n[KV_SHM_DROP_NOROOM]++; /* no room for a line: its chunk returns at the next recovery */
        }
        kv_shm_crash_point(s, KV_SHM_CRASH_RECOVER_MOVE); /* in both buckets */
        *m->slot = 0;
    }

    /* 6. duplicates and counts */
    for (unsigned i = 0; i < SHM_STRIPES; i++)
        s->stripes[i].keys = 0;
    memset(s->dbs->keys, 0, sizeof(s->dbs->keys));
    s->dbs->sel &= 1;
    for (uint64_t b = 0; b < r.active; b++) {
        uint64_t k = dedupe_bucket(&r, b);
        s->stripes[b & (SHM_STRIPES - 1)].keys += (int64_t)k;
        r.kept += k;
    }
    h->sweep_cursor = 0;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    s->recovered = 1;
    s->recovered_items = r.kept;
    s->dropped_items = r.dropped;
    memcpy(s->dropped_why, r.why_n, sizeof(s->dropped_why));
    s->batches_undone = r.batches;
    s->restored_items = r.restored;
    s->recovery_ns =
        (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ull + (uint64_t)(t1.tv_nsec - t0.tv_nsec);
    h->last_recovered = r.kept;
    h->last_dropped = r.dropped;
    h->last_recovery_ns = s->recovery_ns;
out:
    kv_mem_free(KV_MOD_SHM, r.pm);
    kv_mem_free(KV_MOD_SHM, r.used);
    kv_mem_free(KV_MOD_SHM, r.lines);
    kv_mem_free(KV_MOD_SHM, r.mis);
    kv_mem_free(KV_MOD_SHM, r.lost);
    return rc;
}
