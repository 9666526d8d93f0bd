/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/mem/kv_config.h -- the one configuration struct of libevkv.
 *
 * Filled by the server's option parser (or by a test) and passed as
 * `const struct kv_config *` to every create(); there are no settings
 * globals. It lives in the lowest layer so that every module can read the
 * fields it needs without depending on the server. */
#ifndef KV_CONFIG_H
#define KV_CONFIG_H

#include <stddef.h>
#include <stdint.h>

enum kv_eviction { KV_EVICT_NONE, KV_EVICT_LRU };
/* try: ask for huge pages (madvise), say at start when the store did not get
 * them; require: refuse to start without them; off: do not ask. */
enum kv_huge_pages { KV_HUGE_TRY, KV_HUGE_REQUIRE, KV_HUGE_OFF };

/* --sync for a --data-file store (README, "Power loss"): no: the kernel's writeback
 * only; everysec: a sync thread flushes every second; always: a write is answered only
 * after a sync that began after it completed (group commit). A shm store ignores it. */
enum kv_sync { KV_SYNC_NO, KV_SYNC_EVERYSEC, KV_SYNC_ALWAYS };

struct kv_config {
    /* network / io */
    char bind_addr[64];          /* default 127.0.0.1 */
    uint16_t port;               /* default 7379 */
    int no_tcp;                  /* 1: no TCP listener (needs unix_path) */
    char unix_path[108];         /* unix-domain listener path, "" = none */
    unsigned unix_perm;          /* mode of the socket file, default 0700 */
    unsigned io_threads;         /* IO threads (libev loops) */
    unsigned workers;            /* worker threads; 0 = run handlers inline in the IO thread */
    size_t max_body;             /* largest body_len accepted, bytes */
    size_t max_output;           /* pending output per connection before reading stops */
    unsigned max_conns;          /* simultaneous connections; above it: BUSY then close */
    unsigned idle_timeout;       /* seconds without traffic before a close, 0 = off */
    unsigned frame_timeout;      /* seconds a started frame may take to complete, 0 = off */
    size_t max_body_noauth;      /* largest body before AUTH when a password is set */
    size_t output_hard_limit;    /* pending output that closes the connection */
    size_t max_client_memory;    /* budget over every connection's input, in-flight
                                  * requests and output; 0 = none. Above it the
                                  * connection holding the most is closed */
    size_t recv_buf;             /* size of a receive buffer (message) */
    unsigned recv_buf_keep;      /* seconds an idle connection keeps its empty receive
                                  * buffer for the next read; 0 = give it back at once */
    size_t query_buf_limit;      /* Redis's client-query-buffer-limit: a connection whose
                                  * unparsed input would pass it is closed */
    unsigned key_load_delay;     /* Redis's key-load-delay: microseconds slept per key
                                  * imported by --load-rdb (a test knob; hidden) */
    int log_level;               /* 0 error, 1 warn, 2 info, 3 debug */
    char log_file[1024];         /* "" = stderr; reopened on SIGHUP */
    double shutdown_grace;       /* seconds to flush output at shutdown */

    /* store */
    char shm_name[256];          /* shm_open name, "" = derived from the port */
    char data_file[1024];        /* file path for a disk-backed segment, "" = shm */
    size_t memory;               /* segment size, bytes */
    size_t maxmemory;            /* Redis's maxmemory: the store's pages in use are kept
                                  * under it (0 = the segment's size); run time */
    enum kv_eviction eviction;
    enum kv_huge_pages huge_pages; /* default try */
    size_t max_key;              /* 1 .. max_key bytes */
    int reset_store;             /* move an unusable segment aside and start empty */
    int shrink_store;            /* a --memory below the segment's size copies it smaller */
    char rdb_file[1024];         /* where SAVE/BGSAVE write an RDB file, "" = refused */
    char load_rdb[1024];         /* an RDB file to import into an empty store at start */
    unsigned databases;          /* SELECT 0 .. databases - 1; default 16, at most 256 */
    enum kv_sync sync;           /* --sync, default everysec (data files only) */

    int in_order;                /* 1: binary answers leave in request order too */
    int resp_disabled;           /* 1: binary frames only (no RESP on the port) */
    size_t resp_max_args;        /* elements of a RESP multibulk */

    /* shared-memory rings (ATTACH on the unix socket) */
    size_t ring_size;            /* bytes of each ring when the client asks for 0 */
    size_t ring_max;             /* largest ring a client may ask for */
    unsigned ring_spin_us;       /* how long a consumer spins on an empty ring before it
                                  * parks (adaptive below it); 0 = park at once */
    unsigned ring_spin_yield_us; /* after this long spinning with every ring empty, yield
                                  * the core between polls; 0 = never */

    /* service */
    char requirepass[256];       /* "" = no AUTH required */
};

/* Fills *c with the documented defaults: each option row's default (below),
 * then the few computed from the machine (io_threads, workers). */
void kv_config_defaults(struct kv_config *c);

/* ---- the options table ----------------------------------------------------------
 * One row per option (nginx's ngx_command_t, Redis's static_configs[]): the
 * command line (getopt, --help, the start-up line), CONFIG GET / CONFIG SET
 * and the README check are all driven from the rows, so an option is added
 * by adding one row to kv_config_options[] (kv_config.c) and its field
 * above. */
