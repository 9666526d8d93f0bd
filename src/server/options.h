/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/options.h -- libevkv's options: the command line into a
 * kv_config, --help, the start-up line, CONFIG GET / CONFIG SET; all of
 * them driven by the rows of kv_config_options[] (src/mem/kv_config.c). */
#ifndef KV_OPTIONS_H
#define KV_OPTIONS_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "kv_config.h"

enum { KV_OPT_RUN = 0, KV_OPT_HELP = 1, KV_OPT_VERSION = 2 };

/* Parses argv into *cfg (which must hold the defaults). Returns KV_OPT_RUN,
 * KV_OPT_HELP or KV_OPT_VERSION, or KV_EINVAL with a one-line reason in err. */
int kv_options_parse(int argc, char **argv, struct kv_config *cfg, char *err, size_t errcap);

/* Parses "123", "64k", "16m", "2g" (binary units). Returns 0 or KV_EINVAL. */
int kv_options_parse_size(const char *s, size_t *out);

/* Writes the options of cfg that differ from the defaults, as they would be
 * typed ("--memory 32m --eviction lru"; a password shows as "(set)"), or
 * "none", into buf. Returns the length written. */
size_t kv_options_describe(const struct kv_config *cfg, char *buf, size_t cap);

/* Writes the --help text. */
void kv_options_usage(FILE *f);

/* A byte string that is not NUL-terminated (a RESP argument). */
struct kv_options_arg {
    const char *p;
    size_t len;
};

/* Called once per parameter CONFIG GET answers: its name and value. */
typedef void (*kv_options_emit_fn)(void *ctx, const char *name, size_t name_len,
                                   const char *value, size_t value_len);

/* CONFIG GET pattern [pattern ...], as Redis 7.0: each parameter whose name
 * matches one of the patterns (Redis's glob, case-insensitive) is emitted
 * once, in the order the patterns find them; a pattern without glob
 * characters names one parameter by either spelling (maxclients or
 * max-conns) and is answered under the name asked. Returns the number
 * emitted. */
size_t kv_options_config_get(const struct kv_config *cfg, const struct kv_options_arg *pats,
                             size_t npats, kv_options_emit_fn emit, void *ctx);

/* CONFIG SET name value [name value ...] (args holds 2 x npairs), as Redis
 * 7.0: all of them or none. Each value is parsed and the whole new
 * configuration checked before any field changes; then the changed fields
 * are stored, each with one atomic store (their readers read them on each
 * use). Concurrent calls are serialised. Returns 0, or KV_EINVAL with
 * Redis's error text (without '-') in err: an unknown parameter, a new
 * value for one that cannot change at run time ("can't set immutable
 * config"; the value it already has is accepted, changing nothing), a
 * duplicate, a bad value. */
int kv_options_config_set(struct kv_config *cfg, const struct kv_options_arg *args,
                          size_t npairs, char *err, size_t errcap);

/* The same, with Redis's apply step: once every value is parsed and checked,
 * apply(ctx, cfg, next, ...) acts on what changed and cannot be a mere store
 * (a new port is listened on); if it fails, nothing changes and its text
 * (Redis's error without '-') is the answer. apply runs under CONFIG SET's
 * lock, before the fields are stored. */
typedef int (*kv_options_apply_fn)(void *ctx, const struct kv_config *cur,
                                   const struct kv_config *next, char *err, size_t errcap);
int kv_options_config_set_ex(struct kv_config *cfg, const struct kv_options_arg *args,
                             size_t npairs, kv_options_apply_fn apply, void *ctx, char *err,
                             size_t errcap);

#endif
