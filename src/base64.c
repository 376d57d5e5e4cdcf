/* base64.c -- base64 and base64url (RFC 4648 sections 4 and 5): encoding and
 * strict decoding. Every buffer belongs to the caller; this file must never
 * allocate, keep state or accept text that would not encode back to itself
 * (wrong padding, characters outside the alphabet, non-zero trailing bits). */
#include "base64.h"

#include <stdbool.h>

#include "aw.h"

/* The two alphabets differ only in the characters for 62 and 63. */
struct b64_alphabet {
    char c62, c63;
    bool pad; /* encode: write '='; decode: padding required */
};

static char sextet_char(const struct b64_alphabet *a, uint32_t v)
{
    v &= 63;
    if (v < 26)
        return (char)('A' + v);
    if (v < 52)
        return (char)('a' + v - 26);
    if (v < 62)
        return (char)('0' + v - 52);
    return v == 62 ? a->c62 : a->c63;
}

/* Value of c in the alphabet, or -1. */
static int char_sextet(const struct b64_alphabet *a, char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == a->c62)
        return 62;
    if (c == a->c63)
        return 63;
    return -1;
}

/* Writes the first `chars` sextets of the 24-bit group v. */
static size_t put_group(char *out, const struct b64_alphabet *a, uint32_t v, size_t chars)
{
    for (size_t i = 0; i < chars; i++)
        out[i] = sextet_char(a, v >> (18 - 6 * i));
    return chars;
}

static size_t encode(char *out, const uint8_t *in, size_t n, const struct b64_alphabet *a)
{
    size_t i = 0, o = 0;
    uint32_t v;

    for (; n - i >= 3; i += 3) {
        v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        o += put_group(out + o, a, v, 4);
    }
    if (n - i > 0) {
        v = (uint32_t)in[i] << 16;
        if (n - i == 2)
            v |= (uint32_t)in[i + 1] << 8;
        o += put_group(out + o, a, v, n - i + 1);
        while (a->pad && o % 4)
            out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

size_t base64_encode(char *out, const uint8_t *in, size_t n)
{
    const struct b64_alphabet a = {'+', '/', true};

    return encode(out, in, n, &a);
}

size_t base64url_encode(char *out, const uint8_t *in, size_t n)
{
    const struct b64_alphabet a = {'-', '_', false};

    return encode(out, in, n, &a);
}

/* Sets *body to the length without padding. Padding, when present, must fill
 * the last group of four exactly (one or two '='). */
static int strip_padding(const char *in, size_t n, bool required, size_t *body)
{
    size_t pad = 0;

    while (pad < n && in[n - 1 - pad] == '=')
        pad++;
    *body = n - pad;
    if (pad == 0)
        return required && n % 4 ? AW_EMALFORMED : AW_OK;
    return n % 4 || pad > 2 ? AW_EMALFORMED : AW_OK;
}

/* Writes the bytes of a final group of 2 or 3 characters (12 or 18 bits);
 * the 4 or 2 bits left over must be zero or the text has no canonical form. */
static int put_tail(uint8_t *out, size_t *o, uint32_t acc, size_t chars)
{
    if (chars == 2) {
        if (acc & 0xF)
            return AW_EMALFORMED;
        out[(*o)++] = (uint8_t)(acc >> 4);
    } else if (chars == 3) {
        if (acc & 0x3)
            return AW_EMALFORMED;
        out[(*o)++] = (uint8_t)(acc >> 10);
        out[(*o)++] = (uint8_t)(acc >> 2);
    }
    return AW_OK;
}

static int decode(uint8_t *out, size_t *outlen, const char *in, size_t n,
                  const struct b64_alphabet *a)
{
    size_t body, o = 0;
    uint32_t acc = 0;
    int rc;

    rc = strip_padding(in, n, a->pad, &body);
    if (rc != AW_OK)
        return rc;
    if (body % 4 == 1)
        return AW_EMALFORMED; /* 6 bits cannot make a byte */
    for (size_t i = 0; i < body; i++) {
        int v = char_sextet(a, in[i]);
        if (v < 0)
            return AW_EMALFORMED;
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            out[o++] = (uint8_t)(acc >> 16);
            out[o++] = (uint8_t)(acc >> 8);
            out[o++] = (uint8_t)acc;
            acc = 0;
        }
    }
    rc = put_tail(out, &o, acc, body % 4);
    if (rc != AW_OK)
        return rc;
    *outlen = o;
    return AW_OK;
}

int base64url_decode(uint8_t *out, size_t *outlen, const char *in, size_t n)
{
    const struct b64_alphabet a = {'-', '_', false};

    return decode(out, outlen, in, n, &a);
}

int base64_decode(uint8_t *out, size_t *outlen, const char *in, size_t n)
{
    const struct b64_alphabet a = {'+', '/', true};

    return decode(out, outlen, in, n, &a);
}
