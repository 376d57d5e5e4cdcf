/* stored.c -- --data-dir: streams in memory and on disk (stored.h). */
#include "stored.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "durable.h"
#include "event.h"
#include "log.h"
#include "map.h"
#include "server.h"
#include "ws.h"

/* One publish call waiting for its group's commit. Strings are copied into
 * the call's own pool: the caller's end with the call. */
typedef struct spub {
    void *arg;
    int rc;
    bool recorded, duplicate;
    hub_receipt_t r;
    frame_t *f;
    const char *user, *idem;
    const durable_ev_t *ev; /* what is stored, when recorded */
} spub_t;

typedef struct scall {
    server_t *srv;
    broker_receipt_fn fn;
    size_t n;
    durable_ev_t *evs;
    spub_t it[];
} scall_t;

static const char *pool_copy(char **pool, const char *s)
{
    if (!s)
        return NULL;
    size_t len = strlen(s) + 1;
    char *out = memcpy(*pool, s, len);
    *pool += len;
    return out;
}

static size_t pool_need(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

/* The key of an idempotency key being stored: user, a NUL, the key. */
static size_t pending_key(char *out, size_t cap, const char *user, const char *idem)
{
    int n = snprintf(out, cap, "%s%c%s", user, '\0', idem);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static void forget_pending(server_t *srv, const spub_t *p)
{
    char key[EVENT_MAX_ID + 512];
    size_t len = p->idem ? pending_key(key, sizeof key, p->user, p->idem) : 0;
    if (len)
        map_remove(&srv->_stored_keys, key, len);
}

static void answer(scall_t *c, int rc, const char *error)
{
    server_t *srv = c->srv;
    int64_t now = aw_now_ms();
    if (rc == AW_ECLOSED) { /* stopped: nothing is answered any more */
        for (size_t i = 0; i < c->n; i++)
            if (c->it[i].recorded)
                frame_unref(c->it[i].f);
        free(c);
        return;
    }
    if (rc != AW_OK) {
        snprintf(srv->store_failed, sizeof srv->store_failed, "%s", error ? error : "I/O error");
        log_kv(LOG_ERROR | LOG_LIMITED, "cannot store events: answered 503", "error",
               srv->store_failed, NULL);
        for (size_t i = c->n; i-- > 0;) { /* newest first: each seq is stamped again */
            spub_t *p = &c->it[i];
            if (!p->recorded)
                continue;
            hub_unrecord(&srv->hub, p->user, p->r.seq, p->f);
            if (p->ev->run != DURABLE_RUN_NONE) /* a retry of a run's start or end passes */
                runs_not_stored(&srv->runs, p->user, p->ev->run_id, p->ev->run == DURABLE_RUN_OPEN);
        }
    } else {
        srv->store_failed[0] = '\0';
        for (size_t i = 0; i < c->n; i++) {
            spub_t *p = &c->it[i];
            if (!p->recorded)
                continue;
            p->r.recipients = hub_send_recorded(&srv->hub, p->user, p->f, p->r.seq);
            if (p->idem && idem_put(&srv->idem, p->user, p->idem, &p->r, now) != AW_OK)
                log_kv(LOG_WARN | LOG_LIMITED, "idempotency key not remembered: out of memory",
                       "user", p->user, NULL);
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        spub_t *p = &c->it[i];
        if (p->recorded) {
            forget_pending(srv, p);
            if (rc != AW_OK) {
                hub_receipt_t r = {0};
                snprintf(r.error, sizeof r.error, "cannot store the event: %.150s",
                         srv->store_failed);
                c->fn(p->arg, AW_EUNAVAIL, &r);
                continue;
            }
        }
        c->fn(p->arg, p->rc, &p->r);
    }
    free(c);
}

static void on_stored(void *arg, int rc, const char *error)
{
    answer(arg, rc, error);
}

static enum durable_run run_change(const json_t *ev, const char **run_id, const char **thread)
{
    const char *type = json_string_value(json_object_get(ev, "type"));
    *run_id = json_string_value(json_object_get(ev, "run_id"));
    *thread = json_string_value(json_object_get(ev, "thread_id"));
    if (!type || !*run_id)
        return DURABLE_RUN_NONE;
    if (strcmp(type, "agent_started") == 0)
        return *thread ? DURABLE_RUN_OPEN : DURABLE_RUN_NONE;
    return strcmp(type, "agent_completed") == 0 ? DURABLE_RUN_CLOSED : DURABLE_RUN_NONE;
}

void stored_publish(server_t *srv, broker_pub_t *items, size_t n, broker_receipt_fn fn)
{
    size_t pool = 0;
    for (size_t i = 0; i < n; i++) {
        const char *run, *thread;
        run_change(items[i].ev, &run, &thread);
        pool += pool_need(items[i].user) + pool_need(items[i].idem) + pool_need(run) +
                pool_need(thread);
    }
    scall_t *c = calloc(1, sizeof *c + n * (sizeof(spub_t) + sizeof(durable_ev_t)) + pool);
    if (!c) {
        hub_receipt_t r = {.error = "out of memory"};
        for (size_t i = 0; i < n; i++)
            fn(items[i].arg, AW_ENOMEM, &r);
        return;
    }
    c->srv = srv;
    c->fn = fn;
    c->n = n;
    c->evs = (durable_ev_t *)&c->it[n];
    char *strings = (char *)&c->evs[n];
    int64_t now = aw_now_ms();
    size_t nev = 0;
    for (size_t i = 0; i < n; i++) {
        spub_t *p = &c->it[i];
        p->arg = items[i].arg;
        p->user = pool_copy(&strings, items[i].user);
        p->idem = pool_copy(&strings, items[i].idem);
        if (p->idem && idem_get(&srv->idem, p->user, p->idem, now, &p->r)) {
            p->duplicate = true;
            continue;
        }
        char key[EVENT_MAX_ID + 512];
        size_t klen = p->idem ? pending_key(key, sizeof key, p->user, p->idem) : 0;
        if (klen && map_get(&srv->_stored_keys, key, klen)) {
            /* the first publish with this key is not stored yet: no second copy */
            p->rc = AW_EUNAVAIL;
            snprintf(p->r.error, sizeof p->r.error,
                     "an event with this idempotency key is being stored; retry");
            continue;
        }
        p->rc = hub_publish_record(&srv->hub, p->user, items[i].ev, items[i].tail,
                                   items[i].tail_len, items[i].gated, &p->r, &p->f);
        if (p->rc == AW_ENOMEM)
            snprintf(p->r.error, sizeof p->r.error, "out of memory");
        if (p->rc != AW_OK)
            continue;
        if (klen && !map_put(&srv->_stored_keys, key, klen, c)) {
            hub_unrecord(&srv->hub, p->user, p->r.seq, p->f);
            p->rc = AW_ENOMEM;
            snprintf(p->r.error, sizeof p->r.error, "out of memory");
            continue;
        }
        p->recorded = true;
        durable_ev_t *e = &c->evs[nev++];
        p->ev = e;
        e->user = p->user;
        e->epoch = p->r.epoch;
        e->seq = p->r.seq;
        e->json = (const char *)frame_ws_payload(p->f, &e->len);
        const char *run, *thread;
        e->run = run_change(items[i].ev, &run, &thread);
        e->run_id = pool_copy(&strings, run);
        e->thread_id = pool_copy(&strings, thread);
        e->idem = p->idem;
        e->event_id = p->r.event_id;
    }
    if (nev == 0) {
        answer(c, AW_OK, NULL);
        return;
    }
    if (durable_submit(srv->durable, c->evs, nev, on_stored, c) != AW_OK)
        answer(c, AW_EIO, "out of memory");
}

/* A stream starting in memory takes its stored head and its retained events
 * (those still within the history's size and age). */
typedef struct load_ctx {
    hub_t *hub;
    hub_user_t *u;
    int64_t oldest_ms;
} load_ctx_t;

static int load_event(void *arg, uint64_t seq, int64_t ts, const char *json, size_t len)
{
    load_ctx_t *l = arg;
    if (ts >= l->oldest_ms)
        hub_restore(l->hub, l->u, seq, ts, json, len);
    return 0;
}

static void load_stream(void *ctx, hub_t *h, hub_user_t *u)
{
    server_t *srv = ctx;
    store_t *r = durable_reader(srv->durable);
    char epoch[HUB_EPOCH_LEN + 1];
    uint64_t seq;
    int rc = store_stream(r, u->id, epoch, sizeof epoch, &seq);
    if (rc == AW_ENOTFOUND)
        return;
    if (rc != AW_OK) {
        log_kv(LOG_ERROR | LOG_LIMITED, "cannot read a stream from the store", "user", u->id,
               "error", store_error(r), NULL);
        return;
    }
    hub_restore_head(h, u, epoch, seq);
    uint64_t size = (uint64_t)srv->cfg->history_size;
    load_ctx_t l = {h, u, aw_now_ms() - srv->cfg->history_ttl_ms};
    if (store_range(r, u->id, seq > size ? seq - size + 1 : 1, (size_t)size, load_event, &l) !=
        AW_OK)
        log_kv(LOG_ERROR | LOG_LIMITED, "cannot read events from the store", "user", u->id, "error",
               store_error(r), NULL);
}

/* Resumes older than memory holds read the disk, a chunk of events at a
 * time, kept until another chunk is needed or the next tick. */
#define OLDER_CHUNK 256

typedef struct older_chunk {
    char user[EVENT_MAX_ID + 1];
    char epoch[HUB_EPOCH_LEN + 1];
    uint64_t from;
    size_t n;
    int64_t oldest_ms;
    frame_t *f[OLDER_CHUNK];
} older_chunk_t;

static void older_drop(server_t *srv)
{
    older_chunk_t *c = srv->_older;
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        frame_unref(c->f[i]);
    c->n = 0;
}

static int older_event(void *arg, uint64_t seq, int64_t ts, const char *json, size_t len)
{
    older_chunk_t *c = arg;
    if (seq != c->from + c->n)
        return 1; /* a gap: stop there */
    if (ts < c->oldest_ms) {
        c->from = seq + 1; /* expired: not served */
        return 0;
    }
    frame_t *f = frame_ws(WS_OP_TEXT, json, len);
    if (!f)
        return 1;
    c->f[c->n++] = f;
    return c->n == OLDER_CHUNK;
}

static uint64_t older_first(void *ctx, hub_user_t *u)
{
    server_t *srv = ctx;
    uint64_t first = 0;
    if (store_first(durable_reader(srv->durable), u->id, &first) != AW_OK)
        log_kv(LOG_ERROR | LOG_LIMITED, "cannot read the store", "user", u->id, "error",
               store_error(durable_reader(srv->durable)), NULL);
    return first;
}

static frame_t *older(void *ctx, hub_user_t *u, uint64_t seq)
{
    server_t *srv = ctx;
    older_chunk_t *c = srv->_older;
    if (!c && !(c = srv->_older = calloc(1, sizeof *c)))
        return NULL;
    if (!c->n || strcmp(c->user, u->id) != 0 || strcmp(c->epoch, u->epoch) != 0 || seq < c->from ||
        seq >= c->from + c->n) {
        older_drop(srv);
        snprintf(c->user, sizeof c->user, "%s", u->id);
        snprintf(c->epoch, sizeof c->epoch, "%s", u->epoch);
        c->from = seq;
        c->oldest_ms = aw_now_ms() - srv->cfg->history_ttl_ms;
        if (store_range(durable_reader(srv->durable), u->id, seq, OLDER_CHUNK, older_event, c) !=
            AW_OK)
            log_kv(LOG_ERROR | LOG_LIMITED, "cannot read events from the store", "user", u->id,
                   "error", store_error(durable_reader(srv->durable)), NULL);
        if (seq < c->from || seq >= c->from + c->n)
            return NULL;
    }
    return frame_ref(c->f[seq - c->from]);
}

bool stored_has_stream(server_t *srv, const char *user)
{
    char epoch[HUB_EPOCH_LEN + 1];
    uint64_t seq;
    return store_stream(durable_reader(srv->durable), user, epoch, sizeof epoch, &seq) == AW_OK;
}

/* Runs open when the process stopped end now, with reason restart. */
static void on_restart_receipt(void *arg, int rc, const hub_receipt_t *r)
{
    (void)arg;
    if (rc != AW_OK)
        log_kv(LOG_ERROR, "cannot end a run open before the restart", "error", r->error, NULL);
}

static void end_stored_run(server_t *srv, const char *user, const char *run_id, const char *thread)
{
    if (runs_restore(&srv->runs, user, run_id, thread) != AW_OK)
        return;
    json_t *ev =
        json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "type", "agent_completed", "thread_id",
                  thread, "run_id", run_id, "status", "error", "final_response", "", "error",
                  "the server restarted", "reason", "restart");
    broker_pub_t one = {.user = user, .ev = ev};
    if (ev)
        broker_publish(srv->broker, &one, 1, on_restart_receipt);
    json_decref(ev);
    log_kv(LOG_INFO, "run ended by the restart", "run", run_id, "user", user, NULL);
}

typedef struct stored_run {
    struct stored_run *next;
    char *user, *run_id, *thread;
} stored_run_t;

static void collect_run(void *arg, const char *user, const char *run_id, const char *thread)
{
    stored_run_t **list = arg, *r = calloc(1, sizeof *r);
    if (!r)
        return;
    r->user = strdup(user);
    r->run_id = strdup(run_id);
    r->thread = strdup(thread);
    r->next = *list;
    *list = r;
}

void stored_start(server_t *srv)
{
    stored_run_t *list = NULL;
    store_t *r = durable_reader(srv->durable);
    if (store_each_open_run(r, collect_run, &list) != AW_OK)
        log_kv(LOG_ERROR, "cannot read the runs open before the restart", "error", store_error(r),
               NULL);
    while (list) {
        stored_run_t *run = list;
        list = run->next;
        if (run->user && run->run_id && run->thread)
            end_stored_run(srv, run->user, run->run_id, run->thread);
        free(run->user);
        free(run->run_id);
        free(run->thread);
        free(run);
    }
    durable_wait(srv->durable); /* ended and stored before the first client comes */
}

static void load_key(void *arg, const char *user, const char *key, uint64_t seq, const char *epoch,
                     const char *event_id, int64_t ts)
{
    server_t *srv = arg;
    hub_receipt_t r = {.seq = seq};
    snprintf(r.epoch, sizeof r.epoch, "%s", epoch);
    snprintf(r.event_id, sizeof r.event_id, "%s", event_id);
    idem_put(&srv->idem, user, key, &r, ts);
}

int stored_open(server_t *srv, uv_loop_t *loop, char *err, size_t errlen)
{
    const config_t *cfg = srv->cfg;
    int64_t t0 = aw_now_ms();
    if (map_init(&srv->_stored_keys) != AW_OK) {
        snprintf(err, errlen, "out of memory");
        return AW_ENOMEM;
    }
    int rc = durable_open(&srv->durable, loop, cfg->data_dir, (enum store_sync)cfg->fsync,
                          (uint64_t)cfg->history_size, err, errlen);
    if (rc != AW_OK)
        return rc;
    srv->hub.load = load_stream;
    srv->hub.load_ctx = srv;
    srv->hub.older_first = older_first;
    srv->hub.older = older;
    /* the keys of events stored within their time: a retry after the restart is exact */
    if (store_each_idem(durable_reader(srv->durable), aw_now_ms() - cfg->idempotency_ttl_ms,
                        load_key, srv) != AW_OK)
        log_kv(LOG_ERROR, "cannot read the stored idempotency keys", "error",
               store_error(durable_reader(srv->durable)), NULL);
    durable_stats_t st;
    durable_stats(srv->durable, &st);
    log_kv(LOG_INFO, "data dir", "dir", cfg->data_dir, "fsync", cfg->fsync_name, "#events",
           (long long)st.events, "#bytes", (long long)st.bytes, "#open_ms",
           (long long)(aw_now_ms() - t0), NULL);
    return AW_OK;
}

void stored_tick(server_t *srv, int64_t now_ms)
{
    if (now_ms < srv->_next_trim_ms)
        return;
    older_drop(srv);
    srv->_next_trim_ms = now_ms + 1000;
    durable_trim(srv->durable, now_ms - srv->cfg->history_ttl_ms,
                 (uint64_t)srv->cfg->data_max_bytes, now_ms - srv->cfg->idempotency_ttl_ms);
}

void stored_metrics(server_t *srv, FILE *f)
{
    if (!srv->durable)
        return;
    durable_stats_t st;
    durable_stats(srv->durable, &st);
    fprintf(f,
            "# HELP agentwire_store_events Events retained in --data-dir.\n"
            "# TYPE agentwire_store_events gauge\nagentwire_store_events %llu\n"
            "# HELP agentwire_store_bytes Bytes of events retained in --data-dir.\n"
            "# TYPE agentwire_store_bytes gauge\nagentwire_store_bytes %llu\n"
            "# HELP agentwire_store_groups_total Groups of events committed to --data-dir.\n"
            "# TYPE agentwire_store_groups_total counter\nagentwire_store_groups_total %llu\n"
            "# HELP agentwire_store_failures_total Groups that could not be stored (answered "
            "503).\n"
            "# TYPE agentwire_store_failures_total counter\nagentwire_store_failures_total %llu\n"
            "# HELP agentwire_store_trimmed_total Events dropped from --data-dir by the age and "
            "byte caps.\n"
            "# TYPE agentwire_store_trimmed_total counter\nagentwire_store_trimmed_total %llu\n"
            "# HELP agentwire_store_up 1 while --data-dir can be written.\n"
            "# TYPE agentwire_store_up gauge\nagentwire_store_up %d\n",
            (unsigned long long)st.events, (unsigned long long)st.bytes,
            (unsigned long long)st.groups, (unsigned long long)st.failures,
            (unsigned long long)st.trimmed, srv->store_failed[0] ? 0 : 1);
}

bool stored_idle(server_t *srv)
{
    return !srv->durable || durable_idle(srv->durable);
}

void stored_stop(server_t *srv)
{
    durable_stop(srv->durable);
}

void stored_close(server_t *srv)
{
    if (!srv->durable)
        return;
    durable_close(srv->durable);
    srv->durable = NULL;
    older_drop(srv);
    free(srv->_older);
    srv->_older = NULL;
    map_dispose(&srv->_stored_keys, NULL);
}
