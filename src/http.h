/* http.h -- HTTP/1.1 request parsing on http-parser, into a request struct.
 *
 * Pure: bytes in, one request out; no sockets, no globals. The caller feeds
 * bytes as they arrive; http_feed stops at the end of each request so that
 * pipelined requests are read one at a time. Limits are enforced while parsing:
 * a head larger than max_head or with more than HTTP_MAX_HEADERS headers gives
 * AW_EHEADERS (answer 431), a body larger than max_body gives AW_ETOOBIG
 * (answer 413), anything http-parser refuses gives AW_EPROTO (answer 400), and
 * so do what a proxy in front could read differently: header lines folded
 * (obs-fold), lines ending in a bare LF, and HTTP/0.9 request lines. */
#ifndef AW_HTTP_H
#define AW_HTTP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>

#define HTTP_MAX_HEADERS 64
#define HTTP_HEAD        1 /* http_feed: a head whose body follows (stop_at_head) */

typedef struct http_header {
    char *name;  /* NUL-terminated, as received (compare case-insensitively) */
    char *value; /* NUL-terminated, surrounding whitespace trimmed */
} http_header_t;

typedef struct http_request {
    /* read-only once http_feed returned 0; valid until the next http_feed or
     * http_reader_dispose */
    enum http_method method;
    char *method_name; /* "GET", ... */
    char *path;        /* decoded-free raw path, without query: "/ws" */
    char *query;       /* raw query without '?', "" when none */
    http_header_t headers[HTTP_MAX_HEADERS];
    size_t nheaders;
    char *body; /* NUL-terminated (extra byte not counted in body_len) */
    size_t body_len;
    bool chunked;            /* the body comes in chunks (its length is unknown) */
    uint64_t content_length; /* announced body length, 0 when none or chunked */
    bool upgrade;            /* Connection: upgrade with an Upgrade header */
    bool keep_alive;         /* the connection may carry another request */
    unsigned short http_major, http_minor;
} http_request_t;

typedef struct http_reader {
    /* public, set before use */
    size_t max_head;   /* bytes of request line and headers (default 16384) */
    size_t max_body;   /* bytes of body (default 1 MiB) */
    bool stop_at_head; /* return HTTP_HEAD before a body is read (see http_feed) */
    /* private */
    http_parser _parser;
    http_parser_settings _settings;
    char *_buf; /* storage of the request being read: strings point here */
    size_t _len, _cap;
    size_t _head_bytes;
    size_t _url_off, _url_len;
    size_t _hname_off[HTTP_MAX_HEADERS], _hname_len[HTTP_MAX_HEADERS];
    size_t _hval_off[HTTP_MAX_HEADERS], _hval_len[HTTP_MAX_HEADERS];
    size_t _nheaders;
    int _last_cb; /* 0 none, 1 field, 2 value: folds split header callbacks */
    size_t _body_off, _body_len;
    size_t _path_off, _query_off, _method_off; /* set when the head is complete */
    bool _head_done;
    /* the head's line endings, checked before the parser sees them */
    char _scan_prev;
    size_t _scan_line; /* bytes of the current line, CR excluded */
    size_t _scan_lines;
    size_t _scan_spaces; /* in the request line */
    bool _scan_done;
    bool _body_started;
    bool _complete;
    int _error;
    http_request_t _req;
} http_reader_t;

/* Initialises a reader with the given limits (0 = default). */
void http_reader_init(http_reader_t *r, size_t max_head, size_t max_body);
void http_reader_dispose(http_reader_t *r);

/* Feeds data[0..len). *consumed is how many bytes were used.
 *  0           a whole request: *out points into the reader (valid until the
 *              next http_feed); the bytes after *consumed belong to the next
 *              request. After an upgrade request, the rest is not HTTP.
 *  HTTP_HEAD   only with stop_at_head: the head of a request with a body
 *              (Content-Length > 0 or chunked) is complete and no body byte
 *              was kept; *out has everything but the body. Feed the rest to
 *              get the whole request (or drop the reader to refuse it).
 *  AW_EAGAIN   need more bytes (all of data was consumed)
 *  AW_EPROTO / AW_EHEADERS / AW_ETOOBIG   see above; the reader is spent.
 *  AW_ENOMEM */
int http_feed(http_reader_t *r, const char *data, size_t len, size_t *consumed,
              http_request_t **out);

/* Value of the first header with this name (case-insensitive), or NULL. */
const char *http_header(const http_request_t *req, const char *name);

/* True when a comma-separated header value contains token (case-insensitive,
 * whitespace around list items ignored). */
bool http_list_has(const char *value, const char *token);

/* Finds name in a raw query string and writes its percent-decoded value
 * ('+' is a space) to out with a NUL. 0, AW_ENOTFOUND, AW_ETOOBIG (outlen too
 * small) or AW_EMALFORMED (bad percent escape). */
int http_query_get(const char *query, const char *name, char *out, size_t outlen);

/* Percent-decodes in[0..n) in place-compatible fashion into out (size >= n+1).
 * Returns the decoded length or AW_EMALFORMED. Does not treat '+' specially. */
int http_path_decode(char *out, const char *in, size_t n);

/* Reason phrase for a status code ("Not Found"). */
const char *http_status_text(int status);

#endif
