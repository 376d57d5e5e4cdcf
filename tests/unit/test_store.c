/* test_store.c -- the SQLite store of users' streams: what a commit keeps
 * over a close and reopen, what a rollback drops, the caps (age, count per
 * user, bytes), runs open at a crash, and clear refusals of files that are
 * not ours. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "aw.h"
#include "store.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/aw-store-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static store_t *open_ok(void)
{
    store_t *s;
    char err[512] = "";
    int rc = store_open(&s, dir, STORE_SYNC_BATCH, err, sizeof err);
    if (rc != AW_OK)
        fail_msg("store_open: %s", err);
    return s;
}

typedef struct seen {
    uint64_t seqs[64];
    char texts[64][64];
    size_t n;
} seen_t;

static int collect(void *arg, uint64_t seq, int64_t ts, const char *json, size_t len)
{
    (void)ts;
    seen_t *v = arg;
    v->seqs[v->n] = seq;
    snprintf(v->texts[v->n], sizeof v->texts[0], "%.*s", (int)len, json);
    v->n++;
    return 0;
}

static uint64_t keep; /* the count cap of the appends */

static void append(store_t *s, const char *user, const char *epoch, uint64_t seq, int64_t ts)
{
    char json[64];
    int n =
        snprintf(json, sizeof json, "{\"seq\":%llu,\"u\":\"%s\"}", (unsigned long long)seq, user);
    assert_int_equal(store_append(s, user, seq, seq, ts, json, (size_t)n), AW_OK);
    assert_int_equal(store_head(s, user, epoch, seq, keep), AW_OK);
}

static void test_commit_survives_reopen(void **state)
{
    (void)state;
    store_t *s = open_ok();
    assert_int_equal(store_begin(s), AW_OK);
    for (uint64_t q = 1; q <= 5; q++)
        append(s, "alice", "e1", q, 1000 + (int64_t)q);
    append(s, "bob", "e2", 1, 1000);
    assert_int_equal(store_commit(s), AW_OK);
    /* a group rolled back leaves nothing */
    assert_int_equal(store_begin(s), AW_OK);
    append(s, "alice", "e1", 6, 2000);
    store_rollback(s);
    store_close(s);

    s = open_ok();
    char epoch[32];
    uint64_t seq = 0;
    assert_int_equal(store_stream(s, "alice", epoch, sizeof epoch, &seq), AW_OK);
    assert_string_equal(epoch, "e1");
    assert_int_equal(seq, 5);
    assert_int_equal(store_stream(s, "carol", epoch, sizeof epoch, &seq), AW_ENOTFOUND);
    seen_t v = {0};
    assert_int_equal(store_range(s, "alice", 3, 0, collect, &v), AW_OK);
    assert_int_equal(v.n, 3);
    assert_int_equal(v.seqs[0], 3);
    assert_int_equal(v.seqs[2], 5);
    assert_string_equal(v.texts[0], "{\"seq\":3,\"u\":\"alice\"}");
    assert_int_equal(store_events(s), 6);
    assert_true(store_bytes(s) > 0);
    /* a new epoch drops the user's events */
    assert_int_equal(store_begin(s), AW_OK);
    assert_int_equal(store_stream_reset(s, "alice", "e9"), AW_OK);
    append(s, "alice", "e9", 1, 3000);
    assert_int_equal(store_commit(s), AW_OK);
    memset(&v, 0, sizeof v);
    assert_int_equal(store_range(s, "alice", 0, 0, collect, &v), AW_OK);
    assert_int_equal(v.n, 1);
    assert_int_equal(store_events(s), 2);
    store_close(s);
}

