/* config.c -- the option table and its parser. Every setting has exactly one
 * row here: flag, environment variable, default, help. Nothing else in the
 * server reads argv or getenv. */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"

enum opt_kind { OPT_STR, OPT_NUM, OPT_FLAG };

typedef struct option {
    const char *flag; /* without the leading dashes */
    const char *env;  /* AGENTWIRE_* */
    enum opt_kind kind;
    size_t offset;    /* of a char * (OPT_STR), int64_t (OPT_NUM) or bool */
    const char *def;  /* default as text, NULL: unset */
    int64_t min, max; /* OPT_NUM range */
    const char *metavar;
    const char *help;
} option_t;

#define STR(f, e, field, d, mv, h)                                                                 \
    {                                                                                              \
        f, e, OPT_STR, offsetof(config_t, field), d, 0, 0, mv, h                                   \
    }
#define NUM(f, e, field, d, lo, hi, mv, h)                                                         \
    {                                                                                              \
        f, e, OPT_NUM, offsetof(config_t, field), d, lo, hi, mv, h                                 \
    }

static const option_t options[] = {
    STR("listen", "AGENTWIRE_LISTEN", listen, "127.0.0.1:8080", "HOST:PORT",
        "address to listen on (port 0 picks a free one)"),
    NUM("threads", "AGENTWIRE_THREADS", threads, "0", 0, 64, "N",
        "event loops, one thread each, sharing the port; 0: one per core (--redis and --data-dir: "
        "always one)"),
    STR("jwt-secret", "AGENTWIRE_JWT_SECRET", jwt_secret, NULL, "SECRET",
        "HS256 secret that user tokens are signed with"),
    STR("jwt-secret-file", "AGENTWIRE_JWT_SECRET_FILE", jwt_secret_file, NULL, "FILE",
        "read the HS256 secret from FILE (trailing newline dropped)"),
    STR("jwt-public-key", "AGENTWIRE_JWT_PUBLIC_KEY", jwt_public_key_file, NULL, "FILE",
        "PEM public key for RS256, ES256 or EdDSA tokens (needs --jwt-alg)"),
    STR("jwt-alg", "AGENTWIRE_JWT_ALG", jwt_alg_name, NULL, "ALG",
        "pinned token algorithm: HS256 (default with a secret), RS256, ES256, EdDSA"),
    STR("jwks-url", "AGENTWIRE_JWKS_URL", jwks_url, NULL, "URL",
        "HTTPS URL of the identity provider's key set (JWKS): RS256, ES256 and EdDSA keys chosen "
        "by the token's kid, refreshed while running"),
    STR("jwks-file", "AGENTWIRE_JWKS_FILE", jwks_file, NULL, "FILE",
        "a key set (JWKS) in a file, read again when it changes"),
    STR("jwks-ca-file", "AGENTWIRE_JWKS_CA_FILE", jwks_ca_file, NULL, "FILE",
        "PEM certificates to verify --jwks-url's server with, instead of the system's"),
    NUM("jwks-refresh-ms", "AGENTWIRE_JWKS_REFRESH_MS", jwks_refresh_ms, "600000", 1000, 86400000,
        "MS",
        "refresh period of the keys when the key set's response has no Cache-Control max-age"),
    NUM("jwks-min-interval-ms", "AGENTWIRE_JWKS_MIN_INTERVAL_MS", jwks_min_interval_ms, "30000",
        100, 3600000, "MS",
        "at most one refresh per this period, however many tokens name an unknown kid; also the "
        "shortest max-age taken"),
    NUM("jwks-timeout-ms", "AGENTWIRE_JWKS_TIMEOUT_MS", jwks_timeout_ms, "5000", 100, 60000, "MS",
        "a fetch of the key set taking longer fails (the last good keys stay)"),
    STR("jwt-issuer", "AGENTWIRE_JWT_ISSUER", jwt_issuer, NULL, "ISS",
        "required iss claim of user tokens"),
    STR("jwt-audience", "AGENTWIRE_JWT_AUDIENCE", jwt_audience, NULL, "AUD[,AUD...]",
        "required aud claim of user tokens: the token's aud must name one of these"),
    NUM("jwt-leeway-s", "AGENTWIRE_JWT_LEEWAY_S", jwt_leeway_s, "30", 0, 3600, "N",
        "clock tolerance for exp and nbf, seconds"),
    {"jwt-allow-high-s", "AGENTWIRE_JWT_ALLOW_HIGH_S", OPT_FLAG,
     offsetof(config_t, jwt_allow_high_s), NULL, 0, 0, NULL,
     "accept ES256 signatures with a high S value (both spellings of one token)"},
    STR("api-key", "AGENTWIRE_API_KEY", api_key, NULL, "KEY",
        "key that publishers send as 'Authorization: Bearer KEY'"),
    STR("api-key-file", "AGENTWIRE_API_KEY_FILE", api_key_file, NULL, "FILE",
        "read the API key from FILE (trailing newline dropped)"),
    STR("allowed-origins", "AGENTWIRE_ALLOWED_ORIGINS", allowed_origins, NULL, "LIST",
        "comma-separated Origin values allowed to connect (unset: any)"),
    NUM("max-message-bytes", "AGENTWIRE_MAX_MESSAGE_BYTES", max_message_bytes, "65536", 125,
        1 << 30, "N", "largest WebSocket message a client may send (bigger: close 1009)"),
    NUM("max-connections-per-user", "AGENTWIRE_MAX_CONNECTIONS_PER_USER", max_connections_per_user,
        "10", 1, 1000000, "N", "connections one user may hold (more: 429)"),
    NUM("max-connections-per-ip", "AGENTWIRE_MAX_CONNECTIONS_PER_IP", max_connections_per_ip, "0",
        0, 10000000, "N",
        "TCP connections one address may hold, WebSocket or not (more: 429); 0: seven eighths "
        "of the connection capacity"),
    NUM("max-connections", "AGENTWIRE_MAX_CONNECTIONS", max_connections, "0", 0, 10000000, "N",
        "WebSockets in total, 0 for no limit but descriptors (more: 429; raw TCP past it + 64: "
        "closed)"),
    NUM("max-messages-per-second", "AGENTWIRE_MAX_MESSAGES_PER_SECOND", max_messages_per_second,
        "100", 0, 10000000, "N",
        "messages and pings one connection may send per second, bursts of twice that (0: no "
        "limit)"),
    NUM("queue-limit-bytes", "AGENTWIRE_QUEUE_LIMIT_BYTES", queue_limit_bytes, "1048576", 1024,
        (int64_t)1 << 34, "N", "outgoing bytes queued per connection before close 4003"),
    NUM("frame-cache-bytes", "AGENTWIRE_FRAME_CACHE_BYTES", frame_cache_bytes, "67108864", 0,
        (int64_t)1 << 34, "N",
        "freed frames of 2 KiB and more that each event loop keeps for reuse: this much, or twice "
        "what its queues held in the last second if more; unused for a second: freed; 0: no "
        "reuse"),
    NUM("heartbeat-interval-ms", "AGENTWIRE_HEARTBEAT_INTERVAL_MS", heartbeat_interval_ms, "25000",
        50, 3600000, "MS", "ping interval; silent for two intervals: closed"),
    NUM("handshake-timeout-ms", "AGENTWIRE_HANDSHAKE_TIMEOUT_MS", handshake_timeout_ms, "5000", 50,
        600000, "MS",
        "time allowed for a request to arrive, idle keep-alive time, and how long a peer may "
        "take no response bytes"),
    NUM("keepalive-requests", "AGENTWIRE_KEEPALIVE_REQUESTS", keepalive_requests, "1000", 1,
        100000000, "N", "HTTP requests one connection may make; the last is answered with close"),
    NUM("keepalive-max-ms", "AGENTWIRE_KEEPALIVE_MAX_MS", keepalive_max_ms, "60000", 100, 86400000,
        "MS", "time a connection may stay in the HTTP phase, whatever its requests"),
    NUM("drain-timeout-ms", "AGENTWIRE_DRAIN_TIMEOUT_MS", drain_timeout_ms, "10000", 0, 600000,
        "MS", "on SIGTERM/SIGINT, how long connections get to close"),
    NUM("ticket-ttl-ms", "AGENTWIRE_TICKET_TTL_MS", ticket_ttl_ms, "60000", 1000, 3600000, "MS",
        "lifetime of a connection ticket from POST /api/v1/tickets"),
    NUM("max-tickets-per-user", "AGENTWIRE_MAX_TICKETS_PER_USER", max_tickets_per_user, "16", 1,
        1000000, "N", "unused tickets one user may hold (more: 429 too_many_tickets)"),
    NUM("max-tickets", "AGENTWIRE_MAX_TICKETS", max_tickets, "100000", 1, 100000000, "N",
        "unused tickets of all users together (more: 429 too_many_tickets)"),
    NUM("idempotency-max-keys", "AGENTWIRE_IDEMPOTENCY_MAX_KEYS", idempotency_max_keys, "100000", 1,
        100000000, "N", "idempotency keys remembered; past it the oldest is forgotten"),
    NUM("idempotency-ttl-ms", "AGENTWIRE_IDEMPOTENCY_TTL_MS", idempotency_ttl_ms, "300000", 1000,
        86400000, "MS", "how long a publish idempotency key is remembered"),
    NUM("max-request-bytes", "AGENTWIRE_MAX_REQUEST_BYTES", max_request_bytes, "4194304", 1024,
        (int64_t)1 << 30, "N", "largest HTTP request body (bigger: 413)"),
    NUM("max-request-bytes-in-flight", "AGENTWIRE_MAX_REQUEST_BYTES_IN_FLIGHT",
        max_request_bytes_in_flight, "67108864", 1024, (int64_t)1 << 40, "N",
        "request bodies being received by all connections together (more: 503)"),
    NUM("max-header-bytes", "AGENTWIRE_MAX_HEADER_BYTES", max_header_bytes, "16384", 1024, 1 << 20,
        "N", "largest HTTP request head (bigger: 431)"),
    STR("echo-path", "AGENTWIRE_ECHO_PATH", echo_path, NULL, "PATH",
        "also serve an echo WebSocket at PATH (authenticated like /ws) for conformance tools"),
    STR("agent", "AGENTWIRE_AGENT", agent, "builtin:demo", "SPEC",
        "agent backend of user runs: builtin:demo, exec:COMMAND or http:URL"),
    STR("agent-env", "AGENTWIRE_AGENT_ENV", agent_env, NULL, "NAMES",
        "comma-separated environment variables exec agents get besides PATH, HOME, USER, "
        "LOGNAME, LANG, LC_*, TZ, TMPDIR"),
    STR("agent-name", "AGENTWIRE_AGENT_NAME", agent_name, NULL, "NAME",
        "agent_name in agent_started (default: the backend's name)"),
    NUM("run-timeout-ms", "AGENTWIRE_RUN_TIMEOUT_MS", run_timeout_ms, "300000", 100, 86400000, "MS",
        "a run still open after this long ends with status timeout"),
    NUM("run-idle-timeout-ms", "AGENTWIRE_RUN_IDLE_TIMEOUT_MS", run_idle_timeout_ms, "120000", 100,
        86400000, "MS", "a run published through the API with no event for this long times out"),
    NUM("run-orphan-grace-ms", "AGENTWIRE_RUN_ORPHAN_GRACE_MS", run_orphan_grace_ms, "30000", 0,
        86400000, "MS", "agent runs of a user with no connection for this long are cancelled"),
    NUM("max-runs-per-user", "AGENTWIRE_MAX_RUNS_PER_USER", max_runs_per_user, "4", 1, 10000, "N",
        "agent runs one user may have open (more: error too_many_runs)"),
    NUM("max-events-per-run", "AGENTWIRE_MAX_EVENTS_PER_RUN", max_events_per_run, "10000", 10,
        100000000, "N", "events an agent may emit in one run before it is stopped"),
    NUM("agent-kill-grace-ms", "AGENTWIRE_AGENT_KILL_GRACE_MS", agent_kill_grace_ms, "2000", 10,
        600000, "MS", "time between SIGTERM and SIGKILL of an agent's process group"),
    NUM("agent-max-line-bytes", "AGENTWIRE_AGENT_MAX_LINE_BYTES", agent_max_line_bytes, "1048576",
        1024, 1 << 30, "N", "longest event line an agent may emit (longer: dropped)"),
    STR("tls-cert", "AGENTWIRE_TLS_CERT", tls_cert, NULL, "FILE",
        "serve TLS (https, wss) with this PEM certificate chain; reloaded on SIGHUP"),
    STR("tls-key", "AGENTWIRE_TLS_KEY", tls_key, NULL, "FILE",
        "the PEM private key of --tls-cert; reloaded on SIGHUP"),
    STR("deflate", "AGENTWIRE_DEFLATE", deflate_name, "on", "on|off",
        "accept permessage-deflate (RFC 7692) when a client offers it"),
    NUM("deflate-min-bytes", "AGENTWIRE_DEFLATE_MIN_BYTES", deflate_min_bytes, "128", 0, 1 << 30,
        "N", "events smaller than this are sent uncompressed"),
    NUM("deflate-client-window-bits", "AGENTWIRE_DEFLATE_CLIENT_WINDOW_BITS",
        deflate_client_window_bits, "15", 9, 15, "N",
        "largest window a client may compress with, when it lets the server choose"),
    NUM("send-buffer-bytes", "AGENTWIRE_SEND_BUFFER_BYTES", send_buffer_bytes, "0", 0, 1 << 30, "N",
        "kernel send buffer per client socket, 0 for the kernel's autotuning"),
    NUM("history-size", "AGENTWIRE_HISTORY_SIZE", history_size, "1000", 1, 1000000, "N",
        "events kept per user for resume"),
    NUM("history-ttl-ms", "AGENTWIRE_HISTORY_TTL_MS", history_ttl_ms, "600000", 1000,
        7 * 86400000LL, "MS", "how long an event stays available for resume"),
    NUM("history-memory-bytes", "AGENTWIRE_HISTORY_MEMORY_BYTES", history_memory_bytes, "268435456",
        65536, (int64_t)1 << 40, "N",
        "memory for all users' history together; the oldest events go first"),
    STR("data-dir", "AGENTWIRE_DATA_DIR", data_dir, NULL, "DIR",
        "keep users' streams in DIR/agentwire.db (SQLite) so a restart loses nothing that was "
        "acknowledged (docs/operations.md, Durable history)"),
    STR("fsync", "AGENTWIRE_FSYNC", fsync_name, "batch", "off|batch|always",
        "with --data-dir, what a power loss may cost: off and batch lose nothing to a process "
        "crash, always loses nothing acknowledged to a power loss either"),
    NUM("data-max-bytes", "AGENTWIRE_DATA_MAX_BYTES", data_max_bytes, "1073741824", 1048576,
        (int64_t)1 << 50, "N", "with --data-dir, event bytes kept on disk; the oldest go first"),
    STR("redis", "AGENTWIRE_REDIS", redis, NULL, "URL[,URL...]",
        "cluster mode: Redis shards (redis://[:PASSWORD@]HOST:PORT), a user's stream on one of "
        "them; every node given the same list serves as one gateway (docs/cluster.md)"),
    NUM("redis-timeout-ms", "AGENTWIRE_REDIS_TIMEOUT_MS", redis_timeout_ms, "2000", 50, 600000,
        "MS",
        "a Redis command unanswered for this long fails (publish: 503) and the connection "
        "is made again"),
    NUM("node-ttl-ms", "AGENTWIRE_NODE_TTL_MS", node_ttl_ms, "10000", 500, 3600000, "MS",
        "cluster mode: a node silent this long is dead; its connections leave the listing and "
        "its open runs end with status error"),
    STR("node-id", "AGENTWIRE_NODE_ID", node_id, NULL, "ID",
        "cluster mode: this node's name ([A-Za-z0-9_.-], at most 64; default: made up at start)"),
    STR("log-format", "AGENTWIRE_LOG_FORMAT", log_format_name, "text", "FMT",
        "log lines as 'json' or 'text' (stderr)"),
    STR("log-level", "AGENTWIRE_LOG_LEVEL", log_level_name, "info", "LEVEL",
        "debug, info, warn or error"),
    NUM("log-rate-limit", "AGENTWIRE_LOG_RATE_LIMIT", log_rate_limit, "20", 0, 1000000, "N",
        "lines per second of one kind of message, the rest counted as suppressed (0: no limit)"),
    STR("metrics-public", "AGENTWIRE_METRICS_PUBLIC", metrics_public_name, "auto", "on|off|auto",
        "serve /metrics without the API key; auto: only on a loopback --listen address"),
    {"dev", "AGENTWIRE_DEV", OPT_FLAG, offsetof(config_t, dev), NULL, 0, 0, NULL,
     "allow development mode (no secrets given) on a non-loopback --listen address"},
    {"help", NULL, OPT_FLAG, offsetof(config_t, show_help), NULL, 0, 0, NULL,
     "print this help and exit"},
    {"version", NULL, OPT_FLAG, offsetof(config_t, show_version), NULL, 0, 0, NULL,
     "print the version and exit"},
};

