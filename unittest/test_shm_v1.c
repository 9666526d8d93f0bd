/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_shm_v1.c -- CUnit suite of the layout-1 reader (src/shm/shm_v1.h).
 *
 * Its inputs are real layout-1 segments, written by the server of commit 7db7ef5 with
 * tests/make_v1_fixture.sh and committed gzip-compressed under unittest/fixtures/ with the
 * manifests that say what the live server held before it was stopped (clean: SIGTERM) or
 * killed (crash: SIGKILL under a writer), plus one whose writer (the store of that commit,
 * linked in) died inside a bucket split (split). Each is decompressed into a temporary file and
 * mapped privately, with an inaccessible page right after it, so a read past the end
 * faults even without ASan. The reader must report every manifest key exactly and nothing
 * else; then copies of the segments are damaged on purpose, targeted (a killed split, a
 * second item for a key, cycles, a lost directory entry) and at random (deterministic
 * seed), and every item it still reports must be sound. This file reaches into the
 * segment only through its own copy of the layout-1 facts it needs to damage it. */
#include <CUnit/CUnit.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "kv_err.h"
#include "kv_mem.h"
#include "kv_shm.h"
#include "kv_test_util.h"
#include "shm_v1.h"

uint32_t kv_shm_crc32c(uint32_t crc, const void *buf, size_t len);

/* layout-1 facts the damage needs (shm_v1.c has the full frozen description) */
#define V1_PAGE     65536u
#define V1_HDR_DIR  64 /* header: dir_off, data_off, n_pages, n_dir at 64, 72, 80, 88 */
#define V1_LINE     64u
#define V1_SLOTS    7
#define V1_ITEM_HDR 40u

/* ---- fixtures ------------------------------------------------------------------------- */

struct seg {
    uint8_t *base; /* owned: private copy-on-write mapping, size bytes + a PROT_NONE page */
    const uint8_t *pristine; /* owned: second private mapping, never written */
    size_t size;
};

static void fixture_path(const char *name, char *out, size_t cap)
{
    const char *dir = getenv("KV_V1_FIXTURES");
    if (dir) {
        snprintf(out, cap, "%s/%s", dir, name);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[n > 0 ? n : 0] = 0;
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = 0; /* bin/ */
    snprintf(out, cap, "%s/../unittest/fixtures/%s", exe, name);
    if (access(out, R_OK) != 0) /* a test build's bin/ is deeper: the suites run from the top */
        snprintf(out, cap, "unittest/fixtures/%s", name);
}

/* Decompresses fixtures/NAME.seg.gz into a temporary file and maps it twice. */
static int seg_load(const char *name, struct seg *s)
{
    char path[PATH_MAX + 64], tmp[] = "/tmp/kv-v1-XXXXXX";
    char fname[128];
    snprintf(fname, sizeof(fname), "%s.seg.gz", name);
    fixture_path(fname, path, sizeof(path));
    gzFile gz = gzopen(path, "rb");
    if (!gz) {
        fprintf(stderr, "test_shm_v1: cannot open %s\n", path);
        return -1;
    }
    int fd = mkstemp(tmp);
    if (fd < 0) {
        gzclose(gz);
        return -1;
    }
    unlink(tmp);
    static uint8_t buf[1 << 16];
    size_t size = 0;
    int n;
    while ((n = gzread(gz, buf, sizeof(buf))) > 0) {
        if (write(fd, buf, (size_t)n) != n) {
            n = -1;
            break;
        }
        size += (size_t)n;
    }
    gzclose(gz);
    if (n < 0 || size == 0) {
        close(fd);
        return -1;
    }
    long pg = sysconf(_SC_PAGESIZE);
    uint8_t *area = mmap(NULL, size + (size_t)pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uint8_t *m = area == MAP_FAILED
                     ? MAP_FAILED
                     : mmap(area, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 0);
    const uint8_t *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED || p == MAP_FAILED)
        return -1;
    s->base = m;
    s->pristine = p;
    s->size = size;
    return 0;
}

static void seg_unload(struct seg *s)
{
    munmap(s->base, s->size + (size_t)sysconf(_SC_PAGESIZE));
    munmap((void *)s->pristine, s->size);
}

static void seg_restore(struct seg *s)
{
    memcpy(s->base, s->pristine, s->size);
}

static uint64_t hdr_u64(const struct seg *s, size_t at)
{
    uint64_t v;
    memcpy(&v, s->base + at, 8);
    return v;
}

/* ---- what the reader reports ------------------------------------------------------------- */

struct got {
    const uint8_t *key, *val;
    size_t klen, vlen;
    uint64_t version, off;
    int64_t expire_ms;
};

struct walk {
    const struct seg *s;
    struct got *v; /* owned */
    size_t n, cap;
    uint64_t bad_crc, outside; /* reported items the test itself finds unsound */
    uint64_t stop_after;       /* > 0: return 1 from the callback after that many */
};

static int collect(void *ctx, const struct kv_shm_v1_item *it)
{
    struct walk *w = ctx;
    const uint8_t *key = it->key;
    /* never garbage: the item lies in the mapping and its checksum holds, recomputed here
     * over the bytes as they are now */
    if (key < w->s->base + V1_ITEM_HDR ||
        (const uint8_t *)it->val + it->vlen > w->s->base + w->s->size ||
        (const uint8_t *)it->val != key + it->klen) {
        w->outside++;
    } else {
        uint32_t crc;
        memcpy(&crc, key - V1_ITEM_HDR, 4);
        if (kv_shm_crc32c(0, key - V1_ITEM_HDR + 8, V1_ITEM_HDR - 8 + it->klen + it->vlen) != crc)
            w->bad_crc++;
    }
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 1024;
        w->v = realloc(w->v, w->cap * sizeof(*w->v));
        if (!w->v)
            abort();
    }
    w->v[w->n++] = (struct got){.key = key,
                                .val = it->val,
                                .klen = it->klen,
                                .vlen = it->vlen,
                                .version = it->version,
                                .off = (uint64_t)(key - V1_ITEM_HDR - w->s->base),
                                .expire_ms = it->expire_ms};
    return w->stop_after && w->n >= w->stop_after;
}

