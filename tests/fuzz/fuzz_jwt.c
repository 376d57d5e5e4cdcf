/* fuzz_jwt.c -- libFuzzer target for JWT verification (src/jwt.c) with an
 * HS256 verifier (fixed secret) and an EdDSA verifier (fixed Ed25519 public
 * key, loaded from PEM as a deployment would).
 *
 * Input: byte 0 configures the run:
 *   bits 0-1  mode: 0 verify the rest as a token with HS256, 1 with EdDSA,
 *             2 sign-then-verify with HS256, 3 with EdDSA (the rest is
 *             "<header JSON>\n<payload JSON>", or a payload alone under the
 *             default header; the target encodes and signs it with the fixed
 *             key, so the claim checks see fuzzed claims; in mode 2 with the
 *             default header, jwt_sign_hs256 must produce the same token)
 *   bit 2     require issuer "https://issuer.example"
 *   bit 3     require audience "agentwire"
 *   bits 4-6  the clock (now_s), from a table with the extremes
 *   bit 7     max_token 512 instead of the default 8192
 * byte 1: the leeway (30, 0, 1 day or INT64_MAX), from bits 0-1.
 *
 * Invariants: jwt_verify returns exactly what a reference verifier written
 * here from jwt.h's documented rules returns (same checks, same order),
 * including AW_OK; the signature check of the reference recomputes the
 * signature with the private key (HMAC by hand on SHA-256; Ed25519 is
 * deterministic) instead of verifying it. In the verify modes the input
 * cannot contain a valid signature unless it came from the seeds, so an
 * AW_OK whose signature is not the recomputed one aborts. On AW_OK the
 * returned claims match the payload; on failure they are zeroed.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "aw.h"
#include "fuzz_common.h"
#include "jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The fixed keys; tests/fuzz/gen_corpus.py signs the seed tokens with them. */
static const char HS_SECRET[] = "agentwire-fuzz-secret";
static const uint8_t ED_SEED[32] = {
    0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba, 0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4,
    0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19, 0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60,
}; /* RFC 8032 section 7.1, test 1 */

#define ISSUER   "https://issuer.example"
#define AUDIENCE "agentwire"

static const int64_t clocks[8] = {
    1700000000, /* 2023-11-14: seeds with exp 4102444800 are valid here */
    4102444800, /* 2100-01-01: exactly the seeds' exp */
    0,          -1, INT64_MAX, INT64_MIN, 1700000000 - 31, 4102444800 + 29,
};
static const int64_t leeways[4] = {30, 0, 86400, INT64_MAX};

static jwt_verifier_t hs_verifier, ed_verifier;
static EVP_PKEY *ed_private;

static void setup(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    FUZZ_CHECK(jwt_verifier_init_secret(&hs_verifier, HS_SECRET, strlen(HS_SECRET)) == 0);
    ed_private = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, ED_SEED, sizeof(ED_SEED));
    FUZZ_CHECK(ed_private != NULL);
    BIO *bio = BIO_new(BIO_s_mem());
    FUZZ_CHECK(bio && PEM_write_bio_PUBKEY(bio, ed_private) == 1);
    char *pem;
    long len = BIO_get_mem_data(bio, &pem);
    char err[128];
    FUZZ_CHECK(jwt_verifier_init_pem(&ed_verifier, JWT_EDDSA, pem, (size_t)len, err, sizeof(err)) ==
               0);
    BIO_free(bio);
}

/* ---- independent base64url (RFC 4648 section 5, no padding) ---- */

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64url_enc(char *out, const uint8_t *in, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        size_t chars = n - i >= 3 ? 4 : n - i + 1;
        for (size_t k = 0; k < chars; k++)
            out[o++] = B64URL[(v >> (18 - 6 * k)) & 63];
    }
    return o;
}

/* 0 and *outlen, or -1: a character outside the alphabet, a length of 1 mod
 * 4, or non-zero bits left over in the last character. */
