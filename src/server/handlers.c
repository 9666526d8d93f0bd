/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/handlers.c -- the key-value service: one handler per opcode of
 * PROTOCOL.md, registered with the worker registry, each a thin layer that
 * decodes the protobuf body, calls src/shm and encodes the answer.
 *
 * Single-key requests (GET, SET, EXISTS, INCR, EXPIRE, AUTH) and their small
 * answers are read and written with the in-place wire reader of pb.h: no
 * allocation but the response packet, and GET copies the value straight
 * from the store into the packet. Messages with repeated fields go through
 * protobuf-c with a bounded allocator counted under KV_MOD_PROTO, so a body
 * that does not decode costs nothing and leaks nothing.
 *
 * Every handler runs on a worker thread (or inline in the IO thread with
 * --workers 0) and may run concurrently with any other. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "glob.h"
#include "kv.pb-c.h"
#include "kv_call.h"
#include "kv_err.h"
#include "kv_io.h"
#include "kv_mem.h"
#include "kv_ops.h"
#include "kv_shm.h"
#include "kv_worker.h"
#include "pb.h"
#include "server_int.h"


#define KV_AUTH_MAX_FAILURES 3
#define KV_SCAN_DEFAULT 10
#define KV_SCAN_MAX 1000 /* keys are <= max-key bytes: a page stays a few MiB */

/* ---- answers ------------------------------------------------------------- */
/* Points call->resp at n bytes: the caller's scratch room when it lends
 * enough (no allocation: the common small answer), else a packet. */
static uint8_t *resp_alloc(struct kv_call *call, size_t n)
{
    if (n <= call->scratch_cap) {
        call->resp = call->scratch;
        call->resp_owned = 0;
        return call->resp;
    }
    call->resp = kv_mem_alloc(KV_MOD_PACKET, n);
    call->resp_owned = call->resp != NULL;
    return call->resp;
}

/* Gives back what resp_alloc took, for an answer that changed its mind. */
static void resp_release(struct kv_call *call)
{
    if (call->resp_owned)
        kv_mem_free(KV_MOD_PACKET, call->resp);
    call->resp = NULL;
    call->resp_owned = 0;
}

static void answer_error(struct kv_call *call, uint16_t status, const char *msg)
{
    Kv__Error e = KV__ERROR__INIT;
    size_t n;

    call->status = status;
    call->resp_len = 0;
    if (!msg)
        return;
    e.message = (char *)msg;
    n = kv__error__get_packed_size(&e);
    if (!resp_alloc(call, n))
        return; /* the status alone still answers */
    call->resp_len = (uint32_t)kv__error__pack(&e, call->resp);
}

/* Maps a store code to its status and a message. */
static void answer_store_error(struct kv_call *call, int rc)
{
    switch (rc) {
    case KV_ENOTFOUND: answer_error(call, KV_ST_NOT_FOUND, NULL); break;
    case KV_EEXISTS: answer_error(call, KV_ST_EXISTS, NULL); break;
    case KV_EINVAL: answer_error(call, KV_ST_BAD_REQUEST, "key empty or too long"); break;
    case KV_ENOTNUM:
        answer_error(call, KV_ST_NOT_A_NUMBER, "value is not a 64-bit integer or overflows");
        break;
    case KV_ENOMEM:
        answer_error(call, KV_ST_OUT_OF_MEMORY, "store is full (--eviction none)");
        break;
    case KV_ETOOBIG:
        answer_error(call, KV_ST_OUT_OF_MEMORY, "item larger than the store can ever hold");
        break;
    case KV_ECORRUPT: answer_error(call, KV_ST_INTERNAL, "item failed its checksum"); break;
    default: answer_error(call, KV_ST_INTERNAL, kv_strerror(rc)); break;
    }
}

/* Allocates a response packet of up to cap bytes. */
static uint8_t *packet(struct kv_call *call, size_t cap)
{
    if (!resp_alloc(call, cap)) {
        answer_error(call, KV_ST_INTERNAL, NULL);
        return NULL;
    }
    return call->resp;
}

/* Answers OK with a message of up to two varint fields (0 = omitted). */
static void answer_uints(struct kv_call *call, uint64_t f1, uint64_t f2)
{
    uint8_t *p = packet(call, 24);
    size_t n = 0;

    if (!p)
        return;
    if (f1)
        n += pb_put_uint_field(p + n, 1, f1);
    if (f2)
        n += pb_put_uint_field(p + n, 2, f2);
    call->status = KV_ST_OK;
    call->resp_len = (uint32_t)n;
}

static void answer_packed(struct kv_call *call, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *p = packet(call, n ? n : 1);

    if (!p)
        return;
    call->status = KV_ST_OK;
    call->resp_len = (uint32_t)protobuf_c_message_pack(m, p);
}

/* ---- bounded, counted protobuf-c allocator -------------------------------- */
struct pb_budget {
    size_t left; /* bytes the decode may still allocate */
};

static void *pb_alloc(void *data, size_t size)
{
    struct pb_budget *b = data;

    if (size > b->left)
        return NULL;
    b->left -= size;
    return kv_mem_alloc(KV_MOD_PROTO, size);
}

static void pb_free(void *data, void *p)
{
    kv_mem_free(KV_MOD_PROTO, p);
}

/* Unpacks call->body with a budget proportional to its size (protobuf-c
 * needs a few pointers per repeated element); answers BAD_REQUEST and
 * returns NULL when it does not decode. */
static ProtobufCMessage *unpack(struct kv_call *call, const ProtobufCMessageDescriptor *d,
                                struct pb_budget *b, ProtobufCAllocator *a)
{
    ProtobufCMessage *m;

    b->left = 8 * (size_t)call->body_len + 4096; /* SCAN only: a small body */
    a->alloc = pb_alloc;
    a->free = pb_free;
    a->allocator_data = b;
    m = protobuf_c_message_unpack(d, a, call->body_len, call->body);
    if (!m)
        answer_error(call, KV_ST_BAD_REQUEST, "body does not decode");
    return m;
}

/* ---- single-key request parsing (in place) --------------------------------- */
struct key_req {
    const uint8_t *key, *value;
    size_t klen, vlen;
    uint64_t f3, f7;             /* varint fields 3 and 7 (ttl_ms, cas_version) */
    int f8;                      /* bool: return_old */
    int f9;                      /* bool: keep_ttl */
    uint64_t f2;                 /* varint field 2 (delta, action) */
    int f4, f5, f6;              /* bools: nx, xx, has_cas */
    uint64_t f4v;                /* field 4 as a number (EXPIRE's condition) */
};

/* Reads the fields of a Get/Set/Exists/Incr/Expire/Auth request. Field 1
 * is the key (password for AUTH); field 2 the value (wire type 2, SET) or a
 * varint (wire type 0: INCR's delta, EXPIRE's action), as f2_wire says;
 * fields 3..8 are varints. A field of another wire type is refused, as
 * protobuf-c refuses it. */
static int parse_key_req(const struct kv_call *call, struct key_req *k, uint32_t f2_wire)
{
    struct pb_reader r = {call->body, call->body + call->body_len};
    struct pb_field f;
    int rc;

    memset(k, 0, sizeof(*k));
    k->key = (const uint8_t *)"";
    k->value = (const uint8_t *)"";
    while ((rc = pb_next(&r, &f)) == 1) {
        switch (f.number) {
        case 1:
            if (f.wire != 2)
                return -1;
            k->key = f.data;
            k->klen = f.len;
            break;
        case 2:
            if (f.wire != f2_wire)
                return -1;
            if (f.wire == 2) {
                k->value = f.data;
                k->vlen = f.len;
            } else {
                k->f2 = f.u64;
            }
            break;
        case 3: case 4: case 5: case 6: case 7: case 8: case 9:
            if (f.wire != 0)
                return -1;
            if (f.number == 3)
                k->f3 = f.u64;
            else if (f.number == 7)
                k->f7 = f.u64;
            else if (f.number == 4) {
                k->f4 = f.u64 != 0;
                k->f4v = f.u64;
            }
            else if (f.number == 5)
                k->f5 = f.u64 != 0;
            else if (f.number == 6)
                k->f6 = f.u64 != 0;
            else if (f.number == 8)
                k->f8 = f.u64 != 0;
            else
                k->f9 = f.u64 != 0;
            break;
        default: break; /* unknown fields are skipped, as protobuf does */
        }
    }
    return rc;
}

/* The one key-length rule of every opcode: 1..--max-key bytes. Answers
 * BAD_REQUEST and returns -1 when len breaks it. */
static int check_key_len(struct kv_server *srv, struct kv_call *call, size_t len)
{
    if (len == 0 || len > srv->cfg->max_key) {
        answer_error(call, KV_ST_BAD_REQUEST, "key must be 1..max-key bytes");
        return -1;
    }
    return 0;
}

static int check_key(struct kv_server *srv, struct kv_call *call, const struct key_req *k)
{
    return check_key_len(srv, call, k->klen);
}

/* ---- requests with repeated fields, decoded in place ------------------------
 * DEL and MSET are read field by field from the body (protobuf-c would
 * allocate a copy of every key and value plus a pointer array: ~30x the
 * body for 1-byte keys), twice: every key is checked before any is
 * written. They allocate nothing but MSET's versions (8 bytes a pair). */

/* The next DelRequest key. 1 with *key, 0 at the end, -1 when the body
 * does not decode (as protobuf-c would refuse it). */
static int next_del_key(struct pb_reader *r, struct pb_field *key)
{
    int rc;

    while ((rc = pb_next(r, key)) == 1) {
        if (key->number != 1)
            continue; /* an unknown field: skipped, as protobuf-c does */
        return key->wire == 2 ? 1 : -1;
    }
    return rc;
}

