/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* tests/torture.c -- crash torture for libevkv: kill -9 under load, restart, and prove
 * that no acknowledged write is lost and no value is torn (issue 6), also while the store
 * evicts, moves pages between size classes and applies MSETs (issue 13).
 *
 * Jepsen-style: writer threads (one kv_client each) drive a real bin/libevkv over
 * loopback with SET / MSET / DEL / INCR, plus a few GETs that check read-your-writes,
 * and record for every key what was acknowledged and what was still in flight. The
 * server is then killed at a random moment -- SIGKILL under load, SIGKILL again while
 * the restarted server recovers, or SIGTERM followed shortly by SIGKILL -- restarted on
 * the same shared-memory segment, and every key is read back and checked:
 *   - an acknowledged write is readable byte-exact unless a later acknowledged write of
 *     the same key superseded it (each writer owns its keys: "later" is program order);
 *   - a write in flight at the kill shows the old or the new value and nothing else;
 *   - an MSET, and an EXEC of SETs, is all or nothing: one in flight at the kill leaves its
 *     keys all old or all
 *     new, one refused (OUT_OF_MEMORY) changes none of them;
 *   - with --eviction lru a key may be absent (evicted), but a value present is exactly
 *     what the two rules above allow -- never an older acknowledged one (stale), never torn
 *     -- and the checker never sees more keys vanish than the server counts evictions;
 *   - an acknowledged DEL leaves the key absent;
 *   - a shared INCR counter lies between base + acknowledged deltas and that plus the
 *     deltas that were in flight (all deltas are positive);
 *   - values are self-verifying (key hash, writer, sequence, length, crc32 of the rest),
 *     so a torn or misplaced value is told apart from a stale whole one;
 *   - a RENAME is never half done: a renamer thread moves NREN keys back and forth between
 *     two names each ("...:a" <-> "...:b"); after the restart each is found under exactly
 *     one of its names (the acknowledged one, either when the kill caught a RENAME in
 *     flight) with its whole value -- never under both, never under neither (but for an
 *     eviction, with --eviction lru);
 *   - the server answers PING within --recovery-limit seconds of the restart.
 * Cycles chain on one segment: what is read back is the base of the next cycle. The
 * server is always killed and reaped, and the segment unlinked, at exit (atexit and
 * signal handlers). --pressure makes the store small and the values of every size class up
 * to 1 MiB, with more DELs, so that compaction (page moves) and, under LRU, eviction across
 * classes run during every cycle. Exit code: 0 all good; 1 something lost, stale, torn,
 * split or not recovered (or an LRU run that evicted nothing); 2 bad usage or setup;
 * 3 --max-time exceeded. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "kv.pb-c.h"
#include "kv_call.h"
#include "kv_client.h"
#include "kv_err.h"

enum {
    HDR_LEN = 46,               /* "T1w..s............l........k........h........|" */
    HDR_HPOS = 37,              /* the crc covers header[0..HDR_HPOS) and the filler */
    NCTR = 8,                   /* shared INCR counters */
    MAXC = 4,                   /* candidate values per key (acked + in flight) */
    HIST = 8,                   /* recent operations kept per key for the report */
    NLARGE = 4,                 /* keys per writer that may get large values */
    MSET_MAX = 8,               /* pairs per MSET */
    MSET_VMAX = 4096,           /* largest MSET value */
    MSET_VMAX_PRESSURE = 65536, /* ... under --pressure: MSETs hold large items too */
    EVICT_SLACK = 8,            /* evictions a kill may leave uncounted (one per server thread) */
    DEL_MAX = 3,                /* keys per DEL */
    FILL_W = 0xff,              /* writer id of the prefill values */
    FILL_BATCH = 128,           /* pairs per prefill MSET */
    SAMPLE = 256,               /* prefill keys checked per cycle */
    MAX_SIZES = 8,
    MAX_WRITERS = 64,
    MAX_SERVER_ARGS = 16,
    MAX_REPORT = 20, /* bad keys printed per cycle */
    IO_TIMEOUT_MS = 20000,
    NREN = 16, /* keys the renamer moves between two names */
};

/* A key the renamer moves between two names; its value never changes. */
struct ren {
    unsigned where;  /* 0: under name a, 1: under b, as last acknowledged */
    bool inflight;   /* a RENAME of it was in flight at the kill */
};

enum op { OP_SET, OP_MSET, OP_DEL, OP_INCR, OP_GET, OP_EVICTED };
static const char *const op_names[] = {"SET", "MSET", "DEL", "INCR", "GET", "EVICTED"};
enum outcome { ACKED, REFUSED, INFLIGHT };
static const char *const outcome_names[] = {"acked", "refused", "in-flight"};
enum inject { INJECT_NONE, INJECT_LOSS, INJECT_TEAR, INJECT_STALE, INJECT_SPLIT, INJECT_VANISH };

/* A value a key may hold: absent, or the value written by (writer, seq) with len bytes. */
struct cand {
    uint64_t seq;
    uint32_t len;
    uint8_t absent;
};

struct hist {
    uint64_t seq;
    uint32_t len;
    uint32_t cycle;
    uint8_t op, outcome;
};

struct tkey {
    char *name; /* owned */
    size_t klen;
    uint32_t khash;
    unsigned wid;
    unsigned ncand; /* cand[0..ncand): what the key may hold now */
    struct cand cand[MAXC];
    unsigned hn; /* operations recorded; h[] is a ring of the last HIST */
    struct hist h[HIST];
    uint8_t bad;    /* the last check failed on this key */
    uint8_t either; /* ... or read a value that equals more than one candidate */
};

/* An MSET in flight at the kill: after the restart its keys must be all old or all new. */
struct group {
    uint64_t seq;
    unsigned n;
    struct tkey *k[MSET_MAX]; /* borrowed: run->keys */
};

struct opts {
    unsigned cycles, writers, keys, prefill_pct;
    double seconds, recovery_limit, max_time;
    size_t sizes[MAX_SIZES];
    unsigned nsizes;
    size_t max_value; /* 0: per segment size, clamp(size / 64, 64k, 4m) */
    uint64_t seed;
    char server[PATH_MAX];
    const char *kinds;
    const char *server_args[MAX_SERVER_ARGS];
    unsigned nserver_args;
    enum inject inject;
    bool lru;      /* --eviction lru: the server evicts, the checker allows absent keys */
    bool pressure; /* --pressure: small store, every size class, more DELs */
    bool shm;      /* --shm: every client attached to shared-memory rings (--unix socket) */
};

struct run;

struct writer {
    struct run *run; /* borrowed: outlives the writer */
    unsigned id;
    pthread_t th;
    struct tkey *keys; /* borrowed: run->keys + id * keys */
    uint64_t seq;      /* last sequence number used; grows across cycles */
    uint64_t rng;
    uint8_t *buf; /* owned: values being written */
    /* per cycle, read by the main thread after the join */
    int64_t ctr_acked[NCTR], ctr_inflight[NCTR];
    uint64_t acked, refused, inflight, live_bad, mset_refused;
    uint64_t execs; /* EXECs acknowledged */
    struct group grp; /* the MSET in flight at the kill, if has_grp */
    bool has_grp;
    int connect_failed;
    char live_msg[256];
};

/* Per segment size: restarts and their time to the first PING. */
struct size_stats {
    size_t size;
    double *rec_ms; /* owned */
    unsigned nrec;
    uint64_t max_kept;
};

struct run {
    struct opts o;
    size_t memory, max_value, max_body, mset_vmax;
    uint16_t port;
    atomic_int stop;
    atomic_uint connected; /* writers that tried to connect this cycle */
    unsigned cycle;        /* 1-based, within the current size */
    struct writer w[MAX_WRITERS];
    struct tkey *keys; /* owned: writers * keys */
    char ctr_name[NCTR][32];
    int64_t ctr_base[NCTR], ctr_acked[NCTR], ctr_inflight[NCTR];
    unsigned nfill;
    uint8_t *fill_gone; /* owned: nfill flags, prefill keys seen evicted (LRU) */
    uint64_t rng;
    uint8_t *scratch; /* owned: expected values for the checks */
    uint64_t last_gen;
    int64_t store_size;
    off_t log_off; /* log size when the server was last spawned */
    double spawn_t;
    int exit_status; /* of the last reaped server */
    /* the store's figures at the last restart */
    long long rec_kept, rec_dropped, corrupt;
    int recovered; /* the last restart found the segment not closed cleanly */
    double rec_store_ms;
    uint64_t srv_evictions; /* the server's STATS evictions (since the segment's creation) */
    uint64_t seen_evicted;  /* keys the checks found absent by eviction, this segment */
    struct group inj_grp;   /* --inject split-mset: the group stored half, if has_inj_grp */
    bool has_inj_grp;
    struct ren ren[NREN];
    bool ren_ready;        /* the NREN keys were stored (by the first renamer) */
    pthread_t ren_th;
    uint64_t ren_acked, ren_inflight, ren_checked, ren_bad; /* totals */
    uint64_t ren_cycle_acked;
    /* totals */
    unsigned cycles_run, server_failures, warnings, not_exercised;
    uint64_t ops_acked, ops_inflight, ops_refused, lost, torn, live_bad, stale, split;
    uint64_t evicted_seen, evictions_total, mset_refused, groups, groups_old, groups_new;
    uint64_t execs; /* EXECs acknowledged (their keys are checked as MSETs' are) */
    uint64_t groups_split;
    struct size_stats ss[MAX_SIZES];
};

/* ---- cleanup: the server never outlives the tool, nor the segment the run ------------ */

static volatile pid_t g_server_pid;
static char g_shm_name[64];
static char g_unix_path[108]; /* --shm: the server's unix socket */
static char g_log_path[128];
static volatile sig_atomic_t g_keep_log;

static void cleanup_server(void)
{
    pid_t pid = g_server_pid;

    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        g_server_pid = 0;
    }
    if (g_shm_name[0])
        shm_unlink(g_shm_name);
    if (g_unix_path[0])
        unlink(g_unix_path);
}

static void cleanup_at_exit(void)
{
    cleanup_server();
    if (!g_keep_log && g_log_path[0])
        unlink(g_log_path);
}

static void on_fatal_signal(int sig)
{
    cleanup_server();
    if (!g_keep_log && g_log_path[0])
        unlink(g_log_path);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void on_alarm(int sig)
{
    static const char msg[] = "torture: --max-time exceeded; server killed, giving up\n";

    if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
        /* nothing more to do */
    }
    cleanup_server();
    _exit(3);
}

static void install_cleanup(void)
{
    static const int fatal[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGSEGV,
                                SIGBUS, SIGABRT, SIGFPE, SIGILL};

    atexit(cleanup_at_exit);
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
        signal(fatal[i], on_fatal_signal);
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);
}

/* ---- small helpers -------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint64_t rnd(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rnd_unit(uint64_t *s)
{
    return (double)(rnd(s) >> 11) / 9007199254740992.0;
}

static uint32_t crc(uint32_t c, const void *p, size_t n)
{
    const uint8_t *b = p;

    while (n > 0) { /* zlib takes uInt lengths */
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;

        c = (uint32_t)crc32(c, b, chunk);
        b += chunk;
        n -= chunk;
    }
    return c;
}

static int parse_size(const char *s, size_t *out)
{
    char *end;
    unsigned long long v;
    unsigned shift = 0;

    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno)
        return -1;
    switch (*end) {
    case '\0': break;
    case 'k':
    case 'K':
        shift = 10;
        end++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        end++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        end++;
        break;
    default: return -1;
    }
    if (*end != '\0' || v > (SIZE_MAX >> shift))
        return -1;
    *out = (size_t)(v << shift);
    return 0;
}

