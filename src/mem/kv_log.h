/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/mem/kv_log.h -- the process's log sink: one line per write(2), each
 * "2026-12-01T20:15:03.123Z LEVEL [module] text".
 *
 * Lines go to stderr, or to the file given to kv_log_open(), opened with
 * O_APPEND; kv_log_reopen() (on SIGHUP) opens the same path again and puts
 * the new file in place of the old with dup2, so a thread writing a line at
 * that moment writes to one file or the other, never to a closed fd: after
 * logrotate renames the file, the next line goes to a new one. The sink is
 * process-wide state (there is one stderr); which lines are written is the
 * caller's choice (cfg->log_level): the sink filters nothing but the debug
 * rate limit. Libraries (mem, shm, the codec) still do not log. */
#ifndef KV_LOG_H
#define KV_LOG_H

#include <stdarg.h>

enum { KV_LOG_ERROR = 0, KV_LOG_WARN = 1, KV_LOG_INFO = 2, KV_LOG_DEBUG = 3 };

/* Debug lines allowed per second across the process; the rest are counted
 * and one line says how many were dropped. */
#define KV_LOG_DEBUG_PER_SEC 100

/* Sends lines to path (created 0640 when absent) instead of stderr.
 * Returns 0, or KV_EIO with errno set. Call before any thread logs. */
int kv_log_open(const char *path);
/* Opens the path of kv_log_open() again (no-op on stderr). Returns 0, or
 * KV_EIO with errno set (the old file is kept). Safe while others log. */
int kv_log_reopen(void);
/* Writes one line; level is KV_LOG_*, module a short tag ("server", "io").
 * Debug lines are rate-limited (KV_LOG_DEBUG_PER_SEC). Thread-safe. */
void kv_log_write(int level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void kv_log_vwrite(int level, const char *module, const char *fmt, va_list ap);
/* The level's name: "error", "warn", "info", "debug". */
const char *kv_log_level_name(int level);

#endif
