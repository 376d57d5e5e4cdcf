/* test_ws.c -- the RFC 6455 codec: the section 5.7 examples fed whole, byte by
 * byte and in random splits; lengths at 125/126/65535/65536; every parsing
 * rule; headers, close payloads, the accept key and unmasking at every offset.
 *
 * A `struct conn` plays the caller: it keeps unconsumed bytes in its own
 * buffer, calls ws_parse until AW_EAGAIN, and records each frame. Every test
 * runs twice: as above, then with the parser's stream mode on, where the
 * conn passes each incomplete data payload through ws_payload in the pieces
 * it arrives in (alternately copied out and in place), as session.c does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "ws.h"

#define MAX_RECS 64

static const uint8_t rfc_mask[4] = {0x37, 0xfa, 0x21, 0x3d};

/* RFC 6455 section 5.7 */
static const uint8_t rfc_hello[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
static const uint8_t rfc_masked_hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                           0x7f, 0x9f, 0x4d, 0x51, 0x58};
static const uint8_t rfc_frag1[] = {0x01, 0x03, 0x48, 0x65, 0x6c};
static const uint8_t rfc_frag2[] = {0x80, 0x02, 0x6c, 0x6f};
static const uint8_t rfc_ping[] = {0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
static const uint8_t rfc_masked_pong[] = {0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                          0x7f, 0x9f, 0x4d, 0x51, 0x58};
static const uint8_t rfc_256_head[] = {0x82, 0x7E, 0x01, 0x00};
static const uint8_t rfc_64k_head[] = {0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00};

struct rec {
    uint8_t opcode;
    bool fin;
    size_t len;
    uint8_t *data; /* malloc'ed copy of the payload */
    uint16_t close_code;
};

/* Frames on the wire, with what a parser should return for each. */
struct wire {
    uint8_t *b;
    size_t n, cap;
    struct rec want[MAX_RECS];
    size_t nwant;
};

/* The caller of ws_parse. */
struct conn {
    ws_parser_t p;
    uint8_t *buf;
    size_t have, cap;
    struct rec got[MAX_RECS];
    size_t ngot;
    int err;            /* first non-EAGAIN error, 0 while none */
    uint16_t err_close; /* close code reported with it */
    size_t eagains;
    /* stream mode: the payload being streamed */
    bool streaming;
    uint8_t *sbuf;
    size_t slen, soff;
    unsigned calls;
};

static bool g_stream; /* the second run of every test */

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    assert_non_null(d);
    if (n)
        memcpy(d, p, n);
    return d;
}

static void wire_init(struct wire *w)
{
    memset(w, 0, sizeof(*w));
}

static void wire_free(struct wire *w)
{
    for (size_t i = 0; i < w->nwant; i++)
        free(w->want[i].data);
    free(w->b);
}

static void wire_reserve(struct wire *w, size_t more)
{
    if (w->n + more <= w->cap)
        return;
    w->cap = (w->n + more) * 2;
    w->b = realloc(w->b, w->cap);
    assert_non_null(w->b);
}

static void wire_raw(struct wire *w, const void *bytes, size_t n)
{
    wire_reserve(w, n);
    memcpy(w->b + w->n, bytes, n);
    w->n += n;
}

/* Appends a masked client frame; the mask changes from frame to frame. */
static void wire_frame_rsv(struct wire *w, uint8_t op, bool fin, uint8_t rsv, const void *payload,
                           size_t len)
{
    uint8_t mask[4] = {(uint8_t)(w->n * 7 + 1), 0x5a, (uint8_t)len, 0xc3};
    struct rec *r = &w->want[w->nwant++];

    assert_true(w->nwant <= MAX_RECS);
    wire_reserve(w, WS_MAX_HEADER + len);
    w->n += ws_client_frame(w->b + w->n, op, fin, rsv, mask, payload, len);
    r->opcode = op;
    r->fin = fin;
    r->len = len;
    r->data = dup_bytes(payload, len);
}

static void wire_frame(struct wire *w, uint8_t op, bool fin, const void *payload, size_t len)
{
    wire_frame_rsv(w, op, fin, 0, payload, len);
}

static void wire_text(struct wire *w, uint8_t op, bool fin, const char *s)
{
    wire_frame(w, op, fin, s, strlen(s));
}

static void conn_init(struct conn *c, uint64_t max, bool masked, size_t cap)
{
    memset(c, 0, sizeof(*c));
    ws_parser_init(&c->p, max, masked);
    c->p.stream = g_stream;
    c->cap = cap;
    c->buf = malloc(cap ? cap : 1);
    assert_non_null(c->buf);
}

static void conn_free(struct conn *c)
{
    for (size_t i = 0; i < c->ngot; i++)
        free(c->got[i].data);
    free(c->buf);
    free(c->sbuf);
}

/* Stream mode: n more payload bytes at src; copied out, or every other call
 * copied first and passed in place. 0 (more due or frame recorded) or the
 * error. */
static int conn_stream(struct conn *c, const uint8_t *src, size_t n)
{
    ws_frame_t f;
    uint16_t code = 99;
    uint8_t *dst = c->sbuf + c->soff;
    if (++c->calls % 2 == 0 && n) {
        memcpy(dst, src, n);
        src = dst;
    }
    int rc = ws_payload(&c->p, dst, src, n, &f, &code);
    assert_int_equal(code, ws_close_code_for(rc));
    c->soff += n;
    if (rc == AW_EAGAIN) {
        assert_true(c->soff < c->slen);
        return 0;
    }
    c->streaming = false;
    if (rc != AW_OK) {
        c->err = rc;
        c->err_close = code;
        return rc;
    }
    assert_int_equal(c->soff, c->slen);
    assert_int_equal(f.len, c->slen);
    assert_null(f.payload);
    struct rec *r = &c->got[c->ngot++];
    assert_true(c->ngot <= MAX_RECS);
    r->opcode = f.opcode;
    r->fin = f.fin;
    r->len = f.len;
    r->data = c->sbuf;
    r->close_code = f.close_code;
    c->sbuf = NULL;
    return 0;
}

/* Stream mode: WS_PAYLOAD was returned for a frame of len payload bytes; the
 * bytes already buffered behind its header go first. */
static int conn_stream_start(struct conn *c, const ws_frame_t *f)
{
    ws_frame_t again;
    size_t used = 99;
    assert_true(f->len > 0 && f->opcode != WS_OP_PING && f->opcode != WS_OP_CLOSE);
    assert_null(f->payload);
    /* nothing else may be parsed while the payload is due */
    assert_int_equal(ws_parse(&c->p, c->buf, c->have, &again, &used, NULL), AW_EINVAL);
    c->streaming = true;
    c->slen = f->len;
    c->soff = 0;
    c->sbuf = malloc(f->len);
    assert_non_null(c->sbuf);
    size_t k = c->have < c->slen ? c->have : c->slen;
    assert_true(k < c->slen); /* else the frame was whole */
    int rc = conn_stream(c, c->buf, k);
    memmove(c->buf, c->buf + k, c->have - k);
    c->have -= k;
    return rc;
}

static void conn_record(struct conn *c, const ws_frame_t *f, size_t used)
{
    struct rec *r = &c->got[c->ngot++];

    assert_true(c->ngot <= MAX_RECS);
    assert_true(used > 0 && used <= c->have);
    if (f->len == 0)
        assert_null(f->payload);
    else
        assert_true(f->payload >= c->buf && f->payload + f->len <= c->buf + used);
    r->opcode = f->opcode;
    r->fin = f->fin;
    r->len = f->len;
    r->data = dup_bytes(f->payload, f->len);
    r->close_code = f->close_code;
}

/* Appends n bytes and parses every whole frame. Returns 0 or the error. */
static int conn_feed(struct conn *c, const uint8_t *data, size_t n)
{
    ws_frame_t f;
    size_t used = 99;
    uint16_t code = 99;
    int rc;

    assert_int_equal(c->err, 0);
    if (c->streaming) { /* stream mode: payload bytes go by themselves */
        size_t k = c->slen - c->soff < n ? c->slen - c->soff : n;
        if (conn_stream(c, data, k) != 0)
            return c->err;
        if (c->streaming) {
            c->eagains++;
            return 0;
        }
        return conn_feed(c, data + k, n - k);
    }
    assert_true(c->have + n <= c->cap);
    if (n)
        memcpy(c->buf + c->have, data, n);
    c->have += n;
    for (;;) {
        rc = ws_parse(&c->p, c->buf, c->have, &f, &used, &code);
        if (rc == WS_PAYLOAD) {
            assert_true(g_stream);
            assert_int_equal(code, 0);
            assert_true(used >= 2 && used <= c->have);
            memmove(c->buf, c->buf + used, c->have - used);
            c->have -= used;
            if (conn_stream_start(c, &f) != 0)
                return c->err;
            if (c->streaming) {
                c->eagains++;
                return 0;
            }
            continue;
        }
        if (rc != AW_OK)
            break;
        assert_int_equal(code, 0);
        conn_record(c, &f, used);
        memmove(c->buf, c->buf + used, c->have - used);
        c->have -= used;
    }
    assert_int_equal(used, 0);
    if (rc == AW_EAGAIN) {
        assert_int_equal(code, 0);
        c->eagains++;
        return 0;
    }
    c->err = rc;
    c->err_close = code;
    return rc;
}

