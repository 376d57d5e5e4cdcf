/* test_agent_backends.c -- the exec and http agent backends on a real uv
 * loop, with real child processes and a small HTTP server on the same loop.
 * runs_agent_line and runs_agent_ended are stubs here: they record into the
 * test's run. Every wait is bounded by a watchdog timer, and every test
 * closes its loop so ASan sees any leaked handle or state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "agent_argv.h"
#include "aw.h"
#include "http.h"
#include "runs.h"

#define WATCHDOG_MS 10000
#define MAX_LINES   32

static const char *const REQUEST = "{\"run_id\":\"r1\",\"thread_id\":\"t1\",\"user_id\":\"u1\","
                                   "\"user_request\":\"h\xc3\xa9llo\",\"context\":{},"
                                   "\"settings\":{}}";

/* A run as the backends see it, plus what the stubs recorded. */
typedef struct trun {
    run_t run; /* first: the stubs convert run_t * back */
    agent_backend_t *b;
    char lines[MAX_LINES][256];
    int nlines; /* lines seen (only the first MAX_LINES are kept) */
    char last[256];
    int ended; /* runs_agent_ended calls */
    bool reason_null;
    char reason[128];
    double start_ms, first_line_ms, end_ms;
    int pid;                /* the first line, when the agent prints $$ first */
    int stop_on_first_line; /* 0 no, 1 forced, 2 graceful, 3 both, repeated */
    int sent_at_first_line; /* pieces the test server had sent by then */
} trun_t;

static uv_loop_t loop;
static uv_timer_t watchdog;
static bool watchdog_fired;

/* ---- the HTTP server of the tests ---- */

typedef struct tserver {
    uv_tcp_t listener;
    uv_tcp_t conn;
    uv_timer_t timer;
    bool has_conn;
    int port;
    http_reader_t reader;
    bool got_request;
    char method[16], path[256], ctype[64], accept[64], host[64], clen[16];
    char body[1024];
    const char *const *pieces;
    int npieces, sent;
    int delay_ms;
    bool close_after; /* close once the last piece is written */
    uv_write_t wreq[8];
} tserver_t;

static tserver_t srv;

static double now_ms(void)
{
    return (double)uv_hrtime() / 1e6;
}

void runs_agent_line(run_t *run, const char *line, size_t len)
{
    trun_t *t = (trun_t *)run;

    assert_int_equal(t->ended, 0);
    assert_non_null(run->agent);
    assert_true(len < sizeof t->last);
    memcpy(t->last, line, len);
    t->last[len] = '\0';
    if (t->nlines < MAX_LINES)
        memcpy(t->lines[t->nlines], t->last, len + 1);
    if (t->nlines++ > 0)
        return;
    t->first_line_ms = now_ms();
    t->pid = atoi(t->last);
    t->sent_at_first_line = srv.sent;
    if (t->stop_on_first_line == 3) { /* repeated: graceful, then forced, twice each */
        t->b->stop(t->b, run, true);
        t->b->stop(t->b, run, true);
        t->b->stop(t->b, run, false);
        t->b->stop(t->b, run, false);
        t->b->stop(t->b, run, true);
    } else if (t->stop_on_first_line) {
        t->b->stop(t->b, run, t->stop_on_first_line == 2);
    }
}

void runs_agent_ended(run_t *run, const char *reason)
{
    trun_t *t = (trun_t *)run;

    t->ended++;
    assert_null(run->agent);
    t->end_ms = now_ms();
    t->reason_null = reason == NULL;
    snprintf(t->reason, sizeof t->reason, "%s", reason ? reason : "");
    /* the backend is done with the run: it may be freed right here */
}

static trun_t *trun_new(agent_backend_t *b, const char *id)
{
    trun_t *t = calloc(1, sizeof *t);

    assert_non_null(t);
    t->b = b;
    snprintf(t->run.id, sizeof t->run.id, "%s", id);
    snprintf(t->run.thread_id, sizeof t->run.thread_id, "t1");
    snprintf(t->run.user_id, sizeof t->run.user_id, "u1");
    t->run.agent_running = true;
    return t;
}

static void start(trun_t *t, const char *request)
{
    t->start_ms = now_ms();
    assert_int_equal(t->b->start(t->b, &t->run, request, strlen(request)), 0);
    assert_non_null(t->run.agent);
}

static void on_watchdog(uv_timer_t *tm)
{
    (void)tm;
    watchdog_fired = true;
}

