/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/rdb.c -- Redis RDB files in and out of the store (see rdb.h).
 *
 * Writing is here: "REDIS0009", aux fields, SELECTDB 0, then per key an
 * optional 0xFC expiry (absolute ms, little-endian), type 0, the key and
 * the value as length-prefixed strings (6/14/32/64-bit lengths, never
 * compressed), then 0xFF and the CRC64 of everything before it. Reading
 * is the codec of src/io/rdb_read.c, driven here with the store. */
#include "rdb.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kv_err.h"
#include "kv_mem.h"
#include "kv_shm.h"
#include "rdb_read.h"

#define RDB_WRITE_VERSION 9

enum { OP_AUX = 0xFA, OP_EXPIRETIME_MS = 0xFC, OP_SELECTDB = 0xFE, OP_EOF = 0xFF };
enum { T_STRING = 0 };

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- writing ---------------------------------------------------------------- */
struct wr {
    FILE *f;
    uint64_t crc;
    uint64_t bytes;
    int failed; /* errno of the first failed write */
};

static void w_bytes(struct wr *w, const void *p, size_t n)
{
    if (w->failed || n == 0)
        return;
    w->crc = kv_rdb_crc64(w->crc, p, n);
    w->bytes += n;
    if (fwrite(p, 1, n, w->f) != n)
        w->failed = errno ? errno : EIO;
}

static void w_u8(struct wr *w, uint8_t b)
{
    w_bytes(w, &b, 1);
}

static void w_len(struct wr *w, uint64_t len)
{
    uint8_t b[9];

    if (len < 64) {
        w_u8(w, (uint8_t)len);
    } else if (len < 16384) {
        b[0] = (uint8_t)(0x40 | (len >> 8));
        b[1] = (uint8_t)len;
        w_bytes(w, b, 2);
    } else if (len <= UINT32_MAX) {
        b[0] = 0x80;
        for (int i = 0; i < 4; i++)
            b[1 + i] = (uint8_t)(len >> (24 - 8 * i));
        w_bytes(w, b, 5);
    } else {
        b[0] = 0x81;
        for (int i = 0; i < 8; i++)
            b[1 + i] = (uint8_t)(len >> (56 - 8 * i));
        w_bytes(w, b, 9);
    }
}

static void w_str(struct wr *w, const void *p, size_t n)
{
    w_len(w, n);
    w_bytes(w, p, n);
}

static void w_aux(struct wr *w, const char *k, const char *v)
{
    w_u8(w, OP_AUX);
    w_str(w, k, strlen(k));
    w_str(w, v, strlen(v));
}

/* The keys already written: a scan may report a key twice (README), and a
 * duplicate key makes redis-server refuse the file. Open addressing over
 * (hash, offset into an arena of the key bytes). */
struct seen_slot {
    uint64_t hash; /* 0 = empty (a real 0 is stored as 1) */
    size_t off;
    size_t len;
};

struct seen {
    struct seen_slot *slots; /* owned (KV_MOD_SERVER) */
    size_t cap, used;
    uint8_t *arena; /* owned (KV_MOD_SERVER) */
    size_t alen, acap;
};

/* 1 when key was seen before, 0 when it is new (and now recorded), or
 * KV_ENOMEM. */
