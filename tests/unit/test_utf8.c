/* test_utf8.c -- the incremental UTF-8 validator against fixed vectors, a
 * reference decoder written differently (decode the value, then apply the RFC
 * 3629 rules) over every 1-, 2- and 3-byte string, and every split of text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "utf8.h"

struct vec {
    const char *s;
    size_t n;
};

/* clang-format off */
#define V(lit) {lit, sizeof(lit) - 1}
/* clang-format on */

/* Reference: decode each character by its bit pattern, then reject overlongs,
 * surrogates and values above U+10FFFF. */
static bool ref_valid(const uint8_t *s, size_t n)
{
    static const uint32_t min_cp[] = {0, 0, 0x80, 0x800, 0x10000};
    size_t i = 0;

    while (i < n) {
        uint8_t b = s[i];
        size_t len;
        uint32_t cp;
        if (b < 0x80) {
            i++;
            continue;
        } else if ((b & 0xE0) == 0xC0) {
            len = 2, cp = b & 0x1F;
        } else if ((b & 0xF0) == 0xE0) {
            len = 3, cp = b & 0x0F;
        } else if ((b & 0xF8) == 0xF0) {
            len = 4, cp = b & 0x07;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min_cp[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

/* Reference: s[0..n) can still become valid if some completion makes it so.
 * The first continuation byte may need to be 80, 90 or A0; the rest 80. */
static bool ref_prefix(const uint8_t *s, size_t n)
{
    static const uint8_t firsts[] = {0x80, 0x90, 0xA0};
    uint8_t buf[128];

    if (ref_valid(s, n))
        return true;
    assert_true(n + 3 <= sizeof(buf));
    memcpy(buf, s, n);
    for (size_t f = 0; f < AW_ARRAY_LEN(firsts); f++) {
        buf[n] = firsts[f];
        buf[n + 1] = 0x80;
        buf[n + 2] = 0x80;
        for (size_t k = 1; k <= 3; k++)
            if (ref_valid(buf, n + k))
                return true;
    }
    return false;
}

/* Encodes cp without any checks, in exactly len bytes (overlongs allowed). */
static size_t encode_len(uint8_t *out, uint32_t cp, size_t len)
{
    static const uint8_t lead[] = {0, 0, 0xC0, 0xE0, 0xF0};

    if (len == 1) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    for (size_t k = len - 1; k > 0; k--) {
        out[k] = (uint8_t)(0x80 | (cp & 0x3F));
        cp >>= 6;
    }
    out[0] = (uint8_t)(lead[len] | cp);
    return len;
}

static size_t encode(uint8_t *out, uint32_t cp)
{
    size_t len = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    return encode_len(out, cp, len);
}

static bool valid_str(const struct vec *v)
{
    return utf8_valid((const uint8_t *)v->s, v->n);
}

static const struct vec valid_texts[] = {
    V(""),
    V("plain ASCII, long enough to cover several words of the fast path: 0123456789"),
    V("\x00"),                                         /* U+0000 */
    V("\x7F"),                                         /* U+007F */
    V("\xC2\x80"),                                     /* U+0080 */
    V("\xDF\xBF"),                                     /* U+07FF */
    V("\xE0\xA0\x80"),                                 /* U+0800 */
    V("\xED\x9F\xBF"),                                 /* U+D7FF, last before surrogates */
    V("\xEE\x80\x80"),                                 /* U+E000, first after surrogates */
    V("\xEF\xBF\xBD"),                                 /* U+FFFD */
    V("\xEF\xBF\xBF"),                                 /* U+FFFF */
    V("\xF0\x90\x80\x80"),                             /* U+10000 */
    V("\xF4\x8F\xBF\xBF"),                             /* U+10FFFF, the maximum */
    V("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5"), /* Kuhn: "kosme" in Greek */
    V("\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"),         /* three CJK characters */
    V("\xF0\x9F\x98\x80 smile"),                       /* U+1F600 */
    V("a\xC2\x80"
      "b\xE0\xA0\x80"
      "c\xF0\x90\x80\x80"
      "d\xF4\x8F\xBF\xBF"
      "e"),
    V("1234567\xE2\x82\xAC"
      "89abcdef\xF0\x9F\x98\x80"
      "0123456"),
};

static const struct vec invalid_texts[] = {
    V("\x80"),                     /* stray continuation */
    V("\xBF"),                     /* stray continuation */
    V("a\x80z"),                   /* stray continuation after ASCII */
    V("\xC2\x80\x80"),             /* one continuation too many */
    V("\xC0\x80"),                 /* overlong U+0000 */
    V("\xC0\xAF"),                 /* overlong '/' */
    V("\xC1\xBF"),                 /* overlong U+007F */
    V("\xE0\x80\x80"),             /* overlong U+0000 */
    V("\xE0\x80\xAF"),             /* overlong '/' */
    V("\xE0\x9F\xBF"),             /* overlong U+07FF */
    V("\xF0\x80\x80\x80"),         /* overlong U+0000 */
    V("\xF0\x8F\xBF\xBF"),         /* overlong U+FFFF */
    V("\xED\xA0\x80"),             /* U+D800 */
    V("\xED\xAD\xBF"),             /* U+DB7F */
    V("\xED\xB0\x80"),             /* U+DC00 */
    V("\xED\xBF\xBF"),             /* U+DFFF */
    V("\xED\xA0\x80\xED\xB0\x80"), /* surrogate pair */
    V("\xF4\x90\x80\x80"),         /* U+110000 */
    V("\xF4\xBF\xBF\xBF"),         /* U+13FFFF */
    V("\xF5\x80\x80\x80"),         /* lead above F4 */
    V("\xF7\xBF\xBF\xBF"),
    V("\xF8\x88\x80\x80\x80"),     /* 5-byte form */
    V("\xFC\x84\x80\x80\x80\x80"), /* 6-byte form */
    V("\xFE"),
    V("\xFF"),
    V("\xC2"),         /* truncated 2-byte */
    V("\xE0\xA0"),     /* truncated 3-byte */
    V("\xF0\x90\x80"), /* truncated 4-byte */
    V("abc\xE2\x82"),  /* truncated at the end of text */
    V("\xC2"
      "A"), /* ASCII where a continuation belongs */
    V("\xE2\x82"
      "A"),
    V("\xE2\xC2\x80"), /* lead where a continuation belongs */
    V("\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80"), /* kosme + U+D800 */
};

static void test_valid_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < AW_ARRAY_LEN(valid_texts); i++) {
        assert_true(valid_str(&valid_texts[i]));
        assert_true(ref_valid((const uint8_t *)valid_texts[i].s, valid_texts[i].n));
    }
}

static void test_invalid_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < AW_ARRAY_LEN(invalid_texts); i++) {
        assert_false(valid_str(&invalid_texts[i]));
        assert_false(ref_valid((const uint8_t *)invalid_texts[i].s, invalid_texts[i].n));
    }
}

