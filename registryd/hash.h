/*
 * hash.h — the daemon's string and integer hashes, one copy each: FNV-1a
 * (64-bit) for hash tables and keys, and a 64-bit finalizer (MurmurHash3's
 * fmix64) to mix integers, e.g. for rendezvous hashing. Not for anything an
 * attacker must not predict.
 */
#ifndef REGISTRYD_HASH_H
#define REGISTRYD_HASH_H

#include <stddef.h>
#include <stdint.h>

#define HASH_FNV64_OFFSET 1469598103934665603ULL
#define HASH_FNV64_PRIME 1099511628211ULL

static inline uint64_t hash_fnv1a64(const char *s)
{
    uint64_t h = HASH_FNV64_OFFSET;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * HASH_FNV64_PRIME;
    return h;
}

static inline uint64_t hash_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

#endif
