/* cluster.c -- users' streams on Redis shards (cluster.h). Two connections
 * per shard: one for commands (every call is the script cluster.lua, by
 * EVALSHA, sent again as EVAL after NOSCRIPT), one for the channels of the
 * users this node serves. The users' streams are cluster_streams.c's;
 * presence, runs' leases, the API's reads and tickets cluster_ops.c's. */
#include "cluster.h"
#include "cluster_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "event.h"
#include "jalloc.h"
#include "log.h"
#include "map.h"
#include "rconn.h"
#include "session.h"
#include "shard.h"
#include "ws.h"

/* the script, embedded at build time from cluster.lua */
#include "cluster_lua.h"

/* ---- keys ---- */

void cluster_user_key(char *out, size_t len, const char *user, const char *suffix)
{
    snprintf(out, len, "aw:%zu:%s:%s", strlen(user), user, suffix);
}

/* "aw:N:USER:c" -> USER (in place: returns a pointer into buf, NUL-ended) */
const char *cluster_channel_user(char *buf, size_t buflen, const char *ch, size_t chlen)
{
    if (chlen + 1 > buflen || chlen < 6 || memcmp(ch, "aw:", 3) != 0)
        return NULL;
    memcpy(buf, ch, chlen);
    buf[chlen] = '\0';
    char *end;
    unsigned long n = strtoul(buf + 3, &end, 10);
    if (*end != ':' || (size_t)(end + 1 - buf) + n + 2 != chlen)
        return NULL;
    char *u = end + 1;
    u[n] = '\0';
    return u;
}

shard_t *cluster_shard_for(const cluster_t *c, const char *user)
{
    return &c->shards[shard_of(user, c->nshards)];
}

/* ---- calls of the script ---- */

/* One call of the script, in one allocation: its arguments are kept (one
 * block after the struct) so that a NOSCRIPT answer can send it again whole. */
typedef struct call {
    cluster_t *c;
    shard_t *sh;
    call_fn fn;
    void *ctx;
    int argc;
    bool retried;
    const char **argv;
    size_t *lens;
} call_t;

static void on_call_reply(rconn_t *rc, redisReply *r, void *arg);

static int call_send(call_t *k)
{
    return rconn_command(&k->sh->cmd, on_call_reply, k, k->argc, k->argv, k->lens);
}

static void on_call_reply(rconn_t *rc, redisReply *r, void *arg)
{
    (void)rc;
    call_t *k = arg;
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 && !k->retried) {
        /* the server forgot the script (restart, SCRIPT FLUSH): send it whole,
         * which also loads it again for the EVALSHAs that follow */
        k->retried = true;
        k->argv[0] = "EVAL";
        k->lens[0] = 4;
        k->argv[1] = cluster_lua;
        k->lens[1] = sizeof cluster_lua;
        if (call_send(k) == AW_OK)
            return;
        r = NULL;
    }
    if (r && r->type == REDIS_REPLY_ERROR) {
        log_kv(LOG_ERROR | LOG_LIMITED, "redis script error", "error", r->str, NULL);
        r = NULL;
    }
    k->fn(k->c, r, k->ctx);
    free(k);
}

/* Runs the script on sh with the n string arguments args (arglens NULL, or
 * SIZE_MAX for strlen). fn is always called, maybe before this returns. */
void cluster_call(cluster_t *c, shard_t *sh, call_fn fn, void *ctx, int n, const char **args,
                  const size_t *arglens)
{
    int argc = n + 3;
    const char *head[3] = {"EVALSHA", sh->sha, "0"};
    size_t total = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = i < 3 ? head[i] : args[i - 3];
        total += i < 3 || !arglens || arglens[i - 3] == SIZE_MAX ? strlen(a) : arglens[i - 3];
    }
    size_t hdr = sizeof(call_t) + (size_t)argc * (sizeof(char *) + sizeof(size_t));
    call_t *k = malloc(hdr + total);
    if (!k) {
        fn(c, NULL, ctx);
        return;
    }
    *k = (call_t){.c = c, .sh = sh, .fn = fn, .ctx = ctx, .argc = argc};
    k->argv = (const char **)(k + 1);
    k->lens = (size_t *)(k->argv + argc);
    char *p = (char *)k + hdr;
    for (int i = 0; i < argc; i++) {
        const char *a = i < 3 ? head[i] : args[i - 3];
        size_t len = i < 3 || !arglens || arglens[i - 3] == SIZE_MAX ? strlen(a) : arglens[i - 3];
        memcpy(p, a, len);
        k->argv[i] = p;
        k->lens[i] = len;
        p += len;
    }
    if (call_send(k) != AW_OK) {
        free(k);
        fn(c, NULL, ctx);
    }
}

