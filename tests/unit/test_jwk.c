/* test_jwk.c -- JSON Web Key Sets into key sets: what is taken, what is
 * skipped and why, and documents that are not key sets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "aw.h"
#include "jwk.h"

/* An Ed25519 public key (RFC 8037, appendix A.2) and a P-256 point (RFC 7515, A.3). */
#define ED_X "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
#define EC_X "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
#define EC_Y "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"

static char skipped[512];

static void on_skip(void *arg, const char *kid, const char *why)
{
    (void)arg;
    char one[200];
    snprintf(one, sizeof one, "%s=%s;", kid, why);
    strncat(skipped, one, sizeof skipped - strlen(skipped) - 1);
}

static int parse(const char *doc, bool has_dflt, jwt_alg_t dflt, jwt_keyset_t **ks, char *err,
                 size_t errlen)
{
    skipped[0] = '\0';
    return jwk_parse_set(doc, strlen(doc), has_dflt, dflt, ks, on_skip, NULL, err, errlen);
}

static void test_keys_taken_and_skipped(void **state)
{
    (void)state;
    const char *doc =
        "{\"keys\":["
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"" ED_X "\",\"kid\":\"ed\",\"alg\":\"EdDSA\"},"
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" EC_X "\",\"y\":\"" EC_Y "\",\"kid\":\"ec\"},"
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" EC_X "\",\"y\":\"" EC_Y
        "\",\"kid\":\"ec-rs\",\"alg\":\"RS256\"},"
        "{\"kty\":\"oct\",\"k\":\"c2VjcmV0\",\"kid\":\"sym\",\"alg\":\"HS256\"},"
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"" ED_X "\",\"kid\":\"enc\",\"use\":\"enc\"},"
        "{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"" ED_X "\",\"kid\":\"x\",\"alg\":\"EdDSA\"},"
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AAAA\",\"y\":\"AAAA\",\"kid\":\"short\","
        "\"alg\":\"ES256\"}"
        "]}";
    jwt_keyset_t *ks = NULL;
    char err[256];
    /* the EC key without alg takes the default */
    assert_int_equal(parse(doc, true, JWT_ES256, &ks, err, sizeof err), AW_OK);
    assert_int_equal(jwt_keyset_count(ks), 2);
    assert_non_null(strstr(skipped, "ec-rs=RS256 needs an RSA public key;"));
    assert_non_null(strstr(skipped, "sym=alg is not RS256, ES256 or EdDSA;"));
    assert_non_null(strstr(skipped, "enc=not a signing key (use);"));
    assert_non_null(strstr(skipped, "x=an OKP key must be Ed25519;"));
    assert_non_null(strstr(skipped, "short=a P-256 key needs x and y of 32 bytes"));
    jwt_keyset_free(ks);
    /* without a default, the key without alg is skipped too */
    assert_int_equal(parse(doc, false, JWT_RS256, &ks, err, sizeof err), AW_OK);
    assert_int_equal(jwt_keyset_count(ks), 1);
    assert_non_null(strstr(skipped, "ec=no alg"));
    jwt_keyset_free(ks);
}

static void test_not_a_key_set(void **state)
{
    (void)state;
    jwt_keyset_t *ks = (jwt_keyset_t *)1;
    char err[256];
    assert_int_equal(parse("{\"keys\":{}}", false, JWT_RS256, &ks, err, sizeof err), AW_EINVAL);
    assert_null(ks);
    assert_non_null(strstr(err, "not a JSON Web Key Set"));
    assert_int_equal(parse("<html>", false, JWT_RS256, &ks, err, sizeof err), AW_EINVAL);
    assert_non_null(strstr(err, "not a JSON Web Key Set"));
    assert_int_equal(parse("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r\",\"alg\":\"RS256\"}]}", false,
                           JWT_RS256, &ks, err, sizeof err),
                     AW_EINVAL);
    assert_string_equal(err, "no usable key in the set (1 skipped; first: r: an RSA key needs n "
                             "and e (base64url))");
    /* two keys with one kid: the second is skipped */
    const char *dup = "{\"keys\":["
                      "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"" ED_X "\",\"kid\":\"a\","
                      "\"alg\":\"EdDSA\"},"
                      "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"" ED_X "\",\"kid\":\"a\","
                      "\"alg\":\"EdDSA\"}]}";
    assert_int_equal(parse(dup, false, JWT_RS256, &ks, err, sizeof err), AW_OK);
    assert_int_equal(jwt_keyset_count(ks), 1);
    assert_non_null(strstr(skipped, "a=a second key with the same kid;"));
    jwt_keyset_free(ks);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_taken_and_skipped),
        cmocka_unit_test(test_not_a_key_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
