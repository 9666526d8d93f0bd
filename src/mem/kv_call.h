/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/mem/kv_call.h -- the unit of work of the RPC framework.
 *
 * An IO thread turns each decoded frame into a kv_call, hands batches of
 * them to the worker pool, and gets them back with a status and a response
 * body. Both src/io and src/worker need this type, and neither may include
 * the other (DESIGN.md), so it lives here, in the lowest layer, together
 * with the wire status codes every handler answers with. */
#ifndef KV_CALL_H
#define KV_CALL_H

#include <stdint.h>

/* Status codes of PROTOCOL.md, as carried in a response header. */
enum kv_status {
    KV_ST_OK = 0,
    KV_ST_NOT_FOUND = 1,
    KV_ST_EXISTS = 2,
    KV_ST_BAD_REQUEST = 3,
    KV_ST_UNKNOWN_OPCODE = 4,
    KV_ST_CRC_MISMATCH = 5,
    KV_ST_TOO_LARGE = 6,
    KV_ST_BAD_FRAME = 7,
    KV_ST_OUT_OF_MEMORY = 8,
    KV_ST_NOT_A_NUMBER = 9,
    KV_ST_BUSY = 10,
    KV_ST_INTERNAL = 11,
    KV_ST_NOAUTH = 12,
    KV_ST_DISK_ERROR = 13,
    KV_ST__COUNT
};

/* Per-connection state a handler may read and change (e.g. AUTH). Calls of one
 * connection run in the order they arrived, one after another (possibly on different
 * workers); the flags are atomics because the IO thread reads them too. */
struct kv_session {
    uint32_t flags;          /* KV_SESSION_*; atomic access */
    uint32_t auth_failures;  /* atomic access */
    uint16_t db;             /* io-thread only: the RESP connection's SELECTed database;
                              * copied into each call as the call is built */
    /* RESP connection state (HELLO, CLIENT, RESET): written by the text
     * adapter on the connection's IO thread; resp is read by its reply
     * builder there too; cmd and no_evict are read by other threads
     * (CLIENT LIST, the client-memory budget), hence atomics */
    uint8_t resp;            /* protocol version: 2 or 3 (0 reads as 2); atomic access */
    uint8_t reply_mode;      /* KV_REPLY_*: CLIENT REPLY; io-thread only */
    uint8_t no_evict;        /* CLIENT NO-EVICT ON: never closed by the budget; atomic */
    const char *cmd;         /* the last command's name (static text, "client|list"),
                              * NULL before the first; atomic access */
    /* owned by the service, freed by the IO side's session-end hook (kv_io_set_session_end)
     * once no call of the connection is left: */
    void *watch;             /* the WATCHed keys: touched by handlers only, and a
                              * connection's calls run one after another, in order */
    void *multi;             /* the text adapter's MULTI queue: io-thread only */
    uint32_t multi_n;        /* MULTI for CLIENT LIST: 1 + the commands queued, 0 = not
                              * in MULTI; written by the text adapter, atomic access */
};
enum { KV_REPLY_ON = 0, KV_REPLY_OFF = 1, KV_REPLY_SKIP = 2 };
#define KV_SESSION_AUTHED 0x1u
#define KV_SESSION_CLOSE 0x2u /* the handler asks the IO thread to close after answering */
#define KV_SESSION_AUTH_FAILED 0x4u /* a wrong password: the IO thread logs it with the peer
                                     * (rate-limited) and clears the flag */

struct kv_call {
    struct kv_call *next;      /* link of whichever queue holds the call */
    void *origin;              /* borrowed: the IO thread that gets it back */
    struct kv_session *session;/* borrowed: outlives the call */
    const uint8_t *body;       /* borrowed: request body, points into a receive buffer */
    uint8_t *resp;             /* response body: owned (KV_MOD_PACKET) when resp_owned */
    uint8_t *scratch;          /* borrowed, may be NULL: room the caller lends for resp */
    uint32_t body_len;
    uint32_t resp_len;
    uint32_t scratch_cap;      /* bytes at scratch */
    /* opaque to the framework: what a prefetch hook noted for the handler
     * (e.g. the key it hashed, and the hash); hint_ptr NULL = nothing */
    const uint8_t *hint_ptr;
    uint64_t hint;
    uint32_t hint_len;
    uint32_t tag;              /* opaque to handlers: a text-protocol adapter's note to itself */
    uint16_t opcode;
    uint16_t status;           /* out: KV_ST_* */
    uint16_t db;               /* the database the call works in (RESP: the session's at
                                * the time the call was built; binary: 0) */
    uint8_t resp_owned;        /* 1: resp is kv_mem_alloc(KV_MOD_PACKET) memory */
    uint8_t writes_ok;         /* a sub-call of an EXEC whose writes were allowed as a whole
                                * (a sync failing meanwhile refuses none of them) */
    uint8_t resp3;             /* RESP: the session spoke RESP3 when the call was built (a
                                * later pipelined HELLO or RESET does not change its reply) */
    /* may be NULL: called by kv_worker_run just before the handler. The origin may point
     * scratch / scratch_cap at the place the answer body will be sent from (an attached
     * client's response ring), so that an answer built in scratch is written once, where
     * it is sent; it clears answer_room when it lends nothing (e.g. called on a worker
     * thread). A call whose answer_room is still set after its handler is handed back
     * (done) alone, at once: the room is valid until then. */
    void (*answer_room)(struct kv_call *call);
};

#endif
