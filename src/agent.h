/* agent.h -- agent backends: what runs a user's request and emits its
 * events (PROTOCOL section 7). A backend is a struct of function pointers
 * with self first; runs.c drives it and never asks which kind it is.
 *
 * Contract between runs.c and a backend:
 *  - start(b, run, request, len): begin the run. request is the run request
 *    JSON text (one line, no newline), valid only during the call. Returns 0,
 *    or a negative code if nothing was started (runs.c then completes the run
 *    with status "error"; runs_agent_ended must not be called).
 *  - While running, the backend hands each line the agent emits to
 *    runs_agent_line(run, line, len) (no trailing newline), and diagnostics
 *    to the log.
 *  - stop(b, run, graceful): the run is over (cancelled, timed out, or the
 *    agent sent agent_completed). graceful: let the agent finish on its own
 *    for the grace period before forcing it; otherwise force now (SIGTERM,
 *    then SIGKILL after the grace period). May be called more than once.
 *  - Exactly once per started run, when the agent is completely gone (process
 *    reaped, pipes and sockets closed, timers stopped), the backend calls
 *    runs_agent_ended(run, reason): reason is NULL for a clean end (exit 0,
 *    end of stream) or a short text, valid only during the call. After that
 *    call the backend must not touch run again.
 *  - dispose(b): frees the backend; no run is active by then. */
#ifndef AW_AGENT_H
#define AW_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct run;

typedef struct agent_backend {
    const char *kind; /* "builtin", "exec", "http" */
    const char *name; /* default agent_name of its runs ("demo", the command, the URL) */
    int (*start)(struct agent_backend *b, struct run *run, const char *request, size_t len);
    void (*stop)(struct agent_backend *b, struct run *run, bool graceful);
    void (*dispose)(struct agent_backend *b);
} agent_backend_t;

typedef struct agent_options {
    uv_loop_t *loop;
    int64_t kill_grace_ms; /* between SIGTERM and SIGKILL, and graceful wait */
    size_t max_line_bytes; /* longer agent lines are dropped */
    const char *env_names; /* exec: variables passed besides the minimal set, "A,B"; NULL */
} agent_options_t;

/* Makes the backend named by spec: "builtin:demo", "exec:<command>" or
 * "http://host:port/path" after "http:" (i.e. "http:http://..."; a bare
 * "http://..." is accepted too). On failure returns AW_EINVAL with a
 * one-line reason in err. */
int agent_backend_create(const char *spec, const agent_options_t *opts, agent_backend_t **out,
                         char *err, size_t errlen);

/* Constructors of the three kinds (agent.c dispatches on the spec prefix). */
int agent_demo_create(const agent_options_t *opts, agent_backend_t **out);
int agent_exec_create(const char *command, const agent_options_t *opts, agent_backend_t **out,
                      char *err, size_t errlen);
int agent_http_create(const char *url, const agent_options_t *opts, agent_backend_t **out,
                      char *err, size_t errlen);

#endif