/* Feeds w in chunks whose sizes come from the seed (0: whole, 1: byte by
 * byte, else random sizes up to 2 * max_chunk). Stops at the first error. */
static void conn_feed_split(struct conn *c, const struct wire *w, uint32_t seed, size_t max_chunk)
{
    size_t off = 0;

    while (off < w->n) {
        size_t k = w->n - off;
        if (seed == 1)
            k = 1;
        else if (seed > 1)
            k = rng_next(&seed) % (2 * max_chunk) + 1;
        if (k > w->n - off)
            k = w->n - off;
        if (conn_feed(c, w->b + off, k) != 0)
            return;
        off += k;
    }
}

static void assert_recs_equal(const struct rec *got, size_t ngot, const struct rec *want,
                              size_t nwant)
{
    assert_int_equal(ngot, nwant);
    for (size_t i = 0; i < ngot; i++) {
        assert_int_equal(got[i].opcode, want[i].opcode);
        assert_int_equal(got[i].fin, want[i].fin);
        assert_int_equal(got[i].len, want[i].len);
        assert_memory_equal(got[i].data, want[i].data, want[i].len);
    }
}

/* Feeds w whole and expects `ok` frames to pass, then result err. */
static void expect_stream(const struct wire *w, uint64_t max, int err, size_t ok)
{
    struct conn c;

    conn_init(&c, max, true, w->n);
    conn_feed(&c, w->b, w->n);
    assert_int_equal(c.err, err);
    assert_int_equal(c.ngot, ok);
    assert_recs_equal(c.got, c.ngot, w->want, ok);
    if (err == AW_EPROTO)
        assert_int_equal(c.err_close, WS_CLOSE_PROTOCOL);
    else if (err == AW_EUTF8)
        assert_int_equal(c.err_close, WS_CLOSE_INVALID_UTF8);
    else if (err == AW_ETOOBIG)
        assert_int_equal(c.err_close, WS_CLOSE_TOO_BIG);
    else
        assert_int_equal(c.have, 0);
    conn_free(&c);
}

/* Parses bytes (possibly only a header) in a fresh parser. */
static int parse_bytes(const void *bytes, size_t n, uint64_t max, bool masked, uint16_t *code)
{
    ws_parser_t p;
    ws_frame_t f;
    size_t used = 99;
    uint8_t *copy = dup_bytes(bytes, n);
    int rc;

    ws_parser_init(&p, max, masked);
    rc = ws_parse(&p, copy, n, &f, &used, code);
    if (rc != AW_OK)
        assert_int_equal(used, 0);
    free(copy);
    return rc;
}

/* ---- RFC 6455 section 5.7 ---- */

static void test_rfc_unmasked_hello(void **state)
{
    uint8_t buf[sizeof(rfc_hello)];
    ws_parser_t p;
    ws_frame_t f;
    size_t used;
    uint16_t code = 99;
    (void)state;

    memcpy(buf, rfc_hello, sizeof(buf));
    ws_parser_init(&p, 1024, false);
    assert_int_equal(ws_parse(&p, buf, sizeof(buf), &f, &used, &code), AW_OK);
    assert_int_equal(code, 0);
    assert_int_equal(used, sizeof(rfc_hello));
    assert_int_equal(f.opcode, WS_OP_TEXT);
    assert_true(f.fin);
    assert_int_equal(f.len, 5);
    assert_ptr_equal(f.payload, buf + 2);
    assert_memory_equal(f.payload, "Hello", 5);

    assert_int_equal(parse_bytes(rfc_hello, sizeof(rfc_hello), 1024, true, &code), AW_EPROTO);
    assert_int_equal(code, WS_CLOSE_PROTOCOL);
}

static void test_rfc_masked_hello_whole(void **state)
{
    uint8_t buf[sizeof(rfc_masked_hello) + 3];
    ws_parser_t p;
    ws_frame_t f;
    size_t used;
    uint16_t code = 99;
    (void)state;

    memcpy(buf, rfc_masked_hello, sizeof(rfc_masked_hello));
    memcpy(buf + sizeof(rfc_masked_hello), "\x81\x85\x00", 3); /* start of the next frame */
    ws_parser_init(&p, 1024, true);
    assert_int_equal(ws_parse(&p, buf, sizeof(buf), &f, &used, &code), AW_OK);
    assert_int_equal(code, 0);
    assert_int_equal(used, sizeof(rfc_masked_hello));
    assert_int_equal(f.opcode, WS_OP_TEXT);
    assert_true(f.fin);
    assert_int_equal(f.len, 5);
    assert_ptr_equal(f.payload, buf + 6); /* unmasked in place */
    assert_memory_equal(f.payload, "Hello", 5);
    assert_memory_equal(buf + sizeof(rfc_masked_hello), "\x81\x85\x00", 3);
}

static void test_rfc_masked_hello_prefixes(void **state)
{
    uint8_t buf[sizeof(rfc_masked_hello)];
    ws_parser_t p;
    ws_frame_t f;
    size_t used;
    uint16_t code;
    (void)state;

    ws_parser_init(&p, 1024, true);
    memcpy(buf, rfc_masked_hello, sizeof(buf));
    for (size_t n = 0; n < sizeof(buf); n++) {
        used = 99, code = 99;
        assert_int_equal(ws_parse(&p, buf, n, &f, &used, &code), AW_EAGAIN);
        assert_int_equal(used, 0);
        assert_int_equal(code, 0);
        assert_memory_equal(buf, rfc_masked_hello, sizeof(buf)); /* not unmasked yet */
    }
    assert_int_equal(ws_parse(&p, buf, sizeof(buf), &f, &used, NULL), AW_OK);
    assert_memory_equal(f.payload, "Hello", 5);
}

static void test_rfc_masked_hello_bytewise(void **state)
{
    struct conn c;
    (void)state;

    conn_init(&c, 1024, true, 64);
    for (size_t i = 0; i < sizeof(rfc_masked_hello); i++)
        assert_int_equal(conn_feed(&c, rfc_masked_hello + i, 1), 0);
    assert_int_equal(c.eagains, sizeof(rfc_masked_hello));
    assert_int_equal(c.ngot, 1);
    assert_int_equal(c.got[0].opcode, WS_OP_TEXT);
    assert_int_equal(c.got[0].len, 5);
    assert_memory_equal(c.got[0].data, "Hello", 5);
    assert_int_equal(c.have, 0);
    conn_free(&c);
}

static void test_rfc_masked_hello_random_splits(void **state)
{
    struct wire w;
    (void)state;

    wire_init(&w);
    for (int i = 0; i < 4; i++) {
        wire_raw(&w, rfc_masked_hello, sizeof(rfc_masked_hello));
        w.want[w.nwant++] = (struct rec){WS_OP_TEXT, true, 5, dup_bytes("Hello", 5), 0};
    }
    for (uint32_t seed = 2; seed < 500; seed++) {
        struct conn c;
        conn_init(&c, 1024, true, w.n);
        conn_feed_split(&c, &w, seed, 1 + seed % 13);
        assert_int_equal(c.err, 0);
        assert_recs_equal(c.got, c.ngot, w.want, w.nwant);
        assert_int_equal(c.have, 0);
        conn_free(&c);
    }
    wire_free(&w);
}

static void test_rfc_client_frame_bytes(void **state)
{
    uint8_t out[WS_MAX_HEADER + 5];
    (void)state;

    assert_int_equal(
        ws_client_frame(out, WS_OP_TEXT, true, 0, rfc_mask, (const uint8_t *)"Hello", 5),
        sizeof(rfc_masked_hello));
    assert_memory_equal(out, rfc_masked_hello, sizeof(rfc_masked_hello));
    assert_int_equal(
        ws_client_frame(out, WS_OP_PONG, true, 0, rfc_mask, (const uint8_t *)"Hello", 5),
        sizeof(rfc_masked_pong));
    assert_memory_equal(out, rfc_masked_pong, sizeof(rfc_masked_pong));
    /* a NULL mask writes an unmasked frame (tests only) */
    assert_int_equal(ws_client_frame(out, WS_OP_TEXT, true, 0, NULL, (const uint8_t *)"Hello", 5),
                     sizeof(rfc_hello));
    assert_memory_equal(out, rfc_hello, sizeof(rfc_hello));
}

static void test_rfc_fragments_ping_pong(void **state)
{
    struct conn c;
    (void)state;

    conn_init(&c, 1024, false, 64);
    assert_int_equal(conn_feed(&c, rfc_frag1, sizeof(rfc_frag1)), 0);
    assert_int_equal(conn_feed(&c, rfc_ping, sizeof(rfc_ping)), 0);
    assert_int_equal(conn_feed(&c, rfc_masked_pong, sizeof(rfc_masked_pong)), 0);
    assert_int_equal(conn_feed(&c, rfc_frag2, sizeof(rfc_frag2)), 0);
    assert_int_equal(c.ngot, 4);
    assert_int_equal(c.got[0].opcode, WS_OP_TEXT);
    assert_false(c.got[0].fin);
    assert_memory_equal(c.got[0].data, "Hel", 3);
    assert_int_equal(c.got[1].opcode, WS_OP_PING);
    assert_memory_equal(c.got[1].data, "Hello", 5);
    assert_int_equal(c.got[2].opcode, WS_OP_PONG);
    assert_memory_equal(c.got[2].data, "Hello", 5);
    assert_int_equal(c.got[3].opcode, WS_OP_CONT);
    assert_true(c.got[3].fin);
    assert_int_equal(c.got[3].len, 2);
    assert_memory_equal(c.got[3].data, "lo", 2);
    conn_free(&c);
}

