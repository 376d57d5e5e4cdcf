/* loadgen_sub.c -- one client process: its slice of WebSocket subscribers on
 * one epoll loop, one read buffer for all of them, and a small state per
 * connection. Reports to the parent through a pipe. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "loadgen.h"

#define RBUF_SIZE  (1u << 20)
#define MAX_MSG    (64u << 20)
#define KEEP_ACC   4096
#define MAX_HEAD   16384
#define CMD_TAG    UINT64_MAX
#define ECHO_IOV   64
#define MAX_EVENTS 512

enum cstate {
    CS_NONE,
    CS_CONNECTING,
    CS_HANDSHAKE,
    CS_SIO_OPEN,
    CS_SIO_CONNECT,
    CS_WELCOME,
    CS_READY,
    CS_CLOSED,
};

enum phase { PH_CONNECT, PH_RUN, PH_AWAY, PH_RECONNECT };

#define F_PAYLOAD 0x01 /* inside a frame's payload */
#define F_FIN     0x02 /* the current frame ends its message */
#define F_MSG     0x04 /* a data message is open */
#define F_ACC     0x08 /* the data message is being collected in acc */
#define F_POLLOUT 0x10 /* bytes wait for EPOLLOUT */
#define F_DONE    0x20 /* reconnect phase: this connection is finished */
#define F_EVER    0x40 /* was ready in the connect phase */
#define F_CTL     0x80 /* a control frame is being collected in ctl */

struct out {
    uint32_t len, off;
    char data[];
};

struct conn {
    int fd;
    uint32_t user;
    uint32_t last_bi;
    uint32_t seq;
    uint64_t epoch;
    uint64_t rem; /* payload bytes left in the current frame */
    int64_t t_start;
    char *acc; /* partial handshake answer or data message */
    struct out *out;
    unsigned char *ctl;
    uint32_t acc_len, acc_cap;
    uint8_t state, flags, op, hdr_len, ctl_len;
    unsigned char hdr[14];
};

struct echo_state {
    uint32_t head, count, tx_pending, tx_off;
};

static struct {
    int idx;
    uint64_t lo;
    size_t n;
    struct conn *c;
    struct echo_state *es;
    int64_t *ets;
    int ep, cmd_fd, rep_fd;
    unsigned char *rbuf;
    size_t next;
    int inflight, max_inflight;
    enum phase phase;
    struct cstats st;
    struct hist lat, rlat;
    uint64_t expect;
    bool expect_sent, resumed_sent, echo_on;
    uint64_t to_reconnect, done_conns;
    char key[32], accept[32];
    unsigned char *echo_frame;
    size_t echo_frame_len;
    int64_t now;
    int logs;
    bool explicit_ports;
    unsigned port_lo, port_span;
    unsigned port_cur[256];
} S;

static void send_msg(uint32_t type)
{
    S.st.cpu_us = cpu_us(RUSAGE_SELF);
    struct msg_head h = {type, sizeof S.st};
    if (type == MSG_FINAL) {
        h.len = MSG_FINAL_LEN;
        size_t total = sizeof h + MSG_FINAL_LEN;
        char *buf = malloc(total);
        if (!buf)
            _exit(1);
        memcpy(buf, &h, sizeof h);
        memcpy(buf + sizeof h, &S.st, sizeof S.st);
        memcpy(buf + sizeof h + sizeof S.st, &S.lat, sizeof S.lat);
        memcpy(buf + sizeof h + sizeof S.st + sizeof S.lat, &S.rlat, sizeof S.rlat);
        int rc = write_all(S.rep_fd, buf, total);
        free(buf);
        if (rc != 0)
            _exit(1);
        return;
    }
    char buf[sizeof h + sizeof S.st];
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, &S.st, sizeof S.st);
    if (write_all(S.rep_fd, buf, sizeof buf) != 0)
        _exit(1); /* the parent is gone */
}

/* Descriptors are edge-triggered for both directions: F_POLLOUT only notes
 * that queued bytes wait for the next EPOLLOUT edge. */
static void set_pollout(struct conn *c, bool on)
{
    if (on)
        c->flags |= F_POLLOUT;
    else
        c->flags &= (uint8_t)~F_POLLOUT;
}

static void conn_reset(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->acc);
    free(c->out);
    free(c->ctl);
    c->acc = NULL;
    c->out = NULL;
    c->ctl = NULL;
    c->acc_len = c->acc_cap = 0;
    c->rem = 0;
    c->hdr_len = c->ctl_len = 0;
    c->flags &= F_DONE | F_EVER;
    if (S.es) {
        struct echo_state *e = &S.es[c - S.c];
        memset(e, 0, sizeof *e);
    }
}

