/* rconn.c -- a Redis connection with timeouts, reconnects and a handshake
 * (rconn.h). One repeating timer per connection drives everything that
 * hiredis does not: the connect deadline, the command deadline, the idle
 * PING that notices a hung server, and the backoff before a reconnect. */
#include "rconn.h"

#include <hiredis/adapters/libuv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aw.h"
#include "log.h"

typedef struct rconn_cmd {
    rconn_t *c;
    rconn_reply_fn fn;
    void *arg;
    int64_t sent_ms;
    uint64_t sent_us;
    bool linked; /* in c's list of commands in flight */
    struct rconn_cmd *next, *prev;
} rconn_cmd_t;

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

static uint64_t now_us(void)
{
    return uv_hrtime() / 1000;
}

int rconn_parse_url(const char *url, char *host, size_t hostlen, int *port, char **password,
                    char *err, size_t errlen)
{
    *password = NULL;
    const char *p = url;
    if (strncmp(p, "redis://", 8) == 0)
        p += 8;
    else if (strstr(p, "://")) {
        snprintf(err, errlen, "--redis: '%s': only redis:// URLs are supported", url);
        return AW_EINVAL;
    }
    const char *at = strrchr(p, '@');
    if (at) {
        const char *pw = memchr(p, ':', (size_t)(at - p));
        pw = pw ? pw + 1 : p; /* redis://:PASSWORD@ or redis://USER:PASSWORD@ */
        *password = strndup(pw, (size_t)(at - pw));
        p = at + 1;
    }
    const char *colon = strrchr(p, ':');
    const char *slash = strchr(p, '/');
    size_t hl = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
    if (hl == 0 || hl >= hostlen) {
        snprintf(err, errlen, "--redis: '%s': expected redis://HOST:PORT", url);
        free(*password), *password = NULL;
        return AW_EINVAL;
    }
    if (slash && strcmp(slash, "/") != 0 && strcmp(slash, "/0") != 0) {
        snprintf(err, errlen, "--redis: '%s': only database 0 is used (drop the /N)", url);
        free(*password), *password = NULL;
        return AW_EINVAL;
    }
    memcpy(host, p, hl);
    host[hl] = '\0';
    *port = 6379;
    if (colon) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (end == colon + 1 || (*end && *end != '/') || v < 1 || v > 65535) {
            snprintf(err, errlen, "--redis: '%s': bad port", url);
            free(*password), *password = NULL;
            return AW_EINVAL;
        }
        *port = (int)v;
    }
    return AW_OK;
}

static void cmd_unlink(rconn_t *c, rconn_cmd_t *cmd)
{
    if (!cmd->linked)
        return;
    cmd->linked = false;
    if (cmd->prev)
        cmd->prev->next = cmd->next;
    else
        c->_head = cmd->next;
    if (cmd->next)
        cmd->next->prev = cmd->prev;
    else
        c->_tail = cmd->prev;
}

static void set_error(rconn_t *c, const char *why)
{
    snprintf(c->error, sizeof c->error, "%.64s:%d: %.80s", c->host, c->port, why);
}

/* The connection is gone: the commands in flight leave the timeout list
 * (hiredis calls each back with a NULL reply as it frees the context). With
 * free_ac the context is ours to free; otherwise hiredis is freeing it. */
static void drop_ctx(rconn_t *c, const char *why, bool free_ac)
{
    bool was_ready = c->state == RCONN_READY;
    if (why)
        set_error(c, why);
    c->state = RCONN_DOWN; /* first: callbacks run below may try to send */
    redisAsyncContext *ac = c->_ac;
    c->_ac = NULL;
    for (rconn_cmd_t *cmd = c->_head; cmd; cmd = cmd->next)
        cmd->linked = false;
    c->_head = c->_tail = NULL;
    if (ac) {
        ac->data = NULL;
        if (free_ac)
            redisAsyncFree(ac);
    }
    int64_t jitter = 0;
    uint8_t r;
    if (aw_random_bytes(&r, 1) == AW_OK)
        jitter = c->_backoff_ms * r / 512; /* up to half again */
    c->_connect_deadline = aw_now_ms() + c->_backoff_ms + jitter;
    c->_backoff_ms = c->_backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->_backoff_ms * 2;
    if (was_ready) {
        log_kv(LOG_WARN, "redis down", "server", c->error, NULL);
        if (c->on_down)
            c->on_down(c);
    } else if (!c->_closing) {
        log_kv(LOG_WARN | LOG_LIMITED, "redis connection failed", "server", c->error, "#retry_ms",
               (long long)(c->_connect_deadline - aw_now_ms()), NULL);
    }
}