/* The 256-byte and 64 KiB unmasked binary frames of section 5.7. */
static void test_rfc_256_and_64k(void **state)
{
    static const size_t sizes[] = {256, 65536};
    static const uint8_t *heads[] = {rfc_256_head, rfc_64k_head};
    static const size_t head_lens[] = {sizeof(rfc_256_head), sizeof(rfc_64k_head)};
    (void)state;

    for (size_t i = 0; i < 2; i++) {
        size_t n = sizes[i], h = head_lens[i];
        uint8_t *buf = malloc(h + n);
        ws_parser_t p;
        ws_frame_t f;
        size_t used;
        assert_non_null(buf);
        assert_int_equal(ws_frame_header(buf, WS_OP_BINARY, true, n), h);
        assert_memory_equal(buf, heads[i], h);
        for (size_t k = 0; k < n; k++)
            buf[h + k] = (uint8_t)(k * 31);
        ws_parser_init(&p, 65536, false);
        assert_int_equal(ws_parse(&p, buf, h + n - 1, &f, &used, NULL), AW_EAGAIN);
        assert_int_equal(ws_parse(&p, buf, h + n, &f, &used, NULL), AW_OK);
        assert_int_equal(used, h + n);
        assert_int_equal(f.opcode, WS_OP_BINARY);
        assert_int_equal(f.len, n);
        assert_int_equal(f.payload[n - 1], (uint8_t)((n - 1) * 31));
        free(buf);
    }
}

/* ---- lengths and headers ---- */

static void test_lengths_masked(void **state)
{
    static const size_t lens[] = {0, 1, 125, 126, 127, 65535, 65536, 70001};
    (void)state;

    for (size_t i = 0; i < AW_ARRAY_LEN(lens); i++) {
        size_t n = lens[i];
        uint8_t *payload = malloc(n + 1), *buf = malloc(WS_MAX_HEADER + n), *orig;
        size_t total, hlen = n <= 125 ? 6 : n <= 65535 ? 8 : 14;
        ws_parser_t p;
        ws_frame_t f;
        size_t used;
        assert_non_null(payload);
        assert_non_null(buf);
        for (size_t k = 0; k < n; k++)
            payload[k] = (uint8_t)(k ^ (k >> 8));
        total = ws_client_frame(buf, WS_OP_BINARY, true, 0, rfc_mask, payload, n);
        assert_int_equal(total, hlen + n);
        if (n <= 125) {
            assert_int_equal(buf[1], 0x80 | n);
        } else if (n <= 65535) {
            assert_int_equal(buf[1], 0xFE);
            assert_int_equal(buf[2] << 8 | buf[3], n);
        } else {
            assert_int_equal(buf[1], 0xFF);
            assert_memory_equal(buf + 2, "\0\0\0\0\0", 5);
            assert_int_equal(buf[7] << 16 | buf[8] << 8 | buf[9], n);
        }
        assert_memory_equal(buf + hlen - 4, rfc_mask, 4);
        orig = dup_bytes(buf, total);
        ws_parser_init(&p, 1 << 20, true);
        for (size_t k = 0; k < total; k++)
            assert_int_equal(ws_parse(&p, buf, k, &f, &used, NULL), AW_EAGAIN);
        assert_memory_equal(buf, orig, total);
        assert_int_equal(ws_parse(&p, buf, total, &f, &used, NULL), AW_OK);
        assert_int_equal(used, total);
        assert_int_equal(f.len, n);
        if (n)
            assert_memory_equal(f.payload, payload, n);
        else
            assert_null(f.payload);
        free(orig);
        free(payload);
        free(buf);
    }
}

static void test_frame_header_encodings(void **state)
{
    struct {
        uint8_t op;
        bool fin;
        uint64_t len;
        size_t hlen;
        const char *bytes;
    } cases[] = {
        {WS_OP_TEXT, true, 0, 2, "\x81\x00"},
        {WS_OP_TEXT, false, 1, 2, "\x01\x01"},
        {WS_OP_BINARY, true, 125, 2, "\x82\x7D"},
        {WS_OP_BINARY, true, 126, 4, "\x82\x7E\x00\x7E"},
        {WS_OP_BINARY, false, 127, 4, "\x02\x7E\x00\x7F"},
        {WS_OP_CONT, false, 65535, 4, "\x00\x7E\xFF\xFF"},
        {WS_OP_CONT, true, 65536, 10, "\x80\x7F\x00\x00\x00\x00\x00\x01\x00\x00"},
        {WS_OP_BINARY, true, 0x100000005ULL, 10, "\x82\x7F\x00\x00\x00\x01\x00\x00\x00\x05"},
        {WS_OP_BINARY, true, 0x7FFFFFFFFFFFFFFFULL, 10, "\x82\x7F\x7F\xFF\xFF\xFF\xFF\xFF\xFF\xFF"},
        {WS_OP_CLOSE, true, 2, 2, "\x88\x02"},
        {WS_OP_PING, true, 125, 2, "\x89\x7D"},
        {WS_OP_PONG, true, 0, 2, "\x8A\x00"},
    };
    uint8_t out[16];
    (void)state;

    for (size_t i = 0; i < AW_ARRAY_LEN(cases); i++) {
        memset(out, 0xEE, sizeof(out));
        assert_int_equal(ws_frame_header(out, cases[i].op, cases[i].fin, cases[i].len),
                         cases[i].hlen);
        assert_memory_equal(out, cases[i].bytes, cases[i].hlen);
        assert_int_equal(out[cases[i].hlen], 0xEE);
    }
}

/* Server headers are unmasked; a parser that does not expect masks reads them. */
static void test_frame_header_round_trip(void **state)
{
    static const size_t lens[] = {0, 125, 126, 65535, 65536};
    (void)state;

    for (size_t i = 0; i < AW_ARRAY_LEN(lens); i++) {
        uint8_t *buf = calloc(1, 10 + lens[i]);
        ws_parser_t p;
        ws_frame_t f;
        size_t used, h;
        assert_non_null(buf);
        h = ws_frame_header(buf, WS_OP_BINARY, true, lens[i]);
        ws_parser_init(&p, 1 << 20, false);
        assert_int_equal(ws_parse(&p, buf, h + lens[i], &f, &used, NULL), AW_OK);
        assert_int_equal(used, h + lens[i]);
        assert_int_equal(f.len, lens[i]);
        free(buf);
    }
}

