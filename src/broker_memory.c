/* broker_memory.c -- the embedded default home of users' streams
 * (broker.h): this process's hub, idempotency cache, tickets and runs.
 * Every answer comes before the call returns. */
#include "broker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "history.h"
#include "log.h"
#include "map.h"
#include "server.h"
#include "session.h"
#include "store.h"
#include "ws.h"

static bool mem_available(broker_t *b, const char *user)
{
    (void)b, (void)user;
    return true;
}

static bool mem_ready(broker_t *b, char *why, size_t whylen)
{
    server_t *srv = b->impl;
    if (srv->store_failed[0]) {
        snprintf(why, whylen, "the data dir cannot be written: %s", srv->store_failed);
        return false;
    }
    snprintf(why, whylen, "ready");
    return true;
}

static void mem_publish_one(broker_t *b, const char *user, json_t *ev, const char *idem,
                            broker_receipt_fn fn, void *arg)
{
    server_t *srv = b->impl;
    int64_t now = aw_now_ms();
    hub_receipt_t r = {0};
    if (idem && idem_get(&srv->idem, user, idem, now, &r)) {
        fn(arg, AW_OK, &r);
        return;
    }
    int rc = hub_publish(&srv->hub, user, ev, &r);
    if (rc == AW_OK && idem && idem_put(&srv->idem, user, idem, &r, now) != AW_OK)
        log_kv(LOG_WARN | LOG_LIMITED, "idempotency key not remembered: out of memory", "user",
               user, NULL);
    if (rc == AW_ENOMEM)
        snprintf(r.error, sizeof r.error, "out of memory");
    fn(arg, rc, &r);
}

/* --data-dir: the events of one call are stamped and kept in memory, stored
 * in one transaction, and only then sent and acknowledged; when the store
 * fails they are taken back (their seqs are never seen nor reused) and
 * answered 503. */
typedef struct stamped {
    int rc;
    bool recorded, duplicate;
    hub_receipt_t r;
    frame_t *f;
} stamped_t;

static int store_one(server_t *srv, const broker_pub_t *it, const stamped_t *st, json_t *ev_fields)
{
    const json_t *ev = ev_fields;
    size_t len;
    const uint8_t *json = frame_ws_payload(st->f, &len);
    int rc = store_append(srv->store, it->user, st->r.seq, aw_now_ms(), (const char *)json, len);
    const char *run = json_string_value(json_object_get(ev, "run_id"));
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (rc == AW_OK && run && type && strcmp(type, "agent_started") == 0)
        rc = store_run_open(srv->store, it->user, run,
                            json_string_value(json_object_get(ev, "thread_id")));
    else if (rc == AW_OK && run && type && strcmp(type, "agent_completed") == 0)
        rc = store_run_closed(srv->store, it->user, run);
    return rc;
}