static const char *fmt_size(size_t v, char *buf, size_t cap)
{
    if (v && v % (1u << 30) == 0)
        snprintf(buf, cap, "%zug", v >> 30);
    else if (v && v % (1u << 20) == 0)
        snprintf(buf, cap, "%zum", v >> 20);
    else if (v && v % 1024 == 0)
        snprintf(buf, cap, "%zuk", v >> 10);
    else
        snprintf(buf, cap, "%zu", v);
    return buf;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

/* ---- self-verifying values -------------------------------------------------------------
 * A value of len >= HDR_LEN bytes is a text header naming the writer, the sequence number,
 * the length, the key (crc32 of its name) and the crc32 of the header's first HDR_HPOS bytes
 * followed by the rest, then pseudo-random filler drawn from those same fields and the run's
 * seed. A shorter value is the first len bytes of such a header: it cannot check itself, but
 * it is still compared byte for byte against what was written. */

static void value_gen(uint8_t *dst, uint64_t run_seed, uint32_t khash, unsigned w, uint64_t seq,
                      uint32_t len)
{
    char hdr[HDR_LEN + 1];
    uint64_t s = run_seed ^ ((uint64_t)khash << 32) ^ ((uint64_t)w << 24) ^ (seq * 0x2545f491u);
    uint32_t h;

    if (len == 0)
        return;
    if (len > HDR_LEN) {
        uint8_t *p = dst + HDR_LEN, *end = dst + len;

        while (end - p >= 8) {
            uint64_t x = rnd(&s);

            memcpy(p, &x, 8);
            p += 8;
        }
        if (p < end) {
            uint64_t x = rnd(&s);

            memcpy(p, &x, (size_t)(end - p));
        }
    }
    snprintf(hdr, sizeof(hdr), "T1w%02xs%012llxl%08xk%08xh", w & 0xffu,
             (unsigned long long)(seq & 0xffffffffffffull), len, khash);
    h = crc(0, hdr, HDR_HPOS);
    if (len > HDR_LEN)
        h = crc(h, dst + HDR_LEN, len - HDR_LEN);
    snprintf(hdr + HDR_HPOS, sizeof(hdr) - HDR_HPOS, "%08x|", h);
    memcpy(dst, hdr, len < HDR_LEN ? len : HDR_LEN);
}

/* Whether v is a whole value (header and crc intact); fills the fields it names. */
static bool value_parse(const uint8_t *v, size_t len, unsigned *w, uint64_t *seq, uint32_t *vlen,
                        uint32_t *khash)
{
    char hdr[HDR_LEN + 1];
    unsigned long long s;
    unsigned ww, l, k, h;

    if (len < HDR_LEN)
        return false;
    memcpy(hdr, v, HDR_LEN);
    hdr[HDR_LEN] = '\0';
    if (sscanf(hdr, "T1w%2xs%12llxl%8xk%8xh%8x|", &ww, &s, &l, &k, &h) != 5 || hdr[45] != '|')
        return false;
    if (l != len || crc(crc(0, hdr, HDR_HPOS), v + HDR_LEN, len - HDR_LEN) != h)
        return false;
    *w = ww;
    *seq = s;
    *vlen = l;
    *khash = k;
    return true;
}

/* ---- the model: what each key may hold ---------------------------------------------- */

static void key_record(struct tkey *k, enum op op, uint64_t seq, uint32_t len, enum outcome o,
                       unsigned cycle)
{
    struct hist *h = &k->h[k->hn++ % HIST];

    h->op = (uint8_t)op;
    h->seq = seq;
    h->len = len;
    h->outcome = (uint8_t)o;
    h->cycle = cycle;
}

/* Applies a write's outcome: acked replaces every candidate, in flight adds one. */
static void key_apply(struct tkey *k, enum op op, uint64_t seq, uint32_t len, enum outcome o,
                      unsigned cycle)
{
    struct cand c = {.seq = seq, .len = len, .absent = op == OP_DEL};

    key_record(k, op, seq, op == OP_DEL ? 0 : len, o, cycle);
    if (o == ACKED) {
        k->ncand = 1;
        k->cand[0] = c;
    } else if (o == INFLIGHT) {
        if (k->ncand == MAXC) { /* a writer stops after its first op in flight */
            fprintf(stderr, "torture: internal: too many candidates for one key\n");
            exit(2);
        }
        k->cand[k->ncand++] = c;
    }
}

static void key_reset(struct tkey *k)
{
    k->ncand = 1;
    k->cand[0] = (struct cand){.absent = 1};
    k->hn = 0;
}

/* ---- the server process ----------------------------------------------------------------- */

static uint16_t free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    uint16_t port = 0;

    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static off_t log_size(void)
{
    struct stat st;

    return stat(g_log_path, &st) == 0 ? st.st_size : 0;
}

/* The server's log since it was last spawned (malloc'd, NUL-terminated; NULL if none). */
static char *log_since(off_t off)
{
    int fd = open(g_log_path, O_RDONLY);
    off_t end;
    char *buf;
    ssize_t n;

    if (fd < 0)
        return NULL;
    end = lseek(fd, 0, SEEK_END);
    if (end < off)
        off = 0;
    if (end - off > (1 << 20))
        off = end - (1 << 20);
    buf = malloc((size_t)(end - off) + 1);
    n = buf ? pread(fd, buf, (size_t)(end - off), off) : -1;
    close(fd);
    if (n < 0) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static void log_tail(const struct run *r)
{
    char *s = log_since(r->log_off), *p;
    int lines = 0;

    if (!s)
        return;
    p = s + strlen(s);
    while (p > s && lines < 15)
        if (*--p == '\n')
            lines++;
    fprintf(stdout, "---- server log (%s) since the last start, tail:\n%s%s", g_log_path, p,
            *p && p[strlen(p) - 1] != '\n' ? "\n" : "");
    free(s);
}

/* A client of the server under test: over TCP, or with --shm over its unix socket and
 * attached to shared-memory rings (issue 15). */
static int tconnect(struct run *r, int timeout_ms, struct kv_client **out)
{
    int rc;

    if (!r->o.shm)
        return kv_client_connect("127.0.0.1", r->port, timeout_ms, out);
    rc = kv_client_connect_unix(g_unix_path, timeout_ms, out);
    if (rc == 0 && (rc = kv_client_attach(*out, 0, 0)) != 0)
        kv_client_close(*out);
    return rc;
}

static int server_spawn(struct run *r)
{
    char port[16], mem[32], body[32];
    const char *argv[16 + MAX_SERVER_ARGS];
    int argc = 0;
    pid_t pid;

    snprintf(port, sizeof(port), "%u", r->port);
    snprintf(mem, sizeof(mem), "%zu", r->memory);
    snprintf(body, sizeof(body), "%zu", r->max_body);
    argv[argc++] = r->o.server;
    argv[argc++] = "--bind";
    argv[argc++] = "127.0.0.1";
    argv[argc++] = "--port";
    argv[argc++] = port;
    argv[argc++] = "--shm-name";
    argv[argc++] = g_shm_name;
    argv[argc++] = "--memory";
    argv[argc++] = mem;
    argv[argc++] = "--max-body";
    argv[argc++] = body;
    argv[argc++] = "--eviction";
    argv[argc++] = r->o.lru ? "lru" : "none";
    if (r->o.shm) {
        argv[argc++] = "--unix";
        argv[argc++] = g_unix_path;
    }
    for (unsigned i = 0; i < r->o.nserver_args; i++)
        argv[argc++] = r->o.server_args[i];
    argv[argc] = NULL;
    r->log_off = log_size();
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(g_log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);

        prctl(PR_SET_PDEATHSIG, SIGKILL); /* even a SIGKILLed tool leaves no server behind */
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        execv(r->o.server, (char *const *)argv);
        _exit(127);
    }
    g_server_pid = pid;
    r->spawn_t = now_s();
    return 0;
}

static bool server_alive(struct run *r)
{
    int st;
    pid_t pid = g_server_pid;

    if (pid <= 0)
        return false;
    if (waitpid(pid, &st, WNOHANG) == pid) {
        g_server_pid = 0;
        r->exit_status = st;
        return false;
    }
    return true;
}

/* Sends sig; for SIGTERM waits up to grace_s for the exit before SIGKILL, and *waited_s
 * (may be NULL) gets the time between the two signals. Reaps. Returns true when the server
 * exited by itself (after SIGTERM) rather than by SIGKILL. */
static bool server_kill(struct run *r, int sig, double grace_s, double *waited_s)
{
    pid_t pid = g_server_pid;
    double t0 = now_s();
    int st = 0;

    if (pid <= 0)
        return true;
    kill(pid, sig);
    if (sig != SIGKILL) {
        double until = t0 + grace_s;

        while (now_s() < until) {
            if (waitpid(pid, &st, WNOHANG) == pid) {
                g_server_pid = 0;
                r->exit_status = st;
                return true;
            }
            sleep_s(0.0002);
        }
        kill(pid, SIGKILL);
        if (waited_s)
            *waited_s = now_s() - t0;
    }
    waitpid(pid, &st, 0);
    g_server_pid = 0;
    r->exit_status = st;
    return WIFEXITED(st);
}

static const char *status_text(int st, char *buf, size_t cap)
{
    if (WIFEXITED(st))
        snprintf(buf, cap, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, cap, "signal %d", WTERMSIG(st));
    else
        snprintf(buf, cap, "status 0x%x", st);
    return buf;
}

/* Reads the store's figures; checks that the answering server owns our segment (its
 * generation grew and its size is ours), not some other server that took the port. */
static int server_identify(struct run *r, struct kv_client *c)
{
    struct kv_stats st;
    int64_t gen = 0, size = 0, corrupt = 0, evictions = 0;
    const char *t;
    int rc = kv_client_stats(c, &st);

    if (rc != 0)
        return rc;
    kv_client_stats_find(&st, "generation", &gen);
    kv_client_stats_find(&st, "store_size", &size);
    kv_client_stats_find(&st, "corrupt_items", &corrupt);
    kv_client_stats_find(&st, "evictions", &evictions);
    r->corrupt = corrupt;
    r->srv_evictions = (uint64_t)evictions;
    r->rec_kept = r->rec_dropped = 0;
    r->rec_store_ms = 0;
    r->recovered = 0;
    t = st.text ? strstr(st.text, "store generation") : NULL;
    if (t) {
        unsigned long long g, kept, dropped;
        int recovered;
        double ms;

        if (sscanf(t, "store generation %llu, recovered %d (kept %llu, dropped %llu, %lf ms)", &g,
                   &recovered, &kept, &dropped, &ms) == 5 &&
            recovered) {
            r->recovered = 1;
            r->rec_kept = (long long)kept;
            r->rec_dropped = (long long)dropped;
            r->rec_store_ms = ms;
        }
    }
    kv_client_stats_free(&st);
    if ((uint64_t)gen <= r->last_gen || (r->store_size && size != r->store_size)) {
        printf("torture: the server on port %u is not ours (generation %lld after %llu, "
               "size %lld)\n",
               r->port, (long long)gen, (unsigned long long)r->last_gen, (long long)size);
        return KV_EPROTO;
    }
    r->last_gen = (uint64_t)gen;
    r->store_size = size;
    return 0;
}

/* Waits until the spawned server answers PING; *ms gets the time from the spawn. Retries
 * on another port when the port was taken meanwhile. 0, or -1 (logged) when the server
 * died or did not answer within the recovery limit. */
static int server_wait_ready(struct run *r, double *ms)
{
    for (int attempt = 0;; attempt++) {
        double limit = r->spawn_t + r->o.recovery_limit;

        for (;;) {
            struct kv_client *c;
            double t;

            if (!server_alive(r))
                break;
            t = now_s();
            if (t > limit) {
                printf("torture: the server did not answer PING within %.1f s of the restart\n",
                       r->o.recovery_limit);
                log_tail(r);
                return -1;
            }
            if (tconnect(r, 1000, &c) == 0) {
                int rc = kv_client_ping(c, "torture", 7);

                t = now_s();
                if (rc == 0)
                    rc = server_identify(r, c);
                kv_client_close(c);
                if (rc == 0) {
                    *ms = (t - r->spawn_t) * 1e3;
                    return 0;
                }
                if (rc == KV_EPROTO) {
                    log_tail(r);
                    return -1;
                }
            }
            sleep_s(0.0005);
        }
        /* died */
        char *log = log_since(r->log_off), st[32];
        bool port_taken = log && strstr(log, "cannot listen");

        free(log);
        if (port_taken && attempt < 3) {
            r->port = free_port();
            printf("torture: port taken meanwhile, retrying on %u\n", r->port);
            if (server_spawn(r) != 0)
                return -1;
            continue;
        }
        printf("torture: the server died while starting (%s)\n",
               status_text(r->exit_status, st, sizeof(st)));
        log_tail(r);
        return -1;
    }
}

/* ---- writers ------------------------------------------------------------------------------ */

static enum outcome outcome_of(struct writer *w, struct kv_client *c, int rc, enum op op)
{
    if (rc == 0) {
        w->acked++;
        return ACKED;
    }
    /* a full store refuses a SET, an INCR or a whole MSET and leaves every old value (an
     * MSET that filled the store midway and kept its first pairs is a failure: issue 13) */
    if (rc == KV_ESTATUS && kv_client_last_status(c) == KV_ST_OUT_OF_MEMORY &&
        (op == OP_SET || op == OP_INCR || op == OP_MSET)) {
        w->refused++;
        w->mset_refused += op == OP_MSET;
        return REFUSED;
    }
    /* a transport error or BUSY at shutdown: the write may or may not have happened */
    w->inflight++;
    return INFLIGHT;
}

static uint32_t pick_len(uint64_t *rng, bool large, size_t max_value)
{
    unsigned p = (unsigned)(rnd(rng) % 1000);
    uint64_t len;

    if (p < 40)
        len = rnd(rng) % HDR_LEN; /* short, empty included */
    else if (p < 650)
        len = HDR_LEN + rnd(rng) % 210;
    else if (p < 900)
        len = 256 + rnd(rng) % 3840;
    else if (!large)
        len = 4096 + rnd(rng) % 61440;
    else if (p < 997)
        len = 65536 + rnd(rng) % (max_value > 65536 ? max_value - 65536 + 1 : 1);
    else
        len = max_value - rnd(rng) % 64; /* near the maximum */
    return (uint32_t)(len > max_value ? max_value : len);
}

/* --pressure: sizes spread evenly over the powers of two from 32 bytes to 32 KiB, so every
 * slab class is written, and 12% large values (32 KiB .. max_value, on pages) that take
 * most of the bytes; a few short ones. */
static uint32_t pick_len_wide(uint64_t *rng, size_t max_value)
{
    unsigned top = 5, e, p = (unsigned)(rnd(rng) % 100);
    uint64_t span;

    while (top < 40 && (2ull << top) <= max_value)
        top++;
    if (p < 4)
        return (uint32_t)(rnd(rng) % HDR_LEN);
    if (p < 88 || top < 15)
        e = 5 + (unsigned)(rnd(rng) % ((top < 14 ? top : 14) - 4)); /* 32 B .. 32 KiB */
    else
        e = 15 + (unsigned)(rnd(rng) % (top - 14));
    span = e < top ? 1ull << e : max_value - (1ull << e) + 1;
    return (uint32_t)((1ull << e) + rnd(rng) % span);
}

static void live_bad(struct writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Records a wrong answer seen while the server runs; the first one is kept for the report. */
static void live_bad(struct writer *w, const char *fmt, ...)
{
    va_list ap;

    if (w->live_bad++ == 0) {
        va_start(ap, fmt);
        vsnprintf(w->live_msg, sizeof(w->live_msg), fmt, ap);
        va_end(ap);
    }
}

static enum outcome do_set(struct writer *w, struct kv_client *c)
{
    struct run *r = w->run;
    uint32_t len = r->o.pressure ? pick_len_wide(&w->rng, r->max_value)
                                 : pick_len(&w->rng, true, r->max_value);
    bool large = !r->o.pressure && len > 65536 && r->o.keys >= 2 * NLARGE;
    struct tkey *k = &w->keys[rnd(&w->rng) % (large ? NLARGE : r->o.keys)];
    uint64_t seq = ++w->seq;
    enum outcome o;

    value_gen(w->buf, r->o.seed, k->khash, w->id, seq, len);
    o = outcome_of(w, c, kv_client_set(c, k->name, k->klen, w->buf, len, NULL, NULL), OP_SET);
    key_apply(k, OP_SET, seq, len, o, r->cycle);
    return o;
}

/* n distinct key indexes of the writer into idx[]. */
static void pick_distinct(struct writer *w, unsigned n, unsigned *idx)
{
    for (unsigned i = 0; i < n; i++) {
        unsigned j;

        do {
            idx[i] = (unsigned)(rnd(&w->rng) % w->run->o.keys);
            for (j = 0; j < i && idx[j] != idx[i]; j++) {
            }
        } while (j < i);
    }
}

static enum outcome do_mset(struct writer *w, struct kv_client *c)
{
    struct run *r = w->run;
    unsigned n = 2 + (unsigned)(rnd(&w->rng) % (MSET_MAX - 1)), idx[MSET_MAX];
    struct kv_bytes keys[MSET_MAX], vals[MSET_MAX];
    uint32_t lens[MSET_MAX];
    uint64_t seq = ++w->seq;
    enum outcome o;

    if (n > r->o.keys)
        n = r->o.keys;
    pick_distinct(w, n, idx);
    for (unsigned i = 0; i < n; i++) {
        struct tkey *k = &w->keys[idx[i]];
        uint8_t *v = w->buf + (size_t)i * r->mset_vmax;

        lens[i] = r->o.pressure ? pick_len_wide(&w->rng, r->mset_vmax)
                                : pick_len(&w->rng, false, MSET_VMAX);
        value_gen(v, r->o.seed, k->khash, w->id, seq, lens[i]);
        keys[i] = (struct kv_bytes){k->name, k->klen};
        vals[i] = (struct kv_bytes){v, lens[i]};
    }
    o = outcome_of(w, c, kv_client_mset(c, keys, vals, n, 0, NULL), OP_MSET);
    for (unsigned i = 0; i < n; i++)
        key_apply(&w->keys[idx[i]], OP_MSET, seq, lens[i], o, r->cycle);
    if (o == INFLIGHT) { /* the writer stops here: no later write touches these keys */
        w->grp.seq = seq;
        w->grp.n = n;
        for (unsigned i = 0; i < n; i++)
            w->grp.k[i] = &w->keys[idx[i]];
        w->has_grp = true;
    }
    return o;
}

/* EXEC (opcode EXEC, issue 16) of a SET of each of 2..8 keys, all to values of one
 * sequence number (a generation): recorded as an MSET is, so the checks after a restart
 * hold it to the same promise -- an EXEC in flight at the kill leaves its keys all old or
 * all new, an acknowledged one is wholly there. Not under --pressure: a sub-request may
 * then fail alone (OUT_OF_MEMORY), which EXEC, like Redis, does not roll back. */
static enum outcome do_exec(struct writer *w, struct kv_client *c)
{
    struct run *r = w->run;
    unsigned n = 2 + (unsigned)(rnd(&w->rng) % (MSET_MAX - 1)), idx[MSET_MAX];
    struct kv_exec_op ops[MSET_MAX];
    struct kv_exec_result res[MSET_MAX];
    uint8_t *bodies[MSET_MAX] = {0};
    uint32_t lens[MSET_MAX];
    uint64_t seq = ++w->seq;
    enum outcome o;
    int rc = 0;
    bool aborted = false;

    if (n > r->o.keys)
        n = r->o.keys;
    pick_distinct(w, n, idx);
    for (unsigned i = 0; i < n && rc == 0; i++) {
        struct tkey *k = &w->keys[idx[i]];
        uint8_t *v = w->buf + (size_t)i * r->mset_vmax;
        Kv__SetRequest m = KV__SET_REQUEST__INIT;
        size_t len;

        lens[i] = pick_len(&w->rng, false, MSET_VMAX);
        value_gen(v, r->o.seed, k->khash, w->id, seq, lens[i]);
        m.key = (ProtobufCBinaryData){k->klen, (uint8_t *)k->name};
        m.value = (ProtobufCBinaryData){lens[i], v};
        len = kv__set_request__get_packed_size(&m);
        bodies[i] = malloc(len + 1);
        if (!bodies[i]) {
            rc = KV_ENOMEM;
            break;
        }
        kv__set_request__pack(&m, bodies[i]);
        ops[i] = (struct kv_exec_op){KV_OP_SET, bodies[i], len};
    }
    if (rc == 0)
        rc = kv_client_exec(c, ops, n, res, &aborted);
    if (rc == 0) {
        for (unsigned i = 0; i < n; i++)
            if (aborted || res[i].status != KV_ST_OK) {
                live_bad(w, "EXEC: sub-request %u answered %s", i,
                         aborted ? "aborted (nothing watched)" : kv_status_name(res[i].status));
                rc = KV_EPROTO;
            }
        kv_client_exec_free(res, n);
    }
    for (unsigned i = 0; i < n; i++)
        free(bodies[i]);
    o = outcome_of(w, c, rc, OP_MSET);
    w->execs += o == ACKED;
    for (unsigned i = 0; i < n; i++)
        key_apply(&w->keys[idx[i]], OP_MSET, seq, lens[i], o, r->cycle);
    if (o == INFLIGHT) { /* the writer stops here: no later write touches these keys */
        w->grp.seq = seq;
        w->grp.n = n;
        for (unsigned i = 0; i < n; i++)
            w->grp.k[i] = &w->keys[idx[i]];
        w->has_grp = true;
    }
    return o;
}

static enum outcome do_del(struct writer *w, struct kv_client *c)
{
    struct run *r = w->run;
    unsigned n = 1 + (unsigned)(rnd(&w->rng) % DEL_MAX), idx[DEL_MAX];
    struct kv_bytes keys[DEL_MAX];
    uint64_t seq = ++w->seq;
    enum outcome o;

    if (n > r->o.keys)
        n = r->o.keys;
    pick_distinct(w, n, idx);
    for (unsigned i = 0; i < n; i++)
        keys[i] = (struct kv_bytes){w->keys[idx[i]].name, w->keys[idx[i]].klen};
    o = outcome_of(w, c, kv_client_del(c, keys, n, NULL), OP_DEL);
    for (unsigned i = 0; i < n; i++)
        key_apply(&w->keys[idx[i]], OP_DEL, seq, 0, o, r->cycle);
    return o;
}

static enum outcome do_incr(struct writer *w, struct kv_client *c)
{
    struct run *r = w->run;
    unsigned i = (unsigned)(rnd(&w->rng) % NCTR);
    int64_t delta = 1 + (int64_t)(rnd(&w->rng) % 1000);
    int rc = kv_client_incr(c, r->ctr_name[i], strlen(r->ctr_name[i]), delta, NULL, NULL);
    enum outcome o;

    if (rc == KV_ENOTNUM) {
        live_bad(w, "INCR %s: NOT_A_NUMBER", r->ctr_name[i]);
        w->refused++;
        return REFUSED;
    }
    o = outcome_of(w, c, rc, OP_INCR);
    if (o == ACKED)
        w->ctr_acked[i] += delta;
    else if (o == INFLIGHT)
        w->ctr_inflight[i] += delta;
    return o;
}

/* Read-your-writes while the server runs: the key must hold exactly the model's value (a
 * writer stops after its first op in flight, so there is exactly one candidate). */
static enum outcome do_get(struct writer *w, struct kv_client *c)
{
    struct run *r = w->run;
    struct tkey *k = &w->keys[rnd(&w->rng) % r->o.keys];
    struct kv_value v = {0};
    const struct cand *cd = &k->cand[0];
    int rc = kv_client_get(c, k->name, k->klen, &v);

    if (rc != 0 && rc != KV_ENOTFOUND) {
        if (rc == KV_ESTATUS && kv_client_last_status(c) != KV_ST_BUSY)
            live_bad(w, "GET %.60s: status %d", k->name, kv_client_last_status(c));
        return INFLIGHT; /* stop: the connection is in doubt */
    }
    if (k->ncand != 1) {
        kv_client_value_free(&v);
        return ACKED;
    }
    if (r->o.lru && !cd->absent && rc == KV_ENOTFOUND) {
        /* evicted: allowed */
    } else if (cd->absent != (rc == KV_ENOTFOUND))
        live_bad(w, "GET %.60s: found %d, but the last write says %s", k->name, rc != KV_ENOTFOUND,
                 cd->absent ? "absent" : "present");
    else if (!cd->absent) {
        value_gen(w->buf, r->o.seed, k->khash, w->id, cd->seq, cd->len);
        if (v.len != cd->len || (v.len && memcmp(v.data, w->buf, v.len) != 0))
            live_bad(w, "GET %.60s: %zu bytes differ from the last write (%u bytes)", k->name,
                     v.len, cd->len);
    }
    kv_client_value_free(&v);
    return ACKED;
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    struct run *r = w->run;
    struct kv_client *c;

    if (tconnect(r, IO_TIMEOUT_MS, &c) != 0) {
        w->connect_failed = 1;
        atomic_fetch_add(&r->connected, 1);
        return NULL;
    }
    atomic_fetch_add(&r->connected, 1);
    while (!atomic_load(&r->stop)) {
        unsigned p = (unsigned)(rnd(&w->rng) % 100);
        bool pr = r->o.pressure; /* more DELs: freed chunks make compaction worth its while */
        enum outcome o;

        if (p < (pr ? 38u : 50u))
            o = do_set(w, c);
        else if (p < (pr ? 57u : 56u))
            o = do_mset(w, c);
        else if (p < (pr ? 57u : 62u))
            o = do_exec(w, c);
        else if (p < (pr ? 77u : 72u))
            o = do_del(w, c);
        else if (p < 93)
            o = do_incr(w, c);
        else
            o = do_get(w, c);
        if (o == INFLIGHT)
            break;
    }
    kv_client_close(c);
    return NULL;
}

/* ---- the renamer -------------------------------------------------------------------------- */

static void ren_name(unsigned i, unsigned which, char *buf, size_t cap)
{
    snprintf(buf, cap, "torture:ren:%u:%c", i, which ? 'b' : 'a');
}

/* Key i's value: 200 + 37 i bytes that say which key they belong to. */
static size_t ren_value(unsigned i, uint8_t *buf)
{
    size_t n = 200 + 37 * (size_t)i;
    for (size_t j = 0; j < n; j++)
        buf[j] = (uint8_t)(i * 131 + j * 7 + (j >> 8));
    return n;
}

static void *ren_main(void *arg)
{
    struct run *r = arg;
    struct kv_client *c;
    uint64_t rng = r->o.seed ^ 0x52454eull ^ ((uint64_t)r->cycle << 20);
    uint8_t val[200 + 37 * NREN];
    char a[64], b[64];

    if (kv_client_connect("127.0.0.1", r->port, IO_TIMEOUT_MS, &c) != 0)
        return NULL;
    if (!r->ren_ready) { /* the first cycle: every key under its name a */
        for (unsigned i = 0; i < NREN; i++) {
            size_t n = ren_value(i, val);
            ren_name(i, 0, a, sizeof(a));
            ren_name(i, 1, b, sizeof(b));
            if (kv_client_set(c, a, strlen(a), val, n, NULL, NULL) != 0 ||
                (kv_client_del1(c, b, strlen(b), NULL) != 0)) {
                kv_client_close(c);
                return NULL; /* killed before they were all stored: next cycle */
            }
            r->ren[i] = (struct ren){0};
        }
        r->ren_ready = true;
    }
    while (!atomic_load(&r->stop)) {
        unsigned i = (unsigned)(rnd(&rng) % NREN);
        struct ren *k = &r->ren[i];
        bool done = false;
        ren_name(i, k->where, a, sizeof(a));
        ren_name(i, !k->where, b, sizeof(b));
        int rc = kv_client_rename(c, a, strlen(a), b, strlen(b), 0, 0, &done);
        if (rc == 0) {
            k->where = !k->where;
            r->ren_cycle_acked++;
        } else if (rc == KV_ENOTFOUND || (rc == KV_ESTATUS &&
                                          kv_client_last_status(c) == KV_ST_OUT_OF_MEMORY)) {
            /* evicted (LRU; the check tells), or no room: nothing changed */
        } else {
            k->inflight = true; /* the kill: done or not, never half */
            r->ren_inflight++;
            break;
        }
        if (rnd(&rng) % 8 == 0)
            sleep_s(0.0002);
    }
    kv_client_close(c);
    return NULL;
}

/* After a restart: each key under exactly one name, whole. Returns the keys that were not. */
static uint64_t ren_check(struct run *r, uint64_t *evicted)
{
    struct kv_client *c;
    uint8_t want[200 + 37 * NREN];
    uint64_t bad = 0;
    char nm[2][64];

    if (!r->ren_ready)
        return 0;
    if (kv_client_connect("127.0.0.1", r->port, IO_TIMEOUT_MS, &c) != 0) {
        printf("  RENAME check: cannot connect\n");
        return 1;
    }
    for (unsigned i = 0; i < NREN; i++) {
        struct ren *k = &r->ren[i];
        struct kv_value v[2] = {{0}};
        int rc[2];
        size_t n = ren_value(i, want);
        for (unsigned w = 0; w < 2; w++) {
            ren_name(i, w, nm[w], sizeof(nm[w]));
            rc[w] = kv_client_get(c, nm[w], strlen(nm[w]), &v[w]);
        }
        unsigned found = (rc[0] == 0) + (rc[1] == 0);
        int at = rc[0] == 0 ? 0 : 1;
        const char *why = NULL;
        if ((rc[0] && rc[0] != KV_ENOTFOUND) || (rc[1] && rc[1] != KV_ENOTFOUND))
            why = "not readable";
        else if (found == 2)
            why = "under both names (a RENAME half done)";
        else if (found == 0 && !r->o.lru)
            why = "under neither name (a RENAME half done)";
        else if (found == 1 && !k->inflight && (unsigned)at != k->where)
            why = "under its old name (an acknowledged RENAME lost)";
        else if (found == 1 && (v[at].len != n || memcmp(v[at].data, want, n) != 0))
            why = "with a torn value";
        if (why) {
            bad++;
            printf("  RENAME: key %u found %s\n", i, why);
        }
        r->ren_checked++;
        if (found == 1) {
            k->where = (unsigned)at; /* the base of the next cycle */
        } else if (found == 0) { /* evicted (LRU): stored again under a */
            ++*evicted;
            kv_client_set(c, nm[0], strlen(nm[0]), want, n, NULL, NULL);
            k->where = 0;
        }
        k->inflight = false;
        kv_client_value_free(&v[0]);
        kv_client_value_free(&v[1]);
    }
    kv_client_close(c);
    return bad;
}

/* ---- checks after a restart --------------------------------------------------------------- */

struct check {
    uint64_t lost, torn, stale, split, evicted, keys;
    unsigned reported;
    int failed_io;
};

static void report_key(struct run *r, struct check *ck, const char *what, const struct tkey *k,
                       const char *observed)
{
    char line[2048];
    size_t n = 0;

    if (ck->reported++ >= MAX_REPORT)
        return;
    n += (size_t)snprintf(line + n, sizeof(line) - n,
                          "  %s %.48s%s (writer %u): read %s; allowed:", what, k->name,
                          k->klen > 48 ? "..." : "", k->wid, observed);
    for (unsigned i = 0; i < k->ncand && n < sizeof(line); i++)
        n += (size_t)snprintf(line + n, sizeof(line) - n,
                              k->cand[i].absent ? " absent" : " seq %llu/%u bytes",
                              (unsigned long long)k->cand[i].seq, k->cand[i].len);
    if (r->o.lru && n < sizeof(line))
        n += (size_t)snprintf(line + n, sizeof(line) - n, " (or absent: evicted)");
    n += (size_t)snprintf(line + n, sizeof(line) - n, "; last ops:");
    for (unsigned j = k->hn > HIST ? k->hn - HIST : 0; j < k->hn && n < sizeof(line); j++) {
        const struct hist *h = &k->h[j % HIST];

        n += (size_t)snprintf(line + n, sizeof(line) - n, " [c%u %s seq %llu %u bytes %s]",
                              h->cycle, op_names[h->op], (unsigned long long)h->seq, h->len,
                              outcome_names[h->outcome]);
    }
    printf("%s\n", line);
}

/* The write recorded in the key's history whose value the observed one equals, or NULL. */
static const struct hist *in_history(struct run *r, const struct tkey *k, const struct kv_value *v)
{
    for (unsigned j = k->hn > HIST ? k->hn - HIST : 0; j < k->hn; j++) {
        const struct hist *h = &k->h[j % HIST];

        if (h->op == OP_DEL || h->op == OP_EVICTED || h->len != v->len)
            continue;
        value_gen(r->scratch, r->o.seed, k->khash, k->wid, h->seq, h->len);
        if (v->len == 0 || memcmp(r->scratch, v->data, v->len) == 0)
            return h;
    }
    return NULL;
}

/* The key's recorded write with sequence number seq, or NULL (not in the ring). */
static const struct hist *hist_find(const struct tkey *k, uint64_t seq)
{
    for (unsigned j = k->hn > HIST ? k->hn - HIST : 0; j < k->hn; j++)
        if (k->h[j % HIST].seq == seq && k->h[j % HIST].op != OP_EVICTED)
            return &k->h[j % HIST];
    return NULL;
}

/* A value the store holds although its write was refused: half of a refused MSET (split)
 * or a refused SET kept (torn: a value the store had no right to hold). */
static void report_refused_stored(struct run *r, struct check *ck, const struct tkey *k, enum op op,
                                  const char *obs)
{
    if (op == OP_MSET) {
        ck->split++;
        report_key(r, ck, "REFUSED-MSET-STORED", k, obs);
    } else {
        ck->torn++;
        report_key(r, ck, "REFUSED-BUT-STORED", k, obs);
    }
}

static void check_key(struct run *r, struct kv_client *c, struct tkey *k, struct check *ck)
{
    struct kv_value v = {0};
    int rc = kv_client_get(c, k->name, k->klen, &v);
    bool absent = rc == KV_ENOTFOUND;
    char obs[160];
    uint64_t newest = 0;

    ck->keys++;
    k->bad = k->either = 0;
    if (rc != 0 && !absent) {
        char what[64];

        snprintf(what, sizeof(what), "GET failed: %s (status %d)", kv_strerror(rc),
                 kv_client_last_status(c));
        report_key(r, ck, "ERROR", k, what);
        k->bad = 1;
        if (rc == KV_ESTATUS)
            ck->torn++; /* the server cannot read the item back: count it as torn */
        else
            ck->failed_io = 1;
        return;
    }
    int match = -1, matches = 0;

    for (unsigned i = 0; i < k->ncand; i++) {
        const struct cand *cd = &k->cand[i];

        if (cd->seq > newest)
            newest = cd->seq;
        if (cd->absent != absent)
            continue;
        if (!absent) {
            if (cd->len != v.len)
                continue;
            value_gen(r->scratch, r->o.seed, k->khash, k->wid, cd->seq, cd->len);
            if (v.len && memcmp(r->scratch, v.data, v.len) != 0)
                continue;
        }
        matches++;
        if (match < 0)
            match = (int)i;
    }
    if (match >= 0) {
        /* a short value (a header prefix, or empty) may equal both the old and the new one:
         * then it tells nothing about an MSET it was part of */
        k->either = matches > 1;
        k->ncand = 1; /* what we read is the base of the next cycle */
        k->cand[0] = k->cand[match];
        kv_client_value_free(&v);
        return;
    }
    if (absent && r->o.lru) { /* evicted: allowed, and absent is the base of the next cycle */
        kv_client_value_free(&v);
        ck->evicted++;
        key_record(k, OP_EVICTED, 0, 0, ACKED, r->cycle);
        k->ncand = 1;
        k->cand[0] = (struct cand){.absent = 1};
        return;
    }
    /* nothing allowed matched: a lost write (absent), an older whole value (stale), a value
     * whose write was refused, or a torn one */
    unsigned ww;
    uint64_t seq;
    uint32_t vlen, kh;
    const struct hist *h;

    k->bad = 1;
    if (absent) {
        ck->lost++;
        report_key(r, ck, "LOST", k, "absent");
    } else if (value_parse(v.data, v.len, &ww, &seq, &vlen, &kh)) {
        snprintf(obs, sizeof(obs), "a whole value of writer %u seq %llu, %u bytes%s", ww,
                 (unsigned long long)seq, vlen,
                 kh != k->khash || ww != k->wid ? " BELONGING TO ANOTHER KEY" : "");
        if (kh != k->khash || ww != k->wid) {
            ck->torn++;
            report_key(r, ck, "MISPLACED", k, obs);
        } else if ((h = hist_find(k, seq)) && h->outcome == REFUSED) {
            report_refused_stored(r, ck, k, (enum op)h->op, obs);
        } else if (seq > newest) { /* newer than every write allowed, refused or gone */
            ck->torn++;
            report_key(r, ck, "UNEXPECTED", k, obs);
        } else {
            ck->stale++;
            report_key(r, ck, "STALE", k, obs);
        }
    } else if ((h = in_history(r, k, &v))) {
        snprintf(obs, sizeof(obs), "the short value of seq %llu (%zu bytes)",
                 (unsigned long long)h->seq, v.len);
        if (h->outcome == REFUSED) {
            report_refused_stored(r, ck, k, (enum op)h->op, obs);
        } else {
            ck->stale++;
            report_key(r, ck, "STALE", k, obs);
        }
    } else {
        ck->torn++;
        snprintf(obs, sizeof(obs), "%zu bytes that are no value ever written (\"%.20s\"...)", v.len,
                 v.len ? (const char *)v.data : "");
        report_key(r, ck, "TORN", k, obs);
    }
    kv_client_value_free(&v);
}

/* An MSET in flight at the kill, after its keys were checked one by one: all old or all
 * new (a key absent under LRU may have been either, then evicted). */
static void check_group(struct run *r, const struct group *g, struct check *ck)
{
    char line[1024];
    size_t n = 0;
    unsigned olds = 0, news = 0;

    for (unsigned i = 0; i < g->n; i++) {
        const struct tkey *k = g->k[i];
        const struct cand *cd = &k->cand[0]; /* what the check read */

        if (k->bad || k->either) /* already counted; or no telling old from new */
            continue;
        if (cd->absent && r->o.lru)
            continue;
        if (!cd->absent && cd->seq == g->seq)
            news++;
        else
            olds++;
    }
    r->groups++;
    if (olds && news) {
        ck->split++;
        r->groups_split++;
        n += (size_t)snprintf(line, sizeof(line),
                              "  SPLIT MSET of writer %u seq %llu: %u keys new, %u old:",
                              g->k[0]->wid, (unsigned long long)g->seq, news, olds);
        for (unsigned i = 0; i < g->n && n < sizeof(line); i++)
            n += (size_t)snprintf(line + n, sizeof(line) - n, " %.24s=%s", g->k[i]->name,
                                  g->k[i]->bad                     ? "bad"
                                  : g->k[i]->cand[0].absent        ? "absent"
                                  : g->k[i]->cand[0].seq == g->seq ? "new"
                                                                   : "old");
        if (ck->reported++ < MAX_REPORT)
            printf("%s\n", line);
    } else if (news) {
        r->groups_new++;
    } else {
        r->groups_old++;
    }
}

static void check_counters(struct run *r, struct kv_client *c, struct check *ck)
{
    for (unsigned i = 0; i < NCTR; i++) {
        struct kv_value v = {0};
        int rc = kv_client_get(c, r->ctr_name[i], strlen(r->ctr_name[i]), &v);
        int64_t lo = r->ctr_base[i] + r->ctr_acked[i], hi = lo + r->ctr_inflight[i], val = 0;
        char *end = NULL;

        ck->keys++;
        if (rc != 0 && rc != KV_ENOTFOUND) {
            printf("  ERROR counter %s: GET failed: %s\n", r->ctr_name[i], kv_strerror(rc));
            if (rc == KV_ESTATUS)
                ck->torn++;
            else
                ck->failed_io = 1;
            continue;
        }
        if (rc == 0) {
            errno = 0;
            val = strtoll((const char *)v.data, &end, 10);
            if (v.len == 0 || errno || end != (const char *)v.data + v.len) {
                ck->torn++;
                printf("  TORN counter %s: \"%.40s\" is not a number\n", r->ctr_name[i],
                       (const char *)v.data);
                kv_client_value_free(&v);
                continue;
            }
        }
        kv_client_value_free(&v);
        if (val < lo && r->o.lru && val <= r->ctr_acked[i] + r->ctr_inflight[i]) {
            /* evicted this cycle and counted again from 0: at most this cycle's deltas */
            ck->evicted++;
        } else if (val < lo) {
            ck->lost++;
            printf("  LOST counter %s: %lld, below base %lld + acknowledged %lld = %lld "
                   "(%lld lost)%s\n",
                   r->ctr_name[i], (long long)val, (long long)r->ctr_base[i],
                   (long long)r->ctr_acked[i], (long long)lo, (long long)(lo - val),
                   rc == KV_ENOTFOUND ? " (absent)" : "");
        } else if (val > hi) {
            ck->torn++;
            printf("  BAD counter %s: %lld, above base + acknowledged + in flight = %lld\n",
                   r->ctr_name[i], (long long)val, (long long)hi);
        }
        r->ctr_base[i] = val;
        r->ctr_acked[i] = r->ctr_inflight[i] = 0;
    }
}

static void fill_key(unsigned i, char *name, size_t cap, size_t *klen, uint32_t *khash,
                     uint32_t *len)
{
    *klen = (size_t)snprintf(name, cap, "t:fill:%u", i);
    *khash = crc(0, name, *klen);
    *len = 64 + (uint32_t)((i * 2654435761u) % 1500);
}

/* Checks n prefill keys (all of them when n >= nfill, else a random sample) with MGET. */
static void check_fill(struct run *r, struct kv_client *c, unsigned n, struct check *ck)
{
    enum { B = 64 };
    char names[B][32];
    struct kv_bytes keys[B];
    struct kv_value vals[B];
    unsigned idx[B], total = n >= r->nfill ? r->nfill : n;

    for (unsigned done = 0; done < total;) {
        unsigned m = total - done < B ? total - done : B;
        int rc;

        for (unsigned j = 0; j < m; j++) {
            size_t kl;
            uint32_t kh, len;

            idx[j] = n >= r->nfill ? done + j : (unsigned)(rnd(&r->rng) % r->nfill);
            fill_key(idx[j], names[j], sizeof(names[j]), &kl, &kh, &len);
            keys[j] = (struct kv_bytes){names[j], kl};
        }
        rc = kv_client_mget(c, keys, m, vals);
        if (rc != 0) {
            printf("  ERROR prefill MGET failed: %s\n", kv_strerror(rc));
            ck->failed_io = 1;
            return;
        }
        for (unsigned j = 0; j < m; j++) {
            size_t kl;
            uint32_t kh, len;

            fill_key(idx[j], names[j], sizeof(names[j]), &kl, &kh, &len);
            value_gen(r->scratch, r->o.seed, kh, FILL_W, 1, len);
            ck->keys++;
            if (!vals[j].found && r->o.lru) {
                /* evicted (never written again: counted the first time only) */
                if (!r->fill_gone[idx[j]]) {
                    r->fill_gone[idx[j]] = 1;
                    ck->evicted++;
                }
            } else if (!vals[j].found) {
                ck->lost++;
                if (ck->reported++ < MAX_REPORT)
                    printf("  LOST %s (prefill): absent\n", names[j]);
            } else if (vals[j].len != len || memcmp(vals[j].data, r->scratch, len) != 0) {
                ck->torn++;
                if (ck->reported++ < MAX_REPORT)
                    printf("  TORN %s (prefill): %zu bytes differ from the %u written\n", names[j],
                           vals[j].len, len);
            } else if (r->fill_gone[idx[j]]) {
                ck->stale++; /* evicted, yet back */
                if (ck->reported++ < MAX_REPORT)
                    printf("  STALE %s (prefill): seen evicted, now back\n", names[j]);
            }
        }
        kv_client_values_free(vals, m);
        done += m;
    }
}

/* ---- self-test injections: damage behind the model's back, to prove the check catches it */

/* Stores len bytes at k unknown to the model; a full store (--eviction none) is made room
 * in by DELs of the last writer's other quiet keys, recorded in the model. 0 or -1. */
static int inject_write(struct run *r, struct kv_client *c, const struct tkey *k,
                        const uint8_t *val, uint32_t len, const struct tkey *keep)
{
    struct writer *w = &r->w[r->o.writers - 1];

    for (unsigned j = r->o.keys; j-- > 0;) {
        struct tkey *d = &w->keys[j];

        if (kv_client_set(c, k->name, k->klen, val, len, NULL, NULL) == 0)
            return 0;
        if (kv_client_last_status(c) != KV_ST_OUT_OF_MEMORY)
            break;
        if (d == k || d == keep || d->ncand != 1 || d->cand[0].absent)
            continue;
        if (kv_client_del1(c, d->name, d->klen, NULL) != 0)
            break;
        key_apply(d, OP_DEL, ++w->seq, 0, ACKED, r->cycle);
    }
    printf("torture: the injection could not write %.48s\n", k->name);
    return -1;
}

/* An acknowledged SET of a fresh len-byte value, recorded in the model. */
static int inject_set(struct run *r, struct kv_client *c, struct tkey *k, uint32_t len,
                      const struct tkey *keep)
{
    uint64_t seq = ++r->w[k->wid].seq;

    value_gen(r->scratch, r->o.seed, k->khash, k->wid, seq, len);
    if (inject_write(r, c, k, r->scratch, len, keep) != 0)
        return -1;
    key_apply(k, OP_SET, seq, len, ACKED, r->cycle);
    return 0;
}

/* The i-th key of writer 0 that nothing is in flight for. */
static struct tkey *inject_key(struct run *r, unsigned i)
{
    for (unsigned j = 0; j < r->o.keys; j++)
        if (r->w[0].keys[j].ncand == 1 && i-- == 0)
            return &r->w[0].keys[j];
    return NULL;
}

static void inject_fault(struct run *r, struct kv_client *c)
{
    struct tkey *k = inject_key(r, 0), *k2 = inject_key(r, 1);
    enum inject what = r->o.inject;
    uint64_t seq;

    if (!k || !k2) {
        printf("torture: no quiet key to inject into\n");
        return;
    }
    if (what == INJECT_LOSS && r->o.lru) {
        printf("torture: --inject loss under --eviction lru: an absent key cannot be told from "
               "an evicted one, so the write is rolled back to an older value instead\n");
        what = INJECT_STALE;
    }
    if (inject_set(r, c, k, 100, NULL) != 0)
        return;
    switch (what) {
    case INJECT_LOSS:
        kv_client_del1(c, k->name, k->klen, NULL);
        printf("torture: injected a lost write: DEL %.48s behind the check's back\n", k->name);
        break;
    case INJECT_TEAR:
        value_gen(r->scratch, r->o.seed, k->khash, k->wid, k->cand[0].seq, 100);
        r->scratch[99] ^= 0x5a;
        if (inject_write(r, c, k, r->scratch, 100, NULL) == 0)
            printf("torture: injected a torn value: last byte of %.48s flipped\n", k->name);
        break;
    case INJECT_STALE: /* acknowledged: seq, then seq2; the store gets seq back */
        seq = k->cand[0].seq;
        if (inject_set(r, c, k, 100, NULL) != 0)
            return;
        value_gen(r->scratch, r->o.seed, k->khash, k->wid, seq, 100);
        if (inject_write(r, c, k, r->scratch, 100, NULL) == 0)
            printf("torture: injected a stale value: %.48s rolled back to seq %llu\n", k->name,
                   (unsigned long long)seq);
        break;
    case INJECT_SPLIT: /* an MSET {k, k2} recorded in flight, of which only k is stored */
        if (inject_set(r, c, k2, 100, k) != 0)
            return;
        seq = ++r->w[0].seq;
        key_apply(k, OP_MSET, seq, 120, INFLIGHT, r->cycle);
        key_apply(k2, OP_MSET, seq, 120, INFLIGHT, r->cycle);
        r->inj_grp = (struct group){.seq = seq, .n = 2, .k = {k, k2}};
        r->has_inj_grp = true;
        value_gen(r->scratch, r->o.seed, k->khash, k->wid, seq, 120);
        if (inject_write(r, c, k, r->scratch, 120, k2) == 0)
            printf("torture: injected a split MSET: of an MSET {%.24s, %.24s} recorded in flight "
                   "only the first key was stored\n",
                   k->name, k2->name);
        break;
    case INJECT_VANISH: /* more keys gone than a kill can leave uncounted by the server */
        kv_client_del1(c, k->name, k->klen, NULL);
        for (unsigned i = 1; i <= EVICT_SLACK; i++) {
            struct tkey *d = inject_key(r, i);

            if (!d || inject_set(r, c, d, 100, NULL) != 0)
                return;
            kv_client_del1(c, d->name, d->klen, NULL);
        }
        printf("torture: injected %u vanished keys: DELs behind the check's back\n",
               EVICT_SLACK + 1);
        break;
    case INJECT_NONE: break;
    }
}

/* Restarts the server and checks everything. Returns 0, or -1 when the server failed. */
static int restart_and_check(struct run *r, double *rec_ms, struct check *ck)
{
    struct kv_client *c;

    memset(ck, 0, sizeof(*ck));
    if (server_spawn(r) != 0 || server_wait_ready(r, rec_ms) != 0)
        return -1;
    if (tconnect(r, IO_TIMEOUT_MS, &c) != 0) {
        printf("torture: cannot connect to check after the restart\n");
        return -1;
    }
    r->has_inj_grp = false;
    if (r->o.inject != INJECT_NONE && r->cycle == 1)
        inject_fault(r, c);
    for (unsigned i = 0; i < r->o.writers * r->o.keys && !ck->failed_io; i++)
        check_key(r, c, &r->keys[i], ck);
    for (unsigned i = 0; i < r->o.writers && !ck->failed_io; i++)
        if (r->w[i].has_grp)
            check_group(r, &r->w[i].grp, ck);
    if (r->has_inj_grp && !ck->failed_io)
        check_group(r, &r->inj_grp, ck);
    if (!ck->failed_io)
        check_counters(r, c, ck);
    if (!ck->failed_io && r->nfill)
        check_fill(r, c, SAMPLE, ck);
    kv_client_close(c);
    if (ck->failed_io) {
        printf("torture: the server stopped answering during the check\n");
        log_tail(r);
        return -1;
    }
    return 0;
}

/* ---- cycles ------------------------------------------------------------------------------- */

static int prefill(struct run *r)
{
    size_t target = r->memory / 100 * r->o.prefill_pct, bytes = 0;
    struct kv_client *c;
    char(*names)[32] = malloc(FILL_BATCH * sizeof(*names));
    struct kv_bytes *keys = malloc(FILL_BATCH * sizeof(*keys));
    struct kv_bytes *vals = malloc(FILL_BATCH * sizeof(*vals));
    uint8_t *buf = malloc((size_t)FILL_BATCH * 1600);
    double t0 = now_s();
    int rc = 0;

    r->nfill = 0;
    if (!names || !keys || !vals || !buf ||
        tconnect(r, IO_TIMEOUT_MS, &c) != 0) {
        rc = -1;
        goto out;
    }
    while (bytes < target) {
        size_t off = 0;

        for (unsigned j = 0; j < FILL_BATCH; j++) {
            size_t kl;
            uint32_t kh, len;

            fill_key(r->nfill + j, names[j], sizeof(names[j]), &kl, &kh, &len);
            value_gen(buf + off, r->o.seed, kh, FILL_W, 1, len);
            keys[j] = (struct kv_bytes){names[j], kl};
            vals[j] = (struct kv_bytes){buf + off, len};
            off += len;
        }
        rc = kv_client_mset(c, keys, vals, FILL_BATCH, 0, NULL);
        if (rc != 0) {
            printf("torture: prefill MSET failed after %u keys: %s (status %d); lower "
                   "--prefill\n",
                   r->nfill, kv_strerror(rc), kv_client_last_status(c));
            rc = -1;
            break;
        }
        r->nfill += FILL_BATCH;
        bytes += off;
    }
    kv_client_close(c);
    if (rc == 0 && r->nfill)
        printf("prefill: %u keys, %.1f MiB of values in %.2f s\n", r->nfill,
               (double)bytes / 1048576.0, now_s() - t0);
out:
    free(names);
    free(keys);
    free(vals);
    free(buf);
    return rc;
}

static const char *kind_name(char kind)
{
    return kind == 'r' ? "kill+recovery-kill" : kind == 's' ? "term+kill" : "kill";
}

/* One cycle. Returns 0 when everything checked out, 1 when something was lost or torn or
 * the server did not come back. */
static int run_cycle(struct run *r, struct size_stats *ss, char kind)
{
    double kill_at, rec_ms = 0, t0;
    uint64_t acked = 0, inflight = 0, refused = 0, live = 0, mrefused = 0, ev0 = r->srv_evictions;
    uint64_t groups0 = r->groups;
    char extra[160] = "", sz[16], st[32], rec[96], lru[160] = "";
    struct check ck;
    int fail = 0;

    atomic_store(&r->stop, 0);
    atomic_store(&r->connected, 0);
    for (unsigned i = 0; i < r->o.writers; i++) {
        struct writer *w = &r->w[i];

        memset(w->ctr_acked, 0, sizeof(w->ctr_acked));
        memset(w->ctr_inflight, 0, sizeof(w->ctr_inflight));
        w->acked = w->refused = w->inflight = w->live_bad = w->mset_refused = 0;
        w->execs = 0;
        w->has_grp = false;
        w->connect_failed = 0;
        w->live_msg[0] = '\0';
        w->rng = r->o.seed ^ ((uint64_t)r->cycle << 32) ^ ((uint64_t)i << 16) ^ r->memory;
        if (pthread_create(&w->th, NULL, writer_main, w) != 0) {
            fprintf(stderr, "torture: cannot create a writer thread\n");
            exit(2);
        }
    }
    r->ren_cycle_acked = 0;
    if (pthread_create(&r->ren_th, NULL, ren_main, r) != 0) {
        fprintf(stderr, "torture: cannot create the renamer thread\n");
        exit(2);
    }
    /* the kill: a random moment of the cycle, counted from when every writer is connected
     * (a slow start, under ASan, must not let the kill fall before the first connect) */
    kill_at = r->o.seconds * (0.1 + 0.9 * rnd_unit(&r->rng));
    t0 = now_s();
    while (atomic_load(&r->connected) < r->o.writers && now_s() - t0 < IO_TIMEOUT_MS / 1e3 &&
           server_alive(r))
        sleep_s(0.001);
    t0 = now_s();
    while (now_s() - t0 < kill_at && server_alive(r))
        sleep_s(0.002);
    if (!server_alive(r)) {
        printf("torture: the server died under load (%s)\n",
               status_text(r->exit_status, st, sizeof(st)));
        log_tail(r);
        fail = 1;
    } else if (kind == 's') {
        /* a graceful stop takes a few ms: aim inside it mostly, sometimes after it */
        double u = rnd_unit(&r->rng), grace = rnd_unit(&r->rng) < 0.8 ? 0.004 * u * u : 0.05 * u;

        double waited = 0;

        if (server_kill(r, SIGTERM, grace, &waited))
            snprintf(extra, sizeof(extra), ", SIGTERM: exited by itself within %.0f ms (%s)",
                     grace * 1e3, status_text(r->exit_status, st, sizeof(st)));
        else
            snprintf(extra, sizeof(extra), ", SIGTERM then SIGKILL after %.2f ms", waited * 1e3);
        if (WIFEXITED(r->exit_status) && WEXITSTATUS(r->exit_status) != 0) {
            r->warnings++;
            snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra),
                     " WARNING: graceful exit code %d", WEXITSTATUS(r->exit_status));
        }
    } else {
        server_kill(r, SIGKILL, 0, NULL);
    }
    atomic_store(&r->stop, 1);
    pthread_join(r->ren_th, NULL);
    r->ren_acked += r->ren_cycle_acked;
    for (unsigned i = 0; i < r->o.writers; i++) {
        struct writer *w = &r->w[i];

        pthread_join(w->th, NULL);
        acked += w->acked;
        inflight += w->inflight;
        refused += w->refused;
        mrefused += w->mset_refused;
        r->execs += w->execs;
        live += w->live_bad;
        for (unsigned j = 0; j < NCTR; j++) {
            r->ctr_acked[j] += w->ctr_acked[j];
            r->ctr_inflight[j] += w->ctr_inflight[j];
        }
        if (w->live_bad)
            printf("  LIVE writer %u: %s (%llu such)\n", i, w->live_msg,
                   (unsigned long long)w->live_bad);
        if (w->connect_failed) {
            printf("torture: writer %u could not connect\n", i);
            fail = 1;
        }
    }
    r->ops_acked += acked;
    r->ops_inflight += inflight;
    r->ops_refused += refused;
    r->mset_refused += mrefused;
    r->live_bad += live;
    if (fail) {
        r->server_failures++;
        return 1;
    }
    /* a second kill while the restarted server recovers the segment */
    if (kind == 'r') {
        double last = ss->nrec ? ss->rec_ms[ss->nrec - 1] : 5.0;
        double delay = (last * (0.1 + 0.8 * rnd_unit(&r->rng))) / 1e3;
        char *log;

        if (delay < 0.001)
            delay = 0.001;
        if (server_spawn(r) != 0)
            return 1;
        sleep_s(delay);
        server_kill(r, SIGKILL, 0, NULL);
        log = log_since(r->log_off);
        snprintf(extra, sizeof(extra), ", recovery killed after %.1f ms (%s)", delay * 1e3,
                 log && strstr(log, "listening on") ? "already listening" : "before listening");
        free(log);
    }
    if (restart_and_check(r, &rec_ms, &ck) != 0) {
        r->server_failures++;
        return 1;
    }
    {
        uint64_t ren_evicted = 0, rb = ren_check(r, &ren_evicted);

        ck.lost += rb; /* a RENAME half done, or lost, or torn */
        r->ren_bad += rb;
        ck.evicted += ren_evicted;
        snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra),
                 "; %llu RENAMEs acked, %u keys checked%s", (unsigned long long)r->ren_cycle_acked,
                 r->ren_ready ? NREN : 0, rb ? " BAD" : "");
    }
    ss->rec_ms[ss->nrec++] = rec_ms;
    if ((uint64_t)r->rec_kept > ss->max_kept)
        ss->max_kept = (uint64_t)r->rec_kept;
    r->lost += ck.lost;
    r->torn += ck.torn;
    r->stale += ck.stale;
    r->split += ck.split;
    r->evicted_seen += ck.evicted;
    r->seen_evicted += ck.evicted;
    if (r->srv_evictions > ev0)
        r->evictions_total += r->srv_evictions - ev0;
    if (r->o.lru) {
        /* every key the checks found evicted was evicted once at least, and the server
         * counted it, but for the few a kill cut between the unlink and the count */
        uint64_t allowed = r->srv_evictions + (uint64_t)EVICT_SLACK * r->cycle;

        snprintf(lru, sizeof(lru),
                 "; evicted: %llu keys seen absent, server %llu (total %llu/%llu)",
                 (unsigned long long)ck.evicted, (unsigned long long)(r->srv_evictions - ev0),
                 (unsigned long long)r->seen_evicted, (unsigned long long)r->srv_evictions);
        if (r->seen_evicted > allowed) {
            printf("  LOST: the checks found %llu keys absent but the server evicted only %llu "
                   "(+%u per kill): some vanished without eviction\n",
                   (unsigned long long)r->seen_evicted, (unsigned long long)r->srv_evictions,
                   EVICT_SLACK);
            ck.lost += r->seen_evicted - allowed;
            r->lost += r->seen_evicted - allowed;
            r->seen_evicted = allowed;
        }
    }
    if (r->corrupt > 0) {
        printf("  the server counts %lld corrupt items\n", r->corrupt);
        r->torn += (uint64_t)r->corrupt;
        ck.torn += (uint64_t)r->corrupt;
    }
    if (r->recovered)
        snprintf(rec, sizeof(rec), "store recovery %.1f ms, kept %lld, dropped %lld",
                 r->rec_store_ms, r->rec_kept, r->rec_dropped);
    else
        snprintf(rec, sizeof(rec), "segment was closed cleanly: no recovery");
    printf("cycle %u/%u %s %s: %llu ops acked, %llu in flight, %llu refused (full; %llu MSETs); "
           "killed at %.2f s%s; up in %.1f ms (%s); checked %llu keys and %llu MSETs in flight: "
           "lost %llu, stale %llu, torn %llu, split %llu%s%s\n",
           r->cycle, r->o.cycles, fmt_size(r->memory, sz, sizeof(sz)), kind_name(kind),
           (unsigned long long)acked, (unsigned long long)inflight, (unsigned long long)refused,
           (unsigned long long)mrefused, kill_at, extra, rec_ms, rec, (unsigned long long)ck.keys,
           (unsigned long long)(r->groups - groups0), (unsigned long long)ck.lost,
           (unsigned long long)ck.stale, (unsigned long long)ck.torn, (unsigned long long)ck.split,
           lru, live ? ", LIVE MISMATCHES" : "");
    fflush(stdout);
    return ck.lost || ck.torn || ck.stale || ck.split || live ? 1 : 0;
}

