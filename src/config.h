/* config.h -- agentwire's settings: every flag, its AGENTWIRE_* environment
 * equivalent, its default and its help text live in one table in config.c, so
 * --help always tells the truth. Parsing never exits; main.c decides. */
#ifndef AW_CONFIG_H
#define AW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "jwt.h"
#include "log.h"

typedef struct config {
    char *listen; /* "HOST:PORT" as given */
    char listen_host[64];
    int listen_port; /* 0 picks a free port (logged at start) */

    char *jwt_secret; /* HS256 secret (owned) */
    char *jwt_secret_file;
    char *jwt_public_key_file;
    char *jwt_alg_name; /* NULL: HS256 with a secret; required with a public key */
    jwt_alg_t jwt_alg;
    char *jwt_issuer, *jwt_audience;
    char *jwks_url, *jwks_file, *jwks_ca_file; /* keys from an identity provider */
    int64_t jwks_refresh_ms, jwks_min_interval_ms, jwks_timeout_ms;
    int64_t jwt_leeway_s;
    bool jwt_allow_high_s;

    char *api_key; /* owned */
    char *api_key_file;
    char *allowed_origins; /* comma-separated list, NULL: all allowed */

    int64_t max_message_bytes;
    int64_t max_connections_per_user;
    int64_t max_connections_per_ip;  /* 0: no limit */
    int64_t max_connections;         /* WebSockets in total, 0: no limit */
    int64_t threads;                 /* event loops, 0: one per core */
    int64_t max_messages_per_second; /* per connection, 0: no limit */
    int64_t queue_limit_bytes;
    int64_t frame_cache_bytes;
    int64_t heartbeat_interval_ms;
    int64_t handshake_timeout_ms;
    int64_t drain_timeout_ms;
    int64_t ticket_ttl_ms;
    int64_t idempotency_ttl_ms;
    int64_t max_request_bytes;
    int64_t max_request_bytes_in_flight; /* bodies being received, all connections */
    int64_t max_header_bytes;
    int64_t keepalive_requests; /* requests per HTTP connection */
    int64_t keepalive_max_ms;   /* time a connection may stay in the HTTP phase */
    int64_t max_tickets_per_user, max_tickets;
    int64_t idempotency_max_keys;
    char *metrics_public_name; /* on, off, auto */
    bool metrics_public;       /* /metrics without the API key */
    char *agent_env;           /* extra variables exec agents get, comma-separated names */
    int64_t log_rate_limit;    /* lines per second per kind, 0: no limit */
    bool dev;                  /* development mode allowed on any address */
    char *echo_path;           /* echo WebSocket endpoint for conformance tools, NULL: off */
    char *agent;               /* backend spec: builtin:demo | exec:CMD | http:URL */
    char *agent_name;          /* agent_name of runs; NULL: the backend's name */
    int64_t run_timeout_ms;
    int64_t run_idle_timeout_ms;
    int64_t run_orphan_grace_ms;
    int64_t max_runs_per_user;
    int64_t max_events_per_run;
    int64_t agent_kill_grace_ms;
    int64_t agent_max_line_bytes;
    char *tls_cert, *tls_key;  /* PEM files; both or neither */
    char *deflate_name;        /* "on" or "off" */
    bool deflate;              /* permessage-deflate offered to clients */
    int64_t deflate_min_bytes; /* events smaller than this go uncompressed */
    int64_t deflate_client_window_bits;
    int64_t send_buffer_bytes; /* SO_SNDBUF of client sockets, 0: kernel default */
    int64_t history_size;
    int64_t history_ttl_ms;
    int64_t history_memory_bytes;

    char *redis;              /* cluster mode: comma-separated shard URLs, NULL: one node */
    int64_t redis_timeout_ms; /* bound of every Redis command */
    int64_t node_ttl_ms;      /* life of a silent node's presence and run leases */
    char *node_id;            /* this node's name in the cluster, NULL: made up */

    char *data_dir;         /* durable streams (store.h), NULL: memory only */
    char *fsync_name;       /* off, batch, always */
    int fsync;              /* enum store_sync */
    int64_t data_max_bytes; /* event text kept on disk, all users */

    char *log_format_name, *log_level_name;
    enum log_format log_format;
    enum log_level log_level;

    bool dev_mode; /* no secret, key or API key given: made up at start */
    bool show_help, show_version;
} config_t;

/* Fills cfg from defaults, then the environment, then argv. On a bad value
 * returns AW_EINVAL with a one-line reason in err. */
int config_parse(config_t *cfg, int argc, char **argv, char *err, size_t errlen);

/* Reads secret files, checks combinations, decides development mode. */
int config_finish(config_t *cfg, char *err, size_t errlen);

void config_usage(FILE *out);
void config_dispose(config_t *cfg);

/* True when the --listen host is a loopback address (127.0.0.0/8, ::1). */
bool config_listen_is_loopback(const config_t *cfg);

/* True when origin is allowed by cfg->allowed_origins. */
bool config_origin_allowed(const config_t *cfg, const char *origin);

#endif