static int fail(char *err, size_t errlen, const char *fmt, const char *a, const char *b)
{
    snprintf(err, errlen, fmt, a, b);
    return AW_EINVAL;
}

static int set_option(config_t *cfg, const option_t *o, const char *val, char *err, size_t errlen)
{
    char *base = (char *)cfg + o->offset;
    if (o->kind == OPT_FLAG) { /* argv gives no value; the environment says 1/0 */
        bool on = !val || strcmp(val, "1") == 0 || strcmp(val, "true") == 0 ||
                  strcmp(val, "yes") == 0 || strcmp(val, "on") == 0;
        if (!on && strcmp(val, "0") != 0 && strcmp(val, "false") != 0 && strcmp(val, "no") != 0 &&
            strcmp(val, "off") != 0)
            return fail(err, errlen, "--%s: expected 1 or 0, got '%s'", o->flag, val);
        *(bool *)base = on;
        return AW_OK;
    }
    if (o->kind == OPT_STR) {
        char **slot = (char **)base;
        free(*slot);
        *slot = strdup(val);
        return *slot ? AW_OK : AW_ENOMEM;
    }
    char *end;
    errno = 0;
    long long n = strtoll(val, &end, 10);
    if (errno || end == val || *end || n < o->min || n > o->max) {
        char range[64];
        snprintf(range, sizeof range, "%lld..%lld", (long long)o->min, (long long)o->max);
        return fail(err, errlen, "--%s: expected an integer in %s", o->flag, range);
    }
    *(int64_t *)base = n;
    return AW_OK;
}

