/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/options.c -- libevkv's command line, --help, start-up line and
 * CONFIG GET / SET (see options.h), every one a loop over the rows of
 * kv_config_options[]: an option added there is parsed, documented, shown
 * and configurable without a line here. */
#include "options.h"

#include <ctype.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "glob.h"
#include "kv_err.h"

#define OPT_ROW 256 /* getopt's value of row i: OPT_ROW + i */
#define HELP_COL 23 /* the column help texts start at */

static int has_cli(const struct kv_config_option *o)
{
    return o->name && o->type != KV_CT_CONST;
}

void kv_options_usage(FILE *f)
{
    fputs("usage: libevkv [options]\n", f);
    for (size_t i = 0; i < kv_config_noptions; i++) {
        const struct kv_config_option *o = &kv_config_options[i];
        const char *h = o->help ? o->help : "";
        const char *def = o->def_help ? o->def_help : o->def;
        int col;

        if (!has_cli(o))
            continue;
        col = fprintf(f, "  --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        col += fprintf(f, "%*s", col < HELP_COL ? HELP_COL - col : 2, "");
        for (const char *nl; (nl = strchr(h, '\n')) != NULL; h = nl + 1) {
            fprintf(f, "%.*s\n%*s", (int)(nl - h), h, HELP_COL, "");
            col = HELP_COL;
        }
        col += fprintf(f, "%s", h);
        if (def && def[0] && o->type != KV_CT_FLAG) { /* on a line of its own past 90 columns */
            if (col + (int)strlen(def) + 11 > 90)
                fprintf(f, "\n%*s", HELP_COL, "");
            else
                fputc(' ', f);
            fprintf(f, "(default %s)", def);
        }
        fputc('\n', f);
    }
    fputs("  --help, --version\n"
          "SIZE takes a k, m or g suffix (binary units). Signal 41 (SIGRTMIN+7) prints the\n"
          "memory and request statistics; SIGINT/SIGTERM stop gracefully; SIGHUP reopens\n"
          "the --log-file. CONFIG GET / CONFIG SET name the options as --help does or by\n"
          "their Redis names (README, \"Running the server\").\n",
          f);
}

int kv_options_parse_size(const char *s, size_t *out)
{
    return kv_config_parse_size(s, out);
}

/* The rules between options, for the command line and CONFIG SET alike. */
static int check_config(const struct kv_config *cfg, char *err, size_t errcap)
{
    if (cfg->ring_size > cfg->ring_max) {
        snprintf(err, errcap, "--ring-size must be at most --ring-max");
        return KV_EINVAL;
    }
    if (cfg->output_hard_limit < cfg->max_output) {
        snprintf(err, errcap, "--output-hard-limit must be at least --max-output");
        return KV_EINVAL;
    }
    if (cfg->no_tcp && !cfg->unix_path[0]) {
        snprintf(err, errcap, "--no-tcp needs --unix PATH (nothing to listen on)");
        return KV_EINVAL;
    }
    /* the default segment is named after the port: with any free port it
     * would be shared by every such server (README, "Running the server") */
    if (cfg->port == 0 && !cfg->shm_name[0] && !cfg->data_file[0]) {
        snprintf(err, errcap, "--port 0 needs --shm-name or --data-file (the default "
                 "segment is named after the port)");
        return KV_EINVAL;
    }
    return 0;
}

int kv_options_parse(int argc, char **argv, struct kv_config *cfg, char *err, size_t errcap)
{
    struct option long_opts[kv_config_noptions + 3];
    size_t n = 0;
    int c, idx = 0;

    for (size_t i = 0; i < kv_config_noptions; i++) {
        const struct kv_config_option *o = &kv_config_options[i];

        if (has_cli(o))
            long_opts[n++] = (struct option){o->name, o->arg ? required_argument : no_argument,
                                             NULL, OPT_ROW + (int)i};
    }
    long_opts[n++] = (struct option){"help", no_argument, NULL, 'H'};
    long_opts[n++] = (struct option){"version", no_argument, NULL, 'V'};
    long_opts[n] = (struct option){NULL, 0, NULL, 0};

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", long_opts, &idx)) != -1) {
        const char *name = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        const struct kv_config_option *o;
        char why[160];

        if (c == 'H')
            return KV_OPT_HELP;
        if (c == 'V')
            return KV_OPT_VERSION;
        if (c == ':') {
            snprintf(err, errcap, "option %s needs a value", name);
            return KV_EINVAL;
        }
        if (c < OPT_ROW || (size_t)(c - OPT_ROW) >= kv_config_noptions) {
            snprintf(err, errcap, "unknown option %s (see --help)", name);
            return KV_EINVAL;
        }
        o = &kv_config_options[c - OPT_ROW];
        if (kv_config_option_parse(o, o->arg ? optarg : NULL, cfg, why, sizeof(why)) != 0) {
            if (o->type == KV_CT_PASSFILE)
                snprintf(err, errcap, "cannot read a password from '%s'", optarg);
            else
                snprintf(err, errcap, "bad value '%s' for --%s (see --help)", optarg, o->name);
            return KV_EINVAL;
        }
    }
    if (check_config(cfg, err, errcap) != 0)
        return KV_EINVAL;
    if (optind < argc) {
        snprintf(err, errcap, "unexpected argument '%s' (see --help)", argv[optind]);
        return KV_EINVAL;
    }
    return KV_OPT_RUN;
}

