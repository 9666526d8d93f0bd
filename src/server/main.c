/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/server/main.c -- main() of libevkv: options, signals, the exit table.
 *
 * The main thread builds the server, then runs a libev loop of its own with
 * ev_signal watchers only: SIGINT/SIGTERM stop gracefully, SIGHUP reopens
 * the --log-file (and never stops the server), signal 41 (SIGRTMIN+7)
 * prints the statistics table. Nothing is printed from a raw
 * signal handler. At exit the table is printed again; every module must
 * hold 0 bytes, else the exit code is 3 and the leaking modules are named. */
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "kv_err.h"
#include "kv_log.h"
#include "kv_mem.h"
#include "kv_print.h"
#include "kv_server.h"
#include "options.h"

#define KV_SIG_STATS (SIGRTMIN + 7)

struct main_ctx {
    struct kv_server *srv;
    const struct kv_config *cfg;
    int stopping;
};

static void print_stats(struct kv_server *srv, const char *title)
{
    char buf[8192];
    size_t len = (size_t)snprintf(buf, sizeof(buf), "==== libevkv %s (pid %d)\n", title,
                                  (int)getpid());

    if (srv)
        len += kv_server_format_stats(srv, buf + len, sizeof(buf) - len);
    else {
        struct kv_mem_snapshot snap;

        kv_mem_snapshot(&snap);
        len += kv_mem_format(&snap, buf + len, sizeof(buf) - len);
    }
    kv_print_write(STDOUT_FILENO, buf, len); /* a full stdout drops it (counted) */
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct main_ctx *m = w->data;

    if (!m->stopping)
        kv_server_log(m->cfg, 2, "signal %d: stopping gracefully", w->signum);
    m->stopping = 1;
    ev_break(loop, EVBREAK_ALL);
}

static void on_hup_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct main_ctx *m = w->data;

    if (!m->cfg->log_file[0])
        kv_server_log(m->cfg, 2, "signal %d (SIGHUP): no --log-file to reopen; still running",
                      w->signum);
    else if (kv_log_reopen() != 0)
        kv_server_log(m->cfg, 0, "SIGHUP: cannot reopen %s: %s; still logging to the old file",
                      m->cfg->log_file, strerror(errno));
    else
        kv_server_log(m->cfg, 2, "SIGHUP: log file %s reopened", m->cfg->log_file);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct main_ctx *m = w->data;

    kv_server_tick(m->srv);
}

static void on_stats_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    struct main_ctx *m = w->data;

    print_stats(m->srv, "statistics");
}

/* --max-conns against the descriptor limit: every connection is a
 * descriptor, and the server needs some of its own (listener, pipes, loops,
 * segment). Raises the soft limit as far as needed when the hard limit
 * allows; otherwise lowers max_conns to what fits, and says so. */
static void fit_max_conns(struct kv_config *cfg)
{
    rlim_t own = 32 + 4 * (rlim_t)(cfg->io_threads + 2), need = cfg->max_conns + own;
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur >= need)
        return;
    if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > rl.rlim_cur) {
        struct rlimit up = rl;

        up.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &up) == 0)
            rl = up;
    }
    if (rl.rlim_cur >= need) {
        kv_server_log(cfg, 2, "descriptor limit raised to %llu for --max-conns %u",
                      (unsigned long long)rl.rlim_cur, cfg->max_conns);
        return;
    }
    kv_server_log(cfg, 1, "--max-conns %u needs %llu descriptors but the limit is %llu "
                  "(ulimit -n; hard %llu): lowered to %llu", cfg->max_conns,
                  (unsigned long long)need, (unsigned long long)rl.rlim_cur,
                  (unsigned long long)rl.rlim_max,
                  (unsigned long long)(rl.rlim_cur > own + 1 ? rl.rlim_cur - own : 1));
    cfg->max_conns = rl.rlim_cur > own + 1 ? (unsigned)(rl.rlim_cur - own) : 1;
}

/* Prints the exit table; returns 0 when every module holds 0 bytes. */
static int exit_check(void)
{
    struct kv_mem_snapshot snap;
    char names[512] = "";
    size_t len = 0;

    kv_mem_pool_drain();
    print_stats(NULL, "exit table");
    kv_mem_snapshot(&snap);
    for (int i = 0; i < KV_MOD__COUNT; i++)
        if (snap.mod[i].bytes != 0 && len + 32 < sizeof(names))
            len += (size_t)snprintf(names + len, sizeof(names) - len, " %s(%lld)",
                                    kv_mem_mod_name(i), (long long)snap.mod[i].bytes);
    if (len == 0)
        return 0;
    kv_log_write(KV_LOG_ERROR, "server", "memory still held at exit:%s", names);
    return 3;
}

