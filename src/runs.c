/* runs.c -- the run-order gate and the life of agent runs. Owns every run_t
 * (open and recently finished) and the agent backend. Publishes only through
 * hub_publish; decides nothing about delivery. A run it opened always ends
 * with exactly one agent_completed. */
#include "runs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "event.h"
#include "hub.h"
#include "jalloc.h"
#include "lock.h"
#include "log.h"

static const char *const statuses[] = {"success", "error", "cancelled", "timeout"};

int runs_init(runs_t *r, struct hub *hub, const config_t *cfg, metrics_t *m,
              agent_backend_t *backend)
{
    memset(r, 0, sizeof *r);
    r->_hub = hub;
    r->_cfg = cfg;
    r->_metrics = m;
    r->backend = backend;
    uint8_t node[4];
    if (aw_random_bytes(node, sizeof node) != AW_OK)
        return AW_EIO;
    aw_hex(r->_node, node, sizeof node);
    r->_nmaps = hub_shards(hub);
    r->_runs = calloc(r->_nmaps, sizeof *r->_runs);
    if (!r->_runs)
        return AW_ENOMEM;
    int rc = AW_OK;
    for (unsigned i = 0; i < r->_nmaps && rc == AW_OK; i++)
        rc = map_init(&r->_runs[i]);
    return rc == AW_OK ? map_init(&r->_per_user) : rc;
}

static void run_free(void *value)
{
    run_t *run = value;
    for (uint32_t i = 0; i < run->_ntools; i++)
        free(run->_tools[i]);
    free(run);
}

void runs_dispose(runs_t *r)
{
    for (unsigned i = 0; r->_runs && i < r->_nmaps; i++)
        map_dispose(&r->_runs[i], run_free);
    free(r->_runs);
    r->_runs = NULL;
    map_dispose(&r->_per_user, NULL);
    if (r->backend)
        r->backend->dispose(r->backend);
}

static size_t run_key(char *out, size_t outlen, const char *user, const char *run_id)
{
    int n = snprintf(out, outlen, "%s\n%s", user, run_id);
    return n < 0 ? 0 : (size_t)n;
}

/* The user's map: its hub shard's */
static map_t *runs_of(runs_t *r, const char *user)
{
    return &r->_runs[hub_shard(r->_hub, user)];
}

/* Every map in turn (under the lock alone). */
static void each_map(runs_t *r, bool (*fn)(const void *value, void *arg), void *arg,
                     void (*free_value)(void *))
{
    for (unsigned i = 0; i < r->_nmaps; i++)
        map_remove_if(&r->_runs[i], fn, arg, free_value);
}

/* Counters a shard holder may change (another shard's holder too) */
static void count(size_t *n, int delta)
{
    __atomic_fetch_add(n, (size_t)(ptrdiff_t)delta, __ATOMIC_RELAXED);
}

static void count64(uint64_t *n)
{
    __atomic_fetch_add(n, 1, __ATOMIC_RELAXED);
}

static run_t *run_find(runs_t *r, const char *user, const char *run_id)
{
    char key[2 * RUN_ID_MAX + 2];
    return map_get(runs_of(r, user), key, run_key(key, sizeof key, user, run_id));
}

static uintptr_t user_runs(runs_t *r, const char *user)
{
    return (uintptr_t)map_get(&r->_per_user, user, strlen(user));
}

static void user_runs_add(runs_t *r, const char *user, int delta)
{
    uintptr_t n = user_runs(r, user) + (uintptr_t)(intptr_t)delta;
    if (n == 0)
        map_remove(&r->_per_user, user, strlen(user));
    else
        map_put(&r->_per_user, user, strlen(user), (void *)n);
}

static run_t *run_new(runs_t *r, const char *user, const char *run_id, const char *thread_id,
                      enum run_source source)
{
    run_t *run = calloc(1, sizeof *run);
    if (!run)
        return NULL;
    snprintf(run->id, sizeof run->id, "%s", run_id);
    snprintf(run->thread_id, sizeof run->thread_id, "%s", thread_id);
    snprintf(run->user_id, sizeof run->user_id, "%s", user);
    run->source = source;
    run->runs = r;
    run->started_ms = run->last_event_ms = aw_now_ms();
    char key[2 * RUN_ID_MAX + 2];
    if (!map_put(runs_of(r, user), key, run_key(key, sizeof key, user, run_id), run)) {
        free(run);
        return NULL;
    }
    return run;
}

