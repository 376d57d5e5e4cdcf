/* frame.c -- allocation and release of shared frames. One malloc per frame,
 * header and payload together; never per recipient. */
#include "frame.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

frame_t *frame_ws(uint8_t opcode, const void *payload, size_t len)
{
    if (len > UINT32_MAX - WS_MAX_HEADER)
        return NULL;
    uint8_t head[WS_MAX_HEADER];
    size_t hlen = ws_frame_header(head, opcode, true, len);
    frame_t *f = malloc(sizeof *f + hlen + len);
    if (!f)
        return NULL;
    f->refs = 1;
    f->len = (uint32_t)(hlen + len);
    memcpy(f->data, head, hlen);
    if (len)
        memcpy(f->data + hlen, payload, len);
    return f;
}

frame_t *frame_raw(const void *bytes, size_t len)
{
    if (len > UINT32_MAX)
        return NULL;
    frame_t *f = malloc(sizeof *f + len);
    if (!f)
        return NULL;
    f->refs = 1;
    f->len = (uint32_t)len;
    memcpy(f->data, bytes, len);
    return f;
}

void frame_unref(frame_t *f)
{
    if (f && --f->refs == 0)
        free(f);
}

const uint8_t *frame_ws_payload(const frame_t *f, size_t *len)
{
    uint8_t n = f->data[1] & 0x7f;
    size_t hlen = n == 127 ? 10 : n == 126 ? 4 : 2;
    *len = f->len - hlen;
    return f->data + hlen;
}