/* The next MSetRequest pair (its last key and value fields win, as in
 * protobuf), or its ttl_ms into *ttl. Returns as next_del_key. */
static int next_mset_pair(struct pb_reader *r, struct pb_field *key, struct pb_field *val,
                          uint64_t *ttl, int *nx)
{
    struct pb_field f, g;
    int rc;

    while ((rc = pb_next(r, &f)) == 1) {
        struct pb_reader sub;

        if (f.number == 2 || f.number == 3) {
            if (f.wire != 0)
                return -1;
            if (f.number == 2)
                *ttl = f.u64;
            else
                *nx = f.u64 != 0; /* only_if_absent: MSETNX */
            continue;
        }
        if (f.number != 1)
            continue;
        if (f.wire != 2)
            return -1;
        memset(key, 0, sizeof(*key));
        memset(val, 0, sizeof(*val));
        sub.p = f.data;
        sub.end = f.data + f.len;
        while ((rc = pb_next(&sub, &g)) == 1) {
            if (g.number != 1 && g.number != 2)
                continue;
            if (g.wire != 2)
                return -1;
            *(g.number == 1 ? key : val) = g;
        }
        return rc < 0 ? -1 : 1;
    }
    return rc;
}

static int parse_and_check(struct kv_server *srv, struct kv_call *call, struct key_req *k,
                           uint32_t f2_wire)
{
    if (parse_key_req(call, k, f2_wire) != 0) {
        answer_error(call, KV_ST_BAD_REQUEST, "body does not decode");
        return -1;
    }
    return check_key(srv, call, k);
}

/* ---- AUTH gate ------------------------------------------------------------- */
static int authed(struct kv_server *srv, struct kv_call *call)
{
    if (srv->cfg->requirepass[0] == '\0')
        return 1;
    if (__atomic_load_n(&call->session->flags, __ATOMIC_ACQUIRE) & KV_SESSION_AUTHED)
        return 1;
    answer_error(call, KV_ST_NOAUTH, "authentication required");
    return 0;
}

/* A failed sync of the data file refuses writes until a sync succeeds (as Redis's
 * MISCONF after an AOF fsync error): what they would acknowledge cannot be made durable. */
static int writable(struct kv_server *srv, struct kv_call *call)
{
    int e = call->writes_ok ? 0 : kv_server_writes_refused(srv);
    char m[200];

    if (!e)
        return 1;
    answer_error(call, KV_ST_DISK_ERROR, kv_server_disk_error(e, m, sizeof(m)));
    return 0;
}

/* Constant-time comparison: the time taken does not tell how much matched. */
static int secret_equal(const uint8_t *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    unsigned diff = (unsigned)(alen ^ blen);

    for (size_t i = 0; i < alen; i++)
        diff |= a[i] ^ (uint8_t)b[blen ? i % blen : 0];
    return diff == 0;
}

static void handle_auth(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct key_req k;

    if (parse_key_req(call, &k, 2) != 0) {
        answer_error(call, KV_ST_BAD_REQUEST, "body does not decode");
        return;
    }
    if (srv->cfg->requirepass[0] == '\0' ||
        secret_equal(k.key, k.klen, srv->cfg->requirepass)) {
        __atomic_fetch_or(&call->session->flags, KV_SESSION_AUTHED, __ATOMIC_RELEASE);
        call->status = KV_ST_OK;
        return;
    }
    kv_mem_stat_add(KV_STAT_AUTH_FAILURES, 1);
    __atomic_fetch_or(&call->session->flags, KV_SESSION_AUTH_FAILED, __ATOMIC_RELEASE);
    if (__atomic_add_fetch(&call->session->auth_failures, 1, __ATOMIC_RELAXED) >=
        KV_AUTH_MAX_FAILURES)
        __atomic_fetch_or(&call->session->flags, KV_SESSION_CLOSE, __ATOMIC_RELEASE);
    answer_error(call, KV_ST_NOAUTH, "wrong password");
}

/* The store hash of k's key: the one prefetch_key noted when it hashed the
 * very same bytes (a body may repeat the key field: the decoder's last one
 * wins, the hint saw the first), else computed now. */
static uint64_t key_hash(const struct kv_server *srv, const struct kv_call *call,
                         const struct key_req *k)
{
    if (call->hint_ptr == (const uint8_t *)k->key && call->hint_len == k->klen)
        return call->hint;
    return kv_shm_key_hash(srv->store, k->key, k->klen);
}

/* ---- opcodes ----------------------------------------------------------------- */
static void handle_ping(void *ctx, struct kv_call *call)
{
    /* echo: the answer points at the request body, which lives in its
     * receive buffer until the answer is written */
    call->status = KV_ST_OK;
    call->resp = (uint8_t *)call->body;
    call->resp_len = call->body_len;
    call->resp_owned = 0;
}

/* GET copies the value straight into the response packet: the store calls
 * get_alloc with the exact length, under its lock. */
struct get_out {
    struct kv_call *call;
    size_t prefix;
};

static void *get_alloc(void *ctx, size_t len)
{
    struct get_out *g = ctx;
    uint8_t *p;

    g->prefix = 1 + pb_varint_len(len);
    p = resp_alloc(g->call, g->prefix + len + 11);
    if (!p)
        return NULL;
    pb_put_len_prefix(p, 1, len);
    return p + g->prefix;
}

static void handle_get(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct get_out g = {.call = call};
    struct key_req k;
    size_t vlen = 0;
    uint64_t version = 0;
    int rc;

    if (!authed(srv, call) || parse_and_check(srv, call, &k, 2) != 0)
        return;
    rc = kv_shm_db_get_h(srv->store, call->db, k.key, k.klen, key_hash(srv, call, &k), get_alloc, &g, &vlen,
                      &version);
    if (rc != 0) {
        resp_release(call);
        answer_store_error(call, rc);
        return;
    }
    call->resp_len = (uint32_t)(g.prefix + vlen + pb_put_uint_field(call->resp + g.prefix + vlen,
                                                                     2, version));
    call->status = KV_ST_OK;
}

static void *old_alloc(void *ctx, size_t len)
{
    uint8_t **p = ctx;

    *p = kv_mem_alloc(KV_MOD_PROTO, len ? len : 1);
    return *p;
}

/* SET that answers the value it replaced (Redis SET ... GET, GETSET): read
 * the old item, then write on condition that it is still the one read (CAS
 * on its version, or only-if-absent), retrying when another writer came in
 * between, so the answer is exactly the value this write replaced. The
 * caller's own conditions are judged against the value read. */
static void set_return_old(struct kv_server *srv, struct kv_call *call, const struct key_req *k,
                           const struct kv_shm_set_opts *user)
{
    for (int attempt = 0; attempt < 1000; attempt++) {
        uint8_t *old = NULL;
        struct kv_shm_set_opts o = *user;
        uint64_t ver = 0, newver = 0;
        size_t olen = 0;
        int rc = kv_shm_db_get(srv->store, call->db, k->key, k->klen, old_alloc, &old, &olen, &ver);
        int had = rc == 0;

        if (rc != 0 && rc != KV_ENOTFOUND) {
            answer_store_error(call, rc);
            return;
        }
        if ((user->flags & KV_SHM_NX) && had)
            rc = KV_EEXISTS;
        else if ((user->flags & (KV_SHM_XX | KV_SHM_CAS)) && !had)
            rc = KV_ENOTFOUND;
        else if ((user->flags & KV_SHM_CAS) && user->cas_version != ver)
            rc = KV_EEXISTS;
        else {
            o.flags = (had ? KV_SHM_CAS : KV_SHM_NX) | (user->flags & KV_SHM_KEEPTTL);
            o.cas_version = ver;
            rc = kv_shm_db_set(srv->store, call->db, k->key, k->klen, k->value, k->vlen, &o, &newver);
            if ((rc == KV_EEXISTS || rc == KV_ENOTFOUND)) {
                kv_mem_free(KV_MOD_PROTO, old);
                continue; /* another writer came in between: read again */
            }
        }
        if (rc != 0 && rc != KV_EEXISTS && rc != KV_ENOTFOUND) {
            kv_mem_free(KV_MOD_PROTO, old);
            answer_store_error(call, rc);
            return;
        }
        /* answer: version (when written), the old value, had_old */
        uint8_t *p = packet(call, 11 + 1 + 10 + olen + 2);
        size_t n = 0;

        if (p) {
            if (rc == 0)
                n += pb_put_uint_field(p + n, 1, newver);
            if (had) {
                n += pb_put_len_prefix(p + n, 2, olen);
                memcpy(p + n, old, olen);
                n += olen;
                n += pb_put_uint_field(p + n, 3, 1);
            }
            call->resp_len = (uint32_t)n;
            call->status = rc == 0 ? KV_ST_OK : rc == KV_EEXISTS ? KV_ST_EXISTS : KV_ST_NOT_FOUND;
        }
        kv_mem_free(KV_MOD_PROTO, old);
        return;
    }
    answer_error(call, KV_ST_BUSY, "too many concurrent writers on the key");
}

