/* fuzz_http.c -- libFuzzer target for the HTTP/1.1 request reader (src/http.c)
 * and its helpers (http_header, http_list_has, http_query_get,
 * http_path_decode).
 *
 * Input: byte 0 configures the reader (bits 0-1: max_head, bits 2-3:
 * max_body, bit 4: many small pieces instead of one split point, bit 5: move
 * the reader to a new address between calls, as a caller may), bytes 1-2 seed
 * the split points, the rest is what a client sends on one connection
 * (possibly several pipelined requests).
 *
 * The stream is read twice, whole and in pieces, looping over pipelined
 * requests as session.c does. Invariants:
 *  - consumed <= len; AW_EAGAIN consumes everything it was given;
 *  - only the documented results come back;
 *  - both runs give the same requests (method, path, query, headers, body,
 *    flags) and both end the same way (need more bytes, or an error; the
 *    error code itself may differ: a head limit can be seen early in one
 *    and a syntax error first in the other);
 *  - every request is consistent: strings inside the reader's buffer and
 *    NUL-terminated, limits kept, header names are tokens, values trimmed,
 *    path without '?' or '#', upgrade only with Upgrade and Connection:
 *    upgrade; http_header, http_list_has, http_query_get and
 *    http_path_decode agree with simple reference versions.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "fuzz_common.h"
#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const size_t head_limits[4] = {0, 64, 256, 1024}; /* 0: the default, 16384 */
static const size_t body_limits[4] = {0, 1, 16, 300};    /* 0: the default, 1 MiB */

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

static bool ieq(const char *a, const char *b)
{
    while (*a && lower(*a) == lower(*b))
        a++, b++;
    return lower(*a) == lower(*b);
}

static bool ieqn(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (lower(a[i]) != lower(b[i]))
            return false;
    return true;
}

