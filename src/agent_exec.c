/* agent_exec.c -- the exec agent backend: one process per run, started from
 * the command (see "Which program starts"), in a process group of its own,
 * given the run request on stdin; stdout lines go to runs_agent_line, stderr
 * lines to the log. Owns each run's child, its three pipes (socketpairs), its
 * exit watcher and its kill timer. Never signals anything but a run's own
 * group (never pid 0 or -1), reaps only its own children (waitpid on their
 * pid), and never calls runs_agent_ended before every handle of the run is
 * closed.
 *
 * Which program starts: a plain command (agent_argv.h) is exec'd directly,
 * without a shell; anything else, and a plain command whose exec failed, runs
 * as "/bin/sh -c <command>" (sh then reports it as before: 127 not found,
 * 126 not executable, or it runs a script without #!). The program gets the
 * environment sh would have given it (sh adds PWD). What differs: the agent
 * is the group leader and the server's child itself, so an agent killed by a
 * signal ends "killed by signal N" (through sh: "exited with status 128+N"),
 * and one that exits by itself on SIGTERM ends with its own status (sh was
 * killed by the SIGTERM to the group).
 *
 * How a child starts: posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK), so no
 * copy of the server's page tables, and the loop waits only until the child
 * execs), in a new session (POSIX_SPAWN_SETSID), every signal at its default
 * and none blocked, as uv_spawn did. Its exit is watched through a pidfd
 * (pidfd_open, Linux >= 5.3) polled on the loop, then reaped with
 * waitpid(pid). The posix_spawn call itself runs on the backend's spawner
 * thread (spawner.h): it returns only once the child has exec'd, 0.5-2 ms
 * with thousands of agents and connections open, and on the loop, under the
 * server's lock, a burst of 2,000 starts stalled every loop for seconds.
 * The loop makes the socketpairs, opens its ends, queues the request on
 * stdin and hands the child's ends to the spawner; the spawner closes them
 * once the child has its copies and hands the pid back for the exit
 * watcher. A stop asked for meanwhile is carried out when the pid arrives;
 * a failed spawn ends the run as a failed start. uv_spawn's fork, before,
 * copied the page tables of the whole server too. Where pidfd_open is missing (older kernel, a
 * seccomp filter) the backend still uses uv_spawn, and always sh -c: libuv
 * then reaps, and its SIGCHLD handler (installed by uv_spawn only) waits for
 * its own pids only, never for a posix_spawn'd child. */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent_argv.h"
#include "agent_lines.h"
#include "aw.h"
#include "log.h"
#include "runs.h"
#include "spawner.h"

#define AGENT_EXEC_NAME_MAX  64    /* bytes of the command shown as the name */
#define AGENT_EXEC_LOG_MAX   512   /* bytes of a stderr line put in the log */
#define AGENT_EXEC_READ_SIZE 65536 /* bytes per read of stdout or stderr */
#define AGENT_EXEC_HANDLES   4     /* stdin, stdout, stderr, timer; + the exit watcher */

struct exec_run;

typedef struct agent_exec {
    agent_backend_t base; /* first: agent_backend_t * converts to this */
    uv_loop_t *loop;
    int64_t grace_ms; /* >= 0 */
    size_t max_line;  /* bytes; 0 = AGENT_LINES_DEFAULT_MAX */
    char *command;
    char **argv;                        /* the plain command's words, or NULL: sh -c */
    char *pwd_var;                      /* "PWD=<cwd>" for argv, as sh exports it; or NULL */
    char *env_names;                    /* --agent-env, or NULL */
    bool use_uv_spawn;                  /* no pidfd_open here: fork with uv_spawn */
    char name[AGENT_EXEC_NAME_MAX + 1]; /* the command, cut (ending "...") if longer */
    char *sh_argv[4];                   /* "/bin/sh" "-c" command */
    /* started with the first run; NULL before, or when it could not start
     * (then use_uv_spawn) */
    spawner_t *spawner;
    /* One read buffer for every pipe of every run: libuv calls alloc_cb and
     * read_cb back to back for one stream, so two reads never hold it at
     * once. Saves 64 KiB per run. */
    char readbuf[AGENT_EXEC_READ_SIZE];
} agent_exec_t;

