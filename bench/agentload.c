/* aw-agentload -- agent-shaped load for the agentwire benchmark (bench/agents.mjs).
 *
 * One process, one epoll loop: one WebSocket subscriber per user, and every
 * user runs agent runs back to back for --duration-ms. A run is agent_started,
 * then agent_thinking, partial_result and tool_executing/tool_completed events
 * of 20-200 characters of text at --rate-min..--rate-max events/s, closed by
 * agent_completed (bench/agentplan.h makes them). Two ways to produce them:
 *
 *   --mode batch  this program publishes every event itself over HTTP (the
 *                 batch endpoint, or one POST per event for nchan), as a
 *                 backend that relays its agents' events would: each event
 *                 is queued when it is due, and a publisher connection sends
 *                 what is queued every --flush-ms (or at --batch-max events).
 *   --mode exec   (agentwire with --agent exec:aw-agentexec) each subscriber
 *                 sends start_agent with the run's plan in user_request; the
 *                 server starts aw-agentexec, which prints the events at the
 *                 planned times. The next run starts when agent_completed came.
 *
 * Every event carries "bu" (its user), "bi" (the user's event index over all
 * its runs) and "bt" (CLOCK_MONOTONIC µs + 1e15 when it was written to the
 * publish socket or the agent's pipe). The subscriber checks that it gets
 * exactly its own events, in order, none twice (and, on agentwire, that seq
 * has no gap), and records now - bt.
 *
 * stdout: {"phase":"connected"}, {"phase":"streamed"} (with --sync each waits
 * for a line on stdin, at most 5 s, so that the caller can sample the
 * server's CPU), then one JSON result line. Progress on stderr. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agentplan.h"
#include "loadgen.h"

struct opts opt; /* loadgen_util.c's make_jwt reads opt.jwt_secret */

enum tgt { T_AGENTWIRE, T_WS, T_SOCKETIO, T_NCHAN };
static const char *const tgt_names[] = {"agentwire", "ws", "socketio", "nchan"};
enum amode { M_BATCH, M_EXEC };

static struct {
    enum tgt target;
    enum amode mode;
    const char *host;
    uint32_t addr;
    uint16_t port;
    uint32_t users;
    const char *secret, *key;
    int64_t duration_ms, run_min_ms, run_max_ms, gap_max_ms, stagger_ms, timeout_ms,
        connect_timeout_ms, quiet_ms;
    uint32_t rate_min, rate_max, bmin, bmax, tool_pm, think_pm;
    int publishers, pipeline, batch_max;
    int64_t flush_us;
    int concurrency;
    uint64_t seed;
    bool sync;
} A;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("aw-agentload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- counters ---------------------------------------------------------------------------- */

static struct {
    uint64_t connected, connect_failed, closed_by_server;
    uint64_t deliveries, unique, duplicates, gaps, misrouted, wrong_run, seq_errors, bad_frames,
        other_msgs, server_errors;
    uint64_t runs_started, runs_completed, runs_failed, started_seen;
    uint64_t assigned; /* bench indexes handed out (events with "bi") */
    uint64_t published, publish_errors, publish_requests, publish_reconnects, nosub;
    uint64_t in_run, max_in_run, active;
    int64_t t_first_delivery, t_last_delivery;
} C;

static struct hist *lat, *lag, *startlat, *firstlat;

/* ---- subscribers ------------------------------------------------------------------------- */

enum sstate {
    S_NONE,
    S_CONNECTING,
    S_HANDSHAKE,
    S_WELCOME,
    S_SIO_OPEN,
    S_SIO_CONNECT,
    S_READY,
    S_CLOSED
};

struct sub {
    int fd;
    uint8_t state;
    bool in_msg;
    uint8_t msg_op;
    uint32_t u;
    int64_t t_start;
    unsigned char *rx, *msg;
    uint32_t rxlen, rxcap, msglen, msgcap;
    char *tx;
    uint32_t txlen, txoff, txcap;
    /* what arrived */
    uint64_t seq, last_bi;
    bool seq_known;
    /* runs */
    uint64_t bi_next; /* next bench index to hand out */
    uint32_t runs;
    bool active, in_run;
    struct aplan plan;
    struct agen gen;
    int64_t run_t0, next_t;
    int heap_pos;
    /* exec: the current run */
    char run_id[64];
    bool got_run_id, got_started, got_first;
    int64_t t_req;
    uint64_t run_bi_end;
};

static struct sub *subs;
static int ep;
static int64_t now, t_stream0, t_end;
static size_t next_conn;
static int inflight;
static unsigned char *rbuf;
#define RBUF_SIZE (256u * 1024)
#define TAG_SUB   1ull
#define TAG_PUBC  2ull
#define TAG_STDIN 3ull
static char ws_key[32];

/* ---- the schedule: a min-heap of users by their next action ------------------------------ */

static uint32_t *heap;
static int heap_n;

static bool heap_less(int a, int b)
{
    return subs[heap[a]].next_t < subs[heap[b]].next_t;
}

static void heap_swap(int a, int b)
{
    uint32_t t = heap[a];
    heap[a] = heap[b];
    heap[b] = t;
    subs[heap[a]].heap_pos = a;
    subs[heap[b]].heap_pos = b;
}

static void heap_push(uint32_t u)
{
    int i = heap_n++;
    heap[i] = u;
    subs[u].heap_pos = i;
    while (i > 0 && heap_less(i, (i - 1) / 2)) {
        heap_swap(i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static uint32_t heap_pop(void)
{
    uint32_t top = heap[0];
    heap_n--;
    if (heap_n > 0) {
        heap[0] = heap[heap_n];
        subs[heap[0]].heap_pos = 0;
        int i = 0;
        for (;;) {
            int l = 2 * i + 1, r = l + 1, m = i;
            if (l < heap_n && heap_less(l, m))
                m = l;
            if (r < heap_n && heap_less(r, m))
                m = r;
            if (m == i)
                break;
            heap_swap(i, m);
            i = m;
        }
    }
    subs[top].heap_pos = -1;
    return top;
}

static void heap_remove(int i)
{
    uint32_t gone = heap[i];
    heap_n--;
    if (i < heap_n) {
        heap[i] = heap[heap_n];
        subs[heap[i]].heap_pos = i;
        while (i > 0 && heap_less(i, (i - 1) / 2)) {
            heap_swap(i, (i - 1) / 2);
            i = (i - 1) / 2;
        }
        for (;;) {
            int l = 2 * i + 1, r = l + 1, m = i;
            if (l < heap_n && heap_less(l, m))
                m = l;
            if (r < heap_n && heap_less(r, m))
                m = r;
            if (m == i)
                break;
            heap_swap(i, m);
            i = m;
        }
    }
    subs[gone].heap_pos = -1;
}

/* ---- small helpers ----------------------------------------------------------------------- */

static uint64_t mix(uint64_t a, uint64_t b)
{
    struct agen g = {.rng = a * 0x9E3779B97F4A7C15ull ^ b};
    return agen_rand(&g);
}

static uint64_t rnd_range(uint64_t *state, uint64_t lo, uint64_t hi)
{
    struct agen g = {.rng = *state};
    uint64_t r = agen_rand(&g);
    *state = g.rng;
    return hi > lo ? lo + r % (hi - lo + 1) : lo;
}

static uint64_t sched_rng;

static bool reserve(void *pbuf, uint32_t *cap, size_t need)
{
    char **buf = pbuf;
    if (need <= *cap)
        return true;
    if (need > (1u << 30))
        return false;
    size_t c = *cap ? *cap : 512;
    while (c < need)
        c *= 2;
    char *b = realloc(*buf, c);
    if (!b)
        return false;
    *buf = b;
    *cap = (uint32_t)c;
    return true;
}

static const unsigned char *find(const unsigned char *d, size_t len, const char *key)
{
    return memmem(d, len, key, strlen(key));
}

static bool parse_u64_at(const unsigned char *p, const unsigned char *end, uint64_t *v)
{
    uint64_t x = 0;
    const unsigned char *s = p;
    while (p < end && *p >= '0' && *p <= '9')
        x = x * 10 + (uint64_t)(*p++ - '0');
    *v = x;
    return p > s;
}

static bool field_u64(const unsigned char *d, size_t len, const char *key, uint64_t *v)
{
    const unsigned char *p = find(d, len, key);
    return p && parse_u64_at(p + strlen(key), d + len, v);
}

/* ---- subscriber I/O ---------------------------------------------------------------------- */

static void sub_close(struct sub *s, uint8_t state)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    free(s->rx);
    free(s->msg);
    free(s->tx);
    s->rx = s->msg = NULL;
    s->tx = NULL;
    s->rxlen = s->rxcap = s->msglen = s->msgcap = s->txlen = s->txoff = s->txcap = 0;
    s->state = state;
}

static int log_budget = 20;

/* Why connections ended or failed: the first few distinct reasons, counted. */
static struct {
    char why[80];
    uint64_t n;
} reasons[6];

static void count_reason(const char *what, const char *why)
{
    char r[80];
    snprintf(r, sizeof r, "%s: %s", what, why);
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
        if (!reasons[i].n)
            snprintf(reasons[i].why, sizeof reasons[i].why, "%s", r);
        if (strcmp(reasons[i].why, r) == 0) {
            reasons[i].n++;
            return;
        }
    }
}

static void sub_drop(struct sub *s, const char *why)
{
    if (s->state == S_CLOSED || s->state == S_NONE)
        return;
    if (s->state == S_READY) {
        C.closed_by_server++;
    } else {
        C.connect_failed++;
        inflight--;
    }
    count_reason(s->state == S_READY ? "closed" : "connect failed", why);
    if (log_budget > 0) {
        log_budget--;
        say("u%u: %s: %s", s->u, s->state == S_READY ? "closed" : "connect failed", why);
    }
    /* no more runs for this user: what it was sent from now on is lost */
    if (s->heap_pos >= 0)
        heap_remove(s->heap_pos);
    if (s->in_run) {
        s->in_run = false;
        C.in_run--;
    }
    if (s->active) {
        s->active = false;
        C.active--;
    }
    sub_close(s, S_CLOSED);
}

static void sub_flush(struct sub *s)
{
    while (s->txoff < s->txlen) {
        ssize_t w = send(s->fd, s->tx + s->txoff, s->txlen - s->txoff, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            sub_drop(s, strerror(errno));
            return;
        }
        s->txoff += (uint32_t)w;
    }
    s->txoff = s->txlen = 0;
}

static void sub_send(struct sub *s, const void *data, size_t len)
{
    if (s->fd < 0)
        return;
    size_t done = 0;
    if (s->txlen == 0) {
        ssize_t w = send(s->fd, data, len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                sub_drop(s, strerror(errno));
                return;
            }
            w = 0;
        }
        done = (size_t)w;
        if (done == len)
            return;
    }
    size_t rest = len - done;
    if (!reserve(&s->tx, &s->txcap, s->txlen + rest)) {
        sub_drop(s, "out of memory");
        return;
    }
    memcpy(s->tx + s->txlen, (const char *)data + done, rest);
    s->txlen += (uint32_t)rest;
}

static void sub_frame(struct sub *s, int op, const void *payload, size_t len)
{
    unsigned char buf[4096];
    if (len + 14 > sizeof buf)
        return;
    sub_send(s, buf, ws_client_frame(buf, op, payload, len));
}

static void sub_ready(struct sub *s)
{
    s->state = S_READY;
    inflight--;
    C.connected++;
}

static void start_conn(struct sub *s)
{
    s->t_start = now;
    s->state = S_CONNECTING;
    inflight++;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sub_drop(s, strerror(errno));
        return;
    }
    s->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(A.port)};
    dst.sin_addr.s_addr = A.addr;
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS) {
        sub_drop(s, strerror(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET,
                             .data.u64 = TAG_SUB << 32 | (uint64_t)(s - subs)};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
        sub_drop(s, strerror(errno));
}

static void on_connected(struct sub *s)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err) {
        sub_drop(s, strerror(err));
        return;
    }
    s->state = S_HANDSHAKE;
    char path[1024], req[2048];
    if (A.target == T_AGENTWIRE || A.target == T_WS) {
        char tok[512];
        make_jwt(tok, sizeof tok, s->u);
        snprintf(path, sizeof path, "/ws?token=%s", tok);
    } else if (A.target == T_SOCKETIO) {
        snprintf(path, sizeof path, "/socket.io/?EIO=4&transport=websocket");
    } else {
        snprintf(path, sizeof path, "/sub/u%u", s->u);
    }
    int n =
        snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                 path, A.host, A.port, ws_key);
    sub_send(s, req, (size_t)n);
}