static void test_non_minimal_lengths(void **state)
{
    static const struct {
        const char *bytes;
        size_t n;
        int rc;
    } cases[] = {
        {"\x82\xFE\x00\x00", 4, AW_EPROTO},                          /* 0 in 16 bits */
        {"\x82\xFE\x00\x7D", 4, AW_EPROTO},                          /* 125 in 16 bits */
        {"\x82\xFE\x00\x7E", 4, AW_EAGAIN},                          /* 126: minimal */
        {"\x82\xFE\xFF\xFF", 4, AW_EAGAIN},                          /* 65535 */
        {"\x82\xFF\x00\x00\x00\x00\x00\x00\x00\x00", 10, AW_EPROTO}, /* 0 in 64 bits */
        {"\x82\xFF\x00\x00\x00\x00\x00\x00\x00\x7D", 10, AW_EPROTO}, /* 125 */
        {"\x82\xFF\x00\x00\x00\x00\x00\x00\x00\x7E", 10, AW_EPROTO}, /* 126 */
        {"\x82\xFF\x00\x00\x00\x00\x00\x00\xFF\xFF", 10, AW_EPROTO}, /* 65535 */
        {"\x82\xFF\x00\x00\x00\x00\x00\x01\x00\x00", 10, AW_EAGAIN}, /* 65536: minimal */
        {"\x82\xFF\x80\x00\x00\x00\x00\x00\x00\x00", 10, AW_EPROTO}, /* MSB set */
        {"\x82\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 10, AW_EPROTO}, /* MSB set */
        {"\x82\xFE\x00", 3, AW_EAGAIN},                              /* length cut */
        {"\x82\xFF\x00\x00\x00\x00\x00\x00\x00", 9, AW_EAGAIN},      /* length cut */
    };
    uint16_t code;
    (void)state;

    for (size_t i = 0; i < AW_ARRAY_LEN(cases); i++) {
        code = 99;
        assert_int_equal(parse_bytes(cases[i].bytes, cases[i].n, UINT64_MAX, true, &code),
                         cases[i].rc);
        assert_int_equal(code, cases[i].rc == AW_EPROTO ? WS_CLOSE_PROTOCOL : 0);
    }
}

/* A whole frame with a non-minimal length is refused too, not only its head. */
static void test_non_minimal_whole_frame(void **state)
{
    uint8_t buf[2 + 8 + 4 + 125];
    uint16_t code;
    (void)state;

    memset(buf, 0, sizeof(buf));
    memcpy(buf, "\x82\xFE\x00\x7D", 4);
    assert_int_equal(parse_bytes(buf, 4 + 4 + 125, 1024, true, &code), AW_EPROTO);
    memcpy(buf, "\x82\xFF\x00\x00\x00\x00\x00\x00\x00\x7D", 10);
    assert_int_equal(parse_bytes(buf, 10 + 4 + 125, 1024, true, &code), AW_EPROTO);
    assert_int_equal(code, WS_CLOSE_PROTOCOL);
}

/* ---- header rules ---- */

static void test_reserved_bits(void **state)
{
    static const uint8_t ops[] = {WS_OP_TEXT, WS_OP_BINARY, WS_OP_PING, WS_OP_PONG, WS_OP_CLOSE};
    (void)state;

    for (uint8_t rsv = 1; rsv < 8; rsv++) {
        for (size_t i = 0; i < AW_ARRAY_LEN(ops); i++) {
            struct wire w;
            uint8_t b0 = (uint8_t)(0x80 | rsv << 4 | ops[i]);
            uint16_t code = 0;
            wire_init(&w);
            wire_frame_rsv(&w, ops[i], true, rsv, NULL, 0);
            expect_stream(&w, 1024, AW_EPROTO, 0);
            wire_free(&w);
            /* the first byte alone proves it */
            assert_int_equal(parse_bytes(&b0, 1, 1024, true, &code), AW_EPROTO);
            assert_int_equal(code, WS_CLOSE_PROTOCOL);
        }
        /* on a continuation inside an open message */
        struct wire w;
        wire_init(&w);
        wire_text(&w, WS_OP_TEXT, false, "a");
        wire_frame_rsv(&w, WS_OP_CONT, true, rsv, "b", 1);
        expect_stream(&w, 1024, AW_EPROTO, 1);
        wire_free(&w);
    }
}

static void test_reserved_opcodes(void **state)
{
    static const uint8_t bad[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    (void)state;

    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++) {
        for (int fin = 0; fin < 2; fin++) {
            struct wire w;
            uint8_t b0 = (uint8_t)(fin << 7 | bad[i]);
            uint16_t code = 0;
            wire_init(&w);
            wire_frame(&w, bad[i], fin, "x", 1);
            expect_stream(&w, 1024, AW_EPROTO, 0);
            wire_free(&w);
            assert_int_equal(parse_bytes(&b0, 1, 1024, true, &code), AW_EPROTO);
            assert_int_equal(code, WS_CLOSE_PROTOCOL);
        }
    }
}

static void test_known_opcodes_accepted(void **state)
{
    struct wire w;
    (void)state;

    wire_init(&w);
    wire_text(&w, WS_OP_TEXT, true, "t");
    wire_text(&w, WS_OP_BINARY, false, "b");
    wire_text(&w, WS_OP_CONT, true, "c");
    wire_text(&w, WS_OP_PING, true, "p");
    wire_text(&w, WS_OP_PONG, true, "q");
    wire_text(&w, WS_OP_CLOSE, true, "");
    expect_stream(&w, 1024, 0, 6);
    wire_free(&w);
}

static void test_unmasked_rejected(void **state)
{
    static const uint8_t frames[][2] = {{0x81, 0x00}, {0x82, 0x00}, {0x89, 0x00},
                                        {0x8A, 0x00}, {0x88, 0x00}, {0x01, 0x05}};
    uint16_t code;
    (void)state;

    for (size_t i = 0; i < AW_ARRAY_LEN(frames); i++) {
        code = 0;
        assert_int_equal(parse_bytes(frames[i], 2, 1024, true, &code), AW_EPROTO);
        assert_int_equal(code, WS_CLOSE_PROTOCOL);
        assert_int_equal(parse_bytes(frames[i], 2, 1024, false, &code),
                         frames[i][1] ? AW_EAGAIN : AW_OK);
    }
}

/* Without expect_masked, a masked frame is still unmasked correctly. */
static void test_masked_accepted_when_not_expected(void **state)
{
    uint8_t buf[sizeof(rfc_masked_hello)];
    ws_parser_t p;
    ws_frame_t f;
    size_t used;
    (void)state;

    memcpy(buf, rfc_masked_hello, sizeof(buf));
    ws_parser_init(&p, 1024, false);
    assert_int_equal(ws_parse(&p, buf, sizeof(buf), &f, &used, NULL), AW_OK);
    assert_memory_equal(f.payload, "Hello", 5);
}

static void test_control_too_long(void **state)
{
    static const uint8_t ops[] = {WS_OP_PING, WS_OP_PONG, WS_OP_CLOSE};
    uint8_t payload[200];
    (void)state;

    memset(payload, 'a', sizeof(payload));
    for (size_t i = 0; i < AW_ARRAY_LEN(ops); i++) {
        uint8_t head16[4] = {(uint8_t)(0x80 | ops[i]), 0xFE, 0x00, 126};
        uint8_t head64[10] = {(uint8_t)(0x80 | ops[i]), 0xFF, 0, 0, 0, 0, 0, 1, 0, 0};
        uint16_t code = 0;
        struct wire w;

        wire_init(&w);
        wire_frame(&w, ops[i], true, payload, 126);
        expect_stream(&w, 1024, AW_EPROTO, 0);
        wire_free(&w);
        /* decided from the first two bytes */
        assert_int_equal(parse_bytes(head16, 2, 1024, true, &code), AW_EPROTO);
        assert_int_equal(code, WS_CLOSE_PROTOCOL);
        assert_int_equal(parse_bytes(head64, 2, 1024, true, &code), AW_EPROTO);

        wire_init(&w);
        if (ops[i] == WS_OP_CLOSE)
            payload[0] = 0x03, payload[1] = 0xE8; /* 1000 */
        wire_frame(&w, ops[i], true, payload, 125);
        expect_stream(&w, 1024, 0, 1);
        wire_free(&w);
        payload[0] = payload[1] = 'a';
    }
}

static void test_control_fragmented(void **state)
{
    static const uint8_t ops[] = {WS_OP_PING, WS_OP_PONG, WS_OP_CLOSE};
    (void)state;

    for (size_t i = 0; i < AW_ARRAY_LEN(ops); i++) {
        struct wire w;
        wire_init(&w);
        wire_frame(&w, ops[i], false, NULL, 0);
        expect_stream(&w, 1024, AW_EPROTO, 0);
        wire_free(&w);
        /* also inside an open message */
        wire_init(&w);
        wire_text(&w, WS_OP_TEXT, false, "a");
        wire_frame(&w, ops[i], false, NULL, 0);
        expect_stream(&w, 1024, AW_EPROTO, 1);
        wire_free(&w);
    }
}

/* ---- fragmentation ---- */

static void test_continuation_without_message(void **state)
{
    struct wire w;
    (void)state;

    for (int fin = 0; fin < 2; fin++) {
        wire_init(&w);
        wire_text(&w, WS_OP_CONT, fin, "x");
        expect_stream(&w, 1024, AW_EPROTO, 0);
        wire_free(&w);
    }
    /* after a finished message */
    wire_init(&w);
    wire_text(&w, WS_OP_TEXT, false, "a");
    wire_text(&w, WS_OP_CONT, true, "b");
    wire_text(&w, WS_OP_CONT, true, "c");
    expect_stream(&w, 1024, AW_EPROTO, 2);
    wire_free(&w);
    /* after a single-frame message */
    wire_init(&w);
    wire_text(&w, WS_OP_BINARY, true, "a");
    wire_text(&w, WS_OP_CONT, false, "b");
    expect_stream(&w, 1024, AW_EPROTO, 1);
    wire_free(&w);
}

static void test_new_message_while_open(void **state)
{
    static const uint8_t firsts[] = {WS_OP_TEXT, WS_OP_BINARY};
    static const uint8_t seconds[] = {WS_OP_TEXT, WS_OP_BINARY};
    (void)state;

    for (size_t i = 0; i < 2; i++) {
        for (size_t j = 0; j < 2; j++) {
            for (int fin = 0; fin < 2; fin++) {
                struct wire w;
                wire_init(&w);
                wire_text(&w, firsts[i], false, "a");
                wire_text(&w, WS_OP_CONT, false, "b");
                wire_text(&w, seconds[j], fin, "c");
                expect_stream(&w, 1024, AW_EPROTO, 2);
                wire_free(&w);
            }
        }
    }
}

static void test_fragmented_messages(void **state)
{
    struct wire w;
    (void)state;

    wire_init(&w);
    wire_text(&w, WS_OP_TEXT, false, "Hel");
    wire_text(&w, WS_OP_CONT, false, "");
    wire_text(&w, WS_OP_CONT, false, "l");
    wire_text(&w, WS_OP_CONT, true, "o");
    wire_frame(&w, WS_OP_BINARY, false, "\xFF\x00", 2);
    wire_frame(&w, WS_OP_CONT, true, "\xC0", 1);
    wire_text(&w, WS_OP_TEXT, true, "next");
    wire_text(&w, WS_OP_BINARY, false, "");
    wire_text(&w, WS_OP_CONT, true, "");
    expect_stream(&w, 1024, 0, 9);
    wire_free(&w);
}

static void test_interleaved_control(void **state)
{
    struct wire w;
    (void)state;

    wire_init(&w);
    wire_text(&w, WS_OP_TEXT, false, "Hel");
    wire_text(&w, WS_OP_PING, true, "ping");
    wire_text(&w, WS_OP_CONT, false, "l");
    wire_text(&w, WS_OP_PONG, true, "");
    wire_text(&w, WS_OP_PING, true, "");
    wire_text(&w, WS_OP_CONT, true, "o");
    wire_text(&w, WS_OP_TEXT, true, "after");
    expect_stream(&w, 1024, 0, 7);
    wire_free(&w);

    /* a control frame does not end the open message */
    wire_init(&w);
    wire_text(&w, WS_OP_BINARY, false, "a");
    wire_text(&w, WS_OP_PING, true, "p");
    wire_text(&w, WS_OP_BINARY, true, "b");
    expect_stream(&w, 1024, AW_EPROTO, 2);
    wire_free(&w);

    /* a text fragment ending inside a character, then a ping, then the rest */
    wire_init(&w);
    wire_text(&w, WS_OP_TEXT, false, "\xE2");
    wire_text(&w, WS_OP_PING, true, "\xFF not text");
    wire_text(&w, WS_OP_CONT, true, "\x82\xAC");
    expect_stream(&w, 1024, 0, 3);
    wire_free(&w);
}

/* ---- UTF-8 in text messages ---- */

static const char *const utf8_texts[] = {
    "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5", /* Kuhn: "kosme" */
    "a\xC2\x80"
    "b\xDF\xBF"
    "c\xE0\xA0\x80"
    "d\xEF\xBF\xBF"
    "e\xF0\x90\x80\x80"
    "f\xF4\x8F\xBF\xBF",
    "\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBD", /* U+D7FF U+E000 U+FFFD */
    "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80",
};

static void test_utf8_split_every_position(void **state)
{
    (void)state;
    for (size_t t = 0; t < AW_ARRAY_LEN(utf8_texts); t++) {
        const char *s = utf8_texts[t];
        size_t n = strlen(s);
        for (size_t i = 0; i <= n; i++) {
            for (size_t j = i; j <= n; j++) {
                struct wire w;
                wire_init(&w);
                wire_frame(&w, WS_OP_TEXT, false, s, i);
                wire_frame(&w, WS_OP_CONT, false, s + i, j - i);
                wire_frame(&w, WS_OP_CONT, true, s + j, n - j);
                expect_stream(&w, 1024, 0, 3);
                wire_free(&w);
            }
        }
    }
}

static void test_utf8_invalid_across_fragments(void **state)
{
    static const struct {
        const char *a, *b;
    } cases[] = {
        {"\xE2\x82", "A"},        /* ASCII where the last byte belongs */
        {"\xED", "\xA0\x80"},     /* surrogate U+D800 */
        {"\xF4", "\x90\x80\x80"}, /* U+110000 */
        {"\xE0", "\x80\x80"},     /* overlong */
        {"ok\xC2", "\xC2\x80"},   /* lead where a continuation belongs */
    };
    (void)state;

    for (size_t i = 0; i < AW_ARRAY_LEN(cases); i++) {
        for (int fin = 0; fin < 2; fin++) {
            struct wire w;
            wire_init(&w);
            wire_text(&w, WS_OP_TEXT, false, cases[i].a);
            wire_text(&w, WS_OP_CONT, fin, cases[i].b);
            expect_stream(&w, 1024, AW_EUTF8, 1);
            wire_free(&w);
        }
    }
}

/* A fragment that makes the text invalid fails at once, not at FIN. */
static void test_utf8_fail_fast(void **state)
{
    static const char *const bad[] = {"ok\xC0\x80", "\xFF", "\x80", "\xED\xA0\x80", "\xF5"};
    (void)state;

    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++) {
        struct wire w;
        wire_init(&w);
        wire_text(&w, WS_OP_TEXT, false, bad[i]);
        wire_text(&w, WS_OP_CONT, true, "never reached");
        expect_stream(&w, 1024, AW_EUTF8, 0);
        wire_free(&w);

        wire_init(&w);
        wire_text(&w, WS_OP_TEXT, false, "fine");
        wire_text(&w, WS_OP_CONT, false, bad[i]);
        wire_text(&w, WS_OP_CONT, true, "never reached");
        expect_stream(&w, 1024, AW_EUTF8, 1);
        wire_free(&w);

        wire_init(&w);
        wire_text(&w, WS_OP_TEXT, true, bad[i]);
        expect_stream(&w, 1024, AW_EUTF8, 0);
        wire_free(&w);
    }
}

