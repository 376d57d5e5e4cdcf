/* server.c -- the event loop's fixed parts: the listener, signals, the
 * housekeeping tick, the end-of-turn flush, and the drain. It owns the list
 * of sessions but nothing of their protocol. */
#include "server.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "log.h"
#include "session.h"
#include "ws.h"

#define TRIM_STEP_BYTES ((size_t)8 << 20)

static void on_connection(uv_stream_t *listener, int status)
{
    server_t *srv = listener->data;
    if (status < 0) {
        log_kv(LOG_WARN, "accept failed", "error", uv_strerror(status), NULL);
        return;
    }
    int rc = session_accept(srv, listener);
    if (rc != AW_OK && rc != AW_ELIMIT)
        log_kv(LOG_WARN, "accept failed", "error", "out of memory or descriptors", NULL);
}

/* The end of a loop turn: every session that queued frames during the turn
 * writes them in one vectored write. */
static void on_flush(uv_check_t *check)
{
    server_t *srv = check->data;
    while (srv->_flush_head) {
        session_t *s = srv->_flush_head;
        server_cancel_flush(srv, s);
        session_flush(s);
    }
    uv_idle_stop(&srv->_flush_idle);
}

static void on_idle(uv_idle_t *idle)
{
    (void)idle; /* exists only to keep the poll phase from blocking */
}

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void finish(server_t *srv)
{
    log_kv(LOG_INFO, "stopped", "#connections_left", (long long)srv->nsessions, NULL);
    uv_walk(srv->loop, close_handle, NULL);
}

/* Gives freed memory back to the system after a large drop in what the
 * server holds (history and queues): glibc keeps freed chunks resident while
 * the heap is fragmented, so a burst would otherwise pin its peak RSS. */
static void trim_memory(server_t *srv)
{
    size_t held = srv->hub.history.bytes + (size_t)srv->metrics.queue_bytes;
    if (held > srv->_trim_mark)
        srv->_trim_mark = held;
    else if (srv->_trim_mark - held >= TRIM_STEP_BYTES ||
             (held < srv->_trim_mark / 2 && srv->_trim_mark - held >= TRIM_STEP_BYTES / 8)) {
        malloc_trim(0);
        srv->_trim_mark = held;
    }
}

static void on_tick(uv_timer_t *t)
{
    server_t *srv = t->data;
    int64_t now = aw_now_ms();
    for (session_t *s = srv->_sessions, *next; s; s = next) {
        next = s->_next; /* session_tick may close s; it stays linked until its close cb */
        session_tick(s, now);
    }
    tickets_sweep(&srv->tickets, now);
    hub_sweep(&srv->hub, now);
    runs_tick(&srv->runs, now);
    trim_memory(srv);
    idem_sweep(&srv->idem, now);
    if (srv->draining) {
        /* Agents were told to stop when the drain began; they get their
         * kill ladder (grace, SIGTERM, SIGKILL) even past the deadline, so
         * no process is left behind. */
        int64_t agents_deadline = srv->_drain_deadline + 3 * srv->cfg->agent_kill_grace_ms + 1000;
        bool agents_done = srv->runs.agents_running == 0 || now >= agents_deadline;
        if (agents_done && (srv->hub.nconns == 0 || now >= srv->_drain_deadline)) {
            for (session_t *s = srv->_sessions; s; s = s->_next)
                session_abort(s, "drain timeout");
            finish(srv);
        }
    }
}

/* SIGHUP: reload the certificate and key. New connections use them; open
 * ones keep the context they were made with. A bad file keeps the old one. */