static int conflict(char *why, size_t whylen, const char *fmt, const char *a, const char *b)
{
    snprintf(why, whylen, fmt, a, b);
    return AW_ECONFLICT;
}

/* tool_executing opens a tool; tool_completed answers the latest open one of
 * the same name. */
static int track_tool(run_t *run, const char *type, const char *tool, char *why, size_t whylen)
{
    if (strcmp(type, "tool_executing") == 0) {
        if (run->_ntools == RUN_MAX_OPEN_TOOLS)
            return conflict(why, whylen, "run %s has too many open tools%s", run->id, "");
        char *copy = strdup(tool);
        if (!copy)
            return AW_ENOMEM;
        run->_tools[run->_ntools++] = copy;
        return AW_OK;
    }
    for (uint32_t i = run->_ntools; i-- > 0;) {
        if (strcmp(run->_tools[i], tool) == 0) {
            free(run->_tools[i]);
            memmove(&run->_tools[i], &run->_tools[i + 1],
                    (run->_ntools - i - 1) * sizeof run->_tools[0]);
            run->_ntools--;
            return AW_OK;
        }
    }
    return conflict(why, whylen, "tool_completed answers no open tool_executing of %s%s", tool, "");
}

/* Agents live on the main loop (lock.h): a call from another loop is handed
 * over, and checked again there, since the run may have moved on. */
typedef struct agent_call {
    runs_t *r;
    run_t *run;
    char *request;
    bool graceful;
} agent_call_t;

static void stop_on_main(void *arg)
{
    agent_call_t *c = arg;
    if (c->run->agent_running)
        c->r->backend->stop(c->r->backend, c->run, c->graceful);
    free(c);
}

static void backend_stop(runs_t *r, run_t *run, bool graceful)
{
    if (aw_on_main_thread()) {
        r->backend->stop(r->backend, run, graceful);
        return;
    }
    agent_call_t *c = malloc(sizeof *c);
    if (!c || aw_on_main(stop_on_main, c) != AW_OK) {
        free(c);
        log_kv(LOG_ERROR, "cannot stop agent: out of memory", "run", run->id, NULL);
        return;
    }
    *c = (agent_call_t){.r = r, .run = run, .graceful = graceful};
}

static void close_run(runs_t *r, run_t *run, const char *status, int64_t now)
{
    run->open = false;
    run->finished_ms = now;
    count(&r->open_runs, -1);
    for (size_t i = 0; i < AW_ARRAY_LEN(statuses); i++)
        if (strcmp(status, statuses[i]) == 0)
            count64(&r->_metrics->runs_completed[i]);
    if (run->source == RUN_FROM_AGENT) {
        user_runs_add(r, run->user_id, -1);
        if (r->remote_hold)
            r->remote_hold(r->remote_ctx, run->user_id, false);
    }
    if (run->agent_running && !run->_stop_sent) {
        run->_stop_sent = true;
        backend_stop(r, run, true); /* the agent said it is done */
    }
}

int runs_admit(runs_t *r, const char *user, const json_t *ev, int64_t now, char *why, size_t whylen)
{
    const char *run_id = json_string_value(json_object_get(ev, "run_id"));
    if (!run_id)
        return AW_OK; /* not part of a run */
    const char *type = json_string_value(json_object_get(ev, "type"));
    const char *thread = json_string_value(json_object_get(ev, "thread_id"));
    run_t *run = run_find(r, user, run_id);
    if (run && run->source == RUN_FROM_AGENT && aw_in_shard())
        return AW_EAGAIN; /* its end stops the agent: the lock alone's */
    if (strcmp(type, "agent_started") == 0) {
        if (run && !(run->source == RUN_FROM_AGENT && !run->open && run->events == 0))
            return conflict(why, whylen, "run_id %s was already used%s", run_id, "");
        if (!run && !(run = run_new(r, user, run_id, thread, RUN_FROM_API)))
            return AW_ENOMEM;
        run->open = true;
        run->events = 1;
        run->last_event_ms = now;
        count(&r->open_runs, +1);
        if (run->source == RUN_FROM_AGENT && r->remote_hold)
            r->remote_hold(r->remote_ctx, user, true);
        return AW_OK;
    }
    if (!run || !run->open)
        return conflict(why, whylen, "%s: no open run %s", type, run_id);
    if (!thread || strcmp(thread, run->thread_id) != 0)
        return conflict(why, whylen, "run %s belongs to thread %s", run_id, run->thread_id);
    if (strcmp(type, "tool_executing") == 0 || strcmp(type, "tool_completed") == 0) {
        const char *tool = json_string_value(json_object_get(ev, "tool_name"));
        int rc = track_tool(run, type, tool ? tool : "", why, whylen);
        if (rc != AW_OK)
            return rc;
    }
    run->events++;
    run->last_event_ms = now;
    if (strcmp(type, "agent_completed") == 0)
        close_run(r, run, json_string_value(json_object_get(ev, "status")), now);
    return AW_OK;
}

