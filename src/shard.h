/* shard.h -- which Redis shard a user lives on: jump consistent hash
 * (Lamping and Veach, 2014) over the 64-bit FNV-1a of the user id, as
 * Centrifugo places channels. Stable: the same id and shard count always give
 * the same shard; growing from n to n+1 shards moves about 1/(n+1) of the
 * users. Pure functions, no state. */
#ifndef AW_SHARD_H
#define AW_SHARD_H

#include <stddef.h>
#include <stdint.h>

uint64_t shard_fnv1a64(const char *data, size_t len);

/* A bucket in [0, buckets) for key (buckets >= 1). */
int32_t shard_jump(uint64_t key, int32_t buckets);

/* The shard of a user id among n. */
int shard_of(const char *user_id, int n);

#endif
