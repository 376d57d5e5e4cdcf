/* fuzz_ws.c -- libFuzzer target for the RFC 6455 codec (src/ws.c).
 *
 * Input: byte 0 configures the parser (bit 0: expect_masked, bits 1-3: the
 * message limit, bit 4: one split point or many small chunks, bits 5-7: the
 * extra checks below), bytes 1-2 seed the split points and bit 7 of byte 1
 * also sets allow_rsv1 (permessage-deflate negotiated), the rest is the byte
 * stream a client sends.
 *
 * The stream is parsed three times with fresh parsers: whole (one buffer,
 * frames consumed in place), split (bytes arrive in pieces and are appended
 * to the unconsumed rest) and streamed (split, with the parser's stream mode:
 * a data payload that has not all arrived goes through ws_payload piece by
 * piece, as session.c does). All runs must give the same frames, the same
 * final result and the same close code. Every frame is also
 * checked against the RFC rules the codec promises (control frames, masking,
 * fragmentation order, message limit, UTF-8 of text messages and close
 * reasons, by the reference decoder) and AW_EAGAIN must leave the buffer as it
 * was. The tail of the input also drives ws_mask, ws_client_frame,
 * ws_frame_header, ws_close_payload and ws_accept_key.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "fuzz_common.h"
#include "ws.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint64_t limits[8] = {0, 1, 125, 126, 1000, 65535, 65536, UINT64_MAX};

/* What the target expects of the stream so far (kept independently of the
 * parser's private state). */
typedef struct model {
    bool masked;
    bool deflate;    /* allow_rsv1 */
    bool compressed; /* the open message started with RSV1 */
    uint64_t max_message;
    bool in_message;
    uint8_t msg_opcode;
    uint64_t msg_len;
    fz_rec_t text; /* the open text message so far */
} model_t;

/* RFC 6455 section 7.4: codes a peer may send (1004-1006 and 1015 are
 * reserved, 0-999 and 1016-2999 unused, 3000-4999 for libraries and apps). */
static bool ref_close_code_ok(uint16_t c)
{
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1011) || (c >= 3000 && c <= 4999);
}

/* Checks one frame returned from buf[0..avail) and records it. */
static void check_frame(model_t *m, const uint8_t *buf, size_t avail, const ws_frame_t *f,
                        size_t used, fz_rec_t *rec)
{
    FUZZ_CHECK(used >= 2 && used <= avail);
    FUZZ_CHECK(used > f->len);
    size_t hlen = used - f->len;
    size_t masklen = (buf[1] & 0x80) ? 4 : 0;
    FUZZ_CHECK(hlen == 2 + masklen || hlen == 4 + masklen || hlen == 10 + masklen);
    if (m->masked)
        FUZZ_CHECK(masklen == 4);
    FUZZ_CHECK((f->payload == NULL) == (f->len == 0));
    if (f->len)
        FUZZ_CHECK(f->payload == buf + hlen);
    FUZZ_CHECK(f->opcode == (buf[0] & 0x0F));
    FUZZ_CHECK(f->fin == !!(buf[0] & 0x80));
    FUZZ_CHECK((buf[0] & 0x30) == 0); /* RSV2, RSV3: no extension uses them */
    FUZZ_CHECK(f->rsv1 == !!(buf[0] & 0x40));
    if (f->rsv1) /* RSV1: only with permessage-deflate, on a message's first frame */
        FUZZ_CHECK(m->deflate && (f->opcode == WS_OP_TEXT || f->opcode == WS_OP_BINARY));

    switch (f->opcode) {
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
        FUZZ_CHECK(f->fin && f->len <= WS_MAX_CONTROL_PAYLOAD);
        FUZZ_CHECK(!f->rsv1 && !f->compressed);
        if (f->opcode == WS_OP_CLOSE) {
            if (f->len == 0) {
                FUZZ_CHECK(f->close_code == WS_CLOSE_NO_STATUS);
                FUZZ_CHECK(f->close_reason != NULL && f->close_reason_len == 0);
            } else {
                FUZZ_CHECK(f->len >= 2);
                FUZZ_CHECK(f->close_code == (uint16_t)(f->payload[0] << 8 | f->payload[1]));
                FUZZ_CHECK(ref_close_code_ok(f->close_code));
                FUZZ_CHECK(ws_close_code_valid(f->close_code));
                FUZZ_CHECK(f->close_reason == (const char *)f->payload + 2);
                FUZZ_CHECK(f->close_reason_len == f->len - 2);
                FUZZ_CHECK(fz_utf8_valid(f->payload + 2, f->len - 2));
            }
        }
        break;
    case WS_OP_TEXT:
    case WS_OP_BINARY:
    case WS_OP_CONT:
        if (f->opcode == WS_OP_CONT) {
            FUZZ_CHECK(m->in_message);
        } else {
            FUZZ_CHECK(!m->in_message);
            m->msg_opcode = f->opcode;
            m->msg_len = 0;
            m->text.len = 0;
            m->compressed = f->rsv1;
        }
        FUZZ_CHECK(f->compressed == m->compressed);
        m->msg_len += f->len;
        FUZZ_CHECK(m->msg_len <= m->max_message);
        if (m->msg_opcode == WS_OP_TEXT && !m->compressed) { /* inflated text: checked later */
            size_t bad_at;
            bool complete;
            fz_rec_add(&m->text, f->payload, f->len);
            fz_utf8_scan(m->text.p, m->text.len, &bad_at, &complete);
            FUZZ_CHECK(bad_at == SIZE_MAX);
            if (f->fin)
                FUZZ_CHECK(complete);
        }
        m->in_message = !f->fin;
        break;
    default:
        FUZZ_CHECK(!"unknown opcode returned");
    }

    fz_rec_u64(rec, f->opcode);
    fz_rec_u64(rec, f->fin);
    fz_rec_u64(rec, f->rsv1);
    fz_rec_u64(rec, f->compressed);
    fz_rec_u64(rec, used);
    fz_rec_bytes(rec, f->payload, f->len);
    if (f->opcode == WS_OP_CLOSE) {
        fz_rec_u64(rec, f->close_code);
        fz_rec_bytes(rec, f->close_reason, f->close_reason_len);
    }
}