static int got_cmp(const void *a, const void *b)
{
    const struct got *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    if (c)
        return c;
    if (x->klen != y->klen)
        return x->klen < y->klen ? -1 : 1;
    return x->version < y->version ? -1 : x->version > y->version;
}

static int run(const struct seg *s, struct walk *w, struct kv_shm_v1_counts *c)
{
    memset(w, 0, sizeof(*w));
    w->s = s;
    int rc = kv_shm_v1_read(s->base, s->size, collect, w, c);
    if (w->n)
        qsort(w->v, w->n, sizeof(*w->v), got_cmp);
    return rc;
}

/* Items with key k (sorted, so adjacent): first index, and how many. */
static size_t find(const struct walk *w, const char *k, size_t *count)
{
    size_t lo = 0, hi = w->n, kl = strlen(k);
    struct got probe = {(const uint8_t *)k, NULL, kl, 0, 0, 0, 0};
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (got_cmp(&w->v[mid], &probe) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t n = 0;
    while (lo + n < w->n && w->v[lo + n].klen == kl && memcmp(w->v[lo + n].key, k, kl) == 0)
        n++;
    *count = n;
    return lo;
}

/* ---- manifests --------------------------------------------------------------------------- */

static void pattern(uint64_t seed, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)((seed * 31 + i * 7 + (i >> 8) * 13) & 0xFF);
}

/* 1 when g holds exactly the value a manifest line describes: "=TEXT" or "pat:SEED". */
static int value_is(const struct got *g, size_t vlen, unsigned long crc, const char *how)
{
    if (g->vlen != vlen || crc32(0, g->val, (uInt)g->vlen) != crc)
        return 0;
    if (how[0] == '=')
        return vlen == strlen(how + 1) && memcmp(g->val, how + 1, vlen) == 0;
    uint64_t seed;
    if (sscanf(how, "pat:%" SCNu64, &seed) != 1)
        return 0;
    uint8_t *want = malloc(vlen ? vlen : 1);
    pattern(seed, want, vlen);
    int ok = memcmp(want, g->val, vlen) == 0;
    free(want);
    return ok;
}

static int split_tabs(char *line, char **f, int max)
{
    int n = 0;
    line[strcspn(line, "\n")] = 0;
    while (n < max) {
        f[n++] = line;
        char *t = strchr(line, '\t');
        if (!t)
            break;
        *t = 0;
        line = t + 1;
    }
    return n;
}

struct check {
    size_t keys, deleted, w_set, w_del, matched;
    uint64_t max_version;
    int inflight_seen; /* crash: the segment holds the in-flight write, not the one before */
};

/* What a manifest says the segment holds for one key. */
struct want {
    int present;
    uint64_t version; /* 0: any version above every answered one (the in-flight write) */
    int64_t lo, hi;   /* expire_ms range */
    size_t vlen;
    unsigned long crc;
    char how[256]; /* "=TEXT" or "pat:SEED" */
};

static void want_pat(struct want *x, const char *ver, const char *vlen, const char *seed)
{
    x->present = 1;
    x->version = strcmp(ver, "-") ? strtoull(ver, NULL, 10) : 0;
    x->lo = x->hi = 0;
    x->vlen = strtoull(vlen, NULL, 10);
    snprintf(x->how, sizeof(x->how), "pat:%s", seed);
    uint8_t *v = malloc(x->vlen ? x->vlen : 1);
    pattern(strtoull(seed, NULL, 10), v, x->vlen);
    x->crc = crc32(0, v, (uInt)x->vlen);
    free(v);
}

/* 1 when w holds exactly what x says for key k (one item, or none). */
static int holds(const struct walk *w, const char *k, const struct want *x, uint64_t max_ver)
{
    size_t cnt, at = find(w, k, &cnt);
    if (!x->present)
        return cnt == 0;
    if (cnt != 1)
        return 0;
    const struct got *g = &w->v[at];
    return (x->version ? g->version == x->version : g->version > max_ver) &&
           g->expire_ms >= x->lo && g->expire_ms <= x->hi && value_is(g, x->vlen, x->crc, x->how);
}

/* Checks walk w against manifest NAME.manifest; every failure is one CUnit assertion.
 * Crash manifests end with the writer's one unanswered write: its key must hold either
 * that write or the last answered one (or nothing, when there was none). */