/* How far a stop has gone; each step waits grace_ms for the group to go. */
enum exec_stage {
    EXEC_RUNNING,   /* no stop yet */
    EXEC_GRACE,     /* waiting for the agent to exit by itself */
    EXEC_TERM_SENT, /* SIGTERM sent to the group */
    EXEC_KILL_SENT, /* SIGKILL sent to the group */
    EXEC_ABANDONED  /* pipes closed on our side: something outside the group held them */
};

typedef struct exec_run {
    agent_exec_t *be;
    run_t *run; /* NULL once start failed: runs is never told */
    union {
        uv_process_t proc;   /* be->use_uv_spawn */
        uv_poll_t exit_poll; /* otherwise: readable once the child exited */
    } exit_watch;
    bool exit_watched; /* exit_watch initialised: it counts in open_handles */
    int pidfd;         /* polled by exit_watch.exit_poll; -1 when none */
    uv_pipe_t in, out, err;
    uv_timer_t timer;
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    agent_lines_t out_lines, err_lines;
    char *request; /* the request and "\n", until the run ends */
    int pid;       /* also the process group id (setsid); 0 before spawn */
    /* with the spawner from exec_spawn to exec_spawned */
    bool spawning, spawn_failed;
    spawn_req_t spawn;
    int open_handles;
    bool exited, out_done, err_done, finishing;
    enum exec_stage stage;
    int64_t exit_status;
    int term_signal;
} exec_run_t;

static void exec_on_close(uv_handle_t *h);

static const char *exec_run_id(const exec_run_t *st)
{
    return st->run ? st->run->id : "-";
}

/* Signals the run's whole process group; the group may outlive the shell. */
static void exec_signal_group(exec_run_t *st, int sig)
{
    if (st->pid <= 1)
        return; /* kill(0) or kill(-1) would hit the server or everyone */
    if (kill(-st->pid, sig) != 0 && errno != ESRCH)
        log_kv(LOG_WARN, "agent signal failed", "run", exec_run_id(st), "#signal", (long long)sig,
               "error", strerror(errno), NULL);
}

static void exec_close(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, exec_on_close);
}

/* The agent is gone once its process is reaped and both output pipes ended:
 * then stdin (if still waiting on a write) and the timer go too. */
static void exec_maybe_finish(exec_run_t *st)
{
    if (st->finishing || !st->exited || !st->out_done || !st->err_done)
        return;
    st->finishing = true;
    uv_timer_stop(&st->timer);
    exec_close((uv_handle_t *)&st->in);
    exec_close((uv_handle_t *)&st->timer);
}

/* Writes the end reason (NULL for a clean end) into buf. */
static const char *exec_reason(const exec_run_t *st, char *buf, size_t len)
{
    if (st->spawn_failed)
        snprintf(buf, len, "the agent could not be started");
    else if (st->term_signal != 0)
        snprintf(buf, len, "agent killed by signal %d", st->term_signal);
    else if (st->exit_status != 0)
        snprintf(buf, len, "agent exited with status %lld", (long long)st->exit_status);
    else if (st->stage == EXEC_ABANDONED)
        snprintf(buf, len, "agent output still open after SIGKILL");
    else
        return NULL;
    return buf;
}

static void exec_run_free(exec_run_t *st)
{
    if (!st)
        return;
    agent_lines_dispose(&st->out_lines);
    agent_lines_dispose(&st->err_lines);
    free(st->request);
    free(st);
}

/* Last handle closed: free the run's state, then tell runs (once). */
static void exec_run_end(exec_run_t *st)
{
    run_t *run = st->run;
    char buf[64];
    const char *reason = exec_reason(st, buf, sizeof buf);

    exec_run_free(st);
    if (!run)
        return;
    run->agent = NULL;
    log_kv(LOG_DEBUG, "agent ended", "run", run->id, "reason", reason, NULL);
    runs_agent_ended(run, reason);
}

static void exec_on_close(uv_handle_t *h)
{
    exec_run_t *st = h->data;

    if (--st->open_handles == 0 && !st->spawning)
        exec_run_end(st); /* else exec_spawned ends it */
}

static void exec_on_timer(uv_timer_t *t);

