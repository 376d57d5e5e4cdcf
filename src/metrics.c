/* metrics.c -- renders the counters of metrics.h in the Prometheus text
 * exposition format. Holds no state of its own. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "aw.h"

static const char *const refusal_names[] = {
#define M_NAME(name, text) text,
    METRICS_REFUSALS(M_NAME)};
static const char *const error_names[] = {METRICS_ERRORS(M_NAME)};
#undef M_NAME
static const uint16_t close_codes[] = {METRICS_CLOSE_CODES};

const char *metrics_refusal_name(enum metrics_refusal r)
{
    return refusal_names[r];
}

const char *metrics_error_name(enum metrics_error e)
{
    return error_names[e];
}

void metrics_count_close(metrics_t *m, uint16_t code)
{
    size_t i = 0;
    while (i < AW_ARRAY_LEN(close_codes) && close_codes[i] != code)
        i++;
    m->closes[i]++; /* i == AW_ARRAY_LEN(close_codes) is "other" */
}

static void head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(FILE *f, const char *name, const char *type, const char *help, long long v)
{
    head(f, name, type, help);
    fprintf(f, "%s %lld\n", name, v);
}

char *metrics_render(const metrics_t *m, const metrics_gauges_t *g, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f)
        return NULL;
    one(f, "agentwire_connections", "gauge", "Open WebSocket connections.",
        (long long)g->connections);
    one(f, "agentwire_users", "gauge", "Users with at least one open connection.",
        (long long)g->users);
    one(f, "agentwire_streams", "gauge", "Users whose stream (seq, epoch) is in memory.",
        (long long)g->streams);
    one(f, "agentwire_history_events", "gauge", "Events retained for resume.",
        (long long)g->history_events);
    one(f, "agentwire_history_bytes", "gauge",
        "Memory under --history-memory-bytes: retained events and the users' stream records.",
        (long long)g->history_bytes);
    one(f, "agentwire_history_evicted_total", "counter", "Retained events evicted.",
        (long long)g->history_evicted);
    one(f, "agentwire_streams_dropped_total", "counter",
        "Idle streams dropped to stay under --history-memory-bytes.",
        (long long)g->streams_dropped);
    one(f, "agentwire_tickets", "gauge", "Connection tickets issued and not used or expired.",
        (long long)g->tickets);
    one(f, "agentwire_idempotency_keys", "gauge", "Idempotency keys remembered.",
        (long long)g->idempotency_keys);
    one(f, "agentwire_request_body_bytes_in_flight", "gauge",
        "Request body bytes reserved by requests being received.", (long long)g->body_bytes);
    one(f, "agentwire_handshakes_total", "counter", "WebSocket upgrades accepted.",
        (long long)m->handshakes_total);
    head(f, "agentwire_handshake_refusals_total", "counter", "Upgrades refused, by reason.");
    for (size_t i = 0; i < REFUSAL_COUNT; i++)
        fprintf(f, "agentwire_handshake_refusals_total{reason=\"%s\"} %llu\n", refusal_names[i],
                (unsigned long long)m->refusals[i]);
    one(f, "agentwire_events_published_total", "counter", "Events accepted by the hub.",
        (long long)m->events_published);
    one(f, "agentwire_events_delivered_total", "counter", "Event frames queued to connections.",
        (long long)m->events_delivered);
    one(f, "agentwire_events_replayed_total", "counter", "History frames queued for resumes.",
        (long long)m->events_replayed);
    one(f, "agentwire_bytes_sent_total", "counter", "Bytes written to clients.",
        (long long)m->bytes_sent);
    one(f, "agentwire_bytes_received_total", "counter", "Bytes read from clients.",
        (long long)m->bytes_received);
    one(f, "agentwire_queue_bytes", "gauge", "Bytes waiting in outgoing queues.",
        (long long)m->queue_bytes);
    one(f, "agentwire_frame_cache_bytes", "gauge",
        "Bytes kept for reuse in the loops' frame caches (as of their last trim).",
        (long long)m->frame_cache_bytes);
    one(f, "agentwire_runs_started_total", "counter", "Agent runs started by users.",
        (long long)m->runs_started);
    head(f, "agentwire_runs_completed_total", "counter", "Runs ended, by final status.");
    static const char *const statuses[] = {"success", "error", "cancelled", "timeout"};
    for (size_t i = 0; i < 4; i++)
        fprintf(f, "agentwire_runs_completed_total{status=\"%s\"} %llu\n", statuses[i],
                (unsigned long long)m->runs_completed[i]);
    one(f, "agentwire_agent_lines_dropped_total", "counter",
        "Agent output lines that were not valid events.", (long long)m->agent_lines_dropped);
    one(f, "agentwire_http_requests_total", "counter", "HTTP requests read.",
        (long long)m->http_requests);
    one(f, "agentwire_connections_refused_at_accept_total", "counter",
        "TCP connections closed at accept: past --max-connections or the descriptor limit.",
        (long long)m->refused_tcp);
    head(f, "agentwire_errors_total", "counter", "Error replies sent, by code.");
    for (size_t i = 0; i < ERR_COUNT; i++)
        fprintf(f, "agentwire_errors_total{code=\"%s\"} %llu\n", error_names[i],
                (unsigned long long)m->errors[i]);
    head(f, "agentwire_closes_total", "counter", "Connections closed, by close code.");
    for (size_t i = 0; i <= AW_ARRAY_LEN(close_codes); i++) {
        if (i < AW_ARRAY_LEN(close_codes))
            fprintf(f, "agentwire_closes_total{code=\"%u\"} %llu\n", close_codes[i],
                    (unsigned long long)m->closes[i]);
        else
            fprintf(f, "agentwire_closes_total{code=\"other\"} %llu\n",
                    (unsigned long long)m->closes[i]);
    }
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}
