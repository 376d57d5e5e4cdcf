/* frame.c -- allocation and release of shared frames. One malloc per frame,
 * header and payload together; never per recipient. */
#include "frame.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ws.h"

#define VARIANT_MIN_BITS 9
#define VARIANTS         7 /* window bits 9..15 */

/* Cached sizes: from CACHE_MIN_LOG2 (exclusive) to CACHE_MAX_LOG2 (inclusive)
 * bytes, four classes per power of two, so a frame wastes at most a fifth. */
#define CACHE_MIN_LOG2 11
#define CACHE_MAX_LOG2 27
#define CACHE_CLASSES  ((CACHE_MAX_LOG2 - CACHE_MIN_LOG2) * 4)

#if defined(__SANITIZE_ADDRESS__)
#define CACHE_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CACHE_OFF 1
#endif
#endif

typedef struct frame_cache {
    frame_t *free[CACHE_CLASSES]; /* linked through _vars */
    uint32_t count[CACHE_CLASSES];
    uint32_t low[CACHE_CLASSES]; /* fewest free since the last trim */
    size_t bytes, limit;
} frame_cache_t;

static _Thread_local frame_cache_t *tl_cache;

/* The class of an allocation of n bytes and its size, or -1. */
static int size_class(size_t n, size_t *cap)
{
    if (n <= (size_t)1 << CACHE_MIN_LOG2 || n > (size_t)1 << CACHE_MAX_LOG2)
        return -1;
    unsigned k = 63u - (unsigned)__builtin_clzll((unsigned long long)(n - 1)); /* 2^k < n */
    size_t quarter = (size_t)1 << (k - 2);
    size_t q = (n - 1 - ((size_t)1 << k)) / quarter; /* 0..3 */
    *cap = ((size_t)1 << k) + (q + 1) * quarter;
    return (int)((k - CACHE_MIN_LOG2) * 4 + q);
}

static size_t class_size(int c)
{
    unsigned k = (unsigned)c / 4 + CACHE_MIN_LOG2;
    return ((size_t)1 << k) + ((size_t)c % 4 + 1) * ((size_t)1 << (k - 2));
}

frame_t *frame_alloc(size_t len)
{
    if (len > UINT32_MAX)
        return NULL;
    frame_cache_t *c = tl_cache;
    size_t cap = sizeof(frame_t) + len;
    int cls = c ? size_class(cap, &cap) : -1;
    frame_t *f = NULL;
    if (cls >= 0 && (f = c->free[cls])) {
        c->free[cls] = (frame_t *)f->_vars;
        if (--c->count[cls] < c->low[cls])
            c->low[cls] = c->count[cls];
        c->bytes -= cap;
    } else {
        f = malloc(cap);
    }
    if (!f)
        return NULL;
    atomic_init(&f->refs, 1);
    f->len = (uint32_t)len;
    f->_vars = NULL;
    f->_class = cls;
    return f;
}

/* Back to this thread's cache when it has room; freed otherwise. */
static void frame_release(frame_t *f)
{
    frame_cache_t *c = tl_cache;
    int cls = f->_class;
    if (c && cls >= 0 && c->bytes + class_size(cls) <= c->limit) {
        f->_vars = (frame_t **)c->free[cls];
        c->free[cls] = f;
        c->count[cls]++;
        c->bytes += class_size(cls);
        return;
    }
    free(f);
}

frame_t *frame_grow(frame_t *f, size_t len, size_t keep)
{
    size_t cap = 0;
    if (f->_class >= 0)
        cap = class_size(f->_class) - sizeof(frame_t);
    if (len <= cap || len <= f->len) {
        f->len = (uint32_t)len;
        return f;
    }
    frame_t *g = frame_alloc(len);
    if (!g)
        return NULL;
    if (keep)
        memcpy(g->data, f->data, keep);
    frame_unref(f);
    return g;
}

void frame_cache_attach(size_t limit)
{
#ifdef CACHE_OFF
    (void)limit;
#else
    if (tl_cache || limit == 0)
        return;
    tl_cache = calloc(1, sizeof *tl_cache);
    if (tl_cache)
        tl_cache->limit = limit;
#endif
}

/* Frees up to n frames of class cls. */
static void cache_drop(frame_cache_t *c, int cls, uint32_t n)
{
    while (n-- && c->free[cls]) {
        frame_t *f = c->free[cls];
        c->free[cls] = (frame_t *)f->_vars;
        c->count[cls]--;
        c->bytes -= class_size(cls);
        free(f);
    }
}

void frame_cache_trim(size_t limit)
{
    frame_cache_t *c = tl_cache;
    if (!c)
        return;
    c->limit = limit;
    for (int i = CACHE_CLASSES - 1; i >= 0; i--) { /* over the bound: the largest go first */
        cache_drop(c, i, c->low[i]);
        while (c->bytes > c->limit && c->count[i])
            cache_drop(c, i, 1);
        c->low[i] = c->count[i];
    }
}

void frame_cache_detach(void)
{
    frame_cache_t *c = tl_cache;
    if (!c)
        return;
    for (int i = 0; i < CACHE_CLASSES; i++)
        cache_drop(c, i, UINT32_MAX);
    free(c);
    tl_cache = NULL;
}

size_t frame_cache_bytes(void)
{
    return tl_cache ? tl_cache->bytes : 0;
}

frame_t *frame_ws_parts(uint8_t opcode, const void *a, size_t alen, const void *b, size_t blen)
{
    size_t len = alen + blen;
    if (len > UINT32_MAX - WS_MAX_HEADER)
        return NULL;
    uint8_t head[WS_MAX_HEADER];
    size_t hlen = ws_frame_header(head, opcode, true, len);
    frame_t *f = frame_alloc(hlen + len);
    if (!f)
        return NULL;
    memcpy(f->data, head, hlen);
    if (alen)
        memcpy(f->data + hlen, a, alen);
    if (blen)
        memcpy(f->data + hlen + alen, b, blen);
    return f;
}

frame_t *frame_ws(uint8_t opcode, const void *payload, size_t len)
{
    return frame_ws_parts(opcode, payload, len, NULL, 0);
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
    frame_release(f);
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
