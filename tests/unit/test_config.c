/* Unit tests for config.c: defaults, YAML, flags, precedence and error positions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "registry/error.h"

/* Run conf_load on a NULL-terminated argument list. */
static int load(struct conf *c, char *err, size_t errlen, ...)
{
    char *argv[32] = {"registryd"};
    int argc = 1;
    va_list ap;
    va_start(ap, errlen);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    FILE *out = fopen("/dev/null", "w");
    int rc = conf_load(c, argc, argv, out, err, errlen);
    fclose(out);
    return rc;
}

static char yaml_path[64];

/* Write text to a fresh temporary YAML file; returns its path. */
static const char *yaml(const char *text)
{
    snprintf(yaml_path, sizeof(yaml_path), "/tmp/test_config_XXXXXX");
    int fd = mkstemp(yaml_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return yaml_path;
}

static void test_defaults(void **state)
{
    (void)state;
    struct conf c;
    char err[256] = "";
    assert_int_equal(load(&c, err, sizeof(err), "--dev", NULL), 0);
    assert_true(c.dev);
    assert_null(c.data_dir);
    assert_string_equal(c.http_addr, "127.0.0.1:8500");
    assert_string_equal(c.dns_addr, "127.0.0.1:8600");
    assert_string_equal(c.dns_domain, "registry.");
    assert_string_equal(c.dns_alt_domain, "consul."); /* Consul's own, answered beside */
    assert_true(c.dns_allow_warning);                 /* only_passing false, as Consul */
    assert_false(c.dns_only_passing);
    assert_string_equal(c.datacenter, "dc1");
    assert_null(c.raft_addr);
    assert_non_null(c.node);
    assert_true(strlen(c.node) > 0);
    assert_int_equal(c.log_level, LOG_INFO);
    assert_int_equal(c.max_body_size, 1048576);
    assert_int_equal(c.max_snapshot_size, 0); /* no limit but the disk */
    assert_int_equal(c.http_render_cache_size, 64 << 20);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(c.dns_workers, cpus < 1 ? 1 : cpus > CONF_MAX_WORKERS ? CONF_MAX_WORKERS : cpus);
    assert_int_equal(c.http_workers, cpus < 1                        ? 1
                                     : cpus > REG_MAX_HTTP_WORKERS ? REG_MAX_HTTP_WORKERS
                                                                    : cpus);
    conf_fini(&c);
}

static void test_flags(void **state)
{
    (void)state;
    struct conf c;
    char err[256] = "";
    assert_int_equal(load(&c, err, sizeof(err), "--data-dir", "/var/lib/x", "--http-addr=[::1]:9000",
                          "--node", "n1", "--log-level", "debug", "--max-body-size", "64KiB",
                          "--dns-domain", "Example.ORG", "--raft_addr", "127.0.0.2:7000",
                          "--dns-workers", "3", "--http-workers", "5", "--max-snapshot-size", "2TiB",
                          "--http-render-cache-size", "8MiB", NULL),
                     0);
    assert_int_equal(c.dns_workers, 3);
    assert_int_equal(c.http_workers, 5);
    assert_true(c.max_snapshot_size == (size_t)2 << 40);
    assert_int_equal(c.http_render_cache_size, 8 << 20);
    assert_false(c.dev);
    assert_string_equal(c.data_dir, "/var/lib/x");
    assert_string_equal(c.http_addr, "[::1]:9000");
    assert_string_equal(c.node, "n1");
    assert_int_equal(c.log_level, LOG_DEBUG);
    assert_int_equal(c.max_body_size, 65536);
    assert_string_equal(c.dns_domain, "example.org.");
    assert_string_equal(c.raft_addr, "127.0.0.2:7000");
    conf_fini(&c);
    assert_int_equal(load(&c, err, sizeof(err), "--dev", "--dns-alt-domain", "", NULL), 0);
    assert_string_equal(c.dns_alt_domain, ""); /* "": none */
    conf_fini(&c);
}

static void test_flag_errors(void **state)
{
    (void)state;
    static const struct {
        const char *a, *b, *want;
    } cases[] = {
        {"--http-addr", "localhost", "--http-addr: "},
        {"--http-addr", "127.0.0.1:0", "--http-addr: "},
        {"--http-addr", "127.0.0.1:65536", "--http-addr: "},
        {"--http-addr", "::1:80", "--http-addr: "},
        {"--raft-addr", "[::1]:80", "--raft-addr: "},
        {"--log-level", "loud", "--log-level: \"loud\""},
        {"--max-body-size", "12", "--max-body-size: "},
        {"--max-body-size", "1TiB", "--max-body-size: "},
        {"--node", "a b", "--node: "},
        {"--nosuch", "1", "--nosuch: unknown flag"},
        {"--dev=maybe", NULL, "--dev: \"maybe\" is not a boolean"},
        {"stray", NULL, "unexpected argument"},
        {"--node", NULL, "--node: missing value"},
        {"--dns-workers", "0", "--dns-workers: "},
        {"--dns-workers", "257", "--dns-workers: 257 is more than 256"},
        {"--http-workers", "0", "--http-workers: "},
        {"--http-workers", "65", "--http-workers: 65 is more than 64"},
        {"--max-snapshot-size", "12", "is not 0 (no limit) or a size of 1KiB or more"},
        {"--max-snapshot-size", "-1", "--max-snapshot-size: "},
        {"--max-snapshot-size", "5 PiB", "--max-snapshot-size: "},
        {"--http-render-cache-size", "2TiB", "--http-render-cache-size: "},
        {"--dns-domain", "", "--dns-domain: \"\" is not a DNS domain"},
        {"--dns-domain", "a..b", "--dns-domain: \"a..b\" is not a DNS domain"},
        {"--dns-alt-domain", ".consul", "--dns-alt-domain: \".consul\" is not a DNS domain"},
        {"--dns-alt-domain", "con sul", "--dns-alt-domain: \"con sul\" is not a DNS domain"},
        {"--dns-only-passing=maybe", NULL, "--dns-only-passing: \"maybe\" is not a boolean"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct conf c;
        char err[256] = "";
        int rc = cases[i].b ? load(&c, err, sizeof(err), "--dev", cases[i].a, cases[i].b, NULL)
                            : load(&c, err, sizeof(err), "--dev", cases[i].a, NULL);
        assert_int_equal(rc, REG_ECONFIG);
        if (strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: \"%s\" does not contain \"%s\"", i, err, cases[i].want);
        conf_fini(&c);
    }
    struct conf c;
    char err[256] = "";
    assert_int_equal(load(&c, err, sizeof(err), NULL), REG_ECONFIG);
    assert_non_null(strstr(err, "--data-dir: required"));
    conf_fini(&c);
}

static void test_yaml_and_precedence(void **state)
{
    (void)state;
    const char *path = yaml("# comment\n"
                            "data_dir: /srv/reg\n"
                            "http-addr: \"127.0.0.1:8501\"\n"
                            "node: from-file\n"
                            "dev: no\n"
                            "max_body_size: 2MiB\n");
    struct conf c;
    char err[256] = "";
    assert_int_equal(load(&c, err, sizeof(err), "--node", "from-flag", "--config", path, NULL), 0);
    assert_string_equal(c.data_dir, "/srv/reg");
    assert_string_equal(c.http_addr, "127.0.0.1:8501");
    assert_string_equal(c.node, "from-flag"); /* flags win, wherever they appear */
    assert_string_equal(c.config_file, path);
    assert_int_equal(c.max_body_size, 2 << 20);
    conf_fini(&c);
    unlink(path);
}

static void test_yaml_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"dev: true\nbogus: 1\n", ":2:1: unknown setting \"bogus\""},
        {"dev: true\nhttp_addr: nope\n", ":2:12: http_addr: \"nope\" is not HOST:PORT"},
        {"dev: true\nlog_level: [a]\n", ":2:12: log_level: expected a single value, found a list"},
        {"dev: true\nnode: {a: 1}\n", ":2:7: node: expected a single value, found a mapping"},
        {"- a\n- b\n", ":1:1: expected a mapping of settings, found a list"},
        {"just a string\n", ":1:1: expected a mapping"},
        {"dev: true\ndev: false\n", ":2:1: dev is set twice"},
        {"dev: true\nnode: \"unterminated\n", ":3:1: "},
        {"dev: true\n\tnode: x\n", ":2:1: "},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *path = yaml(cases[i].text);
        struct conf c;
        char err[256] = "";
        assert_int_equal(load(&c, err, sizeof(err), "--config", path, NULL), REG_ECONFIG);
        if (strncmp(err, path, strlen(path)) != 0 || strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: \"%s\" does not contain \"%s\"", i, err, cases[i].want);
        conf_fini(&c);
        unlink(path);
    }
    struct conf c;
    char err[256] = "";
    assert_int_equal(load(&c, err, sizeof(err), "--config", "/nonexistent/x.yaml", NULL),
                     REG_ECONFIG);
    assert_non_null(strstr(err, "cannot open /nonexistent/x.yaml"));
    conf_fini(&c);
}

