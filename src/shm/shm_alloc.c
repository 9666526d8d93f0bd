/* src/shm/shm_alloc.c -- the allocator inside the segment: pages, size classes, chunks.
 *
 * The data area is cut into 64 KiB pages. A page belongs to nobody (free), to one size
 * class (a slab page cut into equal chunks, carved lazily), to the index (1024 buckets),
 * or to one large item (a run of whole pages). A freed chunk goes on its class's free
 * list, linked through the chunk itself; slab pages are not handed back at run time (as
 * in memcached without slab rebalancing), only by recovery when they hold nothing.
 *
 * Nothing here needs to be crash-consistent: recovery rebuilds every page map entry,
 * free list and counter from the items the index reaches (kv_shm_alloc_rebuild). A free
 * list is still checked as it is walked, so a damaged link costs chunks, not a crash.
 *
 * Locking: class[c].lock for a class, hdr->page_lock for the page map; class before page
 * (shm_int.h has the full rules). */
#include <string.h>

#include "shm_int.h"

unsigned kv_shm_class_for(const struct kv_shm_store *s, size_t total)
{
    if (total > SHM_MAX_CHUNK)
        return SHM_CLASS_LARGE;
    return s->class_of[(total + 7) / 8];
}

static void page_mark(struct kv_shm_store *s, uint64_t pi, uint64_t n, uint32_t e)
{
    __atomic_store_n(&s->pmap[pi], e, __ATOMIC_RELEASE);
    for (uint64_t k = 1; k < n; k++)
        __atomic_store_n(&s->pmap[pi + k],
                         PM_TYPE(e) == PM_LARGE ? PM_MAKE(PM_LCONT, 0) : e, __ATOMIC_RELEASE);
}

static int page_run_find(struct kv_shm_store *s, uint64_t from, uint64_t n, uint64_t *pi)
{
    uint64_t i = from;
    while (i + n <= s->n_pages) {
        uint64_t j = i;
        while (j < i + n && s->pmap[j] == PM_MAKE(PM_FREE, 0))
            j++;
        if (j == i + n) {
            *pi = i;
            return 0;
        }
        i = j + 1;
    }
    return KV_ENOMEM;
}

int kv_shm_page_alloc(struct kv_shm_store *s, uint64_t n, uint32_t e, uint64_t *pi)
{
    struct shm_hdr *h = s->hdr;
    uint64_t at;
    int rc = KV_ENOMEM;
    pthread_mutex_lock(&h->page_lock);
    if (h->pages_free >= n) {
        uint64_t hint = h->page_hint < s->n_pages ? h->page_hint : 0;
        rc = page_run_find(s, hint, n, &at);
        if (rc && hint)
            rc = page_run_find(s, 0, n, &at);
    }
    if (rc == 0) {
        page_mark(s, at, n, e);
        h->pages_free -= n;
        if (at == h->page_hint)
            h->page_hint = at + n;
        *pi = at;
    }
    pthread_mutex_unlock(&h->page_lock);
    return rc;
}

static void page_free(struct kv_shm_store *s, uint64_t pi, uint64_t n)
{
    struct shm_hdr *h = s->hdr;
    pthread_mutex_lock(&h->page_lock);
    page_mark(s, pi, n, PM_MAKE(PM_FREE, 0));
    h->pages_free += n;
    if (pi < h->page_hint)
        h->page_hint = pi;
    pthread_mutex_unlock(&h->page_lock);
}

/* A free-list link is trusted only if it is a chunk start in a page of class c. */
static int chunk_ok(const struct kv_shm_store *s, unsigned c, uint64_t off)
{
    if (off < s->data_off || off >= s->data_end)
        return 0;
    uint64_t pi = (off - s->data_off) >> SHM_PAGE_SHIFT;
    uint64_t in = (off - s->data_off) & (SHM_PAGE - 1);
    uint32_t e = __atomic_load_n(&s->pmap[pi], __ATOMIC_RELAXED);
    const struct shm_class *k = &s->cls[c];
    return e == PM_MAKE(PM_SLAB, c) && in % k->chunk_size == 0 &&
           in / k->chunk_size < k->per_page;
}

static int chunk_alloc(struct kv_shm_store *s, unsigned c, uint64_t *off)
{
    struct shm_class *k = &s->cls[c];
    int rc = 0;
    pthread_mutex_lock(&k->lock);
    while (k->free_head) {
        uint64_t o = k->free_head;
        if (!chunk_ok(s, c, o)) { /* damaged list: drop the rest until recovery */
            __atomic_add_fetch(&s->hdr->corrupt, 1, __ATOMIC_RELAXED);
            k->free_head = 0;
            break;
        }
        struct shm_free_chunk *f = shm_ptr(s, o);
        k->free_head = f->next;
        k->free_count--;
        k->used++;
        if (f->magic != SHM_FREE_MAGIC) /* a chunk in use on the free list: skip it */
            continue;
        *off = o;
        goto out;
    }
    if (k->carve_page && k->carve_next < k->per_page) {
        *off = shm_page_base(s, k->carve_page - 1) + k->carve_next * k->chunk_size;
        k->carve_next++;
        k->free_count--;
        k->used++;
        goto out;
    }
    uint64_t pi;
    rc = kv_shm_page_alloc(s, 1, PM_MAKE(PM_SLAB, c), &pi);
    if (rc == 0) {
        k->carve_page = pi + 1;
        k->carve_next = 1;
        k->pages++;
        k->free_count += k->per_page - 1;
        k->used++;
        *off = shm_page_base(s, pi);
    }
out:
    pthread_mutex_unlock(&k->lock);
    return rc;
}

