/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/stats.c -- the one statistics collector of the server and the
 * INFO renderer.
 *
 * kv_server_stats_collect() reads every source once -- the kv_mem table and
 * event counters, the IO registry, the worker pool, the store, the process
 * (getrusage, /proc/self/statm) and the SAVE state -- into one struct;
 * INFO (here), the STATS opcode (handlers.c) and the signal-41 table
 * (server.c) render that struct, so a figure has one source and one name.
 * CONFIG RESETSTAT keeps a baseline of the counters; INFO shows them since
 * it, the STATS opcode and the table since the start. */
#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "kv_io.h"
#include "kv_mem.h"
#include "kv_shm.h"
#include "kv_worker.h"
#include "server_int.h"

static int64_t wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void kv_server_stats_init(struct kv_server *srv)
{
    struct kv_server_stats_base *b = &srv->stats_base;
    unsigned char rnd[20] = {0};
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

    pthread_mutex_init(&b->lock, NULL);
    b->started_us = wall_us();
    if (fd >= 0) {
        if (read(fd, rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd))
            memset(rnd, 0, sizeof(rnd));
        close(fd);
    }
    for (size_t i = 0; i < sizeof(rnd); i++) {
        if (!rnd[i]) /* no randomness: the start time and pid still tell runs apart */
            rnd[i] = (unsigned char)((b->started_us >> (i % 8 * 8)) ^ (getpid() >> (i % 4)));
        snprintf(b->run_id + 2 * i, 3, "%02x", rnd[i]);
    }
}

void kv_server_stats_fini(struct kv_server *srv)
{
    pthread_mutex_destroy(&srv->stats_base.lock);
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size, res = 0;

    if (!f)
        return 0;
    if (fscanf(f, "%llu %llu", &size, &res) != 2)
        res = 0;
    fclose(f);
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

#define SUB(f) (a->f >= b->f ? a->f - b->f : 0)
static void counters_sub(const struct kv_server_counters *a, const struct kv_server_counters *b,
                         struct kv_server_counters *out)
{
    out->connections_received = SUB(connections_received);
    out->connections_rejected = SUB(connections_rejected);
    out->commands = SUB(commands);
    out->net_in = SUB(net_in);
    out->net_out = SUB(net_out);
    out->hits = SUB(hits);
    out->misses = SUB(misses);
    out->expired = SUB(expired);
    out->evicted = SUB(evicted);
}
#undef SUB

void kv_server_stats_collect(struct kv_server *srv, struct kv_server_stats *out)
{
    struct kv_server_counters *t = &out->total;
    struct rusage ru;

    memset(out, 0, sizeof(*out));
    kv_mem_snapshot(&out->mem);
    out->heap_bytes = kv_mem_held_total(&out->mem);
    if (srv->io) {
        out->have_io = 1;
        kv_io_peer_counts(srv->io, &out->clients_tcp, &out->clients_unix);
        kv_io_ring_counts(srv->io, &out->clients_shm, &out->shm_bytes_in, &out->shm_bytes_out);
    }
    if (srv->pool) {
        out->have_pool = 1;
        kv_worker_pool_stats(srv->pool, &out->pool);
    }
    if (srv->store && kv_shm_stats(srv->store, &out->store) == 0)
        out->have_store = 1;
    if (srv->store)
        kv_shm_sync_stats(srv->store, &out->sync);
    /* every database's key count (O(1) each: the store keeps per-database counters) */
    out->ndbs = srv->cfg->databases < KV_SERVER_MAX_DBS ? srv->cfg->databases : KV_SERVER_MAX_DBS;
    for (unsigned d = 0; srv->store && d < out->ndbs; d++) {
        uint64_t k = 0;

        if (kv_shm_db_size(srv->store, d, &k) == 0)
            out->db[d].keys = k;
        kv_shm_db_ttl_stats(srv->store, d, &out->db[d].expires, &out->db[d].avg_ttl);
        if (out->db[d].expires > out->db[d].keys) /* an estimate: never above the keys */
            out->db[d].expires = out->db[d].keys;
    }

    t->connections_received = out->mem.stat[KV_STAT_CONNS_ACCEPTED];
    t->connections_rejected = out->mem.stat[KV_STAT_CONNS_REJECTED];
    /* the handlers' requests (binary and RESP) and the RESP commands the IO
     * thread answers itself (PING, INFO, CONFIG, ...), as Redis counts every
     * command it runs */
    t->commands = out->mem.stat[KV_STAT_REQUESTS] + kv_server_resp_local_calls();
    t->net_in = out->mem.stat[KV_STAT_BYTES_IN];
    t->net_out = out->mem.stat[KV_STAT_BYTES_OUT];
    t->hits = out->store.hits;
    t->misses = out->store.misses;
    t->expired = out->store.expired;
    t->evicted = out->store.evictions;
    pthread_mutex_lock(&srv->stats_base.lock);
    counters_sub(t, &srv->stats_base.at_reset, &out->since_reset);
    pthread_mutex_unlock(&srv->stats_base.lock);

    out->now_us = wall_us();
    out->uptime_s = (out->now_us - srv->stats_base.started_us) / 1000000;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        out->cpu_user = tv_s(ru.ru_utime);
        out->cpu_sys = tv_s(ru.ru_stime);
    }
    if (getrusage(RUSAGE_CHILDREN, &ru) == 0) {
        out->cpu_user_children = tv_s(ru.ru_utime);
        out->cpu_sys_children = tv_s(ru.ru_stime);
    }
    out->rss_bytes = rss_bytes();
    out->last_save = kv_server_last_save(srv, &out->save_running, &out->save_ok);
}