static void test_utf8_incomplete_at_fin(void **state)
{
    struct wire w;
    (void)state;

    wire_init(&w);
    wire_text(&w, WS_OP_TEXT, true, "\xE2\x82");
    expect_stream(&w, 1024, AW_EUTF8, 0);
    wire_free(&w);

    wire_init(&w);
    wire_text(&w, WS_OP_TEXT, false, "\xF0\x9F");
    wire_text(&w, WS_OP_CONT, false, "\x98");
    wire_text(&w, WS_OP_CONT, true, "");
    expect_stream(&w, 1024, AW_EUTF8, 2);
    wire_free(&w);
}

static void test_binary_not_validated_and_state_resets(void **state)
{
    struct wire w;
    (void)state;

    wire_init(&w);
    wire_text(&w, WS_OP_BINARY, true, "\xFF\xC0\x80");
    wire_text(&w, WS_OP_BINARY, false, "\xE2");
    wire_text(&w, WS_OP_CONT, true, "A");
    wire_text(&w, WS_OP_TEXT, false, "\xE2");
    wire_text(&w, WS_OP_CONT, true, "\x82\xAC");
    wire_text(&w, WS_OP_TEXT, true, "a"); /* starts clean after the euro sign */
    wire_text(&w, WS_OP_BINARY, true, "\xED\xA0\x80");
    wire_text(&w, WS_OP_TEXT, true, "\xC3\xA9");
    expect_stream(&w, 1024, 0, 8);
    wire_free(&w);
}

/* ---- message size ---- */

static void test_too_big_by_header(void **state)
{
    static const struct {
        const char *bytes;
        size_t n;
    } heads[] = {
        {"\x81\xE5", 2},                                  /* 101 */
        {"\x82\xFE\x03\xE8", 4},                          /* 1000 */
        {"\x82\xFF\x00\x00\x01\x00\x00\x00\x00\x00", 10}, /* 2^40 */
        {"\x82\xFF\x7F\xFF\xFF\xFF\xFF\xFF\xFF\xFF", 10}, /* 2^63 - 1 */
        {"\x01\xE5", 2},                                  /* first fragment */
    };
    uint16_t code;
    (void)state;

    for (size_t i = 0; i < AW_ARRAY_LEN(heads); i++) {
        code = 0;
        assert_int_equal(parse_bytes(heads[i].bytes, heads[i].n, 100, true, &code), AW_ETOOBIG);
        assert_int_equal(code, WS_CLOSE_TOO_BIG);
    }
    /* exactly the limit: wait for the rest, then accept */
    assert_int_equal(parse_bytes("\x81\xE4", 2, 100, true, &code), AW_EAGAIN);
    assert_int_equal(code, 0);
    uint8_t payload[100];
    struct wire w;
    memset(payload, 'z', sizeof(payload));
    wire_init(&w);
    wire_frame(&w, WS_OP_TEXT, true, payload, 100);
    expect_stream(&w, 100, 0, 1);
    wire_free(&w);
    wire_init(&w);
    wire_frame(&w, WS_OP_TEXT, true, payload, 100);
    expect_stream(&w, 99, AW_ETOOBIG, 0);
    wire_free(&w);
}

static void test_too_big_across_fragments(void **state)
{
    struct wire w;
    struct conn c;
    uint8_t head[2];
    (void)state;

    wire_init(&w);
    wire_text(&w, WS_OP_TEXT, false, "123456");
    wire_text(&w, WS_OP_CONT, false, "7890");
    wire_text(&w, WS_OP_CONT, true, "!");
    expect_stream(&w, 10, AW_ETOOBIG, 2);
    wire_free(&w);

    /* decided from the continuation's header alone, before its mask key */
    wire_init(&w);
    wire_text(&w, WS_OP_TEXT, false, "123456");
    wire_text(&w, WS_OP_CONT, false, "7890");
    conn_init(&c, 10, true, w.n + sizeof(head));
    conn_feed(&c, w.b, w.n);
    assert_int_equal(c.ngot, 2);
    head[0] = 0x80, head[1] = 0x81; /* CONT, FIN, masked, 1 byte; no mask key yet */
    assert_int_equal(conn_feed(&c, head, 2), AW_ETOOBIG);
    assert_int_equal(c.err_close, WS_CLOSE_TOO_BIG);
    conn_free(&c);
    wire_free(&w);

    /* exactly the limit across fragments; the count restarts per message */
    wire_init(&w);
    wire_text(&w, WS_OP_TEXT, false, "123456");
    wire_text(&w, WS_OP_CONT, true, "7890");
    wire_text(&w, WS_OP_BINARY, false, "1234567890");
    wire_text(&w, WS_OP_CONT, true, "");
    wire_text(&w, WS_OP_TEXT, true, "1234567890");
    wire_text(&w, WS_OP_BINARY, false, "12345");
    wire_text(&w, WS_OP_CONT, true, "678901");
    expect_stream(&w, 10, AW_ETOOBIG, 6);
    wire_free(&w);
}

