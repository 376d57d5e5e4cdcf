/* cluster_streams.c -- the users' streams this node serves in cluster mode:
 * a user's channel subscribed on its shard, the range read that loads its
 * stream (and fills a gap), the messages applied in seq order to the hub,
 * the sessions waiting for the stream to be live, and what a shard's
 * subscription connection going down or coming back does to them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "cluster_int.h"
#include "event.h"
#include "log.h"
#include "session.h"
#include "shard.h"

static void range_request(cuser_t *cu);

static void waiters_done(cuser_t *cu, int rc, bool all)
{
    int64_t now = aw_now_ms();
    waiter_t **pw = &cu->waiters;
    while (*pw) {
        waiter_t *w = *pw;
        if (all || now >= w->deadline) {
            *pw = w->next;
            w->fn(w->arg, rc);
            free(w);
        } else {
            pw = &w->next;
        }
    }
}

static void pend_clear(cuser_t *cu)
{
    while (cu->pend) {
        pending_ev_t *p = cu->pend;
        cu->pend = p->next;
        free(p);
    }
    cu->pend_tail = NULL;
    cu->npend = 0;
}

/* A live event of a loaded stream, in channel order. */
static void apply(cuser_t *cu, uint64_t seq, const char *epoch, const char *json, size_t len);

static void pend_push(cuser_t *cu, uint64_t seq, const char *epoch, const char *json, size_t len)
{
    if (cu->npend >= (size_t)cu->c->cfg->history_size) {
        /* more arrived than a range read can give back: read it all again */
        pend_clear(cu);
        cu->range_wanted = true;
        return;
    }
    pending_ev_t *p = malloc(sizeof *p + len + 1);
    if (!p) {
        cu->range_wanted = true;
        return;
    }
    p->next = NULL;
    p->seq = seq;
    snprintf(p->epoch, sizeof p->epoch, "%s", epoch);
    p->len = len;
    memcpy(p->json, json, len);
    p->json[len] = '\0';
    if (cu->pend_tail)
        cu->pend_tail->next = p;
    else
        cu->pend = p;
    cu->pend_tail = p;
    cu->npend++;
}

static void stream_reset(cuser_t *cu, const char *why)
{
    cluster_t *c = cu->c;
    c->resets++;
    size_t n = hub_disconnect_user(c->hub, cu->id, WS_CLOSE_GOING_AWAY, "stream reset");
    log_kv(LOG_WARN, "stream reset: connections closed to resume", "user", cu->id, "reason", why,
           "#connections", (long long)n, NULL);
    cu->loaded = false;
}

/* The answer to a range read: {epoch, seq, "SEQ TS JSON"...}. */
static void on_range(cluster_t *c, redisReply *r, void *ctx)
{
    (void)c;
    cuser_t *cu = ctx;
    cu->range_flight = false;
    if (cu->refs == 0) { /* released meanwhile */
        map_remove(&c->users, cu->id, strlen(cu->id));
        pend_clear(cu);
        free(cu);
        return;
    }
    if (cu->state < CU_SUBSCRIBED || cu->range_gen != cu->sub_gen) {
        /* read before the channel was (again) listened to: what was published
         * in between may be missing; read again once subscribed */
        cu->range_wanted = true;
        if (cu->state >= CU_SUBSCRIBED)
            range_request(cu);
        return;
    }
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_INTEGER) {
        cu->range_wanted = true; /* the tick tries again; waiters time out */
        return;
    }
    const char *epoch = r->element[0]->str;
    uint64_t seq = (uint64_t)r->element[1]->integer;
    uint64_t first = seq + 1;
    if (r->elements > 2)
        first = strtoull(r->element[2]->str, NULL, 10);
    hub_user_t *u = hub_user_find(c->hub, cu->id);
    bool continues = cu->loaded && u && strcmp(u->epoch, epoch) == 0 && seq >= u->seq &&
                     (seq == u->seq || first <= u->seq + 1);
    if (!continues) {
        if (cu->loaded) /* first loads: sessions still syncing decide resume themselves */
            stream_reset(cu, u && strcmp(u->epoch, epoch) != 0 ? "epoch changed"
                                                               : "events lost before delivery");
        hub_stream_reset(c->hub, cu->id, epoch, first - 1);
        u = hub_user_find(c->hub, cu->id);
    } else {
        c->gaps_filled += seq > u->seq;
    }
    for (size_t i = 2; u && i < r->elements; i++) {
        redisReply *e = r->element[i];
        char *p;
        uint64_t q = strtoull(e->str, &p, 10);
        if (q <= u->seq || *p != ' ')
            continue;
        char *json = strchr(p + 1, ' ');
        if (!json)
            continue;
        json++;
        hub_accept(c->hub, cu->id, q, json, e->len - (size_t)(json - e->str), NULL);
    }
    cu->loaded = true;
    cu->state = CU_LIVE;
    /* what the channel brought meanwhile, newer than the range */
    pending_ev_t *list = cu->pend;
    cu->pend = cu->pend_tail = NULL;
    cu->npend = 0;
    while (list) {
        pending_ev_t *p = list;
        list = p->next;
        apply(cu, p->seq, p->epoch, p->json, p->len);
        free(p);
    }
    if (!cu->range_flight && !cu->range_wanted)
        waiters_done(cu, AW_OK, true);
    else if (cu->range_wanted)
        range_request(cu);
}

