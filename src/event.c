/* event.c -- validation of published events against PROTOCOL section 2.
 * Knows the five agent events and their required fields; knows nothing of
 * users, sequence numbers or delivery (that is the hub's). */
#include "event.h"

#include <stdio.h>
#include <string.h>

#include "aw.h"

enum field_kind { F_ID, F_STRING, F_OBJECT, F_ANY, F_NUMBER, F_STATUS };

typedef struct field_rule {
    const char *name;
    enum field_kind kind;
} field_rule_t;

typedef struct event_rule {
    const char *type;
    field_rule_t fields[4]; /* besides thread_id and run_id */
} event_rule_t;

static const event_rule_t rules[] = {
    {"agent_started", {{"agent_name", F_ID}}},
    {"agent_thinking", {{"reasoning", F_STRING}}},
    {"tool_executing", {{"tool_name", F_ID}, {"parameters", F_OBJECT}}},
    {"tool_completed", {{"tool_name", F_ID}, {"results", F_ANY}, {"duration", F_NUMBER}}},
    {"agent_completed", {{"status", F_STATUS}, {"final_response", F_STRING}}},
};

static const char *const statuses[] = {"success", "error", "cancelled", "timeout"};

bool event_type_valid(const char *t)
{
    if (!t || !(t[0] >= 'a' && t[0] <= 'z'))
        return false;
    size_t n = 1;
    for (; t[n]; n++) {
        char c = t[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') || n >= 64)
            return false;
    }
    return true;
}

bool event_id_valid(const char *id)
{
    if (!id || !*id)
        return false;
    size_t n = 0;
    for (; id[n]; n++)
        if ((unsigned char)id[n] < 0x20 || id[n] == 0x7f || n >= EVENT_MAX_ID)
            return false;
    return true;
}

static bool field_ok(const json_t *v, enum field_kind kind)
{
    switch (kind) {
    case F_ID:
        return json_is_string(v) && event_id_valid(json_string_value(v));
    case F_STRING:
        return json_is_string(v);
    case F_OBJECT:
        return json_is_object(v);
    case F_ANY:
        return v != NULL;
    case F_NUMBER:
        return json_is_number(v) && json_number_value(v) >= 0;
    case F_STATUS:
        if (!json_is_string(v))
            return false;
        for (size_t i = 0; i < AW_ARRAY_LEN(statuses); i++)
            if (strcmp(json_string_value(v), statuses[i]) == 0)
                return true;
        return false;
    }
    return false;
}

static const char *const kind_text[] = {
    "a non-empty string",
    "a string",
    "an object",
    "present",
    "a non-negative number",
    "one of success, error, cancelled, timeout",
};

int event_validate(const json_t *ev, char *msg, size_t msglen)
{
    if (!json_is_object(ev)) {
        snprintf(msg, msglen, "an event must be a JSON object");
        return AW_EINVAL;
    }
    const char *type = json_string_value(json_object_get(ev, "type"));
    if (!event_type_valid(type)) {
        snprintf(msg, msglen, "type must match [a-z][a-z0-9_]{0,63}");
        return AW_EINVAL;
    }
    for (size_t i = 0; i < AW_ARRAY_LEN(rules); i++) {
        if (strcmp(type, rules[i].type) != 0)
            continue;
        static const field_rule_t ids[] = {{"thread_id", F_ID}, {"run_id", F_ID}};
        for (size_t j = 0; j < AW_ARRAY_LEN(ids); j++) {
            if (!field_ok(json_object_get(ev, ids[j].name), F_ID)) {
                snprintf(msg, msglen, "%s needs %s (a non-empty string)", type, ids[j].name);
                return AW_EINVAL;
            }
        }
        for (const field_rule_t *f = rules[i].fields; f < rules[i].fields + 4 && f->name; f++) {
            if (!field_ok(json_object_get(ev, f->name), f->kind)) {
                snprintf(msg, msglen, "%s needs %s (%s)", type, f->name, kind_text[f->kind]);
                return AW_EINVAL;
            }
        }
        return AW_OK;
    }
    /* Other events may carry run/thread ids; when present they must be ids. */
    static const char *const optional_ids[] = {"thread_id", "run_id"};
    for (size_t j = 0; j < AW_ARRAY_LEN(optional_ids); j++) {
        const json_t *v = json_object_get(ev, optional_ids[j]);
        if (v && !field_ok(v, F_ID)) {
            snprintf(msg, msglen, "%s must be a non-empty string", optional_ids[j]);
            return AW_EINVAL;
        }
    }
    return AW_OK;
}
