/* jwt.c -- verifies JWS compact tokens against one pinned algorithm and key,
 * and signs HS256 tokens for development. Owns the verifier's key material.
 * Must never do I/O, keep globals, trust a claim before the signature has
 * verified, or let the token's header choose the algorithm or the key. */
#include "jwt.h"

#include "aw.h"
#include "base64.h"

#include <jansson.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define JWT_DEFAULT_LEEWAY 30
#define JWT_HS256_LEN      32   /* HMAC-SHA-256 output, bytes */
#define JWT_RAW_SIG_LEN    64   /* ES256 R||S and Ed25519 signatures, bytes */
#define JWT_MIN_RSA_BITS   2048 /* RFC 7518 section 3.3 */

static const char *const alg_names[] = {
    [JWT_HS256] = "HS256",
    [JWT_RS256] = "RS256",
    [JWT_ES256] = "ES256",
    [JWT_EDDSA] = "EdDSA",
};

/* The three decoded parts of a token; all point into one allocation. */
typedef struct jwt__parts {
    const char *signed_text; /* header '.' payload as received */
    size_t signed_len;
    uint8_t *header, *payload, *sig;
    size_t header_len, payload_len, sig_len;
    uint8_t *_buf; /* owned */
} jwt__parts_t;

int jwt_alg_parse(const char *name, jwt_alg_t *out)
{
    if (name == NULL || out == NULL)
        return AW_EINVAL;
    for (size_t i = 0; i < AW_ARRAY_LEN(alg_names); i++) {
        if (strcmp(name, alg_names[i]) == 0) {
            *out = (jwt_alg_t)i;
            return 0;
        }
    }
    return AW_EINVAL;
}

const char *jwt_alg_name(jwt_alg_t alg)
{
    if ((unsigned)alg >= AW_ARRAY_LEN(alg_names))
        return "unknown";
    return alg_names[alg];
}

static void verifier_defaults(jwt_verifier_t *v, jwt_alg_t alg)
{
    memset(v, 0, sizeof(*v));
    v->alg = alg;
    v->leeway_s = JWT_DEFAULT_LEEWAY;
    v->max_token = JWT_MAX_TOKEN;
}

int jwt_verifier_init_secret(jwt_verifier_t *v, const void *secret, size_t len)
{
    if (v == NULL)
        return AW_EINVAL;
    verifier_defaults(v, JWT_HS256); /* a failed init leaves v safe to dispose */
    if (secret == NULL || len == 0)
        return AW_EINVAL;
    v->_secret = malloc(len);
    if (v->_secret == NULL)
        return AW_ENOMEM;
    memcpy(v->_secret, secret, len);
    v->_secret_len = len;
    return 0;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Reads an SPKI "PUBLIC KEY", else a PKCS#1 "RSA PUBLIC KEY". Never a private
 * key: a verifier's configuration should not hold one. */
static EVP_PKEY *load_public_pem(const char *pem, size_t len)
{
    EVP_PKEY *pkey = NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (bio == NULL)
        return NULL;
    pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (pkey != NULL)
        return pkey;

    OSSL_DECODER_CTX *dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", "type-specific", "RSA",
                                                           EVP_PKEY_PUBLIC_KEY, NULL, NULL);
    bio = BIO_new_mem_buf(pem, (int)len);
    if (dctx != NULL && bio != NULL && OSSL_DECODER_from_bio(dctx, bio) != 1)
        pkey = NULL;
    BIO_free(bio);
    OSSL_DECODER_CTX_free(dctx);
    return pkey;
}

static bool is_p256(EVP_PKEY *pkey)
{
    char group[64];
    size_t glen = 0;
    if (!EVP_PKEY_is_a(pkey, "EC"))
        return false;
    if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       &glen) != 1)
        return false; /* explicit curve parameters: refused */
    return OBJ_sn2nid(group) == NID_X9_62_prime256v1;
}

