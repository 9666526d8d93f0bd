/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/resp_cmds.c -- the Redis commands of libevkv: the text-protocol
 * adapter the IO threads call with each parsed RESP command (argv pointing
 * into the receive buffer).
 *
 * A command either becomes one internal call -- an opcode and a protobuf
 * body, exactly what a binary client would send -- so the same handlers,
 * workers, limits and accounting serve both protocols; or it is answered on
 * the spot (PING, QUIT, SELECT, COMMAND, CONFIG GET, CLIENT, argument
 * errors). Each command is one row of resp_cmds[] (name, arity, flags, the
 * function, the reply style); the call's tag is the reply style, a row of
 * reply_styles[] that turns the handler's answer back into a Redis reply on
 * the IO thread. Error strings follow Redis 7.0's, so clients' error
 * handling works unchanged. */
#include <assert.h>
#include <ctype.h>
#include <pthread.h>
#include <signal.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "kv_call.h"
#include "kv_err.h"
#include "frame.h"
#include "glob.h"
#include "kv_io.h"
#include "kv_mem.h"
#include "kv_ops.h"
#include "kv_shm.h"
#include "options.h"
#include "pb.h"
#include "server_int.h"


/* How a finished call becomes a reply (the call's tag). */
enum reply_style {
    RS_OK,          /* +OK */
    RS_SET,         /* +OK; nil when NX/XX refused */
    RS_SET_GET,     /* the old value or nil */
    RS_BULK,        /* GET: the value or nil */
    RS_ECHO,        /* the echoed body as a bulk string */
    RS_INT_FIELD1,  /* :field 1 (DEL, EXISTS) */
    RS_INT_INCR,    /* :value (sint64 field 1) */
    RS_COUNT_FOUND, /* :number of found entries of an MGET (multi-key EXISTS) */
    RS_MGET,        /* array of bulk/nil */
    RS_EXPIRE,      /* :1, or :0 when the key is missing */
    RS_TTL_S,       /* :seconds, -1 no ttl, -2 missing */
    RS_TTL_MS,
    RS_PERSIST,     /* :1 when a ttl was removed */
    RS_SCAN,        /* *2 cursor keys */
    RS_DBSIZE,      /* :keys from STATS */
    RS_AUTH,        /* +OK or -WRONGPASS */
    RS_SETNX,       /* :1 stored, :0 refused (SETNX, MSETNX) */
    RS_STR_INT,     /* :number of a StrResponse */
    RS_STR_BULK,    /* its value, or nil when the key was absent */
    RS_STR_STRING,  /* its value, always a bulk string */
    RS_LCS_IDX,     /* LCS ... IDX: matches and len */
    RS_KEYS,        /* array of the keys of a ScanResponse */
    RS_MEMORY_USAGE, /* :estimated bytes of a GET's item, nil when absent */
    RS_RANDOMKEY,   /* its key, or nil */
    RS_TYPE,        /* +string / +none from an ExistsResponse */
    RS_EXPIRETIME_S, /* absolute expiry (now + ttl), -1 none, -2 missing */
    RS_EXPIRETIME_MS,
    RS_RENAME,      /* +OK; -ERR no such key */
    RS_RENAMENX,    /* :1 / :0; -ERR no such key */
    RS_MOVED,       /* :1 / :0, :0 when the source is absent (MOVE, COPY) */
    RS_EXEC,        /* EXEC: an array of each sub-request's reply, nil when WATCH aborted */
    RS_EXECABORT,   /* -EXECABORT (the UNWATCH call of an EXEC refused at queue time) */
    RS_RAW,         /* the answer is the reply's bytes (inside EXEC: queued replies) */
    RS_OK_ERR,      /* +OK; BAD_REQUEST's Redis error text verbatim (SWAPDB inside EXEC) */
    RS_RESET,       /* +RESET, whatever the answer (RESET's UNWATCH call) */
    RS_LOCAL,       /* EXEC: a connection command queued in MULTI (its argv is the body),
                     * run on the IO thread as EXEC's reply is laid out (rs_exec) */
    RS_IDLETIME,    /* OBJECT IDLETIME: :seconds idle, nil when missing */
    RS_FREQ,        /* OBJECT FREQ: Redis's no-LFU error, nil when missing */
    RS__COUNT,
    RS_NONE = RS__COUNT, /* answered on the spot: no call */
};

/* ---- output buffer ------------------------------------------------------ */
struct out {
    uint8_t *p;  /* owned (KV_MOD_PACKET) until handed over, or in_room */
    size_t len, cap;
    int failed;
    int in_room; /* p is a room not ours: the call's scratch (out_init_room)
                  * or the connection's output (resp_reply) */
    int resp3;   /* the connection speaks RESP3 (HELLO 3): nulls, maps, verbatim text */
};

/* Grows to at least len + more: the first allocation is what the caller
 * sized (out_init) or the need itself, so a reply or body that was sized
 * right is one allocation, never a chain of reallocs. */
static void out_grow(struct out *o, size_t more)
{
    size_t ncap = o->cap ? o->cap * 2 : 64;
    while (ncap < o->len + more)
        ncap *= 2;
    uint8_t *n;
    if (o->in_room) { /* the estimate was short: move to the heap */
        n = kv_mem_alloc(KV_MOD_PACKET, ncap);
        if (n)
            memcpy(n, o->p, o->len);
        else
            o->p = NULL; /* the room is not ours to free */
        o->in_room = 0;
    } else {
        n = kv_mem_realloc(KV_MOD_PACKET, o->p, ncap); /* on failure p is freed later */
    }
    if (!n) {
        o->failed = 1;
        return;
    }
    o->p = n;
    o->cap = ncap;
}

static inline void out_reserve(struct out *o, size_t more)
{
    if (!o->failed && o->len + more > o->cap)
        out_grow(o, more);
}

/* Allocates cap bytes up front (an estimate of the whole output). */
static void out_init(struct out *o, size_t cap)
{
    if (o->p || o->failed)
        return;
    o->p = kv_mem_alloc(KV_MOD_PACKET, cap ? cap : 1);
    if (!o->p)
        o->failed = 1;
    else
        o->cap = cap ? cap : 1;
}

/* Starts o in room (room_cap bytes, not ours) when the estimate est fits
 * there, else on the heap with est bytes. Either way a longer output still
 * works: out_grow moves it to the heap. */
static void out_start(struct out *o, uint8_t *room, size_t room_cap, size_t est)
{
    if (room && est <= room_cap) {
        o->p = room;
        o->cap = room_cap;
        o->in_room = 1;
    } else {
        out_init(o, est);
    }
}

/* A request body of about est bytes is built in the call's own scratch room,
 * keeping at least OUT_ANSWER_ROOM bytes of it for the answer (a GET of a
 * 100-byte value, a SET's version): no allocation for the body of a small
 * command. dispatch() moves call->scratch past the body. */
#define OUT_ANSWER_ROOM 32
static void out_init_room(struct out *o, struct kv_call *call, size_t est)
{
    size_t cap = call->scratch_cap > OUT_ANSWER_ROOM ? call->scratch_cap - OUT_ANSWER_ROOM : 0;

    out_start(o, cap ? call->scratch : NULL, cap, est);
}

static inline void out_bytes(struct out *o, const void *b, size_t n)
{
    out_reserve(o, n);
    if (!o->failed && n) { /* n == 0 may come with b == NULL (ECHO "") */
        memcpy(o->p + o->len, b, n);
        o->len += n;
    }
}

/* Gives up what o holds: its heap buffer; a room is not ours to free. */
static void out_release(struct out *o)
{
    if (!o->in_room)
        kv_mem_free(KV_MOD_PACKET, o->p);
    o->p = NULL;
    o->len = o->cap = 0;
}

