/* hub.h -- the one registry of connections (user -> sessions) and the one
 * path by which events reach sockets.
 *
 * Every event, whatever its source (HTTP API now; agent runs, history replay
 * and brokers later), enters through hub_publish, which validates nothing
 * (the caller did), stamps the envelope, serializes the event once into a
 * shared frame and queues that frame on each open connection of the user.
 * Nothing else writes events to sessions. */
#ifndef AW_HUB_H
#define AW_HUB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "aw.h"
#include "config.h"
#include "frame.h"
#include "history.h"
#include "map.h"
#include "metrics.h"

struct session;

/* The hub reads downward: what lies above it (the loops, the run rules)
 * hands it callbacks instead of being called up into. */

/* Queues event frame f (number seq) for session s, on s's own loop: now, or
 * handed over to it. first is true for the first session of a fan-out. 0 when
 * the session takes it. Set by the server; the hub only fans out. */
typedef int (*hub_send_fn)(void *ctx, struct session *s, frame_t *f, uint64_t seq, bool first);

/* The run-order gate, asked about every event before it is stamped: 0, or
 * AW_ECONFLICT with the reason in why. */
typedef int (*hub_gate_fn)(void *ctx, const char *user, const json_t *ev, int64_t now_ms, char *why,
                           size_t whylen);

#define HUB_EPOCH_LEN    16 /* hex characters of an epoch */
#define HUB_EVENT_ID_LEN 32 /* bytes of an event id, NUL included */

typedef struct hub_user {
    const char *id;                /* read-only: the map's key copy */
    uint64_t seq;                  /* read-only: latest event sent, 0 before any */
    char epoch[HUB_EPOCH_LEN + 1]; /* read-only: the stream's epoch */
    history_t history;             /* read-only: retained events */
    int64_t last_active_ms;        /* read-only: last publish or detach */
    struct session *_conns;        /* head of the intrusive list of sessions */
    uint32_t nconns;               /* read-only: open sessions */
    /* private: streams with no connection and no event, longest idle first;
     * the first to go when the history memory cap is reached */
    struct hub_user *_idle_prev, *_idle_next;
    bool _idle;
    size_t _cost;      /* bytes of the record, counted under the history cap */
    uint64_t _stamped; /* latest seq given out (>= seq: events stamped, kept back) */
    uint32_t _pending; /* events stamped and kept back, not yet sent nor taken back */
    unsigned _shard;   /* hub_shard(id), kept at creation */
} hub_user_t;

/* One shard of the hub (lock.h): its users' records (seq, epoch, sessions)
 * and what publishing to them writes. A shard holder touches its own
 * shard, and the history pool, the users' rings and the idle list only
 * under the pool's lock; everything else of the hub is the lock's. */
typedef struct hub_shard {
    map_t users;         /* id -> hub_user_t * */
    aw_buf_t scratch;    /* serialization buffer, reused per event */
    uint64_t next_event; /* event id counter (the shard in its top bits) */
    uint64_t published;  /* events accepted (the metrics add the shards up) */
    uint64_t delivered;  /* event frames queued to sessions */
} __attribute__((aligned(64))) hub_shard_t;

