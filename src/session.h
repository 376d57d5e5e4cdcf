/* session.h -- one TCP connection's life: the HTTP phase (API requests and
 * the upgrade), then the WebSocket phase (an authenticated user's messages
 * in, the hub's frames out), then the close.
 *
 * Outgoing bytes of every kind (HTTP responses, events, control frames) go
 * through one queue of shared frames and leave in one vectored write per loop
 * turn. A session is freed only from its handle's close callback, so code
 * that holds a pointer during a loop turn (hub fan-out) stays safe after a
 * close: closing marks, the close callback unlinks and frees. */
#ifndef AW_SESSION_H
#define AW_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "aw.h"
#include "deflate.h"
#include "frame.h"
#include "http.h"
#include "hub.h"
#include "jwt.h"
#include "tls.h"
#include "ws.h"

struct server;
struct server_loop;

enum session_state {
    SESSION_HTTP,    /* reading HTTP requests */
    SESSION_OPEN,    /* WebSocket open: receives events */
    SESSION_CLOSING, /* close frame queued or sent; waiting for the peer */
    SESSION_GONE,    /* handle closing; freed by the close callback */
};

typedef struct session {
    uv_tcp_t tcp; /* private; tcp.data is the session */
    struct server *srv;
    struct server_loop *lp; /* the loop that owns the socket */
    /* read-only */
    enum session_state state;
    char id[24];      /* connection id, "c_..." */
    char ip[48];      /* peer address without port */
    char remote[64];  /* "ip:port" */
    hub_user_t *user; /* set once attached to the hub */
    int64_t connected_ms;
    int64_t token_exp_ms;     /* token expiry plus leeway, 0: none */
    uint64_t replay_next;     /* next seq to replay from history; 0: live */
    bool _pump_later;         /* a shard holder asked for the replay pump: the flush runs it */
    bool echo;                /* the --echo-path endpoint: messages come back, no events */
    bool syncing;             /* cluster mode: waits for its stream; gets no events yet */
    bool deflate;             /* permessage-deflate negotiated */
    deflate_params_t zparams; /* its parameters */

    /* private: lists */
    struct session *_next, *_prev;           /* the server's sessions */
    struct session *_user_next, *_user_prev; /* the hub's user list */
    struct session *_flush_next, *_flush_prev;
    bool _flush_queued;
    struct session *_close_next; /* the loop's list of closes asked by others */
    bool _close_queued;
    uint16_t _close_req_code; /* the close asked for */
    const char *_close_req_reason;

    /* private: input */
    http_reader_t *_http; /* only while in the HTTP phase */
    ws_parser_t _ws;
    aw_buf_t _rbuf;  /* unparsed bytes of a partial header or control frame (small) */
    bool _ws_broken; /* the peer broke the protocol: its further bytes are dropped */
    bool _in_on;     /* a data frame's payload is streaming in (ws_parse WS_PAYLOAD) */
    frame_t *_in;    /* its message when it is one whole frame: room for our frame
                        header (_in_hlen bytes), then the payload, so an echo sends it
                        as it is; NULL: a fragment, which goes to _msg at _in_base */
    size_t _in_hlen, _in_base;
    size_t _in_len, _in_off, _in_room; /* payload bytes announced, arrived, with room */
    tls_conn_t *_tls;                  /* TLS state when --tls-cert is set, else NULL */
    frame_t *_tls_out;                 /* ciphertext of the batch being written */
    z_stream *_inflate;                /* the client's compression context, made on first use */
    aw_buf_t _msg;                     /* fragments of a message being assembled */
    uint8_t _msg_op;
    int64_t _last_rx_ms;
    int64_t _deadline_ms; /* HTTP: request deadline; CLOSING: hard close */
    int64_t _next_ping_ms;
    double _rate_tokens; /* message budget left (token bucket) */
    int64_t _rate_ms;    /* loop time of the last refill, 0: never */
    uint32_t _bad_msgs;  /* unreadable messages in the current window */
    int64_t _bad_window_ms;

    /* private: output queue (ring of frame references) */
    frame_t **_q;
    uint32_t _qhead, _qlen, _qcap;
    size_t _qbytes;     /* bytes queued, in flight included */
    uint32_t _inflight; /* frames at the head being written */
    size_t _inflight_bytes;
    uint64_t _written;        /* bytes whose write completed */
    uint64_t _tick_written;   /* _written at the last tick */
    size_t _tick_write_queue; /* libuv's unwritten bytes at the last tick */
    size_t _tick_outq;        /* the kernel's unacknowledged bytes then, SIZE_MAX: unknown */
    uint64_t _last_seq;       /* the newest event queued (replays included) */
    uv_write_t _wreq;
    json_t *_replay_ack; /* sent when the replay catches up */
    bool _keep_alive;    /* the current HTTP request allows another */
    /* HTTP phase */
    uint32_t _requests;      /* requests read on this connection */
    bool _http_paused;       /* reading stopped: responses wait for the peer */
    bool _http_partial;      /* the reader holds part of a request */
    bool _linger;            /* after the last response: shut down, read and drop */
    bool _lingering;         /* shut down; input is dropped until EOF or the deadline */
    bool _ip_counted;        /* counted in the server's per-address table */
    bool _refused_ip;        /* over the per-address limit: refused at its first bytes */
    int64_t _progress_ms;    /* last tick at which the peer took bytes */
    uint64_t _body_reserved; /* bytes of --max-request-bytes-in-flight held */
    bool _close_when_flushed;
    bool _close_received;
    struct session_wait *_wait; /* replies this session waits for (cluster mode) */
    bool _http_held;            /* the current request's response comes later */
    bool _held_keep_alive;      /* that request allowed another */
    bool _broker_user;          /* holds its user's stream (broker_acquire) */
    bool _http_in_handler;      /* a request's handler runs (answers may come within it) */
    uint16_t _close_code;       /* code we sent or will send */
} session_t;

