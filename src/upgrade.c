/* upgrade.c -- turns an HTTP upgrade request into an open WebSocket session
 * or a refusal. Owns the order of the handshake checks; authentication itself
 * is auth.c's and the registry is the hub's. Never logs a credential. */
#include "upgrade.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "aw.h"
#include "broker.h"
#include "event.h"
#include "lock.h"
#include "log.h"
#include "server.h"

static void refuse(session_t *s, enum metrics_refusal why, int status, const char *message,
                   const char *detail)
{
    server_t *srv = s->srv;
    aw_lock(); /* the metrics are the lock's (an upgrade starts under it shared) */
    srv->metrics.refusals[why]++;
    aw_unlock();
    log_kv(LOG_INFO | LOG_LIMITED, "refused", "conn", s->id, "remote", s->remote, "reason",
           metrics_refusal_name(why), "detail", detail ? detail : message, "#status",
           (long long)status, NULL);
    s->_keep_alive = false;
    session_respond_error(s, status, metrics_refusal_name(why), message);
    session_close(s, 0, "refused");
}

/* 0 when req is a valid RFC 6455 opening handshake; writes the accept key. */
static const char *check_handshake(const http_request_t *req, char accept[29])
{
    if (req->method != HTTP_GET)
        return "the upgrade must be a GET";
    if (req->http_major < 1 || (req->http_major == 1 && req->http_minor < 1))
        return "the upgrade needs HTTP/1.1";
    const char *up = http_header(req, "Upgrade");
    if (!up || !http_list_has(up, "websocket"))
        return "Upgrade: websocket is missing";
    const char *conn = http_header(req, "Connection");
    if (!conn || !http_list_has(conn, "upgrade"))
        return "Connection: Upgrade is missing";
    const char *ver = http_header(req, "Sec-WebSocket-Version");
    if (!ver || strcmp(ver, "13") != 0)
        return "Sec-WebSocket-Version must be 13";
    const char *key = http_header(req, "Sec-WebSocket-Key");
    if (!key || ws_accept_key(accept, key, strlen(key)) != AW_OK)
        return "Sec-WebSocket-Key is missing or not 16 base64 bytes";
    return NULL;
}

/* Reads ?since=&epoch= (PROTOCOL section 3). *since is 0 and *has_since
 * false when absent; an unreadable since counts as a failed resume. */
static void resume_params(const http_request_t *req, bool *has_since, uint64_t *since, char *epoch,
                          size_t elen)
{
    char buf[32];
    *has_since = http_query_get(req->query, "since", buf, sizeof buf) != AW_ENOTFOUND;
    *since = 0;
    epoch[0] = '\0';
    if (!*has_since)
        return;
    char *end;
    unsigned long long v = strtoull(buf, &end, 10);
    if (end == buf || *end || buf[0] == '-')
        *since = UINT64_MAX; /* never resumable */
    else
        *since = v;
    if (http_query_get(req->query, "epoch", epoch, elen) != AW_OK)
        epoch[0] = '\0';
}

/* Sends connection_established and, for a complete resume, starts the
 * replay of what the client missed. */
static void send_established(session_t *s, bool has_since, uint64_t since, const char *epoch)
{
    const config_t *cfg = s->srv->cfg;
    hub_user_t *u = s->user;
    bool resumed = has_since && hub_can_resume(&s->srv->hub, u, since, epoch[0] ? epoch : NULL);
    uint64_t missed = resumed ? u->seq - since : 0;
    json_t *m = json_pack(
        "{s:s, s:s, s:s, s:s, s:I, s:b, s:I, s:I, s:I, s:I}", "type", "connection_established",
        "connection_id", s->id, "user_id", u->id, "epoch", u->epoch, "seq", (json_int_t)u->seq,
        "resumed", resumed, "missed", (json_int_t)missed, "heartbeat_interval_ms",
        (json_int_t)cfg->heartbeat_interval_ms, "max_message_bytes",
        (json_int_t)cfg->max_message_bytes, "server_time", (json_int_t)aw_now_ms());
    if (!m || session_send_json(s, m) != AW_OK) {
        json_decref(m);
        session_close(s, WS_CLOSE_INTERNAL, "internal error");
        return;
    }
    json_decref(m);
    if (missed)
        session_replay(s, since + 1, NULL);
}