/* Returns NULL when pkey suits alg, else the reason. */
static const char *key_mismatch(EVP_PKEY *pkey, jwt_alg_t alg)
{
    switch (alg) {
    case JWT_RS256:
        if (!EVP_PKEY_is_a(pkey, "RSA"))
            return "RS256 needs an RSA public key";
        if (EVP_PKEY_get_bits(pkey) < JWT_MIN_RSA_BITS)
            return "RS256 needs an RSA key of at least 2048 bits";
        return NULL;
    case JWT_ES256:
        return is_p256(pkey) ? NULL : "ES256 needs an EC P-256 public key";
    case JWT_EDDSA:
        return EVP_PKEY_is_a(pkey, "ED25519") ? NULL : "EdDSA needs an Ed25519 public key";
    default:
        return "algorithm does not take a public key";
    }
}

int jwt_verifier_init_pem(jwt_verifier_t *v, jwt_alg_t alg, const char *pem, size_t len, char *err,
                          size_t errlen)
{
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (v == NULL) {
        set_err(err, errlen, "no verifier");
        return AW_EINVAL;
    }
    verifier_defaults(v, alg); /* a failed init leaves v safe to dispose */
    if (pem == NULL || len == 0 || len > INT_MAX) {
        set_err(err, errlen, "no PEM key given");
        return AW_EINVAL;
    }
    if (alg != JWT_RS256 && alg != JWT_ES256 && alg != JWT_EDDSA) {
        set_err(err, errlen, "%s does not take a PEM public key", jwt_alg_name(alg));
        return AW_EINVAL;
    }
    ERR_set_mark(); /* failures here leave nothing in the caller's error queue */
    EVP_PKEY *pkey = load_public_pem(pem, len);
    const char *why = pkey == NULL ? "not a PEM public key (PUBLIC KEY or RSA PUBLIC KEY)"
                                   : key_mismatch(pkey, alg);
    ERR_pop_to_mark();
    if (why != NULL) {
        EVP_PKEY_free(pkey);
        set_err(err, errlen, "%s", why);
        return AW_EINVAL;
    }
    v->_pkey = pkey;
    return 0;
}

/* ---- key sets ---- */

#define JWT_MAX_KID 128

typedef struct jwt_key {
    char kid[JWT_MAX_KID + 1];
    jwt_alg_t alg;
    EVP_PKEY *pkey;
} jwt_key_t;

struct jwt_keyset {
    jwt_key_t *keys;
    size_t n, cap;
};

jwt_keyset_t *jwt_keyset_new(void)
{
    return calloc(1, sizeof(jwt_keyset_t));
}

int jwt_keyset_add(jwt_keyset_t *ks, const char *kid, jwt_alg_t alg, void *pkey, char *why,
                   size_t whylen)
{
    const char *bad = NULL;
    if (ks == NULL || kid == NULL || pkey == NULL)
        bad = "no key";
    else if (strlen(kid) > JWT_MAX_KID)
        bad = "kid longer than 128 bytes";
    else if (alg == JWT_HS256)
        bad = "HS256 keys are not taken from a key set";
    else
        bad = key_mismatch(pkey, alg);
    for (size_t i = 0; bad == NULL && i < ks->n; i++)
        if (strcmp(ks->keys[i].kid, kid) == 0)
            bad = "a second key with the same kid";
    if (bad == NULL && ks->n == ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 4;
        jwt_key_t *k = realloc(ks->keys, cap * sizeof *k);
        if (k == NULL)
            bad = "out of memory";
        else
            ks->keys = k, ks->cap = cap;
    }
    if (bad != NULL) {
        EVP_PKEY_free(pkey);
        set_err(why, whylen, "%s", bad);
        return AW_EINVAL;
    }
    jwt_key_t *k = &ks->keys[ks->n++];
    snprintf(k->kid, sizeof k->kid, "%s", kid);
    k->alg = alg;
    k->pkey = pkey;
    return 0;
}

size_t jwt_keyset_count(const jwt_keyset_t *ks)
{
    return ks ? ks->n : 0;
}

void jwt_keyset_free(jwt_keyset_t *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->n; i++)
        EVP_PKEY_free(ks->keys[i].pkey);
    free(ks->keys);
    free(ks);
}

