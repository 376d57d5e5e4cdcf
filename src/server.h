/* server.h -- the process's one event loop and everything it owns: the
 * listener, signals, the periodic tick, the write flush, drain, and the
 * modules' state (hub, tickets, idempotency cache, metrics). A session
 * belongs to exactly one server (one loop). */
#ifndef AW_SERVER_H
#define AW_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "deflate.h"
#include "frame.h"
#include "hub.h"
#include "idem.h"
#include "jwt.h"
#include "metrics.h"
#include "runs.h"
#include "tickets.h"
#include "tls.h"

struct session;

typedef struct server {
    /* read-only after server_init */
    uv_loop_t *loop;
    const config_t *cfg;
    jwt_verifier_t jwt;
    hub_t hub;
    tickets_t tickets;
    idem_t idem;
    runs_t runs;
    tls_ctx_t tls;       /* certificate and key, reloaded on SIGHUP */
    bool tls_on;         /* --tls-cert given: every connection is TLS */
    deflater_t deflater; /* compresses shared event frames for deflate sessions */
    metrics_t metrics;
    bool draining;       /* SIGTERM/SIGINT seen: refuse, close, exit */
    int bound_port;      /* the port actually listened on */
    int64_t tick_ms;     /* period of the housekeeping tick */
    frame_t *ping_frame; /* one shared ping frame for every heartbeat */

    /* private */
    uv_tcp_t _listener;
    uv_signal_t _sigterm, _sigint, _sighup;
    uv_timer_t _tick;
    uv_check_t _flush_check;   /* runs after I/O: one write per dirty session */
    uv_idle_t _flush_idle;     /* keeps poll from blocking while flushes wait */
    struct session *_sessions; /* every session, intrusive list */
    size_t nsessions;          /* read-only */
    struct session *_flush_head;
    int64_t _drain_deadline;
    size_t _trim_mark; /* bytes held at the last trim, or the peak since */
    uint64_t _next_conn;
    char _readbuf[65536]; /* shared by all reads: libuv reads one stream at a time */
} server_t;

/* Sets up the loop and modules and starts listening. On failure returns a
 * negative code with a one-line reason in err. */
int server_init(server_t *srv, uv_loop_t *loop, const config_t *cfg, char *err, size_t errlen);

/* Runs until drained. Returns 0 on a clean exit. */
int server_run(server_t *srv);

/* Releases everything server_init made (after server_run returned). */
void server_dispose(server_t *srv);

/* Starts a drain: stop accepting, close every connection with 1001. */
void server_drain(server_t *srv);

/* Next connection id ("c_" + hex), written to out (size >= 24). */
void server_conn_id(server_t *srv, char *out, size_t len);

/* Session list and flush list maintenance (session.c calls these). */
void server_add_session(server_t *srv, struct session *s);
void server_remove_session(server_t *srv, struct session *s);
void server_want_flush(server_t *srv, struct session *s);
void server_cancel_flush(server_t *srv, struct session *s);

/* The loop-shared read buffer (see _readbuf). */
char *server_readbuf(server_t *srv, size_t *len);

#endif