static void on_sighup(uv_signal_t *sig, int signum)
{
    server_t *srv = sig->data;
    (void)signum;
    if (!srv->tls_on) {
        log_kv(LOG_INFO, "SIGHUP: nothing to reload (no TLS)", NULL);
        return;
    }
    char err[256];
    if (tls_ctx_load(&srv->tls, srv->cfg->tls_cert, srv->cfg->tls_key, err, sizeof err) == AW_OK)
        log_kv(LOG_INFO, "TLS certificate reloaded", "cert", srv->cfg->tls_cert, NULL);
    else
        log_kv(LOG_ERROR, "TLS reload failed; keeping the previous certificate", "error", err,
               NULL);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    server_t *srv = sig->data;
    if (srv->draining) {
        log_kv(LOG_WARN, "second signal: stopping now", NULL);
        srv->_drain_deadline = 0;
        return;
    }
    log_kv(LOG_INFO, "draining", "signal", signum == SIGINT ? "SIGINT" : "SIGTERM", "#connections",
           (long long)srv->nsessions, NULL);
    server_drain(srv);
}

void server_drain(server_t *srv)
{
    if (srv->draining)
        return;
    srv->draining = true;
    srv->_drain_deadline = aw_now_ms() + srv->cfg->drain_timeout_ms;
    /* The listener stays open until the WebSockets are gone: load balancers
     * read /readyz (503 now) and late clients get a clear 503 draining
     * instead of a refused connection. */
    runs_shutdown(&srv->runs); /* first: their agent_completed reaches the users */
    for (session_t *s = srv->_sessions; s; s = s->_next)
        session_close(s, WS_CLOSE_GOING_AWAY, "going_away");
    /* The tick finishes the drain; make it come soon. */
    uv_timer_start(&srv->_tick, on_tick, 10, (uint64_t)srv->tick_ms);
}

static int listen_on(server_t *srv, char *err, size_t errlen)
{
    const config_t *cfg = srv->cfg;
    struct sockaddr_storage sa;
    if (uv_ip4_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in *)&sa) != 0 &&
        uv_ip6_addr(cfg->listen_host, cfg->listen_port, (struct sockaddr_in6 *)&sa) != 0) {
        snprintf(err, errlen, "--listen: '%s' is not an IPv4 or IPv6 address", cfg->listen_host);
        return AW_EINVAL;
    }
    uv_tcp_init(srv->loop, &srv->_listener);
    srv->_listener.data = srv;
    int rc = uv_tcp_bind(&srv->_listener, (struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->_listener, 1024, on_connection);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", cfg->listen, uv_strerror(rc));
        return AW_EIO;
    }
    int len = sizeof sa;
    uv_tcp_getsockname(&srv->_listener, (struct sockaddr *)&sa, &len);
    srv->bound_port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                     : ((struct sockaddr_in *)&sa)->sin_port);
    return AW_OK;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

int server_init(server_t *srv, uv_loop_t *loop, const config_t *cfg, char *err, size_t errlen)
{
    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    srv->cfg = cfg;
    int64_t shortest = cfg->heartbeat_interval_ms < cfg->handshake_timeout_ms
                           ? cfg->heartbeat_interval_ms
                           : cfg->handshake_timeout_ms;
    /* One timer for all sessions: deadlines are checked at tick granularity. */
    srv->tick_ms = clamp64(shortest / 4, 10, 1000);
    agent_options_t aopts = {
        .loop = loop,
        .kill_grace_ms = cfg->agent_kill_grace_ms,
        .max_line_bytes = (size_t)cfg->agent_max_line_bytes,
    };
    agent_backend_t *backend;
    int arc = agent_backend_create(cfg->agent, &aopts, &backend, err, errlen);
    if (arc != AW_OK)
        return arc;
    if (hub_init(&srv->hub, cfg, &srv->metrics) != AW_OK || tickets_init(&srv->tickets) != AW_OK ||
        idem_init(&srv->idem, cfg->idempotency_ttl_ms) != AW_OK ||
        runs_init(&srv->runs, &srv->hub, cfg, &srv->metrics, backend) != AW_OK) {
        snprintf(err, errlen, "out of memory");
        return AW_ENOMEM;
    }
    srv->hub.runs = &srv->runs;
    deflater_init(&srv->deflater, (size_t)cfg->deflate_min_bytes);
    if (cfg->tls_cert) {
        int trc = tls_ctx_load(&srv->tls, cfg->tls_cert, cfg->tls_key, err, errlen);
        if (trc != AW_OK)
            return trc;
        srv->tls_on = true;
    }
    srv->ping_frame = frame_ws(WS_OP_PING, NULL, 0);
    if (!srv->ping_frame) {
        snprintf(err, errlen, "out of memory");
        return AW_ENOMEM;
    }
    int rc = listen_on(srv, err, errlen);
    if (rc != AW_OK)
        return rc;
    uv_timer_init(loop, &srv->_tick);
    srv->_tick.data = srv;
    uv_timer_start(&srv->_tick, on_tick, (uint64_t)srv->tick_ms, (uint64_t)srv->tick_ms);
    uv_check_init(loop, &srv->_flush_check);
    srv->_flush_check.data = srv;
    uv_check_start(&srv->_flush_check, on_flush);
    uv_idle_init(loop, &srv->_flush_idle);
    uv_signal_init(loop, &srv->_sigterm);
    uv_signal_init(loop, &srv->_sigint);
    srv->_sigterm.data = srv->_sigint.data = srv;
    uv_signal_start(&srv->_sigterm, on_signal, SIGTERM);
    uv_signal_start(&srv->_sigint, on_signal, SIGINT);
    uv_signal_init(loop, &srv->_sighup);
    srv->_sighup.data = srv;
    uv_signal_start(&srv->_sighup, on_sighup, SIGHUP);
    return AW_OK;
}

