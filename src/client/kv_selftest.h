/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/client/kv_selftest.h -- the correctness run behind `kvclient test`.
 *
 * Exercises every opcode, option and status code of PROTOCOL.md against a
 * live server over a few connections, printing one line per check
 * ("ok   ...", "FAIL ...: why", "skip ...: why") and a last line
 * "N passed, N failed". Uses keys under its own prefix ("kvtest:<pid>:")
 * and deletes them at the end; FLUSH is run (last) only when allowed. */
#ifndef KV_SELFTEST_H
#define KV_SELFTEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct kv_selftest_opts {
    const char *host;
    uint16_t port;
    int timeout_ms;
    const char *password; /* borrowed; NULL = none given */
    bool allow_flush;     /* run FLUSH (removes every key of the server) */
    FILE *out;            /* borrowed: where the lines go */
    bool shm;             /* attach every connection to shared-memory rings (after AUTH) */
};

/* Runs every check. Returns 0 and the counts when the run happened (even
 * with failures), or a negative KV_E* code when the server could not be
 * reached at all. */
int kv_selftest_run(const struct kv_selftest_opts *o, unsigned *passed, unsigned *failed);

#endif