const char *cluster_num(char *buf, long long v)
{
    snprintf(buf, 24, "%lld", v);
    return buf;
}

void cluster_new_epoch(char out[HUB_EPOCH_LEN + 1])
{
    uint8_t raw[HUB_EPOCH_LEN / 2];
    aw_random_bytes(raw, sizeof raw);
    aw_hex(out, raw, sizeof raw);
}

static void next_event_id(cluster_t *c, char *out, size_t len)
{
    snprintf(out, len, "ev_%s%012llx", c->eid_prefix, (unsigned long long)++c->next_eid);
}

int64_t cluster_stream_keep(const cluster_t *c)
{
    return c->cfg->history_ttl_ms + STREAM_KEEP_MS;
}

/* ---- receipts ---- */

typedef struct pub {
    cluster_receipt_fn fn;
    void *arg;
} pub_t;

/* One answer of the script: {0|1, seq, epoch, event id}, {2, why}, {3}. */
static int read_receipt(const redisReply *r, hub_receipt_t *rec)
{
    memset(rec, 0, sizeof *rec);
    int rc = AW_EUNAVAIL;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_INTEGER) {
        long long code = r->element[0]->integer;
        if ((code == 0 || code == 1) && r->elements >= 4) {
            rec->seq = (uint64_t)r->element[1]->integer;
            snprintf(rec->epoch, sizeof rec->epoch, "%s", r->element[2]->str);
            snprintf(rec->event_id, sizeof rec->event_id, "%s", r->element[3]->str);
            rc = AW_OK;
        } else if (code == 2 && r->elements >= 2) {
            snprintf(rec->error, sizeof rec->error, "%s", r->element[1]->str);
            rc = AW_ECONFLICT;
        } else if (code == 3) {
            rc = AW_ENOTFOUND;
        }
    }
    if (rc == AW_EUNAVAIL)
        snprintf(rec->error, sizeof rec->error, "the user's Redis shard did not answer");
    return rc;
}

static void on_receipt(cluster_t *c, redisReply *r, void *ctx)
{
    (void)c;
    pub_t *p = ctx;
    hub_receipt_t rec;
    int rc = read_receipt(r, &rec);
    p->fn(p->arg, rc, &rec);
    free(p);
}

/* The events of one shard in one call of the script, answered in order. */
typedef struct pub_many {
    cluster_receipt_fn fn;
    size_t n;
    void *args[];
} pub_many_t;

static void on_receipts(cluster_t *c, redisReply *r, void *ctx)
{
    (void)c;
    pub_many_t *p = ctx;
    for (size_t i = 0; i < p->n; i++) {
        hub_receipt_t rec;
        const redisReply *one =
            r && r->type == REDIS_REPLY_ARRAY && i < r->elements ? r->element[i] : NULL;
        int rc = read_receipt(one, &rec);
        p->fn(p->args[i], rc, &rec);
    }
    free(p);
}

static const char *field(const json_t *ev, const char *name)
{
    const char *v = json_string_value(json_object_get(ev, name));
    return v ? v : "";
}

#define PUB_COMMON 12 /* arguments before the events' (cluster.lua, op pub) */
#define PUB_EACH   9

/* Sends the events of items marked in mine (count of them), all of shard
 * sh, as one call of the script. */
