/* loadgen_pub.c -- the publishers: keep-alive HTTP/1.1 connections in the
 * parent's epoll loop, each with up to --pipeline requests in flight. The
 * users are split between the publishers (user u belongs to publisher
 * u % publishers), so each user's events leave in order on one connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loadgen.h"

#define MAX_FAILS 20

struct req {
    uint32_t len, nev;
};

enum { PUB_IDLE, PUB_CONNECTING, PUB_OPEN, PUB_DONE };

struct pub {
    int fd, state;
    uint32_t idx;
    uint64_t j, j_end; /* next event of this publisher, end of the range */
    uint64_t total, issued, acked;
    double rate;
    char *pend; /* requests not answered yet */
    size_t plen, pcap, phead, psent;
    struct req *reqs;
    uint32_t rhead, rcount;
    char *in;
    size_t ilen, icap;
    int fails;
    bool pollout;
};

struct pubstats pubstats;

static struct pub *pubs;
static int npubs, pub_ep;
static int64_t rate_t0;
static char *body;
static size_t body_cap;
static int err_logs, reconnect_logs;

static size_t event_max(void)
{
    return 200 + (size_t)opt.payload_bytes;
}

static uint64_t pub_of(uint64_t j)
{
    return (j % opt.users) % (uint64_t)npubs;
}

/* Next event index >= j that belongs to publisher p. */
static uint64_t next_event(uint64_t j, uint32_t p)
{
    uint64_t u = j % opt.users;
    if (u % (uint64_t)npubs == p)
        return j;
    uint64_t r = u % (uint64_t)npubs;
    uint64_t nu = r < p ? u + (p - r) : u + (uint64_t)npubs - r + p;
    if (nu < opt.users)
        return j + (nu - u);
    return j + (opt.users - u) + p;
}

static size_t put_event(char *o, uint64_t j, int64_t bt)
{
    uint64_t u = j % opt.users, bi = j / opt.users + 1;
    size_t n = 0;
    static const char a[] = "{\"type\":\"bench\",\"user_id\":\"u";
    memcpy(o, a, sizeof a - 1);
    n += sizeof a - 1;
    n += put_u64(o + n, u);
    static const char b[] = "\",\"bench\":{\"bu\":\"u";
    memcpy(o + n, b, sizeof b - 1);
    n += sizeof b - 1;
    n += put_u64(o + n, u);
    memcpy(o + n, "\",\"bi\":", 7);
    n += 7;
    n += put_u64(o + n, bi);
    memcpy(o + n, ",\"bt\":", 6);
    n += 6;
    n += put_u64(o + n, (uint64_t)bt);
    o[n++] = '}';
    if (opt.keyed) {
        memcpy(o + n, ",\"idempotency_key\":\"k", 21);
        n += 21;
        n += put_u64(o + n, j);
        o[n++] = '"';
    }
    if ((size_t)opt.payload_bytes > n + 10) {
        size_t pad = (size_t)opt.payload_bytes - n - 10;
        memcpy(o + n, ",\"pad\":\"", 8);
        n += 8;
        memset(o + n, 'x', pad);
        n += pad;
        o[n++] = '"';
    }
    o[n++] = '}';
    return n;
}

static bool reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    char *b = realloc(*buf, c);
    if (!b)
        return false;
    *buf = b;
    *cap = c;
    return true;
}

static void set_pollout(struct pub *p, bool on)
{
    if (p->pollout == on || p->fd < 0)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0),
                             .data.u64 = (uint64_t)TAG_PUB << 32 | p->idx};
    epoll_ctl(pub_ep, EPOLL_CTL_MOD, p->fd, &ev);
    p->pollout = on;
}

