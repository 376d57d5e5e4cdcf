/* fuzz_client_message.c -- libFuzzer target for the client message reader,
 * src/message.c client_read(), the very function client.c calls for every
 * text message.
 *
 * Input: the payload of one text message (the WebSocket layer has already
 * checked that it is UTF-8; invalid UTF-8 is fed too, and must not load).
 *
 * Invariants: the reader never crashes or leaks; JSON that loads is valid
 * UTF-8; on success type is root's string "type", message_id is absent or
 * root's string "message_id", args is the payload object or root; on failure
 * the error code is invalid_json exactly when the text is not a JSON object,
 * otherwise invalid_message; and the outcome agrees with the rules of
 * PROTOCOL section 4 restated independently below (expected()), including
 * which handler's arguments are present.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aw.h"
#include "event.h"
#include "fuzz_common.h"
#include "message.h"

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

/* What client.c does with a message of this type and these arguments. */
static enum outcome rules(const char *t, const json_t *a)
{
#define A(name) json_object_get(a, name)
    static const char *const starts[] = {"start_agent", "execute_agent", NULL};
    static const char *const messages[] = {"user_message", "chat_message", "message",
                                           "user_input",   "chat",         NULL};
    const json_t *thread = A("thread_id");
    bool thread_ok = !thread || json_is_null(thread) || id_ok(thread);
    if (strcmp(t, "ping") == 0)
        return O_PONG;
    if (strcmp(t, "heartbeat") == 0)
        return O_HEARTBEAT_ACK;
    if (strcmp(t, "refresh") == 0)
        return json_is_string(A("token")) ? O_REFRESH_TOKEN : O_REFRESH_BAD;
    if (strcmp(t, "resume") == 0)
        return json_is_integer(A("since")) && json_integer_value(A("since")) >= 0 &&
                       json_is_string(A("epoch"))
                   ? O_RESUME
                   : O_RESUME_BAD;
    if (is(t, starts))
        return json_is_string(A("user_request")) && thread_ok ? O_RUN : O_RUN_BAD;
    if (is(t, messages))
        return (json_is_string(A("content")) || json_is_string(A("message")) ||
                json_is_string(A("text"))) &&
                       thread_ok
                   ? O_RUN
                   : O_RUN_BAD;
    if (strcmp(t, "stop_agent") == 0)
        return json_is_string(A("run_id")) ? O_STOP : O_STOP_BAD;
    return O_UNKNOWN;
#undef A
}

/* PROTOCOL section 4 restated on an independent parse of the text. */
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
    if (id && !json_is_string(id))
        o = O_BAD_ID;
    else if (!json_is_string(type))
        o = O_NO_TYPE;
    else
        o = rules(json_string_value(type), json_is_object(payload) ? payload : root);
    json_decref(root);
    return o;
}

/* The real reader, then the handler rules on its result. */
static enum outcome read_real(const uint8_t *data, size_t len)
{
    client_msg_t m;
    client_read_error_t err;
    int rc = client_read(data, len, &m, &err);
    if (m.root)
        FUZZ_CHECK(fz_utf8_valid(data, len)); /* jansson loads UTF-8 only */
    enum outcome o;
    if (rc != AW_OK) {
        FUZZ_CHECK(err.text != NULL);
        bool object = json_is_object(m.root);
        FUZZ_CHECK((err.code == ERR_INVALID_JSON) == !object);
        FUZZ_CHECK(object || err.code == ERR_INVALID_JSON);
        if (!object)
            o = O_BAD_JSON;
        else if (json_object_get(m.root, "message_id") &&
                 !json_is_string(json_object_get(m.root, "message_id")))
            o = O_BAD_ID;
        else
            o = O_NO_TYPE;
        json_decref(m.root);
        return o;
    }
    FUZZ_CHECK(json_is_object(m.root));
    FUZZ_CHECK(m.type == json_string_value(json_object_get(m.root, "type")));
    FUZZ_CHECK(!m.message_id || m.message_id == json_object_get(m.root, "message_id"));
    FUZZ_CHECK(!m.message_id || json_is_string(m.message_id));
    json_t *payload = json_object_get(m.root, "payload");
    FUZZ_CHECK(m.args == (json_is_object(payload) ? payload : m.root));
    o = rules(m.type, m.args);
    json_decref(m.root);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy: jansson reads by length, ASan watches the end */
    uint8_t *msg = fz_dup(data, size);
    FUZZ_CHECK(read_real(msg, size) == expected(msg, size));
    free(msg);
    return 0;
}
