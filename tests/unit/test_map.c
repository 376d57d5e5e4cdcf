/* test_map.c -- the seeded hash map: insert, replace, remove, growth,
 * removal during iteration, and SipHash-2-4 against its reference vector. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "aw.h"
#include "map.h"

static void test_siphash_vector(void **state)
{
    (void)state;
    /* Reference: key 00..0f, message 00..0e (15 bytes) -> 0xa129ca6149be45e5 */
    uint8_t key[16], msg[15];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 15; i++)
        msg[i] = (uint8_t)i;
    uint64_t k0 = 0, k1 = 0;
    for (int i = 7; i >= 0; i--) {
        k0 = (k0 << 8) | key[i];
        k1 = (k1 << 8) | key[8 + i];
    }
    assert_true(map_siphash(k0, k1, msg, 15) == 0xa129ca6149be45e5ULL);
    assert_true(map_siphash(k0, k1, msg, 0) == 0x726fdb47dd0e0e31ULL);
}

static void test_put_get_remove(void **state)
{
    (void)state;
    map_t m;
    assert_int_equal(map_init(&m), AW_OK);
    int a = 1, b = 2;
    assert_non_null(map_put(&m, "alice", 5, &a));
    assert_ptr_equal(map_get(&m, "alice", 5), &a);
    assert_null(map_get(&m, "alic", 4));
    assert_non_null(map_put(&m, "alice", 5, &b));
    assert_ptr_equal(map_get(&m, "alice", 5), &b);
    assert_int_equal(m.count, 1);
    assert_ptr_equal(map_remove(&m, "alice", 5), &b);
    assert_null(map_remove(&m, "alice", 5));
    assert_int_equal(m.count, 0);
    map_dispose(&m, NULL);
}

static bool is_odd(const void *value, void *arg)
{
    (void)arg;
    return (intptr_t)value % 2 != 0;
}

static void test_growth_and_iteration(void **state)
{
    (void)state;
    map_t m;
    assert_int_equal(map_init(&m), AW_OK);
    char k[32];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(k, sizeof k, "user-%d", i);
        assert_non_null(map_put(&m, k, (size_t)n, (void *)(intptr_t)i));
    }
    assert_int_equal(m.count, 5000);
    for (int i = 0; i < 5000; i += 97) {
        int n = snprintf(k, sizeof k, "user-%d", i);
        assert_int_equal((int)(intptr_t)map_get(&m, k, (size_t)n), i);
    }
    assert_int_equal(map_remove_if(&m, is_odd, NULL, NULL), 2500);
    assert_int_equal(m.count, 2500);
    assert_null(map_get(&m, "user-7", 6));
    assert_non_null(map_find(&m, "user-8", 6));
    map_dispose(&m, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_siphash_vector),
        cmocka_unit_test(test_put_get_remove),
        cmocka_unit_test(test_growth_and_iteration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
