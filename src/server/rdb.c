/* src/server/rdb.c -- Redis RDB files in and out of the store (see rdb.h).
 *
 * The format (Redis's rdb.h / rdb.c): "REDIS" and a 4-digit version, then
 * opcodes (0xFA aux field, 0xFE select db, 0xFB resize db, 0xFD/0xFC expiry
 * of the next key in s/ms, 0xF8/0xF9 LRU/LFU hints, 0xF7 module aux, 0xF5
 * function library, 0xFF end + CRC64) and key records: a type byte, the
 * key, the value. Lengths are 6 bits, 14 bits, or 0x80/0x81 + 32/64 bits
 * big-endian; a length byte 11xxxxxx marks a special string: an 8/16/32-bit
 * integer or an LZF-compressed block. Every read is bounds-checked against
 * the mapped file. */
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

#define RDB_WRITE_VERSION 9
#define RDB_MAX_VERSION 11

enum {
    OP_FUNCTION2 = 0xF5, OP_FUNCTION_PRE_GA = 0xF6, OP_MODULE_AUX = 0xF7, OP_IDLE = 0xF8,
    OP_FREQ = 0xF9, OP_AUX = 0xFA, OP_RESIZEDB = 0xFB, OP_EXPIRETIME_MS = 0xFC,
    OP_EXPIRETIME = 0xFD, OP_SELECTDB = 0xFE, OP_EOF = 0xFF, OP_SLOT_INFO = 0xF4,
};

enum {
    T_STRING = 0, T_LIST = 1, T_SET = 2, T_ZSET = 3, T_HASH = 4, T_ZSET_2 = 5, T_MODULE = 6,
    T_MODULE_2 = 7, T_HASH_ZIPMAP = 9, T_LIST_ZIPLIST = 10, T_SET_INTSET = 11,
    T_ZSET_ZIPLIST = 12, T_HASH_ZIPLIST = 13, T_LIST_QUICKLIST = 14, T_STREAM_LISTPACKS = 15,
    T_HASH_LISTPACK = 16, T_ZSET_LISTPACK = 17, T_LIST_QUICKLIST_2 = 18,
    T_STREAM_LISTPACKS_2 = 19, T_SET_LISTPACK = 20, T_STREAM_LISTPACKS_3 = 21,
};

/* ---- CRC64 (Jones) --------------------------------------------------------- */
static uint64_t crc_table[256];

static void crc_init(void)
{
    for (unsigned i = 0; i < 256; i++) {
        uint64_t c = i;

        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x95ac9329ac4bc9b5ull : c >> 1;
        crc_table[i] = c;
    }
}

uint64_t kv_rdb_crc64(uint64_t crc, const void *buf, size_t len)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    const uint8_t *p = buf;

    pthread_once(&once, crc_init);
    for (size_t i = 0; i < len; i++)
        crc = crc_table[(uint8_t)(crc ^ p[i])] ^ (crc >> 8);
    return crc;
}

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
static int seen_check(struct seen *s, const void *key, size_t klen)
{
    uint64_t h = kv_shm_key_hash(key, klen);
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

        if (kv_shm_ttl(c->store, key, klen, &t1) != 0)
            return; /* gone (deleted or expired) since the scan saw it */
        rc = kv_shm_get(c->store, key, klen, val_alloc, c, &vlen, NULL);
        if (rc == KV_ENOTFOUND)
            return;
        if (rc != 0) {
            if (rc == KV_ENOMEM)
                c->failed = rc;
            return; /* KV_ECORRUPT: the store never returns such an item */
        }
        if (kv_shm_ttl(c->store, key, klen, &t2) != 0)
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
    w_u8(&c.w, OP_SELECTDB);
    w_len(&c.w, 0);
    do {
        rc = kv_shm_scan(store, cursor, NULL, 0, 1024, save_key, &c, &cursor);
    } while (rc == 0 && cursor != 0 && !c.failed && !c.w.failed);
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

/* ---- reading ---------------------------------------------------------------- */
struct rd {
    const uint8_t *p; /* borrowed: the mapped file */
    size_t len, off;
    const char *why;  /* first error, static text */
    uint8_t *buf;     /* owned (KV_MOD_SERVER): a decoded string */
    size_t bcap;
};

#define RD_FAIL(r, text) ((r)->why ? 0 : ((r)->why = (text), 0))

static int need(struct rd *r, size_t n)
{
    if (r->why)
        return 0;
    if (r->len - r->off < n)
        return RD_FAIL(r, "the file ends inside a record (truncated?)");
    return 1;
}

static uint8_t r_u8(struct rd *r)
{
    return need(r, 1) ? r->p[r->off++] : 0;
}

static uint64_t r_le(struct rd *r, int n)
{
    uint64_t v = 0;

    if (!need(r, (size_t)n))
        return 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)r->p[r->off + (size_t)i] << (8 * i);
    r->off += (size_t)n;
    return v;
}