static void check_resume_done(struct conn *c)
{
    if (S.phase != PH_RECONNECT || (c->flags & F_DONE))
        return;
    if (c->last_bi < events_for_user(c->user, 2 * opt.events))
        return;
    c->flags |= F_DONE;
    S.done_conns++;
    S.st.resume_complete++;
    hist_add(&S.rlat, (uint64_t)(S.now - c->t_start));
}

static void mark_done_failed(struct conn *c)
{
    if (S.phase == PH_RECONNECT && !(c->flags & F_DONE)) {
        c->flags |= F_DONE;
        S.done_conns++;
    }
}

/* Ends a connection: before it was ready that is a failed connect, after it
 * a close by the server (or a protocol error). */
static void conn_drop(struct conn *c, const char *why, int err)
{
    if (c->state == CS_CLOSED || c->state == CS_NONE)
        return;
    bool was_ready = c->state == CS_READY;
    if (!was_ready) {
        S.inflight--;
        if (S.phase == PH_RECONNECT)
            S.st.re_failed++;
        else
            S.st.failed++;
    } else {
        S.st.closed_by_server++;
    }
    mark_done_failed(c);
    if (S.logs < 5) {
        S.logs++;
        logmsg("proc %d: connection %llu (u%u) %s: %s%s%s", S.idx,
               (unsigned long long)(S.lo + (uint64_t)(c - S.c)), c->user,
               was_ready ? "closed" : "failed", why, err ? ": " : "", err ? strerror(err) : "");
    }
    conn_reset(c);
    c->state = CS_CLOSED;
}

static void conn_ready(struct conn *c)
{
    c->state = CS_READY;
    S.inflight--;
    if (S.phase == PH_RECONNECT) {
        S.st.re_ready++;
    } else {
        S.st.ready++;
        S.st.t_last_ready = S.now;
        c->flags |= F_EVER;
        if (opt.mode == MODE_STORM || opt.mode == MODE_IDLE)
            hist_add(&S.lat, (uint64_t)(S.now - c->t_start));
    }
}

/* Writes bytes in order after whatever is still queued. False: dropped. */
static bool send_bytes(struct conn *c, const void *data, size_t len)
{
    struct echo_state *e = S.es ? &S.es[c - S.c] : NULL;
    size_t done = 0;
    if (!c->out && !(e && e->tx_off)) {
        ssize_t w = send(c->fd, data, len, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                conn_drop(c, "write", errno);
                return false;
            }
            w = 0;
        }
        done = (size_t)w;
        if (done == len)
            return true;
    }
    size_t rest = len - done;
    size_t have = c->out ? c->out->len - c->out->off : 0;
    struct out *o = malloc(sizeof *o + have + rest);
    if (!o) {
        conn_drop(c, "out of memory", 0);
        return false;
    }
    o->off = 0;
    o->len = (uint32_t)(have + rest);
    if (have)
        memcpy(o->data, c->out->data + c->out->off, have);
    memcpy(o->data + have, (const char *)data + done, rest);
    free(c->out);
    c->out = o;
    set_pollout(c, true);
    return true;
}

static bool send_frame(struct conn *c, int op, const void *payload, size_t len)
{
    unsigned char buf[1024];
    if (len + 14 > sizeof buf)
        return false;
    return send_bytes(c, buf, ws_client_frame(buf, op, payload, len));
}

/* Writes up to max queued echo frames. False: dropped. */
static bool echo_write(struct conn *c, unsigned max)
{
    struct echo_state *e = &S.es[c - S.c];
    struct iovec iov[ECHO_IOV];
    unsigned k = 0;
    size_t fl = S.echo_frame_len;
    while (k < max && k < ECHO_IOV && k < e->tx_pending) {
        size_t off = k == 0 ? e->tx_off : 0;
        iov[k].iov_base = S.echo_frame + off;
        iov[k].iov_len = fl - off;
        k++;
    }
    if (k == 0)
        return true;
    ssize_t w = writev(c->fd, iov, (int)k);
    if (w < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return true;
        conn_drop(c, "write", errno);
        return false;
    }
    size_t left = (size_t)w;
    while (left > 0) {
        size_t rem = fl - e->tx_off;
        if (left >= rem) {
            left -= rem;
            e->tx_off = 0;
            e->tx_pending--;
        } else {
            e->tx_off += (uint32_t)left;
            left = 0;
        }
    }
    return true;
}

/* Sends what is queued: the rest of a started echo frame, then control
 * frames, then further echo frames. */
