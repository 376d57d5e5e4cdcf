/* client.c -- reads a user's JSON messages and answers them. Knows message
 * types and their replies; never writes to another session and never
 * changes who the session belongs to (a refresh for another sub closes). */
#include "client.h"

#include <string.h>

#include "auth.h"
#include "aw.h"
#include "event.h"
#include "lock.h"
#include "log.h"
#include "runs.h"
#include "server.h"

typedef struct msg {
    session_t *s;
    json_t *root; /* the whole message */
    json_t *args; /* payload, or root when there is none */
    const char *type;
    json_t *message_id; /* echoed in replies when present */
} msg_t;

static void reply(msg_t *m, json_t *obj)
{
    if (m->message_id)
        json_object_set(obj, "message_id", m->message_id);
    session_send_json(m->s, obj);
    json_decref(obj);
}

/* Counts a bad message in the current window; closes with 1008 past the
 * limit (returns true then). */
static bool count_bad(session_t *s)
{
    int64_t now = aw_now_ms();
    if (now - s->_bad_window_ms >= CLIENT_BAD_WINDOW_MS) {
        s->_bad_window_ms = now;
        s->_bad_msgs = 0;
    }
    if (++s->_bad_msgs > CLIENT_BAD_CLOSE) {
        log_kv(LOG_INFO | LOG_LIMITED, "too many bad messages", "conn", s->id, "user", s->user->id,
               NULL);
        session_close(s, WS_CLOSE_POLICY, "too many invalid messages");
        return true;
    }
    return false;
}

/* An error reply; bad messages count towards the rate limit. */
static void reply_error(session_t *s, json_t *message_id, enum metrics_error code, const char *text,
                        bool bad)
{
    if (bad) {
        if (count_bad(s))
            return;
        if (s->_bad_msgs > CLIENT_BAD_RATE_LIMIT) {
            code = ERR_RATE_LIMITED;
            text = "too many invalid messages; slow down or be disconnected";
        }
    }
    s->srv->metrics.errors[code]++;
    json_t *e = json_pack("{s:s, s:s, s:s}", "type", "error", "code", metrics_error_name(code),
                          "message", text);
    if (message_id)
        json_object_set(e, "message_id", message_id);
    session_send_json(s, e);
    json_decref(e);
}

static void on_ping(msg_t *m)
{
    json_t *r = json_pack("{s:s}", "type", "pong");
    json_t *ts = json_object_get(m->args, "timestamp");
    if (!ts)
        ts = json_object_get(m->root, "timestamp");
    json_object_set(r, "timestamp", ts ? ts : json_null());
    json_object_set_new(r, "server_time", json_integer(aw_now_ms()));
    reply(m, r);
}

static void on_heartbeat(msg_t *m)
{
    reply(m,
          json_pack("{s:s, s:I}", "type", "heartbeat_ack", "server_time", (json_int_t)aw_now_ms()));
}

static void on_refresh(msg_t *m)
{
    session_t *s = m->s;
    const char *token = json_string_value(json_object_get(m->args, "token"));
    if (!token) {
        reply_error(s, m->message_id, ERR_INVALID_MESSAGE, "refresh needs a token", true);
        return;
    }
    auth_result_t r;
    if (auth_token(&s->srv->jwt, token, strlen(token), aw_now_ms(), &r) != AW_OK) {
        reply_error(s, m->message_id, ERR_INVALID_TOKEN, r.reason, false);
        return;
    }
    if (strcmp(r.user, s->user->id) != 0) {
        log_kv(LOG_WARN | LOG_LIMITED, "refresh for another user", "conn", s->id, "user",
               s->user->id, NULL);
        session_close(s, WS_CLOSE_POLICY, "token for another user");
        return;
    }
    s->token_exp_ms = r.expires_ms;
    reply(m, json_pack("{s:s, s:s, s:I}", "type", "ack", "for", "refresh", "expires_at",
                       (json_int_t)r.expires_ms));
}

/* resume: replays every retained event after since, then acks; an epoch
 * that is not the stream's, or a since beyond it, gets resume_failed. */
