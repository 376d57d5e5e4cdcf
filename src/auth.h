/* auth.h -- who is connecting: finds the credential of a WebSocket upgrade in
 * the four places of PROTOCOL section 1 (in order; the first place holding one
 * decides), verifies it, and picks the subprotocol to answer. Pure apart from
 * consuming a ticket; never logs or keeps a token. */
#ifndef AW_AUTH_H
#define AW_AUTH_H

#include <stdint.h>

#include "http.h"
#include "jwt.h"
#include "tickets.h"

#define AUTH_MAX_PROTOCOL 128 /* longest subprotocol we answer with, else none */

typedef struct auth_result {
    char user[JWT_MAX_SUB + 1];
    int64_t expires_ms;          /* when the connection's credential expires (leeway added) */
    const char *place;           /* "header", "subprotocol", "ticket", "query" */
    const char *reason;          /* why it failed (static text, safe to log) */
    char ticket[TICKET_LEN + 1]; /* the ticket to spend once admitted, "" for none */
    char protocol[8192 + 16];    /* subprotocol to answer with, "" for none */
} auth_result_t;

/* 0 with *out filled, or AW_EAUTH-like codes (any negative) with out->reason.
 * With t NULL (cluster mode: tickets live on Redis shards) a ticket of the
 * right length gives AW_EAGAIN with out->ticket set: the caller redeems it. */
int auth_handshake(const jwt_verifier_t *v, tickets_t *t, const http_request_t *req, int64_t now_ms,
                   auth_result_t *out);

/* Verifies a bearer token and fills user and expires_ms. */
int auth_token(const jwt_verifier_t *v, const char *token, size_t len, int64_t now_ms,
               auth_result_t *out);

/* Extracts the token of an "Authorization: Bearer X" value; NULL if not bearer. */
const char *auth_bearer(const char *authorization);

#endif
