/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_upgrade.c -- a segment written by an older layout opens with every key,
 * value, version and expiry intact.
 *
 * Layout 1 (every release up to 7db7ef5) is read by shm_v1.c, which trusts nothing in it.
 * The upgrade copies every live item into a new segment of this layout beside the old one,
 * <name>.upgrade, closes that cleanly and renames it over the old name, then the caller
 * opens the name as usual. The old segment is only read: a kill at any instant before the
 * rename leaves it whole (the next start removes the half-built copy and upgrades again),
 * and the rename itself is atomic. The price is room for a second copy while it runs.
 * Items are copied with their own versions and absolute expiry; expired ones are dropped;
 * the version counter continues above the highest version seen, so CAS versions keep
 * increasing. A crashed layout-1 segment is read the way its own recovery would have. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kv_mem.h"
#include "shm_int.h"
#include "shm_v1.h"

/* After a rename of a file-backed segment: the directory reaches the disk too. */
static void dir_sync(const struct kv_shm_store *s)
{
    if (!s->is_file)
        return;
    char dir[1300];
    snprintf(dir, sizeof(dir), "%s", s->name);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof(dir), ".");
    else
        slash[slash == dir] = 0; /* "/x" -> "/", "a/b" -> "a" */
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

struct copy {
    struct kv_shm_store *src, *dst;
    int64_t now;
    uint64_t copied, expired;
    int rc;
};

static int copy_one(void *ctx, const struct kv_shm_v1_item *it)
{
    struct copy *c = ctx;
    if (it->expire_ms && it->expire_ms <= c->now) {
        c->expired++;
        return 0;
    }
    c->rc = kv_shm_put_versioned(c->dst, 0, it->key, it->klen, it->val, it->vlen, it->version,
                                 it->expire_ms); /* layout 1 has one database */
    if (c->rc)
        return 1;
    c->copied++;
    kv_shm_crash_point(c->src, KV_SHM_CRASH_UPGRADE);
    return 0;
}

/* The name of the new segment, and for rename() the paths of both. */
static void names(const struct kv_shm_store *s, char *tmp, size_t cap, char *from, char *to,
                  size_t pcap)
{
    snprintf(tmp, cap, "%s.upgrade", s->name);
    snprintf(from, pcap, "%s%s", s->is_file ? "" : "/dev/shm", tmp);
    snprintf(to, pcap, "%s%s", s->is_file ? "" : "/dev/shm", s->name);
}