static void out_fmt(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_fmt(struct out *o, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        out_bytes(o, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* "<type><decimal>\r\n" (":12", "$100", "*10", ":-2"): the header of every
 * bulk, array and integer reply, without a printf per line. */
static void out_line_int(struct out *o, char type, int64_t v)
{
    char buf[24], *p = buf + sizeof(buf);
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;

    *--p = '\n';
    *--p = '\r';
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    *--p = type;
    out_bytes(o, p, (size_t)(buf + sizeof(buf) - p));
}

static void out_bulk(struct out *o, const void *b, size_t n)
{
    out_reserve(o, n + 24);
    out_line_int(o, '$', (int64_t)n);
    out_bytes(o, b, n);
    out_bytes(o, "\r\n", 2);
}

#define OUT_LIT(o, lit) out_bytes((o), (lit), sizeof(lit) - 1)

static void out_nil(struct out *o)
{
    if (o->resp3)
        out_bytes(o, "_\r\n", 3);
    else
        out_bytes(o, "$-1\r\n", 5);
}

/* A map of n pairs: RESP3's "%n", RESP2's flat array of 2n. */
static void out_map(struct out *o, int64_t n)
{
    out_line_int(o, o->resp3 ? '%' : '*', o->resp3 ? n : 2 * n);
}

/* A set of n: RESP3's "~n", RESP2's array. */
static void out_set(struct out *o, int64_t n)
{
    out_line_int(o, o->resp3 ? '~' : '*', n);
}

/* Text for people (INFO, CLIENT LIST): RESP3's verbatim "=", else a bulk. */
static void out_verbatim(struct out *o, const void *b, size_t n)
{
    if (!o->resp3) {
        out_bulk(o, b, n);
        return;
    }
    out_reserve(o, n + 28);
    out_line_int(o, '=', (int64_t)n + 4);
    out_bytes(o, "txt:", 4);
    out_bytes(o, b, n);
    out_bytes(o, "\r\n", 2);
}

/* Hands the bytes over as a reply; KV_ENOMEM when building them failed. */
static int out_reply(struct out *o, struct kv_text_result *res)
{
    if (o->failed) {
        out_release(o);
        return KV_ENOMEM;
    }
    res->reply = o->p;
    res->reply_len = o->len;
    return KV_TEXT_REPLY;
}

static int reply_str(struct kv_text_result *res, const char *s)
{
    struct out o = {0};

    out_bytes(&o, s, strlen(s));
    return out_reply(&o, res);
}

static int reply_err(struct kv_text_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int reply_err(struct kv_text_result *res, const char *fmt, ...)
{
    char buf[400];
    struct out o = {0};
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    for (char *c = buf; *c; c++)
        if (*c == '\r' || *c == '\n')
            *c = ' '; /* an error line stays one line */
    out_fmt(&o, "%s\r\n", buf);
    return out_reply(&o, res);
}

/* ---- request bodies (protobuf, hand-encoded as a binary client would) --- */
static void body_bytes(struct out *o, uint32_t field, const struct kv_slice *s)
{
    uint8_t tag[16];

    out_bytes(o, tag, pb_put_len_prefix(tag, field, s->len));
    out_bytes(o, s->p, s->len);
}

static void body_uint(struct out *o, uint32_t field, uint64_t v)
{
    uint8_t b[16];

    if (v)
        out_bytes(o, b, pb_put_uint_field(b, field, v));
}

static int dispatch(struct out *o, struct kv_call *call, struct kv_text_result *res,
                    uint16_t op, enum reply_style style)
{
    if (o->failed) {
        out_release(o);
        return KV_ENOMEM;
    }
    call->opcode = op;
    call->tag = style;
    res->body = o->p;
    res->body_len = o->len;
    if (o->in_room) { /* the answer may use what the body left of the room */
        size_t used = (o->len + 7) & ~(size_t)7;
        call->scratch += used;
        call->scratch_cap -= used;
        res->body_in_scratch = 1;
    }
    return KV_TEXT_DISPATCH;
}

/* ---- argument helpers --------------------------------------------------- */
static int arg_is(const struct kv_slice *a, const char *word)
{
    size_t n = strlen(word);

    return a->len == n && strncasecmp((const char *)a->p, word, n) == 0;
}

/* Parses a whole decimal int64 argument. */
static int arg_int(const struct kv_slice *a, long long *out)
{
    char buf[32];
    char *end;

    if (a->len == 0 || a->len >= sizeof(buf))
        return -1;
    memcpy(buf, a->p, a->len);
    buf[a->len] = '\0';
    errno = 0;
    *out = strtoll(buf, &end, 10);
    return errno || *end || isspace((unsigned char)buf[0]) ? -1 : 0;
}

static int wrong_args(struct kv_text_result *res, const struct kv_slice *cmd)
{
    char name[32];
    size_t n = cmd->len < sizeof(name) - 1 ? cmd->len : sizeof(name) - 1;

    for (size_t i = 0; i < n; i++)
        name[i] = (char)tolower(cmd->p[i]);
    name[n] = '\0';
    return reply_err(res, "-ERR wrong number of arguments for '%s' command", name);
}

static int not_integer(struct kv_text_result *res)
{
    return reply_err(res, "-ERR value is not an integer or out of range");
}

/* ---- commands --------------------------------------------------------------- */
struct resp_cmd;

struct cmdctx {
    struct kv_server *srv;
    struct kv_session *session;
    size_t argc;
    const struct kv_slice *argv;
    struct kv_call *call;
    struct kv_text_result *res;
    const struct resp_cmd *cmd; /* the row of argv[0] */
};

/* Builds the request (dispatch) or answers on the spot (out_reply / reply_*). */
typedef int (*resp_cmd_fn)(struct cmdctx *x);

/* Command flags, after Redis's command table. */
#define CMD_WRITE 0x1u    /* may change the keyspace */
#define CMD_READONLY 0x2u /* reads keys, changes nothing */
#define CMD_NOAUTH 0x4u   /* runs before AUTH when a password is set */
#define CMD_ADMIN 0x8u    /* server-wide (FLUSHALL, CONFIG, ...) */
#define CMD_FAST 0x10u    /* O(1) or O(log n) */
#define CMD_LOCAL 0x20u   /* answered by the IO thread, never reaches a handler */
#define CMD_TXN 0x40u     /* runs at once inside MULTI (EXEC, DISCARD, MULTI, WATCH, QUIT) */
#define CMD_NOMULTI 0x80u /* refused inside MULTI (the transaction is then aborted) */
/* A local command that reads nothing an earlier call of its connection can change (or
 * whose effect every later call carries, as SELECT's database): it runs as it is parsed.
 * Every other local command waits until the connection's earlier calls have run (an INFO
 * or SAVE pipelined after a SET sees it; a RESET never takes AUTH from calls before it). */
#define CMD_PURE 0x100u

/* One row per command: Redis's command table (server.c, commands/ *.json) is
 * the model. arity counts argv[0]: N = exactly N, -N = at least N. style is
 * how the answer of the call fn dispatches becomes a reply (RS_NONE for a
 * command answered on the spot); aux is the row's parameter to fn (INCR's
 * delta, ...), so that sibling commands share one function. */
struct resp_cmd {
    const char *name;
    int arity;
    uint32_t flags;
    resp_cmd_fn fn;
    enum reply_style style;
    int64_t aux;
};

/* Dispatches o as the body of a call of opcode op, whose answer becomes a
 * reply by the row's style. */
static int send_call(struct cmdctx *x, struct out *o, uint16_t op)
{
    return dispatch(o, x->call, x->res, op, x->cmd->style);
}

/* The connection speaks RESP3 (HELLO 3). */
static int conn_resp3(const struct cmdctx *x)
{
    return __atomic_load_n(&x->session->resp, __ATOMIC_RELAXED) == 3;
}

static int cmd_ping(struct cmdctx *x)
{
    struct out o = {0};

    if (x->argc > 2)
        return wrong_args(x->res, &x->argv[0]);
    if (x->argc == 1)
        return reply_str(x->res, "+PONG\r\n");
    out_bulk(&o, x->argv[1].p, x->argv[1].len);
    return out_reply(&o, x->res);
}

static int cmd_quit(struct cmdctx *x)
{
    x->res->close = 1;
    return reply_str(x->res, "+OK\r\n");
}

static int cmd_auth(struct cmdctx *x)
{
    struct out o = {0};

    if (x->argc > 3)
        return reply_err(x->res, "-ERR syntax error");
    if (x->argc == 3 && !arg_is(&x->argv[1], "default"))
        return reply_err(x->res, "-WRONGPASS invalid username-password pair or user is disabled.");
    if (x->argc == 2 && !x->srv->cfg->requirepass[0]) /* Redis 7.0's authCommand */
        return reply_err(x->res, "-ERR AUTH <password> called without any password configured "
                                 "for the default user. Are you sure your configuration is "
                                 "correct?");
    body_bytes(&o, 1, &x->argv[x->argc - 1]);
    return send_call(x, &o, KV_OP_AUTH);
}

/* Every argument after the name is a key: field 1, repeated. */
static int keys_body(struct cmdctx *x, size_t first, uint16_t op, enum reply_style style)
{
    struct out o = {0};
    size_t need = 0;

    for (size_t i = first; i < x->argc; i++)
        need += x->argv[i].len + 16; /* tag + length prefix <= 16 */
    out_init_room(&o, x->call, need);
    for (size_t i = first; i < x->argc; i++)
        body_bytes(&o, 1, &x->argv[i]);
    return dispatch(&o, x->call, x->res, op, style);
}

/* aux is the opcode. */
static int cmd_keys(struct cmdctx *x)
{
    return keys_body(x, 1, (uint16_t)x->cmd->aux, x->cmd->style);
}

static int cmd_exists(struct cmdctx *x)
{
    return x->argc == 2 ? keys_body(x, 1, KV_OP_EXISTS, RS_INT_FIELD1)
                        : keys_body(x, 1, KV_OP_MGET, RS_COUNT_FOUND);
}

static int incr_body(struct cmdctx *x, long long delta)
{
    struct out o = {0};

    out_init_room(&o, x->call, x->argv[1].len + 32);
    body_bytes(&o, 1, &x->argv[1]);
    body_uint(&o, 2, pb_zigzag_encode(delta));
    return send_call(x, &o, KV_OP_INCR);
}

/* INCR, DECR: aux is the delta. */
static int cmd_incr(struct cmdctx *x)
{
    return incr_body(x, x->cmd->aux);
}

/* INCRBY, DECRBY: aux is the sign of the argument. */
static int cmd_incrby(struct cmdctx *x)
{
    long long n;

    if (arg_int(&x->argv[2], &n) != 0 || (x->cmd->aux < 0 && n == INT64_MIN))
        return not_integer(x->res);
    return incr_body(x, x->cmd->aux < 0 ? -n : n);
}

static int expire_body(struct cmdctx *x, int action, long long ms, enum reply_style style)
{
    struct out o = {0};

    out_init_room(&o, x->call, x->argv[1].len + 48);
    body_bytes(&o, 1, &x->argv[1]);
    body_uint(&o, 2, (uint64_t)action);
    body_uint(&o, 3, (uint64_t)ms);
    return dispatch(&o, x->call, x->res, KV_OP_EXPIRE, style);
}

static int64_t now_ms(void);
static int expire_err(struct cmdctx *x, const char *err);

/* EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT [NX|XX|GT|LT]: aux is the unit in ms,
 * negative for an absolute time. Redis's order: options, then the number,
 * then its range. A time already past deletes the key (when the conditions
 * hold). */
static int cmd_expire(struct cmdctx *x)
{
    enum { NX = 1, XX = 2, GT = 4, LT = 8 };
    int64_t unit = x->cmd->aux < 0 ? -x->cmd->aux : x->cmd->aux, base;
    unsigned cond = 0;
    long long when, ttl;
    struct out o = {0};

    for (size_t i = 3; i < x->argc; i++) {
        const struct kv_slice *a = &x->argv[i];

        if (arg_is(a, "NX"))
            cond |= NX;
        else if (arg_is(a, "XX"))
            cond |= XX;
        else if (arg_is(a, "GT"))
            cond |= GT;
        else if (arg_is(a, "LT"))
            cond |= LT;
        else
            return reply_err(x->res, "-ERR Unsupported option %.*s", (int)(a->len < 64 ? a->len : 64),
                             (const char *)a->p);
    }
    if ((cond & NX) && (cond & (XX | GT | LT)))
        return reply_err(x->res,
                         "-ERR NX and XX, GT or LT options at the same time are not compatible");
    if ((cond & GT) && (cond & LT))
        return reply_err(x->res, "-ERR GT and LT options at the same time are not compatible");
    if (arg_int(&x->argv[2], &when) != 0)
        return not_integer(x->res);
    if (when > INT64_MAX / unit || when < INT64_MIN / unit)
        return expire_err(x, "invalid");
    when *= unit;
    base = x->cmd->aux < 0 ? 0 : now_ms();
    if (when > INT64_MAX - base)
        return expire_err(x, "invalid");
    if (__builtin_sub_overflow(when + base, now_ms(), &ttl)) /* from now, in ms */
        ttl = -1; /* far in the past */
    if (ttl <= 0 && !cond) /* Redis deletes a key given a time in the past */
        return keys_body(x, 1, KV_OP_DEL, RS_INT_FIELD1);
    if (ttl > INT64_MAX / 4)
        ttl = INT64_MAX / 4; /* ~73 million years: the store's arithmetic stays in range */
    out_init_room(&o, x->call, x->argv[1].len + 48);
    body_bytes(&o, 1, &x->argv[1]);
    body_uint(&o, 3, ttl > 0 ? (uint64_t)ttl : 0);
    body_uint(&o, 4, cond);
    body_uint(&o, 5, ttl <= 0);
    return send_call(x, &o, KV_OP_EXPIRE);
}

static int cmd_persist(struct cmdctx *x)
{
    return expire_body(x, 1, 0, RS_PERSIST);
}

/* TTL, PTTL: the style says the unit. */
static int cmd_ttl(struct cmdctx *x)
{
    return expire_body(x, 2, 0, x->cmd->style);
}

/* SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]: the glob is Redis's,
 * filtered in the server (its literal prefix narrows the store's scan). */
static int cmd_scan(struct cmdctx *x)
{
    const struct kv_slice *v = x->argv;
    struct out o = {0};
    const struct kv_slice *pattern = NULL;
    unsigned long long cursor;
    long long count = 10;
    char buf[32], *end;
    int other_type = 0;

    if (v[1].len == 0 || v[1].len >= sizeof(buf) || !isdigit(v[1].p[0]))
        return reply_err(x->res, "-ERR invalid cursor");
    memcpy(buf, v[1].p, v[1].len);
    buf[v[1].len] = '\0';
    errno = 0;
    cursor = strtoull(buf, &end, 10);
    if (errno || *end)
        return reply_err(x->res, "-ERR invalid cursor");
    for (size_t i = 2; i < x->argc; i++) {
        if (arg_is(&v[i], "MATCH") && i + 1 < x->argc) {
            pattern = &v[++i];
        } else if (arg_is(&v[i], "COUNT") && i + 1 < x->argc) {
            if (arg_int(&v[++i], &count) != 0)
                return not_integer(x->res);
            if (count < 1)
                return reply_err(x->res, "-ERR syntax error");
        } else if (arg_is(&v[i], "TYPE") && i + 1 < x->argc) {
            other_type = !arg_is(&v[++i], "string"); /* every value is a string */
        } else {
            return reply_err(x->res, "-ERR syntax error");
        }
    }
    if (other_type)
        return reply_str(x->res, "*2\r\n$1\r\n0\r\n*0\r\n");
    body_uint(&o, 1, (uint64_t)cursor);
    body_uint(&o, 3, (uint64_t)(count > 10000 ? 10000 : count));
    if (pattern && !(pattern->len == 1 && pattern->p[0] == '*'))
        body_bytes(&o, 4, pattern);
    return send_call(x, &o, KV_OP_SCAN);
}

static int cmd_keys_glob(struct cmdctx *x)
{
    struct out o = {0};
    const struct kv_slice *pattern = &x->argv[1];

    if (!(pattern->len == 1 && pattern->p[0] == '*'))
        body_bytes(&o, 4, pattern);
    body_uint(&o, 5, 1);
    return send_call(x, &o, KV_OP_SCAN);
}

static int cmd_randomkey(struct cmdctx *x)
{
    struct out o = {0};

    body_uint(&o, 6, 1);
    return send_call(x, &o, KV_OP_SCAN);
}

/* MEMORY USAGE key [SAMPLES n]: an estimate of the bytes the key's item takes
 * in the store: the value + 64 (item header and a typical key; the size class
 * may round the chunk up further); nil when the key is absent. */
static int cmd_memory(struct cmdctx *x)
{
    long long n;

    if (!arg_is(&x->argv[1], "USAGE"))
        return reply_err(x->res, "-ERR unknown subcommand '%.*s'. Try MEMORY HELP.",
                         (int)(x->argv[1].len < 64 ? x->argv[1].len : 64),
                         (const char *)x->argv[1].p);
    if (x->argc != 3 && !(x->argc == 5 && arg_is(&x->argv[3], "SAMPLES")))
        return reply_err(x->res, "-ERR syntax error");
    if (x->argc == 5 && arg_int(&x->argv[4], &n) != 0)
        return not_integer(x->res);
    return keys_body(x, 2, KV_OP_GET, RS_MEMORY_USAGE);
}

/* OBJECT IDLETIME | FREQ key, HELP. IDLETIME reads the item's LRU time without
 * touching it; FREQ is tracked only under an LFU policy, which libevkv does not
 * have, so it answers Redis's error for that (nil for a missing key first, as
 * Redis). ENCODING and REFCOUNT are not here: a string's encoding is not kept
 * (README, "Redis's own test suite"). */
static int cmd_object(struct cmdctx *x)
{
    const struct kv_slice *sub = &x->argv[1];
    struct out o = {0};

    if (arg_is(sub, "HELP") && x->argc == 2) {
        static const char *const help[] = {
            "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "FREQ <key>",
            "    Return the access frequency index of the key <key>.",
            "IDLETIME <key>",
            "    Return the idle time of the key <key>.",
            "HELP",
            "    Print this help.",
        };
        out_fmt(&o, "*%zu\r\n", sizeof(help) / sizeof(help[0]));
        for (size_t i = 0; i < sizeof(help) / sizeof(help[0]); i++)
            out_fmt(&o, "+%s\r\n", help[i]);
        return out_reply(&o, x->res);
    }
    if (arg_is(sub, "IDLETIME") || arg_is(sub, "FREQ")) {
        int idle = arg_is(sub, "IDLETIME");

        if (x->argc != 3)
            return reply_err(x->res, "-ERR wrong number of arguments for 'object|%s' command",
                             idle ? "idletime" : "freq");
        out_init_room(&o, x->call, x->argv[2].len + 16);
        body_bytes(&o, 1, &x->argv[2]);
        body_uint(&o, 2, idle ? 3 /* IDLE */ : 2 /* QUERY */);
        return dispatch(&o, x->call, x->res, KV_OP_EXPIRE, idle ? RS_IDLETIME : RS_FREQ);
    }
    return reply_err(x->res, "-ERR unknown subcommand '%.*s'. Try OBJECT HELP.",
                     (int)(sub->len < 64 ? sub->len : 64), (const char *)sub->p);
}

static int cmd_time(struct cmdctx *x)
{
    struct out o = {0};
    struct timespec ts;
    char sec[24], usec[24];

    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(sec, sizeof(sec), "%lld", (long long)ts.tv_sec);
    snprintf(usec, sizeof(usec), "%ld", ts.tv_nsec / 1000);
    OUT_LIT(&o, "*2\r\n");
    out_bulk(&o, sec, strlen(sec));
    out_bulk(&o, usec, strlen(usec));
    return out_reply(&o, x->res);
}

static int cmd_echo(struct cmdctx *x)
{
    struct out o = {0};

    out_bytes(&o, x->argv[1].p, x->argv[1].len);
    return send_call(x, &o, KV_OP_PING);
}

/* DBSIZE, FLUSHDB, FLUSHALL: a call with an empty body; aux is the opcode. */
static int cmd_nobody(struct cmdctx *x)
{
    struct out o = {0};

    if (x->cmd->aux == KV_OP_FLUSH && x->argc > 2) /* ASYNC / SYNC accepted */
        return reply_err(x->res, "-ERR syntax error");

    return send_call(x, &o, (uint16_t)x->cmd->aux);
}

/* A database number argument: 0 when it is one of --databases, else the reply sent
 * (bad_int: the error of a non-integer, NULL for Redis's usual one). */
static int db_arg(struct cmdctx *x, const struct kv_slice *a, const char *bad_int, long long *db)
{
    if (arg_int(a, db) != 0) {
        if (bad_int)
            return reply_err(x->res, "-ERR %s", bad_int);
        return not_integer(x->res);
    }
    if (*db < 0 || *db >= (long long)x->srv->cfg->databases)
        return reply_err(x->res, "-ERR DB index is out of range");
    return 0;
}

/* SELECT n: the connection's database, for every call built after it (the call carries
 * it: a command queued before the SELECT keeps the database it was built in). */
static int cmd_select(struct cmdctx *x)
{
    long long n;
    int rc = db_arg(x, &x->argv[1], NULL, &n);

    if (rc)
        return rc;
    __atomic_store_n(&x->session->db, (uint16_t)n, __ATOMIC_RELAXED); /* CLIENT LIST reads it */
    return reply_str(x->res, "+OK\r\n");
}

/* FLUSHDB (aux 1: the connection's database) and FLUSHALL [ASYNC|SYNC]. */
static int cmd_flush(struct cmdctx *x)
{
    struct out o = {0};

    if (x->argc > 2 || (x->argc == 2 && !arg_is(&x->argv[1], "ASYNC") &&
                        !arg_is(&x->argv[1], "SYNC")))
        return reply_err(x->res, "-ERR syntax error");
    body_uint(&o, 1, (uint64_t)x->cmd->aux);
    return send_call(x, &o, KV_OP_FLUSH);
}

#define RENAME_NX 0x1u     /* kv.proto RenameRequest flags */
#define RENAME_COPY 0x2u
#define RENAME_DST_DB 0x8u

static int rename_call(struct cmdctx *x, const struct kv_slice *key, const struct kv_slice *nkey,
                       unsigned flags, long long dst)
{
    struct out o = {0};

    out_init_room(&o, x->call, key->len + nkey->len + 40);
    body_bytes(&o, 1, key);
    body_bytes(&o, 2, nkey);
    body_uint(&o, 3, flags);
    if (flags & RENAME_DST_DB)
        body_uint(&o, 5, (uint64_t)dst);
    return send_call(x, &o, KV_OP_RENAME);
}

/* RENAME key newkey, RENAMENX key newkey (aux: the flags). */
static int cmd_rename(struct cmdctx *x)
{
    return rename_call(x, &x->argv[1], &x->argv[2], (unsigned)x->cmd->aux, 0);
}

/* MOVE key db: the same key into another database, unless it is there already. */
static int cmd_move(struct cmdctx *x)
{
    long long db;
    int rc = db_arg(x, &x->argv[2], NULL, &db);

    if (rc)
        return rc;
    if (db == x->session->db)
        return reply_err(x->res, "-ERR source and destination objects are the same");
    return rename_call(x, &x->argv[1], &x->argv[1], RENAME_NX | RENAME_DST_DB, db);
}

/* COPY source destination [DB destination-db] [REPLACE] */
static int cmd_copy(struct cmdctx *x)
{
    unsigned flags = RENAME_COPY | RENAME_NX;
    long long db = x->session->db;

    for (size_t i = 3; i < x->argc; i++) {
        if (arg_is(&x->argv[i], "REPLACE")) {
            flags &= ~RENAME_NX;
        } else if (arg_is(&x->argv[i], "DB") && i + 1 < x->argc) {
            int rc = db_arg(x, &x->argv[++i], NULL, &db);

            if (rc)
                return rc;
            flags |= RENAME_DST_DB;
        } else {
            return reply_err(x->res, "-ERR syntax error");
        }
    }
    if (db == x->session->db && x->argv[1].len == x->argv[2].len &&
        memcmp(x->argv[1].p, x->argv[2].p, x->argv[1].len) == 0)
        return reply_err(x->res, "-ERR source and destination objects are the same");
    return rename_call(x, &x->argv[1], &x->argv[2], flags, db);
}

/* SWAPDB index1 index2 */
static int cmd_swapdb(struct cmdctx *x)
{
    struct out o = {0};
    long long a, b;
    int rc = db_arg(x, &x->argv[1], "invalid first DB index", &a);

    if (rc || (rc = db_arg(x, &x->argv[2], "invalid second DB index", &b)) != 0)
        return rc;
    body_uint(&o, 1, (uint64_t)a);
    body_uint(&o, 2, (uint64_t)b);
    return send_call(x, &o, KV_OP_SWAPDB);
}

/* CONFIG GET's answer, gathered: name/value bulk strings. */
struct config_items {
    struct out o;
    size_t n;
};

static void config_emit(void *ctx, const char *name, size_t name_len, const char *value,
                        size_t value_len)
{
    struct config_items *it = ctx;

    out_bulk(&it->o, name, name_len);
    out_bulk(&it->o, value, value_len);
    it->n += 2;
}

/* The arguments argv[first..argc) as kv_options_arg (heap: CONFIG takes
 * any number of them). */
static struct kv_options_arg *config_args(struct cmdctx *x, size_t first)
{
    size_t n = x->argc - first;
    struct kv_options_arg *a = kv_mem_alloc(KV_MOD_PACKET, (n ? n : 1) * sizeof(*a));

    for (size_t i = 0; a && i < n; i++)
        a[i] = (struct kv_options_arg){(const char *)x->argv[first + i].p, x->argv[first + i].len};
    return a;
}

/* CONFIG SET's apply step (Redis's apply functions): a new port is listened
 * on before anything is stored, so that a port in use changes nothing. */
static int config_apply(void *ctx, const struct kv_config *cur, const struct kv_config *next,
                        char *err, size_t errcap)
{
    struct kv_server *srv = ctx;
    char why[160];

    if (next->port != cur->port && srv->io &&
        kv_io_relisten(srv->io, next->port, why, sizeof(why)) != 0) {
        snprintf(err, errcap, "ERR CONFIG SET failed (possibly related to argument 'port') - "
                 "Unable to listen on this port: %s", why);
        return KV_EIO;
    }
    return 0;
}

/* CONFIG GET / SET / RESETSTAT / HELP over the options table (options.c),
 * with Redis 7.0's replies and errors. */
static int cmd_config(struct cmdctx *x)
{
    const struct kv_slice *v = x->argv;
    struct kv_options_arg *a;
    struct out o = {0};

    if (arg_is(&v[1], "GET")) {
        struct config_items it = {0};

        if (x->argc < 3)
            return reply_err(x->res, "-ERR wrong number of arguments for 'config|get' command");
        if (!(a = config_args(x, 2)))
            return KV_ENOMEM;
        kv_options_config_get(x->srv->cfg, a, x->argc - 2, config_emit, &it);
        kv_mem_free(KV_MOD_PACKET, a);
        o.resp3 = conn_resp3(x);
        out_map(&o, (int64_t)it.n / 2);
        if (it.o.failed)
            o.failed = 1;
        if (it.o.len)
            out_bytes(&o, it.o.p, it.o.len);
        kv_mem_free(KV_MOD_PACKET, it.o.p);
        return out_reply(&o, x->res);
    }
    if (arg_is(&v[1], "SET")) {
        char err[400];
        int rc;

        if (x->argc < 4)
            return reply_err(x->res, "-ERR wrong number of arguments for 'config|set' command");
        if (x->argc & 1)
            return reply_err(x->res, "-ERR syntax error");
        if (!(a = config_args(x, 2)))
            return KV_ENOMEM;
        rc = kv_options_config_set_ex(x->srv->cfg_rw, a, (x->argc - 2) / 2, config_apply, x->srv,
                                      err, sizeof(err));
        kv_mem_free(KV_MOD_PACKET, a);
        if (rc == 0 && x->srv->store) /* maxmemory reaches the store (a no-op otherwise) */
            kv_shm_set_maxmemory(x->srv->store,
                                 __atomic_load_n(&x->srv->cfg->maxmemory, __ATOMIC_RELAXED));
        return rc == 0 ? reply_str(x->res, "+OK\r\n") : reply_err(x->res, "-%s", err);
    }
    if (arg_is(&v[1], "RESETSTAT")) {
        if (x->argc != 2)
            return reply_err(x->res,
                             "-ERR wrong number of arguments for 'config|resetstat' command");
        kv_server_stats_reset(x->srv);
        return reply_str(x->res, "+OK\r\n");
    }
    if (arg_is(&v[1], "REWRITE"))
        return reply_err(x->res, "-ERR The server is running without a config file");
    if (arg_is(&v[1], "HELP")) {
        static const char *const help[] = {
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern>",
            "    Return parameters matching the glob-like <pattern> and their values.",
            "SET <directive> <value>",
            "    Set the configuration <directive> to <value>.",
            "RESETSTAT",
            "    Reset statistics reported by the INFO command.",
            "REWRITE",
            "    Rewrite the configuration file.",
            "HELP",
            "    Print this help.",
        };
        out_fmt(&o, "*%zu\r\n", sizeof(help) / sizeof(help[0]));
        for (size_t i = 0; i < sizeof(help) / sizeof(help[0]); i++)
            out_fmt(&o, "+%s\r\n", help[i]);
        return out_reply(&o, x->res);
    }
    return reply_err(x->res, "-ERR unknown subcommand '%.*s'. Try CONFIG HELP.",
                     (int)(v[1].len < 64 ? v[1].len : 64), (const char *)v[1].p);
}

/* INFO [section ...]: rendered from the statistics collector (stats.c). */
static int cmd_info(struct cmdctx *x)
{
    enum { INFO_CAP = 64 << 10 };
    unsigned sections = x->argc == 1 ? KV_INFO_DEFAULT : 0;
    struct kv_server_stats *st;
    struct out o = {0};
    char *text;
    size_t len;

    for (size_t i = 1; i < x->argc; i++) {
        const char *p = (const char *)x->argv[i].p;
        size_t n = x->argv[i].len;

        sections |= kv_server_info_sections(1, &p, &n);
    }
    st = kv_mem_alloc(KV_MOD_PACKET, sizeof(*st));
    text = kv_mem_alloc(KV_MOD_PACKET, INFO_CAP);
    if (!st || !text) {
        kv_mem_free(KV_MOD_PACKET, st);
        kv_mem_free(KV_MOD_PACKET, text);
        return KV_ENOMEM;
    }
    kv_server_stats_collect(x->srv, st);
    len = kv_server_info_format(x->srv, st, sections, text, INFO_CAP);
    o.resp3 = conn_resp3(x);
    out_verbatim(&o, text, len);
    kv_mem_free(KV_MOD_PACKET, st);
    kv_mem_free(KV_MOD_PACKET, text);
    return out_reply(&o, x->res);
}

/* ---- connection commands: HELLO, CLIENT, RESET, COMMAND (issue 16) -------------- */
#define KV_REDIS_VERSION "7.0.0" /* the Redis we answer as (INFO's redis_version) */
static size_t resp_cmd_count(void);
static const struct resp_cmd *resp_cmd_at(size_t i);
static const char *resp_cmd_lname(const struct resp_cmd *c);
static const struct resp_cmd *resp_cmd_find(const struct kv_slice *name);

/* Redis's clientSetName rule: printable ASCII without spaces (33..126). */
static int client_text_ok(const struct kv_slice *v)
{
    for (size_t i = 0; i < v->len; i++)
        if (v->p[i] < '!' || v->p[i] > '~')
            return 0;
    return 1;
}

static int set_name(struct cmdctx *x, const struct kv_slice *v)
{
    if (!client_text_ok(v))
        return reply_err(x->res,
                         "-ERR Client names cannot contain spaces, newlines or special characters.");
    if (kv_io_session_set_text(x->session, KV_IO_TEXT_NAME, v->p, v->len) != 0)
        return KV_ENOMEM;
    return 0;
}

/* Constant-time: the time taken does not tell how much of the password matched. */
static int password_ok(const struct kv_slice *a, const char *want)
{
    size_t wl = strlen(want);
    unsigned diff = (unsigned)(a->len ^ wl);

    for (size_t i = 0; i < a->len; i++)
        diff |= a->p[i] ^ (uint8_t)want[wl ? i % wl : 0];
    return diff == 0;
}

/* HELLO's AUTH user pass, checked here as the AUTH handler does (the same
 * password, the same failure count: the third wrong one closes). */
static int hello_auth(struct cmdctx *x, const struct kv_slice *user, const struct kv_slice *pass)
{
    const char *want = x->srv->cfg->requirepass;

    if (arg_is(user, "default") && (!want[0] || password_ok(pass, want))) {
        __atomic_fetch_or(&x->session->flags, KV_SESSION_AUTHED, __ATOMIC_RELEASE);
        return 0;
    }
    kv_mem_stat_add(KV_STAT_AUTH_FAILURES, 1);
    if (__atomic_add_fetch(&x->session->auth_failures, 1, __ATOMIC_RELAXED) >= 3)
        x->res->close = 1;
    return -1;
}

/* HELLO [protover [AUTH username password] [SETNAME clientname]] */
static int cmd_hello(struct cmdctx *x)
{
    const struct kv_slice *v = x->argv, *user = NULL, *pass = NULL, *name = NULL;
    long long ver = 0;
    struct out o = {0};
    int rc;

    if (x->argc >= 2) {
        if (arg_int(&v[1], &ver) != 0)
            return reply_err(x->res, "-ERR Protocol version is not an integer or out of range");
        if (ver < 2 || ver > 3)
            return reply_err(x->res, "-NOPROTO unsupported protocol version");
    }
    for (size_t j = 2; j < x->argc; j++) {
        size_t more = x->argc - 1 - j;

        if (arg_is(&v[j], "AUTH") && more >= 2) {
            user = &v[j + 1];
            pass = &v[j + 2];
            j += 2;
        } else if (arg_is(&v[j], "SETNAME") && more >= 1) {
            name = &v[++j];
        } else {
            return reply_err(x->res, "-ERR Syntax error in HELLO option '%.*s'",
                             (int)(v[j].len < 64 ? v[j].len : 64), (const char *)v[j].p);
        }
    }
    if (user && hello_auth(x, user, pass) != 0)
        return reply_err(x->res,
                         "-WRONGPASS invalid username-password pair or user is disabled.");
    if (x->srv->cfg->requirepass[0] &&
        !(__atomic_load_n(&x->session->flags, __ATOMIC_ACQUIRE) & KV_SESSION_AUTHED))
        return reply_err(x->res, "-NOAUTH HELLO must be called with the client already "
                                 "authenticated, otherwise the HELLO <proto> AUTH <user> <pass> "
                                 "option can be used to authenticate the client and select the "
                                 "RESP protocol version at the same time");
    if (name && (rc = set_name(x, name)) != 0)
        return rc;
    if (ver)
        __atomic_store_n(&x->session->resp, (uint8_t)ver, __ATOMIC_RELAXED);
    o.resp3 = conn_resp3(x);
    out_map(&o, 7);
    OUT_LIT(&o, "$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n");
    out_bulk(&o, KV_REDIS_VERSION, strlen(KV_REDIS_VERSION));
    OUT_LIT(&o, "$5\r\nproto\r\n");
    out_line_int(&o, ':', conn_resp3(x) ? 3 : 2);
    OUT_LIT(&o, "$2\r\nid\r\n");
    out_line_int(&o, ':', (int64_t)kv_io_session_id(x->session));
    OUT_LIT(&o, "$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
                "$7\r\nmodules\r\n*0\r\n");
    return out_reply(&o, x->res);
}

/* RESET: the connection as new (Redis's clearClientConnectionState): RESP2,
 * no name, replies on, and unauthenticated again when a password is set.
 * (MULTI and SELECT state, when they exist, are cleared here too.) */
struct multi_state;
static void multi_reset(struct multi_state *ms);
static int watch_call(struct cmdctx *x, size_t first, int unwatch, enum reply_style style);

static int cmd_reset(struct cmdctx *x)
{
    int rc;

    __atomic_store_n(&x->session->resp, 2, __ATOMIC_RELAXED);
    kv_io_session_monitor(x->session, 0);
    x->session->reply_mode = KV_REPLY_ON;
    __atomic_store_n(&x->session->db, 0, __ATOMIC_RELAXED); /* SELECT 0 */
    if (x->session->multi) /* DISCARD */
        multi_reset(x->session->multi);
    x->res->silent = 0;
    if ((rc = kv_io_session_set_text(x->session, KV_IO_TEXT_NAME, NULL, 0)) != 0)
        return rc;
    if (x->srv->cfg->requirepass[0])
        __atomic_fetch_and(&x->session->flags, ~KV_SESSION_AUTHED, __ATOMIC_RELEASE);
    /* UNWATCH, as a call in order with the connection's others (the watches live with
     * the handlers); its answer is +RESET whatever it says */
    return watch_call(x, x->argc, 1, RS_RESET);
}

/* MONITOR: every command any connection runs from now on, as a status line
 * (admin commands excepted, passwords redacted: resp_command feeds them). A
 * second MONITOR is not answered, as in Redis. */
static int cmd_monitor(struct cmdctx *x)
{
    if (kv_io_session_is_monitor(x->session)) {
        x->res->silent = 1;
        return reply_str(x->res, "+OK\r\n");
    }
    kv_io_session_monitor(x->session, 1);
    return reply_str(x->res, "+OK\r\n");
}

/* Which arguments MONITOR shows as "(redacted)": AUTH's, HELLO's AUTH pair. */
static uint64_t monitor_redact(const struct cmdctx *x)
{
    uint64_t m = 0;

    if (x->cmd->fn == cmd_auth)
        return ~(uint64_t)1;
    if (x->cmd->fn != cmd_hello)
        return 0;
    for (size_t j = 2; j + 2 < x->argc && j < 62; j++)
        if (arg_is(&x->argv[j], "AUTH")) {
            m |= (uint64_t)3 << (j + 1);
            j += 2;
        }
    return m;
}

/* CLIENT LIST [TYPE t | ID id...], CLIENT INFO: Redis's layout (kv_io_clients_format). */
static int client_list(struct cmdctx *x, int self_only, const uint64_t *ids, size_t nids)
{
    struct out o = {0};
    size_t len = 0;
    char *lines = kv_io_clients_format(x->srv->io, x->session, self_only, ids, nids, &len);

    if (!lines)
        return KV_ENOMEM;
    o.resp3 = conn_resp3(x);
    out_verbatim(&o, lines, len);
    kv_mem_free(KV_MOD_PACKET, lines);
    return out_reply(&o, x->res);
}

/* TYPE normal|master|replica|slave|pubsub: every connection here is normal.
 * Returns 1 normal, 0 another known type, -1 unknown (the reply is out). */
static int client_type(struct cmdctx *x, const struct kv_slice *t, int *rc)
{
    if (arg_is(t, "normal"))
        return 1;
    if (arg_is(t, "master") || arg_is(t, "replica") || arg_is(t, "slave") || arg_is(t, "pubsub"))
        return 0;
    *rc = reply_err(x->res, "-ERR Unknown client type '%.*s'", (int)(t->len < 64 ? t->len : 64),
                    (const char *)t->p);
    return -1;
}

static int client_cmd_list(struct cmdctx *x)
{
    const struct kv_slice *v = x->argv;
    uint64_t *ids;
    int rc = 0, t;

    if (x->argc == 2)
        return client_list(x, 0, NULL, 0);
    if (x->argc == 4 && arg_is(&v[2], "TYPE")) {
        if ((t = client_type(x, &v[3], &rc)) < 0)
            return rc;
        return t ? client_list(x, 0, NULL, 0) : client_list(x, 0, (const uint64_t[]){0}, 1);
    }
    if (x->argc < 4 || !arg_is(&v[2], "ID"))
        return reply_err(x->res, "-ERR syntax error");
    ids = kv_mem_alloc(KV_MOD_PACKET, (x->argc - 3) * sizeof(*ids));
    if (!ids)
        return KV_ENOMEM;
    for (size_t i = 3; i < x->argc; i++) {
        long long id;

        if (arg_int(&v[i], &id) != 0) {
            kv_mem_free(KV_MOD_PACKET, ids);
            return reply_err(x->res, "-ERR Invalid client ID");
        }
        ids[i - 3] = (uint64_t)id;
    }
    rc = client_list(x, 0, ids, x->argc - 3);
    kv_mem_free(KV_MOD_PACKET, ids);
    return rc;
}

static int client_cmd_info(struct cmdctx *x)
{
    return client_list(x, 1, NULL, 0);
}

static int client_cmd_id(struct cmdctx *x)
{
    struct out o = {0};

    out_line_int(&o, ':', (int64_t)kv_io_session_id(x->session));
    return out_reply(&o, x->res);
}

static int client_cmd_setname(struct cmdctx *x)
{
    int rc = set_name(x, &x->argv[2]);

    return rc != 0 ? rc : reply_str(x->res, "+OK\r\n");
}

static int client_cmd_getname(struct cmdctx *x)
{
    struct out o = {0};
    size_t len;
    const char *name = kv_io_session_text(x->session, KV_IO_TEXT_NAME, &len);

    o.resp3 = conn_resp3(x);
    if (name)
        out_bulk(&o, name, len);
    else
        out_nil(&o);
    return out_reply(&o, x->res);
}

/* CLIENT SETINFO LIB-NAME|LIB-VER value (Redis 7.2; clients send it on connect). */
static int client_cmd_setinfo(struct cmdctx *x)
{
    const struct kv_slice *v = x->argv;
    int which = arg_is(&v[2], "LIB-NAME") ? KV_IO_TEXT_LIB_NAME
              : arg_is(&v[2], "LIB-VER")  ? KV_IO_TEXT_LIB_VER : -1;

    if (which < 0)
        return reply_err(x->res, "-ERR Unrecognized option '%.*s'",
                         (int)(v[2].len < 64 ? v[2].len : 64), (const char *)v[2].p);
    if (!client_text_ok(&v[3]))
        return reply_err(x->res, "-ERR %s cannot contain spaces, newlines or special characters.",
                         which == KV_IO_TEXT_LIB_NAME ? "lib-name" : "lib-ver");
    if (kv_io_session_set_text(x->session, which, v[3].p, v[3].len) != 0)
        return KV_ENOMEM;
    return reply_str(x->res, "+OK\r\n");
}

/* CLIENT REPLY ON|OFF|SKIP: OFF and SKIP are not answered themselves. */
static int client_cmd_reply(struct cmdctx *x)
{
    const struct kv_slice *m = &x->argv[2];

    if (arg_is(m, "ON")) {
        x->session->reply_mode = KV_REPLY_ON;
        x->res->silent = 0;
        return reply_str(x->res, "+OK\r\n");
    }
    if (arg_is(m, "OFF"))
        x->session->reply_mode = KV_REPLY_OFF;
    else if (arg_is(m, "SKIP")) {
        if (x->session->reply_mode != KV_REPLY_OFF)
            x->session->reply_mode = KV_REPLY_SKIP;
    } else
        return reply_err(x->res, "-ERR syntax error");
    x->res->silent = 1;
    return reply_str(x->res, "+OK\r\n"); /* built, then dropped by the IO thread */
}

static int client_cmd_no_evict(struct cmdctx *x)
{
    const struct kv_slice *m = &x->argv[2];

    if (!arg_is(m, "ON") && !arg_is(m, "OFF"))
        return reply_err(x->res, "-ERR syntax error");
    __atomic_store_n(&x->session->no_evict, (uint8_t)arg_is(m, "ON"), __ATOMIC_RELAXED);
    return reply_str(x->res, "+OK\r\n");
}

/* CLIENT KILL ip:port | CLIENT KILL [ID id] [TYPE t] [ADDR a] [LADDR a]
 * [USER u] [SKIPME yes|no] ... */
static int client_cmd_kill(struct cmdctx *x)
{
    const struct kv_slice *v = x->argv;
    struct kv_io_kill f = {.skipme = 1};
    unsigned killed;
    int self = 0, rc = 0;

    if (x->argc == 3) { /* the old form: one address, and self may go */
        f.addr = &v[2];
        f.skipme = 0;
    } else if (x->argc % 2 != 0) {
        return reply_err(x->res, "-ERR syntax error");
    }
    for (size_t i = 2; x->argc > 3 && i + 1 < x->argc; i += 2) {
        const struct kv_slice *opt = &v[i], *val = &v[i + 1];
        long long id;

        if (arg_is(opt, "ID")) {
            if (arg_int(val, &id) != 0 || id <= 0)
                return reply_err(x->res, "-ERR client-id should be greater than 0");
            f.id = (uint64_t)id;
        } else if (arg_is(opt, "TYPE")) {
            int t = client_type(x, val, &rc);

            if (t < 0)
                return rc;
            f.none |= t == 0;
        } else if (arg_is(opt, "ADDR")) {
            f.addr = val;
        } else if (arg_is(opt, "LADDR")) {
            f.laddr = val;
        } else if (arg_is(opt, "USER")) {
            if (!arg_is(val, "default"))
                return reply_err(x->res, "-ERR No such user '%.*s'",
                                 (int)(val->len < 64 ? val->len : 64), (const char *)val->p);
        } else if (arg_is(opt, "SKIPME")) {
            if (arg_is(val, "yes"))
                f.skipme = 1;
            else if (arg_is(val, "no"))
                f.skipme = 0;
            else
                return reply_err(x->res, "-ERR syntax error");
        } else {
            return reply_err(x->res, "-ERR syntax error");
        }
    }
    killed = kv_io_clients_kill(x->srv->io, x->session, &f, &self);
    if (self)
        x->res->close = 1; /* after this reply, as Redis's CLOSE_AFTER_REPLY */
    if (x->argc == 3)
        return killed ? reply_str(x->res, "+OK\r\n") : reply_err(x->res, "-ERR No such client");
    {
        struct out o = {0};

        out_line_int(&o, ':', killed);
        return out_reply(&o, x->res);
    }
}

static int client_cmd_help(struct cmdctx *x);

/* CLIENT's subcommands: a table as the commands are; arity counts CLIENT. */
static const struct resp_sub {
    const char *name;
    int arity;
    resp_cmd_fn fn;
    const char *full; /* CLIENT LIST's cmd= */
} client_subs[] = {
    {"ID", 2, client_cmd_id, "client|id"},
    {"INFO", 2, client_cmd_info, "client|info"},
    {"LIST", -2, client_cmd_list, "client|list"},
    {"KILL", -3, client_cmd_kill, "client|kill"},
    {"SETNAME", 3, client_cmd_setname, "client|setname"},
    {"GETNAME", 2, client_cmd_getname, "client|getname"},
    {"SETINFO", 4, client_cmd_setinfo, "client|setinfo"},
    {"REPLY", 3, client_cmd_reply, "client|reply"},
    {"NO-EVICT", 3, client_cmd_no_evict, "client|no-evict"},
    {"HELP", 2, client_cmd_help, "client|help"},
};

static int client_cmd_help(struct cmdctx *x)
{
    static const char *const help[] = {
        "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
        "GETNAME", "    Return the name of the current connection.",
        "ID", "    Return the ID of the current connection.",
        "INFO", "    Return information about the current client connection.",
        "KILL <ip:port>", "    Kill connection made from <ip:port>.",
        "KILL <option> <value> [<option> <value> [...]]",
        "    Kill connections. Options are: ID, ADDR, LADDR, TYPE, USER, SKIPME (YES|NO).",
        "LIST [TYPE <type> | ID <id> [<id> ...]]",
        "    Return information about client connections.",
        "NO-EVICT (ON|OFF)", "    Protect current client connection from eviction.",
        "REPLY (ON|OFF|SKIP)", "    Control the replies sent to the current connection.",
        "SETNAME <name>", "    Assign the name <name> to the current connection.",
        "SETINFO (LIB-NAME|LIB-VER) <value>", "    Name the client library and its version.",
        "HELP", "    Print this help.",
    };
    struct out o = {0};

    out_line_int(&o, '*', (int64_t)(sizeof(help) / sizeof(help[0])));
    for (size_t i = 0; i < sizeof(help) / sizeof(help[0]); i++) {
        out_bytes(&o, "+", 1);
        out_bytes(&o, help[i], strlen(help[i]));
        out_bytes(&o, "\r\n", 2);
    }
    return out_reply(&o, x->res);
}

static int cmd_client(struct cmdctx *x)
{
    const struct kv_slice *sub = &x->argv[1];

    for (size_t i = 0; i < sizeof(client_subs) / sizeof(client_subs[0]); i++) {
        const struct resp_sub *s = &client_subs[i];

        if (!arg_is(sub, s->name))
            continue;
        __atomic_store_n(&x->session->cmd, s->full, __ATOMIC_RELAXED);
        if (s->arity > 0 ? x->argc != (size_t)s->arity : x->argc < (size_t)-s->arity)
            return reply_err(x->res, "-ERR wrong number of arguments for '%s' command", s->full);
        return s->fn(x);
    }
    return reply_err(x->res, "-ERR unknown subcommand '%.*s'. Try CLIENT HELP.",
                     (int)(sub->len < 64 ? sub->len : 64), (const char *)sub->p);
}

/* ---- COMMAND --------------------------------------------------------------------- */
/* Key positions (first, last, step) for COMMAND INFO: every command with
 * CMD_WRITE or CMD_READONLY takes one key at argv[1] unless listed here. */
static const struct {
    const char *name;
    int first, last, step;
} cmd_keypos[] = {
    {"MGET", 1, -1, 1},    {"DEL", 1, -1, 1},     {"UNLINK", 1, -1, 1}, {"EXISTS", 1, -1, 1},
    {"TOUCH", 1, -1, 1},   {"MSET", 1, -1, 2},    {"MSETNX", 1, -1, 2}, {"LCS", 1, 2, 1},
    {"MEMORY", 2, 2, 1},   {"SCAN", 0, 0, 0},     {"KEYS", 0, 0, 0},    {"RANDOMKEY", 0, 0, 0},
    {"DBSIZE", 0, 0, 0},   {"FLUSHDB", 0, 0, 0},  {"FLUSHALL", 0, 0, 0}, {"INFO", 0, 0, 0},
};

static void cmd_keys_of(const struct resp_cmd *c, int *first, int *last, int *step)
{
    *first = *last = *step = (c->flags & (CMD_WRITE | CMD_READONLY)) ? 1 : 0;
    for (size_t i = 0; i < sizeof(cmd_keypos) / sizeof(cmd_keypos[0]); i++)
        if (strcmp(cmd_keypos[i].name, c->name) == 0) {
            *first = cmd_keypos[i].first;
            *last = cmd_keypos[i].last;
            *step = cmd_keypos[i].step;
        }
}

/* A command's flags and ACL categories, in Redis's words (as status strings). */
static void cmd_words(struct out *o, const struct resp_cmd *c, int acl)
{
    const char *w[8];
    size_t n = 0;

    if (!acl) {
        if (c->flags & CMD_WRITE)
            w[n++] = "write";
        if (c->flags & CMD_READONLY)
            w[n++] = "readonly";
        if (c->flags & CMD_ADMIN)
            w[n++] = "admin";
        if (c->flags & CMD_NOAUTH)
            w[n++] = "no_auth";
        if (c->flags & CMD_FAST)
            w[n++] = "fast";
    } else {
        if (c->flags & CMD_WRITE)
            w[n++] = "@write";
        if (c->flags & CMD_READONLY)
            w[n++] = "@read";
        if (c->flags & CMD_ADMIN)
            w[n++] = "@admin";
        if (c->flags & CMD_ADMIN)
            w[n++] = "@dangerous";
        w[n++] = (c->flags & CMD_FAST) ? "@fast" : "@slow";
        if (c->flags & CMD_LOCAL)
            w[n++] = "@connection";
    }
    out_set(o, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        out_bytes(o, "+", 1);
        out_bytes(o, w[i], strlen(w[i]));
        out_bytes(o, "\r\n", 2);
    }
}

/* One COMMAND INFO entry (Redis 7.0's ten fields; key specs, tips and
 * subcommands empty). */
static void command_info(struct out *o, const struct resp_cmd *c)
{
    const char *ln = resp_cmd_lname(c);
    int first, last, step;

    cmd_keys_of(c, &first, &last, &step);
    OUT_LIT(o, "*10\r\n");
    out_bulk(o, ln, strlen(ln));
    out_line_int(o, ':', c->arity);
    cmd_words(o, c, 0);
    out_line_int(o, ':', first);
    out_line_int(o, ':', last);
    out_line_int(o, ':', step);
    cmd_words(o, c, 1);
    out_set(o, 0); /* tips */
    OUT_LIT(o, "*0\r\n*0\r\n");
}

/* COMMAND, COMMAND COUNT | LIST [FILTERBY PATTERN p | ACLCAT c] | INFO [name...]
 * | DOCS [name...] | HELP */
static int cmd_command(struct cmdctx *x)
{
    const struct kv_slice *v = x->argv;
    struct out o = {0};
    size_t n = resp_cmd_count();

    o.resp3 = conn_resp3(x);
    if (x->argc == 1 || (arg_is(&v[1], "INFO") && x->argc == 2)) {
        __atomic_store_n(&x->session->cmd, x->argc == 1 ? "command" : "command|info",
                         __ATOMIC_RELAXED);
        out_init(&o, n * 160);
        out_line_int(&o, '*', (int64_t)n);
        for (size_t i = 0; i < n; i++)
            command_info(&o, resp_cmd_at(i));
        return out_reply(&o, x->res);
    }
    if (arg_is(&v[1], "COUNT") && x->argc == 2) {
        __atomic_store_n(&x->session->cmd, "command|count", __ATOMIC_RELAXED);
        out_line_int(&o, ':', (int64_t)n);
        return out_reply(&o, x->res);
    }
    if (arg_is(&v[1], "INFO") || arg_is(&v[1], "DOCS")) {
        int docs = arg_is(&v[1], "DOCS");
        size_t found = 0;

        __atomic_store_n(&x->session->cmd, docs ? "command|docs" : "command|info",
                         __ATOMIC_RELAXED);
        for (size_t i = 2; i < x->argc; i++)
            found += resp_cmd_find(&v[i]) != NULL;
        if (docs && x->argc == 2)
            found = n;
        if (docs)
            out_map(&o, (int64_t)found);
        else
            out_line_int(&o, '*', (int64_t)(x->argc - 2));
        for (size_t i = 0; docs && x->argc == 2 && i < n; i++) {
            const char *ln = resp_cmd_lname(resp_cmd_at(i));

            out_bulk(&o, ln, strlen(ln));
            out_map(&o, 0); /* no documentation kept: summary, since, ... absent */
        }
        for (size_t i = 2; i < x->argc; i++) {
            const struct resp_cmd *c = resp_cmd_find(&v[i]);

            if (docs && c) {
                const char *ln = resp_cmd_lname(c);

                out_bulk(&o, ln, strlen(ln));
                out_map(&o, 0);
            } else if (!docs) {
                if (c)
                    command_info(&o, c);
                else
                    out_nil(&o);
            }
        }
        return out_reply(&o, x->res);
    }
    if (arg_is(&v[1], "LIST") && (x->argc == 2 || x->argc == 5)) {
        const struct kv_slice *pat = NULL, *cat = NULL;
        size_t count = 0;

        __atomic_store_n(&x->session->cmd, "command|list", __ATOMIC_RELAXED);
        if (x->argc == 5) {
            if (!arg_is(&v[2], "FILTERBY"))
                return reply_err(x->res, "-ERR syntax error");
            if (arg_is(&v[3], "PATTERN"))
                pat = &v[4];
            else if (arg_is(&v[3], "ACLCAT"))
                cat = &v[4];
            else if (arg_is(&v[3], "MODULE"))
                return reply_str(x->res, "*0\r\n"); /* no modules */
            else
                return reply_err(x->res, "-ERR syntax error");
        }
        for (int pass = 0; pass < 2; pass++) {
            if (pass)
                out_line_int(&o, '*', (int64_t)count);
            for (size_t i = 0; i < n; i++) {
                const struct resp_cmd *c = resp_cmd_at(i);
                const char *ln = resp_cmd_lname(c);
                int ok = 1;

                if (pat)
                    ok = kv_glob_match(pat->p, pat->len, (const uint8_t *)ln, strlen(ln));
                if (cat)
                    ok = ((c->flags & CMD_WRITE) && arg_is(cat, "write")) ||
                         ((c->flags & CMD_READONLY) && arg_is(cat, "read")) ||
                         ((c->flags & CMD_ADMIN) && arg_is(cat, "admin")) ||
                         ((c->flags & CMD_ADMIN) && arg_is(cat, "dangerous")) ||
                         ((c->flags & CMD_FAST) && arg_is(cat, "fast")) ||
                         (!(c->flags & CMD_FAST) && arg_is(cat, "slow")) ||
                         ((c->flags & CMD_LOCAL) && arg_is(cat, "connection"));
                if (!ok)
                    continue;
                if (pass)
                    out_bulk(&o, ln, strlen(ln));
                else
                    count++;
            }
        }
        return out_reply(&o, x->res);
    }
    if (arg_is(&v[1], "HELP") && x->argc == 2)
        return reply_str(x->res, "*6\r\n+COMMAND [<subcommand>]. Subcommands are:\r\n"
                                 "+COUNT\r\n+INFO [<command-name> ...]\r\n+DOCS [<command-name> ...]\r\n"
                                 "+LIST [FILTERBY (MODULE <module-name>|ACLCAT <category>|PATTERN "
                                 "<pattern>)]\r\n+HELP\r\n");
    if (arg_is(&v[1], "COUNT") || arg_is(&v[1], "LIST") || arg_is(&v[1], "HELP"))
        return reply_err(x->res, "-ERR wrong number of arguments for 'command|%s' command",
                         arg_is(&v[1], "COUNT") ? "count" : arg_is(&v[1], "LIST") ? "list"
                                                                                 : "help");
    return reply_err(x->res, "-ERR unknown subcommand '%.*s'. Try COMMAND HELP.",
                     (int)(v[1].len < 64 ? v[1].len : 64), (const char *)v[1].p);
}

static int unknown_command(struct cmdctx *x)
{
    char name[64], args[200];
    size_t n = x->argv[0].len < 60 ? x->argv[0].len : 60, len = 0;

    memcpy(name, x->argv[0].p, n);
    name[n] = '\0';
    args[0] = '\0';
    for (size_t i = 1; i < x->argc && len < sizeof(args) - 40; i++) {
        int w = (int)(x->argv[i].len < 30 ? x->argv[i].len : 30);

        len += (size_t)snprintf(args + len, sizeof(args) - len, "'%.*s' ", w,
                                (const char *)x->argv[i].p);
    }
    return reply_err(x->res, "-ERR unknown command '%s', with args beginning with: %s", name, args);
}

static int cmd_function(struct cmdctx *x)
{
    if (arg_is(&x->argv[1], "FLUSH"))
        return reply_str(x->res, "+OK\r\n"); /* there are no functions to flush */
    return unknown_command(x);
}

/* ---- the string family (opcode STR, kv.proto StrRequest) ------------------------- */
enum { STR_APPEND, STR_STRLEN, STR_GETRANGE, STR_SETRANGE, STR_GETBIT, STR_SETBIT, STR_BITCOUNT,
       STR_BITPOS, STR_INCRBYFLOAT, STR_GETDEL, STR_GETEX, STR_LCS };
#define SF_RANGE 0x1u
#define SF_BIT 0x2u
#define SF_HAS_END 0x4u
#define SF_PERSIST 0x8u
#define SF_LCS_LEN 0x10u
#define SF_LCS_IDX 0x20u
#define SF_LCS_WITHMATCHLEN 0x40u

struct str_args {
    const struct kv_slice *value; /* may be NULL */
    int64_t start, end, end2;
    uint32_t flags;
    uint64_t ttl_ms;
};

static int str_call_as(struct cmdctx *x, uint64_t op, const struct str_args *a,
                       enum reply_style style)
{
    struct out o = {0};
    uint8_t b[16];

    out_init_room(&o, x->call, x->argv[1].len + (a->value ? a->value->len : 0) + 16 + 6 * 11);
    body_uint(&o, 1, op);
    body_bytes(&o, 2, &x->argv[1]);
    if (a->value)
        body_bytes(&o, 3, a->value);
    body_uint(&o, 4, pb_zigzag_encode(a->start));
    body_uint(&o, 5, pb_zigzag_encode(a->end));
    body_uint(&o, 6, a->flags);
    body_uint(&o, 7, a->ttl_ms);
    if (a->end2)
        out_bytes(&o, b, pb_put_uint_field(b, 8, pb_zigzag_encode(a->end2)));
    return dispatch(&o, x->call, x->res, KV_OP_STR, style);
}

static int str_call(struct cmdctx *x, uint64_t op, const struct str_args *a)
{
    return str_call_as(x, op, a, x->cmd->style);
}

/* The wall clock in ms, for EXAT / PXAT and EXPIRETIME. */
static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Redis's getExpireMillisecondsOrReply: the time argument a of unit_ms (1000
 * or 1), absolute (EXAT / PXAT) or not, as a ttl in ms from now (>= 1: a
 * time already past expires at once). Returns NULL, or the error to answer. */
static const char *expire_arg(const struct kv_slice *a, int64_t unit_ms, int absolute,
                              long long *ttl)
{
    long long n;

    if (arg_int(a, &n) != 0)
        return "-ERR value is not an integer or out of range";
    if (n <= 0 || n > INT64_MAX / unit_ms)
        return "invalid";
    n *= unit_ms;
    if (!absolute && n > INT64_MAX - now_ms()) /* Redis: when > LLONG_MAX - basetime */
        return "invalid";
    if (absolute) {
        n -= now_ms();
        if (n < 1)
            n = 1;
    }
    *ttl = n < INT64_MAX / 4 ? n : INT64_MAX / 4; /* the store's arithmetic stays in range */
    return NULL;
}

static int expire_err(struct cmdctx *x, const char *err)
{
    char name[32];
    size_t n = x->argv[0].len < sizeof(name) - 1 ? x->argv[0].len : sizeof(name) - 1;

    if (err[0] == '-')
        return reply_err(x->res, "%s", err);
    for (size_t i = 0; i < n; i++)
        name[i] = (char)tolower(x->argv[0].p[i]);
    name[n] = '\0';
    return reply_err(x->res, "-ERR invalid expire time in '%s' command", name);
}

/* SET's options (Redis's parseExtendedStringArgumentsOrReply); getex: the
 * GETEX form (PERSIST; no NX, XX, GET, KEEPTTL). */
struct set_opts {
    int nx, xx, get, keepttl, persist;
    int64_t unit;        /* 0: no expiry given */
    int absolute;
    const struct kv_slice *when;
};

static int set_opts_parse(const struct kv_slice *v, size_t from, size_t argc, int getex,
                          struct set_opts *s)
{
    for (size_t i = from; i < argc; i++) {
        const struct kv_slice *a = &v[i];
        int has_next = i + 1 < argc;

        if (!getex && arg_is(a, "NX") && !s->xx)
            s->nx = 1;
        else if (!getex && arg_is(a, "XX") && !s->nx)
            s->xx = 1;
        else if (!getex && arg_is(a, "GET"))
            s->get = 1;
        else if (!getex && arg_is(a, "KEEPTTL") && !s->unit)
            s->keepttl = 1;
        else if (getex && arg_is(a, "PERSIST") && !s->unit)
            s->persist = 1;
        else if (has_next && !s->keepttl && !s->persist &&
                 ((arg_is(a, "EX") && (!s->unit || (s->unit == 1000 && !s->absolute))) ||
                  (arg_is(a, "PX") && (!s->unit || (s->unit == 1 && !s->absolute))) ||
                  (arg_is(a, "EXAT") && (!s->unit || (s->unit == 1000 && s->absolute))) ||
                  (arg_is(a, "PXAT") && (!s->unit || (s->unit == 1 && s->absolute))))) {
            s->unit = (a->p[0] | 0x20) == 'e' ? 1000 : 1;
            s->absolute = a->len == 4;
            s->when = &v[++i];
        } else {
            return -1;
        }
    }
    return 0;
}

static int cmd_set(struct cmdctx *x)
{
    const struct kv_slice *v = x->argv;
    struct set_opts s = {0};
    struct out o = {0};
    long long ttl = 0;
    const char *err;

    if (set_opts_parse(v, 3, x->argc, 0, &s) != 0)
        return reply_err(x->res, "-ERR syntax error");
    if (s.unit && (err = expire_arg(s.when, s.unit, s.absolute, &ttl)) != NULL)
        return expire_err(x, err);
    /* two fields (tag + length <= 6 bytes each here) and five varints */
    out_init_room(&o, x->call, v[1].len + v[2].len + 12 + 5 * 11);
    body_bytes(&o, 1, &v[1]);
    body_bytes(&o, 2, &v[2]);
    body_uint(&o, 3, (uint64_t)ttl);
    body_uint(&o, 4, s.nx);
    body_uint(&o, 5, s.xx);
    body_uint(&o, 8, s.get);
    body_uint(&o, 9, s.keepttl);
    return dispatch(&o, x->call, x->res, KV_OP_SET, s.get ? RS_SET_GET : RS_SET);
}

/* GETSET, SETNX (aux 1: answers :1/:0), SETEX / PSETEX (aux: the unit). */
static int cmd_set_simple(struct cmdctx *x)
{
    const struct kv_slice *v = x->argv;
    const struct kv_slice *key = &v[1], *val = &v[x->argc - 1];
    struct out o = {0};
    long long ttl = 0;
    const char *err;

    if (x->cmd->aux > 0 && (err = expire_arg(&v[2], x->cmd->aux, 0, &ttl)) != NULL)
        return expire_err(x, err);
    out_init_room(&o, x->call, key->len + val->len + 12 + 3 * 11);
    body_bytes(&o, 1, key);
    body_bytes(&o, 2, val);
    body_uint(&o, 3, (uint64_t)ttl);
    body_uint(&o, 4, x->cmd->style == RS_SETNX);
    body_uint(&o, 8, x->cmd->style == RS_SET_GET);
    return send_call(x, &o, KV_OP_SET);
}

static int cmd_msetnx(struct cmdctx *x)
{
    struct out o = {0};
    uint8_t tag[16];

    if (x->argc % 2 == 0)
        return wrong_args(x->res, &x->argv[0]);
    for (size_t i = 1; i + 1 < x->argc; i += 2) {
        const struct kv_slice *k = &x->argv[i], *v = &x->argv[i + 1];
        size_t inner = 1 + pb_varint_len(k->len) + k->len + 1 + pb_varint_len(v->len) + v->len;

        out_bytes(&o, tag, pb_put_len_prefix(tag, 1, inner));
        body_bytes(&o, 1, k);
        body_bytes(&o, 2, v);
    }
    body_uint(&o, 3, x->cmd->aux);
    return send_call(x, &o, KV_OP_MSET);
}

/* APPEND, STRLEN, GETDEL, INCRBYFLOAT: aux is the op; the value (if any) is argv[2]. */
static int cmd_str_plain(struct cmdctx *x)
{
    struct str_args a = {.value = x->argc > 2 ? &x->argv[2] : NULL};

    return str_call(x, (uint64_t)x->cmd->aux, &a);
}

static int cmd_getrange(struct cmdctx *x)
{
    struct str_args a = {0};
    long long s, e;

    if (arg_int(&x->argv[2], &s) != 0 || arg_int(&x->argv[3], &e) != 0)
        return not_integer(x->res);
    a.start = s;
    a.end = e;
    return str_call(x, STR_GETRANGE, &a);
}

static int cmd_setrange(struct cmdctx *x)
{
    struct str_args a = {.value = &x->argv[3]};
    long long off;

    if (arg_int(&x->argv[2], &off) != 0)
        return not_integer(x->res);
    if (off < 0)
        return reply_err(x->res, "-ERR offset is out of range");
    a.start = off;
    return str_call(x, STR_SETRANGE, &a);
}

/* Redis's getBitOffsetFromArgument: 0 .. 512 MiB * 8 - 1. */
static int bit_offset(const struct kv_slice *s, long long *off)
{
    return arg_int(s, off) != 0 || *off < 0 || ((unsigned long long)*off >> 3) >= (512u << 20)
               ? -1
               : 0;
}

static int cmd_getbit(struct cmdctx *x)
{
    struct str_args a = {0};
    long long off;

    if (bit_offset(&x->argv[2], &off) != 0)
        return reply_err(x->res, "-ERR bit offset is not an integer or out of range");
    a.start = off;
    return str_call(x, STR_GETBIT, &a);
}

static int cmd_setbit(struct cmdctx *x)
{
    struct str_args a = {0};
    long long off, bit;

    if (bit_offset(&x->argv[2], &off) != 0)
        return reply_err(x->res, "-ERR bit offset is not an integer or out of range");
    if (arg_int(&x->argv[3], &bit) != 0 || (bit & ~1LL))
        return reply_err(x->res, "-ERR bit is not an integer or out of range");
    a.start = off;
    a.end = bit;
    return str_call(x, STR_SETBIT, &a);
}

/* BITCOUNT key [start end [BYTE|BIT]] */
static int cmd_bitcount(struct cmdctx *x)
{
    struct str_args a = {0};
    long long s, e;

    if (x->argc == 3 || x->argc > 5)
        return reply_err(x->res, "-ERR syntax error");
    if (x->argc >= 4) {
        if (arg_int(&x->argv[2], &s) != 0 || arg_int(&x->argv[3], &e) != 0)
            return not_integer(x->res);
        a.start = s;
        a.end = e;
        a.flags |= SF_RANGE;
    }
    if (x->argc == 5) {
        if (arg_is(&x->argv[4], "BIT"))
            a.flags |= SF_BIT;
        else if (!arg_is(&x->argv[4], "BYTE"))
            return reply_err(x->res, "-ERR syntax error");
    }
    return str_call(x, STR_BITCOUNT, &a);
}

/* BITPOS key bit [start [end [BYTE|BIT]]] */
static int cmd_bitpos(struct cmdctx *x)
{
    struct str_args a = {0};
    long long bit, s, e;

    if (arg_int(&x->argv[2], &bit) != 0)
        return not_integer(x->res);
    if (bit != 0 && bit != 1)
        return reply_err(x->res, "-ERR The bit argument must be 1 or 0.");
    if (x->argc > 6)
        return reply_err(x->res, "-ERR syntax error");
    a.end = bit;
    if (x->argc >= 4) {
        if (arg_int(&x->argv[3], &s) != 0)
            return not_integer(x->res);
        a.start = s;
        a.flags |= SF_RANGE;
    }
    if (x->argc >= 5) {
        if (arg_int(&x->argv[4], &e) != 0)
            return not_integer(x->res);
        a.end2 = e;
        a.flags |= SF_HAS_END;
    }
    if (x->argc == 6) {
        if (arg_is(&x->argv[5], "BIT"))
            a.flags |= SF_BIT;
        else if (!arg_is(&x->argv[5], "BYTE"))
            return reply_err(x->res, "-ERR syntax error");
    }
    return str_call(x, STR_BITPOS, &a);
}

static int cmd_getex(struct cmdctx *x)
{
    struct str_args a = {0};
    struct set_opts s = {0};
    long long ttl = 0;
    const char *err;

    if (set_opts_parse(x->argv, 2, x->argc, 1, &s) != 0)
        return reply_err(x->res, "-ERR syntax error");
    if (s.unit && (err = expire_arg(s.when, s.unit, s.absolute, &ttl)) != NULL)
        return expire_err(x, err);
    a.ttl_ms = (uint64_t)ttl;
    a.flags = s.persist ? SF_PERSIST : 0;
    return str_call(x, STR_GETEX, &a);
}

/* LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN] */
static int cmd_lcs(struct cmdctx *x)
{
    struct str_args a = {.value = &x->argv[2]};
    long long n;

    for (size_t i = 3; i < x->argc; i++) {
        if (arg_is(&x->argv[i], "IDX"))
            a.flags |= SF_LCS_IDX;
        else if (arg_is(&x->argv[i], "LEN"))
            a.flags |= SF_LCS_LEN;
        else if (arg_is(&x->argv[i], "WITHMATCHLEN"))
            a.flags |= SF_LCS_WITHMATCHLEN;
        else if (arg_is(&x->argv[i], "MINMATCHLEN") && i + 1 < x->argc) {
            if (arg_int(&x->argv[++i], &n) != 0)
                return not_integer(x->res);
            a.start = n < 0 ? 0 : n;
        } else {
            return reply_err(x->res, "-ERR syntax error");
        }
    }
    if ((a.flags & SF_LCS_LEN) && (a.flags & SF_LCS_IDX))
        return reply_err(x->res,
                         "-ERR If you want both the length and indexes, please just use IDX.");
    return str_call_as(x, STR_LCS, &a,
                       (a.flags & SF_LCS_IDX)   ? RS_LCS_IDX
                       : (a.flags & SF_LCS_LEN) ? RS_STR_INT
                                                : RS_STR_STRING);
}

/* SAVE, BGSAVE [SCHEDULE]: an RDB file at --rdb-file (src/server/rdb.c). */
static int cmd_save(struct cmdctx *x)
{
    char why[512];
    int bg = arg_is(&x->argv[0], "BGSAVE"), rc;

    if (x->argc > (size_t)(bg ? 2 : 1)) /* BGSAVE SCHEDULE: accepted, run now */
        return wrong_args(x->res, &x->argv[0]);
    rc = kv_server_save(x->srv, bg, why, sizeof(why));
    if (rc == KV_EAGAIN)
        return reply_err(x->res, "-ERR Background save already in progress");
    if (rc != 0)
        return reply_err(x->res, "-ERR %s", why);
    return reply_str(x->res, bg ? "+Background saving started\r\n" : "+OK\r\n");
}

/* SHUTDOWN [NOSAVE|SAVE|NOW|FORCE|ABORT]: a graceful stop, as SIGTERM (the store in its
 * segment is the persistence, kept either way; the options are accepted). Answers +OK
 * and closes the connection (Redis closes without a reply). */
static int cmd_shutdown(struct cmdctx *x)
{
    for (size_t i = 1; i < x->argc; i++) {
        if (arg_is(&x->argv[i], "ABORT"))
            return reply_err(x->res, "-ERR No shutdown in progress.");
        if (!arg_is(&x->argv[i], "NOSAVE") && !arg_is(&x->argv[i], "SAVE") &&
            !arg_is(&x->argv[i], "NOW") && !arg_is(&x->argv[i], "FORCE"))
            return reply_err(x->res, "-ERR syntax error");
    }
    kill(getpid(), SIGTERM);
    x->res->close = 1;
    return reply_str(x->res, "+OK\r\n"); /* Redis sends nothing; an empty reply is no reply */
}

static int cmd_lastsave(struct cmdctx *x)
{
    struct out o = {0};

    out_line_int(&o, ':', kv_server_last_save(x->srv, NULL, NULL));
    return out_reply(&o, x->res);
}

/* ---- transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH ----------------------------- */
/* A session's MULTI state (kv_session.multi, io-thread only): the queued commands,
 * already encoded as the ExecSub entries of the EXEC request they will become. A command
 * answered on the spot when queued (an argument error, PING, TIME, ...) is queued as a
 * PING whose body is its reply, replied verbatim (RS_RAW). */
struct multi_state {
    struct out q;  /* ExecRequest body so far (heap, KV_MOD_PACKET) */
    size_t n;      /* commands queued */
    int active;    /* between MULTI and EXEC/DISCARD */
    int dirty;     /* a command was refused while queueing: EXEC answers EXECABORT */
    int local;     /* a connection command is queued (RS_LOCAL): EXEC is a barrier */
    uint16_t db;   /* the database queued commands are built in: SELECT inside MULTI
                    * changes this, and the connection's only when EXEC runs */
    struct kv_session *s; /* borrowed: whose queue (its multi_n shows the state) */
};

void kv_server_resp_session_end(struct kv_session *s)
{
    struct multi_state *ms = s->multi;

    if (!ms)
        return;
    out_release(&ms->q);
    kv_mem_free(KV_MOD_SERVER, ms);
    s->multi = NULL;
}

static void multi_reset(struct multi_state *ms)
{
    out_release(&ms->q);
    ms->q.failed = 0;
    ms->n = 0;
    ms->active = ms->dirty = ms->local = 0;
    __atomic_store_n(&ms->s->multi_n, 0, __ATOMIC_RELAXED);
}

/* Appends one ExecSub{opcode, body, tag, db}. */
static void multi_add(struct multi_state *ms, uint32_t opcode, uint32_t tag, const uint8_t *body,
                      size_t blen)
{
    uint8_t hdr[48];
    uint32_t db = (uint32_t)ms->db + 1; /* ExecSub.db: the database plus one, 0 = EXEC's */
    size_t inner = (opcode ? 1 + pb_varint_len(opcode) : 0) + 1 + pb_varint_len(blen) + blen +
                   (tag ? 1 + pb_varint_len(tag) : 0) + 1 + pb_varint_len(db);
    size_t n = pb_put_len_prefix(hdr, 1, inner);
    struct kv_slice b = {body ? body : (const uint8_t *)"", blen};

    if (opcode)
        n += pb_put_uint_field(hdr + n, 1, opcode);
    out_bytes(&ms->q, hdr, n);
    body_bytes(&ms->q, 2, &b);
    body_uint(&ms->q, 3, tag);
    body_uint(&ms->q, 4, db);
    ms->n++;
    __atomic_store_n(&ms->s->multi_n, (uint32_t)ms->n + 1, __ATOMIC_RELAXED);
}

static int multi_refuse(struct cmdctx *x, struct multi_state *ms, int rc)
{
    ms->dirty = 1;
    return rc;
}

static int resp_check(struct cmdctx *x);

/* A command while MULTI is active: queued (+QUEUED) or refused (the transaction is then
 * aborted at EXEC, as Redis does for unknown commands, wrong arity, NOAUTH, no-multi). */
static int multi_queue(struct cmdctx *x, struct multi_state *ms)
{
    struct kv_call tmp = {0};
    struct kv_text_result r = {0};
    struct cmdctx y = *x;
    uint8_t room[256] __attribute__((aligned(8)));
    int rc;

    if (!x->cmd)
        return multi_refuse(x, ms, unknown_command(x));
    rc = resp_check(x);
    if (rc != 0)
        return multi_refuse(x, ms, rc);
    if (x->cmd->flags & CMD_NOMULTI)
        return multi_refuse(x, ms,
                            reply_err(x->res, "-ERR Command not allowed inside a transaction"));
    y.call = &tmp;
    y.res = &r;
    if (x->cmd->fn == cmd_monitor) { /* Redis: an EXEC denies blocking */
        static const char e[] = "-ERR MONITOR isn't allowed for DENY BLOCKING client\r\n";

        multi_add(ms, KV_OP_PING, RS_RAW, (const uint8_t *)e, sizeof(e) - 1);
        goto queued;
    }
    if ((x->cmd->flags & CMD_LOCAL) && x->cmd->fn != cmd_select) {
        /* a connection command (CONFIG, CLIENT, HELLO, INFO, TIME, ...) runs at EXEC, in
         * order, and not at all when the transaction is discarded or aborted: queued as
         * its argv, run by rs_exec on this IO thread */
        struct out a = {0};

        for (size_t i = 0; i < x->argc; i++)
            body_bytes(&a, 1, &x->argv[i]);
        if (a.failed) {
            out_release(&a);
            return KV_ENOMEM;
        }
        multi_add(ms, KV_OP_PING, RS_LOCAL, a.p, a.len);
        out_release(&a);
        ms->local = 1;
        goto queued;
    }
    if (x->cmd->fn == cmd_select) { /* SELECT runs at EXEC: later commands are built in it */
        long long n;

        rc = db_arg(&y, &x->argv[1], NULL, &n); /* an error is its reply in EXEC's */
        if (rc == 0)
            ms->db = (uint16_t)n;
        else if (rc != KV_TEXT_REPLY)
            return rc;
        multi_add(ms, KV_OP_PING, RS_RAW, rc ? r.reply : (const uint8_t *)"+OK\r\n",
                  rc ? r.reply_len : 5);
        if (rc)
            kv_mem_free(KV_MOD_PACKET, r.reply);
        goto queued;
    }
    tmp.session = x->session;
    tmp.db = ms->db;
    tmp.scratch = room;
    tmp.scratch_cap = sizeof(room);
    y.call = &tmp;
    y.res = &r;
    /* the command is built in the queue's database (MOVE and COPY read the session's) */
    uint16_t sdb = x->session->db;
    __atomic_store_n(&x->session->db, ms->db, __ATOMIC_RELAXED);
    rc = x->cmd->fn(&y);
    __atomic_store_n(&x->session->db, sdb, __ATOMIC_RELAXED);
    if (rc == KV_TEXT_DISPATCH) {
        multi_add(ms, tmp.opcode, tmp.tag, r.body, r.body_len);
        if (!r.body_in_scratch)
            kv_mem_free(KV_MOD_PACKET, r.body);
    } else if (rc == KV_TEXT_REPLY) {
        multi_add(ms, KV_OP_PING, RS_RAW, r.reply, r.reply_len);
        kv_mem_free(KV_MOD_PACKET, r.reply);
    } else {
        return rc;
    }
queued:
    if (ms->q.failed || ms->q.len > x->srv->cfg->max_body) {
        multi_reset(ms);
        ms->active = ms->dirty = 1;
        return reply_err(x->res, "-ERR transaction larger than --max-body (%zu bytes)",
                         x->srv->cfg->max_body);
    }
    return reply_str(x->res, "+QUEUED\r\n");
}

static struct multi_state *multi_of(struct kv_session *s)
{
    struct multi_state *ms;

    if (!s->multi && (ms = kv_mem_calloc(KV_MOD_SERVER, sizeof(struct multi_state))) != NULL) {
        ms->s = s;
        s->multi = ms;
    }
    return s->multi;
}

static int cmd_multi(struct cmdctx *x)
{
    struct multi_state *ms = multi_of(x->session);

    if (!ms)
        return KV_ENOMEM;
    if (ms->active)
        return reply_err(x->res, "-ERR MULTI calls can not be nested");
    multi_reset(ms);
    ms->active = 1;
    ms->db = x->session->db;
    __atomic_store_n(&x->session->multi_n, 1, __ATOMIC_RELAXED);
    return reply_str(x->res, "+OK\r\n");
}

/* A WATCH call: keys from argv[first..], or none with unwatch (UNWATCH, DISCARD, and the
 * EXEC refused at queue time: each forgets the watches, in order with the connection's
 * other calls). */
static int watch_call(struct cmdctx *x, size_t first, int unwatch, enum reply_style style)
{
    struct out o = {0};
    size_t need = 8;

    for (size_t i = first; i < x->argc; i++)
        need += x->argv[i].len + 16;
    out_init_room(&o, x->call, need);
    for (size_t i = first; i < x->argc; i++)
        body_bytes(&o, 1, &x->argv[i]);
    body_uint(&o, 2, (uint64_t)unwatch);
    return dispatch(&o, x->call, x->res, KV_OP_WATCH, style);
}

static int cmd_exec(struct cmdctx *x)
{
    struct multi_state *ms = x->session->multi;
    struct out o;

    if (!ms || !ms->active)
        return reply_err(x->res, "-ERR EXEC without MULTI");
    if (ms->dirty) {
        multi_reset(ms);
        return watch_call(x, x->argc, 1, RS_EXECABORT);
    }
    o = ms->q; /* the queue is the body: handed over */
    memset(&ms->q, 0, sizeof(ms->q));
    /* the SELECTs queued run now: the connection stays in the last one (as Redis, but
     * also when a WATCH aborts the EXEC: later commands are built before its answer) */
    __atomic_store_n(&x->session->db, ms->db, __ATOMIC_RELAXED);
    /* queued connection commands run when the answer is laid out: the next command waits
     * for that (Redis runs them in EXEC, before anything after it) */
    x->res->barrier = ms->local;
    multi_reset(ms);
    return dispatch(&o, x->call, x->res, KV_OP_EXEC, RS_EXEC);
}

static int cmd_discard(struct cmdctx *x)
{
    struct multi_state *ms = x->session->multi;

    if (!ms || !ms->active)
        return reply_err(x->res, "-ERR DISCARD without MULTI");
    multi_reset(ms);
    return watch_call(x, x->argc, 1, RS_OK);
}

static int cmd_watch(struct cmdctx *x)
{
    struct multi_state *ms = x->session->multi;

    if (ms && ms->active)
        return reply_err(x->res, "-ERR WATCH inside MULTI is not allowed");
    return watch_call(x, 1, 0, RS_OK);
}

static int cmd_unwatch(struct cmdctx *x)
{
    return watch_call(x, x->argc, 1, RS_OK);
}

#define W CMD_WRITE
#define R CMD_READONLY
#define F CMD_FAST
#define L CMD_LOCAL
#define P CMD_PURE
#define T CMD_TXN
static const struct resp_cmd resp_cmds[] = {
    /* name        arity flags            fn            reply style     aux */
    {"GET",           2, R | F,           cmd_keys,     RS_BULK,        KV_OP_GET},
    {"SET",          -3, W,               cmd_set,      RS_SET,         0},
    {"GETSET",        3, W | F,           cmd_set_simple, RS_SET_GET,   0},
    {"SETNX",         3, W | F,           cmd_set_simple, RS_SETNX,     0},
    {"SETEX",         4, W,               cmd_set_simple, RS_SET,       1000},
    {"PSETEX",        4, W,               cmd_set_simple, RS_SET,       1},
    {"MSETNX",       -3, W,               cmd_msetnx,   RS_SETNX,       1},
    {"APPEND",        3, W | F,           cmd_str_plain, RS_STR_INT,    STR_APPEND},
    {"STRLEN",        2, R | F,           cmd_str_plain, RS_STR_INT,    STR_STRLEN},
    {"GETRANGE",      4, R,               cmd_getrange, RS_STR_STRING,  0},
    {"SUBSTR",        4, R,               cmd_getrange, RS_STR_STRING,  0},
    {"SETRANGE",      4, W,               cmd_setrange, RS_STR_INT,     0},
    {"GETBIT",        3, R | F,           cmd_getbit,   RS_STR_INT,     0},
    {"SETBIT",        4, W,               cmd_setbit,   RS_STR_INT,     0},
    {"BITCOUNT",     -2, R,               cmd_bitcount, RS_STR_INT,     0},
    {"BITPOS",       -3, R,               cmd_bitpos,   RS_STR_INT,     0},
    {"INCRBYFLOAT",   3, W | F,           cmd_str_plain, RS_STR_STRING, STR_INCRBYFLOAT},
    {"GETDEL",        2, W | F,           cmd_str_plain, RS_STR_BULK,   STR_GETDEL},
    {"GETEX",        -2, W | F,           cmd_getex,    RS_STR_BULK,    0},
    {"LCS",          -3, R,               cmd_lcs,      RS_STR_STRING,  0},
    {"DEL",          -2, W,               cmd_keys,     RS_INT_FIELD1,  KV_OP_DEL},
    {"UNLINK",       -2, W | F,           cmd_keys,     RS_INT_FIELD1,  KV_OP_DEL},
    {"EXISTS",       -2, R | F,           cmd_exists,   RS_COUNT_FOUND, 0},
    {"INCR",          2, W | F,           cmd_incr,     RS_INT_INCR,    1},
    {"DECR",          2, W | F,           cmd_incr,     RS_INT_INCR,    -1},
    {"INCRBY",        3, W | F,           cmd_incrby,   RS_INT_INCR,    1},
    {"DECRBY",        3, W | F,           cmd_incrby,   RS_INT_INCR,    -1},
    {"MGET",         -2, R | F,           cmd_keys,     RS_MGET,        KV_OP_MGET},
    {"MSET",         -3, W,               cmd_msetnx,   RS_OK,          0},
    {"EXPIRE",       -3, W | F,           cmd_expire,   RS_EXPIRE,      1000},
    {"PEXPIRE",      -3, W | F,           cmd_expire,   RS_EXPIRE,      1},
    {"EXPIREAT",     -3, W | F,           cmd_expire,   RS_EXPIRE,      -1000},
    {"PEXPIREAT",    -3, W | F,           cmd_expire,   RS_EXPIRE,      -1},
    {"EXPIRETIME",    2, R | F,           cmd_ttl,      RS_EXPIRETIME_S, 0},
    {"PEXPIRETIME",   2, R | F,           cmd_ttl,      RS_EXPIRETIME_MS, 0},
    {"PERSIST",       2, W | F,           cmd_persist,  RS_PERSIST,     0},
    {"TTL",           2, R | F,           cmd_ttl,      RS_TTL_S,       0},
    {"PTTL",          2, R | F,           cmd_ttl,      RS_TTL_MS,      0},
    {"SCAN",         -2, R,               cmd_scan,     RS_SCAN,        0},
    {"KEYS",          2, R,               cmd_keys_glob, RS_KEYS,       0},
    {"RANDOMKEY",     1, R,               cmd_randomkey, RS_RANDOMKEY,  0},
    {"TYPE",          2, R | F,           cmd_keys,     RS_TYPE,        KV_OP_EXISTS},
    {"TOUCH",        -2, R | F,           cmd_exists,   RS_COUNT_FOUND, 0},
    {"TIME",          1, F | L | P,       cmd_time,     RS_NONE,        0},
    {"MEMORY",       -2, R,               cmd_memory,   RS_MEMORY_USAGE, 0},
    {"OBJECT",       -2, R,               cmd_object,   RS_IDLETIME,    0},
    {"ECHO",          2, F,               cmd_echo,     RS_ECHO,        0},
    {"DBSIZE",        1, R | F,           cmd_nobody,   RS_DBSIZE,      KV_OP_STATS},
    {"INFO",         -1, L,               cmd_info,     RS_NONE,        0},
    {"FLUSHDB",      -1, W,               cmd_flush,    RS_OK,          1},
    {"FLUSHALL",     -1, W,               cmd_flush,    RS_OK,          0},
    {"RENAME",        3, W,               cmd_rename,   RS_RENAME,      0},
    {"RENAMENX",      3, W | F,           cmd_rename,   RS_RENAMENX,    RENAME_NX},
    {"MOVE",          3, W | F,           cmd_move,     RS_MOVED,       0},
    {"COPY",         -3, W,               cmd_copy,     RS_MOVED,       0},
    {"SWAPDB",        3, W | F,           cmd_swapdb,   RS_OK_ERR,      0},
    {"PING",         -1, F | CMD_NOAUTH | L | P, cmd_ping,  RS_NONE,        0},
    {"QUIT",         -1, F | CMD_NOAUTH | L | T, cmd_quit, RS_NONE,     0},
    {"AUTH",         -2, F | CMD_NOAUTH,  cmd_auth,     RS_AUTH,        0},
    {"HELLO",        -1, F | CMD_NOAUTH | L, cmd_hello, RS_NONE,        0},
    {"RESET",         1, F | CMD_NOAUTH | L | T, cmd_reset, RS_NONE,      0},
    {"MONITOR",       1, CMD_ADMIN | L,   cmd_monitor,  RS_NONE,        0},
    {"SELECT",        2, F | L | P,       cmd_select,   RS_NONE,        0},
    {"COMMAND",      -1, L | P,           cmd_command,  RS_NONE,        0},
    {"CONFIG",       -2, CMD_ADMIN | L,   cmd_config,   RS_NONE,        0},
    {"CLIENT",       -2, L,               cmd_client,   RS_NONE,        0},
    {"FUNCTION",     -2, L,               cmd_function, RS_NONE,        0},
    {"SAVE",          1, CMD_ADMIN | L | CMD_NOMULTI, cmd_save, RS_NONE, 0},
    {"BGSAVE",       -1, CMD_ADMIN | L,   cmd_save,     RS_NONE,        0},
    {"LASTSAVE",      1, F | L | P,       cmd_lastsave, RS_NONE,        0},
    {"SHUTDOWN",     -1, CMD_ADMIN | L | CMD_NOMULTI, cmd_shutdown, RS_NONE, 0},
    {"MULTI",         1, F | L | T,       cmd_multi,    RS_NONE,        0},
    {"EXEC",          1, T,               cmd_exec,     RS_EXEC,        0},
    {"DISCARD",       1, F | T,           cmd_discard,  RS_OK,          0},
    {"WATCH",        -2, F | T,           cmd_watch,    RS_OK,          0},
    {"UNWATCH",       1, F,               cmd_unwatch,  RS_OK,          0},
};
#undef T
#undef W
#undef R
#undef F
#undef L
#undef P
#define RESP_NCMDS (sizeof(resp_cmds) / sizeof(resp_cmds[0]))

static size_t resp_cmd_count(void)
{
    return RESP_NCMDS;
}

/* INFO commandstats: per row, the calls run and the calls refused before
 * running (arity, NOAUTH); relaxed atomics, summed by whoever reads. */
static uint64_t resp_cmd_calls[RESP_NCMDS], resp_cmd_rejected[RESP_NCMDS];

size_t kv_server_resp_cmdstats(char *buf, size_t cap, size_t len)
{
    for (size_t i = 0; i < RESP_NCMDS; i++) {
        uint64_t calls = __atomic_load_n(&resp_cmd_calls[i], __ATOMIC_RELAXED);
        uint64_t rejected = __atomic_load_n(&resp_cmd_rejected[i], __ATOMIC_RELAXED);
        char name[32];
        size_t k;

        if (!calls && !rejected)
            continue;
        for (k = 0; resp_cmds[i].name[k] && k < sizeof(name) - 1; k++)
            name[k] = (char)tolower((unsigned char)resp_cmds[i].name[k]);
        name[k] = '\0';
        /* usec is not measured (a clock read per command): 0, as README says */
        len = kv_mem_appendf(buf, cap, len,
                             "cmdstat_%s:calls=%llu,usec=0,usec_per_call=0.00,"
                             "rejected_calls=%llu,failed_calls=0\r\n",
                             name, (unsigned long long)calls, (unsigned long long)rejected);
    }
    return len;
}

uint64_t kv_server_resp_local_calls(void)
{
    uint64_t n = 0;

    for (size_t i = 0; i < RESP_NCMDS; i++)
        if ((resp_cmds[i].flags & CMD_LOCAL) && resp_cmds[i].fn != cmd_reset) /* RESET: a
                                                       * call (its UNWATCH), counted there */
            n += __atomic_load_n(&resp_cmd_calls[i], __ATOMIC_RELAXED);
    return n;
}

void kv_server_resp_cmdstats_reset(void)
{
    for (size_t i = 0; i < RESP_NCMDS; i++) {
        __atomic_store_n(&resp_cmd_calls[i], 0, __ATOMIC_RELAXED);
        __atomic_store_n(&resp_cmd_rejected[i], 0, __ATOMIC_RELAXED);
    }
}

static const struct resp_cmd *resp_cmd_at(size_t i)
{
    return &resp_cmds[i];
}

/* Each row's name in lower case (COMMAND, CLIENT LIST's cmd=), built with the index. */
#define RESP_NAME_MAX 24
static char resp_lname[RESP_NCMDS][RESP_NAME_MAX];

static const char *resp_cmd_lname(const struct resp_cmd *c)
{
    return resp_lname[c - resp_cmds];
}

/* ---- the name index ------------------------------------------------------------ */
/* Open addressing over a hash of the case-folded name, built once: finding
 * a row costs one hash of the name and one comparison, whatever the table's
 * size (the if-chain it replaces compared names one by one). */
#define RESP_INDEX 256 /* a power of two, > 2 x the rows */
static uint8_t resp_index[RESP_INDEX]; /* row + 1; 0 = empty */
static uint8_t resp_name_len[RESP_NCMDS]; /* strlen of each row's name */
static pthread_once_t resp_index_once = PTHREAD_ONCE_INIT;

/* The length and three letters, case-folded: enough to spread the rows (a
 * clash costs one more probe) and cheaper than hashing every byte. */
static inline uint32_t name_hash(const uint8_t *p, size_t n)
{
    if (n == 0)
        return 0;
    return (uint32_t)n * 97u + ((p[0] | 0x20u) << 2) + ((p[n / 2] | 0x20u) * 7u) +
           ((p[n - 1] | 0x20u) * 13u);
}

static void resp_index_build(void)
{
    _Static_assert(RESP_NCMDS < 255 && 2 * RESP_NCMDS < RESP_INDEX, "resp_index too small");
    for (size_t i = 0; i < RESP_NCMDS; i++) {
        const char *nm = resp_cmds[i].name;
        uint32_t h = name_hash((const uint8_t *)nm, strlen(nm)) & (RESP_INDEX - 1);

        resp_name_len[i] = (uint8_t)strlen(nm);
        assert(strlen(nm) < RESP_NAME_MAX);
        for (size_t k = 0; nm[k]; k++)
            resp_lname[i][k] = (char)tolower((unsigned char)nm[k]);
        for (const char *c = nm; *c; c++) /* name_is() folds letters only */
            assert((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z'));

        while (resp_index[h])
            h = (h + 1) & (RESP_INDEX - 1);
        resp_index[h] = (uint8_t)(i + 1);
    }
}

/* Case-insensitive equality of a command name against a row's name, which
 * is letters only (checked when the index is built): for letters, byte | 0x20
 * is exactly the lower case, and no other byte folds onto a letter. Inline,
 * without strlen or the locale-aware strncasecmp: this runs for every
 * command. */
static inline int name_is(const struct kv_slice *a, const struct resp_cmd *c, size_t clen)
{
    if (a->len != clen)
        return 0;
    for (size_t i = 0; i < clen; i++)
        if ((a->p[i] | 0x20u) != ((uint8_t)c->name[i] | 0x20u))
            return 0;
    return 1;
}

static const struct resp_cmd *resp_cmd_find(const struct kv_slice *name)
{
    uint32_t h = name_hash(name->p, name->len) & (RESP_INDEX - 1);

    for (uint8_t r; (r = resp_index[h]) != 0; h = (h + 1) & (RESP_INDEX - 1)) {
        const struct resp_cmd *c = &resp_cmds[r - 1];

        if (name_is(name, c, resp_name_len[r - 1]))
            return c;
    }
    return NULL;
}

/* Arity, NOAUTH and a refused write, in Redis's order (processCommand: arity before
 * authentication): 0, or the error reply. */
static int resp_check(struct cmdctx *x)
{
    if (x->cmd->arity > 0 ? x->argc != (size_t)x->cmd->arity : x->argc < (size_t)-x->cmd->arity)
        return wrong_args(x->res, &x->argv[0]);
    if (!(x->cmd->flags & CMD_NOAUTH) && x->srv->cfg->requirepass[0] &&
        !(__atomic_load_n(&x->session->flags, __ATOMIC_ACQUIRE) & KV_SESSION_AUTHED))
        return reply_str(x->res, "-NOAUTH Authentication required.\r\n");
    int e = (x->cmd->flags & CMD_WRITE) ? kv_server_writes_refused(x->srv) : 0;
    if (e) { /* a failed sync (README "Power loss"): Redis's MISCONF, queued or not */
        char m[200];

        return reply_err(x->res, "-MISCONF %s", kv_server_disk_error(e, m, sizeof(m)));
    }
    return 0;
}

/* MONITOR: one relaxed load while nobody monitors; admin commands (MONITOR itself,
 * CONFIG, SAVE) are not shown, as in Redis */
static void monitor_feed(struct kv_server *srv, const struct cmdctx *x, struct kv_session *s,
                         int rc)
{
    if (srv->monitors && __atomic_load_n(srv->monitors, __ATOMIC_RELAXED) &&
        !(x->cmd->flags & CMD_ADMIN) && (rc == KV_TEXT_DISPATCH || rc == KV_TEXT_REPLY))
        kv_io_monitor_feed(srv->io, s, __atomic_load_n(&s->db, __ATOMIC_RELAXED), x->argc,
                           x->argv, monitor_redact(x));
}

static int resp_command(void *ctx, struct kv_session *s, size_t argc, const struct kv_slice *argv,
                        struct kv_call *call, struct kv_text_result *res)
{
    struct kv_server *srv = ctx;
    struct cmdctx x = {srv, s, argc, argv, call, res, resp_cmd_find(&argv[0])};
    struct multi_state *ms = s->multi;
    int rc;

    /* before anything is done or counted: a local command that must see the calls sent
     * before it is parsed again once they have run (outside MULTI: queued, it runs at
     * EXEC, after them) */
    if (res->busy && x.cmd && (x.cmd->flags & (CMD_LOCAL | CMD_PURE)) == CMD_LOCAL &&
        !(ms && ms->active))
        return KV_TEXT_WAIT;
    if (call) {
        call->db = s->db; /* the database the call is built in (SELECT is answered here) */
        call->resp3 = __atomic_load_n(&s->resp, __ATOMIC_RELAXED) == 3; /* and its protocol */
    }
    /* CLIENT REPLY OFF / SKIP: every reply (errors too) is dropped; SKIP
     * drops the next one only (CLIENT REPLY itself changes this) */
    if (s->reply_mode != KV_REPLY_ON) {
        res->silent = 1;
        if (s->reply_mode == KV_REPLY_SKIP)
            s->reply_mode = KV_REPLY_ON;
    }
    if (__builtin_expect(ms && ms->active, 0)) {
        /* MONITOR shows a queued command when it is queued (Redis: when EXEC runs it;
         * the order multi, commands, exec is the same) and not a refused one */
        int dirty = ms->dirty;

        if (!x.cmd || !(x.cmd->flags & CMD_TXN))
            rc = multi_queue(&x, ms);
        else if ((rc = resp_check(&x)) != 0)
            return multi_refuse(&x, ms, rc);
        else
            rc = x.cmd->fn(&x);
        if (x.cmd && (ms->dirty == dirty || (x.cmd->flags & CMD_TXN)))
            monitor_feed(srv, &x, s, rc);
        return rc;
    }
    if (!x.cmd)
        return unknown_command(&x);
    __atomic_store_n(&s->cmd, resp_lname[x.cmd - resp_cmds], __ATOMIC_RELAXED); /* CLIENT LIST */
    if ((rc = resp_check(&x)) != 0) {
        __atomic_fetch_add(&resp_cmd_rejected[x.cmd - resp_cmds], 1, __ATOMIC_RELAXED);
        return rc;
    }
    __atomic_fetch_add(&resp_cmd_calls[x.cmd - resp_cmds], 1, __ATOMIC_RELAXED);
    rc = x.cmd->fn(&x);
    monitor_feed(srv, &x, s, rc);
    return rc;
}


/* ---- replies ------------------------------------------------------------------- */
/* The error body (kv.Error{message}) of a non-OK answer, if any. */
static struct kv_slice error_message(const struct kv_call *call)
{
    struct pb_reader r = {call->resp, call->resp + call->resp_len};
    struct pb_field f;
    struct kv_slice m = {(const uint8_t *)"", 0};

    while (pb_next(&r, &f) == 1)
        if (f.number == 1 && f.wire == 2) {
            m.p = f.data;
            m.len = f.len;
        }
    return m;
}

static void reply_status_error(struct out *o, const struct kv_call *call)
{
    struct kv_slice m = error_message(call);

    switch (call->status) {
    case KV_ST_NOAUTH: out_fmt(o, "-NOAUTH Authentication required.\r\n"); break;
    case KV_ST_OUT_OF_MEMORY:
        out_fmt(o, "-OOM command not allowed when used memory > 'maxmemory'.\r\n");
        break;
    case KV_ST_NOT_A_NUMBER: out_fmt(o, "-ERR value is not an integer or out of range\r\n"); break;
    case KV_ST_BUSY: out_fmt(o, "-BUSY %.*s\r\n", (int)m.len, (const char *)m.p); break;
    case KV_ST_DISK_ERROR: out_fmt(o, "-MISCONF %.*s\r\n", (int)m.len, (const char *)m.p); break;
    default:
        out_fmt(o, "-ERR %s%s%.*s\r\n", kv_status_name(call->status), m.len ? ": " : "",
                (int)(m.len < 300 ? m.len : 300), (const char *)m.p);
        break;
    }
}

/* Field values of a flat message (last occurrence wins). */
struct fields {
    uint64_t u[4];
    struct kv_slice b[4];
};

static void read_fields(const struct kv_call *call, struct fields *f)
{
    struct pb_reader r = {call->resp, call->resp + call->resp_len};
    struct pb_field fl;

    memset(f, 0, sizeof(*f));
    while (pb_next(&r, &fl) == 1)
        if (fl.number < 4) {
            f->u[fl.number] = fl.u64;
            if (fl.wire == 2) {
                f->b[fl.number].p = fl.data;
                f->b[fl.number].len = fl.len;
            }
        }
}

static void reply_mget(struct out *o, const struct kv_call *call, int count_only)
{
    struct pb_reader r = {call->resp, call->resp + call->resp_len};
    struct pb_field f;
    size_t n = 0, found = 0;

    while (pb_next(&r, &f) == 1)
        if (f.number == 1 && f.wire == 2)
            n++;
    if (!count_only)
        out_line_int(o, '*', (int64_t)n);
    r.p = call->resp;
    while (pb_next(&r, &f) == 1) {
        struct pb_reader e = {f.data, f.data + f.len};
        struct pb_field ef;
        struct kv_slice v = {(const uint8_t *)"", 0};
        int is_found = 0;

        if (f.number != 1 || f.wire != 2)
            continue;
        while (pb_next(&e, &ef) == 1) {
            if (ef.number == 1)
                is_found = ef.u64 != 0;
            else if (ef.number == 2 && ef.wire == 2) {
                v.p = ef.data;
                v.len = ef.len;
            }
        }
        found += (size_t)is_found;
        if (count_only)
            continue;
        if (is_found)
            out_bulk(o, v.p, v.len);
        else
            out_nil(o);
    }
    if (count_only)
        out_line_int(o, ':', (int64_t)found);
}

static void reply_scan(struct out *o, const struct kv_call *call)
{
    struct pb_reader r = {call->resp, call->resp + call->resp_len};
    struct pb_field f;
    uint64_t cursor = 0;
    size_t n = 0;
    char cur[32];

    while (pb_next(&r, &f) == 1) {
        if (f.number == 1)
            cursor = f.u64;
        else if (f.number == 2)
            n++;
    }
    snprintf(cur, sizeof(cur), "%llu", (unsigned long long)cursor);
    out_fmt(o, "*2\r\n");
    out_bulk(o, cur, strlen(cur));
    out_line_int(o, '*', (int64_t)n);
    r.p = call->resp;
    while (pb_next(&r, &f) == 1)
        if (f.number == 2 && f.wire == 2)
            out_bulk(o, f.data, f.len);
}

/* A figure of a StatsResponse by name, or -1. */
static int64_t stat_value(const struct kv_call *call, const char *name)
{
    struct pb_reader r = {call->resp, call->resp + call->resp_len};
    struct pb_field f;
    size_t nl = strlen(name);

    while (pb_next(&r, &f) == 1) {
        struct pb_reader e = {f.data, f.data + f.len};
        struct pb_field ef;
        int match = 0;
        int64_t v = 0;

        if (f.number != 1 || f.wire != 2)
            continue;
        while (pb_next(&e, &ef) == 1) {
            if (ef.number == 1 && ef.wire == 2)
                match = ef.len == nl && memcmp(ef.data, name, nl) == 0;
            else if (ef.number == 2)
                v = pb_zigzag_decode(ef.u64);
        }
        if (match)
            return v;
    }
    return -1;
}

/* ---- reply styles ----------------------------------------------------------------- */
/* Each style's function writes the reply of an answer its row lets through;
 * the others get the row's literal (NOT_FOUND, EXISTS) or Redis's form of
 * the status (reply_status_error). */
typedef void (*reply_fn)(struct out *o, const struct kv_call *call, const struct kv_server *srv);

static void rs_ok(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    OUT_LIT(o, "+OK\r\n");
}

static void rs_set_get(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct fields f;

    read_fields(call, &f);
    if (f.u[3])
        out_bulk(o, f.b[2].p, f.b[2].len);
    else
        out_nil(o);
}

static void rs_bulk(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct fields f;

    read_fields(call, &f);
    out_bulk(o, f.b[1].p, f.b[1].len);
}

static void rs_echo(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    out_bulk(o, call->resp, call->resp_len);
}

static void rs_int_field1(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct fields f;

    read_fields(call, &f);
    out_line_int(o, ':', (int64_t)f.u[1]);
}

static void rs_int_incr(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct fields f;

    read_fields(call, &f);
    out_line_int(o, ':', pb_zigzag_decode(f.u[1]));
}

static void rs_count_found(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    reply_mget(o, call, 1);
}

static void rs_mget(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    reply_mget(o, call, 0);
}

static void rs_expire(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    OUT_LIT(o, ":1\r\n");
}

static void rs_persist(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct fields f;

    read_fields(call, &f);
    out_line_int(o, ':', pb_zigzag_decode(f.u[2]) != -1);
}

static void rs_ttl(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct fields f;
    int64_t v;

    read_fields(call, &f);
    v = pb_zigzag_decode(f.u[1]);
    if (v >= 0 && call->tag == RS_TTL_S)
        v = (v + 500) / 1000;
    out_line_int(o, ':', v);
}

static void rs_scan(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    reply_scan(o, call);
}

static void rs_dbsize(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    out_line_int(o, ':', stat_value(call, "db_keys"));
}

static void rs_done(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct fields f;

    read_fields(call, &f);
    out_line_int(o, ':', f.u[1] ? 1 : 0);
}

static void rs_auth(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    if (call->status == KV_ST_OK)
        OUT_LIT(o, "+OK\r\n");
    else if (call->status == KV_ST_NOAUTH)
        OUT_LIT(o, "-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    else
        reply_status_error(o, call);
}

static void rs_setnx(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    if (call->status == KV_ST_OK)
        OUT_LIT(o, ":1\r\n");
    else if (call->status == KV_ST_EXISTS)
        OUT_LIT(o, ":0\r\n");
    else
        reply_status_error(o, call);
}

/* A StrResponse: found, value (has_value), number, matches (counted). */
struct str_fields {
    int found, has_value;
    struct kv_slice value;
    int64_t number;
    size_t nmatches;
};

static void read_str(const struct kv_call *call, struct str_fields *s)
{
    struct pb_reader r = {call->resp, call->resp + call->resp_len};
    struct pb_field f;

    memset(s, 0, sizeof(*s));
    s->value.p = (const uint8_t *)"";
    while (pb_next(&r, &f) == 1) {
        if (f.number == 1)
            s->found = f.u64 != 0;
        else if (f.number == 2 && f.wire == 2) {
            s->value.p = f.data;
            s->value.len = f.len;
            s->has_value = 1;
        } else if (f.number == 3)
            s->number = pb_zigzag_decode(f.u64);
        else if (f.number == 5 && f.wire == 0)
            s->nmatches++;
    }
}

static void rs_str_int(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct str_fields s;

    read_str(call, &s);
    out_line_int(o, ':', s.number);
}

static void rs_str_bulk(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct str_fields s;

    read_str(call, &s);
    if (s.has_value)
        out_bulk(o, s.value.p, s.value.len);
    else
        out_nil(o);
}

static void rs_str_string(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct str_fields s;

    read_str(call, &s);
    out_bulk(o, s.value.p, s.value.len);
}

/* *4 "matches" [[[a_start a_end] [b_start b_end] (len)]...] "len" N */
static void rs_lcs_idx(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct pb_reader r = {call->resp, call->resp + call->resp_len};
    struct pb_field f;
    struct str_fields s;
    int64_t m[5];
    size_t k = 0;

    read_str(call, &s);
    out_map(o, 2);
    OUT_LIT(o, "$7\r\nmatches\r\n");
    out_line_int(o, '*', (int64_t)(s.nmatches / 5));
    while (pb_next(&r, &f) == 1) {
        if (f.number != 5 || f.wire != 0)
            continue;
        m[k++] = pb_zigzag_decode(f.u64);
        if (k < 5)
            continue;
        k = 0;
        out_line_int(o, '*', m[4] >= 0 ? 3 : 2);
        OUT_LIT(o, "*2\r\n");
        out_line_int(o, ':', m[0]);
        out_line_int(o, ':', m[1]);
        OUT_LIT(o, "*2\r\n");
        out_line_int(o, ':', m[2]);
        out_line_int(o, ':', m[3]);
        if (m[4] >= 0)
            out_line_int(o, ':', m[4]);
    }
    OUT_LIT(o, "$3\r\nlen\r\n");
    out_line_int(o, ':', s.number);
}

static void rs_keys(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct pb_reader r = {call->resp, call->resp + call->resp_len};
    struct pb_field f;
    size_t n = 0;

    while (pb_next(&r, &f) == 1)
        n += f.number == 2 && f.wire == 2;
    out_line_int(o, '*', (int64_t)n);
    r.p = call->resp;
    while (pb_next(&r, &f) == 1)
        if (f.number == 2 && f.wire == 2)
            out_bulk(o, f.data, f.len);
}

static void rs_memory_usage(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct fields f;

    read_fields(call, &f);
    out_line_int(o, ':', (int64_t)(f.b[1].len + 64)); /* header and a typical key */
}

static void rs_randomkey(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct pb_reader r = {call->resp, call->resp + call->resp_len};
    struct pb_field f;

    while (pb_next(&r, &f) == 1)
        if (f.number == 2 && f.wire == 2) {
            out_bulk(o, f.data, f.len);
            return;
        }
    out_nil(o);
}

static void rs_idletime(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct fields f;

    read_fields(call, &f);
    out_line_int(o, ':', pb_zigzag_decode(f.u[1]) / 1000);
}

static void rs_freq(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    OUT_LIT(o, "-ERR An LFU maxmemory policy is not selected, access frequency not tracked. "
               "Please note that when switching between policies at runtime LRU and LFU data "
               "will take some time to adjust.\r\n");
}

static void rs_type(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct fields f;

    read_fields(call, &f);
    if (f.u[1])
        OUT_LIT(o, "+string\r\n");
    else
        OUT_LIT(o, "+none\r\n");
}

static void rs_expiretime(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct fields f;
    int64_t v;

    read_fields(call, &f);
    v = pb_zigzag_decode(f.u[1]);
    if (v >= 0) {
        v += now_ms();
        if (call->tag == RS_EXPIRETIME_S)
            v /= 1000;
    }
    out_line_int(o, ':', v);
}

static void reply_one(struct out *o, const struct kv_call *call, const struct kv_server *srv);

static const struct resp_cmd *resp_cmd_find(const struct kv_slice *name);

/* A connection command queued in MULTI (RS_LOCAL: the body is its argv, one bytes field
 * each), run now, on the connection's IO thread, as EXEC's reply is laid out; its reply
 * is its entry of EXEC's array. The connection parses nothing more until this EXEC's
 * reply is written (the barrier), so later commands see its effect. */
static void exec_local(struct out *o, const struct kv_call *exec, const struct kv_call *sub,
                       const struct kv_server *srv)
{
    struct pb_reader r = {sub->body, sub->body + sub->body_len};
    struct pb_field f;
    struct kv_slice few[8], *argv = few;
    size_t argc = 0, n = 0;
    struct kv_call tmp = {0};
    struct kv_text_result res = {0};
    uint8_t room[256] __attribute__((aligned(8)));
    int rc;

    while (pb_next(&r, &f) == 1)
        n += f.number == 1;
    if (n > sizeof(few) / sizeof(few[0]) &&
        !(argv = kv_mem_alloc(KV_MOD_SERVER, n * sizeof(*argv)))) {
        OUT_LIT(o, "-ERR out of memory\r\n");
        return;
    }
    r.p = sub->body;
    while (pb_next(&r, &f) == 1 && argc < n)
        if (f.number == 1) {
            argv[argc].p = f.data;
            argv[argc++].len = f.len;
        }
    tmp.session = exec->session;
    tmp.db = exec->session->db;
    tmp.resp3 = __atomic_load_n(&exec->session->resp, __ATOMIC_RELAXED) == 3;
    tmp.scratch = room;
    tmp.scratch_cap = sizeof(room);
    /* srv: the reply path's view is const; connection commands change the server's
     * options (CONFIG SET) as they do when run alone, on this same thread */
    struct cmdctx y = {(struct kv_server *)srv, exec->session, argc, argv, &tmp, &res,
                       argc ? resp_cmd_find(&argv[0]) : NULL};

    if (!y.cmd) {
        OUT_LIT(o, "-ERR internal error: a queued command is gone\r\n");
    } else {
        __atomic_fetch_add(&resp_cmd_calls[y.cmd - resp_cmds], 1, __ATOMIC_RELAXED);
        rc = y.cmd->fn(&y);
        if (rc == KV_TEXT_REPLY) {
            out_bytes(o, res.reply, res.reply_len);
            kv_mem_free(KV_MOD_PACKET, res.reply);
        } else {
            if (rc == KV_TEXT_DISPATCH && !res.body_in_scratch)
                kv_mem_free(KV_MOD_PACKET, res.body);
            OUT_LIT(o, "-ERR this command cannot run inside EXEC\r\n");
        }
    }
    if (argv != few)
        kv_mem_free(KV_MOD_SERVER, argv);
}

/* *N of each sub-request's reply in the style it was queued with (its tag), or *-1 when
 * a WATCHed key changed. The request body (still the call's) gives the tags. */
static void rs_exec(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    struct pb_reader r = {call->resp, call->resp + call->resp_len};
    struct pb_reader q = {call->body, call->body + call->body_len};
    struct pb_field f, g;
    size_t n = 0;

    while (pb_next(&r, &f) == 1) {
        if (f.number == 2 && f.u64) {
            if (o->resp3)
                OUT_LIT(o, "_\r\n"); /* RESP3's null, as Redis's null array there */
            else
                OUT_LIT(o, "*-1\r\n");
            return;
        }
        n += f.number == 1;
    }
    out_line_int(o, '*', (int64_t)n);
    r.p = call->resp;
    while (pb_next(&r, &f) == 1) {
        struct kv_call sub = {0};
        struct pb_reader e = {f.data, f.data + f.len};
        struct pb_field ef;

        if (f.number != 1 || f.wire != 2)
            continue;
        while (pb_next(&e, &ef) == 1) {
            if (ef.number == 1)
                sub.status = (uint16_t)ef.u64;
            else if (ef.number == 2 && ef.wire == 2) {
                sub.resp = (uint8_t *)ef.data;
                sub.resp_len = (uint32_t)ef.len;
            }
        }
        /* the matching ExecSub: its tag, opcode and body */
        while (pb_next(&q, &g) == 1 && g.number != 1)
            ;
        if (g.number == 1 && g.wire == 2) {
            struct pb_reader s = {g.data, g.data + g.len};
            struct pb_field sf;

            while (pb_next(&s, &sf) == 1) {
                if (sf.number == 1)
                    sub.opcode = (uint16_t)sf.u64;
                else if (sf.number == 2 && sf.wire == 2) {
                    sub.body = sf.data;
                    sub.body_len = (uint32_t)sf.len;
                } else if (sf.number == 3)
                    sub.tag = (uint32_t)sf.u64;
            }
        }
        if (sub.tag == RS_LOCAL)
            exec_local(o, call, &sub, srv);
        else
            reply_one(o, &sub, srv);
    }
}

static void rs_execabort(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    OUT_LIT(o, "-EXECABORT Transaction discarded because of previous errors.\r\n");
}

static void rs_raw(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    out_bytes(o, call->resp, call->resp_len);
}

static void rs_reset(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    OUT_LIT(o, "+RESET\r\n");
}

#define RF_ANY 0x1u   /* fn answers every status itself */
#define RF_BIG 0x2u   /* the reply is about the answer's size (a value) */
#define RF_LIST 0x4u  /* the reply is about 1.5 x the answer (many entries) */
#define RF_REFUSED 0x8u /* fn also answers a write its condition refused (EXISTS, NOT_FOUND) */
#define RF_REDIS_ERR 0x10u /* BAD_REQUEST carries Redis's error text: answered verbatim */
static const struct {
    reply_fn fn;
    const char *missing; /* the reply to NOT_FOUND; NULL: an error */
    const char *exists;  /* the reply to EXISTS; NULL: an error */
    uint32_t flags;
} reply_styles[RS__COUNT] = {
    [RS_OK] = {rs_ok, NULL, NULL, 0},
    [RS_SET] = {rs_ok, "$-1\r\n", "$-1\r\n", 0},
    [RS_SET_GET] = {rs_set_get, NULL, NULL, RF_BIG | RF_REFUSED},
    [RS_BULK] = {rs_bulk, "$-1\r\n", NULL, RF_BIG},
    [RS_ECHO] = {rs_echo, NULL, NULL, RF_BIG},
    [RS_INT_FIELD1] = {rs_int_field1, NULL, NULL, 0},
    [RS_INT_INCR] = {rs_int_incr, NULL, NULL, 0},
    [RS_COUNT_FOUND] = {rs_count_found, NULL, NULL, 0},
    [RS_MGET] = {rs_mget, NULL, NULL, RF_LIST},
    [RS_EXPIRE] = {rs_expire, ":0\r\n", ":0\r\n", 0}, /* EXISTS: a condition refused */
    [RS_TTL_S] = {rs_ttl, ":-2\r\n", NULL, 0},
    [RS_TTL_MS] = {rs_ttl, ":-2\r\n", NULL, 0},
    [RS_PERSIST] = {rs_persist, ":0\r\n", NULL, 0},
    [RS_SCAN] = {rs_scan, NULL, NULL, RF_LIST},
    [RS_DBSIZE] = {rs_dbsize, NULL, NULL, 0},
    [RS_AUTH] = {rs_auth, NULL, NULL, RF_ANY},
    [RS_SETNX] = {rs_setnx, NULL, NULL, RF_ANY},
    [RS_STR_INT] = {rs_str_int, NULL, NULL, RF_REDIS_ERR},
    [RS_STR_BULK] = {rs_str_bulk, NULL, NULL, RF_BIG | RF_REDIS_ERR},
    [RS_STR_STRING] = {rs_str_string, NULL, NULL, RF_BIG | RF_REDIS_ERR},
    [RS_LCS_IDX] = {rs_lcs_idx, NULL, NULL, RF_LIST | RF_REDIS_ERR},
    [RS_KEYS] = {rs_keys, NULL, NULL, RF_LIST},
    [RS_RANDOMKEY] = {rs_randomkey, NULL, NULL, RF_BIG},
    [RS_MEMORY_USAGE] = {rs_memory_usage, "$-1\r\n", NULL, 0},
    [RS_TYPE] = {rs_type, NULL, NULL, 0},
    [RS_IDLETIME] = {rs_idletime, "$-1\r\n", NULL, 0},
    [RS_FREQ] = {rs_freq, "$-1\r\n", NULL, 0},
    [RS_EXPIRETIME_S] = {rs_expiretime, ":-2\r\n", NULL, 0},
    [RS_EXPIRETIME_MS] = {rs_expiretime, ":-2\r\n", NULL, 0},
    [RS_RENAME] = {rs_ok, "-ERR no such key\r\n", NULL, RF_REDIS_ERR},
    [RS_RENAMENX] = {rs_done, "-ERR no such key\r\n", NULL, RF_REDIS_ERR},
    [RS_MOVED] = {rs_done, ":0\r\n", NULL, RF_REDIS_ERR},
    [RS_EXEC] = {rs_exec, NULL, NULL, RF_LIST},
    [RS_EXECABORT] = {rs_execabort, NULL, NULL, RF_ANY},
    [RS_RAW] = {rs_raw, NULL, NULL, RF_BIG},
    [RS_OK_ERR] = {rs_ok, NULL, NULL, RF_REDIS_ERR},
    [RS_RESET] = {rs_reset, NULL, NULL, RF_ANY},
    [RS_LOCAL] = {rs_raw, NULL, NULL, RF_BIG}, /* never used alone: rs_exec runs it */
};

/* A row's literal reply; RESP2's null bulk becomes RESP3's null. */
static void out_literal(struct out *o, const char *lit)
{
    if (lit[0] == '$' && lit[1] == '-')
        out_nil(o);
    else
        out_bytes(o, lit, strlen(lit));
}

/* The reply of a finished call by its style (call->tag). */
static void reply_one(struct out *o, const struct kv_call *call, const struct kv_server *srv)
{
    uint32_t style = call->tag;

    if (style >= RS__COUNT || !reply_styles[style].fn)
        OUT_LIT(o, "-ERR internal error: unknown reply style\r\n");
    else if (call->status == KV_ST_OK || (reply_styles[style].flags & RF_ANY))
        reply_styles[style].fn(o, call, srv);
    else if (call->status == KV_ST_NOT_FOUND && reply_styles[style].missing)
        out_literal(o, reply_styles[style].missing);
    else if (call->status == KV_ST_EXISTS && reply_styles[style].exists)
        out_literal(o, reply_styles[style].exists);
    else if ((reply_styles[style].flags & RF_REDIS_ERR) && call->status == KV_ST_BAD_REQUEST) {
        struct kv_slice m = error_message(call);
        int verbatim = m.len > 4 && memcmp(m.p, "ERR ", 4) == 0;

        out_fmt(o, "-%s%.*s\r\n", verbatim ? "" : "ERR ", (int)(m.len < 400 ? m.len : 400),
                (const char *)m.p);
    } else if ((reply_styles[style].flags & RF_REFUSED) &&
               (call->status == KV_ST_EXISTS || call->status == KV_ST_NOT_FOUND))
        reply_styles[style].fn(o, call, srv);
    else
        reply_status_error(o, call);
}

static int resp_reply(void *ctx, const struct kv_call *call, uint8_t *room, size_t room_cap,
                      uint8_t **outp, size_t *lenp)
{
    const struct kv_server *srv = ctx;
    struct out o = {0};
    uint32_t style = call->tag;
    size_t est = 32;
    int resp3 = call->resp3; /* as when the call was built, not the session's now */

    if (style >= RS__COUNT || !reply_styles[style].fn) {
        out_start(&o, room, room_cap, est);
        OUT_LIT(&o, "-ERR internal error: unknown reply style\r\n");
    } else {
        /* an answer's RESP form is at most its protobuf form plus a few
         * bytes per entry (misses: 5 for 2): written straight into the
         * connection's output when that room holds the estimate (a longer
         * reply still moves to the heap, see out_grow), else one
         * allocation of the estimate */
        if (reply_styles[style].flags & RF_LIST)
            est = call->resp_len + call->resp_len / 2 + 32;
        else if (reply_styles[style].flags & RF_BIG)
            est = call->resp_len + 32;
        out_start(&o, room, room_cap, est);
        o.resp3 = resp3;
        reply_one(&o, call, srv);
    }
    if (o.failed) {
        out_release(&o);
        return KV_ENOMEM;
    }
    *outp = o.p;
    *lenp = o.len;
    return 0;
}

void kv_server_resp_adapter(struct kv_server *srv, struct kv_io_textproto *out)
{
    pthread_once(&resp_index_once, resp_index_build);
    out->command = resp_command;
    out->reply = resp_reply;
    out->ctx = srv;
}
