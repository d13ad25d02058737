/* Unit tests for http_rate.c: the token bucket behind http_read_rate and
 * http_write_rate (burst of one second's worth, refill at the rate,
 * Retry-After rounded up to whole seconds, 0 = no limit). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "http_rate.h"

static void test_unlimited(void **state)
{
    (void)state;
    struct http_rate b;
    http_rate_init(&b, 0, 100);
    for (int i = 0; i < 100000; i++)
        assert_true(http_rate_take(&b, 100, NULL));
}

static void test_burst_then_rate(void **state)
{
    (void)state;
    struct http_rate b;
    unsigned retry = 0;
    http_rate_init(&b, 5, 10.0);
    for (int i = 0; i < 5; i++)
        assert_true(http_rate_take(&b, 10.0, &retry));
    assert_false(http_rate_take(&b, 10.0, &retry));
    assert_int_equal(retry, 1);
    assert_false(http_rate_take(&b, 10.1, &retry)); /* half a token */
    assert_true(http_rate_take(&b, 10.2, &retry));  /* one more at 5/s */
    assert_false(http_rate_take(&b, 10.2, &retry));
    /* a long pause refills the burst, no more */
    for (int i = 0; i < 5; i++)
        assert_true(http_rate_take(&b, 100.0, &retry));
    assert_false(http_rate_take(&b, 100.0, &retry));
}

static void test_slow_rate_retry_after(void **state)
{
    (void)state;
    struct http_rate b;
    unsigned retry = 0;
    http_rate_init(&b, 0.25, 0); /* one request every 4 s; burst at least one */
    assert_true(http_rate_take(&b, 0, &retry));
    assert_false(http_rate_take(&b, 0, &retry));
    assert_int_equal(retry, 4);
    assert_false(http_rate_take(&b, 3.5, &retry));
    assert_int_equal(retry, 1);
    assert_true(http_rate_take(&b, 4.0, &retry));
    /* a clock going backwards adds nothing */
    assert_false(http_rate_take(&b, 1.0, &retry));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_burst_then_rate),
        cmocka_unit_test(test_slow_rate_retry_after),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