static void test_control_not_counted_in_message(void **state)
{
    uint8_t ping[125];
    struct wire w;
    (void)state;

    memset(ping, 'p', sizeof(ping));
    wire_init(&w);
    wire_text(&w, WS_OP_TEXT, false, "12345678");
    wire_frame(&w, WS_OP_PING, true, ping, sizeof(ping));
    wire_text(&w, WS_OP_CONT, true, "90");
    wire_frame(&w, WS_OP_PONG, true, ping, sizeof(ping));
    expect_stream(&w, 10, 0, 4);
    wire_free(&w);
}

static void test_zero_limit(void **state)
{
    struct wire w;
    (void)state;

    wire_init(&w);
    wire_text(&w, WS_OP_TEXT, true, "");
    wire_text(&w, WS_OP_PING, true, "p");
    wire_text(&w, WS_OP_TEXT, true, "x");
    expect_stream(&w, 0, AW_ETOOBIG, 2);
    wire_free(&w);
}

/* ---- close frames ---- */

static int parse_close(const void *payload, size_t n, ws_frame_t *f, uint16_t *code, uint8_t *buf)
{
    ws_parser_t p;
    size_t used, total;

    total = ws_client_frame(buf, WS_OP_CLOSE, true, 0, rfc_mask, payload, n);
    ws_parser_init(&p, 1024, true);
    return ws_parse(&p, buf, total, f, &used, code);
}

static void test_close_empty_and_code_only(void **state)
{
    uint8_t buf[WS_MAX_HEADER + 125];
    ws_frame_t f;
    uint16_t code = 99;
    (void)state;

    assert_int_equal(parse_close(NULL, 0, &f, &code, buf), AW_OK);
    assert_int_equal(code, 0);
    assert_int_equal(f.opcode, WS_OP_CLOSE);
    assert_int_equal(f.close_code, WS_CLOSE_NO_STATUS);
    assert_int_equal(f.close_reason_len, 0);
    assert_null(f.payload);
    assert_int_equal(f.len, 0);

    assert_int_equal(parse_close("\x03\xE8", 2, &f, &code, buf), AW_OK);
    assert_int_equal(f.close_code, WS_CLOSE_NORMAL);
    assert_int_equal(f.close_reason_len, 0);
    assert_int_equal(f.len, 2);

    assert_int_equal(parse_close("\x0F\xA1token expired", 15, &f, &code, buf), AW_OK);
    assert_int_equal(f.close_code, WS_CLOSE_TOKEN_EXPIRED);
    assert_int_equal(f.close_reason_len, 13);
    assert_memory_equal(f.close_reason, "token expired", 13);
    assert_ptr_equal(f.close_reason, (const char *)f.payload + 2);

    assert_int_equal(parse_close("\x03\xE9\xCE\xBA\xE1\xBD\xB9", 7, &f, &code, buf), AW_OK);
    assert_int_equal(f.close_code, WS_CLOSE_GOING_AWAY);
    assert_int_equal(f.close_reason_len, 5);
}

static bool ref_close_code_valid(unsigned c)
{
    if (c >= 3000 && c <= 4999)
        return true;
    switch (c) {
    case 1000:
    case 1001:
    case 1002:
    case 1003:
    case 1007:
    case 1008:
    case 1009:
    case 1010:
    case 1011:
        return true;
    }
    return false;
}

static void test_close_codes_all(void **state)
{
    uint8_t buf[WS_MAX_HEADER + 125];
    ws_frame_t f;
    uint16_t code;
    (void)state;

    for (unsigned c = 0; c <= 0xFFFF; c++) {
        uint8_t pl[2] = {(uint8_t)(c >> 8), (uint8_t)c};
        bool ok = ref_close_code_valid(c);
        assert_int_equal(ws_close_code_valid((uint16_t)c), ok);
        code = 99;
        assert_int_equal(parse_close(pl, 2, &f, &code, buf), ok ? AW_OK : AW_EPROTO);
        assert_int_equal(code, ok ? 0 : WS_CLOSE_PROTOCOL);
        if (ok)
            assert_int_equal(f.close_code, c);
    }
    /* the named ones, spelled out */
    assert_false(ws_close_code_valid(1004));
    assert_false(ws_close_code_valid(WS_CLOSE_NO_STATUS));
    assert_false(ws_close_code_valid(1006));
    assert_false(ws_close_code_valid(1015));
    assert_false(ws_close_code_valid(999));
    assert_false(ws_close_code_valid(2999));
    assert_false(ws_close_code_valid(5000));
    assert_true(ws_close_code_valid(WS_CLOSE_SLOW_CONSUMER));
}

static void test_close_length_one(void **state)
{
    uint8_t buf[WS_MAX_HEADER + 125];
    ws_frame_t f;
    uint16_t code = 0;
    (void)state;

    assert_int_equal(parse_close("\x03", 1, &f, &code, buf), AW_EPROTO);
    assert_int_equal(code, WS_CLOSE_PROTOCOL);
    /* the byte after the frame would complete code 1000; it must not be read */
    assert_int_equal(parse_bytes("\x88\x01\x03\xE8", 4, 1024, false, &code), AW_EPROTO);
    assert_int_equal(code, WS_CLOSE_PROTOCOL);
}

static void test_close_bad_reason(void **state)
{
    static const char *const bad[] = {"\xFF",         "ok\xC0\x80",       "\xE2\x82",
                                      "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x80"};
    uint8_t buf[WS_MAX_HEADER + 125], pl[125];
    ws_frame_t f;
    uint16_t code;
    (void)state;

    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++) {
        size_t n = strlen(bad[i]);
        pl[0] = 0x03, pl[1] = 0xE8;
        memcpy(pl + 2, bad[i], n);
        code = 0;
        assert_int_equal(parse_close(pl, 2 + n, &f, &code, buf), AW_EUTF8);
        assert_int_equal(code, WS_CLOSE_INVALID_UTF8);
    }
    /* a bad code wins over a bad reason: both are errors, 1002 first */
    assert_int_equal(parse_close("\x03\xED\xFF", 3, &f, &code, buf), AW_EPROTO);
}

static void test_close_payload(void **state)
{
    uint8_t out[130], buf[WS_MAX_HEADER + 130];
    char reason[300];
    ws_frame_t f;
    uint16_t code;
    (void)state;

    memset(out, 0xEE, sizeof(out));
    assert_int_equal(ws_close_payload(out, WS_CLOSE_NORMAL, "bye"), 5);
    assert_memory_equal(out,
                        "\x03\xE8"
                        "bye",
                        5);
    assert_int_equal(ws_close_payload(out, WS_CLOSE_SLOW_CONSUMER, NULL), 2);
    assert_memory_equal(out, "\x0F\xA3", 2);
    assert_int_equal(ws_close_payload(out, WS_CLOSE_TOO_BIG, ""), 2);
    assert_memory_equal(out, "\x03\xF1", 2);

    /* 123 bytes of reason fit exactly; more is cut to 125 in all */
    memset(reason, 'r', sizeof(reason));
    reason[123] = '\0';
    memset(out, 0xEE, sizeof(out));
    assert_int_equal(ws_close_payload(out, WS_CLOSE_POLICY, reason), 125);
    assert_memory_equal(out + 2, reason, 123);
    assert_int_equal(out[125], 0xEE);
    reason[123] = 'r';
    reason[299] = '\0';
    memset(out, 0xEE, sizeof(out));
    assert_int_equal(ws_close_payload(out, WS_CLOSE_POLICY, reason), 125);
    assert_memory_equal(out + 2, reason, 123);
    assert_int_equal(out[125], 0xEE);

    /* a cut never splits a UTF-8 character */
    memset(reason, 'a', sizeof(reason));
    memcpy(reason + 121,
           "\xE2\x82\xAC"
           "b",
           5); /* euro at 121..123 */
    assert_int_equal(ws_close_payload(out, WS_CLOSE_NORMAL, reason), 2 + 121);
    assert_int_equal(parse_close(out, 2 + 121, &f, &code, buf), AW_OK);
    memset(reason, 'a', sizeof(reason));
    memcpy(reason + 120,
           "\xE2\x82\xAC"
           "b",
           5); /* euro at 120..122 fits */
    assert_int_equal(ws_close_payload(out, WS_CLOSE_NORMAL, reason), 2 + 123);
    assert_memory_equal(out + 2 + 120, "\xE2\x82\xAC", 3);
    assert_int_equal(parse_close(out, 125, &f, &code, buf), AW_OK);
    memset(reason, 'a', sizeof(reason));
    memcpy(reason + 120, "\xF0\x9F\x98\x80", 5); /* emoji at 120..123 */
    assert_int_equal(ws_close_payload(out, WS_CLOSE_NORMAL, reason), 2 + 120);
    assert_int_equal(parse_close(out, 2 + 120, &f, &code, buf), AW_OK);
}

/* ---- handshake ---- */

