/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/mem/kv_mem.c -- counted allocation, per-thread counters, IO buffer pool.
 *
 * Each thread that allocates gets a slot (struct kv_mem_slot, cache-line
 * aligned) the first time it does; only that thread writes it, with relaxed
 * atomic stores, and kv_mem_snapshot() reads every slot with relaxed loads.
 * A slot is linked on a global list under slots_lock (taken only when a
 * thread starts or ends, and by snapshots). When a thread ends, its
 * counters are folded into `retired` so no count is ever lost.
 *
 * Lock rules: slots_lock guards the slot list and `retired`; nothing else is
 * shared. A thread's pool cache is its own. */
#include "kv_mem.h"

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KV_CACHELINE 64

struct kv_mem_slot {
    int64_t bytes[KV_MOD__COUNT];    /* owner thread writes, anyone reads (relaxed) */
    uint64_t allocs[KV_MOD__COUNT];
    uint64_t frees[KV_MOD__COUNT];
    uint64_t stat[KV_STAT__COUNT];
    struct kv_mem_slot *next;        /* guarded by slots_lock */
    struct kv_mem_slot *prev;        /* guarded by slots_lock */
} __attribute__((aligned(KV_CACHELINE)));

/* Header in front of every counted block: size and module, 16 bytes so the
 * payload keeps malloc's alignment. */
struct kv_mem_hdr {
    uint64_t size;
    uint32_t mod;
    uint32_t magic;
};
#define KV_MEM_MAGIC 0x6b766d6du /* "kvmm" */

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kv_mem_slot *slots;        /* guarded by slots_lock */
static struct kv_mem_slot retired;       /* guarded by slots_lock */
static pthread_key_t slot_key;
static pthread_once_t slot_once = PTHREAD_ONCE_INIT;
static __thread struct kv_mem_slot *my_slot;

/* ---- per-thread pool cache ---------------------------------------------- */
#define KV_POOL_CLASSES 9            /* 4K .. 1M */
#define KV_POOL_CACHE_BYTES (4u << 20) /* per thread */

struct kv_pool_cache {
    void *head[KV_POOL_CLASSES];     /* singly linked through the first word */
    size_t bytes;                    /* total parked in this cache */
};
static __thread struct kv_pool_cache my_cache;

#define KV_OBJ_CLASSES (KV_OBJ_MAX / 64)
#define KV_OBJ_CACHE_BYTES (1u << 20) /* per thread */

struct kv_obj_cache {
    void *head[KV_OBJ_CLASSES];      /* singly linked through the first word */
    size_t bytes;
};
static __thread struct kv_obj_cache my_objs;

static const char *const mod_names[KV_MOD__COUNT] = {
    [KV_MOD_BUF] = "BUF",         [KV_MOD_POOL] = "POOL",
    [KV_MOD_MESSAGE] = "MESSAGE", [KV_MOD_REQUEST] = "REQUEST",
    [KV_MOD_PACKET] = "PACKET",   [KV_MOD_CONNECTION] = "CONNECTION",
    [KV_MOD_QUEUE] = "QUEUE",     [KV_MOD_TASK] = "TASK",
    [KV_MOD_THREAD] = "THREAD",   [KV_MOD_PROTO] = "PROTO",
    [KV_MOD_SHM] = "SHM",         [KV_MOD_CLIENT] = "CLIENT",
    [KV_MOD_SERVER] = "SERVER",   [KV_MOD_TEST] = "TEST",
    [KV_MOD_RING] = "RING",
};