static void test_truncated_is_prefix_not_complete(void **state)
{
    static const struct vec cases[] = {V("\xC2"), V("\xE0\xA0"), V("\xF0\x90\x80"),
                                       V("\xF4\x8F\xBF"), V("ok\xED\x9F")};
    (void)state;
    for (size_t i = 0; i < AW_ARRAY_LEN(cases); i++) {
        utf8_state_t st;
        utf8_init(&st);
        assert_true(utf8_feed(&st, (const uint8_t *)cases[i].s, cases[i].n));
        assert_false(utf8_complete(&st));
    }
}

static void test_every_code_point(void **state)
{
    uint8_t buf[4];
    (void)state;
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        size_t n = encode(buf, cp);
        bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
        assert_int_equal(utf8_valid(buf, n), !surrogate);
    }
    for (uint32_t cp = 0x110000; cp < 0x200000; cp += 0x1111)
        assert_false(utf8_valid(buf, encode_len(buf, cp, 4)));
}

static void test_every_overlong(void **state)
{
    uint8_t buf[4];
    (void)state;
    /* each value that fits a shorter form, encoded 1..3 bytes too long */
    for (uint32_t cp = 0; cp < 0x10000; cp++) {
        size_t shortest = encode(buf, cp);
        for (size_t len = shortest + 1; len <= 4; len++)
            assert_false(utf8_valid(buf, encode_len(buf, cp, len)));
    }
}

