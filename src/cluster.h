/* cluster.h -- the Redis home of users' streams (--redis): several nodes
 * serve as one gateway. A user's stream (epoch, seq, retained events, runs,
 * idempotency receipts, presence) lives on one shard, chosen by shard.h;
 * every change to it is one call of the script cluster.lua. Events reach
 * this node's sessions only through the user's channel, which the node
 * subscribes to while it holds a session of the user, and from there
 * through hub_accept: the same delivery path as the memory mode.
 *
 * The node keeps each subscribed user's stream in the hub as a cache: it is
 * loaded (subscribe first, then read the range, then apply what arrived
 * meanwhile and is newer) before the user's sessions go live, a gap on the
 * channel is filled from the shard, and a stream that changed epoch or
 * cannot be filled closes the user's sessions (1001), whose clients resume
 * and are told resumed:false. Everything runs on the main loop. */
#ifndef AW_CLUSTER_H
#define AW_CLUSTER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "broker.h"
#include "config.h"
#include "hub.h"
#include "metrics.h"

typedef struct cluster cluster_t;

/* A publish's outcome: 0 with the receipt, AW_ECONFLICT (r->error says
 * why: run order), AW_EUNAVAIL (the shard did not answer in time: the event
 * may or may not exist; a retry with an idempotency key is exact). */
typedef broker_receipt_fn cluster_receipt_fn;

int cluster_init(cluster_t **out, uv_loop_t *loop, const config_t *cfg, hub_t *hub, metrics_t *m,
                 char *err, size_t errlen);
/* Closes the connections (pending calls fail); cluster_free after the loop
 * ran their close callbacks. */
void cluster_stop(cluster_t *c);
void cluster_free(cluster_t *c);

/* The cluster as the broker of users' streams (broker.h); its tickets
 * live on the user's shard (the id's first two hex digits name it). */
broker_t *cluster_broker(cluster_t *c);

/* This node's name in the cluster. */
const char *cluster_node_id(const cluster_t *c);

/* Is the user's shard answering? */
bool cluster_user_available(const cluster_t *c, const char *user);

/* Are all shards answering? When not, why names the first that is not. */
bool cluster_ready(const cluster_t *c, char *why, size_t whylen);

/* Publishes events through their users' shards' script (idempotency, run
 * gate, seq, history, channel): one call per shard, in order. fn gets each
 * event's answer with its item's arg, exactly once (maybe before this
 * returns). */
void cluster_publish(cluster_t *c, broker_pub_t *items, size_t n, cluster_receipt_fn fn);

/* The server's agent_completed for an open run of user (on any node):
 * fn gets AW_ENOTFOUND when the run is not open. */
void cluster_finish_run(cluster_t *c, const char *user, const char *run_id, const char *status,
                        const char *error, cluster_receipt_fn fn, void *arg);

/* Is run_id an open run of user (on any node)? fn(arg, rc): 0 open,
 * AW_ENOTFOUND, AW_EUNAVAIL. */
typedef broker_rc_fn cluster_rc_fn;
void cluster_run_open(cluster_t *c, const char *user, const char *run_id, cluster_rc_fn fn,
                      void *arg);

/* A session (or a run) of user on this node needs the user's live stream:
 * subscribes and loads it when this is the first. fn(arg, rc) is called once
 * the stream is live (rc 0; maybe before this returns) or cannot be loaded
 * (AW_EUNAVAIL). Balanced by cluster_user_release, also when fn failed. */
typedef broker_ready_fn cluster_ready_fn;
void cluster_user_acquire(cluster_t *c, const char *user, cluster_ready_fn fn, void *arg);
void cluster_user_release(cluster_t *c, const char *user);

/* The user's stream here may lag behind the shard (a client resuming from
 * another node has seen later events): reads the range now; fn once done. */
void cluster_user_catch_up(cluster_t *c, const char *user, cluster_ready_fn fn, void *arg);

/* The user's connections on this node changed: presence is written on the
 * next tick. */
void cluster_presence_changed(cluster_t *c, const char *user);

/* Every node's connections of user: fn(arg, rc, array) (array borrowed). */
typedef broker_list_fn cluster_list_fn;
void cluster_connections(cluster_t *c, const char *user, cluster_list_fn fn, void *arg);
/* Closes user's connections on every node; fn gets the ones closed. */
void cluster_disconnect(cluster_t *c, const char *user, cluster_list_fn fn, void *arg);

/* The retained events after since: fn(arg, rc, epoch, seq, first, events)
 * with events a JSON array of the stored event texts (borrowed). */
typedef broker_history_fn cluster_history_fn;
void cluster_history(cluster_t *c, const char *user, uint64_t since, cluster_history_fn fn,
                     void *arg);

/* Is user connected to some node (presence of live nodes, cached and
 * refreshed each tick for the users asked about)? */
bool cluster_user_present(cluster_t *c, const char *user);

/* Housekeeping: presence writes and refreshes, run leases, the reaper. */
void cluster_tick(cluster_t *c, int64_t now_ms);

/* Runs this node's agents drive, for their leases: set by the owner of runs. */
typedef void (*cluster_each_run_fn)(void *ctx,
                                    void (*add)(void *acc, const char *user, const char *run_id),
                                    void *acc);
void cluster_set_runs(cluster_t *c, cluster_each_run_fn each, void *ctx,
                      void (*stop)(void *ctx, const char *user, const char *run_id));

/* /metrics lines of the cluster (per shard). */
void cluster_metrics(cluster_t *c, FILE *f);

#endif
