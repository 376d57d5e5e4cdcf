/* idem.c -- the idempotency cache behind POST /api/v1/publish. Keeps only
 * receipts (seq, epoch, event id), never event bodies. Entries sit on a
 * list in the order they expire (the ttl is the same for all), so the sweep
 * and the eviction at the cap both take from its head. */
#include "idem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "event.h"
#include "log.h"

typedef struct idem_entry {
    int64_t expires_ms;
    uint64_t seq;
    char epoch[HUB_EPOCH_LEN + 1];
    char event_id[HUB_EVENT_ID_LEN];
    map_entry_t *slot; /* the map's entry (its key) */
    struct idem_entry *older, *newer;
} idem_entry_t;

int idem_init(idem_t *c, int64_t ttl_ms, size_t max_keys)
{
    memset(c, 0, sizeof *c);
    c->ttl_ms = ttl_ms;
    c->max_keys = max_keys ? max_keys : 1;
    if (uv_mutex_init(&c->_lock) != 0)
        return AW_ENOMEM;
    int rc = map_init(&c->_map);
    if (rc != AW_OK)
        uv_mutex_destroy(&c->_lock);
    return rc;
}

void idem_dispose(idem_t *c)
{
    map_dispose(&c->_map, free);
    c->_oldest = c->_newest = NULL;
    uv_mutex_destroy(&c->_lock);
}

static size_t make_key(char *out, const char *user, const char *key)
{
    int n = snprintf(out, EVENT_MAX_ID + IDEM_MAX_KEY + 2, "%s\n%s", user, key);
    return n < 0 ? 0 : (size_t)n;
}

static void unlink_entry(idem_t *c, idem_entry_t *e)
{
    if (e->older)
        e->older->newer = e->newer;
    else
        c->_oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        c->_newest = e->older;
    e->older = e->newer = NULL;
}

static void link_newest(idem_t *c, idem_entry_t *e)
{
    e->newer = NULL;
    e->older = c->_newest;
    if (c->_newest)
        c->_newest->newer = e;
    else
        c->_oldest = e;
    c->_newest = e;
}

static void drop_oldest(idem_t *c)
{
    idem_entry_t *e = c->_oldest;
    unlink_entry(c, e);
    map_remove(&c->_map, e->slot->key, e->slot->keylen);
    free(e);
}

bool idem_get(idem_t *c, const char *user, const char *key, int64_t now_ms, hub_receipt_t *out)
{
    char k[EVENT_MAX_ID + IDEM_MAX_KEY + 2];
    size_t n = make_key(k, user, key);
    uv_mutex_lock(&c->_lock);
    const idem_entry_t *e = map_get(&c->_map, k, n);
    bool found = e && now_ms < e->expires_ms;
    if (found) {
        memset(out, 0, sizeof *out);
        out->seq = e->seq;
        memcpy(out->epoch, e->epoch, sizeof out->epoch);
        memcpy(out->event_id, e->event_id, sizeof out->event_id);
    }
    uv_mutex_unlock(&c->_lock);
    return found;
}

static int put(idem_t *c, const char *k, size_t n, const hub_receipt_t *r, int64_t now_ms)
{
    idem_entry_t *e = map_get(&c->_map, k, n);
    if (e) {
        unlink_entry(c, e);
    } else {
        if (c->_map.count >= c->max_keys) {
            drop_oldest(c);
            if (c->evicted++ == 0 || c->evicted % 10000 == 0)
                log_kv(LOG_WARN | LOG_LIMITED,
                       "idempotency cache full: the oldest keys are forgotten early "
                       "(raise --idempotency-max-keys)",
                       "#evicted", (long long)c->evicted, NULL);
        }
        e = calloc(1, sizeof *e);
        if (!e || !(e->slot = map_put(&c->_map, k, n, e))) {
            free(e);
            return AW_ENOMEM;
        }
    }
    e->expires_ms = now_ms + c->ttl_ms;
    e->seq = r->seq;
    memcpy(e->epoch, r->epoch, sizeof e->epoch);
    memcpy(e->event_id, r->event_id, sizeof e->event_id);
    link_newest(c, e);
    return AW_OK;
}

int idem_put(idem_t *c, const char *user, const char *key, const hub_receipt_t *r, int64_t now_ms)
{
    char k[EVENT_MAX_ID + IDEM_MAX_KEY + 2];
    size_t n = make_key(k, user, key);
    uv_mutex_lock(&c->_lock);
    int rc = put(c, k, n, r, now_ms);
    uv_mutex_unlock(&c->_lock);
    return rc;
}

void idem_sweep(idem_t *c, int64_t now_ms)
{
    uv_mutex_lock(&c->_lock);
    size_t before = c->_map.count;
    while (c->_oldest && now_ms >= c->_oldest->expires_ms)
        drop_oldest(c);
    if (c->_map.count < before)
        map_shrink(&c->_map);
    uv_mutex_unlock(&c->_lock);
}
