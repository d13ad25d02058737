/* Unit tests for libregistry's resilient calls (registry/resilience.h), on a
 * fake clock: breaker transitions, retry budget arithmetic, backoff bounds,
 * bulkhead admission, deadline accounting, retries on other instances, and
 * calls from several threads while the instance list changes (run under
 * ThreadSanitizer by .ci/run). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "registry/resilience.h"

static uint64_t fake_now = 1000000000; /* microseconds */

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return __atomic_load_n(&fake_now, __ATOMIC_RELAXED);
}

static void advance_ms(uint64_t ms)
{
    __atomic_add_fetch(&fake_now, ms * 1000, __ATOMIC_RELAXED);
}

static struct reg_instance *make_list(size_t n)
{
    struct reg_instance *v = calloc(n, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "i%zu", i);
        v[i].id = strdup(id);
        v[i].service = strdup("svc");
        v[i].address = strdup("127.0.0.1");
        v[i].status = strdup("passing");
        v[i].port = (int)(1000 + i);
        v[i].weight = 1;
        v[i].tags = calloc(1, sizeof(char *));
        v[i].meta = calloc(1, sizeof(char *));
    }
    return v;
}

struct fixture {
    struct reg_balancer *b;
    struct reg_policy *p;
    struct reg_instance *list;
    size_t n;
};

/* Breaker transitions seen by the callback, as "id:from>to" lines. */
static char transitions[4096];

static void on_state(void *arg, const char *instance, enum reg_breaker_state from,
                     enum reg_breaker_state to)
{
    (void)arg;
    size_t len = strlen(transitions);
    snprintf(transitions + len, sizeof(transitions) - len, "%s:%s>%s\n",
             instance ? instance : "SERVICE", reg_breaker_state_name(from),
             reg_breaker_state_name(to));
}

/* Test options: fake clock, fixed seed, no balancer ejection (which runs on
 * the real clock), every mechanism at its default otherwise. */
static void test_options(struct reg_policy_options *o)
{
    reg_policy_defaults(o);
    o->clock_us = fake_clock;
    o->seed = 7;
    o->on_state = on_state;
    transitions[0] = '\0';
}

static void setup(struct fixture *f, size_t n, const struct reg_policy_options *o)
{
    struct reg_balancer_options bo;
    reg_balancer_defaults(&bo, REG_ROUND_ROBIN);
    bo.eject_after = 0;
    bo.seed = 3;
    f->n = n;
    f->list = make_list(n);
    assert_int_equal(reg_balancer_new(&bo, &f->b), 0);
    assert_int_equal(reg_balancer_update(f->b, f->list, n), 0);
    assert_int_equal(reg_policy_new(o, f->b, &f->p), 0);
}

static void teardown(struct fixture *f)
{
    reg_policy_free(f->p);
    reg_balancer_free(f->b);
    reg_instances_free(f->list, f->n);
}

/* One call in which every attempt gets the verdict `o(endpoint)`; returns
 * the result, *attempts the attempts made. */
typedef enum reg_outcome (*verdict_fn)(const struct reg_endpoint *e);

static int run_call(struct reg_policy *p, verdict_fn v, uint64_t latency_ms, unsigned *attempts)
{
    struct reg_call *c;
    int rc = reg_call_begin(p, &c);
    if (rc != 0)
        return rc;
    for (;;) {
        struct reg_endpoint e;
        uint64_t timeout, backoff;
        bool retry;
        if (reg_call_attempt(c, &e, &timeout) != 0)
            break;
        advance_ms(latency_ms);
        assert_int_equal(reg_call_report(c, v(&e), latency_ms * 1000, &retry, &backoff), 0);
        if (!retry)
            break;
        advance_ms(backoff);
    }
    if (attempts)
        *attempts = reg_call_attempts(c);
    return reg_call_end(c);
}

static enum reg_outcome all_ok(const struct reg_endpoint *e)
{
    (void)e;
    return REG_OUTCOME_SUCCESS;
}

static enum reg_outcome all_retryable(const struct reg_endpoint *e)
{
    (void)e;
    return REG_OUTCOME_RETRYABLE;
}

static enum reg_outcome i0_fails(const struct reg_endpoint *e)
{
    return strcmp(e->id, "i0") == 0 ? REG_OUTCOME_RETRYABLE : REG_OUTCOME_SUCCESS;
}

