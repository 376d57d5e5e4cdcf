/* runs.h -- agent runs (PROTOCOL sections 2 and 7): the per-run order rules
 * that every event carrying a run_id must follow, whatever its source, and
 * the life of runs started by users on the configured agent backend.
 *
 * The hub asks runs_admit about every event before it is stamped, so the
 * order rules hold for the HTTP API and agents alike. A run always ends with
 * exactly one agent_completed: the agent's, or the server's own (error,
 * timeout, cancelled). Runs never write to sockets: they publish through the
 * hub. */
#ifndef AW_RUNS_H
#define AW_RUNS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent.h"
#include "config.h"
#include "map.h"
#include "metrics.h"

struct hub;

#define RUN_ID_MAX         255
#define RUN_MAX_OPEN_TOOLS 64

enum run_source { RUN_FROM_API, RUN_FROM_AGENT };

typedef struct run {
    /* read-only */
    char id[RUN_ID_MAX + 1];
    char thread_id[RUN_ID_MAX + 1];
    char user_id[RUN_ID_MAX + 1];
    enum run_source source;
    bool open;          /* agent_started published, agent_completed not yet */
    bool agent_running; /* a backend holds the run (runs_agent_ended not yet called) */
    int64_t started_ms, last_event_ms, finished_ms;
    uint32_t events; /* events published in this run */
    /* for backends */
    void *agent; /* the backend's per-run state */
    struct runs *runs;
    /* private */
    char *_tools[RUN_MAX_OPEN_TOOLS]; /* open tool_executing names, oldest first */
    uint32_t _ntools;
    bool _stop_sent;
    int64_t _orphan_since_ms; /* the user has had no connection since, 0: has one */
} run_t;

typedef struct runs {
    /* read-only */
    size_t open_runs;
    size_t agents_running;    /* runs a backend still holds */
    agent_backend_t *backend; /* owned */
    /* cluster mode: events of runs go to the user's shard through this
     * (answers come later and are logged); NULL: the hub */
    void (*remote_publish)(void *ctx, const char *user, json_t *ev, bool own_run);
    /* cluster mode: an agent run here opens (on) or ends: the node keeps
     * listening to the user's channel meanwhile (stops come that way) */
    void (*remote_hold)(void *ctx, const char *user, bool on);
    /* cluster mode: does the user have a connection on any node? */
    bool (*remote_connected)(void *ctx, const char *user);
    void *remote_ctx;
    /* private */
    /* "user\nrun_id" -> run_t * (open and recently finished), one map per
     * hub shard (hub_shard of the user): a shard holder gates the events
     * of its users' runs in its own map (runs_admit) */
    map_t *_runs;
    unsigned _nmaps;
    map_t _per_user; /* user -> open agent runs (uintptr_t) */
    struct hub *_hub;
    const config_t *_cfg;
    metrics_t *_metrics;
    uint64_t _next_id;
    char _node[9];
} runs_t;

int runs_init(runs_t *r, struct hub *hub, const config_t *cfg, metrics_t *m,
              agent_backend_t *backend);
void runs_dispose(runs_t *r);

/* The order gate (hub_publish calls it for every event before stamping).
 * Checks ev against the run rules for user and applies the transition.
 * 0, or AW_ECONFLICT with a reason in why (answer 409 run_order). Under a
 * shard lock (lock.h) it touches only the user's shard and counters kept
 * atomically; an event of an agent's run (whose end stops the agent) gets
 * AW_EAGAIN there, before anything changed: the lock alone gates it. */
int runs_admit(runs_t *r, const char *user, const json_t *ev, int64_t now_ms, char *why,
               size_t whylen);

/* Reserves a run for a user's start_agent/user_message: run_id made here,
 * thread_id made when NULL. 0 with *out, AW_ELIMIT (too many open runs) or
 * AW_ENOMEM. The caller answers the user, then calls runs_begin. */
int runs_start(runs_t *r, const char *user, const char *thread_id, run_t **out);

/* Opens a reserved run with the server's agent_started and hands it to the
 * backend (or completes it with an error when the backend cannot start).
 * context and settings may be NULL. When agent_started cannot be published
 * the run never opens: its slot is given back, no agent starts, and the
 * error is returned (0 otherwise). */
int runs_begin(runs_t *r, run_t *run, const char *user_request, json_t *context, json_t *settings);

/* Is run_id an open run of user? */
bool runs_is_open(runs_t *r, const char *user, const char *run_id);

/* A user's stop_agent: stops the agent and ends the run with status
 * cancelled. 0, AW_ENOTFOUND (no open run of this user). */
int runs_stop(runs_t *r, const char *user, const char *run_id);

/* Backend callbacks: see agent.h. */
void runs_agent_line(run_t *run, const char *line, size_t len);
void runs_agent_ended(run_t *run, const char *reason);

/* Cluster mode: calls add for each open run whose agent runs here (their
 * leases are renewed). */
void runs_each_agent_run(runs_t *r, void (*add)(void *acc, const char *user, const char *run_id),
                         void *acc);

/* Cluster mode: the user's shard closed run_id (stop_agent on another node,
 * the API, a deadline): its agent here stops, nothing more is published. */
void runs_closed_elsewhere(runs_t *r, const char *user, const char *run_id);

/* A run that was open when the process stopped (--data-dir): known open
 * again, so that its agent_completed (reason restart) passes the gate. */
int runs_restore(runs_t *r, const char *user, const char *run_id, const char *thread_id);

/* The agent_started (started) or agent_completed of a publisher's run was
 * admitted but could not be stored (--data-dir: answered 503): the gate
 * forgets it, so that the publisher's retry passes. */
void runs_not_stored(runs_t *r, const char *user, const char *run_id, bool started);

/* The node is draining: every running agent is stopped and its open run
 * ends with status cancelled. */
void runs_shutdown(runs_t *r);

/* Housekeeping: timeouts, idle API runs, runs of users gone past the grace
 * period, forgetting finished runs. */
void runs_tick(runs_t *r, int64_t now_ms);

#endif
