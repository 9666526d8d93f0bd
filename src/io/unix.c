/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/io/unix.c -- the unix-domain listening socket (--unix PATH).
 *
 * Same-host clients skip the TCP stack: the socket file is bound beside the
 * TCP port (or alone, --no-tcp) and its connections are served exactly like
 * TCP ones, both protocols. A socket file left by a dead server is replaced;
 * one a live server listens on is refused (two servers must not share a
 * path). The mode (--unix-perm) is set before listen(), so no connection can
 * arrive while the file still has the umask's mode. At close the file is
 * removed if it is still the one bound here (same device and inode). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "io_internal.h"
#include "kv_err.h"

/* 1: somebody accepts connections on sa; 0: nobody (a stale file);
 * negative errno when it cannot be told. */
static int someone_listens(const struct sockaddr_un *sa)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), rc, e;

    if (fd < 0)
        return -errno;
    rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
    e = errno;
    close(fd);
    if (rc == 0 || e == EAGAIN) /* EAGAIN: its backlog is full, it is alive */
        return 1;
    return e == ECONNREFUSED ? 0 : -e;
}

int kv_io_unix_open(struct kv_io *io, char *err, size_t errcap)
{
    const char *path = io->cfg->unix_path;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct stat st;
    int fd, live, e;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, errcap, "unix socket path too long (at most %zu bytes): %s",
                 sizeof(sa.sun_path) - 1, path);
        return KV_EINVAL;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto err_errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (errno != EADDRINUSE)
            goto err_close;
        if (lstat(path, &st) != 0)
            goto err_close;
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errcap,
                     "cannot listen on %s: it exists and is not a socket; "
                     "not touching it",
                     path);
            close(fd);
            return KV_EEXISTS;
        }
        live = someone_listens(&sa);
        if (live == 1) {
            snprintf(err, errcap,
                     "cannot listen on %s: another server is listening on it "
                     "(stop it, or choose another --unix path)",
                     path);
            close(fd);
            return KV_ELOCKED;
        }
        if (live < 0) {
            snprintf(err, errcap,
                     "cannot listen on %s: cannot tell whether a server "
                     "listens on it: %s",
                     path, strerror(-live));
            close(fd);
            return KV_EIO;
        }
        if (unlink(path) != 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
            goto err_close;
        kv_io_log(io, 2, "replaced the stale socket file %s (no server listened on it)", path);
    }
    if (chmod(path, io->cfg->unix_perm) != 0 || stat(path, &st) != 0 || listen(fd, 1024) != 0) {
        e = errno;
        unlink(path);
        errno = e;
        goto err_close;
    }
    io->unix_fd = fd;
    io->unix_dev = st.st_dev;
    io->unix_ino = st.st_ino;
    return 0;

err_close:
    e = errno;
    close(fd);
    errno = e;
err_errno:
    snprintf(err, errcap, "cannot listen on unix socket %s: %s", path, strerror(errno));
    return KV_EIO;
}

void kv_io_unix_close(struct kv_io *io)
{
    struct stat st;

    if (io->unix_fd < 0)
        return;
    close(io->unix_fd);
    io->unix_fd = -1;
    if (stat(io->cfg->unix_path, &st) == 0 && st.st_dev == io->unix_dev &&
        st.st_ino == io->unix_ino)
        unlink(io->cfg->unix_path);
}
