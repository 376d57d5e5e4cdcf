/* test_agent_lines.c -- the agent line splitter: lines at every byte
 * boundary and in random splits, CRLF, empty lines, the last line without a
 * newline, and lines over the limit skipped exactly up to their newline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_lines.h"
#include "aw.h"

/* What the callbacks saw, as text: each line as "[line]", each dropped line
 * as "!". */
typedef struct seen {
    char text[8192];
    size_t len;
    int lines, too_long;
    size_t last_seen;
} seen_t;

static void put(seen_t *s, const char *p, size_t n)
{
    assert_true(s->len + n < sizeof s->text);
    memcpy(s->text + s->len, p, n);
    s->len += n;
    s->text[s->len] = '\0';
}

static void on_line(void *user, const char *line, size_t len)
{
    seen_t *s = user;
    put(s, "[", 1);
    put(s, line, len);
    put(s, "]", 1);
    s->lines++;
}

static void on_too_long(void *user, size_t seen)
{
    seen_t *s = user;
    put(s, "!", 1);
    s->too_long++;
    s->last_seen = seen;
}

/* Splits data at the given cut points (ascending) and finishes the stream. */
static void run_cuts(size_t max, const char *data, size_t len, const size_t *cuts, size_t ncuts,
                     seen_t *s)
{
    agent_lines_t l;
    size_t from = 0;

    memset(s, 0, sizeof *s);
    agent_lines_init(&l, max, on_line, on_too_long, s);
    for (size_t i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        assert_int_equal(agent_lines_feed(&l, data + from, to - from), 0);
        assert_true(l._len <= max + 1);
        from = to;
    }
    agent_lines_finish(&l);
    agent_lines_dispose(&l);
}

static void run_whole(size_t max, const char *data, seen_t *s)
{
    run_cuts(max, data, strlen(data), NULL, 0, s);
}

static void expect(size_t max, const char *data, const char *want)
{
    seen_t s;
    run_whole(max, data, &s);
    assert_string_equal(s.text, want);
}

static void test_simple_lines(void **state)
{
    (void)state;
    expect(100, "a\nb\n", "[a][b]");
    expect(100, "one line\n", "[one line]");
    expect(100, "", "");
    expect(100, "{\"type\":\"x\"}\n{\"type\":\"y\"}\n", "[{\"type\":\"x\"}][{\"type\":\"y\"}]");
}

static void test_crlf(void **state)
{
    (void)state;
    expect(100, "a\r\nb\r\n", "[a][b]");
    expect(100, "a\rb\n", "[a\rb]");           /* a lone CR is data */
    expect(100, "a\r\r\n", "[a\r]");           /* only the CR before LF goes */
    expect(100, "a\r\nb\nc\r\n", "[a][b][c]"); /* mixed endings */
}

static void test_empty_lines(void **state)
{
    (void)state;
    expect(100, "\n", "[]");
    expect(100, "\n\n", "[][]");
    expect(100, "\r\n", "[]");
    expect(100, "a\n\nb\n", "[a][][b]");
}

static void test_final_line_at_eof(void **state)
{
    (void)state;
    expect(100, "a\nb", "[a][b]");
    expect(100, "a", "[a]");
    expect(100, "a\n", "[a]"); /* nothing after the last newline: no line */
    expect(100, "a\r", "[a]");
    expect(100, "a\nb\r", "[a][b]");
}

static void test_long_lines_skipped_exactly(void **state)
{
    seen_t s;
    (void)state;
    expect(5, "12345\n", "[12345]");
    expect(5, "123456\n", "!");
    expect(5, "12345\r\n", "[12345]"); /* the CRLF does not count */
    expect(5, "123456\r\n", "!");
    expect(5, "1234\r\r\n", "[1234\r]");
    expect(5, "123456\nnext\n", "![next]");
    expect(5, "a\n1234567890123\nb\n", "[a]![b]");
    expect(5, "1234567890123", "!");   /* too long and unterminated */
    expect(5, "1234567890123\n", "!"); /* one report per line */
    expect(5, "123456\n123456\n12\n", "!![12]");
    run_whole(5, "x\n1234567\n", &s);
    assert_int_equal(s.too_long, 1);
    assert_true(s.last_seen > 5);
}

static void test_long_line_byte_by_byte(void **state)
{
    const char *in = "ok\n0123456789abcdef\r\nafter\n";
    size_t len = strlen(in);
    size_t cuts[64];
    seen_t s;
    (void)state;
    for (size_t i = 1; i < len; i++)
        cuts[i - 1] = i;
    run_cuts(5, in, len, cuts, len - 1, &s);
    assert_string_equal(s.text, "[ok]![after]");
    assert_int_equal(s.too_long, 1);
}

