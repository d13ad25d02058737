/*
 * hash.h — the daemon's string and integer hashes, one copy each:
 * - hash_table_str, for hash tables whose keys clients choose (check and
 *   instance IDs, service names, request URLs): SipHash-1-3 keyed with a
 *   random key drawn at start, so that nobody can choose keys that share a
 *   bucket (with a fixed hash, IDs registered to collide turn every lookup
 *   into a walk of all of them: the same flood Consul's Go maps resist with
 *   their per-process seed);
 * - FNV-1a (64-bit), for what must hash the same in every process and run
 *   (rendezvous among servers, file fingerprints);
 * - a 64-bit finalizer (MurmurHash3's fmix64) to mix integers.
 * None of them is for secrets.
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

/* SipHash with crounds/drounds rounds (2/4: SipHash-2-4) of len bytes. */
uint64_t hash_siphash(const uint64_t key[2], const void *data, size_t len, unsigned crounds,
                      unsigned drounds);
/* SipHash-1-3 of the string under this process's random key. */
uint64_t hash_table_str(const char *s);

#endif