static void check_manifest(const struct walk *w, const char *name, struct check *ck)
{
    char path[PATH_MAX + 64], fname[128];
    snprintf(fname, sizeof(fname), "%s.manifest", name);
    fixture_path(fname, path, sizeof(path));
    FILE *f = fopen(path, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    memset(ck, 0, sizeof(*ck));
    char **ls = NULL, *line = NULL;
    size_t nls = 0, cap = 0;
    while (getline(&line, &cap, f) > 0) {
        if (line[0] == '#')
            continue;
        ls = realloc(ls, (nls + 1) * sizeof(*ls));
        ls[nls++] = strdup(line);
    }
    free(line);
    fclose(f);
    char *fl[10], ikey[128] = "", *last = nls ? strdup(ls[nls - 1]) : NULL;
    struct want before = {0}, after = {0};
    int in_n = last ? split_tabs(last, fl, 10) : 0;
    if (in_n >= 2 && strncmp(fl[0], "w-inflight", 10) == 0) {
        snprintf(ikey, sizeof(ikey), "%s", fl[1]);
        if (strcmp(fl[0], "w-inflight-set") == 0 && in_n == 6)
            want_pat(&after, fl[2], fl[4], fl[5]);
        nls--;
    }
    for (size_t i = 0; i < nls; i++) {
        int n = split_tabs(ls[i], fl, 10);
        struct want x = {0};
        if (strcmp(fl[0], "key") == 0 && n == 9) {
            x.present = 1;
            x.version = strtoull(fl[2], NULL, 10);
            x.lo = strtoll(fl[3], NULL, 10);
            x.hi = strtoll(fl[4], NULL, 10);
            x.vlen = strtoull(fl[5], NULL, 10);
            x.crc = strtoul(fl[6], NULL, 16);
            snprintf(x.how, sizeof(x.how), "%s", fl[8]);
            ck->keys++;
        } else if (strcmp(fl[0], "deleted") == 0 && n == 3) {
            ck->deleted++; /* absent: not even an older copy */
        } else if (strcmp(fl[0], "w-set") == 0 && n == 6) {
            want_pat(&x, fl[2], fl[4], fl[5]);
            ck->w_set++;
        } else if (strcmp(fl[0], "w-del") == 0 && n == 2) {
            ck->w_del++;
        } else {
            fprintf(stderr, "  %s: bad manifest line %s\n", name, fl[0]);
            CU_FAIL("manifest line");
            continue;
        }
        if (x.version > ck->max_version)
            ck->max_version = x.version;
        if (ikey[0] && strcmp(fl[1], ikey) == 0) {
            before = x; /* decided below, with the in-flight write */
            continue;
        }
        int ok = holds(w, fl[1], &x, 0);
        if (!ok)
            fprintf(stderr, "  %s: %s %s: not what the segment holds\n", name, fl[0], fl[1]);
        CU_ASSERT(ok);
        ck->matched += ok && x.present;
    }
    if (ikey[0]) {
        ck->inflight_seen = after.present && holds(w, ikey, &after, ck->max_version);
        int ok = ck->inflight_seen || holds(w, ikey, &before, 0);
        if (!ok)
            fprintf(stderr, "  %s: in-flight key %s: neither before nor after\n", name, ikey);
        CU_ASSERT(ok);
        ck->matched += ok && (ck->inflight_seen || before.present);
    }
    for (size_t i = 0; i < nls + (ikey[0] != 0); i++)
        free(ls[i]);
    free(ls);
    free(last);
}

/* ---- tests --------------------------------------------------------------------------- */

static struct seg clean_seg, crash_seg, split_seg;

static int suite_init(void)
{
    return seg_load("v1-clean", &clean_seg) || seg_load("v1-crash", &crash_seg) ||
           seg_load("v1-split", &split_seg);
}

static int suite_clean(void)
{
    seg_unload(&clean_seg);
    seg_unload(&crash_seg);
    seg_unload(&split_seg);
    return 0;
}

static void test_shm_v1_probe(void)
{
    struct seg *s = &clean_seg;
    CU_ASSERT_EQUAL(kv_shm_v1_probe(s->base, s->size), 1);
    CU_ASSERT_EQUAL(kv_shm_v1_probe(crash_seg.base, crash_seg.size), 1);
    CU_ASSERT_EQUAL(kv_shm_v1_probe(s->base, s->size - V1_PAGE), 0); /* size mismatch */
    CU_ASSERT_EQUAL(kv_shm_v1_probe(NULL, s->size), 0);
    s->base[8] = 2; /* layout version 2, with a matching header checksum */
    uint8_t tmp[104];
    memcpy(tmp, s->base, sizeof(tmp));
    memset(tmp + 12, 0, 4);
    uint32_t crc = kv_shm_crc32c(0, tmp, sizeof(tmp));
    memcpy(s->base + 12, &crc, 4);
    CU_ASSERT_EQUAL(kv_shm_v1_probe(s->base, s->size), 0);
    seg_restore(s);
    s->base[90] ^= 1; /* n_dir: covered by the header checksum */
    CU_ASSERT_EQUAL(kv_shm_v1_probe(s->base, s->size), 0);
    struct walk w;
    CU_ASSERT_EQUAL(run(s, &w, NULL), KV_EINVAL);
    free(w.v);
    seg_restore(s);
    s->base[136] ^= 0xFF; /* the index state word is not in the checksum, nor needed */
    CU_ASSERT_EQUAL(kv_shm_v1_probe(s->base, s->size), 1);
    seg_restore(s);
}

static void test_shm_v1_clean_fixture_exact(void)
{
    struct walk w;
    struct kv_shm_v1_counts c;
    struct check ck;
    CU_ASSERT_EQUAL_FATAL(run(&clean_seg, &w, &c), 0);
    check_manifest(&w, "v1-clean", &ck);
    printf("\n    clean: %" PRIu64 " items, manifest %zu keys (%zu exact), %zu deleted absent; "
           "bad offset/magic/crc/link %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64
           ", duplicates %" PRIu64 ", last version %" PRIu64 "\n",
           c.items, ck.keys, ck.matched, ck.deleted, c.bad_offset, c.bad_magic, c.bad_crc,
           c.bad_link, c.duplicates, c.last_version);
    CU_ASSERT(ck.keys > 2000 && ck.deleted > 50);
    CU_ASSERT_EQUAL(ck.matched, ck.keys);
    CU_ASSERT_EQUAL(c.items, ck.keys); /* nothing else */
    CU_ASSERT_EQUAL(w.n, c.items);
    CU_ASSERT_EQUAL(c.bad_offset + c.bad_magic + c.bad_crc + c.bad_link + c.duplicates, 0);
    CU_ASSERT_EQUAL(c.clean, 1);
    CU_ASSERT(c.last_version >= ck.max_version);
    CU_ASSERT_EQUAL(w.bad_crc + w.outside, 0);
    free(w.v);
}

static void test_shm_v1_crash_fixture_exact(void)
{
    struct walk w;
    struct kv_shm_v1_counts c;
    struct check ck;
    CU_ASSERT_EQUAL_FATAL(run(&crash_seg, &w, &c), 0);
    check_manifest(&w, "v1-crash", &ck);
    printf("\n    crash: %" PRIu64 " items, manifest %zu base keys + %zu writer sets + %zu writer "
           "deletes, %zu matched, in-flight write %s; bad offset/magic/crc/link %" PRIu64
           "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 ", duplicates %" PRIu64 "\n",
           c.items, ck.keys, ck.w_set, ck.w_del, ck.matched,
           ck.inflight_seen ? "in the segment" : "not in it", c.bad_offset, c.bad_magic, c.bad_crc,
           c.bad_link, c.duplicates);
    CU_ASSERT(ck.keys > 200 && ck.w_set > 1000 && ck.w_del > 10);
    CU_ASSERT_EQUAL(c.items, ck.matched); /* every item is a manifest entry */
    CU_ASSERT_EQUAL(c.bad_offset + c.bad_magic + c.bad_crc + c.bad_link, 0);
    CU_ASSERT_EQUAL(c.clean, 0);
    CU_ASSERT_EQUAL(w.bad_crc + w.outside, 0);
    free(w.v);
}

/* A writer died inside a split (the store's own crash point): the item being moved is in
 * both buckets, and is reported once. */
static void test_shm_v1_split_fixture_exact(void)
{
    struct walk w;
    struct kv_shm_v1_counts c;
    struct check ck;
    CU_ASSERT_EQUAL_FATAL(run(&split_seg, &w, &c), 0);
    check_manifest(&w, "v1-split", &ck);
    printf("\n    split: %" PRIu64 " items, manifest %zu keys (%zu exact); bad "
           "offset/magic/crc/link %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64
           ", duplicates %" PRIu64 ", last version %" PRIu64 "\n",
           c.items, ck.keys, ck.matched, c.bad_offset, c.bad_magic, c.bad_crc, c.bad_link,
           c.duplicates, c.last_version);
    CU_ASSERT(ck.keys > 1000);
    CU_ASSERT_EQUAL(ck.matched, ck.keys);
    CU_ASSERT_EQUAL(c.items, ck.keys);
    CU_ASSERT_EQUAL(c.duplicates, 1);
    CU_ASSERT_EQUAL(c.bad_offset + c.bad_magic + c.bad_crc + c.bad_link, 0);
    CU_ASSERT_EQUAL(c.clean, 0);
    CU_ASSERT_EQUAL(c.last_version, ck.max_version); /* the write that died included */
    CU_ASSERT_EQUAL(w.bad_crc + w.outside, 0);
    free(w.v);
}

static void test_shm_v1_stop_early(void)
{
    struct walk w;
    memset(&w, 0, sizeof(w));
    w.s = &clean_seg;
    w.stop_after = 10;
    struct kv_shm_v1_counts c;
    CU_ASSERT_EQUAL(kv_shm_v1_read(clean_seg.base, clean_seg.size, collect, &w, &c), 1);
    CU_ASSERT_EQUAL(w.n, 10);
    CU_ASSERT_EQUAL(c.items, 10);
    free(w.v);
}

/* Bucket lines of the segment: (offset of) every line of every page the directory names. */
static size_t bucket_lines(const struct seg *s, uint64_t *out, size_t cap)
{
    uint64_t dir_off = hdr_u64(s, V1_HDR_DIR), data_off = hdr_u64(s, V1_HDR_DIR + 8);
    uint64_t n_pages = hdr_u64(s, V1_HDR_DIR + 16), n_dir = hdr_u64(s, V1_HDR_DIR + 24);
    size_t n = 0;
    for (uint64_t i = 0; i < n_dir; i++) {
        uint64_t e = hdr_u64(s, dir_off + 8 * i), pi = (e & 0xFFFFFFFFu) - 1;
        if (!e || pi >= n_pages)
            continue;
        for (unsigned b = 0; b < V1_PAGE / V1_LINE && n < cap; b++)
            out[n++] = data_off + (pi << 16) + b * V1_LINE;
    }
    return n;
}

/* A page of the data area that no reported item or line uses: all zero in the fixture. */
static uint64_t zero_page(const struct seg *s)
{
    uint64_t data_off = hdr_u64(s, V1_HDR_DIR + 8), n_pages = hdr_u64(s, V1_HDR_DIR + 16);
    for (uint64_t pi = n_pages; pi-- > 0;) {
        const uint8_t *p = s->base + data_off + (pi << 16);
        size_t i = 0;
        while (i < V1_PAGE && !p[i])
            i++;
        if (i == V1_PAGE)
            return data_off + (pi << 16);
    }
    return 0;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t link_word(uint64_t off)
{
    return off | ((mix64(off ^ 0x11AEull) >> 48) << 48);
}

static uint64_t *slot(struct seg *s, uint64_t line, int i)
{
    return (uint64_t *)(s->base + line + 8 * (unsigned)i);
}

static uint64_t lines[1 << 16];

/* A killed split leaves one item in two buckets: reported once. */
static void test_shm_v1_split_duplicate_once(void)
{
    struct seg *s = &clean_seg;
    size_t n = bucket_lines(s, lines, sizeof(lines) / 8);
    CU_ASSERT_FATAL(n >= 1024);
    uint64_t *from = NULL, *to = NULL;
    for (size_t i = 0; i < n && (!from || !to); i++) {
        if (!from && *slot(s, lines[i], 0))
            from = slot(s, lines[i], 0);
        else if (from && !to && !*slot(s, lines[i], 6))
            to = slot(s, lines[i], 6);
    }
    CU_ASSERT_FATAL(from && to);
    *to = *from;
    struct walk w;
    struct kv_shm_v1_counts c;
    CU_ASSERT_EQUAL(run(s, &w, &c), 0);
    CU_ASSERT_EQUAL(c.duplicates, 1);
    CU_ASSERT_EQUAL(c.bad_offset + c.bad_magic + c.bad_crc + c.bad_link, 0);
    struct check ck;
    check_manifest(&w, "v1-clean", &ck);
    CU_ASSERT_EQUAL(ck.matched, ck.keys);
    free(w.v);
    seg_restore(s);
}

/* Two sound items of one key (only damage makes that): both reported; the higher version
 * is the one a caller keeps. */
static void test_shm_v1_same_key_both_reported(void)
{
    struct seg *s = &clean_seg;
    struct walk w;
    CU_ASSERT_EQUAL_FATAL(run(s, &w, NULL), 0);
    size_t cnt, at = find(&w, "small:1", &cnt);
    CU_ASSERT_FATAL(cnt == 1);
    struct got old = w.v[at];
    free(w.v);
    uint64_t page = zero_page(s);
    CU_ASSERT_FATAL(page != 0);
    /* a copy of the item at the start of a free page, one version newer */
    size_t isz = V1_ITEM_HDR + old.klen + old.vlen;
    memcpy(s->base + page, s->base + old.off, isz);
    uint64_t ver = old.version + 1000000;
    memcpy(s->base + page + 16, &ver, 8);
    uint32_t crc = kv_shm_crc32c(0, s->base + page + 8, isz - 8);
    memcpy(s->base + page, &crc, 4);
    size_t n = bucket_lines(s, lines, sizeof(lines) / 8);
    uint64_t cls = s->base[old.off + 12];
    for (size_t i = 0; i < n; i++) {
        if (!*slot(s, lines[i], 5)) {
            *slot(s, lines[i], 5) = (page >> 3) | (cls << 40);
            break;
        }
    }
    struct kv_shm_v1_counts c;
    CU_ASSERT_EQUAL(run(s, &w, &c), 0);
    at = find(&w, "small:1", &cnt);
    CU_ASSERT_EQUAL(cnt, 2);
    if (cnt == 2) { /* sorted by version */
        CU_ASSERT_EQUAL(w.v[at].version, old.version);
        CU_ASSERT_EQUAL(w.v[at + 1].version, ver);
        CU_ASSERT(w.v[at + 1].vlen == old.vlen && !memcmp(w.v[at + 1].val, old.val, old.vlen));
    }
    CU_ASSERT_EQUAL(c.bad_offset + c.bad_magic + c.bad_crc + c.bad_link + c.duplicates, 0);
    free(w.v);
    seg_restore(s);
}

/* Overflow chains that loop, or link into a bucket page, are cut where they do. */
static void test_shm_v1_chain_cycles_cut(void)
{
    struct seg *s = &clean_seg;
    size_t n = bucket_lines(s, lines, sizeof(lines) / 8);
    uint64_t page = zero_page(s);
    CU_ASSERT_FATAL(page != 0 && n >= 1024);
    /* bucket A -> L1 -> L2 -> L1 (cycle); bucket B -> L2 (shared); bucket C -> bucket A */
    uint64_t l1 = page, l2 = page + V1_LINE, a = 0, b = 0, c3 = 0;
    for (size_t i = 0; i < n && !c3; i++) {
        if (*slot(s, lines[i], V1_SLOTS))
            continue;
        if (!a)
            a = lines[i];
        else if (!b)
            b = lines[i];
        else
            c3 = lines[i];
    }
    struct walk w;
    CU_ASSERT_EQUAL_FATAL(run(s, &w, NULL), 0);
    size_t cnt, at = find(&w, "class:200", &cnt);
    CU_ASSERT_FATAL(cnt == 1);
    uint64_t moved = w.v[at].off;
    free(w.v);
    /* the item of class:200 moves from its bucket to L2 */
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < V1_SLOTS; k++)
            if (*slot(s, lines[i], k) &&
                ((*slot(s, lines[i], k) & 0xFFFFFFFFFFull) << 3) == moved) {
                *slot(s, l2, 3) = *slot(s, lines[i], k);
                *slot(s, lines[i], k) = 0;
            }
    *slot(s, a, V1_SLOTS) = link_word(l1);
    *slot(s, l1, V1_SLOTS) = link_word(l2);
    *slot(s, l2, V1_SLOTS) = link_word(l1);
    *slot(s, b, V1_SLOTS) = link_word(l2);
    *slot(s, c3, V1_SLOTS) = link_word(a);
    struct kv_shm_v1_counts c;
    CU_ASSERT_EQUAL(run(s, &w, &c), 0);
    CU_ASSERT_EQUAL(c.bad_link, 3); /* L2 -> L1, B -> L2, C -> a bucket page */
    CU_ASSERT_EQUAL(c.bad_offset + c.bad_magic + c.bad_crc + c.duplicates, 0);
    struct check ck;
    check_manifest(&w, "v1-clean", &ck); /* class:200 found through the chain */
    CU_ASSERT_EQUAL(ck.matched, ck.keys);
    free(w.v);
    seg_restore(s);
}

/* A lost directory entry: the page map still knows the bucket page, nothing is lost; a
 * damaged index state word costs nothing either. */
static void test_shm_v1_lost_directory_entry(void)
{
    struct seg *s = &clean_seg;
    uint64_t dir_off = hdr_u64(s, V1_HDR_DIR);
    for (int variant = 0; variant < 3; variant++) {
        if (variant == 0)
            memset(s->base + dir_off, 0, 8); /* zeroed */
        else if (variant == 1)
            s->base[dir_off + 5] ^= 0x40; /* check bits no longer match */
        else
            s->base[136 + 7] ^= 0x10; /* the index state word: not needed, only a hint */
        struct walk w;
        struct kv_shm_v1_counts c;
        CU_ASSERT_EQUAL(run(s, &w, &c), 0);
        CU_ASSERT_EQUAL(c.bad_link, variant < 2);
        struct check ck;
        check_manifest(&w, "v1-clean", &ck);
        CU_ASSERT_EQUAL(ck.matched, ck.keys);
        CU_ASSERT_EQUAL(c.items, ck.keys);
        free(w.v);
        seg_restore(s);
    }
}

static uint64_t rng_state = 0x5EED0001ull;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* One random damage to s, of kind k. offs: offsets of the items of the pristine walk. */
static void damage(struct seg *s, unsigned k, const struct walk *pw)
{
    uint64_t data_off = hdr_u64(s, V1_HDR_DIR + 8), size = s->size;
    size_t nl = bucket_lines(s, lines, sizeof(lines) / 8);
    switch (k) {
    case 0: /* bytes flipped anywhere but the header page */
        for (int i = 0, n = 1 + (int)(rnd() % 64); i < n; i++)
            s->base[4096 + rnd() % (size - 4096)] ^= (uint8_t)(1 + rnd() % 255);
        break;
    case 1: /* bytes flipped in the bucket pages: slot words and links */
        for (int i = 0, n = 1 + (int)(rnd() % 32); i < n && nl; i++)
            s->base[lines[rnd() % nl] + rnd() % V1_LINE] ^= (uint8_t)(1 + rnd() % 255);
        break;
    case 2: /* a 4 KiB page zeroed */
        memset(s->base + 4096 * (1 + rnd() % (size / 4096 - 1)), 0, 4096);
        break;
    case 3: /* a 64 KiB data page filled with random bytes */
    {
        uint8_t *p = s->base + data_off + V1_PAGE * (rnd() % ((size - data_off) / V1_PAGE));
        for (unsigned i = 0; i < V1_PAGE; i += 8) {
            uint64_t r = rnd();
            memcpy(p + i, &r, 8);
        }
        break;
    }
    case 4: /* slot words aimed at random 8-aligned offsets, or at real items' starts and
             * into them (killed splits, damaged words) */
        for (int i = 0, n = 1 + (int)(rnd() % 16); i < n && nl; i++) {
            uint64_t off = pw->n && rnd() % 2 ? pw->v[rnd() % pw->n].off + 8 * (rnd() % 3 == 0)
                                              : (data_off + rnd() % (size - data_off)) & ~7ull;
            *slot(s, lines[rnd() % nl], (int)(rnd() % V1_SLOTS)) =
                (off >> 3) | ((rnd() % 32) << 40) | (rnd() << 48);
        }
        break;
    case 5: /* items' headers damaged: lengths, class, magic */
        for (int i = 0, n = 1 + (int)(rnd() % 8); i < n && pw->n; i++) {
            uint8_t *it = s->base + pw->v[rnd() % pw->n].off;
            it[8 + rnd() % 32] ^= (uint8_t)(1 + rnd() % 255);
        }
        break;
    case 6: /* links aimed anywhere, with valid check bits */
        for (int i = 0, n = 1 + (int)(rnd() % 8); i < n && nl; i++) {
            uint64_t off = rnd() % 3 == 0 ? lines[rnd() % nl]
                                          : (data_off + rnd() % (size - data_off)) & ~63ull;
            *slot(s, lines[rnd() % nl], V1_SLOTS) = link_word(off);
        }
        break;
    default: /* the page map, the directory, the header's unchecked part (state word...) */
    {
        uint64_t pmap = hdr_u64(s, 56), dir = hdr_u64(s, V1_HDR_DIR);
        for (int i = 0, n = 1 + (int)(rnd() % 16); i < n; i++) {
            unsigned r = (unsigned)(rnd() % 3);
            uint64_t at = r == 0   ? pmap + rnd() % 256
                          : r == 1 ? dir + rnd() % 256
                                   : 104 + rnd() % 56;
            s->base[at] ^= (uint8_t)(1 + rnd() % 255);
        }
        break;
    }
    }
}

static int off_cmp(const void *a, const void *b)
{
    const struct got *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Random damage, many times: no crash, and what is reported is sound and never overlaps. */
static void damage_rounds(struct seg *s, const char *name, int rounds)
{
    struct walk pw, w;
    CU_ASSERT_EQUAL_FATAL(run(s, &pw, NULL), 0);
    qsort(pw.v, pw.n, sizeof(*pw.v), off_cmp);
    uint64_t reported = 0, from_pristine = 0, lost = 0, refused = 0, stale = 0;
    int fails = 0;
    for (int r = 0; r < rounds; r++) {
        unsigned kinds = 1 + (unsigned)(rnd() % 3);
        for (unsigned k = 0; k < kinds; k++)
            damage(s, (unsigned)(rnd() % 8), &pw);
        struct kv_shm_v1_counts c;
        int rc = run(s, &w, &c);
        if (rc == KV_EINVAL) { /* header hit: refused as a whole */
            free(w.v);
            seg_restore(s);
            continue;
        }
        int bad = rc != 0 || w.bad_crc || w.outside || c.items != w.n;
        uint64_t kept = 0;
        qsort(w.v, w.n, sizeof(*w.v), off_cmp);
        for (size_t i = 0; i < w.n; i++) {
            const struct got *g = &w.v[i];
            size_t isz = V1_ITEM_HDR + g->klen + g->vlen;
            if (i + 1 < w.n && g->off + isz > w.v[i + 1].off)
                bad = 1; /* overlap, or the same item twice */
            /* an item where the pristine segment had one is byte for byte that item */
            struct got *p = bsearch(g, pw.v, pw.n, sizeof(*pw.v), off_cmp);
            if (p) {
                from_pristine++;
                kept++;
                if (memcmp(s->pristine + g->off + 8, g->key - V1_ITEM_HDR + 8, isz - 8) != 0)
                    bad = 1;
            } else {
                stale++; /* a sound item the index did not reach before (a spare chunk) */
            }
        }
        reported += w.n;
        lost += pw.n - kept;
        refused += c.bad_offset + c.bad_magic + c.bad_crc + c.bad_link;
        if (bad && fails++ < 5)
            fprintf(stderr, "  %s round %d: rc %d, %" PRIu64 " crc-bad, %" PRIu64 " outside\n",
                    name, r, rc, w.bad_crc, w.outside);
        CU_ASSERT(!bad);
        free(w.v);
        seg_restore(s);
    }
    printf("\n    %s: %d damage rounds, %" PRIu64 " items reported (%" PRIu64 " at their "
           "pristine offsets and intact, %" PRIu64 " other sound items), %" PRIu64
           " fewer than pristine, %" PRIu64 " refusals counted\n",
           name, rounds, reported, from_pristine, stale, lost, refused);
    free(pw.v);
}

static void test_shm_v1_random_damage_clean(void)
{
    damage_rounds(&clean_seg, "clean", 600);
}

static void test_shm_v1_random_damage_crash(void)
{
    damage_rounds(&crash_seg, "crash", 600);
    damage_rounds(&split_seg, "split", 300);
}

/* ---- the upgrade: a layout-1 segment opened by this release --------------------------- */

/* Writes the fixture's pristine bytes to a new file; returns its path in out. */
static void seg_to_file(const struct seg *sg, char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/kv-upgrade-%d-XXXXXX", (int)getpid());
    int fd = mkstemp(out);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, sg->pristine, sg->size) == (ssize_t)sg->size);
    close(fd);
}

