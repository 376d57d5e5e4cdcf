/* fuzz_common.h -- helpers shared by the libFuzzer targets of tests/fuzz:
 * a checked abort, a growable byte record (to compare two runs), a small
 * deterministic PRNG (to derive split points from the input), and a reference
 * UTF-8 decoder written independently of src/utf8.c (arithmetic on code
 * points instead of a table of continuation-byte ranges).
 *
 * Header-only: every target is one translation unit plus this file. */
#ifndef AW_FUZZ_COMMON_H
#define AW_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An invariant broke: say which, then abort() so libFuzzer saves the input. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* ---- growable record of results ---- */

typedef struct fz_rec {
    uint8_t *p;
    size_t len, cap;
} fz_rec_t;

static inline void fz_rec_add(fz_rec_t *r, const void *data, size_t n)
{
    if (n == 0)
        return;
    if (r->cap - r->len < n) {
        size_t cap = r->cap ? r->cap : 256;
        while (cap - r->len < n)
            cap *= 2;
        uint8_t *p = realloc(r->p, cap);
        FUZZ_CHECK(p != NULL);
        r->p = p;
        r->cap = cap;
    }
    memcpy(r->p + r->len, data, n);
    r->len += n;
}

static inline void fz_rec_u64(fz_rec_t *r, uint64_t v)
{
    fz_rec_add(r, &v, sizeof(v));
}

/* A length-prefixed byte string (so that "ab"+"c" differs from "a"+"bc"). */
static inline void fz_rec_bytes(fz_rec_t *r, const void *data, size_t n)
{
    fz_rec_u64(r, n);
    fz_rec_add(r, data, n);
}

static inline void fz_rec_str(fz_rec_t *r, const char *s)
{
    fz_rec_bytes(r, s, s ? strlen(s) : 0);
}

static inline bool fz_rec_eq(const fz_rec_t *a, const fz_rec_t *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
}

static inline void fz_rec_free(fz_rec_t *r)
{
    free(r->p);
    r->p = NULL;
    r->len = r->cap = 0;
}

/* ---- deterministic PRNG (xorshift64*), seeded from input bytes ---- */

typedef struct fz_rng {
    uint64_t s;
} fz_rng_t;

static inline void fz_rng_seed(fz_rng_t *g, uint64_t seed)
{
    g->s = seed * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
    if (g->s == 0)
        g->s = 1;
}

static inline uint64_t fz_rng_next(fz_rng_t *g)
{
    g->s ^= g->s >> 12;
    g->s ^= g->s << 25;
    g->s ^= g->s >> 27;
    return g->s * 0x2545F4914F6CDD1DULL;
}

/* Uniform-ish in [lo, hi]. */
static inline size_t fz_rng_range(fz_rng_t *g, size_t lo, size_t hi)
{
    return lo + (size_t)(fz_rng_next(g) % (uint64_t)(hi - lo + 1));
}

/* A heap copy of exactly n bytes (at least one allocated byte), so that ASan
 * reports any read past the end. */
static inline uint8_t *fz_dup(const uint8_t *data, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    FUZZ_CHECK(p != NULL);
    if (n)
        memcpy(p, data, n);
    return p;
}

/* ---- reference UTF-8 (RFC 3629) ----
 *
 * fz_utf8_scan decodes s[0..n) one sequence at a time from the bit patterns
 * and reports:
 *   *bad_at    the length of the shortest prefix that can no longer be
 *              extended into valid UTF-8 (SIZE_MAX when every prefix can),
 *   *complete  true when s[0..n) ends on a code point boundary.
 * A prefix of a sequence is still extensible when some choice of the missing
 * continuation bytes gives a scalar value in the range of its length:
 * the completions cover [known bits, 0...0] .. [known bits, 1...1]. */

static inline bool fz_utf8_range_ok(uint32_t lo, uint32_t hi, uint32_t min)
{
    if (hi < min || lo > 0x10FFFF)
        return false;
    if (lo < min)
        lo = min;
    if (hi > 0x10FFFF)
        hi = 0x10FFFF;
    /* [lo, hi] is not empty; it is bad only when it lies inside the surrogates */
    return !(lo >= 0xD800 && hi <= 0xDFFF);
}

static inline void fz_utf8_scan(const uint8_t *s, size_t n, size_t *bad_at, bool *complete)
{
    size_t i = 0;

    *bad_at = SIZE_MAX;
    *complete = true;
    while (i < n) {
        uint8_t b = s[i];
        size_t len;
        uint32_t cp, min;

        if (b < 0x80) {
            i++;
            continue;
        }
        if ((b & 0xE0) == 0xC0) {
            len = 2, cp = b & 0x1F, min = 0x80;
        } else if ((b & 0xF0) == 0xE0) {
            len = 3, cp = b & 0x0F, min = 0x800;
        } else if ((b & 0xF8) == 0xF0) {
            len = 4, cp = b & 0x07, min = 0x10000;
        } else {
            *bad_at = i + 1; /* a continuation byte or F8..FF cannot start */
            *complete = false;
            return;
        }
        for (size_t k = 1;; k++) {
            /* k bytes of this sequence are known */
            unsigned missing = (unsigned)(len - k) * 6;
            uint32_t lo = cp << missing, hi = lo | ((1u << missing) - 1);

            if (!fz_utf8_range_ok(lo, hi, min)) {
                *bad_at = i + k;
                *complete = false;
                return;
            }
            if (k == len)
                break;
            if (i + k >= n) {
                *complete = false; /* cut inside a character, still extensible */
                return;
            }
            if ((s[i + k] & 0xC0) != 0x80) {
                *bad_at = i + k + 1;
                *complete = false;
                return;
            }
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        i += len;
    }
}

static inline bool fz_utf8_valid(const uint8_t *s, size_t n)
{
    size_t bad_at;
    bool complete;

    fz_utf8_scan(s, n, &bad_at, &complete);
    return bad_at == SIZE_MAX && complete;
}

#endif
