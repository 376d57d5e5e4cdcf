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
#include "event.h"
#include "jalloc.h"
#include "log.h"
#include "server.h"
#include "web.h"

#define BATCH_MAX 1000

typedef struct api_error {
    int status;
    enum metrics_error code;
    char message[200];
} api_error_t;

static void respond_error(session_t *s, int status, enum metrics_error code, const char *msg)
{
    s->srv->metrics.errors[code]++;
    session_respond_error(s, status, metrics_error_name(code), msg);
}

static int set_error(api_error_t *e, int status, enum metrics_error code, const char *msg)
{
    e->status = status;
    e->code = code;
    snprintf(e->message, sizeof e->message, "%s", msg);
    return AW_EINVAL;
}

static bool api_key_ok(server_t *srv, const http_request_t *req)
{
    const char *tok = auth_bearer(http_header(req, "Authorization"));
    const char *key = srv->cfg->api_key;
    return tok && aw_consttime_eq(tok, strlen(tok), key, strlen(key));
}

/* Parses the request body; its long strings stay undecoded in lits
 * (bigstr.h), which the hub splices back when it serializes. */
static json_t *parse_body(session_t *s, const http_request_t *req, bigstr_t *lits)
{
    json_error_t jerr;
    json_t *body = bigstr_loadb(lits, req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
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

/* Publishes one event object; on success returns its receipt as JSON. */
static json_t *publish_one(server_t *srv, json_t *ev, const char *idem_header, api_error_t *err)
{
    if (!json_is_object(ev))
        return set_error(err, 422, ERR_INVALID_EVENT, "an event must be a JSON object"), NULL;
    const char *user = json_string_value(json_object_get(ev, "user_id"));
    if (!event_id_valid(user))
        return set_error(err, 422, ERR_INVALID_EVENT, "user_id (the target) is required"), NULL;
    json_t *key = json_object_get(ev, "idempotency_key");
    const char *idem = idem_header;
    if (key) {
        idem = json_string_value(key);
        if (!idem || !*idem || strlen(idem) > IDEM_MAX_KEY)
            return set_error(err, 422, ERR_INVALID_EVENT,
                             "idempotency_key must be a string of 1 to 255 bytes"),
                   NULL;
    }
    int64_t now = aw_now_ms();
    hub_receipt_t prev;
    if (idem && idem_get(&srv->idem, user, idem, now, &prev))
        return receipt_json(&prev);
    char user_copy[EVENT_MAX_ID + 1], idem_copy[IDEM_MAX_KEY + 1];
    snprintf(user_copy, sizeof user_copy, "%s", user);
    snprintf(idem_copy, sizeof idem_copy, "%s", idem ? idem : "");
    json_object_del(ev, "idempotency_key"); /* frees key: use the copies from here */
    hub_receipt_t r;
    int rc = hub_publish(&srv->hub, user_copy, ev, &r);
    if (rc == AW_EINVAL)
        return set_error(err, 422, ERR_INVALID_EVENT, r.error), NULL;
    if (rc == AW_ECONFLICT)
        return set_error(err, 409, ERR_RUN_ORDER, r.error), NULL;
    if (rc != AW_OK)
        return set_error(err, 503, ERR_UNAVAILABLE, "out of memory"), NULL;
    if (idem && idem_put(&srv->idem, user_copy, idem_copy, &r, now) != AW_OK)
        log_kv(LOG_WARN | LOG_LIMITED, "idempotency key not remembered: out of memory", "user",
               user_copy, NULL);
    return receipt_json(&r);
}

static void on_publish(session_t *s, const http_request_t *req)
{
    bigstr_t lits = {0};
    json_t *ev = parse_body(s, req, &lits);
    if (!ev) {
        bigstr_free(&lits);
        return;
    }
    api_error_t err;
    const char *idem = http_header(req, "Idempotency-Key");
    if (idem && (!*idem || strlen(idem) > IDEM_MAX_KEY)) {
        respond_error(s, 400, ERR_BAD_REQUEST, "Idempotency-Key must be 1 to 255 bytes");
        json_decref(ev);
        bigstr_free(&lits);
        return;
    }
    s->srv->hub.literals = &lits;
    json_t *r = publish_one(s->srv, ev, idem, &err);
    s->srv->hub.literals = NULL;
    if (r)
        session_respond_json(s, 200, r);
    else
        respond_error(s, err.status, err.code, err.message);
    json_decref(r);
    json_decref(ev);
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
    json_t *out = json_array();
    size_t i;
    json_t *ev;
    json_array_foreach(arr, i, ev)
    {
        api_error_t err;
        json_t *r = publish_one(s->srv, ev, NULL, &err);
        if (!r) {
            s->srv->metrics.errors[err.code]++;
            r = json_pack("{s:s, s:s, s:i}", "error", metrics_error_name(err.code), "message",
                          err.message, "status", err.status);
        }
        json_array_append_new(out, r);
    }
    s->srv->hub.literals = NULL;
    session_respond_json(s, 200, out);
    json_decref(out);
    json_decref(arr);
    bigstr_free(&lits);
}

static void describe_session(session_t *c, void *arg)
{
    if (c->state != SESSION_OPEN)
        return;
    json_array_append_new(arg, json_pack("{s:s, s:s, s:I}", "connection_id", c->id, "remote_addr",
                                         c->remote, "connected_at", (json_int_t)c->connected_ms));
}

static void on_connections(session_t *s, const char *user)
{
    json_t *list = json_array();
    hub_each_session(&s->srv->hub, user, describe_session, list);
    json_t *body = json_pack("{s:s, s:o}", "user_id", user, "connections", list);
    session_respond_json(s, 200, body);
    json_decref(body);
}

static void on_disconnect(session_t *s, const char *user)
{
    size_t n = hub_disconnect_user(&s->srv->hub, user, WS_CLOSE_DISCONNECTED, "disconnected");
    log_kv(LOG_INFO, "kick", "user", user, "#connections", (long long)n, NULL);
    json_t *body = json_pack("{s:s, s:I}", "user_id", user, "disconnected", (json_int_t)n);
    session_respond_json(s, 200, body);
    json_decref(body);
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
    char id[TICKET_LEN + 1];
    int64_t now = aw_now_ms();
    int64_t expires = now + srv->cfg->ticket_ttl_ms;
    int64_t token_exp = r.expires_ms - srv->jwt.leeway_s * 1000;
    if (token_exp <= now) { /* accepted within the leeway, but a ticket could never be used */
        respond_error(s, 401, ERR_UNAUTHORIZED, "the token has expired");
        return;
    }
    int rc = tickets_issue(&srv->tickets, r.user, expires, token_exp, id);
    if (rc == AW_ELIMIT) {
        respond_error(s, 429, ERR_TOO_MANY_TICKETS,
                      "too many unused tickets; use or let expire the ones issued");
        return;
    }
    if (rc != AW_OK) {
        respond_error(s, 503, ERR_UNAVAILABLE, "cannot issue a ticket now");
        return;
    }
    json_t *body = json_pack("{s:s, s:I}", "ticket", id, "expires_at",
                             (json_int_t)(expires < token_exp ? expires : token_exp));
    session_respond_json(s, 200, body);
    json_decref(body);
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
    const hub_user_t *u = hub_user_find(&s->srv->hub, user);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        return;
    }
    json_t *head = json_pack("{s:s}", "user_id", user);
    char *head_text = jalloc_dumps(head, JSON_COMPACT);
    json_decref(head);
    /* head_text is {"user_id":"…"}: reopen it to append the other fields */
    fprintf(f, "%.*s,\"epoch\":", (int)(strlen(head_text) - 1), head_text);
    free(head_text);
    if (u)
        fprintf(f, "\"%s\",\"seq\":%llu,\"first_seq\":%llu,\"events\":[", u->epoch,
                (unsigned long long)u->seq, (unsigned long long)history_first_seq(&u->history));
    else
        fputs("null,\"seq\":0,\"first_seq\":0,\"events\":[", f);
    uint64_t first = u ? history_first_seq(&u->history) : 0;
    uint64_t from = since + 1 > first ? since + 1 : first;
    for (uint64_t q = from; u && first && q <= history_last_seq(&u->history); q++) {
        size_t plen;
        const uint8_t *p = frame_ws_payload(history_get(&u->history, q), &plen);
        if (q != from)
            fputc(',', f);
        fwrite(p, 1, plen, f);
    }
    fputs("]}", f);
    fclose(f);
    session_respond(s, 200, "application/json", buf, len, NULL);
    free(buf);
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
    if (!text) {
        respond_error(s, 503, ERR_UNAVAILABLE, "out of memory");
        return;
    }
    session_respond(s, 200, "text/plain; version=0.0.4", text, len, NULL);
    free(text);
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
        if (s->srv->draining)
            respond_error(s, 503, ERR_UNAVAILABLE, "draining");
        else
            session_respond(s, 200, "application/json", "{\"status\":\"ready\"}", 18, NULL);
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