static void *up_alloc(void *ctx, size_t n)
{
    uint8_t **p = ctx;
    *p = malloc(n ? n : 1);
    return *p;
}

/* Every key the reader finds in the fixture (its newest version: the reader's own tests
 * tie those to the manifest) is in the upgraded store with the same value, version and
 * expiry; the expired ones are gone. */
static void check_upgraded(struct kv_shm_store *st, const struct walk *w, int64_t now)
{
    int wrong = 0, live = 0;
    for (size_t i = 0; i < w->n; i++) {
        const struct got *g = &w->v[i];
        if (i + 1 < w->n && w->v[i + 1].klen == g->klen &&
            memcmp(w->v[i + 1].key, g->key, g->klen) == 0)
            continue; /* an older copy of the same key: the newest one counts */
        uint8_t *val = NULL;
        size_t vlen = 0;
        uint64_t ver = 0;
        int rc = kv_shm_get(st, g->key, g->klen, up_alloc, &val, &vlen, &ver);
        if (g->expire_ms && g->expire_ms <= now) {
            wrong += rc != KV_ENOTFOUND;
        } else {
            live++;
            wrong += rc != 0 || vlen != g->vlen || ver != g->version ||
                     (vlen && memcmp(val, g->val, vlen) != 0);
            int64_t ttl = 0;
            kv_shm_ttl(st, g->key, g->klen, &ttl);
            if (g->expire_ms == 0)
                wrong += ttl != -1;
            else if (g->expire_ms - now < (int64_t)1 << 40) /* saturated ones never expire */
                wrong += ttl > g->expire_ms - now + 10 || ttl < g->expire_ms - now - 2000;
        }
        free(val);
    }
    CU_ASSERT(live > 100);
    CU_ASSERT_EQUAL(wrong, 0);
    /* the version counter continues above every copied version */
    uint64_t nv = 0;
    CU_ASSERT_EQUAL(kv_shm_set(st, "after-upgrade", 13, "x", 1, NULL, &nv), 0);
    for (size_t i = 0; i < w->n; i++)
        CU_ASSERT(nv > w->v[i].version);
}

