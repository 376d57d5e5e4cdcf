/* api.c -- routes and handlers of the HTTP API. Events enter the hub through
 * hub_publish only; this file never touches a session other than the one
 * that asked (except through hub_disconnect_user). The API key is compared in
 * constant time; a user's JWT is accepted only by POST /api/v1/tickets. */
#include "api.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "aw.h"
#include "bigstr.h"
#include "cluster.h"
#include "event.h"
#include "jalloc.h"
#include "jwks.h"
#include "lock.h"
#include "log.h"
#include "server.h"
#include "stored.h"
#include "web.h"

#define BATCH_MAX 1000

static void respond_error(session_t *s, int status, enum metrics_error code, const char *msg)
{
    s->srv->metrics.errors[code]++;
    session_respond_error(s, status, metrics_error_name(code), msg);
}

/* 503 unavailable with Retry-After: the stream's home did not answer (the
 * request may be retried; a publish exactly, with its idempotency key). */
static void respond_unavailable(session_t *s, const char *msg, bool counted)
{
    if (!counted)
        s->srv->metrics.errors[ERR_UNAVAILABLE]++;
    json_t *body = json_pack("{s:s, s:s}", "error", "unavailable", "message", msg);
    char *text = body ? jalloc_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text) {
        session_abort(s, "out of memory");
        return;
    }
    session_respond(s, 503, "application/json", text, strlen(text), "Retry-After: 1\r\n");
    free(text);
}

static bool api_key_ok(server_t *srv, const http_request_t *req)
{
    const char *tok = auth_bearer(http_header(req, "Authorization"));
    const char *key = srv->cfg->api_key;
    return tok && aw_consttime_eq(tok, strlen(tok), key, strlen(key));
}

/* Bodies this large are parsed without the shared lock (a batch of 1000
 * events: about a third of its time under the lock); smaller ones parse in
 * less time than letting go of the lock and taking it again costs. */
#define UNLOCKED_PARSE_MIN 8192

/* Parses the request body; its long strings stay undecoded in lits
 * (bigstr.h), which the hub splices back when it serializes. The body, lits
 * and the parsed tree are this request's own, so a large body is parsed
 * without the shared lock: other loops publish meanwhile. */
static json_t *parse_body(session_t *s, const http_request_t *req, bigstr_t *lits)
{
    json_error_t jerr;
    int depth = req->body_len >= UNLOCKED_PARSE_MIN ? aw_lock_suspend() : 0;
    json_t *body = bigstr_loadb(lits, req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
    aw_lock_resume(depth);
    if (!body) {
        char msg[200];
        snprintf(msg, sizeof msg, "body is not JSON: %s", jerr.text);
        respond_error(s, 400, ERR_INVALID_JSON, msg);
    }
    return body;
}

static json_t *receipt_json(const hub_receipt_t *r)
{
    return json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)r->seq, "epoch", r->epoch, "event_id",
                     r->event_id);
}

/* ---- publishing: the broker answers, now (memory) or on a later loop turn (Redis) ---- */

typedef struct pub_wait {
    session_wait_t base; /* first: the session, NULL once it is gone */
    json_t *results;     /* one receipt or error per event */
    struct pub_slot *slots;
    size_t pending; /* answers still to come */
    bool batch;
    server_t *srv;
} pub_wait_t;

typedef struct pub_slot {
    pub_wait_t *w;
    size_t index;
    char user[EVENT_MAX_ID + 1];
    char idem[IDEM_MAX_KEY + 1];
} pub_slot_t;

static json_t *error_json(server_t *srv, int status, enum metrics_error code, const char *msg)
{
    srv->metrics.errors[code]++;
    return json_pack("{s:s, s:s, s:i}", "error", metrics_error_name(code), "message", msg, "status",
                     status);
}

