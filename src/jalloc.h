/* jalloc.h -- the allocator jansson uses in the server: free lists of small
 * blocks per size class and thread.
 *
 * A request body or an agent line is parsed into dozens of small nodes that
 * are freed together a moment later. Through glibc's malloc that churn cost
 * about a third of the publish path (profiled under `make bench`); here a
 * node comes from a list and goes back to it. Each thread's lists keep at
 * most JALLOC_CACHE_BYTES; blocks past that, and large blocks, go to malloc. */
#ifndef AW_JALLOC_H
#define AW_JALLOC_H

#include <jansson.h>
#include <stddef.h>

#define JALLOC_CACHE_BYTES ((size_t)4 << 20)

void *jalloc_malloc(size_t size);
void jalloc_free(void *p);

/* Makes jansson use the two functions above (call before any JSON use). */
void jalloc_install(void);

/* json_dumps, but the text is malloc'd (free it with free): jansson's own
 * json_dumps allocates with the functions above. NULL when out of memory. */
char *jalloc_dumps(const json_t *json, size_t flags);

/* Gives this thread's cached blocks back to malloc (at thread exit). */
void jalloc_release(void);

#endif
