/* ws.c -- the RFC 6455 codec: parses frames in place in the caller's buffer,
 * writes frame headers, close payloads and the handshake accept key.
 * It owns nothing but the caller's ws_parser_t and must never touch a socket,
 * a global or malloc. Every rule is checked as soon as the bytes that decide it
 * are present, so a bad or oversized header fails before its payload arrives. */
#include "ws.h"

#include <openssl/sha.h>
#include <string.h>

#include "aw.h"
#include "base64.h"

#define WS_GUID             "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_KEY_LEN          24 /* base64 of WS_KEY_BYTES, with padding */
#define WS_KEY_BYTES        16
#define WS_LEN16            126 /* 7-bit length values that announce an extended length */
#define WS_LEN64            127
#define WS_MASK_LEN         4
#define WS_CLOSE_REASON_MAX (WS_MAX_CONTROL_PAYLOAD - 2)

/* What one frame header says; filled by read_header. */
struct ws_head {
    bool fin;
    bool rsv1;
    uint8_t opcode;
    bool masked;
    uint8_t mask[WS_MASK_LEN];
    uint64_t plen; /* payload bytes, < 2^63 */
    size_t hlen;   /* header bytes including the mask key, 2..14 */
};

static bool is_control(uint8_t opcode)
{
    return opcode & 0x8;
}

static bool opcode_known(uint8_t opcode)
{
    return opcode <= WS_OP_BINARY || (opcode >= WS_OP_CLOSE && opcode <= WS_OP_PONG);
}

/* Rules decided by the first byte: reserved bits (RSV1 only on the first
 * frame of a data message, and only with permessage-deflate), opcode, FIN on
 * control frames and fragmentation order. */
static int check_byte0(const ws_parser_t *p, uint8_t b0)
{
    uint8_t opcode = b0 & 0x0F;
    bool rsv1_ok = p->allow_rsv1 && (opcode == WS_OP_TEXT || opcode == WS_OP_BINARY);

    if ((b0 & 0x30) || ((b0 & 0x40) && !rsv1_ok))
        return AW_EPROTO;
    if (!opcode_known(opcode))
        return AW_EPROTO;
    if (is_control(opcode))
        return b0 & 0x80 ? AW_OK : AW_EPROTO;
    if (opcode == WS_OP_CONT)
        return p->_in_message ? AW_OK : AW_EPROTO;
    return p->_in_message ? AW_EPROTO : AW_OK;
}

/* Rules decided by the second byte: masking and the control payload limit. */
static int check_byte1(const ws_parser_t *p, uint8_t b0, uint8_t b1)
{
    if (p->expect_masked && !(b1 & 0x80))
        return AW_EPROTO;
    if (is_control(b0 & 0x0F) && (b1 & 0x7F) > WS_MAX_CONTROL_PAYLOAD)
        return AW_EPROTO;
    return AW_OK;
}

static uint64_t load_be(const uint8_t *s, size_t n)
{
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++)
        v = v << 8 | s[i];
    return v;
}

static void store_be(uint8_t *out, uint64_t v, size_t n)
{
    for (size_t i = n; i > 0; i--) {
        out[i - 1] = (uint8_t)v;
        v >>= 8;
    }
}

/* Reads the payload length. An extended length must be the shortest encoding
 * (section 5.2) and a 64-bit one must have its top bit clear. */
static int read_length(const uint8_t *buf, size_t len, struct ws_head *h)
{
    uint8_t len7 = buf[1] & 0x7F;
    size_t ext = len7 == WS_LEN16 ? 2 : len7 == WS_LEN64 ? 8 : 0;

    if (len < 2 + ext)
        return AW_EAGAIN;
    h->hlen = 2 + ext;
    h->plen = ext ? load_be(buf + 2, ext) : len7;
    if (ext == 2 && h->plen < WS_LEN16)
        return AW_EPROTO;
    if (ext == 8 && (h->plen <= 0xFFFF || h->plen >> 63))
        return AW_EPROTO;
    return AW_OK;
}

/* The message limit, from the header alone so that the caller never buffers a
 * payload that will be refused. Control frames are not part of a message. */