/* ---- runs ---------------------------------------------------------------------------------- */

/* The plan of the user's next run, starting at start (µs). */
static void make_plan(struct sub *s, int64_t start)
{
    uint64_t st = mix(A.seed, (uint64_t)s->u << 24 ^ s->runs);
    int64_t len_ms = (int64_t)rnd_range(&st, (uint64_t)A.run_min_ms, (uint64_t)A.run_max_ms);
    if (start + len_ms * 1000 > t_end)
        len_ms = (t_end - start) / 1000;
    uint32_t rate = (uint32_t)rnd_range(&st, A.rate_min, A.rate_max);
    struct aplan *p = &s->plan;
    p->seed = st;
    p->interval_us = 1000000u / rate;
    p->n = (uint32_t)((uint64_t)(len_ms > 0 ? len_ms : 0) * rate / 1000);
    if (p->n < 2)
        p->n = 2;
    p->bmin = A.bmin;
    p->bmax = A.bmax;
    p->tool_pm = A.tool_pm;
    p->think_pm = A.think_pm;
}

static void run_begin(struct sub *s)
{
    s->runs++;
    s->in_run = true;
    C.runs_started++;
    if (++C.in_run > C.max_in_run)
        C.max_in_run = C.in_run;
}

/* The run is over: the next one after a pause, if it fits before the end. */
static void run_end(struct sub *s, int64_t t)
{
    if (s->in_run) {
        s->in_run = false;
        C.in_run--;
    }
    int64_t start = t + (int64_t)rnd_range(&sched_rng, 0, (uint64_t)A.gap_max_ms * 1000);
    if (!s->active)
        return;
    if (s->state != S_READY || start + A.run_min_ms * 1000 > t_end) {
        s->active = false;
        C.active--;
        return;
    }
    s->next_t = start;
    heap_push((uint32_t)(s - subs));
}

/* ---- publishers (batch mode) ------------------------------------------------------------ */

struct qent {
    uint32_t off, len, user, bt_off;
    int64_t due;
};

enum { P_CONNECTING = 1, P_OPEN, P_DEAD };

struct pubc {
    int fd, state;
    uint32_t idx;
    bool pollout;
    char *q;
    uint32_t qlen, qcap;
    struct qent *ents;
    uint32_t ehead, ecount, ecap; /* entries [ehead, ecount) wait */
    char *out;
    uint32_t olen, ocap, ohead, osent; /* [ohead, olen): requests not answered yet */
    uint32_t *rlen, *rnev, rhead, rcount;
    char *in;
    uint32_t ilen, icap;
    int fails;
};

static struct pubc *pubs;
static int npubs;
static int pub_logs = 10;

static void pub_set_pollout(struct pubc *p, bool on)
{
    if (p->pollout == on || p->fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u),
                             .data.u64 = TAG_PUBC << 32 | p->idx};
    epoll_ctl(ep, EPOLL_CTL_MOD, p->fd, &ev);
    p->pollout = on;
}

static void pub_connect(struct pubc *p)
{
    p->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0)
        return;
    int one = 1;
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(A.port)};
    dst.sin_addr.s_addr = A.addr;
    if (connect(p->fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS) {
        close(p->fd);
        p->fd = -1;
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u64 = TAG_PUBC << 32 | p->idx};
    epoll_ctl(ep, EPOLL_CTL_ADD, p->fd, &ev);
    p->pollout = true;
    p->state = P_CONNECTING;
}

