/* client.h -- messages a connected user sends (PROTOCOL section 4): parsing,
 * dispatch by type, replies (ack, pong, error) and the bad-message limit.
 * Replies go to the one session; events never go through here. */
#ifndef AW_CLIENT_H
#define AW_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "message.h"
#include "session.h"

#define CLIENT_BAD_WINDOW_MS  10000
#define CLIENT_BAD_RATE_LIMIT 10 /* past this many bad messages: rate_limited */
#define CLIENT_BAD_CLOSE      20 /* past this many: close 1008 */

/* Handles one whole message (opcode WS_OP_TEXT or WS_OP_BINARY). own: the
 * frame that holds data with exactly room for a server frame header before
 * it (an echo sends it as it is), or NULL. */
void client_message(session_t *s, uint8_t opcode, const uint8_t *data, size_t len, frame_t *own);

/* Takes one message or ping from the connection's rate budget
 * (--max-messages-per-second, bursts of twice that). False when it is spent:
 * the message is refused (rate_limited for messages, nothing for pings) and
 * counts as a bad message, so a flood ends in close 1008. */
bool client_within_rate(session_t *s, bool is_ping);

#endif
