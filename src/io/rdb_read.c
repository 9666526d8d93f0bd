/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/rdb_read.c -- the RDB reader (see rdb_read.h).
 *
 * The format (Redis's rdb.h / rdb.c): "REDIS" and a 4-digit version, then
 * opcodes (0xFA aux field, 0xFE select db, 0xFB resize db, 0xFD/0xFC expiry
 * of the next key in s/ms, 0xF8/0xF9 LRU/LFU hints, 0xF7 module aux, 0xF5
 * function library, 0xF4 slot info, 0xFF end + CRC64) and key records: a
 * type byte, the key, the value. Lengths are 6 bits, 14 bits, or 0x80/0x81
 * + 32/64 bits big-endian; a length byte 11xxxxxx marks a special string:
 * an 8/16/32-bit integer or an LZF-compressed block. Every read is
 * bounds-checked. */
#include "rdb_read.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "kv_err.h"

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

/* ---- reading ---------------------------------------------------------------- */
struct rd {
    const uint8_t *p; /* borrowed: the mapped file */
    size_t len, off;
    const char *why;  /* first error, static text */
    uint8_t *buf;     /* owned (mod): a decoded string */
    size_t bcap;
    enum kv_mod mod;
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
        b = kv_mem_realloc(r->mod, r->buf, ncap);
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
int kv_rdb_read(const void *buf, size_t len, enum kv_mod mod, kv_rdb_string_fn fn, void *ctx,
                struct kv_rdb_read_counts *cnt, char *err, size_t errcap)
{
    struct rd rd = {.p = buf, .len = len, .mod = mod}, *r = &rd;
    int64_t expire = -1;
    uint64_t db = 0;
    unsigned version;
    size_t eof_at;
    int rc = KV_ECORRUPT;

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
                    goto out;
                }
            }
            rc = 0;
            goto out;
        default:
            break;
        }
        /* a key record */
        {
            struct kv_rdb_string s = {.expire_ms = expire, .db = db};
            uint8_t *kcopy = NULL;

            expire = -1;
            if (type != T_STRING) {
                skip_str(r);
                skip_value(r, type);
                if (!r->why)
                    cnt->other_types++;
                if (r->why && strcmp(r->why, "unknown value type") == 0) {
                    snprintf(err, errcap, "unknown value type %d at offset %zu", type, at);
                    goto out;
                }
                continue;
            }
            s.key = r_str(r, &s.klen, 1);
            if (!s.key)
                break;
            if (s.key == r->buf) { /* the value's decoding reuses buf: keep the key */
                kcopy = kv_mem_alloc(mod, s.klen ? s.klen : 1);
                if (!kcopy) {
                    snprintf(err, errcap, "out of memory");
                    rc = KV_ENOMEM;
                    goto out;
                }
                memcpy(kcopy, s.key, s.klen);
                s.key = kcopy;
            }
            s.val = r_str(r, &s.vlen, 1);
            if (s.val) {
                cnt->strings++;
                if (fn)
                    rc = fn(ctx, &s);
            }
            kv_mem_free(mod, kcopy);
            if (!s.val)
                break;
            if (fn && rc != 0) {
                if (!err[0])
                    snprintf(err, errcap, "key %llu: %s", (unsigned long long)cnt->strings,
                             kv_strerror(rc));
                goto out;
            }
            rc = KV_ECORRUPT;
        }
    }
bad:
    snprintf(err, errcap, "%s (at offset %zu of %zu)", r->why ? r->why : "bad record", r->off,
             r->len);
    rc = KV_ECORRUPT;
out:
    kv_mem_free(mod, r->buf);
    return rc;
}

