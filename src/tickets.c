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

static void free_ticket(map_entry_t *e, void *arg)
{
    (void)arg;
    free(e->value);
}

void tickets_dispose(tickets_t *t)
{
    map_each(&t->_map, free_ticket, NULL);
    map_dispose(&t->_map);
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

typedef struct sweep {
    map_t *map;
    int64_t now_ms;
} sweep_t;

static void sweep_one(map_entry_t *e, void *arg)
{
    sweep_t *s = arg;
    ticket_t *tk = e->value;
    if (s->now_ms >= tk->expires_ms) {
        map_remove(s->map, e->key, e->keylen);
        free(tk);
    }
}

void tickets_sweep(tickets_t *t, int64_t now_ms)
{
    sweep_t s = {&t->_map, now_ms};
    map_each(&t->_map, sweep_one, &s);
}