static void conn_flush(struct conn *c)
{
    struct echo_state *e = S.es ? &S.es[c - S.c] : NULL;
    if (e && e->tx_off) {
        if (!echo_write(c, 1))
            return;
        if (e->tx_off) {
            set_pollout(c, true);
            return;
        }
    }
    if (c->out) {
        struct out *o = c->out;
        ssize_t w = send(c->fd, o->data + o->off, o->len - o->off, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            conn_drop(c, "write", errno);
            return;
        }
        if (w > 0)
            o->off += (uint32_t)w;
        if (o->off < o->len) {
            set_pollout(c, true);
            return;
        }
        free(o);
        c->out = NULL;
    }
    if (e && e->tx_pending) {
        if (!echo_write(c, ECHO_IOV))
            return;
        if (e->tx_pending) {
            set_pollout(c, true);
            return;
        }
    }
    set_pollout(c, false);
}

static void echo_queue(struct conn *c)
{
    size_t i = (size_t)(c - S.c);
    struct echo_state *e = &S.es[i];
    uint32_t w = (uint32_t)opt.echo_window;
    if (e->count >= w)
        return;
    S.ets[i * w + (e->head + e->count) % w] = S.now;
    e->count++;
    e->tx_pending++;
}

/* Source ports are chosen here rather than by the kernel, whose search for a
 * free port in connect() costs more and more as the range fills up: each
 * process takes its own share of ports 10000-65535 on every source address
 * and walks through it from a random place. SO_REUSEADDR lets a port be
 * used again while an earlier connection from it is in TIME_WAIT; a port that
 * is still tied to the same destination makes connect() fail with
 * EADDRNOTAVAIL, and the next one is tried. */
#define PORT_FIRST 10000u
#define PORT_END   65536u

static int bind_source(int fd, uint64_t gi)
{
    unsigned k = (unsigned)(gi % (uint64_t)opt.source_addrs);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001u + k);
    if (!S.explicit_ports) {
        if (opt.source_addrs == 1)
            return 0;
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        return bind(fd, (struct sockaddr *)&src, sizeof src) == 0 ? 0 : errno;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    for (unsigned t = 0; t < S.port_span; t++) {
        unsigned port = S.port_lo + S.port_cur[k];
        S.port_cur[k] = (S.port_cur[k] + 1) % S.port_span;
        src.sin_port = htons((uint16_t)port);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) == 0)
            return 0;
        if (errno != EADDRINUSE)
            return errno;
    }
    return EADDRNOTAVAIL;
}

static void start_conn(size_t i)
{
    struct conn *c = &S.c[i];
    uint64_t gi = S.lo + i;
    c->t_start = S.now;
    c->state = CS_CONNECTING;
    S.inflight++;
    if (!S.st.t_first_connect)
        S.st.t_first_connect = S.now;
    struct sockaddr_in dst = {.sin_family = AF_INET};
    dst.sin_port = htons(opt.ports[gi % (uint64_t)opt.nports]);
    dst.sin_addr.s_addr = opt.host_addr;
    for (int attempt = 0;; attempt++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            conn_drop(c, "socket", errno);
            return;
        }
        c->fd = fd;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int err = bind_source(fd, gi);
        if (err) {
            conn_drop(c, "bind", err);
            return;
        }
        if (connect(fd, (struct sockaddr *)&dst, sizeof dst) == 0 || errno == EINPROGRESS)
            break;
        err = errno;
        /* that source port is still tied to this destination: take another */
        if (err == EADDRNOTAVAIL && S.explicit_ports && attempt < 256) {
            close(fd);
            c->fd = -1;
            continue;
        }
        conn_drop(c, "connect", err);
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u64 = i};
    if (epoll_ctl(S.ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) {
        conn_drop(c, "epoll_ctl", errno);
        return;
    }
}

static void start_more(void)
{
    while (S.inflight < S.max_inflight && S.next < S.n) {
        size_t i = S.next++;
        if (S.phase == PH_RECONNECT && !(S.c[i].flags & F_EVER))
            continue;
        start_conn(i);
    }
}

static void send_request(struct conn *c)
{
    uint64_t gi = S.lo + (uint64_t)(c - S.c);
    char tok[512], path[1024], req[2048];
    if (opt.target == TGT_AGENTWIRE || opt.target == TGT_WS) {
        make_jwt(tok, sizeof tok, c->user);
        const char *ep = opt.mode == MODE_ECHO ? "/echo" : "/ws";
        if (S.phase == PH_RECONNECT)
            snprintf(path, sizeof path, "%s?token=%s&since=%u&epoch=%016llx", ep, tok, c->seq,
                     (unsigned long long)c->epoch);
        else
            snprintf(path, sizeof path, "%s?token=%s", ep, tok);
    } else if (opt.target == TGT_SOCKETIO) {
        snprintf(path, sizeof path, "/socket.io/?EIO=4&transport=websocket");
    } else {
        snprintf(path, sizeof path, "/sub/u%u", c->user);
    }
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%u\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path, opt.host, opt.ports[gi % (uint64_t)opt.nports], S.key);
    send_bytes(c, req, (size_t)n);
}

