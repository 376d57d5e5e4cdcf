/* test_jwt.c -- unit tests for jwt.c. Keys are generated once per run with
 * OpenSSL; tokens are signed here by an implementation independent of jwt.c
 * (its own base64url via EVP_EncodeBlock, its own signers), so the verifier
 * is checked against what a real issuer would send. No files, no network. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "aw.h"
#include "jwt.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/encoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define P256_ORDER_HEX "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551"

#define NOW    INT64_C(1700000000)
#define SECRET "correct horse battery staple"
/* A valid payload: expires in an hour. */
#define GOOD "{\"sub\":\"u1\",\"exp\":1700003600,\"nbf\":1699999000,\"iat\":1699999000}"

typedef struct keys {
    EVP_PKEY *rsa, *rsa2, *rsa1024, *rsapss, *ec, *ec2, *ec384, *ed, *ed2;
    char *rsa_pem, *rsa_pkcs1_pem, *rsa_priv_pem, *rsa1024_pem, *rsapss_pem, *ec_pem, *ec384_pem,
        *ed_pem;
} keys_t;

typedef struct signer {
    jwt_alg_t alg;
    EVP_PKEY *pkey;     /* RS256, ES256, EdDSA */
    const void *secret; /* HS256 */
    size_t secret_len;
} signer_t;

enum { FLIP_SIG = 1, NO_SIG = 2, SHORT_SIG = 4, LONG_SIG = 8 };

/* ---- helpers ---- */

static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    return s;
}

/* base64url without padding, malloc'd. */
static char *b64u(const void *data, size_t n)
{
    char *s = malloc(4 * ((n + 2) / 3) + 1);
    assert_non_null(s);
    int len = EVP_EncodeBlock((unsigned char *)s, data, (int)n);
    while (len > 0 && s[len - 1] == '=')
        len--;
    s[len] = '\0';
    for (char *c = s; *c; c++) {
        if (*c == '+')
            *c = '-';
        else if (*c == '/')
            *c = '_';
    }
    return s;
}

static char *bio_to_string(BIO *bio)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    assert_true(n > 0);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    BIO_free(bio);
    return s;
}

static char *pub_pem(EVP_PKEY *k)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PUBKEY(bio, k), 1);
    return bio_to_string(bio);
}

static char *priv_pem(EVP_PKEY *k)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL), 1);
    return bio_to_string(bio);
}

/* PKCS#1 "RSA PUBLIC KEY" */
static char *rsa_pkcs1_pem(EVP_PKEY *k)
{
    BIO *bio = BIO_new(BIO_s_mem());
    OSSL_ENCODER_CTX *ectx =
        OSSL_ENCODER_CTX_new_for_pkey(k, EVP_PKEY_PUBLIC_KEY, "PEM", "type-specific", NULL);
    assert_non_null(ectx);
    assert_int_equal(OSSL_ENCODER_to_bio(ectx, bio), 1);
    OSSL_ENCODER_CTX_free(ectx);
    return bio_to_string(bio);
}

/* Signs in[0..n) as alg; sig holds at least 512 bytes. Returns its length. */
static size_t sign_bytes(const signer_t *s, const char *in, size_t n, uint8_t *sig)
{
    if (s->alg == JWT_HS256) {
        size_t len = 0;
        assert_non_null(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, s->secret, s->secret_len,
                                  (const unsigned char *)in, n, sig, 64, &len));
        return len;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    const char *md = s->alg == JWT_EDDSA ? NULL : "SHA256";
    uint8_t der[512];
    size_t len = sizeof(der);
    assert_int_equal(EVP_DigestSignInit_ex(ctx, NULL, md, NULL, NULL, s->pkey, NULL), 1);
    assert_int_equal(EVP_DigestSign(ctx, der, &len, (const unsigned char *)in, n), 1);
    EVP_MD_CTX_free(ctx);
    if (s->alg != JWT_ES256) {
        memcpy(sig, der, len);
        return len;
    }
    /* DER ECDSA-Sig-Value -> JWS R||S, each left-padded to 32 bytes */
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
    assert_non_null(es);
    const BIGNUM *r, *sv;
    ECDSA_SIG_get0(es, &r, &sv);
    assert_int_equal(BN_bn2binpad(r, sig, 32), 32);
    /* the low-S spelling, which the verifier requires (s <= n/2) */
    BIGNUM *order = BN_new(), *half = BN_new(), *low = BN_dup(sv);
    assert_non_null(low);
    assert_int_equal(BN_hex2bn(&order, P256_ORDER_HEX), 64);
    assert_int_equal(BN_rshift1(half, order), 1);
    if (BN_cmp(low, half) > 0)
        assert_int_equal(BN_sub(low, order, sv), 1);
    assert_int_equal(BN_bn2binpad(low, sig + 32, 32), 32);
    BN_free(order);
    BN_free(half);
    BN_free(low);
    ECDSA_SIG_free(es);
    return 64;
}

/* Rewrites the S of a raw ES256 signature to n - S (its other spelling). */
static void es256_flip_s(uint8_t sig[64])
{
    BIGNUM *n = BN_new(), *sv = BN_bin2bn(sig + 32, 32, NULL);
    assert_int_equal(BN_hex2bn(&n, P256_ORDER_HEX), 64);
    assert_int_equal(BN_sub(sv, n, sv), 1);
    assert_int_equal(BN_bn2binpad(sv, sig + 32, 32), 32);
    BN_free(n);
    BN_free(sv);
}

/* "b64(header).b64(payload).b64(sig)", malloc'd. */
static char *token_hp(const signer_t *s, const char *header, const char *payload, int flags)
{
    char *h = b64u(header, strlen(header));
    char *p = b64u(payload, strlen(payload));
    char *input = xasprintf("%s.%s", h, p);
    uint8_t sig[512];
    size_t n = 0;
    if (!(flags & NO_SIG))
        n = sign_bytes(s, input, strlen(input), sig);
    if (flags & FLIP_SIG)
        sig[n / 2] ^= 0x01;
    if (flags & SHORT_SIG)
        n--;
    if (flags & LONG_SIG)
        sig[n++] = 0;
    char *sb = b64u(sig, n);
    char *t = xasprintf("%s.%s", input, sb);
    free(h);
    free(p);
    free(input);
    free(sb);
    return t;
}

static char *std_header(jwt_alg_t alg)
{
    return xasprintf("{\"alg\":\"%s\",\"typ\":\"JWT\"}", jwt_alg_name(alg));
}

static char *token_f(const signer_t *s, const char *payload, int flags)
{
    char *h = std_header(s->alg);
    char *t = token_hp(s, h, payload, flags);
    free(h);
    return t;
}

static char *token(const signer_t *s, const char *payload)
{
    return token_f(s, payload, 0);
}

static signer_t signer_for(const keys_t *k, jwt_alg_t alg)
{
    signer_t s = {.alg = alg};
    switch (alg) {
    case JWT_HS256:
        s.secret = SECRET;
        s.secret_len = strlen(SECRET);
        break;
    case JWT_RS256:
        s.pkey = k->rsa;
        break;
    case JWT_ES256:
        s.pkey = k->ec;
        break;
    case JWT_EDDSA:
        s.pkey = k->ed;
        break;
    }
    return s;
}

static const char *pem_for(const keys_t *k, jwt_alg_t alg)
{
    return alg == JWT_RS256 ? k->rsa_pem : alg == JWT_ES256 ? k->ec_pem : k->ed_pem;
}