static void r_skip(struct rd *r, uint64_t n)
{
    if (need(r, n))
        r->off += n;
}

/* A length; *special (may be NULL) gets the encoding of a 11xxxxxx byte,
 * -1 for a plain length. */
static uint64_t r_len_enc(struct rd *r, int *special)
{
    uint8_t b = r_u8(r);
    uint64_t v = 0;

    if (special)
        *special = -1;
    switch (b >> 6) {
    case 0: return b & 0x3F;
    case 1: return ((uint64_t)(b & 0x3F) << 8) | r_u8(r);
    case 2:
        if (b != 0x80 && b != 0x81)
            return RD_FAIL(r, "bad length encoding");
        for (int i = 0; i < (b == 0x80 ? 4 : 8); i++)
            v = (v << 8) | r_u8(r);
        return v;
    default:
        if (!special)
            return RD_FAIL(r, "an encoded string where a length belongs");
        *special = b & 0x3F;
        return 0;
    }
}

static uint64_t r_len(struct rd *r)
{
    return r_len_enc(r, NULL);
}

static uint8_t *buf_room(struct rd *r, size_t n)
{
    if (n + 1 > r->bcap) {
        size_t ncap = r->bcap ? r->bcap : 4096;
        uint8_t *b;

        while (ncap < n + 1)
            ncap *= 2;
        b = kv_mem_realloc(KV_MOD_SERVER, r->buf, ncap);
        if (!b) {
            RD_FAIL(r, "out of memory for a string");
            return NULL;
        }
        r->buf = b;
        r->bcap = ncap;
    }
    return r->buf;
}

/* LZF (liblzf's lzf_decompress): literal runs and back references. */
static int lzf_expand(const uint8_t *in, size_t ilen, uint8_t *out, size_t olen)
{
    size_t ip = 0, op = 0;

    while (ip < ilen) {
        unsigned ctrl = in[ip++];

        if (ctrl < 32) {
            size_t n = ctrl + 1;

            if (ip + n > ilen || op + n > olen)
                return -1;
            memcpy(out + op, in + ip, n);
            ip += n;
            op += n;
        } else {
            size_t n = ctrl >> 5, back;

            if (n == 7) {
                if (ip >= ilen)
                    return -1;
                n += in[ip++];
            }
            if (ip >= ilen)
                return -1;
            back = ((size_t)(ctrl & 0x1f) << 8) + in[ip++] + 1;
            n += 2;
            if (back > op || op + n > olen)
                return -1;
            for (size_t i = 0; i < n; i++, op++)
                out[op] = out[op - back];
        }
    }
    return op == olen ? 0 : -1;
}

/* A string: *len and a pointer into the file or r->buf (valid until the
 * next r_str), or NULL on error. With want == 0 it is only skipped. */
