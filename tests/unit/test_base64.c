/* test_base64.c -- base64 and base64url against the RFC 4648 section 10
 * vectors, round trips of every length, and the strict decoding rules:
 * padding, alphabet, length and trailing bits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "aw.h"
#include "base64.h"

#define CANARY 0xA5

struct vec {
    const char *plain;
    const char *std; /* padded, standard alphabet */
    const char *url; /* unpadded, URL alphabet */
};

/* RFC 4648 section 10, plus bytes that map to characters 62 and 63. */
static const struct vec vectors[] = {
    {"", "", ""},
    {"f", "Zg==", "Zg"},
    {"fo", "Zm8=", "Zm8"},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg==", "Zm9vYg"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
    {"\xfb\xff", "+/8=", "-_8"},
    {"\xfb\xef\xbe", "++++", "----"},
    {"\xff\xff\xff", "////", "____"},
    {"\x00\x00\x00", "AAAA", "AAAA"},
    {"\x3e\x3f\xfe", "Pj/+", "Pj_-"},
};

static int dec_std(uint8_t *out, size_t *outlen, const char *s)
{
    return base64_decode(out, outlen, s, strlen(s));
}

static int dec_url(uint8_t *out, size_t *outlen, const char *s)
{
    return base64url_decode(out, outlen, s, strlen(s));
}

/* Plain length of a vector; "\x00\x00\x00" needs the encoded length. */
static size_t plain_len(const struct vec *v)
{
    return strlen(v->std) / 4 * 3 - (strchr(v->std, '=') ? strlen(strchr(v->std, '=')) : 0);
}

static void test_encode_vectors(void **state)
{
    char out[64];
    (void)state;
    for (size_t i = 0; i < AW_ARRAY_LEN(vectors); i++) {
        size_t n = plain_len(&vectors[i]);
        memset(out, CANARY, sizeof(out));
        assert_int_equal(base64_encode(out, (const uint8_t *)vectors[i].plain, n),
                         strlen(vectors[i].std));
        assert_string_equal(out, vectors[i].std);
        assert_int_equal((uint8_t)out[BASE64_ENCODED_SIZE(n)], CANARY);
        memset(out, CANARY, sizeof(out));
        assert_int_equal(base64url_encode(out, (const uint8_t *)vectors[i].plain, n),
                         strlen(vectors[i].url));
        assert_string_equal(out, vectors[i].url);
    }
}

static void test_decode_vectors(void **state)
{
    uint8_t out[64];
    size_t n;
    (void)state;
    for (size_t i = 0; i < AW_ARRAY_LEN(vectors); i++) {
        size_t want = plain_len(&vectors[i]);
        n = 999;
        assert_int_equal(dec_std(out, &n, vectors[i].std), AW_OK);
        assert_int_equal(n, want);
        assert_memory_equal(out, vectors[i].plain, want);
        n = 999;
        assert_int_equal(dec_url(out, &n, vectors[i].url), AW_OK);
        assert_int_equal(n, want);
        assert_memory_equal(out, vectors[i].plain, want);
    }
}

static void test_url_accepts_padding(void **state)
{
    uint8_t out[64];
    size_t n;
    (void)state;
    for (size_t i = 0; i < AW_ARRAY_LEN(vectors); i++) {
        /* the padded form in the URL alphabet */
        char padded[64];
        strcpy(padded, vectors[i].std);
        for (char *c = padded; *c; c++)
            *c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
        assert_int_equal(dec_url(out, &n, padded), AW_OK);
        assert_int_equal(n, plain_len(&vectors[i]));
        assert_memory_equal(out, vectors[i].plain, n);
    }
}

static void test_std_requires_padding(void **state)
{
    static const char *bad[] = {"Zg", "Zm8", "Zm9vYg", "Zm9vYmE", "Zg=", "Zm9vYg="};
    uint8_t out[64];
    size_t n;
    (void)state;
    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++)
        assert_int_equal(dec_std(out, &n, bad[i]), AW_EMALFORMED);
}