static void pub_answer(pub_wait_t *w)
{
    session_t *s = w->base.s;
    if (s) {
        size_t i, down = 0;
        json_t *item;
        json_array_foreach(w->results, i, item) down +=
            json_integer_value(json_object_get(item, "status")) == 503;
        if (w->batch && down > 0 && down == json_array_size(w->results)) {
            respond_unavailable(s, "the Redis shards of these events did not answer",
                                true); /* each event's error is counted */
        } else if (w->batch) {
            session_respond_json(s, 200, w->results);
        } else {
            json_t *r = json_array_get(w->results, 0);
            json_t *st = json_object_get(r, "status");
            if (!st) {
                session_respond_json(s, 200, r);
            } else {
                int status = (int)json_integer_value(st);
                json_object_del(r, "status");
                char *text = jalloc_dumps(r, JSON_COMPACT);
                session_respond(s, status, "application/json", text, text ? strlen(text) : 0,
                                status == 503 ? "Retry-After: 1\r\n" : NULL);
                free(text);
            }
        }
    }
    json_decref(w->results);
    free(w->slots);
    session_http_release(&w->base);
}

static void pub_done(pub_wait_t *w)
{
    if (--w->pending == 0)
        pub_answer(w);
}

static void on_receipt(void *arg, int rc, const hub_receipt_t *r)
{
    pub_slot_t *slot = arg;
    pub_wait_t *w = slot->w;
    json_t *out = rc == AW_OK          ? receipt_json(r)
                  : rc == AW_EINVAL    ? error_json(w->srv, 422, ERR_INVALID_EVENT, r->error)
                  : rc == AW_ECONFLICT ? error_json(w->srv, 409, ERR_RUN_ORDER, r->error)
                                       : error_json(w->srv, 503, ERR_UNAVAILABLE,
                                                    rc == AW_ENOMEM ? "out of memory" : r->error);
    json_array_set_new(w->results, slot->index, out);
    pub_done(w);
}

/* Publishes the events of arr (or the one event) through the broker and
 * answers when every one has its answer. */
static void publish_all(session_t *s, json_t *events, bool batch, const char *idem_header)
{
    server_t *srv = s->srv;
    size_t n = json_array_size(events);
    pub_wait_t *w = (pub_wait_t *)session_http_hold(s, sizeof *w);
    pub_slot_t *slots = w ? calloc(n ? n : 1, sizeof *slots) : NULL;
    broker_pub_t *items = slots ? calloc(n ? n : 1, sizeof *items) : NULL;
    if (!items) {
        free(slots);
        if (w)
            session_http_release(&w->base);
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        return;
    }
    w->results = json_array();
    w->slots = slots;
    w->batch = batch;
    w->srv = srv;
    w->pending = n + 1; /* answers may come before this returns */
    for (size_t i = 0; i < n; i++)
        json_array_append_new(w->results, json_null());
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *ev = json_array_get(events, i);
        pub_slot_t *slot = &slots[i];
        slot->w = w;
        slot->index = i;
        hub_receipt_t r = {0};
        if (!json_is_object(ev)) {
            snprintf(r.error, sizeof r.error, "an event must be a JSON object");
            on_receipt(slot, AW_EINVAL, &r);
            continue;
        }
        const char *user = json_string_value(json_object_get(ev, "user_id"));
        if (!event_id_valid(user)) {
            snprintf(r.error, sizeof r.error, "user_id (the target) is required");
            on_receipt(slot, AW_EINVAL, &r);
            continue;
        }
        json_t *key = json_object_get(ev, "idempotency_key");
        const char *idem = idem_header;
        if (key) {
            idem = json_string_value(key);
            if (!idem || !*idem || strlen(idem) > IDEM_MAX_KEY) {
                snprintf(r.error, sizeof r.error,
                         "idempotency_key must be a string of 1 to 255 bytes");
                on_receipt(slot, AW_EINVAL, &r);
                continue;
            }
        }
        /* copies: publishing drops user_id (the envelope's) and the key */
        snprintf(slot->user, sizeof slot->user, "%s", user);
        snprintf(slot->idem, sizeof slot->idem, "%s", idem ? idem : "");
        json_object_del(ev, "idempotency_key");
        items[m++] = (broker_pub_t){
            .user = slot->user, .ev = ev, .idem = idem ? slot->idem : NULL, .arg = slot};
    }
    broker_publish(srv->broker, items, m, on_receipt);
    free(items);
    pub_done(w);
}

typedef struct list_wait {
    session_wait_t base;
    char user[EVENT_MAX_ID * 3 + 1]; /* as the route decoded it */
    bool kick;
} list_wait_t;