/* One ws_parse call on buf[0..len) with all the checks. Returns rc. */
static int parse_one(ws_parser_t *p, model_t *m, uint8_t *buf, size_t len, size_t *used,
                     fz_rec_t *rec, ws_frame_t *head)
{
    ws_frame_t f;
    uint16_t code = 0xFFFF;
    uint8_t *before = fz_dup(buf, len);
    int rc = ws_parse(p, buf, len, &f, used, &code);

    FUZZ_CHECK(code == ws_close_code_for(rc));
    FUZZ_CHECK(rc == AW_OK || rc == AW_EAGAIN || rc == AW_EPROTO || rc == AW_EUTF8 ||
               rc == AW_ETOOBIG || (rc == WS_PAYLOAD && p->stream));
    if (rc == WS_PAYLOAD) { /* a data frame's header; its payload has not all arrived */
        FUZZ_CHECK(*used >= 2 && *used <= WS_MAX_HEADER && *used <= len);
        FUZZ_CHECK(f.payload == NULL && f.len > len - *used);
        FUZZ_CHECK(f.opcode == WS_OP_TEXT || f.opcode == WS_OP_BINARY || f.opcode == WS_OP_CONT);
        FUZZ_CHECK(memcmp(before, buf, len) == 0);
        *head = f;
    } else if (rc == AW_OK) {
        check_frame(m, buf, len, &f, *used, rec);
    } else {
        FUZZ_CHECK(*used == 0);
        if (rc == AW_EAGAIN)
            FUZZ_CHECK(len == 0 || memcmp(before, buf, len) == 0);
    }
    free(before);
    return rc;
}

/* A fresh parser and model for one run. */
static void start(ws_parser_t *p, model_t *m, bool masked, uint64_t max_message, bool deflate)
{
    ws_parser_init(p, max_message, masked);
    p->allow_rsv1 = deflate;
    memset(m, 0, sizeof(*m));
    m->masked = masked;
    m->deflate = deflate;
    m->max_message = max_message;
}

/* Whole: every byte is there from the start. */
static void run_whole(const uint8_t *s, size_t n, bool masked, uint64_t max, bool deflate,
                      fz_rec_t *rec)
{
    ws_parser_t p;
    model_t m;
    uint8_t *buf = fz_dup(s, n);
    size_t off = 0, used;
    int rc;

    start(&p, &m, masked, max, deflate);
    while ((rc = parse_one(&p, &m, buf + off, n - off, &used, rec, NULL)) == AW_OK)
        off += used;
    fz_rec_u64(rec, (uint64_t)(int64_t)rc);
    fz_rec_u64(rec, ws_close_code_for(rc));
    fz_rec_free(&m.text);
    free(buf);
}

/* Split: pieces arrive one at a time; the unconsumed rest is kept in an
 * exact-size buffer and the next piece appended to it. */