static void init_verifier(const keys_t *k, jwt_alg_t alg, jwt_verifier_t *v)
{
    char err[128] = "";
    if (alg == JWT_HS256) {
        assert_int_equal(jwt_verifier_init_secret(v, SECRET, strlen(SECRET)), 0);
        return;
    }
    const char *pem = pem_for(k, alg);
    assert_int_equal(jwt_verifier_init_pem(v, alg, pem, strlen(pem), err, sizeof(err)), 0);
    assert_string_equal(err, "");
}

static int verify_c(const jwt_verifier_t *v, const char *tok, jwt_claims_t *c)
{
    jwt_claims_t local;
    return jwt_verify(v, tok, strlen(tok), NOW, c != NULL ? c : &local);
}

/* Verifies a token already built, then frees it. */
static int verify_free(const jwt_verifier_t *v, char *tok)
{
    int rc = verify_c(v, tok, NULL);
    free(tok);
    return rc;
}

/* Signs payload with the standard header and verifies it with v. */
static int check(const jwt_verifier_t *v, const signer_t *s, const char *payload)
{
    return verify_free(v, token(s, payload));
}

/* HS256 verify of a token whose header text and payload text are given. */
static int run_hs(const char *header, const char *payload)
{
    jwt_verifier_t v;
    signer_t s = {.alg = JWT_HS256, .secret = SECRET, .secret_len = strlen(SECRET)};
    assert_int_equal(jwt_verifier_init_secret(&v, SECRET, strlen(SECRET)), 0);
    int rc = verify_free(&v, token_hp(&s, header, payload, 0));
    jwt_verifier_dispose(&v);
    return rc;
}

/* HS256 verify of a token given as text. */
static int run_hs_raw(const char *tok)
{
    jwt_verifier_t v;
    jwt_claims_t c;
    assert_int_equal(jwt_verifier_init_secret(&v, SECRET, strlen(SECRET)), 0);
    int rc = jwt_verify(&v, tok, strlen(tok), NOW, &c);
    jwt_verifier_dispose(&v);
    return rc;
}

/* ---- setup ---- */

/* EVP_PKEY_Q_keygen takes no size for RSA-PSS */
static EVP_PKEY *keygen_rsa_pss(void)
{
    EVP_PKEY *k = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA-PSS", NULL);
    if (ctx == NULL || EVP_PKEY_keygen_init(ctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048) != 1 || EVP_PKEY_generate(ctx, &k) != 1)
        k = NULL;
    EVP_PKEY_CTX_free(ctx);
    return k;
}

static int group_setup(void **state)
{
    keys_t *k = calloc(1, sizeof(*k));
    if (k == NULL)
        return -1;
    *state = k; /* teardown frees what was made, even after a failure */
    k->rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    k->rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    k->rsa1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
    k->rsapss = keygen_rsa_pss();
    k->ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    k->ec2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    k->ec384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    k->ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    k->ed2 = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!k->rsa || !k->rsa2 || !k->rsa1024 || !k->rsapss || !k->ec || !k->ec2 || !k->ec384 ||
        !k->ed || !k->ed2)
        return -1;
    k->rsa_pem = pub_pem(k->rsa);
    k->rsa_pkcs1_pem = rsa_pkcs1_pem(k->rsa);
    k->rsa_priv_pem = priv_pem(k->rsa);
    k->rsa1024_pem = pub_pem(k->rsa1024);
    k->rsapss_pem = pub_pem(k->rsapss);
    k->ec_pem = pub_pem(k->ec);
    k->ec384_pem = pub_pem(k->ec384);
    k->ed_pem = pub_pem(k->ed);
    return 0;
}

static int group_teardown(void **state)
{
    keys_t *k = *state;
    if (k == NULL)
        return 0;
    EVP_PKEY *pk[] = {k->rsa, k->rsa2,  k->rsa1024, k->rsapss, k->ec,
                      k->ec2, k->ec384, k->ed,      k->ed2};
    char *pems[] = {k->rsa_pem,    k->rsa_pkcs1_pem, k->rsa_priv_pem, k->rsa1024_pem,
                    k->rsapss_pem, k->ec_pem,        k->ec384_pem,    k->ed_pem};
    for (size_t i = 0; i < AW_ARRAY_LEN(pk); i++)
        EVP_PKEY_free(pk[i]);
    for (size_t i = 0; i < AW_ARRAY_LEN(pems); i++)
        free(pems[i]);
    free(k);
    return 0;
}

/* ---- algorithm names ---- */

static void test_alg_parse(void **state)
{
    (void)state;
    static const char *names[] = {"HS256", "RS256", "ES256", "EdDSA"};
    static const jwt_alg_t algs[] = {JWT_HS256, JWT_RS256, JWT_ES256, JWT_EDDSA};
    jwt_alg_t a;
    for (size_t i = 0; i < AW_ARRAY_LEN(names); i++) {
        a = (jwt_alg_t)99;
        assert_int_equal(jwt_alg_parse(names[i], &a), 0);
        assert_int_equal(a, algs[i]);
        assert_string_equal(jwt_alg_name(algs[i]), names[i]);
    }
    static const char *bad[] = {"none",  "None",  "",      "hs256",   "HS256 ", " HS256", "HS384",
                                "RS512", "EDDSA", "eddsa", "Ed25519", "PS256",  "ES256K"};
    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++) {
        a = (jwt_alg_t)99;
        assert_int_equal(jwt_alg_parse(bad[i], &a), AW_EINVAL);
        assert_int_equal(a, 99);
    }
    assert_int_equal(jwt_alg_parse(NULL, &a), AW_EINVAL);
    assert_int_equal(jwt_alg_parse("HS256", NULL), AW_EINVAL);
}

/* ---- valid tokens ---- */

static void check_valid(const keys_t *k, jwt_alg_t alg)
{
    jwt_verifier_t v;
    jwt_claims_t c;
    signer_t s = signer_for(k, alg);
    init_verifier(k, alg, &v);
    assert_int_equal(v.alg, alg);
    char *t = token(&s, GOOD);
    memset(&c, 0xAA, sizeof(c));
    assert_int_equal(verify_c(&v, t, &c), 0);
    assert_string_equal(c.sub, "u1");
    assert_int_equal(c.exp, 1700003600);
    assert_int_equal(c.nbf, 1699999000);
    assert_int_equal(c.iat, 1699999000);
    free(t);

    /* optional claims absent read as 0; extra claims are ignored */
    t = token(&s, "{\"exp\":1700003600,\"sub\":\"alice@example\",\"role\":[1,2],\"iss\":7}");
    memset(&c, 0xAA, sizeof(c));
    assert_int_equal(verify_c(&v, t, &c), 0);
    assert_string_equal(c.sub, "alice@example");
    assert_int_equal(c.nbf, 0);
    assert_int_equal(c.iat, 0);
    free(t);

    /* typ is optional */
    char *h = xasprintf("{\"alg\":\"%s\",\"kid\":\"k1\"}", jwt_alg_name(alg));
    assert_int_equal(verify_free(&v, token_hp(&s, h, GOOD, 0)), 0);
    free(h);
    jwt_verifier_dispose(&v);
}

/* ES256: of the two spellings (r, s) and (r, n - s) of one signature, only
 * the low-S one verifies, unless allow_high_s is set. */
