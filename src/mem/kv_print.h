/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/mem/kv_print.h -- writing logs and tables to stdout/stderr without
 * ever blocking.
 *
 * A stdout pipe that nobody reads must not stop the server: the thread that
 * prints is the main thread (signals, the expiry sweep, shutdown) or an IO
 * thread. kv_print_setup() gives fds 1 and 2 an open file description of
 * their own with O_NONBLOCK when they are pipes or terminals (reopened
 * through /proc/self/fd, so the shell or the supervisor sharing the old
 * one is not affected); sockets are written with MSG_DONTWAIT; regular
 * files never block. What does not fit is dropped and counted in
 * KV_STAT_PRINT_DROPPED (bytes).
 *
 * Thread safety: any thread. A write of up to PIPE_BUF bytes to a pipe
 * goes out whole or not at all, so log lines are never interleaved. */
#ifndef KV_PRINT_H
#define KV_PRINT_H

#include <stddef.h>

/* Makes fds 1 and 2 non-blocking for this process only (see above). Call
 * once, before other threads start. */
void kv_print_setup(void);

/* Writes buf[0..len) to fd as far as it goes without blocking; returns the
 * bytes written. The rest is dropped and counted. */
size_t kv_print_write(int fd, const void *buf, size_t len);

#endif
