/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/mem/kv_err.c -- names of the KV_E* codes. */
#include "kv_err.h"

const char *kv_strerror(int err)
{
    switch (err) {
    case KV_OK: return "ok";
    case KV_EAGAIN: return "try again";
    case KV_ENOMEM: return "out of memory";
    case KV_EPROTO: return "malformed frame";
    case KV_ECRC: return "crc mismatch";
    case KV_ETOOBIG: return "too large";
    case KV_EMAGIC: return "bad magic";
    case KV_EINVAL: return "invalid argument";
    case KV_ENOTFOUND: return "not found";
    case KV_EEXISTS: return "exists";
    case KV_ENOTNUM: return "not a number";
    case KV_EIO: return "i/o error";
    case KV_ECORRUPT: return "corrupt data";
    case KV_ELOCKED: return "locked by another process";
    case KV_ETIMEDOUT: return "timed out";
    case KV_ECLOSED: return "connection closed";
    case KV_ESTATUS: return "error status";
    }
    return "unknown error";
}