static void test_es256_high_s(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    signer_t s = signer_for(k, JWT_ES256);
    init_verifier(k, JWT_ES256, &v);
    char *h = b64u("{\"alg\":\"ES256\"}", 15);
    char *p = b64u(GOOD, strlen(GOOD));
    char *input = xasprintf("%s.%s", h, p);
    uint8_t raw[512];
    assert_int_equal(sign_bytes(&s, input, strlen(input), raw), 64);
    char *sb = b64u(raw, 64);
    assert_int_equal(verify_free(&v, xasprintf("%s.%s", input, sb)), 0);
    free(sb);
    es256_flip_s(raw);
    sb = b64u(raw, 64);
    char *high = xasprintf("%s.%s", input, sb);
    assert_int_equal(verify_c(&v, high, NULL), AW_ESIG);
    v.allow_high_s = true;
    assert_int_equal(verify_c(&v, high, NULL), 0);
    free(high);
    free(sb);
    free(input);
    free(p);
    free(h);
    jwt_verifier_dispose(&v);
}

static void test_valid_hs256(void **state)
{
    check_valid(*state, JWT_HS256);
}

static void test_valid_rs256(void **state)
{
    check_valid(*state, JWT_RS256);
}

static void test_valid_es256(void **state)
{
    check_valid(*state, JWT_ES256);
}

static void test_valid_eddsa(void **state)
{
    check_valid(*state, JWT_EDDSA);
}

/* ---- bad signatures ---- */

static void check_bad_sig(const keys_t *k, jwt_alg_t alg, const signer_t *other)
{
    jwt_verifier_t v;
    signer_t s = signer_for(k, alg);
    init_verifier(k, alg, &v);

    /* one bit of the raw signature flipped */
    assert_int_equal(verify_free(&v, token_f(&s, GOOD, FLIP_SIG)), AW_ESIG);
    /* right shape, wrong key */
    assert_int_equal(check(&v, other, GOOD), AW_ESIG);
    /* empty signature */
    assert_int_equal(verify_free(&v, token_f(&s, GOOD, NO_SIG)), AW_ESIG);

    /* payload swapped under a valid signature of another payload */
    char *t1 = token(&s, GOOD);
    char *t2 = token(&s, "{\"sub\":\"admin\",\"exp\":1700003600}");
    char *sig1 = strrchr(t1, '.');
    char *sig2 = strrchr(t2, '.');
    char *forged = xasprintf("%.*s%s", (int)(sig2 - t2), t2, sig1);
    assert_int_equal(verify_free(&v, forged), AW_ESIG);

    /* signature one byte short, one zero byte long */
    assert_int_equal(verify_free(&v, token_f(&s, GOOD, SHORT_SIG)), AW_ESIG);
    assert_int_equal(verify_free(&v, token_f(&s, GOOD, LONG_SIG)), AW_ESIG);
    free(t1);
    free(t2);
    jwt_verifier_dispose(&v);
}

static void test_bad_signature(void **state)
{
    const keys_t *k = *state;
    signer_t hs = {.alg = JWT_HS256, .secret = "other secret", .secret_len = 12};
    signer_t rs = {.alg = JWT_RS256, .pkey = k->rsa2};
    signer_t es = {.alg = JWT_ES256, .pkey = k->ec2};
    signer_t ed = {.alg = JWT_EDDSA, .pkey = k->ed2};
    check_bad_sig(k, JWT_HS256, &hs);
    check_bad_sig(k, JWT_RS256, &rs);
    check_bad_sig(k, JWT_ES256, &es);
    check_bad_sig(k, JWT_EDDSA, &ed);
    /* failures leave nothing in OpenSSL's error queue */
    assert_int_equal(ERR_peek_error(), 0);
}

/* ES256 wants raw R||S: DER, or any length but 64, fails. */
static void test_es256_signature_shape(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    init_verifier(k, JWT_ES256, &v);
    char *h = b64u("{\"alg\":\"ES256\"}", 15);
    char *p = b64u(GOOD, strlen(GOOD));
    char *input = xasprintf("%s.%s", h, p);

    /* the DER form OpenSSL produces natively */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t der[128];
    size_t derlen = sizeof(der);
    assert_int_equal(EVP_DigestSignInit_ex(ctx, NULL, "SHA256", NULL, NULL, k->ec, NULL), 1);
    assert_int_equal(EVP_DigestSign(ctx, der, &derlen, (unsigned char *)input, strlen(input)), 1);
    EVP_MD_CTX_free(ctx);
    char *sb = b64u(der, derlen);
    assert_int_equal(verify_free(&v, xasprintf("%s.%s", input, sb)), AW_ESIG);
    free(sb);

    /* the same signature as R||S verifies; 63 and 65 bytes do not */
    signer_t s = signer_for(k, JWT_ES256);
    uint8_t raw[512];
    assert_int_equal(sign_bytes(&s, input, strlen(input), raw), 64);
    sb = b64u(raw, 64);
    assert_int_equal(verify_free(&v, xasprintf("%s.%s", input, sb)), 0);
    free(sb);
    sb = b64u(raw, 63);
    assert_int_equal(verify_free(&v, xasprintf("%s.%s", input, sb)), AW_ESIG);
    free(sb);
    raw[64] = 0;
    sb = b64u(raw, 65);
    assert_int_equal(verify_free(&v, xasprintf("%s.%s", input, sb)), AW_ESIG);
    free(sb);
    /* R and S zero */
    memset(raw, 0, 64);
    sb = b64u(raw, 64);
    assert_int_equal(verify_free(&v, xasprintf("%s.%s", input, sb)), AW_ESIG);
    free(sb);
    /* R and S all ones: above the group order */
    memset(raw, 0xff, 64);
    sb = b64u(raw, 64);
    assert_int_equal(verify_free(&v, xasprintf("%s.%s", input, sb)), AW_ESIG);
    free(sb);

    free(input);
    free(h);
    free(p);
    jwt_verifier_dispose(&v);
}

/* ---- algorithm pinning ---- */

static void test_alg_none(void **state)
{
    const keys_t *k = *state;
    static const char *headers[] = {
        "{\"alg\":\"none\"}", "{\"alg\":\"none\",\"typ\":\"JWT\"}",
        "{\"alg\":\"None\"}", "{\"alg\":\"NONE\"}",
        "{\"alg\":\"nOnE\"}",
    };
    for (jwt_alg_t alg = JWT_HS256; alg <= JWT_EDDSA; alg++) {
        jwt_verifier_t v;
        signer_t s = signer_for(k, alg);
        init_verifier(k, alg, &v);
        for (size_t i = 0; i < AW_ARRAY_LEN(headers); i++) {
            /* unsigned: "h.p." */
            char *t = token_hp(&s, headers[i], GOOD, NO_SIG);
            assert_int_equal(t[strlen(t) - 1], '.');
            assert_int_equal(verify_free(&v, t), AW_EALG);
            /* with a signature that would be valid for the pinned algorithm */
            assert_int_equal(verify_free(&v, token_hp(&s, headers[i], GOOD, 0)), AW_EALG);
        }
        jwt_verifier_dispose(&v);
    }
}

