/* store.c -- users' streams in SQLite (store.h). Prepared statements made
 * once at open; the byte and event counts of the retained history are kept
 * in memory (read once at open) so that the caps cost no scan per turn. */
#include "store.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aw.h"

#define STORE_FORMAT        "agentwire-store 2"
#define STORE_FORMAT_PREFIX "agentwire-store "

enum stmt {
    S_STREAM_GET,
    S_STREAM_PUT,
    S_EVENT_PUT,
    S_RANGE,
    S_OLDEST,
    S_EVENT_DROP,
    S_EVENT_DEL,
    S_USER_DEL,
    S_USER_BYTES,
    S_RUN_PUT,
    S_RUN_DEL,
    S_RUN_ALL,
    S_IDEM_PUT,
    S_IDEM_OLDEST,
    S_IDEM_DEL,
    S_IDEM_ALL,
    S_FIRST,
    S_COUNT
};

static const char *const sql[S_COUNT] = {
    [S_STREAM_GET] = "SELECT epoch, seq FROM streams WHERE user = ?1",
    [S_STREAM_PUT] = ("INSERT INTO streams(user, epoch, seq) VALUES(?1, ?2, ?3) "
                      "ON CONFLICT(user) DO UPDATE SET epoch = ?2, seq = ?3"),
    [S_EVENT_PUT] = ("INSERT OR REPLACE INTO events(user, first, last, ts, bytes, json) "
                     "VALUES(?1, ?2, ?3, ?4, length(?5), ?5)"),
    [S_RANGE] = ("SELECT first, ts, json FROM events WHERE user = ?1 AND last >= ?2 "
                 "ORDER BY first"),
    [S_OLDEST] = "SELECT id, last - first + 1, bytes, ts FROM events ORDER BY id",
    [S_EVENT_DROP] = ("DELETE FROM events WHERE user = ?1 AND first <= ?2 AND last <= ?2 "
                      "RETURNING last - first + 1, bytes"),
    [S_EVENT_DEL] = "DELETE FROM events WHERE id = ?1",
    [S_USER_DEL] = "DELETE FROM events WHERE user = ?1",
    [S_USER_BYTES] = ("SELECT coalesce(sum(last - first + 1), 0), coalesce(sum(bytes), 0), "
                      "count(*) FROM events WHERE user = ?1"),
    [S_RUN_PUT] = "INSERT OR REPLACE INTO runs(user, run_id, thread_id) VALUES(?1, ?2, ?3)",
    [S_RUN_DEL] = "DELETE FROM runs WHERE user = ?1 AND run_id = ?2",
    [S_RUN_ALL] = "SELECT user, run_id, thread_id FROM runs",
    [S_IDEM_PUT] = ("INSERT OR REPLACE INTO idem(user, key, seq, epoch, event_id, ts) "
                    "VALUES(?1, ?2, ?3, ?4, ?5, ?6)"),
    [S_FIRST] = "SELECT first FROM events WHERE user = ?1 ORDER BY first LIMIT 1",
    [S_IDEM_OLDEST] = "SELECT id, ts FROM idem ORDER BY id",
    [S_IDEM_DEL] = "DELETE FROM idem WHERE id = ?1",
    [S_IDEM_ALL] = ("SELECT user, key, seq, epoch, event_id, ts FROM idem WHERE ts >= ?1 "
                    "ORDER BY id"),
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS streams(user TEXT PRIMARY KEY, epoch TEXT NOT NULL,"
    " seq INTEGER NOT NULL) WITHOUT ROWID;"
    /* rows in the order they were written (id): the oldest come first for
     * the caps; rows of a few KiB stay in the table's own pages */
    "CREATE TABLE IF NOT EXISTS events(id INTEGER PRIMARY KEY, user TEXT NOT NULL,"
    " first INTEGER NOT NULL, last INTEGER NOT NULL, ts INTEGER NOT NULL,"
    " bytes INTEGER NOT NULL, json BLOB NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS events_user ON events(user, first);"
    "CREATE TABLE IF NOT EXISTS idem(id INTEGER PRIMARY KEY, user TEXT NOT NULL,"
    " key TEXT NOT NULL, seq INTEGER NOT NULL, epoch TEXT NOT NULL, event_id TEXT NOT NULL,"
    " ts INTEGER NOT NULL);"
    "CREATE UNIQUE INDEX IF NOT EXISTS idem_key ON idem(user, key);"
    "CREATE TABLE IF NOT EXISTS runs(user TEXT NOT NULL, run_id TEXT NOT NULL,"
    " thread_id TEXT NOT NULL, PRIMARY KEY(user, run_id)) WITHOUT ROWID;";

struct store {
    sqlite3 *db;
    sqlite3_stmt *st[S_COUNT];
    uint64_t bytes, events, rows;
    char error[256];
};

static int fail(store_t *s, const char *what)
{
    snprintf(s->error, sizeof s->error, "%s: %s", what,
             s->db ? sqlite3_errmsg(s->db) : "no database");
    return AW_EIO;
}

const char *store_error(const store_t *s)
{
    return s->error;
}

/* Runs one statement that returns no rows. */
static int exec(store_t *s, const char *text)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, text, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(s->error, sizeof s->error, "%s", msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return AW_EIO;
    }
    return AW_OK;
}

/* Is this an empty database, or one of ours? Anything else is refused
 * before a table is created in it. */
static int check_format(store_t *s, char *err, size_t errlen, const char *path)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM sqlite_master", -1, &q, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "%s: not an agentwire store (%s)", path, sqlite3_errmsg(s->db));
        return AW_EIO;
    }
    int rc = sqlite3_step(q);
    int tables = rc == SQLITE_ROW ? sqlite3_column_int(q, 0) : -1;
    sqlite3_finalize(q);
    if (tables < 0) {
        snprintf(err, errlen, "%s: not an agentwire store (%s)", path, sqlite3_errmsg(s->db));
        return AW_EIO;
    }
    if (tables == 0)
        return AW_OK; /* new */
    const char *have = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = 'format'", -1, &q, NULL) ==
            SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        have = (const char *)sqlite3_column_text(q, 0);
    bool ours = have && strcmp(have, STORE_FORMAT) == 0;
    char found[64];
    snprintf(found, sizeof found, "%s", have ? have : "no agentwire format mark");
    sqlite3_finalize(q);
    if (!ours && strncmp(found, STORE_FORMAT_PREFIX, strlen(STORE_FORMAT_PREFIX)) == 0) {
        snprintf(err, errlen,
                 "%s: written in another store format (%s; this agentwire reads %s); move it "
                 "away or choose another --data-dir",
                 path, found, STORE_FORMAT);
        return AW_EIO;
    }
    if (!ours) {
        snprintf(err, errlen,
                 "%s: not an agentwire store (%s); move it away or choose another "
                 "--data-dir",
                 path, found);
        return AW_EIO;
    }
    return AW_OK;
}

