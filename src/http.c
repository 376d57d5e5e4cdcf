/* http.c -- HTTP/1.1 request reader: drives one http-parser, copies each request
 * into the reader's own buffer and enforces the head and body limits.
 * Owns only that buffer. Never touches a socket, keeps no globals (so never
 * calls http_parser_set_max_header_size) and never consumes bytes past the end
 * of the request it returns. */
#include "http.h"

#include "aw.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HTTP_DEFAULT_MAX_HEAD 16384
#define HTTP_DEFAULT_MAX_BODY 1048576
#define HTTP_BUF_MIN          1024
#define HTTP_NO_OFF           SIZE_MAX /* offset of a string not seen yet */

/* r->_last_cb: the kind of string the last data callback appended to. Data
 * callbacks of one kind may come split; consecutive ones extend one string. */
enum { CB_NONE = 0, CB_FIELD = 1, CB_VALUE = 2, CB_URL = 3, CB_BODY = 4 };

/* Records why a callback stops the parser; http_feed reports it. */
static int fail(http_reader_t *r, int err)
{
    r->_error = err;
    return -1;
}

/* Makes room for n more bytes plus a NUL after _len. */
static int buf_reserve(http_reader_t *r, size_t n)
{
    size_t cap = r->_cap ? r->_cap : HTTP_BUF_MIN;
    char *buf;

    if (r->_cap - r->_len > n)
        return 0;
    while (cap - r->_len <= n) {
        if (cap > SIZE_MAX / 2)
            return AW_ENOMEM;
        cap *= 2;
    }
    buf = realloc(r->_buf, cap);
    if (!buf)
        return AW_ENOMEM;
    r->_buf = buf;
    r->_cap = cap;
    return 0;
}

/* Appends at[0..n) to the open string and keeps it NUL-terminated; the NUL
 * sits at _buf[_len] and is kept by str_close. */
static int str_extend(http_reader_t *r, const char *at, size_t n, size_t *slen)
{
    if (buf_reserve(r, n) != 0)
        return fail(r, AW_ENOMEM);
    if (n > 0)
        memcpy(r->_buf + r->_len, at, n);
    r->_len += n;
    r->_buf[r->_len] = '\0';
    *slen += n;
    return 0;
}

/* Same, for strings of the head: the buffer never holds more than the head
 * bytes consumed so far (each NUL stands for a separator), so this bounds
 * memory by max_head early; http_feed makes the exact check. */
static int head_extend(http_reader_t *r, const char *at, size_t n, size_t *slen)
{
    if (n > r->max_head || r->_len > r->max_head - n)
        return fail(r, AW_EHEADERS);
    return str_extend(r, at, n, slen);
}

/* Ends the open string, keeping its NUL. */
static void str_close(http_reader_t *r)
{
    if (r->_last_cb != CB_NONE)
        r->_len++;
    r->_last_cb = CB_NONE;
}

/* Opens a string of this kind at the end of the buffer and writes its NUL. */
static int str_open(http_reader_t *r, int kind, size_t *off, size_t *slen)
{
    str_close(r);
    r->_last_cb = kind;
    *off = r->_len;
    *slen = 0;
    return str_extend(r, NULL, 0, slen);
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    http_reader_t *r = p->data;

    if (r->_last_cb != CB_URL && str_open(r, CB_URL, &r->_url_off, &r->_url_len) != 0)
        return -1;
    return head_extend(r, at, n, &r->_url_len);
}

/* RFC 9110 tchar. http-parser as packaged is built non-strict and lets a space
 * into names ("Content-Length : 5"), which RFC 9112 says to refuse. */
static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    http_reader_t *r = p->data;
    size_t i;

    if (r->_body_started)
        return 0; /* a chunked trailer: not kept, http-parser bounds its size */
    for (i = 0; i < n; i++)
        if (!is_tchar(at[i]))
            return fail(r, AW_EPROTO);
    if (r->_last_cb != CB_FIELD) {
        if (r->_nheaders == HTTP_MAX_HEADERS)
            return fail(r, AW_EHEADERS);
        i = r->_nheaders++;
        r->_hval_off[i] = HTTP_NO_OFF;
        r->_hval_len[i] = 0;
        if (str_open(r, CB_FIELD, &r->_hname_off[i], &r->_hname_len[i]) != 0)
            return -1;
    }
    return head_extend(r, at, n, &r->_hname_len[r->_nheaders - 1]);
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    http_reader_t *r = p->data;
    size_t i = r->_nheaders - 1; /* a value always follows a field */

    if (r->_body_started)
        return 0;
    if (r->_nheaders == 0)
        return fail(r, AW_EPROTO);
    if (r->_last_cb != CB_VALUE && str_open(r, CB_VALUE, &r->_hval_off[i], &r->_hval_len[i]) != 0)
        return -1;
    return head_extend(r, at, n, &r->_hval_len[i]);
}