static const option_t *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < AW_ARRAY_LEN(options); i++)
        if (strlen(options[i].flag) == len && strncmp(options[i].flag, name, len) == 0)
            return &options[i];
    return NULL;
}

int config_parse(config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < AW_ARRAY_LEN(options); i++) {
        const option_t *o = &options[i];
        const char *env = o->env ? getenv(o->env) : NULL;
        const char *val = env && *env ? env : o->def;
        if (val && set_option(cfg, o, val, err, errlen) != AW_OK) {
            if (env && *env)
                snprintf(err + strlen(err), errlen - strlen(err), " (from %s)", o->env);
            return AW_EINVAL;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0)
            return fail(err, errlen, "unexpected argument '%s'%s (try --help)", arg, "");
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const option_t *o = find_option(name, len);
        if (!o)
            return fail(err, errlen, "unknown option '%s'%s (try --help)", arg, "");
        const char *val = NULL;
        if (o->kind != OPT_FLAG) {
            if (eq)
                val = eq + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else
                return fail(err, errlen, "--%s needs a value (%s)", o->flag, o->metavar);
        }
        int rc = set_option(cfg, o, val, err, errlen);
        if (rc != AW_OK)
            return rc;
    }
    return AW_OK;
}

/* Reads a small secret file; drops one trailing newline (and CR). */
static int read_secret(const char *path, char **out, const char *what, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, errlen, "%s: cannot open '%s'", what, path);
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    bool more = !feof(f);
    fclose(f);
    if (more)
        return fail(err, errlen, "%s: '%s' is larger than 64 KiB", what, path);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0)
        return fail(err, errlen, "%s: '%s' is empty", what, path);
    buf[n] = '\0';
    free(*out);
    *out = strdup(buf);
    return *out ? AW_OK : AW_ENOMEM;
}

