/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/glob.c -- Redis's glob patterns (see glob.h). */
#include "glob.h"

/* Matches the one-byte token at pat[0..plen) against c; writes its length
 * in pattern bytes. */
static int token_match(const uint8_t *pat, size_t plen, uint8_t c, size_t *tlen)
{
    size_t i;
    int neg, match = 0;

    switch (pat[0]) {
    case '?':
        *tlen = 1;
        return 1;
    case '\\':
        if (plen >= 2) {
            *tlen = 2;
            return pat[1] == c;
        }
        *tlen = 1;
        return c == '\\';
    case '[':
        i = 1;
        neg = i < plen && pat[i] == '^';
        i += (size_t)neg;
        for (;;) {
            if (i >= plen) /* unterminated: the class runs to the end */
                break;
            if (pat[i] == '\\' && plen - i >= 2) {
                i++;
                match |= pat[i] == c;
            } else if (pat[i] == ']') {
                i++;
                break;
            } else if (plen - i >= 3 && pat[i + 1] == '-') {
                uint8_t lo = pat[i], hi = pat[i + 2];

                if (lo > hi) {
                    uint8_t t = lo;
                    lo = hi;
                    hi = t;
                }
                match |= c >= lo && c <= hi;
                i += 2;
            } else {
                match |= pat[i] == c;
            }
            i++;
        }
        *tlen = i;
        return neg ? !match : match;
    default:
        *tlen = 1;
        return pat[0] == c;
    }
}

int kv_glob_match(const uint8_t *pat, size_t plen, const uint8_t *s, size_t slen)
{
    size_t p = 0, i = 0, star_p = 0, star_i = 0;
    int star = 0;

    while (i < slen) {
        size_t tl;

        if (p < plen && pat[p] == '*') {
            while (p < plen && pat[p] == '*')
                p++;
            if (p == plen)
                return 1; /* a trailing '*' takes the rest */
            star = 1;
            star_p = p;
            star_i = i;
            continue;
        }
        if (p < plen && token_match(pat + p, plen - p, s[i], &tl)) {
            p += tl;
            i++;
            continue;
        }
        if (!star)
            return 0;
        p = star_p; /* the last '*' takes one more byte */
        i = ++star_i;
    }
    while (p < plen && pat[p] == '*')
        p++;
    return p == plen;
}

size_t kv_glob_prefix(const uint8_t *pat, size_t plen)
{
    size_t n = 0;

    while (n < plen && pat[n] != '*' && pat[n] != '?' && pat[n] != '[' && pat[n] != '\\')
        n++;
    return n;
}