typedef struct sync_wait {
    session_wait_t base;
    bool caught_up; /* asked the broker to catch up once already */
    bool has_since;
    uint64_t since;
    char epoch[72];
} sync_wait_t;

static void on_synced(void *arg, int rc)
{
    sync_wait_t *w = arg;
    session_t *s = w->base.s;
    if (s && s->state == SESSION_OPEN) {
        hub_user_t *u = s->user;
        if (rc == AW_OK && w->has_since && !w->caught_up && w->since > u->seq &&
            w->since != UINT64_MAX && strcmp(w->epoch, u->epoch) == 0) {
            /* the client saw later events (on another node) than this node's
             * copy holds yet: let it catch up before answering */
            w->caught_up = true;
            broker_catch_up(s->srv->broker, u->id, on_synced, w);
            return;
        }
        if (rc == AW_OK) {
            s->syncing = false;
            s->_last_seq = s->user->seq; /* events from here on are live for it */
            send_established(s, w->has_since, w->since, w->epoch);
        } else {
            session_close(s, WS_CLOSE_TRY_AGAIN, "stream unavailable");
        }
    }
    session_wait_free(&w->base);
}

/* The session waits, getting no events, until its user's stream is live on
 * this node (at once in memory; after the shard's range in cluster mode);
 * then it is told where it stands. */
static void stream_sync(session_t *s, bool has_since, uint64_t since, const char *epoch)
{
    s->syncing = true;
    s->_broker_user = true;
    sync_wait_t *w = (sync_wait_t *)session_wait_new(s, sizeof *w);
    if (!w) {
        session_close(s, WS_CLOSE_INTERNAL, "internal error");
        return;
    }
    w->has_since = has_since;
    w->since = since;
    snprintf(w->epoch, sizeof w->epoch, "%s", epoch);
    broker_acquire(s->srv->broker, s->user->id, on_synced, w);
}

static bool is_echo_path(const server_t *srv, const char *path)
{
    return srv->cfg->echo_path && strcmp(path, srv->cfg->echo_path) == 0;
}

/* permessage-deflate: the first acceptable offer of any
 * Sec-WebSocket-Extensions header. */
static bool negotiate_deflate(const server_t *srv, const http_request_t *req,
                              deflate_params_t *params, char *resp, size_t resplen)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, "Sec-WebSocket-Extensions") == 0 &&
            deflate_negotiate(req->headers[i].value, (uint8_t)srv->cfg->deflate_client_window_bits,
                              params, resp, resplen))
            return true;
    }
    return false;
}

bool upgrade_is_websocket_path(const server_t *srv, const char *path)
{
    return strcmp(path, "/ws") == 0 || strcmp(path, "/api/v1/websocket") == 0 ||
           is_echo_path(srv, path);
}

/* What the upgrade needs from the request once its credential is known:
 * kept whole, so a ticket read and spent by the broker can finish it on a
 * later loop turn. */
typedef struct upgrade_ctx {
    session_wait_t base; /* first: the session, NULL once it is gone */
    char accept[29];
    bool echo;
    bool has_since;
    uint64_t since;
    char epoch[72];
    char ext[160];
    bool deflate;
    deflate_params_t zparams;
    bool held; /* on the heap, holding the request (session_http_hold) */
    auth_result_t auth;
} upgrade_ctx_t;