/* All cycles on one segment size. Returns 0 when all went well. */
static int run_size(struct run *r, struct size_stats *ss)
{
    double ms;
    char sz[16];
    int fail = 0;

    r->memory = ss->size;
    r->max_value = r->o.max_value;
    r->mset_vmax = r->o.pressure ? MSET_VMAX_PRESSURE : MSET_VMAX;
    if (!r->max_value && r->o.pressure)
        r->max_value = 1u << 20;
    if (!r->max_value) {
        r->max_value = r->memory / 64;
        r->max_value = r->max_value < 65536        ? 65536
                       : r->max_value > (4u << 20) ? 4u << 20
                                                   : r->max_value;
    }
    r->max_body = r->max_value + 65536 > (16u << 20) ? r->max_value + 65536 : 16u << 20;
    for (unsigned i = 0; i < r->o.writers; i++) {
        free(r->w[i].buf);
        r->w[i].buf =
            malloc(r->max_value > MSET_MAX * r->mset_vmax ? r->max_value : MSET_MAX * r->mset_vmax);
        if (!r->w[i].buf)
            return -1;
    }
    free(r->scratch);
    r->scratch = malloc(r->max_value > r->mset_vmax ? r->max_value : r->mset_vmax);
    if (!r->scratch)
        return -1;
    for (unsigned i = 0; i < r->o.writers * r->o.keys; i++)
        key_reset(&r->keys[i]);
    memset(r->ctr_base, 0, sizeof(r->ctr_base));
    memset(r->ctr_acked, 0, sizeof(r->ctr_acked));
    memset(r->ctr_inflight, 0, sizeof(r->ctr_inflight));
    r->last_gen = 0;
    r->store_size = 0;
    r->nfill = 0;
    r->srv_evictions = r->seen_evicted = 0;
    shm_unlink(g_shm_name);
    r->port = free_port();
    printf("segment %s: %s on 127.0.0.1:%u, max value %s\n", g_shm_name,
           fmt_size(r->memory, sz, sizeof(sz)), r->port, fmt_size(r->max_value, (char[16]){0}, 16));
    if (server_spawn(r) != 0 || server_wait_ready(r, &ms) != 0) {
        r->server_failures++;
        return 1;
    }
    printf("fresh start: up in %.1f ms\n", ms);
    if (r->o.prefill_pct && prefill(r) != 0) {
        r->server_failures++;
        return 1;
    }
    free(r->fill_gone);
    r->fill_gone = calloc(r->nfill + 1, 1);
    if (!r->fill_gone)
        return -1;
    for (r->cycle = 1; r->cycle <= r->o.cycles; r->cycle++) {
        char kind = r->o.kinds[(r->cycle - 1) % strlen(r->o.kinds)];

        r->cycles_run++;
        if (run_cycle(r, ss, kind) != 0) {
            fail = 1;
            break;
        }
    }
    if (!fail && r->nfill) {
        struct kv_client *c;
        struct check ck = {0};

        if (tconnect(r, IO_TIMEOUT_MS, &c) == 0) {
            check_fill(r, c, r->nfill, &ck);
            kv_client_close(c);
        } else {
            ck.failed_io = 1;
        }
        printf("prefill: all %u keys checked: lost %llu, stale %llu, torn %llu\n", r->nfill,
               (unsigned long long)ck.lost, (unsigned long long)ck.stale,
               (unsigned long long)ck.torn);
        if (r->o.lru) {
            unsigned gone = 0;

            for (unsigned i = 0; i < r->nfill; i++)
                gone += r->fill_gone[i];
            printf("prefill: %u of %u keys evicted by the end\n", gone, r->nfill);
        }
        r->lost += ck.lost;
        r->torn += ck.torn;
        r->stale += ck.stale;
        r->evicted_seen += ck.evicted;
        if (ck.failed_io)
            r->server_failures++;
        fail = ck.lost || ck.torn || ck.stale || ck.failed_io;
    }
    if (!fail && r->o.lru && r->srv_evictions == 0) {
        printf("torture: --eviction lru, but the server evicted nothing (STATS evictions 0): "
               "this run did not test eviction; use --pressure or a smaller --memory\n");
        r->not_exercised++;
        fail = 1;
    }
    if (!fail && g_server_pid > 0) {
        char st[32];

        server_kill(r, SIGTERM, 30.0, NULL);
        if (!WIFEXITED(r->exit_status) || WEXITSTATUS(r->exit_status) != 0) {
            r->warnings++;
            printf("WARNING: the final graceful stop ended with %s\n",
                   status_text(r->exit_status, st, sizeof(st)));
        }
    } else {
        server_kill(r, SIGKILL, 0, NULL);
    }
    shm_unlink(g_shm_name);
    return fail;
}

