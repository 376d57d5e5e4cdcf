/* spawner.h -- a thread that starts child processes off the event loop.
 *
 * posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK), no copy of the page
 * tables) returns only once the child has exec'd: 0.5-2 ms with thousands
 * of descriptors open (the child's copy of the fd table, the exec). On a
 * loop, under the server's lock, a burst of starts would stall every loop.
 * The loop hands a request to the spawner instead and gets it back, with
 * the pid or an errno, on the loop (a uv_async), in the order asked.
 *
 * A child starts in a new session (its pid is its group id), with every
 * signal at its default and none blocked, its stdin, stdout and stderr
 * from the request's fds; every other fd of the server is close-on-exec.
 * The spawner closes the request's fds and frees its env once the child
 * has its copies (or the spawn failed). Watching and reaping the child is
 * the caller's. */
#ifndef AW_SPAWNER_H
#define AW_SPAWNER_H

#include <stdbool.h>
#include <sys/types.h>
#include <uv.h>

typedef struct spawn_req spawn_req_t;

struct spawn_req {
    /* The caller's, before spawner_submit: */
    char *const *argv;     /* tried first (PATH lookup without a '/'), or NULL */
    char *const *fallback; /* tried when argv is NULL or did not start */
    char **env;            /* malloc'd; the spawner frees it */
    int fds[3];            /* the child's 0, 1 and 2; the spawner closes them */
    void *data;
    /* The spawner's, when done_cb runs: */
    pid_t pid;         /* the child, when rc == 0 */
    int rc;            /* 0 or an errno */
    spawn_req_t *next; /* private */
};

typedef struct spawner spawner_t;

/* Called on the loop for each request, once its child started (or not). */
typedef void (*spawner_done_cb)(spawn_req_t *req);

/* Starts the thread. AW_OK, or an error (then *out is NULL). */
int spawner_create(uv_loop_t *loop, spawner_done_cb done, spawner_t **out);

/* Queues req (on the loop's thread); done_cb gets it back. */
void spawner_submit(spawner_t *sp, spawn_req_t *req);

/* Stops and joins the thread, then frees it. Requests still queued get
 * their fds closed and env freed; children started but not yet handed
 * back are killed and reaped (none may outlive the server). done_cb is not
 * called for either. The async handle is closed on sp's loop, or freed if
 * the loop's stop closed it already. */
void spawner_free(spawner_t *sp);

/* A child that started but cannot be watched: SIGKILL to its group, then
 * reaped here (the wait is short: SIGKILL cannot be caught). */
void spawner_kill_unwatched(pid_t pid);

#endif