int jwt_verifier_init_keys(jwt_verifier_t *v, jwt_keyset_t *ks)
{
    if (v == NULL || ks == NULL)
        return AW_EINVAL;
    verifier_defaults(v, JWT_RS256);
    v->_keys = ks;
    return 0;
}

void jwt_verifier_use_keys(jwt_verifier_t *v, jwt_keyset_t *ks)
{
    jwt_keyset_free(v->_keys);
    v->_keys = ks;
}

/* The key a token's kid (NULL: none given) names. */
static const jwt_key_t *key_for(const jwt_keyset_t *ks, const char *kid)
{
    if (kid == NULL)
        return ks->n == 1 ? &ks->keys[0] : NULL;
    for (size_t i = 0; i < ks->n; i++)
        if (strcmp(ks->keys[i].kid, kid) == 0)
            return &ks->keys[i];
    return NULL;
}

static int replace_string(char **slot, const char *s)
{
    char *copy = NULL;
    if (s != NULL) {
        copy = strdup(s);
        if (copy == NULL)
            return AW_ENOMEM;
    }
    free(*slot);
    *slot = copy;
    return 0;
}

int jwt_verifier_set_issuer(jwt_verifier_t *v, const char *iss)
{
    if (v == NULL)
        return AW_EINVAL;
    return replace_string(&v->issuer, iss);
}

int jwt_verifier_set_audience(jwt_verifier_t *v, const char *aud)
{
    if (v == NULL)
        return AW_EINVAL;
    return replace_string(&v->audience, aud);
}

void jwt_verifier_dispose(jwt_verifier_t *v)
{
    if (v == NULL)
        return;
    free(v->issuer);
    free(v->audience);
    if (v->_secret != NULL)
        OPENSSL_cleanse(v->_secret, v->_secret_len);
    free(v->_secret);
    EVP_PKEY_free(v->_pkey);
    jwt_keyset_free(v->_keys);
    memset(v, 0, sizeof(*v));
}

/* ---- verification ---- */

static int decode_part(uint8_t *out, size_t *outlen, const char *in, size_t n)
{
    if (n == 0) {
        *outlen = 0;
        return 0;
    }
    return base64url_decode(out, outlen, in, n) == 0 ? 0 : AW_EMALFORMED;
}

/* Splits "h.p.s" and decodes each part. Header and payload must be non-empty;
 * an empty signature decodes to zero bytes and fails later as AW_ESIG (or
 * AW_EALG for "none"). JWS forbids padding, so '=' is refused, which also
 * keeps one token from having several spellings. */
static int split_token(const char *tok, size_t len, jwt__parts_t *p)
{
    const char *d1 = memchr(tok, '.', len);
    if (d1 == NULL)
        return AW_EMALFORMED;
    const char *d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok));
    if (d2 == NULL)
        return AW_EMALFORMED;
    const char *sig = d2 + 1;
    size_t hn = (size_t)(d1 - tok), pn = (size_t)(d2 - d1 - 1), sn = len - (size_t)(sig - tok);
    if (hn == 0 || pn == 0 || memchr(sig, '.', sn) != NULL || memchr(tok, '=', len) != NULL)
        return AW_EMALFORMED;

    p->_buf = malloc(BASE64_DECODED_MAX(hn) + BASE64_DECODED_MAX(pn) + BASE64_DECODED_MAX(sn) + 1);
    if (p->_buf == NULL)
        return AW_ENOMEM;
    p->header = p->_buf;
    p->payload = p->header + BASE64_DECODED_MAX(hn);
    p->sig = p->payload + BASE64_DECODED_MAX(pn);
    p->signed_text = tok;
    p->signed_len = (size_t)(d2 - tok);
    if (decode_part(p->header, &p->header_len, tok, hn) != 0 ||
        decode_part(p->payload, &p->payload_len, d1 + 1, pn) != 0 ||
        decode_part(p->sig, &p->sig_len, sig, sn) != 0)
        return AW_EMALFORMED;
    return 0;
}

