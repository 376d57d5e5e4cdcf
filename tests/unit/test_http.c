/* test_http.c -- unit tests of the HTTP/1.1 request reader (http.c): whole,
 * byte-by-byte and split feeds, pipelining, upgrade, limits and the query,
 * list and path helpers. No I/O; a group alarm bounds the run. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "aw.h"
#include "http.h"

#define TEST_TIMEOUT_S 30

static const char WS_HEAD[] = "GET /ws?token=abc HTTP/1.1\r\n"
                              "Host: example.com\r\n"
                              "Upgrade: websocket\r\n"
                              "Connection: keep-alive, Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                              "Sec-WebSocket-Version: 13\r\n"
                              "\r\n";

static const char POST_REQ[] = "POST /api/items?x=1 HTTP/1.1\r\n"
                               "Host: h\r\n"
                               "Content-Type: text/plain\r\n"
                               "Content-Length: 11\r\n"
                               "\r\n"
                               "hello world";

static const char CHUNKED_REQ[] = "POST /up HTTP/1.1\r\n"
                                  "Host: h\r\n"
                                  "Transfer-Encoding: chunked\r\n"
                                  "\r\n"
                                  "4\r\nWiki\r\n"
                                  "5\r\npedia\r\n"
                                  "0\r\n"
                                  "X-Trailer: t\r\n"
                                  "\r\n";

/* Feeds a whole NUL-terminated string at once. */
static int feed_str(http_reader_t *r, const char *s, size_t *consumed, http_request_t **out)
{
    return http_feed(r, s, strlen(s), consumed, out);
}

/* Feeds s in pieces of the given sizes (the last size repeats), like a socket
 * would. Returns the first result that is not AW_EAGAIN and checks that every
 * AW_EAGAIN consumed its whole piece. *total is how many bytes were used. */
static int feed_pieces(http_reader_t *r, const char *s, size_t len, const size_t *sizes,
                       size_t nsizes, size_t *total, http_request_t **out)
{
    size_t off = 0, k = 0, consumed;
    int rc = AW_EAGAIN;

    while (off < len) {
        size_t piece = sizes[k < nsizes ? k : nsizes - 1];
        if (piece > len - off)
            piece = len - off;
        k++;
        rc = http_feed(r, s + off, piece, &consumed, out);
        off += consumed;
        if (rc != AW_EAGAIN)
            break;
        assert_int_equal(consumed, piece);
    }
    *total = off;
    return rc;
}

static void test_simple_get(void **state)
{
    (void)state;
    const char req[] = "GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
    http_reader_t r;
    http_request_t *q = NULL;
    size_t consumed = 0;

    http_reader_init(&r, 0, 0);
    assert_int_equal(r.max_head, 16384);
    assert_int_equal(r.max_body, 1048576);
    assert_int_equal(feed_str(&r, req, &consumed, &q), 0);
    assert_int_equal(consumed, strlen(req));
    assert_non_null(q);
    assert_int_equal(q->method, HTTP_GET);
    assert_string_equal(q->method_name, "GET");
    assert_string_equal(q->path, "/index.html");
    assert_string_equal(q->query, "");
    assert_int_equal(q->http_major, 1);
    assert_int_equal(q->http_minor, 1);
    assert_int_equal(q->nheaders, 2);
    assert_string_equal(q->headers[0].name, "Host");
    assert_string_equal(q->headers[0].value, "example.com");
    assert_string_equal(q->headers[1].name, "Accept");
    assert_string_equal(q->headers[1].value, "*/*");
    assert_int_equal(q->body_len, 0);
    assert_non_null(q->body);
    assert_string_equal(q->body, "");
    assert_true(q->keep_alive);
    assert_false(q->upgrade);
    http_reader_dispose(&r);
}

static void test_empty_feed_needs_more(void **state)
{
    (void)state;
    http_reader_t r;
    http_request_t *q = (http_request_t *)&r; /* must be reset to NULL */
    size_t consumed = 99;

    http_reader_init(&r, 0, 0);
    assert_int_equal(http_feed(&r, "", 0, &consumed, &q), AW_EAGAIN);
    assert_int_equal(consumed, 0);
    assert_null(q);
    assert_int_equal(feed_str(&r, "GET / HT", &consumed, &q), AW_EAGAIN);
    assert_int_equal(consumed, 8);
    assert_int_equal(feed_str(&r, "TP/1.1\r\n\r\n", &consumed, &q), 0);
    assert_string_equal(q->path, "/");
    http_reader_dispose(&r);
}