static void run_split(const uint8_t *s, size_t n, bool masked, uint64_t max, bool deflate,
                      bool many, fz_rng_t *g, fz_rec_t *rec)
{
    ws_parser_t p;
    model_t m;
    uint8_t *pending = NULL;
    size_t plen = 0, off = 0, used;
    size_t single = n ? fz_rng_range(g, 0, n) : 0;
    int rc = AW_EAGAIN;

    start(&p, &m, masked, max, deflate);
    while (off < n && rc == AW_EAGAIN) {
        size_t piece;
        if (many)
            piece = fz_rng_range(g, 1, n - off < 16 ? n - off : 16);
        else
            piece = off < single ? single - off : n - off;
        uint8_t *buf = malloc(plen + piece ? plen + piece : 1);
        FUZZ_CHECK(buf != NULL);
        if (plen)
            memcpy(buf, pending, plen);
        memcpy(buf + plen, s + off, piece);
        free(pending);
        off += piece;
        size_t blen = plen + piece, boff = 0;
        while ((rc = parse_one(&p, &m, buf + boff, blen - boff, &used, rec, NULL)) == AW_OK)
            boff += used;
        plen = blen - boff;
        pending = fz_dup(buf + boff, plen);
        free(buf);
    }
    if (rc == AW_EAGAIN) /* no more bytes: ask once more, as whole does at its end */
        rc = parse_one(&p, &m, pending, plen, &used, rec, NULL);
    fz_rec_u64(rec, (uint64_t)(int64_t)rc);
    fz_rec_u64(rec, ws_close_code_for(rc));
    free(pending);
    fz_rec_free(&m.text);
}

/* The frame being streamed: its header, then the payload as it comes (the
 * buffer grows with it). */
typedef struct streamed {
    bool on;
    uint8_t *frame; /* header + payload */
    size_t hlen, len, off;
    unsigned calls;
} streamed_t;

/* Passes up to n bytes at src to the streamed payload (every other call in
 * place, else copied out); records the frame once whole. Returns the bytes
 * taken and sets *rc to AW_EAGAIN, AW_OK (frame done) or the error. */
static size_t stream_some(ws_parser_t *p, model_t *m, streamed_t *st, const uint8_t *src, size_t n,
                          fz_rec_t *rec, int *rc)
{
    size_t k = st->len - st->off < n ? st->len - st->off : n;
    /* grown as bytes arrive: a header may announce far more than will come */
    st->frame = realloc(st->frame, st->hlen + st->off + k);
    FUZZ_CHECK(st->frame != NULL);
    uint8_t *dst = st->frame + st->hlen + st->off;
    ws_frame_t f;
    uint16_t code = 0xFFFF;
    if (++st->calls % 2 == 0 && k) {
        memcpy(dst, src, k);
        src = dst;
    }
    *rc = ws_payload(p, dst, src, k, &f, &code);
    FUZZ_CHECK(code == ws_close_code_for(*rc));
    FUZZ_CHECK(*rc == AW_OK || *rc == AW_EAGAIN || *rc == AW_EUTF8);
    st->off += k;
    if (*rc == AW_EAGAIN)
        FUZZ_CHECK(st->off < st->len);
    if (*rc != AW_EAGAIN) {
        st->on = false;
        if (*rc == AW_OK) {
            FUZZ_CHECK(st->off == st->len && f.len == st->len && f.payload == NULL);
            f.payload = st->frame + st->hlen;
            check_frame(m, st->frame, st->hlen + st->len, &f, st->hlen + st->len, rec);
        }
        free(st->frame);
        st->frame = NULL;
    }
    return k;
}

