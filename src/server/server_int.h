/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/server_int.h -- the server struct, shared by the files of
 * src/server only (wiring in server.c, handlers in handlers.c). */
#ifndef KV_SERVER_INT_H
#define KV_SERVER_INT_H

#include "kv_config.h"
#include "kv_mem.h"
#include "kv_server.h"
#include "kv_shm.h"
#include "kv_worker.h"

struct kv_worker_registry;
struct kv_worker_pool;
struct kv_io;
struct kv_shm_store;

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <stdint.h>

/* SAVE / BGSAVE (save.c). The lock guards every field. */
struct kv_server_save {
    pthread_mutex_t lock;
    pthread_cond_t idle;               /* signalled when a BGSAVE ends */
    int running;                       /* a SAVE or BGSAVE is writing */
    int joinable;                      /* a finished BGSAVE thread not yet joined */
    pthread_t tid;
    int64_t last_save;                 /* unix time of the last good save (start time) */
    int last_ok;                       /* the last save succeeded */
    /* A snapshot never holds part of an EXEC (save.c): exec_seq (atomic, not under lock)
     * is odd while an EXEC changes the store; a save whose scan saw it move is redone,
     * and the last try holds exec_hold for writing (EXECs take it for reading, outside
     * the workers' gate, so only EXECs wait). */
    uint64_t exec_seq;
    pthread_rwlock_t exec_hold;
};

/* The counters CONFIG RESETSTAT zeroes, as INFO shows them (stats.c). */
struct kv_server_counters {
    uint64_t connections_received, connections_rejected, commands, net_in, net_out;
    uint64_t hits, misses, expired, evicted;
};

/* The baseline INFO subtracts since the last CONFIG RESETSTAT; the lock
 * guards it. */
struct kv_server_stats_base {
    pthread_mutex_t lock;
    struct kv_server_counters at_reset;
    int64_t started_us;                /* ro after create: unix time of the start, us */
    char run_id[41];                   /* ro after create: 40 random hex digits */
};

struct kv_server {
    const struct kv_config *cfg;       /* borrowed: outlives the server */
    struct kv_config *cfg_rw;          /* borrowed: the same struct, for CONFIG SET of
                                        * its KV_CF_RUNTIME fields (its owner, main or a
                                        * test, keeps it writable) */
    struct kv_server_stats_base stats_base;
    struct kv_server_save save;
    char store_state[1300];            /* ro after create: the store as found at open */
    uint64_t rdb_imported;             /* ro after create: keys --load-rdb imported */
    struct kv_worker_registry *reg;    /* owned */
    struct kv_worker_pool *pool;       /* owned */
    struct kv_io *io;                  /* owned */
    const unsigned *monitors;          /* ro after create: kv_io_monitor_count(io) */
    struct kv_shm_store *store;        /* owned: closed (clean mark) in destroy */
};

/* ---- the one statistics collector (stats.c) ---------------------------------------
 * Every figure the server reports, gathered once from the memory table, the
 * IO registry, the worker pool, the store and the process; INFO, the STATS
 * opcode and the signal-41 table all render this struct. */
struct kv_server_db_stats {
    uint64_t keys;
    uint64_t expires; /* keys with a TTL, as the expiry sweep's last pass counted them */
    uint64_t avg_ttl; /* ms: their mean time to live then (kv_shm_db_ttl_stats) */
};

#define KV_SERVER_MAX_DBS 256 /* KV_SHM_MAX_DB */

struct kv_server_stats {
    struct kv_mem_snapshot mem;
    int64_t heap_bytes;             /* held by every module */
    int have_io;
    unsigned clients_tcp, clients_unix;
    unsigned clients_shm;            /* of clients_unix: attached to rings */
    uint64_t shm_bytes_in, shm_bytes_out;
    int have_pool;
    struct kv_worker_stats pool;
    int have_store;
    struct kv_shm_stats store;
    struct kv_shm_sync_stats sync; /* --sync (data files) */
    unsigned ndbs;                  /* rows of db[] (INFO keyspace, DBSIZE) */
    struct kv_server_db_stats db[KV_SERVER_MAX_DBS];
    struct kv_server_counters total;      /* since the start (store's: the segment's) */
    struct kv_server_counters since_reset; /* total - the CONFIG RESETSTAT baseline */
    int64_t now_us, uptime_s;
    double cpu_user, cpu_sys, cpu_user_children, cpu_sys_children; /* seconds */
    uint64_t rss_bytes;             /* /proc/self/statm, 0 when unknown */
    int64_t last_save;              /* unix time of the last good SAVE, 0: none */
    int save_running, save_ok;
};

