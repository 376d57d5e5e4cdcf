/* frame.c -- allocation and release of shared frames. One malloc per frame,
 * header and payload together; never per recipient. */
#include "frame.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

#define VARIANT_MIN_BITS 9
#define VARIANTS         7 /* window bits 9..15 */

frame_t *frame_alloc(size_t len)
{
    if (len > UINT32_MAX)
        return NULL;
    frame_t *f = malloc(sizeof *f + len);
    if (!f)
        return NULL;
    atomic_init(&f->refs, 1);
    f->len = (uint32_t)len;
    f->_vars = NULL;
    return f;
}

frame_t *frame_ws(uint8_t opcode, const void *payload, size_t len)
{
    if (len > UINT32_MAX - WS_MAX_HEADER)
        return NULL;
    uint8_t head[WS_MAX_HEADER];
    size_t hlen = ws_frame_header(head, opcode, true, len);
    frame_t *f = frame_alloc(hlen + len);
    if (!f)
        return NULL;
    memcpy(f->data, head, hlen);
    if (len)
        memcpy(f->data + hlen, payload, len);
    return f;
}

frame_t *frame_raw(const void *bytes, size_t len)
{
    frame_t *f = frame_alloc(len);
    if (!f)
        return NULL;
    memcpy(f->data, bytes, len);
    return f;
}

void frame_unref(frame_t *f)
{
    if (!f || atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (f->_vars) {
        for (size_t i = 0; i < VARIANTS; i++)
            if (f->_vars[i] != f)
                frame_unref(f->_vars[i]);
        free(f->_vars);
    }
    free(f);
}

frame_t *frame_variant(const frame_t *f, uint8_t wb)
{
    return f->_vars && wb >= VARIANT_MIN_BITS && wb < VARIANT_MIN_BITS + VARIANTS
               ? f->_vars[wb - VARIANT_MIN_BITS]
               : NULL;
}

void frame_set_variant(frame_t *f, uint8_t wb, frame_t *v)
{
    if (wb < VARIANT_MIN_BITS || wb >= VARIANT_MIN_BITS + VARIANTS)
        return;
    if (!f->_vars && !(f->_vars = calloc(VARIANTS, sizeof *f->_vars)))
        return;
    frame_t **slot = &f->_vars[wb - VARIANT_MIN_BITS];
    if (*slot && *slot != f)
        frame_unref(*slot);
    *slot = v == f ? f : frame_ref(v); /* never a reference to itself: no cycle */
}

const uint8_t *frame_ws_payload(const frame_t *f, size_t *len)
{
    uint8_t n = f->data[1] & 0x7f;
    size_t hlen = n == 127 ? 10 : n == 126 ? 4 : 2;
    *len = f->len - hlen;
    return f->data + hlen;
}