static const uint8_t *r_str(struct rd *r, size_t *len, int want)
{
    int special;
    uint64_t n = r_len_enc(r, &special);

    *len = 0;
    if (r->why)
        return NULL;
    if (special < 0) {
        const uint8_t *p;

        if (!need(r, n))
            return NULL;
        p = r->p + r->off;
        r->off += n;
        *len = (size_t)n;
        return p;
    }
    if (special <= 2) { /* an 8/16/32-bit integer, as decimal text */
        int nb = 1 << special;
        uint64_t u = r_le(r, nb);
        int64_t v = nb == 1 ? (int8_t)u : nb == 2 ? (int16_t)u : (int32_t)u;
        uint8_t *b = buf_room(r, 24);

        if (!b || r->why)
            return NULL;
        *len = (size_t)snprintf((char *)b, 24, "%" PRId64, v);
        return b;
    }
    if (special == 3) { /* LZF: compressed length, length, bytes */
        uint64_t clen = r_len(r), ulen = r_len(r);
        const uint8_t *src;
        uint8_t *b;

        if (r->why || !need(r, clen))
            return NULL;
        src = r->p + r->off;
        r->off += clen;
        if (!want) {
            *len = (size_t)ulen;
            return src; /* skipped: not expanded */
        }
        if (ulen > (1ull << 32))
            return RD_FAIL(r, "LZF string too large"), NULL;
        b = buf_room(r, (size_t)ulen);
        if (!b)
            return NULL;
        if (lzf_expand(src, (size_t)clen, b, (size_t)ulen) != 0)
            return RD_FAIL(r, "bad LZF-compressed string"), NULL;
        *len = (size_t)ulen;
        return b;
    }
    RD_FAIL(r, "unknown string encoding");
    return NULL;
}

static void skip_str(struct rd *r)
{
    size_t n;

    r_str(r, &n, 0);
}

/* A count of elements: each must take at least a byte, so a count beyond
 * what is left of the file is an error, not a long loop. */
static uint64_t r_count(struct rd *r)
{
    uint64_t n = r_len(r);

    if (!r->why && n > r->len - r->off)
        return RD_FAIL(r, "element count beyond the end of the file");
    return n;
}

/* Module values (type 7, module aux): opcodes until EOF (0). */
static void skip_module_stream(struct rd *r)
{
    for (int guard = 0; !r->why; guard++) {
        uint64_t op = r_len(r);

        if (op == 0)
            return;
        switch (op) {
        case 1: case 2: r_len(r); break;  /* signed / unsigned integer */
        case 3: r_skip(r, 4); break;       /* float */
        case 4: r_skip(r, 8); break;       /* double */
        case 5: skip_str(r); break;        /* string */
        default: RD_FAIL(r, "bad module value opcode"); return;
        }
    }
}

static void skip_stream(struct rd *r, int type)
{
    uint64_t n = r_count(r);

    for (uint64_t i = 0; i < n && !r->why; i++) {
        skip_str(r); /* node key */
        skip_str(r); /* listpack */
    }
    r_len(r);              /* length */
    r_len(r), r_len(r);    /* last id */
    if (type >= T_STREAM_LISTPACKS_2) {
        r_len(r), r_len(r); /* first id */
        r_len(r), r_len(r); /* max deleted id */
        r_len(r);           /* entries added */
    }
    n = r_count(r); /* consumer groups */
    for (uint64_t g = 0; g < n && !r->why; g++) {
        uint64_t pel, consumers;

        skip_str(r);
        r_len(r), r_len(r); /* last id */
        if (type >= T_STREAM_LISTPACKS_2)
            r_len(r); /* entries read */
        pel = r_count(r);
        for (uint64_t k = 0; k < pel && !r->why; k++) {
            r_skip(r, 16 + 8); /* raw id, delivery time */
            r_len(r);          /* delivery count */
        }
        consumers = r_count(r);
        for (uint64_t k = 0; k < consumers && !r->why; k++) {
            uint64_t cpel;

            skip_str(r);
            r_skip(r, 8); /* seen time */
            if (type >= T_STREAM_LISTPACKS_3)
                r_skip(r, 8); /* active time */
            cpel = r_count(r);
            r_skip(r, cpel * 16);
        }
    }
}

