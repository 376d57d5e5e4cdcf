/* session.c -- one connection's I/O: accepting and reading, the outgoing
 * queue and the close (the HTTP phase before the upgrade is
 * session_http.c's, the WebSocket frame loop session_ws.c's). It owns the session's memory
 * and frees it only in the handle's close callback. It never decides who
 * receives an event (the hub does) and never parses JSON messages (client.c
 * does). */
#include "session.h"

#include <linux/sockios.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "aw.h"
#include "client.h"
#include "jalloc.h"
#include "lock.h"
#include "log.h"
#include "server.h"
#include "session_int.h"

#define QUEUE_MIN   8
#define WRITE_BATCH 64 /* frames per writev: bounded so one writer cannot starve */

static void on_close(uv_handle_t *h);
static void on_plain(void *arg, char *data, size_t len);
static void tls_write_pending(session_t *s);
static void replay_pump(session_t *s);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

void session_read_start(session_t *s)
{
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
}

/* Reads go to the loop's shared buffer, except while a large payload streams
 * in (session_ws_direct). */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    session_t *s = h->data;
    (void)suggested;
    size_t len;
    if (!s->_tls && session_ws_direct(s, buf))
        return;
    buf->base = server_readbuf(s->lp, &len);
    buf->len = buf->base ? len : 0;
}

static void peer_address(session_t *s)
{
    struct sockaddr_storage sa;
    int salen = sizeof sa;
    s->ip[0] = '\0';
    int port = 0;
    if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&sa, &salen) == 0) {
        if (sa.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&sa, s->ip, sizeof s->ip);
            port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
        } else {
            uv_ip4_name((struct sockaddr_in *)&sa, s->ip, sizeof s->ip);
            port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
        }
    }
    snprintf(s->remote, sizeof s->remote, "%s:%d", s->ip, port);
}

int session_accept(server_loop_t *lp, uv_stream_t *listener)
{
    server_t *srv = lp->srv;
    session_t *s = calloc(1, sizeof *s);
    if (!s)
        return AW_ENOMEM;
    s->srv = srv;
    s->lp = lp;
    uv_tcp_init(lp->loop, &s->tcp);
    s->tcp.data = s;
    if (uv_accept(listener, (uv_stream_t *)&s->tcp) != 0) {
        uv_close((uv_handle_t *)&s->tcp, (uv_close_cb)free);
        return AW_EIO;
    }
    if (srv->nsessions >= srv->tcp_cap) { /* server.c: limits and descriptors */
        srv->metrics.refused_tcp++;
        int64_t now = aw_now_ms();
        if (now - srv->_refuse_log_ms >= 1000) { /* a line a second at most */
            log_kv(LOG_WARN, "connection refused: too many", "#sessions", (long long)srv->nsessions,
                   "#limit", (long long)srv->tcp_cap, NULL);
            srv->_refuse_log_ms = now;
        }
        uv_close((uv_handle_t *)&s->tcp, (uv_close_cb)free);
        return AW_ELIMIT;
    }
    peer_address(s);
    if (server_ip_admit(srv, s->ip)) {
        s->_ip_counted = true;
    } else {
        /* The address holds its share: 429 at once (over TLS, after the
         * handshake), then what the peer sends is read and dropped for a
         * moment so it reads the answer instead of a reset. While the
         * server is near capacity the connection is just closed, so refused
         * connections never eat the room kept for others. */
        srv->metrics.refusals[REFUSAL_TOO_MANY_CONNECTIONS]++;
        log_kv(LOG_INFO | LOG_LIMITED, "refused", "remote", s->remote, "reason",
               metrics_refusal_name(REFUSAL_TOO_MANY_CONNECTIONS), "detail",
               "too many connections from this address", "#status", 429LL, NULL);
        if (srv->nsessions >= srv->linger_cap) {
            srv->metrics.refused_tcp++;
            uv_close((uv_handle_t *)&s->tcp, (uv_close_cb)free);
            return AW_ELIMIT;
        }
        s->_refused_ip = true;
    }
    if (srv->tls_on && !(s->_tls = tls_conn_new(&srv->tls))) {
        if (s->_ip_counted)
            server_ip_release(srv, s->ip);
        uv_close((uv_handle_t *)&s->tcp, (uv_close_cb)free);
        return AW_ENOMEM;
    }
    /* TCP_NODELAY: inherited from the listener (server.c) */
    if (srv->cfg->send_buffer_bytes > 0) {
        /* A fixed kernel buffer bounds what a stalled reader can absorb
         * outside our queue, so --queue-limit-bytes decides sooner. */
        int size = (int)srv->cfg->send_buffer_bytes;
        uv_send_buffer_size((uv_handle_t *)&s->tcp, &size);
    }
    server_conn_id(srv, s->id, sizeof s->id);
    s->state = SESSION_HTTP;
    s->connected_ms = s->_last_rx_ms = s->_progress_ms = aw_now_ms();
    s->_deadline_ms = s->connected_ms + srv->cfg->handshake_timeout_ms;
    server_add_session(lp, s);
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
    if (s->_refused_ip && !s->_tls)
        session_http_refuse_ip(s); /* at once; TLS answers once its handshake is done */
    return AW_OK;
}