/* Loads a JSON object; anything else (array, scalar, duplicate keys, bad
 * UTF-8, trailing bytes) is AW_EMALFORMED. */
static int load_object(const uint8_t *buf, size_t len, json_t **out)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(j)) {
        json_decref(j);
        return AW_EMALFORMED;
    }
    *out = j;
    return 0;
}

/* The algorithm and public key a token is checked with: the verifier's
 * own, or (key-set mode) those of the key its kid names. */
typedef struct jwt__key_use {
    jwt_alg_t alg;
    EVP_PKEY *pkey;
} jwt__key_use_t;

static int check_header(const jwt_verifier_t *v, const uint8_t *buf, size_t len,
                        jwt__key_use_t *use)
{
    json_t *h = NULL;
    int rc = load_object(buf, len, &h);
    if (rc != 0)
        return rc;
    json_t *alg = json_object_get(h, "alg");
    json_t *typ = json_object_get(h, "typ");
    json_t *kid = json_object_get(h, "kid");
    use->alg = v->alg;
    use->pkey = v->_pkey;
    if (!json_is_string(alg) || json_object_get(h, "crit") != NULL ||
        (kid != NULL && !json_is_string(kid)))
        rc = AW_EMALFORMED;
    else if (typ != NULL &&
             (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0))
        rc = AW_EMALFORMED;
    if (rc == 0 && v->_keys != NULL) {
        const jwt_key_t *k = key_for(v->_keys, json_string_value(kid));
        if (k == NULL) {
            rc = AW_ENOTFOUND;
        } else {
            use->alg = k->alg;
            use->pkey = k->pkey;
        }
    }
    if (rc == 0 && strcmp(json_string_value(alg), jwt_alg_name(use->alg)) != 0)
        rc = AW_EALG;
    json_decref(h);
    return rc;
}

static int verify_hs256(const jwt_verifier_t *v, const jwt__parts_t *p)
{
    uint8_t mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;
    if (v->_secret == NULL)
        return AW_EINVAL;
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, v->_secret, v->_secret_len,
                  (const unsigned char *)p->signed_text, p->signed_len, mac, sizeof(mac),
                  &maclen) == NULL)
        return AW_ENOMEM;
    int ok = maclen == JWT_HS256_LEN && p->sig_len == JWT_HS256_LEN &&
             CRYPTO_memcmp(mac, p->sig, JWT_HS256_LEN) == 0;
    OPENSSL_cleanse(mac, sizeof(mac));
    return ok ? 0 : AW_ESIG;
}

/* JWS carries ES256 as R||S (RFC 7518 section 3.4); OpenSSL wants DER.
 * Writes at most dercap bytes (72 suffice for P-256); returns the length or 0. */
static int es256_raw_to_der(const uint8_t *raw, uint8_t *der, size_t dercap)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, JWT_RAW_SIG_LEN / 2, NULL);
    BIGNUM *s = BN_bin2bn(raw + JWT_RAW_SIG_LEN / 2, JWT_RAW_SIG_LEN / 2, NULL);
    int n = 0;
    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        goto out_free_sig;
    }
    if (i2d_ECDSA_SIG(es, NULL) > (int)dercap)
        goto out_free_sig;
    n = i2d_ECDSA_SIG(es, &der);
    if (n < 0)
        n = 0;
out_free_sig:
    ECDSA_SIG_free(es); /* also frees r and s once set0 took them */
    return n;
}

/* floor(n / 2) of P-256, big-endian. An ECDSA signature (r, s) has a twin
 * (r, n - s) that verifies too; only the spelling with s <= n/2 (low S) is
 * accepted, so a token has one spelling (--jwt-allow-high-s lifts this for
 * issuers that do not normalize). */
static const uint8_t p256_half_order[32] = {
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xde, 0x73, 0x7d, 0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8};