typedef struct hub {
    /* read-only */
    size_t nconns;          /* attached sessions, all users */
    size_t nusers_live;     /* users with at least one session */
    history_pool_t history; /* limits and accounting of every user's history */
    /* private */
    hub_shard_t *_shards;  /* by a hash of the user id (hub_shard) */
    unsigned _nshards;     /* a power of two: aw_shards() */
    uv_mutex_t _pool_lock; /* the pool, the idle list and their counts, for shard holders */
    uint64_t _k0, _k1;     /* the shard hash's key */
    hub_user_t *_idle_head, *_idle_tail;
    uint64_t streams_dropped; /* read-only: idle streams dropped for the memory cap */
    const config_t *_cfg;
    metrics_t *_metrics;
    hub_send_fn send; /* public: how frames reach sessions (set before use) */
    void *send_ctx;
    hub_gate_fn gate; /* public: the run-order gate, NULL for none */
    void *gate_ctx;
    /* public: a stream starts in memory; its owner may give it the stored
     * epoch, seq and events (hub_restore). NULL: a new epoch. */
    void (*load)(void *ctx, struct hub *h, hub_user_t *u);
    void *load_ctx;
    /* public: events older than memory holds, kept elsewhere (--data-dir):
     * the first seq kept there (0: none; the rest up to u->seq follow), and
     * event seq as a new frame reference (NULL: not there). NULL: nowhere. */
    uint64_t (*older_first)(void *ctx, hub_user_t *u);
    frame_t *(*older)(void *ctx, hub_user_t *u, uint64_t seq);
    /* public: the undecoded long strings of the events being published
     * (bigstr.h), set around hub_publish by the caller that parsed them */
    const struct bigstr *literals;
    char _node[9];      /* random per-process prefix of event ids */
    aw_buf_t _scratch;  /* hub_event_body's buffer (under the lock) */
    int64_t _sweep_now; /* hub_sweep's clock, for its predicate */
} hub_t;

typedef struct hub_receipt {
    uint64_t seq;
    char epoch[HUB_EPOCH_LEN + 1];
    char event_id[HUB_EVENT_ID_LEN];
    size_t recipients; /* sessions the frame was queued on */
    bool gated;        /* the run gate admitted it: AW_EAGAIN after that publishes it again gated */
    char error[200];   /* why a publish was refused */
} hub_receipt_t;

int hub_init(hub_t *h, const config_t *cfg, metrics_t *m);
void hub_dispose(hub_t *h);

/* The shard of user_id (for aw_shard_lock). */
unsigned hub_shard(const hub_t *h, const char *user_id);
unsigned hub_shards(const hub_t *h); /* how many: hub_shard < this */

/* Events accepted and frames queued so far, all shards (under the lock). */
uint64_t hub_published(const hub_t *h);
uint64_t hub_delivered(const hub_t *h);

/* Would a new connection of user be within the limits (per user, in
 * total)? 0 or AW_ELIMIT. Per address is the server's (every socket). */
int hub_admit(const hub_t *h, const char *user_id);

/* Registers an authenticated session under user_id (its stream is created on
 * first use). Returns the user, or NULL when out of memory. */
hub_user_t *hub_attach(hub_t *h, struct session *s, const char *user_id);

/* Unregisters a session. Called only from the session's close callback,
 * which libuv runs after the loop phase that closed it, so a fan-out or kick
 * loop never sees its list change under it. */
void hub_detach(hub_t *h, struct session *s);

/* The user's stream, created when absent (NULL when out of memory). Its
 * record counts under --history-memory-bytes with the events: past the cap
 * idle streams (no connection, no event) go first, longest idle first, then
 * the oldest events; a dropped stream's next event starts a new epoch. */
hub_user_t *hub_user(hub_t *h, const char *user_id);

/* Users whose stream is in memory. */
size_t hub_nstreams(const hub_t *h);

/* The user's stream, or NULL when it does not exist. */
hub_user_t *hub_user_find(const hub_t *h, const char *user_id);

/* Publishes ev to user_id: the one entry of every event. Validates it
 * (AW_EINVAL: invalid_event), passes it through the run-order gate
 * (AW_ECONFLICT: run_order), then serializes it once with seq, epoch,
 * event_id, timestamp and user_id stamped (ev, which the caller still owns,
 * loses any fields of those names) and queues the frame on every open
 * session of the user. out->error says why a
 * publish was refused. 0, AW_EINVAL, AW_ECONFLICT or AW_ENOMEM. */
int hub_publish(hub_t *h, const char *user_id, json_t *ev, hub_receipt_t *out);

/* hub_publish in two halves (gated: the run gate was asked already), for an owner that must store
 * the event before anyone sees it (--data-dir): stamps ev with the user's next seq and hands back
 * its frame (a reference) without sending it or adding it to the history, which still end at
 * u->seq; then, in seq order per user, either hub_send_recorded (stored: history, fan-out) or
 * hub_unrecord (not stored: taken back, newest first; the seq is stamped again on the next event).
 * A stream with events kept back stays in memory. */
