#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE
# tests/make_v1_full_fixture.sh -- writes unittest/fixtures/v1-full.seg.gz for
# unittest/test_shm_redteam.c: a 4 MiB --data-file segment of layout 1, written by the store
# of commit 7db7ef5 (the last release with layout 1), filled with values of 0..2999 bytes
# (keys full-N, value bytes 'a' + N % 26) until 200 SETs were refused, then closed cleanly.
# It prints the number of keys stored (the test expects that many after the upgrade).
#
# Usage: tests/make_v1_full_fixture.sh [OUTDIR]   (default: unittest/fixtures)
# Needs only this repository (git archive of 7db7ef5 into a temporary directory) and gcc.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/unittest/fixtures}
v1=7db7ef54eaa7deb716a3c8aa9a044b643f7ac3a9
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$top" archive "$v1" src/shm src/mem | tar -x -C "$tmp"
cat >"$tmp/fill.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kv_shm.h"
int main(int argc, char **argv)
{
    struct kv_config c;
    kv_config_defaults(&c);
    snprintf(c.data_file, sizeof(c.data_file), "%s", argv[1]);
    c.memory = 4u << 20;
    c.eviction = KV_EVICT_NONE;
    struct kv_shm_store *s;
    char err[256];
    if (argc < 2 || kv_shm_store_open(&c, err, sizeof(err), &s)) {
        fprintf(stderr, "open: %s\n", err);
        return 1;
    }
    static char v[3000];
    int n = 0, fails = 0;
    unsigned x = 1;
    for (int i = 0; fails < 200; i++) {
        char k[32];
        int kl = snprintf(k, sizeof(k), "full-%d", i);
        x = x * 1103515245u + 12345u;
        size_t vlen = (x >> 8) % 3000;
        memset(v, 'a' + i % 26, vlen);
        if (kv_shm_set(s, k, (size_t)kl, v, vlen, NULL, NULL))
            fails++;
        else
            n++;
    }
    printf("%d\n", n);
    kv_shm_store_close(s);
    return 0;
}
C
(cd "$tmp" && gcc -O1 -D_GNU_SOURCE -DKV_VERSION='"v1"' -Isrc/shm -Isrc/mem -o fill fill.c \
    src/shm/*.c src/mem/*.c -lpthread -lrt)
"$tmp/fill" "$tmp/full.seg"
gzip -9 -c "$tmp/full.seg" >"$out/v1-full.seg.gz"