static void handle_set(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct kv_shm_set_opts o = {0};
    struct key_req k;
    uint64_t version = 0;
    int rc;

    if (!authed(srv, call) || !writable(srv, call) || parse_and_check(srv, call, &k, 2) != 0)
        return;
    if (k.f4 && (k.f5 || k.f6)) {
        answer_error(call, KV_ST_BAD_REQUEST, "only_if_absent excludes only_if_present and cas");
        return;
    }
    if (k.f3 > (uint64_t)INT64_MAX) {
        answer_error(call, KV_ST_BAD_REQUEST, "ttl_ms out of range");
        return;
    }
    o.ttl_ms = (int64_t)k.f3;
    if (k.f9 && k.f3) {
        answer_error(call, KV_ST_BAD_REQUEST, "keep_ttl excludes ttl_ms");
        return;
    }
    o.flags = (k.f4 ? KV_SHM_NX : 0) | (k.f5 ? KV_SHM_XX : 0) | (k.f6 ? KV_SHM_CAS : 0) |
              (k.f9 ? KV_SHM_KEEPTTL : 0);
    o.cas_version = k.f7;
    if (k.f8) {
        set_return_old(srv, call, &k, &o);
        return;
    }
    rc = kv_shm_db_set_h(srv->store, call->db, k.key, k.klen, key_hash(srv, call, &k), k.value, k.vlen, &o,
                      &version);
    if (rc != 0) {
        answer_store_error(call, rc);
        return;
    }
    answer_uints(call, version, 0);
}

static void handle_exists(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct key_req k;
    int rc;

    if (!authed(srv, call) || parse_and_check(srv, call, &k, 2) != 0)
        return;
    rc = kv_shm_db_exists(srv->store, call->db, k.key, k.klen);
    if (rc != 0 && rc != KV_ENOTFOUND) {
        answer_store_error(call, rc);
        return;
    }
    answer_uints(call, rc == 0, 0);
}

static void handle_incr(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct key_req k;
    int64_t value = 0;
    uint64_t version = 0;
    int rc;

    if (!authed(srv, call) || !writable(srv, call) || parse_and_check(srv, call, &k, 0) != 0)
        return;
    rc = kv_shm_db_incr(srv->store, call->db, k.key, k.klen, pb_zigzag_decode(k.f2), &value, &version);
    if (rc != 0) {
        answer_store_error(call, rc);
        return;
    }
    answer_uints(call, pb_zigzag_encode(value), version);
}

static void expire_if(struct kv_server *srv, struct kv_call *call, const struct key_req *k);

static void handle_expire(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct key_req k;
    int64_t ttl = -1, prev = -1;
    int rc;

    if (!authed(srv, call) || parse_and_check(srv, call, &k, 0) != 0)
        return;
    /* QUERY and IDLE read (TTL, EXPIRETIME, OBJECT IDLETIME): served while writes are not */
    if ((k.f2 == KV__EXPIRE_REQUEST__ACTION__SET || k.f2 == KV__EXPIRE_REQUEST__ACTION__CLEAR) &&
        !writable(srv, call))
        return;
    rc = kv_shm_db_ttl(srv->store, call->db, k.key, k.klen, &prev);
    if (rc != 0) {
        answer_store_error(call, rc);
        return;
    }
    if (k.f2 == KV__EXPIRE_REQUEST__ACTION__SET && k.f4v) {
        expire_if(srv, call, &k);
        return;
    }
    switch (k.f2) {
    case KV__EXPIRE_REQUEST__ACTION__SET:
        if (k.f3 == 0 || k.f3 > (uint64_t)INT64_MAX / 2) {
            answer_error(call, KV_ST_BAD_REQUEST, "ttl_ms must be > 0 (use CLEAR to remove)");
            return;
        }
        rc = kv_shm_db_expire(srv->store, call->db, k.key, k.klen, (int64_t)k.f3);
        break;
    case KV__EXPIRE_REQUEST__ACTION__CLEAR:
        rc = kv_shm_db_expire(srv->store, call->db, k.key, k.klen, -1);
        break;
    case KV__EXPIRE_REQUEST__ACTION__QUERY:
        rc = 0;
        break;
    case KV__EXPIRE_REQUEST__ACTION__IDLE: /* OBJECT IDLETIME: ttl_ms is the idle time */
        rc = kv_shm_db_idle(srv->store, call->db, k.key, k.klen, &ttl);
        if (rc != 0)
            answer_store_error(call, rc);
        else
            answer_uints(call, pb_zigzag_encode(ttl), pb_zigzag_encode(prev));
        return;
    default:
        answer_error(call, KV_ST_BAD_REQUEST, "unknown expire action");
        return;
    }
    if (rc == 0)
        rc = kv_shm_db_ttl(srv->store, call->db, k.key, k.klen, &ttl);
    if (rc != 0) {
        answer_store_error(call, rc);
        return;
    }
    answer_uints(call, pb_zigzag_encode(ttl), pb_zigzag_encode(prev));
}

static void handle_del(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct pb_reader r = {call->body, call->body + call->body_len};
    struct pb_field k;
    uint64_t deleted = 0;
    int rc;

    if (!authed(srv, call) || !writable(srv, call))
        return;
    while ((rc = next_del_key(&r, &k)) == 1)
        if (check_key_len(srv, call, k.len) != 0)
            return;
    if (rc < 0) {
        answer_error(call, KV_ST_BAD_REQUEST, "body does not decode");
        return;
    }
    r.p = call->body;
    int oom = 0;
    while (next_del_key(&r, &k) == 1) {
        rc = kv_shm_db_del(srv->store, call->db, k.data, k.len);
        if (rc == 0)
            deleted++;
        else if (rc == KV_ENOMEM)
            oom = 1; /* inside EXEC: no room for the undo log, the key is still there */
    }
    if (oom) {
        answer_error(call, KV_ST_OUT_OF_MEMORY, "no room for the transaction's undo log");
        return;
    }
    answer_uints(call, deleted, 0);
}

/* MGET answers are encoded straight into the response packet, entry by
 * entry, values copied from the store under its lock: no decode of the
 * request into allocated messages, no per-value buffer, no second pass to
 * pack. The answer never grows past --max-body: a small MGET naming one big
 * key many times must not make the server allocate without bound. */
#define MGET_WINDOW 16 /* keys whose cache misses are overlapped at once */
#define MGET_GAP 5     /* room left for an entry's length prefix */

struct mget_out {
    struct kv_call *call;
    uint8_t *buf;  /* call->scratch or owned (KV_MOD_PACKET) */
    size_t len, cap, limit;
    size_t entry;  /* where the entry being written starts */
    int too_big;   /* the answer would pass limit */
    int oom;
};

/* Room for n more bytes, growing the packet (doubling) up to limit. */
static int mget_room(struct mget_out *o, size_t n)
{
    size_t cap = o->cap;
    uint8_t *nb;

    if (o->len + n <= o->cap)
        return 0;
    if (o->len + n > o->limit) {
        o->too_big = 1;
        return -1;
    }
    while (cap < o->len + n)
        cap = cap && cap * 2 < o->limit ? cap * 2 : o->limit;
    if (o->buf == o->call->scratch) {
        nb = kv_mem_alloc(KV_MOD_PACKET, cap);
        if (nb)
            memcpy(nb, o->buf, o->len);
    } else {
        nb = kv_mem_realloc(KV_MOD_PACKET, o->buf, cap);
    }
    if (!nb) {
        o->oom = 1;
        return -1;
    }
    o->buf = nb;
    o->cap = cap;
    return 0;
}

/* The store's alloc callback (under its lock): lays out the entry up to the
 * value and returns where the value goes. The entry's length prefix is
 * written once its version is known (mget_entry_end). */
static void *mget_alloc(void *ctx, size_t vlen)
{
    struct mget_out *o = ctx;
    uint8_t *p;

    if (mget_room(o, 1 + MGET_GAP + 2 + 1 + 10 + vlen + 11) != 0)
        return NULL;
    o->entry = o->len;
    p = o->buf + o->len + 1 + MGET_GAP;
    p[0] = 0x08; /* found = true */
    p[1] = 1;
    p += 2;
    p += pb_put_len_prefix(p, 2, vlen);
    return p;
}

static void mget_entry_end(struct mget_out *o, size_t vlen, uint64_t version)
{
    uint8_t *start = o->buf + o->entry;
    uint8_t *content = start + 1 + MGET_GAP;
    size_t clen = 2 + 1 + pb_varint_len(vlen) + vlen, pl;

    clen += pb_put_uint_field(content + clen, 3, version);
    pl = pb_put_len_prefix(start, 1, clen); /* tag + prefix <= 1 + MGET_GAP bytes */
    if (pl != 1 + MGET_GAP)
        memmove(start + pl, content, clen);
    o->len = o->entry + pl + clen;
}

/* Looks up a window of keys as a software pipeline: the bucket of key
 * i + MGET_AHEAD0 and the item of key i + MGET_AHEAD1 are hinted while key i
 * is looked up, so each miss has a few lookups' time to land (hinting all
 * buckets, then all items, then looking up left the items too little). */
#define MGET_AHEAD0 6
#define MGET_AHEAD1 3

static int mget_window(struct kv_server *srv, const struct kv_call *call, struct mget_out *o, const struct pb_field *keys,
                       size_t n, const uint64_t *hashes)
{
    uint64_t h[MGET_WINDOW];

    for (size_t i = 0; i < n; i++) /* the first window's hashes are the first pass's */
        h[i] = hashes ? hashes[i] : kv_shm_key_hash(srv->store, keys[i].data, keys[i].len);
    for (size_t i = 0; i < n && i < MGET_AHEAD0; i++)
        kv_shm_prefetch(srv->store, h[i], 0);
    for (size_t i = 0; i < n && i < MGET_AHEAD1; i++)
        kv_shm_prefetch(srv->store, h[i], 1);
    for (size_t i = 0; i < n; i++) {
        size_t vlen = 0;
        uint64_t version = 0;
        int rc;

        if (i + MGET_AHEAD0 < n)
            kv_shm_prefetch(srv->store, h[i + MGET_AHEAD0], 0);
        if (i + MGET_AHEAD1 < n)
            kv_shm_prefetch(srv->store, h[i + MGET_AHEAD1], 1);
        /* every key's stripe is held (handle_mget): an MSET is seen whole or not at all */
        rc = kv_shm_db_get_held(srv->store, call->db, keys[i].data, keys[i].len, h[i], mget_alloc, o, &vlen,
                             &version);
        if (rc == 0) {
            mget_entry_end(o, vlen, version);
            continue;
        }
        if (o->too_big || o->oom)
            return -1;
        /* absent, expired or failed its checksum: an empty entry (found = false) */
        if (mget_room(o, 2) != 0)
            return -1;
        o->buf[o->len++] = 0x0a;
        o->buf[o->len++] = 0;
    }
    return 0;
}

