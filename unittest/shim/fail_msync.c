/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* unittest/shim/fail_msync.c -- a disk that fails on demand, for test_shm_sync.
 *
 * Preloaded into a real server (LD_PRELOAD=bin/kvtest_failmsync.so): while the file named
 * by $KV_TEST_MSYNC_FAIL exists, every msync fails with EIO, as a failing disk's writeback
 * makes it fail; otherwise msync is the C library's. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int msync(void *addr, size_t len, int flags)
{
    static int (*real)(void *, size_t, int);
    const char *flag = getenv("KV_TEST_MSYNC_FAIL");

    if (flag && access(flag, F_OK) == 0) {
        errno = EIO;
        return -1;
    }
    if (!real)
        real = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "msync");
    return real ? real(addr, len, flags) : (errno = ENOSYS, -1);
}