/* Runs the loop until every run of ts has ended, or fails at the watchdog. */
static void wait_ended(trun_t **ts, int n)
{
    watchdog_fired = false;
    uv_timer_start(&watchdog, on_watchdog, WATCHDOG_MS, 0);
    for (;;) {
        int done = 0;
        for (int i = 0; i < n; i++)
            done += ts[i]->ended > 0;
        if (done == n || watchdog_fired)
            break;
        uv_run(&loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&watchdog);
    assert_false(watchdog_fired);
}

static void wait_one(trun_t *t)
{
    wait_ended(&t, 1);
}

static void on_walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static int setup(void **state)
{
    (void)state;
    memset(&srv, 0, sizeof srv);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(uv_timer_init(&loop, &watchdog), 0);
    return 0;
}

/* Closes whatever is left (the watchdog, the test server) and the loop:
 * uv_loop_close fails if a backend left a handle open. */
static int teardown(void **state)
{
    (void)state;
    uv_walk(&loop, on_walk_close, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    if (srv.port)
        http_reader_dispose(&srv.reader);
    return 0;
}

/* Checks the end and frees the run (after the loop drained: still once). */
static void finish(trun_t *t, const char *reason)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(t->ended, 1);
    if (reason) {
        assert_false(t->reason_null);
        assert_string_equal(t->reason, reason);
    } else {
        assert_true(t->reason_null);
    }
    free(t);
}

/* ---- exec ---- */

static agent_backend_t *exec_backend_env(const char *command, int64_t grace_ms, size_t max_line,
                                         const char *env_names)
{
    agent_options_t o = {.loop = &loop,
                         .kill_grace_ms = grace_ms,
                         .max_line_bytes = max_line,
                         .env_names = env_names};
    agent_backend_t *b = NULL;
    char err[200] = "";

    assert_int_equal(agent_exec_create(command, &o, &b, err, sizeof err), 0);
    assert_non_null(b);
    assert_string_equal(b->kind, "exec");
    return b;
}

static agent_backend_t *exec_backend(const char *command, int64_t grace_ms, size_t max_line)
{
    return exec_backend_env(command, grace_ms, max_line, NULL);
}

/* Runs command as one run and returns it, ended. */
static trun_t *exec_once(agent_backend_t *b, const char *request, int stop_on_first_line)
{
    trun_t *t = trun_new(b, "r1");

    t->stop_on_first_line = stop_on_first_line;
    start(t, request);
    wait_one(t);
    return t;
}

/* Reaps what the group left to us (we are its subreaper) and checks that
 * no process of it remains. */
static void assert_group_gone(int pgid)
{
    struct timespec ten_ms = {0, 10 * 1000 * 1000};

    assert_true(pgid > 1);
    for (int i = 0; i < 300; i++) {
        while (waitpid(-pgid, NULL, WNOHANG) > 0)
            ;
        if (kill(-pgid, 0) == -1 && errno == ESRCH)
            return;
        nanosleep(&ten_ms, NULL);
    }
    fail_msg("process group %d still exists", pgid);
}

static void test_exec_lines(void **state)
{
    agent_backend_t *b = exec_backend("printf 'a\\nb\\n'", 1000, 0);
    trun_t *t = exec_once(b, REQUEST, 0);
    (void)state;
    assert_int_equal(t->nlines, 2);
    assert_string_equal(t->lines[0], "a");
    assert_string_equal(t->lines[1], "b");
    finish(t, NULL);
    b->dispose(b);
}

static void test_exec_last_line_without_newline(void **state)
{
    agent_backend_t *b = exec_backend("printf 'a\\r\\n\\nb'", 1000, 0);
    trun_t *t = exec_once(b, REQUEST, 0);
    (void)state;
    assert_int_equal(t->nlines, 2); /* the empty line is not passed on */
    assert_string_equal(t->lines[0], "a");
    assert_string_equal(t->lines[1], "b");
    finish(t, NULL);
    b->dispose(b);
}

static void test_exec_request_on_stdin(void **state)
{
    agent_backend_t *b = exec_backend("cat; echo end", 1000, 0);
    trun_t *t = exec_once(b, REQUEST, 0);
    (void)state;
    assert_int_equal(t->nlines, 2); /* cat saw one line, then EOF */
    assert_string_equal(t->lines[0], REQUEST);
    assert_string_equal(t->lines[1], "end");
    finish(t, NULL);
    b->dispose(b);
}

static void test_exec_stderr_goes_to_log(void **state)
{
    agent_backend_t *b = exec_backend("echo oops-on-stderr >&2; echo out", 1000, 0);
    char logged[8192];
    FILE *f = tmpfile();
    int saved;
    trun_t *t;
    (void)state;
    assert_non_null(f);
    fflush(stderr);
    saved = dup(2);
    dup2(fileno(f), 2);
    t = exec_once(b, REQUEST, 0);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(f);
    logged[fread(logged, 1, sizeof logged - 1, f)] = '\0';
    fclose(f);
    assert_int_equal(t->nlines, 1);
    assert_string_equal(t->lines[0], "out");
    assert_non_null(strstr(logged, "agent stderr"));
    assert_non_null(strstr(logged, "oops-on-stderr"));
    assert_non_null(strstr(logged, "run=r1"));
    finish(t, NULL);
    b->dispose(b);
}

static void test_exec_exit_status(void **state)
{
    agent_backend_t *b = exec_backend("echo x; exit 3", 1000, 0);
    trun_t *t = exec_once(b, REQUEST, 0);
    (void)state;
    assert_int_equal(t->nlines, 1);
    finish(t, "agent exited with status 3");
    b->dispose(b);
}

static void test_exec_command_not_found(void **state)
{
    agent_backend_t *b = exec_backend("agentwire-no-such-command --flag", 1000, 0);
    trun_t *t = exec_once(b, REQUEST, 0);
    (void)state;
    assert_int_equal(t->nlines, 0); /* sh's complaint went to the log */
    finish(t, "agent exited with status 127");
    b->dispose(b);
}

/* Forced stop: SIGTERM reaches the shell and both of its sleeps at once,
 * long before the (large) grace period would allow a SIGKILL. */
static void test_exec_forced_stop_kills_group(void **state)
{
    /* both children are forked before the pid is printed (and the stop sent) */
    agent_backend_t *b = exec_backend("sleep 100 & sleep 100 & echo $$; wait", 5000, 0);
    trun_t *t = trun_new(b, "r1");
    (void)state;
    t->stop_on_first_line = 1;
    start(t, REQUEST);
    wait_one(t);
    assert_int_equal(t->nlines, 1);
    assert_true(t->end_ms - t->first_line_ms < 3000);
    assert_group_gone(t->pid);
    finish(t, "agent killed by signal 15");
    b->dispose(b);
}

/* A forced stop right after the start, before the spawner has answered
 * with the pid: it reaches the child once the pid arrives (else the group
 * would run its 100 s, and the run never end). */
static void test_exec_stop_before_spawned(void **state)
{
    agent_backend_t *b = exec_backend("sleep 100", 5000, 0);
    trun_t *t = trun_new(b, "r1");
    (void)state;
    start(t, REQUEST);
    b->stop(b, &t->run, false);
    wait_one(t);
    assert_int_equal(t->nlines, 0);
    assert_true(t->end_ms - t->start_ms < 4000); /* SIGTERM, not the 5 s grace's SIGKILL */
    finish(t, "agent killed by signal 15");
    b->dispose(b);
}

/* The agent is its own process group: pgid == pid, not the server's. */
static void test_exec_own_process_group(void **state)
{
    agent_backend_t *b = exec_backend("echo $$; ps -o pgid= -p $$", 1000, 0);
    trun_t *t = exec_once(b, REQUEST, 0);
    (void)state;
    assert_int_equal(t->nlines, 2);
    assert_int_equal(atoi(t->lines[1]), t->pid);
    assert_int_not_equal(t->pid, getpgrp());
    finish(t, NULL);
    b->dispose(b);
}

static void test_exec_graceful_stop_lets_agent_finish(void **state)
{
    agent_backend_t *b = exec_backend("echo go; sleep 0.3; echo done", 5000, 0);
    trun_t *t = exec_once(b, REQUEST, 2);
    (void)state;
    assert_int_equal(t->nlines, 2);
    assert_string_equal(t->lines[1], "done");
    assert_true(t->end_ms - t->first_line_ms < 3000);
    finish(t, NULL);
    b->dispose(b);
}

static void test_exec_sigterm_ignored_gets_sigkill(void **state)
{
    agent_backend_t *b = exec_backend("trap '' TERM; echo $$; sleep 100", 300, 0);
    trun_t *t = exec_once(b, REQUEST, 1);
    double took = t->end_ms - t->first_line_ms;
    (void)state;
    assert_true(took >= 290);
    assert_true(took < 3000);
    assert_group_gone(t->pid);
    finish(t, "agent killed by signal 9");
    b->dispose(b);
}

/* Graceful stop of an agent that does not exit: grace, SIGTERM (ignored),
 * grace, SIGKILL. */
static void test_exec_graceful_stop_escalates(void **state)
{
    agent_backend_t *b = exec_backend("trap '' TERM; echo $$; sleep 100", 200, 0);
    trun_t *t = exec_once(b, REQUEST, 2);
    double took = t->end_ms - t->first_line_ms;
    (void)state;
    assert_true(took >= 390);
    assert_true(took < 4000);
    assert_group_gone(t->pid);
    finish(t, "agent killed by signal 9");
    b->dispose(b);
}

static void test_exec_graceful_stop_then_sigterm(void **state)
{
    agent_backend_t *b = exec_backend("echo $$; sleep 100", 200, 0);
    trun_t *t = exec_once(b, REQUEST, 2);
    double took = t->end_ms - t->first_line_ms;
    (void)state;
    assert_true(took >= 190);
    assert_true(took < 3000);
    assert_group_gone(t->pid);
    finish(t, "agent killed by signal 15");
    b->dispose(b);
}

/* The shell exits but a background child keeps stdout open: after the
 * grace period the group is signalled, so the run still ends. */
static void test_exec_stray_child_holding_stdout(void **state)
{
    agent_backend_t *b = exec_backend("echo $$; sleep 100 &", 200, 0);
    trun_t *t = exec_once(b, REQUEST, 0);
    double took = t->end_ms - t->first_line_ms;
    (void)state;
    assert_true(took >= 190);
    assert_true(took < 3000);
    assert_group_gone(t->pid);
    finish(t, NULL); /* the shell itself exited 0 */
    b->dispose(b);
}

/* Output written after the shell exited (by a child still holding stdout)
 * is still read, and the run ends as soon as stdout closes. */
static void test_exec_output_after_shell_exit(void **state)
{
    agent_backend_t *b = exec_backend("(sleep 0.2; echo late) & echo early", 5000, 0);
    trun_t *t = exec_once(b, REQUEST, 0);
    (void)state;
    assert_int_equal(t->nlines, 2);
    assert_string_equal(t->lines[0], "early");
    assert_string_equal(t->lines[1], "late");
    assert_true(t->end_ms - t->first_line_ms < 3000); /* not the grace period */
    finish(t, NULL);
    b->dispose(b);
}

/* An agent gets a minimal environment: PATH and the like, the variables
 * named by --agent-env, and never the server's own settings (secrets among
 * them), even when named. */
static void test_exec_environment(void **state)
{
    const char *cmd =
        "echo \"${AGENTWIRE_API_KEY-unset}/${AW_TEST_VISIBLE-unset}/${AW_TEST_OTHER-unset}/"
        "${PATH:+path}\"";
    agent_backend_t *plain = exec_backend(cmd, 1000, 0);
    agent_backend_t *listed = exec_backend_env(cmd, 1000, 0, "AW_TEST_VISIBLE, AGENTWIRE_API_KEY");
    trun_t *t;
    (void)state;
    setenv("AGENTWIRE_API_KEY", "secret-key", 1);
    setenv("AW_TEST_VISIBLE", "yes", 1);
    setenv("AW_TEST_OTHER", "yes", 1);
    t = exec_once(plain, REQUEST, 0);
    assert_int_equal(t->nlines, 1);
    assert_string_equal(t->lines[0], "unset/unset/unset/path");
    finish(t, NULL);
    t = exec_once(listed, REQUEST, 0);
    assert_int_equal(t->nlines, 1);
    assert_string_equal(t->lines[0], "unset/yes/unset/path");
    finish(t, NULL);
    unsetenv("AGENTWIRE_API_KEY");
    unsetenv("AW_TEST_VISIBLE");
    unsetenv("AW_TEST_OTHER");
    plain->dispose(plain);
    listed->dispose(listed);
}

static void test_exec_long_line_skipped(void **state)
{
    agent_backend_t *b = exec_backend(
        "echo first; head -c 100000 /dev/zero | tr '\\0' x; echo; echo next", 1000, 1000);
    trun_t *t = exec_once(b, REQUEST, 0);
    (void)state;
    assert_int_equal(t->nlines, 2);
    assert_string_equal(t->lines[0], "first");
    assert_string_equal(t->lines[1], "next");
    finish(t, NULL);
    b->dispose(b);
}

/* An agent that never reads stdin and exits while its request is being
 * written: EPIPE is no crash (SIGPIPE is ignored, as in main). */
static void test_exec_agent_ignores_large_request(void **state)
{
    agent_backend_t *b = exec_backend("echo hi", 1000, 0);
    size_t len = 4 << 20;
    char *req = malloc(len + 1);
    trun_t *t;
    (void)state;
    assert_non_null(req);
    memset(req, 'x', len);
    req[len] = '\0';
    t = exec_once(b, req, 0);
    free(req);
    assert_int_equal(t->nlines, 1);
    assert_string_equal(t->lines[0], "hi");
    finish(t, NULL);
    b->dispose(b);
}

/* Runs at once on one backend keep their output apart. */
static void test_exec_concurrent_runs(void **state)
{
    agent_backend_t *b = exec_backend("cat; seq 1 20000", 1000, 0);
    trun_t *t[3];
    char req[3][64];
    (void)state;
    for (int i = 0; i < 3; i++) {
        char id[8];
        snprintf(id, sizeof id, "r%d", i);
        snprintf(req[i], sizeof req[i], "{\"run_id\":\"%s\"}", id);
        t[i] = trun_new(b, id);
        start(t[i], req[i]);
    }
    wait_ended(t, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(t[i]->nlines, 20001);
        assert_string_equal(t[i]->lines[0], req[i]);
        assert_string_equal(t[i]->lines[1], "1");
        assert_string_equal(t[i]->last, "20000");
        finish(t[i], NULL);
    }
    b->dispose(b);
}

/* stop is safe to repeat, and harmless once the agent exited by itself. */
static void test_exec_stop_repeated(void **state)
{
    agent_backend_t *b = exec_backend("echo $$; sleep 100", 5000, 0);
    trun_t *t = exec_once(b, REQUEST, 3);
    (void)state;
    assert_true(t->end_ms - t->first_line_ms < 3000); /* SIGTERM, not the grace */
    assert_group_gone(t->pid);
    finish(t, "agent killed by signal 15");
    b->dispose(b);
}

/* A plain command (a path and plain words) is exec'd without a shell (where
 * pidfd_open works; through sh otherwise): the same program and arguments,
 * in a process group and session of its own, as through sh. */
static void test_exec_plain_command(void **state)
{
    agent_backend_t *b = exec_backend("/usr/bin/head  -c 120\t/proc/self/stat", 1000, 0);
    trun_t *t = exec_once(b, REQUEST, 0);
    int pid = 0, ppid = 0, pgrp = 0, sid = 0;
    char comm[32] = "";
    (void)state;
    assert_int_equal(t->nlines, 1);
    assert_int_equal(
        sscanf(t->lines[0], "%d (%31[^)]) %*c %d %d %d", &pid, comm, &ppid, &pgrp, &sid), 5);
    assert_string_equal(comm, "head");
    assert_int_equal(sid, pgrp); /* the session's first group: setsid */
    assert_int_not_equal(pgrp, getpgrp());
    assert_int_not_equal(sid, getsid(0));
    if (ppid == getpid()) /* exec'd directly: it is the group leader itself */
        assert_int_equal(pgrp, pid);
    finish(t, NULL);
    b->dispose(b);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* Started directly or through sh, a program gets the same environment
 * (sh exports PWD). */
static void test_exec_plain_command_environment(void **state)
{
    agent_backend_t *direct = exec_backend("env", 1000, 0);
    agent_backend_t *shell = exec_backend("env;", 1000, 0);
    trun_t *a = exec_once(direct, REQUEST, 0);
    trun_t *b = exec_once(shell, REQUEST, 0);
    (void)state;
    assert_true(a->nlines > 1 && a->nlines < MAX_LINES);
    assert_int_equal(a->nlines, b->nlines);
    qsort(a->lines, (size_t)a->nlines, sizeof a->lines[0], cmp_str);
    qsort(b->lines, (size_t)b->nlines, sizeof b->lines[0], cmp_str);
    for (int i = 0; i < a->nlines; i++)
        assert_string_equal(a->lines[i], b->lines[i]);
    finish(a, NULL);
    finish(b, NULL);
    direct->dispose(direct);
    shell->dispose(shell);
}

/* A plain command that cannot be exec'd goes through sh, which reports it
 * as before: not found (127), or a script without #! that sh runs. */
static void test_exec_plain_command_fallbacks(void **state)
{
    char script[] = "/tmp/aw-test-agent-XXXXXX";
    int fd = mkstemp(script);
    agent_backend_t *b;
    trun_t *t;
    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "echo from-script\n", 17), 17);
    close(fd);
    assert_int_equal(chmod(script, 0700), 0);

    b = exec_backend("/nonexistent-aw-dir/agent --flag", 1000, 0);
    t = exec_once(b, REQUEST, 0);
    assert_int_equal(t->nlines, 0);
    finish(t, "agent exited with status 127");
    b->dispose(b);

    b = exec_backend(script, 1000, 0);
    t = exec_once(b, REQUEST, 0);
    assert_int_equal(t->nlines, 1);
    assert_string_equal(t->lines[0], "from-script");
    finish(t, NULL);
    b->dispose(b);
    unlink(script);

    /* an assignment first is sh's: the variable reaches the program */
    b = exec_backend("AW_TEST_ASSIGNED=/yes /usr/bin/env", 1000, 0);
    t = exec_once(b, REQUEST, 0);
    bool seen = false;
    for (int i = 0; i < t->nlines && i < MAX_LINES; i++)
        seen = seen || strcmp(t->lines[i], "AW_TEST_ASSIGNED=/yes") == 0;
    assert_true(seen);
    finish(t, NULL);
    b->dispose(b);
}

