/* test_event.c -- event validation (PROTOCOL section 2): type names and the
 * required fields of the five agent events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "aw.h"
#include "event.h"

static int check(const char *json)
{
    json_error_t e;
    json_t *ev = json_loads(json, 0, &e);
    assert_non_null(ev);
    char msg[160];
    int rc = event_validate(ev, msg, sizeof msg);
    json_decref(ev);
    return rc;
}

static void test_type_names(void **state)
{
    (void)state;
    assert_true(event_type_valid("a"));
    assert_true(event_type_valid("tool_completed"));
    assert_true(event_type_valid("x9_"));
    char max[65];
    memset(max, 'a', 64);
    max[64] = '\0';
    assert_true(event_type_valid(max));
    char over[66];
    memset(over, 'a', 65);
    over[65] = '\0';
    assert_false(event_type_valid(over));
    assert_false(event_type_valid(""));
    assert_false(event_type_valid(NULL));
    assert_false(event_type_valid("9a"));
    assert_false(event_type_valid("_a"));
    assert_false(event_type_valid("Agent"));
    assert_false(event_type_valid("a-b"));
    assert_false(event_type_valid("a b"));
}

static void test_ids(void **state)
{
    (void)state;
    assert_true(event_id_valid("u1"));
    assert_false(event_id_valid(""));
    assert_false(event_id_valid(NULL));
    assert_false(event_id_valid("a\nb"));
    char big[300];
    memset(big, 'u', 256);
    big[256] = '\0';
    assert_false(event_id_valid(big));
    big[255] = '\0';
    assert_true(event_id_valid(big));
}

static void test_agent_events_valid(void **state)
{
    (void)state;
    assert_int_equal(check("{\"type\":\"agent_started\",\"thread_id\":\"t\",\"run_id\":\"r\","
                           "\"agent_name\":\"demo\"}"),
                     AW_OK);
    assert_int_equal(check("{\"type\":\"agent_thinking\",\"thread_id\":\"t\",\"run_id\":\"r\","
                           "\"reasoning\":\"\"}"),
                     AW_OK);
    assert_int_equal(check("{\"type\":\"tool_executing\",\"thread_id\":\"t\",\"run_id\":\"r\","
                           "\"tool_name\":\"calc\",\"parameters\":{}}"),
                     AW_OK);
    assert_int_equal(check("{\"type\":\"tool_completed\",\"thread_id\":\"t\",\"run_id\":\"r\","
                           "\"tool_name\":\"calc\",\"results\":null,\"duration\":1.5}"),
                     AW_OK);
    assert_int_equal(check("{\"type\":\"agent_completed\",\"thread_id\":\"t\",\"run_id\":\"r\","
                           "\"status\":\"timeout\",\"final_response\":\"\"}"),
                     AW_OK);
}

static void test_agent_events_invalid(void **state)
{
    (void)state;
    /* each required field missing or of the wrong kind */
    assert_int_equal(check("{\"type\":\"agent_started\",\"thread_id\":\"t\",\"run_id\":\"r\"}"),
                     AW_EINVAL);
    assert_int_equal(check("{\"type\":\"agent_started\",\"run_id\":\"r\",\"agent_name\":\"a\"}"),
                     AW_EINVAL);
    assert_int_equal(check("{\"type\":\"agent_started\",\"thread_id\":\"\",\"run_id\":\"r\","
                           "\"agent_name\":\"a\"}"),
                     AW_EINVAL);
    assert_int_equal(check("{\"type\":\"agent_thinking\",\"thread_id\":\"t\",\"run_id\":\"r\","
                           "\"reasoning\":5}"),
                     AW_EINVAL);
    assert_int_equal(check("{\"type\":\"tool_executing\",\"thread_id\":\"t\",\"run_id\":\"r\","
                           "\"tool_name\":\"calc\",\"parameters\":[]}"),
                     AW_EINVAL);
    assert_int_equal(check("{\"type\":\"tool_completed\",\"thread_id\":\"t\",\"run_id\":\"r\","
                           "\"tool_name\":\"calc\",\"results\":1,\"duration\":\"5\"}"),
                     AW_EINVAL);
    assert_int_equal(check("{\"type\":\"tool_completed\",\"thread_id\":\"t\",\"run_id\":\"r\","
                           "\"tool_name\":\"calc\",\"duration\":5}"),
                     AW_EINVAL);
    assert_int_equal(check("{\"type\":\"agent_completed\",\"thread_id\":\"t\",\"run_id\":\"r\","
                           "\"status\":\"done\",\"final_response\":\"\"}"),
                     AW_EINVAL);
    assert_int_equal(check("{\"type\":\"agent_completed\",\"thread_id\":\"t\",\"run_id\":\"r\","
                           "\"status\":\"success\"}"),
                     AW_EINVAL);
}

static void test_other_events(void **state)
{
    (void)state;
    assert_int_equal(check("{\"type\":\"progress_update\",\"anything\":[1,2]}"), AW_OK);
    assert_int_equal(check("{\"type\":\"partial_result\",\"run_id\":\"r\"}"), AW_OK);
    assert_int_equal(check("{\"type\":\"partial_result\",\"run_id\":7}"), AW_EINVAL);
    assert_int_equal(check("{\"type\":\"Bad\"}"), AW_EINVAL);
    assert_int_equal(check("{\"no_type\":1}"), AW_EINVAL);
    assert_int_equal(check("[1]"), AW_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_names),         cmocka_unit_test(test_ids),
        cmocka_unit_test(test_agent_events_valid), cmocka_unit_test(test_agent_events_invalid),
        cmocka_unit_test(test_other_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