/* ---- output queue ---- */

/* The loop's counters are written by its own thread only (server.h). */
static void add_queued(session_t *s, int64_t d)
{
    _Atomic int64_t *c = &s->lp->queue_bytes;
    int64_t v = atomic_load_explicit(c, memory_order_relaxed) + d;
    atomic_store_explicit(c, v, memory_order_relaxed);
    if (v > s->lp->queue_peak)
        s->lp->queue_peak = v; /* the frame cache's room (server.c) */
}

static void add_sent(session_t *s, uint64_t d)
{
    _Atomic uint64_t *c = &s->lp->bytes_sent;
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + d,
                          memory_order_relaxed);
}

static bool queue_push(session_t *s, frame_t *f)
{
    if (s->_qlen == s->_qcap) {
        uint32_t cap = s->_qcap ? s->_qcap * 2 : QUEUE_MIN;
        frame_t **q = malloc(cap * sizeof *q);
        if (!q)
            return false;
        for (uint32_t i = 0; i < s->_qlen; i++)
            q[i] = s->_q[(s->_qhead + i) % s->_qcap];
        free(s->_q);
        s->_q = q;
        s->_qhead = 0;
        s->_qcap = cap;
    }
    s->_q[(s->_qhead + s->_qlen) % s->_qcap] = frame_ref(f);
    s->_qlen++;
    s->_qbytes += f->len;
    add_queued(s, f->len);
    return true;
}

/* Drops queued frames from index `from` (frames before it are in flight).
 * An empty queue gives its ring back; a busy connection keeps it between
 * writes and the tick takes it back once the connection is idle. */
static void queue_truncate(session_t *s, uint32_t from)
{
    while (s->_qlen > from) {
        frame_t *f = s->_q[(s->_qhead + s->_qlen - 1) % s->_qcap];
        s->_qbytes -= f->len;
        add_queued(s, -(int64_t)f->len);
        frame_unref(f);
        s->_qlen--;
    }
    if (s->_qlen == 0 && s->_q) {
        free(s->_q);
        s->_q = NULL;
        s->_qcap = s->_qhead = 0;
    }
}

int session_enqueue(session_t *s, frame_t *f)
{
    if (!queue_push(s, f))
        return AW_ENOMEM;
    server_want_flush(s);
    return AW_OK;
}

/* Bytes owed to the peer that the kernel has not taken yet. */
size_t session_backlog(const session_t *s)
{
    return s->_qbytes - s->_inflight_bytes +
           uv_stream_get_write_queue_size((const uv_stream_t *)&s->tcp);
}

