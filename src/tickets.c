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

int tickets_init(tickets_t *t, size_t max_per_user, size_t max_total)
{
    t->max_per_user = max_per_user;
    t->max_total = max_total;
    int rc = map_init(&t->_map);
    return rc == AW_OK ? map_init(&t->_users) : rc;
}

void tickets_dispose(tickets_t *t)
{
    map_dispose(&t->_map, free);
    map_dispose(&t->_users, NULL);
}

static uintptr_t user_count(const tickets_t *t, const char *user)
{
    return (uintptr_t)map_get(&t->_users, user, strlen(user));
}

static void user_add(tickets_t *t, const char *user, int d)
{
    uintptr_t n = user_count(t, user) + (uintptr_t)(intptr_t)d;
    if (n == 0)
        map_remove(&t->_users, user, strlen(user));
    else
        map_put(&t->_users, user, strlen(user), (void *)n);
}

/* Drops a ticket that left the map. */
static void ticket_gone(tickets_t *t, ticket_t *tk)
{
    user_add(t, tk->user, -1);
    free(tk);
}

int tickets_issue(tickets_t *t, const char *user, int64_t expires_ms, int64_t token_exp_ms,
                  char out[TICKET_LEN + 1])
{
    if (t->_map.count >= t->max_total || user_count(t, user) >= t->max_per_user)
        return AW_ELIMIT;
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
    user_add(t, user, +1);
    return AW_OK;
}

int tickets_peek(const tickets_t *t, const char *id, int64_t now_ms, char *user,
                 int64_t *token_exp_ms)
{
    const ticket_t *tk = map_get(&t->_map, id, strlen(id));
    if (!tk || now_ms >= tk->expires_ms)
        return AW_ENOTFOUND;
    memcpy(user, tk->user, sizeof tk->user);
    *token_exp_ms = tk->token_exp_ms;
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
    ticket_gone(t, tk);
    return rc;
}

typedef struct sweep {
    tickets_t *t;
    int64_t now_ms;
} sweep_t;

/* The predicate also settles the user's count of a ticket it removes. */
static bool ticket_expired(const void *value, void *arg)
{
    sweep_t *sw = arg;
    const ticket_t *tk = value;
    if (sw->now_ms < tk->expires_ms)
        return false;
    user_add(sw->t, tk->user, -1);
    return true;
}

void tickets_sweep(tickets_t *t, int64_t now_ms)
{
    sweep_t sw = {t, now_ms};
    if (map_remove_if(&t->_map, ticket_expired, &sw, free) > 0) {
        map_shrink(&t->_map);
        map_shrink(&t->_users);
    }
}
