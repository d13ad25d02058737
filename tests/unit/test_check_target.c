/*
 * test_check_target.c — where checks may go: CIDR matching (v4, v6,
 * IPv4-mapped v6), the default deny list, registryd's own listeners
 * (exact and wildcard), the allow list, and targets as written at
 * registration (URLs, HOST:PORT, localhost, names left for connect time).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "check_target.h"

static int v4(const char *ip, unsigned short port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    char why[200];
    assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
    return check_target_sockaddr((struct sockaddr *)&sa, why, sizeof(why));
}

static int v6(const char *ip, unsigned short port)
{
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    char why[200];
    assert_int_equal(inet_pton(AF_INET6, ip, &sa.sin6_addr), 1);
    return check_target_sockaddr((struct sockaddr *)&sa, why, sizeof(why));
}

static void default_deny_and_own_listeners(void **state)
{
    (void)state;
    char err[200];
    const char *own[] = {"127.0.0.1:8500", "[::1]:8600", "0.0.0.0:8300", NULL};
    assert_int_equal(check_target_configure(CHECK_TARGET_DEFAULT_DENY, NULL, own, err,
                                            sizeof(err)),
                     0);
    assert_int_not_equal(v4("169.254.169.254", 80), 0);
    assert_int_not_equal(v6("::ffff:169.254.169.254", 80), 0); /* mapped v4 */
    assert_int_not_equal(v6("fe80::1", 80), 0);
    assert_int_not_equal(v6("febf::1", 80), 0); /* still fe80::/10 */
    assert_int_equal(v6("fec0::1", 80), 0);
    assert_int_equal(v4("169.255.0.1", 80), 0);
    assert_int_equal(v4("10.1.2.3", 80), 0);
    /* own listeners: the exact address and port, any address for a wildcard */
    assert_int_not_equal(v4("127.0.0.1", 8500), 0);
    assert_int_equal(v4("127.0.0.1", 8501), 0);
    assert_int_equal(v4("127.0.0.2", 8500), 0);
    assert_int_not_equal(v6("::1", 8600), 0);
    assert_int_not_equal(v4("10.9.9.9", 8300), 0);
    assert_int_not_equal(v6("::ffff:127.0.0.1", 8500), 0);
    check_target_reset();
}

static void allow_list(void **state)
{
    (void)state;
    char err[200];
    assert_int_equal(check_target_configure("10.0.0.0/24", "10.0.0.0/8, 2001:db8::/32", NULL,
                                            err, sizeof(err)),
                     0);
    assert_int_equal(v4("10.2.3.4", 80), 0);
    assert_int_not_equal(v4("10.0.0.9", 80), 0); /* deny wins */
    assert_int_not_equal(v4("192.168.1.1", 80), 0);
    assert_int_equal(v6("2001:db8::5", 80), 0);
    assert_int_not_equal(v6("2001:db9::5", 80), 0);
    check_target_reset();
}

static void bad_lists(void **state)
{
    (void)state;
    char err[200];
    assert_int_not_equal(check_target_parse_list("10.0.0.0/33", err, sizeof(err)), 0);
    assert_non_null(strstr(err, "10.0.0.0/33"));
    assert_int_not_equal(check_target_parse_list("example.com", err, sizeof(err)), 0);
    assert_int_not_equal(check_target_parse_list("::/129", err, sizeof(err)), 0);
    assert_int_not_equal(check_target_parse_list("1.2.3.4/", err, sizeof(err)), 0);
    assert_int_equal(check_target_parse_list("", err, sizeof(err)), 0);
    assert_int_equal(check_target_parse_list("1.2.3.4, ::/0", err, sizeof(err)), 0);
}

static void targets_as_written(void **state)
{
    (void)state;
    char err[200], why[200];
    const char *own[] = {"127.0.0.1:8500", NULL};
    assert_int_equal(check_target_configure(CHECK_TARGET_DEFAULT_DENY, NULL, own, err,
                                            sizeof(err)),
                     0);
    assert_int_not_equal(check_target_spec("HTTP", "http://169.254.169.254/latest/meta-data/",
                                           why, sizeof(why)),
                         0);
    assert_non_null(strstr(why, "check_deny_cidrs"));
    assert_int_not_equal(check_target_spec("HTTP", "http://127.0.0.1:8500/v1/agent/service/"
                                                   "deregister/x",
                                           why, sizeof(why)),
                         0);
    assert_non_null(strstr(why, "own listener"));
    assert_int_not_equal(check_target_spec("HTTP", "http://localhost:8500/", why, sizeof(why)),
                         0);
    assert_int_not_equal(check_target_spec("HTTP", "https://[fe80::1]/", why, sizeof(why)), 0);
    assert_int_not_equal(check_target_spec("TCP", "169.254.1.1:22", why, sizeof(why)), 0);
    assert_int_not_equal(check_target_spec("GRPC", "127.0.0.1:8500/svc", why, sizeof(why)), 0);
    assert_int_equal(check_target_spec("HTTP", "http://127.0.0.1:9000/health", why, sizeof(why)),
                     0);
    assert_int_equal(check_target_spec("TCP", "db.example:5432", why, sizeof(why)), 0);
    assert_int_equal(check_target_spec("UDP", "not a spec", why, sizeof(why)), 0);
    check_target_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(default_deny_and_own_listeners),
        cmocka_unit_test(allow_list),
        cmocka_unit_test(bad_lists),
        cmocka_unit_test(targets_as_written),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
