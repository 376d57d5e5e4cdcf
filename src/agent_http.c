/* agent_http.c -- the http agent backend: one POST of the run request per
 * run to a fixed http:// URL, whose response body is read as NDJSON while it
 * streams (chunked, Content-Length or until close). Owns each run's socket,
 * parser and grace timer. Never resolves names (IP literals and "localhost"
 * only), never speaks TLS, never reuses a connection, and never calls
 * runs_agent_ended before every handle of the run is closed. */
#include "agent.h"

#include <http_parser.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agent_lines.h"
#include "aw.h"
#include "log.h"
#include "runs.h"

#define AGENT_HTTP_READ_SIZE 65536 /* bytes per socket read */
#define AGENT_HTTP_HOST_MAX  300   /* bytes of the Host header value */
#define AGENT_HTTP_HANDLES   2     /* socket, timer */

typedef struct agent_http {
    agent_backend_t base; /* first: agent_backend_t * converts to this */
    uv_loop_t *loop;
    int64_t grace_ms;               /* >= 0 */
    size_t max_line;                /* bytes; 0 = AGENT_LINES_DEFAULT_MAX */
    char *url;                      /* the name */
    char *path;                     /* "/path?query", as in the URL */
    char host[AGENT_HTTP_HOST_MAX]; /* Host header: "127.0.0.1:8080", "[::1]:80" */
    struct sockaddr_storage addr;
    http_parser_settings settings;
    /* One read buffer for every run: libuv calls alloc_cb and read_cb back
     * to back for one stream, so two reads never hold it at once. */
    char readbuf[AGENT_HTTP_READ_SIZE];
} agent_http_t;

typedef struct http_run {
    agent_http_t *be;
    run_t *run; /* NULL once start failed: runs is never told */
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_connect_t connect_req;
    uv_write_t write_req;
    http_parser parser;
    agent_lines_t lines;
    char *out; /* request head and body, until the run ends */
    size_t out_len;
    int open_handles;
    int status;          /* HTTP status of the final response, 0 before its head */
    bool complete;       /* the whole response was read */
    bool closing;        /* handles are being closed: no more lines */
    bool stopping;       /* a graceful stop is waiting for the end */
    const char *reason;  /* end reason: static text or reason_buf; NULL = clean */
    char reason_buf[48]; /* "agent answered HTTP 503" */
} http_run_t;

static const char *http_run_id(const http_run_t *st)
{
    return st->run ? st->run->id : "-";
}

/* Last handle closed: free the run's state, then tell runs (once). */
static void http_run_end(http_run_t *st)
{
    run_t *run = st->run;
    char buf[sizeof st->reason_buf];
    const char *reason = NULL;

    if (st->reason) {
        snprintf(buf, sizeof buf, "%s", st->reason); /* st->reason may live in st */
        reason = buf;
    }
    agent_lines_dispose(&st->lines);
    free(st->out);
    free(st);
    if (!run)
        return;
    run->agent = NULL;
    log_kv(LOG_DEBUG, "agent ended", "run", run->id, "reason", reason, NULL);
    runs_agent_ended(run, reason);
}

static void http_on_close(uv_handle_t *h)
{
    http_run_t *st = h->data;

    if (--st->open_handles == 0)
        http_run_end(st);
}

/* Ends the run: closes the socket (aborting whatever is pending) and the
 * timer. The first reason given wins; NULL means a clean end. */
static void http_close_run(http_run_t *st, const char *reason)
{
    if (st->closing)
        return;
    st->closing = true;
    if (!st->reason)
        st->reason = reason;
    uv_close((uv_handle_t *)&st->tcp, http_on_close);
    uv_close((uv_handle_t *)&st->timer, http_on_close);
}

static const char *http_error_text(int status)
{
    switch (status) {
    case UV_ECONNREFUSED:
        return "connection refused";
    case UV_ECONNRESET:
    case UV_EPIPE:
        return "connection reset";
    case UV_ETIMEDOUT:
        return "connection timed out";
    case UV_ENETUNREACH:
    case UV_EHOSTUNREACH:
        return "agent unreachable";
    default:
        return "connection failed";
    }
}

