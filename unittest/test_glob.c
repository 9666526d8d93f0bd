/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/test_glob.c -- Redis's glob patterns (src/server/glob.h): the
 * cases of Redis's own util.c tests and KEYS documentation, classes,
 * escapes, the literal prefix handed to the store's scan, and a pattern
 * that is exponential for a naive matcher. */
#include <CUnit/CUnit.h>
#include <string.h>
#include <time.h>

#include "glob.h"
#include "kv_test_util.h"

static int m(const char *pat, const char *s)
{
    return kv_glob_match((const uint8_t *)pat, strlen(pat), (const uint8_t *)s, strlen(s));
}

static void test_glob_redis_cases(void)
{
    /* KEYS's documentation */
    CU_ASSERT(m("h?llo", "hello") && m("h?llo", "hallo") && m("h?llo", "hxllo"));
    CU_ASSERT(m("h*llo", "hllo") && m("h*llo", "heeeello"));
    CU_ASSERT(m("h[ae]llo", "hello") && m("h[ae]llo", "hallo") && !m("h[ae]llo", "hillo"));
    CU_ASSERT(m("h[^e]llo", "hallo") && m("h[^e]llo", "hbllo") && !m("h[^e]llo", "hello"));
    CU_ASSERT(m("h[a-b]llo", "hallo") && m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo"));
    CU_ASSERT(m("h[b-a]llo", "hallo")); /* a reversed range is the same range */
    /* escapes */
    CU_ASSERT(m("h\\*llo", "h*llo") && !m("h\\*llo", "hxllo"));
    CU_ASSERT(m("a\\?", "a?") && !m("a\\?", "ab"));
    CU_ASSERT(m("[\\]]", "]") && m("[a\\-z]", "-") && !m("[a\\-z]", "b"));
    CU_ASSERT(m("x\\", "x\\")); /* a trailing backslash is itself */
    /* stars */
    CU_ASSERT(m("*", "") && m("*", "anything") && m("**", "x") && m("a*", "a"));
    CU_ASSERT(m("*b", "ab") && !m("*b", "ba") && m("a*b*c", "aXbYc") && !m("a*b*c", "aXbY"));
    CU_ASSERT(m("key:1??", "key:100") && !m("key:1??", "key:10") && !m("key:1??", "key:1000"));
    CU_ASSERT(m("*[0-9]", "ab7") && !m("*[0-9]", "ab"));
    CU_ASSERT(!m("", "a") && m("", ""));
    /* unterminated class: runs to the end of the pattern */
    CU_ASSERT(m("[abc", "b") && !m("[abc", "d"));
    /* bytes, not characters */
    CU_ASSERT(kv_glob_match((const uint8_t *)"a?c", 3, (const uint8_t *)"a\0c", 3));
}

static void test_glob_prefix(void)
{
    CU_ASSERT_EQUAL(kv_glob_prefix((const uint8_t *)"user:*", 6), 5);
    CU_ASSERT_EQUAL(kv_glob_prefix((const uint8_t *)"key:1??", 7), 5);
    CU_ASSERT_EQUAL(kv_glob_prefix((const uint8_t *)"a[b]", 4), 1);
    CU_ASSERT_EQUAL(kv_glob_prefix((const uint8_t *)"a\\*", 3), 1);
    CU_ASSERT_EQUAL(kv_glob_prefix((const uint8_t *)"*", 1), 0);
    CU_ASSERT_EQUAL(kv_glob_prefix((const uint8_t *)"plain", 5), 5);
}

/* "a*a*a*...b" against "aaaa...": exponential with naive recursion. */
static void test_glob_no_exponential_blowup(void)
{
    char pat[64], s[4096];
    struct timespec t0, t1;

    for (int i = 0; i < 30; i++) {
        pat[2 * i] = 'a';
        pat[2 * i + 1] = '*';
    }
    pat[60] = 'b';
    pat[61] = '\0';
    memset(s, 'a', sizeof(s) - 1);
    s[sizeof(s) - 1] = '\0';
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CU_ASSERT(!m(pat, s));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CU_ASSERT((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 1000);
}

int main(void)
{
    static const struct kv_test_case tests[] = {
        {"test_glob_redis_cases", test_glob_redis_cases},
        {"test_glob_prefix", test_glob_prefix},
        {"test_glob_no_exponential_blowup", test_glob_no_exponential_blowup},
    };

    return kv_test_run_suite("glob", NULL, NULL, tests, sizeof(tests) / sizeof(tests[0]));
}