/* ---- options ------------------------------------------------------------ */

static void test_defaults_and_invalid_options(void **state)
{
    (void)state;
    struct reg_policy_options o;
    reg_policy_defaults(&o);
    assert_int_equal(o.max_attempts, 3);
    assert_int_equal(o.attempt_timeout_ms, 1000);
    assert_int_equal(o.deadline_ms, 5000);
    assert_true(o.budget_ratio == 0.2);
    assert_int_equal(o.budget_min_per_s, 10);
    assert_true(o.instance_breaker.enabled && o.service_breaker.enabled);
    assert_int_equal(o.instance_breaker.consecutive_failures, 5);
    assert_int_equal(o.service_breaker.consecutive_failures, 0);
    struct reg_balancer *b;
    struct reg_policy *p;
    assert_int_equal(reg_balancer_new(NULL, &b), 0);
    assert_int_equal(reg_policy_new(NULL, NULL, &p), REG_EINVAL);
    o.max_attempts = 0;
    assert_int_equal(reg_policy_new(&o, b, &p), REG_EINVAL);
    o.max_attempts = 17;
    assert_int_equal(reg_policy_new(&o, b, &p), REG_EINVAL);
    reg_policy_defaults(&o);
    o.instance_breaker.failure_rate = 1.5;
    assert_int_equal(reg_policy_new(&o, b, &p), REG_EINVAL);
    reg_policy_defaults(&o);
    o.adaptive_concurrency = true; /* without max_concurrent */
    assert_int_equal(reg_policy_new(&o, b, &p), REG_EINVAL);
    assert_int_equal(reg_policy_new(NULL, b, &p), 0);
    reg_policy_free(p);
    reg_policy_free(NULL);
    reg_balancer_free(b);
    assert_string_equal(reg_strerror(REG_EOPEN), "circuit breaker open");
    assert_int_equal(reg_call_end(NULL), REG_EINVAL);
}

/* ---- instance breakers -------------------------------------------------- */

static void test_instance_breaker_consecutive_open_half_open_close(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.instance_breaker.failure_rate = 0; /* by count only */
    o.service_breaker.enabled = false;
    o.budget_min_per_s = 1000;
    struct fixture f;
    setup(&f, 3, &o);
    /* i0 fails: 5 failures in a row open its breaker */
    for (int i = 0; i < 30; i++)
        assert_int_equal(run_call(f.p, i0_fails, 1, NULL), 0);
    struct reg_breaker_stats bs;
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.state, REG_BREAKER_OPEN);
    assert_int_equal(bs.opened, 1);
    assert_int_equal(bs.failures, 5);
    assert_string_equal(transitions, "i0:closed>open\n");
    /* while open, i0 gets no attempt */
    for (int i = 0; i < 30; i++) {
        struct reg_call *c;
        struct reg_endpoint e;
        uint64_t t;
        bool retry;
        assert_int_equal(reg_call_begin(f.p, &c), 0);
        assert_int_equal(reg_call_attempt(c, &e, &t), 0);
        assert_string_not_equal(e.id, "i0");
        assert_int_equal(reg_call_report(c, REG_OUTCOME_SUCCESS, 1000, &retry, NULL), 0);
        assert_false(retry);
        assert_int_equal(reg_call_end(c), 0);
    }
    /* after open_ms: half-open, trial fails, open again */
    advance_ms(o.instance_breaker.open_ms);
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.state, REG_BREAKER_HALF_OPEN);
    for (int i = 0; i < 3; i++)
        assert_int_equal(run_call(f.p, i0_fails, 1, NULL), 0);
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.state, REG_BREAKER_OPEN);
    assert_int_equal(bs.opened, 2);
    /* half-open again; now i0 is well: three good trials close it */
    advance_ms(o.instance_breaker.open_ms);
    for (int i = 0; i < 9; i++)
        assert_int_equal(run_call(f.p, all_ok, 1, NULL), 0);
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.state, REG_BREAKER_CLOSED);
    assert_int_equal(bs.closed, 1);
    assert_string_equal(transitions, "i0:closed>open\ni0:open>half_open\ni0:half_open>open\n"
                                     "i0:open>half_open\ni0:half_open>closed\n");
    struct reg_policy_stats st;
    assert_int_equal(reg_policy_stats(f.p, &st), 0);
    assert_int_equal(st.instance_opened, 2);
    assert_int_equal(st.instance_half_opened, 2);
    assert_int_equal(st.instance_closed, 1);
    assert_int_equal(reg_policy_instance_stats(f.p, "nope", &bs), REG_ENOTFOUND);
    teardown(&f);
}

