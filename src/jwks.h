/* jwks.h -- keys from an identity provider (--jwks-url, --jwks-file).
 *
 * At start the key set is read once, blocking (start-up fails without a
 * usable key). Then it is refreshed on the loop: after the document's
 * Cache-Control max-age (bounded by --jwks-min-interval-ms and a day), or
 * --jwks-refresh-ms without one, and soon after a token names a key id the
 * set lacks (at most once per --jwks-min-interval-ms, so unknown kids cannot
 * make it fetch in a loop). A URL is fetched over HTTPS with libcurl's multi
 * interface driven by the loop's own poll and timer handles (the server's
 * certificate is verified, against --jwks-ca-file when given); a file is
 * read again when it changed. A failed refresh keeps the last good keys and
 * says so in the log, /readyz and /metrics. */
#ifndef AW_JWKS_H
#define AW_JWKS_H

#include <jansson.h>
#include <stdio.h>
#include <uv.h>

#include "config.h"
#include "jwt.h"

typedef struct jwks jwks_t;

/* Reads the keys (blocking) into v (key-set mode) and prepares the
 * refreshes on loop. AW_EINVAL with the reason in err. */
int jwks_open(jwks_t **out, uv_loop_t *loop, const config_t *cfg, jwt_verifier_t *v, char *err,
              size_t errlen);

/* Housekeeping (the loop's tick): a refresh when one is due. */
void jwks_tick(jwks_t *j, int64_t now_ms);

/* What /readyz shows about the keys (a new reference). */
json_t *jwks_describe(jwks_t *j);

/* The keys' lines of /metrics. */
void jwks_metrics(jwks_t *j, FILE *f);

/* Stops a fetch in flight and closes the handles (before the loop ends). */
void jwks_stop(jwks_t *j);
void jwks_free(jwks_t *j);

#endif