static int check_size(const ws_parser_t *p, const struct ws_head *h)
{
    uint64_t so_far = h->opcode == WS_OP_CONT ? p->_msg_len : 0;

    if (is_control(h->opcode))
        return AW_OK;
    if (so_far > p->max_message || h->plen > p->max_message - so_far)
        return AW_ETOOBIG;
    if (h->plen > SIZE_MAX - WS_MAX_HEADER)
        return AW_ETOOBIG; /* cannot be addressed on this host */
    return AW_OK;
}

/* Reads and checks the header. AW_EAGAIN until every header byte is there,
 * unless a byte already present breaks a rule. */
static int read_header(const ws_parser_t *p, const uint8_t *buf, size_t len, struct ws_head *h)
{
    int rc;

    if (len < 1)
        return AW_EAGAIN;
    rc = check_byte0(p, buf[0]);
    if (rc != AW_OK || len < 2)
        return rc != AW_OK ? rc : AW_EAGAIN;
    rc = check_byte1(p, buf[0], buf[1]);
    if (rc != AW_OK)
        return rc;
    h->fin = buf[0] & 0x80;
    h->rsv1 = buf[0] & 0x40;
    h->opcode = buf[0] & 0x0F;
    h->masked = buf[1] & 0x80;
    rc = read_length(buf, len, h);
    if (rc != AW_OK)
        return rc;
    rc = check_size(p, h);
    if (rc != AW_OK || !h->masked)
        return rc;
    if (len < h->hlen + WS_MASK_LEN)
        return AW_EAGAIN;
    memcpy(h->mask, buf + h->hlen, WS_MASK_LEN);
    h->hlen += WS_MASK_LEN;
    return AW_OK;
}

/* Close payload: empty, or a valid code and a UTF-8 reason (section 5.5.1). */
static int read_close(ws_frame_t *f)
{
    f->close_code = WS_CLOSE_NO_STATUS;
    f->close_reason = "";
    if (f->len == 0)
        return AW_OK;
    if (f->len == 1)
        return AW_EPROTO;
    f->close_code = (uint16_t)(f->payload[0] << 8 | f->payload[1]);
    f->close_reason = (const char *)f->payload + 2;
    f->close_reason_len = f->len - 2;
    if (!ws_close_code_valid(f->close_code))
        return AW_EPROTO;
    if (!utf8_valid(f->payload + 2, f->len - 2))
        return AW_EUTF8;
    return AW_OK;
}

/* A data frame starts: a first frame opens the message. */
static void msg_begin(ws_parser_t *p, uint8_t opcode, bool rsv1, uint64_t len)
{
    if (opcode != WS_OP_CONT) {
        p->_msg_opcode = opcode;
        p->_msg_len = 0;
        p->_msg_compressed = rsv1;
        utf8_init(&p->_utf8);
    }
    p->_msg_len += len;
}

/* Text that is checked here: compressed text is checked once inflated. */
static bool msg_checks_text(const ws_parser_t *p)
{
    return p->_msg_opcode == WS_OP_TEXT && !p->_msg_compressed;
}

/* Unmasks n payload bytes from src into dst (dst == src: in place) and checks
 * the text as it goes, a cache-sized chunk at a time, so every byte is read
 * once and checked while it is still in the first-level cache. */
#define PASS_CHUNK 4096
static int payload_pass(ws_parser_t *p, uint8_t *dst, const uint8_t *src, size_t n, bool masked,
                        const uint8_t mask[4], uint64_t offset)
{
    bool text = msg_checks_text(p);
    if (!masked && !text) {
        if (dst != src && n)
            memcpy(dst, src, n);
        return AW_OK;
    }
    for (size_t i = 0; i < n; i += PASS_CHUNK) {
        size_t k = n - i < PASS_CHUNK ? n - i : PASS_CHUNK;
        bool ascii = false;
        if (masked)
            ascii = ws_mask_copy(dst + i, src + i, k, mask, (size_t)((offset + i) & 3));
        else if (dst != src)
            memcpy(dst + i, src + i, k);
        /* ASCII between whole characters needs no second look */
        if (text && !(ascii && utf8_between(&p->_utf8)) && !utf8_feed(&p->_utf8, dst + i, k))
            return AW_EUTF8;
    }
    return AW_OK;
}