static int b64url_dec(uint8_t *out, size_t *outlen, const char *in, size_t n)
{
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *p = in[i] ? memchr(B64URL, in[i], 64) : NULL;
        if (!p)
            return -1;
        acc = acc << 6 | (uint32_t)(p - B64URL);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return -1;
    *outlen = o;
    return 0;
}

/* ---- signatures, computed with the private keys ---- */

static void sha256(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, uint8_t out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned int n = 0;
    FUZZ_CHECK(c && EVP_DigestInit_ex(c, EVP_sha256(), NULL) == 1);
    FUZZ_CHECK(EVP_DigestUpdate(c, a, alen) == 1 && EVP_DigestUpdate(c, b, blen) == 1);
    FUZZ_CHECK(EVP_DigestFinal_ex(c, out, &n) == 1 && n == 32);
    EVP_MD_CTX_free(c);
}

/* HMAC-SHA-256 (RFC 2104) by hand; the secret is shorter than a block. */
static void hmac_sha256(const uint8_t *msg, size_t n, uint8_t out[32])
{
    uint8_t ipad[64] = {0}, opad[64] = {0}, inner[32];
    memcpy(ipad, HS_SECRET, strlen(HS_SECRET));
    memcpy(opad, HS_SECRET, strlen(HS_SECRET));
    for (int i = 0; i < 64; i++) {
        ipad[i] ^= 0x36;
        opad[i] ^= 0x5c;
    }
    sha256(ipad, 64, msg, n, inner);
    sha256(opad, 64, inner, 32, out);
}

/* Writes the signature of msg for the mode's algorithm; returns its length. */
static size_t sign(bool ed, const uint8_t *msg, size_t n, uint8_t out[64])
{
    if (!ed) {
        hmac_sha256(msg, n, out);
        return 32;
    }
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    size_t siglen = 64;
    FUZZ_CHECK(c && EVP_DigestSignInit(c, NULL, NULL, NULL, ed_private) == 1);
    FUZZ_CHECK(EVP_DigestSign(c, out, &siglen, msg, n) == 1 && siglen == 64);
    EVP_MD_CTX_free(c);
    return 64;
}

/* ---- the reference verifier ---- */

