/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_alloc.c -- the allocator inside the segment: pages, size classes, chunks.
 *
 * The data area is cut into 64 KiB pages. A free page sits on one free stack. A page in
 * use belongs to one size class (a slab page cut into equal chunks, carved lazily), to the
 * index (1024 buckets), or to one large item (any pages, not contiguous: shm_int.h). Each
 * slab page keeps its own free chunks (linked by index within the page) and a count, and
 * the class lists its pages that have room. A page whose last chunk is freed goes back to
 * the free stack at once, so memory moves to whichever class needs it next: an emptied
 * store takes values of any size, and a class that stopped being used gives its pages
 * back as its items go (compaction, shm_evict.c, empties pages deliberately).
 *
 * The allocator only allocates: it never evicts and never touches the index. When full it
 * says KV_ENOMEM, and making room is its caller's policy (shm_evict.c), as memcached's
 * do_item_alloc_pull sits above its slab allocator.
 *
 * Nothing here needs to be crash-consistent: recovery rebuilds every page entry, free list
 * and counter from the items the index reaches (kv_shm_alloc_rebuild). Free lists are
 * still checked as they are walked, so a damaged link costs chunks, never a crash or an
 * overlap.
 *
 * Locking: class[c].lock for a class and its pages, hdr->page_lock for the free stack;
 * class before page (shm_int.h has the full rules). */
#include <string.h>

#include "kv_mem.h"
#include "shm_int.h"

#define PM_FREE_E PM_MAKE(PM_FREE, 0)

unsigned kv_shm_class_for(const struct kv_shm_store *s, size_t total)
{
    if (total > SHM_MAX_CHUNK)
        return SHM_CLASS_LARGE;
    return s->class_of[(total + 7) / 8];
}

uint64_t kv_shm_large_pages(size_t total)
{
    /* n pages hold n * SHM_PAGE bytes, less the list of the other n - 1 */
    uint64_t n = total <= SHM_PAGE ? 1 : (total - 4 + SHM_PAGE - 4 - 1) / (SHM_PAGE - 4);
    return n <= SHM_LARGE_MAX_PAGES ? n : 0;
}

uint32_t *kv_shm_large_list(const struct kv_shm_store *s, uint64_t off, uint64_t n)
{
    return (uint32_t *)(s->base + off + SHM_PAGE - 4 * (n - 1));
}

/* ---- the free stack ---------------------------------------------------------------- */

static void pmap_set(struct kv_shm_store *s, uint64_t pi, uint32_t e)
{
    __atomic_store_n(&s->pmap[pi], e, __ATOMIC_RELEASE);
}

/* Pops up to n free pages into out[] and marks them; all or nothing. page_lock held. */
static int stack_pop(struct kv_shm_store *s, uint64_t n, uint64_t *out)
{
    struct shm_hdr *h = s->hdr;
    if (h->pages_free < n)
        return KV_ENOMEM;
    uint64_t got = 0;
    while (got < n) {
        uint64_t top = h->free_top;
        if (top == 0 || top > s->n_pages || s->pmap[top - 1] != PM_FREE_E) {
            /* a damaged stack: forget the rest until recovery rebuilds it */
            h->free_top = 0;
            h->pages_free = 0;
            __atomic_add_fetch(&h->corrupt, 1, __ATOMIC_RELAXED);
            break;
        }
        out[got++] = top - 1;
        h->free_top = s->pg[top - 1].next;
        h->pages_free--;
    }
    if (got < n) { /* put back what was taken */
        while (got) {
            uint64_t pi = out[--got];
            s->pg[pi].next = (uint32_t)h->free_top;
            h->free_top = pi + 1;
            h->pages_free++;
        }
        return KV_ENOMEM;
    }
    return 0;
}

void kv_shm_set_maxmemory(struct kv_shm_store *s, uint64_t bytes)
{
    uint64_t pages = bytes >> SHM_PAGE_SHIFT;

    __atomic_store_n(&s->page_limit, bytes && !pages ? 1 : pages, __ATOMIC_RELAXED);
}