/* "16m" for a size that is a whole number of k/m/g, else the bytes. */
static const char *size_text(size_t v, char *buf, size_t cap)
{
    static const char units[] = "gmk";

    for (int i = 0; i < 3; i++) {
        unsigned shift = (unsigned)(30 - 10 * i);

        if (v && (v & ((1ull << shift) - 1)) == 0) {
            snprintf(buf, cap, "%zu%c", v >> shift, units[i]);
            return buf;
        }
    }
    snprintf(buf, cap, "%zu", v);
    return buf;
}

size_t kv_options_describe(const struct kv_config *cfg, char *buf, size_t cap)
{
    struct kv_config d;
    char v[1100];
    size_t n = 0;

    if (!cap)
        return 0;
    buf[0] = '\0';
    kv_config_defaults(&d);
    for (size_t i = 0; i < kv_config_noptions && n < cap; i++) {
        const struct kv_config_option *o = &kv_config_options[i];

        if (!has_cli(o) || o->type == KV_CT_PASSFILE || !kv_config_option_differs(o, cfg, &d))
            continue;
        if (o->flags & KV_CF_SECRET)
            snprintf(v, sizeof(v), " (set)");
        else if (o->type == KV_CT_FLAG)
            v[0] = '\0';
        else if (o->type == KV_CT_SIZE &&
                 !((o->flags & KV_CF_PERCENT) &&
                   KV_CONFIG_IS_PCT(*(const size_t *)((const char *)cfg + o->offset)))) {
            char t[32];

            snprintf(v, sizeof(v), " %s",
                     size_text(*(const size_t *)((const char *)cfg + o->offset), t, sizeof(t)));
        }
        else if (o->type == KV_CT_ENUM) {
            int e = *(const int *)((const char *)cfg + o->offset);

            if (e < 0 || (unsigned long long)e > o->max)
                continue;
            snprintf(v, sizeof(v), " %s", o->names[e]);
        } else if (o->type == KV_CT_MODE)
            snprintf(v, sizeof(v), " %04o", *(const unsigned *)((const char *)cfg + o->offset));
        else {
            v[0] = ' ';
            kv_config_option_format(o, cfg, v + 1, sizeof(v) - 1);
        }
        n += (size_t)snprintf(buf + n, cap - n, "%s--%s%s", n ? " " : "", o->name, v);
    }
    if (n == 0)
        n = (size_t)snprintf(buf, cap, "none");
    return n < cap ? n : cap - 1;
}

/* ---- CONFIG GET / SET ------------------------------------------------------------- */
static int is_config(const struct kv_config_option *o)
{
    return !(o->flags & KV_CF_NO_CONFIG);
}

size_t kv_options_config_get(const struct kv_config *cfg, const struct kv_options_arg *pats,
                             size_t npats, kv_options_emit_fn emit, void *ctx)
{
    unsigned char done[kv_config_noptions];
    char value[1100], lower[256];
    size_t count = 0;

    memset(done, 0, sizeof(done));
    for (size_t p = 0; p < npats; p++) {
        const struct kv_options_arg *a = &pats[p];

        if (!memchr(a->p, '*', a->len) && !memchr(a->p, '?', a->len) &&
            !memchr(a->p, '[', a->len)) {
            const struct kv_config_option *o = kv_config_option_find(a->p, a->len);
            size_t i = o ? (size_t)(o - kv_config_options) : 0;

            if (!o || !is_config(o) || done[i])
                continue;
            done[i] = 1;
            emit(ctx, a->p, a->len, value, kv_config_option_format(o, cfg, value, sizeof(value)));
            count++;
            continue;
        }
        if (a->len > sizeof(lower)) /* longer than any name: matches only by stars */
            continue;
        for (size_t k = 0; k < a->len; k++)
            lower[k] = (char)tolower((unsigned char)a->p[k]);
        for (size_t i = 0; i < kv_config_noptions; i++) {
            const struct kv_config_option *o = &kv_config_options[i];
            const char *nm = kv_config_option_config_name(o);

            if (done[i] || !is_config(o) || (o->flags & KV_CF_HIDDEN) ||
                !kv_glob_match((const uint8_t *)lower, a->len, (const uint8_t *)nm, strlen(nm)))
                continue;
            done[i] = 1;
            emit(ctx, nm, strlen(nm), value, kv_config_option_format(o, cfg, value, sizeof(value)));
            count++;
        }
    }
    return count;
}

