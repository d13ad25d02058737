/*
 * hash.c — see hash.h. SipHash (Aumasson and Bernstein, 2012) written from
 * its paper: four 64-bit words of state, c rounds per 8-byte word of input,
 * d rounds to finish; the last word carries the length in its top byte.
 */
#include "hash.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static uint64_t table_key[2];

/* The key is drawn once, before main and any thread. Should the kernel's
 * random source fail (it does not block once the system has booted), the
 * clock and pid still make the key differ from run to run. */
__attribute__((constructor)) static void table_key_init(void)
{
    if (getrandom(table_key, sizeof(table_key), GRND_NONBLOCK) == (ssize_t)sizeof(table_key))
        return;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    table_key[0] = hash_mix64((uint64_t)t.tv_nsec ^ ((uint64_t)t.tv_sec << 30));
    table_key[1] = hash_mix64(table_key[0] ^ (uint64_t)getpid());
}

static inline uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

struct sip {
    uint64_t v0, v1, v2, v3;
};

static void sip_rounds(struct sip *s, unsigned n)
{
    while (n-- > 0) {
        s->v0 += s->v1;
        s->v1 = rotl(s->v1, 13) ^ s->v0;
        s->v0 = rotl(s->v0, 32);
        s->v2 += s->v3;
        s->v3 = rotl(s->v3, 16) ^ s->v2;
        s->v0 += s->v3;
        s->v3 = rotl(s->v3, 21) ^ s->v0;
        s->v2 += s->v1;
        s->v1 = rotl(s->v1, 17) ^ s->v2;
        s->v2 = rotl(s->v2, 32);
    }
}

static uint64_t load_le64(const unsigned char *p, size_t n)
{
    uint64_t m = 0;
    for (size_t i = 0; i < n; i++)
        m |= (uint64_t)p[i] << (8 * i);
    return m;
}

uint64_t hash_siphash(const uint64_t key[2], const void *data, size_t len, unsigned crounds,
                      unsigned drounds)
{
    const unsigned char *p = data;
    struct sip s = {key[0] ^ 0x736f6d6570736575ULL, key[1] ^ 0x646f72616e646f6dULL,
                    key[0] ^ 0x6c7967656e657261ULL, key[1] ^ 0x7465646279746573ULL};
    size_t whole = len & ~(size_t)7;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = load_le64(p + i, 8);
        s.v3 ^= m;
        sip_rounds(&s, crounds);
        s.v0 ^= m;
    }
    uint64_t last = load_le64(p + whole, len - whole) | (uint64_t)(len & 0xff) << 56;
    s.v3 ^= last;
    sip_rounds(&s, crounds);
    s.v0 ^= last;
    s.v2 ^= 0xff;
    sip_rounds(&s, drounds);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

uint64_t hash_table_str(const char *s)
{
    return hash_siphash(table_key, s, strlen(s), 1, 3);
}