int kv_shm_alloc(struct kv_shm_store *s, size_t total, uint64_t *off, unsigned *cls)
{
    unsigned c = kv_shm_class_for(s, total);
    uint64_t npages = (total + SHM_PAGE - 1) >> SHM_PAGE_SHIFT;
    if (c == SHM_CLASS_LARGE && npages > s->n_pages)
        return KV_ETOOBIG;
    for (int attempt = 0;; attempt++) {
        int rc;
        if (c == SHM_CLASS_LARGE) {
            uint64_t pi;
            rc = kv_shm_page_alloc(s, npages, PM_MAKE(PM_LARGE, npages), &pi);
            if (rc == 0)
                *off = shm_page_base(s, pi);
        } else {
            rc = chunk_alloc(s, c, off);
        }
        if (rc == 0) {
            *cls = c;
            return 0;
        }
        /* Full: reclaim expired items first; under LRU evict. Eviction may find its
         * candidate's stripe busy (KV_EAGAIN): then sample again, a bounded number of
         * times, so a writer never spins on a full store. */
        if (attempt >= 64)
            return KV_ENOMEM;
        rc = kv_shm_evict(s, c, !s->lru);
        if (rc == KV_ENOMEM)
            return KV_ENOMEM;
    }
}

void kv_shm_free(struct kv_shm_store *s, uint64_t off)
{
    uint64_t pi = (off - s->data_off) >> SHM_PAGE_SHIFT;
    uint32_t e = __atomic_load_n(&s->pmap[pi], __ATOMIC_RELAXED);
    if (PM_TYPE(e) == PM_LARGE) {
        page_free(s, pi, PM_ARG(e));
        return;
    }
    if (PM_TYPE(e) != PM_SLAB || PM_ARG(e) >= s->n_classes)
        return; /* not ours to free (damage): recovery will sort it out */
    struct shm_class *k = &s->cls[PM_ARG(e)];
    struct shm_free_chunk *f = shm_ptr(s, off);
    pthread_mutex_lock(&k->lock);
    f->magic = SHM_FREE_MAGIC;
    f->next = k->free_head;
    kv_shm_crash_point(s, KV_SHM_CRASH_FREE);
    k->free_head = off;
    k->free_count++;
    k->used--;
    pthread_mutex_unlock(&k->lock);
}

int kv_shm_line_alloc(struct kv_shm_store *s, uint64_t *off)
{
    unsigned c;
    int rc = kv_shm_alloc(s, SHM_LINE, off, &c);
    if (rc == 0)
        memset(shm_ptr(s, *off), 0, SHM_LINE);
    return rc;
}

void kv_shm_alloc_rebuild(struct kv_shm_store *s, const uint32_t *pm, const uint64_t *used)
{
    struct shm_hdr *h = s->hdr;
    for (unsigned c = 0; c < s->n_classes; c++) {
        struct shm_class *k = &s->cls[c];
        k->free_head = k->free_count = k->carve_page = k->carve_next = 0;
        k->pages = k->used = 0;
    }
    h->pages_free = h->index_pages = 0;
    h->page_hint = 0;
    for (uint64_t pi = 0; pi < s->n_pages; pi++) {
        uint32_t e = pm[pi];
        const uint64_t *bm = &used[pi * (SHM_PAGE / SHM_MIN_CHUNK / 64)];
        if (PM_TYPE(e) == PM_SLAB) {
            struct shm_class *k = &s->cls[PM_ARG(e)];
            uint64_t n = 0;
            /* claims are recorded per 64-byte granule of the chunk start */
            for (unsigned i = 0; i < k->per_page; i++) {
                unsigned g = i * k->chunk_size / SHM_MIN_CHUNK;
                n += (bm[g / 64] >> (g % 64)) & 1;
            }
            if (n == 0) {
                e = PM_MAKE(PM_FREE, 0);
            } else {
                k->pages++;
                k->used += n;
                for (unsigned i = k->per_page; i-- > 0;) {
                    unsigned g = i * k->chunk_size / SHM_MIN_CHUNK;
                    if ((bm[g / 64] >> (g % 64)) & 1)
                        continue;
                    uint64_t o = shm_page_base(s, pi) + (uint64_t)i * k->chunk_size;
                    struct shm_free_chunk *f = shm_ptr(s, o);
                    f->magic = SHM_FREE_MAGIC;
                    f->next = k->free_head;
                    k->free_head = o;
                    k->free_count++;
                }
            }
        }
        if (PM_TYPE(e) == PM_FREE)
            h->pages_free++;
        if (PM_TYPE(e) == PM_INDEX)
            h->index_pages++;
        __atomic_store_n(&s->pmap[pi], e, __ATOMIC_RELAXED);
    }
}