static void test_exec_create(void **state)
{
    agent_options_t o = {.loop = &loop, .kill_grace_ms = 100, .max_line_bytes = 0};
    agent_backend_t *b = NULL;
    char err[200] = "";
    char cmd[200];
    (void)state;
    assert_int_equal(agent_exec_create("", &o, &b, err, sizeof err), AW_EINVAL);
    assert_null(b);
    assert_true(strlen(err) > 0);

    assert_int_equal(agent_exec_create("my-agent --x", &o, &b, err, sizeof err), 0);
    assert_string_equal(b->name, "my-agent --x");
    b->dispose(b);

    memset(cmd, 'c', sizeof cmd - 1);
    cmd[sizeof cmd - 1] = '\0';
    assert_int_equal(agent_exec_create(cmd, &o, &b, err, sizeof err), 0);
    assert_int_equal(strlen(b->name), 64);
    assert_string_equal(b->name + 61, "...");
    b->dispose(b);

    /* a cut never splits a UTF-8 character */
    memset(cmd, 'c', sizeof cmd - 1);
    memcpy(cmd + 60, "\xc3\xa9\xc3\xa9", 4);
    assert_int_equal(agent_exec_create(cmd, &o, &b, err, sizeof err), 0);
    assert_string_equal(b->name + 60, "...");
    b->dispose(b);
}

