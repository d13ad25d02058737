/* Unit tests for http_cache.c: hits only at the index an answer was
 * rendered at, the byte budget (bookkeeping included), least recently used
 * out first, answers larger than the budget never kept, the counters, the
 * reservations big renders write into (recycled, within the budget). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "http_cache.h"

static char *dup_fill(size_t len, char c)
{
    char *p = malloc(len + 1);
    assert_non_null(p);
    memset(p, c, len);
    p[len] = '\0';
    return p;
}

static void put(struct http_cache *c, const char *key, uint64_t index, size_t len)
{
    http_cache_put(c, strdup(key), index, dup_fill(len, key[0]), len);
}

/* The answer for key at index, its first bytes copied out of the cache
 * (into got) and the cache's reference let go; *len: its whole length. */
static char got[1 << 17];
static bool get(struct http_cache *c, const char *key, uint64_t index, const char **body,
                size_t *len)
{
    const char *b;
    void *ref;
    if (!http_cache_get_shared(c, key, index, &b, len, &ref))
        return false;
    memcpy(got, b, *len < sizeof(got) ? *len : sizeof(got));
    http_cache_release(ref);
    *body = got;
    return true;
}

static void test_hit_only_at_index(void **state)
{
    (void)state;
    struct http_cache *c;
    const char *body;
    size_t len;
    assert_int_equal(http_cache_new(1 << 20, &c), 0);
    assert_false(get(c, "/a", 5, &body, &len));
    put(c, "/a", 5, 100);
    assert_true(get(c, "/a", 5, &body, &len));
    assert_int_equal(len, 100);
    assert_int_equal(body[0], '/');
    assert_false(get(c, "/a", 6, &body, &len)); /* stale */
    put(c, "/a", 6, 50);                                    /* replaces it */
    assert_true(get(c, "/a", 6, &body, &len));
    assert_int_equal(len, 50);
    struct http_cache_stats st;
    http_cache_get_stats(c, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.entries, 1);
    assert_true(st.bytes >= 50 + 3 && st.bytes < 50 + 3 + 256);
    http_cache_free(c);
}

static void test_bounded_in_bytes_lru(void **state)
{
    (void)state;
    struct http_cache *c;
    const char *body;
    size_t len;
    struct http_cache_stats st;
    const size_t budget = 64 * 1024;
    assert_int_equal(http_cache_new(budget, &c), 0);
    /* 4 answers of 20,000 bytes: the fourth pushes out the least recently
     * used (b, since a was read after b was stored) */
    put(c, "a", 1, 20000);
    put(c, "b", 1, 20000);
    assert_true(get(c, "a", 1, &body, &len));
    put(c, "c", 1, 20000);
    put(c, "d", 1, 20000);
    http_cache_get_stats(c, &st);
    assert_true(st.bytes <= budget);
    assert_int_equal(st.entries, 3);
    assert_int_equal(st.evictions, 1);
    assert_false(get(c, "b", 1, &body, &len));
    assert_true(get(c, "a", 1, &body, &len));
    assert_true(get(c, "c", 1, &body, &len));
    assert_true(get(c, "d", 1, &body, &len));
    /* an answer larger than the budget is not kept, and evicts nothing */
    put(c, "e", 1, budget);
    assert_false(get(c, "e", 1, &body, &len));
    http_cache_get_stats(c, &st);
    assert_int_equal(st.entries, 3);
    /* many variants (as ?filter= makes): bytes stay within the budget, the
     * table grows, every entry kept is found */
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "/v1/x?v=%d", i);
        put(c, key, (uint64_t)i, 100 + (size_t)(i % 300));
        http_cache_get_stats(c, &st);
        assert_true(st.bytes <= budget);
    }
    assert_true(st.entries > 100);
    snprintf(key, sizeof(key), "/v1/x?v=%d", 4999);
    assert_true(get(c, key, 4999, &body, &len));
    assert_int_equal(len, 100 + 4999 % 300);
    http_cache_free(c);
}

static void test_zero_budget_keeps_nothing(void **state)
{
    (void)state;
    struct http_cache *c;
    const char *body;
    size_t len;
    assert_int_equal(http_cache_new(0, &c), 0);
    put(c, "/a", 1, 1);
    assert_false(get(c, "/a", 1, &body, &len));
    http_cache_free(c);
    http_cache_free(NULL);
}

/* A shared body outlives its entry (replaced, evicted, the cache freed)
 * until the reply that sends it lets go. */