static void upgrade_one(struct seg *sg)
{
    struct walk w;
    struct kv_shm_v1_counts c;
    CU_ASSERT_EQUAL_FATAL(run(sg, &w, &c), 0);
    struct kv_config cfg;
    kv_config_defaults(&cfg);
    seg_to_file(sg, cfg.data_file, sizeof(cfg.data_file));
    cfg.memory = sg->size;
    /* killed mid-copy: the old segment is untouched and the next start upgrades it */
    pid_t pid = fork();
    if (pid == 0) {
        struct kv_shm_open_opts o = {.crash_at = 100, .crash_site = KV_SHM_CRASH_UPGRADE};
        struct kv_shm_store *st;
        _exit(kv_shm_store_open_ex(&cfg, &o, NULL, 0, &st) ? 1 : 0);
    }
    int status;
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 77);
    int fd = open(cfg.data_file, O_RDONLY);
    uint8_t *m = mmap(NULL, sg->size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    CU_ASSERT_FATAL(m != MAP_FAILED);
    CU_ASSERT(kv_shm_v1_probe(m, sg->size));
    CU_ASSERT_EQUAL(memcmp(m, sg->pristine, sg->size), 0);
    munmap(m, sg->size);

    struct kv_shm_store *st = NULL;
    char err[2048];
    int rc = kv_shm_store_open(&cfg, err, sizeof(err), &st);
    if (rc)
        fprintf(stderr, "upgrade: %d %s\n", rc, err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "upgraded to layout"));
    int64_t now = (int64_t)time(NULL) * 1000;
    check_upgraded(st, &w, now);
    kv_shm_store_close(st);
    /* the second open is an ordinary one of the new layout */
    CU_ASSERT_EQUAL_FATAL(kv_shm_store_open(&cfg, err, sizeof(err), &st), 0);
    CU_ASSERT_PTR_NULL(strstr(err, "upgraded"));
    kv_shm_del(st, "after-upgrade", 13);
    check_upgraded(st, &w, now);
    kv_shm_store_close(st);
    char up[PATH_MAX + 16];
    snprintf(up, sizeof(up), "%s.upgrade", cfg.data_file);
    CU_ASSERT_EQUAL(access(up, F_OK), -1); /* the copy was renamed over the old file */
    unlink(cfg.data_file);
    free(w.v);
}

