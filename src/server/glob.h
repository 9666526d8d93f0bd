/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/glob.h -- Redis's glob patterns (KEYS, SCAN MATCH), as its
 * stringmatchlen: '*' any run, '?' any byte, '[...]' a class ('^' negates,
 * 'a-z' ranges, '\' escapes), '\x' the byte x. Byte strings, case-sensitive;
 * allocates nothing, no recursion (a '*' backtracks to the last one only, so
 * a hostile pattern costs O(pattern x string), never exponential). */
#ifndef KV_GLOB_H
#define KV_GLOB_H

#include <stddef.h>
#include <stdint.h>

/* 1 when s[0..slen) matches pat[0..plen), else 0. */
int kv_glob_match(const uint8_t *pat, size_t plen, const uint8_t *s, size_t slen);

/* The length of pat's literal prefix: every matching string starts with
 * pat[0..n) (n stops at the first '*', '?', '[' or '\'). */
size_t kv_glob_prefix(const uint8_t *pat, size_t plen);

#endif
