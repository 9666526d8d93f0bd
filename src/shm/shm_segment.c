/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_segment.c -- opening, creating, checking, locking and closing a segment.
 *
 * A segment is a POSIX shm object (/dev/shm) or a regular file, 0600, reserved in full
 * with posix_fallocate at creation so that a full tmpfs fails here rather than with a
 * SIGBUS on some later write. The owner holds flock(LOCK_EX) on its fd for as long as it
 * has the segment open; a second opener gets KV_ELOCKED and a text naming the owner's pid.
 *
 * A segment we cannot read (wrong magic, version, fingerprint, size, damaged header) is
 * never used and never wiped: the caller gets KV_ECORRUPT or KV_EINVAL and a text saying
 * what is wrong and what to do. Only with cfg->reset_store is it renamed to
 * <name>.bad-<unix time> and replaced by an empty one.
 *
 * The header's static fields are checksummed; the dynamic ones (state, counters) are
 * either self-checking (the index state word) or rebuilt by recovery. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kv_mem.h"
#include "shm_int.h"
#include "shm_v1.h"

static void say(char *buf, size_t cap, const char *fmt, ...)
{
    if (!buf || !cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

static void seg_name(const struct kv_config *cfg, char *out, size_t cap, int *is_file)
{
    *is_file = cfg->data_file[0] != 0;
    if (*is_file)
        snprintf(out, cap, "%s", cfg->data_file);
    else if (cfg->shm_name[0])
        snprintf(out, cap, "%s%s", cfg->shm_name[0] == '/' ? "" : "/", cfg->shm_name);
    else
        snprintf(out, cap, "/libevkv-%u", (unsigned)cfg->port);
}

struct layout {
    uint64_t stripes_off, classes_off, pmap_off, pages_off, dir_off, dir2_off, hdr2_off;
    uint64_t data_off, n_pages, n_dir;
};

/* The layout is a pure function of the size, so a header can be checked against it. */
static int layout_compute(uint64_t size, struct layout *l)
{
    uint64_t est = size >> SHM_PAGE_SHIFT, off = SHM_HDR_SIZE;
    l->stripes_off = off;
    off += SHM_STRIPES * sizeof(struct shm_stripe);
    l->classes_off = off;
    off += SHM_MAX_CLASSES * sizeof(struct shm_class);
    l->pmap_off = off;
    off += (est * 4 + 63) & ~63ull;
    l->pages_off = off;
    off += (est * sizeof(struct shm_page) + 63) & ~63ull;
    l->dir_off = off;
    l->n_dir = est;
    off += est * 8;
    l->dir2_off = off;
    off += est * 8;
    l->hdr2_off = (off + 4095) & ~4095ull; /* a page of its own, away from the header */
    off = l->hdr2_off + SHM_HDR_SIZE;
    l->data_off = (off + SHM_PAGE - 1) & ~(uint64_t)(SHM_PAGE - 1);
    if (l->data_off >= size)
        return KV_EINVAL;
    l->n_pages = (size - l->data_off) >> SHM_PAGE_SHIFT;
    return l->n_pages >= 8 ? 0 : KV_EINVAL;
}

static void store_wire(struct kv_shm_store *s, const struct layout *l)
{
    s->hdr = (struct shm_hdr *)s->base;
    s->dbs = (struct shm_dbs *)(s->base + SHM_DBS_OFF);
    s->stripes = (struct shm_stripe *)(s->base + l->stripes_off);
    s->cls = (struct shm_class *)(s->base + l->classes_off);
    s->pmap = (uint32_t *)(s->base + l->pmap_off);
    s->pg = (struct shm_page *)(s->base + l->pages_off);
    s->dir = (uint64_t *)(s->base + l->dir_off);
    s->dir2 = (uint64_t *)(s->base + l->dir2_off);
    s->hdr2 = (struct shm_hdr *)(s->base + l->hdr2_off);
    s->data_off = l->data_off;
    s->n_pages = l->n_pages;
    s->n_dir = l->n_dir;
    s->data_end = l->data_off + (l->n_pages << SHM_PAGE_SHIFT);
    uint32_t sizes[SHM_MAX_CLASSES];
    s->n_classes = kv_shm_class_sizes(sizes, SHM_MAX_CLASSES - 1);
    s->line_cls = s->n_classes;
    sizes[s->line_cls] = SHM_LINE; /* index lines: a class of their own, never moved */
    for (unsigned k = 0; k <= s->line_cls; k++) {
        s->csize[k] = sizes[k];
        s->cper[k] = SHM_PAGE / sizes[k];
        s->crecip[k] = ((1ull << 32) + sizes[k] - 1) / sizes[k];
    }
    unsigned c = 0;
    for (unsigned i = 0; i <= SHM_MAX_CHUNK / 8; i++) {
        while (sizes[c] < i * 8)
            c++;
        s->class_of[i] = (uint8_t)c;
    }
}

static uint32_t hdr_crc(const struct shm_hdr *h)
{
    struct shm_hdr tmp;
    memcpy(&tmp, h, offsetof(struct shm_hdr, static_end));
    tmp.hdr_crc = 0;
    return kv_shm_crc32c(0, &tmp, offsetof(struct shm_hdr, static_end));
}

/* Every lock in the segment, fresh: the previous owner may have died holding any. */
static void locks_init(struct kv_shm_store *s)
{
    pthread_rwlockattr_t ra;
    pthread_mutexattr_t ma;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setpshared(&ra, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    for (unsigned i = 0; i < SHM_STRIPES; i++) {
        memset(&s->stripes[i].lock, 0, sizeof(s->stripes[i].lock));
        pthread_rwlock_init(&s->stripes[i].lock, &ra);
    }
    for (unsigned c = 0; c < SHM_MAX_CLASSES; c++) {
        memset(&s->cls[c].lock, 0, sizeof(s->cls[c].lock));
        pthread_mutex_init(&s->cls[c].lock, &ma);
    }
    memset(&s->hdr->page_lock, 0, sizeof(s->hdr->page_lock));
    memset(&s->hdr->split_lock, 0, sizeof(s->hdr->split_lock));
    pthread_mutex_init(&s->hdr->page_lock, &ma);
    pthread_mutex_init(&s->hdr->split_lock, &ma);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutexattr_destroy(&ma);
}

/* The header's copy: its static fields and the state word (the only dynamic field
 * recovery cannot rebuild: it says how the buckets are split). */
static void hdr2_write(struct kv_shm_store *s)
{
    memcpy(s->hdr2, s->hdr, offsetof(struct shm_hdr, static_end));
    __atomic_store_n(&s->hdr2->state, __atomic_load_n(&s->hdr->state, __ATOMIC_ACQUIRE),
                     __ATOMIC_RELEASE);
}

/* Checksum of everything the allocator and index follow that is not an item: written at a
 * clean close, checked at the next open, so that damage to a stopped segment is repaired
 * (by recovery) instead of trusted. About 30 bytes per 64 KiB page. */
static uint32_t meta_crc(const struct kv_shm_store *s)
{
    const struct shm_hdr *h = s->hdr;
    uint64_t v[] = {h->state,       h->version_ctr, h->pages_free, h->free_top,
                    h->index_pages, h->lines,       h->sweep_cursor};
    uint32_t c = kv_shm_crc32c(0, v, sizeof(v));
    c = kv_shm_crc32c(c, h->batch, sizeof(h->batch));
    if (h->layout_version >= 3)
        c = kv_shm_crc32c(c, s->dbs, sizeof(*s->dbs));
    for (unsigned k = 0; k <= s->line_cls; k++) {
        uint64_t w[] = {s->cls[k].partial, s->cls[k].pages, s->cls[k].used};
        c = kv_shm_crc32c(c, w, sizeof(w));
    }
    for (unsigned i = 0; i < SHM_STRIPES; i++)
        c = kv_shm_crc32c(c, &s->stripes[i].keys, sizeof(s->stripes[i].keys));
    c = kv_shm_crc32c(c, s->pmap, s->n_pages * sizeof(*s->pmap));
    c = kv_shm_crc32c(c, s->pg, s->n_pages * sizeof(*s->pg));
    c = kv_shm_crc32c(c, s->dir, s->n_dir * sizeof(*s->dir));
    return kv_shm_crc32c(c, s->dir2, s->n_dir * sizeof(*s->dir2));
}

/* Lays out an empty store. The magic is written last: a segment killed during this has
 * no magic, and an all-zero header page is taken for an unfinished creation. */
static int seg_init_fresh(struct kv_shm_store *s, const struct layout *l)
{
    struct shm_hdr *h = s->hdr;
    memset(s->base, 0, l->data_off);
    h->layout_version = SHM_LAYOUT_VERSION;
    h->fingerprint = kv_shm_fingerprint();
    h->size = s->size;
    h->created_ms = (uint64_t)kv_shm_now_ms();
    h->stripes_off = l->stripes_off;
    h->classes_off = l->classes_off;
    h->pmap_off = l->pmap_off;
    h->pages_off = l->pages_off;
    h->dir_off = l->dir_off;
    h->dir2_off = l->dir2_off;
    h->hdr2_off = l->hdr2_off;
    h->data_off = l->data_off;
    h->n_pages = l->n_pages;
    h->n_dir = l->n_dir;
    h->n_classes = s->n_classes;
    h->n_stripes = SHM_STRIPES;
    kv_shm_random_key(h->hash_key);
    if (s->fixed_key)
        h->hash_key[0] = h->hash_key[1] = 0;
    locks_init(s);
    h->pages_free = 0;
    h->free_top = 0;
    for (uint64_t pi = s->n_pages; pi-- > 0;) { /* low pages on top */
        s->pg[pi].next = (uint32_t)h->free_top;
        h->free_top = pi + 1;
        h->pages_free++;
    }
    h->state = kv_shm_state_make(SHM_INIT_LEVEL, 0);
    for (uint64_t c = 0; c < (1u << SHM_INIT_LEVEL) / SHM_PAGE_BUCKETS; c++)
        if (kv_shm_index_page_add(s, c))
            return KV_ENOMEM;
    memcpy(s->hkey, h->hash_key, sizeof(s->hkey));
    h->clean = 0;
    h->magic = SHM_MAGIC;
    h->hdr_crc = hdr_crc(h);
    hdr2_write(s); /* after the magic: a kill before it leaves no valid header anywhere */
    return 0;
}

static int page_all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* What recovery did, in one line for the caller to log (after note, if any). */
static void recovery_say(const struct kv_shm_store *s, const char *note, char *eb, size_t ec)
{
    static const char *const why[KV_SHM_DROP_REASONS] = {
        "out of bounds", "no item header", "overlapping", "checksum", "older duplicate",
        "no room to move", "cut off by a damaged link"};
    char d[300] = "";
    size_t at = 0;
    for (int i = 0; i < KV_SHM_DROP_REASONS; i++)
        if (s->dropped_why[i] && at < sizeof(d))
            at += (size_t)snprintf(d + at, sizeof(d) - at, "%s%" PRIu64 " %s", at ? ", " : "",
                                   s->dropped_why[i], why[i]);
    say(eb, ec, "%ssegment %s recovered: %" PRIu64 " items kept, %" PRIu64 " dropped%s%s%s, "
        "%" PRIu64 " interrupted multi-key writes undone, in %.1f ms", note, s->name,
        s->recovered_items, s->dropped_items, at ? " (" : "", d, at ? ")" : "",
        s->batches_undone, (double)s->recovery_ns / 1e6);
}

/* A layout-2 segment becomes layout 3 in place: its items are all in database 0 (their
 * `db` field was padding, always 0) and its shm_dbs area was zeroed at open (identity map,
 * no other database). The version and the header checksum share one aligned 8-byte word,
 * so one store changes both: a kill leaves layout 2 (upgraded again at the next open) or
 * layout 3. The header's copy follows in seg_open. */
static void v2_upgrade(struct kv_shm_store *s, char *eb, size_t ec)
{
    _Static_assert(offsetof(struct shm_hdr, layout_version) == 8 &&
                       offsetof(struct shm_hdr, hdr_crc) == 12,
                   "version and checksum in one word");
    struct shm_hdr tmp;
    memcpy(&tmp, s->hdr, offsetof(struct shm_hdr, static_end));
    tmp.layout_version = SHM_LAYOUT_VERSION;
    uint64_t w = (uint64_t)SHM_LAYOUT_VERSION | (uint64_t)hdr_crc(&tmp) << 32;
    __atomic_store_n((uint64_t *)((uint8_t *)s->hdr + 8), w, __ATOMIC_RELEASE);
    if (s->is_file)
        msync(s->base, SHM_HDR_SIZE, MS_SYNC);
    size_t at = eb && ec ? strlen(eb) : 0;
    if (eb && at < ec)
        snprintf(eb + at, ec - at, "%ssegment %s upgraded in place from layout 2 to %u (its keys "
                 "are in database 0)", at ? "; " : "", s->name, SHM_LAYOUT_VERSION);
}

/* The logical -> physical database map must be a permutation; one that is not (damage) is
 * reset to the identity, and recovery's counts are per physical database anyway. */
static void dbs_check(struct kv_shm_store *s)
{
    struct shm_dbs *d = s->dbs;
    uint8_t seen[SHM_MAX_DB] = {0};
    unsigned sel = d->sel & 1;
    int ok = d->sel <= 1;
    for (unsigned l = 0; l < SHM_MAX_DB && ok; l++) {
        unsigned p = l ^ d->map[sel][l];
        ok = p < SHM_MAX_DB && !seen[p];
        if (ok)
            seen[p] = 1;
    }
    if (!ok) {
        memset(d->map, 0, sizeof(d->map));
        d->sel = 0;
    }
}

/* Checks an existing header; on failure says what is wrong and how to proceed. */
static int seg_check(struct kv_shm_store *s, const struct shm_hdr *h, const struct layout *l,
                     char *eb, size_t ec)
{
    const char *how = "start with --reset-store to move it aside and begin empty";
    if (h->magic != SHM_MAGIC) {
        say(eb, ec, "segment %s does not hold a libevkv store (magic %016" PRIx64 "); %s", s->name,
            h->magic, how);
        return KV_ECORRUPT;
    }
    if (h->layout_version != SHM_LAYOUT_VERSION && h->layout_version != SHM_LAYOUT_V2) {
        say(eb, ec,
            "segment %s has layout version %u, this build reads version %u; run the "
            "build that wrote it, or %s",
            s->name, h->layout_version, SHM_LAYOUT_VERSION, how);
        return KV_ECORRUPT;
    }
    if (h->fingerprint != kv_shm_fingerprint()) {
        say(eb, ec,
            "segment %s was written by an incompatible build (layout fingerprint "
            "%016" PRIx64 ", this build %016" PRIx64 "); run the build that wrote it, or %s",
            s->name, h->fingerprint, kv_shm_fingerprint(), how);
        return KV_ECORRUPT;
    }
    if (h->hdr_crc != hdr_crc(h)) {
        say(eb, ec, "segment %s has a damaged header (checksum mismatch); %s", s->name, how);
        return KV_ECORRUPT;
    }
    if (h->size != s->size || h->data_off != l->data_off || h->n_pages != l->n_pages ||
        h->n_dir != l->n_dir || h->stripes_off != l->stripes_off ||
        h->classes_off != l->classes_off || h->pmap_off != l->pmap_off ||
        h->pages_off != l->pages_off || h->dir_off != l->dir_off ||
        h->dir2_off != l->dir2_off || h->hdr2_off != l->hdr2_off || h->n_classes != s->n_classes ||
        h->n_stripes != SHM_STRIPES) {
        say(eb, ec,
            "segment %s: header says %" PRIu64 " bytes but the object has %zu, or "
            "its layout does not match its size; %s",
            s->name, h->size, s->size, how);
        return KV_ECORRUPT;
    }
    unsigned L;
    uint64_t p;
    if (kv_shm_state_parse(h->state, &L, &p)) {
        say(eb, ec, "segment %s: the index state word is damaged; %s", s->name, how);
        return KV_ECORRUPT;
    }
    return 0;
}

static int open_fd(const struct kv_shm_store *s, int create, int *created)
{
    int fl = O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0);
    int fd = s->is_file ? open(s->name, fl, 0600) : shm_open(s->name, fl, 0600);
    *created = fd >= 0 && create;
    if (fd < 0 && create && errno == EEXIST)
        return open_fd(s, 0, created);
    return fd;
}

static void seg_unmap(struct kv_shm_store *s)
{
    if (s->base)
        munmap(s->base, s->size);
    s->base = NULL;
    if (s->fd >= 0)
        close(s->fd); /* also drops the flock */
    s->fd = -1;
}

/* Renames the segment to <name>.bad-<time>; for shm, through its /dev/shm path. */
static int seg_move_aside(struct kv_shm_store *s, char *moved, size_t cap)
{
    char from[1200];
    snprintf(from, sizeof(from), "%s%s", s->is_file ? "" : "/dev/shm", s->name);
    snprintf(moved, cap, "%s.bad-%lld", from, (long long)time(NULL));
    return rename(from, moved) ? KV_EIO : 0;
}

/* A resize killed before its rename leaves NAME.resize, the half-built copy, as large as
 * the size it was going to (kv_shm_resize). The next resize removes it, but a start at the
 * old size never resizes: the copy would hold its memory in /dev/shm (or its disk space)
 * for good. Called holding NAME's lock, which every resize holds while it builds the
 * copy, so no resize is running. Said on errbuf, after what is there already. */
static void drop_stale_resize(const struct kv_shm_store *s, char *eb, size_t ec)
{
    char tmp[1200];
    snprintf(tmp, sizeof(tmp), "%s.resize", s->name);
    if ((s->is_file ? unlink(tmp) : shm_unlink(tmp)) != 0)
        return;
    if (eb && ec) {
        size_t n = strlen(eb);
        snprintf(eb + n, ec - n, "%sremoved %s%s, the half-built copy of a resize that was "
                 "killed (the segment was kept at its size)", n ? "; " : "",
                 s->is_file ? "" : "/dev/shm", tmp);
    }
}

/* One attempt: *bad is set when the segment exists but is unusable (reset may help). */
static int seg_open(struct kv_shm_store *s, const struct kv_config *cfg, char *eb, size_t ec,
                    int *bad)
{
    int created = 0;
    *bad = 0;
    s->fd = open_fd(s, !s->attach, &created);
    if (s->fd < 0) {
        int e = errno;
        say(eb, ec, "cannot open segment %s: %s", s->name, strerror(e));
        return e == ENOENT ? KV_ENOTFOUND : KV_EIO;
    }
    if (!s->attach && flock(s->fd, LOCK_EX | LOCK_NB)) {
        int e = errno;
        struct shm_hdr h;
        memset(&h, 0, sizeof(h));
        if (pread(s->fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h) || h.magic != SHM_MAGIC)
            h.owner_pid = 0;
        if (e == EWOULDBLOCK)
            say(eb, ec,
                "segment %s is in use by pid %d; stop that server or give this one "
                "another --shm-name/--data-file",
                s->name, (int)h.owner_pid);
        else
            say(eb, ec, "cannot lock segment %s: %s", s->name, strerror(e));
        seg_unmap(s);
        return e == EWOULDBLOCK ? KV_ELOCKED : KV_EIO;
    }
    struct stat sb;
    if (fstat(s->fd, &sb)) {
        say(eb, ec, "cannot stat segment %s: %s", s->name, strerror(errno));
        seg_unmap(s);
        return KV_EIO;
    }
    int fresh = created || sb.st_size == 0;
    if (s->attach)
        s->size = (size_t)sb.st_size;
    /* an older layout may be upgraded into a larger --memory (when it does not fit at its
     * own size): only the upgrade reads it, at the size it has */
    if (!fresh && !s->attach && (uint64_t)sb.st_size < s->size && sb.st_size >= SHM_HDR_SIZE) {
        uint8_t h1[SHM_HDR_SIZE];
        size_t want = s->size;
        if (pread(s->fd, h1, sizeof(h1), 0) == (ssize_t)sizeof(h1) &&
            kv_shm_v1_probe(h1, (size_t)sb.st_size)) { /* it reads the header only */
            s->size = (size_t)sb.st_size;
            void *m = mmap(NULL, s->size, PROT_READ, MAP_SHARED, s->fd, 0);
            int rc = KV_EIO;
            if (m != MAP_FAILED) {
                s->base = m;
                rc = kv_shm_v1_probe(m, s->size) ? kv_shm_upgrade_v1(s, cfg, eb, ec) : KV_ECORRUPT;
            }
            seg_unmap(s);
            s->size = want;
            return rc ? rc : SHM_REOPEN;
        }
    }
    if (!fresh && !s->attach && (uint64_t)sb.st_size != s->size && sb.st_size >= SHM_HDR_SIZE) {
        /* a segment of this layout at another size: grown to --memory, or shrunk when
         * asked, by copying its keys (kv_shm_resize); never resized in place */
        struct shm_hdr oh;
        int ours = pread(s->fd, &oh, sizeof(oh), 0) == (ssize_t)sizeof(oh) &&
                   oh.magic == SHM_MAGIC &&
                   (oh.layout_version == SHM_LAYOUT_VERSION || oh.layout_version == SHM_LAYOUT_V2) &&
                   oh.hdr_crc == hdr_crc(&oh) && oh.size == (uint64_t)sb.st_size;
        if (ours && ((uint64_t)sb.st_size < s->size || cfg->shrink_store)) {
            seg_unmap(s); /* the copy opens it itself, lock and all */
            int rc = kv_shm_resize(s, cfg, (size_t)sb.st_size, eb, ec);
            return rc ? rc : SHM_REOPEN;
        }
    }
    if (!fresh && (uint64_t)sb.st_size != s->size) {
        say(eb, ec,
            "segment %s is %lld bytes but --memory is %zu; restart with --memory "
            "%lld to keep its data as it is, with --shrink-store to copy it into the smaller "
            "size (refused if it does not fit), or with --reset-store to move it aside and "
            "start empty",
            s->name, (long long)sb.st_size, s->size, (long long)sb.st_size);
        seg_unmap(s);
        *bad = 1;
        return KV_EINVAL;
    }
    struct layout l;
    if (layout_compute(s->size, &l)) {
        say(eb, ec, "segment %s: %zu bytes is too small", s->name, s->size);
        seg_unmap(s);
        return KV_EINVAL;
    }

    /* Reserved at every open, not only at creation: a copied or restored segment may be
     * sparse, and a hole that cannot be backed later is a SIGBUS at the first write to
     * it (or in recovery, at every restart). Reserving what is already backed is cheap. */
    if (fresh || !s->attach) {
        int e = fresh && ftruncate(s->fd, (off_t)s->size) ? errno : 0;
        if (!e)
            e = posix_fallocate(s->fd, 0, (off_t)s->size);
        if (e) {
            say(eb, ec, "cannot reserve %zu bytes for segment %s: %s; %s", s->size, s->name,
                strerror(e),
                fresh ? "lower --memory or make room (e.g. a larger /dev/shm)"
                      : "its file is sparse and the file system cannot back it: make room, "
                        "nothing in it was touched");
            seg_unmap(s);
            if (created)
                s->is_file ? unlink(s->name) : shm_unlink(s->name);
            return e == ENOSPC || e == EFBIG ? KV_ENOMEM : KV_EIO;
        }
    }
    if (!s->base) {
        void *m = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
        if (m == MAP_FAILED) {
            say(eb, ec, "cannot map segment %s: %s", s->name, strerror(errno));
            seg_unmap(s);
            return KV_EIO;
        }
        s->base = m;
        /* fewer TLB misses for lookups and recovery where the admin allows shmem THP */
        if (cfg->huge_pages != KV_HUGE_OFF)
            madvise(m, s->size, MADV_HUGEPAGE);
        store_wire(s, &l);
    }
    if (!fresh && !s->attach && kv_shm_v1_probe(s->base, s->size)) {
        int rc = kv_shm_upgrade_v1(s, cfg, eb, ec);
        seg_unmap(s);
        return rc ? rc : SHM_REOPEN;
    }
    /* A creation that never finished leaves no header in either place and nothing in the
     * data area; anything else with a header we cannot read is refused, never re-created. */
    if (!fresh && !s->attach && page_all_zero(s->base, SHM_HDR_SIZE) &&
        page_all_zero((const uint8_t *)s->hdr2, SHM_HDR_SIZE) &&
        page_all_zero(s->base + s->data_off, s->size - s->data_off))
        fresh = 1;
    int rc = 0;
    char note[600] = "";
    if (fresh && !s->attach) {
        rc = seg_init_fresh(s, &l);
    } else {
        rc = seg_check(s, s->hdr, &l, eb, ec);
        if (rc && !s->attach && seg_check(s, s->hdr2, &l, NULL, 0) == 0) {
            /* the header is damaged, its copy sound: the static part comes back from the
             * copy, the state word too unless the header's own still checks (the copy's
             * may be older: recovery moves every item to where the state says) */
            unsigned L;
            uint64_t p, state = s->hdr->state;
            int state_ok = kv_shm_state_parse(state, &L, &p) == 0;
            snprintf(note, sizeof(note), "the header was damaged (%.300s); restored from its copy, "
                     "recovery ran; ", eb && ec ? eb : "");
            memcpy(s->hdr, s->hdr2, offsetof(struct shm_hdr, static_end));
            s->hdr->state = state_ok ? state : s->hdr2->state;
            s->hdr->clean = 0;
            rc = 0;
        }
        if (rc)
            *bad = 1;
        else
            memcpy(s->hkey, s->hdr->hash_key, sizeof(s->hkey));
        if (rc == 0 && !s->attach && s->hdr->layout_version == SHM_LAYOUT_V2)
            memset(s->dbs, 0, sizeof(*s->dbs)); /* unused by layout 2: identity, all in db 0 */
        if (rc == 0 && !s->attach) {
            locks_init(s);
            if (s->hdr->clean == SHM_CLEAN && s->hdr->meta_crc != meta_crc(s)) {
                snprintf(note, sizeof(note), "the store's metadata failed its checksum at open "
                         "(damaged while stopped): rebuilt from the items; ");
                s->hdr->clean = 0;
            }
            if (s->hdr->clean != SHM_CLEAN) {
                rc = kv_shm_recover(s, eb, ec);
                if (rc == 0)
                    recovery_say(s, note, eb, ec);
            }
        }
    }
    if (rc) {
        seg_unmap(s);
        return rc;
    }
    if (!s->attach) {
        dbs_check(s);
        if (s->hdr->layout_version == SHM_LAYOUT_V2)
            v2_upgrade(s, eb, ec);
        hdr2_write(s);
        s->corrupt_at_open = __atomic_load_n(&s->hdr->corrupt, __ATOMIC_RELAXED);
        s->hdr->generation++;
        s->hdr->owner_pid = (int32_t)getpid();
        __atomic_store_n(&s->hdr->clean, 0, __ATOMIC_RELEASE);
        if (s->is_file)
            msync(s->base, SHM_HDR_SIZE, MS_SYNC);
    }
    (void)cfg;
    return 0;
}

int kv_shm_store_open_ex(const struct kv_config *cfg, const struct kv_shm_open_opts *opts,
                         char *errbuf, size_t errcap, struct kv_shm_store **out)
{
    if (errbuf && errcap)
        errbuf[0] = 0;
    if (!cfg || !out || cfg->max_key < 1 || cfg->max_key > UINT32_MAX) {
        say(errbuf, errcap, "bad store configuration");
        return KV_EINVAL;
    }
    if (cfg->memory < SHM_MIN_SIZE || cfg->memory > (1ull << 43)) {
        say(errbuf, errcap, "--memory %zu is out of range (%u bytes .. 8 TiB)", cfg->memory,
            SHM_MIN_SIZE);
        return KV_EINVAL;
    }
    static uint64_t opens;
    struct kv_shm_store *s = kv_mem_calloc(KV_MOD_SHM, sizeof(*s));
    if (!s)
        return KV_ENOMEM;
    s->fd = -1;
    s->size = cfg->memory;
    s->lru = cfg->eviction == KV_EVICT_LRU;
    kv_shm_set_maxmemory(s, cfg->maxmemory);
    s->max_key = cfg->max_key;
    s->open_id = __atomic_add_fetch(&opens, 1, __ATOMIC_RELAXED);
    s->attach = opts ? opts->attach : 0;
    s->crash_at = opts ? opts->crash_at : 0;
    s->crash_site = opts ? opts->crash_site : 0;
    s->fixed_key = opts ? opts->fixed_hash_key : 0;
    s->chain_max = opts && opts->chain_max ? opts->chain_max : SHM_CHAIN_MAX;
    seg_name(cfg, s->name, sizeof(s->name), &s->is_file);
    int bad;
    int rc = seg_open(s, cfg, errbuf, errcap, &bad);
    if (rc == SHM_REOPEN) { /* upgraded from an older layout: open the result */
        char up[1024];
        snprintf(up, sizeof(up), "%s", errbuf && errcap ? errbuf : "");
        if (errbuf && errcap)
            errbuf[0] = 0;
        rc = seg_open(s, cfg, errbuf, errcap, &bad);
        if (rc == 0 && errbuf && errcap) {
            char rest[1024];
            snprintf(rest, sizeof(rest), "%s", errbuf);
            snprintf(errbuf, errcap, "%s%s%s", up, rest[0] ? "; " : "", rest);
        }
    }
    if (rc && bad && cfg->reset_store && !s->attach) {
        /* reopen to hold the lock while renaming, so no second server races us */
        char moved[1300], why[512];
        snprintf(why, sizeof(why), "%s", errbuf && errcap ? errbuf : "unusable segment");
        int created;
        s->fd = open_fd(s, 0, &created);
        if (s->fd >= 0 && flock(s->fd, LOCK_EX | LOCK_NB) == 0 &&
            seg_move_aside(s, moved, sizeof(moved)) == 0) {
            seg_unmap(s);
            rc = seg_open(s, cfg, errbuf, errcap, &bad);
            if (rc == 0)
                say(errbuf, errcap,
                    "moved the unusable segment aside to %s and started "
                    "empty (it was: %s)",
                    moved, why);
        } else {
            say(errbuf, errcap, "could not move segment %s aside: %s", s->name, strerror(errno));
            seg_unmap(s);
            rc = KV_EIO;
        }
    }
    if (rc == 0 && !s->attach)
        drop_stale_resize(s, errbuf, errcap);
    if (rc == 0 && s->is_file && !s->attach && cfg->sync != KV_SYNC_NO) {
        /* what recovery rewrote reaches the disk before any new write can: a power loss
         * later never mixes pages of the image it repaired with pages of its repair */
        if (s->recovered && msync(s->base, s->size, MS_SYNC) != 0) {
            say(errbuf, errcap, "cannot flush the repaired data file %s: %s", s->name,
                strerror(errno));
            kv_shm_store_close(s);
            return KV_EIO;
        }
        rc = kv_shm_sync_start(s, cfg->sync, opts);
        if (rc) {
            say(errbuf, errcap, "cannot start the --sync thread for %s", s->name);
            kv_shm_store_close(s);
            return rc;
        }
    }
    if (rc) {
        kv_mem_free(KV_MOD_SHM, s);
        return rc;
    }
    *out = s;
    return 0;
}

int kv_shm_store_open(const struct kv_config *cfg, char *errbuf, size_t errcap,
                      struct kv_shm_store **out)
{
    return kv_shm_store_open_ex(cfg, NULL, errbuf, errcap, out);
}

void kv_shm_store_close(struct kv_shm_store *s)
{
    if (!s)
        return;
    if (!s->attach && s->base) {
        kv_shm_sync_stop(s); /* --sync: a last flush, then what waited for it is freed */
        unsigned rows = __atomic_load_n(&s->spare_rows, __ATOMIC_ACQUIRE);
        for (unsigned r = 0; r < rows && r < SHM_SPARE_ROWS; r++)
            for (unsigned c = 0; c < SHM_MAX_CLASSES; c++)
                if (s->spares[r].off[c])
                    kv_shm_free(s, s->spares[r].off[c]);
        s->hdr->owner_pid = 0;
        s->hdr->meta_crc = meta_crc(s);
        hdr2_write(s);
        /* damage met while open (a free list, a slot that failed its checks): not marked
         * clean, so the next open rebuilds the derived state instead of trusting it */
        /* a file: everything on disk first, then the clean mark on its own, so that a
         * power loss during the flush never leaves a torn image marked clean */
        /* a flush that failed, now or since the open, leaves the file unmarked: the next
         * open recovers it */
        int flushed = !s->is_file || msync(s->base, s->size, MS_SYNC) == 0;
        if (flushed && !__atomic_load_n(&s->sync_failed, __ATOMIC_ACQUIRE) &&
            __atomic_load_n(&s->hdr->corrupt, __ATOMIC_RELAXED) == s->corrupt_at_open)
            __atomic_store_n(&s->hdr->clean, SHM_CLEAN, __ATOMIC_RELEASE);
        if (s->is_file)
            msync(s->base, SHM_HDR_SIZE, MS_SYNC);
    }
    seg_unmap(s);
    kv_mem_free(KV_MOD_SHM, s);
}

int kv_shm_store_unlink(const struct kv_config *cfg)
{
    char name[1100];
    int is_file;
    seg_name(cfg, name, sizeof(name), &is_file);
    if ((is_file ? unlink(name) : shm_unlink(name)) == 0)
        return 0;
    return errno == ENOENT ? KV_ENOTFOUND : KV_EIO;
}

uint64_t kv_shm_huge_bytes(const struct kv_shm_store *s)
{
    char line[256], want[32];
    uint64_t kb = 0;
    int in = 0;
    FILE *f = fopen("/proc/self/smaps", "r");

    if (!f)
        return 0;
    snprintf(want, sizeof(want), "%" PRIxPTR "-", (uintptr_t)s->base);
    while (fgets(line, sizeof(line), f)) {
        unsigned long long v;

        if (strchr(line, '-') && strchr(line, ' ') && strchr(line, '-') < strchr(line, ' ')) {
            if (in)
                break; /* the next mapping: ours is done */
            in = strncmp(line, want, strlen(want)) == 0;
        } else if (in && (sscanf(line, "ShmemPmdMapped: %llu kB", &v) == 1 ||
                          sscanf(line, "FilePmdMapped: %llu kB", &v) == 1)) {
            kb += v;
        }
    }
    fclose(f);
    return kb * 1024;
}
