/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/mem/kv_print.c -- non-blocking stdout/stderr (see kv_print.h). */
#include "kv_print.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kv_mem.h"

static int is_socket[3]; /* ro after kv_print_setup */

static void setup_fd(int fd)
{
    struct stat st;
    char path[32];
    int nfd, fl;

    if (fstat(fd, &st) != 0)
        return;
    if (S_ISSOCK(st.st_mode)) {
        is_socket[fd] = 1; /* send(MSG_DONTWAIT) needs no flag on the shared description */
        return;
    }
    if (!S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode))
        return; /* regular files do not block */
    fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK))
        return;
    /* a description of our own: O_NONBLOCK on the inherited one would change
     * it for the shell or the supervisor that shares it */
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    nfd = open(path, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_APPEND);
    if (nfd < 0)
        return; /* left blocking: nothing better to do */
    if (nfd != fd) {
        dup2(nfd, fd);
        close(nfd);
    }
}

void kv_print_setup(void)
{
    setup_fd(STDOUT_FILENO);
    setup_fd(STDERR_FILENO);
}

size_t kv_print_write(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    size_t done = 0;

    while (done < len) {
        ssize_t n = fd >= 0 && fd < 3 && is_socket[fd]
                        ? send(fd, p + done, len - done, MSG_DONTWAIT | MSG_NOSIGNAL)
                        : write(fd, p + done, len - done);

        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        break; /* EAGAIN (full), or the reader is gone */
    }
    if (done < len)
        kv_mem_stat_add(KV_STAT_PRINT_DROPPED, len - done);
    return done;
}