static void on_resume(msg_t *m)
{
    session_t *s = m->s;
    hub_user_t *u = s->user;
    json_t *jsince = json_object_get(m->args, "since");
    const char *epoch = json_string_value(json_object_get(m->args, "epoch"));
    if (!json_is_integer(jsince) || json_integer_value(jsince) < 0 || !epoch) {
        reply_error(s, m->message_id, ERR_INVALID_MESSAGE,
                    "resume needs since (a non-negative integer) and epoch (a string)", true);
        return;
    }
    uint64_t since = (uint64_t)json_integer_value(jsince);
    if (strcmp(epoch, u->epoch) != 0 || since > u->seq) {
        reply(m, json_pack("{s:s, s:s, s:s, s:I}", "type", "resume_failed", "reason",
                           strcmp(epoch, u->epoch) != 0 ? "epoch" : "since_ahead", "epoch",
                           u->epoch, "seq", (json_int_t)u->seq));
        return;
    }
    bool complete = hub_can_resume(&s->srv->hub, u, since, epoch);
    uint64_t first = hub_first_seq(&s->srv->hub, u);
    uint64_t from = since + 1;
    if (!complete)
        from = first ? first : u->seq + 1;
    json_t *ack = json_pack("{s:s, s:s, s:b, s:I, s:s, s:I}", "type", "ack", "for", "resume",
                            "resumed", complete, "missed", (json_int_t)(u->seq + 1 - from), "epoch",
                            u->epoch, "seq", (json_int_t)u->seq);
    if (m->message_id)
        json_object_set(ack, "message_id", m->message_id);
    session_replay(s, from, ack);
}

/* start_agent and user_message (and their aliases): a new run. */
static void start_run(msg_t *m, const char *text, json_t *context)
{
    session_t *s = m->s;
    json_t *jthread = json_object_get(m->args, "thread_id");
    const char *thread = json_string_value(jthread);
    if (!text || (jthread && !json_is_null(jthread) && !event_id_valid(thread))) {
        reply_error(s, m->message_id, ERR_INVALID_MESSAGE,
                    "a run needs its text (a string) and an optional thread_id (an id)", true);
        return;
    }
    run_t *run;
    int rc = runs_start(&s->srv->runs, s->user->id, thread, &run);
    if (rc == AW_ELIMIT) {
        reply_error(s, m->message_id, ERR_TOO_MANY_RUNS, "too many runs are open for this user",
                    false);
        return;
    }
    if (rc != AW_OK) {
        reply_error(s, m->message_id, ERR_UNAVAILABLE, "cannot start a run now", false);
        return;
    }
    reply(m, json_pack("{s:s, s:s, s:s, s:s}", "type", "ack", "for", m->type, "run_id", run->id,
                       "thread_id", run->thread_id));
    json_t *settings = json_object_get(m->args, "settings");
    if (runs_begin(&s->srv->runs, run, text, json_is_object(context) ? context : NULL,
                   json_is_object(settings) ? settings : NULL) != AW_OK)
        reply_error(s, m->message_id, ERR_UNAVAILABLE, "the run could not start", false);
}

static void on_start_agent(msg_t *m)
{
    start_run(m, json_string_value(json_object_get(m->args, "user_request")),
              json_object_get(m->args, "context"));
}

static void on_user_message(msg_t *m)
{
    static const char *const fields[] = {"content", "message", "text"};
    const char *text = NULL;
    for (size_t i = 0; i < AW_ARRAY_LEN(fields) && !text; i++)
        text = json_string_value(json_object_get(m->args, fields[i]));
    json_t *refs = json_object_get(m->args, "references");
    json_t *context = refs ? json_pack("{s:O}", "references", refs) : NULL;
    start_run(m, text, context);
    json_decref(context);
}

/* A run this node does not drive is stopped where the user's stream lives
 * (cluster mode: its owner node stops the agent when told on the user's
 * channel; in memory every run is here, so none is found). */
typedef struct stop_wait {
    session_wait_t base;
    json_t *message_id;
    char run_id[EVENT_MAX_ID + 1];
    char user[EVENT_MAX_ID + 1];
} stop_wait_t;

static void on_remote_stopped(void *arg, int rc, const hub_receipt_t *r)
{
    stop_wait_t *w = arg;
    if (rc != AW_OK && rc != AW_ENOTFOUND)
        log_kv(LOG_WARN | LOG_LIMITED, "stop_agent: the run could not be ended", "run", w->run_id,
               "error", r->error, NULL);
    json_decref(w->message_id);
    session_wait_free(&w->base);
}

static void on_remote_open(void *arg, int rc)
{
    stop_wait_t *w = arg;
    session_t *s = w->base.s;
    if (s && rc == AW_ENOTFOUND) {
        reply_error(s, w->message_id, ERR_NOT_FOUND, "no open run with this run_id", false);
    } else if (s && rc != AW_OK) {
        reply_error(s, w->message_id, ERR_UNAVAILABLE, "the user's stream is not reachable now",
                    false);
    } else if (s) {
        json_t *ack =
            json_pack("{s:s, s:s, s:s}", "type", "ack", "for", "stop_agent", "run_id", w->run_id);
        if (w->message_id)
            json_object_set(ack, "message_id", w->message_id);
        session_send_json(s, ack);
        json_decref(ack);
        broker_run_finish(s->srv->broker, w->user, w->run_id, "cancelled", "stopped by the user",
                          on_remote_stopped, w);
        return;
    }
    json_decref(w->message_id);
    session_wait_free(&w->base);
}

