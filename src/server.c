/* server.c -- the event loop's fixed parts: the listener, signals, the
 * housekeeping tick, the end-of-turn flush, and the drain. It owns the list
 * of sessions but nothing of their protocol. */
#include "server.h"

#include "api.h"
#include "cluster.h"
#include "jwks.h"
#include "stored.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aw.h"
#include "event.h"
#include "jalloc.h"
#include "lock.h"
#include "log.h"
#include "session.h"
#include "ws.h"

#define TRIM_STEP_BYTES ((size_t)8 << 20)
#define ACCEPT_BURST    128 /* connections accepted per loop turn before other work */
#define FD_RESERVE      256 /* descriptors kept for listeners, agents and one burst */
#define SESSION_SPARE   64  /* TCP sessions allowed past --max-connections (HTTP API) */

/* ---- the loops' shared state (the lock itself is lock.c's) ---- */

typedef struct server_task {
    struct server_task *next;
    void (*fn)(void *arg);
    void *arg;
} server_task_t;

static server_t *the_server; /* set by server_init: the lock and main-loop work need it */
static bool threaded;        /* more than one loop: the lock is real */
static _Thread_local server_loop_t *this_loop;

server_loop_t *server_current_loop(void)
{
    return this_loop;
}

bool aw_on_main_thread(void)
{
    return !threaded || (this_loop && this_loop->index == 0);
}

int aw_on_main(void (*fn)(void *arg), void *arg)
{
    if (aw_on_main_thread()) {
        aw_lock();
        fn(arg);
        aw_unlock();
        return AW_OK;
    }
    server_task_t *t = malloc(sizeof *t);
    if (!t)
        return AW_ENOMEM;
    t->fn = fn;
    t->arg = arg;
    aw_lock();
    server_loop_t *lp0 = &the_server->loops[0];
    t->next = NULL;
    server_task_t **tail = &lp0->_tasks;
    while (*tail) /* rare (agent starts and stops), so a walk is fine */
        tail = &(*tail)->next;
    *tail = t;
    atomic_store(&lp0->_work, true);
    aw_unlock();
    uv_async_send(&lp0->_wake);
    return AW_OK;
}

/* ---- per-loop callbacks ---- */

static void on_idle(uv_idle_t *idle);

static void on_connection(uv_stream_t *listener, int status)
{
    server_loop_t *lp = listener->data;
    if (status < 0) {
        /* One line a second at most: a client retrying in a loop would
         * otherwise turn every failure into a line. */
        lp->_accept_fails++;
        int64_t now = aw_now_ms();
        if (now - lp->_accept_log_ms >= 1000) {
            log_kv(LOG_WARN, "accept failed", "error", uv_strerror(status), "#failures",
                   (long long)lp->_accept_fails, NULL);
            lp->_accept_log_ms = now;
            lp->_accept_fails = 0;
        }
        return;
    }
    if (lp->_accepts >= ACCEPT_BURST) {
        /* Not accepting now makes libuv stop polling the listener until
         * the check phase accepts it: a connection storm gets a bounded
         * share of each turn, and open connections keep being served. */
        lp->_accept_deferred = true;
        if (!uv_is_active((uv_handle_t *)&lp->_flush_idle))
            uv_idle_start(&lp->_flush_idle, on_idle);
        return;
    }
    lp->_accepts++;
    aw_lock();
    session_accept(lp, listener);
    aw_unlock();
}

/* The end of a loop turn: every session that queued frames during the turn
 * writes them in one vectored write. */
