/* test_hub.c -- the hub's streams without sockets: seq numbering, envelope
 * stamping, history retention and resume decisions, and the epoch change
 * when an idle stream is forgotten and made anew. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "frame.h"
#include "hub.h"
#include "ws.h"

static config_t cfg;
static metrics_t metrics;

static int setup(void **state)
{
    hub_t *h = calloc(1, sizeof *h);
    memset(&cfg, 0, sizeof cfg);
    memset(&metrics, 0, sizeof metrics);
    cfg.max_connections_per_user = 2;
    cfg.history_size = 3;
    cfg.history_ttl_ms = 50;
    cfg.history_memory_bytes = 1 << 20;
    assert_int_equal(hub_init(h, &cfg, &metrics), AW_OK);
    *state = h;
    return 0;
}

static int teardown(void **state)
{
    hub_dispose(*state);
    free(*state);
    return 0;
}

/* The event as it went out: the frame retained in the user's history. */
static json_t *sent_event(hub_t *h, const char *user, uint64_t seq)
{
    hub_user_t *u = hub_user_find(h, user);
    assert_non_null(u);
    frame_t *f = history_get(&u->history, seq);
    assert_non_null(f);
    size_t len;
    const uint8_t *p = frame_ws_payload(f, &len);
    json_error_t err;
    json_t *ev = json_loadb((const char *)p, len, JSON_REJECT_DUPLICATES, &err);
    assert_non_null(ev);
    return ev;
}

static uint64_t publish(hub_t *h, const char *user, hub_receipt_t *r)
{
    json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:i}", "type", "note", "user_id", "someone-else",
                           "x", "y", "event_id", "forged", "seq", 999);
    assert_int_equal(hub_publish(h, user, ev, r), AW_OK);
    json_decref(ev);
    /* the envelope is the server's: user_id is the recipient, forged
     * envelope fields are replaced, the publisher's own fields stay */
    json_t *out = sent_event(h, user, r->seq);
    assert_string_equal(json_string_value(json_object_get(out, "user_id")), user);
    assert_int_equal(json_integer_value(json_object_get(out, "seq")), (json_int_t)r->seq);
    assert_string_equal(json_string_value(json_object_get(out, "epoch")), r->epoch);
    assert_string_equal(json_string_value(json_object_get(out, "event_id")), r->event_id);
    assert_true(json_is_integer(json_object_get(out, "timestamp")));
    assert_string_equal(json_string_value(json_object_get(out, "type")), "note");
    assert_string_equal(json_string_value(json_object_get(out, "x")), "y");
    assert_int_equal(json_object_size(out), 7);
    json_decref(out);
    return r->seq;
}

static void test_envelope_escapes_user_id(void **state)
{
    hub_t *h = *state;
    hub_receipt_t r;
    assert_int_equal(publish(h, "we\\ird \"user\" ü", &r), 1);
    /* an event with no field besides the envelope's */
    json_t *ev = json_pack("{s:s}", "type", "ping");
    assert_int_equal(hub_publish(h, "x", ev, &r), AW_OK);
    json_decref(ev);
    json_t *out = sent_event(h, "x", 1);
    assert_int_equal(json_object_size(out), 6);
    json_decref(out);
}

/* A prepared publish (hub_prepare without the lock, then
 * hub_publish_prepared) sends the same event as hub_publish, stamped the
 * same way; an invalid event is refused by the preparation, and an event
 * of nothing but envelope fields becomes the envelope alone. */
