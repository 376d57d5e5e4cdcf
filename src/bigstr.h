/* bigstr.h -- JSON documents whose long strings are not decoded.
 *
 * jansson decodes and re-encodes a string a byte at a time, which made a
 * 64 KiB event cost a millisecond of CPU to publish. A long string value is
 * only carried by the server, never read, so bigstr_loadb checks it where it
 * lies (escapes, no control characters, valid UTF-8 and surrogates, exactly
 * what the parser would refuse) and hands jansson a short placeholder in its
 * place; bigstr_splice puts the original text back into a serialization.
 *
 * A placeholder is a string starting with U+0000, which a document can never
 * hold itself (bigstr_loadb refuses \u0000, like the plain parser). Code that
 * reads a string value therefore sees a placeholder as a string with a
 * control character: ids, types and keys, which must be short and clean,
 * are refused as before. */
#ifndef AW_BIGSTR_H
#define AW_BIGSTR_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define BIGSTR_MIN 1024 /* string values of at least this many bytes stay undecoded */

typedef struct bigstr {
    const char *src; /* the document parsed (not owned) */
    struct {
        size_t off, len; /* a literal, quotes included, in src */
    } * lit;
    size_t n, cap;
    char *_buf; /* the document with placeholders, or NULL */
} bigstr_t;

/* json_loadb(buf, len, flags | JSON_ALLOW_NUL when needed, err), with the
 * long string values of buf left undecoded in b (which must be zeroed, and
 * outlive the tree's use). Free b with bigstr_free. */
json_t *bigstr_loadb(bigstr_t *b, const char *buf, size_t len, size_t flags, json_error_t *err);

void bigstr_free(bigstr_t *b);

/* Replaces every placeholder in text[0..len) (a JSON serialization of values
 * from b's tree) with its original literal, through append(bytes, n, arg).
 * Returns 0, or append's non-zero result. */
int bigstr_splice(const bigstr_t *b, const char *text, size_t len,
                  int (*append)(const char *bytes, size_t n, void *arg), void *arg);

#endif
