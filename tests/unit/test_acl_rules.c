/*
 * test_acl_rules.c — the ACL rule language (HCL and JSON forms, errors with
 * line and column) and the decision (exact > longest prefix, deny > write >
 * read), plus the secret hashing and the default policies of acl.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "acl.h"
#include "acl_rules.h"

static int parse(const char *text, struct acl_rules *r, char *err, size_t errlen)
{
    return acl_rules_parse(text, strlen(text), r, err, errlen);
}

static void hcl_form(void **state)
{
    (void)state;
    struct acl_rules r = {0};
    char err[256] = "";
    const char *text = "# a comment\n"
                       "service \"web\" { policy = \"write\" }\n"
                       "service_prefix \"\" { policy = \"read\" } // everything else\n"
                       "/* block\n comment */ node_prefix \"n\" {\n  policy = \"read\"\n}\n"
                       "operator = \"read\"\n"
                       "key_prefix \"\" { policy = \"write\" }\n" /* Consul's, ignored */
                       "agent \"a1\" { policy = \"deny\", intentions = \"read\" }\n";
    assert_int_equal(parse(text, &r, err, sizeof(err)), 0);
    assert_int_equal(r.n, 5);
    assert_int_equal(acl_rules_decide(&r, ACL_RES_SERVICE, "web"), ACL_WRITE);
    assert_int_equal(acl_rules_decide(&r, ACL_RES_SERVICE, "db"), ACL_READ);
    assert_int_equal(acl_rules_decide(&r, ACL_RES_NODE, "n1"), ACL_READ);
    assert_int_equal(acl_rules_decide(&r, ACL_RES_NODE, "m1"), ACL_NONE);
    assert_int_equal(acl_rules_decide(&r, ACL_RES_OPERATOR, NULL), ACL_READ);
    assert_int_equal(acl_rules_decide(&r, ACL_RES_AGENT, "a1"), ACL_DENY);
    assert_int_equal(acl_rules_decide(&r, ACL_RES_ACL, NULL), ACL_NONE);
    acl_rules_fini(&r);
}

static void json_form(void **state)
{
    (void)state;
    struct acl_rules r = {0};
    char err[256] = "";
    const char *text = "{\"service\": {\"web\": {\"policy\": \"write\"}},"
                       " \"service_prefix\": {\"\": {\"policy\": \"read\"}}, \"acl\": \"read\"}";
    assert_int_equal(parse(text, &r, err, sizeof(err)), 0);
    assert_int_equal(acl_rules_decide(&r, ACL_RES_SERVICE, "web"), ACL_WRITE);
    assert_int_equal(acl_rules_decide(&r, ACL_RES_SERVICE, "x"), ACL_READ);
    assert_int_equal(acl_rules_decide(&r, ACL_RES_ACL, NULL), ACL_READ);
    acl_rules_fini(&r);
    assert_int_not_equal(
        parse("{\"service\": {\"web\": {\"policy\": \"all\"}}}", &r, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "policy must be"));
    acl_rules_fini(&r);
    assert_int_not_equal(parse("{\"service\": ", &r, err, sizeof(err)), 0);
    assert_non_null(strstr(err, "line 1, column"));
    acl_rules_fini(&r);
}