/* Pauses so that http_feed learns exactly where the head ends. */
static int on_headers_complete(http_parser *p)
{
    http_reader_t *r = p->data;

    str_close(r);
    r->_body_started = true;
    r->_req.keep_alive = http_should_keep_alive(p) != 0;
    http_parser_pause(p, 1);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    http_reader_t *r = p->data;

    if (r->_body_len > r->max_body || n > r->max_body - r->_body_len)
        return fail(r, AW_ETOOBIG); /* chunked growth; Content-Length was checked */
    if (r->_last_cb != CB_BODY && str_open(r, CB_BODY, &r->_body_off, &r->_body_len) != 0)
        return -1;
    return str_extend(r, at, n, &r->_body_len);
}

/* Pauses so that http_feed returns one request at a time. */
static int on_message_complete(http_parser *p)
{
    http_reader_t *r = p->data;

    str_close(r);
    r->_complete = true;
    http_parser_pause(p, 1);
    return 0;
}

/* Forgets the previous request; the parser already waits for the next one. */
static void reader_reset(http_reader_t *r)
{
    r->_len = 0;
    r->_head_bytes = 0;
    r->_url_off = HTTP_NO_OFF;
    r->_url_len = 0;
    r->_nheaders = 0;
    r->_last_cb = CB_NONE;
    r->_body_off = HTTP_NO_OFF;
    r->_body_len = 0;
    r->_body_started = false;
    r->_complete = false;
    r->_head_done = false;
    r->_scan_prev = 0;
    r->_scan_line = 0;
    r->_scan_lines = 0;
    r->_scan_spaces = 0;
    r->_scan_done = false;
}

/* Checks the head's line structure over data[0..len) up to the empty line
 * that ends it: every line ends in CRLF and no CR stands alone (http-parser,
 * as packaged, accepts both: where it saw the head end, a proxy might not),
 * no header line starts with a space
 * or tab (obs-fold, RFC 9112 section 5.2), and the request line has its
 * three parts (an HTTP/0.9 line has no version, so no head ever follows).
 * Empty lines before the request line are allowed (RFC 9112 section 2.2).
 * 0 or AW_EPROTO. */
static int scan_head(http_reader_t *r, const char *data, size_t len)
{
    for (size_t i = 0; i < len && !r->_scan_done; i++) {
        char c = data[i];
        if (c == '\n') {
            if (r->_scan_prev != '\r')
                return AW_EPROTO;
            if (r->_scan_line == 0 && r->_scan_lines > 0)
                r->_scan_done = true;
            else if (r->_scan_line > 0 && r->_scan_lines++ == 0 && r->_scan_spaces != 2)
                return AW_EPROTO; /* not method SP target SP version: HTTP/0.9 or worse */
            r->_scan_line = 0;
        } else if (r->_scan_prev == '\r') {
            return AW_EPROTO; /* a bare CR (RFC 9112 section 2.2) */
        } else if (c != '\r') {
            if (r->_scan_line == 0 && r->_scan_lines > 0 && (c == ' ' || c == '\t'))
                return AW_EPROTO;
            if (r->_scan_lines == 0 && c == ' ')
                r->_scan_spaces++;
            r->_scan_line++;
        }
        r->_scan_prev = c;
    }
    return 0;
}

void http_reader_init(http_reader_t *r, size_t max_head, size_t max_body)
{
    memset(r, 0, sizeof(*r));
    r->max_head = max_head ? max_head : HTTP_DEFAULT_MAX_HEAD;
    r->max_body = max_body ? max_body : HTTP_DEFAULT_MAX_BODY;
    http_parser_init(&r->_parser, HTTP_REQUEST);
    http_parser_settings_init(&r->_settings);
    r->_settings.on_url = on_url;
    r->_settings.on_header_field = on_header_field;
    r->_settings.on_header_value = on_header_value;
    r->_settings.on_headers_complete = on_headers_complete;
    r->_settings.on_body = on_body;
    r->_settings.on_message_complete = on_message_complete;
    reader_reset(r);
}