static void on_flush(uv_check_t *check)
{
    server_loop_t *lp = check->data;
    lp->_accepts = 0;
    if (lp->_accept_deferred) {
        lp->_accept_deferred = false;
        lp->_accepts = 1;
        aw_lock();
        session_accept(lp, (uv_stream_t *)&lp->_listener); /* polls the listener again */
        aw_unlock();
    }
    /* No lock: queues and sockets are this loop's own (server.h). */
    server_drain_inbox(lp);
    while (lp->_flush_head) {
        session_t *s = lp->_flush_head;
        server_cancel_flush(s);
        session_flush(s);
    }
    uv_idle_stop(&lp->_flush_idle);
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

static void drain_loop(server_loop_t *lp);

/* Work other loops handed to this one: closes, a drain, a stop, and on loop
 * 0 the agent calls (aw_on_main). Wakes for flushes need nothing here: the
 * check phase after this poll writes them. */
static void on_wake(uv_async_t *a)
{
    server_loop_t *lp = a->data;
    server_t *srv = lp->srv;
    /* The bulk of the inbox goes out without the lock, as in on_flush; what
     * other loops post meanwhile is drained again under it, below, before
     * any close or drain they asked for after posting. */
    server_drain_inbox(lp);
    if (!atomic_exchange(&lp->_work, false))
        return; /* only events: nothing else was asked for */
    aw_lock();
    if (srv->_stopping) {
        /* sessions first, through their own close (which frees them):
         * a refused one may still be lingering */
        for (session_t *s = lp->_sessions, *next; s; s = next) {
            next = s->_next;
            session_abort(s, "stopped");
        }
        uv_walk(lp->loop, close_handle, NULL);
        aw_unlock();
        return;
    }
    server_drain_inbox(lp); /* first: events published before a close or drain go out before it */
    if (srv->draining && !lp->_drain_seen)
        drain_loop(lp);
    while (lp->_close_head) {
        session_t *s = lp->_close_head;
        lp->_close_head = s->_close_next;
        s->_close_queued = false;
        session_close(s, s->_close_req_code, s->_close_req_reason);
    }
    while (lp->_tasks) {
        server_task_t *t = lp->_tasks;
        lp->_tasks = t->next;
        t->fn(t->arg);
        free(t);
    }
    aw_unlock();
}

static void wake_all(server_t *srv)
{
    for (unsigned i = 0; i < srv->nloops; i++)
        if (&srv->loops[i] != this_loop) {
            atomic_store(&srv->loops[i]._work, true);
            uv_async_send(&srv->loops[i]._wake);
        }
}

static void finish(server_t *srv)
{
    log_kv(LOG_INFO, "stopped", "#connections_left", (long long)srv->nsessions, NULL);
    srv->_stopping = true;
    wake_all(srv);
    if (srv->cluster)
        cluster_stop(srv->cluster); /* its handles close through hiredis first */
    if (srv->durable)
        stored_stop(srv); /* the writer ends before its handles close */
    jwks_stop(srv->jwks);
    uv_walk(srv->loops[0].loop, close_handle, NULL);
}

/* Gives freed memory back to the system after a large drop in what the
 * server holds (history, queues, and the frame caches, which free a burst's
 * frames a second or two after the queues let go of them): glibc keeps
 * freed chunks resident while the heap is fragmented, so a burst would
 * otherwise pin its peak RSS. */
static void trim_memory(server_t *srv)
{
    server_sum_counters(srv);
    size_t held = srv->hub.history.bytes + (size_t)srv->metrics.queue_bytes +
                  (size_t)srv->metrics.frame_cache_bytes;
    if (held > srv->_trim_mark)
        srv->_trim_mark = held;
    else if (srv->_trim_mark - held >= TRIM_STEP_BYTES ||
             (held < srv->_trim_mark / 2 && srv->_trim_mark - held >= TRIM_STEP_BYTES / 8)) {
        malloc_trim(0);
        srv->_trim_mark = held;
    }
}

/* The hub's way to a session: queued now on this loop's own sessions, after
 * the events other loops handed over earlier (so this one is not queued
 * ahead of them); handed over to the session's loop otherwise. */
static int send_to_session(void *ctx, session_t *s, frame_t *f, uint64_t seq, bool first)
{
    (void)ctx;
    frame_t *wf = session_wire_frame(s, f);
    server_loop_t *here = server_current_loop();
    if (first && here)
        server_drain_inbox(here);
    if (here && s->lp != here)
        return server_post_delivery(s, wf, seq); /* its own loop queues it */
    return session_deliver(s, wf, seq);          /* queued, or caught up from history */
}

static void run_to_broker(void *ctx, const char *user, json_t *ev, bool own_run);

static int runs_gate(void *ctx, const char *user, const json_t *ev, int64_t now, char *why,
                     size_t whylen)
{
    return runs_admit(ctx, user, ev, now, why, whylen);
}

/* Cluster mode: an agent's event was answered by the user's shard. */
static void on_run_receipt(void *arg, int rc, const hub_receipt_t *r)
{
    (void)arg;
    if (rc != AW_OK)
        log_kv(LOG_WARN | LOG_LIMITED, "agent event refused by the shard", "error",
               r->error[0] ? r->error : aw_strerror(rc), NULL);
}

/* An agent's own run is leased to this node, which renews the lease while
 * it lives; a dead node's runs are ended by another (cluster.lua, reap). */
static void run_to_broker(void *ctx, const char *user, json_t *ev, bool own_run)
{
    server_t *srv = ctx;
    char copy[EVENT_MAX_ID + 1]; /* publishing drops the event's user_id */
    snprintf(copy, sizeof copy, "%s", user);
    broker_pub_t one = {.user = copy, .ev = ev, .own_run = own_run, .gated = !srv->cluster};
    broker_publish(srv->broker, &one, 1, on_run_receipt);
}

static void hold_done(void *arg, int rc)
{
    (void)arg, (void)rc; /* the stream loads for the user's sessions, if any */
}

static void hold_user(void *ctx, const char *user, bool on)
{
    server_t *srv = ctx;
    if (on)
        cluster_user_acquire(srv->cluster, user, hold_done, NULL);
    else
        cluster_user_release(srv->cluster, user);
}

static bool user_in_cluster(void *ctx, const char *user)
{
    server_t *srv = ctx;
    return cluster_user_present(srv->cluster, user);
}

static void each_run(void *ctx, void (*add)(void *acc, const char *user, const char *run_id),
                     void *acc)
{
    server_t *srv = ctx;
    runs_each_agent_run(&srv->runs, add, acc);
}

static void stop_run(void *ctx, const char *user, const char *run_id)
{
    server_t *srv = ctx;
    runs_closed_elsewhere(&srv->runs, user, run_id);
}

static void on_tick(uv_timer_t *t)
{
    server_loop_t *lp = t->data;
    server_t *srv = lp->srv;
    int64_t now = aw_now_ms();
    server_drain_inbox(lp); /* the bulk without the lock, as in on_wake */
    aw_lock();
    for (session_t *s = lp->_sessions, *next; s; s = next) {
        next = s->_next; /* session_tick may close s; it stays linked until its close cb */
        session_tick(s, now);
    }
    server_drain_inbox(lp);
    if (now - lp->_cache_trim_ms >= 1000) {
        /* What stayed unused for a second goes back. The cache may hold as
         * twice as much as this loop's queues did at their peak in that
         * second (queued, and as much again arriving), or --frame-cache-bytes
         * if more: a loop that keeps 100 MiB of large
         * frames in flight reuses them all instead of faulting in fresh
         * memory for a part of them. */
        int64_t room = 2 * lp->queue_peak; /* and as much again being read */
        if (room < srv->cfg->frame_cache_bytes)
            room = srv->cfg->frame_cache_bytes;
        frame_cache_trim((size_t)room);
        api_trim();
        atomic_store_explicit(&lp->cache_bytes, (int64_t)frame_cache_bytes(), memory_order_relaxed);
        lp->_cache_trim_ms = now;
        lp->queue_peak = atomic_load_explicit(&lp->queue_bytes, memory_order_relaxed);
    }
    if (srv->draining && !lp->_drain_seen)
        drain_loop(lp);
    if (srv->draining && now >= srv->_drain_deadline && lp->index != 0) {
        for (session_t *s = lp->_sessions; s; s = s->_next)
            session_abort(s, "drain timeout");
    }
    if (lp->index == 0) {
        tickets_sweep(&srv->tickets, now);
        hub_sweep(&srv->hub, now);
        runs_tick(&srv->runs, now);
        if (srv->cluster)
            cluster_tick(srv->cluster, now);
        if (srv->durable)
            stored_tick(srv, now);
        jwks_tick(srv->jwks, now);
        trim_memory(srv);
        idem_sweep(&srv->idem, now);
    }
    if (lp->index == 0 && srv->draining) {
        /* Agents were told to stop when the drain began; they get their
         * kill ladder (grace, SIGTERM, SIGKILL) even past the deadline, so
         * no process is left behind. */
        int64_t agents_deadline = srv->_drain_deadline + 3 * srv->cfg->agent_kill_grace_ms + 1000;
        bool agents_done = srv->runs.agents_running == 0 || now >= agents_deadline;
        /* what agents and clients published last is stored and answered first */
        bool stored = stored_idle(srv) || now >= srv->_drain_deadline + 5000;
        if (agents_done && stored && (srv->hub.nconns == 0 || now >= srv->_drain_deadline)) {
            for (session_t *s = lp->_sessions; s; s = s->_next)
                session_abort(s, "drain timeout");
            finish(srv);
        }
    }
    aw_unlock();
}

/* SIGHUP: reload the certificate and key. New connections use them; open
 * ones keep the context they were made with. A bad file keeps the old one. */
static void on_sighup(uv_signal_t *sig, int signum)
{
    server_t *srv = sig->data;
    (void)signum;
    aw_lock();
    if (!srv->tls_on) {
        log_kv(LOG_INFO, "SIGHUP: nothing to reload (no TLS)", NULL);
        aw_unlock();
        return;
    }
    char err[256];
    if (tls_ctx_load(&srv->tls, srv->cfg->tls_cert, srv->cfg->tls_key, err, sizeof err) == AW_OK)
        log_kv(LOG_INFO, "TLS certificate reloaded", "cert", srv->cfg->tls_cert, NULL);
    else
        log_kv(LOG_ERROR, "TLS reload failed; keeping the previous certificate", "error", err,
               NULL);
    aw_unlock();
}

static void on_signal(uv_signal_t *sig, int signum)
{
    server_t *srv = sig->data;
    aw_lock();
    if (srv->draining) {
        log_kv(LOG_WARN, "second signal: stopping now", NULL);
        srv->_drain_deadline = 0;
    } else {
        log_kv(LOG_INFO, "draining", "signal", signum == SIGINT ? "SIGINT" : "SIGTERM",
               "#connections", (long long)srv->nsessions, NULL);
        server_drain(srv);
    }
    aw_unlock();
}

/* This loop's part of a drain: close its connections with 1001 and tick
 * soon, so the drain ends promptly. */
static void drain_loop(server_loop_t *lp)
{
    lp->_drain_seen = true;
    for (session_t *s = lp->_sessions; s; s = s->_next)
        session_close(s, WS_CLOSE_GOING_AWAY, "going_away");
    uv_timer_start(&lp->_tick, on_tick, 10, (uint64_t)lp->srv->tick_ms);
}

void server_drain(server_t *srv)
{
    if (srv->draining)
        return;
    aw_lock();
    srv->draining = true;
    srv->_drain_deadline = aw_now_ms() + srv->cfg->drain_timeout_ms;
    /* The listeners stay open until the WebSockets are gone: load balancers
     * read /readyz (503 now) and late clients get a clear 503 draining
     * instead of a refused connection. */
    runs_shutdown(&srv->runs); /* first: their agent_completed reaches the users */
    drain_loop(this_loop ? this_loop : &srv->loops[0]);
    wake_all(srv); /* the other loops drain their own connections */
    aw_unlock();
}

/* A listening socket on the configured address. With several loops each
 * binds its own with SO_REUSEPORT (the first one picks the port when it is
 * 0), so the kernel balances accepted connections across them. */
static int listen_on(server_loop_t *lp, char *err, size_t errlen)
{
    server_t *srv = lp->srv;
    const config_t *cfg = srv->cfg;
    struct sockaddr_storage sa;
    int port = lp->index == 0 ? cfg->listen_port : srv->bound_port;
    if (uv_ip4_addr(cfg->listen_host, port, (struct sockaddr_in *)&sa) != 0 &&
        uv_ip6_addr(cfg->listen_host, port, (struct sockaddr_in6 *)&sa) != 0) {
        snprintf(err, errlen, "--listen: '%s' is not an IPv4 or IPv6 address", cfg->listen_host);
        return AW_EINVAL;
    }
    uv_tcp_init(lp->loop, &lp->_listener);
    lp->_listener.data = lp;
    int rc = 0;
    if (srv->nloops > 1) {
        int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
            rc = uv_translate_sys_error(errno);
            if (fd >= 0)
                close(fd);
        } else {
            rc = uv_tcp_open(&lp->_listener, fd);
        }
    }
    if (rc == 0)
        rc = uv_tcp_bind(&lp->_listener, (struct sockaddr *)&sa, 0);
    if (rc == 0) /* accepted sockets inherit it (Linux): no system call per connection */
        rc = uv_tcp_nodelay(&lp->_listener, 1);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&lp->_listener, 1024, on_connection);
    if (rc != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", cfg->listen, uv_strerror(rc));
        return AW_EIO;
    }
    int len = sizeof sa;
    uv_tcp_getsockname(&lp->_listener, (struct sockaddr *)&sa, &len);
    srv->bound_port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                     : ((struct sockaddr_in *)&sa)->sin_port);
    return AW_OK;
}

