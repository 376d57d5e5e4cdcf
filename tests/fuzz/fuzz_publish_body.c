/* fuzz_publish_body.c -- libFuzzer target for the publish body reader: the
 * steps src/api.c (parse_body, publish_one, on_publish, on_batch) and
 * src/hub.c (hub_publish up to the delivered text) take on the body of
 * POST /api/v1/publish and POST /api/v1/batch, with src/event.c doing the
 * validation.
 *
 * Those functions are tied to a server (sessions, hub, idempotency cache,
 * runs), so this target calls none of them: it MIRRORS their parsing steps,
 * in the same order and with the same library calls, and calls the pure
 * functions they use (event_id_valid, event_validate). Nothing in src/ was
 * refactored for it. Left out: runs_admit (run order, needs the runs table)
 * and the idempotency cache.
 *
 * Input: the HTTP body. It goes both ways, as each endpoint would receive it:
 * publish (one object) and batch (an array of at most 1000 events, each
 * published in turn).
 *
 * Invariants:
 *  - event_validate agrees with a reference validator written here from
 *    PROTOCOL section 2 (type shape, ids, the five agent events' fields);
 *  - it never changes the event (same dump before and after, same refcount),
 *    gives the same answer twice and after a dump/reload round trip;
 *  - its message is NUL-terminated inside msglen (also for msglen 0..8, in
 *    exact-size buffers) and non-empty on failure;
 *  - an accepted event, stamped as hub_publish does, dumps to valid UTF-8
 *    JSON that loads back equal.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "aw.h"
#include "event.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BATCH_MAX    1000 /* api.c */
#define IDEM_MAX_KEY 255  /* idem.h */

/* ---- the reference, from PROTOCOL section 2 ---- */

static bool ref_id(const json_t *v)
{
    if (!json_is_string(v))
        return false;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 || n > 255 || strlen(s) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return false;
    return true;
}