static void errors_say_where(void **state)
{
    (void)state;
    static const struct {
        const char *text, *where, *what;
    } cases[] = {
        {"service \"web\" { policy = \"reed\" }", "line 1, column 26", "invalid disposition"},
        {"\n\n  servise \"web\" { policy = \"read\" }", "line 3, column 3", "unknown resource"},
        {"service web { policy = \"read\" }", "line 1, column 9", "quoted name"},
        {"service \"web\" {\n policy = \"read\"\n", "line 3, column 1", "expected a setting"},
        {"service \"web\" { }", "line 1, column 15", "without a policy"},
        {"operator \"read\"", "line 1, column 10", "expected '='"},
        {"/* never closed", "line 1, column 1", "unterminated comment"},
        {"service \"we\nb\" {}", "line 1, column 9", "unterminated string"},
        {"service \"web\" { colour = \"red\" }", "line 1, column 17", "unknown setting"},
        {"service \"web\" { policy = \"read\" } @", "line 1, column 35", "unexpected character"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct acl_rules r = {0};
        char err[256] = "";
        assert_int_not_equal(parse(cases[i].text, &r, err, sizeof(err)), 0);
        if (strstr(err, cases[i].where) == NULL || strstr(err, cases[i].what) == NULL)
            fail_msg("case %zu: got \"%s\", want %s / %s", i, err, cases[i].where, cases[i].what);
        acl_rules_fini(&r);
    }
}

static void precedence(void **state)
{
    (void)state;
    struct acl_rules r = {0};
    char err[256];
    /* two policies of one token, merged */
    assert_int_equal(parse("service_prefix \"\" { policy = \"write\" }\n"
                           "service_prefix \"we\" { policy = \"read\" }\n"
                           "service_prefix \"web\" { policy = \"deny\" }\n"
                           "service \"web-1\" { policy = \"read\" }\n",
                           &r, err, sizeof(err)),
                     0);
    assert_int_equal(parse("service \"web-1\" { policy = \"write\" }\n"
                           "service_prefix \"we\" { policy = \"write\" }\n",
                           &r, err, sizeof(err)),
                     0);
    /* exact beats prefix; on the same exact name write beats read */
    assert_int_equal(acl_rules_decide(&r, ACL_RES_SERVICE, "web-1"), ACL_WRITE);
    /* the longest prefix wins: "web" (deny) over "we" and "" */
    assert_int_equal(acl_rules_decide(&r, ACL_RES_SERVICE, "web-2"), ACL_DENY);
    /* "we": read and write at the same length merge to write */
    assert_int_equal(acl_rules_decide(&r, ACL_RES_SERVICE, "west"), ACL_WRITE);
    assert_int_equal(acl_rules_decide(&r, ACL_RES_SERVICE, "db"), ACL_WRITE);
    assert_int_equal(acl_rules_decide(&r, ACL_RES_NODE, "db"), ACL_NONE);
    acl_rules_fini(&r);
    /* deny beats write on the same exact name */
    assert_int_equal(parse("service \"a\" { policy = \"write\" }\nservice \"a\" { policy = "
                           "\"deny\" }",
                           &r, err, sizeof(err)),
                     0);
    assert_int_equal(acl_rules_decide(&r, ACL_RES_SERVICE, "a"), ACL_DENY);
    acl_rules_fini(&r);
}

static void empty_is_valid(void **state)
{
    (void)state;
    struct acl_rules r = {0};
    char err[64];
    assert_int_equal(parse("", &r, err, sizeof(err)), 0);
    assert_int_equal(parse("  # nothing\n", &r, err, sizeof(err)), 0);
    assert_int_equal(r.n, 0);
    acl_rules_fini(&r);
}

static void secrets_are_salted(void **state)
{
    (void)state;
    char *h1 = NULL, *h2 = NULL;
    assert_int_equal(acl_hash_secret("s3cret-s3cret-s3cret", &h1), 0);
    assert_int_equal(acl_hash_secret("s3cret-s3cret-s3cret", &h2), 0);
    assert_string_not_equal(h1, h2); /* a different salt each time */
    assert_null(strstr(h1, "s3cret"));
    assert_true(acl_secret_matches("s3cret-s3cret-s3cret", h1));
    assert_true(acl_secret_matches("s3cret-s3cret-s3cret", h2));
    assert_false(acl_secret_matches("s3cret-s3cret-s3creT", h1));
    assert_false(acl_secret_matches("s3cret-s3cret-s3cret", "sha256$00$00"));
    free(h1);
    free(h2);
    char id[ACL_ID_LEN + 1];
    assert_int_equal(acl_new_uuid(id), 0);
    assert_int_equal(strlen(id), 36);
    assert_int_equal(id[14], '4');
}

static void default_policies(void **state)
{
    (void)state;
    struct acl_authz z = {.enabled = true, .found = true, .default_allow = true};
    assert_true(acl_allowed(&z, ACL_RES_SERVICE, "x", ACL_WRITE));
    assert_false(acl_allowed(&z, ACL_RES_ACL, "", ACL_READ)); /* ACLs need a rule */
    z.default_allow = false;
    assert_false(acl_allowed(&z, ACL_RES_SERVICE, "x", ACL_READ));
    char err[64];
    assert_int_equal(parse("service \"x\" { policy = \"read\" }", &z.rules, err, sizeof(err)), 0);
    assert_true(acl_allowed(&z, ACL_RES_SERVICE, "x", ACL_READ));
    assert_false(acl_allowed(&z, ACL_RES_SERVICE, "x", ACL_WRITE));
    z.management = true;
    assert_true(acl_allowed(&z, ACL_RES_ACL, "", ACL_WRITE));
    z.management = false;
    z.found = false;
    assert_false(acl_allowed(&z, ACL_RES_SERVICE, "x", ACL_READ));
    z.enabled = false;
    assert_true(acl_allowed(&z, ACL_RES_ACL, "", ACL_WRITE));
    acl_authz_fini(&z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hcl_form),         cmocka_unit_test(json_form),
        cmocka_unit_test(errors_say_where), cmocka_unit_test(precedence),
        cmocka_unit_test(empty_is_valid),   cmocka_unit_test(secrets_are_salted),
        cmocka_unit_test(default_policies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