static uint64_t seen_hash(const void *key, size_t klen)
{
    /* FNV-1a, seeded per process: the set only dedupes one save's keys */
    static uint64_t seed;
    const uint8_t *p = key;
    if (!seed)
        seed = 0xcbf29ce484222325ull ^ ((uint64_t)getpid() << 20) ^ (uint64_t)time(NULL);
    uint64_t h = seed;
    for (size_t i = 0; i < klen; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static int seen_check(struct seen *s, const void *key, size_t klen)
{
    uint64_t h = seen_hash(key, klen);
    size_t i;

    if (h == 0)
        h = 1;
    if (s->used * 2 >= s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 4096;
        struct seen_slot *n = kv_mem_calloc(KV_MOD_SERVER, ncap * sizeof(*n));

        if (!n)
            return KV_ENOMEM;
        for (size_t k = 0; k < s->cap; k++) {
            if (!s->slots[k].hash)
                continue;
            for (i = s->slots[k].hash & (ncap - 1); n[i].hash; i = (i + 1) & (ncap - 1)) {
            }
            n[i] = s->slots[k];
        }
        kv_mem_free(KV_MOD_SERVER, s->slots);
        s->slots = n;
        s->cap = ncap;
    }
    for (i = h & (s->cap - 1); s->slots[i].hash; i = (i + 1) & (s->cap - 1))
        if (s->slots[i].hash == h && s->slots[i].len == klen &&
            memcmp(s->arena + s->slots[i].off, key, klen) == 0)
            return 1;
    if (s->alen + klen > s->acap) {
        size_t ncap = s->acap ? s->acap * 2 : 65536;
        uint8_t *a;

        while (ncap < s->alen + klen)
            ncap *= 2;
        a = kv_mem_realloc(KV_MOD_SERVER, s->arena, ncap);
        if (!a)
            return KV_ENOMEM;
        s->arena = a;
        s->acap = ncap;
    }
    memcpy(s->arena + s->alen, key, klen);
    s->slots[i] = (struct seen_slot){h, s->alen, klen};
    s->alen += klen;
    s->used++;
    return 0;
}

struct save_ctx {
    struct kv_shm_store *store;
    unsigned db; /* the database being written */
    struct wr w;
    struct seen seen;
    uint8_t *val; /* owned (KV_MOD_SERVER): the last value read */
    size_t vcap;
    int failed;   /* KV_E* of the first failure */
    uint64_t keys, repeats;
};

static void *val_alloc(void *ctx, size_t len)
{
    struct save_ctx *c = ctx;

    if (len + 1 > c->vcap) {
        size_t ncap = c->vcap ? c->vcap : 4096;
        uint8_t *n;

        while (ncap < len + 1)
            ncap *= 2;
        n = kv_mem_realloc(KV_MOD_SERVER, c->val, ncap);
        if (!n)
            return NULL;
        c->val = n;
        c->vcap = ncap;
    }
    return c->val;
}

/* One key: its TTL, its value, its TTL again. The value is one the key had
 * during the save; when the TTL changed in between (a write raced the
 * read) both are read again, so a value is not paired with another write's
 * expiry (up to 3 tries, then the last pair is kept). */
static void save_key(void *ctx, const void *key, size_t klen)
{
    struct save_ctx *c = ctx;
    int64_t t1 = 0, t2 = 0, at = 0;
    size_t vlen = 0;
    int rc;

    if (c->failed || c->w.failed)
        return;
    rc = seen_check(&c->seen, key, klen);
    if (rc != 0) {
        if (rc < 0)
            c->failed = rc;
        else
            c->repeats++;
        return;
    }
    for (int tries = 0; tries < 3; tries++) {
        int64_t t0 = now_ms();

        if (kv_shm_db_ttl(c->store, c->db, key, klen, &t1) != 0)
            return; /* gone (deleted or expired) since the scan saw it */
        rc = kv_shm_db_get(c->store, c->db, key, klen, val_alloc, c, &vlen, NULL);
        if (rc == KV_ENOTFOUND)
            return;
        if (rc != 0) {
            if (rc == KV_ENOMEM)
                c->failed = rc;
            return; /* KV_ECORRUPT: the store never returns such an item */
        }
        if (kv_shm_db_ttl(c->store, c->db, key, klen, &t2) != 0)
            return;
        at = now_ms();
        if ((t1 < 0) == (t2 < 0) && (t1 < 0 || (t1 >= t2 && t1 - t2 <= at - t0 + 1)))
            break;
    }
    if (t2 >= 0) {
        uint8_t b[9];
        uint64_t when = (uint64_t)(at + t2);

        b[0] = OP_EXPIRETIME_MS;
        for (int i = 0; i < 8; i++)
            b[1 + i] = (uint8_t)(when >> (8 * i));
        w_bytes(&c->w, b, 9);
    }
    w_u8(&c->w, T_STRING);
    w_str(&c->w, key, klen);
    w_str(&c->w, c->val, vlen);
    c->keys++;
}

int kv_rdb_save(struct kv_shm_store *store, const char *path, struct kv_rdb_counts *out,
                char *err, size_t errcap)
{
    return kv_rdb_save_checked(store, path, out, err, errcap, NULL, NULL);
}

int kv_rdb_save_checked(struct kv_shm_store *store, const char *path, struct kv_rdb_counts *out,
                        char *err, size_t errcap, int (*still_ok)(void *ctx), void *ctx)
{
    struct save_ctx c = {.store = store};
    char tmp[PATH_MAX], dir[PATH_MAX], head[16], num[32];
    uint64_t cursor = 0;
    uint8_t tail[9];
    int rc = 0, fd;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp-%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
        snprintf(err, errcap, "path too long: %s", path);
        return KV_EINVAL;
    }
    c.w.f = fopen(tmp, "wbx");
    if (!c.w.f) {
        snprintf(err, errcap, "cannot create %s: %s", tmp, strerror(errno));
        return KV_EIO;
    }
    setvbuf(c.w.f, NULL, _IOFBF, 1 << 20);
    snprintf(head, sizeof(head), "REDIS%04d", RDB_WRITE_VERSION);
    w_bytes(&c.w, head, 9);
    w_aux(&c.w, "libevkv-ver", KV_VERSION);
    w_aux(&c.w, "redis-bits", sizeof(void *) == 8 ? "64" : "32");
    snprintf(num, sizeof(num), "%lld", (long long)time(NULL));
    w_aux(&c.w, "ctime", num);
    /* database 0 always (a store of one database saves as before), then every other
     * non-empty one, each after its SELECTDB */
    for (unsigned db = 0; db < KV_SHM_MAX_DB && rc == 0 && !c.failed && !c.w.failed; db++) {
        uint64_t n = 0;

        if (db && (kv_shm_db_size(store, db, &n) != 0 || n == 0))
            continue;
        c.db = db;
        if (c.seen.slots) /* the dedupe set is per database */
            memset(c.seen.slots, 0, c.seen.cap * sizeof(*c.seen.slots));
        c.seen.used = c.seen.alen = 0;
        w_u8(&c.w, OP_SELECTDB);
        w_len(&c.w, db);
        cursor = 0;
        do {
            rc = kv_shm_db_scan(store, db, cursor, NULL, 0, 1024, save_key, &c, &cursor);
        } while (rc == 0 && cursor != 0 && !c.failed && !c.w.failed);
    }
    if (rc == 0 && c.failed)
        rc = c.failed;
    w_u8(&c.w, OP_EOF);
    {
        uint64_t crc = c.w.crc;

        for (int i = 0; i < 8; i++)
            tail[i] = (uint8_t)(crc >> (8 * i));
        w_bytes(&c.w, tail, 8);
    }
    if (rc == 0 && !c.w.failed && fflush(c.w.f) != 0)
        c.w.failed = errno;
    if (rc == 0 && !c.w.failed && fsync(fileno(c.w.f)) != 0)
        c.w.failed = errno;
    if (fclose(c.w.f) != 0 && !c.w.failed)
        c.w.failed = errno;
    if (rc == 0 && c.w.failed) {
        snprintf(err, errcap, "writing %s: %s", tmp, strerror(c.w.failed));
        rc = KV_EIO;
    } else if (rc != 0) {
        snprintf(err, errcap, "reading the store: %s", kv_strerror(rc));
    }
    if (rc == 0 && still_ok && !still_ok(ctx)) {
        snprintf(err, errcap, "the store changed under the scan (an EXEC ran)");
        rc = KV_EAGAIN;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(err, errcap, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        rc = KV_EIO;
    }
    if (rc != 0) {
        unlink(tmp);
    } else {
        /* the rename itself reaches the disk */
        snprintf(dir, sizeof(dir), "%s", path);
        fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) {
            fsync(fd);
            close(fd);
        }
        if (out) {
            memset(out, 0, sizeof(*out));
            out->strings = c.keys;
            out->repeats = c.repeats;
            out->bytes = c.w.bytes;
            out->version = RDB_WRITE_VERSION;
        }
    }
    kv_mem_free(KV_MOD_SERVER, c.seen.slots);
    kv_mem_free(KV_MOD_SERVER, c.seen.arena);
    kv_mem_free(KV_MOD_SERVER, c.val);
    return rc;
}

/* ---- loading ---------------------------------------------------------------- */
struct load_ctx {
    struct kv_shm_store *store; /* NULL: the checking pass */
    const struct kv_config *cfg;
    struct kv_rdb_counts *cnt;
    int64_t now;
    char *err;
    size_t errcap;
};

static int load_string(void *ctx, const struct kv_rdb_string *s)
{
    struct load_ctx *l = ctx;
    struct kv_shm_set_opts o = {0};
    int rc;

    if (s->db >= l->cfg->databases) { /* a database this server does not have */
        l->cnt->other_dbs++;
        return 0;
    }
    if (s->expire_ms >= 0 && s->expire_ms <= l->now) {
        l->cnt->expired++;
        return 0;
    }
    if (s->klen == 0 || s->klen > l->cfg->max_key) {
        l->cnt->too_large++;
        return 0;
    }
    if (!l->store) {
        l->cnt->strings++;
        return 0;
    }
    o.ttl_ms = s->expire_ms >= 0 ? s->expire_ms - l->now : 0;
    rc = kv_shm_db_set(l->store, (unsigned)s->db, s->key, s->klen, s->val, s->vlen, &o, NULL);
    if (rc == KV_ETOOBIG || rc == KV_EINVAL) {
        l->cnt->too_large++;
        return 0;
    }
    if (rc != 0) {
        snprintf(l->err, l->errcap, "storing key %" PRIu64 ": %s%s", l->cnt->strings + 1,
                 kv_strerror(rc),
                 rc == KV_ENOMEM ? " (the store is full: start with a larger --memory)" : "");
        return rc;
    }
    l->cnt->strings++;
    if (l->cfg->key_load_delay) /* Redis's key-load-delay: a test knob for slow loads */
        usleep(l->cfg->key_load_delay);
    return 0;
}

int kv_rdb_load_mem(struct kv_shm_store *store, const struct kv_config *cfg, const void *buf,
                    size_t len, struct kv_rdb_counts *out, char *err, size_t errcap)
{
    struct kv_rdb_counts cnt = {0};
    struct kv_rdb_read_counts rc_cnt;
    struct load_ctx l = {NULL, cfg, &cnt, now_ms(), err, errcap};
    int rc;

    err[0] = '\0';
    /* first check the whole file and change nothing, then import */
    rc = kv_rdb_read(buf, len, KV_MOD_SERVER, load_string, &l, &rc_cnt, err, errcap);
    if (rc == 0) {
        memset(&cnt, 0, sizeof(cnt));
        l.store = store;
        l.now = now_ms();
        rc = kv_rdb_read(buf, len, KV_MOD_SERVER, load_string, &l, &rc_cnt, err, errcap);
    }
    cnt.other_types = rc_cnt.other_types;
    cnt.functions = rc_cnt.functions;
    cnt.version = rc_cnt.version;
    cnt.bytes = len;
    if (rc == 0 && out)
        *out = cnt;
    return rc;
}

int kv_rdb_load(struct kv_shm_store *store, const struct kv_config *cfg, const char *path,
                struct kv_rdb_counts *out, char *err, size_t errcap)
{
    struct stat st;
    void *map;
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errcap, "cannot open %s: %s", path, strerror(errno));
        return KV_EIO;
    }
    if (fstat(fd, &st) != 0 || st.st_size == 0) {
        snprintf(err, errcap, "%s: %s", path, st.st_size == 0 ? "empty file" : strerror(errno));
        close(fd);
        return KV_EIO;
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        snprintf(err, errcap, "cannot map %s: %s", path, strerror(errno));
        return KV_EIO;
    }
    rc = kv_rdb_load_mem(store, cfg, map, (size_t)st.st_size, out, err, errcap);
    munmap(map, (size_t)st.st_size);
    return rc;
}
