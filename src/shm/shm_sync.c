/* SPDX-License-Identifier: BSD-3-Clause -- libevkv, see LICENSE */
/* src/shm/shm_sync.c -- --sync always|everysec|no: what a power loss may cost a data file.
 *
 * A --data-file store is a MAP_SHARED mapping: the kernel writes dirty pages back when it
 * likes, in any order, so after a power loss the file is a torn image, each 4 KiB page as
 * it was at its own instant. The ordered stores that make kill -9 safe (item complete,
 * then one atomic store of its offset) are not ordered on the disk. What holds instead:
 * when a sync (msync MS_SYNC of the whole mapping) that began at instant S has completed,
 * every page of the file is at least as new as it was at S, whatever happens next.
 *
 * So the rule here: nothing that an on-disk index could still point at is changed before
 * a sync begun after it stopped being pointed at has completed.
 *
 *   - A freed chunk (an overwritten or deleted item, an evicted one, a compacted one,
 *     a large item's pages, an index line) is not returned to the allocator: a removed
 *     item is marked dead (atime = SHM_ATIME_DEAD, outside the checksum), a refused
 *     write's item void, and the chunk is listed. It then waits for two syncs. The
 *     first is the next to begin (it takes the list before it begins): until it has
 *     completed, some copy of the index may still name the item, which stays intact --
 *     for a replaced one, as the key's previous copy. After it, every item of the list
 *     that is not marked yet (a replaced one) is marked dead: it can be nobody's
 *     previous copy any more. The second sync puts those marks on the disk, and only
 *     after it completes is the chunk freed and reused. So a chunk is never reused while
 *     an image of the disk could show its item unmarked, and no torn image shows a stale
 *     copy of a key as an intact, unmarked item: recovery may take the newest copy of a
 *     key whose slot is torn, and drops the key when that copy is marked removed (a key
 *     deleted before the last sync never comes back, with any value).
 *   - A split leaves each moved slot word in the old bucket too, with the class byte
 *     SHM_CLASS_MOVED (so nothing at run time uses it); the first sync clears them, before
 *     it marks the chunks of its list. A torn split (new bucket old on disk, old bucket
 *     new) then still names the item; recovery files it where the state says.
 *   - A new index page is synced on its own (zeroed) before the directory names it, so a
 *     torn image never reads a page's stale bytes as slots.
 *   - The torn case left: a slot rewritten after the sync (the key overwritten) whose new
 *     item's pages are older on disk than the slot's. Recovery (shm_recover.c) then finds
 *     the slot's item unsound and looks for the key's previous copy, which the list above
 *     has kept intact: the newest item at a sound chunk position whose keyed hash has the
 *     slot's bucket and tag (none when that newest one is marked removed; a void one is
 *     never looked at). Every item older than the key's state at the last completed sync
 *     is marked on the disk or gone, so the newest intact one is that state or later.
 *
 * The policies: everysec runs the sync every second (skipped when nothing was written or
 * freed); always runs it whenever a writer waits in kv_shm_sync_barrier (the server calls
 * it before it releases a batch of answers, so one sync commits every write of every
 * worker that waits meanwhile); no starts no thread and defers nothing: the kernel's
 * writeback, no bound. Memory: chunks freed in one interval wait for the end of the next
 * one; a writer that finds the store full while some wait runs syncs itself
 * (kv_shm_sync_reclaim, up to two) before it evicts.
 *
 * Locks: y->mu (counters, waiters) and y->lmu (the lists) are leaves; the sync itself
 * takes a stripe lock per moved word and the allocator's locks when it frees, with no
 * other lock held. */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "kv_mem.h"
#include "shm_int.h"

struct moved {
    uint64_t *slot;
    uint64_t word;
    unsigned stripe;
};

struct lists {
    uint64_t *off;  /* chunks freed since the last swap */
    size_t n, cap;
    struct moved *mv; /* words splits left behind since the last swap */
    size_t nmv, capmv;
};