/* Every event of a run goes out here. In cluster mode the shard's script
 * is the gate and gives the seq: this node's own view of its runs is kept by
 * the same rules (runs_admit), and the event leaves through the hook. */
static int run_publish(runs_t *r, const char *user, json_t *ev, hub_receipt_t *rec)
{
    if (!r->remote_publish)
        return hub_publish(r->_hub, user, ev, rec);
    rec->error[0] = '\0';
    int rc = runs_admit(r, user, ev, aw_now_ms(), rec->error, sizeof rec->error);
    if (rc != AW_OK)
        return rc;
    const char *run_id = json_string_value(json_object_get(ev, "run_id"));
    run_t *run = run_id ? run_find(r, user, run_id) : NULL;
    r->remote_publish(r->remote_ctx, user, ev, run && run->source == RUN_FROM_AGENT);
    return AW_OK;
}

/* Publishes the server's own agent_completed for a run that must end. */
static void finish(runs_t *r, run_t *run, const char *status, const char *error)
{
    if (!run->open)
        return;
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "type", "agent_completed", "thread_id",
                           run->thread_id, "run_id", run->id, "status", status, "final_response",
                           "", "error", error);
    hub_receipt_t rec;
    int rc = ev ? run_publish(r, run->user_id, ev, &rec) : AW_ENOMEM;
    json_decref(ev);
    log_kv(LOG_INFO, "run ended by server", "run", run->id, "user", run->user_id, "status", status,
           "error", error, NULL);
    if (rc != AW_OK) { /* could not publish: still never leave the run open */
        log_kv(LOG_ERROR, "cannot publish agent_completed", "run", run->id, "error",
               aw_strerror(rc), NULL);
        close_run(r, run, status, aw_now_ms());
    }
}

static int publish_started(runs_t *r, run_t *run)
{
    const char *name = r->_cfg->agent_name ? r->_cfg->agent_name : r->backend->name;
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s}", "type", "agent_started", "thread_id",
                           run->thread_id, "run_id", run->id, "agent_name", name);
    hub_receipt_t rec;
    int rc = ev ? run_publish(r, run->user_id, ev, &rec) : AW_ENOMEM;
    if (rc != AW_OK)
        log_kv(LOG_ERROR, "cannot publish agent_started: the run does not start", "run", run->id,
               "error", rc == AW_ENOMEM ? aw_strerror(rc) : rec.error, NULL);
    json_decref(ev);
    return rc;
}

static char *run_request(const run_t *run, const char *user_request, json_t *context,
                         json_t *settings)
{
    /* s:o takes over a reference: one of the caller's, or a new object */
    json_t *req = json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "run_id", run->id, "thread_id",
                            run->thread_id, "user_id", run->user_id, "user_request", user_request,
                            "context", context ? json_incref(context) : json_object(), "settings",
                            settings ? json_incref(settings) : json_object());
    char *text = req ? jalloc_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    return text;
}

int runs_start(runs_t *r, const char *user, const char *thread_id, run_t **out)
{
    if (user_runs(r, user) >= (uintptr_t)r->_cfg->max_runs_per_user)
        return AW_ELIMIT;
    char run_id[48], thread[48];
    snprintf(run_id, sizeof run_id, "run_%s%08llx", r->_node, (unsigned long long)++r->_next_id);
    if (!thread_id) {
        uint8_t raw[8];
        aw_random_bytes(raw, sizeof raw);
        char hex[17];
        aw_hex(hex, raw, sizeof raw);
        snprintf(thread, sizeof thread, "th_%s", hex);
        thread_id = thread;
    }
    run_t *run = run_new(r, user, run_id, thread_id, RUN_FROM_AGENT);
    if (!run)
        return AW_ENOMEM;
    user_runs_add(r, user, +1);
    r->_metrics->runs_started++;
    *out = run;
    return AW_OK;
}