static json_t *load_obj(const uint8_t *s, size_t n)
{
    json_t *j = json_loadb((const char *)s, n, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* NumericDate: an integer, or a real rounded up inside the int64 range. */
static bool ref_time(const json_t *j, int64_t *out)
{
    if (json_is_integer(j)) {
        *out = json_integer_value(j);
        return true;
    }
    if (!json_is_real(j))
        return false;
    double d = json_real_value(j);
    if (!(d >= -0x1p63 && d < 0x1p63))
        return false;
    *out = (int64_t)ceil(d);
    return true;
}

static bool str_eq(const json_t *j, const char *want)
{
    return json_is_string(j) && json_string_length(j) == strlen(want) &&
           memcmp(json_string_value(j), want, strlen(want)) == 0;
}

typedef struct expect {
    int rc;
    bool sig_ok; /* the signature is the one the key makes */
    char sub[JWT_MAX_SUB + 1];
    int64_t exp, nbf, iat;
} expect_t;

static int ref_claims(const jwt_verifier_t *v, const json_t *pl, int64_t now, expect_t *e)
{
    const json_t *sub = json_object_get(pl, "sub"), *nbf = json_object_get(pl, "nbf"),
                 *iat = json_object_get(pl, "iat");
    if (!json_is_string(sub) || json_string_length(sub) == 0 ||
        json_string_length(sub) > JWT_MAX_SUB)
        return AW_ECLAIMS;
    if (!ref_time(json_object_get(pl, "exp"), &e->exp))
        return AW_ECLAIMS;
    if (nbf && !ref_time(nbf, &e->nbf))
        return AW_ECLAIMS;
    if (iat && !ref_time(iat, &e->iat))
        return AW_ECLAIMS;
    memcpy(e->sub, json_string_value(sub), json_string_length(sub));
    __int128 leeway = v->leeway_s > 0 ? v->leeway_s : 0;
    if ((__int128)now >= (__int128)e->exp + leeway)
        return AW_EEXPIRED;
    if ((__int128)now < (__int128)e->nbf - leeway)
        return AW_ENOTYET;
    if (v->issuer && !str_eq(json_object_get(pl, "iss"), v->issuer))
        return AW_EISS;
    if (v->audience) {
        const json_t *aud = json_object_get(pl, "aud");
        bool ok = str_eq(aud, v->audience);
        for (size_t i = 0; !ok && json_is_array(aud) && i < json_array_size(aud); i++)
            ok = str_eq(json_array_get(aud, i), v->audience);
        if (!ok)
            return AW_EAUD;
    }
    return 0;
}

static void ref_verify(const jwt_verifier_t *v, bool ed, const char *tok, size_t len, int64_t now,
                       expect_t *e)
{
    memset(e, 0, sizeof(*e));
    if (len > v->max_token) {
        e->rc = AW_ETOOBIG;
        return;
    }
    /* exactly two dots, non-empty header and payload, no padding */
    size_t dots[3], nd = 0;
    for (size_t i = 0; i < len; i++)
        if (tok[i] == '.' && nd < 3)
            dots[nd++] = i;
    if (nd != 2 || dots[0] == 0 || dots[1] == dots[0] + 1 || memchr(tok, '=', len)) {
        e->rc = AW_EMALFORMED;
        return;
    }
    size_t hn = dots[0], pn = dots[1] - dots[0] - 1, sn = len - dots[1] - 1;
    uint8_t *h = malloc(hn), *p = malloc(pn), *s = malloc(sn + 1);
    size_t hl, pl, sl;
    FUZZ_CHECK(h && p && s);
    json_t *hj = NULL, *pj = NULL;
    e->rc = AW_EMALFORMED;
    if (b64url_dec(h, &hl, tok, hn) || b64url_dec(p, &pl, tok + dots[0] + 1, pn) ||
        b64url_dec(s, &sl, tok + dots[1] + 1, sn))
        goto out;
    hj = load_obj(h, hl);
    if (!hj)
        goto out;
    const json_t *alg = json_object_get(hj, "alg"), *typ = json_object_get(hj, "typ");
    if (!json_is_string(alg) || json_object_get(hj, "crit"))
        goto out;
    if (typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "jwt") != 0))
        goto out;
    if (strcmp(json_string_value(alg), ed ? "EdDSA" : "HS256") != 0) {
        e->rc = AW_EALG;
        goto out;
    }
    uint8_t want[64];
    size_t wl = sign(ed, (const uint8_t *)tok, dots[1], want);
    e->sig_ok = sl == wl && memcmp(s, want, wl) == 0;
    if (!e->sig_ok) {
        e->rc = AW_ESIG;
        goto out;
    }
    pj = load_obj(p, pl);
    if (!pj)
        goto out;
    e->rc = ref_claims(v, pj, now, e);
out:
    json_decref(hj);
    json_decref(pj);
    free(h);
    free(p);
    free(s);
    if (e->rc != 0) {
        bool sig_ok = e->sig_ok;
        int rc = e->rc;
        memset(e, 0, sizeof(*e));
        e->rc = rc;
        e->sig_ok = sig_ok;
    }
}