static void test_prepared_publish(void **state)
{
    hub_t *h = *state;
    hub_receipt_t r;
    publish(h, "alice", &r); /* seq 1, the plain way */
    json_t *ev = json_pack("{s:s, s:s, s:s, s:i, s:{s:i}}", "type", "note", "user_id", "forged",
                           "x", "y", "seq", 999, "nested", "n", 1);
    aw_buf_t tails = {0};
    aw_buf_append("junk", 4, &tails); /* a tail is appended after what is there */
    char why[200];
    assert_int_equal(hub_prepare(ev, NULL, &tails, why, sizeof why), AW_OK);
    assert_null(json_object_get(ev, "user_id")); /* envelope fields dropped */
    assert_int_equal(hub_publish_prepared(h, "alice", ev, tails.data + 4, tails.len - 4, false, &r),
                     AW_OK);
    assert_int_equal(r.seq, 2);
    json_t *out = sent_event(h, "alice", 2);
    assert_string_equal(json_string_value(json_object_get(out, "user_id")), "alice");
    assert_int_equal(json_integer_value(json_object_get(out, "seq")), 2);
    assert_string_equal(json_string_value(json_object_get(out, "event_id")), r.event_id);
    assert_string_equal(json_string_value(json_object_get(out, "x")), "y");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(out, "nested"), "n")), 1);
    assert_int_equal(json_object_size(out), 8);
    json_decref(out);
    json_decref(ev);

    json_t *bad = json_pack("{s:s}", "type", "Not-A-Type");
    size_t before = tails.len;
    assert_int_equal(hub_prepare(bad, NULL, &tails, why, sizeof why), AW_EINVAL);
    assert_non_null(strstr(why, "type"));
    assert_int_equal(tails.len, before); /* nothing appended */
    json_decref(bad);

    json_t *bare = json_pack("{s:s}", "type", "ping");
    tails.len = 0;
    assert_int_equal(hub_prepare(bare, NULL, &tails, why, sizeof why), AW_OK);
    json_object_del(bare, "type");
    assert_int_equal(hub_publish_prepared(h, "alice", bare, tails.data, tails.len, false, &r),
                     AW_OK);
    out = sent_event(h, "alice", 3);
    assert_string_equal(json_string_value(json_object_get(out, "type")), "ping");
    assert_int_equal(json_object_size(out), 6);
    json_decref(out);
    json_decref(bare);
    aw_buf_free(&tails);
}

static void test_seq_per_user(void **state)
{
    hub_t *h = *state;
    hub_receipt_t r;
    assert_int_equal(publish(h, "a", &r), 1);
    assert_int_equal(publish(h, "a", &r), 2);
    assert_int_equal(publish(h, "b", &r), 1);
    assert_int_equal(publish(h, "a", &r), 3);
    assert_int_equal(r.recipients, 0);
    assert_int_equal(hub_published(h), 4);
    hub_receipt_t r2;
    publish(h, "a", &r2);
    assert_string_not_equal(r.event_id, r2.event_id);
    assert_string_equal(r.epoch, r2.epoch);
}

static void test_resume_decisions(void **state)
{
    hub_t *h = *state;
    hub_receipt_t r;
    for (int i = 0; i < 5; i++)
        publish(h, "u", &r); /* history keeps 3..5 */
    hub_user_t *u = hub_user_find(h, "u");
    assert_non_null(u);
    assert_true(hub_can_resume(h, u, 5, u->epoch));  /* nothing missed */
    assert_true(hub_can_resume(h, u, 2, u->epoch));  /* 3..5 retained */
    assert_false(hub_can_resume(h, u, 1, u->epoch)); /* 2 was evicted */
    assert_false(hub_can_resume(h, u, 6, u->epoch)); /* ahead of the stream */
    assert_false(hub_can_resume(h, u, 4, "other"));
    assert_false(hub_can_resume(h, u, 4, NULL));
}

/* Older storage (--data-dir): events memory no longer holds, 1..2. */
static uint64_t older_first(void *ctx, hub_user_t *u)
{
    (void)ctx, (void)u;
    return 1;
}

static frame_t *older(void *ctx, hub_user_t *u, uint64_t seq)
{
    (void)ctx, (void)u;
    return seq <= 2 ? frame_ws(WS_OP_TEXT, "{\"older\":true}", 14) : NULL;
}