/* Takes one step of the stop ladder and arms the timer for the next. */
static void exec_escalate(exec_run_t *st, enum exec_stage stage)
{
    st->stage = stage;
    if (stage == EXEC_TERM_SENT)
        exec_signal_group(st, SIGTERM);
    else if (stage == EXEC_KILL_SENT)
        exec_signal_group(st, SIGKILL);
    if (stage != EXEC_ABANDONED) {
        uv_timer_start(&st->timer, exec_on_timer, (uint64_t)st->be->grace_ms, 0);
        return;
    }
    /* Whatever holds the pipes is out of the group's reach (it left the
     * session): stop waiting for their end. */
    log_kv(LOG_WARN, "agent output still open after SIGKILL", "run", exec_run_id(st), NULL);
    st->out_done = st->err_done = true;
    exec_close((uv_handle_t *)&st->out);
    exec_close((uv_handle_t *)&st->err);
    exec_maybe_finish(st);
}

static void exec_on_timer(uv_timer_t *t)
{
    exec_run_t *st = t->data;

    if (st->stage < EXEC_ABANDONED)
        exec_escalate(st, (enum exec_stage)(st->stage + 1));
}

/* Closes the exit watcher (the pidfd goes with it: a closed poll handle no
 * longer watches its fd). */
static void exec_close_exit_watch(exec_run_t *st)
{
    if (st->exit_watched)
        exec_close((uv_handle_t *)&st->exit_watch);
    if (st->pidfd >= 0) {
        close(st->pidfd);
        st->pidfd = -1;
    }
}

static void exec_exited(exec_run_t *st, int64_t exit_status, int term_signal)
{
    st->exited = true;
    st->exit_status = exit_status;
    st->term_signal = term_signal;
    exec_close_exit_watch(st);
    /* The shell is gone but something it started still holds stdout or
     * stderr: give it the grace period, then signal the group. */
    if ((!st->out_done || !st->err_done) && st->stage == EXEC_RUNNING)
        exec_escalate(st, EXEC_GRACE);
    exec_maybe_finish(st);
}

static void exec_on_exit(uv_process_t *p, int64_t exit_status, int term_signal)
{
    exec_exited(p->data, exit_status, term_signal);
}

/* The pidfd is readable: the child exited (a zombie until this waitpid). */
static void exec_on_pidfd(uv_poll_t *p, int status, int events)
{
    exec_run_t *st = p->data;
    int ws = 0;
    pid_t r;

    (void)events;
    do
        r = waitpid(st->pid, &ws, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0) {
        if (status < 0)
            log_kv(LOG_WARN | LOG_LIMITED, "agent exit watch failed", "run", exec_run_id(st),
                   "error", uv_strerror(status), NULL);
        return; /* still running: the pidfd is polled on */
    }
    if (r < 0) {
        /* ECHILD: reaped elsewhere (SIGCHLD ignored by an embedder?) */
        log_kv(LOG_WARN, "agent exit status lost", "run", exec_run_id(st), "error", strerror(errno),
               NULL);
        ws = 0;
    }
    exec_exited(st, WIFEXITED(ws) ? WEXITSTATUS(ws) : 0, WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
}

static void exec_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    exec_run_t *st = h->data;

    (void)suggested;
    *buf = uv_buf_init(st->be->readbuf, sizeof st->be->readbuf);
}

static void exec_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    exec_run_t *st = s->data;
    bool is_out = s == (uv_stream_t *)&st->out;
    agent_lines_t *lines = is_out ? &st->out_lines : &st->err_lines;

    if (nread > 0) {
        if (agent_lines_feed(lines, buf->base, (size_t)nread) != 0)
            log_kv(LOG_WARN | LOG_LIMITED, "agent line dropped", "run", exec_run_id(st), "error",
                   aw_strerror(AW_ENOMEM), NULL);
        return;
    }
    if (nread == 0)
        return;
    if (nread != UV_EOF)
        log_kv(LOG_WARN, "agent pipe read failed", "run", exec_run_id(st), "error",
               uv_strerror((int)nread), NULL);
    agent_lines_finish(lines);
    if (is_out)
        st->out_done = true;
    else
        st->err_done = true;
    exec_close((uv_handle_t *)s);
    exec_maybe_finish(st);
}

static void exec_on_out_line(void *user, const char *line, size_t len)
{
    exec_run_t *st = user;

    if (len > 0)
        runs_agent_line(st->run, line, len);
}

/* Copies line into out (size max + 1) as text of at most max bytes (max >
 * 3) with a NUL; a longer line is cut at a UTF-8 character boundary and
 * ends with "...". */
