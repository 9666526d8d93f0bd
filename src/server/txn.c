/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/txn.c -- transactions: the EXEC (atomic batch) and WATCH handlers.
 *
 * EXEC (kv.proto ExecRequest) runs its sub-requests through the ordinary handlers, one
 * after another, inside kv_worker_exclusive(): no other request of any client, and no
 * background change of the store (the expiry sweep), runs meanwhile, on any number of IO
 * or worker threads. The store runs the batch in its transaction mode (kv_shm_txn_begin /
 * commit): every slot change is undo-logged in the segment, so a kill -9 leaves the batch
 * wholly there or wholly absent, and the answer is sent only after the commit.
 *
 * WATCH records, in the connection's session, the version of each key as of when the
 * WATCH ran, or for an absent or expired key the store's version counter then; EXEC
 * checks them under the gate and aborts (nothing runs) when a key changed: a write, DEL,
 * EXPIRE, expiry or FLUSH changes the version or makes the key absent, and a key absent
 * at WATCH that was created since -- even if it is gone again -- reads as changed
 * (kv_shm_db_watch). Calls of one connection run in order, one after
 * another (src/io), so the session's watch list is touched by one handler at a time and
 * needs no lock. Each record has a db field (0 until databases exist). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The watch list of a session: records back to back, each a struct watch_rec then the
 * key, padded to 8 bytes. */
struct watch_rec {
    uint32_t db;      /* the key's database  */
    uint32_t klen;
    uint64_t version; /* as of the WATCH; 0 = absent */
    uint64_t epoch;   /* the store's version counter at the WATCH */
};

struct watch_list {
    uint8_t *p; /* owned (KV_MOD_SERVER) */
    size_t len, cap;
    size_t keys;
};

#define WATCH_REC_SIZE(klen) ((sizeof(struct watch_rec) + (klen) + 7) & ~(size_t)7)

static void watch_clear(struct kv_session *s)
{
    struct watch_list *w = s->watch;

    if (!w)
        return;
    kv_mem_free(KV_MOD_SERVER, w->p);
    kv_mem_free(KV_MOD_SERVER, w);
    s->watch = NULL;
}

static int watch_add(struct kv_session *s, uint32_t db, const uint8_t *key, size_t klen,
                     uint64_t version, uint64_t epoch, size_t limit)
{
    struct watch_list *w = s->watch;
    size_t need = WATCH_REC_SIZE(klen);
    struct watch_rec rec = {db, (uint32_t)klen, version, epoch};

    if (!w) {
        w = kv_mem_calloc(KV_MOD_SERVER, sizeof(*w));
        if (!w)
            return KV_ENOMEM;
        s->watch = w;
    }
    if (w->len + need > limit)
        return KV_ETOOBIG;
    if (w->len + need > w->cap) {
        size_t ncap = w->cap ? w->cap * 2 : 256;
        uint8_t *n;

        while (ncap < w->len + need)
            ncap *= 2;
        n = kv_mem_realloc(KV_MOD_SERVER, w->p, ncap);
        if (!n)
            return KV_ENOMEM;
        w->p = n;
        w->cap = ncap;
    }
    memcpy(w->p + w->len, &rec, sizeof(rec));
    memcpy(w->p + w->len + sizeof(rec), key, klen);
    w->len += need;
    w->keys++;
    return 0;
}

/* 1 when a watched key changed since its WATCH (under the gate: nothing else runs). */
static int watch_broken(struct kv_server *srv, const struct kv_session *s)
{
    const struct watch_list *w = s->watch;

    for (size_t off = 0; w && off < w->len;) {
        struct watch_rec rec;
        uint64_t v, mark, now;
        int rc;

        memcpy(&rec, w->p + off, sizeof(rec));
        rc = kv_shm_db_watch(srv->store, rec.db, w->p + off + sizeof(rec), rec.klen, &v, &mark,
                             &now);
        if (mark > rec.epoch) /* its database swapped, or (absent) a key written and gone */
            return 1;
        if (rec.version ? rc != 0 || v != rec.version /* rewritten, removed, expired */
                        : rc == 0)                     /* created */
            return 1;
        off += WATCH_REC_SIZE(rec.klen);
    }
    return 0;
}

void kv_server_session_end(void *ctx, struct kv_session *s)
{
    watch_clear(s);
    kv_server_resp_session_end(s);
}

