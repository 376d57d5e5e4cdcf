/* ws.h -- the RFC 6455 codec: frame parsing, frame headers, the handshake key.
 *
 * Pure: bytes in, frames or an error out. No sockets, no globals, no malloc.
 * The server parses client frames (which must be masked) and writes server
 * frames (never masked); ws_client_frame exists for tests and tools.
 *
 * Parsing model: the caller keeps unconsumed bytes in its own buffer and calls
 * ws_parse again with more. ws_parse either returns one whole frame (payload
 * unmasked in place, pointing into the caller's buffer), or AW_EAGAIN with
 * nothing consumed, or an error whose close code the caller sends. A frame
 * header that announces more than the message limit fails at once, before its
 * payload arrives, so the caller never buffers more than one allowed frame.
 *
 * Streaming (p->stream set): when a data frame's header is whole but its
 * payload is not, ws_parse consumes the header and returns WS_PAYLOAD; the
 * caller then passes the payload through ws_payload as it arrives, into a
 * buffer of its choice (in place, or copied out of a shared read buffer).
 * Each byte is unmasked and UTF-8-checked once, in the same pass, and never
 * looked at again, however many reads the frame arrives in. */
#ifndef AW_WS_H
#define AW_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "utf8.h"

enum ws_opcode {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA,
};

enum ws_close_code {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS = 1005, /* never sent on the wire */
    WS_CLOSE_INVALID_UTF8 = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
    WS_CLOSE_TRY_AGAIN = 1013, /* the user's stream is not reachable now */
    WS_CLOSE_TOKEN_EXPIRED = 4001,
    WS_CLOSE_DISCONNECTED = 4002,
    WS_CLOSE_SLOW_CONSUMER = 4003,
};

#define WS_MAX_HEADER          14 /* 2 + 8 extended length + 4 mask */
#define WS_MAX_CONTROL_PAYLOAD 125

typedef struct ws_parser {
    /* public, set before parsing */
    uint64_t max_message; /* largest whole message (sum of fragments), bytes */
    bool expect_masked;   /* true on the server: unmasked client frames fail */
    bool allow_rsv1;      /* permessage-deflate negotiated: RSV1 marks a compressed message */
    bool stream;          /* incomplete data payloads go through ws_payload (WS_PAYLOAD) */
    /* private */
    bool _in_message;       /* a fragmented text/binary message is open */
    uint8_t _msg_opcode;    /* WS_OP_TEXT or WS_OP_BINARY of the open message */
    uint64_t _msg_len;      /* bytes of the open message so far */
    utf8_state_t _utf8;     /* validation across fragments of a text message */
    bool _msg_compressed;   /* the open message had RSV1 on its first frame */
    size_t _pv_len;         /* bytes of the incomplete frame's payload checked so far */
    utf8_state_t _pv_state; /* UTF-8 state after them */
    bool _st_on;            /* a streamed payload is due (WS_PAYLOAD returned) */
    bool _st_fin, _st_rsv1, _st_masked;
    uint8_t _st_opcode;
    uint8_t _st_mask[4];
    uint64_t _st_len, _st_off; /* payload bytes announced, and passed so far */
} ws_parser_t;

#define WS_PAYLOAD 1 /* ws_parse: header consumed, stream the payload (see ws_payload) */

typedef struct ws_frame {
    uint8_t opcode;   /* enum ws_opcode; WS_OP_CONT for continuation frames */
    bool fin;         /* last frame of its message */
    bool rsv1;        /* RSV1 was set (first frame of a compressed message) */
    bool compressed;  /* data frame of a compressed message: its payload is deflate
                         data, and UTF-8 was not checked (the caller inflates, then
                         checks) */
    uint8_t *payload; /* unmasked, inside the caller's buffer; NULL when len 0 */
    size_t len;       /* payload bytes */
    /* for WS_OP_CLOSE: the peer's code (WS_CLOSE_NO_STATUS when the payload
     * is empty) and reason (validated UTF-8, points into payload) */
    uint16_t close_code;
    const char *close_reason;
    size_t close_reason_len;
} ws_frame_t;

/* Prepares a parser; zeroes its private state. */
void ws_parser_init(ws_parser_t *p, uint64_t max_message, bool expect_masked);