int server_run(server_t *srv)
{
    char addr[96];
    snprintf(addr, sizeof addr, "%s%s%s:%d", strchr(srv->cfg->listen_host, ':') ? "[" : "",
             srv->cfg->listen_host, strchr(srv->cfg->listen_host, ':') ? "]" : "", srv->bound_port);
    log_kv(LOG_INFO, "listening", "addr", addr, NULL);
    uv_run(srv->loop, UV_RUN_DEFAULT);
    return AW_OK;
}

void server_dispose(server_t *srv)
{
    frame_unref(srv->ping_frame);
    runs_dispose(&srv->runs);
    deflater_dispose(&srv->deflater);
    tls_ctx_dispose(&srv->tls);
    hub_dispose(&srv->hub);
    tickets_dispose(&srv->tickets);
    idem_dispose(&srv->idem);
    jwt_verifier_dispose(&srv->jwt);
}

void server_conn_id(server_t *srv, char *out, size_t len)
{
    snprintf(out, len, "c_%s%08llx", srv->hub._node, (unsigned long long)++srv->_next_conn);
}

void server_add_session(server_t *srv, session_t *s)
{
    s->_prev = NULL;
    s->_next = srv->_sessions;
    if (srv->_sessions)
        srv->_sessions->_prev = s;
    srv->_sessions = s;
    srv->nsessions++;
}

void server_remove_session(server_t *srv, session_t *s)
{
    if (s->_prev)
        s->_prev->_next = s->_next;
    else
        srv->_sessions = s->_next;
    if (s->_next)
        s->_next->_prev = s->_prev;
    srv->nsessions--;
}

void server_want_flush(server_t *srv, session_t *s)
{
    if (s->_flush_queued)
        return;
    s->_flush_queued = true;
    s->_flush_prev = NULL;
    s->_flush_next = srv->_flush_head;
    if (srv->_flush_head)
        srv->_flush_head->_flush_prev = s;
    srv->_flush_head = s;
    if (!uv_is_active((uv_handle_t *)&srv->_flush_idle))
        uv_idle_start(&srv->_flush_idle, on_idle);
}

void server_cancel_flush(server_t *srv, session_t *s)
{
    if (!s->_flush_queued)
        return;
    if (s->_flush_prev)
        s->_flush_prev->_flush_next = s->_flush_next;
    else
        srv->_flush_head = s->_flush_next;
    if (s->_flush_next)
        s->_flush_next->_flush_prev = s->_flush_prev;
    s->_flush_queued = false;
}

char *server_readbuf(server_t *srv, size_t *len)
{
    *len = sizeof srv->_readbuf;
    return srv->_readbuf;
}