static int open_db(store_t **out, const char *dir, enum store_sync sync, bool reader, char *err,
                   size_t errlen)
{
    *out = NULL;
    store_t *s = calloc(1, sizeof *s);
    char path[4096];
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return AW_ENOMEM;
    }
    snprintf(path, sizeof path, "%s/%s", dir, STORE_FILE);
    if (!reader && access(dir, W_OK) != 0) { /* WAL needs to create files beside the store */
        snprintf(err, errlen, "%s: the data directory cannot be written: %s", dir, strerror(errno));
        free(s);
        return AW_EIO;
    }
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
        store_close(s);
        return AW_EIO;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, reader ? 100 : 5000); /* the reader serves the loop */
    static const char *const syncs[] = {"PRAGMA synchronous=OFF", "PRAGMA synchronous=NORMAL",
                                        "PRAGMA synchronous=FULL"};
    /* pages are read through a mapping, not copied in by pread (SQLite
     * keeps writing through its own path) */
    exec(s, "PRAGMA mmap_size=1073741824");
    int rc = check_format(s, err, errlen, path);
    if (rc == AW_OK && !reader &&
        (exec(s, "PRAGMA journal_mode=WAL") != AW_OK || exec(s, syncs[sync]) != AW_OK ||
         exec(s, "PRAGMA cache_size=-65536") != AW_OK ||
         exec(s, "PRAGMA wal_autocheckpoint=16384") != AW_OK || exec(s, schema) != AW_OK ||
         exec(s, "INSERT OR IGNORE INTO meta(key, value) VALUES('format', '" STORE_FORMAT "')") !=
             AW_OK)) {
        snprintf(err, errlen, "%s: %s", path, s->error);
        rc = AW_EIO;
    }
    for (int i = 0; rc == AW_OK && i < S_COUNT; i++) {
        if (sqlite3_prepare_v3(s->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL) !=
            SQLITE_OK) {
            snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(s->db));
            rc = AW_EIO;
        }
    }
    sqlite3_stmt *q = NULL;
    if (rc == AW_OK && reader) {
        /* the writer's connection keeps the counts */
    } else if (rc == AW_OK &&
               sqlite3_prepare_v2(s->db,
                                  "SELECT coalesce(sum(last - first + 1), 0), "
                                  "coalesce(sum(bytes), 0), count(*) FROM events",
                                  -1, &q, NULL) == SQLITE_OK &&
               sqlite3_step(q) == SQLITE_ROW) {
        s->events = (uint64_t)sqlite3_column_int64(q, 0);
        s->bytes = (uint64_t)sqlite3_column_int64(q, 1);
        s->rows = (uint64_t)sqlite3_column_int64(q, 2);
    } else if (rc == AW_OK) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(s->db));
        rc = AW_EIO;
    }
    sqlite3_finalize(q);
    if (rc != AW_OK) {
        store_close(s);
        return rc;
    }
    *out = s;
    return AW_OK;
}