static void test_header_lookup_case_insensitive(void **state)
{
    (void)state;
    const char req[] = "GET / HTTP/1.1\r\nHost: a\r\nX-Token: one\r\nx-token: two\r\n"
                       "Content-TYPE: text/html\r\n\r\n";
    http_reader_t r;
    http_request_t *q;
    size_t consumed;

    http_reader_init(&r, 0, 0);
    assert_int_equal(feed_str(&r, req, &consumed, &q), 0);
    assert_string_equal(q->headers[1].name, "X-Token"); /* stored as received */
    assert_string_equal(http_header(q, "host"), "a");
    assert_string_equal(http_header(q, "HOST"), "a");
    assert_string_equal(http_header(q, "X-TOKEN"), "one"); /* first wins */
    assert_string_equal(http_header(q, "content-type"), "text/html");
    assert_null(http_header(q, "Content"));        /* no prefix match */
    assert_null(http_header(q, "Content-Type-X")); /* no longer match */
    assert_null(http_header(q, "Cookie"));
    http_reader_dispose(&r);
}

static void test_websocket_upgrade(void **state)
{
    (void)state;
    const char frame[] = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    char buf[512];
    size_t head = strlen(WS_HEAD), consumed;
    http_reader_t r;
    http_request_t *q;

    memcpy(buf, WS_HEAD, head);
    memcpy(buf + head, frame, sizeof(frame) - 1);
    http_reader_init(&r, 0, 0);
    assert_int_equal(http_feed(&r, buf, head + sizeof(frame) - 1, &consumed, &q), 0);
    assert_int_equal(consumed, head); /* the frame is left to the caller */
    assert_true(q->upgrade);
    assert_int_equal(q->method, HTTP_GET);
    assert_string_equal(q->path, "/ws");
    assert_string_equal(q->query, "token=abc");
    assert_string_equal(http_header(q, "sec-websocket-key"), "dGhlIHNhbXBsZSBub25jZQ==");
    assert_string_equal(http_header(q, "Sec-WebSocket-Version"), "13");
    assert_int_equal(q->body_len, 0);
    /* The rest is not HTTP: feeding it again is a caller bug. */
    assert_int_equal(http_feed(&r, buf + head, sizeof(frame) - 1, &consumed, &q), AW_EINVAL);
    assert_int_equal(consumed, 0);
    http_reader_dispose(&r);
}

static void test_upgrade_needs_both_headers(void **state)
{
    (void)state;
    const char no_conn[] = "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\r\n"
                           "GET /2 HTTP/1.1\r\n\r\n";
    const char no_upgrade[] = "GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n";
    const char two_conn[] = "GET / HTTP/1.1\r\nConnection: keep-alive\r\nUpgrade: websocket\r\n"
                            "Connection: Upgrade\r\n\r\n";
    http_reader_t r;
    http_request_t *q;
    size_t consumed;

    /* Without "Connection: upgrade" it stays HTTP: the next request follows. */
    http_reader_init(&r, 0, 0);
    assert_int_equal(feed_str(&r, no_conn, &consumed, &q), 0);
    assert_false(q->upgrade);
    assert_true(q->keep_alive);
    assert_int_equal(feed_str(&r, no_conn + consumed, &consumed, &q), 0);
    assert_string_equal(q->path, "/2");
    http_reader_dispose(&r);

    http_reader_init(&r, 0, 0);
    assert_int_equal(feed_str(&r, no_upgrade, &consumed, &q), 0);
    assert_false(q->upgrade);
    http_reader_dispose(&r);

    /* The token may be in a second Connection header. */
    http_reader_init(&r, 0, 0);
    assert_int_equal(feed_str(&r, two_conn, &consumed, &q), 0);
    assert_true(q->upgrade);
    assert_int_equal(consumed, strlen(two_conn));
    http_reader_dispose(&r);
}

static void test_post_content_length(void **state)
{
    (void)state;
    http_reader_t r;
    http_request_t *q;
    size_t consumed;

    http_reader_init(&r, 0, 0);
    assert_int_equal(feed_str(&r, POST_REQ, &consumed, &q), 0);
    assert_int_equal(consumed, strlen(POST_REQ));
    assert_int_equal(q->method, HTTP_POST);
    assert_string_equal(q->method_name, "POST");
    assert_string_equal(q->path, "/api/items");
    assert_string_equal(q->query, "x=1");
    assert_int_equal(q->body_len, 11);
    assert_memory_equal(q->body, "hello world", 11);
    assert_int_equal(q->body[11], '\0');
    http_reader_dispose(&r);
}

