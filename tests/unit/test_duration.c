/* Unit tests for duration.c: the daemon's Go-style durations (parsing is
 * libregistry's, see duration_parse.h; the table is shared with
 * test_client.c), Go's nanosecond integers, and formatting; Go's signed
 * nanosecond durations and RFC 3339 instants (ACL token expiration). */
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

/* Go's time.ParseDuration and Duration.String, as Consul answers them
 * (values from Go's own tests where they exist). */
static void test_ns_durations(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t ns;
        const char *shown; /* NULL: the text itself */
    } ok[] = {
        {"0", 0, "0s"},
        {"-0", 0, "0s"},
        {"+0", 0, "0s"},
        {"5s", 5000000000, NULL},
        {"30s", 30000000000, NULL},
        {"1478s", 1478000000000, "24m38s"},
        {"-5s", -5000000000, NULL},
        {"+5s", 5000000000, "5s"},
        {"5.6s", 5600000000, NULL},
        {"5.s", 5000000000, "5s"},
        {".5s", 500000000, "500ms"},
        {"1.004s", 1004000000, NULL},
        {"100.00100s", 100001000000, "1m40.001s"},
        {"10ns", 10, NULL},
        {"11us", 11000, "11\xc2\xb5s"},
        {"12\xc2\xb5s", 12000, NULL},
        {"12\xce\xbcs", 12000, "12\xc2\xb5s"},
        {"13ms", 13000000, NULL},
        {"14s", 14000000000, NULL},
        {"15m", 900000000000, "15m0s"},
        {"16h", 57600000000000, "16h0m0s"},
        {"3h30m", 12600000000000, "3h30m0s"},
        {"10.5s4m", 250500000000, "4m10.5s"},
        {"-2m3.4s", -123400000000, "-2m3.4s"},
        {"1h2m3s4ms5us6ns", 3723004005006, "1h2m3.004005006s"},
        {"39h9m14.425s", 140954425000000, NULL},
        {"0.3333333333333333333h", 1200000000000, "20m0s"},
        {"9007199254740993ns", 9007199254740993, "2501h59m59.254740993s"},
        {"9223372036854775807ns", INT64_MAX, "2562047h47m16.854775807s"},
        {"-9223372036854775808ns", INT64_MIN, "-2562047h47m16.854775808s"},
        {"1.5h", 5400000000000, "1h30m0s"},
        {"90s", 90000000000, "1m30s"},
        {"24h", 86400000000000, "24h0m0s"},
        {"1m", 60000000000, "1m0s"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        int64_t ns = 7;
        char buf[32];
        if (duration_parse_ns(ok[i].text, &ns) != 0 || ns != ok[i].ns)
            fail_msg("\"%s\": %lld, want %lld", ok[i].text, (long long)ns, (long long)ok[i].ns);
        duration_format_ns(ns, buf, sizeof(buf));
        assert_string_equal(buf, ok[i].shown ? ok[i].shown : ok[i].text);
    }
    static const char *const bad[] = {
        "", "3", "-", "s", ".", "-.", ".s", "+.s", "1d", "1 s", "1s ", " 1s", "1S", "1.2.3s",
        "9223372036854775808ns", "-9223372036854775809ns", "3000000h", "1e3s", "0x10s", "--1s",
        "1h-2m",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ns = 7;
        if (duration_parse_ns(bad[i], &ns) != REG_EINVAL || ns != 7)
            fail_msg("\"%s\" was taken (%lld)", bad[i], (long long)ns);
    }
    int64_t ns;
    assert_int_equal(duration_parse_ns(NULL, &ns), REG_EINVAL);
}

static void test_rfc3339(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        long long sec;
        long nsec;
        const char *shown; /* NULL: the text itself */
    } ok[] = {
        {"1970-01-01T00:00:00Z", 0, 0, NULL},
        {"2019-04-04T18:47:56Z", 1554403676, 0, NULL},
        {"2019-04-04T18:47:56.5Z", 1554403676, 500000000, NULL},
        {"2019-04-04T18:47:56.123456789Z", 1554403676, 123456789, NULL},
        {"2019-04-04T18:47:56.1234567891Z", 1554403676, 123456789,
         "2019-04-04T18:47:56.123456789Z"},
        {"2019-04-04T18:47:56.100Z", 1554403676, 100000000, "2019-04-04T18:47:56.1Z"},
        {"2019-04-04T20:47:56+02:00", 1554403676, 0, "2019-04-04T18:47:56Z"},
        {"2019-04-04T13:17:56-05:30", 1554403676, 0, "2019-04-04T18:47:56Z"},
        {"2000-02-29T00:00:00Z", 951782400, 0, NULL},
        {"1969-12-31T23:59:59Z", -1, 0, NULL},
        {"9999-12-31T23:59:59Z", 253402300799, 0, NULL},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct timespec t = {0, 0};
        char buf[40];
        if (rfc3339_parse(ok[i].text, &t) != 0 || (long long)t.tv_sec != ok[i].sec ||
            t.tv_nsec != ok[i].nsec)
            fail_msg("\"%s\": %lld.%09ld", ok[i].text, (long long)t.tv_sec, (long)t.tv_nsec);
        rfc3339_format(&t, buf, sizeof(buf));
        assert_string_equal(buf, ok[i].shown ? ok[i].shown : ok[i].text);
    }
    static const char *const bad[] = {
        "",
        "2019-04-04",
        "2019-04-04T18:47:56",
        "2019-04-04 18:47:56Z",
        "2019-04-04t18:47:56Z",
        "2019-04-04T18:47:56z",
        "2019-04-04T18:47:56.Z",
        "2019-04-04T18:47:56+0200",
        "2019-04-04T18:47:56+24:00",
        "2019-13-04T18:47:56Z",
        "2019-00-04T18:47:56Z",
        "2019-02-29T18:47:56Z",
        "1900-02-29T00:00:00Z",
        "2019-04-31T18:47:56Z",
        "2019-04-04T24:00:00Z",
        "2019-04-04T18:60:56Z",
        "2019-04-04T18:47:60Z",
        "2019-04-04T18:47:56Zjunk",
        "19-04-04T18:47:56Z",
        "+2019-04-04T18:47:56Z",
        "1h",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct timespec t;
        if (rfc3339_parse(bad[i], &t) != REG_EINVAL)
            fail_msg("\"%s\" was taken", bad[i]);
    }
    struct timespec t;
    assert_int_equal(rfc3339_parse(NULL, &t), REG_EINVAL);
    struct timespec a = {10, 5}, b = {10, 6}, c = {11, 0};
    assert_true(timespec_cmp(&a, &b) < 0);
    assert_true(timespec_cmp(&b, &a) > 0);
    assert_true(timespec_cmp(&b, &c) < 0);
    assert_int_equal(timespec_cmp(&c, &c), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_json),
        cmocka_unit_test(test_format_round_trip),
        cmocka_unit_test(test_ns_durations),
        cmocka_unit_test(test_rfc3339),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
