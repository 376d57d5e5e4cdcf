/* cluster_ops.c -- the cluster's requests besides publishing and users'
 * streams: presence (which users have a connection on some node), runs'
 * leases and the reaper of runs whose node went away, the API's reads
 * (connections, disconnect, history) and tickets. Every one is a call of
 * the script on the user's shard (cluster_int.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "cluster_int.h"
#include "event.h"
#include "jalloc.h"
#include "log.h"
#include "session.h"
#include "shard.h"
#include "ws.h"

/* ---- presence ---- */

static void flush_all_presence(cluster_t *c, int64_t now);

static void on_pres_timer(uv_timer_t *t)
{
    flush_all_presence(t->data, aw_now_ms());
}

void cluster_presence_changed(cluster_t *c, const char *user)
{
    map_put(&c->pres, user, strlen(user), (void *)1);
    if (!uv_is_active((uv_handle_t *)&c->pres_timer))
        uv_timer_start(&c->pres_timer, on_pres_timer, 20, 0);
}

static void describe(session_t *s, void *arg)
{
    json_t *list = arg;
    if (s->state != SESSION_OPEN)
        return;
    json_array_append_new(list, json_pack("{s:s, s:s, s:I}", "connection_id", s->id, "remote_addr",
                                          s->remote, "connected_at", (json_int_t)s->connected_ms));
}

static void on_ignore(cluster_t *c, redisReply *r, void *ctx)
{
    (void)c, (void)r, (void)ctx;
}

static void write_presence(cluster_t *c, const char *user, int64_t now)
{
    json_t *list = json_array();
    hub_each_session(c->hub, user, describe, list);
    size_t n = json_array_size(list);
    for (size_t i = 0; i < n; i++)
        json_object_set_new(json_array_get(list, i), "node", json_string(c->node));
    char *text = n ? jalloc_dumps(list, JSON_COMPACT) : NULL;
    json_decref(list);
    char b[3][24];
    const char *args[] = {"pres",
                          user,
                          c->node,
                          cluster_num(b[0], now + c->cfg->node_ttl_ms),
                          text ? text : "",
                          cluster_num(b[1], c->cfg->node_ttl_ms * 2),
                          cluster_num(b[2], cluster_stream_keep(c))};
    cluster_call(c, cluster_shard_for(c, user), on_ignore, NULL, (int)AW_ARRAY_LEN(args), args,
                 NULL);
    free(text);
}

static bool flush_presence(const void *value, void *arg)
{
    (void)value;
    (void)arg;
    return true;
}

/* presence of users whose connections changed */
static void flush_all_presence(cluster_t *c, int64_t now)
{
    for (size_t i = 0; i < c->pres._nbuckets; i++)
        for (map_entry_t *e = c->pres._buckets[i]; e; e = e->_next)
            write_presence(c, e->key, now);
    map_remove_if(&c->pres, flush_presence, NULL, NULL);
}

static bool refresh_user(const void *value, void *arg)
{
    const cuser_t *cu = value;
    tick_ctx_t *t = arg;
    hub_user_t *u = hub_user_find(t->c->hub, cu->id);
    if (u && u->nconns > 0)
        cluster_presence_changed(t->c, cu->id);
    return false;
}

typedef struct pres_ask {
    cluster_t *c;
    char user[];
} pres_ask_t;

static void on_present(cluster_t *c, redisReply *r, void *ctx)
{
    pres_ask_t *a = ctx;
    if (r && r->type == REDIS_REPLY_ARRAY) {
        map_entry_t *e = map_find(&c->asked, a->user, strlen(a->user));
        if (e) /* keep the "asked lately" bit */
            e->value = (void *)(((uintptr_t)e->value & 4) | (r->elements > 0 ? 2 : 1));
    }
    free(a);
}

static bool not_asked(const void *value, void *arg)
{
    (void)arg;
    return ((uintptr_t)value & 4) == 0;
}

static void clear_asked(cluster_t *c)
{
    for (size_t i = 0; i < c->asked._nbuckets; i++)
        for (map_entry_t *e = c->asked._buckets[i]; e; e = e->_next)
            e->value = (void *)((uintptr_t)e->value & 3);
}

/* ---- runs: leases and the reaper ---- */

typedef struct renew_acc {
    cluster_t *c;
    int64_t now;
} renew_acc_t;