static void publish_shard(cluster_t *c, shard_t *sh, broker_pub_t *items, size_t n,
                          const bool *mine, size_t count, cluster_receipt_fn fn)
{
    size_t nargs = PUB_COMMON + count * PUB_EACH;
    pub_many_t *p = malloc(sizeof *p + count * sizeof p->args[0]);
    const char **args = malloc(nargs * sizeof *args);
    size_t *lens = malloc(nargs * sizeof *lens);
    size_t *offs = malloc(count * sizeof *offs);
    char(*eids)[HUB_EVENT_ID_LEN] = malloc(count * sizeof *eids);
    aw_buf_t bodies = {0}; /* every body, one after the other */
    bool ok = p && args && lens && offs && eids;
    size_t k = 0;
    for (size_t i = 0; ok && i < n; i++) {
        if (!mine[i])
            continue;
        const char *body;
        size_t blen;
        offs[k] = bodies.len;
        /* the run fields stay in ev: only the envelope's are dropped */
        ok = hub_event_body(c->hub, items[i].ev, &body, &blen) == AW_OK &&
             aw_buf_append(body, blen, &bodies) == 0;
        lens[PUB_COMMON + k * PUB_EACH + 3] = blen;
        p->args[k++] = items[i].arg;
    }
    if (ok) {
        p->fn = fn;
        p->n = count;
        char epoch[HUB_EPOCH_LEN + 1], b[9][24];
        cluster_new_epoch(epoch);
        const config_t *cfg = c->cfg;
        const char *common[PUB_COMMON] = {
            "pub",
            sh->era,
            epoch,
            cluster_num(b[0], aw_now_ms()),
            cluster_num(b[1], cfg->history_size),
            cluster_num(b[2], cfg->history_ttl_ms),
            cluster_num(b[3], cluster_stream_keep(c)),
            cluster_num(b[4], cfg->idempotency_ttl_ms),
            cluster_num(b[5], cfg->node_ttl_ms),
            cluster_num(b[6], cfg->run_idle_timeout_ms),
            cluster_num(b[7], cfg->run_timeout_ms),
            cluster_num(b[8], cfg->run_timeout_ms + cfg->history_ttl_ms)};
        for (size_t a = 0; a < PUB_COMMON; a++)
            args[a] = common[a], lens[a] = SIZE_MAX;
        k = 0;
        for (size_t i = 0; i < n; i++) {
            if (!mine[i])
                continue;
            const char **a = args + PUB_COMMON + k * PUB_EACH;
            size_t *l = lens + PUB_COMMON + k * PUB_EACH;
            next_event_id(c, eids[k], sizeof eids[k]);
            a[0] = items[i].user;
            a[1] = items[i].idem ? items[i].idem : "";
            a[2] = eids[k];
            a[3] = bodies.data + offs[k];
            a[4] = field(items[i].ev, "run_id");
            a[5] = field(items[i].ev, "type");
            a[6] = field(items[i].ev, "thread_id");
            a[7] = field(items[i].ev, "tool_name");
            a[8] = items[i].own_run ? c->node : "";
            for (int f = 0; f < PUB_EACH; f++)
                if (f != 3)
                    l[f] = SIZE_MAX;
            k++;
        }
        cluster_call(c, sh, on_receipts, p, (int)nargs, args, lens); /* copies what it sends */
    } else {
        hub_receipt_t rec = {.error = "out of memory"};
        for (size_t i = 0; i < n; i++)
            if (mine[i])
                fn(items[i].arg, AW_ENOMEM, &rec);
        free(p);
    }
    free(args);
    free(lens);
    free(offs);
    free(eids);
    aw_buf_free(&bodies);
}

void cluster_publish(cluster_t *c, broker_pub_t *items, size_t n, cluster_receipt_fn fn)
{
    bool *mine = calloc(n ? n : 1, sizeof *mine);
    int *shard = calloc(n ? n : 1, sizeof *shard);
    hub_receipt_t rec = {0};
    if (!mine || !shard) {
        snprintf(rec.error, sizeof rec.error, "out of memory");
        for (size_t i = 0; i < n; i++)
            fn(items[i].arg, AW_ENOMEM, &rec);
        free(mine);
        free(shard);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        shard[i] = -1;
        memset(&rec, 0, sizeof rec);
        if (!event_id_valid(items[i].user)) {
            snprintf(rec.error, sizeof rec.error, "user_id (the target) is required");
            fn(items[i].arg, AW_EINVAL, &rec);
        } else if (event_validate(items[i].ev, rec.error, sizeof rec.error) != AW_OK) {
            fn(items[i].arg, AW_EINVAL, &rec);
        } else if (!rconn_ready(&cluster_shard_for(c, items[i].user)->cmd)) {
            snprintf(rec.error, sizeof rec.error, "the user's Redis shard is not available");
            fn(items[i].arg, AW_EUNAVAIL, &rec);
        } else {
            shard[i] = shard_of(items[i].user, c->nshards);
        }
    }
    for (int k = 0; k < c->nshards; k++) {
        size_t count = 0;
        for (size_t i = 0; i < n; i++)
            count += (mine[i] = shard[i] == k);
        if (count)
            publish_shard(c, &c->shards[k], items, n, mine, count, fn);
    }
    free(mine);
    free(shard);
}

