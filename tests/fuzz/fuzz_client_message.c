/* fuzz_client_message.c -- libFuzzer target for the client message reader,
 * src/client.c client_message() and its handlers.
 *
 * client_message is tied to a session (replies are queued on it, runs are
 * started, the rate limiter counts), so this target does not call it and
 * nothing in src/ was refactored for it. It MIRRORS client.c step by step,
 * with the same library calls in the same order: json_loadb with
 * JSON_REJECT_DUPLICATES, object check, message_id (absent or a string),
 * type (a string), payload (an object, else the root carries the
 * arguments), the handler table, and each handler's argument reads and the
 * reply it builds (json_pack, json_object_set of the echoed message_id,
 * json_dumps as session_send_json does). For refresh, the token goes through
 * jwt_verify with an HS256 verifier, as auth_token does; thread ids through
 * event_id_valid. Left out: the session, hub, runs and rate limiter.
 *
 * Input: the payload of one text message (the WebSocket layer has already
 * checked that it is UTF-8; invalid UTF-8 is fed too, and must not load).
 *
 * Invariants: JSON that loads is valid UTF-8; every reply is built (json_pack
 * never fails on these arguments), dumps to valid UTF-8 JSON that loads back
 * equal, carries the type the handler promises and echoes message_id when
 * present; the decision (which reply or error) is the one the rules of
 * client.c give, restated here independently of the mirror's control flow.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aw.h"
#include "event.h"
#include "fuzz_common.h"
#include "jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What the mirror answered; compared with expected(). */
enum outcome {
    O_BAD_JSON,      /* invalid_json: not a JSON object */
    O_BAD_ID,        /* invalid_message: message_id not a string */
    O_NO_TYPE,       /* invalid_message: no string type */
    O_UNKNOWN,       /* unknown_type */
    O_PONG,          /* ping */
    O_HEARTBEAT_ACK, /* heartbeat */
    O_REFRESH_BAD,   /* refresh without a token */
    O_REFRESH_TOKEN, /* refresh with a token: verified (result irrelevant here) */
    O_RESUME_BAD,    /* resume without since/epoch */
    O_RESUME,        /* resume with since and epoch */
    O_RUN_BAD,       /* start_agent/user_message without text or with a bad thread_id */
    O_RUN,           /* a run would start */
    O_STOP_BAD,      /* stop_agent without run_id */
    O_STOP,          /* stop_agent with run_id */
};

typedef struct msg {
    json_t *root;
    json_t *args;
    const char *type;
    json_t *message_id;
} msg_t;

static jwt_verifier_t verifier;

/* session_send_json: compact dump; here also: it must load back equal. */
static void send_json(const json_t *obj, const char *want_type, const json_t *message_id)
{
    FUZZ_CHECK(obj != NULL);
    char *text = json_dumps(obj, JSON_COMPACT);
    FUZZ_CHECK(text != NULL);
    FUZZ_CHECK(fz_utf8_valid((const uint8_t *)text, strlen(text)));
    json_t *back = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    FUZZ_CHECK(back != NULL && json_equal(back, obj));
    FUZZ_CHECK(strcmp(json_string_value(json_object_get(back, "type")), want_type) == 0);
    if (message_id)
        FUZZ_CHECK(json_equal(json_object_get(back, "message_id"), message_id));
    json_decref(back);
    free(text);
}

/* client.c reply(): echo message_id, send, drop. */
static void reply(msg_t *m, json_t *obj, const char *want_type)
{
    FUZZ_CHECK(obj != NULL);
    if (m->message_id)
        json_object_set(obj, "message_id", m->message_id);
    send_json(obj, want_type, m->message_id);
    json_decref(obj);
}

/* client.c reply_error() without the rate limiter. */
static void reply_error(json_t *message_id, const char *code, const char *text)
{
    json_t *e = json_pack("{s:s, s:s, s:s}", "type", "error", "code", code, "message", text);
    FUZZ_CHECK(e != NULL);
    if (message_id)
        json_object_set(e, "message_id", message_id);
    send_json(e, "error", message_id);
    json_decref(e);
}

static enum outcome on_ping(msg_t *m)
{
    json_t *r = json_pack("{s:s}", "type", "pong");
    json_t *ts = json_object_get(m->args, "timestamp");
    if (!ts)
        ts = json_object_get(m->root, "timestamp");
    json_object_set(r, "timestamp", ts ? ts : json_null());
    json_object_set_new(r, "server_time", json_integer(1700000000000));
    reply(m, r, "pong");
    return O_PONG;
}