static void exec_cut_text(char *out, size_t max, const char *line, size_t len)
{
    bool cut = len > max;

    if (cut) {
        len = max - 3;
        while (len > 0 && ((unsigned char)line[len] & 0xC0) == 0x80)
            len--;
    }
    memcpy(out, line, len);
    strcpy(out + len, cut ? "..." : "");
}

static void exec_on_err_line(void *user, const char *line, size_t len)
{
    exec_run_t *st = user;
    char text[AGENT_EXEC_LOG_MAX + 1];

    if (len == 0)
        return;
    exec_cut_text(text, AGENT_EXEC_LOG_MAX, line, len);
    log_kv(LOG_INFO | LOG_LIMITED, "agent stderr", "run", exec_run_id(st), "line", text, NULL);
}

static void exec_on_out_too_long(void *user, size_t seen)
{
    exec_run_t *st = user;

    log_kv(LOG_WARN | LOG_LIMITED, "agent line too long, dropped", "run", exec_run_id(st), "#bytes",
           (long long)seen, "#max", (long long)st->out_lines.max_line_bytes, NULL);
}

static void exec_on_err_too_long(void *user, size_t seen)
{
    exec_run_t *st = user;

    log_kv(LOG_INFO | LOG_LIMITED, "agent stderr line too long, dropped", "run", exec_run_id(st),
           "#bytes", (long long)seen, NULL);
}

/* stdin is done (written, or failed): close it so the agent sees EOF. */
static void exec_on_shutdown(uv_shutdown_t *req, int status)
{
    exec_run_t *st = req->data;

    (void)status; /* a socketpair shuts down fine; an error only means the agent left */
    exec_close((uv_handle_t *)&st->in);
}

static void exec_on_write(uv_write_t *req, int status)
{
    exec_run_t *st = req->data;

    /* EPIPE: the agent exited without reading its request (SIGPIPE is
     * ignored by the server). Its exit status tells the rest. */
    if (status < 0 && status != UV_ECANCELED)
        log_kv(LOG_INFO, "agent did not take its request", "run", exec_run_id(st), "error",
               uv_strerror(status), NULL);
}

/* Sends the request on stdin, then shuts stdin down (after the write). */
static void exec_feed_stdin(exec_run_t *st, size_t len)
{
    uv_buf_t b = uv_buf_init(st->request, (unsigned int)len);
    int rc;

    st->write_req.data = st->shutdown_req.data = st;
    rc = uv_write(&st->write_req, (uv_stream_t *)&st->in, &b, 1, exec_on_write);
    if (rc == 0)
        rc = uv_shutdown(&st->shutdown_req, (uv_stream_t *)&st->in, exec_on_shutdown);
    if (rc != 0) {
        log_kv(LOG_WARN, "agent stdin failed", "run", exec_run_id(st), "error", uv_strerror(rc),
               NULL);
        exec_close((uv_handle_t *)&st->in);
    }
}

static void exec_read_pipe(exec_run_t *st, uv_pipe_t *p, bool *done)
{
    int rc = uv_read_start((uv_stream_t *)p, exec_on_alloc, exec_on_read);

    if (rc != 0) {
        log_kv(LOG_WARN, "agent pipe read failed", "run", exec_run_id(st), "error", uv_strerror(rc),
               NULL);
        *done = true;
        exec_close((uv_handle_t *)p);
    }
}

/* Variables every agent gets when the server has them: what a program
 * needs to run, nothing that could carry a credential. */
static const char *const exec_env_base[] = {"PATH", "HOME", "USER",  "LOGNAME",
                                            "LANG", "TZ",   "TMPDIR"};

/* True when NAME=... is in the comma-separated list. */
static bool exec_env_listed(const char *list, const char *var, size_t namelen)
{
    for (const char *p = list; p && *p;) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t n = strcspn(p, ", ");
        if (n == namelen && strncmp(p, var, n) == 0)
            return true;
        p += n;
    }
    return false;
}

static bool exec_env_allowed(const agent_exec_t *be, const char *var)
{
    const char *eq = strchr(var, '=');
    size_t n = eq ? (size_t)(eq - var) : strlen(var);
    if (strncmp(var, "AGENTWIRE_", 10) == 0)
        return false; /* the server's settings: never, even when listed */
    if (strncmp(var, "LC_", 3) == 0)
        return true;
    for (size_t i = 0; i < AW_ARRAY_LEN(exec_env_base); i++)
        if (strlen(exec_env_base[i]) == n && strncmp(var, exec_env_base[i], n) == 0)
            return true;
    return exec_env_listed(be->env_names, var, n);
}