static void stored_publish(broker_t *b, broker_pub_t *items, size_t n, broker_receipt_fn fn)
{
    server_t *srv = b->impl;
    stamped_t *st = calloc(n ? n : 1, sizeof *st);
    if (!st) {
        hub_receipt_t r = {.error = "out of memory"};
        for (size_t i = 0; i < n; i++)
            fn(items[i].arg, AW_ENOMEM, &r);
        return;
    }
    int64_t now = aw_now_ms();
    size_t recorded = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].idem && idem_get(&srv->idem, items[i].user, items[i].idem, now, &st[i].r)) {
            st[i].duplicate = true;
            continue;
        }
        st[i].rc = hub_publish_record(&srv->hub, items[i].user, items[i].ev, items[i].gated,
                                      &st[i].r, &st[i].f);
        st[i].recorded = st[i].rc == AW_OK;
        recorded += st[i].recorded;
        if (st[i].rc == AW_ENOMEM)
            snprintf(st[i].r.error, sizeof st[i].r.error, "out of memory");
    }
    int rc = recorded ? store_begin(srv->store) : AW_OK;
    for (size_t i = 0; rc == AW_OK && i < n; i++)
        if (st[i].recorded)
            rc = store_one(srv, &items[i], &st[i], items[i].ev);
    /* each user's head once, at its newest event of the call */
    map_t heads;
    if (rc == AW_OK && recorded && map_init(&heads) == AW_OK) {
        for (size_t i = n; rc == AW_OK && i-- > 0;) {
            if (!st[i].recorded || map_get(&heads, items[i].user, strlen(items[i].user)))
                continue;
            if (!map_put(&heads, items[i].user, strlen(items[i].user), &st[i]))
                rc = AW_ENOMEM;
            else
                rc = store_head(srv->store, items[i].user, st[i].r.epoch, st[i].r.seq,
                                (uint64_t)srv->cfg->history_size);
        }
        map_dispose(&heads, NULL);
    } else if (rc == AW_OK && recorded) {
        rc = AW_ENOMEM;
    }
    if (recorded && rc == AW_OK)
        rc = store_commit(srv->store);
    else if (recorded)
        store_rollback(srv->store);
    if (recorded && rc != AW_OK) {
        snprintf(srv->store_failed, sizeof srv->store_failed, "%s", store_error(srv->store));
        log_kv(LOG_ERROR | LOG_LIMITED, "cannot store events: answered 503", "error",
               srv->store_failed, NULL);
        for (size_t i = n; i-- > 0;) /* newest first: each seq goes back */
            if (st[i].recorded)
                hub_unrecord(&srv->hub, items[i].user, st[i].r.seq, st[i].f);
    } else if (recorded) {
        srv->store_failed[0] = '\0';
        for (size_t i = 0; i < n; i++) {
            if (!st[i].recorded)
                continue;
            st[i].r.recipients = hub_send_recorded(&srv->hub, items[i].user, st[i].f, st[i].r.seq);
            if (items[i].idem &&
                idem_put(&srv->idem, items[i].user, items[i].idem, &st[i].r, now) != AW_OK)
                log_kv(LOG_WARN | LOG_LIMITED, "idempotency key not remembered: out of memory",
                       "user", items[i].user, NULL);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (st[i].duplicate) {
            fn(items[i].arg, AW_OK, &st[i].r);
        } else if (st[i].recorded && rc != AW_OK) {
            hub_receipt_t r = {0};
            snprintf(r.error, sizeof r.error, "cannot store the event: %.150s", srv->store_failed);
            fn(items[i].arg, AW_EUNAVAIL, &r);
        } else {
            fn(items[i].arg, st[i].rc, &st[i].r);
        }
    }
    free(st);
}

static void mem_publish(broker_t *b, broker_pub_t *items, size_t n, broker_receipt_fn fn)
{
    server_t *srv = b->impl;
    if (srv->store) {
        stored_publish(b, items, n, fn);
        return;
    }
    for (size_t i = 0; i < n; i++)
        mem_publish_one(b, items[i].user, items[i].ev, items[i].idem, fn, items[i].arg);
}

static void mem_acquire(broker_t *b, const char *user, broker_ready_fn fn, void *arg)
{
    (void)b, (void)user;
    fn(arg, AW_OK); /* the hub holds every stream */
}

static void mem_catch_up(broker_t *b, const char *user, broker_ready_fn fn, void *arg)
{
    mem_acquire(b, user, fn, arg); /* the hub is the owner: never behind */
}

static void mem_release(broker_t *b, const char *user)
{
    (void)b, (void)user;
}

static void describe(session_t *c, void *arg)
{
    if (c->state != SESSION_OPEN)
        return;
    json_array_append_new(arg, json_pack("{s:s, s:s, s:I}", "connection_id", c->id, "remote_addr",
                                         c->remote, "connected_at", (json_int_t)c->connected_ms));
}

static void mem_connections(broker_t *b, const char *user, broker_list_fn fn, void *arg)
{
    server_t *srv = b->impl;
    json_t *list = json_array();
    hub_each_session(&srv->hub, user, describe, list);
    fn(arg, list ? AW_OK : AW_ENOMEM, list);
    json_decref(list);
}

static void mem_disconnect(broker_t *b, const char *user, broker_list_fn fn, void *arg)
{
    server_t *srv = b->impl;
    json_t *list = json_array();
    hub_each_session(&srv->hub, user, describe, list);
    hub_disconnect_user(&srv->hub, user, WS_CLOSE_DISCONNECTED, "disconnected");
    fn(arg, list ? AW_OK : AW_ENOMEM, list);
    json_decref(list);
}

