/* idem.h -- publish idempotency keys: remembers, per target user and key,
 * the receipt of the first successful publish for a while (default 5 min),
 * so that a retried publish answers the same result without publishing
 * twice. At most max_keys are remembered: past that the oldest key is
 * forgotten to make room, so a fresh key is always remembered. */
#ifndef AW_IDEM_H
#define AW_IDEM_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "hub.h"
#include "map.h"

#define IDEM_MAX_KEY 255 /* longest idempotency key, bytes */

struct idem_entry;

typedef struct idem {
    /* read-only */
    int64_t ttl_ms;
    size_t max_keys;
    uint64_t evicted; /* keys forgotten before their time to make room */
    /* private: every call takes _lock, so shard holders of different
     * users (lock.h) may use the cache at once; a user's get, publish and
     * put stay one step under that user's shard lock */
    uv_mutex_t _lock;
    map_t _map; /* "user\nkey" -> idem_entry */
    struct idem_entry *_oldest, *_newest;
} idem_t;

int idem_init(idem_t *c, int64_t ttl_ms, size_t max_keys);
void idem_dispose(idem_t *c);

/* Copies the remembered receipt for (user, key) to out (seq, epoch,
 * event_id); false when there is none. */
bool idem_get(idem_t *c, const char *user, const char *key, int64_t now_ms, hub_receipt_t *out);

/* Remembers a receipt, forgetting the oldest key when full. 0 or AW_ENOMEM. */
int idem_put(idem_t *c, const char *user, const char *key, const hub_receipt_t *r, int64_t now_ms);

/* Forgets expired keys. */
void idem_sweep(idem_t *c, int64_t now_ms);

#endif
