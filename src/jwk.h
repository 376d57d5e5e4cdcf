/* jwk.h -- a JSON Web Key Set (RFC 7517) into a jwt_keyset_t: RSA keys for
 * RS256, P-256 EC keys for ES256 and Ed25519 OKP keys for EdDSA, each
 * pinned to the JWK's own "alg", or to a default algorithm when it has none.
 * Keys for encryption ("use": "enc"), symmetric keys, keys whose type does
 * not suit their algorithm and keys that do not parse are skipped, each
 * with its reason. */
#ifndef AW_JWK_H
#define AW_JWK_H

#include <stdbool.h>
#include <stddef.h>

#include "jwt.h"

/* Called for each key skipped, with its kid ("" when it has none). */
typedef void (*jwk_skip_fn)(void *arg, const char *kid, const char *why);

/* Parses json[0..len). 0 with *out holding at least one key; AW_EINVAL
 * with a one-line reason in err when the document is not a key set or no
 * key is usable. dflt: the algorithm of keys without "alg" (has_dflt
 * false: such keys are skipped). */
int jwk_parse_set(const char *json, size_t len, bool has_dflt, jwt_alg_t dflt, jwt_keyset_t **out,
                  jwk_skip_fn skip, void *arg, char *err, size_t errlen);

#endif
