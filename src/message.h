/* message.h -- reads what a client sends (PROTOCOL section 4) from the text
 * of one message: a JSON object with a string type, an optional string
 * message_id, and its arguments in payload or flat. Pure: no I/O, no
 * session; client.c acts on the result, tests and fuzzers call it directly. */
#ifndef AW_MESSAGE_H
#define AW_MESSAGE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"

/* A client message read from JSON text (PROTOCOL section 4). */
typedef struct client_msg {
    json_t *root;       /* owned by the caller after client_read: json_decref it */
    const char *type;   /* borrowed from root */
    json_t *message_id; /* borrowed string, or NULL */
    json_t *args;       /* the payload object, or root when there is none */
} client_msg_t;

typedef struct client_read_error {
    enum metrics_error code; /* ERR_INVALID_JSON or ERR_INVALID_MESSAGE */
    const char *text;        /* static */
    json_t *message_id;      /* to echo, when it was readable */
} client_read_error_t;

/* Reads one text message: a JSON object with a string type, an optional
 * string message_id, and arguments in payload or flat. Pure: no I/O. 0, or
 * AW_EINVAL with *err filled; out->root must be released in both cases. */
int client_read(const uint8_t *data, size_t len, client_msg_t *out, client_read_error_t *err);

#endif
