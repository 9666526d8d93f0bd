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
    int log_level;               /* 0 error, 1 warn, 2 info, 3 debug */
    char log_file[1024];         /* "" = stderr; reopened on SIGHUP */
    double shutdown_grace;       /* seconds to flush output at shutdown */

    /* store */
    char shm_name[256];          /* shm_open name, "" = derived from the port */
    char data_file[1024];        /* file path for a disk-backed segment, "" = shm */
    size_t memory;               /* segment size, bytes */
    enum kv_eviction eviction;
    enum kv_huge_pages huge_pages; /* default try */
    size_t max_key;              /* 1 .. max_key bytes */
    int reset_store;             /* move an unusable segment aside and start empty */
    int shrink_store;            /* a --memory below the segment's size copies it smaller */
    char rdb_file[1024];         /* where SAVE/BGSAVE write an RDB file, "" = refused */
    char load_rdb[1024];         /* an RDB file to import into an empty store at start */

    int in_order;                /* 1: binary answers leave in request order too */
    int resp_disabled;           /* 1: binary frames only (no RESP on the port) */
    size_t resp_max_args;        /* elements of a RESP multibulk */

    /* shared-memory rings (ATTACH on the unix socket) */
    size_t ring_size;            /* bytes of each ring when the client asks for 0 */
    size_t ring_max;             /* largest ring a client may ask for */
    unsigned ring_spin_us;       /* how long a consumer spins on an empty ring before it
                                  * parks (adaptive below it); 0 = park at once */

    /* service */
    char requirepass[256];       /* "" = no AUTH required */
};

/* Fills *c with the documented defaults. */
void kv_config_defaults(struct kv_config *c);

#endif