static const char *const stat_names[KV_STAT__COUNT] = {
    [KV_STAT_CONNS_ACCEPTED] = "connections_accepted",
    [KV_STAT_CONNS_CLOSED] = "connections_closed",
    [KV_STAT_CONNS_REJECTED] = "connections_rejected",
    [KV_STAT_REQUESTS] = "requests",
    [KV_STAT_RESPONSES] = "responses",
    [KV_STAT_DROPPED] = "responses_dropped",
    [KV_STAT_PROTO_ERRORS] = "protocol_errors",
    [KV_STAT_TIMEOUTS] = "timeouts",
    [KV_STAT_OUTPUT_LIMIT] = "output_limit_closes",
    [KV_STAT_BYTES_IN] = "bytes_in",
    [KV_STAT_BYTES_OUT] = "bytes_out",
    [KV_STAT_CLIENT_MEMORY] = "client_memory_bytes",
    [KV_STAT_CLIENT_MEM_CLOSES] = "client_memory_closes",
    [KV_STAT_AUTH_FAILURES] = "auth_failures",
    [KV_STAT_PRINT_DROPPED] = "print_dropped_bytes",
    [KV_STAT_ACCEPT_PAUSES] = "accept_pauses",
};

const char *kv_mem_mod_name(enum kv_mod mod)
{
    return (unsigned)mod < KV_MOD__COUNT ? mod_names[mod] : "?";
}

const char *kv_mem_stat_name(enum kv_stat stat)
{
    return (unsigned)stat < KV_STAT__COUNT ? stat_names[stat] : "?";
}

static void slot_fold(struct kv_mem_slot *dst, const struct kv_mem_slot *src)
{
    for (int i = 0; i < KV_MOD__COUNT; i++) {
        dst->bytes[i] += __atomic_load_n(&src->bytes[i], __ATOMIC_RELAXED);
        dst->allocs[i] += __atomic_load_n(&src->allocs[i], __ATOMIC_RELAXED);
        dst->frees[i] += __atomic_load_n(&src->frees[i], __ATOMIC_RELAXED);
    }
    for (int i = 0; i < KV_STAT__COUNT; i++)
        dst->stat[i] += __atomic_load_n(&src->stat[i], __ATOMIC_RELAXED);
}

static void slot_release(void *arg)
{
    struct kv_mem_slot *s = arg;

    kv_mem_pool_drain(); /* may count into s: my_slot is still set */
    pthread_mutex_lock(&slots_lock);
    slot_fold(&retired, s);
    if (s->prev)
        s->prev->next = s->next;
    else
        slots = s->next;
    if (s->next)
        s->next->prev = s->prev;
    pthread_mutex_unlock(&slots_lock);
    my_slot = NULL;
    free(s);
}

static void slot_key_create(void)
{
    pthread_key_create(&slot_key, slot_release);
}

/* The calling thread's slot; NULL only if the slot itself cannot be
 * allocated, in which case counts go to `retired` under the lock. */
static struct kv_mem_slot *slot_get(void)
{
    struct kv_mem_slot *s = my_slot;

    if (__builtin_expect(s != NULL, 1))
        return s;
    pthread_once(&slot_once, slot_key_create);
    s = aligned_alloc(KV_CACHELINE, sizeof(*s));
    if (!s)
        return NULL;
    memset(s, 0, sizeof(*s));
    pthread_mutex_lock(&slots_lock);
    s->next = slots;
    if (slots)
        slots->prev = s;
    slots = s;
    pthread_mutex_unlock(&slots_lock);
    my_slot = s;
    pthread_setspecific(slot_key, s);
    return s;
}

static inline void counter_add(int64_t *c, int64_t n)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline void counter_inc(uint64_t *c, uint64_t n)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static void account(enum kv_mod mod, int64_t bytes, int alloc)
{
    struct kv_mem_slot *s = slot_get();

    if (__builtin_expect(s == NULL, 0)) {
        pthread_mutex_lock(&slots_lock);
        retired.bytes[mod] += bytes;
        if (alloc)
            retired.allocs[mod]++;
        else
            retired.frees[mod]++;
        pthread_mutex_unlock(&slots_lock);
        return;
    }
    counter_add(&s->bytes[mod], bytes);
    counter_inc(alloc ? &s->allocs[mod] : &s->frees[mod], 1);
}

/* Two rows at once (an object moving between the cache and a module): one
 * slot lookup for both. */
