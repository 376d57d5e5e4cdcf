/* idem.c -- the idempotency cache behind POST /api/v1/publish. Keeps only
 * receipts (seq, epoch, event id), never event bodies. */
#include "idem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "event.h"

typedef struct idem_entry {
    int64_t expires_ms;
    hub_receipt_t receipt;
} idem_entry_t;

int idem_init(idem_t *c, int64_t ttl_ms)
{
    c->ttl_ms = ttl_ms;
    return map_init(&c->_map);
}

void idem_dispose(idem_t *c)
{
    map_dispose(&c->_map, free);
}

static size_t make_key(char *out, const char *user, const char *key)
{
    int n = snprintf(out, EVENT_MAX_ID + IDEM_MAX_KEY + 2, "%s\n%s", user, key);
    return n < 0 ? 0 : (size_t)n;
}

const hub_receipt_t *idem_get(idem_t *c, const char *user, const char *key, int64_t now_ms)
{
    char k[EVENT_MAX_ID + IDEM_MAX_KEY + 2];
    size_t n = make_key(k, user, key);
    idem_entry_t *e = map_get(&c->_map, k, n);
    return e && now_ms < e->expires_ms ? &e->receipt : NULL;
}

int idem_put(idem_t *c, const char *user, const char *key, const hub_receipt_t *r, int64_t now_ms)
{
    if (c->_map.count >= IDEM_MAX_ENTRIES)
        return AW_ELIMIT;
    char k[EVENT_MAX_ID + IDEM_MAX_KEY + 2];
    size_t n = make_key(k, user, key);
    idem_entry_t *e = map_get(&c->_map, k, n);
    if (!e) {
        e = malloc(sizeof *e);
        if (!e || !map_put(&c->_map, k, n, e)) {
            free(e);
            return AW_ENOMEM;
        }
    }
    e->expires_ms = now_ms + c->ttl_ms;
    e->receipt = *r;
    return AW_OK;
}

static bool entry_expired(const void *value, void *now_ms)
{
    return *(const int64_t *)now_ms >= ((const idem_entry_t *)value)->expires_ms;
}

void idem_sweep(idem_t *c, int64_t now_ms)
{
    map_remove_if(&c->_map, entry_expired, &now_ms, free);
}