static void range_request(cuser_t *cu)
{
    cluster_t *c = cu->c;
    shard_t *sh = &c->shards[cu->shard];
    if (cu->range_flight || cu->state < CU_SUBSCRIBED || !rconn_ready(&sh->cmd)) {
        cu->range_wanted = true;
        return;
    }
    cu->range_wanted = false;
    cu->range_flight = true;
    cu->range_gen = cu->sub_gen;
    hub_user_t *u = hub_user_find(c->hub, cu->id);
    uint64_t from = cu->loaded && u ? u->seq + 1 : 0;
    char epoch[HUB_EPOCH_LEN + 1], b[5][24];
    cluster_new_epoch(epoch);
    const char *args[] = {"range",
                          cu->id,
                          sh->era,
                          epoch,
                          cluster_num(b[0], aw_now_ms()),
                          cluster_num(b[1], (long long)from),
                          cluster_num(b[2], c->cfg->history_size),
                          cluster_num(b[3], c->cfg->history_ttl_ms),
                          cluster_num(b[4], cluster_stream_keep(c))};
    cluster_call(c, sh, on_range, cu, (int)AW_ARRAY_LEN(args), args, NULL);
}

static void apply(cuser_t *cu, uint64_t seq, const char *epoch, const char *json, size_t len)
{
    cluster_t *c = cu->c;
    if (cu->state != CU_LIVE || cu->range_flight || cu->range_wanted) {
        pend_push(cu, seq, epoch, json, len);
        return;
    }
    hub_user_t *u = hub_user_find(c->hub, cu->id);
    if (!u || strcmp(u->epoch, epoch) != 0 || seq > u->seq + 1) {
        /* a new epoch, or a message lost on the channel: the shard knows */
        pend_push(cu, seq, epoch, json, len);
        range_request(cu);
        return;
    }
    if (seq <= u->seq)
        return; /* had it from a range read */
    hub_accept(c->hub, cu->id, seq, json, len, NULL);
}

void cluster_on_message(rconn_t *rc, const char *ch, size_t chlen, const char *msg, size_t len)
{
    shard_t *sh = rc->owner;
    cluster_t *c = sh->c;
    char buf[EVENT_MAX_ID + 64];
    const char *user = cluster_channel_user(buf, sizeof buf, ch, chlen);
    cuser_t *cu = user ? map_get(&c->users, user, strlen(user)) : NULL;
    if (!cu)
        return;
    if (len > 2 && msg[0] == 'E' && msg[1] == ' ') {
        char *p;
        uint64_t seq = strtoull(msg + 2, &p, 10);
        const char *e = p + 1;
        const char *sp = memchr(e, ' ', len - (size_t)(e - msg));
        if (*p != ' ' || !sp || sp - e > HUB_EPOCH_LEN)
            return;
        char epoch[HUB_EPOCH_LEN + 1];
        memcpy(epoch, e, (size_t)(sp - e));
        epoch[sp - e] = '\0';
        apply(cu, seq, epoch, sp + 1, len - (size_t)(sp + 1 - msg));
    } else if (len >= 6 && memcmp(msg, "C kick", 6) == 0) {
        size_t n = hub_disconnect_user(c->hub, cu->id, WS_CLOSE_DISCONNECTED, "disconnected");
        log_kv(LOG_INFO, "kick", "user", cu->id, "#connections", (long long)n, NULL);
    } else if (len > 7 && memcmp(msg, "C stop ", 7) == 0 && c->stop_run) {
        char run[EVENT_MAX_ID + 1];
        snprintf(run, sizeof run, "%.*s", (int)(len - 7), msg + 7);
        c->stop_run(c->runs_ctx, cu->id, run);
    }
}

static void subscribe(cuser_t *cu)
{
    shard_t *sh = &cu->c->shards[cu->shard];
    char ch[EVENT_MAX_ID + 64];
    cluster_user_key(ch, sizeof ch, cu->id, "c");
    if (rconn_subscribe(&sh->sub, ch, true) == AW_OK) {
        cu->sub_gen++;
        cu->state = CU_SUBSCRIBING;
        cu->c->subscriptions++;
    }
}