/* Half the queue limit: live events past it are read from history instead
 * (catch-up), so a burst never needs more queue than this. */
static size_t watermark(const session_t *s)
{
    return (size_t)s->srv->cfg->queue_limit_bytes / 2;
}

static void slow_consumer(session_t *s, size_t lag)
{
    log_kv(LOG_WARN | LOG_LIMITED, "slow consumer", "conn", s->id, "user",
           s->user ? s->user->id : NULL, "#lag_bytes", (long long)lag, NULL);
    queue_truncate(s, s->_inflight); /* free what is not being written at once */
    s->replay_next = 0;
    session_close(s, WS_CLOSE_SLOW_CONSUMER, "slow_consumer");
}

int session_send(session_t *s, frame_t *f)
{
    if (s->state != SESSION_OPEN)
        return AW_ECLOSED;
    if (s->_qbytes + f->len > (size_t)s->srv->cfg->queue_limit_bytes) {
        slow_consumer(s, s->_qbytes + f->len);
        return AW_ECLOSED;
    }
    return session_enqueue(s, f);
}

frame_t *session_wire_frame(session_t *s, frame_t *f)
{
    if (!s->deflate)
        return f;
    server_loop_t *lp = server_current_loop(); /* each thread compresses with its own streams */
    return deflater_frame(lp ? &lp->deflater : &s->srv->deflater, f, s->zparams.server_window_bits);
}

int session_deliver(session_t *s, frame_t *f, uint64_t seq)
{
    if (s->state != SESSION_OPEN || s->echo)
        return AW_ECLOSED;
    if (s->replay_next || seq <= s->_last_seq)
        return AW_OK; /* catching up (the pump reads it from history), or queued already */
    if (session_backlog(s) + f->len > watermark(s)) {
        s->replay_next = seq;
        replay_pump(s); /* sends it now if the backlog allows */
        return AW_OK;
    }
    s->_last_seq = seq;
    return session_enqueue(s, f);
}

int session_send_json(session_t *s, const json_t *obj)
{
    char *text = jalloc_dumps(obj, JSON_COMPACT);
    if (!text)
        return AW_ENOMEM;
    frame_t *f = frame_ws(WS_OP_TEXT, text, strlen(text));
    free(text);
    if (!f)
        return AW_ENOMEM;
    int rc = session_send(s, f);
    frame_unref(f);
    return rc;
}

/* Queues history frames while the queue is below half its limit; the write
 * completion calls again. Live events skip a replaying session (see
 * session_deliver), so the stream reaches the client in seq order with no
 * seam. History is shared: the pump holds the lock. */
static void replay_pump(session_t *s)
{
    if (!s->replay_next)
        return;
    if (aw_in_shard()) { /* the pump needs the lock alone: at this loop's flush */
        s->_pump_later = true;
        server_want_flush(s);
        return;
    }
    aw_lock();
    while (s->replay_next && s->state == SESSION_OPEN) {
        if (s->replay_next > s->user->seq) {
            s->replay_next = 0; /* caught up: live from here */
            if (s->_replay_ack) {
                session_send_json(s, s->_replay_ack);
                json_decref(s->_replay_ack);
                s->_replay_ack = NULL;
            }
            break;
        }
        if (session_backlog(s) >= watermark(s))
            break;
        bool owned;
        frame_t *f = hub_history_get(&s->srv->hub, s->user, s->replay_next, &owned);
        if (!f) { /* evicted while replaying: the client must resume again */
            log_kv(LOG_INFO | LOG_LIMITED, "history lost during replay", "conn", s->id, "user",
                   s->user->id, "#seq", (long long)s->replay_next, NULL);
            session_close(s, WS_CLOSE_SLOW_CONSUMER, "slow_consumer");
            break;
        }
        int rc = session_enqueue(s, session_wire_frame(s, f));
        if (owned)
            frame_unref(f); /* read from older storage: the queue holds it */
        if (rc != AW_OK) {
            session_close(s, WS_CLOSE_INTERNAL, "out of memory");
            break;
        }
        s->srv->metrics.events_replayed++;
        s->_last_seq = s->replay_next++;
    }
    aw_unlock();
}