/* Mode 2/3: "<header>\n<payload>" (or just a payload) -> a signed token. */
static char *make_token(bool ed, const uint8_t *s, size_t n, size_t *len)
{
    static const char def_hs[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    static const char def_ed[] = "{\"alg\":\"EdDSA\"}";
    const uint8_t *nl = memchr(s, '\n', n);
    const uint8_t *h = ed ? (const uint8_t *)def_ed : (const uint8_t *)def_hs, *p = s;
    size_t hn = strlen((const char *)h), pn = n;
    if (nl) {
        h = s;
        hn = (size_t)(nl - s);
        p = nl + 1;
        pn = n - hn - 1;
    }
    /* two separators, and base64url of header, payload and a 64-byte signature */
    char *tok = malloc(((hn + 2) / 3 + (pn + 2) / 3 + 22) * 4 + 2);
    FUZZ_CHECK(tok != NULL);
    size_t o = b64url_enc(tok, h, hn);
    tok[o++] = '.';
    o += b64url_enc(tok + o, p, pn);
    uint8_t sig[64];
    size_t sl = sign(ed, (const uint8_t *)tok, o, sig);
    tok[o++] = '.';
    o += b64url_enc(tok + o, sig, sl);
    *len = o;
    return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    if (size < 2)
        return 0;
    int mode = data[0] & 3;
    bool ed = mode & 1, signing = mode & 2;
    jwt_verifier_t v = ed ? ed_verifier : hs_verifier; /* shares the key: never disposed */
    v.issuer = data[0] & 4 ? (char *)ISSUER : NULL;
    v.audience = data[0] & 8 ? (char *)AUDIENCE : NULL;
    v.max_token = data[0] & 0x80 ? 512 : JWT_MAX_TOKEN;
    v.leeway_s = leeways[data[1] & 3];
    int64_t now = clocks[(data[0] >> 4) & 7];

    size_t len;
    char *tok;
    if (signing)
        tok = make_token(ed, data + 2, size - 2, &len);
    else
        tok = (char *)fz_dup(data + 2, len = size - 2); /* exact size, not NUL-terminated */

    /* mode 2 with the default header: jwt_sign_hs256 must make the same token
     * (it signs JSON objects only, and reads claims as a C string) */
    if (mode == 2 && !memchr(data + 2, '\n', size - 2) && !memchr(data + 2, '\0', size - 2)) {
        char *claims = malloc(size - 2 + 1), *signed_tok = malloc(len + 1);
        FUZZ_CHECK(claims && signed_tok);
        memcpy(claims, data + 2, size - 2);
        claims[size - 2] = '\0';
        json_t *obj = load_obj(data + 2, size - 2);
        int src = jwt_sign_hs256(signed_tok, len + 1, HS_SECRET, strlen(HS_SECRET), claims);
        FUZZ_CHECK(src == (obj ? 0 : AW_EINVAL));
        if (src == 0)
            FUZZ_CHECK(strlen(signed_tok) == len && memcmp(signed_tok, tok, len) == 0);
        if (obj) /* one byte short: refused, and the output is an empty string */
            FUZZ_CHECK(jwt_sign_hs256(signed_tok, len, HS_SECRET, strlen(HS_SECRET), claims) ==
                           AW_ETOOBIG &&
                       signed_tok[0] == '\0');
        json_decref(obj);
        free(claims);
        free(signed_tok);
    }

    jwt_claims_t out;
    memset(&out, 0xA5, sizeof(out));
    int rc = jwt_verify(&v, tok, len, now, &out);
    expect_t e;
    ref_verify(&v, ed, tok, len, now, &e);
    static int trace = -1; /* FUZZ_TRACE=1: print each result (to check the seeds) */
    if (trace < 0)
        trace = getenv("FUZZ_TRACE") != NULL;
    if (trace)
        fprintf(stderr, "jwt: mode %d now %lld -> %s%s\n", mode, (long long)now, aw_strerror(rc),
                rc == AW_OK ? "" : (e.sig_ok ? " (signature ok)" : ""));
    if (rc == AW_OK && !e.sig_ok) {
        fprintf(stderr, "jwt_verify accepted a token the key did not sign\n");
        abort();
    }
    if (rc != e.rc)
        fprintf(stderr, "jwt_verify: %d (%s), reference: %d (%s)\n", rc, aw_strerror(rc), e.rc,
                aw_strerror(e.rc));
    FUZZ_CHECK(rc == e.rc);
    if (rc == AW_OK) {
        FUZZ_CHECK(strcmp(out.sub, e.sub) == 0 && out.sub[0] != '\0');
        FUZZ_CHECK(out.exp == e.exp && out.nbf == e.nbf && out.iat == e.iat);
    } else {
        static const jwt_claims_t zero;
        FUZZ_CHECK(memcmp(&out, &zero, sizeof(out)) == 0);
    }
    free(tok);
    return 0;
}