/* Parses one frame from buf[0..len).
 *  0            a frame in *out; *consumed bytes of buf belong to it. The
 *               payload was unmasked in place. Data frames were checked for
 *               fragmentation order, message size and (text) UTF-8 so far;
 *               control frames for size and FIN; close frames for a valid
 *               code and a UTF-8 reason.
 *  AW_EAGAIN    not a whole frame yet; *consumed is 0.
 *  WS_PAYLOAD   (p->stream only) a data frame's header is whole, its payload
 *               is not: *consumed is the header's length, *out has opcode,
 *               fin, rsv1, compressed and len (payload NULL). The next
 *               out->len bytes of the stream go through ws_payload; ws_parse
 *               refuses (AW_EINVAL) until they have.
 *  AW_EPROTO    protocol error (reserved bits, opcode, unmasked, control
 *               rules, fragmentation order, bad close payload): close 1002.
 *  AW_EUTF8     invalid UTF-8 in a text message or close reason: close 1007.
 *  AW_ETOOBIG   message larger than max_message: close 1009.
 * After an error the parser must not be used again.
 * *close_code (may be NULL) receives the close code that matches the result. */
int ws_parse(ws_parser_t *p, uint8_t *buf, size_t len, ws_frame_t *out, size_t *consumed,
             uint16_t *close_code);

/* Passes the next n bytes of a streamed payload (after WS_PAYLOAD) from src
 * to dst, unmasked; dst may equal src (in place) but must not otherwise
 * overlap it. Text is UTF-8-checked in the same pass.
 *  AW_EAGAIN    more payload is due.
 *  AW_OK        the frame is whole: *out as ws_parse would give it, except
 *               out->payload, which is NULL (the caller knows where it put
 *               the bytes).
 *  AW_EUTF8     invalid UTF-8 (close 1007); AW_EINVAL: no payload is due, or
 *               n is more than is due.
 * *close_code (may be NULL) as for ws_parse. */
int ws_payload(ws_parser_t *p, uint8_t *dst, const uint8_t *src, size_t n, ws_frame_t *out,
               uint16_t *close_code);

/* XORs src with the mask into dst (dst may equal src), starting at mask
 * offset `offset`. True when every byte written is ASCII (below 0x80). */
bool ws_mask_copy(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t mask[4],
                  size_t offset);

/* Writes an unmasked (server) frame header for a payload of len bytes.
 * Returns the header length (2, 4 or 10); out holds at least 10 bytes. */
size_t ws_frame_header(uint8_t *out, uint8_t opcode, bool fin, uint64_t len);

/* Writes a close payload (code in network order, then reason, truncated so the
 * payload stays within 125 bytes). Returns the payload length. out >= 125. */
size_t ws_close_payload(uint8_t *out, uint16_t code, const char *reason);

/* The close code that answers a codec result: 1002 for AW_EPROTO, 1007 for
 * AW_EUTF8, 1009 for AW_ETOOBIG, 0 for AW_OK/AW_EAGAIN, 1011 otherwise. */
uint16_t ws_close_code_for(int rc);

/* True for codes a peer may send in a close frame (RFC 6455 section 7.4). */
bool ws_close_code_valid(uint16_t code);

/* Writes a whole masked (client) frame: header, then payload XOR mask.
 * out holds at least WS_MAX_HEADER + len bytes. Returns bytes written. For
 * tests and tools. rsv is the three reserved bits (0 normally). */
size_t ws_client_frame(uint8_t *out, uint8_t opcode, bool fin, uint8_t rsv, const uint8_t mask[4],
                       const uint8_t *payload, size_t len);

/* XORs buf with the 4-byte mask, starting at mask offset `offset`. Works a
 * word at a time on the aligned middle. */
void ws_mask(uint8_t *buf, size_t len, const uint8_t mask[4], size_t offset);

/* Checks a Sec-WebSocket-Key (base64 of exactly 16 bytes) and writes the
 * Sec-WebSocket-Accept value (28 characters and a NUL) to out.
 * 0 or AW_EMALFORMED. */
int ws_accept_key(char out[29], const char *key, size_t key_len);

#endif