/* Streamed: like split, with the parser's stream mode. */
static void run_stream(const uint8_t *s, size_t n, bool masked, uint64_t max, bool deflate,
                       bool many, fz_rng_t *g, fz_rec_t *rec)
{
    ws_parser_t p;
    model_t m;
    streamed_t st = {0};
    uint8_t *pending = NULL;
    size_t plen = 0, off = 0, used;
    size_t single = n ? fz_rng_range(g, 0, n) : 0;
    int rc = AW_EAGAIN;

    start(&p, &m, masked, max, deflate);
    p.stream = true;
    while (off < n && rc == AW_EAGAIN) {
        size_t piece;
        if (many)
            piece = fz_rng_range(g, 1, n - off < 16 ? n - off : 16);
        else
            piece = off < single ? single - off : n - off;
        uint8_t *buf = malloc(plen + piece ? plen + piece : 1);
        FUZZ_CHECK(buf != NULL);
        if (plen)
            memcpy(buf, pending, plen);
        memcpy(buf + plen, s + off, piece);
        free(pending);
        off += piece;
        size_t blen = plen + piece, boff = 0;
        for (;;) {
            if (st.on) {
                boff += stream_some(&p, &m, &st, buf + boff, blen - boff, rec, &rc);
                if (rc == AW_OK && boff < blen)
                    continue;
                if (rc == AW_OK)
                    rc = AW_EAGAIN; /* the frame is done; the next piece goes on */
                break;
            }
            ws_frame_t head;
            rc = parse_one(&p, &m, buf + boff, blen - boff, &used, rec, &head);
            if (rc == WS_PAYLOAD) {
                st.on = true;
                st.hlen = used;
                st.len = head.len;
                st.off = 0;
                st.frame = malloc(used);
                FUZZ_CHECK(st.frame != NULL);
                memcpy(st.frame, buf + boff, used);
                boff += used;
                continue;
            }
            if (rc != AW_OK)
                break;
            boff += used;
        }
        plen = blen - boff;
        pending = fz_dup(buf + boff, plen);
        free(buf);
    }
    if (rc == AW_EAGAIN && !st.on) /* no more bytes: ask once more, as whole does */
        rc = parse_one(&p, &m, pending, plen, &used, rec, NULL);
    fz_rec_u64(rec, (uint64_t)(int64_t)rc);
    fz_rec_u64(rec, ws_close_code_for(rc));
    free(pending);
    free(st.frame);
    fz_rec_free(&m.text);
}

/* ws_mask against the obvious loop, at every alignment and offset. */
static void check_mask(const uint8_t *s, size_t n)
{
    if (n < 4)
        return;
    const uint8_t *mask = s;
    s += 4;
    n -= 4;
    uint8_t *buf = malloc(n + 8), *want = malloc(n + 1);
    FUZZ_CHECK(buf && want);
    for (size_t a = 0; a < 8; a++) {
        size_t offset = a * 5; /* covers 0..3 modulo 4, and larger values */
        if (n)
            memcpy(buf + a, s, n);
        for (size_t i = 0; i < n; i++)
            want[i] = s[i] ^ mask[(offset + i) & 3];
        ws_mask(buf + a, n, mask, offset);
        FUZZ_CHECK(n == 0 || memcmp(buf + a, want, n) == 0);
        ws_mask(buf + a, n, mask, offset);
        FUZZ_CHECK(n == 0 || memcmp(buf + a, s, n) == 0);
    }
    free(buf);
    free(want);
}

/* A frame written by ws_client_frame / ws_frame_header parses back. */
static void check_roundtrip(const uint8_t *s, size_t n)
{
    if (n < 6)
        return;
    uint8_t opcode = s[0] & 0x0F, rsv = (s[0] >> 4) & 7;
    bool fin = s[0] & 0x80, use_mask = s[1] & 1, deflate = s[1] & 2;
    const uint8_t *mask = s + 2, *payload = s + 6;
    size_t len = n - 6;
    uint8_t *frame = malloc(WS_MAX_HEADER + len);
    FUZZ_CHECK(frame != NULL);
    size_t flen = ws_client_frame(frame, opcode, fin, rsv, use_mask ? mask : NULL, payload, len);
    FUZZ_CHECK(flen == len + (len < 126 ? 2 : len <= 0xFFFF ? 4 : 10) + (use_mask ? 4 : 0));

    ws_parser_t p;
    ws_frame_t f;
    size_t used;
    size_t bad_at;
    bool complete;
    bool control = opcode >= WS_OP_CLOSE;
    /* what RFC 6455 (and RFC 7692 when deflate) allows as the first frame a
     * fresh parser sees: RSV1 alone, on a text or binary frame, marks a
     * compressed message whose text is checked only once inflated */
    bool data_frame = opcode == WS_OP_TEXT || opcode == WS_OP_BINARY;
    bool compressed = rsv == 4 && deflate && data_frame;
    bool legal = (rsv == 0 || compressed) && opcode != WS_OP_CONT &&
                 (opcode <= WS_OP_BINARY || (opcode >= WS_OP_CLOSE && opcode <= WS_OP_PONG)) &&
                 (!control || (fin && len <= WS_MAX_CONTROL_PAYLOAD));
    fz_utf8_scan(payload, len, &bad_at, &complete);
    if (legal && opcode == WS_OP_TEXT && !compressed)
        legal = bad_at == SIZE_MAX && (complete || !fin);
    if (legal && opcode == WS_OP_CLOSE && len > 0)
        legal = len >= 2 && ref_close_code_ok((uint16_t)(payload[0] << 8 | payload[1])) &&
                fz_utf8_valid(payload + 2, len - 2);
    ws_parser_init(&p, UINT64_MAX, use_mask);
    p.allow_rsv1 = deflate;
    int rc = ws_parse(&p, frame, flen, &f, &used, NULL);
    FUZZ_CHECK((rc == AW_OK) == legal);
    if (rc == AW_OK) {
        FUZZ_CHECK(used == flen && f.len == len && f.opcode == opcode && f.fin == fin);
        FUZZ_CHECK(f.rsv1 == compressed && f.compressed == compressed);
        FUZZ_CHECK(len == 0 || memcmp(f.payload, payload, len) == 0);
    }
    free(frame);

    /* a server header parses back with an unmasking-free parser */
    uint8_t head[10];
    uint64_t big = (uint64_t)len * 1000003u;
    size_t hl = ws_frame_header(head, WS_OP_BINARY, true, big);
    FUZZ_CHECK(hl == (big < 126 ? 2u : big <= 0xFFFF ? 4u : 10u));
    ws_parser_init(&p, UINT64_MAX, false);
    rc = ws_parse(&p, head, hl, &f, &used, NULL);
    FUZZ_CHECK(big == 0 ? rc == AW_OK : rc == AW_EAGAIN);
}