static void test_half_open_admits_only_trial_calls(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.service_breaker.enabled = false;
    o.instance_breaker.half_open_calls = 2;
    o.max_attempts = 1;
    struct fixture f;
    setup(&f, 1, &o);
    for (int i = 0; i < 5; i++)
        assert_int_equal(run_call(f.p, all_retryable, 1, NULL), REG_EFAILED);
    struct reg_call *c[3];
    struct reg_endpoint e;
    uint64_t t;
    assert_int_equal(reg_call_begin(f.p, &c[0]), 0);
    assert_int_equal(reg_call_attempt(c[0], &e, &t), REG_EOPEN); /* the only instance is open */
    assert_int_equal(reg_call_end(c[0]), REG_EOPEN);
    advance_ms(o.instance_breaker.open_ms);
    bool retry;
    for (int i = 0; i < 3; i++)
        assert_int_equal(reg_call_begin(f.p, &c[i]), 0);
    assert_int_equal(reg_call_attempt(c[0], &e, &t), 0);
    assert_int_equal(reg_call_attempt(c[1], &e, &t), REG_EOPEN); /* one trial at a time */
    assert_int_equal(reg_call_report(c[0], REG_OUTCOME_SUCCESS, 1000, &retry, NULL), 0);
    assert_int_equal(reg_call_attempt(c[2], &e, &t), 0); /* the second trial */
    assert_int_equal(reg_call_end(c[0]), 0);
    assert_int_equal(reg_call_end(c[1]), REG_EOPEN);
    struct reg_breaker_stats bs;
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.state, REG_BREAKER_HALF_OPEN);
    reg_call_end(c[2]); /* an abandoned trial counts as a failure */
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.state, REG_BREAKER_OPEN);
    assert_int_equal(bs.opened, 2);
    teardown(&f);
}

static void test_instance_breaker_by_rate_in_a_sliding_window(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.service_breaker.enabled = false;
    o.instance_breaker.consecutive_failures = 0; /* by rate only */
    o.instance_breaker.min_calls = 10;
    o.instance_breaker.failure_rate = 0.5;
    o.max_attempts = 1;
    struct fixture f;
    setup(&f, 1, &o);
    /* 4 failures in 9 calls: under min_calls, stays closed */
    for (int i = 0; i < 9; i++)
        run_call(f.p, i % 2 ? all_retryable : all_ok, 1, NULL);
    struct reg_breaker_stats bs;
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.state, REG_BREAKER_CLOSED);
    /* the window slides: after 10 s those calls are gone */
    advance_ms(o.instance_breaker.window_ms);
    for (int i = 0; i < 6; i++)
        run_call(f.p, all_ok, 1, NULL);
    for (int i = 0; i < 4; i++)
        run_call(f.p, all_retryable, 1, NULL);
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.state, REG_BREAKER_CLOSED); /* 4/10 < 0.5 */
    run_call(f.p, all_retryable, 1, NULL);
    run_call(f.p, all_retryable, 1, NULL);
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.state, REG_BREAKER_OPEN); /* 6/12 >= 0.5 */
    teardown(&f);
}

static void test_slow_calls_count_as_failures(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.service_breaker.enabled = false;
    o.instance_breaker.slow_call_ms = 100;
    struct fixture f;
    setup(&f, 1, &o);
    for (int i = 0; i < 4; i++)
        assert_int_equal(run_call(f.p, all_ok, 150, NULL), 0); /* the call still succeeds */
    struct reg_breaker_stats bs;
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.state, REG_BREAKER_CLOSED);
    assert_int_equal(run_call(f.p, all_ok, 150, NULL), 0);
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.state, REG_BREAKER_OPEN);
    assert_int_equal(bs.failures, 5);
    teardown(&f);
}

/* ---- the service breaker ------------------------------------------------ */