static void test_post_body_in_parts(void **state)
{
    (void)state;
    size_t head = strlen(POST_REQ) - 11, consumed;
    http_reader_t r;
    http_request_t *q;

    /* Head alone needs more; the body comes in two reads. */
    http_reader_init(&r, 0, 0);
    assert_int_equal(http_feed(&r, POST_REQ, head, &consumed, &q), AW_EAGAIN);
    assert_int_equal(consumed, head);
    assert_int_equal(http_feed(&r, POST_REQ + head, 5, &consumed, &q), AW_EAGAIN);
    assert_int_equal(consumed, 5);
    assert_int_equal(http_feed(&r, POST_REQ + head + 5, 6, &consumed, &q), 0);
    assert_int_equal(consumed, 6);
    assert_string_equal(q->body, "hello world");
    http_reader_dispose(&r);
}

static void test_chunked_body(void **state)
{
    (void)state;
    http_reader_t r;
    http_request_t *q;
    size_t consumed;

    http_reader_init(&r, 0, 0);
    assert_int_equal(feed_str(&r, CHUNKED_REQ, &consumed, &q), 0);
    assert_int_equal(consumed, strlen(CHUNKED_REQ));
    assert_int_equal(q->body_len, 9);
    assert_string_equal(q->body, "Wikipedia");
    assert_string_equal(http_header(q, "Transfer-Encoding"), "chunked");
    assert_int_equal(q->nheaders, 2);
    assert_null(http_header(q, "X-Trailer")); /* trailers are not kept */
    assert_true(q->keep_alive);
    http_reader_dispose(&r);
}

/* Reads req whole, then byte by byte, and checks both give one request. */
static void check_byte_by_byte(const char *req, size_t len, size_t expect_consumed)
{
    static const size_t one[] = {1};
    http_reader_t whole, bytes;
    http_request_t *a, *b;
    size_t consumed, total;

    http_reader_init(&whole, 0, 0);
    http_reader_init(&bytes, 0, 0);
    assert_int_equal(http_feed(&whole, req, len, &consumed, &a), 0);
    assert_int_equal(consumed, expect_consumed);
    assert_int_equal(feed_pieces(&bytes, req, len, one, 1, &total, &b), 0);
    assert_int_equal(total, expect_consumed);
    assert_int_equal(a->method, b->method);
    assert_string_equal(a->method_name, b->method_name);
    assert_string_equal(a->path, b->path);
    assert_string_equal(a->query, b->query);
    assert_int_equal(a->nheaders, b->nheaders);
    for (size_t i = 0; i < a->nheaders; i++) {
        assert_string_equal(a->headers[i].name, b->headers[i].name);
        assert_string_equal(a->headers[i].value, b->headers[i].value);
    }
    assert_int_equal(a->body_len, b->body_len);
    assert_memory_equal(a->body, b->body, a->body_len + 1);
    assert_int_equal(a->upgrade, b->upgrade);
    assert_int_equal(a->keep_alive, b->keep_alive);
    http_reader_dispose(&whole);
    http_reader_dispose(&bytes);
}

static void test_byte_by_byte(void **state)
{
    (void)state;
    char ws[512];
    size_t head = strlen(WS_HEAD);

    check_byte_by_byte(POST_REQ, strlen(POST_REQ), strlen(POST_REQ));
    check_byte_by_byte(CHUNKED_REQ, strlen(CHUNKED_REQ), strlen(CHUNKED_REQ));
    /* Upgrade: the byte after the head is refused one byte at a time too. */
    memcpy(ws, WS_HEAD, head);
    memcpy(ws + head, "\x81\x00", 2);
    check_byte_by_byte(ws, head + 2, head);
}

/* Every two-way split of a request, including inside names and values. */
static void test_all_two_way_splits(void **state)
{
    (void)state;
    const char req[] = "POST /p?q=%20 HTTP/1.1\r\nX-Long-Name:  value part \r\n"
                       "Content-Length: 3\r\n\r\nabc";
    size_t len = strlen(req);

    for (size_t cut = 1; cut < len; cut++) {
        size_t sizes[2] = {cut, len - cut}, total;
        http_reader_t r;
        http_request_t *q;

        http_reader_init(&r, 0, 0);
        assert_int_equal(feed_pieces(&r, req, len, sizes, 2, &total, &q), 0);
        assert_int_equal(total, len);
        assert_string_equal(q->path, "/p");
        assert_string_equal(q->query, "q=%20");
        assert_int_equal(q->nheaders, 2);
        assert_string_equal(q->headers[0].name, "X-Long-Name");
        assert_string_equal(q->headers[0].value, "value part");
        assert_string_equal(http_header(q, "content-length"), "3");
        assert_string_equal(q->body, "abc");
        http_reader_dispose(&r);
    }
}

