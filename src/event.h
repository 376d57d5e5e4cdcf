/* event.h -- what makes an event publishable (PROTOCOL section 2): a type
 * name of the right shape, and for the five agent events their required
 * fields. Pure: reads a JSON object, never changes it, no I/O. */
#ifndef AW_EVENT_H
#define AW_EVENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define EVENT_MAX_ID 255 /* longest user_id, thread_id or run_id, bytes */

/* True for [a-z][a-z0-9_]{0,63}. */
bool event_type_valid(const char *type);

/* True for a non-empty string id of at most EVENT_MAX_ID bytes with no
 * control characters. */
bool event_id_valid(const char *id);

/* Checks ev (an object) against the rules. 0, or AW_EINVAL with a short
 * human-readable reason in msg ("agent_started needs agent_name"). */
int event_validate(const json_t *ev, char *msg, size_t msglen);

#endif
