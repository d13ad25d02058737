/* Unit tests for libregistry's balancers: statistical behaviour with fixed
 * seeds, ejection, panic, slow start, and picking while the list is swapped. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "registry/balancer.h"

/* n instances i0..i{n-1}, weights from w (or 1). Free with free_list. */
static struct reg_instance *make_list(size_t n, const int *w, const char *prefix)
{
    struct reg_instance *v = calloc(n, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        char id[64];
        snprintf(id, sizeof(id), "%s%zu", prefix, i);
        v[i].id = strdup(id);
        v[i].service = strdup("svc");
        v[i].address = strdup(id);
        v[i].status = strdup("passing");
        v[i].port = (int)(1000 + i);
        v[i].weight = w ? w[i] : 1;
        v[i].tags = calloc(1, sizeof(char *));
        v[i].meta = calloc(1, sizeof(char *));
    }
    return v;
}

static struct reg_balancer *make(enum reg_strategy s, const struct reg_instance *v, size_t n)
{
    struct reg_balancer_options o;
    reg_balancer_defaults(&o, s);
    o.seed = 42;
    struct reg_balancer *b;
    assert_int_equal(reg_balancer_new(&o, &b), 0);
    assert_int_equal(reg_balancer_update(b, v, n), 0);
    return b;
}

static int index_of(const struct reg_endpoint *e)
{
    return e->port - 1000;
}

