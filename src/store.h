/* store.h -- users' streams on disk (--data-dir), for a single node whose
 * restart must lose nothing it acknowledged: SQLite in WAL mode, one file
 * (DIR/agentwire.db) in a schema of our own, no file format of our own.
 *
 * What is stored: each user's stream head (epoch, latest seq), the retained
 * events (the very JSON that was delivered), and the runs open at the time,
 * so that a restart can end them. A row holds a run of one user's
 * consecutive events (one per line), so that a group of writes costs a row
 * per user, not per event. Writes are grouped (durable.h): one transaction
 * per group, acknowledged only after store_commit returned 0. Reads are for
 * start-up (lazily, per user) and for history.
 *
 * A store_t is one SQLite connection: use it from one thread at a time. */
#ifndef AW_STORE_H
#define AW_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_FILE "agentwire.db"

/* What a commit costs and what a power loss may take (--fsync). */
enum store_sync {
    STORE_SYNC_OFF,    /* no fsync: a process crash loses nothing, a power loss may */
    STORE_SYNC_BATCH,  /* fsync of the log at checkpoints (SQLite NORMAL): the last commits
                          may be lost by a power loss, never by a process crash */
    STORE_SYNC_ALWAYS, /* fsync at every commit (FULL): nothing acknowledged is lost */
};

typedef struct store store_t;

/* Opens (or creates) DIR/agentwire.db. A file that is not an agentwire store,
 * or is corrupt, or a directory that cannot be written gives AW_EIO with one
 * line in err; nothing is changed then. */
int store_open(store_t **out, const char *dir, enum store_sync sync, char *err, size_t errlen);
/* A second connection to a store opened by store_open, for reads beside
 * the writer (another thread). */
int store_open_reader(store_t **out, const char *dir, char *err, size_t errlen);
void store_close(store_t *s);

/* The last error's text (SQLite's words), for logs. */
const char *store_error(const store_t *s);

/* A group of writes: begin, appends, commit (or rollback on failure). */
int store_begin(store_t *s);
int store_commit(store_t *s);
void store_rollback(store_t *s);

/* Events first..last of user, as delivered, one per line (lines, len: the
 * events joined by '\n'), written at ts. Inside a group, followed by
 * store_head for the user's newest event of the group. */
int store_append(store_t *s, const char *user, uint64_t first, uint64_t last, int64_t ts,
                 const char *lines, size_t len);

/* The stream head moves to (epoch, seq); the user's events up to
 * seq - keep go (the count cap; 0: none). 0 or AW_EIO. */
int store_head(store_t *s, const char *user, const char *epoch, uint64_t seq, uint64_t keep);

/* A stream's head. 0 with epoch (HUB_EPOCH_LEN + 1 bytes) and seq, or
 * AW_ENOTFOUND, or AW_EIO. */
int store_stream(store_t *s, const char *user, char *epoch, size_t epochlen, uint64_t *seq);

/* The user's stream starts over (a new epoch, seq 0): its events go.
 * Inside a group. */
int store_stream_reset(store_t *s, const char *user, const char *epoch);

/* The seq of the user's oldest retained event (0: none). 0 or AW_EIO. */
int store_first(store_t *s, const char *user, uint64_t *first);

/* Calls fn for each retained event of user with seq >= from, oldest first,
 * at most max (0: no limit), with the time its row was written (ts). fn
 * returns nonzero to stop. 0 or AW_EIO. */
typedef int (*store_event_fn)(void *arg, uint64_t seq, int64_t ts, const char *json, size_t len);
int store_range(store_t *s, const char *user, uint64_t from, size_t max, store_event_fn fn,
                void *arg);

/* Keeps the history within its bounds: events older than before_ms, and
 * the oldest of all beyond max_bytes of event text, go. Inside or outside a
 * group. Returns how many went (>= 0) or AW_EIO. */
long store_trim(store_t *s, int64_t before_ms, uint64_t max_bytes);

/* Bytes of event text retained, and events retained. */
uint64_t store_bytes(const store_t *s);
uint64_t store_events(const store_t *s);

/* Idempotency keys of stored events, so that a retry after a restart is
 * exact: one put per key (inside a group), the oldest go when written before
 * before_ms (how many went, or AW_EIO), and those written since since_ms
 * are read back at start, oldest first. */
int store_idem_put(store_t *s, const char *user, const char *key, uint64_t seq, const char *epoch,
                   const char *event_id, int64_t ts);
long store_idem_trim(store_t *s, int64_t before_ms);
int store_each_idem(store_t *s, int64_t since_ms,
                    void (*fn)(void *arg, const char *user, const char *key, uint64_t seq,
                               const char *epoch, const char *event_id, int64_t ts),
                    void *arg);

/* Runs open now, so that a restart ends them (agent_completed, reason
 * restart). Inside a group. */
int store_run_open(store_t *s, const char *user, const char *run_id, const char *thread_id);
int store_run_closed(store_t *s, const char *user, const char *run_id);
/* Calls fn for each run recorded open. 0 or AW_EIO. */
int store_each_open_run(store_t *s,
                        void (*fn)(void *arg, const char *user, const char *run_id,
                                   const char *thread_id),
                        void *arg);

#endif
