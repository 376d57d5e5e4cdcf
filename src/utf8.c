/* utf8.c -- incremental UTF-8 validation as a byte-at-a-time state machine.
 * Owns only the caller's utf8_state_t; must never do I/O, keep globals or
 * allocate. A lead byte fixes how many continuation bytes follow and the range
 * the first of them may take, which is where overlongs, surrogates and code
 * points above U+10FFFF are refused (RFC 3629 section 4). */
#include "utf8.h"

#include <string.h>

#define CONT_LO 0x80 /* any continuation byte is 10xxxxxx */
#define CONT_HI 0xBF

void utf8_init(utf8_state_t *st)
{
    st->_need = 0;
    st->_lo = CONT_LO;
    st->_hi = CONT_HI;
    st->_bad = false;
}

/* Sets how many continuation bytes follow lead byte b and the range of the
 * first one. False for bytes that can never start a character. */
static bool start_char(utf8_state_t *st, uint8_t b)
{
    if (b < 0x80)
        return true;
    /* 80..BF: stray continuation; C0, C1: overlong 2-byte; F5..FF: > U+10FFFF */
    if (b < 0xC2 || b > 0xF4)
        return false;
    st->_lo = CONT_LO;
    st->_hi = CONT_HI;
    if (b < 0xE0) {
        st->_need = 1;
    } else if (b < 0xF0) {
        st->_need = 2;
        if (b == 0xE0)
            st->_lo = 0xA0; /* E0 80..9F would be overlong (< U+0800) */
        else if (b == 0xED)
            st->_hi = 0x9F; /* ED A0..BF would be surrogates U+D800..DFFF */
    } else {
        st->_need = 3;
        if (b == 0xF0)
            st->_lo = 0x90; /* F0 80..8F would be overlong (< U+10000) */
        else if (b == 0xF4)
            st->_hi = 0x8F; /* F4 90..BF would be above U+10FFFF */
    }
    return true;
}

/* Accepts one continuation byte of the open character. */
static bool continue_char(utf8_state_t *st, uint8_t b)
{
    if (b < st->_lo || b > st->_hi)
        return false;
    st->_need--;
    st->_lo = CONT_LO;
    st->_hi = CONT_HI;
    return true;
}

/* Length of the run of ASCII at s, in whole 8-byte words. Text on the wire is
 * mostly JSON and English, so this skips most bytes without the state machine;
 * memcpy keeps the unaligned loads defined. */
static size_t ascii_run(const uint8_t *s, size_t n)
{
    size_t i = 0;
    uint64_t w;

    while (n - i >= sizeof(w)) {
        memcpy(&w, s + i, sizeof(w));
        if (w & 0x8080808080808080ULL)
            break;
        i += sizeof(w);
    }
    return i;
}

bool utf8_feed(utf8_state_t *st, const uint8_t *s, size_t n)
{
    size_t i = 0;

    if (st->_bad)
        return false;
    while (i < n) {
        if (st->_need == 0) {
            i += ascii_run(s + i, n - i);
            if (i == n)
                break;
            if (!start_char(st, s[i]))
                goto out_bad;
        } else if (!continue_char(st, s[i])) {
            goto out_bad;
        }
        i++;
    }
    return true;

out_bad:
    st->_bad = true;
    return false;
}

bool utf8_complete(const utf8_state_t *st)
{
    return !st->_bad && st->_need == 0;
}

bool utf8_valid(const uint8_t *s, size_t n)
{
    utf8_state_t st;

    utf8_init(&st);
    return utf8_feed(&st, s, n) && utf8_complete(&st);
}