/* Every two- and three-way split of a stream gives what one feed gives. */
static void test_every_boundary(void **state)
{
    const char *in = "a\r\n\nbc\n0123456789\r\nxyz\rq\n12345\r\n\r\nend";
    const char *want = "[a][][bc]![xyz\rq][12345][][end]";
    size_t len = strlen(in);
    seen_t s;
    (void)state;
    run_whole(5, in, &s);
    assert_string_equal(s.text, want);
    for (size_t i = 0; i <= len; i++) {
        for (size_t j = i; j <= len; j++) {
            size_t cuts[2] = {i, j};
            run_cuts(5, in, len, cuts, 2, &s);
            assert_string_equal(s.text, want);
        }
    }
}

static void test_random_splits(void **state)
{
    char in[4096];
    size_t len = 0;
    seen_t whole, s;
    (void)state;
    srand(42);
    while (len < sizeof in - 1) {
        int r = rand() % 10;
        in[len++] = r == 0 ? '\n' : r == 1 ? '\r' : (char)('a' + r);
    }
    in[len] = '\0';
    run_whole(40, in, &whole);
    assert_true(whole.lines > 10);
    for (int round = 0; round < 200; round++) {
        size_t cuts[32], n = (size_t)(rand() % 32);
        for (size_t i = 0; i < n; i++)
            cuts[i] = (size_t)rand() % (len + 1);
        for (size_t i = 1; i < n; i++) /* insertion sort: cuts ascend */
            for (size_t k = i; k > 0 && cuts[k - 1] > cuts[k]; k--) {
                size_t t = cuts[k];
                cuts[k] = cuts[k - 1];
                cuts[k - 1] = t;
            }
        run_cuts(40, in, len, cuts, n, &s);
        assert_string_equal(s.text, whole.text);
    }
}

/* A partial line never holds more than max + 1 bytes, and a partial line
 * at the limit waiting for its "\n" is still a good line. */
static void test_buffer_bounded(void **state)
{
    seen_t s = {0};
    agent_lines_t l;
    (void)state;
    agent_lines_init(&l, 5, on_line, on_too_long, &s);
    assert_int_equal(agent_lines_feed(&l, "12345\r", 6), 0);
    assert_int_equal(l._len, 6);
    assert_true(l._cap <= 6);
    assert_int_equal(agent_lines_feed(&l, "\n", 1), 0);
    assert_string_equal(s.text, "[12345]");
    for (int i = 0; i < 1000; i++)
        assert_int_equal(agent_lines_feed(&l, "xxxxxxxxxx", 10), 0);
    assert_true(l._cap <= 6);
    assert_int_equal(agent_lines_feed(&l, "\nz", 2), 0);
    agent_lines_finish(&l);
    assert_string_equal(s.text, "[12345]![z]");
    agent_lines_dispose(&l);
}

/* After finish the splitter takes a new stream; a skipped line does not
 * leak into it. */
static void test_reuse_after_finish(void **state)
{
    seen_t s = {0};
    agent_lines_t l;
    (void)state;
    agent_lines_init(&l, 3, on_line, NULL, &s); /* on_too_long is optional */
    assert_int_equal(agent_lines_feed(&l, "abcdefg", 7), 0);
    agent_lines_finish(&l);
    assert_int_equal(agent_lines_feed(&l, "ab", 2), 0);
    agent_lines_finish(&l);
    assert_int_equal(agent_lines_feed(&l, "c\n", 2), 0);
    agent_lines_finish(&l);
    assert_string_equal(s.text, "[ab][c]");
    agent_lines_dispose(&l);
}

static void test_default_max(void **state)
{
    seen_t s = {0};
    agent_lines_t l;
    (void)state;
    agent_lines_init(&l, 0, on_line, on_too_long, &s);
    assert_int_equal(l.max_line_bytes, AGENT_LINES_DEFAULT_MAX);
    agent_lines_dispose(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_lines),
        cmocka_unit_test(test_crlf),
        cmocka_unit_test(test_empty_lines),
        cmocka_unit_test(test_final_line_at_eof),
        cmocka_unit_test(test_long_lines_skipped_exactly),
        cmocka_unit_test(test_long_line_byte_by_byte),
        cmocka_unit_test(test_every_boundary),
        cmocka_unit_test(test_random_splits),
        cmocka_unit_test(test_buffer_bounded),
        cmocka_unit_test(test_reuse_after_finish),
        cmocka_unit_test(test_default_max),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
