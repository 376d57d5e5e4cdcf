/* server.h -- the process's event loops and everything they share: the
 * listeners, signals, the periodic tick, the write flush, drain, and the
 * modules' state (hub, tickets, idempotency cache, metrics).
 *
 * Threads: with --threads 1 everything runs on one loop. With more, every
 * loop runs its callbacks under one process-wide lock (lock.h): alone for
 * most, shared for an HTTP request, with a user's shard for a publish;
 * except the delivery path: a session's queue, its writes and its socket
 * belong to its loop alone, which fills the queue from its inbox and writes
 * without the lock. What one loop must do to another loop's session (deliver an event,
 * close it) is handed over, never done from the wrong thread. */
#ifndef AW_SERVER_H
#define AW_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "broker.h"
#include "config.h"
#include "deflate.h"
#include "frame.h"
#include "hub.h"
#include "idem.h"
#include "jwt.h"
#include "map.h"
#include "metrics.h"
#include "runs.h"
#include "tickets.h"
#include "tls.h"

struct session;
struct server;
struct server_task;

/* An event frame for a session of another loop, waiting in that loop's
 * inbox (the frame reference is the inbox's). */
typedef struct delivery {
    struct session *s;
    frame_t *f;
    uint64_t seq;
} delivery_t;

/* One event loop and the connections it owns. Loop 0 runs on the main
 * thread and also owns signals, agents and the process-wide housekeeping;
 * loops 1..n-1 run on their own threads. Each has its own listener on the
 * same port (SO_REUSEPORT), so the kernel spreads connections over them. A
 * session belongs to the loop that accepted it until it is freed: only that
 * thread touches its socket. */
typedef struct server_loop {
    struct server *srv;
    uv_loop_t *loop;
    unsigned index;
    size_t nsessions; /* read-only */
    /* Written by this loop only, read by any (metrics): relaxed atomics. */
    _Atomic int64_t queue_bytes;     /* bytes waiting in this loop's queues */
    int64_t queue_peak;              /* their most since the last frame cache trim (own thread) */
    _Atomic uint64_t bytes_sent;     /* bytes written to this loop's sockets */
    _Atomic uint64_t bytes_received; /* bytes read from them */
    _Atomic uint64_t http_requests;  /* HTTP requests read on them */
    _Atomic int64_t cache_bytes;     /* bytes in this loop's frame cache, as of its last trim */
    /* private */
    uv_thread_t _thread;
    uv_tcp_t _listener;
    uv_timer_t _tick;
    uv_check_t _flush_check;   /* runs after I/O: one write per dirty session */
    uv_idle_t _flush_idle;     /* keeps poll from blocking while flushes wait */
    uv_async_t _wake;          /* other loops queued work for this one */
    _Atomic bool _work;        /* ... other than events: closes, tasks, a drain or a stop */
    struct session *_sessions; /* every session of this loop, intrusive list */
    struct session *_flush_head;
    struct session *_close_head; /* closes asked for by other loops */
    struct server_task *_tasks;  /* loop 0: work posted by other loops */
    uv_mutex_t _inbox_lock;      /* guards _inbox only */
    delivery_t *_inbox, *_spare; /* events from other loops, in publish order */
    size_t _inbox_len, _inbox_cap, _spare_cap;
    bool _drain_seen;
    unsigned _accepts;      /* accepted in this loop turn */
    bool _accept_deferred;  /* a connection waits for the next turn */
    int64_t _accept_log_ms; /* last "accept failed" line, and failures since */
    uint64_t _accept_fails;
    int64_t _cache_trim_ms; /* last frame_cache_trim on this loop's thread */
    deflater_t deflater;    /* compresses event frames on this loop's thread (shard holders too) */
    char _readbuf[65536];   /* shared by all reads: libuv reads one stream at a time */
} server_loop_t;

