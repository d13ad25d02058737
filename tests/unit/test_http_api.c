/* Unit tests for http_api.c's routing (http_find_route: the route tables of
 * every http_*.c, longest pattern first, 404 vs 405, decoded path tails) and
 * query parsing (http_parse_query, http_parse_blocking: index, wait, caps,
 * jitter, errors). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http_internal.h"
#include "registry/error.h"

/* ---- routing ------------------------------------------------------------ */

struct route_case {
    const char *method, *path;
    const char *pattern; /* the route's path, or NULL */
    bool known;          /* with NULL: 405 (true) or 404 (false) */
    const char *arg;     /* decoded tail, or NULL */
};

static void test_find_route(void **state)
{
    (void)state;
    static const struct route_case cases[] = {
        {"PUT", "/v1/agent/service/register", "/v1/agent/service/register", true, NULL},
        /* an exact path beats a shorter prefix: not a service called "register" */
        {"GET", "/v1/agent/service/register", NULL, true, NULL},
        {"GET", "/v1/agent/service/web-1", "/v1/agent/service/", true, "web-1"},
        {"PUT", "/v1/agent/service/deregister/web-1", "/v1/agent/service/deregister/", true,
         "web-1"},
        /* GET never mutates: no GET form of a write (405, as Consul) */
        {"GET", "/v1/agent/service/deregister/web-1", NULL, true, NULL},
        /* %00 would cut the name short: no argument, so a 400 */
        {"GET", "/v1/catalog/service/web%00evil", "/v1/catalog/service/", true, NULL},
        {"DELETE", "/v1/agent/service/deregister/web-1", NULL, true, NULL},
        {"GET", "/v1/health/service/my%20svc", "/v1/health/service/", true, "my svc"},
        {"GET", "/v1/catalog/service/a%2Fb", "/v1/catalog/service/", true, "a/b"},
        {"GET", "/v1/catalog/service/a+b", "/v1/catalog/service/", true, "a+b"},
        {"PUT", "/v1/agent/check/pass/service:web-1", "/v1/agent/check/pass/", true,
         "service:web-1"},
        {"GET", "/v1/status/leader", "/v1/status/leader", true, NULL},
        {"PUT", "/v1/status/leader", NULL, true, NULL},
        {"GET", "/v1/status/leaderx", NULL, false, NULL},
        {"GET", "/v1/status/leader/", NULL, false, NULL},
        {"GET", "/v1/health/service/", NULL, false, NULL}, /* a prefix needs a tail */
        {"GET", "/v1/health/service", NULL, false, NULL},
        {"GET", "/v1/agent/services", "/v1/agent/services", true, NULL},
        {"GET", "/v1/snapshot", "/v1/snapshot", true, NULL},
        {"PUT", "/v1/snapshot", "/v1/snapshot", true, NULL},
        {"DELETE", "/v1/operator/raft/peer", "/v1/operator/raft/peer", true, NULL},
        {"GET", "/ui", "/ui", true, NULL},
        {"GET", "/", NULL, false, NULL},
        {"GET", "/v2/agent/services", NULL, false, NULL},
        {"get", "/v1/agent/services", NULL, true, NULL}, /* methods are exact */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct route_case *t = &cases[i];
        char *arg = NULL;
        bool known = !t->known;
        const struct http_route *rt = http_find_route(t->method, t->path, &arg, &known);
        const char *got = rt ? rt->path : NULL;
        if ((got == NULL) != (t->pattern == NULL) || (got && strcmp(got, t->pattern) != 0) ||
            (rt && strcmp(rt->method, t->method) != 0) || known != t->known ||
            (arg == NULL) != (t->arg == NULL) || (arg && strcmp(arg, t->arg) != 0))
            fail_msg("%s %s: route %s known %d arg %s; want %s %d %s", t->method, t->path,
                     got ? got : "-", known, arg ? arg : "-", t->pattern ? t->pattern : "-",
                     t->known, t->arg ? t->arg : "-");
        free(arg);
    }
}

/* Every route of every table is found by its own method and path, and no
 * two routes share a method and a path. */
static void test_route_tables(void **state)
{
    (void)state;
    const struct http_route *tables[] = {http_agent_routes,    http_catalog_routes,
                                         http_operator_routes, http_ui_routes,
                                         http_acl_routes,      http_absent_routes};
    size_t n = 0;
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
        for (const struct http_route *rt = tables[t]; rt->path; rt++, n++) {
            size_t len = strlen(rt->path);
            char path[300];
            snprintf(path, sizeof(path), "%s%s", rt->path, rt->path[len - 1] == '/' ? "x" : "");
            char *arg = NULL;
            bool known = false;
            const struct http_route *got = http_find_route(rt->method, path, &arg, &known);
            if (got != rt)
                fail_msg("%s %s: found %s %s", rt->method, path, got ? got->method : "-",
                         got ? got->path : "-");
            assert_true(known);
            assert_true(rt->read || rt->write || rt->custom);
            if (rt->path[len - 1] == '/')
                assert_string_equal(arg, "x");
            else
                assert_null(arg);
            free(arg);
        }
    }
    assert_true(n > 30);
}

/* ---- query strings ------------------------------------------------------ */

static void req_clear(struct http_req *r)
{
    for (int i = 0; i < r->n_params; i++) {
        free(r->params[i].key);
        free(r->params[i].value);
    }
    memset(r, 0, sizeof(*r));
}