static void renew_one(void *acc, const char *user, const char *run_id)
{
    renew_acc_t *a = acc;
    cluster_t *c = a->c;
    char b[3][24];
    const char *args[] = {"renew",
                          cluster_num(b[0], a->now),
                          cluster_num(b[1], c->cfg->node_ttl_ms),
                          cluster_num(b[2], c->cfg->run_timeout_ms),
                          user,
                          run_id};
    cluster_call(c, cluster_shard_for(c, user), on_ignore, NULL, (int)AW_ARRAY_LEN(args), args,
                 NULL);
}

static void on_reaped(cluster_t *c, redisReply *r, void *ctx)
{
    (void)c;
    shard_t *sh = ctx;
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer > 0)
        log_kv(LOG_INFO, "runs ended past their deadline", "#shard", (long long)sh->index, "#runs",
               (long long)r->integer, NULL);
}

static void reap(cluster_t *c, shard_t *sh, int64_t now)
{
    char epoch[HUB_EPOCH_LEN + 1], prefix[32], b[5][24];
    cluster_new_epoch(epoch);
    snprintf(prefix, sizeof prefix, "%s%08llx", c->eid_prefix, (unsigned long long)++c->next_eid);
    c->next_eid += 16;
    const char *args[] = {"reap",
                          sh->era,
                          epoch,
                          cluster_num(b[0], now),
                          cluster_num(b[1], c->cfg->history_size),
                          cluster_num(b[2], c->cfg->history_ttl_ms),
                          cluster_num(b[3], cluster_stream_keep(c)),
                          prefix,
                          cluster_num(b[4], c->cfg->run_timeout_ms)};
    cluster_call(c, sh, on_reaped, sh, (int)AW_ARRAY_LEN(args), args, NULL);
}

void cluster_set_runs(cluster_t *c, cluster_each_run_fn each, void *ctx,
                      void (*stop)(void *ctx, const char *user, const char *run_id))
{
    c->each_run = each;
    c->runs_ctx = ctx;
    c->stop_run = stop;
}

bool cluster_user_present(cluster_t *c, const char *user)
{
    hub_user_t *u = hub_user_find(c->hub, user);
    if (u && u->nconns > 0)
        return true;
    /* bits: 1 absent, 2 present (as last read), 4 asked since the last read */
    map_entry_t *e = map_find(&c->asked, user, strlen(user));
    if (!e) {
        map_put(&c->asked, user, strlen(user), (void *)(uintptr_t)(2 | 4)); /* present until told */
        return true;
    }
    e->value = (void *)((uintptr_t)e->value | 4);
    return ((uintptr_t)e->value & 3) != 1;
}

/* cluster_tick's presence part: the refresh of this node's users, the runs'
 * leases and questions, the presence changed since the last tick. */
void cluster_presence_tick(cluster_t *c, int64_t now)
{
    tick_ctx_t t = {c, now};
    if (now >= c->next_refresh) {
        c->next_refresh = now + c->cfg->node_ttl_ms / 3;
        map_remove_if(&c->users, refresh_user, &t, NULL);
        if (c->each_run) {
            renew_acc_t acc = {c, now};
            c->each_run(c->runs_ctx, renew_one, &acc);
        }
        /* the runs' questions about presence, asked again (those no run
         * asked since the last round are forgotten) */
        map_remove_if(&c->asked, not_asked, NULL, NULL);
        for (size_t i = 0; i < c->asked._nbuckets; i++)
            for (map_entry_t *e = c->asked._buckets[i]; e; e = e->_next) {
                pres_ask_t *a = malloc(sizeof *a + e->keylen + 1);
                if (!a)
                    continue;
                a->c = c;
                memcpy(a->user, e->key, e->keylen + 1);
                char b[24];
                const char *args[] = {"conns", a->user, cluster_num(b, now)};
                cluster_call(c, cluster_shard_for(c, a->user), on_present, a, 3, args, NULL);
            }
        clear_asked(c);
    }
    flush_all_presence(c, now);
}

/* The reaper's round: runs whose lease ran out, on every shard. */
void cluster_reap_tick(cluster_t *c, int64_t now)
{
    for (int i = 0; i < c->nshards; i++)
        if (rconn_ready(&c->shards[i].cmd))
            reap(c, &c->shards[i], now);
}

/* ---- API reads ---- */

typedef struct list_call {
    cluster_list_fn fn;
    void *arg;
} list_call_t;