static void on_connected(struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err) {
        conn_drop(c, "connect", err);
        return;
    }
    c->state = CS_HANDSHAKE;
    set_pollout(c, false);
    send_request(c);
}

/* Header line "\r\nname:" in h, name in lower case. */
static const unsigned char *find_ci(const unsigned char *h, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    const unsigned char *end = h + n, *p = h;
    while ((p = memmem(p, (size_t)(end - p), "\r\n", 2)) && (size_t)(end - p) >= m) {
        if (strncasecmp((const char *)p, needle, m) == 0)
            return p;
        p += 2;
    }
    return NULL;
}

static bool acc_append(struct conn *c, const void *p, size_t k)
{
    if ((uint64_t)c->acc_len + k > MAX_MSG) {
        conn_drop(c, "message too large", 0);
        return false;
    }
    if (c->acc_len + k > c->acc_cap) {
        uint32_t cap = c->acc_cap ? c->acc_cap : 256;
        while (cap < c->acc_len + k)
            cap *= 2;
        char *a = realloc(c->acc, cap);
        if (!a) {
            conn_drop(c, "out of memory", 0);
            return false;
        }
        c->acc = a;
        c->acc_cap = cap;
    }
    memcpy(c->acc + c->acc_len, p, k);
    c->acc_len += (uint32_t)k;
    return true;
}

static void acc_release(struct conn *c)
{
    c->acc_len = 0;
    if (c->acc_cap > KEEP_ACC) {
        free(c->acc);
        c->acc = NULL;
        c->acc_cap = 0;
    }
}

/* Handshake answer: returns how many bytes of p it used, or -1 when it needs
 * more or the connection was dropped. */
static ssize_t on_handshake(struct conn *c, const unsigned char *p, size_t n)
{
    const unsigned char *buf = p;
    size_t len = n, old = c->acc_len, from = 0;
    if (old) {
        if (!acc_append(c, p, n))
            return -1;
        buf = (const unsigned char *)c->acc;
        len = c->acc_len;
        from = old > 3 ? old - 3 : 0;
    }
    const unsigned char *e = memmem(buf + from, len - from, "\r\n\r\n", 4);
    if (!e) {
        if (len > MAX_HEAD) {
            conn_drop(c, "handshake answer too long", 0);
            return -1;
        }
        if (!old && !acc_append(c, p, n))
            return -1;
        return -1;
    }
    size_t hend = (size_t)(e - buf) + 4;
    if (hend < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0) {
        char status[64];
        size_t sl = 0;
        while (sl < sizeof status - 1 && sl < hend && buf[sl] != '\r') {
            status[sl] = (char)buf[sl];
            sl++;
        }
        status[sl] = '\0';
        conn_drop(c, status, 0);
        return -1;
    }
    const unsigned char *a = find_ci(buf, hend, "\r\nsec-websocket-accept:");
    bool ok = false;
    if (a) {
        a += 23;
        while (*a == ' ' || *a == '\t')
            a++;
        size_t al = strlen(S.accept);
        ok = (size_t)(e - a) >= al && memcmp(a, S.accept, al) == 0 &&
             (a[al] == '\r' || a[al] == ' ');
    }
    if (!ok) {
        conn_drop(c, "bad Sec-WebSocket-Accept", 0);
        return -1;
    }
    if (find_ci(buf, hend, "\r\nsec-websocket-extensions:")) {
        conn_drop(c, "extension negotiated though none was offered", 0);
        return -1;
    }
    size_t used = hend - old;
    acc_release(c);
    if (opt.mode == MODE_ECHO || opt.target == TGT_WS || opt.target == TGT_NCHAN)
        conn_ready(c);
    else if (opt.target == TGT_SOCKETIO)
        c->state = CS_SIO_OPEN;
    else
        c->state = CS_WELCOME;
    return (ssize_t)used;
}

static const unsigned char *parse_uint(const unsigned char *p, const unsigned char *end,
                                       uint64_t *v)
{
    uint64_t x = 0;
    const unsigned char *s = p;
    while (p < end && *p >= '0' && *p <= '9')
        x = x * 10 + (uint64_t)(*p++ - '0');
    *v = x;
    return p == s ? NULL : p;
}

static bool find_uint(const unsigned char *d, size_t len, const char *key, uint64_t *v)
{
    size_t kl = strlen(key);
    const unsigned char *p = memmem(d, len, key, kl);
    return p && parse_uint(p + kl, d + len, v);
}

static void parse_epoch(struct conn *c, const unsigned char *d, size_t len)
{
    const unsigned char *p = memmem(d, len, "\"epoch\":\"", 9);
    if (!p || (size_t)(d + len - p) < 9 + 16)
        return;
    p += 9;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        unsigned char ch = p[i];
        unsigned x;
        if (ch >= '0' && ch <= '9')
            x = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
            x = ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F')
            x = ch - 'A' + 10;
        else
            return;
        v = v << 4 | x;
    }
    c->epoch = v;
}