static uint64_t pub_unsent(const struct pubc *p)
{
    uint64_t n = p->ecount - p->ehead;
    for (uint32_t k = 0; k < p->rcount; k++)
        n += p->rnev[(p->rhead + k) % (uint32_t)A.pipeline];
    return n;
}

static void pub_give_up(struct pubc *p, const char *why)
{
    uint64_t lost = pub_unsent(p);
    C.publish_errors += lost;
    say("publisher %u: %s; gave up, %llu events not published", p->idx, why,
        (unsigned long long)lost);
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    p->state = P_DEAD;
    p->ehead = p->ecount = p->qlen = 0;
    p->rcount = 0;
    p->olen = p->ohead = p->osent = 0;
}

/* The connection ended (or the server said it will close it): the requests
 * not answered yet go again, in order, on a new one. */
static void pub_reset(struct pubc *p, const char *why)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    p->pollout = false;
    p->ilen = 0;
    p->osent = p->ohead;
    C.publish_reconnects++;
    if (++p->fails > 20) {
        pub_give_up(p, why);
        return;
    }
    if (p->rcount && pub_logs > 0) {
        pub_logs--;
        say("publisher %u: %s; reconnecting, %u requests to send again", p->idx, why, p->rcount);
    }
    pub_connect(p);
    if (p->fd < 0)
        pub_give_up(p, "cannot connect");
}

static void pub_flush(struct pubc *p)
{
    if (p->state != P_OPEN)
        return;
    while (p->osent < p->olen) {
        ssize_t w = send(p->fd, p->out + p->osent, p->olen - p->osent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            pub_reset(p, strerror(errno));
            return;
        }
        p->osent += (uint32_t)w;
    }
    pub_set_pollout(p, p->osent < p->olen);
}

/* Queues the user's next event (kind k; -1: agent_started) for its publisher. */
static void emit(struct sub *s, int k, int64_t due)
{
    struct pubc *p = &pubs[s->u % (uint32_t)npubs];
    if (p->state == P_DEAD) {
        C.publish_errors++;
        C.assigned++;
        s->bi_next++;
        return;
    }
    if (p->ecount == p->ecap) {
        uint32_t nc = p->ecap * 2 + 64;
        struct qent *ne = realloc(p->ents, (size_t)nc * sizeof *ne);
        if (!ne) {
            say("out of memory");
            exit(1);
        }
        p->ents = ne;
        p->ecap = nc;
    }
    if (!reserve(&p->q, &p->qcap, p->qlen + 2 * (size_t)A.bmax + 512)) {
        say("out of memory");
        exit(1);
    }
    char *o = p->q + p->qlen;
    size_t n =
        (size_t)sprintf(o, "{\"user_id\":\"u%u\",\"thread_id\":\"t%u\",\"run_id\":\"r%u-%u\",",
                        s->u, s->u, s->u, s->runs);
    if (k < 0) {
        static const char started[] = "\"type\":\"agent_started\",\"agent_name\":\"bench\"";
        memcpy(o + n, started, sizeof started - 1);
        n += sizeof started - 1;
    } else {
        n += agen_body(&s->gen, &s->plan, (enum akind)k, o + n, due / 1000);
    }
    n += (size_t)sprintf(o + n, ",\"bu\":\"u%u\",\"bi\":%llu,\"bt\":", s->u,
                         (unsigned long long)s->bi_next++);
    uint32_t bt_off = (uint32_t)n;
    memset(o + n, '0', BT_DIGITS);
    o[n] = '1';
    n += BT_DIGITS;
    o[n++] = '}';
    p->ents[p->ecount++] = (struct qent){
        .off = p->qlen, .len = (uint32_t)n, .user = s->u, .bt_off = bt_off, .due = due};
    p->qlen += (uint32_t)n;
    C.assigned++;
}

static void stamp(struct pubc *p, struct qent *e)
{
    char digits[BT_DIGITS + 1];
    snprintf(digits, sizeof digits, "%016llu", (unsigned long long)(BT_BASE + (uint64_t)now));
    memcpy(p->q + e->off + e->bt_off, digits, BT_DIGITS);
    hist_add(lag, now > e->due ? (uint64_t)(now - e->due) : 0);
}

/* One request of the m first queued events. */
static void pub_request(struct pubc *p, uint32_t m)
{
    struct qent *e = &p->ents[p->ehead];
    size_t bl = 0;
    const char *path;
    char pathbuf[64];
    if (A.target == T_NCHAN) {
        snprintf(pathbuf, sizeof pathbuf, "/pub/u%u", e->user);
        path = pathbuf;
        stamp(p, e);
        bl = e->len;
    } else {
        path = A.target == T_AGENTWIRE ? "/api/v1/publish/batch" : "/publish/batch";
        bl = 2;
        for (uint32_t k = 0; k < m; k++)
            bl += e[k].len + (k ? 1 : 0);
    }
    char head[512];
    int hl = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s:%u\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      path, A.host, A.port, A.key ? A.key : "", bl);
    if (p->ohead == p->olen) {
        p->ohead = p->osent = p->olen = 0;
    } else if (p->ohead > p->ocap / 2) {
        memmove(p->out, p->out + p->ohead, p->olen - p->ohead);
        p->olen -= p->ohead;
        p->osent -= p->ohead;
        p->ohead = 0;
    }
    if (!reserve(&p->out, &p->ocap, (size_t)p->olen + (size_t)hl + bl)) {
        say("out of memory");
        exit(1);
    }
    char *o = p->out + p->olen;
    memcpy(o, head, (size_t)hl);
    o += hl;
    if (A.target == T_NCHAN) {
        memcpy(o, p->q + e->off, e->len);
    } else {
        *o++ = '[';
        for (uint32_t k = 0; k < m; k++) {
            if (k)
                *o++ = ',';
            stamp(p, &e[k]);
            memcpy(o, p->q + e[k].off, e[k].len);
            o += e[k].len;
        }
        *o++ = ']';
    }
    p->olen += (uint32_t)((size_t)hl + bl);
    uint32_t slot = (p->rhead + p->rcount) % (uint32_t)A.pipeline;
    p->rlen[slot] = (uint32_t)((size_t)hl + bl);
    p->rnev[slot] = m;
    p->rcount++;
    p->ehead += m;
    C.publish_requests++;
    if (p->ehead == p->ecount) {
        p->ehead = p->ecount = p->qlen = 0;
    } else if (p->ehead > 4096 && p->ehead > p->ecount / 2) {
        uint32_t base = p->ents[p->ehead].off;
        memmove(p->q, p->q + base, p->qlen - base);
        p->qlen -= base;
        memmove(p->ents, p->ents + p->ehead, (p->ecount - p->ehead) * sizeof *p->ents);
        p->ecount -= p->ehead;
        p->ehead = 0;
        for (uint32_t k = 0; k < p->ecount; k++)
            p->ents[k].off -= base;
    }
}

static void pub_pump(struct pubc *p)
{
    if (p->state != P_OPEN)
        return;
    while (p->rcount < (uint32_t)A.pipeline && p->ecount > p->ehead) {
        uint32_t avail = p->ecount - p->ehead, m = 1;
        if (A.target != T_NCHAN) {
            if (avail < (uint32_t)A.batch_max && now - p->ents[p->ehead].due < A.flush_us)
                break;
            m = avail < (uint32_t)A.batch_max ? avail : (uint32_t)A.batch_max;
        }
        pub_request(p, m);
    }
    pub_flush(p);
}

static size_t count_errors(const char *b, size_t n)
{
    size_t k = 0;
    const char *end = b + n;
    while (b < end) {
        const char *e = memmem(b, (size_t)(end - b), "\"error\":", 8);
        if (!e)
            break;
        k++;
        b = e + 8;
    }
    return k;
}