static void pub_connect(struct pub *p)
{
    p->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0) {
        logmsg("publisher %u: socket: %s", p->idx, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in dst = {.sin_family = AF_INET};
    dst.sin_port = htons(opt.ports[0]);
    dst.sin_addr.s_addr = opt.host_addr;
    if (connect(p->fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS) {
        logmsg("publisher %u: connect: %s", p->idx, strerror(errno));
        close(p->fd);
        p->fd = -1;
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT,
                             .data.u64 = (uint64_t)TAG_PUB << 32 | p->idx};
    epoll_ctl(pub_ep, EPOLL_CTL_ADD, p->fd, &ev);
    p->pollout = true;
    p->state = PUB_CONNECTING;
}

static void pub_give_up(struct pub *p)
{
    uint64_t lost = p->total - p->acked;
    pubstats.errors += lost;
    p->acked = p->issued = p->total;
    p->rcount = 0;
    p->plen = p->phead = p->psent = 0;
    p->state = PUB_DONE;
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    logmsg("publisher %u: gave up after %d failed connections; %llu events not published", p->idx,
           p->fails, (unsigned long long)lost);
}

/* The connection ended: resend every unanswered request on a new one. */
static void pub_reset(struct pub *p, const char *why)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    p->pollout = false;
    p->ilen = 0;
    p->psent = p->phead;
    p->state = PUB_IDLE;
    if (p->acked >= p->total) {
        p->state = PUB_DONE;
        return;
    }
    if (++p->fails > MAX_FAILS) {
        pub_give_up(p);
        return;
    }
    pubstats.reconnects++;
    if ((p->fails > 1 || p->rcount) && reconnect_logs < 5) {
        reconnect_logs++;
        logmsg("publisher %u: %s; reconnecting (%u requests to resend)", p->idx, why, p->rcount);
    }
    pub_connect(p);
    if (p->fd < 0)
        pub_give_up(p);
}

static void pub_flush(struct pub *p)
{
    if (p->state != PUB_OPEN)
        return;
    while (p->psent < p->plen) {
        ssize_t w = send(p->fd, p->pend + p->psent, p->plen - p->psent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            pub_reset(p, strerror(errno));
            return;
        }
        p->psent += (size_t)w;
    }
    set_pollout(p, p->psent < p->plen);
}

static const char *pub_path(uint64_t j, char *buf, size_t cap)
{
    switch (opt.target) {
    case TGT_AGENTWIRE:
        return opt.batch > 1 ? "/api/v1/publish/batch" : "/api/v1/publish";
    case TGT_WS:
    case TGT_SOCKETIO:
        return opt.batch > 1 ? "/publish/batch" : "/publish";
    case TGT_NCHAN:
        snprintf(buf, cap, "/pub/u%llu", (unsigned long long)(j % opt.users));
        return buf;
    }
    return "/";
}

/* Appends one request of up to --batch events to the pending buffer. */
static bool pub_issue(struct pub *p, uint32_t nev)
{
    int64_t bt = now_us();
    if (!reserve(&body, &body_cap, (size_t)nev * (event_max() + 1) + 2))
        return false;
    size_t bl = 0;
    uint64_t first = p->j;
    if (opt.batch > 1)
        body[bl++] = '[';
    for (uint32_t k = 0; k < nev; k++) {
        if (k)
            body[bl++] = ',';
        bl += put_event(body + bl, p->j, bt);
        p->j = next_event(p->j + 1, p->idx);
    }
    if (opt.batch > 1)
        body[bl++] = ']';
    char head[512], pathbuf[64];
    int hl = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s:%u\r\nAuthorization: Bearer %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      pub_path(first, pathbuf, sizeof pathbuf), opt.host, opt.ports[0],
                      opt.api_key ? opt.api_key : "", bl);
    if (p->phead > 0 && p->phead == p->plen) {
        p->phead = p->psent = p->plen = 0;
    } else if (p->phead > p->pcap / 2) {
        memmove(p->pend, p->pend + p->phead, p->plen - p->phead);
        p->plen -= p->phead;
        p->psent -= p->phead;
        p->phead = 0;
    }
    if (!reserve(&p->pend, &p->pcap, p->plen + (size_t)hl + bl))
        return false;
    memcpy(p->pend + p->plen, head, (size_t)hl);
    memcpy(p->pend + p->plen + hl, body, bl);
    p->plen += (size_t)hl + bl;
    uint32_t slot = (p->rhead + p->rcount) % (uint32_t)opt.pipeline;
    p->reqs[slot].len = (uint32_t)((size_t)hl + bl);
    p->reqs[slot].nev = nev;
    p->rcount++;
    p->issued += nev;
    pubstats.requests++;
    if (!pubstats.t_first)
        pubstats.t_first = bt;
    return true;
}

static void pub_pump(struct pub *p, int64_t now)
{
    if (p->state != PUB_OPEN)
        return;
    while (p->rcount < (uint32_t)opt.pipeline && p->issued < p->total) {
        uint64_t left = p->total - p->issued;
        uint32_t nev = left < (uint64_t)opt.batch ? (uint32_t)left : (uint32_t)opt.batch;
        if (p->rate > 0) {
            double due = p->rate * (double)(now - rate_t0) / 1e6;
            uint64_t d = due >= (double)p->total ? p->total : (uint64_t)due;
            if (d < p->issued + nev)
                break;
        }
        if (!pub_issue(p, nev)) {
            logmsg("publisher %u: out of memory", p->idx);
            pub_give_up(p);
            return;
        }
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

static void on_response(struct pub *p, int status, const char *b, size_t bl)
{
    if (p->rcount == 0) {
        logmsg("publisher %u: answer without a request (status %d)", p->idx, status);
        return;
    }
    struct req r = p->reqs[p->rhead];
    p->rhead = (p->rhead + 1) % (uint32_t)opt.pipeline;
    p->rcount--;
    p->phead += r.len;
    p->acked += r.nev;
    p->fails = 0;
    pubstats.t_last_ack = now_us();
    uint64_t bad = 0;
    if (status >= 200 && status < 300) {
        if (opt.target == TGT_AGENTWIRE && opt.batch > 1)
            bad = count_errors(b, bl);
    } else {
        bad = r.nev;
    }
    if (bad > r.nev)
        bad = r.nev;
    pubstats.published += r.nev - bad;
    pubstats.errors += bad;
    if (bad && err_logs < 5) {
        err_logs++;
        logmsg("publisher %u: status %d: %.*s", p->idx, status, (int)(bl > 200 ? 200 : bl), b);
    }
    if (p->acked >= p->total && p->rcount == 0) {
        p->state = PUB_DONE;
        if (p->fd >= 0)
            close(p->fd);
        p->fd = -1;
    }
}

/* Parses the answers in p->in. False: the connection was reset. */
static bool parse_responses(struct pub *p)
{
    size_t off = 0;
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
        bool chunked = false, has_cl = false;
        for (char *l = memmem(s, hl, "\r\n", 2); l && l + 2 < s + hl;
             l = memmem(l + 2, (size_t)(s + hl - l - 2), "\r\n", 2)) {
            char *h = l + 2;
            if (strncasecmp(h, "content-length:", 15) == 0) {
                cl = strtoull(h + 15, NULL, 10);
                has_cl = true;
            } else if (strncasecmp(h, "transfer-encoding:", 18) == 0) {
                char *le = memmem(h, (size_t)(s + hl - h), "\r\n", 2);
                if (le && memmem(h, (size_t)(le - h), "chunked", 7))
                    chunked = true;
            }
        }
        const char *bodyp = s + hl;
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
                    /* trailers end with an empty line */
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
            blen = q - hl;
            total = q;
        } else {
            if (!has_cl)
                cl = 0;
            if (hl + cl > n)
                break;
            blen = (size_t)cl;
            total = hl + (size_t)cl;
        }
        on_response(p, status, bodyp, blen);
        off += total;
        if (p->state == PUB_DONE)
            return true;
    }
    if (off) {
        memmove(p->in, p->in + off, p->ilen - off);
        p->ilen -= off;
    }
    return true;
}