/* A minimal environment: the base set and --agent-env, never AGENTWIRE_*
 * (which may hold the JWT secret or the API key, with which an agent could
 * write to any user). The pointers are environ's; free only the array. */
static char **exec_child_env(const agent_exec_t *be)
{
    size_t n = 0, k = 0;
    bool has_pwd = false;
    char **env;

    while (environ[n])
        n++;
    env = malloc((n + 2) * sizeof *env);
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (exec_env_allowed(be, environ[i])) {
            has_pwd = has_pwd || strncmp(environ[i], "PWD=", 4) == 0;
            env[k++] = environ[i];
        }
    if (be->pwd_var && !has_pwd)
        env[k++] = be->pwd_var; /* what sh would add: the program runs without it */
    env[k] = NULL;
    return env;
}

/* The fallback: uv_spawn forks (and reaps through its SIGCHLD handler). */
static int exec_uv_spawn(exec_run_t *st, char **env)
{
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&st->in},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&st->out},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&st->err},
    };
    uv_process_options_t o = {
        .exit_cb = exec_on_exit,
        .file = st->be->sh_argv[0],
        .args = st->be->sh_argv,
        .env = env,
        .flags = UV_PROCESS_DETACHED, /* setsid: the group id is the pid */
        .stdio_count = 3,
        .stdio = stdio,
    };
    int rc;

    st->exit_watch.proc.data = st;
    st->exit_watched = true; /* uv_spawn initialises proc even when it fails */
    st->open_handles++;
    rc = uv_spawn(st->be->loop, &st->exit_watch.proc, &o);
    free(env); /* the child has its copy */
    if (rc == 0)
        st->pid = st->exit_watch.proc.pid;
    return rc;
}

static int exec_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0); /* the fd is close-on-exec */
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

/* Moves fd to 3 or above (close-on-exec): the child's dup2 onto 0, 1 and 2
 * must not overwrite one of its sources (the server may run with a standard
 * fd closed). */
static int exec_fd_above_stdio(int *fd)
{
    int moved;

    if (*fd > 2)
        return 0;
    moved = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    if (moved < 0)
        return -1;
    close(*fd);
    *fd = moved;
    return 0;
}

/* A socketpair (as uv_spawn makes for a pipe): [0] the server's, [1] the
 * child's; both close-on-exec, so another child never inherits them. */
static int exec_socketpair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return -1;
    if (exec_fd_above_stdio(&sv[0]) != 0 || exec_fd_above_stdio(&sv[1]) != 0) {
        close(sv[0]);
        close(sv[1]);
        sv[0] = sv[1] = -1;
        return -1;
    }
    return 0;
}

static void exec_close_fds(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
}

/* The spawner's answer for st, on the loop: the child's exit watched from
 * now on, or the run ended as a start that failed (its pipes see EOF: the
 * child's ends are closed). A stop asked for meanwhile reaches the new
 * group now. */
static void exec_spawned(spawn_req_t *req)
{
    exec_run_t *st = req->data;
    int rc = req->rc ? uv_translate_sys_error(req->rc) : 0;

    st->spawning = false;
    if (rc == 0 && (st->pidfd = exec_pidfd_open(req->pid)) < 0)
        rc = uv_translate_sys_error(errno);
    if (rc == 0 && (rc = uv_poll_init(st->be->loop, &st->exit_watch.exit_poll, st->pidfd)) == 0) {
        st->exit_watch.exit_poll.data = st;
        st->exit_watched = true;
        st->open_handles++;
        rc = uv_poll_start(&st->exit_watch.exit_poll, UV_READABLE, exec_on_pidfd);
    }
    if (rc != 0) {
        if (req->rc == 0)
            spawner_kill_unwatched(req->pid);
        log_kv(LOG_ERROR, "agent spawn failed", "run", exec_run_id(st), "error", uv_strerror(rc),
               NULL);
        st->spawn_failed = true;
        exec_exited(st, 0, 0);
    } else {
        st->pid = req->pid; /* from here on exec_on_pidfd reaps it */
        log_kv(LOG_DEBUG, "agent started", "run", exec_run_id(st), "#pid", (long long)st->pid,
               NULL);
        if (st->stage == EXEC_TERM_SENT)
            exec_signal_group(st, SIGTERM);
        else if (st->stage >= EXEC_KILL_SENT)
            exec_signal_group(st, SIGKILL);
    }
    if (st->open_handles == 0)
        exec_run_end(st);
}

