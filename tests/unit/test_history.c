/* test_history.c -- the per-user history ring over a shared pool: order,
 * wrap-around, per-user cap, ttl, the global memory cap (oldest first, across
 * users), holes, clearing, and frame references. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "history.h"

/* A frame whose payload names its seq, so tests can check identity. */
static frame_t *make(uint64_t seq, size_t pad)
{
    char buf[4096];
    memset(buf, 'x', sizeof buf);
    int n = snprintf(buf, sizeof buf, "%llu", (unsigned long long)seq);
    buf[n] = 'x';
    return frame_raw(buf, (size_t)n + pad);
}

static uint64_t seq_of(const frame_t *f)
{
    char tmp[24] = {0};
    for (size_t i = 0; i < f->len && i < 20 && f->data[i] != 'x'; i++)
        tmp[i] = (char)f->data[i];
    return strtoull(tmp, NULL, 10);
}

static void append(history_pool_t *p, history_t *h, uint64_t seq, size_t pad, int64_t now)
{
    frame_t *f = make(seq, pad);
    assert_int_equal(history_append(p, h, seq, f, now), AW_OK);
    frame_unref(f); /* the history holds its own reference */
}

static void test_order_and_wrap(void **state)
{
    (void)state;
    history_pool_t p;
    history_pool_init(&p, 5, 60000, 1 << 20);
    history_t h = {0};
    assert_int_equal(history_first_seq(&h), 0);
    assert_null(history_get(&h, 1));
    for (uint64_t s = 1; s <= 23; s++)
        append(&p, &h, s, 10, 0);
    /* only the last five stay, in order, across many wrap-arounds */
    assert_int_equal(history_first_seq(&h), 19);
    assert_int_equal(history_last_seq(&h), 23);
    assert_int_equal(p.entries, 5);
    for (uint64_t s = 19; s <= 23; s++)
        assert_int_equal(seq_of(history_get(&h, s)), s);
    assert_null(history_get(&h, 18));
    assert_null(history_get(&h, 24));
    assert_int_equal(p.evicted, 18);
    history_clear(&p, &h);
    assert_int_equal(p.entries, 0);
    assert_int_equal(p.bytes, 0);
    assert_int_equal(history_first_seq(&h), 0);
}

static void test_ttl(void **state)
{
    (void)state;
    history_pool_t p;
    history_pool_init(&p, 100, 1000, 1 << 20);
    history_t a = {0}, b = {0};
    append(&p, &a, 1, 10, 0);
    append(&p, &b, 1, 10, 400);
    append(&p, &a, 2, 10, 800);
    history_expire(&p, 999);
    assert_int_equal(p.entries, 3);
    history_expire(&p, 1000); /* a:1 is 1000 ms old */
    assert_int_equal(history_first_seq(&a), 2);
    assert_int_equal(history_first_seq(&b), 1);
    history_expire(&p, 1799);
    assert_int_equal(history_first_seq(&b), 0);
    assert_int_equal(history_first_seq(&a), 2);
    history_expire(&p, 5000);
    assert_int_equal(p.entries, 0);
    assert_int_equal(p.bytes, 0);
}

static void test_memory_cap_oldest_first_across_users(void **state)
{
    (void)state;
    history_pool_t p;
    history_pool_init(&p, 1000, 60000, 4096);
    history_t a = {0}, b = {0};
    /* interleave two users; each event costs a bit more than 1000 bytes */
    for (uint64_t s = 1; s <= 10; s++) {
        append(&p, &a, s, 1000, (int64_t)s);
        append(&p, &b, s, 1000, (int64_t)s);
        assert_true(p.bytes <= 4096);
    }
    /* three events fit: the newest three overall (a:10 is older than b:10) */
    assert_int_equal(p.entries, 3);
    assert_int_equal(history_first_seq(&b), 9);
    assert_int_equal(history_last_seq(&b), 10);
    assert_int_equal(history_first_seq(&a), 10);
    /* what remains stays contiguous per user */
    assert_non_null(history_get(&b, 9));
    assert_non_null(history_get(&b, 10));
    history_pool_dispose(&p);
    assert_int_equal(p.entries, 0);
    assert_int_equal(history_first_seq(&a), 0);
}

static void test_event_larger_than_cap(void **state)
{
    (void)state;
    history_pool_t p;
    history_pool_init(&p, 10, 60000, 512);
    history_t h = {0};
    append(&p, &h, 1, 2000, 0);
    assert_int_equal(p.entries, 0); /* not retained, never over the cap */
    append(&p, &h, 2, 10, 0);
    assert_int_equal(history_first_seq(&h), 2);
    history_pool_dispose(&p);
}

static void test_hole_restarts_run(void **state)
{
    (void)state;
    history_pool_t p;
    history_pool_init(&p, 10, 60000, 1 << 20);
    history_t h = {0};
    append(&p, &h, 1, 10, 0);
    append(&p, &h, 2, 10, 0);
    append(&p, &h, 7, 10, 0); /* a new epoch restarting, or a lost append */
    assert_int_equal(history_first_seq(&h), 7);
    assert_int_equal(history_last_seq(&h), 7);
    assert_int_equal(p.entries, 1);
    history_pool_dispose(&p);
}

static void test_frame_references(void **state)
{
    (void)state;
    history_pool_t p;
    history_pool_init(&p, 2, 60000, 1 << 20);
    history_t h = {0};
    frame_t *f = make(1, 10);
    assert_int_equal(history_append(&p, &h, 1, f, 0), AW_OK);
    assert_int_equal(f->refs, 2);
    append(&p, &h, 2, 10, 0);
    append(&p, &h, 3, 10, 0); /* evicts seq 1 */
    assert_int_equal(f->refs, 1);
    frame_unref(f);
    history_pool_dispose(&p);
}

static void test_growth_up_to_limit(void **state)
{
    (void)state;
    history_pool_t p;
    history_pool_init(&p, 1000, 60000, (size_t)1 << 30);
    history_t h = {0};
    for (uint64_t s = 1; s <= 2500; s++)
        append(&p, &h, s, 0, 0);
    assert_int_equal(history_first_seq(&h), 1501);
    for (uint64_t s = 1501; s <= 2500; s += 37)
        assert_int_equal(seq_of(history_get(&h, s)), s);
    history_pool_dispose(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_wrap),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_memory_cap_oldest_first_across_users),
        cmocka_unit_test(test_event_larger_than_cap),
        cmocka_unit_test(test_hole_restarts_run),
        cmocka_unit_test(test_frame_references),
        cmocka_unit_test(test_growth_up_to_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
