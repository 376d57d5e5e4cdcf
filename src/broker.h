/* broker.h -- where users' streams live, behind one small interface.
 *
 * A user's stream (epoch, seq, retained events, open runs, idempotency
 * receipts, tickets, presence) has one owner, and everything above the hub
 * (the HTTP API, the upgrade, the client's messages, agent runs) asks it
 * through these calls:
 *
 *   memory (broker_memory.c, the embedded default): this process owns every
 *     stream; answers come before the call returns;
 *   Redis (cluster.c, --redis): the user's shard owns it; answers come on a
 *     later loop turn, after the shard's script ran.
 *
 * Every call answers through its callback exactly once, maybe before it
 * returns: callers are written for the asynchronous case. Events reach
 * sockets only through the hub in both (hub_publish or hub_accept). */
#ifndef AW_BROKER_H
#define AW_BROKER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hub.h"

typedef struct broker broker_t;

/* A publish's outcome: 0 with the receipt, AW_EINVAL (invalid_event),
 * AW_ECONFLICT (run_order), AW_EUNAVAIL (not stored, or not known to be: a
 * retry with the same idempotency key is exact), AW_ENOMEM; r->error says
 * why. */
typedef void (*broker_receipt_fn)(void *arg, int rc, const hub_receipt_t *r);
/* The user's stream is live on this node (0) or cannot be (AW_EUNAVAIL...). */
typedef void (*broker_ready_fn)(void *arg, int rc);
/* connections: the user's open connections on every node (borrowed; NULL
 * when rc is not 0). */
typedef void (*broker_list_fn)(void *arg, int rc, json_t *connections);
/* Retained events after since (their exact bytes), epoch NULL for a user
 * with no stream. */
typedef void (*broker_history_fn)(void *arg, int rc, const char *epoch, uint64_t seq,
                                  uint64_t first, const char *const *events, const size_t *lens,
                                  size_t n);
typedef void (*broker_ticket_fn)(void *arg, int rc, const char *id);
/* A valid ticket's user and the expiry of the token it came from. */
typedef void (*broker_peek_fn)(void *arg, int rc, const char *user, int64_t token_exp_ms);
typedef void (*broker_rc_fn)(void *arg, int rc);

/* One event to publish. */
typedef struct broker_pub {
    const char *user; /* the target, a valid id */
    json_t *ev;       /* its fields (the caller's; loses any envelope fields) */
    const char *idem; /* idempotency key, NULL for none */
    bool own_run;     /* an agent's run driven by this node (leased to it) */
    bool gated;       /* passed the run-order gate already (runs.c's own events) */
    const char *tail; /* ev's fields as hub_prepare wrote them (validated), NULL: not done */
    size_t tail_len;
    void *arg; /* given back with this event's answer */
} broker_pub_t;

typedef struct broker_ops {
    const char *name;
    /* is the user's stream reachable now? why says what is not */
    bool (*available)(broker_t *b, const char *user);
    bool (*ready)(broker_t *b, char *why, size_t whylen);
    /* what /readyz shows besides the status (new reference), NULL: nothing */
    json_t *(*describe)(broker_t *b);
    /* publishes items in order (a batch: one round trip per shard); fn gets
     * each item's answer with its arg */
    void (*publish)(broker_t *b, broker_pub_t *items, size_t n, broker_receipt_fn fn);
    /* a session of user here needs the live stream (balanced by release) */
    void (*acquire)(broker_t *b, const char *user, broker_ready_fn fn, void *arg);
    void (*release)(broker_t *b, const char *user);
    /* a client saw events this node's copy of the stream has not yet (it
     * resumes from another node): fn once the copy caught up with the owner */
    void (*catch_up)(broker_t *b, const char *user, broker_ready_fn fn, void *arg);
    void (*connections)(broker_t *b, const char *user, broker_list_fn fn, void *arg);
    /* closes them with 4002; fn gets those closed */
    void (*disconnect)(broker_t *b, const char *user, broker_list_fn fn, void *arg);
    void (*history)(broker_t *b, const char *user, uint64_t since, broker_history_fn fn, void *arg);
    /* AW_ELIMIT past max_per_user unused tickets */
    void (*ticket_issue)(broker_t *b, const char *user, int64_t expires_ms, int64_t token_exp_ms,
                         broker_ticket_fn fn, void *arg);
    /* reads a ticket without spending it (the upgrade checks its limits
     * first); AW_ENOTFOUND when unknown, used or expired */
    void (*ticket_peek)(broker_t *b, const char *id, broker_peek_fn fn, void *arg);
    /* spends it: 0 for exactly one taker, AW_ENOTFOUND for the others */
    void (*ticket_take)(broker_t *b, const char *id, broker_rc_fn fn, void *arg);
    /* is run_id an open run of user? (0 or AW_ENOTFOUND) */
    void (*run_open)(broker_t *b, const char *user, const char *run_id, broker_rc_fn fn, void *arg);
    /* the server's agent_completed for an open run (AW_ENOTFOUND: not open) */
    void (*run_finish)(broker_t *b, const char *user, const char *run_id, const char *status,
                       const char *error, broker_receipt_fn fn, void *arg);
} broker_ops_t;

