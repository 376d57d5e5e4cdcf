/* metrics.h -- the server's counters and their Prometheus text rendering.
 * Modules bump fields directly (single-threaded loop); metrics.c only
 * renders. Gauges that other modules already know (connections, users) are
 * passed in at render time instead of being kept twice. */
#ifndef AW_METRICS_H
#define AW_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_REFUSALS(X)                                                                        \
    X(BAD_HANDSHAKE, "bad_handshake")                                                              \
    X(DRAINING, "draining")                                                                        \
    X(FORBIDDEN_ORIGIN, "forbidden_origin")                                                        \
    X(UNAUTHORIZED, "unauthorized")                                                                \
    X(TOO_MANY_CONNECTIONS, "too_many_connections")                                                \
    X(UNAVAILABLE, "unavailable")

#define METRICS_ERRORS(X)                                                                          \
    X(INVALID_JSON, "invalid_json")                                                                \
    X(UNKNOWN_TYPE, "unknown_type")                                                                \
    X(INVALID_MESSAGE, "invalid_message")                                                          \
    X(INVALID_TOKEN, "invalid_token")                                                              \
    X(TOO_MANY_RUNS, "too_many_runs")                                                              \
    X(RATE_LIMITED, "rate_limited")                                                                \
    X(NOT_FOUND, "not_found")                                                                      \
    X(UNAUTHORIZED, "unauthorized")                                                                \
    X(TOO_LARGE, "too_large")                                                                      \
    X(INVALID_EVENT, "invalid_event")                                                              \
    X(RUN_ORDER, "run_order")                                                                      \
    X(UNAVAILABLE, "unavailable")                                                                  \
    X(METHOD_NOT_ALLOWED, "method_not_allowed")                                                    \
    X(BAD_REQUEST, "bad_request")                                                                  \
    X(TOO_MANY_TICKETS, "too_many_tickets")

#define M_REFUSAL_ENUM(name, text) REFUSAL_##name,
#define M_ERROR_ENUM(name, text)   ERR_##name,
enum metrics_refusal { METRICS_REFUSALS(M_REFUSAL_ENUM) REFUSAL_COUNT };
enum metrics_error { METRICS_ERRORS(M_ERROR_ENUM) ERR_COUNT };
#undef M_REFUSAL_ENUM
#undef M_ERROR_ENUM

/* Close codes counted individually; others land in "other". */
#define METRICS_CLOSE_CODES 1000, 1001, 1002, 1007, 1008, 1009, 1011, 4001, 4002, 4003
#define METRICS_NCLOSE      11

typedef struct metrics {
    uint64_t handshakes_total; /* upgrades answered with 101 */
    uint64_t refusals[REFUSAL_COUNT];
    uint64_t errors[ERR_COUNT];      /* error replies sent, by code */
    uint64_t closes[METRICS_NCLOSE]; /* connections closed, by close code */
    uint64_t events_published;       /* accepted by the hub */
    uint64_t events_delivered;       /* enqueued to a connection */
    uint64_t events_replayed;        /* history frames queued for resumes */
    uint64_t bytes_sent, bytes_received;
    uint64_t http_requests;
    uint64_t refused_tcp;  /* connections closed at accept: over the limit or the descriptors */
    uint64_t runs_started; /* agent runs started by users */
    uint64_t runs_completed[4];   /* by final status: success, error, cancelled, timeout */
    uint64_t agent_lines_dropped; /* agent lines that were not valid events */
    int64_t queue_bytes;          /* gauge: bytes waiting in all queues */
    int64_t frame_cache_bytes;    /* gauge: bytes kept in the loops' frame caches */
} metrics_t;

const char *metrics_refusal_name(enum metrics_refusal r);
const char *metrics_error_name(enum metrics_error e);
void metrics_count_close(metrics_t *m, uint16_t code);

/* Values other modules own, read at render time. */
typedef struct metrics_gauges {
    size_t connections, users; /* open WebSockets; users holding one */
    size_t streams;            /* users with a stream (seq, epoch) in memory */
    size_t history_events, history_bytes;
    uint64_t history_evicted;
    uint64_t streams_dropped;
    size_t tickets, idempotency_keys;
    uint64_t body_bytes;
} metrics_gauges_t;

/* Renders Prometheus text into a malloc'd string the caller frees. */
char *metrics_render(const metrics_t *m, const metrics_gauges_t *g, size_t *len);

#endif