/* A data frame is whole: fills what the frame says of its message and checks
 * that a finished text message ends on a whole character. */
static int msg_end(ws_parser_t *p, ws_frame_t *f)
{
    f->compressed = p->_msg_compressed;
    p->_in_message = !f->fin;
    if (f->fin && msg_checks_text(p) && !utf8_complete(&p->_utf8))
        return AW_EUTF8;
    return AW_OK;
}

static int take_frame(ws_parser_t *p, uint8_t *buf, const struct ws_head *h, ws_frame_t *out,
                      size_t checked)
{
    size_t n = (size_t)h->plen;

    memset(out, 0, sizeof(*out));
    out->opcode = h->opcode;
    out->fin = h->fin;
    out->rsv1 = h->rsv1;
    out->len = n;
    out->payload = n ? buf + h->hlen : NULL;
    if (is_control(h->opcode)) {
        if (h->masked && n)
            ws_mask(out->payload, n, h->mask, 0);
        return h->opcode == WS_OP_CLOSE ? read_close(out) : AW_OK;
    }
    msg_begin(p, h->opcode, h->rsv1, n);
    if (checked && msg_checks_text(p))
        p->_utf8 = p->_pv_state; /* its first bytes passed check_partial_text already */
    else
        checked = 0;
    if (checked && h->masked) /* those were checked on a copy: unmask them here */
        ws_mask(out->payload, checked, h->mask, 0);
    int rc = n > checked ? payload_pass(p, out->payload + checked, out->payload + checked,
                                        n - checked, h->masked, h->mask, checked)
                         : AW_OK;
    return rc != AW_OK ? rc : msg_end(p, out);
}

/* The header of a data frame whose payload has not all arrived: the caller
 * streams the payload through ws_payload. */
static int stream_begin(ws_parser_t *p, const struct ws_head *h, ws_frame_t *out)
{
    memset(out, 0, sizeof(*out));
    out->opcode = h->opcode;
    out->fin = h->fin;
    out->rsv1 = h->rsv1;
    out->len = (size_t)h->plen;
    msg_begin(p, h->opcode, h->rsv1, h->plen);
    out->compressed = p->_msg_compressed;
    p->_st_on = true;
    p->_st_fin = h->fin;
    p->_st_rsv1 = h->rsv1;
    p->_st_masked = h->masked;
    p->_st_opcode = h->opcode;
    memcpy(p->_st_mask, h->mask, sizeof p->_st_mask);
    p->_st_len = h->plen;
    p->_st_off = 0;
    return WS_PAYLOAD;
}

int ws_payload(ws_parser_t *p, uint8_t *dst, const uint8_t *src, size_t n, ws_frame_t *out,
               uint16_t *close_code)
{
    int rc;
    if (!p || !out || !p->_st_on || n > p->_st_len - p->_st_off || (n && (!dst || !src)))
        rc = AW_EINVAL;
    else
        rc = payload_pass(p, dst, src, n, p->_st_masked, p->_st_mask, p->_st_off);
    if (rc == AW_OK) {
        p->_st_off += n;
        if (p->_st_off < p->_st_len) {
            rc = AW_EAGAIN;
        } else {
            memset(out, 0, sizeof(*out));
            out->opcode = p->_st_opcode;
            out->fin = p->_st_fin;
            out->rsv1 = p->_st_rsv1;
            out->len = (size_t)p->_st_len;
            p->_st_on = false;
            rc = msg_end(p, out);
        }
    }
    if (close_code)
        *close_code = ws_close_code_for(rc);
    return rc;
}

/* Validates the part of a text payload that has arrived, so that invalid
 * UTF-8 fails before the rest of the frame comes (fail fast, RFC 6455 8.1).
 * Resumes where the previous call stopped: until the frame is whole, the
 * caller feeds it again from its start. Returns AW_EAGAIN or AW_EUTF8. */