int store_open(store_t **out, const char *dir, enum store_sync sync, char *err, size_t errlen)
{
    return open_db(out, dir, sync, false, err, errlen);
}

int store_open_reader(store_t **out, const char *dir, char *err, size_t errlen)
{
    return open_db(out, dir, STORE_SYNC_BATCH, true, err, errlen);
}

void store_close(store_t *s)
{
    if (!s)
        return;
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_close(s->db);
    free(s);
}

int store_begin(store_t *s)
{
    return exec(s, "BEGIN IMMEDIATE");
}

int store_commit(store_t *s)
{
    if (exec(s, "COMMIT") != AW_OK) {
        store_rollback(s);
        return AW_EIO;
    }
    return AW_OK;
}

void store_rollback(store_t *s)
{
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Steps a statement that returns no row, then resets it. */
static int run(store_t *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? AW_OK : fail(s, what);
}

int store_append(store_t *s, const char *user, uint64_t first, uint64_t last, int64_t ts,
                 const char *lines, size_t len)
{
    if (last < first || len > INT32_MAX) {
        snprintf(s->error, sizeof s->error, "append: a row of %zu bytes for %llu..%llu", len,
                 (unsigned long long)first, (unsigned long long)last);
        return AW_EIO;
    }
    sqlite3_stmt *e = s->st[S_EVENT_PUT];
    sqlite3_bind_text(e, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_int64(e, 2, (sqlite3_int64)first);
    sqlite3_bind_int64(e, 3, (sqlite3_int64)last);
    sqlite3_bind_int64(e, 4, ts);
    sqlite3_bind_blob(e, 5, lines, (int)len, SQLITE_STATIC);
    if (run(s, e, "append") != AW_OK)
        return AW_EIO;
    s->events += last - first + 1;
    s->bytes += len;
    s->rows++;
    return AW_OK;
}

int store_head(store_t *s, const char *user, const char *epoch, uint64_t seq, uint64_t keep)
{
    sqlite3_stmt *h = s->st[S_STREAM_PUT];
    sqlite3_bind_text(h, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_text(h, 2, epoch, -1, SQLITE_STATIC);
    sqlite3_bind_int64(h, 3, (sqlite3_int64)seq);
    if (run(s, h, "stream head") != AW_OK)
        return AW_EIO;
    if (!keep || seq <= keep)
        return AW_OK;
    /* the count cap: the user's events before the newest keep go */
    sqlite3_stmt *d = s->st[S_EVENT_DROP];
    sqlite3_bind_text(d, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_int64(d, 2, (sqlite3_int64)(seq - keep));
    int rc;
    while ((rc = sqlite3_step(d)) == SQLITE_ROW) {
        s->rows--;
        s->events -= (uint64_t)sqlite3_column_int64(d, 0);
        s->bytes -= (uint64_t)sqlite3_column_int64(d, 1);
    }
    sqlite3_reset(d);
    sqlite3_clear_bindings(d);
    return rc == SQLITE_DONE ? AW_OK : fail(s, "trim");
}

int store_stream_reset(store_t *s, const char *user, const char *epoch)
{
    sqlite3_stmt *q = s->st[S_USER_BYTES];
    sqlite3_bind_text(q, 1, user, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        sqlite3_reset(q);
        return fail(s, "stream reset");
    }
    uint64_t n = (uint64_t)sqlite3_column_int64(q, 0), bytes = (uint64_t)sqlite3_column_int64(q, 1),
             rows = (uint64_t)sqlite3_column_int64(q, 2);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    sqlite3_stmt *d = s->st[S_USER_DEL], *h = s->st[S_STREAM_PUT];
    sqlite3_bind_text(d, 1, user, -1, SQLITE_STATIC);
    if (run(s, d, "stream reset") != AW_OK)
        return AW_EIO;
    s->events -= n;
    s->bytes -= bytes;
    s->rows -= rows;
    sqlite3_bind_text(h, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_text(h, 2, epoch, -1, SQLITE_STATIC);
    sqlite3_bind_int64(h, 3, 0);
    return run(s, h, "stream head");
}

int store_stream(store_t *s, const char *user, char *epoch, size_t epochlen, uint64_t *seq)
{
    sqlite3_stmt *q = s->st[S_STREAM_GET];
    sqlite3_bind_text(q, 1, user, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    int out = AW_ENOTFOUND;
    if (rc == SQLITE_ROW) {
        snprintf(epoch, epochlen, "%s", (const char *)sqlite3_column_text(q, 0));
        *seq = (uint64_t)sqlite3_column_int64(q, 1);
        out = AW_OK;
    } else if (rc != SQLITE_DONE) {
        out = fail(s, "stream head");
    }
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return out;
}

int store_first(store_t *s, const char *user, uint64_t *first)
{
    sqlite3_stmt *q = s->st[S_FIRST];
    sqlite3_bind_text(q, 1, user, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    *first = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(q, 0) : 0;
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? AW_OK : fail(s, "first");
}

int store_range(store_t *s, const char *user, uint64_t from, size_t max, store_event_fn fn,
                void *arg)
{
    sqlite3_stmt *q = s->st[S_RANGE];
    sqlite3_bind_text(q, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, (sqlite3_int64)from);
    int rc;
    size_t n = 0;
    bool stop = false;
    while (!stop && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        /* a row holds events first.. one per line */
        uint64_t seq = (uint64_t)sqlite3_column_int64(q, 0);
        int64_t ts = sqlite3_column_int64(q, 1);
        const char *p = sqlite3_column_blob(q, 2);
        const char *end = p + sqlite3_column_bytes(q, 2);
        for (; p && p < end && !stop; seq++) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
            if (seq >= from)
                stop = fn(arg, seq, ts, p, len) != 0 || (max && ++n >= max);
            p += len + 1;
        }
    }
    if (stop)
        rc = SQLITE_DONE;
    int out = rc == SQLITE_DONE ? AW_OK : fail(s, "range");
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return out;
}

/* Deletes the oldest rows (in the order written) while they are older than
 * before_ms or the store holds more than max_bytes, at most 4096 at a time;
 * how many rows went, or AW_EIO. */
static long drop_oldest(store_t *s, int64_t before_ms, uint64_t max_bytes)
{
    typedef struct victim {
        int64_t id;
        uint64_t count, len;
    } victim_t;
    victim_t v[256];
    long done = 0;
    for (;;) {
        sqlite3_stmt *pick = s->st[S_OLDEST];
        size_t n = 0;
        uint64_t bytes = s->bytes;
        int rc;
        while (n < AW_ARRAY_LEN(v) && (rc = sqlite3_step(pick)) == SQLITE_ROW) {
            if (sqlite3_column_int64(pick, 3) >= before_ms && bytes <= max_bytes)
                break; /* young, and within the cap: so is everything after it */
            v[n].id = sqlite3_column_int64(pick, 0);
            v[n].count = (uint64_t)sqlite3_column_int64(pick, 1);
            v[n].len = (uint64_t)sqlite3_column_int64(pick, 2);
            bytes -= bytes >= v[n].len ? v[n].len : bytes;
            n++;
        }
        bool more = n == AW_ARRAY_LEN(v);
        if (!more && rc != SQLITE_ROW && rc != SQLITE_DONE) {
            sqlite3_reset(pick);
            return fail(s, "trim");
        }
        sqlite3_reset(pick);
        sqlite3_stmt *del = s->st[S_EVENT_DEL];
        for (size_t i = 0; i < n; i++) {
            sqlite3_bind_int64(del, 1, v[i].id);
            if (run(s, del, "trim") != AW_OK)
                return AW_EIO;
            done++;
            s->rows--;
            s->events -= v[i].count;
            s->bytes -= v[i].len;
        }
        if (!more || done >= 4096)
            return done;
    }
}

int store_idem_put(store_t *s, const char *user, const char *key, uint64_t seq, const char *epoch,
                   const char *event_id, int64_t ts)
{
    sqlite3_stmt *q = s->st[S_IDEM_PUT];
    sqlite3_bind_text(q, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, (sqlite3_int64)seq);
    sqlite3_bind_text(q, 4, epoch, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, event_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 6, ts);
    return run(s, q, "idempotency key");
}

long store_idem_trim(store_t *s, int64_t before_ms)
{
    long done = 0;
    for (;;) {
        int64_t ids[256];
        size_t n = 0;
        sqlite3_stmt *pick = s->st[S_IDEM_OLDEST];
        int rc;
        while (n < AW_ARRAY_LEN(ids) && (rc = sqlite3_step(pick)) == SQLITE_ROW &&
               sqlite3_column_int64(pick, 1) < before_ms)
            ids[n++] = sqlite3_column_int64(pick, 0);
        sqlite3_reset(pick);
        if (n < AW_ARRAY_LEN(ids) && rc != SQLITE_ROW && rc != SQLITE_DONE)
            return fail(s, "idempotency keys");
        sqlite3_stmt *del = s->st[S_IDEM_DEL];
        for (size_t i = 0; i < n; i++) {
            sqlite3_bind_int64(del, 1, ids[i]);
            if (run(s, del, "idempotency keys") != AW_OK)
                return AW_EIO;
        }
        done += (long)n;
        if (n < AW_ARRAY_LEN(ids) || done >= 4096)
            return done;
    }
}

int store_each_idem(store_t *s, int64_t since_ms,
                    void (*fn)(void *arg, const char *user, const char *key, uint64_t seq,
                               const char *epoch, const char *event_id, int64_t ts),
                    void *arg)
{
    sqlite3_stmt *q = s->st[S_IDEM_ALL];
    sqlite3_bind_int64(q, 1, since_ms);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW)
        fn(arg, (const char *)sqlite3_column_text(q, 0), (const char *)sqlite3_column_text(q, 1),
           (uint64_t)sqlite3_column_int64(q, 2), (const char *)sqlite3_column_text(q, 3),
           (const char *)sqlite3_column_text(q, 4), sqlite3_column_int64(q, 5));
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? AW_OK : fail(s, "idempotency keys");
}

long store_trim(store_t *s, int64_t before_ms, uint64_t max_bytes)
{
    uint64_t had = s->events;
    long n;
    do {
        if ((n = drop_oldest(s, before_ms, max_bytes)) < 0)
            return n;
    } while (n >= 4096);
    return (long)(had - s->events);
}

uint64_t store_bytes(const store_t *s)
{
    return s->bytes;
}

uint64_t store_events(const store_t *s)
{
    return s->events;
}

int store_run_open(store_t *s, const char *user, const char *run_id, const char *thread_id)
{
    sqlite3_stmt *q = s->st[S_RUN_PUT];
    sqlite3_bind_text(q, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, run_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, thread_id, -1, SQLITE_STATIC);
    return run(s, q, "run");
}

int store_run_closed(store_t *s, const char *user, const char *run_id)
{
    sqlite3_stmt *q = s->st[S_RUN_DEL];
    sqlite3_bind_text(q, 1, user, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, run_id, -1, SQLITE_STATIC);
    return run(s, q, "run");
}

int store_each_open_run(store_t *s,
                        void (*fn)(void *arg, const char *user, const char *run_id,
                                   const char *thread_id),
                        void *arg)
{
    sqlite3_stmt *q = s->st[S_RUN_ALL];
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW)
        fn(arg, (const char *)sqlite3_column_text(q, 0), (const char *)sqlite3_column_text(q, 1),
           (const char *)sqlite3_column_text(q, 2));
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? AW_OK : fail(s, "runs");
}