static void test_header_split_mid_name_and_value(void **state)
{
    (void)state;
    const char *parts[] = {"GET / HTTP/1.1\r\nX-Lo", "ng-Na", "me: val", "ue-pa", "rt\r\nHo",
                           "st: h\r\n\r\n"};
    http_reader_t r;
    http_request_t *q = NULL;
    size_t consumed;

    http_reader_init(&r, 0, 0);
    for (size_t i = 0; i < AW_ARRAY_LEN(parts) - 1; i++) {
        assert_int_equal(feed_str(&r, parts[i], &consumed, &q), AW_EAGAIN);
        assert_int_equal(consumed, strlen(parts[i]));
    }
    assert_int_equal(feed_str(&r, parts[AW_ARRAY_LEN(parts) - 1], &consumed, &q), 0);
    assert_int_equal(q->nheaders, 2);
    assert_string_equal(q->headers[0].name, "X-Long-Name");
    assert_string_equal(q->headers[0].value, "value-part");
    assert_string_equal(q->headers[1].name, "Host");
    assert_string_equal(q->headers[1].value, "h");
    http_reader_dispose(&r);
}

static void test_pipelined(void **state)
{
    (void)state;
    const char two[] = "GET /first HTTP/1.1\r\nHost: a\r\n\r\n"
                       "POST /second?k=v HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\nhi"
                       "GET /thi";
    size_t len = strlen(two), first = strlen("GET /first HTTP/1.1\r\nHost: a\r\n\r\n");
    size_t second = strlen("POST /second?k=v HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\nhi");
    size_t consumed;
    http_reader_t r;
    http_request_t *q;

    http_reader_init(&r, 0, 0);
    assert_int_equal(http_feed(&r, two, len, &consumed, &q), 0);
    assert_int_equal(consumed, first);
    assert_string_equal(q->path, "/first");
    assert_string_equal(http_header(q, "host"), "a");
    assert_int_equal(q->body_len, 0);

    assert_int_equal(http_feed(&r, two + first, len - first, &consumed, &q), 0);
    assert_int_equal(consumed, second);
    assert_int_equal(q->method, HTTP_POST);
    assert_string_equal(q->path, "/second");
    assert_string_equal(q->query, "k=v");
    assert_int_equal(q->nheaders, 2);
    assert_string_equal(http_header(q, "host"), "b");
    assert_string_equal(q->body, "hi");

    /* The third is incomplete: all of it is taken, and the rest completes it. */
    assert_int_equal(http_feed(&r, two + first + second, len - first - second, &consumed, &q),
                     AW_EAGAIN);
    assert_int_equal(consumed, len - first - second);
    assert_int_equal(feed_str(&r, "rd HTTP/1.1\r\n\r\n", &consumed, &q), 0);
    assert_string_equal(q->path, "/third");
    assert_int_equal(q->nheaders, 0);
    assert_int_equal(q->body_len, 0);
    http_reader_dispose(&r);
}