static void test_all_short_strings(void **state)
{
    uint8_t s[3];
    (void)state;
    for (unsigned a = 0; a < 256; a++) {
        s[0] = (uint8_t)a;
        assert_int_equal(utf8_valid(s, 1), ref_valid(s, 1));
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (uint8_t)b;
            assert_int_equal(utf8_valid(s, 2), ref_valid(s, 2));
            for (unsigned c = 0; c < 256; c++) {
                s[2] = (uint8_t)c;
                if (utf8_valid(s, 3) != ref_valid(s, 3))
                    fail_msg("mismatch on %02x %02x %02x", a, b, c);
            }
        }
    }
}

static void test_four_byte_leads(void **state)
{
    static const uint8_t conts[] = {0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF};
    uint8_t s[4];
    (void)state;
    for (unsigned a = 0xF0; a < 0x100; a++) {
        s[0] = (uint8_t)a;
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (uint8_t)b;
            for (size_t c = 0; c < AW_ARRAY_LEN(conts); c++) {
                s[2] = conts[c];
                for (size_t d = 0; d < AW_ARRAY_LEN(conts); d++) {
                    s[3] = conts[d];
                    assert_int_equal(utf8_valid(s, 4), ref_valid(s, 4));
                }
            }
        }
    }
}

/* Feeds one byte at a time: feed fails exactly at the first byte after which
 * no completion can be valid, and stays failed. */
static void check_bytewise(const uint8_t *s, size_t n)
{
    utf8_state_t st;
    bool alive = true;

    utf8_init(&st);
    for (size_t i = 0; i < n; i++) {
        alive = alive && ref_prefix(s, i + 1);
        assert_int_equal(utf8_feed(&st, s + i, 1), alive);
        assert_int_equal(utf8_complete(&st), alive && ref_valid(s, i + 1));
    }
    assert_int_equal(utf8_complete(&st), ref_valid(s, n));
}

/* Feeds s in up to three pieces cut at i and j, as WebSocket fragments. */
static void check_split(const uint8_t *s, size_t n, size_t i, size_t j)
{
    utf8_state_t st;
    bool ok1, ok2, ok3;

    utf8_init(&st);
    ok1 = utf8_feed(&st, s, i);
    assert_int_equal(ok1, ref_prefix(s, i));
    assert_int_equal(utf8_complete(&st), ref_valid(s, i));
    ok2 = utf8_feed(&st, s + i, j - i);
    assert_int_equal(ok2, ok1 && ref_prefix(s, j));
    ok3 = utf8_feed(&st, s + j, n - j);
    assert_int_equal(ok3, ok2 && ref_prefix(s, n));
    assert_int_equal(utf8_complete(&st), ref_valid(s, n));
}

static void check_all_splits(const struct vec *v)
{
    const uint8_t *s = (const uint8_t *)v->s;

    check_bytewise(s, v->n);
    for (size_t i = 0; i <= v->n; i++)
        for (size_t j = i; j <= v->n; j++)
            check_split(s, v->n, i, j);
}

static void test_valid_split_everywhere(void **state)
{
    (void)state;
    for (size_t k = 0; k < AW_ARRAY_LEN(valid_texts); k++)
        check_all_splits(&valid_texts[k]);
}

static void test_invalid_split_everywhere(void **state)
{
    (void)state;
    for (size_t k = 0; k < AW_ARRAY_LEN(invalid_texts); k++)
        check_all_splits(&invalid_texts[k]);
}

