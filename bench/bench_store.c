/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* bench/bench_store.c -- store-only throughput of src/shm next to a plain in-process
 * hash table, plus recovery time per GiB and memory overhead per item.
 *
 *   bench_store [-n keys] [-v value bytes] [-k key bytes] [-m store MiB] [-r recovery GiB]
 *               [-s seconds per phase]
 *
 * Phases, for 1 and 2 threads, on a fresh store each time: insert n distinct keys (split
 * between the threads), overwrite random keys, get random keys. Values are copied out
 * into a per-thread buffer, so the figures are the store's own cost. The baseline is a
 * chained hash table on the libc heap, sized for n up front (no rehash), with the same
 * 1024 striped rwlocks: what the store would cost without shared memory, offsets,
 * checksums and crash safety. It uses plain malloc on purpose: it stands for "a plain
 * table", and counting its allocations is not part of what is compared.
 *
 * Then: a store of -r GiB is filled with 100-byte values until it is ~85% used, left
 * without its clean mark (as a kill leaves it), and reopened: recovery time per GiB.
 * Memory overhead: segment bytes used per item after the 1M-key insert. */
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kv_mem.h"
#include "kv_shm.h"
#include "shm_int.h"

static const uint64_t bl_key[2] = {1, 2}; /* the baseline table's own hash key */
static size_t opt_n = 1000000, opt_v = 100, opt_k = 16, opt_mem_mib = 512, opt_rec_gib = 1;
static double opt_secs = 1.0;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* key i: opt_k bytes, "k" + zero-padded decimal, distinct for every i */
static void make_key(char *k, uint64_t i)
{
    memset(k, 'k', opt_k);
    size_t at = opt_k;
    do { /* no snprintf: the key builder must not dominate the figures */
        k[--at] = (char)('0' + i % 10);
        i /= 10;
    } while (i && at > 1);
}

static uint64_t xrand(uint64_t *st)
{
    *st ^= *st << 13;
    *st ^= *st >> 7;
    *st ^= *st << 17;
    return *st;
}

/* ---- the baseline: chained hash table, striped rwlocks, libc heap -------------------- */

struct bl_item {
    struct bl_item *next; /* owned by the chain */
    uint32_t klen, vlen;
    uint8_t data[];
};

struct baseline {
    struct bl_item **b; /* owned: nb heads */
    size_t nb;
    pthread_rwlock_t lock[1024];
};

static void bl_init(struct baseline *t, size_t n)
{
    t->nb = 1;
    while (t->nb < n)
        t->nb <<= 1;
    t->b = calloc(t->nb, sizeof(*t->b));
    for (int i = 0; i < 1024; i++)
        pthread_rwlock_init(&t->lock[i], NULL);
}

static void bl_fini(struct baseline *t)
{
    for (size_t i = 0; i < t->nb; i++)
        for (struct bl_item *it = t->b[i], *nx; it; it = nx) {
            nx = it->next;
            free(it);
        }
    free(t->b);
}