struct shm_sync {
    int policy;
    uint64_t interval_ms; /* ro */
    void (*flushed)(void *ctx); /* ro: test knob, see kv_shm_open_opts */
    void *flushed_ctx;
    pthread_mutex_t mu;  /* guards the fields below up to the lists */
    pthread_cond_t wake; /* the thread waits here for work */
    pthread_cond_t done; /* waiters for a completed sync */
    pthread_t th;
    int have_thread, stop;
    int hold; /* test knob: no sync begins while set (kv_shm_sync_hold) */
    uint64_t want;               /* the sync number someone waits for */
    uint64_t started, completed; /* sync numbers (one runs at a time) */
    uint64_t ok, last_ok;        /* syncs that succeeded; the number of the last one */
    uint64_t synced_wseq;        /* s->wseq read before the last completed sync began */
    uint64_t errors;             /* failed syncs (their lists wait for the next) */
    int last_errno;
    int failing;                 /* atomic: errno of the last sync when it failed, else 0 */
    int64_t last_start_ms, last_done_ms; /* CLOCK_REALTIME */
    uint64_t last_us, max_us, total_us;
    uint64_t released; /* chunks freed after their second sync, in all */
    pthread_mutex_t run; /* one sync at a time: the thread's or a reclaiming writer's */
    struct lists aged;   /* guarded by run: chunks past their first sync, marked; freed
                          * after the next sync completes (moved words: none) */
    pthread_mutex_t lmu; /* guards cur */
    struct lists cur;
    uint64_t pending;     /* atomic: chunks waiting (cur, aged, the list of a running sync) */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void lists_free(struct lists *l)
{
    kv_mem_free(KV_MOD_SHM, l->off);
    kv_mem_free(KV_MOD_SHM, l->mv);
    memset(l, 0, sizeof(*l));
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 1024;
    while (c < need)
        c *= 2;
    void *np = kv_mem_realloc(KV_MOD_SHM, *p, c * elem);
    if (!np)
        return KV_ENOMEM;
    *p = np;
    *cap = c;
    return 0;
}

static void mark_dead(struct kv_shm_store *s, uint64_t off, uint32_t mark);

/* Clears the moved words of l (if still there). No lock held. */
static void moved_clear(struct kv_shm_store *s, struct lists *l)
{
    for (size_t i = 0; i < l->nmv; i++) {
        struct shm_stripe *st = &s->stripes[l->mv[i].stripe & (SHM_STRIPES - 1)];
        pthread_rwlock_wrlock(&st->lock);
        if (__atomic_load_n(l->mv[i].slot, __ATOMIC_RELAXED) == l->mv[i].word)
            __atomic_store_n(l->mv[i].slot, 0, __ATOMIC_RELEASE);
        pthread_rwlock_unlock(&st->lock);
    }
}

/* Marks dead every item of l that is not marked yet (replaced ones), after their first
 * sync: nobody's previous copy any more. Only the sync holding y->run owns them. */
static void chunks_mark(struct kv_shm_store *s, struct lists *l)
{
    for (size_t i = 0; i < l->n; i++) {
        uint64_t off = l->off[i];
        if (off >= s->data_off && off + SHM_ITEM_HDR <= s->data_end &&
            ((struct shm_item *)shm_ptr(s, off))->atime < SHM_ATIME_VOID)
            mark_dead(s, off, SHM_ATIME_DEAD);
    }
}

static void chunks_free(struct kv_shm_store *s, struct lists *l)
{
    for (size_t i = 0; i < l->n; i++)
        kv_shm_free_now(s, l->off[i]);
}

/* Clears the moved words of l, then frees its chunks at once (the close). No lock held. */
static void lists_release(struct kv_shm_store *s, struct lists *l)
{
    moved_clear(s, l);
    chunks_free(s, l);
}

/* Records a failed msync (errno e) made outside sync_once: counted as a failed sync, so
 * that writes are refused (everysec) or the next barrier fails (always), and the close
 * does not mark the file clean. */
static void sync_failure(struct kv_shm_store *s, int e)
{
    struct shm_sync *y = s->sync;
    __atomic_store_n(&s->sync_failed, 1, __ATOMIC_RELEASE);
    if (!y)
        return;
    pthread_mutex_lock(&y->mu);
    y->errors++;
    y->last_errno = e;
    __atomic_store_n(&y->failing, e, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&y->mu);
}

/* One sync: take the lists, flush, release. Holds y->run. 0, or KV_EIO (lists kept). */
static int sync_once(struct kv_shm_store *s, struct shm_sync *y)
{
    pthread_mutex_lock(&y->run);
    if (__atomic_load_n(&y->hold, __ATOMIC_ACQUIRE) && !y->stop) {
        pthread_mutex_unlock(&y->run); /* held (test knob): no sync begins */
        return 0;
    }
    pthread_mutex_lock(&y->lmu);
    struct lists l = y->cur;
    memset(&y->cur, 0, sizeof(y->cur));
    pthread_mutex_unlock(&y->lmu);
    /* the writes this sync covers: every one counted before it begins */
    uint64_t w = __atomic_load_n(&s->wseq, __ATOMIC_ACQUIRE);
    pthread_mutex_lock(&y->mu);
    uint64_t n = ++y->started;
    y->last_start_ms = now_ms();
    pthread_mutex_unlock(&y->mu);
    uint64_t t0 = mono_us();
    int rc = msync(s->base, s->size, MS_SYNC) ? errno : 0;
    uint64_t us = mono_us() - t0;
    size_t nfreed = 0;
    if (rc == 0) {
        if (y->flushed)
            y->flushed(y->flushed_ctx);
        /* the list of the sync before: its marks were made before this one began, so
         * they are on the disk now -- its chunks may be reused */
        chunks_free(s, &y->aged);
        nfreed = y->aged.n;
        __atomic_sub_fetch(&y->pending, nfreed, __ATOMIC_RELAXED);
        lists_free(&y->aged);
        /* this sync's list: nothing on the disk names its items or needs them as a
         * previous copy now; marked, they wait for the next sync */
        moved_clear(s, &l);
        chunks_mark(s, &l);
        kv_mem_free(KV_MOD_SHM, l.mv);
        l.mv = NULL;
        l.nmv = l.capmv = 0;
        y->aged = l;
        memset(&l, 0, sizeof(l));
    } else {
        /* nothing is known to be on disk: the lists wait for the next sync */
        pthread_mutex_lock(&y->lmu);
        if (grow((void **)&y->cur.off, &y->cur.cap, y->cur.n + l.n, sizeof(uint64_t)) == 0 &&
            grow((void **)&y->cur.mv, &y->cur.capmv, y->cur.nmv + l.nmv,
                 sizeof(struct moved)) == 0) {
            if (l.n) /* (memcpy of NULL, 0 is undefined) */
                memcpy(y->cur.off + y->cur.n, l.off, l.n * sizeof(uint64_t));
            y->cur.n += l.n;
            if (l.nmv)
                memcpy(y->cur.mv + y->cur.nmv, l.mv, l.nmv * sizeof(struct moved));
            y->cur.nmv += l.nmv;
        } /* else: leaked until the next recovery, never reused early */
        pthread_mutex_unlock(&y->lmu);
    }
    lists_free(&l);
    pthread_mutex_lock(&y->mu);
    y->completed = n;
    if (rc == 0) {
        y->synced_wseq = w;
        y->last_done_ms = now_ms();
        y->ok++;
        y->last_ok = n;
        y->released += nfreed;
    } else {
        y->errors++;
        y->last_errno = rc;
        __atomic_store_n(&s->sync_failed, 1, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&y->failing, rc, __ATOMIC_RELEASE);
    y->last_us = us;
    y->total_us += us;
    if (us > y->max_us)
        y->max_us = us;
    pthread_cond_broadcast(&y->done);
    pthread_mutex_unlock(&y->mu);
    pthread_mutex_unlock(&y->run);
    return rc ? KV_EIO : 0;
}

static int idle(struct kv_shm_store *s, struct shm_sync *y)
{
    return __atomic_load_n(&s->wseq, __ATOMIC_ACQUIRE) == y->synced_wseq &&
           __atomic_load_n(&y->pending, __ATOMIC_RELAXED) == 0 && y->cur.nmv == 0;
}

static void *sync_main(void *arg)
{
    struct kv_shm_store *s = arg;
    struct shm_sync *y = s->sync;
    pthread_mutex_lock(&y->mu);
    while (!y->stop) {
        while (y->hold && !y->stop)
            pthread_cond_wait(&y->wake, &y->mu);
        if (y->stop)
            break;
        if (y->want <= y->completed) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            /* everysec; always frees its lists at least that often */
            uint64_t ns = (uint64_t)until.tv_nsec + (y->interval_ms % 1000) * 1000000u;
            until.tv_sec += (time_t)(y->interval_ms / 1000 + ns / 1000000000u);
            until.tv_nsec = (long)(ns % 1000000000u);
            pthread_cond_timedwait(&y->wake, &y->mu, &until);
            if (y->stop)
                break;
            if (y->hold || (y->want <= y->completed && idle(s, y)))
                continue; /* held, or nothing written and nothing waiting: no flush */
        }
        pthread_mutex_unlock(&y->mu);
        sync_once(s, y);
        pthread_mutex_lock(&y->mu);
    }
    pthread_mutex_unlock(&y->mu);
    return NULL;
}

int kv_shm_sync_start(struct kv_shm_store *s, int policy, const struct kv_shm_open_opts *o)
{
    int no_defer = o ? o->sync_no_defer : 0;
    unsigned interval_ms = o ? o->sync_interval_ms : 0;
    if (!s->is_file || s->attach || policy == KV_SYNC_NO)
        return 0;
    struct shm_sync *y = kv_mem_calloc(KV_MOD_SHM, sizeof(*y));
    if (!y)
        return KV_ENOMEM;
    y->policy = policy;
    y->interval_ms = interval_ms ? interval_ms : 1000;
    y->flushed = o ? o->sync_flushed : NULL;
    y->flushed_ctx = o ? o->sync_ctx : NULL;
    pthread_mutex_init(&y->mu, NULL);
    pthread_mutex_init(&y->run, NULL);
    pthread_mutex_init(&y->lmu, NULL);
    pthread_cond_init(&y->wake, NULL);
    pthread_cond_init(&y->done, NULL);
    y->synced_wseq = __atomic_load_n(&s->wseq, __ATOMIC_RELAXED);
    s->sync = y;
    s->defer = !no_defer;
    if (pthread_create(&y->th, NULL, sync_main, s)) {
        s->sync = NULL;
        s->defer = 0;
        kv_mem_free(KV_MOD_SHM, y);
        return KV_EIO;
    }
    y->have_thread = 1;
    return 0;
}

void kv_shm_sync_stop(struct kv_shm_store *s)
{
    struct shm_sync *y = s->sync;
    if (!y)
        return;
    pthread_mutex_lock(&y->mu);
    y->stop = 1;
    pthread_cond_broadcast(&y->wake);
    pthread_mutex_unlock(&y->mu);
    if (y->have_thread)
        pthread_join(y->th, NULL);
    /* a last sync, so that what waits is released as a sync always releases it (after
     * the flush): a power loss during the close's own flush still finds every item that
     * an older copy of the index may name */
    sync_once(s, y);
    s->defer = 0;
    lists_release(s, &y->cur);
    lists_free(&y->cur);
    chunks_free(s, &y->aged);
    lists_free(&y->aged);
    pthread_cond_destroy(&y->wake);
    pthread_cond_destroy(&y->done);
    pthread_mutex_destroy(&y->mu);
    pthread_mutex_destroy(&y->run);
    pthread_mutex_destroy(&y->lmu);
    s->sync = NULL;
    kv_mem_free(KV_MOD_SHM, y);
}

/* Marks the item at off (SHM_ATIME_DEAD or _VOID), if it is one. Only the owner of an
 * unlinked chunk gets here, so nothing else writes it now. What recovery makes of a mark
 * (shm_recover.c, restore_lost): a removed item (DEAD) is never taken, and when it is the
 * newest copy of a key whose slot is torn, no older copy is taken either -- the key was
 * removed after them (a key deleted before the last sync and written again after it must
 * not come back with its deleted value, nor with any older one); a new item that never was
 * the key's state (VOID: a refused or undone write) is ignored; a replaced item is not
 * marked, and stays the key's previous copy (the newest copy wins by version). */
static void mark_dead(struct kv_shm_store *s, uint64_t off, uint32_t mark)
{
    if (off < s->data_off || off + SHM_ITEM_HDR > s->data_end)
        return;
    struct shm_item *it = shm_ptr(s, off);
    if (__atomic_load_n(&it->magic, __ATOMIC_RELAXED) == SHM_ITEM_MAGIC)
        __atomic_store_n(&it->atime, mark, __ATOMIC_RELAXED);
}

/* mark: 0 (replaced), SHM_ATIME_DEAD (removed) or SHM_ATIME_VOID (never committed) */
static void defer_free(struct kv_shm_store *s, uint64_t off, uint32_t mark)
{
    struct shm_sync *y = s->sync;
    /* in a transaction (shm_txn.c; only its thread runs): an undo may point at the item
     * again, so it is freed at the commit (which calls kv_shm_free with s->txn cleared) */
    if (s->txn && kv_shm_txn_defer_free(s, off, mark != 0))
        return;
    if (!s->defer || !y) {
        kv_shm_free_now(s, off);
        return;
    }
    if (mark)
        mark_dead(s, off, mark);
    pthread_mutex_lock(&y->lmu);
    int rc = grow((void **)&y->cur.off, &y->cur.cap, y->cur.n + 1, sizeof(uint64_t));
    if (rc == 0) {
        y->cur.off[y->cur.n++] = off;
        __atomic_add_fetch(&y->pending, 1, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&y->lmu);
    /* no room to remember it: a flush begun now covers the unlink, then it is free;
     * when that flush fails too, leaked until the next recovery, never reused early */
    if (rc) {
        if (msync(s->base, s->size, MS_SYNC) == 0)
            kv_shm_free_now(s, off);
        else
            sync_failure(s, errno);
    }
}

void kv_shm_free(struct kv_shm_store *s, uint64_t off)
{
    defer_free(s, off, SHM_ATIME_DEAD);
}

void kv_shm_free_replaced(struct kv_shm_store *s, uint64_t off)
{
    defer_free(s, off, 0);
}

void kv_shm_free_unpublished(struct kv_shm_store *s, uint64_t off)
{
    defer_free(s, off, SHM_ATIME_VOID);
}

int kv_shm_sync_moved(struct kv_shm_store *s, uint64_t *const *slots, const uint64_t *words,
                      size_t n, unsigned stripe)
{
    struct shm_sync *y = s->sync;
    if (!y)
        return KV_ENOMEM;
    pthread_mutex_lock(&y->lmu);
    int rc = grow((void **)&y->cur.mv, &y->cur.capmv, y->cur.nmv + n, sizeof(struct moved));
    for (size_t i = 0; rc == 0 && i < n; i++)
        y->cur.mv[y->cur.nmv++] = (struct moved){slots[i], words[i], stripe};
    pthread_mutex_unlock(&y->lmu);
    return rc;
}

int kv_shm_sync_range(struct kv_shm_store *s, uint64_t off, uint64_t len)
{
    if (!s->defer)
        return 0;
    long pg = sysconf(_SC_PAGESIZE);
    uint64_t a = off & ~(uint64_t)(pg - 1);
    if (msync(s->base + a, off + len - a, MS_SYNC) == 0)
        return 0;
    sync_failure(s, errno);
    return KV_EIO;
}

int kv_shm_sync_reclaim(struct kv_shm_store *s)
{
    struct shm_sync *y = s->sync;
    if (!s->defer || !y || __atomic_load_n(&y->pending, __ATOMIC_RELAXED) == 0 ||
        __atomic_load_n(&y->hold, __ATOMIC_RELAXED))
        return 0;
    /* a chunk is freed by the second sync after it waits: two, when none was aged yet */
    uint64_t before = __atomic_load_n(&y->pending, __ATOMIC_RELAXED);
    for (int i = 0; i < 2 && __atomic_load_n(&y->pending, __ATOMIC_RELAXED) >= before; i++)
        if (sync_once(s, y))
            break;
    return __atomic_load_n(&y->pending, __ATOMIC_RELAXED) < before;
}

/* ---- public ------------------------------------------------------------------------ */

void kv_shm_sync_hold(struct kv_shm_store *s, int hold)
{
    struct shm_sync *y = s->sync;
    if (!y)
        return;
    pthread_mutex_lock(&y->mu);
    __atomic_store_n(&y->hold, hold, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&y->wake);
    pthread_mutex_unlock(&y->mu);
    /* a sync already under way ends first: none runs once this returns */
    pthread_mutex_lock(&y->run);
    pthread_mutex_unlock(&y->run);
}

int kv_shm_sync_failing(const struct kv_shm_store *s)
{
    return s->sync ? __atomic_load_n(&s->sync->failing, __ATOMIC_ACQUIRE) : 0;
}

int kv_shm_sync_now(struct kv_shm_store *s)
{
    if (!s->sync) {
        if (!s->is_file || s->attach || msync(s->base, s->size, MS_SYNC) == 0)
            return 0;
        sync_failure(s, errno);
        return KV_EIO;
    }
    return sync_once(s, s->sync);
}

__thread uint64_t kv_shm_tl_wseq, kv_shm_tl_open;

int kv_shm_sync_barrier(struct kv_shm_store *s)
{
    struct shm_sync *y = s->sync;
    if (!y || y->policy != KV_SYNC_ALWAYS)
        return 0;
    /* this thread's last write, when it was to this store; else every write so far */
    uint64_t w = kv_shm_tl_open == s->open_id ? kv_shm_tl_wseq
                                              : __atomic_load_n(&s->wseq, __ATOMIC_ACQUIRE);
    pthread_mutex_lock(&y->mu);
    int rc = 0;
    if (y->errors) { /* see below: never an answer after a failed msync */
        pthread_mutex_unlock(&y->mu);
        return KV_EIO;
    }
    if (y->synced_wseq < w) {
        /* the next sync to begin reads wseq after this point: it covers w */
        uint64_t target = y->started + 1;
        if (y->want < target)
            y->want = target;
        pthread_cond_signal(&y->wake);
        while (y->completed < target && !y->stop)
            pthread_cond_wait(&y->done, &y->mu);
        /* any failed msync since the open fails every later barrier: the error is reported
         * once, and the pages it lost may be marked clean, so the next sync's success says
         * nothing about writes made before it */
        if (y->errors)
            rc = KV_EIO;
        else if (y->synced_wseq < w)
            rc = y->completed >= target ? KV_EIO  /* that sync failed */
                                        : KV_ECLOSED; /* the store is closing */
    }
    pthread_mutex_unlock(&y->mu);
    return rc;
}

void kv_shm_sync_stats(struct kv_shm_store *s, struct kv_shm_sync_stats *o)
{
    memset(o, 0, sizeof(*o));
    struct shm_sync *y = s->sync;
    o->policy = y ? y->policy : KV_SYNC_NO;
    o->deferring = s->defer;
    if (!y)
        return;
    pthread_mutex_lock(&y->mu);
    o->started = y->started;
    o->completed = y->ok;
    o->last_ok = y->last_ok;
    o->released = y->released;
    o->errors = y->errors;
    o->last_errno = y->last_errno;
    o->last_start_ms = y->last_start_ms;
    o->last_done_ms = y->last_done_ms;
    o->last_us = y->last_us;
    o->max_us = y->max_us;
    o->total_us = y->total_us;
    pthread_mutex_unlock(&y->mu);
    pthread_mutex_lock(&y->lmu);
    o->moved_waiting = y->cur.nmv;
    pthread_mutex_unlock(&y->lmu);
    o->chunks_waiting = __atomic_load_n(&y->pending, __ATOMIC_RELAXED);
}