struct broker {
    const broker_ops_t *ops;
    void *impl;
};

struct server;

/* The embedded default: the server's hub, idempotency cache and tickets. */
void broker_memory_init(broker_t *b, struct server *srv);

/* Is b the embedded default in memory (no --data-dir)? Only its publishes
 * may leave the lock (below); session.c reads their requests under the
 * lock shared. */
bool broker_memory_direct(broker_t *b);

/* Can b publish these events by shards (broker_memory_publish_sharded)?
 * broker_memory_direct on several loops, and prepared events. Events of
 * runs and keyed events may: the run gate keeps each user's runs in the
 * user's shard (runs.h), and a key's lookup, publish and receipt happen
 * under its user's shard lock (idem.h). The one predicate: every caller
 * asks here. */
bool broker_memory_shardable(broker_t *b, const broker_pub_t *items, size_t n);

/* Publishes as broker_publish, letting go of the lock: each shard's events
 * go out under that shard's lock (lock.h), so loops publishing to users of
 * different shards do not wait on each other. An event a shard holder may
 * not publish (room to make under the memory cap) goes out after the
 * lock is taken again, and so do the later events of its shard, in order.
 * The caller holds the lock and keeps no pointer into shared state across
 * the call; fn may be called under a shard lock, where it touches only
 * what is its own. */
void broker_memory_publish_sharded(broker_t *b, broker_pub_t *items, size_t n,
                                   broker_receipt_fn fn);

static inline bool broker_available(broker_t *b, const char *user)
{
    return b->ops->available(b, user);
}
static inline bool broker_ready(broker_t *b, char *why, size_t whylen)
{
    return b->ops->ready(b, why, whylen);
}
static inline json_t *broker_describe(broker_t *b)
{
    return b->ops->describe ? b->ops->describe(b) : NULL;
}
static inline void broker_publish(broker_t *b, broker_pub_t *items, size_t n, broker_receipt_fn fn)
{
    b->ops->publish(b, items, n, fn);
}
static inline void broker_acquire(broker_t *b, const char *user, broker_ready_fn fn, void *arg)
{
    b->ops->acquire(b, user, fn, arg);
}
static inline void broker_catch_up(broker_t *b, const char *user, broker_ready_fn fn, void *arg)
{
    b->ops->catch_up(b, user, fn, arg);
}
static inline void broker_release(broker_t *b, const char *user)
{
    b->ops->release(b, user);
}
static inline void broker_connections(broker_t *b, const char *user, broker_list_fn fn, void *arg)
{
    b->ops->connections(b, user, fn, arg);
}
static inline void broker_disconnect(broker_t *b, const char *user, broker_list_fn fn, void *arg)
{
    b->ops->disconnect(b, user, fn, arg);
}
static inline void broker_history(broker_t *b, const char *user, uint64_t since,
                                  broker_history_fn fn, void *arg)
{
    b->ops->history(b, user, since, fn, arg);
}
static inline void broker_ticket_issue(broker_t *b, const char *user, int64_t expires_ms,
                                       int64_t token_exp_ms, broker_ticket_fn fn, void *arg)
{
    b->ops->ticket_issue(b, user, expires_ms, token_exp_ms, fn, arg);
}
static inline void broker_ticket_peek(broker_t *b, const char *id, broker_peek_fn fn, void *arg)
{
    b->ops->ticket_peek(b, id, fn, arg);
}
static inline void broker_ticket_take(broker_t *b, const char *id, broker_rc_fn fn, void *arg)
{
    b->ops->ticket_take(b, id, fn, arg);
}
static inline void broker_run_open(broker_t *b, const char *user, const char *run_id,
                                   broker_rc_fn fn, void *arg)
{
    b->ops->run_open(b, user, run_id, fn, arg);
}
static inline void broker_run_finish(broker_t *b, const char *user, const char *run_id,
                                     const char *status, const char *error, broker_receipt_fn fn,
                                     void *arg)
{
    b->ops->run_finish(b, user, run_id, status, error, fn, arg);
}

#endif