void http_reader_dispose(http_reader_t *r)
{
    free(r->_buf);
    r->_buf = NULL;
    r->_len = r->_cap = 0;
}

/* Limits known once the head is read: head_len counts the request line, the
 * headers and the empty line. */
static int check_head(const http_reader_t *r, size_t head_len)
{
    const http_parser *p = &r->_parser;

    if (head_len > r->max_head)
        return AW_EHEADERS;
    if (!(p->flags & F_CHUNKED) && (p->flags & F_CONTENTLENGTH) && p->content_length > r->max_body)
        return AW_ETOOBIG;
    return 0;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static bool ascii_ieq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ascii_lower(a[i]) != ascii_lower(b[i]))
            return false;
    return true;
}

/* Cuts the URL in place into path and query offsets. Origin-form and "*" are
 * split on '?' (a '#' ends the query); absolute-form goes through
 * http_parser_parse_url; CONNECT's authority-form is kept whole as path. */
static int split_url(http_reader_t *r, size_t *path_off, size_t *query_off)
{
    char *url = r->_buf + r->_url_off;
    size_t empty = r->_url_off + r->_url_len; /* the URL's NUL */
    struct http_parser_url u;
    size_t slash_len;
    char *q;

    *query_off = empty;
    if (url[0] == '/' || strcmp(url, "*") == 0 || r->_parser.method == HTTP_CONNECT) {
        *path_off = r->_url_off;
        if (r->_parser.method == HTTP_CONNECT)
            return 0;
        url[strcspn(url, "#")] = '\0';
        q = strchr(url, '?');
        if (q) {
            *q = '\0';
            *query_off = r->_url_off + (size_t)(q + 1 - url);
        }
        return 0;
    }
    http_parser_url_init(&u);
    if (http_parser_parse_url(url, r->_url_len, 0, &u) != 0)
        return AW_EPROTO;
    if (u.field_set & (1 << UF_QUERY)) {
        url[u.field_data[UF_QUERY].off + u.field_data[UF_QUERY].len] = '\0';
        *query_off = r->_url_off + u.field_data[UF_QUERY].off;
    }
    if (u.field_set & (1 << UF_PATH)) {
        url[u.field_data[UF_PATH].off + u.field_data[UF_PATH].len] = '\0';
        *path_off = r->_url_off + u.field_data[UF_PATH].off;
        return 0;
    }
    /* "http://host" means "/" */
    if (str_open(r, CB_URL, path_off, &slash_len) != 0 || str_extend(r, "/", 1, &slash_len) != 0)
        return r->_error;
    str_close(r);
    return 0;
}

/* Trims each value in place; a header without a value gets its name's NUL. */
static void trim_values(http_reader_t *r)
{
    for (size_t i = 0; i < r->_nheaders; i++) {
        size_t off = r->_hval_off[i], len = r->_hval_len[i];

        if (off == HTTP_NO_OFF) {
            r->_hval_off[i] = r->_hname_off[i] + r->_hname_len[i];
            r->_hval_len[i] = 0;
            continue;
        }
        while (len > 0 && is_ows(r->_buf[off])) {
            off++;
            len--;
        }
        while (len > 0 && is_ows(r->_buf[off + len - 1]))
            len--;
        r->_buf[off + len] = '\0';
        r->_hval_off[i] = off;
        r->_hval_len[i] = len;
    }
}

/* True when any header with this name lists token (Connection may repeat). */
static bool headers_list_has(const http_request_t *q, const char *name, const char *token)
{
    for (size_t i = 0; i < q->nheaders; i++)
        if (ascii_ieq(q->headers[i].name, name, strlen(name) + 1) &&
            http_list_has(q->headers[i].value, token))
            return true;
    return false;
}

/* Completes the head once it is read: the method's name, the URL cut into
 * path and query, trimmed values. Everything that appends to _buf (and so
 * may move it) happens here or before, and only offsets are kept. */
