/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* fuzz/fuzz_rdb.c -- libFuzzer harness for the RDB loader (src/server/rdb.c):
 * an input is the bytes of a file given to --load-rdb.
 *
 * A private 8 MiB store is opened once and flushed before every input. The
 * loader must not crash, read outside the input (it is a heap block of
 * exactly its size), or loop without end; on success every string it says
 * it imported is a key now in the store (at most that many, TTLs aside),
 * and on a refusal (any error but a full store) the store is still empty:
 * a bad file changes nothing. Afterwards every module's bytes (POOL and
 * SHM, the store's own, aside) are back to the baseline. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "kv_config.h"
#include "kv_err.h"
#include "kv_mem.h"
#include "kv_shm.h"
#include "rdb.h"

static struct kv_config cfg;
static struct kv_shm_store *store;

static void count_key(void *ctx, const void *key, size_t klen)
{
    (*(uint64_t *)ctx)++;
}

/* Keys in the store (kv_shm_stats reads /proc/self/smaps: too slow per input). */
static uint64_t store_keys(void)
{
    uint64_t cursor = 0, n = 0;

    do
        FUZZ_CHECK(kv_shm_scan(store, cursor, NULL, 0, 4096, count_key, &n, &cursor) == 0);
    while (cursor != 0);
    return n;
}

static void cleanup(void)
{
    if (store) {
        kv_shm_store_close(store);
        kv_shm_store_unlink(&cfg);
        store = NULL;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char err[256] = "";

    kv_config_defaults(&cfg);
    cfg.port = 0;
    cfg.memory = 8u << 20;
    cfg.max_key = 64; /* keys above it are counted as too large: that path too */
    snprintf(cfg.shm_name, sizeof(cfg.shm_name), "/libevkv-fuzz-rdb-%d", (int)getpid());
    kv_shm_store_unlink(&cfg);
    if (kv_shm_store_open(&cfg, err, sizeof(err), &store) != 0) {
        fprintf(stderr, "[fuzz] kv_shm_store_open: %s\n", err);
        abort();
    }
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kv_mem_snapshot base;
    struct kv_rdb_counts cnt;
    uint64_t keys;
    char err[512];
    uint8_t *copy = malloc(size ? size : 1);
    int rc;

    FUZZ_CHECK(copy != NULL);
    memcpy(copy, data, size);
    FUZZ_CHECK(kv_shm_flush(store) == 0);
    kv_mem_pool_drain();
    kv_mem_snapshot(&base);
    err[0] = '\0';
    rc = kv_rdb_load_mem(store, &cfg, copy, size, &cnt, err, sizeof(err));
    keys = store_keys();
    if (rc == 0) {
        FUZZ_CHECK(keys <= cnt.strings, "store has %llu keys, loader said %llu",
                   (unsigned long long)keys, (unsigned long long)cnt.strings);
        FUZZ_CHECK(cnt.bytes == size);
    } else {
        FUZZ_CHECK(err[0] != '\0', "an error without a reason (rc %d)", rc);
        if (rc != KV_ENOMEM)
            FUZZ_CHECK(keys == 0, "a refused file (%s) left %llu keys", err,
                       (unsigned long long)keys);
    }
    free(copy);
    fuzz_mem_check(&base, FUZZ_MODS_ALL & ~FUZZ_MOD(KV_MOD_SHM), "after an input");
    return 0;
}