void cluster_finish_run(cluster_t *c, const char *user, const char *run_id, const char *status,
                        const char *error, cluster_receipt_fn fn, void *arg)
{
    shard_t *sh = cluster_shard_for(c, user);
    pub_t *p = malloc(sizeof *p);
    if (!p) {
        hub_receipt_t rec = {.error = "out of memory"};
        fn(arg, AW_ENOMEM, &rec);
        return;
    }
    *p = (pub_t){fn, arg};
    char epoch[HUB_EPOCH_LEN + 1], eid[HUB_EVENT_ID_LEN], b[4][24];
    cluster_new_epoch(epoch);
    next_event_id(c, eid, sizeof eid);
    const char *args[] = {"fin",
                          user,
                          run_id,
                          status,
                          error,
                          sh->era,
                          epoch,
                          cluster_num(b[0], aw_now_ms()),
                          cluster_num(b[1], c->cfg->history_size),
                          cluster_num(b[2], c->cfg->history_ttl_ms),
                          cluster_num(b[3], cluster_stream_keep(c)),
                          eid};
    cluster_call(c, sh, on_receipt, p, (int)AW_ARRAY_LEN(args), args, NULL);
}

typedef struct rc_call {
    cluster_rc_fn fn;
    void *arg;
} rc_call_t;

static void on_isopen(cluster_t *c, redisReply *r, void *ctx)
{
    (void)c;
    rc_call_t *k = ctx;
    k->fn(k->arg, !r || r->type != REDIS_REPLY_INTEGER ? AW_EUNAVAIL
                  : r->integer == 1                    ? AW_OK
                                                       : AW_ENOTFOUND);
    free(k);
}

void cluster_run_open(cluster_t *c, const char *user, const char *run_id, cluster_rc_fn fn,
                      void *arg)
{
    shard_t *sh = cluster_shard_for(c, user);
    rc_call_t *k = malloc(sizeof *k);
    if (!k || !rconn_ready(&sh->cmd)) {
        free(k);
        fn(arg, AW_EUNAVAIL);
        return;
    }
    *k = (rc_call_t){fn, arg};
    const char *args[] = {"isopen", user, run_id};
    cluster_call(c, sh, on_isopen, k, 3, args, NULL);
}

/* ---- shards: handshake, up and down ---- */

static void handshake_next(shard_t *sh);

