/* test_spawner.c -- the spawner thread: children start with the request's
 * stdio in a session of their own, the fallback runs when argv does not
 * start, answers come back on the loop in the order asked, and a spawner
 * freed with a child started but not handed back kills and reaps it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aw.h"
#include "spawner.h"

#define NREQ 8

typedef struct got {
    spawn_req_t *order[NREQ];
    int n;
} got_t;

static got_t got;

static void on_done(spawn_req_t *req)
{
    assert_true(got.n < NREQ);
    got.order[got.n++] = req;
}

/* A request whose stdout comes back on *ours (stdin and stderr: /dev/null). */
static void req_init(spawn_req_t *r, char *const *argv, char *const *fallback, int *ours)
{
    int sv[2];
    memset(r, 0, sizeof *r);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    *ours = sv[0];
    r->argv = argv;
    r->fallback = fallback;
    r->env = calloc(2, sizeof(char *));
    assert_non_null(r->env);
    r->env[0] = "PATH=/usr/bin:/bin"; /* the array is freed, not its strings */
    r->fds[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    r->fds[1] = sv[1];
    r->fds[2] = open("/dev/null", O_WRONLY | O_CLOEXEC);
    assert_true(r->fds[0] >= 0 && r->fds[2] >= 0);
}

/* Everything the child wrote, until it closed its end. */
static void read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    ssize_t n;
    while ((n = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(fd);
}

static int reap(pid_t pid)
{
    int ws = 0;
    while (waitpid(pid, &ws, 0) < 0)
        assert_int_equal(errno, EINTR);
    return ws;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until n answers came (the spawner's handle keeps no loop
 * running: a timer does, for at most 10 s). */
static void run_until(uv_loop_t *loop, int n)
{
    uv_timer_t tick;
    assert_int_equal(uv_timer_init(loop, &tick), 0);
    assert_int_equal(uv_timer_start(&tick, on_tick, 10, 10), 0);
    for (int i = 0; i < 1000 && got.n < n; i++)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    assert_int_equal(got.n, n);
}

static void test_start_fallback_order(void **state)
{
    static char *const plain[] = {"echo", "plain", NULL};
    static char *const missing[] = {"/nonexistent/agent", NULL};
    static char *const sh[] = {"/bin/sh", "-c", "echo fallback; echo $$ $(ps -o pgid= -p $$)",
                               NULL};
    uv_loop_t loop;
    spawner_t *sp;
    spawn_req_t r[3];
    int ours[3];
    char out[256];
    (void)state;

    memset(&got, 0, sizeof got);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(spawner_create(&loop, on_done, &sp), AW_OK);
    req_init(&r[0], plain, sh, &ours[0]);   /* argv starts */
    req_init(&r[1], missing, sh, &ours[1]); /* argv fails: sh runs */
    req_init(&r[2], missing, NULL, &ours[2]);
    for (int i = 0; i < 3; i++)
        spawner_submit(sp, &r[i]);
    run_until(&loop, 3);
    for (int i = 0; i < 3; i++) {
        assert_ptr_equal(got.order[i], &r[i]); /* in the order asked */
        assert_null(r[i].env);                 /* freed */
        for (int f = 0; f < 3; f++)
            assert_int_equal(r[i].fds[f], -1); /* closed */
    }
    assert_int_equal(r[0].rc, 0);
    read_all(ours[0], out, sizeof out);
    assert_string_equal(out, "plain\n");
    assert_int_equal(WEXITSTATUS(reap(r[0].pid)), 0);

    assert_int_equal(r[1].rc, 0);
    read_all(ours[1], out, sizeof out);
    int pid = 0, pgid = 0;
    assert_int_equal(sscanf(out, "fallback\n%d %d", &pid, &pgid), 2);
    assert_int_equal(pid, r[1].pid);
    assert_int_equal(pgid, r[1].pid); /* its own session and group */
    reap(r[1].pid);

    assert_int_not_equal(r[2].rc, 0); /* nothing started: an errno */
    read_all(ours[2], out, sizeof out);
    assert_string_equal(out, ""); /* our end saw EOF: the child's end is closed */

    spawner_free(sp);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A child started but never handed back (the loop did not run) dies with
 * the spawner, and is reaped: no process outlives it. */
static void test_free_kills_unwatched(void **state)
{
    static char *const sh[] = {"/bin/sh", "-c", "echo $$; exec sleep 100", NULL};
    uv_loop_t loop;
    spawner_t *sp;
    spawn_req_t r;
    int ours;
    char buf[32];
    (void)state;

    memset(&got, 0, sizeof got);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(spawner_create(&loop, on_done, &sp), AW_OK);
    req_init(&r, NULL, sh, &ours);
    spawner_submit(sp, &r);
    /* the child runs (its pid from itself: r is the spawner's until done) */
    ssize_t n = read(ours, buf, sizeof buf - 1);
    assert_true(n > 1 && buf[n - 1] == '\n');
    buf[n] = '\0';
    pid_t pid = (pid_t)atoi(buf);
    assert_true(pid > 1);
    assert_int_equal(kill(pid, 0), 0);
    spawner_free(sp);
    assert_int_equal(got.n, 0);
    assert_int_equal(kill(pid, 0), -1); /* killed and reaped: no such pid */
    assert_int_equal(errno, ESRCH);
    assert_int_equal(read(ours, buf, sizeof buf), 0); /* its stdout closed */
    close(ours);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_fallback_order),
        cmocka_unit_test(test_free_kills_unwatched),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
