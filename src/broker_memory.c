/* broker_memory.c -- the embedded default home of users' streams
 * (broker.h): this process's hub, idempotency cache, tickets and runs.
 * Every answer comes before the call returns. */
#include "broker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "history.h"
#include "lock.h"
#include "log.h"
#include "map.h"
#include "server.h"
#include "session.h"
#include "stored.h"
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

/* One event, its key's receipt if it was published already: under the lock
 * alone, or under its user's shard lock (then AW_EAGAIN: see
 * hub_publish_prepared; nothing remembered). */
static int publish_item(server_t *srv, const broker_pub_t *it, hub_receipt_t *r)
{
    int64_t now = aw_now_ms();
    const char *user = it->user, *idem = it->idem;
    if (idem && idem_get(&srv->idem, user, idem, now, r))
        return AW_OK;
    int rc = hub_publish_prepared(&srv->hub, user, it->ev, it->tail, it->tail_len, it->gated, r);
    if (rc == AW_OK && idem && idem_put(&srv->idem, user, idem, r, now) != AW_OK)
        log_kv(LOG_WARN | LOG_LIMITED, "idempotency key not remembered: out of memory", "user",
               user, NULL);
    if (rc == AW_ENOMEM)
        snprintf(r->error, sizeof r->error, "out of memory");
    return rc;
}

static void mem_publish_one(broker_t *b, const broker_pub_t *it, broker_receipt_fn fn)
{
    hub_receipt_t r = {0};
    int rc = publish_item(b->impl, it, &r);
    fn(it->arg, rc, &r);
}

static void mem_publish(broker_t *b, broker_pub_t *items, size_t n, broker_receipt_fn fn)
{
    server_t *srv = b->impl;
    if (srv->durable) {
        stored_publish(srv, items, n, fn);
        return;
    }
    for (size_t i = 0; i < n; i++)
        mem_publish_one(b, &items[i], fn);
}

bool broker_memory_direct(broker_t *b)
{
    return b->ops->publish == mem_publish && !((server_t *)b->impl)->durable;
}

bool broker_memory_shardable(broker_t *b, const broker_pub_t *items, size_t n)
{
    if (!broker_memory_direct(b) || aw_shards() == 1)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!items[i].tail)
            return false;
    return true;
}

#define SHARDED_STACK 64 /* events whose bookkeeping fits on the stack */

void broker_memory_publish_sharded(broker_t *b, broker_pub_t *items, size_t n, broker_receipt_fn fn)
{
    server_t *srv = b->impl;
    hub_t *h = &srv->hub;
    unsigned nshards = aw_shards();
    unsigned shard_st[SHARDED_STACK];
    size_t order_st[SHARDED_STACK];
    bool later_st[SHARDED_STACK];
    bool big = n > SHARDED_STACK;
    unsigned *shard = big ? malloc(n * sizeof *shard) : shard_st;
    size_t *order = big ? malloc(n * sizeof *order) : order_st;
    bool *later = big ? calloc(n, sizeof *later) : later_st;
    size_t start[AW_SHARDS_MAX + 1] = {0};
    if (!shard || !order || !later) {
        mem_publish(b, items, n, fn); /* under the lock alone */
        goto out;
    }
    /* each shard's events, in the request's order */
    for (size_t i = 0; i < n; i++) {
        shard[i] = hub_shard(h, items[i].user);
        start[shard[i] + 1]++;
        later[i] = false;
    }
    for (unsigned k = 0; k < nshards; k++)
        start[k + 1] += start[k];
    for (size_t i = 0, *next = start; i < n; i++)
        order[next[shard[i]]++] = i; /* start[k] now ends shard k */
    int depth = aw_lock_suspend();
    for (unsigned k = 0; k < nshards; k++) {
        size_t from = k ? start[k - 1] : 0, to = start[k];
        if (from == to)
            continue;
        aw_shard_lock(k);
        bool defer = false;
        for (size_t j = from; j < to; j++) {
            const broker_pub_t *it = &items[order[j]];
            hub_receipt_t r = {0};
            int rc = defer ? AW_EAGAIN : publish_item(srv, it, &r);
            if (rc == AW_EAGAIN) {
                later[order[j]] = defer = true;
                items[order[j]].gated = r.gated; /* its run's state has moved on */
                continue;
            }
            fn(it->arg, rc, &r);
        }
        aw_shard_unlock(k);
    }
    aw_lock_resume(depth);
    bool any = false;
    for (size_t i = 0; i < n && !any; i++)
        any = later[i];
    if (any) {
        aw_lock(); /* from a shared hold (session.c), too */
        for (size_t i = 0; i < n; i++)
            if (later[i])
                mem_publish_one(b, &items[i], fn);
        aw_unlock();
    }
out:
    if (big) {
        free(shard);
        free(order);
        free(later);
    }
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
    if (!u && srv->durable && stored_has_stream(srv, user))
        u = hub_user(&srv->hub, user); /* stored, not in memory yet: loaded now */
    if (!u) {
        fn(arg, AW_OK, NULL, 0, 0, NULL, NULL, 0);
        return;
    }
    hub_user_t *hu = (hub_user_t *)u;
    uint64_t first = hub_first_seq(&srv->hub, hu); /* memory, or older on disk */
    uint64_t last = first ? u->seq : 0;
    uint64_t from = since + 1 > first ? since + 1 : first;
    size_t n = first && last >= from ? (size_t)(last - from + 1) : 0;
    const char **ev = calloc(n + 1, sizeof *ev);
    size_t *lens = calloc(n + 1, sizeof *lens);
    frame_t **owned = calloc(n + 1, sizeof *owned);
    if (!ev || !lens || !owned) {
        free(ev);
        free(lens);
        free(owned);
        fn(arg, AW_ENOMEM, NULL, 0, 0, NULL, NULL, 0);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool mine;
        frame_t *f = hub_history_get(&srv->hub, hu, from + i, &mine);
        if (!f)
            break; /* gone meanwhile (expired): what came before is whole */
        if (mine)
            owned[i] = f;
        ev[k] = (const char *)frame_ws_payload(f, &lens[k]);
        k++;
    }
    fn(arg, AW_OK, u->epoch, u->seq, k ? first : history_first_seq(&u->history), ev, lens, k);
    for (size_t i = 0; i < n; i++)
        frame_unref(owned[i]);
    free(owned);
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
