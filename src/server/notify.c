/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/notify.c -- readiness for systemd (Type=notify): one datagram
 * to $NOTIFY_SOCKET, as sd_notify(3) sends it.
 *
 * With libsystemd found at build time (KV_HAVE_SYSTEMD) this is its
 * sd_notify(); otherwise the protocol is a few lines: an AF_UNIX datagram
 * socket, the address from NOTIFY_SOCKET (a leading '@' names an abstract
 * socket), the state text as the one datagram. Without NOTIFY_SOCKET (not
 * started by systemd) nothing is sent and 0 is returned. */
#include "kv_server.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "kv_err.h"

#ifdef KV_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

int kv_server_notify(const char *state)
{
    int rc = sd_notify(0, state);

    if (rc < 0) {
        errno = -rc;
        return KV_EIO;
    }
    return 0;
}
#else
int kv_server_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t plen;
    socklen_t sl;
    ssize_t n;
    int fd;

    if (!path || !*path)
        return 0;
    plen = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || plen >= sizeof(sa.sun_path)) {
        errno = EINVAL;
        return KV_EIO;
    }
    memcpy(sa.sun_path, path, plen);
    if (path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace: no NUL terminator counted */
    sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (path[0] == '/'));
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return KV_EIO;
    n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, sl);
    if (n < 0) {
        int e = errno;

        close(fd);
        errno = e;
        return KV_EIO;
    }
    close(fd);
    return 0;
}
#endif