static void test_alg_spelling(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    signer_t s = signer_for(k, JWT_HS256);
    init_verifier(k, JWT_HS256, &v);
    static const char *headers[] = {
        "{\"alg\":\"hs256\"}",  "{\"alg\":\"HS256 \"}", "{\"alg\":\"HS512\"}",
        "{\"alg\":\"\"}",       "{\"alg\":\"RS256\"}",  "{\"alg\":\"HS256\\u0000\"}",
        "{\"alg\":\"HS2560\"}",
    };
    for (size_t i = 0; i < AW_ARRAY_LEN(headers); i++) {
        int rc = verify_free(&v, token_hp(&s, headers[i], GOOD, 0));
        /* jansson refuses \u0000, so that one is malformed instead */
        assert_int_equal(rc, strstr(headers[i], "u0000") ? AW_EMALFORMED : AW_EALG);
    }
    jwt_verifier_dispose(&v);
}

/* The classic confusion: an HS256 token whose HMAC key is the server's public
 * PEM text. It must be refused by the header check, not by luck. */
static void test_alg_confusion_hs256_with_pem(void **state)
{
    const keys_t *k = *state;
    for (jwt_alg_t alg = JWT_RS256; alg <= JWT_EDDSA; alg++) {
        const char *pem = pem_for(k, alg);
        signer_t hs = {.alg = JWT_HS256, .secret = pem, .secret_len = strlen(pem)};
        jwt_verifier_t v;
        init_verifier(k, alg, &v);
        assert_int_equal(check(&v, &hs, GOOD), AW_EALG);
        hs.secret_len--; /* without the trailing newline */
        assert_int_equal(check(&v, &hs, GOOD), AW_EALG);
        jwt_verifier_dispose(&v);

        /* the forged token is otherwise genuine: an HS256 verifier keyed with
         * the PEM text accepts it */
        hs.secret_len++;
        assert_int_equal(jwt_verifier_init_secret(&v, pem, strlen(pem)), 0);
        assert_int_equal(check(&v, &hs, GOOD), 0);
        jwt_verifier_dispose(&v);
    }
}

static void test_alg_cross(void **state)
{
    const keys_t *k = *state;
    for (jwt_alg_t pinned = JWT_HS256; pinned <= JWT_EDDSA; pinned++) {
        jwt_verifier_t v;
        init_verifier(k, pinned, &v);
        for (jwt_alg_t alg = JWT_HS256; alg <= JWT_EDDSA; alg++) {
            signer_t s = signer_for(k, alg);
            assert_int_equal(check(&v, &s, GOOD), alg == pinned ? 0 : AW_EALG);
        }
        jwt_verifier_dispose(&v);
    }
    /* header says ES256, signed with RS256: the header cannot pick the key */
    jwt_verifier_t v;
    init_verifier(k, JWT_ES256, &v);
    signer_t rs = signer_for(k, JWT_RS256);
    assert_int_equal(verify_free(&v, token_hp(&rs, "{\"alg\":\"ES256\"}", GOOD, 0)), AW_ESIG);
    jwt_verifier_dispose(&v);
}

/* ---- time claims ---- */

static void test_expired(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    signer_t s = signer_for(k, JWT_HS256);
    init_verifier(k, JWT_HS256, &v);
    assert_int_equal(v.leeway_s, 30);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1699990000}"), AW_EEXPIRED);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1699999969}"), AW_EEXPIRED);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1699999970}"), AW_EEXPIRED);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1699999971}"), 0); /* leeway */
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1700000000}"), 0);
    /* reals are compared exactly against the integer clock */
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1699999970.0}"), AW_EEXPIRED);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1699999969.5}"), AW_EEXPIRED);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1699999970.5}"), 0);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1.7000036e9}"), 0);
    /* extremes do not overflow exp + leeway */
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":9223372036854775807}"), 0);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":-9223372036854775808}"), AW_EEXPIRED);

    v.leeway_s = 0;
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1700000000}"), AW_EEXPIRED);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1700000001}"), 0);
    jwt_verifier_dispose(&v);
}

static void test_not_yet(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    jwt_claims_t c;
    signer_t s = signer_for(k, JWT_ES256);
    init_verifier(k, JWT_ES256, &v);
#define NBF(x) "{\"sub\":\"u\",\"exp\":1700003600,\"nbf\":" x "}"
    assert_int_equal(check(&v, &s, NBF("1700003000")), AW_ENOTYET);
    assert_int_equal(check(&v, &s, NBF("1700000031")), AW_ENOTYET);
    assert_int_equal(check(&v, &s, NBF("1700000030.5")), AW_ENOTYET);
    assert_int_equal(check(&v, &s, NBF("1700000030")), 0); /* leeway */
    char *t = token(&s, NBF("1700000029.25"));
    assert_int_equal(verify_c(&v, t, &c), 0);
    assert_int_equal(c.nbf, 1700000030);
    free(t);
    assert_int_equal(check(&v, &s, NBF("-9223372036854775808")), 0);
    assert_int_equal(check(&v, &s, NBF("9223372036854775807")), AW_ENOTYET);

    v.leeway_s = 0;
    assert_int_equal(check(&v, &s, NBF("1700000000")), 0);
    assert_int_equal(check(&v, &s, NBF("1700000001")), AW_ENOTYET);
#undef NBF
    jwt_verifier_dispose(&v);
}

static void test_time_claim_types(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    jwt_claims_t c;
    signer_t s = signer_for(k, JWT_EDDSA);
    init_verifier(k, JWT_EDDSA, &v);
    static const char *bad[] = {
        "{\"sub\":\"u\"}",
        "{\"sub\":\"u\",\"exp\":\"1700003600\"}",
        "{\"sub\":\"u\",\"exp\":null}",
        "{\"sub\":\"u\",\"exp\":true}",
        "{\"sub\":\"u\",\"exp\":[1700003600]}",
        "{\"sub\":\"u\",\"exp\":{}}",
        "{\"sub\":\"u\",\"exp\":1e300}",
        "{\"sub\":\"u\",\"exp\":-1e300}",
        "{\"sub\":\"u\",\"exp\":1700003600,\"nbf\":\"1\"}",
        "{\"sub\":\"u\",\"exp\":1700003600,\"nbf\":null}",
        "{\"sub\":\"u\",\"exp\":1700003600,\"iat\":\"1\"}",
        "{\"sub\":\"u\",\"exp\":1700003600,\"iat\":false}",
        "{\"sub\":\"u\",\"exp\":1700003600,\"iat\":[]}",
    };
    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++)
        assert_int_equal(check(&v, &s, bad[i]), AW_ECLAIMS);

    char *t = token(&s, "{\"sub\":\"u\",\"exp\":1700003600.0,\"iat\":1699999999.5,\"nbf\":0}");
    assert_int_equal(verify_c(&v, t, &c), 0);
    assert_int_equal(c.exp, 1700003600);
    assert_int_equal(c.iat, 1700000000);
    assert_int_equal(c.nbf, 0);
    free(t);
    jwt_verifier_dispose(&v);
}

/* ---- iss, aud, sub ---- */

static void test_issuer(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    signer_t s = signer_for(k, JWT_RS256);
    init_verifier(k, JWT_RS256, &v);
    assert_null(v.issuer);
    /* not configured: iss is not looked at */
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1700003600,\"iss\":\"evil\"}"), 0);

    assert_int_equal(jwt_verifier_set_issuer(&v, "https://auth.example"), 0);
    assert_string_equal(v.issuer, "https://auth.example");
