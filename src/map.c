/* map.c -- chained hash map keyed by strings, hashed with SipHash-2-4 under a
 * random per-map key. Owns its buckets and entries, never the values. */
#include "map.h"

#include <stdlib.h>
#include <string.h>

#include "aw.h"

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static uint64_t load64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

uint64_t map_siphash(uint64_t k0, uint64_t k1, const void *data, size_t len)
{
    const uint8_t *in = data;
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    size_t whole = len & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = load64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t)in[whole + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

int map_init(map_t *m)
{
    memset(m, 0, sizeof *m);
    m->_nbuckets = 16;
    m->_buckets = calloc(m->_nbuckets, sizeof *m->_buckets);
    if (!m->_buckets)
        return AW_ENOMEM;
    uint64_t k[2];
    if (aw_random_bytes(k, sizeof k) != AW_OK)
        return AW_EIO;
    m->_k0 = k[0];
    m->_k1 = k[1];
    return AW_OK;
}

void map_dispose(map_t *m, void (*free_value)(void *value))
{
    for (size_t i = 0; i < m->_nbuckets; i++) {
        map_entry_t *e = m->_buckets[i];
        while (e) {
            map_entry_t *next = e->_next;
            if (free_value)
                free_value(e->value);
            free(e);
            e = next;
        }
    }
    free(m->_buckets);
    m->_buckets = NULL;
    m->count = 0;
}

map_entry_t *map_find(const map_t *m, const char *key, size_t keylen)
{
    uint64_t h = map_siphash(m->_k0, m->_k1, key, keylen);
    for (map_entry_t *e = m->_buckets[h & (m->_nbuckets - 1)]; e; e = e->_next) {
        if (e->_hash == h && e->keylen == keylen && memcmp(e->key, key, keylen) == 0)
            return e;
    }
    return NULL;
}

void *map_get(const map_t *m, const char *key, size_t keylen)
{
    map_entry_t *e = map_find(m, key, keylen);
    return e ? e->value : NULL;
}

/* Rehashes into n buckets (a power of two). */
static void rehash(map_t *m, size_t n)
{
    map_entry_t **b = calloc(n, sizeof *b);
    if (!b)
        return; /* keep the longer chains; still correct */
    for (size_t i = 0; i < m->_nbuckets; i++) {
        map_entry_t *e = m->_buckets[i];
        while (e) {
            map_entry_t *next = e->_next;
            size_t j = e->_hash & (n - 1);
            e->_next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(m->_buckets);
    m->_buckets = b;
    m->_nbuckets = n;
}

static void grow(map_t *m)
{
    rehash(m, m->_nbuckets * 2);
}

void map_shrink(map_t *m)
{
    size_t n = m->_nbuckets;
    while (n > 16 && m->count < n / 4)
        n /= 2;
    if (n < m->_nbuckets)
        rehash(m, n);
}

map_entry_t *map_put(map_t *m, const char *key, size_t keylen, void *value)
{
    map_entry_t *e = map_find(m, key, keylen);
    if (e) {
        e->value = value;
        return e;
    }
    e = malloc(sizeof *e + keylen + 1);
    if (!e)
        return NULL;
    e->_hash = map_siphash(m->_k0, m->_k1, key, keylen);
    e->value = value;
    e->keylen = keylen;
    memcpy(e->key, key, keylen);
    e->key[keylen] = '\0';
    size_t i = e->_hash & (m->_nbuckets - 1);
    e->_next = m->_buckets[i];
    m->_buckets[i] = e;
    if (++m->count > m->_nbuckets)
        grow(m);
    return e;
}

void *map_remove(map_t *m, const char *key, size_t keylen)
{
    uint64_t h = map_siphash(m->_k0, m->_k1, key, keylen);
    map_entry_t **pp = &m->_buckets[h & (m->_nbuckets - 1)];
    for (; *pp; pp = &(*pp)->_next) {
        map_entry_t *e = *pp;
        if (e->_hash == h && e->keylen == keylen && memcmp(e->key, key, keylen) == 0) {
            void *v = e->value;
            *pp = e->_next;
            free(e);
            m->count--;
            return v;
        }
    }
    return NULL;
}

size_t map_remove_if(map_t *m, bool (*pred)(const void *value, void *arg), void *arg,
                     void (*free_value)(void *value))
{
    size_t removed = 0;
    for (size_t i = 0; i < m->_nbuckets; i++) {
        map_entry_t **pp = &m->_buckets[i];
        while (*pp) {
            map_entry_t *e = *pp;
            if (!pred(e->value, arg)) {
                pp = &e->_next;
                continue;
            }
            *pp = e->_next;
            if (free_value)
                free_value(e->value);
            free(e);
            m->count--;
            removed++;
        }
    }
    return removed;
}