static void test_bad_padding(void **state)
{
    static const char *bad[] = {
        "=",       "==",       "===",    "====",      "Zg=",      "Zg===", "Zm8==",
        "Zm9v=",   "Zm9v==",   "Z===",   "Zg==Zg==",  "Z=g=",     "Zm=v",  "=Zm9",
        "Zm9vYg=", "Zm9vY===", "Zg==\n", "Zm9vYmE==", "Zm9vYmFy="};
    uint8_t out[64];
    size_t n;
    (void)state;
    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++) {
        assert_int_equal(dec_url(out, &n, bad[i]), AW_EMALFORMED);
        assert_int_equal(dec_std(out, &n, bad[i]), AW_EMALFORMED);
    }
}

static void test_bad_length(void **state)
{
    static const char *bad[] = {"Z", "Zm9vY", "Zm9vYmFyZ", "A"};
    uint8_t out[64];
    size_t n;
    (void)state;
    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++) {
        assert_int_equal(dec_url(out, &n, bad[i]), AW_EMALFORMED);
        assert_int_equal(dec_std(out, &n, bad[i]), AW_EMALFORMED);
    }
}

static void test_bad_characters(void **state)
{
    static const char others[] = " \t\r\n.*!@#$%^&()[]{}<>,;:\"'`~\\|?\x7f\x80\xff";
    uint8_t out[64];
    char s[8];
    size_t n;
    (void)state;
    /* each position of a full group, in both decoders */
    for (size_t i = 0; i < sizeof(others) - 1; i++) {
        for (size_t pos = 0; pos < 4; pos++) {
            strcpy(s, "Zm9v");
            s[pos] = others[i];
            assert_int_equal(dec_url(out, &n, s), AW_EMALFORMED);
            assert_int_equal(dec_std(out, &n, s), AW_EMALFORMED);
        }
    }
    /* each alphabet rejects the other's two characters */
    assert_int_equal(dec_url(out, &n, "+/8="), AW_EMALFORMED);
    assert_int_equal(dec_url(out, &n, "ab+d"), AW_EMALFORMED);
    assert_int_equal(dec_url(out, &n, "ab/d"), AW_EMALFORMED);
    assert_int_equal(dec_std(out, &n, "-_8="), AW_EMALFORMED);
    assert_int_equal(dec_std(out, &n, "ab-d"), AW_EMALFORMED);
    assert_int_equal(dec_std(out, &n, "ab_d"), AW_EMALFORMED);
    /* an embedded NUL counts as a character, not the end */
    assert_int_equal(base64url_decode(out, &n, "Zm\0v", 4), AW_EMALFORMED);
    assert_int_equal(base64_decode(out, &n, "Zm9vZm9\0", 8), AW_EMALFORMED);
}

static int sextet(char c)
{
    static const char url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    return (int)(strchr(url, c) - url);
}

/* The last character of a 2- or 3-character group carries 4 or 2 bits that
 * do not reach a byte; they must be zero. */
static void test_trailing_bits(void **state)
{
    static const char url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint8_t out[32];
    char s[8];
    size_t n;
    (void)state;
    for (size_t i = 0; i < 64; i++) {
        int v = sextet(url[i]);
        int want2 = v & 0xF ? AW_EMALFORMED : AW_OK;
        int want3 = v & 0x3 ? AW_EMALFORMED : AW_OK;
        s[0] = 'Q', s[1] = url[i], s[2] = '\0';
        assert_int_equal(dec_url(out, &n, s), want2);
        s[0] = 'Q', s[1] = 'U', s[2] = url[i], s[3] = '\0';
        assert_int_equal(dec_url(out, &n, s), want3);
    }
    assert_int_equal(dec_std(out, &n, "Zh=="), AW_EMALFORMED);
    assert_int_equal(dec_std(out, &n, "Zm9="), AW_EMALFORMED);
    assert_int_equal(dec_url(out, &n, "Zm9"), AW_EMALFORMED);
    assert_int_equal(dec_std(out, &n, "Zm8="), AW_OK);
    assert_int_equal(dec_std(out, &n, "dGhlIHNhbXBsZSBub25jZR=="), AW_EMALFORMED);
}