/* ---- answers ----------------------------------------------------------------- */
static void answer(struct kv_call *call, uint16_t status, const char *msg)
{
    size_t n = msg ? strlen(msg) : 0;

    call->status = status;
    call->resp_len = 0;
    if (!n)
        return;
    if (n > 120)
        n = 120;
    if (n + 2 <= call->scratch_cap) { /* kv.Error{message}: tag 0x0A, one-byte length */
        call->scratch[0] = 0x0A;
        call->scratch[1] = (uint8_t)n;
        memcpy(call->scratch + 2, msg, n);
        call->resp = call->scratch;
        call->resp_owned = 0;
        call->resp_len = (uint32_t)(n + 2);
    }
}

static int authed(struct kv_server *srv, struct kv_call *call)
{
    if (srv->cfg->requirepass[0] == '\0' ||
        (__atomic_load_n(&call->session->flags, __ATOMIC_ACQUIRE) & KV_SESSION_AUTHED))
        return 1;
    answer(call, KV_ST_NOAUTH, "authentication required");
    return 0;
}

/* ---- WATCH ---------------------------------------------------------------------- */
static void handle_watch(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct pb_reader r = {call->body, call->body + call->body_len};
    struct pb_field f;
    uint32_t db = call->db; /* RESP: the SELECTed database; binary: field 3, else 0 */
    int unwatch = 0, rc, bad = 0;
    uint8_t *p;
    size_t n;

    while ((rc = pb_next(&r, &f)) == 1) {
        if (f.number == 1 && !authed(srv, call)) /* UNWATCH alone needs no AUTH (RESET's) */
            return;
        if (f.number == 1 && f.wire != 2)
            bad = 1;
        else if (f.number == 2 && f.wire == 0)
            unwatch = f.u64 != 0;
        else if (f.number == 3 && f.wire == 0)
            db = (uint32_t)f.u64;
        else if (f.number == 1 && (f.len == 0 || f.len > srv->cfg->max_key))
            bad = 1;
    }
    if (rc < 0 || bad || db >= srv->cfg->databases) {
        answer(call, KV_ST_BAD_REQUEST,
               db >= srv->cfg->databases ? "ERR DB index is out of range"
                                         : "body does not decode, or a bad key");
        return;
    }
    if (unwatch)
        watch_clear(call->session);
    r.p = call->body;
    while (pb_next(&r, &f) == 1) {
        uint64_t v, mark, now;

        if (f.number != 1)
            continue;
        if (kv_shm_db_watch(srv->store, db, f.data, f.len, &v, &mark, &now) != 0)
            v = 0;
        rc = watch_add(call->session, db, f.data, f.len, v, now, srv->cfg->max_body);
        if (rc != 0) {
            answer(call, rc == KV_ETOOBIG ? KV_ST_TOO_LARGE : KV_ST_OUT_OF_MEMORY,
                   rc == KV_ETOOBIG ? "watched keys above --max-body bytes" : "out of memory");
            return;
        }
    }
    n = call->session->watch ? ((struct watch_list *)call->session->watch)->keys : 0;
    p = call->scratch;
    call->status = KV_ST_OK;
    call->resp = p;
    call->resp_owned = 0;
    call->resp_len = n ? (uint32_t)pb_put_uint_field(p, 1, n) : 0;
}

/* ---- EXEC ------------------------------------------------------------------------- */
struct growbuf {
    uint8_t *p; /* owned (KV_MOD_PACKET) */
    size_t len, cap;
    int failed;
};

static void gb_bytes(struct growbuf *g, const void *b, size_t n)
{
    if (g->failed)
        return;
    if (g->len + n > g->cap) {
        size_t ncap = g->cap ? g->cap * 2 : 256;
        uint8_t *p;

        while (ncap < g->len + n)
            ncap *= 2;
        p = kv_mem_realloc(KV_MOD_PACKET, g->p, ncap);
        if (!p) {
            g->failed = 1;
            return;
        }
        g->p = p;
        g->cap = ncap;
    }
    if (n)
        memcpy(g->p + g->len, b, n);
    g->len += n;
}