/* answer bytes per key of this thread's last MGET, 2..4096: bigger values are
 * left to the doubling, not guessed (a guess is allocated whole) */
static __thread size_t mget_per_key = 24;

static void handle_mget(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct pb_reader r = {call->body, call->body + call->body_len};
    struct pb_field f, win[MGET_WINDOW];
    uint64_t h0[MGET_WINDOW];
    struct kv_shm_rset rs = {{0}};
    struct mget_out o = {.call = call, .limit = srv->cfg->max_body};
    size_t n = 0, k = 0;
    int rc, first = 1;

    if (!authed(srv, call))
        return;
    /* the whole body is checked (wire types, key lengths) before any lookup */
    while ((rc = pb_next(&r, &f)) == 1) {
        if (f.number != 1)
            continue; /* unknown fields are skipped, as protobuf does */
        if (f.wire != 2) {
            rc = -1;
            break;
        }
        if (check_key_len(srv, call, f.len) != 0)
            return;
        uint64_t hk = kv_shm_key_hash(srv->store, f.data, f.len);
        kv_shm_rset_add(&rs, hk);
        if (n < MGET_WINDOW) { /* the first window needs no second parse or hash */
            win[n] = f;
            h0[n] = hk;
        }
        n++;
    }
    if (rc != 0) {
        answer_error(call, KV_ST_BAD_REQUEST, "body does not decode");
        return;
    }
    /* sized from the bytes per key of this thread's last MGET (misses: 2), so
     * that a steady workload allocates once and never regrows the answer */
    o.cap = 64 + n * (mget_per_key + mget_per_key / 8);
    /* ...but never more than 64 KiB above the all-miss size: the estimate is
     * the thread's, not this client's, and a guess is allocated whole */
    if (o.cap > 64 + n * 24 + (64u << 10))
        o.cap = 64 + n * 24 + (64u << 10);
    if (o.cap <= call->scratch_cap) {
        o.buf = call->scratch;
        o.cap = call->scratch_cap;
    } else {
        o.cap = o.cap < o.limit ? o.cap : o.limit;
        o.buf = kv_mem_alloc(KV_MOD_PACKET, o.cap);
        if (!o.buf) {
            answer_error(call, KV_ST_INTERNAL, "out of memory");
            return;
        }
    }
    kv_shm_rset_take(srv->store, &rs);
    if (n <= MGET_WINDOW) {
        mget_window(srv, call, &o, win, n, h0);
    } else {
        r.p = call->body;
        while (pb_next(&r, &f) == 1) {
            if (f.number != 1)
                continue;
            win[k++] = f;
            if (k == MGET_WINDOW) {
                if (mget_window(srv, call, &o, win, k, first ? h0 : NULL) != 0)
                    break;
                first = 0;
                k = 0;
            }
        }
        if (!o.too_big && !o.oom && k)
            mget_window(srv, call, &o, win, k, NULL);
    }
    kv_shm_rset_drop(srv->store, &rs);
    if (o.too_big || o.oom) {
        if (o.buf != call->scratch)
            kv_mem_free(KV_MOD_PACKET, o.buf);
        if (o.too_big)
            answer_error(call, KV_ST_TOO_LARGE,
                         "the answer would exceed --max-body: ask for fewer keys");
        else
            answer_error(call, KV_ST_INTERNAL, "out of memory");
        return;
    }
    if (n)
        mget_per_key = o.len / n < 2 ? 2 : o.len / n > 4096 ? 4096 : o.len / n;
    call->resp = o.buf;
    call->resp_owned = o.buf != call->scratch;
    call->resp_len = (uint32_t)o.len;
    call->status = KV_ST_OK;
}

static void handle_mset(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct pb_reader r = {call->body, call->body + call->body_len};
    struct pb_field k, v;
    Kv__MSetResponse resp = KV__MSET_RESPONSE__INIT;
    struct kv_shm_set_opts o = {0};
    uint64_t *versions = NULL, ttl = 0;
    struct kv_shm_pair *pairs = NULL;
    size_t n = 0;
    int rc, nx = 0;

    if (!authed(srv, call) || !writable(srv, call))
        return;
    /* decoded in place (the keys and values stay in the receive buffer) */
    while ((rc = next_mset_pair(&r, &k, &v, &ttl, &nx)) == 1) {
        if (check_key_len(srv, call, k.len) != 0)
            return;
        n++;
    }
    if (rc < 0) {
        answer_error(call, KV_ST_BAD_REQUEST, "body does not decode");
        return;
    }
    if (ttl > (uint64_t)INT64_MAX) {
        answer_error(call, KV_ST_BAD_REQUEST, "ttl_ms out of range");
        return;
    }
    versions = kv_mem_calloc(KV_MOD_PROTO, (n ? n : 1) * sizeof(*versions));
    pairs = kv_mem_calloc(KV_MOD_PROTO, (n ? n : 1) * sizeof(*pairs));
    if (!versions || !pairs) {
        answer_error(call, KV_ST_INTERNAL, "out of memory");
        goto out;
    }
    o.ttl_ms = (int64_t)ttl;
    if (nx) /* MSETNX: nothing stored if any key exists */
        o.flags |= KV_SHM_NX;
    r.p = call->body;
    for (size_t i = 0; i < n && next_mset_pair(&r, &k, &v, &ttl, &nx) == 1; i++)
        pairs[i] = (struct kv_shm_pair){k.data, k.len, v.data, v.len};
    /* all or nothing, as Redis's MSET: a batch that does not fit changes nothing */
    rc = kv_shm_db_mset(srv->store, call->db, pairs, n, &o, versions);
    if (rc != 0) {
        answer_store_error(call, rc);
        goto out;
    }
    resp.n_versions = n;
    resp.versions = versions;
    answer_packed(call, &resp.base);
out:
    kv_mem_free(KV_MOD_PROTO, versions);
    kv_mem_free(KV_MOD_PROTO, pairs);
}

struct scan_out {
    ProtobufCBinaryData *keys;
    size_t n, cap;
    int failed;
};

static void scan_collect(void *ctx, const void *key, size_t klen)
{
    struct scan_out *s = ctx;
    uint8_t *copy;

    if (s->failed)
        return;
    if (s->n == s->cap) {
        /* a step finishes the buckets it started, so it may pass count */
        ProtobufCBinaryData *k = kv_mem_realloc(KV_MOD_PROTO, s->keys, 2 * s->cap * sizeof(*k));

        if (!k) {
            s->failed = 1;
            return;
        }
        s->keys = k;
        s->cap *= 2;
    }
    copy = kv_mem_alloc(KV_MOD_PROTO, klen ? klen : 1);
    if (!copy) {
        s->failed = 1;
        return;
    }
    memcpy(copy, key, klen);
    s->keys[s->n].data = copy;
    s->keys[s->n].len = klen;
    s->n++;
}

/* Drops the keys from index from on that do not match pattern (Redis glob). */
static void scan_filter(struct scan_out *s, size_t from, const ProtobufCBinaryData *pattern)
{
    size_t n = from;

    for (size_t i = from; i < s->n; i++) {
        if (kv_glob_match(pattern->data, pattern->len, s->keys[i].data, s->keys[i].len))
            s->keys[n++] = s->keys[i];
        else
            kv_mem_free(KV_MOD_PROTO, s->keys[i].data);
    }
    s->n = n;
}

/* A random 64-bit cursor (xorshift64*, one state per thread, seeded from the clock). */
static uint64_t scan_random(void)
{
    static __thread uint64_t x;

    if (!x) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^ (uintptr_t)&x;
        x |= 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return x * 0x2545F4914F6CDD1Dull;
}

/* One step of the scan m asks for, adding to s (filtered). */
static int scan_step(struct kv_server *srv, const struct kv_call *call, const Kv__ScanRequest *m, uint64_t cursor,
                     size_t count, struct scan_out *s, uint64_t *next)
{
    const uint8_t *prefix = m->prefix.data;
    size_t plen = m->prefix.len, from = s->n;
    int rc;

    if (m->pattern.len && !plen) { /* the pattern's literal prefix narrows the store's scan */
        prefix = m->pattern.data;
        plen = kv_glob_prefix(m->pattern.data, m->pattern.len);
    }
    rc = kv_shm_db_scan(srv->store, call->db, cursor, prefix, plen, count, scan_collect, s, next);
    if (rc == 0 && !s->failed && m->pattern.len)
        scan_filter(s, from, &m->pattern);
    return rc;
}