/* 1 when n more data pages would pass --maxmemory. page_lock held. */
static int over_limit(const struct kv_shm_store *s, uint64_t n)
{
    uint64_t lim = __atomic_load_n(&s->page_limit, __ATOMIC_RELAXED);

    return lim && s->n_pages - s->hdr->pages_free + n > lim;
}

static void stack_push(struct kv_shm_store *s, uint64_t pi)
{
    struct shm_hdr *h = s->hdr;
    /* the type first: a drain that looks at the page (class lock only) must see that it
     * is no slab page any more before it sees its flags and count cleared */
    pmap_set(s, pi, PM_FREE_E);
    memset(&s->pg[pi], 0, sizeof(s->pg[pi]));
    s->pg[pi].next = (uint32_t)h->free_top;
    h->free_top = pi + 1;
    h->pages_free++;
}

int kv_shm_page_alloc(struct kv_shm_store *s, uint32_t e, uint64_t *pi)
{
    pthread_mutex_lock(&s->hdr->page_lock);
    int rc = stack_pop(s, 1, pi);
    if (rc == 0) {
        memset(&s->pg[*pi], 0, sizeof(s->pg[*pi]));
        pmap_set(s, *pi, e);
    }
    pthread_mutex_unlock(&s->hdr->page_lock);
    return rc;
}

static void page_release(struct kv_shm_store *s, uint64_t pi)
{
    pthread_mutex_lock(&s->hdr->page_lock);
    stack_push(s, pi);
    pthread_mutex_unlock(&s->hdr->page_lock);
}

void kv_shm_page_unused(struct kv_shm_store *s, uint64_t pi)
{
    page_release(s, pi);
}

/* ---- slab pages and their class lists (class lock held) --------------------------- */

static void list_add(struct kv_shm_store *s, struct shm_class *k, uint64_t pi)
{
    struct shm_page *p = &s->pg[pi];
    p->prev = 0;
    p->next = (uint32_t)k->partial;
    if (k->partial && k->partial <= s->n_pages)
        s->pg[k->partial - 1].prev = (uint32_t)(pi + 1);
    k->partial = pi + 1;
    p->flags |= PG_LISTED;
}

static void list_del(struct kv_shm_store *s, struct shm_class *k, uint64_t pi)
{
    struct shm_page *p = &s->pg[pi];
    if (!(p->flags & PG_LISTED))
        return;
    if (p->prev && p->prev <= s->n_pages)
        s->pg[p->prev - 1].next = p->next;
    else
        k->partial = p->next;
    if (p->next && p->next <= s->n_pages)
        s->pg[p->next - 1].prev = p->prev;
    p->next = p->prev = 0;
    p->flags &= (uint16_t)~PG_LISTED;
}

static int page_has_room(const struct kv_shm_store *s, unsigned c, const struct shm_page *p)
{
    return p->free_head || p->carved < s->cper[c];
}

/* Takes one chunk of page pi (listed in class c, which has room). */
static int chunk_take(struct kv_shm_store *s, unsigned c, uint64_t pi, uint64_t *off)
{
    struct shm_page *p = &s->pg[pi];
    uint64_t base = shm_page_base(s, pi);
    if (p->free_head) {
        unsigned i = p->free_head - 1u;
        struct shm_free_chunk *f = shm_ptr(s, base + (uint64_t)i * s->csize[c]);
        if (i >= p->carved || f->magic != SHM_FREE_MAGIC || f->next > p->carved) {
            /* damaged free list: the page keeps only its uncarved chunks until recovery */
            __atomic_add_fetch(&s->hdr->corrupt, 1, __ATOMIC_RELAXED);
            p->free_head = 0;
            return KV_EAGAIN;
        }
        p->free_head = (uint16_t)f->next;
        f->magic = 0;
        *off = base + (uint64_t)i * s->csize[c];
    } else if (p->carved < s->cper[c]) {
        *off = base + (uint64_t)p->carved * s->csize[c];
        p->carved++;
        ((struct shm_free_chunk *)shm_ptr(s, *off))->magic = 0; /* stale bytes of a past use */
    } else {
        return KV_EAGAIN;
    }
    p->used++;
    return 0;
}