static void test_trims(void **state)
{
    (void)state;
    store_t *s = open_ok();
    assert_int_equal(store_begin(s), AW_OK);
    for (uint64_t q = 1; q <= 20; q++)
        append(s, "u1", "e", q, (int64_t)q * 10);
    keep = 5; /* count: at most 5 per user, dropped as events come */
    for (uint64_t q = 1; q <= 20; q++)
        append(s, "u2", "e", q, 1000 + (int64_t)q);
    keep = 0;
    assert_int_equal(store_commit(s), AW_OK);
    assert_int_equal(store_events(s), 25);
    /* age: u1's events before ts 100 go (seq 1..9) */
    assert_int_equal(store_trim(s, 100, UINT64_MAX), 9);
    assert_int_equal(store_trim(s, 150, UINT64_MAX), 5); /* seq 10..14 */
    assert_int_equal(store_events(s), 11);
    seen_t v = {0};
    assert_int_equal(store_range(s, "u2", 0, 0, collect, &v), AW_OK);
    assert_int_equal(v.n, 5);
    assert_int_equal(v.seqs[0], 16);
    /* bytes: the oldest of all go first (u1's) */
    uint64_t one = store_bytes(s) / store_events(s);
    assert_true(store_trim(s, 0, store_bytes(s) - 2 * one) >= 2);
    memset(&v, 0, sizeof v);
    assert_int_equal(store_range(s, "u1", 0, 0, collect, &v), AW_OK);
    assert_true(v.n <= 4);
    memset(&v, 0, sizeof v);
    assert_int_equal(store_range(s, "u2", 0, 0, collect, &v), AW_OK);
    assert_int_equal(v.n, 5); /* newer: untouched */
    store_close(s);
    /* the counts are read back at open */
    s = open_ok();
    assert_true(store_events(s) <= 9);
    store_close(s);
}

/* A row holds a run of one user's events, one per line: ranges start
 * inside rows, the count cap drops whole rows only, and a reader connection
 * sees what the writer committed. */
static void test_rows_of_many_events(void **state)
{
    (void)state;
    store_t *s = open_ok(), *r;
    char err[512] = "";
    assert_int_equal(store_open_reader(&r, dir, err, sizeof err), AW_OK);
    const char rows[][64] = {"{\"n\":1}\n{\"n\":2}\n{\"n\":3}", "{\"n\":4}\n{\"n\":5}",
                             "{\"n\":6}"};
    assert_int_equal(store_begin(s), AW_OK);
    assert_int_equal(store_append(s, "u", 1, 3, 100, rows[0], strlen(rows[0])), AW_OK);
    assert_int_equal(store_append(s, "u", 4, 5, 200, rows[1], strlen(rows[1])), AW_OK);
    assert_int_equal(store_head(s, "u", "e", 5, 0), AW_OK);
    assert_int_equal(store_commit(s), AW_OK);
    assert_int_equal(store_events(s), 5);
    seen_t v = {0};
    assert_int_equal(store_range(r, "u", 2, 3, collect, &v), AW_OK); /* from inside a row */
    assert_int_equal(v.n, 3);
    assert_int_equal(v.seqs[0], 2);
    assert_string_equal(v.texts[0], "{\"n\":2}");
    assert_string_equal(v.texts[2], "{\"n\":4}");
    /* the count cap keeps the newest 2: the row 1..3 goes whole, 4..5 stays */
    assert_int_equal(store_begin(s), AW_OK);
    assert_int_equal(store_append(s, "u", 6, 6, 300, rows[2], strlen(rows[2])), AW_OK);
    assert_int_equal(store_head(s, "u", "e", 6, 2), AW_OK);
    assert_int_equal(store_commit(s), AW_OK);
    assert_int_equal(store_events(s), 3);
    memset(&v, 0, sizeof v);
    assert_int_equal(store_range(r, "u", 0, 0, collect, &v), AW_OK);
    assert_int_equal(v.n, 3);
    assert_int_equal(v.seqs[0], 4);
    assert_int_equal(v.seqs[2], 6);
    /* age: a row goes when its time has passed */
    assert_int_equal(store_trim(s, 250, UINT64_MAX), 2);
    assert_int_equal(store_events(s), 1);
    /* a row whose seqs do not match its lines is refused */
    assert_int_equal(store_append(s, "u", 9, 8, 300, rows[2], strlen(rows[2])), AW_EIO);
    store_close(r);
    store_close(s);
}

static void idem_fn(void *arg, const char *user, const char *key, uint64_t seq, const char *epoch,
                    const char *event_id, int64_t ts)
{
    char *out = arg;
    char one[128];
    snprintf(one, sizeof one, "%s/%s/%llu/%s/%s/%lld;", user, key, (unsigned long long)seq, epoch,
             event_id, (long long)ts);
    strcat(out, one);
}