static bool ref_type(const json_t *v)
{
    if (!json_is_string(v))
        return false;
    const char *s = json_string_value(v);
    size_t n = strlen(s);
    if (n < 1 || n > 64 || !(s[0] >= 'a' && s[0] <= 'z'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

static bool ref_status(const json_t *v)
{
    static const char *const ok[] = {"success", "error", "cancelled", "timeout"};
    for (size_t i = 0; json_is_string(v) && i < 4; i++)
        if (strcmp(json_string_value(v), ok[i]) == 0)
            return true;
    return false;
}

static bool ref_valid(const json_t *ev)
{
    if (!json_is_object(ev) || !ref_type(json_object_get(ev, "type")))
        return false;
    const char *t = json_string_value(json_object_get(ev, "type"));
    const json_t *thread = json_object_get(ev, "thread_id"), *run = json_object_get(ev, "run_id");
#define F(name) json_object_get(ev, name)
    bool agent = true, fields = false;
    if (strcmp(t, "agent_started") == 0)
        fields = ref_id(F("agent_name"));
    else if (strcmp(t, "agent_thinking") == 0)
        fields = json_is_string(F("reasoning"));
    else if (strcmp(t, "tool_executing") == 0)
        fields = ref_id(F("tool_name")) && json_is_object(F("parameters"));
    else if (strcmp(t, "tool_completed") == 0)
        fields = ref_id(F("tool_name")) && F("results") != NULL && json_is_number(F("duration")) &&
                 json_number_value(F("duration")) >= 0;
    else if (strcmp(t, "agent_completed") == 0)
        fields = ref_status(F("status")) && json_is_string(F("final_response"));
    else
        agent = false;
#undef F
    if (agent)
        return ref_id(thread) && ref_id(run) && fields;
    return (!thread || ref_id(thread)) && (!run || ref_id(run));
}

/* ---- the checks around one event_validate ---- */

static char *dump(const json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    FUZZ_CHECK(s != NULL);
    return s;
}

static int validate_checked(json_t *ev)
{
    char *before = dump(ev);
    size_t refs = ev->refcount;
    char msg[200]; /* hub_receipt_t.error */
    memset(msg, 0x5A, sizeof(msg));
    int rc = event_validate(ev, msg, sizeof(msg));
    FUZZ_CHECK(rc == AW_OK || rc == AW_EINVAL);
    FUZZ_CHECK((rc == AW_OK) == ref_valid(ev));
    if (rc != AW_OK)
        FUZZ_CHECK(memchr(msg, '\0', sizeof(msg)) != NULL && msg[0] != '\0');

    /* short messages: cut, NUL-terminated, never written past msglen */
    for (size_t len = 0; len <= 8; len++) {
        char *small = malloc(len ? len : 1);
        FUZZ_CHECK(small != NULL);
        memset(small, 0x5A, len ? len : 1);
        FUZZ_CHECK(event_validate(ev, small, len) == rc);
        if (len == 0)
            FUZZ_CHECK(small[0] == 0x5A);
        else if (rc != AW_OK)
            FUZZ_CHECK(memchr(small, '\0', len) != NULL && strncmp(small, msg, len - 1) == 0);
        free(small);
    }

    char *after = dump(ev);
    FUZZ_CHECK(strcmp(before, after) == 0 && ev->refcount == refs);
    /* a round trip through text changes nothing */
    json_t *again = json_loads(before, JSON_DECODE_ANY, NULL);
    FUZZ_CHECK(again != NULL && json_equal(again, ev));
    FUZZ_CHECK(event_validate(again, msg, sizeof(msg)) == rc);
    json_decref(again);
    free(before);
    free(after);
    return rc;
}

/* What hub_publish does to an accepted event before it leaves (stamp, then
 * a compact dump): the text must be UTF-8 JSON that loads back equal. */
static void stamp_and_dump(json_t *ev, const char *user)
{
    int rc = 0;
    rc |= json_object_set_new(ev, "seq", json_integer(1));
    rc |= json_object_set_new(ev, "epoch", json_string("0123456789abcdef"));
    rc |= json_object_set_new(ev, "event_id", json_string("ev_fuzz000000000001"));
    rc |= json_object_set_new(ev, "timestamp", json_integer(1700000000000));
    rc |= json_object_set_new(ev, "user_id", json_string(user));
    FUZZ_CHECK(rc == 0);
    char *text = json_dumps(ev, JSON_COMPACT);
    FUZZ_CHECK(text != NULL);
    FUZZ_CHECK(fz_utf8_valid((const uint8_t *)text, strlen(text)));
    json_t *back = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    FUZZ_CHECK(back != NULL && json_equal(back, ev));
    json_decref(back);
    free(text);
}

/* api.c publish_one, minus the idempotency cache and the hub's user table. */
static void publish_one(json_t *ev, const char *idem_header)
{
    if (!json_is_object(ev)) {
        /* 422; event_validate says the same */
        char msg[200];
        FUZZ_CHECK(event_validate(ev, msg, sizeof(msg)) == AW_EINVAL);
        return;
    }
    const char *user = json_string_value(json_object_get(ev, "user_id"));
    if (!event_id_valid(user)) {
        FUZZ_CHECK(!ref_id(json_object_get(ev, "user_id")));
        return;
    }
    FUZZ_CHECK(ref_id(json_object_get(ev, "user_id")));
    json_t *key = json_object_get(ev, "idempotency_key");
    const char *idem = idem_header;
    if (key) {
        idem = json_string_value(key);
        if (!idem || !*idem || strlen(idem) > IDEM_MAX_KEY)
            return; /* 422 */
    }
    char user_copy[EVENT_MAX_ID + 1], idem_copy[IDEM_MAX_KEY + 1];
    snprintf(user_copy, sizeof user_copy, "%s", user);
    snprintf(idem_copy, sizeof idem_copy, "%s", idem ? idem : "");
    FUZZ_CHECK(strcmp(user_copy, user) == 0);
    json_object_del(ev, "idempotency_key"); /* frees key: only the copies from here */
    /* hub_publish */
    FUZZ_CHECK(event_id_valid(user_copy));
    if (validate_checked(ev) != AW_OK)
        return; /* 422 */
    stamp_and_dump(ev, user_copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* parse_body: the body is not NUL-terminated as far as jansson knows */
    char *body = (char *)fz_dup(data, size);
    json_error_t jerr;
    json_t *root = json_loadb(body, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        FUZZ_CHECK(memchr(jerr.text, '\0', sizeof(jerr.text)) != NULL);
        free(body);
        return 0; /* 400 */
    }
    FUZZ_CHECK(fz_utf8_valid(data, size)); /* jansson only loads UTF-8 */

    /* any JSON value is also checked as an event, unchanged */
    validate_checked(root);

    /* POST /api/v1/publish, on a copy: publish_one edits the event */
    json_t *one = json_deep_copy(root);
    FUZZ_CHECK(one != NULL);
    publish_one(one, (size && data[0] == '{') ? "header-key" : NULL);
    json_decref(one);

    /* POST /api/v1/batch */
    if (json_is_array(root) && json_array_size(root) <= BATCH_MAX) {
        size_t i;
        json_t *ev;
        json_array_foreach(root, i, ev)
        {
            publish_one(ev, NULL);
        }
    }
    json_decref(root);
    free(body);
    return 0;
}