static void start_agent(runs_t *r, run_t *run, char *request)
{
    int rc = request ? r->backend->start(r->backend, run, request, strlen(request)) : AW_ENOMEM;
    free(request);
    if (rc != AW_OK) {
        finish(r, run, "error", "the agent could not be started");
        return;
    }
    run->agent_running = true;
    r->agents_running++;
    log_kv(LOG_INFO, "run started", "run", run->id, "thread", run->thread_id, "user", run->user_id,
           "agent", r->backend->kind, NULL);
}

static void start_on_main(void *arg)
{
    agent_call_t *c = arg;
    if (c->run->open) /* not cancelled while it was handed over */
        start_agent(c->r, c->run, c->request);
    else
        free(c->request);
    free(c);
}

int runs_begin(runs_t *r, run_t *run, const char *user_request, json_t *context, json_t *settings)
{
    int rc = publish_started(r, run); /* opens the run through the gate */
    if (rc != AW_OK) {
        /* never opened: no agent, no timeout to wait for; the slot goes back */
        user_runs_add(r, run->user_id, -1);
        run->finished_ms = aw_now_ms();
        return rc;
    }
    char *request = run_request(run, user_request, context, settings);
    if (aw_on_main_thread()) {
        start_agent(r, run, request);
        return AW_OK;
    }
    agent_call_t *c = malloc(sizeof *c);
    if (c)
        *c = (agent_call_t){.r = r, .run = run, .request = request};
    if (!c || aw_on_main(start_on_main, c) != AW_OK) {
        free(c);
        start_agent(r, run, NULL); /* completes the run with an error */
        free(request);
    }
    return AW_OK;
}

static void stop_agent(runs_t *r, run_t *run)
{
    if (run->agent_running) {
        run->_stop_sent = true;
        backend_stop(r, run, false);
    }
}

bool runs_is_open(runs_t *r, const char *user, const char *run_id)
{
    run_t *run = run_find(r, user, run_id);
    return run && run->open;
}

int runs_stop(runs_t *r, const char *user, const char *run_id)
{
    run_t *run = run_find(r, user, run_id);
    if (!run || !run->open)
        return AW_ENOTFOUND;
    stop_agent(r, run);
    finish(r, run, "cancelled", "stopped by the user");
    return AW_OK;
}

static void agent_line(run_t *run, const char *line, size_t len);

void runs_agent_line(run_t *run, const char *line, size_t len)
{
    aw_lock(); /* backends call from the main loop's own callbacks */
    agent_line(run, line, len);
    aw_unlock();
}

static void agent_line(run_t *run, const char *line, size_t len)
{
    runs_t *r = run->runs;
    if (!run->open)
        return; /* after agent_completed nothing more is relayed */
    json_error_t jerr;
    json_t *ev = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (!json_is_object(ev) || !type || strcmp(type, "agent_started") == 0) {
        r->_metrics->agent_lines_dropped++;
        log_kv(LOG_WARN | LOG_LIMITED, "agent line dropped", "run", run->id, "reason",
               !json_is_object(ev) ? "not a JSON object"
               : !type             ? "no type"
                                   : "agent_started is the server's",
               NULL);
        json_decref(ev);
        return;
    }
    if (run->events >= (uint64_t)r->_cfg->max_events_per_run) {
        json_decref(ev);
        stop_agent(r, run);
        finish(r, run, "error", "the agent emitted too many events");
        return;
    }
    /* An agent writes to its own run only: the ids are the server's. */
    json_object_set_new(ev, "thread_id", json_string(run->thread_id));
    json_object_set_new(ev, "run_id", json_string(run->id));
    json_object_set_new(ev, "user_id", json_string(run->user_id));
    hub_receipt_t rec;
    if (run_publish(r, run->user_id, ev, &rec) != AW_OK) {
        r->_metrics->agent_lines_dropped++;
        log_kv(LOG_WARN | LOG_LIMITED, "agent event refused", "run", run->id, "type", type,
               "reason", rec.error, NULL);
    }
    json_decref(ev);
}

void runs_agent_ended(run_t *run, const char *reason)
{
    aw_lock();
    run->agent_running = false;
    run->runs->agents_running--;
    run->agent = NULL;
    if (run->open)
        finish(run->runs, run, "error",
               reason ? reason : "the agent ended without agent_completed");
    else if (reason && !run->_stop_sent)
        log_kv(LOG_INFO, "agent ended", "run", run->id, "reason", reason, NULL);
    aw_unlock();
}