static void account2(enum kv_mod a, int64_t da, int alloc_a, enum kv_mod b, int64_t db,
                     int alloc_b)
{
    struct kv_mem_slot *s = slot_get();

    if (__builtin_expect(s == NULL, 0)) {
        account(a, da, alloc_a);
        account(b, db, alloc_b);
        return;
    }
    counter_add(&s->bytes[a], da);
    counter_inc(alloc_a ? &s->allocs[a] : &s->frees[a], 1);
    counter_add(&s->bytes[b], db);
    counter_inc(alloc_b ? &s->allocs[b] : &s->frees[b], 1);
}

void kv_mem_account(enum kv_mod mod, int64_t bytes)
{
    account(mod, bytes, bytes > 0);
}

void kv_mem_stat_add(enum kv_stat stat, uint64_t n)
{
    struct kv_mem_slot *s = slot_get();

    if (__builtin_expect(s == NULL, 0)) {
        pthread_mutex_lock(&slots_lock);
        retired.stat[stat] += n;
        pthread_mutex_unlock(&slots_lock);
        return;
    }
    counter_inc(&s->stat[stat], n);
}

/* ---- allocation-failure injection (faults build only) --------------------
 * Built with -DKV_FAULTS (./autobuild.sh faults): KV_FAULT_NTH=N in the
 * environment makes the Nth allocation of the process fail (every
 * kv_mem_alloc/calloc/realloc, buffer and object get counts, whether the
 * pool or malloc serves it); KV_FAULT_MOD=NAME counts only that module's.
 * N = 0 only counts. At exit the count is printed, so a driver can first
 * learn how many allocation points a scenario has, then fail each in turn.
 * Without KV_FAULTS none of this is compiled. */
#ifdef KV_FAULTS
static uint64_t fault_nth;  /* ro after the constructor */
static int fault_mod = -1;  /* ro after the constructor */
static uint64_t fault_seen; /* atomic */

static void fault_report(void)
{
    char line[128];
    int n = snprintf(line, sizeof(line), "[mem] faults: %llu allocations counted\n",
                     (unsigned long long)__atomic_load_n(&fault_seen, __ATOMIC_RELAXED));

    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nowhere to report it */
    }
}

__attribute__((constructor)) static void fault_init(void)
{
    const char *nth = getenv("KV_FAULT_NTH"), *mod = getenv("KV_FAULT_MOD");

    if (!nth)
        return;
    fault_nth = strtoull(nth, NULL, 10);
    for (int i = 0; mod && i < KV_MOD__COUNT; i++)
        if (strcmp(mod, mod_names[i]) == 0)
            fault_mod = i;
    atexit(fault_report);
}

static int fault_fails(enum kv_mod mod)
{
    uint64_t n;

    if (fault_mod >= 0 && (int)mod != fault_mod)
        return 0;
    n = __atomic_add_fetch(&fault_seen, 1, __ATOMIC_RELAXED);
    if (n != fault_nth)
        return 0;
    {
        char line[128];
        int k = snprintf(line, sizeof(line), "[mem] fault injected: allocation %llu (%s)\n",
                         (unsigned long long)n, mod_names[mod]);

        if (write(STDERR_FILENO, line, (size_t)k) < 0) {
            /* nowhere to report it */
        }
    }
    return 1;
}
#define FAULT(mod) __builtin_expect(fault_fails(mod), 0)
#else
#define FAULT(mod) 0
#endif

/* ---- counted allocation --------------------------------------------------- */
void *kv_mem_alloc(enum kv_mod mod, size_t size)
{
    struct kv_mem_hdr *h;

    if (size > SIZE_MAX - sizeof(*h) || FAULT(mod))
        return NULL;
    h = malloc(sizeof(*h) + size);
    if (!h)
        return NULL;
    h->size = size;
    h->mod = mod;
    h->magic = KV_MEM_MAGIC;
    account(mod, (int64_t)size, 1);
    return h + 1;
}

void *kv_mem_calloc(enum kv_mod mod, size_t size)
{
    void *p = kv_mem_alloc(mod, size);

    if (p)
        memset(p, 0, size);
    return p;
}