/* A reply that arrives later (cluster mode: Redis answers on a later loop
 * turn): it names its session, or NULL once that session is gone. Callers
 * embed it first in their own struct of `size` bytes. */
typedef struct session_wait {
    struct session *s;
    struct session_wait *_next, *_prev; /* the session's waits */
} session_wait_t;

session_wait_t *session_wait_new(session_t *s, size_t size);
void session_wait_free(session_wait_t *w);

/* HTTP: the current request is answered later; the requests behind it wait
 * (unread) until session_http_release, called after the response. */
session_wait_t *session_http_hold(session_t *s, size_t size);
void session_http_release(session_wait_t *w);

/* Accepts a connection from the loop's listener into a new session. */
int session_accept(struct server_loop *lp, uv_stream_t *listener);

/* Queues a frame that is not an event (replies, control frames, the
 * upgrade response); takes its own reference. A queue past its limit turns
 * the session into a 4003 close.
 * Returns 0, or AW_ECLOSED when the session takes no more frames. */
int session_send(session_t *s, frame_t *f);

/* The frame session s sends for shared event frame f: its compressed
 * variant when deflate was negotiated (made once per event, see deflate.h).
 * Under the lock or a shard lock: each loop's thread has its own deflater. */
frame_t *session_wire_frame(session_t *s, frame_t *f);

/* Delivers event frame f (number seq of the session's user, already the
 * session's wire frame) on the session's own loop: queued when the
 * connection keeps up, otherwise read from history as the queue drains
 * (catch-up); an event queued already (seq not newer) is skipped. Only the
 * hub and the loop's inbox call this. 0 or AW_ECLOSED. */
int session_deliver(session_t *s, frame_t *f, uint64_t seq);

/* Queues a JSON object as a text frame on this session only (replies such as
 * ack and error; never events, which go through the hub). */
int session_send_json(session_t *s, const json_t *obj);

/* Starts the close handshake with code and reason (WebSocket), or closes
 * after pending output (HTTP). Idempotent. */
void session_close(session_t *s, uint16_t code, const char *reason);

/* Closes the socket now without a close frame (dead peers, I/O errors). */
void session_abort(session_t *s, const char *reason);

/* Replays the user's history from seq `from` on, then goes live; frames are
 * queued as the queue drains, never past half its limit. ack (may be NULL;
 * the session takes the reference) is sent once the replay caught up. */
void session_replay(session_t *s, uint64_t from, json_t *ack);

/* Periodic housekeeping: deadlines, heartbeats, token expiry. */
void session_tick(session_t *s, int64_t now_ms);

/* Writes queued frames: one vectored write per call (server's flush). */
void session_flush(session_t *s);

/* HTTP responses (api.c and the upgrade use them). body may be NULL. */
void session_respond(session_t *s, int status, const char *content_type, const char *body,
                     size_t len, const char *extra_headers);
void session_respond_json(session_t *s, int status, const json_t *body);
void session_respond_error(session_t *s, int status, const char *code, const char *message);

#endif
