/* spawner.c -- a thread that starts child processes off the event loop
 * (see spawner.h). Requests wait in `todo` and come back in `done`, both
 * under mu; the thread sleeps on cv while todo is empty, and wakes the loop
 * through `wake` when it has put something in done. */
#include "spawner.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aw.h"

struct spawner {
    uv_loop_t *loop;
    spawner_done_cb done_cb;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cv;
    bool stop;
    uv_async_t *wake; /* its own memory: see spawner_free */
    spawn_req_t *todo, **todo_tail, *done, **done_tail;
};

static void close_fds(int fds[3])
{
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

/* One child of args with the given stdio, in a new session, all signals
 * default and unblocked (as uv_spawn does); args[0] without a '/' is looked
 * up on PATH. 0 or an errno. */
static int start_now(char *const args[], char **env, const int fds[3], pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t all, none;
    int rc;

    sigfillset(&all);
    sigemptyset(&none);
    if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
        return rc;
    if ((rc = posix_spawnattr_init(&attr)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = posix_spawn_file_actions_adddup2(&fa, fds[i], i);
    if (rc == 0)
        rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF |
                                                 POSIX_SPAWN_SETSIGMASK);
    if (rc == 0)
        rc = posix_spawnattr_setsigdefault(&attr, &all);
    if (rc == 0)
        rc = posix_spawnattr_setsigmask(&attr, &none);
    if (rc == 0)
        rc = strchr(args[0], '/') ? posix_spawn(pid, args[0], &fa, &attr, args, env)
                                  : posix_spawnp(pid, args[0], &fa, &attr, args, env);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

void spawner_kill_unwatched(pid_t pid)
{
    kill(-pid, SIGKILL); /* pid > 1: a child of ours, its own group */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* The thread: one start at a time, in the order asked. */
static void spawner_main(void *arg)
{
    spawner_t *sp = arg;
    sigset_t all;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* the loops take the server's signals */
    uv_mutex_lock(&sp->mu);
    while (!sp->stop) {
        spawn_req_t *r = sp->todo;
        if (!r) {
            uv_cond_wait(&sp->cv, &sp->mu);
            continue;
        }
        if (!(sp->todo = r->next))
            sp->todo_tail = &sp->todo;
        uv_mutex_unlock(&sp->mu);
        r->rc = -1;
        if (r->argv)
            r->rc = start_now(r->argv, r->env, r->fds, &r->pid);
        if (r->rc != 0)
            r->rc = r->fallback ? start_now(r->fallback, r->env, r->fds, &r->pid) : ENOENT;
        close_fds(r->fds); /* the child has its copies */
        free(r->env);
        r->env = NULL;
        uv_mutex_lock(&sp->mu);
        r->next = NULL;
        *sp->done_tail = r;
        sp->done_tail = &r->next;
        uv_async_send(sp->wake);
    }
    uv_mutex_unlock(&sp->mu);
}

static void on_wake(uv_async_t *a)
{
    spawner_t *sp = a->data;
    spawn_req_t *list;

    uv_mutex_lock(&sp->mu);
    list = sp->done;
    sp->done = NULL;
    sp->done_tail = &sp->done;
    uv_mutex_unlock(&sp->mu);
    while (list) {
        spawn_req_t *r = list;
        list = r->next;
        sp->done_cb(r);
    }
}

static void free_handle(uv_handle_t *h)
{
    free(h);
}

int spawner_create(uv_loop_t *loop, spawner_done_cb done, spawner_t **out)
{
    spawner_t *sp = calloc(1, sizeof *sp);

    *out = NULL;
    if (!sp)
        return AW_ENOMEM;
    sp->loop = loop;
    sp->done_cb = done;
    sp->todo_tail = &sp->todo;
    sp->done_tail = &sp->done;
    if (uv_mutex_init(&sp->mu) != 0) {
        free(sp);
        return AW_EIO;
    }
    if (uv_cond_init(&sp->cv) != 0)
        goto fail_mu;
    sp->wake = malloc(sizeof *sp->wake);
    if (!sp->wake || uv_async_init(loop, sp->wake, on_wake) != 0) {
        free(sp->wake);
        goto fail_cv;
    }
    sp->wake->data = sp;
    uv_unref((uv_handle_t *)sp->wake); /* keeps no loop running */
    if (uv_thread_create(&sp->thread, spawner_main, sp) != 0) {
        uv_close((uv_handle_t *)sp->wake, free_handle);
        goto fail_cv;
    }
    aw_thread_name(sp->thread, "aw-spawner");
    *out = sp;
    return AW_OK;
fail_cv:
    uv_cond_destroy(&sp->cv);
fail_mu:
    uv_mutex_destroy(&sp->mu);
    free(sp);
    return AW_EIO;
}

void spawner_submit(spawner_t *sp, spawn_req_t *req)
{
    uv_mutex_lock(&sp->mu);
    req->next = NULL;
    *sp->todo_tail = req;
    sp->todo_tail = &req->next;
    uv_cond_signal(&sp->cv);
    uv_mutex_unlock(&sp->mu);
}

void spawner_free(spawner_t *sp)
{
    if (!sp)
        return;
    uv_mutex_lock(&sp->mu);
    sp->stop = true;
    uv_cond_signal(&sp->cv);
    uv_mutex_unlock(&sp->mu);
    uv_thread_join(&sp->thread);
    for (spawn_req_t *r = sp->todo; r; r = r->next) {
        close_fds(r->fds);
        free(r->env);
        r->env = NULL;
    }
    for (spawn_req_t *r = sp->done; r; r = r->next)
        if (r->rc == 0)
            spawner_kill_unwatched(r->pid);
    uv_cond_destroy(&sp->cv);
    uv_mutex_destroy(&sp->mu);
    /* the server's stop closed it with every handle of the loop, and the
     * loop has run since; else (a loop still in use) close it now */
    if (uv_is_closing((uv_handle_t *)sp->wake))
        free(sp->wake);
    else
        uv_close((uv_handle_t *)sp->wake, free_handle);
    free(sp);
}