/* ---- http ---- */

static void srv_send_next(tserver_t *s);

static void srv_on_timer(uv_timer_t *t)
{
    srv_send_next(t->data);
}

static void srv_on_write(uv_write_t *req, int status)
{
    tserver_t *s = req->data;

    (void)status;
    if (req == &s->wreq[s->npieces - 1] && s->close_after &&
        !uv_is_closing((uv_handle_t *)&s->conn))
        uv_close((uv_handle_t *)&s->conn, NULL);
}

static void srv_send_next(tserver_t *s)
{
    uv_buf_t b;

    if (s->sent >= s->npieces || uv_is_closing((uv_handle_t *)&s->conn))
        return;
    b = uv_buf_init((char *)s->pieces[s->sent], (unsigned int)strlen(s->pieces[s->sent]));
    s->wreq[s->sent].data = s;
    assert_int_equal(uv_write(&s->wreq[s->sent], (uv_stream_t *)&s->conn, &b, 1, srv_on_write), 0);
    s->sent++;
    if (s->sent < s->npieces && s->delay_ms >= 0)
        uv_timer_start(&s->timer, srv_on_timer, (uint64_t)s->delay_ms, 0);
}

static void copy_header(const http_request_t *req, const char *name, char *out, size_t len)
{
    const char *v = http_header(req, name);
    snprintf(out, len, "%s", v ? v : "");
}