static int check_partial_text(ws_parser_t *p, const uint8_t *buf, size_t len,
                              const struct ws_head *h)
{
    bool cont = h->opcode == WS_OP_CONT;
    bool text = h->opcode == WS_OP_TEXT || (cont && p->_msg_opcode == WS_OP_TEXT);
    bool compressed = cont ? p->_msg_compressed : h->rsv1;
    if (!text || compressed)
        return AW_EAGAIN;
    size_t avail = len - h->hlen;
    if (p->_pv_len == 0) {
        if (cont)
            p->_pv_state = p->_utf8;
        else
            utf8_init(&p->_pv_state);
    }
    while (p->_pv_len < avail) {
        uint8_t chunk[256];
        size_t n = avail - p->_pv_len < sizeof chunk ? avail - p->_pv_len : sizeof chunk;
        memcpy(chunk, buf + h->hlen + p->_pv_len, n);
        if (h->masked)
            ws_mask(chunk, n, h->mask, p->_pv_len);
        if (!utf8_feed(&p->_pv_state, chunk, n))
            return AW_EUTF8;
        p->_pv_len += n;
    }
    return AW_EAGAIN;
}

uint16_t ws_close_code_for(int rc)
{
    switch (rc) {
    case AW_OK:
    case AW_EAGAIN:
    case WS_PAYLOAD:
        return 0;
    case AW_EPROTO:
        return WS_CLOSE_PROTOCOL;
    case AW_EUTF8:
        return WS_CLOSE_INVALID_UTF8;
    case AW_ETOOBIG:
        return WS_CLOSE_TOO_BIG;
    default:
        return WS_CLOSE_INTERNAL;
    }
}

void ws_parser_init(ws_parser_t *p, uint64_t max_message, bool expect_masked)
{
    memset(p, 0, sizeof(*p));
    p->max_message = max_message;
    p->expect_masked = expect_masked;
    utf8_init(&p->_utf8);
}

int ws_parse(ws_parser_t *p, uint8_t *buf, size_t len, ws_frame_t *out, size_t *consumed,
             uint16_t *close_code)
{
    struct ws_head h;
    int rc;

    if (consumed)
        *consumed = 0;
    if (!p || !out || !consumed || (!buf && len) || p->_st_on)
        rc = AW_EINVAL;
    else
        rc = read_header(p, buf, len, &h);
    if (rc == AW_OK && len - h.hlen < h.plen && p->stream && !is_control(h.opcode)) {
        rc = stream_begin(p, &h, out);
        *consumed = h.hlen;
    } else if (rc == AW_OK && len - h.hlen < h.plen) {
        rc = check_partial_text(p, buf, len, &h);
    } else if (rc == AW_OK) {
        size_t checked = p->_pv_len; /* the frame is whole: the rest is validated below */
        p->_pv_len = 0;
        rc = take_frame(p, buf, &h, out, checked);
    }
    if (rc == AW_OK)
        *consumed = h.hlen + (size_t)h.plen;
    if (close_code)
        *close_code = ws_close_code_for(rc);
    return rc;
}

/* Writes byte 0 given, then the shortest length encoding with mask bit m. */
static size_t put_header(uint8_t *out, uint8_t b0, uint8_t m, uint64_t len)
{
    out[0] = b0;
    if (len < WS_LEN16) {
        out[1] = m | (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = m | WS_LEN16;
        store_be(out + 2, len, 2);
        return 4;
    }
    out[1] = m | WS_LEN64;
    store_be(out + 2, len, 8);
    return 10;
}

size_t ws_frame_header(uint8_t *out, uint8_t opcode, bool fin, uint64_t len)
{
    return put_header(out, (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F)), 0, len);
}

/* Length of reason cut to at most max bytes without splitting a UTF-8
 * character, so that a truncated reason stays valid for the peer. */
static size_t reason_cut(const char *reason, size_t max)
{
    size_t n = max;

    for (int i = 0; i < 3 && n > 0 && ((uint8_t)reason[n] & 0xC0) == 0x80; i++)
        n--;
    return n;
}

size_t ws_close_payload(uint8_t *out, uint16_t code, const char *reason)
{
    size_t n = reason ? strnlen(reason, WS_CLOSE_REASON_MAX + 1) : 0;

    if (n > WS_CLOSE_REASON_MAX)
        n = reason_cut(reason, WS_CLOSE_REASON_MAX);
    store_be(out, code, 2);
    if (n)
        memcpy(out + 2, reason, n);
    return 2 + n;
}