static void http_on_line(void *user, const char *line, size_t len)
{
    http_run_t *st = user;

    if (len > 0 && !st->closing)
        runs_agent_line(st->run, line, len);
}

static void http_on_too_long(void *user, size_t seen)
{
    http_run_t *st = user;

    log_kv(LOG_WARN | LOG_LIMITED, "agent line too long, dropped", "run", http_run_id(st), "#bytes",
           (long long)seen, "#max", (long long)st->lines.max_line_bytes, NULL);
}

/* An interim answer (100 Continue, 102, 103) comes before the real one. */
static bool http_is_interim(int status)
{
    return status >= 100 && status < 200 && status != 101;
}

static int http_on_headers_complete(http_parser *p)
{
    http_run_t *st = p->data;
    int status = (int)p->status_code;

    if (http_is_interim(status))
        return 0;
    st->status = status;
    if (status >= 200 && status < 300)
        return 0;
    snprintf(st->reason_buf, sizeof st->reason_buf, "agent answered HTTP %d", status);
    st->reason = st->reason_buf;
    return -1; /* stops the parser: the body is not events */
}

static int http_on_body(http_parser *p, const char *at, size_t len)
{
    http_run_t *st = p->data;

    if (st->closing)
        return -1; /* stopped from a line callback: read no further */
    if (agent_lines_feed(&st->lines, at, len) != 0)
        log_kv(LOG_WARN | LOG_LIMITED, "agent line dropped", "run", http_run_id(st), "error",
               aw_strerror(AW_ENOMEM), NULL);
    return 0;
}

static int http_on_message_complete(http_parser *p)
{
    http_run_t *st = p->data;

    if (st->status == 0)
        return 0; /* end of an interim answer: the real one follows */
    st->complete = true;
    if (!st->closing)
        agent_lines_finish(&st->lines);
    http_parser_pause(p, 1); /* whatever follows the response is ignored */
    return 0;
}

/* Parses data[0..n); n == 0 tells the parser the connection ended. */
static void http_parse(http_run_t *st, const char *data, size_t n)
{
    size_t used = http_parser_execute(&st->parser, &st->be->settings, data, n);

    if (st->closing)
        return;
    if (st->complete)
        http_close_run(st, NULL);
    else if (st->reason)
        http_close_run(st, st->reason);
    else if (n == 0)
        http_close_run(st, st->status ? "connection closed mid-response"
                                      : "connection closed before a response");
    else if (HTTP_PARSER_ERRNO(&st->parser) != HPE_OK || used != n)
        http_close_run(st, "malformed response");
}

static void http_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    http_run_t *st = h->data;

    (void)suggested;
    *buf = uv_buf_init(st->be->readbuf, sizeof st->be->readbuf);
}

static void http_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    http_run_t *st = s->data;

    if (nread > 0)
        http_parse(st, buf->base, (size_t)nread);
    else if (nread == UV_EOF)
        http_parse(st, NULL, 0);
    else if (nread < 0)
        http_close_run(st, http_error_text((int)nread));
}

static void http_on_write(uv_write_t *req, int status)
{
    http_run_t *st = req->data;

    /* The agent may answer (say 413) and close before reading the whole
     * request: keep reading, the answer decides unless the read fails too. */
    if (status < 0 && status != UV_ECANCELED)
        log_kv(LOG_INFO, "agent request write failed", "run", http_run_id(st), "error",
               uv_strerror(status), NULL);
}

static void http_on_connect(uv_connect_t *req, int status)
{
    http_run_t *st = req->data;
    uv_buf_t b = uv_buf_init(st->out, (unsigned int)st->out_len);
    int rc;

    if (st->closing)
        return; /* aborted while connecting (status is UV_ECANCELED) */
    if (status < 0) {
        http_close_run(st, http_error_text(status));
        return;
    }
    st->write_req.data = st;
    rc = uv_read_start((uv_stream_t *)&st->tcp, http_on_alloc, http_on_read);
    if (rc == 0)
        rc = uv_write(&st->write_req, (uv_stream_t *)&st->tcp, &b, 1, http_on_write);
    if (rc != 0)
        http_close_run(st, http_error_text(rc));
}