static void on_event(struct conn *c, const unsigned char *d, size_t len)
{
    const unsigned char *end = d + len;
    const unsigned char *bu = memmem(d, len, "\"bu\":\"", 6);
    if (!bu) {
        S.st.other_msgs++;
        return;
    }
    const unsigned char *q = bu + 6;
    uint64_t u = 0;
    if (q >= end || *q != 'u' || !(q = parse_uint(q + 1, end, &u)) || q >= end || *q != '"' ||
        u != c->user) {
        S.st.cross_user++;
        return;
    }
    uint64_t bi, bt;
    const unsigned char *p = memmem(q, (size_t)(end - q), "\"bi\":", 5);
    if (!p)
        p = memmem(d, (size_t)(bu - d), "\"bi\":", 5);
    if (!p || !parse_uint(p + 5, end, &bi)) {
        S.st.bad_frames++;
        return;
    }
    p = memmem(q, (size_t)(end - q), "\"bt\":", 5);
    if (!p)
        p = memmem(d, (size_t)(bu - d), "\"bt\":", 5);
    if (!p || !parse_uint(p + 5, end, &bt)) {
        S.st.bad_frames++;
        return;
    }
    if (opt.mode == MODE_RESUME) {
        uint64_t seq;
        if (find_uint(d, len, "\"seq\":", &seq))
            c->seq = (uint32_t)seq;
        parse_epoch(c, d, len);
    }
    if (bi <= c->last_bi) {
        S.st.duplicates++;
        return;
    }
    if (bi != (uint64_t)c->last_bi + 1)
        S.st.order_errors++;
    c->last_bi = (uint32_t)bi;
    S.st.deliveries++;
    if (!S.st.t_first_delivery)
        S.st.t_first_delivery = S.now;
    S.st.t_last_delivery = S.now;
    if (S.phase == PH_RECONNECT) {
        S.st.replayed++;
        check_resume_done(c);
    } else if (opt.mode == MODE_FANOUT || opt.mode == MODE_RESUME) {
        hist_add(&S.lat, S.now > (int64_t)bt ? (uint64_t)(S.now - (int64_t)bt) : 0);
    }
    if (!S.expect_sent && S.expect && S.st.deliveries >= S.expect) {
        S.expect_sent = true;
        send_msg(MSG_PROGRESS);
    }
}

static void on_welcome(struct conn *c, const unsigned char *d, size_t len)
{
    uint64_t seq;
    if (find_uint(d, len, "\"seq\":", &seq))
        c->seq = (uint32_t)seq;
    parse_epoch(c, d, len);
    conn_ready(c);
    if (S.phase != PH_RECONNECT)
        return;
    if (!memmem(d, len, "\"resumed\":true", 14)) {
        S.st.resumed_false++;
        mark_done_failed(c);
        return;
    }
    check_resume_done(c);
}

/* A complete data message. False: the connection was dropped. */
static bool on_message(struct conn *c, const unsigned char *d, size_t len)
{
    switch (c->state) {
    case CS_WELCOME:
        on_welcome(c, d, len);
        return true;
    case CS_SIO_OPEN:
        if (len > 0 && d[0] == '0') {
            char tok[512], m[600];
            make_jwt(tok, sizeof tok, c->user);
            int n = snprintf(m, sizeof m, "40{\"token\":\"%s\"}", tok);
            c->state = CS_SIO_CONNECT;
            return send_frame(c, 1, m, (size_t)n);
        }
        break;
    case CS_SIO_CONNECT:
        if (len >= 2 && d[0] == '4' && d[1] == '0') {
            conn_ready(c);
            return true;
        }
        if (len >= 2 && d[0] == '4' && d[1] == '4') {
            conn_drop(c, "socket.io connect refused", 0);
            return false;
        }
        break;
    case CS_READY:
        if (opt.target != TGT_SOCKETIO) {
            on_event(c, d, len);
            return true;
        }
        if (len >= 2 && d[0] == '4' && d[1] == '2') {
            on_event(c, d, len);
            return true;
        }
        break;
    default:
        break;
    }
    if (opt.target == TGT_SOCKETIO && len == 1 && d[0] == '2')
        return send_frame(c, 1, "3", 1);
    S.st.other_msgs++;
    return true;
}

static bool on_echo(struct conn *c, uint64_t len)
{
    struct echo_state *e = &S.es[c - S.c];
    if (len != (uint64_t)opt.echo_bytes || e->count == 0) {
        S.st.echo_errors++;
        return true;
    }
    uint32_t w = (uint32_t)opt.echo_window;
    int64_t t = S.ets[(size_t)(c - S.c) * w + e->head];
    e->head = (e->head + 1) % w;
    e->count--;
    if (S.echo_on) {
        S.st.echo_msgs++;
        S.st.echo_bytes += len;
        hist_add(&S.lat, (uint64_t)(S.now - t));
        echo_queue(c);
    }
    return true;
}

