/* test_deflate.c -- permessage-deflate: offer negotiation (every parameter,
 * declined offers, fallbacks), shared-frame compression and its cache, and
 * bounded inflation (context takeover, bombs, garbage). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "deflate.h"
#include "ws.h"

static bool nego(const char *offer, uint8_t cap, deflate_params_t *p, char *resp)
{
    memset(p, 0, sizeof *p);
    resp[0] = '\0';
    return deflate_negotiate(offer, cap, p, resp, 160);
}

static void test_negotiate_params(void **state)
{
    (void)state;
    deflate_params_t p;
    char r[160];
    assert_true(nego("permessage-deflate", 15, &p, r));
    assert_string_equal(r, "permessage-deflate; server_no_context_takeover");
    assert_int_equal(p.server_window_bits, 15);
    assert_int_equal(p.client_window_bits, 15);
    assert_false(p.client_no_context_takeover);

    /* what browsers send: we may pick the client's window */
    assert_true(nego("permessage-deflate; client_max_window_bits", 12, &p, r));
    assert_string_equal(r, "permessage-deflate; server_no_context_takeover; "
                           "client_max_window_bits=12");
    assert_int_equal(p.client_window_bits, 12);

    assert_true(nego("permessage-deflate; client_max_window_bits=10; server_max_window_bits=11; "
                     "client_no_context_takeover; server_no_context_takeover",
                     15, &p, r));
    assert_string_equal(r, "permessage-deflate; server_no_context_takeover; "
                           "client_no_context_takeover; server_max_window_bits=11; "
                           "client_max_window_bits=10");
    assert_int_equal(p.server_window_bits, 11);
    assert_int_equal(p.client_window_bits, 10);
    assert_true(p.client_no_context_takeover);

    assert_true(nego("permessage-deflate; server_max_window_bits=\"9\"", 15, &p, r));
    assert_int_equal(p.server_window_bits, 9);
}