static void test_keep_alive(void **state)
{
    (void)state;
    static const struct {
        const char *req;
        bool keep_alive;
    } cases[] = {
        {"GET / HTTP/1.1\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", false},
        {"GET / HTTP/1.0\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
    };

    for (size_t i = 0; i < AW_ARRAY_LEN(cases); i++) {
        http_reader_t r;
        http_request_t *q;
        size_t consumed;

        http_reader_init(&r, 0, 0);
        assert_int_equal(feed_str(&r, cases[i].req, &consumed, &q), 0);
        assert_int_equal(q->keep_alive, cases[i].keep_alive);
        http_reader_dispose(&r);
    }
}

static void test_request_after_close_is_refused(void **state)
{
    (void)state;
    const char req[] = "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
    http_reader_t r;
    http_request_t *q;
    size_t first, consumed;

    http_reader_init(&r, 0, 0);
    assert_int_equal(feed_str(&r, req, &first, &q), 0);
    assert_false(q->keep_alive);
    assert_int_equal(http_feed(&r, "", 0, &consumed, &q), AW_EAGAIN);
    assert_int_equal(feed_str(&r, req + first, &consumed, &q), AW_EPROTO);
    assert_null(q);
    http_reader_dispose(&r);
}

/* A request whose head (up to and including the empty line) is len bytes. */
static void make_head(char *buf, size_t len)
{
    const char start[] = "GET / HTTP/1.1\r\nX: ";
    size_t fill = len - strlen(start) - 4;

    memcpy(buf, start, strlen(start));
    memset(buf + strlen(start), 'a', fill);
    memcpy(buf + strlen(start) + fill, "\r\n\r\n", 5);
}

static void test_head_too_large(void **state)
{
    (void)state;
    static const size_t one[] = {1};
    char buf[256];
    http_reader_t r;
    http_request_t *q;
    size_t consumed, total;

    make_head(buf, 100);
    http_reader_init(&r, 100, 0);
    assert_int_equal(feed_str(&r, buf, &consumed, &q), 0); /* exactly the limit */
    http_reader_dispose(&r);
    http_reader_init(&r, 100, 0);
    assert_int_equal(feed_pieces(&r, buf, 100, one, 1, &total, &q), 0);
    http_reader_dispose(&r);

    make_head(buf, 101);
    http_reader_init(&r, 100, 0);
    assert_int_equal(feed_str(&r, buf, &consumed, &q), AW_EHEADERS);
    assert_null(q);
    /* The reader is spent. */
    assert_int_equal(feed_str(&r, "GET / HTTP/1.1\r\n\r\n", &consumed, &q), AW_EHEADERS);
    http_reader_dispose(&r);
    http_reader_init(&r, 100, 0);
    assert_int_equal(feed_pieces(&r, buf, 101, one, 1, &total, &q), AW_EHEADERS);
    http_reader_dispose(&r);

    /* A head that never ends is refused as soon as it passes the limit. */
    memset(buf, 'a', sizeof(buf));
    memcpy(buf, "GET / HTTP/1.1\r\nX: ", 19);
    http_reader_init(&r, 100, 0);
    assert_int_equal(http_feed(&r, buf, 100, &consumed, &q), AW_EAGAIN);
    assert_int_equal(http_feed(&r, buf + 100, 1, &consumed, &q), AW_EHEADERS);
    http_reader_dispose(&r);
    http_reader_init(&r, 100, 0);
    assert_int_equal(http_feed(&r, buf, sizeof(buf), &consumed, &q), AW_EHEADERS);
    http_reader_dispose(&r);
}

/* Writes a request with n headers "Hi: v" into buf; returns its length. */
static size_t make_headers(char *buf, size_t n)
{
    size_t len = (size_t)sprintf(buf, "GET / HTTP/1.1\r\n");

    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(buf + len, "H%zu: v%zu\r\n", i, i);
    len += (size_t)sprintf(buf + len, "\r\n");
    return len;
}

static void test_too_many_headers(void **state)
{
    (void)state;
    char *buf = malloc(4096);
    size_t len, consumed;
    http_reader_t r;
    http_request_t *q;

    assert_non_null(buf);
    len = make_headers(buf, HTTP_MAX_HEADERS);
    http_reader_init(&r, 0, 0);
    assert_int_equal(http_feed(&r, buf, len, &consumed, &q), 0);
    assert_int_equal(q->nheaders, HTTP_MAX_HEADERS);
    assert_string_equal(http_header(q, "h63"), "v63");
    http_reader_dispose(&r);

    len = make_headers(buf, HTTP_MAX_HEADERS + 1);
    http_reader_init(&r, 0, 0);
    assert_int_equal(http_feed(&r, buf, len, &consumed, &q), AW_EHEADERS);
    assert_null(q);
    http_reader_dispose(&r);
    free(buf);
}

static void test_body_too_large_by_content_length(void **state)
{
    (void)state;
    const char ok[] = "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789";
    const char big_head[] = "POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
    const char huge_head[] = "POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n";
    http_reader_t r;
    http_request_t *q;
    size_t consumed;

    http_reader_init(&r, 0, 10);
    assert_int_equal(feed_str(&r, ok, &consumed, &q), 0);
    assert_int_equal(q->body_len, 10);
    http_reader_dispose(&r);

    /* Decided from the head alone, before any body byte arrives. */
    http_reader_init(&r, 0, 10);
    assert_int_equal(feed_str(&r, big_head, &consumed, &q), AW_ETOOBIG);
    assert_null(q);
    http_reader_dispose(&r);
    http_reader_init(&r, 0, 0);
    assert_int_equal(feed_str(&r, huge_head, &consumed, &q), AW_ETOOBIG);
    http_reader_dispose(&r);
}

static void test_body_too_large_by_chunks(void **state)
{
    (void)state;
    const char ok[] = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                      "6\r\nabcdef\r\n4\r\nghij\r\n0\r\n\r\n";
    const char big[] = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n";
    static const size_t one[] = {1};
    http_reader_t r;
    http_request_t *q;
    size_t consumed, total;

    http_reader_init(&r, 0, 10);
    assert_int_equal(feed_str(&r, ok, &consumed, &q), 0);
    assert_string_equal(q->body, "abcdefghij");
    http_reader_dispose(&r);

    http_reader_init(&r, 0, 10);
    assert_int_equal(feed_str(&r, big, &consumed, &q), AW_ETOOBIG);
    assert_null(q);
    http_reader_dispose(&r);
    http_reader_init(&r, 0, 10);
    assert_int_equal(feed_pieces(&r, big, strlen(big), one, 1, &total, &q), AW_ETOOBIG);
    assert_true(total < strlen(big) - strlen("0\r\n\r\n"));
    http_reader_dispose(&r);
}

/* Trailers are not kept, but http-parser's own 80 KiB cap still bounds them. */
static void test_huge_trailer(void **state)
{
    (void)state;
    const char head[] = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                        "1\r\na\r\n0\r\nX-T: ";
    size_t fill = 100 * 1024, len = strlen(head) + fill + 4, consumed;
    char *buf = malloc(len);
    http_reader_t r;
    http_request_t *q;

    assert_non_null(buf);
    memcpy(buf, head, strlen(head));
    memset(buf + strlen(head), 'x', fill);
    memcpy(buf + strlen(head) + fill, "\r\n\r\n", 4);
    http_reader_init(&r, 0, 0);
    assert_int_equal(http_feed(&r, buf, len, &consumed, &q), AW_EHEADERS);
    assert_null(q);
    http_reader_dispose(&r);
    free(buf);
}

static void test_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "G@T / HTTP/1.1\r\n\r\n", "FOO / HTTP/1.1\r\n\r\n", "get / HTTP/1.1\r\n\r\n",
        "GET / XTTP/1.1\r\n\r\n", "GET / HTTP/1.1x\r\n\r\n", "GET / HTTP/1.\r\n\r\n",
        "GET /a b HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\rX\n\r\n",
        "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", "GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
        "GET / HTTP/1.1\r\n: no-name\r\n\r\n", "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "\x01\x02\x03",
        /* what a proxy in front could read differently */
        "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",  /* obs-fold */
        "GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", /* obs-fold, tab */
        "GET / HTTP/1.1\nHost: h\r\n\r\n",       /* bare LF */
        "GET / HTTP/1.1\r\nHost: h\n\n",         /* bare LF */
        "GET / HTTP/1.1\r\nHost: h\r\n\r\x01",   /* bare CR */
        "GET /\r\n",                             /* HTTP/0.9 */
        "GET  / HTTP/1.1\r\n\r\n",               /* two spaces */
    };

    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++) {
        http_reader_t r;
        http_request_t *q;
        size_t consumed;

        http_reader_init(&r, 0, 0);
        print_message("case %zu\n", i);
        assert_int_equal(feed_str(&r, bad[i], &consumed, &q), AW_EPROTO);
        assert_null(q);
        /* Spent: even a good request is refused now. */
        assert_int_equal(feed_str(&r, "GET / HTTP/1.1\r\n\r\n", &consumed, &q), AW_EPROTO);
        http_reader_dispose(&r);
    }
}

