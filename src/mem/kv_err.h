/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/mem/kv_err.h -- the error codes every libevkv layer returns.
 *
 * Actions return 0 on success or one of these negative codes; kv_strerror()
 * names them for the one caller that logs. The codes live in the lowest layer
 * so that every module can share them without depending on each other. */
#ifndef KV_ERR_H
#define KV_ERR_H

enum {
    KV_OK = 0,
    KV_EAGAIN = -1,    /* not enough input yet / try again */
    KV_ENOMEM = -2,    /* allocation failed or a store is full */
    KV_EPROTO = -3,    /* malformed frame (version, flags, reserved fields) */
    KV_ECRC = -4,      /* crc32 mismatch */
    KV_ETOOBIG = -5,   /* a length above its configured limit */
    KV_EMAGIC = -6,    /* not a libevkv frame at all */
    KV_EINVAL = -7,    /* bad argument */
    KV_ENOTFOUND = -8, /* no such key */
    KV_EEXISTS = -9,   /* key exists / version differs */
    KV_ENOTNUM = -10,  /* not a decimal 64-bit integer, or overflow */
    KV_EIO = -11,      /* a system call failed; errno tells more */
    KV_ECORRUPT = -12, /* on-disk / in-segment data failed a check */
    KV_ELOCKED = -13,  /* another process owns the resource */
    KV_ETIMEDOUT = -14,
    KV_ECLOSED = -15,  /* the peer closed the connection */
    KV_ESTATUS = -16,  /* the server answered a non-OK status */
};

/* Returns a static, human-readable name for a KV_E* code. */
const char *kv_strerror(int err);

#endif