static void on_user_list(void *arg, int rc, json_t *list)
{
    list_wait_t *w = arg;
    session_t *s = w->base.s;
    if (s && rc != AW_OK) {
        respond_unavailable(s, "the user's stream did not answer", false);
    } else if (s) {
        json_t *body = w->kick ? json_pack("{s:s, s:I}", "user_id", w->user, "disconnected",
                                           (json_int_t)json_array_size(list))
                               : json_pack("{s:s, s:O}", "user_id", w->user, "connections", list);
        if (w->kick)
            log_kv(LOG_INFO, "kick", "user", w->user, "#connections",
                   (long long)json_array_size(list), NULL);
        session_respond_json(s, 200, body);
        json_decref(body);
    }
    session_http_release(&w->base);
}

/* GET .../connections and POST .../disconnect: every node's connections. */
static void list_user(session_t *s, const char *user, bool kick)
{
    list_wait_t *w = (list_wait_t *)session_http_hold(s, sizeof *w);
    if (!w) {
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        return;
    }
    snprintf(w->user, sizeof w->user, "%s", user);
    w->kick = kick;
    (kick ? broker_disconnect : broker_connections)(s->srv->broker, user, on_user_list, w);
}

typedef struct hist_wait {
    session_wait_t base;
    char user[EVENT_MAX_ID * 3 + 1];
} hist_wait_t;

static void on_history_read(void *arg, int rc, const char *epoch, uint64_t seq, uint64_t first,
                            const char *const *events, const size_t *lens, size_t n)
{
    hist_wait_t *w = arg;
    session_t *s = w->base.s;
    if (s && rc != AW_OK) {
        respond_unavailable(s, "the user's stream did not answer", false);
    } else if (s) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        json_t *head = json_pack("{s:s, s:o, s:I, s:I}", "user_id", w->user, "epoch",
                                 epoch ? json_string(epoch) : json_null(), "seq", (json_int_t)seq,
                                 "first_seq", (json_int_t)first);
        char *text = head ? jalloc_dumps(head, JSON_COMPACT) : NULL;
        json_decref(head);
        if (f && text) {
            fprintf(f, "%.*s,\"events\":[", (int)(strlen(text) - 1), text);
            for (size_t i = 0; i < n; i++) {
                if (i)
                    fputc(',', f);
                fwrite(events[i], 1, lens[i], f);
            }
            fputs("]}", f);
        }
        free(text);
        if (f)
            fclose(f);
        if (buf)
            session_respond(s, 200, "application/json", buf, len, NULL);
        else
            respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        free(buf);
    }
    session_http_release(&w->base);
}

static void on_publish(session_t *s, const http_request_t *req)
{
    bigstr_t lits = {0};
    json_t *ev = parse_body(s, req, &lits);
    if (!ev) {
        bigstr_free(&lits);
        return;
    }
    const char *idem = http_header(req, "Idempotency-Key");
    if (idem && (!*idem || strlen(idem) > IDEM_MAX_KEY)) {
        respond_error(s, 400, ERR_BAD_REQUEST, "Idempotency-Key must be 1 to 255 bytes");
        json_decref(ev);
        bigstr_free(&lits);
        return;
    }
    json_t *one = json_pack("[o]", ev);
    s->srv->hub.literals = &lits;
    if (one)
        publish_all(s, one, false, idem);
    else
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
    s->srv->hub.literals = NULL;
    json_decref(one);
    bigstr_free(&lits);
}

static void on_batch(session_t *s, const http_request_t *req)
{
    bigstr_t lits = {0};
    json_t *arr = parse_body(s, req, &lits);
    if (!arr || !json_is_array(arr) || json_array_size(arr) > BATCH_MAX) {
        if (arr)
            respond_error(s, json_is_array(arr) ? 413 : 422,
                          json_is_array(arr) ? ERR_TOO_LARGE : ERR_INVALID_EVENT,
                          "a batch is a JSON array of at most 1000 events");
        json_decref(arr);
        bigstr_free(&lits);
        return;
    }
    s->srv->hub.literals = &lits;
    publish_all(s, arr, true, NULL);
    s->srv->hub.literals = NULL;
    json_decref(arr);
    bigstr_free(&lits);
}

static void on_connections(session_t *s, const char *user)
{
    list_user(s, user, false);
}

static void on_disconnect(session_t *s, const char *user)
{
    list_user(s, user, true);
}

typedef struct ticket_wait {
    session_wait_t base;
    int64_t expires;
} ticket_wait_t;

