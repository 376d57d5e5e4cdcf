/* test_bigstr.c -- long JSON strings left undecoded: the same documents are
 * accepted and refused as by the plain parser, and a serialization spliced
 * back is the document the plain parser reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "bigstr.h"

static int append(const char *bytes, size_t n, void *arg)
{
    aw_buf_t *t = arg; /* kept NUL-terminated, for the parser */
    int rc = aw_buf_append(bytes, n, t);
    if (rc == 0 && aw_buf_append("", 1, t) == 0)
        t->len--;
    return rc;
}

/* Loads doc both ways: same verdict, and when accepted, the bigstr tree
 * serialized and spliced reads back equal to the plain tree. */
static void same_as_plain(const char *doc, size_t *nlits)
{
    json_error_t e1, e2;
    json_t *plain = json_loadb(doc, strlen(doc), JSON_REJECT_DUPLICATES, &e1);
    bigstr_t b = {0};
    json_t *big = bigstr_loadb(&b, doc, strlen(doc), JSON_REJECT_DUPLICATES, &e2);
    if (nlits)
        *nlits = b.n;
    assert_int_equal(plain != NULL, big != NULL);
    if (plain) {
        char *dumped = json_dumps(big, JSON_COMPACT);
        aw_buf_t t = {0};
        assert_int_equal(bigstr_splice(&b, dumped, strlen(dumped), append, &t), 0);
        json_t *back = json_loadb(t.data, t.len, 0, &e1);
        assert_non_null(back);
        assert_true(json_equal(back, plain));
        json_decref(back);
        free(dumped);
        free(t.data);
    }
    json_decref(plain);
    json_decref(big);
    bigstr_free(&b);
}

static char *long_doc(const char *prefix, const char *unit, size_t repeat, const char *suffix)
{
    size_t ul = strlen(unit);
    char *d = malloc(strlen(prefix) + ul * repeat + strlen(suffix) + 1);
    strcpy(d, prefix);
    char *w = d + strlen(prefix);
    for (size_t i = 0; i < repeat; i++, w += ul)
        memcpy(w, unit, ul);
    strcpy(w, suffix);
    return d;
}

static void test_small_documents_untouched(void **state)
{
    (void)state;
    size_t n;
    same_as_plain("{\"type\":\"x\",\"a\":[1,2,{\"b\":\"c\"}]}", &n);
    assert_int_equal(n, 0);
    same_as_plain("{\"a\":\"bad \\u0000\"}", &n); /* refused both ways */
    same_as_plain("[1,2", &n);
}

static void test_long_values_round_trip(void **state)
{
    (void)state;
    size_t n;
    char *d = long_doc("{\"type\":\"note\",\"pad\":\"", "xy\\\"z\\\\ \\u00e9\\n\xc3\xa9", 300,
                       "\",\"n\":1}");
    same_as_plain(d, &n);
    assert_int_equal(n, 1);
    free(d);
    /* several in a batch, one of them a surrogate pair */
    d = long_doc("[{\"a\":\"", "\\ud83d\\ude00abc", 200, "\"},{\"a\":\"");
    char *d2 = long_doc(d, "q", 3000, "\",\"b\":\"short\"}]");
    same_as_plain(d2, &n);
    assert_int_equal(n, 2);
    free(d);
    free(d2);
}

static void test_long_keys_stay_decoded(void **state)
{
    (void)state;
    size_t n;
    char *d = long_doc("{\"", "k", 2000, "\":1}");
    same_as_plain(d, &n);
    assert_int_equal(n, 0);
    free(d);
}

static void test_bad_long_strings_refused(void **state)
{
    (void)state;
    const char *bad[] = {"\x01", "\\x", "\\ud800", "\\udc00", "\xc3", "\xff", "\\u0000", "\\u12"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *head = long_doc("{\"pad\":\"", "a", 1500, "");
        char *d = long_doc(head, bad[i], 1, "b\"}");
        json_error_t e;
        bigstr_t b = {0};
        json_t *j = bigstr_loadb(&b, d, strlen(d), 0, &e);
        assert_null(j);
        assert_null(json_loadb(d, strlen(d), 0, &e)); /* the plain parser agrees */
        bigstr_free(&b);
        free(head);
        free(d);
    }
}

static void test_random_strings_agree(void **state)
{
    (void)state;
    const char *good[] = {"a",       "\\\"",     "\\\\",           "\\/",  "\\b",         "\\n",
                          "\\u0041", "\xc3\xa9", "\\ud83d\\ude00", "\x7f", "\xe2\x82\xac"};
    const char *bad[] = {"\\ud83d", "\\ude00", "\\u0000", "\x1f", "\\q", "\xe2\x82", "\xac"};
    srand(7);
    int accepted = 0;
    for (int round = 0; round < 400; round++) {
        aw_buf_t t = {0};
        append("{\"v\":\"", 6, &t);
        int count = 100 + rand() % 600;
        bool spoil = round % 2; /* half the documents get one bad piece */
        int at = rand() % count;
        for (int i = 0; i < count; i++) {
            const char *piece = spoil && i == at ? bad[rand() % 7] : good[rand() % 11];
            append(piece, strlen(piece), &t);
        }
        append("\"}", 2, &t);
        json_error_t e;
        json_t *j = json_loadb(t.data, t.len, 0, &e);
        accepted += j != NULL;
        json_decref(j);
        same_as_plain(t.data, NULL);
        free(t.data);
    }
    assert_int_equal(accepted, 200); /* every clean one, no spoiled one */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_documents_untouched),
        cmocka_unit_test(test_long_values_round_trip),
        cmocka_unit_test(test_long_keys_stay_decoded),
        cmocka_unit_test(test_bad_long_strings_refused),
        cmocka_unit_test(test_random_strings_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
