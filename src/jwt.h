/* jwt.h -- JSON Web Token verification (RFC 7519, JWS compact form) with the
 * algorithm pinned by configuration: HS256 with a secret, or RS256, ES256,
 * EdDSA (Ed25519) with a public key. Pure apart from OpenSSL: no I/O, no
 * globals. A token whose header names any other algorithm, or "none", fails.
 * Verifying never allocates on behalf of the caller: claims are copied into
 * the caller's jwt_claims_t. */
#ifndef AW_JWT_H
#define AW_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum jwt_alg { JWT_HS256, JWT_RS256, JWT_ES256, JWT_EDDSA } jwt_alg_t;

#define JWT_MAX_TOKEN 8192 /* default largest token accepted, bytes */
#define JWT_MAX_SUB   255  /* longest accepted sub, bytes */

/* Public keys by key id (a JWKS, RFC 7517), each pinned to one algorithm. */
typedef struct jwt_keyset jwt_keyset_t;

typedef struct jwt_verifier {
    /* read-only after init */
    jwt_alg_t alg;
    int64_t leeway_s;  /* tolerance for exp and nbf, seconds (default 30) */
    size_t max_token;  /* longer tokens fail with AW_ETOOBIG */
    bool allow_high_s; /* ES256: accept s > n/2 too (default: low S only) */
    char *issuer;      /* required iss when non-NULL (owned) */
    char *audience;    /* required among aud when non-NULL (owned) */
    /* private */
    uint8_t *_secret; /* HS256 key (owned) */
    size_t _secret_len;
    void *_pkey;         /* EVP_PKEY * for the public-key algorithms (owned) */
    jwt_keyset_t *_keys; /* key-set mode (jwt_verifier_use_keys): owned */
    /* key-set mode: called when a token names a key id the set lacks (the
     * keys may have rotated); NULL for none */
    void (*on_unknown_kid)(void *ctx);
    void *unknown_ctx;
} jwt_verifier_t;

typedef struct jwt_claims {
    char sub[JWT_MAX_SUB + 1]; /* NUL-terminated, non-empty */
    int64_t exp;               /* seconds since the epoch; required */
    int64_t nbf;               /* 0 when absent */
    int64_t iat;               /* 0 when absent */
} jwt_claims_t;

/* Parses "HS256", "RS256", "ES256", "EdDSA". 0 or AW_EINVAL. */
int jwt_alg_parse(const char *name, jwt_alg_t *out);
const char *jwt_alg_name(jwt_alg_t alg);

/* HS256 verifier with a copy of secret (at least 1 byte). 0 or AW_EINVAL/NOMEM. */
int jwt_verifier_init_secret(jwt_verifier_t *v, const void *secret, size_t len);

/* Public-key verifier from a PEM public key (SPKI "PUBLIC KEY", or an RSA
 * "RSA PUBLIC KEY"). The key type must match alg (RSA for RS256, P-256 EC for
 * ES256, Ed25519 for EdDSA). On failure returns AW_EINVAL and writes a
 * one-line reason to err. */
int jwt_verifier_init_pem(jwt_verifier_t *v, jwt_alg_t alg, const char *pem, size_t len, char *err,
                          size_t errlen);

/* A new, empty key set (NULL when out of memory). */
jwt_keyset_t *jwt_keyset_new(void);
/* Adds the public key pkey (an EVP_PKEY *, taken over) under kid ("" for a
 * key without one), pinned to alg (RS256, ES256 or EdDSA). AW_EINVAL with a
 * reason in why (and pkey freed) when the key does not suit alg or kid is
 * there already. */
int jwt_keyset_add(jwt_keyset_t *ks, const char *kid, jwt_alg_t alg, void *pkey, char *why,
                   size_t whylen);
size_t jwt_keyset_count(const jwt_keyset_t *ks);
void jwt_keyset_free(jwt_keyset_t *ks);

/* Key-set mode: tokens are checked against ks (taken over; the set used
 * before is freed). The token's kid picks the key (a set of one key also
 * takes a token without kid), and the header's alg must be that key's. The
 * verifier's other settings (issuer, audience, leeway) stay. */
int jwt_verifier_init_keys(jwt_verifier_t *v, jwt_keyset_t *ks);
void jwt_verifier_use_keys(jwt_verifier_t *v, jwt_keyset_t *ks);

/* Sets (copies) the required issuer and audience (a comma-separated list:
 * any one of them in the token's aud); NULL clears. 0 or AW_ENOMEM. */
int jwt_verifier_set_issuer(jwt_verifier_t *v, const char *iss);
int jwt_verifier_set_audience(jwt_verifier_t *v, const char *aud);

/* Frees what the verifier owns; the struct may be reused after init. */
void jwt_verifier_dispose(jwt_verifier_t *v);

/* Verifies token[0..len) at time now_s (seconds since the epoch).
 *  0              valid: *out holds sub, exp, nbf, iat
 *  AW_ETOOBIG     longer than max_token
 *  AW_EMALFORMED  not three base64url parts, bad base64, bad JSON, typ not JWT
 *  AW_EALG        header alg differs from the pinned one (incl. "none"); in
 *                 key-set mode, from the alg of the key its kid names
 *  AW_ENOTFOUND   key-set mode: the kid names no key of the set (or there is
 *                 no kid and the set has more than one key)
 *  AW_ESIG        signature does not verify
 *  AW_ECLAIMS     sub missing/empty/too long/not a string, exp missing or not a
 *                 number, nbf/iat not numbers
 *  AW_EEXPIRED    now_s >= exp + leeway
 *  AW_ENOTYET     now_s < nbf - leeway
 *  AW_EISS        issuer configured and iss differs or is absent
 *  AW_EAUD        audience configured and not in aud (string or array)
 * Checks happen in that order. */
int jwt_verify(const jwt_verifier_t *v, const char *token, size_t len, int64_t now_s,
               jwt_claims_t *out);

/* Signs an HS256 token with the given claims JSON object text (e.g.
 * {"sub":"demo","exp":123}). Writes a NUL-terminated token to out.
 * 0, AW_ETOOBIG when outlen is too small, AW_EINVAL. For development mode
 * and tests. */
int jwt_sign_hs256(char *out, size_t outlen, const void *secret, size_t secret_len,
                   const char *claims_json);

#endif
