/*
 * test_filter_regex — the filter's regular expressions (filter_regex.c): Go's syntax,
 * what it refuses, agreement with glibc's POSIX matcher where the two
 * syntaxes agree, and time linear in the subject where glibc's is not.
 */
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "filter_regex.h"

static int search(const char *pattern, const char *subject)
{
    struct regex *re;
    char err[160];
    if (regex_compile(pattern, &re, err, sizeof(err)) != 0)
        fail_msg("%s: refused: %s", pattern, err);
    int r = regex_search(re, subject, strlen(subject));
    regex_free(re);
    return r;
}

static void test_matches(void **state)
{
    (void)state;
    static const struct {
        const char *pattern, *subject;
        int want;
    } cases[] = {
        {"", "", 1},
        {"", "abc", 1},
        {"b", "abc", 1},
        {"^b", "abc", 0},
        {"^a.c$", "abc", 1},
        {"^a.c$", "a\nc", 0}, /* . is not \n, as in Go */
        {"(?s)^a.c$", "a\nc", 1},
        {"^web-[0-9]+$", "web-12", 1},
        {"^web-[0-9]+$", "web-", 0},
        {"^web-\\d{2,3}$", "web-123", 1},
        {"^web-\\d{2,3}$", "web-1234", 0},
        {"^web-\\d{2,}$", "web-1234", 1},
        {"^\\w+\\s\\S$", "ab_9 x", 1},
        {"\\D", "123", 0},
        {"^(a|bc)*d$", "abcabcad", 1},
        {"^(a|bc)*d$", "abd", 0},
        {"^(?:ab)+$", "ababab", 1},
        {"^(ab)+?$", "ababa", 0},
        {"^(?i)WEB$", "web", 1},
        {"^(?i:W)EB$", "wEB", 1},
        {"^(?i:W)EB$", "web", 0}, /* the flag ends with its group */
        {"^(?i:w)EB$", "WEB", 1},
        {"(?i)[^a]", "A", 0},
        {"(?m)^b$", "a\nb\nc", 1},
        {"^b$", "a\nb\nc", 0},
        {"\\bcat\\b", "a cat!", 1},
        {"\\bcat\\b", "concat", 0},
        {"\\Bcat", "concat", 1},
        {"\\Aab\\z", "ab", 1},
        {"[]a]+$", "]a]", 1},
        {"^[^]a]$", "b", 1},
        {"^[[:alpha:]_][[:alnum:]]*$", "_x9", 1},
        {"^[[:^digit:]]+$", "ab", 1},
        {"^[a\\-z]+$", "-", 1},
        {"^[\\d.]+$", "1.2.3", 1},
        {"^a{0}b$", "b", 1},
        {"^a{3}$", "aaa", 1},
        {"^a{3}$", "aa", 0},
        {"^a{1,2}$", "aaa", 0},
        {"a{,2}", "a{,2}", 1}, /* not a count: literal, as in Go */
        {"x{", "x{", 1},
        {"^\\x41\\t$", "A\t", 1},
        {"\\.", "a", 0},
        {"^(a*)*$", "aaa", 1}, /* an empty loop ends */
        {"^(a|)+$", "aa", 1},
        {"^(?P<name>x)(?<n2>y)$", "xy", 1},
        {"^\\$\\^\\(\\)\\[\\]\\{\\}\\|\\*\\+\\?\\\\$", "$^()[]{}|*+?\\", 1},
        /* found in review, each as Go answers it */
        {"(?i)[[:^lower:]]", "a", 0},         /* folded before the ^ inverts */
        {"(?i)[[:^upper:]]", "A", 0},
        {"(?i)^[^[:^lower:]]$", "A", 1},
        {"^(a(?i))*$", "aa", 1},              /* a flag group inside a group: repeatable */
        {"^((?i)){2}x$", "x", 1},
        {"^a{01}$", "a{01}", 1},              /* a leading zero: not a count */
        {"^a{01}$", "a", 0},
        {"^a\\ b$", "a b", 1},                /* a backslash before a space */
        {"^[[:]+$", "[:", 1},                 /* no ":]": '[' is a literal */
        {"[[:^cntrl:]]", "\x01", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = search(cases[i].pattern, cases[i].subject);
        if (got != cases[i].want)
            fail_msg("/%s/ on \"%s\": got %d, want %d", cases[i].pattern, cases[i].subject, got,
                     cases[i].want);
    }
}

static void test_refused(void **state)
{
    (void)state;
    static const struct {
        const char *pattern, *why;
    } cases[] = {
        {"(", "missing closing )"},
        {"a)", "unexpected )"},
        {"[a", "missing closing ]"},
        {"[z-a]", "range"},
        {"[[:nope:]]", "class"},
        {"*a", "missing argument"},
        {"a|+", "missing argument"},
        {"{2}", "missing argument"},
        {"(?i)*", "missing argument"},
        {"a**", "nested repetition"},
        {"a+++++++++++++++++++++++++++++++", "nested repetition"},
        {"a{2}{3}", "nested repetition"},
        {"a{1001}", "repeat count"},
        {"a{5,2}", "repeat count"},
        {"(a)\\1", "backreference"},
        {"\\q", "escape"},
        {"a\\", "trailing backslash"},
        {"\\x4", "hex"},
        {"(?z)", "Perl syntax"},
        {"(?P<>a)", "named"},
        {"(?P<a)b>c)", "named"},
        {"(?-)", "Perl syntax"},
        {"(?i-)", "Perl syntax"},
        /* the fuzzer's: a '{' inside brackets, then stacked '+' */
        {"^r[1-{9]=++++++++++++++++++++++++++++++$", "nested repetition"},
        {"((((a{10}){10}){10}){10})", "too large"},
        {"(a{999})(b{999})(c{999})", "too large"},
        {"((((((((((((((((((((((((((((((((((a))))))))))))))))))))))))))))))))))", "deeply"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct regex *re = (struct regex *)1;
        char err[160] = "";
        if (regex_compile(cases[i].pattern, &re, err, sizeof(err)) == 0)
            fail_msg("/%s/: accepted", cases[i].pattern);
        if (re != NULL)
            fail_msg("/%s/: refused, but *out was set", cases[i].pattern);
        if (strstr(err, cases[i].why) == NULL)
            fail_msg("/%s/: \"%s\" does not say \"%s\"", cases[i].pattern, err, cases[i].why);
    }
    /* bodies of no instructions, repeated: compiled at once (the nested
     * counts multiplied before: 2 s, then about half an hour) */
    static const char *const empty_bodies[] = {"((((){1000}){1000}){1000}){1000}",
                                               "((((a{0}){1000}){1000}){1000}){1000}",
                                               "((((?i)){1000}){1000}){1000}"};
    for (size_t i = 0; i < sizeof(empty_bodies) / sizeof(empty_bodies[0]); i++) {
        struct regex *re;
        char err[160];
        time_t t0 = time(NULL);
        assert_int_equal(regex_compile(empty_bodies[i], &re, err, sizeof(err)), 0);
        assert_true(regex_search(re, "x", 1));
        regex_free(re);
        if (time(NULL) - t0 > 5)
            fail_msg("%s: compiling took %lld s", empty_bodies[i], (long long)(time(NULL) - t0));
    }
    char longer[REGEX_MAX_LEN + 2];
    memset(longer, 'a', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    struct regex *re;
    char err[160];
    assert_int_not_equal(regex_compile(longer, &re, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "longer"));
}

/* Random patterns over a small alphabet, in the syntax both share, against
 * glibc's POSIX matcher on random subjects: the same yes or no. */
static void test_agrees_with_glibc(void **state)
{
    (void)state;
    static const char *const atoms[] = {"a", "b", ".", "[ab]", "[^a]", "(a|b)", "(ab|ba)",
                                        "(a|)", "^", "$", "(a*b)"};
    static const char *const ops[] = {"", "", "*", "+", "?", "{2}", "{0,2}", "{1,}"};
    srand(12345);
    for (int t = 0; t < 3000; t++) {
        char pattern[128] = "";
        int n = 1 + rand() % 5;
        for (int i = 0; i < n; i++) {
            const char *atom = atoms[rand() % 11];
            strcat(pattern, atom);
            if (atom[0] != '^' && atom[0] != '$')
                strcat(pattern, ops[rand() % 8]);
        }
        regex_t posix;
        if (regcomp(&posix, pattern, REG_EXTENDED | REG_NOSUB) != 0)
            continue;
        struct regex *re;
        char err[160];
        if (regex_compile(pattern, &re, err, sizeof(err)) != 0)
            fail_msg("/%s/: refused (%s), glibc takes it", pattern, err);
        for (int k = 0; k < 8; k++) {
            char subject[12];
            int len = rand() % 11;
            for (int i = 0; i < len; i++)
                subject[i] = "abc"[rand() % 3];
            subject[len] = '\0';
            bool want = regexec(&posix, subject, 0, NULL, 0) == 0;
            if (regex_search(re, subject, (size_t)len) != want)
                fail_msg("/%s/ on \"%s\": glibc says %d", pattern, subject, want);
        }
        regex_free(re);
        regfree(&posix);
    }
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The probe's pattern on a 4 KB check output: glibc took 33 s and 570 MB.
 * Linear: a subject 8 times longer takes at most about 8 times as long
 * (bounded loosely: 32 times, so that a loaded machine does not fail it). */
static void test_linear_in_the_subject(void **state)
{
    (void)state;
    struct regex *re;
    char err[160];
    assert_int_equal(regex_compile(".*a[ab]{100}c", &re, err, sizeof(err)), 0);
    size_t big = 32768;
    char *s = malloc(big + 1);
    assert_non_null(s);
    srand(7);
    for (size_t i = 0; i < big; i++)
        s[i] = "ab"[rand() % 2];
    s[big] = '\0';
    double t0 = seconds();
    for (int i = 0; i < 8; i++)
        assert_false(regex_search(re, s, big / 8));
    double t_small = seconds() - t0;
    t0 = seconds();
    assert_false(regex_search(re, s, big));
    double t_big = seconds() - t0;
    if (t_big > 32 * t_small + 0.05)
        fail_msg("8 x 4 KB took %.3f s, 32 KB %.3f s: not linear", t_small, t_big);
    s[big - 102] = 'a'; /* now it matches, at the very end */
    s[big - 1] = 'c';
    assert_true(regex_search(re, s, big));
    free(s);
    regex_free(re);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_agrees_with_glibc),
        cmocka_unit_test(test_linear_in_the_subject),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
