/* shard.c -- FNV-1a 64 and jump consistent hash (shard.h). */
#include "shard.h"

#include <string.h>

uint64_t shard_fnv1a64(const char *data, size_t len)
{
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)data[i];
        h *= 1099511628211ULL;
    }
    return h;
}

int32_t shard_jump(uint64_t key, int32_t buckets)
{
    int64_t b = -1, j = 0;
    while (j < buckets) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1)));
    }
    return (int32_t)b;
}

int shard_of(const char *user_id, int n)
{
    return n <= 1 ? 0 : shard_jump(shard_fnv1a64(user_id, strlen(user_id)), n);
}