static void on_ticket_issued(void *arg, int rc, const char *id)
{
    ticket_wait_t *w = arg;
    session_t *s = w->base.s;
    if (s && rc == AW_ELIMIT) {
        respond_error(s, 429, ERR_TOO_MANY_TICKETS,
                      "too many unused tickets; use or let expire the ones issued");
    } else if (s && rc != AW_OK) {
        respond_unavailable(s, "cannot issue a ticket now", false);
    } else if (s) {
        json_t *body = json_pack("{s:s, s:I}", "ticket", id, "expires_at", (json_int_t)w->expires);
        session_respond_json(s, 200, body);
        json_decref(body);
    }
    session_http_release(&w->base);
}

static void on_ticket(session_t *s, const http_request_t *req)
{
    server_t *srv = s->srv;
    const char *tok = auth_bearer(http_header(req, "Authorization"));
    auth_result_t r;
    if (!tok || auth_token(&srv->jwt, tok, strlen(tok), aw_now_ms(), &r) != AW_OK) {
        respond_error(s, 401, ERR_UNAUTHORIZED, "a ticket needs the user's JWT as Bearer");
        return;
    }
    int64_t now = aw_now_ms();
    int64_t expires = now + srv->cfg->ticket_ttl_ms;
    int64_t token_exp = r.expires_ms - srv->jwt.leeway_s * 1000;
    if (token_exp <= now) { /* accepted within the leeway, but a ticket could never be used */
        respond_error(s, 401, ERR_UNAUTHORIZED, "the token has expired");
        return;
    }
    ticket_wait_t *w = (ticket_wait_t *)session_http_hold(s, sizeof *w);
    if (!w) {
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        return;
    }
    w->expires = expires < token_exp ? expires : token_exp;
    broker_ticket_issue(srv->broker, r.user, w->expires, token_exp, on_ticket_issued, w);
}

/* GET /api/v1/history?user_id=&since=: the retained events, as the very
 * bytes that were sent, joined into one JSON document without re-parsing. */
static void on_history(session_t *s, const http_request_t *req)
{
    char user[EVENT_MAX_ID + 1], since_text[32];
    if (http_query_get(req->query, "user_id", user, sizeof user) != AW_OK ||
        !event_id_valid(user)) {
        respond_error(s, 422, ERR_INVALID_EVENT, "user_id is required");
        return;
    }
    uint64_t since = 0;
    int rc = http_query_get(req->query, "since", since_text, sizeof since_text);
    if (rc == AW_OK) {
        char *end;
        since = strtoull(since_text, &end, 10);
        if (end == since_text || *end || since_text[0] == '-' || since == UINT64_MAX) {
            respond_error(s, 422, ERR_INVALID_EVENT, "since must be a non-negative integer");
            return;
        }
    } else if (rc != AW_ENOTFOUND) {
        respond_error(s, 422, ERR_INVALID_EVENT, "since must be a non-negative integer");
        return;
    }
    hist_wait_t *w = (hist_wait_t *)session_http_hold(s, sizeof *w);
    if (!w) {
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        return;
    }
    snprintf(w->user, sizeof w->user, "%s", user);
    broker_history(s->srv->broker, user, since, on_history_read, w);
}

/* POST /api/v1/dev/token {"name"}: a user token for the demo page, in
 * development mode only (the server made its secret up and printed it). */
static void on_dev_token(session_t *s, const http_request_t *req)
{
    const config_t *cfg = s->srv->cfg;
    if (!cfg->dev_mode) {
        respond_error(s, 404, ERR_NOT_FOUND, "only in development mode");
        return;
    }
    bigstr_t lits = {0};
    json_t *body = parse_body(s, req, &lits);
    bigstr_free(&lits); /* a long name is refused below: it reads as a placeholder */
    if (!body)
        return;
    const char *name = json_string_value(json_object_get(body, "name"));
    size_t n = name ? strlen(name) : 0;
    bool ok = n >= 1 && n <= 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)name[i]) || strchr("_.-", name[i]);
    if (!ok) {
        respond_error(s, 400, ERR_BAD_REQUEST, "name must be 1 to 64 of A-Z a-z 0-9 _ . -");
        json_decref(body);
        return;
    }
    int64_t exp_s = aw_now_ms() / 1000 + 3600;
    char claims[160], token[1024];
    snprintf(claims, sizeof claims, "{\"sub\":\"%s\",\"exp\":%lld}", name, (long long)exp_s);
    if (jwt_sign_hs256(token, sizeof token, cfg->jwt_secret, strlen(cfg->jwt_secret), claims) !=
        AW_OK) {
        respond_error(s, 503, ERR_UNAVAILABLE, "cannot sign a token");
        json_decref(body);
        return;
    }
    json_t *out = json_pack("{s:s, s:s, s:I}", "token", token, "user_id", name, "expires_at",
                            (json_int_t)exp_s * 1000);
    session_respond_json(s, 200, out);
    json_decref(out);
    json_decref(body);
}