static void handle_scan(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    ProtobufCAllocator a;
    struct pb_budget b;
    Kv__ScanRequest *m;
    Kv__ScanResponse resp = KV__SCAN_RESPONSE__INIT;
    struct scan_out s = {0};
    uint64_t next = 0;
    size_t count, bytes = 0;
    int rc = 0;

    if (!authed(srv, call))
        return;
    m = (Kv__ScanRequest *)unpack(call, &kv__scan_request__descriptor, &b, &a);
    if (!m)
        return;
    count = m->count ? m->count : KV_SCAN_DEFAULT;
    if (count > KV_SCAN_MAX || m->all)
        count = KV_SCAN_MAX;
    s.cap = count + 16;
    s.keys = kv_mem_calloc(KV_MOD_PROTO, s.cap * sizeof(*s.keys));
    if (!s.keys) {
        answer_error(call, KV_ST_INTERNAL, "out of memory");
        goto out;
    }
    if (m->random) {
        /* from a random place to the end, then from the start: the first key */
        uint64_t c = scan_random();

        for (int pass = 0; pass < 2 && rc == 0 && s.n == 0 && !s.failed; pass++) {
            do
                rc = scan_step(srv, call, m, c, 1, &s, &c);
            while (rc == 0 && s.n == 0 && !s.failed && c != 0);
        }
        next = 0;
        for (size_t i = 1; i < s.n; i++) /* one key */
            kv_mem_free(KV_MOD_PROTO, s.keys[i].data);
        s.n = s.n ? 1 : 0;
    } else if (m->all) {
        /* KEYS: every step, as long as the answer stays under --max-body */
        uint64_t c = 0;

        do {
            size_t before = s.n;

            rc = scan_step(srv, call, m, c, count, &s, &c);
            for (size_t i = before; i < s.n; i++)
                bytes += s.keys[i].len + 8;
            if (bytes > srv->cfg->max_body) {
                answer_error(call, KV_ST_TOO_LARGE,
                             "the answer would exceed --max-body: use SCAN");
                goto out;
            }
        } while (rc == 0 && !s.failed && c != 0);
        next = 0;
    } else {
        rc = scan_step(srv, call, m, m->cursor, count, &s, &next);
    }
    if (rc != 0 || s.failed) {
        answer_store_error(call, rc != 0 ? rc : KV_ENOMEM);
        goto out;
    }
    resp.cursor = next;
    resp.n_keys = s.n;
    resp.keys = s.keys;
    answer_packed(call, &resp.base);
out:
    for (size_t i = 0; i < s.n; i++)
        kv_mem_free(KV_MOD_PROTO, s.keys[i].data);
    kv_mem_free(KV_MOD_PROTO, s.keys);
    protobuf_c_message_free_unpacked(&m->base, &a);
}

/* The STATS opcode: the collector's figures as named entries (the names
 * kvclient stats and the tests read) and the signal-41 table as text. */
static void handle_stats(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    enum { MAXE = 64 + KV_SHM_MAX_DB, TEXT = 16384 };
    char (*dbname)[16] = NULL;
    Kv__StatsResponse resp = KV__STATS_RESPONSE__INIT;
    Kv__StatEntry *e, **pe;
    struct kv_server_stats *st;
    char *text;
    size_t n = 0;

    if (!authed(srv, call))
        return;
    e = kv_mem_calloc(KV_MOD_PROTO, MAXE * sizeof(*e));
    pe = kv_mem_calloc(KV_MOD_PROTO, MAXE * sizeof(*pe));
    text = kv_mem_alloc(KV_MOD_PROTO, TEXT);
    dbname = kv_mem_alloc(KV_MOD_PROTO, KV_SHM_MAX_DB * sizeof(*dbname));
    st = kv_mem_alloc(KV_MOD_PROTO, sizeof(*st));
    if (!e || !pe || !text || !dbname || !st) {
        answer_error(call, KV_ST_INTERNAL, "out of memory");
        goto out;
    }
    kv_server_stats_collect(srv, st);
#define ADD(nm, v)                                                                            \
    do {                                                                                      \
        if (n < MAXE) {                                                                       \
            kv__stat_entry__init(&e[n]);                                                      \
            e[n].name = (char *)(nm);                                                         \
            e[n].value = (int64_t)(v);                                                        \
            pe[n] = &e[n];                                                                    \
            n++;                                                                              \
        }                                                                                     \
    } while (0)
    for (int i = 0; i < KV_STAT__COUNT; i++)
        ADD(kv_mem_stat_name(i), st->mem.stat[i]);
    ADD("connections",
        st->mem.mod[KV_MOD_CONNECTION].allocs - st->mem.mod[KV_MOD_CONNECTION].frees);
    ADD("messages", st->mem.mod[KV_MOD_MESSAGE].allocs - st->mem.mod[KV_MOD_MESSAGE].frees);
    ADD("requests_in_flight",
        st->mem.mod[KV_MOD_REQUEST].allocs - st->mem.mod[KV_MOD_REQUEST].frees);
    ADD("heap_bytes", st->heap_bytes);
    if (st->have_store) {
        const struct kv_shm_stats *ss = &st->store;

        ADD("keys", ss->keys);
        ADD("store_bytes_used", ss->bytes_used);
        ADD("store_bytes_free", ss->bytes_free);
        ADD("store_size", ss->segment_size);
        ADD("hits", ss->hits);
        ADD("misses", ss->misses);
        ADD("evictions", ss->evictions);
        ADD("expired", ss->expired);
        ADD("corrupt_items", ss->corrupt);
        ADD("pages_compacted", ss->pages_compacted);
        ADD("pages_evicted", ss->pages_evicted);
        ADD("items_moved", ss->items_moved);
        ADD("generation", ss->generation);
        ADD("recovered_items", ss->recovered_items);
        ADD("dropped_items", ss->dropped_items);
        ADD("store_huge_page_bytes", ss->huge_bytes);
        ADD("restored_items", ss->restored_items);
    }
    {
        const struct kv_shm_sync_stats *sy = &st->sync; /* --sync: README, "Power loss" */

        ADD("sync_policy", sy->policy);
        ADD("syncs_started", sy->started);
        ADD("syncs_completed", sy->completed);
        ADD("sync_last_ok", sy->last_ok);
        ADD("sync_errors", sy->errors);
        ADD("sync_last_done_ms", sy->last_done_ms);
        ADD("sync_last_us", sy->last_us);
        ADD("sync_max_us", sy->max_us);
        ADD("sync_chunks_waiting", sy->chunks_waiting);
    }
    /* keys of the call's database (DBSIZE), then every non-empty one as dbN */
    {
        uint64_t k = 0;

        kv_shm_db_size(srv->store, call->db, &k);
        ADD("db_keys", k);
        for (unsigned d = 0; d < st->ndbs; d++) {
            if (st->db[d].keys) {
                snprintf(dbname[d], sizeof(dbname[d]), "db%u", d);
                ADD(dbname[d], st->db[d].keys);
            }
        }
    }
    if (st->have_io) {
        ADD("clients_tcp", st->clients_tcp);
        ADD("clients_unix", st->clients_unix);
        ADD("clients_shm", st->clients_shm); /* of clients_unix: attached to rings */
        ADD("shm_bytes_in", st->shm_bytes_in);
        ADD("shm_bytes_out", st->shm_bytes_out);
    }
#undef ADD
    kv_server_stats_table(srv, st, text, TEXT);
    resp.n_entries = n;
    resp.entries = pe;
    resp.text = text;
    answer_packed(call, &resp.base);
out:
    kv_mem_free(KV_MOD_PROTO, st);
    kv_mem_free(KV_MOD_PROTO, e);
    kv_mem_free(KV_MOD_PROTO, pe);
    kv_mem_free(KV_MOD_PROTO, text);
    kv_mem_free(KV_MOD_PROTO, dbname);
}

/* ---- RENAME (RENAME, RENAMENX, MOVE, COPY) and SWAPDB ------------------------- */
#define RENAME_NX 0x1u
#define RENAME_COPY 0x2u
#define RENAME_DB 0x4u
#define RENAME_DST_DB 0x8u

static int db_bad(const struct kv_server *srv, uint64_t db)
{
    return db >= srv->cfg->databases || db >= KV_SHM_MAX_DB;
}

static void handle_rename(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct pb_reader r = {call->body, call->body + call->body_len};
    struct pb_field f;
    struct pb_field key = {0}, nkey = {0};
    uint64_t flags = 0, db = call->db, dst = 0, version = 0;
    int more, rc;

    if (!authed(srv, call) || !writable(srv, call))
        return;
    while ((more = pb_next(&r, &f)) > 0) {
        if (f.number == 1 && f.wire == 2)
            key = f;
        else if (f.number == 2 && f.wire == 2)
            nkey = f;
        else if (f.number == 3 && f.wire == 0)
            flags = f.u64;
        else if (f.number == 4 && f.wire == 0)
            db = f.u64;
        else if (f.number == 5 && f.wire == 0)
            dst = f.u64;
        else if (f.number <= 5)
            more = -1;
        if (more < 0)
            break;
    }
    if (more < 0 || flags > (RENAME_NX | RENAME_COPY | RENAME_DB | RENAME_DST_DB)) {
        answer_error(call, KV_ST_BAD_REQUEST, "body does not decode");
        return;
    }
    if (!(flags & RENAME_DB))
        db = call->db;
    if (!(flags & RENAME_DST_DB))
        dst = db;
    if (db_bad(srv, db) || db_bad(srv, dst)) {
        answer_error(call, KV_ST_BAD_REQUEST, "ERR DB index is out of range");
        return;
    }
    if (check_key_len(srv, call, key.len) || check_key_len(srv, call, nkey.len))
        return;
    rc = kv_shm_rename(srv->store, (unsigned)db, key.data, key.len, (unsigned)dst, nkey.data,
                       nkey.len,
                       ((flags & RENAME_NX) ? KV_SHM_MV_NX : 0) |
                           ((flags & RENAME_COPY) ? KV_SHM_MV_COPY : 0),
                       &version);
    if (rc == 0 || rc == KV_EEXISTS)
        answer_uints(call, rc == 0, version);
    else
        answer_store_error(call, rc);
}