/* ---- options and main --------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs(
        "usage: torture [options]\n"
        "  --cycles N           kill/restart cycles per segment size (default 10)\n"
        "  --writers N          concurrent writer connections (default 4, max 64)\n"
        "  --seconds S          load per cycle; the kill falls at a random moment (default 2)\n"
        "  --memory LIST        segment sizes, comma-separated, each run in turn (default 64m;\n"
        "                       16m with --pressure)\n"
        "  --max-value SIZE     largest value (default memory/64, within 64k..4m; 1m with\n"
        "                       --pressure)\n"
        "  --eviction none|lru  the server's policy (default none). lru: a key may be absent\n"
        "                       (evicted) although its write was acknowledged, but a value that\n"
        "                       is present must be the latest acknowledged one or one in flight,\n"
        "                       never an older one (stale) or a torn one; the checks may not\n"
        "                       find more keys absent than the server counts evictions (STATS),\n"
        "                       and a run in which the server evicted nothing fails\n"
        "  --pressure           make the store move pages: values of every size class from 0 to\n"
        "                       --max-value on every key (large ones, > 32 KiB, on pages), MSET\n"
        "                       values up to 64k, more DELs, a small store: compaction runs\n"
        "                       (also with --eviction none) and, with lru, eviction across "
        "classes\n"
        "  --shm                every client over the server's shared-memory rings (ATTACH on\n"
        "                       a --unix socket of the server) instead of TCP\n"
        "  --keys N             keys per writer (default 256)\n"
        "  --prefill PCT        fill PCT% of the segment first, checked each cycle (default 15)\n"
        "  --kinds STR          cycle kinds in turn: k = SIGKILL under load, r = also SIGKILL\n"
        "                       during the recovery, s = SIGTERM then SIGKILL (default kkrs)\n"
        "  --seed N             random seed (default: time and pid; always printed)\n"
        "  --server PATH        server binary (default: libevkv next to this program)\n"
        "  --server-arg ARG     extra server argument (repeatable, e.g. --server-arg=--workers=2)\n"
        "  --recovery-limit S   seconds a restart may take to answer PING (default 10)\n"
        "  --max-time S         give up (exit 3) after S seconds (default: from the options)\n"
        "  --inject MODE        self-test: damage one key behind the check's back after the first\n"
        "                       restart; the check must then fail. loss: DEL an acknowledged key\n"
        "                       (under --eviction lru a lost key cannot be told from an evicted\n"
        "                       one, so loss rolls the key back to an older acknowledged value\n"
        "                       instead, as stale does); stale; tear: flip a byte of a value;\n"
        "                       split-mset: record an MSET of two keys in flight and store one;\n"
        "                       vanish: DEL 9 keys (lru: more absent keys than evictions)\n"
        "Every MSET is all or nothing: one in flight at a kill must leave its keys all old or all\n"
        "new, one refused (OUT_OF_MEMORY) must leave them all unchanged.\n"
        "Exit: 0 nothing lost, stale, torn or split; 1 it was, the server failed, or an lru run\n"
        "evicted nothing; 2 usage; 3 timeout.\n",
        f);
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
    enum {
        O_CYC = 256,
        O_WR,
        O_SEC,
        O_MEM,
        O_MAXV,
        O_KEYS,
        O_PRE,
        O_KINDS,
        O_SEED,
        O_SRV,
        O_SARG,
        O_RLIM,
        O_MAXT,
        O_INJ,
        O_EVICT,
        O_PRESSURE,
        O_SHM,
        O_HELP
    };
    static const struct option lo[] = {
        {"cycles", required_argument, NULL, O_CYC},
        {"writers", required_argument, NULL, O_WR},
        {"seconds", required_argument, NULL, O_SEC},
        {"memory", required_argument, NULL, O_MEM},
        {"max-value", required_argument, NULL, O_MAXV},
        {"keys", required_argument, NULL, O_KEYS},
        {"prefill", required_argument, NULL, O_PRE},
        {"kinds", required_argument, NULL, O_KINDS},
        {"seed", required_argument, NULL, O_SEED},
        {"server", required_argument, NULL, O_SRV},
        {"server-arg", required_argument, NULL, O_SARG},
        {"recovery-limit", required_argument, NULL, O_RLIM},
        {"max-time", required_argument, NULL, O_MAXT},
        {"inject", required_argument, NULL, O_INJ},
        {"eviction", required_argument, NULL, O_EVICT},
        {"pressure", no_argument, NULL, O_PRESSURE},
        {"shm", no_argument, NULL, O_SHM},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    char self[PATH_MAX];
    ssize_t n;
    int c;

    *o = (struct opts){.cycles = 10,
                       .writers = 4,
                       .keys = 256,
                       .prefill_pct = 15,
                       .seconds = 2.0,
                       .recovery_limit = getenv("ASAN_OPTIONS") ? 30.0 : 10.0,
                       .kinds = "kkrs"};
    o->seed = (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
    o->seed %= 1000000000ull;
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        self[n] = '\0';
        *strrchr(self, '/') = '\0';
        snprintf(o->server, sizeof(o->server), "%.*s/libevkv", (int)(sizeof(o->server) - 10), self);
    } else {
        snprintf(o->server, sizeof(o->server), "bin/libevkv");
    }
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        char *end = NULL;
        unsigned long v;

        errno = 0;
        switch (c) {
        case O_CYC:
        case O_WR:
        case O_KEYS:
        case O_PRE:
            v = strtoul(optarg, &end, 10);
            if (errno || *end || *optarg == '-' || v > 1000000 ||
                (c == O_WR && (v < 1 || v > MAX_WRITERS)) || (c == O_PRE && v > 60) ||
                (c == O_KEYS && v < 1)) {
                fprintf(stderr, "torture: bad --%s %s\n", lo[c - O_CYC].name, optarg);
                return -1;
            }
            if (c == O_CYC)
                o->cycles = (unsigned)v;
            else if (c == O_WR)
                o->writers = (unsigned)v;
            else if (c == O_KEYS)
                o->keys = (unsigned)v;
            else
                o->prefill_pct = (unsigned)v;
            break;
        case O_SEC:
        case O_RLIM:
        case O_MAXT: {
            double d = strtod(optarg, &end);

            if (errno || *end || !(d > 0) || d > 86400) {
                fprintf(stderr, "torture: bad --%s %s\n", lo[c - O_CYC].name, optarg);
                return -1;
            }
            if (c == O_SEC)
                o->seconds = d;
            else if (c == O_RLIM)
                o->recovery_limit = d;
            else
                o->max_time = d;
            break;
        }
        case O_MEM: {
            char buf[256], *save = NULL, *tok;

            snprintf(buf, sizeof(buf), "%s", optarg);
            o->nsizes = 0;
            for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (o->nsizes == MAX_SIZES || parse_size(tok, &o->sizes[o->nsizes]) != 0 ||
                    o->sizes[o->nsizes] < (8u << 20)) {
                    fprintf(stderr, "torture: bad --memory %s (sizes >= 8m, at most %d)\n", optarg,
                            MAX_SIZES);
                    return -1;
                }
                o->nsizes++;
            }
            break;
        }
        case O_MAXV:
            if (parse_size(optarg, &o->max_value) != 0 || o->max_value < 1024 ||
                o->max_value > (60u << 20)) {
                fprintf(stderr, "torture: bad --max-value %s (1k .. 60m)\n", optarg);
                return -1;
            }
            break;
        case O_KINDS:
            if (!*optarg || strspn(optarg, "krs") != strlen(optarg)) {
                fprintf(stderr, "torture: bad --kinds %s (letters k, r, s)\n", optarg);
                return -1;
            }
            o->kinds = optarg;
            break;
        case O_SEED:
            o->seed = strtoull(optarg, &end, 0);
            if (errno || *end || *optarg == '-') {
                fprintf(stderr, "torture: bad --seed %s\n", optarg);
                return -1;
            }
            break;
        case O_SRV: snprintf(o->server, sizeof(o->server), "%s", optarg); break;
        case O_SARG:
            if (o->nserver_args == MAX_SERVER_ARGS) {
                fprintf(stderr, "torture: too many --server-arg\n");
                return -1;
            }
            o->server_args[o->nserver_args++] = optarg;
            break;
        case O_INJ:
            if (strcmp(optarg, "loss") == 0)
                o->inject = INJECT_LOSS;
            else if (strcmp(optarg, "tear") == 0)
                o->inject = INJECT_TEAR;
            else if (strcmp(optarg, "stale") == 0)
                o->inject = INJECT_STALE;
            else if (strcmp(optarg, "split-mset") == 0)
                o->inject = INJECT_SPLIT;
            else if (strcmp(optarg, "vanish") == 0)
                o->inject = INJECT_VANISH;
            else {
                fprintf(stderr,
                        "torture: bad --inject %s (loss, stale, tear, split-mset or vanish)\n",
                        optarg);
                return -1;
            }
            break;
        case O_EVICT:
            if (strcmp(optarg, "lru") != 0 && strcmp(optarg, "none") != 0) {
                fprintf(stderr, "torture: bad --eviction %s (none or lru)\n", optarg);
                return -1;
            }
            o->lru = strcmp(optarg, "lru") == 0;
            break;
        case O_PRESSURE: o->pressure = true; break;
        case O_SHM: o->shm = true; break;
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "torture: unexpected argument %s\n", argv[optind]);
        return -1;
    }
    if (o->nsizes == 0) {
        o->sizes[0] = o->pressure ? 16u << 20 : 64u << 20;
        o->nsizes = 1;
    }
    for (unsigned i = 0; i < o->nserver_args; i++)
        if (strncmp(o->server_args[i], "--eviction", 10) == 0) {
            fprintf(stderr,
                    "torture: use --eviction, not --server-arg %s: the check depends on "
                    "it\n",
                    o->server_args[i]);
            return -1;
        }
    if (access(o->server, X_OK) != 0) {
        fprintf(stderr, "torture: server %s: %s (use --server PATH)\n", o->server, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct run run;
    struct run *r = &run;
    unsigned nkeys;
    int fail = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (parse_opts(argc, argv, &r->o) != 0)
        return 2;
    snprintf(g_shm_name, sizeof(g_shm_name), "/libevkv-torture-%d", (int)getpid());
    if (r->o.shm)
        snprintf(g_unix_path, sizeof(g_unix_path), "/tmp/libevkv-torture-%d.sock", (int)getpid());
    snprintf(g_log_path, sizeof(g_log_path), "/tmp/libevkv-torture-%d.log", (int)getpid());
    install_cleanup();
    if (r->o.max_time == 0) {
        double per = r->o.seconds + 3 * r->o.recovery_limit + 30;

        r->o.max_time = 120 + r->o.nsizes * r->o.cycles * per;
        for (unsigned i = 0; i < r->o.nsizes; i++) /* prefill and its full check */
            r->o.max_time += (double)(r->o.sizes[i] >> 20) * r->o.prefill_pct / 100 * 0.5;
    }
    alarm((unsigned)(r->o.max_time + 1));
    r->rng = r->o.seed;
    printf("torture: seed %llu; %u cycles (%s) x %.2f s per size; %u writers x %u keys; "
           "--eviction %s%s; server %s\n",
           (unsigned long long)r->o.seed, r->o.cycles, r->o.kinds, r->o.seconds, r->o.writers,
           r->o.keys, r->o.lru ? "lru" : "none", r->o.pressure ? " --pressure" : "", r->o.server);
    printf("torture: reproduce with: %s --seed %llu", argv[0], (unsigned long long)r->o.seed);
    for (int i = 1; i < argc; i++)
        if (strncmp(argv[i], "--seed", 6) != 0 && (i == 1 || strcmp(argv[i - 1], "--seed") != 0))
            printf(" %s", argv[i]);
    printf("\n");

    nkeys = r->o.writers * r->o.keys;
    r->keys = calloc(nkeys, sizeof(*r->keys));
    if (!r->keys)
        return 2;
    for (unsigned i = 0; i < NCTR; i++)
        snprintf(r->ctr_name[i], sizeof(r->ctr_name[i]), "t:ctr:%u", i);
    for (unsigned w = 0; w < r->o.writers; w++) {
        r->w[w].run = r;
        r->w[w].id = w;
        r->w[w].keys = &r->keys[w * r->o.keys];
        for (unsigned j = 0; j < r->o.keys; j++) {
            struct tkey *k = &r->w[w].keys[j];
            /* every 37th key has a long name (up to 4000 bytes of the 4096 allowed) */
            size_t len = j % 37 == 36 ? 100 + (j * 977u) % 3900 : 0;
            char head[48];
            int hl = snprintf(head, sizeof(head), "t:w%02u:k%05u", w, j);

            if (len < (size_t)hl)
                len = (size_t)hl;
            k->name = malloc(len + 1);
            if (!k->name)
                return 2;
            memcpy(k->name, head, (size_t)hl);
            for (size_t p = (size_t)hl; p < len; p++)
                k->name[p] = (char)('a' + (p + j) % 26);
            k->name[len] = '\0';
            k->klen = len;
            k->khash = crc(0, k->name, len);
            k->wid = w;
        }
    }
    for (unsigned s = 0; s < r->o.nsizes && !fail; s++) {
        struct size_stats *ss = &r->ss[s];

        ss->size = r->o.sizes[s];
        ss->rec_ms = calloc(r->o.cycles + 1, sizeof(double));
        if (!ss->rec_ms)
            return 2;
        fail = run_size(r, ss) != 0;
    }

    printf("torture summary: cycles %u, ops acknowledged %llu, in flight at a kill %llu, "
           "refused (full) %llu, lost %llu, stale %llu, torn %llu, split MSETs %llu, live "
           "mismatches %llu, server failures %u, warnings %u\n",
           r->cycles_run, (unsigned long long)r->ops_acked, (unsigned long long)r->ops_inflight,
           (unsigned long long)r->ops_refused, (unsigned long long)r->lost,
           (unsigned long long)r->stale, (unsigned long long)r->torn, (unsigned long long)r->split,
           (unsigned long long)r->live_bad, r->server_failures, r->warnings);
    printf("EXEC: %llu acknowledged (a SET of 2..8 keys each, checked as MSETs: in flight at "
           "a kill all old or all new, acknowledged wholly there)\n",
           (unsigned long long)r->execs);
    printf("MSET: %llu in flight at a kill checked (all old %llu, all new %llu, split %llu); "
           "%llu refused (OUT_OF_MEMORY), keys they changed %llu\n",
           (unsigned long long)r->groups, (unsigned long long)r->groups_old,
           (unsigned long long)r->groups_new, (unsigned long long)r->groups_split,
           (unsigned long long)r->mset_refused, (unsigned long long)(r->split - r->groups_split));
    printf("RENAME: %llu acknowledged, %llu in flight at a kill, %llu key checks (exactly one "
           "name, whole value), bad %llu\n",
           (unsigned long long)r->ren_acked, (unsigned long long)r->ren_inflight,
           (unsigned long long)r->ren_checked, (unsigned long long)r->ren_bad);
    if (r->o.lru)
        printf("evictions: server counted %llu (STATS evictions), the checks found %llu keys "
               "absent (evicted, or lost)\n",
               (unsigned long long)r->evictions_total, (unsigned long long)r->evicted_seen);
    for (unsigned s = 0; s < r->o.nsizes; s++) {
        struct size_stats *ss = &r->ss[s];
        char sz[16];

        if (!ss->rec_ms)
            continue;
        if (ss->nrec) {
            qsort(ss->rec_ms, ss->nrec, sizeof(double), cmp_double);
            printf("recovery %s: median %.1f ms, max %.1f ms over %u restarts (restart to first "
                   "PING; up to %llu items recovered)\n",
                   fmt_size(ss->size, sz, sizeof(sz)), ss->rec_ms[ss->nrec / 2],
                   ss->rec_ms[ss->nrec - 1], ss->nrec, (unsigned long long)ss->max_kept);
        }
        free(ss->rec_ms);
    }
    fail = fail || r->lost || r->torn || r->stale || r->split || r->live_bad ||
           r->server_failures || r->not_exercised;
    if (fail) {
        g_keep_log = r->o.inject == INJECT_NONE; /* an injected fault is expected */
        printf("RESULT: FAIL (seed %llu%s%s)\n", (unsigned long long)r->o.seed,
               g_keep_log ? "; server log kept in " : "", g_keep_log ? g_log_path : "");
    } else {
        printf("RESULT: PASS\n");
    }
    for (unsigned i = 0; i < nkeys; i++)
        free(r->keys[i].name);
    free(r->keys);
    for (unsigned i = 0; i < r->o.writers; i++)
        free(r->w[i].buf);
    free(r->scratch);
    free(r->fill_gone);
    return fail ? 1 : 0;
}