static void on_handshake(rconn_t *rc, redisReply *r, void *arg)
{
    (void)arg;
    shard_t *sh = rc->owner;
    if (!r) {
        rconn_fail(rc, "handshake failed");
        return;
    }
    /* refused access (no or wrong password) fails at once, saying so; other
     * errors of CONFIG (a managed server may rename it) leave durability unknown */
    if (r->type == REDIS_REPLY_ERROR &&
        (sh->hs_step > 0 || strncmp(r->str, "NOAUTH", 6) == 0 ||
         strncmp(r->str, "WRONGPASS", 9) == 0 || strncmp(r->str, "NOPERM", 6) == 0)) {
        rconn_fail(rc, r->str);
        return;
    }
    switch (sh->hs_step) {
    case 0: /* CONFIG GET appendonly appendfsync (may be refused: not durable) */
    {
        const char *ao = "unknown", *af = "unknown";
        if (r->type == REDIS_REPLY_ARRAY)
            for (size_t i = 0; i + 1 < r->elements; i += 2) {
                if (strcmp(r->element[i]->str, "appendonly") == 0)
                    ao = r->element[i + 1]->str;
                else if (strcmp(r->element[i]->str, "appendfsync") == 0)
                    af = r->element[i + 1]->str;
            }
        snprintf(sh->durability, sizeof sh->durability, "appendonly=%s appendfsync=%s", ao, af);
        sh->durable = strcmp(ao, "yes") == 0 && strcmp(af, "always") == 0;
        break;
    }
    case 1: /* INFO server: run_id changes with every start of the server */
    {
        const char *id = r->type == REDIS_REPLY_STRING ? strstr(r->str, "run_id:") : NULL;
        if (!id) {
            rconn_fail(rc, "INFO gave no run_id");
            return;
        }
        snprintf(sh->era, sizeof sh->era, "%.40s", id + 7);
        if (sh->durable)
            sh->era[0] = '\0';
        break;
    }
    case 2: /* SCRIPT LOAD */
        if (r->type != REDIS_REPLY_STRING) {
            rconn_fail(rc, r->type == REDIS_REPLY_ERROR ? r->str : "SCRIPT LOAD failed");
            return;
        }
        snprintf(sh->sha, sizeof sh->sha, "%s", r->str);
        break;
    }
    sh->hs_step++;
    handshake_next(sh);
}

static void handshake_next(shard_t *sh)
{
    rconn_t *rc = &sh->cmd;
    int rcode = AW_OK;
    if (sh->hs_step == 0) {
        const char *argv[] = {"CONFIG", "GET", "append*"};
        size_t lens[] = {6, 3, 7};
        rcode = rconn_handshake_command(rc, on_handshake, NULL, 3, argv, lens);
    } else if (sh->hs_step == 1) {
        const char *argv[] = {"INFO", "server"};
        size_t lens[] = {4, 6};
        rcode = rconn_handshake_command(rc, on_handshake, NULL, 2, argv, lens);
    } else if (sh->hs_step == 2) {
        const char *argv[] = {"SCRIPT", "LOAD", (const char *)cluster_lua};
        size_t lens[] = {6, 4, sizeof cluster_lua};
        rcode = rconn_handshake_command(rc, on_handshake, NULL, 3, argv, lens);
    } else {
        rconn_set_ready(rc);
        log_kv(sh->durable ? LOG_INFO : LOG_WARN, "redis shard ready", "#shard",
               (long long)sh->index, "durability", sh->durability, "acknowledged_events",
               sh->durable ? "survive a Redis restart"
                           : "may be lost by a Redis restart: streams then start a new epoch",
               NULL);
        /* connections and users waiting on this shard */
        if (!rconn_ready(&sh->sub))
            rconn_fail(&sh->sub, "made again with the commands connection");
    }
    if (rcode != AW_OK)
        rconn_fail(rc, "handshake failed");
}

static void on_cmd_connected(rconn_t *rc)
{
    shard_t *sh = rc->owner;
    sh->hs_step = 0;
    handshake_next(sh);
}

/* The channels' connection: a PING proves it may be used (password). */
static void on_sub_ping(rconn_t *rc, redisReply *r, void *arg)
{
    (void)arg;
    if (!r || r->type == REDIS_REPLY_ERROR)
        rconn_fail(rc, r ? r->str : "PING failed");
    else
        rconn_set_ready(rc);
}

static void on_sub_connected(rconn_t *rc)
{
    const char *argv[] = {"PING"};
    size_t lens[] = {4};
    if (rconn_handshake_command(rc, on_sub_ping, NULL, 1, argv, lens) != AW_OK)
        rconn_fail(rc, "handshake failed");
}

static void on_cmd_down(rconn_t *rc)
{
    shard_t *sh = rc->owner;
    rconn_fail(&sh->sub, "the commands connection is down");
}

static void on_sub_down(rconn_t *rc)
{
    shard_t *sh = rc->owner;
    cluster_streams_shard_down(sh);
}

/* ---- setup ---- */

static const broker_ops_t redis_ops;

