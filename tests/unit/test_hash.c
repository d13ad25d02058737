/* Unit tests for hash.c: SipHash against its paper's test vector, and the
 * table hash's key: keys made to share a bucket under a fixed hash (here
 * FNV-1a, what the tables used) spread out under hash_table_str, and the
 * key differs from process to process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hash.h"
#include "strmap.h"

static void siphash24_paper_vector(void **state)
{
    (void)state;
    /* SipHash-2-4 paper, appendix A: key 00 01 .. 0f, message 00 01 .. 0e */
    const uint64_t key[2] = {0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
    unsigned char msg[15];
    for (int i = 0; i < 15; i++)
        msg[i] = (unsigned char)i;
    assert_true(hash_siphash(key, msg, sizeof(msg), 2, 4) == 0xa129ca6149be45e5ULL);
    /* every length from 0 to 15 differs (the length is hashed) */
    uint64_t seen[16];
    for (size_t n = 0; n < 16; n++) {
        seen[n] = hash_siphash(key, msg, n < 15 ? n : 15, 2, 4) ^ (n == 15 ? 1 : 0);
        for (size_t m = 0; m < n; m++)
            assert_true(seen[m] != seen[n]);
    }
}

#define BITS 12
#define WANT 48

/* WANT IDs whose FNV-1a hashes agree in their low BITS bits: the bucket
 * they share in a table of 2^BITS buckets under a fixed hash. */
static char (*colliding_ids(void))[32]
{
    char(*ids)[32] = calloc(WANT, sizeof(*ids));
    size_t n = 0;
    for (unsigned long i = 0; n < WANT && i < 50000000UL; i++) {
        char id[32];
        snprintf(id, sizeof(id), "web-%lu", i);
        if ((hash_fnv1a64(id) & ((1u << BITS) - 1)) == 0)
            memcpy(ids[n++], id, sizeof(id));
    }
    assert_int_equal(n, WANT);
    return ids;
}

static void chosen_ids_spread_out(void **state)
{
    (void)state;
    char(*ids)[32] = colliding_ids();
    unsigned short buckets[WANT];
    size_t most = 0;
    for (size_t i = 0; i < WANT; i++) {
        buckets[i] = (unsigned short)(hash_table_str(ids[i]) & ((1u << BITS) - 1));
        size_t same = 0;
        for (size_t j = 0; j <= i; j++)
            same += buckets[j] == buckets[i];
        if (same > most)
            most = same;
    }
    /* 48 keys over 4,096 buckets: 4 in one bucket has odds of about 1e-5 */
    assert_true(most <= 3);
    /* and the table still finds every one of them */
    struct strmap *m = strmap_new();
    for (size_t i = 0; i < WANT; i++)
        assert_int_equal(strmap_put(m, ids[i], ids[i]), 0);
    for (size_t i = 0; i < WANT; i++)
        assert_ptr_equal(strmap_get(m, ids[i]), ids[i]);
    assert_int_equal(strmap_count(m), WANT);
    strmap_free(m);
    free(ids);
}

/* The key is drawn per process: the same ID hashes differently in a child
 * started afresh (this program run again, printing its hash). */
static void key_differs_between_processes(void **state)
{
    const char *self = *state;
    char cmd[4200], line[64];
    uint64_t other[2];
    for (int k = 0; k < 2; k++) {
        snprintf(cmd, sizeof(cmd), "'%s' --print-hash web-1", self);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        assert_non_null(fgets(line, sizeof(line), p));
        assert_int_equal(pclose(p), 0);
        other[k] = strtoull(line, NULL, 16);
    }
    uint64_t mine = hash_table_str("web-1");
    assert_true(other[0] != other[1]);
    assert_true(other[0] != mine && other[1] != mine);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--print-hash") == 0) {
        printf("%llx\n", (unsigned long long)hash_table_str(argv[2]));
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(siphash24_paper_vector),
        cmocka_unit_test(chosen_ids_spread_out),
        cmocka_unit_test_prestate(key_differs_between_processes, argv[0]),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