static void on_response(struct pubc *p, int status, const char *b, size_t bl)
{
    if (p->rcount == 0) {
        say("publisher %u: an answer without a request (status %d)", p->idx, status);
        return;
    }
    uint32_t len = p->rlen[p->rhead], nev = p->rnev[p->rhead];
    p->rhead = (p->rhead + 1) % (uint32_t)A.pipeline;
    p->rcount--;
    p->ohead += len;
    p->fails = 0;
    uint64_t bad = 0;
    if (status >= 200 && status < 300) {
        if (A.target == T_AGENTWIRE)
            bad = count_errors(b, bl);
        if (A.target == T_NCHAN && status == 202)
            C.nosub++;
    } else {
        bad = nev;
    }
    if (bad > nev)
        bad = nev;
    C.published += nev - bad;
    C.publish_errors += bad;
    if (bad && pub_logs > 0) {
        pub_logs--;
        say("publisher %u: status %d: %.*s", p->idx, status, (int)(bl > 300 ? 300 : bl), b);
    }
}

/* Parses the answers in p->in. False: the connection was reset. */
static bool parse_responses(struct pubc *p)
{
    size_t off = 0;
    bool close_after = false;
    while (off < p->ilen) {
        char *s = p->in + off;
        size_t n = p->ilen - off;
        char *e = memmem(s, n, "\r\n\r\n", 4);
        if (!e) {
            if (n > 65536) {
                pub_reset(p, "answer head too long");
                return false;
            }
            break;
        }
        size_t hl = (size_t)(e - s) + 4;
        if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0) {
            pub_reset(p, "not an HTTP answer");
            return false;
        }
        int status = atoi(s + 9);
        uint64_t cl = 0;
        bool chunked = false, conn_close = false;
        for (char *l = memmem(s, hl, "\r\n", 2); l && l + 2 < s + hl;
             l = memmem(l + 2, (size_t)(s + hl - l - 2), "\r\n", 2)) {
            char *h = l + 2;
            char *le = memmem(h, (size_t)(s + hl - h), "\r\n", 2);
            size_t ll = le ? (size_t)(le - h) : 0;
            if (strncasecmp(h, "content-length:", 15) == 0)
                cl = strtoull(h + 15, NULL, 10);
            else if (strncasecmp(h, "transfer-encoding:", 18) == 0 && memmem(h, ll, "chunked", 7))
                chunked = true;
            else if (strncasecmp(h, "connection:", 11) == 0 && memmem(h, ll, "close", 5))
                conn_close = true;
        }
        size_t blen, total;
        if (chunked) {
            size_t q = hl;
            bool complete = false;
            for (;;) {
                char *le = memmem(s + q, n - q, "\r\n", 2);
                if (!le)
                    break;
                uint64_t sz = strtoull(s + q, NULL, 16);
                size_t dstart = (size_t)(le - s) + 2;
                if (sz == 0) {
                    char *te = memmem(s + dstart - 2, n - (dstart - 2), "\r\n\r\n", 4);
                    if (!te)
                        break;
                    q = (size_t)(te - s) + 4;
                    complete = true;
                    break;
                }
                if (dstart + sz + 2 > n)
                    break;
                q = dstart + sz + 2;
            }
            if (!complete)
                break;
            blen = q - hl; /* with the chunk heads: only searched for "error" */
            total = q;
        } else {
            if (hl + cl > n)
                break;
            blen = (size_t)cl;
            total = hl + (size_t)cl;
        }
        on_response(p, status, s + hl, blen);
        off += total;
        if (conn_close) {
            close_after = true;
            break;
        }
    }
    if (close_after) {
        pub_reset(p, "the server closes the connection (keep-alive limit)");
        p->fails = 0;
        return false;
    }
    if (off) {
        memmove(p->in, p->in + off, p->ilen - off);
        p->ilen -= (uint32_t)off;
    }
    return true;
}

static void pub_event(struct pubc *p, uint32_t events)
{
    if (p->fd < 0)
        return;
    if (p->state == P_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            pub_reset(p, strerror(err));
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLIN)))
            return;
        p->state = P_OPEN;
        pub_pump(p);
        return;
    }
    if (events & EPOLLOUT)
        pub_flush(p);
    if (p->fd < 0 || !(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        return;
    if (!reserve(&p->in, &p->icap, (size_t)p->ilen + 65536)) {
        pub_give_up(p, "out of memory");
        return;
    }
    ssize_t r = read(p->fd, p->in + p->ilen, p->icap - p->ilen);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        pub_reset(p, r == 0 ? "closed by the server" : strerror(errno));
        return;
    }
    p->ilen += (uint32_t)r;
    if (parse_responses(p))
        pub_pump(p);
}

static bool pubs_idle(void)
{
    for (int i = 0; i < npubs; i++)
        if (pubs[i].state != P_DEAD && (pubs[i].ecount > pubs[i].ehead || pubs[i].rcount))
            return false;
    return true;
}

static void pubs_begin(void)
{
    npubs = A.publishers;
    if ((uint32_t)npubs > A.users)
        npubs = (int)A.users;
    pubs = calloc((size_t)npubs, sizeof *pubs);
    if (!pubs)
        exit(1);
    for (int i = 0; i < npubs; i++) {
        struct pubc *p = &pubs[i];
        p->idx = (uint32_t)i;
        p->fd = -1;
        p->rlen = calloc((size_t)A.pipeline, sizeof *p->rlen);
        p->rnev = calloc((size_t)A.pipeline, sizeof *p->rnev);
        if (!p->rlen || !p->rnev)
            exit(1);
        pub_connect(p);
        if (p->fd < 0)
            pub_give_up(p, "cannot connect");
    }
}

/* Batch mode: the user's next event is due (or its next run starts). */
static void batch_step(struct sub *s)
{
    int64_t due = s->next_t;
    if (!s->active)
        return;
    if (!s->in_run) {
        run_begin(s);
        make_plan(s, due);
        agen_init(&s->gen, &s->plan);
        s->run_t0 = due;
        emit(s, -1, due);
        s->next_t = due + s->plan.interval_us;
        heap_push((uint32_t)(s - subs));
        return;
    }
    enum akind k = agen_next(&s->gen, &s->plan);
    emit(s, (int)k, due);
    if (k == AK_COMPLETED) {
        run_end(s, due);
        return;
    }
    s->next_t = s->run_t0 + (int64_t)(s->gen.i + 1) * s->plan.interval_us;
    heap_push((uint32_t)(s - subs));
}

/* Exec mode: the user asks for its next run. */
static void exec_step(struct sub *s)
{
    if (!s->active || s->state != S_READY)
        return;
    make_plan(s, now);
    uint64_t bi0 = s->bi_next;
    s->bi_next += s->plan.n;
    C.assigned += s->plan.n;
    s->run_bi_end = bi0 + s->plan.n - 1;
    char req[256], m[600];
    aplan_format(req, sizeof req, &s->plan, bi0);
    int ml = snprintf(
        m, sizeof m,
        "{\"type\":\"start_agent\",\"message_id\":\"m%u\",\"payload\":{\"user_request\":\"%s\","
        "\"thread_id\":\"t%u\"}}",
        s->runs, req, s->u);
    run_begin(s);
    s->got_run_id = s->got_started = s->got_first = false;
    s->t_req = now;
    sub_frame(s, 1, m, (size_t)ml);
}

/* ---- what the subscribers receive ---------------------------------------------------------- */

static int err_logs = 10;

static bool run_id_matches(struct sub *s, const unsigned char *d, size_t len)
{
    const unsigned char *r = find(d, len, "\"run_id\":\"");
    if (!r)
        return false;
    r += 10;
    const unsigned char *q = memchr(r, '"', (size_t)(d + len - r));
    if (!q || (size_t)(q - r) >= sizeof s->run_id)
        return false;
    size_t n = (size_t)(q - r);
    if (!s->got_run_id) {
        memcpy(s->run_id, r, n);
        s->run_id[n] = '\0';
        s->got_run_id = true;
        return true;
    }
    return strlen(s->run_id) == n && memcmp(s->run_id, r, n) == 0;
}