static int chunk_alloc(struct kv_shm_store *s, unsigned c, int new_page, uint64_t *off)
{
    struct shm_class *k = &s->cls[c];
    int rc = KV_ENOMEM;
    pthread_mutex_lock(&k->lock);
    for (int guard = 0; k->partial && guard < 64; guard++) {
        uint64_t pi = k->partial - 1;
        if (pi >= s->n_pages || s->pmap[pi] != PM_MAKE(PM_SLAB, c)) {
            k->partial = 0; /* damaged list: recovery rebuilds it */
            __atomic_add_fetch(&s->hdr->corrupt, 1, __ATOMIC_RELAXED);
            break;
        }
        rc = chunk_take(s, c, pi, off);
        if (!page_has_room(s, c, &s->pg[pi]))
            list_del(s, k, pi);
        if (rc == 0) {
            k->used++;
            goto out;
        }
    }
    uint64_t pi;
    rc = KV_ENOMEM;
    if (!new_page)
        goto out;
    pthread_mutex_lock(&s->hdr->page_lock);
    rc = over_limit(s, 1) ? KV_ENOMEM : stack_pop(s, 1, &pi);
    if (rc == 0) {
        memset(&s->pg[pi], 0, sizeof(s->pg[pi]));
        pmap_set(s, pi, PM_MAKE(PM_SLAB, c));
    }
    pthread_mutex_unlock(&s->hdr->page_lock);
    if (rc == 0) {
        k->pages++;
        list_add(s, k, pi);
        chunk_take(s, c, pi, off);
        k->used++;
    }
out:
    pthread_mutex_unlock(&k->lock);
    return rc;
}

static int large_alloc(struct kv_shm_store *s, uint64_t n, uint64_t *off)
{
    uint64_t local[64], *pis = local;
    if (n > 64 && !(pis = kv_mem_alloc(KV_MOD_SHM, n * sizeof(*pis))))
        return KV_ENOMEM;
    pthread_mutex_lock(&s->hdr->page_lock);
    int rc = over_limit(s, n) ? KV_ENOMEM : stack_pop(s, n, pis);
    if (rc == 0) {
        for (uint64_t k = 0; k < n; k++) {
            memset(&s->pg[pis[k]], 0, sizeof(s->pg[pis[k]]));
            pmap_set(s, pis[k], k ? PM_MAKE(PM_LCONT, pis[0]) : PM_MAKE(PM_LARGE, n));
        }
    }
    pthread_mutex_unlock(&s->hdr->page_lock);
    if (rc == 0) {
        *off = shm_page_base(s, pis[0]);
        uint32_t *list = kv_shm_large_list(s, *off, n);
        for (uint64_t k = 1; k < n; k++)
            list[k - 1] = (uint32_t)pis[k];
    }
    if (pis != local)
        kv_mem_free(KV_MOD_SHM, pis);
    return rc;
}

int kv_shm_alloc(struct kv_shm_store *s, size_t total, uint64_t *off, unsigned *cls)
{
    unsigned c = kv_shm_class_for(s, total);
    if (c == SHM_CLASS_LARGE) {
        uint64_t n = kv_shm_large_pages(total);
        if (n == 0 || n > s->n_pages)
            return KV_ETOOBIG;
        int rc = large_alloc(s, n, off);
        if (rc == 0)
            *cls = c;
        return rc;
    }
    int rc = chunk_alloc(s, c, 1, off);
    if (rc == 0)
        *cls = c;
    return rc;
}

int kv_shm_chunk_alloc_listed(struct kv_shm_store *s, unsigned c, uint64_t *off)
{
    return chunk_alloc(s, c, 0, off);
}