static void test_resume_from_older_storage(void **state)
{
    hub_t *h = *state;
    hub_receipt_t r;
    for (int i = 0; i < 5; i++)
        publish(h, "u", &r); /* memory keeps 3..5 */
    hub_user_t *u = hub_user_find(h, "u");
    assert_false(hub_can_resume(h, u, 0, u->epoch));
    assert_int_equal(hub_first_seq(h, u), 3);
    h->older_first = older_first;
    h->older = older;
    assert_true(hub_can_resume(h, u, 0, u->epoch)); /* 1..2 from older storage */
    assert_int_equal(hub_first_seq(h, u), 1);
    bool owned;
    frame_t *f = hub_history_get(h, u, 2, &owned);
    assert_non_null(f);
    assert_true(owned);
    size_t len;
    assert_memory_equal(frame_ws_payload(f, &len), "{\"older\":true}", 14);
    frame_unref(f);
    f = hub_history_get(h, u, 4, &owned);
    assert_non_null(f);
    assert_false(owned); /* memory's own */
    assert_false(hub_can_resume(h, u, 0, "other"));
    h->older_first = NULL;
    h->older = NULL;
}

static void test_epoch_changes_when_stream_forgotten(void **state)
{
    hub_t *h = *state;
    hub_receipt_t r;
    publish(h, "gone", &r);
    char old_epoch[HUB_EPOCH_LEN + 1];
    strcpy(old_epoch, r.epoch);
    int64_t now = aw_now_ms();
    hub_sweep(h, now); /* history still fresh: stream kept */
    assert_non_null(hub_user_find(h, "gone"));
    hub_sweep(h, now + 60); /* history expired, no connection, idle past ttl */
    assert_null(hub_user_find(h, "gone"));
    assert_int_equal(publish(h, "gone", &r), 1);
    assert_string_not_equal(r.epoch, old_epoch);
    hub_user_t *u = hub_user_find(h, "gone");
    assert_false(hub_can_resume(h, u, 1, old_epoch));
}

/* The history cap counts the streams' records too: past it idle streams
 * (no connection, no event) go first, then the oldest events; what is held
 * never passes the cap, and the newest users keep their events. */
static void test_streams_under_cap(void **state)
{
    hub_t *h = *state;
    h->history.max_bytes = 65536;
    char user[32];
    hub_receipt_t r;
    for (int i = 0; i < 2000; i++) {
        snprintf(user, sizeof user, "user-%d", i);
        json_t *ev = json_pack("{s:s}", "type", "note");
        assert_int_equal(hub_publish(h, user, ev, &r), AW_OK);
        json_decref(ev);
        assert_true(h->history.bytes + h->history.extra <= h->history.max_bytes);
    }
    assert_true(hub_nstreams(h) < 2000);
    assert_true(h->streams_dropped > 0);
    assert_null(hub_user_find(h, "user-0"));
    hub_user_t *last = hub_user_find(h, "user-1999");
    assert_non_null(last);
    assert_int_equal(history_first_seq(&last->history), 1);
    /* what is held adds up: every stream is under the cap's count */
    size_t records = 0;
    for (int i = 0; i < 2000; i++) {
        snprintf(user, sizeof user, "user-%d", i);
        hub_user_t *u = hub_user_find(h, user);
        if (u)
            records += u->_cost;
    }
    assert_int_equal(records, h->history.extra);
    /* a forgotten user starts a new stream */
    json_t *ev = json_pack("{s:s}", "type", "note");
    assert_int_equal(hub_publish(h, "user-0", ev, &r), AW_OK);
    json_decref(ev);
    assert_int_equal(r.seq, 1);
}

static void test_admit_limits(void **state)
{
    hub_t *h = *state;
    assert_int_equal(hub_admit(h, "new-user"), AW_OK);
    assert_int_equal(hub_disconnect_user(h, "nobody", 4002, "x"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_seq_per_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_envelope_escapes_user_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepared_publish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_decisions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resume_from_older_storage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_epoch_changes_when_stream_forgotten, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admit_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streams_under_cap, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