#define ISS(x) "{\"sub\":\"u\",\"exp\":1700003600,\"iss\":" x "}"
    assert_int_equal(check(&v, &s, ISS("\"https://auth.example\"")), 0);
    assert_int_equal(check(&v, &s, ISS("\"https://auth.example/\"")), AW_EISS);
    assert_int_equal(check(&v, &s, ISS("\"https://AUTH.example\"")), AW_EISS);
    assert_int_equal(check(&v, &s, ISS("\"https://auth.exampl\"")), AW_EISS);
    assert_int_equal(check(&v, &s, ISS("\"\"")), AW_EISS);
    assert_int_equal(check(&v, &s, ISS("[\"https://auth.example\"]")), AW_EISS);
    assert_int_equal(check(&v, &s, ISS("null")), AW_EISS);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1700003600}"), AW_EISS);
#undef ISS
    /* replacing and clearing */
    assert_int_equal(jwt_verifier_set_issuer(&v, "other"), 0);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1700003600,\"iss\":\"other\"}"), 0);
    assert_int_equal(jwt_verifier_set_issuer(&v, NULL), 0);
    assert_null(v.issuer);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1700003600}"), 0);
    assert_int_equal(jwt_verifier_set_issuer(NULL, "x"), AW_EINVAL);
    jwt_verifier_dispose(&v);
}

static void test_audience(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    signer_t s = signer_for(k, JWT_HS256);
    init_verifier(k, JWT_HS256, &v);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1700003600,\"aud\":\"x\"}"), 0);

    assert_int_equal(jwt_verifier_set_audience(&v, "agentwire"), 0);
#define AUD(x) "{\"sub\":\"u\",\"exp\":1700003600,\"aud\":" x "}"
    assert_int_equal(check(&v, &s, AUD("\"agentwire\"")), 0);
    assert_int_equal(check(&v, &s, AUD("[\"agentwire\"]")), 0);
    assert_int_equal(check(&v, &s, AUD("[\"billing\",\"agentwire\"]")), 0);
    assert_int_equal(check(&v, &s, AUD("[1,null,\"agentwire\"]")), 0);
    assert_int_equal(check(&v, &s, AUD("\"billing\"")), AW_EAUD);
    assert_int_equal(check(&v, &s, AUD("\"agentwire2\"")), AW_EAUD);
    assert_int_equal(check(&v, &s, AUD("\"Agentwire\"")), AW_EAUD);
    assert_int_equal(check(&v, &s, AUD("[\"billing\",\"agent\"]")), AW_EAUD);
    assert_int_equal(check(&v, &s, AUD("[]")), AW_EAUD);
    assert_int_equal(check(&v, &s, AUD("[[\"agentwire\"]]")), AW_EAUD);
    assert_int_equal(check(&v, &s, AUD("{\"agentwire\":1}")), AW_EAUD);
    assert_int_equal(check(&v, &s, AUD("null")), AW_EAUD);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1700003600}"), AW_EAUD);
#undef AUD
    assert_int_equal(jwt_verifier_set_audience(&v, NULL), 0);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1700003600}"), 0);
    assert_int_equal(jwt_verifier_set_audience(NULL, "x"), AW_EINVAL);
    jwt_verifier_dispose(&v);
}

static void test_sub(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    jwt_claims_t c;
    signer_t s = signer_for(k, JWT_HS256);
    init_verifier(k, JWT_HS256, &v);
    static const char *bad[] = {
        "{\"exp\":1700003600}",
        "{\"sub\":\"\",\"exp\":1700003600}",
        "{\"sub\":42,\"exp\":1700003600}",
        "{\"sub\":null,\"exp\":1700003600}",
        "{\"sub\":true,\"exp\":1700003600}",
        "{\"sub\":[\"u1\"],\"exp\":1700003600}",
        "{\"sub\":{\"id\":\"u1\"},\"exp\":1700003600}",
    };
    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++)
        assert_int_equal(check(&v, &s, bad[i]), AW_ECLAIMS);

    char longest[JWT_MAX_SUB + 2];
    memset(longest, 'a', sizeof(longest));
    longest[JWT_MAX_SUB] = '\0'; /* 255 bytes: accepted whole */
    char *p = xasprintf("{\"sub\":\"%s\",\"exp\":1700003600}", longest);
    char *t = token(&s, p);
    assert_int_equal(verify_c(&v, t, &c), 0);
    assert_int_equal(strlen(c.sub), JWT_MAX_SUB);
    assert_string_equal(c.sub, longest);
    free(t);
    free(p);

    longest[JWT_MAX_SUB] = 'a'; /* 256 bytes */
    longest[JWT_MAX_SUB + 1] = '\0';
    p = xasprintf("{\"sub\":\"%s\",\"exp\":1700003600}", longest);
    assert_int_equal(check(&v, &s, p), AW_ECLAIMS);
    free(p);

    /* the limit is in bytes: 128 two-byte characters are 256 bytes */
    char wide[2 * 128 + 1] = "";
    for (int i = 0; i < 128; i++)
        strcat(wide, "\xc3\xa9");
    p = xasprintf("{\"sub\":\"%s\",\"exp\":1700003600}", wide);
    assert_int_equal(check(&v, &s, p), AW_ECLAIMS);
    free(p);
    wide[2 * 127] = '\0';
    p = xasprintf("{\"sub\":\"%s\",\"exp\":1700003600}", wide);
    t = token(&s, p);
    assert_int_equal(verify_c(&v, t, &c), 0);
    assert_string_equal(c.sub, wide);
    free(t);
    free(p);

    /* escapes are decoded */
    t = token(&s, "{\"sub\":\"a\\u00e9\\/b\",\"exp\":1700003600}");
    assert_int_equal(verify_c(&v, t, &c), 0);
    assert_string_equal(c.sub, "a\xc3\xa9/b");
    free(t);
    jwt_verifier_dispose(&v);
}

/* The documented order decides which error a token with several faults gets,
 * and a failure leaves no claims behind. */
static void test_check_order(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    jwt_claims_t c;
    signer_t s = signer_for(k, JWT_HS256);
    init_verifier(k, JWT_HS256, &v);
    assert_int_equal(jwt_verifier_set_issuer(&v, "iss"), 0);
    assert_int_equal(jwt_verifier_set_audience(&v, "aud"), 0);

    /* bad signature beats bad claims: claims are not read before it */
    assert_int_equal(verify_free(&v, token_f(&s, "{\"x\":1}", FLIP_SIG)), AW_ESIG);
    assert_int_equal(verify_free(&v, token_f(&s, "[1]", FLIP_SIG)), AW_ESIG);
    assert_int_equal(verify_free(&v, token_f(&s, "not json", FLIP_SIG)), AW_ESIG);
    /* bad typ beats wrong alg; wrong alg beats bad signature */
    assert_int_equal(verify_free(&v, token_hp(&s, "{\"alg\":\"none\",\"typ\":\"x\"}", GOOD, 0)),
                     AW_EMALFORMED);
    assert_int_equal(verify_free(&v, token_hp(&s, "{\"alg\":\"none\"}", GOOD, FLIP_SIG)), AW_EALG);
    /* claims, expired, not yet, iss, aud */
    assert_int_equal(check(&v, &s, "{\"sub\":\"\",\"exp\":1,\"iss\":\"x\"}"), AW_ECLAIMS);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1,\"nbf\":1800000000}"), AW_EEXPIRED);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1800000000,\"nbf\":1800000000}"),
                     AW_ENOTYET);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1800000000,\"aud\":\"x\"}"), AW_EISS);
    assert_int_equal(check(&v, &s, "{\"sub\":\"u\",\"exp\":1800000000,\"iss\":\"iss\"}"), AW_EAUD);
    char *t = token(&s, "{\"sub\":\"u\",\"exp\":1800000000,\"iss\":\"iss\",\"aud\":[\"aud\"]}");
    assert_int_equal(verify_c(&v, t, &c), 0);
    free(t);

    t = token(&s, "{\"sub\":\"u\",\"exp\":1,\"iat\":5}");
    memset(&c, 0xAA, sizeof(c));
    assert_int_equal(verify_c(&v, t, &c), AW_EEXPIRED);
    assert_int_equal(c.sub[0], '\0');
    assert_int_equal(c.exp, 0);
    assert_int_equal(c.iat, 0);
    free(t);
    jwt_verifier_dispose(&v);
}