static int verify_pkey(const jwt_verifier_t *v, const jwt__key_use_t *use, const jwt__parts_t *p)
{
    uint8_t der[80]; /* DER of two 33-byte INTEGERs fits in 72 */
    const uint8_t *sig = p->sig;
    size_t siglen = p->sig_len;
    const char *md = use->alg == JWT_EDDSA ? NULL : "SHA256";
    EVP_PKEY_CTX *pctx = NULL;
    int rc = AW_ESIG;

    if (use->pkey == NULL)
        return AW_EINVAL;
    if (use->alg == JWT_ES256 || use->alg == JWT_EDDSA) {
        if (siglen != JWT_RAW_SIG_LEN)
            return AW_ESIG;
        if (use->alg == JWT_ES256) {
            if (!v->allow_high_s &&
                memcmp(p->sig + JWT_RAW_SIG_LEN / 2, p256_half_order, sizeof p256_half_order) > 0)
                return AW_ESIG;
            int n = es256_raw_to_der(p->sig, der, sizeof(der));
            if (n <= 0)
                return AW_ESIG;
            sig = der;
            siglen = (size_t)n;
        }
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        return AW_ENOMEM;
    if (EVP_DigestVerifyInit_ex(ctx, &pctx, md, NULL, NULL, use->pkey, NULL) != 1)
        goto out_free_ctx;
    if (use->alg == JWT_RS256 && EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
        goto out_free_ctx;
    const unsigned char *text = (const unsigned char *)p->signed_text;
    if (EVP_DigestVerify(ctx, sig, siglen, text, p->signed_len) == 1)
        rc = 0;
out_free_ctx:
    EVP_MD_CTX_free(ctx);
    return rc;
}

static int verify_signature(const jwt_verifier_t *v, const jwt__key_use_t *use,
                            const jwt__parts_t *p)
{
    ERR_set_mark(); /* a failed verify leaves nothing in the caller's queue */
    int rc = use->alg == JWT_HS256 ? verify_hs256(v, p) : verify_pkey(v, use, p);
    ERR_pop_to_mark();
    return rc;
}

/* A NumericDate as int64: an integer as is, a real rounded up, which keeps
 * "now >= exp + leeway" and "now < nbf - leeway" exact for an integer now.
 * A real outside the int64 range counts as not a number. */
static bool get_time(json_t *j, int64_t *out)
{
    if (json_is_integer(j)) {
        *out = (int64_t)json_integer_value(j);
        return true;
    }
    if (!json_is_real(j))
        return false;
    double d = json_real_value(j);
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
        return false;
    int64_t t = (int64_t)d; /* toward zero; ceil by hand keeps libm out */
    *out = (double)t < d ? t + 1 : t;
    return true;
}

static int read_claims(json_t *pl, jwt_claims_t *out)
{
    json_t *sub = json_object_get(pl, "sub");
    json_t *nbf = json_object_get(pl, "nbf");
    json_t *iat = json_object_get(pl, "iat");
    if (!json_is_string(sub))
        return AW_ECLAIMS;
    size_t n = json_string_length(sub);
    if (n == 0 || n > JWT_MAX_SUB)
        return AW_ECLAIMS;
    if (!get_time(json_object_get(pl, "exp"), &out->exp))
        return AW_ECLAIMS;
    if (nbf != NULL && !get_time(nbf, &out->nbf))
        return AW_ECLAIMS;
    if (iat != NULL && !get_time(iat, &out->iat))
        return AW_ECLAIMS;
    memcpy(out->sub, json_string_value(sub), n);
    out->sub[n] = '\0';
    return 0;
}

static bool string_is(json_t *j, const char *want)
{
    size_t n = strlen(want);
    return json_is_string(j) && json_string_length(j) == n &&
           memcmp(json_string_value(j), want, n) == 0;
}

/* Is the token's aud (a string or an array of them) one of want's
 * comma-separated audiences? */
static bool audience_ok(json_t *aud, const char *want)
{
    for (const char *p = want; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char one[256];
        if (n > 0 && n < sizeof one) {
            memcpy(one, p, n);
            one[n] = '\0';
            if (json_is_string(aud) && string_is(aud, one))
                return true;
            size_t i;
            json_t *el;
            json_array_foreach(aud, i, el)
            {
                if (string_is(el, one))
                    return true;
            }
        }
        p += n + (end ? 1 : 0);
    }
    return false;
}

static int check_claims(const jwt_verifier_t *v, json_t *pl, int64_t now, jwt_claims_t *out)
{
    int64_t leeway = v->leeway_s > 0 ? v->leeway_s : 0;
    int rc = read_claims(pl, out);
    if (rc != 0)
        return rc;
    /* now >= exp + leeway, and now < nbf - leeway, without overflow */
    if (out->exp <= INT64_MAX - leeway && now >= out->exp + leeway)
        return AW_EEXPIRED;
    if (out->nbf >= INT64_MIN + leeway && now < out->nbf - leeway)
        return AW_ENOTYET;
    if (v->issuer != NULL && !string_is(json_object_get(pl, "iss"), v->issuer))
        return AW_EISS;
    if (v->audience != NULL && !audience_ok(json_object_get(pl, "aud"), v->audience))
        return AW_EAUD;
    return 0;
}

/* Order: size, shape and header, algorithm, signature; only then is the
 * payload parsed, so unauthenticated bytes never reach the claim checks. */
int jwt_verify(const jwt_verifier_t *v, const char *token, size_t len, int64_t now_s,
               jwt_claims_t *out)
{
    jwt__parts_t p = {0};
    json_t *pl = NULL;
    int rc;

    if (v == NULL || token == NULL || out == NULL || (unsigned)v->alg >= AW_ARRAY_LEN(alg_names))
        return AW_EINVAL;
    memset(out, 0, sizeof(*out));
    if (len > v->max_token)
        return AW_ETOOBIG;
    rc = split_token(token, len, &p);
    jwt__key_use_t use = {v->alg, v->_pkey};
    if (rc == 0)
        rc = check_header(v, p.header, p.header_len, &use);
    if (rc == AW_ENOTFOUND && v->on_unknown_kid != NULL)
        v->on_unknown_kid(v->unknown_ctx); /* the keys may have rotated */
    if (rc == 0)
        rc = verify_signature(v, &use, &p);
    if (rc == 0)
        rc = load_object(p.payload, p.payload_len, &pl);
    if (rc == 0)
        rc = check_claims(v, pl, now_s, out);
    json_decref(pl);
    free(p._buf);
    if (rc != 0)
        memset(out, 0, sizeof(*out));
    return rc;
}

/* ---- signing ---- */

/* Characters base64url_encode writes for n bytes, without the NUL. */
static size_t b64url_len(size_t n)
{
    return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
}

int jwt_sign_hs256(char *out, size_t outlen, const void *secret, size_t secret_len,
                   const char *claims_json)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    const size_t hlen = sizeof(header) - 1;
    uint8_t mac[EVP_MAX_MD_SIZE];
    size_t maclen = 0;

    if (out == NULL || secret == NULL || secret_len == 0 || claims_json == NULL)
        return AW_EINVAL;
    size_t plen = strlen(claims_json);
    json_t *check = NULL;
    if (load_object((const uint8_t *)claims_json, plen, &check) != 0)
        return AW_EINVAL;
    json_decref(check);

    size_t need = b64url_len(hlen) + 1 + b64url_len(plen) + 1 + b64url_len(JWT_HS256_LEN) + 1;
    if (outlen < need) {
        if (outlen > 0)
            out[0] = '\0';
        return AW_ETOOBIG;
    }
    size_t n = base64url_encode(out, (const uint8_t *)header, hlen);
    out[n++] = '.';
    n += base64url_encode(out + n, (const uint8_t *)claims_json, plen);
    if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret, secret_len, (unsigned char *)out, n,
                  mac, sizeof(mac), &maclen) == NULL ||
        maclen != JWT_HS256_LEN) {
        out[0] = '\0';
        return AW_ENOMEM;
    }
    out[n++] = '.';
    base64url_encode(out + n, mac, JWT_HS256_LEN);
    OPENSSL_cleanse(mac, sizeof(mac));
    return 0;
}
