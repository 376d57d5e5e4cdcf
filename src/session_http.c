/* session_http.c -- a connection's HTTP phase: requests read one at a time
 * (and no further while 64 KiB of responses wait for the peer), bodies
 * judged at their head and bounded in total, the keep-alive limits, the
 * responses, and the close that lingers so a refused peer reads its answer.
 * The upgrade hands the connection to the WebSocket phase (session.c); the
 * API answers requests (api.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "jalloc.h"
#include "lock.h"
#include "log.h"
#include "server.h"
#include "session.h"
#include "session_int.h"
#include "upgrade.h"

#define HTTP_BACKLOG_MAX  (64 * 1024) /* unwritten response bytes before reading stops */
#define LINGER_MS         2000        /* reading after a refusal, so the peer sees it */
#define KEEPALIVE_IDLE_MS 1000        /* quiet time that ends a connection past its time */

/* Ends the HTTP phase after the response: the server side is shut down, and
 * what the peer still sends is read and dropped until it closes or
 * LINGER_MS pass, so the response is not lost to a reset. Refused
 * connections that arrive while the server is near its connection capacity
 * are just closed (lingering must not hold descriptors others need). */
static void close_after_response(session_t *s)
{
    s->_keep_alive = false;
    s->_close_when_flushed = true;
    s->_linger = s->srv->nsessions < s->srv->linger_cap;
    if (!s->_linger)
        uv_read_stop((uv_stream_t *)&s->tcp);
    if (s->_qlen == 0 && !s->_inflight)
        server_want_flush(s); /* the flush starts the close */
}

static void on_linger_shutdown(uv_shutdown_t *req, int status)
{
    (void)status; /* cancelled when the handle closes first: nothing to do */
    free(req);
}

void session_http_linger(session_t *s)
{
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req || uv_shutdown(req, (uv_stream_t *)&s->tcp, on_linger_shutdown) != 0) {
        free(req);
        session_abort_locked(s, NULL);
        return;
    }
    s->_lingering = true;
    s->_http_paused = false;
    s->_deadline_ms = aw_now_ms() + LINGER_MS;
    session_read_start(s);
}

static void http_error(session_t *s, int rc)
{
    int status = rc == AW_EHEADERS ? 431 : rc == AW_ETOOBIG ? 413 : 400;
    const char *code = status == 413 ? "too_large" : "bad_request";
    s->_keep_alive = false;
    session_respond_error(s, status, code,
                          status == 431   ? "request head too large"
                          : status == 413 ? "request body too large"
                                          : "malformed HTTP request");
    close_after_response(s);
}

/* The answer to a connection over --max-connections-per-ip (once). */
void session_http_refuse_ip(session_t *s)
{
    s->_refused_ip = false;
    s->_keep_alive = false;
    session_respond_error(s, 429, "too_many_connections", "too many connections from this address");
    close_after_response(s);
}

/* Reading stops while responses wait for the peer (backpressure): what was
 * read already waits in _rbuf, and the write completion resumes. */
static void http_pause(session_t *s, const char *data, size_t len)
{
    s->_http_paused = true;
    uv_read_stop((uv_stream_t *)&s->tcp);
    if (len && aw_buf_append(data, len, &s->_rbuf) != 0)
        session_abort(s, "out of memory");
}

/* A head whose body is about to come: refused at once (route, method, API
 * key, space for bodies in flight) before any body byte is kept. */
static bool body_admitted(session_t *s, const http_request_t *req)
{
    server_t *srv = s->srv;
    s->_keep_alive = false; /* a refusal closes */
    if (!api_admit_body(s, req)) {
        close_after_response(s);
        return false;
    }
    uint64_t need = req->chunked ? (uint64_t)srv->cfg->max_request_bytes : req->content_length;
    uint64_t held = atomic_load(&srv->body_bytes_in_flight); /* loops reserve at once */
    do {
        if (held + need > (uint64_t)srv->cfg->max_request_bytes_in_flight) {
            aw_lock();
            srv->metrics.errors[ERR_UNAVAILABLE]++;
            aw_unlock();
            static const char busy[] = "{\"error\":\"unavailable\",\"message\":\"too many "
                                       "request bodies in flight; retry later\"}";
            session_respond(s, 503, "application/json", busy, sizeof busy - 1,
                            "Retry-After: 1\r\n");
            close_after_response(s);
            return false;
        }
    } while (!atomic_compare_exchange_weak(&srv->body_bytes_in_flight, &held, held + need));
    s->_body_reserved = need;
    return true;
}

static void body_release(session_t *s)
{
    atomic_fetch_sub(&s->srv->body_bytes_in_flight, s->_body_reserved);
    s->_body_reserved = 0;
}