static void test_service_breaker_fails_fast_then_recovers(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.instance_breaker.enabled = false;
    o.service_breaker.min_calls = 10;
    o.service_breaker.half_open_calls = 2;
    struct fixture f;
    setup(&f, 2, &o);
    for (int i = 0; i < 10; i++)
        assert_int_not_equal(run_call(f.p, all_retryable, 1, NULL), 0);
    struct reg_policy_stats st;
    assert_int_equal(reg_policy_stats(f.p, &st), 0);
    assert_int_equal(st.service_state, REG_BREAKER_OPEN);
    assert_int_equal(st.service_opened, 1);
    struct reg_call *c, *c2, *c3;
    assert_int_equal(reg_call_begin(f.p, &c), REG_EOPEN);
    assert_int_equal(reg_policy_stats(f.p, &st), 0);
    assert_int_equal(st.breaker_rejected, 1);
    advance_ms(o.service_breaker.open_ms);
    assert_int_equal(reg_call_begin(f.p, &c), 0);
    assert_int_equal(reg_call_begin(f.p, &c2), REG_EOPEN); /* one trial at a time */
    struct reg_endpoint e;
    uint64_t t;
    bool retry;
    assert_int_equal(reg_call_attempt(c, &e, &t), 0);
    assert_int_equal(reg_call_report(c, REG_OUTCOME_SUCCESS, 1000, &retry, NULL), 0);
    assert_int_equal(reg_call_end(c), 0);
    assert_int_equal(reg_call_begin(f.p, &c2), 0);
    assert_int_equal(reg_call_attempt(c2, &e, &t), 0);
    assert_int_equal(reg_call_report(c2, REG_OUTCOME_SUCCESS, 1000, &retry, NULL), 0);
    assert_int_equal(reg_call_end(c2), 0);
    assert_int_equal(reg_policy_stats(f.p, &st), 0);
    assert_int_equal(st.service_state, REG_BREAKER_CLOSED); /* two good trials */
    assert_int_equal(reg_call_begin(f.p, &c3), 0);
    reg_call_end(c3);
    assert_int_equal(st.service_closed, 1);
    assert_non_null(strstr(transitions, "SERVICE:closed>open\nSERVICE:open>half_open\n"
                                        "SERVICE:half_open>closed\n"));
    teardown(&f);
}

/* ---- retries ------------------------------------------------------------ */

static void test_retries_go_to_other_instances(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.max_attempts = 3;
    o.instance_breaker.enabled = false;
    o.service_breaker.enabled = false;
    struct fixture f;
    setup(&f, 3, &o);
    for (int round = 0; round < 20; round++) {
        struct reg_call *c;
        struct reg_endpoint e[3];
        uint64_t t, backoff;
        bool retry;
        assert_int_equal(reg_call_begin(f.p, &c), 0);
        for (int k = 0; k < 3; k++) {
            assert_int_equal(reg_call_attempt(c, &e[k], &t), 0);
            assert_int_equal(reg_call_report(c, REG_OUTCOME_RETRYABLE, 1000, &retry, &backoff), 0);
            assert_int_equal(retry, k < 2);
            for (int j = 0; j < k; j++)
                assert_string_not_equal(e[j].id, e[k].id);
        }
        assert_int_equal(reg_call_attempts(c), 3);
        assert_int_equal(reg_call_end(c), REG_EFAILED);
    }
    teardown(&f);
}

static void test_retry_on_one_instance_repeats_it(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    struct fixture f;
    setup(&f, 1, &o);
    unsigned attempts;
    assert_int_equal(run_call(f.p, all_retryable, 1, &attempts), REG_EFAILED);
    assert_int_equal(attempts, 3);
    teardown(&f);
}

static void test_non_retryable_failure_is_not_retried(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    struct fixture f;
    setup(&f, 3, &o);
    struct reg_call *c;
    struct reg_endpoint e;
    uint64_t t;
    bool retry = true;
    assert_int_equal(reg_call_begin(f.p, &c), 0);
    assert_int_equal(reg_call_attempt(c, &e, &t), 0);
    assert_int_equal(reg_call_report(c, REG_OUTCOME_FAILURE, 1000, &retry, NULL), 0);
    assert_false(retry);
    assert_int_equal(reg_call_attempt(c, &e, &t), REG_EINVAL); /* the call is over */
    assert_int_equal(reg_call_report(c, REG_OUTCOME_FAILURE, 1000, &retry, NULL), REG_EINVAL);
    assert_int_equal(reg_call_end(c), REG_EFAILED);
    struct reg_policy_stats st;
    assert_int_equal(reg_policy_stats(f.p, &st), 0);
    assert_int_equal(st.calls, 1);
    assert_int_equal(st.attempts, 1);
    assert_int_equal(st.retries, 0);
    assert_int_equal(st.failed, 1);
    teardown(&f);
}