void *kv_mem_realloc(enum kv_mod mod, void *p, size_t size)
{
    struct kv_mem_hdr *h, *nh;
    size_t old;

    if (!p)
        return kv_mem_alloc(mod, size);
    if (size > SIZE_MAX - sizeof(*h) || FAULT(mod))
        return NULL;
    h = (struct kv_mem_hdr *)p - 1;
    assert(h->magic == KV_MEM_MAGIC && h->mod == (uint32_t)mod);
    old = h->size;
    nh = realloc(h, sizeof(*nh) + size);
    if (!nh)
        return NULL;
    nh->size = size;
    /* a realloc is one free and one allocation of the new size */
    account(mod, -(int64_t)old, 0);
    account(mod, (int64_t)size, 1);
    return nh + 1;
}

void kv_mem_free(enum kv_mod mod, void *p)
{
    struct kv_mem_hdr *h;

    if (!p)
        return;
    h = (struct kv_mem_hdr *)p - 1;
    assert(h->magic == KV_MEM_MAGIC && "kv_mem_free of a block kv_mem did not allocate");
    assert(h->mod == (uint32_t)mod && "kv_mem_free against the wrong module");
    account((enum kv_mod)h->mod, -(int64_t)h->size, 0);
    h->magic = 0;
    free(h);
}

