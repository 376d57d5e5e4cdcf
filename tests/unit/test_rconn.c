/* test_rconn.c -- the --redis URL parser: accepted forms, defaults, and
 * clear refusals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aw.h"
#include "rconn.h"

static void check(const char *url, const char *host, int port, const char *password)
{
    char h[256], err[160];
    int p = 0;
    char *pw = (char *)"unset";
    assert_int_equal(rconn_parse_url(url, h, sizeof h, &p, &pw, err, sizeof err), AW_OK);
    assert_string_equal(h, host);
    assert_int_equal(p, port);
    if (password)
        assert_string_equal(pw, password);
    else
        assert_null(pw);
    free(pw);
}

static void refused(const char *url)
{
    char h[256], err[160] = "";
    int p;
    char *pw = NULL;
    assert_int_equal(rconn_parse_url(url, h, sizeof h, &p, &pw, err, sizeof err), AW_EINVAL);
    assert_null(pw);
    assert_non_null(strstr(err, "--redis"));
}

static void test_forms(void **state)
{
    (void)state;
    check("redis://127.0.0.1:6380", "127.0.0.1", 6380, NULL);
    check("127.0.0.1:7000", "127.0.0.1", 7000, NULL);
    check("redis://cache.internal", "cache.internal", 6379, NULL);
    check("redis://:s3cret@10.0.0.5:6379", "10.0.0.5", 6379, "s3cret");
    check("redis://user:pw@h:1/0", "h", 1, "pw");
}

static void test_refusals(void **state)
{
    (void)state;
    refused("rediss://127.0.0.1:6380");
    refused("http://x:1");
    refused("redis://:6379");
    refused("redis://h:0");
    refused("redis://h:70000");
    refused("redis://h:12x");
    refused("redis://:pw@h:abc");
    refused("redis://h:6379/2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
