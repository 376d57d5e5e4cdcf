/* session_ws.c -- a session's WebSocket input: the frame loop over what
 * the peer sent, payloads streamed in place, control frames, whole
 * messages inflated and checked, then handed to client.c. The session's
 * life, queue and writes are session.c's. */
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "client.h"
#include "lock.h"
#include "log.h"
#include "server.h"
#include "session_int.h"

static void on_peer_close(session_t *s, const ws_frame_t *fr)
{
    s->_close_received = true;
    if (s->state == SESSION_CLOSING) { /* the answer to our close */
        if (s->_qlen == 0)
            session_abort(s, NULL);
        else
            s->_close_when_flushed = true;
        return;
    }
    uint16_t code = fr->close_code == WS_CLOSE_NO_STATUS ? WS_CLOSE_NORMAL : fr->close_code;
    session_close(s, code, "");
    s->_close_when_flushed = true;
}

static void ws_error(session_t *s, uint16_t code, int rc);

/* client.c's messages use the hub, runs and tickets: the lock alone (from
 * the shared hold the frame loop runs under, session.c). The echo endpoint
 * only sends the message back on its own session. */
static void deliver_message(session_t *s, uint8_t opcode, const uint8_t *data, size_t len,
                            frame_t *own)
{
    if (s->echo) {
        client_message(s, opcode, data, len, own);
        return;
    }
    aw_lock();
    client_message(s, opcode, data, len, own);
    aw_unlock();
}

/* A whole message: inflated when compressed (bounded by the message limit,
 * so a small bomb cannot grow past it), UTF-8 checked if it was text, then
 * handed to client.c. own: the frame data lives in, with our frame header's
 * room in front of it, or NULL. */
static void message_done(session_t *s, uint8_t opcode, bool compressed, const uint8_t *data,
                         size_t len, frame_t *own)
{
    if (!compressed) {
        deliver_message(s, opcode, data, len, own);
        return;
    }
    uint8_t *plain;
    size_t plen;
    int rc = deflate_inflate(&s->_inflate, s->zparams.client_window_bits,
                             s->zparams.client_no_context_takeover, data, len,
                             (size_t)s->srv->cfg->max_message_bytes, &plain, &plen);
    if (rc == AW_OK && opcode == WS_OP_TEXT && !utf8_valid(plain, plen))
        rc = AW_EUTF8;
    if (rc != AW_OK) {
        if (rc == AW_EUTF8)
            free(plain); /* inflated, but not text */
        ws_error(s, ws_close_code_for(rc), rc);
        return;
    }
    deliver_message(s, opcode, plain, plen, NULL);
    free(plain);
}

/* One frame. own: see message_done; in_msg: a fragment that streamed into
 * _msg already (its payload is not in fr). */
