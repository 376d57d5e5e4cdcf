/* jalloc.c -- size-class free lists for jansson's small nodes (jalloc.h). */
#include "jalloc.h"

#include "aw.h"

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>

#define CLASS_BYTES 16
#define NCLASSES    16 /* blocks up to 256 bytes are cached */

/* Every block starts with its size class (0: a large block, not cached),
 * padded so the caller's memory keeps malloc's 16-byte alignment. */
typedef union header {
    uint32_t cls;
    union header *next; /* while on a free list */
    max_align_t align;
} header_t;

typedef struct cache {
    header_t *head[NCLASSES + 1];
    size_t bytes;
} cache_t;

static _Thread_local cache_t cache;

void *jalloc_malloc(size_t size)
{
    size_t cls = (size + CLASS_BYTES - 1) / CLASS_BYTES;
    if (cls == 0)
        cls = 1;
    if (cls > NCLASSES) {
        header_t *h = malloc(sizeof *h + size);
        if (!h)
            return NULL;
        h->cls = 0;
        return h + 1;
    }
    header_t *h = cache.head[cls];
    if (h) {
        cache.head[cls] = h->next;
        cache.bytes -= cls * CLASS_BYTES;
    } else if (!(h = malloc(sizeof *h + cls * CLASS_BYTES))) {
        return NULL;
    }
    h->cls = (uint32_t)cls;
    return h + 1;
}

void jalloc_free(void *p)
{
    if (!p)
        return;
    header_t *h = (header_t *)p - 1;
    size_t cls = h->cls;
    if (cls == 0 || cache.bytes + cls * CLASS_BYTES > JALLOC_CACHE_BYTES) {
        free(h);
        return;
    }
    h->next = cache.head[cls];
    cache.head[cls] = h;
    cache.bytes += cls * CLASS_BYTES;
}

char *jalloc_dumps(const json_t *json, size_t flags)
{
    aw_buf_t t = {0};
    if (json_dump_callback(json, aw_buf_append, &t, flags) != 0 || aw_buf_append("", 1, &t) != 0) {
        aw_buf_free(&t);
        return NULL;
    }
    return t.data;
}

void jalloc_install(void)
{
#ifndef __SANITIZE_ADDRESS__ /* AddressSanitizer should see every JSON node's life */
    json_set_alloc_funcs(jalloc_malloc, jalloc_free);
#endif
}

void jalloc_release(void)
{
    for (size_t c = 1; c <= NCLASSES; c++) {
        while (cache.head[c]) {
            header_t *h = cache.head[c];
            cache.head[c] = h->next;
            free(h);
        }
    }
    cache.bytes = 0;
}