bool ws_close_code_valid(uint16_t code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

size_t ws_client_frame(uint8_t *out, uint8_t opcode, bool fin, uint8_t rsv, const uint8_t mask[4],
                       const uint8_t *payload, size_t len)
{
    uint8_t b0 = (uint8_t)((fin ? 0x80 : 0) | (rsv & 7) << 4 | (opcode & 0x0F));
    size_t n = put_header(out, b0, mask ? 0x80 : 0, len);

    if (mask) {
        memcpy(out + n, mask, WS_MASK_LEN);
        n += WS_MASK_LEN;
    }
    if (len) {
        memcpy(out + n, payload, len);
        if (mask)
            ws_mask(out + n, len, mask, 0);
    }
    return n + len;
}

void ws_mask(uint8_t *buf, size_t len, const uint8_t mask[4], size_t offset)
{
    ws_mask_copy(buf, buf, len, mask, offset);
}

/* 16 bytes as one value: a vector register on x86-64 (SSE2) and arm64. */
typedef uint64_t u64x2 __attribute__((vector_size(16)));

bool ws_mask_copy(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t mask[4],
                  size_t offset)
{
    size_t head = (size_t)(-(uintptr_t)dst & 7);
    size_t i = 0;
    uint8_t pattern[8];
    uint64_t m, w, acc = 0;

    offset &= 3;
    if (head > len)
        head = len;
    for (; i < head; i++)
        acc |= dst[i] = src[i] ^ mask[(offset + i) & 3];
    /* Every payload byte passes through here once, so the aligned middle goes
     * 64 bytes per step. The pattern is built byte by byte, so the XOR is the
     * same on any byte order. The OR of what was written tells whether it
     * was all ASCII. */
    for (size_t j = 0; j < sizeof(pattern); j++)
        pattern[j] = mask[(offset + i + j) & 3];
    memcpy(&m, pattern, sizeof(m));
    u64x2 mv = {m, m}, acc2 = {0, 0};
    for (; len - i >= 4 * sizeof(u64x2); i += 4 * sizeof(u64x2)) {
        u64x2 a, b, c, d;
        memcpy(&a, src + i, sizeof a);
        memcpy(&b, src + i + 16, sizeof b);
        memcpy(&c, src + i + 32, sizeof c);
        memcpy(&d, src + i + 48, sizeof d);
        a ^= mv;
        b ^= mv;
        c ^= mv;
        d ^= mv;
        acc2 |= (a | b) | (c | d);
        memcpy(dst + i, &a, sizeof a);
        memcpy(dst + i + 16, &b, sizeof b);
        memcpy(dst + i + 32, &c, sizeof c);
        memcpy(dst + i + 48, &d, sizeof d);
    }
    acc |= acc2[0] | acc2[1];
    for (; len - i >= sizeof(w); i += sizeof(w)) {
        memcpy(&w, src + i, sizeof(w));
        w ^= m;
        acc |= w;
        memcpy(dst + i, &w, sizeof(w));
    }
    for (; i < len; i++)
        acc |= dst[i] = src[i] ^ mask[(offset + i) & 3];
    return !(acc & 0x8080808080808080ULL);
}

int ws_accept_key(char out[29], const char *key, size_t key_len)
{
    uint8_t raw[BASE64_DECODED_MAX(WS_KEY_LEN)];
    uint8_t text[WS_KEY_LEN + sizeof(WS_GUID) - 1];
    uint8_t digest[SHA_DIGEST_LENGTH];
    size_t n;

    if (!out || !key || key_len != WS_KEY_LEN)
        return AW_EMALFORMED;
    if (base64_decode(raw, &n, key, key_len) != AW_OK || n != WS_KEY_BYTES)
        return AW_EMALFORMED;
    memcpy(text, key, WS_KEY_LEN);
    memcpy(text + WS_KEY_LEN, WS_GUID, sizeof(WS_GUID) - 1);
    /* SHA1() goes through EVP in OpenSSL 3 and can fail inside the library */
    if (!SHA1(text, sizeof(text), digest))
        return AW_ENOMEM;
    base64_encode(out, digest, sizeof(digest));
    return AW_OK;
}
