/* bigstr.c -- JSON documents whose long strings are not decoded (bigstr.h). */
#include "bigstr.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* \uXXXX at p (p[0] == '\\'); -1 when malformed. */
static long unicode_escape(const char *p, const char *end)
{
    if (end - p < 6 || p[1] != 'u')
        return -1;
    long v = 0;
    for (int i = 2; i < 6; i++) {
        int h = hexval(p[i]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

/* The end of the string literal starting at p (p[0] == '"'), just past its
 * closing quote, or NULL when the document ends first. A quote closes the
 * literal unless an odd number of backslashes precede it. */
static const char *literal_end(const char *p, const char *end)
{
    for (const char *x = p + 1;;) {
        const char *q = memchr(x, '"', (size_t)(end - x));
        if (!q)
            return NULL;
        size_t bs = 0;
        while (q - bs > p + 1 && q[-1 - (ptrdiff_t)bs] == '\\')
            bs++;
        if (bs % 2 == 0)
            return q + 1;
        x = q + 1;
    }
}

/* Does the 8-byte word hold a byte that needs a closer look: non-ASCII, a
 * control character or a backslash? */
static bool word_special(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t ctrl = (w - 0x20 * ones) & ~w;
    uint64_t bsl = w ^ (0x5C * ones);
    bsl = (bsl - ones) & ~bsl;
    return ((w | ctrl | bsl) & highs) != 0;
}

/* Would the plain parser accept the literal [p, q)? Escapes well formed,
 * no \u0000, surrogates paired, no raw control characters, valid UTF-8.
 * Plain ASCII goes eight bytes at a time. */
static bool literal_ok(const char *p, const char *q)
{
    const char *s = p + 1, *e = q - 1;
    while (s < e) {
        if (e - s >= 8) {
            uint64_t w;
            memcpy(&w, s, 8);
            if (!word_special(w)) {
                s += 8;
                continue;
            }
        }
        unsigned char c = (unsigned char)*s;
        if (c < 0x20)
            return false;
        if (c >= 0x80) { /* a run of non-ASCII bytes is whole characters */
            const char *r = s;
            while (r < e && (unsigned char)*r >= 0x80)
                r++;
            if (!utf8_valid((const uint8_t *)s, (size_t)(r - s)))
                return false;
            s = r;
            continue;
        }
        if (c != '\\') {
            s++;
            continue;
        }
        if (s + 1 >= e)
            return false;
        switch (s[1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            s += 2;
            continue;
        case 'u':
            break;
        default:
            return false;
        }
        long v = unicode_escape(s, e);
        if (v <= 0)
            return false; /* malformed, or \u0000 */
        s += 6;
        if (v >= 0xDC00 && v <= 0xDFFF)
            return false; /* a low surrogate alone */
        if (v >= 0xD800 && v <= 0xDBFF) {
            long lo = s < e && *s == '\\' ? unicode_escape(s, e) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF)
                return false;
            s += 6;
        }
    }
    return true;
}

static bool has_nul_escape(const char *p, const char *q)
{
    for (const char *s = p + 1; s < q - 1; s++) {
        if (*s != '\\')
            continue;
        if (unicode_escape(s, q) == 0)
            return true;
        s++;
    }
    return false;
}

static bool add_lit(bigstr_t *b, size_t off, size_t len)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        void *p = realloc(b->lit, cap * sizeof *b->lit);
        if (!p)
            return false;
        b->lit = p;
        b->cap = cap;
    }
    b->lit[b->n].off = off;
    b->lit[b->n].len = len;
    b->n++;
    return true;
}

static json_t *fail(json_error_t *err, const char *text)
{
    if (err) {
        memset(err, 0, sizeof *err);
        snprintf(err->text, sizeof err->text, "%s", text);
    }
    return NULL;
}

json_t *bigstr_loadb(bigstr_t *b, const char *buf, size_t len, size_t flags, json_error_t *err)
{
    b->src = buf;
    const char *end = buf + len;
    /* First pass: find long string values; most documents have none. */
    for (const char *p = memchr(buf, '"', len); p; p = memchr(p, '"', (size_t)(end - p))) {
        const char *q = literal_end(p, end);
        if (!q)
            break; /* unterminated: the parser says so */
        const char *after = q;
        while (after < end && (*after == ' ' || *after == '\t' || *after == '\n' || *after == '\r'))
            after++;
        bool value = after == end || *after != ':';
        if (value && (size_t)(q - p) >= BIGSTR_MIN) {
            if (!literal_ok(p, q))
                return fail(err, "invalid string (bad escape, control character or UTF-8)");
            if (!add_lit(b, (size_t)(p - buf), (size_t)(q - p)))
                return fail(err, "out of memory");
        } else if (has_nul_escape(p, q)) {
            return fail(err, "\\u0000 is not allowed");
        }
        p = q;
    }
    if (b->n == 0)
        return json_loadb(buf, len, flags, err);
    /* Second pass: the document with each long value as "\u0000<index>". */
    b->_buf = malloc(len + 1);
    if (!b->_buf)
        return fail(err, "out of memory");
    size_t w = 0, r = 0;
    for (size_t i = 0; i < b->n; i++) {
        memcpy(b->_buf + w, buf + r, b->lit[i].off - r);
        w += b->lit[i].off - r;
        /* fits: the literal is at least BIGSTR_MIN bytes, a placeholder far fewer */
        w += (size_t)snprintf(b->_buf + w, 32, "\"\\u0000%zu\"", i);
        r = b->lit[i].off + b->lit[i].len;
    }
    memcpy(b->_buf + w, buf + r, len - r);
    w += len - r;
    return json_loadb(b->_buf, w, flags | JSON_ALLOW_NUL, err);
}

void bigstr_free(bigstr_t *b)
{
    free(b->lit);
    free(b->_buf);
    memset(b, 0, sizeof *b);
}

int bigstr_splice(const bigstr_t *b, const char *text, size_t len,
                  int (*append)(const char *bytes, size_t n, void *arg), void *arg)
{
    static const char mark[] = "\"\\u0000"; /* how jansson writes a leading U+0000 */
    const size_t mlen = sizeof mark - 1;
    const char *p = text, *end = text + len;
    int rc = 0;
    while (rc == 0 && p < end) {
        const char *m = b && b->n ? memmem(p, (size_t)(end - p), mark, mlen) : NULL;
        if (!m)
            return append(p, (size_t)(end - p), arg);
        size_t idx = 0;
        const char *d = m + mlen;
        while (d < end && *d >= '0' && *d <= '9')
            idx = idx * 10 + (size_t)(*d++ - '0');
        if (d == m + mlen || d >= end || *d != '"' || idx >= b->n) {
            rc = append(p, (size_t)(m + mlen - p), arg); /* not ours: cannot happen */
            p = m + mlen;
            continue;
        }
        rc = append(p, (size_t)(m - p), arg);
        if (rc == 0)
            rc = append(b->src + b->lit[idx].off, b->lit[idx].len, arg);
        p = d + 1;
    }
    return rc;
}