static void handle_swapdb(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct pb_reader r = {call->body, call->body + call->body_len};
    struct pb_field f;
    uint64_t a = 0, b = 0;
    int more, rc;

    if (!authed(srv, call) || !writable(srv, call))
        return;
    while ((more = pb_next(&r, &f)) > 0) {
        if (f.number == 1 && f.wire == 0)
            a = f.u64;
        else if (f.number == 2 && f.wire == 0)
            b = f.u64;
        else if (f.number <= 2)
            more = -1;
        if (more < 0)
            break;
    }
    if (more < 0) {
        answer_error(call, KV_ST_BAD_REQUEST, "body does not decode");
        return;
    }
    if (db_bad(srv, a) || db_bad(srv, b)) {
        answer_error(call, KV_ST_BAD_REQUEST, "ERR DB index is out of range");
        return;
    }
    rc = kv_shm_swapdb(srv->store, (unsigned)a, (unsigned)b);
    if (rc == KV_ELOCKED) /* not returned since SWAPDB is undo-logged inside EXEC */
        answer_error(call, KV_ST_BAD_REQUEST, "ERR SWAPDB is not supported inside MULTI");
    else if (rc)
        answer_store_error(call, rc);
    else
        answer_uints(call, 0, 0);
}

static void handle_flush(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct kv_shm_stats st;
    struct pb_reader r = {call->body, call->body + call->body_len};
    struct pb_field f;
    uint64_t before = 0;
    int rc, more, db_only = 0;

    if (!authed(srv, call) || !writable(srv, call))
        return;
    while ((more = pb_next(&r, &f)) > 0)
        if (f.number == 1 && f.wire == 0)
            db_only = f.u64 != 0;
    if (more < 0) {
        answer_error(call, KV_ST_BAD_REQUEST, "body does not decode");
        return;
    }
    if (db_only) {
        kv_shm_db_size(srv->store, call->db, &before);
        rc = kv_shm_db_flush(srv->store, call->db);
    } else {
        if (kv_shm_stats(srv->store, &st) == 0)
            before = st.keys;
        rc = kv_shm_flush(srv->store);
    }
    if (rc != 0) {
        answer_store_error(call, rc);
        return;
    }
    answer_uints(call, before, 0);
}

/* ---- STR: Redis's string family ------------------------------------------------- */
/* Every edit reads value and version, computes the new value, and stores it
 * on compare-and-set of the version read (a key that was absent: only if
 * still absent), keeping the expiry; a writer that came in between makes the
 * store refuse, and the edit starts again from a fresh read. So each edit is
 * atomic with respect to every other client, and each attempt is one
 * crash-safe publish. Errors are Redis's own text (BAD_REQUEST + message):
 * the RESP adapter shows them verbatim. */
#define STR_RANGE 0x1u
#define STR_BIT 0x2u
#define STR_HAS_END 0x4u
#define STR_PERSIST 0x8u
#define LCS_LEN 0x10u
#define LCS_IDX 0x20u
#define LCS_WITHMATCHLEN 0x40u
#define STR_MAX_LEN (512u << 20) /* Redis's proto-max-bulk-len */
#define STR_ATTEMPTS 1000
#define LCS_MAX_CELLS ((64u << 20) / 4) /* the table of an LCS: at most 64 MiB */
#define STR_TOO_BIG "ERR string exceeds maximum allowed size (proto-max-bulk-len)"

/* The longest string an edit may make: Redis's limit, or --max-body when lower (a
 * longer value could not be read back in one answer). */
static uint64_t str_max(const struct kv_server *srv)
{
    return srv->cfg->max_body < STR_MAX_LEN ? srv->cfg->max_body : STR_MAX_LEN;
}

struct str_req {
    uint64_t op, flags, ttl_ms;
    const uint8_t *key, *value;
    size_t klen, vlen;
    int64_t start, end, end2;
};

static int str_parse(const struct kv_call *call, struct str_req *q)
{
    struct pb_reader r = {call->body, call->body + call->body_len};
    struct pb_field f;
    int rc;

    memset(q, 0, sizeof(*q));
    q->key = q->value = (const uint8_t *)"";
    while ((rc = pb_next(&r, &f)) == 1) {
        if (f.number >= 1 && f.number <= 8 && (f.number == 2 || f.number == 3) != (f.wire == 2))
            return -1; /* a known field of the wrong wire type; unknown ones are skipped */
        switch (f.number) {
        case 1: q->op = f.u64; break;
        case 2: q->key = f.data; q->klen = f.len; break;
        case 3: q->value = f.data; q->vlen = f.len; break;
        case 4: q->start = pb_zigzag_decode(f.u64); break;
        case 5: q->end = pb_zigzag_decode(f.u64); break;
        case 6: q->flags = f.u64; break;
        case 7: q->ttl_ms = f.u64; break;
        case 8: q->end2 = pb_zigzag_decode(f.u64); break;
        default: break;
        }
    }
    return rc;
}

/* The current value of a key (p owned, KV_MOD_PROTO; found 0 = absent). */
struct str_cur {
    uint8_t *p;
    size_t len;
    uint64_t version;
    int found;
};

static int str_load(struct kv_server *srv, const struct kv_call *call, const uint8_t *key, size_t klen, struct str_cur *c)
{
    int rc;

    memset(c, 0, sizeof(*c));
    rc = kv_shm_db_get(srv->store, call->db, key, klen, old_alloc, &c->p, &c->len, &c->version);
    if (rc == 0)
        c->found = 1;
    else if (rc == KV_ENOTFOUND)
        rc = 0;
    return rc;
}

static void str_drop(struct str_cur *c)
{
    kv_mem_free(KV_MOD_PROTO, c->p);
    c->p = NULL;
}

/* Stores v on condition that the key is still as c saw it. ttl_ms < 0
 * keeps the expiry; >= 0 sets it (0: none). KV_EEXISTS / KV_ENOTFOUND: the
 * key changed meanwhile, read again. */
static int str_store(struct kv_server *srv, const struct kv_call *call, const struct str_req *q, const struct str_cur *c,
                     const void *v, size_t vlen, int64_t ttl_ms, uint64_t *version)
{
    struct kv_shm_set_opts o = {0};

    o.flags = c->found ? KV_SHM_CAS : KV_SHM_NX;
    o.cas_version = c->version;
    if (ttl_ms < 0)
        o.flags |= KV_SHM_KEEPTTL;
    else
        o.ttl_ms = ttl_ms;
    return kv_shm_db_set(srv->store, call->db, q->key, q->klen, v, vlen, &o, version);
}

/* Answers StrResponse{found, value, number, version, matches}. */
static void str_answer(struct kv_call *call, int found, const void *v, size_t vlen, int has_value,
                       int64_t number, uint64_t version, const int64_t *m, size_t nm)
{
    uint8_t *p = packet(call, 2 + 11 + vlen + 11 + 11 + nm * 11);
    size_t n = 0;

    if (!p)
        return;
    n += pb_put_uint_field(p + n, 1, (uint64_t)found);
    if (has_value) {
        n += pb_put_len_prefix(p + n, 2, vlen);
        if (vlen)
            memcpy(p + n, v, vlen);
        n += vlen;
    }
    n += pb_put_uint_field(p + n, 3, pb_zigzag_encode(number));
    if (version)
        n += pb_put_uint_field(p + n, 4, version);
    for (size_t i = 0; i < nm; i++) {
        p[n++] = (5 << 3) | 0; /* unpacked: protobuf-c reads either form */
        n += pb_put_varint(p + n, pb_zigzag_encode(m[i]));
    }
    call->status = KV_ST_OK;
    call->resp_len = (uint32_t)n;
}

/* Redis's range rule (GETRANGE, BITCOUNT, BITPOS): negative counts from the
 * end, clamped to [0, total - 1]. Returns 0 when the range is empty. */
static int str_clamp(int64_t total, int64_t *start, int64_t *end)
{
    if (*start < 0 && *end < 0 && *start > *end)
        return 0;
    if (*start < 0)
        *start += total;
    if (*end < 0)
        *end += total;
    if (*start < 0)
        *start = 0;
    if (*end < 0)
        *end = 0;
    if (*end >= total)
        *end = total - 1;
    return total > 0 && *start <= *end;
}

static int bit_at(const uint8_t *p, uint64_t bit)
{
    return (p[bit >> 3] >> (7 - (bit & 7))) & 1;
}

/* Redis's string2ld: the whole text is one long double, no spaces, no NaN. */
static int str_to_ld(const uint8_t *p, size_t len, long double *out)
{
    char buf[5 * 1024 + 8];
    char *end;
    long double v;

    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    if (isspace((unsigned char)buf[0]))
        return -1;
    errno = 0;
    v = strtold(buf, &end);
    if ((size_t)(end - buf) != len || (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL ||
                                                           fpclassify(v) == FP_ZERO)) ||
        isnan(v))
        return -1;
    *out = v;
    return 0;
}

/* Redis's ld2string in human-friendly mode: %.17Lf without trailing zeros. */
static size_t ld_to_str(long double v, char *buf, size_t cap)
{
    int l = snprintf(buf, cap, "%.17Lf", v);

    if (l < 0 || (size_t)l + 1 > cap)
        return 0;
    if (strchr(buf, '.')) {
        char *p = buf + l - 1;

        while (*p == '0') {
            p--;
            l--;
        }
        if (*p == '.')
            l--;
    }
    if (l == 2 && buf[0] == '-' && buf[1] == '0') {
        buf[0] = '0';
        l = 1;
    }
    return (size_t)l;
}

static int64_t bit_count(const uint8_t *p, int64_t first, int64_t last)
{
    int64_t n = 0;

    for (int64_t b = first; b <= last;) {
        if ((b & 7) == 0 && b + 7 <= last) {
            n += __builtin_popcount(p[b >> 3]);
            b += 8;
        } else {
            n += bit_at(p, (uint64_t)b++);
        }
    }
    return n;
}

