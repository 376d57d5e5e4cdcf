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

static void free_entry(map_entry_t *e, void *arg)
{
    (void)arg;
    free(e->value);
}

void idem_dispose(idem_t *c)
{
    map_each(&c->_map, free_entry, NULL);
    map_dispose(&c->_map);
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

typedef struct sweep {
    map_t *map;
    int64_t now_ms;
} sweep_t;

static void sweep_one(map_entry_t *e, void *arg)
{
    sweep_t *s = arg;
    idem_entry_t *ie = e->value;
    if (s->now_ms >= ie->expires_ms) {
        map_remove(s->map, e->key, e->keylen);
        free(ie);
    }
}

void idem_sweep(idem_t *c, int64_t now_ms)
{
    sweep_t s = {&c->_map, now_ms};
    map_each(&c->_map, sweep_one, &s);
}