static bool on_control(struct conn *c, int op, const unsigned char *d, size_t len)
{
    if (op == 9)
        return send_frame(c, 10, d, len);
    if (op == 8) {
        unsigned code = len >= 2 ? (unsigned)d[0] << 8 | d[1] : 1005;
        send_frame(c, 8, d, len >= 2 ? 2 : 0);
        if (c->fd < 0)
            return false;
        char why[64];
        snprintf(why, sizeof why, "close frame %u", code);
        conn_drop(c, why, 0);
        return false;
    }
    return true;
}

static int hdr_need(unsigned char b1)
{
    int n = 2;
    unsigned l = b1 & 0x7f;
    if (l == 126)
        n += 2;
    else if (l == 127)
        n += 8;
    if (b1 & 0x80)
        n += 4;
    return n;
}

static bool start_frame(struct conn *c, const unsigned char *h)
{
    unsigned b0 = h[0], b1 = h[1];
    if (b1 & 0x80) {
        conn_drop(c, "masked frame from the server", 0);
        return false;
    }
    if (b0 & 0x70) {
        conn_drop(c, "reserved bits set", 0);
        return false;
    }
    uint64_t len = b1 & 0x7f;
    if (len == 126) {
        len = (uint64_t)h[2] << 8 | h[3];
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | h[2 + i];
    }
    unsigned op = b0 & 0x0f;
    bool fin = b0 & 0x80;
    if (op >= 8) {
        if (!fin || len > 125 || op > 10) {
            conn_drop(c, "bad control frame", 0);
            return false;
        }
    } else if (op == 0) {
        if (!(c->flags & F_MSG)) {
            conn_drop(c, "continuation without a message", 0);
            return false;
        }
    } else if (op == 1 || op == 2) {
        if (c->flags & F_MSG) {
            conn_drop(c, "new message inside a fragmented one", 0);
            return false;
        }
        c->flags |= F_MSG;
        c->flags &= (uint8_t)~F_ACC;
        c->acc_len = 0;
    } else {
        conn_drop(c, "reserved opcode", 0);
        return false;
    }
    if (op < 8 && (uint64_t)c->acc_len + len > MAX_MSG &&
        !(opt.mode == MODE_ECHO && c->state == CS_READY)) {
        conn_drop(c, "message too large", 0);
        return false;
    }
    c->op = (uint8_t)op;
    c->rem = len;
    c->flags |= F_PAYLOAD;
    if (fin)
        c->flags |= F_FIN;
    else
        c->flags &= (uint8_t)~F_FIN;
    return true;
}

/* k bytes of the current frame's payload; last: they end the frame. */
static bool payload(struct conn *c, const unsigned char *p, size_t k, bool last)
{
    if (c->op >= 8) {
        if (!(c->flags & F_CTL) && last)
            return on_control(c, c->op, p, k);
        if (!c->ctl && !(c->ctl = malloc(128))) {
            conn_drop(c, "out of memory", 0);
            return false;
        }
        memcpy(c->ctl + c->ctl_len, p, k);
        c->ctl_len = (uint8_t)(c->ctl_len + k);
        c->flags |= F_CTL;
        if (!last)
            return true;
        unsigned char tmp[128];
        size_t n = c->ctl_len;
        memcpy(tmp, c->ctl, n);
        free(c->ctl);
        c->ctl = NULL;
        c->ctl_len = 0;
        c->flags &= (uint8_t)~F_CTL;
        return on_control(c, c->op, tmp, n);
    }
    bool end = last && (c->flags & F_FIN);
    if (opt.mode == MODE_ECHO && c->state == CS_READY) {
        c->acc_len += (uint32_t)k;
        if (!end)
            return true;
        uint64_t n = c->acc_len;
        c->acc_len = 0;
        c->flags &= (uint8_t)~F_MSG;
        return on_echo(c, n);
    }
    if (!(c->flags & F_ACC) && end) {
        c->flags &= (uint8_t)~F_MSG;
        return on_message(c, p, k);
    }
    if (!acc_append(c, p, k))
        return false;
    c->flags |= F_ACC;
    if (!end)
        return true;
    c->flags &= (uint8_t) ~(F_ACC | F_MSG);
    bool ok = on_message(c, (const unsigned char *)c->acc, c->acc_len);
    if (ok && c->fd >= 0)
        acc_release(c);
    return ok;
}