static void fill(uint8_t *buf, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (uint8_t)(seed >> 16);
    }
}

static void test_round_trip_every_length(void **state)
{
    uint8_t in[200], out[200 + 8];
    char enc[BASE64_ENCODED_SIZE(200) + 8];
    size_t n, elen;
    (void)state;
    for (size_t len = 0; len <= 200; len++) {
        fill(in, len, (uint32_t)len);
        elen = base64_encode(enc, in, len);
        assert_int_equal(elen, BASE64_ENCODED_SIZE(len) - 1);
        assert_int_equal(elen % 4, 0);
        memset(out, CANARY, sizeof(out));
        assert_int_equal(base64_decode(out, &n, enc, elen), AW_OK);
        assert_int_equal(n, len);
        assert_true(n <= BASE64_DECODED_MAX(elen));
        assert_memory_equal(out, in, len);
        assert_int_equal(out[BASE64_DECODED_MAX(elen)], CANARY);

        elen = base64url_encode(enc, in, len);
        assert_int_equal(elen, (len * 4 + 2) / 3);
        assert_null(strpbrk(enc, "+/="));
        memset(out, CANARY, sizeof(out));
        assert_int_equal(base64url_decode(out, &n, enc, elen), AW_OK);
        assert_int_equal(n, len);
        assert_memory_equal(out, in, len);
        assert_int_equal(out[BASE64_DECODED_MAX(elen)], CANARY);
    }
}

static void test_every_byte_value(void **state)
{
    uint8_t in[256], out[256];
    char enc[BASE64_ENCODED_SIZE(256)];
    size_t n;
    (void)state;
    for (size_t i = 0; i < 256; i++)
        in[i] = (uint8_t)i;
    for (size_t start = 0; start < 3; start++) {
        size_t len = 256 - start;
        base64_encode(enc, in + start, len);
        assert_int_equal(base64_decode(out, &n, enc, strlen(enc)), AW_OK);
        assert_int_equal(n, len);
        assert_memory_equal(out, in + start, len);
        base64url_encode(enc, in + start, len);
        assert_int_equal(base64url_decode(out, &n, enc, strlen(enc)), AW_OK);
        assert_int_equal(n, len);
        assert_memory_equal(out, in + start, len);
    }
}

static void test_empty(void **state)
{
    uint8_t out[4];
    char enc[4];
    size_t n = 7;
    (void)state;
    assert_int_equal(base64_encode(enc, NULL, 0), 0);
    assert_string_equal(enc, "");
    assert_int_equal(base64url_encode(enc, NULL, 0), 0);
    assert_string_equal(enc, "");
    assert_int_equal(base64_decode(out, &n, "", 0), AW_OK);
    assert_int_equal(n, 0);
    n = 7;
    assert_int_equal(base64url_decode(out, &n, "", 0), AW_OK);
    assert_int_equal(n, 0);
}

static void test_size_macros(void **state)
{
    (void)state;
    assert_int_equal(BASE64_ENCODED_SIZE(0), 1);
    assert_int_equal(BASE64_ENCODED_SIZE(1), 5);
    assert_int_equal(BASE64_ENCODED_SIZE(3), 5);
    assert_int_equal(BASE64_ENCODED_SIZE(4), 9);
    assert_int_equal(BASE64_ENCODED_SIZE(20), 29);
    assert_int_equal(BASE64_DECODED_MAX(2), 3);
    assert_int_equal(BASE64_DECODED_MAX(4), 3);
    assert_int_equal(BASE64_DECODED_MAX(24), 18);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_vectors),
        cmocka_unit_test(test_decode_vectors),
        cmocka_unit_test(test_url_accepts_padding),
        cmocka_unit_test(test_std_requires_padding),
        cmocka_unit_test(test_bad_padding),
        cmocka_unit_test(test_bad_length),
        cmocka_unit_test(test_bad_characters),
        cmocka_unit_test(test_trailing_bits),
        cmocka_unit_test(test_round_trip_every_length),
        cmocka_unit_test(test_every_byte_value),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_size_macros),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
