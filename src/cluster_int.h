/* cluster_int.h -- what cluster.c (the shards, publishing, the tick and the
 * broker interface), cluster_streams.c (the users' streams this node
 * serves) and cluster_ops.c (presence, runs' leases and the reaper, the
 * API's reads, tickets) share. Not for other modules: they use cluster.h. */
#ifndef AW_CLUSTER_INT_H
#define AW_CLUSTER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "cluster.h"
#include "hub.h"
#include "map.h"
#include "rconn.h"

#define STREAM_KEEP_MS (24LL * 3600 * 1000) /* a stream outlives its history by a day */

typedef struct shard {
    struct cluster *c;
    int index;
    rconn_t cmd, sub;
    char sha[41];
    char era[48];        /* the server's run_id when it may lose writes, "" when durable */
    char durability[80]; /* appendonly/appendfsync as read at connect */
    bool durable;
    int hs_step;
} shard_t;

typedef struct waiter {
    cluster_ready_fn fn;
    void *arg;
    int64_t deadline;
    struct waiter *next;
} waiter_t;

typedef struct pending_ev {
    struct pending_ev *next;
    uint64_t seq;
    char epoch[HUB_EPOCH_LEN + 1];
    size_t len;
    char json[];
} pending_ev_t;

enum cuser_state { CU_NEW, CU_SUBSCRIBING, CU_SUBSCRIBED, CU_LIVE };

typedef struct cuser {
    const char *id; /* the map's key */
    struct cluster *c;
    int shard;
    unsigned refs;
    enum cuser_state state;
    bool loaded;       /* the hub holds this user's stream (LIVE once) */
    bool range_wanted; /* a range read must be made (load or gap) */
    bool range_flight; /* one is on its way */
    uint32_t sub_gen;  /* subscriptions made; a range read under an older one is stale */
    uint32_t range_gen;
    waiter_t *waiters;
    pending_ev_t *pend, *pend_tail;
    size_t npend;
} cuser_t;

struct cluster {
    uv_loop_t *loop;
    const config_t *cfg;
    hub_t *hub;
    metrics_t *m;
    shard_t *shards;
    int nshards;
    char node[72];
    char eid_prefix[9];
    uint64_t next_eid;
    map_t users;           /* id -> cuser_t* (subscribed or wanted) */
    map_t pres;            /* users whose presence must be written (value unused) */
    map_t asked;           /* users whose cluster presence runs asked about */
    uv_timer_t pres_timer; /* writes changed presence soon after the change */
    int64_t next_refresh, next_reap;
    cluster_each_run_fn each_run;
    void *runs_ctx;
    void (*stop_run)(void *ctx, const char *user, const char *run_id);
    uint64_t subscriptions;
    uint64_t gaps_filled, resets;
    broker_t broker; /* this, as broker.h sees it */
};

typedef struct tick_ctx {
    cluster_t *c;
    int64_t now;
} tick_ctx_t;

/* cluster.c */
typedef void (*call_fn)(cluster_t *c, redisReply *r, void *ctx);
/* Runs the script on sh with the n string arguments args (arglens NULL, or
 * SIZE_MAX for strlen). fn is always called, maybe before this returns. */
void cluster_call(cluster_t *c, shard_t *sh, call_fn fn, void *ctx, int n, const char **args,
                  const size_t *arglens);
shard_t *cluster_shard_for(const cluster_t *c, const char *user);
const char *cluster_num(char *buf, long long v); /* buf: 24 bytes */
void cluster_new_epoch(char out[HUB_EPOCH_LEN + 1]);
int64_t cluster_stream_keep(const cluster_t *c); /* ms a stream's keys live */

void cluster_user_key(char *out, size_t len, const char *user, const char *suffix);
/* "aw:N:USER:c" -> USER (in place: a pointer into buf, NUL-ended), or NULL */
const char *cluster_channel_user(char *buf, size_t buflen, const char *ch, size_t chlen);

/* cluster_streams.c */
void cluster_on_message(rconn_t *rc, const char *ch, size_t chlen, const char *msg, size_t len);
void cluster_on_subscribed(rconn_t *rc, const char *ch, size_t chlen);
void cluster_streams_shard_down(shard_t *sh); /* its users subscribe again, then fill the gap */
void cluster_streams_resubscribe(shard_t *sh);
void cluster_streams_tick(cluster_t *c, int64_t now);
void cluster_cuser_free(void *value);

/* cluster_ops.c */
void cluster_presence_tick(cluster_t *c, int64_t now);
void cluster_reap_tick(cluster_t *c, int64_t now);
void cluster_ticket_issue(broker_t *b, const char *user, int64_t expires_ms, int64_t token_exp_ms,
                          broker_ticket_fn fn, void *arg);
void cluster_ticket_peek(broker_t *b, const char *id, broker_peek_fn fn, void *arg);
void cluster_ticket_take(broker_t *b, const char *id, broker_rc_fn fn, void *arg);

#endif
