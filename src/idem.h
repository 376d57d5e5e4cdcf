/* idem.h -- publish idempotency keys: remembers, per target user and key,
 * the receipt of the first successful publish for a while (default 5 min),
 * so that a retried publish answers the same result without publishing
 * twice. */
#ifndef AW_IDEM_H
#define AW_IDEM_H

#include <stdint.h>

#include "hub.h"
#include "map.h"

#define IDEM_MAX_KEY     255     /* longest idempotency key, bytes */
#define IDEM_MAX_ENTRIES 1000000 /* past this, new keys are not remembered */

typedef struct idem {
    map_t _map; /* "user\nkey" -> idem_entry */
    int64_t ttl_ms;
} idem_t;

int idem_init(idem_t *c, int64_t ttl_ms);
void idem_dispose(idem_t *c);

/* The remembered receipt for (user, key), or NULL. */
const hub_receipt_t *idem_get(idem_t *c, const char *user, const char *key, int64_t now_ms);

/* Remembers a receipt. 0, AW_ENOMEM or AW_ELIMIT (cache full). */
int idem_put(idem_t *c, const char *user, const char *key, const hub_receipt_t *r, int64_t now_ms);

void idem_sweep(idem_t *c, int64_t now_ms);

#endif
