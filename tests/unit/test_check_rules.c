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
    /* critical check, SuccessBeforePassing 3: the third pass is reported */
    assert_false(rules_threshold(&run, RULES_CRITICAL, RULES_PASSING, 3, 3));
    assert_false(rules_threshold(&run, RULES_CRITICAL, RULES_PASSING, 3, 3));
    assert_true(rules_threshold(&run, RULES_CRITICAL, RULES_PASSING, 3, 3));
    /* a failure in between starts the count again */
    run = (struct rules_run){0};
    assert_false(rules_threshold(&run, RULES_CRITICAL, RULES_PASSING, 3, 3));
    assert_true(rules_threshold(&run, RULES_CRITICAL, RULES_CRITICAL, 3, 3)); /* no news */
    assert_false(rules_threshold(&run, RULES_CRITICAL, RULES_PASSING, 3, 3));
    assert_false(rules_threshold(&run, RULES_CRITICAL, RULES_PASSING, 3, 3));
    assert_true(rules_threshold(&run, RULES_CRITICAL, RULES_PASSING, 3, 3));
    /* passing check, FailuresBeforeCritical 2: the second failure is reported */
    run = (struct rules_run){0};
    assert_false(rules_threshold(&run, RULES_PASSING, RULES_CRITICAL, 3, 2));
    assert_true(rules_threshold(&run, RULES_PASSING, RULES_WARNING, 3, 2));
    /* a passing check reports passing results at once (output updates) */
    run = (struct rules_run){0};
    assert_true(rules_threshold(&run, RULES_PASSING, RULES_PASSING, 3, 2));
}

static void thresholds_of_zero_act_as_one(void **state)
{
    (void)state;
    struct rules_run run = {0};
    assert_true(rules_threshold(&run, RULES_CRITICAL, RULES_PASSING, 0, 0));
    assert_true(rules_threshold(&run, RULES_PASSING, RULES_CRITICAL, 0, 0));
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
        cmocka_unit_test(self_preservation_turns_on_and_off),
        cmocka_unit_test(self_preservation_needs_min_and_share),
        cmocka_unit_test(rendezvous_picks_exactly_one_and_moves_little),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