static void pub_read(struct pub *p)
{
    if (!reserve(&p->in, &p->icap, p->ilen + 65536)) {
        pub_give_up(p);
        return;
    }
    ssize_t r = read(p->fd, p->in + p->ilen, p->icap - p->ilen);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r > 0) {
        p->ilen += (size_t)r;
        if (!parse_responses(p))
            return;
        if (p->state == PUB_DONE)
            return;
        pub_pump(p, now_us());
        return;
    }
    pub_reset(p, r == 0 ? "closed by the server" : strerror(errno));
}

void pubs_event(uint32_t idx, uint32_t events)
{
    if ((int)idx >= npubs)
        return;
    struct pub *p = &pubs[idx];
    if (p->fd < 0)
        return;
    if (p->state == PUB_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            pub_reset(p, strerror(err));
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLIN)))
            return;
        p->state = PUB_OPEN;
        pub_pump(p, now_us());
        return;
    }
    if (events & EPOLLOUT)
        pub_flush(p);
    if (p->fd >= 0 && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        pub_read(p);
}

void pubs_start(int ep, uint64_t j_begin, uint64_t j_end)
{
    pubs_stop();
    pub_ep = ep;
    npubs = opt.publishers;
    if ((uint64_t)npubs > opt.users)
        npubs = (int)opt.users;
    pubs = calloc((size_t)npubs, sizeof *pubs);
    if (!pubs) {
        logmsg("out of memory");
        exit(1);
    }
    rate_t0 = now_us();
    uint64_t all = j_end - j_begin;
    for (int i = 0; i < npubs; i++) {
        struct pub *p = &pubs[i];
        p->idx = (uint32_t)i;
        p->fd = -1;
        p->j = next_event(j_begin, (uint32_t)i);
        p->j_end = j_end;
        p->reqs = calloc((size_t)opt.pipeline, sizeof *p->reqs);
        if (!p->reqs) {
            logmsg("out of memory");
            exit(1);
        }
    }
    /* events per publisher: count each user's events in the range */
    for (uint64_t u = 0; u < opt.users; u++) {
        uint64_t k = events_for_user(u, j_end) - events_for_user(u, j_begin);
        pubs[pub_of(u)].total += k;
    }
    for (int i = 0; i < npubs; i++) {
        struct pub *p = &pubs[i];
        if (opt.rate > 0 && all > 0)
            p->rate = opt.rate * (double)p->total / (double)all;
        if (p->total == 0) {
            p->state = PUB_DONE;
            continue;
        }
        pub_connect(p);
        if (p->fd < 0)
            pub_give_up(p);
    }
}

void pubs_tick(void)
{
    if (!pubs || opt.rate <= 0)
        return;
    int64_t now = now_us();
    for (int i = 0; i < npubs; i++)
        pub_pump(&pubs[i], now);
}

bool pubs_done(void)
{
    for (int i = 0; i < npubs; i++)
        if (pubs[i].state != PUB_DONE)
            return false;
    return true;
}

int pubs_timeout_ms(void)
{
    if (!pubs || opt.rate <= 0 || pubs_done())
        return 100;
    return 1;
}

void pubs_stop(void)
{
    for (int i = 0; i < npubs; i++) {
        struct pub *p = &pubs[i];
        if (p->fd >= 0)
            close(p->fd);
        free(p->pend);
        free(p->in);
        free(p->reqs);
    }
    free(pubs);
    pubs = NULL;
    npubs = 0;
    free(body);
    body = NULL;
    body_cap = 0;
}