/* CONFIG SET's changes to one configuration are serialised: each reads the
 * fields the other may be storing. */
static pthread_mutex_t config_set_lock = PTHREAD_MUTEX_INITIALIZER;

int kv_options_config_set(struct kv_config *cfg, const struct kv_options_arg *args,
                          size_t npairs, char *err, size_t errcap)
{
    return kv_options_config_set_ex(cfg, args, npairs, NULL, NULL, err, errcap);
}

int kv_options_config_set_ex(struct kv_config *cfg, const struct kv_options_arg *args,
                             size_t npairs, kv_options_apply_fn apply, void *ctx, char *err,
                             size_t errcap)
{
    /* every pair past the first problem is never looked at, and each good
     * pair takes a row no other pair may: at most kv_config_noptions of them */
    const struct kv_config_option *rows[kv_config_noptions];
    unsigned char seen[kv_config_noptions];
    struct kv_config next;
    char text[1100], why[200];
    int rc = KV_EINVAL;

    if (npairs == 0)
        return 0;
    memset(seen, 0, sizeof(seen));
    /* which parameters: the first problem in argument order is the answer */
    for (size_t i = 0; i < npairs; i++) {
        const struct kv_options_arg *nm = &args[2 * i];
        const struct kv_config_option *o = kv_config_option_find(nm->p, nm->len);
        int namelen = (int)(nm->len < 128 ? nm->len : 128);

        if (!o || !is_config(o)) {
            snprintf(err, errcap,
                     "ERR Unknown option or number of arguments for CONFIG SET - '%.*s'", namelen,
                     nm->p);
            return KV_EINVAL;
        }
        if (seen[o - kv_config_options]++) {
            snprintf(err, errcap, "ERR CONFIG SET failed (possibly related to argument "
                     "'%.*s') - duplicate parameter", namelen, nm->p);
            return KV_EINVAL;
        }
        rows[i] = o;
    }
    /* every value into a copy, then the rules between options: all or none */
    pthread_mutex_lock(&config_set_lock);
    next = *cfg;
    for (size_t i = 0; i < npairs; i++) {
        const struct kv_options_arg *v = &args[2 * i + 1];
        const char *nm = kv_config_option_config_name(rows[i]);

        if (v->len >= sizeof(text) || memchr(v->p, '\0', v->len)) {
            snprintf(err, errcap, "ERR CONFIG SET failed (possibly related to argument '%s') - "
                     "argument is too long", nm);
            goto out;
        }
        memcpy(text, v->p, v->len);
        text[v->len] = '\0';
        if (!(rows[i]->flags & KV_CF_RUNTIME)) {
            /* fixed at start: only the value it has is accepted (a no-op, so
             * that `CONFIG SET save ""` and tools that write back what
             * CONFIG GET said work); any other is Redis's immutable error */
            int same = rows[i]->type == KV_CT_CONST
                           ? strcasecmp(text, rows[i]->def ? rows[i]->def : "") == 0
                           : kv_config_option_parse(rows[i], text, &next, why, sizeof(why)) == 0 &&
                                 !kv_config_option_differs(rows[i], &next, cfg);

            if (!same) {
                const struct kv_options_arg *a = &args[2 * i];

                snprintf(err, errcap, "ERR CONFIG SET failed (possibly related to argument "
                         "'%.*s') - can't set immutable config", (int)(a->len < 128 ? a->len : 128),
                         a->p);
                goto out;
            }
            continue;
        }
        if (kv_config_option_parse(rows[i], text, &next, why, sizeof(why)) != 0) {
            snprintf(err, errcap, "ERR CONFIG SET failed (possibly related to argument '%s') - %s",
                     nm, why);
            goto out;
        }
    }
    if (check_config(&next, why, sizeof(why)) != 0) {
        snprintf(err, errcap, "ERR CONFIG SET failed (possibly related to argument '%s') - %s",
                 kv_config_option_config_name(rows[npairs - 1]), why);
        goto out;
    }
    if (apply && (rc = apply(ctx, cfg, &next, err, errcap)) != 0)
        goto out;
    for (size_t i = 0; i < npairs; i++)
        if (rows[i]->flags & KV_CF_RUNTIME)
            kv_config_option_copy(rows[i], cfg, &next);
    rc = 0;
out:
    pthread_mutex_unlock(&config_set_lock);
    return rc;
}