static void http_on_timer(uv_timer_t *t)
{
    http_close_run(t->data, "request aborted after the grace period");
}

/* The request: head and body in one buffer, for one write. */
static int http_build_request(http_run_t *st, const char *body, size_t len)
{
    const agent_http_t *be = st->be;
    const char *fmt = "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                      "Accept: application/x-ndjson\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n";
    int head = snprintf(NULL, 0, fmt, be->path, be->host, len);

    if (head < 0 || (size_t)head > SIZE_MAX - len - 1)
        return AW_ENOMEM;
    st->out = malloc((size_t)head + len + 1);
    if (!st->out)
        return AW_ENOMEM;
    snprintf(st->out, (size_t)head + 1, fmt, be->path, be->host, len);
    memcpy(st->out + head, body, len);
    st->out_len = (size_t)head + len;
    return 0;
}

static http_run_t *http_run_new(agent_http_t *be, run_t *run, const char *request, size_t len)
{
    http_run_t *st = calloc(1, sizeof *st);

    if (!st)
        return NULL;
    st->be = be;
    st->run = run;
    if (http_build_request(st, request, len) != 0) {
        free(st);
        return NULL;
    }
    agent_lines_init(&st->lines, be->max_line, http_on_line, http_on_too_long, st);
    http_parser_init(&st->parser, HTTP_RESPONSE);
    st->parser.data = st;
    return st;
}

static int http_start(agent_backend_t *b, run_t *run, const char *request, size_t len)
{
    agent_http_t *be = (agent_http_t *)b;
    http_run_t *st = http_run_new(be, run, request, len);
    int rc;

    if (!st)
        return AW_ENOMEM;
    uv_tcp_init(be->loop, &st->tcp); /* no socket yet: cannot fail */
    uv_timer_init(be->loop, &st->timer);
    st->tcp.data = st->timer.data = st->connect_req.data = st;
    st->open_handles = AGENT_HTTP_HANDLES;
    rc = uv_tcp_connect(&st->connect_req, &st->tcp, (const struct sockaddr *)&be->addr,
                        http_on_connect);
    if (rc != 0) {
        log_kv(LOG_ERROR, "agent connect failed", "run", run->id, "error", uv_strerror(rc), NULL);
        st->run = NULL; /* the state frees itself once closed, silently */
        http_close_run(st, NULL);
        return rc == UV_ENOMEM ? AW_ENOMEM : AW_EIO;
    }
    run->agent = st;
    return 0;
}

static void http_stop(agent_backend_t *b, run_t *run, bool graceful)
{
    http_run_t *st = run->agent;

    (void)b;
    if (!st || st->closing)
        return;
    if (!graceful) {
        http_close_run(st, "request aborted");
    } else if (!st->stopping) {
        st->stopping = true;
        uv_timer_start(&st->timer, http_on_timer, (uint64_t)st->be->grace_ms, 0);
    }
}

static void http_dispose(agent_backend_t *b)
{
    agent_http_t *be = (agent_http_t *)b;

    if (!be)
        return;
    free(be->url);
    free(be->path);
    free(be);
}

/* Field f of a parsed URL as a NUL-terminated copy in out (size outlen).
 * false when absent or too long. */
static bool http_url_field(const char *url, const struct http_parser_url *u, int f, char *out,
                           size_t outlen)
{
    size_t len = u->field_data[f].len;

    if (!(u->field_set & (1 << f)) || len >= outlen)
        return false;
    memcpy(out, url + u->field_data[f].off, len);
    out[len] = '\0';
    return true;
}

/* The address of host: an IPv4 or IPv6 literal, or "localhost". */
static bool http_resolve_literal(agent_http_t *be, const char *host, int port)
{
    struct sockaddr_in *v4 = (struct sockaddr_in *)&be->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&be->addr;

    if (strcasecmp(host, "localhost") == 0)
        host = "127.0.0.1";
    return uv_ip4_addr(host, port, v4) == 0 || uv_ip6_addr(host, port, v6) == 0;
}