int hub_publish_record(hub_t *h, const char *user_id, json_t *ev, const char *tail, size_t tail_len,
                       bool gated, hub_receipt_t *out, frame_t **frame);

/* What of a publish needs no stream, so a caller may do it without the
 * shared lock (the event is its own): validates ev (AW_EINVAL, why says
 * why), drops its envelope-named fields and appends to out the text of its
 * other fields (literals, when not NULL, spliced back) as it follows the
 * envelope. hub_publish_prepared then publishes ev with that text (tail)
 * instead of serializing it: the same event, with less done under the lock.
 * hub_publish_record takes a tail too (NULL: none). */
/* hub_publish_prepared: tail NULL serializes ev here; gated: the run gate
 * admitted ev already (out->gated of an earlier AW_EAGAIN). Under the lock
 * alone, or under the user's shard lock: then a publish the shard holder
 * may not finish (an idle stream to drop to stay under the memory cap, an
 * event of an agent's run: runs_admit) is refused with AW_EAGAIN, nothing
 * stamped, for the caller to publish again under the lock alone, gated as
 * out->gated says. */
int hub_prepare(json_t *ev, const struct bigstr *lits, aw_buf_t *out, char *why, size_t whylen);
int hub_publish_prepared(hub_t *h, const char *user_id, json_t *ev, const char *tail,
                         size_t tail_len, bool gated, hub_receipt_t *out);
size_t hub_send_recorded(hub_t *h, const char *user_id, frame_t *f, uint64_t seq);
void hub_unrecord(hub_t *h, const char *user_id, uint64_t seq, frame_t *f);

/* From the load callback: the stream's stored head, then its retained
 * events oldest first (json as delivered, at ts). */
void hub_restore_head(hub_t *h, hub_user_t *u, const char *epoch, uint64_t seq);
int hub_restore(hub_t *h, hub_user_t *u, uint64_t seq, int64_t ts_ms, const char *json, size_t len);

/* Delivers an event stamped elsewhere (cluster mode: the user's shard gave
 * it seq and epoch; json is the whole event) through the same path as
 * hub_publish: history, then every live session of the user. */
int hub_accept(hub_t *h, const char *user_id, uint64_t seq, const char *json, size_t len,
               size_t *recipients);

/* The user's stream starts over from elsewhere's state (cluster mode: the
 * shard's epoch and seq); retained events are dropped. */
int hub_stream_reset(hub_t *h, const char *user_id, const char *epoch, uint64_t seq);

/* Serializes ev without its envelope fields (and with h->literals spliced
 * back), for a publish stamped elsewhere. *out is valid until the next hub
 * call. */
int hub_event_body(hub_t *h, json_t *ev, const char **out, size_t *len);

/* Can a client holding events up to `since` of `epoch` be given every event
 * after it? True when the epoch matches and events since+1..seq are all
 * retained, in memory or older storage (or there are none). */
bool hub_can_resume(const hub_t *h, hub_user_t *u, uint64_t since, const char *epoch);

/* The first retained event of u (memory or older storage), 0 for none. */
uint64_t hub_first_seq(const hub_t *h, hub_user_t *u);

/* Retained event seq of u: from memory (borrowed, *owned false) or older
 * storage (a new reference, *owned true); NULL when gone. */
frame_t *hub_history_get(const hub_t *h, hub_user_t *u, uint64_t seq, bool *owned);

/* Housekeeping: expires history and forgets users that have had no
 * connection and no retained event for the history ttl (their next stream
 * starts a new epoch). */
void hub_sweep(hub_t *h, int64_t now_ms);

/* Closes every session of user_id with code and reason; returns how many. */
size_t hub_disconnect_user(hub_t *h, const char *user_id, uint16_t code, const char *reason);

/* Calls fn for each session of user_id. fn may close the session. */
void hub_each_session(hub_t *h, const char *user_id, void (*fn)(struct session *s, void *arg),
                      void *arg);

#endif