static void test_accept_key(void **state)
{
    char out[29];
    (void)state;

    /* RFC 6455 section 1.3 */
    memset(out, 'X', sizeof(out));
    assert_int_equal(ws_accept_key(out, "dGhlIHNhbXBsZSBub25jZQ==", 24), AW_OK);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_int_equal(ws_accept_key(out, "x3JJHMbDL1EzLkh9GBhXDw==", 24), AW_OK);
    assert_string_equal(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
    /* key_len counts, not the NUL */
    assert_int_equal(ws_accept_key(out, "wDqumtseNBJdhkihL6PW7w==trailing", 24), AW_OK);
    assert_string_equal(out, "0FFP+2nmNIf/h+4BP36k9uzrYGk=");
}

static void test_accept_key_bad(void **state)
{
    static const char *const bad[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ",    /* 22: unpadded */
        "dGhlIHNhbXBsZSBub25jZQ=",   /* 23 */
        "dGhlIHNhbXBsZSBub25jZQ===", /* 25 */
        "AAAAAAAAAAAAAAAAAAAAAAAA",  /* 24 characters but 18 bytes */
        "AAAAAAAAAAAAAAAAAAAAAAA=",  /* 17 bytes */
        "dGhlIHNhbXBsZSBub25jZR==",  /* non-zero trailing bits */
        "dGhlIHNhbXBsZSBub25jZ!==",  /* bad character */
        "dGhlIHNhbXBsZSBub25-ZQ==",  /* URL alphabet */
        " dGhlIHNhbXBsZSBub25jZQ=",  /* whitespace */
        "dGhlIHNhbXBsZSBub25jZQ= ",
        "dGhlIHNhbXBs ZSBub25jZQ=",
        "dGhlIHNhbXBsZSBub25jZ===",
        "========================",
        "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==", /* 48 */
    };
    char out[29];
    (void)state;

    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++)
        assert_int_equal(ws_accept_key(out, bad[i], strlen(bad[i])), AW_EMALFORMED);
    assert_int_equal(ws_accept_key(out, "dGhlIHNhbXBsZSBub25jZQ==", 23), AW_EMALFORMED);
    assert_int_equal(ws_accept_key(out, "dGhlIHNhbXBsZSBub25j\0Q==", 24), AW_EMALFORMED);
    assert_int_equal(ws_accept_key(out, NULL, 0), AW_EMALFORMED);
}

/* ---- masking ---- */

static void test_mask_every_offset(void **state)
{
    static const uint8_t mask[4] = {0x01, 0x80, 0x5A, 0xFF};
    static const size_t offsets[] = {0, 1, 2, 3, 4, 5, 6, 7, 1001, SIZE_MAX};
    uint8_t buf[64], orig[64];
    (void)state;

    for (size_t i = 0; i < sizeof(orig); i++)
        orig[i] = (uint8_t)(i * 37 + 11);
    for (size_t align = 0; align < 8; align++) {
        for (size_t o = 0; o < AW_ARRAY_LEN(offsets); o++) {
            for (size_t len = 0; len <= 40; len++) {
                memcpy(buf, orig, sizeof(buf));
                ws_mask(buf + align, len, mask, offsets[o]);
                for (size_t k = 0; k < sizeof(buf); k++) {
                    uint8_t want = orig[k];
                    if (k >= align && k < align + len)
                        want ^= mask[(offsets[o] % 4 + (k - align)) % 4];
                    assert_int_equal(buf[k], want);
                }
                ws_mask(buf + align, len, mask, offsets[o]);
                assert_memory_equal(buf, orig, sizeof(buf));
            }
        }
    }
}

/* Unmasking in pieces, each continuing at the previous one's offset, equals
 * unmasking at once: this is how a caller would unmask streamed payload. */
static void test_mask_in_pieces(void **state)
{
    uint8_t whole[1000], pieces[1000];
    uint32_t seed = 12345;
    (void)state;

    for (int round = 0; round < 50; round++) {
        uint8_t mask[4];
        size_t off = 0;
        for (size_t i = 0; i < sizeof(whole); i++)
            whole[i] = pieces[i] = (uint8_t)rng_next(&seed);
        for (int i = 0; i < 4; i++)
            mask[i] = (uint8_t)rng_next(&seed);
        ws_mask(whole, sizeof(whole), mask, 0);
        while (off < sizeof(pieces)) {
            size_t k = rng_next(&seed) % 30;
            if (k > sizeof(pieces) - off)
                k = sizeof(pieces) - off;
            ws_mask(pieces + off, k, mask, off);
            off += k;
        }
        assert_memory_equal(whole, pieces, sizeof(whole));
    }
}

static void test_client_frame_rsv_and_mask(void **state)
{
    uint8_t out[WS_MAX_HEADER + 200], payload[200];
    size_t n;
    (void)state;

    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)i;
    n = ws_client_frame(out, WS_OP_BINARY, false, 5, rfc_mask, payload, 200);
    assert_int_equal(n, 8 + 200);
    assert_int_equal(out[0], 0x52);
    assert_int_equal(out[1], 0xFE);
    for (size_t i = 0; i < 200; i++)
        assert_int_equal(out[8 + i], payload[i] ^ rfc_mask[i % 4]);
}

/* ---- streams ---- */

/* A mixed conversation: fragments, control frames in between, all length
 * classes, and multi-byte text split across fragments. */
static void build_conversation(struct wire *w, uint8_t *big, size_t big_len)
{
    const char *kosme = "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5";

    wire_init(w);
    wire_raw(w, rfc_masked_hello, sizeof(rfc_masked_hello));
    w->want[w->nwant++] = (struct rec){WS_OP_TEXT, true, 5, dup_bytes("Hello", 5), 0};
    wire_frame(w, WS_OP_TEXT, false, kosme, 4);
    wire_text(w, WS_OP_PING, true, "are you there");
    wire_frame(w, WS_OP_CONT, false, kosme + 4, 5);
    wire_frame(w, WS_OP_CONT, true, kosme + 9, 2);
    wire_frame(w, WS_OP_BINARY, true, big, 0);
    wire_frame(w, WS_OP_BINARY, true, big, 125);
    wire_frame(w, WS_OP_BINARY, false, big, 126);
    wire_text(w, WS_OP_PONG, true, "");
    wire_frame(w, WS_OP_CONT, true, big + 126, 300);
    wire_frame(w, WS_OP_TEXT, true, big, 65535);
    wire_frame(w, WS_OP_BINARY, true, big, big_len);
    wire_frame(w, WS_OP_CLOSE, true,
               "\x03\xE8"
               "done",
               6);
}

static void test_conversation_splits(void **state)
{
    size_t big_len = 65536;
    uint8_t *big = malloc(big_len);
    struct wire w;
    (void)state;

    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)('a' + i % 26); /* also valid text */
    build_conversation(&w, big, big_len);
    for (uint32_t seed = 0; seed < 60; seed++) {
        struct conn c;
        conn_init(&c, 1 << 17, true, w.n);
        conn_feed_split(&c, &w, seed, seed < 30 ? 7 : 5000);
        assert_int_equal(c.err, 0);
        assert_recs_equal(c.got, c.ngot, w.want, w.nwant);
        assert_int_equal(c.got[c.ngot - 1].close_code, WS_CLOSE_NORMAL);
        assert_int_equal(c.have, 0);
        if (seed == 0)
            assert_int_equal(c.eagains, 1);
        if (seed == 1)
            assert_int_equal(c.eagains, w.n); /* every byte ends in AW_EAGAIN */
        conn_free(&c);
    }
    wire_free(&w);
    free(big);
}

static void test_one_frame_per_call(void **state)
{
    uint8_t buf[64];
    ws_parser_t p;
    ws_frame_t f;
    size_t n = 0, used;
    (void)state;

    n += ws_client_frame(buf + n, WS_OP_TEXT, true, 0, rfc_mask, (const uint8_t *)"one", 3);
    n += ws_client_frame(buf + n, WS_OP_TEXT, true, 0, rfc_mask, (const uint8_t *)"two", 3);
    ws_parser_init(&p, 1024, true);
    assert_int_equal(ws_parse(&p, buf, n, &f, &used, NULL), AW_OK);
    assert_int_equal(used, n / 2);
    assert_memory_equal(f.payload, "one", 3);
    assert_int_equal(ws_parse(&p, buf + used, n - used, &f, &used, NULL), AW_OK);
    assert_int_equal(used, n / 2);
    assert_memory_equal(f.payload, "two", 3);
}

static void test_caller_bugs(void **state)
{
    uint8_t buf[8] = {0x81, 0x80, 1, 2, 3, 4};
    ws_parser_t p;
    ws_frame_t f;
    size_t used = 99;
    uint16_t code = 0;
    (void)state;

    ws_parser_init(&p, 1024, true);
    assert_int_equal(ws_parse(NULL, buf, 6, &f, &used, &code), AW_EINVAL);
    assert_int_equal(used, 0);
    assert_int_equal(code, WS_CLOSE_INTERNAL);
    assert_int_equal(ws_parse(&p, buf, 6, NULL, &used, NULL), AW_EINVAL);
    assert_int_equal(ws_parse(&p, buf, 6, &f, NULL, NULL), AW_EINVAL);
    assert_int_equal(ws_parse(&p, NULL, 6, &f, &used, NULL), AW_EINVAL);
    assert_int_equal(ws_parse(&p, NULL, 0, &f, &used, NULL), AW_EAGAIN);
    assert_int_equal(ws_parse(&p, buf, 6, &f, &used, NULL), AW_OK);
}

/* Invalid UTF-8 in the part of a text frame that has arrived fails at once,
 * before the rest of the frame; valid prefixes wait (AW_EAGAIN) and the whole
 * frame then parses; compressed payloads are not checked here. */