/* One ExecResult{status, body} as field 1 of the response. */
static void gb_result(struct growbuf *g, uint16_t status, const uint8_t *body, size_t blen)
{
    uint8_t hdr[32];
    size_t inner = (status ? 1 + pb_varint_len(status) : 0) +
                   (blen ? 1 + pb_varint_len(blen) + blen : 0);
    size_t n = pb_put_len_prefix(hdr, 1, inner);

    if (status)
        n += pb_put_uint_field(hdr + n, 1, status);
    if (blen)
        n += pb_put_len_prefix(hdr + n, 2, blen);
    gb_bytes(g, hdr, n);
    gb_bytes(g, body, blen);
}

/* The opcode and body of an ExecSub; 0, or -1 when it does not decode. */
static int sub_parse(const uint8_t *p, size_t len, uint32_t *opcode, const uint8_t **body,
                     size_t *blen, uint64_t *db)
{
    struct pb_reader r = {p, p + len};
    struct pb_field f;
    int rc;

    *opcode = 0;
    *db = 0;
    *body = (const uint8_t *)"";
    *blen = 0;
    while ((rc = pb_next(&r, &f)) == 1) {
        if (f.number == 1 && f.wire == 0)
            *opcode = (uint32_t)f.u64;
        else if (f.number == 2 && f.wire == 2) {
            *body = f.data;
            *blen = f.len;
        } else if (f.number == 4 && f.wire == 0) {
            *db = f.u64; /* the database plus one (the RESP adapter's SELECT inside MULTI) */
        } else if (f.number <= 4 && f.wire != (f.number == 2 ? 2u : 0u))
            return -1;
    }
    return rc;
}

/* WATCH with keys inside a batch: a nested WATCH would watch nothing useful. */
static int sub_watches_keys(const uint8_t *body, size_t blen)
{
    struct pb_reader r = {body, body + blen};
    struct pb_field f;

    while (pb_next(&r, &f) == 1)
        if (f.number == 1)
            return 1;
    return 0;
}

struct exec_run {
    struct kv_server *srv;
    struct kv_call *call;
    struct growbuf out;
    int aborted;
    int rc;
};

/* Inside the exclusive section: check the watches, run every sub-request, commit. */
static void exec_body(void *arg)
{
    struct exec_run *x = arg;
    struct kv_server *srv = x->srv;
    struct kv_call *call = x->call;
    struct pb_reader r = {call->body, call->body + call->body_len};
    struct pb_field f;
    uint8_t room[256] __attribute__((aligned(8)));

    if (watch_broken(srv, call->session)) {
        x->aborted = 1;
        return;
    }
    x->rc = kv_shm_txn_begin(srv->store);
    if (x->rc != 0)
        return;
    __atomic_add_fetch(&srv->save.exec_seq, 1, __ATOMIC_ACQ_REL); /* odd: changing (save.c) */
    while (pb_next(&r, &f) == 1) {
        struct kv_call sub;
        uint32_t op;
        const uint8_t *body;
        size_t blen;

        if (f.number != 1)
            continue;
        uint64_t db;

        sub_parse(f.data, f.len, &op, &body, &blen, &db); /* checked before */
        memset(&sub, 0, sizeof(sub));
        sub.session = call->session;
        sub.origin = call->origin;
        sub.db = db ? (uint32_t)(db - 1) : call->db; /* its own, else the one EXEC runs in */
        sub.opcode = (uint16_t)op;
        sub.body = body;
        sub.body_len = (uint32_t)blen;
        sub.scratch = room;
        sub.scratch_cap = sizeof(room);
        sub.writes_ok = 1; /* judged for the whole EXEC before it began (handle_exec) */
        kv_worker_run(srv->reg, &sub);
        gb_result(&x->out, sub.status, sub.resp, sub.resp_len);
        if (sub.resp_owned)
            kv_mem_free(KV_MOD_PACKET, sub.resp);
    }
    kv_shm_txn_commit(srv->store);
    __atomic_add_fetch(&srv->save.exec_seq, 1, __ATOMIC_ACQ_REL);
}

/* The value of varint field number in body, or def. */
static uint64_t body_uint(const uint8_t *body, size_t blen, uint32_t number, uint64_t def)
{
    struct pb_reader r = {body, body + blen};
    struct pb_field f;

    while (pb_next(&r, &f) == 1)
        if (f.number == number && f.wire == 0)
            def = f.u64;
    return def;
}

/* A sub-request that never writes: the read opcodes, EXPIRE's QUERY and IDLE (TTL,
 * EXPIRETIME, OBJECT IDLETIME), the string family's reads (STRLEN, GETRANGE, GETBIT,
 * BITCOUNT, BITPOS, LCS). */