static void test_backoff_is_full_jitter_within_bounds(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.max_attempts = 6;
    o.backoff_base_ms = 10;
    o.backoff_cap_ms = 50;
    o.deadline_ms = 1000000;
    o.budget_min_per_s = 100000;
    o.instance_breaker.enabled = false;
    o.service_breaker.enabled = false;
    struct fixture f;
    setup(&f, 6, &o);
    const uint64_t ceil[5] = {10, 20, 40, 50, 50};
    uint64_t max_seen[5] = {0}, sum[5] = {0};
    const int calls = 400;
    for (int i = 0; i < calls; i++) {
        struct reg_call *c;
        struct reg_endpoint e;
        uint64_t t, backoff;
        bool retry;
        assert_int_equal(reg_call_begin(f.p, &c), 0);
        for (int k = 0; k < 6; k++) {
            assert_int_equal(reg_call_attempt(c, &e, &t), 0);
            assert_int_equal(reg_call_report(c, REG_OUTCOME_RETRYABLE, 10, &retry, &backoff), 0);
            if (k == 5) {
                assert_false(retry);
                break;
            }
            assert_true(retry);
            assert_true(backoff <= ceil[k]);
            if (backoff > max_seen[k])
                max_seen[k] = backoff;
            sum[k] += backoff;
        }
        reg_call_end(c);
    }
    for (int k = 0; k < 5; k++) {
        /* uniform over [0, ceil]: the top is reached and the mean is near half */
        assert_true(max_seen[k] >= ceil[k] - 1);
        double mean = (double)sum[k] / calls;
        assert_true(mean > 0.35 * ceil[k] && mean < 0.65 * ceil[k]);
    }
    teardown(&f);
}

/* ---- the retry budget --------------------------------------------------- */

static void test_budget_is_a_share_of_calls_plus_a_floor(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.instance_breaker.enabled = false;
    o.service_breaker.enabled = false;
    o.budget_ratio = 0.2;
    o.budget_min_per_s = 1; /* 10 retries per 10 s window */
    o.max_attempts = 2;
    o.backoff_base_ms = 0;
    struct fixture f;
    setup(&f, 4, &o);
    /* 100 calls, all failing: 0.2 * 100 + 10 = 30 retries at most... but the
     * budget is checked as calls arrive: retry k needs k <= 0.2 * calls + 10 */
    unsigned total = 0, a;
    for (int i = 0; i < 100; i++) {
        run_call(f.p, all_retryable, 0, &a);
        total += a;
    }
    struct reg_policy_stats st;
    assert_int_equal(reg_policy_stats(f.p, &st), 0);
    assert_int_equal(st.retries, 30);
    assert_int_equal(total, 130);
    assert_int_equal(st.budget_exhausted, 70);
    assert_int_equal(st.calls, 100);
    /* a window later, the spent budget is forgotten */
    advance_ms(o.budget_window_ms);
    run_call(f.p, all_retryable, 0, &a);
    assert_int_equal(a, 2);
    teardown(&f);
}

static void test_budget_holds_attempts_per_call_under_total_outage(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.instance_breaker.enabled = false;
    o.service_breaker.enabled = false; /* the budget alone */
    o.backoff_base_ms = 1;
    struct fixture f;
    setup(&f, 8, &o);
    /* 200 calls a second for a minute, every attempt failing */
    unsigned total = 0, a, calls = 0;
    for (int s = 0; s < 60; s++) {
        for (int i = 0; i < 200; i++) {
            assert_int_not_equal(run_call(f.p, all_retryable, 0, &a), 0);
            total += a;
            calls++;
        }
        advance_ms(1000);
    }
    double per_call = (double)total / calls;
    /* ratio 0.2 plus 10/s over 200 calls/s: 1.25 in steady state (a little
     * slack for the window's edges); without the budget it would be 3 */
    assert_true(per_call <= 1.26);
    assert_true(per_call >= 1.15); /* and the budget is used, not hoarded */
    teardown(&f);
}

/* ---- deadlines ---------------------------------------------------------- */