int kv_shm_upgrade_v1(struct kv_shm_store *s, const struct kv_config *cfg, char *eb, size_t ec)
{
    char tmp[1200], from[1300], to[1300];
    names(s, tmp, sizeof(tmp), from, to, sizeof(from));
    struct kv_config c2 = *cfg;
    c2.reset_store = 0;
    c2.eviction = KV_EVICT_NONE; /* the copy never evicts what it copies: it fits or fails */
    size_t tl = strlen(tmp);
    if (tl >= (s->is_file ? sizeof(c2.data_file) : sizeof(c2.shm_name))) {
        snprintf(eb, eb ? ec : 0, "segment %s is layout 1 and needs an upgrade, but its name "
                 "is too long for the copy's", s->name);
        return KV_EINVAL;
    }
    if (s->is_file) {
        memcpy(c2.data_file, tmp, tl + 1);
    } else {
        c2.data_file[0] = 0;
        memcpy(c2.shm_name, tmp, tl + 1);
    }
    kv_shm_store_unlink(&c2); /* a copy a killed upgrade left half-built */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct copy c = {.src = s, .now = kv_shm_now_ms()};
    char err[512];
    int rc = kv_shm_store_open(&c2, err, sizeof(err), &c.dst);
    if (rc) {
        snprintf(eb, eb ? ec : 0, "segment %s is layout 1 and needs an upgrade, which needs "
                 "room for a second copy of %zu bytes beside it: %s", s->name, s->size, err);
        return rc;
    }
    struct kv_shm_v1_counts counts;
    rc = kv_shm_v1_read(s->base, s->size, copy_one, &c, &counts);
    if (rc == 0) {
        uint64_t *ctr = &c.dst->hdr->version_ctr;
        if (*ctr < counts.last_version)
            *ctr = counts.last_version;
    }
    kv_shm_store_close(c.dst);
    if (rc) {
        kv_shm_store_unlink(&c2);
        /* the new layout keeps a little more per page and index lines apart: a store full
         * to the brim may need a larger --memory, into which the upgrade grows it */
        uint64_t more = ((uint64_t)cfg->memory + cfg->memory / 8 + (1u << 20) - 1) & ~0xFFFFFull;
        char how[200];
        if (c.rc == KV_ENOMEM)
            snprintf(how, sizeof(how), "its items do not fit this layout in %zu bytes: start "
                     "with --memory %" PRIu64 " (or more) to upgrade it into a larger segment",
                     cfg->memory, more);
        else
            snprintf(how, sizeof(how), "run the release that wrote it");
        snprintf(eb, eb ? ec : 0, "segment %s is layout 1 and could not be upgraded (%s after "
                 "%" PRIu64 " items): it is unchanged; %s", s->name,
                 kv_strerror(c.rc ? c.rc : rc), c.copied, how);
        return c.rc ? c.rc : rc;
    }
    if (rename(from, to)) {
        int e = errno;
        kv_shm_store_unlink(&c2);
        snprintf(eb, eb ? ec : 0, "segment %s: upgrade copied, rename failed: %s; it is "
                 "unchanged", s->name, strerror(e));
        return KV_EIO;
    }
    dir_sync(s); /* the rename reaches the disk before anything relies on it */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    snprintf(eb, eb ? ec : 0, "segment %s was layout 1: upgraded to layout %u (%" PRIu64
             " keys copied with their versions and expiry, %" PRIu64 " expired dropped, %" PRIu64
             " unsound slots skipped, %s) in %.1f ms", s->name, SHM_LAYOUT_VERSION, c.copied,
             c.expired, counts.bad_offset + counts.bad_magic + counts.bad_crc,
             counts.clean ? "it was stopped cleanly" : "its server had died",
             (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    return 0;
}

/* ---- resizing: the same copy, from a segment of this layout ---------------------------- */

/* Calls fn for every sound, unexpired item reachable from s's index. Single-threaded: s is
 * open only for the copy. */
static int each_item(struct kv_shm_store *s, int (*fn)(void *ctx, const struct shm_item *it),
                     void *ctx)
{
    int64_t now = kv_shm_now_ms();
    uint64_t active = kv_shm_index_active(s);
    for (uint64_t b = 0; b < active; b++) {
        uint64_t *line = kv_shm_index_line(s, b);
        for (unsigned n = 0; line && n < s->chain_max; n++) {
            for (int i = 0; i < SHM_SLOTS; i++) {
                struct shm_item *it = line[i] ? kv_shm_item_check(s, line[i]) : NULL;
                if (!it || (it->expire_ms && it->expire_ms <= now) ||
                    kv_shm_item_crc(s, it) != it->crc)
                    continue;
                int rc = fn(ctx, it);
                if (rc)
                    return rc;
            }
            uint64_t nx = kv_shm_link_parse(s, line[SHM_SLOTS]);
            line = nx ? shm_ptr(s, nx) : NULL;
        }
    }
    return 0;
}

struct rcopy {
    struct kv_shm_store *src, *dst;
    uint8_t *buf; /* owned (KV_MOD_SHM): a large value's bytes */
    size_t cap;
    uint64_t copied;
    int rc;
};

static int copy_item(void *ctx, const struct shm_item *it)
{
    struct rcopy *c = ctx;
    const void *val = it->data + it->klen;
    if (it->cls == SHM_CLASS_LARGE) { /* its value is on pages of the old segment */
        if (it->vlen > c->cap) {
            uint8_t *nb = kv_mem_realloc(KV_MOD_SHM, c->buf, it->vlen);
            if (!nb) {
                c->rc = KV_ENOMEM;
                return 1;
            }
            c->buf = nb;
            c->cap = it->vlen;
        }
        kv_shm_item_read(c->src, it, SHM_ITEM_HDR + it->klen, c->buf, it->vlen);
        val = c->buf;
    }
    c->rc = kv_shm_put_versioned(c->dst, it->db, it->data, it->klen, val, it->vlen,
                                 it->version, it->expire_ms);
    if (c->rc)
        return 1;
    c->copied++;
    kv_shm_crash_point(c->dst, KV_SHM_CRASH_UPGRADE);
    return 0;
}

int kv_shm_resize(const struct kv_shm_store *s, const struct kv_config *cfg, size_t old_size,
                  char *eb, size_t ec)
{
    char tmp[1200], from[1300], to[1300];
    snprintf(tmp, sizeof(tmp), "%s.resize", s->name);
    snprintf(from, sizeof(from), "%s%s", s->is_file ? "" : "/dev/shm", tmp);
    snprintf(to, sizeof(to), "%s%s", s->is_file ? "" : "/dev/shm", s->name);
    struct kv_config cold = *cfg, cnew = *cfg;
    cold.memory = old_size;
    cold.reset_store = cnew.reset_store = 0;
    cold.eviction = cnew.eviction = KV_EVICT_NONE; /* a copy never evicts what it copies */
    size_t tl = strlen(tmp);
    if (tl >= (s->is_file ? sizeof(cnew.data_file) : sizeof(cnew.shm_name)))
        return KV_EINVAL;
    if (s->is_file) {
        memcpy(cnew.data_file, tmp, tl + 1);
    } else {
        cnew.data_file[0] = 0;
        memcpy(cnew.shm_name, tmp, tl + 1);
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct rcopy c = {0};
    char err[1024];
    struct kv_shm_open_opts o = {.crash_at = s->crash_at, .crash_site = s->crash_site};
    int rc = kv_shm_store_open_ex(&cold, &o, err, sizeof(err), &c.src);
    if (rc) {
        snprintf(eb, eb ? ec : 0, "%s", err);
        return rc;
    }
    kv_shm_store_unlink(&cnew); /* a copy a killed resize left half-built */
    rc = kv_shm_store_open_ex(&cnew, &o, err, sizeof(err), &c.dst);
    if (rc) {
        kv_shm_store_close(c.src);
        snprintf(eb, eb ? ec : 0, "segment %s is %zu bytes and --memory is %zu: resizing needs "
                 "room for the new size beside it: %s", s->name, old_size, cfg->memory, err);
        return rc;
    }
    struct kv_shm_stats st;
    kv_shm_stats(c.src, &st);
    /* items keep their physical database, so the copy takes the logical map along */
    memcpy(c.dst->dbs->map, c.src->dbs->map, sizeof(c.dst->dbs->map));
    c.dst->dbs->sel = c.src->dbs->sel & 1;
    rc = each_item(c.src, copy_item, &c);
    if (rc == 0 && c.dst->hdr->version_ctr < c.src->hdr->version_ctr)
        c.dst->hdr->version_ctr = c.src->hdr->version_ctr;
    kv_shm_store_close(c.dst);
    kv_shm_store_close(c.src);
    kv_mem_free(KV_MOD_SHM, c.buf);
    if (rc || rename(from, to)) {
        int e = errno;
        kv_shm_store_unlink(&cnew);
        if (c.rc == KV_ENOMEM)
            snprintf(eb, eb ? ec : 0, "segment %s (%zu bytes, %" PRIu64 " keys, %" PRIu64
                     " bytes in use) does not fit in --memory %zu: it is unchanged; start "
                     "with a larger --memory, or --memory %zu to keep it as it is", s->name,
                     old_size, st.keys, st.bytes_used, cfg->memory, old_size);
        else
            snprintf(eb, eb ? ec : 0, "segment %s: resize failed (%s): it is unchanged",
                     s->name, rc ? kv_strerror(c.rc ? c.rc : rc) : strerror(e));
        return rc ? (c.rc ? c.rc : rc) : KV_EIO;
    }
    dir_sync(s);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    snprintf(eb, eb ? ec : 0, "segment %s %s from %zu to %zu bytes (%" PRIu64 " keys copied with "
             "their versions and expiry) in %.1f ms", s->name,
             cfg->memory > old_size ? "grown" : "shrunk", old_size, cfg->memory, c.copied,
             (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    return 0;
}