static void srv_record(tserver_t *s, const http_request_t *req)
{
    s->got_request = true;
    snprintf(s->method, sizeof s->method, "%s", req->method_name);
    snprintf(s->path, sizeof s->path, "%s%s%s", req->path, *req->query ? "?" : "", req->query);
    copy_header(req, "Content-Type", s->ctype, sizeof s->ctype);
    copy_header(req, "Accept", s->accept, sizeof s->accept);
    copy_header(req, "Host", s->host, sizeof s->host);
    copy_header(req, "Content-Length", s->clen, sizeof s->clen);
    snprintf(s->body, sizeof s->body, "%.*s", (int)req->body_len, req->body);
}

static void srv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char b[65536];
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(b, sizeof b);
}

static void srv_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    tserver_t *s = st->data;
    http_request_t *req;
    size_t used;

    if (nread < 0) {
        if (!uv_is_closing((uv_handle_t *)st))
            uv_close((uv_handle_t *)st, NULL);
        return;
    }
    if (nread == 0 || s->got_request)
        return;
    if (http_feed(&s->reader, buf->base, (size_t)nread, &used, &req) == 0) {
        srv_record(s, req);
        srv_send_next(s);
    }
}

static void srv_on_connection(uv_stream_t *l, int status)
{
    tserver_t *s = l->data;

    assert_int_equal(status, 0);
    assert_false(s->has_conn); /* one connection per run */
    uv_tcp_init(&loop, &s->conn);
    s->conn.data = s;
    s->has_conn = true;
    assert_int_equal(uv_accept(l, (uv_stream_t *)&s->conn), 0);
    uv_read_start((uv_stream_t *)&s->conn, srv_alloc, srv_on_read);
}

/* Listens on 127.0.0.1 (any port) and answers one request with pieces,
 * delay_ms apart (a negative delay: only the first piece is ever sent). */