/* Fills *out (about 5 KiB: callers keep it on the heap or a thread's stack). */
/* The errno of a failed data-file sync while writes are refused (README "Power loss":
 * --sync everysec refuses every write from a failed sync until one succeeds), else 0. */
static inline int kv_server_writes_refused(const struct kv_server *srv)
{
    return srv->store ? kv_shm_sync_failing(srv->store) : 0;
}
/* The message of that refusal (RESP: after "-MISCONF "); buf of 160 bytes or more. */
static inline const char *kv_server_disk_error(int e, char *buf, size_t cap)
{
    snprintf(buf, cap, "Errors writing to the data file: %s (writes are refused until a sync "
                       "succeeds)", strerror(e));
    return buf;
}

void kv_server_stats_collect(struct kv_server *srv, struct kv_server_stats *out);
/* The signal-41 table of *st (kv_server_format_stats collects, then calls it). */
size_t kv_server_stats_table(struct kv_server *srv, const struct kv_server_stats *st, char *buf,
                             size_t cap);
/* CONFIG RESETSTAT: INFO's counters start again from 0 (also done at the end of
 * kv_server_create: INFO counts since the start, as Redis does, although the
 * store's hit / miss / expiry counters live in the segment). */
void kv_server_stats_reset(struct kv_server *srv);
void kv_server_stats_init(struct kv_server *srv);
void kv_server_stats_fini(struct kv_server *srv);

/* INFO sections, Redis's names. */
#define KV_INFO_SERVER 0x1u
#define KV_INFO_CLIENTS 0x2u
#define KV_INFO_MEMORY 0x4u
#define KV_INFO_PERSISTENCE 0x8u
#define KV_INFO_STATS 0x10u
#define KV_INFO_REPLICATION 0x20u
#define KV_INFO_CPU 0x40u
#define KV_INFO_MODULES 0x80u
#define KV_INFO_COMMANDSTATS 0x100u
#define KV_INFO_ERRORSTATS 0x200u
#define KV_INFO_CLUSTER 0x400u
#define KV_INFO_KEYSPACE 0x800u
#define KV_INFO_DEFAULT 0xEFFu /* all but commandstats */
#define KV_INFO_ALL 0xFFFu

/* The sections INFO's arguments name (none: default; "all", "everything",
 * "default"; unknown names add nothing, as in Redis). */
unsigned kv_server_info_sections(size_t argc, const char *const *argv, const size_t *lens);

/* Renders the INFO text of the sections into buf (kv_mem_appendf style).
 * Returns the length written. */
size_t kv_server_info_format(struct kv_server *srv, const struct kv_server_stats *st,
                             unsigned sections, char *buf, size_t cap);

/* INFO commandstats lines of the RESP commands (resp_cmds.c), appended at len. */
size_t kv_server_resp_cmdstats(char *buf, size_t cap, size_t len);
/* The calls of the RESP commands the IO thread answers itself (CMD_LOCAL). */
uint64_t kv_server_resp_local_calls(void);
/* CONFIG RESETSTAT of the command counters. */
void kv_server_resp_cmdstats_reset(void);

struct kv_io_textproto;
/* Fills the RESP adapter of the server (resp_cmds.c). */
void kv_server_resp_adapter(struct kv_server *srv, struct kv_io_textproto *out);

/* txn.c: the EXEC and WATCH handlers (opcodes 16, 17), and what a session keeps. */
int kv_server_txn_register(struct kv_server *srv, struct kv_worker_registry *reg);
struct kv_session;
/* The IO side's session-end hook: frees the session's watch list and MULTI queue. */
void kv_server_session_end(void *ctx, struct kv_session *s);
/* resp_cmds.c: frees the MULTI queue of a session (io thread). */
void kv_server_resp_session_end(struct kv_session *s);

/* SAVE (background 0: in the caller's thread) or BGSAVE (a thread of its
 * own) to cfg->rdb_file. 0 when written (SAVE) or started (BGSAVE);
 * KV_EAGAIN when a save is already running; KV_EINVAL without --rdb-file;
 * else the failure, with a reason in err. */
int kv_server_save(struct kv_server *srv, int background, char *err, size_t errcap);
/* Unix time of the last good save (0: none) and whether a BGSAVE runs. */
int64_t kv_server_last_save(struct kv_server *srv, int *running, int *last_ok);
void kv_server_save_init(struct kv_server *srv);
/* Waits for a running BGSAVE (the store must outlive it). */
void kv_server_save_fini(struct kv_server *srv);
/* --load-rdb: imports cfg->load_rdb into an empty store; logs what it did. */
int kv_server_load_rdb(struct kv_server *srv, char *err, size_t errcap);

#endif