static void stop_remote(msg_t *m, const char *run_id)
{
    stop_wait_t *w =
        strlen(run_id) <= EVENT_MAX_ID ? (stop_wait_t *)session_wait_new(m->s, sizeof *w) : NULL;
    if (!w) {
        reply_error(m->s, m->message_id, ERR_NOT_FOUND, "no open run with this run_id", false);
        return;
    }
    w->message_id = json_incref(m->message_id);
    snprintf(w->run_id, sizeof w->run_id, "%s", run_id);
    snprintf(w->user, sizeof w->user, "%s", m->s->user->id);
    broker_run_open(m->s->srv->broker, w->user, w->run_id, on_remote_open, w);
}

static void on_stop_agent(msg_t *m)
{
    const char *run_id = json_string_value(json_object_get(m->args, "run_id"));
    if (!run_id) {
        reply_error(m->s, m->message_id, ERR_INVALID_MESSAGE, "stop_agent needs run_id", true);
        return;
    }
    runs_t *runs = &m->s->srv->runs;
    if (!runs_is_open(runs, m->s->user->id, run_id)) { /* maybe on another node */
        stop_remote(m, run_id);
        return;
    }
    /* the ack first, then the run's agent_completed, as for start_agent */
    reply(m, json_pack("{s:s, s:s, s:s}", "type", "ack", "for", "stop_agent", "run_id", run_id));
    runs_stop(runs, m->s->user->id, run_id);
}

typedef struct handler {
    const char *type;
    void (*fn)(msg_t *m);
} handler_t;

static const handler_t handlers[] = {
    {"ping", on_ping},
    {"heartbeat", on_heartbeat},
    {"refresh", on_refresh},
    {"resume", on_resume},
    {"start_agent", on_start_agent},
    {"execute_agent", on_start_agent},
    {"user_message", on_user_message},
    {"chat_message", on_user_message},
    {"message", on_user_message},
    {"user_input", on_user_message},
    {"chat", on_user_message},
    {"stop_agent", on_stop_agent},
};

void client_message(session_t *s, uint8_t opcode, const uint8_t *data, size_t len, frame_t *own)
{
    if (s->echo && own) { /* the message came in with room for our header: sent as it is */
        ws_frame_header(own->data, opcode, true, len);
        session_send(s, own);
        return;
    }
    if (s->echo) {
        frame_t *f = frame_ws(opcode, data, len);
        if (!f) {
            session_close(s, WS_CLOSE_INTERNAL, "out of memory");
            return;
        }
        session_send(s, f);
        frame_unref(f);
        return;
    }
    if (opcode != WS_OP_TEXT) {
        reply_error(s, NULL, ERR_INVALID_MESSAGE, "messages are JSON text frames", true);
        return;
    }
    client_msg_t cm;
    client_read_error_t err;
    if (client_read(data, len, &cm, &err) != AW_OK) {
        reply_error(s, err.message_id, err.code, err.text, true);
        json_decref(cm.root);
        return;
    }
    msg_t m = {
        .s = s, .root = cm.root, .args = cm.args, .type = cm.type, .message_id = cm.message_id};
    for (size_t i = 0; i < AW_ARRAY_LEN(handlers); i++) {
        if (strcmp(m.type, handlers[i].type) == 0) {
            handlers[i].fn(&m);
            json_decref(cm.root);
            return;
        }
    }
    reply_error(s, m.message_id, ERR_UNKNOWN_TYPE, "unknown message type", true);
    json_decref(cm.root);
}

bool client_within_rate(session_t *s, bool is_ping)
{
    int64_t rate = s->srv->cfg->max_messages_per_second;
    if (rate <= 0)
        return true;
    int64_t now = (int64_t)uv_now(s->lp->loop);
    double burst = 2.0 * (double)rate;
    if (!s->_rate_ms) {
        s->_rate_tokens = burst;
    } else {
        s->_rate_tokens += (double)(now - s->_rate_ms) * (double)rate / 1000.0;
        if (s->_rate_tokens > burst)
            s->_rate_tokens = burst;
    }
    s->_rate_ms = now;
    if (s->_rate_tokens >= 1.0) {
        s->_rate_tokens -= 1.0;
        return true;
    }
    aw_lock(); /* the metrics (the frame loop may hold the lock shared) */
    s->srv->metrics.errors[ERR_RATE_LIMITED]++;
    if (is_ping)
        count_bad(s);
    else
        reply_error(s, NULL, ERR_RATE_LIMITED, "too many messages; slow down", true);
    aw_unlock();
    return false;
}