/* Skips a value of a type other than string; 0, or sets r->why. */
static void skip_value(struct rd *r, int type)
{
    uint64_t n;

    switch (type) {
    case T_LIST: case T_SET: case T_LIST_QUICKLIST:
        n = r_count(r);
        for (uint64_t i = 0; i < n && !r->why; i++)
            skip_str(r);
        break;
    case T_HASH:
        n = r_count(r);
        for (uint64_t i = 0; i < n && !r->why; i++) {
            skip_str(r);
            skip_str(r);
        }
        break;
    case T_ZSET:
        n = r_count(r);
        for (uint64_t i = 0; i < n && !r->why; i++) {
            uint8_t dl;

            skip_str(r);
            dl = r_u8(r); /* a double as text; 253-255: nan, +inf, -inf */
            if (dl < 253)
                r_skip(r, dl);
        }
        break;
    case T_ZSET_2:
        n = r_count(r);
        for (uint64_t i = 0; i < n && !r->why; i++) {
            skip_str(r);
            r_skip(r, 8);
        }
        break;
    case T_HASH_ZIPMAP: case T_LIST_ZIPLIST: case T_SET_INTSET: case T_ZSET_ZIPLIST:
    case T_HASH_ZIPLIST: case T_HASH_LISTPACK: case T_ZSET_LISTPACK: case T_SET_LISTPACK:
        skip_str(r);
        break;
    case T_LIST_QUICKLIST_2:
        n = r_count(r);
        for (uint64_t i = 0; i < n && !r->why; i++) {
            r_len(r); /* container */
            skip_str(r);
        }
        break;
    case T_MODULE_2:
        r_len(r); /* module id */
        skip_module_stream(r);
        break;
    case T_STREAM_LISTPACKS: case T_STREAM_LISTPACKS_2: case T_STREAM_LISTPACKS_3:
        skip_stream(r, type);
        break;
    case T_MODULE:
        RD_FAIL(r, "a module value of the old format (type 6) cannot be skipped");
        break;
    default:
        RD_FAIL(r, "unknown value type");
    }
}

/* One pass over the file: checks everything, and with store != NULL
 * imports the string keys of db 0. */
static int load_pass(struct rd *r, struct kv_shm_store *store, const struct kv_config *cfg,
                     struct kv_rdb_counts *cnt, char *err, size_t errcap)
{
    int64_t expire = -1, now = now_ms();
    uint64_t db = 0, other_db = 0;
    unsigned version;
    size_t eof_at;

