/* message.c -- the client message reader. Parses and checks the envelope of
 * one message; never acts on it (client.c does) and never sees a socket. */
#include "message.h"

#include <string.h>

#include "aw.h"

int client_read(const uint8_t *data, size_t len, client_msg_t *out, client_read_error_t *err)
{
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    json_error_t jerr;
    out->root = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(out->root)) {
        err->code = ERR_INVALID_JSON;
        err->text = "a message must be a JSON object";
        return AW_EINVAL;
    }
    json_t *id = json_object_get(out->root, "message_id");
    if (id && !json_is_string(id)) {
        err->code = ERR_INVALID_MESSAGE;
        err->text = "message_id must be a string";
        return AW_EINVAL;
    }
    out->message_id = err->message_id = id;
    out->type = json_string_value(json_object_get(out->root, "type"));
    if (!out->type) {
        err->code = ERR_INVALID_MESSAGE;
        err->text = "a message needs a string type";
        return AW_EINVAL;
    }
    json_t *payload = json_object_get(out->root, "payload");
    out->args = json_is_object(payload) ? payload : out->root;
    return AW_OK;
}
