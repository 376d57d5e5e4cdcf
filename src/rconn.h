/* rconn.h -- one connection to one Redis server, on the main loop.
 *
 * hiredis speaks the protocol (its async API over its libuv adapter); this
 * module owns what hiredis leaves to its user: the connect timeout, a bound
 * on every command (a command unanswered for --redis-timeout-ms fails and
 * the connection is made again), reconnects with backoff and jitter, and a
 * handshake (AUTH, then the owner's setup commands) before the connection
 * counts as ready. A command sent while the connection is not ready fails at
 * once: callers answer 503, they never wait on a dead server. */
#ifndef AW_RCONN_H
#define AW_RCONN_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

enum rconn_state { RCONN_DOWN, RCONN_CONNECTING, RCONN_HANDSHAKE, RCONN_READY };

struct rconn;

/* A command's answer: reply NULL when it failed (timeout, connection lost,
 * not ready). The reply belongs to hiredis. */
typedef void (*rconn_reply_fn)(struct rconn *c, redisReply *reply, void *arg);

typedef struct rconn {
    /* read-only */
    enum rconn_state state;
    char host[256];
    int port;
    char error[160];     /* why it is not ready, "" when it is */
    uint64_t reconnects; /* connections made after the first */
    uint64_t errors;     /* commands that failed or timed out */
    uint64_t rtt_us_sum; /* round trips of answered commands */
    uint64_t rtt_count;
    uint64_t rtt_us_max; /* since the last read of it (metrics) */
    /* set by the owner before rconn_start */
    void *owner;
    bool subscriber; /* pub/sub connection: messages go to on_message */
    /* the connection is up and authenticated: send setup commands, then call
     * rconn_set_ready (or rconn_fail) */
    void (*on_connected)(struct rconn *c);
    /* ready -> not ready */
    void (*on_down)(struct rconn *c);
    /* a pub/sub message (subscriber connections) */
    void (*on_message)(struct rconn *c, const char *channel, size_t chlen, const char *msg,
                       size_t len);
    /* a SUBSCRIBE took effect: messages of channel arrive from here on */
    void (*on_subscribed)(struct rconn *c, const char *channel, size_t chlen);
    /* private */
    uv_loop_t *_loop;
    char *_password;
    int64_t _timeout_ms;
    redisAsyncContext *_ac;
    uv_timer_t _timer;
    int64_t _backoff_ms;
    int64_t _connect_deadline;
    struct rconn_cmd *_head, *_tail; /* commands in flight, oldest first */
    bool _closing;
    bool _ever_ready;
} rconn_t;

/* Parses redis://[:PASSWORD@]HOST:PORT (or HOST:PORT). 0 or AW_EINVAL with
 * a reason in err. */
int rconn_parse_url(const char *url, char *host, size_t hostlen, int *port, char **password,
                    char *err, size_t errlen);

/* Sets up c (owner fields already set) and starts connecting. */
int rconn_start(rconn_t *c, uv_loop_t *loop, const char *host, int port, const char *password,
                int64_t timeout_ms);

/* Closes the connection for good; pending commands fail. The timer handle is
 * closed with uv_close: the caller keeps c alive until the loop ran. */
void rconn_stop(rconn_t *c);

/* The handshake is over: the connection is usable. */
void rconn_set_ready(rconn_t *c);

/* Drops the connection (pending commands fail) and connects again after the
 * backoff; why goes to the log and to c->error. */
void rconn_fail(rconn_t *c, const char *why);

/* Sends a command (arguments with their lengths). Handshake commands pass
 * during RCONN_HANDSHAKE; others need RCONN_READY. 0, or AW_EUNAVAIL (fn is
 * not called). */
int rconn_command(rconn_t *c, rconn_reply_fn fn, void *arg, int argc, const char **argv,
                  const size_t *lens);
int rconn_handshake_command(rconn_t *c, rconn_reply_fn fn, void *arg, int argc, const char **argv,
                            const size_t *lens);

/* Subscriber connections: SUBSCRIBE/UNSUBSCRIBE one channel. */
int rconn_subscribe(rconn_t *c, const char *channel, bool on);

/* Is a command waiting past the timeout? (checked by the timer) */
bool rconn_ready(const rconn_t *c);

#endif