static void srv_start(const char *const *pieces, int n, int delay_ms, bool close_after)
{
    struct sockaddr_in a;
    struct sockaddr_storage got;
    int len = sizeof got;

    assert_true(n <= (int)AW_ARRAY_LEN(srv.wreq));
    srv.pieces = pieces;
    srv.npieces = n;
    srv.delay_ms = delay_ms;
    srv.close_after = close_after;
    http_reader_init(&srv.reader, 0, 0);
    uv_tcp_init(&loop, &srv.listener);
    uv_timer_init(&loop, &srv.timer);
    srv.listener.data = srv.timer.data = &srv;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&srv.listener, (const struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&srv.listener, 8, srv_on_connection), 0);
    uv_tcp_getsockname(&srv.listener, (struct sockaddr *)&got, &len);
    srv.port = ntohs(((struct sockaddr_in *)&got)->sin_port);
}

static agent_backend_t *http_backend(const char *path, int64_t grace_ms, size_t max_line)
{
    agent_options_t o = {.loop = &loop, .kill_grace_ms = grace_ms, .max_line_bytes = max_line};
    agent_backend_t *b = NULL;
    char url[128], err[200] = "";

    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", srv.port, path);
    assert_int_equal(agent_http_create(url, &o, &b, err, sizeof err), 0);
    assert_string_equal(b->kind, "http");
    assert_string_equal(b->name, url);
    return b;
}

#define CHUNKED_HEAD                                                                               \
    "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_http_streams_chunked(void **state)
{
    /* line 2 is split across chunks, and chunks across writes */
    static const char *const pieces[] = {
        CHUNKED_HEAD "12\r\n{\"type\":\"one\"}\n{\"t\r\n",
        "c\r\nype\":\"two\"}\n\r\n",
        "10\r\n{\"type\":\"three\"}\r\n",
        "0\r\n\r\n",
    };
    agent_backend_t *b;
    trun_t *t;
    json_t *body;
    char host[64];
    (void)state;
    srv_start(pieces, 4, 100, false);
    b = http_backend("/agent/run?x=1", 1000, 0);
    t = trun_new(b, "r1");
    start(t, REQUEST);
    wait_one(t);
    assert_int_equal(t->nlines, 3);
    assert_string_equal(t->lines[0], "{\"type\":\"one\"}");
    assert_string_equal(t->lines[1], "{\"type\":\"two\"}");
    assert_string_equal(t->lines[2], "{\"type\":\"three\"}");
    assert_int_equal(t->sent_at_first_line, 1); /* streamed, not buffered to the end */
    assert_true(srv.got_request);
    assert_string_equal(srv.method, "POST");
    assert_string_equal(srv.path, "/agent/run?x=1");
    assert_string_equal(srv.ctype, "application/json");
    assert_string_equal(srv.accept, "application/x-ndjson");
    snprintf(host, sizeof host, "127.0.0.1:%d", srv.port);
    assert_string_equal(srv.host, host);
    assert_int_equal(atoi(srv.clen), (int)strlen(REQUEST));
    assert_string_equal(srv.body, REQUEST);
    body = json_loads(srv.body, 0, NULL);
    assert_non_null(body);
    assert_string_equal(json_string_value(json_object_get(body, "user_request")), "h\xc3\xa9llo");
    json_decref(body);
    finish(t, NULL);
    b->dispose(b);
}