static void on_list(cluster_t *c, redisReply *r, void *ctx)
{
    (void)c;
    list_call_t *l = ctx;
    json_t *all = json_array();
    int rc = AW_EUNAVAIL;
    if (r && r->type == REDIS_REPLY_ARRAY) {
        rc = AW_OK;
        for (size_t i = 0; i < r->elements; i++) {
            json_t *part = json_loadb(r->element[i]->str, r->element[i]->len, 0, NULL);
            if (json_is_array(part))
                json_array_extend(all, part);
            json_decref(part);
        }
    }
    l->fn(l->arg, rc, all);
    json_decref(all);
    free(l);
}

static void list_op(cluster_t *c, const char *op, const char *user, cluster_list_fn fn, void *arg)
{
    shard_t *sh = cluster_shard_for(c, user);
    list_call_t *l = malloc(sizeof *l);
    if (!l || !rconn_ready(&sh->cmd)) {
        free(l);
        fn(arg, AW_EUNAVAIL, NULL);
        return;
    }
    *l = (list_call_t){fn, arg};
    char b[24];
    const char *args[] = {op, user, cluster_num(b, aw_now_ms())};
    cluster_call(c, sh, on_list, l, 3, args, NULL);
}

void cluster_connections(cluster_t *c, const char *user, cluster_list_fn fn, void *arg)
{
    list_op(c, "conns", user, fn, arg);
}

void cluster_disconnect(cluster_t *c, const char *user, cluster_list_fn fn, void *arg)
{
    list_op(c, "kick", user, fn, arg);
}

typedef struct hist_call {
    cluster_history_fn fn;
    void *arg;
    uint64_t since;
} hist_call_t;

static void on_history(cluster_t *c, redisReply *r, void *ctx)
{
    (void)c;
    hist_call_t *h = ctx;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1) { /* no stream */
        h->fn(h->arg, AW_OK, NULL, 0, 0, NULL, NULL, 0);
        free(h);
        return;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2) {
        h->fn(h->arg, AW_EUNAVAIL, NULL, 0, 0, NULL, NULL, 0);
        free(h);
        return;
    }
    size_t n = r->elements - 2;
    const char **ev = calloc(n + 1, sizeof *ev);
    size_t *lens = calloc(n + 1, sizeof *lens);
    uint64_t seq = (uint64_t)r->element[1]->integer, first = 0;
    size_t k = 0;
    for (size_t i = 0; ev && lens && i < n; i++) {
        redisReply *e = r->element[i + 2];
        char *p;
        uint64_t q = strtoull(e->str, &p, 10);
        const char *json = *p == ' ' ? strchr(p + 1, ' ') : NULL;
        if (!json)
            continue;
        if (!first)
            first = q;
        if (q <= h->since)
            continue;
        json++;
        ev[k] = json;
        lens[k++] = e->len - (size_t)(json - e->str);
    }
    if (!n)
        first = 0;
    h->fn(h->arg, ev && lens ? AW_OK : AW_ENOMEM, r->element[0]->str, seq, first, ev, lens, k);
    free(ev);
    free(lens);
    free(h);
}

void cluster_history(cluster_t *c, const char *user, uint64_t since, cluster_history_fn fn,
                     void *arg)
{
    shard_t *sh = cluster_shard_for(c, user);
    hist_call_t *h = malloc(sizeof *h);
    if (!h || !rconn_ready(&sh->cmd)) {
        free(h);
        fn(arg, AW_EUNAVAIL, NULL, 0, 0, NULL, NULL, 0);
        return;
    }
    *h = (hist_call_t){fn, arg, since};
    char epoch[HUB_EPOCH_LEN + 1], b[5][24];
    cluster_new_epoch(epoch);
    const char *args[] = {"range",
                          user,
                          sh->era,
                          epoch,
                          cluster_num(b[0], aw_now_ms()),
                          cluster_num(b[1], 0),
                          cluster_num(b[2], c->cfg->history_size),
                          cluster_num(b[3], c->cfg->history_ttl_ms),
                          cluster_num(b[4], cluster_stream_keep(c)),
                          "peek"};
    cluster_call(c, sh, on_history, h, (int)AW_ARRAY_LEN(args), args, NULL);
}

/* ---- tickets ---- */

typedef struct ticket_call {
    broker_ticket_fn issued;
    broker_peek_fn peeked;
    broker_rc_fn taken;
    void *arg;
    char id[40];
} ticket_call_t;

static void on_ticket_issued(cluster_t *c, redisReply *r, void *ctx)
{
    (void)c;
    ticket_call_t *t = ctx;
    int rc = !r || r->type != REDIS_REPLY_INTEGER ? AW_EUNAVAIL
             : r->integer == 1                    ? AW_OK
                                                  : AW_ELIMIT;
    t->issued(t->arg, rc, rc == AW_OK ? t->id : NULL);
    free(t);
}