/* Bytes from the server after the handshake. False: dropped. */
static bool feed(struct conn *c, const unsigned char *p, size_t n)
{
    while (n > 0) {
        if (!(c->flags & F_PAYLOAD)) {
            const unsigned char *h;
            if (c->hdr_len == 0 && n >= 2 && n >= (size_t)hdr_need(p[1])) {
                h = p;
                size_t need = (size_t)hdr_need(p[1]);
                p += need;
                n -= need;
            } else {
                while (n > 0 && (c->hdr_len < 2 || c->hdr_len < hdr_need(c->hdr[1]))) {
                    c->hdr[c->hdr_len++] = *p++;
                    n--;
                }
                if (c->hdr_len < 2 || c->hdr_len < hdr_need(c->hdr[1]))
                    return true;
                h = c->hdr;
                c->hdr_len = 0;
            }
            if (!start_frame(c, h))
                return false;
        }
        size_t k = c->rem < n ? (size_t)c->rem : n;
        bool last = k == c->rem;
        if (!payload(c, p, k, last))
            return false;
        if (c->fd < 0)
            return false;
        p += k;
        n -= k;
        c->rem -= k;
        if (last)
            c->flags &= (uint8_t)~F_PAYLOAD;
    }
    return true;
}

/* Reads until the socket is drained (edge-triggered): a read shorter than
 * the buffer means it is empty for now. */
static void on_readable(struct conn *c)
{
    for (;;) {
        ssize_t r = read(c->fd, S.rbuf, RBUF_SIZE);
        if (r <= 0) {
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && errno == EAGAIN)
                return;
            conn_drop(c, r == 0 ? "end of stream" : "read", r == 0 ? 0 : errno);
            return;
        }
        S.now = now_us();
        const unsigned char *p = S.rbuf;
        size_t n = (size_t)r;
        if (c->state == CS_HANDSHAKE) {
            ssize_t used = on_handshake(c, p, n);
            if (used < 0) {
                if (c->fd < 0)
                    return;
                continue;
            }
            p += used;
            n -= (size_t)used;
        }
        if (!feed(c, p, n))
            return;
        if (S.es && (S.es[c - S.c].tx_pending || c->out))
            conn_flush(c);
        if (c->fd < 0 || (size_t)r < RBUF_SIZE)
            return;
    }
}

static void send_connected_if_done(void)
{
    if (S.phase == PH_CONNECT && S.st.ready + S.st.failed >= S.n) {
        S.phase = PH_RUN;
        send_msg(MSG_CONNECTED);
    }
    if (S.phase == PH_RECONNECT && !S.resumed_sent && S.done_conns >= S.to_reconnect &&
        S.next >= S.n) {
        S.resumed_sent = true;
        S.st.t_resume_done = S.now;
        send_msg(MSG_RESUMED);
    }
}

static void close_all(void)
{
    for (size_t i = 0; i < S.n; i++) {
        struct conn *c = &S.c[i];
        if (c->state == CS_CONNECTING || c->state == CS_HANDSHAKE || c->state == CS_WELCOME ||
            c->state == CS_SIO_OPEN || c->state == CS_SIO_CONNECT)
            S.st.failed++;
        conn_reset(c);
        c->state = CS_NONE;
    }
    S.inflight = 0;
    S.phase = PH_AWAY;
    send_msg(MSG_CLOSED);
}

static void reconnect_all(void)
{
    S.phase = PH_RECONNECT;
    S.next = 0;
    S.done_conns = 0;
    S.to_reconnect = 0;
    for (size_t i = 0; i < S.n; i++)
        if (S.c[i].flags & F_EVER)
            S.to_reconnect++;
    S.st.re_tried = S.to_reconnect;
    S.st.t_resume_start = S.now;
    start_more();
}

static void echo_start(void)
{
    S.echo_on = true;
    for (size_t i = 0; i < S.n; i++) {
        struct conn *c = &S.c[i];
        if (c->state != CS_READY)
            continue;
        for (int k = 0; k < opt.echo_window; k++)
            echo_queue(c);
        conn_flush(c);
    }
}

static void finish(void)
{
    S.echo_on = false;
    send_msg(MSG_FINAL);
    for (size_t i = 0; i < S.n; i++)
        conn_reset(&S.c[i]);
    free(S.c);
    free(S.es);
    free(S.ets);
    free(S.rbuf);
    free(S.echo_frame);
    close(S.ep);
    exit(0);
}

static void on_command(void)
{
    char cmd[64];
    ssize_t r = read(S.cmd_fd, cmd, sizeof cmd);
    if (r == 0)
        exit(1); /* the parent is gone */
    for (ssize_t k = 0; k < r; k++) {
        switch (cmd[k]) {
        case CMD_CLOSE:
            close_all();
            break;
        case CMD_RECONNECT:
            reconnect_all();
            break;
        case CMD_ECHO:
            echo_start();
            break;
        case CMD_FINISH:
            finish();
            break;
        default:
            break;
        }
    }
}

