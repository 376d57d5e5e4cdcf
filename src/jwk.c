/* jwk.c -- JSON Web Key Sets into key sets (jwk.h), with OpenSSL 3's
 * EVP_PKEY_fromdata for RSA and EC keys and the raw-key call for Ed25519. */
#include "jwk.h"

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdio.h>
#include <string.h>

#include "aw.h"
#include "base64.h"

#define JWK_MAX_FIELD 1024 /* bytes of a decoded n (8192-bit RSA) and more */

/* Decodes a base64url member of the key into out (at most cap bytes). */
static bool member_bytes(const json_t *k, const char *name, uint8_t *out, size_t cap, size_t *len)
{
    const char *s = json_string_value(json_object_get(k, name));
    size_t n = s ? strlen(s) : 0;
    if (!s || !n || BASE64_DECODED_MAX(n) > cap)
        return false;
    return base64url_decode(out, len, s, n) == AW_OK && *len > 0;
}

static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *rsa_key(const json_t *k, const char **why)
{
    uint8_t n[JWK_MAX_FIELD], e[16];
    size_t nlen, elen;
    if (!member_bytes(k, "n", n, sizeof n, &nlen) || !member_bytes(k, "e", e, sizeof e, &elen)) {
        *why = "an RSA key needs n and e (base64url)";
        return NULL;
    }
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bn && be && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) == 1 &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) == 1)
        pkey = from_params("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    if (!pkey)
        *why = "not a valid RSA public key";
    return pkey;
}

static EVP_PKEY *ec_key(const json_t *k, const char **why)
{
    const char *crv = json_string_value(json_object_get(k, "crv"));
    uint8_t x[64], y[64], pub[65];
    size_t xlen, ylen;
    if (!crv || strcmp(crv, "P-256") != 0) {
        *why = "an EC key must be on P-256";
        return NULL;
    }
    if (!member_bytes(k, "x", x, sizeof x, &xlen) || !member_bytes(k, "y", y, sizeof y, &ylen) ||
        xlen != 32 || ylen != 32) {
        *why = "a P-256 key needs x and y of 32 bytes (base64url)";
        return NULL;
    }
    pub[0] = 0x04; /* uncompressed point */
    memcpy(pub + 1, x, 32);
    memcpy(pub + 33, y, 32);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    EVP_PKEY *pkey = NULL;
    if (bld &&
        OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) == 1 &&
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub) == 1)
        pkey = from_params("EC", bld);
    OSSL_PARAM_BLD_free(bld);
    if (!pkey)
        *why = "not a point on P-256";
    return pkey;
}

static EVP_PKEY *okp_key(const json_t *k, const char **why)
{
    const char *crv = json_string_value(json_object_get(k, "crv"));
    uint8_t x[64];
    size_t xlen;
    if (!crv || strcmp(crv, "Ed25519") != 0) {
        *why = "an OKP key must be Ed25519";
        return NULL;
    }
    if (!member_bytes(k, "x", x, sizeof x, &xlen) || xlen != 32) {
        *why = "an Ed25519 key needs x of 32 bytes (base64url)";
        return NULL;
    }
    EVP_PKEY *pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xlen);
    if (!pkey)
        *why = "not a valid Ed25519 public key";
    return pkey;
}

/* One JWK into the set, or the reason it was skipped. */
static const char *add_key(jwt_keyset_t *ks, const json_t *k, bool has_dflt, jwt_alg_t dflt,
                           char *why, size_t whylen)
{
    if (!json_is_object(k))
        return "not a JSON object";
    const char *kid = json_string_value(json_object_get(k, "kid"));
    const char *kty = json_string_value(json_object_get(k, "kty"));
    const char *use = json_string_value(json_object_get(k, "use"));
    const char *algname = json_string_value(json_object_get(k, "alg"));
    jwt_alg_t alg = dflt;
    if (json_object_get(k, "kid") && !kid)
        return "kid is not a string";
    if (use && strcmp(use, "sig") != 0)
        return "not a signing key (use)";
    if (!kty)
        return "no kty";
    if (algname && (jwt_alg_parse(algname, &alg) != AW_OK || alg == JWT_HS256))
        return "alg is not RS256, ES256 or EdDSA";
    if (!algname && !has_dflt)
        return "no alg (give --jwt-alg for keys without one)";
    const char *bad = NULL;
    EVP_PKEY *pkey = NULL;
    ERR_set_mark();
    if (strcmp(kty, "RSA") == 0)
        pkey = rsa_key(k, &bad);
    else if (strcmp(kty, "EC") == 0)
        pkey = ec_key(k, &bad);
    else if (strcmp(kty, "OKP") == 0)
        pkey = okp_key(k, &bad);
    else
        bad = "kty is not RSA, EC or OKP";
    ERR_pop_to_mark();
    if (!pkey)
        return bad;
    /* the key must suit its algorithm: an RSA key pinned to ES256 is refused */
    if (jwt_keyset_add(ks, kid ? kid : "", alg, pkey, why, whylen) != AW_OK)
        return why;
    return NULL;
}

int jwk_parse_set(const char *json, size_t len, bool has_dflt, jwt_alg_t dflt, jwt_keyset_t **out,
                  jwk_skip_fn skip, void *arg, char *err, size_t errlen)
{
    *out = NULL;
    json_error_t jerr;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    json_t *keys = json_object_get(doc, "keys");
    if (!json_is_array(keys)) {
        snprintf(err, errlen, "not a JSON Web Key Set (%s)", doc ? "no \"keys\" array" : jerr.text);
        json_decref(doc);
        return AW_EINVAL;
    }
    jwt_keyset_t *ks = jwt_keyset_new();
    if (!ks) {
        json_decref(doc);
        snprintf(err, errlen, "out of memory");
        return AW_ENOMEM;
    }
    size_t i, skipped = 0;
    json_t *k;
    char first[200] = "";
    json_array_foreach(keys, i, k)
    {
        char why[160];
        const char *bad = add_key(ks, k, has_dflt, dflt, why, sizeof why);
        if (!bad)
            continue;
        const char *kid = json_string_value(json_object_get(k, "kid"));
        if (!skipped++)
            snprintf(first, sizeof first, "%s%s%s", kid ? kid : "", kid ? ": " : "", bad);
        if (skip)
            skip(arg, kid ? kid : "", bad);
    }
    json_decref(doc);
    if (jwt_keyset_count(ks) == 0) {
        snprintf(err, errlen, "no usable key in the set (%zu skipped%s%s)", skipped,
                 skipped ? "; first: " : "", first);
        jwt_keyset_free(ks);
        return AW_EINVAL;
    }
    *out = ks;
    return AW_OK;
}