void cluster_ticket_issue(broker_t *b, const char *user, int64_t expires_ms, int64_t token_exp_ms,
                          broker_ticket_fn fn, void *arg)
{
    cluster_t *c = b->impl;
    shard_t *sh = cluster_shard_for(c, user);
    ticket_call_t *t = calloc(1, sizeof *t);
    uint8_t raw[15];
    int64_t now = aw_now_ms();
    if (!t || !rconn_ready(&sh->cmd) || aw_random_bytes(raw, sizeof raw) != AW_OK) {
        free(t);
        fn(arg, AW_EUNAVAIL, NULL);
        return;
    }
    t->issued = fn;
    t->arg = arg;
    snprintf(t->id, sizeof t->id, "%02x", (unsigned)sh->index);
    aw_hex(t->id + 2, raw, sizeof raw);
    char b4[4][24];
    const char *args[] = {"tkt",
                          user,
                          t->id,
                          cluster_num(b4[0], expires_ms > now ? expires_ms - now : 1),
                          cluster_num(b4[1], token_exp_ms),
                          cluster_num(b4[2], now),
                          cluster_num(b4[3], c->cfg->max_tickets_per_user)};
    cluster_call(c, sh, on_ticket_issued, t, (int)AW_ARRAY_LEN(args), args, NULL);
}

static void on_ticket_read(cluster_t *c, redisReply *r, void *ctx)
{
    (void)c;
    ticket_call_t *t = ctx;
    if (!r) {
        if (t->peeked)
            t->peeked(t->arg, AW_EUNAVAIL, NULL, 0);
        else
            t->taken(t->arg, AW_EUNAVAIL);
    } else if (t->taken) {
        t->taken(t->arg, r->type == REDIS_REPLY_STRING ? AW_OK : AW_ENOTFOUND);
    } else {
        /* "USER\nTOKEN_EXPIRY\nEXPIRY" */
        char user[EVENT_MAX_ID + 1];
        const char *nl = r->type == REDIS_REPLY_STRING ? memchr(r->str, '\n', r->len) : NULL;
        size_t ulen = nl ? (size_t)(nl - r->str) : 0;
        const char *nl2 = nl ? memchr(nl + 1, '\n', r->len - ulen - 1) : NULL;
        if (!nl2 || ulen == 0 || ulen > EVENT_MAX_ID || strtoll(nl2 + 1, NULL, 10) <= aw_now_ms()) {
            t->peeked(t->arg, AW_ENOTFOUND, NULL, 0);
        } else {
            memcpy(user, r->str, ulen);
            user[ulen] = '\0';
            t->peeked(t->arg, AW_OK, user, strtoll(nl + 1, NULL, 10));
        }
    }
    free(t);
}

static int ticket_shard(const cluster_t *c, const char *id)
{
    if (strlen(id) != 32 || strspn(id, "0123456789abcdef") != 32)
        return -1;
    int n = (int)strtol((char[3]){id[0], id[1], 0}, NULL, 16);
    return n < c->nshards ? n : -1;
}

static void ticket_read(cluster_t *c, const char *op, const char *id, ticket_call_t *t)
{
    int n = ticket_shard(c, id);
    redisReply none = {.type = REDIS_REPLY_NIL};
    if (n < 0) {
        on_ticket_read(c, &none, t);
        return;
    }
    if (!rconn_ready(&c->shards[n].cmd)) {
        on_ticket_read(c, NULL, t);
        return;
    }
    const char *args[] = {op, id};
    cluster_call(c, &c->shards[n], on_ticket_read, t, 2, args, NULL);
}

void cluster_ticket_peek(broker_t *b, const char *id, broker_peek_fn fn, void *arg)
{
    ticket_call_t *t = calloc(1, sizeof *t);
    if (!t) {
        fn(arg, AW_ENOMEM, NULL, 0);
        return;
    }
    t->peeked = fn;
    t->arg = arg;
    ticket_read(b->impl, "peekt", id, t);
}

void cluster_ticket_take(broker_t *b, const char *id, broker_rc_fn fn, void *arg)
{
    ticket_call_t *t = calloc(1, sizeof *t);
    if (!t) {
        fn(arg, AW_ENOMEM);
        return;
    }
    t->taken = fn;
    t->arg = arg;
    ticket_read(b->impl, "take", id, t);
}