void session_replay(session_t *s, uint64_t from, json_t *ack)
{
    json_decref(s->_replay_ack);
    s->_replay_ack = ack;
    s->replay_next = from ? from : 1;
    replay_pump(s);
}

/* The frames of the batch just written leave the queue; returns the bytes
 * that went on the wire (the ciphertext under TLS). */
static size_t release_inflight(session_t *s)
{
    size_t written = 0;
    for (uint32_t i = 0; i < s->_inflight; i++) {
        frame_t *f = s->_q[s->_qhead];
        written += f->len;
        s->_qbytes -= f->len;
        add_queued(s, -(int64_t)f->len);
        frame_unref(f);
        s->_qhead = (s->_qhead + 1) % s->_qcap;
        s->_qlen--;
    }
    s->_inflight = 0;
    s->_inflight_bytes = 0;
    s->_written += written;
    if (s->_tls_out) { /* the bytes on the wire were this ciphertext */
        written = s->_tls_out->len;
        frame_unref(s->_tls_out);
        s->_tls_out = NULL;
    }
    return written;
}

/* session_abort from the lock-free write path: takes the lock (logs and
 * metrics are shared). */
void session_abort_locked(session_t *s, const char *reason)
{
    aw_lock();
    session_abort(s, reason);
    aw_unlock();
}

static void on_write(uv_write_t *req, int status)
{
    session_t *s = req->data;
    add_sent(s, release_inflight(s));
    if (status < 0) {
        if (s->state != SESSION_GONE)
            session_abort_locked(s, uv_err_name(status));
        return;
    }
    if (s->state != SESSION_GONE) {
        replay_pump(s);
        session_flush(s);
    }
}

/* TLS: the batch of plaintext frames becomes one ciphertext buffer, written
 * in their place; the frames stay queued (and counted) until it is written. */
static int tls_encrypt_batch(session_t *s, uv_buf_t *bufs, uint32_t *n)
{
    for (uint32_t i = 0; i < *n; i++)
        if (tls_conn_encrypt(s->_tls, bufs[i].base, bufs[i].len) != AW_OK)
            return AW_EPROTO;
    s->_tls_out = tls_conn_take_out(s->_tls);
    if (!s->_tls_out)
        return AW_ENOMEM;
    bufs[0] = uv_buf_init((char *)s->_tls_out->data, s->_tls_out->len);
    *n = 1;
    return AW_OK;
}

/* Skips the first `done` bytes of bufs; returns how many buffers remain. */
static uint32_t bufs_advance(uv_buf_t *bufs, uint32_t n, size_t done)
{
    uint32_t i = 0;
    while (i < n && done >= bufs[i].len)
        done -= bufs[i++].len;
    if (i < n) {
        bufs[i].base += done;
        bufs[i].len -= done;
    }
    memmove(bufs, bufs + i, (n - i) * sizeof *bufs);
    return n - i;
}