int cluster_init(cluster_t **out, uv_loop_t *loop, const config_t *cfg, hub_t *hub, metrics_t *m,
                 char *err, size_t errlen)
{
    cluster_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return AW_ENOMEM;
    }
    c->loop = loop;
    c->broker = (broker_t){&redis_ops, c};
    c->cfg = cfg;
    c->hub = hub;
    c->m = m;
    map_init(&c->users);
    map_init(&c->pres);
    map_init(&c->asked);
    uv_timer_init(loop, &c->pres_timer);
    c->pres_timer.data = c;
    uint8_t raw[8];
    aw_random_bytes(raw, sizeof raw);
    aw_hex(c->eid_prefix, raw, 4);
    if (cfg->node_id) {
        size_t n = strlen(cfg->node_id);
        bool ok = n >= 1 && n <= 64;
        for (size_t i = 0; ok && i < n; i++)
            ok = (cfg->node_id[i] >= 'a' && cfg->node_id[i] <= 'z') ||
                 (cfg->node_id[i] >= 'A' && cfg->node_id[i] <= 'Z') ||
                 (cfg->node_id[i] >= '0' && cfg->node_id[i] <= '9') ||
                 strchr("_.-", cfg->node_id[i]);
        if (!ok) {
            snprintf(err, errlen, "--node-id: expected 1 to 64 of A-Z a-z 0-9 _ . -");
            cluster_free(c);
            return AW_EINVAL;
        }
        snprintf(c->node, sizeof c->node, "%s", cfg->node_id);
    } else {
        char hex[17];
        aw_hex(hex, raw, sizeof raw);
        snprintf(c->node, sizeof c->node, "n_%s", hex);
    }
    /* the shard list */
    char *list = strdup(cfg->redis);
    int n = 1;
    for (const char *p = cfg->redis; *p; p++)
        n += *p == ',';
    if (n > 256) { /* a ticket names its shard in two hex digits */
        snprintf(err, errlen, "--redis: at most 256 shards");
        free(list);
        cluster_free(c);
        return AW_EINVAL;
    }
    c->shards = calloc((size_t)n, sizeof *c->shards);
    if (!list || !c->shards) {
        free(list);
        snprintf(err, errlen, "out of memory");
        cluster_free(c);
        return AW_ENOMEM;
    }
    char *save = NULL;
    for (char *url = strtok_r(list, ",", &save); url; url = strtok_r(NULL, ",", &save)) {
        shard_t *sh = &c->shards[c->nshards];
        char host[256], *password;
        int port;
        if (rconn_parse_url(url, host, sizeof host, &port, &password, err, errlen) != AW_OK) {
            free(list);
            cluster_free(c);
            return AW_EINVAL;
        }
        sh->c = c;
        sh->index = c->nshards++;
        sh->cmd.owner = sh->sub.owner = sh;
        sh->cmd.on_connected = on_cmd_connected;
        sh->cmd.on_down = on_cmd_down;
        sh->sub.subscriber = true;
        sh->sub.on_connected = on_sub_connected;
        sh->sub.on_message = cluster_on_message;
        sh->sub.on_subscribed = cluster_on_subscribed;
        sh->sub.on_down = on_sub_down;
        rconn_start(&sh->cmd, loop, host, port, password, cfg->redis_timeout_ms);
        rconn_start(&sh->sub, loop, host, port, password, cfg->redis_timeout_ms);
        free(password);
    }
    free(list);
    if (c->nshards == 0) {
        snprintf(err, errlen, "--redis: no URL given");
        cluster_free(c);
        return AW_EINVAL;
    }
    log_kv(LOG_INFO, "cluster mode", "node", c->node, "#shards", (long long)c->nshards, NULL);
    *out = c;
    return AW_OK;
}

const char *cluster_node_id(const cluster_t *c)
{
    return c->node;
}

void cluster_stop(cluster_t *c)
{
    uv_close((uv_handle_t *)&c->pres_timer, NULL);
    for (int i = 0; i < c->nshards; i++) {
        rconn_stop(&c->shards[i].cmd);
        rconn_stop(&c->shards[i].sub);
    }
}

void cluster_free(cluster_t *c)
{
    if (!c)
        return;
    map_dispose(&c->users, cluster_cuser_free);
    map_dispose(&c->pres, NULL);
    map_dispose(&c->asked, NULL);
    free(c->shards);
    free(c);
}

bool cluster_user_available(const cluster_t *c, const char *user)
{
    const shard_t *sh = cluster_shard_for(c, user);
    return rconn_ready(&sh->cmd) && rconn_ready(&sh->sub);
}

