/* lock.c -- the shared lock of several event loops and its shards
 * (lock.h). With one loop there is none: every call is a no-op. The lock
 * is a reader-writer lock that prefers writers, so a stream of shard
 * holders never starves an exclusive one; its exclusive mode is recursive
 * per thread (lock_depth), so a callback may take it around code that
 * takes it again. Shard holders take it shared, once, then their shard's
 * mutex. */
#include "lock.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define SHARDS_PER_LOOP 4

typedef struct shard_lock {
    pthread_mutex_t m;
#ifdef AW_LOCK_STATS
    uint64_t since;
#endif
} __attribute__((aligned(64))) shard_lock_t; /* one cache line each */

static bool threaded; /* more than one loop: the lock is real */
static pthread_rwlock_t big_lock;
static shard_lock_t *shard_locks;
static unsigned nshards = 1;
static _Thread_local int lock_depth;
static _Thread_local bool in_shard;
static _Thread_local bool shared_held; /* aw_lock_shared, and not now exclusive */
static _Thread_local bool escalated;   /* the exclusive hold came from a shared one */
static _Thread_local bool shard_took;  /* aw_shard_lock took the lock shared itself */

void aw_lock_init(bool several_loops, unsigned nloops)
{
    threaded = several_loops;
    nshards = 1;
    if (!threaded)
        return;
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    if (pthread_rwlock_init(&big_lock, &attr) != 0)
        abort();
    pthread_rwlockattr_destroy(&attr);
    while (nshards < SHARDS_PER_LOOP * nloops && nshards < AW_SHARDS_MAX)
        nshards *= 2;
    shard_locks = aligned_alloc(64, nshards * sizeof *shard_locks);
    if (!shard_locks)
        abort();
    for (unsigned i = 0; i < nshards; i++)
        pthread_mutex_init(&shard_locks[i].m, NULL);
}

void aw_lock_dispose(void)
{
    if (threaded) {
        pthread_rwlock_destroy(&big_lock);
        for (unsigned i = 0; i < nshards; i++)
            pthread_mutex_destroy(&shard_locks[i].m);
        free(shard_locks);
        shard_locks = NULL;
    }
    threaded = false;
    nshards = 1;
}

unsigned aw_shards(void)
{
    return nshards;
}

bool aw_in_shard(void)
{
    return in_shard;
}

bool aw_in_shared(void)
{
    return shared_held;
}

bool aw_lock_shared(void)
{
    if (!threaded || lock_depth > 0 || shared_held || in_shard)
        return false; /* held already, in this mode or a stronger one */
    pthread_rwlock_rdlock(&big_lock);
    shared_held = true;
    return true;
}

void aw_unlock_shared(void)
{
    if (shared_held) {
        shared_held = false;
        pthread_rwlock_unlock(&big_lock);
    }
}

/* From a shared hold to the lock alone: the shared hold goes first (a
 * reader waiting to write waits for itself). */
static void leave_shared(void)
{
    if (shared_held) {
        shared_held = false;
        escalated = true;
        pthread_rwlock_unlock(&big_lock);
    }
}

static void exclusive_lock(void)
{
    if (in_shard) { /* a shard holder waiting for the lock alone waits forever */
        fputs("agentwire: aw_lock under a shard lock\n", stderr);
        abort();
    }
    leave_shared();
    pthread_rwlock_wrlock(&big_lock);
}

static void exclusive_unlock(void)
{
    pthread_rwlock_unlock(&big_lock);
    if (escalated) { /* back to the shared hold the caller had */
        escalated = false;
        pthread_rwlock_rdlock(&big_lock);
        shared_held = true;
    }
}

#ifdef AW_LOCK_STATS
static bool exclusive_trylock(void)
{
    if (in_shard)
        return false; /* exclusive_lock says why */
    leave_shared();
    return pthread_rwlock_trywrlock(&big_lock) == 0;
}

void aw_lock_at(aw_lock_site_t *site)
{
    if (threaded && lock_depth++ == 0)
        aw_lockstat_acquire(exclusive_trylock, exclusive_lock, site);
}

void(aw_lock)(void) /* a caller that does not see lock.h's macro */
{
    static aw_lock_site_t site = {.file = __FILE__, .func = "unlabelled"};
    aw_lock_at(&site);
}

void aw_unlock(void)
{
    if (threaded && --lock_depth == 0)
        aw_lockstat_release(exclusive_unlock);
}
#else
void aw_lock(void)
{
    if (threaded && lock_depth++ == 0)
        exclusive_lock();
}

void aw_unlock(void)
{
    if (threaded && --lock_depth == 0)
        exclusive_unlock();
}
#endif

void aw_shard_lock(unsigned shard)
{
    if (!threaded || lock_depth > 0)
        return; /* one loop, or the lock alone: every shard is this thread's */
    shard_took = !shared_held;
    if (shard_took)
        pthread_rwlock_rdlock(&big_lock);
    shard_lock_t *l = &shard_locks[shard & (nshards - 1)];
#ifdef AW_LOCK_STATS
    uint64_t t0 = 0;
    bool contended = pthread_mutex_trylock(&l->m) != 0;
    if (contended) {
        t0 = aw_lockstat_now_ns();
        pthread_mutex_lock(&l->m);
    }
    l->since = aw_lockstat_now_ns();
    aw_lockstat_shard_acquired(contended, contended ? l->since - t0 : 0);
#else
    pthread_mutex_lock(&l->m);
#endif
    in_shard = true;
}

void aw_shard_unlock(unsigned shard)
{
    if (!threaded || lock_depth > 0)
        return;
    shard_lock_t *l = &shard_locks[shard & (nshards - 1)];
    in_shard = false;
#ifdef AW_LOCK_STATS
    aw_lockstat_shard_released(aw_lockstat_now_ns() - l->since);
#endif
    pthread_mutex_unlock(&l->m);
    if (shard_took)
        pthread_rwlock_unlock(&big_lock);
}

int aw_lock_suspend(void)
{
    int depth = lock_depth;
    if (threaded && depth > 0) {
        lock_depth = 1;
        aw_unlock();
    }
    return depth;
}

#ifdef AW_LOCK_STATS
void aw_lock_resume_at(int depth, aw_lock_site_t *site)
{
    if (threaded && depth > 0) {
        aw_lock_at(site);
        lock_depth = depth;
    }
}
#else
void aw_lock_resume(int depth)
{
    if (threaded && depth > 0) {
        aw_lock();
        lock_depth = depth;
    }
}
#endif
