/* upgrade.h -- the WebSocket handshake of PROTOCOL section 1: checks in the
 * order of its table (400, 503, 403, 401, 429), then 101 and the session's
 * registration in the hub. A refused request never sees 101. */
#ifndef AW_UPGRADE_H
#define AW_UPGRADE_H

#include "http.h"
#include "session.h"

/* Answers an upgrade request: on success the session is SESSION_OPEN and has
 * queued connection_established; otherwise a refusal is queued and the
 * session closes once it is written. */
void upgrade_handle(session_t *s, const http_request_t *req);

/* True for the WebSocket endpoints: /ws, its alias /api/v1/websocket, and
 * the echo path when configured. */
struct server;
bool upgrade_is_websocket_path(const struct server *srv, const char *path);

#endif
