/* stored.h -- the embedded default with --data-dir: users' streams kept in
 * memory and on disk (durable.h, store.h), for one node whose restart must
 * lose nothing it acknowledged.
 *
 * A publish is stamped and kept back (hub_publish_record), written with the
 * other publishes of its loop turn in one group on the writer thread, and
 * only then sent to the user's sessions and answered 200; when the group
 * cannot be written its events are taken back and answered 503, /readyz says
 * why, and connections keep being served. After a restart a stream loads
 * from disk the first time it is used (epoch, seq, retained events), and
 * runs that were open end with agent_completed (reason restart). */
#ifndef AW_STORED_H
#define AW_STORED_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "broker.h"

struct server;

/* Opens the data directory; err says why not (exit 2). */
int stored_open(struct server *srv, uv_loop_t *loop, char *err, size_t errlen);
/* Ends the runs open when the process stopped (before listening). */
void stored_start(struct server *srv);
/* The memory broker's publish in stored mode. */
void stored_publish(struct server *srv, broker_pub_t *items, size_t n, broker_receipt_fn fn);
/* Is there a stored stream of user (not loaded yet)? */
bool stored_has_stream(struct server *srv, const char *user);
/* Housekeeping (loop 0's tick): the caps on disk, once a second. */
void stored_tick(struct server *srv, int64_t now_ms);
/* The store's lines of /metrics. */
void stored_metrics(struct server *srv, FILE *f);
/* Every publish handed to the store has been answered. */
bool stored_idle(struct server *srv);
/* The drain ended: the writer finishes its group, handles close. */
void stored_stop(struct server *srv);
void stored_close(struct server *srv);

#endif
