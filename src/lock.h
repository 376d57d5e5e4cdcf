/* lock.h -- the one lock of a server with several event loops.
 *
 * Every callback that touches shared state (hub, history, runs, tickets,
 * metrics) runs with the lock held. The delivery path does not: a session's
 * queue and socket belong to its own loop (server.h). The lock is reentrant
 * per thread, and costs nothing with one loop (--threads 1). Agents run on
 * the main loop: other loops hand their agent calls over with aw_on_main. */
#ifndef AW_LOCK_H
#define AW_LOCK_H

#include <stdbool.h>

void aw_lock(void);
void aw_unlock(void);

/* Is this the main loop's thread (the one that owns agents and signals)? */
bool aw_on_main_thread(void);

/* Runs fn(arg) on the main loop under the lock: now when called there, else
 * on its next turn. 0, or AW_ENOMEM (fn not called). */
int aw_on_main(void (*fn)(void *arg), void *arg);

#endif