int main(int argc, char **argv)
{
    struct kv_config cfg;
    struct main_ctx m = {0};
    struct ev_loop *loop;
    ev_signal sig_int, sig_term, sig_hup, sig_stats;
    ev_timer tick;
    sigset_t block;
    char err[512], line[2048];
    size_t len;
    int rc;

    kv_config_defaults(&cfg);
    rc = kv_options_parse(argc, argv, &cfg, err, sizeof(err));
    if (rc == KV_OPT_HELP) {
        kv_options_usage(stdout);
        return 0;
    }
    if (rc == KV_OPT_VERSION) {
        printf("libevkv %s (protocol 1)\n", KV_VERSION);
        return 0;
    }
    if (rc != KV_OPT_RUN) {
        kv_log_write(KV_LOG_ERROR, "server", "%s", err); /* stamped like every line */
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IONBF, 0);
    kv_print_setup(); /* from here on nothing printed can block the server */

    /* the signals are taken only by the main thread's loop: block them while
     * the store is opened and the other threads are created (they inherit
     * the mask); one that arrives meanwhile waits for the loop */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, KV_SIG_STATS);
    pthread_sigmask(SIG_BLOCK, &block, NULL);
    if (cfg.log_file[0] && kv_log_open(cfg.log_file) != 0) {
        kv_log_write(KV_LOG_ERROR, "server", "cannot open --log-file %s: %s", cfg.log_file,
                     strerror(errno));
        return 1;
    }

    m.cfg = &cfg;
    fit_max_conns(&cfg);
    rc = kv_server_create(&cfg, err, sizeof(err), &m.srv);
    if (rc != 0) {
        kv_server_log(&cfg, 0, "%s", err);
        return 1;
    }
    rc = kv_server_start(m.srv);
    if (rc != 0) {
        kv_server_log(&cfg, 0, "cannot start threads: %s", kv_strerror(rc));
        kv_server_stop(m.srv);
        kv_server_destroy(m.srv);
        return 1;
    }
    loop = ev_default_loop(EVFLAG_AUTO);
    ev_signal_init(&sig_int, on_stop_signal, SIGINT);
    ev_signal_init(&sig_term, on_stop_signal, SIGTERM);
    ev_signal_init(&sig_hup, on_hup_signal, SIGHUP);
    ev_signal_init(&sig_stats, on_stats_signal, KV_SIG_STATS);
    sig_int.data = sig_term.data = sig_hup.data = sig_stats.data = &m;
    ev_signal_start(loop, &sig_int);
    ev_signal_start(loop, &sig_term);
    ev_signal_start(loop, &sig_hup);
    ev_signal_start(loop, &sig_stats);
    ev_timer_init(&tick, on_tick, KV_SERVER_TICK, KV_SERVER_TICK);
    tick.data = &m;
    ev_timer_start(loop, &tick);
    pthread_sigmask(SIG_UNBLOCK, &block, NULL);
    {
        char where[1200];

        if (cfg.no_tcp)
            snprintf(where, sizeof(where), "unix %s (no TCP)", cfg.unix_path);
        else
            snprintf(where, sizeof(where), "%s:%u%s%s", cfg.bind_addr, kv_server_port(m.srv),
                     cfg.unix_path[0] ? " and unix " : "", cfg.unix_path);
        len = kv_server_store_summary(m.srv, line, sizeof(line));
        snprintf(line + len, sizeof(line) - len, "; options: ");
        len += strlen(line + len);
        kv_options_describe(&cfg, line + len, sizeof(line) - len);
        kv_server_log(&cfg, 2, "libevkv %s pid %d listening on %s (io-threads %u, workers %u); %s",
                      KV_VERSION, (int)getpid(), where, cfg.io_threads, cfg.workers, line);
        /* systemd Type=notify: the store is open (recovered) and the port
         * listens, with every thread running */
        snprintf(line, sizeof(line), "READY=1\nMAINPID=%d\nSTATUS=listening on %.1000s",
                 (int)getpid(), where);
        if (kv_server_notify(line) != 0)
            kv_server_log(&cfg, 1, "cannot notify systemd (NOTIFY_SOCKET): %s", strerror(errno));
    }

    ev_run(loop, 0);
    kv_server_notify("STOPPING=1\nSTATUS=stopping");

    kv_server_stop(m.srv);
    print_stats(m.srv, "final statistics");
    kv_server_destroy(m.srv);
    ev_loop_destroy(loop);
    rc = exit_check();
    kv_server_log(&cfg, 2, "stopped");
    return rc;
}