static enum outcome on_heartbeat(msg_t *m)
{
    reply(m, json_pack("{s:s, s:I}", "type", "heartbeat_ack", "server_time", (json_int_t)1), "heartbeat_ack");
    return O_HEARTBEAT_ACK;
}

static enum outcome on_refresh(msg_t *m)
{
    const char *token = json_string_value(json_object_get(m->args, "token"));
    if (!token) {
        reply_error(m->message_id, "invalid_message", "refresh needs a token");
        return O_REFRESH_BAD;
    }
    /* auth_token: jwt_verify at now_ms / 1000 */
    jwt_claims_t c;
    int rc = jwt_verify(&verifier, token, strlen(token), 1700000000, &c);
    if (rc != AW_OK) {
        reply_error(m->message_id, "invalid_token", aw_strerror(rc));
    } else {
        /* the fuzzer cannot sign: only the seeds get here */
        const int64_t max_s = INT64_MAX / 1000 - 3600;
        int64_t exp_ms = (c.exp > max_s - verifier.leeway_s ? max_s : c.exp + verifier.leeway_s) * 1000;
        reply(m,
              json_pack("{s:s, s:s, s:I}", "type", "ack", "for", "refresh", "expires_at",
                        (json_int_t)exp_ms),
              "ack");
    }
    return O_REFRESH_TOKEN;
}

static enum outcome on_resume(msg_t *m)
{
    json_t *jsince = json_object_get(m->args, "since");
    const char *epoch = json_string_value(json_object_get(m->args, "epoch"));
    if (!json_is_integer(jsince) || json_integer_value(jsince) < 0 || !epoch) {
        reply_error(m->message_id, "invalid_message",
                    "resume needs since (a non-negative integer) and epoch (a string)");
        return O_RESUME_BAD;
    }
    const char *u_epoch = "0123456789abcdef";
    uint64_t since = (uint64_t)json_integer_value(jsince), seq = 5;
    if (strcmp(epoch, u_epoch) != 0 || since > seq) {
        reply(m,
              json_pack("{s:s, s:s, s:s, s:I}", "type", "resume_failed", "reason",
                        strcmp(epoch, u_epoch) != 0 ? "epoch" : "since_ahead", "epoch", u_epoch,
                        "seq", (json_int_t)seq),
              "resume_failed");
        return O_RESUME;
    }
    json_t *ack = json_pack("{s:s, s:s, s:b, s:I, s:s, s:I}", "type", "ack", "for", "resume",
                            "resumed", 1, "missed", (json_int_t)(seq - since), "epoch", u_epoch,
                            "seq", (json_int_t)seq);
    reply(m, ack, "ack");
    return O_RESUME;
}

static enum outcome start_run(msg_t *m, const char *text, json_t *context)
{
    json_t *jthread = json_object_get(m->args, "thread_id");
    const char *thread = json_string_value(jthread);
    if (!text || (jthread && !json_is_null(jthread) && !event_id_valid(thread))) {
        reply_error(m->message_id, "invalid_message",
                    "a run needs its text (a string) and an optional thread_id (an id)");
        return O_RUN_BAD;
    }
    reply(m,
          json_pack("{s:s, s:s, s:s, s:s}", "type", "ack", "for", m->type, "run_id", "run_1",
                    "thread_id", thread ? thread : "thread_1"),
          "ack");
    /* runs_begin(text, context if an object, settings if an object): not mirrored */
    json_t *settings = json_object_get(m->args, "settings");
    (void)settings;
    (void)context;
    return O_RUN;
}

static enum outcome on_start_agent(msg_t *m)
{
    return start_run(m, json_string_value(json_object_get(m->args, "user_request")),
                     json_object_get(m->args, "context"));
}

static enum outcome on_user_message(msg_t *m)
{
    static const char *const fields[] = {"content", "message", "text"};
    const char *text = NULL;
    for (size_t i = 0; i < AW_ARRAY_LEN(fields) && !text; i++)
        text = json_string_value(json_object_get(m->args, fields[i]));
    json_t *refs = json_object_get(m->args, "references");
    json_t *context = refs ? json_pack("{s:O}", "references", refs) : NULL;
    if (refs)
        FUZZ_CHECK(context != NULL);
    enum outcome o = start_run(m, text, context);
    json_decref(context);
    return o;
}

static enum outcome on_stop_agent(msg_t *m)
{
    const char *run_id = json_string_value(json_object_get(m->args, "run_id"));
    if (!run_id) {
        reply_error(m->message_id, "invalid_message", "stop_agent needs run_id");
        return O_STOP_BAD;
    }
    reply(m, json_pack("{s:s, s:s, s:s}", "type", "ack", "for", "stop_agent", "run_id", run_id),
          "ack");
    return O_STOP;
}

