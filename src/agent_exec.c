/* agent_exec.c -- the exec agent backend: one "/bin/sh -c <command>" per run,
 * in a process group of its own, given the run request on stdin; stdout lines
 * go to runs_agent_line, stderr lines to the log. Owns each run's child, its
 * three pipes and its kill timer. Never signals anything but a run's own
 * group (never pid 0 or -1), never waits for a child itself (libuv reaps),
 * and never calls runs_agent_ended before every handle of the run is closed. */
#include "agent.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_lines.h"
#include "aw.h"
#include "log.h"
#include "runs.h"

#define AGENT_EXEC_NAME_MAX  64    /* bytes of the command shown as the name */
#define AGENT_EXEC_LOG_MAX   512   /* bytes of a stderr line put in the log */
#define AGENT_EXEC_READ_SIZE 65536 /* bytes per read of stdout or stderr */
#define AGENT_EXEC_HANDLES   5     /* process, stdin, stdout, stderr, timer */

typedef struct agent_exec {
    agent_backend_t base; /* first: agent_backend_t * converts to this */
    uv_loop_t *loop;
    int64_t grace_ms; /* >= 0 */
    size_t max_line;  /* bytes; 0 = AGENT_LINES_DEFAULT_MAX */
    char *command;
    char *env_names;                    /* --agent-env, or NULL */
    char name[AGENT_EXEC_NAME_MAX + 1]; /* the command, cut (ending "...") if longer */
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
    uv_process_t proc;
    uv_pipe_t in, out, err;
    uv_timer_t timer;
    uv_write_t write_req;
    uv_shutdown_t shutdown_req;
    agent_lines_t out_lines, err_lines;
    char *request; /* the request and "\n", until the run ends */
    int pid;       /* also the process group id (setsid); 0 before spawn */
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
    if (st->term_signal != 0)
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

    if (--st->open_handles == 0)
        exec_run_end(st);
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

static void exec_on_exit(uv_process_t *p, int64_t exit_status, int term_signal)
{
    exec_run_t *st = p->data;

    st->exited = true;
    st->exit_status = exit_status;
    st->term_signal = term_signal;
    exec_close((uv_handle_t *)p);
    /* The shell is gone but something it started still holds stdout or
     * stderr: give it the grace period, then signal the group. */
    if ((!st->out_done || !st->err_done) && st->stage == EXEC_RUNNING)
        exec_escalate(st, EXEC_GRACE);
    exec_maybe_finish(st);
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
    char **env;

    while (environ[n])
        n++;
    env = malloc((n + 1) * sizeof *env);
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (exec_env_allowed(be, environ[i]))
            env[k++] = environ[i];
    env[k] = NULL;
    return env;
}

static int exec_spawn(exec_run_t *st, char **env)
{
    char *args[] = {"/bin/sh", "-c", st->be->command, NULL};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_CREATE_PIPE | UV_READABLE_PIPE, .data.stream = (uv_stream_t *)&st->in},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&st->out},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&st->err},
    };
    uv_process_options_t o = {
        .exit_cb = exec_on_exit,
        .file = args[0],
        .args = args,
        .env = env,
        .flags = UV_PROCESS_DETACHED, /* setsid: the group id is the pid */
        .stdio_count = 3,
        .stdio = stdio,
    };

    return uv_spawn(st->be->loop, &st->proc, &o);
}

/* Initialises the pipes and timer (these cannot fail on Unix) and spawns.
 * Whatever happens, all AGENT_EXEC_HANDLES handles exist afterwards. */
static int exec_open(exec_run_t *st, char **env)
{
    uv_loop_t *loop = st->be->loop;
    uv_handle_t *hs[] = {(uv_handle_t *)&st->proc, (uv_handle_t *)&st->in, (uv_handle_t *)&st->out,
                         (uv_handle_t *)&st->err, (uv_handle_t *)&st->timer};

    uv_pipe_init(loop, &st->in, 0);
    uv_pipe_init(loop, &st->out, 0);
    uv_pipe_init(loop, &st->err, 0);
    uv_timer_init(loop, &st->timer);
    for (size_t i = 0; i < AW_ARRAY_LEN(hs); i++)
        hs[i]->data = st;
    st->open_handles = AGENT_EXEC_HANDLES;
    return exec_spawn(st, env); /* initialises proc even when it fails */
}

/* The spawn failed: drop every handle; the state frees itself when they
 * are closed, without a word to runs (start returns the error). */
static void exec_abort_start(exec_run_t *st)
{
    st->run = NULL;
    st->finishing = true;
    exec_close((uv_handle_t *)&st->proc);
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
    rc = exec_open(st, env);
    free(env); /* the child has its copy: uv_spawn returns after the exec */
    if (rc != 0) {
        log_kv(LOG_ERROR, "agent spawn failed", "run", run->id, "error", uv_strerror(rc), NULL);
        exec_abort_start(st);
        return rc == UV_ENOMEM ? AW_ENOMEM : AW_EIO;
    }
    st->pid = st->proc.pid;
    run->agent = st;
    log_kv(LOG_DEBUG, "agent started", "run", run->id, "#pid", (long long)st->pid, NULL);
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
    free(be->command);
    free(be->env_names);
    free(be);
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
    be->loop = opts->loop;
    be->grace_ms = opts->kill_grace_ms > 0 ? opts->kill_grace_ms : 0;
    be->max_line = opts->max_line_bytes;
    be->env_names = opts->env_names ? strdup(opts->env_names) : NULL;
    exec_set_name(be, command);
    be->base.kind = "exec";
    be->base.name = be->name;
    be->base.start = exec_start;
    be->base.stop = exec_stop;
    be->base.dispose = exec_dispose;
    *out = &be->base;
    return AW_OK;
}