/* The first bit equal to want in [first, last], or -1. */
static int64_t bit_find(const uint8_t *p, int64_t first, int64_t last, int want)
{
    uint8_t skip = want ? 0x00 : 0xff;

    for (int64_t b = first; b <= last;) {
        if ((b & 7) == 0 && b + 7 <= last && p[b >> 3] == skip) {
            b += 8;
            continue;
        }
        if (bit_at(p, (uint64_t)b) == want)
            return b;
        b++;
    }
    return -1;
}

/* LCS of a and b as Redis 7.0 computes it (the same walk, so the same
 * matches in the same order). */
static void str_lcs(struct kv_call *call, const struct str_req *q, const struct str_cur *ca,
                    const struct str_cur *cb)
{
    const uint8_t *a = ca->p ? ca->p : (const uint8_t *)"", *b = cb->p ? cb->p : (const uint8_t *)"";
    uint32_t alen = (uint32_t)ca->len, blen = (uint32_t)cb->len;
    uint64_t cells = (uint64_t)(alen + 1) * (blen + 1);
    uint32_t *dp;
    uint8_t *result = NULL;
    int64_t *m = NULL;
    size_t nm = 0, mcap = 0;
    int getidx = (q->flags & LCS_IDX) != 0, withlen = (q->flags & LCS_WITHMATCHLEN) != 0;
    uint64_t minmatch = q->start > 0 ? (uint64_t)q->start : 0;

    if (ca->len > UINT32_MAX - 1 || cb->len > UINT32_MAX - 1 || cells > LCS_MAX_CELLS) {
        answer_error(call, KV_ST_BAD_REQUEST,
                     "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len");
        return;
    }
    dp = kv_mem_alloc(KV_MOD_PROTO, cells * sizeof(*dp));
    if (!dp) {
        answer_error(call, KV_ST_INTERNAL, "out of memory");
        return;
    }
#define LCS(A, B) dp[(B) + ((uint64_t)(A) * (blen + 1))]
    for (uint32_t i = 0; i <= alen; i++)
        for (uint32_t j = 0; j <= blen; j++) {
            if (i == 0 || j == 0)
                LCS(i, j) = 0;
            else if (a[i - 1] == b[j - 1])
                LCS(i, j) = LCS(i - 1, j - 1) + 1;
            else
                LCS(i, j) = LCS(i - 1, j) > LCS(i, j - 1) ? LCS(i - 1, j) : LCS(i, j - 1);
        }
    uint32_t idx = LCS(alen, blen), len = idx;
    int compute = getidx || !(q->flags & LCS_LEN);

    if (compute && !getidx)
        result = kv_mem_alloc(KV_MOD_PROTO, idx ? idx : 1);
    uint32_t as = alen, ae = 0, bs = 0, be = 0, i = alen, j = blen;

    while (compute && i > 0 && j > 0) {
        int emit = 0;

        if (a[i - 1] == b[j - 1]) {
            if (result)
                result[idx - 1] = a[i - 1];
            if (as == alen) {
                as = ae = i - 1;
                bs = be = j - 1;
            } else if (as == i && bs == j) {
                as--;
                bs--;
            } else {
                emit = 1;
            }
            if (as == 0 || bs == 0)
                emit = 1;
            idx--;
            i--;
            j--;
        } else {
            if (LCS(i - 1, j) > LCS(i, j - 1))
                i--;
            else
                j--;
            if (as != alen)
                emit = 1;
        }
        uint32_t mlen = ae - as + 1;

        if (emit) {
            if (getidx && (minmatch == 0 || mlen >= minmatch)) {
                if (nm + 5 > mcap) {
                    size_t ncap = mcap ? mcap * 2 : 40;
                    int64_t *nmv = kv_mem_realloc(KV_MOD_PROTO, m, ncap * sizeof(*m));

                    if (!nmv)
                        break;
                    m = nmv;
                    mcap = ncap;
                }
                m[nm++] = as;
                m[nm++] = ae;
                m[nm++] = bs;
                m[nm++] = be;
                m[nm++] = withlen ? (int64_t)mlen : -1;
            }
            as = alen;
        }
    }
#undef LCS
    kv_mem_free(KV_MOD_PROTO, dp);
    if (compute && !getidx && !result) {
        answer_error(call, KV_ST_INTERNAL, "out of memory");
    } else {
        str_answer(call, 1, result, result ? len : 0, result != NULL, len, 0, m, nm);
    }
    kv_mem_free(KV_MOD_PROTO, result);
    kv_mem_free(KV_MOD_PROTO, m);
}

/* The string ops that never write (Redis's read-only commands of the family). */
static int str_op_reads_only(int op)
{
    return op == KV__STR_REQUEST__OP__STRLEN || op == KV__STR_REQUEST__OP__GETRANGE ||
           op == KV__STR_REQUEST__OP__GETBIT || op == KV__STR_REQUEST__OP__BITCOUNT ||
           op == KV__STR_REQUEST__OP__BITPOS || op == KV__STR_REQUEST__OP__LCS;
}

static void handle_str(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct str_req q;
    struct str_cur c;
    int rc;

    if (!authed(srv, call))
        return;
    if (str_parse(call, &q) != 0) {
        answer_error(call, KV_ST_BAD_REQUEST, "body does not decode");
        return;
    }
    if (check_key_len(srv, call, q.klen) != 0)
        return;
    if (q.op == KV__STR_REQUEST__OP__LCS && check_key_len(srv, call, q.vlen) != 0)
        return;
    if (!str_op_reads_only(q.op) && !writable(srv, call))
        return;
    for (int attempt = 0; attempt < STR_ATTEMPTS; attempt++) {
        uint8_t *nv = NULL;
        size_t nlen = 0;
        int64_t number = 0, ttl = -1;
        uint64_t version = 0;
        int write = 0;

        rc = str_load(srv, call, q.key, q.klen, &c);
        if (rc != 0) {
            answer_store_error(call, rc);
            return;
        }
        switch (q.op) {
        case KV__STR_REQUEST__OP__STRLEN:
            str_answer(call, c.found, NULL, 0, 0, (int64_t)c.len, 0, NULL, 0);
            break;
        case KV__STR_REQUEST__OP__GETRANGE: {
            int64_t s = q.start, e = q.end;

            if (str_clamp((int64_t)c.len, &s, &e))
                str_answer(call, c.found, c.p + s, (size_t)(e - s + 1), 1, 0, 0, NULL, 0);
            else
                str_answer(call, c.found, NULL, 0, 1, 0, 0, NULL, 0);
            break;
        }
        case KV__STR_REQUEST__OP__GETBIT:
            number = (uint64_t)q.start >> 3 < c.len ? bit_at(c.p, (uint64_t)q.start) : 0;
            str_answer(call, c.found, NULL, 0, 0, number, 0, NULL, 0);
            break;
        case KV__STR_REQUEST__OP__BITCOUNT:
        case KV__STR_REQUEST__OP__BITPOS: {
            int pos = q.op == KV__STR_REQUEST__OP__BITPOS;
            int want = pos ? (int)q.end : 0, unit = (q.flags & STR_BIT) ? 1 : 8;
            int64_t total = (int64_t)c.len * (unit == 1 ? 8 : 1);
            int64_t s = q.start, e = pos ? q.end2 : q.end;

            if (!(q.flags & STR_RANGE)) {
                s = 0;
                e = -1;
            } else if (pos && !(q.flags & STR_HAS_END)) {
                e = -1;
            }
            if (!c.found) {
                number = pos ? (want ? -1 : 0) : 0;
            } else if (!str_clamp(total, &s, &e)) {
                number = pos ? -1 : 0;
            } else {
                int64_t first = unit == 1 ? s : s * 8, last = unit == 1 ? e : e * 8 + 7;

                if (!pos)
                    number = bit_count(c.p, first, last);
                else {
                    number = bit_find(c.p, first, last, want);
                    /* no end given: a 0 is found just past the string */
                    if (number < 0 && !want && !(q.flags & STR_HAS_END))
                        number = (int64_t)c.len * 8;
                }
            }
            str_answer(call, c.found, NULL, 0, 0, number, 0, NULL, 0);
            break;
        }
        case KV__STR_REQUEST__OP__APPEND:
            if (c.len + q.vlen > str_max(srv)) {
                answer_error(call, KV_ST_BAD_REQUEST, STR_TOO_BIG);
                break;
            }
            nlen = c.len + q.vlen;
            nv = kv_mem_alloc(KV_MOD_PROTO, nlen ? nlen : 1);
            if (nv) {
                if (c.len)
                    memcpy(nv, c.p, c.len);
                if (q.vlen)
                    memcpy(nv + c.len, q.value, q.vlen);
            }
            number = (int64_t)nlen;
            write = 1;
            break;
        case KV__STR_REQUEST__OP__SETRANGE:
            if (q.vlen == 0) { /* nothing to write: the length, no key created */
                str_answer(call, c.found, NULL, 0, 0, (int64_t)c.len, 0, NULL, 0);
                break;
            }
            if (q.start < 0 || (uint64_t)q.start + q.vlen > str_max(srv)) {
                answer_error(call, KV_ST_BAD_REQUEST, STR_TOO_BIG);
                break;
            }
            nlen = (size_t)q.start + q.vlen > c.len ? (size_t)q.start + q.vlen : c.len;
            nv = kv_mem_calloc(KV_MOD_PROTO, nlen);
            if (nv) {
                if (c.len)
                    memcpy(nv, c.p, c.len);
                memcpy(nv + q.start, q.value, q.vlen);
            }
            number = (int64_t)nlen;
            write = 1;
            break;
        case KV__STR_REQUEST__OP__SETBIT: {
            uint64_t byte = (uint64_t)q.start >> 3;

            if (q.start < 0 || byte + 1 > str_max(srv)) {
                answer_error(call, KV_ST_BAD_REQUEST, STR_TOO_BIG);
                break;
            }
            nlen = byte + 1 > c.len ? byte + 1 : c.len;
            nv = kv_mem_calloc(KV_MOD_PROTO, nlen);
            if (nv) {
                uint8_t mask = (uint8_t)(1u << (7 - (q.start & 7)));

                if (c.len)
                    memcpy(nv, c.p, c.len);
                number = (nv[byte] & mask) != 0;
                nv[byte] = q.end ? nv[byte] | mask : nv[byte] & (uint8_t)~mask;
            }
            write = 1;
            break;
        }
        case KV__STR_REQUEST__OP__INCRBYFLOAT: {
            long double cur = 0, incr, sum;
            char buf[5 * 1024 + 64];

            if ((c.found && str_to_ld(c.p, c.len, &cur) != 0) ||
                str_to_ld(q.value, q.vlen, &incr) != 0) {
                answer_error(call, KV_ST_BAD_REQUEST, "ERR value is not a valid float");
                break;
            }
            sum = cur + incr;
            if (isnan(sum) || isinf(sum)) {
                answer_error(call, KV_ST_BAD_REQUEST, "ERR increment would produce NaN or Infinity");
                break;
            }
            nlen = ld_to_str(sum, buf, sizeof(buf));
            nv = kv_mem_alloc(KV_MOD_PROTO, nlen ? nlen : 1);
            if (nv)
                memcpy(nv, buf, nlen);
            write = 1;
            break;
        }
        case KV__STR_REQUEST__OP__GETDEL:
            if (c.found) {
                /* compare-and-delete of the version read: the value answered is the
                 * one removed (a write in between makes it read again) */
                rc = kv_shm_db_del_version(srv->store, call->db, q.key, q.klen, c.version);
                if (rc == KV_ENOTFOUND || rc == KV_EEXISTS) { /* changed meanwhile */
                    str_drop(&c);
                    continue;
                }
                if (rc != 0) {
                    answer_store_error(call, rc);
                    break;
                }
            }
            str_answer(call, c.found, c.p, c.len, c.found, 0, 0, NULL, 0);
            break;
        case KV__STR_REQUEST__OP__GETEX:
            if (!c.found || !(q.ttl_ms || (q.flags & STR_PERSIST))) {
                str_answer(call, c.found, c.p, c.len, c.found, 0, 0, NULL, 0);
                break;
            }
            nlen = c.len;
            nv = kv_mem_alloc(KV_MOD_PROTO, nlen ? nlen : 1);
            if (nv && nlen)
                memcpy(nv, c.p, nlen);
            ttl = (q.flags & STR_PERSIST) ? 0 : (int64_t)q.ttl_ms;
            write = 1;
            break;
        case KV__STR_REQUEST__OP__LCS: {
            struct str_cur cb;

            rc = str_load(srv, call, q.value, q.vlen, &cb);
            if (rc != 0)
                answer_store_error(call, rc);
            else
                str_lcs(call, &q, &c, &cb);
            str_drop(&cb);
            break;
        }
        default:
            answer_error(call, KV_ST_BAD_REQUEST, "unknown string op");
            break;
        }
        if (!write) {
            str_drop(&c);
            return;
        }
        if (!nv) {
            str_drop(&c);
            answer_error(call, KV_ST_INTERNAL, "out of memory");
            return;
        }
        rc = str_store(srv, call, &q, &c, nv, nlen, ttl, &version);
        if (rc == KV_EEXISTS || rc == KV_ENOTFOUND) { /* another writer came in between */
            kv_mem_free(KV_MOD_PROTO, nv);
            str_drop(&c);
            continue;
        }
        if (rc != 0)
            answer_store_error(call, rc);
        else if (q.op == KV__STR_REQUEST__OP__INCRBYFLOAT || q.op == KV__STR_REQUEST__OP__GETEX)
            str_answer(call, 1, q.op == KV__STR_REQUEST__OP__GETEX ? c.p : nv,
                       q.op == KV__STR_REQUEST__OP__GETEX ? c.len : nlen, 1, 0, version, NULL, 0);
        else
            str_answer(call, 1, NULL, 0, 0, number, version, NULL, 0);
        kv_mem_free(KV_MOD_PROTO, nv);
        str_drop(&c);
        return;
    }
    answer_error(call, KV_ST_BUSY, "too many concurrent writers on the key");
}