static int parse_listen(config_t *cfg, char *err, size_t errlen)
{
    const char *colon = strrchr(cfg->listen, ':');
    if (!colon || colon == cfg->listen || (size_t)(colon - cfg->listen) >= sizeof cfg->listen_host)
        return fail(err, errlen, "--listen: expected HOST:PORT, got '%s'%s", cfg->listen, "");
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || port < 0 || port > 65535)
        return fail(err, errlen, "--listen: bad port in '%s'%s", cfg->listen, "");
    const char *host = cfg->listen;
    size_t hlen = (size_t)(colon - host);
    if (host[0] == '[' && host[hlen - 1] == ']') { /* [::1]:8080 */
        host++;
        hlen -= 2;
    }
    memcpy(cfg->listen_host, host, hlen);
    cfg->listen_host[hlen] = '\0';
    cfg->listen_port = (int)port;
    return AW_OK;
}

int config_finish(config_t *cfg, char *err, size_t errlen)
{
    int rc = parse_listen(cfg, err, errlen);
    if (rc != AW_OK)
        return rc;
    if (log_format_parse(cfg->log_format_name, &cfg->log_format) != AW_OK)
        return fail(err, errlen, "--log-format: expected json or text, got '%s'%s",
                    cfg->log_format_name, "");
    if (log_level_parse(cfg->log_level_name, &cfg->log_level) != AW_OK)
        return fail(err, errlen, "--log-level: expected debug, info, warn or error, got '%s'%s",
                    cfg->log_level_name, "");
    if (strcmp(cfg->fsync_name, "off") == 0)
        cfg->fsync = 0;
    else if (strcmp(cfg->fsync_name, "batch") == 0)
        cfg->fsync = 1;
    else if (strcmp(cfg->fsync_name, "always") == 0)
        cfg->fsync = 2;
    else
        return fail(err, errlen, "--fsync: expected off, batch or always, got '%s'%s",
                    cfg->fsync_name, "");
    if (cfg->data_dir && cfg->redis)
        return fail(err, errlen, "--data-dir and --redis cannot be used together: %s%s",
                    "with --redis the streams live on the Redis shards", "");
    if (strcmp(cfg->deflate_name, "on") != 0 && strcmp(cfg->deflate_name, "off") != 0)
        return fail(err, errlen, "--deflate: expected on or off, got '%s'%s", cfg->deflate_name,
                    "");
    cfg->deflate = strcmp(cfg->deflate_name, "on") == 0;
    if (!cfg->tls_cert != !cfg->tls_key)
        return fail(err, errlen, "--tls-cert and --tls-key go together%s%s", "", "");
    if (cfg->jwt_secret_file && (rc = read_secret(cfg->jwt_secret_file, &cfg->jwt_secret,
                                                  "--jwt-secret-file", err, errlen)) != AW_OK)
        return rc;
    if (cfg->api_key_file && (rc = read_secret(cfg->api_key_file, &cfg->api_key, "--api-key-file",
                                               err, errlen)) != AW_OK)
        return rc;
    if (cfg->jwt_secret && !*cfg->jwt_secret)
        return fail(err, errlen, "--jwt-secret must not be empty%s%s", "", "");
    if (cfg->api_key && !*cfg->api_key)
        return fail(err, errlen, "--api-key must not be empty%s%s", "", "");
    if (cfg->jwt_secret && cfg->jwt_public_key_file)
        return fail(err, errlen, "give --jwt-secret or --jwt-public-key, not both%s%s", "", "");
    if (cfg->jwks_url && cfg->jwks_file)
        return fail(err, errlen, "give --jwks-url or --jwks-file, not both%s%s", "", "");
    bool jwks = cfg->jwks_url || cfg->jwks_file;
    if (jwks && (cfg->jwt_secret || cfg->jwt_public_key_file))
        return fail(err, errlen,
                    "--jwks-url/--jwks-file replace --jwt-secret and --jwt-public-key: give "
                    "one way%s%s",
                    "", "");
    if (cfg->jwks_url && strncmp(cfg->jwks_url, "https://", 8) != 0)
        return fail(err, errlen, "--jwks-url must be an https:// URL, got '%s'%s", cfg->jwks_url,
                    "");
    if (cfg->jwks_ca_file && !cfg->jwks_url)
        return fail(err, errlen, "--jwks-ca-file goes with --jwks-url%s%s", "", "");

    cfg->jwt_alg = JWT_HS256;
    if (cfg->jwt_alg_name && jwt_alg_parse(cfg->jwt_alg_name, &cfg->jwt_alg) != AW_OK)
        return fail(err, errlen, "--jwt-alg: expected HS256, RS256, ES256 or EdDSA, got '%s'%s",
                    cfg->jwt_alg_name, "");
    if (jwks) {
        if (cfg->jwt_alg_name && cfg->jwt_alg == JWT_HS256)
            return fail(err, errlen,
                        "--jwt-alg HS256 does not go with a key set: RS256, ES256 or EdDSA "
                        "(for keys without alg)%s%s",
                        "", "");
    } else if (cfg->jwt_public_key_file) {
        if (!cfg->jwt_alg_name || cfg->jwt_alg == JWT_HS256)
            return fail(err, errlen, "--jwt-public-key needs --jwt-alg RS256, ES256 or EdDSA%s%s",
                        "", "");
    } else if (cfg->jwt_secret && cfg->jwt_alg != JWT_HS256) {
        return fail(err, errlen, "--jwt-alg %s needs --jwt-public-key, not a secret%s",
                    cfg->jwt_alg_name, "");
    }

    bool loopback = config_listen_is_loopback(cfg);
    if (strcmp(cfg->metrics_public_name, "auto") == 0)
        cfg->metrics_public = loopback;
    else if (strcmp(cfg->metrics_public_name, "on") == 0 ||
             strcmp(cfg->metrics_public_name, "off") == 0)
        cfg->metrics_public = strcmp(cfg->metrics_public_name, "on") == 0;
    else
        return fail(err, errlen, "--metrics-public: expected on, off or auto, got '%s'%s",
                    cfg->metrics_public_name, "");

    bool has_user_auth = cfg->jwt_secret || cfg->jwt_public_key_file || jwks;
    if (!has_user_auth && !cfg->api_key) {
        if (!loopback && !cfg->dev)
            return fail(err, errlen,
                        "no --jwt-secret/--jwt-public-key and no --api-key: development mode, "
                        "which hands out tokens for any name, serves only loopback addresses; "
                        "configure secrets, or add --dev to serve '%s' anyway%s",
                        cfg->listen, "");
        cfg->dev_mode = true;
    } else if (!has_user_auth) {
        return fail(err, errlen,
                    "--api-key is set but no --jwt-secret or --jwt-public-key: configure both, "
                    "or neither for development mode%s%s",
                    "", "");
    } else if (!cfg->api_key) {
        return fail(err, errlen,
                    "user tokens are configured but no --api-key: configure both, or neither "
                    "for development mode%s%s",
                    "", "");
    }
    return AW_OK;
}

