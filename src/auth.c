/* auth.c -- credential lookup and verification for the upgrade. Decides the
 * user id from a verified token or ticket only; never from anything else the
 * client says, and never passes a bad credential over for a later place. */
#include "auth.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "aw.h"
#include "base64.h"
#include "event.h"

const char *auth_bearer(const char *authorization)
{
    if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    const char *t = authorization + 7;
    while (*t == ' ')
        t++;
    return t;
}

int auth_token(const jwt_verifier_t *v, const char *token, size_t len, int64_t now_ms,
               auth_result_t *out)
{
    jwt_claims_t c;
    int rc = jwt_verify(v, token, len, now_ms / 1000, &c);
    if (rc != AW_OK) {
        out->reason = rc == AW_ENOTFOUND ? "unknown signing key (kid)" : aw_strerror(rc);
        return rc;
    }
    if (!event_id_valid(c.sub)) { /* one rule for a user id, here and at publish */
        out->reason = "sub is not a valid user id";
        return AW_ECLAIMS;
    }
    memcpy(out->user, c.sub, sizeof out->user);
    /* exp may be anything up to INT64_MAX: saturate instead of overflowing */
    const int64_t max_s = INT64_MAX / 1000 - 3600;
    out->expires_ms = (c.exp > max_s - v->leeway_s ? max_s : c.exp + v->leeway_s) * 1000;
    return AW_OK;
}

/* One entry of a comma-separated Sec-WebSocket-Protocol list. */
typedef struct entry {
    const char *p;
    size_t n;
} entry_t;

static bool next_entry(const char **cursor, entry_t *e)
{
    const char *p = *cursor;
    while (*p == ' ' || *p == '\t' || *p == ',')
        p++;
    if (!*p)
        return false;
    const char *end = p;
    while (*end && *end != ',')
        end++;
    const char *last = end;
    while (last > p && (last[-1] == ' ' || last[-1] == '\t'))
        last--;
    e->p = p;
    e->n = (size_t)(last - p);
    *cursor = end;
    return true;
}

static bool entry_is(const entry_t *e, const char *s)
{
    return e->n == strlen(s) && strncmp(e->p, s, e->n) == 0;
}

/* The token inside "jwt.<T>" / "bearer.<T>", or NULL. */
static const char *entry_token(const entry_t *e, size_t *len)
{
    static const char *const prefixes[] = {"jwt.", "bearer."};
    for (size_t i = 0; i < AW_ARRAY_LEN(prefixes); i++) {
        size_t pl = strlen(prefixes[i]);
        if (e->n > pl && strncasecmp(e->p, prefixes[i], pl) == 0) {
            *len = e->n - pl;
            return e->p + pl;
        }
    }
    return NULL;
}

/* Verifies the credential of a subprotocol entry: the JWT itself (it has
 * dots) or its base64url encoding. */
static int verify_entry(const jwt_verifier_t *v, const char *t, size_t n, int64_t now_ms,
                        auth_result_t *out)
{
    if (memchr(t, '.', n))
        return auth_token(v, t, n, now_ms, out);
    if (n > JWT_MAX_TOKEN * 2) {
        out->reason = "credential too long";
        return AW_ETOOBIG;
    }
    uint8_t buf[BASE64_DECODED_MAX(JWT_MAX_TOKEN * 2)];
    size_t blen;
    if (base64url_decode(buf, &blen, t, n) != AW_OK) {
        out->reason = "subprotocol credential is neither a JWT nor base64url";
        return AW_EMALFORMED;
    }
    return auth_token(v, (const char *)buf, blen, now_ms, out);
}

/* Walks the entries of every Sec-WebSocket-Protocol header; returns true
 * with the first one that match accepts. *offered tells whether any entry
 * was seen at all. */
static bool find_entry(const http_request_t *req, bool (*match)(const entry_t *e), entry_t *found,
                       bool *offered)
{
    *offered = false;
    for (size_t i = 0; i < req->nheaders; i++) {
        if (strcasecmp(req->headers[i].name, "Sec-WebSocket-Protocol") != 0)
            continue;
        const char *cur = req->headers[i].value;
        while (next_entry(&cur, found)) {
            *offered = true;
            if (match(found))
                return true;
        }
    }
    return false;
}

static bool is_jwt_auth(const entry_t *e)
{
    return entry_is(e, "jwt-auth");
}

static bool holds_token(const entry_t *e)
{
    size_t n;
    return entry_token(e, &n) != NULL;
}

/* Chooses the subprotocol answer: jwt-auth if offered, else the credential's
 * own entry, else none. */
static void pick_protocol(const http_request_t *req, const entry_t *cred, auth_result_t *out)
{
    out->protocol[0] = '\0';
    bool offered;
    entry_t e;
    if (find_entry(req, is_jwt_auth, &e, &offered)) {
        snprintf(out->protocol, sizeof out->protocol, "jwt-auth");
        return;
    }
    if (offered && cred && cred->n < sizeof out->protocol)
        snprintf(out->protocol, sizeof out->protocol, "%.*s", (int)cred->n, cred->p);
}

int auth_handshake(const jwt_verifier_t *v, tickets_t *t, const http_request_t *req, int64_t now_ms,
                   auth_result_t *out)
{
    memset(out, 0, offsetof(auth_result_t, protocol));
    out->ticket[0] = '\0';
    out->protocol[0] = '\0';
    out->reason = "no credential";

    const char *authz = http_header(req, "Authorization");
    if (authz) {
        out->place = "header";
        pick_protocol(req, NULL, out);
        const char *tok = auth_bearer(authz);
        if (!tok) {
            out->reason = "Authorization is not a Bearer credential";
            return AW_EMALFORMED;
        }
        return auth_token(v, tok, strlen(tok), now_ms, out);
    }
    entry_t e;
    bool offered;
    if (find_entry(req, holds_token, &e, &offered)) {
        size_t n = 0;
        const char *tok = entry_token(&e, &n);
        out->place = "subprotocol";
        pick_protocol(req, &e, out);
        return verify_entry(v, tok, n, now_ms, out);
    }
    char buf[JWT_MAX_TOKEN + 1];
    int rc = http_query_get(req->query, "ticket", buf, sizeof buf);
    if (rc != AW_ENOTFOUND) {
        out->place = "ticket";
        pick_protocol(req, NULL, out);
        if (!t && rc == AW_OK && strlen(buf) == TICKET_LEN) { /* kept elsewhere (cluster) */
            memcpy(out->ticket, buf, TICKET_LEN + 1);
            out->reason = "the ticket is redeemed on its shard";
            return AW_EAGAIN;
        }
        if (rc != AW_OK || !t ||
            tickets_peek(t, buf, now_ms, out->user, &out->expires_ms) != AW_OK) {
            out->reason = "unknown, used or expired ticket";
            return AW_ENOTFOUND;
        }
        /* spent once admitted; a ticket found is TICKET_LEN characters */
        memcpy(out->ticket, buf, TICKET_LEN);
        out->ticket[TICKET_LEN] = '\0';
        out->expires_ms += v->leeway_s * 1000;
        return AW_OK;
    }
    rc = http_query_get(req->query, "token", buf, sizeof buf);
    if (rc != AW_ENOTFOUND) {
        out->place = "query";
        pick_protocol(req, NULL, out);
        if (rc != AW_OK) {
            out->reason = "token parameter too long or badly escaped";
            return rc;
        }
        return auth_token(v, buf, strlen(buf), now_ms, out);
    }
    pick_protocol(req, NULL, out);
    return AW_ENOTFOUND;
}