static void mem_history(broker_t *b, const char *user, uint64_t since, broker_history_fn fn,
                        void *arg)
{
    server_t *srv = b->impl;
    const hub_user_t *u = hub_user_find(&srv->hub, user);
    char epoch[HUB_EPOCH_LEN + 1];
    uint64_t seq;
    if (!u && srv->store && store_stream(srv->store, user, epoch, sizeof epoch, &seq) == AW_OK)
        u = hub_user(&srv->hub, user); /* stored, not in memory yet: loaded now */
    if (!u) {
        fn(arg, AW_OK, NULL, 0, 0, NULL, NULL, 0);
        return;
    }
    uint64_t first = history_first_seq(&u->history);
    uint64_t last = history_last_seq(&u->history);
    uint64_t from = since + 1 > first ? since + 1 : first;
    size_t n = first && last >= from ? (size_t)(last - from + 1) : 0;
    const char **ev = calloc(n + 1, sizeof *ev);
    size_t *lens = calloc(n + 1, sizeof *lens);
    if (!ev || !lens) {
        free(ev);
        free(lens);
        fn(arg, AW_ENOMEM, NULL, 0, 0, NULL, NULL, 0);
        return;
    }
    for (size_t i = 0; i < n; i++)
        ev[i] = (const char *)frame_ws_payload(history_get(&u->history, from + i), &lens[i]);
    fn(arg, AW_OK, u->epoch, u->seq, first, ev, lens, n);
    free(ev);
    free(lens);
}

static void mem_ticket_issue(broker_t *b, const char *user, int64_t expires_ms,
                             int64_t token_exp_ms, broker_ticket_fn fn, void *arg)
{
    server_t *srv = b->impl;
    char id[TICKET_LEN + 1];
    int rc = tickets_issue(&srv->tickets, user, expires_ms, token_exp_ms, id);
    fn(arg, rc, rc == AW_OK ? id : NULL);
}

static void mem_ticket_peek(broker_t *b, const char *id, broker_peek_fn fn, void *arg)
{
    server_t *srv = b->impl;
    char user[JWT_MAX_SUB + 1];
    int64_t exp = 0;
    int rc = tickets_peek(&srv->tickets, id, aw_now_ms(), user, &exp);
    fn(arg, rc, rc == AW_OK ? user : NULL, exp);
}

static void mem_ticket_take(broker_t *b, const char *id, broker_rc_fn fn, void *arg)
{
    server_t *srv = b->impl;
    char user[JWT_MAX_SUB + 1];
    int64_t exp;
    fn(arg, tickets_take(&srv->tickets, id, aw_now_ms(), user, &exp));
}

static void mem_run_open(broker_t *b, const char *user, const char *run_id, broker_rc_fn fn,
                         void *arg)
{
    server_t *srv = b->impl;
    fn(arg, runs_is_open(&srv->runs, user, run_id) ? AW_OK : AW_ENOTFOUND);
}

static void mem_run_finish(broker_t *b, const char *user, const char *run_id, const char *status,
                           const char *error, broker_receipt_fn fn, void *arg)
{
    (void)status, (void)error; /* a user's stop: runs_stop says cancelled */
    server_t *srv = b->impl;
    hub_receipt_t r = {0};
    fn(arg, runs_stop(&srv->runs, user, run_id), &r);
}

static const broker_ops_t memory_ops = {
    .name = "memory",
    .available = mem_available,
    .ready = mem_ready,
    .publish = mem_publish,
    .acquire = mem_acquire,
    .release = mem_release,
    .catch_up = mem_catch_up,
    .connections = mem_connections,
    .disconnect = mem_disconnect,
    .history = mem_history,
    .ticket_issue = mem_ticket_issue,
    .ticket_peek = mem_ticket_peek,
    .ticket_take = mem_ticket_take,
    .run_open = mem_run_open,
    .run_finish = mem_run_finish,
};

void broker_memory_init(broker_t *b, struct server *srv)
{
    b->ops = &memory_ops;
    b->impl = srv;
}