bool cluster_ready(const cluster_t *c, char *why, size_t whylen)
{
    for (int i = 0; i < c->nshards; i++) {
        const shard_t *sh = &c->shards[i];
        const rconn_t *bad = !rconn_ready(&sh->cmd)   ? &sh->cmd
                             : !rconn_ready(&sh->sub) ? &sh->sub
                                                      : NULL;
        if (bad) {
            snprintf(why, whylen, "redis shard %d not ready: %s", i, bad->error);
            return false;
        }
    }
    snprintf(why, whylen, "ready");
    return true;
}

static json_t *b_describe(broker_t *b)
{
    cluster_t *c = b->impl;
    json_t *list = json_array();
    for (int i = 0; i < c->nshards; i++) {
        const shard_t *sh = &c->shards[i];
        bool up = rconn_ready(&sh->cmd) && rconn_ready(&sh->sub);
        json_array_append_new(
            list, json_pack("{s:i, s:s, s:i, s:b, s:b, s:s, s:s}", "shard", i, "host", sh->cmd.host,
                            "port", sh->cmd.port, "ready", up, "durable", sh->durable, "durability",
                            sh->durability, "error",
                            up ? "" : (!rconn_ready(&sh->cmd) ? sh->cmd.error : sh->sub.error)));
    }
    return json_pack("{s:s, s:s, s:o}", "broker", "redis", "node", c->node, "shards", list);
}

/* ---- the tick ---- */

void cluster_tick(cluster_t *c, int64_t now)
{
    cluster_presence_tick(c, now);
    cluster_streams_tick(c, now);
    if (now >= c->next_reap) {
        c->next_reap = now + 1000;
        cluster_reap_tick(c, now);
        for (int i = 0; i < c->nshards; i++)
            if (rconn_ready(&c->shards[i].sub))
                cluster_streams_resubscribe(&c->shards[i]);
    }
}

/* ---- the broker interface ---- */

static bool b_available(broker_t *b, const char *user)
{
    return cluster_user_available(b->impl, user);
}

static bool b_ready(broker_t *b, char *why, size_t whylen)
{
    return cluster_ready(b->impl, why, whylen);
}

static void b_publish(broker_t *b, broker_pub_t *items, size_t n, broker_receipt_fn fn)
{
    cluster_publish(b->impl, items, n, fn);
}

static void b_acquire(broker_t *b, const char *user, broker_ready_fn fn, void *arg)
{
    cluster_presence_changed(b->impl, user);
    cluster_user_acquire(b->impl, user, fn, arg);
}

static void b_catch_up(broker_t *b, const char *user, broker_ready_fn fn, void *arg)
{
    cluster_user_catch_up(b->impl, user, fn, arg);
}

static void b_release(broker_t *b, const char *user)
{
    cluster_presence_changed(b->impl, user);
    cluster_user_release(b->impl, user);
}

static void b_connections(broker_t *b, const char *user, broker_list_fn fn, void *arg)
{
    cluster_connections(b->impl, user, fn, arg);
}

static void b_disconnect(broker_t *b, const char *user, broker_list_fn fn, void *arg)
{
    cluster_disconnect(b->impl, user, fn, arg);
}

static void b_history(broker_t *b, const char *user, uint64_t since, broker_history_fn fn,
                      void *arg)
{
    cluster_history(b->impl, user, since, fn, arg);
}

static void b_run_open(broker_t *b, const char *user, const char *run_id, broker_rc_fn fn,
                       void *arg)
{
    cluster_run_open(b->impl, user, run_id, fn, arg);
}

static void b_run_finish(broker_t *b, const char *user, const char *run_id, const char *status,
                         const char *error, broker_receipt_fn fn, void *arg)
{
    cluster_finish_run(b->impl, user, run_id, status, error, fn, arg);
}

static const broker_ops_t redis_ops = {
    .name = "redis",
    .available = b_available,
    .ready = b_ready,
    .describe = b_describe,
    .publish = b_publish,
    .acquire = b_acquire,
    .release = b_release,
    .catch_up = b_catch_up,
    .connections = b_connections,
    .disconnect = b_disconnect,
    .history = b_history,
    .ticket_issue = cluster_ticket_issue,
    .ticket_peek = cluster_ticket_peek,
    .ticket_take = cluster_ticket_take,
    .run_open = b_run_open,
    .run_finish = b_run_finish,
};