static void on_frame(session_t *s, ws_frame_t *fr, frame_t *own, bool in_msg)
{
    bool ping = fr->opcode == WS_OP_PING;
    bool whole = fr->fin && fr->opcode != WS_OP_PONG && fr->opcode != WS_OP_CLOSE;
    if ((ping || whole) && s->state == SESSION_OPEN && !client_within_rate(s, ping)) {
        aw_buf_free(&s->_msg); /* over budget: refused (and counted), fragments too */
        return;
    }
    switch (fr->opcode) {
    case WS_OP_PING: {
        frame_t *pong = frame_ws(WS_OP_PONG, fr->payload, fr->len);
        if (pong) {
            session_send(s, pong);
            frame_unref(pong);
        }
        return;
    }
    case WS_OP_PONG:
        return; /* arrival alone proves liveness (_last_rx_ms) */
    case WS_OP_CLOSE:
        on_peer_close(s, fr);
        return;
    default:
        break;
    }
    if (s->state != SESSION_OPEN) {
        aw_buf_free(&s->_msg);
        return; /* data after our close frame is read and dropped */
    }
    if (fr->fin && fr->opcode != WS_OP_CONT) {
        message_done(s, fr->opcode, fr->compressed, fr->payload, fr->len, own);
        return;
    }
    if (fr->opcode != WS_OP_CONT)
        s->_msg_op = fr->opcode;
    if (!in_msg && aw_buf_append((const char *)fr->payload, fr->len, &s->_msg) != 0) {
        session_close(s, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    if (fr->fin) {
        message_done(s, s->_msg_op, fr->compressed, (const uint8_t *)s->_msg.data, s->_msg.len,
                     NULL);
        aw_buf_free(&s->_msg);
    }
}

static void ws_error(session_t *s, uint16_t code, int rc)
{
    s->_ws_broken = true;
    s->_in_on = false;
    log_kv(LOG_INFO | LOG_LIMITED, "protocol error", "conn", s->id, "error", aw_strerror(rc),
           "#code", (long long)code, NULL);
    uv_read_stop((uv_stream_t *)&s->tcp);
    const char *reason = code == WS_CLOSE_TOO_BIG        ? "message too big"
                         : code == WS_CLOSE_INVALID_UTF8 ? "invalid utf-8"
                         : code == WS_CLOSE_INTERNAL     ? "internal error"
                                                         : "protocol error";
    session_close(s, code, reason);
    s->_close_when_flushed = true; /* the peer broke the protocol: do not wait */
}

/* ---- streamed payloads ----
 * A data frame whose payload has not all arrived when its header has streams
 * into where its message will live: a frame with room for our header in
 * front (a message in one frame), or _msg after the fragments before it. The
 * room grows with what arrives, from IN_ROOM_MIN or twice the first bytes,
 * four times at each step, so a header announcing a large frame pins no more
 * memory than its sender has sent. */
#define IN_ROOM_MIN ((size_t)256 << 10)

static uint8_t *in_dst(session_t *s)
{
    return s->_in ? s->_in->data + s->_in_hlen : (uint8_t *)s->_msg.data + s->_in_base;
}

/* Room for `need` more payload bytes (never past the frame's end). */
static bool in_make_room(session_t *s, size_t need)
{
    size_t want = s->_in_off + need;
    if (want > s->_in_len)
        want = s->_in_len;
    if (want <= s->_in_room)
        return true;
    size_t room = s->_in_room * 4 > want ? s->_in_room * 4 : want;
    if (room > s->_in_len)
        room = s->_in_len;
    if (s->_in) {
        frame_t *f = frame_grow(s->_in, s->_in_hlen + room, s->_in_hlen + s->_in_off);
        if (!f)
            return false;
        s->_in = f;
    } else if (aw_buf_reserve(&s->_msg, s->_in_base + room - s->_msg.len) != 0) {
        return false;
    }
    s->_in_room = room;
    return true;
}

/* Reads go straight to where a large payload streaming in will stay (no
 * copy), up to its end: buf set, true. */
#define DIRECT_MIN 4096

bool session_ws_direct(session_t *s, uv_buf_t *buf)
{
    if (!s->_in_on || s->_in_len - s->_in_off < DIRECT_MIN || !in_make_room(s, DIRECT_MIN))
        return false;
    buf->base = (char *)in_dst(s) + s->_in_off;
    buf->len = s->_in_room - s->_in_off;
    return true;
}

/* WS_PAYLOAD: a frame of fr->len payload bytes starts; `avail` of them are
 * at hand. */
static bool in_start(session_t *s, const ws_frame_t *fr, size_t avail)
{
    size_t room = avail * 2 > IN_ROOM_MIN ? avail * 2 : IN_ROOM_MIN;
    if (room > fr->len)
        room = fr->len;
    s->_in_on = true;
    s->_in_len = fr->len;
    s->_in_off = 0;
    s->_in_room = 0;
    if (fr->fin && fr->opcode != WS_OP_CONT) {
        uint8_t head[WS_MAX_HEADER];
        s->_in_hlen = ws_frame_header(head, fr->opcode, true, fr->len);
        s->_in = frame_alloc(s->_in_hlen + room);
        if (!s->_in)
            return false;
    } else {
        s->_in_base = s->_msg.len;
        if (aw_buf_reserve(&s->_msg, room) != 0)
            return false;
    }
    s->_in_room = room;
    return true;
}

/* The next n payload bytes, at src (which is where they belong already when
 * the read went there directly). */
static void in_feed(session_t *s, const uint8_t *src, size_t n)
{
    if (!in_make_room(s, n)) {
        ws_error(s, WS_CLOSE_INTERNAL, AW_ENOMEM);
        return;
    }
    uint8_t *dst = in_dst(s) + s->_in_off;
    ws_frame_t fr;
    uint16_t code;
    int rc = ws_payload(&s->_ws, dst, src, n, &fr, &code);
    s->_in_off += n;
    if (rc == AW_EAGAIN)
        return;
    s->_in_on = false;
    if (rc != AW_OK) {
        ws_error(s, code, rc);
        return;
    }
    if (s->_in) {
        frame_t *own = s->_in;
        s->_in = NULL;
        fr.payload = own->data + s->_in_hlen;
        on_frame(s, &fr, own, false);
        frame_unref(own);
    } else {
        s->_msg.len = s->_in_base + s->_in_len;
        on_frame(s, &fr, NULL, true);
    }
}

static bool ws_reading(const session_t *s)
{
    return (s->state == SESSION_OPEN || s->state == SESSION_CLOSING) && !s->_ws_broken;
}

/* One ws_parse on buf[0..len): handles a whole frame or starts a streamed
 * one. Returns the bytes it used, 0 when the frame is incomplete, or SIZE_MAX
 * after an error (handled). */
static size_t ws_step(session_t *s, uint8_t *buf, size_t len, size_t streamable)
{
    ws_frame_t fr;
    size_t used;
    uint16_t code;
    int rc = ws_parse(&s->_ws, buf, len, &fr, &used, &code);
    if (rc == AW_EAGAIN)
        return 0;
    if (rc == WS_PAYLOAD) {
        if (!in_start(s, &fr, streamable)) {
            ws_error(s, WS_CLOSE_INTERNAL, AW_ENOMEM);
            return SIZE_MAX;
        }
        return used;
    }
    if (rc != AW_OK) {
        ws_error(s, code, rc);
        return SIZE_MAX;
    }
    on_frame(s, &fr, NULL, false);
    return used;
}

/* Bytes of the WebSocket stream. Whole frames are handled where they are
 * (the loop's read buffer); only a partial header or control frame (at most
 * WS_MAX_HEADER + 125 bytes) waits in _rbuf for the next read. */
#define RBUF_TOPUP 256

void session_ws_input(session_t *s, const char *data, size_t len)
{
    uint8_t *p = (uint8_t *)data;
    while (len && ws_reading(s)) {
        if (s->_in_on) {
            size_t n = s->_in_len - s->_in_off < len ? s->_in_len - s->_in_off : len;
            in_feed(s, p, n);
            p += n;
            len -= n;
            continue;
        }
        aw_buf_t *r = &s->_rbuf;
        if (r->len) { /* a partial header or control frame: top it up */
            size_t old = r->len, k = len < RBUF_TOPUP ? len : RBUF_TOPUP;
            if (aw_buf_append((const char *)p, k, r) != 0) {
                session_abort(s, "out of memory");
                return;
            }
            size_t used = ws_step(s, (uint8_t *)r->data, r->len, len - k);
            if (used == SIZE_MAX)
                return;
            if (used == 0) {
                p += k;
                len -= k;
                continue;
            }
            r->len = 0; /* the rest of the top-up is still at p */
            p += used - old;
            len -= used - old;
            continue;
        }
        size_t used = ws_step(s, p, len, len);
        if (used == SIZE_MAX)
            return;
        if (used == 0) {
            if (aw_buf_append((const char *)p, len, r) != 0)
                session_abort(s, "out of memory");
            return;
        }
        p += used;
        len -= used;
    }
    if (s->_rbuf.len == 0 && s->_rbuf.cap)
        aw_buf_free(&s->_rbuf);
}
