/* session_int.h -- what session.c (the connection, its queue and its
 * writes), session_ws.c (its WebSocket input) and session_http.c (its HTTP
 * phase) use of each other.
 * Not for other modules: they use session.h. */
#ifndef AW_SESSION_INT_H
#define AW_SESSION_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "session.h"

/* session.c */
int session_enqueue(session_t *s, frame_t *f);            /* queue a frame, flush at turn end */
size_t session_backlog(const session_t *s);               /* bytes owed the peer, not yet taken */
void session_abort_locked(session_t *s, const char *why); /* session_abort from the write path */
void session_read_start(session_t *s);
bool session_made_progress(session_t *s); /* did the peer take bytes since the last tick? */

/* session_ws.c */
void session_ws_input(session_t *s, const char *data, size_t len);
bool session_ws_direct(session_t *s, uv_buf_t *buf); /* read into a streamed payload? */

/* session_http.c */
void session_http_input(session_t *s, const char *data, size_t len);
void session_http_resume(session_t *s);    /* the peer took our responses: read on */
void session_http_linger(session_t *s);    /* responses written: shut down, drop input */
void session_http_refuse_ip(session_t *s); /* over --max-connections-per-ip: 429 */
void session_http_tick(session_t *s, int64_t now);
void session_http_dispose(session_t *s); /* from the close callback */

#endif