void kv_server_stats_reset(struct kv_server *srv)
{
    struct kv_server_stats *st = kv_mem_alloc(KV_MOD_SERVER, sizeof(*st));

    if (!st)
        return;
    kv_server_resp_cmdstats_reset(); /* first: the baseline holds none of its calls */
    kv_server_stats_collect(srv, st);
    pthread_mutex_lock(&srv->stats_base.lock);
    srv->stats_base.at_reset = st->total;
    pthread_mutex_unlock(&srv->stats_base.lock);
    kv_mem_free(KV_MOD_SERVER, st);
}

/* ---- INFO --------------------------------------------------------------------------- */
static const struct {
    const char *name;
    unsigned bits;
} info_names[] = {
    {"server", KV_INFO_SERVER},         {"clients", KV_INFO_CLIENTS},
    {"memory", KV_INFO_MEMORY},         {"persistence", KV_INFO_PERSISTENCE},
    {"stats", KV_INFO_STATS},           {"replication", KV_INFO_REPLICATION},
    {"cpu", KV_INFO_CPU},               {"modules", KV_INFO_MODULES},
    {"commandstats", KV_INFO_COMMANDSTATS}, {"errorstats", KV_INFO_ERRORSTATS},
    {"cluster", KV_INFO_CLUSTER},       {"keyspace", KV_INFO_KEYSPACE},
    {"default", KV_INFO_DEFAULT},       {"all", KV_INFO_ALL},
    {"everything", KV_INFO_ALL},
};

unsigned kv_server_info_sections(size_t argc, const char *const *argv, const size_t *lens)
{
    unsigned bits = 0;

    if (argc == 0)
        return KV_INFO_DEFAULT;
    for (size_t i = 0; i < argc; i++)
        for (size_t k = 0; k < sizeof(info_names) / sizeof(info_names[0]); k++)
            if (strlen(info_names[k].name) == lens[i] &&
                strncasecmp(info_names[k].name, argv[i], lens[i]) == 0)
                bits |= info_names[k].bits;
    return bits;
}

