/* history.h -- each user's recently published events, kept as the shared
 * frames that were sent, so a reconnecting client can be replayed exactly
 * what it missed (PROTOCOL section 3).
 *
 * A user's history (history_t) holds a contiguous run of seq numbers,
 * oldest first. All histories share one pool (history_pool_t) that enforces
 * the limits: at most max_per_user events per user, none older than ttl_ms,
 * and at most max_bytes in all (events, rings and `extra`, what the owner
 * of the histories spends besides), evicting the globally oldest event first.
 * Eviction only shortens the retained run; it never leaves a hole, so a resume
 * either finds every event it needs or knows it cannot (resumed:false).
 *
 * Frames: history_append takes its own reference to the frame; eviction
 * drops it. history_get returns a borrowed pointer, valid until the next
 * append, expire or clear. Pure: no I/O, no clock (callers pass now_ms). */
#ifndef AW_HISTORY_H
#define AW_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "frame.h"

struct history_entry;

typedef struct history {
    /* private: ring of entries, oldest at _head */
    struct history_entry **_ring;
    uint32_t _head, _len, _cap;
} history_t;

typedef struct history_pool {
    /* public, set before use */
    uint32_t max_per_user; /* events kept per user (>= 1) */
    int64_t ttl_ms;        /* events older than this are evicted */
    size_t max_bytes;      /* all histories together, frame bytes + overhead */
    size_t extra;          /* other bytes under the same cap (the hub's streams) */
    /* called when a history loses its last event (may be NULL) */
    void (*on_empty)(history_t *h, void *ctx);
    void *ctx;
    /* read-only */
    size_t bytes;     /* accounted bytes held: events and rings */
    size_t entries;   /* events held */
    uint64_t evicted; /* events evicted so far (any reason) */
    /* private: every entry of every user, oldest first */
    struct history_entry *_oldest, *_newest;
} history_pool_t;

void history_pool_init(history_pool_t *p, uint32_t max_per_user, int64_t ttl_ms, size_t max_bytes);

/* Appends the event with number seq (must be the user's previous seq + 1 or
 * the first) published at now_ms, then applies the limits. 0 or AW_ENOMEM
 * (then the event is simply not retained: a later resume says resumed:false). */
int history_append(history_pool_t *p, history_t *h, uint64_t seq, frame_t *f, int64_t now_ms);

/* Lowest retained seq, or 0 when nothing is retained. */
uint64_t history_first_seq(const history_t *h);

/* Highest retained seq, or 0 when nothing is retained. */
uint64_t history_last_seq(const history_t *h);

/* The frame of seq, or NULL when it is not retained. */
frame_t *history_get(const history_t *h, uint64_t seq);

/* Evicts the globally oldest event; false when there is none. */
bool history_evict_oldest(history_pool_t *p);

/* Evicts everything older than the pool's ttl. */
void history_expire(history_pool_t *p, int64_t now_ms);

/* Drops every retained event of every user (before freeing the users). */
void history_pool_dispose(history_pool_t *p);

/* Drops every event of h and frees its memory (the user's stream goes away). */
void history_clear(history_pool_t *p, history_t *h);

#endif