static void test_split_inside_char_not_complete(void **state)
{
    static const uint8_t euro[] = {0xE2, 0x82, 0xAC};
    utf8_state_t st;
    (void)state;
    utf8_init(&st);
    assert_true(utf8_feed(&st, euro, 1));
    assert_false(utf8_complete(&st));
    assert_true(utf8_feed(&st, euro + 1, 1));
    assert_false(utf8_complete(&st));
    assert_true(utf8_feed(&st, euro + 2, 1));
    assert_true(utf8_complete(&st));
}

/* A bad byte at every position and alignment of a long ASCII run, so the
 * word-at-a-time skip is checked at each of its boundaries. */
static void test_ascii_run_with_bad_byte(void **state)
{
    static const uint8_t bad[] = {0x80, 0xC0, 0xFF, 0xED};
    uint8_t buf[80];
    (void)state;
    for (size_t align = 0; align < 8; align++) {
        for (size_t pos = 0; pos < 64; pos++) {
            for (size_t b = 0; b < AW_ARRAY_LEN(bad); b++) {
                uint8_t *s = buf + align;
                memset(s, 'x', 64);
                assert_true(utf8_valid(s, 64));
                s[pos] = bad[b];
                assert_false(utf8_valid(s, 64));
                check_bytewise(s, 64);
            }
        }
    }
}

static void test_ascii_run_with_char(void **state)
{
    uint8_t buf[80];
    (void)state;
    for (size_t align = 0; align < 8; align++) {
        for (size_t pos = 0; pos + 4 <= 64; pos++) {
            uint8_t *s = buf + align;
            memset(s, 'y', 64);
            memcpy(s + pos, "\xF0\x9F\x98\x80", 4);
            assert_true(utf8_valid(s, 64));
            s[pos + 3] = 'y'; /* truncated: ASCII where the last byte belongs */
            assert_false(utf8_valid(s, 64));
            assert_false(utf8_valid(s, pos + 3));
        }
    }
}

static void test_sticky_and_reset(void **state)
{
    static const uint8_t bad[] = {0xC0, 0x80};
    utf8_state_t st;
    (void)state;
    utf8_init(&st);
    assert_false(utf8_feed(&st, bad, 2));
    assert_false(utf8_feed(&st, (const uint8_t *)"ok", 2));
    assert_false(utf8_feed(&st, NULL, 0));
    assert_false(utf8_complete(&st));
    utf8_init(&st);
    assert_true(utf8_complete(&st));
    assert_true(utf8_feed(&st, (const uint8_t *)"ok", 2));
    assert_true(utf8_complete(&st));
}

static void test_zeroed_state_is_initial(void **state)
{
    utf8_state_t st;
    (void)state;
    memset(&st, 0, sizeof(st));
    assert_true(utf8_complete(&st));
    assert_true(utf8_feed(&st, (const uint8_t *)"\xE0\xA0\x80", 3));
    assert_true(utf8_complete(&st));
    memset(&st, 0, sizeof(st));
    assert_false(utf8_feed(&st, (const uint8_t *)"\xE0\x80", 2));
}

static void test_empty_feed(void **state)
{
    utf8_state_t st;
    (void)state;
    utf8_init(&st);
    assert_true(utf8_feed(&st, NULL, 0));
    assert_true(utf8_complete(&st));
    assert_true(utf8_valid(NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_vectors),
        cmocka_unit_test(test_invalid_vectors),
        cmocka_unit_test(test_truncated_is_prefix_not_complete),
        cmocka_unit_test(test_every_code_point),
        cmocka_unit_test(test_every_overlong),
        cmocka_unit_test(test_all_short_strings),
        cmocka_unit_test(test_four_byte_leads),
        cmocka_unit_test(test_valid_split_everywhere),
        cmocka_unit_test(test_invalid_split_everywhere),
        cmocka_unit_test(test_split_inside_char_not_complete),
        cmocka_unit_test(test_ascii_run_with_bad_byte),
        cmocka_unit_test(test_ascii_run_with_char),
        cmocka_unit_test(test_sticky_and_reset),
        cmocka_unit_test(test_zeroed_state_is_initial),
        cmocka_unit_test(test_empty_feed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
