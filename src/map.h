/* map.h -- a string-keyed hash map with a per-map random seed (SipHash-2-4),
 * so keys chosen by peers (user ids, tickets) cannot force collisions.
 * The map copies keys; values are the caller's and are never freed here. */
#ifndef AW_MAP_H
#define AW_MAP_H

#include <stdbool.h>
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
/* Frees the map's own memory, and each value with free_value when it is not
 * NULL. */
void map_dispose(map_t *m, void (*free_value)(void *value));

/* The entry for key, or NULL. */
map_entry_t *map_find(const map_t *m, const char *key, size_t keylen);
void *map_get(const map_t *m, const char *key, size_t keylen);

/* Inserts key -> value, or replaces the value of an existing key. Returns the
 * entry (valid until it is removed) or NULL when out of memory. */
map_entry_t *map_put(map_t *m, const char *key, size_t keylen, void *value);

/* Removes key; returns its value or NULL when absent. */
void *map_remove(map_t *m, const char *key, size_t keylen);

/* Removes every entry whose value pred accepts, passing the value to
 * free_value (when not NULL). Returns how many were removed. */
size_t map_remove_if(map_t *m, bool (*pred)(const void *value, void *arg), void *arg,
                     void (*free_value)(void *value));

/* Gives back bucket memory after many removals (count < buckets / 4). */
void map_shrink(map_t *m);

uint64_t map_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len);

#endif
