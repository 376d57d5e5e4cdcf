/* map.h -- a string-keyed hash map with a per-map random seed (SipHash-2-4),
 * so keys chosen by peers (user ids, tickets) cannot force collisions.
 * The map copies keys; values are the caller's and are never freed here. */
#ifndef AW_MAP_H
#define AW_MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct map_entry {
    struct map_entry *_next;
    uint64_t _hash;
    void *value;   /* public: the caller's pointer */
    size_t keylen; /* read-only */
    char key[];    /* read-only, NUL-terminated copy */
} map_entry_t;

typedef struct map {
    map_entry_t **_buckets;
    size_t _nbuckets; /* power of two */
    size_t count;     /* read-only: entries held */
    uint64_t _k0, _k1;
} map_t;

int map_init(map_t *m);
/* Frees the map's own memory; values are left to the caller. */
void map_dispose(map_t *m);

/* The entry for key, or NULL. */
map_entry_t *map_find(const map_t *m, const char *key, size_t keylen);
void *map_get(const map_t *m, const char *key, size_t keylen);

/* Inserts key -> value, or replaces the value of an existing key. Returns the
 * entry (valid until it is removed) or NULL when out of memory. */
map_entry_t *map_put(map_t *m, const char *key, size_t keylen, void *value);

/* Removes key; returns its value or NULL when absent. */
void *map_remove(map_t *m, const char *key, size_t keylen);

/* Calls fn for each entry. fn may remove the entry it was given (and no
 * other); it must not insert. */
void map_each(map_t *m, void (*fn)(map_entry_t *e, void *arg), void *arg);

uint64_t map_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len);

#endif