/* Idempotency keys: kept over a reopen, read back oldest first from a time
 * on, a key written again replaces its receipt, the oldest go by age. */
static void test_idempotency_keys(void **state)
{
    (void)state;
    store_t *s = open_ok();
    assert_int_equal(store_begin(s), AW_OK);
    assert_int_equal(store_idem_put(s, "u", "k1", 1, "e", "ev1", 100), AW_OK);
    assert_int_equal(store_idem_put(s, "u", "k2", 2, "e", "ev2", 200), AW_OK);
    assert_int_equal(store_idem_put(s, "v", "k1", 1, "f", "ev3", 300), AW_OK);
    assert_int_equal(store_commit(s), AW_OK);
    store_close(s);
    s = open_ok();
    char out[512] = "";
    assert_int_equal(store_each_idem(s, 150, idem_fn, out), AW_OK);
    assert_string_equal(out, "u/k2/2/e/ev2/200;v/k1/1/f/ev3/300;");
    assert_int_equal(store_idem_trim(s, 250), 2);
    out[0] = '\0';
    assert_int_equal(store_each_idem(s, 0, idem_fn, out), AW_OK);
    assert_string_equal(out, "v/k1/1/f/ev3/300;");
    store_close(s);
}

static void runs_fn(void *arg, const char *user, const char *run_id, const char *thread_id)
{
    char *out = arg;
    strcat(out, user);
    strcat(out, "/");
    strcat(out, run_id);
    strcat(out, "/");
    strcat(out, thread_id);
    strcat(out, ";");
}

static void test_runs(void **state)
{
    (void)state;
    store_t *s = open_ok();
    assert_int_equal(store_begin(s), AW_OK);
    assert_int_equal(store_run_open(s, "u", "r1", "t1"), AW_OK);
    assert_int_equal(store_run_open(s, "u", "r2", "t2"), AW_OK);
    assert_int_equal(store_run_closed(s, "u", "r1"), AW_OK);
    assert_int_equal(store_commit(s), AW_OK);
    store_close(s);
    s = open_ok();
    char out[128] = "";
    assert_int_equal(store_each_open_run(s, runs_fn, out), AW_OK);
    assert_string_equal(out, "u/r2/t2;");
    store_close(s);
}

static void test_refuses_foreign_and_corrupt_files(void **state)
{
    (void)state;
    char path[128], err[512] = "";
    store_t *s = NULL;
    snprintf(path, sizeof path, "%s/%s", dir, STORE_FILE);
    /* another program's database: refused, and left as it was */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE songs(title TEXT)", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(store_open(&s, dir, STORE_SYNC_BATCH, err, sizeof err), AW_EIO);
    assert_null(s);
    assert_non_null(strstr(err, "not an agentwire store"));
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM sqlite_master", -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 1); /* no table of ours was added */
    sqlite3_finalize(q);
    sqlite3_close(db);
    unlink(path);
    /* an agentwire store of another format */
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
                                  "INSERT INTO meta VALUES('format', 'agentwire-store 1')",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    err[0] = '\0';
    assert_int_equal(store_open(&s, dir, STORE_SYNC_BATCH, err, sizeof err), AW_EIO);
    if (!strstr(err, "another store format (agentwire-store 1"))
        fail_msg("%s", err);
    unlink(path);
    /* garbage */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 512; i++)
        fputs("not a database, ", f);
    fclose(f);
    err[0] = '\0';
    assert_int_equal(store_open(&s, dir, STORE_SYNC_BATCH, err, sizeof err), AW_EIO);
    assert_null(s);
    assert_non_null(strstr(err, STORE_FILE));
    unlink(path);
    /* a directory that does not exist */
    err[0] = '\0';
    assert_int_equal(store_open(&s, "/nonexistent/agentwire", STORE_SYNC_BATCH, err, sizeof err),
                     AW_EIO);
    assert_true(strlen(err) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_survives_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trims, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rows_of_many_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_foreign_and_corrupt_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
