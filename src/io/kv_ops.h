/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/kv_ops.h -- the opcodes of the binary protocol (docs/PROTOCOL.md), defined once.
 *
 * Every table that is indexed by opcode (the server's handler table, the RESP command
 * rows, the client's names, the fuzzers) is built from KV_OPCODES, so adding an opcode is
 * one line here. Opcodes need not be contiguous: KV_OP__MAX is one past the largest, and
 * kv_opcode_name() answers NULL for a number no row names. Installed with the client
 * library. */
#ifndef KV_OPS_H
#define KV_OPS_H

/* X(NAME, number, "wire name") */
#define KV_OPCODES(X)                                                                       \
    X(PING, 0, "PING")                                                                      \
    X(GET, 1, "GET")                                                                        \
    X(SET, 2, "SET")                                                                        \
    X(DEL, 3, "DEL")                                                                        \
    X(EXISTS, 4, "EXISTS")                                                                  \
    X(INCR, 5, "INCR")                                                                      \
    X(MGET, 6, "MGET")                                                                      \
    X(MSET, 7, "MSET")                                                                      \
    X(EXPIRE, 8, "EXPIRE")                                                                  \
    X(SCAN, 9, "SCAN")                                                                      \
    X(STATS, 10, "STATS")                                                                   \
    X(FLUSH, 11, "FLUSH")                                                                   \
    X(AUTH, 12, "AUTH")                                                                     \
    X(ATTACH, 13, "ATTACH") /* shared-memory rings, unix socket only (PROTOCOL.md 5) */    \
    X(RENAME, 14, "RENAME") /* RENAME, RENAMENX, MOVE, COPY (kv.proto RenameRequest) */     \
    X(SWAPDB, 15, "SWAPDB")                                                                 \
    X(EXEC, 16, "EXEC")   /* an atomic batch (kv.proto ExecRequest): MULTI/EXEC */          \
    X(WATCH, 17, "WATCH") /* WATCH / UNWATCH keys for the next EXEC (WatchRequest) */       \
    X(STR, 32, "STR") /* Redis's string family (kv.proto StrRequest) */

enum kv_opcode {
#define KV_OP_ENUM_(name, num, text) KV_OP_##name = num,
    KV_OPCODES(KV_OP_ENUM_)
#undef KV_OP_ENUM_
};

/* One past the largest opcode, the size of a table indexed by opcode: a union of one
 * char array of num + 1 bytes per opcode is as large as the largest of them. */
union kv_opcode_max_ {
#define KV_OP_U_(name, num, text) char op_##name[(num) + 1];
    KV_OPCODES(KV_OP_U_)
#undef KV_OP_U_
};
#define KV_OP__MAX ((unsigned)sizeof(union kv_opcode_max_))

/* "PING", "GET", ... or NULL for a number that is not an opcode. */
const char *kv_opcode_name(unsigned opcode);

#endif