static void test_utf8_fail_fast_mid_frame(void **state)
{
    (void)state;
    static const uint8_t mask[4] = {0x11, 0x22, 0x33, 0x44};
    uint8_t bad[21] = {0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83,
                       0xCE, 0xBC, 0xCE, 0xB5, 0xF4, 0x90};
    memset(bad + 13, 'a', 8);
    uint8_t buf[64];
    size_t n = ws_client_frame(buf, WS_OP_TEXT, true, 0, mask, bad, sizeof bad);
    ws_parser_t p;
    ws_frame_t f;
    size_t used;
    uint16_t code;
    ws_parser_init(&p, 1024, true);
    /* header + 11 valid payload bytes: wait */
    assert_int_equal(ws_parse(&p, buf, 6 + 11, &f, &used, &code), AW_EAGAIN);
    /* + F4 90 (above U+10FFFF): fail now, frame incomplete */
    assert_int_equal(ws_parse(&p, buf, 6 + 13, &f, &used, &code), AW_EUTF8);
    assert_int_equal(code, WS_CLOSE_INVALID_UTF8);

    /* a valid text arriving byte by byte, then whole */
    const char *good = "a\xce\xba\xe2\x82\xac\xf0\x9f\x98\x80"
                       "b";
    n = ws_client_frame(buf, WS_OP_TEXT, true, 0, mask, (const uint8_t *)good, strlen(good));
    ws_parser_init(&p, 1024, true);
    for (size_t k = 0; k < n; k++)
        assert_int_equal(ws_parse(&p, buf, k, &f, &used, &code), AW_EAGAIN);
    assert_int_equal(ws_parse(&p, buf, n, &f, &used, &code), AW_OK);
    assert_memory_equal(f.payload, good, strlen(good));

    /* a continuation keeps the message's state: E2 82 | AC is valid split */
    ws_parser_init(&p, 1024, true);
    const uint8_t part1[] = {'x', 0xE2, 0x82};
    n = ws_client_frame(buf, WS_OP_TEXT, false, 0, mask, part1, sizeof part1);
    assert_int_equal(ws_parse(&p, buf, n, &f, &used, &code), AW_OK);
    const uint8_t part2[] = {0xAC, 'y', 0xFF, 'z'};
    n = ws_client_frame(buf, WS_OP_CONT, true, 0, mask, part2, sizeof part2);
    assert_int_equal(ws_parse(&p, buf, 6 + 2, &f, &used, &code), AW_EAGAIN);
    assert_int_equal(ws_parse(&p, buf, 6 + 3, &f, &used, &code), AW_EUTF8);

    /* with permessage-deflate, a compressed payload is not UTF-8 checked */
    ws_parser_init(&p, 1024, true);
    p.allow_rsv1 = true;
    n = ws_client_frame(buf, WS_OP_TEXT, true, 4, mask, bad, sizeof bad);
    assert_int_equal(ws_parse(&p, buf, 6 + 13, &f, &used, &code), AW_EAGAIN);
    assert_int_equal(ws_parse(&p, buf, n, &f, &used, &code), AW_OK);
    assert_true(f.rsv1 && f.compressed);
    /* RSV1 is refused on control and continuation frames, and without deflate */
    n = ws_client_frame(buf, WS_OP_PING, true, 4, mask, NULL, 0);
    assert_int_equal(ws_parse(&p, buf, n, &f, &used, &code), AW_EPROTO);
    ws_parser_init(&p, 1024, true);
    n = ws_client_frame(buf, WS_OP_TEXT, true, 4, mask, (const uint8_t *)"a", 1);
    assert_int_equal(ws_parse(&p, buf, n, &f, &used, &code), AW_EPROTO);
}

/* Stream mode by hand: a 1 MiB text frame in 1000-byte pieces, in place;
 * bad UTF-8 in the middle fails in the piece that carries it; misuse of
 * ws_payload is refused. */
static void test_stream_mode_by_hand(void **state)
{
    (void)state;
    const size_t n = 1 << 20;
    uint8_t *text = malloc(n), *frame = malloc(n + WS_MAX_HEADER);
    const uint8_t mask[4] = {1, 2, 3, 4};
    assert_non_null(text);
    assert_non_null(frame);
    for (size_t i = 0; i < n; i++)
        text[i] = (uint8_t)('a' + i % 26);
    memcpy(text + n / 2, "\xc3\xa9", 2); /* é across no piece boundary */
    for (int bad = 0; bad < 2; bad++) {
        if (bad)
            text[700123] = 0xff;
        size_t total = ws_client_frame(frame, WS_OP_TEXT, true, 0, mask, text, n);
        ws_parser_t p;
        ws_frame_t f;
        size_t used;
        uint16_t code;
        ws_parser_init(&p, n, true);
        p.stream = true;
        assert_int_equal(ws_payload(&p, frame, frame, 1, &f, &code), AW_EINVAL);
        assert_int_equal(ws_parse(&p, frame, 3000, &f, &used, &code), WS_PAYLOAD);
        assert_int_equal(code, 0);
        assert_int_equal(used, 14);
        assert_int_equal(f.len, n);
        assert_int_equal(f.opcode, WS_OP_TEXT);
        assert_int_equal(ws_parse(&p, frame + used, 100, &f, &used, &code), AW_EINVAL);
        uint8_t *payload = frame + 14;
        size_t off = 0;
        int rc = AW_EAGAIN;
        while (off < n) {
            size_t k = n - off < 1000 ? n - off : 1000;
            rc = ws_payload(&p, payload + off, payload + off, k, &f, &code);
            if (rc != AW_EAGAIN)
                break;
            off += k;
        }
        if (bad) {
            assert_int_equal(rc, AW_EUTF8);
            assert_int_equal(code, WS_CLOSE_INVALID_UTF8);
            assert_int_equal(off / 1000, 700123 / 1000); /* in the piece that carried it */
            continue;
        }
        assert_int_equal(rc, AW_OK);
        assert_int_equal(f.len, n);
        assert_true(f.fin);
        assert_memory_equal(payload, text, n);
        assert_int_equal(ws_payload(&p, payload, payload, 1, &f, &code), AW_EINVAL);
        /* the parser goes on with the next frame */
        total = ws_client_frame(frame, WS_OP_BINARY, true, 0, mask, text, 10);
        assert_int_equal(ws_parse(&p, frame, total, &f, &used, &code), AW_OK);
        assert_memory_equal(f.payload, text, 10);
    }
    free(text);
    free(frame);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_unmasked_hello),
        cmocka_unit_test(test_rfc_masked_hello_whole),
        cmocka_unit_test(test_rfc_masked_hello_prefixes),
        cmocka_unit_test(test_rfc_masked_hello_bytewise),
        cmocka_unit_test(test_rfc_masked_hello_random_splits),
        cmocka_unit_test(test_rfc_client_frame_bytes),
        cmocka_unit_test(test_rfc_fragments_ping_pong),
        cmocka_unit_test(test_rfc_256_and_64k),
        cmocka_unit_test(test_lengths_masked),
        cmocka_unit_test(test_frame_header_encodings),
        cmocka_unit_test(test_frame_header_round_trip),
        cmocka_unit_test(test_non_minimal_lengths),
        cmocka_unit_test(test_non_minimal_whole_frame),
        cmocka_unit_test(test_reserved_bits),
        cmocka_unit_test(test_reserved_opcodes),
        cmocka_unit_test(test_known_opcodes_accepted),
        cmocka_unit_test(test_unmasked_rejected),
        cmocka_unit_test(test_masked_accepted_when_not_expected),
        cmocka_unit_test(test_control_too_long),
        cmocka_unit_test(test_control_fragmented),
        cmocka_unit_test(test_continuation_without_message),
        cmocka_unit_test(test_new_message_while_open),
        cmocka_unit_test(test_fragmented_messages),
        cmocka_unit_test(test_interleaved_control),
        cmocka_unit_test(test_utf8_split_every_position),
        cmocka_unit_test(test_utf8_invalid_across_fragments),
        cmocka_unit_test(test_utf8_fail_fast),
        cmocka_unit_test(test_utf8_incomplete_at_fin),
        cmocka_unit_test(test_binary_not_validated_and_state_resets),
        cmocka_unit_test(test_too_big_by_header),
        cmocka_unit_test(test_too_big_across_fragments),
        cmocka_unit_test(test_control_not_counted_in_message),
        cmocka_unit_test(test_zero_limit),
        cmocka_unit_test(test_close_empty_and_code_only),
        cmocka_unit_test(test_close_codes_all),
        cmocka_unit_test(test_close_length_one),
        cmocka_unit_test(test_close_bad_reason),
        cmocka_unit_test(test_close_payload),
        cmocka_unit_test(test_accept_key),
        cmocka_unit_test(test_accept_key_bad),
        cmocka_unit_test(test_mask_every_offset),
        cmocka_unit_test(test_mask_in_pieces),
        cmocka_unit_test(test_client_frame_rsv_and_mask),
        cmocka_unit_test(test_conversation_splits),
        cmocka_unit_test(test_one_frame_per_call),
        cmocka_unit_test(test_caller_bugs),
        cmocka_unit_test(test_utf8_fail_fast_mid_frame),
        cmocka_unit_test(test_stream_mode_by_hand),
    };
    int failed = cmocka_run_group_tests_name("ws", tests, NULL, NULL);
    g_stream = true;
    return failed + cmocka_run_group_tests_name("ws stream mode", tests, NULL, NULL);
}