/* EXPIRE with a condition (Redis NX / XX / GT / LT): read value and version,
 * then the expiry, judge, and write the same value with the new expiry on
 * compare-and-set of that version, so no write between the judgement and
 * the change goes unseen (any write changes the version). A time already
 * past (remove) deletes the key by compare-and-delete of that version. */
#define EXPIRE_NX 0x1u
#define EXPIRE_XX 0x2u
#define EXPIRE_GT 0x4u
#define EXPIRE_LT 0x8u
static void expire_if(struct kv_server *srv, struct kv_call *call, const struct key_req *k)
{
    int64_t want = k->f5 ? 0 : (int64_t)k->f3; /* 0: the past, below any ttl */

    if (k->f4v > (EXPIRE_NX | EXPIRE_XX | EXPIRE_GT | EXPIRE_LT) || (!k->f5 && (k->f3 == 0 ||
                                                               k->f3 > (uint64_t)INT64_MAX / 2))) {
        answer_error(call, KV_ST_BAD_REQUEST, "bad condition or ttl_ms");
        return;
    }
    for (int attempt = 0; attempt < STR_ATTEMPTS; attempt++) {
        struct str_cur c;
        int64_t cur = -1;
        int rc = str_load(srv, call, k->key, k->klen, &c), pass;

        if (rc == 0 && !c.found)
            rc = KV_ENOTFOUND;
        if (rc == 0)
            rc = kv_shm_db_ttl(srv->store, call->db, k->key, k->klen, &cur);
        if (rc == KV_ENOTFOUND && c.found) { /* expired or deleted meanwhile */
            str_drop(&c);
            continue;
        }
        if (rc != 0) {
            str_drop(&c);
            answer_store_error(call, rc);
            return;
        }
        pass = !((k->f4v & EXPIRE_NX) && cur != -1) && !((k->f4v & EXPIRE_XX) && cur == -1) &&
               !((k->f4v & EXPIRE_GT) && (cur == -1 || want <= cur)) &&
               !((k->f4v & EXPIRE_LT) && cur != -1 && want >= cur);
        if (!pass) {
            str_drop(&c);
            answer_error(call, KV_ST_EXISTS, NULL);
            return;
        }
        if (k->f5) { /* compare-and-delete: a write since the judgement is not lost */
            rc = kv_shm_db_del_version(srv->store, call->db, k->key, k->klen, c.version);
        } else {
            struct kv_shm_set_opts o = {.flags = KV_SHM_CAS, .cas_version = c.version,
                                        .ttl_ms = want};

            rc = kv_shm_db_set(srv->store, call->db, k->key, k->klen, c.p, c.len, &o, NULL);
        }
        str_drop(&c);
        if (rc == KV_EEXISTS || rc == KV_ENOTFOUND)
            continue; /* another writer came in between */
        if (rc != 0) {
            answer_store_error(call, rc);
            return;
        }
        answer_uints(call, pb_zigzag_encode(k->f5 ? -2 : want), pb_zigzag_encode(cur));
        return;
    }
    answer_error(call, KV_ST_BUSY, "too many concurrent writers on the key");
}

/* Cache hint for the single-key opcodes: the key is field 1 of the body.
 * Stage 0 hashes it once and notes key and hash in the call, for stage 1
 * and the handler (key_hash). */
static void prefetch_key(void *ctx, struct kv_call *call, int stage)
{
    struct kv_server *srv = ctx;

    if (stage == 0) {
        struct pb_reader r = {call->body, call->body + call->body_len};
        struct pb_field f;

        if (pb_next(&r, &f) != 1 || f.number != 1 || f.wire != 2)
            return;
        call->hint_ptr = f.data;
        call->hint_len = (uint32_t)f.len;
        call->hint = kv_shm_key_hash(srv->store, f.data, f.len);
    }
    if (call->hint_ptr)
        kv_shm_prefetch(srv->store, call->hint, stage);
}

int kv_server_handlers_register(struct kv_server *srv, struct kv_worker_registry *reg)
{
    static const uint16_t keyed[] = {KV_OP_GET, KV_OP_SET, KV_OP_EXISTS, KV_OP_INCR};
    static const struct {
        uint16_t op;
        kv_handler_fn fn;
    } table[] = {
        {KV_OP_PING, handle_ping},     {KV_OP_GET, handle_get},       {KV_OP_SET, handle_set},
        {KV_OP_DEL, handle_del},       {KV_OP_EXISTS, handle_exists}, {KV_OP_INCR, handle_incr},
        {KV_OP_MGET, handle_mget},     {KV_OP_MSET, handle_mset},
        {KV_OP_EXPIRE, handle_expire}, {KV_OP_SCAN, handle_scan},
        {KV_OP_STATS, handle_stats},   {KV_OP_FLUSH, handle_flush},   {KV_OP_AUTH, handle_auth},
        {KV_OP_STR, handle_str},       {KV_OP_RENAME, handle_rename}, {KV_OP_SWAPDB, handle_swapdb},
    };

    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        int rc = kv_worker_register(reg, table[i].op, table[i].fn, srv);

        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < sizeof(keyed) / sizeof(keyed[0]); i++) {
        int rc = kv_worker_register_prefetch(reg, keyed[i], prefetch_key);

        if (rc != 0)
            return rc;
    }
    return 0;
}