/* ws_close_payload keeps the code, a prefix of the reason, <= 125 bytes, and
 * a valid reason stays valid after the cut. ws_accept_key on a slice. */
static void check_close_and_key(const uint8_t *s, size_t n)
{
    if (n < 2)
        return;
    uint16_t code = (uint16_t)(s[0] << 8 | s[1]);
    char *reason = malloc(n - 2 + 1);
    FUZZ_CHECK(reason != NULL);
    memcpy(reason, s + 2, n - 2);
    reason[n - 2] = '\0';
    size_t rlen = strlen(reason);
    uint8_t out[WS_MAX_CONTROL_PAYLOAD];
    size_t plen = ws_close_payload(out, code, reason);
    FUZZ_CHECK(plen >= 2 && plen <= WS_MAX_CONTROL_PAYLOAD);
    FUZZ_CHECK((uint16_t)(out[0] << 8 | out[1]) == code);
    FUZZ_CHECK(plen - 2 <= rlen && memcmp(out + 2, reason, plen - 2) == 0);
    if (rlen <= WS_MAX_CONTROL_PAYLOAD - 2)
        FUZZ_CHECK(plen - 2 == rlen);
    if (fz_utf8_valid((const uint8_t *)reason, rlen)) {
        FUZZ_CHECK(fz_utf8_valid(out + 2, plen - 2));
        FUZZ_CHECK(plen - 2 + 3 >= (rlen < 123 ? rlen : 123)); /* cuts at most 3 bytes */
    }
    free(reason);

    char accept[29];
    size_t klen = n - 2 < 40 ? n - 2 : 40;
    char *key = (char *)fz_dup(s + 2, klen);
    if (ws_accept_key(accept, key, klen) == AW_OK) {
        FUZZ_CHECK(klen == 24);
        FUZZ_CHECK(strlen(accept) == 28);
    }
    free(key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    const bool masked = data[0] & 1;
    const bool deflate = data[1] & 0x80;
    const uint64_t max = limits[(data[0] >> 1) & 7];
    const bool many = data[0] & 0x10;
    const uint8_t *s = data + 3;
    const size_t n = size - 3;
    fz_rng_t g;
    fz_rec_t whole = {0}, split = {0}, streamed = {0};

    fz_rng_seed(&g, (uint64_t)data[1] << 8 | data[2]);
    run_whole(s, n, masked, max, deflate, &whole);
    run_split(s, n, masked, max, deflate, many, &g, &split);
    FUZZ_CHECK(fz_rec_eq(&whole, &split));
    fz_rng_seed(&g, (uint64_t)data[1] << 8 | data[2]);
    run_stream(s, n, masked, max, deflate, many, &g, &streamed);
    FUZZ_CHECK(fz_rec_eq(&whole, &streamed));
    fz_rec_free(&whole);
    fz_rec_free(&split);
    fz_rec_free(&streamed);

    /* NULL buffer of length 0: need more bytes, nothing consumed */
    ws_parser_t p;
    ws_frame_t f;
    size_t used = 7;
    ws_parser_init(&p, max, masked);
    FUZZ_CHECK(ws_parse(&p, NULL, 0, &f, &used, NULL) == AW_EAGAIN && used == 0);

    if (data[0] & 0x20)
        check_mask(s, n);
    if (data[0] & 0x40)
        check_roundtrip(s, n);
    if (data[0] & 0x80)
        check_close_and_key(s, n);
    return 0;
}