/* "1.50M": Redis's *_human figures. */
static const char *human(uint64_t n, char *buf, size_t cap)
{
    static const char units[] = "BKMGTP";
    double d = (double)n;
    int u = 0;

    while (d >= 1024 && u < 5) {
        d /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%lluB", (unsigned long long)n);
    else
        snprintf(buf, cap, "%.2f%c", d, units[u]);
    return buf;
}

/* The keyspace section: one line per database that holds keys (Redis omits
 * empty ones). A new database source fills st->db[]; this stays as is. */
static size_t info_keyspace(const struct kv_server_stats *st, char *buf, size_t cap, size_t len)
{
    for (unsigned i = 0; i < st->ndbs && i < KV_SERVER_MAX_DBS; i++)
        if (st->db[i].keys)
            len = kv_mem_appendf(buf, cap, len, "db%u:keys=%llu,expires=%llu,avg_ttl=%llu\r\n", i,
                                 (unsigned long long)st->db[i].keys,
                                 (unsigned long long)st->db[i].expires,
                                 (unsigned long long)st->db[i].avg_ttl);
    return len;
}

/* Writes the title of a section INFO was asked for; 0 when it was not. */
static int section(unsigned sections, unsigned bit, const char *title, char *buf, size_t cap,
                   size_t *len, int *first)
{
    if (!(sections & bit))
        return 0;
    *len = kv_mem_appendf(buf, cap, *len, "%s# %s\r\n", *first ? "" : "\r\n", title);
    *first = 0;
    return 1;
}

size_t kv_server_info_format(struct kv_server *srv, const struct kv_server_stats *st,
                             unsigned sections, char *buf, size_t cap)
{
    const struct kv_config *cfg = srv->cfg;
    const struct kv_server_counters *c = &st->since_reset;
    size_t len = 0;
    char h1[32], h2[32], h3[32];
    int first = 1;

    if (cap)
        buf[0] = '\0';
    if (section(sections, KV_INFO_SERVER, "Server", buf, cap, &len, &first)) {
        struct utsname u;
        char exe[512];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

        exe[n > 0 ? n : 0] = '\0';
        if (uname(&u) != 0)
            memset(&u, 0, sizeof(u));
        len = kv_mem_appendf(
            buf, cap, len,
            "redis_version:7.0.0\r\nlibevkv_version:%s\r\nredis_git_sha1:00000000\r\n"
            "redis_git_dirty:0\r\nredis_mode:standalone\r\nos:%s %s %s\r\narch_bits:%d\r\n"
            "multiplexing_api:libev\r\nprocess_id:%d\r\nprocess_supervised:no\r\nrun_id:%s\r\n"
            "tcp_port:%u\r\nserver_time_usec:%lld\r\nuptime_in_seconds:%lld\r\n"
            "uptime_in_days:%lld\r\nhz:10\r\nconfigured_hz:10\r\nexecutable:%s\r\n"
            "config_file:\r\nio_threads_active:%d\r\n",
            KV_VERSION, u.sysname, u.release, u.machine, (int)(sizeof(void *) * 8), (int)getpid(),
            srv->stats_base.run_id, srv->io ? kv_io_port(srv->io) : cfg->port,
            (long long)st->now_us, (long long)st->uptime_s, (long long)(st->uptime_s / 86400), exe,
            cfg->io_threads > 1);
    }
    if (section(sections, KV_INFO_CLIENTS, "Clients", buf, cap, &len, &first)) {
        len = kv_mem_appendf(buf, cap, len,
                             "connected_clients:%u\r\nmaxclients:%u\r\nblocked_clients:0\r\n"
                             "tracking_clients:0\r\nconnected_clients_unix:%u\r\n"
                             "shm_attached_clients:%u\r\n",
                             st->clients_tcp + st->clients_unix, cfg->max_conns, st->clients_unix,
                             st->clients_shm);
    }
    if (section(sections, KV_INFO_MEMORY, "Memory", buf, cap, &len, &first)) {
        uint64_t used = (uint64_t)(st->heap_bytes > 0 ? st->heap_bytes : 0) + st->store.bytes_used;

        len = kv_mem_appendf(
            buf, cap, len,
            "used_memory:%llu\r\nused_memory_human:%s\r\nused_memory_rss:%llu\r\n"
            "used_memory_rss_human:%s\r\nused_memory_heap:%lld\r\nused_memory_store:%llu\r\n"
            "store_bytes_free:%llu\r\nstore_huge_page_bytes:%llu\r\nstore_size:%zu\r\n"
            "maxmemory:%zu\r\n"
            "maxmemory_human:%s\r\nmaxmemory_policy:%s\r\nmaxmemory_clients:%zu\r\n"
            "client_memory:%llu\r\nmem_allocator:libc\r\n",
            (unsigned long long)used, human(used, h1, sizeof(h1)),
            (unsigned long long)st->rss_bytes, human(st->rss_bytes, h2, sizeof(h2)),
            (long long)st->heap_bytes, (unsigned long long)st->store.bytes_used,
            (unsigned long long)st->store.bytes_free, (unsigned long long)st->store.huge_bytes,
            cfg->memory, __atomic_load_n(&cfg->maxmemory, __ATOMIC_RELAXED),
            human(__atomic_load_n(&cfg->maxmemory, __ATOMIC_RELAXED), h3, sizeof(h3)),
            cfg->eviction == KV_EVICT_LRU ? "allkeys-lru" : "noeviction",
            kv_config_client_budget(cfg),
            (unsigned long long)st->mem.stat[KV_STAT_CLIENT_MEMORY]);
    }
    if (section(sections, KV_INFO_PERSISTENCE, "Persistence", buf, cap, &len, &first)) {
        len = kv_mem_appendf(buf, cap, len,
                             "loading:0\r\nasync_loading:0\r\nrdb_bgsave_in_progress:%d\r\n"
                             "rdb_last_save_time:%lld\r\nrdb_last_bgsave_status:%s\r\n"
                             "aof_enabled:0\r\naof_rewrite_in_progress:0\r\n"
                             "store_generation:%llu\r\nstore_recovered:%d\r\n",
                             st->save_running, (long long)st->last_save,
                             st->save_ok ? "ok" : "err", (unsigned long long)st->store.generation,
                             st->store.recovered);
        /* --sync (README, "Power loss"): a write acknowledged before syncs_started was
         * read is on disk once sync_last_ok exceeds that number */
        len = kv_mem_appendf(buf, cap, len,
                             "sync_policy:%s\r\nsyncs_started:%llu\r\nsyncs_completed:%llu\r\n"
                             "sync_last_ok:%llu\r\nsync_errors:%llu\r\n",
                             (const char *const[]){"no", "everysec", "always"}[st->sync.policy % 3],
                             (unsigned long long)st->sync.started,
                             (unsigned long long)st->sync.completed,
                             (unsigned long long)st->sync.last_ok,
                             (unsigned long long)st->sync.errors);
    }
    if (section(sections, KV_INFO_STATS, "Stats", buf, cap, &len, &first)) {
        len = kv_mem_appendf(
            buf, cap, len,
            "total_connections_received:%llu\r\ntotal_commands_processed:%llu\r\n"
            "total_net_input_bytes:%llu\r\ntotal_net_output_bytes:%llu\r\n"
            "rejected_connections:%llu\r\nexpired_keys:%llu\r\nevicted_keys:%llu\r\n"
            "keyspace_hits:%llu\r\nkeyspace_misses:%llu\r\npubsub_channels:0\r\n"
            "pubsub_patterns:0\r\nauth_failures:%llu\r\n",
            (unsigned long long)c->connections_received, (unsigned long long)c->commands,
            (unsigned long long)c->net_in, (unsigned long long)c->net_out,
            (unsigned long long)c->connections_rejected, (unsigned long long)c->expired,
            (unsigned long long)c->evicted, (unsigned long long)c->hits,
            (unsigned long long)c->misses,
            (unsigned long long)st->mem.stat[KV_STAT_AUTH_FAILURES]);
    }
    if (section(sections, KV_INFO_REPLICATION, "Replication", buf, cap, &len, &first)) {
        len = kv_mem_appendf(buf, cap, len,
                             "role:master\r\nconnected_slaves:0\r\nmaster_failover_state:"
                             "no-failover\r\nmaster_replid:%s\r\nmaster_replid2:"
                             "0000000000000000000000000000000000000000\r\nmaster_repl_offset:0\r\n"
                             "second_repl_offset:-1\r\nrepl_backlog_active:0\r\n"
                             "repl_backlog_size:0\r\n",
                             srv->stats_base.run_id);
    }
    if (section(sections, KV_INFO_CPU, "CPU", buf, cap, &len, &first)) {
        len = kv_mem_appendf(buf, cap, len,
                             "used_cpu_sys:%.6f\r\nused_cpu_user:%.6f\r\n"
                             "used_cpu_sys_children:%.6f\r\nused_cpu_user_children:%.6f\r\n",
                             st->cpu_sys, st->cpu_user, st->cpu_sys_children,
                             st->cpu_user_children);
    }
    if (section(sections, KV_INFO_MODULES, "Modules", buf, cap, &len, &first)) {
    }
    if (section(sections, KV_INFO_COMMANDSTATS, "Commandstats", buf, cap, &len, &first)) {
        len = kv_server_resp_cmdstats(buf, cap, len);
    }
    if (section(sections, KV_INFO_ERRORSTATS, "Errorstats", buf, cap, &len, &first)) {
    }
    if (section(sections, KV_INFO_CLUSTER, "Cluster", buf, cap, &len, &first)) {
        len = kv_mem_appendf(buf, cap, len, "cluster_enabled:0\r\n");
    }
    if (section(sections, KV_INFO_KEYSPACE, "Keyspace", buf, cap, &len, &first)) {
        len = info_keyspace(st, buf, cap, len);
    }
    return len;
}