static int sub_reads_only(uint32_t op, const uint8_t *body, size_t blen)
{
    if (op == KV_OP_EXPIRE) {
        uint64_t a = body_uint(body, blen, 2, 0);
        return a == KV__EXPIRE_REQUEST__ACTION__QUERY || a == KV__EXPIRE_REQUEST__ACTION__IDLE;
    }
    if (op == KV_OP_STR) {
        uint64_t o = body_uint(body, blen, 1, 0);
        return o == KV__STR_REQUEST__OP__STRLEN || o == KV__STR_REQUEST__OP__GETRANGE ||
               o == KV__STR_REQUEST__OP__GETBIT || o == KV__STR_REQUEST__OP__BITCOUNT ||
               o == KV__STR_REQUEST__OP__BITPOS || o == KV__STR_REQUEST__OP__LCS;
    }
    return op == KV_OP_GET || op == KV_OP_MGET || op == KV_OP_EXISTS || op == KV_OP_SCAN ||
           op == KV_OP_PING || op == KV_OP_STATS || op == KV_OP_WATCH;
}

static void handle_exec(void *ctx, struct kv_call *call)
{
    struct kv_server *srv = ctx;
    struct exec_run x = {.srv = srv, .call = call};
    struct pb_reader r = {call->body, call->body + call->body_len};
    struct pb_field f;
    int rc, writes = 0;

    if (!authed(srv, call))
        return;
    while ((rc = pb_next(&r, &f)) == 1) {
        uint32_t op;
        const uint8_t *body;
        size_t blen;

        if (f.number != 1)
            continue;
        uint64_t db;

        if (f.wire != 2 || sub_parse(f.data, f.len, &op, &body, &blen, &db) != 0) {
            rc = -1;
            break;
        }
        if (db > srv->cfg->databases) {
            answer(call, KV_ST_BAD_REQUEST, "ERR DB index is out of range");
            return;
        }
        if (op == KV_OP_EXEC || (op == KV_OP_WATCH && sub_watches_keys(body, blen))) {
            answer(call, KV_ST_BAD_REQUEST, "EXEC and WATCH with keys cannot be inside EXEC");
            return;
        }
        writes |= !sub_reads_only(op, body, blen);
    }
    /* a failed sync refuses an EXEC that would write, whole (as Redis's MISCONF) */
    int e = rc >= 0 && writes ? kv_server_writes_refused(srv) : 0;
    if (e) {
        char m[200];

        watch_clear(call->session); /* a refused EXEC forgets its watches, as Redis */
        answer(call, KV_ST_DISK_ERROR, kv_server_disk_error(e, m, sizeof(m)));
        return;
    }
    if (rc < 0) {
        answer(call, KV_ST_BAD_REQUEST, "body does not decode");
        return;
    }
    /* a save's last try holds EXECs off (save.c): waited for here, outside the gate */
    pthread_rwlock_rdlock(&srv->save.exec_hold);
    kv_worker_exclusive(srv->reg, exec_body, &x);
    pthread_rwlock_unlock(&srv->save.exec_hold);
    watch_clear(call->session); /* EXEC, run or aborted, forgets every watch */
    if (x.rc != 0) {
        kv_mem_free(KV_MOD_PACKET, x.out.p);
        answer(call, KV_ST_INTERNAL, kv_strerror(x.rc));
        return;
    }
    if (x.aborted) {
        uint8_t b[4];

        gb_bytes(&x.out, b, pb_put_uint_field(b, 2, 1));
    }
    if (x.out.failed) {
        kv_mem_free(KV_MOD_PACKET, x.out.p);
        answer(call, KV_ST_OUT_OF_MEMORY, "out of memory for the answer of EXEC");
        return;
    }
    call->status = KV_ST_OK;
    call->resp = x.out.p;
    call->resp_len = (uint32_t)x.out.len;
    call->resp_owned = x.out.p != NULL;
}

int kv_server_txn_register(struct kv_server *srv, struct kv_worker_registry *reg)
{
    int rc = kv_worker_register(reg, KV_OP_EXEC, handle_exec, srv);

    if (rc == 0)
        rc = kv_worker_register(reg, KV_OP_WATCH, handle_watch, srv);
    return rc;
}