static void refuse_unavailable(session_t *s, const char *detail)
{
    aw_lock();
    s->srv->metrics.refusals[REFUSAL_UNAVAILABLE]++;
    aw_unlock();
    log_kv(LOG_WARN | LOG_LIMITED, "refused", "conn", s->id, "remote", s->remote, "reason",
           "unavailable", "detail", detail, "#status", 503LL, NULL);
    s->_keep_alive = false;
    static const char body[] = "{\"error\":\"unavailable\",\"message\":\"the user's stream "
                               "is not reachable now; retry later\"}";
    session_respond(s, 503, "application/json", body, sizeof body - 1, "Retry-After: 1\r\n");
    session_close(s, 0, "refused");
}

/* The 101 and the session's start. */
static void upgrade_open(session_t *s, upgrade_ctx_t *u)
{
    server_t *srv = s->srv;
    auth_result_t *auth = &u->auth;
    int64_t now = aw_now_ms();
    s->deflate = u->deflate;
    s->zparams = u->zparams;
    char head[sizeof auth->protocol + 512];
    int n =
        snprintf(head, sizeof head,
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s%s%s%s\r\n",
                 u->accept, auth->protocol[0] ? "Sec-WebSocket-Protocol: " : "", auth->protocol,
                 auth->protocol[0] ? "\r\n" : "", s->deflate ? "Sec-WebSocket-Extensions: " : "",
                 u->ext, s->deflate ? "\r\n" : "");
    frame_t *f = frame_raw(head, (size_t)n);
    if (!f || !hub_attach(&srv->hub, s, auth->user)) {
        frame_unref(f);
        session_abort(s, "out of memory");
        return;
    }
    s->state = SESSION_OPEN;
    session_send(s, f);
    frame_unref(f);
    ws_parser_init(&s->_ws, (uint64_t)srv->cfg->max_message_bytes, true);
    s->_ws.allow_rsv1 = s->deflate;
    s->_ws.stream = true; /* large payloads stream where they will stay (session.c) */
    s->token_exp_ms = auth->expires_ms;
    s->_last_rx_ms = now;
    s->_next_ping_ms = now + srv->cfg->heartbeat_interval_ms;
    srv->metrics.handshakes_total++;
    log_kv(LOG_INFO, "connect", "conn", s->id, "user", s->user->id, "remote", s->remote, "via",
           auth->place, "#user_connections", (long long)s->user->nconns,
           u->has_since ? "#since" : NULL, (long long)u->since, NULL);
    s->echo = u->echo;
    if (!s->echo) /* the echo endpoint sends nothing of its own */
        stream_sync(s, u->has_since, u->since, u->epoch);
}

static void refuse_ticket(session_t *s)
{
    refuse(s, REFUSAL_UNAUTHORIZED, 401, "missing or invalid credential",
           "ticket credential: unknown, used or expired ticket");
}

/* The ticket was spent: by this upgrade (0) or by another (refused). */
static void on_ticket_taken(void *arg, int rc)
{
    upgrade_ctx_t *u = arg;
    session_t *s = u->base.s;
    if (s && s->state == SESSION_HTTP) {
        if (rc == AW_OK)
            upgrade_open(s, u);
        else if (rc == AW_EUNAVAIL)
            refuse_unavailable(s, "the ticket's home did not answer");
        else
            refuse_ticket(s);
    }
    session_http_release(&u->base);
}

/* Admission: limits first, so a refused upgrade leaves its ticket valid for
 * a later attempt; then the ticket is spent (once, whoever else holds it). */
static void upgrade_admit(session_t *s, upgrade_ctx_t *u)
{
    server_t *srv = s->srv;
    if (hub_admit(&srv->hub, u->auth.user) != AW_OK) {
        refuse(s, REFUSAL_TOO_MANY_CONNECTIONS, 429, "connection limit reached", u->auth.user);
    } else if (!u->echo && !broker_available(srv->broker, u->auth.user)) {
        refuse_unavailable(s, "the user's stream is not reachable");
    } else if (u->auth.ticket[0]) {
        broker_ticket_take(srv->broker, u->auth.ticket, on_ticket_taken, u);
        return; /* on_ticket_taken releases u */
    } else {
        upgrade_open(s, u);
    }
    if (u->held)
        session_http_release(&u->base);
}