static void test_deadline_cuts_attempts_and_retries(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.deadline_ms = 100;
    o.attempt_timeout_ms = 60;
    o.backoff_base_ms = 0;
    o.max_attempts = 5;
    struct fixture f;
    setup(&f, 3, &o);
    struct reg_call *c;
    struct reg_endpoint e;
    uint64_t t;
    bool retry;
    assert_int_equal(reg_call_begin(f.p, &c), 0);
    assert_int_equal(reg_call_remaining_ms(c), 100);
    assert_int_equal(reg_call_attempt(c, &e, &t), 0);
    assert_int_equal(t, 60);
    advance_ms(60);
    assert_int_equal(reg_call_remaining_ms(c), 40);
    assert_int_equal(reg_call_report(c, REG_OUTCOME_RETRYABLE, 60000, &retry, NULL), 0);
    assert_true(retry);
    assert_int_equal(reg_call_attempt(c, &e, &t), 0);
    assert_int_equal(t, 40); /* what is left, not the attempt timeout */
    advance_ms(40);
    assert_int_equal(reg_call_remaining_ms(c), 0);
    assert_int_equal(reg_call_report(c, REG_OUTCOME_RETRYABLE, 40000, &retry, NULL), 0);
    assert_false(retry); /* no retry starts after the deadline */
    assert_int_equal(reg_call_end(c), REG_EDEADLINE);
    /* a backoff that would end past the deadline is not taken either */
    o.instance_breaker.enabled = false;
    o.service_breaker.enabled = false;
    o.backoff_base_ms = 1000;
    o.backoff_cap_ms = 1000;
    struct fixture g;
    setup(&g, 3, &o);
    unsigned deadline_hits = 0;
    for (int i = 0; i < 50; i++) {
        assert_int_equal(reg_call_begin(g.p, &c), 0);
        assert_int_equal(reg_call_attempt(c, &e, &t), 0);
        uint64_t backoff = 0;
        assert_int_equal(reg_call_report(c, REG_OUTCOME_RETRYABLE, 1, &retry, &backoff), 0);
        assert_true(!retry || backoff < 100);
        if (!retry) {
            assert_int_equal(reg_call_end(c), REG_EDEADLINE);
            deadline_hits++;
        } else {
            reg_call_end(c);
        }
    }
    assert_true(deadline_hits > 40); /* backoffs are uniform over [0, 1000] ms */
    struct reg_policy_stats st;
    assert_int_equal(reg_policy_stats(g.p, &st), 0);
    assert_int_equal(st.deadline_exceeded, deadline_hits);
    teardown(&g);
    teardown(&f);
}

/* ---- the bulkhead ------------------------------------------------------- */

static void test_bulkhead_admits_up_to_its_limit(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.max_concurrent = 2;
    struct fixture f;
    setup(&f, 2, &o);
    struct reg_call *a, *b, *c;
    assert_int_equal(reg_call_begin(f.p, &a), 0);
    assert_int_equal(reg_call_begin(f.p, &b), 0);
    assert_int_equal(reg_call_begin(f.p, &c), REG_EBULKHEAD);
    struct reg_policy_stats st;
    assert_int_equal(reg_policy_stats(f.p, &st), 0);
    assert_int_equal(st.in_flight, 2);
    assert_int_equal(st.bulkhead_rejected, 1);
    assert_int_equal(st.calls, 2);
    reg_call_end(a);
    assert_int_equal(reg_call_begin(f.p, &c), 0);
    reg_call_end(b);
    reg_call_end(c);
    assert_int_equal(reg_policy_stats(f.p, &st), 0);
    assert_int_equal(st.in_flight, 0);
    teardown(&f);
}

struct waiter {
    struct reg_policy *p;
    int rc;
};

static void *wait_for_room(void *arg)
{
    struct waiter *w = arg;
    struct reg_call *c;
    w->rc = reg_call_begin(w->p, &c);
    if (w->rc == 0)
        reg_call_end(c);
    return NULL;
}

static void test_bulkhead_waits_for_room(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.max_concurrent = 1;
    o.max_wait_ms = 60000; /* only a bug would wait this long */
    struct fixture f;
    setup(&f, 1, &o);
    struct reg_call *a;
    assert_int_equal(reg_call_begin(f.p, &a), 0);
    struct waiter w = {f.p, -100};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_for_room, &w), 0);
    reg_call_end(a); /* before or after the waiter blocks: it gets in either way */
    pthread_join(t, NULL);
    assert_int_equal(w.rc, 0);
    teardown(&f);
}

