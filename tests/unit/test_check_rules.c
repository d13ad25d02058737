/*
 * test_check_rules.c — the checker's decisions with a fake clock:
 * thresholds, self-preservation, rendezvous ownership.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "check_rules.h"

static void thresholds_hold_until_reached(void **state)
{
    (void)state;
    struct rules_run run = {0};
    const int H = RULES_HOLD, P = RULES_PASSING, W = RULES_WARNING, C = RULES_CRITICAL;
    /* critical check, SuccessBeforePassing 3: the third pass is reported */
    assert_int_equal(rules_threshold(&run, C, P, 3, 3, 0), H);
    assert_int_equal(rules_threshold(&run, C, P, 3, 3, 0), H);
    assert_int_equal(rules_threshold(&run, C, P, 3, 3, 0), P);
    /* a failure in between starts the count again */
    run = (struct rules_run){0};
    assert_int_equal(rules_threshold(&run, C, P, 3, 3, 0), H);
    assert_int_equal(rules_threshold(&run, C, C, 3, 3, 0), C); /* no news: output moves */
    assert_int_equal(rules_threshold(&run, C, P, 3, 3, 0), H);
    assert_int_equal(rules_threshold(&run, C, P, 3, 3, 0), H);
    assert_int_equal(rules_threshold(&run, C, P, 3, 3, 0), P);
    /* a warning result counts as a success (Consul's StatusHandler) */
    run = (struct rules_run){0};
    assert_int_equal(rules_threshold(&run, C, W, 2, 3, 0), H);
    assert_int_equal(rules_threshold(&run, C, P, 2, 3, 0), P);
    /* passing check, FailuresBeforeCritical 2: the second failure is reported */
    run = (struct rules_run){0};
    assert_int_equal(rules_threshold(&run, P, C, 3, 2, 0), H);
    assert_int_equal(rules_threshold(&run, P, C, 3, 2, 0), C);
    /* a warning after a failure is a success: held until SuccessBeforePassing
     * in a row, as Consul's StatusHandler; it starts the failures' count again */
    run = (struct rules_run){0};
    assert_int_equal(rules_threshold(&run, P, C, 3, 2, 0), H);
    assert_int_equal(rules_threshold(&run, P, W, 3, 2, 0), H);
    assert_int_equal(rules_threshold(&run, P, C, 3, 2, 0), H);
    /* in steady state the passes before count: a 429 shows at once */
    run = (struct rules_run){0};
    for (int i = 0; i < 3; i++)
        assert_int_equal(rules_threshold(&run, P, P, 3, 2, 0), P);
    assert_int_equal(rules_threshold(&run, P, W, 3, 2, 0), W);
    /* a passing check reports passing results at once (output updates) */
    run = (struct rules_run){0};
    assert_int_equal(rules_threshold(&run, P, P, 3, 2, 0), P);
}

static void failures_before_warning(void **state)
{
    (void)state;
    struct rules_run run = {0};
    const int H = RULES_HOLD, P = RULES_PASSING, W = RULES_WARNING, C = RULES_CRITICAL;
    /* FailuresBeforeWarning 1, FailuresBeforeCritical 3 */
    assert_int_equal(rules_threshold(&run, P, C, 0, 3, 1), W);
    assert_int_equal(rules_threshold(&run, W, C, 0, 3, 1), W);
    assert_int_equal(rules_threshold(&run, W, C, 0, 3, 1), C);
    assert_int_equal(rules_threshold(&run, C, P, 0, 3, 1), P);
    /* back from warning with SuccessBeforePassing 3: three passes */
    run = (struct rules_run){0};
    assert_int_equal(rules_threshold(&run, P, C, 3, 3, 1), W);
    assert_int_equal(rules_threshold(&run, W, P, 3, 3, 1), H);
    assert_int_equal(rules_threshold(&run, W, P, 3, 3, 1), H);
    assert_int_equal(rules_threshold(&run, W, P, 3, 3, 1), P);
    /* FailuresBeforeWarning 2 */
    run = (struct rules_run){0};
    assert_int_equal(rules_threshold(&run, P, C, 0, 3, 2), H);
    assert_int_equal(rules_threshold(&run, P, C, 0, 3, 2), W);
    /* not below FailuresBeforeCritical: critical comes first */
    run = (struct rules_run){0};
    assert_int_equal(rules_threshold(&run, P, C, 0, 2, 5), H);
    assert_int_equal(rules_threshold(&run, P, C, 0, 2, 5), C);
}