broker_t *cluster_broker(cluster_t *c)
{
    return &c->broker;
}

/* ---- metrics ---- */

void cluster_metrics(cluster_t *c, FILE *f)
{
    fprintf(f, "# HELP agentwire_redis_up Whether the shard's connections are ready.\n"
               "# TYPE agentwire_redis_up gauge\n");
    for (int i = 0; i < c->nshards; i++)
        fprintf(f, "agentwire_redis_up{shard=\"%d\"} %d\n", i,
                rconn_ready(&c->shards[i].cmd) && rconn_ready(&c->shards[i].sub));
    fprintf(f, "# HELP agentwire_redis_durable Whether the shard keeps acknowledged events over "
               "its restart (appendfsync always).\n# TYPE agentwire_redis_durable gauge\n");
    for (int i = 0; i < c->nshards; i++)
        fprintf(f, "agentwire_redis_durable{shard=\"%d\"} %d\n", i, c->shards[i].durable);
    fprintf(f, "# HELP agentwire_redis_commands_total Commands answered.\n"
               "# TYPE agentwire_redis_commands_total counter\n");
    for (int i = 0; i < c->nshards; i++)
        fprintf(f, "agentwire_redis_commands_total{shard=\"%d\"} %llu\n", i,
                (unsigned long long)c->shards[i].cmd.rtt_count);
    fprintf(f, "# HELP agentwire_redis_rtt_seconds_sum Round trips of answered commands.\n"
               "# TYPE agentwire_redis_rtt_seconds_sum counter\n");
    for (int i = 0; i < c->nshards; i++)
        fprintf(f, "agentwire_redis_rtt_seconds_sum{shard=\"%d\"} %.6f\n", i,
                (double)c->shards[i].cmd.rtt_us_sum / 1e6);
    fprintf(f, "# HELP agentwire_redis_rtt_max_seconds Longest round trip since the last "
               "scrape.\n# TYPE agentwire_redis_rtt_max_seconds gauge\n");
    for (int i = 0; i < c->nshards; i++) {
        fprintf(f, "agentwire_redis_rtt_max_seconds{shard=\"%d\"} %.6f\n", i,
                (double)c->shards[i].cmd.rtt_us_max / 1e6);
        c->shards[i].cmd.rtt_us_max = 0;
    }
    fprintf(f, "# HELP agentwire_redis_errors_total Commands that failed or timed out.\n"
               "# TYPE agentwire_redis_errors_total counter\n");
    for (int i = 0; i < c->nshards; i++)
        fprintf(f, "agentwire_redis_errors_total{shard=\"%d\"} %llu\n", i,
                (unsigned long long)(c->shards[i].cmd.errors + c->shards[i].sub.errors));
    fprintf(f, "# HELP agentwire_redis_reconnects_total Connections made again.\n"
               "# TYPE agentwire_redis_reconnects_total counter\n");
    for (int i = 0; i < c->nshards; i++)
        fprintf(f, "agentwire_redis_reconnects_total{shard=\"%d\"} %llu\n", i,
                (unsigned long long)(c->shards[i].cmd.reconnects + c->shards[i].sub.reconnects));
    fprintf(f,
            "# HELP agentwire_redis_subscriptions Users' channels this node listens to.\n"
            "# TYPE agentwire_redis_subscriptions gauge\nagentwire_redis_subscriptions %llu\n"
            "# HELP agentwire_stream_gaps_filled_total Gaps on a channel filled from the "
            "shard.\n# TYPE agentwire_stream_gaps_filled_total counter\n"
            "agentwire_stream_gaps_filled_total %llu\n"
            "# HELP agentwire_stream_resets_total Streams that changed epoch under open "
            "connections.\n# TYPE agentwire_stream_resets_total counter\n"
            "agentwire_stream_resets_total %llu\n",
            (unsigned long long)c->subscriptions, (unsigned long long)c->gaps_filled,
            (unsigned long long)c->resets);
}