static void test_adaptive_limit_shrinks_on_failure_and_grows_back(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.max_concurrent = 20;
    o.adaptive_concurrency = true;
    o.max_attempts = 1;
    o.instance_breaker.enabled = false;
    o.service_breaker.enabled = false;
    struct fixture f;
    setup(&f, 1, &o);
    struct reg_policy_stats st;
    assert_int_equal(reg_policy_stats(f.p, &st), 0);
    assert_int_equal(st.concurrency_limit, 10);
    for (int i = 0; i < 30; i++)
        run_call(f.p, all_retryable, 1, NULL);
    assert_int_equal(reg_policy_stats(f.p, &st), 0);
    assert_int_equal(st.concurrency_limit, 1); /* 10 * 0.9^30 < 1: floored at 1 */
    struct reg_call *a, *b;
    assert_int_equal(reg_call_begin(f.p, &a), 0);
    assert_int_equal(reg_call_begin(f.p, &b), REG_EBULKHEAD);
    reg_call_end(a); /* abandoned: a failure */
    for (int i = 0; i < 2000; i++)
        run_call(f.p, all_ok, 1, NULL);
    assert_int_equal(reg_policy_stats(f.p, &st), 0);
    assert_int_equal(st.concurrency_limit, 20); /* capped at max_concurrent */
    teardown(&f);
}

/* ---- blocking ----------------------------------------------------------- */

static enum reg_outcome attempt_i0_refuses(void *arg, const struct reg_endpoint *e,
                                           uint64_t timeout_ms, uint64_t remaining_ms)
{
    int *seen = arg;
    (*seen)++;
    assert_true(timeout_ms <= remaining_ms + 1);
    return strcmp(e->id, "i0") == 0 ? REG_OUTCOME_RETRYABLE : REG_OUTCOME_SUCCESS;
}

static void test_blocking_call(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.backoff_base_ms = 1;
    struct fixture f;
    setup(&f, 2, &o);
    int seen = 0;
    unsigned attempts, total = 0;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(reg_call(f.p, attempt_i0_refuses, &seen, &attempts), 0);
        total += attempts;
    }
    assert_int_equal((unsigned)seen, total);
    assert_true(total > 10); /* i0 cost retries until its breaker opened */
    struct reg_breaker_stats bs;
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.state, REG_BREAKER_OPEN);
    assert_int_equal(reg_call(f.p, NULL, NULL, NULL), REG_EINVAL);
    teardown(&f);
}

static void test_no_instances(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    struct fixture f;
    setup(&f, 0, &o);
    unsigned a = 9;
    assert_int_equal(run_call(f.p, all_ok, 1, &a), REG_ENOTFOUND);
    assert_int_equal(a, 0);
    teardown(&f);
}

static void test_instance_churn_forgets_idle_breakers_only(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.service_breaker.enabled = false;
    o.max_attempts = 1;
    struct fixture f;
    setup(&f, 1, &o);
    for (int i = 0; i < 5; i++) /* i0: open */
        run_call(f.p, all_retryable, 1, NULL);
    struct reg_breaker_stats bs;
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.state, REG_BREAKER_OPEN);
    /* 3000 instances come and go, 10 at a time, each called once */
    struct reg_instance *batch = make_list(10);
    for (int round = 0; round < 300; round++) {
        for (int k = 0; k < 10; k++) {
            char id[32];
            snprintf(id, sizeof(id), "churn-%d", round * 10 + k);
            free(batch[k].id);
            batch[k].id = strdup(id);
        }
        assert_int_equal(reg_balancer_update(f.b, batch, 10), 0);
        for (int k = 0; k < 10; k++)
            assert_int_equal(run_call(f.p, all_ok, 1, NULL), 0);
        advance_ms(o.instance_breaker.window_ms / 10); /* each round's calls age out */
    }
    /* the open breaker is remembered; long-idle closed ones may be forgotten */
    assert_int_equal(reg_policy_instance_stats(f.p, "i0", &bs), 0);
    assert_int_equal(bs.opened, 1);
    assert_int_equal(reg_policy_instance_stats(f.p, "churn-0", &bs), REG_ENOTFOUND);
    assert_int_equal(reg_policy_instance_stats(f.p, "churn-2999", &bs), 0); /* recent */
    reg_instances_free(batch, 10);
    teardown(&f);
}