static void test_round_robin(void **state)
{
    (void)state;
    struct reg_instance *v = make_list(4, NULL, "i");
    struct reg_balancer *b = make(REG_ROUND_ROBIN, v, 4);
    int count[4] = {0};
    struct reg_endpoint e;
    for (int i = 0; i < 400; i++) {
        assert_int_equal(reg_balancer_pick(b, &e), 0);
        count[index_of(&e)]++;
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(count[i], 100);
    reg_balancer_free(b);
    reg_instances_free(v, 4);
}

static void test_weighted_is_nginx_smooth_and_exact(void **state)
{
    (void)state;
    const int w[3] = {5, 1, 1};
    struct reg_instance *v = make_list(3, w, "i");
    struct reg_balancer *b = make(REG_WEIGHTED, v, 3);
    /* nginx's documented sequence for weights 5,1,1: a a b a c a a */
    const int want[7] = {0, 0, 1, 0, 2, 0, 0};
    struct reg_endpoint e;
    for (int cycle = 0; cycle < 3; cycle++) {
        for (int i = 0; i < 7; i++) {
            assert_int_equal(reg_balancer_pick(b, &e), 0);
            assert_int_equal(index_of(&e), want[i]);
        }
    }
    reg_balancer_free(b);
    reg_instances_free(v, 3);

    /* exact proportions over a full cycle, for a large list too (EDF path) */
    for (size_t n = 10; n <= 20000; n *= 2000) {
        int *ws = malloc(n * sizeof(int));
        long total = 0;
        for (size_t i = 0; i < n; i++)
            total += ws[i] = 1 + (int)(i % 7);
        v = make_list(n, ws, "w");
        b = make(REG_WEIGHTED, v, n);
        long *count = calloc(n, sizeof(long));
        for (long i = 0; i < total; i++) {
            assert_int_equal(reg_balancer_pick(b, &e), 0);
            count[index_of(&e)]++;
        }
        for (size_t i = 0; i < n; i++)
            assert_int_equal(count[i], ws[i]);
        free(count);
        free(ws);
        reg_balancer_free(b);
        reg_instances_free(v, n);
    }
}

static void test_least_connections(void **state)
{
    (void)state;
    for (size_t n = 4; n <= 64; n *= 16) { /* exact scan, and power of two choices */
        struct reg_instance *v = make_list(n, NULL, "i");
        struct reg_balancer *b = make(REG_LEAST_CONN, v, n);
        struct reg_endpoint e[600];
        unsigned busy[64] = {0};
        for (int i = 0; i < 600; i++) {
            assert_int_equal(reg_balancer_pick(b, &e[i]), 0);
            reg_balancer_start(b, &e[i]);
            busy[index_of(&e[i])]++;
        }
        unsigned lo = 1000, hi = 0;
        for (size_t i = 0; i < n; i++) {
            lo = busy[i] < lo ? busy[i] : lo;
            hi = busy[i] > hi ? busy[i] : hi;
        }
        if (n <= 8)
            assert_true(hi - lo <= 1); /* exact: always the least busy */
        else
            assert_true(hi - lo <= 6); /* two choices keep the spread tight */
        /* finishing requests on one instance makes it the preferred one */
        for (int i = 0; i < 600; i++)
            if (index_of(&e[i]) == 0)
                reg_balancer_finish(b, &e[i], 1000, true);
        struct reg_endpoint p;
        assert_int_equal(reg_balancer_pick(b, &p), 0);
        if (n <= 8)
            assert_int_equal(index_of(&p), 0);
        reg_balancer_free(b);
        reg_instances_free(v, n);
    }
}

static void test_latency_shifts_away_and_back(void **state)
{
    (void)state;
    struct reg_instance *v = make_list(2, NULL, "i");
    struct reg_balancer_options o;
    reg_balancer_defaults(&o, REG_LATENCY);
    o.seed = 7;
    o.decay_ms = 200;
    struct reg_balancer *b;
    assert_int_equal(reg_balancer_new(&o, &b), 0);
    assert_int_equal(reg_balancer_update(b, v, 2), 0);
    struct reg_endpoint e;
    int slow_picks = 0;
    for (int i = 0; i < 100; i++) { /* instance 1 is 10x slower */
        assert_int_equal(reg_balancer_pick(b, &e), 0);
        reg_balancer_start(b, &e);
        reg_balancer_finish(b, &e, index_of(&e) == 1 ? 10000 : 1000, true);
        slow_picks += index_of(&e) == 1;
    }
    assert_true(slow_picks <= 20); /* at least 80% away within 100 requests */
    int last_slow = 0;
    for (int i = 0; i < 100; i++) {
        assert_int_equal(reg_balancer_pick(b, &e), 0);
        last_slow += index_of(&e) == 1;
        reg_balancer_finish(b, &e, index_of(&e) == 1 ? 10000 : 1000, true);
    }
    assert_true(last_slow <= 10);
    /* it recovers: after idle decay it is tried again and, being fast now,
     * gets its share back */
    usleep(600 * 1000);
    int recovered = 0;
    for (int i = 0; i < 200; i++) {
        assert_int_equal(reg_balancer_pick(b, &e), 0);
        reg_balancer_finish(b, &e, 1000, true);
        recovered += index_of(&e) == 1;
    }
    assert_true(recovered >= 60);
    reg_balancer_free(b);
    reg_instances_free(v, 2);
}

static void test_ejection_and_panic(void **state)
{
    (void)state;
    struct reg_instance *v = make_list(4, NULL, "i");
    struct reg_balancer_options o;
    reg_balancer_defaults(&o, REG_ROUND_ROBIN);
    o.eject_after = 3;
    o.eject_ms = 300;
    o.max_ejected = 0.5;
    struct reg_balancer *b;
    assert_int_equal(reg_balancer_new(&o, &b), 0);
    assert_int_equal(reg_balancer_update(b, v, 4), 0);
    struct reg_endpoint bad = {.id = "i0"};
    for (int i = 0; i < 3; i++)
        reg_balancer_finish(b, &bad, 100, false);
    size_t total, ejected;
    reg_balancer_counts(b, &total, &ejected);
    assert_int_equal(ejected, 1);
    struct reg_endpoint e;
    for (int i = 0; i < 30; i++) {
        assert_int_equal(reg_balancer_pick(b, &e), 0);
        assert_string_not_equal(e.id, "i0");
    }
    /* at most half may be ejected */
    for (int k = 1; k < 4; k++) {
        struct reg_endpoint x = {0};
        snprintf(x.id, sizeof(x.id), "i%d", k);
        for (int i = 0; i < 3; i++)
            reg_balancer_finish(b, &x, 100, false);
    }
    reg_balancer_counts(b, &total, &ejected);
    assert_int_equal(ejected, 2);
    usleep(400 * 1000); /* ejections end */
    reg_balancer_counts(b, &total, &ejected);
    assert_int_equal(ejected, 0);
    reg_balancer_free(b);

    /* panic: with 3 of 4 critical, picks spread over all four */
    free(v[0].status);
    free(v[1].status);
    free(v[2].status);
    v[0].status = strdup("critical");
    v[1].status = strdup("critical");
    v[2].status = strdup("critical");
    b = make(REG_ROUND_ROBIN, v, 4);
    int seen[4] = {0};
    for (int i = 0; i < 40; i++) {
        assert_int_equal(reg_balancer_pick(b, &e), 0);
        seen[index_of(&e)]++;
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(seen[i], 10);
    reg_balancer_free(b);
    /* no panic when only 1 of 4 is critical: it gets nothing */
    free(v[1].status);
    free(v[2].status);
    v[1].status = strdup("passing");
    v[2].status = strdup("passing");
    b = make(REG_ROUND_ROBIN, v, 4);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(reg_balancer_pick(b, &e), 0);
        assert_int_not_equal(index_of(&e), 0);
    }
    reg_balancer_free(b);
    reg_instances_free(v, 4);
}

static void test_slow_start(void **state)
{
    (void)state;
    struct reg_instance *v = make_list(2, NULL, "i");
    struct reg_balancer_options o;
    reg_balancer_defaults(&o, REG_ROUND_ROBIN);
    o.seed = 3;
    o.slow_start_ms = 60000;
    struct reg_balancer *b;
    assert_int_equal(reg_balancer_new(&o, &b), 0);
    assert_int_equal(reg_balancer_update(b, v, 1), 0); /* i0 from the start */
    assert_int_equal(reg_balancer_update(b, v, 2), 0); /* i1 is new */
    struct reg_endpoint e;
    int fresh = 0;
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(reg_balancer_pick(b, &e), 0);
        fresh += index_of(&e) == 1;
    }
    assert_true(fresh > 20 && fresh < 250); /* ~10% at first, not 50% */
    reg_balancer_free(b);
    reg_instances_free(v, 2);
}