/* ---- malformed tokens ---- */

static void test_malformed_structure(void **state)
{
    const keys_t *k = *state;
    signer_t s = signer_for(k, JWT_HS256);
    char *good = token(&s, GOOD);
    assert_int_equal(run_hs_raw(good), 0);
    char *d1 = strchr(good, '.'), *d2 = strrchr(good, '.');
    int hn = (int)(d1 - good), pn = (int)(d2 - d1 - 1);
    const char *h = good, *p = d1 + 1, *sg = d2 + 1;

    char *bad[] = {
        xasprintf("%s", ""),
        xasprintf("%.*s", hn, h),                         /* one part */
        xasprintf("%.*s.%.*s", hn, h, pn, p),             /* two parts */
        xasprintf("%s.%s", good, sg),                     /* four parts */
        xasprintf("%s.", good),                           /* four, last empty */
        xasprintf(".%s", good),                           /* four, first empty */
        xasprintf(".%.*s.%s", pn, p, sg),                 /* empty header */
        xasprintf("%.*s..%s", hn, h, sg),                 /* empty payload */
        xasprintf(".."),                                  /* all empty */
        xasprintf("..."),                                 /* four empty */
        xasprintf("%.*s!.%.*s.%s", hn - 1, h, pn, p, sg), /* bad character */
        xasprintf("%.*s+.%.*s.%s", hn - 1, h, pn, p, sg), /* standard alphabet */
        xasprintf("%.*s.%.*s/.%s", hn, h, pn - 1, p, sg), /* standard alphabet */
        xasprintf("%.*s .%.*s.%s", hn - 1, h, pn, p, sg), /* space */
        xasprintf("%.*s.%.*s.%s=", hn, h, pn, p, sg),     /* padding */
        xasprintf("%.*s.%.*s.%sAA", hn, h, pn, p, sg),    /* 1 mod 4 */
        xasprintf("%.*s.%.*s.%s*", hn, h, pn, p, sg),     /* bad char in sig */
        xasprintf(" %s", good),                           /* leading space */
        xasprintf("%s\n", good),                          /* trailing newline */
        xasprintf("Bearer %s", good),                     /* scheme left in */
    };
    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++) {
        if (run_hs_raw(bad[i]) != AW_EMALFORMED)
            fail_msg("case %zu \"%s\" was not malformed", i, bad[i]);
        free(bad[i]);
    }

    /* non-zero trailing bits: "eyJ" + one char whose low bits are set */
    jwt_verifier_t v;
    jwt_claims_t c;
    assert_int_equal(jwt_verifier_init_secret(&v, SECRET, strlen(SECRET)), 0);
    assert_int_equal(jwt_verify(&v, "eyK.e30.AAAA", 12, NOW, &c), AW_EMALFORMED);
    /* an embedded NUL inside len */
    char *nul = xasprintf("%s", good);
    nul[hn / 2] = '\0';
    assert_int_equal(jwt_verify(&v, nul, strlen(good), NOW, &c), AW_EMALFORMED);
    /* len shorter than the string: only len bytes count */
    assert_int_equal(jwt_verify(&v, good, (size_t)(d2 - good), NOW, &c), AW_EMALFORMED);
    assert_int_equal(jwt_verify(&v, good, (size_t)(d2 - good) + 1, NOW, &c), AW_ESIG);
    free(nul);
    jwt_verifier_dispose(&v);
    free(good);
}

static void test_malformed_header(void **state)
{
    (void)state;
    static const char *bad[] = {
        "not json",
        "",
        "[\"HS256\"]",
        "\"HS256\"",
        "null",
        "{\"alg\":\"HS256\"} x",
        "{\"alg\":\"HS256\"",
        "{\"alg\":\"none\",\"alg\":\"HS256\"}", /* duplicate key */
        "{\"typ\":\"JWT\"}",                    /* no alg */
        "{\"alg\":256}",                        /* alg not a string */
        "{\"alg\":null}",
        "{\"alg\":[\"HS256\"]}",
        "{\"alg\":\"HS256\",\"typ\":\"JWS\"}", /* typ not JWT */
        "{\"alg\":\"HS256\",\"typ\":\"at+jwt\"}",
        "{\"alg\":\"HS256\",\"typ\":\"JWTX\"}",
        "{\"alg\":\"HS256\",\"typ\":\"\"}",
        "{\"alg\":\"HS256\",\"typ\":1}",
        "{\"alg\":\"HS256\",\"typ\":null}",
        "{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", /* crit: nothing understood */
        "{\"alg\":\"HS256\",\"crit\":[]}",
        "{\"alg\":\"HS256\",\"crit\":null}",
        "{\"alg\":\"HS\\ud800256\"}", /* lone surrogate */
    };
    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++) {
        if (run_hs(bad[i], GOOD) != AW_EMALFORMED)
            fail_msg("header %zu '%s' was not malformed", i, bad[i]);
    }
    /* typ is case-insensitive; whitespace in the JSON is fine */
    assert_int_equal(run_hs("{\"alg\":\"HS256\",\"typ\":\"jwt\"}", GOOD), 0);
    assert_int_equal(run_hs("{\"alg\":\"HS256\",\"typ\":\"Jwt\"}", GOOD), 0);
    assert_int_equal(run_hs(" { \"typ\" : \"JWT\" ,\n \"alg\" : \"HS256\" } ", GOOD), 0);
    /* invalid UTF-8 in the header bytes */
    assert_int_equal(run_hs("{\"alg\":\"HS256\",\"kid\":\"\xff\"}", GOOD), AW_EMALFORMED);
}

static void test_malformed_payload(void **state)
{
    (void)state;
    static const char *bad[] = {
        "not json",
        "[{\"sub\":\"u\",\"exp\":1700003600}]",
        "\"sub\"",
        "42",
        "{\"sub\":\"u\",\"exp\":1700003600",
        "{\"sub\":\"u\",\"exp\":1700003600} {}",
        "{\"sub\":\"u\",\"sub\":\"admin\",\"exp\":1700003600}", /* duplicate sub */
        "{\"sub\":\"u\\u0000admin\",\"exp\":1700003600}",       /* NUL in sub */
        "{\"sub\":\"u\",\"exp\":99999999999999999999}",         /* beyond int64 */
    };
    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++) {
        if (run_hs("{\"alg\":\"HS256\"}", bad[i]) != AW_EMALFORMED)
            fail_msg("payload %zu '%s' was not malformed", i, bad[i]);
    }
}