/* The ticket's user, read without spending it. */
static void on_ticket_peeked(void *arg, int rc, const char *user, int64_t token_exp_ms)
{
    upgrade_ctx_t *u = arg;
    session_t *s = u->base.s;
    if (!s || s->state != SESSION_HTTP) {
        session_http_release(&u->base);
    } else if (rc == AW_EUNAVAIL) {
        refuse_unavailable(s, "the ticket's home did not answer");
        session_http_release(&u->base);
    } else if (rc != AW_OK) {
        refuse_ticket(s);
        session_http_release(&u->base);
    } else {
        snprintf(u->auth.user, sizeof u->auth.user, "%s", user);
        u->auth.expires_ms = token_exp_ms + s->srv->jwt.leeway_s * 1000;
        upgrade_admit(s, u);
    }
}

static void upgrade_admit_or_hold(session_t *s, upgrade_ctx_t *u, int rc);

void upgrade_handle(session_t *s, const http_request_t *req)
{
    server_t *srv = s->srv;
    if (!upgrade_is_websocket_path(srv, req->path)) {
        s->_keep_alive = false;
        session_respond_error(s, 404, "not_found",
                              "WebSocket endpoints are /ws and /api/v1/websocket");
        session_close(s, 0, "not found");
        return;
    }
    static _Thread_local upgrade_ctx_t ctx; /* large (holds a subprotocol) */
    upgrade_ctx_t *u = &ctx;
    memset(u, 0, offsetof(upgrade_ctx_t, auth));
    const char *bad = check_handshake(req, u->accept);
    if (bad) {
        refuse(s, REFUSAL_BAD_HANDSHAKE, 400, bad, NULL);
        return;
    }
    if (srv->draining) {
        refuse(s, REFUSAL_DRAINING, 503, "this node is shutting down; connect to another", NULL);
        return;
    }
    if (!config_origin_allowed(srv->cfg, http_header(req, "Origin"))) {
        refuse(s, REFUSAL_FORBIDDEN_ORIGIN, 403, "Origin is not allowed", NULL);
        return;
    }
    /* Tickets are the broker's: auth only says one was presented. Under
     * the lock shared (session.c), every loop verifies at once; a key set
     * (--jwks-url) may start a refresh from here, under the lock alone. */
    bool alone = srv->jwks != NULL;
    if (alone)
        aw_lock();
    int rc = auth_handshake(&srv->jwt, NULL, req, aw_now_ms(), &u->auth);
    if (alone)
        aw_unlock();
    if (rc != AW_OK && rc != AW_EAGAIN) {
        char detail[160];
        snprintf(detail, sizeof detail, "%s credential: %s", u->auth.place ? u->auth.place : "no",
                 u->auth.reason);
        refuse(s, REFUSAL_UNAUTHORIZED, 401, "missing or invalid credential", detail);
        return;
    }
    u->echo = is_echo_path(srv, req->path);
    resume_params(req, &u->has_since, &u->since, u->epoch, sizeof u->epoch);
    u->deflate =
        srv->cfg->deflate && negotiate_deflate(srv, req, &u->zparams, u->ext, sizeof u->ext);
    aw_lock(); /* the hub, the broker */
    upgrade_admit_or_hold(s, u, rc);
    aw_unlock();
}

static void upgrade_admit_or_hold(session_t *s, upgrade_ctx_t *u, int rc)
{
    server_t *srv = s->srv;
    if (rc == AW_OK) {
        upgrade_admit(s, u);
        return;
    }
    /* a ticket: read, admitted, spent, maybe over later loop turns */
    upgrade_ctx_t *w = (upgrade_ctx_t *)session_http_hold(s, sizeof *w);
    if (!w) {
        session_abort(s, "out of memory");
        return;
    }
    session_wait_t links = w->base;
    memcpy(w, u, sizeof *w);
    w->base = links;
    w->held = true;
    broker_ticket_peek(srv->broker, w->auth.ticket, on_ticket_peeked, w);
}