static void bl_set(struct baseline *t, const void *k, size_t kl, const void *v, size_t vl)
{
    uint64_t h = kv_shm_siphash13(bl_key, k, kl);
    struct bl_item *it = malloc(sizeof(*it) + kl + vl), *old = NULL;
    it->klen = (uint32_t)kl;
    it->vlen = (uint32_t)vl;
    memcpy(it->data, k, kl);
    memcpy(it->data + kl, v, vl);
    pthread_rwlock_t *l = &t->lock[h & 1023];
    pthread_rwlock_wrlock(l);
    struct bl_item **pp = &t->b[h & (t->nb - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->klen == kl && memcmp((*pp)->data, k, kl) == 0)
            break;
    old = *pp;
    it->next = old ? old->next : NULL;
    *pp = it;
    pthread_rwlock_unlock(l);
    free(old);
}

static int bl_get(struct baseline *t, const void *k, size_t kl, void *dst, size_t *vl)
{
    uint64_t h = kv_shm_siphash13(bl_key, k, kl);
    pthread_rwlock_t *l = &t->lock[h & 1023];
    int rc = KV_ENOTFOUND;
    pthread_rwlock_rdlock(l);
    for (struct bl_item *it = t->b[h & (t->nb - 1)]; it; it = it->next)
        if (it->klen == kl && memcmp(it->data, k, kl) == 0) {
            memcpy(dst, it->data + kl, it->vlen);
            *vl = it->vlen;
            rc = 0;
            break;
        }
    pthread_rwlock_unlock(l);
    return rc;
}

/* ---- workers ------------------------------------------------------------------------- */

enum phase { PH_INSERT, PH_SET, PH_GET };

struct job {
    struct kv_shm_store *s; /* borrowed, or NULL for the baseline */
    struct baseline *bl;    /* borrowed */
    enum phase ph;
    int id, nthr;
    uint64_t ops, errors;
    double secs;
};

static __thread uint8_t tbuf[1 << 20];

static void *dst_alloc(void *ctx, size_t len)
{
    (void)ctx;
    return len <= sizeof(tbuf) ? tbuf : NULL;
}

static void *job_main(void *arg)
{
    struct job *j = arg;
    char key[64];
    uint8_t val[4096];
    memset(val, 'v', sizeof(val));
    uint64_t rs = 0x9E3779B97F4A7C15ull * (uint64_t)(j->id + 1);
    double t0 = now_s(), end = t0 + opt_secs;
    if (j->ph == PH_INSERT) {
        for (uint64_t i = (uint64_t)j->id; i < opt_n; i += (uint64_t)j->nthr) {
            make_key(key, i);
            memcpy(val, &i, sizeof(i));
            if (j->s)
                j->errors += kv_shm_set(j->s, key, opt_k, val, opt_v, NULL, NULL) != 0;
            else
                bl_set(j->bl, key, opt_k, val, opt_v);
            j->ops++;
        }
    } else {
        for (;;) {
            for (int b = 0; b < 1024; b++) {
                uint64_t i = xrand(&rs) % opt_n;
                make_key(key, i);
                if (j->ph == PH_SET) {
                    memcpy(val, &i, sizeof(i));
                    if (j->s)
                        j->errors += kv_shm_set(j->s, key, opt_k, val, opt_v, NULL, NULL) != 0;
                    else
                        bl_set(j->bl, key, opt_k, val, opt_v);
                } else {
                    size_t vl = 0;
                    int rc = j->s ? kv_shm_get(j->s, key, opt_k, dst_alloc, NULL, &vl, NULL)
                                  : bl_get(j->bl, key, opt_k, tbuf, &vl);
                    j->errors += rc != 0 || vl != opt_v;
                }
            }
            j->ops += 1024;
            if (now_s() >= end)
                break;
        }
    }
    j->secs = now_s() - t0;
    return NULL;
}

static double run_phase(struct kv_shm_store *s, struct baseline *bl, enum phase ph, int nthr,
                        uint64_t *errors)
{
    pthread_t th[8];
    struct job jb[8];
    double t0 = now_s();
    for (int i = 0; i < nthr; i++) {
        jb[i] = (struct job){s, bl, ph, i, nthr, 0, 0, 0};
        pthread_create(&th[i], NULL, job_main, &jb[i]);
    }
    uint64_t ops = 0;
    for (int i = 0; i < nthr; i++) {
        pthread_join(th[i], NULL);
        ops += jb[i].ops;
        *errors += jb[i].errors;
    }
    return (double)ops / (now_s() - t0);
}

static void cfg_for(struct kv_config *c, const char *tag, size_t bytes)
{
    kv_config_defaults(c);
    snprintf(c->shm_name, sizeof(c->shm_name), "/kvbench-%d-%s", (int)getpid(), tag);
    c->memory = bytes;
    c->max_key = 4096;
    kv_shm_store_unlink(c);
}

static struct kv_shm_store *open_or_die(const struct kv_config *c)
{
    struct kv_shm_store *s;
    char err[512];
    int rc = kv_shm_store_open(c, err, sizeof(err), &s);
    if (rc) {
        fprintf(stderr, "bench_store: open %s: %s: %s\n", c->shm_name, kv_strerror(rc), err);
        exit(1);
    }
    return s;
}

static void throughput(void)
{
    printf("throughput: %zu keys, %zu-byte keys, %zu-byte values, %.1f s per timed phase\n",
           opt_n, opt_k, opt_v, opt_secs);
    printf("%-9s %-8s %14s %14s %14s\n", "table", "threads", "insert ops/s", "set ops/s",
           "get ops/s");
    for (int nthr = 1; nthr <= 2; nthr++) {
        for (int which = 0; which < 2; which++) {
            uint64_t errors = 0;
            double ins, set, get;
            if (which == 0) {
                struct kv_config c;
                cfg_for(&c, "tp", opt_mem_mib << 20);
                struct kv_shm_store *s = open_or_die(&c);
                struct kv_shm_stats a, b;
                kv_shm_stats(s, &a);
                ins = run_phase(s, NULL, PH_INSERT, nthr, &errors);
                kv_shm_stats(s, &b);
                set = run_phase(s, NULL, PH_SET, nthr, &errors);
                get = run_phase(s, NULL, PH_GET, nthr, &errors);
                printf("%-9s %-8d %14.0f %14.0f %14.0f%s\n", "shm", nthr, ins, set, get,
                       errors ? "  (ERRORS)" : "");
                if (nthr == 1)
                    printf("  memory: %.1f segment bytes per item (%" PRIu64 " items, "
                           "%.1f MiB used incl. %.1f MiB index; payload %zu+%zu bytes)\n",
                           (double)(b.bytes_used - a.bytes_used) / (double)b.keys, b.keys,
                           (double)b.bytes_used / 1048576.0, (double)b.index_bytes / 1048576.0,
                           opt_k, opt_v);
                kv_shm_store_close(s);
                kv_shm_store_unlink(&c);
            } else {
                struct baseline *bl = calloc(1, sizeof(*bl));
                bl_init(bl, opt_n);
                ins = run_phase(NULL, bl, PH_INSERT, nthr, &errors);
                set = run_phase(NULL, bl, PH_SET, nthr, &errors);
                get = run_phase(NULL, bl, PH_GET, nthr, &errors);
                printf("%-9s %-8d %14.0f %14.0f %14.0f%s\n", "baseline", nthr, ins, set, get,
                       errors ? "  (ERRORS)" : "");
                bl_fini(bl);
                free(bl);
            }
        }
    }
}

static void recovery(void)
{
    struct kv_config c;
    cfg_for(&c, "rec", opt_rec_gib << 30);
    struct kv_shm_store *s = open_or_die(&c);
    char key[64];
    uint8_t val[100];
    memset(val, 'r', sizeof(val));
    uint64_t n = 0;
    struct kv_shm_stats st;
    double t0 = now_s();
    for (;; n++) {
        make_key(key, n);
        if (kv_shm_set(s, key, opt_k, val, sizeof(val), NULL, NULL))
            break;
        if ((n & 0xFFFF) == 0) {
            kv_shm_stats(s, &st);
            if (st.bytes_free < st.segment_size / 7)
                break;
        }
    }
    double fill = now_s() - t0;
    kv_shm_stats(s, &st);
    kv_shm_store_close(s);
    /* take the clean mark away, as a kill would have left it */
    int fd = shm_open(c.shm_name, O_RDWR, 0);
    struct shm_hdr *h = mmap(NULL, SHM_HDR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    h->clean = 0;
    munmap(h, SHM_HDR_SIZE);
    close(fd);
    t0 = now_s();
    s = open_or_die(&c);
    double open_s = now_s() - t0;
    struct kv_shm_stats r;
    kv_shm_stats(s, &r);
    double gib = (double)r.segment_size / (double)(1ull << 30);
    printf("recovery: %.2f GiB segment, %" PRIu64 " items (%.0f%% used, filled in %.1f s); "
           "recovery %.1f ms (open %.1f ms) = %.1f ms per GiB; kept %" PRIu64 ", dropped %"
           PRIu64 "\n",
           gib, st.keys, 100.0 * (double)st.bytes_used / (double)st.segment_size, fill,
           (double)r.recovery_ns / 1e6, open_s * 1e3, (double)r.recovery_ns / 1e6 / gib,
           r.recovered_items, r.dropped_items);
    kv_shm_store_close(s);
    kv_shm_store_unlink(&c);
}

int main(int argc, char **argv)
{
    int o;
    while ((o = getopt(argc, argv, "n:v:k:m:r:s:h")) != -1) {
        switch (o) {
        case 'n': opt_n = strtoull(optarg, NULL, 10); break;
        case 'v': opt_v = strtoull(optarg, NULL, 10); break;
        case 'k': opt_k = strtoull(optarg, NULL, 10); break;
        case 'm': opt_mem_mib = strtoull(optarg, NULL, 10); break;
        case 'r': opt_rec_gib = strtoull(optarg, NULL, 10); break;
        case 's': opt_secs = strtod(optarg, NULL); break;
        default:
            fprintf(stderr, "usage: bench_store [-n keys] [-v value bytes] [-k key bytes] "
                            "[-m store MiB] [-r recovery GiB, 0 = skip] [-s seconds]\n");
            return o == 'h' ? 0 : 2;
        }
    }
    if (opt_k < 8 || opt_k > 60 || opt_v < 8 || opt_v > 4096 || opt_n < 1) {
        fprintf(stderr, "bench_store: -k 8..60, -v 8..4096, -n >= 1\n");
        return 2;
    }
    throughput();
    if (opt_rec_gib)
        recovery();
    return 0;
}
