/* Unit tests for filter.c: go-bexpr's grammar (precedence, negations,
 * quoting, bare values), selector and value checking against a schema, and
 * the evaluation rules (missing map keys, lists of objects). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "filter.h"

static const struct filter_field schema[] = {
    {"Service", 's'},        {"Port", 'i'},    {"Tags", 'L'},
    {"Meta", 'M'},           {"Meta.*", 's'},  {"EnableTagOverride", 'b'},
    {"Checks", 'O'},         {"Checks.Status", 's'},
};

static json_t *entry(void)
{
    return json_loads("{\"Service\":\"web\",\"Port\":8080,\"Tags\":[\"v1\",\"blue\"],"
                      "\"Meta\":{\"zone\":\"a\",\"version\":\"1.2\"},\"EnableTagOverride\":true,"
                      "\"Checks\":[{\"Status\":\"passing\"},{\"Status\":\"critical\"}]}",
                      0, NULL);
}

/* 1 match, 0 no match, -1 refused (err filled). */
static int run(const char *text, char *err, size_t errlen)
{
    struct filter *f;
    err[0] = '\0';
    if (filter_compile(text, schema, sizeof(schema) / sizeof(schema[0]), &f, err, errlen) != 0)
        return -1;
    json_t *e = entry();
    int r = filter_match(f, e) ? 1 : 0;
    json_decref(e);
    filter_free(f);
    return r;
}

static void test_matches(void **state)
{
    (void)state;
    char err[200];
    static const struct {
        const char *text;
        int want;
    } cases[] = {
        {"Service == web", 1},
        {"Service == \"web\"", 1},
        {"Service == `web`", 1},
        {"Service != web", 0},
        {"Port == 8080", 1},
        {"Port != 8080", 0},
        {"EnableTagOverride == true", 1},
        {"EnableTagOverride == F", 0},
        {"\"v1\" in Tags", 1},
        {"\"v9\" not in Tags", 1},
        {"Tags contains blue", 1},
        {"Tags not contains blue", 0},
        {"\"zone\" in Meta", 1},
        {"Meta.zone == a", 1},
        {"Meta[\"version\"] == \"1.2\"", 1},
        {"Meta.missing == a", 0},     /* a missing key equals nothing */
        {"Meta.missing != a", 1},
        {"Meta.missing is empty", 1},
        {"Meta.missing not matches x", 1},
        {"Tags is empty", 0},
        {"Meta is not empty", 1},
        {"Service matches \"^w.b$\"", 1},
        {"Service not matches \"^x\"", 1},
        /* bounds, brackets holding repetition characters, escapes: accepted */
        {"Service matches \"^[a-z]{1,3}(b|[{+*]){0,2}$\"", 1},
        {"Service matches \"^[]w[:alpha:]]+e?b{1}$\"", 1},
        {"Meta.version matches \"^[0-9]+(\\\\.[0-9]+){1,3}$\"", 1},
        {"Service matches \"w\\\\+\"", 0},
        {"\"eb\" in Service", 1},     /* substring */
        {"Checks.Status == critical", 1}, /* any element */
        {"Checks.Status == warning", 0},
        {"Service == x or Service == web and Port == 1", 0}, /* and binds tighter */
        {"(Service == x or Service == web) and Port == 8080", 1},
        {"not Service == x and Port == 8080", 1},
        {"not (Service == web and Port == 8080)", 0},
        {"not not Service == web", 1},
        {"  ( Service == web )  ", 1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = run(cases[i].text, err, sizeof(err));
        if (got != cases[i].want)
            fail_msg("%s: got %d, want %d (%s)", cases[i].text, got, cases[i].want, err);
    }
}

static void test_refused(void **state)
{
    (void)state;
    char err[200];
    static const struct {
        const char *text, *why;
    } cases[] = {
        {"", "expected"},
        {"Service", "operator"},
        {"Service ==", "value"},
        {"Nope == 1", "Selector \"Nope\" is not valid"},
        {"Meta.a.b == 1", "not valid"},
        {"Port == eighty", "integer"},
        {"Port contains 8", "operator"},
        {"Tags == v1", "operator"},
        {"EnableTagOverride == maybe", "boolean"},
        {"(Service == web", "Unmatched"},
        {"Service == web)", "unexpected"},
        {"Service == \"web", "Unterminated"},
        {"Service = web", "character"},
        {"Service matches \"(\"", "regular expression"},
        /* found by the fuzzer: stacked repetitions made regcomp take GBs */
        {"Service matches \"^r+++++++++++++++++++++++++++++++++++++++$\"", "repetition"},
        {"Service matches \"a**\"", "repetition"},
        /* found by the fuzzer: a '{' inside a bracket hid the stacked '+' */
        {"Service matches \"^r[1-{9]=++++++++++++++++++++++++++++++++$\"", "repetition"},
        /* nested bounds multiply: 10 * 10 * 10 * 10 * 10 copies */
        {"Service matches \"((((a{10}){10}){10}){10}){10}\"", "too large"},
        {"Service matches \"(a|b|ab|ba){200}$\"", "too large"},
        {"Service matches \"(a|b{5}c)x{1001}\"", "repeat count"},
        {"Service matches \"(a{999})(b{999})(c{9})\"", "too large"},
        {"Service matches \"(a)\\\\1\"", "backreference"},
        {"\"a\" in \"b\"", "selector"},
        {"Service == web and", "end of the expression"},
        {"Service is nil", "nil"},
        {"Port == 1x", "number"},
        {"Service == web-2", "unexpected"},
        {"Service == \"a\\q\"", "escape"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (run(cases[i].text, err, sizeof(err)) != -1)
            fail_msg("%s: accepted", cases[i].text);
        if (strstr(err, cases[i].why) == NULL)
            fail_msg("%s: \"%s\" does not say \"%s\"", cases[i].text, err, cases[i].why);
    }
}

static void test_bounds(void **state)
{
    (void)state;
    char err[200], text[FILTER_MAX_LEN + 2];
    memset(text, '(', 100);
    strcpy(text + 100, "Service == web");
    memset(text + 114, ')', 100);
    text[214] = '\0';
    assert_int_equal(run(text, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "nested"));
    memset(text, 'a', sizeof(text) - 1);
    text[sizeof(text) - 1] = '\0';
    assert_int_equal(run(text, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "longer"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
