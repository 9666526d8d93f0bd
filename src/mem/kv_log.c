/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/mem/kv_log.c -- the log sink (see kv_log.h). */
#include "kv_log.h"
#include "kv_print.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kv_err.h"

static int log_fd = STDERR_FILENO;   /* ro after kv_log_open; the fd number never changes */
static char log_path[PATH_MAX];      /* ro after kv_log_open; "" = stderr */

/* debug rate limit: the current second and what it has used, and the lines
 * dropped since the last line that said so */
static long dbg_second;
static unsigned dbg_used;
static unsigned long dbg_dropped;

int kv_log_open(const char *path)
{
    int fd;

    if (strlen(path) >= sizeof(log_path)) {
        errno = ENAMETOOLONG;
        return KV_EIO;
    }
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return KV_EIO;
    strcpy(log_path, path);
    log_fd = fd;
    return 0;
}

int kv_log_reopen(void)
{
    int fd;

    if (!log_path[0])
        return 0;
    fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return KV_EIO;
    if (dup3(fd, log_fd, O_CLOEXEC) < 0) {
        int e = errno;

        close(fd);
        errno = e;
        return KV_EIO;
    }
    close(fd);
    return 0;
}

const char *kv_log_level_name(int level)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};

    return level >= 0 && level <= 3 ? names[level] : "debug";
}

/* 1 when a debug line may be written now; *dropped is set to the lines
 * dropped before it (to be reported once). */
static int debug_allowed(long second, unsigned long *dropped)
{
    long cur = __atomic_load_n(&dbg_second, __ATOMIC_RELAXED);

    *dropped = 0;
    if (cur != second &&
        __atomic_compare_exchange_n(&dbg_second, &cur, second, 0, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED)) {
        __atomic_store_n(&dbg_used, 0, __ATOMIC_RELAXED);
        *dropped = __atomic_exchange_n(&dbg_dropped, 0, __ATOMIC_RELAXED);
    }
    if (__atomic_fetch_add(&dbg_used, 1, __ATOMIC_RELAXED) < KV_LOG_DEBUG_PER_SEC)
        return 1;
    __atomic_fetch_add(&dbg_dropped, 1, __ATOMIC_RELAXED);
    return 0;
}

static size_t stamp(char *buf, size_t cap, const struct timespec *ts, int level,
                    const char *module)
{
    struct tm tm;

    gmtime_r(&ts->tv_sec, &tm);
    return (size_t)snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%s] ",
                            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                            tm.tm_min, tm.tm_sec, ts->tv_nsec / 1000000,
                            kv_log_level_name(level), module);
}

static void emit(const char *line, size_t n)
{
    /* stderr may be a pipe nobody reads: it goes through kv_print, which never blocks
     * (a full pipe drops the line and counts it); a --log-file is a regular file */
    if (log_fd == STDERR_FILENO || log_fd == STDOUT_FILENO) {
        kv_print_write(log_fd, line, n);
        return;
    }
    if (write(log_fd, line, n) < 0) {
        /* nowhere left to report it */
    }
}

void kv_log_vwrite(int level, const char *module, const char *fmt, va_list ap)
{
    char line[1024];
    struct timespec ts;
    unsigned long dropped = 0;
    size_t n;
    int m;

    clock_gettime(CLOCK_REALTIME, &ts);
    if (level >= KV_LOG_DEBUG && !debug_allowed((long)ts.tv_sec, &dropped))
        return;
    if (dropped) {
        n = stamp(line, sizeof(line), &ts, KV_LOG_WARN, "log");
        n += (size_t)snprintf(line + n, sizeof(line) - n,
                              "%lu debug lines dropped (more than %d a second)\n", dropped,
                              KV_LOG_DEBUG_PER_SEC);
        emit(line, n < sizeof(line) ? n : sizeof(line) - 1);
    }
    n = stamp(line, sizeof(line), &ts, level, module);
    m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    if (m > 0)
        n += (size_t)m;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    emit(line, n);
}

void kv_log_write(int level, const char *module, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    kv_log_vwrite(level, module, fmt, ap);
    va_end(ap);
}