static void on_metrics(session_t *s)
{
    server_t *srv = s->srv;
    size_t len;
    const hub_t *h = &srv->hub;
    metrics_gauges_t g = {
        .connections = h->nconns,
        .users = h->nusers_live,
        .streams = hub_nstreams(h),
        .history_events = h->history.entries,
        .history_bytes = h->history.bytes + h->history.extra,
        .history_evicted = h->history.evicted,
        .streams_dropped = h->streams_dropped,
        .tickets = srv->tickets._map.count,
        .idempotency_keys = srv->idem._map.count,
        .body_bytes = srv->body_bytes_in_flight,
    };
    server_sum_counters(srv);
    char *text = metrics_render(&srv->metrics, &g, &len);
    if (text && (srv->cluster || srv->durable || srv->jwks)) { /* more modules' lines follow */
        char *all = NULL;
        size_t alen = 0;
        FILE *f = open_memstream(&all, &alen);
        if (f) {
            fwrite(text, 1, len, f);
            if (srv->cluster)
                cluster_metrics(srv->cluster, f);
            stored_metrics(srv, f);
            if (srv->jwks)
                jwks_metrics(srv->jwks, f);
            fclose(f);
        }
        free(text);
        text = all;
        len = alen;
    }
    if (!text) {
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        return;
    }
    session_respond(s, 200, "text/plain; version=0.0.4", text, len, NULL);
    free(text);
}

/* /readyz: 200 when this node can serve (not draining, its broker's
 * shards answering), 503 with the reason otherwise; in cluster mode the
 * shards' state and durability follow. */
static void on_readyz(session_t *s)
{
    char why[256];
    bool ready = !s->srv->draining && broker_ready(s->srv->broker, why, sizeof why);
    json_t *detail = broker_describe(s->srv->broker);
    if (s->srv->jwks) { /* the keys: stale ones still verify, so ready stays as it is */
        if (!detail)
            detail = json_object();
        if (detail)
            json_object_set_new(detail, "jwks", jwks_describe(s->srv->jwks));
    }
    if (!detail) {
        if (ready)
            session_respond(s, 200, "application/json", "{\"status\":\"ready\"}", 18, NULL);
        else
            respond_error(s, 503, ERR_UNAVAILABLE, s->srv->draining ? "draining" : why);
        return;
    }
    if (ready) {
        json_object_set_new(detail, "status", json_string("ready"));
    } else {
        s->srv->metrics.errors[ERR_UNAVAILABLE]++;
        json_object_set_new(detail, "error", json_string("unavailable"));
        json_object_set_new(detail, "message", json_string(s->srv->draining ? "draining" : why));
    }
    session_respond_json(s, ready ? 200 : 503, detail);
    json_decref(detail);
}

/* Matches "/api/v1/users/{id}/<action>"; writes the decoded id. */
static const char *user_route(const char *path, char *user, size_t ulen)
{
    static const char prefix[] = "/api/v1/users/";
    if (strncmp(path, prefix, sizeof prefix - 1) != 0)
        return NULL;
    const char *id = path + sizeof prefix - 1, *slash = strchr(id, '/');
    if (!slash || slash == id || (size_t)(slash - id) >= ulen)
        return NULL;
    int n = http_path_decode(user, id, (size_t)(slash - id));
    if (n <= 0 || !event_id_valid(user))
        return NULL;
    return slash + 1;
}

/* The routes of /api/v1/: the method each takes, and whether it is
 * authenticated by its own means (a user's JWT, development mode) instead of
 * the API key. One table for the head check and for the dispatch. */