/* ---- threads (ThreadSanitizer) ------------------------------------------ */

struct worker {
    struct reg_policy *p;
    unsigned seed;
    long ok, attempts;
};

static enum reg_outcome random_attempt(void *arg, const struct reg_endpoint *e, uint64_t timeout_ms,
                                       uint64_t remaining_ms)
{
    (void)e;
    (void)timeout_ms;
    (void)remaining_ms;
    struct worker *w = arg;
    advance_ms(1);
    return rand_r(&w->seed) % 4 ? REG_OUTCOME_SUCCESS : REG_OUTCOME_RETRYABLE;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 3000; i++) {
        unsigned a;
        if (reg_call(w->p, random_attempt, w, &a) == 0)
            w->ok++;
        w->attempts += a;
        if (i % 100 == 0) {
            struct reg_policy_stats st;
            reg_policy_stats(w->p, &st);
            struct reg_breaker_stats bs;
            reg_policy_instance_stats(w->p, "i1", &bs);
        }
    }
    return NULL;
}

struct updater {
    struct reg_balancer *b;
    struct reg_instance *a, *b_list;
    int stop;
};

static void *update(void *arg)
{
    struct updater *u = arg;
    for (int i = 0; !__atomic_load_n(&u->stop, __ATOMIC_ACQUIRE) && i < 100000; i++)
        reg_balancer_update(u->b, i % 2 ? u->a : u->b_list, i % 2 ? 6 : 3);
    return NULL;
}

static void test_threads_with_list_changes(void **state)
{
    (void)state;
    struct reg_policy_options o;
    test_options(&o);
    o.on_state = NULL;
    o.backoff_base_ms = 0;
    o.max_concurrent = 3;
    o.max_wait_ms = 60000;
    o.adaptive_concurrency = true;
    struct fixture f;
    setup(&f, 6, &o);
    struct reg_instance *three = make_list(3);
    struct updater u = {f.b, f.list, three, 0};
    pthread_t ut, t[4];
    struct worker w[4];
    assert_int_equal(pthread_create(&ut, NULL, update, &u), 0);
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){f.p, (unsigned)i + 1, 0, 0};
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    long ok = 0, attempts = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ok += w[i].ok;
        attempts += w[i].attempts;
    }
    __atomic_store_n(&u.stop, 1, __ATOMIC_RELEASE);
    pthread_join(ut, NULL);
    struct reg_policy_stats st;
    assert_int_equal(reg_policy_stats(f.p, &st), 0);
    assert_int_equal(st.calls + st.bulkhead_rejected + st.breaker_rejected, 12000);
    assert_int_equal(st.succeeded, (uint64_t)ok);
    assert_int_equal(st.succeeded + st.failed, st.calls);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.attempts, (uint64_t)attempts);
    assert_true(st.retries < st.attempts);
    reg_instances_free(three, 3);
    teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_invalid_options),
        cmocka_unit_test(test_instance_breaker_consecutive_open_half_open_close),
        cmocka_unit_test(test_half_open_admits_only_trial_calls),
        cmocka_unit_test(test_instance_breaker_by_rate_in_a_sliding_window),
        cmocka_unit_test(test_slow_calls_count_as_failures),
        cmocka_unit_test(test_service_breaker_fails_fast_then_recovers),
        cmocka_unit_test(test_retries_go_to_other_instances),
        cmocka_unit_test(test_retry_on_one_instance_repeats_it),
        cmocka_unit_test(test_non_retryable_failure_is_not_retried),
        cmocka_unit_test(test_backoff_is_full_jitter_within_bounds),
        cmocka_unit_test(test_budget_is_a_share_of_calls_plus_a_floor),
        cmocka_unit_test(test_budget_holds_attempts_per_call_under_total_outage),
        cmocka_unit_test(test_deadline_cuts_attempts_and_retries),
        cmocka_unit_test(test_bulkhead_admits_up_to_its_limit),
        cmocka_unit_test(test_bulkhead_waits_for_room),
        cmocka_unit_test(test_adaptive_limit_shrinks_on_failure_and_grows_back),
        cmocka_unit_test(test_blocking_call),
        cmocka_unit_test(test_no_instances),
        cmocka_unit_test(test_instance_churn_forgets_idle_breakers_only),
        cmocka_unit_test(test_threads_with_list_changes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