void session_flush(session_t *s)
{
    if (s->_pump_later && !aw_in_shard()) {
        s->_pump_later = false;
        replay_pump(s);
    }
    while (!s->_inflight && s->_qlen > 0 && s->state != SESSION_GONE) {
        uv_buf_t bufs[WRITE_BATCH];
        uint32_t n = s->_qlen < WRITE_BATCH ? s->_qlen : WRITE_BATCH;
        size_t total = 0;
        for (uint32_t i = 0; i < n; i++) {
            frame_t *f = s->_q[(s->_qhead + i) % s->_qcap];
            bufs[i] = uv_buf_init((char *)f->data, f->len);
            total += f->len;
        }
        s->_inflight = n;
        s->_inflight_bytes = total;
        s->_wreq.data = s;
        if (s->_tls) {
            if (tls_encrypt_batch(s, bufs, &n) != AW_OK) {
                s->_inflight = 0;
                s->_inflight_bytes = 0;
                session_abort_locked(s, "TLS error");
                return;
            }
            total = bufs[0].len;
        }
        /* Most batches fit in the socket buffer at once; the rest is left to
         * libuv, which finishes it when the socket drains. */
        int rc = uv_try_write((uv_stream_t *)&s->tcp, bufs, n);
        if (rc == UV_EAGAIN)
            rc = 0;
        if (rc >= 0 && (size_t)rc < total) {
            n = bufs_advance(bufs, n, (size_t)rc);
            rc = uv_write(&s->_wreq, (uv_stream_t *)&s->tcp, bufs, n, on_write);
            if (rc == 0)
                return; /* on_write continues */
        }
        if (rc < 0) {
            s->_inflight = 0;
            s->_inflight_bytes = 0;
            session_abort_locked(s, uv_err_name(rc));
            return;
        }
        add_sent(s, release_inflight(s));
        replay_pump(s);
    }
    if (!s->_inflight && s->_http_paused)
        session_http_resume(s);
    if (!s->_inflight && s->_qlen == 0 && s->_close_when_flushed && s->state != SESSION_GONE &&
        !s->_lingering) {
        if (s->_linger && s->state == SESSION_HTTP)
            session_http_linger(s);
        else
            session_abort_locked(s, NULL);
    }
}

/* ---- closing ---- */

static void log_disconnect(session_t *s, const char *reason)
{
    if (!s->user)
        return;
    log_kv(LOG_INFO, "disconnect", "conn", s->id, "user", s->user->id, "remote", s->remote, "#code",
           (long long)s->_close_code, "reason", reason, "#duration_ms",
           (long long)(aw_now_ms() - s->connected_ms), NULL);
}

/* Closing logs, counts and may reach the hub: both take the lock alone
 * (from a shared hold, see on_read, too). */
static void abort_now(session_t *s, const char *reason)
{
    if (s->state == SESSION_GONE)
        return;
    if (s->state == SESSION_OPEN || s->state == SESSION_CLOSING) {
        if (!s->_close_code)
            s->_close_code = 1006; /* closed without a close frame */
        metrics_count_close(&s->srv->metrics, s->_close_code);
        log_disconnect(s, reason ? reason : "closed");
    }
    s->state = SESSION_GONE;
    server_cancel_flush(s);
    uv_close((uv_handle_t *)&s->tcp, on_close);
}

void session_abort(session_t *s, const char *reason)
{
    aw_lock();
    abort_now(s, reason);
    aw_unlock();
}

static void close_now(session_t *s, uint16_t code, const char *reason);

void session_close(session_t *s, uint16_t code, const char *reason)
{
    aw_lock();
    close_now(s, code, reason);
    aw_unlock();
}

static void close_now(session_t *s, uint16_t code, const char *reason)
{
    if (s->lp != server_current_loop()) { /* its own loop closes it (server.h) */
        if (s->state == SESSION_OPEN && !s->_close_queued) {
            s->_close_req_code = code;
            s->_close_req_reason = reason;
            server_request_close(s);
        }
        return;
    }
    if (s->state == SESSION_HTTP) {
        if (s->_qlen == 0)
            session_abort(s, reason);
        else
            s->_close_when_flushed = true;
        return;
    }
    if (s->state != SESSION_OPEN)
        return;
    uint8_t payload[WS_MAX_CONTROL_PAYLOAD];
    size_t n = ws_close_payload(payload, code, reason);
    frame_t *f = frame_ws(WS_OP_CLOSE, payload, n);
    s->state = SESSION_CLOSING;
    s->_close_code = code;
    /* PROTOCOL 3: TCP closed within 2 s. The tick checks deadlines, so aim
     * one tick early to stay within the bound. */
    s->_deadline_ms = aw_now_ms() + 2000 - s->srv->tick_ms;
    if (!f || !queue_push(s, f)) {
        frame_unref(f);
        session_abort(s, reason);
        return;
    }
    frame_unref(f);
    server_want_flush(s);
    if (s->_close_received)
        s->_close_when_flushed = true;
    log_kv(LOG_DEBUG, "close sent", "conn", s->id, "#code", (long long)code, "reason", reason,
           NULL);
}

