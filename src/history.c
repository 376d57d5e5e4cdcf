/* history.c -- per-user event history over one shared pool with a global
 * memory cap. Owns the entries and one reference to each retained frame.
 * Never sends anything: replay is the session's and the hub's business. */
#include "history.h"

#include <stdlib.h>
#include <string.h>

#include "aw.h"

typedef struct history_entry {
    frame_t *frame;
    uint64_t seq;
    int64_t at_ms;
    history_t *owner;
    struct history_entry *older, *newer; /* the pool's global order */
} history_entry_t;

/* What one retained event costs, for the memory cap: the entry and the
 * frame, each with the allocator's header and rounding (AW_ALLOC_COST). */
static size_t entry_cost(const history_entry_t *e)
{
    return AW_ALLOC_COST(sizeof *e) + AW_ALLOC_COST(sizeof *e->frame + e->frame->len);
}

void history_pool_init(history_pool_t *p, uint32_t max_per_user, int64_t ttl_ms, size_t max_bytes)
{
    memset(p, 0, sizeof *p);
    p->max_per_user = max_per_user ? max_per_user : 1;
    p->ttl_ms = ttl_ms;
    p->max_bytes = max_bytes;
}

uint64_t history_first_seq(const history_t *h)
{
    return h->_len ? h->_ring[h->_head]->seq : 0;
}

uint64_t history_last_seq(const history_t *h)
{
    return h->_len ? h->_ring[(h->_head + h->_len - 1) % h->_cap]->seq : 0;
}

frame_t *history_get(const history_t *h, uint64_t seq)
{
    uint64_t first = history_first_seq(h);
    if (!h->_len || seq < first || seq - first >= h->_len)
        return NULL;
    return h->_ring[(h->_head + (seq - first)) % h->_cap]->frame;
}

/* Removes the oldest entry of its owner (which is the entry e). */
static void evict(history_pool_t *p, history_entry_t *e)
{
    history_t *h = e->owner;
    h->_head = (h->_head + 1) % h->_cap;
    bool emptied = --h->_len == 0;
    if (emptied) {
        p->bytes -= AW_ALLOC_COST(h->_cap * sizeof *h->_ring);
        free(h->_ring);
        h->_ring = NULL;
        h->_head = h->_cap = 0;
    }
    if (e->older)
        e->older->newer = e->newer;
    else
        p->_oldest = e->newer;
    if (e->newer)
        e->newer->older = e->older;
    else
        p->_newest = e->older;
    p->bytes -= entry_cost(e);
    p->entries--;
    p->evicted++;
    frame_unref(e->frame);
    free(e);
    if (emptied && p->on_empty)
        p->on_empty(h, p->ctx);
}

static bool ring_grow(history_pool_t *p, history_t *h, uint32_t limit)
{
    uint32_t cap = h->_cap ? h->_cap * 2 : 8;
    if (cap > limit)
        cap = limit;
    history_entry_t **ring = malloc(cap * sizeof *ring);
    if (!ring)
        return false;
    for (uint32_t i = 0; i < h->_len; i++)
        ring[i] = h->_ring[(h->_head + i) % h->_cap];
    if (h->_ring)
        p->bytes -= AW_ALLOC_COST(h->_cap * sizeof *h->_ring);
    p->bytes += AW_ALLOC_COST(cap * sizeof *ring);
    free(h->_ring);
    h->_ring = ring;
    h->_head = 0;
    h->_cap = cap;
    return true;
}

int history_append(history_pool_t *p, history_t *h, uint64_t seq, frame_t *f, int64_t now_ms)
{
    if (h->_len && seq != history_last_seq(h) + 1)
        history_clear(p, h); /* never keep a run with a hole in it */
    if (h->_len == p->max_per_user)
        evict(p, h->_ring[h->_head]);
    if (h->_len == h->_cap && !ring_grow(p, h, p->max_per_user))
        return AW_ENOMEM;
    history_entry_t *e = malloc(sizeof *e);
    if (!e)
        return AW_ENOMEM;
    e->frame = frame_ref(f);
    e->seq = seq;
    e->at_ms = now_ms;
    e->owner = h;
    e->newer = NULL;
    e->older = p->_newest;
    if (p->_newest)
        p->_newest->newer = e;
    else
        p->_oldest = e;
    p->_newest = e;
    h->_ring[(h->_head + h->_len) % h->_cap] = e;
    h->_len++;
    p->bytes += entry_cost(e);
    p->entries++;
    /* The globally oldest entry is always the oldest of its own user, so
     * evicting from the pool's head keeps every history contiguous. */
    while (p->bytes + p->extra > p->max_bytes && p->_oldest)
        evict(p, p->_oldest);
    return AW_OK;
}

bool history_evict_oldest(history_pool_t *p)
{
    if (!p->_oldest)
        return false;
    evict(p, p->_oldest);
    return true;
}

void history_expire(history_pool_t *p, int64_t now_ms)
{
    while (p->_oldest && now_ms - p->_oldest->at_ms >= p->ttl_ms)
        evict(p, p->_oldest);
}

void history_clear(history_pool_t *p, history_t *h)
{
    while (h->_len)
        evict(p, h->_ring[h->_head]);
}

void history_pool_dispose(history_pool_t *p)
{
    while (p->_oldest)
        evict(p, p->_oldest);
}