void cluster_on_subscribed(rconn_t *rc, const char *ch, size_t chlen)
{
    shard_t *sh = rc->owner;
    char buf[EVENT_MAX_ID + 64];
    const char *user = cluster_channel_user(buf, sizeof buf, ch, chlen);
    cuser_t *cu = user ? map_get(&sh->c->users, user, strlen(user)) : NULL;
    if (!cu || cu->state != CU_SUBSCRIBING)
        return;
    cu->state = CU_SUBSCRIBED;
    range_request(cu); /* subscribed first, then the range: nothing falls between */
}

void cluster_user_acquire(cluster_t *c, const char *user, cluster_ready_fn fn, void *arg)
{
    cuser_t *cu = map_get(&c->users, user, strlen(user));
    if (!cu) {
        cu = calloc(1, sizeof *cu);
        map_entry_t *e = cu ? map_put(&c->users, user, strlen(user), cu) : NULL;
        if (!e) {
            free(cu);
            fn(arg, AW_ENOMEM);
            return;
        }
        cu->id = e->key;
        cu->c = c;
        cu->shard = shard_of(user, c->nshards);
        subscribe(cu);
    }
    cu->refs++;
    if (cu->state == CU_LIVE && !cu->range_flight && !cu->range_wanted) {
        fn(arg, AW_OK);
        return;
    }
    waiter_t *w = malloc(sizeof *w);
    if (!w) {
        fn(arg, AW_ENOMEM);
        return;
    }
    *w = (waiter_t){fn, arg, aw_now_ms() + 2 * c->cfg->redis_timeout_ms + 1000, cu->waiters};
    cu->waiters = w;
}

void cluster_user_catch_up(cluster_t *c, const char *user, cluster_ready_fn fn, void *arg)
{
    cuser_t *cu = map_get(&c->users, user, strlen(user));
    waiter_t *w = cu ? malloc(sizeof *w) : NULL;
    if (!w) {
        fn(arg, cu ? AW_ENOMEM : AW_ENOTFOUND);
        return;
    }
    *w = (waiter_t){fn, arg, aw_now_ms() + 2 * c->cfg->redis_timeout_ms + 1000, cu->waiters};
    cu->waiters = w;
    range_request(cu); /* now, or once the one in flight is back */
}

void cluster_user_release(cluster_t *c, const char *user)
{
    cuser_t *cu = map_get(&c->users, user, strlen(user));
    if (!cu || --cu->refs > 0)
        return;
    shard_t *sh = &c->shards[cu->shard];
    char ch[EVENT_MAX_ID + 64];
    cluster_user_key(ch, sizeof ch, cu->id, "c");
    if (cu->state >= CU_SUBSCRIBING) {
        rconn_subscribe(&sh->sub, ch, false);
        c->subscriptions--;
    }
    waiters_done(cu, AW_ECLOSED, true);
    if (cu->range_flight) {
        cu->state = CU_NEW; /* on_range frees it */
        return;
    }
    map_remove(&c->users, cu->id, strlen(cu->id));
    pend_clear(cu);
    free(cu);
}

static bool mark_shard_users(const void *value, void *arg)
{
    cuser_t *cu = (cuser_t *)value;
    shard_t *sh = arg;
    if (cu->shard == sh->index && cu->state != CU_NEW) {
        /* messages may have been lost: subscribe again, then fill the gap */
        cu->state = CU_NEW;
        cu->range_wanted = false;
        pend_clear(cu);
    }
    return false;
}

void cluster_streams_shard_down(shard_t *sh)
{
    map_remove_if(&sh->c->users, mark_shard_users, sh, NULL);
}

static bool resubscribe(const void *value, void *arg)
{
    cuser_t *cu = (cuser_t *)value;
    shard_t *sh = arg;
    if (cu->shard == sh->index && cu->state == CU_NEW && cu->refs > 0)
        subscribe(cu);
    return false;
}

void cluster_streams_resubscribe(shard_t *sh)
{
    map_remove_if(&sh->c->users, resubscribe, sh, NULL);
}

static bool user_tick(const void *value, void *arg)
{
    cuser_t *cu = (cuser_t *)value;
    tick_ctx_t *t = arg;
    if (cu->refs == 0)
        return false;
    shard_t *sh = &t->c->shards[cu->shard];
    if (cu->state == CU_NEW && rconn_ready(&sh->sub))
        subscribe(cu);
    if (cu->range_wanted && !cu->range_flight)
        range_request(cu);
    if (cu->waiters)
        waiters_done(cu, AW_EUNAVAIL, false); /* past their deadline only */
    return false;
}

void cluster_streams_tick(cluster_t *c, int64_t now)
{
    tick_ctx_t t = {c, now};
    map_remove_if(&c->users, user_tick, &t, NULL);
}

void cluster_cuser_free(void *value)
{
    cuser_t *cu = value;
    waiters_done(cu, AW_ECLOSED, true);
    pend_clear(cu);
    free(cu);
}
