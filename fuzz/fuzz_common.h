/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* fuzz/fuzz_common.h -- what every libevkv fuzz harness shares: the check
 * that the per-module accounting of src/mem is back to its baseline after an
 * input, and a loud failure (message, then __builtin_trap so libFuzzer keeps
 * the input as a crash artifact). Header-only: each harness is one binary. */
#ifndef KV_FUZZ_COMMON_H
#define KV_FUZZ_COMMON_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv_mem.h"

__attribute__((noreturn, format(printf, 1, 2))) static inline void fuzz_fail(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "\n[fuzz] FAILED: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    __builtin_trap();
}

/* FUZZ_CHECK(cond) or FUZZ_CHECK(cond, "printf format", args...) */
#define FUZZ_CHECK(cond, ...)                                                                 \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "\n[fuzz] %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            fuzz_fail(" " __VA_ARGS__);                                                       \
        }                                                                                     \
    } while (0)

static inline void fuzz_print_snapshots(const struct kv_mem_snapshot *before,
                                        const struct kv_mem_snapshot *after)
{
    fprintf(stderr, "%-12s %14s %14s %10s %10s\n", "module", "bytes_before", "bytes_after",
            "live_bef", "live_aft");
    for (int i = 0; i < KV_MOD__COUNT; i++)
        fprintf(stderr, "%-12s %14lld %14lld %10lld %10lld\n", kv_mem_mod_name((enum kv_mod)i),
                (long long)before->mod[i].bytes, (long long)after->mod[i].bytes,
                (long long)(before->mod[i].allocs - before->mod[i].frees),
                (long long)(after->mod[i].allocs - after->mod[i].frees));
}

/* Bit mask of modules in a check. */
#define FUZZ_MOD(m) (1u << (m))
/* Every module but POOL, whose idle buffers are a legitimate cache. */
#define FUZZ_MODS_ALL ((1u << KV_MOD__COUNT) - 1u & ~FUZZ_MOD(KV_MOD_POOL))

/* Returns the first module of mask whose bytes differ, or -1. */
static inline int fuzz_mem_diff(const struct kv_mem_snapshot *before,
                                const struct kv_mem_snapshot *after, unsigned mask)
{
    for (int i = 0; i < KV_MOD__COUNT; i++)
        if ((mask & (1u << i)) && before->mod[i].bytes != after->mod[i].bytes)
            return i;
    return -1;
}

/* Traps when a module of mask holds more or fewer bytes than at *before. */
static inline void fuzz_mem_check(const struct kv_mem_snapshot *before, unsigned mask,
                                  const char *what)
{
    struct kv_mem_snapshot after;
    int m;

    kv_mem_pool_drain();
    kv_mem_snapshot(&after);
    m = fuzz_mem_diff(before, &after, mask);
    if (m >= 0) {
        fuzz_print_snapshots(before, &after);
        fuzz_fail("%s: module %s holds %lld bytes, baseline %lld", what,
                  kv_mem_mod_name((enum kv_mod)m), (long long)after.mod[m].bytes,
                  (long long)before->mod[m].bytes);
    }
}

/* Copies data into a heap block of exactly len bytes (malloc(0) under ASan
 * is a block no byte of which may be read), so an overread past the input
 * is caught even where the caller's buffer would have had slack. */
static inline uint8_t *fuzz_exact_copy(const uint8_t *data, size_t len)
{
    uint8_t *p = malloc(len);

    if (!p && len == 0)
        p = malloc(1);
    if (!p)
        abort();
    if (len)
        memcpy(p, data, len);
    return p;
}

#endif