void config_usage(FILE *out)
{
    fprintf(out, "Usage: agentwire [OPTION]...\n"
                 "WebSocket gateway that delivers AI agent events to their users.\n\n"
                 "With no --jwt-secret, --jwt-public-key or --api-key, agentwire runs in\n"
                 "development mode: it makes a random secret and API key and prints them\n"
                 "with a sample token for user 'demo'.\n\n"
                 "Options (each also read from the environment variable shown):\n");
    for (size_t i = 0; i < AW_ARRAY_LEN(options); i++) {
        const option_t *o = &options[i];
        char head[64];
        snprintf(head, sizeof head, "--%s%s%s", o->flag, o->metavar ? " " : "",
                 o->metavar ? o->metavar : "");
        fprintf(out, "  %-34s %s", head, o->help);
        if (o->def)
            fprintf(out, " [%s]", o->def);
        fputc('\n', out);
        if (o->env)
            fprintf(out, "  %-34s   env %s\n", "", o->env);
    }
    fprintf(out,
            "\nDocumentation: README.md, docs/operations.md, docs/protocol.md, docs/agents.md\n");
}

void config_dispose(config_t *cfg)
{
    for (size_t i = 0; i < AW_ARRAY_LEN(options); i++)
        if (options[i].kind == OPT_STR)
            free(*(char **)((char *)cfg + options[i].offset));
    memset(cfg, 0, sizeof *cfg);
}

bool config_listen_is_loopback(const config_t *cfg)
{
    const char *h = cfg->listen_host;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, h, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, h, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

bool config_origin_allowed(const config_t *cfg, const char *origin)
{
    if (!cfg->allowed_origins || !*cfg->allowed_origins)
        return true;
    if (!origin)
        return true; /* not a browser: Origin protects browsers only */
    size_t olen = strlen(origin);
    const char *p = cfg->allowed_origins;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *end = p;
        while (*end && *end != ',')
            end++;
        const char *last = end;
        while (last > p && last[-1] == ' ')
            last--;
        if ((size_t)(last - p) == olen && strncasecmp(p, origin, olen) == 0)
            return true;
        if ((size_t)(last - p) == 1 && *p == '*')
            return true;
        p = end;
    }
    return false;
}