/* stop_at_head: a request with a body is returned once at its head (no body
 * byte kept), then whole; one without a body only whole. */
static void test_stop_at_head(void **state)
{
    (void)state;
    http_reader_t r;
    http_request_t *q;
    size_t used;
    http_reader_init(&r, 0, 0);
    r.stop_at_head = true;
    size_t len = strlen(POST_REQ);
    assert_int_equal(http_feed(&r, POST_REQ, len, &used, &q), HTTP_HEAD);
    assert_non_null(q);
    assert_string_equal(q->path, "/api/items");
    assert_string_equal(q->query, "x=1");
    assert_string_equal(q->method_name, "POST");
    assert_int_equal(q->content_length, 11);
    assert_false(q->chunked);
    assert_int_equal(q->body_len, 0);
    assert_string_equal(http_header(q, "content-type"), "text/plain");
    assert_true(used < len - 11 + 1);
    size_t used2;
    assert_int_equal(http_feed(&r, POST_REQ + used, len - used, &used2, &q), 0);
    assert_int_equal(used + used2, len);
    assert_string_equal(q->path, "/api/items");
    assert_string_equal(q->query, "x=1");
    assert_int_equal(q->body_len, 11);
    assert_memory_equal(q->body, "hello world", 11);
    http_reader_dispose(&r);

    http_reader_init(&r, 0, 0);
    r.stop_at_head = true;
    assert_int_equal(feed_str(&r, CHUNKED_REQ, &used, &q), HTTP_HEAD);
    assert_true(q->chunked);
    assert_int_equal(q->content_length, 0);
    http_reader_dispose(&r);

    http_reader_init(&r, 0, 0);
    r.stop_at_head = true;
    assert_int_equal(feed_str(&r, WS_HEAD, &used, &q), 0); /* no body: whole at once */
    http_reader_dispose(&r);
}

