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

#include "shm_int.h"
#include "shm_v1.h"

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
    c->rc = kv_shm_put_versioned(c->dst, it->key, it->klen, it->val, it->vlen, it->version,
                                 it->expire_ms);
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
    if (s->is_file) { /* the rename reaches the disk before anything relies on it */
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
    clock_gettime(CLOCK_MONOTONIC, &t1);
    snprintf(eb, eb ? ec : 0, "segment %s was layout 1: upgraded to layout %u (%" PRIu64
             " keys copied with their versions and expiry, %" PRIu64 " expired dropped, %" PRIu64
             " unsound slots skipped, %s) in %.1f ms", s->name, SHM_LAYOUT_VERSION, c.copied,
             c.expired, counts.bad_offset + counts.bad_magic + counts.bad_crc,
             counts.clean ? "it was stopped cleanly" : "its server had died",
             (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
    return 0;
}