static void drop(rconn_t *c, const char *why)
{
    drop_ctx(c, why, true);
}

void rconn_fail(rconn_t *c, const char *why)
{
    if (c->state != RCONN_DOWN)
        drop(c, why);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    rconn_t *c = ac->data;
    if (!c || c->_ac != ac)
        return;                                                           /* dropped by us */
    drop_ctx(c, ac->errstr[0] ? ac->errstr : "connection closed", false); /* hiredis frees it */
}

static void on_auth(rconn_t *c, redisReply *r, void *arg)
{
    (void)arg;
    if (!r || r->type == REDIS_REPLY_ERROR) {
        rconn_fail(c, r ? r->str : "AUTH failed");
        return;
    }
    if (c->on_connected)
        c->on_connected(c);
    else
        rconn_set_ready(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rconn_t *c = ac->data;
    if (!c || c->_ac != ac)
        return;
    if (status != REDIS_OK) { /* hiredis frees it after a failed connect */
        drop_ctx(c, ac->errstr[0] ? ac->errstr : "cannot connect", false);
        return;
    }
    c->state = RCONN_HANDSHAKE;
    if (c->_password) {
        const char *argv[] = {"AUTH", c->_password};
        size_t lens[] = {4, strlen(c->_password)};
        rconn_handshake_command(c, on_auth, NULL, 2, argv, lens);
    } else {
        on_auth(c, &(redisReply){.type = REDIS_REPLY_STATUS}, NULL);
    }
}

static void connect_now(rconn_t *c)
{
    redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);
    if (!ac || ac->err) {
        char why[128];
        snprintf(why, sizeof why, "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        drop(c, why);
        return;
    }
    ac->data = c;
    redisEnableKeepAlive(&ac->c); /* a peer gone without a word is noticed */
    if (redisLibuvAttach(ac, c->_loop) != REDIS_OK) {
        redisAsyncFree(ac);
        drop(c, "cannot attach to the loop");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->_ac = ac;
    c->state = RCONN_CONNECTING;
    c->_connect_deadline = aw_now_ms() + c->_timeout_ms;
    if (c->_ever_ready)
        c->reconnects++;
}

static void on_ping(rconn_t *c, redisReply *r, void *arg)
{
    (void)c, (void)r, (void)arg; /* a missing answer is the timer's business */
}

static void on_timer(uv_timer_t *t)
{
    rconn_t *c = t->data;
    int64_t now = aw_now_ms();
    switch (c->state) {
    case RCONN_DOWN:
        if (now >= c->_connect_deadline && !c->_closing)
            connect_now(c);
        return;
    case RCONN_CONNECTING:
    case RCONN_HANDSHAKE:
        if (now >= c->_connect_deadline)
            drop(c, "connect timed out");
        return;
    case RCONN_READY:
        if (c->_head && now - c->_head->sent_ms >= c->_timeout_ms) {
            drop(c, "command timed out");
        } else if (!c->subscriber && !c->_head) {
            /* idle: a hung server is noticed without traffic */
            const char *argv[] = {"PING"};
            size_t lens[] = {4};
            rconn_command(c, on_ping, NULL, 1, argv, lens);
        }
        return;
    }
}

int rconn_start(rconn_t *c, uv_loop_t *loop, const char *host, int port, const char *password,
                int64_t timeout_ms)
{
    c->_loop = loop;
    snprintf(c->host, sizeof c->host, "%s", host);
    c->port = port;
    c->_password = password ? strdup(password) : NULL;
    c->_timeout_ms = timeout_ms;
    c->_backoff_ms = BACKOFF_MIN_MS;
    set_error(c, "connecting");
    uv_timer_init(loop, &c->_timer);
    c->_timer.data = c;
    int64_t period = timeout_ms / 4;
    period = period < 10 ? 10 : period > 250 ? 250 : period;
    uv_timer_start(&c->_timer, on_timer, (uint64_t)period, (uint64_t)period);
    connect_now(c);
    return AW_OK;
}

void rconn_stop(rconn_t *c)
{
    c->_closing = true;
    c->on_down = NULL;
    drop(c, "stopped");
    if (uv_is_active((uv_handle_t *)&c->_timer) || !uv_is_closing((uv_handle_t *)&c->_timer))
        uv_close((uv_handle_t *)&c->_timer, NULL);
    free(c->_password);
    c->_password = NULL;
}

void rconn_set_ready(rconn_t *c)
{
    if (c->state != RCONN_HANDSHAKE)
        return;
    c->state = RCONN_READY;
    c->error[0] = '\0';
    c->_backoff_ms = BACKOFF_MIN_MS;
    log_kv(c->_ever_ready ? LOG_WARN : LOG_INFO, c->_ever_ready ? "redis back" : "redis connected",
           "host", c->host, "#port", (long long)c->port, "role",
           c->subscriber ? "pubsub" : "commands", NULL);
    c->_ever_ready = true;
}

bool rconn_ready(const rconn_t *c)
{
    return c->state == RCONN_READY;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    rconn_cmd_t *cmd = privdata;
    rconn_t *c = cmd->c;
    redisReply *r = reply;
    cmd_unlink(c, cmd);
    if (!r && ac->data == c) /* the connection is going: hiredis frees it */
        drop_ctx(c, ac->errstr[0] ? ac->errstr : "connection lost", false);
    if (r) {
        uint64_t rtt = now_us() - cmd->sent_us;
        c->rtt_us_sum += rtt;
        c->rtt_count++;
        if (rtt > c->rtt_us_max)
            c->rtt_us_max = rtt;
    } else {
        c->errors++;
    }
    if (cmd->fn)
        cmd->fn(c, r, cmd->arg);
    free(cmd);
}

static int send_command(rconn_t *c, rconn_reply_fn fn, void *arg, int argc, const char **argv,
                        const size_t *lens)
{
    rconn_cmd_t *cmd = calloc(1, sizeof *cmd);
    if (!cmd)
        return AW_ENOMEM;
    *cmd = (rconn_cmd_t){.c = c, .fn = fn, .arg = arg, .sent_ms = aw_now_ms(), .sent_us = now_us()};
    if (redisAsyncCommandArgv(c->_ac, on_reply, cmd, argc, argv, lens) != REDIS_OK) {
        free(cmd);
        c->errors++;
        return AW_EUNAVAIL;
    }
    cmd->linked = true;
    cmd->prev = c->_tail;
    if (c->_tail)
        c->_tail->next = cmd;
    else
        c->_head = cmd;
    c->_tail = cmd;
    return AW_OK;
}

int rconn_command(rconn_t *c, rconn_reply_fn fn, void *arg, int argc, const char **argv,
                  const size_t *lens)
{
    if (c->state != RCONN_READY || !c->_ac) {
        c->errors++;
        return AW_EUNAVAIL;
    }
    return send_command(c, fn, arg, argc, argv, lens);
}

int rconn_handshake_command(rconn_t *c, rconn_reply_fn fn, void *arg, int argc, const char **argv,
                            const size_t *lens)
{
    if ((c->state != RCONN_HANDSHAKE && c->state != RCONN_READY) || !c->_ac)
        return AW_EUNAVAIL;
    return send_command(c, fn, arg, argc, argv, lens);
}

/* Every message of every channel arrives here (hiredis keeps this callback
 * per channel); NULL when the connection goes. */
static void on_sub(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    rconn_t *c = privdata;
    redisReply *r = reply;
    if (!r || c->state == RCONN_DOWN || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    redisReply *kind = r->element[0], *ch = r->element[1], *msg = r->element[2];
    if (kind->type == REDIS_REPLY_STRING && kind->len == 7 &&
        memcmp(kind->str, "message", 7) == 0 && ch->type == REDIS_REPLY_STRING &&
        msg->type == REDIS_REPLY_STRING && c->on_message)
        c->on_message(c, ch->str, ch->len, msg->str, msg->len);
    else if (kind->type == REDIS_REPLY_STRING && kind->len == 9 &&
             memcmp(kind->str, "subscribe", 9) == 0 && ch->type == REDIS_REPLY_STRING &&
             c->on_subscribed)
        c->on_subscribed(c, ch->str, ch->len);
}

int rconn_subscribe(rconn_t *c, const char *channel, bool on)
{
    if (c->state != RCONN_READY || !c->_ac)
        return AW_EUNAVAIL;
    const char *argv[] = {on ? "SUBSCRIBE" : "UNSUBSCRIBE", channel};
    size_t lens[] = {strlen(argv[0]), strlen(channel)};
    return redisAsyncCommandArgv(c->_ac, on_sub, c, 2, argv, lens) == REDIS_OK ? AW_OK
                                                                               : AW_EUNAVAIL;
}