static void on_event(struct sub *s, const unsigned char *d, size_t len)
{
    const unsigned char *end = d + len, *tv = NULL;
    size_t tl = 0;
    const unsigned char *tp = find(d, len, "\"type\":\"");
    if (tp) {
        tv = tp + 8;
        const unsigned char *q = memchr(tv, '"', (size_t)(end - tv));
        if (q)
            tl = (size_t)(q - tv);
    }
#define TYPE_IS(lit) (tl == sizeof(lit) - 1 && memcmp(tv, lit, tl) == 0)
    if (A.target == T_AGENTWIRE) {
        if (TYPE_IS("ack")) {
            if (A.mode == M_EXEC && s->in_run && !run_id_matches(s, d, len))
                C.wrong_run++;
            return;
        }
        if (TYPE_IS("error")) {
            C.server_errors++;
            if (err_logs > 0) {
                err_logs--;
                say("u%u: %.*s", s->u, (int)(len > 300 ? 300 : len), d);
            }
            return;
        }
        uint64_t seq;
        if (!field_u64(d, len, "\"seq\":", &seq)) {
            C.other_msgs++;
            return;
        }
        if (s->seq_known && seq != s->seq + 1)
            C.seq_errors++;
        s->seq = seq;
        s->seq_known = true;
        const unsigned char *uid = find(d, len, "\"user_id\":\"u");
        uint64_t uu;
        if (!uid || !parse_u64_at(uid + 12, end, &uu) || uu != s->u) {
            C.deliveries++;
            C.misrouted++;
            return;
        }
    }
    C.deliveries++;
    if (!C.t_first_delivery)
        C.t_first_delivery = now;
    C.t_last_delivery = now;
    if (A.mode == M_EXEC) {
        if (!s->in_run || !run_id_matches(s, d, len)) {
            C.wrong_run++;
            return;
        }
        if (TYPE_IS("agent_started")) {
            if (s->got_started)
                C.duplicates++;
            s->got_started = true;
            C.started_seen++;
            hist_add(startlat, (uint64_t)(now - s->t_req));
            return;
        }
    }
    const unsigned char *bu = find(d, len, "\"bu\":\"u");
    if (!bu) {
        if (A.mode == M_EXEC && TYPE_IS("agent_completed")) {
            /* completed by the server: the agent failed, stalled or was stopped */
            C.runs_failed++;
            if (err_logs > 0) {
                err_logs--;
                say("u%u: run ended by the server: %.*s", s->u, (int)(len > 300 ? 300 : len), d);
            }
            run_end(s, now);
            return;
        }
        C.bad_frames++;
        return;
    }
    uint64_t u, bi, bt;
    if (!parse_u64_at(bu + 7, end, &u) || u != s->u) {
        C.misrouted++;
        return;
    }
    if (!field_u64(d, len, "\"bi\":", &bi) || !field_u64(d, len, "\"bt\":", &bt)) {
        C.bad_frames++;
        return;
    }
    if (bi <= s->last_bi) {
        C.duplicates++;
        return;
    }
    if (bi != s->last_bi + 1)
        C.gaps++;
    s->last_bi = bi;
    C.unique++;
    int64_t t = (int64_t)(bt - BT_BASE);
    hist_add(lat, now > t ? (uint64_t)(now - t) : 0);
    if (A.mode == M_EXEC && !s->got_first) {
        s->got_first = true;
        int64_t wait = now - s->t_req - (int64_t)s->plan.interval_us; /* less the planned wait */
        hist_add(firstlat, wait > 0 ? (uint64_t)wait : 0);
    }
    if (TYPE_IS("agent_completed")) {
        C.runs_completed++;
        if (A.mode == M_EXEC) {
            if (bi != s->run_bi_end)
                C.gaps++;
            run_end(s, now);
        }
    }
#undef TYPE_IS
}

static void on_msg(struct sub *s, const unsigned char *d, size_t len)
{
    switch (s->state) {
    case S_WELCOME: {
        uint64_t seq;
        if (field_u64(d, len, "\"seq\":", &seq)) {
            s->seq = seq;
            s->seq_known = true;
        }
        sub_ready(s);
        return;
    }
    case S_SIO_OPEN:
        if (len > 0 && d[0] == '0') {
            char tok[512], m[600];
            make_jwt(tok, sizeof tok, s->u);
            int n = snprintf(m, sizeof m, "40{\"token\":\"%s\"}", tok);
            s->state = S_SIO_CONNECT;
            sub_frame(s, 1, m, (size_t)n);
        }
        return;
    case S_SIO_CONNECT:
        if (len >= 2 && d[0] == '4' && d[1] == '0')
            sub_ready(s);
        else if (len >= 2 && d[0] == '4' && d[1] == '4')
            sub_drop(s, "socket.io refused the token");
        return;
    case S_READY:
        break;
    default:
        C.other_msgs++;
        return;
    }
    if (A.target == T_SOCKETIO) {
        if (len == 1 && d[0] == '2') {
            sub_frame(s, 1, "3", 1);
            return;
        }
        if (len < 2 || d[0] != '4' || d[1] != '2') {
            C.other_msgs++;
            return;
        }
    }
    on_event(s, d, len);
}

/* Handshake answer and frames in p[0..n); returns the bytes used. The
 * connection may be dropped on the way (s->fd < 0): then p is not touched
 * again. */
static size_t consume(struct sub *s, const unsigned char *p, size_t n)
{
    size_t off = 0;
    if (s->state == S_HANDSHAKE) {
        const unsigned char *e = memmem(p, n, "\r\n\r\n", 4);
        if (!e) {
            if (n > 16384)
                sub_drop(s, "handshake answer too long");
            return 0;
        }
        if (n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0) {
            char status[80];
            size_t k = 0;
            while (k < sizeof status - 1 && k < n && p[k] != '\r') {
                status[k] = (char)p[k];
                k++;
            }
            status[k] = '\0';
            sub_drop(s, status);
            return 0;
        }
        off = (size_t)(e - p) + 4;
        if (A.target == T_AGENTWIRE)
            s->state = S_WELCOME;
        else if (A.target == T_SOCKETIO)
            s->state = S_SIO_OPEN;
        else
            sub_ready(s);
    }
    while (s->fd >= 0 && n - off >= 2) {
        const unsigned char *h = p + off;
        unsigned b0 = h[0], b1 = h[1];
        size_t hl = 2;
        uint64_t len = b1 & 0x7f;
        if (b1 & 0x80) {
            sub_drop(s, "masked frame from the server");
            return off;
        }
        if (len == 126) {
            if (n - off < 4)
                break;
            len = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (len == 127) {
            if (n - off < 10)
                break;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | h[2 + i];
            hl = 10;
        }
        if (len > (64u << 20)) {
            sub_drop(s, "frame too large");
            return off;
        }
        if (n - off < hl + len)
            break;
        const unsigned char *pl = h + hl;
        off += hl + (size_t)len;
        unsigned op = b0 & 0x0f;
        bool fin = b0 & 0x80;
        if (op == 8) {
            unsigned code = len >= 2 ? (unsigned)pl[0] << 8 | pl[1] : 1005;
            char why[64];
            snprintf(why, sizeof why, "close frame %u", code);
            sub_drop(s, why);
            return off;
        } else if (op == 9) {
            sub_frame(s, 10, pl, (size_t)len);
        } else if (op == 10) {
            /* pong */
        } else if (op == 0) {
            if (!s->in_msg) {
                sub_drop(s, "continuation without a message");
                return off;
            }
            if (!reserve(&s->msg, &s->msgcap, (size_t)s->msglen + len)) {
                sub_drop(s, "out of memory");
                return off;
            }
            memcpy(s->msg + s->msglen, pl, (size_t)len);
            s->msglen += (uint32_t)len;
            if (fin) {
                s->in_msg = false;
                on_msg(s, s->msg, s->msglen);
                s->msglen = 0;
            }
        } else if (op == 1 || op == 2) {
            if (fin) {
                on_msg(s, pl, (size_t)len);
            } else {
                s->in_msg = true;
                s->msg_op = (uint8_t)op;
                if (!reserve(&s->msg, &s->msgcap, (size_t)len)) {
                    sub_drop(s, "out of memory");
                    return off;
                }
                memcpy(s->msg, pl, (size_t)len);
                s->msglen = (uint32_t)len;
            }
        } else {
            sub_drop(s, "reserved opcode");
            return off;
        }
    }
    return off;
}

static void sub_input(struct sub *s, const unsigned char *p, size_t n)
{
    if (s->rxlen) {
        if (!reserve(&s->rx, &s->rxcap, (size_t)s->rxlen + n)) {
            sub_drop(s, "out of memory");
            return;
        }
        memcpy(s->rx + s->rxlen, p, n);
        s->rxlen += (uint32_t)n;
        size_t used = consume(s, s->rx, s->rxlen);
        if (s->fd < 0)
            return;
        memmove(s->rx, s->rx + used, s->rxlen - used);
        s->rxlen -= (uint32_t)used;
        return;
    }
    size_t used = consume(s, p, n);
    if (s->fd < 0 || used == n)
        return;
    if (!reserve(&s->rx, &s->rxcap, n - used)) {
        sub_drop(s, "out of memory");
        return;
    }
    memcpy(s->rx, p + used, n - used);
    s->rxlen = (uint32_t)(n - used);
}

static void sub_readable(struct sub *s)
{
    for (;;) {
        ssize_t r = read(s->fd, rbuf, RBUF_SIZE);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                sub_drop(s, strerror(errno));
            return;
        }
        if (r == 0) {
            sub_drop(s, "end of stream");
            return;
        }
        now = now_us();
        sub_input(s, rbuf, (size_t)r);
        if (s->fd < 0 || (size_t)r < RBUF_SIZE)
            return;
    }
}

