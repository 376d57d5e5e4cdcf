/* tickets.c -- the ticket store: issue, take once, expire. Holds only user
 * ids and expiry times, never tokens. */
#include "tickets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"

typedef struct ticket {
    int64_t expires_ms;
    int64_t token_exp_ms;
    char user[JWT_MAX_SUB + 1];
} ticket_t;

int tickets_init(tickets_t *t)
{
    return map_init(&t->_map);
}

void tickets_dispose(tickets_t *t)
{
    map_dispose(&t->_map, free);
}

int tickets_issue(tickets_t *t, const char *user, int64_t expires_ms, int64_t token_exp_ms,
                  char out[TICKET_LEN + 1])
{
    uint8_t raw[TICKET_LEN / 2];
    if (aw_random_bytes(raw, sizeof raw) != AW_OK)
        return AW_EIO;
    aw_hex(out, raw, sizeof raw);
    ticket_t *tk = calloc(1, sizeof *tk);
    if (!tk)
        return AW_ENOMEM;
    tk->expires_ms = expires_ms < token_exp_ms ? expires_ms : token_exp_ms;
    tk->token_exp_ms = token_exp_ms;
    snprintf(tk->user, sizeof tk->user, "%s", user);
    if (!map_put(&t->_map, out, TICKET_LEN, tk)) {
        free(tk);
        return AW_ENOMEM;
    }
    return AW_OK;
}

int tickets_take(tickets_t *t, const char *id, int64_t now_ms, char *user, int64_t *token_exp_ms)
{
    ticket_t *tk = map_remove(&t->_map, id, strlen(id));
    if (!tk)
        return AW_ENOTFOUND;
    int rc = AW_ENOTFOUND;
    if (now_ms < tk->expires_ms) {
        memcpy(user, tk->user, sizeof tk->user);
        *token_exp_ms = tk->token_exp_ms;
        rc = AW_OK;
    }
    free(tk);
    return rc;
}

static bool ticket_expired(const void *value, void *now_ms)
{
    return *(const int64_t *)now_ms >= ((const ticket_t *)value)->expires_ms;
}

void tickets_sweep(tickets_t *t, int64_t now_ms)
{
    map_remove_if(&t->_map, ticket_expired, &now_ms, free);
}
