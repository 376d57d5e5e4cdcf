/* durable.h -- group commit of events to the store (store.h) on a writer
 * thread, so that the event loop never waits for SQLite or the disk.
 *
 * The loop submits a job (the events of one publish call, already stamped
 * and kept back from delivery) and goes on. At the end of the loop turn the
 * jobs submitted so far become one group; the writer thread writes the
 * group in one transaction (one row per user with that user's events of
 * the group, one line each) and commits it, while the loop gathers the next
 * group. When the commit returns, each job's done callback runs on the loop,
 * in submission order, with 0; when it fails, every job not yet answered
 * (this group and those gathered meanwhile) gets AW_EIO, newest first, so
 * that its owner can take the events back in the reverse of the order it
 * stamped them.
 *
 * Reads (start-up, loading a stream, history) use a second connection on
 * the loop's thread: SQLite's WAL lets them run beside the writer, and they
 * see every committed group. */
#ifndef AW_DURABLE_H
#define AW_DURABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "store.h"

typedef struct durable durable_t;

/* What an event changes besides the stream: a run opens or closes. */
enum durable_run { DURABLE_RUN_NONE, DURABLE_RUN_OPEN, DURABLE_RUN_CLOSED };

/* One event to store; every pointer is the submitter's, valid until done. */
typedef struct durable_ev {
    const char *user;
    const char *epoch;
    uint64_t seq;
    const char *json; /* the event as delivered, no newline in it */
    size_t len;
    enum durable_run run;
    const char *run_id, *thread_id;
    const char *idem, *event_id; /* its idempotency key (NULL: none) and event id */
} durable_ev_t;

/* A job's answer: 0 (committed), AW_EIO (not stored; error says why) or
 * AW_ECANCELED (the server stopped before the job was written: only free
 * what the job holds). */
typedef void (*durable_done_fn)(void *arg, int rc, const char *error);

/* Opens DIR/agentwire.db (store_open) with its reader and starts the writer.
 * keep is the count cap per user (--history-size). */
int durable_open(durable_t **out, uv_loop_t *loop, const char *dir, enum store_sync sync,
                 uint64_t keep, char *err, size_t errlen);

/* Queues n events (n >= 1) for the group of this loop turn. */
int durable_submit(durable_t *d, const durable_ev_t *evs, size_t n, durable_done_fn fn, void *arg);

/* Blocks until every job submitted has been answered (start-up only). */
void durable_wait(durable_t *d);

/* Nothing submitted is waiting for its answer. */
bool durable_idle(durable_t *d);

/* Asks the writer to apply the age and byte caps (store_trim), and to drop
 * idempotency keys written before idem_before_ms, between two groups. */
void durable_trim(durable_t *d, int64_t before_ms, uint64_t max_bytes, int64_t idem_before_ms);

/* The reader connection (loop thread only). */
store_t *durable_reader(durable_t *d);

/* What the store holds and has done (for logs and /metrics). */
typedef struct durable_stats {
    uint64_t events, bytes; /* on disk after the last group or trim */
    uint64_t groups;        /* groups committed */
    uint64_t failures;      /* groups not stored (answered 503) */
    uint64_t trimmed;       /* events dropped by the age and byte caps */
} durable_stats_t;
void durable_stats(durable_t *d, durable_stats_t *out);

/* Stops the writer after the group it is writing, and closes the loop's
 * handles; jobs not answered by then get AW_ECANCELED in durable_close. */
void durable_stop(durable_t *d);
void durable_close(durable_t *d);

#endif