static bool is_token_char(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

/* Reference http_list_has: comma-separated items, SP/HTAB trimmed. */
static bool ref_list_has(const char *v, const char *tok)
{
    size_t tl = strlen(tok);
    while (true) {
        const char *e = strchr(v, ',');
        if (!e)
            e = v + strlen(v);
        const char *a = v, *b = e;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if ((size_t)(b - a) == tl && ieqn(a, tok, tl))
            return true;
        if (!*e)
            return false;
        v = e + 1;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes one character of s[*i..n): the byte, or -1 for a bad escape or a
 * NUL. */
static int ref_decode_one(const char *s, size_t n, size_t *i, bool plus)
{
    if (s[*i] == '%') {
        if (n - *i < 3 || hexval(s[*i + 1]) < 0 || hexval(s[*i + 2]) < 0)
            return -1;
        int c = hexval(s[*i + 1]) * 16 + hexval(s[*i + 2]);
        *i += 3;
        return c == 0 ? -1 : c;
    }
    char c = s[(*i)++];
    if (c == '\0')
        return -1;
    return plus && c == '+' ? ' ' : (unsigned char)c;
}

/* Reference http_query_get. */
static int ref_query_get(const char *q, const char *name, char *out, size_t outlen)
{
    if (outlen == 0)
        return AW_ETOOBIG;
    out[0] = '\0';
    while (*q) {
        size_t plen = strcspn(q, "&");
        const char *eq = memchr(q, '=', plen);
        size_t klen = eq ? (size_t)(eq - q) : plen;
        if (klen > 0) {
            char *key = malloc(klen + 1);
            FUZZ_CHECK(key != NULL);
            size_t i = 0, k = 0;
            bool ok = true;
            while (i < klen && ok) {
                int c = ref_decode_one(q, klen, &i, true);
                if (c < 0)
                    ok = false;
                else
                    key[k++] = (char)c;
            }
            key[k] = '\0';
            bool match = ok && strcmp(key, name) == 0;
            free(key);
            if (match) {
                const char *v = eq ? eq + 1 : q + plen;
                size_t vlen = (size_t)(q + plen - v), j = 0, o = 0;
                while (j < vlen) {
                    int c = ref_decode_one(v, vlen, &j, true);
                    if (c < 0 || o + 1 >= outlen) {
                        out[0] = '\0';
                        return c < 0 ? AW_EMALFORMED : AW_ETOOBIG;
                    }
                    out[o++] = (char)c;
                }
                out[o] = '\0';
                return 0;
            }
        }
        q += plen;
        if (*q)
            q++;
    }
    return AW_ENOTFOUND;
}

static bool in_buf(const http_reader_t *r, const char *s)
{
    if (!(s >= r->_buf && s < r->_buf + r->_cap))
        return false;
    /* NUL-terminated inside the buffer */
    return memchr(s, '\0', (size_t)(r->_buf + r->_cap - s)) != NULL;
}

static void check_helpers(const http_request_t *q)
{
    static const char *const names[] = {"token", "user_id", "since", "a", ""};
    static const size_t outlens[] = {1, 2, 8, 300};
    char out[300], want[300];

    /* query: fixed names and the first key of the query itself */
    char first[64];
    size_t fl = strcspn(q->query, "=&");
    if (fl >= sizeof(first))
        fl = sizeof(first) - 1;
    memcpy(first, q->query, fl);
    first[fl] = '\0';
    for (size_t i = 0; i <= AW_ARRAY_LEN(names); i++) {
        const char *name = i < AW_ARRAY_LEN(names) ? names[i] : first;
        for (size_t j = 0; j < AW_ARRAY_LEN(outlens); j++) {
            int rc = http_query_get(q->query, name, out, outlens[j]);
            int wrc = ref_query_get(q->query, name, want, outlens[j]);
            FUZZ_CHECK(rc == wrc);
            FUZZ_CHECK(strlen(out) < outlens[j]);
            if (rc == 0)
                FUZZ_CHECK(strcmp(out, want) == 0);
        }
    }

    /* path: out of place and in place, against the reference */
    size_t pl = strlen(q->path);
    char *dec = malloc(pl + 1), *inplace = (char *)fz_dup((const uint8_t *)q->path, pl + 1);
    char *ref = malloc(pl + 1);
    FUZZ_CHECK(dec && ref);
    int n = http_path_decode(dec, q->path, pl);
    size_t i = 0, o = 0;
    int wn = 0;
    while (i < pl) {
        int c = ref_decode_one(q->path, pl, &i, false);
        if (c < 0) {
            wn = AW_EMALFORMED;
            break;
        }
        ref[o++] = (char)c;
    }
    if (wn == 0)
        wn = (int)o;
    FUZZ_CHECK(n == wn);
    if (n >= 0) {
        FUZZ_CHECK((size_t)n <= pl && memcmp(dec, ref, (size_t)n) == 0 && dec[n] == '\0');
        FUZZ_CHECK(http_path_decode(inplace, inplace, pl) == n);
        FUZZ_CHECK(memcmp(inplace, ref, (size_t)n) == 0);
    }
    free(dec);
    free(inplace);
    free(ref);
}

static void check_request(const http_reader_t *r, const http_request_t *q, fz_rec_t *rec)
{
    size_t max_body = r->max_body;

    FUZZ_CHECK(q == &r->_req);
    FUZZ_CHECK(in_buf(r, q->method_name) && in_buf(r, q->path) && in_buf(r, q->query) &&
               in_buf(r, q->body));
    FUZZ_CHECK(strcmp(q->method_name, http_method_str(q->method)) == 0);
    FUZZ_CHECK(q->nheaders <= HTTP_MAX_HEADERS);
    FUZZ_CHECK(q->body_len <= max_body);
    FUZZ_CHECK(q->body + q->body_len < r->_buf + r->_cap && q->body[q->body_len] == '\0');
    FUZZ_CHECK(q->path[0] != '\0');
    if (q->method != HTTP_CONNECT) {
        FUZZ_CHECK(strpbrk(q->path, "?#") == NULL);
        FUZZ_CHECK(strchr(q->query, '#') == NULL);
    }
    for (size_t i = 0; i < q->nheaders; i++) {
        const char *name = q->headers[i].name, *value = q->headers[i].value;
        FUZZ_CHECK(in_buf(r, name) && in_buf(r, value));
        FUZZ_CHECK(name[0] != '\0');
        for (const char *c = name; *c; c++)
            FUZZ_CHECK(is_token_char(*c));
        size_t vl = strlen(value);
        if (vl) {
            FUZZ_CHECK(value[0] != ' ' && value[0] != '\t');
            FUZZ_CHECK(value[vl - 1] != ' ' && value[vl - 1] != '\t');
        }
        /* http_header finds the first header of that name */
        const char *first = NULL;
        for (size_t j = 0; j <= i && !first; j++)
            if (ieq(q->headers[j].name, name))
                first = q->headers[j].value;
        FUZZ_CHECK(http_header(q, name) == first);
        static const char *const toks[] = {"upgrade", "close", "keep-alive", "websocket"};
        for (size_t t = 0; t < AW_ARRAY_LEN(toks); t++)
            FUZZ_CHECK(http_list_has(value, toks[t]) == ref_list_has(value, toks[t]));
    }
    if (q->upgrade) {
        bool conn = false;
        for (size_t i = 0; i < q->nheaders; i++)
            if (ieq(q->headers[i].name, "connection") &&
                ref_list_has(q->headers[i].value, "upgrade"))
                conn = true;
        FUZZ_CHECK(conn && http_header(q, "upgrade") != NULL && q->method != HTTP_CONNECT);
    }
    check_helpers(q);

    fz_rec_u64(rec, 0xAA); /* a request */
    fz_rec_u64(rec, q->method);
    fz_rec_str(rec, q->method_name);
    fz_rec_str(rec, q->path);
    fz_rec_str(rec, q->query);
    fz_rec_u64(rec, q->nheaders);
    for (size_t i = 0; i < q->nheaders; i++) {
        fz_rec_str(rec, q->headers[i].name);
        fz_rec_str(rec, q->headers[i].value);
    }
    fz_rec_bytes(rec, q->body, q->body_len);
    fz_rec_u64(rec, q->upgrade);
    fz_rec_u64(rec, q->keep_alive);
    fz_rec_u64(rec, q->http_major);
    fz_rec_u64(rec, q->http_minor);
}

/* Reads s[0..n) in pieces (one piece when whole); records every request and
 * how the stream ended. */
static void run(const uint8_t *s, size_t n, size_t max_head, size_t max_body, int pieces, bool move,
                fz_rng_t *g, fz_rec_t *rec)
{
    http_reader_t *r = malloc(sizeof(*r));
    FUZZ_CHECK(r != NULL);
    http_reader_init(r, max_head, max_body);
    FUZZ_CHECK(r->max_head == (max_head ? max_head : 16384));
    FUZZ_CHECK(r->max_body == (max_body ? max_body : 1048576));

    size_t off = 0, single = n ? fz_rng_range(g, 0, n) : 0;
    int rc = AW_EAGAIN;
    bool failed = false;
    while (!failed) {
        size_t piece;
        if (pieces == 0)
            piece = n - off;
        else if (pieces == 1)
            piece = off < single ? single - off : n - off;
        else
            piece = fz_rng_range(g, 1, n - off < 24 ? (n - off ? n - off : 1) : 24);
        if (piece > n - off)
            piece = n - off;
        /* an exact-size copy: ASan sees any read past the piece */
        uint8_t *chunk = fz_dup(s + off, piece);
        size_t coff = 0;
        do {
            size_t used = 12345;
            http_request_t *req = (http_request_t *)1;
            size_t len = piece - coff;
            rc = http_feed(r, (const char *)chunk + coff, len, &used, &req);
            FUZZ_CHECK(used <= len);
            coff += used;
            if (rc == AW_OK) {
                FUZZ_CHECK(req != NULL);
                check_request(r, req, rec);
            } else {
                FUZZ_CHECK(req == NULL);
                if (rc == AW_EAGAIN) {
                    FUZZ_CHECK(used == len);
                } else {
                    FUZZ_CHECK(rc == AW_EPROTO || rc == AW_EHEADERS || rc == AW_ETOOBIG ||
                               rc == AW_EINVAL);
                    failed = true;
                }
            }
            if (move) {
                http_reader_t *r2 = malloc(sizeof(*r2));
                FUZZ_CHECK(r2 != NULL);
                memcpy(r2, r, sizeof(*r2));
                free(r);
                r = r2;
            }
        } while (rc == AW_OK);
        free(chunk);
        off += piece;
        if (off == n)
            break;
    }
    if (failed) {
        /* the reader is spent: it keeps saying so */
        size_t used = 1;
        http_request_t *req;
        FUZZ_CHECK(http_feed(r, "GET / HTTP/1.1\r\n\r\n", 18, &used, &req) == rc);
        FUZZ_CHECK(used == 0 && req == NULL);
    }
    fz_rec_u64(rec, 0xEE);
    fz_rec_u64(rec, failed);
    http_reader_dispose(r);
    free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    size_t max_head = head_limits[data[0] & 3], max_body = body_limits[(data[0] >> 2) & 3];
    int pieces = data[0] & 0x10 ? 2 : 1;
    bool move = data[0] & 0x20;
    const uint8_t *s = data + 3;
    size_t n = size - 3;
    fz_rng_t g;
    fz_rec_t whole = {0}, split = {0};

    fz_rng_seed(&g, (uint64_t)data[1] << 8 | data[2]);
    run(s, n, max_head, max_body, 0, false, &g, &whole);
    run(s, n, max_head, max_body, pieces, move, &g, &split);
    FUZZ_CHECK(fz_rec_eq(&whole, &split));
    fz_rec_free(&whole);
    fz_rec_free(&split);
    return 0;
}
