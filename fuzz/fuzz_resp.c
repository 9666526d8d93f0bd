/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* fuzz/fuzz_resp.c -- libFuzzer harness for the RESP request parser
 * (src/io/resp.c).
 *
 * The input is a byte stream of requests. It is walked request by request,
 * as conn_parse_text walks a receive buffer, three ways: (a) each parse on
 * the whole rest, (b) fed in pieces whose sizes come from a hash of the
 * input, resuming with a kv_resp_resume, each piece on an exact-size copy
 * so that a read past its end hits ASan, (c) every truncation of every
 * request parsed from scratch. (b) must give the same results, argv and
 * consumed lengths as (a); in (c) every cut of a request that (a) parsed
 * is "partial" (KV_EAGAIN), never an error. The parser allocates only the
 * argv vector, freed here, so the accounting returns to its baseline. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "kv_err.h"
#include "kv_mem.h"
#include "resp.h"

static const struct kv_resp_limits lim = {
    .max_args = 64, .max_bulk = 4096, .max_request = 16384, .max_inline = 1024};

static uint64_t hash(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;

    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int same_argv(const struct kv_resp_argv *a, const uint8_t *abase,
                     const struct kv_resp_argv *b, const uint8_t *bbase)
{
    if (a->argc != b->argc)
        return 0;
    for (size_t i = 0; i < a->argc; i++)
        if (a->v[i].len != b->v[i].len || a->v[i].p - abase != b->v[i].p - bbase ||
            memcmp(a->v[i].p, b->v[i].p, a->v[i].len) != 0)
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct kv_mem_snapshot before;
    struct kv_resp_argv whole = {0}, part = {0};
    uint64_t h = hash(data, size);
    size_t off = 0;

    kv_mem_snapshot(&before);
    while (off < size) {
        const char *err = NULL, *err2 = NULL;
        size_t need, have, rest = size - off;
        struct kv_resp_resume st = {0};
        ssize_t r = kv_resp_parse(data + off, rest, &lim, &whole, &need, &err, NULL), r2;

        FUZZ_CHECK(r == KV_EAGAIN || r == KV_EPROTO || r == KV_ETOOBIG || (r > 0 && (size_t)r <= rest),
                   "parse returned %zd", r);
        FUZZ_CHECK(r >= 0 || r == KV_EAGAIN || err != NULL, "an error without a reason");
        if (r == KV_EAGAIN)
            FUZZ_CHECK(need == 0 || need > rest, "need %zu with %zu bytes in", need, rest);
        /* (b) in pieces, resumed, each on an exact-size copy */
        for (have = 0, r2 = KV_EAGAIN; r2 == KV_EAGAIN && have < rest;) {
            uint8_t *cut;

            have += 1 + (size_t)(h % 97);
            h = h * 6364136223846793005ull + 1442695040888963407ull;
            if (have > rest)
                have = rest;
            cut = fuzz_exact_copy(data + off, have);
            r2 = kv_resp_parse(cut, have, &lim, &part, &need, &err2, &st);
            if (r2 > 0)
                FUZZ_CHECK(r == r2 && same_argv(&whole, data + off, &part, cut),
                           "resumed parse differs: %zd vs %zd", r2, r);
            free(cut);
        }
        if (r2 != KV_EAGAIN || have == rest)
            FUZZ_CHECK(r2 == r, "resumed parse returned %zd, whole %zd", r2, r);
        if (r2 != KV_EAGAIN)
            FUZZ_CHECK(st.off == 0, "state left pending after a result");
        if (r <= 0)
            break;
        /* (c) every cut of this request is partial */
        for (size_t k = 0; k < (size_t)r; k++) {
            ssize_t rc = kv_resp_parse(data + off, k, &lim, &part, &need, &err2, NULL);

            FUZZ_CHECK(rc == KV_EAGAIN, "a cut at %zu of a %zd-byte request gave %zd", k, r, rc);
        }
        off += (size_t)r;
    }
    kv_resp_argv_fini(&whole);
    kv_resp_argv_fini(&part);
    fuzz_mem_check(&before, FUZZ_MODS_ALL, "resp parser");
    return 0;
}
