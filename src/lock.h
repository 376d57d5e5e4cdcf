/* lock.h -- the shared lock of a server with several event loops, and its
 * shards.
 *
 * Every callback that touches shared state (hub, history, runs, tickets,
 * metrics) runs with the lock held. The delivery path does not: a session's
 * queue and socket belong to its own loop (server.h). The lock is reentrant
 * per thread, and costs nothing with one loop (--threads 1). Agents run on
 * the main loop: other loops hand their agent calls over with aw_on_main.
 *
 * Shards: the lock is a reader-writer lock. aw_lock takes it alone (the
 * exclusive mode every callback above uses). aw_shard_lock(i) takes it
 * shared, together with shard i's own mutex, so loops publishing to users
 * of different shards run at once (hub.h says which state a shard owns).
 * Under a shard lock, code touches only that shard's state, its own loop's
 * sessions, and state with its own small lock (loop inboxes, the history
 * pool); it never calls aw_lock. Within an exclusive hold the shard calls
 * do nothing: the lock alone covers every shard. */
#ifndef AW_LOCK_H
#define AW_LOCK_H

#include <stdbool.h>

/* Before the loops start (several_loops: more than one, the lock is
 * real), and after they stopped (lock.c). */
void aw_lock_init(bool several_loops, unsigned nloops);
void aw_lock_dispose(void);

void aw_lock(void);
void aw_unlock(void);

/* Lets go of the lock alone around work that touches no shared state
 * (parsing a request body), however deep this thread holds it; returns that
 * depth for aw_lock_resume, which takes it again. Other loops publish
 * meanwhile: the caller keeps no pointer into shared state across the pair.
 * A hold taken from a shared one (aw_lock_shared) goes back to shared; a
 * shared hold alone is kept (0 is returned). */
int aw_lock_suspend(void);
void aw_lock_resume(int depth);

/* The lock shared, for a read callback that touches mostly its own
 * session (an HTTP request): other loops may hold it shared or hold shards
 * meanwhile. Under it, aw_lock lets go of the shared hold and takes the
 * lock alone (the caller keeps no pointer into shared state across it), and
 * the outermost aw_unlock takes it shared again; aw_shard_lock adds only
 * the shard's mutex. aw_lock_shared takes nothing with one loop or when
 * this thread holds the lock in any way already; then it returns false and
 * the caller does not call aw_unlock_shared. */
bool aw_lock_shared(void); /* false: held already (this or stronger): do not unlock */
void aw_unlock_shared(void);
bool aw_in_shared(void);

/* Shards: 1 with one loop, else a power of two, 4 per loop (at most
 * AW_SHARDS_MAX). */
#define AW_SHARDS_MAX 64
unsigned aw_shards(void);
void aw_shard_lock(unsigned shard);
void aw_shard_unlock(unsigned shard);
/* Does this thread hold a shard lock (and not the lock alone)? */
bool aw_in_shard(void);

#ifdef AW_LOCK_STATS
/* Built with -DAW_LOCK_STATS=ON (CMake option, off by default): each call
 * site of aw_lock() is a static record (file, line, function), and the lock
 * counts its outermost acquisitions, the contended ones (trylock failed),
 * the time waited and held (wall clock, and the holder's CPU time), and a
 * histogram of both (lockstat.c). The counters live under the lock itself.
 * One JSON line goes to stderr on SIGUSR2 and when the server is disposed.
 * Off, none of this exists. */
#include <stdint.h>
#include <uv.h>

typedef struct aw_lock_site {
    const char *file, *func;
    int line;
    bool listed;
    struct aw_lock_site *next;
    uint64_t acquisitions, contended, wait_ns, hold_ns, hold_cpu_ns, hold_max_ns;
} aw_lock_site_t;

void aw_lock_at(aw_lock_site_t *site);
#define aw_lock()                                                                                  \
    do {                                                                                           \
        static aw_lock_site_t aw_lock_site_ = {                                                    \
            .file = __FILE__, .func = __func__, .line = __LINE__};                                 \
        aw_lock_at(&aw_lock_site_);                                                                \
    } while (0)
/* a resume counts for its caller, as an aw_lock() there would */
void aw_lock_resume_at(int depth, aw_lock_site_t *site);
#define aw_lock_resume(depth)                                                                      \
    do {                                                                                           \
        static aw_lock_site_t aw_lock_site_ = {                                                    \
            .file = __FILE__, .func = __func__, .line = __LINE__};                                 \
        aw_lock_resume_at((depth), &aw_lock_site_);                                                \
    } while (0)

/* lockstat.c: what aw_lock_at and aw_unlock call with stats on (the lock
 * itself stays lock.c's), and what the shard calls report. */
void aw_lockstat_acquire(bool (*trylock)(void), void (*lock)(void), aw_lock_site_t *site);
void aw_lockstat_release(void (*unlock)(void));
void aw_lockstat_shard_acquired(bool contended, uint64_t wait_ns);
void aw_lockstat_shard_released(uint64_t hold_ns);
uint64_t aw_lockstat_now_ns(void);
/* Starts the clock and the SIGUSR2 handler on the main loop. */
void aw_lockstat_start(uv_loop_t *loop, unsigned nloops);
/* Writes the counters so far as one JSON line to stderr; takes the lock. */
void aw_lockstat_dump(const char *why);
#endif

/* Is this the main loop's thread (the one that owns agents and signals)? */
bool aw_on_main_thread(void);

/* Runs fn(arg) on the main loop under the lock: now when called there, else
 * on its next turn. 0, or AW_ENOMEM (fn not called). */
int aw_on_main(void (*fn)(void *arg), void *arg);

#endif
