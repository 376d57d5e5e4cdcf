/* tickets.h -- single-use connection tickets (PROTOCOL section 5): a user
 * trades a JWT for a short-lived opaque id that a browser can put in a URL.
 * A ticket is removed when used or expired; it never outlives its token. */
#ifndef AW_TICKETS_H
#define AW_TICKETS_H

#include <stddef.h>
#include <stdint.h>

#include "jwt.h"
#include "map.h"

#define TICKET_LEN 32 /* hex characters */

typedef struct tickets {
    size_t max_per_user, max_total; /* outstanding tickets allowed */
    map_t _map;                     /* ticket -> ticket_t * */
    map_t _users;                   /* user -> outstanding tickets (uintptr_t) */
} tickets_t;

int tickets_init(tickets_t *t, size_t max_per_user, size_t max_total);
void tickets_dispose(tickets_t *t);

/* Issues a ticket for user, valid until expires_ms; token_exp_ms is the
 * expiry of the token it came from. Writes the id (TICKET_LEN + NUL) to out.
 * 0, AW_ELIMIT (the user or everyone holds the most allowed), AW_ENOMEM or
 * AW_EIO. */
int tickets_issue(tickets_t *t, const char *user, int64_t expires_ms, int64_t token_exp_ms,
                  char out[TICKET_LEN + 1]);

/* Consumes a ticket: on success copies its user (size JWT_MAX_SUB + 1) and
 * token expiry, and forgets it. AW_ENOTFOUND when unknown or expired. */
int tickets_take(tickets_t *t, const char *id, int64_t now_ms, char *user, int64_t *token_exp_ms);

/* Like tickets_take, without consuming: the upgrade checks its limits
 * before it spends the ticket. */
int tickets_peek(const tickets_t *t, const char *id, int64_t now_ms, char *user,
                 int64_t *token_exp_ms);

/* Forgets expired tickets (and gives their memory back). */
void tickets_sweep(tickets_t *t, int64_t now_ms);

#endif