static int loop_init(server_t *srv, unsigned index, uv_loop_t *loop, char *err, size_t errlen)
{
    server_loop_t *lp = &srv->loops[index];
    lp->srv = srv;
    lp->index = index;
    lp->loop = loop;
    if (!loop) {
        lp->loop = malloc(sizeof *lp->loop);
        if (!lp->loop || uv_loop_init(lp->loop) != 0) {
            free(lp->loop);
            lp->loop = NULL;
            snprintf(err, errlen, "cannot make event loop %u", index);
            return AW_ENOMEM;
        }
    }
    int rc = listen_on(lp, err, errlen);
    if (rc != AW_OK)
        return rc;
    uv_timer_init(lp->loop, &lp->_tick);
    lp->_tick.data = lp;
    uv_timer_start(&lp->_tick, on_tick, (uint64_t)srv->tick_ms, (uint64_t)srv->tick_ms);
    uv_check_init(lp->loop, &lp->_flush_check);
    lp->_flush_check.data = lp;
    uv_check_start(&lp->_flush_check, on_flush);
    uv_idle_init(lp->loop, &lp->_flush_idle);
    uv_async_init(lp->loop, &lp->_wake, on_wake);
    lp->_wake.data = lp;
    uv_mutex_init(&lp->_inbox_lock);
    deflater_init(&lp->deflater, (size_t)srv->cfg->deflate_min_bytes);
    return AW_OK;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static unsigned loop_count(const config_t *cfg)
{
    if (cfg->threads > 0)
        return (unsigned)cfg->threads;
    unsigned n = uv_available_parallelism();
    return n < 1 ? 1 : n > 64 ? 64 : n;
}

int server_init(server_t *srv, uv_loop_t *loop, const config_t *cfg, char *err, size_t errlen)
{
    memset(srv, 0, sizeof *srv);
    srv->cfg = cfg;
    the_server = srv;
    int64_t shortest = cfg->heartbeat_interval_ms < cfg->handshake_timeout_ms
                           ? cfg->heartbeat_interval_ms
                           : cfg->handshake_timeout_ms;
    /* One timer per loop for all its sessions: deadlines are checked at tick
     * granularity. */
    srv->tick_ms = clamp64(shortest / 4, 10, 1000);
    srv->nloops = loop_count(cfg);
    if ((cfg->redis || cfg->data_dir) && srv->nloops > 1) {
        /* cluster mode answers from Redis replies, --data-dir from the
         * writer thread's commits, on the main loop */
        log_kv(LOG_INFO,
               cfg->redis ? "cluster mode runs one event loop"
                          : "--data-dir runs one event loop and a writer thread",
               "#threads_asked", (long long)srv->nloops, NULL);
        srv->nloops = 1;
    }
    /* Sessions past the descriptor limit could not be served: they are
     * accepted and closed at once instead, before accept itself fails. */
    struct rlimit rl;
    size_t fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                     ? (size_t)rl.rlim_cur
                     : (size_t)1 << 20;
    srv->tcp_cap = fds > 2 * FD_RESERVE ? fds - FD_RESERVE : fds / 2;
    if (cfg->max_connections > 0 && (size_t)cfg->max_connections + SESSION_SPARE < srv->tcp_cap)
        srv->tcp_cap = (size_t)cfg->max_connections + SESSION_SPARE; /* room for API calls */
    /* One address gets at most seven eighths of that unless told otherwise,
     * so others (and /healthz) always find room when one floods. */
    srv->linger_cap = srv->tcp_cap - srv->tcp_cap / 8;
    srv->ip_cap =
        cfg->max_connections_per_ip > 0 ? (size_t)cfg->max_connections_per_ip : srv->linger_cap;
    if (map_init(&srv->_ips) != AW_OK) {
        snprintf(err, errlen, "out of memory");
        return AW_ENOMEM;
    }
    srv->loops = calloc(srv->nloops, sizeof *srv->loops);
    if (!srv->loops) {
        snprintf(err, errlen, "out of memory");
        return AW_ENOMEM;
    }
    threaded = srv->nloops > 1;
    aw_lock_init(threaded, srv->nloops);
#ifdef AW_LOCK_STATS
    aw_lockstat_start(loop, srv->nloops);
#endif
    agent_options_t aopts = {
        .loop = loop,
        .kill_grace_ms = cfg->agent_kill_grace_ms,
        .max_line_bytes = (size_t)cfg->agent_max_line_bytes,
        .env_names = cfg->agent_env,
    };
    agent_backend_t *backend;
    int arc = agent_backend_create(cfg->agent, &aopts, &backend, err, errlen);
    if (arc != AW_OK)
        return arc;
    if (hub_init(&srv->hub, cfg, &srv->metrics) != AW_OK ||
        tickets_init(&srv->tickets, (size_t)cfg->max_tickets_per_user, (size_t)cfg->max_tickets) !=
            AW_OK ||
        idem_init(&srv->idem, cfg->idempotency_ttl_ms, (size_t)cfg->idempotency_max_keys) !=
            AW_OK ||
        runs_init(&srv->runs, &srv->hub, cfg, &srv->metrics, backend) != AW_OK) {
        snprintf(err, errlen, "out of memory");
        return AW_ENOMEM;
    }
    broker_memory_init(&srv->memory_broker, srv);
    srv->broker = &srv->memory_broker;
    if (cfg->data_dir) {
        int src = stored_open(srv, loop, err, errlen);
        if (src != AW_OK)
            return src;
        /* runs' events are stored like the API's (runs.c asks the gate itself) */
        srv->runs.remote_publish = run_to_broker;
        srv->runs.remote_ctx = srv;
    }
    srv->hub.send = send_to_session;
    srv->hub.send_ctx = srv;
    srv->hub.gate = runs_gate;
    srv->hub.gate_ctx = &srv->runs;
    if (cfg->redis) {
        int crc = cluster_init(&srv->cluster, loop, cfg, &srv->hub, &srv->metrics, err, errlen);
        if (crc != AW_OK)
            return crc;
        srv->hub.gate = NULL; /* the run gate is the shard's script */
        srv->broker = cluster_broker(srv->cluster);
        srv->runs.remote_publish = run_to_broker;
        srv->runs.remote_connected = user_in_cluster;
        srv->runs.remote_hold = hold_user;
        srv->runs.remote_ctx = srv;
        cluster_set_runs(srv->cluster, each_run, srv, stop_run);
    }
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
    for (unsigned i = 0; i < srv->nloops; i++) {
        int rc = loop_init(srv, i, i == 0 ? loop : NULL, err, errlen);
        if (rc != AW_OK)
            return rc;
    }
    this_loop = &srv->loops[0];
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

static void loop_thread(void *arg)
{
    server_loop_t *lp = arg;
    this_loop = lp;
    frame_cache_attach((size_t)lp->srv->cfg->frame_cache_bytes);
    uv_run(lp->loop, UV_RUN_DEFAULT);
    frame_cache_detach();
    api_release();
    jalloc_release();
}

int server_run(server_t *srv)
{
    if (srv->durable)
        stored_start(srv);
    char addr[96];
    snprintf(addr, sizeof addr, "%s%s%s:%d", strchr(srv->cfg->listen_host, ':') ? "[" : "",
             srv->cfg->listen_host, strchr(srv->cfg->listen_host, ':') ? "]" : "", srv->bound_port);
    for (unsigned i = 1; i < srv->nloops; i++) {
        if (uv_thread_create(&srv->loops[i]._thread, loop_thread, &srv->loops[i]) != 0) {
            log_kv(LOG_ERROR, "cannot start a loop thread", NULL);
            return AW_EIO;
        }
        char name[24];
        snprintf(name, sizeof name, "aw-loop-%u", i);
        aw_thread_name(srv->loops[i]._thread, name);
    }
    log_kv(LOG_INFO, "listening", "addr", addr, "#threads", (long long)srv->nloops, NULL);
    frame_cache_attach((size_t)srv->cfg->frame_cache_bytes);
    uv_run(srv->loops[0].loop, UV_RUN_DEFAULT);
    frame_cache_detach();
    api_release();
    for (unsigned i = 1; i < srv->nloops; i++)
        uv_thread_join(&srv->loops[i]._thread);
    return AW_OK;
}

void server_dispose(server_t *srv)
{
    for (unsigned i = 1; i < srv->nloops; i++) {
        server_loop_t *lp = &srv->loops[i];
        if (lp->loop) {
            uv_run(lp->loop, UV_RUN_NOWAIT); /* close callbacks of its handles */
            uv_loop_close(lp->loop);
            free(lp->loop);
        }
    }
    for (unsigned i = 0; i < srv->nloops; i++) {
        server_loop_t *lp = &srv->loops[i];
        for (size_t j = 0; j < lp->_inbox_len; j++)
            frame_unref(lp->_inbox[j].f);
        free(lp->_inbox);
        free(lp->_spare);
        if (lp->loop) {
            uv_mutex_destroy(&lp->_inbox_lock);
            deflater_dispose(&lp->deflater);
        }
    }
    free(srv->loops);
    frame_unref(srv->ping_frame);
    runs_dispose(&srv->runs);
    cluster_free(srv->cluster);
    stored_close(srv);
    deflater_dispose(&srv->deflater);
    tls_ctx_dispose(&srv->tls);
    hub_dispose(&srv->hub);
    tickets_dispose(&srv->tickets);
    idem_dispose(&srv->idem);
    map_dispose(&srv->_ips, NULL);
    jwks_free(srv->jwks);
    jwt_verifier_dispose(&srv->jwt);
#ifdef AW_LOCK_STATS
    aw_lockstat_dump("exit");
#endif
    aw_lock_dispose();
}

bool server_ip_admit(server_t *srv, const char *ip)
{
    size_t len = strlen(ip);
    uintptr_t n = (uintptr_t)map_get(&srv->_ips, ip, len);
    if (n >= srv->ip_cap)
        return false;
    return map_put(&srv->_ips, ip, len, (void *)(n + 1)) != NULL;
}

void server_ip_release(server_t *srv, const char *ip)
{
    size_t len = strlen(ip);
    uintptr_t n = (uintptr_t)map_get(&srv->_ips, ip, len);
    if (n <= 1)
        map_remove(&srv->_ips, ip, len);
    else
        map_put(&srv->_ips, ip, len, (void *)(n - 1));
}

void server_conn_id(server_t *srv, char *out, size_t len)
{
    snprintf(out, len, "c_%s%08llx", srv->hub._node, (unsigned long long)++srv->_next_conn);
}

void server_add_session(server_loop_t *lp, session_t *s)
{
    s->_prev = NULL;
    s->_next = lp->_sessions;
    if (lp->_sessions)
        lp->_sessions->_prev = s;
    lp->_sessions = s;
    lp->nsessions++;
    lp->srv->nsessions++;
}

void server_remove_session(server_loop_t *lp, session_t *s)
{
    if (s->_prev)
        s->_prev->_next = s->_next;
    else
        lp->_sessions = s->_next;
    if (s->_next)
        s->_next->_prev = s->_prev;
    lp->nsessions--;
    lp->srv->nsessions--;
    if (s->_close_queued) {
        session_t **pp = &lp->_close_head;
        while (*pp != s)
            pp = &(*pp)->_close_next;
        *pp = s->_close_next;
        s->_close_queued = false;
    }
}

void server_want_flush(session_t *s)
{
    if (s->_flush_queued)
        return;
    server_loop_t *lp = s->lp;
    s->_flush_queued = true;
    s->_flush_prev = NULL;
    s->_flush_next = lp->_flush_head;
    if (lp->_flush_head)
        lp->_flush_head->_flush_prev = s;
    lp->_flush_head = s;
    if (!uv_is_active((uv_handle_t *)&lp->_flush_idle))
        uv_idle_start(&lp->_flush_idle, on_idle);
}

void server_cancel_flush(session_t *s)
{
    if (!s->_flush_queued)
        return;
    server_loop_t *lp = s->lp;
    if (s->_flush_prev)
        s->_flush_prev->_flush_next = s->_flush_next;
    else
        lp->_flush_head = s->_flush_next;
    if (s->_flush_next)
        s->_flush_next->_flush_prev = s->_flush_prev;
    s->_flush_queued = false;
}

void server_request_close(session_t *s)
{
    if (s->_close_queued)
        return;
    server_loop_t *lp = s->lp;
    s->_close_queued = true;
    s->_close_next = lp->_close_head;
    lp->_close_head = s;
    atomic_store(&lp->_work, true);
    uv_async_send(&lp->_wake);
}

int server_post_delivery(session_t *s, frame_t *f, uint64_t seq)
{
    server_loop_t *lp = s->lp;
    uv_mutex_lock(&lp->_inbox_lock);
    if (lp->_inbox_len == lp->_inbox_cap) {
        size_t cap = lp->_inbox_cap ? lp->_inbox_cap * 2 : 256;
        delivery_t *p = realloc(lp->_inbox, cap * sizeof *p);
        if (!p) {
            uv_mutex_unlock(&lp->_inbox_lock);
            return AW_ENOMEM;
        }
        lp->_inbox = p;
        lp->_inbox_cap = cap;
    }
    bool was_empty = lp->_inbox_len == 0;
    lp->_inbox[lp->_inbox_len++] = (delivery_t){.s = s, .f = frame_ref(f), .seq = seq};
    uv_mutex_unlock(&lp->_inbox_lock);
    if (was_empty)
        uv_async_send(&lp->_wake);
    return AW_OK;
}

void server_drain_inbox(server_loop_t *lp)
{
    if (!threaded)
        return;
    for (;;) {
        /* Take the whole inbox and leave the spare array in its place, so
         * other loops go on posting while this one delivers. */
        uv_mutex_lock(&lp->_inbox_lock);
        size_t n = lp->_inbox_len;
        delivery_t *batch = lp->_inbox;
        size_t cap = lp->_inbox_cap;
        lp->_inbox = lp->_spare;
        lp->_inbox_cap = lp->_spare_cap;
        lp->_inbox_len = 0;
        lp->_spare = batch;
        lp->_spare_cap = cap;
        uv_mutex_unlock(&lp->_inbox_lock);
        if (n == 0)
            return;
        for (size_t i = 0; i < n; i++) {
            session_deliver(batch[i].s, batch[i].f, batch[i].seq);
            frame_unref(batch[i].f);
        }
    }
}

void server_purge_inbox(server_loop_t *lp, session_t *s)
{
    if (!threaded)
        return;
    uv_mutex_lock(&lp->_inbox_lock);
    size_t keep = 0;
    for (size_t i = 0; i < lp->_inbox_len; i++) {
        if (lp->_inbox[i].s == s)
            frame_unref(lp->_inbox[i].f);
        else
            lp->_inbox[keep++] = lp->_inbox[i];
    }
    lp->_inbox_len = keep;
    uv_mutex_unlock(&lp->_inbox_lock);
}

void server_sum_counters(server_t *srv)
{
    int64_t queued = 0, cached = 0;
    uint64_t sent = 0, received = 0, requests = 0;
    for (unsigned i = 0; i < srv->nloops; i++) {
        received += atomic_load_explicit(&srv->loops[i].bytes_received, memory_order_relaxed);
        requests += atomic_load_explicit(&srv->loops[i].http_requests, memory_order_relaxed);
        queued += atomic_load_explicit(&srv->loops[i].queue_bytes, memory_order_relaxed);
        cached += atomic_load_explicit(&srv->loops[i].cache_bytes, memory_order_relaxed);
        sent += atomic_load_explicit(&srv->loops[i].bytes_sent, memory_order_relaxed);
    }
    srv->metrics.queue_bytes = queued;
    srv->metrics.frame_cache_bytes = cached;
    srv->metrics.bytes_sent = sent;
    srv->metrics.bytes_received = received;
    srv->metrics.http_requests = requests;
    srv->metrics.events_published = hub_published(&srv->hub);
    srv->metrics.events_delivered = hub_delivered(&srv->hub);
}

char *server_readbuf(server_loop_t *lp, size_t *len)
{
    *len = sizeof lp->_readbuf;
    return lp->_readbuf;
}
