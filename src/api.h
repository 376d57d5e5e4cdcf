/* api.h -- the HTTP API of PROTOCOL section 5 and the open endpoints
 * (/healthz, /readyz, /metrics, /). Publishing goes through the hub; this
 * module only authenticates publishers, validates input and answers. */
#ifndef AW_API_H
#define AW_API_H

#include "http.h"
#include "session.h"

/* Called when the head of a request with a body is complete, before any
 * body byte is kept: true when the route takes a body with this method and
 * the credential it needs is right; otherwise answers (401, 404, 405 or 413)
 * and returns false. */
bool api_admit_body(session_t *s, const http_request_t *req);

/* May api_handle answer req under the lock shared (lock.h)? A publish to
 * the embedded default in memory: its events go out by shards, and what
 * else it touches takes the lock alone itself. Other requests are handled
 * under the lock alone. */
bool api_shared_ok(session_t *s, const http_request_t *req);

/* Frees what this thread keeps between requests (a publish's buffer) if
 * no request used it since the last call; each loop calls it every second. */
void api_trim(void);

/* Frees what this thread keeps between requests: when its loop ends. */
void api_release(void);

/* Answers one non-upgrade request on s. */
void api_handle(session_t *s, const http_request_t *req);

#endif