typedef struct handler {
    const char *type;
    enum outcome (*fn)(msg_t *m);
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

/* client_message() for a text frame, minus the session. */
static enum outcome client_message(const uint8_t *data, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
    enum outcome o;
    if (root)
        FUZZ_CHECK(fz_utf8_valid(data, len)); /* jansson loads UTF-8 only */
    if (!json_is_object(root)) {
        json_decref(root);
        reply_error(NULL, "invalid_json", "a message must be a JSON object");
        return O_BAD_JSON;
    }
    msg_t m = {.root = root};
    m.message_id = json_object_get(root, "message_id");
    if (m.message_id && !json_is_string(m.message_id)) {
        m.message_id = NULL;
        reply_error(NULL, "invalid_message", "message_id must be a string");
        o = O_BAD_ID;
        goto out;
    }
    m.type = json_string_value(json_object_get(root, "type"));
    if (!m.type) {
        reply_error(m.message_id, "invalid_message", "a message needs a string type");
        o = O_NO_TYPE;
        goto out;
    }
    json_t *payload = json_object_get(root, "payload");
    m.args = json_is_object(payload) ? payload : root;
    for (size_t i = 0; i < AW_ARRAY_LEN(handlers); i++) {
        if (strcmp(m.type, handlers[i].type) == 0) {
            o = handlers[i].fn(&m);
            goto out;
        }
    }
    reply_error(m.message_id, "unknown_type", "unknown message type");
    o = O_UNKNOWN;
out:
    json_decref(root);
    return o;
}

/* ---- the rules, restated (PROTOCOL: client messages) ---- */

static bool is(const char *t, const char *const *names)
{
    for (; *names; names++)
        if (strcmp(t, *names) == 0)
            return true;
    return false;
}

static bool id_ok(const json_t *v)
{
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) > 255)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return false;
    return true;
}

static enum outcome expected(const uint8_t *data, size_t len)
{
    json_t *root = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, NULL);
    enum outcome o;
    if (!json_is_object(root)) {
        json_decref(root);
        return O_BAD_JSON;
    }
    const json_t *id = json_object_get(root, "message_id"), *type = json_object_get(root, "type");
    const json_t *payload = json_object_get(root, "payload");
    const json_t *a = json_is_object(payload) ? payload : root;
#define A(name) json_object_get(a, name)
    static const char *const starts[] = {"start_agent", "execute_agent", NULL};
    static const char *const messages[] = {"user_message", "chat_message", "message",
                                           "user_input",   "chat",         NULL};
    if (id && !json_is_string(id)) {
        o = O_BAD_ID;
    } else if (!json_is_string(type)) {
        o = O_NO_TYPE;
    } else {
        const char *t = json_string_value(type);
        const json_t *thread = A("thread_id");
        bool thread_ok = !thread || json_is_null(thread) || id_ok(thread);
        if (strcmp(t, "ping") == 0)
            o = O_PONG;
        else if (strcmp(t, "heartbeat") == 0)
            o = O_HEARTBEAT_ACK;
        else if (strcmp(t, "refresh") == 0)
            o = json_is_string(A("token")) ? O_REFRESH_TOKEN : O_REFRESH_BAD;
        else if (strcmp(t, "resume") == 0)
            o = json_is_integer(A("since")) && json_integer_value(A("since")) >= 0 &&
                        json_is_string(A("epoch"))
                    ? O_RESUME
                    : O_RESUME_BAD;
        else if (is(t, starts))
            o = json_is_string(A("user_request")) && thread_ok ? O_RUN : O_RUN_BAD;
        else if (is(t, messages))
            o = (json_is_string(A("content")) || json_is_string(A("message")) ||
                 json_is_string(A("text"))) &&
                        thread_ok
                    ? O_RUN
                    : O_RUN_BAD;
        else if (strcmp(t, "stop_agent") == 0)
            o = json_is_string(A("run_id")) ? O_STOP : O_STOP_BAD;
        else
            o = O_UNKNOWN;
    }
#undef A
    json_decref(root);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        init = true;
        FUZZ_CHECK(jwt_verifier_init_secret(&verifier, "agentwire-fuzz-secret", 21) == 0);
    }
    /* an exact-size copy: jansson reads by length, ASan watches the end */
    uint8_t *msg = fz_dup(data, size);
    enum outcome got = client_message(msg, size);
    FUZZ_CHECK(got == expected(msg, size));
    free(msg);
    return 0;
}
