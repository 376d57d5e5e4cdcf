/* api.h -- the HTTP API of PROTOCOL section 5 and the open endpoints
 * (/healthz, /readyz, /metrics, /). Publishing goes through the hub; this
 * module only authenticates publishers, validates input and answers. */
#ifndef AW_API_H
#define AW_API_H

#include "http.h"
#include "session.h"

/* Answers one non-upgrade request on s. */
void api_handle(session_t *s, const http_request_t *req);

#endif