static void on_close(uv_handle_t *h)
{
    session_t *s = h->data;
    aw_lock();
    queue_truncate(s, 0);
    if (s->user)
        hub_detach(&s->srv->hub, s); /* unlinked only now: see hub.c */
    for (session_wait_t *w = s->_wait; w; w = w->_next)
        w->s = NULL; /* a reply still on its way finds no session */
    if (s->_broker_user)
        broker_release(s->srv->broker, s->user->id);
    server_purge_inbox(s->lp, s); /* after the detach: no loop posts to s any more */
    server_remove_session(s->lp, s);
    if (s->_ip_counted)
        server_ip_release(s->srv, s->ip);
    session_http_dispose(s);
    aw_buf_free(&s->_rbuf);
    aw_buf_free(&s->_msg);
    frame_unref(s->_in);
    json_decref(s->_replay_ack);
    deflate_inflate_free(s->_inflate);
    tls_conn_free(s->_tls);
    free(s);
    aw_unlock();
}

/* Bytes from the peer, decrypted when TLS is on. */
static void on_plain(void *arg, char *data, size_t len)
{
    session_t *s = arg;
    if (s->state == SESSION_HTTP)
        session_http_input(s, data, len);
    else if (s->state == SESSION_OPEN || s->state == SESSION_CLOSING)
        session_ws_input(s, data, len);
}

typedef struct raw_write {
    uv_write_t req;
    frame_t *bytes;
} raw_write_t;

static void on_raw_write(uv_write_t *req, int status)
{
    raw_write_t *w = (raw_write_t *)req;
    (void)status; /* a failure shows up on the next read or queued write */
    aw_lock();
    frame_unref(w->bytes);
    aw_unlock();
    free(w);
}

/* Writes what TLS produced by itself (handshake, alerts, tickets) outside the
 * frame queue; libuv keeps writes in the order they are issued, so records
 * reach the peer in the order OpenSSL made them. */
static void tls_write_pending(session_t *s)
{
    frame_t *out = tls_conn_take_out(s->_tls);
    if (!out)
        return;
    raw_write_t *w = malloc(sizeof *w);
    uv_buf_t b = uv_buf_init((char *)out->data, out->len);
    if (!w || uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_raw_write) != 0) {
        free(w);
        frame_unref(out);
        session_abort(s, "TLS write failed");
        return;
    }
    w->bytes = out;
    add_sent(s, out->len);
}

static void read_done(session_t *s, ssize_t nread, const uv_buf_t *buf);

/* Bytes are read under the lock shared: an HTTP request's parsing and a
 * publish by shards touch only the session and the shards (api.c), the
 * WebSocket frame loop only the session (session_ws.c: a message for
 * client.c, a refusal counted in the metrics, a close take the lock alone
 * from the shared hold). TLS and the end of the stream read under the lock
 * alone. */
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    if (nread == 0)
        return;
    session_t *s = stream->data;
    if (nread > 0 && !s->_tls) {
        bool took = aw_lock_shared();
        read_done(s, nread, buf);
        if (took)
            aw_unlock_shared();
        return;
    }
    aw_lock();
    read_done(s, nread, buf);
    aw_unlock();
}