static void test_parse_query(void **state)
{
    (void)state;
    struct http_req r;
    memset(&r, 0, sizeof(r));
    assert_int_equal(http_parse_query(&r, "tag=a%20b&passing&&x=1+2&x=3&empty=&=v&%41=%42"), 0);
    assert_int_equal(r.n_params, 7);
    assert_string_equal(http_param(&r, "tag"), "a b");
    assert_true(http_has_param(&r, "passing"));
    assert_null(http_param(&r, "passing")); /* a bare flag */
    assert_true(http_flag(&r, "passing"));
    assert_string_equal(http_param(&r, "x"), "3"); /* the last wins */
    assert_string_equal(r.params[2].value, "1 2"); /* '+' is a space in a query */
    assert_string_equal(http_param(&r, "empty"), "");
    assert_string_equal(http_param(&r, ""), "v");
    assert_string_equal(http_param(&r, "A"), "B");
    assert_false(http_has_param(&r, "missing"));
    assert_true(http_flag(&r, "x")); /* present: Consul's stale and consistent */
    assert_false(http_flag(&r, "missing"));
    bool passing = false;
    assert_int_equal(http_passing(&r, &passing), 0); /* bare: true */
    assert_true(passing);
    req_clear(&r);

    /* ?passing as Go's strconv.ParseBool reads it */
    static const struct {
        const char *query;
        int rc;
        bool passing;
    } passing_cases[] = {{"passing=t", 0, true},  {"passing=FALSE", 0, false},
                         {"passing=0", 0, false}, {"", 0, false},
                         {"passing=yes", REG_EINVAL, false}, {"passing=tRUE", REG_EINVAL, false}};
    for (size_t i = 0; i < sizeof(passing_cases) / sizeof(passing_cases[0]); i++) {
        assert_int_equal(http_parse_query(&r, passing_cases[i].query), 0);
        int rc = http_passing(&r, &passing);
        assert_int_equal(rc, passing_cases[i].rc);
        if (rc == 0)
            assert_int_equal(passing, passing_cases[i].passing);
        req_clear(&r);
    }

    assert_int_equal(http_parse_query(&r, NULL), 0);
    assert_int_equal(r.n_params, 0);
    assert_int_equal(http_parse_query(&r, ""), 0);
    assert_int_equal(r.n_params, 0);

    char many[400] = "";
    for (int i = 0; i < HTTP_MAX_PARAMS; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "k%d=v&", i);
    assert_int_equal(http_parse_query(&r, many), 0);
    assert_int_equal(r.n_params, HTTP_MAX_PARAMS);
    req_clear(&r);
    strcat(many, "one=more");
    assert_int_equal(http_parse_query(&r, many), -1);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.errmsg, "Too many query parameters"));
    req_clear(&r);
}

static int blocking(struct http_req *r, const char *q)
{
    req_clear(r);
    if (http_parse_query(r, q) != 0)
        fail_msg("query %s: %s", q, r->errmsg);
    return http_parse_blocking(r);
}

static void test_parse_blocking(void **state)
{
    (void)state;
    struct http_req r;
    memset(&r, 0, sizeof(r));
    /* wait plus up to 1/16 jitter */
    assert_int_equal(blocking(&r, "index=42&wait=1m30s"), 0);
    assert_int_equal(r.min_index, 42);
    assert_true(r.wait_ms >= 90000 && r.wait_ms < 90000 + 90000 / 16);
    assert_int_equal(blocking(&r, "index=1"), 0); /* default 5m */
    assert_true(r.wait_ms >= 300000 && r.wait_ms < 300000 + 300000 / 16);
    assert_int_equal(blocking(&r, "index=1&wait=1h"), 0); /* capped at 10m */
    assert_true(r.wait_ms >= 600000 && r.wait_ms < 600000 + 600000 / 16);
    assert_int_equal(blocking(&r, "index=1&wait"), 0); /* bare: the default */
    assert_true(r.wait_ms >= 300000 && r.wait_ms < 300000 + 300000 / 16);
    assert_int_equal(blocking(&r, "index=1&wait=10ms"), 0); /* too short to jitter */
    assert_int_equal(r.wait_ms, 10);
    assert_int_equal(blocking(&r, "index=18446744073709551615&wait=0"), 0);
    assert_int_equal(r.min_index, UINT64_MAX);
    assert_true(r.wait_ms >= 300000); /* 0 is the default, as Consul's */
    /* empty values are as if absent (Consul's parseWait) */
    assert_int_equal(blocking(&r, "index=&wait="), 0);
    assert_int_equal(r.min_index, 0);
    assert_int_equal(r.wait_ms, 300000); /* no index: nothing to jitter */
    assert_int_equal(blocking(&r, "passing"), 0);
    assert_int_equal(r.min_index, 0);

    static const char *const bad_index[] = {
        "index=abc", "index=-1", "index=1x", "index=18446744073709551616",
        "index=%2B1", "index=%201"};
    for (size_t i = 0; i < sizeof(bad_index) / sizeof(bad_index[0]); i++) {
        if (blocking(&r, bad_index[i]) != -1 || r.status != 400 ||
            strstr(r.errmsg, "Invalid index") == NULL)
            fail_msg("%s: accepted (%d %s)", bad_index[i], r.status, r.errmsg);
    }
    static const char *const bad_wait[] = {"index=1&wait=10", "wait=-1s",
                                           "index=1&wait=1e3s", "index=1&wait=1m30"};
    for (size_t i = 0; i < sizeof(bad_wait) / sizeof(bad_wait[0]); i++) {
        if (blocking(&r, bad_wait[i]) != -1 || r.status != 400 ||
            strstr(r.errmsg, "Invalid wait time") == NULL)
            fail_msg("%s: accepted (%d %s)", bad_wait[i], r.status, r.errmsg);
    }
    req_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_route),
        cmocka_unit_test(test_route_tables),
        cmocka_unit_test(test_parse_query),
        cmocka_unit_test(test_parse_blocking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
