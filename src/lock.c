/* lock.c -- the one lock of several event loops (lock.h). With one loop
 * there is none: every call is a no-op. The lock is recursive per thread
 * (lock_depth), so a callback may take it around code that takes it again. */
#include "lock.h"

#include <uv.h>

static bool threaded; /* more than one loop: the lock is real */
static uv_mutex_t big_lock;
static _Thread_local int lock_depth;

void aw_lock_init(bool several_loops)
{
    threaded = several_loops;
    if (threaded)
        uv_mutex_init(&big_lock);
}

void aw_lock_dispose(void)
{
    if (threaded)
        uv_mutex_destroy(&big_lock);
    threaded = false;
}

#ifdef AW_LOCK_STATS
void aw_lock_at(aw_lock_site_t *site)
{
    if (threaded && lock_depth++ == 0)
        aw_lockstat_acquire(&big_lock, site);
}

void(aw_lock)(void) /* a caller that does not see lock.h's macro */
{
    static aw_lock_site_t site = {.file = __FILE__, .func = "unlabelled"};
    aw_lock_at(&site);
}

void aw_unlock(void)
{
    if (threaded && --lock_depth == 0)
        aw_lockstat_release(&big_lock);
}
#else
void aw_lock(void)
{
    if (threaded && lock_depth++ == 0)
        uv_mutex_lock(&big_lock);
}

void aw_unlock(void)
{
    if (threaded && --lock_depth == 0)
        uv_mutex_unlock(&big_lock);
}
#endif

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