    r->off = 0;
    r->why = NULL;
    memset(cnt, 0, sizeof(*cnt));
    if (r->len < 9 || memcmp(r->p, "REDIS", 5) != 0 || sscanf((const char *)r->p + 5, "%4u",
                                                                 &version) != 1) {
        snprintf(err, errcap, "not an RDB file (no REDIS header)");
        return KV_ECORRUPT;
    }
    for (int i = 5; i < 9; i++)
        if (r->p[i] < '0' || r->p[i] > '9') {
            snprintf(err, errcap, "not an RDB file (bad version digits)");
            return KV_ECORRUPT;
        }
    if (version < 1 || version > RDB_MAX_VERSION) {
        snprintf(err, errcap, "RDB version %u is not supported (1-%d)", version,
                 RDB_MAX_VERSION);
        return KV_ECORRUPT;
    }
    cnt->version = version;
    cnt->bytes = r->len;
    r->off = 9;
    for (;;) {
        size_t at = r->off;
        int type = r_u8(r);

        if (r->why)
            break;
        switch (type) {
        case OP_AUX: skip_str(r); skip_str(r); continue;
        case OP_RESIZEDB: r_len(r); r_len(r); continue;
        case OP_SLOT_INFO: r_len(r); r_len(r); r_len(r); continue;
        case OP_SELECTDB: db = r_len(r); continue;
        case OP_EXPIRETIME: expire = (int64_t)(r_le(r, 4) * 1000); continue;
        case OP_EXPIRETIME_MS: expire = (int64_t)r_le(r, 8); continue;
        case OP_FREQ: r_u8(r); continue;
        case OP_IDLE: r_len(r); continue;
        case OP_MODULE_AUX:
            r_len(r), r_len(r), r_len(r); /* module id, when opcode, when */
            skip_module_stream(r);
            cnt->functions++;
            continue;
        case OP_FUNCTION2: skip_str(r); cnt->functions++; continue;
        case OP_FUNCTION_PRE_GA:
            RD_FAIL(r, "a function of a pre-release Redis 7.0 (opcode 246)");
            continue;
        case OP_EOF:
            eof_at = r->off;
            if (version >= 5) {
                uint64_t want = r_le(r, 8);

                if (r->why)
                    goto bad;
                if (want != 0 && kv_rdb_crc64(0, r->p, eof_at) != want) {
                    snprintf(err, errcap, "CRC64 mismatch: the file is damaged");
                    return KV_ECORRUPT;
                }
            }
            cnt->other_dbs = other_db;
            return 0;
        default:
            break;
        }
        /* a key record */
        {
            size_t klen, vlen;
            const uint8_t *k;
            uint8_t *kcopy = NULL;
            int64_t when = expire;

            expire = -1;
            if (type != T_STRING) {
                skip_str(r);
                skip_value(r, type);
                if (!r->why)
                    cnt->other_types++;
                if (r->why && strcmp(r->why, "unknown value type") == 0) {
                    snprintf(err, errcap, "unknown value type %d at offset %zu", type, at);
                    return KV_ECORRUPT;
                }
                continue;
            }
            k = r_str(r, &klen, 1);
            if (!k)
                break;
            if (k == r->buf) { /* the value's decoding reuses buf: keep the key */
                kcopy = kv_mem_alloc(KV_MOD_SERVER, klen ? klen : 1);
                if (!kcopy) {
                    snprintf(err, errcap, "out of memory");
                    return KV_ENOMEM;
                }
                memcpy(kcopy, k, klen);
                k = kcopy;
            }
            {
                const uint8_t *v = r_str(r, &vlen, 1);
                int rc = 0;

                if (!v) {
                    kv_mem_free(KV_MOD_SERVER, kcopy);
                    break;
                }
                if (db != 0)
                    other_db++;
                else if (when >= 0 && when <= now)
                    cnt->expired++;
                else if (klen == 0 || klen > cfg->max_key)
                    cnt->too_large++;
                else if (store) {
                    struct kv_shm_set_opts o = {.ttl_ms = when >= 0 ? when - now : 0};

                    rc = kv_shm_set(store, k, klen, v, vlen, &o, NULL);
                    if (rc == KV_ETOOBIG || rc == KV_EINVAL) {
                        cnt->too_large++;
                        rc = 0;
                    } else if (rc == 0) {
                        cnt->strings++;
                    }
                } else {
                    cnt->strings++;
                }
                kv_mem_free(KV_MOD_SERVER, kcopy);
                if (rc != 0) {
                    snprintf(err, errcap, "storing key %" PRIu64 ": %s%s", cnt->strings + 1,
                             kv_strerror(rc),
                             rc == KV_ENOMEM ? " (the store is full: start with a larger "
                                               "--memory)"
                                             : "");
                    return rc;
                }
            }
        }
    }
bad:
    snprintf(err, errcap, "%s (at offset %zu of %zu)", r->why ? r->why : "bad record", r->off,
             r->len);
    return KV_ECORRUPT;
}

int kv_rdb_load_mem(struct kv_shm_store *store, const struct kv_config *cfg, const void *buf,
                    size_t len, struct kv_rdb_counts *out, char *err, size_t errcap)
{
    struct kv_rdb_counts cnt;
    struct rd r = {.p = buf, .len = len};
    int rc = load_pass(&r, NULL, cfg, &cnt, err, errcap); /* check all, change nothing */

    if (rc == 0)
        rc = load_pass(&r, store, cfg, &cnt, err, errcap);
    if (rc == 0 && out)
        *out = cnt;
    kv_mem_free(KV_MOD_SERVER, r.buf);
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