void session_http_input(session_t *s, const char *data, size_t len)
{
    const config_t *cfg = s->srv->cfg;
    if (s->_lingering)
        return;            /* refused: dropped */
    if (s->_http_paused) { /* the rest of a TLS read */
        http_pause(s, data, len);
        return;
    }
    if (s->_refused_ip) { /* see session_accept */
        aw_lock();
        session_http_refuse_ip(s);
        aw_unlock();
        return;
    }
    if (!s->_http) {
        s->_http = malloc(sizeof *s->_http);
        if (!s->_http) {
            session_abort(s, "out of memory");
            return;
        }
        http_reader_init(s->_http, (size_t)cfg->max_header_bytes, (size_t)cfg->max_request_bytes);
        s->_http->stop_at_head = true;
    }
    while (s->state == SESSION_HTTP && !s->_close_when_flushed) {
        if (session_backlog(s) > HTTP_BACKLOG_MAX) {
            http_pause(s, data, len);
            return;
        }
        size_t used = 0;
        http_request_t *req;
        int rc = http_feed(s->_http, data, len, &used, &req);
        data += used;
        len -= used;
        if (rc == AW_EAGAIN) {
            s->_http_partial = s->_http_partial || used > 0;
            return;
        }
        if (rc == HTTP_HEAD) {
            if (!body_admitted(s, req))
                return;
            continue;
        }
        if (rc != AW_OK) {
            aw_lock();
            http_error(s, rc);
            aw_unlock();
            return;
        }
        s->_http_partial = false;
        _Atomic uint64_t *nreq = &s->lp->http_requests; /* written by this loop only */
        atomic_store_explicit(nreq, atomic_load_explicit(nreq, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        int64_t now = aw_now_ms();
        /* keep-alive ends after --keepalive-requests requests or
         * --keepalive-max-ms, whatever the requests say */
        s->_keep_alive = req->keep_alive && ++s->_requests < (uint64_t)cfg->keepalive_requests &&
                         now - s->connected_ms < cfg->keepalive_max_ms;
        s->_deadline_ms = now + cfg->handshake_timeout_ms;
        s->_http_in_handler = true;
        if (req->upgrade || upgrade_is_websocket_path(s->srv, req->path)) {
            upgrade_handle(s, req); /* takes the lock alone past the credential's check */
            s->_http_in_handler = false;
            body_release(s);
            if (s->state == SESSION_OPEN) {
                http_reader_dispose(s->_http);
                free(s->_http);
                s->_http = NULL;
                if (len) {
                    aw_lock(); /* WebSocket input is read under the lock alone */
                    session_ws_input(s, data, len);
                    aw_unlock();
                }
                return;
            }
        } else {
            bool alone = aw_in_shared() && !api_shared_ok(s, req);
            if (alone)
                aw_lock();
            api_handle(s, req);
            if (alone)
                aw_unlock();
            s->_http_in_handler = false;
            body_release(s);
        }
        if (s->_http_held) { /* answered later: what follows waits */
            s->_held_keep_alive = req->keep_alive;
            http_pause(s, data, len);
            return;
        }
        if (!req->keep_alive)
            session_close(s, 0, "request done"); /* the client's choice */
        else if (!s->_keep_alive || s->srv->draining)
            close_after_response(s); /* ours: requests may be on their way */
        if (len == 0)
            return;
    }
}

/* The peer took our responses: read the requests that waited, then the
 * socket again. Called from the write path, which holds no lock. */
void session_http_resume(session_t *s)
{
    /* as a read of the same bytes would be (session.c) */
    bool shared = !s->_tls, took = shared && aw_lock_shared();
    if (!shared)
        aw_lock();
    if (s->state == SESSION_HTTP && s->_http_paused && !s->_http_held &&
        session_backlog(s) <= HTTP_BACKLOG_MAX / 2) {
        s->_http_paused = false;
        s->_deadline_ms = aw_now_ms() + s->srv->cfg->handshake_timeout_ms;
        aw_buf_t pending = s->_rbuf;
        memset(&s->_rbuf, 0, sizeof s->_rbuf);
        if (pending.len)
            session_http_input(s, pending.data, pending.len);
        aw_buf_free(&pending);
        if (s->state != SESSION_GONE && !s->_http_paused && !s->_close_when_flushed)
            session_read_start(s);
    }
    if (took)
        aw_unlock_shared();
    else if (!shared)
        aw_unlock();
}

/* ---- housekeeping ---- */

void session_http_tick(session_t *s, int64_t now)
{
    const config_t *cfg = s->srv->cfg;
    if (s->_lingering) {
        if (now >= s->_deadline_ms)
            session_abort(s, NULL);
        return;
    }
    if (s->_http_held)
        return; /* bounded by --redis-timeout-ms */
    if (s->_qlen || s->_http_paused || session_backlog(s)) {
        /* responses wait: the peer must take bytes, or go */
        if (session_made_progress(s))
            s->_progress_ms = now;
        else if (now - s->_progress_ms >= cfg->handshake_timeout_ms) {
            log_kv(LOG_INFO | LOG_LIMITED, "peer reads nothing", "conn", s->id, "remote", s->remote,
                   NULL);
            session_abort(s, "peer reads nothing");
        }
        return;
    }
    s->_progress_ms = now;
    if (now >= s->_deadline_ms && s->_http_partial) {
        log_kv(LOG_INFO | LOG_LIMITED, "request timeout", "conn", s->id, "remote", s->remote, NULL);
        session_abort(s, "request timeout");
    } else if (now >= s->_deadline_ms ||
               (now - s->connected_ms >= cfg->keepalive_max_ms &&
                now - (s->_deadline_ms - cfg->handshake_timeout_ms) >= KEEPALIVE_IDLE_MS)) {
        /* idle between requests: for the idle time, or past the
         * connection's time and quiet for a moment (a busy client gets
         * Connection: close on its next response instead) */
        session_abort(s, "keep-alive ended");
    }
}

/* ---- HTTP responses ---- */

void session_respond(session_t *s, int status, const char *content_type, const char *body,
                     size_t len, const char *extra_headers)
{
    char head[1024];
    bool keep = s->_keep_alive && !s->srv->draining;
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: %s\r\nCache-Control: no-store\r\n%s\r\n",
                     status, http_status_text(status), content_type ? content_type : "text/plain",
                     len, keep ? "keep-alive" : "close", extra_headers ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof head) {
        session_abort(s, "response head too large");
        return;
    }
    frame_t *f = frame_alloc((size_t)n + len);
    if (!f) {
        session_abort(s, "out of memory");
        return;
    }
    memcpy(f->data, head, (size_t)n);
    if (len)
        memcpy(f->data + n, body, len);
    session_enqueue(s, f);
    frame_unref(f);
}

void session_respond_json(session_t *s, int status, const json_t *body)
{
    char *text = jalloc_dumps(body, JSON_COMPACT);
    if (!text) {
        session_abort(s, "out of memory");
        return;
    }
    session_respond(s, status, "application/json", text, strlen(text), NULL);
    free(text);
}

void session_respond_error(session_t *s, int status, const char *code, const char *message)
{
    json_t *body = json_pack("{s:s, s:s}", "error", code, "message", message);
    session_respond_json(s, status, body);
    json_decref(body);
}

session_wait_t *session_wait_new(session_t *s, size_t size)
{
    session_wait_t *w = calloc(1, size);
    if (!w)
        return NULL;
    w->s = s;
    w->_next = s->_wait;
    if (s->_wait)
        s->_wait->_prev = w;
    s->_wait = w;
    return w;
}

void session_wait_free(session_wait_t *w)
{
    if (w && w->s) { /* still linked: the session is alive */
        if (w->_prev)
            w->_prev->_next = w->_next;
        else
            w->s->_wait = w->_next;
        if (w->_next)
            w->_next->_prev = w->_prev;
    }
    free(w);
}

session_wait_t *session_http_hold(session_t *s, size_t size)
{
    session_wait_t *w = session_wait_new(s, size);
    if (w)
        s->_http_held = true;
    return w;
}

void session_http_release(session_wait_t *w)
{
    session_t *s = w->s;
    session_wait_free(w);
    if (!s)
        return;
    s->_http_held = false;
    if (s->_http_in_handler)
        return; /* answered within the handler: the reader goes on as for any request */
    if (s->state == SESSION_OPEN && s->_http) { /* an upgrade finished: WebSocket from here */
        http_reader_dispose(s->_http);
        free(s->_http);
        s->_http = NULL;
        s->_http_paused = false;
        aw_buf_t pending = s->_rbuf;
        memset(&s->_rbuf, 0, sizeof s->_rbuf);
        if (pending.len)
            session_ws_input(s, pending.data, pending.len);
        aw_buf_free(&pending);
        if (s->state == SESSION_OPEN)
            session_read_start(s);
        return;
    }
    if (s->state != SESSION_HTTP)
        return;
    if (!s->_held_keep_alive)
        session_close(s, 0, "request done");
    else if (!s->_keep_alive || s->srv->draining)
        close_after_response(s);
    if (s->_http_paused && s->state == SESSION_HTTP && !s->_close_when_flushed &&
        session_backlog(s) <= HTTP_BACKLOG_MAX / 2)
        session_http_resume(s);
}

void session_http_dispose(session_t *s)
{
    body_release(s);
    if (s->_http) {
        http_reader_dispose(s->_http);
        free(s->_http);
        s->_http = NULL;
    }
}