static void test_negotiate_declines(void **state)
{
    (void)state;
    deflate_params_t p;
    char r[160];
    assert_false(nego("x-webkit-deflate-frame", 15, &p, r));
    assert_false(nego("permessage-deflate; server_max_window_bits=16", 15, &p, r));
    assert_false(nego("permessage-deflate; server_max_window_bits=7", 15, &p, r));
    assert_false(nego("permessage-deflate; server_max_window_bits", 15, &p, r));
    assert_false(nego("permessage-deflate; client_max_window_bits=20", 15, &p, r));
    assert_false(nego("permessage-deflate; unknown_param", 15, &p, r));
    assert_false(nego("permessage-deflate; server_no_context_takeover=1", 15, &p, r));
    assert_false(nego("permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                      15, &p, r));
    /* a 256-byte server window cannot be honoured with zlib: next offer */
    assert_true(
        nego("permessage-deflate; server_max_window_bits=8, permessage-deflate", 15, &p, r));
    assert_int_equal(p.server_window_bits, 15);
    /* the first acceptable offer wins */
    assert_true(nego("permessage-deflate; bogus, permessage-deflate; client_no_context_takeover",
                     15, &p, r));
    assert_true(p.client_no_context_takeover);
    assert_false(nego("", 15, &p, r));
}

static frame_t *text_frame(size_t n, char fill)
{
    char *buf = malloc(n);
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)(fill + (char)(i % 7));
    frame_t *f = frame_ws(WS_OP_TEXT, buf, n);
    free(buf);
    return f;
}

static void test_shared_frame_compression(void **state)
{
    (void)state;
    deflater_t d;
    deflater_init(&d, 100);
    frame_t *small = text_frame(50, 'a');
    assert_ptr_equal(deflater_frame(&d, small, 15), small); /* under the threshold */
    frame_t *big = text_frame(5000, 'a');
    frame_t *z = deflater_frame(&d, big, 15);
    assert_ptr_not_equal(z, big);
    assert_true(z->data[0] & 0x40); /* RSV1 */
    assert_int_equal(z->data[0] & 0x0F, WS_OP_TEXT);
    assert_true(z->len < big->len / 4);
    assert_ptr_equal(deflater_frame(&d, big, 15), z); /* compressed once, shared */
    frame_t *z9 = deflater_frame(&d, big, 9);
    assert_ptr_not_equal(z9, z); /* another window, another variant */

    /* what a client inflates is the original payload */
    size_t zlen, plen;
    const uint8_t *zp = frame_ws_payload(z, &zlen);
    const uint8_t *pp = frame_ws_payload(big, &plen);
    z_stream *zs = NULL;
    uint8_t *out;
    size_t outlen;
    assert_int_equal(deflate_inflate(&zs, 15, true, zp, zlen, 1 << 20, &out, &outlen), AW_OK);
    assert_int_equal(outlen, plen);
    assert_memory_equal(out, pp, plen);
    free(out);
    deflate_inflate_free(zs);
    frame_unref(small);
    frame_unref(big); /* frees its variants too (ASan checks) */
    deflater_dispose(&d);
}

/* Compresses with a client-style stream (context kept across messages). */
static size_t client_compress(z_stream *zs, const char *text, uint8_t *out, size_t cap)
{
    zs->next_in = (Bytef *)text;
    zs->avail_in = (uInt)strlen(text);
    zs->next_out = out;
    zs->avail_out = (uInt)cap;
    assert_int_equal(deflate(zs, Z_SYNC_FLUSH), Z_OK);
    return cap - zs->avail_out - 4; /* strip 00 00 ff ff */
}

static void test_inflate_context_takeover(void **state)
{
    (void)state;
    z_stream c = {0};
    assert_int_equal(deflateInit2(&c, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    uint8_t buf[512];
    z_stream *zs = NULL;
    uint8_t *out;
    size_t outlen;
    const char *msgs[] = {"hello hello hello agentwire", "hello hello hello agentwire again"};
    for (int i = 0; i < 2; i++) { /* the second message refers to the first */
        size_t n = client_compress(&c, msgs[i], buf, sizeof buf);
        assert_int_equal(deflate_inflate(&zs, 15, false, buf, n, 1024, &out, &outlen), AW_OK);
        assert_int_equal(outlen, strlen(msgs[i]));
        assert_memory_equal(out, msgs[i], outlen);
        free(out);
    }
    deflateEnd(&c);
    deflate_inflate_free(zs);
}

/* Messages that end in a final block (BFINAL=1, zlib's Z_FINISH), as RFC
 * 7692 section 7.2.3.4 allows: each is read, with or without the empty
 * block's tail, and with context takeover the next may refer to the
 * previous one (a dictionary of its bytes). Bytes after the final block are
 * garbage. */
static void test_inflate_final_block(void **state)
{
    (void)state;
    const char *msgs[] = {"final block final block final block", "final block, then another one",
                          "and a third final block"};
    uint8_t buf[512];
    uint8_t *out;
    size_t outlen;
    z_stream *zs = NULL;
    char window[1024] = "";
    for (int i = 0; i < 3; i++) {
        z_stream c = {0};
        assert_int_equal(deflateInit2(&c, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
        if (window[0])
            assert_int_equal(deflateSetDictionary(&c, (const Bytef *)window, (uInt)strlen(window)),
                             Z_OK);
        c.next_in = (Bytef *)msgs[i];
        c.avail_in = (uInt)strlen(msgs[i]);
        c.next_out = buf;
        c.avail_out = sizeof buf;
        assert_int_equal(deflate(&c, Z_FINISH), Z_STREAM_END);
        size_t n = sizeof buf - c.avail_out;
        deflateEnd(&c);
        assert_int_equal(deflate_inflate(&zs, 15, false, buf, n, 1024, &out, &outlen), AW_OK);
        assert_int_equal(outlen, strlen(msgs[i]));
        assert_memory_equal(out, msgs[i], outlen);
        free(out);
        strcat(window, msgs[i]);
    }
    /* a final block followed by more bytes */
    z_stream c = {0};
    assert_int_equal(deflateInit2(&c, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    c.next_in = (Bytef *)"x";
    c.avail_in = 1;
    c.next_out = buf;
    c.avail_out = sizeof buf - 3;
    assert_int_equal(deflate(&c, Z_FINISH), Z_STREAM_END);
    size_t n = sizeof buf - 3 - c.avail_out;
    deflateEnd(&c);
    memcpy(buf + n, "abc", 3);
    z_stream *fresh = NULL;
    assert_int_equal(deflate_inflate(&fresh, 15, true, buf, n + 3, 1024, &out, &outlen), AW_EPROTO);
    deflate_inflate_free(fresh);
    deflate_inflate_free(zs);
}

static void test_inflate_bomb_and_garbage(void **state)
{
    (void)state;
    /* 10 MB of zeros compress to about 10 KB: a bomb for a 64 KiB limit */
    size_t n = 10 << 20;
    uint8_t *zeros = calloc(1, n);
    z_stream c = {0};
    assert_int_equal(deflateInit2(&c, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&c, (uLong)n);
    uint8_t *bomb = malloc(cap);
    c.next_in = zeros;
    c.avail_in = (uInt)n;
    c.next_out = bomb;
    c.avail_out = (uInt)cap;
    assert_int_equal(deflate(&c, Z_SYNC_FLUSH), Z_OK);
    size_t blen = cap - c.avail_out - 4;
    assert_true(blen < 64 * 1024);
    z_stream *zs = NULL;
    uint8_t *out = NULL;
    size_t outlen;
    assert_int_equal(deflate_inflate(&zs, 15, true, bomb, blen, 65536, &out, &outlen), AW_ETOOBIG);
    assert_null(out);
    /* the same stream still works afterwards (it was reset) */
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x12, 0x34};
    assert_int_equal(deflate_inflate(&zs, 15, true, garbage, sizeof garbage, 65536, &out, &outlen),
                     AW_EPROTO);
    deflateEnd(&c);
    free(bomb);
    free(zeros);
    deflate_inflate_free(zs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_negotiate_params),
        cmocka_unit_test(test_negotiate_declines),
        cmocka_unit_test(test_shared_frame_compression),
        cmocka_unit_test(test_inflate_context_takeover),
        cmocka_unit_test(test_inflate_bomb_and_garbage),
        cmocka_unit_test(test_inflate_final_block),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