static int finish_head(http_reader_t *r)
{
    const http_parser *p = &r->_parser;
    const char *method = http_method_str((enum http_method)p->method);
    size_t method_len = 0;
    int err;

    if (r->_head_done)
        return 0;
    if (r->_url_off == HTTP_NO_OFF || p->http_major == 0)
        return AW_EPROTO; /* HTTP/0.9 has no headers: nothing to check it by */
    if (str_open(r, CB_URL, &r->_method_off, &method_len) != 0 ||
        str_extend(r, method, strlen(method), &method_len) != 0)
        return r->_error;
    str_close(r);
    err = split_url(r, &r->_path_off, &r->_query_off);
    if (err)
        return err;
    trim_values(r);
    r->_head_done = true;
    return 0;
}

/* Points r->_req at the stored strings (the body too when whole). */
static void build_request(http_reader_t *r, http_request_t **out)
{
    http_request_t *q = &r->_req;
    const http_parser *p = &r->_parser;

    q->method = (enum http_method)p->method;
    q->method_name = r->_buf + r->_method_off;
    q->path = r->_buf + r->_path_off;
    q->query = r->_buf + r->_query_off;
    q->nheaders = r->_nheaders;
    for (size_t i = 0; i < r->_nheaders; i++) {
        q->headers[i].name = r->_buf + r->_hname_off[i];
        q->headers[i].value = r->_buf + r->_hval_off[i];
    }
    q->body = r->_body_off == HTTP_NO_OFF ? r->_buf + r->_len : r->_buf + r->_body_off;
    q->body_len = r->_body_len;
    q->http_major = p->http_major;
    q->http_minor = p->http_minor;
    q->chunked = (p->flags & F_CHUNKED) != 0;
    q->content_length =
        !q->chunked && (p->flags & F_CONTENTLENGTH) && p->content_length != ULLONG_MAX
            ? p->content_length
            : 0;
    q->upgrade = p->upgrade && q->method != HTTP_CONNECT && http_header(q, "Upgrade") &&
                 headers_list_has(q, "Connection", "upgrade");
    if (p->upgrade && !q->upgrade)
        q->keep_alive = false; /* http-parser stopped: the rest is not HTTP */
    *out = q;
}

/* The whole request: its body string, then the pointers. */
static int finish_request(http_reader_t *r, http_request_t **out)
{
    int err = finish_head(r);
    if (err)
        return err;
    if (r->_body_off == HTTP_NO_OFF && str_open(r, CB_BODY, &r->_body_off, &r->_body_len) != 0)
        return r->_error;
    str_close(r);
    build_request(r, out);
    return 0;
}

/* Maps why http_parser_execute stopped without a pause. */
static int parser_error(const http_reader_t *r)
{
    if (r->_error)
        return r->_error;
    if (HTTP_PARSER_ERRNO(&r->_parser) == HPE_HEADER_OVERFLOW)
        return AW_EHEADERS; /* http-parser's own 80 KiB cap, above max_head */
    return AW_EPROTO;
}

/* The parser pauses twice per request: at the end of the head (to check the
 * limits against its exact length) and at the end of the message. */
int http_feed(http_reader_t *r, const char *data, size_t len, size_t *consumed,
              http_request_t **out)
{
    size_t off = 0, n;

    *consumed = 0;
    *out = NULL;
    if (r->_error)
        return r->_error;
    if (len == 0)
        return AW_EAGAIN; /* http-parser would take len 0 as end of stream */
    if (r->_complete) {
        if (r->_parser.upgrade)
            return AW_EINVAL; /* after an upgrade the stream is not HTTP */
        if (!r->_req.keep_alive)
            return r->_error = AW_EPROTO; /* bytes after "Connection: close" */
        reader_reset(r);
    }
    r->_parser.data = r; /* the reader may have been moved since init */
    if (!r->_scan_done && (r->_error = scan_head(r, data, len)) != 0)
        return r->_error;
    while (off < len) {
        n = http_parser_execute(&r->_parser, &r->_settings, data + off, len - off);
        off += n;
        *consumed = off;
        if (HTTP_PARSER_ERRNO(&r->_parser) != HPE_PAUSED) {
            if (HTTP_PARSER_ERRNO(&r->_parser) != HPE_OK || r->_error || n == 0)
                return r->_error = parser_error(r);
            continue;
        }
        http_parser_pause(&r->_parser, 0);
        if (r->_complete) {
            r->_error = finish_request(r, out);
            return r->_error;
        }
        /* Paused at the head's last LF, which is not consumed yet. */
        r->_error = check_head(r, r->_head_bytes + off + 1);
        if (!r->_error)
            r->_error = finish_head(r);
        if (r->_error)
            return r->_error;
        const http_parser *p = &r->_parser;
        if (r->stop_at_head &&
            ((p->flags & F_CHUNKED) || ((p->flags & F_CONTENTLENGTH) && p->content_length > 0))) {
            build_request(r, out);
            return HTTP_HEAD;
        }
    }
    if (!r->_body_started) {
        r->_head_bytes += off;
        if (r->_head_bytes > r->max_head)
            return r->_error = AW_EHEADERS;
    }
    return AW_EAGAIN;
}