static void test_empty_and_names(void **state)
{
    (void)state;
    struct reg_balancer *b;
    struct reg_endpoint e;
    assert_int_equal(reg_balancer_new(NULL, &b), 0);
    assert_int_equal(reg_balancer_pick(b, &e), REG_ENOTFOUND);
    reg_balancer_free(b);
    enum reg_strategy s;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(reg_strategy_parse(reg_strategy_name((enum reg_strategy)i), &s), 0);
        assert_int_equal(s, i);
    }
    assert_int_equal(reg_strategy_parse("random", &s), REG_EINVAL);
}

/* 8 threads pick while another swaps the list 10,000 times, each time for a
 * list of new IDs (generation g: "g<g>-<i>"). Once an update has returned,
 * no pick may return an instance of an older generation. */
struct swap_state {
    struct reg_balancer *b;
    int installed; /* the generation of the last update that returned (atomic) */
    int stop;      /* atomic */
    int violations;
    pthread_mutex_t lock;
};

static void *picker(void *arg)
{
    struct swap_state *st = arg;
    struct reg_endpoint e;
    while (!__atomic_load_n(&st->stop, __ATOMIC_ACQUIRE)) {
        int before = __atomic_load_n(&st->installed, __ATOMIC_ACQUIRE);
        if (reg_balancer_pick(st->b, &e) != 0)
            continue;
        int g = atoi(e.id + 1);
        if (g < before) {
            pthread_mutex_lock(&st->lock);
            st->violations++;
            pthread_mutex_unlock(&st->lock);
        }
        reg_balancer_start(st->b, &e);
        reg_balancer_finish(st->b, &e, 100, true);
    }
    return NULL;
}

static void test_concurrent_swaps(void **state)
{
    (void)state;
    for (int s = 0; s < 4; s++) {
        struct reg_instance *first = make_list(16, NULL, "g0-");
        struct swap_state st = {.b = make((enum reg_strategy)s, first, 16), .installed = 0};
        reg_instances_free(first, 16);
        pthread_mutex_init(&st.lock, NULL);
        pthread_t t[8];
        for (int i = 0; i < 8; i++)
            pthread_create(&t[i], NULL, picker, &st);
        for (int g = 1; g <= 10000; g++) {
            char prefix[32];
            snprintf(prefix, sizeof(prefix), "g%d-", g);
            struct reg_instance *v = make_list(16, NULL, prefix);
            assert_int_equal(reg_balancer_update(st.b, v, 16), 0);
            __atomic_store_n(&st.installed, g, __ATOMIC_RELEASE);
            reg_instances_free(v, 16);
        }
        __atomic_store_n(&st.stop, 1, __ATOMIC_RELEASE);
        for (int i = 0; i < 8; i++)
            pthread_join(t[i], NULL);
        assert_int_equal(st.violations, 0);
        reg_balancer_free(st.b);
        pthread_mutex_destroy(&st.lock);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_weighted_is_nginx_smooth_and_exact),
        cmocka_unit_test(test_least_connections),
        cmocka_unit_test(test_latency_shifts_away_and_back),
        cmocka_unit_test(test_ejection_and_panic),
        cmocka_unit_test(test_slow_start),
        cmocka_unit_test(test_empty_and_names),
        cmocka_unit_test(test_concurrent_swaps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