static void test_header_value_trimming(void **state)
{
    (void)state;
    const char req[] = "GET / HTTP/1.1\r\nX-A:   spaced  value \t \r\nX-B:\t\ttab\r\n"
                       "X-Empty:\r\nX-Blank:    \r\nX-C:x\r\n\r\n";
    http_reader_t r;
    http_request_t *q;
    size_t consumed;

    http_reader_init(&r, 0, 0);
    assert_int_equal(feed_str(&r, req, &consumed, &q), 0);
    assert_int_equal(q->nheaders, 5);
    assert_string_equal(http_header(q, "x-a"), "spaced  value"); /* inner kept */
    assert_string_equal(http_header(q, "x-b"), "tab");
    assert_string_equal(http_header(q, "x-empty"), "");
    assert_string_equal(http_header(q, "x-blank"), "");
    assert_string_equal(http_header(q, "x-c"), "x");
    http_reader_dispose(&r);
}

static void test_url_forms(void **state)
{
    (void)state;
    static const struct {
        const char *req, *path, *query;
    } cases[] = {
        {"GET /a/b?x=1&y=2 HTTP/1.1\r\n\r\n", "/a/b", "x=1&y=2"},
        {"GET /a? HTTP/1.1\r\n\r\n", "/a", ""},
        {"GET /a?x=1#frag HTTP/1.1\r\n\r\n", "/a", "x=1"},
        {"GET /a%20b HTTP/1.1\r\n\r\n", "/a%20b", ""}, /* raw, not decoded */
        {"GET http://host:8080/p?q=1 HTTP/1.1\r\n\r\n", "/p", "q=1"},
        {"GET http://host HTTP/1.1\r\n\r\n", "/", ""},
        {"OPTIONS * HTTP/1.1\r\n\r\n", "*", ""},
    };

    for (size_t i = 0; i < AW_ARRAY_LEN(cases); i++) {
        http_reader_t r;
        http_request_t *q;
        size_t consumed;

        http_reader_init(&r, 0, 0);
        assert_int_equal(feed_str(&r, cases[i].req, &consumed, &q), 0);
        assert_string_equal(q->path, cases[i].path);
        assert_string_equal(q->query, cases[i].query);
        http_reader_dispose(&r);
    }
}

