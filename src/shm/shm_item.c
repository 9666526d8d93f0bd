/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_item.c -- an item's bytes as one stream, wherever its pages are.
 *
 * A small item is one chunk: its stream is contiguous. A large item's stream runs through
 * its first page (up to the page list at that page's end), then each listed page in turn
 * (shm_int.h). Everything that reads or writes an item's value or checksum goes through
 * here, so nothing else needs to know how a large item is laid out. The caller has
 * validated the item (kv_shm_item_check) or is building it; list entries are bounds-checked
 * anyway, so a damaged list reads zeros instead of another item's bytes, and its checksum
 * then fails. */
#include <string.h>

#include "shm_int.h"

/* The piece of the stream that holds position pos: its address and how many bytes of the
 * stream are contiguous from there (0 when the list entry is out of range). */
static uint8_t *piece(const struct kv_shm_store *s, uint64_t off, uint64_t n, size_t pos,
                      size_t *avail)
{
    if (n <= 1) { /* a chunk, or a large item on one page */
        *avail = SIZE_MAX;
        return s->base + off + pos;
    }
    size_t head = SHM_PAGE - 4 * (size_t)(n - 1);
    if (pos < head) {
        *avail = head - pos;
        return s->base + off + pos;
    }
    size_t k = (pos - head) / SHM_PAGE, in = (pos - head) % SHM_PAGE;
    if (k + 1 >= n) {
        *avail = 0;
        return NULL;
    }
    uint32_t q = kv_shm_large_list(s, off, n)[k];
    if (q >= s->n_pages) {
        *avail = 0;
        return NULL;
    }
    *avail = SHM_PAGE - in;
    return s->base + shm_page_base(s, q) + in;
}

static uint64_t item_off(const struct kv_shm_store *s, const struct shm_item *it)
{
    return (uint64_t)((const uint8_t *)it - s->base);
}

/* Pages of the item (1 for a chunk): from its checksummed size, never from the page map. */
static uint64_t item_pages(const struct shm_item *it)
{
    return it->cls == SHM_CLASS_LARGE ? kv_shm_large_pages(shm_item_size(it)) : 1;
}

void kv_shm_item_read(const struct kv_shm_store *s, const struct shm_item *it, size_t pos,
                      void *dst, size_t n)
{
    uint8_t *d = dst;
    while (n) {
        size_t avail;
        const uint8_t *p = piece(s, item_off(s, it), item_pages(it), pos, &avail);
        size_t take = avail < n ? avail : n;
        if (!take) { /* damaged list: zeros (the checksum of such an item fails) */
            memset(d, 0, n);
            return;
        }
        memcpy(d, p, take);
        d += take;
        pos += take;
        n -= take;
    }
}

void kv_shm_item_write(struct kv_shm_store *s, uint64_t off, uint64_t pages, size_t pos,
                       const void *src, size_t n)
{
    const uint8_t *q = src;
    while (n) {
        size_t avail;
        uint8_t *p = piece(s, off, pages, pos, &avail);
        size_t take = avail < n ? avail : n;
        if (!take)
            return; /* cannot happen for pages this store just allocated */
        memcpy(p, q, take);
        q += take;
        pos += take;
        n -= take;
    }
}

uint32_t kv_shm_item_crc(const struct kv_shm_store *s, const struct shm_item *it)
{
    size_t size = shm_item_size(it), pos = 8;
    uint64_t n = item_pages(it);
    uint32_t crc = 0;
    if (n <= 1 && it->cls != SHM_CLASS_LARGE)
        return kv_shm_crc32c(0, (const uint8_t *)it + 8, size - 8);
    if (n == 0)
        return ~it->crc; /* a size no large item can have */
    while (pos < size) {
        size_t avail;
        const uint8_t *p = piece(s, item_off(s, it), n, pos, &avail);
        if (!avail)
            return ~it->crc; /* a list entry out of range: never matches */
        size_t take = avail < size - pos ? avail : size - pos;
        crc = kv_shm_crc32c(crc, p, take);
        pos += take;
    }
    return kv_shm_crc32c(crc, kv_shm_large_list(s, item_off(s, it), n), 4 * (n - 1));
}