static void test_help_version_check(void **state)
{
    (void)state;
    struct conf c;
    char err[256] = "", *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    char *argv[] = {"registryd", "--http-addr", "bad", "--help", NULL};
    assert_int_equal(conf_load(&c, 4, argv, out, err, sizeof(err)), REG_EEXIT);
    fclose(out);
    /* every setting is documented */
    const char *flags[] = {"--dev", "--config", "--data-dir", "--http-addr", "--dns-addr",
                           "--node", "--log-level", "--version", "--max-body-size", "--raft-addr",
                           "--check-config"};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        if (strstr(text, flags[i]) == NULL)
            fail_msg("--help lacks %s", flags[i]);
    free(text);
    conf_fini(&c);

    out = open_memstream(&text, &len);
    char *argv2[] = {"registryd", "--version", NULL};
    assert_int_equal(conf_load(&c, 2, argv2, out, err, sizeof(err)), REG_EEXIT);
    fclose(out);
    assert_string_equal(text, "registryd " REGISTRYD_VERSION "\n");
    free(text);
    conf_fini(&c);

    assert_int_equal(load(&c, err, sizeof(err), "--dev", "--check-config", NULL), 0);
    assert_true(c.check_only);
    conf_fini(&c);
}

static void test_split_hostport(void **state)
{
    (void)state;
    char host[64];
    unsigned short port;
    assert_int_equal(conf_split_hostport("127.0.0.1:8500", host, sizeof(host), &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8500);
    assert_int_equal(conf_split_hostport("[::1]:53", host, sizeof(host), &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 53);
    assert_int_equal(conf_split_hostport("localhost:1", host, sizeof(host), &port), 0);
    const char *bad[] = {"", ":80", "host:", "host:x", "[::1]80", "[::1", "::1:80", "h:123456", "h:-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (conf_split_hostport(bad[i], host, sizeof(host), &port) != REG_EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
    assert_int_equal(conf_split_hostport("averyveryverylonghostname:1", host, 8, &port), REG_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_flag_errors),
        cmocka_unit_test(test_yaml_and_precedence),
        cmocka_unit_test(test_yaml_errors),
        cmocka_unit_test(test_help_version_check),
        cmocka_unit_test(test_split_hostport),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
