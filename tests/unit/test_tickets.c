/* test_tickets.c -- the ticket store's caps and the idempotency cache's
 * eviction: the two stores a user or a publisher can fill. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "aw.h"
#include "idem.h"
#include "tickets.h"

/* Per user and in total; a taken or expired ticket gives its place back;
 * peeking does not consume. */
static void test_ticket_caps(void **state)
{
    (void)state;
    tickets_t t;
    char id[TICKET_LEN + 1], first[TICKET_LEN + 1], user[JWT_MAX_SUB + 1];
    int64_t exp;
    assert_int_equal(tickets_init(&t, 3, 5), AW_OK);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tickets_issue(&t, "alice", 1000, 5000, i ? id : first), AW_OK);
    assert_int_equal(tickets_issue(&t, "alice", 1000, 5000, id), AW_ELIMIT);
    assert_int_equal(tickets_issue(&t, "bob", 1000, 5000, id), AW_OK);
    assert_int_equal(tickets_issue(&t, "carol", 2000, 5000, id), AW_OK);
    assert_int_equal(tickets_issue(&t, "dave", 1000, 5000, id), AW_ELIMIT); /* 5 in all */

    assert_int_equal(tickets_peek(&t, first, 10, user, &exp), AW_OK);
    assert_string_equal(user, "alice");
    assert_int_equal(tickets_peek(&t, first, 10, user, &exp), AW_OK); /* still there */
    assert_int_equal(tickets_take(&t, first, 10, user, &exp), AW_OK);
    assert_int_equal(tickets_take(&t, first, 10, user, &exp), AW_ENOTFOUND);
    assert_int_equal(tickets_issue(&t, "alice", 1000, 5000, id), AW_OK); /* its place is back */

    tickets_sweep(&t, 1500); /* alice's three and bob's expire; carol's stays */
    assert_int_equal(t._map.count, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(tickets_issue(&t, "alice", 3000, 5000, id), AW_OK);
    assert_int_equal(tickets_issue(&t, "alice", 3000, 5000, id), AW_ELIMIT);
    assert_int_equal(tickets_peek(&t, id, 3000, user, &exp), AW_ENOTFOUND); /* expired */
    tickets_dispose(&t);
}

static hub_receipt_t receipt(uint64_t seq)
{
    hub_receipt_t r;
    memset(&r, 0, sizeof r);
    r.seq = seq;
    snprintf(r.epoch, sizeof r.epoch, "e");
    snprintf(r.event_id, sizeof r.event_id, "ev_%llu", (unsigned long long)seq);
    return r;
}

/* At the cap the oldest key goes; a fresh key is always remembered; a key
 * put again moves to the young end; the sweep takes expired ones. */
static void test_idem_eviction(void **state)
{
    (void)state;
    idem_t c;
    hub_receipt_t r, got;
    char key[16];
    assert_int_equal(idem_init(&c, 1000, 4), AW_OK);
    for (uint64_t i = 1; i <= 4; i++) {
        snprintf(key, sizeof key, "k%llu", (unsigned long long)i);
        r = receipt(i);
        assert_int_equal(idem_put(&c, "u", key, &r, (int64_t)i), AW_OK);
    }
    r = receipt(1);
    assert_int_equal(idem_put(&c, "u", "k1", &r, 10), AW_OK); /* k1 is young again */
    r = receipt(5);
    assert_int_equal(idem_put(&c, "u", "k5", &r, 11), AW_OK); /* k2 goes */
    assert_int_equal(c._map.count, 4);
    assert_int_equal(c.evicted, 1);
    assert_false(idem_get(&c, "u", "k2", 12, &got));
    assert_true(idem_get(&c, "u", "k5", 12, &got));
    assert_int_equal(got.seq, 5);
    assert_string_equal(got.event_id, "ev_5");
    assert_true(idem_get(&c, "u", "k1", 12, &got));
    assert_false(idem_get(&c, "v", "k1", 12, &got)); /* keys are per user */
    idem_sweep(&c, 1005);                            /* k3, k4 (put at 3, 4) expired */
    assert_int_equal(c._map.count, 2);
    assert_false(idem_get(&c, "u", "k3", 1005, &got));
    assert_true(idem_get(&c, "u", "k1", 1005, &got));
    idem_sweep(&c, 5000);
    assert_int_equal(c._map.count, 0);
    idem_dispose(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ticket_caps),
        cmocka_unit_test(test_idem_eviction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