static void large_free(struct kv_shm_store *s, uint64_t pi, uint64_t n)
{
    const uint32_t *list = kv_shm_large_list(s, shm_page_base(s, pi), n);
    pthread_mutex_lock(&s->hdr->page_lock);
    for (uint64_t k = 1; k < n; k++) {
        uint64_t q = list[k - 1];
        /* only pages that really are this item's: a damaged list frees nothing else */
        if (q < s->n_pages && s->pmap[q] == PM_MAKE(PM_LCONT, pi))
            stack_push(s, q);
    }
    stack_push(s, pi);
    pthread_mutex_unlock(&s->hdr->page_lock);
}

void kv_shm_free_now(struct kv_shm_store *s, uint64_t off)
{
    if (off < s->data_off || off >= s->data_end)
        return;
    uint64_t pi = (off - s->data_off) >> SHM_PAGE_SHIFT;
    uint32_t e = __atomic_load_n(&s->pmap[pi], __ATOMIC_RELAXED);
    if (PM_TYPE(e) == PM_LARGE) {
        if (PM_ARG(e) >= 1 && PM_ARG(e) <= SHM_LARGE_MAX_PAGES)
            large_free(s, pi, PM_ARG(e));
        return;
    }
    unsigned c = PM_ARG(e);
    if (PM_TYPE(e) != PM_SLAB || c > s->line_cls)
        return; /* not ours to free (damage): recovery will sort it out */
    struct shm_class *k = &s->cls[c];
    struct shm_page *p = &s->pg[pi];
    uint64_t in = (off - s->data_off) & (SHM_PAGE - 1);
    unsigned i = (unsigned)(in / s->csize[c]);
    struct shm_free_chunk *f = shm_ptr(s, off);
    int empty = 0;
    pthread_mutex_lock(&k->lock);
    if (in % s->csize[c] == 0 && i < p->carved && p->used > 0 && f->magic != SHM_FREE_MAGIC) {
        f->magic = SHM_FREE_MAGIC;
        f->next = p->free_head;
        kv_shm_crash_point(s, KV_SHM_CRASH_FREE);
        p->free_head = (uint16_t)(i + 1);
        p->used--;
        k->used--;
        if (p->used == 0 && !(p->flags & PG_DRAINING)) {
            list_del(s, k, pi);
            k->pages--;
            /* marked until the free stack takes it, so no drain starts on it meanwhile
             * (a drain of an empty page would release it a second time) */
            p->flags |= PG_DRAINING;
            empty = 1;
        } else if (!(p->flags & (PG_LISTED | PG_DRAINING))) {
            list_add(s, k, pi);
        }
    }
    pthread_mutex_unlock(&k->lock);
    if (empty)
        page_release(s, pi); /* no chunk of it is reachable: any class may have it */
}

int kv_shm_line_alloc(struct kv_shm_store *s, uint64_t *off)
{
    int rc = chunk_alloc(s, s->line_cls, 1, off);
    if (rc == 0)
        memset(shm_ptr(s, *off), 0, SHM_LINE);
    return rc;
}

/* ---- draining (compaction and page eviction, shm_evict.c) ------------------------- */

int kv_shm_page_drain_begin(struct kv_shm_store *s, uint64_t pi, unsigned *cls, unsigned *carved)
{
    if (pi >= s->n_pages)
        return KV_EAGAIN;
    uint32_t e = __atomic_load_n(&s->pmap[pi], __ATOMIC_RELAXED);
    unsigned c = PM_ARG(e);
    if (PM_TYPE(e) != PM_SLAB || c >= s->n_classes)
        return KV_EAGAIN; /* index lines are never moved */
    struct shm_class *k = &s->cls[c];
    int rc = KV_EAGAIN;
    pthread_mutex_lock(&k->lock);
    struct shm_page *p = &s->pg[pi];
    /* an empty page is on its way to the free stack (or is not this class's any more) */
    if (s->pmap[pi] == e && !(p->flags & PG_DRAINING) && p->used > 0) {
        list_del(s, k, pi);
        p->flags |= PG_DRAINING;
        *cls = c;
        *carved = p->carved;
        rc = 0;
    }
    pthread_mutex_unlock(&k->lock);
    return rc;
}