char *kv_mem_strdup(enum kv_mod mod, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = kv_mem_alloc(mod, n);

    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- IO buffer pool -------------------------------------------------------- */
static int pool_class(size_t size, size_t *cap)
{
    size_t c = KV_POOL_MIN;
    int i = 0;

    while (c < size) {
        c <<= 1;
        i++;
    }
    *cap = c;
    return i;
}

void *kv_mem_buf_get(size_t size, size_t *cap)
{
    size_t c;
    int cls;
    void *b;

    if (FAULT(KV_MOD_BUF))
        return NULL;
    if (size > KV_POOL_MAX) {
        b = malloc(size);
        if (!b)
            return NULL;
        account(KV_MOD_BUF, (int64_t)size, 1);
        *cap = size;
        return b;
    }
    cls = pool_class(size, &c);
    b = my_cache.head[cls];
    if (b) {
        my_cache.head[cls] = *(void **)b;
        my_cache.bytes -= c;
        account(KV_MOD_POOL, -(int64_t)c, 0);
    } else {
        b = malloc(c);
        if (!b)
            return NULL;
    }
    account(KV_MOD_BUF, (int64_t)c, 1);
    *cap = c;
    return b;
}

void kv_mem_buf_put(void *buf, size_t cap)
{
    size_t c;
    int cls;

    if (!buf)
        return;
    account(KV_MOD_BUF, -(int64_t)cap, 0);
    if (cap > KV_POOL_MAX || my_cache.bytes + cap > KV_POOL_CACHE_BYTES) {
        free(buf);
        return;
    }
    cls = pool_class(cap, &c);
    assert(c == cap && "kv_mem_buf_put with a capacity kv_mem_buf_get did not give");
    if (c != cap) {
        free(buf); /* never cache a buffer in a class larger than itself */
        return;
    }
    *(void **)buf = my_cache.head[cls];
    my_cache.head[cls] = buf;
    my_cache.bytes += cap;
    account(KV_MOD_POOL, (int64_t)cap, 1);
}

static size_t obj_class(size_t size)
{
    return size ? (size - 1) / 64 : 0;
}

void *kv_mem_obj_get(enum kv_mod mod, size_t size)
{
    size_t cls = obj_class(size), cap = (cls + 1) * 64;
    void *p;

    if (size > KV_OBJ_MAX)
        return kv_mem_alloc(mod, size);
    if (FAULT(mod))
        return NULL;
    p = my_objs.head[cls];
    if (p) {
        my_objs.head[cls] = *(void **)p;
        my_objs.bytes -= cap;
        account2(KV_MOD_POOL, -(int64_t)cap, 0, mod, (int64_t)cap, 1);
        return p;
    }
    p = malloc(cap);
    if (!p)
        return NULL;
    account(mod, (int64_t)cap, 1);
    return p;
}

void kv_mem_obj_put(enum kv_mod mod, void *p, size_t size)
{
    size_t cls = obj_class(size), cap = (cls + 1) * 64;

    if (!p)
        return;
    if (size > KV_OBJ_MAX) {
        kv_mem_free(mod, p);
        return;
    }
    if (my_objs.bytes + cap > KV_OBJ_CACHE_BYTES) {
        account(mod, -(int64_t)cap, 0);
        free(p);
        return;
    }
    *(void **)p = my_objs.head[cls];
    my_objs.head[cls] = p;
    my_objs.bytes += cap;
    account2(mod, -(int64_t)cap, 0, KV_MOD_POOL, (int64_t)cap, 1);
}

void kv_mem_pool_drain(void)
{
    for (size_t i = 0; i < KV_OBJ_CLASSES; i++) {
        size_t cap = (i + 1) * 64;

        while (my_objs.head[i]) {
            void *p = my_objs.head[i];

            my_objs.head[i] = *(void **)p;
            my_objs.bytes -= cap;
            account(KV_MOD_POOL, -(int64_t)cap, 0);
            free(p);
        }
    }
    for (int i = 0; i < KV_POOL_CLASSES; i++) {
        size_t c = (size_t)KV_POOL_MIN << i;

        while (my_cache.head[i]) {
            void *b = my_cache.head[i];

            my_cache.head[i] = *(void **)b;
            my_cache.bytes -= c;
            account(KV_MOD_POOL, -(int64_t)c, 0);
            free(b);
        }
    }
}

/* ---- snapshots ------------------------------------------------------------ */
void kv_mem_snapshot(struct kv_mem_snapshot *out)
{
    struct kv_mem_slot sum;

    memset(&sum, 0, sizeof(sum));
    pthread_mutex_lock(&slots_lock);
    slot_fold(&sum, &retired);
    for (struct kv_mem_slot *s = slots; s; s = s->next)
        slot_fold(&sum, s);
    pthread_mutex_unlock(&slots_lock);

    for (int i = 0; i < KV_MOD__COUNT; i++) {
        out->mod[i].bytes = sum.bytes[i];
        out->mod[i].allocs = sum.allocs[i];
        out->mod[i].frees = sum.frees[i];
    }
    memcpy(out->stat, sum.stat, sizeof(out->stat));
}

int64_t kv_mem_held_total(const struct kv_mem_snapshot *s)
{
    int64_t t = 0;

    for (int i = 0; i < KV_MOD__COUNT; i++)
        t += s->mod[i].bytes;
    return t;
}

size_t kv_mem_appendf(char *buf, size_t cap, size_t len, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (len + 1 >= cap)
        return len;
    va_start(ap, fmt);
    n = vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return len;
    return (size_t)n >= cap - len ? cap - 1 : len + (size_t)n;
}

static uint64_t live(const struct kv_mem_snapshot *s, enum kv_mod m)
{
    return s->mod[m].allocs - s->mod[m].frees;
}

size_t kv_mem_format(const struct kv_mem_snapshot *s, char *buf, size_t cap)
{
    size_t len = 0;

    if (cap == 0)
        return 0;
    buf[0] = '\0';
    len = kv_mem_appendf(buf, cap, len, "%-12s %16s %14s %14s\n", "module", "bytes_held", "allocs",
                 "frees");
    for (int i = 0; i < KV_MOD__COUNT; i++)
        len = kv_mem_appendf(buf, cap, len, "%-12s %16lld %14llu %14llu\n", mod_names[i],
                     (long long)s->mod[i].bytes, (unsigned long long)s->mod[i].allocs,
                     (unsigned long long)s->mod[i].frees);
    len = kv_mem_appendf(buf, cap, len, "%-12s %16lld\n", "TOTAL", (long long)kv_mem_held_total(s));
    len = kv_mem_appendf(buf, cap, len, "in flight: connections %llu, messages %llu, requests %llu\n",
                 (unsigned long long)live(s, KV_MOD_CONNECTION),
                 (unsigned long long)live(s, KV_MOD_MESSAGE),
                 (unsigned long long)live(s, KV_MOD_REQUEST));
    for (int i = 0; i < KV_STAT__COUNT; i++)
        len = kv_mem_appendf(buf, cap, len, "%s %llu\n", stat_names[i],
                     (unsigned long long)s->stat[i]);
    return len;
}
