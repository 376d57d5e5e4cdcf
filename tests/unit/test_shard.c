/* test_shard.c -- FNV-1a 64 and jump consistent hash: known values, range,
 * stability and the share of keys that move when a shard is added. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "shard.h"

static void test_fnv_known_values(void **state)
{
    (void)state;
    /* reference values of FNV-1a 64 */
    assert_true(shard_fnv1a64("", 0) == 0xcbf29ce484222325ULL);
    assert_true(shard_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cULL);
    assert_true(shard_fnv1a64("foobar", 6) == 0x85944171f73967e8ULL);
}

static void test_jump_range_and_one_bucket(void **state)
{
    (void)state;
    for (uint64_t k = 0; k < 10000; k++) {
        assert_int_equal(shard_jump(k * 0x9e3779b97f4a7c15ULL, 1), 0);
        int32_t b = shard_jump(k * 0x9e3779b97f4a7c15ULL, 7);
        assert_true(b >= 0 && b < 7);
    }
    assert_int_equal(shard_of("anyone", 1), 0);
}

static void test_jump_moves_few_keys(void **state)
{
    (void)state;
    /* from 4 to 5 shards about 1/5 of users move, and only to the new one */
    int moved = 0, n = 20000, counts[5] = {0};
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "user-%d", i);
        int a = shard_of(id, 4), b = shard_of(id, 5);
        counts[b]++;
        if (a != b) {
            moved++;
            assert_int_equal(b, 4);
        }
        assert_int_equal(shard_of(id, 4), a); /* stable */
    }
    assert_true(moved > n / 5 - n / 50 && moved < n / 5 + n / 50);
    for (int s = 0; s < 5; s++)
        assert_true(counts[s] > n / 5 - n / 25 && counts[s] < n / 5 + n / 25);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fnv_known_values),
        cmocka_unit_test(test_jump_range_and_one_bucket),
        cmocka_unit_test(test_jump_moves_few_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