typedef struct tick {
    runs_t *r;
    int64_t now;
} tick_t;

/* One run's deadlines; true when a finished run can be forgotten. */
static bool tick_one(const void *value, void *arg)
{
    run_t *run = (run_t *)value;
    tick_t *t = arg;
    runs_t *r = t->r;
    const config_t *cfg = r->_cfg;
    char why[96];
    if (run->open && t->now - run->started_ms >= cfg->run_timeout_ms) {
        stop_agent(r, run);
        snprintf(why, sizeof why, "the run took longer than %lld ms",
                 (long long)cfg->run_timeout_ms);
        finish(r, run, "timeout", why);
    } else if (run->open && run->source == RUN_FROM_API &&
               t->now - run->last_event_ms >= cfg->run_idle_timeout_ms) {
        snprintf(why, sizeof why, "no event for %lld ms", (long long)cfg->run_idle_timeout_ms);
        finish(r, run, "timeout", why);
    } else if (run->open && run->source == RUN_FROM_AGENT) {
        const hub_user_t *u = hub_user_find(r->_hub, run->user_id);
        bool connected = r->remote_connected ? r->remote_connected(r->remote_ctx, run->user_id)
                                             : u && u->nconns > 0;
        if (connected)
            run->_orphan_since_ms = 0;
        else if (!run->_orphan_since_ms)
            run->_orphan_since_ms = t->now;
        else if (t->now - run->_orphan_since_ms >= cfg->run_orphan_grace_ms) {
            stop_agent(r, run);
            finish(r, run, "cancelled", "the user has no connection left");
        }
    }
    return !run->open && !run->agent_running && t->now - run->finished_ms >= cfg->history_ttl_ms;
}

void runs_tick(runs_t *r, int64_t now_ms)
{
    tick_t t = {r, now_ms};
    each_map(r, tick_one, &t, run_free);
}

static bool shutdown_one(const void *value, void *arg)
{
    run_t *run = (run_t *)value;
    runs_t *r = arg;
    if (run->open && run->source == RUN_FROM_AGENT) {
        stop_agent(r, run);
        finish(r, run, "cancelled", "the server is shutting down");
    }
    return false;
}

void runs_shutdown(runs_t *r)
{
    each_map(r, shutdown_one, r, NULL);
}

typedef struct each_run {
    void (*add)(void *acc, const char *user, const char *run_id);
    void *acc;
} each_run_t;

static bool each_agent_run(const void *value, void *arg)
{
    const run_t *run = value;
    each_run_t *e = arg;
    if (run->open && run->source == RUN_FROM_AGENT)
        e->add(e->acc, run->user_id, run->id);
    return false;
}

void runs_each_agent_run(runs_t *r, void (*add)(void *acc, const char *user, const char *run_id),
                         void *acc)
{
    each_run_t e = {add, acc};
    each_map(r, each_agent_run, &e, NULL);
}

void runs_closed_elsewhere(runs_t *r, const char *user, const char *run_id)
{
    run_t *run = run_find(r, user, run_id);
    if (!run || !run->open)
        return; /* ended here already (its own agent_completed) */
    log_kv(LOG_INFO, "run ended on another node", "run", run->id, "user", run->user_id, NULL);
    stop_agent(r, run);
    close_run(r, run, "cancelled", aw_now_ms());
}

void runs_not_stored(runs_t *r, const char *user, const char *run_id, bool started)
{
    run_t *run = run_find(r, user, run_id);
    if (!run || run->source != RUN_FROM_API)
        return; /* an agent's run goes on; its events are its backend's */
    if (started && run->open && run->events == 1) {
        char key[2 * RUN_ID_MAX + 2];
        map_remove(runs_of(r, user), key, run_key(key, sizeof key, user, run_id));
        count(&r->open_runs, -1);
        run_free(run);
    } else if (!started && !run->open) {
        run->open = true;
        run->finished_ms = 0;
        run->events--;
        count(&r->open_runs, +1);
    }
}

int runs_restore(runs_t *r, const char *user, const char *run_id, const char *thread_id)
{
    if (run_find(r, user, run_id))
        return AW_OK;
    run_t *run = run_new(r, user, run_id, thread_id, RUN_FROM_API);
    if (!run)
        return AW_ENOMEM;
    run->open = true;
    run->events = 1;
    count(&r->open_runs, +1);
    return AW_OK;
}