typedef struct server {
    /* read-only after server_init */
    const config_t *cfg;
    jwt_verifier_t jwt;
    hub_t hub;
    tickets_t tickets;
    idem_t idem;
    runs_t runs;
    tls_ctx_t tls;       /* certificate and key, reloaded on SIGHUP */
    bool tls_on;         /* --tls-cert given: every connection is TLS */
    deflater_t deflater; /* compresses event frames off the loops' threads */
    metrics_t metrics;
    broker_t *broker;           /* where users' streams live (broker.h) */
    broker_t memory_broker;     /* the embedded default */
    struct cluster *cluster;    /* --redis: users' streams on Redis shards, else NULL */
    struct durable *durable;    /* --data-dir: users' streams on disk too, else NULL */
    struct jwks *jwks;          /* --jwks-url/--jwks-file: the keys kept fresh, else NULL */
    map_t _stored_keys;         /* --data-dir: idempotency keys of events being stored */
    struct older_chunk *_older; /* --data-dir: events read from disk for a replay */
    char store_failed[256];     /* why the last write to the store failed, "" when it works */
    int64_t _next_trim_ms;
    bool draining;        /* SIGTERM/SIGINT seen: refuse, close, exit */
    int bound_port;       /* the port actually listened on */
    int64_t tick_ms;      /* period of the housekeeping tick */
    frame_t *ping_frame;  /* one shared ping frame for every heartbeat */
    server_loop_t *loops; /* loops[0] is the main thread's */
    unsigned nloops;
    size_t nsessions;  /* read-only: sessions of all loops */
    size_t tcp_cap;    /* read-only: sessions allowed at once (limits and descriptors) */
    size_t ip_cap;     /* read-only: sessions one address may hold */
    size_t linger_cap; /* read-only: refused connections linger only below this */
    _Atomic uint64_t
        body_bytes_in_flight; /* request bodies reserved (--max-request-bytes-in-flight) */

    /* private */
    uv_signal_t _sigterm, _sigint, _sighup;
    int64_t _drain_deadline;
    size_t _trim_mark; /* bytes held at the last trim, or the peak since */
    uint64_t _next_conn;
    bool _stopping;         /* drained: every loop closes its handles */
    int64_t _refuse_log_ms; /* last "connection refused" line */
    map_t _ips;             /* address -> sessions (uintptr_t) */
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

/* Counts a new connection of address ip; false when the address holds its
 * share (ip_cap) already. Under the lock. */
bool server_ip_admit(server_t *srv, const char *ip);
void server_ip_release(server_t *srv, const char *ip);

/* Next connection id ("c_" + hex), written to out (size >= 24). */
void server_conn_id(server_t *srv, char *out, size_t len);

/* Session list and flush list maintenance (session.c calls these, on the
 * session's own loop s->lp). */
void server_add_session(server_loop_t *lp, struct session *s);
void server_remove_session(server_loop_t *lp, struct session *s);
void server_want_flush(struct session *s);
void server_cancel_flush(struct session *s);

/* Hands event frame f (number seq) for session s to s's loop, which queues
 * it on its next turn. 0 or AW_ENOMEM. */
int server_post_delivery(struct session *s, frame_t *f, uint64_t seq);

/* Queues on their sessions the events other loops handed to lp (lp's own
 * thread only). */
void server_drain_inbox(server_loop_t *lp);

/* Forgets the inbox entries of a session being freed (its own thread). */
void server_purge_inbox(server_loop_t *lp, struct session *s);

/* Per-loop counters added up into srv->metrics (bytes_sent, queue_bytes). */
void server_sum_counters(server_t *srv);

/* Asks the session's own loop to close it with code and reason (used when
 * another loop decides the close: API disconnect, slow consumer). */
void server_request_close(struct session *s);

/* The loop this thread runs, NULL outside the server's threads. */
server_loop_t *server_current_loop(void);

/* The loop-shared read buffer (see _readbuf). */
char *server_readbuf(server_loop_t *lp, size_t *len);

#endif