/* "/path?query" of the URL ("/" when it has none). */
static char *http_url_path(const char *url, const struct http_parser_url *u)
{
    bool has_path = u->field_set & (1 << UF_PATH);
    bool has_query = u->field_set & (1 << UF_QUERY);
    size_t len = has_path ? u->field_data[UF_PATH].len : 0;
    size_t qlen = has_query ? (size_t)u->field_data[UF_QUERY].len + 1 : 0;
    char *path = malloc(len + qlen + 2);

    if (!path)
        return NULL;
    if (len > 0)
        memcpy(path, url + u->field_data[UF_PATH].off, len);
    else
        path[len++] = '/';
    if (qlen > 0) /* with its '?' */
        memcpy(path + len, url + u->field_data[UF_QUERY].off - 1, qlen);
    path[len + qlen] = '\0';
    return path;
}

/* Checks the URL and fills the address, Host header and path of be. */
static int http_parse_url(agent_http_t *be, const char *url, char *err, size_t errlen)
{
    struct http_parser_url u;
    char schema[8], host[AGENT_HTTP_HOST_MAX - 10];
    int port;

    http_parser_url_init(&u);
    if (http_parser_parse_url(url, strlen(url), 0, &u) != 0 ||
        !http_url_field(url, &u, UF_SCHEMA, schema, sizeof schema) ||
        !http_url_field(url, &u, UF_HOST, host, sizeof host)) {
        snprintf(err, errlen, "http agent: malformed URL (want http://host:port/path)");
        return AW_EINVAL;
    }
    if (strcasecmp(schema, "http") != 0) {
        snprintf(err, errlen, "http agent: only http:// URLs are supported (no TLS)");
        return AW_EINVAL;
    }
    if (u.field_set & ((1 << UF_USERINFO) | (1 << UF_FRAGMENT))) {
        snprintf(err, errlen, "http agent: the URL may not have user info or a fragment");
        return AW_EINVAL;
    }
    port = (u.field_set & (1 << UF_PORT)) ? u.port : 80;
    if (port == 0 || !http_resolve_literal(be, host, port)) {
        snprintf(err, errlen,
                 "http agent: host must be an IP address or localhost (no DNS), port 1-65535");
        return AW_EINVAL;
    }
    snprintf(be->host, sizeof be->host, "%s%s%s:%d", strchr(host, ':') ? "[" : "", host,
             strchr(host, ':') ? "]" : "", port);
    be->path = http_url_path(url, &u);
    if (!be->path) {
        snprintf(err, errlen, "http agent: out of memory");
        return AW_ENOMEM;
    }
    return 0;
}

static void http_init_settings(http_parser_settings *s)
{
    http_parser_settings_init(s);
    s->on_headers_complete = http_on_headers_complete;
    s->on_body = http_on_body;
    s->on_message_complete = http_on_message_complete;
}

int agent_http_create(const char *url, const agent_options_t *opts, agent_backend_t **out,
                      char *err, size_t errlen)
{
    agent_http_t *be;
    int rc;

    *out = NULL;
    if (!url || !opts || !opts->loop) {
        snprintf(err, errlen, "http agent: no URL");
        return AW_EINVAL;
    }
    be = calloc(1, sizeof *be);
    if (!be || !(be->url = strdup(url))) {
        free(be);
        snprintf(err, errlen, "http agent: out of memory");
        return AW_ENOMEM;
    }
    rc = http_parse_url(be, url, err, errlen);
    if (rc != 0) {
        http_dispose(&be->base);
        return rc;
    }
    be->loop = opts->loop;
    be->grace_ms = opts->kill_grace_ms > 0 ? opts->kill_grace_ms : 0;
    be->max_line = opts->max_line_bytes;
    http_init_settings(&be->settings);
    be->base.kind = "http";
    be->base.name = be->url;
    be->base.start = http_start;
    be->base.stop = http_stop;
    be->base.dispose = http_dispose;
    *out = &be->base;
    return AW_OK;
}