static void scan_timeouts(void)
{
    int64_t limit = opt.connect_timeout_ms * 1000;
    for (size_t i = 0; i < S.next && i < S.n; i++) {
        struct conn *c = &S.c[i];
        if (c->state >= CS_CONNECTING && c->state < CS_READY && S.now - c->t_start > limit)
            conn_drop(c, "timed out", 0);
    }
}

static void make_key(void)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1)
        for (size_t i = 0; i < sizeof raw; i++)
            raw[i] = (unsigned char)fast_rand();
    b64_encode(S.key, raw, sizeof raw, false);
    char cat[128];
    int n = snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", S.key);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(cat, (size_t)n, md, &mdlen, EVP_sha1(), NULL);
    b64_encode(S.accept, md, mdlen, false);
}

void child_main(int idx, uint64_t lo, uint64_t hi, int per_child_concurrency, int cmd_fd,
                int rep_fd)
{
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(1);
    S.idx = idx;
    S.lo = lo;
    S.n = (size_t)(hi - lo);
    S.cmd_fd = cmd_fd;
    S.rep_fd = rep_fd;
    S.max_inflight = per_child_concurrency > 0 ? per_child_concurrency : 1;
    S.now = now_us();
    S.c = calloc(S.n ? S.n : 1, sizeof *S.c);
    S.rbuf = malloc(RBUF_SIZE);
    S.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!S.c || !S.rbuf || S.ep < 0) {
        logmsg("proc %d: out of memory", idx);
        _exit(1);
    }
    if (opt.mode == MODE_ECHO) {
        S.es = calloc(S.n ? S.n : 1, sizeof *S.es);
        S.ets = calloc((S.n ? S.n : 1) * (size_t)opt.echo_window, sizeof *S.ets);
        unsigned char *pl = malloc((size_t)opt.echo_bytes + 1);
        S.echo_frame = malloc((size_t)opt.echo_bytes + 14);
        if (!S.es || !S.ets || !pl || !S.echo_frame) {
            logmsg("proc %d: out of memory", idx);
            _exit(1);
        }
        memset(pl, 'x', (size_t)opt.echo_bytes);
        S.echo_frame_len = ws_client_frame(S.echo_frame, 1, pl, (size_t)opt.echo_bytes);
        free(pl);
    }
    for (size_t i = 0; i < S.n; i++) {
        S.c[i].fd = -1;
        S.c[i].user = (uint32_t)((lo + i) % opt.users);
        if (opt.mode == MODE_FANOUT || opt.mode == MODE_RESUME)
            S.expect += events_for_user(S.c[i].user, opt.events);
    }
    make_key();
    /* explicit source ports need a loopback destination */
    S.explicit_ports = (ntohl(opt.host_addr) >> 24) == 127;
    S.port_span = (PORT_END - PORT_FIRST) / (unsigned)opt.procs;
    S.port_lo = PORT_FIRST + (unsigned)idx * S.port_span;
    /* another load generator may be running: start somewhere else than it */
    for (int k = 0; k < opt.source_addrs; k++)
        S.port_cur[k] = fast_rand() % S.port_span;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = CMD_TAG};
    epoll_ctl(S.ep, EPOLL_CTL_ADD, cmd_fd, &ev);

    struct epoll_event evs[MAX_EVENTS];
    int64_t last_report = S.now, last_scan = S.now;
    start_more();
    send_connected_if_done();
    for (;;) {
        int64_t wait = 100 - (now_us() - last_report) / 1000;
        int n = epoll_wait(S.ep, evs, MAX_EVENTS, wait < 1 ? 1 : (int)wait);
        S.now = now_us();
        for (int k = 0; k < n; k++) {
            if (evs[k].data.u64 == CMD_TAG) {
                on_command();
                continue;
            }
            struct conn *c = &S.c[evs[k].data.u64];
            uint32_t e = evs[k].events;
            if (c->fd < 0)
                continue;
            if (c->state == CS_CONNECTING) {
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    on_connected(c);
                if (c->fd < 0 || c->state == CS_CONNECTING)
                    continue;
            }
            if ((e & EPOLLOUT) && (c->flags & F_POLLOUT))
                conn_flush(c);
            if ((e & (EPOLLIN | EPOLLERR | EPOLLHUP)) && c->fd >= 0)
                on_readable(c);
        }
        S.now = now_us();
        start_more();
        send_connected_if_done();
        if (S.now - last_scan >= 500000) {
            last_scan = S.now;
            scan_timeouts();
            start_more();
            send_connected_if_done();
        }
        if (S.now - last_report >= 100000) {
            last_report = S.now;
            send_msg(MSG_PROGRESS);
        }
    }
}