static void test_shared_body_outlives_entry(void **state)
{
    (void)state;
    struct http_cache *c;
    const char *body, *b2;
    size_t len, l2;
    void *ref, *ref2;
    assert_int_equal(http_cache_new(4096, &c), 0);
    put(c, "/a", 1, 1000);
    assert_false(http_cache_get_shared(c, "/a", 2, &body, &len, &ref));
    assert_true(http_cache_get_shared(c, "/a", 1, &body, &len, &ref));
    assert_true(http_cache_get_shared(c, "/a", 1, &b2, &l2, &ref2));
    assert_ptr_equal(body, b2);
    put(c, "/a", 2, 10);   /* replaces it */
    put(c, "/b", 1, 3500); /* evicts everything else */
    http_cache_free(c);
    assert_int_equal(len, 1000);
    assert_int_equal(body[0], '/');
    assert_int_equal(body[999], '/');
    http_cache_release(ref);
    assert_int_equal(b2[999], '/'); /* still held by ref2 (ASan would tell) */
    http_cache_release(ref2);
}

/* A reservation: the answer is kept as written; let go, it comes back to
 * the next render with its pages; what the spare keeps counts against the
 * budget (the next put or lookup evicts for it), and it is dropped before
 * the budget is broken. */
static void test_reservation_recycled_within_budget(void **state)
{
    (void)state;
    const size_t mib = 1 << 20, budget = 4 * mib;
    struct http_cache *c;
    struct http_cache_stats st;
    const char *body;
    size_t len, cap;
    assert_int_equal(http_cache_new(budget, &c), 0);
    char *r1 = http_cache_reserve(c, &cap);
    assert_non_null(r1);
    assert_int_equal(cap, budget);
    memset(r1, 'x', 3 * mib);
    http_cache_put_reserved(c, strdup("/big"), 1, r1, cap, 3 * mib);
    assert_true(get(c, "/big", 1, &body, &len));
    assert_int_equal(len, 3 * mib);
    assert_int_equal(body[0], 'x');
    http_cache_get_stats(c, &st);
    assert_true(st.bytes > 3 * mib && st.bytes <= budget);

    put(c, "/big", 2, 100); /* replaces it: the reservation is spare */
    http_cache_get_stats(c, &st);
    assert_true(st.bytes >= 3 * mib && st.bytes <= budget); /* its pages, counted */
    char *r2 = http_cache_reserve(c, &cap);
    assert_non_null(r2);
    assert_int_equal(cap, budget);
    assert_int_equal(r2[0], 'x'); /* its pages came with it */
    assert_int_equal(r2[3 * mib - 1], 'x');
    r2[budget - 1] = 'y'; /* and it has the budget's room again */
    http_cache_get_stats(c, &st);
    assert_true(st.bytes < mib); /* taken: no longer spare */

    /* taken back after a short write: the spare is what was written, and
     * holds no page an earlier, longer answer left */
    http_cache_unreserve(r2, cap, mib);
    http_cache_get_stats(c, &st);
    assert_true(st.bytes >= mib && st.bytes < mib + 4096);
    char *r4 = http_cache_reserve(c, &cap);
    assert_non_null(r4);
    unsigned char vec[(2 << 20) / 4096];
    assert_int_equal(mincore(r4 + mib, 2 * mib, vec), 0);
    for (size_t i = 0; i < sizeof(vec); i++)
        assert_int_equal(vec[i] & 1, 0);
    assert_int_equal(r4[0], 'x');
    http_cache_unreserve(r4, cap, mib);

    put(c, "/c", 3, 3 * mib); /* evicts /big, then fits only without the spare */
    http_cache_get_stats(c, &st);
    assert_true(st.bytes <= budget);
    assert_true(get(c, "/c", 3, &body, &len));
    assert_int_equal(len, 3 * mib);

    /* a spare let go beside a full cache: the next lookup evicts for it */
    char *r3 = http_cache_reserve(c, &cap);
    assert_non_null(r3);
    memset(r3, 'z', 2 * mib);
    http_cache_unreserve(r3, cap, 2 * mib);
    assert_false(get(c, "/none", 1, &body, &len));
    http_cache_get_stats(c, &st);
    assert_true(st.bytes <= budget);
    assert_true(st.evictions >= 2);
    http_cache_free(c);

    /* no budget: no reservation */
    assert_int_equal(http_cache_new(0, &c), 0);
    assert_null(http_cache_reserve(c, &cap));
    http_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_only_at_index),
        cmocka_unit_test(test_shared_body_outlives_entry),
        cmocka_unit_test(test_bounded_in_bytes_lru),
        cmocka_unit_test(test_zero_budget_keeps_nothing),
        cmocka_unit_test(test_reservation_recycled_within_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
