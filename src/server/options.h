/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/options.h -- command-line options of libevkv into a kv_config. */
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

#endif