/* The spawner starts with the first run. false: no thread, spawn here. */
static bool exec_spawner_start(agent_exec_t *be)
{
    if (be->spawner)
        return true;
    if (spawner_create(be->loop, exec_spawned, &be->spawner) != AW_OK) {
        log_kv(LOG_WARN, "exec agent: no spawner thread, agents start on the loop", NULL);
        be->use_uv_spawn = true;
        return false;
    }
    return true;
}

/* Makes the socketpairs for stdio, opens the server's ends and hands the
 * child's ends and env (which it takes) to the spawner. A failure here (no
 * child yet) closes every fd and returns the error; from then on a failed
 * spawn ends the run (exec_spawned). */
static int exec_spawn(exec_run_t *st, char **env)
{
    agent_exec_t *be = st->be;
    uv_pipe_t *pipes[3] = {&st->in, &st->out, &st->err};
    int sv[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
    int rc = 0;

    if (be->use_uv_spawn || !exec_spawner_start(be))
        return exec_uv_spawn(st, env);
    for (int i = 0; i < 3 && rc == 0; i++)
        if (exec_socketpair(sv[i]) != 0)
            rc = uv_translate_sys_error(errno);
    for (int i = 0; i < 3 && rc == 0; i++)
        if ((rc = uv_pipe_open(pipes[i], sv[i][0])) == 0)
            sv[i][0] = -1; /* the pipe owns it now */
    if (rc != 0) {
        for (int i = 0; i < 3; i++)
            exec_close_fds(sv[i], 2);
        free(env);
        return rc;
    }
    for (int i = 0; i < 3; i++)
        st->spawn.fds[i] = sv[i][1];
    /* the plain command's argv, or sh -c when there is none or its exec
     * failed (sh then tells why, as without argv) */
    st->spawn.argv = be->argv;
    st->spawn.fallback = be->sh_argv;
    st->spawn.env = env;
    st->spawn.data = st;
    st->spawning = true;
    spawner_submit(be->spawner, &st->spawn);
    return 0;
}

/* Initialises the pipes and timer (these cannot fail on Unix) and spawns.
 * Whatever happens, all AGENT_EXEC_HANDLES handles exist afterwards, and the
 * exit watcher too if exit_watched. */
static int exec_open(exec_run_t *st, char **env)
{
    uv_loop_t *loop = st->be->loop;
    uv_handle_t *hs[] = {(uv_handle_t *)&st->in, (uv_handle_t *)&st->out, (uv_handle_t *)&st->err,
                         (uv_handle_t *)&st->timer};

    uv_pipe_init(loop, &st->in, 0);
    uv_pipe_init(loop, &st->out, 0);
    uv_pipe_init(loop, &st->err, 0);
    uv_timer_init(loop, &st->timer);
    for (size_t i = 0; i < AW_ARRAY_LEN(hs); i++)
        hs[i]->data = st;
    st->open_handles = AGENT_EXEC_HANDLES;
    return exec_spawn(st, env);
}

/* The spawn failed: drop every handle; the state frees itself when they
 * are closed, without a word to runs (start returns the error). */
static void exec_abort_start(exec_run_t *st)
{
    st->run = NULL;
    st->finishing = true;
    exec_close_exit_watch(st);
    exec_close((uv_handle_t *)&st->in);
    exec_close((uv_handle_t *)&st->out);
    exec_close((uv_handle_t *)&st->err);
    exec_close((uv_handle_t *)&st->timer);
}

static exec_run_t *exec_run_new(agent_exec_t *be, run_t *run, const char *request, size_t len)
{
    exec_run_t *st = calloc(1, sizeof *st);

    if (!st)
        return NULL;
    st->request = malloc(len + 1);
    if (!st->request) {
        free(st);
        return NULL;
    }
    memcpy(st->request, request, len);
    st->request[len] = '\n';
    st->be = be;
    st->run = run;
    st->pidfd = -1;
    agent_lines_init(&st->out_lines, be->max_line, exec_on_out_line, exec_on_out_too_long, st);
    agent_lines_init(&st->err_lines, be->max_line, exec_on_err_line, exec_on_err_too_long, st);
    return st;
}

static int exec_start(agent_backend_t *b, run_t *run, const char *request, size_t len)
{
    agent_exec_t *be = (agent_exec_t *)b;
    exec_run_t *st = exec_run_new(be, run, request, len);
    char **env = st ? exec_child_env(st->be) : NULL;
    int rc;

    if (!env) {
        exec_run_free(st);
        return AW_ENOMEM;
    }
    rc = exec_open(st, env); /* takes env */
    if (rc != 0) {
        log_kv(LOG_ERROR, "agent spawn failed", "run", run->id, "error", uv_strerror(rc), NULL);
        exec_abort_start(st);
        return rc == UV_ENOMEM ? AW_ENOMEM : AW_EIO;
    }
    run->agent = st;
    exec_read_pipe(st, &st->out, &st->out_done);
    exec_read_pipe(st, &st->err, &st->err_done);
    exec_feed_stdin(st, len + 1);
    return 0;
}

static void exec_stop(agent_backend_t *b, run_t *run, bool graceful)
{
    exec_run_t *st = run->agent;

    (void)b;
    if (!st || st->finishing)
        return;
    if (graceful && st->stage == EXEC_RUNNING)
        exec_escalate(st, EXEC_GRACE);
    else if (!graceful && st->stage <= EXEC_GRACE)
        exec_escalate(st, EXEC_TERM_SENT);
}

static void exec_dispose(agent_backend_t *b)
{
    agent_exec_t *be = (agent_exec_t *)b;

    if (!be)
        return;
    spawner_free(be->spawner);
    agent_argv_free(be->argv);
    free(be->pwd_var);
    free(be->command);
    free(be->env_names);
    free(be);
}

/* "PWD=<the working directory>", as dash exports it (the server never
 * changes directory); NULL when unknown (sh would then set none either). */
static char *exec_pwd_var(void)
{
    char *cwd = getcwd(NULL, 0);
    char *var = cwd ? malloc(strlen(cwd) + 5) : NULL;

    if (var)
        sprintf(var, "PWD=%s", cwd);
    free(cwd);
    return var;
}

/* Can this process watch a child through a pidfd? (Linux >= 5.3, and no
 * seccomp filter refusing pidfd_open.) */
static bool exec_pidfd_works(void)
{
    int fd = exec_pidfd_open(getpid());

    if (fd < 0) {
        log_kv(LOG_INFO, "exec agent: no pidfd_open, agents start with fork", "error",
               strerror(errno), NULL);
        return false;
    }
    close(fd);
    return true;
}

/* The name shown for the backend: the command, cut at a character boundary. */
static void exec_set_name(agent_exec_t *be, const char *command)
{
    exec_cut_text(be->name, AGENT_EXEC_NAME_MAX, command, strlen(command));
}

int agent_exec_create(const char *command, const agent_options_t *opts, agent_backend_t **out,
                      char *err, size_t errlen)
{
    agent_exec_t *be;

    *out = NULL;
    if (!command || !*command || !opts || !opts->loop) {
        snprintf(err, errlen, "exec agent: the command is empty");
        return AW_EINVAL;
    }
    be = calloc(1, sizeof *be);
    if (!be || !(be->command = strdup(command))) {
        free(be);
        snprintf(err, errlen, "exec agent: out of memory");
        return AW_ENOMEM;
    }
    be->sh_argv[0] = "/bin/sh";
    be->sh_argv[1] = "-c";
    be->sh_argv[2] = be->command;
    be->loop = opts->loop;
    be->grace_ms = opts->kill_grace_ms > 0 ? opts->kill_grace_ms : 0;
    be->max_line = opts->max_line_bytes;
    be->env_names = opts->env_names ? strdup(opts->env_names) : NULL;
    be->use_uv_spawn = !exec_pidfd_works();
    if (!be->use_uv_spawn)
        be->argv = agent_argv_plain(command); /* uv_spawn: always sh -c */
    if (be->argv)
        be->pwd_var = exec_pwd_var();
    exec_set_name(be, command);
    be->base.kind = "exec";
    be->base.name = be->name;
    be->base.start = exec_start;
    be->base.stop = exec_stop;
    be->base.dispose = exec_dispose;
    *out = &be->base;
    return AW_OK;
}