int kv_shm_page_drain_end(struct kv_shm_store *s, uint64_t pi)
{
    unsigned c = PM_ARG(s->pmap[pi]);
    struct shm_class *k = &s->cls[c];
    int empty = 0;
    pthread_mutex_lock(&k->lock);
    struct shm_page *p = &s->pg[pi];
    if (p->used == 0) {
        k->pages--; /* stays marked until the free stack takes it (see kv_shm_free) */
        empty = 1;
    } else {
        p->flags &= (uint16_t)~PG_DRAINING;
        if (page_has_room(s, c, p))
            list_add(s, k, pi);
    }
    pthread_mutex_unlock(&k->lock);
    if (empty)
        page_release(s, pi);
    return empty;
}

void kv_shm_class_room(struct kv_shm_store *s, unsigned c, uint64_t *free_chunks,
                       uint64_t *emptiest)
{
    struct shm_class *k = &s->cls[c];
    uint64_t best = 0, best_used = UINT64_MAX;
    pthread_mutex_lock(&k->lock);
    *free_chunks = k->pages * s->cper[c] - k->used;
    uint64_t at = k->partial;
    for (int n = 0; at && at <= s->n_pages && n < 64; n++, at = s->pg[at - 1].next) {
        if (s->pg[at - 1].used < best_used) {
            best_used = s->pg[at - 1].used;
            best = at;
        }
    }
    pthread_mutex_unlock(&k->lock);
    *emptiest = best; /* page index + 1, 0 = none */
}

/* ---- recovery ----------------------------------------------------------------------- */

void kv_shm_alloc_rebuild(struct kv_shm_store *s, const uint32_t *pm, const uint64_t *used)
{
    struct shm_hdr *h = s->hdr;
    for (unsigned c = 0; c <= s->line_cls; c++) {
        struct shm_class *k = &s->cls[c];
        k->partial = k->pages = k->used = 0;
    }
    h->pages_free = h->index_pages = 0;
    h->free_top = 0;
    for (uint64_t pi = s->n_pages; pi-- > 0;) { /* downwards: low pages end up on top */
        uint32_t e = pm[pi];
        const uint64_t *bm = &used[pi * (SHM_PAGE / SHM_MIN_CHUNK / 64)];
        struct shm_page *p = &s->pg[pi];
        memset(p, 0, sizeof(*p));
        if (PM_TYPE(e) == PM_SLAB) {
            unsigned c = PM_ARG(e);
            struct shm_class *k = &s->cls[c];
            unsigned n = 0, per = s->cper[c];
            /* claims are recorded per 64-byte granule of the chunk start */
            for (unsigned i = per; i-- > 0;) {
                unsigned g = i * s->csize[c] / SHM_MIN_CHUNK;
                if ((bm[g / 64] >> (g % 64)) & 1) {
                    n++;
                    continue;
                }
                struct shm_free_chunk *f =
                    shm_ptr(s, shm_page_base(s, pi) + (uint64_t)i * s->csize[c]);
                f->magic = SHM_FREE_MAGIC;
                f->next = p->free_head;
                p->free_head = (uint16_t)(i + 1);
            }
            if (n == 0) {
                e = PM_FREE_E;
                memset(p, 0, sizeof(*p));
            } else {
                p->used = (uint16_t)n;
                p->carved = (uint16_t)per;
                k->pages++;
                k->used += n;
                if (n < per)
                    list_add(s, k, pi);
            }
        }
        __atomic_store_n(&s->pmap[pi], e, __ATOMIC_RELAXED);
        if (PM_TYPE(e) == PM_FREE) {
            p->next = (uint32_t)h->free_top;
            h->free_top = pi + 1;
            h->pages_free++;
        }
        if (PM_TYPE(e) == PM_INDEX)
            h->index_pages++;
    }
}