/* ---- size ---- */

static void test_too_big(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    jwt_claims_t c;
    signer_t s = signer_for(k, JWT_HS256);
    init_verifier(k, JWT_HS256, &v);
    assert_int_equal(v.max_token, JWT_MAX_TOKEN);

    char *big = malloc(JWT_MAX_TOKEN + 1);
    assert_non_null(big);
    memset(big, 'A', JWT_MAX_TOKEN + 1);
    big[100] = big[200] = '.';
    assert_int_equal(jwt_verify(&v, big, JWT_MAX_TOKEN + 1, NOW, &c), AW_ETOOBIG);
    assert_int_equal(jwt_verify(&v, big, SIZE_MAX, NOW, &c), AW_ETOOBIG);
    /* at the limit the size is fine and the content is judged */
    assert_int_equal(jwt_verify(&v, big, JWT_MAX_TOKEN, NOW, &c), AW_EMALFORMED);
    free(big);

    /* a genuine token over the limit */
    char pad[JWT_MAX_TOKEN];
    memset(pad, 'x', sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    char *p = xasprintf("{\"sub\":\"u\",\"exp\":1700003600,\"pad\":\"%s\"}", pad);
    char *t = token(&s, p);
    assert_int_equal(verify_c(&v, t, &c), AW_ETOOBIG);
    v.max_token = strlen(t);
    assert_int_equal(verify_c(&v, t, &c), 0);
    v.max_token = strlen(t) - 1;
    assert_int_equal(verify_c(&v, t, &c), AW_ETOOBIG);
    free(t);
    free(p);
    jwt_verifier_dispose(&v);
}

/* ---- verifier setup ---- */

static void expect_init_fail(jwt_alg_t alg, const char *pem, size_t len)
{
    jwt_verifier_t v;
    char err[256];
    memset(&v, 0x5A, sizeof(v));
    memset(err, 0, sizeof(err));
    assert_int_equal(jwt_verifier_init_pem(&v, alg, pem, len, err, sizeof(err)), AW_EINVAL);
    assert_true(strlen(err) > 0);
    assert_null(strchr(err, '\n'));
    assert_null(v._pkey);
    jwt_verifier_dispose(&v); /* safe after a failed init */
}

static void test_init_key_mismatch(void **state)
{
    const keys_t *k = *state;
    expect_init_fail(JWT_ES256, k->rsa_pem, strlen(k->rsa_pem));
    expect_init_fail(JWT_EDDSA, k->rsa_pem, strlen(k->rsa_pem));
    expect_init_fail(JWT_RS256, k->ec_pem, strlen(k->ec_pem));
    expect_init_fail(JWT_EDDSA, k->ec_pem, strlen(k->ec_pem));
    expect_init_fail(JWT_RS256, k->ed_pem, strlen(k->ed_pem));
    expect_init_fail(JWT_ES256, k->ed_pem, strlen(k->ed_pem));
    expect_init_fail(JWT_ES256, k->ec384_pem, strlen(k->ec384_pem)); /* not P-256 */
    expect_init_fail(JWT_RS256, k->rsa1024_pem, strlen(k->rsa1024_pem));
    expect_init_fail(JWT_RS256, k->rsapss_pem, strlen(k->rsapss_pem)); /* RS256 is PKCS#1 v1.5 */
    expect_init_fail(JWT_ES256, k->rsa_pkcs1_pem, strlen(k->rsa_pkcs1_pem));
    expect_init_fail(JWT_HS256, k->rsa_pem, strlen(k->rsa_pem)); /* HS256 takes a secret */
    expect_init_fail((jwt_alg_t)42, k->rsa_pem, strlen(k->rsa_pem));

    char err[64];
    jwt_verifier_t v;
    assert_int_equal(
        jwt_verifier_init_pem(&v, JWT_ES256, k->rsa_pem, strlen(k->rsa_pem), err, sizeof(err)),
        AW_EINVAL);
    assert_non_null(strstr(err, "P-256"));
    /* a short err buffer is truncated, a NULL one is skipped */
    memset(err, 'z', sizeof(err));
    assert_int_equal(jwt_verifier_init_pem(&v, JWT_ES256, k->rsa_pem, strlen(k->rsa_pem), err, 5),
                     AW_EINVAL);
    assert_int_equal(strlen(err), 4);
    assert_int_equal(err[5], 'z');
    assert_int_equal(jwt_verifier_init_pem(&v, JWT_ES256, k->rsa_pem, strlen(k->rsa_pem), NULL, 0),
                     AW_EINVAL);
}

static void test_init_garbage_pem(void **state)
{
    const keys_t *k = *state;
    static const char *bad[] = {
        "garbage",
        "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
        "-----BEGIN PUBLIC KEY-----\nAAAAAAAA\n-----END PUBLIC KEY-----\n",
        "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
        "-----BEGIN RSA PUBLIC KEY-----\nMAA=\n-----END RSA PUBLIC KEY-----\n",
        "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
    };
    for (size_t i = 0; i < AW_ARRAY_LEN(bad); i++)
        expect_init_fail(JWT_RS256, bad[i], strlen(bad[i]));
    expect_init_fail(JWT_RS256, "", 0);
    expect_init_fail(JWT_RS256, NULL, 10);
    /* truncated in the middle of the base64 body */
    expect_init_fail(JWT_RS256, k->rsa_pem, strlen(k->rsa_pem) / 2);
    expect_init_fail(JWT_ES256, k->ec_pem, strlen(k->ec_pem) - 30);
    /* a private key is not accepted where a public key belongs */
    expect_init_fail(JWT_RS256, k->rsa_priv_pem, strlen(k->rsa_priv_pem));
    assert_int_equal(ERR_peek_error(), 0);

    jwt_verifier_t v;
    assert_int_equal(
        jwt_verifier_init_pem(NULL, JWT_RS256, k->rsa_pem, strlen(k->rsa_pem), NULL, 0), AW_EINVAL);
    /* an exact-length copy without a NUL is read within its bounds */
    size_t n = strlen(k->ed_pem);
    char *copy = malloc(n);
    assert_non_null(copy);
    memcpy(copy, k->ed_pem, n);
    assert_int_equal(jwt_verifier_init_pem(&v, JWT_EDDSA, copy, n, NULL, 0), 0);
    free(copy);
    signer_t s = signer_for(k, JWT_EDDSA);
    assert_int_equal(check(&v, &s, GOOD), 0);
    jwt_verifier_dispose(&v);
}

static void test_init_rsa_pkcs1(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    char err[128] = "";
    assert_non_null(strstr(k->rsa_pkcs1_pem, "BEGIN RSA PUBLIC KEY"));
    assert_int_equal(jwt_verifier_init_pem(&v, JWT_RS256, k->rsa_pkcs1_pem,
                                           strlen(k->rsa_pkcs1_pem), err, sizeof(err)),
                     0);
    signer_t s = signer_for(k, JWT_RS256);
    signer_t other = {.alg = JWT_RS256, .pkey = k->rsa2};
    assert_int_equal(check(&v, &s, GOOD), 0);
    assert_int_equal(check(&v, &other, GOOD), AW_ESIG);
    jwt_verifier_dispose(&v);
}

static void test_init_secret(void **state)
{
    (void)state;
    jwt_verifier_t v;
    assert_int_equal(jwt_verifier_init_secret(&v, NULL, 4), AW_EINVAL);
    jwt_verifier_dispose(&v);
    assert_int_equal(jwt_verifier_init_secret(&v, "k", 0), AW_EINVAL);
    jwt_verifier_dispose(&v);
    assert_int_equal(jwt_verifier_init_secret(NULL, "k", 1), AW_EINVAL);

    /* the secret is copied, binary-safe */
    uint8_t secret[] = {0, 1, 2, 0, 255};
    assert_int_equal(jwt_verifier_init_secret(&v, secret, sizeof(secret)), 0);
    assert_int_equal(v.alg, JWT_HS256);
    assert_int_equal(v.leeway_s, 30);
    assert_int_equal(v.max_token, JWT_MAX_TOKEN);
    assert_null(v.issuer);
    assert_null(v.audience);
    signer_t s = {.alg = JWT_HS256, .secret = secret, .secret_len = sizeof(secret)};
    char *t = token(&s, GOOD);
    memset(secret, 7, sizeof(secret));
    assert_int_equal(verify_free(&v, t), 0);
    /* a prefix of the secret is a different key */
    signer_t prefix = {.alg = JWT_HS256, .secret = "\0\1\2", .secret_len = 3};
    assert_int_equal(check(&v, &prefix, GOOD), AW_ESIG);
    jwt_verifier_dispose(&v);
}

static void test_dispose_reuse(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    init_verifier(k, JWT_HS256, &v);
    assert_int_equal(jwt_verifier_set_issuer(&v, "i"), 0);
    assert_int_equal(jwt_verifier_set_audience(&v, "a"), 0);
    jwt_verifier_dispose(&v);
    assert_null(v.issuer);
    assert_null(v.audience);
    assert_null(v._secret);
    jwt_verifier_dispose(&v); /* twice is harmless */
    jwt_verifier_dispose(NULL);

    init_verifier(k, JWT_ES256, &v);
    assert_null(v.issuer);
    signer_t s = signer_for(k, JWT_ES256);
    assert_int_equal(check(&v, &s, GOOD), 0);
    jwt_verifier_dispose(&v);
    assert_null(v._pkey);
}

static void test_verify_args(void **state)
{
    const keys_t *k = *state;
    jwt_verifier_t v;
    jwt_claims_t c;
    signer_t s = signer_for(k, JWT_HS256);
    init_verifier(k, JWT_HS256, &v);
    char *t = token(&s, GOOD);
    assert_int_equal(jwt_verify(NULL, t, strlen(t), NOW, &c), AW_EINVAL);
    assert_int_equal(jwt_verify(&v, NULL, 10, NOW, &c), AW_EINVAL);
    assert_int_equal(jwt_verify(&v, t, strlen(t), NOW, NULL), AW_EINVAL);
    assert_int_equal(jwt_verify(&v, t, strlen(t), NOW, &c), 0);
    free(t);
    jwt_verifier_dispose(&v);
}

/* ---- signing ---- */

static void test_sign_hs256_round_trip(void **state)
{
    const keys_t *k = *state;
    char out[1024];
    const char *claims = "{\"sub\":\"demo\",\"exp\":1700003600,\"iat\":1699999000}";
    assert_int_equal(jwt_sign_hs256(out, sizeof(out), SECRET, strlen(SECRET), claims), 0);

    /* byte for byte what an independent signer makes of the same texts */
    signer_t s = signer_for(k, JWT_HS256);
    char *expect = token_hp(&s, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", claims, 0);
    assert_string_equal(out, expect);
    free(expect);
    assert_null(strchr(out, '='));

    jwt_verifier_t v;
    jwt_claims_t c;
    init_verifier(k, JWT_HS256, &v);
    assert_int_equal(verify_c(&v, out, &c), 0);
    assert_string_equal(c.sub, "demo");
    assert_int_equal(c.exp, 1700003600);
    assert_int_equal(c.iat, 1699999000);
    jwt_verifier_dispose(&v);

    assert_int_equal(jwt_verifier_init_secret(&v, "other", 5), 0);
    assert_int_equal(verify_c(&v, out, &c), AW_ESIG);
    jwt_verifier_dispose(&v);
}

static void test_sign_hs256_errors(void **state)
{
    (void)state;
    char out[512];
    const char *claims = "{\"sub\":\"demo\",\"exp\":1700003600}";
    assert_int_equal(jwt_sign_hs256(out, sizeof(out), "k", 1, claims), 0);
    size_t need = strlen(out) + 1;
    char exact[512];

    /* exactly enough, then one byte short */
    memset(exact, '#', sizeof(exact));
    assert_int_equal(jwt_sign_hs256(exact, need, "k", 1, claims), 0);
    assert_string_equal(exact, out);
    assert_int_equal(exact[need], '#');
    memset(exact, '#', sizeof(exact));
    assert_int_equal(jwt_sign_hs256(exact, need - 1, "k", 1, claims), AW_ETOOBIG);
    assert_int_equal(exact[0], '\0');
    assert_int_equal(exact[need - 1], '#');
    assert_int_equal(jwt_sign_hs256(exact, 0, "k", 1, claims), AW_ETOOBIG);
    assert_int_equal(jwt_sign_hs256(exact, 1, "k", 1, claims), AW_ETOOBIG);

    assert_int_equal(jwt_sign_hs256(out, sizeof(out), "k", 1, "not json"), AW_EINVAL);
    assert_int_equal(jwt_sign_hs256(out, sizeof(out), "k", 1, "[1,2]"), AW_EINVAL);
    assert_int_equal(jwt_sign_hs256(out, sizeof(out), "k", 1, "\"s\""), AW_EINVAL);
    assert_int_equal(jwt_sign_hs256(out, sizeof(out), "k", 1, NULL), AW_EINVAL);
    assert_int_equal(jwt_sign_hs256(out, sizeof(out), "k", 0, claims), AW_EINVAL);
    assert_int_equal(jwt_sign_hs256(out, sizeof(out), NULL, 1, claims), AW_EINVAL);
    assert_int_equal(jwt_sign_hs256(NULL, 100, "k", 1, claims), AW_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alg_parse),
        cmocka_unit_test(test_valid_hs256),
        cmocka_unit_test(test_valid_rs256),
        cmocka_unit_test(test_valid_es256),
        cmocka_unit_test(test_es256_high_s),
        cmocka_unit_test(test_valid_eddsa),
        cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_es256_signature_shape),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_alg_spelling),
        cmocka_unit_test(test_alg_confusion_hs256_with_pem),
        cmocka_unit_test(test_alg_cross),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_not_yet),
        cmocka_unit_test(test_time_claim_types),
        cmocka_unit_test(test_issuer),
        cmocka_unit_test(test_audience),
        cmocka_unit_test(test_sub),
        cmocka_unit_test(test_check_order),
        cmocka_unit_test(test_malformed_structure),
        cmocka_unit_test(test_malformed_header),
        cmocka_unit_test(test_malformed_payload),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_init_key_mismatch),
        cmocka_unit_test(test_init_garbage_pem),
        cmocka_unit_test(test_init_rsa_pkcs1),
        cmocka_unit_test(test_init_secret),
        cmocka_unit_test(test_dispose_reuse),
        cmocka_unit_test(test_verify_args),
        cmocka_unit_test(test_sign_hs256_round_trip),
        cmocka_unit_test(test_sign_hs256_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