enum kv_config_type {
    KV_CT_UINT,     /* decimal, min..max; fields of 2, 4 or 8 bytes */
    KV_CT_SIZE,     /* bytes with a k/m/g suffix, min..max (KV_CF_ZERO_OK: or 0) */
    KV_CT_STR,      /* a string of at most the field's size - 1 (KV_CF_NONEMPTY) */
    KV_CT_FLAG,     /* an int set to 1 by the option; CONFIG reads yes / no */
    KV_CT_ENUM,     /* one of names[] (an int field, by index); CONFIG: config_names[] */
    KV_CT_SECONDS,  /* whole seconds, min..max, into a double */
    KV_CT_MODE,     /* an octal file mode, 0..0777, into an unsigned */
    KV_CT_PASSFILE, /* the first line of a file, into the string field (requirepass) */
    KV_CT_CONST,    /* no field, no command-line option: CONFIG GET answers def (Redis
                     * parameters whose question has one answer here: save, appendonly) */
};

#define KV_CF_RUNTIME 0x1u    /* CONFIG SET may change it while the server runs */
#define KV_CF_ZERO_OK 0x2u    /* SIZE: 0 (= none) allowed below min */
#define KV_CF_NONEMPTY 0x4u   /* STR: "" refused (an empty password would mean "none") */
#define KV_CF_ENUM_NUM 0x8u   /* ENUM: the index as a number is accepted too (log-level) */
#define KV_CF_NO_CONFIG 0x10u /* not a CONFIG parameter (requirepass-file: an action) */
#define KV_CF_SECRET 0x20u    /* shown as "(set)" on the start-up line */
#define KV_CF_HIDDEN 0x40u    /* CONFIG GET by its exact name only, never by a pattern
                               * (Redis's HIDDEN_CONFIG: test and debugging knobs) */
#define KV_CF_PERCENT 0x80u   /* SIZE: "N%" (0..100) accepted too, kept as KV_CONFIG_PCT(N)
                               * in the same field (Redis's maxmemory-clients) */

/* A SIZE field of a KV_CF_PERCENT row holds either bytes or a percentage: the
 * top 128 values of size_t are percentages (Redis keeps them negative). */
#define KV_CONFIG_PCT(n) (SIZE_MAX - (size_t)(n))
#define KV_CONFIG_IS_PCT(v) ((v) >= SIZE_MAX - 127)
#define KV_CONFIG_PCT_OF(v) ((unsigned)(SIZE_MAX - (v)))

struct kv_config_option {
    const char *name;         /* the command-line option, without "--"; NULL: CONFIG only */
    const char *config;       /* the CONFIG name: Redis's where a Redis parameter means the
                               * same (maxclients, timeout, ...); NULL = name */
    enum kv_config_type type;
    size_t offset, size;      /* the field in struct kv_config */
    unsigned long long min, max;
    const char *const *names; /* ENUM: the values, by the field's value; NULL-terminated */
    const char *const *config_names; /* ENUM: their CONFIG spelling; NULL = names */
    const char *def;          /* the default as typed ("16m"), NULL = 0 / "" / computed */
    unsigned flags;           /* KV_CF_* */
    const char *arg;          /* the value's name in --help ("SIZE"); NULL: no value */
    const char *help;         /* --help text; '\n' starts a continuation line */
    const char *def_help;     /* the default in --help when def does not say it (computed) */
};

extern const struct kv_config_option kv_config_options[];
extern const size_t kv_config_noptions;

/* The row named name[0..len) on the command line or in CONFIG (either
 * spelling, case-insensitive), or NULL. */
const struct kv_config_option *kv_config_option_find(const char *name, size_t len);

/* Parses "123", "64k", "16m", "2g" (binary units; "kb", "mb", "gb" too).
 * Returns 0 or KV_EINVAL (*out unchanged). */
int kv_config_parse_size(const char *s, size_t *out);

/* The row's CONFIG name (config, else name). */
const char *kv_config_option_config_name(const struct kv_config_option *o);

/* Parses text as o's value into *c. Returns 0, or KV_EINVAL with a reason
 * after Redis's CONFIG SET wording ("argument must be a memory value")
 * written to why[0..cap) (c unchanged). Flags: text NULL sets them (the
 * command line); CONFIG's "yes" / "no" are accepted too. */
int kv_config_option_parse(const struct kv_config_option *o, const char *text,
                           struct kv_config *c, char *why, size_t cap);

/* Writes o's value in *c, as CONFIG GET shows it (sizes in bytes, flags
 * yes / no, enums by config_names), into buf. Returns the length written. */
size_t kv_config_option_format(const struct kv_config_option *o, const struct kv_config *c,
                               char *buf, size_t cap);

/* The budget of --max-client-memory in bytes (0 = none): the field itself, or
 * its percentage of maxmemory (of the segment's size when maxmemory is 0).
 * Reads the run-time fields with relaxed atomic loads (any thread). */
size_t kv_config_client_budget(const struct kv_config *c);

/* 1 when o's field differs between a and b. */
int kv_config_option_differs(const struct kv_config_option *o, const struct kv_config *a,
                             const struct kv_config *b);

/* Copies o's field from src into dst, each word with one atomic store: a
 * reader in another thread sees the old value or the new one (CONFIG SET
 * of a KV_CF_RUNTIME row, whose readers read the field on each use). */
void kv_config_option_copy(const struct kv_config_option *o, struct kv_config *dst,
                           const struct kv_config *src);

#endif