static void test_query_get(void **state)
{
    (void)state;
    const char *query = "token=a%20b%2Bc&name=J+Doe&flag&empty=&x=1&x=2&pct=%41%62";
    char out[32];

    assert_int_equal(http_query_get(query, "token", out, sizeof(out)), 0);
    assert_string_equal(out, "a b+c");
    assert_int_equal(http_query_get(query, "name", out, sizeof(out)), 0);
    assert_string_equal(out, "J Doe");
    assert_int_equal(http_query_get(query, "flag", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(http_query_get(query, "empty", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(http_query_get(query, "x", out, sizeof(out)), 0);
    assert_string_equal(out, "1"); /* first wins */
    assert_int_equal(http_query_get(query, "pct", out, sizeof(out)), 0);
    assert_string_equal(out, "Ab");
    assert_int_equal(http_query_get(query, "missing", out, sizeof(out)), AW_ENOTFOUND);
    assert_int_equal(http_query_get(query, "tok", out, sizeof(out)), AW_ENOTFOUND);
    assert_int_equal(http_query_get(query, "tokenx", out, sizeof(out)), AW_ENOTFOUND);
    assert_int_equal(http_query_get("", "a", out, sizeof(out)), AW_ENOTFOUND);
    assert_int_equal(http_query_get("a=1&&b=2", "b", out, sizeof(out)), 0);
    assert_string_equal(out, "2");
    /* Names are compared decoded. */
    assert_int_equal(http_query_get("my%20key=v", "my key", out, sizeof(out)), 0);
    assert_string_equal(out, "v");
}

static void test_query_get_errors(void **state)
{
    (void)state;
    char out[8];

    assert_int_equal(http_query_get("a=%zz", "a", out, sizeof(out)), AW_EMALFORMED);
    assert_int_equal(http_query_get("a=%4", "a", out, sizeof(out)), AW_EMALFORMED);
    assert_int_equal(http_query_get("a=x%", "a", out, sizeof(out)), AW_EMALFORMED);
    assert_int_equal(http_query_get("a=x%00y", "a", out, sizeof(out)), AW_EMALFORMED);
    /* A bad escape in another pair does not matter. */
    assert_int_equal(http_query_get("b=%zz&a=ok", "a", out, sizeof(out)), 0);
    assert_string_equal(out, "ok");
    /* out must hold the value and its NUL: 7 fits in 8, 8 does not. */
    assert_int_equal(http_query_get("a=1234567", "a", out, sizeof(out)), 0);
    assert_string_equal(out, "1234567");
    assert_int_equal(http_query_get("a=12345678", "a", out, sizeof(out)), AW_ETOOBIG);
    assert_string_equal(out, "");
    assert_int_equal(http_query_get("a=%41%41%41%41%41%41%41", "a", out, sizeof(out)), 0);
    assert_string_equal(out, "AAAAAAA");
    assert_int_equal(http_query_get("a=", "a", out, 0), AW_ETOOBIG);
    assert_int_equal(http_query_get("a=", "a", out, 1), 0);
}

static void test_list_has(void **state)
{
    (void)state;
    assert_true(http_list_has("keep-alive, Upgrade", "upgrade"));
    assert_true(http_list_has("keep-alive, Upgrade", "KEEP-ALIVE"));
    assert_true(http_list_has("Upgrade", "upgrade"));
    assert_true(http_list_has("  upgrade\t", "upgrade"));
    assert_true(http_list_has("a,,upgrade,", "upgrade"));
    assert_true(http_list_has("a ,\tupgrade , b", "upgrade"));
    assert_false(http_list_has("upgradex", "upgrade"));
    assert_false(http_list_has("xupgrade", "upgrade"));
    assert_false(http_list_has("keep-alive, upgradex", "upgrade"));
    assert_false(http_list_has("up grade", "upgrade"));
    assert_false(http_list_has("", "upgrade"));
    assert_false(http_list_has(",,", "upgrade"));
    assert_false(http_list_has(NULL, "upgrade"));
    assert_false(http_list_has("a,,b", ""));
}

static void test_path_decode(void **state)
{
    (void)state;
    char out[32];
    char inplace[] = "/a%2Fb%20c";

    assert_int_equal(http_path_decode(out, "/a%20b+c", 8), 6);
    assert_string_equal(out, "/a b+c"); /* '+' stays */
    assert_int_equal(http_path_decode(out, "/%7e%7E", 7), 3);
    assert_string_equal(out, "/~~");
    assert_int_equal(http_path_decode(out, "/abc", 2), 2); /* only n bytes */
    assert_string_equal(out, "/a");
    assert_int_equal(http_path_decode(out, "", 0), 0);
    assert_string_equal(out, "");
    assert_int_equal(http_path_decode(inplace, inplace, strlen(inplace)), 6);
    assert_string_equal(inplace, "/a/b c");
    assert_int_equal(http_path_decode(out, "/%zz", 4), AW_EMALFORMED);
    assert_int_equal(http_path_decode(out, "/%2", 3), AW_EMALFORMED);
    assert_int_equal(http_path_decode(out, "/%2F", 3), AW_EMALFORMED); /* cut by n */
    assert_int_equal(http_path_decode(out, "/%00", 4), AW_EMALFORMED);
}

static void test_status_text(void **state)
{
    (void)state;
    static const struct {
        int code;
        const char *text;
    } cases[] = {
        {101, "Switching Protocols"},
        {200, "OK"},
        {204, "No Content"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {409, "Conflict"},
        {413, "Payload Too Large"},
        {422, "Unprocessable Entity"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {503, "Service Unavailable"},
    };

    for (size_t i = 0; i < AW_ARRAY_LEN(cases); i++)
        assert_string_equal(http_status_text(cases[i].code), cases[i].text);
    assert_non_null(http_status_text(999));
    assert_string_equal(http_status_text(999), "Unknown");
}

static int group_setup(void **state)
{
    (void)state;
    alarm(TEST_TIMEOUT_S); /* pure code: a hang is a bug, not slowness */
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_empty_feed_needs_more),
        cmocka_unit_test(test_header_lookup_case_insensitive),
        cmocka_unit_test(test_websocket_upgrade),
        cmocka_unit_test(test_upgrade_needs_both_headers),
        cmocka_unit_test(test_post_content_length),
        cmocka_unit_test(test_post_body_in_parts),
        cmocka_unit_test(test_chunked_body),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_all_two_way_splits),
        cmocka_unit_test(test_header_split_mid_name_and_value),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_request_after_close_is_refused),
        cmocka_unit_test(test_head_too_large),
        cmocka_unit_test(test_too_many_headers),
        cmocka_unit_test(test_body_too_large_by_content_length),
        cmocka_unit_test(test_body_too_large_by_chunks),
        cmocka_unit_test(test_huge_trailer),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_header_value_trimming),
        cmocka_unit_test(test_stop_at_head),
        cmocka_unit_test(test_url_forms),
        cmocka_unit_test(test_query_get),
        cmocka_unit_test(test_query_get_errors),
        cmocka_unit_test(test_list_has),
        cmocka_unit_test(test_path_decode),
        cmocka_unit_test(test_status_text),
    };

    return cmocka_run_group_tests(tests, group_setup, NULL);
}
