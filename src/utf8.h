/* utf8.h -- incremental UTF-8 validation (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF). Pure: no I/O, no globals.
 *
 * A validator state carries an unfinished code point across calls, so text
 * split at any byte (WebSocket fragments) validates exactly as if whole. */
#ifndef AW_UTF8_H
#define AW_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct utf8_state {
    uint32_t _need;   /* continuation bytes still expected, 0..3 */
    uint8_t _lo, _hi; /* allowed range of the next continuation byte */
    bool _bad;        /* sticky: an invalid sequence was seen */
} utf8_state_t;

/* Starts a new text (zero-initialising the struct does the same). */
void utf8_init(utf8_state_t *st);

/* Feeds n bytes. Returns false as soon as the text can no longer be valid
 * (and on every later call); true while it is still a valid prefix. */
bool utf8_feed(utf8_state_t *st, const uint8_t *s, size_t n);

/* True when everything fed so far is valid and ends on a code point boundary. */
bool utf8_complete(const utf8_state_t *st);

/* True when the text so far is valid and ends between characters: more
 * ASCII would keep it valid without a look. */
static inline bool utf8_between(const utf8_state_t *st)
{
    return st->_need == 0 && !st->_bad;
}

/* One-shot: true when s[0..n) is complete, valid UTF-8. */
bool utf8_valid(const uint8_t *s, size_t n);

#endif