static void sub_event(struct sub *s, uint32_t e)
{
    if (s->fd < 0)
        return;
    if (s->state == S_CONNECTING) {
        if (!(e & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        on_connected(s);
        if (s->fd < 0)
            return;
    }
    if ((e & EPOLLOUT) && s->txlen)
        sub_flush(s);
    if (s->fd >= 0 && (e & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        sub_readable(s);
}

/* ---- command line ---------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs(
        "Usage: aw-agentload --target agentwire|ws|socketio|nchan --port P [OPTION]...\n"
        "Agent-shaped load: one WebSocket subscriber per user, each user running agent runs back\n"
        "to back (agent_started, agent_thinking / partial_result / tool_executing+tool_completed\n"
        "at a steady rate, agent_completed) for --duration-ms. Progress on stderr; phase lines "
        "and\n"
        "one JSON result line on stdout.\n"
        "\n"
        "  --target T            agentwire, ws, socketio or nchan\n"
        "  --mode batch|exec     batch: publish every event over HTTP (batch endpoint; nchan: one\n"
        "                        POST per event) [batch]; exec (agentwire started with\n"
        "                        --agent exec:aw-agentexec): start each run with start_agent\n"
        "  --host A  --port P    the server [127.0.0.1]\n"
        "  --users U             users u0..u(U-1), one connection and one run at a time each "
        "[2000]\n"
        "  --jwt-secret S        HS256 secret of the user tokens (agentwire, ws, socketio)\n"
        "  --api-key K           publisher key (batch mode)\n"
        "  --duration-ms MS      runs start and end within this time [20000]\n"
        "  --run-min-ms, --run-max-ms   length of a run [3000, 10000]\n"
        "  --rate-min, --rate-max       events/s of a run [20, 50]\n"
        "  --bytes-min, --bytes-max     text per event [20, 200]\n"
        "  --tool-permille N     chance that an event opens a tool call [50]\n"
        "  --think-permille N    chance of agent_thinking (else partial_result) [300]\n"
        "  --gap-max-ms MS       pause between two runs of a user, 0..MS [500]\n"
        "  --stagger-ms MS       first runs start over 0..MS [1000]\n"
        "  --publishers N        publisher connections, user u on u % N [2]\n"
        "  --pipeline D          requests in flight per publisher connection [4]\n"
        "  --batch-max B         events per batch request at most [1000]\n"
        "  --flush-us US         a publisher sends what is queued once its oldest event waited\n"
        "                        this long (or B events are queued) [5000]\n"
        "  --concurrency N       handshakes in flight [200]\n"
        "  --connect-timeout-ms MS [15000]   --timeout-ms MS  bound of the streaming "
        "[duration+60000]\n"
        "  --quiet-ms MS         after the last run, stop waiting for missing events after MS\n"
        "                        without any delivery [3000]\n"
        "  --seed N              plans of the runs [1]\n"
        "  --sync                after each phase line wait for a line on stdin (at most 5 s)\n"
        "\n"
        "latency_us: delivery time - bt (the time the event was written to the publish socket or,\n"
        "exec, the agent's stdout); lag_us (batch): how late after its planned time an event was\n"
        "written; start_latency_us (exec): start_agent sent to agent_started received;\n"
        "first_event_latency_us: to the run's first agent event, less its planned wait (one\n"
        "interval): the cost of starting the agent. lost = events handed out that never arrived\n"
        "in order. Exit status 0 when the run completed (problems are in the JSON).\n",
        f);
}

static uint64_t num(const char *name, const char *s, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *s == '-' || errno || *end || v < min || v > max) {
        fprintf(stderr, "aw-agentload: %s must be a number from %llu to %llu\n", name,
                (unsigned long long)min, (unsigned long long)max);
        exit(2);
    }
    return v;
}

static void parse_args(int argc, char **argv)
{
    static const struct option lo[] = {
        {"target", 1, 0, 't'},       {"mode", 1, 0, 'm'},        {"host", 1, 0, 'H'},
        {"port", 1, 0, 'p'},         {"users", 1, 0, 'u'},       {"jwt-secret", 1, 0, 's'},
        {"api-key", 1, 0, 'k'},      {"duration-ms", 1, 0, 'd'}, {"run-min-ms", 1, 0, 1},
        {"run-max-ms", 1, 0, 2},     {"rate-min", 1, 0, 3},      {"rate-max", 1, 0, 4},
        {"bytes-min", 1, 0, 5},      {"bytes-max", 1, 0, 6},     {"tool-permille", 1, 0, 7},
        {"think-permille", 1, 0, 8}, {"gap-max-ms", 1, 0, 9},    {"stagger-ms", 1, 0, 10},
        {"publishers", 1, 0, 11},    {"pipeline", 1, 0, 12},     {"batch-max", 1, 0, 13},
        {"flush-us", 1, 0, 14},      {"concurrency", 1, 0, 15},  {"connect-timeout-ms", 1, 0, 16},
        {"timeout-ms", 1, 0, 17},    {"quiet-ms", 1, 0, 18},     {"seed", 1, 0, 19},
        {"sync", 0, 0, 20},          {"help", 0, 0, 'h'},        {0, 0, 0, 0},
    };
    A.host = "127.0.0.1";
    A.users = 2000;
    A.duration_ms = 20000;
    A.run_min_ms = 3000;
    A.run_max_ms = 10000;
    A.rate_min = 20;
    A.rate_max = 50;
    A.bmin = 20;
    A.bmax = 200;
    A.tool_pm = 50;
    A.think_pm = 300;
    A.gap_max_ms = 500;
    A.stagger_ms = 1000;
    A.publishers = 2;
    A.pipeline = 4;
    A.batch_max = 1000;
    A.flush_us = 5000;
    A.concurrency = 200;
    A.connect_timeout_ms = 15000;
    A.quiet_ms = 3000;
    A.seed = 1;
    A.timeout_ms = -1;
    int have_target = 0;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 't': {
            int k = -1;
            for (int i = 0; i < 4; i++)
                if (strcmp(optarg, tgt_names[i]) == 0)
                    k = i;
            if (k < 0) {
                fprintf(stderr, "aw-agentload: unknown target '%s'\n", optarg);
                exit(2);
            }
            A.target = (enum tgt)k;
            have_target = 1;
            break;
        }
        case 'm':
            if (strcmp(optarg, "batch") == 0)
                A.mode = M_BATCH;
            else if (strcmp(optarg, "exec") == 0)
                A.mode = M_EXEC;
            else {
                fprintf(stderr, "aw-agentload: --mode must be batch or exec\n");
                exit(2);
            }
            break;
        case 'H': {
            struct in_addr a;
            if (inet_pton(AF_INET, optarg, &a) != 1) {
                fprintf(stderr, "aw-agentload: --host must be an IPv4 address\n");
                exit(2);
            }
            A.host = optarg;
            break;
        }
        case 'p':
            A.port = (uint16_t)num("--port", optarg, 1, 65535);
            break;
        case 'u':
            A.users = (uint32_t)num("--users", optarg, 1, 1000000);
            break;
        case 's':
            A.secret = optarg;
            break;
        case 'k':
            A.key = optarg;
            break;
        case 'd':
            A.duration_ms = (int64_t)num("--duration-ms", optarg, 100, 3600000);
            break;
        case 1:
            A.run_min_ms = (int64_t)num("--run-min-ms", optarg, 100, 3600000);
            break;
        case 2:
            A.run_max_ms = (int64_t)num("--run-max-ms", optarg, 100, 3600000);
            break;
        case 3:
            A.rate_min = (uint32_t)num("--rate-min", optarg, 1, 100000);
            break;
        case 4:
            A.rate_max = (uint32_t)num("--rate-max", optarg, 1, 100000);
            break;
        case 5:
            A.bmin = (uint32_t)num("--bytes-min", optarg, 1, 4096);
            break;
        case 6:
            A.bmax = (uint32_t)num("--bytes-max", optarg, 1, 4096);
            break;
        case 7:
            A.tool_pm = (uint32_t)num("--tool-permille", optarg, 0, 500);
            break;
        case 8:
            A.think_pm = (uint32_t)num("--think-permille", optarg, 0, 1000);
            break;
        case 9:
            A.gap_max_ms = (int64_t)num("--gap-max-ms", optarg, 0, 600000);
            break;
        case 10:
            A.stagger_ms = (int64_t)num("--stagger-ms", optarg, 0, 600000);
            break;
        case 11:
            A.publishers = (int)num("--publishers", optarg, 1, 256);
            break;
        case 12:
            A.pipeline = (int)num("--pipeline", optarg, 1, 1024);
            break;
        case 13:
            A.batch_max = (int)num("--batch-max", optarg, 1, 100000);
            break;
        case 14:
            A.flush_us = (int64_t)num("--flush-us", optarg, 0, 10000000);
            break;
        case 15:
            A.concurrency = (int)num("--concurrency", optarg, 1, 100000);
            break;
        case 16:
            A.connect_timeout_ms = (int64_t)num("--connect-timeout-ms", optarg, 1, 600000);
            break;
        case 17:
            A.timeout_ms = (int64_t)num("--timeout-ms", optarg, 1, 86400000);
            break;
        case 18:
            A.quiet_ms = (int64_t)num("--quiet-ms", optarg, 1, 600000);
            break;
        case 19:
            A.seed = num("--seed", optarg, 0, UINT64_MAX);
            break;
        case 20:
            A.sync = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            fprintf(
                stderr,
                "aw-agentload: unknown option or missing value: %s\nTry 'aw-agentload --help'.\n",
                argv[optind - 1]);
            exit(2);
        }
    }
    const char *bad = NULL;
    if (optind < argc)
        bad = "unexpected argument";
    else if (!have_target)
        bad = "--target is required";
    else if (!A.port)
        bad = "--port is required";
    else if (A.mode == M_EXEC && A.target != T_AGENTWIRE)
        bad = "--mode exec needs --target agentwire";
    else if (A.target != T_NCHAN && !A.secret)
        bad = "--jwt-secret is required for this target";
    else if (A.mode == M_BATCH && A.target != T_NCHAN && !A.key)
        bad = "--api-key is required in batch mode";
    else if (A.run_min_ms > A.run_max_ms || A.rate_min > A.rate_max || A.bmin > A.bmax)
        bad = "a minimum is above its maximum";
    else if (A.tool_pm + A.think_pm > 1000)
        bad = "--tool-permille + --think-permille must be at most 1000";
    if (bad) {
        fprintf(stderr, "aw-agentload: %s\nTry 'aw-agentload --help'.\n", bad);
        exit(2);
    }
    struct in_addr a;
    inet_pton(AF_INET, A.host, &a);
    A.addr = a.s_addr;
    if (A.timeout_ms < 0)
        A.timeout_ms = A.duration_ms + 60000;
    opt.jwt_secret = A.secret;
}

/* ---- main -------------------------------------------------------------------------------- */

static void wait_stdin(void)
{
    if (!A.sync)
        return;
    struct pollfd pf = {.fd = 0, .events = POLLIN};
    if (poll(&pf, 1, 5000) > 0) {
        char buf[256];
        if (read(0, buf, sizeof buf) < 0) {
            /* nothing to do: the wait is over either way */
        }
    }
}

static void print_hist(const char *name, const struct hist *h)
{
    printf(",\"%s\":{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,\"p999\":%llu,\"max\":%llu,\"mean\":%."
           "0f,\"n\":%llu}",
           name, (unsigned long long)hist_quantile(h, 0.5),
           (unsigned long long)hist_quantile(h, 0.9), (unsigned long long)hist_quantile(h, 0.99),
           (unsigned long long)hist_quantile(h, 0.999), (unsigned long long)h->max,
           h->n ? (double)h->sum / (double)h->n : 0.0, (unsigned long long)h->n);
}

static void dispatch(struct epoll_event *evs, int n)
{
    for (int k = 0; k < n; k++) {
        uint64_t tag = evs[k].data.u64 >> 32, idx = evs[k].data.u64 & 0xffffffffu;
        if (tag == TAG_SUB)
            sub_event(&subs[idx], evs[k].events);
        else if (tag == TAG_PUBC)
            pub_event(&pubs[idx], evs[k].events);
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    subs = calloc(A.users, sizeof *subs);
    heap = calloc(A.users, sizeof *heap);
    rbuf = malloc(RBUF_SIZE);
    lat = calloc(1, sizeof *lat);
    lag = calloc(1, sizeof *lag);
    startlat = calloc(1, sizeof *startlat);
    firstlat = calloc(1, sizeof *firstlat);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!subs || !heap || !rbuf || !lat || !lag || !startlat || !firstlat || ep < 0) {
        say("out of memory");
        return 1;
    }
    snprintf(ws_key, sizeof ws_key, "dGhlIHNhbXBsZSBub25jZQ==");
    sched_rng = mix(A.seed, 0x5eed);
    for (uint32_t u = 0; u < A.users; u++) {
        subs[u].fd = -1;
        subs[u].u = u;
        subs[u].bi_next = 1;
        subs[u].heap_pos = -1;
    }
    struct epoll_event evs[512];

    /* connect */
    int64_t t0 = now = now_us(), last_scan = now;
    while (C.connected + C.connect_failed < A.users) {
        while (inflight < A.concurrency && next_conn < A.users)
            start_conn(&subs[next_conn++]);
        int n = epoll_wait(ep, evs, 512, 50);
        now = now_us();
        dispatch(evs, n);
        if (now - last_scan > 500000) {
            last_scan = now;
            for (size_t i = 0; i < next_conn; i++) {
                struct sub *s = &subs[i];
                if (s->state >= S_CONNECTING && s->state < S_READY &&
                    now - s->t_start > A.connect_timeout_ms * 1000)
                    sub_drop(s, "timed out");
            }
        }
    }
    double connect_s = (double)(now - t0) / 1e6;
    say("%.1fs: %llu connected, %llu failed", connect_s, (unsigned long long)C.connected,
        (unsigned long long)C.connect_failed);
    printf("{\"phase\":\"connected\",\"connected\":%llu,\"failed\":%llu}\n",
           (unsigned long long)C.connected, (unsigned long long)C.connect_failed);
    fflush(stdout);
    wait_stdin();

    /* stream */
    int64_t cpu0 = cpu_us(RUSAGE_SELF);
    now = now_us();
    t_stream0 = now;
    t_end = t_stream0 + A.duration_ms * 1000;
    int64_t deadline = t_stream0 + A.timeout_ms * 1000;
    for (uint32_t u = 0; u < A.users; u++) {
        struct sub *s = &subs[u];
        if (s->state != S_READY)
            continue;
        s->active = true;
        C.active++;
        s->next_t = t_stream0 + (int64_t)rnd_range(&sched_rng, 0, (uint64_t)A.stagger_ms * 1000);
        heap_push(u);
    }
    if (A.mode == M_BATCH)
        pubs_begin();
    bool timed_out = false;
    int64_t last_log = now, t_produced = 0;
    uint64_t last_unique = 0;
    for (;;) {
        now = now_us();
        while (heap_n > 0 && subs[heap[0]].next_t <= now) {
            struct sub *s = &subs[heap_pop()];
            if (A.mode == M_BATCH)
                batch_step(s);
            else
                exec_step(s);
        }
        int64_t next_flush = INT64_MAX;
        for (int i = 0; i < npubs; i++) {
            pub_pump(&pubs[i]);
            struct pubc *p = &pubs[i];
            if (p->state == P_OPEN && p->ecount > p->ehead && p->rcount < (uint32_t)A.pipeline) {
                int64_t t = p->ents[p->ehead].due + A.flush_us;
                if (t < next_flush)
                    next_flush = t;
            }
        }
        if (C.active == 0 && C.in_run == 0 && pubs_idle()) {
            if (!t_produced)
                t_produced = now;
            uint64_t expect = C.assigned + (A.mode == M_EXEC ? C.runs_started : 0);
            uint64_t got = C.unique + C.started_seen;
            int64_t quiet_from = C.t_last_delivery > t_produced ? C.t_last_delivery : t_produced;
            if (got >= expect || now - quiet_from > A.quiet_ms * 1000)
                break;
        }
        if (now > deadline) {
            timed_out = true;
            say("timeout (--timeout-ms %lld) reached", (long long)A.timeout_ms);
            break;
        }
        if (now - last_log >= 2000000) {
            uint64_t q = 0;
            for (int i = 0; i < npubs; i++)
                q += pubs[i].ecount - pubs[i].ehead;
            say("%.1fs: %llu runs open, %llu events received (%.0f/s), %llu queued",
                (double)(now - t_stream0) / 1e6, (unsigned long long)C.in_run,
                (unsigned long long)C.unique,
                (double)(C.unique - last_unique) * 1e6 / (double)(now - last_log),
                (unsigned long long)q);
            last_log = now;
            last_unique = C.unique;
        }
        int64_t wake = deadline;
        if (heap_n > 0 && subs[heap[0]].next_t < wake)
            wake = subs[heap[0]].next_t;
        if (next_flush < wake)
            wake = next_flush;
        int64_t ms = (wake - now + 999) / 1000;
        if (ms < 0)
            ms = 0;
        if (ms > 100)
            ms = 100;
        int n = epoll_wait(ep, evs, 512, (int)ms);
        now = now_us();
        if (n > 0)
            dispatch(evs, n);
    }
    int64_t cpu1 = cpu_us(RUSAGE_SELF);
    uint64_t unsent = 0;
    for (int i = 0; i < npubs; i++)
        unsent += pubs[i].state == P_DEAD ? 0 : pub_unsent(&pubs[i]);
    printf("{\"phase\":\"streamed\"}\n");
    fflush(stdout);
    wait_stdin();

    for (uint32_t u = 0; u < A.users; u++)
        sub_close(&subs[u], S_NONE);
    for (int i = 0; i < npubs; i++)
        if (pubs[i].fd >= 0)
            close(pubs[i].fd);

    uint64_t expect = C.assigned + (A.mode == M_EXEC ? C.runs_started : 0);
    uint64_t got = C.unique + C.started_seen;
    uint64_t lost = expect > got ? expect - got : 0;
    int64_t t_last = C.t_last_delivery > t_stream0 ? C.t_last_delivery : now;
    double stream_s = (double)(t_last - t_stream0) / 1e6;
    uint64_t events = A.mode == M_BATCH ? C.published : expect;
    printf("{\"target\":\"%s\",\"mode\":\"%s\",\"users\":%u,\"connected\":%llu,\"connect_failed\":%"
           "llu,"
           "\"closed_by_server\":%llu,\"connect_s\":%.3f",
           tgt_names[A.target], A.mode == M_BATCH ? "batch" : "exec", A.users,
           (unsigned long long)C.connected, (unsigned long long)C.connect_failed,
           (unsigned long long)C.closed_by_server, connect_s);
    printf(",\"runs_started\":%llu,\"runs_completed\":%llu,\"runs_failed\":%llu,\"max_open_runs\":%"
           "llu",
           (unsigned long long)C.runs_started, (unsigned long long)C.runs_completed,
           (unsigned long long)C.runs_failed, (unsigned long long)C.max_in_run);
    printf(",\"events_planned\":%llu,\"events_published\":%llu,\"publish_errors\":%llu,\"publish_"
           "requests\":%llu,"
           "\"publish_reconnects\":%llu,\"unsent\":%llu,\"nchan_no_subscriber\":%llu",
           (unsigned long long)expect, (unsigned long long)events,
           (unsigned long long)C.publish_errors, (unsigned long long)C.publish_requests,
           (unsigned long long)C.publish_reconnects, (unsigned long long)unsent,
           (unsigned long long)C.nosub);
    printf(",\"deliveries\":%llu,\"received\":%llu,\"lost\":%llu,\"duplicates\":%llu,\"gaps\":%llu,"
           "\"misrouted\":%llu,\"wrong_run\":%llu,\"seq_errors\":%llu,\"bad_frames\":%llu,\"other_"
           "msgs\":%llu,"
           "\"server_errors\":%llu",
           (unsigned long long)C.deliveries, (unsigned long long)got, (unsigned long long)lost,
           (unsigned long long)C.duplicates, (unsigned long long)C.gaps,
           (unsigned long long)C.misrouted, (unsigned long long)C.wrong_run,
           (unsigned long long)C.seq_errors, (unsigned long long)C.bad_frames,
           (unsigned long long)C.other_msgs, (unsigned long long)C.server_errors);
    printf(",\"duration_s\":%.3f,\"stream_s\":%.3f,\"events_per_s\":%.0f,\"deliveries_per_s\":%.0f,"
           "\"offered_events_per_s\":%.0f",
           (double)A.duration_ms / 1000, stream_s, stream_s > 0 ? (double)events / stream_s : 0,
           stream_s > 0 ? (double)got / stream_s : 0,
           (double)expect * 1000 / (double)A.duration_ms);
    print_hist("latency_us", lat);
    if (A.mode == M_BATCH)
        print_hist("lag_us", lag);
    else {
        print_hist("start_latency_us", startlat);
        print_hist("first_event_latency_us", firstlat);
    }
    printf(",\"close_reasons\":{");
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0] && reasons[i].n; i++) {
        printf("%s\"", i ? "," : "");
        for (const char *c = reasons[i].why; *c; c++)
            if (*c != '"' && *c != '\\' && (unsigned char)*c >= 0x20)
                putchar(*c);
        printf("\":%llu", (unsigned long long)reasons[i].n);
    }
    printf("}");
    printf(",\"client_cpu_s\":%.3f,\"client_cpu_total_s\":%.3f,\"timed_out\":%s}\n",
           (double)(cpu1 - cpu0) / 1e6, (double)cpu_us(RUSAGE_SELF) / 1e6,
           timed_out ? "true" : "false");
    fflush(stdout);
    return 0;
}
