/* deflate.h -- permessage-deflate (RFC 7692): offer negotiation, the
 * compression of shared event frames, and bounded inflation of client
 * messages. Uses zlib; no sockets.
 *
 * agentwire always answers with server_no_context_takeover, so a compressed
 * event does not depend on the connection: it is compressed once per event
 * (and per server window size) and shared by every connection, like the plain
 * frame. Inflation keeps the client's context unless the client agreed to
 * client_no_context_takeover. */
#ifndef AW_DEFLATE_H
#define AW_DEFLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#include "frame.h"

typedef struct deflate_params {
    uint8_t server_window_bits; /* 9..15: our compressor's window */
    uint8_t client_window_bits; /* 9..15: the client's window (our inflater) */
    bool client_no_context_takeover;
} deflate_params_t;

/* Picks the first acceptable permessage-deflate offer in a
 * Sec-WebSocket-Extensions value, fills *out and writes the response header
 * value (NUL-terminated) to resp. client_max_bits caps the client's window
 * when it allows us to (client_max_window_bits offered). Returns true when an
 * offer was accepted; false when none is acceptable (no extension then). */
bool deflate_negotiate(const char *offers, uint8_t client_max_bits, deflate_params_t *out,
                       char *resp, size_t resplen);

/* A compressor for shared frames: one zlib stream per window size, reset
 * for every message (no context takeover). */
typedef struct deflater {
    z_stream *_streams[16]; /* by window bits, made on first use */
    size_t min_bytes;       /* payloads smaller than this are not compressed */
} deflater_t;

void deflater_init(deflater_t *d, size_t min_bytes);
void deflater_dispose(deflater_t *d);

/* The compressed variant of the WebSocket data frame f for window bits wb,
 * made once and cached on f (f keeps a reference). Returns f itself when f
 * is below min_bytes, is not a data frame, or does not shrink. The result is
 * borrowed: valid as long as f. */
frame_t *deflater_frame(deflater_t *d, frame_t *f, uint8_t wb);

/* Inflates one compressed message (payload without the 4 trailing bytes the
 * sender removed) into a malloc'd buffer. *zs is created on first use (with
 * the client's window bits) and kept for context takeover, or reset when
 * reset_after is true. 0, AW_ETOOBIG (more than limit bytes: a bomb or just
 * too big), AW_EPROTO (not valid deflate data), AW_ENOMEM. */
int deflate_inflate(z_stream **zs, uint8_t window_bits, bool reset_after, const uint8_t *in,
                    size_t n, size_t limit, uint8_t **out, size_t *outlen);

/* Frees an inflate stream made by deflate_inflate (NULL is fine). */
void deflate_inflate_free(z_stream *zs);

#endif