enum route_id {
    R_TICKETS,
    R_DEV_TOKEN,
    R_PUBLISH,
    R_BATCH,
    R_HISTORY,
    R_CONNECTIONS,
    R_DISCONNECT
};

static const struct route {
    const char *name; /* the path, or the action of /api/v1/users/{id}/<action> */
    bool per_user;
    enum http_method method;
    bool keyless;
} routes[] = {
    [R_TICKETS] = {"/api/v1/tickets", false, HTTP_POST, true},
    [R_DEV_TOKEN] = {"/api/v1/dev/token", false, HTTP_POST, true},
    [R_PUBLISH] = {"/api/v1/publish", false, HTTP_POST, false},
    [R_BATCH] = {"/api/v1/publish/batch", false, HTTP_POST, false},
    [R_HISTORY] = {"/api/v1/history", false, HTTP_GET, false},
    [R_CONNECTIONS] = {"connections", true, HTTP_GET, false},
    [R_DISCONNECT] = {"disconnect", true, HTTP_POST, false},
};

/* The route of path (writing the decoded user id of per-user routes), or -1. */
static int route_find(const char *path, char *user, size_t ulen)
{
    const char *action = user_route(path, user, ulen);
    for (size_t i = 0; i < AW_ARRAY_LEN(routes); i++) {
        const char *want = routes[i].per_user ? action : path;
        if (want && strcmp(want, routes[i].name) == 0)
            return (int)i;
    }
    return -1;
}

/* Checks credential, route and method of a /api/v1/ request: its route, or
 * -1 once answered with 401, 404 or 405. */
static int route_check(session_t *s, const http_request_t *req, char *user, size_t ulen)
{
    int r = route_find(req->path, user, ulen);
    if ((r < 0 || !routes[r].keyless) && !api_key_ok(s->srv, req)) {
        respond_error(s, 401, ERR_UNAUTHORIZED, "missing or wrong API key");
        return -1;
    }
    if (r < 0) {
        respond_error(s, 404, ERR_NOT_FOUND, "no such API route");
        return -1;
    }
    if (req->method != routes[r].method) {
        respond_error(s, 405, ERR_METHOD_NOT_ALLOWED, "method not allowed on this route");
        return -1;
    }
    return r;
}

static void api_v1(session_t *s, const http_request_t *req)
{
    char user[EVENT_MAX_ID * 3 + 1];
    switch (route_check(s, req, user, sizeof user)) {
    case R_TICKETS:
        on_ticket(s, req);
        break;
    case R_DEV_TOKEN:
        on_dev_token(s, req);
        break;
    case R_PUBLISH:
        on_publish(s, req);
        break;
    case R_BATCH:
        on_batch(s, req);
        break;
    case R_HISTORY:
        on_history(s, req);
        break;
    case R_CONNECTIONS:
        on_connections(s, user);
        break;
    case R_DISCONNECT:
        on_disconnect(s, user);
        break;
    default:
        break; /* answered */
    }
}

bool api_admit_body(session_t *s, const http_request_t *req)
{
    char user[EVENT_MAX_ID * 3 + 1];
    int r = -1;
    if (strncmp(req->path, "/api/v1/", 8) == 0 && (r = route_check(s, req, user, sizeof user)) < 0)
        return false;
    if (r < 0 || routes[r].method != HTTP_POST) {
        respond_error(s, 413, ERR_TOO_LARGE, "this route takes no request body");
        return false;
    }
    return true;
}

void api_handle(session_t *s, const http_request_t *req)
{
    const char *p = req->path;
    const web_file_t *file;
    if (strncmp(p, "/api/v1/", 8) == 0) {
        api_v1(s, req);
    } else if (strcmp(p, "/healthz") == 0) {
        session_respond(s, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    } else if (strcmp(p, "/readyz") == 0) {
        on_readyz(s);
    } else if (strcmp(p, "/metrics") == 0) {
        if (s->srv->cfg->metrics_public || api_key_ok(s->srv, req))
            on_metrics(s);
        else
            respond_error(s, 401, ERR_UNAUTHORIZED,
                          "/metrics needs the API key (or --metrics-public on)");
    } else if (req->method == HTTP_GET && (file = web_find(p)) != NULL) {
        session_respond(s, 200, file->content_type, file->data, file->len, NULL);
    } else {
        respond_error(s, 404, ERR_NOT_FOUND, "not found");
    }
}