/* Issue 13 item 6, kept for every later layout change: segments written by the release
 * before the change open with every key, value, version and expiry. */
static void test_shm_v1_upgrade_clean(void)
{
    upgrade_one(&clean_seg);
}

static void test_shm_v1_upgrade_crash(void)
{
    upgrade_one(&crash_seg);
}

static void test_shm_v1_upgrade_split(void)
{
    upgrade_one(&split_seg);
}

/* A layout-1 segment in /dev/shm (a POSIX shm object, not a file) upgrades the same way. */
static void test_shm_v1_upgrade_shm_object(void)
{
    struct kv_config cfg;
    kv_config_defaults(&cfg);
    snprintf(cfg.shm_name, sizeof(cfg.shm_name), "/kv-v1-up-%d", (int)getpid());
    kv_shm_store_unlink(&cfg);
    int fd = shm_open(cfg.shm_name, O_RDWR | O_CREAT | O_EXCL, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, clean_seg.pristine, clean_seg.size) == (ssize_t)clean_seg.size);
    close(fd);
    cfg.memory = clean_seg.size;
    struct kv_shm_store *st = NULL;
    char err[2048];
    CU_ASSERT_EQUAL_FATAL(kv_shm_store_open(&cfg, err, sizeof(err), &st), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "upgraded to layout"));
    struct walk w;
    struct kv_shm_v1_counts c;
    CU_ASSERT_EQUAL_FATAL(run(&clean_seg, &w, &c), 0);
    check_upgraded(st, &w, (int64_t)time(NULL) * 1000);
    kv_shm_store_close(st);
    kv_shm_store_unlink(&cfg);
    free(w.v);
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_shm_v1_probe", test_shm_v1_probe},
        {"test_shm_v1_clean_fixture_exact", test_shm_v1_clean_fixture_exact},
        {"test_shm_v1_crash_fixture_exact", test_shm_v1_crash_fixture_exact},
        {"test_shm_v1_split_fixture_exact", test_shm_v1_split_fixture_exact},
        {"test_shm_v1_stop_early", test_shm_v1_stop_early},
        {"test_shm_v1_split_duplicate_once", test_shm_v1_split_duplicate_once},
        {"test_shm_v1_same_key_both_reported", test_shm_v1_same_key_both_reported},
        {"test_shm_v1_chain_cycles_cut", test_shm_v1_chain_cycles_cut},
        {"test_shm_v1_lost_directory_entry", test_shm_v1_lost_directory_entry},
        {"test_shm_v1_random_damage_clean", test_shm_v1_random_damage_clean},
        {"test_shm_v1_random_damage_crash", test_shm_v1_random_damage_crash},
        {"test_shm_v1_upgrade_clean", test_shm_v1_upgrade_clean},
        {"test_shm_v1_upgrade_crash", test_shm_v1_upgrade_crash},
        {"test_shm_v1_upgrade_split", test_shm_v1_upgrade_split},
        {"test_shm_v1_upgrade_shm_object", test_shm_v1_upgrade_shm_object},
    };
    return kv_test_run_suite("shm_v1", suite_init, suite_clean, tests,
                             sizeof(tests) / sizeof(tests[0]));
}