const char *http_header(const http_request_t *req, const char *name)
{
    size_t n = strlen(name) + 1; /* compares the NULs too */

    for (size_t i = 0; i < req->nheaders; i++)
        if (ascii_ieq(req->headers[i].name, name, n))
            return req->headers[i].value;
    return NULL;
}

bool http_list_has(const char *value, const char *token)
{
    size_t tlen = token ? strlen(token) : 0;
    const char *item = value, *end, *a, *b;

    if (!value || tlen == 0)
        return false;
    for (;;) {
        end = item + strcspn(item, ",");
        a = item;
        b = end;
        while (a < b && is_ows(*a))
            a++;
        while (b > a && is_ows(b[-1]))
            b--;
        if ((size_t)(b - a) == tlen && ascii_ieq(a, token, tlen))
            return true;
        if (*end == '\0')
            return false;
        item = end + 1;
    }
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = ascii_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes the character at *s (< end) and advances past it. Returns the byte,
 * or -1 for a bad escape or a NUL (escaped or not): callers hand out C strings,
 * so "%00" would silently cut them. */
static int decode_char(const char **s, const char *end, bool plus_is_space)
{
    const char *p = *s;
    int hi, lo;

    if (*p == '%') {
        if (end - p < 3 || (hi = hex_value(p[1])) < 0 || (lo = hex_value(p[2])) < 0)
            return -1;
        *s = p + 3;
        return (hi << 4 | lo) ? (hi << 4 | lo) : -1;
    }
    *s = p + 1;
    if (*p == '\0')
        return -1;
    return plus_is_space && *p == '+' ? ' ' : (unsigned char)*p;
}

/* True when the decoded key s[0..end) equals name. */
static bool key_matches(const char *s, const char *end, const char *name)
{
    while (s < end) {
        int c = decode_char(&s, end, true);

        if (c < 0 || (unsigned char)*name != c)
            return false;
        name++;
    }
    return *name == '\0';
}

static int decode_value(const char *s, const char *end, char *out, size_t outlen)
{
    size_t n = 0;

    while (s < end) {
        int c = decode_char(&s, end, true);

        if (c < 0 || n + 1 >= outlen) {
            out[0] = '\0';
            return c < 0 ? AW_EMALFORMED : AW_ETOOBIG;
        }
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return 0;
}

/* The first pair whose decoded name matches wins; "%00" is AW_EMALFORMED. */
int http_query_get(const char *query, const char *name, char *out, size_t outlen)
{
    const char *pair = query ? query : "", *end, *eq, *key_end;

    if (!name || !out)
        return AW_EINVAL;
    if (outlen == 0)
        return AW_ETOOBIG;
    out[0] = '\0';
    while (*pair) {
        end = pair + strcspn(pair, "&");
        eq = memchr(pair, '=', (size_t)(end - pair));
        key_end = eq ? eq : end;
        if (key_end > pair && key_matches(pair, key_end, name))
            return decode_value(eq ? eq + 1 : end, end, out, outlen);
        pair = *end ? end + 1 : end;
    }
    return AW_ENOTFOUND;
}

/* out may be in: decoding never writes ahead of reading. "%00" and NUL bytes
 * give AW_EMALFORMED, so the result is also a safe C string. */
int http_path_decode(char *out, const char *in, size_t n)
{
    const char *s = in, *end = in + n;
    size_t o = 0;

    if (n > INT_MAX)
        return AW_EINVAL;
    while (s < end) {
        int c = decode_char(&s, end, false);

        if (c < 0)
            return AW_EMALFORMED;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (int)o;
}

const char *http_status_text(int status)
{
    switch (status) {
#define HTTP_STATUS_TEXT(num, name, string)                                                        \
    case num:                                                                                      \
        return #string;
        HTTP_STATUS_MAP(HTTP_STATUS_TEXT)
#undef HTTP_STATUS_TEXT
    }
    return "Unknown";
}
