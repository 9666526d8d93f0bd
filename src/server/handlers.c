/* src/server/handlers.c -- the handlers of the key-value service, one per
 * opcode of PROTOCOL.md, registered with the worker registry. Opcodes
 * without a handler answer UNKNOWN_OPCODE (the registry does that). */
#include <stdint.h>

#include "kv_call.h"
#include "kv_server.h"
#include "kv_worker.h"

enum { KV_OP_PING = 0 };

/* PING: echo the body. The response points at the request body, which lives
 * in its receive buffer until the response is written. */
static void handle_ping(void *ctx, struct kv_call *call)
{
    call->status = KV_ST_OK;
    call->resp = (uint8_t *)call->body;
    call->resp_len = call->body_len;
    call->resp_owned = 0;
}

int kv_server_handlers_register(struct kv_server *srv, struct kv_worker_registry *reg)
{
    return kv_worker_register(reg, KV_OP_PING, handle_ping, srv);
}
