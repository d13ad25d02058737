/* Unit tests for duration.c: the daemon's Go-style durations (parsing is
 * libregistry's, see duration_parse.h; the table is shared with
 * test_client.c), Go's nanosecond integers, and formatting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "duration.h"
#include "duration_cases.h"
#include "registry/error.h"

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_DURATION_CASES; i++) {
        const struct duration_case *t = &duration_cases[i];
        uint64_t ms = 12345;
        int rc = duration_parse(t->text, &ms);
        if ((rc == 0) != t->ok || (t->ok && ms != t->ms) || (!t->ok && ms != 12345))
            fail_msg("\"%s\": rc %d ms %llu, want %s %llu", t->text, rc, (unsigned long long)ms,
                     t->ok ? "ok" : "error", (unsigned long long)t->ms);
        if (!t->ok)
            assert_int_equal(rc, REG_EINVAL);
    }
    uint64_t ms;
    assert_int_equal(duration_parse(NULL, &ms), REG_EINVAL);
}

static void test_parse_json(void **state)
{
    (void)state;
    uint64_t ms = 0;
    json_t *v = json_string("1m30s");
    assert_int_equal(duration_parse_json(v, &ms), 0);
    assert_int_equal(ms, 90000);
    json_decref(v);
    v = json_integer(1500000000); /* Go: nanoseconds */
    assert_int_equal(duration_parse_json(v, &ms), 0);
    assert_int_equal(ms, 1500);
    json_decref(v);
    v = json_integer(-1);
    assert_int_equal(duration_parse_json(v, &ms), REG_EINVAL);
    json_decref(v);
    v = json_real(1.5);
    assert_int_equal(duration_parse_json(v, &ms), REG_EINVAL);
    json_decref(v);
    assert_int_equal(duration_parse_json(NULL, &ms), REG_EINVAL);
}

static void test_format_round_trip(void **state)
{
    (void)state;
    static const struct {
        uint64_t ms;
        const char *text;
    } cases[] = {{0, "0s"},
                 {250, "250ms"},
                 {1000, "1s"},
                 {90000, "1m30s"},
                 {3600000, "1h0m0s"},
                 {1500, "1.5s"}, {1250, "1.25s"}, {1001, "1.001s"},
                 {9910500, "2h45m10.5s"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[32];
        uint64_t back = 1;
        duration_format(cases[i].ms, buf, sizeof(buf));
        assert_string_equal(buf, cases[i].text);
        assert_int_equal(duration_parse(buf, &back), 0);
        assert_int_equal(back, cases[i].ms);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_json),
        cmocka_unit_test(test_format_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