static void thresholds_of_zero_act_as_one(void **state)
{
    (void)state;
    struct rules_run run = {0};
    assert_int_equal(rules_threshold(&run, RULES_CRITICAL, RULES_PASSING, 0, 0, 0),
                     RULES_PASSING);
    assert_int_equal(rules_threshold(&run, RULES_PASSING, RULES_CRITICAL, 0, 0, 0),
                     RULES_CRITICAL);
}

static void self_preservation_turns_on_and_off(void **state)
{
    (void)state;
    static struct rules_sp sp; /* large: not on the stack */
    struct rules_sp_limits lim = {.share = 0.5, .window_ms = 10000, .min = 10};
    uint64_t now = 1000000, recent;
    rules_sp_init(&sp, now);
    /* 100 checks; 50 critical within the window is not more than half */
    for (int i = 0; i < 50; i++)
        rules_sp_record(&sp, now);
    assert_int_equal(rules_sp_update(&sp, now, &lim, 100, 50, &recent), 0);
    assert_int_equal(recent, 50);
    now += 3000;
    rules_sp_record(&sp, now);
    assert_int_equal(rules_sp_update(&sp, now, &lim, 100, 51, &recent), 1);
    assert_true(sp.active);
    /* stays on while more than half are critical, even after the window */
    now += 20000;
    assert_int_equal(rules_sp_update(&sp, now, &lim, 100, 60, &recent), 0);
    assert_int_equal(recent, 0); /* the old transitions left the window */
    assert_true(sp.active);
    assert_int_equal(rules_sp_update(&sp, now + 1000, &lim, 100, 50, &recent), -1);
    assert_false(sp.active);
}

static void self_preservation_needs_min_and_share(void **state)
{
    (void)state;
    static struct rules_sp sp;
    uint64_t now = 5000, recent;
    struct rules_sp_limits lim = {.share = 0.5, .window_ms = 10000, .min = 10};
    rules_sp_init(&sp, now);
    for (int i = 0; i < 9; i++)
        rules_sp_record(&sp, now);
    assert_int_equal(rules_sp_update(&sp, now, &lim, 9, 9, &recent), 0); /* below min */
    lim.share = 1.0;                                                    /* disabled */
    for (int i = 0; i < 20; i++)
        rules_sp_record(&sp, now);
    assert_int_equal(rules_sp_update(&sp, now, &lim, 20, 20, &recent), 0);
    assert_false(sp.active);
}

static void rendezvous_picks_exactly_one_and_moves_little(void **state)
{
    (void)state;
    const uint64_t servers[] = {11, 22, 33, 44};
    int owned[4] = {0}, moved = 0;
    for (uint64_t key = 1; key <= 4000; key++) {
        int winners = 0, winner = -1;
        for (int s = 0; s < 4; s++)
            if (rules_rendezvous_self(key * 0x9e3779b97f4a7c15ULL, servers[s], servers, 4)) {
                winners++;
                winner = s;
            }
        assert_int_equal(winners, 1);
        owned[winner]++;
        /* server 44 goes: only its keys move */
        int after = -1;
        for (int s = 0; s < 3; s++)
            if (rules_rendezvous_self(key * 0x9e3779b97f4a7c15ULL, servers[s], servers, 3))
                after = s;
        assert_true(after >= 0);
        if (winner != 3)
            assert_int_equal(after, winner);
        else
            moved++;
    }
    for (int s = 0; s < 4; s++) /* roughly a quarter each */
        assert_in_range(owned[s], 700, 1300);
    assert_int_equal(moved, owned[3]);
    /* alone, a server owns everything */
    assert_true(rules_rendezvous_self(12345, 11, NULL, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(thresholds_hold_until_reached),
        cmocka_unit_test(thresholds_of_zero_act_as_one),
        cmocka_unit_test(failures_before_warning),
        cmocka_unit_test(self_preservation_turns_on_and_off),
        cmocka_unit_test(self_preservation_needs_min_and_share),
        cmocka_unit_test(rendezvous_picks_exactly_one_and_moves_little),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