static void test_http_error_status(void **state)
{
    static const char *const pieces[] = {
        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 19\r\n\r\n{\"type\":\"nothing\"}\n",
    };
    agent_backend_t *b;
    trun_t *t;
    (void)state;
    srv_start(pieces, 1, 0, false);
    b = http_backend("/run", 1000, 0);
    t = trun_new(b, "r1");
    start(t, REQUEST);
    wait_one(t);
    assert_int_equal(t->nlines, 0); /* an error body is not events */
    finish(t, "agent answered HTTP 500");
    b->dispose(b);
}

static void test_http_closed_mid_chunk(void **state)
{
    static const char *const pieces[] = {
        CHUNKED_HEAD "8\r\n{\"a\":1}\n\r\n",
        "20\r\n{\"b\":2}\n{\"cut",
    };
    agent_backend_t *b;
    trun_t *t;
    (void)state;
    srv_start(pieces, 2, 20, true);
    b = http_backend("/run", 1000, 0);
    t = trun_new(b, "r1");
    start(t, REQUEST);
    wait_one(t);
    assert_int_equal(t->nlines, 2); /* whole lines only: the cut one is lost */
    assert_string_equal(t->lines[0], "{\"a\":1}");
    assert_string_equal(t->lines[1], "{\"b\":2}");
    finish(t, "connection closed mid-response");
    b->dispose(b);
}

static void test_http_closed_before_response(void **state)
{
    static const char *const pieces[] = {""};
    agent_backend_t *b;
    trun_t *t;
    (void)state;
    srv_start(pieces, 1, 0, true);
    b = http_backend("/run", 1000, 0);
    t = trun_new(b, "r1");
    start(t, REQUEST);
    wait_one(t);
    finish(t, "connection closed before a response");
    b->dispose(b);
}

static void test_http_connection_refused(void **state)
{
    uv_tcp_t probe;
    struct sockaddr_in a;
    struct sockaddr_storage got;
    int len = sizeof got;
    agent_backend_t *b;
    trun_t *t;
    (void)state;
    /* a port that was free a moment ago and that nobody listens on */
    uv_tcp_init(&loop, &probe);
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(uv_tcp_bind(&probe, (const struct sockaddr *)&a, 0), 0);
    uv_tcp_getsockname(&probe, (struct sockaddr *)&got, &len);
    srv.port = ntohs(((struct sockaddr_in *)&got)->sin_port);
    uv_close((uv_handle_t *)&probe, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    b = http_backend("/run", 1000, 0);
    srv.port = 0; /* no reader to dispose */
    t = trun_new(b, "r1");
    start(t, REQUEST);
    wait_one(t);
    assert_int_equal(t->nlines, 0);
    finish(t, "connection refused");
    b->dispose(b);
}

/* Content-Length: the run ends with the body, not with the connection
 * (which this server keeps open). The last line has no newline. */
static void test_http_content_length(void **state)
{
    static const char *const pieces[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"x\":1}\n{\"y\":2}",
    };
    agent_backend_t *b;
    trun_t *t;
    (void)state;
    srv_start(pieces, 1, 0, false);
    b = http_backend("", 1000, 0); /* no path in the URL: "/" */
    t = trun_new(b, "r1");
    start(t, REQUEST);
    wait_one(t);
    assert_string_equal(srv.path, "/");
    assert_int_equal(t->nlines, 2);
    assert_string_equal(t->lines[1], "{\"y\":2}");
    finish(t, NULL);
    b->dispose(b);
}

static void test_http_read_until_close(void **state)
{
    static const char *const pieces[] = {
        "HTTP/1.0 200 OK\r\n\r\n{\"x\":1}\r\n",
        "{\"y\":2}",
    };
    agent_backend_t *b;
    trun_t *t;
    (void)state;
    srv_start(pieces, 2, 50, true);
    b = http_backend("/run", 1000, 0);
    t = trun_new(b, "r1");
    start(t, REQUEST);
    wait_one(t);
    assert_int_equal(t->nlines, 2);
    assert_string_equal(t->lines[0], "{\"x\":1}");
    assert_string_equal(t->lines[1], "{\"y\":2}");
    finish(t, NULL);
    b->dispose(b);
}

static void test_http_interim_response(void **state)
{
    static const char *const pieces[] = {
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n",
    };
    agent_backend_t *b;
    trun_t *t;
    (void)state;
    srv_start(pieces, 2, 20, false);
    b = http_backend("/run", 1000, 0);
    t = trun_new(b, "r1");
    start(t, REQUEST);
    wait_one(t);
    assert_int_equal(t->nlines, 1);
    assert_string_equal(t->lines[0], "hello");
    finish(t, NULL);
    b->dispose(b);
}

static void test_http_malformed_response(void **state)
{
    static const char *const pieces[] = {"SMTP ready\r\n\r\n"};
    agent_backend_t *b;
    trun_t *t;
    (void)state;
    srv_start(pieces, 1, 0, false);
    b = http_backend("/run", 1000, 0);
    t = trun_new(b, "r1");
    start(t, REQUEST);
    wait_one(t);
    finish(t, "malformed response");
    b->dispose(b);
}

static void test_http_long_line_skipped(void **state)
{
    static const char *const pieces[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 113\r\n\r\n"
        "0123456789012345678901234567890123456789012345678901234567890123456789"
        "012345678901234567890123456789012\n{\"ok\":1}\n",
    };
    agent_backend_t *b;
    trun_t *t;
    (void)state;
    srv_start(pieces, 1, 0, false);
    b = http_backend("/run", 1000, 16);
    t = trun_new(b, "r1");
    start(t, REQUEST);
    wait_one(t);
    assert_int_equal(t->nlines, 1);
    assert_string_equal(t->lines[0], "{\"ok\":1}");
    finish(t, NULL);
    b->dispose(b);
}

/* Forced stop while the agent is still streaming: the request is aborted at
 * once and the server sees the connection go. */
static void test_http_forced_stop_aborts(void **state)
{
    static const char *const pieces[] = {CHUNKED_HEAD "8\r\n{\"a\":1}\n\r\n", "never"};
    agent_backend_t *b;
    trun_t *t;
    (void)state;
    srv_start(pieces, 2, -1, false);
    b = http_backend("/run", 5000, 0);
    t = trun_new(b, "r1");
    t->stop_on_first_line = 1;
    start(t, REQUEST);
    wait_one(t);
    assert_int_equal(t->nlines, 1);
    assert_true(t->end_ms - t->first_line_ms < 1000);
    finish(t, "request aborted");
    b->dispose(b);
}

static void test_http_graceful_stop_waits_for_end(void **state)
{
    static const char *const pieces[] = {
        CHUNKED_HEAD "8\r\n{\"a\":1}\n\r\n",
        "7\r\n{\"b\":2}\r\n0\r\n\r\n",
    };
    agent_backend_t *b;
    trun_t *t;
    (void)state;
    srv_start(pieces, 2, 200, false);
    b = http_backend("/run", 5000, 0);
    t = trun_new(b, "r1");
    t->stop_on_first_line = 2;
    start(t, REQUEST);
    wait_one(t);
    assert_int_equal(t->nlines, 2);
    assert_true(t->end_ms - t->first_line_ms < 3000);
    finish(t, NULL);
    b->dispose(b);
}

static void test_http_graceful_stop_times_out(void **state)
{
    static const char *const pieces[] = {CHUNKED_HEAD "8\r\n{\"a\":1}\n\r\n", "never"};
    agent_backend_t *b;
    trun_t *t;
    double took;
    (void)state;
    srv_start(pieces, 2, -1, false);
    b = http_backend("/run", 200, 0);
    t = trun_new(b, "r1");
    t->stop_on_first_line = 2;
    start(t, REQUEST);
    wait_one(t);
    took = t->end_ms - t->first_line_ms;
    assert_true(took >= 190);
    assert_true(took < 3000);
    finish(t, "request aborted after the grace period");
    b->dispose(b);
}

/* A stop before the connection is even made aborts the connect. */
static void test_http_stop_while_connecting(void **state)
{
    static const char *const pieces[] = {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"};
    agent_backend_t *b;
    trun_t *t;
    (void)state;
    srv_start(pieces, 1, 0, false);
    b = http_backend("/run", 1000, 0);
    t = trun_new(b, "r1");
    start(t, REQUEST);
    b->stop(b, &t->run, false);
    b->stop(b, &t->run, true);
    wait_one(t);
    finish(t, "request aborted");
    b->dispose(b);
}

static void expect_bad_url(const char *url, const char *why)
{
    agent_options_t o = {.loop = &loop, .kill_grace_ms = 100};
    agent_backend_t *b = NULL;
    char err[200] = "";

    assert_int_equal(agent_http_create(url, &o, &b, err, sizeof err), AW_EINVAL);
    assert_null(b);
    if (!strstr(err, why))
        fail_msg("%s: error \"%s\" does not mention \"%s\"", url, err, why);
}

static void expect_good_url(const char *url)
{
    agent_options_t o = {.loop = &loop, .kill_grace_ms = 100};
    agent_backend_t *b = NULL;
    char err[200] = "";

    if (agent_http_create(url, &o, &b, err, sizeof err) != 0)
        fail_msg("%s: %s", url, err);
    assert_string_equal(b->name, url);
    b->dispose(b);
}

static void test_http_create(void **state)
{
    (void)state;
    expect_good_url("http://127.0.0.1:8080/agent");
    expect_good_url("http://localhost:8080/agent?key=v");
    expect_good_url("http://LOCALHOST/");
    expect_good_url("http://[::1]:9000/x");
    expect_good_url("http://10.0.0.1");
    expect_bad_url("https://127.0.0.1/agent", "TLS");
    expect_bad_url("ftp://127.0.0.1/agent", "http://");
    expect_bad_url("http://agent.example.com/run", "DNS");
    expect_bad_url("http://127.0.0.1:0/run", "port");
    expect_bad_url("http://127.0.0.1:99999/run", "malformed");
    expect_bad_url("http://user:pw@127.0.0.1/run", "user info");
    expect_bad_url("http://127.0.0.1/run#frag", "fragment");
    expect_bad_url("127.0.0.1:80/run", "malformed");
    expect_bad_url("", "malformed");
}

/* Which commands run without a shell (agent_argv.h): plain words whose
 * first is a path or a program on PATH; quotes, $, redirections, builtins
 * and assignments go to sh. */
static void test_argv_plain_rule(void **state)
{
    (void)state;
    char **argv = agent_argv_plain("  /opt/agent/run\t--model=x  -v ");
    assert_non_null(argv);
    assert_string_equal(argv[0], "/opt/agent/run");
    assert_string_equal(argv[1], "--model=x");
    assert_string_equal(argv[2], "-v");
    assert_null(argv[3]);
    agent_argv_free(argv);
    argv = agent_argv_plain("python3 /srv/agent.py");
    assert_non_null(argv);
    assert_string_equal(argv[0], "python3");
    agent_argv_free(argv);
    const char *not_plain[] = {"echo hi",    "kill 1",     "a=b prog",    "prog 'x'",
                               "prog $HOME", "prog > out", "prog; other", "prog *.txt",
                               "   ",        "cd /tmp",    "prog \\x",    "prog \"x\""};
    for (size_t i = 0; i < sizeof not_plain / sizeof *not_plain; i++)
        assert_null(agent_argv_plain(not_plain[i]));
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_exec_lines),
        T(test_exec_last_line_without_newline),
        T(test_exec_request_on_stdin),
        T(test_exec_stderr_goes_to_log),
        T(test_exec_exit_status),
        T(test_exec_command_not_found),
        T(test_exec_forced_stop_kills_group),
        T(test_exec_stop_before_spawned),
        T(test_exec_own_process_group),
        T(test_exec_graceful_stop_lets_agent_finish),
        T(test_exec_sigterm_ignored_gets_sigkill),
        T(test_exec_graceful_stop_escalates),
        T(test_exec_graceful_stop_then_sigterm),
        T(test_exec_stray_child_holding_stdout),
        T(test_exec_output_after_shell_exit),
        T(test_exec_environment),
        T(test_exec_long_line_skipped),
        T(test_exec_agent_ignores_large_request),
        T(test_exec_concurrent_runs),
        T(test_exec_stop_repeated),
        T(test_exec_plain_command),
        T(test_exec_plain_command_environment),
        T(test_exec_plain_command_fallbacks),
        T(test_argv_plain_rule),
        T(test_exec_create),
        T(test_http_streams_chunked),
        T(test_http_error_status),
        T(test_http_closed_mid_chunk),
        T(test_http_closed_before_response),
        T(test_http_connection_refused),
        T(test_http_content_length),
        T(test_http_read_until_close),
        T(test_http_interim_response),
        T(test_http_malformed_response),
        T(test_http_long_line_skipped),
        T(test_http_forced_stop_aborts),
        T(test_http_graceful_stop_waits_for_end),
        T(test_http_graceful_stop_times_out),
        T(test_http_stop_while_connecting),
        T(test_http_create),
    };

    if (getenv("AW_TEST_FILTER")) /* e.g. AW_TEST_FILTER='test_http_*' */
        cmocka_set_test_filter(getenv("AW_TEST_FILTER"));
    signal(SIGPIPE, SIG_IGN); /* as main.c does */
    /* Orphans of an agent's group come to us, not to a PID 1 that may never
     * reap them, so that a killed group really disappears. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