static void read_done(session_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0) {
        session_abort(s, nread == UV_EOF ? "peer closed" : uv_err_name((int)nread));
        return;
    }
    _Atomic uint64_t *rx = &s->lp->bytes_received; /* written by this loop only */
    atomic_store_explicit(rx, atomic_load_explicit(rx, memory_order_relaxed) + (uint64_t)nread,
                          memory_order_relaxed);
    s->_last_rx_ms = aw_now_ms();
    if (!s->_tls) {
        on_plain(s, buf->base, (size_t)nread);
        return;
    }
    int rc = tls_conn_feed(s->_tls, buf->base, (size_t)nread, on_plain, s);
    if (s->state != SESSION_GONE)
        tls_write_pending(s); /* handshake records, alerts */
    if (rc != AW_OK && s->state != SESSION_GONE)
        session_abort(s, "TLS error");
}

/* ---- housekeeping ---- */

/* Bytes behind: the backlog plus the events still to catch up from history
 * (stops counting past limit; an evicted event counts as past it). */
static size_t lag(const session_t *s, size_t limit)
{
    size_t n = session_backlog(s);
    uint64_t first = history_first_seq(&s->user->history);
    for (uint64_t q = s->replay_next; q && q <= s->user->seq && n <= limit; q++) {
        frame_t *f = history_get(&s->user->history, q);
        if (!f && s->srv->hub.older && (!first || q < first))
            n += 256; /* older than memory holds: read from disk as the replay goes */
        else
            n += f ? f->len : limit + 1;
    }
    return n;
}

/* Bytes in the socket's send queue that the peer has not acknowledged, or
 * SIZE_MAX when unknown. */
static size_t kernel_outq(session_t *s)
{
    uv_os_fd_t fd;
    int n;
    if (uv_fileno((const uv_handle_t *)&s->tcp, &fd) != 0 || ioctl(fd, SIOCOUTQ, &n) != 0)
        return SIZE_MAX;
    return (size_t)n;
}

/* Did the peer take any bytes since the last tick? Our own writes show it
 * only when the kernel has room again, which a slow reader behind large
 * socket buffers may not give for a while; the kernel's send queue going
 * down shows it at once. */
bool session_made_progress(session_t *s)
{
    size_t wq = uv_stream_get_write_queue_size((const uv_stream_t *)&s->tcp);
    bool moved = s->_written != s->_tick_written || wq < s->_tick_write_queue;
    s->_tick_written = s->_written;
    s->_tick_write_queue = wq;
    if (wq || s->_inflight) {
        size_t outq = kernel_outq(s);
        moved = moved || outq < s->_tick_outq;
        s->_tick_outq = outq;
    } else {
        s->_tick_outq = SIZE_MAX;
    }
    return moved;
}

void session_tick(session_t *s, int64_t now)
{
    const config_t *cfg = s->srv->cfg;
    if (s->_qlen == 0 && s->_q)
        queue_truncate(s, 0); /* idle: the ring goes back (see queue_truncate) */
    switch (s->state) {
    case SESSION_HTTP:
        session_http_tick(s, now);
        return;
    case SESSION_OPEN:
        if (now - s->_last_rx_ms >= 2 * cfg->heartbeat_interval_ms) {
            session_abort(s, "heartbeat timeout");
            return;
        }
        if (s->token_exp_ms && now >= s->token_exp_ms) {
            session_close(s, WS_CLOSE_TOKEN_EXPIRED, "token_expired");
            return;
        }
        /* A reader that is too far behind and took nothing since the last
         * tick is slow; one that is draining a burst or a replay is not. */
        size_t limit = (size_t)cfg->queue_limit_bytes;
        bool moved = session_made_progress(s);
        size_t behind = lag(s, limit);
        if (behind > limit && !moved) {
            slow_consumer(s, behind);
            return;
        }
        if (now >= s->_next_ping_ms && !s->echo) {
            s->_next_ping_ms = now + cfg->heartbeat_interval_ms;
            session_send(s, s->srv->ping_frame);
        }
        return;
    case SESSION_CLOSING:
        if (now >= s->_deadline_ms)
            session_abort(s, "close timeout");
        return;
    case SESSION_GONE:
        return;
    }
}
